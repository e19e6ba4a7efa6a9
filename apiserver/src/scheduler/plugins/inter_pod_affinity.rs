//! InterPodAffinity: required pod affinity and anti-affinity (of the
//! incoming pod, and existing pods' anti-affinity against it) filter by
//! topology domain; preferred terms (both ways, plus existing pods'
//! required affinity at `hardPodAffinityWeight`) score.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kubelab_rules::selector;

use super::{Code, CycleState, FilterResult, MAX_NODE_SCORE, Plugin, Rejection, Snapshot};
use crate::scheduler::node_info::{NodeInfo, PodInfo};

pub const ERR_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
pub const ERR_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const ERR_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";

/// A pod affinity term made ready to match: namespaces resolved, and
/// `matchLabelKeys`/`mismatchLabelKeys` merged into the selector.
#[derive(Debug, Clone)]
pub struct AffinityTerm {
    pub topology_key: String,
    namespaces: HashSet<String>,
    namespace_selector: Option<LabelSelector>,
    selector: Option<LabelSelector>,
    pub weight: i64,
}

impl AffinityTerm {
    /// `owner` is the pod the term belongs to: its namespace is the default,
    /// its labels fill `matchLabelKeys`.
    pub fn new(term: &PodAffinityTerm, owner: &Pod, weight: i64) -> Self {
        let mut namespaces: HashSet<String> = term.namespaces.iter().flatten().cloned().collect();
        if namespaces.is_empty() && term.namespace_selector.is_none() {
            namespaces.insert(owner.metadata.namespace.clone().unwrap_or_default());
        }
        let mut selector = term.label_selector.clone();
        let labels = owner.metadata.labels.clone().unwrap_or_default();
        if let Some(sel) = selector.as_mut() {
            let merge = |keys: &Option<Vec<String>>, op: &str, sel: &mut LabelSelector| {
                for key in keys.iter().flatten() {
                    if let Some(v) = labels.get(key) {
                        sel.match_expressions.get_or_insert_with(Vec::new).push(
                            LabelSelectorRequirement {
                                key: key.clone(),
                                operator: op.into(),
                                values: Some(vec![v.clone()]),
                            },
                        );
                    }
                }
            };
            merge(&term.match_label_keys, "In", sel);
            merge(&term.mismatch_label_keys, "NotIn", sel);
        }
        AffinityTerm {
            topology_key: term.topology_key.clone(),
            namespaces,
            namespace_selector: term.namespace_selector.clone(),
            selector,
            weight,
        }
    }

    /// Whether `pod` is one the term selects. A missing label selector
    /// selects nothing; an empty namespace selector selects every namespace.
    pub fn matches(
        &self,
        pod: &PodInfo,
        namespace_labels: &HashMap<String, BTreeMap<String, String>>,
    ) -> bool {
        let ns_ok = self.namespaces.contains(&pod.namespace)
            || self.namespace_selector.as_ref().is_some_and(|s| {
                static EMPTY: BTreeMap<String, String> = BTreeMap::new();
                selector::matches(s, namespace_labels.get(&pod.namespace).unwrap_or(&EMPTY))
            });
        ns_ok
            && self
                .selector
                .as_ref()
                .is_some_and(|s| selector::matches(s, pod.labels()))
    }
}

/// The four sets of terms of one pod.
#[derive(Debug, Clone, Default)]
pub struct PodTerms {
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<AffinityTerm>,
    pub preferred_anti_affinity: Vec<AffinityTerm>,
}

impl PodTerms {
    pub fn of(pod: &Pod) -> Self {
        let mut t = PodTerms::default();
        let Some(affinity) = pod.spec.as_ref().and_then(|s| s.affinity.as_ref()) else {
            return t;
        };
        if let Some(a) = &affinity.pod_affinity {
            for term in a
                .required_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
            {
                t.required_affinity.push(AffinityTerm::new(term, pod, 0));
            }
            for w in a
                .preferred_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
            {
                t.preferred_affinity.push(AffinityTerm::new(
                    &w.pod_affinity_term,
                    pod,
                    i64::from(w.weight),
                ));
            }
        }
        if let Some(a) = &affinity.pod_anti_affinity {
            for term in a
                .required_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
            {
                t.required_anti_affinity
                    .push(AffinityTerm::new(term, pod, 0));
            }
            for w in a
                .preferred_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
            {
                t.preferred_anti_affinity.push(AffinityTerm::new(
                    &w.pod_affinity_term,
                    pod,
                    i64::from(w.weight),
                ));
            }
        }
        t
    }

    fn is_empty(&self) -> bool {
        self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty()
    }
}

type TopologyPair = (String, String);

/// What PreFilter (and PreScore) count over every placed pod.
#[derive(Debug, Clone, Default)]
pub struct PreFilterState {
    pub terms: PodTerms,
    /// Domains where a placed pod's required anti-affinity forbids the pod.
    existing_anti_affinity: HashMap<TopologyPair, i64>,
    /// Per domain: placed pods matching all the pod's required affinity terms.
    affinity_counts: HashMap<TopologyPair, i64>,
    /// Per domain: placed pods matching one of its required anti-affinity terms.
    anti_affinity_counts: HashMap<TopologyPair, i64>,
    /// Preferred terms both ways, summed per domain.
    topology_score: HashMap<TopologyPair, i64>,
}

/// Counts what the filter and score need, once per pod and cycle. `None`
/// when neither the pod nor any placed pod has pod (anti-)affinity.
pub fn pre_filter(
    state: &CycleState,
    snapshot: &Snapshot,
    hard_pod_affinity_weight: i64,
) -> Option<PreFilterState> {
    let terms = PodTerms::of(&state.pod.pod);
    let any_placed_affinity = snapshot.nodes.iter().any(|n| n.pods_with_affinity > 0);
    if terms.is_empty() && !any_placed_affinity {
        return None;
    }
    let ns_labels = snapshot.namespace_labels;
    let incoming = &state.pod;
    let mut s = PreFilterState {
        terms,
        ..Default::default()
    };
    for node in snapshot.nodes {
        let labels = node.labels();
        let pair = |key: &str| labels.get(key).map(|v| (key.to_owned(), v.clone()));
        let scan_all = !s.terms.is_empty();
        if !scan_all && node.pods_with_affinity == 0 {
            continue;
        }
        for existing in &node.pods {
            if scan_all {
                if !s.terms.required_affinity.is_empty()
                    && s.terms
                        .required_affinity
                        .iter()
                        .all(|t| t.matches(existing, ns_labels))
                {
                    for t in &s.terms.required_affinity {
                        if let Some(p) = pair(&t.topology_key) {
                            *s.affinity_counts.entry(p).or_insert(0) += 1;
                        }
                    }
                }
                for t in &s.terms.required_anti_affinity {
                    if t.matches(existing, ns_labels)
                        && let Some(p) = pair(&t.topology_key)
                    {
                        *s.anti_affinity_counts.entry(p).or_insert(0) += 1;
                    }
                }
                for t in &s.terms.preferred_affinity {
                    if t.matches(existing, ns_labels)
                        && let Some(p) = pair(&t.topology_key)
                    {
                        *s.topology_score.entry(p).or_insert(0) += t.weight;
                    }
                }
                for t in &s.terms.preferred_anti_affinity {
                    if t.matches(existing, ns_labels)
                        && let Some(p) = pair(&t.topology_key)
                    {
                        *s.topology_score.entry(p).or_insert(0) -= t.weight;
                    }
                }
            }
            if !existing.has_affinity {
                continue;
            }
            let theirs = PodTerms::of(&existing.pod);
            for t in &theirs.required_anti_affinity {
                if t.matches(incoming, ns_labels)
                    && let Some(p) = pair(&t.topology_key)
                {
                    *s.existing_anti_affinity.entry(p).or_insert(0) += 1;
                }
            }
            for t in &theirs.required_affinity {
                if hard_pod_affinity_weight > 0
                    && t.matches(incoming, ns_labels)
                    && let Some(p) = pair(&t.topology_key)
                {
                    *s.topology_score.entry(p).or_insert(0) += hard_pod_affinity_weight;
                }
            }
            for t in &theirs.preferred_affinity {
                if t.matches(incoming, ns_labels)
                    && let Some(p) = pair(&t.topology_key)
                {
                    *s.topology_score.entry(p).or_insert(0) += t.weight;
                }
            }
            for t in &theirs.preferred_anti_affinity {
                if t.matches(incoming, ns_labels)
                    && let Some(p) = pair(&t.topology_key)
                {
                    *s.topology_score.entry(p).or_insert(0) -= t.weight;
                }
            }
        }
    }
    Some(s)
}

pub fn filter(
    state: &CycleState,
    node: &NodeInfo,
    ns_labels: &HashMap<String, BTreeMap<String, String>>,
) -> FilterResult {
    let Some(s) = &state.inter_pod else {
        return Ok(());
    };
    let labels = node.labels();
    let reject = |code, reason: &str| Err(Rejection::new(Plugin::InterPodAffinity, code, reason));
    if labels.iter().any(|(k, v)| {
        s.existing_anti_affinity
            .get(&(k.clone(), v.clone()))
            .is_some_and(|c| *c > 0)
    }) {
        return reject(Code::Unschedulable, ERR_EXISTING_ANTI_AFFINITY);
    }
    for t in &s.terms.required_anti_affinity {
        if let Some(v) = labels.get(&t.topology_key)
            && s.anti_affinity_counts
                .get(&(t.topology_key.clone(), v.clone()))
                .is_some_and(|c| *c > 0)
        {
            return reject(Code::Unschedulable, ERR_ANTI_AFFINITY);
        }
    }
    let mut pods_exist = true;
    for t in &s.terms.required_affinity {
        let Some(v) = labels.get(&t.topology_key) else {
            return reject(Code::UnschedulableAndUnresolvable, ERR_AFFINITY);
        };
        if s.affinity_counts
            .get(&(t.topology_key.clone(), v.clone()))
            .is_none_or(|c| *c <= 0)
        {
            pods_exist = false;
        }
    }
    // The first pod of a group with affinity to itself may go anywhere its
    // topology keys exist.
    if !pods_exist
        && !(s.affinity_counts.is_empty()
            && s.terms
                .required_affinity
                .iter()
                .all(|t| t.matches(&state.pod, ns_labels)))
    {
        return reject(Code::UnschedulableAndUnresolvable, ERR_AFFINITY);
    }
    Ok(())
}

/// Raw score: the node's domains' summed preferences (may be negative).
pub fn score(state: &CycleState, node: &NodeInfo) -> i64 {
    let Some(s) = &state.inter_pod else {
        return 0;
    };
    if s.topology_score.is_empty() {
        return 0;
    }
    node.labels()
        .iter()
        .filter_map(|(k, v)| s.topology_score.get(&(k.clone(), v.clone())))
        .sum()
}

/// Scales to 0..=100 between the lowest and highest raw score.
pub fn normalize(scores: &mut [i64]) {
    let (Some(&min), Some(&max)) = (scores.iter().min(), scores.iter().max()) else {
        return;
    };
    for s in scores.iter_mut() {
        *s = if max > min {
            MAX_NODE_SCORE * (*s - min) / (max - min)
        } else {
            0
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::*;
    use k8s_openapi::api::core::v1::{Affinity, PodAntiAffinity, WeightedPodAffinityTerm};

    fn term(key: &str, app: &str) -> PodAffinityTerm {
        PodAffinityTerm {
            topology_key: key.into(),
            label_selector: Some(LabelSelector {
                match_labels: Some([("app".to_string(), app.to_string())].into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn with_affinity(mut p: Pod, affinity: Affinity) -> Pod {
        p.spec.as_mut().unwrap().affinity = Some(affinity);
        p
    }

    fn cluster() -> Vec<NodeInfo> {
        let mut a = info(node("a", "4", "8Gi", &[("zone", "z1")]));
        let b = info(node("b", "4", "8Gi", &[("zone", "z1")]));
        let c = info(node("c", "4", "8Gi", &[("zone", "z2")]));
        a.add_pod(on(labelled(pod("cache", "", ""), &[("app", "cache")]), "a"));
        vec![a, b, c]
    }

    fn run(p: Pod, nodes: &[NodeInfo]) -> Vec<Result<(), String>> {
        let ns = HashMap::new();
        let snap = Snapshot {
            nodes,
            namespace_labels: &ns,
            workloads: &NO_WORKLOADS,
            volumes: no_volumes(),
        };
        let mut state = CycleState::new(pinfo(p));
        state.inter_pod = pre_filter(&state, &snap, 1);
        nodes
            .iter()
            .map(|n| filter(&state, n, &ns).map_err(|e| e.reasons[0].clone()))
            .collect()
    }

    #[test]
    fn required_affinity_follows_the_matching_pod_to_its_zone() {
        let nodes = cluster();
        let web = with_affinity(
            labelled(pod("web", "", ""), &[("app", "web")]),
            Affinity {
                pod_affinity: Some(k8s_openapi::api::core::v1::PodAffinity {
                    required_during_scheduling_ignored_during_execution: Some(vec![term(
                        "zone", "cache",
                    )]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        assert_eq!(
            run(web, &nodes),
            vec![Ok(()), Ok(()), Err(ERR_AFFINITY.to_string())]
        );
    }

    #[test]
    fn the_first_pod_of_a_self_affine_group_may_go_anywhere() {
        let nodes = cluster();
        let first = with_affinity(
            labelled(pod("db-0", "", ""), &[("app", "db")]),
            Affinity {
                pod_affinity: Some(k8s_openapi::api::core::v1::PodAffinity {
                    required_during_scheduling_ignored_during_execution: Some(vec![term(
                        "zone", "db",
                    )]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        assert_eq!(run(first, &nodes), vec![Ok(()), Ok(()), Ok(())]);
    }

    #[test]
    fn anti_affinity_keeps_pods_apart_both_ways() {
        let nodes = cluster();
        let spread = with_affinity(
            labelled(pod("cache-2", "", ""), &[("app", "cache")]),
            Affinity {
                pod_anti_affinity: Some(PodAntiAffinity {
                    required_during_scheduling_ignored_during_execution: Some(vec![term(
                        "kubernetes.io/hostname",
                        "cache",
                    )]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        assert_eq!(
            run(spread.clone(), &nodes),
            vec![Err(ERR_ANTI_AFFINITY.to_string()), Ok(()), Ok(())]
        );
        // The placed pod's own anti-affinity keeps a matching newcomer away.
        let mut nodes = cluster();
        nodes[2].add_pod(on(spread, "c"));
        let newcomer = labelled(pod("cache-3", "", ""), &[("app", "cache")]);
        assert_eq!(
            run(newcomer, &nodes),
            vec![Ok(()), Ok(()), Err(ERR_EXISTING_ANTI_AFFINITY.to_string())]
        );
    }

    #[test]
    fn preferred_terms_score_the_domain() {
        let nodes = cluster();
        let ns = HashMap::new();
        let snap = Snapshot {
            nodes: &nodes,
            namespace_labels: &ns,
            workloads: &NO_WORKLOADS,
            volumes: no_volumes(),
        };
        let p = with_affinity(
            pod("web", "", ""),
            Affinity {
                pod_anti_affinity: Some(PodAntiAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(vec![
                        WeightedPodAffinityTerm {
                            weight: 10,
                            pod_affinity_term: term("zone", "cache"),
                        },
                    ]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        let mut state = CycleState::new(pinfo(p));
        state.inter_pod = pre_filter(&state, &snap, 1);
        let mut scores: Vec<i64> = nodes.iter().map(|n| score(&state, n)).collect();
        assert_eq!(scores, vec![-10, -10, 0]);
        normalize(&mut scores);
        assert_eq!(scores, vec![0, 0, 100]);
    }

    #[test]
    fn namespaces_default_to_the_pods_own() {
        let mut other = labelled(pod("x", "", ""), &[("app", "cache")]);
        other.metadata.namespace = Some("other".into());
        let owner = pod("web", "", "");
        let t = AffinityTerm::new(&term("zone", "cache"), &owner, 0);
        let ns = HashMap::new();
        assert!(!t.matches(&pinfo(other.clone()), &ns));
        let mut all = term("zone", "cache");
        all.namespace_selector = Some(LabelSelector::default());
        assert!(AffinityTerm::new(&all, &owner, 0).matches(&pinfo(other), &ns));
    }
}
