//! Login sessions an actor with `taint_session` ran in, kept in the
//! agent's state directory so a restarted agent still treats them as the
//! actor's: restarting the agent must not be a way out.
//!
//! Audit session ids start again at each boot, so the file carries the
//! boot it belongs to and is ignored after a reboot; sessions with no
//! process left are dropped when it is read.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// Where the kernel says which boot this is.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// Tainted sessions remembered at most; the oldest (lowest ids: the
/// kernel numbers sessions in order) are forgotten first.
const MAX_SESSIONS: usize = 16_384;

/// An actor ran in a login session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taint {
    /// The actor.
    pub actor: String,
    /// When it first ran there (RFC 3339).
    pub since: String,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    boot_id: String,
    sessions: BTreeMap<u32, Taint>,
}

/// The tainted sessions, and where they are saved.
#[derive(Default)]
pub struct Taints {
    sessions: BTreeMap<u32, Taint>,
    file: Option<PathBuf>,
}

impl Taints {
    /// Reads `file` (if it is of this boot), keeping the sessions `alive`
    /// says still have a process; later taints are saved there.
    pub fn load(file: PathBuf, alive: impl Fn(u32) -> bool) -> Self {
        let boot_id = boot_id();
        let sessions = std::fs::read(&file)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Saved>(&bytes).ok())
            .filter(|saved| Some(&saved.boot_id) == boot_id.as_ref())
            .map(|saved| saved.sessions.into_iter().filter(|(session, _)| alive(*session)).collect())
            .unwrap_or_default();
        Self { sessions, file: Some(file) }
    }

    /// The taint of `session`, if an actor ran there.
    pub fn get(&self, session: u32) -> Option<&Taint> {
        self.sessions.get(&session)
    }

    /// Marks `session` as one actor `actor` ran in (the first actor to run
    /// there keeps it); returns whether it is new.
    pub fn insert(&mut self, session: u32, actor: &str) -> bool {
        if self.sessions.contains_key(&session) {
            return false;
        }
        if self.sessions.len() >= MAX_SESSIONS {
            self.sessions.pop_first();
        }
        let since = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        self.sessions.insert(session, Taint { actor: actor.to_owned(), since });
        if let Some(file) = &self.file
            && let Err(error) = self.save(file)
        {
            tracing::error!(%error, file = %file.display(), "tainted login sessions not saved: a restart forgets them");
        }
        true
    }

    fn save(&self, file: &Path) -> std::io::Result<()> {
        let boot_id = boot_id().ok_or_else(|| std::io::Error::other(format!("{BOOT_ID} is unreadable")))?;
        let saved = Saved { boot_id, sessions: self.sessions.clone() };
        let staging = file.with_extension("tmp");
        std::fs::write(&staging, serde_json::to_vec(&saved)?)?;
        std::fs::rename(&staging, file)
    }
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string(BOOT_ID).ok().map(|id| id.trim().to_owned())
}

/// The audit sessions some process runs in now, reading `proc_root`
/// (normally `/proc`) once; `None` when it cannot be read.
pub fn live_sessions(proc_root: &Path) -> Option<std::collections::HashSet<u32>> {
    let entries = std::fs::read_dir(proc_root).ok()?;
    Some(
        entries
            .flatten()
            .filter(|entry| entry.file_name().to_str().is_some_and(|name| name.bytes().all(|b| b.is_ascii_digit())))
            .filter_map(|entry| std::fs::read_to_string(entry.path().join("sessionid")).ok())
            .filter_map(|id| id.trim().parse().ok())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_outlive_the_agent_but_not_their_sessions_or_the_boot() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("taints.json");
        let mut taints = Taints::load(file.clone(), |_| true);
        assert!(taints.insert(7, "coding-agent"));
        assert!(!taints.insert(7, "bot"), "the first actor keeps the session");
        assert!(taints.insert(9, "bot"));

        let restarted = Taints::load(file.clone(), |session| session == 7);
        assert_eq!(restarted.get(7).map(|t| t.actor.as_str()), Some("coding-agent"));
        assert_eq!(restarted.get(9), None, "session 9 has no process left");

        let text = std::fs::read_to_string(&file).unwrap().replace(&boot_id().unwrap(), "an-earlier-boot");
        std::fs::write(&file, text).unwrap();
        assert_eq!(Taints::load(file.clone(), |_| true).get(7), None, "ids start again after a reboot");
        std::fs::write(&file, "not json").unwrap();
        assert_eq!(Taints::load(file, |_| true).get(7), None);
    }

    #[test]
    fn a_session_is_alive_while_a_process_has_its_id() {
        let proc = tempfile::tempdir().unwrap();
        std::fs::create_dir(proc.path().join("42")).unwrap();
        std::fs::write(proc.path().join("42/sessionid"), "7").unwrap();
        std::fs::create_dir(proc.path().join("self")).unwrap();
        std::fs::write(proc.path().join("self/sessionid"), "9").unwrap();
        let live = live_sessions(proc.path()).unwrap();
        assert!(live.contains(&7));
        assert!(!live.contains(&9), "only numbered entries are processes");
        assert_eq!(live_sessions(&proc.path().join("missing")), None);
    }
}
