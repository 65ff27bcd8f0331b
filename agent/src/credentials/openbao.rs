//! OpenBao (or Vault) as the credential source: `MOUNT/creds/ROLE` hands out
//! a database login with a lease; Airlock revokes the lease when the session
//! ends, and OpenBao drops the login.
//!
//! Calls are made with Airlock's own token, or with a token of the person's
//! own that OpenBao's JWT auth method gives for their ID token: then
//! OpenBao's policies decide what the person may read and its audit log
//! names them. Such a token lives as long as the session.
//!
//! `http://` and `https://` (system roots) addresses are spoken.

use std::{path::PathBuf, time::Duration};

use super::{CredentialError, Secret, read_private_file};
use crate::http::{self, Url};
use serde_json::Value;

/// How long one call to OpenBao may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The token calls are made with.
#[derive(Clone, Debug)]
pub enum BaoToken {
    /// Airlock's own, read from a root-only file at each call (so it can be rotated).
    File(PathBuf),
    /// A person's, from JWT auth.
    Person(Secret),
    /// None yet: calls go without one (the JWT login that gets a person's).
    Anonymous,
}

/// An OpenBao secrets engine, and the token to call it with.
#[derive(Clone, Debug)]
pub struct OpenBao {
    /// `http://host:port`.
    pub addr: String,
    /// Whose token.
    pub token: BaoToken,
    /// Engine mount path.
    pub mount: String,
    /// PEM file of the CA that signs OpenBao's certificate; system roots when unset.
    pub ca_file: Option<PathBuf>,
}

/// A login OpenBao issued.
pub struct Issued {
    /// Lease to revoke when done.
    pub lease_id: String,
    /// Lease length.
    pub lease_duration: Duration,
    /// Database user.
    pub username: String,
    /// Its password.
    pub password: Secret,
}

impl OpenBao {
    fn error(&self, message: String) -> CredentialError {
        CredentialError::OpenBao { addr: self.addr.clone(), message }
    }

    /// Logs in at the JWT auth method mounted at `auth_mount` as `role` with
    /// the person's `jwt`; returns this client acting as the person.
    pub async fn as_person(self, auth_mount: &str, role: &str, jwt: &Secret) -> Result<Self, CredentialError> {
        self.login_jwt(auth_mount, role, jwt).await.map(|(person, _)| person)
    }

    /// As [`OpenBao::as_person`], also returning the person's OpenBao entity id.
    pub async fn login_jwt(
        self,
        auth_mount: &str,
        role: &str,
        jwt: &Secret,
    ) -> Result<(Self, String), CredentialError> {
        let body = serde_json::json!({ "role": role, "jwt": jwt.expose() });
        let answer = self.call("POST", &format!("/v1/auth/{auth_mount}/login"), Some(&body)).await?;
        let token = answer["auth"]["client_token"]
            .as_str()
            .ok_or_else(|| self.error(format!("no client_token from JWT auth role {role:?}")))?;
        let entity = answer["auth"]["entity_id"].as_str().unwrap_or_default().to_owned();
        Ok((Self { token: BaoToken::Person(Secret::new(token.to_owned())), ..self }, entity))
    }

    /// Calls `METHOD /v1/PATH` (PATH may carry a query) with this client's
    /// token; the JSON answer (`null` when empty).
    pub async fn call_json(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, CredentialError> {
        self.call(method, &format!("/v1/{path}"), body).await
    }

    /// Reads a login for `role`.
    pub async fn issue(&self, role: &str) -> Result<Issued, CredentialError> {
        let body = self.call("GET", &format!("/v1/{}/creds/{role}", self.mount), None).await?;
        let text = |value: &Value| value.as_str().map(str::to_owned);
        let (Some(lease_id), Some(username), Some(password)) =
            (text(&body["lease_id"]), text(&body["data"]["username"]), text(&body["data"]["password"]))
        else {
            return Err(self.error(format!("no login in the answer for role {role:?}")));
        };
        Ok(Issued {
            lease_id,
            lease_duration: Duration::from_secs(body["lease_duration"].as_u64().unwrap_or(0)),
            username,
            password: Secret::new(password),
        })
    }

    /// Has the SSH secrets engine at this client's mount sign `public_key`
    /// (OpenSSH form) with `role`, as a user certificate for `principal`
    /// valid for `ttl`; returns the certificate in OpenSSH form.
    pub async fn sign_ssh(
        &self,
        role: &str,
        public_key: &str,
        principal: &str,
        ttl: Duration,
    ) -> Result<String, CredentialError> {
        let body = serde_json::json!({
            "public_key": public_key,
            "valid_principals": principal,
            "cert_type": "user",
            "ttl": format!("{}s", ttl.as_secs()),
        });
        let answer = self.call("POST", &format!("/v1/{}/sign/{role}", self.mount), Some(&body)).await?;
        answer["data"]["signed_key"]
            .as_str()
            .map(|key| key.trim().to_owned())
            .ok_or_else(|| self.error(format!("no signed_key in the answer for role {role:?}")))
    }

    /// Reads `path` (`secret/data/api`, `kubernetes/creds/deployer`): the
    /// answer's `data`, its kv v2 `data.data` when that is there, and the
    /// lease to revoke when one was issued.
    pub async fn read(&self, path: &str) -> Result<(Value, Option<String>), CredentialError> {
        let mut answer = self.call("GET", &format!("/v1/{path}"), None).await?;
        let lease = answer["lease_id"].as_str().filter(|id| !id.is_empty()).map(str::to_owned);
        let data = answer["data"].take();
        let data = match data.get("data") {
            Some(inner) if inner.is_object() && data.get("metadata").is_some() => inner.clone(),
            _ => data,
        };
        Ok((data, lease))
    }

    /// Ends a lease now (OpenBao drops the login): revoked with Airlock's
    /// token, or, with a person's, by revoking their token, which takes its
    /// leases with it (a person's policy need not allow `sys/leases/revoke`).
    pub async fn revoke(&self, lease_id: &str) -> Result<(), CredentialError> {
        match self.token {
            BaoToken::File(_) => {
                let body = serde_json::json!({ "lease_id": lease_id });
                self.call("PUT", "/v1/sys/leases/revoke", Some(&body)).await.map(drop)
            }
            BaoToken::Person(_) => self.call("PUT", "/v1/auth/token/revoke-self", None).await.map(drop),
            BaoToken::Anonymous => Err(self.error("no token to revoke the lease with".into())),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, CredentialError> {
        let token = match &self.token {
            BaoToken::File(path) => Some(Secret::new(read_private_file(path)?.trim().to_owned())),
            BaoToken::Person(token) => Some(token.clone()),
            BaoToken::Anonymous => None,
        };
        let url = Url::parse(&self.addr).map_err(|e| self.error(e.to_string()))?.join(path);
        let payload = body.map(Value::to_string).unwrap_or_default();
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(token) = &token {
            headers.push(("X-Vault-Token", token.expose()));
        }
        let roots = match &self.ca_file {
            Some(path) => http::Roots::from_pem_file(path).map_err(|e| self.error(e.to_string()))?,
            None => http::Roots::system(),
        };
        let response = http::request_with(&roots, method, &url, &headers, body.map(|_| payload.as_bytes()), TIMEOUT)
            .await
            .map_err(|e| self.error(format!("{method} {path}: {e}")))?;
        let json: Value = if response.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&response.body).unwrap_or(Value::Null)
        };
        if !(200..300).contains(&response.status) {
            let errors =
                json["errors"].as_array().map(|e| e.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "));
            return Err(self.error(format!(
                "{method} {path}: HTTP {}: {}",
                response.status,
                errors.unwrap_or_default()
            )));
        }
        Ok(json)
    }
}
