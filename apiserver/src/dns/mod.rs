//! Cluster DNS: the Kubernetes DNS schema served from a watch cache of
//! Services and EndpointSlices (kube-runtime reflectors: no LIST per query),
//! everything else forwarded to the node's resolvers. It runs inside the
//! apiserver process by default, as k3s runs CoreDNS (`--disable=coredns`
//! turns it off), or alone as `kubelab-apiserver dns --kubeconfig F`.
//!
//! - [`records`]: pure: objects → index → answer for (name, type).
//! - [`handler`]: the hickory-server request handler.
//! - [`upstream`]: resolv.conf / `--upstream` → a caching forwarder.
//! - [`kube_dns_service`]: the `kube-dns` Service and its endpoints.

pub mod handler;
pub mod kube_dns_service;
pub mod records;
pub mod upstream;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use hickory_proto::rr::Name;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};

use handler::{ClusterDnsHandler, SharedRecords};
use kube_dns_service::KubeDnsService;
use records::ClusterRecords;

/// kubelet's and CoreDNS' default cluster domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// How often the `kube-dns` Service and endpoints are reconciled.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(10);
/// An idle TCP client is dropped after this long.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("invalid cluster domain {domain:?}: {reason}")]
    Domain { domain: String, reason: String },
    #[error("listening on {addr} ({proto}): {source}")]
    Bind {
        addr: SocketAddr,
        proto: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Upstream(#[from] upstream::UpstreamError),
    #[error("the Service/EndpointSlice watch ended before its first list")]
    WatchEnded,
    #[error("serving DNS: {0}")]
    Serve(String),
}

/// The server's settings, from flags.
#[derive(Debug, Clone)]
pub struct ClusterDnsConfig {
    /// Where it listens (UDP and TCP).
    pub listen: SocketAddr,
    /// The cluster domain, `cluster.local`.
    pub domain: String,
    /// Resolvers for names outside the cluster.
    pub upstreams: Vec<SocketAddr>,
    pub ttl: u32,
}

impl ClusterDnsConfig {
    fn zone(&self) -> Result<Name, DnsError> {
        let mut zone =
            Name::from_ascii(self.domain.trim_end_matches('.')).map_err(|e| DnsError::Domain {
                domain: self.domain.clone(),
                reason: e.to_string(),
            })?;
        zone.set_fqdn(true);
        Ok(zone)
    }
}

/// The `kube-dns` cluster IP: the service range's tenth address, as
/// kubeadm computes it.
pub fn kube_dns_cluster_ip(range: &crate::cidr::Ipv4Cidr) -> IpAddr {
    IpAddr::V4(range.nth(10).unwrap_or(range.network()))
}

/// Keeps the `kube-dns` Service and its endpoints as `service` says, for
/// the life of the process.
pub async fn keep_kube_dns_service(client: kube::Client, service: KubeDnsService) {
    let mut tick = tokio::time::interval(RECONCILE_INTERVAL);
    loop {
        tick.tick().await;
        if let Err(e) = service.reconcile(&client).await {
            tracing::warn!("reconciling the kube-dns service: {e}");
        }
    }
}

/// Which of the two watches an event came from, and whether it changed
/// the cache (the initial list counts once, at its end).
enum Change {
    Services(bool),
    Slices(bool),
}

fn changes<K>(event: &Result<Event<K>, watcher::Error>) -> bool {
    matches!(
        event,
        Ok(Event::Apply(_) | Event::Delete(_) | Event::InitDone)
    )
}

/// Binds, waits for the first lists, then answers until the process ends.
pub async fn serve(client: kube::Client, cfg: ClusterDnsConfig) -> Result<(), DnsError> {
    let zone = cfg.zone()?;
    let udp = tokio::net::UdpSocket::bind(cfg.listen)
        .await
        .map_err(|source| DnsError::Bind {
            addr: cfg.listen,
            proto: "udp",
            source,
        })?;
    let tcp = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| DnsError::Bind {
            addr: cfg.listen,
            proto: "tcp",
            source,
        })?;
    // Never forward to ourselves (a node whose resolv.conf names us).
    let upstreams: Vec<SocketAddr> = cfg
        .upstreams
        .iter()
        .copied()
        .filter(|u| *u != cfg.listen && *u != udp.local_addr().unwrap_or(cfg.listen))
        .collect();
    let upstream = if upstreams.is_empty() {
        tracing::warn!("cluster DNS: no upstream resolvers; names outside the cluster fail");
        None
    } else {
        Some(upstream::resolver(&upstreams)?)
    };

    let (services, services_writer) = reflector::store::<Service>();
    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    let service_events = reflector::reflector(
        services_writer,
        watcher::watcher(kube::Api::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .map(|e| Change::Services(changes(&e)));
    let slice_events = reflector::reflector(
        slices_writer,
        watcher::watcher(kube::Api::all(client), watcher::Config::default()),
    )
    .default_backoff()
    .map(|e| Change::Slices(changes(&e)));
    let mut events = std::pin::pin!(futures::stream::select(service_events, slice_events));

    let empty = ClusterRecords::build(&zone, cfg.ttl, [], []);
    let shared: SharedRecords = Arc::new(RwLock::new(Arc::new(empty)));
    let rebuild = |services: &Store<Service>, slices: &Store<EndpointSlice>| {
        let s = services.state();
        let e = slices.state();
        let records = ClusterRecords::build(
            &zone,
            cfg.ttl,
            s.iter().map(|s| s.as_ref()),
            e.iter().map(|e| e.as_ref()),
        );
        if let Ok(mut w) = shared.write() {
            *w = Arc::new(records);
        }
    };

    // The first lists, before any answer: an empty cache would say NXDOMAIN
    // for names that exist.
    let (mut services_listed, mut slices_listed) = (false, false);
    while !(services_listed && slices_listed) {
        match events.next().await {
            Some(Change::Services(true)) => services_listed = true,
            Some(Change::Slices(true)) => slices_listed = true,
            Some(_) => {}
            None => return Err(DnsError::WatchEnded),
        }
    }
    rebuild(&services, &slices);
    tracing::info!(
        listen = %cfg.listen,
        domain = %cfg.domain,
        upstreams = ?upstreams,
        "cluster DNS serving"
    );

    let mut server = hickory_server::Server::new(ClusterDnsHandler {
        records: shared.clone(),
        upstream,
    });
    server.register_socket(udp);
    server.register_listener(tcp, TCP_TIMEOUT, 64);
    let watch = async {
        while let Some(change) = events.next().await {
            if let Change::Services(true) | Change::Slices(true) = change {
                rebuild(&services, &slices);
            }
        }
    };
    tokio::select! {
        r = server.block_until_done() => r.map_err(|e| DnsError::Serve(e.to_string())),
        _ = watch => Err(DnsError::WatchEnded),
    }
}
