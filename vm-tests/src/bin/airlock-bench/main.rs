//! `cargo xtask bench`: interception overhead, relay latency and PostgreSQL
//! throughput, each measured against the direct path (and a peer) in one run.
//! `airlock-bench [intercept] [postgres | postgres-large | postgres-small | postgres-pgbench | postgres-jit] [guardrails] [audit] [ssh] [https | https-h1 | https-h2 | https-masking] [actors] [approvals] [scan]` picks sections; default: all.
//! `airlock-bench soak` runs the load-and-footprint soak alone (`cargo xtask bench --soak`).
//!
//! The same binary plays several roles: the driver (default), an echo server
//! started inside the lab's target namespace (`echo PORT…`), and clients
//! run as a test user inside the lab's client cgroup, so the eBPF programs
//! see them (`client MODE ADDR COUNT`, `ssh-rtt …`, `pg-connect …`, `tcp-hold ADDR COUNT`), and the
//! HTTPS bench's floor, a bare hyper proxy (`bare-proxy …`).
//! `airlock-bench scan-tree DIR MB` writes the secret scan's tree alone (to profile a scanner on it).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Instant,
};

use airlock_vm_tests::{Lab, privileged};

/// The agent's allocator, so in-process figures (classification, masking,
/// audit) are what the agent gets.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod actors;
mod approvals;
mod audit;
mod bare_proxy;
mod guardrails;
mod https;
mod postgres;
mod scan;
mod scan_tree;
mod soak;
mod ssh;

/// Protected echo port (redirected through the agent).
const PROTECTED: u16 = 9000;
/// Unprotected echo port on the same server (direct).
const DIRECT: u16 = 9001;
/// Payload of one round trip.
const MESSAGE: usize = 64;

fn main() {
    // Measured agents log as in production, not at the tests' debug level.
    // SAFETY: no other thread exists yet.
    unsafe { std::env::set_var("AIRLOCK_TEST_LOG", "info") };
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("echo") => echo_server(&args[1..]),
        Some("client") => client(&args[1..]),
        Some("ssh-rtt") => ssh::rtt_client(&args[1..]),
        Some("pg-connect") => postgres::timed_logins(&args[1..]),
        Some("tcp-hold") => airlock_vm_tests::load::tcp_hold(&args[1..]),
        Some("scan-tree") => scan::write_tree(&args[1..]),
        Some("bare-proxy") => bare_proxy::serve(&args[1..]),
        Some("soak") => {
            if !privileged() {
                std::process::exit(1);
            }
            airlock_vm_tests::clean_up_on_signal();
            if !soak::run() {
                std::process::exit(1);
            }
        }
        _ => {
            if !privileged() {
                std::process::exit(1);
            }
            airlock_vm_tests::clean_up_on_signal();
            let all = args.is_empty();
            if all || args.iter().any(|a| a == "intercept") {
                intercept();
            }
            if all || args.iter().any(|a| a == "postgres") {
                println!();
                postgres::run(postgres::Parts::All);
                postgres::jit_setup();
            } else if args.iter().any(|a| a == "postgres-large") {
                postgres::run(postgres::Parts::LargeResults);
            } else if args.iter().any(|a| a == "postgres-small") {
                postgres::run(postgres::Parts::SmallResults);
            } else if args.iter().any(|a| a == "postgres-pgbench") {
                postgres::run(postgres::Parts::Pgbench);
            } else if args.iter().any(|a| a == "postgres-jit") {
                postgres::jit_setup();
            }
            if all || args.iter().any(|a| a == "guardrails") {
                println!();
                guardrails::run();
                println!();
                guardrails::writes();
            }
            if all || args.iter().any(|a| a == "audit") {
                println!();
                audit::run();
            }
            if all || args.iter().any(|a| a == "ssh") {
                println!();
                ssh::run();
            }
            let https_parts: Vec<&str> = args.iter().filter_map(|a| a.strip_prefix("https-")).collect();
            if all || args.iter().any(|a| a == "https") || !https_parts.is_empty() {
                println!();
                https::run(&https_parts);
            }
            if all || args.iter().any(|a| a == "actors") {
                println!();
                actors::run();
            }
            if all || args.iter().any(|a| a == "approvals") {
                println!();
                approvals::run();
            }
            if all || args.iter().any(|a| a == "scan") {
                println!();
                scan::run();
            }
        }
    }
}

/// Serves each connection on its own thread, echoing what it reads.
fn echo_server(ports: &[String]) {
    let listeners: Vec<TcpListener> =
        ports.iter().map(|p| listen_deep(SocketAddr::from(([0u16; 8], p.parse::<u16>().expect("port"))))).collect();
    let handles: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    std::thread::spawn(move || echo(stream));
                }
            })
        })
        .collect();
    for handle in handles {
        let _ = handle.join();
    }
}

fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 || stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// Client roles; each prints one line of JSON.
fn client(args: &[String]) {
    let addr: SocketAddr = args[1].parse().expect("address");
    let count: usize = args[2].parse().expect("count");
    match args[0].as_str() {
        // connect() + close, nothing sent: the cost the hooks add to every connection.
        "connect" => {
            let start = Instant::now();
            for _ in 0..count {
                let stream = TcpStream::connect(addr).expect("connect");
                let _ = zero_linger(&stream);
            }
            println!("{{\"rate\": {}}}", count as f64 / start.elapsed().as_secs_f64());
        }
        // connect, one round trip, close: what a short client session costs.
        "session" => {
            let start = Instant::now();
            for _ in 0..count {
                let mut stream = TcpStream::connect(addr).expect("connect");
                round_trip(&mut stream);
                let _ = zero_linger(&stream);
            }
            println!("{{\"rate\": {}}}", count as f64 / start.elapsed().as_secs_f64());
        }
        // One connection, many round trips: per-message latency.
        "rtt" => {
            let mut stream = TcpStream::connect(addr).expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            for _ in 0..count / 10 {
                round_trip(&mut stream);
            }
            let mut samples: Vec<u64> = (0..count)
                .map(|_| {
                    let start = Instant::now();
                    round_trip(&mut stream);
                    start.elapsed().as_nanos() as u64
                })
                .collect();
            samples.sort_unstable();
            let p = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)] as f64 / 1000.0;
            println!("{{\"p50_us\": {}, \"p99_us\": {}}}", p(0.50), p(0.99));
        }
        other => panic!("unknown client mode {other}"),
    }
}

fn listen_deep(addr: SocketAddr) -> TcpListener {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).expect("socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket.bind(&addr.into()).expect("bind");
    socket.listen(8192).expect("listen");
    socket.into()
}

fn round_trip(stream: &mut TcpStream) {
    let message = [0x5au8; MESSAGE];
    let mut reply = [0u8; MESSAGE];
    stream.write_all(&message).expect("send");
    stream.read_exact(&mut reply).expect("receive");
}

/// RST on close instead of FIN: no TIME_WAIT pile-up across thousands of connects.
fn zero_linger(stream: &TcpStream) -> std::io::Result<()> {
    socket2::SockRef::from(stream).set_linger(Some(std::time::Duration::ZERO))
}

fn run_client(lab: &Lab, mode: &str, addr: SocketAddr, count: usize) -> serde_json::Value {
    run_client_in(lab, &lab.cgroups.clients, mode, addr, count)
}

fn run_client_in(lab: &Lab, cgroup: &std::path::Path, mode: &str, addr: SocketAddr, count: usize) -> serde_json::Value {
    let me = std::env::current_exe().expect("own path");
    let args = ["client", mode, &addr.to_string(), &count.to_string()];
    let out = airlock_vm_tests::run_as(lab.user("bench"), cgroup, me.to_str().expect("utf-8 path"), &args);
    assert!(out.success(), "bench client {mode} {addr} failed: {out:?}");
    serde_json::from_str(out.stdout.trim()).expect("client JSON")
}

/// The middle of `values` (NaN when there are none): what the benches
/// report over rounds, so one slow spell of the machine moves it less.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn intercept() {
    let mut lab = Lab::new(&["bench"]);
    let me = std::env::current_exe().expect("own path");
    let ports = [PROTECTED.to_string(), DIRECT.to_string()];
    lab.target.spawn(me.to_str().expect("utf-8 path"), &["echo", &ports[0], &ports[1]]);
    lab.target.wait_for_port(lab.target.v4.into(), PROTECTED);
    lab.target.wait_for_port(lab.target.v4.into(), DIRECT);

    // A local unprotected listener for the connect() overhead runs.
    // A deep backlog: with the default 128 the accept queue overflows and
    // SYN retransmits (1 s each) would dominate the measurement.
    let local = listen_deep(SocketAddr::from(([127, 0, 0, 1], 0)));
    let local_addr = local.local_addr().expect("local addr");
    std::thread::spawn(move || for _ in local.incoming() {});

    let policy = format!(
        "[[target]]\nname = \"echo\"\nprotocol = \"tcp\"\nport = {PROTECTED}\naddresses = [\"{}\"]\n\n[[target.access]]\naction = \"allow\"\nusers = [\"*\"]\n",
        lab.target.v4
    );
    lab.start_agent(&policy);

    // Same machine, same moment: rounds alternate between a cgroup outside
    // the attach point (no programs run) and the lab's client cgroup.
    const CONNECTS: usize = 20_000;
    const ROUNDS: usize = 5;
    println!("airlock bench: {ROUNDS} rounds each, alternating, median reported\n");
    let outside = airlock_vm_tests::cgroup2_root().join(format!("{}.bench", lab.tag));
    std::fs::create_dir_all(&outside).expect("mkdir bench cgroup");
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        without.push(run_client_in(&lab, &outside, "connect", local_addr, CONNECTS)["rate"].as_f64().unwrap());
        with.push(run_client(&lab, "connect", local_addr, CONNECTS)["rate"].as_f64().unwrap());
    }
    airlock_vm_tests::remove_cgroup_tree(&outside);
    let (without, with) = (median(without), median(with));
    let overhead = (without - with) / without * 100.0;
    println!("connect()+close, unprotected 127.0.0.1 port ({CONNECTS} per round)");
    println!("  programs not attached {without:>10.0} conn/s");
    println!("  programs attached     {with:>10.0} conn/s");
    println!("  overhead              {overhead:>9.2} %   (goal <= 1 %)\n");

    let direct = SocketAddr::new(lab.target.v4.into(), DIRECT);
    let through = SocketAddr::new(lab.target.v4.into(), PROTECTED);
    const SESSIONS: usize = 3_000;
    let session_rate = |addr| {
        median((0..ROUNDS).map(|_| run_client(&lab, "session", addr, SESSIONS)["rate"].as_f64().unwrap()).collect())
    };
    let (direct_rate, agent_rate) = (session_rate(direct), session_rate(through));
    println!("connect + 64-byte round trip + close, netns target ({SESSIONS} per round)");
    println!("  direct              {direct_rate:>10.0} conn/s");
    println!(
        "  through airlock     {agent_rate:>10.0} conn/s   ({:.1} % of direct)\n",
        agent_rate / direct_rate * 100.0
    );

    const TRIPS: usize = 20_000;
    let rtt = |addr| {
        let runs: Vec<serde_json::Value> = (0..ROUNDS).map(|_| run_client(&lab, "rtt", addr, TRIPS)).collect();
        let pick = |key: &str| median(runs.iter().map(|r| r[key].as_f64().unwrap()).collect());
        (pick("p50_us"), pick("p99_us"))
    };
    let ((d50, d99), (a50, a99)) = (rtt(direct), rtt(through));
    println!("round trip on an open connection, 64 bytes ({TRIPS} per round)");
    println!("  direct              p50 {d50:>7.1} µs   p99 {d99:>7.1} µs");
    println!("  through airlock     p50 {a50:>7.1} µs   p99 {a99:>7.1} µs");
    println!("  added               p50 {:>7.1} µs   p99 {:>7.1} µs   (goal: p50 <= 30 µs)", a50 - d50, a99 - d99);
}
