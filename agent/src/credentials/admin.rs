//! The admin login Airlock creates and drops roles with: a root-only TOML
//! file per target, read when needed and never logged.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_postgres::{NoTls, config::SslMode};

use super::{CredentialError, Secret};
use crate::{policy::UpstreamTls, proxy::postgres::tls};

/// How long an admin operation may take.
pub(super) const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct AdminFile {
    user: String,
    password: String,
    #[serde(default = "default_database")]
    database: String,
}

fn default_database() -> String {
    "postgres".into()
}

/// An admin login for one target.
pub struct AdminLogin {
    user: String,
    password: Secret,
    database: String,
    /// The file it was read from, for messages.
    source: std::path::PathBuf,
}

impl AdminLogin {
    /// A login not read from a file (yet): a rotation's new one.
    pub(super) fn new(user: String, password: Secret, database: String, source: std::path::PathBuf) -> Self {
        Self { user, password, database, source }
    }

    /// The role it logs in as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The password, for its SCRAM verifier.
    pub(super) fn password_bytes(&self) -> &[u8] {
        self.password.expose().as_bytes()
    }

    /// The database it logs in to.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Writes it to `path` as an admin file (root-only, mode 0600): to a
    /// new file beside it, synced, renamed over it, and the directory
    /// synced, so a crash leaves the old file or the new one, never half.
    pub(super) fn write_atomically(&self, path: &Path) -> Result<(), CredentialError> {
        use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
        let fail = |e: std::io::Error| CredentialError::AdminFile { path: path.to_owned(), message: e.to_string() };
        let file = AdminFile {
            user: self.user.clone(),
            password: self.password.expose().to_owned(),
            database: self.database.clone(),
        };
        let text = toml::to_string(&file).map_err(|e| CredentialError::AdminFile {
            path: path.to_owned(),
            message: format!("not writable as TOML ({})", first_line(&e.to_string())),
        })?;
        let dir = path.parent().unwrap_or(Path::new("/"));
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("admin");
        let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(fail)?;
        let written = out.write_all(text.as_bytes()).and_then(|()| out.sync_all());
        drop(out);
        if let Err(error) = written.and_then(|()| std::fs::rename(&temporary, path)) {
            let _ = std::fs::remove_file(&temporary);
            return Err(fail(error));
        }
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(fail)
    }

    /// Reads `path`, which must be a regular file owned by root and readable
    /// by nobody else: it holds the one long-lived secret of the scheme.
    pub fn load(path: &Path) -> Result<Self, CredentialError> {
        let fail = |message: String| CredentialError::AdminFile { path: path.to_owned(), message };
        let text = super::read_private_file(path)?;
        let file: AdminFile =
            toml::from_str(&text).map_err(|e| fail(format!("not valid ({})", described(&e, &text))))?;
        Ok(Self {
            user: file.user,
            password: Secret::new(file.password),
            database: file.database,
            source: path.to_owned(),
        })
    }

    /// Logs in over TLS as the target's policy says, as sessions do: the
    /// admin connection carries role passwords' verifiers and statements
    /// an on-path attacker must neither read nor inject into.
    pub async fn connect(&self, server: SocketAddr, mode: &UpstreamTls) -> Result<AdminSession, CredentialError> {
        let target = |message: String| CredentialError::Target { server, message };
        let login = async {
            let tcp = TcpStream::connect(server).await.map_err(|e| target(format!("connecting: {e}")))?;
            tcp.set_nodelay(true).map_err(|e| target(format!("connecting: {e}")))?;
            let stream = tls::secure(tcp, mode, server).await.map_err(|e| target(format!("admin connection: {e}")))?;
            let mut config = tokio_postgres::Config::new();
            config
                .user(&self.user)
                .password(self.password.expose())
                .dbname(&self.database)
                .application_name("airlock")
                // Negotiated already, on the stream.
                .ssl_mode(SslMode::Disable);
            // The server's own reason (wrong password, no such role, not
            // allowed by pg_hba.conf), and where the login comes from.
            config.connect_raw(stream, NoTls).await.map_err(|e| {
                target(format!(
                    "admin login {} refused: {}; check the admin login file {} and that the server lets this role log in",
                    self.user,
                    db_message(&e),
                    self.source.display()
                ))
            })
        };
        let (client, connection) = tokio::time::timeout(ADMIN_TIMEOUT, login)
            .await
            .map_err(|_| target(format!("admin login {} timed out", self.user)))??;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "admin connection ended");
            }
        });
        Ok(AdminSession { client, server })
    }
}

/// A logged-in admin connection to one server.
pub struct AdminSession {
    pub(super) client: tokio_postgres::Client,
    pub(super) server: SocketAddr,
}

impl AdminSession {
    /// Creates a login role valid until `expires`, member of `grants`. The
    /// password travels as a SCRAM verifier, so the server (and its
    /// statement log) never sees it in clear.
    pub async fn create_role(
        &self,
        role: &str,
        password: &Secret,
        expires: SystemTime,
        grants: &[String],
    ) -> Result<(), CredentialError> {
        let (client, server) = (&self.client, self.server);
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| CredentialError::Target { server, message: format!("no salt: {e}") })?;
        let verifier = scram_verifier(password.expose().as_bytes(), &salt, VERIFIER_ITERATIONS);
        let until = humantime::format_rfc3339_seconds(expires).to_string();
        let mut sql = format!(
            "CREATE ROLE {} LOGIN PASSWORD {} VALID UNTIL {}",
            quote_ident(role),
            quote_literal(&verifier),
            quote_literal(&until)
        );
        if !grants.is_empty() {
            let grants: Vec<String> = grants.iter().map(|g| quote_ident(g)).collect();
            sql.push_str(&format!(" IN ROLE {}", grants.join(", ")));
        }
        tokio::time::timeout(ADMIN_TIMEOUT, client.batch_execute(&sql))
            .await
            .map_err(|_| CredentialError::Target { server, message: "timed out creating the role".into() })?
            .map_err(|e| CredentialError::Target {
                server,
                message: format!("creating role {role}: {}", db_message(&e)),
            })
    }

    /// Ends the role's sessions and drops it. The admin role needs
    /// CREATEROLE and membership in pg_signal_backend. A role that came to
    /// own objects cannot be dropped; that is reported and the ledger keeps
    /// it for the next attempt.
    pub async fn drop_role(&self, role: &str) -> Result<u64, CredentialError> {
        let (client, server) = (&self.client, self.server);
        let target = |message: String| CredentialError::Target { server, message };
        let run = async {
            let terminated = client
                .execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", &[&role])
                .await?;
            let exists = client.query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role]).await?.is_some();
            if exists {
                client.batch_execute(&format!("DROP ROLE {}", quote_ident(role))).await?;
            }
            Ok::<_, tokio_postgres::Error>(terminated)
        };
        tokio::time::timeout(ADMIN_TIMEOUT, run)
            .await
            .map_err(|_| target("timed out dropping the role".into()))?
            .map_err(|e| target(format!("dropping role {role}: {}", db_message(&e))))
    }

    /// This connection, made unable to change anything: every transaction
    /// on it is READ ONLY, for reports that inspect the catalog.
    pub async fn read_only(self) -> Result<ReadOnlyAdminSession, CredentialError> {
        let server = self.server;
        tokio::time::timeout(
            ADMIN_TIMEOUT,
            self.client.batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"),
        )
        .await
        .map_err(|_| CredentialError::Target { server, message: "timed out".into() })?
        .map_err(|e| CredentialError::Target {
            server,
            message: format!("making the session read-only: {}", db_message(&e)),
        })?;
        Ok(ReadOnlyAdminSession { client: self.client, server })
    }
}

/// An admin connection that only reads (see [`AdminSession::read_only`]).
pub struct ReadOnlyAdminSession {
    client: tokio_postgres::Client,
    server: SocketAddr,
}

impl ReadOnlyAdminSession {
    /// Runs one query; the server's message on failure.
    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, CredentialError> {
        let server = self.server;
        tokio::time::timeout(ADMIN_TIMEOUT, self.client.query(sql, params))
            .await
            .map_err(|_| CredentialError::Target { server, message: "timed out reading the catalog".into() })?
            .map_err(|e| CredentialError::Target {
                server,
                message: format!("reading the catalog: {}", db_message(&e)),
            })
    }
}

/// PBKDF2 rounds in a just-in-time role's SCRAM verifier. Rounds slow
/// down guessing a password from a stolen verifier; these passwords are
/// 192 random bits, which no amount of guessing finds, so rounds would buy
/// nothing. With one, each login as the role (every session's, and the
/// catalog's) skips a millisecond of key derivation in the agent.
pub(super) const VERIFIER_ITERATIONS: u32 = 1;

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802,
/// 7677): `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
/// The password must need no SASLprep (Airlock's are hex).
pub(super) fn scram_verifier(password: &[u8], salt: &[u8], iterations: u32) -> String {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    use ring::{digest, hmac, pbkdf2};
    let mut salted = [0u8; 32];
    let rounds = std::num::NonZeroU32::new(iterations).unwrap_or(std::num::NonZeroU32::MIN);
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, rounds, salt, password, &mut salted);
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
    let client_key = hmac::sign(&key, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
    let server_key = hmac::sign(&key, b"Server Key");
    format!(
        "SCRAM-SHA-256${rounds}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key.as_ref()),
        STANDARD.encode(server_key.as_ref())
    )
}

/// The server's message and SQLSTATE, or the driver's error.
pub(super) fn db_message(error: &tokio_postgres::Error) -> String {
    error.as_db_error().map_or_else(|| error.to_string(), |db| format!("{} ({})", db.message(), db.code().code()))
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// A PostgreSQL identifier, always quoted.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A PostgreSQL string literal.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// What is wrong with an admin file, without its values: toml's messages
/// quote them (`invalid type: integer \`12345678\``), and the value may be
/// the password. Only messages that name fields are kept; the place is
/// given by line and column.
fn described(error: &toml::de::Error, text: &str) -> String {
    let message = first_line(error.message());
    let named = ["missing field", "unknown field", "duplicate key"].iter().any(|m| message.starts_with(m));
    let what = if named { message } else { "a value is not of the type expected there" };
    match error.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("{what}, at line {line}, column {column}")
        }
        None => what.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn scram_verifiers_match_an_independent_computation() {
        // Computed with Python's hashlib and hmac, outside Rust.
        let password = b"0123456789abcdef0123456789abcdef0123456789abcdef";
        let salt: Vec<u8> = (0..16).collect();
        assert_eq!(
            super::scram_verifier(password, &salt, 1),
            "SCRAM-SHA-256$1:AAECAwQFBgcICQoLDA0ODw==$EBYPMeya0qHTAl84ddfrWeLaQgYNq5Nu9FvE9KST0s8=:KajXmE56caL7tA7mX1xzBKSlJkyN/7x5RfzmbX0Xx5w="
        );
        assert_eq!(
            super::scram_verifier(password, &salt, 4096),
            "SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$/+Nfy5Ly+jWn678Tn45PSD+LF630Q8qeUa2Ioqqg2QQ=:gqDke8k56bJjEZh62XTa3P0b3SQkOBNTwU+eVpufu+E="
        );
    }

    use super::*;

    #[test]
    fn a_broken_admin_file_is_described_without_its_values() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct File {
            user: String,
            password: String,
        }
        let text = "user = \"admin\"\npassword = 12345678\n";
        let error = toml::from_str::<File>(text).unwrap_err();
        let described = described(&error, text);
        assert!(!described.contains("12345678"), "{described}");
        assert!(described.contains("line 2"), "{described}");
        let missing = toml::from_str::<File>("user = \"admin\"\n").unwrap_err();
        assert!(super::described(&missing, "").starts_with("missing field `password`"));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn admin_file_must_be_private_and_errors_never_show_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.toml");
        std::fs::write(&path, "user = \"admin\"\npassword = \"hunter2\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let open = AdminLogin::load(&path).err().unwrap().to_string();
        assert!(open.contains("mode 0600"), "{open}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        // SAFETY-free check: running as root is what lets the owner check pass.
        if nix::unistd::getuid().is_root() {
            let login = AdminLogin::load(&path).unwrap();
            assert_eq!((login.user.as_str(), login.database.as_str()), ("admin", "postgres"));
            std::fs::write(&path, "user = \"admin\"\npassword = \"hunter2\nx").unwrap();
            let bad = AdminLogin::load(&path).err().unwrap().to_string();
            assert!(!bad.contains("hunter2"), "{bad}");
        }
    }
}
