//! The HTTP client for the agent's few outbound calls (OpenBao, OIDC
//! issuers, approval webhooks): one request per connection, JSON bodies,
//! `https://` with the system's trusted roots (rustls), or plain `http://`
//! to this host only (a local OpenBao or identity provider): these calls
//! carry tokens, credentials and signing keys, which no network may read or
//! rewrite.
//!
//! HTTP/1.1 is spoken by hyper, so framing is strict: a body shorter than
//! its Content-Length, a chunked body cut off, a malformed head are errors,
//! never a half-read answer; a body over [`MAX_RESPONSE`] is an error, never
//! cut short; interim 1xx answers are skipped.

use std::{
    net::IpAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

/// Largest response body accepted.
pub const MAX_RESPONSE: usize = 1 << 20;

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

/// A response: status and whole body (chunked transfer decoded).
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

    /// The TLS client settings that check servers against these roots.
    pub fn config(&self) -> &Arc<rustls::ClientConfig> {
        &self.0
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
    let method = hyper::Method::from_bytes(method.as_bytes()).map_err(|_| fail(format!("bad method {method:?}")))?;
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(url.path.as_str())
        .header(hyper::header::HOST, url.authority())
        .header(hyper::header::CONNECTION, "close");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    // The http crate refuses header names and values that would break the
    // head (line breaks); its message names neither value.
    let request = builder
        .body(Full::new(Bytes::copy_from_slice(body.unwrap_or_default())))
        .map_err(|error| fail(format!("request not sent: {error}")))?;
    let exchange = async {
        let tcp = TcpStream::connect((url.host.as_str(), url.port)).await.map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        if url.tls {
            let name = ServerName::try_from(url.host.clone()).map_err(|e| e.to_string())?;
            let tls = tokio_rustls::TlsConnector::from(Arc::clone(&roots.0))
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            exchange(tls, request).await
        } else {
            exchange(tcp, request).await
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| fail(format!("no answer within {timeout:?}")))?
        .map_err(fail)
}

/// One request and its whole response over `stream`.
async fn exchange<S>(stream: S, request: hyper::Request<Full<Bytes>>) -> Result<Response, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| with_causes(&e))?;
    let answer = async move {
        let response = sender.send_request(request).await.map_err(|e| with_causes(&e))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_RESPONSE).collect().await.map_err(|error| {
            if error.is::<http_body_util::LengthLimitError>() {
                format!("the answer is larger than {MAX_RESPONSE} bytes")
            } else {
                with_causes(&*error)
            }
        })?;
        // Dropping the sender lets the connection end.
        Ok(Response { status, body: body.to_bytes().to_vec() })
    };
    let (answer, _connection) = tokio::join!(answer, connection);
    answer
}

/// An error and what caused it: hyper's own message is general ("error
/// reading a body from connection"), its cause says what was wrong.
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
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

    /// Serves `answer` (raw bytes) to one request on loopback, then closes.
    async fn answering(answer: Vec<u8>) -> (Url, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buffer = vec![0u8; 4096];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buffer).await.unwrap();
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buffer[..n]);
            }
            socket.write_all(&answer).await.unwrap();
            socket.shutdown().await.unwrap();
            String::from_utf8_lossy(&seen).into_owned()
        });
        (Url::parse(&format!("http://127.0.0.1:{port}/v1/x")).unwrap(), server)
    }

    async fn get(answer: &[u8]) -> Result<Response, HttpError> {
        let (url, _server) = answering(answer.to_vec()).await;
        request("GET", &url, &[], None, Duration::from_secs(5)).await
    }

    #[tokio::test]
    async fn whole_answers_are_read() {
        let plain = get(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").await.unwrap();
        assert_eq!((plain.status, plain.body.as_slice()), (200, &b"{}"[..]));
        let chunked =
            get(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                .await
                .unwrap();
        assert_eq!((chunked.status, chunked.body.as_slice()), (201, &b"abcde"[..]));
        // Interim answers come before the real one.
        let interim = get(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx").await.unwrap();
        assert_eq!((interim.status, interim.body.as_slice()), (200, &b"x"[..]));
        let until_close = get(b"HTTP/1.1 200 OK\r\n\r\nto the end").await.unwrap();
        assert_eq!(until_close.body, b"to the end");
    }

    #[tokio::test]
    async fn broken_answers_are_errors_not_half_bodies() {
        let too_big =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}", MAX_RESPONSE + 1, "x".repeat(MAX_RESPONSE + 1));
        for (answer, why) in [
            (&b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"[..], "end of file before message length reached"),
            (&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"[..], ""),
            (&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..], ""),
            (&b"garbage\r\n\r\n"[..], ""),
            (&b""[..], ""),
            (too_big.as_bytes(), "larger than"),
        ] {
            let error = get(answer).await.expect_err("an error").to_string();
            assert!(error.starts_with("127.0.0.1:"), "{error}");
            assert!(error.contains(why), "{:?}: {error}", String::from_utf8_lossy(&answer[..answer.len().min(60)]));
        }
    }

    #[tokio::test]
    async fn a_request_reaches_a_loopback_server() {
        let (url, server) = answering(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok".to_vec()).await;
        let response =
            request("POST", &url, &[("Content-Type", "application/json")], Some(b"{\"a\":1}"), Duration::from_secs(5))
                .await
                .unwrap();
        assert_eq!((response.status, response.body.as_slice()), (201, &b"ok"[..]));
        let seen = server.await.unwrap().to_ascii_lowercase();
        assert!(seen.starts_with("post /v1/x http/1.1\r\n"), "{seen}");
        assert!(
            seen.contains("content-length: 7\r\n") && seen.contains("content-type: application/json\r\n"),
            "{seen}"
        );
    }

    #[tokio::test]
    async fn line_breaks_in_headers_are_refused() {
        let url = Url::parse("http://127.0.0.1:9/").unwrap();
        let error = request("GET", &url, &[("X-Token", "a\r\nInjected: yes")], None, Duration::from_secs(5)).await;
        assert!(error.expect_err("refused").to_string().contains("request not sent"));
    }
}
