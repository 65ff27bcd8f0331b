//! The PostgreSQL proxy end to end: real PostgreSQL 15 on a netns target,
//! real psql and pgbench run as test users through the eBPF redirect.

use std::fs;

use airlock_vm_tests::{CommandOutput, Lab, TargetHost, privileged, set_mode};
use serde_json::Value;

/// A lab with PostgreSQL on the target and the agent protecting it (and a
/// closed port 5433), with `access` rules for the PostgreSQL target.
fn lab_with_postgres(users: &[&str], access: &str, settings: &[&str]) -> Lab {
    let mut lab = Lab::new(users);
    let pg_dir = lab.dir.path().join("pg");
    lab.target.start_postgres_with(&pg_dir, settings);
    let (v4, v6) = (lab.target.v4, lab.target.v6);
    let policy = format!(
        r#"
[[target]]
name = "pg"
protocol = "postgres"
port = 5432
addresses = ["{v4}", "{v6}"]
{access}

[[target]]
name = "pg-down"
protocol = "postgres"
port = 5433
addresses = ["{v4}"]

[[target.access]]
action = "allow"
users = ["*"]
"#
    );
    lab.start_agent(&policy);
    lab
}

const ALLOW_ALL: &str = "[[target.access]]\naction = \"allow\"\nusers = [\"*\"]\n";

fn psql(lab: &Lab, user: &str, args: &[&str]) -> CommandOutput {
    let host = lab.target.v4.to_string();
    let mut full = vec!["-h", host.as_str(), "-U", "postgres", "-d", "postgres", "-X", "-At", "-v", "ON_ERROR_STOP=1"];
    full.extend_from_slice(args);
    lab.run_as(user, "psql", &full)
}

fn statements(lab: &Lab, count: usize) -> Vec<Value> {
    lab.agent().wait_for_records("postgres.statement", count)
}

#[test]
fn statements_are_recorded_with_their_results_and_errors() {
    if !privileged() {
        return;
    }
    let lab = lab_with_postgres(&["alice"], ALLOW_ALL, &[]);
    let out =
        psql(&lab, "alice", &["-c", "create table t (a int); insert into t values (1), (2); select count(*) from t"]);
    assert!(out.success(), "{out:?}\n{}", lab.agent().log());
    assert_eq!(out.stdout.lines().last(), Some("2"));
    let failing = psql(&lab, "alice", &["-c", "select * from no_such_table"]);
    assert!(!failing.success());
    assert!(failing.stderr.contains("no_such_table"), "the server's error still reaches the client: {failing:?}");
    let secret = psql(&lab, "alice", &["-c", "create role app login password 'hunter2'"]);
    assert!(secret.success(), "{secret:?}");

    let records = statements(&lab, 3);
    assert_eq!(records.len(), 3, "{records:#?}");
    let first = &records[0]["detail"];
    assert_eq!(first["protocol"], "simple");
    assert_eq!(first["sql"], "create table t (a int); insert into t values (1), (2); select count(*) from t");
    assert_eq!(first["results"], serde_json::json!(["CREATE TABLE", "INSERT 0 2", "SELECT 1"]));
    assert_eq!(first["executed"], true);
    assert_eq!(records[0]["identity"]["user"], lab.user("alice").name.as_str());
    assert_eq!(records[1]["detail"]["error"]["sqlstate"], "42P01");
    assert_eq!(records[2]["detail"]["sql"], "create role app login password '***'");
    let log = fs::read_to_string(lab.agent().config.audit_dir.join("audit.jsonl")).unwrap();
    assert!(!log.contains("hunter2"), "a password reached the audit log");
    let detected = lab.agent().records_of("secret.detected");
    assert_eq!(detected.len(), 1, "{detected:#?}");
    assert_eq!(detected[0]["detail"]["kinds"], serde_json::json!(["password"]));
    assert_eq!(detected[0]["detail"]["sql"], "create role app login password '***'");

    let startups = lab.agent().records_of("postgres.startup");
    assert_eq!(startups[0]["detail"]["user"], "postgres");
    assert_eq!(startups[0]["detail"]["database"], "postgres");
    assert_eq!(startups[0]["detail"]["application_name"], "psql");
}

#[test]
fn pgbench_prepared_and_extended_protocols_are_recorded() {
    if !privileged() {
        return;
    }
    let lab = lab_with_postgres(&["alice"], ALLOW_ALL, &[]);
    let script = lab.dir.path().join("bench.sql");
    fs::write(&script, "\\set n random(1, 100)\nselect :n + 1;\n").unwrap();
    set_mode(&script, 0o644);
    let host = lab.target.v4.to_string();
    for mode in ["prepared", "extended"] {
        let out = lab.run_as(
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
                "-t",
                "20",
                "-c",
                "2",
                "-f",
                script.to_str().unwrap(),
                "postgres",
            ],
        );
        assert!(out.success(), "pgbench -M {mode}: {out:?}\n{}", lab.agent().log());
        assert!(out.stdout.contains("number of transactions actually processed: 40/40"), "{}", out.stdout);
    }
    let records = statements(&lab, 80);
    let benched: Vec<&Value> = records.iter().filter(|r| r["detail"]["sql"] == "select $1 + 1;").collect();
    let sqls: Vec<&str> = records.iter().map(|r| r["detail"]["sql"].as_str().unwrap()).collect();
    assert_eq!(benched.len(), 80, "{sqls:?}");
    assert!(benched.iter().all(|r| r["detail"]["protocol"] == "extended" && r["detail"]["results"][0] == "SELECT 1"));
}

#[test]
fn copy_and_large_messages_pass_through_intact() {
    if !privileged() {
        return;
    }
    let lab = lab_with_postgres(&["alice"], ALLOW_ALL, &[]);
    let out = psql(&lab, "alice", &["-c", "copy (select i, md5(i::text) from generate_series(1, 50000) i) to stdout"]);
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout.lines().count(), 50_000);
    assert!(out.stdout.starts_with("1\tc4ca4238a0b923820dcc509a6f75849b\n"));

    let data = lab.dir.path().join("rows.tsv");
    fs::write(&data, (1..=20_000).map(|i| format!("{i}\trow {i}\n")).collect::<String>()).unwrap();
    set_mode(&data, 0o644);
    let copy_in = psql(
        &lab,
        "alice",
        &[
            "-c",
            "create table c (a int, b text)",
            "-c",
            &format!("\\copy c from '{}'", data.display()),
            "-c",
            "select count(*), sum(a) from c",
        ],
    );
    assert!(copy_in.success(), "{copy_in:?}");
    assert_eq!(copy_in.stdout.lines().last(), Some("20000|200010000"));

    // A 20 MB row (streamed, not buffered) and a 20 MB statement.
    let big_row = psql(&lab, "alice", &["-c", "select repeat('ab', 10000000)"]);
    assert!(big_row.success(), "{}", big_row.stderr);
    assert_eq!(big_row.stdout.len(), 20_000_001);
    let big_query = lab.dir.path().join("big.sql");
    fs::write(&big_query, format!("select length('{}');\n", "x".repeat(20_000_000))).unwrap();
    set_mode(&big_query, 0o644);
    let out = psql(&lab, "alice", &["-f", big_query.to_str().unwrap()]);
    assert!(out.success(), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "20000000");
    let records = lab.agent().records_of("postgres.statement");
    assert!(
        records.iter().any(|r| r["detail"]["sql"].as_str().unwrap().contains("-byte query, too large to inspect")),
        "large statement recorded as such"
    );
}

#[test]
fn refusals_reach_psql_as_fatal_errors() {
    if !privileged() {
        return;
    }
    let access =
        "[[target.access]]\naction = \"deny\"\nusers = [\"*\"]\nreason = \"production is read through the replica\"\n";
    let lab = lab_with_postgres(&["bob"], access, &[]);
    let out = psql(&lab, "bob", &["-c", "select 1"]);
    assert!(!out.success());
    assert!(
        out.stderr.contains("FATAL:  airlock: access to \"pg\" denied: production is read through the replica"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("HINT:  This host's Airlock policy decides who may connect"), "{}", out.stderr);

    let host = lab.target.v4.to_string();
    let down = lab.run_as("bob", "psql", &["-h", &host, "-p", "5433", "-U", "postgres", "-c", "select 1"]);
    assert!(!down.success());
    assert!(
        down.stderr.contains(&format!("FATAL:  airlock: connecting to {host}:5433: Connection refused"))
            && down.stderr.contains("HINT:  Airlock connects to the target for you: check that the server is up"),
        "{}",
        down.stderr
    );
}

#[test]
fn tls_offered_by_the_server_passes_through_end_to_end() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new(&["alice"]);
    let pg_dir = lab.dir.path().join("pg");
    let (ssl, _) = TargetHost::tls_with_ca(&pg_dir.join("tls"), lab.target.v4.into());
    let settings: Vec<&str> = ssl.iter().map(String::as_str).collect();
    lab.target.start_postgres_with(&pg_dir, &settings);
    let v4 = lab.target.v4;
    lab.start_agent(&format!(
        "[[target]]\nname = \"pg\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"{v4}\"]\n\n{ALLOW_ALL}"
    ));
    let conninfo = format!("host={v4} user=postgres dbname=postgres sslmode=require");
    let out = lab.run_as(
        "alice",
        "psql",
        &[&conninfo, "-At", "-c", "select ssl from pg_stat_ssl where pid = pg_backend_pid()"],
    );
    assert!(out.success(), "{out:?}\n{}", lab.agent().log());
    assert_eq!(out.stdout.trim(), "t", "the client's session is encrypted to the server");
    assert_eq!(lab.agent().wait_for_records("postgres.tls_passthrough", 1).len(), 1);
}

#[test]
fn a_malformed_client_message_gets_a_protocol_error() {
    if !privileged() {
        return;
    }
    let lab = lab_with_postgres(&["alice"], ALLOW_ALL, &[]);
    let v4 = lab.target.v4;
    // A valid StartupMessage, then a frame whose length field is 2 (less than itself).
    let script = format!(
        "import socket, struct\n\
         s = socket.create_connection(('{v4}', 5432), timeout=10)\n\
         params = b'user\\0postgres\\0database\\0postgres\\0\\0'\n\
         s.sendall(struct.pack('!II', 8 + len(params), 196608) + params)\n\
         while True:\n\
         \x20   tag = s.recv(1)\n\
         \x20   size = struct.unpack('!I', s.recv(4))[0]\n\
         \x20   body = b''\n\
         \x20   while len(body) < size - 4: body += s.recv(size - 4 - len(body))\n\
         \x20   if tag == b'Z': break\n\
         s.sendall(b'Q\\0\\0\\0\\x02')\n\
         data = b''\n\
         while True:\n\
         \x20   chunk = s.recv(65536)\n\
         \x20   if not chunk: break\n\
         \x20   data += chunk\n\
         print(data.decode('utf-8', 'replace'))\n"
    );
    let out = lab.run_as("alice", "python3", &["-c", &script]);
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains("08P01"), "{}", out.stdout);
    assert!(
        out.stdout.contains("client sent a malformed message: message length 2 is shorter than its own header"),
        "{}",
        out.stdout
    );
    let closes = lab.agent().wait_for_records("connection.close", 1);
    assert!(closes[0]["detail"]["error"].as_str().unwrap().contains("malformed"), "{:#}", closes[0]);
}

#[test]
fn psql_cancel_reaches_the_running_statement() {
    if !privileged() {
        return;
    }
    let lab = lab_with_postgres(&["alice"], ALLOW_ALL, &[]);
    let host = lab.target.v4.to_string();
    // coreutils timeout sends SIGINT after 1 s (to psql alone, with
    // --foreground); psql answers it with a CancelRequest on a new
    // connection, which is intercepted too.
    let out = lab.run_as(
        "alice",
        "timeout",
        &[
            "--foreground",
            "-s",
            "INT",
            "1",
            "psql",
            "-h",
            &host,
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-X",
            "-c",
            "select pg_sleep(20)",
        ],
    );
    assert!(out.stderr.contains("canceling statement due to user request"), "{out:?}\n{}", lab.agent().log());
    let cancels = lab.agent().wait_for_records("postgres.cancel", 1);
    assert!(!cancels.is_empty());
    let statements = lab.agent().wait_for_records("postgres.statement", 1);
    assert_eq!(statements[0]["detail"]["error"]["sqlstate"], "57014", "{:#}", statements[0]);
    // A signal delivered twice makes psql cancel twice; each names the session.
    assert!(cancels.iter().all(|c| c["detail"]["cancelled_session"] == statements[0]["session"]), "{cancels:#?}");

    // The client holds the server's backend pid (as notifications and
    // pg_backend_pid() show it) with a key of Airlock's: cancels go through it.
    let v4 = lab.target.v4;
    let script = format!(
        "import socket, struct\n\
         s = socket.create_connection(('{v4}', 5432), timeout=10)\n\
         params = b'user\\0postgres\\0database\\0postgres\\0\\0'\n\
         s.sendall(struct.pack('!II', 8 + len(params), 196608) + params)\n\
         def message():\n\
         \x20   head = b''\n\
         \x20   while len(head) < 5: head += s.recv(5 - len(head))\n\
         \x20   size = struct.unpack('!I', head[1:])[0]\n\
         \x20   body = b''\n\
         \x20   while len(body) < size - 4: body += s.recv(size - 4 - len(body))\n\
         \x20   return head[:1], body\n\
         key_pid = None\n\
         while True:\n\
         \x20   tag, body = message()\n\
         \x20   if tag == b'K': key_pid = struct.unpack('!I', body[:4])[0]\n\
         \x20   if tag == b'Z': break\n\
         q = b'select pg_backend_pid()\\0'\n\
         s.sendall(b'Q' + struct.pack('!I', 4 + len(q)) + q)\n\
         while True:\n\
         \x20   tag, body = message()\n\
         \x20   if tag == b'D': real = int(body[6:].decode())\n\
         \x20   if tag == b'Z': break\n\
         print(key_pid, real)\n"
    );
    let out = lab.run_as("alice", "python3", &["-c", &script]);
    assert!(out.success(), "{out:?}");
    let pids: Vec<u32> = out.stdout.split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert_eq!(pids.len(), 2, "{out:?}");
    assert_eq!(pids[0], pids[1], "the client's BackendKeyData names its backend");
}
