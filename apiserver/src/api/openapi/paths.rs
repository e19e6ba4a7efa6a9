//! The paths and operations kube-apiserver lists for a resource, with its
//! operation ids (`listCoreV1NamespacedPod`), actions, parameters and
//! responses. Built in Swagger 2.0 form (shared parameters by reference,
//! body parameters, `consumes`/`produces`); [`operation_to_v3`] turns a
//! path item into OpenAPI 3.0's (inline parameters, `requestBody`,
//! response `content`).

use serde_json::{Map, Value, json};

use super::resources::Resource;
use super::schemas::{self, reference};
use super::upstream;

const PRODUCES: [&str; 4] = [
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/cbor",
];
const WATCH_PRODUCES: [&str; 3] = [
    "application/json;stream=watch",
    "application/vnd.kubernetes.protobuf;stream=watch",
    "application/cbor-seq",
];
const PATCH_CONSUMES: [&str; 5] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
    "application/apply-patch+cbor",
];
/// Query parameters of list and watch.
const LIST_PARAMETERS: [&str; 10] = [
    "allowWatchBookmarks-HC2hJt-J",
    "continue-QfD61s0i",
    "fieldSelector-xIcQKXFG",
    "labelSelector-5Zw57w4C",
    "limit-1NfNmdNH",
    "resourceVersion-5WAnf1kx",
    "resourceVersionMatch-t8XhRHeC",
    "sendInitialEvents-rLXlEK_k",
    "timeoutSeconds-yvYezaOC",
    "watch-XNNPZGbK",
];
const DELETE_PARAMETERS: [&str; 6] = [
    "body-2Y1dVQaQ",
    "dryRun",
    "gracePeriodSeconds--K5HaBOS",
    "ignoreStoreReadErrorWithClusterBreakingPotential-QbNkfIqj",
    "orphanDependents-uRB25kX5",
    "propagationPolicy-6jk3prlO",
];
const NAMESPACE: &str = "namespace-vgWSWtn3";
const PRETTY: &str = "pretty-tJGM1-ng";

/// A parameter as the v2 document lists it: shared ones by reference.
fn param(key: &str) -> Value {
    if upstream::parameters().contains_key(key) {
        json!({"$ref": format!("#/parameters/{key}")})
    } else {
        upstream::parameter(key)
    }
}

fn params(keys: &[&str]) -> Vec<Value> {
    keys.iter().map(|k| param(k)).collect()
}

fn name_param(kind: &str) -> Value {
    json!({"description": format!("name of the {kind}"), "in": "path", "name": "name",
           "required": true, "type": "string", "uniqueItems": true})
}

fn body_param(definition: &str) -> Value {
    json!({"in": "body", "name": "body", "required": true, "schema": reference(definition)})
}

/// `Core`, `Apps`, `RbacAuthorization` (`rbac.authorization.k8s.io`).
fn group_camel(group: &str) -> String {
    if group.is_empty() {
        return "Core".into();
    }
    group
        .trim_end_matches(".k8s.io")
        .split(['.', '-'])
        .map(capitalize)
        .collect()
}

/// `core_v1`, `apps_v1`, `rbacAuthorization_v1`: the operations' tag.
fn tag(group: &str, version: &str) -> String {
    let g = group_camel(group);
    let mut c = g.chars();
    let lower: String = c
        .next()
        .map(|f| f.to_ascii_lowercase().to_string() + c.as_str())
        .unwrap_or_default();
    format!("{lower}_{version}")
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// Everything an operation needs besides its verb.
struct Op<'a> {
    r: &'a Resource,
    id: String,
    description: String,
    action: &'a str,
    parameters: Vec<Value>,
    consumes: Vec<&'a str>,
    produces: Vec<&'a str>,
    /// (code, description, schema)
    responses: Vec<(&'a str, &'a str, Option<Value>)>,
    gvk: Value,
}

impl Op<'_> {
    fn build(self) -> Value {
        let mut responses = Map::new();
        for (code, description, schema) in self.responses {
            let mut resp = json!({"description": description});
            if let Some(s) = schema {
                resp["schema"] = s;
            }
            responses.insert(code.into(), resp);
        }
        responses.insert("401".into(), json!({"description": "Unauthorized"}));
        let mut parameters = self.parameters;
        parameters.sort_by_key(param_name);
        let mut op = json!({
            "consumes": self.consumes,
            "description": self.description,
            "operationId": self.id,
            "produces": self.produces,
            "responses": responses,
            "schemes": ["https"],
            "tags": [tag(&self.r.group, &self.r.version)],
            "x-kubernetes-action": self.action,
            "x-kubernetes-group-version-kind": self.gvk,
        });
        if !parameters.is_empty() {
            op["parameters"] = Value::Array(parameters);
        }
        op
    }
}

/// The name a parameter is sorted by (upstream lists them by name).
fn param_name(p: &Value) -> String {
    match p.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let key = r.trim_start_matches("#/parameters/");
            upstream::parameters()
                .get(key)
                .and_then(|p| p["name"].as_str())
                .unwrap_or(key)
                .to_owned()
        }
        None => p["name"].as_str().unwrap_or("").to_owned(),
    }
}

fn path_item(parameters: Vec<Value>, ops: Vec<(&str, Value)>) -> Value {
    let mut item = Map::new();
    for (verb, op) in ops {
        item.insert(verb.into(), op);
    }
    let mut parameters = parameters;
    parameters.sort_by_key(param_name);
    item.insert("parameters".into(), Value::Array(parameters));
    Value::Object(item)
}

/// All paths of one resource, keyed by URL template.
pub fn resource_paths(r: &Resource) -> Map<String, Value> {
    let mut paths = Map::new();
    let gv = r.gv_path();
    let g = format!("{}{}", group_camel(&r.group), capitalize(&r.version));
    let scope = if r.namespaced { "Namespaced" } else { "" };
    let kind = &r.kind;
    let gvk = json!({"group": r.group, "kind": kind, "version": r.version});
    let ns_prefix = if r.namespaced {
        "namespaces/{namespace}/"
    } else {
        ""
    };
    let scope_params = |mut v: Vec<Value>| {
        if r.namespaced {
            v.push(param(NAMESPACE));
        }
        v.push(param(PRETTY));
        v
    };
    let object = reference(&r.definition);
    let list = reference(&r.list_definition);
    let status = reference(&schemas::definition_name::<
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Status,
    >());
    let watch_event = reference(&schemas::definition_name::<
        k8s_openapi::apimachinery::pkg::apis::meta::v1::WatchEvent<()>,
    >());
    let op = |id: String, description: String, action: &'static str| Op {
        r,
        id,
        description,
        action,
        parameters: Vec::new(),
        consumes: vec!["*/*"],
        produces: PRODUCES.to_vec(),
        responses: Vec::new(),
        gvk: gvk.clone(),
    };
    let list_produces: Vec<&str> = PRODUCES.iter().chain(&WATCH_PRODUCES).copied().collect();

    // The collection: list, create, delete collection.
    let collection = format!("/{gv}/{ns_prefix}{}", r.plural);
    let mut list_op = op(
        format!("list{g}{scope}{kind}"),
        format!("list or watch objects of kind {kind}"),
        "list",
    );
    list_op.parameters = params(&LIST_PARAMETERS);
    list_op.produces = list_produces.clone();
    list_op.responses = vec![("200", "OK", Some(list.clone()))];
    let mut create = op(
        format!("create{g}{scope}{kind}"),
        format!("create a {kind}"),
        "post",
    );
    create.parameters = vec![
        body_param(&r.definition),
        param("dryRun"),
        param("fieldManager-Qy4HdaTW"),
        param("fieldValidation"),
    ];
    create.responses = vec![
        ("200", "OK", Some(object.clone())),
        ("201", "Created", Some(object.clone())),
        ("202", "Accepted", Some(object.clone())),
    ];
    let mut delete_collection = op(
        format!("delete{g}Collection{scope}{kind}"),
        format!("delete collection of {kind}"),
        "deletecollection",
    );
    delete_collection.parameters = params(&[
        "body-2Y1dVQaQ",
        "continue-QfD61s0i",
        "dryRun",
        "fieldSelector-xIcQKXFG",
        "gracePeriodSeconds--K5HaBOS",
        "ignoreStoreReadErrorWithClusterBreakingPotential-QbNkfIqj",
        "labelSelector-5Zw57w4C",
        "limit-1NfNmdNH",
        "orphanDependents-uRB25kX5",
        "propagationPolicy-6jk3prlO",
        "resourceVersion-5WAnf1kx",
        "resourceVersionMatch-t8XhRHeC",
        "sendInitialEvents-rLXlEK_k",
        "timeoutSeconds-yvYezaOC",
    ]);
    delete_collection.responses = vec![("200", "OK", Some(status.clone()))];
    paths.insert(
        collection.clone(),
        path_item(
            scope_params(vec![]),
            vec![
                ("delete", delete_collection.build()),
                ("get", list_op.build()),
                ("post", create.build()),
            ],
        ),
    );

    // One object: read, replace, patch, delete.
    let item = format!("{collection}/{{name}}");
    let mut read = op(
        format!("read{g}{scope}{kind}"),
        format!("read the specified {kind}"),
        "get",
    );
    read.responses = vec![("200", "OK", Some(object.clone()))];
    let replace = |id: String, description: String, def: &str| {
        let mut o = op(id, description, "put");
        o.parameters = vec![
            body_param(def),
            param("dryRun"),
            param("fieldManager-Qy4HdaTW"),
            param("fieldValidation"),
        ];
        o.responses = vec![
            ("200", "OK", Some(reference(def))),
            ("201", "Created", Some(reference(def))),
        ];
        o
    };
    let patch = |id: String, description: String, def: &str| {
        let mut o = op(id, description, "patch");
        o.parameters = params(&[
            "body-78PwaGsr",
            "dryRun",
            "fieldManager-7c6nTn1T",
            "fieldValidation",
            "force-tOGGb0Yi",
        ]);
        o.consumes = PATCH_CONSUMES
            .iter()
            .filter(|m| r.strategic_merge || **m != "application/strategic-merge-patch+json")
            .copied()
            .collect();
        o.responses = vec![
            ("200", "OK", Some(reference(def))),
            ("201", "Created", Some(reference(def))),
        ];
        o
    };
    let mut delete = op(
        format!("delete{g}{scope}{kind}"),
        format!("delete a {kind}"),
        "delete",
    );
    delete.parameters = params(&DELETE_PARAMETERS);
    let deleted = if upstream::delete_returns_object(kind) {
        object.clone()
    } else {
        status.clone()
    };
    delete.responses = vec![
        ("200", "OK", Some(deleted.clone())),
        ("202", "Accepted", Some(deleted)),
    ];
    paths.insert(
        item.clone(),
        path_item(
            scope_params(vec![name_param(kind)]),
            vec![
                ("delete", delete.build()),
                ("get", read.build()),
                (
                    "patch",
                    patch(
                        format!("patch{g}{scope}{kind}"),
                        format!("partially update the specified {kind}"),
                        &r.definition,
                    )
                    .build(),
                ),
                (
                    "put",
                    replace(
                        format!("replace{g}{scope}{kind}"),
                        format!("replace the specified {kind}"),
                        &r.definition,
                    )
                    .build(),
                ),
            ],
        ),
    );

    // Subresources served with the object's own type or Scale.
    let mut subresources: Vec<(&str, String, String)> = Vec::new();
    if r.has_status {
        subresources.push(("status", "Status".into(), r.definition.clone()));
    }
    if r.has_scale {
        subresources.push(("scale", "Scale".into(), schemas::scale_definition()));
    }
    for (sub, suffix, def) in subresources {
        let sub_kind = if sub == "scale" {
            "Scale"
        } else {
            kind.as_str()
        };
        let sub_gvk = if sub == "scale" {
            json!({"group": "autoscaling", "kind": "Scale", "version": "v1"})
        } else {
            gvk.clone()
        };
        let mut read = op(
            format!("read{g}{scope}{kind}{suffix}"),
            format!("read {sub} of the specified {kind}"),
            "get",
        );
        read.responses = vec![("200", "OK", Some(reference(&def)))];
        read.gvk = sub_gvk.clone();
        let mut p = patch(
            format!("patch{g}{scope}{kind}{suffix}"),
            format!("partially update {sub} of the specified {kind}"),
            &def,
        );
        p.gvk = sub_gvk.clone();
        let mut u = replace(
            format!("replace{g}{scope}{kind}{suffix}"),
            format!("replace {sub} of the specified {kind}"),
            &def,
        );
        u.gvk = sub_gvk;
        paths.insert(
            format!("{item}/{sub}"),
            path_item(
                scope_params(vec![name_param(sub_kind)]),
                vec![
                    ("get", read.build()),
                    ("patch", p.build()),
                    ("put", u.build()),
                ],
            ),
        );
    }
    if r.group.is_empty() && r.plural == "pods" {
        for (sub, sub_kind, def) in [
            ("binding", "Binding", schemas::binding_definition()),
            ("eviction", "Eviction", schemas::eviction_definition()),
        ] {
            let mut o = op(
                format!("create{g}{scope}{kind}{sub_kind}"),
                format!("create {sub} of a {kind}"),
                "post",
            );
            o.parameters = vec![
                body_param(&def),
                param("dryRun"),
                param("fieldManager-Qy4HdaTW"),
                param("fieldValidation"),
            ];
            o.responses = vec![
                ("200", "OK", Some(reference(&def))),
                ("201", "Created", Some(reference(&def))),
                ("202", "Accepted", Some(reference(&def))),
            ];
            let (group, version) = if sub == "eviction" {
                ("policy", "v1")
            } else {
                ("", "v1")
            };
            o.gvk = json!({"group": group, "kind": sub_kind, "version": version});
            paths.insert(
                format!("{item}/{sub}"),
                path_item(
                    scope_params(vec![name_param(sub_kind)]),
                    vec![("post", o.build())],
                ),
            );
        }
    }

    // Across namespaces, and the deprecated watch paths.
    let all_params = |extra: Vec<Value>| {
        let mut v = params(&LIST_PARAMETERS);
        v.push(param(PRETTY));
        v.extend(extra);
        v
    };
    let watch_op = |id: String, description: String, action: &'static str| {
        let mut o = op(id, description, action);
        o.produces = list_produces.clone();
        o.responses = vec![("200", "OK", Some(watch_event.clone()))];
        o
    };
    let list_description = format!(
        "watch individual changes to a list of {kind}. deprecated: use the 'watch' parameter with a list operation instead."
    );
    let one_description = format!(
        "watch changes to an object of kind {kind}. deprecated: use the 'watch' parameter with a list operation instead, filtered to a single item with the 'fieldSelector' parameter."
    );
    if r.namespaced {
        let mut o = op(
            format!("list{g}{kind}ForAllNamespaces"),
            format!("list or watch objects of kind {kind}"),
            "list",
        );
        o.produces = list_produces.clone();
        o.responses = vec![("200", "OK", Some(list.clone()))];
        paths.insert(
            format!("/{gv}/{}", r.plural),
            path_item(all_params(vec![]), vec![("get", o.build())]),
        );
        paths.insert(
            format!("/{gv}/watch/{}", r.plural),
            path_item(
                all_params(vec![]),
                vec![(
                    "get",
                    watch_op(
                        format!("watch{g}{kind}ListForAllNamespaces"),
                        list_description.clone(),
                        "watchlist",
                    )
                    .build(),
                )],
            ),
        );
    }
    paths.insert(
        format!("/{gv}/watch/{ns_prefix}{}", r.plural),
        path_item(
            all_params(if r.namespaced {
                vec![param(NAMESPACE)]
            } else {
                vec![]
            }),
            vec![(
                "get",
                watch_op(
                    format!("watch{g}{scope}{kind}List"),
                    list_description,
                    "watchlist",
                )
                .build(),
            )],
        ),
    );
    let mut one = vec![name_param(kind)];
    if r.namespaced {
        one.push(param(NAMESPACE));
    }
    paths.insert(
        format!("/{gv}/watch/{ns_prefix}{}/{{name}}", r.plural),
        path_item(
            all_params(one),
            vec![(
                "get",
                watch_op(format!("watch{g}{scope}{kind}"), one_description, "watch").build(),
            )],
        ),
    );
    paths
}

/// `GET /api/v1/`: the group/version's resource list.
pub fn api_resources_path(group: &str, version: &str) -> (String, Value) {
    let g = format!("{}{}", group_camel(group), capitalize(version));
    let list = reference(&schemas::definition_name::<
        k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList,
    >());
    (
        format!("/{}/", super::resources::gv_path(group, version)),
        json!({"get": {
            "consumes": PRODUCES,
            "description": "get available resources",
            "operationId": format!("get{g}APIResources"),
            "produces": PRODUCES,
            "responses": {"200": {"description": "OK", "schema": list}, "401": {"description": "Unauthorized"}},
            "schemes": ["https"],
            "tags": [tag(group, version)]
        }}),
    )
}

/// A path item in OpenAPI 3.0 form: parameters inline with a `schema`,
/// the body as `requestBody`, responses with `content` per media type.
pub fn path_item_to_v3(item: &Value) -> Value {
    let mut out = Map::new();
    for (key, value) in item.as_object().into_iter().flatten() {
        if key == "parameters" {
            let ps: Vec<Value> = value
                .as_array()
                .into_iter()
                .flatten()
                .map(parameter_to_v3)
                .collect();
            out.insert(key.clone(), Value::Array(ps));
        } else {
            out.insert(key.clone(), operation_to_v3(value));
        }
    }
    Value::Object(out)
}

/// A parameter with upstream's shared one in place of its reference.
fn resolve(p: &Value) -> Value {
    let mut p = match p.get("$ref").and_then(Value::as_str) {
        Some(r) => upstream::parameter(r.trim_start_matches("#/parameters/")),
        None => p.clone(),
    };
    schemas::point_refs_at_components(&mut p);
    p
}

fn parameter_to_v3(p: &Value) -> Value {
    let p = resolve(p);
    let mut out = json!({"name": p["name"], "in": p["in"]});
    if let Some(d) = p.get("description") {
        out["description"] = d.clone();
    }
    if p.get("required") == Some(&json!(true)) {
        out["required"] = json!(true);
    }
    out["schema"] = json!({"type": p["type"], "uniqueItems": true});
    out
}

fn content(types: &Value, schema: &Value) -> Value {
    let mut c = Map::new();
    for t in types.as_array().into_iter().flatten() {
        if let Some(t) = t.as_str() {
            c.insert(t.into(), json!({"schema": schema}));
        }
    }
    Value::Object(c)
}

fn operation_to_v3(op: &Value) -> Value {
    let mut out = Map::new();
    let consumes = &op["consumes"];
    let produces = &op["produces"];
    for (key, value) in op.as_object().into_iter().flatten() {
        match key.as_str() {
            "consumes" | "produces" | "schemes" => {}
            "parameters" => {
                let mut ps = Vec::new();
                for p in value.as_array().into_iter().flatten() {
                    let p = resolve(p);
                    if p["in"] == "body" {
                        let mut body = json!({"content": content(consumes, &p["schema"])});
                        if p.get("required") == Some(&json!(true)) {
                            body["required"] = json!(true);
                        }
                        out.insert("requestBody".into(), body);
                    } else {
                        ps.push(parameter_to_v3(&p));
                    }
                }
                if !ps.is_empty() {
                    out.insert("parameters".into(), Value::Array(ps));
                }
            }
            "responses" => {
                let mut rs = Map::new();
                for (code, r) in value.as_object().into_iter().flatten() {
                    let mut resp = json!({"description": r["description"]});
                    if let Some(s) = r.get("schema") {
                        resp["content"] = content(produces, s);
                    }
                    rs.insert(code.clone(), resp);
                }
                out.insert(key.clone(), Value::Object(rs));
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> Resource {
        Resource {
            group: String::new(),
            version: "v1".into(),
            kind: "Pod".into(),
            plural: "pods".into(),
            namespaced: true,
            has_status: true,
            has_scale: false,
            definition: "io.k8s.api.core.v1.Pod".into(),
            list_definition: "io.k8s.api.core.v1.PodList".into(),
            strategic_merge: true,
        }
    }

    #[test]
    fn custom_resources_take_no_strategic_merge_patch() {
        let consumes = |r: &Resource| {
            let paths = resource_paths(r);
            let (_, item) = paths
                .iter()
                .find(|(p, _)| p.ends_with("/{name}"))
                .expect("the named path");
            item["patch"]["consumes"].clone()
        };
        let smp = serde_json::json!("application/strategic-merge-patch+json");
        assert!(consumes(&pods()).as_array().unwrap().contains(&smp));
        let custom = Resource {
            strategic_merge: false,
            ..pods()
        };
        let c = consumes(&custom);
        assert!(!c.as_array().unwrap().contains(&smp), "{c}");
        assert!(
            c.as_array()
                .unwrap()
                .contains(&serde_json::json!("application/merge-patch+json"))
        );
    }

    #[test]
    fn names_operations_as_kube_apiserver_does() {
        let p = resource_paths(&pods());
        let ids =
            |path: &str, verb: &str| p[path][verb]["operationId"].as_str().unwrap().to_owned();
        assert_eq!(
            ids("/api/v1/namespaces/{namespace}/pods", "get"),
            "listCoreV1NamespacedPod"
        );
        assert_eq!(
            ids("/api/v1/namespaces/{namespace}/pods", "delete"),
            "deleteCoreV1CollectionNamespacedPod"
        );
        assert_eq!(
            ids("/api/v1/namespaces/{namespace}/pods/{name}/status", "patch"),
            "patchCoreV1NamespacedPodStatus"
        );
        assert_eq!(ids("/api/v1/pods", "get"), "listCoreV1PodForAllNamespaces");
        assert_eq!(
            ids("/api/v1/watch/namespaces/{namespace}/pods/{name}", "get"),
            "watchCoreV1NamespacedPod"
        );
        assert_eq!(
            ids("/api/v1/watch/pods", "get"),
            "watchCoreV1PodListForAllNamespaces"
        );
        assert_eq!(
            ids(
                "/api/v1/namespaces/{namespace}/pods/{name}/eviction",
                "post"
            ),
            "createCoreV1NamespacedPodEviction"
        );
        assert_eq!(
            group_camel("rbac.authorization.k8s.io"),
            "RbacAuthorization"
        );
        assert_eq!(
            tag("rbac.authorization.k8s.io", "v1"),
            "rbacAuthorization_v1"
        );
        assert_eq!(tag("", "v1"), "core_v1");
    }

    #[test]
    fn parameters_are_listed_by_name_and_inlined_in_v3() {
        let p = resource_paths(&pods());
        let post = &p["/api/v1/namespaces/{namespace}/pods"]["post"];
        let names: Vec<String> = post["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(param_name)
            .collect();
        assert_eq!(names, ["body", "dryRun", "fieldManager", "fieldValidation"]);
        let v3 = path_item_to_v3(&p["/api/v1/namespaces/{namespace}/pods"]);
        let post = &v3["post"];
        assert_eq!(
            post["requestBody"]["content"]["*/*"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Pod"
        );
        assert_eq!(post["parameters"][2]["name"], "fieldValidation");
        assert_eq!(
            post["parameters"][2]["schema"],
            json!({"type": "string", "uniqueItems": true})
        );
        assert_eq!(
            post["responses"]["201"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Pod"
        );
        assert_eq!(v3["parameters"][0]["name"], "namespace");
        assert_eq!(v3["parameters"][0]["required"], true);
        assert!(
            v3["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "watch")
        );
    }
}
