//! Hollow nodes (kubemark's idea): `kubelab-agent hollow --nodes N` runs N
//! simulated nodes in one process. Each has the real node logic —
//! registration, Lease heartbeats, node status, the pod manager and pod
//! workers deciding with `compute_actions`, the status manager, events —
//! around a runtime that only pretends ([`FakeRuntime::pretending`]):
//! sandboxes get addresses of the node's pod CIDR, containers "run" until
//! they are stopped, probes and hooks succeed. The scheduler, controllers
//! and apiserver can so be measured on hundreds of nodes on one machine.
//!
//! Unlike kubemark, which runs one hollow kubelet per pod, the nodes of a
//! process share one apiserver client and two watches ([`informers`]).
//!
//! [`FakeRuntime::pretending`]: crate::runtime::fake::FakeRuntime::pretending

pub mod informers;
pub mod node;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use kube::runtime::reflector;

use crate::cgroups::CgroupDriver;
use crate::runtime::image::ImageStore;

/// `kubelab-agent hollow`: simulated nodes for scale tests.
#[derive(Debug, Clone, clap::Args)]
pub struct HollowArgs {
    /// The cluster the nodes join.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: PathBuf,
    /// How many nodes this process simulates.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Node names are this prefix and a number from 0.
    #[arg(long, value_name = "PREFIX", default_value = "hollow-node-")]
    pub node_name_prefix: String,
    /// The node Leases' duration; each is renewed every quarter of it.
    #[arg(long, default_value_t = crate::kubeapi::node::LEASE_DURATION_SECONDS)]
    pub node_lease_duration_seconds: i32,
    /// The nodes' InternalIP (default: the address of the default route).
    #[arg(long)]
    pub node_ip: Option<String>,
}

/// At most this many nodes register at once: a thousand concurrent creates
/// would open as many connections.
const REGISTERING_AT_ONCE: usize = 8;

/// Runs the hollow nodes until SIGTERM or Ctrl-C. Their state lives under
/// `<root_dir>/hollow` (emptied at start: hollow pods die with the process).
pub async fn run(args: HollowArgs, root_dir: PathBuf) -> anyhow::Result<()> {
    if args.node_lease_duration_seconds <= 0 {
        anyhow::bail!(
            "--node-lease-duration-seconds {}: must be greater than 0",
            args.node_lease_duration_seconds
        );
    }
    let root = root_dir.join("hollow");
    if root.exists() {
        std::fs::remove_dir_all(&root)
            .with_context(|| format!("removing the previous run's {}", root.display()))?;
    }
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let client = crate::kubeapi::client_from_kubeconfig(&args.kubeconfig).await?;
    let (nodes_store, nodes_writer) = reflector::store();
    let shared = node::Shared {
        client: client.clone(),
        cgroups: CgroupDriver::detect("kubelab-hollow")?,
        images: ImageStore::open(&root)?,
        objects: crate::kubeapi::objects::ApiObjectCache::start(client.clone()),
        nodes: nodes_store,
        internal_ip: crate::kubeapi::node_ip(args.node_ip.as_deref()),
        lease_duration_seconds: args.node_lease_duration_seconds,
        registering: Arc::new(tokio::sync::Semaphore::new(REGISTERING_AT_ONCE)),
        root,
    };
    let renew = crate::kubeapi::node::lease_renew_period(args.node_lease_duration_seconds);
    let mut pods = informers::PodsByNode::default();
    let mut contexts = HashMap::new();
    for i in 0..args.nodes {
        let name = format!("{}{i}", args.node_name_prefix);
        // Renewals spread evenly over the period, not all at one instant.
        let offset = renew.mul_f64(i as f64 / args.nodes as f64);
        let ctx = node::start(&shared, &name, &mut pods, offset)
            .with_context(|| format!("starting hollow node {name}"))?;
        contexts.insert(name, ctx);
    }
    tracing::info!(
        nodes = args.nodes,
        prefix = %args.node_name_prefix,
        "hollow nodes started"
    );
    tokio::spawn(pods.run(client.clone()));
    tokio::spawn(informers::watch_nodes(client, nodes_writer, contexts));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("stopping the hollow nodes");
    Ok(())
}
