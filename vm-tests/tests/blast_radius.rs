//! `airlock blast-radius` against a real PostgreSQL 15 with a realistic
//! role tree, a real OpenBao dev server holding a token, and targets
//! Airlock injects credentials into or signs SSH certificates for.

use std::{fs, process::Command};

use airlock_vm_tests::{AgentConfig, Lab, TargetHost, airlock_bin, bao::Bao, privileged, set_mode};
use serde_json::Value;

const ADMIN_PASSWORD: &str = "admin-secret-4711";

/// Roles an application estate grows: readers and writers of `shop`, an
/// analyst reading customers' e-mails and cards, billing updating cards,
/// an ops role with CREATEROLE, a BYPASSRLS auditor, a support chain three
/// memberships deep, and a NOINHERIT break-glass role over billing.
const ROLE_TREE: &str = "
CREATE SCHEMA shop;
CREATE SCHEMA crm;
CREATE TABLE shop.orders (id int, total numeric);
CREATE TABLE shop.products (id int, title text);
CREATE TABLE crm.customers (id int, email text, card_number text, notes text);
CREATE TABLE crm.payment_cards (id int, customer_id int, pan text);
CREATE TABLE public.notices (id int, body text);
GRANT SELECT ON public.notices TO PUBLIC;
CREATE ROLE app_read NOLOGIN;
GRANT USAGE ON SCHEMA shop TO app_read;
GRANT SELECT ON ALL TABLES IN SCHEMA shop TO app_read;
CREATE ROLE app_write NOLOGIN IN ROLE app_read;
GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA shop TO app_write;
CREATE ROLE analyst NOLOGIN;
GRANT USAGE ON SCHEMA crm TO analyst;
GRANT SELECT ON crm.customers TO analyst;
CREATE ROLE billing NOLOGIN;
GRANT USAGE ON SCHEMA crm TO billing;
GRANT SELECT, UPDATE ON crm.payment_cards TO billing;
CREATE ROLE ops NOLOGIN CREATEROLE;
CREATE ROLE rls_auditor NOLOGIN BYPASSRLS;
CREATE ROLE tier1 NOLOGIN IN ROLE app_read;
CREATE ROLE tier2 NOLOGIN IN ROLE tier1;
CREATE ROLE tier3 NOLOGIN IN ROLE tier2;
CREATE ROLE breakglass NOLOGIN NOINHERIT IN ROLE billing;
";

struct BlastLab {
    lab: Lab,
    config: AgentConfig,
    _bao: Bao,
}

fn blast_lab() -> BlastLab {
    let mut lab = Lab::new(&["alice"]);
    let data = lab.target.start_postgres_auth(&lab.dir.path().join("pg"), &[], "scram-sha-256");
    let admin = TargetHost::jit_admin(&data, lab.dir.path(), ADMIN_PASSWORD);
    TargetHost::superuser_sql(&data, ROLE_TREE);
    let bao_dir = lab.dir.path().join("bao");
    fs::create_dir_all(&bao_dir).expect("mkdir bao");
    let bao = Bao::start(&bao_dir);
    let bao_policy = lab.dir.path().join("db-reader.hcl");
    fs::write(&bao_policy, "path \"database/creds/*\" { capabilities = [\"read\"] }\n").expect("policy file");
    bao.configure(&[&["policy", "write", "db-reader", &bao_policy.display().to_string()]]);
    let token: Value = serde_json::from_str(
        &bao.cli(&["token", "create", "-policy=db-reader", "-ttl=1h", "-format=json"]).expect("a token"),
    )
    .expect("token JSON");
    let token_file = lab.dir.path().join("bao-token");
    fs::write(&token_file, token["auth"]["client_token"].as_str().expect("client_token")).expect("token file");
    set_mode(&token_file, 0o600);
    let header_file = lab.dir.path().join("api-token");
    fs::write(&header_file, "Bearer not-a-real-token").expect("header file");
    set_mode(&header_file, 0o600);
    let v4 = lab.target.v4;
    let role = |name: &str, grants: &str| {
        format!("\n[[target.credentials.role]]\nname = \"{name}\"\ngrants = [{grants}]\ngroups = [\"{name}s\"]\n")
    };
    let roles: String = [
        role("reader", "\"app_read\""),
        role("writer", "\"app_write\""),
        role("analyst", "\"analyst\""),
        role("biller", "\"billing\""),
        role("operator", "\"ops\""),
        role("auditor", "\"rls_auditor\""),
        role("supporter", "\"tier3\""),
        role("breakglass", "\"breakglass\""),
        role("ghost", "\"no_such_role\""),
    ]
    .concat();
    let policy = format!(
        r#"
[[target]]
name = "pg"
protocol = "postgres"
port = 5432
addresses = ["{v4}"]

[[target.access]]
action = "allow"
users = ["*"]

[target.credentials]
admin_file = "{admin}"
ttl_seconds = 600
{roles}
[target.masking]
detectors = ["card", "email"]

[[target.masking.rules]]
column = "crm.customers.email"
strategy = "redact"

[[target.masking.rules]]
column = "crm.customers.card_number"
strategy = "redact"

[[target]]
name = "pg-down"
protocol = "postgres"
port = 5433
addresses = ["{v4}"]

[[target.access]]
action = "allow"
groups = ["dba"]

[target.credentials]
admin_file = "{admin}"

[[target.credentials.role]]
name = "dba"
grants = ["pg_read_all_data"]
groups = ["dba"]

[[target]]
name = "pg-bao"
protocol = "postgres"
port = 5432
addresses = ["10.231.250.9"]

[[target.access]]
action = "allow"
users = ["*"]

[target.credentials]

[target.credentials.openbao]
addr = "https://{bao_addr}"
token_file = "{token_file}"
ca_file = "{bao_ca}"

[[target.credentials.role]]
name = "report"
users = ["*"]

[[target]]
name = "api"
protocol = "https"
port = 443
addresses = ["{v4}"]

[[target.access]]
action = "allow"
users = ["*"]

[target.https]
server_name = "{v4}"

[target.https.credential]
kind = "header_file"
header = "Authorization"
file = "{header_file}"

[[target]]
name = "web"
protocol = "ssh"
port = 22
addresses = ["{v4}"]

[[target.access]]
action = "allow"
users = ["*"]

[target.ssh]
cert_ttl_seconds = 120

[[target.ssh.principal]]
name = "deploy"
groups = ["ops"]
"#,
        admin = admin.display(),
        bao_addr = bao.addr,
        bao_ca = bao.ca_file.display(),
        token_file = token_file.display(),
        header_file = header_file.display(),
    );
    let config = AgentConfig::new(&lab, &policy);
    BlastLab { lab, config, _bao: bao }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn blast_radius(config: &AgentConfig, args: &[&str]) -> Run {
    let out = Command::new(airlock_bin())
        .arg("blast-radius")
        .arg("--config")
        .arg(&config.path)
        .args(args)
        .output()
        .expect("run airlock blast-radius");
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !run.stdout.contains(ADMIN_PASSWORD) && !run.stderr.contains(ADMIN_PASSWORD),
        "the admin password leaked into the report"
    );
    assert!(!run.stdout.contains("not-a-real-token"), "an injected credential leaked into the report");
    run
}

fn rows(run: &Run) -> Vec<Value> {
    let report: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", run.stdout, run.stderr));
    report["rows"].as_array().expect("rows").clone()
}

/// The row of `target` whose kind or secret is `which` (the template's
/// name in quotes, or `admin_login`).
fn row<'a>(rows: &'a [Value], target: &str, which: &str) -> &'a Value {
    rows.iter()
        .find(|r| {
            r["target"] == target && (r["kind"] == which || r["secret"].as_str().is_some_and(|s| s.starts_with(which)))
        })
        .unwrap_or_else(|| panic!("no row for {target} {which}: {rows:#?}"))
}

fn impact(row: &Value) -> (&str, &str) {
    (row["leak_impact"].as_str().unwrap_or("?"), row["impact_rule"].as_str().unwrap_or("?"))
}

#[test]
fn each_secret_gets_its_scope_from_the_live_server_and_an_impact_by_rule() {
    if !privileged() {
        return;
    }
    let BlastLab { lab, config, _bao } = blast_lab();
    let run = blast_radius(&config, &["--json"]);
    assert_eq!(run.code, Some(3), "pg-down is unreachable, so the report is incomplete: {}", run.stderr);
    let rows = rows(&run);

    let admin = row(&rows, "pg", "admin_login");
    assert_eq!(impact(admin), ("high", "createrole"), "{admin:#}");
    assert_eq!(admin["kind"], "admin_login");
    assert_eq!(admin["ttl_rotation"], "long-lived; rotates every 30days, the old login valid 15m after");
    assert!(admin["who_may_obtain"].as_str().unwrap().starts_with("the agent only"), "{admin:#}");

    let reader = row(&rows, "pg", "\"reader\"");
    assert_eq!(impact(reader), ("low", "reads"), "{reader:#}");
    let tables: Vec<&str> =
        reader["postgres"]["tables"].as_array().unwrap().iter().map(|t| t["table"].as_str().unwrap()).collect();
    assert_eq!(tables, ["notices", "orders", "products"], "PUBLIC's privileges are every login's");
    assert_eq!(reader["ttl_rotation"], "600 s per login (VALID UNTIL), dropped when its last session ends");
    assert_eq!(reader["who_may_obtain"], "groups readers; no approval needed");

    let writer = row(&rows, "pg", "\"writer\"");
    assert_eq!(impact(writer), ("medium", "writes"), "{writer:#}");
    let roles: Vec<&str> =
        writer["postgres"]["roles"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(roles, ["app_write", "app_read"]);

    // Masked for everyone through Airlock, but a leaked login reads the data as stored.
    let analyst = row(&rows, "pg", "\"analyst\"");
    assert_eq!(impact(analyst), ("medium", "reads-sensitive"), "{analyst:#}");
    let customers = &analyst["postgres"]["tables"][0];
    assert_eq!((customers["schema"].as_str(), customers["table"].as_str()), (Some("crm"), Some("customers")));
    let sensitive: Vec<(&str, &str, &str)> = customers["sensitive"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["column"].as_str().unwrap(), c["kind"].as_str().unwrap(), c["coverage"].as_str().unwrap()))
        .collect();
    assert_eq!(sensitive, [("email", "email", "masked_for_everyone"), ("card_number", "card", "masked_for_everyone")]);
    assert!(analyst["scope"].as_str().unwrap().contains("1 masked for everyone through Airlock"), "{analyst:#}");

    let biller = row(&rows, "pg", "\"biller\"");
    assert_eq!(impact(biller), ("high", "writes-sensitive"), "{biller:#}");
    assert_eq!(biller["impact_reason"], "writes personal data or secrets in crm.payment_cards");
    let cards = &biller["postgres"]["tables"][0];
    assert_eq!(cards["privileges"]["update"], true);
    assert_eq!(cards["privileges"]["insert"], false);
    assert_eq!(cards["sensitive"][0]["kind"], "card");

    assert_eq!(impact(row(&rows, "pg", "\"operator\"")), ("high", "createrole"));
    assert_eq!(impact(row(&rows, "pg", "\"auditor\"")), ("high", "bypassrls"));

    let supporter = row(&rows, "pg", "\"supporter\"");
    assert_eq!(impact(supporter), ("low", "reads"), "{supporter:#}");
    let depths: Vec<(&str, i64)> = supporter["postgres"]["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["depth"].as_i64().unwrap()))
        .collect();
    assert_eq!(depths, [("tier3", 0), ("tier2", 1), ("tier1", 2), ("app_read", 3)]);

    // NOINHERIT stops nothing an attacker wants: SET ROLE billing still works.
    let breakglass = row(&rows, "pg", "\"breakglass\"");
    assert_eq!(impact(breakglass), ("high", "writes-sensitive"), "{breakglass:#}");
    assert!(breakglass["scope"].as_str().unwrap().contains("by SET ROLE only (NOINHERIT): billing"), "{breakglass:#}");

    let ghost = row(&rows, "pg", "\"ghost\"");
    assert_eq!(impact(ghost), ("low", "nothing"), "{ghost:#}");
    assert_eq!(ghost["postgres"]["missing_roles"], serde_json::json!(["no_such_role"]));

    for secret in ["admin_login", "\"dba\""] {
        let down = row(&rows, "pg-down", secret);
        assert_eq!(impact(down), ("high", "scope-unknown"), "{down:#}");
        let why = down["unknown"].as_str().unwrap();
        assert!(why.contains(&format!("{}:5433", lab.target.v4)) && why.contains("connecting"), "{why}");
    }

    let token = rows.iter().find(|r| r["kind"] == "openbao_token").expect("the OpenBao token row");
    assert_eq!(token["scope"], "policies db-reader, default", "{token:#}");
    assert!(token["ttl_rotation"].as_str().unwrap().contains("s left, renewable"), "{token:#}");
    assert_eq!(impact(token), ("high", "scope-unknown"), "it issues pg-bao's logins: {token:#}");
    assert_eq!(impact(row(&rows, "pg-bao", "\"report\"")), ("high", "scope-unknown"));

    let api = row(&rows, "api", "injected_credential");
    assert_eq!(
        (api["secret"].as_str().map(|s| s.starts_with("header_file Authorization")), impact(api)),
        (Some(true), ("high", "scope-unknown"))
    );

    let kinds: Vec<&str> = rows.iter().filter(|r| r["target"].is_null()).map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["openbao_token", "ssh_user_ca", "ssh_host_ca", "tls_host_ca"]);
    let user_ca = rows.iter().find(|r| r["kind"] == "ssh_user_ca").unwrap();
    assert_eq!(impact(user_ca), ("high", "signing-key"));
    assert!(user_ca["who_may_obtain"].as_str().unwrap().contains("deploy@web: groups ops"), "{user_ca:#}");
}

#[test]
fn the_table_is_aligned_and_a_target_filter_narrows_it() {
    if !privileged() {
        return;
    }
    let BlastLab { lab: _lab, config, _bao } = blast_lab();
    let run = blast_radius(&config, &["--target", "pg"]);
    assert_eq!(run.code, Some(0), "pg alone is reachable: {}{}", run.stdout, run.stderr);
    let header = run.stdout.lines().next().unwrap();
    for column in ["SECRET", "GRANTS ACCESS TO", "SCOPE", "TTL / ROTATION", "WHO MAY OBTAIN", "LEAK IMPACT"] {
        assert!(header.contains(column), "{header}");
    }
    let scope_at = header.find("SCOPE").unwrap();
    let starts: Vec<&str> =
        run.stdout.lines().filter(|l| l.starts_with("JIT role pg:") || l.starts_with("admin login pg:")).collect();
    assert_eq!(starts.len(), 10, "the admin login and nine templates:\n{}", run.stdout);
    assert!(run.stdout.contains("HIGH [writes-sensitive]") && run.stdout.contains("LOW [reads]"), "{}", run.stdout);
    // Every line's scope column starts where the header's does: the
    // two-space gap before it is there on every line that reaches it.
    for line in run.stdout.lines().filter(|l| l.len() > scope_at) {
        assert_eq!(&line.as_bytes()[scope_at - 2..scope_at], b"  ", "{line}");
    }
    assert!(!run.stdout.contains("pg-down") && !run.stdout.contains("OpenBao token"), "{}", run.stdout);

    let json = blast_radius(&config, &["--target", "pg", "--json"]);
    let targets: Vec<Value> = rows(&json).iter().map(|r| r["target"].clone()).collect();
    assert!(targets.iter().all(|t| t == "pg" || t.is_null()), "{targets:?}");

    let unknown = blast_radius(&config, &["--target", "nope"]);
    assert_eq!(unknown.code, Some(1));
    assert!(unknown.stderr.contains("no target named \"nope\""), "{}", unknown.stderr);
}

#[test]
fn only_root_may_read_the_secrets_it_reports_on() {
    if !privileged() {
        return;
    }
    let lab = Lab::new(&["alice"]);
    let config = AgentConfig::new(&lab, "");
    let cli = lab.cli();
    let out = lab.run_as(
        "alice",
        &cli.display().to_string(),
        &["blast-radius", "--config", &config.path.display().to_string()],
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("run it as root"), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
}

/// A held statement on a just-in-time target: approvers see what the
/// requester's login can do before they let it run.
#[test]
fn approvers_see_the_blast_radius_of_the_requesters_login() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new(&["alice", "bob"]);
    let data = lab.target.start_postgres_auth(&lab.dir.path().join("pg"), &[], "scram-sha-256");
    let admin = TargetHost::jit_admin(&data, lab.dir.path(), ADMIN_PASSWORD);
    TargetHost::superuser_sql(&data, ROLE_TREE);
    let (v4, alice, bob) = (lab.target.v4, lab.user("alice").name.clone(), lab.user("bob").name.clone());
    let policy = lab.target.jit_policy(&admin, "");
    lab.start_agent(&format!(
        r#"{policy}
[[target.credentials.role]]
name = "biller"
grants = ["billing"]
users = ["{alice}"]

[[target.guardrail]]
classes = ["update_without_where"]
action = "approve"
reason = "whole-table changes need a second pair of eyes"

[target.approvals]
users = ["{bob}"]
timeout_seconds = 60
"#
    ));
    let cli = lab.cli().display().to_string();
    let socket = lab.agent().config.socket.display().to_string();
    let host = v4.to_string();
    std::thread::scope(|scope| {
        let held = scope.spawn(|| {
            let sql = "update crm.payment_cards set pan = null";
            lab.run_as("alice", "psql", &["-h", &host, "-U", "biller", "-d", "postgres", "-X", "-At", "-w", "-c", sql])
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let request = loop {
            let out = lab.run_as("bob", &cli, &["approvals", "--json", "--socket", &socket]);
            assert!(out.success(), "{out:?}");
            let list: Vec<Value> = serde_json::from_str(&out.stdout).expect("JSON list");
            let ready =
                list.first().filter(|r| !r["blast_radius"].as_str().unwrap_or("").ends_with("still being read"));
            if let Some(request) = ready {
                break request.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no request with its blast radius: {list:?}\n{}",
                lab.agent().log()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        assert_eq!(
            request["blast_radius"],
            "grants: read 2 tables in 2 schemas (1 with personal data), write 1 (1 with personal data); impact high \
             (writes-sensitive: writes personal data or secrets in crm.payment_cards)"
        );
        let text = lab.run_as("bob", &cli, &["approvals", "--socket", &socket]);
        assert!(text.stdout.contains("login grants: read 2 tables in 2 schemas"), "{text:?}");
        let id = request["id"].as_str().unwrap();
        let denied = lab.run_as("bob", &cli, &["deny", id, "--socket", &socket]);
        assert!(denied.success(), "{denied:?}");
        let out = held.join().unwrap();
        assert!(!out.success() && out.stderr.contains("was denied"), "{out:?}");
    });
    // The request as filed (and audited) carries no summary; only listings do.
    let requested = lab.agent().records_of("approval.requested");
    assert!(requested[0]["detail"].get("blast_radius").is_none(), "{requested:?}");
    assert!(!lab.agent().log().contains(ADMIN_PASSWORD));
}
