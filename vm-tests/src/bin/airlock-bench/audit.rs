//! The audit log: append rate with the hash chain and signed checkpoints,
//! then query and verify over a million records, against the goals
//! (≥ 100k records/s, query ≤ 1 s, verify ≤ 2 s).

use std::time::Instant;

use airlock::{
    audit::{AuditLog, AuditSettings, Event, TargetRef, query, signing::Signer, verify},
    identity::{Identity, IdentitySource},
};

const RECORDS: u64 = 1_000_000;

pub fn run() {
    println!("== audit log: {RECORDS} records (statement records of 50 people on 5 targets)");
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = Signer::load_or_create(&dir.path().join("key")).expect("key");
    let public = signer.public_key_hex();
    let settings = AuditSettings { signer: Some(signer), ..AuditSettings::default() };
    let log = AuditLog::open_with(&dir.path().join("audit"), settings).expect("open");
    let people: Vec<Identity> = (0..50)
        .map(|i| Identity {
            source: IdentitySource::Unix,
            subject: format!("unix:user{i}"),
            user: format!("user{i}"),
            email: None,
            token: None,
            uid: 2000 + i,
            groups: vec!["dev".into()],
        })
        .collect();
    let targets: Vec<TargetRef> = (0..5)
        .map(|i| TargetRef {
            name: format!("db{i}"),
            protocol: "postgres".into(),
            addr: format!("10.0.0.{i}"),
            port: 5432,
        })
        .collect();
    let started = Instant::now();
    let batch = 64u64;
    let sessions: Vec<String> = (0..997).map(|i| format!("s{i}")).collect();
    let mut written = 0u64;
    while written < RECORDS {
        log.append_batch((written..written + batch).map(|n| Event {
            kind: "postgres.statement",
            session: Some(&sessions[(n % 997) as usize]),
            identity: Some(&people[(n % 50) as usize]),
            process: None,
            target: Some(&targets[(n % 5) as usize]),
            detail: serde_json::json!({
                "protocol": "extended",
                "sql": format!("SELECT abalance FROM pgbench_accounts WHERE aid = {n}"),
                "results": ["SELECT 1"],
                "executed": true,
                "duration_us": 87,
            }),
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
    let filter = query::Filter { user: Some("user7".into()), text: Some("aid = 4242".into()), ..Default::default() };
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
