//! Compiles the eBPF programs (agent-ebpf) for the BPF target with the
//! nightly toolchain and bpf-linker; the agent embeds the object file.
//! `cargo xtask setup` installs both.

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("agent crate has no parent directory"))?
        .join("agent-ebpf");
    let root_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    let package = aya_build::Package { name: "airlock-ebpf", root_dir, ..Default::default() };
    aya_build::build_ebpf([package], aya_build::Toolchain::Nightly).context(
        "building the eBPF programs (run `cargo xtask setup` if the nightly toolchain or bpf-linker is missing)",
    )
}
