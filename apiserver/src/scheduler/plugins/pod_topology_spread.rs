//! PodTopologySpread: `topologySpreadConstraints` keep matching pods
//! evenly spread over topology domains. `DoNotSchedule` constraints filter
//! (the skew after placing may not exceed `maxSkew`), `ScheduleAnyway`
//! constraints score (fewer matching pods in the node's domain is better).

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Pod, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kubelab_rules::{node_affinity, selector, taints};

use super::{Code, CycleState, FilterResult, MAX_NODE_SCORE, Plugin, Rejection, Snapshot};
use crate::scheduler::node_info::{NodeInfo, PodInfo};

pub const ERR_CONSTRAINTS: &str = "node(s) didn't match pod topology spread constraints";
pub const ERR_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

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

/// The pod's constraints with this `whenUnsatisfiable`.
pub fn constraints(pod: &Pod, when: &str) -> Vec<Constraint> {
    pod.spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.when_unsatisfiable == when)
        .map(|c| Constraint::new(c, pod))
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
/// topology key, and (per policy) match the pod's node affinity and have
/// no taint the pod doesn't tolerate.
fn node_counts(state: &CycleState, node: &NodeInfo, c: &Constraint, all: &[Constraint]) -> bool {
    if !has_all_keys(node.labels(), all) {
        return false;
    }
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

fn count(state: &CycleState, nodes: &[&NodeInfo], cs: &[Constraint]) -> HashMap<TopologyPair, i64> {
    let mut counts: HashMap<TopologyPair, i64> = HashMap::new();
    for node in nodes {
        for c in cs {
            if !node_counts(state, node, c, cs) {
                continue;
            }
            let value = node.labels()[&c.topology_key].clone();
            let n = node
                .pods
                .iter()
                .filter(|p| c.selects(p, &state.pod.namespace))
                .count() as i64;
            *counts.entry((c.topology_key.clone(), value)).or_insert(0) += n;
        }
    }
    counts
}

/// Counts matching pods per domain for the `DoNotSchedule` constraints.
pub fn pre_filter(state: &CycleState, snapshot: &Snapshot) -> Option<PreFilterState> {
    let cs = constraints(&state.pod.pod, "DoNotSchedule");
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

/// What scoring needs: the `ScheduleAnyway` constraints, the counts over
/// the nodes that passed the filters, and each constraint's weight
/// (log of its domain count + 2, so keys with many domains count more).
#[derive(Debug, Clone, Default)]
pub struct PreScoreState {
    constraints: Vec<Constraint>,
    counts: HashMap<TopologyPair, i64>,
    weights: Vec<f64>,
}

pub fn pre_score(state: &CycleState, feasible: &[&NodeInfo]) -> Option<PreScoreState> {
    let cs = constraints(&state.pod.pod, "ScheduleAnyway");
    if cs.is_empty() {
        return None;
    }
    let counts = count(state, feasible, &cs);
    let weights = cs
        .iter()
        .map(|c| {
            let domains: HashSet<&String> = feasible
                .iter()
                .filter_map(|n| n.labels().get(&c.topology_key))
                .collect();
            ((domains.len() + 2) as f64).ln()
        })
        .collect();
    Some(PreScoreState {
        constraints: cs,
        counts,
        weights,
    })
}

/// Raw score (lower is better); `None` for a node lacking a topology key.
pub fn score(s: &PreScoreState, node: &NodeInfo) -> Option<i64> {
    let labels = node.labels();
    if !has_all_keys(labels, &s.constraints) {
        return None;
    }
    let mut total = 0.0;
    for (i, c) in s.constraints.iter().enumerate() {
        let value = &labels[&c.topology_key];
        let n = s
            .counts
            .get(&(c.topology_key.clone(), value.clone()))
            .copied()
            .unwrap_or(0);
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
        };
        let mut state = CycleState::new(pinfo(spread_pod("w3", "DoNotSchedule", 1)));
        state.spread = pre_filter(&state, &snap);
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
        state.spread = pre_filter(&state, &snap);
        assert!(filter(&state, &nodes[0]).is_ok());
    }

    #[test]
    fn schedule_anyway_prefers_the_emptier_domain() {
        let nodes = cluster();
        let state = CycleState::new(pinfo(spread_pod("w3", "ScheduleAnyway", 1)));
        let feasible: Vec<&NodeInfo> = nodes.iter().collect();
        let s = pre_score(&state, &feasible).unwrap();
        let raw: Vec<Option<i64>> = nodes.iter().map(|n| score(&s, n)).collect();
        // Two domains: weight ln(4) ≈ 1.386; z1: 2 × 1.386 ≈ 3.
        assert_eq!(raw, vec![Some(3), Some(0), None]);
        assert_eq!(normalize(&raw), vec![0, 100, 0]);
    }
}
