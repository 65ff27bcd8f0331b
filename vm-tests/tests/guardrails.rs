//! Statement guardrails and approvals end to end: real psql and pgbench as
//! test users through the eBPF redirect to PostgreSQL 15 on a netns target,
//! approvers deciding with the real `airlock` CLI as other test users.

use std::{
    fs,
    path::PathBuf,
    time::{Duration, Instant},
};

use airlock_vm_tests::{CommandOutput, Lab, TargetHost, privileged, set_mode};
use serde_json::Value;

/// alice is an engineer; bob approves (his own group is the approver group);
/// carol is neither.
fn lab(timeout_seconds: u32) -> (Lab, PathBuf) {
    let (lab, cli, _) = lab_with(timeout_seconds, &[]);
    (lab, cli)
}

/// [`lab`] with PostgreSQL `settings`; also returns its data directory.
fn lab_with(timeout_seconds: u32, settings: &[&str]) -> (Lab, PathBuf, PathBuf) {
    let mut lab = Lab::new(&["alice", "bob", "carol"]);
    let pg_dir = lab.dir.path().join("pg");
    let data = lab.target.start_postgres_with(&pg_dir, settings);
    TargetHost::superuser_sql(
        &data,
        "create schema audit; create table audit.events (a int); create table t (a int); insert into t values (1), (2); \
         create table t2 (a int); create table t3 (a int); create table t4 (a int); grant all on all tables in schema public, audit to public",
    );
    let (v4, approvers) = (lab.target.v4, lab.user("bob").name.clone());
    let policy = format!(
        r#"
[[target]]
name = "pg"
protocol = "postgres"
port = 5432
addresses = ["{v4}"]

[[target.access]]
action = "allow"
users = ["*"]

[[target.guardrail]]
classes = ["drop", "truncate"]
groups = ["{approvers}"]
action = "allow"

[[target.guardrail]]
classes = ["drop", "truncate", "delete_without_where", "update_without_where"]
action = "approve"
reason = "whole-table changes need a second pair of eyes"

[[target.guardrail]]
classes = ["privilege", "copy_program", "copy_file", "procedural", "risky_function"]
action = "deny"

[[target.guardrail]]
classes = ["write"]
tables = ["audit.events"]
action = "deny"
reason = "the audit schema is append-only for the application"

[target.approvals]
groups = ["{approvers}"]
timeout_seconds = {timeout_seconds}
"#
    );
    lab.start_agent(&policy);
    let cli = lab.cli();
    (lab, cli, data)
}

fn psql(lab: &Lab, user: &str, args: &[&str]) -> CommandOutput {
    let host = lab.target.v4.to_string();
    let mut full = vec!["-h", host.as_str(), "-U", "postgres", "-d", "postgres", "-X", "-At"];
    full.extend_from_slice(args);
    lab.run_as(user, "psql", &full)
}

fn airlock(lab: &Lab, cli: &std::path::Path, user: &str, args: &[&str]) -> CommandOutput {
    let socket = lab.agent().config.socket.display().to_string();
    let mut full: Vec<&str> = args.to_vec();
    full.extend_from_slice(&["--socket", &socket]);
    lab.run_as(user, cli.to_str().expect("utf-8 path"), &full)
}

fn count(lab: &Lab, table: &str) -> String {
    psql(lab, "bob", &["-c", &format!("select count(*) from {table}")]).stdout.trim().to_owned()
}

/// Waits (bounded) for a pending request `user` can see.
fn pending_request(lab: &Lab, cli: &std::path::Path, user: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = airlock(lab, cli, user, &["approvals", "--json"]);
        assert!(out.success(), "{out:?}");
        let list: Vec<Value> = serde_json::from_str(&out.stdout).expect("JSON list");
        if let Some(first) = list.into_iter().next() {
            return first;
        }
        assert!(Instant::now() < deadline, "no request appeared\n{}", lab.agent().log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn statements_are_allowed_refused_or_held_by_class() {
    if !privileged() {
        return;
    }
    let (lab, _) = lab(30);
    let allowed = [
        "select 1",
        "/* hello */ SeLeCt * FROM t WHERE a = 1",
        "with x as (select 1) select * from x",
        "select $$ drop table t $$",
        "select 'grant all on t to public'",
        "insert into t values (5)",
        "delete from t where a = 5",
        "begin; insert into t values (6); delete from t where a = 6; commit",
    ];
    for sql in allowed {
        let out = psql(&lab, "alice", &["-v", "ON_ERROR_STOP=1", "-c", sql]);
        assert!(out.success(), "{sql} should run: {out:?}\n{}", lab.agent().log());
    }
    let refused = [
        ("grant select on t to public", "privilege statements are refused by policy"),
        ("COPY t TO PROGRAM 'id'", "copy_program statements are refused"),
        ("do $$ begin perform 1; end $$", "procedural statements are refused"),
        ("select pg_terminate_backend(1)", "risky_function statements are refused"),
        ("insert into audit.events values (1)", "the audit schema is append-only"),
        ("SELEKT 1", "could not parse"),
        ("insert into t values (9); grant all on t to public", "privilege statements are refused"),
    ];
    for (sql, why) in refused {
        let out = psql(&lab, "alice", &["-v", "ON_ERROR_STOP=1", "-c", sql]);
        assert!(!out.success(), "{sql} should be refused: {out:?}");
        assert!(out.stderr.contains("ERROR:  airlock: ") && out.stderr.contains(why), "{sql}: {}", out.stderr);
    }
    assert_eq!(count(&lab, "t where a = 9"), "0", "a refused multi-statement string ran nothing");
    assert_eq!(count(&lab, "audit.events"), "0");

    // A refusal inside a transaction aborts it, as any error would: the
    // insert before it is rolled back at COMMIT.
    let script = lab.dir.path().join("tx.sql");
    fs::write(&script, "BEGIN;\ninsert into t values (7);\ngrant all on t to public;\nselect 1;\nCOMMIT;\n").unwrap();
    set_mode(&script, 0o644);
    let out = psql(&lab, "alice", &["-f", script.to_str().unwrap()]);
    assert!(out.stderr.contains("current transaction is aborted"), "{out:?}");
    assert!(out.stdout.contains("ROLLBACK"), "{out:?}");
    assert_eq!(count(&lab, "t where a = 7"), "0");

    // The extended protocol (pgbench -M prepared) is screened at Parse.
    let bench = lab.dir.path().join("bench.sql");
    fs::write(&bench, "select count(*) from t;\ngrant select on t to public;\n").unwrap();
    set_mode(&bench, 0o644);
    let host = lab.target.v4.to_string();
    let out = lab.run_as(
        "alice",
        "pgbench",
        &["-h", &host, "-U", "postgres", "-n", "-M", "prepared", "-t", "1", "-f", bench.to_str().unwrap(), "postgres"],
    );
    assert!(out.stderr.contains("airlock: privilege statements are refused"), "{out:?}");

    // A DBA drops directly; the same statement is held for everyone else.
    let out = psql(&lab, "bob", &["-v", "ON_ERROR_STOP=1", "-c", "drop table t4"]);
    assert!(out.success(), "{out:?}");

    let refusals = lab.agent().wait_for_records("postgres.statement_refused", refused.len() + 2);
    assert!(refusals.len() >= refused.len() + 2, "{refusals:#?}");
    assert_eq!(refusals[0]["detail"]["class"], "privilege");
    assert_eq!(refusals[0]["detail"]["sql"], "grant select on t to public");
    let statements = lab.agent().records_of("postgres.statement");
    let refused_record = statements.iter().find(|r| r["detail"]["sql"] == "grant select on t to public").unwrap();
    assert_eq!(refused_record["detail"]["error"]["sqlstate"], "42501", "{refused_record}");
}

#[test]
fn a_held_statement_runs_once_another_person_approves_it() {
    if !privileged() {
        return;
    }
    let (lab, cli) = lab(60);
    std::thread::scope(|scope| {
        let held = scope.spawn(|| psql(&lab, "alice", &["-v", "ON_ERROR_STOP=1", "-c", "drop table t2"]));
        let request = pending_request(&lab, &cli, "bob");
        let id = request["id"].as_str().unwrap().to_owned();
        assert_eq!(request["statement"], "drop table t2");
        assert_eq!(request["requester"], lab.user("alice").name.as_str());

        let own = airlock(&lab, &cli, "alice", &["approve", &id]);
        assert!(!own.success() && own.stderr.contains("you cannot decide your own request"), "{own:?}");
        let outsider = airlock(&lab, &cli, "carol", &["approve", &id]);
        assert!(!outsider.success() && outsider.stderr.contains("you are not an approver"), "{outsider:?}");
        let carol_sees = airlock(&lab, &cli, "carol", &["approvals", "--json"]);
        assert_eq!(carol_sees.stdout.trim(), "[]", "outsiders do not see others' requests");

        let approved = airlock(&lab, &cli, "bob", &["approve", &id, "--reason", "planned cleanup"]);
        assert!(approved.success(), "{approved:?}");
        let out = held.join().unwrap();
        assert!(out.success(), "{out:?}\n{}", lab.agent().log());
        assert!(out.stderr.contains(&format!("airlock: waiting for approval of request {id}")), "{out:?}");
        assert!(out.stderr.contains(&format!("can approve it with: airlock approve {id}")), "{out:?}");
    });
    let gone = psql(&lab, "bob", &["-c", "select to_regclass('t2') is null"]);
    assert_eq!(gone.stdout.trim(), "t", "the approved DROP ran");

    let approved = lab.agent().wait_for_records("approval.approved", 1);
    assert_eq!(approved[0]["identity"]["user"], lab.user("bob").name.as_str());
    assert_eq!(approved[0]["detail"]["reason"], "planned cleanup");
    assert_eq!(lab.agent().records_of("approval.requested").len(), 1);
}

#[test]
fn held_statements_are_refused_when_denied_or_when_nobody_decides() {
    if !privileged() {
        return;
    }
    let (lab, cli) = lab(3);
    std::thread::scope(|scope| {
        let held = scope.spawn(|| psql(&lab, "alice", &["-v", "ON_ERROR_STOP=1", "-c", "delete from t"]));
        let id = pending_request(&lab, &cli, "bob")["id"].as_str().unwrap().to_owned();
        let denied = airlock(&lab, &cli, "bob", &["deny", &id, "--reason", "use a WHERE clause"]);
        assert!(denied.success(), "{denied:?}");
        let out = held.join().unwrap();
        assert!(!out.success(), "{out:?}");
        assert!(out.stderr.contains(&format!("request {id} was denied by")), "{out:?}");
        assert!(out.stderr.contains("use a WHERE clause"), "{out:?}");
    });
    let out = psql(&lab, "alice", &["-v", "ON_ERROR_STOP=1", "-c", "update t set a = 0"]);
    assert!(!out.success() && out.stderr.contains("was not decided before"), "{out:?}");
    assert!(out.stderr.contains("run it again to ask anew") && out.stderr.contains("`airlock approvals`"), "{out:?}");
    assert_eq!(count(&lab, "t where a = 0"), "0");
    assert_eq!(count(&lab, "t"), "2", "nothing was deleted or updated");
    assert_eq!(lab.agent().wait_for_records("approval.expired", 1).len(), 1);
    assert_eq!(lab.agent().records_of("approval.denied").len(), 1);
}

#[test]
fn a_target_opens_for_a_window_once_approved_and_closes_after() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new(&["alice", "bob"]);
    let pg_dir = lab.dir.path().join("pg");
    lab.target.start_postgres_with(&pg_dir, &[]);
    let (v4, approvers) = (lab.target.v4, lab.user("bob").name.clone());
    lab.start_agent(&format!(
        r#"
[[target]]
name = "pg"
protocol = "postgres"
port = 5432
addresses = ["{v4}"]

[[target.access]]
action = "allow"
users = ["*"]

[target.approvals]
groups = ["{approvers}"]
timeout_seconds = 60
session_access_seconds = 6
"#
    ));
    let cli = lab.cli();

    let refused = psql(&lab, "alice", &["-c", "select 1"]);
    assert!(!refused.success() && refused.stderr.contains("needs approval: request "), "{refused:?}");
    let id: String = refused.stderr.split("request ").nth(1).unwrap().chars().take(8).collect();
    let again = psql(&lab, "alice", &["-c", "select 1"]);
    assert!(again.stderr.contains(&format!("request {id} is waiting")), "one request per person: {again:?}");
    assert!(again.stderr.contains(&format!("airlock approve {id}")), "{again:?}");

    let approved = airlock(&lab, &cli, "bob", &["approve", &id]);
    assert!(approved.success(), "{approved:?}");
    let ok = psql(&lab, "alice", &["-c", "select 41 + 1"]);
    assert_eq!(ok.stdout.trim(), "42", "{ok:?}\n{}", lab.agent().log());

    // A session still open when the window closes is ended, with the reason.
    let long = psql(&lab, "alice", &["-c", "select pg_sleep(30)"]);
    assert!(!long.success(), "{long:?}");
    assert!(long.stderr.contains(&format!("airlock: your access to \"pg\" (request {id}")), "{long:?}");
    let ended = lab.agent().wait_for_records("access.ended", 1);
    assert_eq!(ended[0]["detail"]["sessions_ended"], 1, "{ended:?}");

    let after = psql(&lab, "alice", &["-c", "select 1"]);
    assert!(!after.success() && after.stderr.contains("needs approval"), "{after:?}");
    assert!(!after.stderr.contains(&id), "a new request after the window closed: {after:?}");
}

/// The guard reads what the server will run: with the session's
/// standard_conforming_strings and client_encoding, PostgreSQL's own
/// grammar, and predicates that hold for every row seen for what they are.
#[test]
fn statements_are_read_as_the_server_reads_them() {
    if !privileged() {
        return;
    }
    let (lab, _) = lab(2);
    let held_or_refused = |out: &CommandOutput| {
        !out.success() && (out.stderr.contains("was not decided before") || out.stderr.contains("ERROR:  airlock: "))
    };

    // Backslashes escape quotes once standard_conforming_strings is off:
    // the DROP is a statement of its own, not part of a string.
    let out = psql(
        &lab,
        "alice",
        &["-c", "SET standard_conforming_strings = off", "-c", r"SELECT 'x\''; DROP TABLE t3; -- '"],
    );
    assert!(held_or_refused(&out), "{out:?}\n{}", lab.agent().log());
    assert!(out.stderr.contains("drop") || out.stderr.contains("whole-table"), "{out:?}");

    // Text in another client encoding is decoded as the server decodes it.
    let env_psql = |encoding: &str, file: &std::path::Path| {
        let host = lab.target.v4.to_string();
        let file = file.to_str().unwrap();
        let args = [
            &format!("PGCLIENTENCODING={encoding}")[..],
            "psql",
            "-h",
            &host,
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            file,
        ];
        lab.run_as("alice", "env", &args)
    };
    let latin1 = lab.dir.path().join("latin1.sql");
    fs::write(&latin1, b"DROP TABLE t3 /* \xe9 */;\n").unwrap();
    set_mode(&latin1, 0o644);
    let out = env_psql("LATIN1", &latin1);
    assert!(held_or_refused(&out), "{out:?}");
    // In SJIS, 0x83 0x5C is one character whose second byte is a
    // backslash: with backslash escapes on, only a decoder that knows SJIS
    // sees the string end and the DROP after it (`\;` keeps psql from
    // splitting the text: the server gets one Query).
    let sjis = lab.dir.path().join("sjis.sql");
    fs::write(&sjis, b"SET standard_conforming_strings = off;\nSELECT '\x83\x5c' \\; DROP TABLE t3; -- '\n").unwrap();
    set_mode(&sjis, 0o644);
    let out = env_psql("SJIS", &sjis);
    assert!(held_or_refused(&out), "{out:?}");
    // SQL_ASCII passes bytes through unconverted: non-ASCII text cannot be
    // read as the server will, and is refused as unreadable.
    let ascii = lab.dir.path().join("ascii.sql");
    fs::write(&ascii, "SELECT 'é' AS x;\n").unwrap();
    set_mode(&ascii, 0o644);
    let out = env_psql("SQL_ASCII", &ascii);
    assert!(!out.success() && out.stderr.contains("SQL_ASCII"), "{out:?}");

    // Predicates that hold for every row reach the whole table.
    for sql in ["DELETE FROM t WHERE true", "DELETE FROM t WHERE 1 = 1", "UPDATE t SET a = 0 WHERE a = a OR false"] {
        let out = psql(&lab, "alice", &["-c", sql]);
        assert!(held_or_refused(&out), "{sql}: {out:?}");
    }
    // PostgreSQL's grammar decides where statements end: `END` here is a
    // column alias, and the DROP after it is seen.
    let out = psql(&lab, "alice", &["-c", "SELECT 1 END; DROP TABLE t3"]);
    assert!(held_or_refused(&out), "{out:?}");

    let exists = psql(&lab, "bob", &["-c", "select to_regclass('t3') is not null"]);
    assert_eq!(exists.stdout.trim(), "t", "t3 survived every attempt");
    assert_eq!(count(&lab, "t"), "2", "nothing was deleted");
    assert_eq!(count(&lab, "t where a = 0"), "0", "nothing was updated");

    // What was refused is recorded as it was read.
    let log = lab.agent().audit_records();
    let sqls: Vec<String> = log.iter().filter_map(|r| r["detail"]["sql"].as_str().map(str::to_owned)).collect();
    assert!(sqls.iter().any(|s| s.contains("DROP TABLE t3 /* é */")), "{sqls:#?}");
    assert!(sqls.iter().any(|s| s.contains("SELECT 'ソ'")), "{sqls:#?}");
}

/// Passwords in every literal form PostgreSQL accepts stay out of the
/// audit log: statement records, refusals, approval requests and the
/// process command lines recorded with each connection.
#[test]
fn passwords_never_reach_the_audit_log() {
    if !privileged() {
        return;
    }
    let (lab, _) = lab(1);
    let attempts: [&[&str]; 6] = [
        &["-c", r"ALTER ROLE postgres PASSWORD E'zq9one\'x'"],
        &["-c", r"CREATE ROLE b PASSWORD U&'zq9tw\006F'"],
        &["-c", "CREATE ROLE b PASSWORD U&'zq9three!0021' UESCAPE '!'"],
        &["-c", "ALTER ROLE postgres PASSWORD $pw$zq9four$pw$"],
        &["-c", "SET standard_conforming_strings = off", "-c", r"ALTER ROLE postgres PASSWORD 'zq9fi\'ve'"],
        // Held for approval (whole-table), with a password in its text.
        &["-c", r"DELETE FROM t WHERE true OR password = E'zq9six\'x'"],
    ];
    for args in attempts {
        let out = psql(&lab, "alice", args);
        assert!(!out.success(), "{args:?}: {out:?}");
    }
    // One that runs: a password column compared in a read.
    let out = psql(&lab, "alice", &["-c", "SELECT 1 FROM t WHERE password = E'zq9seven'"]);
    assert!(!out.success(), "no such column, but recorded: {out:?}");
    assert!(!lab.agent().wait_for_records("approval.requested", 1).is_empty());
    lab.agent().wait_for_records("postgres.statement", 8);
    let log = fs::read_to_string(lab.agent().config.audit_dir.join("audit.jsonl")).unwrap();
    for secret in ["zq9one", "zq9tw", "zq9three", "zq9four", "zq9fi", "zq9six", "zq9seven"] {
        assert!(!log.contains(secret), "{secret} reached the audit log:\n{log}");
    }
    assert!(log.contains("PASSWORD '***'"), "{log}");
}

/// On a guarded target a statement is in the audit log before the server
/// gets it: killed (-9) under pgbench load, the agent leaves no statement
/// the server ran without its record; restarted, the log verifies.
#[test]
fn no_statement_runs_unrecorded_when_the_agent_is_killed_under_load() {
    if !privileged() {
        return;
    }
    let (mut lab, _, data) =
        lab_with(30, &["logging_collector=on", "log_statement=all", "log_filename=statements.log"]);
    let script = lab.dir.path().join("marked.sql");
    fs::write(&script, "\\set n random(1, 1000)\nSELECT 'zq9mark', :n;\n").unwrap();
    set_mode(&script, 0o644);
    let host = lab.target.v4.to_string();
    let mut benches = Vec::new();
    for mode in ["simple", "prepared"] {
        benches.push(lab.spawn_as(
            "alice",
            "pgbench",
            &[
                "-h",
                &host,
                "-U",
                "postgres",
                "-n",
                "-M",
                mode,
                "-c",
                "2",
                "-T",
                "20",
                "-f",
                script.to_str().unwrap(),
                "postgres",
            ],
        ));
    }
    std::thread::sleep(Duration::from_secs(3));
    lab.agent.as_mut().unwrap().kill9();
    for bench in benches {
        bench.wait_within(Duration::from_secs(30));
    }
    // The server's own record of what it ran: every statement, at receipt.
    let log = fs::read_to_string(data.join("log/statements.log")).unwrap_or_default();
    let ran =
        log.lines().filter(|l| l.contains("zq9mark") && (l.contains("statement: ") || l.contains("execute "))).count();
    lab.agent.as_mut().unwrap().restart();
    let recorded: usize = lab
        .agent()
        .records_of("postgres.statement_sent")
        .iter()
        .filter(|r| r["detail"]["sql"].as_str().is_some_and(|sql| sql.contains("zq9mark")))
        .count();
    println!("kill -9 under load: the server ran {ran} marked statements, the audit log holds {recorded} sent records");
    assert!(ran > 100, "the load ran: {ran} statements");
    assert!(recorded >= ran, "the server ran {ran} statements, the audit log holds {recorded}");
    let audit_dir = lab.agent().config.audit_dir.clone();
    lab.agent.take();
    let verify = std::process::Command::new(airlock_vm_tests::airlock_bin())
        .args(["audit", "verify", "--dir"])
        .arg(&audit_dir)
        .output()
        .unwrap();
    assert!(verify.status.success(), "the log verifies after kill -9: {}", String::from_utf8_lossy(&verify.stdout));
}

/// A lab whose writes run within limits: ten rows, and half of the table,
/// over either held for bob's group.
fn limited_lab() -> (Lab, PathBuf) {
    let mut lab = Lab::new(&["alice", "bob"]);
    let data = lab.target.start_postgres(&lab.dir.path().join("pg"));
    TargetHost::superuser_sql(
        &data,
        "create table accounts (id int primary key, v int); insert into accounts select g, 0 from generate_series(1, 100) g; \
         create table small (id int); insert into small values (1), (2), (3), (4); grant all on accounts, small to public",
    );
    let (v4, approvers) = (lab.target.v4, lab.user("bob").name.clone());
    lab.start_agent(&format!(
        r#"
[[target]]
name = "pg"
protocol = "postgres"
port = 5432
addresses = ["{v4}"]

[[target.access]]
action = "allow"
users = ["*"]

[[target.guardrail]]
classes = ["write", "update_without_where", "delete_without_where"]
max_rows = 10
max_fraction = 0.5
action = "approve"

[target.approvals]
groups = ["{approvers}"]
timeout_seconds = 30
"#
    ));
    let cli = lab.cli();
    (lab, cli)
}

/// Syntax cannot tell how far `WHERE id IS NOT NULL` reaches: the write runs
/// in a savepoint, and over its limit it is rolled back and held, in
/// autocommit and inside the client's own transaction alike.
#[test]
fn writes_over_their_limit_are_rolled_back_and_held() {
    if !privileged() {
        return;
    }
    let (lab, cli) = limited_lab();
    let run = |sql: &str| psql(&lab, "alice", &["-v", "ON_ERROR_STOP=1", "-c", sql]);
    // Decides the next request, returning it and what psql printed.
    let decide = |sql: &str, approve: bool| {
        std::thread::scope(|scope| {
            let held = scope.spawn(|| run(sql));
            let request = pending_request(&lab, &cli, "bob");
            let id = request["id"].as_str().unwrap().to_owned();
            let verb = if approve { "approve" } else { "deny" };
            assert!(airlock(&lab, &cli, "bob", &[verb, &id]).success());
            (request, held.join().unwrap())
        })
    };

    // Within the limit: runs, as if nothing stood in between.
    let out = run("delete from accounts where id <= 5 returning id");
    assert!(out.success(), "{out:?}\n{}", lab.agent().log());
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), ["1", "2", "3", "4", "5", "DELETE 5"]);
    assert_eq!(count(&lab, "accounts"), "95");

    // Over max_rows: rolled back, held, refused when denied.
    let (request, out) = decide("delete from accounts where id is not null", false);
    assert!(
        request["reason"].as_str().unwrap().contains("DELETE changed 95 rows of accounts, over the limit of 10 rows"),
        "{request}"
    );
    assert!(!out.success() && out.stderr.contains("was denied by"), "{out:?}");
    assert_eq!(count(&lab, "accounts"), "95", "rolled back");

    // Over max_fraction: 3 of 4 rows is over half the table.
    let (request, out) = decide("delete from small where id <= 3", false);
    assert!(request["reason"].as_str().unwrap().contains("DELETE changed 3 of the 4 rows of small"), "{request}");
    assert!(!out.success(), "{out:?}");
    assert_eq!(count(&lab, "small"), "4");

    // Inside the client's transaction: what came before stays, the write
    // over the limit runs for real once approved, and the transaction goes on.
    let script = lab.dir.path().join("tx.sql");
    fs::write(
        &script,
        "\\set ON_ERROR_STOP 1\nBEGIN;\nupdate accounts set v = 2 where id <= 7;\n\
         update accounts set v = 1 where id > 0;\ninsert into small values (5);\nCOMMIT;\n",
    )
    .unwrap();
    set_mode(&script, 0o644);
    let (request, out) = std::thread::scope(|scope| {
        let held = scope.spawn(|| psql(&lab, "alice", &["-f", script.to_str().unwrap()]));
        let request = pending_request(&lab, &cli, "bob");
        assert!(airlock(&lab, &cli, "bob", &["approve", request["id"].as_str().unwrap()]).success());
        (request, held.join().unwrap())
    });
    assert!(request["reason"].as_str().unwrap().contains("UPDATE changed 95 rows"), "{request}");
    assert!(out.success(), "{out:?}\n{}", lab.agent().log());
    assert!(
        out.stdout.contains("UPDATE 2") && out.stdout.contains("UPDATE 95") && out.stdout.contains("COMMIT"),
        "{out:?}"
    );
    assert_eq!(count(&lab, "accounts where v = 1"), "95");
    assert_eq!(count(&lab, "small"), "5");

    // An error in a measured write is the client's, and leaves the session usable.
    let out = psql(&lab, "alice", &["-c", "update accounts set v = 'x' where id = 9", "-c", "select 42"]);
    assert!(out.stderr.contains("invalid input syntax for type integer"), "{out:?}");
    assert_eq!(out.stdout.trim(), "42", "{out:?}");

    // A write whose rows the server does not count is held outright.
    let (request, _) = decide("with d as (delete from accounts where id = 9 returning id) select * from d", false);
    assert!(
        request["reason"].as_str().unwrap().contains("Airlock measures the rows a write changes only"),
        "{request}"
    );
    assert_eq!(count(&lab, "accounts where id = 9"), "1");
}

/// Where `cargo xtask setup` installed psycopg (see drivers.rs).
const PSYCOPG_PYTHON: &str = "/var/cache/airlock/psycopg-3.3.4/bin/python";

/// A driver's writes with parameters (the extended protocol: Parse, Bind,
/// Execute, Sync; prepared under a name once psycopg prepares them) are
/// measured each time they run, in autocommit and in the client's own
/// transaction.
#[test]
fn prepared_writes_are_measured_each_time_they_run() {
    if !privileged() {
        return;
    }
    let (lab, cli) = limited_lab();
    let script = lab.dir.path().join("writes.py");
    fs::write(
        &script,
        r#"import sys, psycopg
conn = psycopg.connect(host=sys.argv[1], user="postgres", dbname="postgres", autocommit=True)
cur = conn.cursor()
# Within the limit, unnamed and then prepared under a name (a Parse once, then Bind/Execute).
cur.execute("delete from accounts where id <= %s returning id", (3,))
print("deleted", sorted(r[0] for r in cur.fetchall()))
for i in range(4, 9):
    cur.execute("update accounts set v = %s where id = %s", (7, i), prepare=True)
print("updated", cur.rowcount)
# Over max_rows: held, denied.
try:
    cur.execute("update accounts set v = %s where id > %s", (1, 0))
    print("ran")
except psycopg.Error as error:
    print("refused", str(error).splitlines()[0])
# In a transaction: over the limit, approved; the transaction goes on.
conn.autocommit = False
cur.execute("insert into small values (%s)", (9,))
cur.execute("update accounts set v = %s where id > %s", (2, 0))
print("approved", cur.rowcount)
conn.commit()
# Prepared under a name, over the limit: the first run prepares it, rolled
# back and held, runs again once approved; the second binds it again.
conn.autocommit = True
for i in range(2):
    cur.execute("update accounts set v = %s where id > %s", (3 + i, 0), prepare=True)
    print("prepared", cur.rowcount)
"#,
    )
    .unwrap();
    set_mode(&script, 0o644);
    let host = lab.target.v4.to_string();
    let out = std::thread::scope(|scope| {
        let run = scope.spawn(|| {
            lab.run_as_within("alice", PSYCOPG_PYTHON, &[script.to_str().unwrap(), &host], Duration::from_secs(60))
        });
        for approve in [false, true, true, true] {
            let request = pending_request(&lab, &cli, "bob");
            assert!(request["reason"].as_str().unwrap().contains("UPDATE changed 97 rows"), "{request}");
            let verb = if approve { "approve" } else { "deny" };
            assert!(airlock(&lab, &cli, "bob", &[verb, request["id"].as_str().unwrap()]).success());
        }
        run.join().unwrap()
    });
    assert!(out.success(), "{out:?}\n{}", lab.agent().log());
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[..2], ["deleted [1, 2, 3]", "updated 1"], "{out:?}");
    assert!(lines[2].starts_with("refused airlock: request") && lines[2].contains("was denied by"), "{out:?}");
    assert_eq!(lines[3..], ["approved 97", "prepared 97", "prepared 97"], "{out:?}");
    assert_eq!(count(&lab, "accounts where v = 4"), "97");
    assert_eq!(count(&lab, "small where id = 9"), "1");
}
