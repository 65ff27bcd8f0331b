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
    io,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
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
        let cgroups = Self { base, base_path, runs: AtomicU64::new(0) };
        cgroups.sweep();
        Ok(cgroups)
    }

    /// The base as a cgroup path from the hierarchy root, for [`super::Recogniser`].
    pub fn base(&self) -> &str {
        &self.base_path
    }

    /// Puts process `pid` (of user `uid`, the CLI about to exec the
    /// command) into a new cgroup labelled as actor `name`; returns the
    /// cgroup's directory.
    pub fn launch(&self, name: &str, uid: u32, pid: u32) -> io::Result<PathBuf> {
        self.sweep();
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
        let dir = self.base.join(format!("{name}+{uid}+{stamp}-{run}"));
        std::fs::create_dir(&dir)?;
        if let Err(error) = std::fs::write(dir.join("cgroup.procs"), pid.to_string()) {
            let _ = std::fs::remove_dir(&dir);
            return Err(error);
        }
        Ok(dir)
    }

    /// Removes every run's cgroup that nothing is left in.
    pub fn sweep(&self) {
        let Ok(entries) = std::fs::read_dir(&self.base) else { return };
        for entry in entries.flatten() {
            // rmdir of a cgroup that still holds a process fails: that is the check.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    }
}
