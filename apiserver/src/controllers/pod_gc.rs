//! PodGC (kube-controller-manager's `pod-garbage-collector-controller`):
//! force-deletes pods that nothing else will ever remove.
//!
//! - Orphaned pods: bound to a node that no longer exists. A node missing
//!   from the cache is confirmed gone with a live read, after a 40 s
//!   quarantine when it was never seen (it may be too new for the cache),
//!   at once when its deletion was watched. Such pods are marked `Failed`
//!   with the `DisruptionTarget` condition (`DeletionByPodGC`, "PodGC: node
//!   no longer exists") and deleted with a zero grace period.
//! - Terminating pods on a node that is not Ready and carries the
//!   `node.kubernetes.io/out-of-service` taint (its kubelet will not finish
//!   them), and terminating pods that were never scheduled.
//! - Terminated pods (`Succeeded`/`Failed`) beyond
//!   `--terminated-pod-gc-threshold`, evicted ones first, then oldest first.
//!
//! A pass runs every 20 s (`gcCheckPeriod`) over the shared informers'
//! caches, and at once when a node deletion or a pod finishing is watched.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

use super::informers::{Change, Informers};
use super::taint_eviction::disruption_target;

/// kube-controller-manager's `--terminated-pod-gc-threshold` default.
pub const TERMINATED_POD_GC_THRESHOLD: usize = 12500;
/// `gcCheckPeriod`.
const CHECK_PERIOD: Duration = Duration::from_secs(20);
/// How long a node missing from the cache waits before it is checked.
const QUARANTINE: Duration = Duration::from_secs(40);
/// Events close together share one pass.
const DEBOUNCE: Duration = Duration::from_millis(200);
pub const TAINT_OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

#[derive(Debug, Clone, Copy)]
pub struct PodGcOptions {
    /// `--terminated-pod-gc-threshold`; 0 disables the terminated-pod pass.
    pub terminated_pod_gc_threshold: usize,
}

impl Default for PodGcOptions {
    fn default() -> Self {
        Self {
            terminated_pod_gc_threshold: TERMINATED_POD_GC_THRESHOLD,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PodGcError {
    #[error("force-deleting pod {pod}: {source}")]
    Delete {
        pod: String,
        #[source]
        source: kube::Error,
    },
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// `isPodTerminated`: any phase but Pending, Running and Unknown.
pub fn is_terminated(pod: &Pod) -> bool {
    !matches!(phase(pod), "Pending" | "Running" | "Unknown")
}

fn evicted(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted")
}

/// `byEvictionAndCreationTimestamp`: evicted pods first, then the oldest.
fn by_eviction_and_age(a: &Pod, b: &Pod) -> std::cmp::Ordering {
    evicted(b)
        .cmp(&evicted(a))
        .then_with(|| {
            let t = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            t(a).cmp(&t(b))
        })
        .then_with(|| a.name_any().cmp(&b.name_any()))
}

/// `gcTerminated`: the terminated pods over the threshold, in the order
/// they go.
pub fn terminated_over_threshold(pods: &[Arc<Pod>], threshold: usize) -> Vec<Arc<Pod>> {
    if threshold == 0 {
        return Vec::new();
    }
    let mut terminated: Vec<Arc<Pod>> = pods.iter().filter(|p| is_terminated(p)).cloned().collect();
    if terminated.len() <= threshold {
        return Vec::new();
    }
    terminated.sort_by(|a, b| by_eviction_and_age(a, b));
    terminated.truncate(terminated.len() - threshold);
    terminated
}

fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// `gcTerminating`: terminating pods on nodes that are not Ready and out
/// of service; and `gcUnscheduledTerminating`: terminating pods never bound.
pub fn stuck_terminating(pods: &[Arc<Pod>], nodes: &HashMap<String, Arc<Node>>) -> Vec<Arc<Pod>> {
    let mut out: Vec<Arc<Pod>> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
        .filter(|p| match node_name(p) {
            "" => true,
            n => nodes.get(n).is_some_and(|node| {
                !ready(node)
                    && kubelab_rules::taints::node_taints(node)
                        .iter()
                        .any(|t| t.key == TAINT_OUT_OF_SERVICE)
            }),
        })
        .cloned()
        .collect();
    out.sort_by(|a, b| by_eviction_and_age(a, b));
    out
}

/// Nodes pods are bound to that the cache does not know.
pub fn missing_nodes(pods: &[Arc<Pod>], nodes: &HashMap<String, Arc<Node>>) -> HashSet<String> {
    pods.iter()
        .map(|p| node_name(p))
        .filter(|n| !n.is_empty() && !nodes.contains_key(*n))
        .map(str::to_owned)
        .collect()
}

/// Missing nodes and since when (the quarantine); nodes whose deletion was
/// watched need none.
#[derive(Default)]
struct Quarantine {
    since: HashMap<String, Instant>,
    watched_deleted: HashSet<String>,
}

impl Quarantine {
    /// The missing nodes due for a live check.
    fn due(&mut self, missing: &HashSet<String>, now: Instant) -> Vec<String> {
        self.since.retain(|n, _| missing.contains(n));
        self.watched_deleted.retain(|n| missing.contains(n));
        let mut due = Vec::new();
        for n in missing {
            let since = *self.since.entry(n.clone()).or_insert(now);
            if self.watched_deleted.contains(n) || now.duration_since(since) >= QUARANTINE {
                due.push(n.clone());
            }
        }
        due.sort();
        due
    }
}

/// Runs the controller on the shared informers until they stop.
pub async fn run(informers: Informers, opts: PodGcOptions) -> anyhow::Result<()> {
    let client = informers.client();
    let pods = informers.get::<Pod>();
    let nodes = informers.get::<Node>();
    let mut pod_changes = pods.subscribe();
    let mut node_changes = nodes.subscribe();
    pods.synced().await;
    nodes.synced().await;
    let mut quarantine = Quarantine::default();
    let mut tick = tokio::time::interval(CHECK_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending: Option<Instant> = None;
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let debounce = pending.unwrap_or_else(|| Instant::now() + CHECK_PERIOD);
        let pass = tokio::select! {
            _ = tick.tick() => true,
            _ = tokio::time::sleep_until(debounce), if pending.is_some() => true,
            change = node_changes.recv() => {
                match change {
                    Ok(Change::Deleted(node)) => {
                        quarantine.watched_deleted.insert(node.name_any());
                        pending.get_or_insert(Instant::now() + DEBOUNCE);
                    }
                    Err(RecvError::Closed) => return Ok(()),
                    _ => {}
                }
                false
            }
            change = pod_changes.recv() => {
                match change {
                    Ok(Change::Applied(pod)) if is_terminated(&pod) || pod.metadata.deletion_timestamp.is_some() => {
                        pending.get_or_insert(Instant::now() + DEBOUNCE);
                    }
                    Err(RecvError::Closed) => return Ok(()),
                    _ => {}
                }
                false
            }
        };
        if !pass {
            continue;
        }
        pending = None;
        let pod_list = pods.store.state();
        let node_map: HashMap<String, Arc<Node>> = nodes
            .store
            .state()
            .into_iter()
            .map(|n| (n.name_any(), n))
            .collect();
        gc(&client, &pod_list, &node_map, &mut quarantine, opts).await;
    }
}

async fn gc(
    client: &Client,
    pods: &[Arc<Pod>],
    nodes: &HashMap<String, Arc<Node>>,
    quarantine: &mut Quarantine,
    opts: PodGcOptions,
) {
    let over = terminated_over_threshold(pods, opts.terminated_pod_gc_threshold);
    if !over.is_empty() {
        tracing::info!(pods = over.len(), "garbage collecting terminated pods");
    }
    for pod in over {
        force_delete(client, &pod, None).await;
    }
    for pod in stuck_terminating(pods, nodes) {
        tracing::info!(pod = %format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()), "garbage collecting pod that is terminating");
        force_delete(client, &pod, None).await;
    }
    let missing = missing_nodes(pods, nodes);
    let nodes_api: Api<Node> = Api::all(client.clone());
    for node in quarantine.due(&missing, Instant::now()) {
        match nodes_api.get_opt(&node).await {
            Ok(None) => {}
            Ok(Some(_)) => continue,
            Err(e) => {
                tracing::warn!(%node, "podgc: checking whether the node exists: {e}");
                continue;
            }
        }
        for pod in pods.iter().filter(|p| node_name(p) == node) {
            tracing::info!(pod = %format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()), %node, "found orphaned pod assigned to the node, deleting");
            let condition = disruption_target("DeletionByPodGC", "PodGC: node no longer exists");
            force_delete(client, pod, Some(condition)).await;
        }
    }
}

/// `markFailedAndDeletePodWithCondition`: a pod not yet finished is marked
/// Failed (nothing else will, its kubelet is gone) with the condition, then
/// deleted with a zero grace period.
async fn force_delete(client: &Client, pod: &Pod, condition: Option<serde_json::Value>) {
    if let Err(e) = try_force_delete(client, pod, condition).await {
        tracing::warn!("podgc: {e}");
    }
}

async fn try_force_delete(
    client: &Client,
    pod: &Pod,
    condition: Option<serde_json::Value>,
) -> Result<(), PodGcError> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let err = |source| PodGcError::Delete {
        pod: format!("{ns}/{name}"),
        source,
    };
    let ignore_gone = |r: Result<(), kube::Error>| match r {
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        other => other,
    };
    if !matches!(phase(pod), "Succeeded" | "Failed") {
        let mut status = json!({"phase": "Failed"});
        if let Some(c) = condition {
            status["conditions"] = json!([c]);
        }
        let patch = json!({"metadata": {"uid": pod.metadata.uid}, "status": status});
        ignore_gone(
            api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
                .map(|_| ()),
        )
        .map_err(err)?;
    }
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: pod
            .metadata
            .uid
            .clone()
            .map(|uid| kube::api::Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
        ..Default::default()
    };
    ignore_gone(api.delete(&name, &params).await.map(|_| ())).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        NodeCondition, NodeSpec, NodeStatus, PodSpec, PodStatus, Taint,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn pod(name: &str, node: &str, phase: &str, created: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                creation_timestamp: Some(Time(jiff::Timestamp::from_second(created).unwrap())),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter().map(|p| p.name_any()).collect()
    }

    #[test]
    fn terminated_pods_beyond_the_threshold_go_evicted_then_oldest_first() {
        let mut evicted = pod("evicted", "n1", "Failed", 300);
        evicted.status.as_mut().unwrap().reason = Some("Evicted".into());
        let pods: Vec<Arc<Pod>> = vec![
            Arc::new(pod("new-done", "n1", "Succeeded", 200)),
            Arc::new(pod("old-done", "n1", "Succeeded", 100)),
            Arc::new(pod("running", "n1", "Running", 50)),
            Arc::new(evicted),
        ];
        assert_eq!(
            names(&terminated_over_threshold(&pods, 1)),
            ["evicted", "old-done"]
        );
        assert!(terminated_over_threshold(&pods, 3).is_empty());
        assert!(
            terminated_over_threshold(&pods, 0).is_empty(),
            "0 disables it"
        );
    }

    fn node(name: &str, ready: &str, out_of_service: bool) -> (String, Arc<Node>) {
        let taints = out_of_service.then(|| {
            vec![Taint {
                key: TAINT_OUT_OF_SERVICE.into(),
                value: Some("nodeshutdown".into()),
                effect: "NoExecute".into(),
                time_added: None,
            }]
        });
        (
            name.into(),
            Arc::new(Node {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                spec: Some(NodeSpec {
                    taints,
                    ..Default::default()
                }),
                status: Some(NodeStatus {
                    conditions: Some(vec![NodeCondition {
                        type_: "Ready".into(),
                        status: ready.into(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            }),
        )
    }

    #[test]
    fn terminating_pods_are_forced_off_out_of_service_nodes_only() {
        let nodes: HashMap<String, Arc<Node>> = [
            node("down", "Unknown", true),
            node("unreachable", "Unknown", false),
            node("up", "True", true),
        ]
        .into_iter()
        .collect();
        let terminating = |name: &str, n: &str| {
            let mut p = pod(name, n, "Running", 1);
            p.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
            Arc::new(p)
        };
        let pods = vec![
            terminating("a", "down"),
            terminating("b", "unreachable"),
            terminating("c", "up"),
            terminating("d", ""),
            Arc::new(pod("e", "down", "Running", 1)),
        ];
        assert_eq!(names(&stuck_terminating(&pods, &nodes)), ["a", "d"]);
        let mut missing: Vec<String> = missing_nodes(
            &[Arc::new(pod("x", "gone", "Running", 1)), pods[0].clone()],
            &nodes,
        )
        .into_iter()
        .collect();
        missing.sort();
        assert_eq!(missing, ["gone"]);
    }

    #[test]
    fn unknown_nodes_wait_out_the_quarantine_unless_their_deletion_was_seen() {
        let mut q = Quarantine::default();
        let t0 = Instant::now();
        let missing: HashSet<String> = ["new".to_owned(), "deleted".to_owned()].into();
        q.watched_deleted.insert("deleted".into());
        assert_eq!(q.due(&missing, t0), ["deleted"]);
        assert_eq!(q.due(&missing, t0 + QUARANTINE), ["deleted", "new"]);
        // A node that shows up again leaves the quarantine.
        assert!(q.due(&HashSet::new(), t0).is_empty());
        assert!(q.since.is_empty());
    }
}
