//! `/version`, legacy discovery (`/api`, `/apis`, `/api/v1`) and the
//! OpenAPI v3 index kubectl reads to learn that the server validates
//! fields itself (`fieldValidation`) and supports `dryRun`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::{Api, json_response};
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
    json_response(
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
    let mut v = group_json(name, &versions);
    v["kind"] = "APIGroup".into();
    v["apiVersion"] = "v1".into();
    Some(v)
}

pub async fn api_groups(State(api): State<Arc<Api>>) -> Response {
    let mut served = api.registry.groups();
    // Not a stored kind: computed from the nodes' Summary API.
    served.push((super::metrics::GROUP, vec![super::metrics::VERSION]));
    let groups: Vec<Value> = served
        .into_iter()
        .map(|(g, versions)| group_json(g, &versions))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
    )
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
        resources.push(r);
        if i.has_status {
            resources.push(json!({"name": format!("{}/status", i.plural), "singularName": "", "namespaced": i.namespaced,
                "kind": i.kind, "verbs": ["get", "patch", "update"]}));
        }
        if i.has_scale {
            resources.push(json!({"name": format!("{}/scale", i.plural), "singularName": "", "namespaced": i.namespaced,
                "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
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
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The OpenAPI v2 document kubectl's client-side validation falls back to
/// for a kind the v3 index does not list (a removed version such as
/// `batch/v1beta1`): a document without definitions, in the protobuf form
/// kubectl asks for, so that validation finds no schema and kubectl goes on
/// to say the kind has no mapping, as it does against kube-apiserver.
pub async fn openapi_v2() -> Response {
    // gnostic `Document { swagger: "2.0" }`.
    let body: &[u8] = b"\x0a\x032.0";
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/octet-stream")
        .body(axum::body::Body::from(body))
        .expect("static response")
}

pub async fn openapi_v3_root(State(api): State<Arc<Api>>) -> Response {
    let mut paths = serde_json::Map::new();
    let mut gvs: Vec<(&str, &str)> = api
        .registry
        .all()
        .iter()
        .map(|k| (k.info().group, k.info().version))
        .collect();
    gvs.dedup();
    for (g, v) in gvs {
        let p = gv_path(g, v);
        paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=kubelab-{}", env!("CARGO_PKG_VERSION"))}));
    }
    json_response(StatusCode::OK, &json!({"paths": paths}))
}

/// One group/version's OpenAPI document: paths only, each write operation
/// tagged with its kind and listing the query parameters the server honours.
pub async fn openapi_v3_group(State(api): State<Arc<Api>>, Path(path): Path<String>) -> Response {
    let path = path.trim_end_matches('/');
    let params = json!([
        {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}}
    ]);
    let mut paths = serde_json::Map::new();
    let mut found = false;
    for k in api.registry.all() {
        let i = k.info();
        if gv_path(i.group, i.version) != path {
            continue;
        }
        found = true;
        let gvk = json!({"group": i.group, "version": i.version, "kind": i.kind});
        let op = |action: &str| {
            json!({
                "operationId": format!("{action}{}", i.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params,
                "responses": {"200": {"description": "OK"}}
            })
        };
        let base = format!("/{}", gv_path(i.group, i.version));
        let collection = if i.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", i.plural)
        } else {
            format!("{base}/{}", i.plural)
        };
        paths.insert(
            collection.clone(),
            json!({"post": op("post"), "get": op("list")}),
        );
        paths.insert(format!("{collection}/{{name}}"), json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}));
    }
    if !found {
        return json_response(
            StatusCode::NOT_FOUND,
            &crate::status::ApiError::not_found_path().to_json(),
        );
    }
    json_response(
        StatusCode::OK,
        &json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": kubelab_rules::version::GIT_VERSION}, "paths": paths, "components": {"schemas": {}}}),
    )
}
