//! Which protected targets a found secret opens without Airlock: a
//! `.pgpass` or `PGPASSWORD` entry for a protected PostgreSQL server, a
//! kubeconfig credential for a protected Kubernetes or HTTPS server, a
//! private key on a host whose SSH targets Airlock gives certificates for.
//! Such a secret bypasses just-in-time access and should be removed.
//!
//! Host names are looked up in `/etc/hosts` only: a scan never queries DNS
//! (a sweep must not send names found in users' files anywhere).

use std::net::IpAddr;

use super::detectors::Link;
use crate::policy::{Policy, Protocol};

/// The protected targets, as the scan needs them.
#[derive(Debug, Default)]
pub struct ProtectedTargets {
    policy: Option<Policy>,
    hosts: Vec<(String, IpAddr)>,
}

impl ProtectedTargets {
    /// No policy: nothing is reported as protected.
    pub fn none() -> Self {
        Self::default()
    }

    /// The targets of `policy`, with `/etc/hosts` for names.
    pub fn new(policy: Policy) -> Self {
        let hosts = std::fs::read_to_string("/etc/hosts").map(|text| parse_hosts(&text)).unwrap_or_default();
        Self { policy: Some(policy), hosts }
    }

    /// The targets `link` reaches (names, in policy order).
    pub fn reached_by(&self, link: &Link) -> Vec<String> {
        let Some(policy) = &self.policy else { return Vec::new() };
        let mut names = Vec::new();
        match link {
            Link::None => {}
            Link::Postgres { host, port } => {
                let port = port.unwrap_or(5432);
                let any_host = host == "*" || host.is_empty();
                for target in policy.targets.iter().filter(|t| t.protocol == Protocol::Postgres && t.port == port) {
                    if any_host || self.addresses(host).iter().any(|ip| target.networks.iter().any(|n| n.contains(*ip)))
                    {
                        names.push(target.name.clone());
                    }
                }
            }
            Link::Servers(urls) => {
                for url in urls {
                    let Some((host, port)) = url_host_port(url) else { continue };
                    for ip in self.addresses(&host) {
                        if let Some(target) = policy.find_target(ip, port)
                            && matches!(target.protocol, Protocol::Https | Protocol::Http)
                            && !names.contains(&target.name)
                        {
                            names.push(target.name.clone());
                        }
                    }
                }
            }
            Link::SshKey => {
                names.extend(
                    policy
                        .targets
                        .iter()
                        .filter(|t| t.protocol == Protocol::Ssh && t.ssh.is_some())
                        .map(|t| t.name.clone()),
                );
            }
        }
        names
    }

    fn addresses(&self, host: &str) -> Vec<IpAddr> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return vec![ip];
        }
        if host.eq_ignore_ascii_case("localhost") {
            return vec![IpAddr::from([127, 0, 0, 1]), IpAddr::from(std::net::Ipv6Addr::LOCALHOST)];
        }
        self.hosts.iter().filter(|(name, _)| name.eq_ignore_ascii_case(host)).map(|(_, ip)| *ip).collect()
    }
}

/// `/etc/hosts`: address, then names; `#` comments.
fn parse_hosts(text: &str) -> Vec<(String, IpAddr)> {
    let mut hosts = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else { continue };
        hosts.extend(words.map(|name| (name.to_owned(), ip)));
    }
    hosts
}

/// `https://host:port/path` → (host, port), 443/80 by scheme.
fn url_host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let default = if scheme.eq_ignore_ascii_case("http") { 80 } else { 443 };
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        return Some((host.to_owned(), after.strip_prefix(':').map_or(Some(default), |p| p.parse().ok())?));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None => Some((authority.to_owned(), default)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_hosts_files() {
        assert_eq!(url_host_port("https://10.0.0.1:6443"), Some(("10.0.0.1".into(), 6443)));
        assert_eq!(url_host_port("https://k8s.internal/x"), Some(("k8s.internal".into(), 443)));
        assert_eq!(url_host_port("http://[::1]"), Some(("::1".into(), 80)));
        assert_eq!(url_host_port("nonsense"), None);
        let hosts = parse_hosts("127.0.0.1 localhost\n# x\n10.20.0.5 db db.internal # primary\nbad line\n");
        assert_eq!(hosts.len(), 3);
        assert_eq!(hosts[2], ("db.internal".into(), "10.20.0.5".parse().unwrap()));
    }

    #[test]
    fn links_to_policy_targets() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t.toml"),
            r#"
[[target]]
name = "orders-db"
protocol = "postgres"
port = 5432
addresses = ["10.20.0.0/24"]

[[target]]
name = "k8s"
protocol = "https"
port = 6443
addresses = ["10.30.0.1/32"]
"#,
        )
        .unwrap();
        let policy = Policy::load_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let targets = ProtectedTargets {
            policy: Some(policy),
            hosts: vec![("db.internal".into(), "10.20.0.9".parse().unwrap())],
        };
        let pg = |host: &str, port| targets.reached_by(&Link::Postgres { host: host.into(), port });
        assert_eq!(pg("10.20.0.5", Some(5432)), vec!["orders-db"]);
        assert_eq!(pg("db.internal", None), vec!["orders-db"]);
        assert_eq!(pg("*", None), vec!["orders-db"]);
        assert!(pg("10.20.0.5", Some(5433)).is_empty() && pg("10.99.0.1", None).is_empty());
        let kube = targets.reached_by(&Link::Servers(vec!["https://10.30.0.1:6443".into(), "https://1.1.1.1".into()]));
        assert_eq!(kube, vec!["k8s"]);
        assert!(targets.reached_by(&Link::SshKey).is_empty(), "no SSH targets");
        assert!(ProtectedTargets::none().reached_by(&Link::SshKey).is_empty());
    }
}
