//! Logins: `airlock login` (a person, by device flow), `airlock login
//! --token-file` (a CI job, by its job token), refresh before expiry, and
//! the end of a login (logout, expiry, the job's cgroup gone).
//!
//! Every login is bound to what the kernel says about the caller of the
//! control socket, never to anything the caller claims: a person's to their
//! uid and audit session, a job's to its cgroup.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    Binding, BindingKey, Bindings, CiIssuerConfig, OidcConfig, identity_from_claims,
    issuer::{Discovery, Issuer, IssuerError},
    jwt::{self, Claims},
    tokens::{self, Poll, TokenError},
};
use crate::{
    audit::{AuditLog, Event},
    http::Url,
    identity::{Identity, IdentitySource},
    process::ProcessInfo,
    secret::Secret,
};

/// Longest a device login waits for the person, whatever the issuer allows.
const MAX_DEVICE_WAIT: Duration = Duration::from_secs(15 * 60);
/// How often logins are checked for refresh and expiry.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(5);

/// Why a login, logout or refresh failed; the message is for the person
/// at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The caller has no audit session to bind a person's login to.
    #[error(
        "this terminal has no login session (audit session id unset: is pam_loginuid in the PAM stack?); \
         a login could not be kept apart from other sessions of uid {uid}"
    )]
    NoSession {
        /// The caller's uid.
        uid: u32,
    },
    /// A job token from a process whose cgroup cannot be bound.
    #[error("cannot bind a job token to cgroup {cgroup:?}: {why}")]
    UnbindableCgroup {
        /// The caller's cgroup.
        cgroup: String,
        /// Why not.
        why: String,
    },
    /// The token's issuer is not configured.
    #[error("tokens of issuer {0:?} are not accepted (not listed under [[oidc.ci]])")]
    UnknownIssuer(String),
    /// The issuer could not be used or refused the token.
    #[error(transparent)]
    Issuer(#[from] IssuerError),
    /// The token endpoint refused or failed.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The issuer's discovery document lacks an endpoint the flow needs.
    #[error("issuer {issuer} does not offer {what}")]
    Unsupported {
        /// The issuer.
        issuer: String,
        /// What is missing.
        what: &'static str,
    },
    /// The person did not approve in time.
    #[error("the login was not approved in time; run `airlock login` again")]
    TimedOut,
    /// The verified token names nobody.
    #[error("the token has no usable `{0}` claim")]
    Claim(&'static str),
    /// Logging out, but there is no login.
    #[error("not logged in")]
    NotLoggedIn,
    /// The login could not be recorded, so it is not made.
    #[error("the audit log refused the record: {0}")]
    Audit(String),
}

/// What `airlock login` shows the person while the agent waits.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DevicePrompt {
    /// Page to open.
    pub verification_uri: String,
    /// The page with the code filled in, if the issuer offers one.
    pub verification_uri_complete: Option<String>,
    /// Code to enter there.
    pub user_code: String,
    /// Seconds left to do it.
    pub expires_in: u64,
}

/// A login as `airlock whoami` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LoginInfo {
    /// Who.
    pub identity: Identity,
    /// Unix time the current ID token expires (refreshed before then when
    /// the issuer gave a refresh token).
    pub expires_at: Option<u64>,
    /// What the login is bound to, e.g. `uid 1001, audit session 7` or
    /// `cgroup /ci/job-42`.
    pub bound_to: String,
    /// Whether the agent will refresh it.
    pub refreshes: bool,
}

/// A trusted issuer, discovered on first use (so an issuer that is down
/// when the agent starts does not stop the agent) and kept once it worked.
struct IssuerSlot {
    url: String,
    audience: String,
    clock_skew: u64,
    discovered: tokio::sync::Mutex<Option<Arc<(Issuer, Discovery)>>>,
}

impl IssuerSlot {
    fn new(url: &str, audience: &str, clock_skew: u64) -> Self {
        Self { url: url.into(), audience: audience.into(), clock_skew, discovered: Default::default() }
    }

    async fn get(&self) -> Result<Arc<(Issuer, Discovery)>, IssuerError> {
        let mut slot = self.discovered.lock().await;
        if let Some(found) = slot.as_ref() {
            return Ok(Arc::clone(found));
        }
        let found = Arc::new(Issuer::discover(&self.url, &self.audience, self.clock_skew).await?);
        *slot = Some(Arc::clone(&found));
        Ok(found)
    }
}

/// A person's refresh token and when to use it.
struct Refresh {
    token: Secret,
    due: SystemTime,
}

/// The agent's logins: bindings the identity provider reads, and the means
/// to make, refresh and end them.
pub struct Logins {
    config: OidcConfig,
    people: IssuerSlot,
    jobs: Vec<(CiIssuerConfig, IssuerSlot)>,
    bindings: Arc<Bindings>,
    refresh: Mutex<HashMap<BindingKey, Refresh>>,
    cgroup_root: PathBuf,
    audit: Arc<AuditLog>,
}

impl Logins {
    /// Logins for `config`; `cgroup_root` is where the cgroup2 hierarchy is
    /// mounted (to see whether a job's cgroup still exists).
    pub fn new(config: OidcConfig, cgroup_root: PathBuf, audit: Arc<AuditLog>) -> Self {
        let people = IssuerSlot::new(&config.issuer, config.audience(), config.clock_skew_seconds);
        let jobs = config
            .ci
            .iter()
            .map(|ci| (ci.clone(), IssuerSlot::new(&ci.issuer, &ci.audience, config.clock_skew_seconds)))
            .collect();
        Self { config, people, jobs, bindings: Arc::default(), refresh: Mutex::default(), cgroup_root, audit }
    }

    /// The bindings the identity provider attributes processes by.
    pub fn bindings(&self) -> Arc<Bindings> {
        Arc::clone(&self.bindings)
    }

    /// Logs `caller` in by the device flow: `prompt` is told what the
    /// person must do, then this waits for the issuer's answer.
    pub async fn login(
        &self,
        caller: &ProcessInfo,
        prompt: impl FnOnce(DevicePrompt),
    ) -> Result<LoginInfo, LoginError> {
        let key = session_key(caller)?;
        let issuer = self.people.get().await?;
        let (verifier, discovery) = (&issuer.0, &issuer.1);
        let device_endpoint = endpoint(discovery.device_authorization_endpoint.as_deref(), verifier, "device flow")?;
        let token_endpoint = endpoint(discovery.token_endpoint.as_deref(), verifier, "a token endpoint")?;
        let authorization = tokens::start_device_login(&device_endpoint, &self.config.client_id).await?;
        prompt(DevicePrompt {
            verification_uri: authorization.verification_uri.clone(),
            verification_uri_complete: authorization.verification_uri_complete.clone(),
            user_code: authorization.user_code.clone(),
            expires_in: authorization.expires_in,
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(authorization.expires_in).min(MAX_DEVICE_WAIT);
        let mut interval = Duration::from_secs(authorization.interval);
        let granted = loop {
            tokio::time::sleep(interval).await;
            if tokio::time::Instant::now() >= deadline {
                return Err(LoginError::TimedOut);
            }
            match tokens::poll_device_login(&token_endpoint, &self.config.client_id, &authorization.device_code).await?
            {
                Poll::Pending => {}
                Poll::SlowDown => interval += Duration::from_secs(5),
                Poll::Granted(granted) => break granted,
            }
        };
        let claims = verifier.verify(granted.id_token.expose()).await?;
        let identity = Identity { token: Some(granted.id_token), ..self.person(&claims, caller.uid)? };
        let (issued, expires) = lifetime(&claims)?;
        let refreshes = granted.refresh_token.is_some();
        let bound_to = describe_binding(&key, None);
        let detail =
            json!({"via": "device", "bound_to": bound_to, "expires_at": unix(expires), "refreshes": refreshes});
        self.record("identity.login", &identity, Some(caller), detail)?;
        self.bindings.bind(key, Binding { identity: identity.clone(), expires_at: expires, cgroup: None });
        self.set_refresh(key, granted.refresh_token, issued, expires);
        Ok(LoginInfo { identity, expires_at: Some(unix(expires)), bound_to, refreshes })
    }

    /// Binds a CI job's token to the caller's cgroup.
    pub async fn login_job(&self, caller: &ProcessInfo, token: &Secret) -> Result<LoginInfo, LoginError> {
        let cgroup = self.job_cgroup(caller)?;
        let iss = jwt::unverified_issuer(token.expose()).map_err(IssuerError::Token)?;
        let (ci, slot) =
            self.jobs.iter().find(|(ci, _)| ci.issuer == iss).ok_or_else(|| LoginError::UnknownIssuer(iss.clone()))?;
        let issuer = slot.get().await?;
        let claims = issuer.0.verify(token.expose()).await?;
        let identity = identity_from_claims(
            &claims,
            IdentitySource::CiJob,
            &ci.user_claim,
            ci.groups_claim.as_deref(),
            caller.uid,
        )
        .ok_or(LoginError::Claim("sub"))?;
        let identity = Identity { token: Some(token.clone()), ..identity };
        let (_, expires) = lifetime(&claims)?;
        let key = BindingKey::Cgroup { cgroup_id: caller.cgroup_id };
        let bound_to = describe_binding(&key, Some(&cgroup));
        let detail = json!({"via": "job_token", "bound_to": bound_to, "expires_at": unix(expires)});
        self.record("identity.login", &identity, Some(caller), detail)?;
        let binding = Binding { identity: identity.clone(), expires_at: expires, cgroup: Some(cgroup) };
        self.bindings.bind(key, binding);
        Ok(LoginInfo { identity, expires_at: Some(unix(expires)), bound_to, refreshes: false })
    }

    /// The login `caller` would be attributed to, if any.
    pub fn whoami(&self, caller: &ProcessInfo) -> Option<LoginInfo> {
        let (key, binding) = self.binding_of(caller)?;
        Some(self.info(&key, binding, caller.uid))
    }

    /// Ends the login `caller` is attributed to.
    pub fn logout(&self, caller: &ProcessInfo) -> Result<LoginInfo, LoginError> {
        let (key, binding) = self.binding_of(caller).ok_or(LoginError::NotLoggedIn)?;
        let info = self.info(&key, binding, caller.uid);
        self.end(&key, "logout", Some(caller));
        Ok(info)
    }

    fn info(&self, key: &BindingKey, binding: Binding, uid: u32) -> LoginInfo {
        LoginInfo {
            bound_to: describe_binding(key, binding.cgroup.as_deref()),
            expires_at: Some(unix(binding.expires_at)),
            identity: Identity { uid, ..binding.identity },
            refreshes: self.lock_refresh().contains_key(key),
        }
    }

    /// Refreshes logins before their ID token expires and ends those that
    /// expired or whose job cgroup is gone. Runs until the agent exits.
    pub async fn maintain(self: Arc<Self>) {
        let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.refresh_due().await;
            self.end_stale();
        }
    }

    async fn refresh_due(&self) {
        let now = SystemTime::now();
        let due: Vec<(BindingKey, Secret)> = self
            .lock_refresh()
            .iter()
            .filter(|(_, refresh)| refresh.due <= now)
            .map(|(key, refresh)| (*key, refresh.token.clone()))
            .collect();
        for (key, token) in due {
            if let Err(error) = self.refresh_one(key, &token).await {
                let Some(binding) = self.bindings.get(&key) else { continue };
                let permanent = matches!(error, LoginError::Token(TokenError::Refused { .. }) | LoginError::Claim(_));
                if permanent {
                    self.lock_refresh().remove(&key);
                } else if let Some(refresh) = self.lock_refresh().get_mut(&key) {
                    refresh.due = now + MAINTENANCE_INTERVAL * 6;
                }
                let detail =
                    json!({"error": error.to_string(), "retrying": !permanent, "expires_at": unix(binding.expires_at)});
                if let Err(error) = self.record("identity.refresh_failed", &binding.identity, None, detail) {
                    tracing::error!(%error, "recording a failed refresh");
                }
            }
        }
    }

    async fn refresh_one(&self, key: BindingKey, token: &Secret) -> Result<(), LoginError> {
        let issuer = self.people.get().await?;
        let (verifier, discovery) = (&issuer.0, &issuer.1);
        let endpoint = endpoint(discovery.token_endpoint.as_deref(), verifier, "a token endpoint")?;
        let fresh = tokens::refresh(&endpoint, &self.config.client_id, token).await?;
        let claims = verifier.verify(fresh.id_token.expose()).await?;
        let Some(current) = self.bindings.get(&key) else { return Ok(()) };
        let identity = Identity { token: Some(fresh.id_token), ..self.person(&claims, current.identity.uid)? };
        if identity.subject != current.identity.subject {
            return Err(LoginError::Claim("sub (the refreshed token names someone else)"));
        }
        let (issued, expires) = lifetime(&claims)?;
        self.record("identity.refreshed", &identity, None, json!({"expires_at": unix(expires)}))?;
        self.bindings.bind(key, Binding { identity, expires_at: expires, cgroup: None });
        self.set_refresh(key, fresh.refresh_token.or(Some(token.clone())), issued, expires);
        Ok(())
    }

    fn end_stale(&self) {
        let now = SystemTime::now();
        for (key, binding, reason) in self.bindings.remove_stale(now, |cgroup| self.cgroup_exists(cgroup)) {
            self.lock_refresh().remove(&key);
            let detail = json!({"reason": reason, "bound_to": describe_binding(&key, binding.cgroup.as_deref())});
            if let Err(error) = self.record("identity.logout", &binding.identity, None, detail) {
                tracing::error!(%error, "recording the end of a login");
            }
        }
    }

    fn end(&self, key: &BindingKey, reason: &str, caller: Option<&ProcessInfo>) {
        let Some(binding) = self.bindings.get(key) else { return };
        self.bindings.unbind(key);
        self.lock_refresh().remove(key);
        let detail = json!({"reason": reason, "bound_to": describe_binding(key, binding.cgroup.as_deref())});
        if let Err(error) = self.record("identity.logout", &binding.identity, caller, detail) {
            tracing::error!(%error, "recording a logout");
        }
    }

    fn binding_of(&self, caller: &ProcessInfo) -> Option<(BindingKey, Binding)> {
        let job = BindingKey::Cgroup { cgroup_id: caller.cgroup_id };
        let session = session_key(caller).ok();
        [Some(job), session].into_iter().flatten().find_map(|key| Some((key, self.bindings.get(&key)?)))
    }

    fn person(&self, claims: &Claims, uid: u32) -> Result<Identity, LoginError> {
        let config = &self.config;
        identity_from_claims(claims, IdentitySource::Oidc, &config.user_claim, Some(&config.groups_claim), uid)
            .ok_or(LoginError::Claim("sub"))
    }

    /// A job's cgroup may be bound only if it is the job's own: not the
    /// hierarchy root, and holding no process of another uid (else one
    /// job's token would vouch for someone else's connections).
    fn job_cgroup(&self, caller: &ProcessInfo) -> Result<String, LoginError> {
        let cgroup = caller.cgroup.clone().unwrap_or_default();
        let refuse = |why: &str| LoginError::UnbindableCgroup { cgroup: cgroup.clone(), why: why.into() };
        if cgroup.is_empty() || cgroup == "/" {
            return Err(refuse(
                "it is the root of the hierarchy; run each job in a cgroup of its own (see systemd/README.md)",
            ));
        }
        if caller.uid != 0 {
            let procs = std::fs::read_to_string(self.cgroup_dir(&cgroup).join("cgroup.procs"))
                .map_err(|e| refuse(&format!("cannot list its processes: {e}")))?;
            let foreign = procs
                .lines()
                .filter_map(|pid| pid.trim().parse::<u32>().ok())
                .any(|pid| crate::process::real_uid(pid).is_some_and(|uid| uid != caller.uid));
            if foreign {
                return Err(refuse("it holds processes of other users"));
            }
        }
        Ok(cgroup)
    }

    fn cgroup_dir(&self, cgroup: &str) -> PathBuf {
        self.cgroup_root.join(cgroup.trim_start_matches('/'))
    }

    fn cgroup_exists(&self, cgroup: &str) -> bool {
        self.cgroup_dir(cgroup).join("cgroup.procs").exists()
    }

    fn set_refresh(&self, key: BindingKey, token: Option<Secret>, issued: SystemTime, expires: SystemTime) {
        let mut refresh = self.lock_refresh();
        match token {
            // Two thirds into the token's life: room for the issuer to be slow or down a while.
            Some(token) => {
                let life = expires.duration_since(issued).unwrap_or_default();
                refresh.insert(key, Refresh { token, due: issued + life * 2 / 3 });
            }
            None => {
                refresh.remove(&key);
            }
        }
    }

    fn record(
        &self,
        kind: &str,
        identity: &Identity,
        process: Option<&ProcessInfo>,
        detail: Value,
    ) -> Result<(), LoginError> {
        let event = Event { kind, session: None, identity: Some(identity), process, target: None, detail };
        self.audit.append(event).map(drop).map_err(|e| LoginError::Audit(e.to_string()))
    }

    fn lock_refresh(&self) -> std::sync::MutexGuard<'_, HashMap<BindingKey, Refresh>> {
        self.refresh.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn session_key(caller: &ProcessInfo) -> Result<BindingKey, LoginError> {
    let audit_session = caller.audit_session.ok_or(LoginError::NoSession { uid: caller.uid })?;
    Ok(BindingKey::Session { uid: caller.uid, audit_session })
}

fn endpoint(url: Option<&str>, issuer: &Issuer, what: &'static str) -> Result<Url, LoginError> {
    let unsupported = || LoginError::Unsupported { issuer: issuer.issuer().into(), what };
    Url::parse(url.ok_or_else(unsupported)?).map_err(|_| unsupported())
}

/// `iat` (or now) and `exp` of a verified token.
fn lifetime(claims: &Claims) -> Result<(SystemTime, SystemTime), LoginError> {
    let time = |name| claims.get(name).and_then(Value::as_u64).map(|s| UNIX_EPOCH + Duration::from_secs(s));
    let expires = time("exp").ok_or(LoginError::Claim("exp"))?;
    Ok((time("iat").unwrap_or_else(SystemTime::now).min(expires), expires))
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

fn describe_binding(key: &BindingKey, cgroup: Option<&str>) -> String {
    match (key, cgroup) {
        (BindingKey::Session { uid, audit_session }, _) => format!("uid {uid}, audit session {audit_session}"),
        (BindingKey::Cgroup { .. }, Some(path)) => format!("cgroup {path}"),
        (BindingKey::Cgroup { cgroup_id }, None) => format!("cgroup id {cgroup_id}"),
    }
}
