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
FROM generate_series(1, 50) i;";

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    if !privileged() {
        std::process::exit(1);
    }
    let mut lab = Lab::new(&[]);
    let pg_dir = lab.dir.path().join("pg");
    let data = lab.target.start_postgres_auth(&pg_dir, &[], "scram-sha-256");
    TargetHost::superuser_sql(&data, "CREATE ROLE airlock_admin LOGIN CREATEROLE PASSWORD 'demo-admin-only'");
    TargetHost::superuser_sql(&data, "GRANT pg_signal_backend TO airlock_admin");
    TargetHost::superuser_sql(&data, SEED);
    let admin_file = lab.dir.path().join("demo-db-admin.toml");
    fs::write(&admin_file, "user = \"airlock_admin\"\npassword = \"demo-admin-only\"\n").expect("admin file");
    set_mode(&admin_file, 0o600);

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
"#,
        admin = admin_file.display()
    );
    // Attach at the cgroup2 root: the person's own shell is intercepted, as
    // on a real workstation. Only the demo target is protected.
    let mut config = AgentConfig::new(&lab, &policy);
    config.attach_at(&airlock_vm_tests::cgroup2_root());
    lab.agent = Some(Agent::start(config));
    let agent = lab.agent();
    let try_it =
        format!("psql -h {v4} -U analyst -d postgres -c 'select current_user, name, email from customers limit 3'");

    if smoke {
        let out = std::process::Command::new("sh").args(["-c", &try_it]).output().expect("run psql");
        let stdout = String::from_utf8_lossy(&out.stdout);
        print!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && stdout.contains("airlock_root_"), "the demo command did not work");
        println!("demo smoke test passed");
        return;
    }

    println!(
        "\nAirlock demo is running.\n\n\
         target   demo-db: PostgreSQL 15 at {v4}:5432 in network namespace {ns}, 50 fake customers\n\
         policy   {policy}\n\n\
         try      {try_it}\n\
         \x20        No password: Airlock logs in for you as a role it creates, valid 15 minutes,\n\
         \x20        dropped a few seconds after you disconnect.\n\n\
         watch    {airlock} status --socket {socket}\n\
         \x20        tail -f {audit}\n\n\
         Ctrl-C stops the demo and removes the namespace, the programs and the roles.",
        ns = lab.target.ns,
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
