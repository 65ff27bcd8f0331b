//! HTTPS and HTTP through Airlock end to end: real curl, run as test users
//! and intercepted by the eBPF programs, lands on the agent, which shows a
//! leaf of its host CA, and relays each request to a real nginx on the lab
//! target with the client's credentials removed and Airlock's injected.

use std::{fs, path::PathBuf, process::Command};

use airlock_vm_tests::{Lab, nginx, privileged, set_mode};

/// The token Airlock sends; the client never holds it.
const INJECTED: &str = "Bearer airlock-injected-7f3a";

fn policy(lab: &Lab, ca: &std::path::Path, token_file: &std::path::Path) -> String {
    let v4 = lab.target.v4;
    let alice = &lab.user("alice").name;
    let bob = &lab.user("bob").name;
    format!(
        r#"
[[target]]
name = "api"
protocol = "https"
port = 443
addresses = ["{v4}"]

[[target.access]]
action = "allow"
users = ["{alice}"]

[target.https]
ca_file = "{ca}"
server_name = "api.lab"
other_names = ["alias.lab"]
strip_cookies = ["session"]

[target.https.credential]
kind = "header_file"
header = "Authorization"
file = "{token}"

[[target.https.rule]]
methods = ["DELETE"]
path = "/files/*"
action = "deny"
reason = "files on the API are not deleted from workstations"

[[target.https.rule]]
methods = ["POST"]
path = "/deploy*"
action = "approve"
reason = "deploys need a second person"

[target.approvals]
users = ["{bob}"]
timeout_seconds = 60

[target.masking]
detectors = ["email", "card"]

[[target.masking.rules]]
json_path = "$.items[*].api_token"

[[target]]
name = "api-plain"
protocol = "http"
port = 80
addresses = ["{v4}"]

[[target.access]]
action = "allow"
users = ["{alice}"]

[target.https]
record_bodies = {{ max_bytes = 4096 }}
"#,
        ca = ca.display(),
        token = token_file.display(),
    )
}

struct HttpsLab {
    lab: Lab,
    nginx: nginx::Nginx,
    /// Airlock's host CA, where curl is told to find it.
    host_ca: PathBuf,
}

fn https_lab() -> HttpsLab {
    let mut lab = Lab::new(&["alice", "bob"]);
    let nginx = nginx::start(&mut lab);
    let token = lab.dir.path().join("api-token");
    fs::write(&token, format!("{INJECTED}\n")).unwrap();
    set_mode(&token, 0o600);
    let policy = policy(&lab, &nginx.ca, &token);
    lab.start_agent(&policy);
    let host_ca = lab.host_ca_file();
    HttpsLab { lab, nginx, host_ca }
}

impl HttpsLab {
    fn curl(&self, user: &str, args: &[&str]) -> airlock_vm_tests::CommandOutput {
        let ca = self.host_ca.display().to_string();
        let mut full = vec!["-sS", "--max-time", "20", "--cacert", &ca];
        full.extend_from_slice(args);
        self.lab.run_as(user, "curl", &full)
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.lab.target.v4)
    }
}

#[test]
fn requests_carry_airlocks_credential_never_the_clients_and_each_is_recorded() {
    if !privileged() {
        return;
    }
    let t = https_lab();
    let url = t.url("https", "/hello?access_token=client-secret&page=2");
    let out = t.curl(
        "alice",
        &[
            "-H",
            "Authorization: Bearer client-own-token",
            "-H",
            "Impersonate-User: system:admin",
            "-H",
            "Cookie: session=client-session; theme=dark",
            // Headers servers behind a proxy may route by, instead of the
            // host and path Airlock judged.
            "-H",
            "Forwarded: host=admin.lab",
            "-H",
            "X-Forwarded-Host: admin.lab",
            "-H",
            "X-Original-URL: /admin",
            &url,
        ],
    );
    assert!(out.success(), "{out:?}\n{}", t.lab.agent().log());
    assert_eq!(out.stdout, "hello from nginx\n");

    let seen = t.nginx.requests();
    let first = seen.last().expect("nginx saw the request");
    assert_eq!(first["authorization"], INJECTED, "{first}");
    assert_eq!(first["impersonate_user"], "", "{first}");
    assert_eq!(first["cookie"], "theme=dark", "{first}");
    for routing in ["forwarded", "x_forwarded_host", "x_original_url"] {
        assert_eq!(first[routing], "", "{routing} arrived: {first}");
    }

    let record = t.lab.agent().wait_for_records("http.request", 1).remove(0);
    assert_eq!(record["identity"]["user"], t.lab.user("alice").name);
    let detail = &record["detail"];
    assert_eq!(detail["method"], "GET");
    assert_eq!(detail["path"], "/hello?access_token=***&page=2");
    assert_eq!(detail["status"], 200);
    assert_eq!(detail["response_bytes"], 17);
    assert!(detail["credential"].as_str().unwrap().starts_with("header_file Authorization from "), "{detail}");
    // A target that echoes the request's headers does not hand the token out.
    let echo = t.curl("alice", &["-D", "-", &t.url("https", "/echo")]);
    assert!(echo.success(), "{echo:?}");
    assert!(echo.stdout.contains("you sent: Bearer *********************\n"), "{echo:?}");
    assert!(echo.stdout.contains("x-seen: Bearer *********************"), "{echo:?}");
    assert!(!echo.stdout.contains("airlock-injected"), "{echo:?}");

    let log = fs::read_to_string(t.lab.agent().config.audit_dir.join("audit.jsonl")).unwrap();
    for secret in ["airlock-injected-7f3a", "client-secret", "client-own-token", "client-session"] {
        assert!(!log.contains(secret), "{secret} reached the audit log");
    }
}

#[test]
fn json_and_text_answers_are_masked_as_they_stream_even_when_the_client_asks_for_gzip() {
    if !privileged() {
        return;
    }
    let t = https_lab();
    // Some 4 MB of JSON: far more than one read or frame holds.
    let items: Vec<_> = (0..20_000)
        .map(|i| {
            serde_json::json!({
                "id": i,
                "email": format!("customer{i}@example.com"),
                "card": "4111 1111 1111 1111",
                "api_token": format!("tok-{i:08}-secret"),
                "note": "nothing to hide here, just some padding to make the body large enough ".repeat(2),
            })
        })
        .collect();
    let document = serde_json::json!({ "kind": "CustomerList", "items": items });
    fs::write(t.nginx.files.join("customers.json"), serde_json::to_vec_pretty(&document).unwrap()).unwrap();
    fs::write(t.nginx.files.join("notes.txt"), "call bob@example.com\ncard 4111-1111-1111-1111 on file\n").unwrap();
    fs::write(t.nginx.files.join("broken.json"), format!("{{\"items\": [{}", "{\"a\": 1},".repeat(5000))).unwrap();

    for flag in ["--http2", "--http1.1"] {
        let out = t.curl("alice", &[flag, "--compressed", &t.url("https", "/files/customers.json")]);
        assert!(out.success(), "{:?}\n{}", out.stderr, t.lab.agent().log());
        let masked: serde_json::Value = serde_json::from_str(&out.stdout).expect("the masked answer is JSON");
        let items = masked["items"].as_array().unwrap();
        assert_eq!(items.len(), 20_000);
        assert_eq!(items[7]["id"], 7, "what is not sensitive stays");
        assert_eq!(items[7]["api_token"], "[masked]");
        assert_ne!(items[7]["email"], "customer7@example.com");
        assert!(!out.stdout.contains("@example.com") && !out.stdout.contains("4111 1111"), "{flag}: a value escaped");
        assert!(!out.stdout.contains("-secret"), "{flag}: a token escaped");
    }
    let text = t.curl("alice", &["--compressed", &t.url("https", "/files/notes.txt")]);
    assert!(text.success(), "{text:?}");
    assert!(!text.stdout.contains("bob@example.com") && !text.stdout.contains("4111-1111"), "{text:?}");
    assert!(text.stdout.starts_with("call ") && text.stdout.ends_with(" on file\n"), "{text:?}");

    // JSON that does not parse is cut where it stops making sense, never passed on.
    let broken = t.curl("alice", &["--http1.1", &t.url("https", "/files/broken.json")]);
    assert!(!broken.success(), "a cut answer is an error to the client: {broken:?}");

    // Ranges of the body would be masked out of their document's context
    // (a multipart one not at all): the whole document comes, masked.
    for range in ["0-0,1-", "1000-2000"] {
        let url = t.url("https", "/files/customers.json");
        let out = t.curl("alice", &["-w", "\n%{http_code}", "-H", &format!("Range: bytes={range}"), &url]);
        assert!(out.success() && out.stdout.ends_with("\n200"), "{range}: {:.300}", out.stdout);
        assert!(!out.stdout.contains("@example.com") && !out.stdout.contains("-secret"), "{range}: a value escaped");
    }

    let records = t.lab.agent().wait_for_records("http.request", 6);
    let masked = |i: usize| records[i]["detail"]["masked"].clone();
    // In the order they were first met (serde_json writes members sorted).
    assert_eq!(
        masked(0),
        serde_json::json!([
            { "reason": "json_path $.items[*].api_token", "count": 20_000 },
            { "reason": "card", "count": 20_000 },
            { "reason": "email", "count": 20_000 },
        ])
    );
    assert!(records[3]["detail"]["mask_failure"].as_str().unwrap().contains("ends inside a value"), "{}", records[3]);
    // nginx was asked for an uncompressed answer.
    let seen = t.nginx.requests();
    assert!(seen.iter().all(|r| r["status"] == 200), "{seen:?}");
}

#[test]
fn bodies_are_recorded_where_the_target_asks_cut_at_its_cap_and_redacted() {
    if !privileged() {
        return;
    }
    let t = https_lab();
    let plain = |path: &str| t.url("http", path);
    let login = r#"{"user":"alice","password":"hunter2-xyz","note":"card 4111 1111 1111 1111"}"#;
    let json = ["-H", "Content-Type: application/json", "-d", login, &plain("/login")];
    let out = t.curl("alice", &json);
    assert!(out.success(), "{out:?}");
    let form = t.curl("alice", &["-d", "user=alice&client_secret=zz-form-secret-zz", &plain("/token")]);
    assert!(form.success(), "{form:?}");
    let big: String = (0..2_000).map(|i| format!("{{\"id\":{i},\"owner\":\"ops\"}}\n")).collect();
    fs::write(t.nginx.files.join("big.ndjson"), &big).unwrap();
    let download = t.curl("alice", &["-o", "/dev/null", &plain("/files/big.ndjson")]);
    assert!(download.success(), "{download:?}");
    let upload = t.lab.dir.path().join("blob.bin");
    fs::write(&upload, b"\x00\x01binary zz-binary-secret-zz").unwrap();
    set_mode(&upload, 0o644);
    let binary = format!("@{}", upload.display());
    let out =
        t.curl("alice", &["-H", "Content-Type: application/octet-stream", "--data-binary", &binary, &plain("/upload")]);
    assert!(out.success(), "{out:?}");
    // The HTTPS target does not record bodies.
    let unrecorded = t.curl("alice", &["-d", "x=1", &t.url("https", "/hello")]);
    assert!(unrecorded.success(), "{unrecorded:?}");
    // YAML's flow mappings hold assignments too.
    let yaml = "db: {user: app, password: zz-yaml-secret-zz, port: 5432}\n";
    let config = t.curl("alice", &["-H", "Content-Type: application/yaml", "--data-binary", yaml, &plain("/config")]);
    assert!(config.success(), "{config:?}");

    let records = t.lab.agent().wait_for_records("http.request", 6);
    let detail = |i: usize| records[i]["detail"].clone();
    let sent = detail(0)["request_body"].clone();
    assert_eq!(sent["content_type"], "application/json");
    assert_eq!(sent["bytes"], login.len());
    assert_eq!(sent["cut"], false);
    let text = sent["text"].as_str().unwrap();
    assert!(text.contains(r#""user":"alice""#), "{text}");
    assert!(text.contains(r#""password":"***""#), "{text}");
    assert!(!text.contains("4111 1111"), "{text}");
    assert_eq!(detail(0)["response_body"]["text"], "hello from nginx\n");

    assert_eq!(detail(1)["request_body"]["text"], "user=alice&client_secret=***");

    let answer = detail(2)["response_body"].clone();
    assert_eq!(answer["bytes"], big.len());
    assert_eq!(answer["cut"], true);
    let kept = answer["text"].as_str().unwrap();
    assert!(kept.len() <= 4096 && big.starts_with(kept), "the start as sent: {} bytes", kept.len());
    assert!(kept.len() > 4000, "all but the record cut at the cap: {} bytes", kept.len());

    assert_eq!(detail(3)["request_body"]["left_out"], "not text");
    assert!(detail(3)["request_body"]["text"].is_null());
    assert!(detail(4).get("request_body").is_none(), "{}", detail(4));
    let yaml = detail(5)["request_body"]["text"].as_str().unwrap().to_owned();
    assert!(yaml.starts_with("db: {user: app, password: ") && yaml.ends_with(", port: 5432}\n"), "{yaml}");

    let log = fs::read_to_string(t.lab.agent().config.audit_dir.join("audit.jsonl")).unwrap();
    for secret in ["hunter2-xyz", "zz-form-secret-zz", "zz-binary-secret-zz", "zz-yaml-secret-zz"] {
        assert!(!log.contains(secret), "{secret} reached the audit log");
    }
}

#[test]
fn trailers_asked_for_reach_the_client_and_take_http2_to_the_target() {
    if !privileged() {
        return;
    }
    let t = https_lab();
    // Over HTTP/1.1, hyper relays the trailer fields a `Trailer` header
    // declared, as nginx's does here.
    for (flag, protocol) in [("--http2", "HTTP/2.0"), ("--http1.1", "HTTP/1.1")] {
        let before = t.nginx.requests().len();
        let out = t.curl("alice", &[flag, "-H", "TE: trailers", "-D", "-", &t.url("https", "/trailers")]);
        assert!(out.success(), "{out:?}\n{}", t.lab.agent().log());
        let trailer = out.stdout.lines().any(|line| line.trim_end().eq_ignore_ascii_case("x-checksum: sum-of-body"));
        assert!(trailer, "{flag}: the target's trailer did not arrive: {out:?}");
        let seen = &t.nginx.requests()[before..];
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0]["protocol"], protocol, "{seen:?}");
        assert_eq!(seen[0]["authorization"], INJECTED, "{seen:?}");
    }
}

#[test]
fn http2_and_http1_keep_alive_both_work_and_requests_are_recorded_one_by_one() {
    if !privileged() {
        return;
    }
    let t = https_lab();
    let (a, b) = (t.url("https", "/one"), t.url("https", "/two"));
    // The target is spoken to in HTTP/1.1 either way (HTTP/2 only for trailers: below).
    for flag in ["--http2", "--http1.1"] {
        let before = t.nginx.requests().len();
        let out = t.curl("alice", &[flag, "-w", "%{http_version} %{num_connects}\n", &a, &b]);
        assert!(out.success(), "{out:?}\n{}", t.lab.agent().log());
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), 4, "{out:?}");
        // Two requests on one client connection.
        assert!(lines[3].ends_with(" 0"), "the second request reused the connection: {out:?}");
        let seen = &t.nginx.requests()[before..];
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen.iter().all(|r| r["protocol"] == "HTTP/1.1"), "{seen:?}");
        assert!(seen.iter().all(|r| r["authorization"] == INJECTED), "{seen:?}");
    }
    let records = t.lab.agent().wait_for_records("http.request", 4);
    let versions: Vec<&str> = records.iter().filter_map(|r| r["detail"]["version"].as_str()).collect();
    assert_eq!(versions, ["HTTP/2", "HTTP/2", "HTTP/1.1", "HTTP/1.1"]);
    // One session a connection.
    assert_eq!(t.lab.agent().records_of("connection.open").len(), 2);

    // Plain HTTP on internal networks: the same, without TLS.
    let out = t.curl("alice", &[&t.url("http", "/plain")]);
    assert!(out.success() && out.stdout == "hello from nginx\n", "{out:?}");
    let records = t.lab.agent().wait_for_records("http.request", 5);
    assert_eq!(records[4]["target"]["name"], "api-plain");
}

#[test]
fn large_uploads_stream_to_the_target_whole_also_when_the_client_waits_for_100_continue() {
    if !privileged() {
        return;
    }
    let t = https_lab();
    // Past 1 MiB, curl asks `Expect: 100-continue` over HTTP/1.1 and waits
    // for the go-ahead before sending the body.
    const SIZE: usize = 3 << 20;
    let upload = t.lab.dir.path().join("upload.bin");
    let content: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    fs::write(&upload, &content).unwrap();
    set_mode(&upload, 0o644);
    let file = upload.display().to_string();
    for (flag, name) in [("--http1.1", "one"), ("--http2", "two")] {
        let url = t.url("https", &format!("/uploads/{name}.bin"));
        let out = t.curl("alice", &[flag, "-T", &file, "-w", "%{http_code} %{size_upload}", &url]);
        assert!(out.success() && out.stdout.ends_with(&format!("201 {SIZE}")), "{flag}: {out:?}");
        let stored = fs::read(t.nginx.uploads.join(format!("{name}.bin"))).unwrap();
        assert!(stored == content, "{flag}: {} bytes arrived, not the file sent", stored.len());
    }
    let records = t.lab.agent().wait_for_records("http.request", 2);
    assert!(records.iter().all(|r| r["detail"]["request_bytes"] == SIZE), "{records:?}");
    assert!(records.iter().all(|r| r["detail"]["method"] == "PUT" && r["detail"]["status"] == 201), "{records:?}");
}

#[test]
fn people_refused_get_an_http_answer_saying_why() {
    if !privileged() {
        return;
    }
    let t = https_lab();
    let before = t.nginx.requests().len();
    let out = t.curl("bob", &["-w", "\n%{http_code}", &t.url("https", "/hello")]);
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.ends_with("\n403"), "{out:?}");
    assert!(out.stdout.contains("airlock: access to \"api\" denied"), "{out:?}");
    let json = t.curl("bob", &["-H", "Accept: application/json", &t.url("https", "/hello")]);
    let body: serde_json::Value = serde_json::from_str(&json.stdout).expect("a JSON answer");
    assert!(body["error"].as_str().unwrap().contains("denied"), "{body}");
    assert!(body["hint"].as_str().unwrap().contains("administrators"), "{body}");
    assert_eq!(t.nginx.requests().len(), before, "nothing reached the target");
    assert_eq!(t.lab.agent().wait_for_records("connection.denied", 2).len(), 2);
}

#[test]
fn request_rules_refuse_or_hold_requests_by_method_and_path() {
    if !privileged() {
        return;
    }
    let t = https_lab();
    let before = t.nginx.requests().len();
    let out = t.curl("alice", &["-X", "DELETE", "-w", "\n%{http_code}", &t.url("https", "/files/report.json")]);
    assert!(out.stdout.ends_with("\n403"), "{out:?}");
    assert!(
        out.stdout.contains("airlock: request refused: files on the API are not deleted from workstations"),
        "{out:?}"
    );
    // Spelled as servers resolve it, or with a method override, it is the same request.
    for evasion in [
        vec!["-X", "DELETE", "--path-as-is", "/%66iles/report.json"],
        vec!["-X", "DELETE", "--path-as-is", "//files/report.json"],
        vec!["-X", "DELETE", "--path-as-is", "/files/x/../report.json"],
        vec!["-X", "POST", "-H", "X-HTTP-Method-Override: delete", "/files/report.json"],
        // A form's `_method` field, as Rails and Laravel read it.
        vec!["-d", "note=x&_method=DELETE", "/files/report.json"],
        vec!["-d", "%5Fmethod=delete", "/files/report.json"],
        vec!["-F", "note=x", "-F", "_method=DELETE", "/files/report.json"],
        vec!["-H", "Content-Type:", "-d", "_method=POST& _method=DELETE", "/files/report.json"],
        vec!["-H", "Content-Type: application/json", "-d", r#"{"_method":"DELETE"}"#, "/files/report.json"],
    ] {
        let (path, flags) = evasion.split_last().unwrap();
        let url = t.url("https", path);
        let mut args = flags.to_vec();
        args.extend(["-w", "\n%{http_code}", url.as_str()]);
        let out = t.curl("alice", &args);
        assert!(out.stdout.ends_with("\n403"), "{evasion:?}: {out:?}");
    }
    assert_eq!(t.nginx.requests().len(), before, "no refused request reached the target");
    // A form too large to read for its `_method` is refused where rules
    // tell methods apart; one that asks for no other method goes through.
    let large = t.lab.dir.path().join("large-form");
    fs::write(&large, format!("note={}", "x".repeat(300 * 1024))).unwrap();
    set_mode(&large, 0o644);
    let data = format!("@{}", large.display());
    let out = t.curl("alice", &["--data-binary", &data, "-w", "\n%{http_code}", &t.url("https", "/files/report.json")]);
    assert!(out.stdout.ends_with("\n403") && out.stdout.contains("a form over 256 KiB"), "{out:?}");
    assert_eq!(t.nginx.requests().len(), before, "no refused request reached the target");
    let out = t.curl("alice", &["-d", "note=x", "-w", "\n%{http_code}", &t.url("https", "/files/report.json")]);
    assert!(out.stdout.ends_with("\n404"), "{out:?}");
    let seen = t.nginx.requests();
    assert_eq!(seen.last().unwrap()["request"], "POST /files/report.json HTTP/1.1");
    // Other methods on the same path pass.
    let out = t.curl("alice", &["-w", "\n%{http_code}", &t.url("https", "/files/none.json")]);
    assert!(out.stdout.ends_with("\n404"), "{out:?}");

    // A held request waits for bob's approval, then goes through.
    let cli = t.lab.cli();
    let socket = t.lab.agent().config.socket.display().to_string();
    let airlock = |user: &str, args: &[&str]| {
        let mut full = args.to_vec();
        full.extend_from_slice(&["--socket", &socket]);
        t.lab.run_as(user, cli.to_str().unwrap(), &full)
    };
    std::thread::scope(|scope| {
        let held = scope.spawn(|| t.curl("alice", &["-X", "POST", "-d", "v=2", &t.url("https", "/deploy?token=abc")]));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        let request = loop {
            let out = airlock("bob", &["approvals", "--json"]);
            let list: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).expect("JSON list");
            if let Some(first) = list.into_iter().next() {
                break first;
            }
            assert!(std::time::Instant::now() < deadline, "no request appeared\n{}", t.lab.agent().log());
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        assert_eq!(request["statement"], format!("POST {}/deploy?token=***", t.lab.target.v4));
        let decided = airlock("bob", &["approve", request["id"].as_str().unwrap()]);
        assert!(decided.success(), "{decided:?}");
        let held = held.join().unwrap();
        assert!(held.success() && held.stdout == "hello from nginx\n", "{held:?}");
    });
    let seen = t.nginx.requests();
    assert_eq!(seen.last().unwrap()["request"], "POST /deploy?token=abc HTTP/1.1");
    let records = t.lab.agent().wait_for_records("http.request", 14);
    assert_eq!(records[0]["detail"]["refused"], "request refused: files on the API are not deleted from workstations");
    assert_eq!(records[0]["detail"]["status"], 403);
    // The form read ahead went on whole.
    let form = records.iter().find(|r| r["detail"]["status"] == 404 && r["detail"]["method"] == "POST");
    assert_eq!(form.expect("the form's record")["detail"]["request_bytes"], 6, "{records:?}");
}

/// Takes the host CA out of the system trust store, whatever happens.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new(airlock_vm_tests::agent::airlock_bin()).args(["ca", "--uninstall"]).status();
    }
}

/// What IT does once per host: `airlock ca --install`; then clients that
/// read the system trust store need no flag.
#[test]
fn the_host_ca_installed_in_the_system_trust_store_is_trusted_by_clients() {
    if !privileged() {
        return;
    }
    let t = https_lab();
    let url = t.url("https", "/hello");
    let untrusted = t.lab.run_as("alice", "curl", &["-sS", "--max-time", "20", &url]);
    assert!(!untrusted.success(), "{untrusted:?}");
    let installed = Installed;
    let out = Command::new(airlock_vm_tests::agent::airlock_bin())
        .args(["ca", "--install", "--config", t.lab.agent().config.path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::path::Path::new("/usr/local/share/ca-certificates/airlock-host-ca.crt").exists());
    let trusted = t.lab.run_as("alice", "curl", &["-sS", "--max-time", "20", &url]);
    assert!(trusted.success() && trusted.stdout == "hello from nginx\n", "{trusted:?}");
    drop(installed);
    assert!(!std::path::Path::new("/usr/local/share/ca-certificates/airlock-host-ca.crt").exists());
    let again = t.lab.run_as("alice", "curl", &["-sS", "--max-time", "20", &url]);
    assert!(!again.success(), "uninstalled, the CA is no longer trusted: {again:?}");
}

/// `kind = "bearer"`: the token is read from a real OpenBao's kv store when
/// the session starts; the client never holds it, the records never show it.
#[test]
fn a_bearer_token_read_from_openbao_is_injected() {
    if !privileged() {
        return;
    }
    let bao_dir = tempfile::tempdir().unwrap();
    let bao = airlock_vm_tests::bao::Bao::start(bao_dir.path());
    bao.configure(&[&["kv", "put", "secret/api", "token=bao-issued-9c1e"]]);
    let mut lab = Lab::new(&["alice", "bob"]);
    let nginx = nginx::start(&mut lab);
    let bao_token = lab.dir.path().join("bao-token");
    fs::write(&bao_token, "root\n").unwrap();
    set_mode(&bao_token, 0o600);
    let unused = lab.dir.path().join("unused-token");
    let bearer = format!(
        "kind = \"bearer\"\nopenbao = {{ addr = \"https://{}\", token_file = \"{}\", ca_file = \"{}\" }}\npath = \"secret/data/api\"\nfield = \"token\"\n",
        bao.addr,
        bao_token.display(),
        bao.ca_file.display()
    );
    let policy = policy(&lab, &nginx.ca, &unused).replace(
        &format!("kind = \"header_file\"\nheader = \"Authorization\"\nfile = \"{}\"\n", unused.display()),
        &bearer,
    );
    lab.start_agent(&policy);
    let host_ca = lab.host_ca_file();
    let t = HttpsLab { lab, nginx, host_ca };
    let out = t.curl("alice", &[&t.url("https", "/hello")]);
    assert!(out.success() && out.stdout == "hello from nginx\n", "{out:?}\n{}", t.lab.agent().log());
    assert_eq!(t.nginx.requests().last().unwrap()["authorization"], "Bearer bao-issued-9c1e");
    let record = t.lab.agent().wait_for_records("http.request", 1).remove(0);
    assert!(record["detail"]["credential"].as_str().unwrap().starts_with("bearer from "), "{record}");
    let log = fs::read_to_string(t.lab.agent().config.audit_dir.join("audit.jsonl")).unwrap();
    assert!(!log.contains("bao-issued-9c1e"), "the token reached the audit log");

    // OpenBao unreachable: the session is told why, in HTTP, and nothing reaches the target.
    drop(bao);
    let before = t.nginx.requests().len();
    let out = t.curl("alice", &["-w", "\n%{http_code}", &t.url("https", "/hello")]);
    assert!(out.stdout.ends_with("\n503"), "{out:?}");
    assert!(out.stdout.contains("the credential for this target could not be obtained"), "{out:?}");
    assert_eq!(t.nginx.requests().len(), before);
}

#[test]
fn malformed_and_ambiguous_requests_get_a_4xx_and_never_reach_the_target() {
    if !privileged() {
        return;
    }
    let t = https_lab();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/http/malformed.py");
    let v4 = t.lab.target.v4.to_string();
    let out = t.lab.run_as("alice", "/usr/bin/python3", &[script.to_str().unwrap(), &v4, "80"]);
    assert!(out.success(), "{out:?}");
    let statuses: std::collections::BTreeMap<&str, &str> =
        out.stdout.lines().filter_map(|line| line.split_once(' ')).collect();
    for (case, expected) in [
        // Content-Length beside Transfer-Encoding: read as chunked (RFC 9112
        // §6.3), re-framed toward the target, and the connection closed after
        // the one answer, so what was hidden behind it is never read.
        ("cl_te", "404"),
        ("te_cl", "404"),
        ("double_cl", "400"),
        ("obs_fold", "400"),
        ("te_obfuscated", "400"),
        ("huge_header", "431"),
        ("space_before_colon", "400"),
    ] {
        assert_eq!(statuses.get(case).copied(), Some(expected), "{case}: {out:?}");
    }
    // The target saw the two re-framed requests and the upgrade without a
    // key (nginx has no WebSocket endpoint: 200, no tunnel); nothing smuggled.
    let seen = t.nginx.requests();
    let paths: Vec<&str> = seen.iter().filter_map(|r| r["request"].as_str()).collect();
    assert_eq!(paths, ["POST /files/x HTTP/1.1", "POST /files/x HTTP/1.1", "GET /ws HTTP/1.1"], "{seen:?}");
    assert_eq!(statuses.get("bad_upgrade").copied(), Some("200"));
}

#[test]
fn a_request_naming_another_site_at_the_targets_address_is_refused_as_misdirected() {
    if !privileged() {
        return;
    }
    let t = https_lab();
    let v4 = t.lab.target.v4.to_string();
    let url = t.url("https", "/hello");
    let userinfo = format!("Host: {v4}:x@admin.internal");
    // The connection is for the address alice dialled; a Host, an HTTP/2
    // :authority or an absolute request target naming another site there
    // would take Airlock's credential to that site.
    for (case, args) in [
        ("Host", vec!["-H", "Host: admin.internal", url.as_str()]),
        ("HTTP/2 :authority", vec!["--http2", "-H", "Host: admin.internal:443", url.as_str()]),
        ("absolute target", vec!["--http1.1", "--request-target", "https://admin.internal/hello", url.as_str()]),
        ("userinfo", vec!["-H", &userinfo, url.as_str()]),
        // A server may read a bracketed name as an address and give it
        // to its default site.
        ("bracketed name", vec!["-H", "Host: [api.lab]", url.as_str()]),
    ] {
        let mut full = vec!["-w", "\n%{http_code}"];
        full.extend(args);
        let out = t.curl("alice", &full);
        assert!(out.stdout.ends_with("\n421"), "{case}: {out:?}");
        assert!(
            out.stdout.contains(&format!("this connection is for api.lab, alias.lab (or {v4})")),
            "{case}: {out:?}"
        );
    }
    assert!(t.nginx.requests().is_empty(), "a misdirected request reached the target: {:?}", t.nginx.requests());
    let refused = t.lab.agent().wait_for_records("http.request", 5);
    assert!(refused.iter().all(|r| r["detail"]["status"] == 421), "{refused:?}");

    // The site's own name, and the address itself with or without the
    // port, are the target; a request for the bare address reaches the
    // target naming the site, not whichever site serves the address.
    for host in [format!("Host: {v4}"), format!("Host: {v4}:443"), "Host: API.lab".to_owned()] {
        for protocol in ["--http1.1", "--http2"] {
            let out = t.curl("alice", &[protocol, "-H", &host, &url]);
            assert_eq!(out.stdout, "hello from nginx\n", "{host} {protocol}: {out:?}");
            let seen = t.nginx.requests().last().expect("nginx saw it")["host"].clone();
            assert_eq!(seen, "api.lab", "{host} {protocol}");
        }
    }
    // A name policy gives the same site (`other_names`) goes as written.
    let out = t.curl("alice", &["-H", "Host: alias.lab:443", &url]);
    assert_eq!(out.stdout, "hello from nginx\n", "{out:?}");
    assert_eq!(t.nginx.requests().last().expect("nginx saw it")["host"], "alias.lab");
    // A plain-HTTP target that names no site takes any Host (docs/https.md).
    let out = t.curl("alice", &["-H", "Host: admin.internal", &t.url("http", "/hello")]);
    assert_eq!(out.stdout, "hello from nginx\n", "{out:?}");
}
