//! The `airlock` command line and shipped files, without root.

use std::{fs, process::Command};

use airlock_tests::{airlock_bin, workspace_root};

fn airlock(args: &[&str]) -> std::process::Output {
    Command::new(airlock_bin()).args(args).output().expect("run airlock")
}

#[test]
fn shipped_policies_pass_policy_check() {
    for dir in ["policies", "policies/examples"] {
        let dir = workspace_root().join(dir);
        let out = airlock(&["policy", "check", dir.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}: {stdout}{}", dir.display(), String::from_utf8_lossy(&out.stderr));
        assert!(stdout.lines().all(|l| l.starts_with("ok  ")), "{stdout}");
        assert!(!stdout.is_empty());
    }
}

#[test]
fn the_default_policy_observes_postgres_and_ssh_everywhere() {
    let out = airlock(&["policy", "check", workspace_root().join("policies").to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("postgres port 5432: 0.0.0.0/0, ::/0"), "{stdout}");
    assert!(stdout.contains("ssh port 22: 0.0.0.0/0, ::/0"), "{stdout}");
}

#[test]
fn a_broken_policy_is_reported_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("bad.toml"),
        "[[target]]\nname = \"db\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"10.0.0.1/24\"]\n",
    )
    .unwrap();
    let out = airlock(&["policy", "check", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml:5:"), "{stderr}");
    assert!(stderr.contains("10.0.0.1/24"), "{stderr}");
}

#[test]
fn status_without_an_agent_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    let out = airlock(&["status", "--socket", socket.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach the airlock agent"), "{stderr}");
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = fs::read_to_string(workspace_root().join("systemd/airlock.service")).unwrap();
    assert!(unit.contains("Type=notify"));
    assert!(unit.contains("ExecStart=/usr/bin/airlock agent"));
    // Point ExecStart at the built binary so verify can check it exists.
    let unit = unit.replace("/usr/bin/airlock", airlock_bin().to_str().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("airlock.service");
    fs::write(&path, unit).unwrap();
    let out =
        Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&path).output().expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = stderr.lines().filter(|l| l.contains("airlock.service")).collect();
    assert!(out.status.success() && problems.is_empty(), "{stderr}");
}
