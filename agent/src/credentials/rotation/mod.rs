//! Rotation of the long-lived secrets behind just-in-time logins: the
//! embedded engine's PostgreSQL admin login (`admin_pair`, with a grace
//! period), the root credential of an OpenBao database connection
//! (OpenBao's own `rotate-root`), and the embedded SSH user CA (its next
//! key published beside the current one for the grace period, then
//! signing).
//!
//! Rotations run on the policy's schedule (`[target.credentials.rotation]`,
//! every 30 days by default) and on demand (`airlock rotate TARGET`, with
//! `--now` for no grace after a leak). Each step is an audit record
//! (`credential.rotation.*`); a failure is recorded, shown by `airlock
//! status`, sent to the target's approvals webhook, and tried again later,
//! while the login in use keeps working.

mod admin_pair;
mod state;

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};
use serde_json::json;

use self::{
    admin_pair::AdminPair,
    state::{RotationState, StateDir, Step},
};
use super::{
    CredentialError, Engine,
    openbao::{BaoToken, OpenBao},
};
use crate::{
    audit::{AuditLog, Event},
    policy::{CredentialSource, OpenBaoAuth, Policy, Protocol, Rotation, RotationPlan, Target, ssh::UserCa},
    proxy::ssh::ca::SshCa,
};

/// The scheduler looks at least this often.
const TICK: Duration = Duration::from_secs(30);

/// Why a rotation did not happen or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// The admin login, the server or OpenBao refused or failed.
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// The secret cannot be rotated as it is set up.
    #[error("{0}")]
    Refused(String),
    /// The rotation state could not be read or saved.
    #[error("rotation state in {path}: {source}")]
    State {
        /// The state directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Another rotation of the same secret is under way.
    #[error("a rotation of {0} is already under way")]
    Busy(String),
    /// No such target, or nothing of it rotates.
    #[error("{0}")]
    NotRotated(String),
}

/// Who asked for a rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The policy's schedule (or resuming one cut short).
    Schedule,
    /// `airlock rotate`, by this uid.
    Manual {
        /// The caller's uid.
        uid: u32,
        /// `--now`: no grace period.
        now: bool,
    },
}

/// The outcome of a rotation, for `airlock rotate`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RotationReport {
    /// The target named.
    pub target: String,
    /// What was rotated.
    pub secret: String,
    /// The login replaced (admin logins).
    pub from: Option<String>,
    /// The login now in use (admin logins).
    pub to: Option<String>,
    /// When the old login stops working; `None` once it has.
    pub retire_at: Option<String>,
    /// Sessions of the old login ended at its retirement.
    pub sessions_ended: u64,
}

impl RotationReport {
    /// What `state` says of `unit`'s rotation; the old secret's end is
    /// still ahead while the rotation is at `grace_step`.
    fn of(unit: &Unit<'_>, state: &RotationState, grace_step: Step, sessions_ended: u64) -> Self {
        Self {
            target: unit.target.name.clone(),
            secret: unit.describe(),
            from: state.from.clone(),
            to: state.to.clone(),
            retire_at: state.retire_at.filter(|_| state.step == grace_step).map(rfc3339),
            sessions_ended,
        }
    }
}

/// A time as records and reports show it.
fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// One target's rotation, for `airlock status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RotationStatus {
    /// Target name.
    pub target: String,
    /// What rotates.
    pub secret: String,
    /// `every 30d, grace 15m`, or why it does not rotate.
    pub schedule: String,
    /// Where a rotation under way stands (`idle` when none is).
    pub step: String,
    /// The last completed rotation.
    pub last_rotated: Option<String>,
    /// When the next one is due.
    pub next_due: Option<String>,
    /// When the old login stops working, during a grace period.
    pub retire_at: Option<String>,
    /// The last failure, until a rotation completes.
    pub last_error: Option<String>,
}

/// What rotates for a target.
enum Secret<'a> {
    /// The embedded engine's admin login.
    AdminLogin { seed: &'a Path, pair: AdminPair<'a> },
    /// The root credential of an OpenBao database connection.
    OpenBaoRoot { client: OpenBao, connection: &'a str },
    /// The embedded SSH user CA, shared by every SSH target that uses it.
    SshUserCa { ca: &'a SshCa },
}

/// A rotated secret of one target, as policy has it now.
struct Unit<'a> {
    /// State file name: the same secret named by two targets is one unit.
    key: String,
    target: &'a Target,
    rotation: &'a Rotation,
    secret: Secret<'a>,
}

impl Unit<'_> {
    fn describe(&self) -> String {
        match &self.secret {
            Secret::AdminLogin { seed, .. } => format!("admin login of {}", seed.display()),
            Secret::OpenBaoRoot { client, connection } => {
                format!("OpenBao root credential of {}/config/{connection} at {}", client.mount, client.addr)
            }
            Secret::SshUserCa { .. } => "SSH user CA (shared by every SSH target)".into(),
        }
    }
}

/// The SSH user CA and when it rotates.
pub struct SshCaRotation {
    /// The CAs.
    pub ca: Arc<SshCa>,
    /// Its schedule (`[ssh_ca]` in the agent's configuration).
    pub rotation: Rotation,
}

/// The rotations of every target's secrets.
pub struct Rotations {
    engine: Arc<Engine>,
    ssh: SshCaRotation,
    audit: Arc<AuditLog>,
    states: StateDir,
    state_dir: PathBuf,
    under_way: Mutex<HashSet<String>>,
}

impl Rotations {
    /// Rotations whose state lives in `state_dir`.
    pub fn new(engine: Arc<Engine>, ssh: SshCaRotation, audit: Arc<AuditLog>, state_dir: &Path) -> Self {
        Self {
            engine,
            ssh,
            audit,
            states: StateDir::new(state_dir),
            state_dir: state_dir.to_owned(),
            under_way: Mutex::new(HashSet::new()),
        }
    }

    /// Runs due rotations, resumes ones cut short and retires old logins
    /// whose grace ended, for as long as the agent runs. `policy` gives
    /// the policy in force (it changes on reload).
    pub async fn run(self: Arc<Self>, policy: impl Fn() -> Arc<Policy> + Send + 'static) {
        loop {
            let policy = policy();
            let mut wake = SystemTime::now() + TICK;
            for unit in self.units(&policy, true) {
                let Ok(state) = self.states.load(&unit.key) else { continue };
                let now = SystemTime::now();
                let next = match state.step {
                    Step::Switched => state.retire_at.unwrap_or(now),
                    // The SSH user CA's next key is published until then.
                    Step::Set if matches!(unit.secret, Secret::SshUserCa { .. }) => {
                        state.retire_at.unwrap_or(now).max(retry_after(&unit, &state))
                    }
                    Step::Idle => self.next_due(&unit, &state),
                    // Cut short (a crash, a failure): go on after the backoff.
                    _ => retry_after(&unit, &state),
                };
                if next <= now {
                    if let Err(error) = self.rotate_unit(&unit, Trigger::Schedule).await {
                        tracing::warn!(target = %unit.target.name, %error, "rotation not done");
                    }
                    // Look again at once: a switch starts a grace period
                    // that may be short; a failure has set its backoff.
                    wake = SystemTime::now();
                } else {
                    wake = wake.min(next);
                }
            }
            let pause = wake.duration_since(SystemTime::now()).unwrap_or_default().max(Duration::from_millis(200));
            tokio::time::sleep(pause).await;
        }
    }

    /// `airlock rotate TARGET [--now]`: rotates the target's secret at once
    /// and waits for the switch (and, with `now`, for the old login's end).
    pub async fn rotate(
        &self,
        policy: &Policy,
        target: &str,
        trigger: Trigger,
    ) -> Result<RotationReport, RotationError> {
        let found = policy
            .targets
            .iter()
            .find(|t| t.name == target)
            .ok_or_else(|| RotationError::NotRotated(format!("no target named {target:?} in the policy")))?;
        let units = self.units(policy, false);
        let shares_the_ssh_ca = |unit: &Unit<'_>| matches!(unit.secret, Secret::SshUserCa { .. }) && uses_ssh_ca(found);
        let Some(unit) = units.into_iter().find(|u| u.target.name == found.name || shares_the_ssh_ca(u)) else {
            let why = match found.credentials.as_ref().map(|c| &c.rotation) {
                Some(RotationPlan::Off(why)) => why.clone(),
                _ => "it has no just-in-time credentials, so Airlock holds no secret for it".into(),
            };
            return Err(RotationError::NotRotated(format!("target {target:?} does not rotate: {why}")));
        };
        self.rotate_unit(&unit, trigger).await
    }

    /// Each rotating target's state, for `airlock status`.
    pub fn status(&self, policy: &Policy) -> Vec<RotationStatus> {
        let when = |t: Option<SystemTime>| t.map(rfc3339);
        let mut statuses: Vec<RotationStatus> = self
            .units(policy, false)
            .into_iter()
            .map(|unit| {
                let state = self.states.load(&unit.key).unwrap_or_default();
                let schedule = match unit.secret {
                    _ if !unit.rotation.scheduled => "by airlock rotate only".into(),
                    Secret::AdminLogin { .. } => format!(
                        "every {}, grace {}",
                        humantime::format_duration(unit.rotation.every),
                        humantime::format_duration(unit.rotation.grace)
                    ),
                    Secret::OpenBaoRoot { .. } => format!("every {}", humantime::format_duration(unit.rotation.every)),
                    Secret::SshUserCa { .. } => format!(
                        "every {}, next key published {} before it signs",
                        humantime::format_duration(unit.rotation.every),
                        humantime::format_duration(unit.rotation.grace)
                    ),
                };
                RotationStatus {
                    target: unit.target.name.clone(),
                    secret: unit.describe(),
                    schedule,
                    step: serde_json::to_value(state.step)
                        .ok()
                        .and_then(|s| s.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    last_rotated: when(state.last_rotated),
                    next_due: when(unit.rotation.scheduled.then(|| self.next_due(&unit, &state))),
                    retire_at: when(state.retire_at.filter(|_| state.step == Step::Switched)),
                    last_error: state.last_error,
                }
            })
            .collect();
        for target in &policy.targets {
            if let Some(RotationPlan::Off(why)) = target.credentials.as_ref().map(|c| &c.rotation) {
                statuses.push(RotationStatus {
                    target: target.name.clone(),
                    secret: String::new(),
                    schedule: format!("off: {why}"),
                    step: "idle".into(),
                    last_rotated: None,
                    next_due: None,
                    retire_at: None,
                    last_error: None,
                });
            }
        }
        statuses
    }

    /// When `unit` is next due: `every` after its last rotation, or after
    /// the live admin file was written, or after Airlock first saw it.
    fn next_due(&self, unit: &Unit<'_>, state: &RotationState) -> SystemTime {
        let base = state.last_rotated.or_else(|| match &unit.secret {
            Secret::AdminLogin { seed, .. } => {
                std::fs::metadata(self.engine.admins().current(seed)).and_then(|m| m.modified()).ok()
            }
            Secret::OpenBaoRoot { .. } | Secret::SshUserCa { .. } => state.first_seen,
        });
        let Some(base) = base else {
            // Never seen: the schedule starts now.
            let mut state = state.clone();
            state.first_seen = Some(SystemTime::now());
            let _ = self.states.save(&unit.key, &state);
            return SystemTime::now() + unit.rotation.every;
        };
        (base + unit.rotation.every).max(retry_after(unit, state))
    }

    /// Runs one unit's rotation from wherever it stands to its end, or to
    /// the switch when a grace period follows.
    async fn rotate_unit(&self, unit: &Unit<'_>, trigger: Trigger) -> Result<RotationReport, RotationError> {
        let _claim = Claim::take(&self.under_way, &unit.key).ok_or_else(|| RotationError::Busy(unit.describe()))?;
        let mut state = self.load(&unit.key)?;
        let outcome = match &unit.secret {
            Secret::AdminLogin { seed, pair } => self.rotate_admin(unit, seed, pair, &mut state, trigger).await,
            Secret::OpenBaoRoot { client, connection } => {
                self.rotate_openbao(unit, client, connection, &mut state, trigger).await
            }
            Secret::SshUserCa { ca } => self.rotate_ssh_ca(unit, ca, &mut state, trigger),
        };
        if let Err(error) = &outcome {
            state.last_error = Some(error.to_string());
            state.failed_at = Some(SystemTime::now());
            let _ = self.save(&unit.key, &state);
            self.record(
                "credential.rotation.failed",
                unit,
                &state,
                trigger,
                json!({ "step": state.step, "error": error.to_string() }),
            );
            alert(unit, &error.to_string());
        }
        outcome
    }

    async fn rotate_admin(
        &self,
        unit: &Unit<'_>,
        seed: &Path,
        pair: &AdminPair<'_>,
        state: &mut RotationState,
        trigger: Trigger,
    ) -> Result<RotationReport, RotationError> {
        let manual_now = matches!(trigger, Trigger::Manual { now: true, .. });
        // A manual rotation while an old login is still in its grace
        // period retires that one first: two rotations in a row must not
        // leave the first one's old login working.
        if state.step == Step::Switched && matches!(trigger, Trigger::Manual { .. }) {
            self.retire(unit, pair, state, trigger).await?;
        }
        if state.step == Step::Idle {
            state.started = Some(SystemTime::now());
            state.target = unit.target.name.clone();
            state.unit = seed.display().to_string();
            pair.prepare(state).await?;
            self.save(&unit.key, state)?;
            self.record("credential.rotation.started", unit, state, trigger, json!({}));
        }
        if matches!(state.step, Step::Pending | Step::Set | Step::Tested) {
            // No just-in-time role is made while the logins change hands:
            // each role is made by the login that hands its memberships on.
            let _quiet = self.engine.admin_changeover(seed).write_owned().await;
            if state.step == Step::Pending {
                pair.set(state).await?;
                self.save(&unit.key, state)?;
                self.record("credential.rotation.set", unit, state, trigger, json!({}));
            }
            if state.step == Step::Set {
                pair.test(state).await?;
                self.save(&unit.key, state)?;
                self.record("credential.rotation.tested", unit, state, trigger, json!({}));
            }
            let grace = if manual_now { Duration::ZERO } else { unit.rotation.grace };
            pair.switch(state, SystemTime::now() + grace).await?;
            self.save(&unit.key, state)?;
            self.record(
                "credential.rotation.switched",
                unit,
                state,
                trigger,
                json!({ "grace_seconds": grace.as_secs() }),
            );
        }
        let mut sessions_ended = 0;
        if state.step == Step::Switched && state.retire_at.is_none_or(|at| at <= SystemTime::now()) {
            sessions_ended = self.retire(unit, pair, state, trigger).await?;
        }
        Ok(RotationReport::of(unit, state, Step::Switched, sessions_ended))
    }

    async fn retire(
        &self,
        unit: &Unit<'_>,
        pair: &AdminPair<'_>,
        state: &mut RotationState,
        trigger: Trigger,
    ) -> Result<u64, RotationError> {
        let ended = pair.retire(state).await?;
        state.complete();
        self.save(&unit.key, state)?;
        self.record("credential.rotation.retired", unit, state, trigger, json!({ "sessions_ended": ended }));
        Ok(ended)
    }

    async fn rotate_openbao(
        &self,
        unit: &Unit<'_>,
        client: &OpenBao,
        connection: &str,
        state: &mut RotationState,
        trigger: Trigger,
    ) -> Result<RotationReport, RotationError> {
        state.target = unit.target.name.clone();
        state.unit = unit.describe();
        self.record("credential.rotation.started", unit, state, trigger, json!({}));
        client.call_json("POST", &format!("{}/rotate-root/{connection}", client.mount), None).await?;
        state.complete();
        self.save(&unit.key, state)?;
        self.record("credential.rotation.completed", unit, state, trigger, json!({ "openbao_connection": connection }));
        Ok(RotationReport::of(unit, state, Step::Switched, 0))
    }

    /// The SSH user CA: its next key published (state `set`, the switch due
    /// at `retire_at`), then signing and the old key unpublished. With
    /// `--now` both at once: after a leak, targets that do not yet trust the
    /// new key refuse sessions rather than keep trusting the leaked one.
    fn rotate_ssh_ca(
        &self,
        unit: &Unit<'_>,
        ca: &SshCa,
        state: &mut RotationState,
        trigger: Trigger,
    ) -> Result<RotationReport, RotationError> {
        let refused = |e: crate::proxy::ssh::ca::SshCaError| RotationError::Refused(e.to_string());
        let now = matches!(trigger, Trigger::Manual { now: true, .. });
        if state.step == Step::Idle || (state.step == Step::Set && now) {
            let (current, _) = ca.user_key_fingerprints();
            let next = ca.publish_next_user_key().map_err(refused)?;
            state.target = unit.target.name.clone();
            state.unit = unit.describe();
            state.started = Some(SystemTime::now());
            state.from = Some(current);
            state.to = Some(next);
            state.step = Step::Set;
            let grace = if now { Duration::ZERO } else { unit.rotation.grace };
            state.retire_at = Some(SystemTime::now() + grace);
            self.save(&unit.key, state)?;
            self.record(
                "credential.rotation.published",
                unit,
                state,
                trigger,
                json!({ "signs_from": state.retire_at.map(rfc3339) }),
            );
        }
        if state.step == Step::Set && state.retire_at.is_none_or(|at| at <= SystemTime::now()) {
            ca.promote_next_user_key().map_err(refused)?;
            state.complete();
            self.save(&unit.key, state)?;
            self.record("credential.rotation.switched", unit, state, trigger, json!({}));
        }
        Ok(RotationReport::of(unit, state, Step::Set, 0))
    }

    /// The rotating secrets of `policy`'s targets, each once.
    fn units<'a>(&'a self, policy: &'a Policy, scheduled_only: bool) -> Vec<Unit<'a>> {
        let engine = &*self.engine;
        let mut seen = HashSet::new();
        let mut units = Vec::new();
        for target in &policy.targets {
            let Some(credentials) = &target.credentials else { continue };
            let RotationPlan::Rotates(rotation) = &credentials.rotation else { continue };
            if scheduled_only && !rotation.scheduled {
                continue;
            }
            let (key, secret) = match (&credentials.source, rotation) {
                (CredentialSource::Embedded { admin_file }, Rotation { server: Some(server), .. }) => {
                    let grants = credentials.roles.iter().flat_map(|r| r.grants.iter().cloned()).collect();
                    let pair = AdminPair { engine, seed: admin_file, server: *server, tls: &credentials.tls, grants };
                    (
                        unit_key("admin", &admin_file.display().to_string()),
                        Secret::AdminLogin { seed: admin_file, pair },
                    )
                }
                (
                    CredentialSource::OpenBao { addr, auth: OpenBaoAuth::TokenFile(token), mount, ca_file },
                    Rotation { openbao_connection: Some(connection), .. },
                ) => {
                    let client = OpenBao {
                        addr: addr.clone(),
                        token: BaoToken::File(token.clone()),
                        mount: mount.clone(),
                        ca_file: ca_file.clone(),
                    };
                    (
                        unit_key("openbao", &format!("{addr}/{mount}/{connection}")),
                        Secret::OpenBaoRoot { client, connection },
                    )
                }
                _ => continue,
            };
            if seen.insert(key.clone()) {
                units.push(Unit { key, target, rotation, secret });
            }
        }
        // The SSH user CA, for the first target whose sessions it signs.
        if (self.ssh.rotation.scheduled || !scheduled_only)
            && let Some(target) = policy.targets.iter().find(|t| uses_ssh_ca(t))
        {
            units.push(Unit {
                key: "ssh-user-ca".into(),
                target,
                rotation: &self.ssh.rotation,
                secret: Secret::SshUserCa { ca: &self.ssh.ca },
            });
        }
        units
    }

    fn load(&self, key: &str) -> Result<RotationState, RotationError> {
        self.states.load(key).map_err(|source| RotationError::State { path: self.state_dir.join("rotation"), source })
    }

    fn save(&self, key: &str, state: &RotationState) -> Result<(), RotationError> {
        self.states
            .save(key, state)
            .map_err(|source| RotationError::State { path: self.state_dir.join("rotation"), source })?;
        #[cfg(debug_assertions)]
        crash_point(&self.state_dir, state.step);
        Ok(())
    }

    fn record(&self, kind: &str, unit: &Unit<'_>, state: &RotationState, trigger: Trigger, extra: serde_json::Value) {
        let source = match unit.secret {
            Secret::AdminLogin { .. } => "embedded",
            Secret::OpenBaoRoot { .. } => "openbao",
            Secret::SshUserCa { .. } => "ssh_ca",
        };
        let event = match kind {
            "credential.rotation.failed" => Some("rotation_failed"),
            "credential.rotation.switched" | "credential.rotation.completed" => Some("rotated"),
            _ => None,
        };
        if let Some(event) = event {
            crate::metrics::global().credential(event, source);
        }
        let mut detail = json!({
            "target": unit.target.name,
            "secret": unit.describe(),
            "from": state.from,
            "to": state.to,
            "trigger": match trigger {
                Trigger::Schedule => json!("schedule"),
                Trigger::Manual { uid, now } => json!({ "requested_by_uid": uid, "now": now }),
            },
        });
        if let (Some(detail), serde_json::Value::Object(extra)) = (detail.as_object_mut(), extra) {
            detail.extend(extra);
        }
        let event = Event { kind, session: None, identity: None, process: None, target: None, detail };
        if let Err(error) = self.audit.append(event) {
            tracing::error!(%error, kind, "audit record lost");
        }
    }
}

/// Whether `target`'s SSH sessions get certificates of the embedded user CA.
fn uses_ssh_ca(target: &Target) -> bool {
    target.protocol == Protocol::Ssh && target.ssh.as_ref().is_some_and(|ssh| ssh.ca == UserCa::Embedded)
}

/// A state file name for a secret: its kind and a digest of its name.
fn unit_key(kind: &str, name: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    format!("{kind}-{}", crate::hex::encode(&digest.as_ref()[..12]))
}

/// After a failure, the next attempt waits a tenth of the schedule, between
/// a minute and an hour.
fn retry_after(unit: &Unit<'_>, state: &RotationState) -> SystemTime {
    let delay = (unit.rotation.every / 10).clamp(Duration::from_secs(60), Duration::from_secs(3600));
    state.failed_at.map_or(SystemTime::UNIX_EPOCH, |failed| failed + delay)
}

/// Tells the target's approvers (its approvals webhook) that a rotation failed.
fn alert(unit: &Unit<'_>, error: &str) {
    let Some(url) = unit.target.guardrails.as_ref().and_then(|g| g.approvals.as_ref()).and_then(|a| a.webhook.as_ref())
    else {
        return;
    };
    let text = format!(
        "Airlock: rotating the {} for target {} failed: {error}. The login in use still works; Airlock tries again, \
         or run `airlock rotate {}`.",
        unit.describe(),
        unit.target.name,
        unit.target.name
    );
    crate::approvals::webhook::send(
        url,
        json!({ "text": text, "airlock": { "event": "credential.rotation.failed", "target": unit.target.name, "error": error } }),
    );
}

/// Debug builds only, for the tests that kill the agent in the middle of a
/// rotation: `state_dir/rotation/crash-after` naming a step (`pending`,
/// `set`, `tested`, `switched`) makes the agent abort, as kill -9 would,
/// right after that step is saved. The file is removed first, so the
/// restarted agent goes on.
#[cfg(debug_assertions)]
fn crash_point(state_dir: &Path, step: Step) {
    let file = state_dir.join("rotation/crash-after");
    let Ok(wanted) = std::fs::read_to_string(&file) else { return };
    let step = serde_json::to_value(step).ok().and_then(|s| s.as_str().map(str::to_owned)).unwrap_or_default();
    if wanted.trim() == step && std::fs::remove_file(&file).is_ok() {
        tracing::warn!(step, "crash-after test hook: aborting");
        std::process::abort();
    }
}

/// A unit's rotation under way, released when dropped.
struct Claim<'a> {
    set: &'a Mutex<HashSet<String>>,
    key: String,
}

impl<'a> Claim<'a> {
    fn take(set: &'a Mutex<HashSet<String>>, key: &str) -> Option<Self> {
        set.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_owned()).then(|| Self { set, key: key.to_owned() })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}
