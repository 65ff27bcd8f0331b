//! What Airlock knows of gRPC, which runs over HTTP/2 with a status of its
//! own: a call's status, read for its record, and Airlock's refusals said
//! as gRPC errors. A gRPC client shown an HTTP 403 reports a bare
//! "PERMISSION_DENIED" (or, through some libraries, an HTTP error with no
//! text); the person needs the reason and what to do, as a curl user gets
//! them in the body and a kubectl user in a `Status`.

use std::fmt::Write as _;

use hyper::{
    HeaderMap, Response, StatusCode,
    header::{self, HeaderName, HeaderValue},
};

use super::forward::{ClientBody, empty};

/// Whether a request with these headers is a gRPC call: `application/grpc`,
/// or `application/grpc+proto` and the like. gRPC-Web (`application/grpc-web`)
/// carries its status in the body and is answered as plain HTTP.
pub(super) fn is_call(headers: &HeaderMap) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    let Some(value) = headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes) else { return false };
    value.get(..GRPC.len()).is_some_and(|start| start.eq_ignore_ascii_case(GRPC))
        && matches!(value.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// Where a gRPC answer's status stands: a name, not text, so looking it
/// up parses nothing.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The gRPC status in `fields` (an answer's head or trailers), if any.
pub(super) fn status(fields: &HeaderMap) -> Option<u32> {
    fields.get(GRPC_STATUS)?.to_str().ok()?.trim().parse().ok()
}

/// Airlock's own answer to a gRPC call: a "trailers-only" answer (HTTP
/// 200, no body) whose `grpc-status` says what `status` would have said
/// over plain HTTP, and whose `grpc-message` is `text`.
pub(super) fn refusal(status: StatusCode, text: &str) -> Response<ClientBody> {
    let mut response = Response::new(empty());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(GRPC_STATUS, HeaderValue::from(code_for(status)));
    if let Ok(message) = HeaderValue::from_str(&percent_encoded(text)) {
        headers.insert("grpc-message", message);
    }
    response
}

/// The gRPC status code for what Airlock answers over HTTP with `status`.
fn code_for(status: StatusCode) -> u32 {
    const INVALID_ARGUMENT: u32 = 3;
    const DEADLINE_EXCEEDED: u32 = 4;
    const PERMISSION_DENIED: u32 = 7;
    const RESOURCE_EXHAUSTED: u32 = 8;
    const UNAVAILABLE: u32 = 14;
    const UNAUTHENTICATED: u32 = 16;
    const UNKNOWN: u32 = 2;
    match status {
        StatusCode::BAD_REQUEST => INVALID_ARGUMENT,
        StatusCode::UNAUTHORIZED => UNAUTHENTICATED,
        StatusCode::FORBIDDEN => PERMISSION_DENIED,
        StatusCode::TOO_MANY_REQUESTS => RESOURCE_EXHAUSTED,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE => UNAVAILABLE,
        StatusCode::GATEWAY_TIMEOUT => DEADLINE_EXCEEDED,
        _ => UNKNOWN,
    }
}

/// `grpc-message`'s encoding: bytes outside printable ASCII, and `%`, as
/// `%XX` (UTF-8 text, such as quotes around a target's name, stays readable
/// once the client decodes it).
fn percent_encoded(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content_type(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn grpc_calls_are_told_from_grpc_web_and_other_types() {
        assert!(is_call(&content_type("application/grpc")));
        assert!(is_call(&content_type("application/grpc+proto")));
        assert!(is_call(&content_type("Application/GRPC; charset=utf-8")));
        assert!(!is_call(&content_type("application/grpc-web")));
        assert!(!is_call(&content_type("application/grpc-web+proto")));
        assert!(!is_call(&content_type("application/json")));
        assert!(!is_call(&HeaderMap::new()));
    }

    #[test]
    fn a_status_is_read_from_head_or_trailers() {
        let fields = |value: &'static str| {
            let mut fields = HeaderMap::new();
            fields.insert("grpc-status", HeaderValue::from_static(value));
            fields
        };
        assert_eq!(status(&fields("5")), Some(5));
        assert_eq!(status(&fields(" 0 ")), Some(0));
        assert_eq!(status(&fields("NOT_FOUND")), None);
        assert_eq!(status(&HeaderMap::new()), None);
    }

    #[test]
    fn a_refusal_is_a_trailers_only_error_with_its_reason() {
        let refused = refusal(StatusCode::FORBIDDEN, "airlock: access to “api” denied: 100% sure");
        assert_eq!(refused.status(), StatusCode::OK);
        assert_eq!(refused.headers()["grpc-status"], "7");
        assert_eq!(refused.headers()["grpc-message"], "airlock: access to %E2%80%9Capi%E2%80%9D denied: 100%25 sure");
        assert!(http_body::Body::is_end_stream(refused.body()), "no body: the head ends the stream");
        assert_eq!(code_for(StatusCode::SERVICE_UNAVAILABLE), 14);
        assert_eq!(code_for(StatusCode::IM_A_TEAPOT), 2);
    }
}
