//! Walking a tree to scan it, safely as root: each directory is opened
//! relative to its parent's descriptor with `O_NOFOLLOW`, so a symlink
//! (or a directory swapped for one mid-walk) never leads out of the tree;
//! only regular files are read (FIFOs, sockets and devices are skipped
//! without being opened for reading: `O_NONBLOCK`, then `fstat`); the walk
//! stays on each root's filesystem (no `/proc`-like mounts underneath), is
//! bounded in depth and entries, and reads at most `max_file_bytes` of a
//! file. Nothing is ever written; `O_NOATIME` is used where the kernel
//! allows it (files the caller owns, or with CAP_FOWNER).

use std::{
    collections::HashSet,
    ffi::{CStr, CString, OsStr},
    io::Read as _,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
};

/// How far a walk goes.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Files larger than this are not read (counted as too large).
    pub max_file_bytes: u64,
    /// Directories deeper than this below a root are not entered.
    pub max_depth: usize,
    /// A walk stops after this many entries in all.
    pub max_entries: u64,
    /// Paths (and everything under them) matching one of these globs (`*`:
    /// any run of characters, `/` included) are left out.
    pub exclude: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_file_bytes: 4 << 20, max_depth: 64, max_entries: 5_000_000, exclude: Vec::new() }
    }
}

/// A regular file the walk read.
#[derive(Debug)]
pub struct FileRead<'a> {
    /// Its path (the root joined with the names walked).
    pub path: &'a Path,
    /// Owner uid.
    pub uid: u32,
    /// Its contents (all of it: larger files are not read).
    pub content: &'a [u8],
}

/// What a walk did, besides reading files.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WalkStats {
    /// Regular files read.
    pub files: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Symlinks not followed.
    pub symlinks: u64,
    /// FIFOs, sockets, devices not read.
    pub special: u64,
    /// Files over the size limit, not read.
    pub too_large: u64,
    /// Directories on another filesystem than their root, not entered.
    pub other_filesystems: u64,
    /// Paths left out by `exclude`.
    pub excluded: u64,
    /// Entries that could not be opened or read.
    pub errors: u64,
    /// Whether the entry limit stopped the walk.
    pub truncated: bool,
}

/// Where a path could not be read, and why (for reports; a sweep keeps
/// earlier findings of such paths rather than calling them gone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    /// The path.
    pub path: PathBuf,
    /// The error.
    pub error: String,
}

/// Walks every root, calling `visit` for each regular file read, and
/// returns what it skipped. The same directory reached twice (overlapping
/// roots, bind mounts) is walked once.
pub fn walk(
    roots: &[PathBuf],
    limits: &Limits,
    unreadable: &mut Vec<Unreadable>,
    mut visit: impl FnMut(FileRead<'_>),
) -> WalkStats {
    let mut walker = Walker {
        limits,
        stats: WalkStats::default(),
        seen_dirs: HashSet::new(),
        buffer: Vec::new(),
        entries: 0,
        unreadable,
    };
    for root in roots {
        walker.root(root, &mut visit);
    }
    walker.stats
}

struct Walker<'a> {
    limits: &'a Limits,
    stats: WalkStats,
    seen_dirs: HashSet<(u64, u64)>,
    buffer: Vec<u8>,
    entries: u64,
    unreadable: &'a mut Vec<Unreadable>,
}

impl Walker<'_> {
    fn root(&mut self, root: &Path, visit: &mut impl FnMut(FileRead<'_>)) {
        if self.excluded(root) {
            self.stats.excluded += 1;
            return;
        }
        let Ok(name) = CString::new(root.as_os_str().as_bytes()) else {
            return self.failed(root, "path has a NUL byte".into());
        };
        // The root itself as named; O_NOFOLLOW: a root that is a symlink is
        // not followed either (a sweep's roots are often world-writable /tmp paths).
        let fd = match open_at(libc::AT_FDCWD, &name, libc::O_PATH | libc::O_NOFOLLOW) {
            Ok(fd) => fd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => return self.failed(root, e.to_string()),
        };
        let stat = match fstat(&fd) {
            Ok(stat) => stat,
            Err(e) => return self.failed(root, e.to_string()),
        };
        match stat.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                drop(fd);
                match open_at(libc::AT_FDCWD, &name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW) {
                    Ok(dir) => self.directory(dir, root.to_owned(), stat.st_dev, 0, visit),
                    Err(e) => self.failed(root, e.to_string()),
                }
            }
            libc::S_IFREG => self.file(libc::AT_FDCWD, &name, root, visit),
            libc::S_IFLNK => self.stats.symlinks += 1,
            _ => self.stats.special += 1,
        }
    }

    fn directory(&mut self, dir: OwnedFd, path: PathBuf, dev: u64, depth: usize, visit: &mut impl FnMut(FileRead<'_>)) {
        let stat = match fstat(&dir) {
            Ok(stat) => stat,
            Err(e) => return self.failed(&path, e.to_string()),
        };
        if stat.st_dev != dev {
            self.stats.other_filesystems += 1;
            return;
        }
        if !self.seen_dirs.insert((stat.st_dev, stat.st_ino)) {
            return;
        }
        let names = match read_names(&dir) {
            Ok(names) => names,
            Err(e) => return self.failed(&path, e.to_string()),
        };
        for (name, kind) in names {
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                self.stats.truncated = true;
                return;
            }
            let child = path.join(OsStr::from_bytes(name.to_bytes()));
            if self.excluded(&child) {
                self.stats.excluded += 1;
                continue;
            }
            match kind {
                libc::DT_DIR => {
                    if depth + 1 > self.limits.max_depth {
                        continue;
                    }
                    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
                    match open_at(dir.as_raw_fd(), &name, flags) {
                        Ok(sub) => self.directory(sub, child, dev, depth + 1, visit),
                        // Replaced by a symlink since it was listed: not followed.
                        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => self.stats.symlinks += 1,
                        Err(e) => self.failed(&child, e.to_string()),
                    }
                }
                libc::DT_REG | libc::DT_UNKNOWN => self.file(dir.as_raw_fd(), &name, &child, visit),
                libc::DT_LNK => self.stats.symlinks += 1,
                _ => self.stats.special += 1,
            }
        }
    }

    fn file(&mut self, dir: libc::c_int, name: &CStr, path: &Path, visit: &mut impl FnMut(FileRead<'_>)) {
        // O_NONBLOCK: a FIFO that took a regular file's place opens without
        // waiting for a writer, and fstat below tells it apart.
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
        let fd = match open_at(dir, name, flags | libc::O_NOATIME) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => match open_at(dir, name, flags) {
                Ok(fd) => fd,
                Err(e) => return self.open_failed(path, e),
            },
            Err(e) => return self.open_failed(path, e),
        };
        let stat = match fstat(&fd) {
            Ok(stat) => stat,
            Err(e) => return self.failed(path, e.to_string()),
        };
        if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
            self.stats.special += 1;
            return;
        }
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        if size > self.limits.max_file_bytes {
            self.stats.too_large += 1;
            return;
        }
        self.buffer.clear();
        let mut file = std::fs::File::from(fd);
        // One byte past the limit tells a file that grew since fstat.
        if let Err(e) = (&mut file).take(self.limits.max_file_bytes + 1).read_to_end(&mut self.buffer) {
            return self.failed(path, e.to_string());
        }
        if self.buffer.len() as u64 > self.limits.max_file_bytes {
            self.stats.too_large += 1;
            return;
        }
        self.stats.files += 1;
        self.stats.bytes += self.buffer.len() as u64;
        visit(FileRead { path, uid: stat.st_uid, content: &self.buffer });
    }

    fn open_failed(&mut self, path: &Path, error: std::io::Error) {
        match error.raw_os_error() {
            // Listed as a file, now a symlink: not followed.
            Some(libc::ELOOP) => self.stats.symlinks += 1,
            // Removed since it was listed.
            Some(libc::ENOENT) => {}
            // A device or socket: nothing to read.
            Some(libc::ENXIO | libc::ENODEV | libc::EOPNOTSUPP) => self.stats.special += 1,
            _ => self.failed(path, error.to_string()),
        }
    }

    fn failed(&mut self, path: &Path, error: String) {
        self.stats.errors += 1;
        self.unreadable.push(Unreadable { path: path.to_owned(), error });
    }

    fn excluded(&self, path: &Path) -> bool {
        let text = path.to_string_lossy();
        self.limits.exclude.iter().any(|pattern| crate::glob::matches(pattern, &text))
    }
}

fn open_at(dir: libc::c_int, name: &CStr, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated; the descriptor returned is owned here.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    // SAFETY: stat is plain data; fstat fills it on success.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a valid pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat)
}

/// A directory's entries (not `.` and `..`) with their types, sorted by
/// name so walks are reproducible.
fn read_names(dir: &OwnedFd) -> std::io::Result<Vec<(CString, u8)>> {
    // fdopendir takes the descriptor it is given: hand it a duplicate.
    let duplicate = dir.try_clone()?;
    let raw = std::os::fd::IntoRawFd::into_raw_fd(duplicate);
    // SAFETY: a valid directory descriptor whose ownership passes to the DIR stream.
    let stream = unsafe { libc::fdopendir(raw) };
    if stream.is_null() {
        let error = std::io::Error::last_os_error();
        // SAFETY: fdopendir failed, so the descriptor is still ours to close.
        unsafe { libc::close(raw) };
        return Err(error);
    }
    let mut names = Vec::new();
    loop {
        // SAFETY: errno is thread-local; reset to tell the end from an error.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: a valid stream; the entry is read before the next call.
        let entry = unsafe { libc::readdir64(stream) };
        if entry.is_null() {
            let errno = std::io::Error::last_os_error();
            // SAFETY: closes the stream and its descriptor once.
            unsafe { libc::closedir(stream) };
            if errno.raw_os_error().unwrap_or(0) != 0 {
                return Err(errno);
            }
            break;
        }
        // SAFETY: d_name is NUL-terminated within the entry.
        let (name, kind) = unsafe { (CStr::from_ptr((*entry).d_name.as_ptr()), (*entry).d_type) };
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push((name.to_owned(), kind));
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(roots: &[PathBuf], limits: &Limits) -> (Vec<(String, Vec<u8>)>, WalkStats) {
        let mut files = Vec::new();
        let mut unreadable = Vec::new();
        let stats = walk(roots, limits, &mut unreadable, |file| {
            files.push((file.path.to_string_lossy().into_owned(), file.content.to_vec()));
        });
        (files, stats)
    }

    #[test]
    fn symlinks_fifos_large_files_and_exclusions() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "outside").unwrap();
        let tree = tempfile::tempdir().unwrap();
        let root = tree.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("skip/me")).unwrap();
        std::fs::write(root.join("a/b/file"), "inside").unwrap();
        std::fs::write(root.join("skip/me/file"), "x").unwrap();
        std::fs::write(root.join("big"), vec![b'x'; 2048]).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("link-dir")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("link-file")).unwrap();
        nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let limits = Limits { max_file_bytes: 1024, exclude: vec!["*/skip".into()], ..Limits::default() };
        let (files, stats) = collect(&[root.to_owned()], &limits);
        let names: Vec<&str> = files.iter().map(|(p, _)| p.strip_prefix(&*root.to_string_lossy()).unwrap()).collect();
        assert_eq!(names, vec!["/a/b/file"]);
        assert_eq!((stats.symlinks, stats.special, stats.too_large, stats.excluded), (2, 1, 1, 1));
        assert_eq!((stats.files, stats.bytes, stats.errors), (1, 6, 0));
    }

    #[test]
    fn file_roots_symlink_roots_absent_roots_and_limits() {
        let tree = tempfile::tempdir().unwrap();
        let file = tree.path().join("f");
        std::fs::write(&file, "data").unwrap();
        std::os::unix::fs::symlink(&file, tree.path().join("l")).unwrap();
        let (files, stats) =
            collect(&[file.clone(), tree.path().join("l"), tree.path().join("absent")], &Limits::default());
        assert_eq!(files, vec![(file.to_string_lossy().into_owned(), b"data".to_vec())]);
        assert_eq!(stats.symlinks, 1);
        let (files, stats) =
            collect(&[tree.path().to_owned(), tree.path().to_owned()], &Limits { max_entries: 1, ..Limits::default() });
        assert_eq!(files.len(), 1, "the entry limit stops the walk; a root seen twice is walked once");
        assert!(stats.truncated);
    }
}
