//! Dropping privileges once start-up is done.
//!
//! After the programs are attached and every socket and file the agent needs
//! is open, the only privileged thing left is reading other users'
//! `/proc/PID/exe`, which needs CAP_SYS_PTRACE. Everything else goes, from
//! every set, and no_new_privs stops any way back.

use anyhow::Context as _;
use caps::{CapSet, Capability, CapsHashSet};

/// Capabilities the running agent keeps.
pub const KEPT: [Capability; 1] = [Capability::CAP_SYS_PTRACE];

/// Must run before any other thread exists: capabilities are per thread and
/// new threads inherit the creator's.
pub fn drop_all_but_runtime_needs() -> anyhow::Result<()> {
    let keep: CapsHashSet = KEPT.into_iter().collect();
    // Shrinking the bounding set needs CAP_SETPCAP; under systemd the unit's
    // CapabilityBoundingSet has already shrunk it.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        for cap in caps::all().difference(&keep) {
            caps::drop(None, CapSet::Bounding, *cap)
                .with_context(|| format!("dropping {cap} from the bounding set"))?;
        }
    }
    caps::clear(None, CapSet::Ambient).context("clearing ambient capabilities")?;
    caps::clear(None, CapSet::Inheritable).context("clearing inheritable capabilities")?;
    let available = caps::read(None, CapSet::Permitted).context("reading permitted capabilities")?;
    let kept: CapsHashSet = keep.intersection(&available).copied().collect();
    caps::set(None, CapSet::Effective, &kept).context("setting effective capabilities")?;
    caps::set(None, CapSet::Permitted, &kept).context("setting permitted capabilities")?;
    // SAFETY: prctl with constant arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setting no_new_privs");
    }
    tracing::info!(kept = ?kept, "capabilities dropped");
    Ok(())
}
