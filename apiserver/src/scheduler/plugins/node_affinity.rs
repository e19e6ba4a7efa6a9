//! NodeAffinity: `nodeSelector` and required node affinity filter; the
//! preferred terms' weights score.

use kubelab_rules::node_affinity;

use super::{Code, CycleState, FilterResult, Plugin, Rejection, default_normalize};
use crate::scheduler::node_info::NodeInfo;

pub const ERR_REASON: &str = "node(s) didn't match Pod's node affinity/selector";

pub fn filter(state: &CycleState, node: &NodeInfo) -> FilterResult {
    let Some(spec) = state.pod.pod.spec.as_ref() else {
        return Ok(());
    };
    if node_affinity::required_node_affinity_matches(spec, &node.node) {
        Ok(())
    } else {
        Err(Rejection::new(
            Plugin::NodeAffinity,
            Code::UnschedulableAndUnresolvable,
            ERR_REASON,
        ))
    }
}

/// Raw score: the summed weights of the preferred terms the node matches.
pub fn score(state: &CycleState, node: &NodeInfo) -> i64 {
    state
        .pod
        .pod
        .spec
        .as_ref()
        .map(|s| node_affinity::preferred_weight(node_affinity::preferred_terms(s), &node.node))
        .unwrap_or(0)
}

pub fn normalize(scores: &mut [i64]) {
    default_normalize(scores, false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::*;
    use k8s_openapi::api::core::v1::{
        Affinity, NodeAffinity, NodeSelectorRequirement, NodeSelectorTerm, PreferredSchedulingTerm,
    };

    fn prefer(weight: i32, key: &str, value: &str) -> PreferredSchedulingTerm {
        PreferredSchedulingTerm {
            weight,
            preference: NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: key.into(),
                    operator: "In".into(),
                    values: Some(vec![value.into()]),
                }]),
                match_fields: None,
            },
        }
    }

    #[test]
    fn node_selector_filters_and_preferences_score() {
        let large = info(node("large", "1", "1Gi", &[("size", "Large")]));
        let small = info(node("small", "1", "1Gi", &[("size", "Small")]));
        let mut p = pod("p", "", "");
        p.spec.as_mut().unwrap().node_selector = Some([("size".into(), "Large".into())].into());
        let state = CycleState::new(pinfo(p.clone()));
        assert!(filter(&state, &large).is_ok());
        assert_eq!(
            filter(&state, &small).unwrap_err().reasons,
            vec![ERR_REASON]
        );

        p.spec.as_mut().unwrap().node_selector = None;
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    prefer(10, "size", "Small"),
                    prefer(5, "size", "Large"),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let state = CycleState::new(pinfo(p));
        let mut scores = vec![score(&state, &large), score(&state, &small)];
        assert_eq!(scores, vec![5, 10]);
        normalize(&mut scores);
        assert_eq!(scores, vec![50, 100]);
    }
}
