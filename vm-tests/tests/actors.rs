//! Actors end to end: the same person, through the eBPF path, with real
//! psql against a just-in-time PostgreSQL target, once on their own and
//! once through a stand-in "coding agent" (a Node.js script and a Python
//! script that run the command they are given, as agents run tools), and
//! through `airlock run --actor`. The person keeps their rights; the agent
//! gets the narrower ones policy names it for: masked answers, writes held
//! for approval, and no access for someone the actor rule is not for.

use std::{fs, path::PathBuf};

use airlock_vm_tests::{CommandOutput, Lab, LoginSession, TargetHost, privileged, set_mode};
use serde_json::Value;

const SEED: &str = "CREATE TABLE customers (id int PRIMARY KEY, name text, email text);
INSERT INTO customers VALUES (1, 'Ann Lee', 'ann.lee@example.com'), (2, 'Bo Chan', 'bo@example.com');";

const NODE_AGENT: &str = "// A stand-in coding agent: runs the tool it is given, as agents do.
const { spawnSync } = require('child_process');
const [tool, ...args] = process.argv.slice(2);
const run = spawnSync(tool, args, { stdio: 'inherit' });
process.exit(run.status === null ? 1 : run.status);
";

const PYTHON_AGENT: &str = "# A stand-in coding agent: runs the tool it is given, as agents do.
import subprocess, sys
sys.exit(subprocess.run(sys.argv[1:]).returncode)
";

struct ActorLab {
    lab: Lab,
    node_agent: PathBuf,
    python_agent: PathBuf,
    cli: PathBuf,
}

/// alice may use the database herself, unmasked (she is exempt), and
/// through her coding agent, masked, its writes held for bob; bob may use
/// it himself only.
fn actor_lab() -> ActorLab {
    let mut lab = Lab::new(&["alice", "bob"]);
    let pg_dir = lab.dir.path().join("pg");
    let data = lab.target.start_postgres_auth(&pg_dir, &[], "scram-sha-256");
    let admin_file = TargetHost::jit_admin(&data, lab.dir.path(), "admin-secret-5813");
    TargetHost::superuser_sql(&data, SEED);
    let v4 = lab.target.v4;
    let (alice, bob) = (lab.user("alice").name.clone(), lab.user("bob").name.clone());
    lab.start_agent(&format!(
        r#"
[[actor]]
name = "coding-agent"
description = "AI coding agents, and what they run"
scripts = ["*/coding-agent.js", "*/coding_agent.py"]
run_by_users = ["*"]
taint_session = true

[[actor]]
name = "ci-bot"
run_by_users = ["*"]

[[actor]]
name = "sandboxed"
run_by_users = ["*"]
confine = true

[[target]]
name = "pg"
protocol = "postgres"
port = 5432
addresses = ["{v4}"]

[[target.access]]
action = "allow"
users = ["{alice}"]
actors = ["coding-agent", "sandboxed"]

[[target.access]]
action = "allow"
users = ["{alice}", "{bob}"]

[target.credentials]
admin_file = "{admin}"

[[target.credentials.role]]
name = "app"
grants = ["pg_read_all_data", "pg_write_all_data"]
users = ["*"]

[target.masking]
detectors = ["email"]
exempt_users = ["{alice}"]

[[target.guardrail]]
classes = ["write", "delete_without_where", "update_without_where"]
actors = ["coding-agent"]
action = "approve"
reason = "writes by coding agents wait for a person"

[target.approvals]
users = ["{bob}"]
timeout_seconds = 30
launcher_approves = true
"#,
        admin = admin_file.display()
    ));
    let node_agent = lab.dir.path().join("coding-agent.js");
    let python_agent = lab.dir.path().join("coding_agent.py");
    fs::write(&node_agent, NODE_AGENT).unwrap();
    fs::write(&python_agent, PYTHON_AGENT).unwrap();
    for script in [&node_agent, &python_agent] {
        set_mode(script, 0o644);
    }
    let cli = lab.cli();
    ActorLab { lab, node_agent, python_agent, cli }
}

impl ActorLab {
    fn psql_args(&self, sql: &str) -> Vec<String> {
        let host = self.lab.target.v4.to_string();
        ["psql", "-h", &host, "-U", "app", "-d", "postgres", "-X", "-At", "-w", "-c", sql].map(str::to_owned).to_vec()
    }

    /// psql run by `user` through `wrapper` (the program and arguments
    /// before psql's own), or directly when `wrapper` is empty.
    fn psql(&self, user: &str, wrapper: &[&str], sql: &str) -> CommandOutput {
        let psql = self.psql_args(sql);
        let mut args: Vec<&str> = wrapper.iter().skip(1).copied().collect();
        args.extend(psql.iter().map(String::as_str));
        match wrapper.first() {
            Some(program) => self.lab.run_as(user, program, &args),
            None => self.lab.run_as(user, "psql", &args[1..]),
        }
    }

    /// The CLI as `user`: `args` start with the subcommand, and the lab's
    /// control socket goes right after it (before any `--`).
    fn airlock(&self, user: &str, args: &[&str]) -> CommandOutput {
        self.lab.run_as(user, self.cli.to_str().unwrap(), &self.cli_args(args))
    }

    fn cli_args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let socket = self.lab.agent().config.socket.to_str().unwrap();
        let mut full = args.to_vec();
        full.splice(1..1, ["--socket", socket]);
        full
    }

    /// Waits (bounded) for a request bob may decide.
    fn pending(&self) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let out = self.airlock("bob", &["approvals", "--json"]);
            assert!(out.success(), "{out:?}");
            let list: Vec<Value> = serde_json::from_str(&out.stdout).expect("JSON list");
            if let Some(first) = list.into_iter().next() {
                return first;
            }
            assert!(std::time::Instant::now() < deadline, "no request appeared\n{}", self.lab.agent().log());
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

#[test]
fn a_persons_coding_agent_gets_narrower_rights_than_the_person() {
    if !privileged() {
        return;
    }
    let t = actor_lab();
    let node = ["node", t.node_agent.to_str().unwrap()];
    let python = ["/usr/bin/python3", t.python_agent.to_str().unwrap()];
    let select = "select email from customers order by id";

    // alice herself: unmasked, and her writes run.
    let own = t.psql("alice", &[], select);
    assert!(own.success(), "{own:?}\n{}", t.lab.agent().log());
    assert_eq!(own.stdout, "ann.lee@example.com\nbo@example.com\n");
    let write = t.psql("alice", &[], "insert into customers values (3, 'Cy', 'cy@example.com')");
    assert!(write.success(), "{write:?}");

    // Her coding agent, by Node.js and by Python: masked.
    for wrapper in [&node[..], &python[..]] {
        let read = t.psql("alice", wrapper, select);
        assert!(read.success(), "{wrapper:?}: {read:?}\n{}", t.lab.agent().log());
        assert!(!read.stdout.contains("@example.com"), "{wrapper:?} saw the emails: {read:?}");
        assert_eq!(read.stdout.lines().count(), 3, "{read:?}");
    }
    let opened = t.lab.agent().wait_for_records("connection.open", 4);
    let actor = |record: &Value| record["identity"]["actor"].clone();
    assert!(actor(&opened[0]).is_null() && actor(&opened[1]).is_null(), "alice's own sessions: {opened:?}");
    let by_node = actor(&opened[2]);
    assert_eq!(by_node["name"], "coding-agent", "{by_node}");
    assert_eq!(by_node["matched_by"], format!("script {}", t.node_agent.display()));
    let chain: Vec<&str> = by_node["chain"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert!(chain[0].starts_with("psql[") && chain.last().unwrap().starts_with("node["), "{chain:?}");
    assert_eq!(actor(&opened[3])["matched_by"], format!("script {}", t.python_agent.display()));

    // Its write waits for bob, who sees that an agent asks; denied, it does not run.
    std::thread::scope(|s| {
        let held = s.spawn(|| t.psql("alice", &node, "delete from customers where id = 3"));
        let request = t.pending();
        assert_eq!(request["actor"]["name"], "coding-agent", "{request}");
        let id = request["id"].as_str().unwrap();
        let denied = t.airlock("bob", &["deny", id, "--reason", "not from an agent"]);
        assert!(denied.success(), "{denied:?}");
        let held = held.join().unwrap();
        assert!(!held.success() && held.stderr.contains("not from an agent"), "{held:?}");
    });
    let count = t.psql("alice", &[], "select count(*) from customers");
    assert_eq!(count.stdout, "3\n", "the held delete never ran");

    // launcher_approves: alice decides her agent's write herself, but not from inside the agent.
    std::thread::scope(|s| {
        let held = s.spawn(|| t.psql("alice", &node, "update customers set name = 'Cy Young' where id = 3"));
        let id = t.pending()["id"].as_str().unwrap().to_owned();
        let mut by_agent = vec!["node", t.node_agent.to_str().unwrap(), t.cli.to_str().unwrap()];
        by_agent.extend(t.cli_args(&["approve", &id]));
        let refused = t.lab.run_as("alice", by_agent[0], &by_agent[1..]);
        assert!(!refused.success() && refused.stderr.contains("cannot be decided by an actor"), "{refused:?}");
        let approved = t.airlock("alice", &["approve", &id]);
        assert!(approved.success(), "{approved:?}");
        let held = held.join().unwrap();
        assert!(held.success(), "{held:?}");
    });
    let name = t.psql("alice", &[], "select name from customers where id = 3");
    assert_eq!(name.stdout, "Cy Young\n");

    // The actor rule is alice's: bob's own psql works, his agent gets nothing.
    assert!(t.psql("bob", &[], "select 1").success());
    let bobs_agent = t.psql("bob", &node, "select 1");
    assert!(!bobs_agent.success(), "{bobs_agent:?}");
    let denied = t.lab.agent().wait_for_records("connection.denied", 1);
    assert_eq!(actor(&denied[0])["name"], "coding-agent", "{denied:?}");

    // `airlock run --actor`: the command and what it starts are the actor's,
    // whatever they are called.
    let mut run = vec!["run", "--actor", "coding-agent", "--"];
    let psql = t.psql_args(select);
    run.extend(psql.iter().map(String::as_str));
    let labelled = t.airlock("alice", &run);
    assert!(labelled.success(), "{labelled:?}\n{}", t.lab.agent().log());
    assert!(!labelled.stdout.contains("@example.com"), "{labelled:?}");
    let last = t.lab.agent().records_of("connection.open").pop().unwrap();
    let matched = actor(&last)["matched_by"].as_str().unwrap().to_owned();
    assert!(
        matched.starts_with("airlock run (cgroup /") && matched.contains("/airlock-actors/coding-agent+"),
        "{matched}"
    );
    let started = t.lab.agent().wait_for_records("actor.run", 1);
    assert_eq!(started[0]["detail"]["actor"], "coding-agent");

    // An actor cannot relabel what it runs (the agent asking for another label).
    let mut relabel = vec!["node", t.node_agent.to_str().unwrap(), t.cli.to_str().unwrap()];
    let as_bot = ["run", "--actor", "ci-bot", "--", "true"];
    relabel.extend(t.cli_args(&as_bot));
    let refused = t.lab.run_as("alice", relabel[0], &relabel[1..]);
    assert!(!refused.success() && refused.stderr.contains("already runs as actor \"coding-agent\""), "{refused:?}");

    // Security teams find what agents did.
    let audit_dir = t.lab.agent().config.audit_dir.display().to_string();
    let query = std::process::Command::new(airlock_vm_tests::agent::airlock_bin())
        .args(["audit", "query", "--dir", &audit_dir, "--actor", "coding-agent", "--kind", "connection.open", "--json"])
        .output()
        .unwrap();
    let found: Vec<Value> =
        String::from_utf8_lossy(&query.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(found.len() >= 3, "node, python, airlock run, the held delete: {found:?}");
    assert!(found.iter().all(|r| r["identity"]["actor"]["name"] == "coding-agent"), "{found:?}");

    // Replay says whose agent it was.
    let session = found[0]["session"].as_str().unwrap();
    let replay = std::process::Command::new(airlock_vm_tests::agent::airlock_bin())
        .args(["replay", session, "--no-wait", "--dir", &audit_dir])
        .output()
        .unwrap();
    let header = String::from_utf8_lossy(&replay.stdout).lines().next().unwrap_or_default().to_owned();
    assert!(header.contains(&format!("{}'s coding-agent (script ", t.lab.user("alice").name)), "{header}");

    // Nobody gets to start an actor policy does not define.
    let unknown = t.airlock("alice", &["run", "--actor", "ghost", "--", "true"]);
    assert!(!unknown.success() && unknown.stderr.contains("no actor \"ghost\""), "{unknown:?}");
}

/// Waits (bounded) for a file a detached command writes, and reads it.
fn written(path: &std::path::Path) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Ok(text) = fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(std::time::Instant::now() < deadline, "{} was not written", path.display());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn what_an_agent_hands_to_a_tmux_server_in_its_login_session_stays_the_agents() {
    if !privileged() {
        return;
    }
    let mut t = actor_lab();
    let dir = t.lab.dir.path().join("sessions/alice");
    let mut session = LoginSession::open(t.lab.user("alice"), &t.lab.cgroups.clients, &dir);
    let socket = dir.join("tmux.sock");
    let tmux = format!("TERM=xterm tmux -S '{}'", socket.display());
    // A tmux server alice started before any agent ran: outside every agent's process tree.
    let started = session.run(&format!("{tmux} new-session -d -s work"));
    assert!(started.success(), "{started:?}");
    let psql =
        t.psql_args("select email from customers order by id").iter().map(|a| format!("'{a}'")).collect::<Vec<_>>();
    let in_tmux = |name: &str| format!("{tmux} new-window -d \"{} > {}/{name} 2>&1\"", psql.join(" "), dir.display());

    // Before: what alice runs in tmux is hers, unmasked.
    assert!(session.run(&in_tmux("before.txt")).success());
    assert_eq!(written(&dir.join("before.txt")), "ann.lee@example.com\nbo@example.com\n");

    // Her coding agent runs in the session (taint_session), then hands psql to the tmux server.
    let node = format!("node '{}' {}", t.node_agent.display(), psql.join(" "));
    let agent = session.run(&node);
    assert!(agent.success() && !agent.stdout.contains("@example.com"), "{agent:?}\n{}", t.lab.agent().log());
    assert!(session.run(&in_tmux("after.txt")).success());
    let after = written(&dir.join("after.txt"));
    assert!(!after.contains("@example.com") && after.lines().count() == 2, "the tmux escape is closed: {after}");
    let last = t.lab.agent().records_of("connection.open").pop().unwrap();
    let actor = &last["identity"]["actor"];
    assert_eq!(actor["name"], "coding-agent", "{last}");
    assert!(actor["matched_by"].as_str().unwrap().starts_with("login session "), "{actor}");
    assert!(actor["chain"][0].as_str().unwrap().starts_with("psql["), "{actor}");

    // Restarting the agent is no way out: the taint was saved.
    t.lab.agent.as_mut().unwrap().restart();
    assert!(session.run(&in_tmux("restarted.txt")).success());
    let restarted = written(&dir.join("restarted.txt"));
    assert!(!restarted.contains("@example.com") && restarted.lines().count() == 2, "{restarted}");

    // So is a detached job started from the session (setsid keeps the login session).
    let detached = format!("setsid nohup {} > {}/detached.txt 2>&1 &", psql.join(" "), dir.display());
    assert!(session.run(&detached).success());
    let detached = written(&dir.join("detached.txt"));
    assert!(!detached.contains("@example.com") && detached.lines().count() == 2, "{detached}");

    // Alice in another login session is still herself.
    let elsewhere = t.psql("alice", &[], "select email from customers where id = 1");
    assert_eq!(elsewhere.stdout, "ann.lee@example.com\n", "{elsewhere:?}");
    let _ = session.run(&format!("{tmux} kill-server"));
}

/// Removes a directory the test made outside its lab when dropped.
struct RemovedDir(PathBuf);

impl Drop for RemovedDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
        // The shared parent goes with the last lab that used it.
        let _ = self.0.parent().map(fs::remove_dir);
    }
}

/// Kills a process the test started as root when dropped.
struct RootProcess(std::process::Child);

impl Drop for RootProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits (bounded) until `check` holds.
fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Each route by which an agent could hand a command to something outside
/// its own run that acts as the person, tried by alice herself (it works:
/// the route is real) and then from a confined `airlock run` (refused,
/// and nothing ran). What the run starts itself keeps working.
#[test]
fn a_confined_run_reaches_nothing_of_the_persons_outside_it() {
    if !privileged() {
        return;
    }
    let mut t = actor_lab();
    let alice = t.lab.user("alice").name.clone();
    // Outside /tmp, which a confined run gets a fresh copy of.
    let home = RemovedDir(PathBuf::from(format!("/var/lib/airlock-vm-tests/{}", t.lab.tag)));
    let home = &home.0;
    fs::create_dir_all(home).unwrap();
    set_mode(home.parent().unwrap(), 0o755);
    airlock_vm_tests::netns::sh("chown", &[&alice, home.to_str().unwrap()]);
    let at = |name: &str| home.join(name).display().to_string();
    let confined =
        |t: &ActorLab, script: &str| t.airlock("alice", &["run", "--actor", "sandboxed", "--", "sh", "-c", script]);

    // The gate itself is reachable, as the actor.
    let psql = t.psql_args("select count(*) from customers").iter().map(|a| format!("'{a}'")).collect::<Vec<_>>();
    let through_gate = confined(&t, &psql.join(" "));
    assert_eq!(through_gate.stdout, "2\n", "{through_gate:?}\n{}", t.lab.agent().log());
    let run = t.lab.agent().records_of("actor.run").pop().unwrap();
    assert_eq!((run["detail"]["actor"].as_str(), run["detail"]["confined"].as_bool()), (Some("sandboxed"), Some(true)));
    let opened = t.lab.agent().records_of("connection.open").pop().unwrap();
    assert_eq!(opened["identity"]["actor"]["name"], "sandboxed", "{opened}");

    // A tmux server alice runs (and, the same way, screen): refused; one the run starts: its own.
    let tmux = format!("TERM=xterm tmux -S {}", at("tmux.sock"));
    assert!(t.lab.run_as("alice", "sh", &["-c", &format!("{tmux} new-session -d -s work")]).success());
    let outside = t.lab.run_as("alice", "sh", &["-c", &format!("{tmux} new-window -d 'touch {}'", at("by-alice"))]);
    assert!(outside.success(), "{outside:?}");
    eventually("alice's tmux ran her command", || home.join("by-alice").exists());
    let escape = confined(&t, &format!("{tmux} new-window -d 'touch {}'", at("by-agent")));
    assert!(!escape.success(), "{escape:?}");
    let own = format!("TERM=xterm tmux -S {}", at("own.sock"));
    let inside = confined(&t, &format!("{own} new-session -d -s mine && {own} list-sessions; {own} kill-server"));
    assert!(inside.stdout.starts_with("mine:"), "the run's own tmux works: {inside:?}");
    let _ = t.lab.run_as("alice", "sh", &["-c", &format!("{tmux} kill-server")]);

    // Her session bus (what `systemd-run --user` and `systemctl --user` talk to).
    let bus = at("bus");
    let _dbus =
        t.lab.spawn_as("alice", "dbus-daemon", &["--session", "--nofork", &format!("--address=unix:path={bus}")]);
    eventually("the session bus listens", || home.join("bus").exists());
    let list = format!(
        "dbus-send --bus=unix:path={bus} --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus.ListNames"
    );
    assert!(t.lab.run_as("alice", "sh", &["-c", &list]).success());
    let escape = confined(&t, &list);
    assert!(!escape.success(), "{escape:?}");

    // Her ssh-agent: the keys it holds open every host she can reach.
    let agent_socket = at("ssh-agent.sock");
    let _ssh_agent = t.lab.spawn_as("alice", "ssh-agent", &["-D", "-a", &agent_socket]);
    eventually("ssh-agent listens", || home.join("ssh-agent.sock").exists());
    let list_keys = format!("SSH_AUTH_SOCK={agent_socket} ssh-add -l");
    assert_eq!(t.lab.run_as("alice", "sh", &["-c", &list_keys]).code, Some(1), "reachable, no keys yet");
    let escape = confined(&t, &list_keys);
    assert_eq!(escape.code, Some(2), "{escape:?}");

    // `ssh localhost`: a real sshd on loopback that lets alice in with her key.
    let key = at("id_ed25519");
    assert!(t.lab.run_as("alice", "ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-f", &key]).success());
    let sshd_dir = t.lab.dir.path().join("local-sshd");
    fs::create_dir_all(&sshd_dir).unwrap();
    fs::create_dir_all("/run/sshd").unwrap();
    let host_key = sshd_dir.join("host_key");
    airlock_vm_tests::netns::sh("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-f", host_key.to_str().unwrap()]);
    fs::copy(format!("{key}.pub"), sshd_dir.join("authorized_keys")).unwrap();
    airlock_vm_tests::netns::sh("usermod", &["-p", "*", &alice]);
    let port = free_port();
    let config = sshd_dir.join("sshd_config");
    fs::write(
        &config,
        format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nAuthorizedKeysFile {}\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nPidFile none\nStrictModes no\n",
            host_key.display(),
            sshd_dir.join("authorized_keys").display()
        ),
    )
    .unwrap();
    let _sshd = RootProcess(
        std::process::Command::new("/usr/sbin/sshd")
            .args(["-D", "-E", sshd_dir.join("log").to_str().unwrap(), "-f", config.to_str().unwrap()])
            .spawn()
            .expect("sshd"),
    );
    eventually("sshd listens", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let ssh = format!(
        "ssh -i {key} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -p {port} {alice}@127.0.0.1"
    );
    let outside = t.lab.run_as("alice", "sh", &["-c", &format!("{ssh} echo ran-as-alice")]);
    assert_eq!(outside.stdout, "ran-as-alice\n", "{outside:?}");
    let escape = confined(&t, &format!("{ssh} touch {}", at("by-agent-over-ssh")));
    assert!(!escape.success() && escape.stderr.contains("not permitted"), "{escape:?}");

    // Any service on the host's own addresses: her dev server, on loopback and on the host's address.
    let web_port = free_port().to_string();
    let _web = t.lab.spawn_as(
        "alice",
        "python3",
        &["-m", "http.server", &web_port, "--bind", "0.0.0.0", "--directory", &at("")],
    );
    let host = {
        let [a, b, c, _] = t.lab.target.v4.octets();
        std::net::Ipv4Addr::new(a, b, c, 1)
    };
    eventually("the dev server listens", || {
        std::net::TcpStream::connect(("127.0.0.1", web_port.parse().unwrap())).is_ok()
    });
    for addr in ["127.0.0.1".to_owned(), host.to_string()] {
        let curl = format!("curl -sS -o /dev/null -w '%{{http_code}}' http://{addr}:{web_port}/");
        assert_eq!(t.lab.run_as("alice", "sh", &["-c", &curl]).stdout, "200", "{addr}");
        let escape = confined(&t, &curl);
        assert_eq!(escape.code, Some(7), "{addr}: {escape:?}");
    }

    // `at` (and `crontab`, `sudo`: setuid or setgid helpers) gains no privilege in the run.
    let at_job = format!("echo 'touch {}' | at now + 1 hour", at("by-at"));
    assert!(t.lab.run_as("alice", "sh", &["-c", &at_job]).success(), "alice may queue at jobs");
    let escape = confined(&t, &at_job);
    assert!(!escape.success(), "{escape:?}");
    let queued = t.lab.run_as("alice", "atq", &[]);
    assert_eq!(queued.stdout.lines().count(), 1, "only alice's own job: {queued:?}");
    let _ = t.lab.run_as("alice", "sh", &["-c", "atrm $(atq | cut -f1)"]);

    // Her other processes: not traced, not read (their environment holds her tokens).
    let shell = t.lab.spawn_as("alice", "sleep", &["60"]);
    let environ = format!("cat /proc/{}/environ > /dev/null", shell.pid());
    assert!(t.lab.run_as("alice", "sh", &["-c", &environ]).success());
    let escape = confined(&t, &environ);
    assert!(!escape.success() && escape.stderr.contains("Permission denied"), "{escape:?}");
    let own = confined(&t, "sleep 5 & cat /proc/$!/environ > /dev/null && echo own-ok; kill $!");
    assert_eq!(own.stdout, "own-ok\n", "the run's own processes: {own:?}");

    // Nor can it lift the hiding from a namespace of its own.
    let lift = confined(&t, &format!("unshare -Urm sh -c 'umount {agent_socket}; {list_keys}'"));
    assert_eq!(lift.code, Some(2), "{lift:?}");

    // Started from inside a hidden directory, the run does not keep a way in.
    let from_tmp = format!(
        "cd {} && {} run --socket {} --actor sandboxed -- sh -c 'pwd; ls'",
        t.lab.dir.path().display(),
        t.cli.display(),
        t.lab.agent().config.socket.display()
    );
    let inside = t.lab.run_as("alice", "sh", &["-c", &from_tmp]);
    assert!(inside.stderr.contains("is hidden from this confined run"), "{inside:?}");
    assert!(!inside.stdout.contains("policies"), "the lab directory under /tmp is not reachable: {inside:?}");

    for marker in ["by-agent", "by-agent-over-ssh", "by-at"] {
        assert!(!home.join(marker).exists(), "{marker}: something outside the run ran the agent's command");
    }
    let status = t.airlock("alice", &["status", "--json"]);
    let refused =
        serde_json::from_str::<Value>(&status.stdout).ok().and_then(|s| s["counters"]["confined_refused"].as_u64());
    assert!(refused.is_some_and(|n| n >= 3), "ssh and the dev server twice: {status:?}");
    drop(shell);
    t.lab.agent.take();
}
