//! One request: its headers cleaned (hop-by-hop headers, and every
//! credential the client brought: `Authorization`, `Proxy-Authorization`,
//! `Impersonate-*`, cookies policy names), Airlock's credential added, sent
//! to the target, and its answer streamed back. An upgrade (WebSocket,
//! SPDY) becomes a tunnel once both sides agree to it.

use std::convert::Infallible;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{
    BodyExt as _, Full,
    combinators::{BoxBody, MapFrame},
};
use hyper::{
    HeaderMap, Request, Response, StatusCode, Uri, Version,
    body::Incoming,
    header::{self, HeaderName, HeaderValue},
    http::uri::{PathAndQuery, Scheme},
};
use hyper_util::rt::TokioIo;

use crate::{
    guardrails::GuardAction,
    policy::https::{KubeReading, Reading, RequestRule, deciding_rule, normalized_path},
};

use super::{
    Session,
    early_answer::{self, Answer, Upload},
    exec,
    form_method::{self, Replayed},
    grpc,
    kubernetes::{self, KubeRequest},
    mask::{self, Masked, Plan},
    query,
    record::{Counted, Direction, Exchange},
    scrub::{self, Scrubbed},
    upgraded,
    websocket_masking::MessageMasker,
};

/// Bodies sent to the client.
pub(super) type ClientBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// The client's request bodies as the target gets them: counted, their
/// trailer fields cleaned ([`clean_trailers`]), a form's first frames
/// perhaps read ahead ([`form_method`]).
pub(super) type TargetBody = Upload<Counted<MapFrame<Replayed<Incoming>, fn(Frame<Bytes>) -> Frame<Bytes>>>>;

/// Headers that describe one hop, not the request (RFC 9110 §7.6.1);
/// names, not text, so removing them parses nothing. `Trailer` is not one:
/// it names the trailer fields to come, which hyper sends over HTTP/1.1
/// only when declared.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Relays `request` to the target; every answer is a response (errors too).
/// The target is asked for the path as the client wrote it: the path and
/// query reach it unchanged (only the audit record masks secrets in them).
pub(super) async fn forward(
    session: std::sync::Arc<Session>,
    mut request: Request<Incoming>,
) -> Result<Response<ClientBody>, Infallible> {
    let k8s = session.kubernetes;
    let needs_path = k8s || !session.rules.is_empty();
    let normalized = if needs_path { normalized_path(request.uri().path()) } else { String::new() };
    let kube = k8s.then(|| KubeRequest::read(request.method(), &normalized, request.uri().query()));
    let host = host_of(&request).unwrap_or(&session.default_host);
    let said = Said::to(&request, k8s);
    let grpc = matches!(said, Said::Grpc);
    let exchange = Exchange::new(std::sync::Arc::clone(&session), &request, host, kube.clone(), grpc);
    // The request is changed below; its host is read from the exchange's copy.
    let host = exchange.host();
    if session.records.failed() {
        let message = "airlock: the audit log cannot be written, so no request may go through";
        return Ok(answer(said, StatusCode::SERVICE_UNAVAILABLE, message, UNRECORDED_HINT));
    }
    let Some(target_authority) = session.hosts.resolve(host) else {
        let message = format!(
            "airlock: this connection is for {}; the request names {}, another site, which this target's \
             credential and policy are not for",
            session.hosts.describe(),
            crate::redact::text(host).chars().take(200).collect::<String>()
        );
        exchange.failed(421, message.clone());
        return Ok(answer(said, StatusCode::MISDIRECTED_REQUEST, &message, MISDIRECTED_HINT));
    };
    if k8s && kubernetes::ambiguous_path(request.uri().path()) {
        let message = "airlock: the path has an empty, `.` or `..` segment or a backslash, which the API server \
                       and Airlock could read as different requests";
        exchange.failed(400, message.into());
        return Ok(answer(said, StatusCode::BAD_REQUEST, message, ""));
    }
    if let Some(error) = &session.credential_error {
        exchange.failed(503, error.clone());
        return Ok(answer(said, StatusCode::SERVICE_UNAVAILABLE, error, CREDENTIAL_HINT));
    }
    // A form may pass for another method (`_method`): where a rule naming
    // methods is about this path, it is read first (the API server reads
    // no such field).
    let method_rules_here = !k8s && {
        let paths = [request.uri().path(), normalized.as_str()];
        session.rules.iter().any(|r| !r.methods.is_empty() && r.matches(&r.methods, &paths))
    };
    let read = match method_rules_here.then(|| form_method::Form::of(request.method(), request.headers())) {
        Some(Ok(forms)) if !forms.is_empty() => form_method::read_methods(&forms, request.body_mut()).await,
        Some(Err(why)) => Err(why),
        _ => Ok(Default::default()),
    };
    let (read_ahead, form_methods) = match read {
        Ok(read) => read,
        Err(why) => {
            let message = format!("airlock: request refused: {why}");
            exchange.refused(message.clone());
            return Ok(answer(said, StatusCode::FORBIDDEN, &message, RULE_HINT));
        }
    };
    if !session.rules.is_empty() {
        let mut methods = methods_of(&request);
        methods.extend(form_methods);
        let paths = [request.uri().path(), normalized.as_str()];
        let resource = kube.as_ref().filter(|k| k.resource_request).map(KubeRequest::resource_name);
        let namespace = kube.as_ref().map_or("", |k| k.namespace.as_str());
        // What Kubernetes would make of the request under each method it may pass for.
        let verbs: Vec<(&str, String)> = match &kube {
            Some(kube) if kube.resource_request => methods
                .iter()
                .filter_map(|m| Some((m.as_str(), hyper::Method::from_bytes(m.as_bytes()).ok()?)))
                .flat_map(|(name, method)| {
                    let read = KubeRequest::read(&method, &normalized, request.uri().query());
                    kubernetes::verbs_of(&read, &method, request.headers()).into_iter().map(move |v| (name, v))
                })
                .collect(),
            _ => Vec::new(),
        };
        let readings: Vec<Reading<'_>> = match kube.as_ref().filter(|k| k.resource_request) {
            Some(_) => verbs
                .iter()
                .flat_map(|(method, verb)| {
                    let kubernetes = Some(KubeReading { verb, resource: resource.as_deref(), namespace });
                    paths.iter().map(move |path| Reading { method, path, kubernetes })
                })
                .collect(),
            None => methods
                .iter()
                .flat_map(|method| paths.iter().map(move |path| Reading { method, path, kubernetes: None }))
                .collect(),
        };
        if let Some(rule) = deciding_rule(&session.rules, &readings) {
            let reason = rule.reason.clone().unwrap_or_else(|| describe_rule(rule));
            let refusal = match rule.action {
                GuardAction::Allow => None,
                GuardAction::Deny => Some(format!("request refused: {reason}")),
                GuardAction::Approve => {
                    let shown = crate::redact::request_target(path_of(&request));
                    // The approver sees every method the request may pass for.
                    let own = request.method().as_str();
                    let mut others: Vec<&str> = Vec::new();
                    for other in methods.iter().map(String::as_str).filter(|m| *m != own) {
                        if !others.contains(&other) {
                            others.push(other);
                        }
                    }
                    let method = match others.is_empty() {
                        true => own.to_owned(),
                        false => format!("{own} (as {})", others.join(", ")),
                    };
                    session.hold(&format!("{method} {host}{shown}"), &reason).await.err()
                }
            };
            if let Some(refusal) = refusal {
                exchange.refused(refusal.clone());
                let message = format!("airlock: {refusal}");
                return Ok(answer(said, StatusCode::FORBIDDEN, &message, RULE_HINT));
            }
        }
    }
    let upgrade = upgrade_of(&request);
    // A shell in a pod is recorded, over a protocol Airlock can read.
    let recorded = kube.as_ref().is_some_and(KubeRequest::opens_a_shell);
    let framing = upgrade.as_ref().and_then(|u| upgraded::Framing::of_upgrade(u.as_bytes()));
    let websocket = framing == Some(upgraded::Framing::WebSocket);
    if recorded && upgrade.is_some() && framing.is_none() {
        let message = "airlock: exec and attach are recorded, which Airlock does over WebSocket and SPDY/3.1, \
                       not the protocol this client asked for";
        exchange.refused(message.into());
        return Ok(answer(said, StatusCode::FORBIDDEN, message, ""));
    }
    let tty = query::flag(request.uri().query(), "tty").unwrap_or(false);
    let trailers = takes_trailers(request.headers());
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
    let Ok(uri) = upstream_uri(&session.scheme, &target_authority, request.uri()) else {
        exchange.failed(400, format!("the request's host {host:?} is not a valid authority"));
        return Ok(answer(said, StatusCode::BAD_REQUEST, "airlock: the request names no valid host", ""));
    };
    // Answers about Secrets are masked with their data, and must be read
    // whatever they are: what cannot be is refused, not passed.
    let reads_secrets = kube.as_ref().is_some_and(KubeRequest::reads_secrets);
    let (masker, strict_masking) = match (&session.secrets_masker, reads_secrets) {
        (Some(masker), true) => (Some(masker), true),
        _ => (session.masker.as_ref(), false),
    };
    let (mut parts, body) = request.into_parts();
    let mut upstream = Request::builder().method(parts.method.clone()).uri(uri).version(Version::HTTP_11);
    if let Some(headers) = upstream.headers_mut() {
        // The client's headers move to the target's request: nothing reads them after.
        let incoming = std::mem::take(&mut parts.headers);
        *headers = outgoing_headers(incoming, &session, (upgrade.as_ref(), trailers), (masker, strict_masking));
        // Compressed frames would hide an echo of the credential, and what
        // masking must find.
        if websocket && (session.secret.is_some() || masker.is_some()) {
            headers.remove("sec-websocket-extensions");
        }
        if recorded && websocket && !exec::offer_readable_protocols(headers) {
            let message = "airlock: exec and attach are recorded, and the client offered no channel protocol Airlock \
                           reads (v5.channel.k8s.io, v4.channel.k8s.io)";
            exchange.refused(message.into());
            return Ok(answer(said, StatusCode::FORBIDDEN, message, ""));
        }
    }
    let content_type = upstream.headers_ref().and_then(|headers| headers.get(header::CONTENT_TYPE));
    let body = Replayed::after(read_ahead, body).map_frame(clean_trailers as fn(_) -> _);
    let body = Counted::new(body, std::sync::Arc::clone(&exchange), Direction::ToUpstream, content_type);
    // Given up if the answer is over first.
    let upload = std::sync::Arc::new(early_answer::Link::default());
    let body = Upload::new(body, std::sync::Arc::clone(&upload));
    let Ok(upstream) = upstream.body(body) else {
        exchange.failed(400, "the request could not be rebuilt".into());
        return Ok(answer(said, StatusCode::BAD_REQUEST, "airlock: the request could not be rebuilt", ""));
    };
    // HTTP/1.1 to the target, as nginx and most proxies speak to theirs:
    // per request it costs less than HTTP/2's streams and flow control
    // (3–4 µs of the agent's CPU), and upgrades need it. HTTP/2 (where a
    // TLS target offers it; h2c to a plain one) for an HTTP/2 client that
    // takes trailers (gRPC, whose status travels in them), or that talks
    // to Kubernetes: its clients keep many watches open at once, each of
    // which would hold a connection of its own to the API server.
    let from_http2 = parts.version == Version::HTTP_2;
    let http2 = from_http2 && (trailers || session.kubernetes);
    let client = if http2 { &session.clients.any } else { &session.clients.http1 };
    let mut response = match client.request(upstream).await {
        Ok(response) => response,
        Err(error) => {
            let message = format!("airlock: the target did not answer: {}", describe(&error));
            exchange.failed(502, message.clone());
            return Ok(answer(said, StatusCode::BAD_GATEWAY, &message, ""));
        }
    };
    exchange.answered(response.status().as_u16(), response.headers());
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        exchange.upgraded();
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        // What the target sends is read as it says it switched to.
        let filter = session.secret.as_ref().map(|echoes| upgraded::echo_filter(echoes, response.headers()));
        let switched =
            response.headers().get(header::UPGRADE).and_then(|u| upgraded::Framing::of_upgrade(u.as_bytes()));
        if recorded {
            // Which must be what the client asked for.
            let Some(framing) = switched.filter(|switched| Some(*switched) == framing) else {
                let message = "airlock: the API server switched to a protocol other than the one asked for; \
                               exec sessions do not run unrecorded";
                exchange.failed(502, message.into());
                return Ok(answer(said, StatusCode::BAD_GATEWAY, message, ""));
            };
            let recording = match session.start_recording() {
                Ok(recording) => recording,
                Err(error) => {
                    let message = format!(
                        "airlock: the session cannot be recorded, and exec sessions do not run \
                                           unrecorded: {error}; tell this host's administrators"
                    );
                    exchange.failed(503, message.clone());
                    return Ok(answer(said, StatusCode::SERVICE_UNAVAILABLE, &message, ""));
                }
            };
            let session = std::sync::Arc::clone(&session);
            tokio::spawn(async move {
                let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) else { return };
                let recording = std::sync::Arc::new(std::sync::Mutex::new(recording));
                let (client, upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                let recorded = std::sync::Arc::clone(&recording);
                let relay = exec::relay((client, upstream), recorded, tty, framing, filter);
                // An access window closing ends the shell too.
                let ended = tokio::select! {
                    ended = relay => ended,
                    reason = session.live.ending.wait() => exec::Ended { bytes: (0, 0), status: None, error: Some(reason) },
                };
                session.finish_recording(recording, ended);
            });
        } else {
            let live = std::sync::Arc::clone(&session.live);
            // A WebSocket's text messages are masked as answers are; a
            // terminal's (exec, above) are not, as SSH sessions are not.
            let masking = match switched {
                Some(upgraded::Framing::WebSocket) => {
                    masker.map(|masker| MessageMasker::new(std::sync::Arc::clone(masker)))
                }
                _ => None,
            };
            let filters = upgraded::Filters { masking, echoes: filter };
            tokio::spawn(async move {
                let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) else { return };
                let ((up, down), error) = upgraded::relay(TokioIo::new(client), TokioIo::new(upstream), filters).await;
                use std::sync::atomic::Ordering::Relaxed;
                live.bytes.to_upstream.fetch_add(up, Relaxed);
                live.bytes.to_client.fetch_add(down, Relaxed);
                if let Some(error) = error {
                    tracing::warn!(session = %live.id, error, "upgraded connection ended");
                }
            });
        }
        let mut switching = Response::new(empty());
        *switching.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *switching.headers_mut() = response.headers().clone();
        if let Some(secret) = &session.secret {
            scrub::headers(switching.headers_mut(), secret);
        }
        return Ok(switching);
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(why) = unreadable(&parts, &body, masker.is_some(), session.secret.is_some()) {
        exchange.failed(502, why.clone());
        return Ok(answer(said, StatusCode::BAD_GATEWAY, &format!("airlock: {why}"), ""));
    }
    let masking = match masker.map(|masker| (masker, mask::plan(&parts.headers, strict_masking))) {
        Some((_, Plan::Refuse(why))) => {
            exchange.failed(502, why.clone());
            let message = format!("airlock: {why}");
            return Ok(answer(said, StatusCode::BAD_GATEWAY, &message, ""));
        }
        Some((masker, Plan::Mask(kind))) => {
            mask::masked_headers(&mut parts.headers);
            Some((std::sync::Arc::clone(masker), kind))
        }
        Some((_, Plan::Pass)) | None => None,
    };
    // Counted last: the record tells what the client was sent.
    let body = match masking {
        Some((masker, kind)) => Masked::new(body, masker, kind, std::sync::Arc::clone(&exchange)).boxed(),
        None => body.map_err(Into::into).boxed(),
    };
    let body = match &session.secret {
        Some(secret) => {
            scrub::headers(&mut parts.headers, secret);
            Scrubbed::new(body, secret.clone()).boxed()
        }
        None => body,
    };
    let content_type = parts.headers.get(header::CONTENT_TYPE);
    let body = Counted::new(body, exchange, Direction::ToClient, content_type);
    Ok(Response::from_parts(parts, Answer::new(body, upload, from_http2).boxed()))
}

/// Why an answer Airlock must read (to mask it, or to find its own
/// credential echoed in it) cannot be, if it cannot: a range of a body
/// (asked for whole) or a compressed one (asked for uncompressed) that has
/// a body. Masking's own reasons are [`mask::plan`]'s.
fn unreadable(parts: &hyper::http::response::Parts, body: &Incoming, masked: bool, scrubbed: bool) -> Option<String> {
    use http_body::Body as _;
    if !(masked || scrubbed) || body.is_end_stream() {
        return None;
    }
    if parts.status == StatusCode::PARTIAL_CONTENT {
        return Some("the target answered a range of the body although Airlock asked for all of it".into());
    }
    let encoding = parts.headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    (scrubbed && !encoding.trim().eq_ignore_ascii_case("identity")).then(|| {
        format!("the answer is compressed ({encoding}) although Airlock asked for none, so it cannot be checked for Airlock's credential")
    })
}

/// Headers with which frameworks let a request pass for another method.
const METHOD_OVERRIDES: [&str; 3] = ["x-http-method-override", "x-http-method", "x-method-override"];

/// The request's method, and those its override headers and query ask
/// for, in upper case, as frameworks compare them.
fn methods_of<B>(request: &Request<B>) -> Vec<String> {
    let mut methods = vec![request.method().as_str().to_owned()];
    for name in METHOD_OVERRIDES {
        methods.extend(request.headers().get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_owned));
    }
    // The query's `_method` (Symfony reads it there too), however its name is written.
    methods.extend(form_method::urlencoded_fields(request.uri().query().unwrap_or_default().as_bytes()));
    for method in &mut methods {
        method.make_ascii_uppercase();
    }
    methods
}

/// The target's URI for a request to `host` for `asked`: its path and
/// query as the client wrote them, reused rather than written out and
/// parsed again.
fn upstream_uri(scheme: &Scheme, host: &str, asked: &Uri) -> Result<Uri, hyper::http::Error> {
    let path = asked.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::builder().scheme(scheme.clone()).authority(host).path_and_query(path).build()
}

fn path_of<B>(request: &Request<B>) -> &str {
    request.uri().path_and_query().map_or("/", |p| p.as_str())
}

/// A rule's own description, when it gives no reason.
fn describe_rule(rule: &RequestRule) -> String {
    let methods = if rule.methods.is_empty() { "any method".to_owned() } else { rule.methods.join("|") };
    format!("requests matching {methods} {}", rule.path)
}

/// The host a request is for: HTTP/2's `:authority`, else `Host`.
fn host_of(request: &Request<Incoming>) -> Option<&str> {
    if let Some(authority) = request.uri().authority() {
        return Some(authority.as_str());
    }
    request.headers().get(header::HOST).and_then(|h| h.to_str().ok())
}

/// The protocol an HTTP/1.1 request asks to switch to, if it does.
fn upgrade_of(request: &Request<Incoming>) -> Option<HeaderValue> {
    if request.version() != Version::HTTP_11 {
        return None;
    }
    let asks = list_items(request.headers(), header::CONNECTION).any(|token| token.eq_ignore_ascii_case("upgrade"));
    asks.then(|| request.headers().get(header::UPGRADE).cloned()).flatten()
}

/// Whether the client takes trailer fields in the answer (`TE: trailers`).
fn takes_trailers(headers: &HeaderMap) -> bool {
    let mut codings = list_items(headers, header::TE).map(|item| item.split(';').next().unwrap_or_default().trim_end());
    codings.any(|coding| coding.eq_ignore_ascii_case("trailers"))
}

/// The items of a comma-separated list header (`Connection`, `TE`,
/// `Sec-WebSocket-Protocol`…), over all its fields, trimmed; fields that
/// are not text give none.
pub(super) fn list_items(headers: &HeaderMap, name: impl hyper::header::AsHeaderName) -> impl Iterator<Item = &str> {
    headers.get_all(name).into_iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim)
}

/// The headers sent to the target: `upgrade` asked for, `trailers` taken
/// by the client (and so by Airlock, which relays them); `masker` masks
/// the answer, and `strict_masking` when it must be able to read it
/// whatever it is.
fn outgoing_headers(
    incoming: HeaderMap,
    session: &Session,
    (upgrade, trailers): (Option<&HeaderValue>, bool),
    (masker, strict_masking): (Option<&std::sync::Arc<crate::masking::Masker>>, bool),
) -> HeaderMap {
    let mut headers = incoming;
    strip(&mut headers, never_forwarded);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    strip_cookies(&mut headers, &session.strip_cookies);
    // The client's own fields of the names Airlock injects go first: a
    // server reading the first of two `X-Vault-Token`s would take the
    // client's, while the record credits Airlock's.
    for (name, _) in &session.inject {
        headers.remove(name);
    }
    for (name, value) in &session.inject {
        headers.append(name.clone(), value.clone());
    }
    if masker.is_some() || session.secret.is_some() {
        mask::ask_whole_and_uncompressed(&mut headers);
    }
    if strict_masking {
        mask::ask_for_json(&mut headers);
    } else if masker.is_some() && session.kubernetes {
        mask::ask_for_readable(&mut headers);
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
    headers
}

/// A request's trailer fields, cleaned as its headers are: no credential
/// (nor cookie) reaches the target in them either, where a server that
/// merged them into the headers would take them.
fn clean_trailers(frame: Frame<Bytes>) -> Frame<Bytes> {
    match frame.into_trailers() {
        Ok(mut trailers) => {
            strip(&mut trailers, |name| never_forwarded(name) || name == header::COOKIE);
            Frame::trailers(trailers)
        }
        Err(frame) => frame,
    }
}

/// The client's credentials, which never reach the target; Host, which
/// hyper sets (HTTP/1.1) or makes :authority (HTTP/2) from the URI; and
/// the headers by which servers behind a proxy may take another site or
/// path than the one the request names, and that Airlock judged.
fn never_forwarded(name: &HeaderName) -> bool {
    name == header::AUTHORIZATION
        || name == header::PROXY_AUTHORIZATION
        || name == header::HOST
        || name.as_str().starts_with("impersonate-")
        || ROUTING_HEADERS.contains(&name.as_str())
}

/// Headers a server may route by instead of the request's own host and
/// path: a proxy's word (`Forwarded: host=`, `X-Forwarded-Host`), IIS's
/// rewrites that Zend and old Symfony honour (`X-Original-URL`,
/// `X-Rewrite-URL`). From a client they are its own claims.
const ROUTING_HEADERS: [&str; 4] = ["forwarded", "x-forwarded-host", "x-original-url", "x-rewrite-url"];

/// Removes hop-by-hop headers, and those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, |_| false);
}

/// Removes hop-by-hop headers, those the `Connection` header names, and
/// those `also` picks. The names are looked at once and only the headers
/// present are removed: most messages have none or one of them, and
/// asking the map for each of a dozen names costs a hash each.
fn strip(headers: &mut HeaderMap, also: impl Fn(&HeaderName) -> bool) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    // Most messages list only `keep-alive` (hop-by-hop anyway) or `close`
    // (a name no field may have, RFC 9110 §18.4): no name is made of them.
    let names = list_items(headers, header::CONNECTION)
        .filter(|t| !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("close"));
    // `from_bytes` lowercases; a token that is no header name names none.
    doomed.extend(names.filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok()));
    // A name listed twice is removed once and then found absent: cheaper
    // than keeping the list free of repeats, which a client writing many
    // tokens could make quadratic.
    doomed.extend(headers.keys().filter(|name| HOP_BY_HOP.contains(name) || also(name)).cloned());
    for name in doomed {
        headers.remove(name);
    }
}

/// Removes the cookies named in `names` from every `Cookie` header.
fn strip_cookies(headers: &mut HeaderMap, names: &[String]) {
    if names.is_empty() {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(name, _)| name).trim();
            !names.iter().any(|n| n.eq_ignore_ascii_case(name))
        })
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, value);
    }
}

const RULE_HINT: &str =
    "This host's Airlock policy decides which requests may reach this target; ask its administrators.";
const UNRECORDED_HINT: &str = "Tell this host's administrators (disk full or audit directory broken).";
const MISDIRECTED_HINT: &str = "Connect to that site by its own name: the Host header (HTTP/2's :authority) must name \
                                 the site the connection is for.";
const CREDENTIAL_HINT: &str = "Airlock sends this target's credential for you; tell this host's administrators.";

/// How Airlock's own answers to a client are written.
#[derive(Clone, Copy)]
pub(super) enum Said {
    /// A gRPC error: the client made a gRPC call.
    Grpc,
    /// A Kubernetes `Status` object, which kubectl prints.
    KubernetesStatus,
    /// `{"error", "hint"}`: the client accepts JSON.
    Json,
    /// Plain text.
    Text,
}

impl Said {
    /// How a client sending `request` to a target (`kubernetes` or not) is answered.
    pub fn to<B>(request: &Request<B>, kubernetes: bool) -> Self {
        if grpc::is_call(request.headers()) {
            return Self::Grpc;
        }
        let accepts_json = request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("json"));
        match (kubernetes, accepts_json) {
            (true, _) => Self::KubernetesStatus,
            (false, true) => Self::Json,
            (false, false) => Self::Text,
        }
    }
}

/// Airlock's own answer, written as `said`.
pub(super) fn answer(said: Said, status: StatusCode, message: &str, hint: &str) -> Response<ClientBody> {
    let one_line = || if hint.is_empty() { message.to_owned() } else { format!("{message} {hint}") };
    let (body, kind) = match said {
        Said::Grpc => return grpc::refusal(status, &one_line()),
        Said::KubernetesStatus => (kubernetes::status(status, &one_line()), "application/json"),
        Said::Json => (serde_json::json!({ "error": message, "hint": hint }).to_string(), "application/json"),
        Said::Text if hint.is_empty() => (format!("{message}\n"), "text/plain; charset=utf-8"),
        Said::Text => (format!("{message}\n{hint}\n"), "text/plain; charset=utf-8"),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    response
}

/// A body with nothing in it.
pub(super) fn empty() -> ClientBody {
    Full::new(Bytes::new()).map_err(|never| match never {}).boxed()
}

/// A client error with its causes, which hyper keeps apart.
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_passes_for_every_method_its_headers_and_query_ask_for() {
        let request = Request::post("/files/x?a=1&.method=delete;%5Fmethod=put")
            .header("x-http-method-override", "patch")
            .body(())
            .unwrap();
        assert_eq!(methods_of(&request), ["POST", "PATCH", "DELETE", "PUT"]);
    }

    fn fields(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut fields = HeaderMap::new();
        for &(name, value) in pairs {
            fields.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        fields
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_go() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Secret-Hop"));
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn request_trailers_carry_no_credential_to_the_target() {
        let trailers = fields(&[
            ("authorization", "Bearer client-token"),
            ("impersonate-user", "admin"),
            ("cookie", "session=1"),
            ("connection", "x-checksum"),
            ("x-checksum", "1"),
            ("grpc-status", "0"),
        ]);
        let cleaned = clean_trailers(Frame::trailers(trailers)).into_trailers().unwrap();
        assert_eq!(cleaned.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["grpc-status"]);
        let data = clean_trailers(Frame::data(Bytes::from_static(b"authorization: x")));
        assert_eq!(data.into_data().unwrap(), "authorization: x");
    }

    #[test]
    fn trailers_are_taken_when_te_names_them() {
        let te = |values: &[&'static str]| {
            let pairs: Vec<_> = values.iter().map(|&value| ("te", value)).collect();
            takes_trailers(&fields(&pairs))
        };
        assert!(te(&["trailers"]));
        assert!(te(&["gzip;q=0.5, Trailers"]));
        assert!(te(&["deflate", "trailers;q=1"]));
        assert!(!te(&[]));
        assert!(!te(&["gzip", "trailersx"]));
    }

    #[test]
    fn client_credentials_host_and_routing_claims_never_go_to_the_target() {
        let mut headers = fields(&[
            ("authorization", "Bearer client-token"),
            ("forwarded", "host=admin.internal"),
            ("x-forwarded-host", "admin.internal"),
            ("x-original-url", "/admin/delete"),
            ("x-rewrite-url", "/admin/delete"),
            ("proxy-authorization", "Basic eDp5"),
            ("impersonate-user", "admin"),
            ("impersonate-group", "system:masters"),
            ("impersonate-extra-scopes", "all"),
            ("host", "api.example"),
            ("connection", "close"),
            ("accept", "application/json"),
        ]);
        headers.append(header::AUTHORIZATION, HeaderValue::from_static("Basic second"));
        strip(&mut headers, never_forwarded);
        assert_eq!(headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["accept"]);
    }

    #[test]
    fn named_cookies_are_removed_and_others_kept() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("session=abc; theme=dark"));
        headers.append(header::COOKIE, HeaderValue::from_static("SESSION=x;lang=en"));
        strip_cookies(&mut headers, &["session".into()]);
        assert_eq!(headers.get(header::COOKIE).unwrap(), "theme=dark; lang=en");
    }
}
