//! A target host in a network namespace, joined to the host by a veth pair,
//! running real servers.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::PREFIX;

/// The target host.
pub struct TargetHost {
    /// Namespace name.
    pub ns: String,
    /// Host-side veth name.
    pub host_if: String,
    /// Target-side veth name (inside the namespace).
    peer_if: String,
    /// The target's IPv4 address.
    pub v4: Ipv4Addr,
    /// The target's IPv6 address.
    pub v6: Ipv6Addr,
    servers: Vec<Child>,
}

/// Runs a command, panicking with its output on failure.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl TargetHost {
    /// Creates the namespace and the link; `index` picks the subnet.
    pub fn create(tag: &str, index: u32) -> Self {
        let n = (std::process::id() + index) % 200 + 20;
        let ns = format!("{tag}n");
        let host_if = format!("{tag}h");
        let peer_if = format!("{tag}p");
        let host = Self {
            ns: ns.clone(),
            host_if: host_if.clone(),
            peer_if: peer_if.clone(),
            v4: Ipv4Addr::new(10, 231, n as u8, 2),
            v6: format!("fd31:0:{n}::2").parse().expect("valid v6"),
            servers: Vec::new(),
        };
        sh("ip", &["netns", "add", &ns]);
        sh("ip", &["link", "add", &host_if, "type", "veth", "peer", "name", &peer_if, "netns", &ns]);
        sh("ip", &["addr", "add", &format!("10.231.{n}.1/24"), "dev", &host_if]);
        sh("ip", &["-6", "addr", "add", &format!("fd31:0:{n}::1/64"), "dev", &host_if, "nodad"]);
        sh("ip", &["link", "set", &host_if, "up"]);
        let in_ns = |args: &[&str]| {
            let mut full = vec!["netns", "exec", &ns, "ip"];
            full.extend_from_slice(args);
            sh("ip", &full);
        };
        in_ns(&["addr", "add", &format!("10.231.{n}.2/24"), "dev", &peer_if]);
        in_ns(&["-6", "addr", "add", &format!("fd31:0:{n}::2/64"), "dev", &peer_if, "nodad"]);
        in_ns(&["link", "set", &peer_if, "up"]);
        in_ns(&["link", "set", "lo", "up"]);
        host
    }

    /// Sends what the target sends at `rate` (tc's notation, e.g. `1gbit`),
    /// as a target across a real network would; `None` lifts the limit.
    pub fn limit_egress(&self, rate: Option<&str>) {
        let qdisc = |args: &[&str]| {
            let mut full = vec!["netns", "exec", &self.ns, "tc", "qdisc"];
            full.extend_from_slice(args);
            Command::new("ip").args(&full).output()
        };
        // Lifting a limit that was never set fails: nothing to lift.
        let _ = qdisc(&["del", "dev", &self.peer_if, "root"]);
        if let Some(rate) = rate {
            // A token bucket the size of two segments (veth hands over up to
            // 64 KiB at once), a queue long enough that the rate, not drops,
            // paces a response.
            let added =
                qdisc(&["add", "dev", &self.peer_if, "root", "tbf", "rate", rate, "burst", "128kb", "latency", "50ms"]);
            assert!(added.is_ok_and(|out| out.status.success()), "tc could not limit the target's link to {rate}");
        }
    }

    /// Starts a command inside the namespace; it is killed when the host drops.
    pub fn spawn(&mut self, program: &str, args: &[&str]) -> &mut Child {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program} in {}: {e}", self.ns));
        self.servers.push(child);
        self.servers.last_mut().expect("just pushed")
    }

    /// Serves HTTP on `port` (IPv4 and IPv6) from `dir` with Python's http.server.
    pub fn start_http(&mut self, port: u16, dir: &Path) {
        let port_s = port.to_string();
        let dir_s = dir.display().to_string();
        self.spawn("python3", &["-m", "http.server", &port_s, "--bind", "::", "--directory", &dir_s]);
        self.wait_for_port(IpAddr::V4(self.v4), port);
    }

    /// Initialises and starts PostgreSQL 15 listening on the target's
    /// addresses, trusting every client (credentials are not this test's subject).
    pub fn start_postgres(&mut self, data_root: &Path) -> PathBuf {
        self.start_postgres_with(data_root, &[])
    }

    /// Like [`Self::start_postgres`], with extra `-c name=value` settings.
    pub fn start_postgres_with(&mut self, data_root: &Path, settings: &[&str]) -> PathBuf {
        self.start_postgres_auth(data_root, settings, "trust")
    }

    /// PostgreSQL whose network clients authenticate with `method` (e.g.
    /// `scram-sha-256`); local socket connections stay trusted for the test.
    pub fn start_postgres_auth(&mut self, data_root: &Path, settings: &[&str], method: &str) -> PathBuf {
        let bin = Path::new("/usr/lib/postgresql/15/bin");
        let data = data_root.join("pgdata");
        fs::create_dir_all(&data).expect("mkdir pgdata");
        sh("chown", &["-R", "postgres:postgres", &data_root.display().to_string()]);
        sh(
            "runuser",
            &[
                "-u",
                "postgres",
                "--",
                &bin.join("initdb").display().to_string(),
                "-D",
                &data.display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let mut hba = fs::OpenOptions::new().append(true).open(data.join("pg_hba.conf")).expect("pg_hba.conf");
        use std::io::Write as _;
        writeln!(hba, "host all all 0.0.0.0/0 {method}\nhost all all ::/0 {method}").expect("write pg_hba");
        let listen = format!("listen_addresses={},{}", self.v4, self.v6);
        let sockets = format!("unix_socket_directories={}", data.display());
        let postgres = bin.join("postgres").display().to_string();
        let data_s = data.display().to_string();
        let mut args =
            vec!["-u", "postgres", "--", &postgres, "-D", &data_s, "-c", &listen, "-c", &sockets, "-c", "fsync=off"];
        for setting in settings {
            args.extend(["-c", setting]);
        }
        self.spawn("runuser", &args);
        self.wait_for_port(IpAddr::V4(self.v4), 5432);
        // PostgreSQL opens its TCP listeners before its Unix socket, which
        // the tests' superuser connections use.
        let socket = data.join(".s.PGSQL.5432");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !socket.exists() {
            assert!(std::time::Instant::now() < deadline, "PostgreSQL's socket {} never appeared", socket.display());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        data
    }

    /// A test CA and a server certificate it signs for `ip`, in `dir`;
    /// returns the PostgreSQL TLS settings and the CA file.
    pub fn tls_with_ca(dir: &Path, ip: IpAddr) -> (Vec<String>, PathBuf) {
        let ca = test_certificate(dir, &format!("IP:{ip}"));
        sh("chown", &["-R", "postgres", &dir.display().to_string()]);
        let path = |name: &str| dir.join(name).display().to_string();
        let settings = vec![
            "ssl=on".into(),
            format!("ssl_cert_file={}", path("server.crt")),
            format!("ssl_key_file={}", path("server.key")),
        ];
        (settings, ca)
    }

    /// A policy's PostgreSQL target `pg` on this host, open to everyone,
    /// with just-in-time logins made with `admin_file`; `credentials` is
    /// more of `[target.credentials]` (keys, then sub-tables). Roles,
    /// guardrails and the rest follow in the caller's text.
    pub fn jit_policy(&self, admin_file: &Path, credentials: &str) -> String {
        format!(
            "[[target]]\nname = \"pg\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"{}\"]\n\n\
             [[target.access]]\naction = \"allow\"\nusers = [\"*\"]\n\n\
             [target.credentials]\nadmin_file = \"{}\"\n{credentials}\n",
            self.v4,
            admin_file.display()
        )
    }

    /// The admin role Airlock's embedded engine creates roles with
    /// (CREATEROLE, and pg_signal_backend to end expired sessions), and its
    /// root-only admin file in `dir`; returns the file's path.
    pub fn jit_admin(data: &Path, dir: &Path, password: &str) -> PathBuf {
        Self::superuser_sql(data, &format!("CREATE ROLE airlock_admin LOGIN CREATEROLE PASSWORD '{password}'"));
        Self::superuser_sql(data, "GRANT pg_signal_backend TO airlock_admin");
        let file = dir.join("airlock-db-admin.toml");
        fs::write(&file, format!("user = \"airlock_admin\"\npassword = \"{password}\"\n")).expect("admin file");
        crate::set_mode(&file, 0o600);
        file
    }

    /// Runs SQL as the superuser over the server's local socket (never
    /// through the network path under test); returns tuples-only output.
    pub fn superuser_sql(data: &Path, sql: &str) -> String {
        sh(
            "runuser",
            &[
                "-u",
                "postgres",
                "--",
                "psql",
                "-h",
                &data.display().to_string(),
                "-X",
                "-At",
                "-d",
                "postgres",
                "-c",
                sql,
            ],
        )
    }

    /// Waits (bounded) until something accepts on `addr:port`, connecting
    /// from the test process, which sits outside the lab's cgroup.
    pub fn wait_for_port(&self, addr: IpAddr, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect_timeout(&(addr, port).into(), Duration::from_millis(200)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("nothing listens on {addr}:{port} in {} after 30 s", self.ns);
    }
}

impl Drop for TargetHost {
    fn drop(&mut self) {
        for child in &mut self.servers {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Killing `ip netns exec` leaves its grandchildren (runuser → postgres).
        kill_namespace_processes(&self.ns);
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).stderr(Stdio::null()).status();
    }
}

fn kill_namespace_processes(ns: &str) {
    for _ in 0..50 {
        let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else { return };
        let pids: Vec<i32> =
            String::from_utf8_lossy(&out.stdout).lines().filter_map(|p| p.trim().parse().ok()).collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            // SAFETY: plain kill(2).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Deletes namespaces earlier runs left behind.
pub fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if name.starts_with(PREFIX) && name.ends_with('n') && !crate::owned_by_a_live_process(name) {
            kill_namespace_processes(name);
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// A test CA (`ca.crt`) and a server certificate it signs
/// (`server.crt`, `server.key`) for the subject alternative names `san`
/// (`IP:10.0.0.2,DNS:api.lab`), in `dir`; returns the CA file.
pub fn test_certificate(dir: &Path, san: &str) -> PathBuf {
    fs::create_dir_all(dir).expect("mkdir tls dir");
    let path = |name: &str| dir.join(name).display().to_string();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let (ca_key, ca_crt) = (path("ca.key"), path("ca.crt"));
    let mut ca =
        vec!["req", "-x509", "-days", "1", "-subj", "/CN=airlock-test-ca", "-keyout", &ca_key, "-out", &ca_crt];
    ca.extend(ec);
    sh("openssl", &ca);
    let (key, csr) = (path("server.key"), path("server.csr"));
    let mut request = vec!["req", "-subj", "/CN=target", "-keyout", &key, "-out", &csr];
    request.extend(ec);
    sh("openssl", &request);
    fs::write(
        dir.join("ext.cnf"),
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"),
    )
    .expect("ext");
    let (ext, crt) = (path("ext.cnf"), path("server.crt"));
    sh(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ],
    );
    dir.join("ca.crt")
}
