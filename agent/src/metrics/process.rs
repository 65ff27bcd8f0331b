//! The agent process's own resources, from procfs.

use std::path::Path;

/// Memory, descriptors and CPU time of one process.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// Resident set size.
    pub resident_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// User and system CPU time.
    pub cpu_seconds: f64,
}

impl ProcessStats {
    /// This process's (what cannot be read stays 0).
    pub fn of_self() -> Self {
        Self::read(Path::new("/proc/self"))
    }

    /// The process whose procfs directory is `dir`.
    pub fn read(dir: &Path) -> Self {
        // SAFETY: sysconf has no preconditions.
        let (page, ticks) = unsafe { (libc::sysconf(libc::_SC_PAGESIZE), libc::sysconf(libc::_SC_CLK_TCK)) };
        let resident_pages = std::fs::read_to_string(dir.join("statm"))
            .ok()
            .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0);
        let open_fds = std::fs::read_dir(dir.join("fd")).map_or(0, |entries| entries.count() as u64);
        let cpu_ticks = std::fs::read_to_string(dir.join("stat")).ok().and_then(|stat| cpu_ticks(&stat)).unwrap_or(0);
        Self {
            resident_bytes: resident_pages * u64::try_from(page).unwrap_or(4096),
            open_fds,
            cpu_seconds: cpu_ticks as f64 / ticks.max(1) as f64,
        }
    }
}

/// utime + stime from `/proc/PID/stat`, read after the command name, which
/// may hold spaces and parentheses of its own.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    Some(fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_an_odd_command_name() {
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 1000 10";
        assert_eq!(cpu_ticks(stat), Some(300));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn this_process_has_memory_and_descriptors() {
        let stats = ProcessStats::of_self();
        assert!(stats.resident_bytes > 0 && stats.open_fds > 0, "{stats:?}");
    }
}
