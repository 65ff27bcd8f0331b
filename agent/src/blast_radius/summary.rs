//! A one-line blast radius for approval requests: what the requester's
//! just-in-time login can do, so an approver sees what approving lets run
//! with it ("grants: read 12 tables in 2 schemas (3 with personal data),
//! write 4; impact high (…)").
//!
//! Read in the background, once per target and role set, and again at most
//! every [`REFRESH`]: filing a request never waits for it, and the line is
//! looked up when approvers list requests (by then it is there). A read
//! that fails says so: "blast radius unknown: <why>".

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{impact, postgres, report::PostgresDetail};
use crate::{masking::MaskingPolicy, policy::UpstreamTls};

/// How long a line is used before it is read again.
pub const REFRESH: Duration = Duration::from_secs(300);

/// What a session's login is, for its summary.
#[derive(Clone, Debug)]
pub struct Query {
    /// Target name.
    pub target: String,
    /// The target's admin login file.
    pub admin_file: PathBuf,
    /// The server the session is connected to.
    pub server: SocketAddr,
    /// TLS to it.
    pub tls: UpstreamTls,
    /// Roles the login is a member of.
    pub grants: Vec<String>,
    /// The target's masking, for what personal data is masked.
    pub masking: Option<MaskingPolicy>,
}

/// Which summary: target name and role set.
pub type Key = (String, Vec<String>);

impl Query {
    /// Its cache key.
    pub fn key(&self) -> Key {
        (self.target.clone(), self.grants.clone())
    }
}

#[derive(Default)]
struct Slot {
    /// When the last read started.
    started: Option<Instant>,
    /// Whether a read is under way.
    running: bool,
    /// The last read's line, or why it failed.
    line: Option<Result<String, String>>,
}

/// Summaries by target and role set, read in the background.
#[derive(Clone, Default)]
pub struct Summaries {
    slots: Arc<Mutex<HashMap<Key, Slot>>>,
}

impl Summaries {
    /// Starts reading `query`'s summary unless a fresh one is there or
    /// being read; returns at once.
    pub fn ensure(&self, query: &Query) {
        let key = query.key();
        {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            let slot = slots.entry(key.clone()).or_default();
            let fresh = slot.started.is_some_and(|at| at.elapsed() < REFRESH);
            if slot.running || fresh {
                return;
            }
            slot.running = true;
            slot.started = Some(Instant::now());
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.store(&key, Err("no runtime to read it on".into()));
            return;
        };
        let (summaries, query) = (self.clone(), query.clone());
        runtime.spawn(async move {
            let line = read(&query).await;
            summaries.store(&query.key(), line);
        });
    }

    fn store(&self, key: &Key, line: Result<String, String>) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = slots.entry(key.clone()).or_default();
        slot.running = false;
        slot.line = Some(line);
    }

    /// The line for `key` as it stands.
    pub fn line(&self, key: &Key) -> String {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        match slots.get(key).and_then(|slot| slot.line.as_ref()) {
            Some(Ok(line)) => line.clone(),
            Some(Err(why)) => format!("blast radius unknown: {why}"),
            None => "blast radius unknown: still being read".into(),
        }
    }
}

/// Reads the summary of `query` from its server.
pub async fn read(query: &Query) -> Result<String, String> {
    let session = postgres::connect(&query.admin_file, query.server, &query.tls).await.map_err(|e| e.to_string())?;
    let scope = postgres::read(&session, postgres::Holder::MemberOf(&query.grants)).await.map_err(|e| e.to_string())?;
    let tables = impact::judge_tables(&scope, query.masking.as_ref());
    let assessment = impact::assess_postgres(&scope, &tables);
    let detail = PostgresDetail::new(scope, tables);
    Ok(line(&detail, &assessment))
}

/// `grants: read 12 tables in 2 schemas (3 with personal data), write 4; impact high (rule: why)`.
pub fn line(detail: &PostgresDetail, assessment: &impact::Assessment) -> String {
    format!(
        "grants: {}; impact {} ({}: {})",
        detail.privileges_line(),
        assessment.impact.name(),
        assessment.rule.name(),
        assessment.reason
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(server: SocketAddr) -> Query {
        Query {
            target: "pg".into(),
            admin_file: "/nonexistent/airlock-admin.toml".into(),
            server,
            tls: UpstreamTls::Disable,
            grants: vec!["app_read".into()],
            masking: None,
        }
    }

    #[tokio::test]
    async fn a_failed_read_is_told_and_not_repeated_until_it_is_stale() {
        let summaries = Summaries::default();
        let query = query("127.0.0.1:9".parse().unwrap());
        assert_eq!(summaries.line(&query.key()), "blast radius unknown: still being read");
        summaries.ensure(&query);
        for _ in 0..200 {
            if !summaries.line(&query.key()).ends_with("still being read") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let line = summaries.line(&query.key());
        assert!(line.starts_with("blast radius unknown: admin credentials /nonexistent/airlock-admin.toml"), "{line}");
        // Fresh: another request does not start another read.
        summaries.ensure(&query);
        let slots = summaries.slots.lock().unwrap();
        let slot = &slots[&query.key()];
        assert!(!slot.running && slot.line.is_some());
    }

    #[test]
    fn the_line_names_privileges_and_the_deciding_rule() {
        let detail = PostgresDetail::new(postgres::PgScope::default(), vec![]);
        let assessment = impact::Assessment::new(impact::Rule::Createrole, "CREATEROLE through role ops");
        assert_eq!(
            line(&detail, &assessment),
            "grants: no table privileges; impact high (createrole: CREATEROLE through role ops)"
        );
    }
}
