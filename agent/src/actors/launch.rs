//! The cgroups `airlock run --actor NAME -- COMMAND…` runs commands in.
//!
//! Each run gets `BASE/NAME+UID+N`, where BASE is `airlock-actors` under
//! the cgroup the programs are attached at, created by the agent and owned
//! by root. A process can leave a cgroup only for one whose common
//! ancestor with it the process may write, so nothing inside can move
//! itself out, or into a fake label: every process the command spawns is
//! the actor's, whatever it is called. The label is the cgroup's path, so
//! it survives agent restarts. The CLI moves itself in and then becomes the
//! command (exec); the cgroups of runs that ended are swept when others
//! start and every minute.

use std::{
    collections::HashSet,
    io,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

/// The directory actor cgroups are made in, under the interception cgroup.
pub const BASE_DIR: &str = "airlock-actors";

/// Actor cgroups, under one base directory.
pub struct ActorCgroups {
    /// `…/airlock-actors` in the mounted hierarchy.
    base: PathBuf,
    /// The same, as a cgroup path from the hierarchy root (`/…`).
    base_path: String,
    runs: AtomicU64,
    /// Held while a run starts and while runs are swept, so a sweep never
    /// takes a run that is being set up for one that ended.
    changing: Mutex<()>,
}

impl ActorCgroups {
    /// Creates (or adopts) the base directory under `attach` (a directory
    /// of the cgroup2 hierarchy mounted at `root`).
    pub fn open(root: &Path, attach: &Path) -> io::Result<Self> {
        let base = attach.join(BASE_DIR);
        match std::fs::create_dir(&base) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
        let relative = base.strip_prefix(root).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not under {}", base.display(), root.display()))
        })?;
        let base_path = format!("/{}", relative.display());
        Ok(Self { base, base_path, runs: AtomicU64::new(0), changing: Mutex::new(()) })
    }

    /// The base as a cgroup path from the hierarchy root, for [`super::Recogniser`].
    pub fn base(&self) -> &str {
        &self.base_path
    }

    /// Puts process `pid` (of user `uid`, the CLI about to exec the
    /// command) into a new cgroup labelled as actor `name`; returns the
    /// cgroup's directory. `prepare` gets the new cgroup's id before
    /// anything is in it (to confine it).
    pub fn launch(
        &self,
        name: &str,
        uid: u32,
        pid: u32,
        prepare: impl FnOnce(u64) -> io::Result<()>,
    ) -> io::Result<PathBuf> {
        let _changing = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
        let dir = self.base.join(format!("{name}+{uid}+{stamp}-{run}"));
        std::fs::create_dir(&dir)?;
        let entered = crate::intercept::cgroup::cgroup_id(&dir)
            .map_err(io::Error::other)
            .and_then(prepare)
            .and_then(|()| std::fs::write(dir.join("cgroup.procs"), pid.to_string()));
        if let Err(error) = entered {
            let _ = std::fs::remove_dir(&dir);
            return Err(error);
        }
        Ok(dir)
    }

    /// Removes every run's cgroup that nothing is left in, then hands
    /// `release` the ids of the runs still alive.
    pub fn sweep(&self, release: impl FnOnce(&HashSet<u64>)) {
        let _changing = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        let Ok(entries) = std::fs::read_dir(&self.base) else { return };
        let mut alive = HashSet::new();
        let mut complete = true;
        for entry in entries {
            let Ok(entry) = entry else {
                complete = false;
                continue;
            };
            // rmdir of a cgroup that still holds a process fails: that is the check.
            if entry.file_type().is_ok_and(|t| t.is_dir()) && std::fs::remove_dir(entry.path()).is_err() {
                match crate::intercept::cgroup::cgroup_id(&entry.path()) {
                    Ok(id) => {
                        alive.insert(id);
                    }
                    Err(_) => complete = false,
                }
            }
        }
        // A run that could not be read may be alive: release nothing then.
        if complete {
            release(&alive);
        }
    }
}

/// Removes the base directory under `attach` and the cgroups of runs that
/// ended (`airlock uninstall`); returns the base if it was there and is
/// gone. A run still alive keeps it, and that is an error naming it.
pub fn remove_base(attach: &Path) -> io::Result<Option<PathBuf>> {
    let base = attach.join(BASE_DIR);
    let entries = match std::fs::read_dir(&base) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) && std::fs::remove_dir(entry.path()).is_err() {
            let message = format!("{} still runs commands (`airlock run`); stop them first", entry.path().display());
            return Err(io::Error::other(message));
        }
    }
    std::fs::remove_dir(&base)?;
    Ok(Some(base))
}
