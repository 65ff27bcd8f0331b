//! Identity from the local account database (NSS: passwd, group, LDAP, …).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use nix::unistd::{Gid, Group, Uid, User, getgrouplist};

use super::{Identity, IdentityError, IdentityProvider};
use crate::process::ProcessInfo;

/// How long a looked-up account is reused. NSS reads all of /etc/group (or
/// asks LDAP) per lookup, which would dominate connection set-up; a group
/// change reaches Airlock within this time.
const CACHE_TTL: Duration = Duration::from_secs(30);

/// Attributes a process to the Unix account of its real uid.
///
/// The real uid, not the effective one, so a setuid helper a user runs is
/// still that user's doing.
#[derive(Debug, Default)]
pub struct UnixIdentityProvider {
    cache: Mutex<HashMap<u32, (Instant, Identity)>>,
}

impl IdentityProvider for UnixIdentityProvider {
    fn identify(&self, process: &ProcessInfo) -> Result<Identity, IdentityError> {
        let uid = process.uid;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, identity)) = cache.get(&uid)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(identity.clone());
        }
        let identity = lookup(uid)?;
        cache.insert(uid, (Instant::now(), identity.clone()));
        Ok(identity)
    }
}

/// Resolves a uid through NSS. Failures are not cached: a user created a
/// moment ago must not stay unknown.
fn lookup(uid: u32) -> Result<Identity, IdentityError> {
    let lookup = |message: String| IdentityError::Lookup { uid, message };
    let user =
        User::from_uid(Uid::from_raw(uid)).map_err(|e| lookup(e.to_string()))?.ok_or(IdentityError::UnknownUid(uid))?;
    let name = std::ffi::CString::new(user.name.as_str()).map_err(|e| lookup(e.to_string()))?;
    let gids = getgrouplist(&name, user.gid).map_err(|e| lookup(format!("group list: {e}")))?;
    let mut groups: Vec<String> = gids.into_iter().map(group_name).collect();
    groups.sort();
    groups.dedup();
    Ok(Identity::unix(&user.name, uid, groups))
}

/// A group without a name still shows in records, as `gid:N`.
fn group_name(gid: Gid) -> String {
    match Group::from_gid(gid) {
        Ok(Some(group)) => group.name,
        _ => format!("gid:{gid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(uid: u32) -> ProcessInfo {
        ProcessInfo { uid, ..ProcessInfo::default() }
    }

    #[test]
    fn root_is_root_with_its_groups() {
        let identity = UnixIdentityProvider::default().identify(&process(0)).unwrap();
        assert_eq!(identity.user, "root");
        assert_eq!(identity.subject, "unix:root");
        assert!(identity.groups.contains(&"root".to_owned()));
    }

    #[test]
    fn unknown_uid_is_refused() {
        assert_eq!(
            UnixIdentityProvider::default().identify(&process(3_999_999_999)),
            Err(IdentityError::UnknownUid(3_999_999_999))
        );
    }
}
