//! PodTopologySpread: `topologySpreadConstraints` keep matching pods
//! evenly spread over topology domains. `DoNotSchedule` constraints filter
//! (the skew after placing may not exceed `maxSkew`), `ScheduleAnyway`
//! constraints score (fewer matching pods in the node's domain is better).
//! A pod without constraints of its own gets the profile's default ones
//! (kube-scheduler's system defaults: spread over hosts and zones), selecting
//! the pods its Services, ReplicationController or ReplicaSet select.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Pod, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kubelab_rules::{node_affinity, selector, taints};

use super::{Code, CycleState, FilterResult, MAX_NODE_SCORE, Plugin, Rejection, Snapshot};
use crate::scheduler::node_info::{NodeInfo, PodInfo};

pub const ERR_CONSTRAINTS: &str = "node(s) didn't match pod topology spread constraints";
pub const ERR_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

const HOSTNAME: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";

/// `PodTopologySpreadArgs`: the constraints for pods that give none.
#[derive(Debug, Clone, PartialEq)]
pub struct SpreadDefaults {
    pub constraints: Vec<TopologySpreadConstraint>,
    /// `defaultingType: System`: nodes missing a topology key still count.
    pub system: bool,
}

impl Default for SpreadDefaults {
    /// kube-scheduler's system defaults: hosts with maxSkew 3, zones with 5.
    fn default() -> Self {
        let soft = |key: &str, max_skew| TopologySpreadConstraint {
            max_skew,
            topology_key: key.into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            ..Default::default()
        };
        SpreadDefaults {
            constraints: vec![soft(HOSTNAME, 3), soft(ZONE, 5)],
            system: true,
        }
    }
}

/// One constraint made ready to count.
#[derive(Debug, Clone)]
pub struct Constraint {
    pub max_skew: i64,
    pub topology_key: String,
    pub min_domains: i64,
    /// `None`: no label selector, which matches no pod (only `{}` matches all).
    selector: Option<LabelSelector>,
    honor_node_affinity: bool,
    honor_taints: bool,
}

impl Constraint {
    fn new(c: &TopologySpreadConstraint, pod: &Pod) -> Self {
        let mut sel = c.label_selector.clone().unwrap_or_default();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        for key in c.match_label_keys.iter().flatten() {
            if let Some(v) = labels.get(key) {
                sel.match_expressions
                    .get_or_insert_with(Vec::new)
                    .push(LabelSelectorRequirement {
                        key: key.clone(),
                        operator: "In".into(),
                        values: Some(vec![v.clone()]),
                    });
            }
        }
        Constraint {
            max_skew: i64::from(c.max_skew),
            topology_key: c.topology_key.clone(),
            min_domains: i64::from(c.min_domains.unwrap_or(1)),
            selector: c.label_selector.is_some().then_some(sel),
            honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        }
    }

    fn selects(&self, p: &PodInfo, namespace: &str) -> bool {
        p.namespace == namespace && !p.is_terminating() && self.matches_labels(p.labels())
    }

    fn matches_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector
            .as_ref()
            .is_some_and(|s| selector::matches(s, labels))
    }
}

fn own_constraints(pod: &Pod) -> &[TopologySpreadConstraint] {
    pod.spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_deref())
        .unwrap_or_default()
}

/// The pod's constraints with this `whenUnsatisfiable`; for a pod with
/// none, the defaults selecting what its workloads select (none if nothing
/// does).
pub fn constraints(
    pod: &Pod,
    defaults: &SpreadDefaults,
    snapshot: &Snapshot,
    when: &str,
) -> Vec<Constraint> {
    let own = own_constraints(pod);
    if !own.is_empty() {
        return own
            .iter()
            .filter(|c| c.when_unsatisfiable == when)
            .map(|c| Constraint::new(c, pod))
            .collect();
    }
    if !defaults
        .constraints
        .iter()
        .any(|c| c.when_unsatisfiable == when)
    {
        return Vec::new();
    }
    let Some(sel) = snapshot.workloads.default_selector(pod) else {
        return Vec::new();
    };
    defaults
        .constraints
        .iter()
        .filter(|c| c.when_unsatisfiable == when)
        .map(|c| {
            let with_selector = TopologySpreadConstraint {
                label_selector: Some(sel.clone()),
                ..c.clone()
            };
            Constraint::new(&with_selector, pod)
        })
        .collect()
}

type TopologyPair = (String, String);

#[derive(Debug, Clone, Default)]
pub struct PreFilterState {
    pub constraints: Vec<Constraint>,
    counts: HashMap<TopologyPair, i64>,
    /// Per constraint: the fewest matching pods in an eligible domain.
    min_match: Vec<i64>,
}

fn has_all_keys(labels: &BTreeMap<String, String>, cs: &[Constraint]) -> bool {
    cs.iter().all(|c| labels.contains_key(&c.topology_key))
}

/// Whether a node's pods count for a constraint: it must carry every
/// topology key, and pass the inclusion policies.
fn node_counts(state: &CycleState, node: &NodeInfo, c: &Constraint, all: &[Constraint]) -> bool {
    has_all_keys(node.labels(), all) && included(state, node, c)
}

/// The node inclusion policies: (per policy) the node matches the pod's
/// node affinity and has no taint the pod doesn't tolerate.
fn included(state: &CycleState, node: &NodeInfo, c: &Constraint) -> bool {
    if c.honor_node_affinity
        && let Some(spec) = state.pod.pod.spec.as_ref()
        && !node_affinity::required_node_affinity_matches(spec, &node.node)
    {
        return false;
    }
    if c.honor_taints
        && taints::untolerated_scheduling_taint(&node.node, &state.tolerations).is_some()
    {
        return false;
    }
    true
}

fn matching_pods(state: &CycleState, node: &NodeInfo, c: &Constraint) -> i64 {
    node.pods
        .iter()
        .filter(|p| c.selects(p, &state.pod.namespace))
        .count() as i64
}

fn count(state: &CycleState, nodes: &[&NodeInfo], cs: &[Constraint]) -> HashMap<TopologyPair, i64> {
    let mut counts: HashMap<TopologyPair, i64> = HashMap::new();
    for node in nodes {
        for c in cs {
            if !node_counts(state, node, c, cs) {
                continue;
            }
            let value = node.labels()[&c.topology_key].clone();
            let n = matching_pods(state, node, c);
            *counts.entry((c.topology_key.clone(), value)).or_insert(0) += n;
        }
    }
    counts
}

/// Counts matching pods per domain for the `DoNotSchedule` constraints.
pub fn pre_filter(
    state: &CycleState,
    defaults: &SpreadDefaults,
    snapshot: &Snapshot,
) -> Option<PreFilterState> {
    let cs = constraints(&state.pod.pod, defaults, snapshot, "DoNotSchedule");
    if cs.is_empty() {
        return None;
    }
    let nodes: Vec<&NodeInfo> = snapshot.nodes.iter().collect();
    let counts = count(state, &nodes, &cs);
    let min_match = cs
        .iter()
        .map(|c| {
            let domains: Vec<i64> = counts
                .iter()
                .filter(|((k, _), _)| *k == c.topology_key)
                .map(|(_, n)| *n)
                .collect();
            if (domains.len() as i64) < c.min_domains {
                0
            } else {
                domains.into_iter().min().unwrap_or(0)
            }
        })
        .collect();
    Some(PreFilterState {
        constraints: cs,
        counts,
        min_match,
    })
}

pub fn filter(state: &CycleState, node: &NodeInfo) -> FilterResult {
    let Some(s) = &state.spread else {
        return Ok(());
    };
    let labels = node.labels();
    for (i, c) in s.constraints.iter().enumerate() {
        let Some(value) = labels.get(&c.topology_key) else {
            return Err(Rejection::new(
                Plugin::PodTopologySpread,
                Code::UnschedulableAndUnresolvable,
                ERR_MISSING_LABEL,
            ));
        };
        let self_match = i64::from(c.matches_labels(state.pod.labels()));
        let matched = s
            .counts
            .get(&(c.topology_key.clone(), value.clone()))
            .copied()
            .unwrap_or(0);
        if matched + self_match - s.min_match[i] > c.max_skew {
            return Err(Rejection::new(
                Plugin::PodTopologySpread,
                Code::Unschedulable,
                ERR_CONSTRAINTS,
            ));
        }
    }
    Ok(())
}

/// What scoring needs: the `ScheduleAnyway` constraints, the matching pods
/// per domain of the nodes that passed the filters (counted over every
/// node; per host at score time), each constraint's weight (log of its
/// domain count + 2, so keys with many domains count more), and the nodes
/// not scored for lacking a topology key.
#[derive(Debug, Clone, Default)]
pub struct PreScoreState {
    constraints: Vec<Constraint>,
    counts: Vec<HashMap<String, i64>>,
    weights: Vec<f64>,
    ignored: HashSet<String>,
}

pub fn pre_score(
    state: &CycleState,
    defaults: &SpreadDefaults,
    feasible: &[&NodeInfo],
    snapshot: &Snapshot,
) -> Option<PreScoreState> {
    let pod = &state.pod.pod;
    let cs = constraints(pod, defaults, snapshot, "ScheduleAnyway");
    if cs.is_empty() {
        return None;
    }
    // The system defaults spread over hosts even where zones are unlabelled.
    let require_all = !own_constraints(pod).is_empty() || !defaults.system;
    let mut ignored = HashSet::new();
    let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::new(); cs.len()];
    for node in feasible {
        let labels = node.labels();
        if require_all && !has_all_keys(labels, &cs) {
            ignored.insert(node.name.clone());
            continue;
        }
        for (i, c) in cs.iter().enumerate() {
            if c.topology_key != HOSTNAME {
                let value = labels.get(&c.topology_key).cloned().unwrap_or_default();
                counts[i].entry(value).or_insert(0);
            }
        }
    }
    let weights = cs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let domains = if c.topology_key == HOSTNAME {
                feasible.len() - ignored.len()
            } else {
                counts[i].len()
            };
            ((domains + 2) as f64).ln()
        })
        .collect();
    for node in snapshot.nodes {
        let labels = node.labels();
        if require_all && !has_all_keys(labels, &cs) {
            continue;
        }
        for (i, c) in cs.iter().enumerate() {
            let value = labels.get(&c.topology_key).map_or("", String::as_str);
            if let Some(n) = counts[i].get_mut(value)
                && included(state, node, c)
            {
                *n += matching_pods(state, node, c);
            }
        }
    }
    Some(PreScoreState {
        constraints: cs,
        counts,
        weights,
        ignored,
    })
}

/// Raw score (lower is better); `None` for a node not scored.
pub fn score(s: &PreScoreState, state: &CycleState, node: &NodeInfo) -> Option<i64> {
    if s.ignored.contains(&node.name) {
        return None;
    }
    let labels = node.labels();
    let mut total = 0.0;
    for (i, c) in s.constraints.iter().enumerate() {
        let Some(value) = labels.get(&c.topology_key) else {
            continue;
        };
        let n = if c.topology_key == HOSTNAME {
            matching_pods(state, node, c)
        } else {
            s.counts[i].get(value).copied().unwrap_or(0)
        };
        total += n as f64 * s.weights[i] + (c.max_skew - 1) as f64;
    }
    Some(total.round() as i64)
}

/// Fewer matching pods scores higher; nodes without the keys get 0.
pub fn normalize(raw: &[Option<i64>]) -> Vec<i64> {
    let present: Vec<i64> = raw.iter().flatten().copied().collect();
    let (Some(&min), Some(&max)) = (present.iter().min(), present.iter().max()) else {
        return vec![0; raw.len()];
    };
    raw.iter()
        .map(|s| match s {
            None => 0,
            Some(_) if max == 0 => MAX_NODE_SCORE,
            Some(s) => MAX_NODE_SCORE * (max + min - s) / max,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::*;

    fn spread_pod(name: &str, when: &str, max_skew: i32) -> Pod {
        let mut p = labelled(pod(name, "", ""), &[("app", "web")]);
        p.spec.as_mut().unwrap().topology_spread_constraints =
            Some(vec![TopologySpreadConstraint {
                max_skew,
                topology_key: "zone".into(),
                when_unsatisfiable: when.into(),
                label_selector: Some(LabelSelector {
                    match_labels: Some([("app".to_string(), "web".to_string())].into()),
                    ..Default::default()
                }),
                ..Default::default()
            }]);
        p
    }

    fn cluster() -> Vec<NodeInfo> {
        let mut a = info(node("a", "4", "8Gi", &[("zone", "z1")]));
        let b = info(node("b", "4", "8Gi", &[("zone", "z2")]));
        let c = info(node("c", "4", "8Gi", &[]));
        a.add_pod(on(labelled(pod("w1", "", ""), &[("app", "web")]), "a"));
        a.add_pod(on(labelled(pod("w2", "", ""), &[("app", "web")]), "a"));
        vec![a, b, c]
    }

    #[test]
    fn do_not_schedule_refuses_a_domain_that_would_exceed_max_skew() {
        let nodes = cluster();
        let ns = HashMap::new();
        let snap = Snapshot {
            nodes: &nodes,
            namespace_labels: &ns,
            workloads: &NO_WORKLOADS,
            volumes: no_volumes(),
        };
        let mut state = CycleState::new(pinfo(spread_pod("w3", "DoNotSchedule", 1)));
        state.spread = pre_filter(&state, &SpreadDefaults::default(), &snap);
        let got: Vec<_> = nodes
            .iter()
            .map(|n| filter(&state, n).map_err(|e| (e.code, e.reasons[0].clone())))
            .collect();
        assert_eq!(
            got,
            vec![
                // z1 has 2, z2 has 0: 2 + 1 - 0 > 1.
                Err((Code::Unschedulable, ERR_CONSTRAINTS.to_string())),
                Ok(()),
                Err((
                    Code::UnschedulableAndUnresolvable,
                    ERR_MISSING_LABEL.to_string()
                )),
            ]
        );
        // maxSkew 3 allows it.
        let mut state = CycleState::new(pinfo(spread_pod("w3", "DoNotSchedule", 3)));
        state.spread = pre_filter(&state, &SpreadDefaults::default(), &snap);
        assert!(filter(&state, &nodes[0]).is_ok());
    }

    #[test]
    fn schedule_anyway_prefers_the_emptier_domain() {
        let nodes = cluster();
        let state = CycleState::new(pinfo(spread_pod("w3", "ScheduleAnyway", 1)));
        let feasible: Vec<&NodeInfo> = nodes.iter().collect();
        let ns = HashMap::new();
        let snap = Snapshot {
            nodes: &nodes,
            namespace_labels: &ns,
            workloads: &NO_WORKLOADS,
            volumes: no_volumes(),
        };
        let s = pre_score(&state, &SpreadDefaults::default(), &feasible, &snap).unwrap();
        let raw: Vec<Option<i64>> = nodes.iter().map(|n| score(&s, &state, n)).collect();
        // Two domains: weight ln(4) ≈ 1.386; z1: 2 × 1.386 ≈ 3.
        assert_eq!(raw, vec![Some(3), Some(0), None]);
        assert_eq!(normalize(&raw), vec![0, 100, 0]);
    }

    #[test]
    fn pods_of_a_service_are_spread_over_hosts_and_zones_by_default() {
        use crate::scheduler::workload_selectors::{SelectorSource, WorkloadSelectors};
        use k8s_openapi::api::core::v1::{Service, ServiceSpec};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

        fn zone(z: &'static str) -> [(&'static str, &'static str); 1] {
            [("topology.kubernetes.io/zone", z)]
        }
        let mut h1 = info(node("h1", "4", "8Gi", &zone("z1")));
        let h2 = info(node("h2", "4", "8Gi", &zone("z1")));
        let mut h3 = info(node("h3", "4", "8Gi", &zone("z2")));
        let h4 = info(node("h4", "4", "8Gi", &[]));
        let web = |name: &str| labelled(pod(name, "", ""), &[("app", "web")]);
        h1.add_pod(on(web("w1"), "h1"));
        h1.add_pod(on(web("w2"), "h1"));
        h3.add_pod(on(web("w3"), "h3"));
        // Not selected by the service: never counted.
        h3.add_pod(on(labelled(pod("db", "", ""), &[("app", "db")]), "h3"));
        let nodes = vec![h1, h2, h3, h4];
        let mut workloads = WorkloadSelectors::new();
        Service {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some("web".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            ..Default::default()
        }
        .put(&mut workloads);
        let ns = HashMap::new();
        let snap = Snapshot {
            nodes: &nodes,
            namespace_labels: &ns,
            workloads: &workloads,
            volumes: no_volumes(),
        };
        let feasible: Vec<&NodeInfo> = nodes.iter().collect();
        let state = CycleState::new(pinfo(web("w4")));
        let s = pre_score(&state, &SpreadDefaults::default(), &feasible, &snap).unwrap();
        let raw: Vec<Option<i64>> = nodes.iter().map(|n| score(&s, &state, n)).collect();
        // Hosts: 4 domains, weight ln 6; zones z1, z2 and h4's unlabelled
        // one, weight ln 5; each adds maxSkew − 1 (2 and 4). h1: 2 pods on
        // the host, 2 in z1: 2·1.79 + 2 + 2·1.61 + 4 ≈ 13. h4 has no zone
        // label yet still counts for hosts under the system defaults.
        assert_eq!(raw, vec![Some(13), Some(9), Some(9), Some(2)]);
        assert_eq!(normalize(&raw), vec![15, 46, 46, 100]);
        // The defaults only score: no filtering state.
        assert!(pre_filter(&state, &SpreadDefaults::default(), &snap).is_none());

        // A pod nothing selects is not spread; nor is one under a profile
        // that lists no defaults.
        let lone = CycleState::new(pinfo(labelled(pod("x", "", ""), &[("app", "x")])));
        assert!(pre_score(&lone, &SpreadDefaults::default(), &feasible, &snap).is_none());
        let none = SpreadDefaults {
            constraints: Vec::new(),
            system: false,
        };
        assert!(pre_score(&state, &none, &feasible, &snap).is_none());
    }
}
