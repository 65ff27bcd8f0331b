//! `kubectl exec` and `attach` sessions recorded as asciicast: once the API
//! server agrees to a WebSocket channel protocol or to SPDY/3.1, both
//! directions are relayed untouched while their frames are read
//! ([`super::websocket`], [`super::spdy`]):
//! stdout and stderr as output, stdin as input (a terminal's only as far as
//! it was echoed, as for SSH), window sizes as resizes. A stream Airlock
//! cannot read ends the session: it does not run unrecorded.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering::Relaxed},
};

use hyper::HeaderMap;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::{
    channels::{
        ChannelReader, Piece,
        channel::{ERROR, RESIZE, STDERR, STDIN, STDOUT},
    },
    spdy, websocket,
};
use crate::recording::Recording;

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

/// WebSocket subprotocols whose frames Airlock reads: Kubernetes' binary
/// channel protocols. Others offered by the client are dropped, so the API
/// server cannot pick one the recording could not follow.
pub const READABLE_PROTOCOLS: [&str; 4] =
    ["v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "channel.k8s.io"];

/// Bytes read from either side at a time.
const CHUNK: usize = 32 * 1024;
/// Most of a command's status message kept for the record.
const MAX_STATUS: usize = 4096;

/// Keeps only the readable channel protocols in the client's offer, and no
/// extension (compression would hide the frames); `false` if none is left.
pub fn offer_readable_protocols(headers: &mut HeaderMap) -> bool {
    let offered: Vec<String> = super::forward::list_items(headers, "sec-websocket-protocol")
        .filter(|p| READABLE_PROTOCOLS.contains(p))
        .map(str::to_owned)
        .collect();
    headers.remove("sec-websocket-protocol");
    headers.remove("sec-websocket-extensions");
    match hyper::header::HeaderValue::from_str(&offered.join(", ")) {
        Ok(value) if !offered.is_empty() => {
            headers.insert("sec-websocket-protocol", value);
            true
        }
        _ => false,
    }
}

/// What a recorded session ended with.
pub struct Ended {
    /// Bytes client → target and target → client.
    pub bytes: (u64, u64),
    /// The command's status message (channel 3), if it sent one.
    pub status: Option<String>,
    /// Why the relay stopped early, if it did.
    pub error: Option<String>,
}

/// Relays `client` ⇄ `target`, framed as `framing`, recording into
/// `recording`; `tty`: stdin is a terminal's (recorded only as echoed).
pub async fn relay<C, T>(client: C, target: T, recording: Arc<Mutex<Recording>>, tty: bool, framing: Framing) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    match framing {
        Framing::WebSocket => {
            let readers = (websocket::Decoder::new(true), websocket::Decoder::new(false));
            relay_read_by(client, target, recording, tty, readers).await
        }
        Framing::Spdy => {
            let streams = spdy::Streams::default();
            let readers = (spdy::Decoder::new(streams.clone()), spdy::Decoder::new(streams));
            relay_read_by(client, target, recording, tty, readers).await
        }
    }
}

/// [`relay`], reading what the client sends with `readers.0` and what the
/// target sends with `readers.1`.
async fn relay_read_by<C, T, R>(
    client: C,
    target: T,
    recording: Arc<Mutex<Recording>>,
    tty: bool,
    readers: (R, R),
) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
    R: ChannelReader,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut target_read, mut target_write) = tokio::io::split(target);
    let status = Mutex::new(None);
    let (sent, received) = (AtomicU64::new(0), AtomicU64::new(0));
    let up = pump(&mut client_read, &mut target_write, readers.0, &sent, |piece| {
        let mut recording = recording.lock().unwrap_or_else(|p| p.into_inner());
        match piece {
            Piece::Data { channel: STDIN, bytes } if tty => recording.input(&bytes),
            Piece::Data { channel: STDIN, bytes } => recording.stdin(&bytes),
            Piece::Data { channel: RESIZE, bytes } => match terminal_size(&bytes) {
                Some((width, height)) => recording.resize(width, height),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    });
    let down = pump(&mut target_read, &mut client_write, readers.1, &received, |piece| match piece {
        Piece::Data { channel: STDOUT | STDERR, bytes } => {
            recording.lock().unwrap_or_else(|p| p.into_inner()).output(&bytes)
        }
        Piece::Data { channel: ERROR, bytes } => {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_STATUS)]).into_owned();
            *status.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
            Ok(())
        }
        _ => Ok(()),
    });
    // The target's end, or a failure either way, ends the session; the
    // client's end of its stream leaves the target's answer to come.
    let (mut up, mut down) = (std::pin::pin!(up), std::pin::pin!(down));
    let error = tokio::select! {
        error = &mut up => match error {
            None => down.await,
            error => error,
        },
        error = &mut down => error,
    };
    let status = status.lock().unwrap_or_else(|p| p.into_inner()).take();
    Ended { bytes: (sent.load(Relaxed), received.load(Relaxed)), status, error }
}

/// Copies `from` to `to`, counting into `copied` and handing what the
/// frames carry to `note`; why it stopped, if not at the end of the stream.
async fn pump<R, W, D: ChannelReader>(
    from: &mut R,
    to: &mut W,
    mut decoder: D,
    copied: &AtomicU64,
    mut note: impl FnMut(Piece) -> std::io::Result<()>,
) -> Option<String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    let mut pieces = Vec::new();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => {
                let _ = to.shutdown().await;
                return None;
            }
            Ok(n) => n,
            Err(error) => return Some(error.to_string()),
        };
        // Read before it goes on: what cannot be recorded is not relayed.
        if let Err(error) = decoder.feed(&buf[..n], &mut pieces) {
            return Some(error.to_string());
        }
        for piece in pieces.drain(..) {
            if let Err(error) = note(piece) {
                return Some(format!("the recording cannot be written: {error}"));
            }
        }
        if let Err(error) = to.write_all(&buf[..n]).await {
            return Some(error.to_string());
        }
        copied.fetch_add(n as u64, Relaxed);
    }
}

/// `{"Width": W, "Height": H}`, as kubectl sends terminal sizes.
fn terminal_size(bytes: &[u8]) -> Option<(u32, u32)> {
    let size: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let dimension = |name: &str| size[name].as_u64().and_then(|v| u32::try_from(v).ok());
    Some((dimension("Width")?, dimension("Height")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_channel_protocols_are_offered_and_no_extension() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "sec-websocket-protocol",
            "v5.channel.k8s.io, base64.channel.k8s.io, v4.channel.k8s.io".parse().unwrap(),
        );
        headers.insert("sec-websocket-extensions", "permessage-deflate".parse().unwrap());
        assert!(offer_readable_protocols(&mut headers));
        assert_eq!(headers["sec-websocket-protocol"], "v5.channel.k8s.io, v4.channel.k8s.io");
        assert!(!headers.contains_key("sec-websocket-extensions"));
        let mut only_base64 = HeaderMap::new();
        only_base64.insert("sec-websocket-protocol", "base64.channel.k8s.io".parse().unwrap());
        assert!(!offer_readable_protocols(&mut only_base64));
    }

    #[test]
    fn terminal_sizes_are_read_as_kubectl_sends_them() {
        assert_eq!(terminal_size(br#"{"Width":120,"Height":40}"#), Some((120, 40)));
        assert_eq!(terminal_size(b"junk"), None);
    }
}
