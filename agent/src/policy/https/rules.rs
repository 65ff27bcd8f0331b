//! `[[target.https.rule]]`: which requests a rule is about, read the ways
//! a server may read them (methods it may pass for, the path as written
//! and resolved, Kubernetes verbs), and the rule that decides.

use crate::guardrails::GuardAction;

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

/// A request path as servers resolve it: percent-escapes decoded, `//`
/// collapsed, `.` and `..` segments resolved. Rules are matched against it
/// as well as the path as written, so `/%66iles/../files//x` cannot slip
/// past a rule for `/files/*`.
pub fn normalized_path(path: &str) -> String {
    let decoded = crate::percent::decoded(path);
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
