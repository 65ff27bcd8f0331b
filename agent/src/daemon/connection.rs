//! One redirected connection, top to bottom: who opened it, may they, record
//! it, connect upstream, relay, record the end.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    path::Path,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use airlock_ebpf::ConnectRecord;
use serde_json::json;
use tokio::net::TcpStream;

use super::{AgentState, sessions::LiveSession};
use crate::{
    audit::{Event, TargetRef},
    identity::Identity,
    metrics,
    policy::{Decision, Protocol, Target},
    process::ProcessInfo,
    proxy::{
        postgres::{self, codec::ErrorFields},
        relay::{self, ByteCounters},
    },
};

/// Handles a connection accepted on an agent listener.
pub async fn handle(state: Arc<AgentState>, client: TcpStream, peer: SocketAddr) {
    let Some(record) = state.interceptor.take_record(peer) else {
        // Not redirected by our programs (someone dialled the listener
        // directly) or its record was evicted: nobody to attribute it to.
        tracing::warn!(%peer, "refused: no interception record for this connection");
        metrics::global().session_refused("-", "-", metrics::Refusal::NoRecord);
        audit_or_log(
            &state,
            Event {
                kind: "connection.refused",
                session: None,
                identity: None,
                process: None,
                target: None,
                detail: json!({ "peer": peer.to_string(), "reason": "no interception record for this connection" }),
            },
        );
        reset(client);
        return;
    };

    let process = ProcessInfo::collect(&record, Path::new("/proc"));
    let destination = original_destination(&record);
    let session = state.sessions.new_id();
    // The target is found again from the destination, not trusted by id: a
    // policy reload between connect() and here may have renumbered targets.
    let policy = state.policy();
    let Some(matched) = policy.find_target(destination.ip(), destination.port()) else {
        let target = TargetRef {
            name: "-".into(),
            protocol: "-".into(),
            addr: destination.ip().to_string(),
            port: destination.port(),
        };
        let reason = format!("{destination} is no longer a protected target (policy reloaded)");
        deny(&state, &session, None, &process, &target, &reason, metrics::Refusal::NotProtected);
        return reset(client);
    };
    let protocol = matched.protocol;
    let target = TargetRef {
        name: matched.name.clone(),
        protocol: protocol.to_string(),
        addr: destination.ip().to_string(),
        port: destination.port(),
    };

    let identity = match state.identity.identify(&process) {
        Ok(mut identity) => {
            identity.actor = state.actors.recognise(&policy.actors, &process, Path::new("/proc"));
            identity
        }
        Err(error) => {
            let reason = error.to_string();
            deny(&state, &session, None, &process, &target, &reason, metrics::Refusal::NoIdentity);
            return refuse(
                client,
                speaks(&state, matched, destination),
                Refusal::Denied { target: &target.name, reason: &reason },
            )
            .await;
        }
    };
    let subject = identity.as_subject();
    match policy.decide(matched.id, &subject) {
        Decision::Allow { rule } => {
            let window =
                matched.guardrails.as_ref().and_then(|g| g.approvals.as_ref()).filter(|a| a.session_access.is_some());
            if let Some(approvals) = window {
                match super::access::check(&state, &session, &identity, &target, approvals) {
                    Ok(None) => {}
                    Ok(Some(waiting)) => {
                        let why = metrics::Refusal::AwaitingApproval;
                        deny(&state, &session, Some(&identity), &process, &target, &waiting.message, why);
                        let refusal = Refusal::AwaitingApproval { message: &waiting.message, hint: &waiting.hint };
                        return refuse(client, speaks(&state, matched, destination), refusal).await;
                    }
                    Err(error) => {
                        tracing::error!(%error, %session, "refused: audit log unavailable");
                        metrics::global().session_refused(&target.name, &target.protocol, metrics::Refusal::Unrecorded);
                        return refuse(client, speaks(&state, matched, destination), Refusal::Unrecorded).await;
                    }
                }
            }
            let opened = state.audit.append(Event {
                kind: "connection.open",
                session: Some(&session),
                identity: Some(&identity),
                process: Some(&process),
                target: Some(&target),
                detail: json!({ "decision": "allow", "rule": rule, "peer": peer.to_string() }),
            });
            if let Err(error) = opened {
                // Never run unrecorded.
                tracing::error!(%error, %session, "refused: audit log unavailable");
                metrics::global().session_refused(&target.name, &target.protocol, metrics::Refusal::Unrecorded);
                return refuse(client, speaks(&state, matched, destination), Refusal::Unrecorded).await;
            }
            metrics::global().session_opened(&target.name, &target.protocol);
            let live = LiveSession {
                id: session,
                identity,
                process,
                target,
                started: SystemTime::now(),
                bytes: ByteCounters::default(),
                ending: Default::default(),
            };
            run_session(&state, client, matched, live, destination).await;
        }
        Decision::Deny { reason } => {
            deny(&state, &session, Some(&identity), &process, &target, &reason, metrics::Refusal::Denied);
            refuse(
                client,
                speaks(&state, matched, destination),
                Refusal::Denied { target: &target.name, reason: &reason },
            )
            .await;
        }
    }
}

/// Refuses a connection accepted with the descriptor held in reserve
/// because the agent is out of descriptors: its client is told why in its
/// own protocol, the refusal is recorded, and nothing else is opened.
pub async fn refuse_out_of_descriptors(state: &Arc<AgentState>, client: TcpStream, peer: SocketAddr) {
    let Some(record) = state.interceptor.take_record(peer) else { return reset(client) };
    // procfs cannot be read without a descriptor: the kernel's facts only.
    let process = ProcessInfo::collect(&record, Path::new("/proc"));
    let destination = original_destination(&record);
    let policy = state.policy();
    let Some(matched) = policy.find_target(destination.ip(), destination.port()) else { return reset(client) };
    let target = TargetRef {
        name: matched.name.clone(),
        protocol: matched.protocol.to_string(),
        addr: destination.ip().to_string(),
        port: destination.port(),
    };
    tracing::warn!(pid = process.pid, uid = process.uid, target = %target.name, "refused: out of file descriptors");
    metrics::global().session_refused(&target.name, &target.protocol, metrics::Refusal::OutOfDescriptors);
    audit_or_log(
        state,
        Event {
            kind: "connection.refused",
            session: Some(&state.sessions.new_id()),
            identity: None,
            process: Some(&process),
            target: Some(&target),
            detail: json!({ "peer": peer.to_string(), "reason": OUT_OF_DESCRIPTORS }),
        },
    );
    refuse(client, speaks(state, matched, destination), Refusal::OutOfDescriptors).await;
}

/// Why a session cannot start when the agent is out of descriptors.
const OUT_OF_DESCRIPTORS: &str =
    "the agent is out of file descriptors (RLIMIT_NOFILE), so no new session can start now; open sessions go on";

async fn run_session(
    state: &Arc<AgentState>,
    client: TcpStream,
    matched: &Target,
    session: LiveSession,
    destination: SocketAddr,
) {
    let started = Instant::now();
    let protocol = matched.protocol;
    let live = state.sessions.register(session);
    let s = live.session();
    tracing::info!(session = %s.id, user = %s.identity.user, pid = s.process.pid, target = %s.target.name, %destination, "session open");

    let timeout = Duration::from_millis(state.config.upstream_connect_timeout_ms);
    let upstream = match connect(destination, timeout).await {
        Ok(upstream) => upstream,
        Err(error) => {
            tracing::info!(session = %s.id, %error, "upstream unreachable");
            close_record(state, s, started.elapsed(), Some(&error));
            let refusal = if error.starts_with(OUT_OF_DESCRIPTORS) {
                Refusal::OutOfDescriptors
            } else {
                Refusal::Unreachable { error: &error }
            };
            return refuse(client, speaks(state, matched, destination), refusal).await;
        }
    };
    let _ = upstream.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let outcome = match protocol {
        Protocol::Postgres => {
            let jit = matched
                .credentials
                .as_ref()
                .map(|credentials| postgres::Jit { engine: &state.credentials, credentials });
            let guard = matched.guardrails.as_ref().filter(|g| !g.rules.is_empty()).map(|guardrails| {
                postgres::guard::GuardContext {
                    guardrails,
                    classifier: &state.classifier,
                    approvals: &state.approvals,
                    blast_radius: Default::default(),
                }
            });
            let shared = postgres::Shared {
                audit: &state.audit,
                statements: &state.statements,
                cancel_keys: &state.cancel_keys,
                jit,
                ca: &state.ca,
                guard,
                masking: matched.masking.as_ref().map(|policy| postgres::MaskingContext {
                    policy,
                    key: &state.masking_key,
                    catalog: &state.catalog,
                }),
            };
            postgres::proxy(client, upstream, &shared, s).await.map_err(|e| e.to_string())
        }
        Protocol::Ssh if let Some(options) = &matched.ssh => {
            let shared = crate::proxy::ssh::Shared {
                audit: Arc::clone(&state.audit),
                ca: Arc::clone(&state.ssh_ca),
                approvals: Arc::clone(&state.approvals),
                recordings: state.config.audit_dir.join("recordings"),
            };
            // The command rules that bind this session's actor, if any.
            let actor = s.identity.actor.as_ref().map(|a| a.name.as_str());
            let commands = options.commands.for_actor(actor);
            let policy = crate::proxy::ssh::TargetPolicy {
                options: crate::policy::ssh::SshOptions { commands, ..options.clone() },
                approvals: matched.guardrails.as_ref().and_then(|g| g.approvals.clone()),
            };
            crate::proxy::ssh::proxy(client, upstream, &shared, policy, live.shared(), destination)
                .await
                .map_err(|e| e.to_string())
        }
        Protocol::Https | Protocol::Http if let Some(options) = &matched.https => {
            let shared = crate::proxy::https::Shared {
                records: state.statements.clone(),
                ca: Arc::clone(&state.ca),
                connect_timeout: timeout,
                approvals: Arc::clone(&state.approvals),
                recordings: state.config.audit_dir.join("recordings"),
                body_redactor: Arc::clone(&state.body_redactor),
            };
            let tls = protocol == Protocol::Https;
            let identity = &s.identity;
            let masker_for = |policy: &crate::masking::MaskingPolicy| {
                let key = Arc::clone(&state.masking_key);
                let masker = crate::masking::Masker::for_subject(policy, &identity.as_subject(), key);
                (!masker.is_noop()).then(|| Arc::new(masker))
            };
            let secrets = options
                .mask_secrets
                .then(|| crate::proxy::https::kubernetes::secrets_masking(matched.masking.as_ref()));
            let policy = crate::proxy::https::TargetPolicy {
                options,
                approvals: matched.guardrails.as_ref().and_then(|g| g.approvals.clone()),
                masker: matched.masking.as_ref().and_then(masker_for),
                secrets_masker: secrets.as_ref().and_then(masker_for),
            };
            let session = live.shared();
            crate::proxy::https::proxy((client, upstream), &shared, policy, tls, session, destination)
                .await
                .map_err(|e| e.to_string())
        }
        Protocol::Ssh | Protocol::Https | Protocol::Http | Protocol::Tcp => {
            let result = tokio::select! {
                relayed = relay::relay(&client, &upstream, &s.bytes) => relayed.map_err(|e| e.to_string()),
                reason = s.ending.wait() => Err(reason),
            };
            if result.is_err() {
                reset(client);
            }
            result
        }
    };
    if let Err(error) = &outcome {
        tracing::info!(session = %s.id, %error, "session ended with an error");
    }
    close_record(state, s, started.elapsed(), outcome.err().as_deref());
}

async fn connect(destination: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    match tokio::time::timeout(timeout, TcpStream::connect(destination)).await {
        Ok(Ok(upstream)) => Ok(upstream),
        Ok(Err(error)) if super::out_of_descriptors(&error) => Err(format!("{OUT_OF_DESCRIPTORS} ({error})")),
        Ok(Err(error)) => Err(format!("connecting to {destination}: {error}")),
        Err(_) => Err(format!("connecting to {destination}: timed out after {timeout:?}")),
    }
}

/// Why a client is turned away.
enum Refusal<'a> {
    /// Policy or identity says no.
    Denied { target: &'a str, reason: &'a str },
    /// The target opens only with an approval, which is pending.
    AwaitingApproval { message: &'a str, hint: &'a str },
    /// The target did not answer.
    Unreachable { error: &'a str },
    /// The audit log cannot be written, so nothing may run.
    Unrecorded,
    /// The agent is out of file descriptors.
    OutOfDescriptors,
}

/// Tells the client why, in its own protocol where Airlock speaks it;
/// otherwise a reset, so it at least learns at once.
async fn refuse(client: TcpStream, speaks: Speaks, refusal: Refusal<'_>) {
    // The reason's PostgreSQL SQLSTATE and HTTP status, message and hint.
    let (code, status, message, hint) = match refusal {
        Refusal::Denied { target, reason } => (
            "28000",
            403,
            format!("airlock: access to \"{target}\" denied: {reason}"),
            Some("This host's Airlock policy decides who may connect; ask its administrators for access."),
        ),
        Refusal::AwaitingApproval { message, hint } => ("28000", 403, message.to_owned(), Some(hint)),
        Refusal::Unreachable { error } => (
            "08001",
            502,
            format!("airlock: {error}"),
            Some("Airlock connects to the target for you: check that the server is up and reachable from this host."),
        ),
        Refusal::OutOfDescriptors => (
            "53300",
            503,
            format!("airlock: {OUT_OF_DESCRIPTORS}"),
            Some(
                "Try again when fewer sessions are open; if it persists, tell this host's administrators (LimitNOFILE).",
            ),
        ),
        Refusal::Unrecorded => (
            "08004",
            503,
            "airlock: the audit log cannot be written, so no session may start".to_owned(),
            Some("Tell this host's administrators (disk full or audit directory broken)."),
        ),
    };
    match speaks {
        Speaks::Postgres => postgres::refuse(client, ErrorFields::fatal(code, &message, hint)).await,
        Speaks::Ssh { ca, names } => {
            let text = match hint {
                Some(hint) => format!("{message}\r\n{hint}"),
                None => message,
            };
            if let Err(error) = crate::proxy::ssh::refuse(client, &ca, &names, &text).await {
                tracing::info!(%error, "ssh refusal not delivered");
            }
        }
        Speaks::Http { tls, kubernetes } => {
            let said = crate::proxy::https::refuse::Refusal {
                status,
                message,
                hint: hint.unwrap_or_default().to_owned(),
                kubernetes,
            };
            crate::proxy::https::refuse::refuse(client, tls, said).await;
        }
        Speaks::Bytes => reset(client),
    }
}

/// The protocol a refused client is told why in.
enum Speaks {
    Postgres,
    /// SSH targets with `[target.ssh]`: Airlock's host certificate for these names.
    Ssh {
        ca: Arc<crate::proxy::ssh::ca::SshCa>,
        names: Vec<String>,
    },
    /// HTTP(S): an HTTP answer, after the TLS handshake for HTTPS; a
    /// `Status` object from Kubernetes targets.
    Http {
        tls: Option<tokio_rustls::TlsAcceptor>,
        kubernetes: bool,
    },
    /// Relayed as bytes: a reset.
    Bytes,
}

fn speaks(state: &AgentState, target: &Target, destination: SocketAddr) -> Speaks {
    match (target.protocol, &target.ssh) {
        (Protocol::Postgres, _) => Speaks::Postgres,
        (Protocol::Ssh, Some(options)) => Speaks::Ssh {
            ca: Arc::clone(&state.ssh_ca),
            names: crate::proxy::ssh::host_names(destination.ip(), options),
        },
        (Protocol::Http, _) => Speaks::Http { tls: None, kubernetes: false },
        (Protocol::Https, _) => match state.ca.acceptor_with_alpn(destination.ip(), &[b"h2", b"http/1.1"]) {
            Ok(acceptor) => {
                let kubernetes = target.https.as_ref().is_some_and(|https| https.kubernetes);
                Speaks::Http { tls: Some(acceptor), kubernetes }
            }
            Err(_) => Speaks::Bytes,
        },
        _ => Speaks::Bytes,
    }
}

/// Writes the `connection.close` record of a session.
pub fn close_record(state: &AgentState, s: &LiveSession, duration: Duration, error: Option<&str>) {
    use std::sync::atomic::Ordering::Relaxed;
    metrics::global().session_closed(&s.target.name, &s.target.protocol, error.is_some());
    audit_or_log(
        state,
        Event {
            kind: "connection.close",
            session: Some(&s.id),
            identity: Some(&s.identity),
            process: Some(&s.process),
            target: Some(&s.target),
            detail: json!({
                "bytes_to_upstream": s.bytes.to_upstream.load(Relaxed),
                "bytes_to_client": s.bytes.to_client.load(Relaxed),
                "duration_ms": duration.as_millis() as u64,
                "error": error,
            }),
        },
    );
}

/// Records a refusal in the audit log and the agent's log.
fn deny(
    state: &AgentState,
    session: &str,
    identity: Option<&Identity>,
    process: &ProcessInfo,
    target: &TargetRef,
    reason: &str,
    why: metrics::Refusal,
) {
    tracing::warn!(session, pid = process.pid, uid = process.uid, target = %target.name, reason, "connection denied");
    metrics::global().session_refused(&target.name, &target.protocol, why);
    audit_or_log(
        state,
        Event {
            kind: "connection.denied",
            session: Some(session),
            identity,
            process: Some(process),
            target: Some(target),
            detail: json!({ "decision": "deny", "reason": reason }),
        },
    );
}

/// A record that cannot be written is at least in the agent's own log.
fn audit_or_log(state: &AgentState, event: Event<'_>) {
    let kind = event.kind;
    if let Err(error) = state.audit.append(event) {
        tracing::error!(%error, kind, "audit record lost");
    }
}

/// Closes with RST: the client learns at once that it was refused, instead
/// of seeing an orderly end it might take for success.
fn reset(client: TcpStream) {
    let _ = client.set_zero_linger();
    drop(client);
}

fn original_destination(record: &ConnectRecord) -> SocketAddr {
    let ip = Ipv6Addr::from(record.orig_addr);
    let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
    SocketAddr::new(ip, record.orig_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_destination_unmaps_ipv4() {
        let mut record = ConnectRecord {
            cgroup_id: 0,
            connect_boot_ns: 0,
            orig_addr: std::net::Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped().octets(),
            orig_port: 5432,
            family: airlock_ebpf::AF_INET,
            target_id: 0,
            tgid: 1,
            tid: 1,
            uid: 0,
            gid: 0,
            comm: [0; 16],
        };
        assert_eq!(original_destination(&record), "10.1.2.3:5432".parse().unwrap());
        record.orig_addr = "fd00::5".parse::<Ipv6Addr>().unwrap().octets();
        assert_eq!(original_destination(&record), "[fd00::5]:5432".parse().unwrap());
    }
}
