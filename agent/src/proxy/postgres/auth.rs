//! Logging in upstream with a just-in-time credential: SCRAM-SHA-256, with
//! MD5 and cleartext for old or oddly configured servers.

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::io::AsyncWriteExt as _;

use super::{
    ProxyError,
    codec::{Backend, CodecError, ErrorFields, Frame},
    stream::{FrameReader, Incoming},
    tls::Stream,
};
use crate::credentials::Lease;

/// What to do when the server will not take the logins Airlock makes.
const UNSUPPORTED_METHOD_HINT: &str = "Just-in-time logins need the server to accept scram-sha-256 or md5 \
     password authentication for Airlock's roles (pg_hba.conf); tell the server's administrators.";

const AUTH_OK: u32 = 0;
const AUTH_CLEARTEXT: u32 = 3;
const AUTH_MD5: u32 = 5;
const AUTH_SASL: u32 = 10;
const AUTH_SASL_CONTINUE: u32 = 11;
const AUTH_SASL_FINAL: u32 = 12;
const SCRAM: &str = "SCRAM-SHA-256";

/// How the server answered the login.
pub enum Login {
    /// Logged in. Frames the server sent after AuthenticationOk are left in
    /// the reader.
    Ok,
    /// The server refused; this error is for the client.
    Refused(ErrorFields),
}

/// Answers the server's authentication requests as `lease.role`.
pub async fn login(upstream: &mut Stream, reader: &mut FrameReader, lease: &Lease) -> Result<Login, ProxyError> {
    let mut scram: Option<ScramSha256> = None;
    loop {
        let frame = next_frame(upstream, reader).await?;
        if frame.tag == b'E' {
            return match Backend::parse(&frame) {
                Ok(Backend::Error(fields)) => Ok(Login::Refused(fields)),
                _ => Err(malformed(CodecError::Truncated("ErrorResponse"))),
            };
        }
        if frame.tag != b'R' {
            return Err(malformed(CodecError::Truncated("Authentication")));
        }
        let mut body = frame.body.clone();
        if body.remaining() < 4 {
            return Err(malformed(CodecError::Truncated("Authentication")));
        }
        let response = match body.get_u32() {
            AUTH_OK => return Ok(Login::Ok),
            AUTH_CLEARTEXT => password_message(lease.password.expose().as_bytes()),
            AUTH_MD5 => {
                if body.remaining() < 4 {
                    return Err(malformed(CodecError::Truncated("AuthenticationMD5Password")));
                }
                let salt = [body.get_u8(), body.get_u8(), body.get_u8(), body.get_u8()];
                let hash = postgres_protocol::authentication::md5_hash(
                    lease.role.as_bytes(),
                    lease.password.expose().as_bytes(),
                    salt,
                );
                password_message(hash.as_bytes())
            }
            AUTH_SASL => {
                let offered = String::from_utf8_lossy(&body);
                if !offered.split('\0').any(|m| m == SCRAM) {
                    return Ok(Login::Refused(ErrorFields::fatal(
                        "28000",
                        &format!("airlock: the server offers no {SCRAM} ({offered:?})"),
                        Some(UNSUPPORTED_METHOD_HINT),
                    )));
                }
                let client = ScramSha256::new(lease.password.expose().as_bytes(), ChannelBinding::unsupported());
                let mut out = BytesMut::new();
                out.put_slice(SCRAM.as_bytes());
                out.put_u8(0);
                out.put_u32(client.message().len() as u32);
                out.put_slice(client.message());
                scram = Some(client);
                Frame { tag: b'p', body: out.freeze() }
            }
            AUTH_SASL_CONTINUE => {
                let client = scram.as_mut().ok_or_else(|| malformed(CodecError::Truncated("SASL exchange")))?;
                client.update(&body).map_err(|e| sasl_failure(&e))?;
                Frame { tag: b'p', body: Bytes::copy_from_slice(client.message()) }
            }
            AUTH_SASL_FINAL => {
                let client = scram.as_mut().ok_or_else(|| malformed(CodecError::Truncated("SASL exchange")))?;
                client.finish(&body).map_err(|e| sasl_failure(&e))?;
                continue;
            }
            other => {
                let message =
                    format!("airlock: the server asks for authentication method {other}, which Airlock does not speak");
                return Ok(Login::Refused(ErrorFields::fatal("28000", &message, Some(UNSUPPORTED_METHOD_HINT))));
            }
        };
        let mut out = BytesMut::new();
        response.encode(&mut out);
        upstream.write_all(&out).await?;
        upstream.flush().await?;
    }
}

async fn next_frame(upstream: &mut Stream, reader: &mut FrameReader) -> Result<Frame, ProxyError> {
    match reader.next_one(upstream, "server").await? {
        Some(Incoming::Frames(mut batch)) if !batch.frames.is_empty() => Ok(batch.frames.remove(0)),
        Some(_) | None => Err(malformed(CodecError::Truncated("Authentication"))),
    }
}

fn password_message(password: &[u8]) -> Frame {
    let mut body = BytesMut::with_capacity(password.len() + 1);
    body.put_slice(password);
    body.put_u8(0);
    Frame { tag: b'p', body: body.freeze() }
}

fn malformed(error: CodecError) -> ProxyError {
    ProxyError::Protocol { side: "server", error }
}

/// A server whose SCRAM proof does not check out is not the server the
/// password was set on: refuse, as the server's side would.
fn sasl_failure(error: &std::io::Error) -> ProxyError {
    ProxyError::Io(std::io::Error::other(format!("SCRAM exchange with the server failed: {error}")))
}
