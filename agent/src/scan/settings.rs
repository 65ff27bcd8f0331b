//! `[scan]` in the agent configuration: what the periodic sweep reads and
//! how often. It lives in the agent configuration, not in policy: it is
//! about this host (its directories, its I/O budget), is read once at start
//! like the other host settings, and `airlock scan --config` uses the same
//! section for one-off scans; policy stays about targets and access.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer, de::Error as _};

/// Largest `max_file_bytes` accepted: a sweep holds one file in memory.
pub const MAX_FILE_BYTES_LIMIT: u64 = 1 << 30;

/// CI runners' workspace roots, swept when they exist.
pub const CI_WORKSPACES: [&str; 6] = [
    "/home/runner/work",
    "/builds",
    "/var/lib/jenkins/workspace",
    "/opt/actions-runner/_work",
    "/var/lib/buildkite-agent/builds",
    "/var/lib/gitlab-runner/builds",
];

/// The `[scan]` section.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ScanSettings {
    /// Roots to sweep; empty: [`default_roots`] (home directories, /tmp,
    /// /var/tmp, CI workspaces).
    pub paths: Vec<PathBuf>,
    /// Globs of paths left out, with everything under them (`*`: any run
    /// of characters, `/` included).
    pub exclude: Vec<String>,
    /// Time between sweeps (humantime: `6h`, `30m`); `"off"`: no sweeps.
    #[serde(deserialize_with = "interval")]
    pub interval: Option<Duration>,
    /// Files larger than this are not read (1 byte to 1 GiB).
    #[serde(deserialize_with = "max_file_bytes")]
    pub max_file_bytes: u64,
    /// Share of one CPU a sweep may use, in percent (1–100): it sleeps in
    /// proportion to the CPU time it took.
    #[serde(deserialize_with = "cpu_percent")]
    pub cpu_percent: u8,
    /// A gitleaks-format rule file to use instead of the shipped rules
    /// (`[extend] useDefault = true` in it adds them back).
    pub rules: Option<PathBuf>,
}

impl Default for ScanSettings {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            exclude: vec!["*/.git/objects".into(), "*/node_modules".into()],
            interval: Some(Duration::from_secs(6 * 3600)),
            max_file_bytes: 4 << 20,
            cpu_percent: 25,
            rules: None,
        }
    }
}

impl ScanSettings {
    /// The roots a sweep walks: `paths`, or the defaults.
    pub fn roots(&self) -> Vec<PathBuf> {
        if self.paths.is_empty() { default_roots() } else { self.paths.clone() }
    }

    /// The walk's limits.
    pub fn limits(&self) -> crate::scan::walk::Limits {
        crate::scan::walk::Limits {
            max_file_bytes: self.max_file_bytes,
            exclude: self.exclude.clone(),
            ..crate::scan::walk::Limits::default()
        }
    }

    /// The rules: the file named by `rules`, or the shipped gitleaks set.
    pub fn rule_set(&self) -> Result<crate::scan::rules::RuleSet, crate::scan::rules::RulesError> {
        match &self.rules {
            Some(path) => crate::scan::rules::RuleSet::load(path),
            None => crate::scan::rules::RuleSet::gitleaks_default(),
        }
    }
}

/// Every account's home directory that exists and belongs to it (not `/`,
/// not system directories owned by someone else), `/root`, `/tmp`,
/// `/var/tmp` and the CI workspace roots that exist.
pub fn default_roots() -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let mut roots: Vec<PathBuf> = Vec::new();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        let (Some(uid), Some(home)) = (fields.get(2).and_then(|u| u.parse::<u32>().ok()), fields.get(5)) else {
            continue;
        };
        let home = PathBuf::from(home);
        if home.as_os_str() == "/" || !home.is_absolute() {
            continue;
        }
        if let Ok(meta) = std::fs::symlink_metadata(&home)
            && meta.is_dir()
            && meta.uid() == uid
            && !roots.contains(&home)
        {
            roots.push(home);
        }
    }
    for fixed in ["/root", "/tmp", "/var/tmp"].into_iter().chain(CI_WORKSPACES) {
        let path = PathBuf::from(fixed);
        if path.is_dir() && !roots.contains(&path) {
            roots.push(path);
        }
    }
    roots
}

fn interval<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| D::Error::custom(format!("scan.interval {text:?}: {e} (like \"6h\", or \"off\")")))?;
    if duration < Duration::from_secs(1) {
        return Err(D::Error::custom("scan.interval must be at least 1s"));
    }
    Ok(Some(duration))
}

fn max_file_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    match u64::deserialize(deserializer)? {
        bytes @ 1..=MAX_FILE_BYTES_LIMIT => Ok(bytes),
        _ => Err(D::Error::custom(format!("scan.max_file_bytes must be 1 to {MAX_FILE_BYTES_LIMIT}"))),
    }
}

fn cpu_percent<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u8, D::Error> {
    match u8::deserialize(deserializer)? {
        percent @ 1..=100 => Ok(percent),
        _ => Err(D::Error::custom("scan.cpu_percent must be 1 to 100")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ScanSettings, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn values_and_errors() {
        assert_eq!(parse("").unwrap(), ScanSettings::default());
        let s = parse(
            "paths = [\"/srv\"]\nexclude = [\"*/cache\"]\ninterval = \"30m\"\nmax_file_bytes = 1024\ncpu_percent = 5\n",
        )
        .unwrap();
        assert_eq!(s.interval, Some(Duration::from_secs(1800)));
        assert_eq!((s.roots(), s.max_file_bytes, s.cpu_percent), (vec![PathBuf::from("/srv")], 1024, 5));
        assert_eq!(parse("interval = \"off\"").unwrap().interval, None);
        assert!(parse("interval = \"soon\"").unwrap_err().contains("like \"6h\""));
        assert!(parse("interval = \"10ms\"").unwrap_err().contains("at least 1s"));
        assert!(parse("max_file_bytes = 0").unwrap_err().contains("1 to"));
        assert!(parse("cpu_percent = 0").unwrap_err().contains("1 to 100"));
        assert!(parse("path = []").unwrap_err().contains("unknown field"));
    }

    #[test]
    fn default_roots_exist_and_are_directories() {
        let roots = default_roots();
        assert!(roots.contains(&PathBuf::from("/tmp")));
        assert!(roots.iter().all(|r| r.is_dir() && r.as_os_str() != "/"));
    }
}
