//! The resource kinds this apiserver serves, each a `k8s-openapi` type with
//! its strategy (defaults, validation, status handling, table columns, and
//! selectable fields), as `pkg/registry/<group>/<kind>/strategy.go` does.
//!
//! Handlers work on `serde_json::Value`; every object goes through its
//! typed struct on the way in ([`Kind::normalize`]), so only what the
//! Kubernetes type defines is ever stored.

pub mod autoscaling;
mod autoscaling_v1;
pub mod batch;
pub mod certificates;
mod core;
pub mod custom_resource;
pub mod custom_resource_definition;
mod discovery;
mod node;
mod pod;
mod pod_defaults;
pub mod pod_template;
pub mod policy;
pub mod rbac;
mod resource_limits;
pub mod scheduling;
mod stateful_set;
pub mod storage;
pub mod structural_schema;
pub mod table;
pub mod validation;
mod workloads;

use std::sync::{Arc, RwLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::status::{FieldError, Subject};
use table::Column;

/// Static facts about a resource, as discovery reports them.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: String,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub has_status: bool,
    /// Serves the `autoscaling/v1` Scale subresource over `spec.replicas`.
    pub has_scale: bool,
    /// Annotation changes bump `metadata.generation` as spec changes do.
    pub annotations_bump_generation: bool,
    /// The status subresource also takes metadata (the Deployment
    /// controller records revisions there without a new generation).
    pub status_updates_annotations: bool,
}

impl ResourceInfo {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    pub fn subject(&self) -> Subject<'_> {
        Subject {
            group: self.group,
            plural: self.plural,
            kind: self.kind,
        }
    }
    /// Storage prefix for all objects of this resource (or one namespace's).
    pub fn key_prefix(&self, namespace: Option<&str>) -> String {
        let base = if self.group.is_empty() {
            format!("/registry/{}/", self.plural)
        } else {
            format!("/registry/{}/{}/", self.group, self.plural)
        };
        match namespace {
            Some(ns) if self.namespaced => format!("{base}{ns}/"),
            _ => base,
        }
    }
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.key_prefix(namespace))
    }
}

/// Which scope trait a `k8s-openapi` type carries.
pub trait Scope {
    const NAMESPACED: bool;
}
impl Scope for NamespaceResourceScope {
    const NAMESPACED: bool = true;
}
impl Scope for ClusterResourceScope {
    const NAMESPACED: bool = false;
}

/// Per-type behaviour, implemented on the `k8s-openapi` structs.
pub trait KindSpec:
    k8s_openapi::Resource<Scope: Scope>
    + k8s_openapi::Metadata<Ty = ObjectMeta>
    + Serialize
    + DeserializeOwned
    + schemars::JsonSchema
    + Send
    + Sync
    + 'static
{
    const SHORT_NAMES: &'static [&'static str] = &[];
    const CATEGORIES: &'static [&'static str] = &[];
    const HAS_STATUS: bool = false;
    const HAS_SCALE: bool = false;
    const ANNOTATIONS_BUMP_GENERATION: bool = false;
    const STATUS_UPDATES_ANNOTATIONS: bool = false;
    /// Field selectors beyond `metadata.name` and `metadata.namespace`.
    const FIELDS: &'static [&'static str] = &[];
    /// Stored as another version of the resource (the storage version).
    const CONVERTED: bool = false;

    /// This version of a stored object.
    fn from_storage(v: Value) -> Value {
        v
    }
    /// The stored form of an object of this version; `stored` is the
    /// object it replaces, if any.
    fn to_storage(v: Value, _stored: Option<&Value>) -> Value {
        v
    }

    /// Defaults and server-set state for a new object.
    fn prepare_create(&mut self) {}
    /// Defaults re-applied on every update.
    fn prepare_update(&mut self, _old: &Self) {}
    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        Vec::new()
    }
    fn columns() -> Vec<Column>;
    fn cells(&self, now: jiff::Timestamp) -> Vec<Value>;
}

/// The object-safe face of a [`KindSpec`], working on JSON.
pub trait Kind: Send + Sync {
    fn info(&self) -> &ResourceInfo;
    /// Decodes into the typed struct and back. Returns the normalized
    /// object and the paths of fields the type does not know.
    fn normalize(&self, v: Value) -> Result<(Value, Vec<String>), String>;
    fn prepare_create(&self, v: Value) -> Result<Value, String>;
    fn prepare_update(&self, v: Value, old: &Value) -> Result<Value, String>;
    fn validate(&self, v: &Value, old: Option<&Value>) -> Vec<FieldError>;
    fn columns(&self) -> Vec<Column>;
    fn cells(&self, v: &Value, now: jiff::Timestamp) -> Vec<Value>;
    fn selectable_fields(&self) -> Vec<&'static str>;
    /// Whether objects are stored as another version of the resource.
    fn converted(&self) -> bool;
    fn from_storage(&self, v: Value) -> Value;
    fn to_storage(&self, v: Value, stored: Option<&Value>) -> Value;
    /// Adds the type's OpenAPI schema (and those it refers to) to
    /// `generator`; returns its definition name (`io.k8s.api.core.v1.Pod`).
    fn openapi_definition(&self, generator: &mut schemars::SchemaGenerator) -> String;
    /// A resource served from a CustomResourceDefinition.
    fn custom(&self) -> Option<&custom_resource::CustomResource> {
        None
    }
}

struct Typed<K> {
    info: ResourceInfo,
    _k: std::marker::PhantomData<fn() -> K>,
}

fn decode<K: DeserializeOwned>(v: &Value) -> Result<K, String> {
    K::deserialize(v).map_err(|e| e.to_string())
}

fn encode<K: Serialize>(k: &K) -> Value {
    serde_json::to_value(k).expect("k8s-openapi types serialize")
}

/// `v` as a `K`, with the paths of the fields `K` does not know: what
/// [`Kind::normalize`] does, for a caller that goes on with the typed value.
pub(crate) fn decode_known<K: Serialize + DeserializeOwned>(
    v: &Value,
) -> Result<(K, Vec<String>), String> {
    let k: K = decode(v)?;
    let mut unknown = Vec::new();
    dropped_fields(v, &encode(&k), "", &mut unknown);
    Ok((k, unknown))
}

/// Paths present (and non-null) in `input` that the typed round trip dropped.
fn dropped_fields(input: &Value, output: &Value, path: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            for (k, v) in i {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match o.get(k) {
                    Some(ov) => dropped_fields(v, ov, &p, out),
                    None if !v.is_null() => out.push(p),
                    None => {}
                }
            }
        }
        (Value::Array(i), Value::Array(o)) => {
            for (n, (iv, ov)) in i.iter().zip(o).enumerate() {
                dropped_fields(iv, ov, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

impl<K: KindSpec> Kind for Typed<K> {
    fn info(&self) -> &ResourceInfo {
        &self.info
    }

    fn normalize(&self, v: Value) -> Result<(Value, Vec<String>), String> {
        let (k, unknown) = decode_known::<K>(&v)?;
        Ok((encode(&k), unknown))
    }

    fn prepare_create(&self, v: Value) -> Result<Value, String> {
        let mut k: K = decode(&v)?;
        k.prepare_create();
        Ok(encode(&k))
    }

    fn prepare_update(&self, v: Value, old: &Value) -> Result<Value, String> {
        let mut k: K = decode(&v)?;
        let old: K = decode(old)?;
        k.prepare_update(&old);
        Ok(encode(&k))
    }

    fn validate(&self, v: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let Ok(k) = decode::<K>(v) else {
            return vec![FieldError::invalid_raw("", "", "cannot decode object")];
        };
        let old = old.and_then(|o| decode::<K>(o).ok());
        let mut errs = metadata_errors(&self.info, k.metadata());
        errs.extend(k.validate(old.as_ref()));
        errs
    }

    fn columns(&self) -> Vec<Column> {
        K::columns()
    }

    fn cells(&self, v: &Value, now: jiff::Timestamp) -> Vec<Value> {
        match decode::<K>(v) {
            Ok(k) => k.cells(now),
            Err(_) => vec![v["metadata"]["name"].clone()],
        }
    }

    fn selectable_fields(&self) -> Vec<&'static str> {
        let mut f = vec!["metadata.name"];
        if self.info.namespaced {
            f.push("metadata.namespace");
        }
        f.extend_from_slice(K::FIELDS);
        f
    }

    fn converted(&self) -> bool {
        K::CONVERTED
    }

    fn from_storage(&self, v: Value) -> Value {
        K::from_storage(v)
    }

    fn to_storage(&self, v: Value, stored: Option<&Value>) -> Value {
        K::to_storage(v, stored)
    }

    fn openapi_definition(&self, generator: &mut schemars::SchemaGenerator) -> String {
        generator.subschema_for::<K>();
        K::schema_name().into_owned()
    }
}

/// `ValidateObjectMeta`: the name, namespace and labels every object has.
pub(crate) fn metadata_errors(info: &ResourceInfo, meta: &ObjectMeta) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = meta.name.as_deref().unwrap_or("");
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        errs.extend(name_errors(info.plural, name));
    }
    if info.namespaced && meta.namespace.as_deref().unwrap_or("").is_empty() {
        errs.push(FieldError::required("metadata.namespace", ""));
    }
    for (key, _) in meta.labels.iter().flatten() {
        if !valid_qualified_name(key) {
            errs.push(FieldError::invalid("metadata.labels", key, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
        }
    }
    for (key, value) in meta.labels.iter().flatten() {
        if value.len() > 63
            || !value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            || value.starts_with(['-', '_', '.'])
            || value.ends_with(['-', '_', '.'])
        {
            errs.push(FieldError::invalid("metadata.labels", value, format!("a valid label value for key {key:?} must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")));
        }
    }
    errs
}

pub(crate) fn valid_qualified_name(key: &str) -> bool {
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            if !validation::dns1123_subdomain("", prefix).is_empty() {
                return false;
            }
            name
        }
        None => key,
    };
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Object name rules per resource, as `ValidateObjectMeta` is called with.
fn name_errors(plural: &str, name: &str) -> Vec<FieldError> {
    match plural {
        "namespaces" => validation::dns1123_label("metadata.name", name),
        "services" => validation::dns1035_label("metadata.name", name),
        "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings" => {
            rbac::path_segment_name("metadata.name", name)
        }
        // `ValidateCertificateRequestName`: any name will do.
        "certificatesigningrequests" => Vec::new(),
        // Events are named `<object>.<hex>`; nodes may be any DNS subdomain.
        _ => validation::dns1123_subdomain("metadata.name", name),
    }
}

fn typed<K: KindSpec>(group: &'static str, version: &'static str) -> Arc<dyn Kind> {
    Arc::new(Typed::<K> {
        info: ResourceInfo {
            group,
            version,
            plural: K::URL_PATH_SEGMENT,
            singular: K::KIND.to_lowercase(),
            kind: K::KIND,
            namespaced: <K::Scope as Scope>::NAMESPACED,
            short_names: K::SHORT_NAMES,
            categories: K::CATEGORIES,
            has_status: K::HAS_STATUS,
            has_scale: K::HAS_SCALE,
            annotations_bump_generation: K::ANNOTATIONS_BUMP_GENERATION,
            status_updates_annotations: K::STATUS_UPDATES_ANNOTATIONS,
        },
        _k: std::marker::PhantomData,
    })
}

/// Every served resource: the built-in kinds, and the custom resources of
/// established CustomResourceDefinitions (shared by every clone).
#[derive(Clone)]
pub struct Registry {
    kinds: Vec<Arc<dyn Kind>>,
    custom: Arc<RwLock<Vec<Arc<dyn Kind>>>>,
    /// Held while the custom resources are brought up to date.
    pub custom_sync: Arc<tokio::sync::Mutex<()>>,
}

impl Default for Registry {
    fn default() -> Self {
        use k8s_openapi::api::{
            apps::v1 as apps, autoscaling::v2 as autoscaling, batch::v1 as batch,
            coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery,
            policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as scheduling,
            storage::v1 as storage,
        };
        Self {
            kinds: vec![
                typed::<core::Namespace>("", "v1"),
                typed::<core::Pod>("", "v1"),
                typed::<core::Node>("", "v1"),
                typed::<core::Service>("", "v1"),
                typed::<core::Endpoints>("", "v1"),
                typed::<core::Event>("", "v1"),
                typed::<core::ConfigMap>("", "v1"),
                typed::<core::Secret>("", "v1"),
                typed::<core::ServiceAccount>("", "v1"),
                typed::<core::ReplicationController>("", "v1"),
                typed::<core::PodTemplate>("", "v1"),
                typed::<core::PersistentVolume>("", "v1"),
                typed::<core::PersistentVolumeClaim>("", "v1"),
                typed::<core::LimitRange>("", "v1"),
                typed::<core::ResourceQuota>("", "v1"),
                typed::<apps::Deployment>("apps", "v1"),
                typed::<apps::ReplicaSet>("apps", "v1"),
                typed::<apps::DaemonSet>("apps", "v1"),
                typed::<apps::ControllerRevision>("apps", "v1"),
                typed::<apps::StatefulSet>("apps", "v1"),
                typed::<batch::Job>("batch", "v1"),
                typed::<batch::CronJob>("batch", "v1"),
                typed::<coordination::Lease>("coordination.k8s.io", "v1"),
                typed::<discovery::EndpointSlice>("discovery.k8s.io", "v1"),
                typed::<scheduling::PriorityClass>("scheduling.k8s.io", "v1"),
                typed::<k8s_openapi::api::node::v1::RuntimeClass>("node.k8s.io", "v1"),
                typed::<storage::StorageClass>("storage.k8s.io", "v1"),
                typed::<policy::PodDisruptionBudget>("policy", "v1"),
                typed::<k8s_openapi::api::certificates::v1::CertificateSigningRequest>(
                    self::certificates::GROUP,
                    "v1",
                ),
                typed::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>(
                    "apiextensions.k8s.io",
                    "v1",
                ),
                typed::<rbac::Role>(self::rbac::GROUP, "v1"),
                typed::<rbac::ClusterRole>(self::rbac::GROUP, "v1"),
                typed::<rbac::RoleBinding>(self::rbac::GROUP, "v1"),
                typed::<rbac::ClusterRoleBinding>(self::rbac::GROUP, "v1"),
                // v2 first: the preferred and storage version.
                typed::<autoscaling::HorizontalPodAutoscaler>("autoscaling", "v2"),
                typed::<k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler>(
                    "autoscaling",
                    "v1",
                ),
            ],
            custom: Arc::default(),
            custom_sync: Arc::default(),
        }
    }
}

impl Registry {
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<dyn Kind>> {
        let is = |k: &&Arc<dyn Kind>| {
            let i = k.info();
            i.group == group && i.version == version && i.plural == plural
        };
        if let Some(k) = self.kinds.iter().find(is) {
            return Some(k.clone());
        }
        self.custom
            .read()
            .expect("custom kinds")
            .iter()
            .find(is)
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<dyn Kind>> {
        let mut all = self.kinds.clone();
        all.extend(self.custom.read().expect("custom kinds").iter().cloned());
        all
    }

    /// Replaces the served custom resources (each CRD's served versions,
    /// preferred first).
    pub fn set_custom(&self, kinds: Vec<Arc<dyn Kind>>) {
        *self.custom.write().expect("custom kinds") = kinds;
    }

    /// API groups other than core with their versions, the preferred
    /// (first registered) first.
    pub fn groups(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        let mut g: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
        for k in &self.all() {
            let (group, version) = (k.info().group, k.info().version);
            if group.is_empty() {
                continue;
            }
            match g.iter_mut().find(|(name, _)| *name == group) {
                Some((_, versions)) if !versions.contains(&version) => versions.push(version),
                Some(_) => {}
                None => g.push((group, vec![version])),
            }
        }
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn normalize_reports_fields_the_type_does_not_know() {
        let r = Registry::default();
        let pods = r.find("", "v1", "pods").unwrap();
        let (_, unknown) = pods
            .normalize(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "a", "creationTimestamp": null},
                "spec": {"bogus": 1, "containers": [{"name": "c", "image": "busybox", "imagePullPolicyy": "Always"}]}
            }))
            .unwrap();
        assert_eq!(
            unknown,
            vec!["spec.bogus", "spec.containers[0].imagePullPolicyy"]
        );
    }
}
