//! The endpoints controller: kube-controller-manager's endpoints and
//! endpointslice controllers in one loop. For every Service with a
//! selector it keeps an `Endpoints` object of the same name and the
//! Service's EndpointSlices in step with the pods the selector selects
//! (what they should be is [`super::endpoints_render`]'s pure business;
//! this module watches and writes).
//!
//! Services, pods, endpoints and endpointslices come from the store's
//! change feed; a change marks the services it concerns, and each marked
//! service is synced once the burst of changes has been read. A write
//! happens only when the stored object differs from the rendered one, so
//! the controller's own writes coming back through the feed cost a read
//! each and nothing more. Every [`RESYNC`] all services are synced again;
//! a broken feed (compaction, etcd trouble) means a relist.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::stream::{self, StreamExt};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::endpoints_render::{
    self as render, CONTROLLER_NAME, MANAGED_BY_LABEL, SERVICE_NAME_LABEL,
};
use crate::api::Api;
use crate::api::object;
use crate::kinds::Kind;
use crate::status::ApiError;
use crate::storage::{EventType, StorageError, WatchEvent};

/// How often every service is synced even without changes.
pub const RESYNC: Duration = Duration::from_secs(30);
/// How long a service whose sync failed waits before the next try.
const RETRY: Duration = Duration::from_millis(200);
/// How long a broken feed waits before the relist.
const RELIST_BACKOFF: Duration = Duration::from_secs(1);

/// (namespace, name)
type Key = (String, String);

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("{0}")]
    Api(String),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

impl From<ApiError> for SyncError {
    fn from(e: ApiError) -> Self {
        SyncError::Api(e.message)
    }
}

/// Which resource a change feed event is about.
#[derive(Debug, Clone, Copy)]
enum Feed {
    Services,
    Pods,
    Endpoints,
    Slices,
}

pub struct EndpointsController {
    api: Arc<Api>,
    services_kind: Arc<dyn Kind>,
    pods_kind: Arc<dyn Kind>,
    endpoints_kind: Arc<dyn Kind>,
    slices_kind: Arc<dyn Kind>,
    services: HashMap<Key, Service>,
    pods: HashMap<Key, Pod>,
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    serde_json::from_slice(bytes).ok()
}

/// A stored object as its typed struct, with its resourceVersion.
fn typed<T: DeserializeOwned>(v: Value) -> Option<T> {
    serde_json::from_value(v).ok()
}

impl EndpointsController {
    pub fn new(api: Arc<Api>) -> Self {
        Self {
            services_kind: api.kind("", "v1", "services"),
            pods_kind: api.kind("", "v1", "pods"),
            endpoints_kind: api.kind("", "v1", "endpoints"),
            slices_kind: api.kind("discovery.k8s.io", "v1", "endpointslices"),
            api,
            services: HashMap::new(),
            pods: HashMap::new(),
        }
    }

    /// Runs for the life of the process.
    pub async fn run(mut self) {
        let mut startup = true;
        loop {
            if let Err(e) = self.list_and_watch(startup).await {
                tracing::warn!("endpoints controller: {e}; relisting");
            }
            startup = false;
            tokio::time::sleep(RELIST_BACKOFF).await;
        }
    }

    async fn list_and_watch(&mut self, startup: bool) -> Result<(), SyncError> {
        let store = self.api.store.clone();
        let services_prefix = self.services_kind.info().key_prefix(None);
        let pods_prefix = self.pods_kind.info().key_prefix(None);
        let (svc_kvs, svc_rev) = store.list(&services_prefix).await?;
        let (pod_kvs, pod_rev) = store.list(&pods_prefix).await?;
        self.services = svc_kvs
            .iter()
            .filter_map(|kv| decode::<Service>(&kv.value))
            .map(|s| (key_of(&s.metadata), s))
            .collect();
        self.pods = pod_kvs
            .iter()
            .filter_map(|kv| decode::<Pod>(&kv.value))
            .map(|p| (key_of(&p.metadata), p))
            .collect();
        let rev = store.current_revision().await?;
        let tagged = |feed: Feed, s: crate::storage::WatchStream| s.map(move |e| (feed, e)).boxed();
        let mut feed = stream::select_all([
            tagged(
                Feed::Services,
                store.watch(&services_prefix, svc_rev).await?,
            ),
            tagged(Feed::Pods, store.watch(&pods_prefix, pod_rev).await?),
            tagged(
                Feed::Endpoints,
                store
                    .watch(&self.endpoints_kind.info().key_prefix(None), rev)
                    .await?,
            ),
            tagged(
                Feed::Slices,
                store
                    .watch(&self.slices_kind.info().key_prefix(None), rev)
                    .await?,
            ),
        ]);

        let mut dirty = self.leftovers(startup).await?;
        dirty.extend(self.services.keys().cloned());
        tracing::info!(
            services = self.services.len(),
            pods = self.pods.len(),
            "endpoints controller synced its caches"
        );
        let mut resync = tokio::time::interval(RESYNC);
        resync.reset();
        let mut retry: BTreeSet<Key> = BTreeSet::new();
        loop {
            let failed = self.sync_all(std::mem::take(&mut dirty)).await;
            retry.extend(failed);
            let retry_pending = !retry.is_empty();
            let retry_due = async move {
                if !retry_pending {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(RETRY).await;
            };
            tokio::select! {
                ev = feed.next() => {
                    let Some((which, ev)) = ev else {
                        return Err(SyncError::Api("the change feed ended".into()));
                    };
                    self.observe(which, ev?, &mut dirty);
                    // Take the rest of a burst before syncing.
                    while let Some(Some((which, ev))) = feed.next().now_or_never() {
                        self.observe(which, ev?, &mut dirty);
                    }
                }
                _ = resync.tick() => {
                    dirty.extend(self.services.keys().cloned());
                    dirty.extend(self.leftovers(false).await?);
                }
                _ = retry_due => {
                    dirty.append(&mut retry);
                }
            }
        }
    }

    /// Services that have managed slices (or, at startup, an `Endpoints`)
    /// but no longer exist: their leftovers are deleted by the sync. At
    /// startup, as `checkLeftoverEndpoints` does, so is the `Endpoints` of a
    /// service deleted while the controller was not running.
    async fn leftovers(&self, startup: bool) -> Result<BTreeSet<Key>, SyncError> {
        let mut keys = BTreeSet::new();
        let (kvs, _) = self
            .api
            .store
            .list(&self.slices_kind.info().key_prefix(None))
            .await?;
        for s in kvs
            .iter()
            .filter_map(|kv| decode::<EndpointSlice>(&kv.value))
        {
            let labels = s.metadata.labels.clone().unwrap_or_default();
            if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(CONTROLLER_NAME) {
                continue;
            }
            if let Some(svc) = labels.get(SERVICE_NAME_LABEL) {
                let key = (
                    s.metadata.namespace.clone().unwrap_or_default(),
                    svc.clone(),
                );
                if !self.services.contains_key(&key) {
                    keys.insert(key);
                }
            }
        }
        if startup {
            let (kvs, _) = self
                .api
                .store
                .list(&self.endpoints_kind.info().key_prefix(None))
                .await?;
            for e in kvs.iter().filter_map(|kv| decode::<Endpoints>(&kv.value)) {
                let key = key_of(&e.metadata);
                if !self.services.contains_key(&key) {
                    keys.insert(key);
                }
            }
        }
        Ok(keys)
    }

    /// Updates the caches from one change and marks the services it concerns.
    fn observe(&mut self, which: Feed, ev: Arc<WatchEvent>, dirty: &mut BTreeSet<Key>) {
        match which {
            Feed::Services => {
                let Some(svc) = decode::<Service>(&ev.value) else {
                    return;
                };
                let key = key_of(&svc.metadata);
                match ev.event_type {
                    EventType::Put => self.services.insert(key.clone(), svc),
                    EventType::Delete => self.services.remove(&key),
                };
                dirty.insert(key);
            }
            Feed::Pods => {
                // The pod as it was is the cached one: only the new state
                // is decoded (the deleted one's last state on a delete).
                let Some(pod) = decode::<Pod>(&ev.value) else {
                    return;
                };
                let key = key_of(&pod.metadata);
                let (old, new) = match ev.event_type {
                    EventType::Put => (self.pods.remove(&key), Some(pod)),
                    EventType::Delete => (self.pods.remove(&key).or(Some(pod)), None),
                };
                for pod in [&old, &new].into_iter().flatten() {
                    let ns = pod.metadata.namespace.clone().unwrap_or_default();
                    for name in render::services_selecting(
                        self.services.values(),
                        Some(&ns),
                        pod.metadata.labels.as_ref(),
                    ) {
                        dirty.insert((ns.clone(), name));
                    }
                }
                if let Some(p) = new {
                    self.pods.insert(key, p);
                }
            }
            Feed::Endpoints => {
                // Someone deleted or edited a service's Endpoints: put it back.
                if let Some(e) = decode::<Endpoints>(&ev.value) {
                    let key = key_of(&e.metadata);
                    if self
                        .services
                        .get(&key)
                        .is_some_and(|s| render::selector(s).is_some())
                    {
                        dirty.insert(key);
                    }
                }
            }
            Feed::Slices => {
                if let Some(s) = decode::<EndpointSlice>(&ev.value) {
                    let labels = s.metadata.labels.clone().unwrap_or_default();
                    if labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(CONTROLLER_NAME)
                        && let Some(svc) = labels.get(SERVICE_NAME_LABEL)
                    {
                        dirty.insert((
                            s.metadata.namespace.clone().unwrap_or_default(),
                            svc.clone(),
                        ));
                    }
                }
            }
        }
    }

    /// Syncs every marked service; returns the ones that failed.
    async fn sync_all(&self, dirty: BTreeSet<Key>) -> BTreeSet<Key> {
        let mut failed = BTreeSet::new();
        for key in dirty {
            if let Err(e) = self.sync(&key).await {
                tracing::warn!(service = %format!("{}/{}", key.0, key.1), "syncing endpoints: {e}");
                failed.insert(key);
            }
        }
        failed
    }

    async fn sync(&self, key: &Key) -> Result<(), SyncError> {
        let (ns, name) = (key.0.as_str(), key.1.as_str());
        let Some(svc) = self.services.get(key) else {
            // The service is gone: so are its Endpoints and slices.
            self.delete_endpoints(ns, name).await?;
            for slice in self.managed_slices(ns, name).await? {
                self.delete_slice(&slice).await?;
            }
            return Ok(());
        };
        if render::selector(svc).is_none() || svc.metadata.deletion_timestamp.is_some() {
            // No selector: the user manages this service's endpoints.
            return Ok(());
        }
        let pods: Vec<&Pod> = render::selected_pods(svc, self.pods.values()).collect();
        self.sync_endpoints(svc, &pods).await?;
        let external_name =
            svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName");
        let existing = self.managed_slices(ns, name).await?;
        let plan = if external_name {
            render::SlicePlan {
                delete: existing,
                ..Default::default()
            }
        } else {
            render::plan_slices(
                svc,
                &render::render_slice_endpoints(svc, pods.iter().copied()),
                existing,
            )
        };
        for slice in plan.delete {
            self.delete_slice(&slice).await?;
        }
        for slice in plan.update {
            let v = serde_json::to_value(&slice).expect("slices serialize");
            self.api
                .update_object(self.slices_kind.as_ref(), v, false)
                .await?;
        }
        for slice in plan.create {
            let v = serde_json::to_value(&slice).expect("slices serialize");
            self.api.create_object(self.slices_kind.as_ref(), v).await?;
        }
        Ok(())
    }

    async fn sync_endpoints(&self, svc: &Service, pods: &[&Pod]) -> Result<(), SyncError> {
        let desired = render::render_endpoints(svc, pods.iter().copied());
        let (ns, name) = key_of(&desired.metadata);
        let kind = self.endpoints_kind.as_ref();
        let current = match self.api.get(kind, Some(&ns), &name).await {
            Ok(v) => typed::<Endpoints>(v),
            Err(e) if e.code == 404 => None,
            Err(e) => return Err(e.into()),
        };
        match current {
            None => {
                let v = serde_json::to_value(&desired).expect("endpoints serialize");
                self.api.create_object(kind, v).await?;
            }
            Some(cur)
                if cur.subsets.as_deref().unwrap_or_default()
                    != desired.subsets.as_deref().unwrap_or_default()
                    || cur.metadata.labels.clone().unwrap_or_default()
                        != desired.metadata.labels.clone().unwrap_or_default() =>
            {
                let mut next = cur.clone();
                next.subsets = desired.subsets;
                next.metadata.labels = desired.metadata.labels;
                let v = serde_json::to_value(&next).expect("endpoints serialize");
                self.api.update_object(kind, v, false).await?;
            }
            Some(_) => {}
        }
        Ok(())
    }

    async fn managed_slices(
        &self,
        ns: &str,
        service: &str,
    ) -> Result<Vec<EndpointSlice>, SyncError> {
        let (kvs, _) = self
            .api
            .store
            .list(&self.slices_kind.info().key_prefix(Some(ns)))
            .await?;
        Ok(kvs
            .iter()
            .filter_map(|kv| typed::<EndpointSlice>(object::decode(kv)))
            .filter(|s| render::is_managed_slice_of(s, service))
            .collect())
    }

    async fn delete_endpoints(&self, ns: &str, name: &str) -> Result<(), SyncError> {
        match self
            .api
            .delete_object(self.endpoints_kind.as_ref(), Some(ns), name, None)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_slice(&self, slice: &EndpointSlice) -> Result<(), SyncError> {
        let rv = slice
            .metadata
            .resource_version
            .as_deref()
            .and_then(|r| r.parse().ok());
        match self
            .api
            .delete_object(
                self.slices_kind.as_ref(),
                slice.metadata.namespace.as_deref(),
                slice.metadata.name.as_deref().unwrap_or_default(),
                rv,
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
