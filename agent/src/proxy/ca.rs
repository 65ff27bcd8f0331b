//! Airlock's host CA, for terminating the TLS that clients ask for.
//!
//! Where Airlock must read a session (a target it logs in to on the person's
//! behalf), it cannot pass the client's TLS through; it answers the TLS
//! request itself with a certificate for the name the client asked for (SNI)
//! and the address it dialled, signed by a CA made on first start and kept
//! in the state directory. IT installs that CA (`airlock ca`) where clients
//! look for trusted roots, so `sslmode=verify-full` works unchanged.

use std::{
    collections::HashMap,
    fs,
    io::Write as _,
    net::IpAddr,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rustls::{
    ServerConfig,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// Subject of the CA certificate; also how the issuer is rebuilt on load.
const CA_NAME: &str = "Airlock host CA";
/// File of the CA certificate inside the CA directory.
pub const CA_CERT_FILE: &str = "host-ca.crt";
/// File of the CA private key inside the CA directory.
pub const CA_KEY_FILE: &str = "host-ca.key";
/// Leaves kept made; past it the cache starts over.
const MAX_LEAVES: usize = 4096;

/// Why the CA is not usable.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file could not be read or written.
    #[error("host CA {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("host CA: {0}")]
    Certificate(String),
}

/// The CA and the leaf certificates it has made.
pub struct HostCa {
    issuer: Issuer<'static, KeyPair>,
    cert_path: PathBuf,
    leaves: Mutex<HashMap<(String, IpAddr), Arc<CertifiedKey>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl std::fmt::Debug for HostCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostCa").field("cert_path", &self.cert_path).finish_non_exhaustive()
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

fn cert_error(error: impl std::fmt::Display) -> CaError {
    CaError::Certificate(error.to_string())
}

impl HostCa {
    /// Loads the CA from `dir`, making it (key readable by root only) on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, CaError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CaError::Io { path, source }
        };
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
        let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        let key = if key_path.exists() {
            KeyPair::from_pem(&fs::read_to_string(&key_path).map_err(io(&key_path))?).map_err(cert_error)?
        } else {
            let key = KeyPair::generate().map_err(cert_error)?;
            let cert = ca_params().self_signed(&key).map_err(cert_error)?;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key_path)
                .map_err(io(&key_path))?;
            file.write_all(key.serialize_pem().as_bytes()).map_err(io(&key_path))?;
            fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
            key
        };
        if !cert_path.exists() {
            fs::write(&cert_path, ca_params().self_signed(&key).map_err(cert_error)?.pem()).map_err(io(&cert_path))?;
        }
        Ok(Self {
            issuer: Issuer::new(ca_params(), key),
            cert_path,
            leaves: Mutex::new(HashMap::new()),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }

    /// Where the CA certificate is, for IT to install.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// A TLS acceptor for a client that dialled `destination`.
    pub fn acceptor(self: &Arc<Self>, destination: IpAddr) -> Result<TlsAcceptor, CaError> {
        self.acceptor_with_alpn(destination, &[])
    }

    /// [`HostCa::acceptor`] offering these ALPN protocols, in preference order.
    pub fn acceptor_with_alpn(self: &Arc<Self>, destination: IpAddr, alpn: &[&[u8]]) -> Result<TlsAcceptor, CaError> {
        let resolver = Arc::new(LeafResolver { ca: Arc::clone(self), destination });
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(cert_error)?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// The leaf for `name` (SNI, or the address) and `destination`, made once.
    fn leaf(&self, name: &str, destination: IpAddr) -> Result<Arc<CertifiedKey>, CaError> {
        let key = (name.to_owned(), destination);
        if let Some(leaf) = self.leaves.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(Arc::clone(leaf));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = vec![SanType::IpAddress(destination)];
        if name.parse::<IpAddr>().is_err() {
            params.subject_alt_names.push(SanType::DnsName(name.try_into().map_err(cert_error)?));
        }
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(90);
        let leaf_key = KeyPair::generate().map_err(cert_error)?;
        let cert = params.signed_by(&leaf_key, &self.issuer).map_err(cert_error)?;
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let signing = self.provider.key_provider.load_private_key(private).map_err(cert_error)?;
        let leaf = Arc::new(CertifiedKey::new(vec![CertificateDer::from(cert.der().to_vec())], signing));
        let mut leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
        // Names come from clients: the cache stays bounded whatever they ask.
        if leaves.len() >= MAX_LEAVES {
            leaves.clear();
        }
        leaves.insert(key, Arc::clone(&leaf));
        Ok(leaf)
    }
}

#[derive(Debug)]
struct LeafResolver {
    ca: Arc<HostCa>,
    destination: IpAddr,
}

impl ResolvesServerCert for LeafResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map_or_else(|| self.destination.to_string(), str::to_owned);
        match self.ca.leaf(&name, self.destination) {
            Ok(leaf) => Some(leaf),
            Err(error) => {
                tracing::error!(%error, name, "no certificate for a TLS client");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_made_once_and_its_key_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let ca = HostCa::load_or_create(dir.path()).unwrap();
        let pem = fs::read_to_string(ca.cert_path()).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let key_mode = fs::metadata(dir.path().join(CA_KEY_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(key_mode, 0o600);
        let again = HostCa::load_or_create(dir.path()).unwrap();
        assert_eq!(fs::read_to_string(again.cert_path()).unwrap(), pem, "the CA survives restarts");
        let leaf = ca.leaf("prod-db.internal", "10.0.0.5".parse().unwrap()).unwrap();
        assert_eq!(leaf.cert.len(), 1);
        assert!(Arc::ptr_eq(&leaf, &ca.leaf("prod-db.internal", "10.0.0.5".parse().unwrap()).unwrap()), "cached");
    }
}
