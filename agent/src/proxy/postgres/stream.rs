//! Reading frames off a socket: batches of whole frames for inspection, and
//! frames too large to hold streamed straight through.

use bytes::{Buf as _, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::{
    ProxyError,
    codec::{CodecError, Frame, StartupPacket, decode_startup, frame_len},
};

/// Frames up to this size are held and inspected; larger ones (big rows,
/// COPY chunks, huge literals) are streamed through without buffering.
pub const MAX_INSPECTED: usize = 16 << 20;
/// Most bytes asked of the socket per read: while results stream in.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes asked of the socket per read otherwise. A session waiting for its
/// next message (most of them, most of the time: a psql at its prompt, a
/// pooled connection) holds this much per direction, not [`READ_CHUNK`]:
/// 1,000 idle sessions took 170 MB with 64 KiB each way, 40 MB with this.
const FIRST_READ: usize = 4 * 1024;
/// Frames a batch brings per unit of tokio's cooperative budget. The
/// runtime charges a task one unit per read, but one 64 KiB read of a
/// COPY's rows is thousands of frames to inspect: charged by reads, a
/// session streaming rows kept the agent's thread for hundreds of
/// milliseconds at a time under CPU contention, and a CancelRequest for
/// that very COPY waited behind it until the server had finished.
const FRAMES_PER_BUDGET_UNIT: usize = 32;

/// What arrived.
#[derive(Debug)]
pub enum Incoming {
    /// Every whole frame that was available (at least one), in order.
    Frames(Batch),
    /// A frame of `len` bytes (tag and length included) to stream through
    /// with [`FrameReader::forward_large`].
    Large {
        /// Message type.
        tag: u8,
        /// Total length on the wire.
        len: usize,
    },
}

/// Whole frames read together, and the bytes they came in: a relay that
/// changes none of them forwards `raw` as it is, without re-encoding.
#[derive(Debug)]
pub struct Batch {
    /// The frames, in order; their bodies share `raw`'s memory.
    pub frames: Vec<Frame>,
    /// The frames as they were on the wire, back to back.
    pub raw: Bytes,
}

impl Batch {
    /// A batch of frames that came apart (replies held while a write was
    /// measured), encoded back to back.
    pub fn encoded(frames: &[Frame]) -> Self {
        let mut buf = BytesMut::new();
        let lens: Vec<usize> = frames
            .iter()
            .map(|frame| {
                frame.encode(&mut buf);
                5 + frame.body.len()
            })
            .collect();
        Self::split_off(&mut buf, &lens, Vec::with_capacity(frames.len()))
    }

    /// The first frames of `buf`, of these lengths, listed in `frames` (empty).
    fn split_off(buf: &mut BytesMut, lens: &[usize], mut frames: Vec<Frame>) -> Self {
        let raw = buf.split_to(lens.iter().sum()).freeze();
        let mut at = 0;
        frames.extend(lens.iter().map(|len| {
            let frame = Frame { tag: raw[at], body: raw.slice(at + 5..at + len) };
            at += len;
            frame
        }));
        Self { frames, raw }
    }
}

/// A batch on its way out: the frames go as they came, but for those
/// replaced or rewritten. Bytes between replacements are copied once; a
/// batch with no replacement is not copied at all. Each frame of the batch
/// gets one call, [`keep`](Self::keep), [`replace`](Self::replace) or
/// [`rewrite`](Self::rewrite), in order.
pub struct Splice<'a> {
    raw: &'a [u8],
    out: &'a mut Vec<u8>,
    /// Where the frame at hand starts in `raw`.
    at: usize,
    /// How much of `raw` is in `out` already (or was sent).
    copied: usize,
}

/// Why a frame could not be rewritten: its new body does not fit the
/// protocol's length field (or was not written after its prefix).
#[derive(Debug, thiserror::Error)]
#[error("a rewritten frame does not fit the protocol's length field")]
pub struct TooLong;

impl<'a> Splice<'a> {
    /// Splices `raw` (a [`Batch`]'s bytes) into `out`, which must be empty.
    pub fn new(raw: &'a [u8], out: &'a mut Vec<u8>) -> Self {
        debug_assert!(out.is_empty());
        Self { raw, out, at: 0, copied: 0 }
    }

    /// The frame at hand goes as it came.
    pub fn keep(&mut self, frame: &Frame) {
        self.at += 5 + frame.body.len();
    }

    /// The frame at hand is left out; `encode` writes what goes instead.
    pub fn replace(&mut self, frame: &Frame, encode: impl FnOnce(&mut Vec<u8>)) {
        self.out.extend_from_slice(&self.raw[self.copied..self.at]);
        encode(self.out);
        self.keep(frame);
        self.copied = self.at;
    }

    /// The frame at hand, its body rewritten in place if `rewrite` says so.
    /// `rewrite` gets what must come before the new body (what was kept
    /// since the last replacement, then the frame's header) and the output:
    /// if it rewrites the body, it appends that prefix then the new body
    /// and returns true; else it appends nothing. The header's length is
    /// then set to the new body's. A masked row is so written once, where
    /// it goes, and an unchanged one costs no copy.
    pub fn rewrite<E: From<TooLong>>(
        &mut self,
        frame: &Frame,
        rewrite: impl FnOnce(&[u8], &mut Vec<u8>) -> Result<bool, E>,
    ) -> Result<(), E> {
        let prefix = &self.raw[self.copied..self.at + 5];
        let body_start = self.out.len() + prefix.len();
        let rewritten = rewrite(prefix, self.out)?;
        self.keep(frame);
        if rewritten {
            let len = self
                .out
                .len()
                .checked_sub(body_start)
                .and_then(|body_len| u32::try_from(body_len + 4).ok())
                .ok_or(TooLong)?;
            self.out[body_start - 4..body_start].copy_from_slice(&len.to_be_bytes());
            self.copied = self.at;
        }
        Ok(())
    }

    /// Everything before the frame at hand, to send now (the frame itself
    /// waits: a held statement).
    pub fn take_before(&mut self) -> Vec<u8> {
        self.out.extend_from_slice(&self.raw[self.copied..self.at]);
        self.copied = self.at;
        std::mem::take(self.out)
    }

    /// The bytes to send.
    pub fn finish(self) -> &'a [u8] {
        if self.copied == 0 && self.out.is_empty() {
            return self.raw;
        }
        self.out.extend_from_slice(&self.raw[self.copied..]);
        self.out
    }
}

/// Buffered reader of one direction of a connection.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: BytesMut,
    /// Lengths of the whole frames found in `buf`; kept to save an
    /// allocation per batch.
    lens: Vec<usize>,
    /// A relayed batch's frame list, handed back with
    /// [`recycle`](Self::recycle) for the next batch: the same saving.
    spare: Vec<Frame>,
    /// Bytes the next read asks for: doubled (up to [`READ_CHUNK`]) while
    /// reads fill what they asked for, back to [`FIRST_READ`] after a short
    /// one. 0 until the first read.
    read_size: usize,
}

fn malformed(side: &'static str) -> impl Fn(CodecError) -> ProxyError {
    move |error| ProxyError::Protocol { side, error }
}

impl FrameReader {
    /// Reads the client's next startup-phase packet; `None` on a clean close.
    pub async fn startup<R: AsyncRead + Unpin>(&mut self, from: &mut R) -> Result<Option<StartupPacket>, ProxyError> {
        loop {
            if let Some(packet) = decode_startup(&mut self.buf).map_err(malformed("client"))? {
                return Ok(Some(packet));
            }
            if !self.fill(from, 0).await? {
                return self.eof("client", "startup packet");
            }
        }
    }

    /// Reads the next batch of frames; `None` when the peer closed cleanly
    /// between frames.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        from: &mut R,
        side: &'static str,
    ) -> Result<Option<Incoming>, ProxyError> {
        loop {
            // Lengths of the whole frames buffered, before any is taken.
            self.lens.clear();
            let mut at = 0;
            while let Some(len) = frame_len(&self.buf[at..]).map_err(malformed(side))? {
                if len > MAX_INSPECTED {
                    if self.lens.is_empty() {
                        return Ok(Some(Incoming::Large { tag: self.buf[0], len }));
                    }
                    break;
                }
                if self.buf.len() - at < len {
                    break;
                }
                self.lens.push(len);
                at += len;
            }
            if !self.lens.is_empty() {
                // Charged before the batch leaves the buffer, so a caller
                // dropping this future while it yields loses nothing.
                for _ in 0..self.lens.len().div_ceil(FRAMES_PER_BUDGET_UNIT) {
                    tokio::task::coop::consume_budget().await;
                }
                let frames = std::mem::take(&mut self.spare);
                return Ok(Some(Incoming::Frames(Batch::split_off(&mut self.buf, &self.lens, frames))));
            }
            let wanted = frame_len(&self.buf).ok().flatten().unwrap_or(0);
            if !self.fill(from, wanted).await? {
                return self.eof(side, "message");
            }
        }
    }

    /// Reads exactly one frame, leaving whatever follows in the buffer.
    pub async fn next_one<R: AsyncRead + Unpin>(
        &mut self,
        from: &mut R,
        side: &'static str,
    ) -> Result<Option<Incoming>, ProxyError> {
        loop {
            if let Some(len) = frame_len(&self.buf).map_err(malformed(side))? {
                if len > MAX_INSPECTED {
                    return Ok(Some(Incoming::Large { tag: self.buf[0], len }));
                }
                if self.buf.len() >= len {
                    let frames = std::mem::take(&mut self.spare);
                    return Ok(Some(Incoming::Frames(Batch::split_off(&mut self.buf, &[len], frames))));
                }
            }
            let wanted = frame_len(&self.buf).ok().flatten().unwrap_or(0);
            if !self.fill(from, wanted).await? {
                return self.eof(side, "message");
            }
        }
    }

    /// Takes back a batch's frame list once its frames are relayed.
    pub fn recycle(&mut self, mut frames: Vec<Frame>) {
        frames.clear();
        self.spare = frames;
    }

    /// Streams a [`Incoming::Large`] frame from `from` to `to`.
    pub async fn forward_large<R, W>(&mut self, from: &mut R, to: &mut W, _tag: u8, len: usize) -> std::io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let buffered = self.buf.len().min(len);
        to.write_all(&self.buf[..buffered]).await?;
        self.buf.advance(buffered);
        let mut remaining = len - buffered;
        let mut chunk = vec![0u8; READ_CHUNK];
        while remaining > 0 {
            let want = remaining.min(chunk.len());
            let n = from.read(&mut chunk[..want]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            to.write_all(&chunk[..n]).await?;
            remaining -= n;
        }
        // A TLS writer may keep what the socket would not take yet.
        to.flush().await
    }

    /// Reads more; false at end of stream.
    async fn fill<R: AsyncRead + Unpin>(&mut self, from: &mut R, frame_len: usize) -> std::io::Result<bool> {
        let size = self.read_size.max(FIRST_READ);
        // Nothing buffered, and more room than this read needs (what a burst
        // left): let it go rather than hold it while the peer is quiet.
        if self.buf.is_empty() && self.buf.capacity() > size {
            self.buf = BytesMut::new();
        }
        let want = frame_len.saturating_sub(self.buf.len()).clamp(size, MAX_INSPECTED);
        self.buf.reserve(want);
        let room = self.buf.capacity() - self.buf.len();
        let read = from.read_buf(&mut self.buf).await?;
        self.read_size = if read >= room {
            (size * 2).min(READ_CHUNK)
        } else if read < FIRST_READ {
            FIRST_READ
        } else {
            size
        };
        Ok(read > 0)
    }

    fn eof<T>(&self, side: &'static str, what: &'static str) -> Result<Option<T>, ProxyError> {
        if self.buf.is_empty() {
            Ok(None)
        } else {
            Err(ProxyError::Protocol { side, error: CodecError::Truncated(what) })
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut as _, Bytes};

    use super::*;

    fn wire(frames: &[(u8, usize)]) -> Vec<u8> {
        let mut out = BytesMut::new();
        for (tag, len) in frames {
            Frame { tag: *tag, body: Bytes::from(vec![b'x'; *len]) }.encode(&mut out);
        }
        out.to_vec()
    }

    #[test]
    fn a_splice_copies_only_around_replacements() {
        let frame = |tag: u8, body: &'static [u8]| Frame { tag, body: Bytes::from_static(body) };
        let encoded = |frames: &[&Frame]| {
            let mut out = Vec::new();
            frames.iter().for_each(|frame| frame.encode(&mut out));
            out
        };
        let (first, second, third, stand_in) =
            (frame(b'D', b"aa"), frame(b'D', b"bbb"), frame(b'C', b"c"), frame(b'D', b"x"));
        let raw = encoded(&[&first, &second, &third]);

        let mut out = Vec::new();
        let mut splice = Splice::new(&raw, &mut out);
        [&first, &second, &third].into_iter().for_each(|frame| splice.keep(frame));
        assert_eq!(splice.finish().as_ptr(), raw.as_ptr(), "an unchanged batch is not copied");

        let mut out = Vec::new();
        let mut splice = Splice::new(&raw, &mut out);
        splice.keep(&first);
        splice.replace(&second, |out| stand_in.encode(out));
        let before = splice.take_before();
        assert_eq!(before, encoded(&[&first, &stand_in]));
        splice.keep(&third);
        assert_eq!(splice.finish(), encoded(&[&third]));
    }

    #[test]
    fn a_rewritten_body_gets_its_new_length_and_an_unchanged_one_no_copy() {
        let frame = |body: &'static [u8]| Frame { tag: b'D', body: Bytes::from_static(body) };
        let (first, second, third) = (frame(b"aa"), frame(b"bbb"), frame(b"c"));
        let mut raw = Vec::new();
        [&first, &second, &third].iter().for_each(|frame| frame.encode(&mut raw));
        let leave = |_: &[u8], _: &mut Vec<u8>| Ok::<_, TooLong>(false);

        let mut out = Vec::new();
        let mut splice = Splice::new(&raw, &mut out);
        [&first, &second, &third].into_iter().for_each(|frame| splice.rewrite(frame, leave).unwrap());
        assert_eq!(splice.finish().as_ptr(), raw.as_ptr(), "nothing rewritten, nothing copied");

        let mut out = Vec::new();
        let mut splice = Splice::new(&raw, &mut out);
        splice.rewrite(&first, leave).unwrap();
        splice
            .rewrite(&second, |prefix, out| {
                assert_eq!(prefix, &raw[..7 + 5], "the kept frame, then this one's header");
                out.extend_from_slice(prefix);
                out.extend_from_slice(b"longer");
                Ok::<_, TooLong>(true)
            })
            .unwrap();
        splice.rewrite(&third, leave).unwrap();
        let mut expected = Vec::new();
        [&first, &frame(b"longer"), &third].iter().for_each(|frame| frame.encode(&mut expected));
        assert_eq!(splice.finish(), expected);
    }

    #[tokio::test]
    async fn batches_small_frames_and_streams_large_ones() {
        let big = MAX_INSPECTED + 10;
        let input = wire(&[(b'D', 3), (b'D', 4), (b'D', big), (b'C', 1)]);
        let mut from = &input[..];
        let mut reader = FrameReader::default();
        let Some(Incoming::Frames(first)) = reader.next(&mut from, "server").await.unwrap() else { panic!("frames") };
        assert_eq!(first.frames.iter().map(|f| f.body.len()).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(&first.raw[..], &input[..8 + 9], "the frames' own bytes, back to back");
        let Some(Incoming::Large { tag, len }) = reader.next(&mut from, "server").await.unwrap() else {
            panic!("large")
        };
        assert_eq!((tag, len), (b'D', big + 5));
        let mut out = Vec::new();
        reader.forward_large(&mut from, &mut out, tag, len).await.unwrap();
        assert_eq!(out.len(), big + 5);
        assert_eq!(&out[..5], &[b'D', 0x01, 0x00, 0x00, 0x0e]);
        let Some(Incoming::Frames(last)) = reader.next(&mut from, "server").await.unwrap() else { panic!("frames") };
        assert_eq!(last.frames[0].tag, b'C');
        assert!(reader.next(&mut from, "server").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_recycled_frame_list_carries_the_next_batch() {
        let input = [wire(&[(b'D', 3), (b'C', 1)]), wire(&[(b'Z', 1)])];
        let (mut first, mut second) = (&input[0][..], &input[1][..]);
        let mut reader = FrameReader::default();
        let Some(Incoming::Frames(batch)) = reader.next(&mut first, "server").await.unwrap() else { panic!("frames") };
        let list = batch.frames.as_ptr();
        reader.recycle(batch.frames);
        let Some(Incoming::Frames(batch)) = reader.next(&mut second, "server").await.unwrap() else { panic!("frames") };
        assert_eq!(batch.frames.as_ptr(), list, "no new list");
        assert_eq!((batch.frames.len(), batch.frames[0].tag), (1, b'Z'));
    }

    #[tokio::test]
    async fn eof_inside_a_frame_is_an_error() {
        let mut input = wire(&[(b'Q', 10)]);
        input.truncate(8);
        let mut from = &input[..];
        let error = FrameReader::default().next(&mut from, "client").await.unwrap_err();
        assert_eq!(error.to_string(), "client sent a malformed message: message message is truncated");
    }

    #[tokio::test]
    async fn a_session_streaming_rows_lets_other_tasks_run() {
        // Thousands of one-byte rows that are always ready: only the
        // budget charged per frame hands the thread to another task.
        let input = wire(&vec![(b'd', 1); 20_000]);
        let other_ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = other_ran.clone();
        tokio::spawn(async move { flag.store(true, std::sync::atomic::Ordering::SeqCst) });
        let mut from = &input[..];
        let mut reader = FrameReader::default();
        let mut frames_before_other_ran = 0;
        while let Some(Incoming::Frames(batch)) = reader.next(&mut from, "server").await.unwrap() {
            if !other_ran.load(std::sync::atomic::Ordering::SeqCst) {
                frames_before_other_ran += batch.frames.len();
            }
            reader.recycle(batch.frames);
        }
        assert!(frames_before_other_ran < 20_000, "the other task waited for all {frames_before_other_ran} rows");
    }

    #[tokio::test]
    async fn startup_then_frames_on_one_reader() {
        let mut input = BytesMut::new();
        input.put_u32(8);
        input.put_u32(80_877_103);
        input.extend_from_slice(&wire(&[(b'Q', 2)]));
        let mut from = &input[..];
        let mut reader = FrameReader::default();
        assert_eq!(reader.startup(&mut from).await.unwrap(), Some(StartupPacket::SslRequest));
        assert!(
            matches!(reader.next(&mut from, "client").await.unwrap(), Some(Incoming::Frames(f)) if f.frames.len() == 1)
        );
    }
}
