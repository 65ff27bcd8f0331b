//! Types shared by Airlock's eBPF programs and the agent that loads them.
//!
//! Every type here is `repr(C)` with explicit padding fields, because the
//! kernel compares map keys byte for byte: an uninitialised padding byte would
//! make two equal keys differ. Addresses are always stored in IPv6 form
//! (IPv4 as `::ffff:a.b.c.d`) so one trie and one key type cover both
//! families and dual-stack sockets.
#![no_std]

/// Name of each map, as pinned under the agent's bpffs directory (the kernel
/// keeps 15 bytes of a name, so they are short).
pub mod map_names {
    /// LPM trie: (port, address prefix) → [`TargetValue`](super::TargetValue).
    pub const TARGETS: &str = "TARGETS";
    /// LRU hash: socket cookie → [`ConnectRecord`](super::ConnectRecord).
    pub const COOKIE_RECORDS: &str = "COOKIE_RECORDS";
    /// LRU hash: [`PeerKey`](super::PeerKey) → [`ConnectRecord`](super::ConnectRecord).
    pub const PEER_RECORDS: &str = "PEER_RECORDS";
    /// Hash: cgroup id → 1, for cgroups whose connections are never redirected.
    pub const EXEMPT_CGROUPS: &str = "EXEMPT_CGROUPS";
    /// Array: port → [`PORT_PROTECTED`](super::PORT_PROTECTED) |
    /// [`PORT_LISTENER`](super::PORT_LISTENER) flags, the hot path's early exit.
    pub const PORT_FLAGS: &str = "PORT_FLAGS";
    /// Per-CPU array of [`Stat`](super::Stat) counters.
    pub const STATS: &str = "STATS";
    /// Per-CPU array: target id → connections redirected to the agent.
    pub const TARGET_HITS: &str = "TARGET_HITS";
    /// Hash: cgroup id of a confined `airlock run` → 1.
    pub const CONFINED: &str = "CONFINED";
    /// Array of one: 1 while `CONFINED` holds any cgroup.
    pub const CONFINING: &str = "CONFINING";
    /// Hash: IPv6-form address → 1, the host's own addresses beside loopback.
    pub const LOCAL_ADDRS: &str = "LOCAL_ADDRS";
}

/// Names of the programs in the object file, as pinned under the agent's bpffs directory.
pub mod program_names {
    /// `cgroup/connect4`: redirects IPv4 connects to protected targets.
    pub const CONNECT4: &str = "connect4";
    /// `cgroup/connect6`: redirects IPv6 (and IPv4-mapped) connects.
    pub const CONNECT6: &str = "connect6";
    /// `sockops`: indexes each redirected connection by the client's address.
    pub const SOCK_OPS: &str = "sock_ops_cb";
    /// `cgroup/getpeername4`: shows the client its original peer.
    pub const GETPEERNAME4: &str = "getpeername4";
    /// `cgroup/getpeername6`: same for IPv6 sockets.
    pub const GETPEERNAME6: &str = "getpeername6";
}

/// Confined `airlock run` cgroups at once.
pub const MAX_CONFINED_RUNS: u32 = 4096;
/// The host's own addresses the programs know of.
pub const MAX_LOCAL_ADDRS: u32 = 256;

/// Entries of the port-flags array: one per TCP port.
pub const PORT_COUNT: u32 = 65536;
/// Some target protects this destination port: look in the trie.
pub const PORT_PROTECTED: u8 = 1;
/// An agent listener uses this port: sock_ops indexes connects to it.
pub const PORT_LISTENER: u8 = 2;

/// Capacity of the protected-targets trie.
pub const MAX_TARGET_ENTRIES: u32 = 4096;
/// Number of target ids (index range of [`map_names::TARGET_HITS`]).
pub const MAX_TARGET_IDS: u32 = 1024;
/// Connections in flight between `connect()` and the agent's `accept()`.
/// LRU, so a flood of never-accepted connections evicts the oldest records
/// instead of making new connects fail.
pub const MAX_PENDING_CONNECTIONS: u32 = 65536;
/// Cgroups whose connections are never redirected (the agent's own).
pub const MAX_EXEMPT_CGROUPS: u32 = 64;

/// `AF_INET`, as recorded in [`ConnectRecord::family`].
pub const AF_INET: u16 = 2;
/// `AF_INET6`, as recorded in [`ConnectRecord::family`].
pub const AF_INET6: u16 = 10;

/// Length in bytes of the data part of a protected-target trie key:
/// the destination port (big endian) followed by the IPv6-form address.
pub const TARGET_KEY_LEN: usize = 18;

/// Builds the data part of a protected-target trie key.
///
/// The port comes first so that a prefix length of `16 + n` means
/// "this exact port, and the first `n` bits of the address".
#[inline(always)]
pub fn target_key_data(port: u16, addr: &[u8; 16]) -> [u8; TARGET_KEY_LEN] {
    let mut data = [0u8; TARGET_KEY_LEN];
    let port = port.to_be_bytes();
    data[0] = port[0];
    data[1] = port[1];
    let mut i = 0;
    while i < 16 {
        data[2 + i] = addr[i];
        i += 1;
    }
    data
}

/// Prefix length, in trie bits, of an exact-port entry covering `addr_bits`
/// bits of an IPv6-form address.
pub const fn target_prefix_len(addr_bits: u32) -> u32 {
    16 + addr_bits
}

/// What the eBPF program needs to know about a protected target.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetValue {
    /// Index into the agent's target table and [`map_names::TARGET_HITS`].
    pub target_id: u32,
    /// Loopback port of the agent listener that takes this target's connections.
    pub redirect_port: u16,
    /// Always zero.
    pub _pad: u16,
}

/// Everything known at `connect()` time about a redirected connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectRecord {
    /// cgroup v2 id of the connecting task.
    pub cgroup_id: u64,
    /// `bpf_ktime_get_boot_ns()` at connect: CLOCK_BOOTTIME, the clock of
    /// /proc/PID/stat's start time, so the agent can tell a reused pid.
    pub connect_boot_ns: u64,
    /// Original destination address, IPv6 form, network byte order.
    pub orig_addr: [u8; 16],
    /// Original destination port, host byte order.
    pub orig_port: u16,
    /// Address family of the client's socket ([`AF_INET`] or [`AF_INET6`]).
    pub family: u16,
    /// Target id from the matching [`TargetValue`].
    pub target_id: u32,
    /// Process id (thread group id) of the connecting task.
    pub tgid: u32,
    /// Thread id of the connecting task.
    pub tid: u32,
    /// Real uid of the connecting task.
    pub uid: u32,
    /// Real gid of the connecting task.
    pub gid: u32,
    /// `comm` of the connecting task, NUL padded.
    pub comm: [u8; 16],
}

/// The client's end of a redirected connection, as the agent sees it in
/// `accept()`'s peer address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerKey {
    /// Client's local address, IPv6 form, network byte order.
    pub addr: [u8; 16],
    /// Client's local port, host byte order.
    pub port: u16,
    /// Always zero.
    pub _pad: u16,
}

/// Global counters kept by the programs, indexes into [`map_names::STATS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// TCP connects to a protected port (the trie was consulted).
    ProtectedPortConnects = 0,
    /// Connects redirected to the agent.
    Redirected = 1,
    /// Connects to a protected target from an exempt cgroup (the agent's own).
    Exempt = 2,
    /// Connects refused because their record could not be stored.
    RecordFailed = 3,
    /// sock_ops found a redirected socket and indexed it by peer.
    Indexed = 4,
    /// A confined run's connect to the host's own (unprotected) services, refused.
    ConfinedRefused = 5,
}

/// Number of [`Stat`] counters.
pub const STAT_COUNT: u32 = 6;

/// Maps an IPv4 address (network byte order bytes) to its IPv6 form.
#[inline(always)]
pub fn v4_mapped(v4: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3]]
}

/// True when an IPv6-form address is an IPv4-mapped one (`::ffff:0:0/96`).
#[inline(always)]
pub fn is_v4_mapped(addr: &[u8; 16]) -> bool {
    addr[0] == 0
        && addr[1] == 0
        && addr[2] == 0
        && addr[3] == 0
        && addr[4] == 0
        && addr[5] == 0
        && addr[6] == 0
        && addr[7] == 0
        && addr[8] == 0
        && addr[9] == 0
        && addr[10] == 0xff
        && addr[11] == 0xff
}

/// True for destinations that reach this host whatever its interfaces
/// are: loopback (127.0.0.0/8, ::1) and the unspecified address (0.0.0.0/8,
/// ::), in IPv6 form.
#[inline(always)]
pub fn is_loopback_or_unspecified(addr: &[u8; 16]) -> bool {
    if is_v4_mapped(addr) {
        return addr[12] == 127 || addr[12] == 0;
    }
    let mut i = 0;
    while i < 15 {
        if addr[i] != 0 {
            return false;
        }
        i += 1;
    }
    addr[15] <= 1
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all of these are repr(C), Copy, contain no pointers and have
    // explicit padding fields, so every bit pattern is valid.
    unsafe impl aya::Pod for super::TargetValue {}
    unsafe impl aya::Pod for super::ConnectRecord {}
    unsafe impl aya::Pod for super::PeerKey {}
}
