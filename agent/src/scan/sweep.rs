//! The agent's periodic sweep: on a thread of its own (never the proxy's
//! event loop), at nice 19 and idle I/O priority within a CPU share, it
//! scans the `[scan]` roots, compares with the findings it knew (a state
//! file in `state_dir/scan/`, root-only) and records `secret.found` for
//! each new one and `secret.gone` for each one no longer there, with
//! fingerprints, never secrets. A finding in a file that could not be read
//! this time is kept, not called gone: not knowing is not absence.

use std::{
    collections::{HashMap, HashSet},
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, mpsc::Receiver},
    time::Instant,
};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    Report, ScanContext, Scanner,
    finding::{Finding, FingerprintKey, KeyError},
    priority::{CpuBudget, lower_this_thread},
    settings::ScanSettings,
    targets::ProtectedTargets,
};
use crate::audit::{AuditLog, Event};

/// The state file, in `state_dir/scan/`.
pub const STATE_FILE: &str = "findings.json";

/// Why a sweep did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The fingerprint key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The state file could not be written.
    #[error("scan state {}: {source}", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The rule file (`[scan] rules`) does not load.
    #[error("[scan] rules: {0}")]
    Rules(#[from] super::rules::RulesError),
    /// A record could not be written: the sweep stops (the state is not
    /// advanced, so the next sweep reports it again).
    #[error("audit: {0}")]
    Audit(#[from] crate::audit::AuditError),
}

/// What the sweep keeps between runs.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    findings: Vec<Finding>,
}

/// What one sweep found, in numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SweepSummary {
    /// Findings present now.
    pub present: usize,
    /// New since the last sweep.
    pub found: usize,
    /// Gone since the last sweep.
    pub gone: usize,
    /// Files read.
    pub files: u64,
    /// Paths that could not be read.
    pub unreadable: usize,
}

/// One sweeper: its settings, where state and policy are, where records go.
pub struct Sweeper {
    settings: ScanSettings,
    /// Compiled on the sweep's thread (the shipped rules take a moment),
    /// or at start when `[scan] rules` names a file, so a bad one stops the agent.
    scanner: Option<Scanner>,
    state_dir: PathBuf,
    policies_dir: PathBuf,
    audit: Arc<AuditLog>,
}

impl Sweeper {
    /// A sweeper for `config`; fails if its rule file does not load.
    pub fn new(config: &crate::config::Config, audit: Arc<AuditLog>) -> Result<Self, super::rules::RulesError> {
        Ok(Self {
            scanner: config.scan.rules.as_ref().map(|_| config.scan.rule_set().map(Scanner::new)).transpose()?,
            settings: config.scan.clone(),
            state_dir: config.state_dir.join("scan"),
            policies_dir: config.policies_dir.clone(),
            audit,
        })
    }

    /// Starts sweeping every `interval` on a thread of its own, or returns
    /// `None` when sweeps are off. Call it before the agent drops its
    /// capabilities: the thread keeps CAP_DAC_READ_SEARCH alone (to read
    /// every user's files) and drops the rest itself. The first sweep
    /// waits for a message on `start` (the agent sends it once `agent.start`
    /// is recorded); if the sender goes away first, the thread ends.
    pub fn spawn(mut self, start: Receiver<()>) -> std::io::Result<Option<std::thread::JoinHandle<()>>> {
        let Some(interval) = self.settings.interval else { return Ok(None) };
        std::thread::Builder::new()
            .name("airlock-scan".into())
            .spawn(move || {
                if let Err(e) = keep_only_read_search() {
                    tracing::error!("secret sweep not started: {e:#}");
                    return;
                }
                if let Err(e) = lower_this_thread() {
                    tracing::warn!("secret sweep runs at normal priority: {e}");
                }
                if start.recv().is_err() {
                    return;
                }
                loop {
                    match self.sweep_once() {
                        Ok(summary) => tracing::info!(?summary, "secret sweep done"),
                        Err(e) => tracing::error!("secret sweep failed: {e}"),
                    }
                    std::thread::sleep(interval);
                }
            })
            .map(Some)
    }

    /// One sweep: scan, compare, record, save.
    pub fn sweep_once(&mut self) -> Result<SweepSummary, SweepError> {
        let started = Instant::now();
        if self.scanner.is_none() {
            self.scanner = Some(Scanner::new(self.settings.rule_set()?));
        }
        let Some(scanner) = &self.scanner else { unreachable!("set above") };
        let key = FingerprintKey::load_or_create(&self.state_dir)?;
        let targets = match crate::policy::Policy::load_dir(&self.policies_dir) {
            Ok(policy) => ProtectedTargets::new(policy),
            Err(e) => {
                tracing::warn!("secret sweep: policy not loaded, no finding linked to targets: {e}");
                ProtectedTargets::none()
            }
        };
        let mut budget = CpuBudget::new(self.settings.cpu_percent);
        let mut after_file = |_: usize| budget.spent();
        let roots = self.settings.roots();
        let limits = self.settings.limits();
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let context =
            ScanContext { scanner, limits: &limits, key: &key, targets: &targets, after_file: &mut after_file };
        let report = super::scan(&roots, context, &now);
        let previous = self.load_state();
        let (state, summary) = self.compare(previous, report)?;
        self.save_state(&state)?;
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "secret sweep saved");
        Ok(summary)
    }

    fn compare(&self, previous: State, report: Report) -> Result<(State, SweepSummary), SweepError> {
        let mut known: HashMap<(String, String, String), Finding> =
            previous.findings.into_iter().map(|f| (f.identity(), f)).collect();
        let mut summary =
            SweepSummary { files: report.stats.files, unreadable: report.unreadable.len(), ..SweepSummary::default() };
        let mut now_present = Vec::with_capacity(report.findings.len());
        let mut seen = HashSet::new();
        for mut finding in report.findings {
            if !seen.insert(finding.identity()) {
                continue;
            }
            match known.remove(&finding.identity()) {
                Some(before) => finding.first_seen = before.first_seen,
                None => {
                    self.record("secret.found", &finding)?;
                    summary.found += 1;
                }
            }
            now_present.push(finding);
        }
        let unreadable: Vec<&Path> = report.unreadable.iter().map(|u| u.path.as_path()).collect();
        for (_, finding) in known {
            let path = Path::new(&finding.path);
            if unreadable.iter().any(|u| path.starts_with(u)) {
                now_present.push(finding);
                continue;
            }
            self.record("secret.gone", &finding)?;
            summary.gone += 1;
        }
        summary.present = now_present.len();
        Ok((State { findings: now_present }, summary))
    }

    fn record(&self, kind: &str, finding: &Finding) -> Result<(), SweepError> {
        let detail = json!({
            "fingerprint": finding.fingerprint,
            "path": finding.path,
            "uid": finding.uid,
            "owner": finding.owner,
            "rule": finding.rule,
            "description": finding.description,
            "line": finding.line,
            "encrypted": finding.encrypted,
            "protected_target": finding.protected_targets,
            "bypass": finding.bypass_note(),
            "first_seen": finding.first_seen,
            "last_seen": finding.last_seen,
        });
        self.audit.append(Event { kind, session: None, identity: None, process: None, target: None, detail })?;
        Ok(())
    }

    fn load_state(&self) -> State {
        let path = self.state_dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!("{}: unreadable ({e}); every finding is reported as new", path.display());
                State::default()
            }),
            Err(_) => State::default(),
        }
    }

    fn save_state(&self, state: &State) -> Result<(), SweepError> {
        let path = self.state_dir.join(STATE_FILE);
        let temporary = self.state_dir.join(format!(".{STATE_FILE}.tmp"));
        let failed = |source| SweepError::State { path: path.clone(), source };
        let _ = std::fs::remove_file(&temporary);
        let mut file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary).map_err(failed)?;
        let text = serde_json::to_vec(state).map_err(|e| failed(std::io::Error::other(e)))?;
        file.write_all(&text).and_then(|()| file.sync_all()).map_err(failed)?;
        std::fs::rename(&temporary, &path).map_err(failed)
    }
}

/// Drops every capability of this thread but CAP_DAC_READ_SEARCH (read any
/// file, search any directory: nothing it can write or change), and sets
/// no_new_privs for it.
fn keep_only_read_search() -> anyhow::Result<()> {
    use anyhow::Context as _;
    use caps::{CapSet, Capability, CapsHashSet};
    let wanted = Capability::CAP_DAC_READ_SEARCH;
    let available = caps::read(None, CapSet::Permitted).context("reading permitted capabilities")?;
    let kept: CapsHashSet = available.into_iter().filter(|c| *c == wanted).collect();
    caps::clear(None, CapSet::Ambient).context("clearing ambient capabilities")?;
    caps::clear(None, CapSet::Inheritable).context("clearing inheritable capabilities")?;
    caps::set(None, CapSet::Effective, &kept).context("setting effective capabilities")?;
    caps::set(None, CapSet::Permitted, &kept).context("setting permitted capabilities")?;
    // SAFETY: prctl with constant arguments; applies to this thread.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setting no_new_privs");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(dir: &Path) -> Vec<serde_json::Value> {
        let mut out: Vec<serde_json::Value> = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "jsonl") {
                for line in std::fs::read_to_string(&path).unwrap().lines() {
                    out.push(serde_json::from_str(line).unwrap());
                }
            }
        }
        out.retain(|r| r["kind"].as_str().is_some_and(|k| k.starts_with("secret.")));
        out
    }

    #[test]
    fn found_then_gone_with_first_seen_kept() {
        let base = tempfile::tempdir().unwrap();
        let home = base.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(home.join(".pgpass"), "db:5432:app:alice:Sup3rS3cretPw\n").unwrap();
        let policies = base.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        let audit_dir = base.path().join("audit");
        let config = crate::config::Config {
            state_dir: base.path().join("state"),
            policies_dir: policies,
            audit_dir: audit_dir.clone(),
            scan: ScanSettings { paths: vec![home.clone()], ..ScanSettings::default() },
            ..crate::config::Config::default()
        };
        let audit = Arc::new(AuditLog::open(&audit_dir).unwrap());
        let mut sweeper = Sweeper::new(&config, Arc::clone(&audit)).unwrap();
        let first = sweeper.sweep_once().unwrap();
        assert_eq!((first.present, first.found, first.gone), (1, 1, 0));
        let again = sweeper.sweep_once().unwrap();
        assert_eq!((again.present, again.found, again.gone), (1, 0, 0), "known findings are not announced again");
        std::fs::write(home.join(".pgpass"), "# removed\n").unwrap();
        let last = sweeper.sweep_once().unwrap();
        assert_eq!((last.present, last.found, last.gone), (0, 0, 1));
        drop(sweeper);
        drop(audit);
        let written = records(&audit_dir);
        let kinds: Vec<&str> = written.iter().map(|r| r["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, vec!["secret.found", "secret.gone"]);
        assert_eq!(written[0]["detail"]["rule"], "airlock-pgpass");
        assert_eq!(written[0]["detail"]["fingerprint"], written[1]["detail"]["fingerprint"]);
        let everything =
            format!("{written:?}") + &std::fs::read_to_string(config.state_dir.join("scan").join(STATE_FILE)).unwrap();
        assert!(!everything.contains("Sup3rS3cretPw"));
    }
}
