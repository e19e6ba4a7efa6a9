//! The event handlers of a controller that owns pods through expectations
//! (the ReplicaSet/ReplicationController and DaemonSet controllers'
//! `addPod`/`updatePod`/`deletePod` and owner handlers): owner and pod
//! changes become owner keys on the work queue, and what the watch shows
//! settles the owner's expectations.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast::error::RecvError;

use super::expectations::Expectations;
use super::informers::{Change, SharedInformer};
use super::replicaset_decide::controller_of;
use super::work_queue::Queue;

/// The expectations key of an owner.
pub fn owner_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Who owns pods, and how to tell which pods an owner's selector covers.
pub struct PodOwners<'a, K: Resource<DynamicType = ()> + 'static> {
    pub owners: &'a SharedInformer<K>,
    pub pods: &'a SharedInformer<Pod>,
    pub expectations: &'a Mutex<Expectations>,
    pub selects: fn(&K, &BTreeMap<String, String>) -> bool,
}

impl<K> PodOwners<'_, K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Runs until the informers end.
    pub async fn watch(self, queue: Queue<K>) {
        let mut owners = self.owners.subscribe();
        let mut pods = self.pods.subscribe();
        self.owners.synced().await;
        self.pods.synced().await;
        queue.add_all(&self.owners.store);
        let mut seen: HashSet<String> = self
            .pods
            .store
            .state()
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        let kind = K::kind(&());
        let owned_by = |pod: &Pod| {
            controller_of(&pod.metadata)
                .filter(|r| r.kind == kind)
                .map(|r| (pod.namespace().unwrap_or_default(), r.name.clone()))
        };
        // Orphans (and released pods) go to every owner that selects them.
        let enqueue_selecting = |pod: &Pod| {
            let ns = pod.namespace();
            for o in self.owners.store.state() {
                if o.namespace() == ns && (self.selects)(&o, pod.labels()) {
                    queue.add_object(&o);
                }
            }
        };
        loop {
            tokio::select! {
                change = owners.recv() => match change {
                    Ok(Change::Applied(o)) => queue.add_object(&o),
                    Ok(Change::Deleted(o)) => {
                        let key = owner_key(&o.namespace().unwrap_or_default(), &o.name_any());
                        self.expectations.lock().expect("expectations").forget(&key);
                    }
                    Ok(Change::Resync) | Err(RecvError::Lagged(_)) => queue.add_all(&self.owners.store),
                    Err(RecvError::Closed) => return,
                },
                change = pods.recv() => match change {
                    Ok(Change::Applied(p)) => {
                        let new = seen.insert(p.metadata.uid.clone().unwrap_or_default());
                        match owned_by(&p) {
                            Some((ns, name)) => {
                                let key = owner_key(&ns, &name);
                                let mut e = self.expectations.lock().expect("expectations");
                                if new {
                                    e.creation_observed(&key);
                                }
                                if p.metadata.deletion_timestamp.is_some() {
                                    e.deletion_observed(&key, &p.name_any());
                                }
                                drop(e);
                                // Its labels may have stopped matching: the
                                // owner's sync releases it.
                                queue.add(Some(&ns), &name);
                            }
                            None => enqueue_selecting(&p),
                        }
                    }
                    Ok(Change::Deleted(p)) => {
                        seen.remove(p.metadata.uid.as_deref().unwrap_or_default());
                        if let Some((ns, name)) = owned_by(&p) {
                            self.expectations
                                .lock()
                                .expect("expectations")
                                .deletion_observed(&owner_key(&ns, &name), &p.name_any());
                            queue.add(Some(&ns), &name);
                        }
                    }
                    Ok(Change::Resync) | Err(RecvError::Lagged(_)) => queue.add_all(&self.owners.store),
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }
}
