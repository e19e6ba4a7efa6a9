//! The OpenAPI documents kube-apiserver serves: `/openapi/v3` (an index of
//! one document per group/version, each addressed with its content hash),
//! `/openapi/v3/api/v1`, `/openapi/v3/apis/<group>/<version>`, and the one
//! Swagger 2.0 document `/openapi/v2`. They carry every served kind's full
//! schema, so `kubectl explain` and kubectl's validation work.
//!
//! The documents are large (the core group's is about a megabyte), so they
//! are built once, off the async workers, on first request and kept until
//! the set of served resources changes ([`Documents::set_custom_resources`]).

mod paths;
mod resources;
mod schemas;
mod upstream;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha512};

pub use resources::CustomResourceSchema;
use resources::Resource;

use super::{Api, Params};
use crate::kinds::Registry;
use crate::status::ApiError;

/// One served document and its content hash (upper-case hex SHA-512, as
/// kube-openapi computes it), which is its ETag and `hash=` parameter.
struct Document {
    body: Bytes,
    hash: String,
}

impl Document {
    fn new(v: &Value) -> Self {
        let body = serde_json::to_vec(v).expect("documents serialize");
        let hash = hex::encode_upper(Sha512::digest(&body));
        Self {
            body: body.into(),
            hash,
        }
    }
}

/// Every document, built together.
struct Built {
    v3_root: Bytes,
    /// Keyed `api/v1`, `apis/apps/v1`.
    v3: HashMap<String, Document>,
    v2: Document,
}

/// The documents, built on first use and rebuilt after a change.
#[derive(Default)]
pub struct Documents {
    custom: RwLock<Vec<CustomResourceSchema>>,
    built: RwLock<Option<Arc<Built>>>,
    /// Held while the documents are built: requests that come meanwhile
    /// wait for that one build rather than each starting their own (a slow
    /// machine would otherwise spend minutes building them several times).
    building: tokio::sync::Mutex<()>,
}

impl Documents {
    /// Publishes these custom resources (replacing those published before);
    /// the documents are rebuilt on their next request.
    pub fn set_custom_resources(&self, custom: Vec<CustomResourceSchema>) {
        let mut c = self.custom.write().expect("openapi lock");
        if *c != custom {
            *c = custom;
            *self.built.write().expect("openapi lock") = None;
        }
    }

    async fn get(&self, registry: &Registry) -> Arc<Built> {
        if let Some(b) = self.built.read().expect("openapi lock").clone() {
            return b;
        }
        let _building = self.building.lock().await;
        if let Some(b) = self.built.read().expect("openapi lock").clone() {
            return b;
        }
        let registry = registry.clone();
        let custom = self.custom.read().expect("openapi lock").clone();
        let from = custom.clone();
        let built = tokio::task::spawn_blocking(move || Arc::new(build(&registry, &from)))
            .await
            .expect("building the OpenAPI documents does not panic");
        // Only keep it if no change came in while it was built.
        if *self.custom.read().expect("openapi lock") == custom {
            *self.built.write().expect("openapi lock") = Some(built.clone());
        }
        built
    }
}

/// Builds all documents for the registry's kinds and the custom resources.
fn build(registry: &Registry, custom: &[CustomResourceSchema]) -> Built {
    let started = std::time::Instant::now();
    // Group/versions in registry order, custom resources after.
    let mut gvs: BTreeMap<String, (String, String)> = BTreeMap::new();
    for k in registry.all() {
        let i = k.info();
        gvs.entry(resources::gv_path(i.group, i.version))
            .or_insert((i.group.into(), i.version.into()));
    }
    for c in custom {
        gvs.entry(resources::gv_path(&c.group, &c.version))
            .or_insert((c.group.clone(), c.version.clone()));
    }
    let mut v3 = HashMap::new();
    let mut all_definitions = Map::new();
    let mut all_paths = Map::new();
    for (key, (group, version)) in &gvs {
        let mut generator = schemas::generator();
        schemas::add_common(&mut generator);
        let mut served = Vec::new();
        for k in registry.all() {
            let i = k.info();
            // Custom resources come in through `custom`, with their schemas.
            if i.group != group || i.version != version || k.custom().is_some() {
                continue;
            }
            let definition = k.openapi_definition(&mut generator);
            let list_definition = format!("{definition}List");
            let r = Resource {
                group: group.clone(),
                version: version.clone(),
                kind: i.kind.into(),
                plural: i.plural.into(),
                namespaced: i.namespaced,
                has_status: i.has_status,
                has_scale: i.has_scale,
                definition,
                list_definition,
                strategic_merge: true,
            };
            schemas::add_subresource_types(&mut generator, &r);
            served.push(r);
        }
        let custom_here: Vec<&CustomResourceSchema> = custom
            .iter()
            .filter(|c| &c.group == group && &c.version == version)
            .collect();
        if !custom_here.is_empty() {
            generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>();
        }
        let mut definitions = generator.take_definitions(false);
        for c in &custom_here {
            let r = c.resource();
            schemas::add_subresource_types(&mut generator, &r);
            definitions.insert(r.definition.clone(), schemas::custom_resource_schema(c));
            served.push(r);
        }
        definitions.extend(generator.take_definitions(false));
        schemas::finish(&mut definitions, &served);

        let mut paths = Map::new();
        let (p, item) = paths::api_resources_path(group, version);
        paths.insert(p, item);
        for r in &served {
            paths.extend(paths::resource_paths(r));
        }
        let doc = json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": kubelab_rules::version::GIT_VERSION},
            "paths": paths.iter().map(|(k, v)| (k.clone(), paths::path_item_to_v3(v))).collect::<Map<_, _>>(),
            "components": {
                "schemas": definitions.iter().map(|(k, v)| (k.clone(), schemas::to_v3(k, v))).collect::<Map<_, _>>(),
                "securitySchemes": {"BearerToken": {"type": "apiKey", "description": "Bearer Token authentication", "name": "authorization", "in": "header"}}
            }
        });
        v3.insert(key.clone(), Document::new(&doc));
        for (k, v) in definitions {
            let v2 = schemas::to_v2(&k, &v);
            all_definitions.insert(k, v2);
        }
        for (k, mut v) in paths {
            schemas::point_refs_at_definitions(&mut v);
            all_paths.insert(k, v);
        }
    }
    let v2 = json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": kubelab_rules::version::GIT_VERSION},
        "paths": all_paths,
        "definitions": all_definitions,
        "parameters": upstream::parameters(),
        "security": [{"BearerToken": []}],
        "securityDefinitions": {"BearerToken": {"description": "Bearer Token authentication", "in": "header", "name": "authorization", "type": "apiKey"}}
    });
    let root: Map<String, Value> = v3
        .iter()
        .map(|(k, d)| {
            (
                k.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{k}?hash={}", d.hash)}),
            )
        })
        .collect();
    let built = Built {
        v3_root: serde_json::to_vec(&json!({"paths": root}))
            .expect("documents serialize")
            .into(),
        v3,
        v2: Document::new(&v2),
    };
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        v2_bytes = built.v2.body.len(),
        "built the OpenAPI documents"
    );
    built
}

/// kube-openapi's answer for a document: 304 when the client has it, the
/// body with its ETag otherwise; a request that names the current hash
/// may be cached for good.
fn serve(doc: &Document, headers: &HeaderMap, hashed: bool) -> Response {
    let etag = format!("\"{}\"", doc.hash);
    let cache = if hashed {
        "public, immutable"
    } else {
        "no-cache, private"
    };
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "application/json")],
            doc.body.clone(),
        )
            .into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

pub async fn v3_root(State(api): State<Arc<Api>>) -> Response {
    let built = api.openapi.get(&api.registry).await;
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache, private"),
        ],
        built.v3_root.clone(),
    )
        .into_response()
}

/// One group/version's document; an outdated `hash=` is redirected to the
/// current one, as kube-openapi does.
pub async fn v3_group_version(
    State(api): State<Arc<Api>>,
    Path(path): Path<String>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Response {
    let path = path.trim_end_matches('/');
    let built = api.openapi.get(&api.registry).await;
    let Some(doc) = built.v3.get(path) else {
        return ApiError::not_found_path().into_response();
    };
    match params.get("hash") {
        Some(h) if *h != doc.hash => {
            let location = format!("/openapi/v3/{path}?hash={}", doc.hash);
            (
                StatusCode::MOVED_PERMANENTLY,
                [(header::LOCATION, location)],
            )
                .into_response()
        }
        Some(_) => serve(doc, &headers, true),
        None => serve(doc, &headers, false),
    }
}

/// The protobuf form kubectl asks `/openapi/v2` for (gnostic's `Document`).
const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2";

/// `/openapi/v2`: JSON by default. The protobuf form is an empty document
/// (`swagger: "2.0"` only): kubectl then finds no v2 schema for a kind
/// and relies on the v3 documents, as it does against kube-apiserver.
pub async fn v2(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    let wants_protobuf = headers
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|a| a.contains(V2_PROTOBUF));
    if wants_protobuf {
        // gnostic `Document { swagger: "2.0" }`.
        let body: &[u8] = b"\x0a\x032.0";
        return (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            Bytes::from_static(body),
        )
            .into_response();
    }
    let built = api.openapi.get(&api.registry).await;
    serve(&built.v2, &headers, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_first_requests_share_one_build() {
        let docs = Documents::default();
        let registry = Registry::default();
        // Two builds would give two documents (the second replacing the first).
        let (a, b) = tokio::join!(docs.get(&registry), docs.get(&registry));
        assert!(Arc::ptr_eq(&a, &b), "one build serves both requests");
        docs.set_custom_resources(vec![]);
        let c = docs.get(&registry).await;
        assert!(
            Arc::ptr_eq(&a, &c),
            "unchanged resources keep the documents"
        );
    }

    fn built() -> Built {
        build(&Registry::default(), &[])
    }

    fn v3(b: &Built, key: &str) -> Value {
        serde_json::from_slice(&b.v3[key].body).unwrap()
    }

    #[test]
    fn every_served_kind_has_its_full_schema_with_its_group_version_kind() {
        let b = built();
        let core = v3(&b, "api/v1");
        let schemas = &core["components"]["schemas"];
        let pod = &schemas["io.k8s.api.core.v1.Pod"];
        assert_eq!(
            pod["x-kubernetes-group-version-kind"],
            json!([{"group": "", "kind": "Pod", "version": "v1"}])
        );
        assert!(pod.get("required").is_none());
        assert_eq!(
            pod["properties"]["spec"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.PodSpec"
        );
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["type"], "array");
        assert_eq!(
            containers["items"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Container"
        );
        assert_eq!(
            schemas["io.k8s.api.core.v1.Container"]["required"],
            json!(["name"])
        );
        assert_eq!(
            schemas["io.k8s.api.core.v1.ServiceList"]["properties"]["items"]["description"],
            "List of services"
        );
        let apps = v3(&b, "apis/apps/v1");
        assert_eq!(
            apps["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
        );
        // Every reference resolves inside its own document.
        for key in b.v3.keys() {
            let doc = v3(&b, key);
            let mut refs = Vec::new();
            collect_refs(&doc, &mut refs);
            for r in refs {
                let name = r.trim_start_matches("#/components/schemas/");
                assert!(
                    doc["components"]["schemas"].get(name).is_some(),
                    "{key}: {r}"
                );
            }
        }
    }

    fn collect_refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                for (k, c) in o {
                    // JSONSchemaProps has a property named `$ref`: an object.
                    if let ("$ref", Some(r)) = (k.as_str(), c.as_str()) {
                        out.push(r.to_owned());
                    } else {
                        collect_refs(c, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|c| collect_refs(c, out)),
            _ => {}
        }
    }

    #[test]
    fn the_index_addresses_each_document_by_its_hash() {
        let b = built();
        let root: Value = serde_json::from_slice(&b.v3_root).unwrap();
        let url = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert_eq!(
            url,
            format!(
                "/openapi/v3/apis/apps/v1?hash={}",
                b.v3["apis/apps/v1"].hash
            )
        );
        assert_eq!(b.v3["apis/apps/v1"].hash.len(), 128);
    }

    #[test]
    fn v2_refers_to_definitions_and_lists_shared_parameters() {
        let b = built();
        let v2: Value = serde_json::from_slice(&b.v2.body).unwrap();
        assert_eq!(v2["swagger"], "2.0");
        let list = &v2["paths"]["/api/v1/namespaces/{namespace}/services"]["get"];
        assert_eq!(list["operationId"], "listCoreV1NamespacedService");
        assert_eq!(
            list["responses"]["200"]["schema"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.ServiceList"
        );
        assert!(v2["parameters"]["watch-XNNPZGbK"].is_object());
        let body = String::from_utf8_lossy(&b.v2.body);
        assert!(!body.contains("#/components/schemas/"));
    }

    #[test]
    fn custom_resources_are_published_beside_the_built_in_kinds() {
        let crd = CustomResourceSchema {
            group: "stable.example.com".into(),
            version: "v1".into(),
            kind: "CronTab".into(),
            plural: "crontabs".into(),
            namespaced: true,
            has_status: false,
            has_scale: false,
            open_api_v3_schema: json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"cronSpec": {"type": "string"}}}}}),
        };
        let b = build(&Registry::default(), &[crd]);
        let doc = v3(&b, "apis/stable.example.com/v1");
        let s = &doc["components"]["schemas"]["com.example.stable.v1.CronTab"];
        assert_eq!(
            s["properties"]["spec"]["properties"]["cronSpec"]["type"],
            "string"
        );
        assert_eq!(
            s["x-kubernetes-group-version-kind"],
            json!([{"group": "stable.example.com", "kind": "CronTab", "version": "v1"}])
        );
        assert!(
            doc["paths"]["/apis/stable.example.com/v1/namespaces/{namespace}/crontabs"]["post"]
                .is_object()
        );
    }
}
