//! Who is behind a connection.
//!
//! An [`IdentityProvider`] turns a process into a person. The first provider
//! is the local Unix account ([`UnixIdentityProvider`]): the real uid the eBPF
//! program saw at `connect()`, its user name and groups. OIDC logins and CI
//! job tokens plug in behind the same trait.

pub mod oidc;
mod unix;

use serde::{Deserialize, Serialize};

use crate::{policy::Subject, process::ProcessInfo};
pub use unix::UnixIdentityProvider;

/// The person (or job) a connection is attributed to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Where the identity comes from.
    pub source: IdentitySource,
    /// Stable subject, e.g. `unix:alice` or an OIDC `sub`.
    pub subject: String,
    /// Name policies match `users` against.
    pub user: String,
    /// Email (OIDC `email` claim); policies' `users` match it too.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub email: Option<String>,
    /// Unix uid of the connecting process.
    pub uid: u32,
    /// Group names policies match `groups` against.
    pub groups: Vec<String>,
    /// The OIDC token this identity was proven with (a person's ID token or
    /// a job's token), for exchanges that act as the person (OpenBao JWT
    /// auth). Never serialized: it stays out of records and answers.
    #[serde(skip)]
    pub token: Option<crate::secret::Secret>,
    /// What made the connection on the person's behalf (an AI agent, a
    /// bot), when policy recognised an actor; `None`: the person.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub actor: Option<crate::actors::Actor>,
}

impl Identity {
    /// The identity of Unix account `user` (uid `uid`, in `groups`), as
    /// attributed without an identity provider.
    pub fn unix(user: &str, uid: u32, groups: Vec<String>) -> Self {
        Self {
            source: IdentitySource::Unix,
            subject: format!("unix:{user}"),
            user: user.to_owned(),
            email: None,
            token: None,
            uid,
            groups,
            actor: None,
        }
    }

    /// How policy sees this identity.
    pub fn as_subject(&self) -> Subject<'_> {
        Subject {
            user: &self.user,
            email: self.email.as_deref(),
            subject: Some(&self.subject),
            groups: &self.groups,
            actor: self.actor.as_ref().map(|actor| actor.name.as_str()),
        }
    }
}

/// Origin of an [`Identity`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentitySource {
    /// Local Unix account (the default when no OIDC issuer is configured).
    Unix,
    /// A person's OIDC login (`airlock login`), bound to their login session.
    Oidc,
    /// A CI job's OIDC token, bound to the job's cgroup.
    CiJob,
}

/// Why a process could not be attributed to anyone.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// The uid has no account on this host.
    #[error("uid {0} has no user account on this host")]
    UnknownUid(u32),
    /// The account database could not be read.
    #[error("looking up uid {uid}: {message}")]
    Lookup {
        /// The uid looked up.
        uid: u32,
        /// What failed.
        message: String,
    },
    /// OIDC is configured and this process's uid and login session (or
    /// cgroup) hold no login.
    #[error("uid {uid} has not logged in to Airlock in this session; run: airlock login")]
    NotLoggedIn {
        /// The uid of the connecting process.
        uid: u32,
    },
    /// The login this process is bound to has expired and was not refreshed.
    #[error("the Airlock login of uid {uid} has expired; run: airlock login")]
    LoginExpired {
        /// The uid of the connecting process.
        uid: u32,
    },
}

/// Maps a connecting process to an identity.
pub trait IdentityProvider: Send + Sync {
    /// Attributes `process`; an error means the connection has no owner and
    /// is refused.
    fn identify(&self, process: &ProcessInfo) -> Result<Identity, IdentityError>;
}
