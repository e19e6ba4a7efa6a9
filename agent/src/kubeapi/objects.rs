//! The API objects pods refer to: ConfigMaps, Secrets (for env and volumes)
//! and Services (for service environment variables), kept by watches in
//! reflector stores, as the kubelet's default
//! `configMapAndSecretChangeDetectionStrategy: Watch` does. Every change bumps
//! a counter that pod workers watch: a container waiting for a missing
//! ConfigMap starts as soon as it appears, and mounted volumes follow edits.
//!
//! [`ObjectGetter`] is what the rest of the agent sees, so the pure parts
//! (environment, volume payloads) can be tested with objects in memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;

/// Why an object could not be had, worded as the kubelet words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// `configmap "x" not found`, `secret "x" not found`.
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    /// The watch has not listed the objects yet.
    #[error("{kind} {namespace}/{name} is not known yet: the {resource} watch has not synced")]
    NotSynced {
        kind: &'static str,
        resource: &'static str,
        namespace: String,
        name: String,
    },
    /// A node without `--kubeconfig` cannot look API objects up.
    #[error("couldn't get {kind} {namespace}/{name}, no kubeClient defined")]
    NoClient {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("services have not yet been read at least once, cannot construct envvars")]
    ServicesNotSynced,
}

impl ObjectError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ObjectError::NotFound { .. })
    }
}

/// Looks API objects up by namespace and name.
pub trait ObjectGetter: Send + Sync {
    fn config_map(&self, namespace: &str, name: &str) -> Result<Arc<ConfigMap>, ObjectError>;
    fn secret(&self, namespace: &str, name: &str) -> Result<Arc<Secret>, ObjectError>;
    /// Every service of the cluster.
    fn services(&self) -> Result<Vec<Arc<Service>>, ObjectError>;
    fn persistent_volume_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<PersistentVolumeClaim>, ObjectError>;
    fn persistent_volume(&self, name: &str) -> Result<Arc<PersistentVolume>, ObjectError>;
}

/// A node without an apiserver: nothing can be looked up.
pub struct NoApiObjects;

impl ObjectGetter for NoApiObjects {
    fn config_map(&self, namespace: &str, name: &str) -> Result<Arc<ConfigMap>, ObjectError> {
        Err(ObjectError::NoClient {
            kind: "configMap",
            namespace: namespace.into(),
            name: name.into(),
        })
    }
    fn secret(&self, namespace: &str, name: &str) -> Result<Arc<Secret>, ObjectError> {
        Err(ObjectError::NoClient {
            kind: "secret",
            namespace: namespace.into(),
            name: name.into(),
        })
    }
    fn services(&self) -> Result<Vec<Arc<Service>>, ObjectError> {
        Ok(Vec::new())
    }
    fn persistent_volume_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<PersistentVolumeClaim>, ObjectError> {
        Err(ObjectError::NoClient {
            kind: "persistentvolumeclaim",
            namespace: namespace.into(),
            name: name.into(),
        })
    }
    fn persistent_volume(&self, name: &str) -> Result<Arc<PersistentVolume>, ObjectError> {
        Err(ObjectError::NoClient {
            kind: "persistentvolume",
            namespace: String::new(),
            name: name.into(),
        })
    }
}

/// One watched resource: its store and whether it has listed once.
struct Watched<K: kube::Resource + 'static>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    store: Store<K>,
    synced: Arc<AtomicBool>,
    /// The credentials may not list these cluster-wide (a node's: the Node
    /// authorizer lets it read only the objects its pods use).
    forbidden: Arc<AtomicBool>,
}

impl<K: kube::Resource + 'static> Clone for Watched<K>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    fn clone(&self) -> Self {
        Watched {
            store: self.store.clone(),
            synced: self.synced.clone(),
            forbidden: self.forbidden.clone(),
        }
    }
}

/// One watch per object, by `metadata.name`, for a resource the
/// credentials may not watch whole (the kubelet's watch-based manager does
/// this for every object its pods use).
struct PerObject<K: kube::Resource + 'static>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    client: Client,
    resource: &'static str,
    changes: Arc<watch::Sender<u64>>,
    watches: Arc<std::sync::Mutex<std::collections::HashMap<(String, String), Watched<K>>>>,
}

impl<K: kube::Resource + 'static> Clone for PerObject<K>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    fn clone(&self) -> Self {
        PerObject {
            client: self.client.clone(),
            resource: self.resource,
            changes: self.changes.clone(),
            watches: self.watches.clone(),
        }
    }
}

impl<K> PerObject<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    fn new(client: Client, resource: &'static str, changes: Arc<watch::Sender<u64>>) -> Self {
        PerObject {
            client,
            resource,
            changes,
            watches: Default::default(),
        }
    }

    /// The object's own watch, started on first use.
    fn watched(&self, namespace: &str, name: &str) -> Watched<K> {
        let mut watches = self.watches.lock().expect("per-object watches");
        watches
            .entry((namespace.to_owned(), name.to_owned()))
            .or_insert_with(|| {
                spawn_watch(
                    Api::namespaced(self.client.clone(), namespace),
                    self.resource,
                    self.changes.clone(),
                    Some(name),
                )
            })
            .clone()
    }
}

/// ConfigMaps, Secrets and Services of the cluster, as last seen.
#[derive(Clone)]
pub struct ApiObjectCache {
    config_maps: Watched<ConfigMap>,
    secrets: Watched<Secret>,
    services: Watched<Service>,
    claims: Watched<PersistentVolumeClaim>,
    volumes: Watched<PersistentVolume>,
    /// For the kubelet's `LookupRuntimeHandler`.
    runtime_classes: Watched<RuntimeClass>,
    /// Used once the cluster-wide watch of the kind is forbidden.
    each_config_map: PerObject<ConfigMap>,
    each_secret: PerObject<Secret>,
    each_claim: PerObject<PersistentVolumeClaim>,
    changes: Arc<watch::Sender<u64>>,
}

impl ApiObjectCache {
    /// Starts the three watches; lookups answer from their stores.
    pub fn start(client: Client) -> Self {
        let changes = Arc::new(watch::Sender::new(0));
        ApiObjectCache {
            config_maps: spawn_watch(
                Api::all(client.clone()),
                "configmaps",
                changes.clone(),
                None,
            ),
            secrets: spawn_watch(Api::all(client.clone()), "secrets", changes.clone(), None),
            services: spawn_watch(Api::all(client.clone()), "services", changes.clone(), None),
            claims: spawn_watch(
                Api::all(client.clone()),
                "persistentvolumeclaims",
                changes.clone(),
                None,
            ),
            volumes: spawn_watch(
                Api::all(client.clone()),
                "persistentvolumes",
                changes.clone(),
                None,
            ),
            runtime_classes: spawn_watch(
                Api::all(client.clone()),
                "runtimeclasses",
                changes.clone(),
                None,
            ),
            each_config_map: PerObject::new(client.clone(), "configmaps", changes.clone()),
            each_secret: PerObject::new(client.clone(), "secrets", changes.clone()),
            each_claim: PerObject::new(client, "persistentvolumeclaims", changes.clone()),
            changes,
        }
    }

    /// The `handler` of RuntimeClass `name`; not found in the kubelet's
    /// words (`runtimeclasses.node.k8s.io "x" not found`).
    pub fn runtime_handler(&self, name: &str) -> Result<String, ObjectError> {
        const KIND: &str = "runtimeclasses.node.k8s.io";
        if let Some(class) = self.runtime_classes.store.get(&ObjectRef::new(name)) {
            return Ok(class.handler.clone());
        }
        if !self.runtime_classes.synced.load(Ordering::Acquire) {
            return Err(ObjectError::NotSynced {
                kind: KIND,
                resource: "runtimeclasses",
                namespace: String::new(),
                name: name.into(),
            });
        }
        Err(ObjectError::NotFound {
            kind: KIND,
            name: name.into(),
        })
    }

    /// Wakes up after any ConfigMap, Secret or Service changed.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

fn spawn_watch<K>(
    api: Api<K>,
    resource: &'static str,
    changes: Arc<watch::Sender<u64>>,
    name: Option<&str>,
) -> Watched<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let synced = Arc::new(AtomicBool::new(false));
    let forbidden = Arc::new(AtomicBool::new(false));
    let flag = synced.clone();
    let refused = forbidden.clone();
    let whole = name.is_none();
    let config = match name {
        Some(n) => watcher::Config::default().fields(&format!("metadata.name={n}")),
        None => watcher::Config::default(),
    };
    tokio::spawn(async move {
        // The watcher re-lists after errors with back-off; the store is
        // swapped whole at each re-list, so a lookup never sees half a list.
        let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::InitDone) => {
                    flag.store(true, Ordering::Release);
                    changes.send_modify(|g| *g += 1);
                }
                Ok(watcher::Event::Apply(_)) | Ok(watcher::Event::Delete(_)) => {
                    changes.send_modify(|g| *g += 1);
                }
                Ok(_) => {}
                Err(watcher::Error::InitialListFailed(kube::Error::Api(s)))
                    if whole && s.code == 403 =>
                {
                    tracing::info!(
                        "may not watch all {resource} ({}): watching each one pods use",
                        s.message
                    );
                    refused.store(true, Ordering::Release);
                    changes.send_modify(|g| *g += 1);
                    return;
                }
                Err(e) => tracing::warn!("watching {resource}: {e}"),
            }
        }
    });
    Watched {
        store,
        synced,
        forbidden,
    }
}

fn lookup<K>(
    watched: &Watched<K>,
    each: &PerObject<K>,
    kind: &'static str,
    resource: &'static str,
    namespace: &str,
    name: &str,
) -> Result<Arc<K>, ObjectError>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    if let Some(obj) = watched.store.get(&ObjectRef::new(name).within(namespace)) {
        return Ok(obj);
    }
    if watched.forbidden.load(Ordering::Acquire) {
        return lookup_in(
            &each.watched(namespace, name),
            kind,
            resource,
            namespace,
            name,
        );
    }
    lookup_in(watched, kind, resource, namespace, name)
}

fn lookup_in<K>(
    watched: &Watched<K>,
    kind: &'static str,
    resource: &'static str,
    namespace: &str,
    name: &str,
) -> Result<Arc<K>, ObjectError>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    if let Some(obj) = watched.store.get(&ObjectRef::new(name).within(namespace)) {
        return Ok(obj);
    }
    if !watched.synced.load(Ordering::Acquire) {
        return Err(ObjectError::NotSynced {
            kind,
            resource,
            namespace: namespace.into(),
            name: name.into(),
        });
    }
    Err(ObjectError::NotFound {
        kind,
        name: name.into(),
    })
}

impl ObjectGetter for ApiObjectCache {
    fn config_map(&self, namespace: &str, name: &str) -> Result<Arc<ConfigMap>, ObjectError> {
        lookup(
            &self.config_maps,
            &self.each_config_map,
            "configmap",
            "configmaps",
            namespace,
            name,
        )
    }
    fn secret(&self, namespace: &str, name: &str) -> Result<Arc<Secret>, ObjectError> {
        lookup(
            &self.secrets,
            &self.each_secret,
            "secret",
            "secrets",
            namespace,
            name,
        )
    }
    fn services(&self) -> Result<Vec<Arc<Service>>, ObjectError> {
        if !self.services.synced.load(Ordering::Acquire) {
            return Err(ObjectError::ServicesNotSynced);
        }
        Ok(self.services.store.state())
    }
    fn persistent_volume_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<PersistentVolumeClaim>, ObjectError> {
        lookup(
            &self.claims,
            &self.each_claim,
            "persistentvolumeclaim",
            "persistentvolumeclaims",
            namespace,
            name,
        )
    }
    fn persistent_volume(&self, name: &str) -> Result<Arc<PersistentVolume>, ObjectError> {
        if let Some(pv) = self.volumes.store.get(&ObjectRef::new(name)) {
            return Ok(pv);
        }
        if !self.volumes.synced.load(Ordering::Acquire) {
            return Err(ObjectError::NotSynced {
                kind: "persistentvolume",
                resource: "persistentvolumes",
                namespace: String::new(),
                name: name.into(),
            });
        }
        Err(ObjectError::NotFound {
            kind: "persistentvolume",
            name: name.into(),
        })
    }
}

/// Objects held in memory, for tests of what is computed from them.
#[derive(Default)]
pub struct InMemoryObjects {
    pub config_maps: Vec<ConfigMap>,
    pub secrets: Vec<Secret>,
    pub services: Vec<Service>,
    pub claims: Vec<PersistentVolumeClaim>,
    pub volumes: Vec<PersistentVolume>,
}

fn find<K: kube::Resource + Clone>(
    items: &[K],
    kind: &'static str,
    namespace: &str,
    name: &str,
) -> Result<Arc<K>, ObjectError> {
    items
        .iter()
        .find(|o| {
            o.meta().namespace.as_deref() == Some(namespace)
                && o.meta().name.as_deref() == Some(name)
        })
        .map(|o| Arc::new(o.clone()))
        .ok_or_else(|| ObjectError::NotFound {
            kind,
            name: name.into(),
        })
}

impl ObjectGetter for InMemoryObjects {
    fn config_map(&self, namespace: &str, name: &str) -> Result<Arc<ConfigMap>, ObjectError> {
        find(&self.config_maps, "configmap", namespace, name)
    }
    fn secret(&self, namespace: &str, name: &str) -> Result<Arc<Secret>, ObjectError> {
        find(&self.secrets, "secret", namespace, name)
    }
    fn services(&self) -> Result<Vec<Arc<Service>>, ObjectError> {
        Ok(self.services.iter().cloned().map(Arc::new).collect())
    }
    fn persistent_volume_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<PersistentVolumeClaim>, ObjectError> {
        find(&self.claims, "persistentvolumeclaim", namespace, name)
    }
    fn persistent_volume(&self, name: &str) -> Result<Arc<PersistentVolume>, ObjectError> {
        self.volumes
            .iter()
            .find(|v| v.metadata.name.as_deref() == Some(name))
            .map(|v| Arc::new(v.clone()))
            .ok_or_else(|| ObjectError::NotFound {
                kind: "persistentvolume",
                name: name.into(),
            })
    }
}

/// A ConfigMap or Secret a pod refers to (env, envFrom, volumes).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ObjectRefKey {
    ConfigMap(String),
    Secret(String),
}

/// Every ConfigMap and Secret the pod's containers and volumes name.
pub fn pod_references(pod: &Pod) -> Vec<ObjectRefKey> {
    let mut out = Vec::new();
    let Some(spec) = pod.spec.as_ref() else {
        return out;
    };
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for from in c.env_from.iter().flatten() {
            if let Some(r) = &from.config_map_ref {
                out.push(ObjectRefKey::ConfigMap(r.name.clone()));
            }
            if let Some(r) = &from.secret_ref {
                out.push(ObjectRefKey::Secret(r.name.clone()));
            }
        }
        for var in c.env.iter().flatten() {
            let Some(from) = &var.value_from else {
                continue;
            };
            if let Some(r) = &from.config_map_key_ref {
                out.push(ObjectRefKey::ConfigMap(r.name.clone()));
            }
            if let Some(r) = &from.secret_key_ref {
                out.push(ObjectRefKey::Secret(r.name.clone()));
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            out.push(ObjectRefKey::ConfigMap(cm.name.clone()));
        }
        if let Some(s) = &v.secret {
            out.push(ObjectRefKey::Secret(
                s.secret_name.clone().unwrap_or_default(),
            ));
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &source.config_map {
                out.push(ObjectRefKey::ConfigMap(cm.name.clone()));
            }
            if let Some(s) = &source.secret {
                out.push(ObjectRefKey::Secret(s.name.clone()));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// What the pod's referenced objects look like now: each one's
/// resourceVersion (`None`: missing), and whether services were listed.
/// Workers compare it across change notices to ignore unrelated changes.
pub fn fingerprint(objects: &dyn ObjectGetter, pod: &Pod) -> Vec<Option<String>> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out: Vec<Option<String>> = pod_references(pod)
        .iter()
        .map(|r| match r {
            ObjectRefKey::ConfigMap(n) => objects
                .config_map(ns, n)
                .ok()
                .map(|o| o.metadata.resource_version.clone().unwrap_or_default()),
            ObjectRefKey::Secret(n) => objects
                .secret(ns, n)
                .ok()
                .map(|o| o.metadata.resource_version.clone().unwrap_or_default()),
        })
        .collect();
    out.push(objects.services().ok().map(|_| "services".to_string()));
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let Some(c) = &v.persistent_volume_claim else {
            continue;
        };
        let claim = objects.persistent_volume_claim(ns, &c.claim_name).ok();
        out.push(
            claim
                .as_ref()
                .map(|c| c.metadata.resource_version.clone().unwrap_or_default()),
        );
        let volume = claim
            .and_then(|c| c.spec.as_ref()?.volume_name.clone())
            .and_then(|n| objects.persistent_volume(&n).ok());
        out.push(volume.map(|v| v.metadata.resource_version.clone().unwrap_or_default()));
    }
    out
}

/// The kubelet's `HasAPIObjectReference`: the first kind of API object the
/// pod refers to, worded for "static pods may not reference {kind}".
pub fn api_reference_kind(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if spec
        .service_account_name
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        return Some("serviceaccounts".into());
    }
    // Volumes count here too (`VisitPodSecretNames`, `VisitPodConfigmapNames`).
    let refs = pod_references(pod);
    if refs.iter().any(|r| matches!(r, ObjectRefKey::Secret(_)))
        || spec
            .image_pull_secrets
            .as_ref()
            .is_some_and(|s| !s.is_empty())
    {
        return Some("secrets".into());
    }
    if refs.iter().any(|r| matches!(r, ObjectRefKey::ConfigMap(_))) {
        return Some("configmaps".into());
    }
    if spec.resource_claims.as_ref().is_some_and(|c| !c.is_empty()) {
        return Some("resourceclaims".into());
    }
    for v in spec.volumes.iter().flatten() {
        let kind = if v.config_map.is_some() {
            "configmaps (via configmap volumes)"
        } else if v.secret.is_some() {
            "secrets (via secret volumes)"
        } else if v.csi.is_some() {
            "csidrivers (via CSI volumes)"
        } else if v.persistent_volume_claim.is_some() {
            "persistentvolumeclaims"
        } else if v.ephemeral.is_some() {
            "persistentvolumeclaims (via ephemeral volumes)"
        } else if v.azure_file.is_some() {
            "secrets (via azureFile volumes)"
        } else if let Some(p) = &v.projected {
            match p.sources.iter().flatten().find_map(|s| {
                if s.config_map.is_some() {
                    Some("configmaps (via projected volumes)")
                } else if s.secret.is_some() {
                    Some("secrets (via projected volumes)")
                } else if s.service_account_token.is_some() {
                    Some("serviceaccounts (via projected volumes)")
                } else if s.cluster_trust_bundle.is_some() {
                    Some("clustertrustbundles")
                } else {
                    None
                }
            }) {
                Some(kind) => kind,
                None => continue,
            }
        } else {
            continue;
        };
        return Some(kind.into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapKeySelector, ConfigMapVolumeSource, Container, DownwardAPIVolumeSource, EnvVar,
        EnvVarSource, PodSpec, SecretVolumeSource, Volume,
    };

    fn pod(containers: Vec<Container>, volumes: Vec<Volume>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers,
                volumes: Some(volumes),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn static_pod_references_are_named_as_the_kubelet_names_them() {
        let env_cm = Container {
            name: "c".into(),
            env: Some(vec![EnvVar {
                name: "A".into(),
                value_from: Some(EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        name: "cfg".into(),
                        key: "a".into(),
                        optional: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(
            api_reference_kind(&pod(vec![env_cm.clone()], vec![])).as_deref(),
            Some("configmaps")
        );
        let cm_volume = Volume {
            name: "v".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: "cfg".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let secret_volume = Volume {
            name: "s".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some("tls".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let downward = Volume {
            name: "d".into(),
            downward_api: Some(DownwardAPIVolumeSource::default()),
            ..Default::default()
        };
        let plain = Container {
            name: "c".into(),
            ..Default::default()
        };
        assert_eq!(
            api_reference_kind(&pod(
                vec![plain.clone()],
                vec![downward.clone(), cm_volume.clone()]
            ))
            .as_deref(),
            Some("configmaps")
        );
        assert_eq!(
            api_reference_kind(&pod(vec![plain.clone()], vec![secret_volume.clone()])).as_deref(),
            Some("secrets")
        );
        assert_eq!(
            api_reference_kind(&pod(vec![plain.clone()], vec![downward])),
            None
        );
        assert_eq!(
            pod_references(&pod(vec![env_cm], vec![cm_volume, secret_volume])),
            [
                ObjectRefKey::ConfigMap("cfg".into()),
                ObjectRefKey::Secret("tls".into())
            ]
        );
    }
}
