//! `airlock ca --install` / `--uninstall`: the host CA in the system's trust
//! store, so clients that read it (curl, OpenSSL, Python, Go, rustls with
//! native roots) trust the leaves Airlock shows without flags.
//!
//! Debian and Ubuntu keep local CAs in `/usr/local/share/ca-certificates`
//! (`update-ca-certificates`); Fedora and RHEL in
//! `/etc/pki/ca-trust/source/anchors` (`update-ca-trust extract`). macOS and
//! Windows are out of scope: Airlock runs on Linux hosts. Clients that pin
//! their own CA (kubectl's kubeconfig, `psql sslrootcert=`) are configured
//! apart.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

/// The CA's file name in the trust store.
const FILE_NAME: &str = "airlock-host-ca.crt";

/// A trust-store convention: where local CAs go, and the command that
/// rebuilds the bundle from them.
struct Store {
    anchors: &'static str,
    update: &'static [&'static str],
}

const STORES: [Store; 2] = [
    Store { anchors: "/usr/local/share/ca-certificates", update: &["update-ca-certificates"] },
    Store { anchors: "/etc/pki/ca-trust/source/anchors", update: &["update-ca-trust", "extract"] },
];

/// The store of this system: the first whose update command exists.
fn store() -> anyhow::Result<&'static Store> {
    STORES
        .iter()
        .find(|store| which(store.update[0]))
        .context("no system trust store found (update-ca-certificates or update-ca-trust): install ca-certificates")
}

fn which(program: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().any(|dir| Path::new(dir).join(program).exists())
}

fn update(store: &Store) -> anyhow::Result<()> {
    let status = Command::new(store.update[0])
        .args(&store.update[1..])
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {}", store.update[0]))?;
    if !status.success() {
        bail!("{} failed ({status})", store.update.join(" "));
    }
    Ok(())
}

/// Puts the CA certificate `pem` into the system trust store.
pub fn install(pem: &str) -> anyhow::Result<()> {
    if !pem.starts_with("-----BEGIN CERTIFICATE-----") {
        bail!("the host CA file does not hold a PEM certificate");
    }
    let store = store()?;
    let path = Path::new(store.anchors).join(FILE_NAME);
    std::fs::create_dir_all(store.anchors).with_context(|| format!("creating {}", store.anchors))?;
    std::fs::write(&path, pem).with_context(|| format!("writing {} (run as root)", path.display()))?;
    update(store)?;
    eprintln!("installed {}; clients using the system trust store now trust Airlock's host CA", path.display());
    Ok(())
}

/// Takes the CA out of the system trust store.
pub fn uninstall() -> anyhow::Result<()> {
    let store = store()?;
    let path = Path::new(store.anchors).join(FILE_NAME);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("{} was not installed", path.display());
            return Ok(());
        }
        Err(error) => return Err(error).with_context(|| format!("removing {} (run as root)", path.display())),
    }
    update(store)?;
    eprintln!("removed {}", path.display());
    Ok(())
}
