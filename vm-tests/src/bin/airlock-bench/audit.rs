//! The audit log: append rate with the hash chain and signed checkpoints,
//! then query and verify over a million records, against the goals
//! (≥ 100k records/s, query ≤ 1 s, verify ≤ 2 s).

use std::{fmt::Write as _, time::Instant};

use airlock::{
    audit::{AuditLog, AuditSettings, Event, SessionContext, TargetRef, query, signing::Signer, verify},
    identity::Identity,
};

const RECORDS: u64 = 1_000_000;
/// Sessions the records are spread over; session `i` is person `i % 50`'s, to target `i % 5`.
const SESSIONS: usize = 997;
/// The person of the record the query looks for (record 4242's session's).
const QUERIED_USER: &str = "user4";

/// A statement record as the PostgreSQL proxy writes one.
#[derive(serde::Serialize)]
struct StatementRecord<'a> {
    protocol: &'static str,
    sql: &'a str,
    results: [&'static str; 1],
    executed: bool,
    duration_us: u64,
}

pub fn run() {
    println!("== audit log: {RECORDS} records (statement records of 50 people on 5 targets, as the proxy writes them)");
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = Signer::load_or_create(&dir.path().join("key")).expect("key");
    let public = signer.public_key_hex();
    let settings = AuditSettings { signer: Some(signer), ..AuditSettings::default() };
    let log = AuditLog::open_with(&dir.path().join("audit"), settings).expect("open");
    let people: Vec<Identity> =
        (0..50).map(|i| Identity::unix(&format!("user{i}"), 2000 + i, vec!["dev".into()])).collect();
    let targets: Vec<TargetRef> = (0..5)
        .map(|i| TargetRef {
            name: format!("db{i}"),
            protocol: "postgres".into(),
            addr: format!("10.0.0.{i}"),
            port: 5432,
        })
        .collect();
    // As the statement writer appends: a session's context encoded once,
    // statements serialized from a typed record.
    let contexts: Vec<SessionContext> = (0..SESSIONS)
        .map(|i| SessionContext::new(&format!("s{i}"), &people[i % 50], &targets[i % 5]).expect("context"))
        .collect();
    let batch = 64u64;
    let mut texts: Vec<String> = vec![String::new(); batch as usize];
    let started = Instant::now();
    let mut written = 0u64;
    while written < RECORDS {
        for (text, n) in texts.iter_mut().zip(written..) {
            text.clear();
            write!(text, "SELECT abalance FROM pgbench_accounts WHERE aid = {n}").expect("write");
        }
        log.append_in_sessions(texts.iter().zip(written..).map(|(sql, n)| {
            let record =
                StatementRecord { protocol: "extended", sql, results: ["SELECT 1"], executed: true, duration_us: 87 };
            (&contexts[(n % SESSIONS as u64) as usize], "postgres.statement", record)
        }))
        .expect("append");
        written += batch;
    }
    let append_secs = started.elapsed().as_secs_f64();
    let rate = RECORDS as f64 / append_secs;
    let one_by_one = {
        let started = Instant::now();
        for i in 0..20_000u64 {
            log.append(Event {
                kind: "connection.open",
                session: Some("single"),
                identity: Some(&people[(i % 50) as usize]),
                process: None,
                target: Some(&targets[(i % 5) as usize]),
                detail: serde_json::json!({ "decision": "allow" }),
            })
            .expect("append");
        }
        20_000.0 / started.elapsed().as_secs_f64()
    };
    let dir = dir.path().join("audit");
    let started = Instant::now();
    let filter =
        query::Filter { user: Some(QUERIED_USER.into()), text: Some("aid = 4242".into()), ..Default::default() };
    let stats = query::query(&dir, &filter, |_| true).expect("query");
    let query_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let report = verify::verify(&dir, Some(&public)).expect("verify");
    let verify_secs = started.elapsed().as_secs_f64();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "  append     {rate:>10.0} records/s in batches of {batch}, {one_by_one:.0}/s one at a time   goal ≥ 100000: {}",
        met(rate >= 100_000.0)
    );
    println!(
        "  query      {query_secs:>10.2} s for one person and a text, {} matches ({} of {} segments read)   goal ≤ 1 s: {}",
        stats.matched,
        stats.segments_read,
        stats.segments_read + stats.segments_skipped,
        met(query_secs <= 1.0)
    );
    println!(
        "  verify     {verify_secs:>10.2} s for {} records, {} checkpoints   goal ≤ 2 s: {}",
        report.records,
        report.checkpoints,
        met(verify_secs <= 2.0)
    );
}
