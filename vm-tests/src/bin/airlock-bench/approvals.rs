//! How long a decision takes to reach the statement that waits on it: from
//! the approver's `airlock approve` to the held statement's completion, by
//! an approver on the same host (the control socket) and by one on another
//! host (through OpenBao: signed with their transit key, found by the
//! requesting host's poll, verified), against the goal of one second.

use std::time::{Duration, Instant};

use airlock_vm_tests::remote_approvals::{Hosts, cli_on, decide, held, login, request_seen_on_b, session};

/// Statements decided each way.
const ROUNDS: usize = 8;
/// Goal from the issue, for a decision from another host.
const GOAL: Duration = Duration::from_secs(1);
/// The agents' default: how often a host looks for decisions.
const POLL_MS: u64 = 250;

pub fn run() {
    println!("== approvals: decision to running statement ({ROUNDS} drops each way, poll every {POLL_MS} ms)");
    let hosts = Hosts::start(POLL_MS);
    let mut alice = session(&hosts.a, "alice");
    login(&hosts, &hosts.a, &mut alice, "alice");
    let tables: Vec<String> = (0..ROUNDS).flat_map(|i| [format!("l{i}"), format!("r{i}")]).collect();
    let create = tables.iter().map(|t| format!("create table {t} (id int);")).collect::<String>();
    let setup = alice.run(&format!("psql -h {} -U postgres -d postgres -X -At -c '{create}'", hosts.a.target.v4));
    assert!(setup.success(), "{setup:?}");
    let mut bob_here = session(&hosts.a, "bob");
    login(&hosts, &hosts.a, &mut bob_here, "bob");
    let mut bob_elsewhere = session(&hosts.b, "bob");
    login(&hosts, &hosts.b, &mut bob_elsewhere, "bob");

    let mut local = Vec::new();
    let mut remote = Vec::new();
    for i in 0..ROUNDS {
        let job = held(&hosts, &mut alice, &format!("drop table l{i}"));
        let id = request_id(&job.stderr_so_far());
        let started = Instant::now();
        let approved = cli_on(&hosts.a, &mut bob_here, &format!("approve {id}"));
        assert!(approved.success(), "{approved:?}");
        assert!(job.wait(Duration::from_secs(20)).success());
        local.push(started.elapsed());

        let job = held(&hosts, &mut alice, &format!("drop table r{i}"));
        let id = request_id(&job.stderr_so_far());
        request_seen_on_b(&hosts, &mut bob_elsewhere, &format!("drop table r{i}"));
        let started = Instant::now();
        let approved = decide(&hosts, &mut bob_elsewhere, &format!("approve host-a/{id}"));
        assert!(approved.success(), "{approved:?}");
        assert!(job.wait(Duration::from_secs(20)).success());
        remote.push(started.elapsed());
    }
    let (local_median, local_max) = summary(&mut local);
    let (remote_median, remote_max) = summary(&mut remote);
    println!("  same host (control socket)      median {:>6.0} ms   max {:>6.0} ms", ms(local_median), ms(local_max));
    println!("  other host (OpenBao, verified)  median {:>6.0} ms   max {:>6.0} ms", ms(remote_median), ms(remote_max));
    println!(
        "  other host / same host: {:.1}x · goal: a decision from another host within {} ms: {}",
        remote_median.as_secs_f64() / local_median.as_secs_f64().max(1e-9),
        GOAL.as_millis(),
        if remote_max <= GOAL { "met" } else { "NOT met" }
    );
}

/// The id `waiting for approval of request ID:` names.
fn request_id(stderr: &str) -> String {
    let after = stderr.split("waiting for approval of request ").nth(1).expect("a held statement's notice");
    after.split(':').next().expect("an id").trim().to_owned()
}

fn summary(times: &mut [Duration]) -> (Duration, Duration) {
    times.sort();
    (times[times.len() / 2], times[times.len() - 1])
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
