//! Statement classification cost (PostgreSQL's parser, libpg_query, and the
//! walk of its tree): typical statements, first sight (parse),
//! repeated (cache) and repeated with other literals (shape cache), against
//! the goal of 10 µs per typical statement. Then what a write costs end to
//! end on a guarded target: recorded before it is forwarded, and measured
//! in a savepoint under an effect limit.

use std::{fs, hint::black_box, time::Instant};

use airlock::guardrails::{Classification, Classifier, parser::Lexing};
use airlock_vm_tests::{Lab, run_as, set_mode};

/// What applications and people typically send.
const TYPICAL: &[&str] = &[
    "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
    "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
    "SELECT c.id, c.name, c.email, sum(o.total) FROM customers c JOIN orders o ON o.customer_id = c.id \
     WHERE o.placed > now() - interval '30 days' GROUP BY c.id, c.name, c.email ORDER BY 4 DESC LIMIT 20",
    "BEGIN",
    "COMMIT",
    "DELETE FROM sessions WHERE expires < now()",
    "WITH recent AS (SELECT * FROM events WHERE ts > now() - interval '1 hour') SELECT kind, count(*) FROM recent GROUP BY kind",
];
/// Statements with what the shape cache does not blank (JSON operators,
/// escape strings, dollar quotes, exponents): every new text is parsed.
const UNSHAPED: &[&str] = &[
    "SELECT payload->>'user' AS who, count(*) FROM events WHERE payload @> '{\"kind\": \"login\"}' GROUP BY 1",
    "UPDATE notes SET body = E'line one\\nline two' WHERE id = $1",
    "CREATE FUNCTION touch() RETURNS trigger AS $$ BEGIN NEW.updated = now(); RETURN NEW; END $$ LANGUAGE plpgsql",
    "SELECT * FROM readings WHERE value > 1.5e3 ORDER BY taken DESC LIMIT 100",
];
/// Runs of each measurement. The median is reported: this machine has slow
/// spells, a second or more, in which the same loop takes half as long again.
const RUNS: usize = 5;
/// Goal from the issue, per typical statement.
const GOAL_US: f64 = 10.0;

pub fn run() {
    println!("== guardrails: statement classification ({} typical statements, median of {RUNS} runs)", TYPICAL.len());
    for sql in TYPICAL.iter().chain(UNSHAPED) {
        assert_eq!(Classification::of(sql).parse_error, None, "{sql}");
    }
    let rounds = 2_000;
    // First sight: every statement parsed (as with literals that vary).
    let parsed_us = median_us(rounds * TYPICAL.len(), || {
        for _ in 0..rounds {
            TYPICAL.iter().for_each(|sql| drop(black_box(Classification::of(black_box(sql)))));
        }
    });
    let unshaped_us = median_us(rounds * UNSHAPED.len(), || {
        for _ in 0..rounds {
            UNSHAPED.iter().for_each(|sql| drop(black_box(Classification::of(black_box(sql)))));
        }
    });
    // Repeated: the cache answers (prepared statements, ORMs).
    let classifier = Classifier::default();
    let cached_us = median_us(rounds * 10 * TYPICAL.len(), || {
        for _ in 0..rounds * 10 {
            TYPICAL.iter().for_each(|sql| drop(black_box(classifier.classify(black_box(sql), Lexing::default()))));
        }
    });
    // Literals written into the text (simple protocol): each text is new,
    // its shape is not.
    let texts: Vec<String> = (0..rounds)
        .flat_map(|round| {
            TYPICAL.iter().map(move |sql| {
                (1..=5)
                    .rev()
                    .fold((*sql).to_owned(), |text, n| text.replace(&format!("${n}"), &(round * 7 + n).to_string()))
            })
        })
        .collect();
    let shaped_us = median_us(texts.len(), || {
        let classifier = Classifier::default();
        texts.iter().for_each(|sql| drop(black_box(classifier.classify(black_box(sql), Lexing::default()))));
    });
    println!(
        "  parsed (a shape never seen) {parsed_us:>7.2} µs/statement   goal ≤ {GOAL_US} µs: {}",
        if parsed_us <= GOAL_US { "met" } else { "NOT met" }
    );
    println!(
        "  parsed, other typical text ({} statements: JSON operators, E'' and $$ strings, exponents) {unshaped_us:>7.2} µs/statement",
        UNSHAPED.len()
    );
    println!("  cached     {cached_us:>7.2} µs/statement");
    println!(
        "  new literals, known shape {shaped_us:>7.2} µs/statement (literals in the text, as the simple protocol sends them)"
    );
}

/// The median over [`RUNS`] runs of `run`, in µs per each of its `per_run` statements.
fn median_us(per_run: usize, mut run: impl FnMut()) -> f64 {
    crate::median(
        (0..RUNS)
            .map(|_| {
                let started = Instant::now();
                run();
                started.elapsed().as_secs_f64() * 1e6 / per_run as f64
            })
            .collect(),
    )
}

/// Seconds per pgbench run of the write bench.
const WRITE_SECONDS: &str = "5";

/// The guardrail rules of each configuration a write runs through.
const WRITE_PATHS: &[(&str, &str)] = &[
    ("observe (no guardrails)", ""),
    ("guarded (recorded before it runs)", "[[target.guardrail]]\nclasses = [\"drop\"]\naction = \"deny\"\n"),
    (
        "limited: max_rows",
        "[[target.guardrail]]\nclasses = [\"write\"]\nmax_rows = 1000\naction = \"approve\"\n\n[target.approvals]\nusers = [\"root\"]\n",
    ),
    (
        "limited: max_rows + max_fraction",
        "[[target.guardrail]]\nclasses = [\"write\"]\nmax_rows = 1000\nmax_fraction = 0.01\naction = \"approve\"\n\n[target.approvals]\nusers = [\"root\"]\n",
    ),
];

/// One-row UPDATEs from one pgbench client (simple protocol): direct, then
/// through each configuration; the latency a write adds is its cost.
pub fn writes() {
    println!("== guardrails: cost per write (pgbench -c 1, one-row UPDATE, simple protocol, {WRITE_SECONDS} s each)");
    let mut lab = Lab::new(&["pgbench"]);
    let data = lab.target.start_postgres(&lab.dir.path().join("pg"));
    let v4 = lab.target.v4.to_string();
    let init = std::process::Command::new("pgbench")
        .args(["-i", "-q", "-s", "1", "-h", &v4, "-U", "postgres", "postgres"])
        .output()
        .expect("pgbench -i");
    assert!(init.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&init.stderr));
    let target = format!(
        "[[target]]\nname = \"pg\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"{v4}\"]\n\n[[target.access]]\naction = \"allow\"\nusers = [\"*\"]\n\n"
    );
    lab.start_agent(&target);
    let outside = airlock_vm_tests::cgroup2_root().join(format!("{}.writes", lab.tag));
    fs::create_dir_all(&outside).expect("mkdir cgroup");
    let script = lab.dir.path().join("update.sql");
    fs::write(
        &script,
        "\\set aid random(1, 100000)\nUPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n",
    )
    .expect("script");
    set_mode(&script, 0o644);
    let script = script.display().to_string();
    let bench = |cgroup: &std::path::Path| {
        let args = [
            "-n",
            "-c",
            "1",
            "-T",
            WRITE_SECONDS,
            "-M",
            "simple",
            "-h",
            &v4,
            "-U",
            "postgres",
            "-f",
            &script,
            "postgres",
        ];
        let out = run_as(lab.user("pgbench"), cgroup, "pgbench", &args);
        if !out.success() {
            // What the server was doing, for a run that did not finish.
            let activity = "select pid, state, wait_event_type, wait_event, left(query, 60) from pg_stat_activity";
            eprintln!("{}", airlock_vm_tests::TargetHost::superuser_sql(&data, activity));
            let log = lab.agent().log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!("pgbench: {out:?}\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        let field = |prefix: &str| -> f64 {
            out.stdout
                .lines()
                .find_map(|l| l.strip_prefix(prefix)?.split_whitespace().next()?.parse().ok())
                .unwrap_or_else(|| panic!("no {prefix:?} in pgbench output: {}", out.stdout))
        };
        (field("tps = "), field("latency average = ") * 1000.0)
    };
    let (tps, direct_us) = bench(&outside);
    println!("  {:<36} {tps:>8.0} tps  {direct_us:>7.1} µs/write", "direct");
    let mut previous = direct_us;
    for (reloads, (label, rules)) in WRITE_PATHS.iter().enumerate() {
        if reloads > 0 {
            lab.agent().reload(&format!("{target}{rules}"));
            lab.agent().wait_for_records("policy.reload", reloads);
        }
        let (tps, us) = bench(&lab.cgroups.clients);
        println!(
            "  {label:<36} {tps:>8.0} tps  {us:>7.1} µs/write  (+{:.1} µs on direct, +{:.1} µs on the line above)",
            us - direct_us,
            us - previous
        );
        previous = us;
    }
    drop(lab);
    airlock_vm_tests::remove_cgroup_tree(&outside);
}
