//! The loaded policy and access decisions.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    time::Duration,
};

use crate::source::SourceLocation;

/// Every target from every policy file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Targets in load order; a target's `id` is its index here.
    pub targets: Vec<Target>,
    /// What may run behind connections (`[[actor]]`), in load order.
    pub actors: Vec<super::actors::ActorDefinition>,
}

/// A protected destination, and who may reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Index in [`Policy::targets`], also the id the eBPF programs record.
    /// Ids are reassigned on every load: re-resolve after a reload.
    pub id: u32,
    /// Name, unique across all policy files.
    pub name: String,
    /// What the connection speaks, which decides how it is proxied.
    pub protocol: Protocol,
    /// Destination port.
    pub port: u16,
    /// Destination networks.
    pub networks: Vec<Network>,
    /// Access rules in file order: the first match decides, no match denies.
    pub access: Vec<AccessRule>,
    /// Free text from the policy file.
    pub description: Option<String>,
    /// Just-in-time credentials; `None`: the client authenticates itself.
    pub credentials: Option<Credentials>,
    /// Statement guardrails and who approves held statements; `None`: every statement passes.
    pub guardrails: Option<crate::guardrails::Guardrails>,
    /// Data masking (`[target.masking]`); `None`: results pass unmasked.
    pub masking: Option<crate::masking::MaskingPolicy>,
    /// SSH proxying with just-in-time certificates; `None`: SSH is relayed as bytes.
    pub ssh: Option<super::ssh::SshOptions>,
    /// HTTP(S) proxying; set for every http and https target.
    pub https: Option<super::https::HttpsOptions>,
    /// Where the target's `[[target]]` table starts.
    pub location: SourceLocation,
}

/// How Airlock logs in to a target on a person's behalf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// Where logins come from.
    pub source: CredentialSource,
    /// How long a created role lives.
    pub ttl: Duration,
    /// Database users a client may ask for, and what each grants.
    pub roles: Vec<RoleGrant>,
    /// TLS from Airlock to the target.
    pub tls: UpstreamTls,
    /// How the long-lived secret behind these logins is rotated.
    pub rotation: RotationPlan,
}

/// Whether and how the long-lived secret behind a target's logins rotates
/// (`[target.credentials.rotation]`): the embedded engine's admin login,
/// or the root credential of OpenBao's database connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotationPlan {
    /// Rotated as this says (on its schedule, or only on demand).
    Rotates(Rotation),
    /// Not rotated, and why (for `airlock status` and `airlock rotate`).
    Off(String),
}

/// How a secret rotates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// On the schedule; false: only by `airlock rotate`.
    pub scheduled: bool,
    /// Time between rotations.
    pub every: Duration,
    /// How long the old secret keeps working after the new one is in use,
    /// so sessions and admin operations under way finish.
    pub grace: Duration,
    /// The server the admin login lives on (embedded engine).
    pub server: Option<std::net::SocketAddr>,
    /// OpenBao's database connection whose root credential rotates.
    pub openbao_connection: Option<String>,
}

/// Where just-in-time logins come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    /// Airlock's own engine, with an admin login read from a root-only file.
    Embedded {
        /// Root-only TOML file with the admin login Airlock creates roles with.
        admin_file: PathBuf,
    },
    /// OpenBao (or Vault) database secrets engine: `MOUNT/creds/ROLE`.
    OpenBao {
        /// Server address, e.g. `https://bao.internal:8200`.
        addr: String,
        /// How Airlock authenticates to OpenBao.
        auth: OpenBaoAuth,
        /// Mount path of the database secrets engine.
        mount: String,
        /// PEM file of the CA that signs OpenBao's certificate; system roots when unset.
        ca_file: Option<PathBuf>,
    },
}

/// Whose OpenBao token reads the credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenBaoAuth {
    /// Airlock's own token, from a root-only file.
    TokenFile(PathBuf),
    /// The person's (or CI job's) OIDC token, exchanged at OpenBao's JWT
    /// auth method for a token of theirs, so OpenBao's policies and audit
    /// see the person. The token is revoked when the session ends.
    Jwt {
        /// Mount path of the JWT auth method.
        mount: String,
        /// JWT auth role to log in with.
        role: String,
    },
}

/// TLS from Airlock to a target it logs in to, as libpq's sslmode. (Also
/// kept in the credential ledger, so roles are dropped over the same TLS.)
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum UpstreamTls {
    /// Plain TCP.
    Disable,
    /// TLS if the server offers it (libpq's default; open to downgrade).
    #[default]
    Prefer,
    /// TLS or nothing, certificate not checked.
    Require,
    /// TLS with the certificate checked against `ca_file` for `server_name`
    /// (the target's address when unset).
    VerifyFull {
        /// PEM file of trusted CA certificates.
        ca_file: PathBuf,
        /// Name the certificate must carry.
        server_name: Option<String>,
    },
}

impl Credentials {
    /// The grant a client asking for database user `user` gets, or why not.
    pub fn grant_for(&self, user: &str, subject: &Subject<'_>) -> Result<&RoleGrant, String> {
        if let Some(role) = self.roles.iter().find(|r| r.name == user && r.allows(subject)) {
            return Ok(role);
        }
        let usable: Vec<&str> = self.roles.iter().filter(|r| r.allows(subject)).map(|r| r.name.as_str()).collect();
        if usable.is_empty() {
            Err(format!("no database role of this target is open to {}", subject.user))
        } else {
            Err(format!("database user \"{user}\" is not one you may use; you may use: {}", usable.join(", ")))
        }
    }
}

/// A database user name clients ask for, mapped to the roles it grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleGrant {
    /// The user name the client asks for (`psql -U NAME`).
    pub name: String,
    /// Roles the just-in-time login is made a member of.
    pub grants: Vec<String>,
    /// Who may ask for it: user names; `*` matches anyone.
    pub users: Vec<String>,
    /// Who may ask for it: group names; `*` matches anyone.
    pub groups: Vec<String>,
    /// OpenBao role to read credentials from (default: `name`).
    pub openbao_role: Option<String>,
}

impl RoleGrant {
    /// Whether `subject` may use this role.
    pub fn allows(&self, subject: &Subject<'_>) -> bool {
        matches_subject(&self.users, &self.groups, subject)
    }
}

/// How a target's connections are proxied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// PostgreSQL wire protocol: statements are parsed and recorded.
    Postgres,
    /// SSH, relayed as bytes.
    Ssh,
    /// HTTP over TLS: terminated, each request attributed and recorded.
    Https,
    /// Plain HTTP (internal networks): each request attributed and recorded.
    Http,
    /// Any TCP, relayed as bytes.
    Tcp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Postgres => "postgres",
            Self::Ssh => "ssh",
            Self::Https => "https",
            Self::Http => "http",
            Self::Tcp => "tcp",
        })
    }
}

/// An address prefix in IPv6 form, as the eBPF trie keys it: IPv4 networks
/// are IPv4-mapped (`::ffff:a.b.c.d`) with 96 added to their prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Network {
    /// Network address; host bits are zero.
    pub addr: Ipv6Addr,
    /// Prefix length in IPv6 bits, 0..=128.
    pub prefix_len: u8,
}

impl Network {
    /// IPv4 `0.0.0.0/0`, as an IPv4-mapped prefix.
    pub(super) const ANY_V4: Self = Self { addr: Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(), prefix_len: 96 };
    /// IPv6 `::/0`.
    pub(super) const ANY_V6: Self = Self { addr: Ipv6Addr::UNSPECIFIED, prefix_len: 0 };

    /// Whether `ip` lies in this network. IPv4 addresses match their
    /// IPv4-mapped form, as the eBPF programs see them.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        let mask = mask(self.prefix_len);
        u128::from(ip) & mask == u128::from(self.addr) & mask
    }
}

/// The netmask of a prefix length (clamped to 128).
pub(super) fn mask(prefix_len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix_len.min(128))).unwrap_or(0)
}

impl fmt::Display for Network {
    /// IPv4-mapped networks print as IPv4 CIDRs (`10.20.1.0/24`), the way
    /// they were written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr.to_ipv4_mapped() {
            Some(v4) if self.prefix_len >= 96 => write!(f, "{v4}/{}", self.prefix_len - 96),
            _ => write!(f, "{}/{}", self.addr, self.prefix_len),
        }
    }
}

/// One access rule of a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRule {
    /// What a match means.
    pub action: Action,
    /// People this rule matches, by user name, email or OIDC subject
    /// (`ISSUER#sub`); `*` matches anyone.
    pub users: Vec<String>,
    /// Group names this rule matches; `*` matches anyone.
    pub groups: Vec<String>,
    /// Actors this rule is for (`*`: any); empty: a person's own
    /// connections, made by no actor.
    pub actors: Vec<String>,
    /// Told to the person refused by a deny rule.
    pub reason: Option<String>,
    /// Where the rule's `[[target.access]]` table starts.
    pub location: SourceLocation,
}

impl AccessRule {
    /// Whether the rule applies to `subject`: its user or any of its groups
    /// is listed.
    pub fn matches(&self, subject: &Subject<'_>) -> bool {
        matches_subject(&self.users, &self.groups, subject) && matches_actor(&self.actors, subject.actor)
    }
}

/// Whether a guard rule (a guardrail, a command or request rule) with
/// `actors` and `action` binds a connection made by `actor`: naming actors,
/// theirs only; naming none, a restricting rule binds everyone and an
/// allowing one people's own connections only (what policy allows an actor
/// it says by name).
pub fn guard_binds(actors: &[String], action: crate::guardrails::GuardAction, actor: Option<&str>) -> bool {
    match (actors.is_empty(), actor) {
        (true, None) => true,
        (true, Some(_)) => action != crate::guardrails::GuardAction::Allow,
        (false, actor) => matches_actor(actors, actor),
    }
}

/// Whether a rule granting to `actors` is for a connection made by
/// `actor`: a rule naming no actor is for people's own connections only,
/// so an actor has nothing policy does not give it by name.
pub(crate) fn matches_actor(actors: &[String], actor: Option<&str>) -> bool {
    match actor {
        None => actors.is_empty(),
        Some(actor) => actors.iter().any(|a| a == "*" || a == actor),
    }
}

/// Whether `subject`'s user name, email or OIDC subject is in `users`, or
/// one of its groups in `groups`; `*` in either matches anyone.
pub(crate) fn matches_subject(users: &[String], groups: &[String], subject: &Subject<'_>) -> bool {
    let listed = |names: &[String], name: &str| names.iter().any(|n| n == name);
    listed(users, "*")
        || listed(groups, "*")
        || [Some(subject.user), subject.email, subject.subject].into_iter().flatten().any(|name| listed(users, name))
        || subject.groups.iter().any(|group| listed(groups, group))
}

/// What an access rule does on a match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Let the connection through.
    Allow,
    /// Refuse it.
    Deny,
}

/// Who is connecting, as policy sees them.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// User name: the Unix account, or the OIDC claim configured as the user.
    pub user: &'a str,
    /// Email, when the identity has one.
    pub email: Option<&'a str>,
    /// Stable subject (`ISSUER#sub` for OIDC identities).
    pub subject: Option<&'a str>,
    /// Names of every group the user is in.
    pub groups: &'a [String],
    /// The actor the connection was made by, if policy recognised one.
    pub actor: Option<&'a str>,
}

impl<'a> Subject<'a> {
    /// A subject known only by user name and groups.
    pub fn new(user: &'a str, groups: &'a [String]) -> Self {
        Self { user, email: None, subject: None, groups, actor: None }
    }
}

/// The outcome of [`Policy::decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Let through.
    Allow {
        /// Index (from 0) in [`Target::access`] of the rule that allowed.
        rule: usize,
    },
    /// Refused.
    Deny {
        /// Why, for the audit log and the person refused.
        reason: String,
    },
}

impl Policy {
    /// The target with id `id`.
    pub fn target(&self, id: u32) -> Option<&Target> {
        self.targets.get(usize::try_from(id).ok()?)
    }

    /// The target protecting `addr:port`: among targets on `port`, the one
    /// with the longest network prefix containing `addr`, as the eBPF LPM
    /// trie decides. Loading rejects identical (port, network) entries, so
    /// there is never a tie.
    pub fn find_target(&self, addr: IpAddr, port: u16) -> Option<&Target> {
        self.targets
            .iter()
            .filter(|target| target.port == port)
            .flat_map(|target| target.networks.iter().filter(|n| n.contains(addr)).map(move |n| (n.prefix_len, target)))
            .max_by_key(|&(prefix_len, _)| prefix_len)
            .map(|(_, target)| target)
    }

    /// Whether `subject` may reach target `target_id`: the first matching
    /// access rule decides; no match, or an unknown target, denies.
    pub fn decide(&self, target_id: u32, subject: &Subject<'_>) -> Decision {
        let Some(target) = self.target(target_id) else {
            return Decision::Deny { reason: format!("target #{target_id} is not in the policy in force") };
        };
        let Some((index, rule)) = target.access.iter().enumerate().find(|(_, rule)| rule.matches(subject)) else {
            let groups = if subject.groups.is_empty() { "none".to_owned() } else { subject.groups.join(", ") };
            return Decision::Deny {
                reason: format!(
                    "no access rule of target {:?} matches user {:?} (groups: {groups})",
                    target.name, subject.user
                ),
            };
        };
        match rule.action {
            Action::Allow => Decision::Allow { rule: index },
            Action::Deny => Decision::Deny {
                reason: rule.reason.clone().unwrap_or_else(|| {
                    format!(
                        "denied by rule {} of target {:?} ({}:{})",
                        index + 1,
                        target.name,
                        rule.location.file.display(),
                        rule.location.line
                    )
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn net(addr: &str, prefix_len: u8) -> Network {
        Network { addr: addr.parse().unwrap(), prefix_len }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn at(line: u32) -> SourceLocation {
        SourceLocation { file: PathBuf::from("policies/prod.toml"), line, column: 1 }
    }

    fn rule(action: Action, users: &[&str], groups: &[&str], reason: Option<&str>, line: u32) -> AccessRule {
        AccessRule {
            action,
            users: users.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            actors: Vec::new(),
            reason: reason.map(Into::into),
            location: at(line),
        }
    }

    fn target(id: u32, name: &str, port: u16, networks: Vec<Network>, access: Vec<AccessRule>) -> Target {
        Target {
            id,
            name: name.into(),
            protocol: Protocol::Tcp,
            port,
            networks,
            access,
            description: None,
            credentials: None,
            guardrails: None,
            masking: None,
            ssh: None,
            https: None,
            location: at(1),
        }
    }

    fn groups(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn networks_print_as_written() {
        assert_eq!(net("::ffff:10.20.1.0", 120).to_string(), "10.20.1.0/24");
        assert_eq!(net("::ffff:10.20.0.5", 128).to_string(), "10.20.0.5/32");
        assert_eq!(Network::ANY_V4.to_string(), "0.0.0.0/0");
        assert_eq!(Network::ANY_V6.to_string(), "::/0");
        assert_eq!(net("fd00::", 64).to_string(), "fd00::/64");
        assert_eq!(net("::1", 128).to_string(), "::1/128");
        assert_eq!(Protocol::Postgres.to_string(), "postgres");
        assert_eq!(Protocol::Ssh.to_string(), "ssh");
        assert_eq!(Protocol::Tcp.to_string(), "tcp");
    }

    #[test]
    fn contains_treats_ipv4_as_ipv4_mapped() {
        let subnet = net("::ffff:10.20.1.0", 120);
        assert!(subnet.contains(ip("10.20.1.255")));
        assert!(subnet.contains(ip("::ffff:10.20.1.7")));
        assert!(!subnet.contains(ip("10.20.2.0")));
        assert!(!subnet.contains(ip("::a14:107")), "IPv4-compatible is not IPv4-mapped");
        assert!(Network::ANY_V4.contains(ip("192.0.2.1")));
        assert!(!Network::ANY_V4.contains(ip("2001:db8::1")));
        assert!(Network::ANY_V6.contains(ip("2001:db8::1")) && Network::ANY_V6.contains(ip("192.0.2.1")));
        assert!(net("fd00::", 64).contains(ip("fd00::1:2")));
        assert!(!net("fd00::", 64).contains(ip("fd00:0:0:1::")));
        assert!(net("::1", 128).contains(ip("::1")) && !net("::1", 128).contains(ip("::2")));
        assert_eq!((mask(0), mask(128), mask(200)), (0, u128::MAX, u128::MAX));
        assert_eq!(mask(1), 1 << 127);
    }

    #[test]
    fn first_matching_rule_decides() {
        let policy = Policy {
            targets: vec![target(
                0,
                "prod-db",
                5432,
                vec![],
                vec![
                    rule(Action::Deny, &["intern"], &[], Some("interns use staging"), 10),
                    rule(Action::Allow, &[], &["dba", "oncall"], None, 14),
                    rule(Action::Deny, &["mallory"], &[], None, 18),
                    rule(Action::Allow, &["mallory", "bob"], &[], None, 22),
                ],
            )],
            actors: Vec::new(),
        };
        let decide = |user, gs: &[&str]| policy.decide(0, &Subject::new(user, &groups(gs)));
        assert_eq!(decide("alice", &["staff", "oncall"]), Decision::Allow { rule: 1 }, "any of the user's groups");
        assert_eq!(
            decide("intern", &["dba"]),
            Decision::Deny { reason: "interns use staging".into() },
            "an earlier deny beats a later allow"
        );
        assert_eq!(
            decide("mallory", &[]),
            Decision::Deny { reason: "denied by rule 3 of target \"prod-db\" (policies/prod.toml:18)".into() }
        );
        assert_eq!(decide("bob", &[]), Decision::Allow { rule: 3 });
        assert_eq!(
            decide("carol", &["dev", "wheel"]),
            Decision::Deny {
                reason: "no access rule of target \"prod-db\" matches user \"carol\" (groups: dev, wheel)".into()
            }
        );
        assert_eq!(
            decide("carol", &[]),
            Decision::Deny {
                reason: "no access rule of target \"prod-db\" matches user \"carol\" (groups: none)".into()
            }
        );
        assert_eq!(
            policy.decide(1, &Subject::new("alice", &groups(&["dba"]))),
            Decision::Deny { reason: "target #1 is not in the policy in force".into() }
        );
    }

    #[test]
    fn star_matches_anyone_and_names_match_exactly() {
        let anyone = rule(Action::Allow, &["*"], &[], None, 1);
        let any_group = rule(Action::Allow, &[], &["*"], None, 1);
        let dba = rule(Action::Allow, &["dba"], &["dba"], None, 1);
        let nobody = Subject::new("nobody", &[]);
        assert!(anyone.matches(&nobody) && any_group.matches(&nobody));
        assert!(!dba.matches(&nobody));
        assert!(!dba.matches(&Subject::new("dbadmin", &groups(&["DBA", "dba2"]))));
        assert!(dba.matches(&Subject::new("dba", &[])), "a user name in users");
        let star_user = Subject::new("*", &[]);
        assert!(!rule(Action::Allow, &["alice"], &[], None, 1).matches(&star_user));
    }

    #[test]
    fn find_target_takes_the_longest_prefix_on_the_port() {
        let policy = Policy {
            targets: vec![
                target(0, "everything", 5432, vec![Network::ANY_V4, Network::ANY_V6], vec![]),
                target(1, "subnet", 5432, vec![net("::ffff:10.0.0.0", 104), net("fd00::", 16)], vec![]),
                target(2, "host", 5432, vec![net("::ffff:10.1.2.3", 128), net("fd00::5", 128)], vec![]),
                target(3, "ssh-host", 22, vec![net("::ffff:10.1.2.3", 128)], vec![]),
            ],
            actors: Vec::new(),
        };
        let find = |addr: &str, port| policy.find_target(ip(addr), port).map(|t| t.name.as_str());
        assert_eq!(find("10.1.2.3", 5432), Some("host"));
        assert_eq!(find("::ffff:10.1.2.3", 5432), Some("host"), "IPv4-mapped is the same address");
        assert_eq!(find("10.1.2.4", 5432), Some("subnet"));
        assert_eq!(find("192.0.2.1", 5432), Some("everything"));
        assert_eq!(find("fd00::5", 5432), Some("host"));
        assert_eq!(find("fd00::6", 5432), Some("subnet"));
        assert_eq!(find("2001:db8::1", 5432), Some("everything"));
        assert_eq!(find("10.1.2.3", 22), Some("ssh-host"));
        assert_eq!(find("10.1.2.4", 22), None);
        assert_eq!(find("10.1.2.3", 5433), None);
        assert_eq!(policy.target(2).map(|t| t.name.as_str()), Some("host"));
        assert_eq!(policy.target(4), None);
        assert_eq!(Policy::default().find_target(ip("10.1.2.3"), 5432), None);
    }

    #[test]
    fn credentials_grant_only_roles_open_to_the_subject() {
        let role = |name: &str, users: &[&str], gs: &[&str]| RoleGrant {
            name: name.into(),
            grants: vec![format!("{name}_role")],
            users: groups(users),
            groups: groups(gs),
            openbao_role: None,
        };
        let credentials = Credentials {
            source: CredentialSource::Embedded { admin_file: "/etc/airlock/credentials/db.toml".into() },
            ttl: Duration::from_secs(900),
            roles: vec![role("readonly", &["*"], &[]), role("admin", &[], &["dba"])],
            tls: UpstreamTls::Prefer,
            rotation: RotationPlan::Off(String::new()),
        };
        let dba = groups(&["dba"]);
        let alice = Subject::new("alice", &dba);
        let bob = Subject::new("bob", &[]);
        assert_eq!(credentials.grant_for("admin", &alice).map(|r| r.grants.clone()), Ok(vec!["admin_role".into()]));
        assert_eq!(credentials.grant_for("readonly", &bob).map(|r| r.name.as_str()), Ok("readonly"));
        assert_eq!(
            credentials.grant_for("admin", &bob),
            Err("database user \"admin\" is not one you may use; you may use: readonly".into())
        );
        assert_eq!(
            credentials.grant_for("postgres", &alice),
            Err("database user \"postgres\" is not one you may use; you may use: readonly, admin".into())
        );
        let closed = Credentials { roles: vec![role("admin", &[], &["dba"])], ..credentials };
        assert_eq!(closed.grant_for("admin", &bob), Err("no database role of this target is open to bob".into()));
    }
}
