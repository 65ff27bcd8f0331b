//! Real `kubectl` against a stand-in Kubernetes API server on the lab
//! target: no real kube-apiserver can run on the test machines, so
//! `vm-tests/fixtures/kube-apiserver/standin.py` answers discovery and
//! pods and secrets in namespace `default` (pod `web-1`, secret
//! `db-credentials`) as the real server does, and `kubectl exec` over
//! WebSocket (emulating `echo`, `cat` and a tiny `sh`), over TLS with a
//! certificate for the target's address and `kubernetes.lab`, demanding a
//! bearer token, and logs every request (the headers a proxy must rewrite
//! included).
//!
//! kubectl is the official binary `cargo xtask setup` installs. Test users
//! run it with `--kubeconfig` (the clients' environment is cleared) and
//! with a `--cache-dir` of their own: its default, under `$HOME/.kube`, is
//! shared by every test user and run (`HOME=/tmp`), and a cached discovery
//! skips the `/api` and `/apis` requests.

use std::{
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
};

use crate::Lab;

/// The port the stand-in listens on, the API server's usual one.
pub const PORT: u16 = 6443;

/// Where `cargo xtask setup` installs kubectl (xtask's `KUBECTL_VENV`).
const KUBECTL: &str = "/var/cache/airlock/kubectl-1.37.1/bin/kubectl";

/// A started stand-in API server.
pub struct KubeApi {
    /// The test CA that signed its certificate (for a kubeconfig's
    /// `certificate-authority`, or Airlock's `ca_file`).
    pub ca: PathBuf,
    /// Its request log: one JSON object a request, and one more an exec.
    pub log: PathBuf,
    /// The bearer token it demands (`Authorization: Bearer <token>`); any
    /// other request is answered 401.
    pub token: String,
    /// The port it listens on, on the target's IPv4 address.
    pub port: u16,
}

impl KubeApi {
    /// The request log's entries so far: `method`, `path`, `query` (raw),
    /// `authorization`, `impersonate_user`, `impersonate_groups` (a list),
    /// `accept`, `accept_encoding`, `user_agent` (null when the header was
    /// absent) and `status` (101 for an exec); after each exec, an entry
    /// `{"exec": {...}}` with its `command`, `protocol`, `tty`,
    /// `stdin_bytes`, `stdout_bytes`, `stderr_bytes`, `resizes` and
    /// `exit_code` (see `RequestLog` in the script).
    pub fn requests(&self) -> Vec<serde_json::Value> {
        crate::json_lines(&self.log)
    }
}

/// Starts the stand-in on the lab target, port [`PORT`] of its IPv4
/// address, and waits until it accepts connections.
pub fn start(lab: &mut Lab) -> KubeApi {
    let dir = lab.dir.path().join("kube-apiserver");
    let ip = IpAddr::V4(lab.target.v4);
    let ca = crate::netns::test_certificate(&dir, &format!("IP:{ip},DNS:kubernetes.lab"));
    let log = dir.join("requests.jsonl");
    let token = format!("standin-token-{}", lab.tag);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/kube-apiserver/standin.py");
    let path = |name: &str| dir.join(name).display().to_string();
    // Debian's python3, which the script is written for (standard library
    // only), rather than whatever root's PATH finds first.
    lab.target.spawn(
        "/usr/bin/python3",
        &[
            &script.display().to_string(),
            "--listen",
            &format!("{ip}:{PORT}"),
            "--cert",
            &path("server.crt"),
            "--key",
            &path("server.key"),
            "--token",
            &token,
            "--log",
            &log.display().to_string(),
        ],
    );
    lab.target.wait_for_port(ip, PORT);
    KubeApi { ca, log, token, port: PORT }
}

/// The kubectl binary `cargo xtask setup` installed, which every user may run.
pub fn kubectl_bin() -> PathBuf {
    let bin = PathBuf::from(KUBECTL);
    assert!(bin.is_file(), "{KUBECTL} is missing: run `cargo xtask setup` (it installs kubectl)");
    bin
}

/// Writes a kubeconfig at `path` (mode 0644, so test users can read it)
/// whose current context is cluster `server` (`https://HOST:PORT`), trusted
/// through the CA file `ca`, with `token` as the user's bearer token.
///
/// Without a token kubectl sends nothing: before its first request it asks
/// for a username and password on stdin (`Please enter Username: ` on
/// stdout, then `error: EOF` when stdin is closed, exit code 1). A client
/// that leaves its credentials to a proxy needs a placeholder token.
pub fn write_kubeconfig(path: &Path, server: &str, ca: &Path, token: Option<&str>) {
    let user = match token {
        Some(token) => serde_json::json!({ "token": token }),
        None => serde_json::json!({}),
    };
    // kubectl reads YAML, of which JSON is a subset.
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "lab", "cluster": { "server": server, "certificate-authority": ca } }],
        "users": [{ "name": "lab", "user": user }],
        "contexts": [{ "name": "lab", "context": { "cluster": "lab", "user": "lab" } }],
        "current-context": "lab",
    });
    fs::write(path, serde_json::to_string_pretty(&config).expect("kubeconfig as JSON"))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    crate::set_mode(path, 0o644);
}
