//! What the agent knows about the process that opened a connection: the
//! facts the eBPF program captured at `connect()`, enriched from procfs.
//!
//! procfs is read after the fact, so the process may be gone or its pid
//! reused. The start time in `/proc/PID/stat` (CLOCK_BOOTTIME ticks, the
//! clock the eBPF record uses too) tells a reused pid apart: procfs facts of
//! a process that started after the connect are discarded, never attributed.

use std::{
    fs,
    path::{Path, PathBuf},
};

use airlock_ebpf::ConnectRecord;
use serde::Serialize;

/// How many ancestors to record: enough to see `sshd → tmux → bash → node
/// → bash → make → psql` with room to spare; actors are matched over them.
const MAX_PARENTS: usize = 16;
/// cmdline is truncated to this many bytes in records.
const MAX_CMDLINE_BYTES: usize = 4096;
/// `loginuid` and `sessionid` of a process that never logged in.
const UNSET_ID: u32 = u32::MAX;

/// A process, as attributed to a connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProcessInfo {
    /// Process id (thread group id).
    pub pid: u32,
    /// Thread that called `connect()`.
    pub tid: u32,
    /// Real uid at connect.
    pub uid: u32,
    /// Real gid at connect.
    pub gid: u32,
    /// Short command name at connect.
    pub comm: String,
    /// Executable path, when the process was still there to ask.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<PathBuf>,
    /// Command line, with passwords and tokens in arguments replaced by `***`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cmdline: Vec<String>,
    /// Audit login uid (set by pam_loginuid at login); `None` when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loginuid: Option<u32>,
    /// Audit session id; `None` when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_session: Option<u32>,
    /// cgroup v2 id at connect.
    pub cgroup_id: u64,
    /// cgroup v2 path, relative to the hierarchy root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Parent, grandparent, … up to (not including) pid 1.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<ParentProcess>,
    /// False when procfs had nothing trustworthy (process gone, or pid reused).
    pub procfs: bool,
    /// When it started (CLOCK_BOOTTIME ticks), which tells it apart from a
    /// later process given the same pid.
    #[serde(skip)]
    pub start_ticks: u64,
}

/// A process as a pid alone cannot name it: pid and start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProcessKey {
    /// Process id.
    pub pid: u32,
    /// Start time, CLOCK_BOOTTIME ticks.
    pub start_ticks: u64,
}

/// An ancestor of the connecting process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ParentProcess {
    /// Process id.
    pub pid: u32,
    /// Short command name.
    pub comm: String,
    /// Executable path, if readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<PathBuf>,
    /// When it started (CLOCK_BOOTTIME ticks).
    #[serde(skip)]
    pub start_ticks: u64,
}

impl ParentProcess {
    /// Its pid and start time.
    pub fn key(&self) -> ProcessKey {
        ProcessKey { pid: self.pid, start_ticks: self.start_ticks }
    }
}

/// Fields of `/proc/PID/stat` the agent uses.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    comm: String,
    ppid: u32,
    start_ticks: u64,
}

impl ProcessInfo {
    /// Builds the process description for a connect record, reading `proc_root`
    /// (normally `/proc`).
    pub fn collect(record: &ConnectRecord, proc_root: &Path) -> Self {
        let mut info = Self {
            pid: record.tgid,
            tid: record.tid,
            uid: record.uid,
            gid: record.gid,
            comm: comm_string(&record.comm),
            cgroup_id: record.cgroup_id,
            ..Self::default()
        };
        let dir = proc_root.join(record.tgid.to_string());
        let Some(stat) = read_stat(&dir) else { return info };
        if stat.start_ticks.saturating_mul(nanos_per_tick()) > record.connect_boot_ns {
            tracing::warn!(pid = record.tgid, "pid reused since connect; procfs facts discarded");
            return info;
        }
        info.start_ticks = stat.start_ticks;
        info.read_procfs(&dir, proc_root, stat.ppid);
        info
    }

    /// Its pid and start time.
    pub fn key(&self) -> ProcessKey {
        ProcessKey { pid: self.pid, start_ticks: self.start_ticks }
    }

    /// Describes a live process known by pid, such as the caller of the
    /// control socket: uid and gid as the kernel gave them (SO_PEERCRED),
    /// the rest from procfs, and its cgroup id from the cgroup2 hierarchy
    /// mounted at `cgroup_root`. The caller must make sure the pid still
    /// names the same process afterwards (a pidfd).
    pub fn of_live_process(pid: u32, uid: u32, gid: u32, proc_root: &Path, cgroup_root: &Path) -> Self {
        let mut info = Self { pid, tid: pid, uid, gid, ..Self::default() };
        let dir = proc_root.join(pid.to_string());
        let Some(stat) = read_stat(&dir) else { return info };
        info.comm = stat.comm;
        info.start_ticks = stat.start_ticks;
        info.read_procfs(&dir, proc_root, stat.ppid);
        info.cgroup_id = info
            .cgroup
            .as_deref()
            .and_then(|path| crate::intercept::cgroup::cgroup_id(&cgroup_root.join(path.trim_start_matches('/'))).ok())
            .unwrap_or_default();
        info
    }

    /// The facts procfs has of the process in `dir`, whose parent is `ppid`.
    fn read_procfs(&mut self, dir: &Path, proc_root: &Path, ppid: u32) {
        self.procfs = true;
        self.exe = fs::read_link(dir.join("exe")).ok();
        self.cmdline = crate::redact::command_line(read_cmdline(dir));
        self.loginuid = read_id(&dir.join("loginuid"));
        self.audit_session = read_id(&dir.join("sessionid"));
        self.cgroup = fs::read_to_string(dir.join("cgroup"))
            .ok()
            .and_then(|text| text.lines().find_map(|l| l.strip_prefix("0::")).map(str::to_owned));
        self.parents = parents(proc_root, ppid, self.start_ticks);
    }
}

/// The real uid of process `pid`, from `/proc/PID/status`.
pub fn real_uid(pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| line.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}

/// The ancestors from `ppid` up, of a process started at `child_start`.
/// A parent that started after its child is a reused pid (the real parent
/// died in between): the chain stops there rather than name a stranger.
fn parents(proc_root: &Path, mut ppid: u32, mut child_start: u64) -> Vec<ParentProcess> {
    let mut parents = Vec::new();
    while ppid > 1 && parents.len() < MAX_PARENTS {
        let dir = proc_root.join(ppid.to_string());
        let Some(stat) = read_stat(&dir) else { break };
        if stat.start_ticks > child_start {
            break;
        }
        let exe = fs::read_link(dir.join("exe")).ok();
        parents.push(ParentProcess { pid: ppid, comm: stat.comm, exe, start_ticks: stat.start_ticks });
        (ppid, child_start) = (stat.ppid, stat.start_ticks);
    }
    parents
}

/// Whether the process in `dir` is still the one `key` names.
pub fn still(dir: &Path, key: ProcessKey) -> bool {
    read_stat(dir).is_some_and(|stat| stat.start_ticks == key.start_ticks)
}

/// A process's environment (`NAME=VALUE` entries), as it was at exec.
pub fn read_environ(dir: &Path) -> Vec<String> {
    let Ok(bytes) = fs::read(dir.join("environ")) else { return Vec::new() };
    bytes
        .split(|b| *b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .collect()
}

fn read_stat(dir: &Path) -> Option<Stat> {
    parse_stat(&fs::read_to_string(dir.join("stat")).ok()?)
}

/// Parses `/proc/PID/stat`. comm is in parentheses and may itself contain
/// spaces and parentheses, so the fields after it are found from the last ')'.
fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    // After ") ": state(3) ppid(4) … starttime(22); index 0 here is field 3.
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    Some(Stat { comm, ppid: rest.get(1)?.parse().ok()?, start_ticks: rest.get(19)?.parse().ok()? })
}

/// A process's arguments (bounded; not redacted: for matching, not records).
pub fn read_cmdline(dir: &Path) -> Vec<String> {
    let Ok(mut bytes) = fs::read(dir.join("cmdline")) else { return Vec::new() };
    bytes.truncate(MAX_CMDLINE_BYTES);
    bytes
        .split(|b| *b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

fn read_id(path: &Path) -> Option<u32> {
    let id: u32 = fs::read_to_string(path).ok()?.trim().parse().ok()?;
    (id != UNSET_ID).then_some(id)
}

fn comm_string(comm: &[u8; 16]) -> String {
    let len = comm.iter().position(|b| *b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..len]).into_owned()
}

fn nanos_per_tick() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { 1_000_000_000 / ticks as u64 } else { 10_000_000 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: u32, connect_boot_ns: u64) -> ConnectRecord {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"psql");
        ConnectRecord {
            cgroup_id: 77,
            connect_boot_ns,
            orig_addr: [0; 16],
            orig_port: 5432,
            family: airlock_ebpf::AF_INET,
            target_id: 0,
            tgid: pid,
            tid: pid + 1,
            uid: 1001,
            gid: 1002,
            comm,
        }
    }

    fn fake_proc(pid: u32, ppid: u32, comm: &str, start_ticks: u64) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let write = |pid: u32, ppid: u32, comm: &str| {
            let dir = root.path().join(pid.to_string());
            fs::create_dir_all(&dir).unwrap();
            let stat =
                format!("{pid} ({comm}) S {ppid} 1 1 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 {start_ticks} 1000 10 0");
            fs::write(dir.join("stat"), stat).unwrap();
            dir
        };
        let dir = write(pid, ppid, comm);
        fs::write(dir.join("cmdline"), b"psql\0-h\0prod-db\0").unwrap();
        fs::write(dir.join("loginuid"), "1001").unwrap();
        fs::write(dir.join("sessionid"), "4294967295").unwrap();
        fs::write(dir.join("cgroup"), "0::/user.slice/user-1001.slice/session-3.scope\n").unwrap();
        write(ppid, 1, "ba) sh (x");
        root
    }

    #[test]
    fn parses_stat_with_odd_comm() {
        let stat = parse_stat("42 (a) b (c) R 7 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 12345 0 0").unwrap();
        assert_eq!(stat, Stat { comm: "a) b (c".into(), ppid: 7, start_ticks: 12345 });
        assert_eq!(parse_stat("42 (x"), None);
        assert_eq!(parse_stat("42 (x) R"), None);
    }

    #[test]
    fn enriches_from_procfs() {
        let proc_root = fake_proc(500, 400, "psql", 100);
        let info = ProcessInfo::collect(&record(500, u64::MAX), proc_root.path());
        assert!(info.procfs);
        assert_eq!((info.pid, info.tid, info.uid, info.gid), (500, 501, 1001, 1002));
        assert_eq!(info.comm, "psql");
        assert_eq!(info.cmdline, ["psql", "-h", "prod-db"]);
        assert_eq!(info.loginuid, Some(1001));
        assert_eq!(info.audit_session, None, "unset session id is not a session");
        assert_eq!(info.cgroup.as_deref(), Some("/user.slice/user-1001.slice/session-3.scope"));
        assert_eq!(info.parents.len(), 1);
        assert_eq!(info.parents[0].pid, 400);
        assert_eq!(info.parents[0].comm, "ba) sh (x");
    }

    #[test]
    fn reused_pid_is_not_trusted() {
        let proc_root = fake_proc(500, 400, "evil", 1_000_000);
        // Connected at boot+1s; this pid's process started at tick 1e6 (far later).
        let info = ProcessInfo::collect(&record(500, 1_000_000_000), proc_root.path());
        assert!(!info.procfs);
        assert_eq!(info.comm, "psql", "falls back to what eBPF saw");
        assert!(info.cmdline.is_empty() && info.exe.is_none() && info.parents.is_empty());
    }

    #[test]
    fn gone_process_keeps_record_facts() {
        let proc_root = tempfile::tempdir().unwrap();
        let info = ProcessInfo::collect(&record(9, 5), proc_root.path());
        assert!(!info.procfs);
        assert_eq!((info.pid, info.uid, info.cgroup_id), (9, 1001, 77));
    }

    #[test]
    fn real_procfs_of_this_process() {
        let me = std::process::id();
        let mut rec = record(me, u64::MAX);
        rec.uid = nix::unistd::getuid().as_raw();
        let info = ProcessInfo::collect(&rec, Path::new("/proc"));
        assert!(info.procfs);
        assert_eq!(info.exe, std::env::current_exe().ok());
        assert!(!info.cmdline.is_empty());
    }
}
