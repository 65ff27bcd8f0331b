//! Rotating the embedded engine's PostgreSQL admin login.
//!
//! PostgreSQL keeps one password per role, so a grace period, in which the
//! old login still works while the new one is in use, needs two roles used
//! in turn: the seed's role `R` and its partner `R_alt`. Each rotation
//! moves to the other one:
//!
//! 1. pending: a new random password for the partner, saved root-only in
//!    the admin store before the server hears of it;
//! 2. set: logged in as the live role, the partner is made (or brought
//!    back) with the live role's attributes and memberships and the new
//!    password (as a SCRAM verifier);
//! 3. tested: logged in as the partner, a probe role is made in the
//!    granted roles and dropped;
//! 4. switched: the partner's file becomes the live one (a rename); the old
//!    role is valid until the grace period ends;
//! 5. retired: the old role loses LOGIN and its password, its sessions end.
//!
//! Every step can run again after a crash: the saved state says which one
//! was under way, and each checks what the step before left.

use std::{net::SocketAddr, path::Path, time::SystemTime};

use super::{
    RotationError,
    state::{RotationState, Step},
};
use crate::{
    credentials::{
        AdminLogin, Engine, Secret,
        admin::{ADMIN_TIMEOUT, VERIFIER_ITERATIONS, db_message, quote_ident, quote_literal, scram_verifier},
        ledger::LedgerEntry,
        random_hex,
    },
    policy::UpstreamTls,
};

/// The suffix of the second admin role.
const PARTNER_SUFFIX: &str = "_alt";
/// PostgreSQL's identifier limit.
const MAX_ROLE_NAME: usize = 63;

/// One admin login's rotation context.
pub(super) struct AdminPair<'a> {
    /// The engine: its admin store and ledger.
    pub engine: &'a Engine,
    /// The admin file the policy names.
    pub seed: &'a Path,
    /// The server the login lives on.
    pub server: SocketAddr,
    /// TLS to it, as the target's policy says.
    pub tls: &'a UpstreamTls,
    /// Roles the target's just-in-time roles are granted: the probe is made
    /// in them, so the new login is known to be able to grant them.
    pub grants: Vec<String>,
}

/// The role that takes over from `user`.
pub(super) fn partner(user: &str) -> Result<String, RotationError> {
    match user.strip_suffix(PARTNER_SUFFIX) {
        Some(base) if !base.is_empty() => Ok(base.to_owned()),
        _ if user.len() + PARTNER_SUFFIX.len() <= MAX_ROLE_NAME => Ok(format!("{user}{PARTNER_SUFFIX}")),
        _ => Err(RotationError::Refused(format!(
            "admin role {user:?} is too long to have a partner role {user}{PARTNER_SUFFIX} (63 bytes at most)"
        ))),
    }
}

impl AdminPair<'_> {
    /// Step 1: the next login, saved before the server knows it. A next
    /// login saved by an earlier, interrupted attempt is used again.
    pub async fn prepare(&self, state: &mut RotationState) -> Result<(), RotationError> {
        let store = self.engine.admins();
        let live = store.load(self.seed)?;
        let to = partner(live.user())?;
        let next_path = store.next_path(self.seed);
        let reusable = next_path.exists() && AdminLogin::load(&next_path).is_ok_and(|next| next.user() == to);
        if !reusable {
            store.ensure_dir()?;
            let next =
                AdminLogin::new(to.clone(), Secret::new(random_hex(24)), live.database().to_owned(), next_path.clone());
            next.write_atomically(&next_path)?;
        }
        state.from = Some(live.user().to_owned());
        state.to = Some(to);
        state.step = Step::Pending;
        Ok(())
    }

    /// Step 2: the partner role made (or brought back) by the live login.
    pub async fn set(&self, state: &mut RotationState) -> Result<(), RotationError> {
        let next = self.next()?;
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| RotationError::Refused(format!("no randomness for a salt: {e}")))?;
        let verifier = scram_verifier(next.password_bytes(), &salt, VERIFIER_ITERATIONS);
        let admin = self.engine.admins().load(self.seed)?.connect(self.server, self.tls).await?;
        let run = async {
            let me = admin
                .client
                .query_one(
                    "SELECT oid = 10, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, \
                     current_setting('server_version_num')::int FROM pg_roles WHERE rolname = current_user",
                    &[],
                )
                .await?;
            let (bootstrap, superuser): (bool, bool) = (me.get(0), me.get(1));
            let version: i32 = me.get(7);
            if bootstrap {
                return Ok(Err(RotationError::Refused(format!(
                    "the admin login is {:?}, the server's bootstrap superuser: Airlock rotates only a role of its \
                     own (CREATE ROLE airlock_admin LOGIN CREATEROLE; GRANT pg_signal_backend TO airlock_admin)",
                    state.from.as_deref().unwrap_or("")
                ))));
            }
            if !superuser && !me.get::<_, bool>(3) {
                return Ok(Err(RotationError::Refused(
                    "the admin login has neither SUPERUSER nor CREATEROLE, so it cannot make its successor".into(),
                )));
            }
            let mut attributes = vec!["LOGIN"];
            attributes.push(if me.get(2) { "INHERIT" } else { "NOINHERIT" });
            for (column, attribute, needs_superuser) in [
                (1, "SUPERUSER", true),
                (3, "CREATEROLE", false),
                (4, "CREATEDB", false),
                (5, "REPLICATION", true),
                (6, "BYPASSRLS", true),
            ] {
                // Attributes a non-superuser may not even name stay unnamed.
                if me.get(column) && (superuser || !needs_superuser) {
                    attributes.push(attribute);
                }
            }
            let to = next.user();
            if admin.client.query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&to]).await?.is_none() {
                admin.client.batch_execute(&format!("CREATE ROLE {}", quote_ident(to))).await?;
            }
            admin
                .client
                .batch_execute(&format!(
                    "ALTER ROLE {} WITH {} PASSWORD {} VALID UNTIL 'infinity'",
                    quote_ident(to),
                    attributes.join(" "),
                    quote_literal(&verifier)
                ))
                .await?;
            // The live role's memberships, with the same options: the
            // roles just-in-time roles are granted, pg_signal_backend, and
            // (PostgreSQL 16+) the just-in-time roles it made, which only a
            // role with ADMIN OPTION on them may drop.
            let options = if version >= 160_000 { ", m.inherit_option, m.set_option" } else { ", true, true" };
            let memberships = admin
                .client
                .query(
                    &format!(
                        "SELECT r.rolname, m.admin_option{options} FROM pg_auth_members m \
                         JOIN pg_roles r ON r.oid = m.roleid \
                         WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = current_user) AND r.rolname <> $1"
                    ),
                    &[&to],
                )
                .await?;
            for row in memberships {
                let (role, with_admin, inherit, set): (String, bool, bool, bool) =
                    (row.get(0), row.get(1), row.get(2), row.get(3));
                let mut grant = format!("GRANT {} TO {}", quote_ident(&role), quote_ident(to));
                if version >= 160_000 {
                    grant.push_str(&format!(" WITH ADMIN {with_admin}, INHERIT {inherit}, SET {set}"));
                } else if with_admin {
                    grant.push_str(" WITH ADMIN OPTION");
                }
                admin.client.batch_execute(&grant).await?;
            }
            Ok(Ok(()))
        };
        self.timed(run, "making the next admin login")
            .await?
            .map_err(|e| self.target(format!("making the next admin login: {}", db_message(&e))))??;
        state.step = Step::Set;
        Ok(())
    }

    /// Step 3: the next login logs in, makes a probe role in the granted
    /// roles and drops it (the probe is in the ledger first, as every role
    /// Airlock makes).
    pub async fn test(&self, state: &mut RotationState) -> Result<(), RotationError> {
        let next = self.next()?;
        let admin = next.connect(self.server, self.tls).await?;
        let probe = format!("airlock_probe_{}", random_hex(6));
        let expires = SystemTime::now();
        self.engine.lock_ledger().append(&LedgerEntry::created(&probe, self.server, self.tls, self.seed, expires))?;
        let grants: Vec<String> = self.grants.iter().map(|g| quote_ident(g)).collect();
        let mut create = format!("CREATE ROLE {} NOLOGIN", quote_ident(&probe));
        if !grants.is_empty() {
            create.push_str(&format!(" IN ROLE {}", grants.join(", ")));
        }
        let made = self.timed(admin.client.batch_execute(&create), "making the probe role").await?;
        let dropped = admin.drop_role(&probe).await;
        if dropped.is_ok() {
            self.engine.note_dropped(&probe);
        }
        made.map_err(|e| self.target(format!("the next admin login could not make a role: {}", db_message(&e))))?;
        dropped?;
        let signal = self
            .timed(
                admin.client.query_one("SELECT pg_has_role(current_user, 'pg_signal_backend', 'MEMBER')", &[]),
                "checking the next admin login's memberships",
            )
            .await?
            .map_err(|e| self.target(db_message(&e)))?;
        if !signal.get::<_, bool>(0) {
            tracing::warn!(role = next.user(), "the admin login cannot end expired sessions (pg_signal_backend)");
        }
        state.step = Step::Tested;
        Ok(())
    }

    /// Step 4: the next login becomes the live one (unless an interrupted
    /// attempt already did that), and the old one is valid until
    /// `retire_at`.
    pub async fn switch(&self, state: &mut RotationState, retire_at: SystemTime) -> Result<(), RotationError> {
        let store = self.engine.admins();
        let (from, to) = self.names(state)?;
        let next_path = store.next_path(self.seed);
        if next_path.exists() {
            store.promote_next(self.seed)?;
        } else if store.load(self.seed)?.user() != to {
            return Err(RotationError::Refused(format!(
                "the next admin login for {} is gone before it was switched to; the rotation starts over",
                self.seed.display()
            )));
        }
        let admin = store.load(self.seed)?.connect(self.server, self.tls).await?;
        let until = humantime::format_rfc3339_seconds(retire_at).to_string();
        let sql = format!("ALTER ROLE {} VALID UNTIL {}", quote_ident(&from), quote_literal(&until));
        self.timed(admin.client.batch_execute(&sql), "limiting the old admin login")
            .await?
            .map_err(|e| self.target(format!("limiting the old admin login {from}: {}", db_message(&e))))?;
        state.step = Step::Switched;
        state.retire_at = Some(retire_at);
        Ok(())
    }

    /// Step 5: the old role can no longer log in; its sessions end.
    /// Returns how many were ended.
    pub async fn retire(&self, state: &RotationState) -> Result<u64, RotationError> {
        let (from, _) = self.names(state)?;
        let admin = self.engine.admins().load(self.seed)?.connect(self.server, self.tls).await?;
        let run = async {
            admin
                .client
                .batch_execute(&format!("ALTER ROLE {} WITH NOLOGIN PASSWORD NULL", quote_ident(&from)))
                .await?;
            admin
                .client
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()",
                    &[&from],
                )
                .await
        };
        self.timed(run, "retiring the old admin login")
            .await?
            .map_err(|e| self.target(format!("retiring the old admin login {from}: {}", db_message(&e))))
    }

    fn next(&self) -> Result<AdminLogin, RotationError> {
        Ok(AdminLogin::load(&self.engine.admins().next_path(self.seed))?)
    }

    fn names(&self, state: &RotationState) -> Result<(String, String), RotationError> {
        match (&state.from, &state.to) {
            (Some(from), Some(to)) => Ok((from.clone(), to.clone())),
            _ => Err(RotationError::Refused("the saved rotation state names no roles; it starts over".into())),
        }
    }

    async fn timed<T>(&self, work: impl Future<Output = T>, what: &str) -> Result<T, RotationError> {
        tokio::time::timeout(ADMIN_TIMEOUT, work).await.map_err(|_| self.target(format!("timed out {what}")))
    }

    fn target(&self, message: String) -> RotationError {
        RotationError::Credential(crate::credentials::CredentialError::Target { server: self.server, message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partners_alternate_and_fit_postgres_names() {
        assert_eq!(partner("airlock_admin").unwrap(), "airlock_admin_alt");
        assert_eq!(partner("airlock_admin_alt").unwrap(), "airlock_admin");
        assert_eq!(partner("_alt").unwrap(), "_alt_alt");
        assert!(partner(&"a".repeat(60)).is_err());
        assert_eq!(partner(&"a".repeat(59)).unwrap().len(), 63);
    }
}
