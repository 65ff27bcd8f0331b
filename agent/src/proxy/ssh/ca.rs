//! Airlock's SSH certificate authorities.
//!
//! Two ed25519 CAs are made on first start and kept in `state_dir/ssh`
//! (keys root-only): the host CA signs the host certificate Airlock shows
//! clients for the host they dialled, so that one `@cert-authority` line in
//! `ssh_known_hosts` makes every protected host verify; the user CA signs
//! the short-lived certificate of each session's fresh key, which targets
//! trust through `TrustedUserCAKeys`. The same directory keeps the host
//! keys of targets as first seen ([`SshCa::pinned_host_keys`]).
//!
//! The user CA rotates (`credentials::rotation`): its next key is first
//! published beside the current one in `user-ca.pub`, for targets to
//! trust, while the current one goes on signing; when the grace period
//! ends the next key signs and the old one is no longer published.

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
/// The user CA's next key, while a rotation publishes it.
const USER_CA_NEXT_KEY_FILE: &str = "user-ca.next";
/// Public halves, for IT to install.
pub const HOST_CA_PUB_FILE: &str = "host-ca.pub";
/// The user CA's public keys, the targets' `TrustedUserCAKeys`: the
/// current one, and during a rotation the next one.
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
    /// Replaced when a rotation's next key takes over.
    user: std::sync::RwLock<PrivateKey>,
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

/// Writes a private key root-only: to a new file, synced, renamed into place.
fn write_private(path: &Path, key: &PrivateKey) -> Result<(), SshCaError> {
    let io = |source| SshCaError::Io { path: path.to_owned(), source };
    let pem = key.to_openssh(LineEnding::LF)?;
    let temporary = path.with_extension("tmp");
    let mut file =
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary).map_err(io)?;
    file.write_all(pem.as_bytes()).and_then(|()| file.sync_all()).map_err(io)?;
    fs::rename(&temporary, path).map_err(io)
}

/// Public keys are for everyone to read.
fn set_public(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
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
        let load = |key_file: &str, comment: &str| -> Result<PrivateKey, SshCaError> {
            let key_path = dir.join(key_file);
            if key_path.exists() {
                return Ok(PrivateKey::from_openssh(fs::read_to_string(&key_path).map_err(io(&key_path))?)?);
            }
            let key = new_key(comment)?;
            write_private(&key_path, &key)?;
            Ok(key)
        };
        let host = load(HOST_CA_KEY_FILE, "airlock-host-ca")?;
        let host_pub = dir.join(HOST_CA_PUB_FILE);
        // Public halves are rewritten each start so they always match the keys.
        fs::write(&host_pub, format!("{}\n", host.public_key().to_openssh()?)).map_err(io(&host_pub))?;
        let ca = Self {
            host,
            user: std::sync::RwLock::new(load(USER_CA_KEY_FILE, "airlock-user-ca")?),
            dir: dir.to_owned(),
            host_certs: Mutex::new(HashMap::new()),
        };
        ca.publish_user_keys()?;
        Ok(ca)
    }

    /// Makes the user CA's next key (or finds the one an interrupted
    /// rotation made) and publishes it beside the current one. Returns the
    /// next key's fingerprint.
    pub fn publish_next_user_key(&self) -> Result<String, SshCaError> {
        let path = self.dir.join(USER_CA_NEXT_KEY_FILE);
        let next = match fs::read_to_string(&path) {
            Ok(pem) => PrivateKey::from_openssh(pem)?,
            Err(_) => {
                let key = new_key("airlock-user-ca")?;
                write_private(&path, &key)?;
                key
            }
        };
        self.publish_user_keys()?;
        Ok(next.public_key().fingerprint(Default::default()).to_string())
    }

    /// The next key becomes the signing one (a rename, then the key in
    /// memory), and the old one is no longer published. Without a next
    /// key (an interrupted call got that far) only the published file is
    /// brought in line.
    pub fn promote_next_user_key(&self) -> Result<(), SshCaError> {
        let (next, current) = (self.dir.join(USER_CA_NEXT_KEY_FILE), self.dir.join(USER_CA_KEY_FILE));
        if next.exists() {
            fs::rename(&next, &current).map_err(|source| SshCaError::Io { path: current.clone(), source })?;
        }
        let key = PrivateKey::from_openssh(
            fs::read_to_string(&current).map_err(|source| SshCaError::Io { path: current.clone(), source })?,
        )?;
        *self.user.write().unwrap_or_else(|p| p.into_inner()) = key;
        self.publish_user_keys()
    }

    /// Fingerprints of the user CA's signing key and, during a rotation,
    /// its next key.
    pub fn user_key_fingerprints(&self) -> (String, Option<String>) {
        let current = self.user.read().unwrap_or_else(|p| p.into_inner()).public_key().fingerprint(Default::default());
        let next = fs::read_to_string(self.dir.join(USER_CA_NEXT_KEY_FILE))
            .ok()
            .and_then(|pem| PrivateKey::from_openssh(pem).ok())
            .map(|key| key.public_key().fingerprint(Default::default()).to_string());
        (current.to_string(), next)
    }

    /// Writes `user-ca.pub`: the signing key, and the next one if a
    /// rotation has made it.
    fn publish_user_keys(&self) -> Result<(), SshCaError> {
        let mut text = format!("{}\n", self.user_ca_public()?);
        if let Ok(pem) = fs::read_to_string(self.dir.join(USER_CA_NEXT_KEY_FILE)) {
            text.push_str(&format!("{}\n", PrivateKey::from_openssh(pem)?.public_key().to_openssh()?));
        }
        let path = self.dir.join(USER_CA_PUB_FILE);
        let temporary = self.dir.join(format!(".{USER_CA_PUB_FILE}.tmp"));
        let io = |source| SshCaError::Io { path: path.clone(), source };
        fs::write(&temporary, text).map_err(io)?;
        set_public(&temporary).map_err(io)?;
        fs::rename(&temporary, &path).map_err(io)
    }

    /// The `ssh_known_hosts` line that makes clients trust every host certificate of the host CA.
    pub fn known_hosts_line(&self) -> Result<String, SshCaError> {
        Ok(format!("@cert-authority * {}", self.host.public_key().to_openssh()?))
    }

    /// The user CA's signing key in OpenSSH form, for targets' `TrustedUserCAKeys`.
    pub fn user_ca_public(&self) -> Result<String, SshCaError> {
        Ok(self.user.read().unwrap_or_else(|p| p.into_inner()).public_key().to_openssh()?)
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
        let certificate = builder.sign(&*self.user.read().unwrap_or_else(|p| p.into_inner()))?;
        Ok(CertifiedKey { key, certificate })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_user_key_is_published_beside_the_current_one_until_it_signs() {
        let dir = tempfile::tempdir().unwrap();
        let ca = SshCa::load_or_create(dir.path()).unwrap();
        let old = ca.user_ca_public().unwrap();
        let next = ca.publish_next_user_key().unwrap();
        assert_eq!(ca.publish_next_user_key().unwrap(), next, "an interrupted rotation finds its key again");
        let published = fs::read_to_string(dir.path().join(USER_CA_PUB_FILE)).unwrap();
        assert_eq!(published.lines().count(), 2, "{published}");
        assert_eq!(published.lines().next().unwrap(), old);
        // The old key signs until the switch; a restart keeps both published.
        let signer = |ca: &SshCa| {
            let cert = ca.user_certificate("deploy", Duration::from_secs(60), "t").unwrap().certificate;
            cert.signature_key().fingerprint(Default::default()).to_string()
        };
        let (current, pending) = ca.user_key_fingerprints();
        assert_eq!((signer(&ca), pending.as_deref()), (current.clone(), Some(next.as_str())));
        let restarted = SshCa::load_or_create(dir.path()).unwrap();
        assert_eq!(fs::read_to_string(dir.path().join(USER_CA_PUB_FILE)).unwrap(), published);
        restarted.promote_next_user_key().unwrap();
        assert_eq!(signer(&restarted), next);
        assert_eq!(restarted.user_key_fingerprints(), (next.clone(), None));
        let published = fs::read_to_string(dir.path().join(USER_CA_PUB_FILE)).unwrap();
        assert_eq!(published.lines().collect::<Vec<_>>(), [restarted.user_ca_public().unwrap()]);
        assert!(!published.contains(&old));
        restarted.promote_next_user_key().unwrap();
        assert_eq!(signer(&restarted), next, "promoting again changes nothing");
    }

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
        let published = fs::read_to_string(dir.path().join(USER_CA_PUB_FILE)).unwrap();
        assert_eq!(published, format!("{}\n", ca.user_ca_public().unwrap()));
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
        let fingerprint = ca.user.read().unwrap().public_key().fingerprint(Default::default());
        cert.validate([&fingerprint]).unwrap();

        let names = vec!["10.0.0.5".to_owned(), "web-1".to_owned()];
        let host = ca.host_certificate(&names).unwrap();
        assert_eq!(host.certificate.cert_type(), CertType::Host);
        assert_eq!(host.certificate.valid_principals(), names.as_slice());
        host.certificate.validate([&ca.host.public_key().fingerprint(Default::default())]).unwrap();
        assert!(Arc::ptr_eq(&host, &ca.host_certificate(&names).unwrap()), "cached");
    }
}
