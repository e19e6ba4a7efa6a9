//! Shared informers, as client-go's `SharedInformerFactory`: one watch per
//! kind for the whole controller manager, a local cache (`kube::runtime`
//! reflector store) that every controller reads, and a fan-out of the
//! watch's events so each controller can map them to the keys it
//! reconciles. Deletions reach subscribers with the object's last state,
//! which kube's own shared streams do not carry.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

/// What a subscriber learns from the shared watch.
#[derive(Debug, Clone)]
pub enum Change<K> {
    /// Added or modified (also every object of a fresh list).
    Applied(Arc<K>),
    /// Deleted; the object as last seen.
    Deleted(Arc<K>),
    /// The subscriber may have missed changes (it lagged, or the watch
    /// was re-listed): everything in the store should be looked at again.
    Resync,
}

/// One kind's watch: its cache and its change feed.
pub struct SharedInformer<K: Resource + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    pub store: Store<K>,
    changes: broadcast::Sender<Change<K>>,
    /// Whether the first list is in the store. (`Store::wait_until_ready`
    /// wakes only one of several concurrent waiters.)
    synced: tokio::sync::watch::Receiver<bool>,
}

impl<K: Resource + 'static> Clone for SharedInformer<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            changes: self.changes.clone(),
            synced: self.synced.clone(),
        }
    }
}

/// How many changes a subscriber may fall behind before it is told to
/// resync; a burst of 1000 pod creations fits.
const CHANGE_BUFFER: usize = 16 * 1024;

impl<K> SharedInformer<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default + Send + Sync,
{
    fn start(client: kube::Client) -> (Self, tokio::task::AbortHandle) {
        let (store, mut writer) = reflector::store::<K>();
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        let tx = changes.clone();
        let (synced_tx, synced) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut events = watcher(Api::<K>::all(client), watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(kind = %K::kind(&Default::default()), "watch failed: {e}");
                        continue;
                    }
                };
                writer.apply_watcher_event(&event);
                let change = match event {
                    watcher::Event::Apply(o) => Change::Applied(Arc::new(o)),
                    watcher::Event::Delete(o) => Change::Deleted(Arc::new(o)),
                    watcher::Event::InitDone => {
                        synced_tx.send_replace(true);
                        Change::Resync
                    }
                    watcher::Event::Init | watcher::Event::InitApply(_) => continue,
                };
                // No subscriber yet is fine: they start from the store.
                let _ = tx.send(change);
            }
        });
        (
            Self {
                store,
                changes,
                synced,
            },
            task.abort_handle(),
        )
    }

    /// Waits until the store holds the first full list.
    pub async fn synced(&self) {
        let mut synced = self.synced.clone();
        let _ = synced.wait_for(|s| *s).await;
    }

    /// A feed of changes from now on; read the store (after
    /// [`Store::wait_until_ready`]) for what came before.
    pub fn subscribe(&self) -> broadcast::Receiver<Change<K>> {
        self.changes.subscribe()
    }
}

/// The controller manager's informers, one per kind, started on first use
/// and stopped when the last handle goes (a lost leadership).
#[derive(Clone)]
pub struct Informers {
    inner: Arc<Inner>,
}

struct Inner {
    client: kube::Client,
    started: Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>,
    watches: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for w in self.watches.lock().expect("watch handles").drain(..) {
            w.abort();
        }
    }
}

impl Informers {
    pub fn new(client: kube::Client) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                started: Default::default(),
                watches: Default::default(),
            }),
        }
    }

    pub fn client(&self) -> kube::Client {
        self.inner.client.clone()
    }

    /// The informer of kind `K`, shared by every caller.
    pub fn get<K>(&self) -> SharedInformer<K>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone + Default + Send + Sync,
    {
        let mut started = self.inner.started.lock().expect("informer registry");
        started
            .entry(TypeId::of::<K>())
            .or_insert_with(|| {
                let (informer, watch) = SharedInformer::<K>::start(self.inner.client.clone());
                self.inner
                    .watches
                    .lock()
                    .expect("watch handles")
                    .push(watch);
                Box::new(informer)
            })
            .downcast_ref::<SharedInformer<K>>()
            .expect("one informer type per TypeId")
            .clone()
    }
}
