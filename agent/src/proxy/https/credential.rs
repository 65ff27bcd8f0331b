//! The credential a session's requests carry, obtained when the session
//! starts and given back when it ends: the client never holds it.

use hyper::header::{HeaderName, HeaderValue};

use crate::{
    credentials::{
        openbao::{BaoToken, OpenBao},
        read_private_file,
    },
    identity::Identity,
    policy::{
        OpenBaoAuth,
        https::{HttpCredential, OpenBaoSource},
    },
};

/// A header Airlock sets on every request of a session.
pub(super) struct Injected {
    /// Its name.
    pub header: HeaderName,
    /// Its value, marked sensitive (HTTP/2 never indexes it).
    pub value: HeaderValue,
    /// Where it came from, for audit records: never the value.
    pub source: String,
    /// Headers saying whom the request is for (Kubernetes impersonation).
    pub acting_for: Vec<(HeaderName, HeaderValue)>,
    /// What to give back to OpenBao at the end: a lease (revoked with
    /// Airlock's token), or the person's token (revoked, with its leases).
    lease: Option<(OpenBao, String)>,
}

impl Injected {
    /// Obtains the credential policy names, for the person `identity`.
    pub async fn obtain(credential: &HttpCredential, identity: &Identity) -> Result<Self, String> {
        let mut acting_for = Vec::new();
        let (header, value, lease) = match credential {
            HttpCredential::KubernetesImpersonation { file, groups } => {
                let token = read_private_file(file).map_err(|e| e.to_string())?;
                acting_for = impersonation(identity, groups)?;
                ("authorization", format!("Bearer {}", token.trim()), None)
            }
            HttpCredential::HeaderFile { header, file } => {
                let value = read_private_file(file).map_err(|e| e.to_string())?;
                (header.as_str(), value.trim().to_owned(), None)
            }
            HttpCredential::Bearer { openbao, path, field } => {
                let client = client(openbao, identity).await?;
                let (data, lease) = client.read(path).await.map_err(|e| e.to_string())?;
                let Some(token) = data[field.as_str()].as_str() else {
                    return Err(format!("OpenBao's answer for {path} has no field {field:?}"));
                };
                let value = format!("Bearer {token}");
                // A person's token is revoked at the end (with its leases).
                let release = match (&client.token, lease) {
                    (BaoToken::Person(_), lease) => Some((client, lease.unwrap_or_default())),
                    (_, lease) => lease.map(|id| (client, id)),
                };
                ("authorization", value, release)
            }
            HttpCredential::OpenBaoToken { openbao } => {
                let client = client(openbao, identity).await?;
                let BaoToken::Person(token) = &client.token else {
                    return Err("openbao_token needs the person's JWT login".into());
                };
                let value = token.expose().to_owned();
                ("x-vault-token", value, Some((client, String::new())))
            }
        };
        let header =
            HeaderName::from_bytes(header.as_bytes()).map_err(|_| format!("{header:?} is not a header name"))?;
        // The message names neither the value nor where it breaks.
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| format!("the {header} value holds characters a header cannot"))?;
        value.set_sensitive(true);
        Ok(Self { header, value, source: credential.describe(), acting_for, lease })
    }

    /// Gives the credential back: its OpenBao lease is revoked.
    pub async fn release(self) -> Result<(), String> {
        match self.lease {
            Some((client, id)) => client.revoke(&id).await.map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
}

/// A client of `openbao` with Airlock's token, or logged in as the person
/// (JWT auth with the ID token of their login).
async fn client(openbao: &OpenBaoSource, identity: &Identity) -> Result<OpenBao, String> {
    let client =
        |token| OpenBao { addr: openbao.addr.clone(), token, mount: String::new(), ca_file: openbao.ca_file.clone() };
    match &openbao.auth {
        OpenBaoAuth::TokenFile(path) => Ok(client(BaoToken::File(path.clone()))),
        OpenBaoAuth::Jwt { mount, role } => {
            let Some(jwt) = identity.token.as_ref() else {
                return Err("this target acts as you in OpenBao: log in first (airlock login)".into());
            };
            client(BaoToken::Anonymous).as_person(mount, role, jwt).await.map_err(|e| e.to_string())
        }
    }
}

/// `Impersonate-User` (the person's e-mail from their login, else their
/// user name) and one `Impersonate-Group` per group of theirs that policy
/// passes on.
fn impersonation(identity: &Identity, passed: &[String]) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let header = |name: &'static str, value: &str| {
        HeaderValue::from_str(value)
            .map(|value| (HeaderName::from_static(name), value))
            .map_err(|_| format!("{value:?} cannot be sent as {name}"))
    };
    let user = identity.email.as_deref().unwrap_or(&identity.user);
    let mut headers = vec![header("impersonate-user", user)?];
    for group in identity.groups.iter().filter(|g| passed.contains(g)) {
        headers.push(header("impersonate-group", group)?);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impersonation_names_the_person_and_only_the_groups_policy_passes() {
        let mut alice = Identity::unix("alice", 1000, vec!["dev".into(), "sudo".into(), "sre".into()]);
        let headers = impersonation(&alice, &["dev".into(), "sre".into()]).unwrap();
        let pairs: Vec<_> = headers.iter().map(|(n, v)| (n.as_str(), v.to_str().unwrap())).collect();
        assert_eq!(pairs, [("impersonate-user", "alice"), ("impersonate-group", "dev"), ("impersonate-group", "sre")]);
        alice.email = Some("alice@example.com".into());
        let headers = impersonation(&alice, &[]).unwrap();
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].1, "alice@example.com");
    }
}
