//! What the scheduler knows about one node and the pods on it
//! (kube-scheduler's `framework.NodeInfo` and `PodInfo`): allocatable and
//! requested amounts as plain integers, host ports in use, images, and the
//! pods themselves for the inter-pod rules. Built from API objects once per
//! change, read by every filter and score.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodSpec};
use kubelab_rules::resources::{self, RequestOptions, Resources};

/// Amounts in the units the scheduler compares (`framework.Resource`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceVec {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub allowed_pods: i64,
    /// Extended resources, hugepages and anything else, in units.
    pub scalar: BTreeMap<String, i64>,
}

impl ResourceVec {
    pub fn from_resources(r: &Resources) -> Self {
        let mut v = ResourceVec {
            milli_cpu: r.milli_cpu(),
            memory: r.memory(),
            ephemeral_storage: r.units(resources::EPHEMERAL_STORAGE),
            allowed_pods: r.units(resources::PODS),
            scalar: BTreeMap::new(),
        };
        for name in r.names() {
            if ![
                resources::CPU,
                resources::MEMORY,
                resources::EPHEMERAL_STORAGE,
                resources::PODS,
            ]
            .contains(&name)
            {
                v.scalar.insert(name.to_owned(), r.units(name));
            }
        }
        v
    }

    pub fn add(&mut self, o: &ResourceVec) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.allowed_pods += o.allowed_pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_insert(0) += v;
        }
    }

    pub fn sub(&mut self, o: &ResourceVec) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        self.allowed_pods -= o.allowed_pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_insert(0) -= v;
        }
    }

    /// An amount by resource name (`cpu` in millicores).
    pub fn get(&self, name: &str) -> i64 {
        match name {
            resources::CPU => self.milli_cpu,
            resources::MEMORY => self.memory,
            resources::EPHEMERAL_STORAGE => self.ephemeral_storage,
            resources::PODS => self.allowed_pods,
            other => self.scalar.get(other).copied().unwrap_or(0),
        }
    }
}

/// A host port a container claims: (protocol, hostIP, port).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i32,
}

impl HostPort {
    /// Two claims clash on the same protocol and port when either listens on
    /// every address or both on the same one.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.protocol == other.protocol
            && self.port == other.port
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// The host ports a pod's containers ask for (`hostPort` > 0), hostIP
/// defaulting to every address.
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| HostPort {
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            ip: p
                .host_ip
                .clone()
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| "0.0.0.0".into()),
            port: p.host_port.unwrap_or(0),
        })
        .collect()
}

/// One pod as the scheduler sees it, its derived values computed once.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub priority: i32,
    pub requests: ResourceVec,
    /// CPU (millicores) and memory with the scoring defaults for missing requests.
    pub non_zero: (i64, i64),
    pub host_ports: Vec<HostPort>,
    pub has_required_anti_affinity: bool,
    pub has_affinity: bool,
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> Self {
        // Read in place: a pod's spec is large and this runs per event.
        let no_spec;
        let spec = match &pod.spec {
            Some(s) => s,
            None => {
                no_spec = PodSpec::default();
                &no_spec
            }
        };
        let requests = resources::pod_requests(spec, RequestOptions::default())
            .map(|r| ResourceVec::from_resources(&r))
            .unwrap_or_default();
        let non_zero = resources::pod_requests(
            spec,
            RequestOptions {
                non_zero_defaults: true,
                ..Default::default()
            },
        )
        .map(|r| (r.milli_cpu(), r.memory()))
        .unwrap_or((
            resources::DEFAULT_MILLI_CPU_REQUEST,
            resources::DEFAULT_MEMORY_REQUEST,
        ));
        let affinity = spec.affinity.as_ref();
        let has_required_anti_affinity = affinity
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .is_some_and(|t| !t.is_empty());
        let has_affinity =
            affinity.is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some());
        PodInfo {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            priority: spec.priority.unwrap_or(0),
            host_ports: host_ports(&pod),
            requests,
            non_zero,
            has_required_anti_affinity,
            has_affinity,
            pod,
        }
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.pod.metadata.labels.as_ref().unwrap_or(&EMPTY)
    }

    pub fn node_name(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or_default()
    }

    pub fn is_terminating(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
    }
}

/// A node and what is placed on it.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub name: String,
    pub allocatable: ResourceVec,
    /// The sum of the placed pods' requests.
    pub requested: ResourceVec,
    /// The same with the scoring defaults (CPU millicores, memory).
    pub non_zero_requested: (i64, i64),
    pub pods: Vec<PodInfo>,
    pub used_ports: Vec<HostPort>,
    /// Image names (every name the node reports) → size in bytes.
    pub images: BTreeMap<String, i64>,
    pub pods_with_required_anti_affinity: usize,
    pub pods_with_affinity: usize,
}

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> Self {
        let mut info = NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            ..Default::default()
        };
        info.set_node(node);
        info
    }

    /// Replaces the Node object (labels, taints, allocatable), keeping pods.
    pub fn set_node(&mut self, node: Arc<Node>) {
        self.allocatable = Resources::allocatable(&node)
            .map(|r| ResourceVec::from_resources(&r))
            .unwrap_or_default();
        self.images = node
            .status
            .as_ref()
            .and_then(|s| s.images.as_ref())
            .into_iter()
            .flatten()
            .flat_map(|img| {
                let size = img.size_bytes.unwrap_or(0);
                img.names.iter().flatten().map(move |n| {
                    (
                        super::plugins::image_locality::normalized_image_name(n),
                        size,
                    )
                })
            })
            .collect();
        self.node = node;
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.node.metadata.labels.as_ref().unwrap_or(&EMPTY)
    }

    pub fn add_pod(&mut self, p: PodInfo) {
        self.requested.add(&p.requests);
        self.non_zero_requested.0 += p.non_zero.0;
        self.non_zero_requested.1 += p.non_zero.1;
        self.used_ports.extend(p.host_ports.iter().cloned());
        self.pods_with_required_anti_affinity += usize::from(p.has_required_anti_affinity);
        self.pods_with_affinity += usize::from(p.has_affinity);
        self.pods.push(p);
    }

    /// Removes the pod with this UID; whether it was there.
    pub fn remove_pod(&mut self, uid: &str) -> Option<PodInfo> {
        let i = self.pods.iter().position(|p| p.uid == uid)?;
        let p = self.pods.swap_remove(i);
        self.requested.sub(&p.requests);
        self.non_zero_requested.0 -= p.non_zero.0;
        self.non_zero_requested.1 -= p.non_zero.1;
        for hp in &p.host_ports {
            if let Some(j) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(j);
            }
        }
        self.pods_with_required_anti_affinity -= usize::from(p.has_required_anti_affinity);
        self.pods_with_affinity -= usize::from(p.has_affinity);
        Some(p)
    }

    pub fn node_port_set(&self) -> HashSet<&HostPort> {
        self.used_ports.iter().collect()
    }
}
