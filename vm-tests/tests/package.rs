//! The Debian package on this machine: `dpkg -i`, files and owners, the
//! unit checked by `systemd-analyze verify`, the installed agent run with
//! the installed configuration and default policy intercepting a real psql,
//! an upgrade to a rebuilt package with interception attached throughout,
//! and `dpkg --purge` leaving no pinned object, no state, and the audit log.
//!
//! It really installs: a guard purges the package, and removes the group
//! and directories the package made, even when the test fails. The
//! installed configuration is edited (as an administrator would) so the
//! agent attaches at the lab's cgroup, not the whole machine's, and pins in
//! the lab's bpffs directory.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use airlock_vm_tests::{Agent, AgentConfig, Lab, agent::airlock_bin, privileged};

const PACKAGE: &str = "airlock";
const INSTALLED_BIN: &str = "/usr/bin/airlock";
const CONFIG: &str = "/etc/airlock/airlock.toml";
const UNIT: &str = "/usr/lib/systemd/system/airlock.service";
const STATE_DIR: &str = "/var/lib/airlock";
const LOG_DIR: &str = "/var/log/airlock";
const AUDIT_DIR: &str = "/var/log/airlock/audit";
const AUDIT_GROUP: &str = "airlock-audit";
/// Every version this test builds carries it: a package left installed by
/// a killed run is recognised (and purged), a real installation is not.
const TEST_VERSION_MARK: &str = "~vmtest";

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("running {program}: {e}"))
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The installed version of the package, if it is installed.
fn installed_version() -> Option<String> {
    let out = run("dpkg-query", &["-W", "-f=${Status} ${Version}", PACKAGE]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.strip_prefix("install ok installed ").map(str::to_owned)
}

fn group_exists(name: &str) -> bool {
    run("getent", &["group", name]).status.success()
}

fn gid_of(group: &str) -> u32 {
    let line = run_ok("getent", &["group", group]);
    line.split(':').nth(2).and_then(|gid| gid.trim().parse().ok()).unwrap_or_else(|| panic!("getent: {line}"))
}

/// Mode (permission bits), owner uid and gid of `path`.
fn mode_owner(path: &str) -> (u32, u32, u32) {
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("stat {path}: {e}"));
    (meta.mode() & 0o7777, meta.uid(), meta.gid())
}

/// Purges the package (and the audit log: what it recorded is the test's)
/// and removes what the package made that was not there before, whatever
/// the test's outcome.
struct Installation {
    group_existed: bool,
    /// Where a state directory that was there before (other tests' CLI
    /// runs use the default one) waits while the package owns the path.
    state_dir_backup: Option<PathBuf>,
}

impl Installation {
    /// Checks that the machine holds no Airlock installation of its own
    /// (one left by a killed run of this test is purged).
    fn prepare() -> Self {
        if let Some(version) = installed_version() {
            assert!(
                version.contains(TEST_VERSION_MARK),
                "airlock {version} is installed on this machine; this test would replace it"
            );
            purge_quietly();
        }
        assert!(!Path::new(AUDIT_DIR).exists(), "{AUDIT_DIR} holds an audit log; this test would take it over");
        let state_dir_backup = Path::new(STATE_DIR).exists().then(|| {
            let backup = PathBuf::from(format!("{STATE_DIR}.vmtest-{}", std::process::id()));
            fs::rename(STATE_DIR, &backup).unwrap_or_else(|e| panic!("moving {STATE_DIR} aside: {e}"));
            backup
        });
        Self { group_existed: group_exists(AUDIT_GROUP), state_dir_backup }
    }
}

fn purge_quietly() {
    let _ = Command::new("dpkg")
        .args(["--purge", PACKAGE])
        .env("AIRLOCK_PURGE_AUDIT_LOG", "yes")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Drop for Installation {
    fn drop(&mut self) {
        if installed_version().is_some() || Path::new(CONFIG).exists() {
            purge_quietly();
        }
        let _ = fs::remove_dir_all(LOG_DIR);
        if !self.group_existed && group_exists(AUDIT_GROUP) {
            let _ = run("groupdel", &[AUDIT_GROUP]);
        }
        if let Some(backup) = &self.state_dir_backup {
            let _ = fs::remove_dir_all(STATE_DIR);
            let _ = fs::rename(backup, STATE_DIR);
        }
    }
}

/// Builds a .deb of the agent binary under test (its dev-profile build)
/// with `cargo xtask package --debug --no-build`, run from the xtask binary
/// beside it; lintian checks it unless `lintian` is false.
fn build_package(out_dir: &Path, version: &str, lintian: bool) -> PathBuf {
    let xtask = airlock_bin().with_file_name("xtask");
    assert!(
        xtask.is_file(),
        "{} is not built (cargo xtask test builds it; else: cargo build -p xtask)",
        xtask.display()
    );
    let mut args = vec!["package", "--debug", "--no-build", "--deb-version", version, "--output"];
    let out_dir_text = out_dir.display().to_string();
    args.push(&out_dir_text);
    if !lintian {
        args.push("--no-lintian");
    }
    let out = Command::new(&xtask).args(&args).stdin(Stdio::null()).output().expect("run xtask package");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "xtask package {version} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = out_dir.join(format!("{PACKAGE}_{version}_amd64.deb"));
    assert!(deb.is_file(), "no {} after:\n{stdout}", deb.display());
    deb
}

/// The crate's version, as the binary under test reports it (`airlock 0.1.0`).
fn crate_version() -> String {
    let out = run_ok(&airlock_bin().display().to_string(), &["--version"]);
    out.split_whitespace().nth(1).expect("airlock --version names a version").to_owned()
}

/// Edits the installed configuration as an administrator would: attach at
/// the lab's cgroup (not the whole machine), the agent in the lab's agent
/// cgroup, pins in the lab's bpffs directory, the lab's listener port.
/// State, audit log and control socket stay where the package puts them.
fn point_installed_config_at(lab: &Lab, pin_dir: &Path, listener_port: u16) {
    let shipped = fs::read_to_string(CONFIG).expect("read the installed config");
    let mut edited = String::new();
    for line in shipped.lines() {
        if line.starts_with("bpffs_dir = ") {
            edited.push_str(&format!("bpffs_dir = \"{}\"\n", pin_dir.display()));
            edited.push_str(&format!("cgroup = \"{}\"\n", lab.cgroups.root.display()));
            edited.push_str(&format!("agent_cgroup = \"{}\"\n", lab.cgroups.agent.display()));
        } else if line.starts_with("port = ") {
            edited.push_str(&format!("port = {listener_port}\n"));
        } else {
            edited.push_str(line);
            edited.push('\n');
        }
    }
    assert_ne!(edited, shipped, "the shipped config has no bpffs_dir or port line to edit");
    fs::write(CONFIG, edited).expect("edit the installed config");
}

/// psql as the lab's user to the target's PostgreSQL, through whatever the
/// programs do to it.
fn psql(lab: &Lab, sql: &str) -> airlock_vm_tests::CommandOutput {
    let v4 = lab.target.v4.to_string();
    lab.run_as_within(
        "alice",
        "psql",
        &["-h", &v4, "-U", "postgres", "-d", "postgres", "-At", "-c", sql],
        Duration::from_secs(20),
    )
}

fn pins(pin_dir: &Path) -> Vec<PathBuf> {
    let mut pins: Vec<PathBuf> = ["links", "maps"]
        .iter()
        .flat_map(|sub| fs::read_dir(pin_dir.join(sub)).into_iter().flatten().flatten().map(|e| e.path()))
        .collect();
    pins.sort();
    pins
}

/// `connection.open` records of the postgres target (the packaged default
/// policy's) from the psql run with `pid`, waiting (bounded) for one.
fn wait_for_open_of(agent: &Agent, pid: u32) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(open) = agent.records_of("connection.open").into_iter().find(|r| r["process"]["pid"] == pid) {
            return open;
        }
        assert!(Instant::now() < deadline, "no connection.open of pid {pid}:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_package_installs_intercepts_upgrades_attached_and_purges_clean() {
    if !privileged() {
        return;
    }
    let installation = Installation::prepare();
    let mut lab = Lab::new(&["alice"]);
    let pg_dir = lab.dir.path().join("pg");
    lab.target.start_postgres(&pg_dir);

    // Two packages of the binary under test: the first checked by lintian,
    // the second a rebuild with a higher version to upgrade to.
    let version = crate_version();
    let first_version = format!("{version}-1{TEST_VERSION_MARK}1");
    let second_version = format!("{version}-1{TEST_VERSION_MARK}2");
    let debs = lab.dir.path().join("debs");
    let first = build_package(&debs, &first_version, true);
    let second = build_package(&debs, &second_version, false);

    // Install. PID 1 is not systemd here: postinst must neither fail nor
    // start anything.
    run_ok("dpkg", &["-i", &first.display().to_string()]);
    assert_eq!(installed_version().as_deref(), Some(first_version.as_str()));

    assert_eq!(mode_owner(INSTALLED_BIN), (0o755, 0, 0));
    assert_eq!(mode_owner("/usr/bin/airlock-job"), (0o755, 0, 0));
    assert_eq!(mode_owner(CONFIG), (0o644, 0, 0));
    assert_eq!(mode_owner("/etc/airlock/policies/default.toml"), (0o644, 0, 0));
    assert_eq!(mode_owner(UNIT), (0o644, 0, 0));
    let conffiles = run_ok("dpkg-query", &["-W", "-f=${Conffiles}", PACKAGE]);
    for conffile in [CONFIG, "/etc/airlock/policies/default.toml"] {
        assert!(
            conffiles.lines().any(|l| l.trim_start().starts_with(conffile)),
            "{conffile} not a conffile: {conffiles}"
        );
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace");
    assert_eq!(fs::read(CONFIG).unwrap(), fs::read(workspace.join("config/airlock.toml")).unwrap());
    assert_eq!(
        fs::read("/etc/airlock/policies/default.toml").unwrap(),
        fs::read(workspace.join("policies/default.toml")).unwrap()
    );
    assert!(group_exists(AUDIT_GROUP), "postinst did not create {AUDIT_GROUP}");
    let audit_gid = gid_of(AUDIT_GROUP);
    assert!(audit_gid < 1000, "{AUDIT_GROUP} is not a system group (gid {audit_gid})");
    assert_eq!(mode_owner(STATE_DIR), (0o700, 0, 0));
    assert_eq!(mode_owner(LOG_DIR), (0o711, 0, 0));
    assert_eq!(mode_owner(AUDIT_DIR), (0o750, 0, audit_gid));
    for page in ["airlock.1.gz", "airlock-agent.1.gz", "airlock-audit-verify.1.gz", "airlock-job.1.gz"] {
        let path = format!("/usr/share/man/man1/{page}");
        assert_eq!(mode_owner(&path), (0o644, 0, 0), "{path}");
    }
    let page = run_ok("man", &["-P", "cat", "-l", "/usr/share/man/man1/airlock-audit-query.1.gz"]);
    assert!(page.contains("--since"), "{page}");
    for completion in [
        "/usr/share/bash-completion/completions/airlock",
        "/usr/share/zsh/vendor-completions/_airlock",
        "/usr/share/fish/vendor_completions.d/airlock.fish",
    ] {
        let script = fs::read_to_string(completion).unwrap_or_else(|e| panic!("{completion}: {e}"));
        assert!(script.contains("approvals"), "{completion}");
    }
    let bash = run("bash", &["-n", "/usr/share/bash-completion/completions/airlock"]);
    assert!(bash.status.success(), "the bash completion does not parse: {}", String::from_utf8_lossy(&bash.stderr));
    assert!(Path::new("/usr/share/doc/airlock/examples/prod-postgres.toml").is_file());
    assert!(Path::new("/usr/share/doc/airlock/install.md").is_file());

    // The unit, as systemd would load it (the installed binary included).
    let verify = run("systemd-analyze", &["verify", UNIT]);
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify {UNIT}: {}\n{}",
        verify.status,
        String::from_utf8_lossy(&verify.stderr)
    );
    let unit = fs::read_to_string(UNIT).unwrap();
    let exec_start = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    assert_eq!(exec_start, format!("{INSTALLED_BIN} agent --config {CONFIG}"));
    run_ok(INSTALLED_BIN, &["policy", "check", "/etc/airlock/policies"]);

    // The installed agent with the installed config (edited for the lab)
    // and the packaged default policy, as the unit runs it.
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{}", lab.tag));
    let listener_port = 20_000 + (std::process::id() % 12_000) as u16;
    point_installed_config_at(&lab, &pin_dir, listener_port);
    let config = AgentConfig {
        path: PathBuf::from(CONFIG),
        audit_dir: PathBuf::from(AUDIT_DIR),
        socket: PathBuf::from("/run/airlock/airlock.sock"),
        pin_dir: pin_dir.clone(),
        listener_port,
        cgroup: lab.cgroups.root.clone(),
        log: lab.dir.path().join("agent.log"),
    };
    lab.agent = Some(Agent::start_binary(config, PathBuf::from(INSTALLED_BIN)));
    let first_pid = lab.agent().pid();
    assert_eq!(fs::read_link(format!("/proc/{first_pid}/exe")).unwrap(), Path::new(INSTALLED_BIN));

    let before = psql(&lab, "select 'through the first agent'");
    assert!(before.success(), "psql: {before:?}\n{}", lab.agent().log());
    assert_eq!(before.stdout.trim(), "through the first agent");
    let open = wait_for_open_of(lab.agent(), before.pid);
    assert_eq!(open["target"]["name"], "postgres", "the packaged default policy's target: {open}");
    assert_eq!(open["process"]["exe"], "/usr/lib/postgresql/15/bin/psql");
    // The agent applies the shipped [audit] group.
    assert_eq!(mode_owner(AUDIT_DIR), (0o750, 0, audit_gid));
    assert_eq!(mode_owner(&format!("{AUDIT_DIR}/audit.jsonl")).0, 0o640);
    let pinned = pins(&pin_dir);
    assert!(pinned.iter().any(|p| p.starts_with(pin_dir.join("links"))), "no pinned link: {pinned:?}");

    // Upgrade as under systemd with restart-after-upgrade: dpkg replaces the
    // files while the agent runs (prerm leaves it), then postinst restarts
    // it. The pins hold interception the whole time.
    run_ok("dpkg", &["-i", "--force-confold", &second.display().to_string()]);
    assert_eq!(installed_version().as_deref(), Some(second_version.as_str()));
    assert!(fs::read_to_string(CONFIG).unwrap().contains(&lab.tag), "the upgrade replaced the edited conffile");
    lab.agent.as_mut().unwrap().terminate();
    assert_eq!(pins(&pin_dir), pinned, "pins changed with no agent running");
    // No agent: the programs still redirect, so psql fails instead of
    // reaching the server directly.
    let gap = psql(&lab, "select 'direct'");
    assert!(!gap.success() && !gap.stdout.contains("direct"), "psql bypassed the stopped agent: {gap:?}");
    lab.agent.as_mut().unwrap().start_again(PathBuf::from(INSTALLED_BIN));
    let after = psql(&lab, "select 'through the upgraded agent'");
    assert!(after.success(), "psql after the upgrade: {after:?}\n{}", lab.agent().log());
    let open = wait_for_open_of(lab.agent(), after.pid);
    assert_eq!(open["target"]["name"], "postgres");
    assert_ne!(lab.agent().pid(), first_pid);
    let starts = lab.agent().records_of("agent.start");
    assert_eq!(starts.len(), 2, "{starts:#?}");

    // Purge: the agent stopped first (prerm would, under systemd), then no
    // pin, no state, no configuration; the audit log stays.
    lab.agent.as_mut().unwrap().terminate();
    let purge = run("dpkg", &["--purge", PACKAGE]);
    assert!(purge.status.success(), "dpkg --purge: {}", String::from_utf8_lossy(&purge.stderr));
    assert_eq!(installed_version(), None);
    assert!(!pin_dir.exists(), "purge left pins: {:?}", pins(&pin_dir));
    for gone in [INSTALLED_BIN, CONFIG, "/etc/airlock", STATE_DIR, UNIT, "/run/airlock"] {
        assert!(!Path::new(gone).exists(), "purge left {gone}");
    }
    assert!(Path::new(AUDIT_DIR).join("audit.jsonl").is_file(), "purge removed the audit log unasked");
    let told = String::from_utf8_lossy(&purge.stderr);
    assert!(told.contains("AIRLOCK_PURGE_AUDIT_LOG=yes"), "purge did not say how to remove the log: {told}");
    // The programs are detached: psql reaches the server directly.
    let direct = psql(&lab, "select 'direct after purge'");
    assert!(direct.success(), "psql after purge: {direct:?}");
    assert_eq!(direct.stdout.trim(), "direct after purge");
    let records = fs::read_to_string(Path::new(AUDIT_DIR).join("audit.jsonl")).unwrap();
    assert!(!records.contains("direct after purge"), "a connection after purge was recorded");

    drop(lab);
    drop(installation);
    assert!(!Path::new(LOG_DIR).exists());
}

/// Purging with AIRLOCK_PURGE_AUDIT_LOG=yes removes the audit log too; a
/// package removed (not purged) keeps its configuration.
#[test]
fn purge_removes_the_audit_log_when_asked_and_remove_keeps_the_config() {
    if !privileged() {
        return;
    }
    let installation = Installation::prepare();
    let lab = Lab::new(&[]);
    let version = format!("{}-1{TEST_VERSION_MARK}1", crate_version());
    let deb = build_package(&lab.dir.path().join("debs"), &version, false);
    run_ok("dpkg", &["-i", &deb.display().to_string()]);
    fs::write(Path::new(AUDIT_DIR).join("audit.jsonl"), "{}\n").unwrap();

    let remove = run("dpkg", &["--remove", PACKAGE]);
    assert!(remove.status.success(), "dpkg --remove: {}", String::from_utf8_lossy(&remove.stderr));
    assert!(!Path::new(INSTALLED_BIN).exists());
    assert!(Path::new(CONFIG).is_file(), "remove took the configuration");
    assert!(Path::new(STATE_DIR).join("package-paths").is_file(), "remove noted no paths for purge");

    let purge = Command::new("dpkg")
        .args(["--purge", PACKAGE])
        .env("AIRLOCK_PURGE_AUDIT_LOG", "yes")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(purge.status.success(), "dpkg --purge: {}", String::from_utf8_lossy(&purge.stderr));
    for gone in [CONFIG, STATE_DIR, LOG_DIR] {
        assert!(!Path::new(gone).exists(), "purge left {gone}");
    }
    // The group stays: files it may read can outlive the package.
    assert!(group_exists(AUDIT_GROUP));
    drop(installation);
}
