//! SSH through Airlock against the direct path, same target, same run: scp
//! of 256 MiB (Airlock decrypts and re-encrypts every byte, the direct path
//! encrypts once), and the round trip of one typed byte through `cat`.
//! The direct client logs in with a certificate of the same user CA, from a
//! cgroup the programs are not attached at.

use std::{
    fs,
    io::{Read as _, Write as _},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use airlock_vm_tests::{Lab, run_as, sshd};

/// Size of the scp payload.
const SCP_BYTES: usize = 256 << 20;
/// scp runs per path; the best is kept (least disturbed by the other engineers' load).
const SCP_RUNS: usize = 3;
/// Round trips measured per path.
const ROUND_TRIPS: usize = 2000;

pub fn run() {
    let mut lab = Lab::new(&["bench", "deploy"]);
    let v4 = lab.target.v4;
    let (bench, deploy) = (lab.user("bench").name.clone(), lab.user("deploy").name.clone());
    lab.start_agent(&format!(
        "[[target]]\nname = \"ssh\"\nprotocol = \"ssh\"\nport = 22\naddresses = [\"{v4}\"]\n\n[[target.access]]\naction = \"allow\"\nusers = [\"*\"]\n\n[target.ssh]\n\n[[target.ssh.principal]]\nname = \"{deploy}\"\nusers = [\"{bench}\"]\n"
    ));
    sshd::start(&mut lab, "deploy");
    let known = sshd::known_hosts(&lab);

    let work = lab.dir.path().join("ssh-bench");
    fs::create_dir_all(&work).expect("mkdir");
    let key = work.join("id");
    sh(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key));
    sh(Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(sshd::user_ca(&lab))
        .args(["-I", "bench-direct", "-n", &deploy, "-V", "+1h"])
        .arg(key.with_extension("pub")));
    let payload = work.join("payload");
    let block: Vec<u8> = (0..1 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let mut file = fs::File::create(&payload).expect("payload");
    for _ in 0..SCP_BYTES >> 20 {
        file.write_all(&block).expect("write payload");
    }
    drop(file);
    airlock_vm_tests::netns::sh("chown", &["-R", &bench, &work.display().to_string()]);
    airlock_vm_tests::set_mode(&work, 0o755);

    let outside = airlock_vm_tests::cgroup2_root().join(format!("{}.sshbench", lab.tag));
    fs::create_dir_all(&outside).expect("mkdir cgroup");
    let mut direct = vec![
        "-i".to_owned(),
        key.display().to_string(),
        "-o".into(),
        format!("CertificateFile={}", key.display().to_string() + "-cert.pub"),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "StrictHostKeyChecking=no".into(),
        "-o".into(),
        "UserKnownHostsFile=/dev/null".into(),
        "-o".into(),
        "LogLevel=ERROR".into(),
    ];
    let through = sshd::client_options(&known);
    // Both legs negotiate the same cipher the client would pick by default.
    direct.extend(["-o".into(), "Ciphers=aes256-gcm@openssh.com".into()]);
    let mut through_scp = through.clone();
    through_scp.extend(["-o".into(), "Ciphers=aes256-gcm@openssh.com".into()]);

    let scp = |cgroup: &Path, options: &[String]| -> f64 {
        let mut best = f64::MAX;
        for _ in 0..SCP_RUNS {
            let mut args: Vec<&str> = options.iter().map(String::as_str).collect();
            let to = format!("{deploy}@{v4}:/dev/null");
            args.extend([payload.to_str().expect("utf-8"), &to]);
            let started = Instant::now();
            let out = run_as(lab.user("bench"), cgroup, "scp", &args);
            let seconds = started.elapsed().as_secs_f64();
            assert!(out.success(), "scp failed: {out:?}\n{}", lab.agent().log());
            best = best.min(seconds);
        }
        best
    };
    let mib = (SCP_BYTES >> 20) as f64;
    let direct_s = scp(&outside, &direct);
    let airlock_s = scp(&lab.cgroups.clients, &through_scp);
    println!("ssh: scp of {mib} MiB to /dev/null on the target (aes256-gcm), best of {SCP_RUNS}");
    println!("  direct   {:>7.3} s  {:>7.1} MiB/s", direct_s, mib / direct_s);
    println!("  airlock  {:>7.3} s  {:>7.1} MiB/s", airlock_s, mib / airlock_s);
    println!("  airlock/direct throughput: {:.0}% (goal >= 80%)", 100.0 * direct_s / airlock_s);

    let me = std::env::current_exe().expect("own path");
    let rtt = |cgroup: &Path, options: &[String]| -> serde_json::Value {
        let count = ROUND_TRIPS.to_string();
        let login = format!("{deploy}@{v4}");
        let mut args: Vec<&str> = vec!["ssh-rtt", &count, "ssh"];
        args.extend(options.iter().map(String::as_str));
        args.extend([login.as_str(), "cat"]);
        let out = run_as(lab.user("bench"), cgroup, me.to_str().expect("utf-8 path"), &args);
        assert!(out.success(), "ssh round trips failed: {out:?}\n{}", lab.agent().log());
        serde_json::from_str(out.stdout.trim()).expect("rtt JSON")
    };
    let direct_rtt = rtt(&outside, &direct);
    let airlock_rtt = rtt(&lab.cgroups.clients, &through);
    let us = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!("ssh: interactive round trip of one byte through `cat`, {ROUND_TRIPS} trips");
    println!("  direct   p50 {:>7.1} µs  p99 {:>7.1} µs", us(&direct_rtt, "p50_us"), us(&direct_rtt, "p99_us"));
    println!("  airlock  p50 {:>7.1} µs  p99 {:>7.1} µs", us(&airlock_rtt, "p50_us"), us(&airlock_rtt, "p99_us"));
    println!("  added latency p50 {:.1} µs (goal <= 1000 µs)", us(&airlock_rtt, "p50_us") - us(&direct_rtt, "p50_us"));
    airlock_vm_tests::remove_cgroup_tree(&outside);
}

fn sh(command: &mut Command) {
    let status = command.status().expect("run");
    assert!(status.success(), "{command:?} failed");
}

/// Client role: `ssh-rtt COUNT PROGRAM ARGS…` runs the program (ssh … cat),
/// sends one byte at a time and waits for it to come back; prints percentiles as JSON.
pub fn rtt_client(args: &[String]) {
    let count: usize = args[0].parse().expect("count");
    let mut child = Command::new(&args[1])
        .args(&args[2..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start ssh");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut byte = [0u8; 1];
    let mut trip = |stdin: &mut std::process::ChildStdin| -> Duration {
        let started = Instant::now();
        stdin.write_all(b"x").expect("write");
        stdin.flush().expect("flush");
        stdout.read_exact(&mut byte).expect("echo");
        started.elapsed()
    };
    // The first trip includes the login.
    for _ in 0..20 {
        trip(&mut stdin);
    }
    let mut micros: Vec<f64> = (0..count).map(|_| trip(&mut stdin).as_secs_f64() * 1e6).collect();
    drop(stdin);
    let _ = child.wait();
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() as f64 * q) as usize).min(micros.len() - 1)];
    println!("{}", serde_json::json!({ "p50_us": at(0.5), "p99_us": at(0.99) }));
}
