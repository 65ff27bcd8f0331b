//! `airlock-bench bare-proxy LISTEN CERT KEY TARGET CA`: the HTTPS bench's
//! floor. The crates and settings Airlock's HTTPS proxy is built on (tokio
//! on one thread, rustls with ring, hyper's auto server with upgrades,
//! hyper's pooled client over TLS, mimalloc) forwarding every request to
//! TARGET with a bearer token set, and nothing of Airlock: no interception,
//! identity, policy, scrubbing, masking or records. What this costs per
//! request is what Airlock cannot go below without leaving these crates.

use std::{net::SocketAddr, path::Path, sync::Arc};

use http_body_util::combinators::BoxBody;
use hyper::{Request, Response, body::Incoming, header};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};

type Body = BoxBody<bytes::Bytes, hyper::Error>;

pub fn serve(args: &[String]) {
    let [listen, cert, key, target, ca] = args else {
        panic!("usage: airlock-bench bare-proxy LISTEN CERT KEY TARGET CA");
    };
    let listen: SocketAddr = listen.parse().expect("LISTEN address");
    let target: SocketAddr = target.parse().expect("TARGET address");
    let server = Arc::new(server_tls(Path::new(cert), Path::new(key)));
    let client = client(target, Path::new(ca));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let (server, client) = (Arc::clone(&server), client.clone());
            tokio::spawn(async move {
                let Ok(stream) = tokio_rustls::TlsAcceptor::from(server).accept(stream).await else { return };
                let service = hyper::service::service_fn(move |request| forward(client.clone(), target, request));
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await;
            });
        }
    });
}

type Upstream = Client<connector::TlsConnector, Incoming>;

async fn forward(
    client: Upstream,
    target: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Body>, hyper::Error> {
    use http_body_util::BodyExt as _;
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = format!("https://{target}{path}").parse().expect("upstream uri");
    parts.version = hyper::Version::HTTP_11;
    parts.headers.remove(header::HOST);
    parts.headers.insert(header::AUTHORIZATION, header::HeaderValue::from_static("Bearer bench-token"));
    match client.request(Request::from_parts(parts, body)).await {
        Ok(response) => Ok(response.map(|body| body.boxed())),
        Err(_) => {
            let empty = http_body_util::Empty::new().map_err(|never| match never {}).boxed();
            Ok(Response::builder().status(502).body(empty).expect("response"))
        }
    }
}

fn server_tls(cert: &Path, key: &Path) -> rustls::ServerConfig {
    let chain: Vec<_> = CertificateDer::pem_file_iter(cert).expect("cert").map(|c| c.expect("cert")).collect();
    let key = PrivateKeyDer::from_pem_file(key).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server cert");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

fn client(target: SocketAddr, ca: &Path) -> Upstream {
    let roots = airlock::http::Roots::from_pem_file(ca).expect("target CA");
    let mut config = rustls::ClientConfig::clone(roots.config());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::from(target.ip());
    let connector = connector::TlsConnector { config: Arc::new(config), name };
    let mut builder = Client::builder(TokioExecutor::new());
    builder.pool_max_idle_per_host(32);
    builder.build(connector)
}

/// A TLS connector for hyper's client from tokio-rustls (what Airlock's own
/// connector does, less the session's fixed destination).
mod connector {
    use std::{future::Future, pin::Pin, sync::Arc, task::Poll};

    use hyper::Uri;
    use hyper_util::{
        client::legacy::connect::{Connected, Connection},
        rt::TokioIo,
    };
    use rustls_pki_types::ServerName;
    use tokio::net::TcpStream;

    #[derive(Clone)]
    pub struct TlsConnector {
        pub config: Arc<rustls::ClientConfig>,
        pub name: ServerName<'static>,
    }

    pub struct Tls(pub TokioIo<tokio_rustls::client::TlsStream<TcpStream>>);

    impl Connection for Tls {
        fn connected(&self) -> Connected {
            Connected::new()
        }
    }

    impl hyper::rt::Read for Tls {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: hyper::rt::ReadBufCursor<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
        }
    }

    impl hyper::rt::Write for Tls {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().0).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
        }
    }

    impl tower_service::Service<Uri> for TlsConnector {
        type Response = Tls;
        type Error = std::io::Error;
        type Future = Pin<Box<dyn Future<Output = Result<Tls, std::io::Error>> + Send>>;

        fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), std::io::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, uri: Uri) -> Self::Future {
            let (config, name) = (Arc::clone(&self.config), self.name.clone());
            Box::pin(async move {
                let authority = uri.authority().map(|a| a.as_str().to_owned()).unwrap_or_default();
                let tcp = TcpStream::connect(authority).await?;
                tcp.set_nodelay(true)?;
                let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
                Ok(Tls(TokioIo::new(tls)))
            })
        }
    }
}
