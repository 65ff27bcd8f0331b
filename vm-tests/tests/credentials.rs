//! Just-in-time PostgreSQL logins end to end: a real PostgreSQL 15 that
//! demands SCRAM passwords, psql run as test users with no password at all,
//! and Airlock's embedded engine creating, reusing and dropping roles.

use std::{fs, path::PathBuf, thread, time::Duration};

use airlock_vm_tests::{Lab, TargetHost, privileged};
use serde_json::Value;

struct JitLab {
    lab: Lab,
    data: PathBuf,
}

/// PostgreSQL with SCRAM for network logins, an admin role for Airlock, a
/// root-only admin file, and a policy granting `readonly` to alice.
/// TLS on the server, and what policy asks of Airlock's side.
enum Tls {
    /// No TLS anywhere.
    Off,
    /// The server offers TLS; policy leaves the default (prefer).
    ServerOnly,
    /// The server's certificate is signed by a test CA; policy says verify-full.
    VerifyFull,
    /// No TLS on the server; policy says require.
    RequiredButMissing,
}

fn jit_lab(ttl_seconds: u32) -> JitLab {
    jit_lab_with(ttl_seconds, Tls::Off)
}

fn jit_lab_with(ttl_seconds: u32, tls: Tls) -> JitLab {
    jit_lab_granting(ttl_seconds, tls, "pg_read_all_data")
}

/// As [`jit_lab_with`], `readonly` granting `grant`.
fn jit_lab_granting(ttl_seconds: u32, tls: Tls, grant: &str) -> JitLab {
    let mut lab = Lab::new(&["alice", "bob"]);
    let pg_dir = lab.dir.path().join("pg");
    let tls_dir = lab.dir.path().join("tls");
    let (settings, tls) = match tls {
        Tls::Off => (vec![], String::new()),
        Tls::ServerOnly => (TargetHost::tls_with_ca(&tls_dir, lab.target.v4.into()).0, String::new()),
        Tls::VerifyFull => {
            let (settings, ca) = TargetHost::tls_with_ca(&tls_dir, lab.target.v4.into());
            (settings, format!("tls = \"verify-full\"\ntls_ca_file = \"{}\"", ca.display()))
        }
        Tls::RequiredButMissing => (vec![], "tls = \"require\"".to_owned()),
    };
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let data = lab.target.start_postgres_auth(&pg_dir, &settings, "scram-sha-256");
    let admin_file = TargetHost::jit_admin(&data, lab.dir.path(), "admin-secret-4711");
    TargetHost::superuser_sql(&data, "CREATE TABLE orders (id int); INSERT INTO orders VALUES (1), (2), (3)");
    let (v4, alice) = (lab.target.v4, lab.user("alice").name.clone());
    lab.start_agent(&format!(
        r#"
[[target]]
name = "pg"
protocol = "postgres"
port = 5432
addresses = ["{v4}"]

[[target.access]]
action = "allow"
users = ["*"]

[target.credentials]
admin_file = "{admin}"
ttl_seconds = {ttl_seconds}
{tls}

[[target.credentials.role]]
name = "readonly"
grants = ["{grant}"]
users = ["{alice}"]

[[target.credentials.role]]
name = "writer"
grants = ["pg_write_all_data"]
users = ["somebody-else"]
"#,
        admin = admin_file.display()
    ));
    JitLab { lab, data }
}

fn psql(lab: &Lab, user: &str, db_user: &str, sql: &str) -> airlock_vm_tests::CommandOutput {
    let host = lab.target.v4.to_string();
    lab.run_as(user, "psql", &["-h", &host, "-U", db_user, "-d", "postgres", "-X", "-At", "-w", "-c", sql])
}

fn jit_roles(data: &std::path::Path) -> Vec<String> {
    TargetHost::superuser_sql(
        data,
        "SELECT rolname FROM pg_roles WHERE rolname LIKE 'airlock\\_%' AND rolname <> 'airlock_admin' ORDER BY 1",
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting until {what}");
}

#[test]
fn a_passwordless_client_logs_in_as_a_role_made_for_it_which_is_dropped_after() {
    if !privileged() {
        return;
    }
    let JitLab { lab, data } = jit_lab(600);
    let out = psql(&lab, "alice", "readonly", "select current_user, (select count(*) from orders)");
    assert!(out.success(), "{out:?}\n{}", lab.agent().log());
    let (role, count) = out.stdout.trim().split_once('|').expect("two columns");
    let expected_prefix = format!("airlock_{}_", lab.user("alice").name);
    assert!(role.starts_with(&expected_prefix), "{role}");
    assert_eq!(count, "3", "pg_read_all_data was granted");

    let startup = &lab.agent().records_of("postgres.startup")[0]["detail"];
    assert_eq!(startup["user"], "readonly");
    assert_eq!(startup["role_granted"], role);
    assert_eq!(startup["grants"], serde_json::json!(["pg_read_all_data"]));

    let denied_write = psql(&lab, "alice", "readonly", "insert into orders values (4)");
    assert!(!denied_write.success() && denied_write.stderr.contains("permission denied"), "{denied_write:?}");

    wait_until("the role is dropped after its last session", || jit_roles(&data).is_empty());
    let ledger = fs::read_to_string(lab.dir.path().join("state/postgres-roles.jsonl")).unwrap();
    assert!(ledger.contains(&format!("\"op\":\"dropped\",\"role\":\"{role}\"")), "{ledger}");
    let audit = fs::read_to_string(lab.agent().config.audit_dir.join("audit.jsonl")).unwrap();
    let secret = "admin-secret-4711";
    assert!(!audit.contains(secret) && !ledger.contains(secret) && !lab.agent().log().contains(secret));
}

#[test]
fn airlock_terminates_the_clients_tls_with_its_host_ca_and_never_passes_it_through() {
    if !privileged() {
        return;
    }
    let JitLab { lab, .. } = jit_lab_with(600, Tls::ServerOnly);
    let host = lab.target.v4.to_string();
    // What IT does: install the host CA where clients look for roots.
    let ca = lab.host_ca_file();
    let query = "select current_user, ssl from pg_stat_ssl where pid = pg_backend_pid()";
    for mode in ["require", format!("verify-full sslrootcert={}", ca.display()).as_str()] {
        let conninfo = format!("host={host} user=readonly dbname=postgres sslmode={mode}");
        let out = lab.run_as("alice", "psql", &[&conninfo, "-X", "-At", "-w", "-c", query]);
        assert!(out.success(), "sslmode={mode}: {out:?}\n{}", lab.agent().log());
        let (role, ssl) = out.stdout.trim().split_once('|').expect("two columns");
        assert!(role.starts_with("airlock_"), "Airlock logged in for the client, not the client itself: {role}");
        assert_eq!(ssl, "t", "Airlock's own connection uses the TLS the server offers (tls = prefer)");
    }
    // The server's own CA does not vouch for what the client sees: Airlock's does.
    let wrong = format!(
        "host={host} user=readonly dbname=postgres sslmode=verify-full sslrootcert={}",
        lab.dir.path().join("tls/ca.crt").display()
    );
    let out = lab.run_as("alice", "psql", &[&wrong, "-X", "-w", "-c", "select 1"]);
    assert!(!out.success() && out.stderr.contains("certificate verify failed"), "{out:?}");
    assert!(lab.agent().records_of("postgres.tls_passthrough").is_empty());
}

#[test]
fn a_role_not_granted_is_refused_with_the_roles_one_may_use() {
    if !privileged() {
        return;
    }
    let JitLab { lab, data } = jit_lab(600);
    let out = psql(&lab, "alice", "writer", "select 1");
    assert!(!out.success());
    assert!(
        out.stderr.contains("database user \"writer\" is not one you may use; you may use: readonly"),
        "{}",
        out.stderr
    );
    let bob = psql(&lab, "bob", "readonly", "select 1");
    assert!(bob.stderr.contains("no database role of this target is open to"), "{}", bob.stderr);
    assert!(jit_roles(&data).is_empty(), "nothing created for refused logins");
}

#[test]
fn roles_left_by_a_killed_agent_are_dropped_when_it_restarts() {
    if !privileged() {
        return;
    }
    let JitLab { mut lab, data } = jit_lab(600);
    thread::scope(|scope| {
        let lab_ref = &lab;
        let session = scope.spawn(move || psql(lab_ref, "alice", "readonly", "select pg_sleep(20)"));
        wait_until("the role exists", || jit_roles(&data).len() == 1);
        // SAFETY: plain kill(2) on the agent we started.
        unsafe { libc::kill(lab_ref.agent().pid() as i32, libc::SIGKILL) };
        let out = session.join().unwrap();
        assert!(!out.success(), "the session ends with its agent");
    });
    assert_eq!(jit_roles(&data).len(), 1, "the role outlived the killed agent");
    lab.agent.as_mut().unwrap().restart();
    let recovered = lab.agent().wait_for_records("credential.recovered", 1);
    assert_eq!(recovered.len(), 1, "{}", lab.agent().log());
    assert!(jit_roles(&data).is_empty());
}

#[test]
fn an_expired_grant_ends_the_live_session_and_the_role() {
    if !privileged() {
        return;
    }
    let JitLab { lab, data } = jit_lab(10);
    let out = psql(&lab, "alice", "readonly", "select pg_sleep(25)");
    assert!(!out.success());
    assert!(out.stderr.contains("terminating connection due to administrator command"), "{out:?}");
    wait_until("the expired role is dropped", || jit_roles(&data).is_empty());
    let dropped = lab.agent().wait_for_records("credential.dropped", 1);
    assert_eq!(dropped[0]["detail"]["reason"], "expired");
    assert_eq!(dropped[0]["detail"]["outcome"]["sessions_terminated"], 1, "{:#}", dropped[0]);
    let created = lab.agent().records_of("credential.created");
    assert_eq!(created[0]["detail"]["role"], dropped[0]["detail"]["role"]);
    assert_eq!(created[0]["identity"]["user"], lab.user("alice").name.as_str());
}

#[test]
fn airlock_logs_in_over_verified_tls_when_policy_says_so() {
    if !privileged() {
        return;
    }
    let JitLab { lab, data } = jit_lab_with(600, Tls::VerifyFull);
    // The server refuses every network login without TLS: the admin
    // connection that creates and drops the role must use it too.
    let hba = data.join("pg_hba.conf");
    let rules = fs::read_to_string(&hba).expect("pg_hba.conf");
    fs::write(&hba, format!("hostnossl all all 0.0.0.0/0 reject\nhostnossl all all ::/0 reject\n{rules}"))
        .expect("pg_hba.conf");
    assert_eq!(TargetHost::superuser_sql(&data, "SELECT pg_reload_conf()").trim(), "t");
    let out = psql(&lab, "alice", "readonly", "select ssl from pg_stat_ssl where pid = pg_backend_pid()");
    assert!(out.success(), "{out:?}\n{}", lab.agent().log());
    assert_eq!(out.stdout.trim(), "t", "Airlock's own session to the server is encrypted");
    assert_eq!(lab.agent().records_of("postgres.startup")[0]["detail"]["upstream_tls"], true);
    wait_until("the role is dropped, over TLS, after the session", || jit_roles(&data).is_empty());
    assert!(lab.agent().records_of("credential.drop_failed").is_empty(), "{}", lab.agent().log());
}

#[test]
fn required_tls_that_the_server_lacks_is_refused() {
    if !privileged() {
        return;
    }
    let JitLab { lab, data } = jit_lab_with(600, Tls::RequiredButMissing);
    let out = psql(&lab, "alice", "readonly", "select 1");
    assert!(!out.success());
    // The admin connection is held to the policy too: no role is made.
    assert!(
        out.stderr.contains("airlock: could not create a login for you")
            && out.stderr.contains("the server does not offer TLS, and policy requires it"),
        "{}",
        out.stderr
    );
    assert!(jit_roles(&data).is_empty());
    assert!(lab.agent().records_of("credential.created").is_empty());
}

#[test]
fn a_role_the_server_cannot_create_is_refused_and_leaves_nothing_behind() {
    if !privileged() {
        return;
    }
    let JitLab { lab, data } = jit_lab_granting(600, Tls::Off, "no_such_role");
    let out = psql(&lab, "alice", "readonly", "select 1");
    assert!(!out.success());
    assert!(out.stderr.contains("could not create a login for you"), "{}", out.stderr);
    assert!(out.stderr.contains("no_such_role"), "{}", out.stderr);
    assert!(jit_roles(&data).is_empty());
    // The ledger line written before each attempt (psql tries with TLS,
    // then without) is closed at once.
    let ledger =
        fs::read_to_string(lab.agent().config.path.parent().unwrap().join("state/postgres-roles.jsonl")).unwrap();
    let lines: Vec<Value> = ledger.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let roles = |op: &str| -> Vec<&Value> { lines.iter().filter(|l| l["op"] == op).map(|l| &l["role"]).collect() };
    assert!(!roles("created").is_empty(), "{ledger}");
    assert_eq!(roles("created"), roles("dropped"), "{ledger}");
}

#[test]
fn openbao_issues_the_login_and_its_lease_is_revoked_after_the_session() {
    if !privileged() {
        return;
    }
    let (lab, data, _bao) = airlock_vm_tests::bao::openbao_jit_lab(
        "alice",
        Some("CREATE TABLE orders (id int); INSERT INTO orders VALUES (1), (2)"),
    );
    let out = psql(&lab, "alice", "analyst", "select current_user, (select count(*) from orders)");
    assert!(out.success(), "{out:?}\n{}", lab.agent().log());
    let (role, count) = out.stdout.trim().split_once('|').expect("two columns");
    assert!(role.starts_with("v-") && role.contains("readonly"), "a login OpenBao made: {role}");
    assert_eq!(count, "2");
    let created = lab.agent().wait_for_records("credential.created", 1);
    assert_eq!(created[0]["detail"]["source"], "openbao");
    let dropped = lab.agent().wait_for_records("credential.dropped", 1);
    assert_eq!(dropped[0]["detail"]["outcome"], "revoked", "{:#}", dropped[0]);
    let left = || TargetHost::superuser_sql(&data, &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{role}'"));
    wait_until("OpenBao dropped the login", || left().trim() == "0");
    let audit = fs::read_to_string(lab.agent().config.audit_dir.join("audit.jsonl")).unwrap();
    assert!(!audit.contains("bao-admin-secret"));
}

#[test]
fn a_refused_admin_login_names_the_servers_reason_and_what_to_check() {
    if !privileged() {
        return;
    }
    let JitLab { lab, data } = jit_lab(600);
    TargetHost::superuser_sql(&data, "ALTER ROLE airlock_admin PASSWORD 'rotated-elsewhere'");
    let out = psql(&lab, "alice", "readonly", "select 1");
    assert!(!out.success());
    assert!(out.stderr.contains("could not create a login for you"), "{}", out.stderr);
    assert!(
        out.stderr.contains("password authentication failed for user \"airlock_admin\" (28P01)"),
        "the server's own reason: {}",
        out.stderr
    );
    assert!(out.stderr.contains("check the admin login file"), "{}", out.stderr);
    assert!(!out.stderr.contains("admin-secret-4711") && !out.stderr.contains("rotated-elsewhere"));
    assert!(jit_roles(&data).is_empty());
}
