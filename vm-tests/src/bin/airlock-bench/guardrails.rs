//! Statement classification cost: typical statements, first sight (parse),
//! repeated (cache) and repeated with other literals (shape cache), against
//! the goal of 10 µs per typical statement.

use std::{hint::black_box, time::Instant};

use airlock::guardrails::{Classification, Classifier};

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
/// Goal from the issue, per typical statement.
const GOAL_US: f64 = 10.0;

pub fn run() {
    println!("== guardrails: statement classification ({} typical statements)", TYPICAL.len());
    let rounds = 2_000;
    // First sight: every statement parsed (as with literals that vary).
    let started = Instant::now();
    for _ in 0..rounds {
        for sql in TYPICAL {
            black_box(Classification::of(black_box(sql)));
        }
    }
    let parsed_us = started.elapsed().as_secs_f64() * 1e6 / (rounds * TYPICAL.len()) as f64;
    // Repeated: the cache answers (prepared statements, ORMs).
    let classifier = Classifier::default();
    let started = Instant::now();
    for _ in 0..rounds * 10 {
        for sql in TYPICAL {
            black_box(classifier.classify(black_box(sql)));
        }
    }
    let cached_us = started.elapsed().as_secs_f64() * 1e6 / (rounds * 10 * TYPICAL.len()) as f64;
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
    let classifier = Classifier::default();
    let started = Instant::now();
    for sql in &texts {
        black_box(classifier.classify(black_box(sql)));
    }
    let shaped_us = started.elapsed().as_secs_f64() * 1e6 / texts.len() as f64;
    println!(
        "  parsed (a shape never seen) {parsed_us:>7.2} µs/statement   goal ≤ {GOAL_US} µs: {}",
        if parsed_us <= GOAL_US { "met" } else { "NOT met" }
    );
    println!("  cached     {cached_us:>7.2} µs/statement");
    println!(
        "  new literals, known shape {shaped_us:>7.2} µs/statement (literals in the text, as the simple protocol sends them)"
    );
}
