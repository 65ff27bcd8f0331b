//! `kubectl exec` and `attach` sessions recorded as asciicast: once the API
//! server agrees to a WebSocket channel protocol or to SPDY/3.1, both
//! directions are relayed while their frames are read
//! ([`super::websocket`], [`super::spdy`]):
//! stdout and stderr as output, stdin as input (a terminal's only as far as
//! it was echoed, as for SSH), window sizes as resizes. A stream Airlock
//! cannot read ends the session: it does not run unrecorded. What the
//! target sends is searched for the injected credential first
//! ([`super::upgraded`]): a pod running as the service account whose token
//! Airlock holds can print it.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering::Relaxed},
};

use hyper::HeaderMap;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{
    channels::{
        ChannelReader, Piece,
        channel::{ERROR, RESIZE, STDERR, STDIN, STDOUT},
    },
    spdy,
    upgraded::{self, Framing},
    websocket,
};
use crate::recording::Recording;

/// WebSocket subprotocols whose frames Airlock reads: Kubernetes' binary
/// channel protocols. Others offered by the client are dropped, so the API
/// server cannot pick one the recording could not follow.
pub const READABLE_PROTOCOLS: [&str; 4] =
    ["v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "channel.k8s.io"];

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
/// What the target sends goes through `filter` (the credential
/// overwritten) before it is recorded or relayed.
pub async fn relay<C, T>(
    (client, target): (C, T),
    recording: Arc<Mutex<Recording>>,
    tty: bool,
    framing: Framing,
    filter: Option<upgraded::EchoFilter>,
) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    match framing {
        Framing::WebSocket => {
            let readers = (websocket::Decoder::new(true), websocket::Decoder::new(false));
            relay_read_by((client, target), recording, tty, readers, filter).await
        }
        Framing::Spdy => {
            let streams = spdy::Streams::default();
            let readers = (spdy::Decoder::new(streams.clone()), spdy::Decoder::new(streams));
            relay_read_by((client, target), recording, tty, readers, filter).await
        }
    }
}

/// [`relay`], reading what the client sends with `readers.0` and what the
/// target sends, once through `filter`, with `readers.1`.
async fn relay_read_by<C, T, R>(
    (client, target): (C, T),
    recording: Arc<Mutex<Recording>>,
    tty: bool,
    readers: (R, R),
    filter: Option<upgraded::EchoFilter>,
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
    let up = upgraded::pump(
        &mut client_read,
        &mut target_write,
        upgraded::Filters::default(),
        &sent,
        recorded_by(readers.0, |piece| {
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
        }),
    );
    let down = upgraded::pump(
        &mut target_read,
        &mut client_write,
        upgraded::Filters { echoes: filter, masking: None },
        &received,
        recorded_by(readers.1, |piece| match piece {
            Piece::Data { channel: STDOUT | STDERR, bytes } => {
                recording.lock().unwrap_or_else(|p| p.into_inner()).output(&bytes)
            }
            Piece::Data { channel: ERROR, bytes } => {
                let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_STATUS)]).into_owned();
                *status.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
                Ok(())
            }
            _ => Ok(()),
        }),
    );
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

/// Reads the bytes handed to it with `decoder`, handing what the frames
/// carry to `note`: what cannot be read or recorded is refused, and so not
/// relayed.
fn recorded_by<D: ChannelReader>(
    mut decoder: D,
    mut note: impl FnMut(Piece) -> std::io::Result<()>,
) -> impl FnMut(&[u8]) -> Result<(), String> {
    let mut pieces = Vec::new();
    move |bytes| {
        decoder.feed(bytes, &mut pieces).map_err(|error| error.to_string())?;
        for piece in pieces.drain(..) {
            note(piece).map_err(|error| format!("the recording cannot be written: {error}"))?;
        }
        Ok(())
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
