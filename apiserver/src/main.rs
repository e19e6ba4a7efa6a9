use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgAction, Args, Parser, Subcommand};

use kubelab_apiserver::api::ServiceNetwork;
use kubelab_apiserver::cidr::Ipv4Cidr;
use kubelab_apiserver::controllers::ControllerOptions;
use kubelab_apiserver::controllers::csr_signing::ClusterSigning;
use kubelab_apiserver::controllers::manager::{self, ManagerOptions};
use kubelab_apiserver::controllers::node_ipam::NodeIpamOptions;
use kubelab_apiserver::controllers::node_lifecycle::{NodeLifecycleOptions, parse_duration};
use kubelab_apiserver::dns::{self, ClusterDnsConfig, kube_dns_service::KubeDnsService};
use kubelab_apiserver::scheduler::{KubeSchedulerConfiguration, SchedulerSettings};
use kubelab_apiserver::server::{self, Config};
use kubelab_apiserver::storage::embedded::LOG_WINDOW;

fn parse_authorization_modes(
    s: &str,
) -> Result<Vec<kubelab_apiserver::authorizer::Mode>, kubelab_apiserver::authorizer::ModeError> {
    kubelab_apiserver::authorizer::Mode::parse_list(s)
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serves the API and runs the control plane in-process; a subcommand
/// runs one part of the control plane alone, against a cluster's API.
#[derive(Parser, Debug)]
#[command(
    name = "kubelab-apiserver",
    version,
    about = "A small Kubernetes-compatible apiserver",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    server: Flags,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller manager alone, as kube-controller-manager.
    ControllerManager(ControllerManagerFlags),
    /// kube-scheduler: places pending pods on nodes, as a client of the API.
    Scheduler(SchedulerFlags),
    /// Run only the cluster DNS, against an apiserver from --kubeconfig.
    Dns(DnsFlags),
}

/// kube-controller-manager's flag names.
#[derive(Args, Debug)]
struct ControllerManagerFlags {
    /// The API server and credentials; without it, `$KUBECONFIG`,
    /// `~/.kube/config` or the in-cluster service account.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Take the `kube-system/kube-controller-manager` Lease before acting.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    leader_elect: bool,
    /// Controllers to run: `*` all, `foo` enables foo, `-foo` disables foo.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    controllers: Vec<String>,
    /// The CA bundle published as `kube-root-ca.crt` in every namespace
    /// (default: the CA of --kubeconfig).
    #[arg(long)]
    root_ca_file: Option<PathBuf>,
    #[command(flatten)]
    tuning: ControllerTuning,
}

/// kube-controller-manager's per-controller settings, taken by the
/// in-process manager and the `controller-manager` subcommand alike.
#[derive(Args, Debug)]
struct ControllerTuning {
    /// Garbage collector workers.
    #[arg(long, default_value_t = manager_defaults().concurrent_gc_syncs)]
    concurrent_gc_syncs: usize,
    /// Finished pods kept before PodGC deletes the oldest; 0 keeps all.
    #[arg(long, default_value_t = manager_defaults().terminated_pod_gc_threshold)]
    terminated_pod_gc_threshold: usize,
    /// How often each HorizontalPodAutoscaler is synced.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    horizontal_pod_autoscaler_sync_period: std::time::Duration,
    /// How long a scale down waits for the highest recent recommendation.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    horizontal_pod_autoscaler_downscale_stabilization: std::time::Duration,
    /// The usage ratio's distance from 1.0 below which nothing scales.
    #[arg(long, default_value_t = 0.1)]
    horizontal_pod_autoscaler_tolerance: f64,
    /// The CA certificate (PEM) the CSR signers issue with (the apiserver's
    /// own controllers: the cluster CA, ca.crt in the data dir).
    #[arg(long, value_name = "FILE", requires = "cluster_signing_key_file")]
    cluster_signing_cert_file: Option<PathBuf>,
    /// The key of --cluster-signing-cert-file.
    #[arg(long, value_name = "FILE", requires = "cluster_signing_cert_file")]
    cluster_signing_key_file: Option<PathBuf>,
    /// The longest life of a certificate the CSR signers issue.
    #[arg(long, value_name = "DURATION", default_value = "8760h", value_parser = parse_duration)]
    cluster_signing_duration: std::time::Duration,
}

impl ControllerTuning {
    fn hpa(&self) -> kubelab_apiserver::controllers::horizontal::HpaOptions {
        let mut o = kubelab_apiserver::controllers::horizontal::HpaOptions {
            sync_period: self.horizontal_pod_autoscaler_sync_period,
            downscale_stabilization: self.horizontal_pod_autoscaler_downscale_stabilization,
            ..Default::default()
        };
        o.tuning.tolerance = self.horizontal_pod_autoscaler_tolerance;
        o
    }
}

impl ControllerTuning {
    /// The signing CA from the flags, else `default` (the files of the
    /// cluster CA, when the manager runs inside the apiserver).
    fn cluster_signing(&self, default: Option<(PathBuf, PathBuf)>) -> Option<ClusterSigning> {
        let (cert_file, key_file) = match (
            &self.cluster_signing_cert_file,
            &self.cluster_signing_key_file,
        ) {
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            _ => default?,
        };
        Some(ClusterSigning {
            cert_file,
            key_file,
            duration: self.cluster_signing_duration,
        })
    }
}

fn manager_defaults() -> ManagerOptions {
    ManagerOptions::default()
}

/// kube-scheduler's flags.
#[derive(Args, Debug, Clone)]
struct SchedulerFlags {
    /// The cluster to schedule for (absent: $KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// A KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1) file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Take the lease before scheduling, so that of several schedulers only one acts.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    leader_elect: Option<bool>,
    /// The lease's name (default kube-scheduler, or the config's leaderElection.resourceName).
    #[arg(long)]
    leader_elect_resource_name: Option<String>,
    /// The lease's namespace (default kube-system).
    #[arg(long)]
    leader_elect_resource_namespace: Option<String>,
    /// Without --config: the one profile's schedulerName (older
    /// kube-scheduler's flag, as the multiple-schedulers recipes use it).
    #[arg(long)]
    scheduler_name: Option<String>,
}

impl SchedulerFlags {
    /// The configuration file (or the defaults) with the flags on top.
    fn settings(&self) -> anyhow::Result<SchedulerSettings> {
        let file = match &self.config {
            Some(p) => KubeSchedulerConfiguration::from_file(p)?,
            None => KubeSchedulerConfiguration::default(),
        };
        let mut settings = file.resolve()?;
        if let Some(name) = &self.scheduler_name {
            if self.config.is_some() {
                anyhow::bail!(
                    "--scheduler-name cannot be used with --config: name the profiles in the file"
                );
            }
            settings.profiles[0].scheduler_name = name.clone();
        }
        if let Some(le) = self.leader_elect {
            settings.leader_elect = le;
        }
        if let Some(n) = &self.leader_elect_resource_name {
            settings.lease_name = n.clone();
        }
        if let Some(n) = &self.leader_elect_resource_namespace {
            settings.lease_namespace = n.clone();
        }
        Ok(settings)
    }
}

/// kube-apiserver's flag names for what this server does.
#[derive(Args, Debug)]
struct Flags {
    /// Where the store, the CA and admin.kubeconfig live.
    #[arg(long, default_value = "/var/lib/kubelab-apiserver")]
    data_dir: PathBuf,
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    #[arg(long, default_value_t = 6443)]
    secure_port: u16,
    /// The address clients are told to use (kubeconfig, `kubernetes` endpoints).
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// Static tokens, kube-apiserver's CSV: token,user,uid,"group1,group2".
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// Let `bootstrap.kubernetes.io/token` Secrets in kube-system
    /// authenticate their `<id>.<secret>` tokens (nodes joining).
    #[arg(long)]
    enable_bootstrap_token_auth: bool,
    #[command(flatten)]
    service_accounts: ServiceAccountFlags,
    /// Ordered authorizers: `Node`, `RBAC`, `AlwaysAllow`, `AlwaysDeny`
    /// (`system:masters` is always allowed).
    #[arg(long, default_value = "Node,RBAC", value_parser = parse_authorization_modes)]
    authorization_mode: std::vec::Vec<kubelab_apiserver::authorizer::Mode>,
    /// How many changes the embedded store keeps for watches resuming from
    /// an older resourceVersion; older ones get 410 Gone.
    #[arg(long, default_value_t = LOG_WINDOW)]
    change_log_window: u64,
    /// etcd endpoints (comma-separated, e.g. http://127.0.0.1:2379) to use
    /// instead of the embedded store; watches then resume only from
    /// revisions etcd has not compacted.
    #[arg(long, value_delimiter = ',')]
    etcd_servers: Vec<String>,
    /// How often etcd's history is compacted (kube-apiserver's flag); each
    /// round keeps one interval of history for watches. 0 disables it.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    etcd_compaction_interval: std::time::Duration,
    /// Cluster IPs come from this range; its first address is the
    /// `kubernetes` service's.
    #[arg(long, value_name = "CIDR", default_value = "10.96.0.0/12")]
    service_cluster_ip_range: Ipv4Cidr,
    /// Node ports come from this range (inclusive).
    #[arg(long, value_name = "FROM-TO", default_value = "30000-32767", value_parser = port_range)]
    service_node_port_range: (u16, u16),
    /// Give every Node a pod subnet of --cluster-cidr (kube-controller-manager's flag).
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    allocate_node_cidrs: bool,
    /// The pod network the nodes' pod subnets are cut from.
    #[arg(long, value_name = "CIDR", default_value = "10.244.0.0/16")]
    cluster_cidr: Ipv4Cidr,
    /// The prefix length of each node's pod subnet.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// The client certificate the apiserver presents to kubelets (PEM;
    /// default: apiserver-kubelet-client.crt in the data dir,
    /// kube-apiserver-kubelet-client in system:masters).
    #[arg(long, value_name = "FILE", requires = "kubelet_client_key")]
    kubelet_client_certificate: Option<PathBuf>,
    /// The key of --kubelet-client-certificate.
    #[arg(long, value_name = "FILE", requires = "kubelet_client_certificate")]
    kubelet_client_key: Option<PathBuf>,
    /// Check kubelets' serving certificates against this CA (PEM); without
    /// it they are not verified.
    #[arg(long, value_name = "FILE")]
    kubelet_certificate_authority: Option<PathBuf>,
    /// How often the node lifecycle controller checks node health.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    node_monitor_period: std::time::Duration,
    /// A node not heard from (lease, Ready heartbeat) for this long is
    /// marked Unknown and tainted unreachable.
    #[arg(long, value_name = "DURATION", default_value = "40s", value_parser = parse_duration)]
    node_monitor_grace_period: std::time::Duration,
    /// The in-process controller manager's controllers, as
    /// kube-controller-manager's `--controllers`; empty runs none (for a
    /// separate `controller-manager`).
    #[arg(long, value_delimiter = ',', default_value = "*")]
    controllers: Vec<String>,
    #[command(flatten)]
    tuning: ControllerTuning,
    /// Don't run the scheduler in this process (run `kubelab-apiserver
    /// scheduler` elsewhere, or bind pods yourself).
    #[arg(long)]
    disable_scheduler: bool,
    /// The in-process scheduler's KubeSchedulerConfiguration file.
    #[arg(long, value_name = "FILE")]
    scheduler_config: Option<PathBuf>,
    /// An AdmissionConfiguration (apiserver.config.k8s.io/v1); its
    /// `PodSecurity` entry sets the defaults and exemptions of Pod Security
    /// admission.
    #[arg(long, value_name = "FILE")]
    admission_control_config_file: Option<PathBuf>,
    /// Components not to run in this process, as k3s' `--disable`:
    /// `coredns` (the cluster DNS and its `kube-dns` Service).
    #[arg(long, value_delimiter = ',', value_parser = ["coredns"])]
    disable: Vec<String>,
    /// Where the cluster DNS listens (UDP and TCP); the `kube-dns` Service's
    /// endpoints point here. Default: the advertise address, port 53.
    #[arg(long, value_name = "ADDR:PORT")]
    cluster_dns_listen: Option<SocketAddr>,
    #[command(flatten)]
    dns_names: DnsNameFlags,
}

/// kube-apiserver's ServiceAccount token flags.
#[derive(clap::Args, Debug)]
struct ServiceAccountFlags {
    /// The private key (PEM: PKCS#8 ECDSA P-256 or RSA) tokens are signed
    /// with; default: sa.key in the data dir, made on first start.
    #[arg(long, value_name = "FILE")]
    service_account_signing_key_file: Option<PathBuf>,
    /// More public keys (PEM) that verify tokens, e.g. of a key being
    /// rotated out (repeatable).
    #[arg(long, value_name = "FILE")]
    service_account_key_file: Vec<PathBuf>,
    /// The `iss` of issued tokens; repeated: all are accepted, the first issued.
    #[arg(long, value_name = "URL", default_value = kubelab_apiserver::serviceaccount::DEFAULT_ISSUER)]
    service_account_issuer: Vec<String>,
    /// Audiences a token must be meant for to reach this API; default: the issuer.
    #[arg(long, value_delimiter = ',')]
    api_audiences: Vec<String>,
    /// The longest lifetime a TokenRequest gets (e.g. 24h); default: no cap.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    service_account_max_token_expiration: Option<std::time::Duration>,
    /// Pod-bound tokens asked for with the kubelet's default lifetime live a
    /// year (with `warnafter`), as kube-apiserver does by default.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    service_account_extend_token_expiration: bool,
}

impl From<ServiceAccountFlags> for kubelab_apiserver::serviceaccount::TokenFlags {
    fn from(f: ServiceAccountFlags) -> Self {
        Self {
            keys: kubelab_apiserver::serviceaccount::keys::KeyFlags {
                signing_key_file: f.service_account_signing_key_file,
                key_files: f.service_account_key_file,
            },
            issuers: f.service_account_issuer,
            api_audiences: f.api_audiences,
            max_expiration_seconds: f
                .service_account_max_token_expiration
                .map(|d| d.as_secs() as i64),
            extend_expiration: f.service_account_extend_token_expiration,
        }
    }
}

/// What the cluster DNS serves and where it forwards the rest.
#[derive(clap::Args, Debug, Clone)]
struct DnsNameFlags {
    /// The cluster's DNS domain (kubelet's `--cluster-domain`).
    #[arg(long, default_value = dns::DEFAULT_CLUSTER_DOMAIN)]
    cluster_domain: String,
    /// Resolvers for names outside the cluster (IP or IP:PORT, repeatable);
    /// default: the nameservers of --resolv-conf.
    #[arg(
        long = "upstream",
        alias = "cluster-dns-upstream",
        value_name = "IP[:PORT]",
        value_delimiter = ','
    )]
    upstream: Vec<String>,
    /// The node's resolver configuration, for the default upstreams.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
}

impl DnsNameFlags {
    fn upstreams(&self) -> anyhow::Result<Vec<SocketAddr>> {
        if !self.upstream.is_empty() {
            return Ok(self
                .upstream
                .iter()
                .map(|u| dns::upstream::parse_upstream(u))
                .collect::<Result<_, _>>()?);
        }
        match dns::upstream::resolv_conf_nameservers(&self.resolv_conf) {
            Ok(servers) => Ok(servers),
            Err(e) => {
                tracing::warn!("cluster DNS: {e}; names outside the cluster will fail");
                Ok(Vec::new())
            }
        }
    }
}

#[derive(clap::Args, Debug)]
struct DnsFlags {
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Where to listen (UDP and TCP).
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:53")]
    listen: SocketAddr,
    #[command(flatten)]
    names: DnsNameFlags,
    /// Keep the `kube-dns` Service's endpoints pointing at this address
    /// (and the listen port); unset: leave the Service to whoever made it.
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// The `kube-dns` Service's cluster IP, with --advertise-address.
    #[arg(long, default_value = "10.96.0.10")]
    cluster_ip: IpAddr,
}

async fn run_dns(flags: DnsFlags) -> anyhow::Result<()> {
    let client = kubelab_apiserver::client::from_kubeconfig(flags.kubeconfig.as_deref()).await?;
    if let Some(ip) = flags.advertise_address {
        tokio::spawn(dns::keep_kube_dns_service(
            client.clone(),
            KubeDnsService {
                cluster_ip: flags.cluster_ip,
                endpoint: SocketAddr::new(ip, flags.listen.port()),
            },
        ));
    }
    let cfg = ClusterDnsConfig {
        listen: flags.listen,
        domain: flags.names.cluster_domain.clone(),
        upstreams: flags.names.upstreams()?,
        ttl: dns::records::DEFAULT_TTL,
    };
    tokio::select! {
        r = dns::serve(client, cfg) => r?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

/// `30000-32767`, as kube-apiserver's `--service-node-port-range` reads it.
fn port_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{s:?} is not a port range such as 30000-32767");
    let (from, to) = s.split_once('-').ok_or_else(bad)?;
    let from: u16 = from.trim().parse().map_err(|_| bad())?;
    let to: u16 = to.trim().parse().map_err(|_| bad())?;
    if from == 0 || from > to {
        return Err(bad());
    }
    Ok((from, to))
}

/// No transparent huge pages for this process. mimalloc asks for them on
/// its arenas and then returns freed spans to the kernel in 64 KiB pieces;
/// the next fault in such a span zeroes a whole 2 MiB page. Under a burst
/// of pod creations that zeroing was a sixth of the apiserver's CPU.
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments and touches no memory of ours.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r != 0 {
        tracing::debug!("PR_SET_THP_DISABLE: {}", std::io::Error::last_os_error());
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    disable_transparent_huge_pages();
    tracing_subscriber::fmt()
        .with_env_filter(
            // hickory's server logs every query at info.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,hickory_server=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::ControllerManager(cm)) => {
            let config =
                kubelab_apiserver::client::config_from_kubeconfig(cm.kubeconfig.as_deref()).await?;
            let root_ca = match &cm.root_ca_file {
                Some(f) => Some(
                    std::fs::read_to_string(f)
                        .with_context(|| format!("reading --root-ca-file {}", f.display()))?,
                ),
                None => kubelab_apiserver::client::root_ca_pem(&config),
            };
            let client = kube::Client::try_from(config).context("building the API client")?;
            return manager::run(
                client,
                ManagerOptions {
                    root_ca,
                    controllers: cm.controllers,
                    leader_elect: cm.leader_elect,
                    concurrent_gc_syncs: cm.tuning.concurrent_gc_syncs,
                    terminated_pod_gc_threshold: cm.tuning.terminated_pod_gc_threshold,
                    horizontal_pod_autoscaler: cm.tuning.hpa(),
                    cluster_signing: cm.tuning.cluster_signing(None),
                    ..Default::default()
                },
            )
            .await;
        }
        Some(Command::Scheduler(sf)) => {
            let settings = sf.settings()?;
            let client =
                kubelab_apiserver::client::from_kubeconfig(sf.kubeconfig.as_deref()).await?;
            return tokio::select! {
                r = kubelab_apiserver::scheduler::run(client, settings) => r,
                _ = tokio::signal::ctrl_c() => Ok(()),
            };
        }
        Some(Command::Dns(dns_flags)) => return run_dns(dns_flags).await,
        None => {}
    }
    let flags = cli.server;
    manager::enabled_controllers(&flags.controllers)?;
    let scheduler = if flags.disable_scheduler {
        None
    } else {
        let file = match &flags.scheduler_config {
            Some(p) => KubeSchedulerConfiguration::from_file(p)?,
            None => KubeSchedulerConfiguration::default(),
        };
        Some(file.resolve()?)
    };
    let cluster_dns = if flags.disable.iter().any(|d| d == "coredns") {
        None
    } else {
        Some(server::ClusterDnsOptions {
            listen: flags.cluster_dns_listen,
            domain: flags.dns_names.cluster_domain.clone(),
            upstreams: flags.dns_names.upstreams()?,
        })
    };
    let pod_security = match &flags.admission_control_config_file {
        Some(p) => kubelab_apiserver::pod_security::config::load(p)?,
        None => Default::default(),
    };
    let cluster_signing = flags.tuning.cluster_signing(Some((
        flags.data_dir.join("ca.crt"),
        flags.data_dir.join("ca.key"),
    )));
    server::run(Config {
        data_dir: flags.data_dir,
        bind_address: flags.bind_address,
        secure_port: flags.secure_port,
        advertise_address: flags.advertise_address,
        token_auth_file: flags.token_auth_file,
        enable_bootstrap_token_auth: flags.enable_bootstrap_token_auth,
        service_accounts: flags.service_accounts.into(),
        authorization_modes: flags.authorization_mode,
        kubelet: server::KubeletClientFlags {
            client_certificate: flags.kubelet_client_certificate,
            client_key: flags.kubelet_client_key,
            certificate_authority: flags.kubelet_certificate_authority,
        },
        change_log_window: flags.change_log_window,
        etcd_servers: flags.etcd_servers,
        etcd_compaction_interval: flags.etcd_compaction_interval,
        service_network: ServiceNetwork {
            cluster_ip_range: flags.service_cluster_ip_range,
            node_ports: i64::from(flags.service_node_port_range.0)
                ..=i64::from(flags.service_node_port_range.1),
        },
        cluster_dns,
        controllers: ControllerOptions {
            node_ipam: flags.allocate_node_cidrs.then_some(NodeIpamOptions {
                cluster_cidr: flags.cluster_cidr,
                node_cidr_mask_size: flags.node_cidr_mask_size,
            }),
            node_lifecycle: NodeLifecycleOptions {
                monitor_period: flags.node_monitor_period,
                grace_period: flags.node_monitor_grace_period,
            },
            manager: ManagerOptions {
                controllers: flags.controllers,
                concurrent_gc_syncs: flags.tuning.concurrent_gc_syncs,
                terminated_pod_gc_threshold: flags.tuning.terminated_pod_gc_threshold,
                horizontal_pod_autoscaler: flags.tuning.hpa(),
                cluster_signing,
                ..Default::default()
            },
        },
        scheduler,
        pod_security,
    })
    .await
}
