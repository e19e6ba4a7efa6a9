//! The roles and bindings kube-apiserver creates at start
//! (`bootstrappolicy`), labelled `kubernetes.io/bootstrapping:
//! rbac-defaults`, and their reconciliation: missing objects are created,
//! missing rules and subjects added, unless an object says
//! `rbac.authorization.kubernetes.io/autoupdate: "false"`.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{
    AggregationRule, ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde_json::Value;

use crate::api::Api;
use crate::kinds::rbac::GROUP;

pub const BOOTSTRAP_LABEL: (&str, &str) = ("kubernetes.io/bootstrapping", "rbac-defaults");
pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
pub const NODE_ROLE: &str = "system:node";
pub const KUBELET_API_ADMIN: &str = "system:kubelet-api-admin";
pub const NODE_CLIENT_ROLE: &str =
    "system:certificates.k8s.io:certificatesigningrequests:nodeclient";
pub const SELF_NODE_CLIENT_ROLE: &str =
    "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient";

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

fn rule(verbs: &[&str], group: &str, resources: &[&str]) -> PolicyRule {
    PolicyRule {
        verbs: strings(verbs),
        api_groups: Some(vec![group.into()]),
        resources: Some(strings(resources)),
        ..Default::default()
    }
}

fn named(mut r: PolicyRule, names: &[&str]) -> PolicyRule {
    r.resource_names = Some(strings(names));
    r
}

fn urls(verbs: &[&str], urls: &[&str]) -> PolicyRule {
    PolicyRule {
        verbs: strings(verbs),
        non_resource_urls: Some(strings(urls)),
        ..Default::default()
    }
}

fn events_rules() -> Vec<PolicyRule> {
    vec![
        rule(&["create", "update", "patch"], "", &["events"]),
        rule(&["create", "update", "patch"], "events.k8s.io", &["events"]),
    ]
}

/// What a kubelet may do anywhere; the Node authorizer adds the objects
/// its pods use (`NodeRules`).
pub fn node_rules() -> Vec<PolicyRule> {
    vec![
        rule(&["create"], "authentication.k8s.io", &["tokenreviews"]),
        rule(
            &["create"],
            "authorization.k8s.io",
            &["subjectaccessreviews", "localsubjectaccessreviews"],
        ),
        rule(READ, "", &["services"]),
        rule(&["create", "get", "list", "watch"], "", &["nodes"]),
        rule(&["update", "patch"], "", &["nodes/status"]),
        rule(&["update", "patch", "delete"], "", &["nodes"]),
        rule(&["create", "update", "patch"], "", &["events"]),
        rule(READ, "", &["pods"]),
        rule(&["create", "delete"], "", &["pods"]),
        rule(&["update", "patch"], "", &["pods/status"]),
        rule(&["create"], "", &["pods/eviction"]),
        rule(READ, "", &["secrets", "configmaps"]),
        rule(
            &["get"],
            "",
            &["persistentvolumeclaims", "persistentvolumes"],
        ),
        rule(&["get"], "", &["endpoints"]),
        rule(
            &["create", "get", "list", "watch"],
            "certificates.k8s.io",
            &["certificatesigningrequests"],
        ),
        rule(
            &["get", "create", "update", "patch", "delete"],
            "coordination.k8s.io",
            &["leases"],
        ),
        rule(&["get"], "storage.k8s.io", &["volumeattachments"]),
        rule(&["create"], "", &["serviceaccounts/token"]),
        rule(&["update", "patch"], "", &["persistentvolumeclaims/status"]),
        rule(&["get"], "storage.k8s.io", &["csidrivers"]),
        rule(
            &["create", "delete", "get", "patch", "update"],
            "storage.k8s.io",
            &["csinodes"],
        ),
        rule(READ, "node.k8s.io", &["runtimeclasses"]),
    ]
}

fn view_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            READ,
            "",
            &[
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "configmaps",
            ],
        ),
        rule(
            READ,
            "",
            &[
                "limitranges",
                "resourcequotas",
                "bindings",
                "events",
                "pods/status",
                "resourcequotas/status",
                "namespaces/status",
                "replicationcontrollers/status",
                "pods/log",
            ],
        ),
        rule(READ, "", &["namespaces"]),
        rule(READ, "discovery.k8s.io", &["endpointslices"]),
        rule(
            READ,
            "apps",
            &[
                "controllerrevisions",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
            ],
        ),
        rule(
            READ,
            "autoscaling",
            &[
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status",
            ],
        ),
        rule(
            READ,
            "batch",
            &["jobs", "jobs/status", "cronjobs", "cronjobs/status"],
        ),
        rule(
            READ,
            "policy",
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
        ),
        rule(
            READ,
            "networking.k8s.io",
            &["ingresses", "ingresses/status", "networkpolicies"],
        ),
    ]
}

fn edit_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            READ,
            "",
            &[
                "pods/attach",
                "pods/proxy",
                "pods/exec",
                "pods/portforward",
                "secrets",
                "services/proxy",
            ],
        ),
        rule(&["impersonate"], "", &["serviceaccounts"]),
        rule(
            WRITE,
            "",
            &[
                "pods",
                "pods/attach",
                "pods/proxy",
                "pods/exec",
                "pods/portforward",
            ],
        ),
        rule(&["create"], "", &["pods/eviction"]),
        rule(
            WRITE,
            "",
            &[
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/proxy",
                "persistentvolumeclaims",
                "configmaps",
                "secrets",
                "events",
            ],
        ),
        rule(&["create"], "", &["serviceaccounts/token"]),
        rule(
            WRITE,
            "apps",
            &[
                "statefulsets",
                "statefulsets/scale",
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
            ],
        ),
        rule(WRITE, "autoscaling", &["horizontalpodautoscalers"]),
        rule(WRITE, "batch", &["jobs", "cronjobs"]),
        rule(WRITE, "policy", &["poddisruptionbudgets"]),
        rule(
            WRITE,
            "networking.k8s.io",
            &["ingresses", "networkpolicies"],
        ),
        rule(READ_WRITE, "coordination.k8s.io", &["leases"]),
    ]
}

fn admin_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            &["create"],
            "authorization.k8s.io",
            &["localsubjectaccessreviews"],
        ),
        rule(READ_WRITE, GROUP, &["roles", "rolebindings"]),
    ]
}

fn scheduler_rules() -> Vec<PolicyRule> {
    let mut r = events_rules();
    r.extend([
        rule(&["create"], "coordination.k8s.io", &["leases"]),
        named(
            rule(&["get", "update"], "coordination.k8s.io", &["leases"]),
            &["kube-scheduler"],
        ),
        rule(READ, "", &["nodes"]),
        rule(READ, "", &["pods"]),
        rule(&["delete"], "", &["pods"]),
        rule(&["create"], "", &["pods/binding", "bindings"]),
        rule(&["patch", "update"], "", &["pods/status"]),
        rule(READ, "", &["replicationcontrollers", "services"]),
        rule(READ, "apps", &["replicasets", "statefulsets"]),
        rule(READ, "policy", &["poddisruptionbudgets"]),
        rule(READ, "", &["persistentvolumeclaims", "persistentvolumes"]),
        rule(&["create"], "authentication.k8s.io", &["tokenreviews"]),
        rule(
            &["create"],
            "authorization.k8s.io",
            &["subjectaccessreviews"],
        ),
        rule(READ, "storage.k8s.io", &["csinodes"]),
        rule(READ, "", &["namespaces"]),
        rule(READ, "storage.k8s.io", &["csidrivers"]),
        rule(READ, "storage.k8s.io", &["csistoragecapacities"]),
    ]);
    r
}

fn controller_manager_rules() -> Vec<PolicyRule> {
    let mut r = events_rules();
    r.extend([
        rule(&["create"], "coordination.k8s.io", &["leases"]),
        named(
            rule(&["get", "update"], "coordination.k8s.io", &["leases"]),
            &["kube-controller-manager"],
        ),
        rule(&["create"], "", &["secrets", "serviceaccounts"]),
        rule(&["delete"], "", &["secrets"]),
        rule(
            &["get"],
            "",
            &["configmaps", "namespaces", "secrets", "serviceaccounts"],
        ),
        rule(&["update"], "", &["secrets", "serviceaccounts"]),
        rule(&["create"], "authentication.k8s.io", &["tokenreviews"]),
        rule(
            &["create"],
            "authorization.k8s.io",
            &["subjectaccessreviews"],
        ),
        rule(&["list", "watch"], "*", &["*"]),
        rule(&["create"], "", &["serviceaccounts/token"]),
    ]);
    r
}

fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        rules: Some(rules),
        ..Default::default()
    }
}

fn labelled(mut role: ClusterRole, key: &str) -> ClusterRole {
    role.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(format!("rbac.authorization.k8s.io/{key}"), "true".into());
    role
}

fn aggregated(name: &str, key: &str) -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        aggregation_rule: Some(AggregationRule {
            cluster_role_selectors: Some(vec![LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    format!("rbac.authorization.k8s.io/{key}"),
                    "true".into(),
                )])),
                ..Default::default()
            }]),
        }),
        rules: None,
    }
}

/// The bootstrap ClusterRoles.
pub fn cluster_roles() -> Vec<ClusterRole> {
    vec![
        cluster_role(
            "cluster-admin",
            vec![rule(&["*"], "*", &["*"]), urls(&["*"], &["*"])],
        ),
        cluster_role(
            "system:discovery",
            vec![urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        cluster_role(
            "system:public-info-viewer",
            vec![urls(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
        cluster_role(
            "system:basic-user",
            vec![
                rule(
                    &["create"],
                    "authentication.k8s.io",
                    &["selfsubjectreviews"],
                ),
                rule(
                    &["create"],
                    "authorization.k8s.io",
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
            ],
        ),
        cluster_role(
            "system:monitoring",
            vec![urls(
                &["get"],
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/metrics",
                    "/metrics/slis",
                    "/readyz",
                    "/readyz/*",
                ],
            )],
        ),
        cluster_role(
            "system:service-account-issuer-discovery",
            vec![urls(
                &["get"],
                &[
                    "/.well-known/openid-configuration",
                    "/.well-known/openid-configuration/",
                    "/openid/v1/jwks",
                    "/openid/v1/jwks/",
                ],
            )],
        ),
        aggregated("admin", "aggregate-to-admin"),
        labelled(
            aggregated("edit", "aggregate-to-edit"),
            "aggregate-to-admin",
        ),
        labelled(aggregated("view", "aggregate-to-view"), "aggregate-to-edit"),
        labelled(
            cluster_role("system:aggregate-to-admin", admin_rules()),
            "aggregate-to-admin",
        ),
        labelled(
            cluster_role("system:aggregate-to-edit", edit_rules()),
            "aggregate-to-edit",
        ),
        labelled(
            cluster_role("system:aggregate-to-view", view_rules()),
            "aggregate-to-view",
        ),
        cluster_role(NODE_ROLE, node_rules()),
        cluster_role(
            "system:node-proxier",
            [
                vec![
                    rule(&["list", "watch"], "", &["services", "endpoints"]),
                    rule(READ, "", &["nodes"]),
                ],
                events_rules(),
                vec![rule(
                    &["list", "watch"],
                    "discovery.k8s.io",
                    &["endpointslices"],
                )],
            ]
            .concat(),
        ),
        cluster_role(
            "system:node-bootstrapper",
            vec![rule(
                &["create", "get", "list", "watch"],
                "certificates.k8s.io",
                &["certificatesigningrequests"],
            )],
        ),
        // What the CSR approver asks for a node client certificate: a new
        // node's (bootstrap) and a node renewing its own.
        cluster_role(
            NODE_CLIENT_ROLE,
            vec![rule(
                &["create"],
                "certificates.k8s.io",
                &["certificatesigningrequests/nodeclient"],
            )],
        ),
        cluster_role(
            SELF_NODE_CLIENT_ROLE,
            vec![rule(
                &["create"],
                "certificates.k8s.io",
                &["certificatesigningrequests/selfnodeclient"],
            )],
        ),
        cluster_role(
            "system:auth-delegator",
            vec![
                rule(&["create"], "authentication.k8s.io", &["tokenreviews"]),
                rule(
                    &["create"],
                    "authorization.k8s.io",
                    &["subjectaccessreviews"],
                ),
            ],
        ),
        cluster_role(
            KUBELET_API_ADMIN,
            vec![
                rule(&["get", "list", "watch", "proxy"], "", &["nodes"]),
                rule(
                    &["*"],
                    "",
                    &["nodes/proxy", "nodes/metrics", "nodes/stats", "nodes/log"],
                ),
            ],
        ),
        cluster_role("system:kube-scheduler", scheduler_rules()),
        cluster_role(
            "system:volume-scheduler",
            vec![
                rule(READ, "", &["persistentvolumes"]),
                rule(&["patch", "update"], "", &["persistentvolumes"]),
                rule(READ, "storage.k8s.io", &["storageclasses"]),
                rule(READ, "", &["persistentvolumeclaims"]),
                rule(&["patch", "update"], "", &["persistentvolumeclaims"]),
            ],
        ),
        cluster_role("system:kube-controller-manager", controller_manager_rules()),
        cluster_role(
            "system:kube-dns",
            vec![rule(&["list", "watch"], "", &["endpoints", "services"])],
        ),
    ]
}

fn subject(kind: &str, name: &str) -> Subject {
    Subject {
        kind: kind.into(),
        name: name.into(),
        api_group: Some(GROUP.into()),
        namespace: None,
    }
}

fn binding(role: &str, subjects: Vec<Subject>) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(role.into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: GROUP.into(),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: (!subjects.is_empty()).then_some(subjects),
    }
}

/// The bootstrap ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<ClusterRoleBinding> {
    let group = |g| subject("Group", g);
    let user = |u| subject("User", u);
    vec![
        binding("cluster-admin", vec![group("system:masters")]),
        binding("system:monitoring", vec![group("system:monitoring")]),
        binding("system:discovery", vec![group("system:authenticated")]),
        binding("system:basic-user", vec![group("system:authenticated")]),
        binding(
            "system:public-info-viewer",
            vec![
                group("system:authenticated"),
                group("system:unauthenticated"),
            ],
        ),
        binding(NODE_ROLE, vec![]),
        binding("system:node-proxier", vec![user("system:kube-proxy")]),
        binding(
            "system:kube-controller-manager",
            vec![user("system:kube-controller-manager")],
        ),
        binding(
            "system:kube-dns",
            vec![Subject {
                kind: "ServiceAccount".into(),
                name: "kube-dns".into(),
                namespace: Some("kube-system".into()),
                api_group: None,
            }],
        ),
        binding("system:kube-scheduler", vec![user("system:kube-scheduler")]),
        binding(
            "system:volume-scheduler",
            vec![user("system:kube-scheduler")],
        ),
        binding(
            "system:service-account-issuer-discovery",
            vec![group("system:serviceaccounts")],
        ),
    ]
}

/// A binding of the apiserver's own kubelet client to
/// `system:kubelet-api-admin` (as kubeadm makes one), so it reaches the
/// kubelets' API even when its certificate is not in `system:masters`.
pub fn kubelet_client_binding(user: &str) -> ClusterRoleBinding {
    let mut b = binding(KUBELET_API_ADMIN, vec![subject("User", user)]);
    b.metadata.name = Some("kube-apiserver-kubelet-client".into());
    b
}

fn mark(meta: &mut ObjectMeta) {
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(BOOTSTRAP_LABEL.0.into(), BOOTSTRAP_LABEL.1.into());
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(AUTOUPDATE.into(), "true".into());
}

/// Adds the labels and annotations of `wanted` that `meta` lacks.
fn merge_metadata(meta: &mut ObjectMeta, wanted: &ObjectMeta) {
    for (have, want) in [
        (&mut meta.labels, &wanted.labels),
        (&mut meta.annotations, &wanted.annotations),
    ] {
        for (k, v) in want.iter().flatten() {
            have.get_or_insert_with(BTreeMap::new)
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
    }
}

/// `existing` with what `wanted` adds: labels, annotations, missing rules
/// and selectors; `None` if nothing is missing.
pub fn reconcile_role(existing: &ClusterRole, wanted: &ClusterRole) -> Option<ClusterRole> {
    let mut out = existing.clone();
    merge_metadata(&mut out.metadata, &wanted.metadata);
    if let Some(agg) = &wanted.aggregation_rule {
        let have = out
            .aggregation_rule
            .get_or_insert_with(Default::default)
            .cluster_role_selectors
            .get_or_insert_with(Vec::new);
        for s in agg.cluster_role_selectors.iter().flatten() {
            if !have.contains(s) {
                have.push(s.clone());
            }
        }
    } else {
        let owned = out.rules.clone().unwrap_or_default();
        let rules = out.rules.get_or_insert_with(Vec::new);
        for r in wanted.rules.iter().flatten() {
            if !super::rules::covers(&owned, r) {
                rules.push(r.clone());
            }
        }
    }
    (&out != existing).then_some(out)
}

/// `existing` with the subjects of `wanted` it lacks; `None` if none.
pub fn reconcile_binding(
    existing: &ClusterRoleBinding,
    wanted: &ClusterRoleBinding,
) -> Option<ClusterRoleBinding> {
    let mut out = existing.clone();
    merge_metadata(&mut out.metadata, &wanted.metadata);
    for s in wanted.subjects.iter().flatten() {
        let have = out.subjects.get_or_insert_with(Vec::new);
        if !have.contains(s) {
            have.push(s.clone());
        }
    }
    (&out != existing).then_some(out)
}

fn auto_updates(meta: &ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(AUTOUPDATE))
        .is_none_or(|v| v != "false")
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{kind} {name:?}: {message}")]
    Write {
        kind: &'static str,
        name: String,
        message: String,
    },
}

async fn ensure<T>(
    api: &Api,
    plural: &str,
    kind: &'static str,
    mut wanted: T,
    reconcile: fn(&T, &T) -> Option<T>,
) -> Result<(), BootstrapError>
where
    T: k8s_openapi::Metadata<Ty = ObjectMeta> + serde::Serialize + serde::de::DeserializeOwned,
{
    let k = api.kind(GROUP, "v1", plural);
    mark(wanted.metadata_mut());
    let name = wanted.metadata().name.clone().unwrap_or_default();
    let err = |e: crate::status::ApiError| BootstrapError::Write {
        kind,
        name: name.clone(),
        message: e.message,
    };
    let to_value = |t: &T| serde_json::to_value(t).expect("RBAC objects serialize");
    match api.get(k.as_ref(), None, &name).await {
        Ok(current) => {
            let existing: T =
                serde_json::from_value(current.clone()).map_err(|e| BootstrapError::Write {
                    kind,
                    name: name.clone(),
                    message: e.to_string(),
                })?;
            if !auto_updates(existing.metadata()) {
                return Ok(());
            }
            if let Some(updated) = reconcile(&existing, &wanted) {
                let mut v: Value = to_value(&updated);
                v["apiVersion"] = format!("{GROUP}/v1").into();
                v["kind"] = kind.into();
                api.update_object(k.as_ref(), v, false).await.map_err(err)?;
                tracing::info!("reconciled {kind} {name}");
            }
        }
        Err(e) if e.code == 404 => {
            let mut v = to_value(&wanted);
            v["apiVersion"] = format!("{GROUP}/v1").into();
            v["kind"] = kind.into();
            api.create_object(k.as_ref(), v).await.map_err(err)?;
        }
        Err(e) => return Err(err(e)),
    }
    Ok(())
}

/// Creates or reconciles the bootstrap policy.
pub async fn reconcile(api: &Api, kubelet_client_user: &str) -> Result<(), BootstrapError> {
    for role in cluster_roles() {
        ensure(api, "clusterroles", "ClusterRole", role, reconcile_role).await?;
    }
    let mut bindings = cluster_role_bindings();
    bindings.push(kubelet_client_binding(kubelet_client_user));
    for b in bindings {
        ensure(
            api,
            "clusterrolebindings",
            "ClusterRoleBinding",
            b,
            reconcile_binding,
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_binding_names_a_bootstrap_role() {
        let roles: Vec<String> = cluster_roles()
            .into_iter()
            .map(|r| r.metadata.name.unwrap())
            .collect();
        for b in cluster_role_bindings() {
            assert!(roles.contains(&b.role_ref.name), "{}", b.role_ref.name);
        }
        let admin = cluster_roles()
            .into_iter()
            .find(|r| r.metadata.name.as_deref() == Some("admin"))
            .unwrap();
        assert!(admin.metadata.labels.is_none());
        let edit = cluster_roles()
            .into_iter()
            .find(|r| r.metadata.name.as_deref() == Some("edit"))
            .unwrap();
        assert_eq!(
            edit.metadata
                .labels
                .unwrap()
                .get("rbac.authorization.k8s.io/aggregate-to-admin")
                .map(String::as_str),
            Some("true")
        );
    }

    #[test]
    fn reconciling_adds_missing_rules_and_keeps_extra_ones() {
        let wanted = cluster_role(
            "r",
            vec![
                rule(&["get"], "", &["pods"]),
                rule(&["list"], "", &["pods"]),
            ],
        );
        let existing = cluster_role(
            "r",
            vec![
                rule(&["get"], "", &["pods"]),
                rule(&["get"], "", &["nodes"]),
            ],
        );
        let out = reconcile_role(&existing, &wanted).unwrap();
        assert_eq!(out.rules.unwrap().len(), 3);
        assert!(reconcile_role(&wanted, &wanted).is_none());
        let b = binding("x", vec![subject("User", "a")]);
        let more = binding("x", vec![subject("User", "b")]);
        assert_eq!(
            reconcile_binding(&b, &more)
                .unwrap()
                .subjects
                .unwrap()
                .len(),
            2
        );
    }
}
