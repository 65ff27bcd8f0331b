//! WebSocket through Airlock end to end: the real websocat client, run as a
//! test user and intercepted by the eBPF programs, against a server on
//! PyPI's `websockets` on the lab target (`fixtures/websocket-target`),
//! over TLS. After the `101`, what the target sends is still read: text
//! messages masked as answers are, and the injected credential overwritten
//! where the server echoes it, across the frames of a fragmented message.

use std::{fs, path::Path};

use airlock_vm_tests::{Lab, privileged, set_mode};

/// The token Airlock sends; the client never holds it.
const INJECTED: &str = "Bearer airlock-websocket-8d2b41";
/// What the client sends as its own credential; it must not arrive.
const CLIENTS_OWN: &str = "Bearer clients-own-credential";
/// Where `cargo xtask setup` installs the client and the server's library
/// (xtask's `WEBSOCKET_VENV`).
const VENV: &str = "/var/cache/airlock/websocket-tools";
/// What the server puts in its JSON message (fixtures/websocket-target/server.py).
const EMAIL: &str = "carol@example.com";
const CARD: &str = "4111 1111 1111 1111";
/// The server's ports behind a target that masks, and one that does not.
const MASKED: u16 = 443;
const UNMASKED: u16 = 8443;

#[test]
fn websocket_messages_are_masked_and_the_credential_never_echoed() {
    if !privileged() {
        return;
    }
    let websocat = Path::new(VENV).join("bin/websocat");
    assert!(websocat.is_file(), "{} is missing: run `cargo xtask setup`", websocat.display());
    let mut lab = Lab::new(&["alice"]);
    let dir = lab.dir.path().join("websocket");
    let ip = lab.target.v4;
    let server_ca = airlock_vm_tests::netns::test_certificate(&dir, &format!("IP:{ip},DNS:ws.lab"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/websocket-target/server.py");
    let path = |name: &str| dir.join(name).display().to_string();
    // The same server twice: behind a target that masks, and one that does not.
    let log = |port: u16| dir.join(format!("connections-{port}.jsonl"));
    for port in [MASKED, UNMASKED] {
        lab.target.spawn(
            &format!("{VENV}/bin/python"),
            &[
                &script.display().to_string(),
                "--listen",
                &format!("{ip}:{port}"),
                "--cert",
                &path("server.crt"),
                "--key",
                &path("server.key"),
                "--log",
                &log(port).display().to_string(),
            ],
        );
        lab.target.wait_for_port(ip.into(), port);
    }

    let token = lab.dir.path().join("websocket-token");
    fs::write(&token, format!("{INJECTED}\n")).unwrap();
    set_mode(&token, 0o600);
    let alice = lab.user("alice").name.clone();
    let target = |name: &str, port: u16, masking: &str| {
        format!(
            "[[target]]\nname = \"{name}\"\nprotocol = \"https\"\nport = {port}\naddresses = [\"{ip}\"]\n\n\
             [[target.access]]\naction = \"allow\"\nusers = [\"{alice}\"]\n\n\
             [target.https]\nca_file = \"{ca}\"\nserver_name = \"ws.lab\"\n\n\
             [target.https.credential]\nkind = \"header_file\"\nheader = \"Authorization\"\nfile = \"{token}\"\n\n\
             {masking}\n",
            ca = server_ca.display(),
            token = token.display(),
        )
    };
    let masking = "[target.masking]\ndetectors = [\"email\", \"card\"]\n";
    lab.start_agent(&(target("stream", MASKED, masking) + &target("stream-unmasked", UNMASKED, "")));
    let host_ca = lab.host_ca_file();

    // websocat sends a line of stdin as a text message and prints each
    // message it gets on a line; -n: stdin's end does not close the
    // connection, the server's close does.
    let session = |port: u16| {
        let script = format!(
            "echo ping | SSL_CERT_FILE={ca} timeout 20 {websocat} -n -H='Authorization: {CLIENTS_OWN}' \
             wss://{ip}:{port}/stream",
            ca = host_ca.display(),
            websocat = websocat.display(),
        );
        let out = lab.run_as("alice", "/bin/sh", &["-c", &script]);
        assert!(out.success(), "{out:?}\n{}", lab.agent().log());
        let lines: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
        let [echoed, document, binary, ping] = <[String; 4]>::try_from(lines).unwrap_or_else(|lines| {
            panic!("four messages expected: {lines:?}\n{}", lab.agent().log());
        });
        // The server got Airlock's credential, not the client's, and no
        // compression offer.
        let connections = airlock_vm_tests::json_lines(&log(port));
        assert_eq!(connections.len(), 1, "{connections:?}");
        assert_eq!(connections[0]["authorization"], INJECTED);
        assert_eq!(connections[0]["extensions"], serde_json::Value::Null);
        assert_eq!(ping, "ping", "the client's own message came back");
        (echoed, serde_json::from_str::<serde_json::Value>(&document).expect("still JSON"), binary)
    };
    let secret = &INJECTED["Bearer ".len()..];
    let overwritten = format!("you sent: Bearer {}", "*".repeat(secret.len()));

    // Masked: the JSON text message's e-mail address and card number; the
    // binary message passes, as binary answers do. The echo of the
    // credential, sent in three frames, left as `*`, its length kept.
    let (echoed, document, binary) = session(MASKED);
    assert_eq!(echoed, overwritten);
    let (email, card) = (document["user"]["email"].as_str().unwrap(), document["card"].as_str().unwrap());
    assert!(email != EMAIL && !email.is_empty(), "{document}");
    assert!(!card.contains(CARD), "{document}");
    assert!(binary.contains(EMAIL), "{binary}");

    // Not masked: the messages pass as sent, frame by frame, but for the
    // echo, overwritten across the frames it was cut into.
    let (echoed, document, _) = session(UNMASKED);
    assert_eq!(echoed, overwritten);
    assert_eq!((document["user"]["email"].as_str(), document["card"].as_str()), (Some(EMAIL), Some(CARD)));

    // Each upgrade is recorded; the credential is nowhere in the audit log.
    let records = lab.agent().wait_for_records("http.request", 2);
    assert!(records.iter().all(|r| r["detail"]["status"] == 101), "{records:?}");
    let audit = fs::read_to_string(lab.agent().config.audit_dir.join("audit.jsonl")).unwrap();
    assert!(!audit.contains(secret), "the injected token reached the audit log");
}
