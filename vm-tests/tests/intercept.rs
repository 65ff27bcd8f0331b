//! Transparent interception end to end: the real agent, its eBPF programs
//! attached at the lab's cgroup, unmodified clients run as test users, and
//! real servers on a target host in a network namespace.

use std::{fs, process::Command, thread, time::Duration};

use airlock_vm_tests::{Lab, agent::airlock_bin, privileged};
use serde_json::Value;

const WEB: u16 = 8080;
const UNPROTECTED_WEB: u16 = 8081;

/// Policy protecting the lab target's PostgreSQL and web ports, with access
/// rules (TOML `[[target.access]]` blocks) for the web target.
fn policy(lab: &Lab, web_access: &str) -> String {
    let (v4, v6) = (lab.target.v4, lab.target.v6);
    format!(
        r#"
[[target]]
name = "pg"
protocol = "postgres"
port = 5432
addresses = ["{v4}", "{v6}"]

[[target.access]]
action = "allow"
users = ["*"]

[[target]]
name = "web"
protocol = "tcp"
port = {WEB}
addresses = ["{v4}/32", "{v6}/128"]
{web_access}
"#
    )
}

const ALLOW_ALL: &str = "[[target.access]]\naction = \"allow\"\nusers = [\"*\"]\n";

/// A lab with the web servers on the target and the agent running `policy(access)`.
fn web_lab(users: &[&str], access: &str) -> Lab {
    let mut lab = Lab::new(users);
    start_web(&mut lab);
    let policy = policy(&lab, access);
    lab.start_agent(&policy);
    lab
}

/// Starts the web servers (protected and unprotected ports) on the target.
fn start_web(lab: &mut Lab) {
    let www = lab.dir.path().join("www");
    fs::create_dir_all(&www).unwrap();
    fs::write(www.join("hello.txt"), "hello from the target\n").unwrap();
    airlock_vm_tests::set_mode(&www, 0o755);
    lab.target.start_http(WEB, &www);
    lab.target.start_http(UNPROTECTED_WEB, &www);
}

fn curl(lab: &Lab, user: &str, url: &str) -> airlock_vm_tests::CommandOutput {
    lab.run_as(user, "curl", &["-sS", "-g", "--max-time", "10", "-w", "\n%{remote_ip} %{remote_port}", url])
}

fn record_of_pid(records: &[Value], pid: u32) -> &Value {
    records
        .iter()
        .find(|r| r["process"]["pid"] == pid)
        .unwrap_or_else(|| panic!("no record for pid {pid} in {records:#?}"))
}

#[test]
fn psql_and_curl_as_a_test_user_are_intercepted_and_attributed() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new(&["alice"]);
    let pg_dir = lab.dir.path().join("pg");
    lab.target.start_postgres(&pg_dir);
    start_web(&mut lab);
    let policy = policy(&lab, ALLOW_ALL);
    lab.start_agent(&policy);
    let v4 = lab.target.v4.to_string();
    let alice = lab.user("alice");

    let psql =
        lab.run_as("alice", "psql", &["-h", &v4, "-U", "postgres", "-d", "postgres", "-At", "-c", "select 40 + 2"]);
    assert!(psql.success(), "psql failed: {psql:?}\nagent log:\n{}", lab.agent().log());
    assert_eq!(psql.stdout.trim(), "42");

    let opens = lab.agent().wait_for_records("connection.open", 1);
    let open = record_of_pid(&opens, psql.pid);
    assert_eq!(open["identity"]["user"], alice.name.as_str());
    assert_eq!(open["identity"]["uid"], alice.uid);
    assert_eq!(open["identity"]["source"], "unix");
    assert_eq!(open["process"]["uid"], alice.uid);
    assert_eq!(open["process"]["loginuid"], alice.uid, "login uid from /proc/PID/loginuid");
    assert_eq!(open["process"]["exe"], "/usr/lib/postgresql/15/bin/psql");
    assert_eq!(open["target"]["name"], "pg");
    assert_eq!(open["target"]["addr"], v4.as_str());
    assert_eq!(open["target"]["port"], 5432);
    assert_eq!(open["detail"]["decision"], "allow");
    assert!(open["process"]["cgroup"].as_str().unwrap().ends_with("/clients"), "{open}");

    let closes = lab.agent().wait_for_records("connection.close", 1);
    let close = closes.iter().find(|r| r["session"] == open["session"]).expect("close record of the psql session");
    assert!(close["detail"]["bytes_to_upstream"].as_u64().unwrap() > 0);
    assert!(close["detail"]["bytes_to_client"].as_u64().unwrap() > 0);
    assert_eq!(close["detail"]["error"], Value::Null);

    // A plain TCP client; getpeername shows it the original peer, not the agent.
    let web = curl(&lab, "alice", &format!("http://{v4}:{WEB}/hello.txt"));
    assert!(web.success(), "curl failed: {web:?}\n{}", lab.agent().log());
    assert_eq!(web.stdout, format!("hello from the target\n\n{v4} {WEB}"));
    let opens = lab.agent().wait_for_records("connection.open", 2);
    let open = record_of_pid(&opens, web.pid);
    assert_eq!(open["target"]["name"], "web");
    assert_eq!(open["process"]["exe"], "/usr/bin/curl");
    assert_eq!(open["identity"]["user"], alice.name.as_str());
}

#[test]
fn ipv6_and_ipv4_mapped_connections_are_intercepted() {
    if !privileged() {
        return;
    }
    let lab = web_lab(&["alice"], ALLOW_ALL);
    let (v4, v6) = (lab.target.v4, lab.target.v6);

    let over_v6 = curl(&lab, "alice", &format!("http://[{v6}]:{WEB}/hello.txt"));
    assert!(over_v6.success(), "{over_v6:?}\n{}", lab.agent().log());
    assert_eq!(over_v6.stdout, format!("hello from the target\n\n{v6} {WEB}"));

    // A dual-stack AF_INET6 socket dialling an IPv4-mapped address.
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)\n\
         s.settimeout(10)\n\
         s.connect(('::ffff:{v4}', {WEB}))\n\
         print(s.getpeername()[0], s.getpeername()[1])\n\
         s.sendall(b'GET /hello.txt HTTP/1.0\\r\\n\\r\\n')\n\
         data = b''\n\
         while True:\n\
         \x20   chunk = s.recv(65536)\n\
         \x20   if not chunk: break\n\
         \x20   data += chunk\n\
         print(data.decode().split('\\r\\n\\r\\n', 1)[1], end='')\n"
    );
    let mapped = lab.run_as("alice", "python3", &["-c", &script]);
    assert!(mapped.success(), "{mapped:?}\n{}", lab.agent().log());
    assert_eq!(mapped.stdout, format!("::ffff:{v4} {WEB}\nhello from the target\n"));

    let opens = lab.agent().wait_for_records("connection.open", 2);
    assert_eq!(record_of_pid(&opens, over_v6.pid)["target"]["addr"], v6.to_string());
    assert_eq!(record_of_pid(&opens, mapped.pid)["target"]["addr"], v4.to_string());
}

#[test]
fn unprotected_ports_are_untouched() {
    if !privileged() {
        return;
    }
    let lab = web_lab(&["alice"], ALLOW_ALL);
    let v4 = lab.target.v4;

    let direct = curl(&lab, "alice", &format!("http://{v4}:{UNPROTECTED_WEB}/hello.txt"));
    assert!(direct.success(), "{direct:?}");
    assert_eq!(direct.stdout, format!("hello from the target\n\n{v4} {UNPROTECTED_WEB}"));
    // Loopback too: the agent's own listener port is not a target.
    let status = lab.agent().status();
    assert_eq!(status["counters"]["redirected"], 0, "{status:#}");
    assert_eq!(status["counters"]["protected_port_connects"], 0, "{status:#}");
    thread::sleep(Duration::from_millis(200));
    assert!(lab.agent().records_of("connection.open").is_empty());
}

#[test]
fn a_user_denied_by_policy_cannot_connect_and_the_reason_is_recorded() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new(&["alice", "bob"]);
    start_web(&mut lab);
    let bob = lab.user("bob").name.clone();
    let alice = lab.user("alice").name.clone();
    let access = format!(
        "[[target.access]]\naction = \"deny\"\nusers = [\"{bob}\"]\nreason = \"bob reads the staging replica\"\n\n\
         [[target.access]]\naction = \"allow\"\nusers = [\"{alice}\"]\n"
    );
    let policy = policy(&lab, &access);
    lab.start_agent(&policy);
    let url = format!("http://{}:{WEB}/hello.txt", lab.target.v4);

    let refused = curl(&lab, "bob", &url);
    assert!(!refused.success(), "bob got through: {refused:?}");
    assert!(!refused.stdout.contains("hello from the target"));
    let denied = lab.agent().wait_for_records("connection.denied", 1);
    let record = record_of_pid(&denied, refused.pid);
    assert_eq!(record["identity"]["user"], bob.as_str());
    assert_eq!(record["detail"]["reason"], "bob reads the staging replica");
    assert!(lab.agent().log().contains("bob reads the staging replica"), "reason in the agent's log");

    let allowed = curl(&lab, "alice", &url);
    assert!(allowed.success(), "{allowed:?}");
    assert!(lab.agent().records_of("connection.open").iter().all(|r| r["identity"]["user"] == alice.as_str()));
}

#[test]
fn killed_agent_fails_closed_and_a_restart_adopts_without_double_attach() {
    if !privileged() {
        return;
    }
    let mut lab = web_lab(&["alice"], ALLOW_ALL);
    let url = format!("http://{}:{WEB}/hello.txt", lab.target.v4);
    assert!(curl(&lab, "alice", &url).success());
    let links_before: Vec<Value> = lab.agent().status()["programs"].as_array().unwrap().clone();

    lab.agent.as_mut().unwrap().kill9();
    let while_down = curl(&lab, "alice", &url);
    assert!(!while_down.success(), "a protected connection went direct while the agent was down: {while_down:?}");
    assert_eq!(while_down.code, Some(7), "curl: failed to connect (redirected to the closed listener)");
    assert_eq!(attached_program_count(&lab), 5, "pinned programs stay attached while the agent is down");

    lab.agent.as_mut().unwrap().restart();
    let after = curl(&lab, "alice", &url);
    assert!(after.success(), "{after:?}\n{}", lab.agent().log());
    assert_eq!(attached_program_count(&lab), 5, "restart replaced the links instead of adding to them");
    let links_after: Vec<Value> = lab.agent().status()["programs"].as_array().unwrap().clone();
    for (before, after) in links_before.iter().zip(&links_after) {
        assert_eq!(before["name"], after["name"]);
        assert_ne!(before["link_id"], after["link_id"], "the new agent attached its own programs");
    }

    // A clean stop keeps interception pinned too, and records the stop.
    assert_eq!(lab.agent.as_mut().unwrap().terminate(), Some(0));
    assert_eq!(lab.agent().records_of("agent.stop").len(), 1);
    assert_eq!(curl(&lab, "alice", &url).code, Some(7));
}

#[test]
fn pinned_maps_of_an_incompatible_build_are_replaced() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new(&["alice"]);
    start_web(&mut lab);
    // What an older build might have left: STATS with 4-byte values.
    let maps = std::path::PathBuf::from(format!("/sys/fs/bpf/{}/maps", lab.tag));
    fs::create_dir_all(&maps).unwrap();
    let stats = maps.join("STATS");
    let made = Command::new("bpftool")
        .args([
            "map",
            "create",
            stats.to_str().unwrap(),
            "type",
            "percpu_array",
            "key",
            "4",
            "value",
            "4",
            "entries",
            "5",
            "name",
            "STATS",
        ])
        .output()
        .expect("bpftool");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));

    let policy = policy(&lab, ALLOW_ALL);
    lab.start_agent(&policy);
    assert!(lab.agent().log().contains("incompatible build"), "{}", lab.agent().log());
    let out = curl(&lab, "alice", &format!("http://{}:{WEB}/hello.txt", lab.target.v4));
    assert!(out.success(), "{out:?}");
    assert_eq!(lab.agent().status()["counters"]["redirected"], 1);
}

#[test]
fn the_agents_own_upstream_connection_is_not_redirected_into_itself() {
    if !privileged() {
        return;
    }
    let lab = web_lab(&["alice"], ALLOW_ALL);
    let url = format!("http://{}:{WEB}/hello.txt", lab.target.v4);
    for _ in 0..3 {
        let out = curl(&lab, "alice", &url);
        assert!(out.success(), "{out:?}");
    }
    lab.agent().wait_for_records("connection.close", 3);
    let counters = &lab.agent().status()["counters"];
    // Each client connect was redirected once; each agent upstream connect
    // to the same protected target went out directly, exempt by cgroup.
    assert_eq!(counters["redirected"], 3, "{counters:#}");
    assert_eq!(counters["exempt"], 3, "{counters:#}");
    assert!(lab.agent().records_of("connection.refused").is_empty());
}

#[test]
fn sighup_reloads_the_policy_and_a_broken_one_changes_nothing() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new(&["alice"]);
    start_web(&mut lab);
    let protecting_web = policy(&lab, ALLOW_ALL);
    lab.start_agent(&protecting_web);
    let v4 = lab.target.v4;
    let url = format!("http://{v4}:{WEB}/hello.txt");
    assert!(curl(&lab, "alice", &url).success());
    assert_eq!(lab.agent().wait_for_records("connection.open", 1).len(), 1);

    lab.agent().reload("[[target]]\nname = \"broken\"\nport = \"not a port\"\n");
    let failed = lab.agent().wait_for_records("policy.reload_failed", 1);
    assert_eq!(failed.len(), 1, "{}", lab.agent().log());
    assert!(failed[0]["detail"]["errors"].as_str().unwrap().contains("test.toml"), "{:#}", failed[0]);
    assert!(curl(&lab, "alice", &url).success());
    assert_eq!(lab.agent().wait_for_records("connection.open", 2).len(), 2, "old policy still in force");

    let without_web = format!(
        "[[target]]\nname = \"pg\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"{v4}\"]\n\n{ALLOW_ALL}"
    );
    lab.agent().reload(&without_web);
    assert_eq!(lab.agent().wait_for_records("policy.reload", 1).len(), 1, "{}", lab.agent().log());
    let direct = curl(&lab, "alice", &url);
    assert!(direct.success(), "{direct:?}");
    thread::sleep(Duration::from_millis(200));
    assert_eq!(lab.agent().records_of("connection.open").len(), 2, "web is no longer intercepted");
    assert_eq!(lab.agent().status()["targets"].as_array().unwrap().len(), 1);
}

#[test]
fn the_running_agent_keeps_only_cap_sys_ptrace() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new(&[]);
    let policy = policy(&lab, ALLOW_ALL);
    lab.start_agent(&policy);
    let status = fs::read_to_string(format!("/proc/{}/status", lab.agent().pid())).unwrap();
    let cap = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {status}"));
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    const CAP_SYS_PTRACE: u64 = 1 << 19;
    assert_eq!(cap("CapEff:"), CAP_SYS_PTRACE, "{status}");
    assert_eq!(cap("CapPrm:"), CAP_SYS_PTRACE);
    assert_eq!(cap("CapBnd:"), CAP_SYS_PTRACE);
    assert_eq!(cap("CapInh:") | cap("CapAmb:"), 0);
    assert!(status.lines().any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1')));
}

#[test]
fn status_shows_live_sessions_only_to_their_owner_or_root() {
    if !privileged() {
        return;
    }
    let lab = web_lab(&["alice", "bob"], ALLOW_ALL);
    let v4 = lab.target.v4;
    let hold = format!(
        "import socket, time\ns = socket.create_connection(('{v4}', {WEB}), timeout=10)\nprint('connected', flush=True)\ntime.sleep(4)\n"
    );
    let holder = thread::scope(|scope| {
        let handle = scope.spawn(|| lab.run_as("alice", "python3", &["-c", &hold]));
        let mut seen = None;
        for _ in 0..60 {
            let sessions = lab.agent().status()["sessions"].as_array().unwrap().clone();
            if let Some(session) = sessions.into_iter().next() {
                seen = Some(session);
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let session = seen.expect("root sees the live session");
        assert_eq!(session["user"], lab.user("alice").name.as_str());
        assert_eq!(session["target"], "web");

        let as_bob = lab.run_as(
            "bob",
            airlock_bin().to_str().unwrap(),
            &["status", "--json", "--socket", lab.agent().config.socket.to_str().unwrap()],
        );
        assert!(as_bob.success(), "{as_bob:?}");
        let bob_view: Value = serde_json::from_str(&as_bob.stdout).unwrap();
        assert_eq!(bob_view["all_sessions"], false);
        assert_eq!(bob_view["sessions"].as_array().unwrap().len(), 0, "bob must not see alice's session");

        let as_alice = lab.run_as(
            "alice",
            airlock_bin().to_str().unwrap(),
            &["status", "--json", "--socket", lab.agent().config.socket.to_str().unwrap()],
        );
        let alice_view: Value = serde_json::from_str(&as_alice.stdout).unwrap();
        assert_eq!(alice_view["sessions"].as_array().unwrap().len(), 1, "alice sees her own session");
        handle.join().unwrap()
    });
    assert!(holder.success(), "{holder:?}");
}

/// Programs attached at the lab cgroup, counted by the kernel (bpftool), not by the agent.
fn attached_program_count(lab: &Lab) -> usize {
    let out = Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(&lab.cgroups.root)
        .output()
        .expect("bpftool (installed by cargo xtask setup)");
    assert!(out.status.success(), "bpftool: {}", String::from_utf8_lossy(&out.stderr));
    let attached: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    attached.len()
}

/// A command line is the connecting user's to write, and the agent reads
/// and redacts it as root for every connection: none may break that. This
/// one once made the redactor slice inside U+0085 (whitespace, two bytes)
/// and panic.
#[test]
fn a_hostile_command_line_is_recorded_redacted_and_breaks_nothing() {
    if !privileged() {
        return;
    }
    let lab = web_lab(&["alice"], ALLOW_ALL);
    let v4 = lab.target.v4;
    let url = format!("http://{v4}:{WEB}/hello.txt");
    let secret = "tok3n-never-in-the-log";
    let name = format!("curl\u{85}https://a.invalid/x?token={secret}");
    // `exec -a` makes the program's argv[0] whatever the user wants.
    let script = r#"exec -a "$0" curl -sS --max-time 10 "$1""#;
    let hostile = lab.run_as("alice", "bash", &["-c", script, &name, &url]);
    assert!(hostile.success(), "{hostile:?}\n{}", lab.agent().log());
    assert_eq!(hostile.stdout, "hello from the target\n");
    let opens = lab.agent().wait_for_records("connection.open", 1);
    let open = record_of_pid(&opens, hostile.pid);
    assert_eq!(open["process"]["cmdline"][0], format!("curl\u{85}https://a.invalid/x?token=***"), "{open}");

    // The agent serves the next connection as before.
    let next = curl(&lab, "alice", &url);
    assert!(next.success(), "{next:?}\n{}", lab.agent().log());
    lab.agent().wait_for_records("connection.open", 2);
    assert!(!lab.agent().log().contains(secret), "the secret reached the agent's log");
    let audit = serde_json::to_string(&lab.agent().audit_records()).unwrap();
    assert!(!audit.contains(secret), "the secret reached the audit log");
}
