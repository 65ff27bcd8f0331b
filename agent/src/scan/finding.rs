//! What a scan reports: a finding names the file, its owner, the rule and
//! line, and a fingerprint of the secret — never the secret. The
//! fingerprint is HMAC-SHA-256 under a host-local key only root can read:
//! an unkeyed hash of a weak password could be reversed by guessing, a
//! keyed one cannot be without the key, yet the same secret found twice
//! (two files, two sweeps) has the same fingerprint.

use std::{
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// File name of the fingerprint key, in `state_dir/scan/` (root) or the
/// caller's `~/.local/state/airlock/` (anyone else).
pub const KEY_FILE: &str = "fingerprint.key";

/// Hex digits of a fingerprint (128 bits).
const FINGERPRINT_HEX: usize = 32;

/// The key fingerprints are made with.
pub struct FingerprintKey([u8; 32]);

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FingerprintKey(***)")
    }
}

/// Why the fingerprint key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading, creating or checking the key file failed.
    #[error("fingerprint key {}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a key this code wrote.
    #[error("fingerprint key {}: not 32 bytes (remove it to make a new one; earlier fingerprints change)", path.display())]
    Malformed {
        /// The key file.
        path: PathBuf,
    },
    /// Others may read it: fingerprints would be guessable.
    #[error("fingerprint key {}: mode {mode:o} lets others read it (chmod 600)", path.display())]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
}

impl FingerprintKey {
    /// The key in `dir/fingerprint.key`, made (mode 0600, the directory 0700)
    /// if it does not exist yet.
    pub fn load_or_create(dir: &Path) -> Result<Self, KeyError> {
        let path = dir.join(KEY_FILE);
        let io = |source| KeyError::Io { path: path.clone(), source };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let mode = std::fs::metadata(&path).map_err(io)?.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(KeyError::Exposed { path, mode });
                }
                let key: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Malformed { path: path.clone() })?;
                Ok(Self(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|source| KeyError::Io { path: dir.to_owned(), source })?;
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| io(std::io::Error::other(e.to_string())))?;
                let temporary = dir.join(format!(".{KEY_FILE}.{}", std::process::id()));
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&temporary)
                    .map_err(|source| KeyError::Io { path: temporary.clone(), source })?;
                file.write_all(&key).and_then(|()| file.sync_all()).map_err(io)?;
                // A hard link fails if another process made the key first: then use theirs.
                let linked = std::fs::hard_link(&temporary, &path);
                let _ = std::fs::remove_file(&temporary);
                match linked {
                    Ok(()) => Ok(Self(key)),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load_or_create(dir),
                    Err(source) => Err(KeyError::Io { path, source }),
                }
            }
            Err(source) => Err(io(source)),
        }
    }

    /// A key held in memory only (fuzzing, tests): fingerprints are not
    /// comparable with any other run's.
    pub fn ephemeral() -> Self {
        let mut key = [0u8; 32];
        // Without randomness the key is zero: still keyed, only not secret.
        let _ = getrandom::fill(&mut key);
        Self(key)
    }

    /// The fingerprint of `secret`: 32 hex digits. A secret spanning lines
    /// (a key block) is taken without its whitespace, so rewrapping it
    /// does not change it.
    pub fn fingerprint(&self, secret: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        if secret.contains(&b'\n') {
            for chunk in secret.split(u8::is_ascii_whitespace) {
                mac.update(chunk);
            }
        } else {
            mac.update(secret);
        }
        let digest = mac.finalize().into_bytes();
        let mut text = crate::hex::encode(&digest);
        text.truncate(FINGERPRINT_HEX);
        text
    }
}

/// A secret found on the host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Keyed hash of the secret ([`FingerprintKey::fingerprint`]).
    pub fingerprint: String,
    /// The file.
    pub path: String,
    /// Owner uid.
    pub uid: u32,
    /// Owner's user name, when the account exists.
    pub owner: Option<String>,
    /// Rule id: a gitleaks rule's, or `airlock-…`.
    pub rule: String,
    /// What the rule finds.
    pub description: String,
    /// Line the secret starts on (1-based; 0 for a rule that matches a file by its name).
    pub line: usize,
    /// Private keys: whether a passphrase protects it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub encrypted: Option<bool>,
    /// Protected targets this secret reaches directly, bypassing
    /// just-in-time access; it should be removed.
    #[serde(rename = "protected_target", skip_serializing_if = "Vec::is_empty", default)]
    pub protected_targets: Vec<String>,
    /// When a sweep first found it (RFC 3339; a one-off scan: now).
    pub first_seen: String,
    /// When a sweep last found it.
    pub last_seen: String,
}

impl Finding {
    /// The key a sweep tracks it by: the same secret in the same file under the same rule.
    pub fn identity(&self) -> (String, String, String) {
        (self.path.clone(), self.rule.clone(), self.fingerprint.clone())
    }

    /// Words for the protected-target link, or `None`.
    pub fn bypass_note(&self) -> Option<String> {
        (!self.protected_targets.is_empty())
            .then(|| format!("bypasses just-in-time access to {}: remove it", self.protected_targets.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_made_once_private_and_fingerprints_are_keyed() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("scan");
        let key = FingerprintKey::load_or_create(&state).unwrap();
        let mode = std::fs::metadata(state.join(KEY_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = FingerprintKey::load_or_create(&state).unwrap();
        let print = key.fingerprint(b"hunter2");
        assert_eq!(print, again.fingerprint(b"hunter2"));
        assert_eq!(print.len(), 32);
        assert_ne!(print, FingerprintKey::ephemeral().fingerprint(b"hunter2"), "another key, another fingerprint");
        assert_ne!(print, crate::hex::encode(&<Sha256 as sha2::Digest>::digest(b"hunter2"))[..32]);
        assert_eq!(key.fingerprint(b"-----A\nBC\n-----"), key.fingerprint(b"-----A\r\nB\nC\n-----"));
        std::fs::set_permissions(state.join(KEY_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(FingerprintKey::load_or_create(&state), Err(KeyError::Exposed { .. })));
        std::fs::write(state.join(KEY_FILE), b"short").unwrap();
        std::fs::set_permissions(state.join(KEY_FILE), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(FingerprintKey::load_or_create(&state), Err(KeyError::Malformed { .. })));
    }
}
