//! The agent's configuration file (`/etc/airlock/airlock.toml`).

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::source::Diagnostic;

/// Agent configuration. Every field has a default; relative paths are
/// relative to the configuration file's directory.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory of policy files (`*.toml`, not recursive).
    pub policies_dir: PathBuf,
    /// Agent state (credential ledgers, keys).
    pub state_dir: PathBuf,
    /// Audit log directory (root only).
    pub audit_dir: PathBuf,
    /// Control socket the CLI talks to.
    pub control_socket: PathBuf,
    /// bpffs directory the programs, links and maps are pinned under.
    pub bpffs_dir: PathBuf,
    /// cgroup v2 directory to attach at; default: the cgroup2 root.
    pub cgroup: Option<PathBuf>,
    /// cgroup the agent moves into (its connections are never redirected);
    /// default: systemd's cgroup for the service, else `<root>/airlock.agent`.
    pub agent_cgroup: Option<PathBuf>,
    /// Where redirected connections arrive.
    pub listener: ListenerConfig,
    /// Members of this Unix group see everyone's sessions in `airlock status`.
    pub admin_group: Option<String>,
    /// How long connecting to a target may take.
    pub upstream_connect_timeout_ms: u64,
    /// Log filter (`RUST_LOG` syntax) when `RUST_LOG` is unset.
    pub log: String,
}

/// The loopback listener redirected connections are sent to.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Port on 127.0.0.1 and ::1. Privileged on purpose: while the agent is
    /// down, no unprivileged process can bind it and receive the redirected
    /// connections.
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
        }
    }
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self { port: 874, ipv4: true, ipv6: true }
    }
}

/// Why a configuration file was not accepted.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    Invalid(Diagnostic),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, source } => write!(f, "reading {}: {source}", path.display()),
            Self::Invalid(diagnostic) => diagnostic.fmt(f),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Parses configuration text that was read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |message: String| {
            ConfigError::Invalid(Diagnostic { location: crate::source::SourceLocation::at(path, text, 0), message })
        };
        let mut config: Self =
            toml::from_str(text).map_err(|e| ConfigError::Invalid(Diagnostic::from_toml(path, text, &e)))?;
        if config.listener.port == 0 {
            return Err(invalid("listener.port must not be 0".into()));
        }
        if !config.listener.ipv4 && !config.listener.ipv6 {
            return Err(invalid(
                "listener.ipv4 and listener.ipv6 are both off: nothing would receive connections".into(),
            ));
        }
        if config.upstream_connect_timeout_ms == 0 {
            return Err(invalid("upstream_connect_timeout_ms must be more than 0".into()));
        }
        let base = path.parent().unwrap_or(Path::new("."));
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
        for dir in [config.cgroup.as_mut(), config.agent_cgroup.as_mut()].into_iter().flatten() {
            if dir.is_relative() {
                *dir = base.join(&*dir);
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/airlock/airlock.toml"))
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(Config::default().listener.port, 874);
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let config = parse("policies_dir = \"policies\"\ncgroup = \"../x\"\naudit_dir = \"/abs\"\n").unwrap();
        assert_eq!(config.policies_dir, Path::new("/etc/airlock/policies"));
        assert_eq!(config.cgroup.as_deref(), Some(Path::new("/etc/airlock/../x")));
        assert_eq!(config.audit_dir, Path::new("/abs"));
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let err = parse("log = \"info\"\n[listener]\nport = 70000\n").unwrap_err().to_string();
        assert!(err.starts_with("/etc/airlock/airlock.toml:3:8: "), "{err}");
        let err = parse("log = \"info\"\nlistner = 1\n").unwrap_err().to_string();
        assert!(err.starts_with("/etc/airlock/airlock.toml:2:1: ") && err.contains("listner"), "{err}");
        let err = parse("[listener]\nport = 0\n").unwrap_err().to_string();
        assert!(err.contains("listener.port must not be 0"), "{err}");
        let err = parse("[listener]\nipv4 = false\nipv6 = false\n").unwrap_err().to_string();
        assert!(err.contains("both off"), "{err}");
    }

    #[test]
    fn shipped_configs_parse() {
        for name in ["airlock.toml", "dev.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config").join(name);
            let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(config.policies_dir.is_absolute());
        }
    }
}
