//! The eviction manager (kubelet's `pkg/kubelet/eviction`): every 10 s it
//! reads the node's signals ([`observe`]), judges them against the hard and
//! soft thresholds ([`thresholds`]), reports the pressure conditions the
//! Node shows (`MemoryPressure`, `DiskPressure`, `PIDPressure`; the node
//! lifecycle controller turns them into `node.kubernetes.io/*-pressure`
//! taints), and while a threshold is crossed evicts one pod per round, the
//! first of [`rank`]'s order: the pod fails with `reason: Evicted` and the
//! kubelet's message, and a Warning `Evicted` event says why. Before a pod
//! is evicted for disk, unused images are deleted ([`reclaim`]).

pub mod admission;
pub mod config;
pub mod observe;
pub mod rank;
pub mod reclaim;
pub mod thresholds;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

pub use config::{EvictionConfig, PressureCondition, Signal};

use crate::context::AgentContext;
use crate::pod::manager::{PodEviction, PodEvictor};

/// kubelet's `evictionMonitoringPeriod`.
pub const MONITORING_PERIOD: Duration = Duration::from_secs(10);
/// How long the manager waits for an evicted pod's containers to stop
/// before it looks again (kubelet's `podCleanupTimeout`).
const POD_CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);
const POD_CLEANUP_POLL: Duration = Duration::from_secs(1);

/// The status reason of an evicted pod, and its event's.
pub const REASON: &str = "Evicted";

/// The pressure conditions the node has now; the node status reads them.
pub type Pressure = BTreeSet<PressureCondition>;

/// How many pods were evicted, by signal (kubelet's `kubelet_evictions`).
#[derive(Debug, Clone, Default)]
pub struct EvictionCounts(Arc<Mutex<BTreeMap<&'static str, u64>>>);

impl EvictionCounts {
    pub fn add(&self, signal: Signal) {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(signal.as_str())
            .or_default() += 1;
    }

    /// (signal, evictions) for every signal that evicted a pod.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        counts.iter().map(|(s, n)| (*s, *n)).collect()
    }
}

pub struct EvictionManager {
    pub ctx: Arc<AgentContext>,
    /// Reclaims disk by deleting unused images before any pod is evicted.
    pub image_gc: Arc<crate::runtime::image::ImageGcManager>,
    pub config: EvictionConfig,
    pub sources: observe::SignalSources,
    pub evictor: PodEvictor,
    pub pressure: watch::Sender<Pressure>,
}

impl EvictionManager {
    pub async fn run(self) {
        let mut state = thresholds::EvictionState::default();
        loop {
            let evicted = self.synchronize(&mut state).await;
            match evicted {
                Some(uid) => self.wait_for_cleanup(&uid).await,
                None => tokio::time::sleep(MONITORING_PERIOD).await,
            }
        }
    }

    /// One round; the UID of the pod it evicted, if any.
    async fn synchronize(&self, state: &mut thresholds::EvictionState) -> Option<String> {
        let sources = self.sources.clone();
        let observations = tokio::task::spawn_blocking(move || observe::observe(&sources))
            .await
            .ok()?;
        let outcome = state.synchronize(&self.config, &observations, Instant::now());
        self.pressure.send_if_modified(|p| {
            let changed = *p != outcome.conditions;
            if changed {
                tracing::info!(conditions = ?outcome.conditions, "node pressure changed");
            }
            *p = outcome.conditions.clone();
            changed
        });
        let threshold = outcome.to_reclaim.first()?.clone();
        let signal = threshold.signal;
        let resource = signal.resource();
        tracing::info!(resource, "Eviction manager: attempting to reclaim");
        self.ctx.events.node_warning(
            &self.ctx.node_name,
            "EvictionThresholdMet",
            format!("Attempting to reclaim {resource}"),
        );
        if self.reclaim_node_level_resources(signal).await {
            tracing::info!(
                resource,
                "Eviction manager: able to reduce resource pressure without evicting pods."
            );
            return None;
        }
        let ctx = self.ctx.clone();
        let with_disk = signal.resource() != "memory" && signal != Signal::PidAvailable;
        let mut candidates =
            tokio::task::spawn_blocking(move || observe::candidates(&ctx, with_disk))
                .await
                .ok()?;
        rank::rank(&mut candidates, signal);
        tracing::info!(
            signal = signal.as_str(),
            ranking = ?candidates.iter().map(|c| c.pod.metadata.name.clone().unwrap_or_default()).collect::<Vec<_>>(),
            "threshold crossed: evicting a pod"
        );
        for candidate in &candidates {
            let pod = &candidate.pod;
            let key = format!(
                "{}/{}",
                pod.metadata.namespace.as_deref().unwrap_or("default"),
                pod.metadata.name.as_deref().unwrap_or_default()
            );
            if rank::is_critical(pod) {
                tracing::warn!(pod = %key, "cannot evict a critical pod");
                continue;
            }
            let (message, annotations) =
                rank::eviction_message(signal, &threshold, observations.get(&signal), candidate);
            let pod_grace = pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .map(|s| Duration::from_secs(s.max(0) as u64));
            let grace = thresholds::eviction_grace_period(&threshold, &self.config, pod_grace);
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            tracing::info!(pod = %key, ?annotations, "evicting");
            self.ctx.events.warning(&key, None, REASON, message.clone());
            if self.evictor.evict(
                &uid,
                PodEviction {
                    reason: REASON.into(),
                    message,
                    grace,
                },
            ) {
                self.ctx.evictions.add(signal);
                return Some(uid);
            }
        }
        tracing::warn!(
            signal = signal.as_str(),
            "threshold crossed but no pod could be evicted"
        );
        None
    }

    /// kubelet's `reclaimNodeLevelResources`: for disk signals, deletes
    /// every unused image, then looks again; true when no threshold is
    /// crossed any more, so no pod has to go.
    async fn reclaim_node_level_resources(&self, signal: Signal) -> bool {
        let separate_imagefs =
            reclaim::separate_filesystems(&self.sources.root_dir, &self.sources.images_dir);
        if !reclaim::deletes_images(signal, separate_imagefs) {
            return false;
        }
        let gc = self.image_gc.clone();
        let in_use = self.ctx.status.image_ids_in_use();
        match tokio::task::spawn_blocking(move || gc.delete_unused_images(&in_use)).await {
            Ok(Ok(freed)) => tracing::info!(freed, "deleted unused images"),
            Ok(Err(e)) => tracing::warn!("Eviction manager: failed to delete unused images: {e}"),
            Err(e) => tracing::warn!("deleting unused images: {e}"),
        }
        let sources = self.sources.clone();
        let Ok(observations) =
            tokio::task::spawn_blocking(move || observe::observe(&sources)).await
        else {
            return false;
        };
        thresholds::thresholds_met(&self.config.thresholds, &observations, false).is_empty()
    }

    /// Waits until the evicted pod's containers have stopped (or the
    /// timeout), so the next round sees what its eviction freed.
    async fn wait_for_cleanup(&self, uid: &str) {
        let deadline = tokio::time::Instant::now() + POD_CLEANUP_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(POD_CLEANUP_POLL).await;
            let running =
                self.ctx.status.list().into_iter().any(|e| {
                    e.pod.metadata.uid.as_deref() == Some(uid) && !e.containers.is_empty()
                });
            if !running {
                return;
            }
        }
    }
}
