//! The Node authorizer: a node's credentials (user `system:node:<name>` in
//! group `system:nodes`) read only the Secrets, ConfigMaps,
//! PersistentVolumeClaims and ServiceAccount tokens of pods bound to that
//! node; everything else a kubelet does is the node rules'
//! (`bootstrappolicy.NodeRules`). The graph of who uses what is kept from
//! the pods.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::PolicyRule;

use super::attributes::Attributes;
use super::rules::rule_allows;
use crate::auth::UserInfo;

pub const NODES_GROUP: &str = "system:nodes";
const NODE_USER_PREFIX: &str = "system:node:";

/// The node a user is, if its credentials are a node's.
pub fn node_name(user: &UserInfo) -> Option<&str> {
    if !user.groups.iter().any(|g| g == NODES_GROUP) {
        return None;
    }
    user.name
        .strip_prefix(NODE_USER_PREFIX)
        .filter(|n| !n.is_empty())
}

/// What one pod uses, by kind, in its namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRefs {
    pub namespace: String,
    pub secrets: BTreeSet<String>,
    pub config_maps: BTreeSet<String>,
    pub claims: BTreeSet<String>,
    pub service_account: String,
}

/// The objects `pod` refers to: volumes (projected sources included),
/// environment, image pull secrets and its service account.
pub fn pod_refs(pod: &Pod) -> PodRefs {
    let mut r = PodRefs {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        ..Default::default()
    };
    let Some(spec) = &pod.spec else { return r };
    r.service_account = spec
        .service_account_name
        .clone()
        .unwrap_or_else(|| "default".into());
    for s in spec.image_pull_secrets.iter().flatten() {
        r.secrets.insert(s.name.clone());
    }
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    for v in spec.volumes.iter().flatten() {
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            r.secrets.insert(s);
        }
        if let Some(c) = &v.config_map {
            r.config_maps.insert(c.name.clone());
        }
        if let Some(c) = &v.persistent_volume_claim {
            r.claims.insert(c.claim_name.clone());
        }
        if v.ephemeral.is_some() {
            r.claims.insert(format!("{pod_name}-{}", v.name));
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(s) = &source.secret {
                r.secrets.insert(s.name.clone());
            }
            if let Some(c) = &source.config_map {
                r.config_maps.insert(c.name.clone());
            }
        }
    }
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in containers {
        for e in c.env_from.iter().flatten() {
            if let Some(s) = &e.secret_ref {
                r.secrets.insert(s.name.clone());
            }
            if let Some(m) = &e.config_map_ref {
                r.config_maps.insert(m.name.clone());
            }
        }
        for e in c.env.iter().flatten() {
            let Some(from) = &e.value_from else { continue };
            if let Some(s) = &from.secret_key_ref {
                r.secrets.insert(s.name.clone());
            }
            if let Some(m) = &from.config_map_key_ref {
                r.config_maps.insert(m.name.clone());
            }
        }
    }
    r
}

/// Pods by the node they are bound to, with what each uses.
#[derive(Debug, Default)]
pub struct NodeGraph {
    /// node → (namespace/name of the pod → its references)
    pods: HashMap<String, HashMap<String, PodRefs>>,
    /// pod (namespace/name) → node, to move or drop a pod's entry.
    node_of: HashMap<String, String>,
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

impl NodeGraph {
    pub fn apply(&mut self, pod: &Pod) {
        self.delete(pod);
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            return;
        };
        let key = pod_key(pod);
        self.node_of.insert(key.clone(), node.clone());
        self.pods
            .entry(node)
            .or_default()
            .insert(key, pod_refs(pod));
    }

    pub fn delete(&mut self, pod: &Pod) {
        let key = pod_key(pod);
        if let Some(node) = self.node_of.remove(&key)
            && let Some(pods) = self.pods.get_mut(&node)
        {
            pods.remove(&key);
            if pods.is_empty() {
                self.pods.remove(&node);
            }
        }
    }

    pub fn clear(&mut self) {
        self.pods.clear();
        self.node_of.clear();
    }

    /// Whether a pod on `node` uses the object.
    fn uses(&self, node: &str, resource: &str, namespace: &str, name: &str) -> bool {
        self.pods.get(node).into_iter().flatten().any(|(_, r)| {
            r.namespace == namespace
                && match resource {
                    "secrets" => r.secrets.contains(name),
                    "configmaps" => r.config_maps.contains(name),
                    "persistentvolumeclaims" => r.claims.contains(name),
                    "serviceaccounts" => r.service_account == name,
                    _ => false,
                }
        })
    }

    /// Whether pod `namespace/name` is bound to `node`.
    pub fn pod_on(&self, node: &str, namespace: &str, name: &str) -> bool {
        self.node_of
            .get(&format!("{namespace}/{name}"))
            .map(String::as_str)
            == Some(node)
    }
}

/// What the Node authorizer says: `Some(Ok(reason))` allowed,
/// `Some(Err(reason))` no opinion with a reason, `None` no opinion.
pub fn authorize(
    node: &str,
    attrs: &Attributes,
    graph: &NodeGraph,
    node_rules: &[PolicyRule],
) -> Option<Result<String, String>> {
    if !attrs.resource_request {
        return None;
    }
    let gated = match (
        attrs.api_group.as_str(),
        attrs.resource.as_str(),
        attrs.subresource.as_str(),
    ) {
        ("", "secrets" | "configmaps" | "persistentvolumeclaims", "") => true,
        ("", "serviceaccounts", "token") => true,
        _ => false,
    };
    if gated {
        let verb_ok = if attrs.resource == "serviceaccounts" {
            attrs.verb == "create"
        } else {
            matches!(attrs.verb.as_str(), "get" | "list" | "watch")
        };
        if !verb_ok {
            return Some(Err(if attrs.resource == "serviceaccounts" {
                "can only create tokens for individual service accounts".into()
            } else {
                "can only read resources of this type".into()
            }));
        }
        if attrs.name.is_empty() {
            return Some(Err("can only read namespaced object of this type".into()));
        }
        return Some(
            if graph.uses(node, &attrs.resource, &attrs.namespace, &attrs.name) {
                Ok(String::new())
            } else {
                Err(format!(
                    "no relationship found between node '{node}' and this object"
                ))
            },
        );
    }
    node_rules
        .iter()
        .any(|r| rule_allows(r, attrs))
        .then(|| Ok(String::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::rules::rule;

    fn pod(ns: &str, name: &str, node: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {
                "nodeName": node,
                "serviceAccountName": "builder",
                "volumes": [
                    {"name": "cfg", "configMap": {"name": "settings"}},
                    {"name": "p", "projected": {"sources": [{"secret": {"name": "projected-secret"}}]}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}
                ],
                "containers": [{"name": "c", "image": "busybox",
                    "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}]}]
            }
        }))
        .unwrap()
    }

    fn node_user(name: &str) -> UserInfo {
        UserInfo {
            name: format!("system:node:{name}"),
            uid: String::new(),
            groups: vec![NODES_GROUP.into(), "system:authenticated".into()],
        }
    }

    fn get(resource: &str, ns: &str, name: &str) -> Attributes {
        Attributes {
            user: node_user("n1"),
            verb: "get".into(),
            resource_request: true,
            resource: resource.into(),
            namespace: ns.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_node_reads_only_what_its_pods_use() {
        let mut g = NodeGraph::default();
        g.apply(&pod("app", "web", "n1"));
        g.apply(&pod("other", "db", "n2"));
        for (res, name) in [
            ("secrets", "db"),
            ("secrets", "projected-secret"),
            ("configmaps", "settings"),
            ("persistentvolumeclaims", "data"),
        ] {
            assert_eq!(
                authorize("n1", &get(res, "app", name), &g, &[]),
                Some(Ok(String::new())),
                "{res}/{name}"
            );
        }
        assert_eq!(
            authorize("n1", &get("secrets", "other", "db"), &g, &[]),
            Some(Err(
                "no relationship found between node 'n1' and this object".into()
            ))
        );
        let mut list = get("secrets", "app", "");
        list.verb = "list".into();
        assert!(matches!(authorize("n1", &list, &g, &[]), Some(Err(_))));
        let mut token = get("serviceaccounts", "app", "builder");
        token.verb = "create".into();
        token.subresource = "token".into();
        assert_eq!(authorize("n1", &token, &g, &[]), Some(Ok(String::new())));
        // The pod moves away: the node loses the secret.
        g.apply(&pod("app", "web", "n3"));
        assert!(matches!(
            authorize("n1", &get("secrets", "app", "db"), &g, &[]),
            Some(Err(_))
        ));
        assert!(g.pod_on("n3", "app", "web"));
    }

    #[test]
    fn other_requests_follow_the_node_rules() {
        let g = NodeGraph::default();
        let rules = [rule(&["get", "list", "watch"], &[""], &["pods"])];
        assert_eq!(
            authorize("n1", &get("pods", "app", "web"), &g, &rules),
            Some(Ok(String::new()))
        );
        assert_eq!(
            authorize("n1", &get("services", "app", "web"), &g, &rules),
            None
        );
    }

    #[test]
    fn node_identity_needs_the_nodes_group() {
        assert_eq!(node_name(&node_user("n1")), Some("n1"));
        let mut u = node_user("n1");
        u.groups.clear();
        assert_eq!(node_name(&u), None);
    }
}
