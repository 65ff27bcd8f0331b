//! The host key that signs audit checkpoints (ed25519, ring).
//!
//! A checkpoint signs the sequence number and hash of the record before
//! it, and so, through the hash chain, every record up to there. The
//! private key stays root-only in the state directory; the public key is
//! written beside the log (`audit-signing.pub`, hex) and printed by
//! `airlock audit pubkey` for verifiers to keep elsewhere.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use ring::{
    rand::SystemRandom,
    signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey},
};

use crate::hex;

/// File name of the public key beside the log.
pub const PUBLIC_KEY_FILE: &str = "audit-signing.pub";

/// Why the key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the key file failed.
    #[error("audit signing key {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Signs checkpoints.
pub struct Signer {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("public_key", &self.public_key_hex()).finish()
    }
}

impl Signer {
    /// Loads the key at `path` (PKCS#8), creating it (mode 0600) on first use.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let fail = |message: String| KeyError::File { path: path.to_owned(), message };
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|_| fail("could not generate a key".into()))?;
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
                }
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| fail(e.to_string()))?;
                file.write_all(document.as_ref()).and_then(|()| file.sync_all()).map_err(|e| fail(e.to_string()))?;
                document.as_ref().to_vec()
            }
            Err(e) => return Err(fail(e.to_string())),
        };
        let pair = Ed25519KeyPair::from_pkcs8(&bytes).map_err(|_| fail("not an ed25519 PKCS#8 key".into()))?;
        Ok(Self { pair })
    }

    /// The public key, hex.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.pair.public_key().as_ref())
    }

    /// Short id of the key, for records: the first 8 bytes of the public key, hex.
    pub fn key_id(&self) -> String {
        self.public_key_hex()[..16].to_owned()
    }

    /// Signature (hex) of a checkpoint over record `seq` with hash `hash`.
    pub fn sign(&self, seq: u64, hash: &str) -> String {
        hex::encode(self.pair.sign(checkpoint_message(seq, hash).as_bytes()).as_ref())
    }
}

/// What a checkpoint signs.
fn checkpoint_message(seq: u64, hash: &str) -> String {
    format!("airlock-audit-checkpoint:{seq}:{hash}")
}

/// Whether `signature` (hex) is `public_key`'s (hex) over record `seq` with `hash`.
pub fn verify(public_key: &str, seq: u64, hash: &str, signature: &str) -> bool {
    let (Some(key), Some(signature)) = (hex::decode(public_key), hex::decode(signature)) else { return false };
    UnparsedPublicKey::new(&ED25519, key).verify(checkpoint_message(seq, hash).as_bytes(), &signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_what_was_signed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/audit-signing.key");
        let signer = Signer::load_or_create(&path).unwrap();
        let again = Signer::load_or_create(&path).unwrap();
        assert_eq!(signer.public_key_hex(), again.public_key_hex(), "the key persists");
        let hash = "ab".repeat(32);
        let signature = signer.sign(41, &hash);
        assert!(verify(&signer.public_key_hex(), 41, &hash, &signature));
        assert!(!verify(&signer.public_key_hex(), 42, &hash, &signature));
        assert!(!verify(&signer.public_key_hex(), 41, &"cd".repeat(32), &signature));
        let other = Signer::load_or_create(&dir.path().join("other.key")).unwrap();
        assert!(!verify(&other.public_key_hex(), 41, &hash, &signature));
        assert!(!verify("zz", 41, &hash, &signature));
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
