//! A controller's work queue of object keys, on `kube::runtime`'s applier
//! (the machinery behind `Controller`): a key queued many times is
//! reconciled once, one key is never reconciled twice at the same time,
//! and a failed key is retried with per-key exponential back-off (client-go's
//! `ItemExponentialFailureRateLimiter`: 5 ms doubling to 1000 s).

use std::collections::HashMap;
use std::fmt::{Debug, Display};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use kube::Resource;
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::broadcast::{self, error::RecvError};

use super::informers::Change;

const BASE_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_secs(1000);

/// The delay before the `failures`-th retry.
pub fn backoff(failures: u32) -> Duration {
    BASE_DELAY
        .checked_mul(1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(MAX_DELAY)
        .min(MAX_DELAY)
}

/// The sending side: controllers' event handlers add keys here.
pub struct Queue<K: Resource>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    tx: mpsc::UnboundedSender<ObjectRef<K>>,
}

impl<K: Resource> Clone for Queue<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<K: Resource + Clone + 'static> Queue<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    pub fn add(&self, namespace: Option<&str>, name: &str) {
        let mut r = ObjectRef::new(name);
        if let Some(ns) = namespace {
            r = r.within(ns);
        }
        let _ = self.tx.unbounded_send(r);
    }

    pub fn add_object(&self, obj: &K) {
        let m = obj.meta();
        self.add(m.namespace.as_deref(), m.name.as_deref().unwrap_or(""));
    }

    /// Queues every object in `store`.
    pub fn add_all(&self, store: &Store<K>) {
        for obj in store.state() {
            self.add_object(&obj);
        }
    }

    /// Queues each object `changes` applies, and everything in `store`
    /// again when changes may have been missed (a resync or a lag);
    /// deletions need no sync. Returns when the feed closes.
    pub async fn follow(&self, mut changes: broadcast::Receiver<Change<K>>, store: &Store<K>) {
        loop {
            match changes.recv().await {
                Ok(Change::Applied(obj)) => self.add_object(&obj),
                Ok(Change::Deleted(_)) => {}
                Ok(Change::Resync) | Err(RecvError::Lagged(_)) => self.add_all(store),
                Err(RecvError::Closed) => return,
            }
        }
    }
}

pub fn queue<K: Resource>() -> (Queue<K>, mpsc::UnboundedReceiver<ObjectRef<K>>)
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let (tx, rx) = mpsc::unbounded();
    (Queue { tx }, rx)
}

/// What a sync asks for next: nothing, or another look after a while
/// (a pod becoming available after `minReadySeconds`, a progress deadline).
pub type SyncResult<E> = Result<Option<Duration>, E>;

/// A controller's life on shared informers: `watch` turns changes into
/// keys of a new queue from the start; the workers ([`run`]) begin once
/// `caches_synced` is done, so no sync reads a cache still filling. Ends
/// when either ends.
pub async fn serve<K, Ctx, F, Fut, E, W>(
    controller: &'static str,
    store: Store<K>,
    ctx: Arc<Ctx>,
    workers: u16,
    watch: impl FnOnce(Queue<K>) -> W,
    caches_synced: impl Future<Output = ()>,
    sync: F,
) where
    K: Resource + Clone + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Debug + Unpin + Default,
    Ctx: Send + Sync + 'static,
    F: FnMut(Arc<K>, Arc<Ctx>) -> Fut,
    Fut: Future<Output = SyncResult<E>> + Send + 'static,
    E: Display + Send + 'static,
    W: Future<Output = ()>,
{
    let (queue, keys) = self::queue::<K>();
    let changes = watch(queue);
    let work = async {
        caches_synced.await;
        run(controller, store, keys, ctx, workers, sync).await;
    };
    tokio::select! {
        _ = changes => {}
        _ = work => {}
    }
}

/// Runs `sync` for every queued key with up to `workers` keys at a time,
/// until the queue's senders are gone.
pub async fn run<K, Ctx, F, Fut, E>(
    controller: &'static str,
    store: Store<K>,
    keys: mpsc::UnboundedReceiver<ObjectRef<K>>,
    ctx: Arc<Ctx>,
    workers: u16,
    mut sync: F,
) where
    K: Resource + Clone + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Debug + Unpin + Default,
    Ctx: Send + Sync + 'static,
    F: FnMut(Arc<K>, Arc<Ctx>) -> Fut,
    Fut: Future<Output = SyncResult<E>> + Send + 'static,
    E: Display + Send + 'static,
{
    let failures: Arc<Mutex<HashMap<ObjectRef<K>, u32>>> = Default::default();
    let reconciler = move |obj: Arc<K>, ctx: Arc<Ctx>| {
        let key = ObjectRef::from_obj(obj.as_ref());
        let failures = failures.clone();
        let fut = sync(obj, ctx);
        Box::pin(async move {
            let result = fut.await;
            let mut f = failures.lock().expect("failure counts");
            let action = match result {
                Ok(next) => {
                    f.remove(&key);
                    next.map_or_else(Action::await_change, Action::requeue)
                }
                Err(e) => {
                    let n = f.entry(key.clone()).or_insert(0);
                    *n += 1;
                    tracing::warn!(controller, key = %key, retries = *n, "sync failed: {e}");
                    Action::requeue(backoff(*n - 1))
                }
            };
            Ok::<_, std::convert::Infallible>(action)
        })
    };
    let requests =
        keys.map(|r| Ok::<_, std::convert::Infallible>(controller::ReconcileRequest::from(r)));
    controller::applier(
        reconciler,
        |_, _, _| Action::await_change(),
        ctx,
        store,
        requests,
        controller::Config::default().concurrency(workers),
    )
    .for_each(|_| async {})
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_5ms_to_1000s() {
        assert_eq!(backoff(0), Duration::from_millis(5));
        assert_eq!(backoff(1), Duration::from_millis(10));
        assert_eq!(backoff(4), Duration::from_millis(80));
        assert_eq!(backoff(40), MAX_DELAY);
    }
}
