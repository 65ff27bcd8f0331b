//! `cargo xtask`: set-up, build, run, test and bench Airlock.

mod setup;

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Airlock development tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what this Debian machine lacks (packages, nightly rust-src, bpf-linker, bpffs).
    Setup {
        /// Only report what is missing; exit 1 if anything is.
        #[arg(long)]
        check: bool,
    },
    /// Build the agent (its build.rs compiles the eBPF programs).
    Build {
        /// Optimised build.
        #[arg(long)]
        release: bool,
    },
    /// Run the agent in the foreground with config/dev.toml and the shipped default policy.
    Run {
        /// Extra arguments for `airlock agent`.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run all tests: unit and integration, then the privileged vm-tests.
    Test {
        /// Only unit and integration tests.
        #[arg(long, conflicts_with = "vm")]
        unit: bool,
        /// Only the privileged vm-tests.
        #[arg(long)]
        vm: bool,
        /// Test name filters, passed to cargo test.
        #[arg(trailing_var_arg = true)]
        filters: Vec<String>,
    },
    /// Measure interception overhead and relay latency against the direct path.
    Bench,
}

fn main() -> ExitCode {
    match run(Cli::parse().task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> anyhow::Result<()> {
    let root = workspace_root();
    match task {
        Task::Setup { check: true } => setup::check(),
        Task::Setup { check: false } => setup::install(),
        Task::Build { release } => {
            setup::install()?;
            build(&root, release)
        }
        Task::Run { args } => {
            setup::install()?;
            build(&root, false)?;
            let error = Command::new(root.join("target/debug/airlock"))
                .args(["agent", "--config"])
                .arg(root.join("config/dev.toml"))
                .args(args)
                .current_dir(&root)
                .exec();
            Err(error).context("starting target/debug/airlock")
        }
        Task::Test { unit, vm, filters } => {
            setup::install()?;
            test(&root, !vm, !unit, &filters)
        }
        Task::Bench => {
            setup::install()?;
            bench(&root)
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_owned()
}

/// Runs a command in the workspace root, failing with its name on a non-zero exit.
fn cargo(root: &Path, args: &[&str], env: &[(&str, &Path)]) -> anyhow::Result<()> {
    println!("$ cargo {}", args.join(" "));
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.args(args).current_dir(root);
    for (key, value) in env {
        command.env(key, value);
    }
    let status = command.status().context("running cargo")?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn build(root: &Path, release: bool) -> anyhow::Result<()> {
    let mut args = vec!["build", "-p", "airlock"];
    if release {
        args.push("--release");
    }
    cargo(root, &args, &[])
}

fn test(root: &Path, unit: bool, vm: bool, filters: &[String]) -> anyhow::Result<()> {
    build(root, false)?;
    let airlock = root.join("target/debug/airlock");
    let env = [("AIRLOCK_BIN", airlock.as_path())];
    let with_filters = |mut args: Vec<&'static str>| -> Vec<String> {
        let mut args: Vec<String> = args.drain(..).map(str::to_owned).collect();
        if !filters.is_empty() {
            args.push("--".into());
            args.extend(filters.iter().cloned());
        }
        args
    };
    if unit {
        let args = with_filters(vec!["test", "-p", "airlock", "-p", "airlock-tests", "-p", "xtask"]);
        cargo(root, &args.iter().map(String::as_str).collect::<Vec<_>>(), &env)?;
    }
    if vm {
        if !setup::is_root() {
            if std::env::var("CI").as_deref() == Ok("true") {
                bail!("vm-tests need root (eBPF, cgroups, network namespaces); in CI they must run");
            }
            println!("SKIPPED: vm-tests need root; run `sudo -E cargo xtask test --vm`");
            return Ok(());
        }
        // One lab at a time: each attaches programs and starts servers, and
        // the machine has two cores.
        let mut args = with_filters(vec!["test", "-p", "airlock-vm-tests"]);
        if !args.iter().any(|a| a == "--") {
            args.push("--".into());
        }
        args.push("--test-threads=1".into());
        cargo(root, &args.iter().map(String::as_str).collect::<Vec<_>>(), &env)?;
    }
    Ok(())
}

fn bench(root: &Path) -> anyhow::Result<()> {
    if !setup::is_root() {
        bail!("the benchmark attaches eBPF programs and creates network namespaces: run it as root");
    }
    build(root, true)?;
    cargo(root, &["build", "--release", "-p", "airlock-vm-tests", "--bin", "airlock-bench"], &[])?;
    let status = Command::new(root.join("target/release/airlock-bench"))
        .env("AIRLOCK_BIN", root.join("target/release/airlock"))
        .current_dir(root)
        .status()
        .context("running airlock-bench")?;
    if !status.success() {
        bail!("airlock-bench failed ({status})");
    }
    Ok(())
}
