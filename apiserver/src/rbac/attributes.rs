//! The attributes of a request that authorization decides on, derived from
//! its method, path and query as kube-apiserver's `RequestInfoFactory`
//! does, and the words of its 403.

use crate::auth::UserInfo;
use crate::status::ApiError;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub user: UserInfo,
    pub verb: String,
    /// False for non-resource paths (`/healthz`, `/version`, `/api`).
    pub resource_request: bool,
    pub path: String,
    pub namespace: String,
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
}

/// Subresources of a namespace reached as `/namespaces/{name}/{sub}`.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

/// The attributes of `method path` with query `params` for `user`.
pub fn from_request(
    user: UserInfo,
    method: &str,
    path: &str,
    params: &std::collections::HashMap<String, String>,
) -> Attributes {
    let mut a = Attributes {
        user,
        path: path.to_owned(),
        verb: method.to_ascii_lowercase(),
        ..Default::default()
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest: &[&str] = match parts.as_slice() {
        ["api", version, rest @ ..] => {
            a.api_version = (*version).into();
            rest
        }
        ["apis", group, version, rest @ ..] => {
            a.api_group = (*group).into();
            a.api_version = (*version).into();
            rest
        }
        _ => return a,
    };
    if rest.is_empty() {
        // `/api/v1`, `/apis/apps/v1`: discovery, not a resource.
        return a;
    }
    a.resource_request = true;
    let mut rest = rest;
    let mut watch_path = false;
    if rest[0] == "watch" {
        watch_path = true;
        rest = &rest[1..];
    }
    a.verb = match method {
        "POST" => "create",
        "GET" | "HEAD" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        other => {
            return Attributes {
                verb: other.to_ascii_lowercase(),
                ..a
            };
        }
    }
    .into();
    if watch_path {
        a.verb = "watch".into();
    }
    if rest.first() == Some(&"namespaces") {
        if let Some(ns) = rest.get(1) {
            a.namespace = (*ns).into();
            if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
                rest = &rest[2..];
            }
        }
    }
    a.resource = rest.first().copied().unwrap_or_default().into();
    a.name = rest.get(1).copied().unwrap_or_default().into();
    a.subresource = rest.get(2).copied().unwrap_or_default().into();
    let param = |k: &str| params.get(k).map(String::as_str);
    if a.name.is_empty() && a.verb == "get" {
        let watch =
            param("watch").is_some_and(|w| matches!(w, "1" | "t" | "T" | "true" | "TRUE" | "True"));
        a.verb = if watch { "watch" } else { "list" }.into();
    }
    if a.name.is_empty() && a.verb == "delete" {
        a.verb = "deletecollection".into();
    }
    // A list or watch of one object by `metadata.name` is about that name.
    if matches!(a.verb.as_str(), "list" | "watch" | "deletecollection")
        && let Some(selector) = param("fieldSelector")
        && let Some(name) = selector.strip_prefix("metadata.name=")
        && !name.contains(',')
    {
        a.name = name.trim_start_matches('=').into();
    }
    a
}

impl Attributes {
    /// `pods/log`, or the resource alone.
    pub fn full_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// What the user may not do, in kube-apiserver's words.
    pub fn forbidden_message(&self) -> String {
        let user = &self.user.name;
        if !self.resource_request {
            return format!("User {user:?} cannot {} path {:?}", self.verb, self.path);
        }
        let resource = self.full_resource();
        if self.namespace.is_empty() {
            format!(
                "User {user:?} cannot {} resource {resource:?} in API group {:?} at the cluster scope",
                self.verb, self.api_group
            )
        } else {
            format!(
                "User {user:?} cannot {} resource {resource:?} in API group {:?} in the namespace {:?}",
                self.verb, self.api_group, self.namespace
            )
        }
    }

    /// The 403 a denied request gets (`responsewriters.Forbidden`).
    pub fn forbidden(&self, reason: &str) -> ApiError {
        let mut why = self.forbidden_message();
        if !reason.is_empty() {
            why = format!("{why}: {reason}");
        }
        if !self.resource_request {
            return ApiError::new(403, "Forbidden", format!("forbidden: {why}"));
        }
        let subject = crate::status::Subject {
            group: &self.api_group,
            plural: &self.resource,
            kind: "",
        };
        if self.name.is_empty() {
            let qualified = if self.api_group.is_empty() {
                self.resource.clone()
            } else {
                format!("{}.{}", self.resource, self.api_group)
            };
            let mut e = ApiError::forbidden(subject, "", &why);
            e.message = format!("{qualified} is forbidden: {why}");
            return e;
        }
        ApiError::forbidden(subject, &self.name, &why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(method: &str, path: &str, query: &str) -> Attributes {
        let params = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.replace("%3D", "=")))
            .collect();
        from_request(UserInfo::default(), method, path, &params)
    }

    #[test]
    fn verbs_follow_method_name_and_watch() {
        let a = attrs("GET", "/api/v1/namespaces/default/pods", "");
        assert_eq!(
            (a.verb.as_str(), a.namespace.as_str(), a.resource.as_str()),
            ("list", "default", "pods")
        );
        assert_eq!(attrs("GET", "/api/v1/pods", "watch=true").verb, "watch");
        assert_eq!(attrs("GET", "/api/v1/watch/pods", "").verb, "watch");
        assert_eq!(
            attrs("DELETE", "/api/v1/namespaces/a/pods", "").verb,
            "deletecollection"
        );
        let a = attrs("POST", "/api/v1/namespaces/a/pods/web/eviction", "");
        assert_eq!(
            (a.verb.as_str(), a.name.as_str(), a.subresource.as_str()),
            ("create", "web", "eviction")
        );
        let a = attrs(
            "PATCH",
            "/apis/apps/v1/namespaces/a/deployments/d/scale",
            "",
        );
        assert_eq!(
            (
                a.api_group.as_str(),
                a.verb.as_str(),
                a.subresource.as_str()
            ),
            ("apps", "patch", "scale")
        );
        let a = attrs(
            "GET",
            "/api/v1/namespaces/a/configmaps",
            "fieldSelector=metadata.name%3Dsettings",
        );
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("list", "settings"));
    }

    #[test]
    fn namespaces_are_resources_with_their_own_subresources() {
        let a = attrs("GET", "/api/v1/namespaces/kube-system", "");
        assert_eq!(
            (a.resource.as_str(), a.name.as_str(), a.namespace.as_str()),
            ("namespaces", "kube-system", "kube-system")
        );
        let a = attrs("PUT", "/api/v1/namespaces/x/finalize", "");
        assert_eq!(
            (a.resource.as_str(), a.name.as_str(), a.subresource.as_str()),
            ("namespaces", "x", "finalize")
        );
        let a = attrs("GET", "/api/v1/namespaces", "");
        assert_eq!(
            (a.verb.as_str(), a.resource.as_str()),
            ("list", "namespaces")
        );
    }

    #[test]
    fn discovery_and_other_paths_are_non_resource_requests() {
        for p in ["/api", "/apis/apps/v1", "/version", "/healthz"] {
            let a = attrs("GET", p, "");
            assert!(!a.resource_request, "{p}");
            assert_eq!(a.verb, "get");
        }
    }

    #[test]
    fn forbidden_messages_are_kube_apiservers() {
        let mut a = attrs("GET", "/api/v1/namespaces/default/pods", "");
        a.user.name = "x".into();
        assert_eq!(
            a.forbidden("").message,
            "pods is forbidden: User \"x\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let mut a = attrs(
            "GET",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/view",
            "",
        );
        a.user.name = "x".into();
        assert_eq!(
            a.forbidden("").message,
            "clusterroles.rbac.authorization.k8s.io \"view\" is forbidden: User \"x\" cannot get resource \"clusterroles\" in API group \"rbac.authorization.k8s.io\" at the cluster scope"
        );
        let mut a = attrs("GET", "/metrics", "");
        a.user.name = "x".into();
        assert_eq!(
            a.forbidden("").message,
            "forbidden: User \"x\" cannot get path \"/metrics\""
        );
    }
}
