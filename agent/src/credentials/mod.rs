//! Just-in-time database logins, from Airlock's embedded engine.
//!
//! For a person, a target and a role set, Airlock creates a PostgreSQL role
//! with a random password that expires (`VALID UNTIL`), made a member of the
//! granted roles, and logs in with it upstream. The client never sees it.
//! The role is reused while still valid for the same person and grant,
//! dropped a short grace after its last session ends, and dropped (its
//! sessions terminated) when its time is up. Every role is written to a
//! ledger before it is created, so whatever a crash leaves behind is dropped
//! when the agent starts again.

mod admin;
mod admin_store;
mod ledger;
pub mod openbao;
pub mod rotation;

/// How SQL names an identifier: quoted, its quotes doubled.
pub use self::admin::quote_ident;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

pub use crate::secret::Secret;
pub use admin::{AdminLogin, AdminSession, ReadOnlyAdminSession};
pub use admin_store::AdminStore;
use ledger::{Ledger, LedgerEntry};
use openbao::{BaoToken, OpenBao};

use serde_json::json;

use crate::{
    audit::{AuditLog, Event},
    identity::Identity,
    policy::{CredentialSource, Credentials, OpenBaoAuth, RoleGrant, UpstreamTls},
};

/// A session's last use is followed by this much grace before the role goes,
/// so a client that reconnects at once reuses it.
const RELEASE_GRACE: Duration = Duration::from_secs(5);
/// A role closer than this to its expiry is not handed to a new session.
const REUSE_MARGIN: Duration = Duration::from_secs(30);

/// Why a login could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The admin credential file is missing, unsafe or malformed.
    #[error("admin credentials {path}: {message}")]
    AdminFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The target refused the admin's request.
    #[error("creating a login on {server}: {message}")]
    Target {
        /// The target server.
        server: SocketAddr,
        /// The server's or driver's message.
        message: String,
    },
    /// OpenBao refused or could not be reached.
    #[error("OpenBao at {addr}: {message}")]
    OpenBao {
        /// Server address.
        addr: String,
        /// What went wrong.
        message: String,
    },
    /// The target's OpenBao login acts as the person, and this identity
    /// carries no OIDC token to act with.
    #[error(
        "this target's OpenBao logins use the person's ID token (jwt_auth), and this connection's identity has \
         none: configure [oidc] so people run `airlock login`"
    )]
    NoPersonToken,
    /// The ledger could not be written, so no role may be created.
    #[error("credential ledger {path}: {source}")]
    Ledger {
        /// The ledger file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Reads a file that holds a secret: it must be a regular file owned by
/// root that nobody else can read.
pub fn read_private_file(path: &Path) -> Result<String, CredentialError> {
    use std::os::unix::fs::MetadataExt as _;
    let fail = |message: String| CredentialError::AdminFile { path: path.to_owned(), message };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() || meta.uid() != 0 || meta.mode() & 0o077 != 0 {
        return Err(fail(format!(
            "must be a regular file owned by root with mode 0600 or stricter (is uid {}, mode {:o})",
            meta.uid(),
            meta.mode() & 0o777
        )));
    }
    std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))
}

/// A created role, shared by the sessions that use it.
#[derive(Debug)]
pub struct Lease {
    /// Role name upstream.
    pub role: String,
    /// Its password.
    pub password: Secret,
    /// When the role stops being valid.
    pub expires: SystemTime,
    /// Roles it is a member of.
    pub grants: Vec<String>,
    server: SocketAddr,
    origin: Origin,
}

/// Who made a lease, and so how it ends.
#[derive(Debug)]
enum Origin {
    /// The embedded engine: shared per person and grant, dropped with the
    /// admin login, over TLS as the target's policy said.
    Embedded { key: LeaseKey, admin_file: PathBuf, tls: UpstreamTls },
    /// OpenBao: one lease per session, revoked when it ends.
    OpenBao { client: OpenBao, lease_id: String },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct LeaseKey {
    server: SocketAddr,
    subject: String,
    role_name: String,
}

struct Entry {
    lease: Arc<Lease>,
    sessions: usize,
}

/// The embedded credential engine.
pub struct Engine {
    ledger: Mutex<Ledger>,
    leases: Mutex<HashMap<LeaseKey, Entry>>,
    admins: AdminStore,
    /// Per admin file: held (shared) while a role is made, and (alone)
    /// while a rotation hands the admin login over.
    changeovers: Mutex<HashMap<PathBuf, Arc<tokio::sync::RwLock<()>>>>,
    audit: Arc<AuditLog>,
}

impl Engine {
    /// Opens the ledger in `state_dir`; role lifecycle events go to `audit`.
    pub fn open(state_dir: &Path, audit: Arc<AuditLog>) -> Result<Self, CredentialError> {
        Ok(Self {
            ledger: Mutex::new(Ledger::open(state_dir)?),
            leases: Mutex::new(HashMap::new()),
            admins: AdminStore::new(state_dir),
            changeovers: Mutex::new(HashMap::new()),
            audit,
        })
    }

    /// The lock an admin file's rotation holds while the login changes hands.
    fn admin_changeover(&self, admin_file: &Path) -> Arc<tokio::sync::RwLock<()>> {
        let mut changeovers = self.changeovers.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(changeovers.entry(admin_file.to_owned()).or_default())
    }

    /// Where the live admin logins are.
    pub fn admins(&self) -> &AdminStore {
        &self.admins
    }

    /// Drops every role the ledger lists as created and not dropped: what a
    /// crash or kill -9 left behind. Returns the roles dropped.
    pub async fn recover(&self) -> Vec<String> {
        let outstanding = self.lock_ledger().outstanding();
        let mut dropped = Vec::new();
        for entry in outstanding {
            match self.drop_role(&entry.admin_file, entry.server, &entry.tls, &entry.role).await {
                Ok(_) => {
                    self.note_dropped(&entry.role);
                    dropped.push(entry.role);
                }
                Err(error) => {
                    tracing::error!(role = %entry.role, %error, "could not drop a role left by an earlier run")
                }
            }
        }
        dropped
    }

    /// A login for `identity` on `server` with `grant`, from the target's
    /// credential source.
    pub async fn acquire(
        self: &Arc<Self>,
        server: SocketAddr,
        credentials: &Credentials,
        identity: &Identity,
        grant: &RoleGrant,
    ) -> Result<Arc<Lease>, CredentialError> {
        match &credentials.source {
            CredentialSource::Embedded { admin_file } => {
                self.acquire_embedded(server, &credentials.tls, admin_file, credentials.ttl, identity, grant).await
            }
            CredentialSource::OpenBao { addr, auth, mount, ca_file } => {
                let client =
                    |token| OpenBao { addr: addr.clone(), token, mount: mount.clone(), ca_file: ca_file.clone() };
                let client = match auth {
                    OpenBaoAuth::TokenFile(path) => client(BaoToken::File(path.clone())),
                    OpenBaoAuth::Jwt { mount: auth_mount, role } => {
                        let jwt = identity.token.as_ref().ok_or(CredentialError::NoPersonToken)?;
                        client(BaoToken::Anonymous).as_person(auth_mount, role, jwt).await?
                    }
                };
                let issued = client.issue(grant.openbao_role.as_deref().unwrap_or(&grant.name)).await?;
                let lease = Arc::new(Lease {
                    role: issued.username,
                    password: issued.password,
                    expires: SystemTime::now() + issued.lease_duration,
                    grants: Vec::new(),
                    server,
                    origin: Origin::OpenBao { client, lease_id: issued.lease_id },
                });
                self.record(
                    "credential.created",
                    Some(identity),
                    json!({
                        "source": "openbao",
                        "role": lease.role,
                        "server": server.to_string(),
                        "openbao_role": grant.openbao_role.as_deref().unwrap_or(&grant.name),
                        "openbao_auth": match auth {
                            OpenBaoAuth::TokenFile(_) => "agent_token",
                            OpenBaoAuth::Jwt { .. } => "person_jwt",
                        },
                        "expires": humantime::format_rfc3339_seconds(lease.expires).to_string(),
                    }),
                );
                Ok(lease)
            }
        }
    }

    /// A valid role already made for the same person and grant, or a new one.
    async fn acquire_embedded(
        self: &Arc<Self>,
        server: SocketAddr,
        tls: &UpstreamTls,
        admin_file: &Path,
        ttl: Duration,
        identity: &Identity,
        grant: &RoleGrant,
    ) -> Result<Arc<Lease>, CredentialError> {
        let key = LeaseKey { server, subject: identity.subject.clone(), role_name: grant.name.clone() };
        if let Some(entry) = self.lock_leases().get_mut(&key)
            && entry.lease.expires > SystemTime::now() + REUSE_MARGIN
        {
            entry.sessions += 1;
            return Ok(Arc::clone(&entry.lease));
        }
        // Not while a rotation hands the admin login over.
        let _changeover = self.admin_changeover(admin_file).read_owned().await;
        // Logged in before the ledger line: a login that fails leaves
        // nothing to clean up.
        let admin = self.admins.load(admin_file)?.connect(server, tls).await?;
        let role = role_name(&identity.user);
        let password = Secret::new(random_hex(24));
        let expires = SystemTime::now() + ttl;
        // Ledger first: a crash between the two leaves a ledger line for a
        // role that may not exist, which recovery drops harmlessly; the other
        // order could leave a role nobody knows about.
        self.lock_ledger().append(&LedgerEntry::created(&role, server, tls, admin_file, expires))?;
        if let Err(error) = admin.create_role(&role, &password, expires, &grant.grants).await {
            // Whatever the failed statement may have made goes at once; if
            // that fails too, the ledger keeps it for the next start.
            if admin.drop_role(&role).await.is_ok() {
                self.note_dropped(&role);
            }
            return Err(error);
        }
        let lease = Arc::new(Lease {
            role,
            password,
            expires,
            grants: grant.grants.clone(),
            server,
            origin: Origin::Embedded { key: key.clone(), admin_file: admin_file.to_owned(), tls: tls.clone() },
        });
        self.lock_leases().insert(key, Entry { lease: Arc::clone(&lease), sessions: 1 });
        self.record(
            "credential.created",
            Some(identity),
            json!({
                "role": lease.role,
                "server": server.to_string(),
                "grants": lease.grants,
                "expires": humantime::format_rfc3339_seconds(lease.expires).to_string(),
            }),
        );
        let engine = Arc::clone(self);
        let expiring = Arc::clone(&lease);
        tokio::spawn(async move {
            let left = expiring.expires.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::sleep(left).await;
            engine.retire(&expiring, "expired").await;
        });
        Ok(lease)
    }

    /// A session stopped using `lease`; the role goes after a short grace
    /// unless another session picks it up.
    pub fn release(self: &Arc<Self>, lease: &Arc<Lease>) {
        let key = match &lease.origin {
            Origin::Embedded { key, .. } => key,
            Origin::OpenBao { client, lease_id } => {
                let (engine, client, lease_id, role) =
                    (Arc::clone(self), client.clone(), lease_id.clone(), lease.role.clone());
                tokio::spawn(async move {
                    let outcome = match client.revoke(&lease_id).await {
                        Ok(()) => json!("revoked"),
                        Err(error) => json!({ "error": error.to_string() }),
                    };
                    engine.record(
                        "credential.dropped",
                        None,
                        json!({ "source": "openbao", "role": role, "reason": "released", "outcome": outcome }),
                    );
                });
                return;
            }
        };
        let unused = {
            let mut leases = self.lock_leases();
            match leases.get_mut(key) {
                Some(entry) if Arc::ptr_eq(&entry.lease, lease) => {
                    entry.sessions = entry.sessions.saturating_sub(1);
                    entry.sessions == 0
                }
                _ => false,
            }
        };
        if unused {
            let engine = Arc::clone(self);
            let lease = Arc::clone(lease);
            tokio::spawn(async move {
                tokio::time::sleep(RELEASE_GRACE).await;
                let still_unused = engine
                    .lock_leases()
                    .get(key_of(&lease))
                    .is_some_and(|entry| Arc::ptr_eq(&entry.lease, &lease) && entry.sessions == 0);
                if still_unused {
                    engine.retire(&lease, "released").await;
                }
            });
        }
    }

    /// Drops a lease's role now, ending its sessions.
    async fn retire(&self, lease: &Arc<Lease>, why: &str) {
        let Origin::Embedded { key, admin_file, tls } = &lease.origin else { return };
        {
            let mut leases = self.lock_leases();
            if leases.get(key).is_some_and(|entry| Arc::ptr_eq(&entry.lease, lease)) {
                leases.remove(key);
            }
        }
        let detail = |outcome: serde_json::Value| json!({ "role": lease.role, "server": lease.server.to_string(), "reason": why, "outcome": outcome });
        match self.drop_role(admin_file, lease.server, tls, &lease.role).await {
            Ok(terminated) => {
                self.note_dropped(&lease.role);
                tracing::info!(role = %lease.role, why, terminated, "just-in-time role dropped");
                self.record("credential.dropped", None, detail(json!({ "sessions_terminated": terminated })));
            }
            // The ledger keeps it; the next start drops it.
            Err(error) => {
                tracing::error!(role = %lease.role, %error, "could not drop a just-in-time role");
                self.record("credential.drop_failed", None, detail(json!({ "error": error.to_string() })));
            }
        }
    }

    /// Drops a role with the live admin login; returns how many of its
    /// sessions were terminated.
    async fn drop_role(
        &self,
        admin_file: &Path,
        server: SocketAddr,
        tls: &UpstreamTls,
        role: &str,
    ) -> Result<u64, CredentialError> {
        self.admins.load(admin_file)?.connect(server, tls).await?.drop_role(role).await
    }

    fn record(&self, kind: &str, identity: Option<&Identity>, detail: serde_json::Value) {
        let source = if detail["source"] == "openbao" { "openbao" } else { "embedded" };
        let event_name = match (kind, detail["reason"].as_str()) {
            ("credential.dropped", Some("expired")) => "expired",
            (kind, _) => kind.trim_start_matches("credential."),
        };
        crate::metrics::global().credential(event_name, source);
        let event = Event { kind, session: None, identity, process: None, target: None, detail };
        if let Err(error) = self.audit.append(event) {
            tracing::error!(%error, kind, "audit record lost");
        }
    }

    fn note_dropped(&self, role: &str) {
        if let Err(error) = self.lock_ledger().append(&LedgerEntry::dropped(role)) {
            tracing::error!(%error, role, "could not note a dropped role in the ledger");
        }
    }

    fn lock_ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_leases(&self) -> std::sync::MutexGuard<'_, HashMap<LeaseKey, Entry>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The reuse key of an embedded lease.
fn key_of(lease: &Lease) -> &LeaseKey {
    match &lease.origin {
        Origin::Embedded { key, .. } => key,
        // OpenBao leases are never in the reuse table; an impossible key.
        Origin::OpenBao { .. } => &NO_KEY,
    }
}

static NO_KEY: std::sync::LazyLock<LeaseKey> = std::sync::LazyLock::new(|| LeaseKey {
    server: SocketAddr::from(([0, 0, 0, 0], 0)),
    subject: String::new(),
    role_name: String::new(),
});

/// `airlock_<user>_<random>`: recognisable in pg_stat_activity, unique, and
/// within PostgreSQL's 63-byte identifier limit.
fn role_name(user: &str) -> String {
    let user: String = user
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(32)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("airlock_{user}_{}", random_hex(4))
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source failed");
    crate::hex::encode(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_safe_identifiers() {
        let name = role_name("Alice.O'Brien-x; DROP");
        assert!(name.starts_with("airlock_aliceobrienxdrop_"), "{name}");
        assert!(name.len() <= 63);
        assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        assert_ne!(role_name("a"), role_name("a"));
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2".into())), "Secret(***)");
    }
}
