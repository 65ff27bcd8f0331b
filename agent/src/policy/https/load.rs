//! `[target.https]` read from a policy file: its keys checked, each
//! error at its place.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::{DEFAULT_BODY_BYTES, HttpCredential, HttpsOptions, MAX_BODY_BYTES, OpenBaoSource, RequestRule};
use crate::{guardrails::GuardAction, policy::OpenBaoAuth};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::policy) struct RawHttps {
    ca_file: Option<Spanned<String>>,
    server_name: Option<String>,
    #[serde(default)]
    other_names: Vec<String>,
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
pub(in crate::policy) fn options(
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
    for name in &raw.other_names {
        let dns = rustls_pki_types::ServerName::try_from(name.as_str());
        if !matches!(dns, Ok(rustls_pki_types::ServerName::DnsName(_))) {
            error(0, format!("other_names: {name:?} is not a DNS name (the address may always be named)"));
        }
    }
    if !raw.other_names.is_empty() && raw.server_name.is_none() {
        error(0, "other_names are other names of the site server_name names: set server_name too".into());
    }
    // One address can serve many sites: a target that sends a credential
    // names the one it is for, or a client would choose (by its TLS name
    // and Host) which site gets it.
    if let Some(credential) = &raw.credential
        && raw.server_name.is_none()
    {
        error(
            credential.span().start,
            "a target that sends a credential must name the site it is for: set server_name to the name in the \
             target's certificate (or the address clients dial); requests naming another site are refused"
                .into(),
        );
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
        other_names: raw.other_names,
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

#[cfg(test)]
mod tests {
    use super::DEFAULT_BODY_BYTES;

    #[test]
    fn openbao_credentials_take_airlocks_token_or_the_persons_login() {
        let errors = |credential: &str| {
            let text = format!(
                "[[target]]\nname = \"bao\"\nprotocol = \"https\"\nport = 8200\naddresses = [\"10.0.0.1\"]\n\
                 [target.https]\nserver_name = \"bao\"\n[target.https.credential]\n{credential}\n"
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
        let unnamed = "[[target]]\nname = \"api\"\nprotocol = \"https\"\nport = 443\naddresses = [\"10.0.0.1\"]\n\
                       [target.https.credential]\nkind = \"header_file\"\nheader = \"X-Key\"\nfile = \"/k\"\n";
        let refused = crate::policy::Policy::from_sources([(std::path::Path::new("a.toml"), unnamed)]).unwrap_err();
        assert!(refused.errors[0].to_string().contains("must name the site it is for: set server_name"), "{refused:?}");
    }

    #[test]
    fn other_names_are_dns_names_of_a_named_site() {
        let load = |https: &str| {
            let text = format!(
                "[[target]]\nname = \"api\"\nprotocol = \"https\"\nport = 443\naddresses = [\"10.0.0.1\"]\n\
                 [target.https]\n{https}\n"
            );
            crate::policy::Policy::from_sources([(std::path::Path::new("o.toml"), text.as_str())])
        };
        let policy = load("server_name = \"api.internal\"\nother_names = [\"api-lb.corp\"]").unwrap();
        assert_eq!(policy.targets[0].https.as_ref().unwrap().other_names, ["api-lb.corp"]);
        let refused = load("server_name = \"api.internal\"\nother_names = [\"10.0.0.2\"]").unwrap_err();
        assert!(refused.errors[0].to_string().contains("is not a DNS name"), "{refused:?}");
        let refused = load("other_names = [\"api-lb.corp\"]").unwrap_err();
        assert!(refused.errors[0].to_string().contains("set server_name too"), "{refused:?}");
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
}
