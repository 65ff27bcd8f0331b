//! The startup handshake: TLS and GSS requests, cancel requests, and the
//! login (the client's own on observe targets; a just-in-time one made by
//! Airlock otherwise), up to the first message of the session proper.

use std::sync::Arc;

use bytes::BytesMut;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use super::{
    ProxyError, STARTUP_TIMEOUT, Shared, append, auth,
    codec::{self, ErrorFields, StartupPacket},
    record,
    stream::FrameReader,
    tls::{self, Stream},
};
use crate::{credentials::Lease, daemon::sessions::LiveSession};

pub(super) enum Handshake {
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

pub(super) async fn startup(
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
                                let hint = "Your client asked for TLS and Airlock could not open it to the server \
                                            for you; tell the server's administrators, or connect with \
                                            sslmode=disable where the network allows.";
                                send_error(client, &ErrorFields::fatal("08001", &message, Some(hint))).await?;
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
                        let hint = "Airlock makes a database login for each person from the target's credentials; \
                                    tell this host's administrators (the postgres.startup audit record has the cause).";
                        send_error(client, &ErrorFields::fatal("08004", &message, Some(hint))).await?;
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
                        let hint = "The target's policy says how Airlock reaches the server over TLS ([target.credentials] \
                                    tls); tell the policy's owners or the server's administrators.";
                        send_error(client, &ErrorFields::fatal("08001", &message, Some(hint))).await?;
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
