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
pub mod encoding;
pub mod guard;
pub mod mask;
pub mod reading;
pub mod recorder;
pub mod shapes;
mod statements;
mod stream;
pub(crate) mod tls;

use std::{
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use bytes::BytesMut;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use self::{
    cancel::{BackendKey, CancelKeys},
    codec::{ErrorFields, Frame, StartupPacket},
    guard::{Guard, GuardContext, Screened, Screening},
    recorder::StatementLog,
    statements::StatementTracker,
    stream::{Batch, FrameReader, Incoming, Splice},
    tls::Stream,
};
use crate::{
    audit::{AuditLog, Event, SessionContext},
    credentials::{Engine, Lease},
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
            let masking = match &shared.masking {
                Some(masking) => {
                    let identity = &session.identity;
                    let masker = crate::masking::Masker::new(
                        masking.policy,
                        &identity.user,
                        &identity.groups,
                        Arc::clone(masking.key),
                    );
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
    let (code, message) = match error {
        ProxyError::Protocol { .. } => ("08P01", format!("airlock: {error}")),
        ProxyError::Audit(_) | ProxyError::AuditLost => {
            ("08006", "airlock: the audit log cannot be written; the session was ended".to_owned())
        }
        // admin_shutdown: what PostgreSQL sends when a session is terminated.
        ProxyError::Ended(reason) => ("57P01", format!("airlock: {reason}")),
        ProxyError::Unmaskable(why) => {
            ("42501", format!("airlock: {why}; the session was ended so that unmasked data does not reach you"))
        }
        _ => return,
    };
    let mut out = BytesMut::new();
    ErrorFields::fatal(code, &message, None).to_error_frame().encode(&mut out);
    let _ = client.write_all(&out).await;
}

enum Handshake {
    /// A session started; messages follow.
    Started {
        /// The connection to the server, TLS or not.
        upstream: tls::Stream,
        /// What the server sent after logging in, still to be relayed.
        upstream_reader: FrameReader,
        /// The just-in-time login in use, if any.
        lease: Option<Arc<Lease>>,
        /// The database the session is in.
        database: String,
    },
    /// TLS was negotiated between client and server; the rest is opaque.
    Tls(TcpStream),
    /// The client asked for TLS that Airlock must terminate; the startup
    /// goes on over TLS with the same server connection.
    TerminateTls {
        /// The server connection, untouched so far.
        upstream: TcpStream,
    },
    /// Nothing more to do (a cancel request was forwarded).
    Done,
}

async fn startup(
    client: &mut Stream,
    reader: &mut FrameReader,
    mut upstream: TcpStream,
    server: std::net::SocketAddr,
    shared: &Shared<'_>,
    session: &LiveSession,
) -> Result<Handshake, ProxyError> {
    let audit = shared.audit;
    loop {
        let Some(packet) = reader.startup(client).await? else { return Ok(Handshake::Done) };
        match packet {
            StartupPacket::GssEncRequest => client.write_all(b"N").await?,
            // A just-in-time target must see the StartupMessage to log in
            // for the client, and a guarded one every statement: passing TLS
            // through would blind Airlock, so it terminates TLS itself.
            StartupPacket::SslRequest if shared.inspects() => {
                if matches!(client, Stream::Tls(_)) {
                    // A second SSLRequest inside TLS is a protocol error.
                    client.write_all(b"N").await?;
                    continue;
                }
                client.write_all(b"S").await?;
                return Ok(Handshake::TerminateTls { upstream });
            }
            StartupPacket::SslRequest => {
                let Stream::Plain(_) = client else { return Err(ProxyError::BadSslAnswer(b'S')) };
                upstream.write_all(&tls::SSL_REQUEST).await?;
                let answer = upstream.read_u8().await?;
                client.write_all(&[answer]).await?;
                match answer {
                    b'S' => return Ok(Handshake::Tls(upstream)),
                    b'N' => {}
                    other => return Err(ProxyError::BadSslAnswer(other)),
                }
            }
            StartupPacket::Cancel { pid, key } => {
                // Like PostgreSQL, an unknown key gets no answer: one would
                // help whoever is guessing keys.
                match shared.cancel_keys.lookup(pid, key) {
                    Some(backend) if backend.server == server => {
                        let mut wire = BytesMut::with_capacity(16);
                        wire.extend_from_slice(&16u32.to_be_bytes());
                        wire.extend_from_slice(&80_877_102u32.to_be_bytes());
                        wire.extend_from_slice(&backend.pid.to_be_bytes());
                        wire.extend_from_slice(&backend.key.to_be_bytes());
                        upstream.write_all(&wire).await?;
                        record(audit, session, "postgres.cancel", json!({ "cancelled_session": backend.session }));
                    }
                    _ => record(
                        audit,
                        session,
                        "postgres.cancel_refused",
                        json!({ "reason": "no live session of this target has that cancel key" }),
                    ),
                }
                return Ok(Handshake::Done);
            }
            StartupPacket::Startup(message) => {
                let requested_user = message.get("user").unwrap_or("").to_owned();
                let database = message.get("database").unwrap_or(&requested_user).to_owned();
                let mut detail = json!({
                    "user": requested_user,
                    "database": database,
                    "application_name": message.get("application_name"),
                });
                let mut upstream_reader = FrameReader::default();
                let Some(jit) = &shared.jit else {
                    // The client logs in itself. If it asked for TLS, the
                    // server gets TLS too where it offers it, so the client's
                    // password does not cross the network in the clear.
                    let mut upstream = if matches!(client, Stream::Tls(_)) {
                        match tls::secure(upstream, &crate::policy::UpstreamTls::Prefer, server).await {
                            Ok(upstream) => upstream,
                            Err(error) => {
                                detail["refused"] = json!(error.to_string());
                                append(audit, session, "postgres.startup", detail)?;
                                let message = format!("airlock: {error}");
                                send_error(client, &ErrorFields::fatal("08001", &message, None)).await?;
                                return Ok(Handshake::Done);
                            }
                        }
                    } else {
                        Stream::Plain(upstream)
                    };
                    detail["upstream_tls"] = json!(upstream.is_tls());
                    append(audit, session, "postgres.startup", detail)?;
                    let mut wire = BytesMut::new();
                    message.encode(&mut wire);
                    upstream.write_all(&wire).await?;
                    return Ok(Handshake::Started { upstream, upstream_reader, lease: None, database });
                };
                // The client's own credentials play no part: it is who the
                // kernel says it is, and logs in as what policy grants.
                let subject = session.identity.as_subject();
                let grant = match jit.credentials.grant_for(&requested_user, &subject) {
                    Ok(grant) => grant,
                    Err(reason) => {
                        detail["refused"] = json!(reason);
                        append(audit, session, "postgres.startup", detail)?;
                        let hint = "Ask for the database user your access rules grant (psql -U NAME).";
                        send_error(client, &ErrorFields::fatal("28000", &format!("airlock: {reason}"), Some(hint)))
                            .await?;
                        return Ok(Handshake::Done);
                    }
                };
                let credentials = jit.credentials;
                let lease = match jit.engine.acquire(server, credentials, &session.identity, grant).await {
                    Ok(lease) => lease,
                    Err(error) => {
                        tracing::error!(%error, session = %session.id, "no just-in-time login");
                        detail["refused"] = json!(error.to_string());
                        append(audit, session, "postgres.startup", detail)?;
                        let message = format!("airlock: could not create a login for you: {error}");
                        send_error(client, &ErrorFields::fatal("08004", &message, None)).await?;
                        return Ok(Handshake::Done);
                    }
                };
                let mut params: Vec<(String, String)> =
                    message.params.iter().filter(|(k, _)| k != "user" && k != "database").cloned().collect();
                params.push(("user".into(), lease.role.clone()));
                params.push(("database".into(), database.clone()));
                let mut upstream = match tls::secure(upstream, &credentials.tls, server).await {
                    Ok(upstream) => upstream,
                    Err(error) => {
                        jit.engine.release(&lease);
                        detail["refused"] = json!(error.to_string());
                        append(audit, session, "postgres.startup", detail)?;
                        let message = format!("airlock: {error}");
                        send_error(client, &ErrorFields::fatal("08001", &message, None)).await?;
                        return Ok(Handshake::Done);
                    }
                };
                detail["upstream_tls"] = json!(upstream.is_tls());
                let mut wire = BytesMut::new();
                codec::StartupMessage { params }.encode(&mut wire);
                upstream.write_all(&wire).await?;
                detail["role_granted"] = json!(lease.role);
                detail["grants"] = json!(lease.grants);
                detail["credential_expires"] = json!(humantime::format_rfc3339_seconds(lease.expires).to_string());
                match auth::login(&mut upstream, &mut upstream_reader, &lease).await {
                    Ok(auth::Login::Ok) => {}
                    Ok(auth::Login::Refused(error)) => {
                        jit.engine.release(&lease);
                        detail["refused"] = json!(error.to_string());
                        append(audit, session, "postgres.startup", detail)?;
                        send_error(client, &error).await?;
                        return Ok(Handshake::Done);
                    }
                    Err(error) => {
                        jit.engine.release(&lease);
                        return Err(error);
                    }
                }
                append(audit, session, "postgres.startup", detail)?;
                // AuthenticationOk: the client is in without a password.
                client.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0]).await?;
                client.flush().await?;
                return Ok(Handshake::Started { upstream, upstream_reader, lease: Some(lease), database });
            }
        }
    }
}

async fn send_error(client: &mut Stream, error: &ErrorFields) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    error.to_error_frame().encode(&mut out);
    client.write_all(&out).await?;
    client.flush().await
}

/// Relays frames both ways until either side closes, recording statements.
/// Every write is flushed: a TLS stream (the client's, terminated here, or
/// the server's) may keep records its socket would not take yet, and
/// nothing else would push them out (a COPY cancelled under backpressure
/// left its error and ReadyForQuery in rustls's buffer, the client waiting).
async fn relay_messages(
    client: &mut Stream,
    upstream: &mut tls::Stream,
    server: std::net::SocketAddr,
    (client_reader, upstream_reader): (FrameReader, FrameReader),
    shared: &Shared<'_>,
    session: &LiveSession,
    mut masking: Option<mask::MaskLayer<'_>>,
) -> Result<(), ProxyError> {
    let client_view = std::sync::Mutex::new(mask::ClientView::default());
    let masks = masking.is_some();
    let recorder = shared.statements;
    let me = Arc::new(SessionContext::new(&session.id, &session.identity, &session.target)?);
    let issued = Mutex::new(Vec::new());
    let tracker = Mutex::new(StatementTracker::default());
    let session_reading = Mutex::new(reading::SessionReading::default());
    let guard = shared.guard.as_ref().map(|context| Guard::new(context, session, shared.audit));
    let (mut client_read, client_write) = tokio::io::split(client);
    // Both directions write to the client: replies, and notices of held statements.
    let client_write = tokio::sync::Mutex::new(client_write);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let to_upstream = async {
        let mut reader = client_reader;
        let mut out = Vec::new();
        loop {
            match reader.next(&mut client_read, "client").await? {
                None => {
                    upstream_write.shutdown().await?;
                    return Ok::<_, ProxyError>(());
                }
                Some(Incoming::Frames(Batch { frames, raw })) => {
                    let mut splice = Splice::new(&raw, &mut out);
                    // On guarded targets, what is about to run is recorded first.
                    let mut sent = Vec::new();
                    for frame in &frames {
                        if masks {
                            client_view.lock().unwrap_or_else(|p| p.into_inner()).client_sent(frame)?;
                        }
                        let (runs, screening) = {
                            let mut reading = session_reading.lock().unwrap_or_else(|p| p.into_inner());
                            let now = reading.reading();
                            let runs =
                                tracker.lock().unwrap_or_else(|p| p.into_inner()).client_sent(frame, now.encoding);
                            let (screening, may_change) = match &guard {
                                Some(guard) => {
                                    let (screening, may_change) = guard.screen(frame, now);
                                    (Some((guard, screening)), may_change)
                                }
                                None => (None, false),
                            };
                            reading.client_sent(frame.tag, may_change);
                            (runs, screening)
                        };
                        let screened = match screening {
                            None | Some((_, Screening::Done(Screened::Forward))) => Screened::Forward,
                            Some((_, Screening::Done(replaced))) => replaced,
                            Some((guard, Screening::Held(hold))) => {
                                // What came before goes now; the held statement waits.
                                if !sent.is_empty() {
                                    recorder.record_sent(&me, std::mem::take(&mut sent)).await?;
                                }
                                let before = splice.take_before();
                                session.bytes.to_upstream.fetch_add(before.len() as u64, Ordering::Relaxed);
                                upstream_write.write_all(&before).await?;
                                upstream_write.flush().await?;
                                let mut notice = BytesMut::new();
                                hold.notice.encode(&mut notice);
                                let mut client_write = client_write.lock().await;
                                client_write.write_all(&notice).await?;
                                client_write.flush().await?;
                                drop(client_write);
                                guard.settle(*hold).await
                            }
                        };
                        match screened {
                            Screened::Forward => {
                                if guard.is_some() {
                                    sent.extend(runs);
                                }
                                splice.keep(frame)
                            }
                            Screened::Replace(stand_in) => splice.replace(frame, |out| stand_in.encode(out)),
                        }
                    }
                    if !sent.is_empty() {
                        recorder.record_sent(&me, sent).await?;
                    }
                    let bytes = splice.finish();
                    session.bytes.to_upstream.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    upstream_write.write_all(bytes).await?;
                    upstream_write.flush().await?;
                    out.clear();
                    reader.recycle(frames);
                }
                Some(Incoming::Large { tag, len }) => {
                    let runs = tracker.lock().unwrap_or_else(|p| p.into_inner()).client_sent_large(tag, len);
                    match guard.as_ref().map(|guard| guard.screen_large(tag, len)) {
                        None => reader.forward_large(&mut client_read, &mut upstream_write, tag, len).await?,
                        Some(None) => {
                            if let Some(runs) = runs {
                                recorder.record_sent(&me, vec![runs]).await?;
                            }
                            reader.forward_large(&mut client_read, &mut upstream_write, tag, len).await?
                        }
                        Some(Some(stand_in)) => {
                            reader.forward_large(&mut client_read, &mut tokio::io::sink(), tag, len).await?;
                            stand_in.encode(&mut out);
                            upstream_write.write_all(&out).await?;
                            upstream_write.flush().await?;
                            out.clear();
                        }
                    }
                    session.bytes.to_upstream.fetch_add(len as u64, Ordering::Relaxed);
                }
            }
        }
    };
    let to_client = async {
        let mut reader = upstream_reader;
        let mut out = Vec::new();
        let ending = session.ending.wait();
        tokio::pin!(ending);
        loop {
            let next = tokio::select! {
                biased;
                next = reader.next(&mut upstream_read, "server") => next?,
                reason = &mut ending => return Err(ProxyError::Ended(reason)),
            };
            match next {
                None => {
                    client_write.lock().await.shutdown().await?;
                    return Ok::<_, ProxyError>(());
                }
                Some(Incoming::Frames(Batch { frames, raw })) => {
                    let mut finished = Vec::new();
                    let mut splice = Splice::new(&raw, &mut out);
                    for original in &frames {
                        if reading::SessionReading::follows(original.tag) {
                            session_reading.lock().unwrap_or_else(|p| p.into_inner()).server_sent(original);
                        }
                        let refusal = guard.as_ref().and_then(|guard| guard.rewrite_error(original));
                        let frame = refusal.as_ref().unwrap_or(original);
                        let masked = match masking.as_mut() {
                            Some(layer) => {
                                if let Some(columns) = layer.observe(frame, &client_view)? {
                                    layer.describe(&columns).await?;
                                }
                                layer.mask(frame)?
                            }
                            None => mask::Masked::Unchanged,
                        };
                        let message = match &masked {
                            mask::Masked::Message(message) => Some(message),
                            _ => None,
                        };
                        let frame = message.unwrap_or(frame);
                        if StatementTracker::follows(frame.tag) {
                            let before = finished.len();
                            tracker.lock().unwrap_or_else(|p| p.into_inner()).server_sent(frame, &mut finished);
                            if let (Some(record), Some(layer)) =
                                (finished[before..].iter_mut().rev().find(|r| r.executed), masking.as_mut())
                            {
                                record.masked = layer.take_counts();
                            }
                        }
                        let ours = own_backend_key(frame, server, shared.cancel_keys, session).map(|(ours, key)| {
                            issued.lock().unwrap_or_else(|p| p.into_inner()).push(key);
                            ours
                        });
                        match (ours.as_ref().or(message).or(refusal.as_ref()), &masked, masking.as_mut()) {
                            (Some(replacement), ..) => splice.replace(original, |out| replacement.encode(out)),
                            (None, mask::Masked::Row, Some(layer)) => {
                                splice.rewrite(original, |prefix, out| layer.write_row(original, prefix, out))?
                            }
                            _ => splice.keep(original),
                        }
                    }
                    let bytes = splice.finish();
                    session.bytes.to_client.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    let mut client_write = client_write.lock().await;
                    client_write.write_all(bytes).await?;
                    client_write.flush().await?;
                    drop(client_write);
                    out.clear();
                    reader.recycle(frames);
                    if !finished.is_empty() {
                        recorder.record(&me, finished)?;
                    }
                }
                Some(Incoming::Large { tag, len }) => {
                    if masks && matches!(tag, b'D' | b'd' | b'E' | b'N' | b'A') {
                        return Err(ProxyError::Unmaskable(format!("a {len}-byte message is too large to mask")));
                    }
                    let mut client_write = client_write.lock().await;
                    reader.forward_large(&mut upstream_read, &mut *client_write, tag, len).await?;
                    session.bytes.to_client.fetch_add(len as u64, Ordering::Relaxed);
                }
            }
        }
    };
    let result = tokio::try_join!(to_upstream, to_client).map(|_| ());
    for (pid, key) in issued.into_inner().unwrap_or_else(|p| p.into_inner()) {
        shared.cancel_keys.forget(pid, key);
    }
    let unfinished = tracker.lock().unwrap_or_else(|p| p.into_inner()).unfinished();
    let recorded = match recorder.record(&me, unfinished) {
        Ok(()) => recorder.flush().await,
        Err(error) => Err(error),
    };
    result.and(recorded)
}

/// Replaces the server's BackendKeyData with one of Airlock's own. Every
/// row of every result passes here: the test of its type is all they cost.
#[inline]
fn own_backend_key(
    frame: &Frame,
    server: std::net::SocketAddr,
    keys: &CancelKeys,
    session: &LiveSession,
) -> Option<(Frame, (u32, u32))> {
    if frame.tag != b'K' {
        return None;
    }
    issue_backend_key(frame, server, keys, session)
}

/// [`own_backend_key`] for a BackendKeyData, once a session.
#[cold]
fn issue_backend_key(
    frame: &Frame,
    server: std::net::SocketAddr,
    keys: &CancelKeys,
    session: &LiveSession,
) -> Option<(Frame, (u32, u32))> {
    let codec::Backend::KeyData { pid, key } = codec::Backend::parse(frame).ok()? else { return None };
    let (our_pid, our_key) = keys.issue(BackendKey { server, pid, key, session: session.id.clone() });
    let mut body = BytesMut::with_capacity(8);
    body.extend_from_slice(&our_pid.to_be_bytes());
    body.extend_from_slice(&our_key.to_be_bytes());
    Some((Frame { tag: b'K', body: body.freeze() }, (our_pid, our_key)))
}

/// Refuses a PostgreSQL client with a FATAL error it will print: answers
/// its TLS or GSS request with "not supported" first, so the error arrives
/// in plain text, then waits for the StartupMessage.
pub async fn refuse(mut client: TcpStream, error: ErrorFields) {
    let exchange = async {
        let mut reader = FrameReader::default();
        loop {
            match reader.startup(&mut client).await {
                Ok(Some(StartupPacket::SslRequest | StartupPacket::GssEncRequest)) => client.write_all(b"N").await?,
                Ok(Some(StartupPacket::Startup(_))) => {
                    let mut out = BytesMut::new();
                    error.to_error_frame().encode(&mut out);
                    client.write_all(&out).await?;
                    return client.shutdown().await;
                }
                Ok(Some(StartupPacket::Cancel { .. }) | None) | Err(_) => return Ok(()),
            }
        }
    };
    if let Ok(Err(error)) = tokio::time::timeout(STARTUP_TIMEOUT, exchange).await {
        tracing::debug!(%error, "could not deliver the refusal");
    }
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
