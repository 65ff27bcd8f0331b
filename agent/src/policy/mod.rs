// TEMP STUB (replaced by helper)
use std::path::Path;
#[derive(Debug)] pub struct Network { pub addr: std::net::Ipv6Addr, pub prefix_len: u8 }
impl std::fmt::Display for Network { fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result { write!(f, "{}/{}", self.addr, self.prefix_len) } }
#[derive(Debug, Clone, Copy, serde::Deserialize)] #[serde(rename_all="lowercase")] pub enum Protocol { Postgres, Ssh, Tcp }
impl std::fmt::Display for Protocol { fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result { write!(f, "{:?}", self) } }
#[derive(Debug, serde::Deserialize)] pub struct Rule { pub action: String, #[serde(default)] pub users: Vec<String>, pub reason: Option<String> }
#[derive(Debug, serde::Deserialize)] struct RawTarget { name: String, protocol: Protocol, port: u16, addresses: Vec<String>, #[serde(default)] access: Vec<Rule> }
#[derive(Debug, serde::Deserialize)] struct Raw { target: Vec<RawTarget> }
#[derive(Debug)] pub struct Target { pub id: u32, pub name: String, pub protocol: Protocol, pub port: u16, pub networks: Vec<Network>, pub access: Vec<Rule> }
#[derive(Debug)] pub struct Policy { pub targets: Vec<Target> }
pub struct Subject<'a> { pub user: &'a str, pub groups: &'a [String] }
pub enum Decision { Allow { rule: usize }, Deny { reason: String } }
#[derive(Debug, thiserror::Error)] #[error("{0}")] pub struct PolicyError(String);
impl Policy {
  pub fn load_dir(d: &Path) -> Result<Policy, PolicyError> {
    let mut targets = vec![];
    let mut files: Vec<_> = std::fs::read_dir(d).map_err(|e| PolicyError(e.to_string()))?.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e=="toml")).collect();
    files.sort();
    for f in files { let raw: Raw = toml::from_str(&std::fs::read_to_string(&f).unwrap()).map_err(|e| PolicyError(e.to_string()))?;
      for t in raw.target { let networks = t.addresses.iter().map(|a| { let (ip, len) = a.split_once('/').map(|(i,l)| (i, Some(l.parse::<u8>().unwrap()))).unwrap_or((a, None)); let ip: std::net::IpAddr = ip.parse().unwrap(); match ip { std::net::IpAddr::V4(v) => Network{addr: v.to_ipv6_mapped(), prefix_len: 96 + len.unwrap_or(32)}, std::net::IpAddr::V6(v) => Network{addr: v, prefix_len: len.unwrap_or(128)} } }).collect();
        targets.push(Target { id: targets.len() as u32, name: t.name, protocol: t.protocol, port: t.port, networks, access: t.access }); } }
    Ok(Policy { targets }) }
  pub fn find_target(&self, a: std::net::IpAddr, port: u16) -> Option<&Target> { let a = match a { std::net::IpAddr::V4(v) => v.to_ipv6_mapped(), std::net::IpAddr::V6(v) => v }; self.targets.iter().find(|t| t.port == port && t.networks.iter().any(|n| { let m = if n.prefix_len == 0 { 0 } else { u128::MAX << (128 - n.prefix_len as u32) }; u128::from(a) & m == u128::from(n.addr) & m })) }
  pub fn target(&self, id: u32) -> Option<&Target> { self.targets.get(id as usize) }
  pub fn decide(&self, id: u32, s: &Subject) -> Decision { let Some(t) = self.target(id) else { return Decision::Deny{reason:"unknown".into()} };
    for (i, r) in t.access.iter().enumerate() { if r.users.iter().any(|u| u=="*" || u==s.user) { return if r.action=="allow" { Decision::Allow{rule:i} } else { Decision::Deny{reason: r.reason.clone().unwrap_or_default()} } } }
    let _ = s.groups; Decision::Deny{reason: "no rule".into()} }
}
