//! The scheduler's cache (kube-scheduler's `internal/cache`): nodes with
//! the pods placed on them, fed by the watches, plus *assumed* pods — those
//! this scheduler chose a node for but whose binding the watch hasn't shown
//! yet. Counting them keeps a burst of pods from overcommitting a node
//! before the watch catches up.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use super::node_info::{NodeInfo, PodInfo};
use super::plugins::Snapshot;
use super::plugins::volume_binding::VolumeObjects;
use super::queue::ClusterEvent;
use super::workload_selectors::WorkloadSelectors;

#[derive(Default)]
pub struct Cache {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    /// Placed pods (confirmed or assumed): UID → node name.
    pod_node: HashMap<String, String>,
    assumed: HashSet<String>,
    /// Pods bound to nodes the cache doesn't know (yet).
    orphans: HashMap<String, Vec<PodInfo>>,
    pub namespace_labels: HashMap<String, BTreeMap<String, String>>,
    pub workloads: WorkloadSelectors,
    /// PodDisruptionBudgets by `namespace/name`, weighed by preemption.
    pub budgets: BTreeMap<String, k8s_openapi::api::policy::v1::PodDisruptionBudget>,
    /// Claims, volumes and classes, for VolumeBinding.
    pub volumes: VolumeObjects,
}

/// Whether a pod holds resources on its node: bound and not finished.
pub fn is_placed(pod: &Pod) -> bool {
    let bound = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    bound && !matches!(phase, Some("Succeeded") | Some("Failed"))
}

impl Cache {
    pub fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            nodes: &self.nodes,
            namespace_labels: &self.namespace_labels,
            workloads: &self.workloads,
            volumes: &self.volumes,
        }
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|i| &self.nodes[*i])
    }

    /// Adds or replaces a node; the events it means for pending pods.
    pub fn upsert_node(&mut self, node: Arc<Node>) -> Vec<ClusterEvent> {
        let name = node.metadata.name.clone().unwrap_or_default();
        if let Some(&i) = self.index.get(&name) {
            let old = self.nodes[i].node.clone();
            self.nodes[i].set_node(node.clone());
            return node_changes(&old, &node);
        }
        let mut info = NodeInfo::new(node);
        for p in self.orphans.remove(&name).unwrap_or_default() {
            info.add_pod(p);
        }
        self.index.insert(name, self.nodes.len());
        self.nodes.push(info);
        vec![ClusterEvent::NodeAdd]
    }

    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else {
            return;
        };
        let info = self.nodes.swap_remove(i);
        if i < self.nodes.len() {
            self.index.insert(self.nodes[i].name.clone(), i);
        }
        // Its pods stay known, waiting for the node to come back.
        if !info.pods.is_empty() {
            self.orphans.insert(info.name.clone(), info.pods);
        }
    }

    /// The names of the nodes now known (for a relist's clean-up).
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    fn attach(&mut self, node: &str, p: PodInfo) {
        self.pod_node.insert(p.uid.clone(), node.to_owned());
        match self.index.get(node) {
            Some(&i) => self.nodes[i].add_pod(p),
            None => self.orphans.entry(node.to_owned()).or_default().push(p),
        }
    }

    fn detach(&mut self, uid: &str) -> Option<PodInfo> {
        let node = self.pod_node.remove(uid)?;
        match self.index.get(&node) {
            Some(&i) => self.nodes[i].remove_pod(uid),
            None => {
                let list = self.orphans.get_mut(&node)?;
                let at = list.iter().position(|p| p.uid == uid)?;
                Some(list.swap_remove(at))
            }
        }
    }

    /// A pod as the watch shows it: placed ones are (re)counted on their
    /// node, confirming an assumption; finished or unbound ones leave.
    pub fn upsert_pod(&mut self, pod: Arc<Pod>) -> Option<ClusterEvent> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if !is_placed(&pod) {
            return self.remove_pod(&uid);
        }
        self.assumed.remove(&uid);
        let info = PodInfo::new(pod);
        let node = info.node_name().to_owned();
        let old = self.detach(&uid);
        let labels_changed = old.as_ref().is_none_or(|o| o.labels() != info.labels());
        self.attach(&node, info);
        labels_changed.then_some(ClusterEvent::AssignedPodAddOrUpdate)
    }

    /// A placed pod went away.
    pub fn remove_pod(&mut self, uid: &str) -> Option<ClusterEvent> {
        self.assumed.remove(uid);
        self.detach(uid).map(|_| ClusterEvent::AssignedPodDelete)
    }

    /// Counts `pod` on `node` before the binding is seen.
    pub fn assume(&mut self, pod: &Pod, node: &str) {
        let mut placed = pod.clone();
        placed.spec.get_or_insert_with(Default::default).node_name = Some(node.to_owned());
        let info = PodInfo::new(Arc::new(placed));
        let uid = info.uid.clone();
        self.detach(&uid);
        self.attach(node, info);
        self.assumed.insert(uid);
    }

    /// The binding failed: the assumed pod no longer counts.
    pub fn forget(&mut self, uid: &str) {
        if self.assumed.remove(uid) {
            self.detach(uid);
        }
    }

    pub fn is_assumed(&self, uid: &str) -> bool {
        self.assumed.contains(uid)
    }

    /// UIDs of every placed pod (for a relist's clean-up).
    pub fn placed_uids(&self) -> Vec<String> {
        self.pod_node.keys().cloned().collect()
    }
}

/// What changed between two versions of a node, as scheduling events.
fn node_changes(old: &Node, new: &Node) -> Vec<ClusterEvent> {
    let mut events = Vec::new();
    if old.metadata.labels != new.metadata.labels {
        events.push(ClusterEvent::NodeLabelChange);
    }
    let spec = |n: &Node| n.spec.clone().unwrap_or_default();
    let (os, ns) = (spec(old), spec(new));
    if os.taints != ns.taints {
        events.push(ClusterEvent::NodeTaintChange);
    }
    if os.unschedulable != ns.unschedulable {
        events.push(ClusterEvent::NodeSpecUnschedulableChange);
    }
    let alloc = |n: &Node| n.status.as_ref().and_then(|s| s.allocatable.clone());
    if alloc(old) != alloc(new) {
        events.push(ClusterEvent::NodeAllocatableChange);
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::*;

    #[test]
    fn assumed_pods_count_until_the_watch_confirms_or_binding_fails() {
        let mut cache = Cache::default();
        cache.upsert_node(Arc::new(node("n1", "1", "1Gi", &[])));
        let p = pod("p", "600m", "");
        cache.assume(&p, "n1");
        assert_eq!(cache.node("n1").unwrap().requested.milli_cpu, 600);
        assert!(cache.is_assumed("uid-p"));
        // The watch shows the binding: still counted once.
        let mut bound = p.clone();
        bound.spec.as_mut().unwrap().node_name = Some("n1".into());
        cache.upsert_pod(Arc::new(bound));
        assert!(!cache.is_assumed("uid-p"));
        assert_eq!(cache.node("n1").unwrap().requested.milli_cpu, 600);
        assert_eq!(cache.node("n1").unwrap().pods.len(), 1);

        cache.assume(&pod("q", "300m", ""), "n1");
        cache.forget("uid-q");
        assert_eq!(cache.node("n1").unwrap().requested.milli_cpu, 600);
        assert_eq!(
            cache.remove_pod("uid-p"),
            Some(ClusterEvent::AssignedPodDelete)
        );
        assert_eq!(cache.node("n1").unwrap().requested.milli_cpu, 0);
    }

    #[test]
    fn node_updates_say_what_changed() {
        let mut cache = Cache::default();
        let n = node("n1", "1", "1Gi", &[]);
        assert_eq!(
            cache.upsert_node(Arc::new(n.clone())),
            vec![ClusterEvent::NodeAdd]
        );
        let mut labelled = n.clone();
        labelled
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("size".into(), "Large".into());
        assert_eq!(
            cache.upsert_node(Arc::new(labelled.clone())),
            vec![ClusterEvent::NodeLabelChange]
        );
        let mut cordoned = labelled;
        cordoned.spec.as_mut().unwrap().unschedulable = Some(true);
        assert_eq!(
            cache.upsert_node(Arc::new(cordoned)),
            vec![ClusterEvent::NodeSpecUnschedulableChange]
        );
    }

    #[test]
    fn pods_on_unknown_nodes_count_once_the_node_appears() {
        let mut cache = Cache::default();
        cache.upsert_pod(Arc::new({
            let mut p = pod("p", "1", "");
            p.spec.as_mut().unwrap().node_name = Some("late".into());
            p
        }));
        cache.upsert_node(Arc::new(node("late", "2", "1Gi", &[])));
        assert_eq!(cache.node("late").unwrap().requested.milli_cpu, 1000);
        cache.remove_node("late");
        assert!(cache.node("late").is_none());
        assert_eq!(
            cache.remove_pod("uid-p"),
            Some(ClusterEvent::AssignedPodDelete)
        );
    }
}
