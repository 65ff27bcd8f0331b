//! The credential a session's requests carry, obtained when the session
//! starts and given back when it ends: the client never holds it.

use hyper::header::{HeaderName, HeaderValue};

use crate::{
    credentials::{
        openbao::{BaoToken, OpenBao},
        read_private_file,
    },
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
    /// An OpenBao lease to revoke at the end.
    lease: Option<(OpenBao, String)>,
}

impl Injected {
    /// Obtains the credential policy names.
    pub async fn obtain(credential: &HttpCredential) -> Result<Self, String> {
        let (header, value, lease) = match credential {
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
        Ok(Self { header, value, source: credential.describe(), lease })
    }

    /// Gives the credential back: its OpenBao lease is revoked.
    pub async fn release(self) -> Result<(), String> {
        match self.lease {
            Some((client, id)) => client.revoke(&id).await.map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
}
