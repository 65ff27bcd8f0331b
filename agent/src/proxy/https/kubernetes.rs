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

/// Whether `path` (as the client wrote it) could be read two ways: decoded,
/// it has an empty segment between others, a `.` or `..` segment, or a
/// backslash. The API server keeps such segments as they are (`namespaces//secrets`
/// lists every namespace's Secrets; the kubelet's routes take `\..` in a
/// name), where a reading that resolves them would see another request.
/// kubectl never sends such paths; Airlock refuses them.
pub fn ambiguous_path(path: &str) -> bool {
    let decoded = crate::percent::decoded(path);
    let inner = decoded.trim_matches('/');
    decoded.contains('\\') || (!inner.is_empty() && inner.split('/').any(|s| matches!(s, "" | "." | "..")))
}

/// What may follow `namespaces/NAME` and still be about the namespace.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

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
    /// Where a `nodes/proxy` request goes on the node's kubelet: the first
    /// segment of the proxied path (`exec`, `attach`, `run`, `pods`…; after
    /// `cri/`, the container runtime's stream it names).
    #[serde(skip)]
    pub kubelet_endpoint: String,
}

impl KubeRequest {
    /// Reads `method` on `path` (already normalised, no query) with `query`,
    /// step by step as the API server's `RequestInfoFactory` does: a rule
    /// or a masking decision that read a request otherwise than the server
    /// acts on it could be walked around.
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
        // `/api/v1/watch/…` and `/api/v1/proxy/…`: the verb is in the path
        // (deprecated, still served), whatever the method.
        let (special_verb, rest) = match rest {
            [verb @ ("watch" | "proxy"), rest @ ..] if !rest.is_empty() => (Some(*verb), rest),
            rest => (None, rest),
        };
        let (namespace, rest) = match rest {
            // `namespaces/NS/RESOURCE…`; `namespaces/NS` and its own
            // subresources (`status`, `finalize`) are the namespace itself.
            ["namespaces", namespace, next, ..] if !NAMESPACE_SUBRESOURCES.contains(next) => {
                ((*namespace).to_owned(), &rest[2..])
            }
            ["namespaces", namespace, ..] => ((*namespace).to_owned(), rest),
            rest => (String::new(), rest),
        };
        let kubelet_endpoint = match rest {
            // The container runtime's streams, which the kubelet serves too.
            ["nodes", _, "proxy", "cri", endpoint, ..] if special_verb.is_none() => (*endpoint).to_owned(),
            ["nodes", _, "proxy", endpoint, ..] if special_verb.is_none() => (*endpoint).to_owned(),
            _ => String::new(),
        };
        let (resource, name, subresource) = match rest {
            // `proxy` takes no subresource: what follows the name is the proxied path.
            [resource, name, ..] if special_verb == Some("proxy") => (*resource, *name, ""),
            [resource] => (*resource, "", ""),
            [resource, name] => (*resource, *name, ""),
            [resource, name, subresource, ..] => (*resource, *name, *subresource),
            [] => ("", "", ""),
        };
        let verb = match (special_verb, method) {
            (Some(verb), _) => verb,
            (None, &Method::GET | &Method::HEAD) if name.is_empty() => match super::query::flag(query, "watch") {
                Some(true) => "watch",
                _ => "list",
            },
            (None, &Method::GET | &Method::HEAD) => "get",
            (None, &Method::POST) => "create",
            (None, &Method::PUT) => "update",
            (None, &Method::PATCH) => "patch",
            (None, &Method::DELETE) if name.is_empty() => "deletecollection",
            (None, &Method::DELETE) => "delete",
            (None, _) => lower_method.as_str(),
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
            kubelet_endpoint,
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
    /// `pods/attach`), which is recorded. Through `nodes/proxy` a client
    /// reaches the kubelet's own `exec` and `attach`, which speak the same
    /// stream protocols: recorded the same way, not a way around it.
    pub fn opens_a_shell(&self) -> bool {
        let core = self.resource_request && self.api_group.is_empty();
        let pod_stream = self.resource == "pods" && matches!(self.subresource.as_str(), "exec" | "attach");
        let kubelet_stream = self.resource == "nodes"
            && self.subresource == "proxy"
            && matches!(self.kubelet_endpoint.as_str(), "exec" | "attach");
        core && (pod_stream || kubelet_stream)
    }

    /// Whether this request reads or watches core Secrets, whose data
    /// answers carry.
    pub fn reads_secrets(&self) -> bool {
        self.resource_request && self.api_group.is_empty() && self.resource == "secrets"
    }
}

/// The verbs the API server may authorise `read` (a request with `method`
/// and `headers`) as: its own, and `create` where it may create the object
/// — a server-side apply (a PATCH of `application/apply-patch+…`,
/// `kubectl apply --server-side`) and a PUT to a resource that allows
/// create on update, which the API server checks as a create as well.
pub fn verbs_of(read: &KubeRequest, method: &Method, headers: &hyper::HeaderMap) -> Vec<String> {
    let content_type = headers.get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let applies = *method == Method::PATCH && content_type.trim_start().to_ascii_lowercase().starts_with(APPLY_PATCH);
    let may_create = read.resource_request && !read.name.is_empty() && (applies || *method == Method::PUT);
    let mut verbs = vec![read.verb.clone()];
    if may_create {
        verbs.push("create".to_owned());
    }
    verbs
}

/// The media type of a server-side apply's body, before `+yaml`, `+json`
/// or `+cbor`.
const APPLY_PATCH: &str = "application/apply-patch";

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
    fn the_verb_in_a_path_and_namespaces_read_as_the_api_server_reads_them() {
        // The deprecated watch paths, still served: a watch of Secrets.
        for path in ["/api/v1/watch/secrets", "/api/v1/watch/namespaces/default/secrets"] {
            let watch = read(Method::GET, path, None);
            assert_eq!((watch.verb.as_str(), watch.resource.as_str()), ("watch", "secrets"), "{path}");
            assert!(watch.reads_secrets(), "{path}");
        }
        let one = read(Method::GET, "/api/v1/watch/namespaces/default/secrets/db", None);
        assert_eq!((one.verb.as_str(), one.namespace.as_str(), one.name.as_str()), ("watch", "default", "db"));
        let proxy = read(Method::GET, "/api/v1/proxy/namespaces/ns/pods/web-1/exec/x", None);
        assert_eq!(
            (proxy.verb.as_str(), proxy.resource_name().as_str(), proxy.name.as_str()),
            ("proxy", "pods", "web-1")
        );
        assert!(!proxy.opens_a_shell(), "what follows a proxied name is a path, not a subresource");

        // The kubelet's exec through the node proxy is a shell like pods/exec.
        let kubelet = read(Method::GET, "/api/v1/nodes/node-1:10250/proxy/exec/default/web-1/app", Some("command=sh"));
        assert_eq!((kubelet.resource_name().as_str(), kubelet.kubelet_endpoint.as_str()), ("nodes/proxy", "exec"));
        assert!(kubelet.opens_a_shell());
        assert!(read(Method::POST, "/api/v1/nodes/n/proxy/attach/ns/p/c", None).opens_a_shell());
        assert!(read(Method::GET, "/api/v1/nodes/n/proxy/cri/exec/Zq3x", None).opens_a_shell());
        assert!(!read(Method::GET, "/api/v1/nodes/n/proxy/pods", None).opens_a_shell());
        assert!(
            !read(Method::GET, "/api/v1/namespaces/ns/pods/p/proxy/exec", None).opens_a_shell(),
            "the pod's own port"
        );

        // A namespace's own subresources, and its name as its namespace.
        let finalize = read(Method::PUT, "/api/v1/namespaces/prod/finalize", None);
        assert_eq!(
            (finalize.resource_name().as_str(), finalize.name.as_str(), finalize.namespace.as_str()),
            ("namespaces/finalize", "prod", "prod")
        );
        assert_eq!(read(Method::DELETE, "/api/v1/namespaces/prod", None).namespace, "prod");
        assert_eq!(read(Method::GET, "/api/v1/namespaces", None).namespace, "");
    }

    #[test]
    fn watch_is_read_from_the_query_as_go_reads_it() {
        let verb = |query: &str| read(Method::GET, "/api/v1/namespaces/default/secrets", Some(query)).verb;
        for watching in ["watch", "watch=", "watch=yes", "watch=T", "wat%63h=1", "watch=%74rue", "a=1&watch=TRUE"] {
            assert_eq!(verb(watching), "watch", "{watching}");
        }
        for listing in ["watch=0", "watch=False", "watch=false&watch=true", "x;watch=1", "watch%=1", "watchx=1", ""] {
            assert_eq!(verb(listing), "list", "{listing}");
        }
        // With a name, the server gets the object, watch or not.
        assert_eq!(read(Method::GET, "/api/v1/namespaces/default/secrets/db", Some("watch=1")).verb, "get");
    }

    #[test]
    fn paths_a_server_could_read_otherwise_are_ambiguous() {
        for ambiguous in [
            "/api/v1/namespaces//secrets",
            "/api/v1/namespaces/%2F/secrets",
            "/api/v1/namespaces/a/pods/../secrets",
            "/api/v1/nodes/n/proxy/exec/ns/p/u%5C..%5C..%5Cx/c",
            "/api/v1/./pods",
            "/api/v1/namespaces/a/pods/%2E%2E",
        ] {
            assert!(ambiguous_path(ambiguous), "{ambiguous}");
        }
        for plain in ["/", "/api/v1/namespaces/default/pods/", "/version", "//api/v1/pods", "/api/v1/pods/a.b..c"] {
            assert!(!ambiguous_path(plain), "{plain}");
        }
    }

    #[test]
    fn an_apply_or_a_put_may_create() {
        let headers = |content_type: &'static str| {
            let mut headers = hyper::HeaderMap::new();
            headers.insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
            headers
        };
        let path = "/api/v1/namespaces/prod/pods/new";
        let verbs =
            |method: Method, content_type| verbs_of(&read(method.clone(), path, None), &method, &headers(content_type));
        assert_eq!(verbs(Method::PATCH, "application/apply-patch+yaml"), ["patch", "create"]);
        assert_eq!(verbs(Method::PATCH, "application/merge-patch+json"), ["patch"]);
        assert_eq!(verbs(Method::PUT, "application/json"), ["update", "create"]);
        assert_eq!(verbs(Method::GET, "application/json"), ["get"]);
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
