//! The programs and maps; see the crate docs for the data path.

use airlock_ebpf::{
    AF_INET, AF_INET6, ConnectRecord, MAX_CONFINED_RUNS, MAX_EXEMPT_CGROUPS, MAX_LOCAL_ADDRS, MAX_PENDING_CONNECTIONS,
    MAX_TARGET_ENTRIES, MAX_TARGET_IDS, PORT_COUNT, PORT_LISTENER, PORT_PROTECTED, PeerKey, STAT_COUNT, Stat,
    TARGET_KEY_LEN, TargetValue, is_loopback_or_unspecified, is_v4_mapped, target_key_data, target_prefix_len,
    v4_mapped,
};
use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_TCP_CLOSE},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_get_current_cgroup_id, bpf_get_socket_cookie, bpf_ktime_get_boot_ns},
    },
    macros::{cgroup_sock_addr, map, sock_ops},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    programs::{SockAddrContext, SockOpsContext},
};

/// Return value of a cgroup sock_addr program that lets the call proceed.
const ALLOW: i32 = 1;
/// Return value that makes the call fail with EPERM.
const REFUSE: i32 = 0;
const SOCK_STREAM: u32 = 1;
/// All bits of an IPv6-form address, for the full-length trie lookup.
const FULL_PREFIX: u32 = target_prefix_len(128);

/// Flags per port. Nearly every connect goes to a port no target protects;
/// this array lookup (inlined by the verifier) lets those leave before the
/// trie walk, so unprotected traffic pays almost nothing.
#[map]
static PORT_FLAGS: Array<u8> = Array::pinned(PORT_COUNT, 0);

#[inline(always)]
fn port_has(port: u16, flag: u8) -> bool {
    PORT_FLAGS.get(u32::from(port)).is_some_and(|flags| flags & flag != 0)
}

/// Protected targets, filled by the agent from policy. Longest prefix wins, so
/// a specific host can carry a different target than the subnet around it.
#[map]
static TARGETS: LpmTrie<[u8; TARGET_KEY_LEN], TargetValue> = LpmTrie::pinned(MAX_TARGET_ENTRIES, 0);

/// Connect-time facts by socket cookie, kept while the client socket lives
/// because getpeername needs them; removed at TCP_CLOSE (LRU as a backstop).
#[map]
static COOKIE_RECORDS: LruHashMap<u64, ConnectRecord> = LruHashMap::pinned(MAX_PENDING_CONNECTIONS, 0);

/// The same facts keyed by the client's address, consumed (removed) by the
/// agent when it accepts the connection. A reused source port overwrites its
/// stale entry at the next connect, before any SYN, so a stale record is never
/// handed to a different connection.
#[map]
static PEER_RECORDS: LruHashMap<PeerKey, ConnectRecord> = LruHashMap::pinned(MAX_PENDING_CONNECTIONS, 0);

/// cgroups never redirected: the agent's own, so its upstream connections to
/// protected targets go out directly instead of looping back into itself.
#[map]
static EXEMPT_CGROUPS: HashMap<u64, u8> = HashMap::pinned(MAX_EXEMPT_CGROUPS, 0);

/// Global counters for `airlock status`, per CPU so the hot path never contends.
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::pinned(STAT_COUNT, 0);

/// Redirected connections per target id, for `airlock status`.
#[map]
static TARGET_HITS: PerCpuArray<u64> = PerCpuArray::pinned(MAX_TARGET_IDS, 0);

/// Confined `airlock run` cgroups, filled by the agent when it starts a
/// run of an actor with `confine = true`. What runs in one cannot leave
/// it, so the cgroup id is the whole identity.
#[map]
static CONFINED: HashMap<u64, u8> = HashMap::pinned(MAX_CONFINED_RUNS, 0);

/// 1 while any confined run exists (set by the agent before the first one
/// enters `CONFINED`, cleared when the last is gone): without one, a
/// connect to an unprotected port still leaves on inlined array loads.
#[map]
static CONFINING: Array<u8> = Array::pinned(1, 0);

#[inline(always)]
fn confining() -> bool {
    CONFINING.get(0).is_some_and(|flag| *flag != 0)
}

/// The host's own addresses beside loopback, kept by the agent: a local
/// service is as near at 10.0.0.5 as at 127.0.0.1.
#[map]
static LOCAL_ADDRS: HashMap<[u8; 16], u8> = HashMap::pinned(MAX_LOCAL_ADDRS, 0);

#[inline(always)]
fn count(array: &PerCpuArray<u64>, index: u32) {
    if let Some(counter) = array.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, and programs do not preempt each other on a CPU.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
fn lookup_target(addr: &[u8; 16], port: u16) -> Option<TargetValue> {
    let key = Key::new(FULL_PREFIX, target_key_data(port, addr));
    TARGETS.get(&key).copied()
}

/// Decides whether to redirect this connect and, if so, records it.
///
/// Returns the redirect port, `Err(())` when the connect must be refused, or
/// `Ok(None)` to let it through untouched.
#[inline(always)]
fn intercept(ctx: &SockAddrContext, orig_addr: [u8; 16], orig_port: u16, family: u16) -> Result<Option<u16>, ()> {
    let target = if port_has(orig_port, PORT_PROTECTED) {
        count(&STATS, Stat::ProtectedPortConnects as u32);
        lookup_target(&orig_addr, orig_port)
    } else {
        None
    };
    let Some(target) = target else {
        // A confined run reaches the host's own services only through the
        // gate: a local sshd, a container runtime's TCP socket, the
        // person's dev servers would take its commands as the person.
        if confining() && is_local(&orig_addr) {
            // SAFETY: helper with no arguments.
            let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
            if unsafe { CONFINED.get(&cgroup_id) }.is_some() {
                count(&STATS, Stat::ConfinedRefused as u32);
                return Err(());
            }
        }
        return Ok(None);
    };
    // SAFETY: helper with no arguments.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    if unsafe { EXEMPT_CGROUPS.get(&cgroup_id) }.is_some() {
        count(&STATS, Stat::Exempt as u32);
        return Ok(None);
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let record = ConnectRecord {
        cgroup_id,
        // SAFETY: helper with no arguments.
        connect_boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        orig_addr,
        orig_port,
        family,
        target_id: target.target_id,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    // SAFETY: ctx is the program's own context pointer.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if COOKIE_RECORDS.insert(&cookie, &record, 0).is_err() {
        // Without a record the agent cannot say who connected; refusing here
        // gives the client a clear EPERM instead of a connection the agent drops.
        count(&STATS, Stat::RecordFailed as u32);
        return Err(());
    }
    count(&STATS, Stat::Redirected as u32);
    count(&TARGET_HITS, target.target_id);
    Ok(Some(target.redirect_port))
}

#[inline(always)]
fn is_local(addr: &[u8; 16]) -> bool {
    is_loopback_or_unspecified(addr) || unsafe { LOCAL_ADDRS.get(addr) }.is_some()
}

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the kernel hands a valid bpf_sock_addr for the program's lifetime.
    let sa = unsafe { &mut *ctx.sock_addr };
    if sa.type_ != SOCK_STREAM {
        return ALLOW;
    }
    let orig_addr = v4_mapped(sa.user_ip4.to_ne_bytes());
    let orig_port = u16::from_be(sa.user_port as u16);
    match intercept(&ctx, orig_addr, orig_port, AF_INET) {
        Ok(Some(port)) => {
            sa.user_ip4 = u32::from_ne_bytes([127, 0, 0, 1]);
            sa.user_port = u32::from(port.to_be());
            ALLOW
        }
        Ok(None) => ALLOW,
        Err(()) => REFUSE,
    }
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    // SAFETY: as in connect4.
    let sa = unsafe { &mut *ctx.sock_addr };
    if sa.type_ != SOCK_STREAM {
        return ALLOW;
    }
    let orig_addr = words_to_bytes(sa.user_ip6);
    let orig_port = u16::from_be(sa.user_port as u16);
    match intercept(&ctx, orig_addr, orig_port, AF_INET6) {
        Ok(Some(port)) => {
            // A dual-stack socket connecting to an IPv4-mapped address must
            // stay on the IPv4 path: send it to ::ffff:127.0.0.1, not ::1.
            let loopback = if is_v4_mapped(&orig_addr) {
                v4_mapped([127, 0, 0, 1])
            } else {
                let mut one = [0u8; 16];
                one[15] = 1;
                one
            };
            sa.user_ip6 = bytes_to_words(&loopback);
            sa.user_port = u32::from(port.to_be());
            ALLOW
        }
        Ok(None) => ALLOW,
        Err(()) => REFUSE,
    }
}

#[sock_ops]
pub fn sock_ops_cb(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_TCP_CONNECT_CB => index_by_peer(&ctx),
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == BPF_TCP_CLOSE => {
            // SAFETY: ctx is the program's own context pointer.
            let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
            let _ = COOKIE_RECORDS.remove(&cookie);
        }
        _ => {}
    }
    1
}

#[inline(always)]
fn index_by_peer(ctx: &SockOpsContext) {
    // Only connects to an agent listener can be redirected ones.
    if !port_has(u32::from_be(ctx.remote_port()) as u16, PORT_LISTENER) {
        return;
    }
    // SAFETY: ctx is the program's own context pointer.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: the value is copied out before any other map operation.
    let Some(record) = (unsafe { COOKIE_RECORDS.get(&cookie) }).copied() else {
        return;
    };
    let addr = if ctx.family() == u32::from(AF_INET) {
        v4_mapped(ctx.local_ip4().to_ne_bytes())
    } else {
        words_to_bytes(local_ip6(ctx))
    };
    let key = PeerKey { addr, port: ctx.local_port() as u16, _pad: 0 };
    if PEER_RECORDS.insert(&key, &record, 0).is_ok() {
        count(&STATS, Stat::Indexed as u32);
    }
    // Ask for state changes so the cookie entry goes when the socket closes.
    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
}

/// Reads `local_ip6` one word at a time with the offset in each load: the
/// verifier rejects loads through a ctx pointer that was advanced first,
/// which is what copying the array does.
#[inline(always)]
fn local_ip6(ctx: &SockOpsContext) -> [u32; 4] {
    let ops = ctx.ops;
    // SAFETY: ops is the kernel's bpf_sock_ops for this program run.
    unsafe {
        [
            core::ptr::read_volatile(core::ptr::addr_of!((*ops).local_ip6[0])),
            core::ptr::read_volatile(core::ptr::addr_of!((*ops).local_ip6[1])),
            core::ptr::read_volatile(core::ptr::addr_of!((*ops).local_ip6[2])),
            core::ptr::read_volatile(core::ptr::addr_of!((*ops).local_ip6[3])),
        ]
    }
}

#[cgroup_sock_addr(getpeername4)]
pub fn getpeername4(ctx: SockAddrContext) -> i32 {
    if let Some(record) = record_of(&ctx) {
        // SAFETY: as in connect4.
        let sa = unsafe { &mut *ctx.sock_addr };
        let a = record.orig_addr;
        sa.user_ip4 = u32::from_ne_bytes([a[12], a[13], a[14], a[15]]);
        sa.user_port = u32::from(record.orig_port.to_be());
    }
    ALLOW
}

#[cgroup_sock_addr(getpeername6)]
pub fn getpeername6(ctx: SockAddrContext) -> i32 {
    if let Some(record) = record_of(&ctx) {
        // SAFETY: as in connect4.
        let sa = unsafe { &mut *ctx.sock_addr };
        sa.user_ip6 = bytes_to_words(&record.orig_addr);
        sa.user_port = u32::from(record.orig_port.to_be());
    }
    ALLOW
}

#[inline(always)]
fn record_of(ctx: &SockAddrContext) -> Option<ConnectRecord> {
    // SAFETY: ctx is the program's own context pointer; the value is copied out.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    unsafe { COOKIE_RECORDS.get(&cookie) }.copied()
}

#[inline(always)]
fn words_to_bytes(words: [u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let b = words[i].to_ne_bytes();
        out[i * 4] = b[0];
        out[i * 4 + 1] = b[1];
        out[i * 4 + 2] = b[2];
        out[i * 4 + 3] = b[3];
        i += 1;
    }
    out
}

#[inline(always)]
fn bytes_to_words(bytes: &[u8; 16]) -> [u32; 4] {
    let mut out = [0u32; 4];
    let mut i = 0;
    while i < 4 {
        out[i] = u32::from_ne_bytes([bytes[i * 4], bytes[i * 4 + 1], bytes[i * 4 + 2], bytes[i * 4 + 3]]);
        i += 1;
    }
    out
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
