//! Kubernetes' rules that the node and the control plane both apply, written
//! once (k8s.io/apimachinery and k8s.io/component-helpers are the models):
//! quantities, label selectors, and the predicates the scheduler, the
//! DaemonSet controller and the taint manager share.

pub mod node_affinity;
pub mod quantity;
pub mod resources;
pub mod selector;
pub mod taints;
pub mod template_hash;
