//! Answers masked before they reach the client: JSON bodies (path rules,
//! member-name rules, detectors) and text bodies (detectors), as they
//! stream, whatever their size. What cannot be read (a compressed body
//! despite the request asking for none, JSON that does not parse) is not
//! passed on: the answer is refused before its head, or cut where the body
//! stops making sense, and the request's record says why.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Buf as _, Bytes};
use http_body::{Body, Frame, SizeHint};
use hyper::{
    HeaderMap,
    header::{self, HeaderValue},
};

use crate::masking::{BodyKind, BodyMasker, Masker};

use super::record::Exchange;

/// What masking makes of an answer, from its head.
pub(super) enum Plan {
    /// Masked as it streams.
    Mask(BodyKind),
    /// Nothing in it can be masked (an image, an archive): passed as it is.
    Pass,
    /// It should be masked but cannot be read: refused, with why.
    Refuse(String),
}

/// How an answer with these headers is masked; `strict`: it must be read
/// as JSON whatever it is (answers about Kubernetes Secrets, whose masking
/// is by JSON paths), so what is not JSON is refused rather than passed. A
/// multipart answer is refused too: its parts may be JSON or text, which
/// Airlock does not mask part by part.
pub(super) fn plan(headers: &HeaderMap, strict: bool) -> Plan {
    let media = media_type(headers.get(header::CONTENT_TYPE));
    let kind = match readable_as(&media) {
        Some(BodyKind::Json) => BodyKind::Json,
        Some(_) | None if strict => {
            return Plan::Refuse(format!("the answer is {media}, which Airlock cannot mask; ask for application/json"));
        }
        Some(kind) => kind,
        None if media.starts_with("multipart/") => {
            return Plan::Refuse(format!("the answer is {media}, whose parts Airlock cannot mask"));
        }
        None => return Plan::Pass,
    };
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    if !encoding.trim().eq_ignore_ascii_case("identity") {
        return Plan::Refuse(format!(
            "the answer is compressed ({encoding}) although Airlock asked for none, so it cannot be masked"
        ));
    }
    Plan::Mask(kind)
}

/// A body's media type (`application/json`): lower case, parameters left
/// out; empty when it has none.
pub(super) fn media_type(content_type: Option<&HeaderValue>) -> String {
    content_type
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// How a body of `media` type is read: as JSON, as text, or (`None`) as
/// neither (an image, an archive, protobuf).
pub(super) fn readable_as(media: &str) -> Option<BodyKind> {
    if media == "application/json"
        || media == "text/json"
        || media.ends_with("+json")
        || media == "application/x-ndjson"
        || media == "application/jsonl"
    {
        Some(BodyKind::Json)
    } else if media.starts_with("text/")
        || media.ends_with("+xml")
        || matches!(media, "application/xml" | "application/yaml" | "application/x-yaml" | "")
    {
        // No type at all: it may be anything, text included.
        Some(BodyKind::Text)
    } else {
        None
    }
}

/// The request's headers for a target whose answers are read (masked, or
/// searched for Airlock's credential): answers come uncompressed and
/// whole, not as ranges of a body (a range cuts a JSON document where its
/// paths no longer say what they did, a secret where it no longer matches).
pub(super) fn ask_whole_and_uncompressed(headers: &mut HeaderMap) {
    headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    headers.remove(header::RANGE);
    headers.remove(header::IF_RANGE);
}

/// The request's `Accept` for an answer read as JSON (Kubernetes answers
/// about Secrets, whose masking is by JSON paths): only its JSON media
/// ranges, parameters kept (`application/json;as=Table;v=v1;g=meta.k8s.io`),
/// or `application/json` if it had none. The API server also speaks YAML,
/// protobuf and CBOR, which Airlock does not mask by path.
pub(super) fn ask_for_json(headers: &mut HeaderMap) {
    keep_accepted(headers, |media| media == "application/json");
}

/// The request's `Accept` for a masked Kubernetes answer: what it asks for
/// but protobuf, CBOR and YAML, which Airlock cannot mask by path. (With
/// no `Accept`, the API server answers JSON.)
pub(super) fn ask_for_readable(headers: &mut HeaderMap) {
    if headers.contains_key(header::ACCEPT) {
        keep_accepted(headers, |media| !["protobuf", "cbor", "yaml"].iter().any(|format| media.contains(format)));
    }
}

/// Keeps the media ranges of `Accept` whose type (lower case) `keep`
/// takes; `application/json` if none is left.
fn keep_accepted(headers: &mut HeaderMap, keep: impl Fn(&str) -> bool) {
    let ranges: Vec<&str> = super::forward::list_items(headers, header::ACCEPT)
        .filter(|range| keep(&range.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()))
        .collect();
    let accept = match HeaderValue::from_str(&ranges.join(", ")) {
        Ok(accept) if !ranges.is_empty() => accept,
        _ => HeaderValue::from_static("application/json"),
    };
    headers.insert(header::ACCEPT, accept);
}

/// The answer's headers once its body is masked: its length may change.
pub(super) fn masked_headers(headers: &mut HeaderMap) {
    headers.remove(header::CONTENT_LENGTH);
    headers.remove("content-md5");
    headers.remove("digest");
    headers.remove("content-digest");
    headers.remove(header::ETAG);
}

/// A body masked as it streams.
pub(super) struct Masked<B> {
    inner: B,
    masker: BodyMasker,
    /// Told what was masked (and whether masking failed) when the body ends.
    exchange: Option<Arc<Exchange>>,
    trailers: Option<HeaderMap>,
    /// Whether a frame was asked for: from then on the masker may hold
    /// the start of a value, and only `done` says the body is over.
    started: bool,
    done: bool,
}

impl<B> Masked<B> {
    pub fn new(inner: B, masker: Arc<Masker>, kind: BodyKind, exchange: Arc<Exchange>) -> Self {
        let masker = BodyMasker::new(masker, kind);
        Self { inner, masker, exchange: Some(exchange), trailers: None, started: false, done: false }
    }

    /// The body is over: its record learns what was masked.
    fn report(&mut self, failure: Option<String>) {
        if let Some(exchange) = self.exchange.take() {
            exchange.masked(self.masker.outcome(), failure);
        }
    }
}

/// A body dropped before its end (the client left a watch, or hung up
/// mid-answer) still tells its record what it masked.
impl<B> Drop for Masked<B> {
    fn drop(&mut self) {
        self.report(None);
    }
}

/// Why a masked body stopped.
#[derive(Debug, thiserror::Error)]
#[error("airlock: the answer cannot be masked: {0}")]
pub(super) struct Unmaskable(String);

impl<B> Body for Masked<B>
where
    B: Body + Unpin,
    B::Data: bytes::Buf,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let mut out = Vec::new();
            this.started = true;
            let fed = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(error))) => {
                    this.report(None);
                    return Poll::Ready(Some(Err(error.into())));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(mut data) => {
                        // Room for the masked text as it usually comes out (about as
                        // long), so it is not copied again while it grows.
                        out.reserve(data.remaining() + data.remaining() / 8);
                        let mut fed = Ok(());
                        while data.has_remaining() && fed.is_ok() {
                            let chunk = data.chunk();
                            let n = chunk.len();
                            fed = this.masker.feed(chunk, &mut out);
                            data.advance(n);
                        }
                        fed
                    }
                    Err(frame) => {
                        this.trailers = frame.into_trailers().ok();
                        this.done = true;
                        this.masker.finish(&mut out)
                    }
                },
                Poll::Ready(None) => {
                    this.done = true;
                    this.masker.finish(&mut out)
                }
            };
            if let Err(error) = fed {
                let why = error.to_string();
                this.report(Some(why.clone()));
                this.done = true;
                this.trailers = None;
                return Poll::Ready(Some(Err(Box::new(Unmaskable(why)))));
            }
            if this.done {
                this.report(None);
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
        }
    }

    /// Also before the first frame, when the answer had none (see
    /// `Scrubbed::is_end_stream`).
    fn is_end_stream(&self) -> bool {
        match self.done {
            true => self.trailers.is_none(),
            false => !self.started && self.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;
    use crate::{masking::https_masker, proxy::https::test_body::Chunks};

    fn json_masker() -> Arc<Masker> {
        https_masker("detectors = [\"email\"]\n[[target.masking.rules]]\njson_path = \"$.items[*].token\"\n")
    }

    /// A JSON answer of `body` in chunks of `size`, to be masked.
    fn masking(masker: &Arc<Masker>, body: &[u8], size: usize) -> Masked<Chunks> {
        Masked {
            inner: Chunks::of(body, size),
            masker: BodyMasker::new(Arc::clone(masker), BodyKind::Json),
            exchange: None,
            trailers: None,
            started: false,
            done: false,
        }
    }

    /// `body` in chunks of `size` through [`Masked`], as a JSON answer.
    async fn masked(masker: &Arc<Masker>, body: &[u8], size: usize) -> Result<Bytes, String> {
        let masked = masking(masker, body, size);
        masked.collect().await.map(|collected| collected.to_bytes()).map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn an_answer_over_with_its_head_is_over_before_any_frame() {
        let masker = json_masker();
        assert!(masking(&masker, b"", 1).is_end_stream());
        let mut answer = masking(&masker, b"[1]", 1);
        assert!(!answer.is_end_stream());
        // Once a frame was asked for, only the masker's end says it is over.
        let first = answer.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "[");
        assert!(!answer.is_end_stream());
        assert_eq!(answer.collect().await.unwrap().to_bytes(), "1]");
    }

    #[tokio::test]
    async fn an_answer_cut_anywhere_is_masked_as_a_whole() {
        let masker = json_masker();
        let items: Vec<_> = (0..4_000)
            .map(|i| serde_json::json!({ "id": i, "mail": format!("user{i}@example.com"), "token": format!("t-{i}") }))
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "items": items })).unwrap();
        let mut expected = Vec::new();
        let mut whole = BodyMasker::new(Arc::clone(&masker), BodyKind::Json);
        whole.feed(&body, &mut expected).unwrap();
        whole.finish(&mut expected).unwrap();
        let expected = String::from_utf8(expected).unwrap();
        assert!(!expected.contains("@example.com") && !expected.contains("\"t-1\""), "{expected:.200}");
        for size in [1, 1_000, 32 * 1024, 100_000 - 7] {
            let out = masked(&masker, &body, size).await.unwrap();
            assert_eq!(String::from_utf8_lossy(&out), expected, "chunks of {size}");
        }
    }

    #[tokio::test]
    async fn json_that_breaks_ends_the_answer_with_an_error() {
        let masker = json_masker();
        let broken = format!("{{\"items\": [{}}}", "{\"a\": 1},".repeat(20_000));
        let error = masked(&masker, broken.as_bytes(), 128 * 1024).await.unwrap_err();
        assert!(error.contains("cannot be masked") && error.contains("unexpected character"), "{error}");
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (header::HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn json_is_asked_for_where_answers_are_masked_by_path() {
        let accepted = |accept: &'static str, ask: fn(&mut HeaderMap)| {
            let mut headers = headers(&[("accept", accept)]);
            ask(&mut headers);
            headers.get(header::ACCEPT).unwrap().to_str().unwrap().to_owned()
        };
        let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
        assert_eq!(accepted(table, ask_for_json), "application/json;as=Table;v=v1;g=meta.k8s.io, application/json");
        for other in ["application/yaml", "application/vnd.kubernetes.protobuf", "application/cbor", "*/*"] {
            assert_eq!(accepted(other, ask_for_json), "application/json", "{other}");
        }
        assert_eq!(accepted("application/vnd.kubernetes.protobuf, */*", ask_for_readable), "*/*");
        assert_eq!(accepted("application/yaml", ask_for_readable), "application/json");
        let mut ranged = headers(&[("range", "bytes=0-0,1-"), ("if-range", "\"x\""), ("accept-encoding", "gzip")]);
        ask_whole_and_uncompressed(&mut ranged);
        assert!(ranged.get(header::RANGE).is_none() && ranged.get(header::IF_RANGE).is_none());
        assert_eq!(ranged.get(header::ACCEPT_ENCODING).unwrap(), "identity");
    }

    #[test]
    fn answers_are_planned_by_their_type_and_encoding() {
        let kind = |pairs: &[(&'static str, &'static str)]| match plan(&headers(pairs), false) {
            Plan::Mask(kind) => format!("{kind:?}"),
            Plan::Pass => "pass".into(),
            Plan::Refuse(why) => why,
        };
        assert_eq!(kind(&[("content-type", "application/json; charset=utf-8")]), "Json");
        assert_eq!(kind(&[("content-type", "application/merge-patch+json")]), "Json");
        assert_eq!(kind(&[("content-type", "text/html")]), "Text");
        assert_eq!(kind(&[]), "Text");
        assert_eq!(kind(&[("content-type", "image/png")]), "pass");
        assert!(
            kind(&[("content-type", "application/json"), ("content-encoding", "gzip")]).contains("compressed (gzip)")
        );
        assert_eq!(kind(&[("content-type", "text/plain"), ("content-encoding", "identity")]), "Text");
        let protobuf = headers(&[("content-type", "application/vnd.kubernetes.protobuf")]);
        assert!(matches!(plan(&protobuf, false), Plan::Pass));
        assert!(matches!(plan(&protobuf, true), Plan::Refuse(why) if why.contains("cannot mask")));
        let yaml = headers(&[("content-type", "application/yaml")]);
        assert!(matches!(plan(&yaml, false), Plan::Mask(BodyKind::Text)));
        assert!(matches!(plan(&yaml, true), Plan::Refuse(_)), "Secrets are masked by JSON paths");
        assert!(kind(&[("content-type", "multipart/byteranges; boundary=x")]).contains("parts"));
        assert_eq!(kind(&[("content-type", "text/json")]), "Json");
    }
}
