//! Secrets left on the host: the agent's sweep and `airlock scan` over real
//! home directories of real test users, with what a host really has in
//! them (keys made by ssh-keygen, a .pgpass for a protected PostgreSQL
//! target, histories, rc files, a kubeconfig, .env), plus a symlink out of
//! the tree, a FIFO and an oversize file. Nothing is modified, nothing
//! secret reaches the audit log, the agent's log or the command's output.

use std::{
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use airlock_vm_tests::{Agent, AgentConfig, Lab, TestUser, agent::SCAN_OFF, privileged, set_mode};
use serde_json::Value;

const AWS_KEY: &str = "AKIAZ7QRSTUVWXYZ2345";
const OUTSIDE_KEY: &str = "AKIAQ2WERTYUIOPASDFG";
const GITHUB_PAT: &str = "ghp_R8d2mN5qT1vX7zK3pL9wY4bC6fH0jA2sE8uI";
const PGPASS_PASSWORD: &str = "Pgpass-Secret-7431";
const RC_PASSWORD: &str = "Rc-Secret-9902";
const HISTORY_PASSWORD: &str = "History-Secret-5521";
const ENV_TOKEN: &str = "Env-Token-8834-qx";
const KUBE_TOKEN: &str = "kube-token-6f2c9e41d7";

/// Writes `text` to `path`, owned by `user`, with `mode`.
fn plant(path: &Path, text: &str, user: &TestUser, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).unwrap();
    set_mode(path, mode);
}

/// A home directory owned by `user`, mode 0700 (no one else may read it).
fn home(root: &Path, user: &TestUser) -> PathBuf {
    let dir = root.join(&user.short);
    fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid)).unwrap();
    set_mode(&dir, 0o700);
    dir
}

/// An ed25519 key made by ssh-keygen, owned by `user` (`passphrase` empty: unencrypted).
fn ssh_key(path: &Path, passphrase: &str, user: &TestUser) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-C", "test", "-N", passphrase, "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(made.success());
    for file in [path.to_owned(), path.with_extension("pub"), path.parent().unwrap().to_owned()] {
        std::os::unix::fs::chown(&file, Some(user.uid), Some(user.gid)).unwrap();
    }
}

/// (path relative to `root`, rule) of each finding, sorted.
fn found(findings: &[Value], root: &Path) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = findings
        .iter()
        .map(|f| {
            let f = if f["detail"].is_object() { &f["detail"] } else { f };
            let path = f["path"].as_str().unwrap();
            (
                path.strip_prefix(&*root.to_string_lossy()).unwrap_or(path).to_owned(),
                f["rule"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    pairs.sort();
    pairs
}

/// Waits (bounded) for `count` records of `kind`: the sweep runs at nice 19
/// in the idle I/O class, so on a busy machine it takes longer than the
/// agent's other work that `Agent::wait_for_records` waits for.
fn sweep_records(agent: &Agent, kind: &str, count: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let records = agent.records_of(kind);
        if records.len() >= count || std::time::Instant::now() > deadline {
            return records;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in
        [AWS_KEY, OUTSIDE_KEY, GITHUB_PAT, PGPASS_PASSWORD, RC_PASSWORD, HISTORY_PASSWORD, ENV_TOKEN, KUBE_TOKEN]
    {
        assert!(!text.contains(secret), "{what} holds a secret");
    }
}

#[test]
fn sweep_and_scan_find_planted_secrets_in_real_homes_and_touch_nothing() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new(&["alice", "bob"]);
    let root = lab.dir.path().join("homes");
    fs::create_dir_all(&root).unwrap();
    set_mode(&root, 0o755);
    let (alice, bob) = (lab.user("alice"), lab.user("bob"));
    let v4 = lab.target.v4;

    let alice_home = home(&root, alice);
    plant(&alice_home.join(".pgpass"), &format!("# work\n{v4}:5432:app:alice:{PGPASS_PASSWORD}\n"), alice, 0o600);
    ssh_key(&alice_home.join(".ssh/id_ed25519"), "", alice);
    ssh_key(&alice_home.join(".ssh/id_encrypted"), "a long passphrase", alice);
    plant(
        &alice_home.join(".bash_history"),
        &format!("ls\nmysql -u root -p{HISTORY_PASSWORD} app\nexit\n"),
        alice,
        0o600,
    );
    plant(&alice_home.join("project/.env"), &format!("APP_NAME=demo\nAPI_TOKEN={ENV_TOKEN}\n"), alice, 0o600);
    // Not to be followed or read: a link out of the tree, a FIFO.
    let outside = lab.dir.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("aws.txt"), format!("aws_access_key_id = {OUTSIDE_KEY}\n")).unwrap();
    std::os::unix::fs::symlink(&outside, alice_home.join("outside-dir")).unwrap();
    std::os::unix::fs::symlink(outside.join("aws.txt"), alice_home.join("outside-file")).unwrap();
    assert!(Command::new("mkfifo").arg(alice_home.join("pipe")).status().unwrap().success());

    let bob_home = home(&root, bob);
    plant(
        &bob_home.join(".bashrc"),
        &format!("alias ll='ls -l'\nexport PGHOST={v4}\nexport PGPASSWORD={RC_PASSWORD}\n"),
        bob,
        0o644,
    );
    plant(
        &bob_home.join(".kube/config"),
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://{v4}:6443\n  name: lab\nusers:\n- name: bob\n  user:\n    token: {KUBE_TOKEN}\n"
        ),
        bob,
        0o600,
    );
    plant(&bob_home.join("notes.txt"), &format!("aws_access_key_id = {AWS_KEY}\n"), bob, 0o600);
    let keep = bob_home.join("keep.txt");
    plant(&keep, &format!("GITHUB_TOKEN={GITHUB_PAT}\n"), bob, 0o600);
    plant(&bob_home.join("big.log"), &format!("{AWS_KEY}\n{}", "x".repeat(100_000)), bob, 0o600);
    let keep_before =
        (fs::read(&keep).unwrap(), fs::metadata(&keep).unwrap().mtime_nsec(), fs::metadata(&keep).unwrap().mtime());

    let policy = format!(
        "[[target]]\nname = \"pg\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"{v4}\"]\n\n[[target.access]]\naction = \"allow\"\nusers = [\"*\"]\n"
    );
    let config = AgentConfig::new(&lab, &policy);
    let text = fs::read_to_string(&config.path).unwrap();
    let scan = format!("[scan]\npaths = [\"{}\"]\ninterval = \"2s\"\nmax_file_bytes = 65536\n", root.display());
    assert!(text.contains(SCAN_OFF));
    fs::write(&config.path, text.replace(SCAN_OFF, &scan)).unwrap();
    let config_path = config.path.clone();
    let (alice_name, alice_uid, bob_name) = (alice.name.clone(), alice.uid, bob.name.clone());
    lab.agent = Some(Agent::start(config));

    let expected: Vec<(String, String)> = vec![
        ("/alice/.bash_history", "airlock-history-password"),
        ("/alice/.pgpass", "airlock-pgpass"),
        ("/alice/.ssh/id_ed25519", "airlock-private-key"),
        ("/alice/.ssh/id_encrypted", "airlock-private-key"),
        ("/alice/project/.env", "airlock-env-secret"),
        ("/bob/.bashrc", "airlock-pgpassword-rc"),
        ("/bob/.kube/config", "airlock-kubeconfig-token"),
        ("/bob/keep.txt", "github-pat"),
        ("/bob/notes.txt", "aws-access-token"),
    ]
    .into_iter()
    .map(|(p, r)| (p.to_owned(), r.to_owned()))
    .collect();
    let records = sweep_records(lab.agent(), "secret.found", expected.len());
    assert_eq!(found(&records, &root), expected, "{records:#?}");
    let by_path = |records: &[Value], suffix: &str| -> Value {
        records.iter().find(|r| r["detail"]["path"].as_str().unwrap().ends_with(suffix)).unwrap()["detail"].clone()
    };
    let pgpass = by_path(&records, "/.pgpass");
    assert_eq!(pgpass["protected_target"], serde_json::json!(["pg"]), "{pgpass}");
    assert!(pgpass["bypass"].as_str().unwrap().contains("bypasses just-in-time access to pg"));
    assert_eq!(pgpass["owner"], alice_name.as_str());
    assert_eq!(pgpass["uid"], alice_uid);
    assert_eq!(pgpass["line"], 2);
    assert_eq!(by_path(&records, "/.bashrc")["protected_target"], serde_json::json!(["pg"]));
    assert_eq!(by_path(&records, "/id_ed25519")["encrypted"], false);
    assert_eq!(by_path(&records, "/id_encrypted")["encrypted"], true);
    assert_eq!(by_path(&records, "/notes.txt")["owner"], bob_name.as_str());
    for record in &records {
        let print = record["detail"]["fingerprint"].as_str().unwrap();
        assert!(print.len() == 32 && print.bytes().all(|b| b.is_ascii_hexdigit()), "{print}");
    }

    // Root's one-off scan with the agent's configuration: same findings, same fingerprints.
    let cli = lab.cli();
    let as_root =
        Command::new(&cli).args(["scan", "--json", "--config"]).arg(&config_path).arg(&root).output().unwrap();
    assert_eq!(as_root.status.code(), Some(1), "findings exit 1: {as_root:?}");
    let stdout = String::from_utf8(as_root.stdout).unwrap();
    let stderr = String::from_utf8(as_root.stderr).unwrap();
    assert_no_secret("root's scan output", &(stdout.clone() + &stderr));
    let cli_findings: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(found(&cli_findings, &root), expected);
    let cli_pgpass = cli_findings.iter().find(|f| f["path"].as_str().unwrap().ends_with("/.pgpass")).unwrap();
    assert_eq!(cli_pgpass["protected_target"], serde_json::json!(["pg"]), "{cli_pgpass}");
    let mut audit_prints: Vec<&str> = records.iter().map(|r| r["detail"]["fingerprint"].as_str().unwrap()).collect();
    let mut cli_prints: Vec<&str> = cli_findings.iter().map(|f| f["fingerprint"].as_str().unwrap()).collect();
    audit_prints.sort();
    cli_prints.sort();
    assert_eq!(audit_prints, cli_prints, "root's scan uses the host key, as the sweep does");
    assert!(stderr.contains("2 symlink(s), 1 special file(s), 1 over 65536 bytes"), "{stderr}");

    // Alice reads her own home, and nothing of Bob's.
    let alice_dir = alice_home.to_string_lossy().into_owned();
    let cli_text = cli.to_string_lossy().into_owned();
    let own = lab.run_as("alice", &cli_text, &["scan", "--json", &alice_dir]);
    assert_eq!(own.code, Some(1), "{own:?}");
    assert_no_secret("alice's scan output", &(own.stdout.clone() + &own.stderr));
    let own_findings: Vec<Value> = own.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(found(&own_findings, &root), expected[..5].to_vec());
    let config_text = config_path.to_string_lossy().into_owned();
    let table = lab.run_as("alice", &cli_text, &["scan", "--config", &config_text, &alice_dir]);
    assert!(
        table.stdout.starts_with("PATH") && table.stdout.contains("bypasses just-in-time access to pg"),
        "{table:?}"
    );
    let bobs = lab.run_as("alice", &cli_text, &["scan", "--json", &bob_home.to_string_lossy()]);
    assert_eq!((bobs.code, bobs.stdout.as_str()), (Some(0), ""), "{bobs:?}");
    assert!(bobs.stderr.contains("1 unreadable"), "{bobs:?}");
    let bad = lab.run_as("alice", &cli_text, &["scan", "--rules", "/nonexistent.toml", &alice_dir]);
    assert_eq!(bad.code, Some(2), "{bad:?}");

    // A secret removed is gone at the next sweep.
    fs::write(alice_home.join("project/.env"), "APP_NAME=demo\n").unwrap();
    let gone = sweep_records(lab.agent(), "secret.gone", 1);
    assert_eq!(found(&gone, &root), vec![("/alice/project/.env".to_owned(), "airlock-env-secret".to_owned())]);
    assert_eq!(gone[0]["detail"]["fingerprint"], by_path(&records, "/.env")["fingerprint"]);
    assert_eq!(lab.agent().records_of("secret.found").len(), expected.len(), "nothing announced twice");

    // Nothing was changed; nothing secret was written anywhere.
    let keep_after =
        (fs::read(&keep).unwrap(), fs::metadata(&keep).unwrap().mtime_nsec(), fs::metadata(&keep).unwrap().mtime());
    assert_eq!(keep_before, keep_after, "scanned files are not modified");
    assert_eq!(fs::metadata(alice_home.join(".pgpass")).unwrap().permissions().mode() & 0o777, 0o600);
    let audit = fs::read_to_string(lab.agent().config.audit_dir.join("audit.jsonl")).unwrap();
    assert_no_secret("the audit log", &audit);
    assert_no_secret("the agent's log", &lab.agent().log());
    let state_dir = lab.dir.path().join("state/scan");
    assert_no_secret("the sweep's state", &fs::read_to_string(state_dir.join("findings.json")).unwrap());
    assert_eq!(fs::metadata(state_dir.join("fingerprint.key")).unwrap().permissions().mode() & 0o777, 0o600);
}
