//! NodeUnschedulable: a cordoned node (`spec.unschedulable`) takes only
//! pods that tolerate `node.kubernetes.io/unschedulable:NoSchedule`.

use k8s_openapi::api::core::v1::Taint;
use kubelab_rules::taints;

use super::{Code, CycleState, FilterResult, Plugin, Rejection};
use crate::scheduler::node_info::NodeInfo;

pub const ERR_REASON: &str = "node(s) were unschedulable";

pub fn filter(state: &CycleState, node: &NodeInfo) -> FilterResult {
    let cordoned = node
        .node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    if !cordoned {
        return Ok(());
    }
    let taint = Taint {
        key: taints::TAINT_NODE_UNSCHEDULABLE.into(),
        effect: taints::NO_SCHEDULE.into(),
        ..Default::default()
    };
    if taints::is_tolerated(&taint, &state.tolerations) {
        return Ok(());
    }
    Err(Rejection::new(
        Plugin::NodeUnschedulable,
        Code::UnschedulableAndUnresolvable,
        ERR_REASON,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::*;
    use k8s_openapi::api::core::v1::Toleration;

    #[test]
    fn cordoned_nodes_refuse_pods_without_the_toleration() {
        let mut n = node("n1", "1", "1Gi", &[]);
        let state = CycleState::new(pinfo(pod("p", "", "")));
        assert!(filter(&state, &info(n.clone())).is_ok());
        n.spec.as_mut().unwrap().unschedulable = Some(true);
        let err = filter(&state, &info(n.clone())).unwrap_err();
        assert_eq!(err.reasons, vec![ERR_REASON]);
        assert_eq!(err.code, Code::UnschedulableAndUnresolvable);
        let mut tolerant = state.clone();
        tolerant.tolerations = vec![Toleration {
            key: Some(taints::TAINT_NODE_UNSCHEDULABLE.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }];
        assert!(filter(&tolerant, &info(n)).is_ok());
    }
}
