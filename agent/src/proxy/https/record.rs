//! One audit record per request: who (the session's person and process),
//! what (method, host, path with secret query values masked), the answer's
//! status, bytes each way, how long, which credential Airlock sent, and
//! with `record_bodies` the start of each body — written when both bodies
//! are done, whichever ends last.

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::Instant,
};

use bytes::Buf as _;
use http_body::{Body, Frame, SizeHint};
use serde::Serialize;

use super::{Session, bodies::KeptBody, grpc, kubernetes::KubeRequest};

/// The detail of one `http.request` record, handed to the record writer
/// as it is and serialized straight into the log line there: no
/// `serde_json::Value` built and dropped per request. Members are declared
/// in name order, the order these records always had.
#[derive(Serialize)]
pub(crate) struct RequestRecord {
    credential: Option<Arc<str>>,
    duration_ms: u64,
    error: Option<String>,
    /// A gRPC call's status (`grpc-status`: 0 is OK), from the answer's
    /// trailers or, for an answer with no body, its head. The HTTP status
    /// of a gRPC call is 200 whether it failed or not.
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_status: Option<u32>,
    host: String,
    kubernetes: Option<KubeRequest>,
    mask_failure: Option<String>,
    masked: Option<Vec<MaskedCount>>,
    #[serde(serialize_with = "method_name")]
    method: hyper::Method,
    path: String,
    refused: Option<String>,
    /// Present with `record_bodies` (null: the request had no body).
    #[serde(skip_serializing_if = "Option::is_none")]
    request_body: Option<Option<serde_json::Value>>,
    request_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_body: Option<Option<serde_json::Value>>,
    response_bytes: u64,
    status: Option<u16>,
    upgraded: bool,
    version: &'static str,
}

/// Values masked in an answer by one detector or rule.
#[derive(Serialize)]
struct MaskedCount {
    count: u64,
    reason: Arc<str>,
}

fn method_name<S: serde::Serializer>(method: &hyper::Method, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(method.as_str())
}

/// A request being recorded; the record is written when the last body
/// holding it is done.
pub(super) struct Exchange {
    session: Arc<Session>,
    method: hyper::Method,
    host: String,
    path: String,
    version: &'static str,
    /// What the request is to Kubernetes, on Kubernetes targets.
    kubernetes: Option<KubeRequest>,
    /// Whether it is a gRPC call: only then is its answer asked for a
    /// gRPC status (no lookup on every other request's answer).
    grpc: bool,
    started: Instant,
    to_upstream: AtomicU64,
    to_client: AtomicU64,
    outcome: Mutex<Outcome>,
}

/// How the request ended, as far as is known.
#[derive(Default)]
struct Outcome {
    status: Option<u16>,
    error: Option<String>,
    grpc_status: Option<u32>,
    /// Why policy refused it.
    refused: Option<String>,
    upgraded: bool,
    /// Values masked in the answer, per detector or rule.
    masked: Vec<MaskedCount>,
    /// Why masking cut the answer short.
    mask_failure: Option<String>,
    /// The bodies' first bytes, with `record_bodies`.
    request_body: Option<KeptBody>,
    response_body: Option<KeptBody>,
}

impl Exchange {
    pub fn new(
        session: Arc<Session>,
        request: &hyper::Request<hyper::body::Incoming>,
        host: &str,
        kubernetes: Option<KubeRequest>,
        grpc: bool,
    ) -> Arc<Self> {
        let version = match request.version() {
            hyper::Version::HTTP_2 => "HTTP/2",
            hyper::Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        Arc::new(Self {
            session,
            method: request.method().clone(),
            host: host.to_owned(),
            path: crate::redact::request_target(path),
            version,
            kubernetes,
            grpc,
            started: Instant::now(),
            to_upstream: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
            outcome: Mutex::new(Outcome::default()),
        })
    }

    /// The host the request is for.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn outcome(&self) -> std::sync::MutexGuard<'_, Outcome> {
        self.outcome.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The target answered with `status` and `headers`.
    pub fn answered(&self, status: u16, headers: &hyper::HeaderMap) {
        let mut outcome = self.outcome();
        outcome.status = Some(status);
        if self.grpc {
            outcome.grpc_status = grpc::status(headers);
        }
    }

    /// Airlock answered itself (the target could not be asked).
    pub fn failed(&self, status: u16, error: String) {
        let mut outcome = self.outcome();
        outcome.status = Some(status);
        outcome.error = Some(error);
    }

    /// Policy refused it (answered 403), or an approver did.
    pub fn refused(&self, reason: String) {
        let mut outcome = self.outcome();
        outcome.status = Some(403);
        outcome.refused = Some(reason);
    }

    /// The answer's body was masked: what was, and why it stopped if it failed.
    pub fn masked(&self, masked: &crate::masking::MaskOutcome, failure: Option<String>) {
        let mut outcome = self.outcome();
        outcome.masked =
            masked.hits.iter().map(|hit| MaskedCount { count: hit.count, reason: Arc::clone(&hit.reason) }).collect();
        outcome.mask_failure = failure;
    }

    /// The connection became a tunnel (WebSocket, SPDY) after this request.
    pub fn upgraded(&self) {
        self.outcome().upgraded = true;
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let outcome = std::mem::take(&mut *self.outcome());
        let bodies = self.session.record_bodies.as_ref().map(|bodies| {
            let recorded = |body: Option<KeptBody>| body.map(|body| body.recorded(&bodies.redactor));
            (recorded(outcome.request_body), recorded(outcome.response_body))
        });
        let (request_body, response_body) = bodies.unzip();
        self.session.record_request(RequestRecord {
            credential: self.session.credential_source.clone(),
            duration_ms: self.started.elapsed().as_millis() as u64,
            error: outcome.error,
            grpc_status: outcome.grpc_status,
            host: std::mem::take(&mut self.host),
            kubernetes: self.kubernetes.take(),
            mask_failure: outcome.mask_failure,
            masked: (!outcome.masked.is_empty()).then_some(outcome.masked),
            method: self.method.clone(),
            path: std::mem::take(&mut self.path),
            refused: outcome.refused,
            request_body,
            request_bytes: self.to_upstream.load(Relaxed),
            response_body,
            response_bytes: self.to_client.load(Relaxed),
            status: outcome.status,
            upgraded: outcome.upgraded,
            version: self.version,
        });
    }
}

/// Which way a body goes.
#[derive(Clone, Copy)]
pub(super) enum Direction {
    ToUpstream,
    ToClient,
}

/// A body passed through, its bytes counted for the request's record and
/// the session's totals, and its start kept for the record when the
/// target records bodies.
pub(super) struct Counted<B> {
    inner: B,
    exchange: Option<Arc<Exchange>>,
    direction: Direction,
    kept: Option<KeptBody>,
}

impl<B> Counted<B> {
    /// Counts `inner`, a body of `content_type` going `direction`.
    pub fn new(
        inner: B,
        exchange: Arc<Exchange>,
        direction: Direction,
        content_type: Option<&hyper::header::HeaderValue>,
    ) -> Self {
        let kept = exchange.session.record_bodies.as_ref().map(|bodies| KeptBody::new(content_type, bodies.cap));
        Self { inner, exchange: Some(exchange), direction, kept }
    }

    /// The body is done (ended, failed or dropped): its start goes to the
    /// record, and the record need not wait for this body any more.
    fn done(&mut self) {
        let Some(exchange) = self.exchange.take() else { return };
        if let Some(kept) = self.kept.take() {
            let mut outcome = exchange.outcome();
            match self.direction {
                Direction::ToUpstream => outcome.request_body = Some(kept),
                Direction::ToClient => outcome.response_body = Some(kept),
            }
        }
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        self.done();
    }
}

impl<B: Body<Data = bytes::Bytes> + Unpin> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let this = &mut *self;
                if let (Some(data), Some(exchange)) = (frame.data_ref(), &this.exchange) {
                    let n = data.remaining() as u64;
                    if let Some(kept) = &mut this.kept {
                        kept.add(data);
                    }
                    let bytes = &exchange.session.live.bytes;
                    match this.direction {
                        Direction::ToUpstream => {
                            exchange.to_upstream.fetch_add(n, Relaxed);
                            bytes.to_upstream.fetch_add(n, Relaxed);
                        }
                        Direction::ToClient => {
                            exchange.to_client.fetch_add(n, Relaxed);
                            bytes.to_client.fetch_add(n, Relaxed);
                        }
                    }
                } else if let (Some(trailers), Some(exchange), Direction::ToClient) =
                    (frame.trailers_ref(), &this.exchange, this.direction)
                    && exchange.grpc
                    && let Some(status) = grpc::status(trailers)
                {
                    exchange.outcome().grpc_status = Some(status);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.done(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(bodies: Option<(Option<serde_json::Value>, Option<serde_json::Value>)>) -> RequestRecord {
        let (request_body, response_body) = bodies.unzip();
        RequestRecord {
            credential: Some(Arc::from("header_file /etc/airlock/api-token")),
            duration_ms: 3,
            error: None,
            grpc_status: None,
            host: "api.lab".into(),
            kubernetes: None,
            mask_failure: None,
            masked: Some(vec![MaskedCount { count: 2, reason: Arc::from("email") }]),
            method: hyper::Method::PATCH,
            path: "/v1/items?token=***".into(),
            refused: None,
            request_body,
            request_bytes: 12,
            response_body,
            response_bytes: 340,
            status: Some(200),
            upgraded: false,
            version: "HTTP/2",
        }
    }

    #[test]
    fn a_request_record_reads_as_it_always_did_members_by_name() {
        let text = serde_json::to_string(&record(None)).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        // What a serde_json::Value of it (members sorted) prints: the same bytes.
        assert_eq!(text, value.to_string());
        assert_eq!(value["method"], "PATCH");
        assert_eq!(value["masked"], serde_json::json!([{ "count": 2, "reason": "email" }]));
        assert!(value.get("request_body").is_none() && value.get("response_body").is_none());
        assert!(value["error"].is_null() && value["refused"].is_null());
    }

    #[test]
    fn a_grpc_status_is_recorded_in_name_order() {
        let text = serde_json::to_string(&RequestRecord { grpc_status: Some(5), ..record(None) }).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(text, value.to_string());
        assert_eq!(value["grpc_status"], 5);
    }

    #[test]
    fn with_recorded_bodies_a_missing_body_is_null() {
        let kept = serde_json::json!({ "bytes": 2, "content_type": "text/plain", "cut": false, "text": "hi" });
        let value = serde_json::to_value(record(Some((None, Some(kept.clone()))))).unwrap();
        assert!(value["request_body"].is_null() && value.as_object().unwrap().contains_key("request_body"));
        assert_eq!(value["response_body"], kept);
    }
}
