//! gRPC through Airlock end to end: a real grpcio client, run as a test
//! user and intercepted by the eBPF programs, calls a real grpcio server
//! on the lab target (`fixtures/grpc/echo.py`). gRPC is HTTP/2 with its
//! status in trailers: what it needs of a proxy is what a plain HTTPS
//! client does not check (HTTP/2 to the target, `te: trailers`, trailers
//! and trailers-only answers relayed, flow control over large messages,
//! streams both ways), over TLS and over plain HTTP/2 (h2c). Airlock's own
//! refusals reach a gRPC client as gRPC errors with their reason.

use std::{fs, path::Path};

use airlock_vm_tests::{Lab, privileged, set_mode};

/// The token Airlock sends; the client never holds it.
const INJECTED: &str = "Bearer airlock-grpc-5e1d";
/// What the client sends as its own credential; it must not arrive.
const CLIENTS_OWN: &str = "Bearer clients-own-credential";
/// The service's port over TLS, and without (h2c).
const PORT: u16 = 50051;
const PLAIN_PORT: u16 = 50052;
/// The size of the `Big` answer: several HTTP/2 windows (64 KiB each at
/// the start), so flow control must move on both of Airlock's connections.
const BIG: usize = 3 << 20;

#[test]
fn grpc_calls_of_every_kind_pass_with_airlocks_credential_and_their_status() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new(&["alice", "bob"]);
    let dir = lab.dir.path().join("grpc");
    let ip = lab.target.v4;
    let server_ca = airlock_vm_tests::netns::test_certificate(&dir, &format!("IP:{ip}"));
    // The test users run the script from the lab's directory, not from the
    // source tree, which they may not be able to reach.
    let script = lab.dir.path().join("echo.py");
    fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/grpc/echo.py"), &script).unwrap();
    set_mode(&script, 0o644);
    let log = dir.join("calls.jsonl");
    let path = |name: &str| dir.join(name).display().to_string();
    let (listen, plain_listen) = (format!("{ip}:{PORT}"), format!("{ip}:{PLAIN_PORT}"));
    lab.target.spawn(
        "/usr/bin/python3",
        &[
            &script.display().to_string(),
            "serve",
            "--listen",
            &listen,
            "--plain-listen",
            &plain_listen,
            "--cert",
            &path("server.crt"),
            "--key",
            &path("server.key"),
            "--log",
            &log.display().to_string(),
        ],
    );
    for port in [PORT, PLAIN_PORT] {
        lab.target.wait_for_port(ip.into(), port);
    }

    let token = lab.dir.path().join("grpc-token");
    fs::write(&token, format!("{INJECTED}\n")).unwrap();
    set_mode(&token, 0o600);
    let alice = lab.user("alice").name.clone();
    let target = |name: &str, protocol: &str, port: u16, tls: &str| {
        format!(
            "[[target]]\nname = \"{name}\"\nprotocol = \"{protocol}\"\nport = {port}\naddresses = [\"{ip}\"]\n\n\
             [[target.access]]\naction = \"allow\"\nusers = [\"{alice}\"]\n\n[target.https]\nserver_name = \"{ip}\"\n{tls}\n\
             [target.https.credential]\nkind = \"header_file\"\nheader = \"Authorization\"\nfile = \"{token}\"\n\n\
             [[target.https.rule]]\npath = \"/airlock.test.Echo/Drop*\"\naction = \"deny\"\n\
             reason = \"drops are not made from workstations\"\n\n",
            token = token.display(),
        )
    };
    let ca_file = format!("ca_file = \"{}\"\n", server_ca.display());
    lab.start_agent(&(target("echo", "https", PORT, &ca_file) + &target("echo-plain", "http", PLAIN_PORT, "")));
    let host_ca = lab.host_ca_file();

    // Every method once, as `user`, over TLS or h2c; or only `Say`.
    let call = |user: &str, tls: bool, only_say: bool| {
        let (port, ca, big) = (if tls { PORT } else { PLAIN_PORT }, host_ca.display().to_string(), BIG.to_string());
        let address = format!("{ip}:{port}");
        let mut args = vec![script.to_str().unwrap(), "call", "--target", &address];
        args.extend(["--authorization", CLIENTS_OWN, "--big", &big]);
        if tls {
            args.extend(["--ca", &ca]);
        }
        if only_say {
            args.push("--only-say");
        }
        let out = lab.run_as(user, "/usr/bin/python3", &args);
        assert!(out.success(), "{out:?}\n{}", lab.agent().log());
        serde_json::from_str::<serde_json::Value>(out.stdout.trim()).expect("the client's results as JSON")
    };
    for (tls, name) in [(true, "echo"), (false, "echo-plain")] {
        let results = call("alice", tls, false);
        // A unary call, and the trailing metadata the server sent with its
        // status. The server echoes the credential it got: Airlock's, which
        // Airlock overwrites in the answer (its length kept, so the gRPC
        // message's length prefix still holds).
        assert_eq!(results["Say"]["answer"]["echo"], "hello", "{name}: {results}");
        let scrubbed = format!("Bearer {}", "*".repeat(INJECTED.len() - "Bearer ".len()));
        assert_eq!(results["Say"]["answer"]["authorization"], scrubbed, "{name}: {results}");
        assert_eq!(results["Say"]["trailers"]["x-echo-checksum"], "5", "{name}: {results}");
        // An error: its status and message travel in a trailers-only answer.
        assert_eq!(results["Fail"], serde_json::json!({ "code": "NOT_FOUND", "details": "no such thing" }));
        assert_eq!(results["Count"], serde_json::json!(["0", "1", "2", "3", "4"]));
        assert_eq!(results["Big"], BIG, "{name}: {results}");
        assert_eq!(results["Sum"], 5050, "{name}: {results}");
        // Refused by a rule: a gRPC error with the rule's reason, not an HTTP 403.
        assert_eq!(results["DropAll"]["code"], "PERMISSION_DENIED", "{name}: {results}");
        let reason = results["DropAll"]["details"].as_str().unwrap_or_default();
        assert!(reason.contains("drops are not made from workstations"), "{name}: {results}");

        // One record a call, with the gRPC status beside the HTTP one.
        let records: Vec<_> = lab
            .agent()
            .wait_for_records("http.request", if tls { 6 } else { 12 })
            .into_iter()
            .filter(|r| r["target"]["name"] == name)
            .collect();
        let seen: Vec<_> = records
            .iter()
            .map(|r| (r["detail"]["path"].as_str().unwrap_or(""), &r["detail"]["status"], &r["detail"]["grpc_status"]))
            .collect();
        let expected = [("Say", 200, 0), ("Fail", 200, 5), ("Count", 200, 0), ("Big", 200, 0), ("Sum", 200, 0)];
        assert_eq!(seen.len(), expected.len() + 1, "and DropAll's: {records:?}");
        for ((path, status, grpc_status), (method, http, code)) in seen.iter().zip(expected) {
            assert_eq!(*path, format!("/airlock.test.Echo/{method}"), "{records:?}");
            assert_eq!((**status == http, **grpc_status == code), (true, true), "{method}: {records:?}");
        }
        let refused = &records[5];
        assert_eq!(refused["detail"]["path"], "/airlock.test.Echo/DropAll", "{refused}");
        assert_eq!(refused["detail"]["status"], 403, "{refused}");
        assert!(refused["detail"]["refused"].as_str().unwrap().contains("drops are not made"), "{refused}");
        assert!(records.iter().all(|r| r["detail"]["version"] == "HTTP/2"), "{records:?}");
        let big = records.iter().find(|r| r["detail"]["path"] == "/airlock.test.Echo/Big").unwrap();
        assert!(big["detail"]["response_bytes"].as_u64().unwrap() > BIG as u64, "{big}");
    }

    // The server saw Airlock's credential on every call, never the client's.
    let calls = airlock_vm_tests::json_lines(&log);
    let methods: Vec<&str> = calls.iter().filter_map(|c| c["method"].as_str()).collect();
    let once = ["Say", "Fail", "Count", "Big", "Sum"];
    assert_eq!(methods, [once, once].concat(), "DropAll never reached the server");
    assert!(calls.iter().all(|c| c["authorization"] == INJECTED), "{calls:?}");

    // A person policy does not let in is told why, as a gRPC error too.
    let refused = call("bob", true, true);
    assert_eq!(refused["Say"]["code"], "PERMISSION_DENIED", "{refused}");
    assert!(refused["Say"]["details"].as_str().unwrap_or_default().contains("denied"), "{refused}");
    assert_eq!(airlock_vm_tests::json_lines(&log).len(), 10, "nothing of bob's reached the server");

    let audit = serde_json::to_string(&lab.agent().audit_records()).unwrap();
    for secret in ["airlock-grpc-5e1d", "clients-own-credential"] {
        let at = audit.find(secret);
        assert!(at.is_none(), "{secret} in the audit log: {}", &audit[at.unwrap().saturating_sub(300)..]);
    }
}
