//! `[target.https]`: how Airlock proxies an HTTPS (or plain HTTP) target.
//!
//! ```toml
//! [target.https]
//! ca_file = "/etc/airlock/api-ca.pem"   # roots the target's certificate is checked against (default: system)
//! server_name = "api.internal"          # name checked in it (default: the name the client asked for)
//! other_names = ["api-lb.corp"]         # other names of the same site requests may name (Host)
//! strip_cookies = ["session"]           # client cookies never forwarded (Authorization and Impersonate-* never are)
//! record_bodies = { max_bytes = 16384 } # bodies in request records, each cut at max_bytes (or `true`: 16 KiB);
//!                                       # secrets redacted, binary bodies left out; default: not recorded
//!
//! [target.https.credential]             # what Airlock sends instead of the client's own credential:
//! kind = "header_file"                  #   a header whose value is a root-only file's content
//! header = "Authorization"
//! file = "/etc/airlock/api-token"
//! # kind = "bearer"                     #   `Authorization: Bearer …` read per session from OpenBao
//! # openbao = { addr = "https://bao:8200", token_file = "/etc/airlock/bao-token", ca_file = "…" }
//! #   or, read as the person: openbao = { addr = "…", jwt_auth = { role = "api-readers" } }
//! # path = "secret/data/api"            #   kv v2 (data.data.FIELD) or an engine answer (data.FIELD); a lease is revoked at session end
//! # field = "token"
//! # kind = "openbao_token"              #   OpenBao's own API as the target: `X-Vault-Token` of the
//! # openbao = { addr = "https://bao:8200", jwt_auth = { mount = "jwt", role = "people" } }  # person's JWT login
//!
//! [[target.https.rule]]                 # requests: the first rule matching decides; none: allowed
//! methods = ["DELETE"]                  # default: any method
//! path = "/v1/sys/*"                    # glob over the path (no query); `*` any text
//! action = "approve"                    # allow | approve ([target.approvals]) | deny
//! reason = "changes to OpenBao's configuration need a second person"
//! # actors = ["coding-agent"]          # only for these actors' requests ("*": any); without: a
//!                                       # restricting rule binds everyone, an allowing one people only
//! ```
//!
//! `protocol = "kubernetes"` targets take the same section, and more:
//!
//! ```toml
//! [target.https]
//! mask_secrets = true                   # Secrets' data (and kubectl's last-applied copy of it) masked; default true
//!
//! [target.https.credential]             # the agent's own token, acting as the person:
//! kind = "kubernetes_impersonation"     #   Impersonate-User: their e-mail (OIDC) or user name
//! file = "/etc/airlock/kube-token"      #   root-only file with the token of a service account allowed to impersonate
//! groups = ["dev", "sre"]               #   their groups passed on as Impersonate-Group (default: none)
//!
//! [[target.https.rule]]                 # rules also match what the request is to Kubernetes:
//! verbs = ["create"]                    # get list watch create update patch delete deletecollection
//! resources = ["pods/exec", "pods/attach"]  # resource[/subresource], `.group` for named groups; globs
//! namespaces = ["prod*"]                # globs; default: any (and cluster-wide requests)
//! action = "approve"
//! ```

mod load;
mod rules;

use std::path::PathBuf;

use crate::policy::OpenBaoAuth;

pub(super) use self::load::{RawHttps, options};
pub use self::rules::{KubeReading, Reading, RequestRule, deciding_rule, normalized_path};

/// HTTPS options of a target; present, its requests are terminated,
/// attributed, recorded one by one, and re-sent with Airlock's credential.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpsOptions {
    /// PEM roots for the target's certificate; `None`: the system's.
    pub ca_file: Option<PathBuf>,
    /// Name checked in the target's certificate; `None`: the name the client asked for.
    pub server_name: Option<String>,
    /// Other names of the site (a load balancer's alias) that requests may
    /// name besides `server_name` and the address.
    pub other_names: Vec<String>,
    /// Client cookies removed before forwarding (names, ASCII case-insensitive).
    pub strip_cookies: Vec<String>,
    /// What is sent instead of the client's credential; `None`: nothing.
    pub credential: Option<HttpCredential>,
    /// Request rules in file order.
    pub rules: Vec<RequestRule>,
    /// A Kubernetes API server (`protocol = "kubernetes"`).
    pub kubernetes: bool,
    /// Kubernetes: Secrets' data masked in answers (unless the person is
    /// exempt from the target's masking).
    pub mask_secrets: bool,
    /// Bodies are recorded with their requests, each up to this many bytes;
    /// `None`: bodies are not recorded.
    pub record_bodies: Option<usize>,
}

/// What `record_bodies = true` keeps of each body.
pub const DEFAULT_BODY_BYTES: usize = 16 * 1024;
/// The most `record_bodies` may keep of a body: records are read whole.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

impl HttpsOptions {
    /// The options of a target without a `[target.https]` section.
    pub fn defaults(kubernetes: bool) -> Self {
        Self { kubernetes, mask_secrets: kubernetes, ..Self::default() }
    }
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
    /// The agent's own Kubernetes token, with `Impersonate-User` and
    /// `Impersonate-Group` set from the person.
    KubernetesImpersonation {
        /// Root-only file with the token.
        file: PathBuf,
        /// The person's groups passed on (others are not).
        groups: Vec<String>,
    },
    /// OpenBao's (or Vault's) own API as the target: `X-Vault-Token` with a
    /// token of the person's, from their JWT login, revoked at session end.
    OpenBaoToken {
        /// Where the person logs in (JWT auth).
        openbao: OpenBaoSource,
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

/// An OpenBao (or Vault) server and whose token Airlock calls it with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenBaoSource {
    /// `https://bao.internal:8200`.
    pub addr: String,
    /// Airlock's own token, or the person's from JWT auth.
    pub auth: OpenBaoAuth,
    /// PEM file of the CA of OpenBao's certificate; system roots when unset.
    pub ca_file: Option<PathBuf>,
}

impl HttpCredential {
    /// How the credential is named in audit records: where it comes from, never its value.
    pub fn describe(&self) -> String {
        match self {
            Self::HeaderFile { header, file } => format!("header_file {header} from {}", file.display()),
            Self::KubernetesImpersonation { file, .. } => format!("kubernetes_impersonation from {}", file.display()),
            Self::Bearer { openbao, path, field } => format!("bearer from {} {path} ({field})", openbao.addr),
            Self::OpenBaoToken { openbao } => format!("openbao_token from {}", openbao.addr),
        }
    }
}
