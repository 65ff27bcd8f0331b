//! Which login a process belongs to.
//!
//! A person's login is bound to their uid *and* audit session: a process of
//! uid X in audit session S gets the login bound to (X, S). `su` and `sudo`
//! change the uid while keeping the session, so they never carry one
//! person's identity to another account; a second user on the same host has
//! another session. A CI job's token is bound to the job's cgroup, whose id
//! the kernel never reuses, so a later job in a new cgroup cannot inherit it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use serde_json::Value;

use super::jwt::Claims;
use crate::{
    identity::{Identity, IdentityError, IdentityProvider, IdentitySource},
    process::ProcessInfo,
};

/// What a login is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BindingKey {
    /// A person's login: their uid in one audit session.
    Session {
        /// Real uid of the process that logged in.
        uid: u32,
        /// Its audit session id.
        audit_session: u32,
    },
    /// A CI job: every process in one cgroup.
    Cgroup {
        /// cgroup v2 id (inode number of its directory).
        cgroup_id: u64,
    },
}

/// A login: who, and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The identity processes under this binding get (its `uid` is replaced
    /// by the connecting process's).
    pub identity: Identity,
    /// When the ID token expires; a refresh replaces the binding.
    pub expires_at: SystemTime,
    /// cgroup path of a CI job, relative to the hierarchy root, so the
    /// binding can be dropped when the cgroup is removed.
    pub cgroup: Option<String>,
}

/// The logins the agent holds, in its memory only: no file the user's own
/// processes could read.
#[derive(Debug, Default)]
pub struct Bindings {
    entries: Mutex<HashMap<BindingKey, Binding>>,
}

impl Bindings {
    /// Binds `key` to `binding`, replacing an earlier login there.
    pub fn bind(&self, key: BindingKey, binding: Binding) {
        self.lock().insert(key, binding);
    }

    /// Ends the login at `key`; whether there was one.
    pub fn unbind(&self, key: &BindingKey) -> bool {
        self.lock().remove(key).is_some()
    }

    /// The login at `key`, expired or not.
    pub fn get(&self, key: &BindingKey) -> Option<Binding> {
        self.lock().get(key).cloned()
    }

    /// Removes and returns expired logins and CI bindings whose cgroup no
    /// longer exists (`cgroup_exists` is asked with the cgroup's path), each
    /// with why it ended.
    pub fn remove_stale(
        &self,
        now: SystemTime,
        cgroup_exists: impl Fn(&str) -> bool,
    ) -> Vec<(BindingKey, Binding, &'static str)> {
        let mut entries = self.lock();
        let mut ended = Vec::new();
        entries.retain(|key, binding| {
            let reason = if binding.expires_at <= now {
                "expired"
            } else if binding.cgroup.as_deref().is_some_and(|cgroup| !cgroup_exists(cgroup)) {
                "cgroup_removed"
            } else {
                return true;
            };
            ended.push((*key, binding.clone(), reason));
            false
        });
        ended
    }

    /// The login `process` belongs to: its cgroup's CI job first (every
    /// process of the job, whatever its uid), then its uid's login in its
    /// audit session.
    pub fn lookup(&self, process: &ProcessInfo, now: SystemTime) -> Result<Identity, IdentityError> {
        let entries = self.lock();
        let session =
            process.audit_session.map(|audit_session| BindingKey::Session { uid: process.uid, audit_session });
        let binding = entries
            .get(&BindingKey::Cgroup { cgroup_id: process.cgroup_id })
            .or_else(|| session.and_then(|key| entries.get(&key)))
            .ok_or(IdentityError::NotLoggedIn { uid: process.uid })?;
        if binding.expires_at <= now {
            return Err(IdentityError::LoginExpired { uid: process.uid });
        }
        Ok(Identity { uid: process.uid, ..binding.identity.clone() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BindingKey, Binding>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Builds the identity a verified token stands for; `None` when it names
/// nobody (no `sub`).
///
/// `subject` is `ISSUER#sub`, so two issuers' subjects never collide;
/// `user` is `user_claim` (falling back to `sub`), and groups come from
/// `groups_claim` (a list of strings, or one string).
pub fn identity_from_claims(
    claims: &Claims,
    source: IdentitySource,
    user_claim: &str,
    groups_claim: Option<&str>,
    uid: u32,
) -> Option<Identity> {
    let sub = claims.get("sub").and_then(Value::as_str).filter(|sub| !sub.is_empty())?;
    let issuer = claims.get("iss").and_then(Value::as_str).unwrap_or_default();
    let user = claims.get(user_claim).and_then(Value::as_str).unwrap_or(sub).to_owned();
    let mut groups: Vec<String> = match groups_claim.and_then(|claim| claims.get(claim)) {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        Some(Value::String(group)) => vec![group.clone()],
        _ => Vec::new(),
    };
    groups.sort();
    groups.dedup();
    let email = claims.get("email").and_then(Value::as_str).map(str::to_owned);
    Some(Identity { source, subject: format!("{issuer}#{sub}"), user, email, uid, groups, token: None, actor: None })
}

/// Attributes processes to the OIDC logins in [`Bindings`]; a process with
/// none is refused, its client told to run `airlock login`.
#[derive(Debug, Default, Clone)]
pub struct OidcIdentityProvider {
    bindings: Arc<Bindings>,
}

impl OidcIdentityProvider {
    /// A provider reading `bindings`, which the control socket fills.
    pub fn new(bindings: Arc<Bindings>) -> Self {
        Self { bindings }
    }
}

impl IdentityProvider for OidcIdentityProvider {
    fn identify(&self, process: &ProcessInfo) -> Result<Identity, IdentityError> {
        self.bindings.lookup(process, SystemTime::now())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    const ALICE: u32 = 1001;
    const BOB: u32 = 1002;

    fn process(uid: u32, audit_session: Option<u32>, cgroup_id: u64) -> ProcessInfo {
        ProcessInfo { uid, loginuid: Some(uid), audit_session, cgroup_id, ..ProcessInfo::default() }
    }

    fn binding(user: &str, lifetime: Duration, cgroup: Option<&str>) -> Binding {
        let claims =
            json!({"iss": "https://id", "sub": user, "email": format!("{user}@example.com"), "groups": ["dba"]});
        Binding {
            identity: identity_from_claims(
                claims.as_object().unwrap(),
                IdentitySource::Oidc,
                "email",
                Some("groups"),
                0,
            )
            .unwrap(),
            expires_at: SystemTime::now() + lifetime,
            cgroup: cgroup.map(str::to_owned),
        }
    }

    #[test]
    fn two_users_on_one_host_keep_their_own_logins() {
        let bindings = Bindings::default();
        bindings.bind(
            BindingKey::Session { uid: ALICE, audit_session: 7 },
            binding("alice", Duration::from_secs(60), None),
        );
        bindings
            .bind(BindingKey::Session { uid: BOB, audit_session: 8 }, binding("bob", Duration::from_secs(60), None));
        let now = SystemTime::now();
        let alice = bindings.lookup(&process(ALICE, Some(7), 1), now).unwrap();
        assert_eq!(
            (alice.user.as_str(), alice.subject.as_str(), alice.uid),
            ("alice@example.com", "https://id#alice", ALICE)
        );
        assert_eq!(alice.groups, ["dba"]);
        assert_eq!(bindings.lookup(&process(BOB, Some(8), 1), now).unwrap().user, "bob@example.com");
    }

    #[test]
    fn su_and_sudo_do_not_carry_a_login_to_another_uid() {
        let bindings = Bindings::default();
        bindings.bind(
            BindingKey::Session { uid: ALICE, audit_session: 7 },
            binding("alice", Duration::from_secs(60), None),
        );
        let now = SystemTime::now();
        for uid in [0, BOB] {
            let error = bindings.lookup(&process(uid, Some(7), 1), now).unwrap_err();
            assert_eq!(error, IdentityError::NotLoggedIn { uid });
            assert!(error.to_string().ends_with("run: airlock login"));
        }
        // Alice in another session (another ssh login) has not logged in there.
        assert!(bindings.lookup(&process(ALICE, Some(9), 1), now).is_err());
        assert!(bindings.lookup(&process(ALICE, None, 1), now).is_err());
    }

    #[test]
    fn expired_logins_are_refused_and_pruned() {
        let bindings = Bindings::default();
        let key = BindingKey::Session { uid: ALICE, audit_session: 7 };
        bindings.bind(key, binding("alice", Duration::from_secs(1), None));
        let later = SystemTime::now() + Duration::from_secs(5);
        assert_eq!(
            bindings.lookup(&process(ALICE, Some(7), 1), later),
            Err(IdentityError::LoginExpired { uid: ALICE })
        );
        assert_eq!(bindings.remove_stale(later, |_| true)[0].2, "expired");
        assert_eq!(bindings.get(&key), None);
    }

    #[test]
    fn ci_jobs_are_bound_to_their_cgroup_only() {
        let bindings = Bindings::default();
        bindings
            .bind(BindingKey::Cgroup { cgroup_id: 42 }, binding("job-1", Duration::from_secs(60), Some("/ci/job-1")));
        let now = SystemTime::now();
        assert_eq!(bindings.lookup(&process(ALICE, None, 42), now).unwrap().subject, "https://id#job-1");
        assert_eq!(bindings.lookup(&process(0, None, 42), now).unwrap().uid, 0, "any process of the job");
        assert!(bindings.lookup(&process(ALICE, None, 43), now).is_err(), "another job's cgroup");
        assert_eq!(bindings.remove_stale(now, |path| path != "/ci/job-1")[0].2, "cgroup_removed");
        assert!(bindings.lookup(&process(ALICE, None, 42), now).is_err());
    }

    #[test]
    fn logout_ends_the_login() {
        let bindings = Bindings::default();
        let key = BindingKey::Session { uid: ALICE, audit_session: 7 };
        bindings.bind(key, binding("alice", Duration::from_secs(60), None));
        assert!(bindings.unbind(&key));
        assert!(!bindings.unbind(&key));
        assert!(OidcIdentityProvider::new(Arc::new(bindings)).identify(&process(ALICE, Some(7), 1)).is_err());
    }

    #[test]
    fn claims_give_user_and_groups() {
        let claims =
            json!({"iss": "https://ci", "sub": "repo:org/app:ref:main", "repository": "org/app", "team": "platform"});
        let identity =
            identity_from_claims(claims.as_object().unwrap(), IdentitySource::CiJob, "repository", Some("team"), 5)
                .unwrap();
        assert_eq!(identity.user, "org/app");
        assert_eq!(identity.groups, ["platform"]);
        let identity =
            identity_from_claims(claims.as_object().unwrap(), IdentitySource::CiJob, "email", None, 5).unwrap();
        assert_eq!(identity.user, "repo:org/app:ref:main", "falls back to sub");
        assert!(identity.groups.is_empty());
        for nobody in [json!({"iss": "https://ci"}), json!({"iss": "https://ci", "sub": ""})] {
            assert_eq!(identity_from_claims(nobody.as_object().unwrap(), IdentitySource::CiJob, "sub", None, 5), None);
        }
    }
}
