//! The bytes after a `101 Switching Protocols`, relayed both ways. Where a
//! credential was injected, what the target sends is searched for echoes of
//! it as an answer's body is ([`super::scrub`]): a WebSocket or SPDY
//! connection carries them in its frames' payloads, read across frame
//! boundaries; any other protocol, in its bytes as they come. Where
//! answers are masked, a WebSocket's text messages are masked first
//! ([`super::websocket_masking`]). What cannot be searched (a compressed
//! frame, a compressed SPDY header block holding the secret) ends the
//! connection rather than reach the client.

use std::{
    ops::Range,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use hyper::{HeaderMap, header};

use super::{echo::Echoes, exec::READABLE_PROTOCOLS, spdy, websocket, websocket_masking::MessageMasker};

/// Bytes read from either side at a time.
const CHUNK: usize = 32 * 1024;

/// How long bytes that could begin an echo wait for the rest when the
/// target pauses. Shorter than a body's: these are terminals, whose every
/// keystroke echo would wait this long; a write split by the network is
/// joined well within it.
pub const HOLD_AT_MOST: Duration = Duration::from_millis(20);

/// How the upgraded connection frames its streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// RFC 6455 WebSocket, a Kubernetes channel protocol inside.
    WebSocket,
    /// SPDY/3.1, one stream per channel.
    Spdy,
}

impl Framing {
    /// The framing an `Upgrade` header asks for, if Airlock reads it.
    pub fn of_upgrade(protocol: &[u8]) -> Option<Self> {
        if protocol.eq_ignore_ascii_case(b"websocket") {
            Some(Self::WebSocket)
        } else if protocol.eq_ignore_ascii_case(b"SPDY/3.1") {
            Some(Self::Spdy)
        } else {
            None
        }
    }
}

/// A filter of `echoes` out of what the target sends on the connection its
/// 101 answer (`switching`) switched to.
pub fn echo_filter(echoes: &Echoes, switching: &HeaderMap) -> EchoFilter {
    let protocol = switching.get(header::UPGRADE).and_then(|u| Framing::of_upgrade(u.as_bytes()));
    let frames: Box<dyn Frames> = match protocol {
        Some(Framing::WebSocket) => {
            let subprotocol = switching.get(header::SEC_WEBSOCKET_PROTOCOL).and_then(|p| p.to_str().ok());
            let channels = subprotocol.is_some_and(|p| READABLE_PROTOCOLS.contains(&p.trim()));
            Box::new(websocket::ServerFrames::new(channels))
        }
        Some(Framing::Spdy) => Box::new(spdy::ServerFrames::default()),
        None => Box::new(Unframed),
    };
    EchoFilter::new(echoes.clone(), frames)
}

/// One whole frame, as [`Frames`] reads it.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    /// Its length on the wire.
    pub len: usize,
    /// What in it an echo may stand in.
    pub text: Text,
}

/// Where a frame carries text.
#[derive(Debug, PartialEq, Eq)]
pub enum Text {
    /// None: the frame only frames.
    None,
    /// Bytes of the stream's data, at this range of the frame: read on from
    /// one frame to the next, overwritten in place.
    Stream(Range<usize>),
    /// Bytes read on their own, at this range of the frame, overwritten in
    /// place: a WebSocket control frame's, which may come between two
    /// frames of a message.
    Apart(Range<usize>),
    /// Text carried compressed (a SPDY header block), inflated: searched,
    /// but not overwritable in place.
    Compressed(Vec<u8>),
}

/// How what the target sends is framed.
pub trait Frames: Send {
    /// The frame at the start of `bytes`, once all of it is there.
    fn next(&mut self, bytes: &[u8]) -> Result<Option<Frame>, String>;
}

/// A protocol Airlock does not read: all bytes are payload.
pub struct Unframed;

impl Frames for Unframed {
    fn next(&mut self, bytes: &[u8]) -> Result<Option<Frame>, String> {
        Ok((!bytes.is_empty()).then_some(Frame { len: bytes.len(), text: Text::Stream(0..bytes.len()) }))
    }
}

/// Why what the target sent was not passed on.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A frame could not be read.
    #[error("the target's frames could not be searched for the injected credential: {0}")]
    Unreadable(String),
    /// The secret stood where it cannot be overwritten.
    #[error("the target sent the injected credential in a compressed header block; the connection was ended")]
    CompressedEcho,
}

/// What the target sends, with every echo of the secret overwritten (same
/// length, so every frame's header stays true). Bytes go on once their
/// frame is whole and they cannot begin an echo ([`Echoes::held_back`]);
/// those that could wait for more, or for a pause ([`HOLD_AT_MOST`]).
pub struct EchoFilter {
    echoes: Echoes,
    frames: Box<dyn Frames>,
    /// The target's bytes not sent on yet.
    wire: Vec<u8>,
    /// How much of `wire` is whole frames, read.
    framed: usize,
    /// How much of `wire` may go on.
    ready: usize,
    /// Where in `wire` lie the payload bytes held back, in order.
    held: Vec<Range<usize>>,
}

impl EchoFilter {
    /// A filter of `echoes` out of what `frames` frames.
    pub fn new(echoes: Echoes, frames: Box<dyn Frames>) -> Self {
        Self { echoes, frames, wire: Vec::new(), framed: 0, ready: 0, held: Vec::new() }
    }

    /// Takes `bytes` from the target; [`ready`](Self::ready) then says
    /// what may go on.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), FilterError> {
        self.wire.extend_from_slice(bytes);
        while let Some(frame) = self.frames.next(&self.wire[self.framed..]).map_err(FilterError::Unreadable)? {
            let at = self.framed;
            match frame.text {
                Text::None => {}
                Text::Stream(run) if run.is_empty() => {}
                Text::Stream(run) => self.held.push(at + run.start..at + run.end),
                Text::Apart(run) => self.echoes.overwrite(&mut self.wire[at + run.start..at + run.end]),
                Text::Compressed(text) if self.echoes.found_in(&text) => return Err(FilterError::CompressedEcho),
                Text::Compressed(_) => {}
            }
            self.framed += frame.len;
        }
        let mut text: Vec<u8> = self.held.iter().flat_map(|run| &self.wire[run.clone()]).copied().collect();
        if self.echoes.found_in(&text) {
            self.echoes.overwrite(&mut text);
            let mut from = &text[..];
            for run in &self.held {
                let (part, rest) = from.split_at(run.len());
                self.wire[run.clone()].copy_from_slice(part);
                from = rest;
            }
        }
        self.hold_back(self.echoes.held_back(&text));
        Ok(())
    }

    /// Keeps the last `keep` payload bytes back, and the rest of the wire
    /// after the first of them.
    fn hold_back(&mut self, mut keep: usize) {
        let mut first = self.held.len();
        while keep > 0 && first > 0 {
            first -= 1;
            let run = &mut self.held[first];
            if run.len() > keep {
                run.start = run.end - keep;
                keep = 0;
            } else {
                keep -= run.len();
            }
        }
        self.held.drain(..first);
        self.ready = self.held.first().map_or(self.framed, |run| run.start);
    }

    /// The bytes that may go on.
    pub fn ready(&self) -> &[u8] {
        &self.wire[..self.ready]
    }

    /// Forgets the bytes [`ready`](Self::ready) gave, once sent.
    pub fn sent(&mut self) {
        let sent = self.ready;
        self.wire.drain(..sent);
        self.framed -= sent;
        self.ready = 0;
        for run in &mut self.held {
            *run = run.start - sent..run.end - sent;
        }
    }

    /// Whether whole frames' bytes wait for more.
    pub fn holds(&self) -> bool {
        self.framed > self.ready
    }

    /// Lets what waits go on: the target paused, or ended.
    pub fn release(&mut self) {
        self.held.clear();
        self.ready = self.framed;
    }

    /// All it lets through of `wire` fed in chunks of `size`, what waits
    /// released at the end (for tests and fuzz targets).
    #[cfg(any(test, fuzzing))]
    pub fn filter_all(mut self, wire: &[u8], size: usize) -> Result<Vec<u8>, FilterError> {
        let mut out = Vec::new();
        for chunk in wire.chunks(size.max(1)) {
            self.feed(chunk)?;
            out.extend_from_slice(self.ready());
            self.sent();
        }
        self.release();
        out.extend_from_slice(self.ready());
        Ok(out)
    }
}

/// What is done to one direction's bytes before they go on.
#[derive(Default)]
pub struct Filters {
    /// WebSocket text messages masked (and so re-framed).
    pub masking: Option<MessageMasker>,
    /// The credential overwritten, after masking: in what the client gets.
    pub echoes: Option<EchoFilter>,
}

/// Copies `from` to `to` through `filters`, counting into `copied`, and
/// handing each piece to `inspect` before it goes on (what it refuses is
/// not sent); why it stopped, if not at the end of the stream. A frame
/// still incomplete when the stream ends is not sent: it was not read.
pub async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    mut filters: Filters,
    copied: &AtomicU64,
    mut inspect: impl FnMut(&[u8]) -> Result<(), String>,
) -> Option<String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    let mut masked = Vec::new();
    loop {
        let waiting = filters.echoes.as_ref().is_some_and(EchoFilter::holds);
        let read = match waiting {
            // `read` is cancel-safe: a read cut short by the timer lost nothing.
            true => tokio::time::timeout(HOLD_AT_MOST, from.read(&mut buf)).await.ok(),
            false => Some(from.read(&mut buf).await),
        };
        let (n, ended) = match read {
            None => (0, false),
            Some(Ok(0)) => (0, true),
            Some(Ok(n)) => (n, false),
            Some(Err(error)) => return Some(error.to_string()),
        };
        let came = match filters.masking.as_mut() {
            Some(masking) => {
                masked.clear();
                if let Err(error) = masking.feed(&buf[..n], &mut masked) {
                    return Some(error.to_string());
                }
                &masked[..]
            }
            None => &buf[..n],
        };
        let out = match filters.echoes.as_mut() {
            Some(echoes) => {
                if let Err(error) = echoes.feed(came) {
                    return Some(error.to_string());
                }
                if n == 0 {
                    echoes.release();
                }
                echoes.ready()
            }
            None => came,
        };
        if !out.is_empty() {
            if let Err(error) = inspect(out) {
                return Some(error);
            }
            if let Err(error) = to.write_all(out).await {
                return Some(error.to_string());
            }
            copied.fetch_add(out.len() as u64, Relaxed);
        }
        if let Some(echoes) = filters.echoes.as_mut() {
            echoes.sent();
        }
        if ended {
            let _ = to.shutdown().await;
            return None;
        }
    }
}

/// Relays `client` ⇄ `target`, what the target sends through `filters`:
/// the bytes each way, and why it stopped early, if it did.
pub async fn relay<C, T>(client: C, target: T, filters: Filters) -> ((u64, u64), Option<String>)
where
    C: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut target_read, mut target_write) = tokio::io::split(target);
    let (sent, received) = (AtomicU64::new(0), AtomicU64::new(0));
    let up = pump(&mut client_read, &mut target_write, Filters::default(), &sent, |_| Ok(()));
    let down = pump(&mut target_read, &mut client_write, filters, &received, |_| Ok(()));
    // Either side's end leaves the other's to come, as a half-closed TCP
    // connection would; a failure either way ends both.
    let (mut up, mut down) = (std::pin::pin!(up), std::pin::pin!(down));
    let error = tokio::select! {
        error = &mut up => match error {
            None => down.await,
            error => error,
        },
        error = &mut down => match error {
            None => up.await,
            error => error,
        },
    };
    ((sent.load(Relaxed), received.load(Relaxed)), error)
}

#[cfg(test)]
pub(super) mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::proxy::https::{echo::tests::echoes, websocket::tests::frame};

    /// A 101 answer's headers: switched to `upgrade`, WebSocket's
    /// `subprotocol` chosen.
    pub(in crate::proxy::https) fn switching(upgrade: &'static str, subprotocol: Option<&'static str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, header::HeaderValue::from_static(upgrade));
        if let Some(subprotocol) = subprotocol {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, header::HeaderValue::from_static(subprotocol));
        }
        headers
    }

    #[test]
    fn an_echo_split_across_websocket_frames_is_overwritten_in_place() {
        let secret = "Bearer token-123456789";
        let mut wire = frame(false, 1, b"{\"auth\":\"Bearer tok", None);
        wire.extend(frame(true, 9, b"ping", None));
        wire.extend(frame(false, 0, b"en-1234", None));
        wire.extend(frame(true, 0, b"56789\"}", None));
        wire.extend(frame(true, 2, b"\x01token-123456789\n", None));
        wire.extend(frame(true, 8, b"\x03\xe8token-123456789", None));
        let mut want = frame(false, 1, b"{\"auth\":\"Bearer ***", None);
        want.extend(frame(true, 9, b"ping", None));
        want.extend(frame(false, 0, b"*******", None));
        want.extend(frame(true, 0, b"*****\"}", None));
        want.extend(frame(true, 2, b"\x01***************\n", None));
        want.extend(frame(true, 8, b"\x03\xe8***************", None));
        for size in 1..=wire.len() {
            let filter = echo_filter(&echoes(secret), &switching("websocket", None));
            assert_eq!(filter.filter_all(&wire, size).unwrap(), want, "chunks of {size}");
        }
    }

    #[test]
    fn a_channel_protocol_s_channel_bytes_are_not_part_of_the_text() {
        let secret = echoes("Bearer token-123456789");
        let mut wire = frame(true, 2, b"\x01token-12", None);
        wire.extend(frame(false, 2, b"\x01345", None));
        wire.extend(frame(true, 0, b"6789\n", None));
        let mut want = frame(true, 2, b"\x01********", None);
        want.extend(frame(false, 2, b"\x01***", None));
        want.extend(frame(true, 0, b"****\n", None));
        for size in 1..=wire.len() {
            let filter = echo_filter(&secret, &switching("websocket", Some("v5.channel.k8s.io")));
            assert_eq!(filter.filter_all(&wire, size).unwrap(), want, "chunks of {size}");
        }
        // Without the channel protocol, the byte is text like any other.
        let filter = echo_filter(&secret, &switching("websocket", Some("chat")));
        assert_eq!(filter.filter_all(&wire, 7).unwrap(), wire);
    }

    #[test]
    fn frames_that_cannot_be_searched_are_refused() {
        let mut compressed = frame(true, 1, b"x", None);
        compressed[0] |= 0x40;
        let filter = echo_filter(&echoes("Bearer token-123456789"), &switching("websocket", None));
        assert!(matches!(filter.filter_all(&compressed, 64), Err(FilterError::Unreadable(_))));
        let masked = frame(true, 1, b"x", Some([1, 2, 3, 4]));
        let filter = echo_filter(&echoes("Bearer token-123456789"), &switching("websocket", None));
        assert!(matches!(filter.filter_all(&masked, 64), Err(FilterError::Unreadable(_))));
    }

    #[test]
    fn a_frame_still_arriving_is_not_let_through() {
        let whole = frame(true, 2, b"\x01token-123456789 and more", None);
        let mut filter = echo_filter(&echoes("Bearer token-123456789"), &switching("websocket", None));
        filter.feed(&whole[..whole.len() - 1]).unwrap();
        filter.release();
        assert_eq!(filter.ready(), b"", "its payload was not all searched");
        filter.feed(&whole[whole.len() - 1..]).unwrap();
        filter.release();
        assert_eq!(filter.ready(), &frame(true, 2, b"\x01*************** and more", None)[..]);
    }

    #[test]
    fn bytes_of_a_protocol_airlock_does_not_read_are_searched_as_they_come() {
        let wire = b"tok token-12 token-123456789token-123456789 xtoken-1234567 token-123456789";
        let want = b"tok token-12 ****************************** xtoken-1234567 ***************";
        for size in 1..=wire.len() {
            let filter = echo_filter(&echoes("Bearer token-123456789"), &switching("tcp", None));
            assert_eq!(filter.filter_all(wire, size).unwrap(), want, "chunks of {size}");
        }
    }

    /// The next `n` bytes out of `end`.
    async fn read(end: &mut tokio::io::DuplexStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        tokio::time::timeout(Duration::from_secs(5), end.read_exact(&mut buf)).await.unwrap().unwrap();
        buf
    }

    #[tokio::test]
    async fn the_relay_overwrites_what_the_target_sends_and_releases_on_a_pause() {
        let (client, mut client_end) = tokio::io::duplex(1024);
        let (target, mut target_end) = tokio::io::duplex(1024);
        let filter = echo_filter(&echoes("Bearer token-123456789"), &switching("websocket", None));
        let relay = tokio::spawn(relay(client, target, Filters { echoes: Some(filter), ..Filters::default() }));
        // The client's frames go to the target as they came.
        let asked = frame(true, 1, b"token-123456789", Some([7, 7, 7, 7]));
        client_end.write_all(&asked).await.unwrap();
        assert_eq!(read(&mut target_end, asked.len()).await, asked);
        // A tail that could begin an echo goes on once the target pauses.
        let prompt = frame(true, 2, b"\x01$ tok", None);
        target_end.write_all(&prompt).await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(read(&mut client_end, prompt.len()).await, prompt);
        assert!(started.elapsed() >= HOLD_AT_MOST);
        let echoed = frame(true, 2, b"\x01token-123456789\n", None);
        target_end.write_all(&echoed).await.unwrap();
        assert_eq!(read(&mut client_end, echoed.len()).await, frame(true, 2, b"\x01***************\n", None));
        drop(target_end);
        drop(client_end);
        let ((up, down), error) = tokio::time::timeout(Duration::from_secs(5), relay).await.unwrap().unwrap();
        assert_eq!((up, down), (asked.len() as u64, (prompt.len() + echoed.len()) as u64));
        assert_eq!(error, None);
    }

    #[tokio::test]
    async fn the_relay_ends_when_the_target_sends_what_cannot_be_searched() {
        let (client, _client_end) = tokio::io::duplex(1024);
        let (target, mut target_end) = tokio::io::duplex(1024);
        let filter = echo_filter(&echoes("Bearer token-123456789"), &switching("websocket", None));
        let relay = tokio::spawn(relay(client, target, Filters { echoes: Some(filter), ..Filters::default() }));
        let mut compressed = frame(true, 1, b"x", None);
        compressed[0] |= 0x40;
        target_end.write_all(&compressed).await.unwrap();
        let (_, error) = tokio::time::timeout(Duration::from_secs(5), relay).await.unwrap().unwrap();
        assert!(error.unwrap().contains("could not be searched"));
    }
}
