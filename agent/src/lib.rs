//! kubelab-agent: a kubelet-like node agent.
//!
//! Where things live (kubelet's names where one exists):
//! - [`config`]: pod sources (static manifest dir, apiserver watch), merged into one desired set.
//! - [`pod`]: one worker per pod, a state machine that owns its pod.
//! - [`runtime`]: OCI spec from a pod (pure), sandbox, shim, container init, images.
//! - [`images`]: pull policy, back-off and pull secrets above the runtime's image service.
//! - [`cgroups`]: one driver over cgroup v1 and v2, and the QoS maths.
//! - [`logs`]: CRI-format container logs.
//! - [`network`]: the CNI client: pod networks by the node's CNI plugins.
//! - [`proxy`]: the service proxy: Services and EndpointSlices to iptables or nftables rules.
//! - [`status`]: pod status as the API reports it.
//! - [`kubeapi`]: the node in a cluster: Node and Lease, pod status and mirror pods, events.
//! - [`server`]: the kubelet HTTP API (`/pods`, `/stats/summary`, ...).
//! - [`token`]: the token manager: pods' bound ServiceAccount tokens, refreshed.
//! - [`volume`]: pod volumes on the node, handed to the runtime as CRI mounts.
//!
//! The user tools that watch a node through that API (`top`, `experiment`)
//! are their own binary, `kubelab` (the `tools/` crate).

pub mod agent;
pub mod certificate;
pub mod cgroups;
pub mod config;
pub mod context;
pub mod events;
pub mod eviction;
pub mod hollow;
pub mod host;
pub mod images;
pub mod kubeapi;
pub mod logs;
pub mod network;
pub mod pod;
pub mod prober;
pub mod proxy;
pub use kubelab_rules::quantity;
pub mod runtime;
pub mod server;
pub mod status;
pub mod token;
pub mod volume;

/// An error with its causes, `outer: inner: root`, for messages users read
/// (module errors keep their cause in `source()`, as thiserror has it).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}
