//! What a request to the kubelet API asks to do, in the API's terms (kubelet's
//! `nodeAuthorizerAttributesGetter`): the verb from the HTTP method, the
//! resource `nodes` named after this node, and a subresource from the path,
//! so that RBAC rules on `nodes/stats`, `nodes/metrics`, `nodes/log`,
//! `nodes/spec` and `nodes/proxy` decide who may use which part.

use axum::http::Method;

use super::UserInfo;

/// kubelet's authorization attributes for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestAttributes {
    pub user: UserInfo,
    /// `create`, `get`, `update`, `patch`, `delete`; empty for other methods
    /// (which no policy allows).
    pub verb: &'static str,
    pub api_version: &'static str,
    pub resource: &'static str,
    pub subresource: &'static str,
    /// The node's name.
    pub name: String,
    pub path: String,
}

impl RequestAttributes {
    /// The 403 body, word for word kubelet's.
    pub fn forbidden_message(&self) -> String {
        format!(
            "Forbidden (user={}, verb={}, resource={}, subresource={})",
            self.user.name, self.verb, self.resource, self.subresource
        )
    }

    /// The 500 body when the authorizer failed (e.g. the apiserver is down).
    pub fn authorization_error_message(&self) -> String {
        format!(
            "Authorization error (user={}, verb={}, resource={}, subresource={})",
            self.user.name, self.verb, self.resource, self.subresource
        )
    }
}

/// The API verb of an HTTP method, as kubelet maps it.
pub fn verb(method: &Method) -> &'static str {
    match *method {
        Method::POST => "create",
        Method::GET => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    }
}

/// `path` is `prefix` itself or below it (`/stats` and `/stats/summary`,
/// not `/statsfoo`).
fn is_subpath(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The `nodes` subresource a kubelet API path belongs to; everything not
/// named here (exec, attach, run, portForward, containerLogs, pods, ...) is
/// `proxy`, the one that grants full control of the node.
pub fn subresource(path: &str) -> &'static str {
    if is_subpath(path, "/stats") {
        "stats"
    } else if is_subpath(path, "/metrics") {
        "metrics"
    } else if is_subpath(path, "/logs") {
        // "log", as pods/log.
        "log"
    } else if is_subpath(path, "/spec") {
        "spec"
    } else {
        "proxy"
    }
}

pub fn request_attributes(
    user: UserInfo,
    method: &Method,
    path: &str,
    node_name: &str,
) -> RequestAttributes {
    RequestAttributes {
        user,
        verb: verb(method),
        api_version: "v1",
        resource: "nodes",
        subresource: subresource(path),
        name: node_name.to_owned(),
        path: path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_kubelets_subresources() {
        for (path, sub) in [
            ("/stats", "stats"),
            ("/stats/summary", "stats"),
            ("/stats/", "stats"),
            ("/metrics", "metrics"),
            ("/metrics/cadvisor", "metrics"),
            ("/metrics/resource", "metrics"),
            ("/logs/", "log"),
            ("/logs/syslog", "log"),
            ("/spec/", "spec"),
            ("/exec/default/web/main", "proxy"),
            ("/run/default/web/main", "proxy"),
            ("/attach/default/web/main", "proxy"),
            ("/portForward/default/web", "proxy"),
            ("/containerLogs/default/web/main", "proxy"),
            ("/pods", "proxy"),
            ("/healthz", "proxy"),
            ("/events", "proxy"),
            // A prefix is not a subpath.
            ("/statsz", "proxy"),
            ("/metricsfoo", "proxy"),
            ("/logsx", "proxy"),
            ("/", "proxy"),
        ] {
            assert_eq!(subresource(path), sub, "{path}");
        }
    }

    #[test]
    fn methods_map_to_verbs() {
        assert_eq!(verb(&Method::GET), "get");
        assert_eq!(verb(&Method::POST), "create");
        assert_eq!(verb(&Method::PUT), "update");
        assert_eq!(verb(&Method::PATCH), "patch");
        assert_eq!(verb(&Method::DELETE), "delete");
        assert_eq!(verb(&Method::HEAD), "");
        assert_eq!(verb(&Method::OPTIONS), "");
    }

    #[test]
    fn attributes_name_the_node_and_read_like_kubelets_refusal() {
        let user = UserInfo {
            name: "alice".into(),
            uid: String::new(),
            groups: vec!["dev".into(), "system:authenticated".into()],
        };
        let a = request_attributes(user, &Method::POST, "/exec/default/web/main", "node1");
        assert_eq!(a.verb, "create");
        assert_eq!(a.resource, "nodes");
        assert_eq!(a.subresource, "proxy");
        assert_eq!(a.name, "node1");
        assert_eq!(a.api_version, "v1");
        assert_eq!(
            a.forbidden_message(),
            "Forbidden (user=alice, verb=create, resource=nodes, subresource=proxy)"
        );
        let stats = request_attributes(a.user.clone(), &Method::GET, "/stats/summary", "node1");
        assert_eq!(
            stats.forbidden_message(),
            "Forbidden (user=alice, verb=get, resource=nodes, subresource=stats)"
        );
    }
}
