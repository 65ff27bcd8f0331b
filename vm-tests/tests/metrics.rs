//! Metrics and health end to end: a real Prometheus (Debian's 2.42)
//! scrapes the agent's loopback listener while real psql sessions run
//! through it, and its query API sees the counters move; `/healthz` and
//! `airlock status --metrics` fail when the programs are unpinned or the
//! audit log cannot be written.

use std::{
    fs,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use airlock_vm_tests::{Lab, TargetHost, agent::airlock_bin, privileged};
use serde_json::Value;

/// A Prometheus server, stopped when dropped.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `target` (host:port) every second.
    fn start(dir: &std::path::Path, target: &str) -> Self {
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: airlock\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus (cargo xtask setup installs it)");
        Self { child, port }
    }

    /// The value of `query`'s first sample, once it is at least `at_least`
    /// (waits, bounded).
    fn wait_for(&self, query: &str, at_least: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(40);
        let mut last = Value::Null;
        while Instant::now() < deadline {
            let out = Command::new("curl")
                .args(["-sf", "--max-time", "2", "--get", "--data-urlencode"])
                .arg(format!("query={query}"))
                .arg(format!("http://127.0.0.1:{}/api/v1/query", self.port))
                .output()
                .expect("curl");
            if let Ok(answer) = serde_json::from_slice::<Value>(&out.stdout) {
                let value = answer["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse::<f64>().ok());
                if let Some(value) = value
                    && value >= at_least
                {
                    return value;
                }
                last = answer;
            }
            thread::sleep(Duration::from_millis(250));
        }
        panic!("Prometheus never saw {query} ≥ {at_least}; last answer {last}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// (status code, body) of a GET on the agent's metrics listener.
fn get(port: u16, path: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (code.to_owned(), body.to_owned())
}

#[test]
fn prometheus_scrapes_real_series_and_health_fails_when_interception_or_the_audit_log_breaks() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new(&["alice"]);
    let data = lab.target.start_postgres_auth(&lab.dir.path().join("pg"), &[], "scram-sha-256");
    let seed = TargetHost::jit_admin(&data, lab.dir.path(), "metrics-admin-secret");
    TargetHost::superuser_sql(
        &data,
        "CREATE TABLE orders (id int, email text); INSERT INTO orders VALUES (1, 'ann@example.com')",
    );
    let (v4, alice) = (lab.target.v4, lab.user("alice").name.clone());
    let port = free_port();
    let policy = lab.target.jit_policy(&seed, "tls = \"disable\"");
    lab.start_agent_with(
        &format!(
            r#"{policy}
[[target.credentials.role]]
name = "readonly"
grants = ["pg_read_all_data"]
users = ["{alice}"]

[[target.guardrail]]
classes = ["drop"]
action = "deny"
reason = "no drops here"

[target.masking]
detectors = ["email"]
"#
        ),
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    assert_eq!(get(port, "/healthz"), ("200".into(), "ok\n".into()));
    assert_eq!(get(port, "/readyz").0, "200");
    let prometheus = Prometheus::start(lab.dir.path(), &format!("127.0.0.1:{port}"));

    let host = v4.to_string();
    let psql = |sql: &str| {
        lab.run_as("alice", "psql", &["-h", &host, "-U", "readonly", "-d", "postgres", "-X", "-At", "-w", "-c", sql])
    };
    for _ in 0..3 {
        let out = psql("SELECT email FROM orders");
        assert!(out.success() && out.stdout.trim() != "ann@example.com", "masked: {out:?}");
    }
    let refused = psql("DROP TABLE orders");
    assert!(!refused.success() && refused.stderr.contains("no drops here"), "{refused:?}");

    assert!(prometheus.wait_for("up{job=\"airlock\"}", 1.0) == 1.0);
    let opened = prometheus.wait_for("sum(airlock_sessions_opened_total{target=\"pg\",protocol=\"postgres\"})", 4.0);
    assert_eq!(opened, 4.0, "three reads and the refused drop each opened a session");
    prometheus.wait_for("sum(airlock_sessions_closed_total{target=\"pg\",outcome=\"ok\"})", 4.0);
    prometheus.wait_for("airlock_statements_total{target=\"pg\",class=\"drop\",action=\"deny\"}", 1.0);
    prometheus.wait_for("airlock_masked_values_total{by=\"email\"}", 3.0);
    prometheus.wait_for("sum(airlock_credentials_total{event=\"created\",source=\"embedded\"})", 1.0);
    prometheus.wait_for("airlock_kernel_total{counter=\"redirected\"}", 4.0);
    prometheus.wait_for("airlock_audit_records_total", 8.0);
    prometheus.wait_for("airlock_audit_write_seconds_count", 1.0);
    prometheus.wait_for("airlock_programs_attached", 1.0);
    prometheus.wait_for("airlock_resident_memory_bytes", 1e6);
    prometheus.wait_for("airlock_open_fds", 5.0);

    // The same text over the control socket.
    let socket = lab.agent().config.socket.display().to_string();
    let status = Command::new(airlock_bin()).args(["status", "--metrics", "--socket", &socket]).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert!(text.contains("airlock_sessions_opened_total{target=\"pg\",protocol=\"postgres\"} 4"), "{text}");
    assert!(text.ends_with("# EOF\n"));
    assert!(!text.contains(&alice), "no person in metrics");

    // The active audit segment gone: nothing can be recorded, so unhealthy.
    let audit = lab.agent().config.audit_dir.join("audit.jsonl");
    let aside = audit.with_extension("aside");
    fs::rename(&audit, &aside).unwrap();
    let (code, body) = get(port, "/healthz");
    fs::rename(&aside, &audit).unwrap();
    assert_eq!(code, "503");
    assert!(body.contains("the audit log cannot be written"), "{body}");
    assert_eq!(get(port, "/healthz").0, "200", "healthy again once the log is back");

    // The pins removed (what `airlock uninstall` does): unhealthy, and
    // `airlock status --metrics` fails saying why.
    let uninstalled =
        Command::new(airlock_bin()).args(["uninstall", "--config"]).arg(&lab.agent().config.path).output().unwrap();
    assert!(uninstalled.status.success());
    let (code, body) = get(port, "/healthz");
    assert_eq!(code, "503");
    assert!(body.contains("eBPF programs are detached"), "{body}");
    assert_eq!(get(port, "/readyz").0, "503");
    let status = Command::new(airlock_bin()).args(["status", "--metrics", "--socket", &socket]).output().unwrap();
    assert_eq!(status.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&status.stderr).contains("unhealthy: "));
    prometheus.wait_for("airlock_programs_attached == 0", 0.0);
    assert_eq!(get(port, "/nope").0, "404");
}
