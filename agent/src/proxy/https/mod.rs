//! HTTPS and HTTP targets: TLS terminated with the host CA (a leaf for the
//! name the client asked for), HTTP/1.1 and HTTP/2 served by hyper, each
//! request re-sent to the target by hyper's client with the client's
//! credentials removed and Airlock's added, and recorded on its own.
//!
//! Layers, top to bottom: [`proxy`] (the session: TLS, the credential,
//! serving), [`forward`] (one request: headers, the target's answer,
//! upgrades), [`mask`] (answers masked as they stream), [`scrub`] (the
//! injected secret kept out of answers), [`record`] (its audit record and
//! byte counts), [`upstream`] (connections to the target), [`credential`]
//! (what is injected), [`bodies`] (bodies kept for records), [`grpc`]
//! (gRPC's status, and refusals said as gRPC errors), [`refuse`] (answers
//! when no session may start).

mod bodies;
pub mod channels;
mod credential;
mod early_answer;
pub mod echo;
mod exec;
pub mod form_method;
mod forward;
mod grpc;
mod host;
pub mod kubernetes;
mod mask;
mod query;
mod record;
pub mod refuse;
pub mod scrub;
pub mod spdy;
#[cfg(any(test, fuzzing))]
pub mod test_body;
pub mod upgraded;
mod upstream;
pub mod websocket;
pub mod websocket_masking;

pub(crate) use record::RequestRecord;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use hyper::{
    header::{HeaderName, HeaderValue},
    http::uri::Scheme,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

use crate::{
    approvals::{Approvals, NewRequest},
    audit::SessionContext,
    daemon::sessions::LiveSession,
    guardrails::ApprovalPolicy,
    http::Roots,
    masking::Masker,
    policy::https::{HttpsOptions, RequestRule},
    proxy::{ca::HostCa, postgres::recorder::StatementLog},
};

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head accepted (HTTP/1.1 buffer, HTTP/2 header list).
const MAX_HEAD: usize = 64 * 1024;

/// What HTTP sessions share with the agent.
pub struct Shared {
    /// The agent's record writer, which request records are handed to.
    pub records: StatementLog,
    /// Makes the leaves TLS clients are shown.
    pub ca: Arc<HostCa>,
    /// How long connecting to the target may take.
    pub connect_timeout: Duration,
    /// Where held requests wait for a decision.
    pub approvals: Arc<Approvals>,
    /// Where exec recordings go (`audit_dir/recordings`).
    pub recordings: std::path::PathBuf,
    /// Redact bodies kept for records (`record_bodies`): the same for everyone.
    pub body_redactor: Arc<BodyRedactors>,
}

/// What redacts bodies kept for records, made once for the agent.
pub struct BodyRedactors {
    /// For any target: [`crate::masking::MaskingPolicy::for_recorded_bodies`].
    any: Arc<Masker>,
    /// For Kubernetes targets: that, and Secrets' values wherever they
    /// stand ([`kubernetes::secrets_masking`]), whoever the person is: a
    /// Secret created, applied or read by someone its masking exempts is
    /// still kept out of the log.
    kubernetes: Arc<Masker>,
}

impl BodyRedactors {
    /// Redactors whose tokens (if any strategy makes them) are keyed by `key`.
    pub fn new(key: &Arc<crate::masking::TokenKey>) -> Self {
        let any = crate::masking::MaskingPolicy::for_recorded_bodies();
        let kubernetes = kubernetes::secrets_masking(Some(&any));
        let masker = |policy| Arc::new(Masker::new(policy, "", &[], Arc::clone(key)));
        Self { any: masker(&any), kubernetes: masker(&kubernetes) }
    }
}

/// What the target's policy asks of a session.
pub struct TargetPolicy<'a> {
    /// `[target.https]`.
    pub options: &'a HttpsOptions,
    /// Who approves held requests.
    pub approvals: Option<ApprovalPolicy>,
    /// Masks answers for the session's person (`None`: nothing to mask for them).
    pub masker: Option<Arc<Masker>>,
    /// Kubernetes: masks answers about Secrets for the person (`None`: they see them).
    pub secrets_masker: Option<Arc<Masker>>,
}

/// Why a session ended in error.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    /// The client's TLS handshake failed or timed out.
    #[error("client TLS: {0}")]
    ClientTls(String),
    /// Serving the client's connection failed.
    #[error("{0}")]
    Serve(String),
    /// Ended from outside (access window closed).
    #[error("{0}")]
    Ended(String),
}

/// A session's state, shared by its requests.
pub(super) struct Session {
    records: StatementLog,
    /// Who and where, encoded once for every request record.
    context: Arc<SessionContext>,
    live: Arc<LiveSession>,
    /// `https` or `http`, for the URIs sent upstream.
    scheme: Scheme,
    /// The host requests name when they name none: what the client asked for.
    default_host: String,
    /// The hosts requests may name: the site the target's certificate was
    /// checked for, or its address.
    hosts: host::AllowedHosts,
    strip_cookies: Vec<String>,
    /// The headers injected into every request: the credential, and for
    /// Kubernetes impersonation whom it acts for.
    inject: Vec<(HeaderName, HeaderValue)>,
    /// Its secret part, overwritten wherever an answer echoes it.
    secret: Option<scrub::Echoes>,
    /// Which credential was sent, for the records (never the credential).
    credential_source: Option<Arc<str>>,
    /// Why the credential could not be obtained: every request is answered with it.
    credential_error: Option<String>,
    /// Request rules, and who approves held requests.
    rules: Vec<RequestRule>,
    approval: Option<(Arc<Approvals>, ApprovalPolicy)>,
    /// Masks answers, when anything is masked for this person.
    masker: Option<Arc<Masker>>,
    /// A Kubernetes API server: requests are read as Kubernetes reads them,
    /// refusals are `Status` objects.
    kubernetes: bool,
    /// Masks answers about Secrets: the target's masking and their data.
    secrets_masker: Option<Arc<Masker>>,
    /// Where exec recordings go, and how many the session made.
    recordings: std::path::PathBuf,
    recorded: std::sync::atomic::AtomicU32,
    /// Bodies kept for request records, when the target records them.
    record_bodies: Option<bodies::BodyRecording>,
    clients: upstream::Clients,
}

impl Session {
    /// Holds a request until an approver decides; `Err` with why it may not go.
    async fn hold(&self, statement: &str, reason: &str) -> Result<(), String> {
        let Some((approvals, policy)) = &self.approval else {
            return Err(format!("request needs approval, but the target names no approvers: {reason}"));
        };
        let s = &self.live;
        let filed = approvals.request(NewRequest {
            session: &s.id,
            identity: &s.identity,
            target: &s.target,
            statement,
            reason,
            policy,
            blast_radius: None,
        });
        let waiter = filed.map_err(|e| format!("the approval request cannot be recorded: {e}"))?;
        approvals.refusal(waiter).await.map_or(Ok(()), Err)
    }

    /// Starts the recording of an exec or attach stream: named after the
    /// session, like SSH's (`ID`, then `ID-1`…).
    fn start_recording(&self) -> std::io::Result<crate::recording::Recording> {
        let name = match self.recorded.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
            0 => self.live.id.clone(),
            n => format!("{}-{n}", self.live.id),
        };
        crate::recording::Recording::create(&self.recordings, &name, 80, 24, "xterm")
    }

    /// Closes a recording and records where it is, its digest and how the
    /// stream ended.
    fn finish_recording(&self, recording: Arc<std::sync::Mutex<crate::recording::Recording>>, ended: exec::Ended) {
        use std::sync::atomic::Ordering::Relaxed;
        self.live.bytes.to_upstream.fetch_add(ended.bytes.0, Relaxed);
        self.live.bytes.to_client.fetch_add(ended.bytes.1, Relaxed);
        let recording = match Arc::try_unwrap(recording) {
            Ok(recording) => recording.into_inner().unwrap_or_else(|p| p.into_inner()),
            Err(_) => return,
        };
        let detail = match recording.finish() {
            Ok((path, sha256)) => serde_json::json!({
                "path": path,
                "sha256": sha256,
                "status": ended.status,
                "error": ended.error,
            }),
            Err(error) => serde_json::json!({ "error": format!("the recording could not be closed: {error}") }),
        };
        if let Err(error) = self.records.record_event(&self.context, "kubernetes.recording", detail) {
            tracing::error!(%error, session = %self.live.id, "recording record lost");
        }
    }

    /// Hands a request's record to the agent's writer (off the data path).
    fn record_request(&self, record: RequestRecord) {
        if let Err(error) = self.records.record_request(&self.context, record) {
            tracing::error!(%error, session = %self.live.id, "request record lost");
        }
    }
}

/// Runs an HTTP(S) session: `client` is the redirected connection,
/// `upstream` a connection made to `destination` (used by the first request).
pub async fn proxy(
    (client, upstream): (TcpStream, TcpStream),
    shared: &Shared,
    policy: TargetPolicy<'_>,
    tls: bool,
    live: Arc<LiveSession>,
    destination: SocketAddr,
) -> Result<(), HttpsError> {
    let TargetPolicy { options, approvals: approval_policy, masker, secrets_masker } = policy;
    let target_tls = if tls {
        let roots = match &options.ca_file {
            Some(path) => Roots::from_pem_file(path).map_err(|e| HttpsError::Serve(e.to_string()))?,
            None => Roots::system(),
        };
        Some(upstream::tls_config(&roots))
    } else {
        None
    };
    let injected = match &options.credential {
        Some(credential) => Some(credential::Injected::obtain(credential, &live.identity).await),
        None => None,
    };
    let (inject, credential_source, credential_error) = match &injected {
        Some(Ok(injected)) => {
            let mut headers = vec![(injected.header.clone(), injected.value.clone())];
            headers.extend(injected.acting_for.iter().cloned());
            (headers, Some(Arc::from(injected.source.as_str())), None)
        }
        Some(Err(error)) => {
            let source = options.credential.as_ref().map(|c| Arc::from(c.describe()));
            (Vec::new(), source, Some(format!("the credential for this target could not be obtained: {error}")))
        }
        None => (Vec::new(), None, None),
    };
    if let Some(error) = &credential_error {
        tracing::warn!(session = %live.id, error, "http credential not obtained");
    }
    let context = SessionContext::new(&live.id, &live.identity, &live.target)
        .map(Arc::new)
        .map_err(|e| HttpsError::Serve(format!("audit: {e}")))?;
    let actor = live.identity.actor.as_ref().map(|a| a.name.as_str());
    let session = |asked: Option<&str>| {
        let target_tls = target_tls.map(|config| {
            let name = upstream::server_name(options.server_name.as_deref(), asked, destination.ip());
            (config, name.unwrap_or_else(|| destination.ip().into()))
        });
        let hosts = match (&target_tls, options.server_name.as_deref()) {
            (Some((_, name)), _) => host::AllowedHosts::site(Some(&name.to_str()), destination.ip()),
            (None, Some(name)) => host::AllowedHosts::site(Some(name), destination.ip()),
            (None, None) => host::AllowedHosts::any(destination.ip()),
        }
        .with_other_names(&options.other_names);
        let target = upstream::Target { destination, tls: target_tls, connect_timeout: shared.connect_timeout };
        let secret = inject.first().and_then(|(_, value)| scrub::Echoes::of(value));
        Arc::new(Session {
            secret,
            records: shared.records.clone(),
            context,
            live: Arc::clone(&live),
            scheme: if tls { Scheme::HTTPS } else { Scheme::HTTP },
            default_host: asked.map_or_else(|| destination.to_string(), str::to_owned),
            hosts,
            strip_cookies: options.strip_cookies.clone(),
            inject,
            credential_source,
            credential_error,
            // The request rules that bind this session's actor, if any.
            rules: options
                .rules
                .iter()
                .filter(|r| crate::policy::guard_binds(&r.actors, r.action, actor))
                .cloned()
                .collect(),
            approval: approval_policy.map(|policy| (Arc::clone(&shared.approvals), policy)),
            masker: masker.clone(),
            kubernetes: options.kubernetes,
            secrets_masker: secrets_masker.clone(),
            recordings: shared.recordings.clone(),
            recorded: std::sync::atomic::AtomicU32::new(0),
            record_bodies: options.record_bodies.map(|cap| bodies::BodyRecording {
                cap,
                redactor: Arc::clone(match options.kubernetes {
                    true => &shared.body_redactor.kubernetes,
                    false => &shared.body_redactor.any,
                }),
            }),
            clients: upstream::Clients::new(target, upstream),
        })
    };
    let served = if tls {
        let acceptor = shared.ca.acceptor_with_alpn(destination.ip(), &[b"h2", b"http/1.1"]);
        let acceptor = acceptor.map_err(|e| HttpsError::ClientTls(e.to_string()))?;
        let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(client)).await;
        let stream = match accepted {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(HttpsError::ClientTls(error.to_string())),
            Err(_) => return Err(HttpsError::ClientTls("no handshake within 10 s".into())),
        };
        let asked = stream.get_ref().1.server_name().map(str::to_owned);
        serve(stream, session(asked.as_deref()), &live).await
    } else {
        serve(client, session(None), &live).await
    };
    if let Some(Ok(injected)) = injected
        && let Err(error) = injected.release().await
    {
        tracing::warn!(session = %live.id, error, "http credential not given back");
    }
    served
}

/// How client connections are served: HTTP/1.1 or HTTP/2 (whichever the
/// client speaks), heads bounded in size and time. Public so the
/// `http_requests` fuzz target reads requests exactly as the agent does.
pub fn server_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).max_buf_size(MAX_HEAD);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(MAX_HEAD as u32);
    builder
}

/// Serves the client's connection until it ends or the session is ended.
async fn serve<S>(stream: S, session: Arc<Session>, live: &LiveSession) -> Result<(), HttpsError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| forward::forward(Arc::clone(&session), request));
    let builder = server_builder();
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::select! {
        served = connection => served.map_err(|e| HttpsError::Serve(e.to_string())),
        reason = live.ending.wait() => Err(HttpsError::Ended(reason)),
    }
}
