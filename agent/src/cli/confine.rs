//! What a confined `airlock run` does to itself before it becomes the
//! command. The agent has put it in the run's cgroup, whose connections to
//! the host's own services the eBPF programs refuse; what is left can only
//! be done by a process to itself, and nothing it execs can undo it:
//!
//! 1. `no_new_privs`: setuid and setgid helpers (`at`, `crontab`, `sudo`,
//!    `su`) run without their privilege, so they cannot queue work for
//!    daemons outside the run.
//! 2. A user and mount namespace of its own in which the person's Unix
//!    sockets are not there: fresh `/tmp` and `/var/tmp`, an empty
//!    `/run/user/UID` (user manager, session D-Bus, gpg-agent, rootless
//!    containers), `/run/screen`, the container runtimes' sockets, every
//!    listening socket the person owns (a `tmux -S ~/sock`, an ssh-agent,
//!    an ssh ControlMaster) or may write through a group of theirs (docker,
//!    libvirt, lxd), and what the actor's `hide` lists.
//!    The mounts belong to a namespace the command has no capability in,
//!    and are locked in any namespace it makes, so it cannot lift them.
//! 3. A Landlock domain: the command cannot trace, read (`/proc/PID/mem`,
//!    `environ`) or signal the person's other processes, connect to their
//!    abstract Unix sockets, or mount anything.
//! 4. Descriptors beyond stdin, stdout and stderr close on exec, and the
//!    working directory is entered again by name (one below a hidden
//!    directory would otherwise still reach what is under the cover).

use std::{
    fs,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _},
    path::{Path, PathBuf},
};

use nix::{
    mount::{MsFlags, mount},
    sched::{CloneFlags, unshare},
    unistd::{Gid, Uid, User},
};

/// Directories a confined run gets empty copies of (`{uid}` is the person's).
const PRIVATE_DIRS: [&str; 4] = ["/tmp", "/var/tmp", "/run/user/{uid}", "/run/screen"];

/// Container runtimes' sockets: whoever reaches one starts containers as
/// the runtime's owner sees fit.
const CONTAINER_SOCKETS: [&str; 6] = [
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/run/podman/podman.sock",
    "/run/buildkit/buildkitd.sock",
    "/run/crio/crio.sock",
    "/run/user/{uid}/docker.sock",
];

/// `__SO_ACCEPTCON` in /proc/net/unix's flags: a listening socket.
const LISTENING: u32 = 0x0001_0000;

/// Landlock ABI 6 scopes: abstract Unix sockets and signals.
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1;
const SCOPE_SIGNAL: u64 = 2;
/// `LANDLOCK_ACCESS_FS_EXECUTE`, handled (and allowed everywhere) on
/// kernels before ABI 6 only to make a domain.
const ACCESS_FS_EXECUTE: u64 = 1;
const RULE_PATH_BENEATH: libc::c_int = 1;
const CREATE_RULESET_VERSION: libc::c_uint = 1;

/// What to hide, in which form.
#[derive(Debug, PartialEq, Eq)]
enum Hidden {
    /// An empty tmpfs over a directory.
    Directory(PathBuf),
    /// /dev/null over a socket or file.
    File(PathBuf),
}

/// Confines this process (see the module docs); `hide` is the actor's own
/// list. Any step that fails fails the run: a confined actor does not run
/// unconfined.
pub fn confine(hide: &[String]) -> Result<(), String> {
    let (uid, gid) = (Uid::current(), Gid::current());
    let home = User::from_uid(uid).ok().flatten().map(|user| user.dir);
    let mut groups: Vec<u32> = nix::unistd::getgroups().unwrap_or_default().into_iter().map(Gid::as_raw).collect();
    groups.push(gid.as_raw());
    let person = Person { uid: uid.as_raw(), groups: &groups, home: home.as_deref() };
    let hidden = what_to_hide(&person, hide, &listening_sockets());
    let cwd = std::env::current_dir().map_err(|e| format!("reading the working directory: {e}"))?;

    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("setting no_new_privs: {e}"))?;
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS).map_err(|e| {
        format!("making a user and mount namespace: {e} (does this host allow unprivileged user namespaces?)")
    })?;
    fs::write("/proc/self/setgroups", "deny").map_err(|e| format!("/proc/self/setgroups: {e}"))?;
    fs::write("/proc/self/uid_map", format!("{uid} {uid} 1")).map_err(|e| format!("/proc/self/uid_map: {e}"))?;
    fs::write("/proc/self/gid_map", format!("{gid} {gid} 1")).map_err(|e| format!("/proc/self/gid_map: {e}"))?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_SLAVE, None::<&str>)
        .map_err(|e| format!("making / a slave mount: {e}"))?;
    for entry in &hidden {
        hide_one(entry, uid)?;
    }
    // The working directory still points below what was just covered: go
    // there again by name, through the new mounts (or, if it is hidden now,
    // to the home directory), so nothing is reached by a relative path.
    if std::env::set_current_dir(&cwd).is_err() {
        let fallback = home.clone().filter(|home| std::env::set_current_dir(home).is_ok());
        let fallback = match fallback {
            Some(home) => home,
            None => {
                std::env::set_current_dir("/").map_err(|e| format!("changing to /: {e}"))?;
                PathBuf::from("/")
            }
        };
        eprintln!(
            "airlock run: {} is hidden from this confined run; starting in {}",
            cwd.display(),
            fallback.display()
        );
    }
    restrict_with_landlock()?;
    caps::clear(None, caps::CapSet::Ambient).map_err(|e| format!("dropping capabilities: {e}"))?;
    caps::clear(None, caps::CapSet::Bounding).map_err(|e| format!("dropping capabilities: {e}"))?;
    for set in [caps::CapSet::Inheritable, caps::CapSet::Effective, caps::CapSet::Permitted] {
        caps::clear(None, set).map_err(|e| format!("dropping capabilities: {e}"))?;
    }
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only flags descriptors.
    let closed = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if closed != 0 {
        return Err(format!("closing inherited descriptors: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn hide_one(entry: &Hidden, uid: Uid) -> Result<(), String> {
    let (path, result) = match entry {
        Hidden::Directory(dir) => {
            let mode = if dir.starts_with("/run/user") { "0700" } else { "1777" };
            let options = format!("mode={mode},uid={uid}");
            let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            (dir, mount(Some("tmpfs"), dir, Some("tmpfs"), flags, Some(options.as_str())))
        }
        Hidden::File(file) => (file, mount(Some("/dev/null"), file, None::<&str>, MsFlags::MS_BIND, None::<&str>)),
    };
    // A socket that went away in between needs no hiding.
    match result {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(error) => Err(format!("hiding {}: {error}", path.display())),
    }
}

/// Paths of the Unix sockets listening on this host now (from
/// /proc/net/unix; abstract ones have no path and are Landlock's).
fn listening_sockets() -> Vec<PathBuf> {
    fs::read_to_string("/proc/net/unix").map(|table| parse_listening(&table)).unwrap_or_default()
}

fn parse_listening(table: &str) -> Vec<PathBuf> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(fields.get(3)?, 16).ok()?;
            let path = fields.get(7)?;
            (flags & LISTENING != 0 && path.starts_with('/')).then(|| PathBuf::from(path))
        })
        .collect()
}

/// Whose sockets are hidden.
struct Person<'a> {
    uid: u32,
    /// Every group of theirs (supplementary and primary).
    groups: &'a [u32],
    home: Option<&'a Path>,
}

impl Person<'_> {
    /// Whether they own the socket, or may write it through a group of
    /// theirs (docker, libvirt, lxd…: a runtime that runs what it is sent).
    /// Sockets anyone may write are system services, left alone.
    fn reaches(&self, meta: &fs::Metadata) -> bool {
        meta.uid() == self.uid || (meta.mode() & 0o020 != 0 && self.groups.contains(&meta.gid()))
    }
}

/// Everything to hide, directories first: the fixed places, the actor's
/// list, and each listening socket the person reaches ([`Person::reaches`])
/// outside the directories already hidden.
fn what_to_hide(person: &Person<'_>, extra: &[String], listening: &[PathBuf]) -> Vec<Hidden> {
    let expand = |path: &str| -> Option<PathBuf> {
        let path = path.replace("{uid}", &person.uid.to_string());
        match path.strip_prefix("~/") {
            Some(rest) => person.home.map(|home| home.join(rest)),
            None => Some(PathBuf::from(path)),
        }
    };
    let mut directories = Vec::new();
    let mut files = Vec::new();
    let candidates = PRIVATE_DIRS.iter().chain(&CONTAINER_SOCKETS).copied().chain(extra.iter().map(String::as_str));
    for path in candidates.filter_map(expand) {
        match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => directories.push(path),
            Ok(_) => files.push(path),
            Err(_) => {}
        }
    }
    for socket in listening {
        let Ok(meta) = fs::symlink_metadata(socket) else { continue };
        if meta.file_type().is_socket() && person.reaches(&meta) {
            files.push(socket.clone());
        }
    }
    files.retain(|file| !directories.iter().any(|dir| file.starts_with(dir)));
    files.sort();
    files.dedup();
    directories.into_iter().map(Hidden::Directory).chain(files.into_iter().map(Hidden::File)).collect()
}

/// Puts this process in a Landlock domain of its own. From ABI 6 the
/// domain scopes signals and abstract sockets; on any ABI it keeps ptrace
/// and mounts inside. No Landlock at all fails the run.
fn restrict_with_landlock() -> Result<(), String> {
    // SAFETY: the documented version query: null attribute, size 0.
    let abi = unsafe {
        libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0usize, CREATE_RULESET_VERSION)
    };
    if abi < 1 {
        return Err(format!("this kernel has no Landlock: {}", std::io::Error::last_os_error()));
    }
    // struct landlock_ruleset_attr { handled_access_fs, handled_access_net, scoped }
    let (attr, size): ([u64; 3], usize) =
        if abi >= 6 { ([0, 0, SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL], 24) } else { ([ACCESS_FS_EXECUTE, 0, 0], 8) };
    // SAFETY: attr outlives the call and `size` is within it.
    let ruleset = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, attr.as_ptr(), size, 0u32) };
    if ruleset < 0 {
        return Err(format!("creating a Landlock ruleset: {}", std::io::Error::last_os_error()));
    }
    let ruleset = ruleset as libc::c_int;
    let result = (|| {
        if abi < 6 {
            allow_execute_everywhere(ruleset)?;
        }
        // SAFETY: a ruleset descriptor this function made.
        if unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) } != 0 {
            return Err(format!("entering the Landlock domain: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    })();
    // SAFETY: closing the descriptor made above, once.
    unsafe { libc::close(ruleset) };
    result
}

fn allow_execute_everywhere(ruleset: libc::c_int) -> Result<(), String> {
    // SAFETY: a path with O_PATH, closed below.
    let fd = unsafe { libc::open(c"/".as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!("opening /: {}", std::io::Error::last_os_error()));
    }
    // struct landlock_path_beneath_attr { u64 allowed_access; s32 parent_fd } (packed)
    let mut attr = [0u8; 12];
    attr[..8].copy_from_slice(&ACCESS_FS_EXECUTE.to_ne_bytes());
    attr[8..].copy_from_slice(&fd.to_ne_bytes());
    // SAFETY: attr is the packed struct the call reads.
    let added = unsafe { libc::syscall(libc::SYS_landlock_add_rule, ruleset, RULE_PATH_BENEATH, attr.as_ptr(), 0u32) };
    let error = std::io::Error::last_os_error();
    // SAFETY: the descriptor opened above.
    unsafe { libc::close(fd) };
    if added != 0 {
        return Err(format!("adding a Landlock rule: {error}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_come_from_proc_net_unix_with_paths_only() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
                     0000000000000000: 00000002 00000000 00010000 0001 01 3391 /run/user/1000/bus\n\
                     0000000000000000: 00000002 00000000 00000000 0001 03 3392 /tmp/client.sock\n\
                     0000000000000000: 00000002 00000000 00010000 0001 01 3393 @/tmp/.X11-unix/X0\n\
                     0000000000000000: 00000002 00000000 00010000 0005 01 3394\n\
                     garbage\n";
        assert_eq!(parse_listening(table), [PathBuf::from("/run/user/1000/bus")]);
    }

    #[test]
    fn what_to_hide_covers_fixed_places_the_persons_sockets_and_the_actors_list() {
        use std::os::unix::fs::PermissionsExt as _;
        // Not under /tmp, which is hidden as a whole: the build tree.
        let dir = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
        let (uid, gid) = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
        let mine = dir.path().join("mine.sock");
        let _mine = std::os::unix::net::UnixListener::bind(&mine).unwrap();
        let runtime = dir.path().join("runtime.sock");
        let _runtime = std::os::unix::net::UnixListener::bind(&runtime).unwrap();
        fs::set_permissions(&runtime, fs::Permissions::from_mode(0o660)).unwrap();
        let plain = dir.path().join("plain-file");
        fs::write(&plain, "").unwrap();
        let extra_dir = dir.path().join("daemon");
        fs::create_dir(&extra_dir).unwrap();
        let listening = vec![mine.clone(), runtime.clone(), plain.clone(), PathBuf::from("/nonexistent/x.sock")];
        let sockets = |hidden: &[Hidden]| -> Vec<PathBuf> {
            hidden.iter().filter_map(|h| if let Hidden::File(p) = h { Some(p.clone()) } else { None }).collect()
        };
        // Under /tmp (a checkout there) a socket needs no mount of its own.
        let shown = |path: &PathBuf| !path.starts_with("/tmp");

        let owner = Person { uid, groups: &[], home: Some(dir.path()) };
        let hidden = what_to_hide(&owner, &["~/daemon".to_owned()], &listening);
        assert_eq!(hidden.first(), Some(&Hidden::Directory(PathBuf::from("/tmp"))));
        assert!(hidden.contains(&Hidden::Directory(extra_dir)), "{hidden:?}");
        assert_eq!(sockets(&hidden).contains(&mine), shown(&mine), "{hidden:?}");
        assert!(!sockets(&hidden).contains(&plain), "not a socket: {hidden:?}");

        // Someone else's socket: hidden when a group of theirs may write it.
        let member = Person { uid: uid.wrapping_add(4242), groups: &[gid], home: None };
        let hidden = sockets(&what_to_hide(&member, &[], &listening));
        assert_eq!(hidden.contains(&runtime), shown(&runtime), "{hidden:?}");
        assert!(!hidden.contains(&mine), "owner-only (0755 minus umask): not theirs to reach: {hidden:?}");
        let outsider = Person { uid: uid.wrapping_add(4242), groups: &[gid.wrapping_add(4242)], home: None };
        assert!(!sockets(&what_to_hide(&outsider, &[], &listening)).contains(&runtime));
    }
}
