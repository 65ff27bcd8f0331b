//! The agent's configuration file (`/etc/airlock/airlock.toml`).
//!
//! Every setting is optional. Relative paths are relative to the directory
//! of the configuration file, so a config kept next to its policies works
//! from any working directory.

use std::{
    io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Deserializer, de::Error as _};

use crate::source::{Diagnostic, SourceFile};

/// Agent configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory of policy files (`*.toml` directly in it; not recursive).
    pub policies_dir: PathBuf,
    /// Agent state.
    pub state_dir: PathBuf,
    /// Audit log directory.
    pub audit_dir: PathBuf,
    /// Unix socket the CLI talks to.
    pub control_socket: PathBuf,
    /// bpffs directory the programs, links and maps are pinned under.
    pub bpffs_dir: PathBuf,
    /// cgroup v2 directory to attach at (absolute); `None`: the cgroup2 root,
    /// i.e. every process on the host.
    #[serde(deserialize_with = "absolute")]
    pub cgroup: Option<PathBuf>,
    /// cgroup the agent moves itself into, whose connections are never
    /// redirected (absolute); `None`: chosen at start-up.
    #[serde(deserialize_with = "absolute")]
    pub agent_cgroup: Option<PathBuf>,
    /// Where redirected connections arrive.
    #[serde(deserialize_with = "listening")]
    pub listener: ListenerConfig,
    /// Members of this Unix group see every session in `airlock status`
    /// (root always does).
    pub admin_group: Option<String>,
    /// How long connecting to a target may take, in milliseconds (> 0).
    #[serde(deserialize_with = "nonzero_timeout")]
    pub upstream_connect_timeout_ms: u64,
    /// Log filter (`RUST_LOG` syntax), used when `RUST_LOG` is unset.
    pub log: String,
    /// The agent's nice value (-20 to 19): below users' processes (0) by
    /// default, so that their load does not stall every protected
    /// connection (see `daemon::priority`).
    #[serde(deserialize_with = "nice_value")]
    pub nice: i32,
    /// How the audit log is kept.
    pub audit: AuditConfig,
    /// OIDC identities; `None`: local Unix users and groups (for trying
    /// Airlock out).
    pub oidc: Option<crate::identity::oidc::OidcConfig>,
    /// Where approvals are decided: this host only, or across hosts
    /// through OpenBao.
    pub approvals: crate::approvals::exchange::ApprovalsConfig,
    /// Rotation of the SSH user CA.
    #[serde(deserialize_with = "ssh_ca_rotation")]
    pub ssh_ca: SshCaConfig,
    /// Metrics and health for monitoring.
    pub metrics: MetricsConfig,
    /// The sweep for secrets left on the host (`[scan]`).
    pub scan: crate::scan::settings::ScanSettings,
}

/// `[metrics]`: where Prometheus scrapes the agent (`/metrics`) and
/// supervisors ask `/healthz` and `/readyz`. Off unless `listen` is set.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// A loopback address and port, e.g. `"127.0.0.1:9874"`.
    #[serde(deserialize_with = "loopback")]
    pub listen: Option<std::net::SocketAddr>,
}

/// `[ssh_ca]`: when the SSH user CA rotates. Its next key is published
/// (`airlock ssh-ca --user` prints both) for `rotation_grace` before it
/// signs: the time IT has to add it to targets' `TrustedUserCAKeys`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SshCaConfig {
    /// Rotate on a schedule (`airlock rotate` works either way).
    pub rotate: bool,
    /// Time between rotations, e.g. `"365d"`.
    #[serde(deserialize_with = "duration")]
    pub rotate_every: std::time::Duration,
    /// How long the next key is published before it signs, e.g. `"30d"`.
    #[serde(deserialize_with = "duration")]
    pub rotation_grace: std::time::Duration,
}

impl Default for SshCaConfig {
    fn default() -> Self {
        Self {
            rotate: true,
            rotate_every: std::time::Duration::from_secs(365 * 86_400),
            rotation_grace: std::time::Duration::from_secs(30 * 86_400),
        }
    }
}

/// `[audit]`: segments, checkpoints, durability, retention and who may read.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Unix group whose members may read the log with `airlock audit` (root always may).
    pub group: Option<String>,
    /// A segment closes at this size.
    pub segment_max_mb: u64,
    /// A segment closes at this age.
    pub segment_max_hours: u64,
    /// A signed checkpoint at least every this many records…
    pub checkpoint_records: u64,
    /// …and every this many seconds while records are written.
    pub checkpoint_seconds: u64,
    /// When records reach stable storage: `always`, `checkpoint` or `never`.
    pub fsync: crate::audit::Fsync,
    /// Closed segments older than this are removed (the removal is recorded).
    pub retain_days: Option<u64>,
    /// Closed segments beyond this size in all are removed, oldest first.
    pub retain_max_mb: Option<u64>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            group: None,
            segment_max_mb: 64,
            segment_max_hours: 24,
            checkpoint_records: 1000,
            checkpoint_seconds: 60,
            fsync: crate::audit::Fsync::Checkpoint,
            retain_days: None,
            retain_max_mb: None,
        }
    }
}

/// The loopback listener that redirected connections are sent to.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Port on 127.0.0.1 and ::1 (not 0). Privileged on purpose: while the
    /// agent is down the programs still redirect to it, and no unprivileged
    /// process can bind it to receive those connections.
    #[serde(deserialize_with = "nonzero_port")]
    pub port: u16,
    /// Listen on 127.0.0.1.
    pub ipv4: bool,
    /// Listen on ::1.
    pub ipv6: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            policies_dir: "/etc/airlock/policies".into(),
            state_dir: "/var/lib/airlock".into(),
            audit_dir: "/var/log/airlock/audit".into(),
            control_socket: "/run/airlock/airlock.sock".into(),
            bpffs_dir: "/sys/fs/bpf/airlock".into(),
            cgroup: None,
            agent_cgroup: None,
            listener: ListenerConfig::default(),
            admin_group: None,
            upstream_connect_timeout_ms: 5000,
            log: "info".into(),
            nice: crate::daemon::priority::DEFAULT_NICE,
            audit: AuditConfig::default(),
            oidc: None,
            approvals: Default::default(),
            ssh_ca: SshCaConfig::default(),
            metrics: MetricsConfig::default(),
            scan: Default::default(),
        }
    }
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self { port: 874, ipv4: true, ipv6: true }
    }
}

/// Why a configuration file was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not a valid configuration.
    #[error("{0}")]
    Invalid(Diagnostic),
}

// Validation happens while deserializing so that each error carries the
// span of the offending value.

fn nonzero_port<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    match u16::deserialize(deserializer)? {
        0 => Err(D::Error::custom("listener.port must not be 0")),
        port => Ok(port),
    }
}

fn nice_value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i32, D::Error> {
    match i32::deserialize(deserializer)? {
        nice @ -20..=19 => Ok(nice),
        _ => Err(D::Error::custom("nice must be from -20 to 19")),
    }
}

fn nonzero_timeout<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    match u64::deserialize(deserializer)? {
        0 => Err(D::Error::custom("upstream_connect_timeout_ms must be greater than 0")),
        ms => Ok(ms),
    }
}

/// cgroup paths relative to the config file would be meaningless, and
/// guessing another base could attach somewhere unintended.
fn absolute<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<PathBuf>, D::Error> {
    let path = PathBuf::deserialize(deserializer)?;
    if path.is_relative() {
        return Err(D::Error::custom("must be an absolute path (like /sys/fs/cgroup/...)"));
    }
    Ok(Some(path))
}

/// Metrics name targets and count sessions: for this host's eyes (and a
/// local Prometheus or node agent) only.
fn loopback<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<std::net::SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    let addr: std::net::SocketAddr = text
        .parse()
        .map_err(|e| D::Error::custom(format!("metrics.listen {text:?}: {e} (e.g. \"127.0.0.1:9874\")")))?;
    if !addr.ip().is_loopback() {
        return Err(D::Error::custom(format!(
            "metrics.listen {addr} is not a loopback address: metrics stay on this host (127.0.0.1 or ::1)"
        )));
    }
    Ok(Some(addr))
}

/// A duration as people write it: `"30d"`, `"15m"`.
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<std::time::Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(|e| D::Error::custom(format!("{text:?}: {e} (e.g. \"30d\", \"12h\")")))
}

/// The grace must end before the next rotation starts.
fn ssh_ca_rotation<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SshCaConfig, D::Error> {
    let config = SshCaConfig::deserialize(deserializer)?;
    if config.rotate_every < std::time::Duration::from_secs(3600) {
        return Err(D::Error::custom("ssh_ca.rotate_every must be at least 1h"));
    }
    if config.rotation_grace >= config.rotate_every {
        return Err(D::Error::custom("ssh_ca.rotation_grace must be shorter than ssh_ca.rotate_every"));
    }
    Ok(config)
}

/// Both families off would leave the programs redirecting to a port nobody
/// listens on: every protected connection would fail.
fn listening<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ListenerConfig, D::Error> {
    let listener = ListenerConfig::deserialize(deserializer)?;
    if !listener.ipv4 && !listener.ipv6 {
        return Err(D::Error::custom(
            "listener.ipv4 and listener.ipv6 are both false: nothing would receive redirected connections",
        ));
    }
    Ok(listener)
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_str_at(&text, path)
    }

    /// Parses and validates configuration `text` as if read from `path`
    /// (errors name it; relative paths resolve against its directory).
    pub fn from_str_at(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let source = SourceFile::new(path, text);
        let mut config: Self = toml::from_str(text).map_err(|e| ConfigError::Invalid(source.toml_error(&e)))?;
        config.approvals.validate().map_err(|message| ConfigError::Invalid(Diagnostic::without_location(message)))?;
        let base = path.parent().unwrap_or(Path::new(""));
        for dir in [
            &mut config.policies_dir,
            &mut config.state_dir,
            &mut config.audit_dir,
            &mut config.control_socket,
            &mut config.bpffs_dir,
        ] {
            if dir.is_relative() {
                *dir = base.join(&*dir);
            }
        }
        if let Some(relative) = config.scan.paths.iter().find(|p| p.is_relative()) {
            return Err(ConfigError::Invalid(Diagnostic::without_location(format!(
                "scan.paths: {} is not an absolute path",
                relative.display()
            ))));
        }
        for file in [&mut config.approvals.token_file, &mut config.approvals.ca_file, &mut config.scan.rules]
            .into_iter()
            .flatten()
        {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_str_at(text, Path::new("/etc/airlock/airlock.toml"))
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn an_openbao_approvals_backend_must_say_where_and_with_what_token() {
        let message = error("[approvals]\nbackend = \"openbao\"\naddress = \"https://bao:8200\"\n");
        assert!(message.contains("needs address and token_file"), "{message}");
        let message =
            error("[approvals]\nbackend = \"openbao\"\naddress = \"https://b\"\ntoken_file = \"t\"\nhost = \"a/b\"\n");
        assert!(message.contains("host \"a/b\""), "{message}");
        assert!(error("[approvals]\nbackend = \"vault\"\n").contains("unknown variant"));
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.policies_dir, Path::new("/etc/airlock/policies"));
        assert_eq!(config.state_dir, Path::new("/var/lib/airlock"));
        assert_eq!(config.audit_dir, Path::new("/var/log/airlock/audit"));
        assert_eq!(config.control_socket, Path::new("/run/airlock/airlock.sock"));
        assert_eq!(config.bpffs_dir, Path::new("/sys/fs/bpf/airlock"));
        assert_eq!((config.cgroup, config.agent_cgroup, config.admin_group), (None, None, None));
        assert_eq!(config.listener, ListenerConfig { port: 874, ipv4: true, ipv6: true });
        assert_eq!(config.upstream_connect_timeout_ms, 5000);
        assert_eq!(config.log, "info");
    }

    #[test]
    fn every_setting_is_read() {
        let config = parse(
            r#"policies_dir = "/p"
state_dir = "/s"
audit_dir = "/a"
control_socket = "/c.sock"
bpffs_dir = "/sys/fs/bpf/x"
cgroup = "/sys/fs/cgroup/ci.slice"
agent_cgroup = "/sys/fs/cgroup/airlock.slice"
admin_group = "airlock-admins"
upstream_connect_timeout_ms = 250
log = "debug"
nice = 0

[listener]
port = 875
ipv6 = false

[audit]
group = "security"
retain_days = 90
fsync = "always"

[approvals]
backend = "openbao"
address = "https://bao.internal:8200"
token_file = "credentials/approvals-token"
host = "runner-7"

[ssh_ca]
rotate_every = "90d"
rotation_grace = "14d"
"#,
        )
        .unwrap();
        assert_eq!(
            config,
            Config {
                policies_dir: "/p".into(),
                state_dir: "/s".into(),
                audit_dir: "/a".into(),
                control_socket: "/c.sock".into(),
                bpffs_dir: "/sys/fs/bpf/x".into(),
                cgroup: Some("/sys/fs/cgroup/ci.slice".into()),
                agent_cgroup: Some("/sys/fs/cgroup/airlock.slice".into()),
                listener: ListenerConfig { port: 875, ipv4: true, ipv6: false },
                admin_group: Some("airlock-admins".into()),
                upstream_connect_timeout_ms: 250,
                log: "debug".into(),
                nice: 0,
                audit: AuditConfig {
                    group: Some("security".into()),
                    retain_days: Some(90),
                    fsync: crate::audit::Fsync::Always,
                    ..AuditConfig::default()
                },
                oidc: None,
                approvals: crate::approvals::exchange::ApprovalsConfig {
                    backend: crate::approvals::exchange::Backend::Openbao,
                    address: Some("https://bao.internal:8200".into()),
                    token_file: Some("/etc/airlock/credentials/approvals-token".into()),
                    host: Some("runner-7".into()),
                    ..Default::default()
                },
                metrics: MetricsConfig::default(),
                ssh_ca: SshCaConfig {
                    rotate: true,
                    rotate_every: std::time::Duration::from_secs(90 * 86_400),
                    rotation_grace: std::time::Duration::from_secs(14 * 86_400),
                },
                scan: Default::default(),
            }
        );
    }

    #[test]
    fn metrics_listen_only_on_loopback() {
        assert_eq!(parse("").unwrap().metrics.listen, None);
        let on = parse("[metrics]\nlisten = \"127.0.0.1:9874\"\n").unwrap();
        assert_eq!(on.metrics.listen, Some("127.0.0.1:9874".parse().unwrap()));
        assert!(error("[metrics]\nlisten = \"0.0.0.0:9874\"\n").contains("not a loopback address"));
        assert!(error("[metrics]\nlisten = \"localhost\"\n").contains("metrics.listen \"localhost\""));
    }

    #[test]
    fn ssh_ca_rotation_is_checked() {
        assert_eq!(parse("").unwrap().ssh_ca, SshCaConfig::default());
        assert!(error("[ssh_ca]\nrotate_every = \"yearly\"\n").contains("\"yearly\": "));
        assert!(error("[ssh_ca]\nrotate_every = \"30m\"\n").contains("at least 1h"));
        assert!(error("[ssh_ca]\nrotate_every = \"7d\"\n").contains("rotation_grace must be shorter"));
        assert!(!parse("[ssh_ca]\nrotate = false\n").unwrap().ssh_ca.rotate);
    }

    #[test]
    fn oidc_section_is_read_with_defaults() {
        let config = parse(
            r#"
[oidc]
issuer = "https://id.example.com"
client_id = "airlock"

[[oidc.ci]]
issuer = "https://token.actions.githubusercontent.com"
audience = "airlock-ci"
user_claim = "repository"
"#,
        )
        .unwrap();
        let oidc = config.oidc.unwrap();
        assert_eq!(
            (oidc.audience(), oidc.user_claim.as_str(), oidc.groups_claim.as_str()),
            ("airlock", "email", "groups")
        );
        assert_eq!(oidc.clock_skew_seconds, 60);
        assert_eq!(oidc.ci[0].user_claim, "repository");
        assert_eq!(oidc.ci[0].groups_claim, None);
        assert!(error("[oidc]\nissuer = \"https://id.example.com\"\n").contains("client_id"));
        let plain = error("[oidc]\nissuer = \"http://id.example.com\"\nclient_id = \"airlock\"\n");
        assert!(plain.contains("plain http:// is spoken only to this host"), "{plain}");
        let ci = error(
            "[oidc]\nissuer = \"https://id.example.com\"\nclient_id = \"a\"\n[[oidc.ci]]\nissuer = \"http://ci.example.com\"\naudience = \"a\"\n",
        );
        assert!(ci.contains("plain http:// is spoken only to this host"), "{ci}");
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let config = parse("policies_dir = \"policies\"\nstate_dir = \"../state\"\naudit_dir = \"/abs\"\n").unwrap();
        assert_eq!(config.policies_dir, Path::new("/etc/airlock/policies"));
        assert_eq!(config.state_dir, Path::new("/etc/airlock/../state"));
        assert_eq!(config.audit_dir, Path::new("/abs"));
        let bare = Config::from_str_at("policies_dir = \"p\"", Path::new("airlock.toml")).unwrap();
        assert_eq!(bare.policies_dir, Path::new("p"), "a bare file name is in the working directory");
    }

    #[test]
    fn errors_name_file_line_and_column() {
        assert_eq!(
            error("log = \"info\"\n[listener]\nport = 0\n"),
            "/etc/airlock/airlock.toml:3:8: listener.port must not be 0"
        );
        assert_eq!(error("nice = -21\n"), "/etc/airlock/airlock.toml:1:8: nice must be from -20 to 19");
        assert_eq!(
            error("\nupstream_connect_timeout_ms = 0\n"),
            "/etc/airlock/airlock.toml:2:31: upstream_connect_timeout_ms must be greater than 0"
        );
        let err = error("log = \"info\"\n[listener]\nport = 70000\n");
        assert!(err.starts_with("/etc/airlock/airlock.toml:3:8: "), "{err}");
        let err = error("log = \"info\"\nlistner = 1\n");
        assert!(err.starts_with("/etc/airlock/airlock.toml:2:1: ") && err.contains("unknown field `listner`"), "{err}");
        let err = error("[listener]\nipv4 = true\nhost = \"0.0.0.0\"\n");
        assert!(err.starts_with("/etc/airlock/airlock.toml:3:1: ") && err.contains("`host`"), "{err}");
        let err = error("log = \"info\"\nlog = \"debug\"\n");
        assert!(err.starts_with("/etc/airlock/airlock.toml:2:1: ") && err.contains("duplicate key"), "{err}");
        assert_eq!(
            error("log = \"x\"\n[listener]\nipv4 = false\nipv6 = false\n"),
            "/etc/airlock/airlock.toml:2:1: listener.ipv4 and listener.ipv6 are both false: nothing would receive redirected connections"
        );
        assert_eq!(
            error("\n\nagent_cgroup = \"airlock\"\n"),
            "/etc/airlock/airlock.toml:3:16: must be an absolute path (like /sys/fs/cgroup/...)"
        );
    }

    #[test]
    fn scan_section_is_read_and_checked() {
        let config =
            parse("[scan]\npaths = [\"/srv/ci\"]\ninterval = \"off\"\nrules = \"rules/gitleaks.toml\"\n").unwrap();
        assert_eq!(config.scan.paths, vec![Path::new("/srv/ci")]);
        assert_eq!(config.scan.interval, None);
        assert_eq!(config.scan.rules.as_deref(), Some(Path::new("/etc/airlock/rules/gitleaks.toml")));
        assert_eq!(error("[scan]\npaths = [\"home\"]\n"), "scan.paths: home is not an absolute path");
        let err = error("[scan]\ninterval = \"often\"\n");
        assert!(err.starts_with("/etc/airlock/airlock.toml:2:12: scan.interval"), "{err}");
    }

    #[test]
    fn unreadable_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.toml");
        let err = Config::load(&path).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err.to_string().starts_with(&format!("cannot read {}: ", path.display())), "{err}");
        std::fs::write(&path, "policies_dir = \"pol\"\n").unwrap();
        assert_eq!(Config::load(&path).unwrap().policies_dir, dir.path().join("pol"));
    }

    #[test]
    fn shipped_configs_parse() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../config"));
        // The shipped file spells out the defaults, and names the audit
        // readers' group the Debian package creates.
        let mut shipped = Config::load(&dir.join("airlock.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(shipped.audit.group.take().as_deref(), Some("airlock-audit"));
        assert_eq!(shipped, Config::default());
        let dev = Config::load(&dir.join("dev.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dev.policies_dir, dir.join("../policies"), "the repository's policies");
        assert!(dev.policies_dir.join("default.toml").is_file());
        for path in [&dev.state_dir, &dev.audit_dir, &dev.control_socket, &dev.bpffs_dir] {
            assert!(path.to_string_lossy().contains("airlock-dev"), "{}", path.display());
        }
    }
}
