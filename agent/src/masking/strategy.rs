//! What a sensitive value becomes: a marker, its last characters, a keyed
//! token, or SQL NULL.

use std::{
    fmt,
    fs::{self, OpenOptions},
    io::{Read as _, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use siphasher::sip::SipHasher24;

use super::swar::{ascii_in_range, splat, word_at};

/// How a masked value is rewritten.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Replaced by a fixed marker: `marker` if given, else `[masked:LABEL]`
    /// with the detector or column name.
    Redact {
        /// The text that replaces the value.
        marker: Option<String>,
    },
    /// Every letter and digit but the last `keep` becomes `*`; punctuation
    /// stays, so `4111 1111 1111 1111` reads `**** **** **** 1111`.
    Partial {
        /// Letters and digits left visible at the end.
        keep: usize,
    },
    /// `tok_` and 16 hex digits of SipHash-2-4(host key, value): equal
    /// values give equal tokens, so joins and GROUP BY keep working, and
    /// nobody without the host key can test guesses.
    Token,
    /// SQL NULL (in DataRow and COPY; JSON null in JSON; in free text such
    /// as error messages, where NULL does not exist, the redact marker).
    Null,
}

impl Default for Strategy {
    fn default() -> Self {
        Self::Redact { marker: None }
    }
}

/// The replacement for one value.
#[derive(Debug, PartialEq, Eq)]
pub enum Replacement {
    /// These bytes instead.
    Text,
    /// SQL NULL (or its nearest equivalent where the value sits).
    Null,
}

impl Strategy {
    /// Writes the replacement of `value` to `out`; `Replacement::Null`
    /// writes nothing. `label` names what found the value, for markers.
    pub fn apply(&self, value: &[u8], label: &str, key: &TokenKey, out: &mut Vec<u8>) -> Replacement {
        match self {
            Self::Redact { marker: Some(marker) } => out.extend_from_slice(marker.as_bytes()),
            Self::Redact { marker: None } => {
                out.extend_from_slice(b"[masked:");
                out.extend_from_slice(label.as_bytes());
                out.push(b']');
            }
            Self::Partial { keep } => partial(value, *keep, out),
            Self::Token => key.token(value, out),
            Self::Null => return Replacement::Null,
        }
        Replacement::Text
    }

    /// As [`apply`](Self::apply), for text that has no NULL (messages,
    /// notification payloads): `Null` redacts.
    pub fn apply_in_text(&self, value: &[u8], label: &str, key: &TokenKey, out: &mut Vec<u8>) {
        if self.apply(value, label, key, out) == Replacement::Null {
            Self::default().apply(value, label, key, out);
        }
    }
}

fn partial(value: &[u8], keep: usize, out: &mut Vec<u8>) {
    if !value.is_ascii() {
        return partial_chars(value, keep, out);
    }
    // The common case: one character is one byte. From the end, the first
    // byte of the last `keep` letters and digits; before it, every letter
    // and digit is hidden.
    let (mut visible, mut kept) = (value.len(), 0);
    while visible > 0 && kept < keep {
        visible -= 1;
        kept += usize::from(value[visible].is_ascii_alphanumeric());
    }
    let (hidden, shown) = value.split_at(visible);
    hide_alphanumerics(hidden, out);
    out.extend_from_slice(shown);
}

/// Appends `ascii` with its letters and digits hidden as `*`, eight bytes
/// at a time (values are too short for the compiler's vector loops). Read
/// from the source, not patched in `out`: loading words over bytes just
/// copied there stalls the CPU.
fn hide_alphanumerics(ascii: &[u8], out: &mut Vec<u8>) {
    let mut words = ascii.chunks_exact(8);
    for word in &mut words {
        let word = u64::from_le_bytes(std::array::from_fn(|i| word[i]));
        out.extend_from_slice(&hide_in_word(word).to_le_bytes());
    }
    let rest = words.remainder().len();
    if rest > 0 {
        let last = word_at(ascii, ascii.len() - rest);
        out.extend_from_slice(&hide_in_word(last).to_le_bytes()[..rest]);
    }
}

/// `word` (ASCII bytes) with its letters and digits replaced by `*`.
const fn hide_in_word(word: u64) -> u64 {
    // Setting bit 5 turns upper-case letters into lower-case ones, and
    // nothing else into a letter.
    let alphanumeric = ascii_in_range(word, b'0', b'9') | ascii_in_range(word | splat(0x20), b'a', b'z');
    let mask = (alphanumeric >> 7) * 0xff;
    (word & !mask) | (splat(b'*') & mask)
}

/// [`partial`] by characters, not bytes: a multi-byte character is one
/// `*`. Bytes that are not UTF-8 (other client encodings) count one each.
#[cold]
fn partial_chars(value: &[u8], keep: usize, out: &mut Vec<u8>) {
    let text = String::from_utf8_lossy(value);
    let alnum_total = text.chars().filter(|c| c.is_alphanumeric()).count();
    let hide = alnum_total.saturating_sub(keep);
    let mut seen = 0;
    for c in text.chars() {
        if c.is_alphanumeric() {
            seen += 1;
            if seen <= hide {
                out.push(b'*');
                continue;
            }
        }
        // U+FFFD stands for bytes that were not UTF-8: hide those too.
        if c == char::REPLACEMENT_CHARACTER {
            out.push(b'*');
            continue;
        }
        let mut buf = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
}

/// Length of the secret key in bytes.
const KEY_LEN: usize = 32;

/// The per-host secret of deterministic tokens.
#[derive(Clone)]
pub struct TokenKey {
    /// Keyed with the token key, derived from the host key (see
    /// [`TokenKey::from_bytes`]).
    sip: SipHasher24,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// Why the token key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum TokenKeyError {
    /// Reading, creating or checking the file failed.
    #[error("masking key {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is readable by others than its owner.
    #[error("masking key {path} is accessible to group or others (mode {mode:o}): it must be 0600")]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// The file does not hold a key.
    #[error("masking key {path} must hold exactly {KEY_LEN} bytes, not {len}")]
    BadLength {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
}

impl TokenKey {
    /// A key from its bytes (tests, and keys kept elsewhere). The SipHash
    /// key is the first 128 bits of HMAC-SHA256 keyed with `key` over a
    /// label naming this use: host keys of any length work, and any other
    /// use of the same host key would get a key of its own.
    pub fn from_bytes(key: &[u8]) -> Self {
        // HMAC takes keys of any length; the error type is never produced.
        let mut mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC key"));
        mac.update(TOKEN_KEY_LABEL);
        let derived = mac.finalize().into_bytes();
        let half = |at: usize| u64::from_le_bytes(std::array::from_fn(|i| derived[at + i]));
        Self { sip: SipHasher24::new_with_keys(half(0), half(8)) }
    }

    /// Loads the key at `path`, or creates it (random, mode 0600, directory
    /// 0700) on first start. A key others can read is refused: it would let
    /// them reverse tokens by guessing.
    pub fn load_or_create(path: &Path) -> Result<Self, TokenKeyError> {
        let io = |source| TokenKeyError::Io { path: path.to_owned(), source };
        if let Some(dir) = path.parent() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        }
        match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
            Ok(mut file) => {
                let mut key = [0u8; KEY_LEN];
                getrandom::fill(&mut key).map_err(|e| io(std::io::Error::other(e.to_string())))?;
                file.write_all(&key).and_then(|()| file.sync_all()).map_err(io)?;
                return Ok(Self::from_bytes(&key));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
        let mut file = fs::File::open(path).map_err(io)?;
        let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TokenKeyError::Permissions { path: path.to_owned(), mode });
        }
        let mut key = Vec::with_capacity(KEY_LEN);
        file.read_to_end(&mut key).map_err(io)?;
        if key.len() != KEY_LEN {
            return Err(TokenKeyError::BadLength { path: path.to_owned(), len: key.len() });
        }
        Ok(Self::from_bytes(&key))
    }

    /// Appends the token of `value`: `tok_` and 16 hex digits (64 bits:
    /// collisions are negligible at table sizes, and short enough to read).
    /// SipHash-2-4 is a keyed function made for short inputs: about 30 ns
    /// for an e-mail address, where HMAC-SHA256 hashes two SHA-256 blocks
    /// (a column of distinct values is the common case: no cache helps).
    pub fn token(&self, value: &[u8], out: &mut Vec<u8>) {
        // Spelled on the stack and appended at once: one copy, not nine.
        let mut token = *b"tok_0000000000000000";
        for (pair, byte) in token[4..].chunks_exact_mut(2).zip(self.digest(value).to_be_bytes()) {
            pair.copy_from_slice(&crate::hex::pair(byte));
        }
        out.extend_from_slice(&token);
    }

    fn digest(&self, value: &[u8]) -> u64 {
        self.sip.hash(value)
    }
}

/// What the host key is hashed with to make the token key.
const TOKEN_KEY_LABEL: &[u8] = b"airlock masking token siphash-2-4 v1";

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(strategy: &Strategy, value: &str) -> (String, Replacement) {
        let mut out = Vec::new();
        let replacement = strategy.apply(value.as_bytes(), "card", &TokenKey::from_bytes(b"k1"), &mut out);
        (String::from_utf8(out).unwrap(), replacement)
    }

    #[test]
    fn redact_and_partial() {
        assert_eq!(apply(&Strategy::default(), "4111").0, "[masked:card]");
        assert_eq!(apply(&Strategy::Redact { marker: Some("****".into()) }, "x").0, "****");
        assert_eq!(apply(&Strategy::Partial { keep: 4 }, "4111 1111 1111 1234").0, "**** **** **** 1234");
        assert_eq!(apply(&Strategy::Partial { keep: 2 }, "José").0, "**sé", "characters, not bytes");
        assert_eq!(apply(&Strategy::Partial { keep: 10 }, "ab-1").0, "ab-1");
        assert_eq!(apply(&Strategy::Partial { keep: 0 }, "a@b.io").0, "*@*.**");
        assert_eq!(apply(&Strategy::Null, "x"), (String::new(), Replacement::Null));
        let mut text = Vec::new();
        Strategy::Null.apply_in_text(b"x", "email", &TokenKey::from_bytes(b"k"), &mut text);
        assert_eq!(text, b"[masked:email]");
    }

    #[test]
    fn words_hide_exactly_the_ascii_letters_and_digits() {
        let hide = |ascii: &[u8]| {
            let mut out = b"before ".to_vec();
            hide_alphanumerics(ascii, &mut out);
            out
        };
        for byte in 0..0x80u8 {
            let expected = if byte.is_ascii_alphanumeric() { b'*' } else { byte };
            assert_eq!(hide(&[byte; 11])[7..], [expected; 11], "byte {byte:#04x}");
        }
        assert_eq!(hide(b"Ab9 -zZ0@[`{/:~"), b"before *** -***@[`{/:~");
        assert_eq!(hide(b""), b"before ");
        // Every length, so every tail: whole words, a short value, a
        // partial word after whole ones.
        let mixed = b"4111 1111-AbCd_z.9@x 0";
        for len in 0..=mixed.len() {
            let expected: Vec<u8> =
                mixed[..len].iter().map(|&b| if b.is_ascii_alphanumeric() { b'*' } else { b }).collect();
            assert_eq!(hide(&mixed[..len])[7..], expected, "{len} bytes");
        }
    }

    #[test]
    fn digest_is_siphash_2_4() {
        // The reference vector of the SipHash paper (appendix A): key
        // 00..0f, message 00..0e.
        let key = TokenKey { sip: SipHasher24::new_with_key(&std::array::from_fn(|i| i as u8)) };
        let message: Vec<u8> = (0..15).collect();
        assert_eq!(key.digest(&message), 0xa129_ca61_49be_45e5);
        let mut out = Vec::new();
        key.token(&message, &mut out);
        assert_eq!(out, b"tok_a129ca6149be45e5");
    }

    #[test]
    fn tokens_are_stable_per_key_and_differ_across_keys() {
        let token = |key: &[u8], value: &str| {
            let mut out = Vec::new();
            TokenKey::from_bytes(key).token(value.as_bytes(), &mut out);
            String::from_utf8(out).unwrap()
        };
        let a = token(b"host-a", "alice@example.com");
        assert_eq!(a, token(b"host-a", "alice@example.com"));
        assert_ne!(a, token(b"host-b", "alice@example.com"));
        assert_ne!(a, token(b"host-a", "bob@example.com"));
        assert!(a.starts_with("tok_") && a.len() == 20 && a[4..].bytes().all(|b| b.is_ascii_hexdigit()), "{a}");
        // Tokens must not change across releases (reports join on them):
        // this one was computed outside Rust, from the derivation above.
        assert_eq!(token(b"Jefe", "what do ya want for nothing?"), "tok_f4fd08512e115ca0");
        assert_eq!(format!("{:?}", TokenKey::from_bytes(b"hunter2")), "TokenKey(..)");
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/masking.key");
        let first = TokenKey::load_or_create(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        let again = TokenKey::load_or_create(&path).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        first.token(b"v", &mut a);
        again.token(b"v", &mut b);
        assert_eq!(a, b, "the key survives a restart");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(TokenKey::load_or_create(&path), Err(TokenKeyError::Permissions { mode: 0o644, .. })));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, b"short").unwrap();
        assert!(matches!(TokenKey::load_or_create(&path), Err(TokenKeyError::BadLength { len: 5, .. })));
    }
}
