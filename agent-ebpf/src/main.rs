//! Airlock's eBPF data path.
//!
//! Attached at a cgroup (normally the cgroup2 root), these programs send every
//! TCP connection to a protected target into the agent on loopback, and leave
//! everything else alone:
//!
//! 1. `connect4`/`connect6` look the destination up in `TARGETS`. On a match
//!    they store a `ConnectRecord` under the socket's cookie and rewrite the
//!    destination to the agent's listener. A confined `airlock run`
//!    (`CONFINED`) that connects to the host's own addresses anywhere else
//!    is refused: local services would run its commands as the person.
//! 2. `sock_ops` (TCP_CONNECT_CB, before the SYN leaves) copies that record to
//!    `PEER_RECORDS`, keyed by the client's own address and port: that is
//!    the peer address the agent sees in `accept()`, so it finds the record
//!    without racing the client.
//! 3. `getpeername4`/`getpeername6` show the client its original destination.
//!
//! Every map is pinned by name so that a restarted agent reuses it, and so
//! that the pinned programs keep working (and keep failing closed) while no
//! agent runs.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod programs;

/// The programs only exist for the BPF target; a host build of the workspace
/// gets this empty binary instead.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
