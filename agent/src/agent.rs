//! Wires the running agent together: context, sources → pod manager, the
//! stats sampler, the HTTP API. Stopping the agent leaves pods running (their
//! shims outlive it); the next start adopts them.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

use crate::cgroups::CgroupDriver;
use crate::config::{ApiSource, FileSource};
use crate::context::AgentContext;
use crate::events::EventRecorder;
use crate::images::ImageManager;
use crate::network::cluster::{ClusterNetworkOptions, PodNetworkBackend};
use crate::network::{NetworkOptions, PodNetwork};
use crate::pod::manager::PodManager;
use crate::runtime::image::{ImageService, ImageStore, StoreImageService};
use crate::server::{self, ServerState, stats::CpuSampler};
use crate::status::PodStatusStore;

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub node_name: String,
    pub root_dir: PathBuf,
    pub pod_manifest_path: Option<PathBuf>,
    pub file_check_frequency: Duration,
    pub cgroup_root: String,
    pub address: IpAddr,
    pub port: u16,
    pub read_only_port: u16,
    pub pod_pids_limit: Option<i64>,
    pub container_log_max_size: u64,
    pub container_log_max_files: usize,
    pub node_ip: Option<String>,
    /// `--cni-conf-dir`: where the pod network config is found.
    pub cni_conf_dir: PathBuf,
    /// `--cni-bin-dir`: where the CNI plugins are found.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// `--pod-cidr`: the default network's subnet when the conf dir is empty.
    pub pod_cidr: Option<String>,
    /// `--pod-network-backend`: how pods reach other nodes' pods.
    pub pod_network_backend: crate::network::cluster::PodNetworkBackend,
    /// `--kubeconfig`: join the cluster it points at (absent: standalone).
    pub kubeconfig: Option<PathBuf>,
    /// `--bootstrap-kubeconfig`: what gets `--kubeconfig` a client
    /// certificate when it is missing or expired.
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// `--cert-dir`: where issued certificates are kept.
    pub cert_dir: PathBuf,
    /// `--rotate-server-certificates` / `serverTLSBootstrap`.
    pub server_tls_bootstrap: bool,
    /// `--kube-reserved`, `--system-reserved`, `--eviction-hard`: what the
    /// Node's allocatable leaves out.
    pub reservations: crate::config::reserved::NodeReservations,
    /// `--eviction-hard`, `--eviction-soft` and the rest: when pods are evicted.
    pub eviction: crate::eviction::EvictionConfig,
    /// `--node-lease-duration-seconds`: the node Lease's duration.
    pub node_lease_duration_seconds: i32,
    /// The service proxy (runs with `--kubeconfig` unless its mode is `none`).
    pub proxy: crate::proxy::ProxyOptions,
    /// `--cluster-dns`: the nameservers of `ClusterFirst` pods.
    pub cluster_dns: Vec<IpAddr>,
    /// `--cluster-domain`: their search domains' base.
    pub cluster_domain: String,
    /// `--resolv-conf`: what `Default` pods get and others add to.
    pub resolv_conf: PathBuf,
    /// `--seccomp-default`, `--allowed-unsafe-sysctls`.
    pub policy: crate::runtime::node_policy::NodePolicy,
    /// `--tls-cert-file`/`--tls-private-key-file`: `--port`'s certificate.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    /// Who may use `--port`, and for what.
    pub auth: crate::server::auth::AuthOptions,
    /// `--serialize-image-pulls`, `--max-parallel-image-pulls`, `--insecure-registry`.
    pub image_pulls: crate::images::PullOptions,
    /// `--image-gc-high-threshold` and the rest: when unused images go.
    pub image_gc: crate::runtime::image::ImageGcPolicy,
    /// OOM kill policy, MemoryQoS and swap, as configured.
    pub cgroup_features: crate::cgroups::CgroupFeatures,
    /// The `KubeletPSI` gate: pressure stall information in the stats.
    pub psi_stats: bool,
    /// `--default-runtime-handler`, `--runc-binary`: which backend runs a pod.
    pub runtime_handlers: crate::runtime::handlers::HandlerConfig,
}

/// The cgroup settings in force on this node, from the configured ones, the
/// cgroup version and the node's memory; says what has no effect here.
fn node_cgroup_config(
    opts: &AgentOptions,
    cgroups: &CgroupDriver,
) -> anyhow::Result<crate::cgroups::NodeCgroupConfig> {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let meminfo = crate::host::meminfo();
    let capacity = meminfo.get("MemTotal").copied().unwrap_or(0) as i64;
    let allocatable = opts
        .reservations
        .allocatable(&[("memory".to_string(), Quantity(capacity.to_string()))].into())
        .get("memory")
        .and_then(|q| crate::quantity::bytes(q).ok())
        .unwrap_or(capacity);
    let memory = crate::cgroups::NodeMemory {
        capacity,
        allocatable,
        swap: meminfo.get("SwapTotal").copied().unwrap_or(0) as i64,
        swap_controller: cgroups.has_swap_controller(),
    };
    let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096);
    let (config, ignored) = crate::cgroups::NodeCgroupConfig::resolve(
        &opts.cgroup_features,
        cgroups.version(),
        memory,
        page_size,
    )?;
    for why in ignored {
        tracing::warn!("{why}");
    }
    tracing::info!(
        single_process_oom_kill = config.single_process_oom_kill,
        memory_qos = config.memory_qos,
        swap_behavior = %config.swap_behavior,
        "cgroup settings"
    );
    Ok(config)
}

pub async fn run(opts: AgentOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(opts.root_dir.join("pods"))
        .with_context(|| format!("creating {}", opts.root_dir.display()))?;
    let cgroups = CgroupDriver::detect(&opts.cgroup_root)
        .with_context(|| format!("--cgroup-root {:?}", opts.cgroup_root))?;
    let cgroup_config = node_cgroup_config(&opts, &cgroups)?;
    let images = ImageStore::open(&opts.root_dir)?;
    let agent_exe = std::fs::read_link("/proc/self/exe").context("finding this binary")?;
    if let (Some(kubeconfig), Some(bootstrap)) = (&opts.kubeconfig, &opts.bootstrap_kubeconfig) {
        crate::certificate::bootstrap::load_client_cert(
            kubeconfig,
            bootstrap,
            &opts.cert_dir,
            &opts.node_name,
        )
        .await?;
    }
    let client = match &opts.kubeconfig {
        Some(path) => Some(crate::kubeapi::client_from_kubeconfig(path).await?),
        None => None,
    };
    // A cluster node always has an address to report, as hostIP too.
    let host_ip = match &client {
        Some(_) => Some(crate::kubeapi::node_ip(opts.node_ip.as_deref())),
        None => opts.node_ip.clone(),
    };
    tracing::info!(
        node = %opts.node_name,
        root_dir = %opts.root_dir.display(),
        cgroup_version = ?cgroups.version(),
        cgroup_root = %opts.cgroup_root,
        "starting the agent"
    );
    // kubelet reads the node's resolver file once, at start.
    let host_resolv = match std::fs::read_to_string(&opts.resolv_conf) {
        Ok(text) => crate::network::dns::ResolvConf::parse(&text),
        Err(e) => {
            tracing::warn!(
                "--resolv-conf {}: {e}; pods get no host nameservers",
                opts.resolv_conf.display()
            );
            Default::default()
        }
    };
    let backend = opts.pod_network_backend;
    let node_ipv4: Option<std::net::Ipv4Addr> = host_ip.as_deref().and_then(|ip| ip.parse().ok());
    if backend != PodNetworkBackend::None && (client.is_none() || node_ipv4.is_none()) {
        anyhow::bail!(
            "--pod-network-backend {}: needs --kubeconfig (the other nodes come from the apiserver) and an IPv4 --node-ip",
            backend.as_str()
        );
    }
    // Pods on a VXLAN network get the node interface's MTU less the encapsulation.
    let pod_mtu = match (backend, node_ipv4) {
        (PodNetworkBackend::Vxlan, Some(ip)) => Some(
            crate::network::cluster::vxlan_pod_mtu(ip)
                .await
                .with_context(|| format!("finding the interface of --node-ip {ip}"))?,
        ),
        _ => None,
    };
    let events = EventRecorder::default();
    let image_service: Arc<dyn ImageService> = Arc::new(StoreImageService::new(
        images.clone(),
        opts.image_pulls.registries.clone(),
    ));
    let (pressure_tx, pressure_rx) = tokio::sync::watch::channel(crate::eviction::Pressure::new());
    let ctx = Arc::new(AgentContext {
        node_name: opts.node_name.clone(),
        root_dir: opts.root_dir.clone(),
        agent_exe,
        cgroups,
        image_manager: ImageManager::new(
            image_service.clone(),
            opts.image_pulls.concurrency,
            events.clone(),
        ),
        images,
        status: PodStatusStore::default(),
        events,
        log_max_size: opts.container_log_max_size,
        log_max_files: opts.container_log_max_files.max(1),
        pod_pids_limit: opts.pod_pids_limit,
        cgroup_config,
        psi_stats: opts.psi_stats,
        host_ip: host_ip.clone(),
        policy: opts.policy.clone(),
        network: PodNetwork::new(NetworkOptions {
            conf_dir: opts.cni_conf_dir.clone(),
            bin_dirs: opts.cni_bin_dirs.clone(),
            pod_cidr: opts.pod_cidr.clone(),
            state_dir: opts.root_dir.join("cni"),
            backend,
            pod_mtu,
        }),
        api_objects: client
            .clone()
            .map(crate::kubeapi::objects::ApiObjectCache::start),
        api_client: client.clone(),
        tokens: client.clone().map(crate::token::TokenManager::new),
        dns: crate::network::dns::NodeDns {
            cluster_dns: opts.cluster_dns.clone(),
            cluster_domain: opts.cluster_domain.clone(),
            host: host_resolv,
        },
        node_pressure: pressure_rx.clone(),
        evictions: Default::default(),
        user_namespaces: crate::runtime::userns::UserNamespaceAllocator::new(
            opts.root_dir.join("pods"),
        ),
        runtime_handlers: opts.runtime_handlers.clone(),
        volumes: crate::volume::VolumeManager::on_node(),
    });

    // `--port`'s TLS and auth are checked before anything runs: a bad
    // certificate or a webhook without an apiserver stops the start.
    let secure = if opts.port != 0 {
        let auth = server::auth::KubeletAuth::new(&opts.auth, client.clone(), &opts.node_name)?;
        let node_ips: Vec<IpAddr> = host_ip.iter().filter_map(|ip| ip.parse().ok()).collect();
        let identity = match (&client, opts.server_tls_bootstrap) {
            (Some(client), true) => {
                let manager = crate::certificate::serving::ServingCertManager::new(
                    opts.cert_dir.clone(),
                    &opts.node_name,
                    std::slice::from_ref(&opts.node_name),
                    &node_ips,
                );
                let certificate = manager.certificate.clone();
                tokio::spawn(manager.run(client.clone()));
                server::tls::ServingIdentity::Issued(certificate)
            }
            (None, true) => anyhow::bail!("serverTLSBootstrap needs --kubeconfig"),
            (_, false) => server::tls::ServingIdentity::Files(server::tls::serving_cert(
                opts.tls_cert_file.as_deref(),
                opts.tls_private_key_file.as_deref(),
                &opts.root_dir,
                &opts.node_name,
                &node_ips,
            )?),
        };
        let tls = server::tls::server_config(
            identity,
            opts.auth.authentication.client_ca_file.as_deref(),
        )?;
        Some((tls, Arc::new(auth)))
    } else {
        None
    };

    let (tx, rx) = mpsc::channel(16);
    let mut sources = vec![crate::config::SOURCE_FILE];
    if let Some(client) = client {
        let client_for_proxy = client.clone();
        let client_for_pod_cidr = client.clone();
        let source = ApiSource::new(client.clone(), opts.node_name.clone());
        // The apiserver reaches the kubelet API on `--port` only (HTTPS).
        crate::kubeapi::start(
            client,
            ctx.clone(),
            &source,
            host_ip.clone().unwrap_or_default(),
            opts.port,
            opts.reservations.clone(),
            pressure_rx,
            opts.node_lease_duration_seconds,
        );
        tokio::spawn(source.run(tx.clone()));
        sources.push(crate::config::SOURCE_API);
        // NodePorts answer on the node's address (nftables mode; iptables
        // takes every local address); Local traffic policies keep traffic on
        // endpoints of this node's name.
        let mut proxy = opts.proxy.clone();
        proxy.node_ips = host_ip.iter().filter_map(|ip| ip.parse().ok()).collect();
        proxy.node_name = opts.node_name.clone();
        crate::proxy::start(client_for_proxy.clone(), proxy)
            .context("starting the service proxy")?;
        if let Some(node_ip) = node_ipv4 {
            crate::network::cluster::start(
                client_for_proxy,
                ClusterNetworkOptions {
                    backend,
                    node_name: opts.node_name.clone(),
                    node_ip,
                    pod_cidr: opts.pod_cidr.as_deref().and_then(|c| c.parse().ok()),
                    cluster_cidr: opts
                        .proxy
                        .cluster_cidr
                        .as_deref()
                        .and_then(|c| c.parse().ok()),
                },
            );
        }
        adopt_node_pod_cidr(client_for_pod_cidr, &ctx).await;
    }
    match &opts.pod_manifest_path {
        Some(dir) => {
            let mut source = FileSource::new(dir.clone(), opts.node_name.clone());
            source.resync = opts.file_check_frequency;
            tokio::spawn(source.run(tx));
        }
        None => {
            tracing::warn!("no --pod-manifest-path or staticPodPath: this node runs no pods");
            // An empty snapshot still lets the manager clean up old pods.
            let _ = tx
                .send(crate::config::SourceUpdate {
                    source: crate::config::SOURCE_FILE,
                    pods: vec![],
                    errors: vec![],
                })
                .await;
            std::mem::forget(tx);
        }
    }
    // What the previous agent process left is read (and what no pod dir
    // names is removed: networks, cgroups) before any pod starts.
    let manager = {
        let ctx = ctx.clone();
        tokio::task::spawn_blocking(move || PodManager::new(ctx))
            .await
            .context("reading the pods the previous agent left")??
    };
    let evictor = manager.evictor();
    tokio::spawn(manager.with_sources(&sources).run(rx));
    let image_gc = Arc::new(crate::runtime::image::ImageGcManager::new(
        image_service,
        opts.image_gc,
        ctx.events.clone(),
        &ctx.node_name,
    ));
    let status = ctx.status.clone();
    tokio::spawn(image_gc.clone().run(move || status.image_ids_in_use()));
    tokio::spawn(
        crate::eviction::EvictionManager {
            image_gc,
            ctx: ctx.clone(),
            config: opts.eviction.clone(),
            sources: crate::eviction::observe::SignalSources {
                cgroups: ctx.cgroups.clone(),
                nested: !opts.cgroup_root.starts_with('/'),
                root_dir: opts.root_dir.clone(),
                images_dir: opts.root_dir.join("images"),
                allocatable_memory: allocatable_memory(&opts.reservations),
            },
            evictor,
            pressure: pressure_tx,
        }
        .run(),
    );

    let sampler = CpuSampler::default();
    tokio::spawn(sampler.clone().run(ctx.clone()));
    let state = ServerState {
        ctx: ctx.clone(),
        sampler,
    };
    if let Some((tls, auth)) = secure {
        let addr = SocketAddr::new(opts.address, opts.port);
        let listener = listen_retrying(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        tracing::info!(%addr, "serving the kubelet API (HTTPS)");
        let app = server::router(state.clone(), auth);
        tokio::spawn(async move {
            if let Err(e) = server::tls::serve(listener, tls, app).await {
                tracing::error!(%addr, "API server stopped: {e}");
            }
        });
    }
    if opts.read_only_port != 0 {
        let addr = SocketAddr::new(opts.address, opts.read_only_port);
        let listener = listen_retrying(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        tracing::info!(%addr, "serving the read-only kubelet API");
        let app = server::read_only_router(state);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(%addr, "read-only API server stopped: {e}");
            }
        });
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("stopping; pods keep running and are adopted at the next start");
    Ok(())
}

/// The Node's allocatable memory in bytes: the machine's less what is reserved.
fn allocatable_memory(reservations: &crate::config::reserved::NodeReservations) -> Option<u64> {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let total = crate::host::memory_total();
    let capacity = [("memory".to_owned(), Quantity(total.to_string()))].into();
    let allocatable = reservations.allocatable(&capacity);
    crate::quantity::bytes(allocatable.get("memory")?)
        .ok()
        .map(|b| b as u64)
}

/// How long a restarted agent keeps trying a port still held by a process
/// the previous one left (a child forked but not yet exec'd holds its sockets).
const LISTEN_RETRY: Duration = Duration::from_secs(30);

/// Listens on `addr` (SO_REUSEADDR: connections of the previous process in
/// TIME_WAIT do not count), retrying while the address is in use.
async fn listen_retrying(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let deadline = tokio::time::Instant::now() + LISTEN_RETRY;
    loop {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|_| socket.listen(1024)) {
            Ok(listener) => return Ok(listener),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tracing::warn!(%addr, "address in use, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// How long a new cluster node waits for its Node's `spec.podCIDR` before
/// starting pods without a network.
const POD_CIDR_WAIT: Duration = Duration::from_secs(10);
/// How long it waits once its Node is there without one.
const POD_CIDR_GRACE: Duration = Duration::from_secs(1);

/// Without `--pod-cidr` and a network config, a cluster node uses the pod
/// CIDR the cluster assigns its Node (kubelet's `podCIDR` from the control
/// plane): waits briefly for it before pods start, then keeps watching if it
/// has not come yet.
async fn adopt_node_pod_cidr(client: kube::Client, ctx: &Arc<AgentContext>) {
    if !ctx.network.lacks_config() {
        return;
    }
    tracing::info!(
        conf_dir = %ctx.network.conf_dir().display(),
        "no --pod-cidr and no network config: waiting up to {}s for the Node's spec.podCIDR",
        POD_CIDR_WAIT.as_secs()
    );
    let node = ctx.node_name.clone();
    let deadline = tokio::time::Instant::now() + POD_CIDR_WAIT;
    let waited = crate::kubeapi::node::wait_for_pod_cidr(
        client.clone(),
        &node,
        Some(deadline),
        Some(POD_CIDR_GRACE),
    )
    .await;
    match waited {
        Some(cidr) => ctx.network.set_node_pod_cidr(cidr),
        None => {
            tracing::warn!(%node, "the Node has no spec.podCIDR yet: pods get only their loopback until it has one");
            let ctx = ctx.clone();
            tokio::spawn(async move {
                if let Some(cidr) =
                    crate::kubeapi::node::wait_for_pod_cidr(client, &node, None, None).await
                {
                    ctx.network.set_node_pod_cidr(cidr);
                }
            });
        }
    }
}
