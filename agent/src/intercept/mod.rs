//! The eBPF side of the agent: load, attach and pin the programs, keep the
//! protected-targets map in step with policy, and hand each accepted
//! connection the record of who opened it.
//!
//! Links and maps are pinned under the configured bpffs directory. The pins
//! outlive the agent on purpose: with the agent gone, protected connections
//! are still redirected to its (now closed) listener and fail, instead of
//! reaching the target unseen. A starting agent replaces the pinned links
//! atomically (new link pinned beside the old, then renamed over it), so a
//! restart never leaves a moment without interception and never attaches a
//! program twice.

pub mod cgroup;
mod maps;

use std::{
    fs,
    net::SocketAddr,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    sync::Mutex,
};

use airlock_ebpf::{ConnectRecord, program_names};
use aya::{
    Ebpf, EbpfLoader,
    programs::{CgroupAttachMode, CgroupSockAddr, SockOps, links::FdLink},
};

pub use maps::{Counters, InterceptMaps, TargetEntry};

/// The compiled eBPF object, built by build.rs from the agent-ebpf crate.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/airlock-ebpf"));

/// Errors while installing or using the interception programs.
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    /// Loading the object or a program into the kernel failed.
    #[error("loading eBPF programs: {0}")]
    Load(String),
    /// Attaching or pinning a program failed.
    #[error("attaching {program} at {cgroup}: {message}")]
    Attach {
        /// Program name.
        program: &'static str,
        /// cgroup directory.
        cgroup: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A map operation failed.
    #[error("eBPF map {map}: {message}")]
    Map {
        /// Map name.
        map: &'static str,
        /// What went wrong.
        message: String,
    },
    /// A cgroup could not be found or read.
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    /// bpffs I/O.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Program kinds; a sock_addr program's hook (connect4, getpeername6, …)
/// comes from its ELF section.
#[derive(Clone, Copy)]
enum Hook {
    SockAddr,
    SockOps,
}

const PROGRAMS: [(&str, Hook); 5] = [
    (program_names::CONNECT4, Hook::SockAddr),
    (program_names::CONNECT6, Hook::SockAddr),
    (program_names::GETPEERNAME4, Hook::SockAddr),
    (program_names::GETPEERNAME6, Hook::SockAddr),
    (program_names::SOCK_OPS, Hook::SockOps),
];

/// One attached program, for `airlock status`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct AttachedProgram {
    /// Program name in the object file.
    pub name: String,
    /// Kernel link id.
    pub link_id: u32,
    /// Kernel program id.
    pub program_id: u32,
    /// Pin path of the link.
    pub pin: PathBuf,
}

/// Loads one program and attaches it, returning its link. The two program
/// kinds have the same methods but no common trait.
macro_rules! load_and_attach {
    ($program:expr, $kind:ty, $cgroup:expr, $fail:expr) => {{
        let program: &mut $kind = $program.try_into().map_err(|e| $fail(error_chain(&e)))?;
        program.load().map_err(|e| $fail(error_chain(&e)))?;
        let id = program.attach($cgroup, CgroupAttachMode::Single).map_err(|e| $fail(error_chain(&e)))?;
        program.take_link(id).map_err(|e| $fail(error_chain(&e)))?.try_into().map_err(|e| $fail(error_chain(&e)))?
    }};
}

/// The installed interception: programs attached at a cgroup, and the maps.
pub struct Interceptor {
    /// Keeps the loaded programs' file descriptors for the agent's lifetime.
    _ebpf: Ebpf,
    maps: Mutex<InterceptMaps>,
    attached: Vec<AttachedProgram>,
    cgroup: PathBuf,
}

impl Interceptor {
    /// Loads the programs (reusing pinned maps), attaches them at `cgroup`
    /// replacing any pinned links of an earlier run, exempts the agent's own
    /// cgroup and publishes `targets`.
    pub fn install(
        pin_dir: &Path,
        cgroup: &Path,
        agent_cgroup_id: u64,
        targets: &[TargetEntry],
    ) -> Result<Self, InterceptError> {
        ensure_bpffs(pin_dir)?;
        let links_dir = pin_dir.join("links");
        let maps_dir = pin_dir.join("maps");
        for dir in [&links_dir, &maps_dir] {
            fs::create_dir_all(dir).map_err(|source| InterceptError::Io { path: dir.clone(), source })?;
        }

        // Pinned maps of an earlier build with another layout cannot be
        // reused: the kernel would hand the new programs the old shapes. The
        // old pinned links keep the old maps alive (and keep failing closed)
        // until the new links replace them.
        let stale = maps::incompatible_pins(&maps_dir);
        if !stale.is_empty() {
            tracing::warn!(maps = ?stale, "pinned maps from an incompatible build; starting with fresh maps");
            remove_pins(&maps_dir)?;
        }
        let mut ebpf = load(&maps_dir)?;
        let mut maps = InterceptMaps::take(&mut ebpf)?;
        maps.set_exempt_cgroups(&[agent_cgroup_id])?;
        maps.sync_targets(targets)?;

        let cgroup_dir =
            fs::File::open(cgroup).map_err(|source| InterceptError::Io { path: cgroup.to_owned(), source })?;
        let mut attached = Vec::with_capacity(PROGRAMS.len());
        for (name, hook) in PROGRAMS {
            let attach_err =
                |message: String| InterceptError::Attach { program: name, cgroup: cgroup.to_owned(), message };
            let program =
                ebpf.program_mut(name).ok_or_else(|| attach_err("program missing from the eBPF object".into()))?;
            let cgroup_fd = cgroup_dir.as_fd();
            let link: FdLink = match hook {
                Hook::SockAddr => load_and_attach!(program, CgroupSockAddr, cgroup_fd, attach_err),
                Hook::SockOps => load_and_attach!(program, SockOps, cgroup_fd, attach_err),
            };
            attached.push(replace_pinned_link(&links_dir, name, link).map_err(attach_err)?);
        }
        tracing::info!(cgroup = %cgroup.display(), programs = attached.len(), "interception attached");
        Ok(Self { _ebpf: ebpf, maps: Mutex::new(maps), attached, cgroup: cgroup.to_owned() })
    }

    /// Takes (and removes) the record of the connection whose client end is `peer`.
    pub fn take_record(&self, peer: SocketAddr) -> Option<ConnectRecord> {
        self.lock_maps().take_record(peer)
    }

    /// Publishes a new set of protected targets (policy reload).
    pub fn sync_targets(&self, targets: &[TargetEntry]) -> Result<(), InterceptError> {
        self.lock_maps().sync_targets(targets)
    }

    /// Confines what runs in cgroup `cgroup_id`: no connections to the
    /// host's own services but protected targets.
    pub fn confine(&self, cgroup_id: u64) -> Result<(), InterceptError> {
        self.lock_maps().confine(cgroup_id)
    }

    /// Forgets confined cgroups not in `live`.
    pub fn release_confined_except(&self, live: &std::collections::HashSet<u64>) -> Result<(), InterceptError> {
        self.lock_maps().release_confined_except(live)
    }

    /// Publishes the host's own addresses.
    pub fn set_local_addrs(&self, addrs: &[std::net::IpAddr]) -> Result<(), InterceptError> {
        self.lock_maps().set_local_addrs(addrs)
    }

    /// Global counters and per-target redirect counts.
    pub fn counters(&self) -> Result<Counters, InterceptError> {
        self.lock_maps().counters()
    }

    /// The attached programs.
    pub fn attached(&self) -> &[AttachedProgram] {
        &self.attached
    }

    /// How many of the attached programs are still pinned: an unpinned
    /// link (`airlock uninstall`, someone clearing bpffs) is detached, or
    /// will be when this agent exits, and cannot be adopted by the next.
    pub fn attached_now(&self) -> usize {
        self.attached.iter().filter(|program| program.pin.exists()).count()
    }

    /// The cgroup the programs are attached at.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    fn lock_maps(&self) -> std::sync::MutexGuard<'_, InterceptMaps> {
        // A panic while holding the lock cannot leave the maps half-updated
        // in a way that matters: every operation is a single syscall or an
        // idempotent sync, so recover the guard.
        self.maps.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Removes every pinned link and map: interception stops for good.
pub fn uninstall(pin_dir: &Path) -> Result<Vec<PathBuf>, InterceptError> {
    let mut removed = Vec::new();
    for sub in ["links", "maps"] {
        let dir = pin_dir.join(sub);
        if dir.exists() {
            removed.extend(remove_pins(&dir)?);
            let _ = fs::remove_dir(&dir);
        }
    }
    let _ = fs::remove_dir(pin_dir);
    Ok(removed)
}

fn load(maps_dir: &Path) -> Result<Ebpf, InterceptError> {
    EbpfLoader::new()
        .default_map_pin_directory(maps_dir)
        .load(EBPF_OBJECT)
        .map_err(|e| InterceptError::Load(error_chain(&e)))
}

/// An error with its whole source chain: aya keeps the errno and the
/// verifier's log there, the only way to know why a kernel said no.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    message
}

/// Pins `link` at `links_dir/name`, atomically replacing (and so detaching)
/// the link an earlier agent pinned there.
fn replace_pinned_link(links_dir: &Path, name: &'static str, link: FdLink) -> Result<AttachedProgram, String> {
    let pin = links_dir.join(name);
    // bpffs refuses names containing a dot.
    let staging = links_dir.join(format!("{name}_next"));
    let _ = fs::remove_file(&staging);
    let info = link.info().map_err(|e| format!("link info: {}", error_chain(&e)))?;
    let pinned = link.pin(&staging).map_err(|e| format!("pinning {}: {}", staging.display(), error_chain(&e)))?;
    // rename(2) over the old pin drops the old link's last reference, which
    // detaches it; the new link has been attached since before this point.
    fs::rename(&staging, &pin).map_err(|e| format!("renaming {} to {}: {e}", staging.display(), pin.display()))?;
    drop(pinned);
    Ok(AttachedProgram { name: name.to_owned(), link_id: info.id(), program_id: info.program_id(), pin })
}

/// Removes the pins in one directory, returning what was removed.
fn remove_pins(dir: &Path) -> Result<Vec<PathBuf>, InterceptError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| InterceptError::Io { path, source }
    };
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        // A pinned link with no other reference detaches when its pin goes.
        fs::remove_file(&path).map_err(io(&path))?;
        removed.push(path);
    }
    Ok(removed)
}

/// Makes sure `pin_dir` lies on a mounted bpffs, mounting /sys/fs/bpf if needed.
fn ensure_bpffs(pin_dir: &Path) -> Result<(), InterceptError> {
    const BPF_FS_MAGIC: i64 = 0xcafe4a11;
    let bpffs = Path::new("/sys/fs/bpf");
    let is_bpffs =
        |path: &Path| nix::sys::statfs::statfs(path).map(|s| s.filesystem_type().0 == BPF_FS_MAGIC).unwrap_or(false);
    if !is_bpffs(bpffs) {
        nix::mount::mount(Some("bpf"), bpffs, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
            .map_err(|e| InterceptError::Io { path: bpffs.to_owned(), source: e.into() })?;
    }
    fs::create_dir_all(pin_dir).map_err(|source| InterceptError::Io { path: pin_dir.to_owned(), source })?;
    if !is_bpffs(pin_dir) {
        return Err(InterceptError::Io {
            path: pin_dir.to_owned(),
            source: std::io::Error::other("not on a bpf filesystem; pins must live under a bpffs mount"),
        });
    }
    Ok(())
}
