//! Access policy: which destinations are protected, and who may reach them.
//!
//! The policy is every `*.toml` file directly in the policy directory, read
//! in file-name order; subdirectories such as `examples/` are not read.
//!
//! ```toml
//! [[target]]
//! name = "prod-db"              # unique across all files: [a-z0-9][a-z0-9_.-]{0,63}
//! protocol = "postgres"         # postgres | ssh | https | http | tcp
//! port = 5432
//! addresses = ["10.20.0.5", "10.20.1.0/24", "fd00::/64"]   # or "any"
//! description = "optional"
//!
//! [[target.access]]             # in order, first match wins; no match denies
//! action = "allow"              # allow | deny
//! users = ["alice"]             # or "*" for anyone
//! groups = ["dba"]              # matches if the user OR one of their groups is listed
//! actors = ["coding-agent"]     # for connections an [[actor]] makes ("*": any); without: the person's own
//! reason = "optional, told to the person denied"
//!
//! [target.credentials]          # optional, postgres only: just-in-time logins
//! admin_file = "/etc/airlock/credentials/prod-db.toml"   # absolute; root-only
//! ttl_seconds = 900             # 10..=86400, default 900
//!
//! [[target.credentials.role]]   # a database user clients may ask for
//! name = "readonly"
//! grants = ["pg_read_all_data"]
//! groups = ["dev"]              # who may ask: users and/or groups, as in access
//!
//! [target.masking]              # optional, postgres only: see crate::masking::policy
//! detectors = ["card", "email"]
//! ```
//!
//! Actors (`[[actor]]`, see [`actors`]) name what may run behind a
//! connection: a rule naming actors is for their connections, and a rule
//! naming none for people's own.
//!
//! A connection belongs to the target on its port with the longest network
//! prefix containing its address, as in the eBPF trie; two targets may not
//! list the same (port, network).

pub mod actors;
pub mod https;
mod load;
mod model;
pub mod ssh;

pub use load::PolicyError;
pub use model::{
    AccessRule, Action, CredentialSource, Credentials, Decision, Network, OpenBaoAuth, Policy, Protocol, RoleGrant,
    Rotation, RotationPlan, Subject, Target, UpstreamTls,
};
pub(crate) use model::{guard_binds, matches_subject};

#[cfg(test)]
mod tests {
    use std::{net::IpAddr, path::Path};

    use super::*;

    fn policies_dir() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies"))
    }

    #[test]
    fn shipped_default_policy_observes_everyone() {
        let policy = Policy::load_dir(policies_dir()).unwrap_or_else(|e| panic!("{e}"));
        let summary: Vec<_> = policy
            .targets
            .iter()
            .map(|t| (t.id, t.name.as_str(), t.protocol, t.port, t.networks.iter().map(ToString::to_string).collect()))
            .collect();
        let any = || vec!["0.0.0.0/0".to_owned(), "::/0".to_owned()];
        assert_eq!(
            summary,
            [(0, "postgres", Protocol::Postgres, 5432, any()), (1, "ssh", Protocol::Ssh, 22, any())],
            "only default.toml, not examples/"
        );
        let nobody = Subject::new("nobody", &[]);
        for target in &policy.targets {
            assert_eq!(policy.decide(target.id, &nobody), Decision::Allow { rule: 0 }, "observe mode denies nobody");
        }
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(policy.find_target(ip("203.0.113.9"), 5432).map(|t| t.id), Some(0));
        assert_eq!(policy.find_target(ip("2001:db8::9"), 22).map(|t| t.id), Some(1));
        assert_eq!(policy.find_target(ip("203.0.113.9"), 3306), None);
    }

    #[test]
    fn shipped_example_loads_and_decides() {
        let policy = Policy::load_dir(&policies_dir().join("examples")).unwrap_or_else(|e| panic!("{e}"));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let primary = policy.find_target(ip("10.20.0.5"), 5432).unwrap_or_else(|| panic!("no primary"));
        let replicas = policy.find_target(ip("10.20.1.17"), 5432).unwrap_or_else(|| panic!("no replicas"));
        assert_ne!(primary.id, replicas.id);
        let groups = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let analyst = groups(&["analytics"]);
        let dba = groups(&["dba"]);
        let decide = |id, user, groups: &[String]| policy.decide(id, &Subject::new(user, groups));
        assert!(matches!(decide(primary.id, "ann", &dba), Decision::Allow { .. }));
        assert!(matches!(decide(primary.id, "ann", &analyst), Decision::Deny { .. }));
        assert!(matches!(decide(replicas.id, "ann", &analyst), Decision::Allow { .. }));
        let Decision::Deny { reason } = decide(primary.id, "intern", &dba) else { panic!("intern allowed") };
        assert!(reason.contains("staging"), "{reason}");

        // Copied next to the default policy, its addresses take precedence.
        let dir = tempfile::tempdir().unwrap();
        for file in ["default.toml", "examples/prod-postgres.toml"] {
            let from = policies_dir().join(file);
            std::fs::copy(&from, dir.path().join(from.file_name().unwrap())).unwrap();
        }
        let both = Policy::load_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(both.find_target(ip("10.20.0.5"), 5432).map(|t| t.name.as_str()), Some(primary.name.as_str()));
        assert_eq!(both.find_target(ip("10.20.0.6"), 5432).map(|t| t.name.as_str()), Some("postgres"));
    }
}
