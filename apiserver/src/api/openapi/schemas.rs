//! The schemas of the OpenAPI documents: each served kind's `k8s-openapi`
//! type (its `schemars` schema carries upstream's descriptions) and the
//! types it refers to, named as kube-apiserver names them, plus the
//! `<Kind>List` types that k8s-openapi models as one generic `List<T>`.
//!
//! Definitions are generated once in a neutral form (refs to
//! `#/components/schemas/`, siblings beside `$ref`) and then published in
//! each document's form: [`to_v3`] wraps a described `$ref` in `allOf` as
//! kube-openapi does, [`to_v2`] points refs at `#/definitions/`.

use k8s_openapi::api::{autoscaling::v1::Scale, core::v1::Binding, policy::v1::Eviction};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    APIResourceList, DeleteOptions, ListMeta, ObjectMeta, Patch, Status, WatchEvent,
};
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::resources::{CustomResourceSchema, Resource};
use super::upstream;

const REF_PREFIX: &str = "#/components/schemas/";
const V2_REF_PREFIX: &str = "#/definitions/";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// A generator whose refs point at `#/components/schemas/` and which
/// leaves schemas as the types wrote them.
pub fn generator() -> SchemaGenerator {
    SchemaSettings::draft07()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
            s.transforms.clear();
        })
        .into_generator()
}

/// The definition name of a type, as kube-apiserver writes it.
pub fn definition_name<T: schemars::JsonSchema>() -> String {
    T::schema_name().into_owned()
}

/// Types every group/version's operations refer to.
pub fn add_common(generator: &mut SchemaGenerator) {
    generator.subschema_for::<Status>();
    generator.subschema_for::<DeleteOptions>();
    generator.subschema_for::<Patch>();
    generator.subschema_for::<WatchEvent<Status>>();
    generator.subschema_for::<ListMeta>();
    generator.subschema_for::<APIResourceList>();
}

/// Types of the subresources this server serves.
pub fn add_subresource_types(generator: &mut SchemaGenerator, resource: &Resource) {
    if resource.has_scale {
        generator.subschema_for::<Scale>();
    }
    if resource.group.is_empty() && resource.plural == "pods" {
        generator.subschema_for::<Eviction>();
        generator.subschema_for::<Binding>();
    }
}

pub fn scale_definition() -> String {
    definition_name::<Scale>()
}
pub fn eviction_definition() -> String {
    definition_name::<Eviction>()
}
pub fn binding_definition() -> String {
    definition_name::<Binding>()
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!([{"group": group, "kind": kind, "version": version}])
}

/// Makes the generated definitions what kube-apiserver publishes for the
/// given resources: their group-version-kind, list types, no `metadata` in
/// `required` (Go's `omitempty` ObjectMeta; k8s-openapi's field is not an
/// Option), and upstream's forms of IntOrString and Quantity.
pub fn finish(definitions: &mut Map<String, Value>, resources: &[Resource]) {
    for (name, schema) in definitions.iter_mut() {
        drop_required_metadata(schema);
        add_patch_extensions(name, schema);
    }
    for r in resources {
        if let Some(schema) = definitions.get_mut(&r.definition) {
            schema["x-kubernetes-group-version-kind"] = gvk(&r.group, &r.version, &r.kind);
        }
        let list = list_schema(r, definitions.get(&r.definition));
        definitions.insert(r.list_definition.clone(), list);
    }
}

/// The list, map and patch semantics of each field (`x-kubernetes-list-type`,
/// `-list-map-keys`, `-map-type`, `-patch-strategy`, `-patch-merge-key`):
/// kubectl computes its strategic merge patches and server-side apply its
/// merges from them, so without them a list such as `containers` counts as
/// one value and an unchanged `kubectl apply` reports `configured`.
fn add_patch_extensions(name: &str, schema: &mut Value) {
    use crate::patch_metadata::{ListType, MapType};
    let Some(definition) = crate::patch_metadata::definition(name) else {
        return;
    };
    let map_type = |t: MapType| match t {
        MapType::Atomic => "atomic",
        MapType::Granular => "granular",
    };
    if let (Some(t), Some(o)) = (definition.map_type, schema.as_object_mut()) {
        o.insert("x-kubernetes-map-type".into(), json!(map_type(t)));
    }
    let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for (field, meta) in &definition.fields {
        let Some(p) = properties.get_mut(field).and_then(Value::as_object_mut) else {
            continue;
        };
        if let Some(t) = meta.list_type {
            let t = match t {
                ListType::Atomic => "atomic",
                ListType::Set => "set",
                ListType::Map => "map",
            };
            p.insert("x-kubernetes-list-type".into(), json!(t));
        }
        if !meta.list_map_keys.is_empty() {
            p.insert(
                "x-kubernetes-list-map-keys".into(),
                json!(meta.list_map_keys),
            );
        }
        if let Some(t) = meta.map_type {
            p.insert("x-kubernetes-map-type".into(), json!(map_type(t)));
        }
        if let Some(k) = &meta.patch_merge_key {
            p.insert("x-kubernetes-patch-merge-key".into(), json!(k));
        }
        if let Some(st) = &meta.patch_strategy {
            p.insert("x-kubernetes-patch-strategy".into(), json!(st));
        }
    }
}

fn drop_required_metadata(schema: &mut Value) {
    let Some(required) = schema.get_mut("required").and_then(Value::as_array_mut) else {
        return;
    };
    required.retain(|f| f != "metadata");
    if required.is_empty() {
        schema.as_object_mut().map(|o| o.remove("required"));
    }
}

/// `<Kind>List`: upstream's descriptions where upstream has the type,
/// kube-apiserver's wording for custom resources otherwise.
fn list_schema(r: &Resource, kind_schema: Option<&Value>) -> Value {
    let (description, items) = match upstream::list_descriptions(&r.list_definition) {
        Some(d) => d,
        None => (
            format!("{}List is a list of {}", r.kind, r.kind),
            format!(
                "List of {}. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md",
                r.plural
            ),
        ),
    };
    let prop = |name: &str| {
        kind_schema
            .and_then(|s| s["properties"].get(name))
            .cloned()
            .unwrap_or_else(|| json!({"type": "string"}))
    };
    json!({
        "description": description,
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": prop("apiVersion"),
            "items": {
                "description": items,
                "type": "array",
                "items": {"$ref": format!("{REF_PREFIX}{}", r.definition)}
            },
            "kind": prop("kind"),
            "metadata": {
                "$ref": format!("{REF_PREFIX}{LIST_META}"),
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
            }
        },
        "x-kubernetes-group-version-kind": gvk(&r.group, &r.version, &format!("{}List", r.kind)),
    })
}

const API_VERSION_DESCRIPTION: &str = "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
const KIND_DESCRIPTION: &str = "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";

/// A custom resource's structural schema as kube-apiserver publishes it:
/// `apiVersion`, `kind` and `metadata` (ObjectMeta) added to its
/// properties when the definition leaves them out.
pub fn custom_resource_schema(c: &CustomResourceSchema) -> Value {
    let mut s = c.open_api_v3_schema.clone();
    if !s.is_object() {
        s = json!({"type": "object"});
    }
    let props = s
        .as_object_mut()
        .expect("an object")
        .entry("properties")
        .or_insert_with(|| json!({}));
    if let Some(props) = props.as_object_mut() {
        props
            .entry("apiVersion")
            .or_insert_with(|| json!({"description": API_VERSION_DESCRIPTION, "type": "string"}));
        props
            .entry("kind")
            .or_insert_with(|| json!({"description": KIND_DESCRIPTION, "type": "string"}));
        props.insert(
            "metadata".into(),
            json!({
                "$ref": format!("{REF_PREFIX}{}", definition_name::<ObjectMeta>()),
                "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
            }),
        );
    }
    s
}

/// A definition (or any schema in the documents) in OpenAPI v3 form.
pub fn to_v3(name: &str, schema: &Value) -> Value {
    let mut out = schema.clone();
    match name {
        INT_OR_STRING => {
            out.as_object_mut().map(|o| {
                o.remove("type");
                o.remove("format");
            });
            out["oneOf"] = json!([{"type": "integer"}, {"type": "string"}]);
            out["x-kubernetes-int-or-string"] = json!(true);
        }
        QUANTITY => {
            out.as_object_mut()
                .map(|o| o.remove("x-kubernetes-int-or-string"));
            out["oneOf"] = json!([{"type": "string"}, {"type": "number"}]);
        }
        _ => wrap_described_refs(&mut out),
    }
    out
}

/// kube-openapi's v3 form: a `$ref` with siblings becomes
/// `allOf: [{$ref}]` beside them (siblings of `$ref` are ignored in v3.0).
fn wrap_described_refs(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if o.len() > 1
                && let Some(r) = o.remove("$ref")
            {
                o.insert("allOf".into(), json!([{"$ref": r}]));
            }
            for (_, child) in o.iter_mut() {
                wrap_described_refs(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(wrap_described_refs),
        _ => {}
    }
}

/// A definition (or any schema, operation or path) in Swagger 2.0 form.
pub fn to_v2(name: &str, schema: &Value) -> Value {
    let mut out = schema.clone();
    match name {
        INT_OR_STRING => {
            out.as_object_mut()
                .map(|o| o.remove("x-kubernetes-int-or-string"));
            out["type"] = json!("string");
            out["format"] = json!("int-or-string");
        }
        QUANTITY => {
            out.as_object_mut()
                .map(|o| o.remove("x-kubernetes-int-or-string"));
            out["type"] = json!("string");
        }
        _ => {}
    }
    point_refs_at_definitions(&mut out);
    out
}

pub fn point_refs_at_definitions(v: &mut Value) {
    rewrite_refs(v, REF_PREFIX, V2_REF_PREFIX);
}

/// Upstream's shared parameters refer to `#/definitions/`; in a v3
/// document they must refer to `#/components/schemas/`.
pub fn point_refs_at_components(v: &mut Value) {
    rewrite_refs(v, V2_REF_PREFIX, REF_PREFIX);
}

fn rewrite_refs(v: &mut Value, from: &str, to: &str) {
    match v {
        Value::Object(o) => {
            for (k, child) in o.iter_mut() {
                if k == "$ref"
                    && let Some(s) = child.as_str()
                    && let Some(name) = s.strip_prefix(from)
                {
                    *child = Value::String(format!("{to}{name}"));
                } else {
                    rewrite_refs(child, from, to);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| rewrite_refs(c, from, to)),
        _ => {}
    }
}

/// The `$ref` of a definition in the neutral form.
pub fn reference(name: &str) -> Value {
    json!({"$ref": format!("{REF_PREFIX}{name}")})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn described_refs_are_wrapped_in_all_of_for_v3_and_kept_for_v2() {
        let s = json!({"properties": {"metadata": {
            "$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "description": "Standard object's metadata."
        }, "spec": {"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}}});
        let v3 = to_v3("io.k8s.api.core.v1.Pod", &s);
        assert_eq!(
            v3["properties"]["metadata"],
            json!({"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}],
                   "description": "Standard object's metadata."})
        );
        assert_eq!(
            v3["properties"]["spec"],
            json!({"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"})
        );
        let v2 = to_v2("io.k8s.api.core.v1.Pod", &s);
        assert_eq!(
            v2["properties"]["metadata"]["$ref"],
            "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        assert_eq!(
            v2["properties"]["metadata"]["description"],
            "Standard object's metadata."
        );
    }

    #[test]
    fn fields_carry_their_list_and_patch_semantics() {
        let mut spec = json!({"properties": {
            "containers": {"type": "array"},
            "tolerations": {"type": "array"},
            "nodeName": {"type": "string"}
        }});
        add_patch_extensions("io.k8s.api.core.v1.PodSpec", &mut spec);
        assert_eq!(
            spec["properties"]["containers"],
            json!({"type": "array", "x-kubernetes-list-map-keys": ["name"],
                   "x-kubernetes-list-type": "map", "x-kubernetes-patch-merge-key": "name",
                   "x-kubernetes-patch-strategy": "merge"})
        );
        assert_eq!(spec["properties"]["nodeName"], json!({"type": "string"}));
        let mut node_spec = json!({"properties": {"taints": {"type": "array"}}});
        add_patch_extensions("io.k8s.api.core.v1.NodeSpec", &mut node_spec);
        assert!(
            node_spec["properties"]["taints"]
                .get("x-kubernetes-patch-strategy")
                .is_none()
        );
        let mut selector = json!({"properties": {}});
        add_patch_extensions(
            "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
            &mut selector,
        );
        assert_eq!(selector["x-kubernetes-map-type"], "atomic");
    }

    #[test]
    fn int_or_string_takes_each_documents_form() {
        let s = json!({"description": "d", "x-kubernetes-int-or-string": true});
        assert_eq!(
            to_v3(INT_OR_STRING, &s),
            json!({"description": "d", "oneOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": true})
        );
        assert_eq!(
            to_v2(INT_OR_STRING, &s),
            json!({"description": "d", "type": "string", "format": "int-or-string"})
        );
        assert_eq!(
            to_v2(QUANTITY, &s),
            json!({"description": "d", "type": "string"})
        );
    }

    #[test]
    fn metadata_is_not_required_as_in_go_types() {
        let mut s = json!({"required": ["metadata"]});
        drop_required_metadata(&mut s);
        assert_eq!(s, json!({}));
        let mut s = json!({"required": ["items", "metadata"]});
        drop_required_metadata(&mut s);
        assert_eq!(s, json!({"required": ["items"]}));
    }
}
