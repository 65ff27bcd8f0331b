//! `[target.ssh]`: how Airlock proxies an SSH target it logs in to.
//!
//! ```toml
//! [target.ssh]
//! cert_ttl_seconds = 300               # life of each session's user certificate (30..=86400)
//! host_names = ["web-1.internal"]      # names the host certificate carries besides the address
//! allow_port_forwarding = false        # direct-tcpip (ssh -L) channels
//! ca = "embedded"                      # Airlock's own SSH CA (state_dir/ssh), or OpenBao's SSH engine:
//! # [target.ssh.ca.openbao]  addr = "https://bao:8200"  token_file = "/etc/airlock/bao-token"  mount = "ssh"  role = "deploy"
//! known_hosts = "/etc/airlock/web.known_hosts"   # target host keys Airlock accepts (default: the first seen, pinned)
//! record_input = false                 # also record typed lines the terminal echoed (never a password at a prompt)
//!
//! [[target.ssh.principal]]             # a login name clients may ask for (ssh deploy@web-1)
//! name = "deploy"
//! groups = ["ops"]                     # who may: users and/or groups, `*` for anyone
//!
//! [[target.ssh.command]]               # what exec requests and typed lines may run:
//! command = "rm"                       # a program (by basename), `git push` with a subcommand,
//! options = ["recursive", "force"]     #   given at least these options (as the program reads them)
//! action = "deny"                      # deny | approve | allow; for each program the first rule matching decides
//! # or: pattern = "rm -rf *"           # a glob over each program and its arguments
//! # or: pipes_into_interpreter = true  # `… | sh`, `bash <(curl …)` (refused unless a rule says otherwise)
//! # or: indirect = true                # a program named only at run time: `$c`, `eval "$x"` (likewise)
//! # actors = ["coding-agent"]          # only for these actors' sessions ("*": any); without: a
//!                                      # restricting rule binds everyone, an allowing one people only
//!
//! only = ["ls", "git status"]          # (in [target.ssh]) an allowlist: other programs get `otherwise`
//! otherwise = "approve"                # approve | deny (default)
//! ```

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;
use toml::Spanned;

use super::model::{Subject, matches_subject};
use crate::{
    command_guard::{Allowlist, CommandGuard, CommandRule, Matcher},
    guardrails::GuardAction,
};

/// SSH options of a target; present, the target's sessions are terminated
/// and re-originated by Airlock with a just-in-time certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshOptions {
    /// Login names clients may ask for, and who may use each.
    pub principals: Vec<Principal>,
    /// How long a session's user certificate is valid.
    pub cert_ttl: Duration,
    /// Host names put in the host certificate besides the dialled address.
    pub host_names: Vec<String>,
    /// Whether clients may open direct-tcpip channels (`ssh -L`).
    pub allow_port_forwarding: bool,
    /// What exec requests and typed command lines may run.
    pub commands: CommandGuard,
    /// known_hosts file the target's host key must be in; `None`: the key
    /// first seen is pinned in `state_dir/ssh/known_hosts`, a different one refused.
    pub known_hosts: Option<PathBuf>,
    /// Whether recordings include typed lines; only those the terminal
    /// echoed, so passwords typed at prompts stay out either way.
    pub record_input: bool,
    /// Who signs sessions' user certificates.
    pub ca: UserCa,
}

/// Who signs sessions' user certificates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum UserCa {
    /// Airlock's user CA in `state_dir/ssh`.
    #[default]
    Embedded,
    /// OpenBao's (or Vault's) SSH secrets engine: `MOUNT/sign/ROLE`.
    OpenBao {
        /// Server address, e.g. `https://bao.internal:8200`.
        addr: String,
        /// Root-only file with the token Airlock authenticates with.
        token_file: PathBuf,
        /// Mount path of the SSH secrets engine.
        mount: String,
        /// Role that signs.
        role: String,
        /// PEM file of the CA that signs OpenBao's certificate; system roots when unset.
        ca_file: Option<PathBuf>,
    },
}

/// A login name on the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The name (`ssh NAME@host`), put in the certificate as its principal.
    pub name: String,
    /// Who may use it: user names; `*` matches anyone.
    pub users: Vec<String>,
    /// Who may use it: group names; `*` matches anyone.
    pub groups: Vec<String>,
}

impl SshOptions {
    /// The principal `login` for `subject`, or why not (naming the ones they may use).
    pub fn principal_for(&self, login: &str, subject: &Subject<'_>) -> Result<&Principal, String> {
        if let Some(principal) =
            self.principals.iter().find(|p| p.name == login && matches_subject(&p.users, &p.groups, subject))
        {
            return Ok(principal);
        }
        let usable: Vec<&str> = self
            .principals
            .iter()
            .filter(|p| matches_subject(&p.users, &p.groups, subject))
            .map(|p| p.name.as_str())
            .collect();
        if usable.is_empty() {
            Err(format!("no login on this target is open to {}", subject.user))
        } else {
            Err(format!("login \"{login}\" is not one you may use; you may use: {}", usable.join(", ")))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSsh {
    #[serde(default)]
    principal: Vec<Spanned<RawPrincipal>>,
    cert_ttl_seconds: Option<Spanned<i64>>,
    #[serde(default)]
    host_names: Vec<String>,
    #[serde(default)]
    allow_port_forwarding: bool,
    #[serde(default)]
    command: Vec<Spanned<RawCommand>>,
    ca: Option<Spanned<RawCa>>,
    known_hosts: Option<Spanned<String>>,
    #[serde(default)]
    record_input: bool,
    only: Option<Spanned<Vec<String>>>,
    otherwise: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawCa {
    Name(String),
    Table(RawCaTable),
}

/// `ca = { openbao = { … } }`: nothing else may be in it (a misspelt key
/// would otherwise be dropped without a word).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCaTable {
    openbao: RawOpenBao,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpenBao {
    addr: String,
    token_file: String,
    #[serde(default = "default_mount")]
    mount: String,
    role: String,
    ca_file: Option<String>,
}

fn default_mount() -> String {
    "ssh".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrincipal {
    name: Spanned<String>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    pattern: Option<Spanned<String>>,
    command: Option<Spanned<String>>,
    #[serde(default)]
    options: Vec<String>,
    #[serde(default)]
    pipes_into_interpreter: bool,
    #[serde(default)]
    indirect: bool,
    #[serde(default)]
    actors: Vec<String>,
    action: Spanned<String>,
    reason: Option<String>,
}

/// A session's certificate lives this long unless the policy says otherwise.
const DEFAULT_CERT_TTL_SECONDS: u64 = 300;

/// Checks `[target.ssh]`; each problem goes to `error` with its byte offset.
///
/// `has_approvers`: whether the target names approvers (`[target.approvals]`),
/// which rules that hold commands need.
pub(super) fn options(raw: RawSsh, has_approvers: bool, error: &mut dyn FnMut(usize, String)) -> SshOptions {
    let cert_ttl = match raw.cert_ttl_seconds {
        None => DEFAULT_CERT_TTL_SECONDS,
        Some(ttl) => match u64::try_from(*ttl.get_ref()) {
            Ok(seconds @ 30..=86_400) => seconds,
            _ => {
                error(ttl.span().start, format!("cert_ttl_seconds {} must be between 30 and 86400", ttl.get_ref()));
                DEFAULT_CERT_TTL_SECONDS
            }
        },
    };
    let ca = match raw.ca {
        None => UserCa::Embedded,
        Some(ca) => {
            let at = ca.span().start;
            match ca.into_inner() {
                RawCa::Name(name) if name == "embedded" => UserCa::Embedded,
                RawCa::Name(name) => {
                    error(at, format!("unknown ssh ca {name:?}, expected \"embedded\" or an openbao table"));
                    UserCa::Embedded
                }
                RawCa::Table(RawCaTable { openbao }) => {
                    if !(openbao.addr.starts_with("http://") || openbao.addr.starts_with("https://")) {
                        error(at, format!("openbao addr {:?} must start with http:// or https://", openbao.addr));
                    }
                    let absolute = |path: &str| path.starts_with('/');
                    if !absolute(&openbao.token_file) || !openbao.ca_file.as_deref().is_none_or(absolute) {
                        error(at, "openbao token_file and ca_file must be absolute paths".into());
                    }
                    UserCa::OpenBao {
                        addr: openbao.addr,
                        token_file: openbao.token_file.into(),
                        mount: openbao.mount,
                        role: openbao.role,
                        ca_file: openbao.ca_file.map(PathBuf::from),
                    }
                }
            }
        }
    };
    let known_hosts = raw.known_hosts.map(|path| {
        if !path.get_ref().starts_with('/') {
            error(path.span().start, "known_hosts must be an absolute path".into());
        }
        PathBuf::from(path.into_inner())
    });
    let mut principals = Vec::with_capacity(raw.principal.len());
    for principal in raw.principal {
        let start = principal.span().start;
        let principal = principal.into_inner();
        let name = principal.name.get_ref();
        let valid = !name.is_empty()
            && name.len() <= 32
            && name.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'));
        if !valid {
            error(principal.name.span().start, format!("principal {name:?} is not a valid login name"));
        }
        if principal.users.is_empty() && principal.groups.is_empty() {
            error(start, format!("principal {name:?} is open to nobody: give users, groups or both"));
        }
        principals.push(Principal {
            name: principal.name.into_inner(),
            users: principal.users,
            groups: principal.groups,
        });
    }
    let commands = command_guard(raw.command, raw.only, raw.otherwise, has_approvers, error);
    SshOptions {
        principals,
        cert_ttl: Duration::from_secs(cert_ttl),
        host_names: raw.host_names,
        allow_port_forwarding: raw.allow_port_forwarding,
        commands,
        known_hosts,
        record_input: raw.record_input,
        ca,
    }
}

/// Checks `[[target.ssh.command]]`, `only` and `otherwise`.
fn command_guard(
    raw_rules: Vec<Spanned<RawCommand>>,
    only: Option<Spanned<Vec<String>>>,
    otherwise: Option<Spanned<String>>,
    has_approvers: bool,
    error: &mut dyn FnMut(usize, String),
) -> CommandGuard {
    let action = |written: &Spanned<String>, error: &mut dyn FnMut(usize, String)| {
        let action = match GuardAction::from_policy(written.get_ref(), "command") {
            Ok(action) => action,
            Err(message) => {
                error(written.span().start, message);
                return None;
            }
        };
        if action == GuardAction::Approve && !has_approvers {
            let message = "commands held for approval need approvers: add [target.approvals] with users or groups";
            error(written.span().start, message.into());
        }
        Some(action)
    };
    let mut rules = Vec::with_capacity(raw_rules.len());
    for rule in raw_rules {
        let start = rule.span().start;
        let rule = rule.into_inner();
        let Some(action) = action(&rule.action, error) else { continue };
        let forms = [rule.pattern.is_some(), rule.command.is_some(), rule.pipes_into_interpreter, rule.indirect];
        if forms.iter().filter(|&&f| f).count() != 1 {
            let message =
                "a command rule takes one of pattern, command, pipes_into_interpreter = true or indirect = true";
            error(start, message.into());
            continue;
        }
        if !rule.options.is_empty() && rule.command.is_none() {
            error(start, "options go with command = \"…\"".into());
        }
        let matcher = if let Some(pattern) = rule.pattern {
            if pattern.get_ref().trim().is_empty() {
                error(pattern.span().start, "command pattern is empty".into());
            }
            Matcher::Pattern(pattern.into_inner())
        } else if let Some(command) = rule.command {
            let Some((program, subcommand)) = program_and_subcommand(command.get_ref()) else {
                error(
                    command.span().start,
                    format!(
                        "command {:?} must be a program name, optionally with a subcommand (\"git push\")",
                        command.get_ref()
                    ),
                );
                continue;
            };
            let mut options = Vec::with_capacity(rule.options.len());
            for written in &rule.options {
                match crate::command_guard::rule_option(&program, subcommand.as_deref(), written) {
                    Ok(name) => options.push(name),
                    Err(message) => error(command.span().start, message),
                }
            }
            Matcher::Command { program, subcommand, options }
        } else if rule.pipes_into_interpreter {
            Matcher::PipesIntoInterpreter
        } else {
            Matcher::Indirect
        };
        rules.push(CommandRule { matcher, action, reason: rule.reason, actors: rule.actors });
    }
    let only = only.map(|listed| {
        let at = listed.span().start;
        let mut commands = Vec::new();
        for entry in listed.into_inner() {
            match program_and_subcommand(&entry) {
                Some(command) => commands.push(command),
                None => error(at, format!("only: {entry:?} must be a program name, optionally with a subcommand")),
            }
        }
        let otherwise = match otherwise.as_ref().map(|o| (o, action(o, error))) {
            None => GuardAction::Deny,
            Some((_, None)) => GuardAction::Deny,
            Some((written, Some(GuardAction::Allow))) => {
                error(written.span().start, "otherwise = \"allow\" would allow everything: use approve or deny".into());
                GuardAction::Deny
            }
            Some((_, Some(action))) => action,
        };
        Allowlist { commands, otherwise }
    });
    if let (None, Some(otherwise)) = (&only, &otherwise) {
        error(otherwise.span().start, "otherwise goes with only = […]".into());
    }
    CommandGuard { rules, only }
}

/// `"git push"` → `("git", Some("push"))`; `None` unless one or two plain words.
fn program_and_subcommand(text: &str) -> Option<(String, Option<String>)> {
    let mut words = text.split_whitespace();
    let program = words.next()?;
    let subcommand = words.next();
    let plain = |w: &str| !w.is_empty() && w.bytes().all(|c| c.is_ascii_alphanumeric() || b"._+-".contains(&c));
    if words.next().is_some() || !plain(program) || program.starts_with('-') || !subcommand.is_none_or(plain) {
        return None;
    }
    Some((program.to_owned(), subcommand.map(str::to_owned)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_follow_users_and_groups() {
        let options = SshOptions {
            principals: vec![
                Principal { name: "deploy".into(), users: vec![], groups: vec!["ops".into()] },
                Principal { name: "root".into(), users: vec!["alice".into()], groups: vec![] },
            ],
            cert_ttl: Duration::from_secs(60),
            host_names: vec![],
            allow_port_forwarding: false,
            commands: CommandGuard::default(),
            known_hosts: None,
            record_input: false,
            ca: UserCa::Embedded,
        };
        let ops = ["ops".to_owned()];
        let bob = Subject::new("bob", &ops);
        assert_eq!(options.principal_for("deploy", &bob).unwrap().name, "deploy");
        let refused = options.principal_for("root", &bob).unwrap_err();
        assert_eq!(refused, "login \"root\" is not one you may use; you may use: deploy");
        let nobody = Subject::new("eve", &[]);
        assert_eq!(options.principal_for("deploy", &nobody).unwrap_err(), "no login on this target is open to eve");
    }

    #[test]
    fn an_openbao_ca_table_takes_nothing_else() {
        let policy = |ca: &str| {
            format!(
                "[[target]]\nname = \"web\"\nprotocol = \"ssh\"\nport = 22\naddresses = [\"10.0.0.5\"]\n\n\
                 [[target.access]]\naction = \"allow\"\nusers = [\"*\"]\n\n[target.ssh]\n{ca}\n\n\
                 [[target.ssh.principal]]\nname = \"deploy\"\nusers = [\"*\"]\n"
            )
        };
        let load = |text: &str| crate::policy::Policy::from_sources([(std::path::Path::new("s.toml"), text)]);
        let openbao = "openbao = { addr = \"https://bao:8200\", token_file = \"/etc/t\", role = \"deploy\" }";
        let good = load(&policy(&format!("ca = {{ {openbao} }}"))).unwrap();
        assert!(matches!(good.targets[0].ssh.as_ref().unwrap().ca, UserCa::OpenBao { .. }));
        assert!(load(&policy(&format!("ca = {{ {openbao}, extra = 1 }}"))).is_err());
    }
}
