//! A real OpenID provider for the tests: `vm-tests/fixtures/oidc-provider`,
//! the certified `oidc-provider` library run by a small node script on
//! loopback, plus a GitHub-Actions-like CI token issuer beside it.
//!
//! The provider serves discovery, a JWKS, the device authorization grant
//! (RFC 8628) and refresh tokens for the public client `airlock`; its ID
//! tokens carry `email` and `groups`. Test accounts: `alice` (groups `dba`,
//! `eng`), `bob` (`eng`) and `carol` (none), with emails
//! `<name>@example.com`. [`OidcProvider::approve_device`] completes a device
//! authorization through the provider's real pages, as a person in a browser
//! would. See the fixture's README.md for the endpoints.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Output, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

/// How long the provider may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one approval (or denial) through the provider's pages may take.
const APPROVE_TIMEOUT: Duration = Duration::from_secs(20);
/// curl's limit for one request to the provider.
const CURL_MAX_TIME: &str = "10";

/// The client id of Airlock at the provider (a public client).
pub const CLIENT_ID: &str = "airlock";

/// The fixture's directory: the node scripts and their `node_modules`.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/oidc-provider")
}

/// A running provider; killed and reaped on drop. Its stdin stays piped,
/// so the node process also exits if the test process dies.
pub struct OidcProvider {
    child: Child,
    _stdin: ChildStdin,
    stderr: Arc<Mutex<String>>,
    issuer: String,
    ci_issuer: String,
}

impl OidcProvider {
    /// Starts the provider on an ephemeral loopback port. `alg` (`RS256` or
    /// `ES256`) is the ID token signing algorithm; `id_token_ttl` the ID
    /// tokens' lifetime in seconds. Panics, with the provider's stderr, if it
    /// is not ready within 20 s; and with a pointer to `cargo xtask setup`
    /// if its node modules are not installed.
    pub fn start(alg: &str, id_token_ttl: u64) -> OidcProvider {
        let dir = check_installed();
        let mut child = Command::new("node")
            .arg("issuer.mjs")
            .args(["--alg", alg, "--id-token-ttl", &id_token_ttl.to_string()])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting node {}: {e} (`cargo xtask setup` installs Node.js)", dir.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let (stderr, _) = collect(child.stderr.take().expect("piped stderr"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (ready_tx, ready_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = ready_tx.send(lines.next());
            // Keep draining: the script prints nothing more, but never block it.
            for _ in lines {}
        });
        let mut provider =
            OidcProvider { child, _stdin: stdin, stderr, issuer: String::new(), ci_issuer: String::new() };
        let line = match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(Some(Ok(line))) => line,
            Ok(_) => panic!("the OIDC provider exited before it was ready: {}", provider.stderr()),
            Err(_) => panic!("the OIDC provider was not ready within {START_TIMEOUT:?}: {}", provider.stderr()),
        };
        let ready: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the OIDC provider's ready line {line:?}: {e}; stderr: {}", provider.stderr()));
        let field = |name: &str| {
            ready[name].as_str().unwrap_or_else(|| panic!("no {name} in the ready line {line:?}")).to_owned()
        };
        provider.issuer = field("issuer");
        provider.ci_issuer = field("ci_issuer");
        assert!(provider.issuer.starts_with("http://127.0.0.1:"), "{}", provider.issuer);
        provider
    }

    /// The issuer URL, `http://127.0.0.1:PORT`; its discovery document is at
    /// `<issuer>/.well-known/openid-configuration`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The CI token issuer, `<issuer>/ci`, with its own discovery document
    /// and JWKS (`<ci_issuer>/.well-known/jwks`), like GitHub Actions'.
    pub fn ci_issuer(&self) -> &str {
        &self.ci_issuer
    }

    /// What the provider wrote to stderr so far (warnings, request errors).
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Completes the device authorization shown as `user_code` as `account`
    /// (`alice`, `bob` or `carol`): the verification page, the user code,
    /// its confirmation, login and consent, all through the provider's own
    /// endpoints. Afterwards the device code grant returns tokens. Panics
    /// with the reason if the provider does not authorize the device.
    pub fn approve_device(&self, verification_uri: &str, user_code: &str, account: &str) {
        self.drive_device(verification_uri, user_code, account, false);
    }

    /// Like [`approve_device`](Self::approve_device), but `account` denies
    /// consent: the device code grant then answers `access_denied`.
    pub fn deny_device(&self, verification_uri: &str, user_code: &str, account: &str) {
        self.drive_device(verification_uri, user_code, account, true);
    }

    fn drive_device(&self, verification_uri: &str, user_code: &str, account: &str, deny: bool) {
        let mut command = Command::new("node");
        command
            .arg("approve-device.mjs")
            .args(["--verification-uri", verification_uri, "--user-code", user_code, "--account", account])
            .current_dir(fixture_dir());
        if deny {
            command.arg("--deny");
        }
        let out = run_bounded(&mut command, APPROVE_TIMEOUT);
        assert!(
            out.status.success(),
            "{} device code {user_code} as {account} failed ({}): {}{}\nprovider stderr: {}",
            if deny { "denying" } else { "approving" },
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
            self.stderr(),
        );
    }

    /// Mints a CI job token at `POST <ci_issuer>/mint` and returns the
    /// compact JWT. `request` is a JSON object, every field optional:
    /// `claims` (merged over the defaults: `iss` = the CI issuer, `sub`,
    /// `repository`, `ref`, `jti`; there is no default `aud`), `ttl` (seconds,
    /// default 300; negative gives an expired token), `nbf_offset` (seconds
    /// added to `nbf`; positive gives a not-yet-valid token), `alg` (`RS256`
    /// default, `ES256`, or `none` for an unsigned token), `kid` (header
    /// override, still signed with the published key) and `unknown_key`
    /// (`true`: signed with a key the JWKS does not hold, under its own kid).
    pub fn mint_ci_token(&self, request: serde_json::Value) -> String {
        let url = format!("{}/mint", self.ci_issuer);
        let out =
            curl(&["-X", "POST", "-H", "content-type: application/json", "--data-binary", &request.to_string(), &url]);
        assert!(
            out.status.success(),
            "minting a CI token with {request} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        String::from_utf8(out.stdout).expect("a JWT is ASCII").trim().to_owned()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The claims of a compact JWT, decoded without any verification (for
/// asserting on what the provider issued).
pub fn jwt_claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap_or_else(|| panic!("not a compact JWT: {token:?}"));
    let bytes = base64url_decode(payload).unwrap_or_else(|| panic!("JWT payload is not base64url: {payload:?}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("JWT payload is not JSON: {e}"))
}

/// The protected header of a compact JWT, decoded without verification.
pub fn jwt_header(token: &str) -> serde_json::Value {
    let header = token.split('.').next().unwrap_or_default();
    let bytes = base64url_decode(header).unwrap_or_else(|| panic!("JWT header is not base64url: {header:?}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("JWT header is not JSON: {e}"))
}

fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for byte in text.trim_end_matches('=').bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The fixture directory, once its node modules are known to be installed
/// from the current lock.
fn check_installed() -> PathBuf {
    let dir = fixture_dir();
    let setup = "`cargo xtask setup` installs them (npm ci)";
    assert!(
        dir.join("node_modules/oidc-provider/package.json").is_file(),
        "the OIDC provider fixture's node modules are missing in {}: {setup}",
        dir.display()
    );
    // Written by `cargo xtask setup`; a hand-run `npm ci` has none.
    if let Ok(marker) = std::fs::read(dir.join("node_modules/.airlock-installed-package-lock.json")) {
        let lock = std::fs::read(dir.join("package-lock.json")).expect("read package-lock.json");
        assert!(
            marker == lock,
            "the OIDC provider fixture's node modules in {} are older than its package-lock.json: {setup}",
            dir.display()
        );
    }
    dir
}

/// Reads a pipe to its end in the background.
fn collect(mut pipe: impl std::io::Read + Send + 'static) -> (Arc<Mutex<String>>, thread::JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    let reader = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut text) = sink.lock() {
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });
    (text, reader)
}

/// Runs `command` to completion, killing it after `timeout`.
fn run_bounded(command: &mut Command, timeout: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    let (stdout, stdout_reader) = collect(child.stdout.take().expect("piped stdout"));
    let (stderr, stderr_reader) = collect(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} did not finish within {timeout:?}: {}",
                stderr.lock().map(|s| s.clone()).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    // The pipes close with the process (the scripts start no children).
    let _ = stdout_reader.join();
    let _ = stderr_reader.join();
    let take = |text: &Arc<Mutex<String>>| text.lock().map(|s| s.clone().into_bytes()).unwrap_or_default();
    Output { status, stdout: take(&stdout), stderr: take(&stderr) }
}

/// curl, bounded, never through a proxy, failing on HTTP errors (the body
/// still on stdout).
fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--noproxy", "*", "--max-time", CURL_MAX_TIME, "--fail-with-body"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running curl: {e}"))
}

/// The verification URI (without its query) and user code `airlock login`
/// printed on `job`'s stderr, waiting (bounded) for them.
pub fn device_prompt(job: &crate::SessionJob) -> (String, String) {
    let stderr = job.wait_for_stderr("Waiting for you", std::time::Duration::from_secs(20));
    let uri = stderr.split("open ").nth(1).and_then(|rest| rest.split_whitespace().next()).expect("a URL");
    let code = stderr.split("shows the code ").nth(1).and_then(|rest| rest.split_whitespace().next()).expect("a code");
    (uri.split('?').next().unwrap_or(uri).to_owned(), code.to_owned())
}

impl OidcProvider {
    /// Runs `login` (an `airlock login` command line) in `session`,
    /// approves the device authorization it prints as `account`, and
    /// returns the CLI's outcome.
    pub fn device_login(&self, session: &mut crate::LoginSession, login: &str, account: &str) -> crate::CommandOutput {
        let job = session.start(login);
        let (uri, code) = device_prompt(&job);
        self.approve_device(&uri, &code, account);
        job.wait(std::time::Duration::from_secs(40))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get_json(url: &str) -> serde_json::Value {
        let out = curl(&[url]);
        assert!(
            out.status.success(),
            "GET {url}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
    }

    /// POSTs a form; returns the JSON answer whatever the status (OAuth
    /// errors come as 400 with a JSON body).
    fn post_form(url: &str, fields: &[(&str, &str)]) -> serde_json::Value {
        let mut args = vec!["-X".to_owned(), "POST".to_owned()];
        for (key, value) in fields {
            args.push("--data-urlencode".to_owned());
            args.push(format!("{key}={value}"));
        }
        args.push(url.to_owned());
        let out = Command::new("curl")
            .args(["-sS", "--noproxy", "*", "--max-time", CURL_MAX_TIME])
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("curl");
        assert!(out.status.success(), "POST {url}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("POST {url}: not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }

    fn str_of<'a>(value: &'a serde_json::Value, key: &str) -> &'a str {
        value[key].as_str().unwrap_or_else(|| panic!("no {key} in {value}"))
    }

    #[test]
    fn base64url_decodes_unpadded_input() {
        assert_eq!(base64url_decode("eyJhIjoxfQ").unwrap(), br#"{"a":1}"#);
        assert_eq!(base64url_decode("_-8").unwrap(), [0xff, 0xef]);
        assert_eq!(base64url_decode("a+b"), None);
    }

    #[test]
    fn oidc_provider_runs_a_device_flow_and_mints_ci_tokens() {
        let provider = OidcProvider::start("ES256", 60);
        let issuer = provider.issuer();

        let discovery = get_json(&format!("{issuer}/.well-known/openid-configuration"));
        assert_eq!(str_of(&discovery, "issuer"), issuer);
        let jwks = get_json(str_of(&discovery, "jwks_uri"));
        let key = &jwks["keys"][0];
        assert_eq!((str_of(key, "kty"), str_of(key, "alg")), ("EC", "ES256"));
        assert!(key.get("d").is_none(), "the JWKS leaks a private key");

        // RFC 8628: device authorization, approval in the "browser", polling.
        let device = post_form(
            str_of(&discovery, "device_authorization_endpoint"),
            &[("client_id", CLIENT_ID), ("scope", "openid email profile groups offline_access")],
        );
        let token_endpoint = str_of(&discovery, "token_endpoint");
        let grant = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", str_of(&device, "device_code")),
            ("client_id", CLIENT_ID),
        ];
        assert_eq!(str_of(&post_form(token_endpoint, &grant), "error"), "authorization_pending");
        provider.approve_device(str_of(&device, "verification_uri"), str_of(&device, "user_code"), "alice");
        let deadline = Instant::now() + Duration::from_secs(5);
        let tokens = loop {
            let answer = post_form(token_endpoint, &grant);
            if answer.get("id_token").is_some() {
                break answer;
            }
            assert_eq!(str_of(&answer, "error"), "authorization_pending", "{answer}");
            assert!(Instant::now() < deadline, "no tokens after approval: {answer}");
            thread::sleep(Duration::from_millis(100));
        };
        let id_token = str_of(&tokens, "id_token");
        assert_eq!(str_of(&jwt_header(id_token), "alg"), "ES256");
        let claims = jwt_claims(id_token);
        assert_eq!(claims["iss"], issuer);
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["aud"], CLIENT_ID);
        assert_eq!(claims["email"], "alice@example.com");
        assert_eq!(claims["groups"], serde_json::json!(["dba", "eng"]));
        assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 60);

        // A refresh gives a fresh ID token, and a rotated refresh token.
        let refresh_token = str_of(&tokens, "refresh_token");
        let refreshed = post_form(
            token_endpoint,
            &[("grant_type", "refresh_token"), ("refresh_token", refresh_token), ("client_id", CLIENT_ID)],
        );
        assert_eq!(jwt_claims(str_of(&refreshed, "id_token"))["groups"], serde_json::json!(["dba", "eng"]));
        assert_ne!(str_of(&refreshed, "refresh_token"), refresh_token);

        // Denied consent reaches the polling device as access_denied.
        let device = post_form(
            str_of(&discovery, "device_authorization_endpoint"),
            &[("client_id", CLIENT_ID), ("scope", "openid email groups")],
        );
        provider.deny_device(str_of(&device, "verification_uri"), str_of(&device, "user_code"), "bob");
        let denied = post_form(
            token_endpoint,
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", str_of(&device, "device_code")),
                ("client_id", CLIENT_ID),
            ],
        );
        assert_eq!(str_of(&denied, "error"), "access_denied", "{denied}");

        // CI job tokens: their own issuer, keys and overrides.
        let ci = get_json(&format!("{}/.well-known/openid-configuration", provider.ci_issuer()));
        assert_eq!(str_of(&ci, "issuer"), provider.ci_issuer());
        let ci_kids: Vec<String> = get_json(str_of(&ci, "jwks_uri"))["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|key| str_of(key, "kid").to_owned())
            .collect();
        let token = provider.mint_ci_token(serde_json::json!({ "claims": { "aud": "airlock-ci" }, "ttl": -30 }));
        let (header, claims) = (jwt_header(&token), jwt_claims(&token));
        assert_eq!(header["alg"], "RS256");
        assert!(ci_kids.contains(&str_of(&header, "kid").to_owned()), "{header} vs {ci_kids:?}");
        assert_eq!(claims["iss"], provider.ci_issuer());
        assert_eq!(claims["aud"], "airlock-ci");
        assert!(claims["exp"].as_i64().unwrap() < claims["iat"].as_i64().unwrap(), "{claims}");
        let unknown = provider.mint_ci_token(serde_json::json!({ "claims": { "aud": "x" }, "unknown_key": true }));
        assert!(!ci_kids.contains(&str_of(&jwt_header(&unknown), "kid").to_owned()));
        let unsigned = provider.mint_ci_token(serde_json::json!({ "claims": { "aud": "x" }, "alg": "none" }));
        assert_eq!(jwt_header(&unsigned)["alg"], "none");
        assert!(unsigned.ends_with('.'), "{unsigned}");
    }
}
