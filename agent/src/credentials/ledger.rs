//! The credential ledger: one JSON line per role created or dropped, written
//! before the role is created, so a crash never leaves a role unknown.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::{BufRead as _, BufReader, Write as _},
    net::SocketAddr,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

use super::CredentialError;
use crate::policy::UpstreamTls;

const LEDGER_FILE: &str = "postgres-roles.jsonl";

/// One ledger line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// `created` or `dropped`.
    pub op: String,
    /// Role name.
    pub role: String,
    /// Server it lives on (created only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_addr: Option<SocketAddr>,
    /// Admin credential file to drop it with (created only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_file_path: Option<PathBuf>,
    /// Expiry, RFC 3339 (created only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// TLS to the server, as its policy said (created only; absent in
    /// ledgers of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
}

/// A role still to be dropped.
#[derive(Debug, PartialEq, Eq)]
pub struct Outstanding {
    /// Role name.
    pub role: String,
    /// Its server.
    pub server: SocketAddr,
    /// Admin credentials for it.
    pub admin_file: PathBuf,
    /// TLS to its server: as recorded, or `prefer` for entries of earlier
    /// versions (which logged in without TLS).
    pub tls: UpstreamTls,
}

impl LedgerEntry {
    /// A role about to be created.
    pub fn created(role: &str, server: SocketAddr, tls: &UpstreamTls, admin_file: &Path, expires: SystemTime) -> Self {
        Self {
            op: "created".into(),
            role: role.into(),
            server_addr: Some(server),
            admin_file_path: Some(admin_file.to_owned()),
            expires: Some(humantime::format_rfc3339_seconds(expires).to_string()),
            tls: Some(tls.clone()),
        }
    }

    /// A role dropped.
    pub fn dropped(role: &str) -> Self {
        Self {
            op: "dropped".into(),
            role: role.into(),
            server_addr: None,
            admin_file_path: None,
            expires: None,
            tls: None,
        }
    }
}

/// The open ledger.
pub struct Ledger {
    path: PathBuf,
    file: File,
}

impl Ledger {
    /// Opens (creating, root-only) the ledger in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, CredentialError> {
        let path = state_dir.join(LEDGER_FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| CredentialError::Ledger { path: path.clone(), source })?;
        Ok(Self { path, file })
    }

    /// Appends and syncs one entry.
    pub fn append(&mut self, entry: &LedgerEntry) -> Result<(), CredentialError> {
        let mut line = serde_json::to_vec(entry)
            .map_err(|e| CredentialError::Ledger { path: self.path.clone(), source: e.into() })?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| CredentialError::Ledger { path: self.path.clone(), source })
    }

    /// Roles created and not dropped, oldest first. Unreadable lines (a torn
    /// last write) are skipped.
    pub fn outstanding(&self) -> Vec<Outstanding> {
        let Ok(file) = File::open(&self.path) else { return Vec::new() };
        let mut open: BTreeMap<String, (usize, Outstanding)> = BTreeMap::new();
        for (index, line) in BufReader::new(file).lines().map_while(Result::ok).enumerate() {
            let Ok(entry) = serde_json::from_str::<LedgerEntry>(&line) else { continue };
            match (entry.op.as_str(), entry.server_addr, entry.admin_file_path) {
                ("created", Some(server), Some(admin_file)) => {
                    let tls = entry.tls.unwrap_or_default();
                    open.insert(entry.role.clone(), (index, Outstanding { role: entry.role, server, admin_file, tls }));
                }
                ("dropped", ..) => {
                    open.remove(&entry.role);
                }
                _ => {}
            }
        }
        let mut outstanding: Vec<(usize, Outstanding)> = open.into_values().collect();
        outstanding.sort_by_key(|(index, _)| *index);
        outstanding.into_iter().map(|(_, o)| o).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outstanding_is_created_minus_dropped_and_survives_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let server: SocketAddr = "10.0.0.1:5432".parse().unwrap();
        let admin = Path::new("/etc/airlock/credentials/db.toml");
        let verify =
            UpstreamTls::VerifyFull { ca_file: "/etc/airlock/db-ca.pem".into(), server_name: Some("db".into()) };
        {
            let mut ledger = Ledger::open(dir.path()).unwrap();
            ledger.append(&LedgerEntry::created("a", server, &UpstreamTls::Require, admin, SystemTime::now())).unwrap();
            ledger.append(&LedgerEntry::created("b", server, &verify, admin, SystemTime::now())).unwrap();
            ledger.append(&LedgerEntry::dropped("a")).unwrap();
        }
        let mut file = std::fs::OpenOptions::new().append(true).open(dir.path().join(LEDGER_FILE)).unwrap();
        // A line of an earlier version, without TLS: dropped with `prefer`.
        file.write_all(
            b"{\"op\":\"created\",\"role\":\"c\",\"server_addr\":\"10.0.0.1:5432\",\"admin_file_path\":\"/a.toml\"}\n",
        )
        .unwrap();
        file.write_all(b"{\"op\":\"dro").unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        assert_eq!(
            ledger.outstanding(),
            [
                Outstanding { role: "b".into(), server, admin_file: admin.to_owned(), tls: verify },
                Outstanding { role: "c".into(), server, admin_file: "/a.toml".into(), tls: UpstreamTls::Prefer },
            ]
        );
        let text = std::fs::read_to_string(dir.path().join(LEDGER_FILE)).unwrap();
        assert!(
            text.contains(r#""tls":{"mode":"verify-full","ca_file":"/etc/airlock/db-ca.pem","server_name":"db"}"#),
            "{text}"
        );
        assert!(!text.contains("password"));
    }
}
