//! Connections to the target: hyper's pooled client over a connector that
//! always dials the session's destination (whatever the request's host
//! says) and speaks TLS to it with the name and roots policy gives.

use std::{
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use hyper::Uri;

use super::forward::TargetBody;
use hyper_util::{
    client::legacy::{
        Client,
        connect::{Connected, Connection},
    },
    rt::{TokioExecutor, TokioIo},
};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use crate::proxy::stream::Stream;

/// How the target is reached.
#[derive(Clone)]
pub(super) struct Target {
    /// Where every connection goes.
    pub destination: SocketAddr,
    /// TLS with these roots and this name; `None`: plain HTTP.
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// How long a connection may take.
    pub connect_timeout: Duration,
}

/// hyper clients for a session: one for HTTP/2, one HTTP/1.1 only
/// (upgrades — WebSocket, SPDY — exist in HTTP/1.1 alone).
pub(super) struct Clients {
    /// Over TLS, whatever the target prefers (ALPN). Over plain HTTP,
    /// HTTP/2 with prior knowledge (h2c): where no handshake can say what
    /// the target speaks, an HTTP/2 client of a plain target has already
    /// spoken h2c to it (a plaintext gRPC service inside a network).
    pub any: Client<Connector, TargetBody>,
    /// HTTP/1.1.
    pub http1: Client<Connector, TargetBody>,
}

impl Clients {
    /// Clients for `target`; `spare` (the connection made to check the
    /// target is up) is used by the first request.
    pub fn new(target: Target, spare: TcpStream) -> Self {
        let spare = Arc::new(Mutex::new(Some(spare)));
        // The HTTP/1.1-only client offers only http/1.1 in its handshakes.
        let http1_target =
            Target { tls: target.tls.clone().map(|(config, name)| (http1_only(&config), name)), ..target.clone() };
        let build = |target: Target, h2c: bool| {
            let mut builder = Client::builder(TokioExecutor::new());
            builder.pool_idle_timeout(Duration::from_secs(60)).pool_max_idle_per_host(32).http2_only(h2c);
            builder.build(Connector { target, spare: Arc::clone(&spare) })
        };
        let plain = target.tls.is_none();
        Self { http1: build(http1_target, false), any: build(target, plain) }
    }
}

/// Dials the session's destination.
#[derive(Clone)]
pub(super) struct Connector {
    target: Target,
    spare: Arc<Mutex<Option<TcpStream>>>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let spare = self.spare.lock().unwrap_or_else(|p| p.into_inner()).take();
        let target = self.target.clone();
        Box::pin(async move {
            let tcp = match spare {
                Some(tcp) => tcp,
                None => {
                    let connecting = TcpStream::connect(target.destination);
                    let tcp = tokio::time::timeout(target.connect_timeout, connecting).await.map_err(|_| {
                        io::Error::new(io::ErrorKind::TimedOut, format!("connecting to {}", target.destination))
                    })??;
                    tcp.set_nodelay(true)?;
                    tcp
                }
            };
            let Some((config, name)) = target.tls else { return Ok(TokioIo::new(Stream::Plain(tcp))) };
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
            Ok(TokioIo::new(Stream::Tls(Box::new(tls.into()))))
        })
    }
}

/// The same TLS settings offering only HTTP/1.1.
fn http1_only(config: &Arc<rustls::ClientConfig>) -> Arc<rustls::ClientConfig> {
    let mut config = (**config).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// TLS settings for the target: these roots, HTTP/2 and HTTP/1.1 offered.
pub(super) fn tls_config(roots: &crate::http::Roots) -> Arc<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::clone(roots.config());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The name checked in the target's certificate: policy's, else the one
/// the client asked for, else the dialled address.
pub(super) fn server_name(
    configured: Option<&str>,
    asked: Option<&str>,
    destination: IpAddr,
) -> Option<ServerName<'static>> {
    let name = configured.or(asked).map_or_else(|| destination.to_string(), str::to_owned);
    ServerName::try_from(name).ok()
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Self::Tls(tls) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => Connected::new().negotiated_h2(),
            _ => Connected::new(),
        }
    }
}
