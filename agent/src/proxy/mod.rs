//! The service proxy (kube-proxy's job on this node): Services and
//! EndpointSlices of all namespaces, watched through the apiserver, become
//! iptables or nftables rules that send traffic for a cluster IP, a NodePort
//! or an external IP to the service's ready endpoints (this node's only under
//! a Local traffic policy), keeping a client on one endpoint with ClientIP
//! session affinity.
//!
//! - [`model`]: API objects and the node's name → service ports with their
//!   endpoints (pure).
//! - [`iptables`]: the model → `iptables-restore` text, kube-proxy's layout (pure).
//! - [`nftables`]: the model → an `nft -f` table of its own, and its syncer.
//! - [`sync`]: partial syncs against what was last applied, and their pacing.
//! - [`apply`]: `iptables-restore --noflush`, backend detection, `--cleanup`.

pub mod apply;
pub mod bench;
pub mod iptables;
pub mod model;
pub mod nftables;
pub mod sync;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;

pub use apply::cleanup;
use apply::{ApplyError, Iptables, IptablesBackend};
use model::ProxyModel;
use nftables::{NftOptions, NftSyncer};
use sync::{IptablesSyncer, RuleSyncer, SyncOutcome, SyncPeriods, run_sync_loop};

/// `--proxy-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyMode {
    Iptables,
    Nftables,
    None,
}

#[derive(Debug, Clone)]
pub struct ProxyOptions {
    pub mode: ProxyMode,
    /// `--cluster-cidr`: the pod network; traffic to cluster IPs from outside
    /// it is masqueraded.
    pub cluster_cidr: Option<String>,
    pub periods: SyncPeriods,
    /// The node's addresses (NodePorts answer there in nftables mode; the
    /// iptables mode takes every local address, as kube-proxy's default).
    pub node_ips: Vec<Ipv4Addr>,
    /// This node's name: endpoints whose `nodeName` is it are local (the
    /// `Local` traffic policies).
    pub node_name: String,
}

/// The syncer of `opts.mode` (`None` for `--proxy-mode none`), with the
/// host's iptables backend, logged.
pub fn syncer_for(opts: &ProxyOptions) -> Result<Option<Box<dyn RuleSyncer>>, ApplyError> {
    Ok(match opts.mode {
        ProxyMode::None => None,
        ProxyMode::Iptables => {
            let ipt = Iptables::detect()?;
            tracing::info!(
                backend = match ipt.backend {
                    IptablesBackend::Nft => "nf_tables",
                    IptablesBackend::Legacy => "legacy",
                },
                restore = %ipt.restore_program(),
                version = ?ipt.version,
                "service proxy: iptables mode"
            );
            Some(Box::new(IptablesSyncer::new(
                ipt,
                opts.cluster_cidr.clone(),
            )))
        }
        ProxyMode::Nftables => {
            tracing::info!(table = nftables::TABLE, "service proxy: nftables mode");
            Some(Box::new(NftSyncer::new(NftOptions {
                cluster_cidr: opts.cluster_cidr.clone(),
                node_ips: opts.node_ips.clone(),
            })))
        }
    })
}

impl RuleSyncer for Box<dyn RuleSyncer> {
    fn mode(&self) -> &'static str {
        (**self).mode()
    }
    fn sync(&mut self, model: &ProxyModel, full: bool) -> Result<SyncOutcome, ApplyError> {
        (**self).sync(model, full)
    }
}

/// Reflector stores of Services and EndpointSlices, and whether each has had
/// its initial list (kube-proxy syncs nothing before both have).
struct Watched<K: kube::Resource + Clone + 'static>
where
    K::DynamicType: std::hash::Hash + Eq + Clone + Default,
{
    store: Store<K>,
    listed: Arc<AtomicBool>,
}

/// Watches `K` in all namespaces into a store, bumping `changes` on every event.
fn watch_all<K>(client: Client, what: &'static str, changes: Arc<watch::Sender<u64>>) -> Watched<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Default,
{
    let (store, writer) = reflector::store();
    let listed = Arc::new(AtomicBool::new(false));
    let flag = listed.clone();
    tokio::spawn(async move {
        let api: Api<K> = Api::all(client);
        // Re-lists with back-off after errors; the store is swapped whole on
        // each re-list, so a model never mixes two lists.
        let stream = reflector::reflector(
            writer,
            watcher(api, watcher::Config::default()).default_backoff(),
        );
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::InitDone) => {
                    flag.store(true, Ordering::SeqCst);
                    changes.send_modify(|g| *g += 1);
                }
                Ok(watcher::Event::Apply(_)) | Ok(watcher::Event::Delete(_)) => {
                    changes.send_modify(|g| *g += 1);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("service proxy: watching {what}: {e}"),
            }
        }
    });
    Watched { store, listed }
}

/// Starts the proxy: watchers on Services and EndpointSlices feeding the
/// batched sync loop. Errors only when the mode's tools are unusable.
pub fn start(client: Client, opts: ProxyOptions) -> Result<(), ApplyError> {
    let Some(syncer) = syncer_for(&opts)? else {
        tracing::info!("service proxy: --proxy-mode none");
        return Ok(());
    };
    let changes = Arc::new(watch::Sender::new(0u64));
    let rx = changes.subscribe();
    let services: Watched<Service> = watch_all(client.clone(), "Services", changes.clone());
    let slices: Watched<EndpointSlice> = watch_all(client, "EndpointSlices", changes.clone());
    tracing::info!(
        min_sync_period = ?opts.periods.min_sync_period,
        sync_period = ?opts.periods.sync_period,
        cluster_cidr = opts.cluster_cidr.as_deref().unwrap_or("none"),
        node = %opts.node_name,
        "service proxy: watching Services and EndpointSlices"
    );
    let node_name = opts.node_name.clone();
    let model = move || {
        if !services.listed.load(Ordering::SeqCst) || !slices.listed.load(Ordering::SeqCst) {
            return None;
        }
        let svcs = services.store.state();
        let eps = slices.store.state();
        Some(ProxyModel::build(
            svcs.iter().map(|s| s.as_ref()),
            eps.iter().map(|s| s.as_ref()),
            &node_name,
        ))
    };
    tokio::spawn(async move {
        // Keeps the sender alive for as long as the loop runs.
        let _changes = changes;
        run_sync_loop(syncer, rx, model, opts.periods).await;
    });
    Ok(())
}

/// Parses `a.b.c.d/n` (`--cluster-cidr`); the text as given.
pub fn parse_cidr(s: &str) -> Result<String, String> {
    let (ip, len) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not a CIDR (expected e.g. 10.244.0.0/16)"))?;
    ip.parse::<Ipv4Addr>()
        .map_err(|e| format!("{s:?}: address {ip:?}: {e}"))?;
    match len.parse::<u8>() {
        Ok(n) if n <= 32 => Ok(s.to_string()),
        _ => Err(format!("{s:?}: prefix length {len:?} is not 0-32")),
    }
}

/// `--iptables-min-sync-period` default: a pod deletion leaves the rules well
/// within a second, while bursts of changes are still applied together.
pub const DEFAULT_MIN_SYNC_PERIOD: Duration = Duration::from_millis(200);
/// `--iptables-sync-period` default (kube-proxy's).
pub const DEFAULT_SYNC_PERIOD: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_cidrs_are_checked() {
        assert_eq!(parse_cidr("10.244.0.0/16").unwrap(), "10.244.0.0/16");
        assert!(parse_cidr("10.244.0.0").unwrap_err().contains("not a CIDR"));
        assert!(
            parse_cidr("10.244.0.0/33")
                .unwrap_err()
                .contains("prefix length")
        );
        assert!(parse_cidr("fd00::/64").is_err());
    }
}
