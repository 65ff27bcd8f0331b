//! The credential a session's requests carry, obtained when the session
//! starts and given back when it ends: the client never holds it.

use hyper::header::{HeaderName, HeaderValue};

use crate::{
    credentials::{
        openbao::{BaoToken, OpenBao},
        read_private_file,
    },
    identity::Identity,
    policy::https::HttpCredential,
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
    /// An OpenBao lease to revoke at the end.
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
                let client = OpenBao {
                    addr: openbao.addr.clone(),
                    token: BaoToken::File(openbao.token_file.clone()),
                    mount: String::new(),
                    ca_file: openbao.ca_file.clone(),
                };
                let (data, lease) = client.read(path).await.map_err(|e| e.to_string())?;
                let Some(token) = data[field.as_str()].as_str() else {
                    return Err(format!("OpenBao's answer for {path} has no field {field:?}"));
                };
                ("authorization", format!("Bearer {token}"), lease.map(|id| (client, id)))
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
