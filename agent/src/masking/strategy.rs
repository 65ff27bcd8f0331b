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
    /// `tok_` and 16 hex digits of HMAC-SHA256(host key, value): equal
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
    if value.is_ascii() {
        // The common case, byte by byte: one character is one byte. From
        // the end, the first byte of the last `keep` letters and digits;
        // before it, every letter and digit is hidden.
        let (mut visible, mut kept) = (value.len(), 0);
        while visible > 0 && kept < keep {
            visible -= 1;
            kept += usize::from(value[visible].is_ascii_alphanumeric());
        }
        out.extend(value[..visible].iter().map(|&b| if b.is_ascii_alphanumeric() { b'*' } else { b }));
        out.extend_from_slice(&value[visible..]);
        return;
    }
    // Characters, not bytes: a multi-byte character is one `*`. Bytes
    // that are not UTF-8 (other client encodings) count one each.
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
    mac: Hmac<Sha256>,
    /// Tells this key's entries in the token memo from other keys'.
    id: u64,
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
    /// A key from its bytes (tests, and keys kept elsewhere).
    pub fn from_bytes(key: &[u8]) -> Self {
        // HMAC takes keys of any length; the error type is never produced.
        let mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC key"));
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self { mac, id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed) }
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
    pub fn token(&self, value: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(b"tok_");
        out.extend_from_slice(&memo::token(self.id, value, || self.digest_hex(value)));
    }

    fn digest_hex(&self, value: &[u8]) -> [u8; 16] {
        let mut mac = self.mac.clone();
        mac.update(value);
        let digest = mac.finalize().into_bytes();
        let mut hex = [0u8; 16];
        for (pair, &byte) in hex.chunks_exact_mut(2).zip(&digest[..8]) {
            pair.copy_from_slice(&crate::hex::pair(byte));
        }
        hex
    }
}

/// Tokens of recently seen short values, one table per thread (the proxy
/// masks on one event-loop thread, so no lock). Columns repeat values
/// (statuses, countries, `n/a`), and a lookup costs a fraction of an HMAC.
/// Entries hold the value itself and are compared in full: a collision
/// only evicts. Like the relay's buffers, the table holds recent values in
/// the agent's memory, never anywhere else.
mod memo {
    use std::{cell::RefCell, hash::BuildHasher as _};

    use foldhash::fast::RandomState;

    /// A value may sit in any of its set's ways: with one slot per hash, a
    /// column of a few dozen distinct values already missed one lookup in
    /// five on collisions.
    const WAYS: usize = 4;
    const SETS: usize = 64;
    /// Longer values are hashed every time: long values rarely repeat.
    const MAX_VALUE: usize = 48;

    #[derive(Clone, Copy)]
    struct Slot {
        /// The key's id; 0 for an empty slot (ids start at 1).
        key: u64,
        /// The hash of key and value: values of one length (e-mail
        /// addresses, codes) are told apart without comparing their bytes.
        hash: u64,
        len: u8,
        value: [u8; MAX_VALUE],
        token: [u8; 16],
    }

    #[derive(Clone, Copy)]
    struct Set {
        ways: [Slot; WAYS],
        /// The way the next new value replaces: the set's oldest.
        next: u8,
    }

    const EMPTY: Slot = Slot { key: 0, hash: 0, len: 0, value: [0; MAX_VALUE], token: [0; 16] };

    thread_local! {
        static TABLE: RefCell<Box<[Set; SETS]>> = RefCell::new(Box::new([Set { ways: [EMPTY; WAYS], next: 0 }; SETS]));
        /// Seeded per thread, and fast: SipHash cost more than the rest of
        /// a lookup. Values chosen to crowd one set only make the memo
        /// miss, which costs what no memo would.
        static SET_HASH: RandomState = RandomState::default();
    }

    /// The token of `value` under key `key`, from the table or `compute`.
    pub(super) fn token(key: u64, value: &[u8], compute: impl FnOnce() -> [u8; 16]) -> [u8; 16] {
        if value.len() > MAX_VALUE {
            return compute();
        }
        let hash = SET_HASH.with(|hash| hash.hash_one((key, value)));
        TABLE.with_borrow_mut(|table| {
            let set = &mut table[hash as usize % SETS];
            let known = set
                .ways
                .iter()
                .find(|slot| slot.hash == hash && slot.key == key && &slot.value[..usize::from(slot.len)] == value);
            if let Some(slot) = known {
                return slot.token;
            }
            let token = compute();
            let slot = &mut set.ways[usize::from(set.next)];
            set.next = (set.next + 1) % WAYS as u8;
            slot.key = key;
            slot.hash = hash;
            slot.len = value.len() as u8;
            slot.value[..value.len()].copy_from_slice(value);
            slot.token = token;
            token
        })
    }
}

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
    fn remembered_tokens_are_the_computed_ones() {
        let keys = [TokenKey::from_bytes(b"k1"), TokenKey::from_bytes(b"k2")];
        let values: Vec<Vec<u8>> =
            (0..2_000u32).map(|i| format!("v{}", i % 700).repeat(1 + (i % 14) as usize).into_bytes()).collect();
        for (i, value) in values.iter().enumerate() {
            let key = &keys[i % 2];
            let mut memoized = Vec::new();
            key.token(value, &mut memoized);
            let mut fresh = b"tok_".to_vec();
            fresh.extend_from_slice(&key.digest_hex(value));
            assert_eq!(memoized, fresh, "value {i}");
        }
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
        // RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?").
        assert_eq!(token(b"Jefe", "what do ya want for nothing?"), "tok_5bdcc146bf60754e");
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
