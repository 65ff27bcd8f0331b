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
//! record_input = false                 # also record typed input (passwords typed at prompts included)
//!
//! [[target.ssh.principal]]             # a login name clients may ask for (ssh deploy@web-1)
//! name = "deploy"
//! groups = ["ops"]                     # who may: users and/or groups, `*` for anyone
//!
//! [[target.ssh.command]]               # exec requests: first matching pattern decides
//! pattern = "rm -rf *"                 # `*` matches any text
//! action = "deny"                      # deny | approve | allow
//! ```

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;
use toml::Spanned;

use super::model::{Subject, matches_subject};
use crate::guardrails::GuardAction;

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
    /// Rules for exec requests and typed command lines, in order.
    pub commands: Vec<CommandRule>,
    /// known_hosts file the target's host key must be in; `None`: the key
    /// first seen is pinned in `state_dir/ssh/known_hosts`, a different one refused.
    pub known_hosts: Option<PathBuf>,
    /// Whether recordings include typed input (off: passwords typed at prompts stay out).
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

/// What happens to commands matching a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandRule {
    /// Glob over the whole command line; `*` matches any text.
    pub pattern: String,
    /// Allow, hold for approval, or refuse.
    pub action: GuardAction,
    /// Told to the person refused or waiting.
    pub reason: Option<String>,
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

    /// The first rule whose pattern matches `command`, if any.
    pub fn command_rule(&self, command: &str) -> Option<&CommandRule> {
        let command = command.trim();
        self.commands.iter().find(|rule| crate::glob::matches(&rule.pattern, command))
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
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawCa {
    Name(String),
    Table { openbao: RawOpenBao },
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
    pattern: Spanned<String>,
    action: Spanned<String>,
    reason: Option<String>,
}

/// A session's certificate lives this long unless the policy says otherwise.
const DEFAULT_CERT_TTL_SECONDS: u64 = 300;

/// Checks `[target.ssh]`; each problem goes to `error` with its byte offset.
pub(super) fn options(raw: RawSsh, error: &mut dyn FnMut(usize, String)) -> SshOptions {
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
                RawCa::Table { openbao } => {
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
    let mut commands = Vec::with_capacity(raw.command.len());
    for rule in raw.command {
        let rule = rule.into_inner();
        let action = match rule.action.get_ref().as_str() {
            "allow" => GuardAction::Allow,
            "approve" => GuardAction::Approve,
            "deny" => GuardAction::Deny,
            other => {
                let message = format!("unknown command action {other:?}, expected \"allow\", \"approve\" or \"deny\"");
                error(rule.action.span().start, message);
                continue;
            }
        };
        if rule.pattern.get_ref().trim().is_empty() {
            error(rule.pattern.span().start, "command pattern is empty".into());
        }
        commands.push(CommandRule { pattern: rule.pattern.into_inner(), action, reason: rule.reason });
    }
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
            commands: vec![],
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
}
