//! HTTPS through Airlock against the direct path and nginx as a
//! TLS-terminating reverse proxy, same target (nginx on the lab target),
//! same run: h2load over HTTP/1.1 keep-alive and HTTP/2, with 1 and 16
//! connections. Airlock's path is the real one: eBPF-redirected, the
//! client's TLS terminated, a credential injected, every request recorded.
//! Beside them, the floor: a bare proxy on the crates Airlock's is built on
//! (`bare_proxy`), and each proxy's CPU per request.

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use airlock_vm_tests::{
    Lab, nginx,
    process::{Background, cpu_time, spawn_as},
    run_as, set_mode,
};

/// Requests per run with one connection, and with sixteen.
const REQUESTS_1: usize = 10_000;
const REQUESTS_16: usize = 100_000;
/// Rounds of the sixteen-connection runs, the proxies taking turns in each:
/// on a small host their throughput swings by a tenth from run to run, so
/// one run each would compare luck. Each figure is the median of its rounds.
const ROUNDS_16: usize = 3;
/// Ports of the peer, nginx proxying to the target: with its access log
/// (as nginx ships), and with none.
const PEER_PORT: u16 = 18443;
const QUIET_PEER_PORT: u16 = 18445;
/// Port of the floor: a bare hyper proxy to the target, on loopback.
const BARE_PORT: u16 = 18444;

/// Runs the parts named (`h1`, `h2`, `masking`); all when none is.
pub fn run(parts: &[&str]) {
    let wanted = |part: &str| parts.is_empty() || parts.contains(&part);
    let mut lab = Lab::new(&["bench"]);
    let v4 = lab.target.v4;
    let target = nginx::start(&mut lab);
    let token = lab.dir.path().join("bench-token");
    fs::write(&token, "Bearer bench-token\n").expect("token");
    set_mode(&token, 0o600);
    let policy = format!(
        "[[target]]\nname = \"api\"\nprotocol = \"https\"\nport = 443\naddresses = [\"{v4}\"]\n\n\
         [[target.access]]\naction = \"allow\"\nusers = [\"*\"]\n\n[target.https]\nca_file = \"{ca}\"\nserver_name = \"{v4}\"\n\n\
         [target.https.credential]\nkind = \"header_file\"\nheader = \"Authorization\"\nfile = \"{token}\"\n",
        ca = target.ca.display(),
        token = token.display(),
    );
    lab.start_agent(&policy);
    start_peer(&mut lab, &target.ca);
    let outside = airlock_vm_tests::cgroup2_root().join(format!("{}.httpsbench", lab.tag));
    fs::create_dir_all(&outside).expect("mkdir cgroup");
    let work = lab.dir.path().join("h2load");
    fs::create_dir_all(&work).expect("mkdir");
    airlock_vm_tests::netns::sh("chown", &[&lab.user("bench").name, &work.display().to_string()]);

    let bare = start_bare_proxy(&lab, &outside, &target.ca);
    let agent_pid = lab.agent().pid();
    let peer_pids = || nginx::processes(&lab.dir.path().join("nginx-peer"));
    // CPU the proxy in the path (`proxy`, none direct) spent per request.
    let run = |cgroup: &Path, url: &str, h1: bool, clients: usize, proxy: &[u32]| -> Figures {
        let requests = if clients == 1 { REQUESTS_1 } else { REQUESTS_16 };
        let log = work.join(format!("log-{}", rand_suffix()));
        let (n, c) = (requests.to_string(), clients.to_string());
        let log_arg = format!("--log-file={}", log.display());
        let mut args = vec!["-n", &n, "-c", &c, "-m", "1", &log_arg];
        if h1 {
            args.push("--h1");
        }
        args.push(url);
        let cpu_before: Duration = proxy.iter().map(|&pid| cpu_time(pid)).sum();
        let out = run_as(lab.user("bench"), cgroup, "h2load", &args);
        assert!(
            out.success() && out.stdout.contains(&format!("{requests} succeeded")),
            "h2load: {out:?}\n{}",
            lab.agent().log()
        );
        let cpu: Duration = proxy.iter().map(|&pid| cpu_time(pid)).sum();
        let mut figures = Figures::read(&out.stdout, &log);
        figures.proxy_cpu = cpu.saturating_sub(cpu_before).as_secs_f64() * 1e6 / requests as f64;
        let _ = fs::remove_file(&log);
        figures
    };
    let direct_url = format!("https://{v4}/");
    let peer_url = format!("https://{v4}:{PEER_PORT}/");
    let quiet_peer_url = format!("https://{v4}:{QUIET_PEER_PORT}/");
    let bare_url = format!("https://127.0.0.1:{BARE_PORT}/");
    for (h1, name) in [(true, "HTTP/1.1 keep-alive"), (false, "HTTP/2")] {
        if !wanted(if h1 { "h1" } else { "h2" }) {
            continue;
        }
        for clients in [1, 16] {
            let direct = run(&outside, &direct_url, h1, clients, &[]);
            let rounds = if clients == 1 { 1 } else { ROUNDS_16 };
            let mut runs: [Vec<Figures>; 4] = Default::default();
            for _ in 0..rounds {
                runs[0].push(run(&lab.cgroups.clients, &direct_url, h1, clients, &[agent_pid]));
                runs[1].push(run(&outside, &peer_url, h1, clients, &peer_pids()));
                runs[2].push(run(&outside, &quiet_peer_url, h1, clients, &peer_pids()));
                runs[3].push(run(&outside, &bare_url, h1, clients, &[bare.pid()]));
            }
            let ratios = |peer: &[Figures]| -> Vec<String> {
                runs[0].iter().zip(peer).map(|(a, n)| format!("{:.0}%", 100.0 * a.rate / n.rate)).collect()
            };
            let (logging, quiet) = (ratios(&runs[1]), ratios(&runs[2]));
            let [airlock, nginx, quiet_nginx, floor] = runs.map(Figures::median);
            let rounds_said = if rounds == 1 { String::new() } else { format!(", median of {rounds} rounds") };
            println!("https: {name}, {clients} connection(s), GET of 17 bytes{rounds_said}");
            let proxies = [("airlock", &airlock), ("nginx", &nginx), ("nginx-nolog", &quiet_nginx), ("hyper", &floor)];
            println!(
                "  {:<11} {:>9.0} req/s  p50 {:>7.1} µs  p99 {:>7.1} µs",
                "direct", direct.rate, direct.p50, direct.p99
            );
            for (who, f) in proxies {
                print!("  {who:<11} {:>9.0} req/s  p50 {:>7.1} µs  p99 {:>7.1} µs", f.rate, f.p50, f.p99);
                println!("  proxy CPU {:>5.1} µs/request", f.proxy_cpu);
            }
            if clients == 1 {
                println!("  airlock added p50 {:.1} µs (goal <= 100 µs)", airlock.p50 - direct.p50);
            } else {
                println!(
                    "  airlock/nginx throughput: {:.0}% (goal > 100%); round by round {}",
                    100.0 * airlock.rate / nginx.rate,
                    logging.join(", ")
                );
                println!(
                    "  airlock/nginx-nolog throughput: {:.0}%; round by round {}",
                    100.0 * airlock.rate / quiet_nginx.rate,
                    quiet.join(", ")
                );
            }
        }
    }
    if wanted("masking") {
        masking(&lab, &target, &policy, &|url, requests| {
            let log = work.join(format!("log-{}", rand_suffix()));
            let n = requests.to_string();
            let log_arg = format!("--log-file={}", log.display());
            let args = ["-n", &n, "-c", "1", "-m", "1", "--h1", &log_arg, url];
            let out = run_as(lab.user("bench"), &lab.cgroups.clients, "h2load", &args);
            assert!(out.success() && out.stdout.contains(&format!("{requests} succeeded")), "h2load: {out:?}");
            let figures = Figures::read(&out.stdout, &log);
            let _ = fs::remove_file(&log);
            figures
        });
    }
    drop(bare);
    airlock_vm_tests::remove_cgroup_tree(&outside);
}

/// Transfers of a 1 MB JSON answer through Airlock, without masking and
/// with it (default detectors and a JSON path rule), same run: over the
/// lab's link as it is (loopback speed), and with the target sending at
/// 10, 5 and 1 Gbit/s, as across a real network.
fn masking(lab: &Lab, target: &nginx::Nginx, policy: &str, fetch: &dyn Fn(&str, usize) -> Figures) {
    const REQUESTS: usize = 300;
    let items: Vec<_> = (0..2_600)
        .map(|i| {
            serde_json::json!({
                "id": i,
                "name": format!("Customer {i}"),
                "email": format!("customer{i}@example.com"),
                "card": if i % 10 == 0 { "4111 1111 1111 1111" } else { "none on file" },
                "api_token": format!("tok-{i:08}"),
                "address": { "street": format!("{i} Long Street"), "city": "Springfield", "zip": "12345" },
                "note": "a customer since 2019, prefers e-mail, ships to the address above",
                "created_at": "2024-03-01T12:00:00Z",
            })
        })
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({ "kind": "CustomerList", "items": items })).expect("json");
    fs::write(target.files.join("customers.json"), &body).expect("write json");
    let url = format!("https://{}/files/customers.json", lab.target.v4);
    let agent = lab.agent();
    let masked_policy =
        format!("{policy}\n[target.masking]\n[[target.masking.rules]]\njson_path = \"$.items[*].api_token\"\n");
    let mut reloads = 0;
    let mut load = |text: &str| {
        agent.reload(text);
        reloads += 1;
        agent.wait_for_records("policy.reload", reloads);
    };
    for (link, rate) in [
        ("the lab link, unlimited", None),
        ("the target sending at 10 Gbit/s", Some("10gbit")),
        ("the target sending at 5 Gbit/s", Some("5gbit")),
        ("the target sending at 1 Gbit/s", Some("1gbit")),
    ] {
        lab.target.limit_egress(rate);
        load(policy);
        let plain = fetch(&url, REQUESTS);
        load(&masked_policy);
        let masked = fetch(&url, REQUESTS);
        println!("https: a {} kB JSON answer, HTTP/1.1, 1 connection, through airlock, {link}", body.len() / 1000);
        for (who, f) in [("unmasked", &plain), ("masked", &masked)] {
            println!("  {who:<8} {:>9.0} req/s  p50 {:>7.1} µs  p99 {:>7.1} µs", f.rate, f.p50, f.p99);
        }
        let added = 100.0 * (masked.p50 - plain.p50) / plain.p50;
        println!("  masking added {added:.1}% to the transfer time (p50; goal <= 10%)");
    }
    lab.target.limit_egress(None);
}

/// What one h2load run measured.
struct Figures {
    rate: f64,
    p50: f64,
    p99: f64,
    /// CPU (user + system) the proxy in the path spent per request, in µs.
    proxy_cpu: f64,
}

impl Figures {
    /// Requests/s from h2load's summary; percentiles from its per-request log
    /// (start, status, microseconds per line).
    fn read(summary: &str, log: &Path) -> Self {
        let rate = summary
            .lines()
            .find_map(|l| l.strip_prefix("finished in ").and_then(|rest| rest.split(", ").nth(1)))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|r| r.parse().ok())
            .unwrap_or(f64::NAN);
        let mut times: Vec<f64> = fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split('\t').nth(2).and_then(|us| us.parse().ok()))
            .collect();
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times.get(((times.len() as f64 - 1.0) * q) as usize).copied().unwrap_or(f64::NAN);
        Self { rate, p50: at(0.5), p99: at(0.99), proxy_cpu: f64::NAN }
    }

    /// Each figure's median over `runs` (an odd number of them).
    fn median(runs: Vec<Self>) -> Self {
        let of = |figure: fn(&Self) -> f64| {
            let mut values: Vec<f64> = runs.iter().map(figure).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        Self { rate: of(|f| f.rate), p50: of(|f| f.p50), p99: of(|f| f.p99), proxy_cpu: of(|f| f.proxy_cpu) }
    }
}

fn rand_suffix() -> String {
    format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()))
}

/// nginx terminating TLS and proxying to the target over TLS with upstream
/// keep-alive, next to it in the target's namespace (killed with it): the
/// peer a team would put in front of an API instead. On PEER_PORT as
/// nginx ships (each request written to its access log, as Airlock records
/// each one); on QUIET_PEER_PORT with no log at all.
fn start_peer(lab: &mut Lab, target_ca: &Path) {
    let dir = lab.dir.path().join("nginx-peer");
    let v4 = lab.target.v4;
    airlock_vm_tests::netns::test_certificate(&dir, &format!("IP:{v4}"));
    let path = |name: &str| dir.join(name).display().to_string();
    let server = |port: u16, log: &str| {
        format!(
            "    server {{\n  listen {v4}:{port} ssl http2;\n  ssl_certificate {crt};\n  ssl_certificate_key {key};\n  \
             access_log {log};\n  \
             location / {{\n   proxy_pass https://target;\n   proxy_http_version 1.1;\n   proxy_set_header Connection \"\";\n   \
             proxy_set_header Authorization \"Bearer bench-token\";\n   proxy_ssl_trusted_certificate {ca};\n   \
             proxy_ssl_verify on;\n   proxy_ssl_name api.lab;\n   proxy_ssl_server_name on;\n   proxy_ssl_session_reuse on;\n  }}\n }}\n",
            crt = path("server.crt"),
            key = path("server.key"),
            ca = target_ca.display(),
        )
    };
    let http = format!(
        "    upstream target {{ server {v4}:443; keepalive 64; }}\n{}{}",
        server(PEER_PORT, &path("access.log")),
        server(QUIET_PEER_PORT, "off")
    );
    nginx::run(lab, &dir, &http, &[PEER_PORT, QUIET_PEER_PORT]);
}

/// The floor (`airlock-bench bare-proxy`): Airlock's HTTP crates with
/// nothing of Airlock, on loopback, as the bench user in `cgroup` (outside
/// the programs' reach, so its connections to the target go direct).
fn start_bare_proxy(lab: &Lab, cgroup: &Path, target_ca: &Path) -> Background {
    let dir = lab.dir.path().join("bare-proxy");
    airlock_vm_tests::netns::test_certificate(&dir, "IP:127.0.0.1");
    let user = lab.user("bench");
    for file in ["", "server.crt", "server.key"] {
        airlock_vm_tests::netns::sh("chown", &[&user.name, &dir.join(file).display().to_string()]);
    }
    let me = std::env::current_exe().expect("airlock-bench path").display().to_string();
    let (listen, target) = (format!("127.0.0.1:{BARE_PORT}"), format!("{}:443", lab.target.v4));
    let path = |name: &str| dir.join(name).display().to_string();
    let args =
        ["bare-proxy", &listen, &path("server.crt"), &path("server.key"), &target, &target_ca.display().to_string()];
    let bare = spawn_as(user, cgroup, &me, &args);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", BARE_PORT)).is_err() {
        assert!(Instant::now() < deadline, "the bare hyper proxy did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    bare
}
