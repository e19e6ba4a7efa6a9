//! kube-scheduler's in-tree plugins as pure functions over a [`Snapshot`]:
//! filters say whether a pod may go on a node (and why not, word for word),
//! scores rank the nodes that passed (0..=100 each, weighted by the
//! profile). State a plugin computes once per pod (PreFilter/PreScore)
//! lives in [`CycleState`].

pub mod image_locality;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_resources;
pub mod node_unschedulable;
pub mod pod_topology_spread;
pub mod taint_toleration;
pub mod volume_binding;

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Toleration;

use super::node_info::{NodeInfo, PodInfo};
use super::workload_selectors::WorkloadSelectors;

/// The highest score a plugin gives a node (`framework.MaxNodeScore`).
pub const MAX_NODE_SCORE: i64 = 100;

/// Why a filter refused a node, as kube-scheduler's status codes: may
/// preemption help (`Unschedulable`) or not (`UnschedulableAndUnresolvable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Unschedulable,
    UnschedulableAndUnresolvable,
}

/// A filter's refusal: the code, the plugin and the reasons the user reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: Code,
    pub plugin: Plugin,
    pub reasons: Vec<String>,
}

impl Rejection {
    pub fn new(plugin: Plugin, code: Code, reason: impl Into<String>) -> Self {
        Rejection {
            code,
            plugin,
            reasons: vec![reason.into()],
        }
    }
}

pub type FilterResult = Result<(), Rejection>;

/// The in-tree plugins this scheduler has, by their configuration names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Plugin {
    PrioritySort,
    NodeUnschedulable,
    NodeName,
    TaintToleration,
    NodeAffinity,
    NodePorts,
    NodeResourcesFit,
    NodeResourcesBalancedAllocation,
    InterPodAffinity,
    PodTopologySpread,
    ImageLocality,
    VolumeBinding,
    DefaultPreemption,
    DefaultBinder,
}

impl Plugin {
    pub const ALL: [Plugin; 14] = [
        Plugin::PrioritySort,
        Plugin::NodeUnschedulable,
        Plugin::NodeName,
        Plugin::TaintToleration,
        Plugin::NodeAffinity,
        Plugin::NodePorts,
        Plugin::NodeResourcesFit,
        Plugin::NodeResourcesBalancedAllocation,
        Plugin::InterPodAffinity,
        Plugin::PodTopologySpread,
        Plugin::ImageLocality,
        Plugin::VolumeBinding,
        Plugin::DefaultPreemption,
        Plugin::DefaultBinder,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Plugin::PrioritySort => "PrioritySort",
            Plugin::NodeUnschedulable => "NodeUnschedulable",
            Plugin::NodeName => "NodeName",
            Plugin::TaintToleration => "TaintToleration",
            Plugin::NodeAffinity => "NodeAffinity",
            Plugin::NodePorts => "NodePorts",
            Plugin::NodeResourcesFit => "NodeResourcesFit",
            Plugin::NodeResourcesBalancedAllocation => "NodeResourcesBalancedAllocation",
            Plugin::InterPodAffinity => "InterPodAffinity",
            Plugin::PodTopologySpread => "PodTopologySpread",
            Plugin::ImageLocality => "ImageLocality",
            Plugin::VolumeBinding => "VolumeBinding",
            Plugin::DefaultPreemption => "DefaultPreemption",
            Plugin::DefaultBinder => "DefaultBinder",
        }
    }

    pub fn from_name(name: &str) -> Option<Plugin> {
        Plugin::ALL.into_iter().find(|p| p.name() == name)
    }

    pub fn is_filter(self) -> bool {
        matches!(
            self,
            Plugin::NodeUnschedulable
                | Plugin::NodeName
                | Plugin::TaintToleration
                | Plugin::NodeAffinity
                | Plugin::NodePorts
                | Plugin::NodeResourcesFit
                | Plugin::InterPodAffinity
                | Plugin::PodTopologySpread
                | Plugin::VolumeBinding
        )
    }

    pub fn is_score(self) -> bool {
        matches!(
            self,
            Plugin::TaintToleration
                | Plugin::NodeAffinity
                | Plugin::NodeResourcesFit
                | Plugin::NodeResourcesBalancedAllocation
                | Plugin::InterPodAffinity
                | Plugin::PodTopologySpread
                | Plugin::ImageLocality
        )
    }
}

/// The cluster as one scheduling cycle sees it.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    pub nodes: &'a [NodeInfo],
    /// Namespaces' labels, for `namespaceSelector` in pod affinity terms.
    pub namespace_labels: &'a HashMap<String, BTreeMap<String, String>>,
    /// Workloads' selectors, for the default topology spreading.
    pub workloads: &'a WorkloadSelectors,
    /// Claims, volumes and classes, for VolumeBinding.
    pub volumes: &'a volume_binding::VolumeObjects,
}

/// What the plugins compute once per pod and cycle.
#[derive(Debug, Clone)]
pub struct CycleState {
    pub pod: PodInfo,
    pub tolerations: Vec<Toleration>,
    pub inter_pod: Option<inter_pod_affinity::PreFilterState>,
    pub spread: Option<pod_topology_spread::PreFilterState>,
    /// Pods nominated to nodes (by preemption) with at least this pod's
    /// priority: their requests count as used on that node.
    pub nominated: HashMap<String, Vec<PodInfo>>,
    /// The pod's claims, when it has any (VolumeBinding's PreFilter).
    pub volumes: Option<volume_binding::PreFilterState>,
    /// A PreFilter's refusal of every node.
    pub pre_filter_rejection: Option<Rejection>,
}

impl CycleState {
    pub fn new(pod: PodInfo) -> Self {
        let tolerations = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        CycleState {
            pod,
            tolerations,
            inter_pod: None,
            spread: None,
            nominated: HashMap::new(),
            volumes: None,
            pre_filter_rejection: None,
        }
    }
}

/// `DefaultNormalizeScore`: scales scores to 0..=max, reversed when a
/// lower raw score is better.
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        let v = MAX_NODE_SCORE * *s / max;
        *s = if reverse { MAX_NODE_SCORE - v } else { v };
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Crafted nodes and pods for the plugins' unit tests.
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, Node, NodeSpec, NodeStatus, Pod, PodSpec, ResourceRequirements,
        Taint,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::super::node_info::{NodeInfo, PodInfo};
    use super::super::workload_selectors::WorkloadSelectors;

    /// No Services or controllers.
    pub static NO_WORKLOADS: WorkloadSelectors = WorkloadSelectors::new();

    /// No claims, volumes or classes.
    pub fn no_volumes() -> &'static super::volume_binding::VolumeObjects {
        static NONE: std::sync::OnceLock<super::volume_binding::VolumeObjects> =
            std::sync::OnceLock::new();
        NONE.get_or_init(Default::default)
    }

    pub fn node(name: &str, cpu: &str, memory: &str, labels: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .chain([("kubernetes.io/hostname".to_string(), name.to_string())])
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some(
                    [
                        ("cpu".to_string(), Quantity(cpu.into())),
                        ("memory".to_string(), Quantity(memory.into())),
                        ("pods".to_string(), Quantity("110".into())),
                    ]
                    .into(),
                ),
                ..Default::default()
            }),
        }
    }

    pub fn tainted(mut n: Node, taints: Vec<Taint>) -> Node {
        n.spec.get_or_insert_with(Default::default).taints = Some(taints);
        n
    }

    pub fn info(n: Node) -> NodeInfo {
        NodeInfo::new(Arc::new(n))
    }

    pub fn pod(name: &str, cpu: &str, memory: &str) -> Pod {
        let mut requests = std::collections::BTreeMap::new();
        if !cpu.is_empty() {
            requests.insert("cpu".to_string(), Quantity(cpu.into()));
        }
        if !memory.is_empty() {
            requests.insert("memory".to_string(), Quantity(memory.into()));
        }
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some("busybox".into()),
                    resources: Some(ResourceRequirements {
                        requests: Some(requests),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn labelled(mut p: Pod, labels: &[(&str, &str)]) -> Pod {
        p.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        p
    }

    pub fn with_host_port(mut p: Pod, port: i32) -> Pod {
        p.spec.as_mut().unwrap().containers[0].ports = Some(vec![ContainerPort {
            container_port: port,
            host_port: Some(port),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]);
        p
    }

    pub fn on(mut p: Pod, node: &str) -> PodInfo {
        p.spec.as_mut().unwrap().node_name = Some(node.into());
        PodInfo::new(Arc::new(p))
    }

    pub fn pinfo(p: Pod) -> PodInfo {
        PodInfo::new(Arc::new(p))
    }
}
