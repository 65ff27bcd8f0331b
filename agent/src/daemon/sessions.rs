//! Registry of live sessions, for `airlock status` and for closing records at shutdown.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::{audit::TargetRef, identity::Identity, process::ProcessInfo, proxy::relay::ByteCounters};

/// A session in progress.
#[derive(Debug)]
pub struct LiveSession {
    /// Session id, as in audit records.
    pub id: String,
    /// Who.
    pub identity: Identity,
    /// Which process.
    pub process: ProcessInfo,
    /// Where to.
    pub target: TargetRef,
    /// When it started.
    pub started: SystemTime,
    /// Bytes each way so far.
    pub bytes: ByteCounters,
    /// Set when the session must end from outside (its access window closed).
    pub ending: Ending,
}

/// Ends a live session from outside it, with a reason the session tells its client.
#[derive(Debug)]
pub struct Ending(tokio::sync::watch::Sender<Option<String>>);

impl Default for Ending {
    fn default() -> Self {
        Self(tokio::sync::watch::channel(None).0)
    }
}

impl Ending {
    /// Asks the session to end.
    pub fn end(&self, reason: String) {
        self.0.send_replace(Some(reason));
    }

    /// Resolves once the session is asked to end, with the reason.
    pub async fn wait(&self) -> String {
        let mut asked = self.0.subscribe();
        loop {
            if let Some(reason) = asked.borrow_and_update().clone() {
                return reason;
            }
            if asked.changed().await.is_err() {
                // The sender lives as long as the session: nobody can ask any more.
                return std::future::pending().await;
            }
        }
    }
}

/// What `airlock status` shows of a session.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionSummary {
    /// Session id.
    pub id: String,
    /// User name.
    pub user: String,
    /// The actor that made the connection on their behalf, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Unix uid.
    pub uid: u32,
    /// Process id.
    pub pid: u32,
    /// Command name.
    pub comm: String,
    /// Target name.
    pub target: String,
    /// Original destination, `addr:port`.
    pub destination: String,
    /// Seconds since the session started.
    pub age_s: u64,
    /// Client → upstream bytes.
    pub bytes_to_upstream: u64,
    /// Upstream → client bytes.
    pub bytes_to_client: u64,
}

/// All live sessions.
#[derive(Debug)]
pub struct Sessions {
    /// Distinguishes ids across agent restarts.
    prefix: String,
    next: AtomicU64,
    live: Mutex<BTreeMap<String, Arc<LiveSession>>>,
}

impl Default for Sessions {
    fn default() -> Self {
        let started = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Self {
            prefix: format!("{:x}", started.as_millis()),
            next: AtomicU64::new(1),
            live: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Sessions {
    /// A new, unique session id.
    pub fn new_id(&self) -> String {
        format!("{}-{}", self.prefix, self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Registers a session; it leaves the registry when the guard drops.
    pub fn register(self: &Arc<Self>, session: LiveSession) -> SessionGuard {
        let session = Arc::new(session);
        self.lock().insert(session.id.clone(), Arc::clone(&session));
        SessionGuard { sessions: Arc::clone(self), session }
    }

    /// Summaries of the live sessions, optionally only those of one uid.
    pub fn summaries(&self, only_uid: Option<u32>) -> Vec<SessionSummary> {
        let now = SystemTime::now();
        self.lock()
            .values()
            .filter(|s| only_uid.is_none_or(|uid| s.identity.uid == uid))
            .map(|s| SessionSummary {
                id: s.id.clone(),
                user: s.identity.user.clone(),
                actor: s.identity.actor.as_ref().map(|a| a.name.clone()),
                uid: s.identity.uid,
                pid: s.process.pid,
                comm: s.process.comm.clone(),
                target: s.target.name.clone(),
                destination: format!("{}:{}", s.target.addr, s.target.port),
                age_s: now.duration_since(s.started).unwrap_or_default().as_secs(),
                bytes_to_upstream: s.bytes.to_upstream.load(Ordering::Relaxed),
                bytes_to_client: s.bytes.to_client.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// How many sessions are live per (target, protocol).
    pub fn live_by_target(&self) -> Vec<(String, String, u64)> {
        let mut counts: std::collections::BTreeMap<(String, String), u64> = Default::default();
        for session in self.lock().values() {
            *counts.entry((session.target.name.clone(), session.target.protocol.clone())).or_default() += 1;
        }
        counts.into_iter().map(|((target, protocol), n)| (target, protocol, n)).collect()
    }

    /// Asks every live session `select` picks to end; returns how many.
    pub fn end_where(&self, select: impl Fn(&LiveSession) -> bool, reason: &str) -> usize {
        let chosen: Vec<Arc<LiveSession>> = self.lock().values().filter(|s| select(s)).cloned().collect();
        for session in &chosen {
            session.ending.end(reason.to_owned());
        }
        chosen.len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// How many session ids were handed out so far: changes whenever a
    /// connection comes in.
    pub fn opened(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    /// The live sessions themselves.
    pub fn live(&self) -> Vec<Arc<LiveSession>> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<LiveSession>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Keeps a session registered while it lives.
pub struct SessionGuard {
    sessions: Arc<Sessions>,
    session: Arc<LiveSession>,
}

impl SessionGuard {
    /// The registered session.
    pub fn session(&self) -> &LiveSession {
        &self.session
    }

    /// The registered session, for tasks that outlive a borrow (SSH channels).
    pub fn shared(&self) -> Arc<LiveSession> {
        Arc::clone(&self.session)
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.sessions.lock().remove(&self.session.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(sessions: &Sessions, uid: u32) -> LiveSession {
        LiveSession {
            id: sessions.new_id(),
            identity: Identity::unix(&format!("u{uid}"), uid, vec![]),
            process: ProcessInfo { pid: 10 + uid, comm: "psql".into(), ..ProcessInfo::default() },
            target: TargetRef { name: "db".into(), protocol: "postgres".into(), addr: "10.0.0.1".into(), port: 5432 },
            started: SystemTime::now(),
            bytes: ByteCounters::default(),
            ending: Ending::default(),
        }
    }

    #[test]
    fn register_filter_and_drop() {
        let sessions = Arc::new(Sessions::default());
        let a = sessions.register(session(&sessions, 1000));
        let b = sessions.register(session(&sessions, 1001));
        assert_ne!(a.session().id, b.session().id);
        assert_eq!(sessions.summaries(None).len(), 2);
        let mine = sessions.summaries(Some(1001));
        assert_eq!(mine.len(), 1);
        assert_eq!((mine[0].user.as_str(), mine[0].destination.as_str()), ("u1001", "10.0.0.1:5432"));
        drop(b);
        assert_eq!(sessions.summaries(None).len(), 1);
        drop(a);
        assert!(sessions.live().is_empty());
    }

    #[tokio::test]
    async fn sessions_can_be_asked_to_end() {
        let sessions = Arc::new(Sessions::default());
        let a = sessions.register(session(&sessions, 1000));
        let _b = sessions.register(session(&sessions, 1001));
        assert_eq!(sessions.end_where(|s| s.identity.uid == 1000, "access ended"), 1);
        assert_eq!(a.session().ending.wait().await, "access ended");
    }
}
