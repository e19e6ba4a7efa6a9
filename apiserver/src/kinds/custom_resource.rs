//! A custom resource served from a CustomResourceDefinition: one
//! [`CustomResource`] per served version, built from the CRD's accepted
//! names and that version's schema, printer columns and subresources, as
//! the apiextensions-apiserver's `crdHandler` builds its storage. Objects
//! are plain JSON checked by the structural schema.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use jsonpath_rust::JsonPath;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, CustomResourceDefinitionNames,
    CustomResourceDefinitionVersion, CustomResourceSubresourceScale, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use super::structural_schema;
use super::table::{self, Column};
use super::{Kind, ResourceInfo};
use crate::api::openapi::CustomResourceSchema;
use crate::status::FieldError;

/// Names of served resources live as long as the process: each distinct
/// string is leaked once, however often CRDs are rewritten.
pub fn intern(s: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .expect("name table");
    if let Some(n) = names.get(s) {
        return n;
    }
    let n: &'static str = Box::leak(s.to_owned().into_boxed_str());
    names.insert(n);
    n
}

fn intern_list(v: &[String]) -> &'static [&'static str] {
    static LISTS: OnceLock<Mutex<HashSet<&'static [&'static str]>>> = OnceLock::new();
    let list: Vec<&'static str> = v.iter().map(|s| intern(s)).collect();
    let mut lists = LISTS
        .get_or_init(Default::default)
        .lock()
        .expect("name list table");
    if let Some(l) = lists.get(list.as_slice()) {
        return l;
    }
    let l: &'static [&'static str] = Box::leak(list.into_boxed_slice());
    lists.insert(l);
    l
}

/// `version.CompareKubeAwareVersionStrings`: GA before beta before alpha,
/// higher numbers first, then anything else in alphabetical order.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn parse(v: &str) -> Option<(u64, u8, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let major: u64 = rest[..digits].parse().ok()?;
        let tail = &rest[digits..];
        if tail.is_empty() {
            return Some((major, 2, 0));
        }
        let (level, n) = if let Some(n) = tail.strip_prefix("beta") {
            (1, n)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (0, n)
        } else {
            return None;
        };
        Some((major, level, n.parse().ok()?))
    }
    match (parse(a), parse(b)) {
        (Some((ma, la, na)), Some((mb, lb, nb))) => lb.cmp(&la).then(mb.cmp(&ma)).then(nb.cmp(&na)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// One served version of a custom resource.
pub struct CustomResource {
    info: ResourceInfo,
    storage_version: &'static str,
    schema: Option<JSONSchemaProps>,
    columns: Vec<(Column, CustomResourceColumnDefinition)>,
    scale: Option<CustomResourceSubresourceScale>,
    selectable: Vec<&'static str>,
}

impl CustomResource {
    /// The kinds a CRD serves, preferred version first, named by its
    /// accepted names (`status.acceptedNames`).
    pub fn served(crd: &CustomResourceDefinition) -> Vec<Arc<dyn Kind>> {
        let Some(names) = crd.status.as_ref().and_then(|s| s.accepted_names.as_ref()) else {
            return Vec::new();
        };
        if names.plural.is_empty() || names.kind.is_empty() {
            return Vec::new();
        }
        let Some(storage) = crd.spec.versions.iter().find(|v| v.storage) else {
            return Vec::new();
        };
        let mut versions: Vec<&CustomResourceDefinitionVersion> =
            crd.spec.versions.iter().filter(|v| v.served).collect();
        versions.sort_by(|a, b| compare_versions(&a.name, &b.name));
        versions
            .into_iter()
            .map(|v| Arc::new(Self::build(crd, names, v, storage)) as Arc<dyn Kind>)
            .collect()
    }

    /// The storage version of a CRD's objects, served or not: what its
    /// deletion removes them through.
    pub fn storage(crd: &CustomResourceDefinition) -> Option<Arc<dyn Kind>> {
        let storage = crd.spec.versions.iter().find(|v| v.storage)?;
        let names = crd
            .status
            .as_ref()
            .and_then(|s| s.accepted_names.clone())
            .filter(|n| !n.plural.is_empty())
            .unwrap_or_else(|| crd.spec.names.clone());
        Some(Arc::new(Self::build(crd, &names, storage, storage)))
    }

    fn build(
        crd: &CustomResourceDefinition,
        names: &CustomResourceDefinitionNames,
        v: &CustomResourceDefinitionVersion,
        storage: &CustomResourceDefinitionVersion,
    ) -> Self {
        let singular = names
            .singular
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| names.kind.to_lowercase());
        let info = ResourceInfo {
            group: intern(&crd.spec.group),
            version: intern(&v.name),
            plural: intern(&names.plural),
            singular,
            kind: intern(&names.kind),
            namespaced: crd.spec.scope == "Namespaced",
            short_names: intern_list(names.short_names.as_deref().unwrap_or_default()),
            categories: intern_list(names.categories.as_deref().unwrap_or_default()),
            has_status: v.subresources.as_ref().is_some_and(|s| s.status.is_some()),
            has_scale: v.subresources.as_ref().is_some_and(|s| s.scale.is_some()),
            annotations_bump_generation: false,
            status_updates_annotations: false,
        };
        let mut selectable = vec!["metadata.name"];
        if info.namespaced {
            selectable.push("metadata.namespace");
        }
        for f in v.selectable_fields.iter().flatten() {
            selectable.push(intern(f.json_path.trim_start_matches('.')));
        }
        CustomResource {
            info,
            storage_version: intern(&storage.name),
            schema: v.schema.as_ref().and_then(|s| s.open_api_v3_schema.clone()),
            columns: printer_columns(v),
            scale: v.subresources.as_ref().and_then(|s| s.scale.clone()),
            selectable,
        }
    }

    /// The Scale subresource's paths (`specReplicasPath`, …), when served.
    pub fn scale(&self) -> Option<&CustomResourceSubresourceScale> {
        self.scale.as_ref()
    }

    /// The version's `openAPIV3Schema`.
    pub fn schema(&self) -> Option<&JSONSchemaProps> {
        self.schema.as_ref()
    }

    fn with_api_version(&self, mut v: Value, version: &str) -> Value {
        if v.is_object() {
            v["apiVersion"] = format!("{}/{version}", self.info.group).into();
        }
        v
    }
}

/// `additionalPrinterColumns`, or the one column (Age) a version without
/// any gets.
fn printer_columns(
    v: &CustomResourceDefinitionVersion,
) -> Vec<(Column, CustomResourceColumnDefinition)> {
    let defs = match v.additional_printer_columns.as_deref() {
        Some(cols) if !cols.is_empty() => cols.to_vec(),
        _ => vec![CustomResourceColumnDefinition {
            name: "Age".into(),
            type_: "date".into(),
            json_path: ".metadata.creationTimestamp".into(),
            ..Default::default()
        }],
    };
    defs.into_iter()
        .map(|d| {
            let c = Column {
                name: intern(&d.name),
                type_: intern(&d.type_),
                format: intern(d.format.as_deref().unwrap_or("")),
                description: intern(d.description.as_deref().unwrap_or("")),
                priority: d.priority.unwrap_or(0),
            };
            (c, d)
        })
        .collect()
}

/// The value at a simple path (`.spec.replicas`), as the scale
/// subresource reads it.
pub fn get_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.trim_start_matches('.')
        .split('.')
        .try_fold(v, |cur, part| cur.get(part))
}

/// Sets the value at a simple path, making the objects on the way.
pub fn set_path(v: &mut Value, path: &str, value: Value) {
    let mut cur = v;
    for part in path.trim_start_matches('.').split('.') {
        if !cur.is_object() {
            *cur = Value::Object(Default::default());
        }
        cur = cur
            .as_object_mut()
            .expect("made an object")
            .entry(part)
            .or_insert(Value::Null);
    }
    *cur = value;
}

/// The values a Kubernetes JSONPath (`.spec.replicas`, `{.status.x}`)
/// selects from `v`.
pub fn json_path<'a>(v: &'a Value, path: &str) -> Vec<&'a Value> {
    let p = path.trim();
    let p = p
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(p);
    let p = p.strip_prefix('$').unwrap_or(p);
    v.query(&format!("${p}")).unwrap_or_default()
}

/// One printer column's cell (`tableconvertor`'s `cellForJSONValue`).
fn cell(def: &CustomResourceColumnDefinition, v: &Value, now: jiff::Timestamp) -> Value {
    let Some(found) = json_path(v, &def.json_path).into_iter().next() else {
        return Value::Null;
    };
    match (def.type_.as_str(), found) {
        (_, Value::Null) => Value::Null,
        ("string", Value::String(s)) => s.clone().into(),
        ("string", other) => other.to_string().into(),
        ("integer", Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map_or(Value::Null, Value::from),
        ("number", Value::Number(n)) => n.as_f64().map_or(Value::Null, Value::from),
        ("boolean", Value::Bool(b)) => (*b).into(),
        ("date", Value::String(s)) => match s.parse::<jiff::Timestamp>() {
            Ok(t) => table::human_duration(now.as_second() - t.as_second()).into(),
            Err(_) => Value::Null,
        },
        _ => Value::Null,
    }
}

/// Whether anything but metadata (and status, when it has its own
/// subresource) differs: what bumps `metadata.generation`.
fn content_changed(new: &Value, old: &Value, has_status: bool) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("metadata");
            if has_status {
                o.remove("status");
            }
        }
        v
    };
    strip(new) != strip(old)
}

impl CustomResource {
    /// What the OpenAPI documents publish for this version: its structural
    /// schema under kube-apiserver's definition name.
    pub fn openapi_schema(&self) -> CustomResourceSchema {
        CustomResourceSchema {
            group: self.info.group.into(),
            version: self.info.version.into(),
            kind: self.info.kind.into(),
            plural: self.info.plural.into(),
            namespaced: self.info.namespaced,
            has_status: self.info.has_status,
            has_scale: self.info.has_scale,
            open_api_v3_schema: self
                .schema
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok())
                .unwrap_or_else(|| serde_json::json!({"type": "object"})),
        }
    }
}

impl Kind for CustomResource {
    fn info(&self) -> &ResourceInfo {
        &self.info
    }

    /// Custom resources are published from [`CustomResource::openapi_schema`]
    /// (their schema is JSON, not a Rust type): only the name is given here.
    fn openapi_definition(&self, _generator: &mut schemars::SchemaGenerator) -> String {
        self.openapi_schema().definition()
    }

    fn normalize(&self, mut v: Value) -> Result<(Value, Vec<String>), String> {
        let mut dropped = Vec::new();
        if let Some(m) = v.get("metadata").filter(|m| !m.is_null()) {
            let meta: ObjectMeta =
                serde_json::from_value(m.clone()).map_err(|e| format!("metadata: {e}"))?;
            let clean = serde_json::to_value(meta).expect("ObjectMeta serializes");
            for k in m.as_object().into_iter().flat_map(|o| o.keys()) {
                if clean.get(k).is_none() && !m[k].is_null() {
                    dropped.push(format!("metadata.{k}"));
                }
            }
            v["metadata"] = clean;
        }
        if let Some(schema) = &self.schema {
            dropped.extend(structural_schema::prune(schema, &mut v, ""));
        }
        Ok((v, dropped))
    }

    fn prepare_create(&self, mut v: Value) -> Result<Value, String> {
        if self.info.has_status
            && let Some(o) = v.as_object_mut()
        {
            // Status is written through its own subresource.
            o.remove("status");
        }
        if let Some(schema) = &self.schema {
            structural_schema::apply_defaults(schema, &mut v);
        }
        crate::api::object::meta_mut(&mut v).insert("generation".into(), 1.into());
        Ok(v)
    }

    fn prepare_update(&self, mut v: Value, old: &Value) -> Result<Value, String> {
        if let Some(schema) = &self.schema {
            structural_schema::apply_defaults(schema, &mut v);
        }
        if content_changed(&v, old, self.info.has_status) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(0);
            crate::api::object::meta_mut(&mut v).insert("generation".into(), (g + 1).into());
        }
        Ok(v)
    }

    fn validate(&self, v: &Value, _old: Option<&Value>) -> Vec<FieldError> {
        let meta: ObjectMeta = serde_json::from_value(v["metadata"].clone()).unwrap_or_default();
        let mut errs = super::metadata_errors(&self.info, &meta);
        if let Some(schema) = &self.schema {
            errs.extend(structural_schema::validate(schema, v, ""));
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        let mut c = vec![table::name_col()];
        c.extend(self.columns.iter().map(|(c, _)| c.clone()));
        c
    }

    fn cells(&self, v: &Value, now: jiff::Timestamp) -> Vec<Value> {
        let mut cells = vec![v["metadata"]["name"].clone()];
        cells.extend(self.columns.iter().map(|(_, d)| cell(d, v, now)));
        cells
    }

    fn selectable_fields(&self) -> Vec<&'static str> {
        self.selectable.clone()
    }

    fn converted(&self) -> bool {
        self.info.version != self.storage_version
    }

    fn from_storage(&self, v: Value) -> Value {
        self.with_api_version(v, self.info.version)
    }

    fn to_storage(&self, v: Value, _stored: Option<&Value>) -> Value {
        self.with_api_version(v, self.storage_version)
    }

    fn custom(&self) -> Option<&CustomResource> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd() -> CustomResourceDefinition {
        serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "crontabs.stable.example.com"},
            "spec": {
                "group": "stable.example.com", "scope": "Namespaced",
                "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab", "shortNames": ["ct"]},
                "versions": [
                    {"name": "v1beta1", "served": true, "storage": false,
                     "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
                    {"name": "v1", "served": true, "storage": true,
                     "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                     "additionalPrinterColumns": [
                         {"name": "Spec", "type": "string", "jsonPath": ".spec.cronSpec"},
                         {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                         {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
                         {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}],
                     "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                         "spec": {"type": "object", "properties": {
                             "cronSpec": {"type": "string"}, "replicas": {"type": "integer", "default": 1}}},
                         "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}
                ]
            },
            "status": {"acceptedNames": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab", "shortNames": ["ct"]}}
        }))
        .unwrap()
    }

    #[test]
    fn versions_sort_as_kube_aware_versions() {
        let mut v = vec![
            "v1alpha1", "foo", "v2beta1", "v1", "v2", "v1beta2", "v1beta1",
        ];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(
            v,
            vec![
                "v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v1alpha1", "foo"
            ]
        );
    }

    #[test]
    fn a_crd_serves_its_versions_preferred_first_with_storage_conversion() {
        let kinds = CustomResource::served(&crd());
        let versions: Vec<&str> = kinds.iter().map(|k| k.info().version).collect();
        assert_eq!(versions, vec!["v1", "v1beta1"]);
        let (v1, beta) = (&kinds[0], &kinds[1]);
        assert_eq!(v1.info().short_names, &["ct"]);
        assert!(v1.info().has_status && v1.info().has_scale && !beta.info().has_status);
        assert!(!v1.converted() && beta.converted());
        let stored = beta.to_storage(json!({"apiVersion": "stable.example.com/v1beta1"}), None);
        assert_eq!(stored["apiVersion"], "stable.example.com/v1");
        assert_eq!(
            beta.from_storage(stored)["apiVersion"],
            "stable.example.com/v1beta1"
        );
        assert_eq!(
            v1.info().key(Some("default"), "a"),
            "/registry/stable.example.com/crontabs/default/a"
        );
    }

    #[test]
    fn printer_columns_render_as_the_table_convertor_does() {
        let kinds = CustomResource::served(&crd());
        let now: jiff::Timestamp = "2024-01-01T00:10:00Z".parse().unwrap();
        let obj = json!({"metadata": {"name": "a", "creationTimestamp": "2024-01-01T00:00:00Z"},
                         "spec": {"cronSpec": "* * * * */5", "replicas": 3},
                         "status": {"conditions": [{"type": "Other", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        let names: Vec<&str> = kinds[0].columns().iter().map(|c| c.name).collect();
        assert_eq!(names, vec!["Name", "Spec", "Replicas", "Ready", "Age"]);
        assert_eq!(
            kinds[0].cells(&obj, now),
            vec![
                json!("a"),
                json!("* * * * */5"),
                json!(3),
                json!("True"),
                json!("10m")
            ]
        );
        // A version without columns shows its age.
        let names: Vec<&str> = kinds[1].columns().iter().map(|c| c.name).collect();
        assert_eq!(names, vec!["Name", "Age"]);
        let missing = json!({"metadata": {"name": "b"}, "spec": {}});
        assert_eq!(kinds[0].cells(&missing, now)[1], Value::Null);
    }

    #[test]
    fn generation_follows_spec_but_not_status_with_a_status_subresource() {
        let kinds = CustomResource::served(&crd());
        let old = json!({"metadata": {"name": "a", "generation": 1}, "spec": {"replicas": 1}, "status": {"x": 1}});
        let status_only = json!({"metadata": {"name": "a", "generation": 1}, "spec": {"replicas": 1}, "status": {"x": 2}});
        let new = kinds[0].prepare_update(status_only, &old).unwrap();
        assert_eq!(new["metadata"]["generation"], 1);
        let spec = json!({"metadata": {"name": "a", "generation": 1}, "spec": {"replicas": 2}, "status": {"x": 1}});
        let new = kinds[0].prepare_update(spec, &old).unwrap();
        assert_eq!(new["metadata"]["generation"], 2);
        // Without the subresource, status is content like any other.
        let new = kinds[1]
            .prepare_update(
                json!({"metadata": {"generation": 1}, "status": {"x": 2}}),
                &old,
            )
            .unwrap();
        assert_eq!(new["metadata"]["generation"], 2);
    }

    #[test]
    fn create_defaults_prunes_and_drops_status() {
        let kinds = CustomResource::served(&crd());
        let (v, dropped) = kinds[0]
            .normalize(
                json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab",
                              "metadata": {"name": "a"}, "spec": {"cronSpec": "x", "bogus": true},
                              "status": {"replicas": 5}}),
            )
            .unwrap();
        assert_eq!(dropped, vec!["spec.bogus"]);
        let v = kinds[0].prepare_create(v).unwrap();
        assert_eq!(v["spec"], json!({"cronSpec": "x", "replicas": 1}));
        assert!(v.get("status").is_none());
        assert_eq!(v["metadata"]["generation"], 1);
    }
}
