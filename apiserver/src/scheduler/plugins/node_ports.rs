//! NodePorts: a pod's `hostPort`s must be free on the node (same protocol
//! and port clash when either side listens on every address or both on
//! the same one).

use super::{Code, CycleState, FilterResult, Plugin, Rejection};
use crate::scheduler::node_info::NodeInfo;

pub const ERR_REASON: &str = "node(s) didn't have free ports for the requested pod ports";

pub fn filter(state: &CycleState, node: &NodeInfo) -> FilterResult {
    let clash = state
        .pod
        .host_ports
        .iter()
        .any(|want| node.used_ports.iter().any(|used| used.conflicts(want)));
    if clash {
        Err(Rejection::new(
            Plugin::NodePorts,
            Code::Unschedulable,
            ERR_REASON,
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::*;

    #[test]
    fn a_used_host_port_refuses_the_node() {
        let mut n = info(node("n1", "1", "1Gi", &[]));
        n.add_pod(on(with_host_port(pod("web", "", ""), 8080), "n1"));
        let same = CycleState::new(pinfo(with_host_port(pod("p", "", ""), 8080)));
        let err = filter(&same, &n).unwrap_err();
        assert_eq!(
            (err.code, err.reasons),
            (Code::Unschedulable, vec![ERR_REASON.to_string()])
        );
        let other = CycleState::new(pinfo(with_host_port(pod("q", "", ""), 9090)));
        assert!(filter(&other, &n).is_ok());
        // The port is free again once the pod leaves.
        n.remove_pod("uid-web");
        assert!(filter(&same, &n).is_ok());
    }
}
