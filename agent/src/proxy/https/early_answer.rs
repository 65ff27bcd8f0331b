//! An answer over before its request's upload: the target answered whole
//! without reading the rest (nginx's `return`, a 413). An HTTP/2 client
//! is told so as RFC 9113 §8.1 has a server do: the answer ends, then
//! `RST_STREAM` with `NO_ERROR` (stop sending, the answer stands), which
//! hyper sends once the client's request body is dropped; the upload to the
//! target is given up, and the target's connection, its request cut short,
//! closed rather than reused. Clients that take the reset as an error
//! (curl 7.x) meet it only after a wait: the answer's end waits for the
//! upload to end, a while, as a server that reads the whole request does.

use std::{
    future::Future as _,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// How long an answer's end waits for the request's upload to end.
const UPLOAD_WAIT: Duration = Duration::from_secs(5);

/// What an answer and its request's upload share.
#[derive(Default)]
pub struct Link {
    answer_over: AtomicBool,
    upload_over: AtomicBool,
    /// The upload's task, waiting on the client: woken when the answer is over.
    upload: Mutex<Option<Waker>>,
    /// The answer's, waiting to end: woken when the upload is over.
    answer: Mutex<Option<Waker>>,
}

impl Link {
    fn answer_over(&self) {
        self.answer_over.store(true, Ordering::Release);
        wake(&self.upload);
    }

    fn upload_over(&self) {
        self.upload_over.store(true, Ordering::Release);
        wake(&self.answer);
    }
}

fn wake(waker: &Mutex<Option<Waker>>) {
    if let Some(waker) = waker.lock().unwrap_or_else(|p| p.into_inner()).take() {
        waker.wake();
    }
}

fn register(waker: &Mutex<Option<Waker>>, cx: &Context<'_>) {
    let mut slot = waker.lock().unwrap_or_else(|p| p.into_inner());
    // Polled for every frame of an upload: the same task's waker is kept, not cloned again.
    if !slot.as_ref().is_some_and(|kept| kept.will_wake(cx.waker())) {
        *slot = Some(cx.waker().clone());
    }
}

/// Why an upload was given up.
#[derive(Debug, thiserror::Error)]
#[error("the target answered before the request's body was all sent; the rest is not")]
pub struct AnswerOver;

/// A request body sent to the target, given up once the answer is over.
pub struct Upload<B> {
    inner: Option<B>,
    link: Arc<Link>,
}

impl<B> Upload<B> {
    /// `inner`, given up once the answer sharing `link` is over.
    pub fn new(inner: B, link: Arc<Link>) -> Self {
        Self { inner: Some(inner), link }
    }

    /// Over, sent or not: the client's body is dropped.
    fn give_up(&mut self) {
        self.inner = None;
        self.link.upload_over();
    }
}

impl<B> Drop for Upload<B> {
    fn drop(&mut self) {
        self.link.upload_over();
    }
}

impl<B> Body for Upload<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
        // Registered before the check, so an answer ending in between still wakes this task.
        register(&this.link.upload, cx);
        if this.link.answer_over.load(Ordering::Acquire) {
            this.give_up();
            return Poll::Ready(Some(Err(Box::new(AnswerOver))));
        }
        let polled = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = polled {
            this.give_up();
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// An answer's body that, once over (sent whole, or dropped), has its
/// request's upload given up; with `waits`, its end first waits for the
/// upload to end, [`UPLOAD_WAIT`] at most.
pub struct Answer<B> {
    inner: B,
    link: Arc<Link>,
    /// How long the end waits for the upload; `None`: it does not.
    waits: Option<Duration>,
    /// The body is over but for its end, which waits for the upload.
    ending: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> Answer<B> {
    /// `inner`, ending the upload sharing `link` when it is over; `waits`:
    /// its end waits for the upload first (an HTTP/2 client's).
    pub fn new(inner: B, link: Arc<Link>, waits: bool) -> Self {
        Self { inner, link, waits: waits.then_some(UPLOAD_WAIT), ending: None }
    }

    fn upload_over(&self) -> bool {
        self.link.upload_over.load(Ordering::Acquire)
    }
}

/// hyper drops an answer's body once it sent it, or when the client left.
impl<B> Drop for Answer<B> {
    fn drop(&mut self) {
        self.link.answer_over();
    }
}

impl<B: Body + Unpin> Body for Answer<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        if this.ending.is_none() {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(None) if this.waits.is_some() && !this.upload_over() => {
                    this.ending = this.waits.map(|wait| Box::pin(tokio::time::sleep(wait)));
                }
                polled => return polled,
            }
        }
        register(&this.link.answer, cx);
        let waited = this.ending.as_mut().is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
        match this.upload_over() || waited {
            true => Poll::Ready(None),
            false => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ending.is_none() && self.inner.is_end_stream() && (self.waits.is_none() || self.upload_over())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, time::Duration};

    use http_body_util::BodyExt as _;

    use super::*;
    use crate::proxy::https::test_body::Chunks;

    /// A client still uploading: never a frame.
    struct Uploading;

    impl Body for Uploading {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn an_upload_is_given_up_once_its_answer_is_over() {
        let link = Arc::new(Link::default());
        let mut upload = Upload::new(Uploading, Arc::clone(&link));
        let answer = Answer::new(Chunks::of(b"done", 2), Arc::clone(&link), false);
        let waiting = tokio::time::timeout(Duration::from_millis(20), upload.frame()).await;
        assert!(waiting.is_err(), "the upload waits on its client");
        assert_eq!(answer.collect().await.unwrap().to_bytes(), "done");
        let given_up = tokio::time::timeout(Duration::from_secs(5), upload.frame()).await.expect("woken");
        assert!(given_up.unwrap().unwrap_err().is::<AnswerOver>());
        assert!(upload.frame().await.is_none(), "and stays over");
    }

    #[tokio::test]
    async fn an_http2_answer_ends_once_its_upload_has() {
        let link = Arc::new(Link::default());
        let upload = Upload::new(Chunks::of(b"", 1), Arc::clone(&link));
        let mut answer = Answer::new(Chunks::of(b"done", 4), Arc::clone(&link), true);
        assert!(!answer.is_end_stream());
        assert_eq!(answer.frame().await.unwrap().unwrap().into_data().unwrap(), "done");
        assert!(!answer.is_end_stream(), "the end waits for the upload");
        let waiting = tokio::time::timeout(Duration::from_millis(20), answer.frame()).await;
        assert!(waiting.is_err());
        drop(upload);
        let end = tokio::time::timeout(Duration::from_secs(5), answer.frame()).await.expect("woken");
        assert!(end.is_none());
    }

    #[tokio::test]
    async fn an_answer_waits_for_its_upload_a_while_only() {
        let link = Arc::new(Link::default());
        let mut upload = Upload::new(Uploading, Arc::clone(&link));
        let mut answer = Answer::new(Chunks::of(b"done", 4), Arc::clone(&link), true);
        answer.waits = Some(Duration::from_millis(50));
        let started = tokio::time::Instant::now();
        assert_eq!(answer.collect().await.unwrap().to_bytes(), "done");
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(upload.frame().await.unwrap().is_err(), "then the upload is given up");
    }
}
