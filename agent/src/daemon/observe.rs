//! What monitoring sees: `/metrics` (OpenMetrics), `/healthz` and
//! `/readyz` on the loopback listener `[metrics] listen`, and the same
//! metrics over the control socket (`airlock status --metrics`).
//!
//! Healthy means the programs are attached and the audit log can be
//! written: without either, protected connections fail (closed) or are
//! refused (no session runs unrecorded), so a supervisor should know.
//! Ready adds that the agent has started serving.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};

use super::AgentState;
use crate::metrics::{self, Snapshot, process::ProcessStats};

/// A request on the metrics listener gets this long.
const REQUEST_TIME: Duration = Duration::from_secs(10);

/// The agent's health.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// The agent has started serving.
    pub ready: bool,
    /// What is wrong; empty when healthy.
    pub problems: Vec<String>,
}

impl Health {
    /// Programs attached and the audit log writable.
    pub fn healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the agent's health now.
pub fn health(state: &AgentState) -> Health {
    let mut problems = Vec::new();
    let expected = state.interceptor.attached().len();
    let attached = state.interceptor.attached_now();
    if attached < expected {
        problems.push(format!(
            "{} of {expected} eBPF programs are detached: protected connections are not redirected",
            expected - attached
        ));
    }
    if let Err(error) = state.audit.writable() {
        problems.push(format!("the audit log cannot be written ({error}): every connection is refused"));
    }
    Health { ready: state.ready.load(Ordering::Acquire), problems }
}

/// The states metrics report, read now.
pub fn snapshot(state: &AgentState) -> Snapshot {
    let kernel = match state.interceptor.counters() {
        Ok(c) => vec![
            ("protected_port_connects", c.protected_port_connects),
            ("redirected", c.redirected),
            ("exempt", c.exempt),
            ("refused_without_record", c.record_failed),
            ("indexed", c.indexed),
            ("confined_refused", c.confined_refused),
        ],
        Err(error) => {
            tracing::warn!(%error, "eBPF counters unreadable");
            Vec::new()
        }
    };
    Snapshot {
        live_sessions: state.sessions.live_by_target(),
        approvals_pending: state.approvals.pending_count() as u64,
        kernel,
        programs_attached: state.interceptor.attached_now() as u64,
        audit_writable: state.audit.writable().is_ok(),
        process: ProcessStats::of_self(),
    }
}

/// The OpenMetrics text now.
pub fn render(state: &AgentState) -> String {
    metrics::global().render(&snapshot(state))
}

/// Binds the metrics listener (before capabilities are dropped).
pub fn bind(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    use anyhow::Context as _;
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding the metrics listener {addr}"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the agent exits.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<AgentState>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "metrics listener accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, std::convert::Infallible>(answer(&state, &request)) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let served = builder.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(REQUEST_TIME, served).await;
        });
    }
}

fn answer(state: &AgentState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into());
    }
    match request.uri().path() {
        "/metrics" => {
            reply(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", render(state))
        }
        path @ ("/healthz" | "/readyz") => {
            let health = health(state);
            let ok = health.healthy() && (path == "/healthz" || health.ready);
            let mut body = if ok { "ok\n".to_owned() } else { String::new() };
            if !health.ready && path == "/readyz" {
                body.push_str("not ready: the agent is starting\n");
            }
            for problem in &health.problems {
                body.push_str(problem);
                body.push('\n');
            }
            let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            reply(status, "text/plain; charset=utf-8", body)
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "try /metrics, /healthz or /readyz\n".into()),
    }
}
