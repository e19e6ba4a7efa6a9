//! Controller expectations (`pkg/controller/controller_utils.go`): after a
//! controller asks for N pods to be created or some pods to be deleted, it
//! does not act on its cache again until the watch has shown it those
//! creations and deletions (or five minutes passed), so a burst of events
//! arriving before the cache catches up never creates extra pods.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// `ExpectationsTimeout`: a controller stuck waiting acts again after this.
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone)]
struct Pending {
    creations: i64,
    /// Names of pods this controller deleted and has not yet seen go.
    deletions: HashSet<String>,
    set_at: Instant,
}

/// Per controller key (`namespace/name`).
#[derive(Debug, Default)]
pub struct Expectations {
    pending: HashMap<String, Pending>,
}

impl Expectations {
    /// `SatisfiedExpectations`: nothing pending, or pending for too long.
    pub fn satisfied(&self, key: &str, now: Instant) -> bool {
        match self.pending.get(key) {
            None => true,
            Some(p) => {
                (p.creations <= 0 && p.deletions.is_empty())
                    || now.duration_since(p.set_at) > EXPECTATIONS_TIMEOUT
            }
        }
    }

    /// Before creating `n` pods.
    pub fn expect_creations(&mut self, key: &str, n: usize, now: Instant) {
        self.pending.insert(
            key.to_owned(),
            Pending {
                creations: n as i64,
                deletions: HashSet::new(),
                set_at: now,
            },
        );
    }

    /// Before deleting these pods.
    pub fn expect_deletions(&mut self, key: &str, pods: &[String], now: Instant) {
        self.pending.insert(
            key.to_owned(),
            Pending {
                creations: 0,
                deletions: pods.iter().cloned().collect(),
                set_at: now,
            },
        );
    }

    /// Before creating `creations` pods and deleting `deletions` in one
    /// sync (`SetExpectations`).
    pub fn expect(&mut self, key: &str, creations: usize, deletions: &[String], now: Instant) {
        self.pending.insert(
            key.to_owned(),
            Pending {
                creations: creations as i64,
                deletions: deletions.iter().cloned().collect(),
                set_at: now,
            },
        );
    }

    /// A new pod of `key` showed up in the watch, or a create failed.
    pub fn creation_observed(&mut self, key: &str) {
        if let Some(p) = self.pending.get_mut(key) {
            p.creations -= 1;
        }
    }

    /// A pod of `key` went (or started terminating), or a delete failed.
    pub fn deletion_observed(&mut self, key: &str, pod: &str) {
        if let Some(p) = self.pending.get_mut(key) {
            p.deletions.remove(pod);
        }
    }

    /// The controller's object is gone.
    pub fn forget(&mut self, key: &str) {
        self.pending.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_controller_waits_for_what_it_asked_for() {
        let mut e = Expectations::default();
        let t = Instant::now();
        assert!(e.satisfied("ns/web", t));
        e.expect_creations("ns/web", 2, t);
        assert!(!e.satisfied("ns/web", t));
        e.creation_observed("ns/web");
        assert!(!e.satisfied("ns/web", t));
        e.creation_observed("ns/web");
        assert!(e.satisfied("ns/web", t));

        e.expect_deletions("ns/web", &["web-a".into(), "web-b".into()], t);
        e.deletion_observed("ns/web", "web-a");
        e.deletion_observed("ns/web", "other");
        assert!(!e.satisfied("ns/web", t));
        assert!(e.satisfied("ns/web", t + EXPECTATIONS_TIMEOUT + Duration::from_secs(1)));
        e.deletion_observed("ns/web", "web-b");
        assert!(e.satisfied("ns/web", t));
    }
}
