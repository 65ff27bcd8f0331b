//! The agent's scheduling priority.
//!
//! One event loop serves every protected connection on the host. When the
//! host is busy, the scheduler shares a core between that loop and the
//! processes it serves; each time it preempts the loop, every session
//! waits, and so do the clients and servers waiting on them: cores go idle
//! while work is queued in the loop. Measured with HTTPS at 16 connections
//! on a 2-core host whose clients and target share its cores: at nice 0
//! the host stayed 18–22 % idle with Airlock in the path against 13 % with
//! nginx (two worker processes); at nice −5 Airlock's throughput was 90–96 %
//! of nginx's over HTTP/2 (85–90 % at 0) and 94–102 % over HTTP/1.1 (92–96
//! %). Under systemd, the service's cgroup weight shields it from users'
//! load too; the nice value does so wherever the agent runs. A little ahead
//! of users' processes is where a host's data path belongs; real-time
//! scheduling would let a runaway loop starve the host, and is not used.

/// Nice value unless the configuration says otherwise.
pub const DEFAULT_NICE: i32 = -5;

/// Sets the calling thread's nice value. Threads inherit their creator's,
/// so this runs before the agent starts any. Lowering it needs
/// CAP_SYS_NICE (root has it before privileges are dropped); without it
/// the agent runs on at its current priority, and says so.
pub fn set(nice: i32) {
    // SAFETY: setpriority has no memory-safety preconditions. For
    // PRIO_PROCESS with `who` 0, Linux changes the calling thread.
    let failed = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0;
    if failed {
        let error = std::io::Error::last_os_error();
        tracing::warn!(%error, nice, "could not set the agent's priority; it runs at its current one");
    } else {
        tracing::debug!(nice, "agent priority set");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread's nice value, as the kernel reports it.
    fn nice_of_this_thread() -> i32 {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        // Field 19 (nice), counted after the command name's closing parenthesis.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[test]
    fn the_thread_that_sets_it_and_threads_it_starts_run_at_the_value() {
        // Raising the nice value needs no privilege; in a thread of its own
        // so the test harness's threads keep theirs.
        std::thread::spawn(|| {
            let before = nice_of_this_thread();
            let target = (before + 3).min(19);
            set(target);
            assert_eq!(nice_of_this_thread(), target);
            let started = std::thread::spawn(nice_of_this_thread).join().unwrap();
            assert_eq!(started, target, "a thread started afterwards inherits it");
        })
        .join()
        .unwrap();
    }
}
