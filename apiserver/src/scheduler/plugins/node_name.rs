//! NodeName: a pod naming a node in `spec.nodeName` fits only there.

use super::{Code, CycleState, FilterResult, Plugin, Rejection};
use crate::scheduler::node_info::NodeInfo;

pub const ERR_REASON: &str = "node(s) didn't match the requested node name";

pub fn filter(state: &CycleState, node: &NodeInfo) -> FilterResult {
    match state.pod.node_name() {
        "" => Ok(()),
        wanted if wanted == node.name => Ok(()),
        _ => Err(Rejection::new(
            Plugin::NodeName,
            Code::UnschedulableAndUnresolvable,
            ERR_REASON,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::*;

    #[test]
    fn only_the_named_node_fits() {
        let state = CycleState::new(on(pod("p", "", ""), "n2"));
        assert!(filter(&state, &info(node("n2", "1", "1Gi", &[]))).is_ok());
        let err = filter(&state, &info(node("n1", "1", "1Gi", &[]))).unwrap_err();
        assert_eq!(err.reasons, vec![ERR_REASON]);
        let free = CycleState::new(pinfo(pod("p", "", "")));
        assert!(filter(&free, &info(node("n1", "1", "1Gi", &[]))).is_ok());
    }
}
