//! The injected credential kept out of answers: a target that echoes
//! request headers (a debugging endpoint, an error page quoting the
//! request) would hand the client the very token Airlock holds back. Every
//! occurrence of its secret in response headers and plain bodies is
//! overwritten with `*` of the same length, so framing (Content-Length)
//! stays true. The secret is looked for as sent and in the forms an echo
//! may give it: JSON- and URL-escaped, and a Basic credential decoded.
//! Compressed bodies are not searched (answers carrying the credential are
//! asked for uncompressed, and refused when they come compressed).

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use bytes::{Buf as _, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::header::{HeaderMap, HeaderValue};

/// Secrets shorter than this are not searched for: too likely by chance.
const MIN_SECRET: usize = 8;

/// The injected secret in every form an answer may echo it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Echoes {
    /// Distinct, each at least [`MIN_SECRET`] long; the secret as sent first.
    forms: Vec<Bytes>,
}

/// Whether encoders leave `byte` as it is: what URLs never escape.
fn plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~".contains(&byte)
}

impl Echoes {
    /// The secret part of an injected header value — the token of
    /// `Bearer TOKEN` / `Basic …`, else the whole value — and its forms.
    pub(super) fn of(value: &HeaderValue) -> Option<Self> {
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
        let mut echoes = Self { forms: Vec::new() };
        for form in forms {
            if form.len() >= MIN_SECRET && !echoes.forms.iter().any(|f| f[..] == form[..]) {
                echoes.forms.push(Bytes::from(form));
            }
        }
        (!echoes.forms.is_empty()).then_some(echoes)
    }

    fn found_in(&self, text: &[u8]) -> bool {
        self.forms.iter().any(|form| find(form, text).is_some())
    }

    fn overwrite(&self, bytes: &mut [u8]) {
        for form in &self.forms {
            let mut from = 0;
            while let Some((at, len)) = find(form, &bytes[from..]) {
                let start = from + at;
                bytes[start..start + len].fill(b'*');
                from = start + len;
            }
        }
    }

    /// How many of the last bytes of `text` could be the start of a form
    /// (a proper prefix of it): those must wait for the next frame.
    fn possible_start(&self, text: &[u8]) -> usize {
        self.forms.iter().map(|form| possible_start(text, form)).max().unwrap_or(0)
    }
}

/// Overwrites the secret wherever it stands in `headers`' values.
pub(super) fn headers(headers: &mut HeaderMap, echoes: &Echoes) {
    for value in headers.values_mut() {
        if echoes.found_in(value.as_bytes()) {
            let mut bytes = value.as_bytes().to_vec();
            echoes.overwrite(&mut bytes);
            if let Ok(clean) = HeaderValue::from_bytes(&bytes) {
                *value = clean;
            }
        }
    }
}

/// Where `secret` first stands in `text` and how long it is there. Each
/// character but a letter, a digit or `-._~` may be escaped, each on its
/// own, as encoders choose which to escape: JSON's `\/` and `\u00XX`
/// (.NET escapes `+`, Gson `=`, PHP `/`), URLs' `%XX`; hex in either case.
fn find(secret: &[u8], text: &[u8]) -> Option<(usize, usize)> {
    if secret.iter().all(|&b| plain(b)) {
        return memchr::memmem::find(text, secret).map(|at| (at, secret.len()));
    }
    let first = secret[0];
    let candidate = |from: usize| match plain(first) {
        true => memchr::memchr(first, &text[from..]),
        false => memchr::memchr3(first, b'\\', b'%', &text[from..]),
    };
    let mut from = 0;
    while let Some(found) = candidate(from) {
        let at = from + found;
        if let Matched::Whole(len) = match_at(secret, &text[at..]) {
            return Some((at, len));
        }
        from = at + 1;
    }
    None
}

/// How `text` begins against a secret (or one of its characters).
enum Matched {
    /// With all of it, this many bytes long.
    Whole(usize),
    /// With a beginning of it, then `text` ends.
    Partial,
    No,
}

fn match_at(secret: &[u8], text: &[u8]) -> Matched {
    let mut at = 0;
    for &byte in secret {
        match match_char(byte, &text[at..]) {
            Matched::Whole(len) => at += len,
            other => return other,
        }
    }
    Matched::Whole(at)
}

fn match_char(byte: u8, text: &[u8]) -> Matched {
    let Some(&next) = text.first() else { return Matched::Partial };
    if next == byte {
        return Matched::Whole(1);
    }
    if plain(byte) || (next != b'\\' && next != b'%') {
        return Matched::No;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let (high, low) = (HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 15)]);
    let percent = [b'%', high, low];
    let unicode = [b'\\', b'u', b'0', b'0', high, low];
    let unicode: &[u8] = if byte.is_ascii() { &unicode } else { &[] };
    let slash: &[u8] = if byte == b'/' { b"\\/" } else { &[] };
    let mut partial = false;
    for escape in [&percent[..], unicode, slash].into_iter().filter(|e| !e.is_empty()) {
        let seen = escape.len().min(text.len());
        if text[..seen].eq_ignore_ascii_case(&escape[..seen]) {
            if seen == escape.len() {
                return Matched::Whole(seen);
            }
            partial = true;
        }
    }
    if partial { Matched::Partial } else { Matched::No }
}

/// How many of the last bytes of `text` could be the start of `secret`
/// (a proper prefix of it, escaped or not).
fn possible_start(text: &[u8], secret: &[u8]) -> usize {
    // Six bytes (`\u00XX`) is the longest a character is written.
    let escapable = !secret.iter().all(|&b| plain(b));
    let longest = if escapable { secret.len() * 6 } else { secret.len() };
    let from = text.len().saturating_sub(longest - 1);
    // The first such suffix is the longest: it covers every later one.
    let mut at = from;
    while let Some(found) = memchr::memchr3(secret[0], b'\\', b'%', &text[at..]) {
        let start = at + found;
        if matches!(match_at(secret, &text[start..]), Matched::Partial) {
            return text.len() - start;
        }
        at = start + 1;
    }
    0
}

/// A body with every occurrence of a secret overwritten, across frame
/// boundaries: a frame's last bytes wait for the next only when they could
/// begin the secret. A frame holding none of it passes as it came, not
/// copied: that is nearly every frame.
pub(super) struct Scrubbed<B> {
    inner: B,
    echoes: Echoes,
    /// Bytes held back (a possible start of the secret).
    held: BytesMut,
    /// Trailers that came while bytes were held: sent after them.
    trailers: Option<HeaderMap>,
    done: bool,
}

impl<B> Scrubbed<B> {
    pub fn new(inner: B, echoes: Echoes) -> Self {
        Self { inner, echoes, held: BytesMut::new(), trailers: None, done: false }
    }
}

impl<B> Body for Scrubbed<B>
where
    B: Body + Unpin,
    B::Data: bytes::Buf,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(mut data) => {
                        // Not copied when the body's data are `Bytes` already.
                        let data = data.copy_to_bytes(data.remaining());
                        if this.held.is_empty() && !this.echoes.found_in(&data) {
                            let keep = this.echoes.possible_start(&data);
                            this.held.extend_from_slice(&data[data.len() - keep..]);
                            let ready = data.slice(..data.len() - keep);
                            if !ready.is_empty() {
                                return Poll::Ready(Some(Ok(Frame::data(ready))));
                            }
                            continue;
                        }
                        this.held.extend_from_slice(&data);
                        this.echoes.overwrite(&mut this.held);
                        let keep = this.echoes.possible_start(&this.held);
                        let ready = this.held.split_to(this.held.len() - keep).freeze();
                        if !ready.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(ready))));
                        }
                    }
                    Err(frame) => {
                        // Trailers end the body: what is held goes first.
                        if let Ok(mut trailers) = frame.into_trailers() {
                            headers(&mut trailers, &this.echoes);
                            this.trailers = Some(trailers);
                        }
                        this.done = true;
                        let held = std::mem::take(&mut this.held).freeze();
                        if !held.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(held))));
                        }
                    }
                },
                Poll::Ready(None) => {
                    this.done = true;
                    let held = std::mem::take(&mut this.held).freeze();
                    return Poll::Ready((!held.is_empty()).then(|| Ok(Frame::data(held))));
                }
            }
        }
    }

    /// Also before the first frame, when the answer had none: an answer
    /// that ends with its head must leave in one HEADERS frame (a gRPC
    /// error, "trailers-only", carries its status there and nowhere else).
    fn is_end_stream(&self) -> bool {
        match self.done {
            true => self.trailers.is_none(),
            false => self.held.is_empty() && self.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        // Same length out as in.
        let mut hint = self.inner.size_hint();
        let held = self.held.len() as u64;
        hint.set_lower(hint.lower() + held);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::https::test_body::Chunks;
    use http_body_util::BodyExt as _;

    fn echoes(value: &'static str) -> Echoes {
        Echoes::of(&HeaderValue::from_static(value)).unwrap()
    }

    fn forms(value: &'static str) -> Vec<String> {
        echoes(value).forms.iter().map(|f| String::from_utf8(f.to_vec()).unwrap()).collect()
    }

    #[test]
    fn the_token_of_a_scheme_is_the_secret() {
        assert_eq!(forms("Bearer abcdefgh12"), ["abcdefgh12"]);
        assert_eq!(forms("key-0123456789"), ["key-0123456789"]);
        assert!(Echoes::of(&HeaderValue::from_static("Bearer short")).is_none());
    }

    #[test]
    fn a_secret_is_also_looked_for_escaped_and_a_basic_login_decoded() {
        assert_eq!(forms("Bearer ab+cd/ef=="), ["ab+cd/ef=="]);
        // alice:hunter2-secret
        let basic = forms("Basic YWxpY2U6aHVudGVyMi1zZWNyZXQ=");
        assert_eq!(basic, ["YWxpY2U6aHVudGVyMi1zZWNyZXQ=", "alice:hunter2-secret", "hunter2-secret"]);
        assert!(echoes("Basic YWxpY2U6aHVudGVyMi1zZWNyZXQ=").found_in(b"login alice%3Ahunter2-secret refused"));
    }

    #[test]
    fn each_character_may_be_escaped_on_its_own_in_either_case() {
        let secret = b"ab/cd+ef==";
        for echo in [
            &b"ab\\/cd+ef=="[..],
            b"ab/cd\\u002Bef==",
            b"ab/cd+ef\\u003d\\u003D",
            b"ab%2fcd%2Bef%3D=",
            b"x ab/cd+ef== y",
        ] {
            assert!(find(secret, echo).is_some(), "{}", String::from_utf8_lossy(echo));
        }
        for other in [&b"ab/cd+ef="[..], b"ab/cd ef==", b"ab\\u002fcd+ef\\u003", b"ab%2cd+ef=="] {
            assert!(find(secret, other).is_none(), "{}", String::from_utf8_lossy(other));
        }
        assert_eq!(possible_start(b"text ab\\u00", secret), 6);
        assert_eq!(possible_start(b"text ab%2", secret), 4);
        assert_eq!(possible_start(b"text ab%3", secret), 0);
    }

    #[tokio::test]
    async fn escaped_echoes_are_overwritten_across_frames() {
        let body = br#"{"sent":"ab\/cd+ef\u003d\u003d","q":"ab%2Fcd%2Bef%3D%3D","raw":"ab/cd+ef=="}"#;
        let want = br#"{"sent":"*********************","q":"******************","raw":"**********"}"#;
        for size in 1..body.len() {
            let scrubbed = Scrubbed::new(Chunks::of(body, size), echoes("Bearer ab/cd+ef=="));
            assert_eq!(scrubbed.collect().await.unwrap().to_bytes(), &want[..], "chunks of {size}");
        }
    }

    #[tokio::test]
    async fn a_secret_split_across_frames_is_overwritten_and_the_length_kept() {
        let chunks = ["{\"auth\":\"Bearer tok", "en-12345", "6789\",\"x\":\"token-123456789\"}"];
        let body = Chunks(chunks.iter().map(|c| Bytes::from_static(c.as_bytes())).collect());
        let body = Scrubbed::new(body, echoes("Bearer token-123456789"));
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(out.len(), chunks.concat().len());
        assert_eq!(out, "{\"auth\":\"Bearer ***************\",\"x\":\"***************\"}".as_bytes());
    }

    #[tokio::test]
    async fn any_cut_of_a_body_gives_the_same_answer() {
        let body = b"tok token-12 token-123456789token-123456789 xtoken-1234567 token-123456789";
        let want = b"tok token-12 ****************************** xtoken-1234567 ***************";
        for size in 1..body.len() {
            let scrubbed = Scrubbed::new(Chunks::of(body, size), echoes("Bearer token-123456789"));
            let out = scrubbed.collect().await.unwrap().to_bytes();
            assert_eq!(out, &want[..], "chunks of {size}");
        }
    }

    /// Bodies made of pieces of echoes, cut at random: the answer never
    /// depends on the cut, and no whole echo survives.
    #[tokio::test]
    async fn random_bodies_of_echo_pieces_give_the_same_answer_however_cut() {
        let secret = echoes("Bearer ab/cd+ef==");
        let pieces: [&[u8]; 9] =
            [b"ab/cd+ef==", b"ab\\/cd", b"+ef\\u003D=", b"ab%2F", b"cd%2b", b"ef==", b"\\u00", b"%", b" x "];
        let mut state = 0x2545_f491_u32;
        let mut next = |below: usize| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as usize % below
        };
        for _ in 0..300 {
            let body: Vec<u8> = (0..next(12) + 1).flat_map(|_| pieces[next(pieces.len())].to_vec()).collect();
            let mut whole = body.clone();
            secret.overwrite(&mut whole);
            assert!(!secret.found_in(&whole), "{}", String::from_utf8_lossy(&whole));
            let size = next(body.len()) + 1;
            let out = Scrubbed::new(Chunks::of(&body, size), secret.clone()).collect().await.unwrap().to_bytes();
            assert_eq!(out, whole, "{} in chunks of {size}", String::from_utf8_lossy(&body));
        }
    }

    #[test]
    fn an_answer_over_with_its_head_is_over_before_any_frame() {
        let secret = echoes("Bearer token-123456789");
        assert!(Scrubbed::new(Chunks::of(b"", 1), secret.clone()).is_end_stream());
        assert!(!Scrubbed::new(Chunks::of(b"{}", 1), secret).is_end_stream());
    }

    #[test]
    fn only_a_possible_start_of_the_secret_waits() {
        let secret = b"token-123456789";
        assert_eq!(possible_start(b"plain words", secret), 0);
        assert_eq!(possible_start(b"plain text", secret), 1);
        assert_eq!(possible_start(b"a tok", secret), 3);
        assert_eq!(possible_start(b"a token-1234567", secret), 13);
        // Not a start: `to` followed by something else.
        assert_eq!(possible_start(b"a tox", secret), 0);
        // The longest possible start, not the last one.
        assert_eq!(possible_start(b"xt", b"tt-secret"), 1);
        assert_eq!(possible_start(b"xtt", b"ttt-secret"), 2);
    }

    #[test]
    fn headers_that_echo_the_secret_are_overwritten() {
        let mut map = HeaderMap::new();
        map.insert("x-echo", HeaderValue::from_static("Bearer token-123456789"));
        map.insert("x-other", HeaderValue::from_static("fine"));
        headers(&mut map, &echoes("Bearer token-123456789"));
        assert_eq!(map["x-echo"], "Bearer ***************");
        assert_eq!(map["x-other"], "fine");
    }
}
