//! What every part of the running agent shares: the node's identity, its
//! directories, the cgroup driver, the image store, the status store, events.

use std::path::PathBuf;

use crate::cgroups::CgroupDriver;
use crate::events::EventRecorder;
use crate::images::ImageManager;
use crate::runtime::image::ImageStore;
use crate::status::PodStatusStore;

pub struct AgentContext {
    pub node_name: String,
    /// `--root-dir`: pods, images, logs live under it.
    pub root_dir: PathBuf,
    /// This binary, re-executed as `shim` and `sandbox`.
    pub agent_exe: PathBuf,
    pub cgroups: CgroupDriver,
    pub images: ImageStore,
    /// Brings images into the store as pods' pull policies ask.
    pub image_manager: ImageManager,
    pub status: PodStatusStore,
    pub events: EventRecorder,
    pub log_max_size: u64,
    pub log_max_files: usize,
    /// `--pod-max-pids` / `podPidsLimit`: the pids limit of every pod cgroup.
    pub pod_pids_limit: Option<i64>,
    /// OOM kill policy, MemoryQoS, swap: what pod and container cgroups get
    /// beyond their resources.
    pub cgroup_config: crate::cgroups::NodeCgroupConfig,
    /// The `KubeletPSI` gate: PSI figures in `/stats/summary` and `/metrics`.
    pub psi_stats: bool,
    pub host_ip: Option<String>,
    /// What pod specs may ask of this node (seccomp default, unsafe sysctls).
    pub policy: crate::runtime::node_policy::NodePolicy,
    /// The CNI client: pod sandboxes get their network (and IP) through it.
    pub network: crate::network::PodNetwork,
    /// ConfigMaps, Secrets and Services from the apiserver (`None`: standalone).
    pub api_objects: Option<crate::kubeapi::objects::ApiObjectCache>,
    /// The apiserver, for a cluster node (`None`: standalone).
    pub api_client: Option<kube::Client>,
    /// Pods' ServiceAccount tokens, requested with the node's client
    /// (`None`: standalone, no token source).
    pub tokens: Option<crate::token::TokenManager>,
    /// `--cluster-dns`, `--cluster-domain`, `--resolv-conf`: pods' DNS.
    pub dns: crate::network::dns::NodeDns,
    /// The pressure conditions the eviction manager reports; new pods are
    /// admitted against them.
    pub node_pressure: tokio::sync::watch::Receiver<crate::eviction::Pressure>,
    /// Pods evicted so far, by signal, for `/metrics`.
    pub evictions: crate::eviction::EvictionCounts,
    /// The node's pool of pod user namespaces (`hostUsers: false`).
    pub user_namespaces: crate::runtime::userns::UserNamespaceAllocator,
    /// The runtime handlers this node offers and its default one.
    pub runtime_handlers: crate::runtime::handlers::HandlerConfig,
    /// Pods' volumes: made on the node, or only described (detached nodes).
    pub volumes: crate::volume::VolumeManager,
}

impl AgentContext {
    /// A node that only records: its dirs under `root_dir`, no apiserver, no
    /// network config, cgroup paths that nothing creates, volumes only described. What a pod worker
    /// needs around a runtime that only pretends (unit tests).
    pub fn detached(node_name: &str, root_dir: &std::path::Path) -> anyhow::Result<Self> {
        Self::detached_with(
            node_name,
            root_dir,
            CgroupDriver::detect("kubelab-detached")?,
            ImageStore::open(root_dir)?,
            EventRecorder::default(),
        )
    }

    /// [`Self::detached`] with a cgroup driver and image store shared by
    /// many such nodes (hollow nodes), and their own events.
    pub fn detached_with(
        node_name: &str,
        root_dir: &std::path::Path,
        cgroups: CgroupDriver,
        images: ImageStore,
        events: EventRecorder,
    ) -> anyhow::Result<Self> {
        Ok(AgentContext {
            node_name: node_name.to_string(),
            root_dir: root_dir.to_path_buf(),
            agent_exe: std::env::current_exe()?,
            cgroups,
            images,
            image_manager: ImageManager::detached(events.clone()),
            status: PodStatusStore::default(),
            events,
            log_max_size: 10 << 20,
            log_max_files: 1,
            pod_pids_limit: None,
            cgroup_config: Default::default(),
            psi_stats: false,
            host_ip: Some("127.0.0.1".into()),
            policy: Default::default(),
            network: crate::network::PodNetwork::new(crate::network::NetworkOptions {
                conf_dir: root_dir.join("cni-conf"),
                bin_dirs: vec![],
                pod_cidr: None,
                state_dir: root_dir.join("cni"),
                backend: Default::default(),
                pod_mtu: None,
            }),
            api_objects: None,
            api_client: None,
            tokens: None,
            dns: crate::network::dns::NodeDns {
                cluster_dns: vec![],
                cluster_domain: "cluster.local".into(),
                host: Default::default(),
            },
            // No eviction manager: the node is never under pressure.
            node_pressure: tokio::sync::watch::channel(crate::eviction::Pressure::new()).1,
            evictions: Default::default(),
            user_namespaces: crate::runtime::userns::UserNamespaceAllocator::new(
                root_dir.join("pods"),
            ),
            runtime_handlers: Default::default(),
            volumes: crate::volume::VolumeManager::pretending(),
        })
    }

    /// Before a pod is given only its loopback: asks the API once more for
    /// the Node's `spec.podCIDR`. The watch that adopts it may lag behind a
    /// pod created right after the CIDR was assigned.
    pub async fn refresh_pod_cidr(&self) {
        let Some(client) = &self.api_client else {
            return;
        };
        if !self.network.lacks_config() {
            return;
        }
        let read = crate::kubeapi::node::read_pod_cidr(client.clone(), &self.node_name);
        match tokio::time::timeout(std::time::Duration::from_secs(5), read).await {
            Ok(Some(cidr)) => self.network.set_node_pod_cidr(cidr),
            Ok(None) => {}
            Err(_) => {
                tracing::debug!(node = %self.node_name, "reading the Node's podCIDR timed out")
            }
        }
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.root_dir.join("pods")
    }

    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.pods_dir().join(uid)
    }

    /// Where pods look up the API objects they refer to.
    pub fn objects(&self) -> &dyn crate::kubeapi::objects::ObjectGetter {
        match &self.api_objects {
            Some(cache) => cache,
            None => &crate::kubeapi::objects::NoApiObjects,
        }
    }
}
