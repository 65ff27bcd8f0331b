//! Typed access to the eBPF maps, and the encoding of their keys.

use std::{
    collections::{BTreeMap, HashSet},
    net::{IpAddr, SocketAddr},
};

use airlock_ebpf::{
    ConnectRecord, MAX_CONFINED_RUNS, MAX_EXEMPT_CGROUPS, MAX_LOCAL_ADDRS, MAX_PENDING_CONNECTIONS, MAX_TARGET_ENTRIES,
    MAX_TARGET_IDS, PORT_COUNT, PORT_LISTENER, PORT_PROTECTED, PeerKey, STAT_COUNT, Stat, TARGET_KEY_LEN, TargetValue,
    map_names, target_key_data, target_prefix_len,
};
use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, lpm_trie::Key},
};

use super::InterceptError;

/// One protected (port, network) entry as the eBPF trie holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetEntry {
    /// Destination port.
    pub port: u16,
    /// Network address, IPv6 form (IPv4 as `::ffff:a.b.c.d`).
    pub addr: [u8; 16],
    /// Prefix length in IPv6 bits (an IPv4 /24 is 120).
    pub prefix_len: u8,
    /// Which target, and where to send it.
    pub value: TargetValue,
}

impl TargetEntry {
    fn trie_key(&self) -> Key<[u8; TARGET_KEY_LEN]> {
        Key::new(target_prefix_len(u32::from(self.prefix_len)), target_key_data(self.port, &self.addr))
    }
}

/// The agent's handles on the pinned maps.
pub struct InterceptMaps {
    targets: LpmTrie<MapData, [u8; TARGET_KEY_LEN], TargetValue>,
    port_flags: Array<MapData, u8>,
    peer_records: HashMap<MapData, PeerKey, ConnectRecord>,
    exempt_cgroups: HashMap<MapData, u64, u8>,
    stats: PerCpuArray<MapData, u64>,
    target_hits: PerCpuArray<MapData, u64>,
    confined: HashMap<MapData, u64, u8>,
    confining: Array<MapData, u8>,
    local_addrs: HashMap<MapData, [u8; 16], u8>,
}

/// Counters summed over CPUs.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// TCP connects to a protected port (whatever the address).
    pub protected_port_connects: u64,
    /// Connects redirected into the agent.
    pub redirected: u64,
    /// Connects to protected targets let through because they came from the agent.
    pub exempt: u64,
    /// Connects refused because their record could not be stored.
    pub record_failed: u64,
    /// Redirected connects indexed by client address.
    pub indexed: u64,
    /// What confined runs tried outside their bounds and were refused.
    #[serde(default)]
    pub confined_refused: u64,
    /// Redirected connects per target id (ids with none are left out).
    pub per_target: BTreeMap<u32, u64>,
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> InterceptError {
    move |e| InterceptError::Map { map, message: e.to_string() }
}

impl InterceptMaps {
    /// Takes ownership of the maps out of the loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, InterceptError> {
        fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
            ebpf: &mut Ebpf,
            name: &'static str,
        ) -> Result<T, InterceptError> {
            let map = ebpf
                .take_map(name)
                .ok_or_else(|| InterceptError::Map { map: name, message: "missing from the eBPF object".into() })?;
            T::try_from(map).map_err(map_err(name))
        }
        Ok(Self {
            targets: take(ebpf, map_names::TARGETS)?,
            port_flags: take(ebpf, map_names::PORT_FLAGS)?,
            peer_records: take(ebpf, map_names::PEER_RECORDS)?,
            exempt_cgroups: take(ebpf, map_names::EXEMPT_CGROUPS)?,
            stats: take(ebpf, map_names::STATS)?,
            target_hits: take(ebpf, map_names::TARGET_HITS)?,
            confined: take(ebpf, map_names::CONFINED)?,
            confining: take(ebpf, map_names::CONFINING)?,
            local_addrs: take(ebpf, map_names::LOCAL_ADDRS)?,
        })
    }

    /// Confines what runs in cgroup `cgroup_id` (the programs look it up
    /// once `CONFINING` says there is something to look up).
    pub fn confine(&mut self, cgroup_id: u64) -> Result<(), InterceptError> {
        self.confining.set(0, 1, 0).map_err(map_err(map_names::CONFINING))?;
        self.confined.insert(cgroup_id, 1, 0).map_err(map_err(map_names::CONFINED))
    }

    /// Forgets cgroups that are gone: every confined one not in `live`.
    pub fn release_confined_except(&mut self, live: &HashSet<u64>) -> Result<(), InterceptError> {
        let err = map_err(map_names::CONFINED);
        let gone: Vec<u64> = self.confined.keys().filter_map(Result::ok).filter(|id| !live.contains(id)).collect();
        for id in gone {
            self.confined.remove(&id).map_err(&err)?;
        }
        if self.confined.keys().next().is_none() {
            self.confining.set(0, 0, 0).map_err(map_err(map_names::CONFINING))?;
        }
        Ok(())
    }

    /// Makes the host's known own addresses exactly `addrs`.
    pub fn set_local_addrs(&mut self, addrs: &[IpAddr]) -> Result<(), InterceptError> {
        let err = map_err(map_names::LOCAL_ADDRS);
        let wanted: HashSet<[u8; 16]> = addrs.iter().take(MAX_LOCAL_ADDRS as usize).map(ipv6_form).collect();
        for addr in &wanted {
            self.local_addrs.insert(addr, 1, 0).map_err(&err)?;
        }
        let stale: Vec<[u8; 16]> =
            self.local_addrs.keys().filter_map(Result::ok).filter(|addr| !wanted.contains(addr)).collect();
        for addr in stale {
            self.local_addrs.remove(&addr).map_err(&err)?;
        }
        Ok(())
    }

    /// Makes the trie and the port flags describe exactly `entries`. What
    /// is added is published flags first, then trie; what goes is removed
    /// trie first, then flags: a target protected both before and after is
    /// never briefly unprotected.
    pub fn sync_targets(&mut self, entries: &[TargetEntry]) -> Result<(), InterceptError> {
        let err = map_err(map_names::TARGETS);
        let published: Vec<(Key<[u8; TARGET_KEY_LEN]>, TargetValue)> =
            self.targets.iter().filter_map(Result::ok).collect();
        let old_flags = port_flags(published.iter().map(|(key, value)| (port_of(key), value.redirect_port)));
        let new_flags = port_flags(entries.iter().map(|e| (e.port, e.value.redirect_port)));

        for (port, flags) in &new_flags {
            self.set_port_flags(*port, flags | old_flags.get(port).copied().unwrap_or(0))?;
        }
        let wanted: HashSet<(u32, [u8; TARGET_KEY_LEN])> = entries.iter().map(|e| key_tuple(&e.trie_key())).collect();
        for entry in entries {
            self.targets.insert(&entry.trie_key(), entry.value, 0).map_err(&err)?;
        }
        for (key, _) in published.iter().filter(|(key, _)| !wanted.contains(&key_tuple(key))) {
            self.targets.remove(key).map_err(&err)?;
        }
        for port in old_flags.keys().chain(new_flags.keys()) {
            self.set_port_flags(*port, new_flags.get(port).copied().unwrap_or(0))?;
        }
        Ok(())
    }

    fn set_port_flags(&mut self, port: u16, flags: u8) -> Result<(), InterceptError> {
        self.port_flags.set(u32::from(port), flags, 0).map_err(map_err(map_names::PORT_FLAGS))
    }

    /// Makes the exempt set exactly `cgroup_ids` (a restarted agent may live
    /// in a new cgroup; the old one must not stay exempt).
    pub fn set_exempt_cgroups(&mut self, cgroup_ids: &[u64]) -> Result<(), InterceptError> {
        let err = map_err(map_names::EXEMPT_CGROUPS);
        for id in cgroup_ids {
            self.exempt_cgroups.insert(id, 1, 0).map_err(&err)?;
        }
        let stale: Vec<u64> =
            self.exempt_cgroups.keys().filter_map(Result::ok).filter(|id| !cgroup_ids.contains(id)).collect();
        for id in stale {
            self.exempt_cgroups.remove(&id).map_err(&err)?;
        }
        Ok(())
    }

    /// Takes the record of the connection whose client end is `peer`.
    pub fn take_record(&mut self, peer: SocketAddr) -> Option<ConnectRecord> {
        let key = peer_key(peer);
        let record = self.peer_records.get(&key, 0).ok()?;
        // Removal failing only means the LRU evicts it later; the record is
        // already ours.
        let _ = self.peer_records.remove(&key);
        Some(record)
    }

    /// Reads the counters.
    pub fn counters(&self) -> Result<Counters, InterceptError> {
        let sum = |array: &PerCpuArray<MapData, u64>, index: u32, name: &'static str| {
            array.get(&index, 0).map(|values| values.iter().sum::<u64>()).map_err(map_err(name))
        };
        let stat = |stat: Stat| sum(&self.stats, stat as u32, map_names::STATS);
        debug_assert_eq!(STAT_COUNT, 6);
        let mut per_target = BTreeMap::new();
        for (id, values) in self.target_hits.iter().enumerate().take(MAX_TARGET_IDS as usize) {
            let total: u64 = values.map_err(map_err(map_names::TARGET_HITS))?.iter().sum();
            if total > 0 {
                per_target.insert(id as u32, total);
            }
        }
        Ok(Counters {
            protected_port_connects: stat(Stat::ProtectedPortConnects)?,
            redirected: stat(Stat::Redirected)?,
            exempt: stat(Stat::Exempt)?,
            record_failed: stat(Stat::RecordFailed)?,
            indexed: stat(Stat::Indexed)?,
            confined_refused: stat(Stat::ConfinedRefused)?,
            per_target,
        })
    }
}

/// (name, key size, value size, max entries) of every map this build uses.
fn expected_layouts() -> [(&'static str, usize, usize, u32); 10] {
    use std::mem::size_of;
    [
        (map_names::TARGETS, size_of::<Key<[u8; TARGET_KEY_LEN]>>(), size_of::<TargetValue>(), MAX_TARGET_ENTRIES),
        (map_names::COOKIE_RECORDS, size_of::<u64>(), size_of::<ConnectRecord>(), MAX_PENDING_CONNECTIONS),
        (map_names::PEER_RECORDS, size_of::<PeerKey>(), size_of::<ConnectRecord>(), MAX_PENDING_CONNECTIONS),
        (map_names::EXEMPT_CGROUPS, size_of::<u64>(), size_of::<u8>(), MAX_EXEMPT_CGROUPS),
        (map_names::PORT_FLAGS, size_of::<u32>(), size_of::<u8>(), PORT_COUNT),
        (map_names::STATS, size_of::<u32>(), size_of::<u64>(), STAT_COUNT),
        (map_names::TARGET_HITS, size_of::<u32>(), size_of::<u64>(), MAX_TARGET_IDS),
        (map_names::CONFINED, size_of::<u64>(), size_of::<u8>(), MAX_CONFINED_RUNS),
        (map_names::CONFINING, size_of::<u32>(), size_of::<u8>(), 1),
        (map_names::LOCAL_ADDRS, size_of::<[u8; 16]>(), size_of::<u8>(), MAX_LOCAL_ADDRS),
    ]
}

/// Names of the maps pinned in `dir` whose layout differs from this build's.
pub fn incompatible_pins(dir: &std::path::Path) -> Vec<&'static str> {
    expected_layouts()
        .into_iter()
        .filter(|(name, key, value, max)| {
            let path = dir.join(name);
            path.exists()
                && !aya::maps::MapInfo::from_pin(&path).is_ok_and(|info| {
                    (info.key_size() as usize, info.value_size() as usize, info.max_entries()) == (*key, *value, *max)
                })
        })
        .map(|(name, ..)| name)
        .collect()
}

/// Port flags implied by (protected port, listener port) pairs.
fn port_flags(pairs: impl Iterator<Item = (u16, u16)>) -> std::collections::HashMap<u16, u8> {
    let mut flags = std::collections::HashMap::new();
    for (protected, listener) in pairs {
        *flags.entry(protected).or_insert(0) |= PORT_PROTECTED;
        *flags.entry(listener).or_insert(0) |= PORT_LISTENER;
    }
    flags
}

fn port_of(key: &Key<[u8; TARGET_KEY_LEN]>) -> u16 {
    let data = key.data();
    u16::from_be_bytes([data[0], data[1]])
}

fn key_tuple(key: &Key<[u8; TARGET_KEY_LEN]>) -> (u32, [u8; TARGET_KEY_LEN]) {
    (key.prefix_len(), key.data())
}

/// The key the sock_ops program stores a connection under, built from the
/// peer address the agent sees in `accept()`.
pub fn peer_key(peer: SocketAddr) -> PeerKey {
    PeerKey { addr: ipv6_form(&peer.ip()), port: peer.port(), _pad: 0 }
}

/// An address as the maps hold it: IPv6, IPv4 as `::ffff:a.b.c.d`.
fn ipv6_form(addr: &IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

    #[test]
    fn peer_keys_of_v4_and_mapped_v6_clients_are_equal() {
        let v4 = peer_key(SocketAddr::from((Ipv4Addr::new(127, 0, 0, 1), 40000)));
        let mapped =
            peer_key(SocketAddr::V6(SocketAddrV6::new(Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped(), 40000, 0, 0)));
        assert_eq!(v4, mapped);
        assert_eq!(v4.addr[10..], [0xff, 0xff, 127, 0, 0, 1]);
        assert_eq!(v4.port, 40000);
    }

    #[test]
    fn peer_key_of_v6_client() {
        let key = peer_key(SocketAddr::from((Ipv6Addr::LOCALHOST, 1)));
        assert_eq!(key.addr, Ipv6Addr::LOCALHOST.octets());
        assert_eq!((key.port, key._pad), (1, 0));
    }

    #[test]
    fn local_addresses_in_both_families_count_as_the_host() {
        use airlock_ebpf::is_loopback_or_unspecified as local;
        for addr in ["127.0.0.1", "127.9.8.7", "0.0.0.0", "::1", "::", "::ffff:127.0.0.1"] {
            assert!(local(&ipv6_form(&addr.parse().unwrap())), "{addr}");
        }
        for addr in ["10.0.0.1", "128.0.0.1", "::2", "fe80::1", "::ffff:10.0.0.1"] {
            assert!(!local(&ipv6_form(&addr.parse().unwrap())), "{addr}");
        }
    }

    #[test]
    fn trie_key_puts_port_first_in_network_order() {
        let entry = TargetEntry {
            port: 5432,
            addr: Ipv4Addr::new(10, 20, 0, 0).to_ipv6_mapped().octets(),
            prefix_len: 96 + 16,
            value: TargetValue { target_id: 3, redirect_port: 874, _pad: 0 },
        };
        let key = entry.trie_key();
        assert_eq!(key.prefix_len(), 16 + 112);
        let data = key.data();
        assert_eq!(&data[..2], &5432u16.to_be_bytes());
        assert_eq!(&data[12..18], &[0xff, 0xff, 10, 20, 0, 0]);
    }
}
