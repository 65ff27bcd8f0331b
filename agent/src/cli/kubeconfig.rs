//! `airlock kubeconfig`: a kubeconfig for the Kubernetes targets of this
//! host's policy. kubectl checks the API server's certificate against the
//! CA its kubeconfig names, not the system's, so a kubeconfig made for the
//! real cluster refuses the leaf Airlock shows. This one names the real
//! server (its address and port, or `server_name`), trusts the host CA, and
//! holds no credential: Airlock adds the one policy says. Its user has a
//! placeholder token, which Airlock removes like any client credential:
//! without one, kubectl stops to ask for a user name and password.

use std::{fmt::Write as _, net::IpAddr, path::Path};

use anyhow::{Context as _, bail};
use base64::Engine as _;

use crate::policy::{Policy, Target};

/// The kubeconfig for `only` (a target name) or every Kubernetes target.
pub fn kubeconfig(policy: &Policy, ca_pem: &str, only: Option<&str>) -> anyhow::Result<String> {
    let targets: Vec<&Target> = policy
        .targets
        .iter()
        .filter(|t| t.https.as_ref().is_some_and(|h| h.kubernetes))
        .filter(|t| only.is_none_or(|name| t.name == name))
        .collect();
    if targets.is_empty() {
        match only {
            Some(name) => bail!("the policy has no kubernetes target named {name:?}"),
            None => bail!("the policy has no protocol = \"kubernetes\" target"),
        }
    }
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let mut out = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
    for target in &targets {
        let server = server_url(target)?;
        let _ = write!(
            out,
            "- name: {name}\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n",
            name = target.name
        );
    }
    out.push_str("users:\n- name: airlock\n  user:\n    token: airlock-adds-the-credential\ncontexts:\n");
    for target in &targets {
        let _ = write!(out, "- name: {name}\n  context:\n    cluster: {name}\n    user: airlock\n", name = target.name);
    }
    let _ = writeln!(out, "current-context: {}", targets[0].name);
    Ok(out)
}

/// `https://HOST:PORT` of a target: its `server_name`, else its one address.
fn server_url(target: &Target) -> anyhow::Result<String> {
    let port = target.port;
    if let Some(name) = target.https.as_ref().and_then(|h| h.server_name.as_deref()) {
        return Ok(format!("https://{name}:{port}"));
    }
    let host = target.networks.iter().find_map(|network| {
        let single = network.prefix_len == 128;
        single.then(|| match network.addr.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4).to_string(),
            None => format!("[{}]", network.addr),
        })
    });
    match host {
        Some(host) => Ok(format!("https://{host}:{port}")),
        None => bail!(
            "target {:?} names networks, not one server: set [target.https] server_name to the name kubectl should use",
            target.name
        ),
    }
}

/// Writes `text` to `path`, readable by its owner only (it names clusters).
pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
[[target]]
name = "prod-k8s"
protocol = "kubernetes"
port = 6443
addresses = ["10.1.2.3"]

[[target]]
name = "dev-k8s"
protocol = "kubernetes"
port = 443
addresses = ["10.9.0.0/16"]
[target.https]
server_name = "api.dev.internal"

[[target]]
name = "db"
protocol = "postgres"
port = 5432
addresses = ["10.1.2.4"]
"#;

    #[test]
    fn every_kubernetes_target_gets_a_cluster_trusting_the_host_ca_and_no_credential() {
        let policy = Policy::from_sources([(Path::new("k.toml"), POLICY)]).unwrap();
        let text = kubeconfig(&policy, "-----BEGIN CERTIFICATE-----\n", None).unwrap();
        assert!(text.contains("server: https://10.1.2.3:6443\n"), "{text}");
        assert!(text.contains("server: https://api.dev.internal:443\n"), "{text}");
        assert!(text.contains("certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==\n"));
        assert!(text.contains("    token: airlock-adds-the-credential\n"), "a placeholder, no credential: {text}");
        assert!(text.ends_with("current-context: prod-k8s\n"));
        assert!(!text.contains("name: db"));
        let only = kubeconfig(&policy, "x", Some("dev-k8s")).unwrap();
        assert!(!only.contains("prod-k8s"));
        assert!(kubeconfig(&policy, "x", Some("db")).unwrap_err().to_string().contains("no kubernetes target"));
    }
}
