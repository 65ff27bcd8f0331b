//! Compiles the eBPF programs (agent-ebpf) for the BPF target with bpf-linker;
//! the agent embeds the object file. `cargo xtask setup` installs both.
//!
//! The BPF target needs `-Z build-std`, a nightly feature. Rather than
//! whatever `nightly` is today, the pinned toolchain in
//! `agent-ebpf/toolchain` is used with `RUSTC_BOOTSTRAP=1`: bpf-linker reads
//! rustc's LLVM bitcode, so rustc's LLVM must be the one bpf-linker was built
//! against (LLVM 22), and a moving nightly breaks that the day it upgrades.

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("agent crate has no parent directory"))?
        .join("agent-ebpf");
    let toolchain_file = ebpf_dir.join("toolchain");
    println!("cargo:rerun-if-changed={}", toolchain_file.display());
    let toolchain =
        std::fs::read_to_string(&toolchain_file).with_context(|| format!("reading {}", toolchain_file.display()))?;
    let root_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    let package = aya_build::Package { name: "airlock-ebpf", root_dir, ..Default::default() };
    // SAFETY: the build script is single-threaded; the variable is for the
    // cargo that aya-build runs.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(toolchain.trim())).context(
        "building the eBPF programs (run `cargo xtask setup` if the pinned toolchain, its rust-src or bpf-linker is missing)",
    )
}
