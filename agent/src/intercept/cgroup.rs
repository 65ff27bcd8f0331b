//! Finding cgroup v2 directories and their ids.
//!
//! The eBPF programs are attached at a cgroup and identify the agent by its
//! cgroup id (the cgroup directory's inode number on cgroup v2), so the agent
//! has to find the unified hierarchy, whose mount point differs between
//! unified hosts (`/sys/fs/cgroup`) and hybrid ones (`/sys/fs/cgroup/unified`).

use std::{
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// Errors while locating or joining a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// /proc/self/mountinfo has no cgroup2 mount.
    #[error("no cgroup2 filesystem is mounted (looked in /proc/self/mountinfo)")]
    NoCgroup2,
    /// A path that should be a cgroup v2 directory is not one.
    #[error("{0} is not a directory of the cgroup2 hierarchy")]
    NotCgroup2(PathBuf),
    /// An I/O error on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io { path: path.to_owned(), source }
}

/// Mount point of the cgroup2 hierarchy, from `/proc/self/mountinfo`.
pub fn cgroup2_root() -> Result<PathBuf, CgroupError> {
    let path = Path::new("/proc/self/mountinfo");
    let mountinfo = fs::read_to_string(path).map_err(io_err(path))?;
    parse_cgroup2_mount(&mountinfo).ok_or(CgroupError::NoCgroup2)
}

/// Finds the cgroup2 mount point in mountinfo text. Fields: id, parent id,
/// major:minor, root, mount point, options, optional fields…, "-", fstype, …
fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mountinfo(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let value = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 id of a cgroup directory, as `bpf_get_current_cgroup_id()` reports it.
pub fn cgroup_id(dir: &Path) -> Result<u64, CgroupError> {
    let meta = fs::metadata(dir).map_err(io_err(dir))?;
    if !dir.join("cgroup.procs").exists() {
        return Err(CgroupError::NotCgroup2(dir.to_owned()));
    }
    Ok(meta.ino())
}

/// Path, relative to the cgroup2 root, of the cgroup a process is in
/// (the `0::` line of `/proc/PID/cgroup`).
pub fn cgroup_of(pid: &str) -> Result<String, CgroupError> {
    let path = PathBuf::from(format!("/proc/{pid}/cgroup"));
    let text = fs::read_to_string(&path).map_err(io_err(&path))?;
    text.lines().find_map(|line| line.strip_prefix("0::")).map(str::to_owned).ok_or(CgroupError::NotCgroup2(path))
}

/// Creates `dir` if needed and moves the calling process (all its threads) into it.
pub fn join(dir: &Path) -> Result<(), CgroupError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let procs = dir.join("cgroup.procs");
    fs::write(&procs, "0").map_err(io_err(&procs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_on_hybrid_host() {
        let mountinfo = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
";
        assert_eq!(parse_cgroup2_mount(mountinfo), Some(PathBuf::from("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn finds_cgroup2_on_unified_host_with_escaped_path() {
        let mountinfo = "29 23 0:26 / /sys/fs/my\\040cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(parse_cgroup2_mount(mountinfo), Some(PathBuf::from("/sys/fs/my cgroup")));
    }

    #[test]
    fn no_cgroup2_mount() {
        assert_eq!(parse_cgroup2_mount("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"), None);
        assert_eq!(parse_cgroup2_mount("garbage\n\n - \n"), None);
    }

    #[test]
    fn unescape_leaves_plain_and_truncated_escapes_alone() {
        assert_eq!(unescape_mountinfo("/a\\134b"), "/a\\b");
        assert_eq!(unescape_mountinfo("/a\\13"), "/a\\13");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
