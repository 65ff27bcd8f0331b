//! Identity end to end with a real OIDC provider (node `oidc-provider` on
//! loopback): people log in with the device flow in their own login
//! session, CI jobs hand in job tokens bound to their cgroup, and psql
//! connections through the eBPF path are attributed to the OIDC subject.

use std::{fs, path::Path, time::Duration};

use airlock_vm_tests::{
    CommandOutput, Lab, LoginSession, TargetHost, bao::Bao, oidc::OidcProvider, privileged, run_as, set_mode,
};
use serde_json::{Value, json};

/// Audience CI job tokens must carry.
const CI_AUDIENCE: &str = "airlock-ci";

/// PostgreSQL on the target, open to the `dba` group, to bob by OIDC
/// subject and to the CI job of repository `org/app`; OIDC configured.
fn oidc_lab(provider: &OidcProvider) -> Lab {
    let mut lab = Lab::new(&["alice", "bob", "carol"]);
    lab.target.start_postgres(&lab.dir.path().join("pg"));
    let (v4, issuer) = (lab.target.v4, provider.issuer());
    let policy = format!(
        r#"
[[target]]
name = "pg"
protocol = "postgres"
port = 5432
addresses = ["{v4}"]

[[target.access]]
action = "allow"
groups = ["dba"]

[[target.access]]
action = "allow"
users = ["{issuer}#bob", "org/app"]
"#
    );
    let config = format!(
        r#"
[oidc]
issuer = "{issuer}"
client_id = "airlock"

[[oidc.ci]]
issuer = "{ci}"
audience = "{CI_AUDIENCE}"
user_claim = "repository"
"#,
        ci = provider.ci_issuer()
    );
    lab.start_agent_with(&policy, &config);
    lab
}

fn psql_script(lab: &Lab) -> String {
    format!("psql -h {} -U postgres -d postgres -X -At -c 'select 42'", lab.target.v4)
}

fn airlock_script(lab: &Lab, args: &str) -> String {
    format!("{} {args} --socket {}", lab.cli().display(), lab.agent().config.socket.display())
}

/// Runs `airlock login` in `session`, approves it at the provider as
/// `account`, and returns the CLI's outcome.
fn device_login(lab: &Lab, provider: &OidcProvider, session: &mut LoginSession, account: &str) -> CommandOutput {
    provider.device_login(session, &airlock_script(lab, "login"), account)
}

fn opened_by(lab: &Lab, uid: u32) -> Vec<Value> {
    lab.agent().records_of("connection.open").into_iter().filter(|r| r["process"]["uid"] == uid).collect()
}

#[test]
fn a_device_login_attributes_connections_to_the_person_in_that_session_only() {
    if !privileged() {
        return;
    }
    let provider = OidcProvider::start("RS256", 300);
    let lab = oidc_lab(&provider);
    let alice = lab.user("alice");
    let sessions = lab.dir.path().join("sessions");
    let mut session = LoginSession::open(alice, &lab.cgroups.clients, &sessions.join("alice"));

    let before = session.run(&psql_script(&lab));
    assert!(!before.success(), "no login yet: {before:?}");
    assert!(before.stderr.contains("run: airlock login"), "the client says what to do: {before:?}");

    let login = device_login(&lab, &provider, &mut session, "alice");
    assert!(login.success(), "{login:?}\n{}\n{}", lab.agent().log(), provider.stderr());
    assert!(login.stdout.contains("logged in as alice@example.com"), "{login:?}");
    let whoami = session.run(&airlock_script(&lab, "whoami --json"));
    let whoami: Value = serde_json::from_str(&whoami.stdout).unwrap_or_else(|e| panic!("{e}: {whoami:?}"));
    assert_eq!(whoami["identity"]["subject"], format!("{}#alice", provider.issuer()));
    assert_eq!(whoami["identity"]["groups"], json!(["dba", "eng"]));
    assert_eq!(whoami["refreshes"], true);

    let after = session.run(&psql_script(&lab));
    assert!(after.success() && after.stdout.trim() == "42", "{after:?}\n{}", lab.agent().log());
    let opened = opened_by(&lab, alice.uid);
    let identity = &opened.last().expect("a connection.open record")["identity"];
    assert_eq!(identity["source"], "oidc");
    assert_eq!(identity["user"], "alice@example.com");
    assert_eq!(identity["subject"], format!("{}#alice", provider.issuer()));

    // Alice in another login session (another ssh login, say) has not logged in there.
    let elsewhere =
        lab.run_as("alice", "psql", &["-h", &lab.target.v4.to_string(), "-U", "postgres", "-c", "select 1"]);
    assert!(!elsewhere.success() && elsewhere.stderr.contains("airlock login"), "{elsewhere:?}");
    // Bob, logged in at the same time, is himself: allowed by his OIDC subject.
    let mut bob = LoginSession::open(lab.user("bob"), &lab.cgroups.clients, &sessions.join("bob"));
    assert!(device_login(&lab, &provider, &mut bob, "bob").success());
    assert!(bob.run(&psql_script(&lab)).success());
    assert_eq!(opened_by(&lab, lab.user("bob").uid).last().unwrap()["identity"]["user"], "bob@example.com");
    // Carol logs in fine, but no rule opens the target to her.
    let mut carol = LoginSession::open(lab.user("carol"), &lab.cgroups.clients, &sessions.join("carol"));
    assert!(device_login(&lab, &provider, &mut carol, "carol").success());
    let refused = carol.run(&psql_script(&lab));
    assert!(!refused.success() && refused.stderr.contains("carol@example.com"), "{refused:?}");

    let logout = session.run(&airlock_script(&lab, "logout"));
    assert!(logout.success(), "{logout:?}");
    let gone = session.run(&psql_script(&lab));
    assert!(!gone.success() && gone.stderr.contains("run: airlock login"), "{gone:?}");
    let logins = lab.agent().records_of("identity.login");
    assert_eq!(logins.len(), 3, "{logins:#?}");
    assert_eq!(lab.agent().records_of("identity.logout")[0]["detail"]["reason"], "logout");
    let log = fs::read_to_string(lab.agent().config.audit_dir.join("audit.jsonl")).unwrap();
    assert!(!log.contains("eyJ"), "a token reached the audit log");
}

#[test]
fn a_denied_device_login_and_a_refreshed_one() {
    if !privileged() {
        return;
    }
    // ES256 this time, and ID tokens that live 6 seconds: the agent must refresh.
    let provider = OidcProvider::start("ES256", 6);
    let lab = oidc_lab(&provider);
    let mut session =
        LoginSession::open(lab.user("alice"), &lab.cgroups.clients, &lab.dir.path().join("sessions/alice"));

    let job = session.start(&airlock_script(&lab, "login"));
    let (uri, code) = airlock_vm_tests::oidc::device_prompt(&job);
    provider.deny_device(&uri, &code, "alice");
    let denied = job.wait(Duration::from_secs(40));
    assert!(!denied.success() && denied.stderr.contains("access_denied"), "{denied:?}");

    assert!(device_login(&lab, &provider, &mut session, "alice").success());
    lab.agent().wait_for_records("identity.refreshed", 2);
    let still = session.run(&psql_script(&lab));
    assert!(still.success(), "the login outlives its first ID token: {still:?}\n{}", lab.agent().log());
}

/// A job cgroup under the lab's clients cgroup; removed by the test.
fn job_cgroup(lab: &Lab, name: &str) -> std::path::PathBuf {
    let dir = lab.cgroups.clients.join(name);
    fs::create_dir_all(&dir).expect("mkdir job cgroup");
    dir
}

fn token_file(lab: &Lab, name: &str, token: &str) -> String {
    let path = lab.dir.path().join(name);
    fs::write(&path, token).unwrap();
    set_mode(&path, 0o644);
    path.display().to_string()
}

fn job_login(lab: &Lab, job: &Path, token: &str) -> CommandOutput {
    let file = token_file(lab, "job-token", token);
    let socket = lab.agent().config.socket.display().to_string();
    let cli = lab.cli();
    let args = ["login", "--token-file", &file, "--socket", &socket];
    run_as(lab.user("alice"), job, cli.to_str().unwrap(), &args)
}

#[test]
fn a_ci_job_token_is_bound_to_the_job_cgroup_and_bad_tokens_are_refused() {
    if !privileged() {
        return;
    }
    let provider = OidcProvider::start("RS256", 300);
    let lab = oidc_lab(&provider);
    let job = job_cgroup(&lab, "job-1");
    let claims = json!({"aud": CI_AUDIENCE, "sub": "repo:org/app:ref:refs/heads/main", "repository": "org/app"});
    let mint = |extra: Value| {
        let mut request = json!({"claims": claims});
        if let (Some(request), Some(extra)) = (request.as_object_mut(), extra.as_object()) {
            request.extend(extra.clone());
        }
        provider.mint_ci_token(request)
    };

    let refusals = [
        (json!({"ttl": -120}), "expired"),
        (json!({"nbf_offset": 600}), "not valid before"),
        (json!({"claims": {"aud": "someone-else", "repository": "org/app", "sub": "x"}}), "audience"),
        (json!({"claims": {"iss": "https://token.example", "aud": CI_AUDIENCE, "sub": "x"}}), "not accepted"),
        (json!({"alg": "none"}), "algorithm"),
        (json!({"unknown_key": true}), "does not publish"),
    ];
    for (request, why) in refusals {
        let out = job_login(&lab, &job, &mint(request.clone()));
        assert!(!out.success() && out.stderr.contains(why), "{request}: expected {why:?}: {out:?}");
    }
    let valid = mint(json!({}));
    let mut tampered: Vec<String> = valid.split('.').map(str::to_owned).collect();
    let claims_json = json!({"aud": CI_AUDIENCE, "iss": provider.ci_issuer(), "sub": "x", "repository": "org/admin"});
    tampered[1] = base64url(&claims_json.to_string());
    let out = job_login(&lab, &job, &tampered.join("."));
    assert!(!out.success() && out.stderr.contains("signature"), "tampered: {out:?}");
    let out = job_login(&lab, &job, "garbage");
    assert!(!out.success() && out.stderr.contains("malformed"), "{out:?}");

    let login = job_login(&lab, &job, &valid);
    assert!(login.success(), "{login:?}\n{}", lab.agent().log());
    assert!(login.stdout.contains("org/app"), "{login:?}");
    let psql = |cgroup: &Path| {
        let host = lab.target.v4.to_string();
        run_as(lab.user("bob"), cgroup, "psql", &["-h", &host, "-U", "postgres", "-X", "-At", "-c", "select 7"])
    };
    // Any process of the job, whatever its uid, is the job.
    let in_job = psql(&job);
    assert!(in_job.success(), "{in_job:?}\n{}", lab.agent().log());
    let record = opened_by(&lab, lab.user("bob").uid).pop().expect("connection.open");
    assert_eq!(record["identity"]["source"], "ci_job");
    assert_eq!(record["identity"]["user"], "org/app");
    // Outside the job's cgroup, nobody is the job.
    let outside = psql(&lab.cgroups.clients);
    assert!(!outside.success() && outside.stderr.contains("airlock login"), "{outside:?}");

    // The job ends: its cgroup goes away, and so does the login.
    fs::remove_dir(&job).expect("rmdir the job cgroup");
    let ended = lab.agent().wait_for_records("identity.logout", 1);
    assert_eq!(ended[0]["detail"]["reason"], "cgroup_removed");

    // The hierarchy root cannot be bound.
    let root = airlock_vm_tests::cgroup2_root();
    let out = job_login(&lab, &root, &mint(json!({})));
    assert!(!out.success() && out.stderr.contains("root of the hierarchy"), "{out:?}");
}

fn base64url(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn the_shipped_job_wrapper_gives_a_job_its_own_cgroup_whose_login_ends_with_the_job() {
    if !privileged() {
        return;
    }
    let provider = OidcProvider::start("RS256", 300);
    let lab = oidc_lab(&provider);
    // What `Delegate=yes` gives a runner service: its cgroup is the runner user's to divide.
    let runner = lab.user("alice");
    let runner_cgroup = job_cgroup(&lab, "runner");
    for entry in ["", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"] {
        std::os::unix::fs::chown(runner_cgroup.join(entry), Some(runner.uid), Some(runner.gid)).unwrap();
    }
    let wrapper = lab.dir.path().join("airlock-job");
    fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/airlock-job"), &wrapper).unwrap();
    set_mode(&wrapper, 0o755);
    let claims = json!({"aud": CI_AUDIENCE, "sub": "repo:org/app:job:7", "repository": "org/app"});
    let token = token_file(&lab, "job-7-token", &provider.mint_ci_token(json!({"claims": claims})));
    let script = format!(
        "{} login --token-file {token} --socket {} && {} && cat /proc/self/cgroup",
        lab.cli().display(),
        lab.agent().config.socket.display(),
        psql_script(&lab)
    );
    let out = run_as(runner, &runner_cgroup, wrapper.to_str().unwrap(), &["7", "sh", "-c", &script]);
    assert!(out.success(), "{out:?}\n{}", lab.agent().log());
    assert!(out.stdout.contains("/runner/airlock-job-7"), "the job ran in its own cgroup: {out:?}");
    assert!(!runner_cgroup.join("airlock-job-7").exists(), "the wrapper removes the job's cgroup");
    let record = opened_by(&lab, runner.uid).pop().expect("connection.open");
    assert_eq!(record["identity"]["source"], "ci_job");
    let ended = lab.agent().wait_for_records("identity.logout", 1);
    assert_eq!(ended[0]["detail"]["reason"], "cgroup_removed");
}

#[test]
fn openbao_gives_the_login_to_the_person_through_jwt_auth() {
    if !privileged() {
        return;
    }
    let provider = OidcProvider::start("RS256", 300);
    let mut lab = Lab::new(&["alice"]);
    let data = lab.target.start_postgres_auth(&lab.dir.path().join("pg"), &[], "scram-sha-256");
    TargetHost::superuser_sql(&data, "CREATE ROLE bao_admin LOGIN CREATEROLE PASSWORD 'bao-admin-secret'");
    TargetHost::superuser_sql(&data, "CREATE TABLE orders (id int); INSERT INTO orders VALUES (1), (2)");
    let v4 = lab.target.v4;
    let bao_dir = lab.dir.path().join("bao-tls");
    fs::create_dir_all(&bao_dir).unwrap();
    let bao = Bao::start(&bao_dir);
    bao.enable_database(v4.into(), "bao_admin", "bao-admin-secret");
    let issuer = provider.issuer();
    let rules = "path \"database/creds/readonly\" { capabilities = [\"read\"] }\n";
    bao.enable_jwt_auth(issuer, "airlock", ("airlock-readonly", rules), lab.dir.path());
    let policy = format!(
        r#"
[[target]]
name = "pg"
protocol = "postgres"
port = 5432
addresses = ["{v4}"]

[[target.access]]
action = "allow"
users = ["alice@example.com"]

[target.credentials]
tls = "disable"

[target.credentials.openbao]
addr = "https://{addr}"
ca_file = "{ca}"
jwt_auth = {{ role = "airlock" }}

[[target.credentials.role]]
name = "analyst"
openbao_role = "readonly"
users = ["alice@example.com"]
"#,
        addr = bao.addr,
        ca = bao.ca_file.display()
    );
    lab.start_agent_with(&policy, &format!("[oidc]\nissuer = \"{issuer}\"\nclient_id = \"airlock\"\n"));
    let mut session =
        LoginSession::open(lab.user("alice"), &lab.cgroups.clients, &lab.dir.path().join("sessions/alice"));
    assert!(device_login(&lab, &provider, &mut session, "alice").success());
    let sql = "select current_user, (select count(*) from orders)";
    let out = session.run(&format!("psql -h {v4} -U analyst -d postgres -X -At -w -c '{sql}'"));
    assert!(out.success(), "{out:?}\n{}", lab.agent().log());
    let (role, count) = out.stdout.trim().split_once('|').expect("two columns");
    // OpenBao names logins after the token's display name: the person's JWT login, not Airlock's token.
    assert!(role.starts_with("v-jwt-"), "a login made with the person's OpenBao token: {role}");
    assert_eq!(count, "2");
    let created = lab.agent().wait_for_records("credential.created", 1);
    assert_eq!(created[0]["detail"]["openbao_auth"], "person_jwt");
    assert_eq!(created[0]["identity"]["user"], "alice@example.com");
    // OpenBao knows the person: an entity alias named by their email.
    let aliases: Value = serde_json::from_str(&bao.cli(&["list", "-format=json", "identity/entity-alias/id"]).unwrap())
        .expect("alias list");
    let names: Vec<String> = aliases
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|id| {
            let alias: Value = serde_json::from_str(
                &bao.cli(&["read", "-format=json", &format!("identity/entity-alias/id/{id}")]).unwrap(),
            )
            .unwrap();
            alias["data"]["name"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert!(names.iter().any(|n| n == "alice@example.com"), "{names:?}");
    let dropped = lab.agent().wait_for_records("credential.dropped", 1);
    assert_eq!(dropped[0]["detail"]["outcome"], "revoked", "{:#}", dropped[0]);
    let left = || TargetHost::superuser_sql(&data, &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{role}'"));
    for _ in 0..100 {
        if left().trim() == "0" {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("OpenBao did not drop {role} once the person's token was revoked");
}

#[test]
fn su_and_runuser_do_not_carry_a_login_to_another_account() {
    if !privileged() {
        return;
    }
    let provider = OidcProvider::start("RS256", 300);
    let lab = oidc_lab(&provider);
    // An administrator logs in as themself (alice's OIDC account) at a root shell…
    let mut root = LoginSession::open_root(&lab.cgroups.clients, &lab.dir.path().join("sessions/root"));
    let login = device_login(&lab, &provider, &mut root, "alice");
    assert!(login.success(), "{login:?}\n{}", lab.agent().log());
    let own = root.run(&psql_script(&lab));
    assert!(own.success(), "{own:?}\n{}", lab.agent().log());
    assert_eq!(opened_by(&lab, 0).last().expect("connection.open")["identity"]["user"], "alice@example.com");
    // …then becomes bob: same login session, another account, no login there.
    let (bob, psql) = (&lab.user("bob").name, psql_script(&lab));
    for script in [format!("/usr/sbin/runuser -u {bob} -- {psql}"), format!("/bin/su -s /bin/sh {bob} -c \"{psql}\"")] {
        let out = root.run(&script);
        assert!(!out.success() && out.stderr.contains("run: airlock login"), "{script}: {out:?}");
    }
    assert!(opened_by(&lab, lab.user("bob").uid).is_empty(), "bob's connections never opened");
}

#[test]
fn the_bao_cli_reaches_openbao_with_the_persons_own_token_and_none_on_the_host() {
    if !privileged() {
        return;
    }
    let provider = OidcProvider::start("RS256", 300);
    let mut lab = Lab::new(&["alice", "bob"]);
    let bao_dir = lab.dir.path().join("bao-tls");
    fs::create_dir_all(&bao_dir).unwrap();
    let bao = Bao::start(&bao_dir);
    bao.cli(&["kv", "put", "secret/app", "password=kv-secret-31337"]).unwrap();
    let issuer = provider.issuer();
    let rules = "path \"secret/data/app\" { capabilities = [\"read\"] }\n";
    bao.enable_jwt_auth(issuer, "people", ("app-reader", rules), lab.dir.path());
    let port = bao.addr.rsplit(':').next().unwrap();
    let policy = format!(
        r#"
[[target]]
name = "openbao"
protocol = "https"
port = {port}
addresses = ["127.0.0.1"]

[[target.access]]
action = "allow"
users = ["alice@example.com", "{bob}"]

[target.https]
ca_file = "{ca}"
server_name = "127.0.0.1"

[target.https.credential]
kind = "openbao_token"
openbao = {{ addr = "https://{addr}", ca_file = "{ca}", jwt_auth = {{ role = "people" }} }}
"#,
        addr = bao.addr,
        ca = bao.ca_file.display(),
        bob = lab.user("bob").name,
    );
    lab.start_agent_with(&policy, &format!("[oidc]\nissuer = \"{issuer}\"\nclient_id = \"airlock\"\n"));
    let host_ca = lab.host_ca_file();
    let cli = Bao::cli_for_test_users(lab.dir.path());
    let get = format!(
        "BAO_ADDR=https://{addr} BAO_CACERT={ca} HOME=$PWD {cli} kv get -field=password secret/app",
        addr = bao.addr,
        ca = host_ca.display(),
        cli = cli.display()
    );

    // Logged in: the CLI holds no token, Airlock sends the person's own.
    let mut session =
        LoginSession::open(lab.user("alice"), &lab.cgroups.clients, &lab.dir.path().join("sessions/alice"));
    assert!(device_login(&lab, &provider, &mut session, "alice").success());
    let out = session.run(&get);
    assert!(out.success(), "{out:?}\n{}", lab.agent().log());
    assert_eq!(out.stdout.trim(), "kv-secret-31337");
    let record = lab.agent().wait_for_records("http.request", 1).pop().unwrap();
    assert_eq!(record["identity"]["user"], "alice@example.com");
    assert_eq!(record["detail"]["status"], 200);
    assert!(record["detail"]["credential"].as_str().unwrap().starts_with("openbao_token from "), "{record}");
    // OpenBao saw the person: an entity alias named by their e-mail.
    let aliases = bao.cli(&["list", "-format=json", "identity/entity-alias/id"]).unwrap();
    assert!(!aliases.trim().is_empty() && aliases != "[]", "{aliases}");

    // Not logged in: told to log in (OIDC is configured, so the gate says it).
    let mut bobs = LoginSession::open(lab.user("bob"), &lab.cgroups.clients, &lab.dir.path().join("sessions/bob"));
    let refused = bobs.run(&get);
    assert!(!refused.success(), "{refused:?}");
    assert!(refused.stderr.contains("Code: 403") && refused.stderr.contains("airlock login"), "{refused:?}");
    let log = fs::read_to_string(lab.agent().config.audit_dir.join("audit.jsonl")).unwrap();
    assert!(!log.contains("kv-secret-31337") && !log.contains("hvs."), "a secret reached the audit log");
}
