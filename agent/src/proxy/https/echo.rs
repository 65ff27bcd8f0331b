//! The injected secret as an answer may echo it: as sent, with any of its
//! characters escaped on its own (encoders choose which: .NET escapes `+`,
//! Gson `=`, PHP `/`; Python's JSON every character outside ASCII), and
//! for a `Basic` credential decoded. Found by a
//! small automaton over each character's spellings, so a secret holding
//! `%` or `\` is found escaped too.
//!
//! How much of a frame waits for the next one never depends on the
//! secret's text: the bytes since the frame's last line break, up to a cap
//! that depends only on the secret's length rounded up to a power of two.
//! A tail held back only when it began the secret would tell a client that
//! can make the target stream text of its choosing (a pod's log, an echo)
//! whether its guess was a prefix of the secret, one character at a time.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use bytes::Bytes;
use hyper::header::HeaderValue;

/// Secrets shorter than this are not searched for: too likely by chance.
const MIN_SECRET: usize = 8;

/// The longest spelling of one character (`\u00XX`, `&#xHH;`).
const LONGEST_SPELLING: usize = 6;

/// The injected secret in every form an answer may echo it in.
#[derive(Clone, PartialEq, Eq)]
pub struct Echoes {
    /// Distinct, each at least [`MIN_SECRET`] long and on one line; the
    /// secret as sent first.
    forms: Vec<Bytes>,
    /// How many bytes at most wait for the rest of an echo: the longest an
    /// echo can be, rounded up to a power of two.
    hold_cap: usize,
}

impl Echoes {
    /// The secret part of an injected header value — the token of
    /// `Bearer TOKEN` / `Basic …`, else the whole value — and its forms.
    pub fn of(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        let (scheme, secret) = match bytes.iter().position(|&b| b == b' ') {
            Some(space) if bytes[..space].iter().all(u8::is_ascii_alphabetic) => (&bytes[..space], &bytes[space + 1..]),
            _ => (&b""[..], bytes),
        };
        let mut forms = vec![secret.to_vec()];
        if scheme.eq_ignore_ascii_case(b"basic")
            && let Ok(decoded) = STANDARD.decode(secret)
        {
            // A server quoting the login it refused gives it decoded.
            let password = decoded.iter().position(|&b| b == b':').map(|colon| decoded[colon + 1..].to_vec());
            forms.push(decoded);
            forms.extend(password);
        }
        let mut echoes = Self { forms: Vec::new(), hold_cap: 0 };
        for form in forms {
            // No echo spans a line break: no spelling holds one.
            let one_line = !form.contains(&b'\n') && !form.contains(&b'\r');
            if form.len() >= MIN_SECRET && one_line && !echoes.forms.iter().any(|f| f[..] == form[..]) {
                echoes.hold_cap = echoes.hold_cap.max((form.len() * LONGEST_SPELLING).next_power_of_two());
                echoes.forms.push(Bytes::from(form));
            }
        }
        (!echoes.forms.is_empty()).then_some(echoes)
    }

    /// Whether any form stands in `text`.
    pub fn found_in(&self, text: &[u8]) -> bool {
        self.forms.iter().any(|form| find(form, text).is_some())
    }

    /// Overwrites every form in `bytes` with `*`, keeping its length.
    pub fn overwrite(&self, bytes: &mut [u8]) {
        for form in &self.forms {
            let mut from = 0;
            while let Some((at, len)) = find(form, &bytes[from..]) {
                let start = from + at;
                bytes[start..start + len].fill(b'*');
                from = start + len;
            }
        }
    }

    /// How many of the last bytes of `text` wait for more: those since its
    /// last line break, at most the cap. Whatever the secret, the same text
    /// waits the same (but for the cap's power of two).
    pub fn held_back(&self, text: &[u8]) -> usize {
        let since_break = memchr::memrchr2(b'\n', b'\r', text).map_or(text.len(), |at| text.len() - at - 1);
        since_break.min(self.hold_cap - 1)
    }
}

impl std::fmt::Debug for Echoes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret itself.
        f.debug_struct("Echoes").field("forms", &self.forms.len()).finish_non_exhaustive()
    }
}

/// Whether encoders leave `byte` as it is: what URLs never escape.
fn plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~".contains(&byte)
}

/// One way a character is written; compared ignoring ASCII case (hex
/// digits, `\u`, `&#x`).
#[derive(Clone, Copy)]
struct Spelling {
    bytes: [u8; LONGEST_SPELLING],
    len: usize,
}

impl Spelling {
    fn new(text: &[u8]) -> Self {
        let mut bytes = [0; LONGEST_SPELLING];
        bytes[..text.len()].copy_from_slice(text);
        Self { bytes, len: text.len() }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl AsRef<[u8]> for Spelling {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

/// The ways `byte` may stand in an echo: itself; and unless it is
/// [`plain`], `%XX`, JSON's `\u00XX` (ASCII), HTML's `&#D;`, `&#xHH;` and
/// named entities, JSON's short escapes (`\/`, `\"`, `\\`), a form's `+`
/// for a space.
fn spellings(byte: u8) -> impl Iterator<Item = Spelling> + Clone {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let (high, low) = (HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 15)]);
    let mut all = [Spelling::new(&[byte]); 8];
    let mut count = 1;
    let mut add = |text: &[u8]| {
        all[count] = Spelling::new(text);
        count += 1;
    };
    if !plain(byte) {
        add(&[b'%', high, low]);
        add(&[b'&', b'#', b'x', high, low, b';']);
        // `&#D;` in as few digits as the byte needs, on the stack: this
        // runs for every candidate position of an answer.
        let (hundreds, tens, ones) = (b'0' + byte / 100, b'0' + byte / 10 % 10, b'0' + byte % 10);
        match byte {
            0..=9 => add(&[b'&', b'#', ones, b';']),
            10..=99 => add(&[b'&', b'#', tens, ones, b';']),
            _ => add(&[b'&', b'#', hundreds, tens, ones, b';']),
        }
        if byte.is_ascii() {
            add(&[b'\\', b'u', b'0', b'0', high, low]);
        }
        match byte {
            b'/' | b'\\' => add(&[b'\\', byte]),
            b'"' => {
                add(b"\\\"");
                add(b"&quot;");
            }
            b'&' => add(b"&amp;"),
            b'<' => add(b"&lt;"),
            b'>' => add(b"&gt;"),
            b'\'' => add(b"&apos;"),
            b' ' => add(b"+"),
            _ => {}
        }
    }
    all.into_iter().take(count)
}

/// Where `secret` first stands in `text`, and how long it is there.
fn find(secret: &[u8], text: &[u8]) -> Option<(usize, usize)> {
    if secret.iter().all(|&b| plain(b)) {
        return memchr::memmem::find(text, secret).map(|at| (at, secret.len()));
    }
    // Where an echo may start: the bytes the first character's spellings
    // start with, found in one pass.
    let mut starts = [false; 256];
    for spelling in spellings(secret[0]) {
        let first = spelling.as_slice()[0];
        starts[usize::from(first)] = true;
        starts[usize::from(first.to_ascii_uppercase())] = true;
        starts[usize::from(first.to_ascii_lowercase())] = true;
    }
    // A first character outside ASCII, escaped whole.
    if utf8_width(secret) > 1 {
        starts[usize::from(b'\\')] = true;
        starts[usize::from(b'&')] = true;
    }
    let mut from = 0;
    while let Some(found) = text[from..].iter().position(|&b| starts[usize::from(b)]) {
        let at = from + found;
        if let Some(len) = match_at(secret, &text[at..]) {
            return Some((at, len));
        }
        from = at + 1;
    }
    None
}

/// How long `secret` is where it begins `text`, if it does: its
/// characters run over `text`, each spelled any way, keeping every
/// position a spelling reaches (a literal `%` and the `%25` it may be
/// both match). A character of several UTF-8 bytes is spelled byte by byte
/// (raw, `%C3%A4`) or whole ([`char_spellings`]).
fn match_at(secret: &[u8], text: &[u8]) -> Option<usize> {
    let mut positions = vec![0];
    let mut at = 0;
    while at < secret.len() {
        let width = utf8_width(&secret[at..]);
        let mut next = step(&positions, spellings(secret[at]), text);
        for &byte in &secret[at + 1..at + width] {
            next = step(&next, spellings(byte), text);
        }
        if width > 1 {
            let whole = std::str::from_utf8(&secret[at..at + width]).ok().and_then(|c| c.chars().next());
            for spelled in step(&positions, whole.into_iter().flat_map(char_spellings), text) {
                if !next.contains(&spelled) {
                    next.push(spelled);
                }
            }
        }
        if next.is_empty() {
            return None;
        }
        positions = next;
        at += width;
    }
    positions.into_iter().max()
}

/// Where each of `positions` in `text` gets to when one of `spellings`
/// follows it there.
fn step<S: AsRef<[u8]>>(positions: &[usize], spellings: impl Iterator<Item = S> + Clone, text: &[u8]) -> Vec<usize> {
    let mut next = Vec::with_capacity(positions.len());
    for &at in positions {
        for spelling in spellings.clone() {
            let spelling = spelling.as_ref();
            let fits = text.len() - at >= spelling.len();
            if fits
                && text[at..at + spelling.len()].eq_ignore_ascii_case(spelling)
                && !next.contains(&(at + spelling.len()))
            {
                next.push(at + spelling.len());
            }
        }
    }
    next
}

/// How many bytes the character `bytes` starts with takes: a whole UTF-8
/// character of several bytes, else one byte.
fn utf8_width(bytes: &[u8]) -> usize {
    let width = match bytes[0] {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return 1,
    };
    match bytes.get(..width).map(std::str::from_utf8) {
        Some(Ok(_)) => width,
        _ => 1,
    }
}

/// The ways a character outside ASCII is written whole: JSON's `\uXXXX`
/// (a surrogate pair beyond the first plane: Python's `json.dumps` and
/// others escape all of them) and HTML's `&#xH;` and `&#D;`.
fn char_spellings(c: char) -> Vec<Vec<u8>> {
    let mut units = [0u16; 2];
    let json: String = c.encode_utf16(&mut units).iter().map(|unit| format!("\\u{unit:04x}")).collect();
    let code = u32::from(c);
    vec![json.into_bytes(), format!("&#x{code:x};").into_bytes(), format!("&#{code};").into_bytes()]
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::proxy::https) fn echoes(value: &'static str) -> Echoes {
        Echoes::of(&HeaderValue::from_static(value)).unwrap()
    }

    fn forms(value: &'static str) -> Vec<String> {
        echoes(value).forms.iter().map(|f| String::from_utf8(f.to_vec()).unwrap()).collect()
    }

    #[test]
    fn the_token_of_a_scheme_is_the_secret_and_a_basic_login_also_decoded() {
        assert_eq!(forms("Bearer abcdefgh12"), ["abcdefgh12"]);
        assert_eq!(forms("key-0123456789"), ["key-0123456789"]);
        assert!(Echoes::of(&HeaderValue::from_static("Bearer short")).is_none());
        // alice:hunter2-secret
        let basic = forms("Basic YWxpY2U6aHVudGVyMi1zZWNyZXQ=");
        assert_eq!(basic, ["YWxpY2U6aHVudGVyMi1zZWNyZXQ=", "alice:hunter2-secret", "hunter2-secret"]);
        assert!(echoes("Basic YWxpY2U6aHVudGVyMi1zZWNyZXQ=").found_in(b"login alice%3Ahunter2-secret refused"));
    }

    #[test]
    fn each_character_may_be_spelled_its_own_way() {
        let secret = b"ab/cd+ef==";
        for echo in [
            &b"ab\\/cd+ef=="[..],
            b"ab/cd\\u002Bef==",
            b"ab/cd+ef\\u003d\\u003D",
            b"ab%2fcd%2Bef%3D=",
            b"ab/cd&#43;ef&#x3D;=",
            b"x ab/cd+ef== y",
        ] {
            assert!(find(secret, echo).is_some(), "{}", String::from_utf8_lossy(echo));
        }
        for other in [&b"ab/cd+ef="[..], b"ab/cd ef==", b"ab\\u002fcd+ef\\u003", b"ab%2cd+ef=="] {
            assert!(find(secret, other).is_none(), "{}", String::from_utf8_lossy(other));
        }
        // A `%` or `\` in the secret, escaped in the echo.
        assert_eq!(find(b"50%off-deal", b"x=50%25off-deal"), Some((2, 13)));
        assert_eq!(find(b"pa\"ss\\word1", br#""pa\"ss\\word1""#), Some((1, 13)));
        assert_eq!(find(b"two words!", b"q=two+words%21"), Some((2, 12)));
        assert_eq!(find(b"a{bcd}efgh", b"a&#123;bcd&#x7d;efgh"), Some((0, 20)));
        assert_eq!(find(b"a&b<c>\"d'", b"a&amp;b&lt;c&gt;&quot;d&apos;"), Some((0, 29)));
    }

    #[test]
    fn characters_outside_ascii_are_found_escaped_whole_or_byte_by_byte() {
        let secret = "pässwörd-\u{1f511}-ok".as_bytes();
        for echo in [
            "pässwörd-\u{1f511}-ok",
            r#"p\u00e4ssw\u00F6rd-\ud83d\udd11-ok"#,
            "p%C3%A4ssw%c3%b6rd-%F0%9F%94%91-ok",
            "p&#228;ssw&#xf6;rd-&#x1f511;-ok",
            r#"p\u00e4sswörd-🔑-ok"#,
        ] {
            assert_eq!(find(secret, echo.as_bytes()), Some((0, echo.len())), "{echo}");
        }
        for other in [r#"p\u00e5ssw\u00f6rd-\ud83d\udd11-ok"#, r#"pässwörd-\ud83d-ok"#] {
            assert_eq!(find(secret, other.as_bytes()), None, "{other}");
        }
        // Found first in a text that starts with its escape.
        assert_eq!(find("äbcdefghi".as_bytes(), br"x \u00e4bcdefghi"), Some((2, 14)));
        let mut body = br#"{"echo":"p\u00e4ssw\u00f6rd-\ud83d\udd11-ok"}"#.to_vec();
        let echoes = Echoes::of(&HeaderValue::from_bytes(&[b"Bearer ", secret].concat()).unwrap()).unwrap();
        echoes.overwrite(&mut body);
        assert_eq!(body, format!(r#"{{"echo":"{}"}}"#, "*".repeat(34)).as_bytes());
    }

    #[test]
    fn what_waits_depends_on_the_text_not_the_secret() {
        let one = echoes("Bearer token-123456789");
        let other = echoes("Bearer zzzzz-999999999");
        for text in [&b"plain words"[..], b"a tok", b"a token-1234567", b"{\"a\":\"b\"}", b"line\n", b"x=%2"] {
            assert_eq!(one.held_back(text), other.held_back(text), "{}", String::from_utf8_lossy(text));
        }
        assert_eq!(one.held_back(b"a token-1234567"), 15);
        assert_eq!(one.held_back(b"{\"a\":\"b\"}\n{\"c"), 3);
        assert_eq!(one.held_back(b"line\n"), 0);
        let long = [b'x'; 500];
        assert_eq!(one.held_back(&long), 127, "15 bytes spelled at most 6 each: 90, rounded up");
        assert!(!format!("{one:?}").contains("token"), "{one:?}");
    }
}
