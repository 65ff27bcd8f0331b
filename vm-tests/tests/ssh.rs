//! SSH through Airlock end to end: real OpenSSH clients (ssh, scp, sftp) run
//! as test users, intercepted by the eBPF programs, land on the agent, which
//! shows a host certificate and logs in to a real sshd on the lab target with
//! a just-in-time user certificate.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use airlock_vm_tests::{CommandOutput, Lab, bao::Bao, privileged, set_mode, sshd};
use serde_json::Value;

/// The policy: `deploy` (a local user of the target) open to alice.
fn policy(lab: &Lab, extra: &str) -> String {
    let v4 = lab.target.v4;
    let alice = &lab.user("alice").name;
    let deploy = &lab.user("deploy").name;
    format!(
        r#"
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
host_names = ["web.lab"]

[[target.ssh.principal]]
name = "{deploy}"
users = ["{alice}"]

[[target.ssh.command]]
pattern = "rm -rf *"
action = "deny"
reason = "no recursive deletes on web"
{extra}
"#
    )
}

fn ssh(lab: &Lab, known: &Path, user: &str, login: &str, args: &[&str]) -> CommandOutput {
    let mut full = sshd::client_options(known);
    full.push(format!("{login}@{}", lab.target.v4));
    full.extend(args.iter().map(|s| s.to_string()));
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    lab.run_as(user, "ssh", &full)
}

fn lab_with_sshd(extra: &str) -> (Lab, PathBuf) {
    let mut lab = Lab::new(&["alice", "bob", "deploy"]);
    let policy = policy(&lab, extra);
    lab.start_agent(&policy);
    sshd::start(&mut lab, "deploy");
    let known = sshd::known_hosts(&lab);
    (lab, known)
}

fn one(records: Vec<Value>, what: &str) -> Value {
    assert_eq!(records.len(), 1, "{what}: {records:#?}");
    records.into_iter().next().unwrap()
}

#[test]
fn ssh_exec_logs_in_with_a_certificate_and_checks_the_host_certificate() {
    if !privileged() {
        return;
    }
    let (lab, known) = lab_with_sshd("");
    let deploy = lab.user("deploy").name.clone();

    let out = ssh(&lab, &known, "alice", &deploy, &["echo hello; id -un; exit 3"]);
    assert_eq!(out.code, Some(3), "{out:?}\n{}", lab.agent().log());
    assert_eq!(out.stdout, format!("hello\n{deploy}\n"), "{out:?}");

    let login = one(lab.agent().wait_for_records("ssh.login", 1), "ssh.login");
    assert_eq!(login["identity"]["user"], lab.user("alice").name);
    assert_eq!(login["detail"]["principal"], deploy);
    assert!(login["detail"]["target_host_key"].as_str().unwrap().starts_with("SHA256:"), "{login}");
    let exec = one(lab.agent().wait_for_records("ssh.exec_end", 1), "ssh.exec_end");
    assert_eq!(exec["detail"]["command"], "echo hello; id -un; exit 3");
    assert_eq!(exec["detail"]["exit"]["status"], 3);

    // Passwords on an exec command line reach no record: not the command,
    // not the ssh client's own command line.
    let secret = "Pa55-on-the-line";
    let command = format!("echo --password {secret} | wc -c; MYSQL_PWD={secret} true");
    let out = ssh(&lab, &known, "alice", &deploy, &[&command]);
    assert!(out.success(), "{out:?}");
    lab.agent().wait_for_records("ssh.exec_end", 2);
    let log = std::fs::read_to_string(lab.agent().config.audit_dir.join("audit.jsonl")).unwrap();
    assert!(!log.contains(secret), "the password reached the audit log");
    let execs = lab.agent().records_of("ssh.exec");
    assert!(
        execs.iter().any(|r| r["detail"]["command"] == "echo --password *** | wc -c; MYSQL_PWD=*** true"),
        "{execs:?}"
    );

    // The host certificate carries the dialled address and the policy's
    // names; with only the CA line known, a wrong name fails verification.
    let mut wrong = sshd::client_options(&known);
    wrong.extend([
        "-o".into(),
        "HostKeyAlias=other.lab".to_owned(),
        format!("{deploy}@{}", lab.target.v4),
        "true".into(),
    ]);
    let wrong: Vec<&str> = wrong.iter().map(String::as_str).collect();
    let out = lab.run_as("alice", "ssh", &wrong);
    assert!(!out.success(), "{out:?}");
    let mut alias = sshd::client_options(&known);
    alias.extend(["-o".into(), "HostKeyAlias=web.lab".into(), format!("{deploy}@{}", lab.target.v4), "true".into()]);
    let alias: Vec<&str> = alias.iter().map(String::as_str).collect();
    let out = lab.run_as("alice", "ssh", &alias);
    assert!(out.success(), "policy host name is in the certificate: {out:?}");
}

#[test]
fn logins_not_granted_are_refused_in_the_client() {
    if !privileged() {
        return;
    }
    let (lab, known) = lab_with_sshd("");
    let deploy = lab.user("deploy").name.clone();

    let root = ssh(&lab, &known, "alice", "root", &["id"]);
    assert_eq!(root.code, Some(1), "{root:?}");
    assert!(
        root.stderr.contains(&format!("airlock: login \"root\" is not one you may use; you may use: {deploy}")),
        "{root:?}"
    );
    let bob = ssh(&lab, &known, "bob", &deploy, &["id"]);
    assert_eq!(bob.code, Some(1), "{bob:?}");
    assert!(bob.stderr.contains("no login on this target is open to"), "{bob:?}");
    let refused = lab.agent().wait_for_records("ssh.login_refused", 2);
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert!(lab.agent().records_of("ssh.login").is_empty());
}

#[test]
fn denied_commands_never_reach_the_target() {
    if !privileged() {
        return;
    }
    let (lab, known) = lab_with_sshd("");
    let deploy = lab.user("deploy").name.clone();
    let victim = lab.dir.path().join("victim");
    fs::create_dir_all(victim.join("inside")).unwrap();
    let command = format!("rm -rf {}", victim.display());
    let out = ssh(&lab, &known, "alice", &deploy, &[&command]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("airlock: command refused: no recursive deletes on web"), "{out:?}");
    assert!(victim.join("inside").exists());
    let refused = one(lab.agent().wait_for_records("ssh.exec_refused", 1), "ssh.exec_refused");
    assert_eq!(refused["detail"]["command"], command);
}

#[test]
fn scp_and_sftp_go_through_with_their_bytes_intact() {
    if !privileged() {
        return;
    }
    let (lab, known) = lab_with_sshd("");
    let deploy = lab.user("deploy").name.clone();
    let drop_dir = lab.dir.path().join("drop");
    fs::create_dir_all(&drop_dir).unwrap();
    let status = Command::new("chown").arg(&deploy).arg(&drop_dir).status().unwrap();
    assert!(status.success());
    let source = lab.dir.path().join("payload.bin");
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    fs::write(&source, &payload).unwrap();
    set_mode(&source, 0o644);

    for (mode, name) in [(None, "scp-sftp.bin"), (Some("-O"), "scp-legacy.bin")] {
        let mut args = sshd::client_options(&known);
        args.extend(mode.map(str::to_owned));
        args.push(source.display().to_string());
        args.push(format!("{deploy}@{}:{}", lab.target.v4, drop_dir.join(name).display()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = lab.run_as("alice", "scp", &args);
        assert!(out.success(), "scp {mode:?}: {out:?}\n{}", lab.agent().log());
        assert!(fs::read(drop_dir.join(name)).unwrap() == payload, "scp {mode:?} copied the bytes");
    }

    let batch = lab.dir.path().join("sftp-batch");
    let back = lab.dir.path().join("back");
    fs::create_dir_all(&back).unwrap();
    let status = Command::new("chown").arg(&lab.user("alice").name).arg(&back).status().unwrap();
    assert!(status.success());
    fs::write(
        &batch,
        format!(
            "get {} {}\nls {}\n",
            drop_dir.join("scp-sftp.bin").display(),
            back.join("got.bin").display(),
            drop_dir.display()
        ),
    )
    .unwrap();
    set_mode(&batch, 0o644);
    let mut args = sshd::client_options(&known);
    args.extend(["-b".into(), batch.display().to_string(), format!("{deploy}@{}", lab.target.v4)]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = lab.run_as("alice", "sftp", &args);
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains("scp-legacy.bin"), "{out:?}");
    assert!(fs::read(back.join("got.bin")).unwrap() == payload);
    let subsystems = lab.agent().wait_for_records("ssh.subsystem", 2);
    assert!(subsystems.iter().all(|r| r["detail"]["name"] == "sftp"), "{subsystems:#?}");
}

#[test]
fn rsync_and_git_run_over_ssh_unmodified() {
    if !privileged() {
        return;
    }
    let (lab, known) = lab_with_sshd("");
    let deploy = lab.user("deploy").name.clone();
    let target = lab.target.v4;
    let shared = lab.dir.path().join("shared");
    fs::create_dir_all(&shared).unwrap();
    let status = Command::new("chown").arg(&deploy).arg(&shared).status().unwrap();
    assert!(status.success());
    let ssh_command = format!("ssh {}", sshd::client_options(&known).join(" "));

    // rsync -e ssh: a directory tree, then only what changed.
    let tree = lab.dir.path().join("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    fs::write(tree.join("a.txt"), "alpha\n").unwrap();
    fs::write(tree.join("sub/b.bin"), (0..200_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>()).unwrap();
    Command::new("chmod").args(["-R", "a+rX"]).arg(&tree).status().unwrap();
    let rsync = |args: &str| {
        let script = format!(
            "rsync -a {args} -e '{ssh_command}' {}/ {deploy}@{target}:{}/tree/",
            tree.display(),
            shared.display()
        );
        lab.run_as("alice", "sh", &["-c", &script])
    };
    let out = rsync("");
    assert!(out.success(), "rsync: {out:?}\n{}", lab.agent().log());
    assert_eq!(fs::read(shared.join("tree/sub/b.bin")).unwrap(), fs::read(tree.join("sub/b.bin")).unwrap());
    fs::write(tree.join("a.txt"), "alpha beta\n").unwrap();
    let again = rsync("--itemize-changes");
    assert!(again.success() && again.stdout.contains("a.txt") && !again.stdout.contains("b.bin"), "{again:?}");
    assert_eq!(fs::read_to_string(shared.join("tree/a.txt")).unwrap(), "alpha beta\n");

    // git over ssh: clone, commit, push back.
    let repo = shared.join("repo.git");
    let init = Command::new("runuser")
        .args(["-u", &deploy, "--", "git", "init", "--bare", "-q", "-b", "main"])
        .arg(&repo)
        .status()
        .unwrap();
    assert!(init.success());
    let work = lab.dir.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let status = Command::new("chown").arg(&lab.user("alice").name).arg(&work).status().unwrap();
    assert!(status.success());
    let script = format!(
        "set -e; export GIT_SSH_COMMAND='{ssh_command}'; cd {work}; \
         git clone -q {deploy}@{target}:{repo} clone; cd clone; \
         git -c user.name=alice -c user.email=alice@example.com commit -q --allow-empty -m 'through airlock'; \
         git push -q origin HEAD:main; git ls-remote origin main",
        work = work.display(),
        repo = repo.display()
    );
    let out = lab.run_as("alice", "sh", &["-c", &script]);
    assert!(out.success(), "git over ssh: {out:?}\n{}", lab.agent().log());
    assert!(out.stdout.contains("refs/heads/main"), "{out:?}");
    let execs = lab.agent().records_of("ssh.exec");
    let commands: Vec<&str> = execs.iter().filter_map(|r| r["detail"]["command"].as_str()).collect();
    assert!(commands.iter().any(|c| c.starts_with("rsync --server")), "{commands:?}");
    assert!(commands.iter().any(|c| c.starts_with("git-upload-pack")), "{commands:?}");
    assert!(commands.iter().any(|c| c.starts_with("git-receive-pack")), "{commands:?}");
}

#[test]
fn terminal_sessions_are_recorded_as_asciicast() {
    if !privileged() {
        return;
    }
    let (lab, known) = lab_with_sshd("");
    let deploy = lab.user("deploy").name.clone();
    let out =
        ssh(&lab, &known, "alice", &deploy, &["-tt", "echo recorded-$((6 * 7)); echo postgres://app:hunter2@db/x"]);
    assert!(out.success(), "{out:?}\n{}", lab.agent().log());
    assert!(out.stdout.contains("recorded-42"), "{out:?}");

    let record = one(lab.agent().wait_for_records("ssh.recording", 1), "ssh.recording");
    let path = PathBuf::from(record["detail"]["path"].as_str().unwrap());
    assert!(path.starts_with(&lab.agent().config.audit_dir), "{path:?}");
    let text = fs::read_to_string(&path).unwrap();
    use sha2_check::hex_sha256;
    assert_eq!(record["detail"]["sha256"], hex_sha256(text.as_bytes()));
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    // asciinema cat wants a terminal: script(1) gives it one.
    let played = Command::new("script")
        .args(["-q", "-e", "-c", &format!("asciinema cat {}", path.display()), "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("asciinema cat");
    assert!(played.status.success(), "{played:?}");
    let played = String::from_utf8_lossy(&played.stdout);
    assert!(played.contains("recorded-42"), "{played}");
    assert!(!played.contains("hunter2"), "secrets are masked in recordings: {played}");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
}

/// SHA-256 through coreutils, so the test checks the agent's hash independently.
mod sha2_check {
    pub fn hex_sha256(bytes: &[u8]) -> String {
        use std::io::Write as _;
        let mut child = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sha256sum");
        child.stdin.take().unwrap().write_all(bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_owned()
    }
}

fn airlock(lab: &Lab, cli: &Path, user: &str, args: &[&str]) -> CommandOutput {
    let socket = lab.agent().config.socket.display().to_string();
    let mut full: Vec<&str> = args.to_vec();
    full.extend_from_slice(&["--socket", &socket]);
    lab.run_as(user, cli.to_str().expect("utf-8 path"), &full)
}

/// Waits (bounded) for a pending request `user` can see.
fn pending_request(lab: &Lab, cli: &Path, user: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let out = airlock(lab, cli, user, &["approvals", "--json"]);
        assert!(out.success(), "{out:?}");
        let list: Vec<Value> = serde_json::from_str(&out.stdout).expect("JSON list");
        if let Some(first) = list.into_iter().next() {
            return first;
        }
        assert!(std::time::Instant::now() < deadline, "no request appeared\n{}", lab.agent().log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn access_windows_and_held_commands_follow_approvals_and_expiry_ends_the_session() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new(&["alice", "bob", "deploy"]);
    let bob = lab.user("bob").name.clone();
    let extra = format!(
        "\n[[target.ssh.command]]\npattern = \"touch *\"\naction = \"approve\"\nreason = \"files on web need a second person\"\n\n\
         [target.approvals]\nusers = [\"{bob}\"]\ntimeout_seconds = 60\nsession_access_seconds = 10\n"
    );
    let policy = policy(&lab, &extra);
    lab.start_agent(&policy);
    sshd::start(&mut lab, "deploy");
    let known = sshd::known_hosts(&lab);
    let deploy = lab.user("deploy").name.clone();
    let cli = lab.cli();

    // Refused in SSH, with the request id and how to get it approved.
    let refused = ssh(&lab, &known, "alice", &deploy, &["true"]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("needs approval: request "), "{refused:?}");
    let id: String = refused.stderr.split("request ").nth(1).unwrap().chars().take(8).collect();
    assert!(refused.stderr.contains(&format!("airlock approve {id}")), "{refused:?}");
    let approved = airlock(&lab, &cli, "bob", &["approve", &id]);
    assert!(approved.success(), "{approved:?}");

    // A held command waits for bob, then runs.
    let writable = lab.dir.path().join("deploy-home");
    fs::create_dir_all(&writable).unwrap();
    assert!(Command::new("chown").arg(&deploy).arg(&writable).status().unwrap().success());
    let marker = writable.join("approved-marker");
    let command = format!("touch {}", marker.display());
    std::thread::scope(|scope| {
        let held = scope.spawn(|| ssh(&lab, &known, "alice", &deploy, &[&command]));
        let request = pending_request(&lab, &cli, "bob");
        assert_eq!(request["statement"], command);
        let request_id = request["id"].as_str().unwrap();
        let decided = airlock(&lab, &cli, "bob", &["approve", request_id]);
        assert!(decided.success(), "{decided:?}");
        let held = held.join().unwrap();
        assert!(held.success(), "{held:?}");
        assert!(held.stderr.contains("waiting for approval of request"), "{held:?}");
    });
    assert!(marker.exists(), "the approved command ran");

    // The session still open when the access window closes is ended with the reason.
    let long = ssh(&lab, &known, "alice", &deploy, &["sleep 25"]);
    assert!(!long.success(), "{long:?}");
    assert!(long.stderr.contains(&format!("airlock: your access to \"web\" (request {id}")), "{long:?}");
    let ended = lab.agent().wait_for_records("access.ended", 1);
    assert_eq!(ended[0]["detail"]["sessions_ended"], 1, "{ended:?}");
}

#[test]
fn people_denied_access_are_told_in_ssh() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new(&["alice", "deploy"]);
    let policy = policy(&lab, "").replace(
        "[[target.access]]\naction = \"allow\"\nusers = [\"*\"]",
        "[[target.access]]\naction = \"deny\"\nusers = [\"*\"]\nreason = \"web is closed for maintenance\"",
    );
    lab.start_agent(&policy);
    sshd::start(&mut lab, "deploy");
    let known = sshd::known_hosts(&lab);
    let deploy = lab.user("deploy").name.clone();
    let out = ssh(&lab, &known, "alice", &deploy, &["true"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("airlock: access to \"web\" denied: web is closed for maintenance"), "{out:?}");
}

#[test]
fn port_forwarding_follows_policy() {
    if !privileged() {
        return;
    }
    let (lab, known) = lab_with_sshd("");
    let deploy = lab.user("deploy").name.clone();
    // ssh -W opens a direct-tcpip channel, as -L does for each connection.
    let to = format!("{}:22", lab.target.v4);
    let forward = |lab: &Lab| ssh(lab, &known, "alice", &deploy, &["-W", &to]);
    let refused = forward(&lab);
    assert!(!refused.success(), "{refused:?}");
    assert!(refused.stderr.contains("stdio forwarding failed"), "{refused:?}");
    let record = one(lab.agent().wait_for_records("ssh.port_forward", 1), "ssh.port_forward");
    assert_eq!(record["detail"]["allowed"], false);

    let policy = policy(&lab, "").replace("host_names = [", "allow_port_forwarding = true\nhost_names = [");
    lab.agent().reload(&policy);
    let forwarded = forward(&lab);
    assert!(forwarded.stdout.starts_with("SSH-2.0-OpenSSH"), "the target's own sshd answered: {forwarded:?}");
    let records = lab.agent().wait_for_records("ssh.port_forward", 2);
    assert_eq!(records[1]["detail"]["allowed"], true, "{records:#?}");
}

#[test]
fn refused_lines_typed_in_a_shell_are_dropped() {
    if !privileged() {
        return;
    }
    let (lab, known) = lab_with_sshd("");
    let deploy = lab.user("deploy").name.clone();
    let writable = lab.dir.path().join("deploy-home");
    fs::create_dir_all(writable.join("victim")).unwrap();
    assert!(Command::new("chown").arg("-R").arg(&deploy).arg(&writable).status().unwrap().success());
    let (victim, marker) = (writable.join("victim"), writable.join("typed-marker"));
    // ssh -tt: an interactive shell on a pty, fed keystrokes with pauses as a person types.
    let mut args = sshd::client_options(&known).join(" ");
    args.push_str(&format!(" -tt {deploy}@{}", lab.target.v4));
    let script = format!(
        "(sleep 1; printf 'rm -rf {victim}\\r'; sleep 1; printf 'touch {marker}\\r'; sleep 1; printf 'exit\\r') | ssh {args}",
        victim = victim.display(),
        marker = marker.display(),
    );
    let out = lab.run_as("alice", "sh", &["-c", &script]);
    assert!(out.stdout.contains("airlock: command refused: no recursive deletes on web"), "{out:?}");
    assert!(victim.exists(), "the refused line did not run: {out:?}");
    assert!(marker.exists(), "the next line ran: {out:?}");
    let refused = one(lab.agent().wait_for_records("ssh.command_line_refused", 1), "ssh.command_line_refused");
    assert_eq!(refused["detail"]["command"], format!("rm -rf {}", victim.display()));
}

#[test]
fn the_target_host_key_is_pinned_at_first_use_or_checked_against_policy_known_hosts() {
    if !privileged() {
        return;
    }
    let (lab, known) = lab_with_sshd("");
    let deploy = lab.user("deploy").name.clone();
    let v4 = lab.target.v4;
    let target_key = fs::read_to_string(lab.dir.path().join("sshd/host_ed25519.pub")).unwrap();
    let other = lab.dir.path().join("other_ed25519");
    let made = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&other).status().unwrap();
    assert!(made.success());
    let other_key = fs::read_to_string(other.with_extension("pub")).unwrap();

    // No known_hosts in policy: the first key is learned, then required.
    let out = ssh(&lab, &known, "alice", &deploy, &["echo first"]);
    assert_eq!(out.stdout, "first\n", "{out:?}");
    let pinned = lab.agent().config.path.parent().unwrap().join("state/ssh/known_hosts");
    let target_base64 = target_key.split_whitespace().nth(1).unwrap();
    assert_eq!(fs::read_to_string(&pinned).unwrap().trim(), format!("{v4} ssh-ed25519 {target_base64}"));
    let logins = lab.agent().wait_for_records("ssh.login", 1);
    assert_eq!(logins.last().unwrap()["detail"]["target_host_key_learned"], true, "{logins:?}");
    let out = ssh(&lab, &known, "alice", &deploy, &["echo again"]);
    assert_eq!(out.stdout, "again\n", "{out:?}");
    let logins = lab.agent().wait_for_records("ssh.login", 2);
    assert_eq!(logins.last().unwrap()["detail"]["target_host_key_learned"], false, "{logins:?}");
    // The target now shows another key (as a machine in the middle would).
    fs::write(&pinned, format!("{v4} {other_key}")).unwrap();
    let out = ssh(&lab, &known, "alice", &deploy, &["echo through"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("differs from the one Airlock recorded at its first connection"), "{out:?}");

    let good = lab.dir.path().join("target.known_hosts");
    fs::write(&good, format!("{v4} {target_key}")).unwrap();
    let wrong = lab.dir.path().join("wrong.known_hosts");
    fs::write(&wrong, format!("{v4} {other_key}")).unwrap();

    let with = |path: &Path| {
        policy(&lab, "").replace("host_names = [", &format!("known_hosts = \"{}\"\nhost_names = [", path.display()))
    };
    lab.agent().reload(&with(&good));
    let out = ssh(&lab, &known, "alice", &deploy, &["echo through"]);
    assert_eq!(out.stdout, "through\n", "{out:?}");

    lab.agent().reload(&with(&wrong));
    let out = ssh(&lab, &known, "alice", &deploy, &["echo through"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("the target's host key SHA256:"), "{out:?}");
    assert!(out.stderr.contains("is not in"), "{out:?}");
}

#[test]
fn openbao_ssh_engine_signs_the_session_certificate() {
    if !privileged() {
        return;
    }
    let bao_dir = tempfile::tempdir().unwrap();
    let bao = Bao::start(bao_dir.path());
    let configure: [&[&str]; 3] = [
        &["secrets", "enable", "ssh"],
        &["write", "ssh/config/ca", "generate_signing_key=true"],
        &[
            "write",
            "ssh/roles/deploy",
            "key_type=ca",
            "allow_user_certificates=true",
            "allowed_users=*",
            "ttl=5m",
            "max_ttl=1h",
        ],
    ];
    bao.configure(&configure);
    let mut lab = Lab::new(&["alice", "bob", "deploy"]);
    let token_file = lab.dir.path().join("bao-token");
    fs::write(&token_file, "root\n").unwrap();
    set_mode(&token_file, 0o600);
    let ca = format!(
        "ca = {{ openbao = {{ addr = \"https://{}\", token_file = \"{}\", role = \"deploy\", ca_file = \"{}\" }} }}\nhost_names = [",
        bao.addr,
        token_file.display(),
        bao.ca_file.display()
    );
    let policy = policy(&lab, "").replace("host_names = [", &ca);
    lab.start_agent(&policy);
    sshd::start(&mut lab, "deploy");
    // The target trusts OpenBao's CA, not Airlock's.
    let bao_ca = bao.cli(&["read", "-field=public_key", "ssh/config/ca"]).unwrap();
    fs::write(lab.dir.path().join("sshd/user-ca.pub"), bao_ca).unwrap();
    // sshd rereads TrustedUserCAKeys for every login.
    let known = sshd::known_hosts(&lab);
    let deploy = lab.user("deploy").name.clone();
    let out = ssh(&lab, &known, "alice", &deploy, &["echo signed-by-openbao"]);
    assert_eq!(out.stdout, "signed-by-openbao\n", "{out:?}\n{}", lab.agent().log());
    let login = one(lab.agent().wait_for_records("ssh.login", 1), "ssh.login");
    assert_eq!(login["detail"]["ca"], "openbao");
}

/// With an ssh-agent holding a key and `ssh -A` (ForwardAgent yes), exec
/// and terminal sessions work: agent forwarding is refused without breaking
/// the channel, and recorded.
#[test]
fn agent_forwarding_requests_do_not_break_sessions() {
    if !privileged() {
        return;
    }
    let (lab, known) = lab_with_sshd("");
    let deploy = lab.user("deploy").name.clone();
    let alice = lab.user("alice").name.clone();
    let home = lab.dir.path().join("alice-agent");
    std::fs::create_dir_all(&home).unwrap();
    airlock_vm_tests::netns::sh("chown", &[&alice, &home.display().to_string()]);
    let options = sshd::client_options(&known).join(" ");
    let target = format!("{deploy}@{}", lab.target.v4);
    let key = home.join("id");
    // The agent is killed on the way out, whatever happens.
    let script = format!(
        "ssh-keygen -q -t ed25519 -N '' -f {key} && eval \"$(ssh-agent -s)\" >/dev/null && \
         trap 'ssh-agent -k >/dev/null' EXIT && ssh-add -q {key} && \
         ssh -A {options} {target} 'echo exec-ok' && ssh -A -tt {options} {target} 'echo tty-ok'",
        key = key.display()
    );
    let out = lab.run_as("alice", "sh", &["-c", &script]);
    assert!(out.success(), "{out:?}\n{}", lab.agent().log());
    assert!(out.stdout.contains("exec-ok") && out.stdout.contains("tty-ok"), "{out:?}");
    let ends = lab.agent().wait_for_records("ssh.exec_end", 2);
    assert!(ends.iter().all(|end| end["detail"]["exit"]["status"] == 0), "{ends:?}");
    let refused = lab.agent().wait_for_records("ssh.forwarding_refused", 2);
    assert!(refused.iter().all(|r| r["detail"]["kind"] == "agent"), "{refused:?}");
}

/// Typed a key at a time, a password is echoed a key at a time: the
/// recording judges whole lines, so it never holds the password, nor a
/// private key printed in the terminal.
#[test]
fn secrets_typed_key_by_key_or_printed_stay_out_of_recordings() {
    if !privileged() {
        return;
    }
    let (lab, known) = lab_with_sshd("");
    let deploy = lab.user("deploy").name.clone();
    let key = lab.dir.path().join("printed_key");
    let made = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key).output().unwrap();
    assert!(made.status.success(), "{made:?}");
    set_mode(&key, 0o644);
    let body: Vec<String> = fs::read_to_string(&key).unwrap().lines().skip(1).take(2).map(str::to_owned).collect();
    let options = sshd::client_options(&known).join(" ");
    let typed = "echo password=hunter2-typed";
    let keys: String = typed.chars().map(|c| format!("printf '%s' '{c}'; sleep 0.02; ")).collect();
    let script = format!(
        "(sleep 1; {keys} printf '\\r'; sleep 0.5; printf 'cat {key}\\r'; sleep 0.5; printf 'exit\\r'; sleep 1) | \
         ssh -tt {options} {deploy}@{host}",
        key = key.display(),
        host = lab.target.v4
    );
    let out = lab.run_as("alice", "sh", &["-c", &script]);
    assert!(out.stdout.contains("hunter2-typed"), "the live terminal is not held: {out:?}");
    let record = one(lab.agent().wait_for_records("ssh.recording", 1), "ssh.recording");
    let text = fs::read_to_string(record["detail"]["path"].as_str().unwrap()).unwrap();
    assert!(!text.contains("hunter2"), "typed password recorded: {text}");
    for line in &body {
        assert!(!text.contains(line.as_str()), "private key recorded: {text}");
    }
    assert!(text.contains("password=***") && text.contains("private key masked by airlock"), "{text}");
}

/// A rule by command and options, after the base policy's pattern rule.
const RECURSIVE_DELETES_DENIED: &str =
    "\n[[target.ssh.command]]\ncommand = \"rm\"\noptions = [\"recursive\", \"force\"]\naction = \"deny\"\n";

/// The lab with a directory the target's login owns, holding files a
/// recursive delete would remove.
fn victim_tree(lab: &Lab, name: &str) -> PathBuf {
    let deploy = lab.user("deploy").name.clone();
    let victim = lab.dir.path().join(name);
    fs::create_dir_all(victim.join("sub")).unwrap();
    fs::write(victim.join("a.txt"), "a\n").unwrap();
    fs::write(victim.join("sub/b.txt"), "b\n").unwrap();
    assert!(Command::new("chown").arg("-R").arg(&deploy).arg(&victim).status().unwrap().success());
    victim
}

fn intact(victim: &Path) -> bool {
    victim.join("a.txt").exists() && victim.join("sub/b.txt").exists()
}

/// The issue's sixteen spellings of one recursive delete, and more, sent as
/// exec requests by real ssh: each is refused before it reaches the target,
/// whose files stay; the rule is written once, by command and options.
#[test]
fn the_command_guard_judges_commands_however_they_are_spelled() {
    if !privileged() {
        return;
    }
    let (lab, known) = lab_with_sshd(RECURSIVE_DELETES_DENIED);
    let deploy = lab.user("deploy").name.clone();
    let victim = victim_tree(&lab, "guarded");
    let v = victim.display().to_string();
    let encoded =
        Command::new("sh").args(["-c", &format!("printf '%s' 'rm -rf {v}/*' | base64 -w0")]).output().unwrap();
    let encoded = String::from_utf8(encoded.stdout).unwrap();
    let variants = [
        format!("rm -rf {v}/*"),
        format!("rm -fr {v}/*"),
        format!("rm -r -f {v}/*"),
        format!("rm --recursive --force {v}/*"),
        format!("rm  -rf  {v}/*"),
        format!("rm\t-rf\t{v}/*"),
        format!("/bin/rm -rf {v}/*"),
        format!("\\rm -rf {v}/*"),
        format!("env rm -rf {v}/*"),
        format!("sh -c 'rm -rf {v}/*'"),
        format!("true; rm -rf {v}/*"),
        format!("ls {v}\nrm -rf {v}/*"),
        format!("cd {v} && rm -rf ./*"),
        format!("find {v} -mindepth 1 -delete"),
        format!("echo {encoded} | base64 -d | sh"),
        format!("rm -r {v}/* -f"),
        format!("bash -c \"r''m --rec --fo {v}/*\""),
        format!("find {v} -mindepth 1 -maxdepth 1 -print0 | xargs -0 rm -rf"),
        format!("timeout 5 nice -n 1 env X=1 $'\\x72m' -Rf {v}/sub"),
        format!("( ( rm -rf {v}/sub ) )"),
        format!("c=rm; $c -rf {v}/*"),
        format!("sh <<'EOF'\nrm -rf {v}/*\nEOF"),
    ];
    for variant in &variants {
        let out = ssh(&lab, &known, "alice", &deploy, &[variant]);
        assert_eq!(out.code, Some(1), "{variant:?} was not refused: {out:?}");
        assert!(out.stderr.contains("airlock: command refused: "), "{variant:?}: {out:?}");
        assert!(intact(&victim), "{variant:?} deleted files: {out:?}");
    }
    let refused = lab.agent().wait_for_records("ssh.exec_refused", variants.len());
    assert_eq!(refused.len(), variants.len(), "{refused:#?}");
    let reasons: Vec<&str> = refused.iter().filter_map(|r| r["detail"]["reason"].as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("\"rm --recursive --force\"")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("runs a program read from a pipe")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("runs a program named only when it runs")), "{reasons:?}");

    // What the rules do not name runs: one file removed, a listing.
    let out = ssh(&lab, &known, "alice", &deploy, &[&format!("rm -f {v}/a.txt && ls {v}")]);
    assert!(out.success() && out.stdout.contains("sub"), "{out:?}");
    assert!(!victim.join("a.txt").exists());
}

/// Typed at a terminal, or fed to a shell without one, a refused line
/// does not run; the lines around it do.
#[test]
fn shells_are_guarded_line_by_line_with_a_terminal_or_without() {
    if !privileged() {
        return;
    }
    let (lab, known) = lab_with_sshd(RECURSIVE_DELETES_DENIED);
    let deploy = lab.user("deploy").name.clone();
    let victim = victim_tree(&lab, "typed");
    let marker = victim.join("marker");
    let options = sshd::client_options(&known).join(" ");
    let target = format!("{deploy}@{}", lab.target.v4);

    // A loop typed over three lines (the shell asks for more after `do`).
    let script = format!(
        "(sleep 1; printf 'for d in {v}/sub; do\\r'; sleep 0.5; printf 'rm -fr $d\\r'; sleep 0.5; printf 'done\\r'; \
         sleep 1; printf 'touch {m}\\r'; sleep 1; printf 'exit\\r') | ssh -tt {options} {target}",
        v = victim.display(),
        m = marker.display(),
    );
    let out = lab.run_as_within("alice", "sh", &["-c", &script], std::time::Duration::from_secs(30));
    assert!(out.stdout.contains("airlock: command refused"), "{out:?}\n{}", lab.agent().log());
    assert!(intact(&victim), "the typed loop ran: {out:?}");
    assert!(marker.exists(), "the line after it did not run: {out:?}");
    let typed = one(lab.agent().wait_for_records("ssh.command_line_refused", 1), "ssh.command_line_refused");
    assert!(typed["detail"]["command"].as_str().unwrap().contains("rm -fr $d"), "{typed}");

    // ssh -T with a script on stdin: refused at the line, and the session ends there.
    let after = victim.join("after");
    let script = format!(
        "printf 'true\\nrm -r -f {v}/*\\ntouch {a}\\n' | ssh -T {options} {target}",
        v = victim.display(),
        a = after.display(),
    );
    let out = lab.run_as_within("alice", "sh", &["-c", &script], std::time::Duration::from_secs(30));
    assert!(out.stderr.contains("airlock: command refused"), "{out:?}");
    assert!(intact(&victim), "the script's line ran: {out:?}");
    assert!(!after.exists(), "lines after a refused one ran: {out:?}");
    lab.agent().wait_for_records("ssh.command_line_refused", 2);

    // `ssh host sh < script`: a shell reading its program from the client is not judged, so refused.
    let script = format!("printf 'rm -rf {v}/*\\n' | ssh {options} {target} sh", v = victim.display());
    let out = lab.run_as_within("alice", "sh", &["-c", &script], std::time::Duration::from_secs(30));
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("runs a program read from a pipe"), "{out:?}");
    assert!(intact(&victim));
}

/// A target with an allowlist runs only what it lists, by exec request;
/// an interactive shell is not offered.
#[test]
fn an_allowlist_target_runs_only_listed_commands() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new(&["alice", "bob", "deploy"]);
    let listed = "host_names = [\"web.lab\"]\nonly = [\"ls\", \"cat\", \"git status\"]\notherwise = \"deny\"";
    let policy = policy(&lab, "").replace("host_names = [\"web.lab\"]", listed);
    lab.start_agent(&policy);
    sshd::start(&mut lab, "deploy");
    let known = sshd::known_hosts(&lab);
    let deploy = lab.user("deploy").name.clone();
    let victim = victim_tree(&lab, "listed");
    let v = victim.display();

    let out = ssh(&lab, &known, "alice", &deploy, &[&format!("ls {v} | cat")]);
    assert!(out.success() && out.stdout.contains("a.txt"), "{out:?}\n{}", lab.agent().log());
    for refused in [format!("touch {v}/new"), format!("ls {v}; touch {v}/new"), format!("cat {v}/a.txt > {v}/copy; id")]
    {
        let out = ssh(&lab, &known, "alice", &deploy, &[&refused]);
        assert_eq!(out.code, Some(1), "{refused:?}: {out:?}");
        assert!(out.stderr.contains("is not among the commands this target runs"), "{refused:?}: {out:?}");
    }
    assert!(!victim.join("new").exists());
    let out = ssh(&lab, &known, "alice", &deploy, &["-tt"]);
    assert!(
        out.stdout.contains("offers no interactive shell") || out.stderr.contains("offers no interactive shell"),
        "{out:?}"
    );
    one(lab.agent().wait_for_records("ssh.shell_refused", 1), "ssh.shell_refused");
}

/// With typed input recorded, a password typed at a prompt that does not
/// echo (`stty -echo`, as sudo and ssh prompts do) is still left out: only
/// lines the terminal echoed are recorded.
#[test]
fn recorded_input_leaves_out_what_the_terminal_did_not_echo() {
    if !privileged() {
        return;
    }
    let mut lab = Lab::new(&["alice", "bob", "deploy"]);
    let policy =
        policy(&lab, "").replace("host_names = [\"web.lab\"]", "host_names = [\"web.lab\"]\nrecord_input = true");
    lab.start_agent(&policy);
    sshd::start(&mut lab, "deploy");
    let known = sshd::known_hosts(&lab);
    let deploy = lab.user("deploy").name.clone();
    let options = sshd::client_options(&known).join(" ");
    let type_keys =
        |text: &str| -> String { text.chars().map(|c| format!("printf '%s' '{c}'; sleep 0.02; ")).collect() };
    let script = format!(
        "(sleep 1; {prompt} printf '\\r'; sleep 0.5; {secret} printf '\\r'; sleep 0.5; {shown} printf '\\r'; sleep 0.5; \
         printf 'exit\\r'; sleep 1) | ssh -tt {options} {deploy}@{host}",
        prompt = type_keys("stty -echo; read pw; stty echo; echo got-${#pw}"),
        secret = type_keys("NotEchoed-42"),
        shown = type_keys("echo visible-line"),
        host = lab.target.v4
    );
    let out = lab.run_as("alice", "sh", &["-c", &script]);
    assert!(out.stdout.contains("got-12") && out.stdout.contains("visible-line"), "{out:?}");
    let record = one(lab.agent().wait_for_records("ssh.recording", 1), "ssh.recording");
    let text = fs::read_to_string(record["detail"]["path"].as_str().unwrap()).unwrap();
    assert!(!text.contains("NotEchoed"), "an unechoed password was recorded: {text}");
    let inputs: Vec<String> = text
        .lines()
        .skip(1)
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e[1] == "i")
        .filter_map(|e| e[2].as_str().map(str::to_owned))
        .collect();
    assert!(inputs.iter().any(|i| i.contains("echo visible-line")), "{inputs:?}");
    assert!(inputs.iter().any(|i| i.contains("stty -echo; read pw")), "{inputs:?}");
}

#[test]
fn the_user_ca_rotates_with_its_next_key_published_before_it_signs() {
    if !privileged() {
        return;
    }
    let (lab, known) = lab_with_sshd("");
    let deploy = lab.user("deploy").name.clone();
    let airlock = |args: &[&str]| {
        let out = std::process::Command::new(airlock_vm_tests::agent::airlock_bin())
            .args(args)
            .args(["--config", &lab.agent().config.path.display().to_string()])
            .output()
            .expect("airlock");
        assert!(out.status.success(), "airlock {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let trusted = lab.dir.path().join("sshd/user-ca.pub");
    let old = airlock(&["ssh-ca", "--user"]);
    assert_eq!(old.lines().count(), 1, "{old}");

    let rotated = airlock(&["rotate", "web"]);
    assert!(rotated.contains("rotated the SSH user CA (shared by every SSH target) of web"), "{rotated}");
    assert!(rotated.contains("keeps working until"), "{rotated}");
    // The next key is published beside the old one, which still signs; IT
    // installs both on the targets.
    let both = airlock(&["ssh-ca", "--user"]);
    assert_eq!(both.lines().count(), 2, "{both}");
    assert_eq!(both.lines().next(), old.lines().next());
    std::fs::write(&trusted, &both).unwrap();
    let out = ssh(&lab, &known, "alice", &deploy, &["echo during"]);
    assert_eq!(out.stdout, "during\n", "{out:?}");
    let status = lab.agent().status();
    let row = status["rotations"].as_array().unwrap().iter().find(|r| r["target"] == "web").unwrap().clone();
    assert_eq!(row["step"], "set", "{row:#}");
    assert!(row["retire_at"].is_null() || row["retire_at"].is_string());

    // At once: the next key signs, the old one is no longer published.
    airlock(&["rotate", "web", "--now"]);
    let new = airlock(&["ssh-ca", "--user"]);
    assert_eq!(new.lines().collect::<Vec<_>>(), [both.lines().nth(1).unwrap()]);
    let out = ssh(&lab, &known, "alice", &deploy, &["echo after"]);
    assert_eq!(out.stdout, "after\n", "a target trusting both takes the new key's certificates: {out:?}");
    // A target that trusts only the old key refuses: the old key signs no more.
    std::fs::write(&trusted, &old).unwrap();
    let out = ssh(&lab, &known, "alice", &deploy, &["echo stale"]);
    assert!(!out.success() && out.stdout.is_empty(), "{out:?}");
    let kinds: Vec<String> = lab
        .agent()
        .audit_records()
        .into_iter()
        .filter_map(|r| r["kind"].as_str().filter(|k| k.starts_with("credential.rotation.")).map(str::to_owned))
        .collect();
    assert_eq!(
        kinds,
        ["credential.rotation.published", "credential.rotation.published", "credential.rotation.switched"]
    );
    // No private key material anywhere in the record.
    let audit = std::fs::read_to_string(lab.agent().config.audit_dir.join("audit.jsonl")).unwrap();
    assert!(!audit.contains("PRIVATE KEY"));
}
