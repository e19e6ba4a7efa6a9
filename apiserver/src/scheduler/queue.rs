//! The scheduling queue (kube-scheduler's `PriorityQueue`): an active
//! queue ordered by priority then arrival, a back-off queue for pods that
//! just failed (1 s doubling to 10 s by default), and a pool of
//! unschedulable pods that wait for a cluster event that could help them —
//! an event only moves pods whose rejecting plugins care about it. Pods
//! left there five minutes are retried anyway, as upstream does.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use super::plugins::Plugin;

/// How long a pod may stay unschedulable before it is retried anyway.
pub const MAX_IN_UNSCHEDULABLE: Duration = Duration::from_secs(5 * 60);

/// Something that changed in the cluster and may make pods schedulable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterEvent {
    NodeAdd,
    NodeLabelChange,
    NodeTaintChange,
    /// `spec.unschedulable` changed (cordon/uncordon).
    NodeSpecUnschedulableChange,
    NodeAllocatableChange,
    /// A placed pod went away (deleted, or finished).
    AssignedPodDelete,
    /// A pod was placed or a placed pod's labels changed.
    AssignedPodAddOrUpdate,
    NamespaceChange,
    /// A PersistentVolumeClaim was added or changed.
    PvcChange,
    /// A PersistentVolume was added or changed.
    PvChange,
    /// A StorageClass was added or changed.
    StorageClassChange,
}

impl ClusterEvent {
    /// Whether the event can help a pod that these plugins refused.
    pub fn may_help(self, plugins: &[Plugin]) -> bool {
        use Plugin::*;
        if plugins.is_empty() {
            return true;
        }
        plugins.iter().any(|p| match self {
            ClusterEvent::NodeAdd => true,
            ClusterEvent::NodeLabelChange => {
                matches!(
                    p,
                    NodeAffinity | InterPodAffinity | PodTopologySpread | VolumeBinding
                )
            }
            ClusterEvent::NodeTaintChange => {
                matches!(p, TaintToleration | NodeUnschedulable | PodTopologySpread)
            }
            ClusterEvent::NodeSpecUnschedulableChange => matches!(p, NodeUnschedulable),
            ClusterEvent::NodeAllocatableChange => matches!(p, NodeResourcesFit),
            ClusterEvent::AssignedPodDelete => matches!(
                p,
                NodeResourcesFit | NodePorts | InterPodAffinity | PodTopologySpread
            ),
            ClusterEvent::AssignedPodAddOrUpdate => {
                matches!(p, InterPodAffinity | PodTopologySpread)
            }
            ClusterEvent::NamespaceChange => matches!(p, InterPodAffinity),
            ClusterEvent::PvcChange | ClusterEvent::PvChange | ClusterEvent::StorageClassChange => {
                matches!(p, VolumeBinding)
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Active,
    Backoff(Instant),
    Unschedulable,
    /// Popped and being scheduled or bound.
    InFlight,
}

/// A pod waiting in the queue.
#[derive(Debug, Clone)]
pub struct QueuedPod {
    pub pod: Arc<Pod>,
    pub attempts: u32,
    /// When it was last tried (back-off counts from here).
    pub last_attempt: Option<Instant>,
    /// Plugins that refused it last time.
    pub rejected_by: Vec<Plugin>,
    /// When it entered the unschedulable pool.
    unschedulable_since: Option<Instant>,
    place: Place,
    seq: u64,
    /// An event that may help it came while it was in flight.
    moved_in_flight: bool,
}

impl QueuedPod {
    fn priority(&self) -> i32 {
        self.pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
    }
}

type ActiveKey = (Reverse<i32>, u64, String);

pub struct SchedulingQueue {
    pods: HashMap<String, QueuedPod>,
    /// Pods unschedulable or in flight: the only ones a cluster event moves
    /// or marks (a backlog of active pods must not make every event cost
    /// a scan of the backlog).
    held: HashSet<String>,
    active: BTreeSet<ActiveKey>,
    backoff: BTreeSet<(Instant, u64, String)>,
    seq: u64,
    initial_backoff: Duration,
    max_backoff: Duration,
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

impl SchedulingQueue {
    pub fn new(initial_backoff: Duration, max_backoff: Duration) -> Self {
        SchedulingQueue {
            pods: HashMap::new(),
            held: HashSet::new(),
            active: BTreeSet::new(),
            backoff: BTreeSet::new(),
            seq: 0,
            initial_backoff,
            max_backoff,
        }
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    pub fn active_len(&self) -> usize {
        self.active.len()
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    fn unlink(&mut self, uid: &str) {
        let Some(q) = self.pods.get(uid) else { return };
        match q.place {
            Place::Active => {
                self.active
                    .remove(&(Reverse(q.priority()), q.seq, uid.to_owned()));
            }
            Place::Backoff(t) => {
                self.backoff.remove(&(t, q.seq, uid.to_owned()));
            }
            Place::Unschedulable | Place::InFlight => {}
        }
    }

    fn place(&mut self, uid: &str, place: Place) {
        self.unlink(uid);
        self.seq += 1;
        let seq = self.seq;
        let Some(q) = self.pods.get_mut(uid) else {
            return;
        };
        q.place = place;
        q.seq = seq;
        q.unschedulable_since = None;
        match place {
            Place::Active => {
                self.held.remove(uid);
                self.active
                    .insert((Reverse(q.priority()), seq, uid.to_owned()));
            }
            Place::Backoff(t) => {
                self.held.remove(uid);
                self.backoff.insert((t, seq, uid.to_owned()));
            }
            Place::Unschedulable | Place::InFlight => {
                self.held.insert(uid.to_owned());
            }
        }
    }

    /// A new pending pod.
    pub fn add(&mut self, pod: Arc<Pod>) {
        let uid = uid_of(&pod);
        if self.pods.contains_key(&uid) {
            self.update(pod, Instant::now());
            return;
        }
        self.pods.insert(
            uid.clone(),
            QueuedPod {
                pod,
                attempts: 0,
                last_attempt: None,
                rejected_by: Vec::new(),
                unschedulable_since: None,
                place: Place::InFlight,
                seq: 0,
                moved_in_flight: false,
            },
        );
        self.place(&uid, Place::Active);
    }

    /// The pending pod changed: an unschedulable one whose spec, labels or
    /// annotations changed gets another try; the others keep their place
    /// with the new object.
    pub fn update(&mut self, pod: Arc<Pod>, now: Instant) {
        let uid = uid_of(&pod);
        let Some(q) = self.pods.get_mut(&uid) else {
            self.add(pod);
            return;
        };
        let place = q.place;
        // Status-only changes (the scheduler's own condition, a kubelet's
        // report) can't make a pod fit: it keeps its place.
        let relevant = q.pod.spec != pod.spec
            || q.pod.metadata.labels != pod.metadata.labels
            || q.pod.metadata.annotations != pod.metadata.annotations;
        q.pod = pod;
        if !relevant {
            return;
        }
        match place {
            Place::InFlight => q.moved_in_flight = true,
            Place::Unschedulable => {
                let p = self.after_backoff(&uid, now);
                self.place(&uid, p);
            }
            // Re-insert: the priority may have changed.
            other => self.place(&uid, other),
        }
    }

    pub fn delete(&mut self, uid: &str) {
        self.unlink(uid);
        self.held.remove(uid);
        self.pods.remove(uid);
    }

    /// The next pod to schedule: highest priority, then longest waiting.
    pub fn pop(&mut self, now: Instant) -> Option<QueuedPod> {
        let (_, _, uid) = self.active.pop_first()?;
        let q = self.pods.get_mut(&uid)?;
        q.place = Place::InFlight;
        self.held.insert(uid.clone());
        q.attempts += 1;
        q.last_attempt = Some(now);
        q.moved_in_flight = false;
        Some(q.clone())
    }

    fn backoff_duration(&self, attempts: u32) -> Duration {
        let mut d = self.initial_backoff;
        for _ in 1..attempts {
            d = d.saturating_mul(2);
            if d >= self.max_backoff {
                return self.max_backoff;
            }
        }
        d.min(self.max_backoff)
    }

    /// Active if its back-off has passed, else the back-off queue.
    fn after_backoff(&self, uid: &str, now: Instant) -> Place {
        let Some(q) = self.pods.get(uid) else {
            return Place::Active;
        };
        match q.last_attempt {
            Some(t) if t + self.backoff_duration(q.attempts) > now => {
                Place::Backoff(t + self.backoff_duration(q.attempts))
            }
            _ => Place::Active,
        }
    }

    /// The pod didn't fit: it waits for an event that may help (or backs
    /// off at once if one came while it was being scheduled).
    pub fn unschedulable(&mut self, uid: &str, rejected_by: Vec<Plugin>, now: Instant) {
        let Some(q) = self.pods.get_mut(uid) else {
            return;
        };
        q.rejected_by = rejected_by;
        if q.moved_in_flight {
            let p = self.after_backoff(uid, now);
            self.place(uid, p);
        } else {
            self.place(uid, Place::Unschedulable);
            if let Some(q) = self.pods.get_mut(uid) {
                q.unschedulable_since = Some(now);
            }
        }
    }

    /// Scheduling or binding failed for another reason: retry after back-off.
    pub fn error(&mut self, uid: &str, now: Instant) {
        let p = self.after_backoff(uid, now);
        self.place(uid, p);
    }

    /// The pod is bound (or gone): it leaves the queue.
    pub fn done(&mut self, uid: &str) {
        self.delete(uid);
    }

    /// Moves the unschedulable pods this event may help.
    pub fn on_event(&mut self, event: ClusterEvent, now: Instant) -> usize {
        let mut moved = Vec::new();
        for uid in &self.held {
            let Some(q) = self.pods.get_mut(uid) else {
                continue;
            };
            if !event.may_help(&q.rejected_by) {
                continue;
            }
            match q.place {
                Place::Unschedulable => moved.push(uid.clone()),
                Place::InFlight => q.moved_in_flight = true,
                _ => {}
            }
        }
        for uid in &moved {
            let p = self.after_backoff(uid, now);
            self.place(uid, p);
        }
        moved.len()
    }

    /// Moves pods whose back-off ended, and pods unschedulable for too long.
    pub fn flush(&mut self, now: Instant) {
        while let Some((t, _, uid)) = self.backoff.first().cloned() {
            if t > now {
                break;
            }
            self.place(&uid, Place::Active);
        }
        let stale: Vec<String> = self
            .held
            .iter()
            .filter(|uid| {
                self.pods
                    .get(*uid)
                    .and_then(|q| q.unschedulable_since)
                    .is_some_and(|t| now.duration_since(t) >= MAX_IN_UNSCHEDULABLE)
            })
            .cloned()
            .collect();
        for uid in stale {
            self.place(&uid, Place::Active);
        }
    }

    /// When the next back-off ends.
    pub fn next_backoff(&self) -> Option<Instant> {
        self.backoff.first().map(|(t, _, _)| *t)
    }

    /// Pending pods by UID (for preemption's nominated pods).
    pub fn get(&self, uid: &str) -> Option<&QueuedPod> {
        self.pods.get(uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(uid: &str, priority: i32) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                name: Some(uid.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                priority: Some(priority),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn q() -> SchedulingQueue {
        SchedulingQueue::new(Duration::from_secs(1), Duration::from_secs(10))
    }

    fn uid(p: Option<QueuedPod>) -> Option<String> {
        p.map(|q| uid_of(&q.pod))
    }

    #[test]
    fn higher_priority_first_then_arrival_order() {
        let mut queue = q();
        let now = Instant::now();
        queue.add(pod("low", 0));
        queue.add(pod("high", 1000));
        queue.add(pod("low2", 0));
        assert_eq!(uid(queue.pop(now)).as_deref(), Some("high"));
        assert_eq!(uid(queue.pop(now)).as_deref(), Some("low"));
        assert_eq!(uid(queue.pop(now)).as_deref(), Some("low2"));
        assert!(queue.pop(now).is_none());
    }

    #[test]
    fn only_a_relevant_event_moves_an_unschedulable_pod_and_back_off_applies() {
        let mut queue = q();
        let t0 = Instant::now();
        queue.add(pod("tainted", 0));
        queue.pop(t0).unwrap();
        queue.unschedulable("tainted", vec![Plugin::TaintToleration], t0);
        assert_eq!(queue.on_event(ClusterEvent::AssignedPodDelete, t0), 0);
        assert_eq!(queue.on_event(ClusterEvent::NodeLabelChange, t0), 0);
        assert!(queue.pop(t0).is_none());
        // Untainted within the back-off: it waits out the second.
        assert_eq!(queue.on_event(ClusterEvent::NodeTaintChange, t0), 1);
        assert!(queue.pop(t0).is_none());
        assert_eq!(queue.next_backoff(), Some(t0 + Duration::from_secs(1)));
        queue.flush(t0 + Duration::from_secs(1));
        assert_eq!(uid(queue.pop(t0)).as_deref(), Some("tainted"));
    }

    #[test]
    fn back_off_doubles_up_to_the_maximum() {
        let queue = q();
        let secs: Vec<u64> = (1..=6)
            .map(|a| queue.backoff_duration(a).as_secs())
            .collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn an_event_during_the_cycle_is_not_lost() {
        let mut queue = q();
        let t0 = Instant::now();
        queue.add(pod("p", 0));
        queue.pop(t0).unwrap();
        queue.on_event(ClusterEvent::NodeAdd, t0);
        queue.unschedulable("p", vec![Plugin::NodeResourcesFit], t0);
        queue.flush(t0 + Duration::from_secs(1));
        assert_eq!(uid(queue.pop(t0)).as_deref(), Some("p"));
    }

    #[test]
    fn a_status_update_does_not_retry_but_a_spec_change_does() {
        let mut queue = q();
        let t0 = Instant::now();
        queue.add(pod("p", 0));
        queue.pop(t0).unwrap();
        queue.unschedulable("p", vec![Plugin::TaintToleration], t0);
        let mut status_only = (*pod("p", 0)).clone();
        status_only.status = Some(Default::default());
        queue.update(Arc::new(status_only), t0 + Duration::from_secs(5));
        assert!(queue.pop(t0 + Duration::from_secs(5)).is_none());
        let mut tolerant = (*pod("p", 0)).clone();
        tolerant.spec.as_mut().unwrap().tolerations = Some(vec![Default::default()]);
        queue.update(Arc::new(tolerant), t0 + Duration::from_secs(5));
        assert!(queue.pop(t0 + Duration::from_secs(5)).is_some());
    }

    #[test]
    fn pods_left_unschedulable_are_retried_after_five_minutes() {
        let mut queue = q();
        let t0 = Instant::now();
        queue.add(pod("p", 0));
        queue.pop(t0).unwrap();
        queue.unschedulable("p", vec![Plugin::NodeAffinity], t0);
        queue.flush(t0 + Duration::from_secs(60));
        assert!(queue.pop(t0).is_none());
        queue.flush(t0 + MAX_IN_UNSCHEDULABLE);
        assert!(queue.pop(t0).is_some());
    }
}
