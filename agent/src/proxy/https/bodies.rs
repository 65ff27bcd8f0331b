//! Bodies kept for request records (`record_bodies`): the first bytes of
//! each body, up to the target's cap, redacted before they are written.
//!
//! A recorded body is what the client sent, and what it got (after
//! masking, with the injected credential overwritten). Before it reaches
//! the audit log it goes through a redaction of its own, whoever the
//! person is: JSON member and form field values whose names suggest a
//! secret, values of secret-named `key: value` and `KEY=value` lines in
//! text (YAML, `.env`), the default detectors' hits, connection strings and
//! `password=` in any text, and on Kubernetes targets Secrets' values. Bodies that are not text
//! (protobuf, images, compressed) are left out, with their size: nothing
//! in them could be redacted.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::masking::{BodyKind, BodyMasker, Masker};

/// A target's `record_bodies`, for one session.
pub(super) struct BodyRecording {
    /// The most kept of each body.
    pub cap: usize,
    /// Redacts kept bodies: built from [`crate::masking::MaskingPolicy::for_recorded_bodies`].
    pub redactor: Arc<Masker>,
}

/// The start of one body, as it passed.
pub(super) struct KeptBody {
    /// The body's `Content-Type`, if it had one.
    content_type: Option<String>,
    /// Its media type, for how it is read ([`super::mask::media_type`]).
    media: String,
    /// Its first bytes, at most `cap`.
    kept: Vec<u8>,
    cap: usize,
    /// All its bytes, kept or not.
    total: u64,
}

impl KeptBody {
    /// Keeps the first `cap` bytes of a body of `content_type`.
    pub fn new(content_type: Option<&hyper::header::HeaderValue>, cap: usize) -> Self {
        let media = super::mask::media_type(content_type);
        let content_type = content_type.and_then(|v| v.to_str().ok()).map(str::to_owned);
        Self { content_type, media, kept: Vec::new(), cap, total: 0 }
    }

    /// `chunk` passed.
    pub fn add(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        let room = self.cap.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&chunk[..room.min(chunk.len())]);
    }

    /// The body for its request's record, redacted by `redactor`.
    pub fn recorded(&self, redactor: &Arc<Masker>) -> Value {
        let cut = self.total > self.kept.len() as u64;
        let mut record = json!({ "content_type": self.content_type, "bytes": self.total, "cut": cut });
        if self.total == 0 {
            return record;
        }
        let (text, why_not) = match (self.kind(), self.text()) {
            (Some(kind), Ok(text)) => redacted(text, kind, redactor),
            (None, _) => (None, Some("not text".to_owned())),
            (_, Err(why)) => (None, Some(why)),
        };
        record["text"] = text.into();
        if let Some(why) = why_not {
            record["left_out"] = why.into();
        }
        record
    }

    /// The kept bytes as text: UTF-8, less a character the cap cut in two.
    fn text(&self) -> Result<&str, String> {
        match std::str::from_utf8(&self.kept) {
            Ok(text) => Ok(text),
            // Cut inside a character by the cap: the rest is text.
            Err(error) if error.error_len().is_none() && self.kept.len() == self.cap => {
                Ok(std::str::from_utf8(&self.kept[..error.valid_up_to()]).unwrap_or_default())
            }
            Err(_) => Err("not UTF-8 text".into()),
        }
    }

    /// How the body is redacted; `None`: it is no text.
    fn kind(&self) -> Option<Kind> {
        if self.media == "application/x-www-form-urlencoded" {
            return Some(Kind::Form);
        }
        super::mask::readable_as(&self.media).map(|kind| match kind {
            BodyKind::Json => Kind::Json,
            BodyKind::Text => Kind::Text,
        })
    }
}

/// How a body's text is redacted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// By JSON member names, the detectors and the free-text redactor.
    Json,
    /// By form field names, then as text.
    Form,
    /// By secret-named `key: value` / `KEY=value` lines (YAML, `.env`),
    /// the detectors and the free-text redactor (connection strings, SQL
    /// passwords).
    Text,
}

/// `text` redacted, or why it is left out; text the JSON redaction could
/// not read to its end is kept only as far as it read.
fn redacted(text: &str, kind: Kind, redactor: &Arc<Masker>) -> (Option<String>, Option<String>) {
    let (body_kind, text) = match kind {
        Kind::Json => (BodyKind::Json, std::borrow::Cow::Borrowed(text)),
        Kind::Form => (BodyKind::Text, std::borrow::Cow::Owned(crate::redact::form_secrets(text))),
        Kind::Text => (BodyKind::Text, std::borrow::Cow::Owned(crate::redact::assignments(text))),
    };
    let mut masker = BodyMasker::new(Arc::clone(redactor), body_kind);
    let mut out = Vec::with_capacity(text.len());
    let fed = masker.feed(text.as_bytes(), &mut out).and_then(|()| masker.finish(&mut out));
    let Ok(masked) = String::from_utf8(out) else {
        return (None, Some("not UTF-8 text".into()));
    };
    // Connection strings and `password=` in JSON strings too.
    let masked = crate::redact::text(&masked);
    // A body cut by the cap ends inside its JSON: what was read is kept.
    (Some(masked), fed.err().map(|error| format!("redacted only as far as it could be read as JSON: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_bodies_lose_secrets_values_and_any_body_its_connection_strings() {
        let redactors = super::super::BodyRedactors::new(&Arc::new(crate::masking::TokenKey::from_bytes(b"k")));
        let secret = r#"{"kind":"Secret","data":{"db":"aHVudGVyMg=="},"stringData":{"root":"hunter2"}}"#;
        let (text, _) = redacted(secret, Kind::Json, &redactors.kubernetes);
        let text = text.unwrap();
        assert!(!text.contains("aHVudGVyMg==") && !text.contains("hunter2"), "{text}");
        let dsn = r#"{"dsn":"host=db password=hunter5","url":"https://u:hunter6@h/x"}"#;
        let (text, _) = redacted(dsn, Kind::Json, &redactors.any);
        let text = text.unwrap();
        assert!(!text.contains("hunter5") && !text.contains("hunter6"), "{text}");
        let (text, _) = redacted(secret, Kind::Json, &redactors.any);
        assert!(text.unwrap().contains("aHVudGVyMg=="), "other targets' `data` is theirs to name");
    }
    use crate::masking::{MaskingPolicy, TokenKey};

    fn redactor() -> Arc<Masker> {
        let key = Arc::new(TokenKey::from_bytes(&[7; 32]));
        Arc::new(Masker::new(&MaskingPolicy::for_recorded_bodies(), "alice", &[], key))
    }

    fn kept(content_type: &str, cap: usize, chunks: &[&[u8]]) -> Value {
        let value = hyper::header::HeaderValue::from_str(content_type).unwrap();
        let mut body = KeptBody::new(Some(&value), cap);
        for chunk in chunks {
            body.add(chunk);
        }
        body.recorded(&redactor())
    }

    #[test]
    fn json_members_named_like_secrets_and_detector_hits_are_redacted() {
        let body =
            br#"{"user":"alice","password":"hunter2","nested":{"api_token":"abc"},"card":"4111 1111 1111 1111","n":1}"#;
        let record = kept("application/json; charset=utf-8", 4096, &[&body[..30], &body[30..]]);
        let text = record["text"].as_str().unwrap();
        assert!(!text.contains("hunter2") && !text.contains("abc") && !text.contains("4111 1111"), "{text}");
        assert!(text.contains(r#""user":"alice""#) && text.contains(r#""n":1"#), "{text}");
        assert_eq!(record["bytes"], body.len() as u64);
        assert_eq!(record["cut"], false);
        assert!(record.get("left_out").is_none());
    }

    #[test]
    fn a_body_over_the_cap_is_cut_and_a_secret_cut_with_it_never_shows() {
        let body = br#"{"items":[{"name":"a"},{"password":"correct horse battery staple"}]}"#;
        let cap = body.windows(7).position(|w| w == b"correct").unwrap() + 7;
        let record = kept("application/json", cap, &[body]);
        let text = record["text"].as_str().unwrap();
        assert!(!text.contains("correct"), "{text}");
        assert!(text.contains(r#""name":"a""#), "{text}");
        assert_eq!(record["cut"], true);
        assert_eq!(record["bytes"], body.len() as u64);
        assert!(record["left_out"].as_str().unwrap().contains("as far as it could be read"));
    }

    #[test]
    fn forms_and_text_are_redacted_and_binary_bodies_left_out() {
        let form = kept("application/x-www-form-urlencoded", 4096, &[b"user=alice&client_secret=s3cr3t&grant=x"]);
        assert_eq!(form["text"], "user=alice&client_secret=***&grant=x");
        let text = kept("text/plain", 4096, &[b"connect postgresql://bob:pw123@db/x as bob@example.com\n"]);
        let text = text["text"].as_str().unwrap();
        assert!(!text.contains("pw123") && !text.contains("bob@example.com"), "{text}");
        let yaml = kept("application/yaml", 4096, &[b"kind: Secret\nstringData:\n  password: hunter2\n"]);
        assert_eq!(yaml["text"], "kind: Secret\nstringData:\n  password: ***\n");
        let binary = kept("application/vnd.kubernetes.protobuf", 4096, &[b"k8s\0secret"]);
        assert_eq!(binary["left_out"], "not text");
        assert!(binary["text"].is_null());
        let undeclared = kept("application/octet-stream", 4096, &[b"plain"]);
        assert_eq!(undeclared["left_out"], "not text");
    }

    #[test]
    fn a_character_cut_by_the_cap_is_left_out_not_the_body() {
        let record = kept("text/plain", 4, &["abcé".as_bytes()]);
        assert_eq!(record["text"], "abc");
        assert_eq!(record["cut"], true);
        let broken = kept("text/plain", 16, &[b"ab\xffcd"]);
        assert_eq!(broken["left_out"], "not UTF-8 text");
    }
}
