//! Approvals across hosts, end to end: two "hosts" (two agents with their
//! own config, state, audit log, cgroups and users), a real OpenBao (KV v2,
//! transit, JWT auth) and the real OIDC provider. A statement held on host
//! A is decided by a person logged in on host B; decisions B did not sign
//! as that person, or by someone policy does not let decide, are refused.

use std::{fs, time::Duration};

use airlock_vm_tests::{
    CommandOutput, Lab, LoginSession, SessionJob,
    agent::{Agent, AgentConfig},
    bao::Bao,
    oidc::OidcProvider,
    privileged, set_mode,
};
use serde_json::Value;

/// What a host's agent may do in OpenBao: publish its requests, read
/// decisions, approvers' public keys and entities.
const HOST_POLICY: &str = r#"
path "airlock/data/requests/*" { capabilities = ["create", "update", "read"] }
path "airlock/metadata/requests/*" { capabilities = ["list", "read", "delete"] }
path "airlock/data/decisions/*" { capabilities = ["read"] }
path "airlock/metadata/decisions/*" { capabilities = ["list", "read", "delete"] }
path "transit/keys/airlock-approver-*" { capabilities = ["read"] }
path "identity/entity/id/*" { capabilities = ["read"] }
path "identity/group/id/*" { capabilities = ["read"] }
"#;

/// What an approver may do, with the token their ID token gets them:
/// write decisions, and make and use their own signing key only.
const APPROVER_POLICY: &str = r#"
path "airlock/data/decisions/*" { capabilities = ["create", "update"] }
path "transit/keys/airlock-approver-{{identity.entity.id}}" { capabilities = ["create", "update", "read"] }
path "transit/sign/airlock-approver-{{identity.entity.id}}" { capabilities = ["update"] }
"#;

struct Hosts {
    provider: OidcProvider,
    bao: Bao,
    a: Lab,
    b: Lab,
}

fn approvals_config(bao: &Bao, lab: &Lab, host: &str) -> String {
    let token = bao.cli(&["token", "create", "-policy=airlock-host", "-field=token"]).expect("host token");
    let token_file = lab.dir.path().join("approvals-token");
    fs::write(&token_file, token.trim()).unwrap();
    set_mode(&token_file, 0o600);
    format!(
        "[approvals]\nbackend = \"openbao\"\naddress = \"{url}\"\ntoken_file = \"{token}\"\nhost = \"{host}\"\npoll_ms = 100\n",
        url = bao.url(),
        token = token_file.display(),
    )
}

fn oidc_config(provider: &OidcProvider) -> String {
    format!("[oidc]\nissuer = \"{}\"\nclient_id = \"airlock\"\n", provider.issuer())
}

/// Host A protects PostgreSQL: drops wait for someone in group `eng`.
/// Host B protects nothing its people use here; they decide from there.
fn hosts() -> Hosts {
    let provider = OidcProvider::start("RS256", 300);
    let mut a = Lab::new(&["alice"]);
    let b = Lab::new(&["bob", "carol", "alice"]);
    // One that keeps its data: the test stops and restarts it mid-request.
    let bao_dir = a.dir.path().join("bao");
    fs::create_dir_all(&bao_dir).unwrap();
    let bao = Bao::start_persistent(&bao_dir);
    for command in [&["secrets", "enable", "-path=airlock", "kv-v2"][..], &["secrets", "enable", "transit"]] {
        bao.cli(command).unwrap_or_else(|e| panic!("{command:?}: {e}"));
    }
    let host_policy = a.dir.path().join("airlock-host.hcl");
    fs::write(&host_policy, HOST_POLICY).unwrap();
    bao.cli(&["policy", "write", "airlock-host", host_policy.to_str().unwrap()]).unwrap();
    bao.enable_jwt_auth(provider.issuer(), "airlock-approver", ("airlock-approver", APPROVER_POLICY), a.dir.path());
    // The IdP's group `eng` as an OpenBao external group: OpenBao says who is in it.
    let mounts: Value = serde_json::from_str(&bao.cli(&["auth", "list", "-format=json"]).unwrap()).unwrap();
    let accessor = mounts["jwt/"]["accessor"].as_str().unwrap().to_owned();
    let group = bao.cli(&["write", "-field=id", "identity/group", "name=eng", "type=external"]).unwrap();
    bao.cli(&[
        "write",
        "identity/group-alias",
        "name=eng",
        &format!("mount_accessor={accessor}"),
        &format!("canonical_id={}", group.trim()),
    ])
    .unwrap();

    a.target.start_postgres(&a.dir.path().join("pg"));
    let v4 = a.target.v4;
    let policy_a = format!(
        r#"
[[target]]
name = "pg"
protocol = "postgres"
port = 5432
addresses = ["{v4}"]

[[target.access]]
action = "allow"
groups = ["dba", "eng"]

[[target.guardrail]]
classes = ["drop"]
action = "approve"
reason = "dropping tables waits for an engineer"

[target.approvals]
groups = ["eng"]
timeout_seconds = 20
"#
    );
    let config_a = oidc_config(&provider) + &approvals_config(&bao, &a, "host-a");
    a.start_agent_with(&policy_a, &config_a);

    let policy_b = format!(
        "[[target]]\nname = \"elsewhere\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"{}\"]\n\n\
         [[target.access]]\naction = \"allow\"\ngroups = [\"eng\"]\n",
        b.target.v4
    );
    let mut b = b;
    let config_b = AgentConfig::new(&b, &policy_b);
    // One test process, two agents: B listens on a port of its own.
    let text = fs::read_to_string(&config_b.path).unwrap();
    let moved = config_b.listener_port + 1;
    fs::write(&config_b.path, text.replace(&format!("port = {}", config_b.listener_port), &format!("port = {moved}")))
        .unwrap();
    config_b.append(&(oidc_config(&provider) + &approvals_config(&bao, &b, "host-b")));
    b.agent = Some(Agent::start(config_b));
    Hosts { provider, bao, a, b }
}

fn airlock_script(lab: &Lab, args: &str) -> String {
    format!("{} {args} --socket {}", lab.cli().display(), lab.agent().config.socket.display())
}

/// `airlock login` in `session` on `lab`, approved at the provider as `account`.
fn login(hosts: &Hosts, lab: &Lab, session: &mut LoginSession, account: &str) {
    let job = session.start(&airlock_script(lab, "login"));
    let stderr = job.wait_for_stderr("Waiting for you", Duration::from_secs(20));
    let uri = stderr.split("open ").nth(1).and_then(|rest| rest.split_whitespace().next()).expect("a URL");
    let code = stderr.split("shows the code ").nth(1).and_then(|rest| rest.split_whitespace().next()).expect("a code");
    hosts.provider.approve_device(uri.split('?').next().unwrap_or(uri), code, account);
    let out = job.wait(Duration::from_secs(40));
    assert!(out.success(), "{account} logs in: {out:?}\n{}", lab.agent().log());
}

fn session(lab: &Lab, user: &str) -> LoginSession {
    LoginSession::open(lab.user(user), &lab.cgroups.clients, &lab.dir.path().join("sessions").join(user))
}

/// Starts `sql` through host A's gate in alice's session; it is held.
fn held(hosts: &Hosts, alice: &mut LoginSession, sql: &str) -> SessionJob {
    let psql = format!("psql -h {} -U postgres -d postgres -X -At -v ON_ERROR_STOP=1 -c '{sql}'", hosts.a.target.v4);
    let job = alice.start(&psql);
    job.wait_for_stderr("waiting for approval", Duration::from_secs(20));
    job
}

/// The request host B's `person` sees from host A, waiting (bounded) for it.
fn request_seen_on_b(hosts: &Hosts, person: &mut LoginSession, statement: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let out = person.run(&airlock_script(&hosts.b, "approvals --json"));
        let list: Vec<Value> = serde_json::from_str(&out.stdout).unwrap_or_default();
        if let Some(found) = list.into_iter().find(|r| r["statement"].as_str().is_some_and(|s| s.contains(statement))) {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no request from host-a on host-b: {out:?}\n{}",
            hosts.b.agent().log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn decide(hosts: &Hosts, person: &mut LoginSession, args: &str) -> CommandOutput {
    person.run(&airlock_script(&hosts.b, args))
}

fn records(lab: &Lab, kind: &str) -> Vec<Value> {
    lab.agent().records_of(kind)
}

#[test]
fn a_statement_held_on_one_host_is_decided_from_another_and_only_by_whom_policy_names() {
    if !privileged() {
        return;
    }
    let mut hosts = hosts();
    let mut alice = session(&hosts.a, "alice");
    login(&hosts, &hosts.a, &mut alice, "alice");
    let setup = alice.run(&format!(
        "psql -h {} -U postgres -d postgres -X -At -c 'create table t1 (id int); create table t2 (id int); create table t3 (id int); create table t4 (id int)'",
        hosts.a.target.v4
    ));
    assert!(setup.success(), "{setup:?}\n{}", hosts.a.agent().log());
    let mut bob = session(&hosts.b, "bob");
    login(&hosts, &hosts.b, &mut bob, "bob");
    let mut carol = session(&hosts.b, "carol");
    login(&hosts, &hosts.b, &mut carol, "carol");
    let mut alice_on_b = session(&hosts.b, "alice");
    login(&hosts, &hosts.b, &mut alice_on_b, "alice");

    // Held on A; bob, on B, sees it with the host it waits on, and approves.
    let drop_t1 = held(&hosts, &mut alice, "drop table t1");
    let request = request_seen_on_b(&hosts, &mut bob, "drop table t1");
    assert_eq!(request["host"], "host-a", "{request}");
    assert_eq!(request["requester"], "alice@example.com");
    let id = request["id"].as_str().unwrap().to_owned();

    // Not by the person who asked, from any host.
    let own = decide(&hosts, &mut alice_on_b, &format!("approve {id}"));
    assert!(!own.success() && own.stderr.contains("your own request"), "{own:?}");

    // carol is no approver: B writes her decision (it does not know A's
    // policy beyond what the request says), A refuses it and keeps waiting.
    let outsider = decide(&hosts, &mut carol, &format!("approve {id}"));
    assert!(outsider.success(), "{outsider:?}\n{}", hosts.b.agent().log());
    let refused = hosts.a.agent().wait_for_records("approval.decision_refused", 1);
    assert_eq!(refused[0]["detail"]["claimed_approver"], "carol@example.com", "{refused:?}");
    assert!(refused[0]["detail"]["why"].as_str().unwrap().contains("not an approver"), "{refused:?}");

    let approved = decide(&hosts, &mut bob, &format!("approve host-a/{id} --reason 'planned cleanup'"));
    assert!(approved.success(), "{approved:?}\n{}", hosts.b.agent().log());
    let out = drop_t1.wait(Duration::from_secs(20));
    assert!(out.success(), "the drop ran once bob approved: {out:?}\n{}", hosts.a.agent().log());
    let taken = records(&hosts.a, "approval.approved").pop().expect("A recorded the decision");
    assert_eq!(taken["identity"]["user"], "bob@example.com", "{taken}");
    assert_eq!(taken["identity"]["groups"], serde_json::json!(["eng"]), "groups from bob's ID token: {taken}");
    assert_eq!(
        (taken["detail"]["via"].as_str(), taken["detail"]["reason"].as_str()),
        (Some("openbao"), Some("planned cleanup"))
    );
    let decided =
        records(&hosts.b, "approval.decided_for_host").into_iter().find(|r| r["identity"]["user"] == "bob@example.com");
    assert_eq!(decided.expect("B recorded bob's decision")["detail"]["host"], "host-a");

    // A decision forged by someone who may write the path (here: root) is
    // refused, even naming bob's entity; then bob denies, with his reason.
    let drop_t2 = held(&hosts, &mut alice, "drop table t2");
    let request = request_seen_on_b(&hosts, &mut bob, "drop table t2");
    let id = request["id"].as_str().unwrap().to_owned();
    let mounts: Value = serde_json::from_str(&hosts.bao.cli(&["auth", "list", "-format=json"]).unwrap()).unwrap();
    let accessor = format!("alias_mount_accessor={}", mounts["jwt/"]["accessor"].as_str().unwrap());
    let lookup =
        hosts.bao.cli(&["write", "-format=json", "identity/lookup/entity", "alias_name=bob@example.com", &accessor]);
    let entity = serde_json::from_str::<Value>(&lookup.unwrap()).unwrap()["data"]["id"].as_str().unwrap().to_owned();
    let published =
        hosts.bao.cli(&["kv", "get", "-mount=airlock", "-field=request_sha256", &format!("requests/host-a/{id}")]);
    let forged = serde_json::json!({
        "version": 1, "host": "host-a", "request": id, "request_sha256": published.unwrap().trim(),
        "approve": true, "reason": "forged", "approver": "bob@example.com",
        "entity_id": entity, "decided_at": "2026-12-06T00:00:00Z",
        "signature": "vault:v1:AAAA",
    });
    let forged_file = hosts.a.dir.path().join("forged.json");
    fs::write(&forged_file, forged.to_string()).unwrap();
    let wrote = hosts.bao.cli(&[
        "kv",
        "put",
        "-mount=airlock",
        &format!("decisions/host-a/{id}"),
        &format!("@{}", forged_file.display()),
    ]);
    assert!(wrote.is_ok(), "{wrote:?}");
    let refused = hosts.a.agent().wait_for_records("approval.decision_refused", 2);
    assert_eq!(refused[1]["detail"]["request"], id.as_str(), "{refused:?}");
    assert!(refused[1]["detail"]["why"].as_str().unwrap().contains("does not verify"), "{refused:?}");
    assert!(
        drop_t2.stderr_so_far().contains("waiting for approval")
            && !records(&hosts.a, "approval.approved").iter().any(|r| r["detail"]["request"] == id.as_str())
    );

    let denied = decide(&hosts, &mut bob, &format!("deny {id} --reason 'not during the freeze'"));
    assert!(denied.success(), "{denied:?}");
    let out = drop_t2.wait(Duration::from_secs(20));
    assert!(!out.success() && out.stderr.contains("not during the freeze"), "{out:?}");
    let gone = decide(&hosts, &mut bob, &format!("approve {id}"));
    assert!(!gone.success(), "a decided request is gone from OpenBao: {gone:?}");

    // OpenBao goes away: a request filed meanwhile waits (host A says why
    // in `airlock status`, host B's approvers are told they cannot see
    // other hosts' requests) and is published, then decided, once it is back.
    hosts.bao.stop();
    let drop_t3 = held(&hosts, &mut alice, "drop table t3");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        let status = hosts.a.agent().status();
        if status["approvals_exchange"]["unreachable"].is_array() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "status never said OpenBao is away: {status}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["approvals_exchange"]["unpublished"], 1, "{status}");
    let blind = decide(&hosts, &mut bob, "approvals");
    assert!(!blind.success() && blind.stderr.contains("cannot be read from OpenBao"), "{blind:?}");
    hosts.bao.restart();
    let request = request_seen_on_b(&hosts, &mut bob, "drop table t3");
    let approved = decide(&hosts, &mut bob, &format!("approve {}", request["id"].as_str().unwrap()));
    assert!(approved.success(), "{approved:?}\n{}", hosts.b.agent().log());
    let out = drop_t3.wait(Duration::from_secs(20));
    assert!(out.success(), "{out:?}\n{}", hosts.a.agent().log());
    assert!(hosts.a.agent().status()["approvals_exchange"]["unreachable"].is_null());

    // Nobody decides: it expires on host A and is taken down from OpenBao.
    let drop_t4 = held(&hosts, &mut alice, "drop table t4");
    let request = request_seen_on_b(&hosts, &mut bob, "drop table t4");
    let out = drop_t4.wait(Duration::from_secs(40));
    assert!(!out.success() && out.stderr.contains("was not decided before"), "{out:?}");
    let late = decide(&hosts, &mut bob, &format!("approve {}", request["id"].as_str().unwrap()));
    assert!(!late.success() && late.stderr.contains("no pending request"), "{late:?}");
}
