//! The Node object and its heartbeats (kubelet's `nodestatus` and
//! `nodelease`): register the node (or take over an existing one), renew its
//! Lease in `kube-node-lease` every 10 s, and send the node status when it
//! differs from what the apiserver has (the node controller may have set it
//! Unknown meanwhile) and at least every 5 minutes. Allocatable is capacity
//! less the reservations ([`crate::config::reserved`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints,
    NodeRuntimeHandler, NodeRuntimeHandlerFeatures, NodeSpec, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;

use super::KubeApiError;
use crate::config::reserved::NodeReservations;
use crate::runtime::handlers::RuntimeHandler;

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// kubelet's default `nodeLeaseDurationSeconds`.
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// kubelet renews its lease every quarter of the lease's duration.
const LEASE_RENEW_FRACTION: f64 = 0.25;
/// How often the node status is checked for changes.
const STATUS_CHECK: Duration = Duration::from_secs(10);
/// The status is sent at least this often even when nothing changed.
const STATUS_REPORT: Duration = Duration::from_secs(300);
/// Pod slots per node, kubelet's `--max-pods` default.
pub const MAX_PODS: i64 = 110;
/// The Kubernetes version whose kubelet this agent stands in for.
pub const KUBELET_VERSION: &str = kubelab_rules::version::GIT_VERSION;

/// What the node looks like from this host; everything `render_node` needs.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    pub name: String,
    pub internal_ip: String,
    pub cpus: u64,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
    pub kernel_version: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
    pub kubelet_port: u16,
    /// The pressure conditions the eviction manager reports.
    pub pressure: crate::eviction::Pressure,
    /// The images the image service lists, as `status.images` lists them.
    pub images: Vec<ContainerImage>,
    /// `status.runtimeHandlers`: the runtime handlers and their features.
    pub runtime_handlers: Vec<RuntimeHandler>,
}

/// `amd64`/`arm64`, as `GOARCH` names them.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The address a packet to the outside world would leave from: the
/// default-route interface's. No packet is sent (UDP connect only picks a route).
pub fn default_route_ip() -> Option<String> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect("203.0.113.1:9").ok()?;
    Some(sock.local_addr().ok()?.ip().to_string())
}

impl NodeFacts {
    /// Reads the host: CPUs, memory, the filesystem of `root_dir`, kernel,
    /// OS; `pressure` is what the eviction manager found.
    pub fn gather(
        name: &str,
        internal_ip: &str,
        root_dir: &Path,
        kubelet_port: u16,
        pressure: crate::eviction::Pressure,
    ) -> Self {
        let os_image = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                    .map(|v| v.trim_matches('"').to_string())
            })
            .unwrap_or_else(|| "Linux".into());
        let storage =
            nix::sys::statvfs::statvfs(root_dir).map_or(0, |st| st.blocks() * st.fragment_size());
        let memory = crate::host::memory_total();
        NodeFacts {
            name: name.to_string(),
            internal_ip: internal_ip.to_string(),
            cpus: crate::host::cpu_count(),
            memory_bytes: memory,
            ephemeral_storage_bytes: storage,
            kernel_version: read_trimmed("/proc/sys/kernel/osrelease"),
            os_image,
            machine_id: read_trimmed("/etc/machine-id"),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            kubelet_port,
            pressure,
            images: Vec::new(),
            runtime_handlers: Vec::new(),
        }
    }
}

/// One handler of CRI's `RuntimeStatus` as `status.runtimeHandlers` lists it.
fn node_runtime_handler(h: &RuntimeHandler) -> NodeRuntimeHandler {
    NodeRuntimeHandler {
        name: Some(h.name.clone()),
        features: Some(NodeRuntimeHandlerFeatures {
            recursive_read_only_mounts: Some(h.features.recursive_read_only_mounts),
            user_namespaces: Some(h.features.user_namespaces),
        }),
    }
}

/// kubelet's `--node-status-max-images` default: the largest images listed.
pub const NODE_STATUS_MAX_IMAGES: usize = 50;
/// kubelet's `MaxNamesPerImageInNodeStatus`.
const MAX_NAMES_PER_IMAGE: usize = 5;

/// `status.images` as the kubelet reports it, pure: one entry per image ID,
/// its digests (`repo@sha256:…`) then its tags as names, largest first.
pub fn node_images(images: &[crate::runtime::image::ImageSummary]) -> Vec<ContainerImage> {
    use crate::runtime::image::Reference;
    let mut by_id: BTreeMap<&str, (Vec<String>, Vec<String>, u64)> = BTreeMap::new();
    for image in images {
        let (digests, tags, size) = by_id.entry(&image.id).or_default();
        *size = (*size).max(image.size);
        let Some(parsed) = image
            .reference
            .as_deref()
            .and_then(|r| Reference::parse(r).ok())
        else {
            continue;
        };
        let repo_digest = format!("{}@{}", parsed.repository(), image.manifest_digest);
        if !digests.contains(&repo_digest) {
            digests.push(repo_digest);
        }
        if parsed.digest().is_none()
            && let Some(reference) = &image.reference
            && !tags.contains(reference)
        {
            tags.push(reference.clone());
        }
    }
    let mut out: Vec<ContainerImage> = by_id
        .into_values()
        .map(|(mut names, tags, size)| {
            names.extend(tags);
            names.truncate(MAX_NAMES_PER_IMAGE);
            ContainerImage {
                names: Some(names),
                size_bytes: Some(size as i64),
            }
        })
        .collect();
    out.sort_by_key(|i| std::cmp::Reverse(i.size_bytes));
    out.truncate(NODE_STATUS_MAX_IMAGES);
    out
}

/// The node annotation naming the directory of its local-path volumes.
pub const LOCAL_PATH_DIR_ANNOTATION: &str = "kubelab.io/local-path-dir";

pub fn node_labels(name: &str) -> BTreeMap<String, String> {
    [
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", go_arch()),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", go_arch()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn condition(kind: &str, bad: bool, reason: &str, message: &str, now: Timestamp) -> NodeCondition {
    let ok_status = if kind == "Ready" { !bad } else { bad };
    NodeCondition {
        type_: kind.into(),
        status: if ok_status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// The node status as the kubelet reports it (`setNodeStatus`), pure.
/// Transition times are `now`; [`carry_transitions`] keeps older ones.
pub fn render_status(f: &NodeFacts, reserved: &NodeReservations, now: Timestamp) -> NodeStatus {
    let q = |s: String| Quantity(s);
    let resources: BTreeMap<String, Quantity> = [
        ("cpu", q(f.cpus.to_string())),
        ("memory", q(format!("{}Ki", f.memory_bytes / 1024))),
        ("pods", q(MAX_PODS.to_string())),
        (
            "ephemeral-storage",
            q(format!("{}Ki", f.ephemeral_storage_bytes / 1024)),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    use crate::eviction::PressureCondition;
    let pressure = |kind: PressureCondition, yes, no| {
        let bad = f.pressure.contains(&kind);
        let (reason, message) = if bad { yes } else { no };
        condition(kind.as_str(), bad, reason, message, now)
    };
    NodeStatus {
        allocatable: Some(reserved.allocatable(&resources)),
        capacity: Some(resources),
        conditions: Some(vec![
            pressure(
                PressureCondition::MemoryPressure,
                (
                    "KubeletHasInsufficientMemory",
                    "kubelet has insufficient memory available",
                ),
                (
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
            ),
            pressure(
                PressureCondition::DiskPressure,
                ("KubeletHasDiskPressure", "kubelet has disk pressure"),
                ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ),
            pressure(
                PressureCondition::PIDPressure,
                (
                    "KubeletHasInsufficientPID",
                    "kubelet has insufficient PID available",
                ),
                (
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
            ),
            condition(
                "Ready",
                false,
                "KubeletReady",
                "kubelet is posting ready status",
                now,
            ),
        ]),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: f.internal_ip.clone(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: f.name.clone(),
            },
        ]),
        // Left out when empty, so a node without images (hollow nodes) does
        // not differ from what the apiserver gives back.
        images: (!f.images.is_empty()).then(|| f.images.clone()),
        runtime_handlers: (!f.runtime_handlers.is_empty()).then(|| {
            f.runtime_handlers
                .iter()
                .map(node_runtime_handler)
                .collect()
        }),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: f.kubelet_port as i32,
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: go_arch().into(),
            operating_system: "linux".into(),
            kernel_version: f.kernel_version.clone(),
            os_image: f.os_image.clone(),
            container_runtime_version: format!("kubelab://{}", env!("CARGO_PKG_VERSION")),
            kubelet_version: KUBELET_VERSION.into(),
            kube_proxy_version: String::new(),
            machine_id: f.machine_id.clone(),
            system_uuid: f.machine_id.clone(),
            boot_id: f.boot_id.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Keeps `lastTransitionTime` of conditions whose status did not change.
pub fn carry_transitions(new: &mut NodeStatus, old: Option<&NodeStatus>) {
    let old = old.and_then(|o| o.conditions.as_ref());
    for c in new.conditions.iter_mut().flatten() {
        if let Some(prev) = old.and_then(|o| o.iter().find(|p| p.type_ == c.type_))
            && prev.status == c.status
            && prev.last_transition_time.is_some()
        {
            c.last_transition_time = prev.last_transition_time.clone();
        }
    }
}

/// The status without its timestamps: what decides whether it "changed".
fn status_shape(s: &NodeStatus) -> serde_json::Value {
    let mut s = s.clone();
    for c in s.conditions.iter_mut().flatten() {
        c.last_heartbeat_time = None;
        c.last_transition_time = None;
    }
    serde_json::to_value(s).unwrap_or_default()
}

/// The merge patch that makes the Node's status `status`: a list the
/// node no longer has (its last image removed) is sent as `null`, or the
/// merge would keep the old one (the kubelet's patch drops it too).
pub fn status_patch(status: &NodeStatus) -> serde_json::Value {
    let mut patch = json!({ "status": status });
    if status.images.is_none() {
        patch["status"]["images"] = serde_json::Value::Null;
    }
    patch
}

pub struct NodeAgent {
    pub client: Client,
    pub name: String,
    pub internal_ip: String,
    pub root_dir: std::path::PathBuf,
    pub kubelet_port: u16,
    pub reservations: NodeReservations,
    /// The eviction manager's pressure conditions.
    pub pressure: tokio::sync::watch::Receiver<crate::eviction::Pressure>,
    /// `--node-lease-duration-seconds`; renewed every quarter of it.
    pub lease_duration_seconds: i32,
    /// A hollow node's: what it reports instead of this host's facts.
    pub fixed_facts: Option<NodeFacts>,
    /// `status.runtimeHandlers`, found when the agent started.
    pub runtime_handlers: Vec<RuntimeHandler>,
    /// Where `status.images` comes from (CRI's `ListImages`): the node's
    /// store, or a hollow node's pretend images.
    pub images: std::sync::Arc<dyn crate::runtime::image::ImageService>,
    /// The Nodes as a shared informer sees them (hollow nodes): the status
    /// is compared against these instead of a GET every check.
    pub nodes: Option<Store<Node>>,
    /// How long after registration the first lease renewal comes: hollow
    /// nodes spread theirs over the renew period.
    pub lease_offset: Duration,
}

impl NodeAgent {
    fn facts(&self) -> NodeFacts {
        let images = match self.images.list_images() {
            Ok(images) => node_images(&images),
            Err(e) => {
                tracing::warn!("listing images for the node status: {e}");
                Vec::new()
            }
        };
        if let Some(facts) = &self.fixed_facts {
            return NodeFacts {
                images,
                ..facts.clone()
            };
        }
        NodeFacts {
            images,
            runtime_handlers: self.runtime_handlers.clone(),
            ..NodeFacts::gather(
                &self.name,
                &self.internal_ip,
                &self.root_dir,
                self.kubelet_port,
                self.pressure.borrow().clone(),
            )
        }
    }

    /// Where the built-in local-path provisioner puts this node's volumes:
    /// under the root dir, so the node's data stays in one place.
    fn node_annotations(&self) -> BTreeMap<String, String> {
        [(
            LOCAL_PATH_DIR_ANNOTATION.to_owned(),
            self.root_dir.join("storage").display().to_string(),
        )]
        .into()
    }

    /// Creates the Node, or takes over one of the same name; returns its UID.
    async fn register(&self) -> Result<Node, KubeApiError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node = Node {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(node_labels(&self.name)),
                annotations: Some(self.node_annotations()),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(render_status(
                &self.facts(),
                &self.reservations,
                Timestamp::now(),
            )),
        };
        match nodes.create(&PostParams::default(), &node).await {
            Ok(n) => Ok(n),
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                let patch = json!({"metadata": {"labels": node_labels(&self.name),
                    "annotations": self.node_annotations()}});
                Ok(nodes
                    .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Registers the node (retrying until the apiserver answers), publishes
    /// its UID, then keeps the lease and the status fresh forever.
    pub async fn run(mut self, node_uid: watch::Sender<Option<String>>) {
        let node = loop {
            match self.register().await {
                Ok(n) => break n,
                Err(e) => {
                    tracing::warn!(node = %self.name, "registering the node: {e}");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        };
        let uid = node.metadata.uid.clone().unwrap_or_default();
        tracing::info!(node = %self.name, %uid, "node registered");
        let _ = node_uid.send(Some(uid.clone()));

        let lease = tokio::spawn(renew_lease(
            self.client.clone(),
            self.name.clone(),
            uid,
            self.lease_duration_seconds,
            self.lease_offset,
        ));
        let mut last_sent: Option<tokio::time::Instant> = None;
        let mut previous = node.status.clone();
        let mut tick = tokio::time::interval(STATUS_CHECK);
        let nodes: Api<Node> = Api::all(self.client.clone());
        loop {
            // A pressure condition that comes or goes is sent at once.
            tokio::select! {
                _ = tick.tick() => {}
                Ok(()) = self.pressure.changed() => {}
            }
            // What the apiserver has now, as the kubelet compares against:
            // the node controller writes conditions too.
            match &self.nodes {
                Some(store) => {
                    if let Some(n) = store.get(&ObjectRef::new(&self.name)) {
                        previous = n.status.clone();
                    }
                }
                None => match nodes.get_opt(&self.name).await {
                    Ok(Some(n)) => previous = n.status,
                    Ok(None) => {}
                    Err(e) => tracing::debug!(node = %self.name, "reading the node: {e}"),
                },
            }
            let mut status = render_status(&self.facts(), &self.reservations, Timestamp::now());
            carry_transitions(&mut status, previous.as_ref());
            let due = match (&last_sent, &previous) {
                (Some(at), Some(old)) => {
                    status_shape(old) != status_shape(&status) || at.elapsed() >= STATUS_REPORT
                }
                _ => true,
            };
            if !due {
                continue;
            }
            let patch = status_patch(&status);
            match nodes
                .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    previous = Some(status);
                    last_sent = Some(tokio::time::Instant::now());
                }
                Err(e) => tracing::warn!(node = %self.name, "updating the node status: {e}"),
            }
            if lease.is_finished() {
                break;
            }
        }
    }
}

/// The node's Lease, owned by the Node so it goes with it.
pub fn render_lease(node: &str, node_uid: &str, duration_seconds: i32, now: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(node.into()),
            namespace: Some(LEASE_NAMESPACE.into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node.into(),
                uid: node_uid.into(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.into()),
            lease_duration_seconds: Some(duration_seconds),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    }
}

/// How often a lease of `duration_seconds` is renewed (a quarter of it).
pub fn lease_renew_period(duration_seconds: i32) -> Duration {
    Duration::from_secs_f64(duration_seconds.max(1) as f64 * LEASE_RENEW_FRACTION)
}

async fn renew_lease(
    client: Client,
    node: String,
    node_uid: String,
    duration_seconds: i32,
    offset: Duration,
) {
    let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
    let renew = lease_renew_period(duration_seconds);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, renew);
    loop {
        tick.tick().await;
        let now = Timestamp::now();
        let patch = json!({"spec": {"holderIdentity": node, "renewTime": MicroTime(now),
            "leaseDurationSeconds": duration_seconds}});
        let result = match leases
            .patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Err(kube::Error::Api(s)) if s.is_not_found() => leases
                .create(
                    &PostParams::default(),
                    &render_lease(&node, &node_uid, duration_seconds, now),
                )
                .await
                .map(|_| ()),
            other => other.map(|_| ()),
        };
        if let Err(e) = result {
            tracing::warn!(%node, "renewing the node lease: {e}");
        }
    }
}

/// The Node's `spec.podCIDR`, as the cluster's node IPAM assigns it: watches
/// the Node until it has one. Gives up at `deadline`, or, once the Node has
/// been seen without one, `grace` later (IPAM answers a new Node within
/// milliseconds; a cluster that does not allocate never will). `None`
/// for either means no limit.
/// The Node's `spec.podCIDR` now, if it has one.
pub async fn read_pod_cidr(client: Client, node: &str) -> Option<String> {
    let nodes: Api<Node> = Api::all(client);
    match nodes.get_opt(node).await {
        Ok(n) => n?.spec?.pod_cidr.filter(|c| !c.is_empty()),
        Err(e) => {
            tracing::debug!(%node, "reading the node for its pod CIDR: {e}");
            None
        }
    }
}

pub async fn wait_for_pod_cidr(
    client: Client,
    node: &str,
    deadline: Option<tokio::time::Instant>,
    grace: Option<Duration>,
) -> Option<String> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let nodes: Api<Node> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let mut stream = std::pin::pin!(watcher(nodes, cfg).default_backoff().applied_objects());
    let mut give_up = deadline;
    loop {
        let next = match give_up {
            Some(at) => match tokio::time::timeout_at(at, stream.next()).await {
                Ok(n) => n,
                Err(_) => return None,
            },
            None => stream.next().await,
        };
        match next? {
            Ok(n) => {
                let cidr = n.spec.and_then(|s| s.pod_cidr).filter(|c| !c.is_empty());
                if cidr.is_some() {
                    return cidr;
                }
                if let Some(grace) = grace {
                    let at = tokio::time::Instant::now() + grace;
                    give_up = Some(give_up.map_or(at, |g| g.min(at)));
                }
            }
            Err(e) => tracing::debug!(%node, "watching the node for its pod CIDR: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> NodeFacts {
        NodeFacts {
            name: "node1".into(),
            internal_ip: "10.0.0.5".into(),
            cpus: 2,
            memory_bytes: 4 * 1024 * 1024 * 1024,
            ephemeral_storage_bytes: 20 * 1024 * 1024 * 1024,
            kernel_version: "6.1.0".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            machine_id: "m".into(),
            boot_id: "b".into(),
            kubelet_port: 10250,
            pressure: Default::default(),
            images: Vec::new(),
            runtime_handlers: Vec::new(),
        }
    }

    #[test]
    fn an_empty_store_clears_the_nodes_images() {
        let mut f = facts();
        let empty = render_status(&f, &NodeReservations::default(), Timestamp::UNIX_EPOCH);
        let patch = status_patch(&empty);
        assert!(
            patch["status"]
                .as_object()
                .unwrap()
                .get("images")
                .is_some_and(serde_json::Value::is_null),
            "sent as null, not left out: {patch}"
        );
        f.images = vec![ContainerImage {
            names: Some(vec!["busybox".into()]),
            size_bytes: Some(1),
        }];
        let full = render_status(&f, &NodeReservations::default(), Timestamp::UNIX_EPOCH);
        assert_eq!(
            status_patch(&full)["status"]["images"][0]["names"][0],
            "busybox"
        );
    }

    #[test]
    fn runtime_handlers_are_reported() {
        let mut f = facts();
        let none = render_status(&f, &NodeReservations::default(), Timestamp::UNIX_EPOCH);
        assert_eq!(none.runtime_handlers, None);
        f.runtime_handlers = crate::runtime::handlers::status_handlers(&Default::default(), None);
        let status = render_status(&f, &NodeReservations::default(), Timestamp::UNIX_EPOCH);
        assert_eq!(
            serde_json::to_value(&status).unwrap()["runtimeHandlers"],
            json!([
                {"name": "kubelab", "features": {"recursiveReadOnlyMounts": true, "userNamespaces": true}},
                {"name": "", "features": {"recursiveReadOnlyMounts": true, "userNamespaces": true}}
            ])
        );
    }

    #[test]
    fn images_are_listed_by_id_digests_then_tags_largest_first() {
        use crate::runtime::image::ImageSummary;
        let summary = |reference: Option<&str>, id: &str, size| ImageSummary {
            reference: reference.map(String::from),
            id: id.into(),
            manifest_digest: format!("sha256:m{id}"),
            size,
        };
        let images = node_images(&[
            summary(Some("docker.io/library/busybox:latest"), "small", 10),
            summary(Some("docker.io/library/busybox:1.35"), "small", 10),
            summary(Some("registry.local:5000/app:v1"), "big", 500),
            summary(None, "anonymous", 1),
        ]);
        let names: Vec<Vec<String>> = images.iter().map(|i| i.names.clone().unwrap()).collect();
        assert_eq!(
            names,
            vec![
                vec![
                    "registry.local:5000/app@sha256:mbig".to_string(),
                    "registry.local:5000/app:v1".into()
                ],
                vec![
                    "docker.io/library/busybox@sha256:msmall".into(),
                    "docker.io/library/busybox:latest".into(),
                    "docker.io/library/busybox:1.35".into()
                ],
                vec![],
            ]
        );
        assert_eq!(
            images.iter().map(|i| i.size_bytes).collect::<Vec<_>>(),
            [Some(500), Some(10), Some(1)]
        );
    }

    #[test]
    fn status_reports_capacity_addresses_and_ready() {
        let st = render_status(
            &facts(),
            &NodeReservations::default(),
            Timestamp::UNIX_EPOCH,
        );
        let cap = st.capacity.unwrap();
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "4194304Ki");
        assert_eq!(cap["pods"].0, "110");
        // kubelet's default hard eviction holds back 100Mi of memory.
        let alloc = st.allocatable.clone().unwrap();
        assert_eq!(
            alloc["memory"].0,
            format!("{}Ki", 4 * 1024 * 1024 - 100 * 1024)
        );
        assert_eq!(alloc["cpu"].0, "2");
        let conds = st.conditions.unwrap();
        let status = |t: &str| conds.iter().find(|c| c.type_ == t).unwrap().status.clone();
        assert_eq!(status("Ready"), "True");
        assert_eq!(status("MemoryPressure"), "False");
        assert_eq!(status("DiskPressure"), "False");
        assert_eq!(status("PIDPressure"), "False");
        let addrs = st.addresses.unwrap();
        assert_eq!(addrs[0].type_, "InternalIP");
        assert_eq!(addrs[0].address, "10.0.0.5");
        assert_eq!(addrs[1].address, "node1");
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let old = render_status(
            &facts(),
            &NodeReservations::default(),
            Timestamp::UNIX_EPOCH,
        );
        let mut f = facts();
        f.pressure
            .insert(crate::eviction::PressureCondition::MemoryPressure);
        let mut new = render_status(&f, &NodeReservations::default(), Timestamp::now());
        carry_transitions(&mut new, Some(&old));
        let conds = new.conditions.unwrap();
        let find = |t: &str| conds.iter().find(|c| c.type_ == t).unwrap().clone();
        assert_eq!(
            find("Ready").last_transition_time,
            Some(Time(Timestamp::UNIX_EPOCH))
        );
        assert_ne!(
            find("MemoryPressure").last_transition_time,
            Some(Time(Timestamp::UNIX_EPOCH))
        );
        assert_eq!(find("MemoryPressure").status, "True");
        assert_eq!(node_labels("node1")["kubernetes.io/hostname"], "node1");
    }
}
