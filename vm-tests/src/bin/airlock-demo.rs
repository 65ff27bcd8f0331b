//! `cargo xtask demo`: a throwaway PostgreSQL target with fake customer data
//! in a network namespace, and Airlock protecting it for this whole host,
//! with just-in-time logins. Prints what to try; Ctrl-C removes everything.
//! `--smoke` runs the suggested command itself and exits (for tests).

use std::{
    fs,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use airlock_vm_tests::{Agent, AgentConfig, Lab, TargetHost, privileged, set_mode};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

const SEED: &str = "CREATE TABLE customers (id int PRIMARY KEY, name text, email text, card_number text);
INSERT INTO customers
SELECT i,
       initcap(substr(md5(i::text), 1, 6)) || ' ' || initcap(substr(md5((i * 7)::text), 1, 8)),
       substr(md5(i::text), 1, 8) || '@example.com',
       '4000 ' || lpad((i * 1237 % 10000)::text, 4, '0') || ' ' || lpad((i * 3571 % 10000)::text, 4, '0') || ' ' || lpad((i * 911 % 10000)::text, 4, '0')
FROM generate_series(1, 50) i;
CREATE ROLE demo_owner NOLOGIN;
CREATE TABLE old_orders (id int, placed date);
INSERT INTO old_orders SELECT i, date '2019-01-01' + i FROM generate_series(1, 20) i;
ALTER TABLE old_orders OWNER TO demo_owner;";

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    if !privileged() {
        std::process::exit(1);
    }
    // A second person, who approves what the first one's policy holds.
    let mut lab = Lab::new(&["approver"]);
    let pg_dir = lab.dir.path().join("pg");
    let data = lab.target.start_postgres_auth(&pg_dir, &[], "scram-sha-256");
    let admin_file = TargetHost::jit_admin(&data, lab.dir.path(), "demo-admin-only");
    TargetHost::superuser_sql(&data, SEED);

    let v4 = lab.target.v4;
    let policy = format!(
        r#"# The demo's policy: one protected PostgreSQL target, reached with
# just-in-time logins. Anyone on this host may ask for "analyst".
[[target]]
name = "demo-db"
protocol = "postgres"
port = 5432
addresses = ["{v4}"]
description = "Demo database with fake customer data"

[[target.access]]
action = "allow"
users = ["*"]

[target.credentials]
admin_file = "{admin}"
ttl_seconds = 900

[[target.credentials.role]]
name = "analyst"
grants = ["pg_read_all_data"]
users = ["*"]

# "app" owns old_orders: it may change and drop it, but whole-table changes
# wait for a second person.
[[target.credentials.role]]
name = "app"
grants = ["demo_owner"]
users = ["*"]

# Card numbers keep their last 4 digits; e-mail addresses become stable
# tokens (the same address, the same token), wherever they appear.
[target.masking]
detectors = ["card", "email"]

[[target.masking.detector]]
name = "card"
strategy = "partial"
keep = 4

[[target.masking.rules]]
column = "public.customers.email"
strategy = "token"

# The demo's card numbers are fake (no valid checksum, so the detector
# passes them by): a column rule masks the column whatever it holds.
[[target.masking.rules]]
column = "public.customers.card_number"
strategy = "partial"
keep = 4

[[target.guardrail]]
classes = ["drop", "truncate", "delete_without_where", "update_without_where"]
action = "approve"
reason = "whole-table changes need a second pair of eyes"

[[target.guardrail]]
classes = ["privilege", "copy_program", "copy_file"]
action = "deny"

[target.approvals]
users = ["{approver}"]
timeout_seconds = 300
"#,
        admin = admin_file.display(),
        approver = lab.user("approver").name,
    );
    // Attach at the cgroup2 root: the person's own shell is intercepted, as
    // on a real workstation. Only the demo target is protected.
    let mut config = AgentConfig::new(&lab, &policy);
    config.attach_at(&airlock_vm_tests::cgroup2_root());
    lab.agent = Some(Agent::start(config));
    let agent = lab.agent();
    let try_it = format!(
        "psql -h {v4} -U analyst -d postgres -c 'select current_user, name, email, card_number from customers limit 3'"
    );
    let try_drop = format!("psql -h {v4} -U app -d postgres -c 'drop table old_orders'");
    // The approver may not be able to reach the build tree: give them a copy.
    let cli = lab.dir.path().join("airlock");
    fs::copy(airlock_vm_tests::agent::airlock_bin(), &cli).expect("copy the airlock binary");
    set_mode(&cli, 0o755);
    let approver = lab.user("approver").name.clone();
    let as_approver = format!("runuser -u {approver} -- {} --socket {}", cli.display(), agent.config.socket.display());

    if smoke {
        let out = std::process::Command::new("sh").args(["-c", &try_it]).output().expect("run psql");
        let stdout = String::from_utf8_lossy(&out.stdout);
        print!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && stdout.contains("airlock_root_"), "the demo command did not work");
        assert!(!stdout.contains("@example.com") && !stdout.contains("4000 "), "the demo's data was not masked");
        smoke_approval(&try_drop, &as_approver);
        println!("demo smoke test passed");
        return;
    }

    println!(
        "\nAirlock demo is running.\n\n\
         target   demo-db: PostgreSQL 15 at {v4}:5432 in network namespace {ns}, 50 fake customers\n\
         policy   {policy}\n\n\
         try      {try_it}\n\
         \x20        No password: Airlock logs in for you as a role it creates, valid 15 minutes,\n\
         \x20        dropped a few seconds after you disconnect. E-mail addresses come back as\n\
         \x20        tokens and card numbers with their last 4 digits only.\n\n\
         then     {try_drop}\n\
         \x20        The DROP is held: psql waits. In a second terminal, as the demo's approver:\n\
         \x20        {as_approver_list}\n\
         \x20        {as_approver_approve}\n\n\
         watch    {airlock} status --socket {socket}\n\
         \x20        tail -f {audit}\n\n\
         Ctrl-C stops the demo and removes the namespace, the programs and the roles.",
        ns = lab.target.ns,
        as_approver_list = as_approver.replacen(" --socket", " approvals --socket", 1),
        as_approver_approve = as_approver.replacen(" --socket", " approve ID --socket", 1),
        airlock = airlock_vm_tests::agent::airlock_bin().display(),
        policy = agent.config.path.with_file_name("policies").join("test.toml").display(),
        socket = agent.config.socket.display(),
        audit = agent.config.audit_dir.join("audit.jsonl").display(),
    );
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("\nstopping the demo and cleaning up…");
}

/// Runs the held DROP, approves it as the approver, and checks it ran.
fn smoke_approval(try_drop: &str, as_approver: &str) {
    let held = {
        let try_drop = try_drop.to_owned();
        std::thread::spawn(move || std::process::Command::new("sh").args(["-c", &try_drop]).output().expect("run psql"))
    };
    let list = as_approver.replacen(" --socket", " approvals --json --socket", 1);
    let mut id = None;
    for _ in 0..150 {
        let out = std::process::Command::new("sh").args(["-c", &list]).output().expect("airlock approvals");
        let pending: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(request) = pending.first() {
            id = request["id"].as_str().map(str::to_owned);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let id = id.expect("the DROP was not held for approval");
    let approve = as_approver.replacen(" --socket", &format!(" approve {id} --socket"), 1);
    let out = std::process::Command::new("sh").args(["-c", &approve]).output().expect("airlock approve");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "approve failed: {}", String::from_utf8_lossy(&out.stderr));
    let dropped = held.join().expect("psql thread");
    print!("{}", String::from_utf8_lossy(&dropped.stderr));
    assert!(dropped.status.success(), "the approved DROP did not run");
}
