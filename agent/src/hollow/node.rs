//! One hollow node: a context of its own (name, dirs, events, status
//! store), the real node agent with fixed facts, the status manager, the
//! event sink and the pod manager, around a runtime that only pretends.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::runtime::reflector::Store;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc, watch};

use super::informers::PodsByNode;
use crate::cgroups::CgroupDriver;
use crate::config::api::DesiredPods;
use crate::config::{SOURCE_API, SourceUpdate};
use crate::context::AgentContext;
use crate::events::EventRecorder;
use crate::kubeapi::node::{NodeAgent, NodeFacts};
use crate::kubeapi::objects::ApiObjectCache;
use crate::pod::manager::PodManager;
use crate::runtime::fake::FakeRuntime;
use crate::runtime::image::ImageStore;

/// What every hollow node of the process uses.
pub struct Shared {
    pub client: Client,
    pub cgroups: CgroupDriver,
    pub images: ImageStore,
    pub objects: ApiObjectCache,
    pub nodes: Store<Node>,
    pub internal_ip: String,
    pub lease_duration_seconds: i32,
    /// Permits to register (held until the Node exists).
    pub registering: Arc<Semaphore>,
    /// `<root-dir>/hollow`: one dir per node below it.
    pub root: PathBuf,
}

/// Events a hollow node keeps for its event sink (a real node keeps 1000).
const EVENTS_KEPT: usize = 64;

/// What a hollow node reports: scheduler_perf's node (4 CPUs, 32 GiB, 110
/// pods), this host's kernel, an id of its own.
pub fn hollow_facts(name: &str, internal_ip: &str) -> NodeFacts {
    let id = hex::encode(&Sha256::digest(name.as_bytes())[..16]);
    NodeFacts {
        name: name.to_string(),
        internal_ip: internal_ip.to_string(),
        cpus: 4,
        memory_bytes: 32 << 30,
        ephemeral_storage_bytes: 100 << 30,
        kernel_version: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        os_image: "kubelab hollow node".into(),
        machine_id: id.clone(),
        boot_id: id,
        // No kubelet API listens for a hollow node.
        kubelet_port: 0,
        pressure: Default::default(),
        images: Vec::new(),
        runtime_handlers: Vec::new(),
    }
}

/// Starts hollow node `name`; its first lease renewal comes `lease_offset`
/// after it registered. Returns its context.
pub fn start(
    shared: &Shared,
    name: &str,
    pods: &mut PodsByNode,
    lease_offset: Duration,
) -> anyhow::Result<Arc<AgentContext>> {
    let dir = shared.root.join(name);
    let mut ctx = AgentContext::detached_with(
        name,
        &dir,
        shared.cgroups.clone(),
        shared.images.clone(),
        EventRecorder::keeping(EVENTS_KEPT),
    )?;
    ctx.api_client = Some(shared.client.clone());
    ctx.tokens = Some(crate::token::TokenManager::new(shared.client.clone()));
    ctx.api_objects = Some(shared.objects.clone());
    ctx.host_ip = Some(shared.internal_ip.clone());
    std::fs::create_dir_all(ctx.pods_dir())?;
    let ctx = Arc::new(ctx);
    let (store, changes) = pods.add(name);

    let (uid_tx, uid_rx) = watch::channel(None);
    let agent = NodeAgent {
        client: shared.client.clone(),
        name: name.to_string(),
        internal_ip: shared.internal_ip.clone(),
        root_dir: dir,
        kubelet_port: 0,
        reservations: Default::default(),
        pressure: ctx.node_pressure.clone(),
        lease_duration_seconds: shared.lease_duration_seconds,
        fixed_facts: Some(hollow_facts(name, &shared.internal_ip)),
        runtime_handlers: Vec::new(),
        images: ctx.image_manager.service().clone(),
        nodes: Some(shared.nodes.clone()),
        lease_offset,
    };
    let registering = shared.registering.clone();
    tokio::spawn(async move {
        let Ok(_permit) = registering.acquire_owned().await else {
            return;
        };
        let mut registered = uid_tx.subscribe();
        tokio::spawn(agent.run(uid_tx));
        let _ = registered.wait_for(Option::is_some).await;
    });
    tokio::spawn(
        crate::kubeapi::status::StatusManager {
            client: shared.client.clone(),
            node: name.to_string(),
            status: ctx.status.clone(),
            pods: store.clone(),
            pod_changes: changes.subscribe(),
            node_uid: uid_rx,
        }
        .run(),
    );
    tokio::spawn(
        crate::kubeapi::events::EventSink {
            client: shared.client.clone(),
            node: name.to_string(),
            pods: store.clone(),
        }
        .run(ctx.events.subscribe()),
    );
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(send_snapshots(store, changes.subscribe(), tx));
    let cidr_ctx = ctx.clone();
    let runtime = Arc::new(FakeRuntime::pretending(Box::new(move || {
        cidr_ctx.network.pod_cidr().map(String::from)
    })));
    let manager = PodManager::with_runtime(ctx.clone(), runtime).with_sources(&[SOURCE_API]);
    tokio::spawn(manager.run(rx));
    Ok(ctx)
}

/// The node's pod source: a full snapshot of its pods once the shared
/// watch has listed them, and again after every change (changes arriving
/// while the pod manager is busy become one snapshot). The first change is
/// the end of the first list: the store is never waited on here (a store's
/// readiness wakes only one of several waiters, and the status manager waits).
async fn send_snapshots(
    store: Store<Pod>,
    mut changes: watch::Receiver<u64>,
    tx: mpsc::Sender<SourceUpdate>,
) {
    let mut desired = DesiredPods::default();
    while changes.changed().await.is_ok() {
        let update = SourceUpdate {
            source: SOURCE_API,
            pods: desired.snapshot(store.state().iter().map(|p| p.as_ref())),
            errors: vec![],
        };
        if tx.send(update).await.is_err() {
            return;
        }
    }
}
