//! The injected credential kept out of answers: a target that echoes
//! request headers (a debugging endpoint, an error page quoting the
//! request) would hand the client the very token Airlock holds back. Every
//! occurrence of its secret in response headers and plain bodies is
//! overwritten with `*` of the same length, so framing (Content-Length)
//! stays true. Compressed bodies are not searched.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf as _, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::header::{HeaderMap, HeaderValue};

/// Secrets shorter than this are not searched for: too likely by chance.
const MIN_SECRET: usize = 8;

/// The part of an injected header value that is secret: the token of
/// `Bearer TOKEN` / `Basic …`, else the whole value.
pub(super) fn secret_of(value: &HeaderValue) -> Option<Bytes> {
    let bytes = value.as_bytes();
    let secret = match bytes.iter().position(|&b| b == b' ') {
        Some(space) if bytes[..space].iter().all(u8::is_ascii_alphabetic) => &bytes[space + 1..],
        _ => bytes,
    };
    (secret.len() >= MIN_SECRET).then(|| Bytes::copy_from_slice(secret))
}

/// Overwrites `secret` wherever it stands in `headers`' values.
pub(super) fn headers(headers: &mut HeaderMap, secret: &[u8]) {
    for value in headers.values_mut() {
        if memchr::memmem::find(value.as_bytes(), secret).is_some() {
            let mut bytes = value.as_bytes().to_vec();
            overwrite(&mut bytes, secret);
            if let Ok(clean) = HeaderValue::from_bytes(&bytes) {
                *value = clean;
            }
        }
    }
}

fn overwrite(bytes: &mut [u8], secret: &[u8]) {
    let mut from = 0;
    while let Some(at) = memchr::memmem::find(&bytes[from..], secret) {
        let start = from + at;
        bytes[start..start + secret.len()].fill(b'*');
        from = start + secret.len();
    }
}

/// How many of the last bytes of `text` could be the start of `secret`
/// (a proper prefix of it): those must wait for the next frame.
fn possible_start(text: &[u8], secret: &[u8]) -> usize {
    let from = text.len().saturating_sub(secret.len() - 1);
    // The first such suffix is the longest: it covers every later one.
    let mut at = from;
    while let Some(found) = memchr::memchr(secret[0], &text[at..]) {
        let start = at + found;
        if secret.starts_with(&text[start..]) {
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
    secret: Bytes,
    /// Bytes held back (a possible start of the secret).
    held: BytesMut,
    /// Trailers that came while bytes were held: sent after them.
    trailers: Option<HeaderMap>,
    done: bool,
}

impl<B> Scrubbed<B> {
    pub fn new(inner: B, secret: Bytes) -> Self {
        Self { inner, secret, held: BytesMut::new(), trailers: None, done: false }
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
                        if this.held.is_empty() && memchr::memmem::find(&data, &this.secret).is_none() {
                            let keep = possible_start(&data, &this.secret);
                            this.held.extend_from_slice(&data[data.len() - keep..]);
                            let ready = data.slice(..data.len() - keep);
                            if !ready.is_empty() {
                                return Poll::Ready(Some(Ok(Frame::data(ready))));
                            }
                            continue;
                        }
                        this.held.extend_from_slice(&data);
                        overwrite(&mut this.held, &this.secret);
                        let keep = possible_start(&this.held, &this.secret);
                        let ready = this.held.split_to(this.held.len() - keep).freeze();
                        if !ready.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(ready))));
                        }
                    }
                    Err(frame) => {
                        // Trailers end the body: what is held goes first.
                        if let Ok(mut trailers) = frame.into_trailers() {
                            headers(&mut trailers, &this.secret);
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

    #[test]
    fn the_token_of_a_scheme_is_the_secret() {
        assert_eq!(secret_of(&HeaderValue::from_static("Bearer abcdefgh12")).unwrap(), "abcdefgh12");
        assert_eq!(secret_of(&HeaderValue::from_static("key-0123456789")).unwrap(), "key-0123456789");
        assert!(secret_of(&HeaderValue::from_static("Bearer short")).is_none());
    }

    #[tokio::test]
    async fn a_secret_split_across_frames_is_overwritten_and_the_length_kept() {
        let chunks = ["{\"auth\":\"Bearer tok", "en-12345", "6789\",\"x\":\"token-123456789\"}"];
        let body = Chunks(chunks.iter().map(|c| Bytes::from_static(c.as_bytes())).collect());
        let body = Scrubbed::new(body, Bytes::from_static(b"token-123456789"));
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(out.len(), chunks.concat().len());
        assert_eq!(out, "{\"auth\":\"Bearer ***************\",\"x\":\"***************\"}".as_bytes());
    }

    #[tokio::test]
    async fn any_cut_of_a_body_gives_the_same_answer() {
        let secret = b"token-123456789";
        let body = b"tok token-12 token-123456789token-123456789 xtoken-1234567 token-123456789";
        let want = b"tok token-12 ****************************** xtoken-1234567 ***************";
        for size in 1..body.len() {
            let scrubbed = Scrubbed::new(Chunks::of(body, size), Bytes::from_static(secret));
            let out = scrubbed.collect().await.unwrap().to_bytes();
            assert_eq!(out, &want[..], "chunks of {size}");
        }
    }

    #[test]
    fn an_answer_over_with_its_head_is_over_before_any_frame() {
        let secret = Bytes::from_static(b"token-123456789");
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
        headers(&mut map, b"token-123456789");
        assert_eq!(map["x-echo"], "Bearer ***************");
        assert_eq!(map["x-other"], "fine");
    }
}
