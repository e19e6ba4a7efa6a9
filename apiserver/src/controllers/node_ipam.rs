//! Node IPAM, as kube-controller-manager's range allocator does it
//! (`--allocate-node-cidrs`, `--cluster-cidr`, `--node-cidr-mask-size`):
//! every Node without `spec.podCIDR` gets the next free subnet of the
//! cluster CIDR in `spec.podCIDR` and `spec.podCIDRs`. Which subnets are
//! taken is derived from the stored Nodes, so allocations survive
//! restarts; a deleted Node's subnet is free again.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use serde_json::json;

use crate::api::{Api, object};
use crate::cidr::Ipv4Cidr;
use crate::kinds::Kind;
use crate::storage::{EventType, StorageError};

/// `cidrset`'s limit: at most 2^16 node subnets per cluster CIDR.
const MAX_SUBNET_BITS: u8 = 16;
const RELIST_BACKOFF: Duration = Duration::from_secs(1);
/// The component named in this controller's events.
const COMPONENT: &str = "cidrAllocator";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error(
        "--node-cidr-mask-size={mask} must be between {} (the prefix length of --cluster-cidr={cluster}) and 32",
        cluster.prefix()
    )]
    MaskOutsideCluster { mask: u8, cluster: Ipv4Cidr },
    #[error(
        "--node-cidr-mask-size={mask} cuts --cluster-cidr={cluster} into more than 2^{MAX_SUBNET_BITS} node subnets"
    )]
    TooManySubnets { mask: u8, cluster: Ipv4Cidr },
}

/// The flags' values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeIpamOptions {
    pub cluster_cidr: Ipv4Cidr,
    pub node_cidr_mask_size: u8,
}

impl Default for NodeIpamOptions {
    fn default() -> Self {
        Self {
            cluster_cidr: Ipv4Cidr::new([10, 244, 0, 0].into(), 16),
            node_cidr_mask_size: 24,
        }
    }
}

/// The node subnets of a cluster CIDR and which of them are taken
/// (`cidrset.CidrSet`): handed out round-robin from after the last one.
#[derive(Debug, Clone)]
pub struct CidrSet {
    cluster: Ipv4Cidr,
    mask: u8,
    used: Vec<bool>,
    next: u64,
}

impl CidrSet {
    pub fn new(opts: NodeIpamOptions) -> Result<Self, IpamError> {
        let (cluster, mask) = (opts.cluster_cidr, opts.node_cidr_mask_size);
        if mask < cluster.prefix() || mask > 32 {
            return Err(IpamError::MaskOutsideCluster { mask, cluster });
        }
        if mask - cluster.prefix() > MAX_SUBNET_BITS {
            return Err(IpamError::TooManySubnets { mask, cluster });
        }
        Ok(Self {
            cluster,
            mask,
            used: vec![false; 1usize << (mask - cluster.prefix())],
            next: 0,
        })
    }

    fn index(&self, cidr: &Ipv4Cidr) -> Option<usize> {
        if cidr.prefix() != self.mask {
            return None;
        }
        self.cluster.subnet_index(cidr).map(|i| i as usize)
    }

    /// Marks `cidr` taken; false if it is not one of this set's subnets.
    pub fn occupy(&mut self, cidr: &Ipv4Cidr) -> bool {
        match self.index(cidr) {
            Some(i) => {
                self.used[i] = true;
                true
            }
            None => false,
        }
    }

    pub fn release(&mut self, cidr: &Ipv4Cidr) {
        if let Some(i) = self.index(cidr) {
            self.used[i] = false;
        }
    }

    /// The next free subnet, now taken; `None` when all are.
    pub fn allocate_next(&mut self) -> Option<Ipv4Cidr> {
        let n = self.used.len() as u64;
        let i = (0..n)
            .map(|k| (self.next + k) % n)
            .find(|i| !self.used[*i as usize])?;
        self.used[i as usize] = true;
        self.next = (i + 1) % n;
        self.cluster.subnet(self.mask, i)
    }
}

/// The Node's pod subnet, if it has a parsable one.
fn pod_cidr(node: &Node) -> Option<Ipv4Cidr> {
    node.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok()
}

pub struct NodeIpamController {
    api: Arc<Api>,
    nodes_kind: Arc<dyn Kind>,
    opts: NodeIpamOptions,
    set: CidrSet,
    /// Each node's subnet, as last seen or set.
    assigned: HashMap<String, Ipv4Cidr>,
    /// Nodes told that no subnet is left (one event each), waiting for a
    /// deleted node's subnet.
    waiting: BTreeSet<String>,
}

impl NodeIpamController {
    pub fn new(api: Arc<Api>, opts: NodeIpamOptions) -> Result<Self, IpamError> {
        Ok(Self {
            nodes_kind: api.kind("", "v1", "nodes"),
            api,
            opts,
            set: CidrSet::new(opts)?,
            assigned: HashMap::new(),
            waiting: BTreeSet::new(),
        })
    }

    pub async fn run(mut self) {
        loop {
            if let Err(e) = self.list_and_watch().await {
                tracing::warn!("node IPAM: {e}; relisting");
            }
            tokio::time::sleep(RELIST_BACKOFF).await;
        }
    }

    async fn list_and_watch(&mut self) -> Result<(), StorageError> {
        let prefix = self.nodes_kind.info().key_prefix(None);
        let (kvs, rev) = self.api.store.list(&prefix).await?;
        let nodes: Vec<Node> = kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect();
        self.set = CidrSet::new(self.opts).expect("validated at startup");
        self.assigned.clear();
        for node in &nodes {
            self.observe(node);
        }
        tracing::info!(
            cluster_cidr = %self.opts.cluster_cidr,
            node_cidr_mask_size = self.opts.node_cidr_mask_size,
            allocated = self.assigned.len(),
            "node IPAM synced its nodes"
        );
        for node in &nodes {
            if pod_cidr(node).is_none() {
                self.ensure_cidr(node.metadata.name.as_deref().unwrap_or_default())
                    .await;
            }
        }
        let mut feed = self.api.store.watch(&prefix, rev).await?;
        while let Some(ev) = feed.next().await {
            let ev = ev?;
            let Ok(node) = serde_json::from_slice::<Node>(&ev.value) else {
                continue;
            };
            let name = node.metadata.name.clone().unwrap_or_default();
            match ev.event_type {
                EventType::Delete => {
                    self.waiting.remove(&name);
                    if let Some(cidr) = self.assigned.remove(&name) {
                        self.set.release(&cidr);
                        tracing::info!(node = %name, pod_cidr = %cidr, "released the deleted node's pod CIDR");
                        for waiting in self.waiting.clone() {
                            self.ensure_cidr(&waiting).await;
                        }
                    }
                }
                EventType::Put if pod_cidr(&node).is_some() => self.observe(&node),
                EventType::Put => self.ensure_cidr(&name).await,
            }
        }
        Err(StorageError::Backend("the nodes' change feed ended".into()))
    }

    /// Takes note of the subnet a node holds.
    fn observe(&mut self, node: &Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let Some(cidr) = pod_cidr(node) else {
            return;
        };
        if self.assigned.get(&name) == Some(&cidr) {
            return;
        }
        if let Some(old) = self.assigned.insert(name.clone(), cidr) {
            self.set.release(&old);
        }
        if !self.set.occupy(&cidr) {
            tracing::info!(node = %name, pod_cidr = %cidr, cluster_cidr = %self.opts.cluster_cidr,
                "the node's pod CIDR is not a subnet of the cluster CIDR; leaving it alone");
        }
    }

    /// Gives the node a subnet unless it has one by now.
    async fn ensure_cidr(&mut self, name: &str) {
        self.try_ensure_cidr(name).await;
        if self.assigned.contains_key(name) {
            self.waiting.remove(name);
        }
    }

    async fn try_ensure_cidr(&mut self, name: &str) {
        let kind = self.nodes_kind.clone();
        let mut allocated: Option<Ipv4Cidr> = None;
        for _attempt in 0..5 {
            let mut node = match self.api.get(kind.as_ref(), None, name).await {
                Ok(n) => n,
                Err(_) => {
                    self.waiting.remove(name);
                    break;
                }
            };
            if let Some(cidr) = node["spec"]["podCIDR"]
                .as_str()
                .and_then(|c| c.parse::<Ipv4Cidr>().ok())
            {
                // Set meanwhile (by us before a restart, or by its owner).
                if let Some(mine) = allocated.take().filter(|m| *m != cidr) {
                    self.set.release(&mine);
                }
                if let Ok(n) = serde_json::from_value::<Node>(node) {
                    self.observe(&n);
                }
                return;
            }
            let cidr = match allocated.or_else(|| self.set.allocate_next()) {
                Some(c) => c,
                None => {
                    self.cidr_not_available(&node).await;
                    return;
                }
            };
            allocated = Some(cidr);
            node["spec"]["podCIDR"] = cidr.to_string().into();
            node["spec"]["podCIDRs"] = json!([cidr.to_string()]);
            match self.api.update_object(kind.as_ref(), node, false).await {
                Ok(_) => {
                    tracing::info!(node = %name, pod_cidr = %cidr, "set the node's pod CIDR");
                    if let Some(old) = self.assigned.insert(name.to_owned(), cidr)
                        && old != cidr
                    {
                        self.set.release(&old);
                    }
                    return;
                }
                // Written meanwhile (a status update): read it again.
                Err(e) if e.code == 409 => continue,
                Err(e) => {
                    tracing::warn!(node = %name, "setting the node's pod CIDR: {}", e.message);
                    break;
                }
            }
        }
        if let Some(c) = allocated {
            self.set.release(&c);
        }
    }

    /// `CIDRNotAvailable`, as the range allocator reports it, once per node.
    async fn cidr_not_available(&mut self, node: &serde_json::Value) {
        let name = object::name(node).to_owned();
        tracing::warn!(node = %name, cluster_cidr = %self.opts.cluster_cidr,
            "no pod CIDR left for the node");
        if !self.waiting.insert(name.clone()) {
            return;
        }
        let now = object::now_rfc3339();
        let event = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("{name}.{}", &object::new_uid().replace('-', "")[..16]),
                "namespace": "default"},
            "involvedObject": {"kind": "Node", "name": name, "uid": name, "apiVersion": "v1"},
            "reason": "CIDRNotAvailable",
            "message": format!("Node {name} status is now: CIDRNotAvailable"),
            "type": "Normal",
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1});
        let events = self.api.kind("", "v1", "events");
        if let Err(e) = self.api.create_object(events.as_ref(), event).await {
            tracing::warn!(node = %name, "recording CIDRNotAvailable: {}", e.message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(cluster: &str, mask: u8) -> NodeIpamOptions {
        NodeIpamOptions {
            cluster_cidr: cluster.parse().unwrap(),
            node_cidr_mask_size: mask,
        }
    }

    #[test]
    fn hands_out_distinct_subnets_round_robin_and_reuses_released_ones_last() {
        let mut set = CidrSet::new(opts("10.244.0.0/22", 24)).unwrap();
        assert!(set.occupy(&"10.244.1.0/24".parse().unwrap()));
        let got: Vec<String> = (0..3)
            .map(|_| set.allocate_next().unwrap().to_string())
            .collect();
        assert_eq!(got, ["10.244.0.0/24", "10.244.2.0/24", "10.244.3.0/24"]);
        assert_eq!(set.allocate_next(), None, "all four taken");
        set.release(&"10.244.2.0/24".parse().unwrap());
        assert_eq!(set.allocate_next().unwrap().to_string(), "10.244.2.0/24");
    }

    #[test]
    fn foreign_subnets_are_not_occupied() {
        let mut set = CidrSet::new(opts("10.244.0.0/16", 24)).unwrap();
        assert!(!set.occupy(&"10.245.0.0/24".parse().unwrap()));
        assert!(!set.occupy(&"10.244.0.0/25".parse().unwrap()));
        assert_eq!(set.allocate_next().unwrap().to_string(), "10.244.0.0/24");
    }

    #[test]
    fn bad_mask_sizes_are_errors_naming_the_flags() {
        let e = CidrSet::new(opts("10.244.0.0/16", 8)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--node-cidr-mask-size=8 must be between 16 (the prefix length of --cluster-cidr=10.244.0.0/16) and 32"
        );
        let e = CidrSet::new(opts("10.0.0.0/8", 28)).unwrap_err();
        assert!(e.to_string().contains("more than 2^16"), "{e}");
    }
}
