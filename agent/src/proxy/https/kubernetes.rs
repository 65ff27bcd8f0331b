//! What a request to a Kubernetes API server is about, read from its method,
//! path and query the way the API server's own request-info resolver reads
//! them (verb, API group and version, namespace, resource, subresource,
//! name), so records and rules speak Kubernetes; and the `Status` objects
//! kubectl prints when Airlock answers itself.

use hyper::{Method, StatusCode};
use serde::Serialize;

use crate::{
    masking::{MaskingPolicy, json_path::JsonPath},
    source::SourceLocation,
};

/// Where Secrets' values stand in answers about them: objects, lists,
/// watch events and tables alike, and the copy of the whole object `kubectl
/// apply` leaves in an annotation.
const SECRET_VALUES: [&str; 3] =
    ["$..data", "$..stringData", "$..annotations['kubectl.kubernetes.io/last-applied-configuration']"];

/// The masking of answers about Secrets: the target's own masking
/// (`target`), and every Secret value, for people it does not exempt.
pub fn secrets_masking(target: Option<&MaskingPolicy>) -> MaskingPolicy {
    let paths: Vec<JsonPath> = SECRET_VALUES.iter().filter_map(|path| JsonPath::parse(path).ok()).collect();
    let location = SourceLocation { file: "built-in Kubernetes Secret masking".into(), line: 0, column: 0 };
    MaskingPolicy::with_paths(target, &paths, location)
}

/// A request as Kubernetes authorises it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KubeRequest {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`; for paths outside the API (`/version`,
    /// `/healthz`), the method in lower case.
    pub verb: String,
    /// Whether the path names an API resource (else: discovery, health…).
    pub resource_request: bool,
    /// API group; empty for the core group (`/api/v1`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    /// API version (`v1`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// Namespace; empty for cluster-wide requests.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Resource (`pods`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource: String,
    /// Subresource (`exec`, `log`, `status`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subresource: String,
    /// Object name; empty for collections.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
}

impl KubeRequest {
    /// Reads `method` on `path` (already normalised, no query) with `query`.
    pub fn read(method: &Method, path: &str, query: Option<&str>) -> Self {
        let parts: Vec<&str> = path.trim_matches('/').split('/').filter(|p| !p.is_empty()).collect();
        let lower_method = method.as_str().to_ascii_lowercase();
        let (api_group, api_version, rest) = match parts.as_slice() {
            ["api", version, rest @ ..] => (String::new(), (*version).to_owned(), rest),
            ["apis", group, version, rest @ ..] => ((*group).to_owned(), (*version).to_owned(), rest),
            _ => return Self { verb: lower_method, ..Self::default() },
        };
        // `/api/v1` or `/apis/apps/v1` alone: discovery.
        if rest.is_empty() {
            return Self { verb: lower_method, api_group, api_version, ..Self::default() };
        }
        let (namespace, rest) = match rest {
            // `namespaces/NS/RESOURCE…`; `namespaces` and `namespaces/NAME` are the resource itself.
            ["namespaces", namespace, rest @ ..] if !rest.is_empty() => ((*namespace).to_owned(), rest),
            rest => (String::new(), rest),
        };
        let (resource, name, subresource) = match rest {
            [resource] => (*resource, "", ""),
            [resource, name] => (*resource, *name, ""),
            [resource, name, subresource, ..] => (*resource, *name, *subresource),
            [] => ("", "", ""),
        };
        let watching = query.is_some_and(|q| {
            q.split('&').any(|pair| matches!(pair.split_once('='), Some(("watch", "true" | "1"))) || pair == "watch")
        });
        let verb = match *method {
            Method::GET | Method::HEAD if watching => "watch",
            Method::GET | Method::HEAD if name.is_empty() => "list",
            Method::GET | Method::HEAD => "get",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE if name.is_empty() => "deletecollection",
            Method::DELETE => "delete",
            _ => lower_method.as_str(),
        };
        Self {
            verb: verb.to_owned(),
            resource_request: true,
            api_group,
            api_version,
            namespace,
            resource: resource.to_owned(),
            subresource: subresource.to_owned(),
            name: name.to_owned(),
        }
    }

    /// `resource` or `resource/subresource`, with `.group` for named groups
    /// (`pods/exec`, `deployments.apps`), as rules name resources.
    pub fn resource_name(&self) -> String {
        let mut name = self.resource.clone();
        if !self.api_group.is_empty() {
            name.push('.');
            name.push_str(&self.api_group);
        }
        if !self.subresource.is_empty() {
            name.push('/');
            name.push_str(&self.subresource);
        }
        name
    }

    /// Whether this request opens a stream into a container (`pods/exec`,
    /// `pods/attach`), which is recorded.
    pub fn opens_a_shell(&self) -> bool {
        self.resource_request
            && self.api_group.is_empty()
            && self.resource == "pods"
            && matches!(self.subresource.as_str(), "exec" | "attach")
    }

    /// Whether this request reads or watches core Secrets, whose data
    /// answers carry.
    pub fn reads_secrets(&self) -> bool {
        self.resource_request && self.api_group.is_empty() && self.resource == "secrets"
    }
}

/// A Kubernetes `Status` failure, as the API server itself answers: kubectl
/// prints `Error from server (REASON): MESSAGE`.
pub fn status(code: StatusCode, message: &str) -> String {
    let reason = match code {
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
        StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => "Timeout",
        _ => "InternalError",
    };
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(method: Method, path: &str, query: Option<&str>) -> KubeRequest {
        KubeRequest::read(&method, path, query)
    }

    #[test]
    fn paths_read_as_the_api_server_reads_them() {
        let pods = read(Method::GET, "/api/v1/namespaces/default/pods", Some("limit=500"));
        assert_eq!((pods.verb.as_str(), pods.namespace.as_str(), pods.resource.as_str()), ("list", "default", "pods"));
        assert!(pods.resource_request && pods.api_group.is_empty());

        let exec = read(Method::POST, "/api/v1/namespaces/ns/pods/web-1/exec", Some("command=sh&stdin=true"));
        assert_eq!((exec.verb.as_str(), exec.name.as_str()), ("create", "web-1"));
        assert_eq!(exec.resource_name(), "pods/exec");

        let deploy = read(Method::DELETE, "/apis/apps/v1/namespaces/prod/deployments/api", None);
        assert_eq!((deploy.verb.as_str(), deploy.resource_name().as_str()), ("delete", "deployments.apps"));
        assert_eq!(read(Method::DELETE, "/apis/apps/v1/namespaces/prod/deployments", None).verb, "deletecollection");

        let watch = read(Method::GET, "/api/v1/secrets", Some("watch=true&resourceVersion=1"));
        assert_eq!((watch.verb.as_str(), watch.namespace.as_str()), ("watch", ""));
        assert!(watch.reads_secrets());

        // A namespace is itself a resource.
        let namespace = read(Method::DELETE, "/api/v1/namespaces/prod", None);
        assert_eq!(
            (namespace.resource.as_str(), namespace.name.as_str(), namespace.verb.as_str()),
            ("namespaces", "prod", "delete")
        );
        assert_eq!(read(Method::PATCH, "/api/v1/nodes/n1/status", None).resource_name(), "nodes/status");
    }

    #[test]
    fn discovery_and_other_paths_are_not_resource_requests() {
        for path in ["/version", "/api", "/api/v1", "/apis/apps/v1", "/openapi/v3", "/healthz"] {
            let request = read(Method::GET, path, None);
            assert!(!request.resource_request && request.verb == "get", "{path}: {request:?}");
        }
    }

    #[test]
    fn secret_values_are_masked_for_people_the_target_does_not_exempt() {
        let policy = secrets_masking(None);
        assert_eq!(policy.rules.len(), SECRET_VALUES.len(), "every path parses");
        let masker = crate::masking::Masker::new(
            &policy,
            "alice",
            &[],
            std::sync::Arc::new(crate::masking::TokenKey::from_bytes(b"k")),
        );
        assert!(!masker.is_noop());
    }

    #[test]
    fn refusals_are_status_objects() {
        let status: serde_json::Value = serde_json::from_str(&status(StatusCode::FORBIDDEN, "no")).unwrap();
        assert_eq!(status["kind"], "Status");
        assert_eq!((status["reason"].as_str(), status["code"].as_u64()), (Some("Forbidden"), Some(403)));
    }
}
