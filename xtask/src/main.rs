//! `cargo xtask`: set-up, build, run, test and bench Airlock.

mod package;
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
    /// Install what this Debian machine lacks (packages, the eBPF toolchain's rust-src, bpf-linker, bpffs,
    /// OpenBao, kubectl, the OIDC provider fixture's node modules, cargo-deb and lintian).
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
    Bench {
        /// Only the masking engine's throughput (one core, no root needed).
        #[arg(long, conflicts_with = "soak")]
        masking: bool,
        /// Only the soak (about 5 minutes): three cycles of 1,000 PostgreSQL sessions, 100 ssh sessions
        /// and 1,000 TCP relays through the agent; errors, and the agent's RSS, fds and CPU against the goals.
        #[arg(long)]
        soak: bool,
    },
    /// Build every fuzz target (cargo fuzz, sanitizers) and run each for a bounded time.
    Fuzz {
        /// Seconds each target runs.
        #[arg(long, default_value_t = 20)]
        seconds: u32,
        /// Only these targets (default: all of them).
        targets: Vec<String>,
    },
    /// Build the Debian package `airlock_<version>_amd64.deb` (cargo-deb) and check it with lintian.
    Package {
        /// Package the dev-profile build the tests use instead of an optimised one (faster).
        #[arg(long)]
        debug: bool,
        /// Package the binary already built (target/<profile>/airlock) without building first.
        #[arg(long)]
        no_build: bool,
        /// Package version (default: agent/Cargo.toml's version, revision 1).
        #[arg(long)]
        deb_version: Option<String>,
        /// Directory to write the .deb to (default: target/debian).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Skip the lintian check.
        #[arg(long)]
        no_lintian: bool,
    },
    /// A throwaway protected PostgreSQL with fake data, and the psql command to try.
    Demo {
        /// Run the suggested command and exit (self-check).
        #[arg(long)]
        smoke: bool,
    },
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
        Task::Bench { masking: true, .. } => masking_benches(&root),
        Task::Bench { soak: true, .. } => {
            setup::install()?;
            bench(&root, &["soak"])
        }
        Task::Bench { .. } => {
            setup::install()?;
            bench(&root, &[])?;
            // The masking engine's throughput belongs to the same report.
            masking_benches(&root)
        }
        Task::Fuzz { seconds, targets } => {
            setup::install()?;
            fuzz(&root, seconds, &targets)
        }
        Task::Package { debug, no_build, deb_version, output, no_lintian } => {
            // The tests package what they built, on a machine set up already.
            if !no_build {
                setup::install()?;
            }
            let options = package::Options { debug, no_build, deb_version, output, no_lintian };
            package::package(&root, &options).map(|_| ())
        }
        Task::Demo { smoke } => {
            setup::install()?;
            if !setup::is_root() {
                bail!("the demo attaches eBPF programs and creates a network namespace: run it as root");
            }
            build(&root, false)?;
            cargo(&root, &["build", "-p", "airlock-vm-tests", "--bin", "airlock-demo"], &[])?;
            let mut demo = Command::new(root.join("target/debug/airlock-demo"));
            demo.env("AIRLOCK_BIN", root.join("target/debug/airlock")).current_dir(&root);
            if smoke {
                demo.arg("--smoke");
            }
            Err(demo.exec()).context("starting airlock-demo")
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_owned()
}

fn cargo_command(root: &Path, args: &[&str], env: &[(&str, &Path)]) -> Command {
    println!("$ cargo {}", args.join(" "));
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.args(args).current_dir(root);
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// Runs cargo in the workspace root, failing with the command on a non-zero exit.
fn cargo(root: &Path, args: &[&str], env: &[(&str, &Path)]) -> anyhow::Result<()> {
    let status = cargo_command(root, args, env).status().context("running cargo")?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Test counts over every `cargo test` run.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

impl Tally {
    /// Adds a libtest summary line (`test result: ok. 3 passed; 0 failed; …`).
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else { return };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(count)) = (words.next(), words.next()) else { continue };
            let Ok(count) = count.parse::<u64>() else { continue };
            match label {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                _ => {}
            }
        }
    }
}

/// Runs `cargo test`, echoing its output and counting its results.
fn cargo_test(root: &Path, args: &[&str], env: &[(&str, &Path)], tally: &mut Tally) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    let mut child =
        cargo_command(root, args, env).stdout(std::process::Stdio::piped()).spawn().context("running cargo")?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("reading cargo output")?;
        println!("{line}");
        tally.add(&line);
    }
    let status = child.wait().context("waiting for cargo")?;
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
    let mut tally = Tally::default();
    let result = run_tests(root, unit, vm, filters, &mut tally);
    // The last line a CI log shows: the whole run's count.
    println!("\n{} passed, {} failed", tally.passed, tally.failed);
    result
}

fn run_tests(root: &Path, unit: bool, vm: bool, filters: &[String], tally: &mut Tally) -> anyhow::Result<()> {
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
        cargo_test(root, &args.iter().map(String::as_str).collect::<Vec<_>>(), &env, tally)?;
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
        cargo_test(root, &args.iter().map(String::as_str).collect::<Vec<_>>(), &env, tally)?;
    }
    Ok(())
}

/// `cargo fuzz` with the pinned toolchain (as agent/build.rs builds the
/// eBPF programs: RUSTC_BOOTSTRAP lets it take the sanitizer flags).
fn cargo_fuzz(root: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("cargo");
    command
        .arg(format!("+{}", setup::ebpf_toolchain()))
        .arg("fuzz")
        .args(args)
        .current_dir(root.join("fuzz"))
        .env("RUSTC_BOOTSTRAP", "1");
    command
}

fn fuzz(root: &Path, seconds: u32, only: &[String]) -> anyhow::Result<()> {
    let listed = cargo_fuzz(root, &["list"]).output().context("running cargo fuzz list")?;
    if !listed.status.success() {
        bail!("cargo fuzz list failed: {}", String::from_utf8_lossy(&listed.stderr));
    }
    let all: Vec<String> = String::from_utf8_lossy(&listed.stdout).lines().map(str::to_owned).collect();
    let targets: Vec<&String> = if only.is_empty() { all.iter().collect() } else { only.iter().collect() };
    if let Some(unknown) = targets.iter().find(|t| !all.contains(t)) {
        bail!("no fuzz target {unknown}; there are: {}", all.join(", "));
    }
    println!("$ cargo fuzz build -O");
    let status = cargo_fuzz(root, &["build", "-O"]).status().context("running cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build failed ({status})");
    }
    let mut failed = Vec::new();
    for target in targets {
        // A fresh corpus each run: the seeds in the tree stay as they are.
        let corpus = std::env::temp_dir().join(format!("airlock-fuzz-{target}-{}", std::process::id()));
        std::fs::create_dir_all(&corpus).context("creating a corpus directory")?;
        let max_time = format!("-max_total_time={seconds}");
        println!("$ cargo fuzz run -O {target} ({seconds} s)");
        let status = cargo_fuzz(root, &["run", "-O", target, corpus.to_str().unwrap_or("corpus"), "--"])
            .args([max_time.as_str(), "-timeout=10", "-max_len=4096", "-rss_limit_mb=4096", "-print_final_stats=1"])
            .status()
            .context("running cargo fuzz run")?;
        let _ = std::fs::remove_dir_all(&corpus);
        if !status.success() {
            failed.push(target.as_str());
        }
    }
    if !failed.is_empty() {
        bail!("fuzz targets failed: {} (crashes under fuzz/artifacts)", failed.join(", "));
    }
    Ok(())
}

/// The masking engine's throughput on one core: result rows, then JSON answers.
fn masking_benches(root: &Path) -> anyhow::Result<()> {
    for example in ["masking-bench", "json-masking-bench"] {
        cargo(root, &["run", "--release", "-p", "airlock", "--example", example], &[])?;
    }
    Ok(())
}

/// Runs airlock-bench (release builds) with `sections` (none: all but the soak).
fn bench(root: &Path, sections: &[&str]) -> anyhow::Result<()> {
    if !setup::is_root() {
        bail!("the benchmark attaches eBPF programs and creates network namespaces: run it as root");
    }
    build(root, true)?;
    cargo(root, &["build", "--release", "-p", "airlock-vm-tests", "--bin", "airlock-bench"], &[])?;
    let status = Command::new(root.join("target/release/airlock-bench"))
        .args(sections)
        .env("AIRLOCK_BIN", root.join("target/release/airlock"))
        .current_dir(root)
        .status()
        .context("running airlock-bench")?;
    if !status.success() {
        bail!("airlock-bench failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_adds_libtest_summaries() {
        let mut tally = Tally::default();
        tally.add("test result: ok. 42 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.06s");
        tally.add("test result: FAILED. 9 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 11.81s");
        tally.add("test something ... ok");
        assert_eq!((tally.passed, tally.failed), (51, 1));
    }
}
