//! The pod network across nodes: every node reaches every other node's pod
//! CIDR (`spec.podCIDR`, from the cluster's node IPAM), as flannel arranges
//! it, in one of two ways the user chooses (`--pod-network-backend`,
//! `podNetworkBackend`):
//!
//! - `host-gw`: a route per peer node's pod CIDR via its InternalIP, for
//!   nodes on one L2 segment;
//! - `vxlan`: a VXLAN device (VNI 1, UDP 8472) with, per peer node, a route
//!   to its pod CIDR via its tunnel endpoint, a neighbour entry for that
//!   endpoint and a forwarding entry sending its MAC to the node's address,
//!   for nodes that only reach each other by IP.
//!
//! Nodes are watched through the apiserver: entries appear when a node gets
//! its pod CIDR and address and go when it is deleted (or loses either).
//! A node that turns NotReady, or unreachable, keeps its entries, as flannel
//! keeps a node's lease and routes until its Node object is deleted: the
//! node's pods may well still run and answer (an agent that lost the
//! apiserver is not a dead host), and their Service endpoints are withdrawn
//! by the endpoints controller, not by the network. Pod traffic is
//! masqueraded only when it leaves the pod networks, so pod-to-pod traffic
//! keeps its source address (the default CNI config then leaves `ipMasq`
//! off).
//!
//! - [`plan`]: Nodes → peers → routes, FDB and neighbour entries, rules (pure).
//! - [`link`]: rtnetlink, the one place they are made so.

pub mod link;
pub mod plan;

use std::net::Ipv4Addr;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kubelab_cni::ip::IpPrefix;
use tokio::sync::watch;

use crate::proxy::apply::{ApplyError, Iptables, IptablesBackend};
use crate::proxy::iptables::{JumpRule, SavedTable};
use link::{LinkError, NodeLinks, VxlanDevice};
use plan::{Peer, Skipped};

/// `--pod-network-backend` / `podNetworkBackend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PodNetworkBackend {
    /// No routes to other nodes' pods (a single node, or another add-on's job).
    #[default]
    None,
    /// A route per peer node's pod CIDR via its address (one L2 segment).
    HostGw,
    /// A VXLAN overlay (VNI 1, UDP port 8472).
    Vxlan,
}

impl PodNetworkBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::HostGw => "host-gw",
            Self::Vxlan => "vxlan",
        }
    }
}

impl std::str::FromStr for PodNetworkBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "host-gw" => Ok(Self::HostGw),
            "vxlan" => Ok(Self::Vxlan),
            other => Err(format!(
                "unsupported pod network backend {other:?}: must be \"host-gw\", \"vxlan\" or \"none\""
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClusterNetworkOptions {
    pub backend: PodNetworkBackend,
    pub node_name: String,
    /// The node's InternalIP: where peers send this node's pods' traffic.
    pub node_ip: Ipv4Addr,
    /// `--pod-cidr`, which wins over the Node's `spec.podCIDR`.
    pub pod_cidr: Option<IpPrefix>,
    /// `--cluster-cidr`: the pod networks in one prefix (else every node's
    /// pod CIDR counts).
    pub cluster_cidr: Option<IpPrefix>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterNetworkError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("pod network rules: {0}")]
    Rules(#[from] ApplyError),
}

/// How often everything is checked again without a change of Nodes (a route
/// someone removed comes back).
const RESYNC_PERIOD: Duration = Duration::from_secs(60);
/// How soon a failed sync is tried again.
const RETRY_PERIOD: Duration = Duration::from_secs(5);

/// The MTU pods get on a VXLAN network: the node interface's less the
/// encapsulation.
pub async fn vxlan_pod_mtu(node_ip: Ipv4Addr) -> Result<u32, LinkError> {
    let links = NodeLinks::connect()?;
    let (_, mtu) = links.interface_with(node_ip).await?;
    Ok(mtu.saturating_sub(plan::VXLAN_OVERHEAD))
}

/// Watches the Nodes and keeps this node's routes, VXLAN entries and
/// masquerade rules in line with them (a task of its own).
pub fn start(client: Client, opts: ClusterNetworkOptions) {
    if opts.backend == PodNetworkBackend::None {
        return;
    }
    let (store, writer) = reflector::store::<Node>();
    let (tx, rx) = watch::channel(0u64);
    let api: Api<Node> = Api::all(client);
    tokio::spawn(async move {
        let mut events = std::pin::pin!(
            watcher(api, watcher::Config::default())
                .default_backoff()
                .reflect(writer)
                .touched_objects()
        );
        while let Some(e) = events.next().await {
            match e {
                Ok(_) => {
                    tx.send_modify(|n| *n += 1);
                }
                Err(e) => tracing::debug!("pod network: watching Nodes: {e}"),
            }
        }
    });
    tokio::spawn(run(store, rx, opts));
}

/// What the last sync made so (a repeat of the same Nodes changes nothing).
#[derive(Debug, Clone, PartialEq)]
struct Synced {
    own: IpPrefix,
    peers: Vec<Peer>,
}

async fn run(store: Store<Node>, mut changes: watch::Receiver<u64>, opts: ClusterNetworkOptions) {
    if store.wait_until_ready().await.is_err() {
        return;
    }
    tracing::info!(
        backend = opts.backend.as_str(),
        node_ip = %opts.node_ip,
        "pod network: routing to other nodes' pod CIDRs"
    );
    let mut last: Option<Synced> = None;
    let mut last_skipped: Vec<Skipped> = vec![];
    let mut wait = Duration::ZERO;
    loop {
        let resync = tokio::select! {
            r = changes.changed() => {
                if r.is_err() {
                    return;
                }
                false
            }
            _ = tokio::time::sleep(wait) => true,
        };
        let nodes: Vec<Node> = store.state().iter().map(|n| (**n).clone()).collect();
        let own = opts.pod_cidr.or_else(|| {
            nodes
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(opts.node_name.as_str()))
                .and_then(plan::node_pod_cidr)
                .and_then(|c| c.parse::<IpPrefix>().ok())
                .filter(|c| c.addr.is_ipv4())
                .map(|c| c.masked())
        });
        let (peers, skipped) = plan::peers(&nodes, &opts.node_name);
        if skipped != last_skipped {
            for s in &skipped {
                tracing::warn!(node = %s.node, "pod network: not routing to the node's pods: {}", s.reason);
            }
            last_skipped = skipped;
        }
        let Some(own) = own else {
            tracing::debug!("pod network: this Node has no spec.podCIDR yet");
            wait = RESYNC_PERIOD;
            continue;
        };
        let now = Synced { own, peers };
        if !resync && last.as_ref() == Some(&now) {
            continue;
        }
        match sync(&opts, &now.own, &now.peers).await {
            Ok(()) => {
                if last.as_ref() != Some(&now) {
                    tracing::info!(
                        pod_cidr = %now.own,
                        peers = ?now.peers.iter().map(|p| format!("{} {} via {}", p.node, p.pod_cidr, p.node_ip)).collect::<Vec<_>>(),
                        "pod network: synced"
                    );
                }
                last = Some(now);
                wait = RESYNC_PERIOD;
            }
            Err(e) => {
                tracing::warn!(
                    "pod network: sync failed (retrying in {}s): {}",
                    RETRY_PERIOD.as_secs(),
                    crate::error_chain(&e)
                );
                last = None;
                wait = RETRY_PERIOD;
            }
        }
    }
}

/// Makes the kernel's routes, VXLAN device and entries and the rules what
/// `peers` call for.
async fn sync(
    opts: &ClusterNetworkOptions,
    own: &IpPrefix,
    peers: &[Peer],
) -> Result<(), ClusterNetworkError> {
    let links = NodeLinks::connect()?;
    let want = plan::desired_state(opts.backend, peers);
    let vxlan = match opts.backend {
        PodNetworkBackend::Vxlan => {
            let (underlay, mtu) = links.interface_with(opts.node_ip).await?;
            let vtep = plan::vtep_ip(own);
            Some(
                links
                    .ensure_vxlan(&VxlanDevice {
                        name: plan::VXLAN_DEVICE.into(),
                        vni: plan::VXLAN_VNI,
                        port: plan::VXLAN_PORT,
                        local: opts.node_ip,
                        underlay,
                        mac: plan::vtep_mac(vtep),
                        mtu: mtu.saturating_sub(plan::VXLAN_OVERHEAD),
                        vtep,
                    })
                    .await?,
            )
        }
        _ => {
            if links.delete_link(plan::VXLAN_DEVICE).await? {
                tracing::info!(
                    device = plan::VXLAN_DEVICE,
                    "pod network: removed the VXLAN device (not the backend now)"
                );
            }
            None
        }
    };

    // Entries before routes: a route's first packet finds its neighbour.
    if let Some(index) = vxlan {
        let mut have_fdb = links.fdb(index).await?;
        let have = have_fdb.iter().map(|(k, (v, _))| (*k, *v)).collect();
        let changes = plan::diff(&want.fdb, &have);
        for (mac, remote) in changes.set {
            links.set_fdb(index, mac, remote).await?;
        }
        for mac in changes.remove {
            let (_, m) = have_fdb.remove(&mac).expect("listed");
            links.delete_neighbour("forwarding entry", m).await?;
        }
        let mut have_neigh = links.neighbours(index).await?;
        let have = have_neigh.iter().map(|(k, (v, _))| (*k, *v)).collect();
        let changes = plan::diff(&want.neighbours, &have);
        for (ip, mac) in changes.set {
            links.set_neighbour(index, ip, mac).await?;
        }
        for ip in changes.remove {
            let (_, m) = have_neigh.remove(&ip).expect("listed");
            links.delete_neighbour("neighbour entry", m).await?;
        }
    }
    let mut have_routes = links.our_routes().await?;
    let have = have_routes
        .iter()
        .map(|(dst, m)| (*dst, NodeLinks::route_of(m, *dst, vxlan)))
        .collect();
    let changes = plan::diff(&want.routes, &have);
    for (_, r) in &changes.set {
        links.set_route(r, vxlan).await?;
    }
    for dst in changes.remove {
        let m = have_routes.remove(&dst).expect("listed");
        links.delete_route(dst, m).await?;
        tracing::info!(%dst, "pod network: removed the route of a node that left");
    }

    let networks = plan::cluster_networks(opts.cluster_cidr.as_ref(), own, peers);
    let own = *own;
    tokio::task::spawn_blocking(move || apply_rules(&own, &networks))
        .await
        .expect("rules task")?;
    Ok(())
}

/// What `--cleanup` removed of the pod network.
#[derive(Debug, Default)]
pub struct CleanupReport {
    /// Routes to other nodes' pod CIDRs (the agent's route protocol).
    pub routes: usize,
    pub vxlan_device: bool,
    /// The iptables backends whose chains and jump rules went.
    pub rules: Vec<IptablesBackend>,
}

/// Removes everything the pod network made on this node: its routes, the
/// VXLAN device (with its entries) and its masquerade and forward rules.
pub async fn cleanup() -> Result<CleanupReport, ClusterNetworkError> {
    let links = NodeLinks::connect()?;
    let mut report = CleanupReport::default();
    for (dst, m) in links.our_routes().await? {
        links.delete_route(dst, m).await?;
        report.routes += 1;
    }
    report.vxlan_device = links.delete_link(plan::VXLAN_DEVICE).await?;
    report.rules = tokio::task::spawn_blocking(remove_rules)
        .await
        .expect("rules task")?;
    Ok(report)
}

fn remove_rules() -> Result<Vec<IptablesBackend>, ApplyError> {
    let ours = |c: &str| c == plan::POSTROUTING_CHAIN || c == plan::FORWARD_CHAIN;
    let mut removed = Vec::new();
    for backend in [IptablesBackend::Nft, IptablesBackend::Legacy] {
        let ipt = Iptables::with_backend(backend)?;
        if !crate::proxy::apply::which(&ipt.save_program()) {
            continue;
        }
        let nat = ipt.save("nat")?;
        let filter = ipt.save("filter")?;
        if let Some(text) =
            crate::proxy::iptables::render_chain_removal(&nat, &ours, &filter, &ours)
        {
            ipt.restore(&text)?;
            removed.push(backend);
        }
    }
    Ok(removed)
}

/// The jumps from the built-in chains into the pod network's chains.
fn jump_rules() -> [JumpRule; 2] {
    [
        JumpRule {
            table: "nat",
            chain: "POSTROUTING",
            target: plan::POSTROUTING_CHAIN,
            comment: "kubelab pod network masquerading",
            new_only: false,
        },
        JumpRule {
            table: "filter",
            chain: "FORWARD",
            target: plan::FORWARD_CHAIN,
            comment: "kubelab pod network forwarding",
            new_only: false,
        },
    ]
}

fn apply_rules(own: &IpPrefix, networks: &[IpPrefix]) -> Result<(), ApplyError> {
    let ipt = Iptables::detect()?;
    ipt.restore(&plan::render_rules(own, networks, ipt.has_random_fully()))?;
    let mut missing = String::new();
    for j in jump_rules() {
        let saved: SavedTable = ipt.save(j.table)?;
        if !j.present_in(&saved) {
            missing.push_str(&format!(
                "*{}\n-I {} 1 {}\nCOMMIT\n",
                j.table,
                j.chain,
                j.spec()
            ));
        }
    }
    if !missing.is_empty() {
        ipt.restore(&missing)?;
    }
    Ok(())
}
