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

use std::{borrow::Cow, net::IpAddr};

/// The hosts a session's requests may name.
#[derive(Debug, Clone)]
pub(super) struct AllowedHosts {
    /// The site's name, with no trailing dot; `None` where only the
    /// address may be named (a client that dialled an IP address with no
    /// name configured), or where any name may be (see `any_name`).
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
        let name = name.map(|n| n.strip_suffix('.').unwrap_or(n).to_owned());
        let name_address = name.as_deref().and_then(|n| n.parse().ok());
        Self { name, name_address, others: Vec::new(), address, any_name: false }
    }

    /// These hosts, and `others`, names the operator gave the same site.
    pub(super) fn with_other_names(mut self, others: &[String]) -> Self {
        self.others = others.iter().map(|n| n.strip_suffix('.').unwrap_or(n).to_ascii_lowercase()).collect();
        self
    }

    /// For a plain-HTTP target that names no site: every host.
    pub(super) fn any(address: IpAddr) -> Self {
        Self { name: None, name_address: None, others: Vec::new(), address, any_name: true }
    }

    /// Whether a request naming `authority` (`host[:port]`) may go on.
    /// The port is not compared: servers choose a site by name, and the
    /// connection's port is the one the client dialled whatever it wrote.
    pub(super) fn allow(&self, authority: &str) -> bool {
        if self.any_name {
            return true;
        }
        // Userinfo (`api.internal:x@admin.internal`) would hide the host
        // hyper sends from the one read here; the host is read as hyper
        // reads it, and what it cannot parse goes nowhere.
        if authority.contains('@') {
            return false;
        }
        let Ok(parsed) = authority.parse::<hyper::http::uri::Authority>() else { return false };
        let host = parsed.host().trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return ip == self.address || Some(ip) == self.name_address;
        }
        let host = host.strip_suffix('.').unwrap_or(host);
        !host.is_empty()
            && (self.name.as_deref().is_some_and(|name| name.eq_ignore_ascii_case(host))
                || self.others.iter().any(|other| other.eq_ignore_ascii_case(host)))
    }

    /// The authority the target is sent for a request that named
    /// `authority` (one [`Self::allow`] let through): the site's name, with
    /// the port written, where the request named the target's bare address;
    /// else `authority` as written.
    pub(super) fn for_target<'a>(&self, authority: &'a str) -> Cow<'a, str> {
        let (Some(name), None, false) = (&self.name, self.name_address, self.any_name) else {
            return Cow::Borrowed(authority);
        };
        let Ok(parsed) = authority.parse::<hyper::http::uri::Authority>() else { return Cow::Borrowed(authority) };
        let host = parsed.host().trim_start_matches('[').trim_end_matches(']');
        if host.parse::<IpAddr>().ok() != Some(self.address) {
            return Cow::Borrowed(authority);
        }
        match parsed.port_u16() {
            Some(port) => Cow::Owned(format!("{name}:{port}")),
            None => Cow::Owned(name.clone()),
        }
    }

    /// What requests may name, for the refusal's text.
    pub(super) fn describe(&self) -> String {
        let mut names: Vec<String> = match (&self.name, self.name_address) {
            (Some(name), None) => vec![name.to_ascii_lowercase()],
            _ => Vec::new(),
        };
        names.extend(self.others.iter().cloned());
        match names.is_empty() {
            true => self.address.to_string(),
            false => format!("{} (or {})", names.join(", "), self.address),
        }
    }
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
        for named in
            ["api.internal", "API.INTERNAL:443", "api.internal.", "api.internal:8443", "10.1.2.3", "10.1.2.3:443"]
        {
            assert!(hosts.allow(named), "{named}");
        }
        for named in [
            "admin.internal",
            "api.internal.evil",
            "10.1.2.4",
            "",
            ":443",
            "[::1]:443",
            "api.internal@x",
            "api.internal:x@admin.internal",
            "10.1.2.3:x@admin.internal",
            "api.internal/x",
            "api.internal admin",
        ] {
            assert!(!hosts.allow(named), "{named}");
        }
        assert_eq!(hosts.describe(), "api.internal (or 10.1.2.3)");
    }

    #[test]
    fn other_names_of_the_site_may_be_named_and_go_as_written() {
        let hosts = AllowedHosts::site(Some("k8s.internal"), v4()).with_other_names(&["K8S-LB.corp.".into()]);
        assert!(hosts.allow("k8s-lb.corp:6443") && hosts.allow("K8S-LB.CORP") && hosts.allow("k8s.internal"));
        assert!(!hosts.allow("k8s-lb.corp.evil") && !hosts.allow("corp"));
        assert_eq!(hosts.for_target("k8s-lb.corp:6443"), "k8s-lb.corp:6443");
        assert_eq!(hosts.describe(), "k8s.internal, k8s-lb.corp (or 10.1.2.3)");
    }

    #[test]
    fn a_request_for_the_bare_address_goes_to_the_target_naming_the_site() {
        let hosts = AllowedHosts::site(Some("API.internal."), v4());
        assert_eq!(hosts.for_target("10.1.2.3"), "API.internal");
        assert_eq!(hosts.for_target("10.1.2.3:8443"), "API.internal:8443");
        assert_eq!(hosts.for_target("api.internal:443"), "api.internal:443");
        let v6 = AllowedHosts::site(Some("api.internal"), "fd00::1".parse().unwrap());
        assert_eq!(v6.for_target("[fd00:0::1]:443"), "api.internal:443");
        // Where no name was set, or the name is itself an address, what
        // the request wrote is what the target gets.
        assert_eq!(AllowedHosts::site(None, v4()).for_target("10.1.2.3:443"), "10.1.2.3:443");
        assert_eq!(AllowedHosts::site(Some("10.9.9.9"), v4()).for_target("10.1.2.3"), "10.1.2.3");
        assert_eq!(AllowedHosts::any(v4()).for_target("10.1.2.3"), "10.1.2.3");
    }

    #[test]
    fn a_client_that_dialled_an_address_may_name_only_it() {
        let hosts = AllowedHosts::site(None, v4());
        assert!(hosts.allow("10.1.2.3:6443"));
        assert!(!hosts.allow("kubernetes.default.svc"));
        assert_eq!(hosts.describe(), "10.1.2.3");
        let v6 = AllowedHosts::site(None, "fd00::1".parse().unwrap());
        assert!(v6.allow("[fd00::1]:443") && v6.allow("[FD00:0::1]"));
        assert!(!v6.allow("[fd00::2]:443") && !v6.allow("[fd00::1"));
        assert!(!v6.allow("[fd00::1]:x@admin.internal"));
    }

    #[test]
    fn a_site_named_by_address_is_matched_as_an_address() {
        let hosts = AllowedHosts::site(Some("10.9.9.9"), v4());
        assert!(hosts.allow("10.9.9.9:443") && hosts.allow("10.1.2.3"));
        assert!(!hosts.allow("example.internal"));
    }

    #[test]
    fn a_plain_http_target_with_no_site_lets_every_host_through() {
        assert!(AllowedHosts::any(v4()).allow("whatever.internal:80"));
    }
}
