//! The injected credential kept out of answers: a target that echoes
//! request headers (a debugging endpoint, an error page quoting the
//! request) would hand the client the very token Airlock holds back. Every
//! occurrence of its secret in response headers and plain bodies is
//! overwritten with `*` of the same length, so framing (Content-Length)
//! stays true. The secret is looked for as sent and in the forms an echo
//! may give it ([`super::echo`]).
//! Compressed bodies are not searched (answers carrying the credential are
//! asked for uncompressed, and refused when they come compressed).

use std::{
    future::Future as _,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf as _, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::header::{HeaderMap, HeaderValue};

pub(super) use super::echo::Echoes;

/// Overwrites the secret wherever it stands in `headers`' values.
pub fn headers(headers: &mut HeaderMap, echoes: &Echoes) {
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

/// How long held bytes wait for the rest of an echo when the answer
/// pauses. A target echoes a header in one write; a stream that waits for
/// its client (gRPC's ping-pong, a watch between events) must go on.
const HOLD_AT_MOST: std::time::Duration = std::time::Duration::from_millis(100);

/// A body with every occurrence of a secret overwritten, across frame
/// boundaries: a frame's last bytes wait for the next only when they could
/// be part of an echo ([`Echoes::held_back`]). A frame holding none of it
/// passes as it came, not copied: that is nearly every frame.
pub struct Scrubbed<B> {
    inner: B,
    echoes: Echoes,
    /// Bytes held back (a possible start of the secret).
    held: BytesMut,
    /// Trailers that came while bytes were held: sent after them.
    trailers: Option<HeaderMap>,
    /// When held bytes go out if nothing follows them.
    flush: Option<Pin<Box<tokio::time::Sleep>>>,
    done: bool,
}

impl<B> Scrubbed<B> {
    /// `inner` with every echo of `echoes` overwritten.
    pub fn new(inner: B, echoes: Echoes) -> Self {
        Self { inner, echoes, held: BytesMut::new(), trailers: None, flush: None, done: false }
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
                Poll::Pending if this.held.is_empty() => return Poll::Pending,
                Poll::Pending => {
                    // Held bytes go out once the answer pauses: a stream
                    // waiting on its client (gRPC, a watch) must not stall.
                    let deadline = tokio::time::Instant::now() + HOLD_AT_MOST;
                    let timer = this.flush.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.flush = None;
                    let held = this.held.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(held))));
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(mut data) => {
                        this.flush = None;
                        // Not copied when the body's data are `Bytes` already.
                        let data = data.copy_to_bytes(data.remaining());
                        if this.held.is_empty() && !this.echoes.found_in(&data) {
                            let keep = this.echoes.held_back(&data);
                            this.held.extend_from_slice(&data[data.len() - keep..]);
                            let ready = data.slice(..data.len() - keep);
                            if !ready.is_empty() {
                                return Poll::Ready(Some(Ok(Frame::data(ready))));
                            }
                            continue;
                        }
                        this.held.extend_from_slice(&data);
                        this.echoes.overwrite(&mut this.held);
                        let keep = this.echoes.held_back(&this.held);
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

    use crate::proxy::https::echo::tests::echoes;

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

    /// A body fed from a channel: pending until the test sends.
    struct Fed(tokio::sync::mpsc::Receiver<Bytes>);

    impl Body for Fed {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
        }
    }

    #[tokio::test]
    async fn held_bytes_go_out_when_the_answer_pauses() {
        let (send, receive) = tokio::sync::mpsc::channel(4);
        let mut body = Scrubbed::new(Fed(receive), echoes("Bearer token-123456789"));
        send.send(Bytes::from_static(b"line\npartial tok")).await.unwrap();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "line\n");
        let started = std::time::Instant::now();
        let second = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame()).await.expect("flushed");
        assert_eq!(second.unwrap().unwrap().into_data().unwrap(), "partial tok");
        assert!(started.elapsed() >= HOLD_AT_MOST, "{:?}", started.elapsed());
        // An echo that comes whole after a pause is still overwritten.
        send.send(Bytes::from_static(b"token-123456789\n")).await.unwrap();
        drop(send);
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(rest, "***************\n");
    }

    #[test]
    fn an_answer_over_with_its_head_is_over_before_any_frame() {
        let secret = echoes("Bearer token-123456789");
        assert!(Scrubbed::new(Chunks::of(b"", 1), secret.clone()).is_end_stream());
        assert!(!Scrubbed::new(Chunks::of(b"{}", 1), secret).is_end_stream());
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
