//! Airlock's SSH certificate authorities.
//!
//! Two ed25519 CAs are made on first start and kept in `state_dir/ssh`
//! (keys root-only): the host CA signs the host certificate Airlock shows
//! clients for the host they dialled, so that one `@cert-authority` line in
//! `ssh_known_hosts` makes every protected host verify; the user CA signs
//! the short-lived certificate of each session's fresh key, which targets
//! trust through `TrustedUserCAKeys`. The same directory keeps the host
//! keys of targets as first seen ([`SshCa::pinned_host_keys`]).

use std::{
    collections::HashMap,
    fs,
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use russh::keys::ssh_key::{
    self, Certificate, LineEnding, PrivateKey,
    certificate::{Builder, CertType},
    private::Ed25519Keypair,
};

/// Host CA private key, inside the CA directory.
pub const HOST_CA_KEY_FILE: &str = "host-ca";
/// User CA private key, inside the CA directory.
pub const USER_CA_KEY_FILE: &str = "user-ca";
/// Public halves, for IT to install.
pub const HOST_CA_PUB_FILE: &str = "host-ca.pub";
/// The user CA's public key, the target's `TrustedUserCAKeys`.
pub const USER_CA_PUB_FILE: &str = "user-ca.pub";

/// Host certificates are made per session's host and live this long; they
/// are kept in memory only and remade after a restart.
const HOST_CERT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// Clock skew between this host and targets that a fresh certificate tolerates.
const BACKDATE: Duration = Duration::from_secs(60);

/// Why the SSH CAs are not usable.
#[derive(Debug, thiserror::Error)]
pub enum SshCaError {
    /// A file could not be read or written.
    #[error("SSH CA {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A key could not be parsed, made or used to sign.
    #[error("SSH CA: {0}")]
    Key(#[from] ssh_key::Error),
    /// No randomness for a key or nonce.
    #[error("SSH CA: no randomness: {0}")]
    Random(String),
}

/// A key and the certificate for it.
#[derive(Clone, Debug)]
pub struct CertifiedKey {
    /// The private key.
    pub key: PrivateKey,
    /// Its certificate.
    pub certificate: Certificate,
}

/// The host and user CAs.
pub struct SshCa {
    host: PrivateKey,
    user: PrivateKey,
    dir: PathBuf,
    host_certs: Mutex<HashMap<Vec<String>, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for SshCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshCa").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn random<const N: usize>() -> Result<[u8; N], SshCaError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| SshCaError::Random(e.to_string()))?;
    Ok(bytes)
}

/// A new ed25519 key.
pub fn new_key(comment: &str) -> Result<PrivateKey, SshCaError> {
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&random::<32>()?));
    key.set_comment(comment);
    Ok(key)
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl SshCa {
    /// The known_hosts file of target host keys Airlock learned at its
    /// first connection to each target, for targets whose policy names no
    /// known_hosts file of its own: a later, different key is refused.
    pub fn pinned_host_keys(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// Loads both CAs from `dir`, making them (keys readable by root only) on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, SshCaError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| SshCaError::Io { path, source }
        };
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
        let load = |key_file: &str, pub_file: &str, comment: &str| -> Result<PrivateKey, SshCaError> {
            let (key_path, pub_path) = (dir.join(key_file), dir.join(pub_file));
            let key = if key_path.exists() {
                PrivateKey::from_openssh(fs::read_to_string(&key_path).map_err(io(&key_path))?)?
            } else {
                let key = new_key(comment)?;
                let pem = key.to_openssh(LineEnding::LF)?;
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&key_path)
                    .map_err(io(&key_path))?;
                file.write_all(pem.as_bytes()).map_err(io(&key_path))?;
                key
            };
            // The public half is rewritten each start so it always matches the key.
            fs::write(&pub_path, format!("{}\n", key.public_key().to_openssh()?)).map_err(io(&pub_path))?;
            Ok(key)
        };
        Ok(Self {
            host: load(HOST_CA_KEY_FILE, HOST_CA_PUB_FILE, "airlock-host-ca")?,
            user: load(USER_CA_KEY_FILE, USER_CA_PUB_FILE, "airlock-user-ca")?,
            dir: dir.to_owned(),
            host_certs: Mutex::new(HashMap::new()),
        })
    }

    /// The `ssh_known_hosts` line that makes clients trust every host certificate of the host CA.
    pub fn known_hosts_line(&self) -> Result<String, SshCaError> {
        Ok(format!("@cert-authority * {}", self.host.public_key().to_openssh()?))
    }

    /// The user CA's public key in OpenSSH form, for targets' `TrustedUserCAKeys`.
    pub fn user_ca_public(&self) -> Result<String, SshCaError> {
        Ok(self.user.public_key().to_openssh()?)
    }

    /// A host key and certificate for `names` (addresses and host names), made once per set of names.
    pub fn host_certificate(&self, names: &[String]) -> Result<Arc<CertifiedKey>, SshCaError> {
        if let Some(cert) = self.host_certs.lock().unwrap_or_else(|p| p.into_inner()).get(names) {
            return Ok(Arc::clone(cert));
        }
        let key = new_key("airlock-host")?;
        let now = SystemTime::now();
        let mut builder = Builder::new(
            random::<32>()?.to_vec(),
            key.public_key().key_data().clone(),
            unix(now - BACKDATE),
            unix(now + HOST_CERT_LIFETIME),
        )?;
        builder.cert_type(CertType::Host)?.key_id(format!("airlock host {}", names.join(",")))?;
        for name in names {
            builder.valid_principal(name.clone())?;
        }
        let certificate = builder.sign(&self.host)?;
        let certified = Arc::new(CertifiedKey { key, certificate });
        self.host_certs.lock().unwrap_or_else(|p| p.into_inner()).insert(names.to_vec(), Arc::clone(&certified));
        Ok(certified)
    }

    /// A fresh key and a user certificate for `principal`, valid for `ttl`;
    /// `key_id` names the person and session (targets log it).
    pub fn user_certificate(&self, principal: &str, ttl: Duration, key_id: &str) -> Result<CertifiedKey, SshCaError> {
        let key = new_key("airlock-session")?;
        let now = SystemTime::now();
        let mut builder = Builder::new(
            random::<32>()?.to_vec(),
            key.public_key().key_data().clone(),
            unix(now - BACKDATE),
            unix(now + ttl),
        )?;
        builder
            .serial(u64::from_be_bytes(random::<8>()?))?
            .cert_type(CertType::User)?
            .key_id(key_id)?
            .valid_principal(principal)?;
        // What an interactive login needs; agent and X11 forwarding are not
        // granted, so the target refuses them even if asked.
        for extension in ["permit-pty", "permit-port-forwarding"] {
            builder.extension(extension, "")?;
        }
        let certificate = builder.sign(&self.user)?;
        Ok(CertifiedKey { key, certificate })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_are_made_once_with_private_keys() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let ca = SshCa::load_or_create(dir.path()).unwrap();
        for key in [HOST_CA_KEY_FILE, USER_CA_KEY_FILE] {
            let mode = fs::metadata(dir.path().join(key)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{key}");
        }
        let again = SshCa::load_or_create(dir.path()).unwrap();
        assert_eq!(again.known_hosts_line().unwrap(), ca.known_hosts_line().unwrap(), "survives restarts");
        assert_ne!(ca.user_ca_public().unwrap(), ca.host.public_key().to_openssh().unwrap());
        assert!(ca.known_hosts_line().unwrap().starts_with("@cert-authority * ssh-ed25519 "));
    }

    #[test]
    fn certificates_are_signed_for_their_principals_and_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let ca = SshCa::load_or_create(dir.path()).unwrap();
        let user = ca.user_certificate("deploy", Duration::from_secs(120), "alice session s1").unwrap();
        let cert = &user.certificate;
        assert_eq!(cert.cert_type(), CertType::User);
        assert_eq!(cert.valid_principals(), ["deploy".to_owned()]);
        assert_eq!(cert.public_key(), user.key.public_key().key_data());
        assert_eq!(cert.valid_before() - cert.valid_after(), 120 + BACKDATE.as_secs());
        let fingerprint = ca.user.public_key().fingerprint(Default::default());
        cert.validate([&fingerprint]).unwrap();

        let names = vec!["10.0.0.5".to_owned(), "web-1".to_owned()];
        let host = ca.host_certificate(&names).unwrap();
        assert_eq!(host.certificate.cert_type(), CertType::Host);
        assert_eq!(host.certificate.valid_principals(), names.as_slice());
        host.certificate.validate([&ca.host.public_key().fingerprint(Default::default())]).unwrap();
        assert!(Arc::ptr_eq(&host, &ca.host_certificate(&names).unwrap()), "cached");
    }
}
