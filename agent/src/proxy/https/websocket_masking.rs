//! WebSocket messages from the target masked before they reach the client,
//! as answers are ([`super::mask`]): a text message, once whole, is masked
//! as JSON when it is a JSON document (path rules, member-name rules,
//! detectors) and as text by the detectors otherwise, then sent on as one
//! frame, its length what masking made it. Binary messages pass as binary
//! answers do, frame by frame, and control frames as they came. A text
//! message larger than Airlock holds, or a frame it cannot read, ends the
//! connection rather than pass unmasked.

use std::sync::Arc;

use super::websocket::{Head, Messages, Place, opcode, write_server_frame};
use crate::masking::{BodyKind, BodyMasker, Masker};

/// Largest text message held to be masked whole.
const MAX_MESSAGE: usize = 16 << 20;

/// Why the target's frames were not passed on.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// A frame breaks RFC 6455, or uses an extension.
    #[error("the target's WebSocket frames cannot be masked: {0}")]
    Unreadable(String),
    /// A text message over [`MAX_MESSAGE`].
    #[error("the target sent a WebSocket text message over 16 MiB, larger than Airlock masks")]
    TooLarge,
}

/// The data message whose frames are arriving.
enum Message {
    /// Text, held until whole.
    Text(Vec<u8>),
    /// Binary, passed frame by frame.
    Binary,
}

/// Masks the text messages of a server's side of a WebSocket connection.
pub struct MessageMasker {
    masker: Arc<Masker>,
    /// Bytes of a frame not complete yet.
    wire: Vec<u8>,
    message: Option<Message>,
    messages: Messages,
}

impl MessageMasker {
    /// A masker of messages for the person `masker` was built for.
    pub fn new(masker: Arc<Masker>) -> Self {
        Self { masker, wire: Vec::new(), message: None, messages: Messages::default() }
    }

    /// Appends to `out` the frames `bytes` complete, text messages masked.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), MessageError> {
        self.wire.extend_from_slice(bytes);
        let mut at = 0;
        while let Some(head) =
            Head::read(&self.wire[at..], false).map_err(|e| MessageError::Unreadable(e.to_string()))?
        {
            let end = at + head.header + head.len;
            if self.wire.len() < end {
                break;
            }
            let frame = at..end;
            let payload = at + head.header..end;
            at = end;
            let place = self.messages.place(&head).map_err(|e| MessageError::Unreadable(e.to_string()))?;
            let message = match (place, self.message.as_mut()) {
                (Place::Control, _) => {
                    out.extend_from_slice(&self.wire[frame]);
                    continue;
                }
                (Place::Starts(opcode::TEXT), _) => self.message.insert(Message::Text(Vec::new())),
                (Place::Starts(_), _) => self.message.insert(Message::Binary),
                (Place::Continues, Some(message)) => message,
                // `place` knows of no continuation without its message.
                (Place::Continues, None) => return Err(unreadable("a continuation frame without a message")),
            };
            match message {
                Message::Binary => out.extend_from_slice(&self.wire[frame]),
                Message::Text(text) if text.len() + payload.len() > MAX_MESSAGE => return Err(MessageError::TooLarge),
                Message::Text(text) => text.extend_from_slice(&self.wire[payload]),
            }
            if head.fin
                && let Some(Message::Text(text)) = self.message.take()
            {
                let masked = self.mask(&text)?;
                write_server_frame(out, opcode::TEXT, &masked);
            }
        }
        self.wire.drain(..at);
        Ok(())
    }

    /// One whole text message, masked: as JSON if it is a JSON document,
    /// else (or if it does not parse: detectors still apply) as text.
    fn mask(&self, text: &[u8]) -> Result<Vec<u8>, MessageError> {
        let first = text.iter().find(|b| !b.is_ascii_whitespace());
        let kinds: &[BodyKind] =
            if matches!(first, Some(b'{' | b'[')) { &[BodyKind::Json, BodyKind::Text] } else { &[BodyKind::Text] };
        let mut failure = None;
        for &kind in kinds {
            let mut masker = BodyMasker::new(Arc::clone(&self.masker), kind);
            let mut out = Vec::with_capacity(text.len());
            match masker.feed(text, &mut out).and_then(|()| masker.finish(&mut out)) {
                Ok(()) => return Ok(out),
                Err(error) => failure = Some(error),
            }
        }
        Err(MessageError::Unreadable(failure.map_or_else(String::new, |e| e.to_string())))
    }
}

fn unreadable(why: &str) -> MessageError {
    MessageError::Unreadable(why.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{masking::https_masker, proxy::https::websocket::tests::frame};

    fn masker() -> MessageMasker {
        MessageMasker::new(https_masker(
            "detectors = [\"email\", \"card\"]\n\n[[target.masking.rules]]\njson_path = \"$.token\"\n",
        ))
    }

    /// What `masker` sends on of `wire` fed in chunks of `size`.
    fn masked(mut masker: MessageMasker, wire: &[u8], size: usize) -> Result<Vec<u8>, MessageError> {
        let mut out = Vec::new();
        for chunk in wire.chunks(size) {
            masker.feed(chunk, &mut out)?;
        }
        Ok(out)
    }

    /// The payloads of the server frames in `wire`.
    fn payloads(wire: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        let mut at = 0;
        while let Some(head) = Head::read(&wire[at..], false).unwrap() {
            let end = at + head.header + head.len;
            frames.push((head.opcode, wire[at + head.header..end].to_vec()));
            at = end;
        }
        assert_eq!(at, wire.len(), "whole frames only");
        frames
    }

    #[test]
    fn text_messages_are_masked_whole_across_fragments_and_sent_as_one_frame() {
        let json = br#"{"user":{"email":"carol@example.com"},"token":"t-123","card":"4111 1111 1111 1111"}"#;
        let mut wire = frame(false, opcode::TEXT, &json[..20], None);
        wire.extend(frame(true, 0x9, b"ping", None));
        wire.extend(frame(true, opcode::CONTINUATION, &json[20..], None));
        wire.extend(frame(true, opcode::TEXT, b"write to carol@example.com\nor not", None));
        wire.extend(frame(true, opcode::TEXT, b"[not json, carol@example.com", None));
        wire.extend(frame(false, opcode::BINARY, b"carol@example.com", None));
        wire.extend(frame(true, opcode::CONTINUATION, b"!", None));
        wire.extend(frame(true, opcode::CLOSE, b"\x03\xe8bye", None));
        for size in [1, 3, 17, wire.len()] {
            let frames = payloads(&masked(masker(), &wire, size).unwrap());
            let texts: Vec<(u8, String)> =
                frames.into_iter().map(|(op, p)| (op, String::from_utf8_lossy(&p).into_owned())).collect();
            let [ping, document, text, not_json, binary, rest, close] = &texts[..] else { panic!("{texts:?}") };
            assert_eq!(ping, &(0x9, "ping".into()), "control frames pass at once");
            assert_eq!(document.0, opcode::TEXT);
            let document: serde_json::Value = serde_json::from_str(&document.1).unwrap();
            assert_ne!(document["user"]["email"], "carol@example.com", "{document}");
            assert_ne!(document["token"], "t-123", "the JSON path rule applies: {document}");
            assert!(!document["card"].as_str().unwrap().contains("4111 1111 1111 1111"), "{document}");
            assert!(text.1.starts_with("write to ") && !text.1.contains("carol@"), "{text:?}");
            assert!(text.1.ends_with("\nor not"), "{text:?}");
            assert!(!not_json.1.contains("carol@"), "detectors still apply: {not_json:?}");
            assert_eq!(binary, &(opcode::BINARY, "carol@example.com".into()), "binary messages pass");
            assert_eq!(rest, &(opcode::CONTINUATION, "!".into()));
            assert_eq!(close, &(opcode::CLOSE, "\u{3}\u{fffd}bye".into()));
        }
    }

    #[test]
    fn frames_that_break_the_rfc_or_the_cap_end_the_connection() {
        let mut compressed = frame(true, opcode::TEXT, b"x", None);
        compressed[0] |= 0x40;
        assert!(matches!(masked(masker(), &compressed, 64), Err(MessageError::Unreadable(_))));
        let orphan = frame(true, opcode::CONTINUATION, b"x", None);
        assert!(matches!(masked(masker(), &orphan, 64), Err(MessageError::Unreadable(_))));
        let long_ping = frame(true, 0x9, &[0; 126], None);
        assert!(matches!(masked(masker(), &long_ping, 64), Err(MessageError::Unreadable(_))));
        let reserved = frame(true, 0xb, b"", None);
        assert!(matches!(masked(masker(), &reserved, 64), Err(MessageError::Unreadable(_))));
        let mut nested = frame(false, opcode::TEXT, b"x", None);
        nested.extend(frame(true, opcode::TEXT, b"y", None));
        assert!(matches!(masked(masker(), &nested, 64), Err(MessageError::Unreadable(_))));
        let mut masker = masker();
        let piece = frame(false, opcode::TEXT, &vec![b'a'; 1 << 20], None);
        let mut out = Vec::new();
        masker.feed(&piece, &mut out).unwrap();
        let more = frame(false, opcode::CONTINUATION, &vec![b'a'; 1 << 20], None);
        let result = (0..16).try_for_each(|_| masker.feed(&more, &mut out));
        assert_eq!(result, Err(MessageError::TooLarge));
        assert!(out.is_empty(), "nothing of the message went on");
    }
}
