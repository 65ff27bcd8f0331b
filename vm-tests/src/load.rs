//! Load and the agent's footprint under it, for the soak (`airlock-bench
//! soak`, `cargo xtask bench --soak`) and its short vm-test.
//!
//! One lab: PostgreSQL 15 on the target host, observed on its IPv4 address
//! (target `pg`) and logged in just in time on its IPv6 address (target
//! `pg-jit`, the embedded engine); a real sshd behind an SSH target; an echo
//! server behind a plain TCP target. A load cycle ramps up, as the lab's test
//! user: held `psql` sessions on both PostgreSQL targets, `ssh … cat`
//! sessions, one client process holding many TCP relays, and, once those
//! are up, `pgbench -C` (a new connection per transaction) on both
//! PostgreSQL targets. Every client checks its session at the end (psql
//! runs a query, ssh's `cat` ends cleanly, every TCP relay echoes), and any
//! client failure is an error. The agent's RSS, open fds and CPU time are
//! sampled idle before, at peak and idle after.

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use crate::{Lab, TargetHost, process::command_as, sshd};

/// The plain TCP target's port (the helper's echo server).
pub const ECHO_PORT: u16 = 9000;

/// How much load one cycle puts on the agent.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// Held psql sessions, half on each PostgreSQL target.
    pub held_psql: usize,
    /// pgbench -C clients, half on each PostgreSQL target. Each spends part
    /// of its time between connections: fewer are connected at any moment.
    pub pgbench_clients: usize,
    /// How long pgbench runs (the load's plateau).
    pub pgbench_seconds: u32,
    /// Concurrent ssh sessions.
    pub ssh: usize,
    /// Concurrent TCP relays.
    pub tcp: usize,
}

impl Scale {
    /// Concurrent PostgreSQL sessions at the plateau.
    pub fn postgres(&self) -> usize {
        self.held_psql + self.pgbench_clients
    }

    /// Every concurrent session at the plateau.
    pub fn sessions(&self) -> usize {
        self.postgres() + self.ssh + self.tcp
    }
}

/// The agent's footprint at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Resident set, KiB.
    pub rss_kb: u64,
    /// Of that, anonymous memory (heap, stacks), KiB; the rest is the
    /// binary's and libraries' pages.
    pub anon_kb: u64,
    /// Open file descriptors.
    pub fds: usize,
    /// CPU time (user + system) used since it started.
    pub cpu: Duration,
}

impl Sample {
    /// Resident set in MiB.
    pub fn rss_mb(&self) -> f64 {
        self.rss_kb as f64 / 1024.0
    }

    /// Anonymous resident memory in MiB.
    pub fn anon_mb(&self) -> f64 {
        self.anon_kb as f64 / 1024.0
    }
}

/// The footprint of process `pid` now.
pub fn sample(pid: u32) -> Sample {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status.lines().find_map(|l| l.strip_prefix(name)?.split_whitespace().next()?.parse().ok()).unwrap_or(0)
    };
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    Sample { rss_kb: field("VmRSS:"), anon_kb: field("RssAnon:"), fds, cpu: crate::process::cpu_time(pid) }
}

/// What one load cycle did and cost.
#[derive(Debug, Default)]
pub struct Cycle {
    /// The agent before the cycle.
    pub idle_before: Sample,
    /// Highest RSS and fd count seen while loaded (sampled every 100 ms).
    pub peak: Sample,
    /// The agent once every session ended and it settled.
    pub idle_after: Sample,
    /// From the first client started until every held session was up.
    pub ramp: Duration,
    /// Most concurrent PostgreSQL sessions the agent had, both targets (sampled).
    pub peak_postgres: usize,
    /// Most concurrent client backends PostgreSQL had (sampled).
    pub peak_backends: usize,
    /// Most live sessions the agent reported (sampled).
    pub peak_sessions: usize,
    /// Connections pgbench -C made (one per transaction).
    pub pgbench_connections: u64,
    /// Wall time of the loaded phase, and the agent's CPU time in it.
    pub loaded_wall: Duration,
    /// The agent's CPU time while loaded.
    pub loaded_cpu: Duration,
    /// Every client failure, one line each.
    pub errors: Vec<String>,
}

/// The soak's lab.
pub struct SoakLab {
    /// The lab (agent, target host, users `soak` and `deploy`).
    pub lab: Lab,
    /// PostgreSQL's data directory.
    pub data: PathBuf,
    known_hosts: PathBuf,
    helper: PathBuf,
    script: PathBuf,
}

/// Raises this process's soft RLIMIT_NOFILE (and, as root, the hard one) to
/// `want`: the agent and the clients it starts inherit it. systemd gives the
/// agent 1048576 (systemd/airlock.service).
pub fn raise_nofile(want: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        let raised = libc::rlimit { rlim_cur: want.max(limit.rlim_cur), rlim_max: want.max(limit.rlim_max) };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            let soft = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
        }
    }
}

impl SoakLab {
    /// Builds the lab. `helper` is the `airlock-bench` binary: its `echo`
    /// role serves the TCP target, its `tcp-hold` role holds the relays.
    /// `max_connections` is PostgreSQL's (the plateau plus headroom).
    pub fn new(helper: &Path, max_connections: usize) -> Self {
        raise_nofile(65_536);
        let mut lab = Lab::new(&["soak", "deploy"]);
        let pg_dir = lab.dir.path().join("pg");
        let max = format!("max_connections={max_connections}");
        let data = lab.target.start_postgres_with(&pg_dir, &[&max, "shared_buffers=128MB"]);
        let admin = TargetHost::jit_admin(&data, lab.dir.path(), "soak-admin-password");
        let helper_s = helper.to_str().expect("utf-8 path").to_owned();
        lab.target.spawn(&helper_s, &["echo", &ECHO_PORT.to_string()]);
        lab.target.wait_for_port(lab.target.v4.into(), ECHO_PORT);
        let (v4, v6) = (lab.target.v4, lab.target.v6);
        let (soak, deploy) = (lab.user("soak").name.clone(), lab.user("deploy").name.clone());
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

[[target]]
name = "pg-jit"
protocol = "postgres"
port = 5432
addresses = ["{v6}"]

[[target.access]]
action = "allow"
users = ["*"]

[target.credentials]
admin_file = "{admin}"
tls = "disable"

[[target.credentials.role]]
name = "reader"
grants = ["pg_read_all_data"]
users = ["*"]

[[target]]
name = "ssh"
protocol = "ssh"
port = 22
addresses = ["{v4}"]

[[target.access]]
action = "allow"
users = ["*"]

[target.ssh]

[[target.ssh.principal]]
name = "{deploy}"
users = ["{soak}"]

[[target]]
name = "echo"
protocol = "tcp"
port = {ECHO_PORT}
addresses = ["{v4}"]

[[target.access]]
action = "allow"
users = ["*"]
"#,
            admin = admin.display()
        ));
        sshd::start(&mut lab, "deploy");
        let known_hosts = sshd::known_hosts(&lab);
        let script = lab.dir.path().join("select1.sql");
        fs::write(&script, "SELECT 1;\n").expect("pgbench script");
        crate::set_mode(&script, 0o644);
        Self { lab, data, known_hosts, helper: helper.to_owned(), script }
    }

    /// The agent's pid.
    pub fn agent_pid(&self) -> u32 {
        self.lab.agent().pid()
    }

    /// Client backends PostgreSQL has now (the sampling connection aside).
    pub fn postgres_backends(&self) -> usize {
        let sql = "SELECT count(*) - 1 FROM pg_stat_activity WHERE backend_type = 'client backend'";
        TargetHost::superuser_sql(&self.data, sql).trim().parse().unwrap_or(0)
    }

    /// Live sessions the agent reports, per target name. Panics, with the
    /// agent's last words, if the agent is gone.
    pub fn live_sessions(&self) -> std::collections::BTreeMap<String, usize> {
        let agent = self.lab.agent();
        let out = std::process::Command::new(crate::airlock_bin())
            .args(["status", "--json", "--socket"])
            .arg(&agent.config.socket)
            .output()
            .expect("run airlock status");
        if !out.status.success() {
            // Killed but not yet reaped, it is a zombie.
            let stat = fs::read_to_string(format!("/proc/{}/stat", agent.pid())).unwrap_or_default();
            let alive = stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z'));
            let log = agent.log();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            panic!(
                "airlock status failed ({}); the agent is {}; its log ends:\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                if alive { "running" } else { "gone (crashed, or killed by another run's sweep of labs)" },
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status is JSON");
        let mut by_target = std::collections::BTreeMap::new();
        for session in status["sessions"].as_array().into_iter().flatten() {
            *by_target.entry(session["target"].as_str().unwrap_or("-").to_owned()).or_default() += 1;
        }
        by_target
    }

    /// Waits (bounded by `timeout`) until the agent has no live session.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.live_sessions().is_empty() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        false
    }

    /// One load cycle at `scale`. `progress` gets a line at each step.
    pub fn cycle(&self, scale: Scale, progress: &mut dyn FnMut(&str)) -> Cycle {
        let pid = self.agent_pid();
        let mut cycle = Cycle { idle_before: sample(pid), ..Cycle::default() };
        let sampler = Sampler::start(pid);
        let started = Instant::now();
        let mut errors = Vec::new();

        // TCP relays: one client process holding them all.
        let tcp = self.spawn_tcp_hold(scale.tcp);
        // SSH sessions: `cat` until stdin closes.
        let mut ssh = Vec::new();
        for _ in 0..scale.ssh {
            ssh.push(self.spawn_ssh());
        }
        // Held psql sessions, half observed, half just in time.
        let mut psql = Vec::new();
        for i in 0..scale.held_psql {
            psql.push(self.spawn_psql(i % 2 == 1));
        }
        let tcp = match tcp.wait_open(Duration::from_secs(60)) {
            Ok(tcp) => Some(tcp),
            Err(error) => {
                errors.push(format!("tcp-hold: {error}"));
                None
            }
        };
        progress(&format!("  spawned {} psql, {} ssh, {} TCP relays", scale.held_psql, scale.ssh, scale.tcp));

        // Up when PostgreSQL has every held session and the agent every ssh one.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (backends, sessions) = (self.postgres_backends(), self.live_sessions());
            let ssh_up = sessions.get("ssh").copied().unwrap_or(0);
            if backends >= scale.held_psql && ssh_up >= scale.ssh {
                break;
            }
            if Instant::now() > deadline {
                errors.push(format!(
                    "ramp: after 120 s, {backends} of {} held PostgreSQL sessions and {ssh_up} of {} ssh sessions were up",
                    scale.held_psql, scale.ssh
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        cycle.ramp = started.elapsed();
        progress(&format!("  held sessions up after {:.1} s; pgbench -C starts", cycle.ramp.as_secs_f64()));

        // The plateau: pgbench -C on both targets while everything is held.
        let loaded_from = (Instant::now(), crate::process::cpu_time(pid));
        let half = scale.pgbench_clients / 2;
        let benches: Vec<Spawned> = [(false, half), (true, scale.pgbench_clients - half)]
            .into_iter()
            .filter(|(_, clients)| *clients > 0)
            .map(|(jit, clients)| self.spawn_pgbench(jit, clients, scale.pgbench_seconds))
            .collect();
        let plateau_end = Instant::now() + Duration::from_secs(u64::from(scale.pgbench_seconds));
        while Instant::now() < plateau_end {
            cycle.peak_backends = cycle.peak_backends.max(self.postgres_backends());
            let sessions = self.live_sessions();
            let postgres = ["pg", "pg-jit"].iter().filter_map(|t| sessions.get(*t)).sum::<usize>();
            cycle.peak_postgres = cycle.peak_postgres.max(postgres);
            cycle.peak_sessions = cycle.peak_sessions.max(sessions.values().sum());
            std::thread::sleep(Duration::from_millis(300));
        }
        for bench in benches {
            let label = bench.label.clone();
            match bench.finish(Duration::from_secs(60)) {
                Ok(out) => {
                    let count = |prefix: &str| -> Option<u64> {
                        out.lines().find_map(|l| l.trim().strip_prefix(prefix)?.split([' ', '/']).next()?.parse().ok())
                    };
                    cycle.pgbench_connections += count("number of transactions actually processed: ").unwrap_or(0);
                    if let Some(failed) = count("number of failed transactions: ").filter(|n| *n > 0) {
                        errors.push(format!("{label}: {failed} failed transactions"));
                    }
                }
                Err(error) => errors.push(error),
            }
        }
        cycle.loaded_wall = loaded_from.0.elapsed();
        cycle.loaded_cpu = crate::process::cpu_time(pid).saturating_sub(loaded_from.1);
        progress(&format!(
            "  plateau done: at most {} PostgreSQL sessions through the agent ({} backends on the server), {} agent sessions in all; ending the held sessions",
            cycle.peak_postgres, cycle.peak_backends, cycle.peak_sessions
        ));

        // Every held session proves it is still alive, then ends.
        let finish_by = Instant::now() + Duration::from_secs(60);
        let left = || finish_by.saturating_duration_since(Instant::now());
        let mut held: Vec<Spawned> = psql.into_iter().chain(ssh).collect();
        for client in &mut held {
            client.release();
        }
        if let Some(tcp) = tcp {
            match tcp.finish(left()) {
                Ok(out) if out.contains("\"errors\":0") => {}
                Ok(out) => errors.push(format!("tcp-hold: {}", out.trim())),
                Err(error) => errors.push(error),
            }
        }
        for client in held {
            if let Err(error) = client.finish(left()) {
                errors.push(error);
            }
        }
        cycle.peak = sampler.stop();
        if !self.wait_idle(Duration::from_secs(60)) {
            errors.push(format!("sessions still live 60 s after every client ended: {:?}", self.live_sessions()));
        }
        // Just-in-time roles are dropped 5 s after their last session,
        // records are flushed, the agent gives freed memory back (checks
        // every 5 s): then it is idle.
        std::thread::sleep(Duration::from_secs(12));
        cycle.idle_after = sample(pid);
        cycle.errors = errors;
        cycle
    }

    fn command(&self, program: &str, args: &[&str]) -> std::process::Command {
        let mut command = command_as(self.lab.user("soak"), &self.lab.cgroups.clients, program, args);
        command.env("PGCONNECT_TIMEOUT", "60").stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
        command
    }

    fn spawn_psql(&self, jit: bool) -> Spawned {
        let (host, user, label) = if jit {
            (self.lab.target.v6.to_string(), "reader", "psql (just in time)")
        } else {
            (self.lab.target.v4.to_string(), "postgres", "psql")
        };
        let args = ["-h", &host, "-U", user, "-d", "postgres", "-X", "-q", "-w", "-v", "ON_ERROR_STOP=1"];
        Spawned::start(label, self.command("psql", &args), Some(b"SELECT 1;\n"))
    }

    fn spawn_ssh(&self) -> Spawned {
        let mut args = sshd::client_options(&self.known_hosts);
        args.extend(["-o".into(), "ConnectTimeout=60".into()]);
        args.push(format!("{}@{}", self.lab.user("deploy").name, self.lab.target.v4));
        args.push("cat".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Spawned::start("ssh", self.command("ssh", &args), None)
    }

    fn spawn_pgbench(&self, jit: bool, clients: usize, seconds: u32) -> Spawned {
        let (host, user, label) = if jit {
            (self.lab.target.v6.to_string(), "reader", "pgbench -C (just in time)")
        } else {
            (self.lab.target.v4.to_string(), "postgres", "pgbench -C")
        };
        let (clients, seconds) = (clients.to_string(), seconds.to_string());
        let script = self.script.display().to_string();
        let args =
            ["-n", "-C", "-c", &clients, "-j", "2", "-T", &seconds, "-f", &script, "-h", &host, "-U", user, "postgres"];
        let mut command = self.command("pgbench", &args);
        command.stdout(Stdio::piped());
        Spawned::start(label, command, None)
    }

    fn spawn_tcp_hold(&self, count: usize) -> TcpHold {
        let addr = format!("{}:{ECHO_PORT}", self.lab.target.v4);
        let count = count.to_string();
        let mut command = self.command(self.helper.to_str().expect("utf-8 path"), &["tcp-hold", &addr, &count]);
        command.stdout(Stdio::piped());
        let mut spawned = Spawned::start("tcp-hold", command, None);
        let stdout = spawned.child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        TcpHold { spawned, lines }
    }
}

/// A client started by a cycle; killed on drop.
struct Spawned {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    /// What a held client sends before its stdin closes.
    at_release: Option<&'static [u8]>,
}

impl Spawned {
    fn start(label: &str, mut command: std::process::Command, at_release: Option<&'static [u8]>) -> Self {
        let mut child = command.spawn().unwrap_or_else(|e| panic!("starting {label}: {e}"));
        let stdin = child.stdin.take();
        Self { label: label.to_owned(), child, stdin, at_release }
    }

    /// Sends what checks the session, and closes stdin: the client ends.
    fn release(&mut self) {
        if let Some(mut stdin) = self.stdin.take()
            && let Some(bytes) = self.at_release
        {
            let _ = stdin.write_all(bytes);
        }
    }

    /// Waits (bounded) for the client to end; its stdout, or why it failed.
    fn finish(mut self, timeout: Duration) -> Result<String, String> {
        self.release();
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!("{}: still running after {timeout:?}", self.label));
                }
            }
        };
        let read = |pipe: Option<&mut dyn std::io::Read>| {
            let mut text = String::new();
            if let Some(pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        };
        let stdout = read(self.child.stdout.as_mut().map(|p| p as &mut dyn std::io::Read));
        let stderr = read(self.child.stderr.as_mut().map(|p| p as &mut dyn std::io::Read));
        if status.success() && !stderr.contains("aborted") {
            Ok(stdout)
        } else {
            let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_owned();
            Err(format!("{}: {status}: {first}", self.label))
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `tcp-hold` client.
struct TcpHold {
    spawned: Spawned,
    lines: mpsc::Receiver<String>,
}

impl TcpHold {
    /// Waits (bounded) until every relay is open and has echoed once.
    fn wait_open(self, timeout: Duration) -> Result<Self, String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) if line.starts_with("open ") => Ok(self),
            Ok(line) => Err(line),
            Err(_) => Err(format!("relays not open within {timeout:?}")),
        }
    }

    /// Closes stdin (every relay echoes once more and closes); its report.
    fn finish(mut self, timeout: Duration) -> Result<String, String> {
        self.spawned.release();
        let result = self.spawned.finish(timeout);
        let report = self.lines.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
        result.map(|_| report)
    }
}

/// Samples a process's RSS and fd count every 100 ms, keeping the highest.
struct Sampler {
    stop: Arc<AtomicBool>,
    rss_kb: Arc<AtomicU64>,
    anon_kb: Arc<AtomicU64>,
    fds: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
    pid: u32,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (rss_kb, anon_kb, fds) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let thread = {
            let (stop, rss_kb, anon_kb, fds) =
                (Arc::clone(&stop), Arc::clone(&rss_kb), Arc::clone(&anon_kb), Arc::clone(&fds));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let now = sample(pid);
                    rss_kb.fetch_max(now.rss_kb, Ordering::Relaxed);
                    anon_kb.fetch_max(now.anon_kb, Ordering::Relaxed);
                    fds.fetch_max(now.fds as u64, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Self { stop, rss_kb, anon_kb, fds, thread, pid }
    }

    fn stop(self) -> Sample {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        Sample {
            rss_kb: self.rss_kb.load(Ordering::Relaxed),
            anon_kb: self.anon_kb.load(Ordering::Relaxed),
            fds: self.fds.load(Ordering::Relaxed) as usize,
            cpu: crate::process::cpu_time(self.pid),
        }
    }
}

/// `tcp-hold ADDR COUNT`, run as a test user by the soak: opens COUNT
/// connections to ADDR, one 64-byte round trip on each, prints `open N`,
/// holds them until stdin closes, makes one more round trip on each and
/// closes them; prints `{"opened":N,"errors":E,"first_error":…}` and exits
/// non-zero on any error.
pub fn tcp_hold(args: &[String]) -> ! {
    use std::net::{SocketAddr, TcpStream};
    let addr: SocketAddr = args[0].parse().expect("address");
    let count: usize = args[1].parse().expect("count");
    let timeout = Duration::from_secs(30);
    let mut errors = 0usize;
    let mut first_error: Option<String> = None;
    let mut fail = |what: String, errors: &mut usize| {
        *errors += 1;
        first_error.get_or_insert(what);
    };
    let trip = |stream: &mut TcpStream| -> std::io::Result<()> {
        let message = [0x5au8; 64];
        let mut reply = [0u8; 64];
        stream.write_all(&message)?;
        stream.read_exact(&mut reply)?;
        if reply != message {
            return Err(std::io::Error::other("echo differs"));
        }
        Ok(())
    };
    let mut streams = Vec::with_capacity(count);
    for i in 0..count {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(mut stream) => {
                let _ = stream.set_read_timeout(Some(timeout));
                match trip(&mut stream) {
                    Ok(()) => streams.push(stream),
                    Err(e) => fail(format!("relay {i}: first round trip: {e}"), &mut errors),
                }
            }
            Err(e) => fail(format!("relay {i}: connect: {e}"), &mut errors),
        }
    }
    println!("open {}", streams.len());
    let _ = std::io::stdout().flush();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    for (i, stream) in streams.iter_mut().enumerate() {
        if let Err(e) = trip(stream) {
            fail(format!("relay {i}: last round trip: {e}"), &mut errors);
        }
    }
    let opened = streams.len();
    drop(streams);
    println!("{}", serde_json::json!({ "opened": opened, "errors": errors, "first_error": first_error }));
    let _ = std::io::stdout().flush();
    std::process::exit(i32::from(errors > 0));
}
