//! NodeResourcesFit (requests against what is left of allocatable, and the
//! pod count; scored LeastAllocated, MostAllocated or
//! RequestedToCapacityRatio) and NodeResourcesBalancedAllocation (prefers
//! nodes whose CPU and memory stay evenly used).

use super::{Code, CycleState, FilterResult, MAX_NODE_SCORE, Plugin, Rejection};
use crate::scheduler::node_info::{NodeInfo, ResourceVec};

/// Pods nominated to the node with at least the incoming pod's priority
/// count as placed: their room is reserved.
fn nominated_requests(state: &CycleState, node: &NodeInfo) -> (ResourceVec, i64) {
    let mut r = ResourceVec::default();
    let mut n = 0;
    for p in state.nominated.get(&node.name).into_iter().flatten() {
        if p.uid != state.pod.uid {
            r.add(&p.requests);
            n += 1;
        }
    }
    (r, n)
}

/// Every resource the node lacks for the pod, in kube-scheduler's words
/// ("Too many pods", "Insufficient cpu", …).
pub fn insufficient(state: &CycleState, node: &NodeInfo) -> Vec<String> {
    let mut with_nominated = None;
    let mut nominated_pods = 0;
    if state.nominated.contains_key(&node.name) {
        let (nominated, n) = nominated_requests(state, node);
        let mut used = node.requested.clone();
        used.add(&nominated);
        with_nominated = Some(used);
        nominated_pods = n;
    }
    let used = with_nominated.as_ref().unwrap_or(&node.requested);
    let mut out = Vec::new();
    if node.pods.len() as i64 + nominated_pods + 1 > node.allocatable.allowed_pods {
        out.push("Too many pods".to_owned());
    }
    let want = &state.pod.requests;
    let short = |want: i64, alloc: i64, used: i64| want > 0 && want > alloc - used;
    if short(want.milli_cpu, node.allocatable.milli_cpu, used.milli_cpu) {
        out.push("Insufficient cpu".to_owned());
    }
    if short(want.memory, node.allocatable.memory, used.memory) {
        out.push("Insufficient memory".to_owned());
    }
    if short(
        want.ephemeral_storage,
        node.allocatable.ephemeral_storage,
        used.ephemeral_storage,
    ) {
        out.push("Insufficient ephemeral-storage".to_owned());
    }
    for (name, &q) in &want.scalar {
        if short(q, node.allocatable.get(name), used.get(name)) {
            out.push(format!("Insufficient {name}"));
        }
    }
    out
}

pub fn filter(state: &CycleState, node: &NodeInfo) -> FilterResult {
    let reasons = insufficient(state, node);
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(Rejection {
            code: Code::Unschedulable,
            plugin: Plugin::NodeResourcesFit,
            reasons,
        })
    }
}

/// `scoringStrategy` of NodeResourcesFitArgs.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoringStrategy {
    pub kind: StrategyKind,
    /// Resources and their weights (default cpu and memory, 1 each).
    pub resources: Vec<(String, i64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StrategyKind {
    LeastAllocated,
    MostAllocated,
    /// Utilisation (0..=100) → score (0..=10) points of a piecewise linear function.
    RequestedToCapacityRatio(Vec<(i64, i64)>),
}

impl Default for ScoringStrategy {
    fn default() -> Self {
        ScoringStrategy {
            kind: StrategyKind::LeastAllocated,
            resources: vec![("cpu".into(), 1), ("memory".into(), 1)],
        }
    }
}

/// Requested (with this pod) and allocatable of one resource; CPU and
/// memory count the scoring defaults for pods without requests.
fn requested_and_allocatable(
    state: &CycleState,
    node: &NodeInfo,
    name: &str,
    non_zero: bool,
) -> (i64, i64) {
    let alloc = node.allocatable.get(name);
    let requested = match (name, non_zero) {
        ("cpu", true) => node.non_zero_requested.0 + state.pod.non_zero.0,
        ("memory", true) => node.non_zero_requested.1 + state.pod.non_zero.1,
        _ => node.requested.get(name) + state.pod.requests.get(name),
    };
    (requested, alloc)
}

fn broken_linear(points: &[(i64, i64)], x: i64) -> i64 {
    // Scores are given 0..=10 and scaled to MAX_NODE_SCORE.
    let scale = MAX_NODE_SCORE / 10;
    let Some(first) = points.first() else {
        return 0;
    };
    if x <= first.0 {
        return first.1 * scale;
    }
    for w in points.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if x <= x1 {
            return (y0 * scale) + (y1 - y0) * scale * (x - x0) / (x1 - x0).max(1);
        }
    }
    points.last().map(|p| p.1 * scale).unwrap_or(0)
}

pub fn fit_score(strategy: &ScoringStrategy, state: &CycleState, node: &NodeInfo) -> i64 {
    let mut total = 0i64;
    let mut weights = 0i64;
    for (name, weight) in &strategy.resources {
        let standard = name == "cpu" || name == "memory";
        if !standard && state.pod.requests.get(name) == 0 {
            continue;
        }
        let (requested, capacity) = requested_and_allocatable(state, node, name, true);
        let s = match &strategy.kind {
            StrategyKind::LeastAllocated => {
                if capacity == 0 || requested > capacity {
                    0
                } else {
                    (capacity - requested) * MAX_NODE_SCORE / capacity
                }
            }
            StrategyKind::MostAllocated => {
                if capacity == 0 {
                    0
                } else {
                    requested.min(capacity) * MAX_NODE_SCORE / capacity
                }
            }
            StrategyKind::RequestedToCapacityRatio(points) => {
                let utilization = if capacity == 0 || requested > capacity {
                    100
                } else {
                    requested * 100 / capacity
                };
                broken_linear(points, utilization)
            }
        };
        total += s * weight;
        weights += weight;
    }
    if weights == 0 {
        return 0;
    }
    match strategy.kind {
        StrategyKind::RequestedToCapacityRatio(_) => (total as f64 / weights as f64).round() as i64,
        _ => total / weights,
    }
}

/// NodeResourcesBalancedAllocation: 100 × (1 − the standard deviation of
/// the CPU and memory fractions requested). Pods requesting nothing are
/// not scored (every node gets 0).
pub fn balanced_allocation_score(state: &CycleState, node: &NodeInfo) -> i64 {
    let r = &state.pod.requests;
    if r.milli_cpu == 0 && r.memory == 0 {
        return 0;
    }
    let mut fractions = Vec::with_capacity(2);
    for name in ["cpu", "memory"] {
        let (requested, alloc) = requested_and_allocatable(state, node, name, false);
        if alloc == 0 {
            continue;
        }
        fractions.push((requested as f64 / alloc as f64).min(1.0));
    }
    let std = match fractions.len() {
        0 | 1 => 0.0,
        2 => ((fractions[0] - fractions[1]) / 2.0).abs(),
        n => {
            let mean = fractions.iter().sum::<f64>() / n as f64;
            (fractions.iter().map(|f| (f - mean).powi(2)).sum::<f64>() / n as f64).sqrt()
        }
    };
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::*;

    #[test]
    fn requests_must_fit_what_is_left() {
        let mut n = info(node("n1", "2", "4Gi", &[]));
        n.add_pod(on(pod("a", "1500m", "1Gi"), "n1"));
        let fits = CycleState::new(pinfo(pod("p", "500m", "1Gi")));
        assert!(filter(&fits, &n).is_ok());
        let big = CycleState::new(pinfo(pod("p", "600m", "5Gi")));
        let err = filter(&big, &n).unwrap_err();
        assert_eq!(err.reasons, vec!["Insufficient cpu", "Insufficient memory"]);
        assert_eq!(err.code, Code::Unschedulable);
        // A pod without requests only needs a pod slot.
        let none = CycleState::new(pinfo(pod("p", "", "")));
        assert!(filter(&none, &n).is_ok());
        n.allocatable.allowed_pods = 1;
        assert_eq!(
            filter(&none, &n).unwrap_err().reasons,
            vec!["Too many pods"]
        );
    }

    #[test]
    fn extended_resources_the_node_lacks_are_insufficient() {
        let n = info(node("n1", "2", "4Gi", &[]));
        let mut p = pod("p", "", "");
        p.spec.as_mut().unwrap().containers[0]
            .resources
            .as_mut()
            .unwrap()
            .requests
            .as_mut()
            .unwrap()
            .insert(
                "example.com/gpu".into(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".into()),
            );
        let state = CycleState::new(pinfo(p));
        assert_eq!(
            filter(&state, &n).unwrap_err().reasons,
            vec!["Insufficient example.com/gpu"]
        );
    }

    #[test]
    fn nominated_pods_reserve_their_room() {
        let n = info(node("n1", "1", "4Gi", &[]));
        let mut state = CycleState::new(pinfo(pod("p", "600m", "")));
        assert!(filter(&state, &n).is_ok());
        state
            .nominated
            .insert("n1".into(), vec![pinfo(pod("high", "500m", ""))]);
        assert_eq!(
            filter(&state, &n).unwrap_err().reasons,
            vec!["Insufficient cpu"]
        );
    }

    #[test]
    fn least_allocated_prefers_the_emptier_node_and_most_allocated_the_fuller() {
        let mut busy = info(node("busy", "4", "8Gi", &[]));
        busy.add_pod(on(pod("a", "3", "6Gi"), "busy"));
        let idle = info(node("idle", "4", "8Gi", &[]));
        let state = CycleState::new(pinfo(pod("p", "1", "2Gi")));
        let least = ScoringStrategy::default();
        // busy: cpu (4-4)/4 = 0, memory (8-8)/8 = 0; idle: 75, 75.
        assert_eq!(fit_score(&least, &state, &busy), 0);
        assert_eq!(fit_score(&least, &state, &idle), 75);
        let most = ScoringStrategy {
            kind: StrategyKind::MostAllocated,
            ..Default::default()
        };
        assert_eq!(fit_score(&most, &state, &busy), 100);
        assert_eq!(fit_score(&most, &state, &idle), 25);
        // Bin packing through RequestedToCapacityRatio: 0% → 0, 100% → 10.
        let ratio = ScoringStrategy {
            kind: StrategyKind::RequestedToCapacityRatio(vec![(0, 0), (100, 10)]),
            ..Default::default()
        };
        assert_eq!(fit_score(&ratio, &state, &busy), 100);
        assert_eq!(fit_score(&ratio, &state, &idle), 25);
        // A pod without requests counts as 100m and 200Mi.
        let empty = CycleState::new(pinfo(pod("e", "", "")));
        let s = fit_score(&least, &empty, &idle);
        assert_eq!(s, (97 + 97) / 2);
    }

    #[test]
    fn balanced_allocation_prefers_even_use() {
        // 1 cpu of 4 and 1Gi of 4Gi: even (25%/25%) → 100.
        let even = info(node("even", "4", "4Gi", &[]));
        // 1 cpu of 2 and 1Gi of 8Gi: 50% vs 12.5% → std 0.1875 → 81.
        let skewed = info(node("skewed", "2", "8Gi", &[]));
        let state = CycleState::new(pinfo(pod("p", "1", "1Gi")));
        assert_eq!(balanced_allocation_score(&state, &even), 100);
        assert_eq!(balanced_allocation_score(&state, &skewed), 81);
        let best_effort = CycleState::new(pinfo(pod("b", "", "")));
        assert_eq!(balanced_allocation_score(&best_effort, &even), 0);
    }
}
