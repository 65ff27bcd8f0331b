//! OpenBao (or Vault) as the credential source: `MOUNT/creds/ROLE` hands out
//! a database login with a lease; Airlock revokes the lease when the session
//! ends, and OpenBao drops the login.
//!
//! The HTTP exchange is small and fixed (two JSON calls), so it is spoken
//! directly over a TCP connection rather than through an HTTP stack.

use std::{path::PathBuf, time::Duration};

use serde_json::Value;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use super::{CredentialError, Secret, read_private_file};

/// How long one call to OpenBao may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response accepted.
const MAX_RESPONSE: u64 = 1 << 20;

/// An OpenBao database secrets engine.
#[derive(Clone, Debug)]
pub struct OpenBao {
    /// `http://host:port`.
    pub addr: String,
    /// Root-only token file.
    pub token_file: PathBuf,
    /// Engine mount path.
    pub mount: String,
}

/// A login OpenBao issued.
pub struct Issued {
    /// Lease to revoke when done.
    pub lease_id: String,
    /// Lease length.
    pub lease_duration: Duration,
    /// Database user.
    pub username: String,
    /// Its password.
    pub password: Secret,
}

impl OpenBao {
    fn error(&self, message: String) -> CredentialError {
        CredentialError::OpenBao { addr: self.addr.clone(), message }
    }

    /// Reads a login for `role`.
    pub async fn issue(&self, role: &str) -> Result<Issued, CredentialError> {
        let body = self.call("GET", &format!("/v1/{}/creds/{role}", self.mount), None).await?;
        let text = |value: &Value| value.as_str().map(str::to_owned);
        let (Some(lease_id), Some(username), Some(password)) =
            (text(&body["lease_id"]), text(&body["data"]["username"]), text(&body["data"]["password"]))
        else {
            return Err(self.error(format!("no login in the answer for role {role:?}")));
        };
        Ok(Issued {
            lease_id,
            lease_duration: Duration::from_secs(body["lease_duration"].as_u64().unwrap_or(0)),
            username,
            password: Secret(password),
        })
    }

    /// Revokes a lease now (OpenBao drops the login).
    pub async fn revoke(&self, lease_id: &str) -> Result<(), CredentialError> {
        let body = serde_json::json!({ "lease_id": lease_id });
        self.call("PUT", "/v1/sys/leases/revoke", Some(&body)).await.map(drop)
    }

    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, CredentialError> {
        let token = read_private_file(&self.token_file)?;
        let host = self
            .addr
            .strip_prefix("http://")
            .ok_or_else(|| {
                self.error("only http:// addresses are spoken so far (use a local agent or proxy for TLS)".into())
            })?
            .trim_end_matches('/');
        let payload = body.map(Value::to_string).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nX-Vault-Token: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
            token.trim(),
            payload.len()
        );
        let exchange = async {
            let mut stream = TcpStream::connect(host).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut response = Vec::new();
            stream.take(MAX_RESPONSE).read_to_end(&mut response).await?;
            Ok::<_, std::io::Error>(response)
        };
        let response = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| self.error(format!("{method} {path}: no answer within {TIMEOUT:?}")))?
            .map_err(|e| self.error(format!("{method} {path}: {e}")))?;
        let (status, body) =
            parse_response(&response).ok_or_else(|| self.error(format!("{method} {path}: malformed HTTP answer")))?;
        let json: Value =
            if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap_or(Value::Null) };
        if !(200..300).contains(&status) {
            let errors =
                json["errors"].as_array().map(|e| e.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "));
            return Err(self.error(format!("{method} {path}: HTTP {status}: {}", errors.unwrap_or_default())));
        }
        Ok(json)
    }
}

/// Status code and body (chunked transfer decoded) of an HTTP/1.1 answer.
fn parse_response(response: &[u8]) -> Option<(u16, Vec<u8>)> {
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..split]).ok()?;
    let body = &response[split + 4..];
    let status: u16 = head.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Some((status, body.to_vec()));
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some((status, out));
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_chunked_answers() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain), Some((200, b"{}".to_vec())));
        let chunked =
            b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Some((403, b"{\"a\":1}".to_vec())));
        assert_eq!(parse_response(b"garbage"), None);
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), None);
    }
}
