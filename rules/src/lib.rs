//! Kubernetes' rules that the node and the control plane both apply, written
//! once (k8s.io/apimachinery and k8s.io/component-helpers are the models):
//! quantities, label selectors, and the predicates the scheduler, the
//! DaemonSet controller and the taint manager share.

/// The Kubernetes release the whole project stands in for: the apiserver's
/// `/version`, the node's kubeletVersion and the k8s-openapi types agree on it
/// (a kubelet newer than its apiserver is a skew Kubernetes does not allow).
pub mod version {
    pub const MAJOR: &str = "1";
    pub const MINOR: &str = "33";
    /// `v1.33.0`, as kubelet and kube-apiserver print their version.
    pub const GIT_VERSION: &str = "v1.33.0";
}

pub mod container_state;
pub mod cpu_burst;
pub mod duration;
pub mod host_users;
pub mod image_pull_policy;
pub mod limit_range;
pub mod node_affinity;
pub mod qos;
pub mod quantity;
pub mod resource_quota;
pub mod resources;
pub mod selector;
pub mod taints;
pub mod template_hash;
pub mod validation;
