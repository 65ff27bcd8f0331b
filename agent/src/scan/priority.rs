//! Running a sweep as background work: the lowest CPU priority (nice 19),
//! the idle I/O class (served only when no one else uses the disk), and a
//! bounded share of a CPU (sleeping in proportion to CPU time used).

use std::time::Duration;

/// `ioprio_set`'s "who": one thread (Linux counts threads as processes here).
const IOPRIO_WHO_PROCESS: libc::c_int = 1;
/// The idle I/O scheduling class.
const IOPRIO_CLASS_IDLE: libc::c_int = 3;
const IOPRIO_CLASS_SHIFT: libc::c_int = 13;

/// Makes the calling thread nice 19 and idle-class for I/O. Both are per
/// thread on Linux, so the agent's other threads keep their priority.
pub fn lower_this_thread() -> std::io::Result<()> {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    // SAFETY: plain syscalls with integer arguments.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let priority = IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT;
    // SAFETY: as above.
    if unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, tid, priority) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The calling thread's CPU time.
fn thread_cpu_time() -> Duration {
    // SAFETY: timespec is plain data, filled by the call.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(u64::try_from(now.tv_sec).unwrap_or(0), u32::try_from(now.tv_nsec).unwrap_or(0))
}

/// Keeps a thread's CPU use near a share of one CPU: after each piece of
/// work, [`CpuBudget::spent`] sleeps long enough that CPU time over
/// elapsed time stays at most the share.
#[derive(Debug)]
pub struct CpuBudget {
    percent: u32,
    last_cpu: Duration,
    /// Sleep owed and not yet taken (sleeping in small bits costs more than it saves).
    owed: Duration,
}

/// Owed sleep is taken once it reaches this.
const SLEEP_QUANTUM: Duration = Duration::from_millis(20);

impl CpuBudget {
    /// A budget of `percent` (1–100) of one CPU, counted from now.
    pub fn new(percent: u8) -> Self {
        Self { percent: u32::from(percent.clamp(1, 100)), last_cpu: thread_cpu_time(), owed: Duration::ZERO }
    }

    /// Call after each piece of work; sleeps when enough is owed.
    pub fn spent(&mut self) {
        if self.percent >= 100 {
            return;
        }
        let cpu = thread_cpu_time();
        let used = cpu.saturating_sub(self.last_cpu);
        self.last_cpu = cpu;
        self.owed += used * (100 - self.percent) / self.percent;
        if self.owed >= SLEEP_QUANTUM {
            std::thread::sleep(self.owed);
            self.owed = Duration::ZERO;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowering_priority_works_for_any_user() {
        // Lowering is always allowed (raising is not): run it on a thread of its own.
        std::thread::spawn(|| {
            lower_this_thread().unwrap();
            // SAFETY: plain syscall.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
            assert_eq!(nice, 19);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_budget_sleeps_in_proportion_to_cpu_used() {
        let mut budget = CpuBudget::new(50);
        let started = std::time::Instant::now();
        let spin_until = thread_cpu_time() + Duration::from_millis(40);
        while thread_cpu_time() < spin_until {
            std::hint::black_box(0u64);
        }
        budget.spent();
        // 40 ms of CPU at 50 % owes ≥ 40 ms of sleep: ≥ 80 ms elapsed.
        assert!(started.elapsed() >= Duration::from_millis(80), "{:?}", started.elapsed());
    }
}
