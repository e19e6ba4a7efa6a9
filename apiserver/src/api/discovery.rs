//! `/version` and legacy discovery (`/api`, `/apis`, `/api/v1`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::{Api, json_response, wire_order};
use crate::kinds::Registry;

/// The project's one Kubernetes version (the node reports the same).
pub async fn version() -> Response {
    use kubelab_rules::version;
    json_response(
        StatusCode::OK,
        &json!({
            "major": version::MAJOR,
            "minor": version::MINOR,
            "gitVersion": version::GIT_VERSION,
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z",
            "goVersion": "go1.23.4",
            "compiler": "gc",
            "platform": "linux/amd64"
        }),
    )
}

pub async fn api_versions(State(api): State<Arc<Api>>) -> Response {
    discovery_response(
        StatusCode::OK,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": api.advertise}]
        }),
    )
}

fn group_json(g: &str, versions: &[&str]) -> Value {
    let gvs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"name": g, "versions": gvs, "preferredVersion": gvs[0]})
}

/// `/apis/<group>`: one `APIGroup`, preferred version first.
pub fn api_group(registry: &Registry, group: &str) -> Option<Value> {
    let (name, versions) = registry.groups().into_iter().find(|(g, _)| *g == group)?;
    Some(group_document(name, &versions))
}

/// The `APIGroup` document of `group` served at `versions`, preferred first.
pub fn group_document(group: &str, versions: &[&str]) -> Value {
    let mut v = group_json(group, versions);
    v["kind"] = "APIGroup".into();
    v["apiVersion"] = "v1".into();
    v
}

pub async fn api_groups(State(api): State<Arc<Api>>) -> Response {
    let mut served = api.registry.groups();
    // Not a stored kind: computed from the nodes' Summary API.
    served.push((super::metrics::GROUP, vec![super::metrics::VERSION]));
    // Not stored either: reviews are answered at once.
    served.extend(super::reviews::groups());
    let groups: Vec<Value> = served
        .into_iter()
        .map(|(g, versions)| group_json(g, &versions))
        .collect();
    discovery_response(
        StatusCode::OK,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
    )
}

/// A discovery document, written in kube-apiserver's field order.
pub fn discovery_response(code: StatusCode, v: &Value) -> Response {
    use axum::response::IntoResponse;
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        wire_order::to_vec(v),
    )
        .into_response()
}

/// `storageVersionHash`: the first 8 bytes of the SHA-256 of the storage
/// version's `group/version/kind`, base64, as kube-apiserver computes it
/// (clients compare it to notice a storage migration).
pub fn storage_version_hash(group: &str, version: &str, kind: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let sum = Sha256::digest(format!("{group}/{version}/{kind}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(&sum[..8])
}

/// The version a resource is stored as: itself, unless objects are kept
/// as another version of the resource.
fn storage_version<'a>(
    registry: &'a Registry,
    group: &str,
    plural: &str,
    version: &'a str,
) -> &'a str {
    registry
        .all()
        .iter()
        .find(|k| k.info().group == group && k.info().plural == plural && !k.converted())
        .map(|k| k.info().version)
        .unwrap_or(version)
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// `APIResourceList` for one group/version, with subresources.
pub fn resource_list(registry: &Registry, group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for k in registry.all() {
        let i = k.info();
        if i.group != group || i.version != version {
            continue;
        }
        let mut r = json!({
            "name": i.plural,
            "singularName": i.singular,
            "namespaced": i.namespaced,
            "kind": i.kind,
            "verbs": VERBS,
        });
        if !i.short_names.is_empty() {
            r["shortNames"] = json!(i.short_names);
        }
        if !i.categories.is_empty() {
            r["categories"] = json!(i.categories);
        }
        let storage = storage_version(registry, i.group, i.plural, i.version);
        r["storageVersionHash"] = json!(storage_version_hash(i.group, storage, i.kind));
        resources.push(r);
        if i.has_status {
            resources.push(json!({"name": format!("{}/status", i.plural), "singularName": "", "namespaced": i.namespaced,
                "kind": i.kind, "verbs": ["get", "patch", "update"]}));
        }
        if i.has_scale {
            resources.push(json!({"name": format!("{}/scale", i.plural), "singularName": "", "namespaced": i.namespaced,
                "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
        if i.plural == "certificatesigningrequests" {
            resources.push(json!({"name": "certificatesigningrequests/approval", "singularName": "", "namespaced": false,
                "kind": "CertificateSigningRequest", "verbs": ["get", "patch", "update"]}));
        }
        if i.plural == "namespaces" {
            resources.push(
                json!({"name": "namespaces/finalize", "singularName": "", "namespaced": false,
                "kind": "Namespace", "verbs": ["update"]}),
            );
        }
        if i.plural == "pods" {
            resources.push(json!({"name": "pods/binding", "singularName": "", "namespaced": true, "kind": "Binding", "verbs": ["create"]}));
            resources.push(json!({"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}));
            resources.push(json!({"name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions", "verbs": ["create", "get"]}));
            resources.push(json!({"name": "pods/attach", "singularName": "", "namespaced": true, "kind": "PodAttachOptions", "verbs": ["create", "get"]}));
            resources.push(json!({"name": "pods/portforward", "singularName": "", "namespaced": true, "kind": "PodPortForwardOptions", "verbs": ["create", "get"]}));
            // kubectl drain evicts only when discovery lists this, with its group and version.
            resources.push(json!({"name": "pods/eviction", "singularName": "", "namespaced": true, "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}));
        }
    }
    if group.is_empty() {
        resources.push(json!({"name": "bindings", "singularName": "binding", "namespaced": true, "kind": "Binding", "verbs": ["create"]}));
    }
    // kube-apiserver lists resources by name.
    resources.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_version_hash_is_kube_apiservers() {
        // As kube-apiserver v1.33 reports them.
        assert_eq!(storage_version_hash("", "v1", "Pod"), "xPOwRZ+Yhw8=");
        assert_eq!(storage_version_hash("", "v1", "ConfigMap"), "qFsyl6wFWjQ=");
        assert_eq!(
            storage_version_hash("apps", "v1", "Deployment"),
            "8aSe+NMegvE="
        );
    }

    #[test]
    fn resources_are_listed_by_name_with_their_storage_version_hash() {
        let r = Registry::default();
        let list = resource_list(&r, "autoscaling", "v1");
        let hpa = &list["resources"][0];
        assert_eq!(hpa["name"], "horizontalpodautoscalers");
        // Stored as autoscaling/v2.
        assert_eq!(
            hpa["storageVersionHash"],
            storage_version_hash("autoscaling", "v2", "HorizontalPodAutoscaler")
        );
        let core = resource_list(&r, "", "v1");
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        let pods = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods")
            .unwrap();
        assert_eq!(pods["categories"], json!(["all"]));
    }
}
