//! PostgreSQL sessions: the startup handshake, then messages relayed frame
//! by frame with every statement and its outcome recorded.
//!
//! The proxy is transparent: frames are forwarded as they arrived, in
//! batches. On an observe-only target the client's own authentication
//! reaches the server unchanged, and TLS the server offers is passed through
//! end to end (recorded as such: the statements inside are then not
//! visible). On a target with just-in-time credentials the client sends no
//! password: Airlock logs in upstream (over TLS as policy says) as a role
//! made for this person, and the client is told it is in; TLS the client
//! asks for is terminated with a certificate from the host CA.
//! Refusals reach the client as a FATAL ErrorResponse it prints, never as a
//! bare reset.

mod auth;
pub mod cancel;
pub mod catalog;
pub mod codec;
pub mod effect;
pub mod encoding;
pub mod guard;
pub mod mask;
pub mod reading;
pub mod recorder;
mod relay;
pub mod shapes;
mod startup;
mod statements;
mod stream;
pub(crate) mod tls;

use std::{sync::Arc, time::Duration};

use bytes::BytesMut;
use serde_json::json;
use tokio::{io::AsyncWriteExt as _, net::TcpStream};

pub use self::startup::refuse;
use self::{
    cancel::CancelKeys,
    codec::ErrorFields,
    guard::GuardContext,
    recorder::StatementLog,
    relay::relay_messages,
    startup::{Handshake, startup},
    stream::FrameReader,
    tls::Stream,
};
use crate::{
    audit::{AuditLog, Event},
    credentials::Engine,
    daemon::sessions::LiveSession,
    policy::Credentials,
};

/// How long a client may take to send its startup packet.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Socket error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The peer broke the protocol.
    #[error("{side} sent a malformed message: {error}")]
    Protocol {
        /// `client` or `server`.
        side: &'static str,
        /// What was wrong.
        error: codec::CodecError,
    },
    /// The client did not finish the startup handshake in time.
    #[error("client sent no startup message within {0:?}")]
    StartupTimeout(Duration),
    /// The server answered SSLRequest with something other than S or N.
    #[error("server answered the TLS request with byte {0:#04x}")]
    BadSslAnswer(u8),
    /// A statement could not be recorded, so the session may not go on.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// The statement recorder stopped (its log write failed).
    #[error("the audit log cannot be written")]
    AuditLost,
    /// The session was ended from outside (its access window closed).
    #[error("{0}")]
    Ended(String),
    /// The server ended the session (its FATAL error, or a closed
    /// connection): the client has heard from the server itself.
    #[error("the server ended the session: {0}")]
    ServerEnded(String),
    /// Data could not be masked for sure, so the session ends before it leaks.
    #[error("data could not be masked: {0}")]
    Unmaskable(String),
}

impl From<stream::TooLong> for ProxyError {
    fn from(error: stream::TooLong) -> Self {
        Self::Unmaskable(error.to_string())
    }
}

impl From<tls::TlsError> for ProxyError {
    fn from(error: tls::TlsError) -> Self {
        match error {
            tls::TlsError::Io(error) => Self::Io(error),
            other => Self::Io(std::io::Error::other(other.to_string())),
        }
    }
}

/// What a PostgreSQL session needs from the agent besides its sockets.
pub struct Shared<'a> {
    /// Where records go.
    pub audit: &'a Arc<AuditLog>,
    /// Where statement records go, written in batches.
    pub statements: &'a StatementLog,
    /// Cancel keys of all sessions.
    pub cancel_keys: &'a CancelKeys,
    /// Just-in-time credentials, when the target has them.
    pub jit: Option<Jit<'a>>,
    /// The CA that signs certificates for clients asking for TLS on
    /// targets whose statements Airlock must see.
    pub ca: &'a Arc<crate::proxy::ca::HostCa>,
    /// Statement guardrails, when the target has them.
    pub guard: Option<GuardContext<'a>>,
    /// Data masking, when the target has it.
    pub masking: Option<MaskingContext<'a>>,
}

/// What masking needs from the agent.
pub struct MaskingContext<'a> {
    /// The target's masking policy.
    pub policy: &'a crate::masking::MaskingPolicy,
    /// The host key deterministic tokens are made with.
    pub key: &'a Arc<crate::masking::TokenKey>,
    /// Agent-wide cache of column names.
    pub catalog: &'a catalog::Catalog,
}

impl Shared<'_> {
    /// Whether Airlock must see the statements: then the client's TLS is
    /// terminated here, never passed through to the server.
    fn inspects(&self) -> bool {
        self.jit.is_some() || self.guard.is_some() || self.masking.is_some()
    }
}

/// A target's just-in-time credential set-up.
pub struct Jit<'a> {
    /// The engine that makes logins.
    pub engine: &'a Arc<Engine>,
    /// What the target's policy allows.
    pub credentials: &'a Credentials,
}

/// Runs an allowed session between `client` and `upstream` to completion.
pub async fn proxy(
    client: TcpStream,
    upstream: TcpStream,
    shared: &Shared<'_>,
    session: &LiveSession,
) -> Result<(), ProxyError> {
    let audit = shared.audit;
    let server = upstream.peer_addr()?;
    let destination = client.local_addr().map(|_| server.ip())?;
    let mut client = Stream::Plain(client);
    let mut upstream = upstream;
    let mut client_reader = FrameReader::default();
    let started = tokio::time::Instant::now();
    let startup = loop {
        let left = STARTUP_TIMEOUT.saturating_sub(started.elapsed());
        let step = match tokio::time::timeout(
            left,
            startup(&mut client, &mut client_reader, upstream, server, shared, session),
        )
        .await
        {
            Ok(Ok(step)) => step,
            Ok(Err(error)) => break Err(error),
            Err(_) => break Err(ProxyError::StartupTimeout(STARTUP_TIMEOUT)),
        };
        match step {
            // The client asked for TLS on a target Airlock logs in to: answer
            // it with a certificate from the host CA, then go on in TLS.
            Handshake::TerminateTls { upstream: kept } => {
                let Stream::Plain(tcp) = client else { return Err(ProxyError::BadSslAnswer(b'S')) };
                let acceptor = shared.ca.acceptor(destination).map_err(|e| std::io::Error::other(e.to_string()))?;
                client = Stream::Tls(Box::new(acceptor.accept(tcp).await?.into()));
                upstream = kept;
            }
            other => break Ok(other),
        }
    };
    let result = match startup {
        Err(error) => Err(error),
        Ok(Handshake::Done | Handshake::TerminateTls { .. }) => {
            // A CancelRequest sent inside TLS (libpq 17's cancel API does)
            // ends with close_notify, as the server would end it: without
            // one the client reads the close as a broken connection.
            if matches!(client, Stream::Tls(_)) {
                let _ = client.shutdown().await;
            }
            Ok(())
        }
        Ok(Handshake::Tls(upstream)) => {
            record(
                audit,
                session,
                "postgres.tls_passthrough",
                json!({ "note": "the server accepted TLS: statements are encrypted end to end and not recorded" }),
            );
            let Stream::Plain(client) = &client else { return Ok(()) };
            // Client and server speak TLS to each other: nothing of
            // Airlock's may enter the stream, not even an error.
            return Ok(crate::proxy::relay::relay(client, &upstream, &session.bytes).await?);
        }
        Ok(Handshake::Started { mut upstream, upstream_reader, lease, database }) => {
            if let (Some(guard), Some(lease), Some(jit)) = (&shared.guard, &lease, &shared.jit)
                && let crate::policy::CredentialSource::Embedded { admin_file } = &jit.credentials.source
            {
                let _ = guard.blast_radius.set(crate::blast_radius::summary::Query {
                    target: session.target.name.clone(),
                    // The live admin login: the seed's once a rotation replaced it.
                    admin_file: jit.engine.admins().current(admin_file),
                    server,
                    tls: jit.credentials.tls.clone(),
                    grants: lease.grants.clone(),
                    masking: shared.masking.as_ref().map(|m| m.policy.clone()),
                });
            }
            let masking = match &shared.masking {
                Some(masking) => {
                    let subject = session.identity.as_subject();
                    let masker = crate::masking::Masker::for_subject(masking.policy, &subject, Arc::clone(masking.key));
                    let catalog = match (&lease, &shared.jit) {
                        (Some(lease), Some(jit)) => Some(mask::CatalogAccess {
                            catalog: masking.catalog,
                            login: catalog::Login { server, tls: &jit.credentials.tls, lease, database: &database },
                        }),
                        _ => None,
                    };
                    (!masker.is_noop()).then(|| mask::MaskLayer::new(masker, catalog))
                }
                None => None,
            };
            let result = relay_messages(
                &mut client,
                &mut upstream,
                server,
                (client_reader, upstream_reader),
                shared,
                session,
                masking,
            )
            .await;
            if let (Some(lease), Some(jit)) = (lease, &shared.jit) {
                jit.engine.release(&lease);
            }
            result
        }
    };
    // Whether the startup or the relay failed (the audit log full between
    // connection.open and postgres.startup, say), the client hears why
    // rather than a bare close.
    if let Err(error) = &result {
        tell_client(&mut client, error).await;
    }
    result
}

/// Best effort: the client learns why its session ended, in words.
async fn tell_client(client: &mut Stream, error: &ProxyError) {
    let (code, message, hint) = match error {
        ProxyError::Protocol { .. } => (
            "08P01",
            format!("airlock: {error}"),
            "A client or server that breaks the PostgreSQL protocol; if it was your client, report it with the \
             session's time to this host's administrators.",
        ),
        ProxyError::Audit(_) | ProxyError::AuditLost => (
            "08006",
            "airlock: the audit log cannot be written; the session was ended".to_owned(),
            "Nothing runs unrecorded: tell this host's administrators (disk full or audit directory broken).",
        ),
        // admin_shutdown: what PostgreSQL sends when a session is terminated.
        ProxyError::Ended(reason) => (
            "57P01",
            format!("airlock: {reason}"),
            "Connect again; where the target opens only with an approval, that asks for a new one.",
        ),
        ProxyError::Unmaskable(why) => (
            "42501",
            format!("airlock: {why}; the session was ended so that unmasked data does not reach you"),
            "Select fewer or smaller columns, or ask the target's owners about its masking rules.",
        ),
        _ => return,
    };
    let mut out = BytesMut::new();
    ErrorFields::fatal(code, &message, Some(hint)).to_error_frame().encode(&mut out);
    let _ = client.write_all(&out).await;
}

fn append(
    audit: &AuditLog,
    session: &LiveSession,
    kind: &str,
    detail: serde_json::Value,
) -> Result<u64, crate::audit::AuditError> {
    audit.append(Event::in_session(kind, &session.id, &session.identity, &session.target, detail))
}

/// Records a session event that does not stop the session if it is lost.
fn record(audit: &AuditLog, session: &LiveSession, kind: &str, detail: serde_json::Value) {
    if let Err(error) = append(audit, session, kind, detail) {
        tracing::error!(%error, kind, session = %session.id, "audit record lost");
    }
}
