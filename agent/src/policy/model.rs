//! The loaded policy and the access decision.

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
};

use crate::source::SourceLocation;

/// All targets from every policy file.
#[derive(Debug, Default)]
pub struct Policy {
    /// Targets in load order; a target's `id` is its index here.
    pub targets: Vec<Target>,
}

/// A protected destination and who may reach it.
#[derive(Debug)]
pub struct Target {
    /// Index in [`Policy::targets`]; also the eBPF target id.
    pub id: u32,
    /// Unique name.
    pub name: String,
    /// What is spoken to it.
    pub protocol: Protocol,
    /// Destination port.
    pub port: u16,
    /// Destination networks.
    pub networks: Vec<Network>,
    /// Access rules, first match wins; no match denies.
    pub access: Vec<AccessRule>,
    /// Free text.
    pub description: Option<String>,
    /// Where the target is defined.
    pub location: SourceLocation,
}

/// Protocol of a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// PostgreSQL wire protocol.
    Postgres,
    /// SSH.
    Ssh,
    /// Any TCP, relayed as bytes.
    Tcp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Postgres => "postgres",
            Self::Ssh => "ssh",
            Self::Tcp => "tcp",
        })
    }
}

/// An address prefix, in IPv6 form (IPv4 as `::ffff:a.b.c.d/96+n`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Network {
    /// Network address, host bits zero.
    pub addr: Ipv6Addr,
    /// Prefix length in IPv6 bits.
    pub prefix_len: u8,
}

impl Network {
    /// True when `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        let mask = mask(self.prefix_len);
        u128::from(ip) & mask == u128::from(self.addr) & mask
    }
}

/// Netmask of a prefix length, as a u128.
pub fn mask(prefix_len: u8) -> u128 {
    match prefix_len {
        0 => 0,
        n => u128::MAX << (128 - u32::from(n.min(128))),
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr.to_ipv4_mapped() {
            Some(v4) if self.prefix_len >= 96 => write!(f, "{v4}/{}", self.prefix_len - 96),
            _ => write!(f, "{}/{}", self.addr, self.prefix_len),
        }
    }
}

/// One access rule.
#[derive(Debug)]
pub struct AccessRule {
    /// What a match means.
    pub action: Action,
    /// User names this rule matches (`*`: anyone).
    pub users: Vec<String>,
    /// Group names this rule matches (`*`: anyone).
    pub groups: Vec<String>,
    /// Shown to the person refused.
    pub reason: Option<String>,
    /// Where the rule is defined.
    pub location: SourceLocation,
}

/// What an access rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Let the connection through.
    Allow,
    /// Refuse it.
    Deny,
}

/// Who is asking, as policy sees them.
#[derive(Debug)]
pub struct Subject<'a> {
    /// User name.
    pub user: &'a str,
    /// Group names.
    pub groups: &'a [String],
}

/// The outcome of [`Policy::decide`].
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by the rule with this index.
    Allow {
        /// Index of the matching rule.
        rule: usize,
    },
    /// Refused.
    Deny {
        /// Why, for the audit log and the person refused.
        reason: String,
    },
}

impl AccessRule {
    fn matches(&self, subject: &Subject<'_>) -> bool {
        let any_or = |names: &[String], name: &str| names.iter().any(|n| n == "*" || n == name);
        any_or(&self.users, subject.user) || subject.groups.iter().any(|g| any_or(&self.groups, g))
    }
}

impl Policy {
    /// The target with this id.
    pub fn target(&self, id: u32) -> Option<&Target> {
        self.targets.get(id as usize)
    }

    /// The target protecting `addr:port`: the longest matching prefix among
    /// targets on that port, as the eBPF trie decides.
    pub fn find_target(&self, addr: IpAddr, port: u16) -> Option<&Target> {
        self.targets
            .iter()
            .filter(|t| t.port == port)
            .flat_map(|t| t.networks.iter().filter(|n| n.contains(addr)).map(move |n| (n.prefix_len, t)))
            .max_by_key(|(len, _)| *len)
            .map(|(_, t)| t)
    }

    /// May `subject` reach target `target_id`? First matching rule wins; no
    /// match, or an unknown target, denies.
    pub fn decide(&self, target_id: u32, subject: &Subject<'_>) -> Decision {
        let Some(target) = self.target(target_id) else {
            return Decision::Deny { reason: format!("target #{target_id} is not in the policy in force") };
        };
        match target.access.iter().enumerate().find(|(_, rule)| rule.matches(subject)) {
            Some((index, rule)) if rule.action == Action::Allow => Decision::Allow { rule: index },
            Some((index, rule)) => Decision::Deny {
                reason: rule.reason.clone().unwrap_or_else(|| {
                    format!("denied by rule {} of target \"{}\" ({})", index + 1, target.name, rule.location)
                }),
            },
            None => Decision::Deny {
                reason: format!(
                    "no access rule of target \"{}\" matches user \"{}\" (groups: {})",
                    target.name,
                    subject.user,
                    if subject.groups.is_empty() { "none".to_owned() } else { subject.groups.join(", ") }
                ),
            },
        }
    }
}
