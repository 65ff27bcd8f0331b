//! A body made of given chunks, for the tests and fuzz targets of the body
//! wrappers.

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame};

/// Yields its chunks one frame each, then ends.
pub struct Chunks(pub VecDeque<Bytes>);

impl Chunks {
    /// `text` cut into chunks of `size` bytes.
    pub fn of(text: &[u8], size: usize) -> Self {
        Self(text.chunks(size.max(1)).map(Bytes::copy_from_slice).collect())
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}
