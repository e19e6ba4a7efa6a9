//! One scheduling cycle, as kube-scheduler's framework runs it: PreFilter
//! state once, Filter over nodes (from a rotating start, stopping once
//! enough feasible nodes are found), Score and NormalizeScore per plugin,
//! weights, and the highest total with ties broken at random. Pure: the
//! snapshot in, a node name or a [`FitError`] out.

use std::collections::{BTreeMap, HashMap};

use super::node_info::{NodeInfo, PodInfo};
use super::plugins::node_resources::ScoringStrategy;
use super::plugins::pod_topology_spread::SpreadDefaults;
use super::plugins::{
    Code, CycleState, FilterResult, Plugin, Rejection, Snapshot, image_locality,
    inter_pod_affinity, node_affinity, node_name, node_ports, node_resources, node_unschedulable,
    pod_topology_spread, taint_toleration, volume_binding,
};

/// A profile's plugins and their settings, resolved from the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub scheduler_name: String,
    /// Filters in the order they run.
    pub filters: Vec<Plugin>,
    /// Score plugins and their weights.
    pub scores: Vec<(Plugin, i64)>,
    /// Whether DefaultPreemption (PostFilter) is enabled.
    pub preemption: bool,
    pub fit_strategy: ScoringStrategy,
    pub hard_pod_affinity_weight: i64,
    /// `percentageOfNodesToScore`; `None` or 0: adaptive.
    pub percentage_of_nodes_to_score: Option<i32>,
    /// PodTopologySpread's constraints for pods that have none.
    pub spread_defaults: SpreadDefaults,
}

impl Profile {
    /// kube-scheduler's default plugins and weights.
    pub fn default_named(name: &str) -> Self {
        Profile {
            scheduler_name: name.to_owned(),
            filters: vec![
                Plugin::NodeUnschedulable,
                Plugin::NodeName,
                Plugin::TaintToleration,
                Plugin::NodeAffinity,
                Plugin::NodePorts,
                Plugin::NodeResourcesFit,
                Plugin::VolumeBinding,
                Plugin::PodTopologySpread,
                Plugin::InterPodAffinity,
            ],
            scores: vec![
                (Plugin::TaintToleration, 3),
                (Plugin::NodeAffinity, 2),
                (Plugin::PodTopologySpread, 2),
                (Plugin::InterPodAffinity, 2),
                (Plugin::NodeResourcesFit, 1),
                (Plugin::NodeResourcesBalancedAllocation, 1),
                (Plugin::ImageLocality, 1),
            ],
            preemption: true,
            fit_strategy: ScoringStrategy::default(),
            hard_pod_affinity_weight: 1,
            percentage_of_nodes_to_score: None,
            spread_defaults: SpreadDefaults::default(),
        }
    }

    fn has_filter(&self, p: Plugin) -> bool {
        self.filters.contains(&p)
    }
}

/// `numFeasibleNodesToFind`: every node below 100; above, a share that
/// shrinks with cluster size (50% − 1% per 125 nodes, at least 5%), and
/// never fewer than 100.
pub fn num_feasible_nodes_to_find(percentage: Option<i32>, all: usize) -> usize {
    const MIN_FEASIBLE: usize = 100;
    const MIN_PERCENTAGE: i64 = 5;
    if all < MIN_FEASIBLE {
        return all;
    }
    let pct = match percentage {
        Some(p) if p > 0 => i64::from(p),
        _ => (50 - all as i64 / 125).max(MIN_PERCENTAGE),
    };
    if pct >= 100 {
        return all;
    }
    ((all as i64 * pct / 100) as usize).max(MIN_FEASIBLE)
}

/// Why no node fits, in kube-scheduler's words.
#[derive(Debug, Clone, PartialEq)]
pub struct FitError {
    pub num_all_nodes: usize,
    /// Each refused node and why.
    pub statuses: BTreeMap<String, Rejection>,
    /// Why a PreFilter refused every node, when one did.
    pub pre_filter_msg: Option<String>,
    /// What preemption found (`preemption: …`), when it ran.
    pub post_filter_msg: Option<String>,
}

/// kube-scheduler's `ErrNoNodesAvailable`.
pub const NO_NODES_AVAILABLE: &str = "no nodes available to schedule pods";

impl FitError {
    /// "0/3 nodes are available: 1 node(s) had untolerated taint {a: b}, 2
    /// Insufficient cpu. preemption: …": reasons counted and sorted.
    pub fn message(&self) -> String {
        if self.num_all_nodes == 0 {
            return NO_NODES_AVAILABLE.to_owned();
        }
        let mut msg = format!("0/{} nodes are available:", self.num_all_nodes);
        // A PreFilter's refusal stands for every node: said once.
        if let Some(pre) = &self.pre_filter_msg {
            msg.push_str(&format!(" {pre}."));
        } else {
            let histogram = reason_histogram(self.statuses.values());
            if !histogram.is_empty() {
                msg.push_str(&format!(" {}.", histogram));
            }
        }
        if let Some(post) = &self.post_filter_msg {
            msg.push_str(&format!(" {post}."));
        }
        msg
    }

    /// The plugins that refused some node: what must change before a retry.
    pub fn rejecting_plugins(&self) -> Vec<Plugin> {
        let mut v: Vec<Plugin> = self.statuses.values().map(|r| r.plugin).collect();
        v.sort();
        v.dedup();
        v
    }
}

/// "1 x, 2 y": each reason with how many nodes gave it, sorted as strings.
pub fn reason_histogram<'a>(rejections: impl Iterator<Item = &'a Rejection>) -> String {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for r in rejections {
        for reason in &r.reasons {
            *counts.entry(reason.as_str()).or_insert(0) += 1;
        }
    }
    let mut parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    parts.join(", ")
}

/// Runs the profile's filters in order; the first refusal wins.
pub fn run_filters(
    profile: &Profile,
    state: &CycleState,
    node: &NodeInfo,
    snapshot: &Snapshot,
) -> FilterResult {
    if let Some(r) = &state.pre_filter_rejection {
        return Err(r.clone());
    }
    for p in &profile.filters {
        match p {
            Plugin::NodeUnschedulable => node_unschedulable::filter(state, node)?,
            Plugin::NodeName => node_name::filter(state, node)?,
            Plugin::TaintToleration => taint_toleration::filter(state, node)?,
            Plugin::NodeAffinity => node_affinity::filter(state, node)?,
            Plugin::NodePorts => node_ports::filter(state, node)?,
            Plugin::NodeResourcesFit => node_resources::filter(state, node)?,
            Plugin::InterPodAffinity => {
                inter_pod_affinity::filter(state, node, snapshot.namespace_labels)?
            }
            Plugin::PodTopologySpread => pod_topology_spread::filter(state, node)?,
            Plugin::VolumeBinding => volume_binding::filter(state, node)?,
            _ => {}
        }
    }
    Ok(())
}

/// The PreFilter step: what the filters need computed once per pod.
pub fn prepare(
    profile: &Profile,
    pod: PodInfo,
    snapshot: &Snapshot,
    nominated: HashMap<String, Vec<PodInfo>>,
) -> CycleState {
    let mut state = CycleState::new(pod);
    state.nominated = nominated;
    if profile.has_filter(Plugin::VolumeBinding) {
        match volume_binding::pre_filter(&state.pod.pod, snapshot.volumes) {
            Ok(v) => state.volumes = v,
            Err(r) => {
                state.pre_filter_rejection = Some(r);
                return state;
            }
        }
    }
    if profile.has_filter(Plugin::InterPodAffinity)
        || profile
            .scores
            .iter()
            .any(|(p, _)| *p == Plugin::InterPodAffinity)
    {
        state.inter_pod =
            inter_pod_affinity::pre_filter(&state, snapshot, profile.hard_pod_affinity_weight);
    }
    if profile.has_filter(Plugin::PodTopologySpread) {
        state.spread = pod_topology_spread::pre_filter(&state, &profile.spread_defaults, snapshot);
    }
    state
}

/// Weighted sums of every score plugin over the feasible nodes.
pub fn prioritize(
    profile: &Profile,
    state: &CycleState,
    feasible: &[&NodeInfo],
    snapshot: &Snapshot,
) -> Vec<i64> {
    let mut totals = vec![0i64; feasible.len()];
    for (plugin, weight) in &profile.scores {
        let scores: Vec<i64> = match plugin {
            Plugin::TaintToleration => {
                let mut s: Vec<i64> = feasible
                    .iter()
                    .map(|n| taint_toleration::score(state, n))
                    .collect();
                taint_toleration::normalize(&mut s);
                s
            }
            Plugin::NodeAffinity => {
                let mut s: Vec<i64> = feasible
                    .iter()
                    .map(|n| node_affinity::score(state, n))
                    .collect();
                node_affinity::normalize(&mut s);
                s
            }
            Plugin::NodeResourcesFit => feasible
                .iter()
                .map(|n| node_resources::fit_score(&profile.fit_strategy, state, n))
                .collect(),
            Plugin::NodeResourcesBalancedAllocation => feasible
                .iter()
                .map(|n| node_resources::balanced_allocation_score(state, n))
                .collect(),
            Plugin::InterPodAffinity => {
                if state.inter_pod.is_none() {
                    continue;
                }
                let mut s: Vec<i64> = feasible
                    .iter()
                    .map(|n| inter_pod_affinity::score(state, n))
                    .collect();
                inter_pod_affinity::normalize(&mut s);
                s
            }
            Plugin::PodTopologySpread => {
                let Some(pre) = pod_topology_spread::pre_score(
                    state,
                    &profile.spread_defaults,
                    feasible,
                    snapshot,
                ) else {
                    continue;
                };
                let raw: Vec<Option<i64>> = feasible
                    .iter()
                    .map(|n| pod_topology_spread::score(&pre, state, n))
                    .collect();
                pod_topology_spread::normalize(&raw)
            }
            Plugin::ImageLocality => {
                if !feasible.iter().any(|n| !n.images.is_empty()) {
                    continue;
                }
                let spread = image_locality::image_spread(snapshot.nodes.iter());
                feasible
                    .iter()
                    .map(|n| image_locality::score(state, n, &spread, snapshot.nodes.len()))
                    .collect()
            }
            _ => continue,
        };
        for (t, s) in totals.iter_mut().zip(scores) {
            *t += s * weight;
        }
    }
    totals
}

/// The index of the highest score; among equals, each is equally likely
/// (reservoir sampling, as `selectHost`).
pub fn select_host(scores: &[i64], mut random: impl FnMut(usize) -> usize) -> Option<usize> {
    let mut best: Option<usize> = None;
    let mut ties = 0usize;
    for (i, s) in scores.iter().enumerate() {
        match best {
            Some(b) if *s < scores[b] => {}
            Some(b) if *s == scores[b] => {
                ties += 1;
                if random(ties + 1) == 0 {
                    best = Some(i);
                }
            }
            _ => {
                best = Some(i);
                ties = 0;
            }
        }
    }
    best
}

/// A placement: the node and how far the node scan got (the next cycle
/// starts after it, so nodes share the filtering work).
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub node: String,
    pub evaluated: usize,
    pub feasible: usize,
}

/// The result of a failed cycle: the error and the state preemption reuses.
#[derive(Debug)]
pub struct Unschedulable {
    pub error: FitError,
    pub state: CycleState,
}

/// Filters and scores `pod` over the snapshot, starting at `start`.
pub fn schedule_pod(
    profile: &Profile,
    snapshot: &Snapshot,
    pod: PodInfo,
    nominated: HashMap<String, Vec<PodInfo>>,
    start: usize,
    random: impl FnMut(usize) -> usize,
) -> Result<Placement, Box<Unschedulable>> {
    let all = snapshot.nodes.len();
    let state = prepare(profile, pod, snapshot, nominated);
    if all == 0 {
        return Err(Box::new(Unschedulable {
            error: FitError {
                num_all_nodes: 0,
                statuses: BTreeMap::new(),
                pre_filter_msg: None,
                post_filter_msg: None,
            },
            state,
        }));
    }
    if let Some(r) = &state.pre_filter_rejection {
        // Every node carries the refusal, so preemption sees none it helps.
        let statuses = snapshot
            .nodes
            .iter()
            .map(|n| (n.name.clone(), r.clone()))
            .collect();
        return Err(Box::new(Unschedulable {
            error: FitError {
                num_all_nodes: all,
                statuses,
                pre_filter_msg: Some(r.reasons.join(", ")),
                post_filter_msg: None,
            },
            state,
        }));
    }
    let want = num_feasible_nodes_to_find(profile.percentage_of_nodes_to_score, all);
    let mut feasible: Vec<&NodeInfo> = Vec::with_capacity(want.min(all));
    let mut statuses = BTreeMap::new();
    let mut evaluated = 0;
    for i in 0..all {
        let node = &snapshot.nodes[(start + i) % all];
        evaluated += 1;
        match run_filters(profile, &state, node, snapshot) {
            Ok(()) => {
                feasible.push(node);
                if feasible.len() >= want {
                    break;
                }
            }
            Err(r) => {
                statuses.insert(node.name.clone(), r);
            }
        }
    }
    if feasible.is_empty() {
        return Err(Box::new(Unschedulable {
            error: FitError {
                num_all_nodes: all,
                statuses,
                pre_filter_msg: None,
                post_filter_msg: None,
            },
            state,
        }));
    }
    let chosen = if feasible.len() == 1 {
        0
    } else {
        let scores = prioritize(profile, &state, &feasible, snapshot);
        select_host(&scores, random).unwrap_or(0)
    };
    Ok(Placement {
        node: feasible[chosen].name.clone(),
        evaluated,
        feasible: feasible.len(),
    })
}

/// Whether preemption can help a node refused this way.
pub fn preemption_may_help(r: &Rejection) -> bool {
    r.code == Code::Unschedulable
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::*;
    use k8s_openapi::api::core::v1::Taint;

    fn snapshot_of(
        nodes: &[NodeInfo],
    ) -> (Vec<NodeInfo>, HashMap<String, BTreeMap<String, String>>) {
        (nodes.to_vec(), HashMap::new())
    }

    #[test]
    fn the_fit_error_reads_like_kube_schedulers() {
        let cp = info(tainted(
            node("cp", "4", "8Gi", &[]),
            vec![Taint {
                key: "node-role.kubernetes.io/control-plane".into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            }],
        ));
        let (nodes, ns) = snapshot_of(&[
            cp,
            info(node("n1", "1", "8Gi", &[])),
            info(node("n2", "1", "8Gi", &[])),
        ]);
        let snap = Snapshot {
            nodes: &nodes,
            namespace_labels: &ns,
            workloads: &NO_WORKLOADS,
            volumes: no_volumes(),
        };
        let profile = Profile::default_named("default-scheduler");
        let err = schedule_pod(
            &profile,
            &snap,
            pinfo(pod("big", "2", "")),
            HashMap::new(),
            0,
            |_| 0,
        )
        .unwrap_err();
        assert_eq!(
            err.error.message(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu."
        );
        assert_eq!(
            err.error.rejecting_plugins(),
            vec![Plugin::TaintToleration, Plugin::NodeResourcesFit]
        );
        let mut with_post = err.error.clone();
        with_post.post_filter_msg = Some(
            "preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.".into(),
        );
        assert!(with_post.message().ends_with("2 Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.."));
        let none = FitError {
            num_all_nodes: 0,
            statuses: BTreeMap::new(),
            pre_filter_msg: None,
            post_filter_msg: None,
        };
        assert_eq!(none.message(), NO_NODES_AVAILABLE);
    }

    #[test]
    fn the_emptier_node_wins_and_ties_break_at_random() {
        let mut busy = info(node("busy", "4", "8Gi", &[]));
        busy.add_pod(on(pod("a", "3", "6Gi"), "busy"));
        let (nodes, ns) = snapshot_of(&[busy, info(node("idle", "4", "8Gi", &[]))]);
        let snap = Snapshot {
            nodes: &nodes,
            namespace_labels: &ns,
            workloads: &NO_WORKLOADS,
            volumes: no_volumes(),
        };
        let profile = Profile::default_named("default-scheduler");
        let p = schedule_pod(
            &profile,
            &snap,
            pinfo(pod("p", "500m", "1Gi")),
            HashMap::new(),
            0,
            |_| 0,
        )
        .unwrap();
        assert_eq!(p.node, "idle");

        assert_eq!(select_host(&[5, 9, 9, 1], |_| 0), Some(2));
        assert_eq!(select_host(&[5, 9, 9, 1], |_| 1), Some(1));
        assert_eq!(select_host(&[], |_| 0), None);
    }

    #[test]
    fn volumes_decide_the_node_and_unbound_immediate_claims_refuse_them_all() {
        use crate::scheduler::plugins::volume_binding::VolumeObjects;
        let nodes: Vec<NodeInfo> = ["n1", "n2", "n3"]
            .iter()
            .map(|n| info(node(n, "1", "1Gi", &[])))
            .collect();
        let ns = HashMap::new();
        let objects: VolumeObjects = VolumeObjects {
            claims: [
                serde_json::json!({"metadata": {"name": "data", "namespace": "default",
                    "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
                    "spec": {"volumeName": "disk-n3"}}),
                serde_json::json!({"metadata": {"name": "waiting", "namespace": "default"},
                    "spec": {"storageClassName": ""}}),
            ]
            .into_iter()
            .map(|c| {
                let c: k8s_openapi::api::core::v1::PersistentVolumeClaim =
                    serde_json::from_value(c).unwrap();
                (format!("default/{}", c.metadata.name.clone().unwrap()), std::sync::Arc::new(c))
            })
            .collect(),
            volumes: [(
                "disk-n3".to_string(),
                std::sync::Arc::new(
                    serde_json::from_value(serde_json::json!({"metadata": {"name": "disk-n3"},
                        "spec": {"local": {"path": "/mnt"}, "nodeAffinity": {"required": {"nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n3"]}]}]}}}}))
                    .unwrap(),
                ),
            )]
            .into(),
            classes: HashMap::new(),
        };
        let snap = Snapshot {
            nodes: &nodes,
            namespace_labels: &ns,
            workloads: &NO_WORKLOADS,
            volumes: &objects,
        };
        let with_claim = |claim: &str| {
            let mut p = pod("p", "", "");
            p.spec.as_mut().unwrap().volumes = Some(vec![
                serde_json::from_value(
                    serde_json::json!({"name": "v", "persistentVolumeClaim": {"claimName": claim}}),
                )
                .unwrap(),
            ]);
            pinfo(p)
        };
        let profile = Profile::default_named("default-scheduler");
        for start in 0..3 {
            let placed = schedule_pod(
                &profile,
                &snap,
                with_claim("data"),
                HashMap::new(),
                start,
                |_| 0,
            );
            assert_eq!(placed.unwrap().node, "n3");
        }
        let err = schedule_pod(
            &profile,
            &snap,
            with_claim("waiting"),
            HashMap::new(),
            0,
            |_| 0,
        )
        .unwrap_err();
        assert_eq!(
            err.error.message(),
            "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims."
        );
        assert_eq!(err.error.rejecting_plugins(), vec![Plugin::VolumeBinding]);
    }

    #[test]
    fn large_clusters_score_a_share_of_the_nodes() {
        assert_eq!(num_feasible_nodes_to_find(None, 50), 50);
        assert_eq!(num_feasible_nodes_to_find(None, 500), 230);
        assert_eq!(num_feasible_nodes_to_find(None, 5000), 500);
        assert_eq!(num_feasible_nodes_to_find(Some(100), 5000), 5000);
        assert_eq!(num_feasible_nodes_to_find(Some(1), 5000), 100);
    }

    #[test]
    fn a_profile_without_a_filter_ignores_its_rule() {
        let tainted_node = info(tainted(
            node("n1", "4", "8Gi", &[]),
            vec![Taint {
                key: "app".into(),
                value: Some("blue".into()),
                effect: "NoSchedule".into(),
                ..Default::default()
            }],
        ));
        let (nodes, ns) = snapshot_of(&[tainted_node]);
        let snap = Snapshot {
            nodes: &nodes,
            namespace_labels: &ns,
            workloads: &NO_WORKLOADS,
            volumes: no_volumes(),
        };
        let mut profile = Profile::default_named("no-taints");
        assert!(
            schedule_pod(
                &profile,
                &snap,
                pinfo(pod("p", "", "")),
                HashMap::new(),
                0,
                |_| 0
            )
            .is_err()
        );
        profile.filters.retain(|p| *p != Plugin::TaintToleration);
        assert_eq!(
            schedule_pod(
                &profile,
                &snap,
                pinfo(pod("p", "", "")),
                HashMap::new(),
                0,
                |_| 0
            )
            .unwrap()
            .node,
            "n1"
        );
    }
}
