//! Node IPAM, as kube-controller-manager's range allocator does it
//! (`--allocate-node-cidrs`, `--cluster-cidr`, `--node-cidr-mask-size`):
//! every Node without `spec.podCIDR` gets the next free subnet of the
//! cluster CIDR in `spec.podCIDR` and `spec.podCIDRs`. Which subnets are
//! taken is derived from the Nodes, so allocations survive restarts; a
//! deleted Node's subnet is free again.
//!
//! As upstream, the Node informer only notes subnets and queues node names;
//! workers allocate and write with a strategic merge patch of the spec
//! alone, so a kubelet's status writes never conflict with it, and a failed
//! write is retried with the work queue's back-off. Hundreds of nodes
//! registering at once never hold up the watch.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::informers::{Change, Informers};
use super::work_queue::{self, SyncResult};
use crate::cidr::Ipv4Cidr;
use crate::event_recorder::EventRecorder;

/// `cidrset`'s limit: at most 2^16 node subnets per cluster CIDR.
const MAX_SUBNET_BITS: u8 = 16;
/// The component named in this controller's events.
const COMPONENT: &str = "cidrAllocator";
/// The range allocator's `cidrUpdateWorkers`, fewer: writes are local here.
const CIDR_UPDATE_WORKERS: u16 = 8;
/// The range allocator's `cidrUpdateRetries`: patches tried before a
/// `CIDRAssignmentFailed` event and a turn on the back-off.
const CIDR_UPDATE_RETRIES: usize = 3;

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

/// What a worker does for a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It has a subnet (noted now), or one written by us that the informer
    /// has not shown yet.
    Nothing,
    /// Write this subnet, reserved for it until [`Allocations::written`]
    /// or [`Allocations::abandon`].
    Assign(Ipv4Cidr),
    /// No subnet is left; `first`: the node was not told so before.
    NotAvailable { first: bool },
}

/// Which node holds which subnet: the allocator's whole state, shared by
/// the informer's handler and the workers.
#[derive(Debug, Clone)]
pub struct Allocations {
    opts: NodeIpamOptions,
    set: CidrSet,
    /// Each node's subnet, as seen on it or written to it.
    assigned: HashMap<String, Ipv4Cidr>,
    /// Subnets reserved for nodes whose write is under way.
    in_flight: HashMap<String, Ipv4Cidr>,
    /// Nodes told that no subnet is left, waiting for a deleted node's.
    waiting: BTreeSet<String>,
}

impl Allocations {
    pub fn new(opts: NodeIpamOptions) -> Result<Self, IpamError> {
        Ok(Self {
            opts,
            set: CidrSet::new(opts)?,
            assigned: HashMap::new(),
            in_flight: HashMap::new(),
            waiting: BTreeSet::new(),
        })
    }

    /// Starts over from a full list of nodes (name and subnet). Subnets
    /// written or being written to listed nodes that the list does not
    /// show yet stay taken; those of nodes no longer listed are free.
    pub fn resync<'a>(&mut self, nodes: impl IntoIterator<Item = (&'a str, Option<Ipv4Cidr>)>) {
        let mut assigned = std::mem::take(&mut self.assigned);
        // Round-robin goes on from where it was: freed subnets come last.
        let next = self.set.next;
        self.set = CidrSet::new(self.opts).expect("validated when created");
        self.set.next = next;
        let mut listed = BTreeSet::new();
        for (name, cidr) in nodes {
            listed.insert(name.to_owned());
            match cidr {
                Some(c) => {
                    self.observe(name, c);
                }
                None => {
                    if let Some(c) = assigned.remove(name) {
                        self.set.occupy(&c);
                        self.assigned.insert(name.to_owned(), c);
                    }
                }
            }
        }
        for c in self.in_flight.values() {
            self.set.occupy(c);
        }
        self.waiting.retain(|n| listed.contains(n));
    }

    /// Takes note of the subnet a node holds; false if it is not one of
    /// the cluster CIDR's node subnets (then it is left alone).
    pub fn observe(&mut self, name: &str, cidr: Ipv4Cidr) -> bool {
        self.waiting.remove(name);
        if let Some(old) = self.assigned.insert(name.to_owned(), cidr)
            && old != cidr
        {
            self.set.release(&old);
        }
        self.set.occupy(&cidr)
    }

    /// A node is gone: its subnet is free. Returns the nodes waiting for
    /// one, to look at again.
    pub fn release(&mut self, name: &str) -> Vec<String> {
        self.waiting.remove(name);
        match self.assigned.remove(name) {
            Some(c) => {
                self.set.release(&c);
                self.waiting.iter().cloned().collect()
            }
            None => Vec::new(),
        }
    }

    /// What to do for node `name`, whose subnet is `cidr` as the informer
    /// shows it.
    pub fn decide(&mut self, name: &str, cidr: Option<Ipv4Cidr>) -> Decision {
        if let Some(c) = cidr {
            self.observe(name, c);
            return Decision::Nothing;
        }
        if self.assigned.contains_key(name) {
            return Decision::Nothing;
        }
        if let Some(c) = self.in_flight.get(name) {
            return Decision::Assign(*c);
        }
        match self.set.allocate_next() {
            Some(c) => {
                self.in_flight.insert(name.to_owned(), c);
                Decision::Assign(c)
            }
            None => Decision::NotAvailable {
                first: self.waiting.insert(name.to_owned()),
            },
        }
    }

    /// The node's subnet is written.
    pub fn written(&mut self, name: &str, cidr: Ipv4Cidr) {
        self.in_flight.remove(name);
        self.waiting.remove(name);
        if let Some(old) = self.assigned.insert(name.to_owned(), cidr)
            && old != cidr
        {
            self.set.release(&old);
        }
    }

    /// Writing the node's subnet failed (or the node is gone): the subnet
    /// is free again.
    pub fn abandon(&mut self, name: &str, cidr: Ipv4Cidr) {
        if self.in_flight.remove(name) == Some(cidr) && !self.assigned.values().any(|a| *a == cidr)
        {
            self.set.release(&cidr);
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("setting the pod CIDR of node {node} to {cidr}: {source}")]
pub struct AssignError {
    node: String,
    cidr: Ipv4Cidr,
    source: kube::Error,
}

struct Ctx {
    nodes: Api<Node>,
    allocations: Mutex<Allocations>,
    recorder: EventRecorder,
}

impl Ctx {
    fn allocations(&self) -> std::sync::MutexGuard<'_, Allocations> {
        self.allocations.lock().expect("node IPAM allocations")
    }

    /// `RecordNodeStatusChange`: "Node X status is now: REASON".
    fn node_status_change(&self, node: &Node, reason: &str) {
        let about = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: node.metadata.name.clone(),
            uid: node.metadata.uid.clone(),
            ..Default::default()
        };
        let message = format!("Node {} status is now: {reason}", node.name_any());
        self.recorder.normal(about, reason, message);
    }

    /// `PatchNodeCIDRs`: a strategic merge patch of the spec alone.
    async fn patch_cidr(&self, name: &str, cidr: Ipv4Cidr) -> Result<(), kube::Error> {
        let patch = json!({"spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]}});
        self.nodes
            .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .map(|_| ())
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Gives `node` a subnet unless it has one.
async fn sync(node: Arc<Node>, ctx: Arc<Ctx>) -> SyncResult<AssignError> {
    let name = node.name_any();
    let decision = ctx.allocations().decide(&name, pod_cidr(&node));
    let cidr = match decision {
        Decision::Nothing => return Ok(None),
        Decision::NotAvailable { first } => {
            tracing::warn!(node = %name, cluster_cidr = %ctx.allocations().opts.cluster_cidr,
                "no pod CIDR left for the node");
            if first {
                ctx.node_status_change(&node, "CIDRNotAvailable");
            }
            return Ok(None);
        }
        Decision::Assign(cidr) => cidr,
    };
    let mut last = None;
    for _ in 0..CIDR_UPDATE_RETRIES {
        match ctx.patch_cidr(&name, cidr).await {
            Ok(()) => {
                ctx.allocations().written(&name, cidr);
                tracing::info!(node = %name, pod_cidr = %cidr, "set the node's pod CIDR");
                return Ok(None);
            }
            Err(e) if is_not_found(&e) => {
                ctx.allocations().abandon(&name, cidr);
                return Ok(None);
            }
            Err(e) => last = Some(e),
        }
    }
    ctx.allocations().abandon(&name, cidr);
    ctx.node_status_change(&node, "CIDRAssignmentFailed");
    Err(AssignError {
        node: name,
        cidr,
        source: last.expect("at least one attempt"),
    })
}

/// Looks at every node again: after the first list, a relist, or a feed
/// that fell behind.
fn resync(
    ctx: &Ctx,
    nodes: &kube::runtime::reflector::Store<Node>,
    queue: &work_queue::Queue<Node>,
) {
    let state = nodes.state();
    ctx.allocations().resync(
        state
            .iter()
            .map(|n| (n.metadata.name.as_deref().unwrap_or_default(), pod_cidr(n))),
    );
    for node in state.iter().filter(|n| pod_cidr(n).is_none()) {
        queue.add_object(node);
    }
}

/// Runs the allocator on its own Node informer until it stops.
pub async fn run(client: kube::Client, opts: NodeIpamOptions) -> Result<(), IpamError> {
    let ctx = Arc::new(Ctx {
        nodes: Api::all(client.clone()),
        allocations: Mutex::new(Allocations::new(opts)?),
        recorder: EventRecorder::new(client.clone(), COMPONENT),
    });
    let informers = Informers::new(client);
    let nodes = informers.get::<Node>();
    let (queue, keys) = work_queue::queue::<Node>();
    let mut changes = nodes.subscribe();
    nodes.synced().await;
    resync(&ctx, &nodes.store, &queue);
    {
        let a = ctx.allocations();
        tracing::info!(cluster_cidr = %opts.cluster_cidr, node_cidr_mask_size = opts.node_cidr_mask_size,
            allocated = a.assigned.len(), "node IPAM synced its nodes");
    }
    let feed = async {
        loop {
            match changes.recv().await {
                Ok(Change::Applied(node)) => match pod_cidr(&node) {
                    Some(cidr) => {
                        if !ctx.allocations().observe(&node.name_any(), cidr) {
                            tracing::info!(node = %node.name_any(), pod_cidr = %cidr, cluster_cidr = %opts.cluster_cidr,
                                "the node's pod CIDR is not a subnet of the cluster CIDR; leaving it alone");
                        }
                    }
                    None => queue.add_object(&node),
                },
                Ok(Change::Deleted(node)) => {
                    for waiting in ctx.allocations().release(&node.name_any()) {
                        queue.add(None, &waiting);
                    }
                }
                Ok(Change::Resync) | Err(RecvError::Lagged(_)) => {
                    resync(&ctx, &nodes.store, &queue)
                }
                Err(RecvError::Closed) => return,
            }
        }
    };
    let workers = work_queue::run(
        "node-ipam-controller",
        nodes.store.clone(),
        keys,
        ctx.clone(),
        CIDR_UPDATE_WORKERS,
        sync,
    );
    tokio::select! {
        _ = feed => {}
        _ = workers => {}
    }
    Ok(())
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

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn nodes_registering_together_get_distinct_subnets_once_each() {
        let mut a = Allocations::new(opts("10.244.0.0/16", 24)).unwrap();
        let mut seen = BTreeSet::new();
        for i in 0..200 {
            let Decision::Assign(c) = a.decide(&format!("n{i}"), None) else {
                panic!("a subnet for n{i}")
            };
            assert!(seen.insert(c), "{c} handed out twice");
        }
        // A second look while n0's write is under way: the same subnet.
        assert_eq!(
            a.decide("n0", None),
            Decision::Assign(cidr("10.244.0.0/24"))
        );
        a.written("n0", cidr("10.244.0.0/24"));
        // The informer has not shown the write yet: nothing more to do.
        assert_eq!(a.decide("n0", None), Decision::Nothing);
        assert_eq!(
            a.decide("n0", Some(cidr("10.244.0.0/24"))),
            Decision::Nothing
        );
    }

    #[test]
    fn a_failed_write_frees_its_subnet_for_the_next_try() {
        let mut a = Allocations::new(opts("10.244.0.0/23", 24)).unwrap();
        assert_eq!(
            a.decide("n1", None),
            Decision::Assign(cidr("10.244.0.0/24"))
        );
        a.abandon("n1", cidr("10.244.0.0/24"));
        assert_eq!(
            a.decide("n2", None),
            Decision::Assign(cidr("10.244.1.0/24"))
        );
        assert_eq!(
            a.decide("n1", None),
            Decision::Assign(cidr("10.244.0.0/24"))
        );
    }

    #[test]
    fn a_full_range_tells_each_node_once_and_a_deleted_nodes_subnet_goes_to_it() {
        let mut a = Allocations::new(opts("10.244.0.0/23", 24)).unwrap();
        a.observe("n1", cidr("10.244.0.0/24"));
        a.observe("n2", cidr("10.244.1.0/24"));
        assert_eq!(a.decide("n3", None), Decision::NotAvailable { first: true });
        assert_eq!(
            a.decide("n3", None),
            Decision::NotAvailable { first: false }
        );
        assert_eq!(a.release("n2"), ["n3"]);
        assert_eq!(
            a.decide("n3", None),
            Decision::Assign(cidr("10.244.1.0/24"))
        );
        assert!(a.release("gone").is_empty());
    }

    #[test]
    fn a_resync_keeps_subnets_being_written_and_frees_deleted_nodes() {
        let mut a = Allocations::new(opts("10.244.0.0/22", 24)).unwrap();
        a.observe("old", cidr("10.244.0.0/24"));
        assert_eq!(
            a.decide("writing", None),
            Decision::Assign(cidr("10.244.1.0/24"))
        );
        assert_eq!(
            a.decide("written", None),
            Decision::Assign(cidr("10.244.2.0/24"))
        );
        a.written("written", cidr("10.244.2.0/24"));
        // A list from before the write; "old" is deleted meanwhile.
        a.resync([("writing", None), ("written", None), ("new", None)]);
        assert_eq!(a.decide("written", None), Decision::Nothing);
        assert_eq!(
            a.decide("new", None),
            Decision::Assign(cidr("10.244.3.0/24"))
        );
        assert_eq!(
            a.decide("newer", None),
            Decision::Assign(cidr("10.244.0.0/24"))
        );
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
