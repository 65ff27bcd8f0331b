//! A rotation's durable state: one JSON file per rotated secret, written
//! (atomically) before each step's effect is relied on, so a rotation cut
//! short by a crash resumes at the step it was in. No secret is in it: the
//! next admin login waits in the admin store's own root-only file.

use std::{
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

/// Where a rotation stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Nothing under way.
    #[default]
    Idle,
    /// The next login is chosen and saved; the server does not know it yet.
    Pending,
    /// The server accepts the next login.
    Set,
    /// The next login was tested: it logged in and made and dropped a role.
    Tested,
    /// The next login is the live one; the old one works until `retire_at`.
    Switched,
}

/// The saved state of one rotated secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationState {
    /// What is rotated, for a person reading the file: the admin file or
    /// the OpenBao connection.
    pub unit: String,
    /// The target it was last rotated for.
    pub target: String,
    /// Where the rotation under way stands.
    pub step: Step,
    /// The role (login) being replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The role (login) replacing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// When the rotation under way started.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339")]
    pub started: Option<SystemTime>,
    /// When the old login stops working (set at the switch).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339")]
    pub retire_at: Option<SystemTime>,
    /// The last rotation that completed.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339")]
    pub last_rotated: Option<SystemTime>,
    /// When Airlock first saw this secret (the schedule's start when it was
    /// never rotated and its age is unknown).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339")]
    pub first_seen: Option<SystemTime>,
    /// The last failure, until a rotation completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it failed.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339")]
    pub failed_at: Option<SystemTime>,
}

impl RotationState {
    /// A rotation completed now: nothing under way, no failure outstanding.
    pub fn complete(&mut self) {
        self.step = Step::Idle;
        self.last_rotated = Some(SystemTime::now());
        self.last_error = None;
        self.failed_at = None;
    }
}

/// The state files, in `state_dir/rotation`.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// The directory in `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        Self { dir: state_dir.join("rotation") }
    }

    /// The saved state for `key`, or a fresh one.
    pub fn load(&self, key: &str) -> std::io::Result<RotationState> {
        match std::fs::read(self.path(key)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RotationState::default()),
            Err(e) => Err(e),
        }
    }

    /// Saves `state` for `key`: a new file synced and renamed over the old.
    pub fn save(&self, key: &str, state: &RotationState) -> std::io::Result<()> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir)?;
        let path = self.path(key);
        let temporary = self.dir.join(format!(".{key}.tmp"));
        let mut file =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
        file.write_all(&serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }
}

mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &Option<SystemTime>, serializer: S) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => serializer.serialize_str(&humantime::format_rfc3339_seconds(*time).to_string()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<SystemTime>, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?;
        text.map(|t| humantime::parse_rfc3339(&t).map_err(serde::de::Error::custom)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_survive_a_round_trip_and_a_missing_file_is_idle() {
        let dir = tempfile::tempdir().unwrap();
        let states = StateDir::new(dir.path());
        assert_eq!(states.load("k").unwrap(), RotationState::default());
        let now = humantime::parse_rfc3339("2026-12-06T21:00:00Z").unwrap();
        let state = RotationState {
            unit: "/etc/airlock/db.toml".into(),
            target: "pg".into(),
            step: Step::Switched,
            from: Some("airlock_admin".into()),
            to: Some("airlock_admin_alt".into()),
            started: Some(now),
            retire_at: Some(now + std::time::Duration::from_secs(900)),
            ..RotationState::default()
        };
        states.save("k", &state).unwrap();
        assert_eq!(states.load("k").unwrap(), state);
        let text = std::fs::read_to_string(dir.path().join("rotation/k.json")).unwrap();
        assert!(text.contains("\"step\": \"switched\"") && text.contains("2026-12-06T21:15:00Z"), "{text}");
    }
}
