//! Helpers for Airlock's unprivileged integration tests.

use std::path::{Path, PathBuf};

/// The `airlock` binary under test: `$AIRLOCK_BIN`, or the workspace's debug
/// build (`cargo xtask test` builds it first).
pub fn airlock_bin() -> PathBuf {
    let bin = std::env::var_os("AIRLOCK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/airlock"));
    assert!(bin.exists(), "{} does not exist: run `cargo xtask test` (it builds the agent first)", bin.display());
    bin
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_owned()
}
