//! Where each target's live admin login is.
//!
//! The policy names the admin file an operator wrote: the seed. Once a
//! rotation has replaced that login, the live one is kept in the state
//! directory, the one place the agent may write under its systemd
//! hardening (`ProtectSystem=strict`), and the seed stops working when the
//! rotation's grace period ends. Everything that logs in as the admin asks
//! the store, so the switch from one login to the next is a rename.

use std::{
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
};

use super::{AdminLogin, CredentialError};

/// The live admin logins, under `state_dir/admin-logins`.
#[derive(Clone, Debug)]
pub struct AdminStore {
    dir: PathBuf,
}

impl AdminStore {
    /// The store in `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        Self { dir: state_dir.join("admin-logins") }
    }

    /// The file the live login for `seed` is read from: the rotated one
    /// once there is one, else the seed itself.
    pub fn current(&self, seed: &Path) -> PathBuf {
        let rotated = self.rotated_path(seed);
        if rotated.exists() { rotated } else { seed.to_owned() }
    }

    /// The live admin login for `seed`.
    pub fn load(&self, seed: &Path) -> Result<AdminLogin, CredentialError> {
        AdminLogin::load(&self.current(seed))
    }

    /// Where a rotation keeps the login that replaced `seed`.
    pub fn rotated_path(&self, seed: &Path) -> PathBuf {
        self.dir.join(format!("{}.toml", key(seed)))
    }

    /// Where a rotation keeps the next login while it is set up and tested.
    pub(super) fn next_path(&self, seed: &Path) -> PathBuf {
        self.dir.join(format!("{}.next.toml", key(seed)))
    }

    /// Makes the store's directory (root-only).
    pub(super) fn ensure_dir(&self) -> Result<(), CredentialError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| CredentialError::AdminFile { path: self.dir.clone(), message: format!("creating it: {e}") })
    }

    /// The next login becomes the live one: one rename, then the
    /// directory synced, so a crash leaves one or the other.
    pub(super) fn promote_next(&self, seed: &Path) -> Result<(), CredentialError> {
        let (next, live) = (self.next_path(seed), self.rotated_path(seed));
        let fail = |e: std::io::Error| CredentialError::AdminFile { path: live.clone(), message: e.to_string() };
        std::fs::rename(&next, &live).map_err(fail)?;
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(fail)
    }
}

/// A file name for `seed`'s logins: a digest of its path, so two targets
/// naming the same admin file share one live login.
fn key(seed: &Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    let digest = ring::digest::digest(&ring::digest::SHA256, seed.as_os_str().as_bytes());
    crate::hex::encode(&digest.as_ref()[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_is_live_until_a_rotation_promotes_its_successor() {
        let state = tempfile::tempdir().unwrap();
        let store = AdminStore::new(state.path());
        let seed = Path::new("/etc/airlock/credentials/db.toml");
        assert_eq!(store.current(seed), seed);
        store.ensure_dir().unwrap();
        std::fs::write(store.next_path(seed), "user = \"a_alt\"\npassword = \"x\"\n").unwrap();
        assert_eq!(store.current(seed), seed, "a next login is not live before it is promoted");
        store.promote_next(seed).unwrap();
        assert_eq!(store.current(seed), store.rotated_path(seed));
        assert!(!store.next_path(seed).exists());
        let other = Path::new("/etc/airlock/credentials/other.toml");
        assert_ne!(store.rotated_path(seed), store.rotated_path(other));
    }
}
