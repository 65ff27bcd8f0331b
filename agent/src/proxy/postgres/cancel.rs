//! Cancel keys. Clients get a BackendKeyData with the server's backend pid
//! (it is also in every NotificationResponse, pg_stat_activity and
//! pg_backend_pid(), and drivers compare them) and a secret key of
//! Airlock's own making: the real key stays with the agent, and a
//! CancelRequest (which arrives on a new, separately intercepted connection)
//! is matched back to the session it names by both before anything reaches
//! a server.

use std::{collections::HashMap, net::SocketAddr, sync::Mutex};

/// A server backend a client may cancel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendKey {
    /// The server.
    pub server: SocketAddr,
    /// The server's backend process id.
    pub pid: u32,
    /// The server's secret key.
    pub key: u32,
    /// The Airlock session the backend serves.
    pub session: String,
}

/// Live sessions' cancel keys, shared by all connections.
#[derive(Debug, Default)]
pub struct CancelKeys {
    keys: Mutex<HashMap<(u32, u32), BackendKey>>,
}

impl CancelKeys {
    /// Registers `backend` and returns the (pid, key) pair to give the
    /// client: the backend's own pid, a new key.
    pub fn issue(&self, backend: BackendKey) -> (u32, u32) {
        let mut keys = self.lock();
        let pid = backend.pid;
        loop {
            let mut bytes = [0u8; 4];
            // Without randomness keys would be guessable; the OS not having
            // any is not a state to run in.
            getrandom::fill(&mut bytes).expect("the OS random source failed");
            let key = u32::from_be_bytes(bytes);
            if key == backend.key {
                continue;
            }
            if let std::collections::hash_map::Entry::Vacant(slot) = keys.entry((pid, key)) {
                slot.insert(backend);
                return (pid, key);
            }
        }
    }

    /// The backend a client's (pid, key) stands for.
    pub fn lookup(&self, pid: u32, key: u32) -> Option<BackendKey> {
        self.lock().get(&(pid, key)).cloned()
    }

    /// Forgets a key when its session ends.
    pub fn forget(&self, pid: u32, key: u32) {
        self.lock().remove(&(pid, key));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u32, u32), BackendKey>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_keys_map_back_until_forgotten() {
        let keys = CancelKeys::default();
        let backend = BackendKey { server: "10.0.0.1:5432".parse().unwrap(), pid: 4242, key: 99, session: "s1".into() };
        let (pid, key) = keys.issue(backend.clone());
        assert_eq!(pid, 4242, "the client sees the backend's pid, as notifications show it");
        assert_ne!(key, 99, "the client never sees the server's key");
        assert_eq!(keys.lookup(pid, key), Some(backend));
        assert_eq!(keys.lookup(pid, key.wrapping_add(1)), None);
        keys.forget(pid, key);
        assert_eq!(keys.lookup(pid, key), None);
    }
}
