//! Harness for Airlock's privileged end-to-end tests and benchmarks.
//!
//! Each [`Lab`] builds a small world of its own and tears it down on drop,
//! even when the test fails: a cgroup the programs attach at (with `clients`
//! and `agent` children), a target host in a network namespace joined by a
//! veth pair, Unix test users, and a private bpffs pin directory. Traffic only
//! ever goes to loopback or to that namespace.

pub mod agent;
pub mod bao;
pub mod kube;
pub mod load;
pub mod netns;
pub mod nginx;
pub mod oidc;
pub mod process;
pub mod remote_approvals;
pub mod session;
pub mod sshd;
pub mod users;

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{
        Once,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
};

pub use agent::{Agent, AgentConfig, airlock_bin};
pub use netns::TargetHost;
pub use process::{Background, CommandOutput, run_as, spawn_as};
pub use session::{LoginSession, SessionJob};
pub use users::TestUser;

/// Prefix of every resource a lab creates, so leftovers of a killed run are
/// recognisable and swept.
pub const PREFIX: &str = "alt";

/// True when the tests can run (root). When they cannot: a failure under
/// `CI=true`, a loud skip otherwise.
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        SWEEP.call_once(sweep_stale);
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "vm-tests need root (eBPF, cgroups, network namespaces); in CI they must run"
    );
    eprintln!("SKIPPED: vm-tests need root");
    false
}

static SWEEP: Once = Once::new();
static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// A unique short tag for one lab: fits interface names (15 bytes).
/// [`is_lab_tag`] recognises it.
fn lab_tag() -> String {
    format!("{}{}x{}", PREFIX, std::process::id() % 100_000, NEXT_LAB.fetch_add(1, Ordering::Relaxed))
}

/// Root of the cgroup2 hierarchy.
pub fn cgroup2_root() -> PathBuf {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split_whitespace().nth(4)?;
            (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .expect("cgroup2 is mounted")
}

/// The cgroups of one lab.
pub struct Cgroups {
    /// Where the programs attach.
    pub root: PathBuf,
    /// Where test clients run.
    pub clients: PathBuf,
    /// Where the agent runs (inside `root`, so its exemption is exercised).
    pub agent: PathBuf,
}

impl Cgroups {
    fn create(tag: &str) -> Self {
        let root = cgroup2_root().join(format!("{tag}.test"));
        let cgroups = Self { clients: root.join("clients"), agent: root.join("agent"), root };
        for dir in [&cgroups.clients, &cgroups.agent] {
            fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        }
        cgroups
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.root);
    }
}

/// Kills every process in a cgroup tree (nested cgroups included, such as
/// the agent's `airlock run` ones) and removes it, deepest first.
pub fn remove_cgroup_tree(root: &Path) {
    fn tree(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    tree(&entry.path(), out);
                }
            }
        }
        out.push(dir.to_owned());
    }
    for _ in 0..50 {
        let mut dirs = Vec::new();
        tree(root, &mut dirs);
        let mut busy = false;
        for dir in &dirs {
            if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|p| p.parse::<i32>().ok()) {
                    busy = true;
                    // SAFETY: plain kill(2).
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        if !busy {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut dirs = Vec::new();
    tree(root, &mut dirs);
    for dir in dirs {
        let _ = fs::remove_dir(dir);
    }
}

/// Removes what killed earlier runs left: cgroups, namespaces, pins, users
/// (never what a run still going on uses).
fn sweep_stale() {
    if let Ok(entries) = fs::read_dir(cgroup2_root()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Labs' own cgroups and the benchmarks' side cgroups (`TAG.jit`).
            if left_behind(&name) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    netns::sweep_stale();
    if let Ok(entries) = fs::read_dir("/sys/fs/bpf") {
        for entry in entries.flatten() {
            if left_behind(&entry.file_name().to_string_lossy()) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    users::sweep_stale();
    // Scratch directories: configs, audit logs, PostgreSQL data.
    if let Ok(entries) = fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            if left_behind(&entry.file_name().to_string_lossy()) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Whether `name` is a lab's: its tag, alone or followed by `-` (scratch
/// directories) or `.` (a benchmark's side cgroups).
fn made_by_a_lab(name: &str) -> bool {
    is_lab_tag(name.split(['-', '.']).next().unwrap_or(name))
}

/// Whether `name` (a lab's cgroup, namespace, pin directory, user or
/// scratch directory) was made by a lab whose process still runs: another
/// test binary or benchmark running at the same time on this machine. Its
/// labs are its own to remove; sweeping them would kill its clients and
/// servers mid-test.
pub(crate) fn owned_by_a_live_process(name: &str) -> bool {
    let Some(owner) =
        name.strip_prefix(PREFIX).and_then(|rest| rest.split_once('x')).and_then(|(pid, _)| pid.parse::<u32>().ok())
    else {
        return false;
    };
    if owner == std::process::id() % 100_000 {
        return false;
    }
    // Tags keep the pid modulo 100,000.
    fs::read_dir("/proc").into_iter().flatten().flatten().any(|entry| {
        entry.file_name().to_str().and_then(|pid| pid.parse::<u32>().ok()).is_some_and(|pid| pid % 100_000 == owner)
    })
}

/// Whether `name` is a lab's whose process is gone.
fn left_behind(name: &str) -> bool {
    made_by_a_lab(name) && !owned_by_a_live_process(name)
}

/// Whether `name` is a tag [`lab_tag`] makes: the prefix, digits, `x`, digits.
fn is_lab_tag(name: &str) -> bool {
    let numbered = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    name.strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once('x'))
        .is_some_and(|(pid, lab)| numbered(pid) && numbered(lab))
}

/// Makes SIGINT and SIGTERM remove every lab's leftovers (processes,
/// cgroups, namespaces, pins, users, scratch directories) before the
/// process exits: a benchmark stopped midway leaves nothing behind. (A lab
/// dropped normally cleans up after itself; a signal skips the drops.)
pub fn clean_up_on_signal() {
    static STOP: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_signal(_: libc::c_int) {
        STOP.store(true, Ordering::SeqCst);
    }
    // SAFETY: installing a handler that only stores to an atomic. Handlers
    // revert to the default in the programs the process starts.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    std::thread::spawn(|| {
        while !STOP.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("interrupted: removing the labs' processes, cgroups, namespaces, pins, users and files");
        sweep_stale();
        std::process::exit(130);
    });
}

/// One test's world. Fields drop in declaration order: agent first, then the
/// target host, users and cgroups.
pub struct Lab {
    /// The agent, once started.
    pub agent: Option<Agent>,
    /// The target host.
    pub target: TargetHost,
    /// Test users, by name.
    pub users: Vec<TestUser>,
    /// The lab's cgroups.
    pub cgroups: Cgroups,
    /// Short unique tag.
    pub tag: String,
    /// Scratch directory (configs, audit log, PostgreSQL data).
    pub dir: tempfile::TempDir,
}

impl Lab {
    /// Creates the cgroups, the target host and `users`.
    pub fn new(users: &[&str]) -> Self {
        let tag = lab_tag();
        let dir = tempfile::Builder::new().prefix(&format!("{tag}-")).tempdir().expect("tempdir");
        // Test users must be able to traverse to sockets and files inside.
        set_mode(dir.path(), 0o755);
        let cgroups = Cgroups::create(&tag);
        let target = TargetHost::create(&tag, NEXT_LAB.load(Ordering::Relaxed));
        let users = users.iter().map(|name| TestUser::create(&tag, name)).collect();
        Self { agent: None, target, users, cgroups, tag, dir }
    }

    /// The test user created as `name`.
    pub fn user(&self, name: &str) -> &TestUser {
        self.users.iter().find(|u| u.short == name).unwrap_or_else(|| panic!("no test user {name}"))
    }

    /// Writes `policy` (TOML) as the lab's only policy file and starts the agent.
    pub fn start_agent(&mut self, policy: &str) -> &Agent {
        self.start_agent_with(policy, "")
    }

    /// Like [`Self::start_agent`], with `config` (TOML tables) added to the
    /// agent's configuration.
    pub fn start_agent_with(&mut self, policy: &str, config: &str) -> &Agent {
        let agent_config = AgentConfig::new(self, policy);
        agent_config.append(config);
        self.agent = Some(Agent::start(agent_config));
        self.agent.as_ref().expect("just set")
    }

    /// The running agent.
    pub fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("agent started")
    }

    /// The agent's host CA, as `airlock ca` prints it (what IT installs
    /// where clients look for roots), in a file test users can read.
    pub fn host_ca_file(&self) -> PathBuf {
        let printed = std::process::Command::new(airlock_bin())
            .args(["ca", "--config", self.agent().config.path.to_str().expect("a UTF-8 path")])
            .output()
            .expect("run airlock ca");
        assert!(printed.status.success(), "airlock ca: {}", String::from_utf8_lossy(&printed.stderr));
        let host_ca = self.dir.path().join("airlock-host-ca.crt");
        fs::write(&host_ca, &printed.stdout).expect("write the host CA");
        set_mode(&host_ca, 0o644);
        host_ca
    }

    /// A copy of the `airlock` CLI that test users can run (they may not be
    /// able to reach the build tree).
    pub fn cli(&self) -> PathBuf {
        let cli = self.dir.path().join("airlock");
        if !cli.exists() {
            fs::copy(airlock_bin(), &cli).expect("copy the airlock binary");
            set_mode(&cli, 0o755);
        }
        cli
    }

    /// Runs a command as a test user inside the lab's client cgroup.
    pub fn run_as(&self, user: &str, program: &str, args: &[&str]) -> CommandOutput {
        run_as(self.user(user), &self.cgroups.clients, program, args)
    }

    /// Starts a command as a test user inside the lab's client cgroup, in
    /// the background (killed when dropped).
    pub fn spawn_as(&self, user: &str, program: &str, args: &[&str]) -> Background {
        spawn_as(self.user(user), &self.cgroups.clients, program, args)
    }

    /// [`Lab::run_as`] for a long client, killed after `timeout`.
    pub fn run_as_within(
        &self,
        user: &str,
        program: &str,
        args: &[&str],
        timeout: std::time::Duration,
    ) -> CommandOutput {
        process::run_as_within(self.user(user), &self.cgroups.clients, program, args, timeout)
    }
}

/// The JSON lines of a log a test server writes (nginx's access log, the
/// stand-in API server's request log); lines that are not JSON are skipped.
pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// chmod.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_tags_are_recognised_and_nothing_else() {
        assert!(is_lab_tag(&lab_tag()));
        assert!(is_lab_tag("alt406x0"));
        for other in ["alt", "altx0", "alt406x", "alt406", "alt4a6x0", "alternatives", "alt406x0n"] {
            assert!(!is_lab_tag(other), "{other}");
        }
        for ours in ["alt406x0", "alt406x0-VwfcIc", "alt406x0.jit"] {
            assert!(made_by_a_lab(ours), "{ours}");
        }
        for theirs in ["alt406x0n", "alternatives-1", "alt-x0.jit"] {
            assert!(!made_by_a_lab(theirs), "{theirs}");
        }
    }
}
