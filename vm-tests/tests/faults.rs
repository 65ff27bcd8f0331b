//! Faults under real clients, each checked twice: what the client sees and
//! what the audit log says. The upstream server killed mid-session,
//! OpenBao down, the identity provider down, the agent out of file
//! descriptors, policy reloads under load, and the agent killed (-9) under
//! load. (The statement records of a guarded target under kill -9 are
//! `no_statement_runs_unrecorded_when_the_agent_is_killed_under_load` in
//! guardrails.rs.)

use std::{
    fs,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use airlock_vm_tests::{
    CommandOutput, Lab, LoginSession, TargetHost, airlock_bin, oidc::OidcProvider, privileged, set_mode,
};
use serde_json::Value;

/// PostgreSQL (trusting every client) observed on the target's IPv4 address.
fn observe_policy(lab: &Lab) -> String {
    format!(
        "[[target]]\nname = \"pg\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"{}\"]\n\n[[target.access]]\naction = \"allow\"\nusers = [\"*\"]\n",
        lab.target.v4
    )
}

/// A lab with PostgreSQL on the target and `settings`; its data directory.
fn pg_lab(users: &[&str], settings: &[&str]) -> (Lab, PathBuf) {
    let mut lab = Lab::new(users);
    let pg_dir = lab.dir.path().join("pg");
    let data = lab.target.start_postgres_with(&pg_dir, settings);
    (lab, data)
}

fn psql(lab: &Lab, host: &str, db_user: &str, sql: &str) -> CommandOutput {
    lab.run_as("alice", "psql", &["-h", host, "-U", db_user, "-d", "postgres", "-X", "-At", "-w", "-c", sql])
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// Backends running `sql` on the server.
fn running(data: &Path, sql: &str) -> usize {
    TargetHost::superuser_sql(data, &format!("SELECT count(*) FROM pg_stat_activity WHERE query = '{sql}'"))
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The `connection.close` records of sessions of `uid`.
fn closes_of(lab: &Lab, uid: u32) -> Vec<Value> {
    lab.agent().records_of("connection.close").into_iter().filter(|r| r["process"]["uid"] == uid).collect()
}

fn audit_verify(audit_dir: &Path) -> std::process::Output {
    std::process::Command::new(airlock_bin()).args(["audit", "verify", "--dir"]).arg(audit_dir).output().unwrap()
}

#[test]
fn an_upstream_killed_mid_session_reaches_the_client_and_the_audit_log() {
    if !privileged() {
        return;
    }
    let (mut lab, data) = pg_lab(&["alice"], &[]);
    let policy = observe_policy(&lab);
    lab.start_agent(&policy);
    let host = lab.target.v4.to_string();
    let uid = lab.user("alice").uid;

    // The session's backend is terminated by an administrator.
    let sleep = "select pg_sleep(30)";
    let out = thread::scope(|scope| {
        let client = scope.spawn(|| psql(&lab, &host, "postgres", sleep));
        wait_until("the session runs on the server", Duration::from_secs(15), || running(&data, sleep) == 1);
        let sql = format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = '{sleep}'");
        assert_eq!(TargetHost::superuser_sql(&data, &sql).trim(), "t");
        client.join().unwrap()
    });
    println!("terminated backend, client saw: {}", out.stderr.trim());
    assert!(!out.success(), "{out:?}");
    assert!(out.stderr.contains("FATAL:  terminating connection due to administrator command"), "{out:?}");
    let statement = lab
        .agent()
        .wait_for_records("postgres.statement", 1)
        .into_iter()
        .find(|r| r["detail"]["sql"] == sleep)
        .expect("the statement is recorded");
    assert_eq!(statement["detail"]["error"]["sqlstate"], "57P01", "{statement:#}");
    wait_until("the session's end is recorded", Duration::from_secs(10), || !closes_of(&lab, uid).is_empty());
    let close = closes_of(&lab, uid).pop().unwrap();
    println!("terminated backend, audit: {}", close["detail"]);
    // The server's FATAL is the statement's error (above) and why the session ended.
    assert!(close["detail"]["duration_ms"].is_u64(), "{close:#}");
    let error = close["detail"]["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("the server ended the session: FATAL 57P01 terminating connection"), "{close:#}");

    // The whole server stops (immediate shutdown, as a crash would) mid-session.
    let out = thread::scope(|scope| {
        let client = scope.spawn(|| psql(&lab, &host, "postgres", sleep));
        wait_until("the session runs on the server", Duration::from_secs(15), || running(&data, sleep) == 1);
        let pg_ctl = "/usr/lib/postgresql/15/bin/pg_ctl";
        let data_s = data.display().to_string();
        airlock_vm_tests::netns::sh(
            "runuser",
            &["-u", "postgres", "--", pg_ctl, "stop", "-D", &data_s, "-m", "immediate"],
        );
        client.join().unwrap()
    });
    println!("server stopped, client saw: {}", out.stderr.trim());
    assert!(!out.success(), "{out:?}");
    assert!(
        out.stderr.contains("terminating connection because of crash of another server process")
            || out.stderr.contains("server closed the connection unexpectedly"),
        "{out:?}"
    );
    wait_until("the second session's end is recorded", Duration::from_secs(10), || closes_of(&lab, uid).len() == 2);
    let close = closes_of(&lab, uid).pop().unwrap();
    println!("server stopped, audit: {}", close["detail"]);
    let error = close["detail"]["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("the server ended the session: "), "{close:#}");

    // With the server down, a new client is told in its own protocol.
    let out = psql(&lab, &host, "postgres", "select 1");
    println!("server down, client saw: {}", out.stderr.trim());
    assert!(out.stderr.contains("FATAL:  airlock: connecting to ") && out.stderr.contains("refused"), "{out:?}");
    wait_until("the refused session is recorded", Duration::from_secs(10), || closes_of(&lab, uid).len() == 3);
    let close = closes_of(&lab, uid).pop().unwrap();
    println!("server down, audit: {}", close["detail"]);
    assert!(close["detail"]["error"].as_str().is_some_and(|e| e.contains("refused")), "{close:#}");
}

#[test]
fn openbao_down_refuses_a_just_in_time_login_naming_the_cause() {
    if !privileged() {
        return;
    }
    let (lab, _data, bao) = airlock_vm_tests::bao::openbao_jit_lab("alice", None);
    let v4 = lab.target.v4;
    let host = v4.to_string();
    let up = psql(&lab, &host, "analyst", "select current_user");
    assert!(up.success() && up.stdout.starts_with("v-"), "OpenBao up: {up:?}\n{}", lab.agent().log());

    drop(bao);
    let started = Instant::now();
    let out = psql(&lab, &host, "analyst", "select current_user");
    println!("OpenBao down, client saw ({:?}): {}", started.elapsed(), out.stderr.trim());
    assert!(!out.success(), "{out:?}");
    assert!(out.stderr.contains("FATAL:  airlock: could not create a login for you: "), "{out:?}");
    assert!(out.stderr.contains("OpenBao") || out.stderr.contains("openbao"), "names the source: {out:?}");
    assert!(out.stderr.to_lowercase().contains("refused"), "names the cause: {out:?}");
    assert!(started.elapsed() < Duration::from_secs(15), "refused promptly");
    let startups = lab.agent().records_of("postgres.startup");
    let refused = startups.iter().rev().find(|r| r["detail"]["refused"].is_string()).expect("a refused startup record");
    println!("OpenBao down, audit: {}", refused["detail"]);
    assert_eq!(refused["detail"]["user"], "analyst");
    assert!(refused["detail"]["refused"].as_str().unwrap().to_lowercase().contains("refused"), "{refused:#}");
    let log = fs::read_to_string(lab.agent().config.audit_dir.join("audit.jsonl")).unwrap();
    assert!(!log.contains("bao-admin-secret") && !out.stderr.contains("root\n"));
}

#[test]
fn logins_keep_working_while_the_identity_provider_is_down_until_they_expire() {
    if !privileged() {
        return;
    }
    // ID tokens live 24 s: the agent tries to refresh from 16 s on (every
    // 5 s), with the provider down.
    let provider = OidcProvider::start("RS256", 24);
    let mut lab = Lab::new(&["alice"]);
    lab.target.start_postgres(&lab.dir.path().join("pg"));
    let (v4, issuer) = (lab.target.v4, provider.issuer().to_owned());
    let policy = format!(
        "[[target]]\nname = \"pg\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"{v4}\"]\n\n[[target.access]]\naction = \"allow\"\ngroups = [\"dba\"]\n"
    );
    lab.start_agent_with(&policy, &format!("[oidc]\nissuer = \"{issuer}\"\nclient_id = \"airlock\"\n"));
    let mut session =
        LoginSession::open(lab.user("alice"), &lab.cgroups.clients, &lab.dir.path().join("sessions/alice"));
    let cli = format!("{} login --socket {}", lab.cli().display(), lab.agent().config.socket.display());
    let job = session.start(&cli);
    let stderr = job.wait_for_stderr("Waiting for you", Duration::from_secs(20));
    let uri = stderr.split("open ").nth(1).and_then(|r| r.split_whitespace().next()).expect("a URL");
    let code = stderr.split("shows the code ").nth(1).and_then(|r| r.split_whitespace().next()).expect("a code");
    provider.approve_device(uri.split('?').next().unwrap(), code, "alice");
    let login = job.wait(Duration::from_secs(40));
    assert!(login.success(), "{login:?}\n{}", lab.agent().log());
    let logged_in = Instant::now();
    let psql = format!("psql -h {v4} -U postgres -d postgres -X -At -c 'select 42'");

    drop(provider);
    let during = session.run(&psql);
    assert!(during.success() && during.stdout.trim() == "42", "the IdP is down, the login stands: {during:?}");
    // A held session started before the provider went away goes on, too.
    let held = session.start(&format!("psql -h {v4} -U postgres -d postgres -X -At -c 'select pg_sleep(16), 7'"));
    let failed = wait_records(&lab, "identity.refresh_failed", Duration::from_secs(25));
    println!("IdP down, audit: {}", failed.first().map(|r| r["detail"].to_string()).unwrap_or_default());
    assert_eq!(failed.len(), 1, "a refresh was tried and failed: {}", lab.agent().log());
    assert_eq!(failed[0]["detail"]["retrying"], true, "{:#}", failed[0]);
    let still = session.run(&psql);
    assert!(
        logged_in.elapsed() < Duration::from_secs(24) && still.success(),
        "after the failed refresh, before expiry: {still:?}"
    );

    // At expiry the login ends; the client is told what to do.
    let ended = wait_records(&lab, "identity.logout", Duration::from_secs(20));
    println!("IdP down, login expired, audit: {}", ended[0]["detail"]);
    assert_eq!(ended[0]["detail"]["reason"], "expired");
    let after = session.run(&psql);
    println!("IdP down, login expired, client saw: {}", after.stderr.trim());
    assert!(!after.success() && after.stderr.contains("run: airlock login"), "{after:?}");
    let held = held.wait(Duration::from_secs(30));
    assert!(
        held.success() && held.stdout.trim() == "|7",
        "the session opened during the login ran to its end: {held:?}"
    );
}

fn wait_records(lab: &Lab, kind: &str, timeout: Duration) -> Vec<Value> {
    let mut records = Vec::new();
    wait_until(kind, timeout, || {
        records = lab.agent().records_of(kind);
        !records.is_empty()
    });
    records
}

#[test]
fn out_of_file_descriptors_new_sessions_are_refused_clearly_and_live_ones_go_on() {
    if !privileged() {
        return;
    }
    let (mut lab, data) = pg_lab(&["alice"], &[]);
    let policy = observe_policy(&lab);
    lab.start_agent(&policy);
    let host = lab.target.v4.to_string();
    let pid = lab.agent().pid().to_string();
    let limit = |n: usize| airlock_vm_tests::netns::sh("prlimit", &["--pid", &pid, &format!("--nofile={n}:")]);
    let refusals = || lab.agent().records_of("connection.refused").len();
    let sleep = "select pg_sleep(20), 1";
    // Room for a few sessions (a socket to each side); sessions are opened
    // until one is refused, then the limit is raised by one and again: out
    // of descriptors at accept(2), and with one for accept but none for
    // the connection to the server.
    // The limit caps descriptor numbers, and a new descriptor takes the
    // lowest free one: the limit leaves four free numbers, and is above the
    // descriptors the accept loops hold in reserve (/dev/null).
    let open: Vec<(usize, String)> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            Some((e.file_name().to_str()?.parse().ok()?, fs::read_link(e.path()).ok()?.display().to_string()))
        })
        .collect();
    let spare = open.iter().filter(|(fd, link)| *fd > 2 && link == "/dev/null").map(|(fd, _)| *fd).max().unwrap();
    let free_below = |limit: usize| limit - open.iter().filter(|(fd, _)| *fd < limit).count();
    let base = (spare + 1..).find(|&limit| free_below(limit) >= 4).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    thread::scope(|scope| {
        let mut held = Vec::new();
        for room in 0..6 {
            if seen.len() == 2 {
                break;
            }
            limit(base + room);
            loop {
                assert!(held.len() < 40, "no refusal after {} sessions\n{}", held.len(), lab.agent().log());
                let before = refusals();
                let started = Instant::now();
                let client = scope.spawn(|| psql(&lab, &host, "postgres", sleep));
                while !(client.is_finished() || running(&data, sleep) > held.len()) {
                    let log: String =
                        lab.agent().log().lines().filter(|l| !l.contains("DEBUG")).collect::<Vec<_>>().join("\n");
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "session {} neither runs nor is refused after 10 s\n{log}",
                        held.len()
                    );
                    thread::sleep(Duration::from_millis(50));
                }
                if !client.is_finished() {
                    held.push(client);
                    continue;
                }
                let out = client.join().unwrap();
                let case = if refusals() > before { "accept" } else { "upstream connect" };
                println!("out of fds at {case}, client saw ({:?}): {}", started.elapsed(), out.stderr.trim());
                assert!(!out.success(), "{out:?}");
                assert!(
                    out.stderr.contains("FATAL:  airlock: the agent is out of file descriptors (RLIMIT_NOFILE)"),
                    "{case}: {out:?}\n{}",
                    lab.agent().log()
                );
                assert!(started.elapsed() < Duration::from_secs(3), "{case}: refused at once, not left waiting");
                seen.insert(case);
                break;
            }
        }
        for client in held {
            let out = client.join().unwrap();
            assert!(out.success() && out.stdout.trim() == "|1", "a live session is unharmed: {out:?}");
        }
    });
    assert_eq!(seen.len(), 2, "both cases were met: {seen:?}");
    let refused = lab.agent().records_of("connection.refused");
    println!("out of fds at accept, audit: {:?}", refused.iter().map(|r| r["detail"].to_string()).collect::<Vec<_>>());
    assert!(refused[0]["detail"]["reason"].as_str().unwrap().contains("out of file descriptors"), "{:#}", refused[0]);
    assert_eq!(refused[0]["target"]["name"], "pg");
    assert_eq!(refused[0]["process"]["uid"], lab.user("alice").uid);
    let failed: Vec<Value> = lab
        .agent()
        .records_of("connection.close")
        .into_iter()
        .filter(|r| r["detail"]["error"].as_str().is_some_and(|e| e.contains("out of file descriptors")))
        .collect();
    println!(
        "out of fds at upstream connect, audit: {:?}",
        failed.iter().map(|r| r["detail"].to_string()).collect::<Vec<_>>()
    );
    assert!(!failed.is_empty(), "{failed:#?}");
    // Load gone: the agent serves again, within the same limit.
    let out = psql(&lab, &host, "postgres", "select 2");
    assert!(out.success() && out.stdout.trim() == "2", "recovered: {out:?}\n{}", lab.agent().log());
}

#[test]
fn policy_reloads_under_load_drop_no_session() {
    if !privileged() {
        return;
    }
    let (mut lab, _) = pg_lab(&["alice"], &[]);
    let policy = observe_policy(&lab);
    lab.start_agent(&policy);
    let script = lab.dir.path().join("select1.sql");
    fs::write(&script, "SELECT 1;\n").unwrap();
    set_mode(&script, 0o644);
    let (host, script) = (lab.target.v4.to_string(), script.display().to_string());
    let bench = |reconnect: bool| {
        let mut args = vec!["-n", "-c", "4", "-j", "2", "-T", "8", "-f", &script, "-h", &host, "-U", "postgres"];
        if reconnect {
            args.push("-C");
        }
        args.push("postgres");
        lab.run_as("alice", "pgbench", &args)
    };
    // Each reload changes the target set (a target added, then removed):
    // the protected ones are republished every time.
    let other = format!(
        "{policy}\n[[target]]\nname = \"other\"\nprotocol = \"tcp\"\nport = 9\naddresses = [\"{}\"]\n\n[[target.access]]\naction = \"allow\"\nusers = [\"*\"]\n",
        lab.target.v4
    );
    let outs = thread::scope(|scope| {
        let benches = [scope.spawn(|| bench(false)), scope.spawn(|| bench(true))];
        for n in 0..6 {
            thread::sleep(Duration::from_millis(1000));
            lab.agent().reload(if n % 2 == 0 { &other } else { &policy });
        }
        benches.map(|b| b.join().unwrap())
    });
    for out in &outs {
        let processed = out.stdout.lines().find(|l| l.starts_with("number of transactions actually processed"));
        println!(
            "reloads under load, pgbench: {:?}; {:?}",
            processed,
            out.stdout.lines().find(|l| l.contains("failed"))
        );
        assert!(out.success(), "{out:?}");
        assert!(out.stdout.contains("number of failed transactions: 0 (0.000%)"), "{}", out.stdout);
        assert!(!out.stderr.contains("aborted"), "{}", out.stderr);
    }
    let reloads = lab.agent().wait_for_records("policy.reload", 6);
    println!("reloads under load, audit: {} policy.reload records", reloads.len());
    assert_eq!(reloads.len(), 6, "{}", lab.agent().log());
    assert!(lab.agent().records_of("policy.reload_failed").is_empty());
    assert!(lab.agent().records_of("connection.denied").is_empty(), "no connection was refused by a reload");
    let errors: Vec<Value> =
        lab.agent().records_of("connection.close").into_iter().filter(|r| !r["detail"]["error"].is_null()).collect();
    assert!(errors.is_empty(), "sessions ended with errors: {errors:#?}");
}

#[test]
fn killed_under_load_the_agent_fails_closed_and_cleans_up_after_restart() {
    if !privileged() {
        return;
    }
    let (mut lab, data) = pg_lab(&["alice"], &[]);
    let admin = TargetHost::jit_admin(&data, lab.dir.path(), "kill9-admin-password");
    let (v4, v6) = (lab.target.v4, lab.target.v6);
    let policy = format!(
        "{}\n[[target]]\nname = \"pg-jit\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"{v6}\"]\n\n[[target.access]]\naction = \"allow\"\nusers = [\"*\"]\n\n\
         [target.credentials]\nadmin_file = \"{}\"\ntls = \"disable\"\n\n[[target.credentials.role]]\nname = \"reader\"\ngrants = [\"pg_read_all_data\"]\nusers = [\"*\"]\n",
        observe_policy(&lab),
        admin.display()
    );
    lab.start_agent(&policy);
    let script = lab.dir.path().join("select1.sql");
    fs::write(&script, "SELECT 1;\n").unwrap();
    set_mode(&script, 0o644);
    let script = script.display().to_string();
    let (v4s, v6s) = (v4.to_string(), v6.to_string());
    let jit_roles = || {
        TargetHost::superuser_sql(
            &data,
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'airlock\\_%' AND rolname <> 'airlock_admin'",
        )
        .trim()
        .parse::<usize>()
        .unwrap_or(0)
    };
    let benches = [(&v4s, "postgres"), (&v6s, "reader")].map(|(host, user)| {
        lab.spawn_as(
            "alice",
            "pgbench",
            &["-n", "-c", "2", "-T", "20", "-f", &script, "-h", host, "-U", user, "postgres"],
        )
    });
    wait_until("a just-in-time role serves the load", Duration::from_secs(15), || jit_roles() == 1);
    thread::sleep(Duration::from_secs(2));
    lab.agent.as_mut().unwrap().kill9();
    for bench in benches {
        assert_ne!(bench.wait_within(Duration::from_secs(30)), Some(0), "pgbench lost its sessions with the agent");
    }

    // Fail closed: the server would let this client straight in; it is refused instead.
    for (host, user) in [(&v4s, "postgres"), (&v6s, "reader")] {
        let out = psql(&lab, host, user, "select 1");
        println!("agent killed, client of {host} saw: {}", out.stderr.trim());
        assert!(!out.success() && out.stderr.contains("Connection refused"), "{out:?}");
    }
    assert_eq!(jit_roles(), 1, "the role outlived the killed agent");

    lab.agent.as_mut().unwrap().restart();
    let recovered = lab.agent().wait_for_records("credential.recovered", 1);
    println!("restarted, audit: {}", recovered.first().map(|r| r["detail"].to_string()).unwrap_or_default());
    assert_eq!(recovered.len(), 1, "{}", lab.agent().log());
    assert_eq!(recovered[0]["detail"]["dropped_roles"].as_array().map(Vec::len), Some(1), "{:#}", recovered[0]);
    assert_eq!(jit_roles(), 0, "the left-behind role is dropped");
    let out = psql(&lab, &v4s, "postgres", "select 1");
    assert!(out.success(), "serving again: {out:?}");
    let audit_dir = lab.agent().config.audit_dir.clone();
    lab.agent.take();
    let verify = audit_verify(&audit_dir);
    println!("after kill -9 and restart: airlock audit verify: {}", String::from_utf8_lossy(&verify.stdout).trim());
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}
