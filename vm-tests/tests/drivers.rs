//! A peer's view of whether Airlock behaves like the server: psycopg
//! 3.3.4's own test suite (`../shared/driver-suites/run-psycopg.sh`), run
//! as a test user against PostgreSQL 15 directly and through Airlock (an
//! observe target and a just-in-time target whose role may create
//! objects), through the eBPF redirect. Goal: no failure through Airlock
//! that does not happen direct.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use airlock_vm_tests::{Lab, TargetHost, privileged};

/// The suite's runner, beside the workspace.
fn runner() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/driver-suites/run-psycopg.sh")
}

/// Where `cargo xtask setup` installed psycopg and pytest.
const VENV: &str = "/var/cache/airlock/psycopg-3.3.4";

/// The failing tests' ids and the summary line.
struct SuiteRun {
    failed: BTreeSet<String>,
    summary: String,
    /// The runner's FAILED and ERROR lines, with their messages.
    report: String,
}

fn run_suite(lab: &Lab, dsn: &str) -> SuiteRun {
    let runner = runner();
    assert!(runner.exists(), "the psycopg suite is missing: {}", runner.display());
    let venv = format!("PSYCOPG_VENV={VENV}");
    let args = [venv.as_str(), "PSYCOPG_TIMEOUT=600", runner.to_str().unwrap(), dsn];
    let out = lab.run_as_within("alice", "env", &args, Duration::from_secs(660));
    let summary = out.stdout.lines().rfind(|l| l.starts_with("psycopg suite:")).unwrap_or_default().to_owned();
    assert!(summary.contains("passed") && !summary.contains(" 0 passed"), "the suite did not run: {out:?}");
    let failed = out
        .stdout
        .lines()
        .filter_map(|line| line.strip_prefix("FAILED ").or_else(|| line.strip_prefix("ERROR ")))
        .map(|rest| rest.split(" - ").next().unwrap_or(rest).trim().to_owned())
        .collect();
    let report = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("FAILED ") || l.starts_with("ERROR "))
        .take(20)
        .collect::<Vec<_>>()
        .join("\n");
    SuiteRun { failed, summary, report }
}

fn passed(run: &SuiteRun) -> u32 {
    run.summary.split_whitespace().nth(2).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// The suite through Airlock (as the agent's policy stands) against the
/// direct run: the tests that fail only through Airlock. Some of psycopg's
/// tests race with themselves (`test_wait_remote_closed` sends a query and
/// stops its own proxy, expecting the answer not to have come yet), which
/// a loaded 2-core host shows now and then: a run with such failures is
/// run once more, and a test counts only if it fails both times.
fn fails_only_through(lab: &Lab, name: &str, dsn: &str, direct: &SuiteRun) -> (SuiteRun, Vec<String>) {
    let run = run_suite(lab, dsn);
    println!("{name}: {} {:?}", run.summary, run.failed);
    let mut only_through: Vec<String> = run.failed.difference(&direct.failed).cloned().collect();
    if !only_through.is_empty() {
        let again = run_suite(lab, dsn);
        println!("{name}, again: {} {:?}", again.summary, again.failed);
        only_through.retain(|id| again.failed.contains(id));
    }
    (run, only_through)
}

#[test]
fn psycopg_suite_fails_nothing_through_airlock_that_it_does_not_fail_direct() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new(&["alice"]);
    let pg_dir = lab.dir.path().join("pg");
    let data = lab.target.start_postgres_auth(&pg_dir, &[], "scram-sha-256");
    TargetHost::superuser_sql(&data, "ALTER ROLE postgres PASSWORD 'suite-secret'; CREATE ROLE suite_owner NOLOGIN");
    // A database of its own for the just-in-time run: the direct run leaves
    // tables behind that only their owner may drop.
    TargetHost::superuser_sql(&data, "CREATE DATABASE jit OWNER suite_owner");
    let admin_file = TargetHost::jit_admin(&data, lab.dir.path(), "admin-secret-4711");
    let v4 = lab.target.v4;
    let password_dsn = format!("host={v4} port=5432 dbname=postgres user=postgres password=suite-secret");

    // Direct, before any agent runs.
    let direct = run_suite(&lab, &password_dsn);
    assert!(passed(&direct) > 4000, "{}", direct.summary);

    // Just in time: no password; a role made for alice that may create objects.
    let access = format!(
        "[[target]]\nname = \"pg\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"{v4}\"]\n\n\
         [[target.access]]\naction = \"allow\"\nusers = [\"*\"]\n"
    );
    let alice = lab.user("alice").name.clone();
    lab.start_agent(&format!(
        "{access}\n[target.credentials]\nadmin_file = \"{}\"\nttl_seconds = 3600\n\n\
         [[target.credentials.role]]\nname = \"suite\"\ngrants = [\"suite_owner\"]\nusers = [\"{alice}\"]\n",
        admin_file.display()
    ));
    let host = v4.to_string();
    let login =
        lab.run_as("alice", "psql", &["-h", &host, "-U", "suite", "-d", "jit", "-X", "-At", "-w", "-c", "select 1"]);
    assert!(login.success(), "no just-in-time login: {login:?}\n{}", lab.agent().log());
    let jit = fails_only_through(&lab, "jit", &format!("host={v4} port=5432 dbname=jit user=suite"), &direct);

    // Observed: the client logs in itself; every statement is recorded.
    lab.agent().reload(&access);
    lab.agent().wait_for_records("policy.reload", 1);
    let observed = fails_only_through(&lab, "observed", &password_dsn, &direct);

    // Guarded: every statement read by the guard and recorded before it is
    // sent; what does not parse is let through, so the suite's own syntax
    // errors come from the server as they do direct.
    lab.agent().reload(&format!("{access}\n[[target.guardrail]]\nclasses = [\"unparsed\"]\naction = \"allow\"\n"));
    lab.agent().wait_for_records("policy.reload", 2);
    let guarded = fails_only_through(&lab, "guarded", &password_dsn, &direct);
    let sent = lab.agent().records_of("postgres.statement_sent").len();

    println!("direct:   {} {:?}", direct.summary, direct.failed);
    for (name, (run, only_through)) in [("jit", &jit), ("observed", &observed), ("guarded", &guarded)] {
        assert!(only_through.is_empty(), "fail only through the {name} target: {only_through:?}\n{}", run.report);
        // The suite ran (as a role that is no superuser, the JIT run skips a few tests).
        assert!(passed(run) > 4000, "{name}: {}", run.summary);
    }
    assert!(sent > 10_000, "the guarded run recorded {sent} statements before sending them");
}
