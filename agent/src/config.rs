// TEMP STUB (replaced by helper)
use std::path::{Path, PathBuf};
#[derive(Debug, Clone, serde::Deserialize)] pub struct Listener { pub port: u16, #[serde(default="t")] pub ipv4: bool, #[serde(default="t")] pub ipv6: bool }
fn t() -> bool { true }
#[derive(Debug, Clone, serde::Deserialize)] pub struct Config { pub policies_dir: PathBuf, pub state_dir: PathBuf, pub audit_dir: PathBuf, pub control_socket: PathBuf, pub bpffs_dir: PathBuf, pub cgroup: Option<PathBuf>, pub agent_cgroup: Option<PathBuf>, pub listener: Listener, pub admin_group: Option<String>, pub upstream_connect_timeout_ms: u64, pub log: String }
#[derive(Debug, thiserror::Error)] #[error("{0}")] pub struct ConfigError(String);
impl Config { pub fn load(p: &Path) -> Result<Config, ConfigError> { toml::from_str(&std::fs::read_to_string(p).map_err(|e| ConfigError(e.to_string()))?).map_err(|e| ConfigError(e.to_string())) } }
