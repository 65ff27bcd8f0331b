//! Rotation of the long-lived secrets behind just-in-time logins, end to
//! end: a real PostgreSQL 15 with SCRAM logins, the embedded engine's admin
//! login rotated between two roles with a grace period (and killed at
//! every step), and OpenBao's root credential rotated by OpenBao.

use std::{fs, path::Path, process::Command, thread, time::Duration};

use airlock_vm_tests::{Lab, TargetHost, agent::airlock_bin, privileged};
use serde_json::Value;

const SEED_PASSWORD: &str = "admin-secret-4711";

/// PostgreSQL with SCRAM for network logins, Airlock's admin role and its
/// seed file, and a policy granting alice `readonly` (in `pg_read_all_data`);
/// `rotation` is the `[target.credentials.rotation]` table's body.
fn rotation_lab(rotation: &str) -> (Lab, std::path::PathBuf) {
    let mut lab = Lab::new(&["alice"]);
    let data = lab.target.start_postgres_auth(&lab.dir.path().join("pg"), &[], "scram-sha-256");
    let seed = TargetHost::jit_admin(&data, lab.dir.path(), SEED_PASSWORD);
    TargetHost::superuser_sql(&data, "CREATE TABLE orders (id int); INSERT INTO orders VALUES (1), (2), (3)");
    let alice = lab.user("alice").name.clone();
    let policy =
        lab.target.jit_policy(&seed, &format!("tls = \"disable\"\n\n[target.credentials.rotation]\n{rotation}"));
    lab.start_agent(&format!(
        "{policy}\n[[target.credentials.role]]\nname = \"readonly\"\ngrants = [\"pg_read_all_data\"]\nusers = [\"{alice}\"]\n"
    ));
    (lab, data)
}

fn count_orders(lab: &Lab) -> airlock_vm_tests::CommandOutput {
    let host = lab.target.v4.to_string();
    let sql = "SELECT count(*) FROM orders";
    lab.run_as("alice", "psql", &["-h", &host, "-U", "readonly", "-d", "postgres", "-X", "-At", "-w", "-c", sql])
}

/// `airlock rotate` as root.
fn rotate(lab: &Lab, args: &[&str]) -> std::process::Output {
    let socket = lab.agent().config.socket.display().to_string();
    let mut command = Command::new(airlock_bin());
    command.args(["rotate"]).args(args).args(["--socket", &socket]);
    command.output().expect("run airlock rotate")
}

/// (can log in, has a password, valid until) of `role`, from the catalog.
fn login_state(data: &Path, role: &str) -> String {
    TargetHost::superuser_sql(
        data,
        &format!(
            "SELECT rolcanlogin, rolpassword IS NOT NULL, coalesce(rolvaliduntil::text, 'none') FROM pg_authid WHERE rolname = '{role}'"
        ),
    )
}

fn verifier(data: &Path, role: &str) -> String {
    TargetHost::superuser_sql(data, &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"))
}

/// Every password Airlock's admin logins had: the seed's and those in the
/// admin store (read as root, as only the test may).
fn admin_passwords(lab: &Lab) -> Vec<String> {
    let mut passwords = vec![SEED_PASSWORD.to_owned()];
    let store = lab.dir.path().join("state/admin-logins");
    for entry in fs::read_dir(&store).into_iter().flatten().flatten() {
        let text = fs::read_to_string(entry.path()).unwrap_or_default();
        let password = text.lines().find_map(|l| l.strip_prefix("password = \"")?.strip_suffix('"'));
        passwords.extend(password.map(str::to_owned));
    }
    passwords
}

fn assert_no_secret(lab: &Lab, texts: &[&str]) {
    let audit = fs::read_to_string(lab.agent().config.audit_dir.join("audit.jsonl")).unwrap_or_default();
    let log = lab.agent().log();
    for password in admin_passwords(lab) {
        assert!(!audit.contains(&password), "an admin password is in the audit log");
        assert!(!log.contains(&password), "an admin password is in the agent's log");
        for text in texts {
            assert!(!text.contains(&password), "an admin password is in the output");
        }
    }
}

fn kinds(lab: &Lab) -> Vec<String> {
    lab.agent()
        .audit_records()
        .into_iter()
        .filter_map(|r| r["kind"].as_str().filter(|k| k.starts_with("credential.rotation.")).map(str::to_owned))
        .collect()
}

#[test]
fn the_admin_login_rotates_between_two_roles_with_a_grace_period() {
    if !privileged() {
        return;
    }
    let (lab, data) = rotation_lab("grace = \"15m\"");
    let before = count_orders(&lab);
    assert!(before.success() && before.stdout.trim() == "3", "{before:?}");

    let first = rotate(&lab, &["pg"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&first.stdout), String::from_utf8_lossy(&first.stderr));
    assert!(first.status.success(), "{stdout}{stderr}\n{}", lab.agent().log());
    assert!(stdout.contains("airlock_admin → airlock_admin_alt"), "{stdout}");
    assert!(stdout.contains("airlock_admin keeps working until"), "{stdout}");
    // The new role has the old one's powers and a password; the old one
    // still logs in, until the grace period ends.
    let alt = login_state(&data, "airlock_admin_alt");
    assert!(alt.starts_with("t|t|infinity"), "{alt}");
    let old = login_state(&data, "airlock_admin");
    assert!(old.starts_with("t|t|") && !old.ends_with("|none") && !old.contains("infinity"), "{old}");
    let members =
        TargetHost::superuser_sql(&data, "SELECT pg_has_role('airlock_admin_alt', 'pg_signal_backend', 'MEMBER')");
    assert_eq!(members.trim(), "t");
    let after = count_orders(&lab);
    assert!(after.success() && after.stdout.trim() == "3", "a login made by the new admin: {after:?}");
    let status = lab.agent().status();
    let row = &status["rotations"][0];
    assert_eq!(row["target"], "pg");
    assert_eq!(row["step"], "switched", "{row:#}");
    assert!(row["retire_at"].is_string() && row["schedule"].as_str().unwrap().contains("grace 15m"), "{row:#}");

    // A second rotation, at once: the first one's old login is retired
    // before it, then the logins swap back and the one replaced goes now.
    let second = rotate(&lab, &["pg", "--now"]);
    let stdout2 = String::from_utf8_lossy(&second.stdout).into_owned();
    assert!(second.status.success(), "{stdout2}{}", String::from_utf8_lossy(&second.stderr));
    assert!(stdout2.contains("airlock_admin_alt → airlock_admin"), "{stdout2}");
    assert!(stdout2.contains("airlock_admin_alt no longer logs in"), "{stdout2}");
    assert!(login_state(&data, "airlock_admin_alt").starts_with("f|f|"), "the replaced login is gone");
    assert!(login_state(&data, "airlock_admin").starts_with("t|t|infinity"));
    let seed_verifier_gone = verifier(&data, "airlock_admin");
    assert!(!seed_verifier_gone.is_empty());
    // The seed's password no longer works: its role has a new one.
    let seed_login = Command::new("psql")
        .env("PGPASSWORD", SEED_PASSWORD)
        .args(["-h", &lab.target.v4.to_string(), "-U", "airlock_admin", "-d", "postgres", "-X", "-At", "-w"])
        .args(["-c", "SELECT 1"])
        .output()
        .expect("psql");
    assert!(!seed_login.status.success(), "the seed password still logs in");
    assert!(String::from_utf8_lossy(&seed_login.stderr).contains("password authentication failed"));
    let again = count_orders(&lab);
    assert!(again.success() && again.stdout.trim() == "3", "{again:?}");

    assert_eq!(
        kinds(&lab),
        [
            "credential.rotation.started",
            "credential.rotation.set",
            "credential.rotation.tested",
            "credential.rotation.switched",
            "credential.rotation.retired",
            "credential.rotation.started",
            "credential.rotation.set",
            "credential.rotation.tested",
            "credential.rotation.switched",
            "credential.rotation.retired",
        ]
    );
    let switched = lab.agent().records_of("credential.rotation.switched");
    assert_eq!(switched[1]["detail"]["grace_seconds"], 0);
    assert_eq!(switched[1]["detail"]["trigger"]["now"], true);
    assert_eq!(switched[1]["detail"]["trigger"]["requested_by_uid"], 0);
    // Just-in-time roles made by either admin role (before, between and
    // after the rotations) are dropped by whichever is live when their
    // sessions end.
    let jit_roles = || {
        TargetHost::superuser_sql(
            &data,
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'airlock\\_%' AND rolname NOT LIKE 'airlock\\_admin%'",
        )
    };
    for _ in 0..100 {
        if jit_roles().trim() == "0" {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(jit_roles().trim(), "0", "{}", lab.agent().log());
    assert!(lab.agent().records_of("credential.drop_failed").is_empty());
    // No probe role is left behind.
    let probes =
        TargetHost::superuser_sql(&data, "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'airlock\\_probe\\_%'");
    assert_eq!(probes.trim(), "0");
    assert_no_secret(&lab, &[&stdout, &stdout2]);
    // The blast radius is read with the live admin login, not the seed's.
    let report = Command::new(airlock_bin())
        .args(["blast-radius", "--json", "--config", &lab.agent().config.path.display().to_string()])
        .output()
        .expect("airlock blast-radius");
    let text = String::from_utf8_lossy(&report.stdout);
    assert_eq!(report.status.code(), Some(0), "every row read: {text}{}", String::from_utf8_lossy(&report.stderr));
    assert!(text.contains("rotates every 30days, the old login valid 15m after"), "{text}");

    // Not for everyone: alice may not rotate.
    let socket = lab.agent().config.socket.display().to_string();
    let refused = lab.run_as("alice", &lab.cli().display().to_string(), &["rotate", "pg", "--socket", &socket]);
    assert!(!refused.success() && refused.stderr.contains("only root or the agent's admin group"), "{refused:?}");
    // Nor what does not rotate.
    let unknown = rotate(&lab, &["nope"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no target named \"nope\""));
}

#[test]
fn an_agent_killed_at_any_step_of_a_rotation_finishes_it_after_restart() {
    if !privileged() {
        return;
    }
    let (mut lab, data) = rotation_lab("grace = \"1s\"");
    let crash_file = lab.dir.path().join("state/rotation/crash-after");
    let mut expected_live = "airlock_admin";
    for step in ["pending", "set", "tested", "switched"] {
        fs::create_dir_all(crash_file.parent().unwrap()).unwrap();
        fs::write(&crash_file, step).unwrap();
        let out = rotate(&lab, &["pg"]);
        assert!(!out.status.success(), "the agent died after {step}");
        assert!(!crash_file.exists(), "the hook fired at {step}: {}", lab.agent().log());
        lab.agent.as_mut().unwrap().restart();
        // The restarted agent finishes the rotation it found cut short,
        // and the grace of one second ends.
        let mut row = Value::Null;
        for _ in 0..100 {
            row = lab.agent().status()["rotations"][0].clone();
            if row["step"] == "idle" && row["last_rotated"].is_string() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(row["step"], "idle", "cut short after {step}: {row:#}\n{}", lab.agent().log());
        expected_live = if expected_live == "airlock_admin" { "airlock_admin_alt" } else { "airlock_admin" };
        let retired = if expected_live == "airlock_admin" { "airlock_admin_alt" } else { "airlock_admin" };
        assert!(login_state(&data, expected_live).starts_with("t|t|infinity"), "after {step}");
        assert!(login_state(&data, retired).starts_with("f|f|"), "after {step}: {}", login_state(&data, retired));
        let out = count_orders(&lab);
        assert!(out.success() && out.stdout.trim() == "3", "after {step}: {out:?}\n{}", lab.agent().log());
    }
    let probes =
        TargetHost::superuser_sql(&data, "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'airlock\\_probe\\_%'");
    assert_eq!(probes.trim(), "0", "a probe role made before a crash is dropped by recovery");
    assert_no_secret(&lab, &[]);
}

#[test]
fn the_bootstrap_superuser_is_never_rotated_and_the_failure_is_reported() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new(&["alice"]);
    let data = lab.target.start_postgres_auth(&lab.dir.path().join("pg"), &[], "scram-sha-256");
    TargetHost::superuser_sql(&data, "ALTER ROLE postgres PASSWORD 'bootstrap-secret-99'");
    TargetHost::superuser_sql(&data, "CREATE TABLE orders (id int)");
    let seed = lab.dir.path().join("postgres-admin.toml");
    fs::write(&seed, "user = \"postgres\"\npassword = \"bootstrap-secret-99\"\n").unwrap();
    airlock_vm_tests::set_mode(&seed, 0o600);
    let (v4, alice) = (lab.target.v4, lab.user("alice").name.clone());
    // The approvers' webhook hears of the failure: a loopback listener
    // that keeps the first request it gets.
    let hook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hook.local_addr().unwrap().port();
    let heard = thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        hook.set_nonblocking(false).unwrap();
        let (mut stream, _) = hook.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            request.extend_from_slice(&buf[..n]);
            if request.windows(4).any(|w| w == b"\r\n\r\n") && request.ends_with(b"}") {
                break;
            }
        }
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        String::from_utf8_lossy(&request).into_owned()
    });
    lab.start_agent(&format!(
        "[[target]]\nname = \"pg\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"{v4}\"]\n\n\
         [[target.access]]\naction = \"allow\"\nusers = [\"*\"]\n\n[target.credentials]\nadmin_file = \"{}\"\ntls = \"disable\"\n\n\
         [[target.credentials.role]]\nname = \"readonly\"\ngrants = [\"pg_read_all_data\"]\nusers = [\"{alice}\"]\n\n\
         [target.approvals]\ngroups = [\"dba\"]\nwebhook = \"http://127.0.0.1:{port}/hooks/rotation\"\n",
        seed.display()
    ));
    let out = rotate(&lab, &["pg"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("bootstrap superuser"), "{stderr}");
    assert!(!stderr.contains("bootstrap-secret-99"));
    assert!(login_state(&data, "postgres").starts_with("t|t|"), "postgres is untouched");
    let failed = lab.agent().records_of("credential.rotation.failed");
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert!(failed[0]["detail"]["error"].as_str().unwrap().contains("bootstrap superuser"));
    let row = &lab.agent().status()["rotations"][0];
    assert!(row["last_error"].as_str().unwrap().contains("bootstrap superuser"), "{row:#}");
    // The login in use still works.
    let out = count_orders(&lab);
    assert!(out.success(), "{out:?}");
    let audit = fs::read_to_string(lab.agent().config.audit_dir.join("audit.jsonl")).unwrap();
    assert!(!audit.contains("bootstrap-secret-99"));
    let request = heard.join().unwrap();
    assert!(request.starts_with("POST /hooks/rotation "), "{request}");
    assert!(request.contains("\"event\":\"credential.rotation.failed\"") && request.contains("bootstrap superuser"));
    assert!(!request.contains("bootstrap-secret-99"));
}

#[test]
fn openbao_rotates_the_root_credential_of_its_database_connection() {
    if !privileged() {
        return;
    }
    let (lab, data, _bao) = airlock_vm_tests::bao::openbao_jit_lab("alice", Some("CREATE TABLE orders (id int)"));
    TargetHost::superuser_sql(&data, "GRANT pg_signal_backend TO bao_admin");
    let policy_file = lab.dir.path().join("policies/test.toml");
    let mut policy = fs::read_to_string(&policy_file).unwrap();
    policy.push_str("\n[target.credentials.rotation]\nopenbao_connection = \"pg\"\nevery = \"30d\"\n");
    lab.agent().reload(&policy);
    let before = verifier(&data, "bao_admin");
    let mut out = rotate(&lab, &["pg"]);
    for _ in 0..50 {
        // The reload is asynchronous: until it lands, the target has no rotation.
        if out.status.success() || !String::from_utf8_lossy(&out.stderr).contains("does not rotate") {
            break;
        }
        thread::sleep(Duration::from_millis(100));
        out = rotate(&lab, &["pg"]);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}\n{}", String::from_utf8_lossy(&out.stderr), lab.agent().log());
    assert!(stdout.contains("OpenBao root credential of database/config/pg"), "{stdout}");
    assert_ne!(verifier(&data, "bao_admin"), before, "OpenBao set a new password on its admin role");
    // OpenBao still issues logins with the password only it knows now.
    let host = lab.target.v4.to_string();
    let out = lab.run_as(
        "alice",
        "psql",
        &["-h", &host, "-U", "analyst", "-d", "postgres", "-X", "-At", "-w", "-c", "SELECT count(*) FROM orders"],
    );
    assert!(out.success() && out.stdout.trim() == "0", "{out:?}\n{}", lab.agent().log());
    let completed = lab.agent().records_of("credential.rotation.completed");
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0]["detail"]["openbao_connection"], "pg");
    let audit = fs::read_to_string(lab.agent().config.audit_dir.join("audit.jsonl")).unwrap();
    assert!(!audit.contains("bao-admin-secret"));
}
