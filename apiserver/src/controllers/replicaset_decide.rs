//! The ReplicaSet controller's decisions, as pure functions over the
//! cached world (`pkg/controller/replicaset`, `controller_utils.go`):
//! which pods it owns, adopts or releases, how many to create in which
//! batches, which to delete first, and the replica counts of its status.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// `BurstReplicas`: at most this many creations or deletions per sync.
pub const BURST_REPLICAS: usize = 500;
/// `SlowStartInitialBatchSize`.
const SLOW_START_INITIAL_BATCH: usize = 1;
/// `controller.kubernetes.io/pod-deletion-cost`.
const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// The controller reference of an object, if any (`metav1.GetControllerOf`).
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// `FilterActivePods`: not finished and not being deleted.
pub fn is_active(p: &Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed")) && p.metadata.deletion_timestamp.is_none()
}

/// When the pod's Ready condition became True, if it is True.
pub fn ready_since(p: &Pod) -> Option<Option<jiff::Timestamp>> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

pub fn is_ready(p: &Pod) -> bool {
    ready_since(p).is_some()
}

/// `IsPodAvailable`: ready for at least `min_ready_seconds`.
pub fn is_available(p: &Pod, min_ready_seconds: i32, now: jiff::Timestamp) -> bool {
    match ready_since(p) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(t)) => now.as_second() - t.as_second() >= i64::from(min_ready_seconds),
    }
}

/// How long until the first ready-but-not-yet-available pod becomes
/// available, so the controller looks again then.
pub fn next_available_in(
    pods: &[Arc<Pod>],
    min_ready_seconds: i32,
    now: jiff::Timestamp,
) -> Option<std::time::Duration> {
    if min_ready_seconds <= 0 {
        return None;
    }
    pods.iter()
        .filter(|p| !is_available(p, min_ready_seconds, now))
        .filter_map(|p| ready_since(p).flatten())
        .map(|t| t.as_second() + i64::from(min_ready_seconds) - now.as_second())
        .min()
        .map(|s| std::time::Duration::from_secs(s.max(0) as u64 + 1))
}

/// What a controller does with the objects of its namespace that its
/// selector may cover (`ClaimPods`, `ClaimReplicaSets`).
#[derive(Debug)]
pub struct Claims<T> {
    /// Objects it controls whose labels still match (adopted ones included).
    pub owned: Vec<Arc<T>>,
    /// Orphans that match: to be given this controller's reference.
    pub adopt: Vec<Arc<T>>,
    /// Objects it controls whose labels stopped matching: to be let go.
    pub release: Vec<Arc<T>>,
}

impl<T> Default for Claims<T> {
    fn default() -> Self {
        Claims {
            owned: Vec::new(),
            adopt: Vec::new(),
            release: Vec::new(),
        }
    }
}

/// `owner_uid` is the controller's UID; `selects` its selector;
/// `deleting` whether it is being deleted (it then adopts and releases
/// nothing).
pub fn claim<'a, T: kube::Resource + 'a>(
    objects: impl IntoIterator<Item = &'a Arc<T>>,
    owner_uid: &str,
    selects: impl Fn(&BTreeMap<String, String>) -> bool,
    deleting: bool,
) -> Claims<T> {
    let mut c = Claims::default();
    let empty = BTreeMap::new();
    for obj in objects {
        let meta = obj.meta();
        let labels = meta.labels.as_ref().unwrap_or(&empty);
        let matches = selects(labels);
        match controller_of(meta) {
            Some(r) if r.uid != owner_uid => {}
            Some(_) if matches => c.owned.push(obj.clone()),
            Some(_) if !deleting => c.release.push(obj.clone()),
            Some(_) => {}
            None if deleting || meta.deletion_timestamp.is_some() || !matches => {}
            None => {
                c.adopt.push(obj.clone());
                c.owned.push(obj.clone());
            }
        }
    }
    c
}

/// `slowStartBatch`: create in batches of 1, 2, 4, ... so a template that
/// cannot work fails once, not `count` times.
pub fn slow_start_batches(count: usize) -> Vec<usize> {
    let mut batches = Vec::new();
    let (mut remaining, mut size) = (count, SLOW_START_INITIAL_BATCH);
    while remaining > 0 {
        let b = size.min(remaining);
        batches.push(b);
        remaining -= b;
        size *= 2;
    }
    batches
}

fn phase_rank(p: &Pod) -> u8 {
    match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") => 0,
        Some("Running") => 2,
        _ => 1,
    }
}

fn max_restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0)
}

fn deletion_cost(p: &Pod) -> i64 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DELETION_COST))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn node_of(p: &Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// `getPodsToDelete`: the `n` pods to delete first, ranked as
/// `ActivePodsWithRanks` ranks them: unscheduled before scheduled, pending
/// before unknown before running, not ready before ready, lower deletion
/// cost first, pods doubled up on a node (counting `related` pods of
/// sibling ReplicaSets) first, ready for less time first, more restarts
/// first, newer first.
pub fn pods_to_delete(active: &[Arc<Pod>], related: &[Arc<Pod>], n: usize) -> Vec<Arc<Pod>> {
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for p in related.iter().filter(|p| is_active(p)) {
        *per_node.entry(node_of(p)).or_default() += 1;
    }
    let rank = |p: &Pod| {
        if node_of(p).is_empty() {
            0
        } else {
            per_node.get(node_of(p)).copied().unwrap_or(0)
        }
    };
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let mut ranked: Vec<&Arc<Pod>> = active.iter().collect();
    ranked.sort_by(|a, b| {
        let assigned = |p: &Pod| !node_of(p).is_empty();
        assigned(a)
            .cmp(&assigned(b))
            .then(phase_rank(a).cmp(&phase_rank(b)))
            .then(is_ready(a).cmp(&is_ready(b)))
            .then(deletion_cost(a).cmp(&deletion_cost(b)))
            .then(rank(b).cmp(&rank(a)))
            .then_with(
                || match (ready_since(a).flatten(), ready_since(b).flatten()) {
                    // Ready more recently (less time) goes first.
                    (Some(x), Some(y)) => y.cmp(&x),
                    _ => std::cmp::Ordering::Equal,
                },
            )
            .then(max_restarts(b).cmp(&max_restarts(a)))
            .then_with(|| match (created(a), created(b)) {
                (None, Some(_)) => std::cmp::Ordering::Less,
                (Some(_), None) => std::cmp::Ordering::Greater,
                (x, y) => y.cmp(&x),
            })
    });
    ranked.into_iter().take(n).cloned().collect()
}

/// A pod for `template`, as `GetPodFromTemplate` makes it: the template's
/// labels, annotations and spec, named `<prefix><5 random chars>` by the
/// apiserver, controlled by `owner`.
pub fn pod_from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    name_prefix: &str,
    owner: OwnerReference,
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    // Room for the random suffix within a 63-character name.
    let mut prefix = format!("{name_prefix}-");
    if prefix.len() > 58 {
        prefix.truncate(58);
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(prefix),
            namespace: Some(namespace.to_owned()),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// The owner reference a controller puts on what it creates.
pub fn controller_ref(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The counts of a ReplicaSet's status (`calculateStatus`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaCounts {
    pub replicas: i32,
    pub fully_labeled: i32,
    pub ready: i32,
    pub available: i32,
}

/// Counts over the active pods a controller owns; `fully labeled` pods
/// carry every label of the template.
pub fn count(
    active_owned: &[Arc<Pod>],
    template_labels: &BTreeMap<String, String>,
    min_ready_seconds: i32,
    now: jiff::Timestamp,
) -> ReplicaCounts {
    let mut c = ReplicaCounts {
        replicas: active_owned.len() as i32,
        ..Default::default()
    };
    for p in active_owned {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        if template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            c.fully_labeled += 1;
        }
        if is_ready(p) {
            c.ready += 1;
            if is_available(p, min_ready_seconds, now) {
                c.available += 1;
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Arc<Pod> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn named(name: &str, extra: serde_json::Value) -> Arc<Pod> {
        let mut v = json!({"metadata": {"name": name, "labels": {"app": "web"}}});
        merge(&mut v, extra);
        pod(v)
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn owned_by(uid: &str) -> serde_json::Value {
        json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": uid, "controller": true}]}})
    }

    fn app_web(l: &BTreeMap<String, String>) -> bool {
        l.get("app").map(String::as_str) == Some("web")
    }

    #[test]
    fn claims_adopt_orphans_release_mismatches_and_leave_others_alone() {
        let mine = named("mine", owned_by("rs-1"));
        let theirs = named("theirs", owned_by("rs-2"));
        let orphan = named("orphan", json!({}));
        let mut relabeled = named("relabeled", owned_by("rs-1"));
        Arc::make_mut(&mut relabeled).metadata.labels =
            Some([("app".into(), "debug".into())].into());
        let unrelated = pod(json!({"metadata": {"name": "db", "labels": {"app": "db"}}}));
        let pods = [mine, theirs, orphan, relabeled, unrelated];
        let c = claim(&pods, "rs-1", app_web, false);
        let names = |v: &[Arc<Pod>]| -> Vec<String> {
            v.iter().map(|p| p.metadata.name.clone().unwrap()).collect()
        };
        assert_eq!(names(&c.owned), ["mine", "orphan"]);
        assert_eq!(names(&c.adopt), ["orphan"]);
        assert_eq!(names(&c.release), ["relabeled"]);
        let c = claim(&pods, "rs-1", app_web, true);
        assert!(c.adopt.is_empty() && c.release.is_empty());
    }

    #[test]
    fn slow_start_doubles() {
        assert_eq!(slow_start_batches(0), Vec::<usize>::new());
        assert_eq!(slow_start_batches(1), [1]);
        assert_eq!(slow_start_batches(10), [1, 2, 4, 3]);
        assert_eq!(slow_start_batches(500).len(), 9);
    }

    #[test]
    fn victims_are_unscheduled_pending_unready_and_new_first() {
        let ready = json!({"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"});
        let running_ready = named(
            "running-ready",
            json!({"spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Running", "conditions": [ready]},
            "metadata": {"creationTimestamp": "2024-01-01T00:00:00Z"}}),
        );
        let running_unready = named(
            "running-unready",
            json!({"spec": {"nodeName": "n2", "containers": []},
            "status": {"phase": "Running"}, "metadata": {"creationTimestamp": "2024-01-01T00:00:00Z"}}),
        );
        let pending = named(
            "pending",
            json!({"spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Pending"}, "metadata": {"creationTimestamp": "2024-01-01T00:00:00Z"}}),
        );
        let unscheduled_old = named(
            "unscheduled-old",
            json!({"status": {"phase": "Pending"},
            "metadata": {"creationTimestamp": "2024-01-01T00:00:00Z"}}),
        );
        let unscheduled_new = named(
            "unscheduled-new",
            json!({"status": {"phase": "Pending"},
            "metadata": {"creationTimestamp": "2024-06-01T00:00:00Z"}}),
        );
        let all = vec![
            running_ready,
            running_unready,
            pending,
            unscheduled_old,
            unscheduled_new,
        ];
        let order: Vec<String> = pods_to_delete(&all, &all, 5)
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            order,
            [
                "unscheduled-new",
                "unscheduled-old",
                "pending",
                "running-unready",
                "running-ready"
            ]
        );
        assert_eq!(pods_to_delete(&all, &all, 2).len(), 2);
    }

    #[test]
    fn doubled_up_pods_go_before_lone_ones() {
        let on = |name: &str, node: &str| {
            named(
                name,
                json!({"spec": {"nodeName": node, "containers": []}, "status": {"phase": "Running"},
                "metadata": {"creationTimestamp": "2024-01-01T00:00:00Z"}}),
            )
        };
        let (a, b, c) = (on("a", "n1"), on("b", "n1"), on("c", "n2"));
        let all = vec![c.clone(), a.clone(), b.clone()];
        let first = &pods_to_delete(&all, &all, 1)[0];
        assert_ne!(first.metadata.name.as_deref(), Some("c"));
    }

    #[test]
    fn counts_and_availability() {
        let now = jiff::Timestamp::now();
        let since = |secs: i64| {
            json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True",
                "lastTransitionTime": jiff::Timestamp::from_second(now.as_second() - secs).unwrap().to_string()}]}})
        };
        let pods = vec![
            named("a", since(100)),
            named("b", since(2)),
            named("c", json!({"metadata": {"labels": {"extra": "x"}}})),
        ];
        let labels: BTreeMap<String, String> = [("app".into(), "web".into())].into();
        let c = count(&pods, &labels, 10, now);
        assert_eq!(
            c,
            ReplicaCounts {
                replicas: 3,
                fully_labeled: 3,
                ready: 2,
                available: 1
            }
        );
        let wait = next_available_in(&pods, 10, now).unwrap();
        assert!(wait.as_secs() >= 8 && wait.as_secs() <= 9, "{wait:?}");
        assert_eq!(count(&pods, &labels, 0, now).available, 2);
    }

    #[test]
    fn pods_from_templates_carry_labels_and_a_controller_reference() {
        let t: PodTemplateSpec = serde_json::from_value(
            json!({"metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
        )
        .unwrap();
        let owner_meta = ObjectMeta {
            name: Some("web-5d4f".into()),
            uid: Some("u1".into()),
            ..Default::default()
        };
        let p = pod_from_template(
            &t,
            "dev",
            "web-5d4f",
            controller_ref("apps/v1", "ReplicaSet", &owner_meta),
        );
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-5d4f-"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("dev"));
        assert_eq!(
            p.metadata.labels,
            Some([("app".into(), "web".into())].into())
        );
        let r = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                r.kind.as_str(),
                r.uid.as_str(),
                r.controller,
                r.block_owner_deletion
            ),
            ("ReplicaSet", "u1", Some(true), Some(true))
        );
    }
}
