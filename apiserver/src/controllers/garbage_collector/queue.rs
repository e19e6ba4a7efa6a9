//! The collector's work queues, with client-go's guarantees
//! (`workqueue.RateLimitingInterface`): its items are objects of every
//! kind by uid, so the typed work queue of the other controllers (one
//! resource, `kube::runtime`'s applier) does not fit it. An item waits in the
//! queue at most once, is handed to one worker at a time (added again
//! while processed, it comes back after `done`), and failures are retried
//! with per-item exponential back-off (5 ms doubling to 1000 s).

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

const BASE_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_secs(1000);

struct State<K> {
    queue: VecDeque<K>,
    /// Waiting to be processed (in `queue`, or to be re-queued after `done`).
    dirty: HashSet<K>,
    processing: HashSet<K>,
    failures: HashMap<K, u32>,
}

pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    ready: Notify,
}

impl<K: Hash + Eq + Clone + Send + 'static> WorkQueue<K> {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
            }),
            ready: Notify::new(),
        })
    }

    pub fn add(&self, item: K) {
        let mut s = self.state.lock().expect("work queue lock");
        if !s.dirty.insert(item.clone()) {
            return;
        }
        if s.processing.contains(&item) {
            return;
        }
        s.queue.push_back(item);
        drop(s);
        self.ready.notify_one();
    }

    /// The next item; the caller calls [`Self::done`] when finished with it.
    pub async fn get(&self) -> K {
        loop {
            {
                let mut s = self.state.lock().expect("work queue lock");
                if let Some(item) = s.queue.pop_front() {
                    s.dirty.remove(&item);
                    s.processing.insert(item.clone());
                    if !s.queue.is_empty() {
                        // Let another idle worker take the next one.
                        self.ready.notify_one();
                    }
                    return item;
                }
            }
            self.ready.notified().await;
        }
    }

    pub fn done(&self, item: &K) {
        let mut s = self.state.lock().expect("work queue lock");
        s.processing.remove(item);
        if s.dirty.contains(item) {
            s.queue.push_back(item.clone());
            drop(s);
            self.ready.notify_one();
        }
    }

    pub fn add_after(self: &Arc<Self>, item: K, delay: Duration) {
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(item);
        });
    }

    /// Adds the item again after its back-off, which doubles per failure.
    pub fn add_rate_limited(self: &Arc<Self>, item: K) {
        let delay = {
            let mut s = self.state.lock().expect("work queue lock");
            let n = s.failures.entry(item.clone()).or_default();
            let delay = backoff(*n);
            *n += 1;
            delay
        };
        self.add_after(item, delay);
    }

    /// Clears the item's failure count (it succeeded).
    pub fn forget(&self, item: &K) {
        self.state
            .lock()
            .expect("work queue lock")
            .failures
            .remove(item);
    }

    pub fn len(&self) -> usize {
        self.state.lock().expect("work queue lock").queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// client-go's `ItemExponentialFailureRateLimiter(5ms, 1000s)`.
pub fn backoff(failures: u32) -> Duration {
    BASE_DELAY
        .checked_mul(1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(MAX_DELAY)
        .min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_item_waits_once_and_comes_back_if_added_while_processed() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let first = q.get().await;
        assert_eq!(first, "a");
        q.add("a"); // changed while being processed
        assert_eq!(q.get().await, "b");
        assert!(q.is_empty(), "not handed out twice at once");
        q.done(&"a");
        assert_eq!(q.get().await, "a");
    }

    #[test]
    fn failures_back_off_exponentially_up_to_a_cap() {
        assert_eq!(backoff(0), Duration::from_millis(5));
        assert_eq!(backoff(3), Duration::from_millis(40));
        assert_eq!(backoff(40), Duration::from_secs(1000));
    }
}
