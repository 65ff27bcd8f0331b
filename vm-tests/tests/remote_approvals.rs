//! Approvals across hosts, end to end: two "hosts" (two agents with their
//! own config, state, audit log, cgroups and users), a real OpenBao (KV v2,
//! transit, JWT auth, raft storage) and the real OIDC provider. A statement
//! held on host A is decided by a person logged in on host B; decisions B
//! did not sign as that person, or by someone policy does not let decide,
//! are refused.

use std::{fs, time::Duration};

use airlock_vm_tests::{
    privileged,
    remote_approvals::{Hosts, decide, held, login, records, request_seen_on_b, session},
};
use serde_json::Value;

#[test]
fn a_statement_held_on_one_host_is_decided_from_another_and_only_by_whom_policy_names() {
    if !privileged() {
        return;
    }
    let mut hosts = Hosts::start(100);
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
    let out = drop_t4.wait(Duration::from_secs(70));
    assert!(!out.success() && out.stderr.contains("was not decided before"), "{out:?}");
    let late = decide(&hosts, &mut bob, &format!("approve {}", request["id"].as_str().unwrap()));
    assert!(!late.success() && late.stderr.contains("no pending request"), "{late:?}");
}

/// A target that opens only for a window someone approves: the window is
/// approved from the other host, and the person gets in.
#[test]
fn an_access_window_is_opened_from_another_host() {
    if !privileged() {
        return;
    }
    let hosts = Hosts::start_with(100, "timeout_seconds = 45\nsession_access_seconds = 60\n");
    let mut alice = session(&hosts.a, "alice");
    login(&hosts, &hosts.a, &mut alice, "alice");
    let mut bob = session(&hosts.b, "bob");
    login(&hosts, &hosts.b, &mut bob, "bob");
    let psql = format!("psql -h {} -U postgres -d postgres -X -At -c 'select 42'", hosts.a.target.v4);
    let first = alice.run(&psql);
    assert!(!first.success() && first.stderr.contains("needs approval"), "{first:?}");
    assert!(first.stderr.contains("airlock approve host-a/"), "the hint names the host: {first:?}");
    let id = first.stderr.split("request ").nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap().to_owned();

    request_seen_on_b(&hosts, &mut bob, "");
    let approved = decide(&hosts, &mut bob, &format!("approve host-a/{id}"));
    assert!(approved.success(), "{approved:?}\n{}", hosts.b.agent().log());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let again = alice.run(&psql);
        if again.success() {
            assert_eq!(again.stdout, "42\n");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the window never opened: {again:?}\n{}", hosts.a.agent().log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let taken = records(&hosts.a, "approval.approved").pop().expect("A recorded the decision");
    assert_eq!(
        (taken["identity"]["user"].as_str(), taken["detail"]["via"].as_str()),
        (Some("bob@example.com"), Some("openbao"))
    );
}
