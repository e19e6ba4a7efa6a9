//! Admission that depends on who writes: RBAC's privilege-escalation
//! prevention (a role or binding only with permissions one holds, or with
//! `escalate`/`bind`) and NodeRestriction (a node writes only its own
//! Node, Lease, mirror pods and the pods bound to it). The requester is
//! known for the whole request through [`REQUESTER`]; writes from inside
//! the apiserver have none and are not checked.

use std::sync::Arc;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role, RoleRef};
use serde_json::Value;

use super::attributes::Attributes;
use super::node::{node_name, pod_refs};
use super::rules::covers;
use crate::auth::UserInfo;
use crate::authorizer::Authorizer;
use crate::kinds::ResourceInfo;
use crate::kinds::rbac::GROUP;
use crate::status::ApiError;

/// Who makes the current request.
#[derive(Clone)]
pub struct Requester {
    pub user: UserInfo,
    pub authorizer: Arc<Authorizer>,
}

tokio::task_local! {
    pub static REQUESTER: Requester;
}

const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// `{APIGroups:["apps"], Resources:["deployments"], Verbs:["delete"]}`,
/// as `PolicyRule.CompactString` prints a rule.
pub fn compact(rule: &PolicyRule) -> String {
    let q = |v: &[String]| {
        format!(
            "[{}]",
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    };
    let mut parts = Vec::new();
    for (label, list) in [
        ("APIGroups", rule.api_groups.as_deref()),
        ("Resources", rule.resources.as_deref()),
        ("ResourceNames", rule.resource_names.as_deref()),
        ("NonResourceURLs", rule.non_resource_urls.as_deref()),
        ("Verbs", Some(rule.verbs.as_slice())),
    ] {
        if let Some(l) = list.filter(|l| !l.is_empty()) {
            parts.push(format!("{label}:{}", q(l)));
        }
    }
    format!("{{{}}}", parts.join(", "))
}

/// The rules of `wanted` that `owned` does not cover.
pub fn missing_rules(owned: &[PolicyRule], wanted: &[PolicyRule]) -> Vec<PolicyRule> {
    wanted
        .iter()
        .filter(|r| !covers(owned, r))
        .cloned()
        .collect()
}

fn escalation_error(
    info: &ResourceInfo,
    name: &str,
    user: &UserInfo,
    missing: &[PolicyRule],
) -> ApiError {
    let groups = user
        .groups
        .iter()
        .map(|g| format!("{g:?}"))
        .collect::<Vec<_>>()
        .join(" ");
    let rules = missing.iter().map(compact).collect::<Vec<_>>().join("\n");
    ApiError::forbidden(
        info.subject(),
        name,
        &format!(
            "user {:?} (groups=[{groups}]) is attempting to grant RBAC permissions not currently held:\n{rules}",
            user.name
        ),
    )
}

fn may(r: &Requester, verb: &str, resource: &str, namespace: &str, name: &str) -> bool {
    r.authorizer
        .authorize(&Attributes {
            user: r.user.clone(),
            verb: verb.into(),
            resource_request: true,
            api_group: GROUP.into(),
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
            ..Default::default()
        })
        .allowed()
}

fn check_role(r: &Requester, info: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    if may(r, "escalate", info.plural, ns, name) {
        return Ok(());
    }
    let wanted = if info.plural == "clusterroles" {
        let role: ClusterRole = serde_json::from_value(obj.clone())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        if role.aggregation_rule.is_some() {
            // Aggregated rules are filled in later: only someone who
            // holds everything may define what gets aggregated.
            vec![
                PolicyRule {
                    verbs: vec!["*".into()],
                    api_groups: Some(vec!["*".into()]),
                    resources: Some(vec!["*".into()]),
                    ..Default::default()
                },
                PolicyRule {
                    verbs: vec!["*".into()],
                    non_resource_urls: Some(vec!["*".into()]),
                    ..Default::default()
                },
            ]
        } else {
            role.rules.unwrap_or_default()
        }
    } else {
        let role: Role = serde_json::from_value(obj.clone())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        role.rules.unwrap_or_default()
    };
    let (owned, _) = r.authorizer.rules_for(&r.user, ns);
    let missing = missing_rules(&owned, &wanted);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(escalation_error(info, name, &r.user, &missing))
    }
}

fn check_binding(r: &Requester, info: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let role_ref: RoleRef = serde_json::from_value(obj["roleRef"].clone())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let role_resource = match role_ref.kind.as_str() {
        "ClusterRole" => "clusterroles",
        _ => "roles",
    };
    if may(r, "bind", role_resource, ns, &role_ref.name) {
        return Ok(());
    }
    let policy = r.authorizer.policy();
    let Some(wanted) = policy.role_rules(&role_ref, ns) else {
        let subject = crate::status::Subject {
            group: GROUP,
            plural: role_resource,
            kind: &role_ref.kind,
        };
        return Err(ApiError::not_found(subject, &role_ref.name));
    };
    let (owned, _) = r.authorizer.rules_for(&r.user, ns);
    let missing = missing_rules(&owned, &wanted);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(escalation_error(info, name, &r.user, &missing))
    }
}

fn node_forbidden(info: &ResourceInfo, name: &str, why: String) -> ApiError {
    ApiError::forbidden(info.subject(), name, &why)
}

/// NodeRestriction for a write of `obj` (replacing `old`) by `node`.
fn check_node_write(
    node: &str,
    info: &ResourceInfo,
    obj: &Value,
    old: Option<&Value>,
    status_only: bool,
) -> Result<(), ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    match (info.group, info.plural) {
        ("", "nodes") if name != node => Err(node_forbidden(
            info,
            name,
            format!("node {node:?} is not allowed to modify node {name:?}"),
        )),
        ("coordination.k8s.io", "leases") => {
            let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
            if ns != NODE_LEASE_NAMESPACE {
                Err(node_forbidden(
                    info,
                    name,
                    format!(
                        "can only access leases in the {NODE_LEASE_NAMESPACE:?} system namespace"
                    ),
                ))
            } else if name != node {
                Err(node_forbidden(
                    info,
                    name,
                    "can only access node lease with the same name as the requesting node".into(),
                ))
            } else {
                Ok(())
            }
        }
        ("", "pods") => match old {
            None => check_mirror_pod(node, info, obj),
            Some(old) => {
                let bound = old["spec"]["nodeName"].as_str() == Some(node);
                if status_only && bound {
                    Ok(())
                } else if status_only {
                    Err(node_forbidden(
                        info,
                        name,
                        format!(
                            "node {node:?} can only update pod status for pods with spec.nodeName set to itself"
                        ),
                    ))
                } else {
                    Err(node_forbidden(
                        info,
                        name,
                        format!("node {node:?} can only update pod status"),
                    ))
                }
            }
        },
        _ => Ok(()),
    }
}

fn check_mirror_pod(node: &str, info: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    if obj["metadata"]["annotations"][MIRROR_ANNOTATION].is_null() {
        return Err(node_forbidden(
            info,
            name,
            format!(
                "pod does not have {MIRROR_ANNOTATION:?} annotation, node {node:?} can only create mirror pods"
            ),
        ));
    }
    if obj["spec"]["nodeName"].as_str() != Some(node) {
        return Err(node_forbidden(
            info,
            name,
            format!("node {node:?} can only create pods with spec.nodeName set to itself"),
        ));
    }
    let pod: Pod =
        serde_json::from_value(obj.clone()).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let refs = pod_refs(&pod);
    for (what, used) in [
        ("secrets", !refs.secrets.is_empty()),
        ("configmaps", !refs.config_maps.is_empty()),
        ("persistentvolumeclaims", !refs.claims.is_empty()),
    ] {
        if used {
            return Err(node_forbidden(
                info,
                name,
                format!("node {node:?} can not create pods that reference {what}"),
            ));
        }
    }
    Ok(())
}

/// The write-time checks for `obj` (replacing `old`, if any).
pub fn admit(
    info: &ResourceInfo,
    obj: &Value,
    old: Option<&Value>,
    status_only: bool,
) -> Result<(), ApiError> {
    let Ok(r) = REQUESTER.try_with(Requester::clone) else {
        return Ok(());
    };
    if info.group == GROUP && !status_only {
        return match info.plural {
            "roles" | "clusterroles" => check_role(&r, info, obj),
            "rolebindings" | "clusterrolebindings" => check_binding(&r, info, obj),
            _ => Ok(()),
        };
    }
    match node_name(&r.user) {
        Some(node) => check_node_write(node, info, obj, old, status_only),
        None => Ok(()),
    }
}

/// NodeRestriction for a TokenRequest from `node` for the ServiceAccount
/// `account`: the token must be bound to a pod, by name and uid, that runs
/// on that node (kube-apiserver then binds it to the node as well). `pod`
/// is the bound pod as stored, `None` when there is none.
pub fn check_node_token_request(
    node: &str,
    account: &str,
    req: &TokenRequest,
    pod: Option<&Value>,
) -> Result<(), ApiError> {
    let subject = crate::status::Subject {
        group: "",
        plural: "serviceaccounts",
        kind: "ServiceAccount",
    };
    let forbidden = |why: &str| Err(ApiError::forbidden(subject, account, why));
    let Some(r) = req.spec.bound_object_ref.as_ref().filter(|r| {
        r.api_version.as_deref() == Some("v1")
            && r.kind.as_deref() == Some("Pod")
            && r.name.as_deref().is_some_and(|n| !n.is_empty())
    }) else {
        return forbidden("node requested token not bound to a pod");
    };
    let uid = r.uid.as_deref().unwrap_or_default();
    if uid.is_empty() {
        return forbidden("node requested token with a pod binding without a uid");
    }
    let Some(pod) = pod else {
        let pods = crate::status::Subject {
            group: "",
            plural: "pods",
            kind: "Pod",
        };
        return Err(ApiError::not_found(
            pods,
            r.name.as_deref().unwrap_or_default(),
        ));
    };
    if pod["metadata"]["uid"].as_str() != Some(uid) {
        return forbidden(&format!(
            "the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"
        ));
    }
    if pod["spec"]["nodeName"].as_str() != Some(node) {
        return forbidden("node requested token bound to a pod scheduled on a different node");
    }
    Ok(())
}

/// NodeRestriction for what has no body to check: a node deletes or
/// evicts only pods bound to it, and deletes only its own Node and Lease.
pub fn admit_request(authorizer: &Authorizer, attrs: &Attributes) -> Result<(), ApiError> {
    let Some(node) = node_name(&attrs.user) else {
        return Ok(());
    };
    let subject = crate::status::Subject {
        group: &attrs.api_group,
        plural: &attrs.resource,
        kind: "",
    };
    let forbidden = |why: String| Err(ApiError::forbidden(subject, &attrs.name, &why));
    match (
        attrs.api_group.as_str(),
        attrs.resource.as_str(),
        attrs.subresource.as_str(),
        attrs.verb.as_str(),
    ) {
        ("", "pods", "", "delete") if !authorizer.pod_on(node, &attrs.namespace, &attrs.name) => {
            forbidden(format!(
                "node {node:?} can only delete pods with spec.nodeName set to itself"
            ))
        }
        ("", "pods", "eviction", "create")
            if !authorizer.pod_on(node, &attrs.namespace, &attrs.name) =>
        {
            forbidden(format!(
                "node {node:?} can only evict pods with spec.nodeName set to itself"
            ))
        }
        ("", "nodes", _, "delete" | "update" | "patch") if attrs.name != node => {
            forbidden(format!(
                "node {node:?} is not allowed to modify node {:?}",
                attrs.name
            ))
        }
        ("coordination.k8s.io", "leases", _, "delete" | "update" | "patch")
            if attrs.name != node || attrs.namespace != NODE_LEASE_NAMESPACE =>
        {
            forbidden("can only access node lease with the same name as the requesting node".into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::rules::rule;
    use serde_json::json;

    fn info(group: &'static str, plural: &'static str) -> ResourceInfo {
        ResourceInfo {
            group,
            version: "v1",
            plural,
            singular: String::new(),
            kind: "",
            namespaced: true,
            short_names: &[],
            categories: &[],
            has_status: false,
            has_scale: false,
            annotations_bump_generation: false,
            status_updates_annotations: false,
        }
    }

    #[test]
    fn missing_rules_print_as_upstream_compact_strings() {
        let owned = vec![rule(&["get"], &[""], &["pods"])];
        let wanted = vec![
            rule(&["get"], &[""], &["pods"]),
            rule(&["delete"], &["apps"], &["deployments"]),
        ];
        let missing = missing_rules(&owned, &wanted);
        assert_eq!(missing.len(), 1);
        assert_eq!(
            compact(&missing[0]),
            "{APIGroups:[\"apps\"], Resources:[\"deployments\"], Verbs:[\"delete\"]}"
        );
    }

    #[test]
    fn a_node_gets_tokens_only_bound_to_its_own_pods() {
        let req = |bound: serde_json::Value| -> TokenRequest {
            serde_json::from_value(json!({"spec": {"audiences": [], "boundObjectRef": bound}}))
                .unwrap()
        };
        let pod = json!({"metadata": {"name": "web", "uid": "u1"}, "spec": {"nodeName": "n1"}});
        let bound = req(json!({"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": "u1"}));
        assert!(check_node_token_request("n1", "default", &bound, Some(&pod)).is_ok());
        let refused = |r: &TokenRequest, node: &str, pod: Option<&Value>| {
            check_node_token_request(node, "default", r, pod)
                .unwrap_err()
                .message
        };
        assert_eq!(
            refused(&bound, "n2", Some(&pod)),
            "serviceaccounts \"default\" is forbidden: node requested token bound to a pod scheduled on a different node"
        );
        assert_eq!(
            refused(&TokenRequest::default(), "n1", Some(&pod)),
            "serviceaccounts \"default\" is forbidden: node requested token not bound to a pod"
        );
        let secret = req(json!({"apiVersion": "v1", "kind": "Secret", "name": "s", "uid": "u"}));
        assert!(refused(&secret, "n1", None).ends_with("node requested token not bound to a pod"));
        let no_uid = req(json!({"apiVersion": "v1", "kind": "Pod", "name": "web"}));
        assert!(
            refused(&no_uid, "n1", Some(&pod))
                .ends_with("node requested token with a pod binding without a uid")
        );
        let stale = req(json!({"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": "old"}));
        assert!(refused(&stale, "n1", Some(&pod)).ends_with(
            "the UID in the bound object reference (old) does not match the UID in record. The object might have been deleted and then recreated"
        ));
        let e = check_node_token_request("n1", "default", &bound, None).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (404, "pods \"web\" not found")
        );
    }

    #[test]
    fn a_node_creates_only_its_own_mirror_pods_and_its_own_lease() {
        let pods = info("", "pods");
        let mirror = json!({"metadata": {"name": "static-n1", "annotations": {MIRROR_ANNOTATION: "x"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}]}});
        assert!(check_node_write("n1", &pods, &mirror, None, false).is_ok());
        assert!(check_node_write("n2", &pods, &mirror, None, false).is_err());
        let plain = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}});
        assert_eq!(
            check_node_write("n1", &pods, &plain, None, false)
                .unwrap_err()
                .message,
            "pods \"p\" is forbidden: pod does not have \"kubernetes.io/config.mirror\" annotation, node \"n1\" can only create mirror pods"
        );
        assert!(check_node_write("n1", &pods, &plain, Some(&plain), true).is_ok());
        assert!(check_node_write("n2", &pods, &plain, Some(&plain), true).is_err());
        let leases = info("coordination.k8s.io", "leases");
        let lease = |ns: &str, name: &str| json!({"metadata": {"namespace": ns, "name": name}});
        assert!(
            check_node_write("n1", &leases, &lease("kube-node-lease", "n1"), None, false).is_ok()
        );
        assert!(
            check_node_write("n1", &leases, &lease("kube-node-lease", "n2"), None, false).is_err()
        );
        assert!(check_node_write("n1", &leases, &lease("default", "n1"), None, false).is_err());
        let nodes = info("", "nodes");
        assert_eq!(
            check_node_write(
                "n1",
                &nodes,
                &json!({"metadata": {"name": "n2"}}),
                None,
                false
            )
            .unwrap_err()
            .message,
            "nodes.\"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\""
                .replace("nodes.", "nodes ")
        );
    }
}
