//! TLS from Airlock to a target it logs in to (rustls), negotiated the
//! PostgreSQL way: SSLRequest, then a handshake if the server says `S`.

use std::{io, net::SocketAddr, sync::Arc};

use rustls::{
    ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject as _};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

use crate::policy::UpstreamTls;

/// SSLRequest: length 8, code 80877103.
pub const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 4, 210, 22, 47];

/// Why TLS to the target could not be set up as policy asks.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The server has no TLS and policy requires it.
    #[error("the server does not offer TLS, and policy requires it")]
    NotOffered,
    /// The CA file could not be used.
    #[error("TLS CA file {path}: {message}")]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The handshake failed (certificate not trusted, wrong name, …).
    #[error("TLS handshake with the server failed: {0}")]
    Handshake(io::Error),
    /// Socket error during negotiation.
    #[error(transparent)]
    Io(#[from] io::Error),
}

pub use crate::proxy::stream::Stream;

/// Negotiates TLS on `stream` as `mode` says.
pub async fn secure(mut stream: TcpStream, mode: &UpstreamTls, server: SocketAddr) -> Result<Stream, TlsError> {
    if *mode == UpstreamTls::Disable {
        return Ok(Stream::Plain(stream));
    }
    stream.write_all(&SSL_REQUEST).await?;
    match stream.read_u8().await? {
        b'S' => {}
        _ if *mode == UpstreamTls::Prefer => return Ok(Stream::Plain(stream)),
        _ => return Err(TlsError::NotOffered),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Handshake(io::Error::other(e)))?;
    let (config, name) = match mode {
        UpstreamTls::VerifyFull { ca_file, server_name } => {
            let mut roots = rustls::RootCertStore::empty();
            let ca_error = |message: String| TlsError::CaFile { path: ca_file.clone(), message };
            for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| ca_error(e.to_string()))? {
                roots.add(cert.map_err(|e| ca_error(e.to_string()))?).map_err(|e| ca_error(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(ca_error("no certificates in it".into()));
            }
            let name = match server_name {
                Some(name) => ServerName::try_from(name.clone()).map_err(|e| ca_error(format!("server name: {e}")))?,
                None => ServerName::IpAddress(server.ip().into()),
            };
            (builder.with_root_certificates(roots).with_no_client_auth(), name)
        }
        // Prefer and Require check nothing, as libpq's modes of those names.
        _ => (
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
                .with_no_client_auth(),
            ServerName::IpAddress(server.ip().into()),
        ),
    };
    let tls = TlsConnector::from(Arc::new(config)).connect(name, stream).await.map_err(TlsError::Handshake)?;
    Ok(Stream::Tls(Box::new(tls.into())))
}

/// Certificate "verification" for `require`: encryption without identity.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
