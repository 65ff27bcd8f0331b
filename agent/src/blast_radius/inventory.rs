//! The secrets Airlock holds or issues, read from the configuration and
//! the policy alone: what each is, what it opens, how long it lives and
//! who may obtain it. What it can do on the live target is read later, by
//! the [`Probe`] each entry carries.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use serde::Serialize;

use super::impact::{Assessment, Rule};
use crate::{
    config::Config,
    credentials::AdminStore,
    policy::{
        Action, CredentialSource, OpenBaoAuth, Policy, Protocol, RotationPlan, Target, UpstreamTls,
        https::{HttpCredential, OpenBaoSource},
        ssh::UserCa,
    },
};

/// What kind of secret a row is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretKind {
    /// A PostgreSQL target's admin login (`admin_file`).
    AdminLogin,
    /// A just-in-time role template (`[[target.credentials.role]]`).
    JitRole,
    /// An OpenBao token Airlock holds in a file.
    OpenbaoToken,
    /// A credential Airlock injects into HTTP requests.
    InjectedCredential,
    /// The SSH user CA key.
    SshUserCa,
    /// The SSH host CA key.
    SshHostCa,
    /// The TLS host CA key.
    TlsHostCa,
}

impl SecretKind {
    /// How the table prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::AdminLogin => "admin login",
            Self::JitRole => "JIT role",
            Self::OpenbaoToken => "OpenBao token",
            Self::InjectedCredential => "injected credential",
            Self::SshUserCa => "SSH user CA",
            Self::SshHostCa => "SSH host CA",
            Self::TlsHostCa => "TLS host CA",
        }
    }
}

/// One secret, as policy and configuration describe it.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The target it belongs to; `None` for host-wide secrets (CAs).
    pub target: Option<String>,
    /// What it is.
    pub kind: SecretKind,
    /// Which one: a name and where it is kept, never its value.
    pub secret: String,
    /// What it opens.
    pub grants_access_to: String,
    /// How long it (or what it issues) lives.
    pub ttl_rotation: String,
    /// Who may obtain it, or use what it issues.
    pub who_may_obtain: String,
    /// How its scope is found.
    pub probe: Probe,
}

/// How an entry's scope and impact are found.
#[derive(Clone, Debug)]
pub enum Probe {
    /// From a PostgreSQL server, through the target's admin login.
    Postgres {
        /// The admin login file.
        admin_file: PathBuf,
        /// The server, or why the policy names none.
        server: Result<SocketAddr, String>,
        /// TLS to it.
        tls: UpstreamTls,
        /// `None`: the admin login itself; else the roles a JIT login is made a member of.
        member_of: Option<Vec<String>>,
    },
    /// From OpenBao's `auth/token/lookup-self`.
    OpenBaoToken {
        /// Server address.
        addr: String,
        /// The root-only token file.
        token_file: PathBuf,
        /// CA of OpenBao's certificate.
        ca_file: Option<PathBuf>,
        /// Whether the token obtains other secrets (database logins, bearer tokens).
        issues_secrets: bool,
    },
    /// Known from policy alone.
    Known {
        /// The scope.
        scope: String,
        /// The impact.
        assessment: Assessment,
    },
}

/// Every secret of `policy` (only `target`'s when given) under `config`.
pub fn collect(config: &Config, policy: &Policy, only: Option<&str>) -> Vec<Entry> {
    let targets: Vec<&Target> = policy.targets.iter().filter(|t| only.is_none_or(|name| t.name == name)).collect();
    let mut entries = Vec::new();
    let mut tokens: BTreeMap<(String, PathBuf), TokenUse> = BTreeMap::new();
    let admins = AdminStore::new(&config.state_dir);
    for target in &targets {
        postgres_entries(target, &admins, &mut entries, &mut tokens);
        if let Some(credential) = target.https.as_ref().and_then(|h| h.credential.as_ref()) {
            entries.push(http_entry(target, credential, &mut tokens));
        }
        if let Some(UserCa::OpenBao { addr, token_file, role, mount, ca_file }) = target.ssh.as_ref().map(|s| &s.ca) {
            tokens
                .entry((addr.clone(), token_file.clone()))
                .or_insert_with(|| TokenUse::new(ca_file.clone()))
                .uses
                .push(format!("signs SSH certificates for {} ({mount}/sign/{role})", target.name));
        }
    }
    if only.is_none()
        && config.approvals.backend == crate::approvals::exchange::Backend::Openbao
        && let (Some(addr), Some(token_file)) = (&config.approvals.address, &config.approvals.token_file)
    {
        tokens
            .entry((addr.clone(), token_file.clone()))
            .or_insert_with(|| TokenUse::new(config.approvals.ca_file.clone()))
            .uses
            .push("exchanges approval requests and decisions across hosts".into());
    }
    for ((addr, token_file), token) in tokens {
        entries.push(Entry {
            target: None,
            kind: SecretKind::OpenbaoToken,
            secret: format!("token in {} for {addr}", token_file.display()),
            grants_access_to: token.uses.join("; "),
            ttl_rotation: "read per call from its file; OpenBao's TTL below".into(),
            who_may_obtain: format!("the agent only (root-only file {})", token_file.display()),
            probe: Probe::OpenBaoToken {
                addr,
                token_file,
                ca_file: token.ca_file,
                issues_secrets: token.issues_secrets,
            },
        });
    }
    entries.extend(certificate_authorities(config, &targets));
    entries
}

/// What an OpenBao token file is used for.
struct TokenUse {
    uses: Vec<String>,
    ca_file: Option<PathBuf>,
    issues_secrets: bool,
}

impl TokenUse {
    fn new(ca_file: Option<PathBuf>) -> Self {
        Self { uses: Vec::new(), ca_file, issues_secrets: false }
    }
}

fn postgres_entries(
    target: &Target,
    admins: &AdminStore,
    entries: &mut Vec<Entry>,
    tokens: &mut BTreeMap<(String, PathBuf), TokenUse>,
) {
    let Some(credentials) = &target.credentials else { return };
    let server = server_of(target);
    let at = describe_server(target, &server);
    let ttl = format!("{} s per login (VALID UNTIL), dropped when its last session ends", credentials.ttl.as_secs());
    match &credentials.source {
        CredentialSource::Embedded { admin_file } => {
            entries.push(Entry {
                target: Some(target.name.clone()),
                kind: SecretKind::AdminLogin,
                secret: admin_file.display().to_string(),
                grants_access_to: at.clone(),
                ttl_rotation: admin_rotation(&credentials.rotation),
                who_may_obtain: format!("the agent only (root-only file {})", admin_file.display()),
                probe: Probe::Postgres {
                    admin_file: admins.current(admin_file),
                    server: server.clone(),
                    tls: credentials.tls.clone(),
                    member_of: None,
                },
            });
            for grant in &credentials.roles {
                entries.push(Entry {
                    target: Some(target.name.clone()),
                    kind: SecretKind::JitRole,
                    secret: format!("{:?} (IN ROLE {})", grant.name, or_none(&grant.grants)),
                    grants_access_to: at.clone(),
                    ttl_rotation: ttl.clone(),
                    who_may_obtain: who(target, &grant.users, &grant.groups),
                    probe: Probe::Postgres {
                        admin_file: admins.current(admin_file),
                        server: server.clone(),
                        tls: credentials.tls.clone(),
                        member_of: Some(grant.grants.clone()),
                    },
                });
            }
        }
        CredentialSource::OpenBao { addr, auth, mount, ca_file } => {
            if let OpenBaoAuth::TokenFile(token_file) = auth {
                let token =
                    tokens.entry((addr.clone(), token_file.clone())).or_insert_with(|| TokenUse::new(ca_file.clone()));
                token.issues_secrets = true;
                token.uses.push(format!("issues database logins for {} ({mount}/creds/*)", target.name));
            }
            for grant in &credentials.roles {
                let role = grant.openbao_role.as_deref().unwrap_or(&grant.name);
                entries.push(Entry {
                    target: Some(target.name.clone()),
                    kind: SecretKind::JitRole,
                    secret: format!("{:?} from OpenBao {mount}/creds/{role}", grant.name),
                    grants_access_to: at.clone(),
                    ttl_rotation: "OpenBao's lease, revoked when the session ends".into(),
                    who_may_obtain: who(target, &grant.users, &grant.groups),
                    probe: Probe::Known {
                        scope: format!("decided by OpenBao role {role}'s creation statements at {addr}"),
                        assessment: Assessment::new(
                            Rule::ScopeUnknown,
                            "what OpenBao's role grants is not visible to Airlock",
                        ),
                    },
                });
            }
        }
    }
}

/// What the admin login's TTL column says: how it rotates
/// (`[target.credentials.rotation]`, docs/rotation.md).
fn admin_rotation(plan: &RotationPlan) -> String {
    match plan {
        RotationPlan::Rotates(r) if r.scheduled => format!(
            "long-lived; rotates every {}, the old login valid {} after",
            humantime::format_duration(r.every),
            humantime::format_duration(r.grace)
        ),
        RotationPlan::Rotates(_) => "long-lived; rotated only by `airlock rotate`".into(),
        RotationPlan::Off(why) => format!("long-lived; not rotated ({why})"),
    }
}

fn http_entry(
    target: &Target,
    credential: &HttpCredential,
    tokens: &mut BTreeMap<(String, PathBuf), TokenUse>,
) -> Entry {
    let access = format!("{} requests to {}", target.protocol, describe_networks(target));
    let mut note_token = |openbao: &OpenBaoSource, what: String| {
        if let OpenBaoAuth::TokenFile(file) = &openbao.auth {
            let token = tokens
                .entry((openbao.addr.clone(), file.clone()))
                .or_insert_with(|| TokenUse::new(openbao.ca_file.clone()));
            token.issues_secrets = true;
            token.uses.push(what);
        }
    };
    let (ttl, scope, assessment) = match credential {
        HttpCredential::HeaderFile { header, .. } => (
            "long-lived (the file is re-read per session)".to_owned(),
            format!("whatever the {header} value allows on the target"),
            Assessment::new(Rule::ScopeUnknown, "a static API credential; what it allows is not visible to Airlock"),
        ),
        HttpCredential::KubernetesImpersonation { groups, .. } => (
            "long-lived (the file is re-read per session)".to_owned(),
            format!(
                "the agent's Kubernetes token: impersonates any user{}",
                if groups.is_empty() { String::new() } else { format!(" and groups {}", groups.join(", ")) }
            ),
            Assessment::new(Rule::Impersonation, "a token that may impersonate users acts as anyone the cluster knows"),
        ),
        HttpCredential::Bearer { openbao, path, field } => {
            note_token(openbao, format!("reads the bearer token for {} ({path})", target.name));
            (
                format!("read from OpenBao {path} ({field}) per session; its lease, if any, revoked at the end"),
                "whatever the bearer token allows on the target".to_owned(),
                Assessment::new(Rule::ScopeUnknown, "what the bearer token allows is not visible to Airlock"),
            )
        }
        HttpCredential::OpenBaoToken { openbao } => (
            "the person's own OpenBao token, revoked when the session ends".to_owned(),
            format!("the person's OpenBao policies at {}", openbao.addr),
            Assessment::new(Rule::ScopeUnknown, "the person's OpenBao policies are not visible to Airlock"),
        ),
    };
    Entry {
        target: Some(target.name.clone()),
        kind: SecretKind::InjectedCredential,
        secret: credential.describe(),
        grants_access_to: access,
        ttl_rotation: ttl,
        who_may_obtain: {
            let (users, groups) = allowed_subjects(target);
            who(target, &users, &groups)
        },
        probe: Probe::Known { scope, assessment },
    }
}

fn certificate_authorities(config: &Config, targets: &[&Target]) -> Vec<Entry> {
    let mut entries = Vec::new();
    let ssh_targets: Vec<&Target> = targets.iter().copied().filter(|t| t.ssh.is_some()).collect();
    let state = |dir: &str, file: &str| config.state_dir.join(dir).join(file);
    let presence = |path: &Path| if path.exists() { "" } else { " (not made yet: the agent makes it at first start)" };
    if !ssh_targets.is_empty() {
        let embedded: Vec<&&Target> =
            ssh_targets.iter().filter(|t| t.ssh.as_ref().is_some_and(|s| s.ca == UserCa::Embedded)).collect();
        if !embedded.is_empty() {
            let key = state("ssh", crate::proxy::ssh::ca::USER_CA_KEY_FILE);
            let principals: Vec<String> = embedded
                .iter()
                .filter_map(|t| t.ssh.as_ref().map(|s| (t, s)))
                .map(|(t, s)| {
                    let names: Vec<&str> = s.principals.iter().map(|p| p.name.as_str()).collect();
                    format!("{}: {} ({} s certificates)", t.name, names.join(", "), s.cert_ttl.as_secs())
                })
                .collect();
            let who_list: Vec<String> = embedded
                .iter()
                .filter_map(|t| t.ssh.as_ref().map(|s| (t, s)))
                .flat_map(|(t, s)| {
                    s.principals
                        .iter()
                        .map(move |p| format!("{}@{}: {}", p.name, t.name, subjects(&p.users, &p.groups)))
                })
                .collect();
            entries.push(Entry {
                target: None,
                kind: SecretKind::SshUserCa,
                secret: format!("{}{}", key.display(), presence(&key)),
                grants_access_to: "every SSH server that trusts it (TrustedUserCAKeys)".into(),
                ttl_rotation: format!(
                    "long-lived key; {}; certificates it signs: {}",
                    if config.ssh_ca.rotate {
                        format!("rotates every {}", humantime::format_duration(config.ssh_ca.rotate_every))
                    } else {
                        "rotated only by `airlock rotate`".to_owned()
                    },
                    principals.join("; ")
                ),
                who_may_obtain: format!("the agent only; certificates for {}", who_list.join("; ")),
                probe: Probe::Known {
                    scope: format!(
                        "signs certificates for any login name, not only policy's principals ({})",
                        principals.join("; ")
                    ),
                    assessment: Assessment::new(
                        Rule::SigningKey,
                        "a leaked user CA key logs in as any principal on every server that trusts it",
                    ),
                },
            });
        }
        let key = state("ssh", crate::proxy::ssh::ca::HOST_CA_KEY_FILE);
        let names: Vec<&str> = ssh_targets.iter().map(|t| t.name.as_str()).collect();
        entries.push(Entry {
            target: None,
            kind: SecretKind::SshHostCa,
            secret: format!("{}{}", key.display(), presence(&key)),
            grants_access_to: format!(
                "the identity of every SSH server, to clients trusting it ({})",
                names.join(", ")
            ),
            ttl_rotation: "long-lived key; host certificates 30 days, in memory".into(),
            who_may_obtain: "the agent only".into(),
            probe: Probe::Known {
                scope: "impersonates any SSH server to clients whose known_hosts trust `@cert-authority *`".into(),
                assessment: Assessment::new(
                    Rule::SigningKey,
                    "a leaked host CA key lets an attacker pose as any server and read what people type",
                ),
            },
        });
    }
    let tls_targets: Vec<&str> = targets
        .iter()
        .filter(|t| t.https.is_some() || (t.protocol == Protocol::Postgres && t.credentials.is_some()))
        .map(|t| t.name.as_str())
        .collect();
    if !tls_targets.is_empty() {
        let key = config.state_dir.join("tls").join(crate::proxy::ca::CA_KEY_FILE);
        entries.push(Entry {
            target: None,
            kind: SecretKind::TlsHostCa,
            secret: format!("{}{}", key.display(), presence(&key)),
            grants_access_to: format!(
                "the identity of any TLS server, to clients trusting it ({})",
                tls_targets.join(", ")
            ),
            ttl_rotation: "long-lived key; leaf certificates made per name".into(),
            who_may_obtain: "the agent only".into(),
            probe: Probe::Known {
                scope: "signs a certificate for any name: clients that installed it (airlock ca --install) trust it"
                    .into(),
                assessment: Assessment::new(
                    Rule::SigningKey,
                    "a leaked host CA key lets an attacker pose as any HTTPS site to this host's clients",
                ),
            },
        });
    }
    entries
}

/// Who may obtain a grant open to `users` and `groups` on `target`: those
/// people, the actors its allow rules name, and whether opening a session
/// needs an approval first.
fn who(target: &Target, users: &[String], groups: &[String]) -> String {
    let mut parts = vec![subjects(users, groups)];
    let allows = target.access.iter().filter(|r| r.action == Action::Allow);
    let mut actors: Vec<&str> = allows.flat_map(|r| r.actors.iter().map(String::as_str)).collect();
    actors.sort_unstable();
    actors.dedup();
    if !actors.is_empty() {
        parts.push(format!("actors {}", actors.join(", ")));
    }
    if !target.access.iter().any(|r| r.action == Action::Allow) {
        parts.push("but no access rule allows anyone".into());
    }
    match target.guardrails.as_ref().and_then(|g| g.approvals.as_ref()) {
        Some(approvals) if approvals.session_access.is_some() => parts.push(format!(
            "each session approved first by {} (access window {} s)",
            approvals.describe_approvers(),
            approvals.session_access.map_or(0, |w| w.as_secs())
        )),
        _ => parts.push("no approval needed".into()),
    }
    parts.join("; ")
}

/// Everyone the target's allow rules name: who an injected credential
/// serves (the first matching rule decides, so an earlier deny may narrow it).
fn allowed_subjects(target: &Target) -> (Vec<String>, Vec<String>) {
    let allows = || target.access.iter().filter(|r| r.action == Action::Allow);
    (allows().flat_map(|r| r.users.clone()).collect(), allows().flat_map(|r| r.groups.clone()).collect())
}

/// `users a, b; groups c`, or `anyone`.
fn subjects(users: &[String], groups: &[String]) -> String {
    if users.iter().chain(groups).any(|name| name == "*") {
        return "anyone".into();
    }
    let mut parts = Vec::new();
    if !users.is_empty() {
        parts.push(format!("users {}", users.join(", ")));
    }
    if !groups.is_empty() {
        parts.push(format!("groups {}", groups.join(", ")));
    }
    if parts.is_empty() { "nobody".into() } else { parts.join(", ") }
}

fn or_none(names: &[String]) -> String {
    if names.is_empty() { "no roles".into() } else { names.join(", ") }
}

/// The one server a target's policy names: its first single-address
/// network, on its port. A target protecting a range has none the report
/// could pick without guessing.
pub fn server_of(target: &Target) -> Result<SocketAddr, String> {
    target
        .networks
        .iter()
        .find(|n| n.prefix_len == 128)
        .map(|n| {
            let ip = n.addr.to_ipv4_mapped().map_or(IpAddr::V6(n.addr), IpAddr::V4);
            SocketAddr::new(ip, target.port)
        })
        .ok_or_else(|| format!("the policy names no single server address (networks {})", describe_networks(target)))
}

fn describe_server(target: &Target, server: &Result<SocketAddr, String>) -> String {
    match server {
        Ok(server) => format!("PostgreSQL at {server}"),
        Err(_) => format!("PostgreSQL at {}", describe_networks(target)),
    }
}

fn describe_networks(target: &Target) -> String {
    let networks: Vec<String> = target.networks.iter().map(ToString::to_string).collect();
    format!("{} port {}", networks.join(", "), target.port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Policy {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.toml"), text).unwrap();
        Policy::load_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"))
    }

    const DB: &str = r#"
[[target]]
name = "db"
protocol = "postgres"
port = 5432
addresses = ["10.20.0.0/24", "10.20.1.5"]

[[target.access]]
action = "allow"
groups = ["dev"]

[[target.access]]
action = "allow"
users = ["*"]
actors = ["coding-agent"]

[target.credentials]
admin_file = "/etc/airlock/credentials/db.toml"

[[target.credentials.role]]
name = "readonly"
grants = ["app_read"]
users = ["alice"]
groups = ["dev"]

[[target.guardrail]]
classes = ["drop"]
action = "approve"

[target.approvals]
groups = ["dba"]
session_access_seconds = 3600

[[actor]]
name = "coding-agent"
executables = ["/usr/bin/agent"]
"#;

    #[test]
    fn entries_say_who_may_obtain_each_secret_and_where_it_is_read() {
        let policy = policy(DB);
        let entries = collect(&Config::default(), &policy, None);
        let kinds: Vec<SecretKind> = entries.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [SecretKind::AdminLogin, SecretKind::JitRole, SecretKind::TlsHostCa]);
        let template = &entries[1];
        assert_eq!(template.secret, "\"readonly\" (IN ROLE app_read)");
        assert_eq!(
            template.who_may_obtain,
            "users alice, groups dev; actors coding-agent; each session approved first by group dba (access window 3600 s)"
        );
        assert_eq!(template.grants_access_to, "PostgreSQL at 10.20.1.5:5432", "the single address, not the range");
        let Probe::Postgres { member_of, server, .. } = &template.probe else { panic!("{:?}", template.probe) };
        assert_eq!(member_of.as_deref(), Some(&["app_read".to_owned()][..]));
        assert_eq!(server, &Ok("10.20.1.5:5432".parse().unwrap()));
        assert!(
            entries[0].who_may_obtain.starts_with("the agent only (root-only file /etc/airlock/credentials/db.toml")
        );
        assert!(collect(&Config::default(), &policy, Some("other")).is_empty());
    }

    #[test]
    fn a_target_guarding_only_ranges_names_no_server() {
        let policy = policy(&DB.replace(", \"10.20.1.5\"", ""));
        let entries = collect(&Config::default(), &policy, None);
        let Probe::Postgres { server, .. } = &entries[0].probe else { panic!() };
        assert_eq!(server, &Err("the policy names no single server address (networks 10.20.0.0/24 port 5432)".into()));
    }
}
