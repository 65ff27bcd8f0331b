//! A small HTTP/1.1 client for the agent's few outbound calls (OpenBao,
//! OIDC issuers, approval webhooks): one request per connection, JSON
//! bodies, `https://` with the system's trusted roots (rustls), or plain
//! `http://` to this host only (a local OpenBao or identity provider):
//! these calls carry tokens, credentials and signing keys, which no network
//! may read or rewrite.
//!
//! Spoken directly rather than through an HTTP stack: the exchanges are
//! fixed and small, and every byte the agent links is a byte to audit.

use std::{
    net::IpAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use rustls_pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
};

/// Largest response accepted.
const MAX_RESPONSE: u64 = 1 << 20;

/// Why a call failed. Never carries the URL's path or query, which may
/// hold a secret (a webhook token, say).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not one this client speaks.
    #[error("unsupported URL: {0}")]
    BadUrl(&'static str),
    /// A CA file could not be used.
    #[error("CA file {path}: {message}")]
    BadCa {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// Connecting, TLS or the exchange failed.
    #[error("{host}: {message}")]
    Exchange {
        /// `host:port`.
        host: String,
        /// What went wrong.
        message: String,
    },
}

/// A parsed `http://` or `https://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

impl Url {
    /// Parses `scheme://host[:port][/path]`; IPv6 hosts in brackets.
    pub fn parse(text: &str) -> Result<Self, HttpError> {
        let (tls, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(HttpError::BadUrl("only http:// and https:// are spoken"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(HttpError::BadUrl("credentials in the URL are not supported"));
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                (host, port.parse().map_err(|_| HttpError::BadUrl("the port is not a number"))?)
            }
            _ => (authority, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || path.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err(HttpError::BadUrl("no host, or spaces in the path"));
        }
        let local = host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !tls && !local {
            return Err(HttpError::BadUrl(
                "plain http:// is spoken only to this host (a loopback address); use https://",
            ));
        }
        Ok(Self { tls, host: host.to_owned(), port, path: path.to_owned() })
    }

    /// `host:port`, safe to log.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// This URL with `path` (starting with `/`) appended to its own path.
    pub fn join(&self, path: &str) -> Self {
        Self { path: format!("{}{path}", self.path.trim_end_matches('/')), ..self.clone() }
    }
}

/// A response: status and body (chunked transfer decoded).
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// Whom `https://` servers must be vouched for by.
#[derive(Clone)]
pub struct Roots(Arc<rustls::ClientConfig>);

impl Roots {
    /// The system's trusted roots, loaded once.
    pub fn system() -> Self {
        Self(system_config())
    }

    /// Only the CA certificates in a PEM file (a private CA, e.g. OpenBao's).
    pub fn from_pem_file(path: &std::path::Path) -> Result<Self, HttpError> {
        use rustls_pki_types::{CertificateDer, pem::PemObject as _};
        let fail = |message: String| HttpError::BadCa { path: path.display().to_string(), message };
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| fail(e.to_string()))?;
        for cert in certs {
            roots.add(cert.map_err(|e| fail(e.to_string()))?).map_err(|e| fail(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(fail("no certificates in it".into()));
        }
        Ok(Self(config_with(roots)))
    }
}

/// Sends one request and reads the whole response within `timeout`,
/// checking `https://` servers against the system's trusted roots.
pub async fn request(
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    request_with(&Roots::system(), method, url, headers, body, timeout).await
}

/// [`request`] with the roots given.
pub async fn request_with(
    roots: &Roots,
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let fail = |message: String| HttpError::Exchange { host: url.authority(), message };
    let mut head = format!("{method} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", url.path, url.authority());
    for (name, value) in headers {
        if value.contains(['\r', '\n']) || name.contains(['\r', '\n', ':']) {
            return Err(fail(format!("header {name} has a line break")));
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or_default();
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let exchange = async {
        let tcp = TcpStream::connect((url.host.as_str(), url.port)).await?;
        tcp.set_nodelay(true)?;
        if url.tls {
            let name = ServerName::try_from(url.host.clone()).map_err(std::io::Error::other)?;
            let tls = tokio_rustls::TlsConnector::from(Arc::clone(&roots.0)).connect(name, tcp).await?;
            send(tls, head.as_bytes(), body).await
        } else {
            send(tcp, head.as_bytes(), body).await
        }
    };
    let raw = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| fail(format!("no answer within {timeout:?}")))?
        .map_err(|e| fail(e.to_string()))?;
    parse_response(&raw).ok_or_else(|| fail("malformed HTTP answer".into()))
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, head: &[u8], body: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(head).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    let mut response = Vec::new();
    match stream.take(MAX_RESPONSE).read_to_end(&mut response).await {
        Ok(_) => Ok(response),
        // Servers often close TLS without close_notify after a complete answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => Ok(response),
        Err(e) => Err(e),
    }
}

/// rustls with the system's trusted roots, loaded once.
fn system_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "could not load a system root certificate");
        }
        roots.add_parsable_certificates(found.certs);
        config_with(roots)
    }))
}

fn config_with(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
            .unwrap_or_else(|_| unreachable!("ring supports the default protocol versions")),
    )
}

/// Status code and body (chunked transfer decoded) of an HTTP/1.1 answer.
pub fn parse_response(response: &[u8]) -> Option<Response> {
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..split]).ok()?;
    let body = &response[split + 4..];
    let status: u16 = head.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Some(Response { status, body: body.to_vec() });
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(Response { status, body: out });
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let url = Url::parse("https://hooks.example.com/services/T0/B0/secret").unwrap();
        assert_eq!(url.authority(), "hooks.example.com:443");
        assert_eq!(url.path, "/services/T0/B0/secret");
        let url = Url::parse("http://127.0.0.1:8200").unwrap();
        assert_eq!((url.authority().as_str(), url.path.as_str()), ("127.0.0.1:8200", "/"));
        assert_eq!(url.join("/v1/sys/health").path, "/v1/sys/health");
        assert_eq!(Url::parse("http://[::1]:9/x").unwrap().authority(), "[::1]:9");
        assert!(Url::parse("ftp://x").is_err());
        assert!(Url::parse("http://user:pw@x/").is_err());
        assert!(Url::parse("http://x:abc/").is_err());
        assert!(Url::parse("http://127.0.0.1/a b").is_err());
        assert!(Url::parse("http://localhost:8080/hook").is_ok());
        assert!(Url::parse("http://127.8.9.10/").is_ok());
        for off_host in
            ["http://hooks.example.com/T/B/x", "http://10.0.0.1:8200", "http://[fd00::1]/", "http://0.0.0.0/"]
        {
            let error = Url::parse(off_host).unwrap_err().to_string();
            assert!(error.contains("only to this host"), "{off_host}: {error}");
        }
        assert!(Url::parse("https://10.0.0.1:8200").is_ok());
    }

    #[test]
    fn plain_and_chunked_answers() {
        let plain = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!((plain.status, plain.body.as_slice()), (200, &b"{}"[..]));
        let chunked =
            parse_response(b"HTTP/1.1 204 No\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                .unwrap();
        assert_eq!((chunked.status, chunked.body.as_slice()), (204, &b"abcde"[..]));
        assert!(parse_response(b"garbage").is_none());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_none());
    }

    #[tokio::test]
    async fn a_request_reaches_a_loopback_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = vec![0u8; 4096];
            let n = socket.read(&mut seen).await.unwrap();
            socket.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok").await.unwrap();
            String::from_utf8_lossy(&seen[..n]).into_owned()
        });
        let url = Url::parse(&format!("http://127.0.0.1:{port}/hook")).unwrap();
        let response =
            request("POST", &url, &[("Content-Type", "application/json")], Some(b"{\"a\":1}"), Duration::from_secs(5))
                .await
                .unwrap();
        assert_eq!((response.status, response.body.as_slice()), (201, &b"ok"[..]));
        let seen = server.await.unwrap();
        assert!(seen.starts_with("POST /hook HTTP/1.1\r\n"), "{seen}");
        assert!(seen.ends_with("Content-Length: 7\r\n\r\n{\"a\":1}"), "{seen}");
    }
}
