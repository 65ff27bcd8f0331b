//! A real nginx on the lab target: HTTPS with HTTP/2 and HTTP/1.1 on port
//! 443 (a certificate from a test CA for the target's address and
//! `api.lab`), plain HTTP on port 80, an access log of what arrived —
//! including the headers a proxy must rewrite — files to serve, and a
//! directory that takes uploads (PUT).

use std::{
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
};

use crate::Lab;

/// A started nginx.
pub struct Nginx {
    /// The test CA that signed its certificate (for Airlock's `ca_file`).
    pub ca: PathBuf,
    /// Its access log: one JSON object a request.
    pub log: PathBuf,
    /// Files it serves at `/files/…`.
    pub files: PathBuf,
    /// Where files PUT at `/uploads/…` land (WebDAV's PUT).
    pub uploads: PathBuf,
}

impl Nginx {
    /// The access log's entries so far.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        crate::json_lines(&self.log)
    }
}

/// Starts nginx on the lab target.
pub fn start(lab: &mut Lab) -> Nginx {
    let dir = lab.dir.path().join("nginx");
    let files = dir.join("files");
    fs::create_dir_all(&files).expect("mkdir nginx");
    let uploads = dir.join("uploads");
    fs::create_dir_all(&uploads).expect("mkdir nginx uploads");
    let ip = IpAddr::V4(lab.target.v4);
    let ca = crate::netns::test_certificate(&dir, &format!("IP:{ip},DNS:api.lab"));
    let log = dir.join("access.log");
    let path = |name: &str| dir.join(name).display().to_string();
    let http = format!(
        r#"
    log_format seen escape=json '{{"request":"$request","protocol":"$server_protocol","status":$status,'
        '"authorization":"$http_authorization","x_api_key":"$http_x_api_key","cookie":"$http_cookie",'
        '"impersonate_user":"$http_impersonate_user","host":"$host","body_bytes":$request_length,'
        '"forwarded":"$http_forwarded","x_forwarded_host":"$http_x_forwarded_host",'
        '"x_original_url":"$http_x_original_url"}}';
    server {{
        listen {ip}:443 ssl http2;
        listen {ip}:80;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        access_log {log} seen;
        client_max_body_size 16m;
        gzip on;
        gzip_types application/json text/plain;
        gzip_min_length 64;
        location /files/ {{ alias {files}/; types {{ text/plain txt; }} default_type application/json; }}
        location /uploads/ {{ alias {uploads}/; dav_methods PUT; }}
        location /echo {{ default_type text/plain; add_header X-Seen "$http_authorization"; return 200 "you sent: $http_authorization\n"; }}
        location /trailers {{ default_type text/plain; add_header Trailer X-Checksum; add_trailer X-Checksum sum-of-body; return 200 "with a trailer\n"; }}
        location / {{ default_type text/plain; return 200 "hello from nginx\n"; }}
    }}
"#,
        cert = path("server.crt"),
        key = path("server.key"),
        log = log.display(),
        files = files.display(),
        uploads = uploads.display(),
    );
    run(lab, &dir, &http, &[443, 80]);
    Nginx { ca, log, files, uploads }
}

/// Runs an nginx on the lab target (killed with it) whose pid, error log
/// and temporary files are in `dir`, with `http` inside its `http` block,
/// and waits until `ports` on the target's address answer.
pub fn run(lab: &mut Lab, dir: &Path, http: &str, ports: &[u16]) {
    let path = |name: &str| dir.join(name).display().to_string();
    let conf = format!(
        "user root;\nworker_processes 2;\npid {pid};\nerror_log {error_log} info;\nevents {{ worker_connections 1024; }}\n\
         http {{\n    access_log off;\n    keepalive_requests 100000;\n    client_body_temp_path {tmp}/body;\n    \
         proxy_temp_path {tmp}/proxy;\n    fastcgi_temp_path {tmp}/fastcgi;\n    uwsgi_temp_path {tmp}/uwsgi;\n    \
         scgi_temp_path {tmp}/scgi;\n{http}}}\n",
        pid = path("nginx.pid"),
        error_log = path("error.log"),
        tmp = dir.display(),
    );
    fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
    let (conf, prefix) = (path("nginx.conf"), format!("{}/", dir.display()));
    lab.target.spawn("/usr/sbin/nginx", &["-c", &conf, "-p", &prefix, "-g", "daemon off;"]);
    for &port in ports {
        lab.target.wait_for_port(IpAddr::V4(lab.target.v4), port);
    }
}

/// The master (from its pid file) and workers of the nginx [`run`] started
/// in `dir`: whose CPU time a benchmark charges to it.
pub fn processes(dir: &Path) -> Vec<u32> {
    let pid_file = dir.join("nginx.pid");
    let Some(master) = fs::read_to_string(pid_file).ok().and_then(|p| p.trim().parse::<u32>().ok()) else {
        return Vec::new();
    };
    let workers = fs::read_dir("/proc").into_iter().flatten().flatten().filter_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        (crate::process::parent_of(pid) == Some(master)).then_some(pid)
    });
    std::iter::once(master).chain(workers).collect()
}
