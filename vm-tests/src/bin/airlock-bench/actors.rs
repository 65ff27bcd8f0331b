//! What recognising actors adds to a connection's set-up: the agent reads
//! the connecting process and its ancestry from procfs either way; with
//! `[[actor]]` definitions it also matches them, reading an interpreter's
//! command line (cached per process) and, for environment markers, the
//! environment. Measured in process on a real tree (`sh agent.sh` →
//! `bash -c` → `sleep`), against the same collection with no actors.

use std::{path::Path, time::Instant};

use airlock::{
    actors::Recogniser,
    policy::{Policy, actors::ActorDefinition},
    process::ProcessInfo,
};

/// Connections measured per figure.
const ROUNDS: u32 = 20_000;

pub fn run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("agent.sh");
    std::fs::write(&script, "bash -c 'sleep 60; true'\n").expect("script");
    let mut tree = std::process::Command::new("/bin/sh").arg(&script).spawn().expect("start the tree");
    let sleeper = wait_for_leaf(tree.id());
    let (uid, gid) = (unsafe { libc::getuid() }, unsafe { libc::getgid() });
    let collect = || ProcessInfo::of_live_process(sleeper, uid, gid, Path::new("/proc"), Path::new("/sys/fs/cgroup"));
    let process = collect();
    assert!(process.parents.len() >= 2, "the tree is there: {:?}", process.parents);

    let actors = |extra: &str| -> Vec<ActorDefinition> {
        let text = format!(
            "[[actor]]\nname = \"aider\"\nexecutables = [\"*/bin/aider\"]\nmodules = [\"aider\"]\n\n\
             [[actor]]\nname = \"claude\"\nscripts = [\"*/node_modules/@anthropic-ai/claude-code/*\"]\n\n\
             [[actor]]\nname = \"bots\"\ncgroups = [\"/system.slice/bot-*.service\"]\n{extra}\n\
             [[target]]\nname = \"t\"\nprotocol = \"tcp\"\nport = 1\naddresses = [\"10.0.0.1\"]\n"
        );
        Policy::from_sources([(Path::new("bench.toml"), text.as_str())]).expect("policy").actors
    };
    let plain = actors("");
    let marked = actors("environment = [\"AIRLOCK_ACTOR=bot\"]\n");
    let matching = actors("\n[[actor]]\nname = \"agent\"\nscripts = [\"*/agent.sh\"]\n");

    let base = time(|| drop(collect()));
    let recogniser = Recogniser::new("/airlock-actors".into());
    let none = time(|| assert!(recogniser.recognise(&[], &process, Path::new("/proc")).is_none()));
    let warm = time(|| assert!(recogniser.recognise(&plain, &process, Path::new("/proc")).is_none()));
    let cold = time(|| {
        let fresh = Recogniser::new("/airlock-actors".into());
        assert!(fresh.recognise(&plain, &process, Path::new("/proc")).is_none());
    });
    let environment = time(|| assert!(recogniser.recognise(&marked, &process, Path::new("/proc")).is_none()));
    let matched = time(|| assert!(recogniser.recognise(&matching, &process, Path::new("/proc")).is_some()));
    let matched_cold = time(|| {
        let fresh = Recogniser::new("/airlock-actors".into());
        assert!(fresh.recognise(&matching, &process, Path::new("/proc")).is_some());
    });
    let _ = tree.kill();
    let _ = std::process::Command::new("kill").arg(sleeper.to_string()).status();
    let _ = tree.wait();

    println!(
        "actors: recognising what runs behind a connection ({} ancestors read), per connection",
        process.parents.len()
    );
    println!("  process and ancestry collected (today, actors or not)  {base:>7.2} µs");
    println!("  no [[actor]] defined                                   {none:>7.2} µs");
    println!("  3 actors, the shells' command lines cached (warm)      {warm:>7.2} µs");
    println!("  3 actors, a tree never seen before (cold)              {cold:>7.2} µs");
    println!("  3 actors + an environment marker (environs cached)     {environment:>7.2} µs");
    println!("  4 actors, the 4th matching the tree's script (warm)    {matched:>7.2} µs");
    println!("  4 actors, the 4th matching, a tree never seen (cold)   {matched_cold:>7.2} µs");
    println!(
        "  added by recognition once a tree's processes were read: {:.2} µs (goal <= 5 µs); the first connection of a new tree: {cold:.2} µs",
        warm.max(matched).max(environment)
    );
}

/// Mean µs of `f` over ROUNDS runs.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    for _ in 0..ROUNDS {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS)
}

/// The pid of the deepest process under `pid` (bounded wait).
fn wait_for_leaf(mut pid: u32) -> u32 {
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    let mut depth = 0;
    while depth < 2 {
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        match children.split_whitespace().next().and_then(|c| c.parse().ok()) {
            Some(child) => {
                pid = child;
                depth += 1;
            }
            None => {
                assert!(Instant::now() < deadline, "the process tree did not start");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
    pid
}
