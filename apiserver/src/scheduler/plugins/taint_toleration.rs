//! TaintToleration: NoSchedule and NoExecute taints keep pods that don't
//! tolerate them off a node; PreferNoSchedule taints only lower its score.

use kubelab_rules::taints;

use super::{Code, CycleState, FilterResult, Plugin, Rejection, default_normalize};
use crate::scheduler::node_info::NodeInfo;

pub fn filter(state: &CycleState, node: &NodeInfo) -> FilterResult {
    match taints::untolerated_scheduling_taint(&node.node, &state.tolerations) {
        None => Ok(()),
        Some(t) => Err(Rejection::new(
            Plugin::TaintToleration,
            Code::UnschedulableAndUnresolvable,
            format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or_default()
            ),
        )),
    }
}

/// Raw score: how many PreferNoSchedule taints the pod doesn't tolerate.
pub fn score(state: &CycleState, node: &NodeInfo) -> i64 {
    taints::count_intolerable_prefer_no_schedule(
        taints::node_taints(&node.node),
        &state.tolerations,
    )
}

/// Fewer intolerable taints score higher.
pub fn normalize(scores: &mut [i64]) {
    default_normalize(scores, true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::*;
    use k8s_openapi::api::core::v1::{Taint, Toleration};

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: (!value.is_empty()).then(|| value.into()),
            effect: effect.into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_untolerated_taint_is_named_as_kube_scheduler_names_it() {
        let n = info(tainted(
            node("node1", "1", "1Gi", &[]),
            vec![taint("app", "blue", "NoSchedule")],
        ));
        let state = CycleState::new(pinfo(pod("p", "", "")));
        let err = filter(&state, &n).unwrap_err();
        assert_eq!(
            err.reasons,
            vec!["node(s) had untolerated taint {app: blue}"]
        );
        let cp = info(tainted(
            node("cp", "1", "1Gi", &[]),
            vec![taint(
                "node-role.kubernetes.io/control-plane",
                "",
                "NoSchedule",
            )],
        ));
        assert_eq!(
            filter(&state, &cp).unwrap_err().reasons,
            vec!["node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"]
        );
        let mut tolerant = state.clone();
        tolerant.tolerations = vec![Toleration {
            key: Some("app".into()),
            operator: Some("Equal".into()),
            value: Some("blue".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }];
        assert!(filter(&tolerant, &n).is_ok());
    }

    #[test]
    fn prefer_no_schedule_lowers_the_score_only() {
        let soft = info(tainted(
            node("soft", "1", "1Gi", &[]),
            vec![taint("spot", "", "PreferNoSchedule")],
        ));
        let plain = info(node("plain", "1", "1Gi", &[]));
        let state = CycleState::new(pinfo(pod("p", "", "")));
        assert!(filter(&state, &soft).is_ok());
        let mut scores = vec![score(&state, &soft), score(&state, &plain)];
        normalize(&mut scores);
        assert_eq!(scores, vec![0, 100]);
    }
}
