//! `[target.https]`: how Airlock proxies an HTTPS (or plain HTTP) target.
//!
//! ```toml
//! [target.https]
//! ca_file = "/etc/airlock/api-ca.pem"   # roots the target's certificate is checked against (default: system)
//! server_name = "api.internal"          # name checked in it (default: the name the client asked for)
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

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::{guardrails::GuardAction, policy::OpenBaoAuth};

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

/// What happens to requests a rule matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRule {
    /// Methods matched (upper case); empty: any.
    pub methods: Vec<String>,
    /// Glob over the request's path, query left out.
    pub path: String,
    /// Allow, hold for approval, or refuse.
    pub action: GuardAction,
    /// Told to the client and recorded.
    pub reason: Option<String>,
    /// Kubernetes verbs matched; empty: any.
    pub verbs: Vec<String>,
    /// Kubernetes resources matched (globs over `resource[.group][/subresource]`); empty: any.
    pub resources: Vec<String>,
    /// Kubernetes namespaces matched (globs); empty: any, cluster-wide requests included.
    pub namespaces: Vec<String>,
    /// Actors the rule is for (see [`crate::policy::guard_binds`]).
    pub actors: Vec<String>,
}

impl RequestRule {
    /// Whether the rule is about a request with any of `methods` (its own,
    /// and the overrides its headers ask for) on any of `paths` (as written,
    /// and as a server may read it: [`normalized_path`]).
    pub fn matches(&self, methods: &[impl AsRef<str>], paths: &[&str]) -> bool {
        let method = self.methods.is_empty()
            || methods.iter().any(|m| self.methods.iter().any(|r| r.eq_ignore_ascii_case(m.as_ref())));
        method && paths.iter().any(|path| crate::glob::matches(&self.path, path))
    }

    /// Whether the rule names Kubernetes verbs, resources or namespaces.
    pub fn is_kubernetes(&self) -> bool {
        !(self.verbs.is_empty() && self.resources.is_empty() && self.namespaces.is_empty())
    }

    /// Whether the Kubernetes parts of the rule match a request with these
    /// `verbs` (its own, and those method overrides would make of it) on
    /// `resource` (`resource[.group][/subresource]`) in `namespace` (empty:
    /// cluster-wide). A rule with such parts never matches a request that
    /// names no resource. A list, watch or deletecollection across all
    /// namespaces spans the ones a rule names: a rule that holds or refuses
    /// requests in them holds or refuses it too, while one that allows keeps
    /// to its own namespaces.
    pub fn matches_kubernetes(&self, verbs: &[&str], resource: Option<&str>, namespace: &str) -> bool {
        let Some(resource) = resource else { return !self.is_kubernetes() };
        let verb = self.verbs.is_empty() || verbs.iter().any(|v| self.verbs.iter().any(|r| r == v));
        let resource = self.resources.is_empty() || self.resources.iter().any(|r| crate::glob::matches(r, resource));
        let spans_namespaces = namespace.is_empty()
            && self.action != GuardAction::Allow
            && verbs.iter().any(|v| matches!(*v, "list" | "watch" | "deletecollection"));
        let namespace = self.namespaces.is_empty()
            || spans_namespaces
            || (!namespace.is_empty() && self.namespaces.iter().any(|n| crate::glob::matches(n, namespace)));
        verb && resource && namespace
    }

    /// Whether the rule is about `reading`.
    pub fn matches_reading(&self, reading: &Reading<'_>) -> bool {
        let kubernetes = match &reading.kubernetes {
            Some(k) => self.matches_kubernetes(&[k.verb], k.resource, k.namespace),
            None => !self.is_kubernetes(),
        };
        kubernetes && self.matches(&[reading.method], &[reading.path])
    }
}

/// One way a request may be read by the server it goes to: a method it may
/// act on (its own, or one an override asks for), its path as written or
/// as resolved ([`normalized_path`]), and on Kubernetes targets one verb
/// the API server may authorise it as.
#[derive(Clone, Copy, Debug)]
pub struct Reading<'a> {
    /// Upper-case method.
    pub method: &'a str,
    /// Path, query left out.
    pub path: &'a str,
    /// What it is to Kubernetes, on Kubernetes targets.
    pub kubernetes: Option<KubeReading<'a>>,
}

/// What a request is to Kubernetes, in one [`Reading`].
#[derive(Clone, Copy, Debug)]
pub struct KubeReading<'a> {
    /// `get`, `list`, `create`…
    pub verb: &'a str,
    /// `resource[.group][/subresource]`; `None`: no resource (discovery).
    pub resource: Option<&'a str>,
    /// Empty: cluster-wide.
    pub namespace: &'a str,
}

/// The rule that decides a request that may be read in several ways: the
/// first rule matching each reading, and of those the strictest (deny,
/// then approve, then allow; the earlier reading's on a tie). A request
/// goes through only if each way a server may read it would: an allow
/// rule for `GET` does not let a `DELETE` that says it overrides to `GET`
/// past an approval, nor `/public/../admin` past a rule for `/admin/*`.
pub fn deciding_rule<'r>(rules: &'r [RequestRule], readings: &[Reading<'_>]) -> Option<&'r RequestRule> {
    let strictness = |rule: &RequestRule| match rule.action {
        GuardAction::Allow => 0,
        GuardAction::Approve => 1,
        GuardAction::Deny => 2,
    };
    let firsts = readings.iter().filter_map(|reading| rules.iter().find(|rule| rule.matches_reading(reading)));
    firsts.fold(None, |strictest: Option<&RequestRule>, rule| match strictest {
        Some(kept) if strictness(kept) >= strictness(rule) => Some(kept),
        _ => Some(rule),
    })
}

/// `path` with its percent-escapes decoded (an escape that is not one
/// kept as it is; bytes that are not UTF-8 replaced).
pub fn percent_decoded(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                decoded.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, ..) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// A request path as servers resolve it: percent-escapes decoded, `//`
/// collapsed, `.` and `..` segments resolved. Rules are matched against it
/// as well as the path as written, so `/%66iles/../files//x` cannot slip
/// past a rule for `/files/*`.
pub fn normalized_path(path: &str) -> String {
    let decoded = percent_decoded(path);
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split(['/', '\\']) {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let trailing = decoded.ends_with('/') && !segments.is_empty();
    format!("/{}{}", segments.join("/"), if trailing { "/" } else { "" })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_matched_as_servers_read_them() {
        assert_eq!(normalized_path("/files/x"), "/files/x");
        assert_eq!(normalized_path("/%66iles/../files//x"), "/files/x");
        assert_eq!(normalized_path("/a/./b/"), "/a/b/");
        assert_eq!(normalized_path("/../../etc"), "/etc");
        let rule = RequestRule {
            methods: vec!["DELETE".into()],
            path: "/files/*".into(),
            action: GuardAction::Deny,
            reason: None,
            verbs: Vec::new(),
            resources: Vec::new(),
            namespaces: Vec::new(),
            actors: Vec::new(),
        };
        for path in ["/files/x", "//files/x", "/%66iles/x", "/x/../files/x", "/files%2Fx/../y"] {
            assert!(rule.matches(&["DELETE"], &[path, &normalized_path(path)]), "{path}");
        }
        assert!(rule.matches(&["POST", "DELETE"], &["/files/x"]), "a method override");
        assert!(!rule.matches(&["GET"], &["/files/x"]));
        assert!(!rule.matches(&["DELETE"], &["/other"]));
    }

    #[test]
    fn openbao_credentials_take_airlocks_token_or_the_persons_login() {
        let errors = |credential: &str| {
            let text = format!(
                "[[target]]\nname = \"bao\"\nprotocol = \"https\"\nport = 8200\naddresses = [\"10.0.0.1\"]\n\
                 [target.https.credential]\n{credential}\n"
            );
            match crate::policy::Policy::from_sources([(std::path::Path::new("b.toml"), text.as_str())]) {
                Ok(policy) => {
                    let https = policy.targets[0].https.clone().unwrap();
                    assert!(https.credential.is_some());
                    Vec::new()
                }
                Err(e) => e.errors.iter().map(ToString::to_string).collect(),
            }
        };
        let person = "openbao = { addr = \"https://bao:8200\", jwt_auth = { role = \"people\" } }";
        assert_eq!(errors(&format!("kind = \"openbao_token\"\n{person}")), Vec::<String>::new());
        assert_eq!(errors(&format!("kind = \"bearer\"\npath = \"secret/data/api\"\n{person}")), Vec::<String>::new());
        let own = "openbao = { addr = \"https://bao:8200\", token_file = \"/etc/airlock/bao-token\" }";
        let refused = errors(&format!("kind = \"openbao_token\"\n{own}"));
        assert!(refused[0].contains("sends the person's own token"), "{refused:?}");
        let both = "openbao = { addr = \"https://b\", token_file = \"/t\", jwt_auth = { role = \"r\" } }";
        assert!(errors(&format!("kind = \"openbao_token\"\n{both}"))[0].contains("needs one of token_file"));
    }

    #[test]
    fn record_bodies_takes_a_flag_or_a_cap_within_bounds() {
        let read = |setting: &str| {
            let text = format!(
                "[[target]]\nname = \"api\"\nprotocol = \"https\"\nport = 443\naddresses = [\"10.0.0.1\"]\n\
                 [target.https]\nrecord_bodies = {setting}\n"
            );
            crate::policy::Policy::from_sources([(std::path::Path::new("b.toml"), text.as_str())])
                .map(|policy| policy.targets[0].https.clone().unwrap().record_bodies)
                .map_err(|e| e.errors.iter().map(ToString::to_string).collect::<Vec<_>>())
        };
        assert_eq!(read("true"), Ok(Some(DEFAULT_BODY_BYTES)));
        assert_eq!(read("false"), Ok(None));
        assert_eq!(read("{ max_bytes = 100 }"), Ok(Some(100)));
        for bad in ["{ max_bytes = 0 }", "{ max_bytes = 2000000 }", "{ max_bytes = -1 }"] {
            let errors = read(bad).unwrap_err();
            assert!(errors[0].contains("max_bytes must be between 1 and 1048576"), "{bad}: {errors:?}");
        }
        assert!(read("{ bytes = 100 }").is_err());
    }

    #[test]
    fn kubernetes_rules_match_verbs_resources_and_namespaces() {
        let exec = RequestRule {
            methods: Vec::new(),
            path: "*".into(),
            action: GuardAction::Approve,
            reason: None,
            verbs: vec!["create".into()],
            resources: vec!["pods/exec".into(), "pods/attach".into()],
            namespaces: vec!["prod*".into()],
            actors: Vec::new(),
        };
        assert!(exec.matches_kubernetes(&["create"], Some("pods/exec"), "prod-eu"));
        assert!(!exec.matches_kubernetes(&["create"], Some("pods/exec"), "dev"));
        assert!(!exec.matches_kubernetes(&["create"], Some("pods/exec"), ""), "cluster-wide is no namespace of theirs");
        let secrets = RequestRule {
            verbs: Vec::new(),
            resources: vec!["secrets".into()],
            action: GuardAction::Deny,
            ..exec.clone()
        };
        for spanning in ["list", "watch", "deletecollection"] {
            assert!(secrets.matches_kubernetes(&[spanning], Some("secrets"), ""), "{spanning} across namespaces");
        }
        assert!(!secrets.matches_kubernetes(&["list"], Some("secrets"), "dev"));
        let allow = RequestRule { action: GuardAction::Allow, ..secrets.clone() };
        assert!(!allow.matches_kubernetes(&["list"], Some("secrets"), ""), "an allow keeps to its namespaces");
        assert!(!exec.matches_kubernetes(&["get"], Some("pods/exec"), "prod"));
        assert!(!exec.matches_kubernetes(&["create"], Some("pods"), "prod"));
        assert!(!exec.matches_kubernetes(&["create"], None, "prod"), "discovery is no resource");
        let plain = RequestRule { verbs: Vec::new(), resources: Vec::new(), namespaces: Vec::new(), ..exec.clone() };
        assert!(
            plain.matches_kubernetes(&[], None, ""),
            "a rule without Kubernetes parts leaves them to path and method"
        );
    }
}

#[cfg(test)]
mod deciding_tests {
    use super::*;

    fn rule(action: GuardAction, methods: &[&str], path: &str) -> RequestRule {
        RequestRule {
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            path: path.into(),
            action,
            reason: None,
            verbs: Vec::new(),
            resources: Vec::new(),
            namespaces: Vec::new(),
            actors: Vec::new(),
        }
    }

    fn reading<'a>(method: &'a str, path: &'a str) -> Reading<'a> {
        Reading { method, path, kubernetes: None }
    }

    #[test]
    fn the_strictest_reading_decides() {
        let rules = [rule(GuardAction::Allow, &["GET"], "*"), rule(GuardAction::Approve, &[], "*")];
        // A DELETE that says it overrides to GET: the server deletes.
        let overridden = [reading("DELETE", "/x"), reading("GET", "/x")];
        assert_eq!(deciding_rule(&rules, &overridden).map(|r| r.action), Some(GuardAction::Approve));
        assert_eq!(deciding_rule(&rules, &[reading("GET", "/x")]).map(|r| r.action), Some(GuardAction::Allow));

        let paths = [rule(GuardAction::Allow, &[], "/public/*"), rule(GuardAction::Deny, &[], "*")];
        let dotted = [reading("GET", "/public/../admin/users"), reading("GET", "/admin/users")];
        assert_eq!(deciding_rule(&paths, &dotted).map(|r| r.action), Some(GuardAction::Deny));
        assert!(deciding_rule(&[rule(GuardAction::Deny, &["DELETE"], "*")], &[reading("GET", "/")]).is_none());
    }

    #[test]
    fn each_verb_a_request_may_be_authorised_as_is_a_reading() {
        let create = RequestRule { verbs: vec!["create".into()], ..rule(GuardAction::Deny, &[], "*") };
        let apply = |verb| Reading {
            method: "PATCH",
            path: "/api/v1/namespaces/prod/pods/new",
            kubernetes: Some(KubeReading { verb, resource: Some("pods"), namespace: "prod" }),
        };
        let rules = [RequestRule { verbs: vec!["patch".into()], ..rule(GuardAction::Allow, &[], "*") }, create];
        assert_eq!(
            deciding_rule(&rules, &[apply("patch"), apply("create")]).map(|r| r.action),
            Some(GuardAction::Deny),
            "server-side apply may create"
        );
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttps {
    ca_file: Option<Spanned<String>>,
    server_name: Option<String>,
    #[serde(default)]
    strip_cookies: Vec<String>,
    mask_secrets: Option<Spanned<bool>>,
    record_bodies: Option<Spanned<RawRecordBodies>>,
    credential: Option<Spanned<RawCredential>>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default = "any_path")]
    path: String,
    action: Spanned<String>,
    reason: Option<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    actors: Vec<String>,
}

/// `record_bodies = true` or `record_bodies = { max_bytes = N }`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawRecordBodies {
    Flag(bool),
    Limit(RawBodyLimit),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBodyLimit {
    max_bytes: i64,
}

/// Verbs the API server authorises requests by.
const VERBS: [&str; 8] = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"];

fn any_path() -> String {
    "*".into()
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
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpenBao {
    addr: String,
    token_file: Option<String>,
    jwt_auth: Option<RawJwtAuth>,
    ca_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwtAuth {
    #[serde(default = "default_jwt_mount")]
    mount: String,
    role: String,
}

fn default_jwt_mount() -> String {
    "jwt".into()
}

/// Checks `[target.https]`; each problem goes to `error` with its byte
/// offset. `has_approvers`: whether the target names approvers, which rules
/// holding requests need.
pub(super) fn options(
    raw: RawHttps,
    has_approvers: bool,
    kubernetes: bool,
    error: &mut dyn FnMut(usize, String),
) -> HttpsOptions {
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
            "openbao_token" => {
                let Some(openbao) = credential.openbao else {
                    missing("openbao");
                    return None;
                };
                let source = openbao_source(openbao, at, error)?;
                if !matches!(source.auth, OpenBaoAuth::Jwt { .. }) {
                    // Airlock's own token would be handed to every person.
                    error(at, "openbao_token sends the person's own token: give openbao jwt_auth, not token_file".into());
                }
                Some(HttpCredential::OpenBaoToken { openbao: source })
            }
            "kubernetes_impersonation" => {
                let Some(file) = credential.file else {
                    missing("file");
                    return None;
                };
                if !kubernetes {
                    error(at, "kubernetes_impersonation is for protocol = \"kubernetes\" targets".into());
                }
                if !absolute(&file) {
                    error(at, "credential file must be an absolute path".into());
                }
                Some(HttpCredential::KubernetesImpersonation { file: file.into(), groups: credential.groups })
            }
            "bearer" => {
                let (Some(openbao), Some(path)) = (credential.openbao, credential.path) else {
                    missing("openbao and path");
                    return None;
                };
                let source = openbao_source(openbao, at, error)?;
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
                    format!(
                        "unknown credential kind {other:?}, expected \"header_file\", \"bearer\", \"openbao_token\" or \"kubernetes_impersonation\""
                    ),
                );
                None
            }
        }
    });
    let mut rules = Vec::with_capacity(raw.rule.len());
    for rule in raw.rule {
        let at = rule.span().start;
        let rule = rule.into_inner();
        let action = match GuardAction::from_policy(rule.action.get_ref(), "request") {
            Ok(action) => action,
            Err(message) => {
                error(rule.action.span().start, message);
                continue;
            }
        };
        if action == GuardAction::Approve && !has_approvers {
            error(at, "requests held for approval need approvers: add [target.approvals] with users or groups".into());
        }
        let methods: Vec<String> = rule.methods.iter().map(|m| m.to_ascii_uppercase()).collect();
        if let Some(bad) = methods.iter().find(|m| hyper::Method::from_bytes(m.as_bytes()).is_err() || m.is_empty()) {
            error(at, format!("{bad:?} is not an HTTP method"));
        }
        if !rule.path.starts_with('/') && rule.path != "*" {
            error(at, format!("path {:?} must start with / (or be *)", rule.path));
        }
        let names_kubernetes = !(rule.verbs.is_empty() && rule.resources.is_empty() && rule.namespaces.is_empty());
        if names_kubernetes && !kubernetes {
            error(at, "verbs, resources and namespaces are for protocol = \"kubernetes\" targets".into());
        }
        if let Some(bad) = rule.verbs.iter().find(|v| !VERBS.contains(&v.as_str())) {
            error(at, format!("unknown Kubernetes verb {bad:?}, expected one of {}", VERBS.join(", ")));
        }
        rules.push(RequestRule {
            methods,
            path: rule.path,
            action,
            reason: rule.reason,
            verbs: rule.verbs,
            resources: rule.resources,
            namespaces: rule.namespaces,
            actors: rule.actors,
        });
    }
    let mask_secrets = match raw.mask_secrets {
        Some(flag) if !kubernetes => {
            error(flag.span().start, "mask_secrets is for protocol = \"kubernetes\" targets".into());
            false
        }
        Some(flag) => flag.into_inner(),
        None => kubernetes,
    };
    let record_bodies = raw.record_bodies.and_then(|raw| {
        let at = raw.span().start;
        match raw.into_inner() {
            RawRecordBodies::Flag(recorded) => recorded.then_some(DEFAULT_BODY_BYTES),
            RawRecordBodies::Limit(RawBodyLimit { max_bytes }) => match usize::try_from(max_bytes) {
                Ok(bytes @ 1..=MAX_BODY_BYTES) => Some(bytes),
                _ => {
                    error(at, format!("record_bodies max_bytes must be between 1 and {MAX_BODY_BYTES}"));
                    None
                }
            },
        }
    });
    HttpsOptions {
        ca_file,
        server_name: raw.server_name,
        strip_cookies: raw.strip_cookies,
        credential,
        rules,
        kubernetes,
        mask_secrets,
        record_bodies,
    }
}

/// Checks an `openbao = { … }` table: an address, and exactly one of Airlock's
/// token file or the person's JWT login.
fn openbao_source(raw: RawOpenBao, at: usize, error: &mut dyn FnMut(usize, String)) -> Option<OpenBaoSource> {
    let absolute = |path: &str| path.starts_with('/');
    if !(raw.addr.starts_with("http://") || raw.addr.starts_with("https://")) {
        error(at, format!("openbao addr {:?} must start with http:// or https://", raw.addr));
    }
    if !raw.token_file.as_deref().is_none_or(absolute) || !raw.ca_file.as_deref().is_none_or(absolute) {
        error(at, "openbao token_file and ca_file must be absolute paths".into());
    }
    let auth = match (raw.token_file, raw.jwt_auth) {
        (Some(file), None) => OpenBaoAuth::TokenFile(file.into()),
        (None, Some(jwt)) => OpenBaoAuth::Jwt { mount: jwt.mount, role: jwt.role },
        _ => {
            error(
                at,
                "openbao needs one of token_file (Airlock's token) or jwt_auth = { role = \"…\" } (the person's)"
                    .into(),
            );
            return None;
        }
    };
    Some(OpenBaoSource { addr: raw.addr, auth, ca_file: raw.ca_file.map(PathBuf::from) })
}
