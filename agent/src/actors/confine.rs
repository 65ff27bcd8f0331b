//! The agent's side of confinement (`confine = true`).
//!
//! A confined run's cgroup is entered in the `CONFINED` map before the
//! command is moved in; from then on the connect programs refuse its
//! connections to the host's own addresses (loopback, unspecified, every
//! interface's) unless they go to a protected target: a local sshd, a
//! container runtime's TCP port or the person's dev server would run what
//! it sends as the person. The rest is done by the run itself before it
//! becomes the command, since only a process can do it to itself: see
//! `cli::confine`.

use std::net::IpAddr;

/// The host's own addresses (every interface's), which reach local
/// services as loopback does.
pub fn host_addresses() -> Vec<IpAddr> {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    let mut addrs: Vec<IpAddr> = interfaces
        .filter_map(|interface| interface.address)
        .filter_map(|address| {
            if let Some(v4) = address.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

/// Publishes the host's addresses to the connect programs (they change:
/// DHCP, a VPN; so again at each confined run and every minute).
pub fn refresh_host_addresses(interceptor: &crate::intercept::Interceptor) {
    if let Err(error) = interceptor.set_local_addrs(&host_addresses()) {
        tracing::error!(%error, "the host's addresses were not published to the connect programs");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_addresses_include_loopback() {
        assert!(host_addresses().contains(&IpAddr::from([127, 0, 0, 1])));
    }
}
