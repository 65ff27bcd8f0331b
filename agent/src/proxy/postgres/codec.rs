//! PostgreSQL wire protocol (v3) framing and the typed messages the proxy
//! inspects.
//!
//! Frames are forwarded as they arrived (no re-encoding), so the typed view
//! only has to cover what Airlock looks at; everything else stays a
//! [`Frame`] with its tag and body. Decoding never panics: every length is
//! checked against the bytes present and against the limits below.

use std::fmt;

use bytes::{Buf as _, BufMut, Bytes, BytesMut};

/// Largest startup-phase packet accepted (PostgreSQL's own limit).
pub const MAX_STARTUP_LEN: usize = 10_000;
/// Largest regular message accepted (PostgreSQL's own 1 GiB limit).
pub const MAX_MESSAGE_LEN: usize = 1 << 30;

/// Protocol version 3.0, in a StartupMessage.
const PROTOCOL_V3: u32 = 196_608;
/// SSLRequest code.
const SSL_REQUEST: u32 = 80_877_103;
/// GSSENCRequest code.
const GSSENC_REQUEST: u32 = 80_877_104;
/// CancelRequest code.
const CANCEL_REQUEST: u32 = 80_877_102;

/// Why bytes could not be decoded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A length field is smaller than the length field itself.
    #[error("message length {0} is shorter than its own header")]
    LengthTooShort(u32),
    /// A length field exceeds the protocol limit.
    #[error("message of {len} bytes exceeds the {limit}-byte limit")]
    TooLong {
        /// Declared length.
        len: usize,
        /// The limit that applies.
        limit: usize,
    },
    /// A startup packet with an unknown code or protocol version.
    #[error("unsupported startup code {0} (only protocol 3.0 is spoken)")]
    UnsupportedStartup(u32),
    /// A message body ended before its fields did.
    #[error("{0} message is truncated")]
    Truncated(&'static str),
    /// A string field is not NUL-terminated or not UTF-8.
    #[error("{0} message has an invalid string field")]
    BadString(&'static str),
}

/// A regular message: type byte and body (without the length field).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Message type byte.
    pub tag: u8,
    /// Body, without tag and length.
    pub body: Bytes,
}

impl Frame {
    /// A simple-protocol Query of `sql` (which holds no NUL).
    pub fn query(sql: &str) -> Self {
        let mut body = BytesMut::with_capacity(sql.len() + 1);
        body.put_slice(sql.as_bytes());
        body.put_u8(0);
        Self { tag: b'Q', body: body.freeze() }
    }

    /// Appends the wire form to `out`.
    pub fn encode(&self, out: &mut impl BufMut) {
        encode_frame(self.tag, &self.body, out);
    }
}

/// Appends a frame of `tag` with `body` to `out`, from bytes held elsewhere.
pub fn encode_frame(tag: u8, body: &[u8], out: &mut impl BufMut) {
    out.put_u8(tag);
    out.put_u32(4 + body.len() as u32);
    out.put_slice(body);
}

/// The first packet of a client connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartupPacket {
    /// Asks for TLS.
    SslRequest,
    /// Asks for GSSAPI encryption.
    GssEncRequest,
    /// Cancels a query of another connection.
    Cancel {
        /// Backend process id from BackendKeyData.
        pid: u32,
        /// Secret key from BackendKeyData.
        key: u32,
    },
    /// Starts a session.
    Startup(StartupMessage),
}

/// A StartupMessage: the connection parameters (user, database, …).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartupMessage {
    /// Parameters in the order sent.
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    /// A parameter's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Appends the wire form to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let body_len: usize = self.params.iter().map(|(k, v)| k.len() + v.len() + 2).sum::<usize>() + 1;
        out.put_u32((8 + body_len) as u32);
        out.put_u32(PROTOCOL_V3);
        for (key, value) in &self.params {
            out.put_slice(key.as_bytes());
            out.put_u8(0);
            out.put_slice(value.as_bytes());
            out.put_u8(0);
        }
        out.put_u8(0);
    }
}

/// Decodes a startup-phase packet from the front of `buf`, consuming it.
/// `Ok(None)`: more bytes are needed.
pub fn decode_startup(buf: &mut BytesMut) -> Result<Option<StartupPacket>, CodecError> {
    let Some(len) = peek_u32(buf, 0) else { return Ok(None) };
    let len = checked_len(len, 8, MAX_STARTUP_LEN)?;
    if buf.len() < len {
        return Ok(None);
    }
    let mut packet = buf.split_to(len).freeze();
    packet.advance(4);
    let code = packet.get_u32();
    let packet = match code {
        SSL_REQUEST => StartupPacket::SslRequest,
        GSSENC_REQUEST => StartupPacket::GssEncRequest,
        CANCEL_REQUEST => {
            if packet.remaining() < 8 {
                return Err(CodecError::Truncated("CancelRequest"));
            }
            StartupPacket::Cancel { pid: packet.get_u32(), key: packet.get_u32() }
        }
        PROTOCOL_V3 => {
            let mut params = Vec::new();
            loop {
                let key = read_cstr(&mut packet, "StartupMessage")?;
                if key.is_empty() {
                    break;
                }
                let value = read_cstr(&mut packet, "StartupMessage")?;
                params.push((key, value));
            }
            StartupPacket::Startup(StartupMessage { params })
        }
        other => return Err(CodecError::UnsupportedStartup(other)),
    };
    Ok(Some(packet))
}

/// Length of the regular frame at the front of `buf`, once its header is
/// there: `Ok(Some(total bytes including tag))`.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, CodecError> {
    let Some(len) = peek_u32(buf, 1) else { return Ok(None) };
    Ok(Some(1 + checked_len(len, 4, MAX_MESSAGE_LEN)?))
}

/// Decodes a regular frame from the front of `buf`, consuming it.
/// `Ok(None)`: more bytes are needed.
pub fn decode_frame(buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
    let Some(total) = frame_len(buf)? else { return Ok(None) };
    if buf.len() < total {
        return Ok(None);
    }
    let mut frame = buf.split_to(total).freeze();
    let tag = frame.get_u8();
    frame.advance(4);
    Ok(Some(Frame { tag, body: frame }))
}

fn peek_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at + 4)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn checked_len(len: u32, min: usize, max: usize) -> Result<usize, CodecError> {
    let len_usize = len as usize;
    if len_usize < min {
        return Err(CodecError::LengthTooShort(len));
    }
    if len_usize > max {
        return Err(CodecError::TooLong { len: len_usize, limit: max });
    }
    Ok(len_usize)
}

fn read_cstr(buf: &mut Bytes, message: &'static str) -> Result<String, CodecError> {
    let end = buf.iter().position(|b| *b == 0).ok_or(CodecError::Truncated(message))?;
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| CodecError::BadString(message))?.to_owned();
    buf.advance(end + 1);
    Ok(text)
}

/// A NUL-terminated string at the front of `buf`, borrowed; `buf` moves past it.
fn cstr<'a>(buf: &mut &'a [u8], message: &'static str) -> Result<&'a str, CodecError> {
    let end = buf.iter().position(|b| *b == 0).ok_or(CodecError::Truncated(message))?;
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| CodecError::BadString(message))?;
    *buf = &buf[end + 1..];
    Ok(text)
}

/// Frontend messages the proxy looks into, borrowing from their frame: the
/// relay types every message, and copies only what it keeps. SQL text and
/// statement names are bytes in the session's client encoding
/// (see `encoding`), not necessarily UTF-8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frontend<'a> {
    /// Simple query: one or more statements.
    Query {
        /// SQL text.
        sql: &'a [u8],
    },
    /// Extended protocol: prepare a statement.
    Parse {
        /// Prepared statement name ("" = unnamed).
        statement: &'a [u8],
        /// SQL text.
        sql: &'a [u8],
    },
    /// Extended protocol: bind a prepared statement to a portal.
    Bind {
        /// Portal name ("" = unnamed).
        portal: &'a [u8],
        /// Prepared statement name.
        statement: &'a [u8],
    },
    /// Extended protocol: run a portal.
    Execute {
        /// Portal name.
        portal: &'a [u8],
    },
    /// FunctionCall: a server function called by its OID, no SQL involved.
    FunctionCall,
    /// The client is leaving.
    Terminate,
    /// Anything else, forwarded untouched.
    Other,
}

impl<'a> Frontend<'a> {
    /// Types a frontend frame.
    pub fn parse(frame: &'a Frame) -> Result<Self, CodecError> {
        let mut body = &frame.body[..];
        Ok(match frame.tag {
            b'Q' => Self::Query { sql: cbytes(&mut body, "Query")? },
            b'P' => {
                let statement = cbytes(&mut body, "Parse")?;
                Self::Parse { statement, sql: cbytes(&mut body, "Parse")? }
            }
            b'B' => {
                let portal = cbytes(&mut body, "Bind")?;
                Self::Bind { portal, statement: cbytes(&mut body, "Bind")? }
            }
            b'E' => Self::Execute { portal: cbytes(&mut body, "Execute")? },
            b'F' => Self::FunctionCall,
            b'X' => Self::Terminate,
            _ => Self::Other,
        })
    }
}

/// A NUL-terminated byte string at the front of `buf`, borrowed; `buf` moves past it.
fn cbytes<'a>(buf: &mut &'a [u8], message: &'static str) -> Result<&'a [u8], CodecError> {
    let end = buf.iter().position(|b| *b == 0).ok_or(CodecError::Truncated(message))?;
    let bytes = &buf[..end];
    *buf = &buf[end + 1..];
    Ok(bytes)
}

/// Backend messages the proxy looks into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend<'a> {
    /// A statement finished: its command tag, e.g. `INSERT 0 5`.
    CommandComplete {
        /// The tag.
        tag: &'a str,
    },
    /// An error.
    Error(ErrorFields),
    /// The backend's cancel key.
    KeyData {
        /// Backend process id.
        pid: u32,
        /// Secret key.
        key: u32,
    },
    /// A setting the server reports: at start-up and whenever it changes.
    ParameterStatus {
        /// Setting name, e.g. `client_encoding`.
        name: &'a str,
        /// Its value.
        value: &'a str,
    },
    /// The server is idle; `status` is `I`, `T` (in transaction) or `E` (failed transaction).
    ReadyForQuery {
        /// Transaction status.
        status: u8,
    },
    /// Anything else, forwarded untouched.
    Other,
}

impl<'a> Backend<'a> {
    /// Types a backend frame.
    pub fn parse(frame: &'a Frame) -> Result<Self, CodecError> {
        let mut body = &frame.body[..];
        Ok(match frame.tag {
            b'C' => Self::CommandComplete { tag: cstr(&mut body, "CommandComplete")? },
            b'E' => Self::Error(ErrorFields::parse(&mut frame.body.clone(), "ErrorResponse")?),
            b'K' => {
                if body.remaining() < 8 {
                    return Err(CodecError::Truncated("BackendKeyData"));
                }
                Self::KeyData { pid: body.get_u32(), key: body.get_u32() }
            }
            b'S' => {
                let name = cstr(&mut body, "ParameterStatus")?;
                Self::ParameterStatus { name, value: cstr(&mut body, "ParameterStatus")? }
            }
            b'Z' => Self::ReadyForQuery { status: *body.first().ok_or(CodecError::Truncated("ReadyForQuery"))? },
            _ => Self::Other,
        })
    }
}

/// A Bind message as result masking needs it: which portal, which
/// statement, and the result columns' format codes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindFormats {
    /// Portal name.
    pub portal: String,
    /// Prepared statement name.
    pub statement: String,
    /// Result format codes: none (all text), one (for all) or one per column.
    pub result_formats: Vec<i16>,
}

/// Parses a Bind ('B') body down to its result format codes.
pub fn bind_formats(frame: &Frame) -> Result<BindFormats, CodecError> {
    const WHAT: &str = "Bind";
    let mut body = frame.body.clone();
    let portal = read_cstr(&mut body, WHAT)?;
    let statement = read_cstr(&mut body, WHAT)?;
    let need = |body: &Bytes, n: usize| if body.remaining() < n { Err(CodecError::Truncated(WHAT)) } else { Ok(()) };
    need(&body, 2)?;
    let parameter_formats = usize::try_from(body.get_i16()).map_err(|_| CodecError::Truncated(WHAT))?;
    need(&body, parameter_formats * 2 + 2)?;
    body.advance(parameter_formats * 2);
    let parameters = usize::try_from(body.get_i16()).map_err(|_| CodecError::Truncated(WHAT))?;
    for _ in 0..parameters {
        need(&body, 4)?;
        let len = body.get_i32();
        if len > 0 {
            let len = len as usize;
            need(&body, len)?;
            body.advance(len);
        }
    }
    need(&body, 2)?;
    let count = usize::try_from(body.get_i16()).map_err(|_| CodecError::Truncated(WHAT))?;
    need(&body, count * 2)?;
    let result_formats = (0..count).map(|_| body.get_i16()).collect();
    Ok(BindFormats { portal, statement, result_formats })
}

/// Parses a Describe ('D') or Close ('C') body: `S` (statement) or `P`
/// (portal), and the name.
pub fn describe_target(frame: &Frame) -> Result<(u8, String), CodecError> {
    let mut body = frame.body.clone();
    if !body.has_remaining() {
        return Err(CodecError::Truncated("Describe"));
    }
    let kind = body.get_u8();
    Ok((kind, read_cstr(&mut body, "Describe")?))
}

/// One column of a RowDescription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldDescription {
    /// Column name as the query labels it (an alias, if given).
    pub name: String,
    /// OID of the table the column comes from; 0 when it is computed.
    pub table_oid: u32,
    /// The column's attribute number in that table; 0 when computed.
    pub column: i16,
    /// OID of the column's type.
    pub type_oid: u32,
    /// 0 text, 1 binary.
    pub format: i16,
}

/// Parses a RowDescription ('T') body.
pub fn row_description(frame: &Frame) -> Result<Vec<FieldDescription>, CodecError> {
    const WHAT: &str = "RowDescription";
    let mut body = frame.body.clone();
    if body.remaining() < 2 {
        return Err(CodecError::Truncated(WHAT));
    }
    let count = body.get_i16();
    let mut fields = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(1600));
    for _ in 0..count.max(0) {
        let name = read_cstr(&mut body, WHAT)?;
        if body.remaining() < 18 {
            return Err(CodecError::Truncated(WHAT));
        }
        let table_oid = body.get_u32();
        let column = body.get_i16();
        let type_oid = body.get_u32();
        body.advance(6); // type size and modifier
        fields.push(FieldDescription { name, table_oid, column, type_oid, format: body.get_i16() });
    }
    Ok(fields)
}

/// The column values of a DataRow ('D') body; `None` is SQL NULL. Values
/// are slices of the frame, not copies.
pub fn data_row(frame: &Frame) -> Result<Vec<Option<Bytes>>, CodecError> {
    const WHAT: &str = "DataRow";
    let mut body = frame.body.clone();
    if body.remaining() < 2 {
        return Err(CodecError::Truncated(WHAT));
    }
    let count = body.get_i16();
    let mut values = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(1600));
    for _ in 0..count.max(0) {
        if body.remaining() < 4 {
            return Err(CodecError::Truncated(WHAT));
        }
        match body.get_i32() {
            -1 => values.push(None),
            len if len < 0 => return Err(CodecError::Truncated(WHAT)),
            len => {
                let len = len as usize;
                if body.remaining() < len {
                    return Err(CodecError::Truncated(WHAT));
                }
                values.push(Some(body.split_to(len)));
            }
        }
    }
    Ok(values)
}

/// Fields of an ErrorResponse or NoticeResponse.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorFields {
    /// (field code, value), e.g. (`C`, `28000`).
    pub fields: Vec<(u8, String)>,
}

impl ErrorFields {
    /// A FATAL error with SQLSTATE `code`, a message and an optional hint.
    pub fn fatal(code: &str, message: &str, hint: Option<&str>) -> Self {
        Self::new("FATAL", code, message, hint)
    }

    /// Fields of the given severity (`ERROR`, `FATAL`, `NOTICE`, …), SQLSTATE
    /// `code`, message and optional hint.
    pub fn new(severity: &str, code: &str, message: &str, hint: Option<&str>) -> Self {
        let mut fields = vec![
            (b'S', severity.to_owned()),
            (b'V', severity.to_owned()),
            (b'C', code.to_owned()),
            (b'M', message.to_owned()),
        ];
        if let Some(hint) = hint {
            fields.push((b'H', hint.to_owned()));
        }
        Self { fields }
    }

    /// A field's value.
    pub fn get(&self, code: u8) -> Option<&str> {
        self.fields.iter().find(|(c, _)| *c == code).map(|(_, v)| v.as_str())
    }

    fn parse(body: &mut Bytes, message: &'static str) -> Result<Self, CodecError> {
        let mut fields = Vec::new();
        loop {
            if !body.has_remaining() {
                return Err(CodecError::Truncated(message));
            }
            let code = body.get_u8();
            if code == 0 {
                return Ok(Self { fields });
            }
            fields.push((code, read_cstr(body, message)?));
        }
    }

    /// The ErrorResponse frame carrying these fields.
    pub fn to_error_frame(&self) -> Frame {
        self.to_frame(b'E')
    }

    /// The NoticeResponse frame carrying these fields.
    pub fn to_notice_frame(&self) -> Frame {
        self.to_frame(b'N')
    }

    fn to_frame(&self, tag: u8) -> Frame {
        let mut body = BytesMut::new();
        for (code, value) in &self.fields {
            body.put_u8(*code);
            // A NUL inside a value would end the field early on the client.
            body.put_slice(value.replace('\0', " ").as_bytes());
            body.put_u8(0);
        }
        body.put_u8(0);
        Frame { tag, body: body.freeze() }
    }
}

impl fmt::Display for ErrorFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.get(b'S').unwrap_or("ERROR"),
            self.get(b'C').unwrap_or("?????"),
            self.get(b'M').unwrap_or("")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_descriptions_and_data_rows() {
        let mut body = BytesMut::new();
        body.put_i16(2);
        for (name, oid, col) in [("email", 16_384u32, 3i16), ("n", 0, 0)] {
            body.put_slice(name.as_bytes());
            body.put_u8(0);
            body.put_u32(oid);
            body.put_i16(col);
            body.put_u32(25);
            body.put_i16(-1);
            body.put_i32(-1);
            body.put_i16(0);
        }
        let fields = row_description(&Frame { tag: b'T', body: body.freeze() }).unwrap();
        assert_eq!((fields[0].name.as_str(), fields[0].table_oid, fields[0].column), ("email", 16_384, 3));
        assert_eq!((fields[1].table_oid, fields[1].format), (0, 0));

        let mut row = BytesMut::new();
        row.put_i16(2);
        row.put_i32(3);
        row.put_slice(b"a@b");
        row.put_i32(-1);
        let values = data_row(&Frame { tag: b'D', body: row.clone().freeze() }).unwrap();
        assert_eq!(values, [Some(Bytes::from_static(b"a@b")), None]);
        row.truncate(7);
        assert!(data_row(&Frame { tag: b'D', body: row.freeze() }).is_err());
        assert!(row_description(&Frame { tag: b'T', body: Bytes::from_static(&[0, 1, b'x']) }).is_err());
    }

    fn frame_bytes(tag: u8, body: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        Frame { tag, body: Bytes::copy_from_slice(body) }.encode(&mut out);
        out
    }

    #[test]
    fn startup_round_trip_and_partial_input() {
        let message =
            StartupMessage { params: vec![("user".into(), "alice".into()), ("database".into(), "app".into())] };
        let mut wire = BytesMut::new();
        message.encode(&mut wire);
        let full = wire.clone();
        for cut in 0..full.len() {
            let mut partial = BytesMut::from(&full[..cut]);
            assert_eq!(decode_startup(&mut partial), Ok(None), "cut at {cut}");
        }
        let decoded = decode_startup(&mut wire).unwrap().unwrap();
        assert_eq!(decoded, StartupPacket::Startup(message.clone()));
        assert!(wire.is_empty());
        assert_eq!(message.get("database"), Some("app"));
    }

    #[test]
    fn special_startup_packets() {
        let mut wire = BytesMut::new();
        wire.put_u32(8);
        wire.put_u32(SSL_REQUEST);
        wire.put_u32(8);
        wire.put_u32(GSSENC_REQUEST);
        wire.put_u32(16);
        wire.put_u32(CANCEL_REQUEST);
        wire.put_u32(42);
        wire.put_u32(7);
        assert_eq!(decode_startup(&mut wire), Ok(Some(StartupPacket::SslRequest)));
        assert_eq!(decode_startup(&mut wire), Ok(Some(StartupPacket::GssEncRequest)));
        assert_eq!(decode_startup(&mut wire), Ok(Some(StartupPacket::Cancel { pid: 42, key: 7 })));
    }

    #[test]
    fn bad_startup_packets_are_errors() {
        let packet = |len: u32, code: u32, rest: &[u8]| {
            let mut wire = BytesMut::new();
            wire.put_u32(len);
            wire.put_u32(code);
            wire.put_slice(rest);
            decode_startup(&mut wire)
        };
        assert_eq!(packet(3, 0, &[]), Err(CodecError::LengthTooShort(3)));
        assert_eq!(packet(20_000, PROTOCOL_V3, &[]), Err(CodecError::TooLong { len: 20_000, limit: MAX_STARTUP_LEN }));
        assert_eq!(packet(8, 131_072, &[]), Err(CodecError::UnsupportedStartup(131_072)));
        assert_eq!(packet(12, CANCEL_REQUEST, &[0, 0, 0, 1]), Err(CodecError::Truncated("CancelRequest")));
        assert_eq!(packet(12, PROTOCOL_V3, b"user"), Err(CodecError::Truncated("StartupMessage")));
        assert_eq!(packet(13, PROTOCOL_V3, b"u\xff\0\0\0"), Err(CodecError::BadString("StartupMessage")));
    }

    #[test]
    fn frames_decode_and_type() {
        let mut wire = frame_bytes(b'Q', b"select 1\0");
        wire.extend_from_slice(&frame_bytes(b'P', b"s1\0select $1\0\0\0")[..]);
        let query = decode_frame(&mut wire).unwrap().unwrap();
        assert_eq!(Frontend::parse(&query), Ok(Frontend::Query { sql: b"select 1" }));
        let parse = decode_frame(&mut wire).unwrap().unwrap();
        assert_eq!(Frontend::parse(&parse), Ok(Frontend::Parse { statement: b"s1", sql: b"select $1" }));
        assert_eq!(decode_frame(&mut wire), Ok(None));
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let mut short = BytesMut::from(&[b'Q', 0, 0, 0, 3][..]);
        assert_eq!(decode_frame(&mut short), Err(CodecError::LengthTooShort(3)));
        let mut huge = BytesMut::from(&[b'D', 0x7f, 0xff, 0xff, 0xff][..]);
        assert!(matches!(decode_frame(&mut huge), Err(CodecError::TooLong { .. })));
        let unterminated = Frame { tag: b'Q', body: Bytes::from_static(b"select") };
        assert_eq!(Frontend::parse(&unterminated), Err(CodecError::Truncated("Query")));
        let empty_ready = Frame { tag: b'Z', body: Bytes::new() };
        assert_eq!(Backend::parse(&empty_ready), Err(CodecError::Truncated("ReadyForQuery")));
        let open_error = Frame { tag: b'E', body: Bytes::from_static(b"SERROR\0") };
        assert_eq!(Backend::parse(&open_error), Err(CodecError::Truncated("ErrorResponse")));
    }

    #[test]
    fn error_response_round_trip() {
        let error = ErrorFields::fatal("28000", "no access", Some("run: airlock login"));
        let frame = error.to_error_frame();
        assert_eq!(Backend::parse(&frame), Ok(Backend::Error(error.clone())));
        assert_eq!(error.to_string(), "FATAL 28000: no access");
        let with_nul = ErrorFields::fatal("XX000", "a\0b", None).to_error_frame();
        let Ok(Backend::Error(parsed)) = Backend::parse(&with_nul) else { panic!("parses") };
        assert_eq!(parsed.get(b'M'), Some("a b"));
    }

    #[test]
    fn command_complete_and_ready() {
        let done = Frame { tag: b'C', body: Bytes::from_static(b"INSERT 0 5\0") };
        assert_eq!(Backend::parse(&done), Ok(Backend::CommandComplete { tag: "INSERT 0 5" }));
        let ready = Frame { tag: b'Z', body: Bytes::from_static(b"T") };
        assert_eq!(Backend::parse(&ready), Ok(Backend::ReadyForQuery { status: b'T' }));
    }
}
