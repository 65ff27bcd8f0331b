//! Reading policy files: every `*.toml` directly in the policy directory, in
//! name order (subdirectories such as `examples/` are not read). Every
//! problem in every file is collected, each with its file:line:column.

use std::{
    collections::HashMap,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
};

use airlock_ebpf::{MAX_TARGET_ENTRIES, MAX_TARGET_IDS};
use serde::Deserialize;
use toml::Spanned;

use super::model::{AccessRule, Action, Network, Policy, Protocol, Target, mask};
use crate::source::{Diagnostic, SourceLocation};

/// Why a policy directory was not accepted: all problems found.
#[derive(Debug)]
pub struct PolicyError {
    /// Each problem, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            diagnostic.fmt(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    target: Vec<Spanned<RawTarget>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: Spanned<String>,
    protocol: Spanned<String>,
    port: Spanned<i64>,
    addresses: Spanned<Vec<Spanned<String>>>,
    description: Option<String>,
    #[serde(default)]
    access: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    action: Spanned<String>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    reason: Option<String>,
}

/// Collects diagnostics for one file.
struct FileCheck<'a> {
    path: &'a Path,
    text: &'a str,
    diagnostics: &'a mut Vec<Diagnostic>,
}

impl FileCheck<'_> {
    fn location<T>(&self, spanned: &Spanned<T>) -> SourceLocation {
        SourceLocation::at(self.path, self.text, spanned.span().start)
    }

    fn error<T>(&mut self, at: &Spanned<T>, message: String) {
        let location = self.location(at);
        self.diagnostics.push(Diagnostic { location, message });
    }
}

impl Policy {
    /// Loads every `*.toml` file directly in `dir`.
    pub fn load_dir(dir: &Path) -> Result<Self, PolicyError> {
        let fail = |message: String| PolicyError {
            diagnostics: vec![Diagnostic {
                location: SourceLocation { file: dir.to_owned(), line: 1, column: 1 },
                message,
            }],
        };
        let entries = std::fs::read_dir(dir).map_err(|e| fail(format!("cannot read the policy directory: {e}")))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.is_file() && path.extension().is_some_and(|ext| ext == "toml"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(fail(format!("no policy files (*.toml) in {}", dir.display())));
        }
        let mut sources = Vec::with_capacity(files.len());
        for path in files {
            match std::fs::read_to_string(&path) {
                Ok(text) => sources.push((path, text)),
                Err(e) => return Err(fail(format!("cannot read {}: {e}", path.display()))),
            }
        }
        Self::from_sources(sources.iter().map(|(path, text)| (path.as_path(), text.as_str())))
    }

    /// Builds a policy from `(path, text)` pairs, as if read from those files.
    pub fn from_sources<'a>(sources: impl IntoIterator<Item = (&'a Path, &'a str)>) -> Result<Self, PolicyError> {
        let mut diagnostics = Vec::new();
        let mut policy = Policy::default();
        let mut names: HashMap<String, SourceLocation> = HashMap::new();
        let mut entries: HashMap<(u16, Network), (String, SourceLocation)> = HashMap::new();
        for (path, text) in sources {
            let raw: RawFile = match toml::from_str(text) {
                Ok(raw) => raw,
                Err(error) => {
                    diagnostics.push(Diagnostic::from_toml(path, text, &error));
                    continue;
                }
            };
            let mut check = FileCheck { path, text, diagnostics: &mut diagnostics };
            for raw_target in raw.target {
                let location = check.location(&raw_target);
                let raw_target = raw_target.into_inner();
                if let Some(target) = check_target(&mut check, raw_target, location, &mut names, &mut entries) {
                    policy.targets.push(Target { id: policy.targets.len() as u32, ..target });
                }
            }
        }
        if policy.targets.len() > MAX_TARGET_IDS as usize {
            diagnostics.push(limit_error(
                &policy,
                format!("{} targets; at most {MAX_TARGET_IDS} are supported", policy.targets.len()),
            ));
        }
        let network_count: usize = policy.targets.iter().map(|t| t.networks.len()).sum();
        if network_count > MAX_TARGET_ENTRIES as usize {
            diagnostics.push(limit_error(
                &policy,
                format!("{network_count} target addresses; at most {MAX_TARGET_ENTRIES} are supported"),
            ));
        }
        if diagnostics.is_empty() { Ok(policy) } else { Err(PolicyError { diagnostics }) }
    }
}

fn limit_error(policy: &Policy, message: String) -> Diagnostic {
    let location = policy.targets.last().map(|t| t.location.clone()).unwrap_or(SourceLocation {
        file: PathBuf::new(),
        line: 1,
        column: 1,
    });
    Diagnostic { location, message }
}

/// Validates one target; reports every problem and returns it only if sound.
fn check_target(
    check: &mut FileCheck<'_>,
    raw: RawTarget,
    location: SourceLocation,
    names: &mut HashMap<String, SourceLocation>,
    entries: &mut HashMap<(u16, Network), (String, SourceLocation)>,
) -> Option<Target> {
    let errors_before = check.diagnostics.len();
    let name = raw.name.get_ref().clone();
    if !valid_name(&name) {
        check.error(&raw.name, format!("target name {name:?} must be lowercase letters, digits, '_', '.', '-' (starting with a letter or digit), at most 64 characters"));
    } else if let Some(first) = names.get(&name) {
        check.error(&raw.name, format!("duplicate target name {name:?} (first defined at {first})"));
    } else {
        names.insert(name.clone(), check.location(&raw.name));
    }

    let protocol = match raw.protocol.get_ref().as_str() {
        "postgres" => Some(Protocol::Postgres),
        "ssh" => Some(Protocol::Ssh),
        "tcp" => Some(Protocol::Tcp),
        other => {
            check.error(&raw.protocol, format!("unknown protocol {other:?} (expected postgres, ssh or tcp)"));
            None
        }
    };

    let port = match u16::try_from(*raw.port.get_ref()) {
        Ok(port) if port != 0 => Some(port),
        _ => {
            check.error(&raw.port, format!("port {} is not a TCP port (1-65535)", raw.port.get_ref()));
            None
        }
    };

    if raw.addresses.get_ref().is_empty() {
        check.error(&raw.addresses, "addresses is empty: list IPs or CIDRs, or \"any\"".into());
    }
    let mut networks = Vec::new();
    for address in raw.addresses.get_ref() {
        match parse_networks(address.get_ref()) {
            Ok(parsed) => {
                for network in parsed {
                    if let Some(port) = port {
                        let here = check.location(address);
                        if let Some((other, first)) = entries.get(&(port, network)) {
                            check.error(address, format!("{network} port {port} is already protected by target {other:?} ({first}); a connection must map to one target"));
                        } else {
                            entries.insert((port, network), (name.clone(), here));
                        }
                    }
                    networks.push(network);
                }
            }
            Err(message) => check.error(address, message),
        }
    }

    let mut access = Vec::new();
    for rule in raw.access {
        let rule_location = check.location(&rule);
        let rule_span = rule.span();
        let raw_rule = rule.into_inner();
        let action = match raw_rule.action.get_ref().as_str() {
            "allow" => Some(Action::Allow),
            "deny" => Some(Action::Deny),
            other => {
                check.error(&raw_rule.action, format!("unknown action {other:?} (expected allow or deny)"));
                None
            }
        };
        if raw_rule.users.is_empty() && raw_rule.groups.is_empty() {
            let location = SourceLocation::at(check.path, check.text, rule_span.start);
            check.diagnostics.push(Diagnostic {
                location,
                message: "access rule matches nobody: give users, groups or both".into(),
            });
        }
        if let Some(action) = action {
            access.push(AccessRule {
                action,
                users: raw_rule.users,
                groups: raw_rule.groups,
                reason: raw_rule.reason,
                location: rule_location,
            });
        }
    }

    if check.diagnostics.len() > errors_before {
        return None;
    }
    Some(Target {
        id: 0,
        name,
        protocol: protocol?,
        port: port?,
        networks,
        access,
        description: raw.description,
        location,
    })
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
}

/// Parses `10.0.0.1`, `10.0.0.0/8`, `fd00::/64` or `any`.
fn parse_networks(text: &str) -> Result<Vec<Network>, String> {
    if text == "any" {
        return Ok(vec![
            Network { addr: std::net::Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(), prefix_len: 96 },
            Network { addr: std::net::Ipv6Addr::UNSPECIFIED, prefix_len: 0 },
        ]);
    }
    let (ip_text, len_text) = match text.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (text, None),
    };
    let ip: IpAddr = ip_text.parse().map_err(|_| format!("{text:?} is not an IP address, a CIDR or \"any\""))?;
    let (addr, max, offset) = match ip {
        IpAddr::V4(v4) => (v4.to_ipv6_mapped(), 32u8, 96u8),
        IpAddr::V6(v6) => (v6, 128u8, 0u8),
    };
    let len = match len_text {
        None => max,
        Some(len) => match len.parse::<u8>() {
            Ok(len) if len <= max => len,
            _ => return Err(format!("{text:?}: prefix length must be 0-{max}")),
        },
    };
    let prefix_len = offset + len;
    if u128::from(addr) & !mask(prefix_len) != 0 {
        return Err(format!(
            "{text:?} has host bits set: did you mean {}?",
            Network { addr: (u128::from(addr) & mask(prefix_len)).into(), prefix_len }
        ));
    }
    Ok(vec![Network { addr, prefix_len }])
}
