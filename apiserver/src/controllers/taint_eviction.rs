//! The taint eviction controller (kube-controller-manager's
//! `taint-eviction-controller`, formerly the node lifecycle controller's
//! taint manager): a pod on a node with a `NoExecute` taint it does not
//! tolerate is deleted at once; one that tolerates every such taint only
//! for a while (`tolerationSeconds`) is deleted when the shortest of those
//! runs out, counted from when the controller first saw it tainted; a pod
//! that tolerates them forever stays. Before the delete the pod gets the
//! `DisruptionTarget` condition (`DeletionByTaintManager`), and an event
//! `TaintManagerEviction` "Marking for deletion Pod ns/name" is recorded;
//! a scheduled eviction the taint no longer calls for is cancelled with
//! "Cancelling deletion of Pod ns/name".
//!
//! [`decide`] is the rule, pure; [`run`] keeps the timers on the shared
//! pod and node informers.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use kubelab_rules::taints::{NO_EXECUTE, node_taints, tolerates};
use serde_json::json;
use tokio::time::Instant;

use super::informers::{Change, Informers};
use crate::event_recorder::{EventRecorder, reference};

/// The component its events are recorded as.
pub const COMPONENT: &str = "taint-eviction-controller";
const DELETE_ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum TaintEvictionError {
    #[error("evicting pod {pod}: {source}")]
    Evict {
        pod: String,
        #[source]
        source: kube::Error,
    },
}

/// What the node's `NoExecute` taints mean for a pod on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No `NoExecute` taint, or tolerated forever: nothing scheduled.
    Stay,
    /// A taint is not tolerated: delete now.
    EvictNow,
    /// Every taint is tolerated, the shortest for this long.
    EvictAfter(Duration),
}

/// `processPodOnNode`'s rule: each `NoExecute` taint must be tolerated
/// (by the first toleration that matches it); the shortest
/// `tolerationSeconds` among those used bounds the stay (zero or less:
/// now); none set: forever.
pub fn decide(taints: &[Taint], tolerations: &[Toleration]) -> Verdict {
    let mut shortest: Option<i64> = None;
    let mut any = false;
    for taint in taints.iter().filter(|t| t.effect == NO_EXECUTE) {
        any = true;
        let Some(used) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Verdict::EvictNow;
        };
        if let Some(secs) = used.toleration_seconds {
            shortest = Some(shortest.map_or(secs, |s: i64| s.min(secs)));
        }
    }
    match (any, shortest) {
        (false, _) | (true, None) => Verdict::Stay,
        (true, Some(s)) => Verdict::EvictAfter(Duration::from_secs(s.max(0) as u64)),
    }
}

/// The NoExecute taints of a node (what the controller tracks per node).
pub fn no_execute_taints(node: &Node) -> Vec<Taint> {
    node_taints(node)
        .iter()
        .filter(|t| t.effect == NO_EXECUTE)
        .cloned()
        .collect()
}

type PodKey = (String, String);

/// A pod's eviction: pending until `fire_at`, or done (kept so that later
/// updates of the terminating pod do not evict it again).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Eviction {
    Pending {
        created_at: Instant,
        fire_at: Instant,
    },
    Done,
}

/// The controller's state: taints per node and evictions per pod.
#[derive(Default)]
struct Evictions {
    tainted: HashMap<String, Vec<Taint>>,
    by_pod: HashMap<PodKey, Eviction>,
}

/// What to do after a pod was looked at.
#[derive(Debug, PartialEq)]
enum Step {
    None,
    Evict,
    Cancelled,
}

impl Evictions {
    /// A pod on `node` (its current tolerations) looked at again.
    fn process(
        &mut self,
        key: PodKey,
        node: &str,
        tolerations: &[Toleration],
        now: Instant,
    ) -> Step {
        let taints = self.tainted.get(node).cloned().unwrap_or_default();
        match decide(&taints, tolerations) {
            Verdict::Stay => self.cancel(&key),
            Verdict::EvictNow => match self.by_pod.get(&key) {
                Some(Eviction::Done) => Step::None,
                _ => {
                    self.by_pod.insert(key, Eviction::Done);
                    Step::Evict
                }
            },
            Verdict::EvictAfter(wait) => match self.by_pod.get(&key).copied() {
                Some(Eviction::Done) => Step::None,
                Some(Eviction::Pending { created_at, .. }) => {
                    // Counted from when it was first scheduled.
                    self.by_pod.insert(
                        key,
                        Eviction::Pending {
                            created_at,
                            fire_at: created_at + wait,
                        },
                    );
                    Step::None
                }
                None => {
                    self.by_pod.insert(
                        key,
                        Eviction::Pending {
                            created_at: now,
                            fire_at: now + wait,
                        },
                    );
                    Step::None
                }
            },
        }
    }

    /// Drops the pod's eviction; `Cancelled` if one was pending.
    fn cancel(&mut self, key: &PodKey) -> Step {
        match self.by_pod.remove(key) {
            Some(Eviction::Pending { .. }) => Step::Cancelled,
            _ => Step::None,
        }
    }

    fn next_fire(&self) -> Option<Instant> {
        self.by_pod
            .values()
            .filter_map(|e| match e {
                Eviction::Pending { fire_at, .. } => Some(*fire_at),
                Eviction::Done => None,
            })
            .min()
    }

    /// Pending evictions due by `now`, now marked done.
    fn due(&mut self, now: Instant) -> Vec<PodKey> {
        let due: Vec<PodKey> = self
            .by_pod
            .iter()
            .filter(|(_, e)| matches!(e, Eviction::Pending { fire_at, .. } if *fire_at <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &due {
            self.by_pod.insert(k.clone(), Eviction::Done);
        }
        due
    }
}

fn pod_key(pod: &Pod) -> PodKey {
    (pod.namespace().unwrap_or_default(), pod.name_any())
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

/// Runs the controller on the shared informers until they stop.
pub async fn run(informers: Informers) -> anyhow::Result<()> {
    let client = informers.client();
    let pods = informers.get::<Pod>();
    let nodes = informers.get::<Node>();
    let mut pod_changes = pods.subscribe();
    let mut node_changes = nodes.subscribe();
    pods.synced().await;
    nodes.synced().await;
    let recorder = EventRecorder::new(client.clone(), COMPONENT);
    let mut state = Evictions::default();
    let mut resync = true;
    loop {
        if resync {
            resync = false;
            state.tainted = nodes
                .store
                .state()
                .iter()
                .map(|n| (n.name_any(), no_execute_taints(n)))
                .filter(|(_, t)| !t.is_empty())
                .collect();
            for pod in pods.store.state() {
                handle_pod(&mut state, &pod, &client, &recorder);
            }
        }
        let sleep_until = state
            .next_fire()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            change = node_changes.recv() => match change {
                Ok(Change::Applied(node)) => {
                    let name = node.name_any();
                    let taints = no_execute_taints(&node);
                    if state.tainted.get(&name).cloned().unwrap_or_default() != taints {
                        if taints.is_empty() {
                            state.tainted.remove(&name);
                        } else {
                            state.tainted.insert(name.clone(), taints);
                        }
                        for pod in pods.store.state().iter().filter(|p| node_name(p) == Some(name.as_str())) {
                            handle_pod(&mut state, pod, &client, &recorder);
                        }
                    }
                }
                Ok(Change::Deleted(node)) => {
                    let name = node.name_any();
                    state.tainted.remove(&name);
                    for pod in pods.store.state().iter().filter(|p| node_name(p) == Some(name.as_str())) {
                        handle_pod(&mut state, pod, &client, &recorder);
                    }
                }
                Ok(Change::Resync) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => resync = true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
            },
            change = pod_changes.recv() => match change {
                Ok(Change::Applied(pod)) => handle_pod(&mut state, &pod, &client, &recorder),
                Ok(Change::Deleted(pod)) => {
                    state.by_pod.remove(&pod_key(&pod));
                }
                Ok(Change::Resync) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => resync = true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = tokio::time::sleep_until(sleep_until) => {
                for key in state.due(Instant::now()) {
                    spawn_eviction(key, &client, &recorder);
                }
            }
        }
    }
}

fn handle_pod(state: &mut Evictions, pod: &Pod, client: &Client, recorder: &EventRecorder) {
    let key = pod_key(pod);
    let step = match node_name(pod) {
        Some(node) if state.tainted.contains_key(node) => {
            state.process(key.clone(), node, tolerations(pod), Instant::now())
        }
        // Not on a NoExecute-tainted node (any more).
        _ => state.cancel(&key),
    };
    match step {
        Step::None => {}
        Step::Evict => spawn_eviction(key, client, recorder),
        Step::Cancelled => recorder.normal(
            reference("v1", "Pod", &pod.metadata),
            "TaintManagerEviction",
            format!("Cancelling deletion of Pod {}/{}", key.0, key.1),
        ),
    }
}

fn spawn_eviction(key: PodKey, client: &Client, recorder: &EventRecorder) {
    let client = client.clone();
    let recorder = recorder.clone();
    tokio::spawn(async move {
        if let Err(e) = evict(&client, &recorder, &key).await {
            tracing::warn!("taint eviction: {e}");
        }
    });
}

/// `deletePodHandler`: the event, the DisruptionTarget condition, the delete.
async fn evict(
    client: &Client,
    recorder: &EventRecorder,
    (ns, name): &PodKey,
) -> Result<(), TaintEvictionError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let err = |source| TaintEvictionError::Evict {
        pod: format!("{ns}/{name}"),
        source,
    };
    tracing::info!(pod = %format!("{ns}/{name}"), "deleting pod: NoExecute taint");
    let Some(pod) = api.get_opt(name).await.map_err(err)? else {
        return Ok(());
    };
    recorder.normal(
        reference("v1", "Pod", &pod.metadata),
        "TaintManagerEviction",
        format!("Marking for deletion Pod {ns}/{name}"),
    );
    let mut last = None;
    for _ in 0..DELETE_ATTEMPTS {
        match add_condition_and_delete(&api, &pod).await {
            Ok(()) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(err(last.expect("an attempt failed")))
}

/// The condition upstream adds before a taint-driven deletion.
pub fn disruption_target(reason: &str, message: &str) -> serde_json::Value {
    json!({
        "type": "DisruptionTarget",
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
            .map(|t| t.to_string())
            .unwrap_or_default(),
    })
}

async fn add_condition_and_delete(api: &Api<Pod>, pod: &Pod) -> Result<(), kube::Error> {
    let name = pod.name_any();
    let has = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter().any(|c| {
                c.type_ == "DisruptionTarget"
                    && c.status == "True"
                    && c.reason.as_deref() == Some("DeletionByTaintManager")
            })
        });
    if !has {
        let patch = json!({
            "metadata": {"uid": pod.metadata.uid},
            "status": {"conditions": [disruption_target(
                "DeletionByTaintManager",
                "Taint manager: deleting due to NoExecute taint",
            )]},
        });
        api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
            .await?;
    }
    api.delete(&name, &DeleteParams::default()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: Some("v".into()),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn toleration(key: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: seconds,
            value: None,
        }
    }

    #[test]
    fn intolerant_pods_go_now_tolerant_ones_after_their_seconds() {
        let taints = [taint("k", "NoExecute"), taint("soft", "NoSchedule")];
        assert_eq!(decide(&taints, &[]), Verdict::EvictNow);
        assert_eq!(decide(&taints, &[toleration("k", None)]), Verdict::Stay);
        assert_eq!(
            decide(&taints, &[toleration("k", Some(3))]),
            Verdict::EvictAfter(Duration::from_secs(3))
        );
        assert_eq!(
            decide(&taints, &[toleration("k", Some(-5))]),
            Verdict::EvictAfter(Duration::ZERO)
        );
        // The shortest of the tolerations used, one per taint.
        let two = [taint("a", "NoExecute"), taint("b", "NoExecute")];
        assert_eq!(
            decide(
                &two,
                &[toleration("a", Some(60)), toleration("b", Some(10))]
            ),
            Verdict::EvictAfter(Duration::from_secs(10))
        );
        assert_eq!(decide(&two, &[toleration("a", None)]), Verdict::EvictNow);
        // NoSchedule taints alone never evict.
        assert_eq!(decide(&[taint("soft", "NoSchedule")], &[]), Verdict::Stay);
    }

    #[test]
    fn a_pending_eviction_counts_from_when_it_was_first_scheduled() {
        let mut e = Evictions::default();
        let t0 = Instant::now();
        let key = ("default".to_owned(), "web".to_owned());
        e.tainted.insert("n1".into(), vec![taint("k", "NoExecute")]);
        let tol = [toleration("k", Some(10))];
        assert_eq!(e.process(key.clone(), "n1", &tol, t0), Step::None);
        assert_eq!(e.next_fire(), Some(t0 + Duration::from_secs(10)));
        // Seen again later: still fires 10 s after the first time.
        e.process(key.clone(), "n1", &tol, t0 + Duration::from_secs(4));
        assert_eq!(e.next_fire(), Some(t0 + Duration::from_secs(10)));
        assert!(e.due(t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(e.due(t0 + Duration::from_secs(10)), [key.clone()]);
        // Done: the terminating pod's updates do not evict it again.
        assert_eq!(e.process(key.clone(), "n1", &tol, t0), Step::None);
        assert_eq!(e.next_fire(), None);
    }

    #[test]
    fn a_taint_removed_in_time_cancels_the_eviction() {
        let mut e = Evictions::default();
        let t0 = Instant::now();
        let key = ("default".to_owned(), "web".to_owned());
        e.tainted.insert("n1".into(), vec![taint("k", "NoExecute")]);
        e.process(key.clone(), "n1", &[toleration("k", Some(10))], t0);
        e.tainted.remove("n1");
        assert_eq!(e.process(key.clone(), "n1", &[], t0), Step::Cancelled);
        assert_eq!(e.cancel(&key), Step::None);
        // An intolerant pod is evicted once.
        e.tainted.insert("n1".into(), vec![taint("k", "NoExecute")]);
        assert_eq!(e.process(key.clone(), "n1", &[], t0), Step::Evict);
        assert_eq!(e.process(key, "n1", &[], t0), Step::None);
    }
}
