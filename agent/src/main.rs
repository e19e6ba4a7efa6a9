//! `kubelab-agent`: flags → config → run. Nothing else lives here.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use kubelab_agent::agent::{self, AgentOptions};
use kubelab_agent::config::{self, parse_go_duration};
use kubelab_agent::runtime::image::cli::{ImageCommand, run_image_command};
use kubelab_agent::runtime::{exec, sandbox, shim};

/// A kubelet-like node agent that runs pods as real Linux containers.
///
/// Flags carry the kubelet's names; a flag given on the command line wins
/// over the same setting in the `--config` file.
#[derive(Parser, Debug)]
#[command(name = "kubelab-agent", version, about, long_about = None)]
struct Cli {
    /// Directory (or single file) of static pod manifests.
    #[arg(long, value_name = "DIR")]
    pod_manifest_path: Option<PathBuf>,
    /// A KubeletConfiguration YAML file (staticPodPath, cgroupRoot, ports, ...).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where pods, images and logs are kept.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/kubelet",
        global = true
    )]
    root_dir: PathBuf,
    /// Join the cluster this kubeconfig points at: register the Node, run the
    /// pods bound to it, report their status (absent: standalone).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Credentials to get a client certificate with when --kubeconfig does
    /// not exist (TLS bootstrapping); --kubeconfig is then written.
    #[arg(long, value_name = "FILE", requires = "kubeconfig")]
    bootstrap_kubeconfig: Option<PathBuf>,
    /// Where the certificates from the cluster are kept (default
    /// <root-dir>/pki).
    #[arg(long, value_name = "DIR")]
    cert_dir: Option<PathBuf>,
    /// Get --port's certificate from the cluster's kubelet-serving signer
    /// and renew it before it expires (serverTLSBootstrap).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    rotate_server_certificates: Option<bool>,
    /// The node's name (default: the host name).
    #[arg(long, value_name = "NAME")]
    hostname_override: Option<String>,
    /// Parent cgroup of `kubepods`. Absolute: the same path in every hierarchy
    /// (kubelet's meaning); relative: under this process's own cgroup.
    #[arg(long, value_name = "PATH")]
    cgroup_root: Option<String>,
    /// Only `cgroupfs` is supported.
    #[arg(long, value_name = "DRIVER")]
    cgroup_driver: Option<String>,
    /// How often the manifest dir is re-read besides inotify (e.g. 20s).
    #[arg(long, value_name = "DURATION")]
    file_check_frequency: Option<String>,
    /// Port of the kubelet API (0 disables).
    #[arg(long)]
    port: Option<u16>,
    /// Port of the read-only kubelet API (0 disables; default 10255 here).
    #[arg(long)]
    read_only_port: Option<u16>,
    /// Address the API ports listen on.
    #[arg(long, default_value = "0.0.0.0")]
    address: std::net::IpAddr,
    /// `--port`'s serving certificate (PEM; absent: a self-signed one in
    /// <root-dir>/pki/kubelet.crt).
    #[arg(long, value_name = "FILE")]
    tls_cert_file: Option<PathBuf>,
    /// The key of --tls-cert-file.
    #[arg(long, value_name = "FILE")]
    tls_private_key_file: Option<PathBuf>,
    /// `--port`'s authentication and authorization (kubelet's flags).
    #[command(flatten)]
    auth: kubelab_agent::server::auth::AuthFlags,
    /// The pids limit of every pod (-1: unlimited).
    #[arg(long)]
    pod_max_pids: Option<i64>,
    /// Rotate a container's log past this size (e.g. 10Mi).
    #[arg(long, value_name = "QUANTITY")]
    container_log_max_size: Option<String>,
    /// Log files kept per container.
    #[arg(long)]
    container_log_max_files: Option<u32>,
    /// The runtime handler of pods without a RuntimeClass: `kubelab` (the
    /// built-in runtime) or `runc`.
    #[arg(long, value_name = "HANDLER", default_value = "kubelab",
          value_parser = [kubelab_agent::runtime::handlers::BUILTIN, kubelab_agent::runtime::handlers::RUNC])]
    default_runtime_handler: String,
    /// The `runc` binary of the `runc` runtime handler.
    #[arg(long, value_name = "PATH", default_value = "runc")]
    runc_binary: PathBuf,
    /// The node's IP, reported as hostIP.
    #[arg(long)]
    node_ip: Option<String>,
    /// Directory of CNI network configs; the first .conflist/.conf in lexical order is used.
    #[arg(long, value_name = "DIR", default_value = "/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    /// Directories of CNI plugin binaries, comma-separated.
    #[arg(long, value_name = "DIRS", default_value = "/opt/cni/bin")]
    cni_bin_dir: String,
    /// The node's pod subnet: with no CNI config, a bridge network for it is written.
    #[arg(long, value_name = "CIDR")]
    pod_cidr: Option<String>,
    /// Resources held back for the OS (e.g. cpu=100m,memory=256Mi,ephemeral-storage=1Gi,pid=100).
    #[arg(long, value_name = "LIST")]
    system_reserved: Option<String>,
    /// Resources held back for the agent and runtime (same syntax as --system-reserved).
    #[arg(long, value_name = "LIST")]
    kube_reserved: Option<String>,
    /// Hard eviction thresholds (default memory.available<100Mi,nodefs.available<10%,
    /// nodefs.inodesFree<5%,imagefs.available<15%); they are left out of allocatable.
    #[arg(long, value_name = "LIST")]
    eviction_hard: Option<String>,
    /// Soft eviction thresholds (same syntax): pods go once one has been
    /// crossed for its --eviction-soft-grace-period.
    #[arg(long, value_name = "LIST")]
    eviction_soft: Option<String>,
    /// How long each soft threshold must be crossed (memory.available=1m30s,...).
    #[arg(long, value_name = "LIST")]
    eviction_soft_grace_period: Option<String>,
    /// How much beyond a crossed threshold must be free again before the
    /// pressure ends (memory.available=0Mi,nodefs.available=500Mi,...).
    #[arg(long, value_name = "LIST")]
    eviction_minimum_reclaim: Option<String>,
    /// How long a pressure condition stays after its threshold was last
    /// crossed (default 5m0s).
    #[arg(long, value_name = "DURATION")]
    eviction_pressure_transition_period: Option<String>,
    /// The longest grace period, in seconds, of a pod evicted for a soft
    /// threshold (default 0: none).
    #[arg(long, value_name = "SECONDS")]
    eviction_max_pod_grace_period: Option<i64>,
    /// How long the node's Lease lasts; it is renewed every quarter of it
    /// (default 40; the node controller's grace period should be no shorter).
    #[arg(long, value_name = "SECONDS")]
    node_lease_duration_seconds: Option<i32>,
    /// The service proxy's mode (kube-proxy's flag): `iptables`, `nftables`,
    /// or `none`. It runs when the node joins a cluster (`--kubeconfig`).
    #[arg(long, value_enum, default_value = "iptables")]
    proxy_mode: kubelab_agent::proxy::ProxyMode,
    /// How pods reach other nodes' pods: `host-gw` (a route per node's pod
    /// CIDR via its address, nodes on one L2 segment), `vxlan` (an overlay,
    /// VNI 1, UDP 8472) or `none` (default).
    #[arg(long, value_name = "BACKEND", value_enum)]
    pod_network_backend: Option<kubelab_agent::network::cluster::PodNetworkBackend>,
    /// The pod network; traffic to cluster IPs from outside it is masqueraded.
    #[arg(long, value_name = "CIDR", value_parser = kubelab_agent::proxy::parse_cidr)]
    cluster_cidr: Option<String>,
    /// The shortest time between two syncs of the proxy's rules (changes
    /// arriving meanwhile are applied together), e.g. 200ms.
    #[arg(long, value_name = "DURATION")]
    iptables_min_sync_period: Option<String>,
    /// How often the proxy's rules are synced even without changes (e.g. 30s).
    #[arg(long, value_name = "DURATION")]
    iptables_sync_period: Option<String>,
    /// Nameservers of `ClusterFirst` pods, comma-separated (kubelet's
    /// `--cluster-dns`; the `kube-dns` Service's IP, 10.96.0.10).
    #[arg(long, value_name = "IPS", value_delimiter = ',')]
    cluster_dns: Vec<std::net::IpAddr>,
    /// The cluster's DNS domain: pods search `<ns>.svc.<domain>`,
    /// `svc.<domain>` and `<domain>` (default cluster.local).
    #[arg(long, value_name = "DOMAIN")]
    cluster_domain: Option<String>,
    /// The node's resolver file, for `Default` pods and host search domains.
    #[arg(long, value_name = "FILE")]
    resolv_conf: Option<PathBuf>,
    /// Remove every rule and chain the service proxy installed, and the pod
    /// network's routes, VXLAN device and rules, then exit.
    #[arg(long)]
    cleanup: bool,
    /// Run containers that name no seccomp profile under RuntimeDefault.
    #[arg(long)]
    seccomp_default: bool,
    /// Unsafe sysctls (names, or prefixes ending in `*`) pods may set,
    /// comma-separated, e.g. 'kernel.msg*,net.core.somaxconn'.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    allowed_unsafe_sysctls: Option<Vec<String>>,
    /// Pull images one at a time (default true; kubelet's flag).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    serialize_image_pulls: Option<bool>,
    /// How many images may be pulled at once with --serialize-image-pulls=false
    /// (default: no limit).
    #[arg(long, value_name = "N")]
    max_parallel_image_pulls: Option<i32>,
    /// The percent of disk usage at or above which image garbage collection
    /// always runs (default 85).
    #[arg(long, value_name = "PERCENT", allow_hyphen_values = true)]
    image_gc_high_threshold: Option<i32>,
    /// The percent of disk usage image garbage collection frees down to
    /// (default 80).
    #[arg(long, value_name = "PERCENT", allow_hyphen_values = true)]
    image_gc_low_threshold: Option<i32>,
    /// Minimum age for an unused image before it is garbage collected (default 2m0s).
    #[arg(long, value_name = "DURATION")]
    minimum_image_ttl_duration: Option<String>,
    /// Maximum age an image can be unused before it is garbage collected;
    /// 0s (the default) turns it off.
    #[arg(long, value_name = "DURATION")]
    image_maximum_gc_age: Option<String>,
    /// A registry (`host[:port]`) reached over plain HTTP, like dockerd's
    /// flag; repeatable. Loopback registries need none.
    #[arg(long, value_name = "HOST[:PORT]")]
    insecure_registry: Vec<String>,
    /// Feature gates, e.g. 'MemoryQoS=true,KubeletPSI=false' (on top of the
    /// config file's featureGates).
    #[arg(long, value_name = "GATES")]
    feature_gates: Option<String>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Manage the node's image store.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Per-container supervisor (started by the agent).
    #[command(hide = true)]
    Shim(shim::ShimArgs),
    /// Pod sandbox process (started by the agent).
    #[command(hide = true)]
    Sandbox(sandbox::SandboxArgs),
    /// Run a command inside a running container (exec probes).
    #[command(hide = true)]
    Exec(exec::ExecArgs),
    /// Time the service proxy's syncs on a synthetic cluster (bench/proxy_bench.sh).
    #[command(hide = true)]
    ProxyBench(kubelab_agent::proxy::bench::BenchArgs),
    /// Run simulated nodes (kubemark's hollow nodes): the real node logic
    /// around a runtime that only pretends, many nodes in one process.
    Hollow(kubelab_agent::hollow::HollowArgs),
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The image GC policy: flags over the config file over kubelet's defaults,
/// validated as the kubelet validates it.
fn image_gc_policy(
    cli: &Cli,
    file: &config::KubeletConfiguration,
) -> anyhow::Result<kubelab_agent::runtime::image::ImageGcPolicy> {
    let mut policy = file.image_gc;
    if let Some(p) = cli.image_gc_high_threshold {
        policy.high_threshold_percent = p;
    }
    if let Some(p) = cli.image_gc_low_threshold {
        policy.low_threshold_percent = p;
    }
    if let Some(d) = &cli.minimum_image_ttl_duration {
        policy.min_age = parse_go_duration(d)
            .map_err(|e| anyhow::anyhow!("--minimum-image-ttl-duration: {e}"))?;
    }
    if let Some(d) = &cli.image_maximum_gc_age {
        policy.max_age =
            parse_go_duration(d).map_err(|e| anyhow::anyhow!("--image-maximum-gc-age: {e}"))?;
    }
    policy.validate()?;
    Ok(policy)
}

fn proxy_period(
    flag: &str,
    value: &Option<String>,
    default: std::time::Duration,
) -> anyhow::Result<std::time::Duration> {
    match value {
        Some(s) => parse_go_duration(s).map_err(|e| anyhow::anyhow!("{flag}: {e}")),
        None => Ok(default),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        // The two helper processes stay single-threaded: no runtime, no tracing threads.
        Some(Command::Shim(args)) => return shim::run(args),
        Some(Command::Sandbox(args)) => return sandbox::run(args),
        Some(Command::Exec(args)) => return exec::run(args),
        Some(Command::ProxyBench(args)) => return kubelab_agent::proxy::bench::run(args),
        Some(Command::Image(cmd)) => {
            init_tracing();
            return run_image_command(&cli.root_dir, cmd);
        }
        Some(Command::Hollow(args)) => {
            init_tracing();
            limit_malloc_arenas();
            return tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(kubelab_agent::hollow::run(args, cli.root_dir));
        }
        None => {}
    }
    init_tracing();
    if cli.cleanup {
        let report = kubelab_agent::proxy::cleanup()?;
        tracing::info!(
            iptables_backends = report.iptables.len(),
            nftables_table = report.nftables_table,
            "service proxy rules cleaned up"
        );
        let network = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(kubelab_agent::network::cluster::cleanup())?;
        tracing::info!(
            routes = network.routes,
            vxlan_device = network.vxlan_device,
            iptables_backends = network.rules.len(),
            "pod network routes, device and rules cleaned up"
        );
        return Ok(());
    }

    let file_cfg = match &cli.config {
        Some(path) => config::load_kubelet_config(path)?,
        None => config::KubeletConfiguration::default(),
    };
    let auth = cli
        .auth
        .resolve(cli.config.is_some().then_some(&file_cfg))?;
    let cgroup_driver = cli
        .cgroup_driver
        .clone()
        .unwrap_or_else(|| file_cfg.cgroup_driver.clone());
    if cgroup_driver != "cgroupfs" {
        anyhow::bail!("--cgroup-driver {cgroup_driver:?}: only \"cgroupfs\" is supported");
    }
    let file_check_frequency = match &cli.file_check_frequency {
        Some(s) => {
            parse_go_duration(s).map_err(|e| anyhow::anyhow!("--file-check-frequency: {e}"))?
        }
        None => file_cfg.file_check_frequency,
    };
    let container_log_max_size = match &cli.container_log_max_size {
        Some(s) => kubelab_agent::quantity::bytes(
            &k8s_openapi::apimachinery::pkg::api::resource::Quantity(s.clone()),
        )
        .map_err(|e| anyhow::anyhow!("--container-log-max-size: {e}"))? as u64,
        None => file_cfg.container_log_max_size,
    };
    let node_name = match cli.hostname_override.clone() {
        Some(n) => n,
        None => nix::unistd::gethostname()?.to_string_lossy().to_lowercase(),
    };
    let pids = cli.pod_max_pids.unwrap_or(file_cfg.pod_pids_limit);
    let image_gc = image_gc_policy(&cli, &file_cfg)?;
    if let Some(secs) = cli.node_lease_duration_seconds
        && secs <= 0
    {
        anyhow::bail!("--node-lease-duration-seconds {secs}: must be greater than 0");
    }
    let flag_gates = match &cli.feature_gates {
        Some(text) => kubelab_agent::config::feature_gates::parse_feature_gates(text)
            .map_err(|e| anyhow::anyhow!("--feature-gates: {e}"))?,
        None => Default::default(),
    };
    let feature_gates = kubelab_agent::config::feature_gates::FeatureGates::merged(
        &file_cfg.feature_gates,
        &flag_gates,
    );
    let unknown_gates = feature_gates.unknown();
    if !unknown_gates.is_empty() {
        tracing::info!(gates = ?unknown_gates, "feature gates the agent does not act on");
    }
    use kubelab_agent::config::reserved;
    let reservations = reserved::NodeReservations {
        system_reserved: match &cli.system_reserved {
            Some(s) => reserved::parse_reservation("--system-reserved", s)?,
            None => file_cfg.system_reserved.clone(),
        },
        kube_reserved: match &cli.kube_reserved {
            Some(s) => reserved::parse_reservation("--kube-reserved", s)?,
            None => file_cfg.kube_reserved.clone(),
        },
        eviction_hard: match &cli.eviction_hard {
            Some(s) => reserved::parse_eviction_hard("--eviction-hard", s)?,
            None => file_cfg
                .eviction_hard
                .clone()
                .unwrap_or_else(reserved::default_eviction_hard),
        },
    };
    let eviction = eviction_config(&cli, &file_cfg, &reservations)?;
    let cert_dir = cli
        .cert_dir
        .clone()
        .unwrap_or_else(|| cli.root_dir.join("pki"));
    let options = AgentOptions {
        node_name,
        root_dir: cli.root_dir,
        pod_manifest_path: cli.pod_manifest_path.or(file_cfg.static_pod_path),
        file_check_frequency,
        cgroup_root: cli
            .cgroup_root
            .or(file_cfg.cgroup_root)
            .unwrap_or_else(|| "/".into()),
        address: cli.address,
        port: cli.port.unwrap_or(file_cfg.port),
        read_only_port: cli.read_only_port.unwrap_or(if cli.config.is_some() {
            file_cfg.read_only_port
        } else {
            10255
        }),
        pod_pids_limit: (pids > 0).then_some(pids),
        container_log_max_size,
        container_log_max_files: cli
            .container_log_max_files
            .unwrap_or(file_cfg.container_log_max_files) as usize,
        node_ip: cli.node_ip,
        cni_conf_dir: cli.cni_conf_dir,
        cni_bin_dirs: kubelab_agent::network::parse_bin_dirs(&cli.cni_bin_dir),
        pod_cidr: cli.pod_cidr,
        pod_network_backend: cli
            .pod_network_backend
            .unwrap_or(file_cfg.pod_network_backend),
        kubeconfig: cli.kubeconfig,
        reservations,
        eviction,
        node_lease_duration_seconds: cli
            .node_lease_duration_seconds
            .unwrap_or(file_cfg.node_lease_duration_seconds),
        proxy: kubelab_agent::proxy::ProxyOptions {
            mode: cli.proxy_mode,
            cluster_cidr: cli.cluster_cidr,
            periods: kubelab_agent::proxy::sync::SyncPeriods {
                min_sync_period: proxy_period(
                    "--iptables-min-sync-period",
                    &cli.iptables_min_sync_period,
                    kubelab_agent::proxy::DEFAULT_MIN_SYNC_PERIOD,
                )?,
                sync_period: proxy_period(
                    "--iptables-sync-period",
                    &cli.iptables_sync_period,
                    kubelab_agent::proxy::DEFAULT_SYNC_PERIOD,
                )?,
            },
            node_ips: vec![],
            // The agent's node name, set where the proxy starts.
            node_name: String::new(),
        },
        cluster_dns: if cli.cluster_dns.is_empty() {
            file_cfg.cluster_dns.clone()
        } else {
            cli.cluster_dns.clone()
        },
        cluster_domain: cli
            .cluster_domain
            .clone()
            .or(file_cfg.cluster_domain.clone())
            .unwrap_or_else(|| kubelab_agent::network::dns::DEFAULT_CLUSTER_DOMAIN.into()),
        resolv_conf: cli
            .resolv_conf
            .clone()
            .unwrap_or(file_cfg.resolv_conf.clone()),
        policy: kubelab_agent::runtime::node_policy::NodePolicy {
            seccomp_default: cli.seccomp_default || file_cfg.seccomp_default,
            allowed_unsafe_sysctls: cli
                .allowed_unsafe_sysctls
                .clone()
                .unwrap_or_else(|| file_cfg.allowed_unsafe_sysctls.clone()),
        },
        bootstrap_kubeconfig: cli.bootstrap_kubeconfig,
        cert_dir,
        server_tls_bootstrap: cli
            .rotate_server_certificates
            .unwrap_or(file_cfg.server_tls_bootstrap),
        tls_cert_file: cli.tls_cert_file.or(file_cfg.tls_cert_file),
        tls_private_key_file: cli.tls_private_key_file.or(file_cfg.tls_private_key_file),
        auth,
        image_pulls: kubelab_agent::images::PullOptions {
            concurrency: kubelab_agent::images::PullConcurrency::from_settings(
                cli.serialize_image_pulls
                    .unwrap_or(file_cfg.serialize_image_pulls),
                cli.max_parallel_image_pulls
                    .or(file_cfg.max_parallel_image_pulls),
            )?,
            registries: kubelab_agent::runtime::image::RegistryOptions {
                insecure_registries: cli.insecure_registry.clone(),
            },
        },
        image_gc,
        cgroup_features: kubelab_agent::cgroups::CgroupFeatures {
            single_process_oom_kill: file_cfg.single_process_oom_kill,
            memory_qos: feature_gates.enabled("MemoryQoS"),
            memory_throttling_factor: file_cfg.memory_throttling_factor,
            node_swap: feature_gates.enabled("NodeSwap"),
            swap_behavior: file_cfg.swap_behavior,
        },
        psi_stats: feature_gates.enabled("KubeletPSI"),
        runtime_handlers: kubelab_agent::runtime::handlers::HandlerConfig {
            default: cli.default_runtime_handler.clone(),
            runc_binary: cli.runc_binary.clone(),
        },
    };
    limit_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Blocking work is container starts and cgroup reads: more threads
        // than this only queue on two cores.
        .max_blocking_threads(32)
        .enable_all()
        .build()?
        .block_on(agent::run(options))
}

/// Two malloc arenas: the agent is mostly idle threads, and glibc's default
/// of one arena per thread per core keeps freed memory in each. Called
/// before any other thread exists.
fn limit_malloc_arenas() {
    // SAFETY: no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// The eviction manager's configuration: flags over the config file's
/// fields, the hard thresholds already in `reservations`.
fn eviction_config(
    cli: &Cli,
    file_cfg: &kubelab_agent::config::kubelet_config::KubeletConfiguration,
    reservations: &kubelab_agent::config::reserved::NodeReservations,
) -> anyhow::Result<kubelab_agent::eviction::EvictionConfig> {
    use kubelab_agent::config::reserved;
    use kubelab_agent::eviction::config::{EvictionConfig, ThresholdStatements, parse_pairs};
    let soft = match &cli.eviction_soft {
        Some(s) => reserved::parse_eviction_hard("--eviction-soft", s)?,
        None => file_cfg.eviction_soft.clone(),
    };
    let soft_grace_period = match &cli.eviction_soft_grace_period {
        Some(s) => parse_pairs("--eviction-soft-grace-period", s)?,
        None => file_cfg.eviction_soft_grace_period.clone(),
    };
    let minimum_reclaim = match &cli.eviction_minimum_reclaim {
        Some(s) => parse_pairs("--eviction-minimum-reclaim", s)?,
        None => file_cfg.eviction_minimum_reclaim.clone(),
    };
    let mut config = EvictionConfig::build(
        &ThresholdStatements {
            hard: reservations.eviction_hard.clone(),
            soft,
            soft_grace_period,
            minimum_reclaim,
        },
        "--eviction-soft-grace-period",
        "--eviction-minimum-reclaim",
    )?;
    config.pressure_transition_period = match &cli.eviction_pressure_transition_period {
        Some(s) => kubelab_rules::duration::parse_go_duration(s)
            .map_err(|e| anyhow::anyhow!("--eviction-pressure-transition-period {s:?}: {e}"))?,
        None => file_cfg.eviction_pressure_transition_period,
    };
    let max_grace = cli
        .eviction_max_pod_grace_period
        .unwrap_or(file_cfg.eviction_max_pod_grace_period);
    config.max_pod_grace_period = std::time::Duration::from_secs(max_grace.max(0) as u64);
    Ok(config)
}
