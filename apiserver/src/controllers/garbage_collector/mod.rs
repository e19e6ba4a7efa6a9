//! The garbage collector (kube-controller-manager's `garbagecollector`):
//! deletes objects whose owners are gone, carries out cascading deletions
//! in the foreground (`foregroundDeletion`: dependents first, those with
//! `blockOwnerDeletion` before the owner goes) and orphaning ones (`orphan`:
//! the owner's references are removed from its dependents).
//!
//! It follows every resource the apiserver serves that can be listed,
//! watched and deleted (found through discovery; events excepted), feeds
//! the watch events into the ownership [`graph`], and works off what the
//! graph asks for with `--concurrent-gc-syncs` workers: one queue for items
//! to look at (`attemptToDelete`), one for owners to orphan
//! (`attemptToOrphan`). Owners are always checked with a live read before
//! a dependent is deleted, so a lagging watch never causes a wrong delete.
//! Deletions, reference removals and finalizer removals go through the API
//! with uid or resourceVersion preconditions.

pub mod decide;
pub mod graph;
pub mod queue;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, DeleteParams, DynamicObject, PartialObjectMeta, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::served_resources::{self, ServedResource};
use crate::api::deletion::{FINALIZER_FOREGROUND, FINALIZER_ORPHAN, Propagation};
use decide::{Decision, ForegroundStep, ItemFacts, OwnerState};
use graph::{Graph, Identity, Observed, Uid, Work};
use queue::WorkQueue;

/// kube-controller-manager's `--concurrent-gc-syncs` default.
pub const CONCURRENT_GC_SYNCS: usize = 20;
const DISCOVERY_RETRY: Duration = Duration::from_secs(1);
const WRITE_ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("{action} {kind} {name}: {source}")]
    Api {
        action: &'static str,
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("unable to get REST mapping for {api_version}/{kind}")]
    UnknownKind { api_version: String, kind: String },
    #[error("{kind} {name}: the object kept changing")]
    Contended { kind: String, name: String },
}

pub struct GarbageCollector {
    client: Client,
    resources: Vec<ServedResource>,
    graph: Mutex<Graph>,
    attempt_to_delete: Arc<WorkQueue<Uid>>,
    attempt_to_orphan: Arc<WorkQueue<Uid>>,
}

/// Runs the collector until the task is dropped.
pub async fn run(client: Client, workers: usize) {
    let resources = loop {
        match served_resources::discover(&client).await {
            Ok(r) => break r,
            Err(e) => {
                tracing::warn!("garbage collector: discovery: {e}");
                tokio::time::sleep(DISCOVERY_RETRY).await;
            }
        }
    };
    let gc = Arc::new(GarbageCollector {
        client,
        resources,
        graph: Mutex::new(Graph::default()),
        attempt_to_delete: WorkQueue::new(),
        attempt_to_orphan: WorkQueue::new(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let gc1 = gc.clone();
        tasks.spawn(async move { gc1.delete_worker().await });
        let gc2 = gc.clone();
        tasks.spawn(async move { gc2.orphan_worker().await });
    }
    tasks.spawn(async move { gc.build_graph().await });
    while tasks.join_next().await.is_some() {}
}

/// One watch event of one followed resource.
enum Change {
    Relist(String),
    Apply(Observed),
    Delete(Uid),
    RelistDone(String),
}

fn observed(obj: &PartialObjectMeta<DynamicObject>, r: &ServedResource) -> Option<Observed> {
    let uid = obj.metadata.uid.clone()?;
    Some(Observed {
        identity: Identity {
            api_version: r.resource.api_version.clone(),
            kind: r.resource.kind.clone(),
            namespace: obj.metadata.namespace.clone(),
            name: obj.name_any(),
            uid,
        },
        owners: obj.owner_references().to_vec(),
        deleting: obj.metadata.deletion_timestamp.is_some(),
        finalizers: obj.finalizers().to_vec(),
    })
}

fn describe(id: &Identity) -> String {
    match &id.namespace {
        Some(ns) => format!("{ns}/{}", id.name),
        None => id.name.clone(),
    }
}

impl GarbageCollector {
    /// The graph builder: one metadata-only watch per followed resource (as
    /// upstream's metadata informers: the graph needs owners, finalizers
    /// and deletion, never a spec), merged, applied to the graph in order.
    async fn build_graph(self: Arc<Self>) {
        let followed = served_resources::collectable(&self.resources);
        tracing::info!(
            resources = followed.len(),
            "garbage collector: following {}",
            followed
                .iter()
                .map(ServedResource::group_resource)
                .collect::<Vec<_>>()
                .join(", ")
        );
        let streams = followed.into_iter().map(|r| {
            let api: Api<PartialObjectMeta<DynamicObject>> =
                Api::all_with(self.client.clone(), &r.resource);
            let key = graph::resource_key(&r.resource.api_version, &r.resource.kind);
            watcher(api, watcher::Config::default())
                .default_backoff()
                .filter_map(move |event| {
                    let change = match event {
                        Ok(watcher::Event::Init) => Some(Change::Relist(key.clone())),
                        Ok(watcher::Event::InitApply(o) | watcher::Event::Apply(o)) => {
                            observed(&o, &r).map(Change::Apply)
                        }
                        Ok(watcher::Event::Delete(o)) => o.metadata.uid.clone().map(Change::Delete),
                        Ok(watcher::Event::InitDone) => Some(Change::RelistDone(key.clone())),
                        Err(e) => {
                            tracing::debug!(resource = %r.group_resource(), "garbage collector watch: {e}");
                            None
                        }
                    };
                    futures::future::ready(change)
                })
                .boxed()
        });
        let mut changes = futures::stream::select_all(streams);
        while let Some(change) = changes.next().await {
            let work = {
                let mut g = self.graph.lock().expect("graph lock");
                match change {
                    Change::Relist(key) => {
                        g.relist_started(&key);
                        Vec::new()
                    }
                    Change::Apply(o) => g.observe(o),
                    Change::Delete(uid) => g.remove(&uid),
                    Change::RelistDone(key) => g.relist_done(&key),
                }
            };
            self.enqueue(work);
        }
    }

    fn enqueue(&self, work: Vec<Work>) {
        for w in work {
            match w {
                Work::Delete(uid) => self.attempt_to_delete.add(uid),
                Work::Orphan(uid) => self.attempt_to_orphan.add(uid),
            }
        }
    }

    async fn delete_worker(self: Arc<Self>) {
        loop {
            let uid = self.attempt_to_delete.get().await;
            match self.attempt_to_delete_item(&uid).await {
                Ok(()) => self.attempt_to_delete.forget(&uid),
                Err(e) => {
                    tracing::info!("garbage collector: {e}; retrying");
                    self.attempt_to_delete.add_rate_limited(uid.clone());
                }
            }
            self.attempt_to_delete.done(&uid);
        }
    }

    async fn orphan_worker(self: Arc<Self>) {
        loop {
            let uid = self.attempt_to_orphan.get().await;
            match self.orphan_dependents(&uid).await {
                Ok(()) => self.attempt_to_orphan.forget(&uid),
                Err(e) => {
                    tracing::info!("garbage collector: orphaning: {e}; retrying");
                    self.attempt_to_orphan.add_rate_limited(uid.clone());
                }
            }
            self.attempt_to_orphan.done(&uid);
        }
    }

    fn resource(&self, api_version: &str, kind: &str) -> Result<&ServedResource, GcError> {
        served_resources::find_kind(&self.resources, api_version, kind).ok_or_else(|| {
            GcError::UnknownKind {
                api_version: api_version.to_owned(),
                kind: kind.to_owned(),
            }
        })
    }

    /// The API for an object of `r`; `namespace` counts only if `r` is namespaced.
    fn api(&self, r: &ServedResource, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace.filter(|_| r.namespaced) {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &r.resource),
            None => Api::all_with(self.client.clone(), &r.resource),
        }
    }

    async fn get_live(&self, id: &Identity) -> Result<Option<DynamicObject>, GcError> {
        let r = self.resource(&id.api_version, &id.kind)?;
        self.api(r, id.namespace.as_deref())
            .get_opt(&id.name)
            .await
            .map_err(|source| GcError::Api {
                action: "getting",
                kind: id.kind.clone(),
                name: describe(id),
                source,
            })
    }

    /// The object was not found (or another one has its name): it leaves
    /// the graph, and its dependents are looked at.
    fn virtual_delete(&self, uid: &str) {
        let work = self.graph.lock().expect("graph lock").remove(uid);
        self.enqueue(work);
    }

    async fn attempt_to_delete_item(&self, uid: &str) -> Result<(), GcError> {
        let Some(view) = self.graph.lock().expect("graph lock").view(uid) else {
            return Ok(());
        };
        let latest = match self.get_live(&view.identity).await? {
            Some(o) if o.metadata.uid.as_deref() == Some(uid) => o,
            _ => {
                self.virtual_delete(uid);
                return Ok(());
            }
        };
        if view.virtual_ {
            // It exists: its own watch will make it a real node.
            return Ok(());
        }
        let deleting = latest.metadata.deletion_timestamp.is_some();
        let foreground = latest
            .finalizers()
            .iter()
            .any(|f| f == FINALIZER_FOREGROUND);
        if deleting && foreground {
            return self.process_deleting_dependents(&view).await;
        }
        // Being deleted is a one-way trip: its dependents are looked at
        // when it is gone.
        if deleting {
            return Ok(());
        }
        let refs = latest.owner_references().to_vec();
        if refs.is_empty() {
            return Ok(());
        }
        let mut owners = Vec::with_capacity(refs.len());
        for r in &refs {
            owners.push((r.clone(), self.classify(r, &view.identity).await?));
        }
        let facts = ItemFacts {
            finalizers: latest.finalizers().to_vec(),
            dependents: view.dependents.clone(),
        };
        match decide::decide(&owners, &facts) {
            Decision::Keep => Ok(()),
            Decision::RemoveOwnerReferences(gone) => {
                tracing::info!(item = %describe(&view.identity), kind = %view.identity.kind, "removing references to owners that are gone or waiting for it");
                self.update_owner_references(&view.identity, |refs| {
                    decide::without_owners(refs, &gone)
                })
                .await
                .map(drop)
            }
            Decision::Delete {
                propagation,
                unblock_first,
            } => {
                // Deleted only as it was read: an owner reference removed
                // meanwhile (an orphaning) must not be overtaken.
                let mut read_at = latest.resource_version();
                if unblock_first {
                    read_at = self
                        .update_owner_references(&view.identity, decide::unblocked)
                        .await?;
                }
                tracing::info!(item = %describe(&view.identity), kind = %view.identity.kind, propagation = propagation.as_str(), "deleting object whose owners are gone");
                self.delete(&view.identity, propagation, read_at).await
            }
        }
    }

    /// An owner, as a live read finds it.
    async fn classify(&self, r: &OwnerReference, item: &Identity) -> Result<OwnerState, GcError> {
        {
            let g = self.graph.lock().expect("graph lock");
            if g.was_orphaned(&r.uid) {
                return Ok(OwnerState::Orphaned);
            }
            if g.is_absent(&r.uid) {
                return Ok(OwnerState::Dangling);
            }
        }
        let resource = self.resource(&r.api_version, &r.kind)?;
        // A namespaced owner lives in its dependent's namespace; a
        // cluster-scoped dependent cannot have one.
        if resource.namespaced && item.namespace.is_none() {
            return Ok(OwnerState::Dangling);
        }
        let owner = self
            .api(resource, item.namespace.as_deref())
            .get_opt(&r.name)
            .await
            .map_err(|source| GcError::Api {
                action: "getting owner",
                kind: r.kind.clone(),
                name: r.name.clone(),
                source,
            })?;
        match owner {
            Some(o) if o.metadata.uid.as_deref() == Some(r.uid.as_str()) => {
                let waiting = o.metadata.deletion_timestamp.is_some()
                    && o.finalizers().iter().any(|f| f == FINALIZER_FOREGROUND);
                Ok(if waiting {
                    OwnerState::WaitingForDependents
                } else {
                    OwnerState::Solid
                })
            }
            _ => {
                self.graph.lock().expect("graph lock").mark_absent(&r.uid);
                Ok(OwnerState::Dangling)
            }
        }
    }

    async fn process_deleting_dependents(&self, view: &graph::ItemView) -> Result<(), GcError> {
        match decide::foreground_step(&view.dependents) {
            ForegroundStep::RemoveFinalizer => {
                tracing::info!(item = %describe(&view.identity), kind = %view.identity.kind, "dependents deleted; removing the foregroundDeletion finalizer");
                self.remove_finalizer(&view.identity, FINALIZER_FOREGROUND)
                    .await
            }
            ForegroundStep::AttemptDependents(uids) => {
                for uid in uids {
                    self.attempt_to_delete.add(uid);
                }
                Ok(())
            }
        }
    }

    /// `attemptToOrphan`: the owner's references go from its dependents,
    /// then its `orphan` finalizer. The owner is remembered as orphaning
    /// first: a dependent whose watch event is still on its way when the
    /// owner goes lets go of it too, instead of being collected as
    /// dangling (upstream's known race, kubernetes#26120).
    async fn orphan_dependents(&self, uid: &str) -> Result<(), GcError> {
        let (owner, dependents) = {
            let mut g = self.graph.lock().expect("graph lock");
            let Some(view) = g.view(uid) else {
                return Ok(());
            };
            g.mark_orphaned(uid);
            (view.identity, g.dependents_of(uid))
        };
        for dep in &dependents {
            let owner_uid = owner.uid.clone();
            self.update_owner_references(dep, |refs| {
                decide::without_owners(refs, std::slice::from_ref(&owner_uid))
            })
            .await?;
        }
        if !dependents.is_empty() {
            tracing::info!(owner = %describe(&owner), kind = %owner.kind, dependents = dependents.len(), "orphaned dependents");
        }
        self.remove_finalizer(&owner, FINALIZER_ORPHAN).await
    }

    /// Deletes the object if it still has `id`'s uid and, when given, the
    /// resourceVersion the decision was made on (a change sends the item
    /// back to be looked at again).
    async fn delete(
        &self,
        id: &Identity,
        propagation: Propagation,
        resource_version: Option<String>,
    ) -> Result<(), GcError> {
        let r = self.resource(&id.api_version, &id.kind)?;
        let params = DeleteParams {
            propagation_policy: Some(match propagation {
                Propagation::Orphan => PropagationPolicy::Orphan,
                Propagation::Background => PropagationPolicy::Background,
                Propagation::Foreground => PropagationPolicy::Foreground,
            }),
            preconditions: Some(Preconditions {
                uid: Some(id.uid.clone()),
                resource_version: resource_version.clone(),
            }),
            ..Default::default()
        };
        match self
            .api(r, id.namespace.as_deref())
            .delete(&id.name, &params)
            .await
        {
            Ok(_) => Ok(()),
            // Gone already.
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            // Changed since read, or replaced by another object of that
            // name: looked at again (a replaced one leaves the graph then).
            Err(kube::Error::Api(s)) if s.code == 409 && resource_version.is_some() => {
                Err(GcError::Contended {
                    kind: id.kind.clone(),
                    name: describe(id),
                })
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(source) => Err(GcError::Api {
                action: "deleting",
                kind: id.kind.clone(),
                name: describe(id),
                source,
            }),
        }
    }

    /// Rewrites the object's owner references with `change`, conditionally
    /// on the resourceVersion read; a vanished object is not an error.
    async fn update_owner_references(
        &self,
        id: &Identity,
        change: impl Fn(&[OwnerReference]) -> Vec<OwnerReference>,
    ) -> Result<Option<String>, GcError> {
        self.patch_metadata(id, "updating owner references of", |obj| {
            let refs = obj.owner_references();
            let new = change(refs);
            (new != refs).then(|| {
                if new.is_empty() {
                    json!({"ownerReferences": null})
                } else {
                    json!({"ownerReferences": new})
                }
            })
        })
        .await
    }

    async fn remove_finalizer(&self, id: &Identity, finalizer: &str) -> Result<(), GcError> {
        self.patch_metadata(id, "removing a finalizer from", |obj| {
            let current = obj.finalizers();
            if !current.iter().any(|f| f == finalizer) {
                return None;
            }
            let rest: Vec<&String> = current.iter().filter(|f| *f != finalizer).collect();
            Some(if rest.is_empty() {
                json!({"finalizers": null})
            } else {
                json!({"finalizers": rest})
            })
        })
        .await
        .map(drop)
    }

    /// A JSON merge patch of `metadata` computed from the live object,
    /// pinned to its resourceVersion, retried on conflicts; the object's
    /// resourceVersion after it (none if it is gone).
    async fn patch_metadata(
        &self,
        id: &Identity,
        action: &'static str,
        change: impl Fn(&DynamicObject) -> Option<serde_json::Value>,
    ) -> Result<Option<String>, GcError> {
        let r = self.resource(&id.api_version, &id.kind)?;
        let api = self.api(r, id.namespace.as_deref());
        let err = |source| GcError::Api {
            action,
            kind: id.kind.clone(),
            name: describe(id),
            source,
        };
        for _ in 0..WRITE_ATTEMPTS {
            let Some(obj) = api.get_opt(&id.name).await.map_err(err)? else {
                return Ok(None);
            };
            if obj.metadata.uid.as_deref() != Some(id.uid.as_str()) {
                return Ok(None);
            }
            let Some(mut meta) = change(&obj) else {
                return Ok(obj.resource_version());
            };
            meta["resourceVersion"] = obj.resource_version().unwrap_or_default().into();
            let patch = Patch::Merge(json!({"metadata": meta}));
            match api.patch(&id.name, &PatchParams::default(), &patch).await {
                Ok(patched) => return Ok(patched.resource_version()),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
                Err(e) => return Err(err(e)),
            }
        }
        Err(GcError::Contended {
            kind: id.kind.clone(),
            name: describe(id),
        })
    }
}
