//! Starting, killing and inspecting the real `airlock` agent binary.

use std::{
    fs,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::Lab;

/// How long the agent may take to report readiness.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The `airlock` binary under test: `$AIRLOCK_BIN`, or the workspace's debug build.
pub fn airlock_bin() -> PathBuf {
    let bin = std::env::var_os("AIRLOCK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/airlock"));
    assert!(bin.exists(), "{} does not exist: run `cargo xtask test` (it builds the agent first)", bin.display());
    bin
}

/// Labs' agents do not sweep the host for secrets (it would read every
/// home directory during unrelated tests); `tests/scan.rs` replaces this.
pub const SCAN_OFF: &str = "[scan]\ninterval = \"off\"\n";

/// Files and settings of one lab's agent.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The agent's TOML config.
    pub path: PathBuf,
    /// Audit directory.
    pub audit_dir: PathBuf,
    /// Control socket.
    pub socket: PathBuf,
    /// bpffs pin directory.
    pub pin_dir: PathBuf,
    /// Loopback port the programs redirect to.
    pub listener_port: u16,
    /// cgroup the programs attach at.
    pub cgroup: PathBuf,
    /// Agent stderr goes here.
    pub log: PathBuf,
}

impl AgentConfig {
    /// Writes the config and the single policy file for `lab`. The agent
    /// logs at debug level, or at `$AIRLOCK_TEST_LOG` (benchmarks: as in production).
    pub fn new(lab: &Lab, policy: &str) -> Self {
        let dir = lab.dir.path();
        let policies = dir.join("policies");
        fs::create_dir_all(&policies).expect("mkdir policies");
        fs::write(policies.join("test.toml"), policy).expect("write policy");
        // Below the ephemeral range (32768 up): a port the load tests' many
        // client connections or a server on an ephemeral port could hold.
        let listener_port = 20_000 + (std::process::id() % 12_000) as u16;
        let config = Self {
            path: dir.join("airlock.toml"),
            audit_dir: dir.join("audit"),
            socket: dir.join("run/airlock.sock"),
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/{}", lab.tag)),
            listener_port,
            cgroup: lab.cgroups.root.clone(),
            log: dir.join("agent.log"),
        };
        let text = format!(
            r#"policies_dir = "{policies}"
state_dir = "{state}"
audit_dir = "{audit}"
control_socket = "{socket}"
bpffs_dir = "{pins}"
cgroup = "{cgroup}"
agent_cgroup = "{agent_cgroup}"
log = "{log}"
upstream_connect_timeout_ms = 3000

[listener]
port = {listener_port}

{scan_off}
"#,
            policies = policies.display(),
            state = dir.join("state").display(),
            audit = config.audit_dir.display(),
            socket = config.socket.display(),
            pins = config.pin_dir.display(),
            cgroup = lab.cgroups.root.display(),
            agent_cgroup = lab.cgroups.agent.display(),
            log = std::env::var("AIRLOCK_TEST_LOG").unwrap_or_else(|_| "debug".into()),
            scan_off = SCAN_OFF,
        );
        fs::write(&config.path, text).expect("write config");
        config
    }
}

impl AgentConfig {
    /// Appends `toml` (whole tables, e.g. `[oidc]`) to the agent's config.
    pub fn append(&self, toml: &str) {
        let mut text = fs::read_to_string(&self.path).expect("read config");
        text.push('\n');
        text.push_str(toml);
        fs::write(&self.path, text).expect("write config");
    }

    /// Attaches the programs at `cgroup` instead of the lab's cgroup.
    pub fn attach_at(&mut self, cgroup: &Path) {
        let text = fs::read_to_string(&self.path).expect("read config");
        let text: Vec<String> = text
            .lines()
            .map(|line| {
                if line.starts_with("cgroup = ") {
                    format!("cgroup = \"{}\"", cgroup.display())
                } else {
                    line.to_owned()
                }
            })
            .collect();
        fs::write(&self.path, text.join("\n") + "\n").expect("write config");
        self.cgroup = cgroup.to_owned();
    }
}

/// A running agent.
pub struct Agent {
    /// Its configuration.
    pub config: AgentConfig,
    /// The `airlock` binary it runs.
    binary: PathBuf,
    child: Option<Child>,
}

impl Agent {
    /// Starts the agent and waits for its systemd-style READY=1.
    pub fn start(config: AgentConfig) -> Self {
        Self::start_binary(config, airlock_bin())
    }

    /// Like [`Self::start`], running `binary` (an installed `airlock`, the
    /// package test) instead of the one under test.
    pub fn start_binary(config: AgentConfig, binary: PathBuf) -> Self {
        let mut agent = Self { config, binary, child: None };
        agent.spawn();
        agent
    }

    /// Starts the agent again (after [`Self::terminate`] or [`Self::kill9`])
    /// from `binary`, as a service manager restarts it after an upgrade.
    pub fn start_again(&mut self, binary: PathBuf) {
        assert!(self.child.is_none(), "the agent still runs");
        self.binary = binary;
        self.spawn();
    }

    fn spawn(&mut self) {
        let notify_path = self.config.path.with_file_name("notify.sock");
        let _ = fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
        notify.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        let log = fs::OpenOptions::new().create(true).append(true).open(&self.config.log).expect("agent log");
        let mut child = Command::new(&self.binary)
            .args(["agent", "--config"])
            .arg(&self.config.path)
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start airlock agent");
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut buf = [0u8; 512];
        loop {
            if let Ok(n) = notify.recv(&mut buf)
                && String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1")
            {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("agent exited before ready ({status}):\n{}", self.log());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("agent not ready after {READY_TIMEOUT:?}:\n{}", self.log());
            }
        }
        let _ = fs::remove_file(&notify_path);
        self.child = Some(child);
    }

    /// The agent's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent running").id()
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, waiting (bounded) for a clean exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Replaces the policy file and sends SIGHUP.
    pub fn reload(&self, policy: &str) {
        let file = self.config.path.with_file_name("policies").join("test.toml");
        fs::write(&file, policy).expect("write policy");
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.pid() as i32, libc::SIGHUP) };
    }

    /// Starts the agent again with the same configuration.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// The agent's stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.config.log).unwrap_or_default()
    }

    /// Every audit record written so far. A line that is not a record is
    /// allowed only as the torn tail of a killed agent, which the next
    /// start terminates and reports (`audit.torn_record`) after it.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        let text = fs::read_to_string(self.config.audit_dir.join("audit.jsonl")).unwrap_or_default();
        let mut records = Vec::new();
        let mut torn: Option<(String, String)> = None;
        for line in text.lines() {
            match serde_json::from_str::<serde_json::Value>(line) {
                Ok(record) => {
                    if record["kind"] == "audit.torn_record" {
                        torn = None;
                    }
                    records.push(record);
                }
                Err(e) => {
                    if let Some((line, e)) = torn.take() {
                        panic!("bad audit line {line:?}: {e}");
                    }
                    torn = Some((line.to_owned(), e.to_string()));
                }
            }
        }
        // A torn line not yet reported: the restart has not written yet.
        let reported_or_last = torn.as_ref().is_none_or(|(line, _)| text.trim_end().ends_with(line.as_str()));
        assert!(reported_or_last, "bad audit line {torn:?}");
        records
    }

    /// Audit records of one kind.
    pub fn records_of(&self, kind: &str) -> Vec<serde_json::Value> {
        self.audit_records().into_iter().filter(|r| r["kind"] == kind).collect()
    }

    /// Waits (bounded) until `count` records of `kind` exist, and returns them.
    pub fn wait_for_records(&self, kind: &str, count: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let records = self.records_of(kind);
            if records.len() >= count || Instant::now() > deadline {
                return records;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `airlock status --json`, run as root.
    pub fn status(&self) -> serde_json::Value {
        let out = Command::new(airlock_bin())
            .args(["status", "--json", "--socket"])
            .arg(&self.config.socket)
            .output()
            .expect("run airlock status");
        assert!(out.status.success(), "airlock status failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("status is JSON")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        let _ = Command::new(airlock_bin())
            .args(["uninstall", "--config"])
            .arg(&self.config.path)
            .stdout(Stdio::null())
            .status();
        let _ = fs::remove_dir_all(&self.config.pin_dir);
    }
}
