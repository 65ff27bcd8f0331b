//! Airlock: a host agent that intercepts connections to protected targets
//! with eBPF, attributes them to people, applies policy, proxies them and
//! records them in a tamper-evident audit log.
//!
//! The crate is one binary (`airlock`, the agent and its CLI); the library
//! exists so fuzz targets and integration tests can reach the parsers.

#![warn(missing_docs)]

// The allocator's library is linked wherever this crate is (tests and
// benches too), not only in the agent binary that makes it the global
// allocator: daemon::release_free_memory calls its `mi_collect`.
extern crate mimalloc as _;

pub mod actors;
pub mod approvals;
pub mod audit;
pub mod blast_radius;
pub mod cli;
pub mod command_guard;
pub mod config;
pub mod control;
pub mod credentials;
pub mod daemon;
pub mod glob;
pub mod guardrails;
pub mod hex;
pub mod http;
pub mod identity;
pub mod intercept;
pub mod logging;
pub mod masking;
pub mod metrics;
pub mod panics;
pub mod percent;
pub mod policy;
pub mod process;
pub mod proxy;
pub mod recording;
pub mod redact;
pub mod scan;
pub mod secret;
pub mod source;
