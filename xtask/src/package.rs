//! `cargo xtask package`: the Debian package (cargo-deb, from
//! `[package.metadata.deb]` in agent/Cargo.toml), checked by lintian.
//!
//! The man pages and completions come from the binary being packaged
//! (`airlock generate-assets`), so they describe exactly its command line.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// Where generated files go, inside the profile's target directory: the
/// `target/release/package-assets/...` entries of the cargo-deb metadata.
const ASSETS_DIR: &str = "package-assets";

/// What to package and how.
pub struct Options {
    /// The dev-profile build (what the tests run) instead of a release build.
    pub debug: bool,
    /// Package the binary already built instead of building it first.
    pub no_build: bool,
    /// The package's version (default: the crate's, revision 1).
    pub deb_version: Option<String>,
    /// Directory the .deb is written to (default: cargo-deb's, TARGET/debian).
    pub output: Option<PathBuf>,
    /// Skip lintian.
    pub no_lintian: bool,
}

/// Builds (unless told not to) and packages; returns the .deb's path.
pub fn package(root: &Path, options: &Options) -> anyhow::Result<PathBuf> {
    if !options.no_build {
        super::build(root, !options.debug)?;
    }
    let profile_dir = target_directory(root)?.join(if options.debug { "debug" } else { "release" });
    let binary = profile_dir.join("airlock");
    if !binary.is_file() {
        bail!("{} is not built: run without --no-build", binary.display());
    }
    generate_assets(&binary, &profile_dir.join(ASSETS_DIR))?;

    let mut deb = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    deb.args(["deb", "-p", "airlock", "--no-build"]).current_dir(root);
    if options.debug {
        // cargo-deb frowns on dev builds (a warning); the tests package the
        // binary they test, stripped, compressed fast.
        deb.args(["--profile", "dev", "--strip", "--fast"]);
    }
    if let Some(version) = &options.deb_version {
        deb.args(["--deb-version", version]);
    }
    if let Some(output) = &options.output {
        std::fs::create_dir_all(output).with_context(|| format!("creating {}", output.display()))?;
        deb.arg("--output").arg(output);
    }
    println!("$ {deb:?}");
    let out = deb.output().context("running cargo deb (install it with `cargo xtask setup`)")?;
    if !out.status.success() {
        bail!("cargo deb failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = deb_path(&stdout).with_context(|| format!("cargo deb named no .deb in its output: {stdout}"))?;
    println!("package: {}", path.display());
    if !options.no_lintian {
        lintian(&path)?;
    }
    Ok(path)
}

/// The target directory cargo builds into (CARGO_TARGET_DIR, a config's
/// build.target-dir, or the workspace's target/), as cargo itself reports it.
fn target_directory(root: &Path) -> anyhow::Result<PathBuf> {
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(root)
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).context("reading cargo metadata")?;
    metadata["target_directory"].as_str().map(PathBuf::from).context("cargo metadata has no target_directory")
}

/// Man pages and completions from `binary`, into `dir` (emptied first, so
/// a subcommand that went away leaves no page behind); man pages gzipped as
/// Debian policy wants (cargo-deb compresses only files it did not build).
fn generate_assets(binary: &Path, dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("removing {}", dir.display())),
    }
    let out = Command::new(binary)
        .arg("generate-assets")
        .arg(dir)
        .output()
        .with_context(|| format!("running {} generate-assets", binary.display()))?;
    if !out.status.success() {
        bail!("{} generate-assets failed: {}", binary.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let pages: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .filter(|path| path.extension().is_some_and(|ext| ext == "1"))
        .collect();
    if pages.is_empty() {
        bail!("{} generate-assets wrote no man page", binary.display());
    }
    // -n: no name or time stamp inside, so the same page gives the same bytes.
    let status = Command::new("gzip").args(["-9nf"]).args(&pages).status().context("running gzip")?;
    if !status.success() {
        bail!("gzip of the man pages failed ({status})");
    }
    Ok(())
}

/// The .deb cargo-deb wrote: the last line of its output naming one.
fn deb_path(stdout: &str) -> Option<PathBuf> {
    stdout.lines().rev().map(str::trim).find(|line| line.ends_with(".deb")).map(PathBuf::from)
}

/// Fails on any lintian error or warning that the package's overrides do
/// not explain (packaging/debian/lintian-overrides).
fn lintian(deb: &Path) -> anyhow::Result<()> {
    println!("$ lintian --fail-on error,warning {}", deb.display());
    let status = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--info"])
        .arg(deb)
        .status()
        .context("running lintian (install it with `cargo xtask setup`)")?;
    if !status.success() {
        bail!("lintian found errors or warnings in {} ({status})", deb.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deb_is_the_last_line_naming_one() {
        let out = "warning: dev profile\n/work/target/debian/airlock_0.1.0-1_amd64.deb\n";
        assert_eq!(deb_path(out), Some(PathBuf::from("/work/target/debian/airlock_0.1.0-1_amd64.deb")));
        assert_eq!(deb_path("nothing here\n"), None);
    }
}
