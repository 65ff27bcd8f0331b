//! Running unmodified clients as test users, inside a cgroup, with a bounded run time.

use std::{
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::TestUser;

/// Longest any client may run.
pub(crate) const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a finished client did.
#[derive(Debug)]
pub struct CommandOutput {
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// The client's pid.
    pub pid: u32,
}

impl CommandOutput {
    /// True on exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// A background process started with [`spawn_as`]; killed on drop.
pub struct Background(std::process::Child);

impl Background {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits for it to end, killing it after `timeout`; its exit code.
    pub fn wait_within(mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.0.kill();
                let _ = self.0.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The fields of `/proc/PID/stat` after the parenthesised command name
/// (which may hold spaces): the state first, then the parent's pid…;
/// empty if the process is gone.
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().map(str::to_owned).collect()).unwrap_or_default()
}

/// The parent of process `pid`, if it still runs.
pub fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid).get(1)?.parse().ok()
}

/// CPU time (user + system, all threads) a process has used so far.
pub fn cpu_time(pid: u32) -> std::time::Duration {
    // utime and stime are the 12th and 13th fields after the command name.
    let fields = stat_fields(pid);
    let ticks: u64 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    // SAFETY: sysconf has no preconditions.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100).max(1);
    std::time::Duration::from_micros(ticks * 1_000_000 / per_second)
}

/// CPU time the threads of process `pid` named `name` have used so far
/// (what the scheduler counted, to the nanosecond).
pub fn thread_cpu_time(pid: u32, name: &str) -> std::time::Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return std::time::Duration::ZERO };
    let nanos = tasks
        .flatten()
        .filter(|task| std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim_end() == name))
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|schedstat| schedstat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    std::time::Duration::from_nanos(nanos)
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `program` as `user` inside `cgroup` in the background (a server
/// a test needs), output discarded.
pub fn spawn_as(user: &TestUser, cgroup: &Path, program: &str, args: &[&str]) -> Background {
    let mut command = command_as(user, cgroup, program, args);
    command.stdout(Stdio::null()).stderr(Stdio::null());
    Background(command.spawn().unwrap_or_else(|e| panic!("starting {program}: {e}")))
}

/// Runs `program` as `user` inside `cgroup`, with the user's login uid set as
/// pam_loginuid would, and kills it if it outlives [`CLIENT_TIMEOUT`].
pub fn run_as(user: &TestUser, cgroup: &Path, program: &str, args: &[&str]) -> CommandOutput {
    run_as_within(user, cgroup, program, args, CLIENT_TIMEOUT)
}

/// [`run_as`] for a client that may take up to `timeout` (a driver's test
/// suite); killed after it.
pub fn run_as_within(user: &TestUser, cgroup: &Path, program: &str, args: &[&str], timeout: Duration) -> CommandOutput {
    let mut command = command_as(user, cgroup, program, args);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|e| panic!("starting {program}: {e}"));
    let pid = child.id();
    // Drain both pipes while waiting, so a chatty client cannot block on a full pipe.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + timeout;
    // Checked often at first, so a quick client (most of them) returns
    // within a millisecond or two of its exit, then every 20 ms.
    let mut pause = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    assert!(status.is_some(), "{program} {args:?} ran longer than {timeout:?}: {stdout}{stderr}");
    CommandOutput { code: status.and_then(|s| s.code()), stdout, stderr, pid }
}

/// `program` set up to run as `user` inside `cgroup`, with the user's login
/// uid set as pam_loginuid would.
pub(crate) fn command_as(user: &TestUser, cgroup: &Path, program: &str, args: &[&str]) -> Command {
    command_as_ids(user.uid, user.gid, &user.name, cgroup, program, args)
}

/// Like [`command_as`], for any account (root included).
pub(crate) fn command_as_ids(uid: u32, gid: u32, name: &str, cgroup: &Path, program: &str, args: &[&str]) -> Command {
    let procs = std::ffi::CString::new(cgroup.join("cgroup.procs").display().to_string()).expect("path");
    // Allocated before fork: only async-signal-safe calls may run after it.
    let loginuid = uid.to_string();
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", "/tmp")
        .env("USER", name)
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null());
    // SAFETY: only async-signal-safe calls (open/write/close/set*id) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            write_file(&procs, b"0")?;
            write_file(c"/proc/self/loginuid", loginuid.as_bytes())?;
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

fn write_file(path: &std::ffi::CStr, bytes: &[u8]) -> std::io::Result<()> {
    // SAFETY: open/write/close on a NUL-terminated path and a live buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let written = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        libc::close(fd);
        if written < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_process_parent_and_cpu_time_are_read_from_proc() {
        let me = std::process::id();
        // SAFETY: getppid has no preconditions.
        let parent = u32::try_from(unsafe { libc::getppid() }).unwrap();
        assert_eq!(super::parent_of(me), Some(parent));
        assert_eq!(super::parent_of(u32::MAX), None, "no such process");
        let busy = std::time::Instant::now();
        while busy.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(busy.elapsed());
        }
        assert!(super::cpu_time(me) > std::time::Duration::ZERO);
    }
}
