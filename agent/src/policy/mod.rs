//! Access policy: which destinations are protected, and who may reach them.
//!
//! ```toml
//! [[target]]
//! name = "prod-db"
//! protocol = "postgres"        # postgres | ssh | tcp
//! port = 5432
//! addresses = ["10.20.0.5", "10.20.1.0/24", "fd00::/64"]   # or "any"
//!
//! [[target.access]]            # first match wins; no match denies
//! action = "allow"
//! groups = ["dba"]
//! ```

mod load;
mod model;

pub use model::{Decision, Policy, Protocol, Subject};

#[cfg(test)]
mod tests {
    use std::{net::IpAddr, path::Path};

    use super::{load::PolicyError, *};

    fn load(files: &[(&str, &str)]) -> Result<Policy, PolicyError> {
        Policy::from_sources(files.iter().map(|(p, t)| (Path::new(*p), *t)))
    }

    fn errors(files: &[(&str, &str)]) -> Vec<String> {
        load(files).unwrap_err().diagnostics.iter().map(ToString::to_string).collect()
    }

    const PROD: &str = r#"# production
[[target]]
name = "prod-db"
protocol = "postgres"
port = 5432
addresses = ["10.20.0.5", "10.20.1.0/24", "fd00::/64"]

[[target.access]]
action = "deny"
users = ["intern"]
reason = "interns use the staging replica"

[[target.access]]
action = "allow"
groups = ["dba"]

[[target.access]]
action = "deny"
users = ["mallory"]
"#;

    fn subject<'a>(user: &'a str, groups: &'a [String]) -> Subject<'a> {
        Subject { user, groups }
    }

    #[test]
    fn loads_targets_networks_and_rules() {
        let policy = load(&[("p/prod.toml", PROD)]).unwrap();
        let target = &policy.targets[0];
        assert_eq!(
            (target.id, target.name.as_str(), target.protocol, target.port),
            (0, "prod-db", Protocol::Postgres, 5432)
        );
        let networks: Vec<String> = target.networks.iter().map(ToString::to_string).collect();
        assert_eq!(networks, ["10.20.0.5/32", "10.20.1.0/24", "fd00::/64"]);
        assert_eq!(target.access.len(), 3);
        assert_eq!(target.location.to_string(), "p/prod.toml:2:1");
    }

    #[test]
    fn first_matching_rule_decides_and_no_match_denies() {
        let policy = load(&[("p/prod.toml", PROD)]).unwrap();
        let dba = vec!["dba".to_owned()];
        let none: Vec<String> = vec![];
        assert_eq!(policy.decide(0, &subject("alice", &dba)), Decision::Allow { rule: 1 });
        assert_eq!(
            policy.decide(0, &subject("intern", &dba)),
            Decision::Deny { reason: "interns use the staging replica".into() },
            "an earlier deny wins over a later allow"
        );
        assert_eq!(
            policy.decide(0, &subject("mallory", &none)),
            Decision::Deny { reason: "denied by rule 3 of target \"prod-db\" (p/prod.toml:17:1)".into() }
        );
        assert_eq!(
            policy.decide(0, &subject("bob", &["dev".to_owned(), "wheel".to_owned()])),
            Decision::Deny {
                reason: "no access rule of target \"prod-db\" matches user \"bob\" (groups: dev, wheel)".into()
            }
        );
        assert!(matches!(policy.decide(7, &subject("alice", &dba)), Decision::Deny { .. }));
    }

    #[test]
    fn star_matches_anyone() {
        let policy = load(&[("a.toml", "[[target]]\nname = \"t\"\nprotocol = \"tcp\"\nport = 1\naddresses = [\"any\"]\n[[target.access]]\naction = \"allow\"\nusers = [\"*\"]\n")]).unwrap();
        assert_eq!(policy.decide(0, &subject("x", &[])), Decision::Allow { rule: 0 });
        let networks: Vec<String> = policy.targets[0].networks.iter().map(ToString::to_string).collect();
        assert_eq!(networks, ["0.0.0.0/0", "::/0"]);
    }

    #[test]
    fn find_target_takes_the_longest_prefix_on_the_port() {
        let wide =
            "[[target]]\nname = \"subnet\"\nprotocol = \"tcp\"\nport = 5432\naddresses = [\"10.0.0.0/8\", \"any\"]\n";
        let narrow = "[[target]]\nname = \"host\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"10.1.2.3\"]\n";
        let policy = load(&[("a.toml", wide), ("b.toml", narrow)]).unwrap();
        let find = |ip: &str, port| policy.find_target(ip.parse::<IpAddr>().unwrap(), port).map(|t| t.name.as_str());
        assert_eq!(find("10.1.2.3", 5432), Some("host"));
        assert_eq!(find("::ffff:10.1.2.3", 5432), Some("host"), "IPv4-mapped is the same address");
        assert_eq!(find("10.9.9.9", 5432), Some("subnet"));
        assert_eq!(find("192.0.2.1", 5432), Some("subnet"), "via any");
        assert_eq!(find("2001:db8::1", 5432), Some("subnet"), "via any (::/0)");
        assert_eq!(find("10.1.2.3", 5433), None);
    }

    #[test]
    fn every_error_is_reported_with_its_location() {
        let bad = r#"[[target]]
name = "Bad Name"
protocol = "mysql"
port = 70000
addresses = ["10.0.0.1/24", "nonsense", "::1/129"]

[[target.access]]
action = "maybe"
"#;
        assert_eq!(
            errors(&[("bad.toml", bad)]),
            [
                "bad.toml:2:8: target name \"Bad Name\" must be lowercase letters, digits, '_', '.', '-' (starting with a letter or digit), at most 64 characters",
                "bad.toml:3:12: unknown protocol \"mysql\" (expected postgres, ssh or tcp)",
                "bad.toml:4:8: port 70000 is not a TCP port (1-65535)",
                "bad.toml:5:14: \"10.0.0.1/24\" has host bits set: did you mean 10.0.0.0/24?",
                "bad.toml:5:29: \"nonsense\" is not an IP address, a CIDR or \"any\"",
                "bad.toml:5:41: \"::1/129\": prefix length must be 0-128",
                "bad.toml:8:10: unknown action \"maybe\" (expected allow or deny)",
                "bad.toml:7:1: access rule matches nobody: give users, groups or both",
            ]
        );
    }

    #[test]
    fn duplicates_across_files_point_at_both() {
        let a = "[[target]]\nname = \"db\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"10.0.0.5\"]\n";
        let b = "\n[[target]]\nname = \"db\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"10.0.0.5\"]\n";
        assert_eq!(
            errors(&[("p/a.toml", a), ("p/b.toml", b)]),
            [
                "p/b.toml:3:8: duplicate target name \"db\" (first defined at p/a.toml:2:8)",
                "p/b.toml:6:14: 10.0.0.5/32 port 5432 is already protected by target \"db\" (p/a.toml:5:14); a connection must map to one target",
            ]
        );
    }

    #[test]
    fn syntax_errors_and_unknown_fields_have_locations() {
        let errs = errors(&[(
            "s.toml",
            "[[target]]\nname = \"x\"\nprotocol = \"tcp\"\nport = 1\naddresses = [\"any\"]\ncolour = 1\n",
        )]);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("s.toml:6:1: ") && errs[0].contains("colour"), "{errs:?}");
        let errs = errors(&[("t.toml", "[[target]\n")]);
        assert!(errs[0].starts_with("t.toml:1:"), "{errs:?}");
        let errs = errors(&[("u.toml", "[[target]]\nname = \"x\"\n")]);
        assert!(errs[0].starts_with("u.toml:1:1: ") && errs[0].contains("protocol"), "{errs:?}");
    }

    #[test]
    fn an_empty_or_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Policy::load_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no policy files"), "{err}");
        let err = Policy::load_dir(&dir.path().join("absent")).unwrap_err().to_string();
        assert!(err.contains("cannot read the policy directory"), "{err}");
    }

    #[test]
    fn odd_input_never_panics() {
        for text in [
            "",
            "target = 1",
            "[[target]]\nport = -1",
            "[[target]]\naddresses = \"x\"",
            "\u{0}",
            "[[target]]\nname = \"é\"\nprotocol = \"tcp\"\nport = 1\naddresses = [\"any\"]\n[[target.access]]\naction = \"allow\"\nusers = []\n",
        ] {
            let _ = load(&[("x.toml", text)]);
        }
    }

    #[test]
    fn shipped_policies_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let default = Policy::load_dir(&root).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = default.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["postgres", "ssh"]);
        let anyone = subject("anyone", &[]);
        assert!(
            default.targets.iter().all(|t| matches!(default.decide(t.id, &anyone), Decision::Allow { .. })),
            "observe mode denies nobody"
        );
        let examples = Policy::load_dir(&root.join("examples")).unwrap_or_else(|e| panic!("{e}"));
        assert!(!examples.targets.is_empty());
    }
}
