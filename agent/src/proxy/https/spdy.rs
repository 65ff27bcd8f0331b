//! SPDY/3.1 frames read off an upgraded exec or attach connection as they
//! pass: what kubectl speaks to API servers older than 1.30, and to newer
//! ones when told to (`KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`).
//!
//! Kubernetes opens one SPDY stream per channel; a `SYN_STREAM`'s headers
//! name it (`streamtype: stdin | stdout | stderr | error | resize`). Header
//! blocks are zlib-compressed with the protocol's dictionary, one zlib
//! stream per direction for the whole connection, so every header block
//! (`SYN_STREAM`, `SYN_REPLY`, `HEADERS`) is inflated to keep in step. The
//! two directions share one map of streams: a stream is opened in one
//! direction and written in both. Data on a stream nobody opened, a stream
//! type an exec has no use for, a header block that does not inflate or a
//! frame of another SPDY version stops the session rather than go
//! unrecorded.
//!
//! Draft: <https://www.chromium.org/spdy/spdy-protocol/spdy-protocol-draft3-1/>

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use flate2::{Decompress, FlushDecompress, Status};

use super::{
    channels::{ChannelReader, Piece, channel},
    upgraded::{Frame, Frames, Text},
};

/// The zlib dictionary of SPDY/3 header blocks (draft 3 §2.6.10.1), as
/// Go's `spdystream` (which kubectl and the API server use) has it.
const DICTIONARY: &[u8] = include_bytes!("spdy3-dictionary.bin");

/// Largest data frame accepted: frames are read whole, and kubectl and the
/// API server write 32 KiB at a time (the field allows 16 MiB).
const MAX_DATA: usize = 4 << 20;
/// Largest control frame accepted.
const MAX_CONTROL: usize = 1 << 20;
/// Largest header block once inflated: a zlib bomb ends here.
const MAX_HEADERS: usize = 256 << 10;
/// Most streams one connection may open (an exec opens five).
const MAX_STREAMS: usize = 64;

/// Control frame types (draft 3 §2.6).
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;

/// Why frames could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpdyError {
    /// A frame that breaks the draft or what an exec stream may carry.
    #[error("SPDY frame not readable: {0}")]
    Invalid(&'static str),
    /// A frame or header block over the decoder's limits.
    #[error("SPDY {0} of {1} bytes is larger than Airlock reads")]
    TooLarge(&'static str, usize),
    /// A control frame of another protocol version.
    #[error("SPDY version {0}, where exec streams speak 3")]
    Version(u16),
    /// Data on a stream no SYN_STREAM opened.
    #[error("SPDY data on stream {0}, which was never opened")]
    UnknownStream(u32),
    /// A stream type exec and attach do not have.
    #[error("SPDY stream type {0:?} is not one of an exec's")]
    StreamType(String),
    /// A header block that does not inflate.
    #[error("SPDY header block does not inflate: {0}")]
    Headers(String),
}

/// The streams of one connection, shared by its two readers.
#[derive(Clone, Default)]
pub struct Streams(Arc<Mutex<HashMap<u32, u8>>>);

impl Streams {
    fn channel(&self, stream: u32) -> Option<u8> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&stream).copied()
    }

    fn open(&self, stream: u32, channel: u8) -> Result<(), SpdyError> {
        let mut streams = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if streams.len() >= MAX_STREAMS {
            return Err(SpdyError::Invalid("more streams than an exec opens"));
        }
        if streams.insert(stream, channel).is_some() {
            return Err(SpdyError::Invalid("a stream opened twice"));
        }
        Ok(())
    }
}

/// Reads the frames of one direction of a SPDY connection.
pub struct Decoder {
    streams: Streams,
    blocks: HeaderBlocks,
    buf: Vec<u8>,
}

impl Decoder {
    /// A reader of one direction, sharing `streams` with the other's.
    pub fn new(streams: Streams) -> Self {
        Self { streams, blocks: HeaderBlocks::default(), buf: Vec::new() }
    }
}

impl ChannelReader for Decoder {
    type Error = SpdyError;

    fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    fn frame(&mut self, at: usize, out: &mut Vec<Piece>) -> Result<Option<usize>, SpdyError> {
        let Some(Head { control, word, len }) = Head::read(&self.buf[at..])? else { return Ok(None) };
        let Some(body) = self.buf.get(at + 8..at + 8 + len) else { return Ok(None) };
        if !control {
            let stream = word & 0x7fff_ffff;
            let channel = self.streams.channel(stream).ok_or(SpdyError::UnknownStream(stream))?;
            if !body.is_empty() {
                out.push(Piece::Data { channel, bytes: body.to_vec() });
            }
            return Ok(Some(8 + len));
        }
        let body = body.to_vec();
        match word as u16 {
            SYN_STREAM => {
                let [a, b, c, d, _, _, _, _, _, _, ref block @ ..] = body[..] else {
                    return Err(SpdyError::Invalid("SYN_STREAM shorter than its fields"));
                };
                let stream = u32::from_be_bytes([a, b, c, d]) & 0x7fff_ffff;
                let headers = self.blocks.inflate(block)?;
                let kind = header(&headers, b"streamtype")?.ok_or(SpdyError::Invalid("a stream with no streamtype"))?;
                let channel = match kind {
                    b"stdin" => channel::STDIN,
                    b"stdout" => channel::STDOUT,
                    b"stderr" => channel::STDERR,
                    b"error" => channel::ERROR,
                    b"resize" => channel::RESIZE,
                    other => return Err(SpdyError::StreamType(String::from_utf8_lossy(other).into_owned())),
                };
                self.streams.open(stream, channel)?;
            }
            SYN_REPLY | HEADERS => {
                self.blocks.inflate(header_block(&body, word as u16)?)?;
            }
            GOAWAY => out.push(Piece::Close),
            // RST_STREAM, SETTINGS, PING, WINDOW_UPDATE, and types the
            // draft tells receivers to ignore: none carries a stream's bytes.
            _ => {}
        }
        Ok(Some(8 + len))
    }
}

/// The frames a target sends, read for echoes of the credential
/// ([`super::upgraded::EchoFilter`]) on any SPDY connection, an exec's or
/// a port-forward's: data frames' payloads, and header blocks inflated.
#[derive(Default)]
pub struct ServerFrames(HeaderBlocks);

impl Frames for ServerFrames {
    fn next(&mut self, bytes: &[u8]) -> Result<Option<Frame>, String> {
        let Some(Head { control, word, len }) = Head::read(bytes).map_err(|error| error.to_string())? else {
            return Ok(None);
        };
        let Some(body) = bytes.get(8..8 + len) else { return Ok(None) };
        let text = match (control, word as u16) {
            (false, _) => Text::Stream(8..8 + len),
            (true, kind @ (SYN_STREAM | SYN_REPLY | HEADERS)) => {
                let block = header_block(body, kind).map_err(|error| error.to_string())?;
                Text::Compressed(self.0.inflate(block).map_err(|error| error.to_string())?)
            }
            (true, _) => Text::None,
        };
        Ok(Some(Frame { len: 8 + len, text }))
    }
}

/// A frame's header (draft 3 §2.2): control or data, its first word and
/// its length.
struct Head {
    control: bool,
    word: u32,
    len: usize,
}

impl Head {
    /// The header at the start of `bytes`, if it is all there; a control
    /// frame's version is checked.
    fn read(bytes: &[u8]) -> Result<Option<Self>, SpdyError> {
        let Some(head) = bytes.get(..8) else { return Ok(None) };
        let word = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let control = word & 0x8000_0000 != 0;
        let limit = if control { MAX_CONTROL } else { MAX_DATA };
        if len > limit {
            return Err(SpdyError::TooLarge(if control { "control frame" } else { "data frame" }, len));
        }
        let version = ((word >> 16) & 0x7fff) as u16;
        if control && version != 3 {
            return Err(SpdyError::Version(version));
        }
        Ok(Some(Self { control, word, len }))
    }
}

/// Where the header block of control frame `kind`'s `body` starts, if it
/// has one: after a SYN_STREAM's stream ids and priority, a SYN_REPLY's or
/// HEADERS' stream id.
fn header_block(body: &[u8], kind: u16) -> Result<&[u8], SpdyError> {
    let fields = if kind == SYN_STREAM { 10 } else { 4 };
    body.get(fields..).ok_or(SpdyError::Invalid("header frame shorter than its fields"))
}

/// One direction's header compression context: every header block of the
/// connection is inflated in order, or the next does not.
struct HeaderBlocks(Decompress);

impl Default for HeaderBlocks {
    fn default() -> Self {
        Self(Decompress::new(true))
    }
}

impl HeaderBlocks {
    /// Inflates one header block in this direction's zlib stream.
    fn inflate(&mut self, block: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(block.len().saturating_mul(4).clamp(256, MAX_HEADERS));
        let mut input = block;
        loop {
            let (read_before, out_before) = (self.0.total_in(), out.len());
            let result = self.0.decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.0.total_in() - read_before) as usize;
            input = &input[used..];
            match result {
                Ok(Status::StreamEnd) if !input.is_empty() => {
                    return Err(SpdyError::Headers("the zlib stream ended inside a header block".into()));
                }
                Ok(_) => {}
                // The stream's first block asks for the dictionary (FDICT).
                Err(error) if error.needs_dictionary().is_some() => {
                    self.0.set_dictionary(DICTIONARY).map_err(|e| SpdyError::Headers(e.to_string()))?;
                    continue;
                }
                Err(error) => return Err(SpdyError::Headers(error.to_string())),
            }
            let full = out.len() == out.capacity();
            if input.is_empty() && !full {
                return Ok(out);
            }
            if full {
                if out.len() >= MAX_HEADERS {
                    return Err(SpdyError::TooLarge("header block", out.len()));
                }
                out.reserve(out.len().min(MAX_HEADERS - out.len()));
            } else if used == 0 && out.len() == out_before {
                return Err(SpdyError::Headers("the header block does not inflate any further".into()));
            }
        }
    }
}

/// The value of header `name` in an inflated header block (draft 3
/// §2.6.10: a 32-bit count of pairs, each a 32-bit length and bytes).
fn header<'b>(block: &'b [u8], name: &[u8]) -> Result<Option<&'b [u8]>, SpdyError> {
    let truncated = SpdyError::Invalid("header block shorter than it says");
    let mut rest = block;
    let take = |rest: &mut &'b [u8]| -> Result<&'b [u8], SpdyError> {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or(truncated.clone())?;
        let len = u32::from_be_bytes(*len) as usize;
        let (field, tail) = tail.split_at_checked(len).ok_or(truncated.clone())?;
        *rest = tail;
        Ok(field)
    };
    let (count, tail) = rest.split_first_chunk::<4>().ok_or(truncated.clone())?;
    rest = tail;
    let mut found = None;
    for _ in 0..u32::from_be_bytes(*count) {
        let (key, value) = (take(&mut rest)?, take(&mut rest)?);
        if key == name {
            if found.is_some() {
                return Err(SpdyError::Invalid("a header given twice"));
            }
            found = Some(value);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use flate2::{Compress, Compression, FlushCompress};

    use super::*;

    /// One direction's header compression, as spdystream writes it.
    struct Deflate(Compress);

    impl Deflate {
        fn new() -> Self {
            let mut compress = Compress::new(Compression::best(), true);
            compress.set_dictionary(DICTIONARY).unwrap();
            Self(compress)
        }

        fn block(&mut self, pairs: &[(&str, &str)]) -> Vec<u8> {
            let mut plain = (pairs.len() as u32).to_be_bytes().to_vec();
            for (name, value) in pairs {
                for field in [name, value] {
                    plain.extend_from_slice(&(field.len() as u32).to_be_bytes());
                    plain.extend_from_slice(field.as_bytes());
                }
            }
            let mut out = Vec::with_capacity(plain.len() + 64);
            self.0.compress_vec(&plain, &mut out, FlushCompress::Sync).unwrap();
            out
        }
    }

    fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x80, 3];
        frame.extend_from_slice(&kind.to_be_bytes());
        frame.push(flags);
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        frame.extend_from_slice(body);
        frame
    }

    fn syn_stream(deflate: &mut Deflate, stream: u32, kind: &str) -> Vec<u8> {
        let mut body = stream.to_be_bytes().to_vec();
        body.extend_from_slice(&[0; 6]);
        body.extend(deflate.block(&[("streamtype", kind)]));
        control(SYN_STREAM, 0, &body)
    }

    fn syn_reply(deflate: &mut Deflate, stream: u32) -> Vec<u8> {
        let mut body = stream.to_be_bytes().to_vec();
        body.extend(deflate.block(&[]));
        control(SYN_REPLY, 0, &body)
    }

    fn data(stream: u32, flags: u8, bytes: &[u8]) -> Vec<u8> {
        let mut frame = stream.to_be_bytes().to_vec();
        frame.push(flags);
        frame.extend_from_slice(&(bytes.len() as u32).to_be_bytes()[1..]);
        frame.extend_from_slice(bytes);
        frame
    }

    fn read(decoder: &mut Decoder, wire: &[u8], chunk: usize) -> Result<Vec<Piece>, SpdyError> {
        let mut out = Vec::new();
        for piece in wire.chunks(chunk.max(1)) {
            decoder.feed(piece, &mut out)?;
        }
        Ok(out)
    }

    /// An exec as kubectl opens it, and the server's answer.
    fn exec_wire() -> (Vec<u8>, Vec<u8>) {
        let (mut client_headers, mut server_headers) = (Deflate::new(), Deflate::new());
        let mut client = Vec::new();
        for (stream, kind) in [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr"), (9, "resize")] {
            client.extend(syn_stream(&mut client_headers, stream, kind));
        }
        client.extend(data(9, 0, br#"{"Width":100,"Height":30}"#));
        client.extend(control(6, 0, &1u32.to_be_bytes())); // PING
        client.extend(data(3, 0, b"ls\n"));
        client.extend(data(3, 1, b""));
        let mut server = Vec::new();
        for stream in [1, 3, 5, 7, 9] {
            server.extend(syn_reply(&mut server_headers, stream));
        }
        server.extend(data(5, 0, b"file\n"));
        server.extend(data(7, 0, b"warning\n"));
        server.extend(data(1, 1, br#"{"status":"Success"}"#));
        server.extend(control(GOAWAY, 0, &[0; 8]));
        (client, server)
    }

    #[test]
    fn an_exec_is_read_in_any_chunking_both_ways() {
        let (client, server) = exec_wire();
        for chunk in [1, 2, 5, 64, usize::MAX] {
            let streams = Streams::default();
            let (mut up, mut down) = (Decoder::new(streams.clone()), Decoder::new(streams));
            let sent = read(&mut up, &client, chunk).unwrap();
            assert_eq!(
                sent,
                [
                    Piece::Data { channel: channel::RESIZE, bytes: br#"{"Width":100,"Height":30}"#.to_vec() },
                    Piece::Data { channel: channel::STDIN, bytes: b"ls\n".to_vec() },
                ],
                "chunks of {chunk}"
            );
            let received = read(&mut down, &server, chunk).unwrap();
            assert_eq!(
                received,
                [
                    Piece::Data { channel: channel::STDOUT, bytes: b"file\n".to_vec() },
                    Piece::Data { channel: channel::STDERR, bytes: b"warning\n".to_vec() },
                    Piece::Data { channel: channel::ERROR, bytes: br#"{"status":"Success"}"#.to_vec() },
                    Piece::Close,
                ]
            );
        }
    }

    #[test]
    fn what_an_exec_cannot_carry_stops_the_reader() {
        let (mut up, streams) = (Decoder::new(Streams::default()), Streams::default());
        assert_eq!(read(&mut up, &data(5, 0, b"x"), 64), Err(SpdyError::UnknownStream(5)));
        let mut headers = Deflate::new();
        let forward = syn_stream(&mut headers, 1, "data");
        assert!(matches!(read(&mut Decoder::new(streams.clone()), &forward, 64), Err(SpdyError::StreamType(_))));
        let mut twice = syn_stream(&mut Deflate::new(), 1, "stdin");
        let mut again = Deflate::new();
        again.block(&[("streamtype", "stdin")]);
        twice.extend(syn_stream(&mut again, 1, "stdout"));
        assert!(read(&mut Decoder::new(Streams::default()), &twice, 64).is_err(), "a stream opened twice");
        let mut spdy2 = control(SYN_STREAM, 0, &[0; 12]);
        spdy2[1] = 2;
        assert_eq!(read(&mut Decoder::new(Streams::default()), &spdy2, 64), Err(SpdyError::Version(2)));
        let mut not_zlib = 1u32.to_be_bytes().to_vec();
        not_zlib.extend_from_slice(&[0; 6]);
        not_zlib.extend_from_slice(b"not a zlib stream at all");
        let broken = control(SYN_STREAM, 0, &not_zlib);
        assert!(matches!(read(&mut Decoder::new(Streams::default()), &broken, 64), Err(SpdyError::Headers(_))));
        let mut huge = data(1, 0, b"");
        huge[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(read(&mut Decoder::new(Streams::default()), &huge, 64), Err(SpdyError::TooLarge(..))));
    }

    #[test]
    fn a_header_bomb_stops_at_the_limit() {
        let mut deflate = Deflate::new();
        let value = "a".repeat(MAX_HEADERS * 2);
        let mut body = 1u32.to_be_bytes().to_vec();
        body.extend_from_slice(&[0; 6]);
        body.extend(deflate.block(&[("streamtype", "stdin"), ("x", &value)]));
        assert!(body.len() < MAX_CONTROL, "{}", body.len());
        let result = read(&mut Decoder::new(Streams::default()), &control(SYN_STREAM, 0, &body), 4096);
        assert!(matches!(result, Err(SpdyError::TooLarge("header block", _))), "{result:?}");
    }

    #[test]
    fn echoes_are_overwritten_in_data_frames_and_refused_in_header_blocks() {
        use crate::proxy::https::{
            echo::tests::echoes,
            upgraded::{FilterError, echo_filter, tests::switching},
        };
        let secret = echoes("Bearer token-123456789");
        let mut headers = Deflate::new();
        let mut wire = syn_reply(&mut headers, 1);
        wire.extend(data(1, 0, b"printed: token-1234"));
        wire.extend(data(1, 0, b"56789\n"));
        let mut want = syn_reply(&mut Deflate::new(), 1);
        want.extend(data(1, 0, b"printed: **********"));
        want.extend(data(1, 0, b"*****\n"));
        for size in [1, 5, wire.len()] {
            let out = echo_filter(&secret, &switching("SPDY/3.1", None)).filter_all(&wire, size).unwrap();
            assert_eq!(out, want, "chunks of {size}");
        }
        let mut body = 1u32.to_be_bytes().to_vec();
        body.extend(Deflate::new().block(&[("x-echo", "Bearer token-123456789")]));
        let mut filter = echo_filter(&secret, &switching("SPDY/3.1", None));
        assert_eq!(filter.feed(&control(SYN_REPLY, 0, &body)), Err(FilterError::CompressedEcho));
    }
}
