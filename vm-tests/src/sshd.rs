//! A real OpenSSH server on the lab target that trusts Airlock's user CA,
//! and the client options that make `ssh` trust Airlock's host CA.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::{Lab, agent::airlock_bin, set_mode};

/// Starts sshd on the lab target's IPv4 address, port 22, trusting the
/// running agent's user CA; `login` (a lab user) is made able to log in.
pub fn start(lab: &mut Lab, login: &str) {
    let dir = lab.dir.path().join("sshd");
    fs::create_dir_all(&dir).expect("mkdir sshd");
    fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
    let host_key = dir.join("host_ed25519");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&host_key)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    fs::copy(user_ca(lab).with_extension("pub"), dir.join("user-ca.pub")).expect("the agent made its user CA");
    let config = dir.join("sshd_config");
    fs::write(
        &config,
        format!(
            "ListenAddress {v4}\nPort 22\nHostKey {key}\nTrustedUserCAKeys {ca}\nAuthorizedKeysFile none\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPidFile none\nStrictModes no\n\
             Subsystem sftp internal-sftp\nAllowTcpForwarding yes\nLogLevel VERBOSE\nMaxStartups 100\n",
            v4 = lab.target.v4,
            key = host_key.display(),
            ca = dir.join("user-ca.pub").display(),
        ),
    )
    .expect("write sshd_config");
    // useradd leaves the password locked ("!"), which sshd without PAM
    // takes for a locked account; "*" is no password, not locked.
    let name = lab.user(login).name.clone();
    let status = Command::new("usermod").args(["-p", "*", &name]).status().expect("usermod");
    assert!(status.success());
    let (config, log) = (config.display().to_string(), dir.join("sshd.log").display().to_string());
    lab.target.spawn("/usr/sbin/sshd", &["-D", "-E", &log, "-f", &config]);
    lab.target.wait_for_port(lab.target.v4.into(), 22);
}

/// The agent's user CA private key (root-only), for tests that sign a
/// certificate of their own to reach the target directly.
pub fn user_ca(lab: &Lab) -> PathBuf {
    lab.agent().config.path.parent().expect("lab dir").join("state/ssh/user-ca")
}

/// A known_hosts file holding the line `airlock ssh-ca` prints.
pub fn known_hosts(lab: &Lab) -> PathBuf {
    let out = Command::new(airlock_bin())
        .args(["ssh-ca", "--config"])
        .arg(&lab.agent().config.path)
        .output()
        .expect("airlock ssh-ca");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8(out.stdout).expect("utf-8");
    assert!(line.starts_with("@cert-authority * ssh-ed25519 "), "{line}");
    let path = lab.dir.path().join("known_hosts");
    fs::write(&path, line).expect("write known_hosts");
    set_mode(&path, 0o644);
    path
}

/// Options for unmodified OpenSSH clients: no prompts, host certificates
/// checked against `known_hosts` only.
pub fn client_options(known_hosts: &Path) -> Vec<String> {
    [
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        &format!("UserKnownHostsFile={}", known_hosts.display()),
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
