//! Who is on the other end of the control socket, as the kernel says.
//!
//! SO_PEERCRED gives the uid and pid at `connect()`. The rest (audit
//! session, cgroup) is read from procfs, and a pid may be reused by the
//! time it is read: SO_PEERPIDFD gives a handle on the very process that
//! connected, and if that process is still running after the read, the pid
//! was its own. A caller that exits meanwhile is refused. Kernels before 6.5
//! lack SO_PEERPIDFD: there the handle is taken by pid right after accept,
//! which leaves the pid a moment (between the caller's connect and that
//! call) in which it could be reused.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

use tokio::net::UnixStream;

use crate::process::ProcessInfo;

/// The calling process, described and checked.
pub fn identify(stream: &UnixStream, cgroup_root: &Path) -> io::Result<ProcessInfo> {
    let cred = stream.peer_cred()?;
    let pid = cred
        .pid()
        .and_then(|pid| u32::try_from(pid).ok())
        .ok_or_else(|| io::Error::other("the kernel gave no pid for the caller"))?;
    let pidfd = match peer_pidfd(stream) {
        Err(error) if error.raw_os_error() == Some(libc::ENOPROTOOPT) => pidfd_open(pid)?,
        other => other?,
    };
    let process = ProcessInfo::of_live_process(pid, cred.uid(), cred.gid(), Path::new("/proc"), cgroup_root);
    if !still_running(&pidfd)? {
        return Err(io::Error::other("the caller exited before it could be identified"));
    }
    Ok(process)
}

fn peer_pidfd(stream: &UnixStream) -> io::Result<OwnedFd> {
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(stream.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERPIDFD, (&raw mut fd).cast(), &raw mut len)
    };
    if rc != 0 || fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just handed us this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just handed us this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// A pidfd polls readable once its process has exited.
fn still_running(pidfd: &OwnedFd) -> io::Result<bool> {
    let mut poll = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, zero timeout.
    let rc = unsafe { libc::poll(&raw mut poll, 1, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_caller_is_described_from_the_kernel_and_procfs() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let root = crate::intercept::cgroup::cgroup2_root().unwrap_or_else(|_| "/sys/fs/cgroup".into());
        let caller = identify(&ours, &root).unwrap();
        assert_eq!(caller.pid, std::process::id());
        // SAFETY: getuid has no preconditions.
        assert_eq!(caller.uid, unsafe { libc::getuid() });
        assert!(caller.exe.is_some() && caller.cgroup.is_some(), "{caller:?}");
        drop(theirs);
    }
}
