//! Which hosts a session's requests may name.
//!
//! One address can serve many sites, told apart by the request's `Host`
//! (HTTP/2's `:authority`), not by the TLS name: a client that asks for
//! `api.internal` in its handshake and then writes `Host: admin.internal`
//! reaches the admin site, with the credential Airlock injects for the
//! target. So a request must name the site the connection to the target
//! is for — the name its certificate was checked against — or the target's
//! address itself. Anything else is misdirected (RFC 9110 §15.5.20).
//!
//! A request that names the bare address goes to the target naming the
//! site instead: a server shared by many sites hands a request for its
//! address to its default site, which need not be the one the credential
//! is for.

use std::net::IpAddr;

/// The hosts a session's requests may name.
#[derive(Debug, Clone)]
pub(super) struct AllowedHosts {
    /// The site's name, in lower case with no trailing dot; `None` where
    /// only the address may be named (a client that dialled an IP address
    /// with no name configured), or where any name may be (see `any_name`).
    name: Option<String>,
    /// The site's name where it is an address.
    name_address: Option<IpAddr>,
    /// Other names of the same site (policy's `other_names`: a load
    /// balancer's alias), which requests may name as well; lower case, no
    /// trailing dot.
    others: Vec<String>,
    /// The target's address, which a client that dialled it may name.
    address: IpAddr,
    /// A plain-HTTP target with no `server_name`: nothing names the site
    /// but the request, so every host is let through.
    any_name: bool,
}

impl AllowedHosts {
    /// For a connection to `address` whose site is `name` (policy's
    /// `server_name`, else the name the client asked for in its handshake).
    pub(super) fn site(name: Option<&str>, address: IpAddr) -> Self {
        let name = name.map(canonical_name);
        let name_address = name.as_deref().and_then(|n| n.parse().ok());
        Self { name, name_address, others: Vec::new(), address, any_name: false }
    }

    /// These hosts and also `others`: names the operator gave the same site.
    pub(super) fn with_other_names(mut self, others: &[String]) -> Self {
        self.others = others.iter().map(|n| canonical_name(n)).collect();
        self
    }

    /// For a plain-HTTP target that names no site: every host.
    pub(super) fn any(address: IpAddr) -> Self {
        Self { name: None, name_address: None, others: Vec::new(), address, any_name: true }
    }

    /// The authority the target is sent for a request naming `authority`
    /// (`host[:port]`); `None` when it names another site. The port is not
    /// compared (servers choose a site by name, and the connection's port
    /// is the one the client dialled whatever it wrote), but kept.
    ///
    /// What goes out is written by Airlock, not copied: the site's name (or
    /// the other name matched) in lower case with no trailing dot, or the
    /// address; a request naming the bare address goes out naming the
    /// site. A server must not be handed a spelling of the name it could
    /// read as another (`[api.internal]`, `api.internal.`) and give to a
    /// catch-all site.
    pub(super) fn resolve(&self, authority: &str) -> Option<String> {
        if self.any_name {
            return Some(authority.to_owned());
        }
        // Userinfo (`api.internal:x@admin.internal`) would hide the host
        // hyper sends from the one read here; the host is read as hyper
        // reads it, and what it cannot parse goes nowhere.
        if authority.contains('@') {
            return None;
        }
        let parsed = authority.parse::<hyper::http::uri::Authority>().ok()?;
        let host = parsed.host();
        // After the host, nothing or a port that is a number.
        let port = match parsed.as_str().get(host.len()..)? {
            "" => None,
            rest => Some(rest.strip_prefix(':')?.parse::<u16>().ok()?),
        };
        let ip = match host.strip_prefix('[') {
            // Brackets hold an IPv6 address and nothing else.
            Some(inner) => Some(IpAddr::V6(inner.strip_suffix(']')?.parse().ok()?)),
            None => host.parse::<IpAddr>().ok(),
        };
        let site = match ip {
            Some(ip) if ip == self.address => match (self.name_address, &self.name) {
                (Some(named), _) => named.to_string(),
                (None, Some(name)) => name.clone(),
                (None, None) => ip.to_string(),
            },
            Some(ip) if Some(ip) == self.name_address => ip.to_string(),
            Some(_) => return None,
            None => {
                let host = host.strip_suffix('.').unwrap_or(host);
                self.name
                    .iter()
                    .chain(&self.others)
                    .find(|name| !host.is_empty() && name.eq_ignore_ascii_case(host))?
                    .clone()
            }
        };
        // An IPv6 address goes in brackets again.
        let site = if site.contains(':') { format!("[{site}]") } else { site };
        Some(match port {
            Some(port) => format!("{site}:{port}"),
            None => site,
        })
    }

    /// What requests may name, for the refusal's text.
    pub(super) fn describe(&self) -> String {
        let mut names: Vec<String> = match (&self.name, self.name_address) {
            (Some(name), None) => vec![name.clone()],
            _ => Vec::new(),
        };
        names.extend(self.others.iter().cloned());
        match names.is_empty() {
            true => self.address.to_string(),
            false => format!("{} (or {})", names.join(", "), self.address),
        }
    }
}

/// A name as it is compared and sent: lower case, no trailing dot.
fn canonical_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4() -> IpAddr {
        "10.1.2.3".parse().unwrap()
    }

    #[test]
    fn the_site_and_the_address_may_be_named_any_other_site_may_not() {
        let hosts = AllowedHosts::site(Some("API.internal."), v4());
        for (named, sent) in [
            ("api.internal", "api.internal"),
            ("API.INTERNAL:443", "api.internal:443"),
            ("api.internal.", "api.internal"),
            ("api.internal.:8443", "api.internal:8443"),
            ("10.1.2.3", "api.internal"),
            ("10.1.2.3:443", "api.internal:443"),
        ] {
            assert_eq!(hosts.resolve(named).as_deref(), Some(sent), "{named}");
        }
        for named in [
            "admin.internal",
            "api.internal.evil",
            "10.1.2.4",
            "",
            ":443",
            "[::1]:443",
            "[api.internal]",
            "[api.internal.]:443",
            "api.internal:abc",
            "api.internal:",
            "api.internal:99999",
            "api.internal@x",
            "api.internal:x@admin.internal",
            "10.1.2.3:x@admin.internal",
            "api.internal/x",
            "api.internal admin",
        ] {
            assert_eq!(hosts.resolve(named), None, "{named}");
        }
        assert_eq!(hosts.describe(), "api.internal (or 10.1.2.3)");
    }

    #[test]
    fn other_names_of_the_site_may_be_named_and_go_as_policy_writes_them() {
        let hosts = AllowedHosts::site(Some("k8s.internal"), v4()).with_other_names(&["K8S-LB.corp.".into()]);
        assert_eq!(hosts.resolve("K8S-LB.CORP.:6443").as_deref(), Some("k8s-lb.corp:6443"));
        assert_eq!(hosts.resolve("k8s.internal").as_deref(), Some("k8s.internal"));
        assert_eq!(hosts.resolve("k8s-lb.corp.evil"), None);
        assert_eq!(hosts.resolve("corp"), None);
        assert_eq!(hosts.resolve("[k8s-lb.corp]"), None);
        assert_eq!(hosts.describe(), "k8s.internal, k8s-lb.corp (or 10.1.2.3)");
    }

    #[test]
    fn a_client_that_dialled_an_address_may_name_only_it() {
        let hosts = AllowedHosts::site(None, v4());
        assert_eq!(hosts.resolve("10.1.2.3:6443").as_deref(), Some("10.1.2.3:6443"));
        assert_eq!(hosts.resolve("kubernetes.default.svc"), None);
        assert_eq!(hosts.describe(), "10.1.2.3");
        let v6 = AllowedHosts::site(None, "fd00::1".parse().unwrap());
        assert_eq!(v6.resolve("[FD00:0::1]:443").as_deref(), Some("[fd00::1]:443"));
        assert_eq!(v6.resolve("[fd00::1]").as_deref(), Some("[fd00::1]"));
        for named in ["[fd00::2]:443", "[fd00::1", "[fd00::1]:x@admin.internal", "[fd00::1%eth0]"] {
            assert_eq!(v6.resolve(named), None, "{named}");
        }
        let named_v6 = AllowedHosts::site(Some("api.internal"), "fd00::1".parse().unwrap());
        assert_eq!(named_v6.resolve("[fd00:0::1]:443").as_deref(), Some("api.internal:443"));
    }

    #[test]
    fn a_site_named_by_address_is_matched_and_sent_as_that_address() {
        let hosts = AllowedHosts::site(Some("10.9.9.9"), v4());
        assert_eq!(hosts.resolve("10.9.9.9:443").as_deref(), Some("10.9.9.9:443"));
        assert_eq!(hosts.resolve("10.1.2.3").as_deref(), Some("10.9.9.9"));
        assert_eq!(hosts.resolve("example.internal"), None);
    }

    #[test]
    fn a_plain_http_target_with_no_site_lets_every_host_through_as_written() {
        assert_eq!(AllowedHosts::any(v4()).resolve("Whatever.internal:80").as_deref(), Some("Whatever.internal:80"));
    }
}
