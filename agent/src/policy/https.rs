//! `[target.https]`: how Airlock proxies an HTTPS (or plain HTTP) target.
//!
//! ```toml
//! [target.https]
//! ca_file = "/etc/airlock/api-ca.pem"   # roots the target's certificate is checked against (default: system)
//! server_name = "api.internal"          # name checked in it (default: the name the client asked for)
//! strip_cookies = ["session"]           # client cookies never forwarded (Authorization and Impersonate-* never are)
//!
//! [target.https.credential]             # what Airlock sends instead of the client's own credential:
//! kind = "header_file"                  #   a header whose value is a root-only file's content
//! header = "Authorization"
//! file = "/etc/airlock/api-token"
//! # kind = "bearer"                     #   `Authorization: Bearer …` read per session from OpenBao
//! # openbao = { addr = "https://bao:8200", token_file = "/etc/airlock/bao-token", ca_file = "…" }
//! # path = "secret/data/api"            #   kv v2 (data.data.FIELD) or an engine answer (data.FIELD); a lease is revoked at session end
//! # field = "token"
//! ```

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

/// HTTPS options of a target; present, its requests are terminated,
/// attributed, recorded one by one, and re-sent with Airlock's credential.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpsOptions {
    /// PEM roots for the target's certificate; `None`: the system's.
    pub ca_file: Option<PathBuf>,
    /// Name checked in the target's certificate; `None`: the name the client asked for.
    pub server_name: Option<String>,
    /// Client cookies removed before forwarding (names, ASCII case-insensitive).
    pub strip_cookies: Vec<String>,
    /// What is sent instead of the client's credential; `None`: nothing.
    pub credential: Option<HttpCredential>,
}

/// A credential Airlock adds to each request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpCredential {
    /// A header whose value is the content of a root-only file (read per session).
    HeaderFile {
        /// Header name, e.g. `Authorization` or `X-Api-Key`.
        header: String,
        /// The file.
        file: PathBuf,
    },
    /// `Authorization: Bearer` with a token read from OpenBao per session.
    Bearer {
        /// The OpenBao that holds it.
        openbao: OpenBaoSource,
        /// Path read (`secret/data/api`, `kubernetes/creds/deployer`).
        path: String,
        /// Field of the answer's data holding the token.
        field: String,
    },
}

/// An OpenBao (or Vault) server and Airlock's token for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenBaoSource {
    /// `https://bao.internal:8200`.
    pub addr: String,
    /// Root-only file with Airlock's token.
    pub token_file: PathBuf,
    /// PEM file of the CA of OpenBao's certificate; system roots when unset.
    pub ca_file: Option<PathBuf>,
}

impl HttpCredential {
    /// How the credential is named in audit records: where it comes from, never its value.
    pub fn describe(&self) -> String {
        match self {
            Self::HeaderFile { header, file } => format!("header_file {header} from {}", file.display()),
            Self::Bearer { openbao, path, field } => format!("bearer from {} {path} ({field})", openbao.addr),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttps {
    ca_file: Option<Spanned<String>>,
    server_name: Option<String>,
    #[serde(default)]
    strip_cookies: Vec<String>,
    credential: Option<Spanned<RawCredential>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    kind: Spanned<String>,
    header: Option<String>,
    file: Option<String>,
    openbao: Option<RawOpenBao>,
    path: Option<String>,
    field: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpenBao {
    addr: String,
    token_file: String,
    ca_file: Option<String>,
}

/// Checks `[target.https]`; each problem goes to `error` with its byte offset.
pub(super) fn options(raw: RawHttps, error: &mut dyn FnMut(usize, String)) -> HttpsOptions {
    let absolute = |path: &str| path.starts_with('/');
    let ca_file = raw.ca_file.map(|file| {
        if !absolute(file.get_ref()) {
            error(file.span().start, "ca_file must be an absolute path".into());
        }
        PathBuf::from(file.into_inner())
    });
    if let Some(name) = &raw.server_name
        && rustls_pki_types::ServerName::try_from(name.as_str()).is_err()
    {
        error(0, format!("server_name {name:?} is not a DNS name or IP address"));
    }
    let credential = raw.credential.and_then(|credential| {
        let at = credential.span().start;
        let credential = credential.into_inner();
        let mut missing =
            |field: &str| error(at, format!("credential kind {:?} needs {field}", credential.kind.get_ref()));
        match credential.kind.get_ref().as_str() {
            "header_file" => {
                let (Some(header), Some(file)) = (credential.header, credential.file) else {
                    missing("header and file");
                    return None;
                };
                if hyper::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                    error(at, format!("{header:?} is not a valid header name"));
                }
                if !absolute(&file) {
                    error(at, "credential file must be an absolute path".into());
                }
                Some(HttpCredential::HeaderFile { header, file: file.into() })
            }
            "bearer" => {
                let (Some(openbao), Some(path)) = (credential.openbao, credential.path) else {
                    missing("openbao and path");
                    return None;
                };
                if !(openbao.addr.starts_with("http://") || openbao.addr.starts_with("https://")) {
                    error(at, format!("openbao addr {:?} must start with http:// or https://", openbao.addr));
                }
                if !absolute(&openbao.token_file) || !openbao.ca_file.as_deref().is_none_or(absolute) {
                    error(at, "openbao token_file and ca_file must be absolute paths".into());
                }
                let source = OpenBaoSource {
                    addr: openbao.addr,
                    token_file: openbao.token_file.into(),
                    ca_file: openbao.ca_file.map(PathBuf::from),
                };
                let path = path.trim_matches('/').to_owned();
                Some(HttpCredential::Bearer {
                    openbao: source,
                    path,
                    field: credential.field.unwrap_or("token".into()),
                })
            }
            other => {
                error(
                    credential.kind.span().start,
                    format!("unknown credential kind {other:?}, expected \"header_file\" or \"bearer\""),
                );
                None
            }
        }
    });
    HttpsOptions { ca_file, server_name: raw.server_name, strip_cookies: raw.strip_cookies, credential }
}
