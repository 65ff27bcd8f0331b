//! OIDC identities: people who ran `airlock login`, CI jobs that handed in
//! their job token.
//!
//! [`jwt`] verifies ID tokens against the issuer's published keys; the
//! configuration here says which issuers are trusted and which claims name
//! the person and their groups.

mod bindings;
pub mod issuer;
pub mod jwt;
mod logins;
pub mod tokens;

pub use bindings::{Binding, BindingKey, Bindings, OidcIdentityProvider, identity_from_claims};
pub use logins::{DevicePrompt, LoginError, LoginInfo, Logins};

use serde::Deserialize;

/// The `[oidc]` section of the agent configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Issuer URL people log in at; discovery reads
    /// `ISSUER/.well-known/openid-configuration`. HTTPS, or plain HTTP to
    /// this host only: whoever can rewrite its key set can be anybody.
    #[serde(deserialize_with = "issuer_url")]
    pub issuer: String,
    /// OAuth client id `airlock login` uses for the device flow.
    pub client_id: String,
    /// `aud` ID tokens must carry; default: the client id.
    #[serde(default)]
    pub audience: Option<String>,
    /// Claim holding the person's groups (a list of strings).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Claim naming the person for policies' `users` (e.g. `email`).
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// Tolerated clock difference with the issuer for `exp`, `nbf` and
    /// `iat`, in seconds.
    #[serde(default = "default_clock_skew")]
    pub clock_skew_seconds: u64,
    /// Issuers of CI job tokens (`airlock login --token-file`).
    #[serde(default)]
    pub ci: Vec<CiIssuerConfig>,
}

/// A CI system whose job tokens are accepted (GitHub Actions, GitLab, …).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CiIssuerConfig {
    /// Issuer URL (`iss`), e.g. `https://token.actions.githubusercontent.com`.
    #[serde(deserialize_with = "issuer_url")]
    pub issuer: String,
    /// `aud` job tokens must carry.
    pub audience: String,
    /// Claim naming the job for policies' `users`, e.g. `repository` or
    /// `project_path`.
    #[serde(default = "default_ci_user_claim")]
    pub user_claim: String,
    /// Claim holding groups, if the CI system has one.
    #[serde(default)]
    pub groups_claim: Option<String>,
}

impl OidcConfig {
    /// The audience ID tokens from [`Self::issuer`] must carry.
    pub fn audience(&self) -> &str {
        self.audience.as_deref().unwrap_or(&self.client_id)
    }
}

/// An issuer URL the agent may fetch discovery and keys from.
fn issuer_url<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let url = String::deserialize(deserializer)?;
    crate::http::Url::parse(&url).map_err(|error| serde::de::Error::custom(format!("issuer {url:?}: {error}")))?;
    Ok(url)
}

fn default_groups_claim() -> String {
    "groups".into()
}

fn default_user_claim() -> String {
    "email".into()
}

fn default_ci_user_claim() -> String {
    "sub".into()
}

fn default_clock_skew() -> u64 {
    60
}
