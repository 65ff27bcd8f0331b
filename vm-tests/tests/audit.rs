//! The audit log as the security team uses it: `airlock audit verify`,
//! `query` and `replay` run as test users, a member of the configured audit
//! group and an outsider, against the log of a real agent.

use std::fs;

use airlock_vm_tests::{Agent, AgentConfig, Lab, airlock_bin, privileged};

#[test]
fn the_audit_group_verifies_queries_and_replays_and_nobody_else_reads() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new(&["alice", "auditor", "carol"]);
    let pg_dir = lab.dir.path().join("pg");
    lab.target.start_postgres_with(&pg_dir, &[]);
    let v4 = lab.target.v4;
    let policy = format!(
        "[[target]]\nname = \"pg\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"{v4}\"]\n\n[[target.access]]\naction = \"allow\"\nusers = [\"*\"]\n"
    );
    let config = AgentConfig::new(&lab, &policy);
    let group = lab.user("auditor").name.clone();
    let mut text = fs::read_to_string(&config.path).unwrap();
    text.push_str(&format!("\n[audit]\ngroup = \"{group}\"\ncheckpoint_records = 3\n"));
    fs::write(&config.path, text).unwrap();
    lab.agent = Some(Agent::start(config));

    let host = v4.to_string();
    for sql in ["select 1", "select 2 + 2", "select 'hello'"] {
        let out = lab.run_as("alice", "psql", &["-h", &host, "-U", "postgres", "-d", "postgres", "-X", "-c", sql]);
        assert!(out.success(), "{out:?}");
    }
    lab.agent().wait_for_records("postgres.statement", 3);
    let session = lab.agent().records_of("postgres.statement")[1]["session"].as_str().unwrap().to_owned();

    let cli = lab.cli();
    let dir = lab.agent().config.audit_dir.display().to_string();
    let airlock = |user: &str, args: &[&str]| {
        let mut full = args.to_vec();
        full.extend_from_slice(&["--dir", &dir]);
        lab.run_as(user, cli.to_str().unwrap(), &full)
    };

    let verified = airlock("auditor", &["audit", "verify"]);
    assert!(verified.success(), "{verified:?}");
    assert!(
        verified.stdout.contains("ok: ") && verified.stdout.contains("checkpoints verified"),
        "{}",
        verified.stdout
    );

    let alice = lab.user("alice").name.clone();
    let queried = airlock("auditor", &["audit", "query", "--user", &alice, "--kind", "postgres.", "--json"]);
    assert!(queried.success(), "{queried:?}");
    let records: Vec<serde_json::Value> = queried.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 6, "3 startups and 3 statements: {}", queried.stdout);
    let table = airlock("auditor", &["audit", "query", "--text", "2 + 2", "--kind", "postgres.statement"]);
    assert!(table.stdout.contains("select 2 + 2") && table.stdout.lines().count() == 2, "{}", table.stdout);

    let replayed = airlock("auditor", &["replay", &session, "--no-wait"]);
    assert!(replayed.success(), "{replayed:?}");
    assert!(replayed.stdout.contains(&format!("# session {session}: {alice} on pg")), "{}", replayed.stdout);
    assert!(replayed.stdout.contains("=> select 2 + 2") && replayed.stdout.contains("SELECT 1"), "{}", replayed.stdout);

    for args in [&["audit", "query"][..], &["audit", "verify"][..], &["replay", &session][..]] {
        let refused = airlock("carol", args);
        assert!(!refused.success(), "{args:?}: {refused:?}");
        assert!(
            refused.stderr.contains("Permission denied") && refused.stderr.contains("[audit] group"),
            "{}",
            refused.stderr
        );
    }
}

/// Unmounts the lab's small audit filesystem, also when the test fails.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_refuses_sessions_with_the_reason_and_loses_no_record() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new(&["alice"]);
    let pg_dir = lab.dir.path().join("pg");
    lab.target.start_postgres_with(&pg_dir, &[]);
    let v4 = lab.target.v4;
    let config = AgentConfig::new(
        &lab,
        &format!(
            "[[target]]\nname = \"pg\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"{v4}\"]\n\n[[target.access]]\naction = \"allow\"\nusers = [\"*\"]\n"
        ),
    );
    fs::create_dir_all(&config.audit_dir).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "airlock-test-audit"])
        .arg(&config.audit_dir)
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs");
    let mounted = Mounted(config.audit_dir.clone());
    let audit_dir = config.audit_dir.clone();
    lab.agent = Some(Agent::start(config));
    let host = v4.to_string();
    let psql = |lab: &Lab| {
        lab.run_as("alice", "psql", &["-h", &host, "-U", "postgres", "-d", "postgres", "-X", "-c", "select 1"])
    };
    assert!(psql(&lab).success());

    // Fill the filesystem to the last byte.
    let filler = audit_dir.join("filler");
    let _ =
        std::process::Command::new("dd").args(["if=/dev/zero", &format!("of={}", filler.display()), "bs=4k"]).output();
    // The last allocated page may still take a record or two; then no more.
    let refused = (0..20).map(|_| psql(&lab)).find(|out| !out.success()).expect("sessions still ran on a full disk");
    assert!(refused.stderr.contains("the audit log cannot be written"), "{}", refused.stderr);

    fs::remove_file(&filler).unwrap();
    assert!(psql(&lab).success(), "sessions resume once there is room\n{}", lab.agent().log());
    lab.agent.take();
    let out =
        std::process::Command::new(airlock_bin()).args(["audit", "verify", "--dir"]).arg(&audit_dir).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the log verifies after the full disk: {report}");
    drop(mounted);
}

/// An agent stopped cleanly after a short run leaves every record signed,
/// and its log, not a terminal, carries no colour codes.
#[test]
fn a_clean_stop_leaves_every_record_signed() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new(&["alice"]);
    lab.target.start_postgres_with(&lab.dir.path().join("pg"), &[]);
    let v4 = lab.target.v4;
    lab.start_agent(&format!(
        "[[target]]\nname = \"pg\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"{v4}\"]\n\n[[target.access]]\naction = \"allow\"\nusers = [\"*\"]\n"
    ));
    let host = v4.to_string();
    let out = lab.run_as("alice", "psql", &["-h", &host, "-U", "postgres", "-d", "postgres", "-X", "-c", "select 1"]);
    assert!(out.success(), "{out:?}");
    let agent = lab.agent.as_mut().unwrap();
    assert_eq!(agent.terminate(), Some(0), "{}", agent.log());
    let dir = agent.config.audit_dir.clone();
    let verified =
        std::process::Command::new(airlock_bin()).args(["audit", "verify", "--dir"]).arg(&dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success(), "{stdout}");
    let last: u64 = stdout.split("last seq ").nth(1).and_then(|s| s.split(',').next()).unwrap().parse().unwrap();
    assert!(
        stdout.contains(&format!("signed through seq {}", last - 1)),
        "the last checkpoint signs the rest: {stdout}"
    );
    assert!(!agent.log().contains('\u{1b}'), "no ANSI escapes in a log that is not a terminal");
}
