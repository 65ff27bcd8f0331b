//! A test user's login session: one shell started the way a login starts
//! (pam_loginuid gives it a fresh audit session), running the test's
//! commands one after another, so all of them share that session — as
//! `airlock login` and the `psql` typed after it do on a real workstation.

use std::{
    fs,
    io::Write as _,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Stdio},
    time::{Duration, Instant},
};

use crate::{
    CommandOutput, TestUser,
    process::{CLIENT_TIMEOUT, command_as_ids},
};

/// A login shell of a test user; killed (with everything it started) on drop.
pub struct LoginSession {
    shell: Child,
    stdin: ChildStdin,
    dir: PathBuf,
    next: u32,
}

/// A command started in the background of a [`LoginSession`].
pub struct SessionJob {
    stdout: PathBuf,
    stderr: PathBuf,
    status: PathBuf,
}

impl LoginSession {
    /// Logs `user` in: a shell inside `cgroup`, keeping its output files
    /// under `dir` (created, owned by the user).
    pub fn open(user: &TestUser, cgroup: &Path, dir: &Path) -> Self {
        Self::open_as(user.uid, user.gid, &user.name, cgroup, dir)
    }

    /// Logs root in (an administrator at the console): whatever root then
    /// starts as another user with `runuser` or `su` stays in this session.
    pub fn open_root(cgroup: &Path, dir: &Path) -> Self {
        Self::open_as(0, 0, "root", cgroup, dir)
    }

    fn open_as(uid: u32, gid: u32, name: &str, cgroup: &Path, dir: &Path) -> Self {
        fs::create_dir_all(dir).expect("mkdir session dir");
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).expect("chown session dir");
        let mut command = command_as_ids(uid, gid, name, cgroup, "sh", &[]);
        command.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).process_group(0);
        let mut shell = command.spawn().expect("starting the session shell");
        let stdin = shell.stdin.take().expect("piped stdin");
        Self { shell, stdin, dir: dir.to_owned(), next: 0 }
    }

    /// Runs `script` (shell syntax) in the session and waits for it (bounded).
    pub fn run(&mut self, script: &str) -> CommandOutput {
        self.start(script).wait(CLIENT_TIMEOUT)
    }

    /// Starts `script` in the background of the session.
    pub fn start(&mut self, script: &str) -> SessionJob {
        self.next += 1;
        let file = |suffix: &str| self.dir.join(format!("{}.{suffix}", self.next));
        let job = SessionJob { stdout: file("out"), stderr: file("err"), status: file("status") };
        let line = format!(
            "{{ ( {script}\n) >'{out}' 2>'{err}' </dev/null; echo $? >'{status}.tmp'; mv '{status}.tmp' '{status}'; }} &\n",
            out = job.stdout.display(),
            err = job.stderr.display(),
            status = job.status.display(),
        );
        self.stdin.write_all(line.as_bytes()).expect("writing to the session shell");
        self.stdin.flush().expect("flushing the session shell");
        job
    }
}

impl SessionJob {
    /// What the command has written to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until stderr contains `text` (bounded); returns stderr.
    pub fn wait_for_stderr(&self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let stderr = self.stderr_so_far();
            if stderr.contains(text) {
                return stderr;
            }
            assert!(Instant::now() < deadline, "{text:?} not on stderr within {timeout:?}: {stderr}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the command to finish; panics after `timeout`.
    pub fn wait(&self, timeout: Duration) -> CommandOutput {
        let deadline = Instant::now() + timeout;
        while !self.status.exists() {
            assert!(
                Instant::now() < deadline,
                "session command ran longer than {timeout:?}: {}{}",
                fs::read_to_string(&self.stdout).unwrap_or_default(),
                self.stderr_so_far()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        CommandOutput {
            code: fs::read_to_string(&self.status).ok().and_then(|s| s.trim().parse().ok()),
            stdout: fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: self.stderr_so_far(),
            pid: 0,
        }
    }
}

impl Drop for LoginSession {
    fn drop(&mut self) {
        // The shell leads its own process group: everything it started goes too.
        // SAFETY: kill on a process group we created.
        unsafe { libc::kill(-(self.shell.id() as i32), libc::SIGKILL) };
        let _ = self.shell.wait();
    }
}
