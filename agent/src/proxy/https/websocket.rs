//! WebSocket frames (RFC 6455) read off an upgraded connection as they pass,
//! for Kubernetes' channel protocol (`v5.channel.k8s.io` and its
//! predecessors): each binary message starts with a byte naming its stream
//! (0 stdin, 1 stdout, 2 stderr, 3 the command's status, 4 terminal size;
//! in v5, `255 N` closes stream N). The bytes are relayed untouched; the
//! decoder only tells the recorder what went by. What it cannot read (an
//! extension's compressed frames, a frame breaking the RFC) stops the
//! session rather than go unrecorded.

/// Largest frame payload accepted: the API server and kubectl write a
/// read's worth (32 KiB) at a time.
const MAX_FRAME: u64 = 16 << 20;

pub use super::channels::Piece;
use super::{
    channels::ChannelReader,
    upgraded::{Frame, Frames, Text},
};

/// Why frames could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame breaks RFC 6455 (masking, reserved bits, control frames).
    #[error("WebSocket frame breaks RFC 6455: {0}")]
    Invalid(&'static str),
    /// The frame is larger than the decoder holds.
    #[error("WebSocket frame of {0} bytes is larger than 16 MiB")]
    TooLarge(u64),
}

/// Reads the frames of one direction of a WebSocket connection.
pub struct Decoder {
    /// Frames from the client are masked, from the server not (RFC 6455 §5.1).
    from_client: bool,
    buf: Vec<u8>,
    /// The stream of the message whose frames are arriving, once its first
    /// byte came.
    channel: Option<u8>,
    messages: Messages,
}

impl Decoder {
    /// A decoder of the frames a client (`from_client`) or server sends.
    pub fn new(from_client: bool) -> Self {
        Self { from_client, buf: Vec::new(), channel: None, messages: Messages::default() }
    }
}

/// A frame's header (RFC 6455 §5.2).
pub(super) struct Head {
    /// The last frame of its message.
    pub fin: bool,
    pub opcode: u8,
    /// The masking key of a client's frame.
    pub key: Option<[u8; 4]>,
    /// The header's length: where the payload starts.
    pub header: usize,
    /// The payload's length.
    pub len: usize,
}

/// Opcodes (RFC 6455 §5.2).
pub(super) mod opcode {
    /// A message's later frame.
    pub const CONTINUATION: u8 = 0x0;
    /// The first frame of a text (UTF-8) message.
    pub const TEXT: u8 = 0x1;
    /// The first frame of a binary message.
    pub const BINARY: u8 = 0x2;
    /// The close handshake's frame: control frames start here.
    pub const CLOSE: u8 = 0x8;
    /// The last control frame's opcode; those above are reserved.
    pub const PONG: u8 = 0xa;
}

/// Where a frame stands among its connection's messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Place {
    /// A control frame (close, ping, pong), which may come between a
    /// message's frames.
    Control,
    /// The first frame of a message of this opcode (text or binary).
    Starts(u8),
    /// A later frame of the open message.
    Continues,
}

/// The data message whose frames are arriving: each frame's place in the
/// connection's messages, checked against RFC 6455 §5.4–5.5.
#[derive(Default)]
pub(super) struct Messages {
    /// A message is open (its first frame came without FIN).
    open: bool,
}

impl Messages {
    /// Where the frame of `head` stands; an error if it may not stand there.
    pub(super) fn place(&mut self, head: &Head) -> Result<Place, FrameError> {
        let place = match head.opcode {
            opcode::CLOSE..=opcode::PONG if !head.fin || head.len > 125 => {
                return Err(FrameError::Invalid("control frames are short and unfragmented"));
            }
            opcode::CLOSE..=opcode::PONG => return Ok(Place::Control),
            opcode::CONTINUATION if !self.open => return Err(FrameError::Invalid("continuation without a message")),
            opcode::TEXT | opcode::BINARY if self.open => {
                return Err(FrameError::Invalid("new message inside a fragmented one"));
            }
            opcode::CONTINUATION => Place::Continues,
            start @ (opcode::TEXT | opcode::BINARY) => Place::Starts(start),
            _ => return Err(FrameError::Invalid("unknown opcode")),
        };
        self.open = !head.fin;
        Ok(place)
    }
}

/// Appends a whole, unfragmented frame as a server sends it (unmasked).
pub(super) fn write_server_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        len if len < 126 => out.push(len as u8),
        len if len <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

impl Head {
    /// The header at the start of `bytes`, if it is all there, of a frame
    /// sent by a client (`from_client`) or server.
    pub(super) fn read(bytes: &[u8], from_client: bool) -> Result<Option<Self>, FrameError> {
        let [first, second, ..] = *bytes else { return Ok(None) };
        let (fin, reserved, opcode) = (first & 0x80 != 0, first & 0x70, first & 0x0f);
        let masked = second & 0x80 != 0;
        if reserved != 0 {
            return Err(FrameError::Invalid("reserved bits set (an extension Airlock did not allow)"));
        }
        if masked != from_client {
            return Err(FrameError::Invalid("client frames must be masked and server frames not"));
        }
        let (len, mut header) = match second & 0x7f {
            126 => match bytes.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match bytes.get(2..10) {
                Some(b) => (u64::from_be_bytes(b.try_into().unwrap_or_default()), 10),
                None => return Ok(None),
            },
            short => (u64::from(short), 2),
        };
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        let key = if masked {
            let Some(key) = bytes.get(header..header + 4) else { return Ok(None) };
            header += 4;
            Some([key[0], key[1], key[2], key[3]])
        } else {
            None
        };
        Ok(Some(Self { fin, opcode, key, header, len: len as usize }))
    }
}

impl ChannelReader for Decoder {
    type Error = FrameError;

    fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    fn frame(&mut self, at: usize, out: &mut Vec<Piece>) -> Result<Option<usize>, FrameError> {
        let bytes = &self.buf[at..];
        let Some(head) = Head::read(bytes, self.from_client)? else { return Ok(None) };
        let (header, len) = (head.header, head.len);
        let Some(payload) = bytes.get(header..header + len) else { return Ok(None) };
        let mut payload = payload.to_vec();
        if let Some(key) = head.key {
            payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= key[i % 4]);
        }
        match self.messages.place(&head)? {
            Place::Control if head.opcode == opcode::CLOSE => out.push(Piece::Close),
            Place::Control => {}
            Place::Starts(_) | Place::Continues => {
                let mut data = &payload[..];
                if self.channel.is_none()
                    && let Some((&channel, rest)) = data.split_first()
                {
                    self.channel = Some(channel);
                    data = rest;
                }
                if let (Some(channel), false) = (self.channel, data.is_empty()) {
                    out.push(Piece::Data { channel, bytes: data.to_vec() });
                }
                if head.fin {
                    self.channel = None;
                }
            }
        }
        Ok(Some(header + len))
    }
}

/// The frames a server sends, read for echoes of the credential
/// ([`super::upgraded::EchoFilter`]): data frames' payloads as one stream,
/// control frames' (a close frame's reason) each on its own. Extensions
/// were not offered: a compressed frame is an error, as is a masked one.
pub struct ServerFrames {
    /// Each message starts with the byte naming its channel (Kubernetes'
    /// channel protocols), which is not part of the text.
    channels: bool,
    messages: Messages,
}

impl ServerFrames {
    /// A reader of a server's frames; `channels`: of a Kubernetes channel
    /// protocol.
    pub fn new(channels: bool) -> Self {
        Self { channels, messages: Messages::default() }
    }
}

impl Frames for ServerFrames {
    fn next(&mut self, bytes: &[u8]) -> Result<Option<Frame>, String> {
        let Some(head) = Head::read(bytes, false).map_err(|error| error.to_string())? else { return Ok(None) };
        let end = head.header + head.len;
        if bytes.len() < end {
            return Ok(None);
        }
        let text = match self.messages.place(&head).map_err(|error| error.to_string())? {
            Place::Control => Text::Apart(head.header..end),
            Place::Starts(_) if self.channels && head.len > 0 => Text::Stream(head.header + 1..end),
            Place::Starts(_) | Place::Continues => Text::Stream(head.header..end),
        };
        Ok(Some(Frame { len: end, text }))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A frame as a client (masked with `key`) or server writes it.
    pub(crate) fn frame(fin: bool, opcode: u8, payload: &[u8], key: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        let mask_bit = if key.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(mask_bit | n as u8),
            n if n <= 0xffff => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match key {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => out.extend_from_slice(payload),
        }
        out
    }

    fn pieces(decoder: &mut Decoder, wire: &[u8], chunk: usize) -> Result<Vec<Piece>, FrameError> {
        let mut out = Vec::new();
        for piece in wire.chunks(chunk.max(1)) {
            decoder.feed(piece, &mut out)?;
        }
        Ok(out)
    }

    #[test]
    fn channel_messages_are_read_in_any_chunking() {
        let key = Some([1, 2, 3, 4]);
        let mut wire = frame(true, 2, b"\x00ls -l\n", key);
        wire.extend(frame(true, 9, b"ping", key));
        // A fragmented message: its channel is in the first frame only.
        wire.extend(frame(false, 2, b"\x00ab", key));
        wire.extend(frame(true, 0, b"cd", key));
        wire.extend(frame(true, 2, &[255, 0], key));
        wire.extend(frame(true, 8, b"", key));
        for chunk in [1, 2, 3, 7, wire.len()] {
            let got = pieces(&mut Decoder::new(true), &wire, chunk).unwrap();
            assert_eq!(
                got,
                [
                    Piece::Data { channel: 0, bytes: b"ls -l\n".to_vec() },
                    Piece::Data { channel: 0, bytes: b"ab".to_vec() },
                    Piece::Data { channel: 0, bytes: b"cd".to_vec() },
                    Piece::Data { channel: 255, bytes: vec![0] },
                    Piece::Close,
                ]
            );
        }
        let big = [&[1u8][..], &vec![b'x'; 70_000]].concat();
        let got = pieces(&mut Decoder::new(false), &frame(true, 2, &big, None), 4096).unwrap();
        let total: usize = got.iter().map(|p| if let Piece::Data { bytes, .. } = p { bytes.len() } else { 0 }).sum();
        assert_eq!(total, 70_000);
    }

    #[test]
    fn frames_breaking_the_rfc_are_refused() {
        let masked = frame(true, 2, b"\x01x", Some([9; 4]));
        assert!(pieces(&mut Decoder::new(false), &masked, 64).is_err(), "a server does not mask");
        assert!(pieces(&mut Decoder::new(true), &frame(true, 2, b"\x01x", None), 64).is_err(), "a client masks");
        let mut compressed = frame(true, 2, b"\x01x", None);
        compressed[0] |= 0x40;
        assert!(matches!(pieces(&mut Decoder::new(false), &compressed, 64), Err(FrameError::Invalid(_))));
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(pieces(&mut Decoder::new(false), &huge, 64), Err(FrameError::TooLarge(1 << 40)));
        let orphan = frame(true, 0, b"x", None);
        assert!(pieces(&mut Decoder::new(false), &orphan, 64).is_err());
        let long_ping = frame(true, 9, &[0; 126], None);
        assert!(pieces(&mut Decoder::new(false), &long_ping, 64).is_err());
    }
}
