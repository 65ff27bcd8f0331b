//! The soak, short: one load cycle of 200 PostgreSQL sessions (held psql
//! and pgbench -C, observed and just-in-time targets), 20 ssh sessions and
//! 200 TCP relays through the agent, then back to idle. No client may fail,
//! the agent stays within its memory goal at peak, and returns to its idle
//! footprint: no fd leaks, RSS back near where it was. (`cargo xtask bench
//! --soak` runs three cycles at five times the scale.)

use std::time::Duration;

use airlock_vm_tests::{
    load::{Scale, SoakLab},
    privileged,
};

#[test]
fn a_load_cycle_fails_no_client_and_the_agent_returns_to_idle() {
    if !privileged() {
        return;
    }
    let scale = Scale { held_psql: 160, pgbench_clients: 80, pgbench_seconds: 5, ssh: 20, tcp: 200 };
    let soak = SoakLab::new(std::path::Path::new(env!("CARGO_BIN_EXE_airlock-bench")), scale.postgres() + 100);
    std::thread::sleep(Duration::from_secs(1));
    let cycle = soak.cycle(scale, &mut |line| println!("{line}"));
    println!("{cycle:#?}");
    let log = || soak.lab.agent().log().lines().rev().take(40).collect::<Vec<_>>().join("\n");
    assert!(
        cycle.errors.is_empty(),
        "client errors: {:#?}\nagent log (last lines, newest first):\n{}",
        cycle.errors,
        log()
    );
    assert!(
        cycle.peak_postgres >= 200,
        "the load reached {} concurrent PostgreSQL sessions through the agent ({} held, {} pgbench -C clients)",
        cycle.peak_postgres,
        scale.held_psql,
        scale.pgbench_clients
    );
    assert!(cycle.peak.rss_mb() <= 200.0, "agent RSS at peak {:.1} MB (goal <= 200 MB)", cycle.peak.rss_mb());
    // Every session's sockets, pipes and files are closed again.
    assert!(
        cycle.idle_after.fds <= cycle.idle_before.fds + 4,
        "fds idle before {}, at peak {}, after {}",
        cycle.idle_before.fds,
        cycle.peak.fds,
        cycle.idle_after.fds
    );
    // Memory comes back: most of what the load took is returned.
    let (before, peak, after) = (cycle.idle_before.rss_mb(), cycle.peak.rss_mb(), cycle.idle_after.rss_mb());
    assert!(
        after <= before + (peak - before) / 2.0 + 5.0,
        "agent RSS idle {before:.1} MB, at peak {peak:.1} MB, idle again {after:.1} MB"
    );
}
