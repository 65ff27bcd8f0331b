//! Identity from the local account database (NSS: passwd, group, LDAP, …).

use nix::unistd::{Gid, Group, Uid, User, getgrouplist};

use super::{Identity, IdentityError, IdentityProvider, IdentitySource};
use crate::process::ProcessInfo;

/// Attributes a process to the Unix account of its real uid.
///
/// The real uid, not the effective one, so a setuid helper a user runs is
/// still that user's doing.
#[derive(Debug, Default)]
pub struct UnixIdentityProvider;

impl IdentityProvider for UnixIdentityProvider {
    fn identify(&self, process: &ProcessInfo) -> Result<Identity, IdentityError> {
        let uid = process.uid;
        let lookup = |message: String| IdentityError::Lookup { uid, message };
        let user = User::from_uid(Uid::from_raw(uid))
            .map_err(|e| lookup(e.to_string()))?
            .ok_or(IdentityError::UnknownUid(uid))?;
        let name = std::ffi::CString::new(user.name.as_str()).map_err(|e| lookup(e.to_string()))?;
        let gids = getgrouplist(&name, user.gid).map_err(|e| lookup(format!("group list: {e}")))?;
        let mut groups: Vec<String> = gids.into_iter().map(group_name).collect();
        groups.sort();
        groups.dedup();
        Ok(Identity {
            source: IdentitySource::Unix,
            subject: format!("unix:{}", user.name),
            user: user.name,
            uid,
            groups,
        })
    }
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
        let identity = UnixIdentityProvider.identify(&process(0)).unwrap();
        assert_eq!(identity.user, "root");
        assert_eq!(identity.subject, "unix:root");
        assert!(identity.groups.contains(&"root".to_owned()));
    }

    #[test]
    fn unknown_uid_is_refused() {
        assert_eq!(
            UnixIdentityProvider.identify(&process(3_999_999_999)),
            Err(IdentityError::UnknownUid(3_999_999_999))
        );
    }
}
