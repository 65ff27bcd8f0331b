//! `airlock-bench soak` (`cargo xtask bench --soak`): three load cycles,
//! each ramping to 1,000 concurrent PostgreSQL sessions (held psql and
//! pgbench -C, on an observed and a just-in-time target), 100 ssh sessions
//! and 1,000 TCP relays through the agent, and back to idle. Reports client
//! errors and the agent's RSS, open fds and CPU idle, at peak and idle again,
//! against the goals of issue #23. Bounded (about five minutes): every step
//! has a timeout and the lab is removed on failure or interruption.

use airlock_vm_tests::load::{Cycle, Scale, SoakLab};

/// The plateau of each cycle: pgbench -C's clients are connected about
/// three quarters of the time, so 750 held and 400 of them keep about
/// 1,000 sessions open at once (measured and reported).
const SCALE: Scale = Scale { held_psql: 750, pgbench_clients: 400, pgbench_seconds: 20, ssh: 100, tcp: 1000 };
/// Cycles; RSS once idle again must stay flat over them.
const CYCLES: usize = 3;

/// Goals (issue #23, section 5).
const IDLE_RSS_MB: f64 = 30.0;
const PEAK_RSS_MB: f64 = 200.0;
const FLAT_PERCENT: f64 = 5.0;

/// The scale and cycle count: [`SCALE`] and [`CYCLES`], or
/// `AIRLOCK_SOAK=HELD,PGBENCH,SSH,TCP[,CYCLES]` (to see what one kind of
/// session costs, say).
fn scale() -> (Scale, usize) {
    let Ok(text) = std::env::var("AIRLOCK_SOAK") else { return (SCALE, CYCLES) };
    let n: Vec<usize> = text.split(',').map(|v| v.trim().parse().expect("AIRLOCK_SOAK: numbers")).collect();
    assert!(n.len() >= 4, "AIRLOCK_SOAK=HELD,PGBENCH,SSH,TCP[,CYCLES]");
    let scale = Scale { held_psql: n[0], pgbench_clients: n[1], ssh: n[2], tcp: n[3], ..SCALE };
    (scale, n.get(4).copied().unwrap_or(CYCLES))
}

/// Runs the soak; false when a goal is missed or a client failed.
pub fn run() -> bool {
    let (scale, cycles_wanted) = scale();
    let me = std::env::current_exe().expect("own path");
    println!(
        "soak: {cycles_wanted} cycles of up to {} PostgreSQL sessions ({} held psql + {} pgbench -C, half observed, half just in time), {} ssh sessions, {} TCP relays",
        scale.postgres(),
        scale.held_psql,
        scale.pgbench_clients,
        scale.ssh,
        scale.tcp
    );
    let started = std::time::Instant::now();
    let soak = SoakLab::new(&me, scale.postgres() + 300);
    // Let the fresh agent settle before the first idle sample.
    std::thread::sleep(std::time::Duration::from_secs(5));
    let mut cycles: Vec<Cycle> = Vec::new();
    for n in 1..=cycles_wanted {
        println!("cycle {n}");
        let cycle = soak.cycle(scale, &mut |line| println!("{line}"));
        print_cycle(n, &cycle);
        cycles.push(cycle);
    }
    drop(soak);
    report(&cycles, started.elapsed())
}

fn print_cycle(n: usize, c: &Cycle) {
    let cpu_share = c.loaded_cpu.as_secs_f64() / c.loaded_wall.as_secs_f64().max(1e-9) * 100.0;
    println!(
        "  cycle {n}: ramp {:.1} s; at peak {} PostgreSQL sessions through the agent ({} server backends), {} agent sessions in all; {} pgbench -C connections; errors {}",
        c.ramp.as_secs_f64(),
        c.peak_postgres,
        c.peak_backends,
        c.peak_sessions,
        c.pgbench_connections,
        c.errors.len()
    );
    println!(
        "           RSS idle {:.1} MB → peak {:.1} MB → idle {:.1} MB (anonymous {:.1} → {:.1} → {:.1} MB); fds idle {} → peak {} → idle {}; agent CPU on the plateau {:.1} s in {:.1} s ({cpu_share:.0} % of a core)",
        c.idle_before.rss_mb(),
        c.peak.rss_mb(),
        c.idle_after.rss_mb(),
        c.idle_before.anon_mb(),
        c.peak.anon_mb(),
        c.idle_after.anon_mb(),
        c.idle_before.fds,
        c.peak.fds,
        c.idle_after.fds,
        c.loaded_cpu.as_secs_f64(),
        c.loaded_wall.as_secs_f64(),
    );
    for error in c.errors.iter().take(10) {
        println!("           error: {error}");
    }
}

fn report(cycles: &[Cycle], took: std::time::Duration) -> bool {
    let errors: usize = cycles.iter().map(|c| c.errors.len()).sum();
    let idle = cycles.first().map_or(0.0, |c| c.idle_before.rss_mb());
    let peak = cycles.iter().map(|c| c.peak.rss_mb()).fold(0.0, f64::max);
    let after: Vec<f64> = cycles.iter().map(|c| c.idle_after.rss_mb()).collect();
    let (low, high) = after.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let spread = (high - low) / low.max(1e-9) * 100.0;
    let fds_idle = cycles.first().map_or(0, |c| c.idle_before.fds);
    let fds_after: Vec<usize> = cycles.iter().map(|c| c.idle_after.fds).collect();
    let fds_flat = fds_after.iter().all(|&f| f <= fds_idle + 4);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!("\nsoak summary ({:.0} s)", took.as_secs_f64());
    println!("  client errors            {errors:>8}        (goal 0: {})", verdict(errors == 0));
    println!(
        "  agent RSS idle           {idle:>8.1} MB     (goal <= {IDLE_RSS_MB} MB: {})",
        verdict(idle <= IDLE_RSS_MB)
    );
    println!(
        "  agent RSS at peak        {peak:>8.1} MB     (goal <= {PEAK_RSS_MB} MB: {})",
        verdict(peak <= PEAK_RSS_MB)
    );
    println!(
        "  agent RSS idle after each cycle {}   spread {spread:.1} % (goal flat within {FLAT_PERCENT} %: {})",
        after.iter().map(|v| format!("{v:.1} MB")).collect::<Vec<_>>().join(", "),
        verdict(spread <= FLAT_PERCENT)
    );
    println!(
        "  agent fds idle {fds_idle}, at peak {}, idle after each cycle {:?} ({})",
        cycles.iter().map(|c| c.peak.fds).max().unwrap_or(0),
        fds_after,
        if fds_flat { "no leak" } else { "LEAK" }
    );
    errors == 0 && idle <= IDLE_RSS_MB && peak <= PEAK_RSS_MB && spread <= FLAT_PERCENT && fds_flat
}
