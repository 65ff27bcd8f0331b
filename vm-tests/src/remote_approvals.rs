//! Two "hosts" for approvals across hosts: two agents with their own
//! config, state, audit log, cgroups and users, a real OpenBao (KV v2,
//! transit, JWT auth, raft storage so it can be restarted) and the real
//! OIDC provider. Host A protects PostgreSQL and holds drops for group
//! `eng`; host B is where approvers log in. Used by the vm-test and the
//! bench.

use std::{fs, time::Duration};

use serde_json::Value;

use crate::{
    CommandOutput, Lab, LoginSession, SessionJob,
    agent::{Agent, AgentConfig},
    bao::Bao,
    oidc::OidcProvider,
    set_mode,
};

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

/// The two hosts and what they share.
pub struct Hosts {
    /// The identity provider.
    pub provider: OidcProvider,
    /// OpenBao.
    pub bao: Bao,
    /// Host A (users alice and bob): the target, where statements wait.
    pub a: Lab,
    /// Host B (users bob, carol and alice): where approvers decide.
    pub b: Lab,
}

fn approvals_config(bao: &Bao, lab: &Lab, host: &str, poll_ms: u64) -> String {
    let token = bao.cli(&["token", "create", "-policy=airlock-host", "-field=token"]).expect("host token");
    let token_file = lab.dir.path().join("approvals-token");
    fs::write(&token_file, token.trim()).unwrap();
    set_mode(&token_file, 0o600);
    format!(
        "[approvals]\nbackend = \"openbao\"\naddress = \"{url}\"\ntoken_file = \"{token}\"\nhost = \"{host}\"\npoll_ms = {poll_ms}\n",
        url = bao.url(),
        token = token_file.display(),
    )
}

fn oidc_config(provider: &OidcProvider) -> String {
    format!("[oidc]\nissuer = \"{}\"\nclient_id = \"airlock\"\n", provider.issuer())
}

impl Hosts {
    /// Host A protects PostgreSQL: drops wait for someone in group `eng`.
    /// Host B protects nothing its people use here; they decide from there.
    /// Both look for decisions every `poll_ms`.
    /// Requests expire after 45 s (room for a loaded machine).
    pub fn start(poll_ms: u64) -> Hosts {
        Self::start_with(poll_ms, "timeout_seconds = 45\n")
    }

    /// As [`Hosts::start`], with `approvals` (TOML lines, `timeout_seconds`
    /// among them) as the rest of host A's `[target.approvals]`.
    pub fn start_with(poll_ms: u64, approvals: &str) -> Hosts {
        let provider = OidcProvider::start("RS256", 300);
        let mut a = Lab::new(&["alice", "bob"]);
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
{approvals}"#
        );
        let config_a = oidc_config(&provider) + &approvals_config(&bao, &a, "host-a", poll_ms);
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
        fs::write(
            &config_b.path,
            text.replace(&format!("port = {}", config_b.listener_port), &format!("port = {moved}")),
        )
        .unwrap();
        config_b.append(&(oidc_config(&provider) + &approvals_config(&bao, &b, "host-b", poll_ms)));
        b.agent = Some(Agent::start(config_b));
        Hosts { provider, bao, a, b }
    }
}

fn airlock_script(lab: &Lab, args: &str) -> String {
    format!("{} {args} --socket {}", lab.cli().display(), lab.agent().config.socket.display())
}

/// `airlock login` in `session` on `lab`, approved at the provider as `account`.
pub fn login(hosts: &Hosts, lab: &Lab, session: &mut LoginSession, account: &str) {
    let out = hosts.provider.device_login(session, &airlock_script(lab, "login"), account);
    assert!(out.success(), "{account} logs in: {out:?}\n{}", lab.agent().log());
}

/// A login session of `lab`'s test user `user`.
pub fn session(lab: &Lab, user: &str) -> LoginSession {
    LoginSession::open(lab.user(user), &lab.cgroups.clients, &lab.dir.path().join("sessions").join(user))
}

/// Starts `sql` through host A's gate in alice's session; it is held.
pub fn held(hosts: &Hosts, alice: &mut LoginSession, sql: &str) -> SessionJob {
    let psql = format!("psql -h {} -U postgres -d postgres -X -At -v ON_ERROR_STOP=1 -c '{sql}'", hosts.a.target.v4);
    let job = alice.start(&psql);
    job.wait_for_stderr("waiting for approval", Duration::from_secs(20));
    job
}

/// The request host B's `person` sees from host A, waiting (bounded) for it.
pub fn request_seen_on_b(hosts: &Hosts, person: &mut LoginSession, statement: &str) -> Value {
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

/// The CLI with `args`, run by `person` on host B.
pub fn decide(hosts: &Hosts, person: &mut LoginSession, args: &str) -> CommandOutput {
    cli_on(&hosts.b, person, args)
}

/// The CLI with `args`, run by `person` on `lab`.
pub fn cli_on(lab: &Lab, person: &mut LoginSession, args: &str) -> CommandOutput {
    person.run(&airlock_script(lab, args))
}

/// `lab`'s audit records of `kind`.
pub fn records(lab: &Lab, kind: &str) -> Vec<Value> {
    lab.agent().records_of(kind)
}
