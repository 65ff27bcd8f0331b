//! The issuer's token endpoint as `airlock login` needs it: the OAuth 2.0
//! device authorization grant (RFC 8628) and refresh tokens.
//!
//! The agent, not the CLI, runs the flow: the tokens go from the issuer to
//! the agent and never through a process the person controls, so nothing
//! of theirs can copy them.

use std::time::Duration;

use serde::Deserialize;

use crate::{
    http::{self, HttpError, Url},
    secret::Secret,
};

/// How long one call to the issuer may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// RFC 8628's default polling interval.
const DEFAULT_INTERVAL: u64 = 5;
/// Shortest interval accepted from the issuer, so a bad `interval` cannot
/// make the agent poll in a tight loop.
const MIN_INTERVAL: u64 = 1;
/// Scopes asked for: the ID token, the claims policies match, and a
/// refresh token so the login outlives one ID token.
pub const SCOPE: &str = "openid email profile groups offline_access";

/// Why a call to the token endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The issuer could not be reached.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The issuer refused, with an OAuth error code.
    #[error("the issuer refused: {code}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Refused {
        /// OAuth `error`, e.g. `access_denied`, `expired_token`, `invalid_grant`.
        code: String,
        /// `error_description`, if given.
        description: Option<String>,
    },
    /// The issuer answered something that is not a token response.
    #[error("the issuer's answer is unusable: {0}")]
    Unusable(String),
}

/// What the person must do to approve a device login.
#[derive(Debug)]
pub struct DeviceAuthorization {
    /// Code the agent polls with; never shown to anyone.
    pub device_code: Secret,
    /// Code the person types at [`Self::verification_uri`].
    pub user_code: String,
    /// Page the person opens.
    pub verification_uri: String,
    /// The page with the code filled in, when the issuer offers one.
    pub verification_uri_complete: Option<String>,
    /// Seconds the codes stay valid.
    pub expires_in: u64,
    /// Seconds between polls.
    pub interval: u64,
}

/// Tokens the issuer handed out.
#[derive(Debug)]
pub struct Tokens {
    /// The ID token: who the person is.
    pub id_token: Secret,
    /// Lets the agent get a new ID token before this one expires.
    pub refresh_token: Option<Secret>,
}

/// One poll of a device login.
#[derive(Debug)]
pub enum Poll {
    /// The person has not decided yet.
    Pending,
    /// Poll less often: the interval grows by 5 seconds (RFC 8628 §3.5).
    SlowDown,
    /// Approved.
    Granted(Tokens),
}

/// Starts a device login at `endpoint` (the device authorization endpoint).
pub async fn start_device_login(endpoint: &Url, client_id: &str) -> Result<DeviceAuthorization, TokenError> {
    #[derive(Deserialize)]
    struct Answer {
        device_code: String,
        user_code: String,
        verification_uri: String,
        verification_uri_complete: Option<String>,
        expires_in: u64,
        interval: Option<u64>,
    }
    let answer: Answer = post_form(endpoint, &[("client_id", client_id), ("scope", SCOPE)]).await?;
    Ok(DeviceAuthorization {
        device_code: Secret::new(answer.device_code),
        user_code: answer.user_code,
        verification_uri: answer.verification_uri,
        verification_uri_complete: answer.verification_uri_complete,
        expires_in: answer.expires_in,
        interval: answer.interval.unwrap_or(DEFAULT_INTERVAL).max(MIN_INTERVAL),
    })
}

/// Asks the token endpoint whether the device login was approved.
pub async fn poll_device_login(endpoint: &Url, client_id: &str, device_code: &Secret) -> Result<Poll, TokenError> {
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", device_code.expose()),
        ("client_id", client_id),
    ];
    match post_form::<TokenAnswer>(endpoint, &form).await {
        Ok(answer) => answer.tokens().map(Poll::Granted),
        Err(TokenError::Refused { code, .. }) if code == "authorization_pending" => Ok(Poll::Pending),
        Err(TokenError::Refused { code, .. }) if code == "slow_down" => Ok(Poll::SlowDown),
        Err(error) => Err(error),
    }
}

/// Exchanges a refresh token for new tokens.
pub async fn refresh(endpoint: &Url, client_id: &str, refresh_token: &Secret) -> Result<Tokens, TokenError> {
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh_token.expose()), ("client_id", client_id)];
    post_form::<TokenAnswer>(endpoint, &form).await?.tokens()
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
    refresh_token: Option<String>,
}

impl TokenAnswer {
    fn tokens(self) -> Result<Tokens, TokenError> {
        let id_token =
            self.id_token.ok_or_else(|| TokenError::Unusable("no id_token (is `openid` allowed?)".into()))?;
        Ok(Tokens { id_token: Secret::new(id_token), refresh_token: self.refresh_token.map(Secret::new) })
    }
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    error_description: Option<String>,
}

async fn post_form<T: serde::de::DeserializeOwned>(endpoint: &Url, form: &[(&str, &str)]) -> Result<T, TokenError> {
    let body = form_encode(form);
    let headers = [("Content-Type", "application/x-www-form-urlencoded"), ("Accept", "application/json")];
    let response = http::request("POST", endpoint, &headers, Some(body.as_bytes()), CALL_TIMEOUT).await?;
    if (200..300).contains(&response.status) {
        return serde_json::from_slice(&response.body).map_err(|e| TokenError::Unusable(e.to_string()));
    }
    match serde_json::from_slice::<OAuthError>(&response.body) {
        Ok(error) => Err(TokenError::Refused { code: error.error, description: error.error_description }),
        Err(_) => Err(TokenError::Unusable(format!("HTTP {}", response.status))),
    }
}

/// `application/x-www-form-urlencoded`, as the HTML standard defines it.
fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode_into(&mut out, key);
        out.push('=');
        encode_into(&mut out, value);
    }
    out
}

fn encode_into(out: &mut String, text: &str) {
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(byte as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_encoded() {
        assert_eq!(
            form_encode(&[("grant_type", "urn:ietf:params:oauth:grant-type:device_code"), ("scope", "openid email")]),
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&scope=openid+email"
        );
        assert_eq!(form_encode(&[("k", "a&b=c/é")]), "k=a%26b%3Dc%2F%C3%A9");
    }

    #[test]
    fn refusals_name_the_oauth_error_and_tokens_never_print() {
        let refused = TokenError::Refused { code: "access_denied".into(), description: Some("user said no".into()) };
        assert_eq!(refused.to_string(), "the issuer refused: access_denied (user said no)");
        let tokens = TokenAnswer { id_token: Some("eyJ.secret".into()), refresh_token: Some("r-secret".into()) }
            .tokens()
            .unwrap();
        let printed = format!("{tokens:?}");
        assert!(!printed.contains("secret"), "{printed}");
        assert!(TokenAnswer { id_token: None, refresh_token: None }.tokens().is_err());
    }
}
