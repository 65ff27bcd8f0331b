//! Reading and validating policy files. Every problem in every file is
//! reported, each at its file:line:column, so one `airlock policy check`
//! shows everything to fix.

use std::{collections::HashMap, fmt, net::IpAddr, path::Path};

use airlock_ebpf::{MAX_TARGET_ENTRIES, MAX_TARGET_IDS};
use serde::Deserialize;
use toml::{
    Spanned,
    de::{DeTable, DeValue, ValueDeserializer},
};

use super::model::{AccessRule, Action, Network, Policy, Protocol, Target, mask};
use crate::source::{Diagnostic, SourceFile, SourceLocation};

mod credentials;
mod guardrails;

use self::{
    credentials::RawCredentials,
    guardrails::{RawApprovals, RawGuardRule},
};

/// Why a policy was not accepted: every problem found, in file order.
#[derive(Debug)]
pub struct PolicyError {
    /// The problems; never empty.
    pub errors: Vec<Diagnostic>,
}

impl fmt::Display for PolicyError {
    /// One problem per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

// Checked fields are taken loosely typed (strings, i64) so that a bad value
// gets a specific message and does not stop the other checks.
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
    credentials: Option<Spanned<RawCredentials>>,
    #[serde(default)]
    guardrail: Vec<Spanned<RawGuardRule>>,
    approvals: Option<Spanned<RawApprovals>>,
    masking: Option<Spanned<crate::masking::policy::RawMasking>>,
    ssh: Option<Spanned<super::ssh::RawSsh>>,
    https: Option<Spanned<super::https::RawHttps>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    action: Spanned<String>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    actors: Option<Spanned<Vec<String>>>,
    reason: Option<String>,
}

/// State carried across files: what must be unique, and the limits.
#[derive(Default)]
struct Loader {
    policy: Policy,
    errors: Vec<Diagnostic>,
    names: HashMap<String, SourceLocation>,
    entries: HashMap<(u16, Network), (String, SourceLocation)>,
    target_count: usize,
    network_count: usize,
    /// Actors named by rules, checked once every file has defined its own.
    actor_references: Vec<(String, Diagnostic)>,
}

impl Policy {
    /// Loads every `*.toml` file directly in `dir`, in file-name order.
    /// Subdirectories (such as `examples/`) and hidden files (editors' lock
    /// files) are not read. A missing directory, or one without policy
    /// files, is an error: running with no policy by mistake would protect
    /// nothing.
    pub fn load_dir(dir: &Path) -> Result<Self, PolicyError> {
        let fail = |message: String| PolicyError { errors: vec![Diagnostic::without_location(message)] };
        let entries = std::fs::read_dir(dir)
            .map_err(|e| fail(format!("no policy files in {}: cannot read it: {e}", dir.display())))?;
        let mut errors = Vec::new();
        let mut paths = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => paths.push(entry.path()),
                Err(e) => errors.push(Diagnostic::without_location(format!("cannot list {}: {e}", dir.display()))),
            }
        }
        // Directories are skipped but not unreadable files: a dangling
        // symlink must fail loudly rather than silently drop its targets.
        paths.retain(|path| {
            let hidden = path.file_name().is_some_and(|name| name.as_encoded_bytes().starts_with(b"."));
            path.extension().is_some_and(|ext| ext == "toml") && !hidden && !path.is_dir()
        });
        paths.sort();
        if paths.is_empty() && errors.is_empty() {
            return Err(fail(format!("no policy files in {}", dir.display())));
        }
        let mut sources = Vec::new();
        for path in paths {
            match std::fs::read_to_string(&path) {
                Ok(text) => sources.push((path, text)),
                Err(e) => errors.push(Diagnostic::without_location(format!("cannot read {}: {e}", path.display()))),
            }
        }
        let loaded = Self::from_sources(sources.iter().map(|(path, text)| (path.as_path(), text.as_str())));
        match loaded {
            Ok(policy) if errors.is_empty() => Ok(policy),
            Ok(_) => Err(PolicyError { errors }),
            Err(more) => {
                errors.extend(more.errors);
                Err(PolicyError { errors })
            }
        }
    }

    /// Builds a policy from `(path, text)` pairs in order, as if each text
    /// had been read from its path.
    pub fn from_sources<'a>(sources: impl IntoIterator<Item = (&'a Path, &'a str)>) -> Result<Self, PolicyError> {
        let mut loader = Loader::default();
        for (path, text) in sources {
            let first_error = loader.errors.len();
            loader.file(&SourceFile::new(path, text));
            // Checks run field by field; people read a file top to bottom.
            loader.errors[first_error..]
                .sort_by_key(|e| e.location.as_ref().map(|l| (l.line, l.column)).unwrap_or_default());
        }
        loader.check_actor_references();
        if loader.errors.is_empty() { Ok(loader.policy) } else { Err(PolicyError { errors: loader.errors }) }
    }
}

impl Loader {
    fn error(&mut self, source: &SourceFile<'_>, offset: usize, message: String) {
        self.errors.push(source.diagnostic(offset, message));
    }

    fn file(&mut self, source: &SourceFile<'_>) {
        let root = match DeTable::parse(source.text()) {
            Ok(root) => root.into_inner(),
            Err(e) => return self.errors.push(source.toml_error(&e)),
        };
        for (key, value) in root {
            let kind = key.get_ref().to_string();
            if kind != "target" && kind != "actor" {
                let message = format!("unknown key `{kind}`, expected `target` or `actor`");
                self.error(source, key.span().start, message);
                continue;
            }
            let span = value.span();
            let DeValue::Array(tables) = value.into_inner() else {
                self.error(source, span.start, format!("`{kind}` must be an array of tables: write [[{kind}]]"));
                continue;
            };
            if kind == "actor" {
                for table in tables {
                    self.actor(source, table);
                }
                continue;
            }
            for table in tables {
                // Each target is deserialized on its own so one malformed
                // target does not hide the problems of the others.
                let start = table.span().start;
                if !table.get_ref().is_table() {
                    self.error(source, start, "each target must be a table: write [[target]]".into());
                    continue;
                }
                match Spanned::<RawTarget>::deserialize(ValueDeserializer::from(table)) {
                    Ok(raw) => self.target(source, start, raw.into_inner()),
                    Err(e) => self.errors.push(source.toml_error(&e)),
                }
            }
        }
    }

    fn target(&mut self, source: &SourceFile<'_>, start: usize, raw: RawTarget) {
        let location = source.location(start);
        self.target_count += 1;
        if self.target_count == MAX_TARGET_IDS as usize + 1 {
            self.error(source, start, format!("too many targets: at most {MAX_TARGET_IDS} are supported"));
        }

        let name = raw.name.get_ref();
        if !valid_name(name) {
            let message = format!(
                "invalid target name {name:?}: use lowercase letters, digits, '_', '.' and '-', starting with a letter or digit, at most 64 characters"
            );
            self.error(source, raw.name.span().start, message);
        } else if let Some(first) = self.names.get(name) {
            let message = format!("duplicate target name {name:?} (first defined at {first})");
            self.error(source, raw.name.span().start, message);
        } else {
            self.names.insert(name.clone(), source.location(raw.name.span().start));
        }

        // A Kubernetes API server is an HTTPS target with Kubernetes' parts on.
        let kubernetes = raw.protocol.get_ref() == "kubernetes";
        let protocol = match raw.protocol.get_ref().as_str() {
            "postgres" => Some(Protocol::Postgres),
            "ssh" => Some(Protocol::Ssh),
            "https" | "kubernetes" => Some(Protocol::Https),
            "http" => Some(Protocol::Http),
            "tcp" => Some(Protocol::Tcp),
            other => {
                let message = format!(
                    "unknown protocol {other:?}, expected \"postgres\", \"ssh\", \"https\", \"kubernetes\", \"http\" or \"tcp\""
                );
                self.error(source, raw.protocol.span().start, message);
                None
            }
        };

        let port = match u16::try_from(*raw.port.get_ref()) {
            Ok(port) if port != 0 => Some(port),
            _ => {
                let message = format!("port {} is not a TCP port (1-65535)", raw.port.get_ref());
                self.error(source, raw.port.span().start, message);
                None
            }
        };

        if raw.addresses.get_ref().is_empty() {
            let message = "no addresses: list IP addresses or CIDRs, or \"any\"".into();
            self.error(source, raw.addresses.span().start, message);
        }
        let mut networks: Vec<Network> = Vec::new();
        for address in raw.addresses.get_ref() {
            let offset = address.span().start;
            let parsed = match parse_networks(address.get_ref()) {
                Ok(parsed) => parsed,
                Err(message) => {
                    self.error(source, offset, message);
                    continue;
                }
            };
            for network in parsed {
                self.network_count += 1;
                if self.network_count == MAX_TARGET_ENTRIES as usize + 1 {
                    let message = format!("too many addresses: at most {MAX_TARGET_ENTRIES} are supported in all");
                    self.error(source, offset, message);
                }
                if networks.contains(&network) {
                    self.error(source, offset, format!("{network} is listed twice in target {name:?}"));
                    continue;
                }
                networks.push(network);
                let Some(port) = port else { continue };
                if let Some((other, first)) = self.entries.get(&(port, network)) {
                    let message = format!(
                        "{network} port {port} is already protected by target {other:?} ({first}): a connection must map to one target"
                    );
                    self.error(source, offset, message);
                } else {
                    self.entries.insert((port, network), (name.clone(), source.location(offset)));
                }
            }
        }

        let mut access = Vec::with_capacity(raw.access.len());
        for rule in raw.access {
            let start = rule.span().start;
            let rule = rule.into_inner();
            let action = match rule.action.get_ref().as_str() {
                "allow" => Action::Allow,
                "deny" => Action::Deny,
                other => {
                    let message = format!("unknown action {other:?}, expected \"allow\" or \"deny\"");
                    self.error(source, rule.action.span().start, message);
                    continue;
                }
            };
            if rule.users.is_empty() && rule.groups.is_empty() {
                self.error(source, start, "access rule matches nobody: give users, groups or both".into());
                continue;
            }
            let actors = rule.actors.map(|actors| self.actor_names(source, actors)).unwrap_or_default();
            access.push(AccessRule {
                action,
                users: rule.users,
                groups: rule.groups,
                actors,
                reason: rule.reason,
                location: source.location(start),
            });
        }

        let credentials = raw.credentials.map(|raw| self.credentials(source, raw, protocol, &networks, port));
        let guardrails = self.guardrails(source, start, raw.guardrail, raw.approvals, protocol);
        let masking_at = raw.masking.as_ref().map(|m| m.span().start);
        let masking = raw.masking.map(|raw| crate::masking::policy::load(source, raw, protocol, &mut self.errors));
        if let (Some(policy), None, Some(at)) = (&masking, &credentials, masking_at)
            && !policy.rules.is_empty()
            && protocol == Some(Protocol::Postgres)
        {
            let message = "column masking rules need [target.credentials]: Airlock reads the real names of result columns from the catalog as the session's own role, so an alias cannot unmask a column (content detectors work without)".into();
            self.error(source, at, message);
        }
        let ssh = raw.ssh.map(|ssh| {
            if protocol.is_some_and(|p| p != Protocol::Ssh) {
                self.error(source, ssh.span().start, "[target.ssh] is for ssh targets only".into());
            }
            let has_approvers = guardrails.as_ref().is_some_and(|g| g.approvals.is_some());
            super::ssh::options(ssh.into_inner(), has_approvers, &mut |offset, message| {
                self.error(source, offset, message)
            })
        });

        let is_http = matches!(protocol, Some(Protocol::Https | Protocol::Http));
        let https = match raw.https {
            Some(https) => {
                if !is_http {
                    self.error(source, https.span().start, "[target.https] is for https and http targets only".into());
                }
                let has_approvers = guardrails.as_ref().is_some_and(|g| g.approvals.is_some());
                Some(super::https::options(https.into_inner(), has_approvers, kubernetes, &mut |offset, message| {
                    self.error(source, offset, message)
                }))
            }
            None => is_http.then(|| super::https::HttpsOptions::defaults(kubernetes)),
        };

        // Actors named by command and request rules must exist too.
        let command_actors = ssh.iter().flat_map(|s| s.commands.rules.iter().flat_map(|r| r.actors.iter()));
        let request_actors = https.iter().flat_map(|h| h.rules.iter().flat_map(|r| r.actors.iter()));
        let masking_actors = masking.iter().flat_map(|m| {
            m.rules.iter().flat_map(|r| r.actors.iter()).chain(m.detector_rules.iter().flat_map(|r| r.actors.iter()))
        });
        for name in command_actors.chain(request_actors).chain(masking_actors).filter(|name| *name != "*") {
            let message =
                format!("a rule of target {:?} names actor {name:?}, which no [[actor]] defines", raw.name.get_ref());
            self.actor_references.push((name.clone(), source.diagnostic(start, message)));
        }

        // A target with errors may still be kept: any error discards the
        // whole policy.
        let (Some(protocol), Some(port)) = (protocol, port) else { return };
        self.policy.targets.push(Target {
            // Below MAX_TARGET_IDS, or an error was reported above.
            id: u32::try_from(self.policy.targets.len()).unwrap_or(u32::MAX),
            name: raw.name.into_inner(),
            protocol,
            port,
            networks,
            access,
            description: raw.description,
            credentials,
            guardrails,
            masking,
            ssh,
            https,
            location,
        });
    }
}

impl Loader {
    /// Reads one `[[actor]]` table.
    fn actor(&mut self, source: &SourceFile<'_>, table: Spanned<DeValue<'_>>) {
        let start = table.span().start;
        if !table.get_ref().is_table() {
            return self.error(source, start, "each actor must be a table: write [[actor]]".into());
        }
        let raw = match Spanned::<super::actors::RawActor>::deserialize(ValueDeserializer::from(table)) {
            Ok(raw) => raw.into_inner(),
            Err(e) => return self.errors.push(source.toml_error(&e)),
        };
        let mut errors = Vec::new();
        let definition =
            super::actors::actor(raw, source.location(start), &mut |at, message| errors.push((at, message)));
        for (at, message) in errors {
            self.error(source, at, message);
        }
        if self.policy.actors.len() == super::actors::MAX_ACTORS {
            self.error(source, start, format!("too many actors: at most {} are supported", super::actors::MAX_ACTORS));
        }
        if let Some(first) = self.policy.actors.iter().find(|a| a.name == definition.name) {
            let message = format!("duplicate actor name {:?} (first defined at {})", definition.name, first.location);
            return self.error(source, start, message);
        }
        self.policy.actors.push(definition);
    }

    /// A rule's `actors`: kept, and checked against the definitions once
    /// every file is read (`*`: any actor).
    fn actor_names(&mut self, source: &SourceFile<'_>, actors: Spanned<Vec<String>>) -> Vec<String> {
        let at = actors.span().start;
        let actors = actors.into_inner();
        if actors.is_empty() {
            self.error(source, at, "actors = [] matches no connection: name actors, or \"*\" for any".into());
        }
        for name in actors.iter().filter(|name| *name != "*") {
            let diagnostic = source.diagnostic(at, format!("no [[actor]] named {name:?} is defined"));
            self.actor_references.push((name.clone(), diagnostic));
        }
        actors
    }

    fn check_actor_references(&mut self) {
        for (name, diagnostic) in std::mem::take(&mut self.actor_references) {
            if !self.policy.actors.iter().any(|a| a.name == name) {
                self.errors.push(diagnostic);
            }
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
}

/// Parses `10.0.0.5`, `10.20.1.0/24`, `fd00::/64` or `any` (both families).
fn parse_networks(text: &str) -> Result<Vec<Network>, String> {
    if text == "any" {
        return Ok(vec![Network::ANY_V4, Network::ANY_V6]);
    }
    let (ip_text, len_text) = match text.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (text, None),
    };
    let ip: IpAddr = ip_text.parse().map_err(|_| format!("{text:?} is not an IP address, a CIDR or \"any\""))?;
    let (addr, max) = match ip {
        IpAddr::V4(v4) => (v4.to_ipv6_mapped(), 32),
        IpAddr::V6(v6) => (v6, 128),
    };
    let len = match len_text {
        None => max,
        // Digits only: u8's parser would also take "+8".
        Some(digits) => digits
            .parse::<u8>()
            .ok()
            .filter(|&len| len <= max && digits.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("{text:?}: the prefix length must be a number from 0 to {max}"))?,
    };
    let prefix_len = len + (128 - max);
    let network = Network { addr: (u128::from(addr) & mask(prefix_len)).into(), prefix_len };
    if network.addr != addr {
        return Err(format!("{text:?} has host bits set: did you mean {network}?"));
    }
    Ok(vec![network])
}

#[cfg(test)]
mod tests {
    use std::{fs, time::Duration};

    use super::*;
    use crate::guardrails::GuardAction;

    pub(super) fn load(files: &[(&str, &str)]) -> Result<Policy, PolicyError> {
        Policy::from_sources(files.iter().map(|&(path, text)| (Path::new(path), text)))
    }

    pub(super) fn errors(files: &[(&str, &str)]) -> Vec<String> {
        match load(files) {
            Ok(policy) => panic!("loaded: {policy:?}"),
            Err(error) => error.errors.iter().map(ToString::to_string).collect(),
        }
    }

    pub(super) fn target(name: &str, port: u16, addresses: &str) -> String {
        format!("[[target]]\nname = \"{name}\"\nprotocol = \"tcp\"\nport = {port}\naddresses = {addresses}\n")
    }

    const PROD: &str = r#"# production
[[target]]
name = "prod-db"
protocol = "postgres"
port = 5432
addresses = ["10.20.0.5", "10.20.1.0/24", "::1", "fd00::/64", "::ffff:10.9.0.0/112"]
description = "orders primary"

[[target.access]]
action = "deny"
users = ["intern"]
reason = "use staging"

[[target.access]]
action = "allow"
users = ["alice"]
groups = ["dba", "oncall"]

[[target]]
name = "bastion.ssh"
protocol = "ssh"
port = 22
addresses = ["any"]
"#;

    #[test]
    fn valid_file_loads_every_field() {
        let policy = load(&[("policies/prod.toml", PROD)]).unwrap();
        let at = |line, column| SourceLocation { file: "policies/prod.toml".into(), line, column };
        let net = |addr: &str, prefix_len| Network { addr: addr.parse().unwrap(), prefix_len };
        assert_eq!(
            policy,
            Policy {
                targets: vec![
                    Target {
                        id: 0,
                        name: "prod-db".into(),
                        protocol: Protocol::Postgres,
                        port: 5432,
                        networks: vec![
                            net("::ffff:10.20.0.5", 128),
                            net("::ffff:10.20.1.0", 120),
                            net("::1", 128),
                            net("fd00::", 64),
                            net("::ffff:10.9.0.0", 112),
                        ],
                        access: vec![
                            AccessRule {
                                action: Action::Deny,
                                users: vec!["intern".into()],
                                groups: vec![],
                                actors: vec![],
                                reason: Some("use staging".into()),
                                location: at(9, 1),
                            },
                            AccessRule {
                                action: Action::Allow,
                                users: vec!["alice".into()],
                                groups: vec!["dba".into(), "oncall".into()],
                                actors: vec![],
                                reason: None,
                                location: at(14, 1),
                            },
                        ],
                        description: Some("orders primary".into()),
                        credentials: None,
                        guardrails: None,
                        masking: None,
                        ssh: None,
                        https: None,
                        location: at(2, 1),
                    },
                    Target {
                        id: 1,
                        name: "bastion.ssh".into(),
                        protocol: Protocol::Ssh,
                        port: 22,
                        networks: vec![Network::ANY_V4, Network::ANY_V6],
                        access: vec![],
                        description: None,
                        credentials: None,
                        guardrails: None,
                        masking: None,
                        ssh: None,
                        https: None,
                        location: at(19, 1),
                    },
                ],
                actors: Vec::new(),
            }
        );
        let printed: Vec<String> = policy.targets[0].networks.iter().map(ToString::to_string).collect();
        assert_eq!(printed, ["10.20.0.5/32", "10.20.1.0/24", "::1/128", "fd00::/64", "10.9.0.0/16"]);
    }

    #[test]
    fn ids_follow_load_order_across_files() {
        let a = target("zeta", 1, "[\"10.0.0.1\"]") + &target("alpha", 2, "[\"10.0.0.1\"]");
        let b = target("mid", 1, "[\"10.0.0.2\"]");
        let policy = load(&[("a.toml", &a), ("b.toml", &b), ("c.toml", "# nothing here yet\n")]).unwrap();
        let ids: Vec<_> = policy.targets.iter().map(|t| (t.id, t.name.as_str(), t.location.to_string())).collect();
        assert_eq!(
            ids,
            [(0, "zeta", "a.toml:1:1".into()), (1, "alpha", "a.toml:6:1".into()), (2, "mid", "b.toml:1:1".into())]
        );
    }

    #[test]
    fn every_field_error_is_reported_at_its_value() {
        let bad = r#"[[target]]
name = "Bad Name"
protocol = "mysql"
port = 70000
addresses = ["10.0.0.1/24", "nonsense", "::1/129", "10.0.0.0/+8", "fd00::1/64"]

[[target.access]]
action = "maybe"
users = ["x"]

[[target.access]]
action = "allow"

[[target.access]]
action = "deny"
users = []
groups = []
"#;
        assert_eq!(
            errors(&[("bad.toml", bad)]),
            [
                "bad.toml:2:8: invalid target name \"Bad Name\": use lowercase letters, digits, '_', '.' and '-', starting with a letter or digit, at most 64 characters",
                "bad.toml:3:12: unknown protocol \"mysql\", expected \"postgres\", \"ssh\", \"https\", \"kubernetes\", \"http\" or \"tcp\"",
                "bad.toml:4:8: port 70000 is not a TCP port (1-65535)",
                "bad.toml:5:14: \"10.0.0.1/24\" has host bits set: did you mean 10.0.0.0/24?",
                "bad.toml:5:29: \"nonsense\" is not an IP address, a CIDR or \"any\"",
                "bad.toml:5:41: \"::1/129\": the prefix length must be a number from 0 to 128",
                "bad.toml:5:52: \"10.0.0.0/+8\": the prefix length must be a number from 0 to 32",
                "bad.toml:5:67: \"fd00::1/64\" has host bits set: did you mean fd00::/64?",
                "bad.toml:8:10: unknown action \"maybe\", expected \"allow\" or \"deny\"",
                "bad.toml:11:1: access rule matches nobody: give users, groups or both",
                "bad.toml:14:1: access rule matches nobody: give users, groups or both",
            ]
        );
    }

    #[test]
    fn ports_and_addresses_at_their_limits() {
        let ok = target("a", 65535, "[\"0.0.0.0/0\", \"::/0\", \"255.255.255.255/32\", \"10.0.0.0/8\"]");
        let policy = load(&[("ok.toml", &ok)]).unwrap();
        assert_eq!(policy.targets[0].port, 65535);
        let printed: Vec<String> = policy.targets[0].networks.iter().map(ToString::to_string).collect();
        assert_eq!(printed, ["0.0.0.0/0", "::/0", "255.255.255.255/32", "10.0.0.0/8"]);
        assert_eq!(
            errors(&[("z.toml", &target("a", 0, "[\"any\"]"))]),
            ["z.toml:4:8: port 0 is not a TCP port (1-65535)"]
        );
        assert_eq!(
            errors(&[("n.toml", &target("a", 1, "[\"any\"]").replace("= 1", "= -1"))]),
            ["n.toml:4:8: port -1 is not a TCP port (1-65535)"]
        );
        assert_eq!(
            errors(&[("e.toml", &target("a", 1, "[]"))]),
            ["e.toml:5:13: no addresses: list IP addresses or CIDRs, or \"any\""]
        );
        let wrong_type = errors(&[("s.toml", &target("a", 1, "[\"any\"]").replace("= 1", "= \"5432\""))]);
        assert!(wrong_type.len() == 1 && wrong_type[0].starts_with("s.toml:4:8: invalid type"), "{wrong_type:?}");
    }

    #[test]
    fn duplicates_across_files_point_at_both() {
        let a = target("db", 5432, "[\"10.0.0.5\", \"10.1.0.0/16\"]");
        let b = format!("\n{}", target("db", 5432, "[\"10.0.0.5\", \"10.2.0.0/16\", \"::ffff:10.1.0.0/112\"]"));
        assert_eq!(
            errors(&[("p/a.toml", &a), ("p/b.toml", &b)]),
            [
                "p/b.toml:3:8: duplicate target name \"db\" (first defined at p/a.toml:2:8)",
                "p/b.toml:6:14: 10.0.0.5/32 port 5432 is already protected by target \"db\" (p/a.toml:5:14): a connection must map to one target",
                "p/b.toml:6:41: 10.1.0.0/16 port 5432 is already protected by target \"db\" (p/a.toml:5:26): a connection must map to one target",
            ]
        );
    }

    #[test]
    fn same_network_is_ambiguous_only_on_the_same_port() {
        let a = target("a", 5432, "[\"any\"]");
        let b = target("b", 5433, "[\"any\"]");
        let c = target("c", 5432, "[\"10.0.0.0/8\", \"::/0\"]");
        assert_eq!(
            errors(&[("a.toml", &a), ("b.toml", &b), ("c.toml", &c)]),
            [
                "c.toml:5:28: ::/0 port 5432 is already protected by target \"a\" (a.toml:5:14): a connection must map to one target"
            ]
        );
        let twice = target("t", 1, "[\"10.0.0.5\", \"any\", \"10.0.0.5/32\", \"0.0.0.0/0\"]");
        assert_eq!(
            errors(&[("t.toml", &twice)]),
            [
                "t.toml:5:33: 10.0.0.5/32 is listed twice in target \"t\"",
                "t.toml:5:48: 0.0.0.0/0 is listed twice in target \"t\"",
            ]
        );
    }

    #[test]
    fn type_errors_do_not_hide_other_targets_or_files() {
        let text = format!(
            "{}colour = \"red\"\n\n{}\n[[target]]\nname = \"no-protocol\"\n",
            target("a", 1, "[\"10.0.0.1\"]"),
            target("b", 0, "[\"10.0.0.2\"]")
        );
        let errs = errors(&[("m.toml", &text), ("syntax.toml", "[[target]\n"), ("top.toml", "targets = 1\n")]);
        assert_eq!(errs.len(), 5, "{errs:#?}");
        assert!(errs[0].starts_with("m.toml:6:1: unknown field `colour`"), "{}", errs[0]);
        assert_eq!(errs[1], "m.toml:11:8: port 0 is not a TCP port (1-65535)");
        assert_eq!(errs[2], "m.toml:14:1: missing field `protocol`");
        assert!(errs[3].starts_with("syntax.toml:1:"), "{}", errs[3]);
        assert_eq!(errs[4], "top.toml:1:1: unknown key `targets`, expected `target` or `actor`");
        assert_eq!(
            errors(&[("i.toml", "target = [1]\n")]),
            ["i.toml:1:11: each target must be a table: write [[target]]"]
        );
        let table = errors(&[("t.toml", "[target]\nname = \"x\"\n")]);
        assert_eq!(table, ["t.toml:1:1: `target` must be an array of tables: write [[target]]"]);
        let rule = errors(&[(
            "r.toml",
            &(target("a", 1, "[\"any\"]") + "[[target.access]]\naction = \"allow\"\nuser = [\"x\"]\n"),
        )]);
        assert!(rule.len() == 1 && rule[0].starts_with("r.toml:8:1: unknown field `user`"), "{rule:?}");
    }

    #[test]
    fn ssh_options_load_and_are_checked() {
        let base = target("web", 22, "[\"10.0.0.9\"]").replace("\"tcp\"", "\"ssh\"");
        let good = format!(
            "{base}[target.ssh]\ncert_ttl_seconds = 120\nhost_names = [\"web-1\"]\n\n[[target.ssh.principal]]\nname = \"deploy\"\ngroups = [\"ops\"]\n\n[[target.ssh.command]]\ncommand = \"rm\"\noptions = [\"r\", \"force\"]\naction = \"deny\"\n\n[[target.ssh.command]]\npattern = \"shutdown *\"\naction = \"approve\"\n\n[[target.ssh.command]]\npipes_into_interpreter = true\naction = \"approve\"\n\n[target.approvals]\ngroups = [\"ops\"]\n"
        );
        let policy = load(&[("s.toml", &good)]).unwrap();
        let ssh = policy.targets[0].ssh.as_ref().unwrap();
        assert_eq!(ssh.cert_ttl, Duration::from_secs(120));
        assert_eq!(ssh.host_names, ["web-1"]);
        assert_eq!(ssh.principals[0].name, "deploy");
        let judge = |line| match ssh.commands.judge(line, crate::command_guard::Source::Exec) {
            crate::command_guard::Verdict::Refuse { action, .. } => action,
            _ => GuardAction::Allow,
        };
        assert_eq!(judge("/bin/rm -fr /"), GuardAction::Deny);
        assert_eq!(judge("sudo shutdown -h now"), GuardAction::Approve);
        assert_eq!(judge("curl -s http://127.0.0.1/x | sh"), GuardAction::Approve);
        assert_eq!(judge("ls /srv"), GuardAction::Allow);
        assert!(!ssh.allow_port_forwarding);
        assert!(policy.targets[0].guardrails.as_ref().unwrap().approvals.is_some());

        let bad = good.replace("120", "5").replace("\"deny\"", "\"maybe\"").replace("\"deploy\"", "\"de ploy\"");
        let found = errors(&[("s.toml", &bad)]);
        assert!(found.iter().any(|e| e.contains("cert_ttl_seconds 5 must be between")), "{found:?}");
        assert!(found.iter().any(|e| e.contains("unknown command action \"maybe\"")), "{found:?}");
        assert!(found.iter().any(|e| e.contains("principal \"de ploy\" is not a valid login name")), "{found:?}");
        let bad_rules = good
            .replace("\"force\"]", "\"recurse\"]")
            .replace("pipes_into_interpreter = true", "pipes_into_interpreter = true\nindirect = true")
            .replace("\n[target.approvals]\ngroups = [\"ops\"]\n", "\n")
            .replace(
                "host_names = [\"web-1\"]\n",
                "host_names = [\"web-1\"]\nonly = [\"ls\", \"-x\"]\notherwise = \"allow\"\n",
            );
        let found = errors(&[("s.toml", &bad_rules)]);
        for expected in [
            "rm has no option \"recurse\"; its options are: force, interactive",
            "a command rule takes one of pattern, command, pipes_into_interpreter = true or indirect = true",
            "commands held for approval need approvers",
            "only: \"-x\" must be a program name",
            "otherwise = \"allow\" would allow everything",
        ] {
            assert!(found.iter().any(|e| e.contains(expected)), "{expected}: {found:?}");
        }
        let on_postgres = good.replace("\"ssh\"", "\"postgres\"");
        let found = errors(&[("s.toml", &on_postgres)]);
        assert!(found.iter().any(|e| e.contains("[target.ssh] is for ssh targets only")), "{found:?}");
    }

    #[test]
    fn error_display_is_one_problem_per_line() {
        let error = load(&[("a.toml", &target("A", 0, "[\"any\"]"))]).unwrap_err();
        assert_eq!(error.errors.len(), 2);
        assert_eq!(error.to_string().lines().count(), 2);
        assert!(error.to_string().lines().all(|line| line.starts_with("a.toml:")), "{error}");
    }

    #[test]
    fn limits_are_enforced_at_the_entry_that_exceeds_them() {
        let many = |count: usize, per: usize| -> String {
            (0..count)
                .map(|i| {
                    let addresses: Vec<String> = (0..per)
                        .map(|j| format!("\"{}\"", std::net::Ipv4Addr::from(0x0a00_0000 + (i * per + j) as u32)))
                        .collect();
                    target(&format!("t{i}"), 80, &format!("[{}]", addresses.join(", ")))
                })
                .collect()
        };
        let max_ids = MAX_TARGET_IDS as usize;
        let policy = load(&[("ok.toml", &many(max_ids, 4))]).unwrap();
        assert_eq!(policy.targets.len(), max_ids);
        assert_eq!(policy.targets.last().map(|t| t.id), Some(MAX_TARGET_IDS - 1));
        assert_eq!(policy.targets.iter().map(|t| t.networks.len()).sum::<usize>(), MAX_TARGET_ENTRIES as usize);

        let errs = errors(&[("ids.toml", &many(max_ids + 1, 1))]);
        assert_eq!(errs, [format!("ids.toml:{}:1: too many targets: at most 1024 are supported", 5 * max_ids + 1)]);
        let errs = errors(&[("nets.toml", &many(2, MAX_TARGET_ENTRIES as usize / 2 + 1))]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("nets.toml:10:")
                && errs[0].ends_with(": too many addresses: at most 4096 are supported in all"),
            "{errs:?}"
        );
    }

    #[test]
    fn odd_input_never_panics() {
        for text in [
            "",
            "\u{0}",
            "target = 1",
            "target = [{}, 1]",
            "target = [{}]",
            "[[target]]\nport = -1",
            "[[target]]\naddresses = \"x\"",
            "[[target]]\nname = \"é\"\nprotocol = \"tcp\"\nport = 1\naddresses = [\"any\", \"/\", \"1.2.3.4/\", \"::/\", \"1.2.3.4/33\"]",
            "[[target]]\nname = \"x\"\nprotocol = \"tcp\"\nport = 9223372036854775807\naddresses = [\"any\"]\n[[target.access]]\n",
            "[[target]]\n[[target.access]]\n[[target.access.x]]\n",
            "[target.access]\n",
            "é = 'ü'\n[[target]]\nname = 'é'",
        ] {
            match load(&[("x.toml", text)]) {
                Ok(policy) => assert!(policy.targets.is_empty(), "{text:?}"),
                Err(error) => assert!(!error.errors.is_empty() && !error.to_string().is_empty()),
            }
        }
    }

    #[test]
    fn load_dir_reads_toml_files_in_name_order_and_does_not_recurse() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("b.toml"), target("from-b", 1, "[\"any\"]")).unwrap();
        fs::write(dir.path().join("a.toml"), target("from-a", 2, "[\"any\"]")).unwrap();
        fs::write(dir.path().join("README.md"), "not a policy").unwrap();
        fs::write(dir.path().join("c.toml.bak"), "not a policy").unwrap();
        fs::write(dir.path().join(".#a.toml"), "an editor's lock file").unwrap();
        fs::create_dir(dir.path().join("examples")).unwrap();
        fs::write(dir.path().join("examples/x.toml"), target("from-examples", 3, "[\"any\"]")).unwrap();
        fs::create_dir(dir.path().join("dir.toml")).unwrap();
        let policy = Policy::load_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = policy.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["from-a", "from-b"]);
        assert_eq!(policy.targets[0].location.file, dir.path().join("a.toml"));
    }

    #[test]
    fn load_dir_collects_errors_from_every_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.toml"), target("a", 0, "[\"any\"]")).unwrap();
        fs::write(dir.path().join("b.toml"), target("a", 1, "[\"nope\"]")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("c.toml")).unwrap();
        let error = Policy::load_dir(dir.path()).unwrap_err().to_string();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let lines: Vec<&str> = error.lines().collect();
        assert_eq!(lines.len(), 4, "{error}");
        assert!(lines[0].starts_with(&format!("cannot read {}: ", path("c.toml"))), "{error}");
        assert_eq!(lines[1], format!("{}:4:8: port 0 is not a TCP port (1-65535)", path("a.toml")));
        assert_eq!(
            lines[2],
            format!("{}:2:8: duplicate target name \"a\" (first defined at {}:2:8)", path("b.toml"), path("a.toml"))
        );
        assert_eq!(lines[3], format!("{}:5:14: \"nope\" is not an IP address, a CIDR or \"any\"", path("b.toml")));
    }

    #[test]
    fn a_missing_or_empty_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("notes.txt"), "").unwrap();
        let err = Policy::load_dir(dir.path()).unwrap_err().to_string();
        assert_eq!(err, format!("no policy files in {}", dir.path().display()));
        let absent = dir.path().join("absent");
        let err = Policy::load_dir(&absent).unwrap_err().to_string();
        assert!(err.starts_with(&format!("no policy files in {}: cannot read it: ", absent.display())), "{err}");
    }
}
