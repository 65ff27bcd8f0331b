//! Cancel keys. Clients get a BackendKeyData of Airlock's own making, never
//! the server's: the real backend pid and key stay with the agent, and a
//! CancelRequest (which arrives on a new, separately intercepted connection)
//! is matched back to the session it names before anything reaches a server.

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
    /// Registers `backend` and returns the (pid, key) pair to give the client.
    pub fn issue(&self, backend: BackendKey) -> (u32, u32) {
        let mut keys = self.lock();
        loop {
            let mut bytes = [0u8; 8];
            // Without randomness keys would be guessable; the OS not having
            // any is not a state to run in.
            getrandom::fill(&mut bytes).expect("the OS random source failed");
            let pid = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) & 0x7fff_ffff;
            let key = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
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
        assert_ne!((pid, key), (4242, 99), "the client never sees the server's key");
        assert!(pid <= i32::MAX as u32, "a pid the client can print");
        assert_eq!(keys.lookup(pid, key), Some(backend));
        assert_eq!(keys.lookup(pid, key.wrapping_add(1)), None);
        keys.forget(pid, key);
        assert_eq!(keys.lookup(pid, key), None);
    }
}
