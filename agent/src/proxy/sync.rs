//! Partial syncs (kube-proxy's KEP-3453) and their pacing.
//!
//! [`IptablesSyncer`] keeps what it last applied. A partial sync writes only
//! the chains of services whose rules changed, the shared chains
//! (`KUBE-SERVICES`, `KUBE-NODEPORTS`, filter) when their content changed,
//! and declares and deletes (`-X`) chains no service owns any more. A full
//! sync writes everything, installs missing jump rules and removes stale
//! chains found by `iptables-save` (left by an earlier run). One runs at
//! start, after any failure (the state is then unknown), and once an hour.
//!
//! [`run_sync_loop`] batches changes: at most one sync per
//! `--iptables-min-sync-period`, and one at least every
//! `--iptables-sync-period`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::apply::{ApplyError, Iptables};
use super::iptables::{
    NAT_TOP_CHAINS, RenderOptions, Ruleset, WritePlan, is_service_chain, jump_rules, render_restore,
};
use super::model::ProxyModel;

/// kube-proxy's `FullSyncPeriod`: a full resync at least this often.
pub const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);

/// What one sync did.
#[derive(Debug, Clone, Default)]
pub struct SyncOutcome {
    pub full: bool,
    /// Chains written (declared, so flushed and refilled).
    pub written_chains: Vec<String>,
    /// Chains deleted.
    pub deleted_chains: Vec<String>,
    /// The input handed to iptables-restore or nft (empty: nothing to do).
    pub input: String,
    pub elapsed: Duration,
    /// Of `elapsed`, the time spent in iptables-save/-restore or nft.
    pub tool_elapsed: Duration,
}

/// A backend that makes the node's rules match a model.
pub trait RuleSyncer: Send + 'static {
    fn mode(&self) -> &'static str;
    /// Makes the rules match `model`: everything when `full` (or when the
    /// last sync failed or never ran), else only what changed since the last
    /// successful sync.
    fn sync(&mut self, model: &ProxyModel, full: bool) -> Result<SyncOutcome, ApplyError>;
}

/// What the last successful iptables sync left in the tables.
struct Applied {
    ruleset: Ruleset,
    filter: String,
    top_level: String,
}

pub struct IptablesSyncer {
    pub iptables: Iptables,
    pub opts: RenderOptions,
    applied: Option<Applied>,
}

impl IptablesSyncer {
    pub fn new(iptables: Iptables, cluster_cidr: Option<String>) -> IptablesSyncer {
        let opts = RenderOptions {
            cluster_cidr,
            random_fully: iptables.has_random_fully(),
        };
        IptablesSyncer {
            iptables,
            opts,
            applied: None,
        }
    }
}

impl RuleSyncer for IptablesSyncer {
    fn mode(&self) -> &'static str {
        "iptables"
    }

    fn sync(&mut self, model: &ProxyModel, full: bool) -> Result<SyncOutcome, ApplyError> {
        let start = Instant::now();
        let full = full || self.applied.is_none();
        let mut tool_elapsed = Duration::ZERO;
        // Until the restore succeeds the tables' state is unknown: on any
        // error `applied` stays empty, so the next sync is full.
        let (desired, change) = match self.applied.take() {
            Some(applied) if !full => {
                let mut ruleset = applied.ruleset;
                let change = ruleset.update(model);
                (ruleset, Some((change, applied.filter, applied.top_level)))
            }
            _ => (Ruleset::render(model, &self.opts), None),
        };
        let filter = desired.filter_rules();
        let top_level = desired.top_level_rules();
        let plan = match &change {
            Some((change, old_filter, old_top_level)) => WritePlan {
                filter: *old_filter != filter,
                top_level: *old_top_level != top_level,
                base: false,
                services: change.services.iter().collect(),
                stale_chains: change.stale_chains.clone(),
                jumps: vec![],
            },
            None => {
                let t = Instant::now();
                let nat = self.iptables.save("nat")?;
                let filter_table = self.iptables.save("filter")?;
                tool_elapsed += t.elapsed();
                let desired_chains = desired.service_chains();
                let mut plan = WritePlan::full(&desired);
                plan.stale_chains = nat
                    .chains
                    .iter()
                    .filter(|c| is_service_chain(c) && !desired_chains.contains(c.as_str()))
                    .cloned()
                    .collect();
                plan.jumps = jump_rules()
                    .into_iter()
                    .filter(|j| {
                        !j.present_in(if j.table == "nat" {
                            &nat
                        } else {
                            &filter_table
                        })
                    })
                    .collect();
                plan
            }
        };
        let text = render_restore(&desired, &plan);
        let mut written: Vec<String> = Vec::new();
        if plan.top_level {
            written.extend(NAT_TOP_CHAINS[..2].iter().map(|c| c.to_string()));
        }
        if plan.base {
            written.extend(NAT_TOP_CHAINS[2..].iter().map(|c| c.to_string()));
        }
        for k in &plan.services {
            written.extend(desired.services[*k].chains.iter().cloned());
        }
        let deleted = plan.stale_chains.clone();
        if !text.is_empty() {
            let t = Instant::now();
            self.iptables.restore(&text)?;
            tool_elapsed += t.elapsed();
        }
        self.applied = Some(Applied {
            ruleset: desired,
            filter,
            top_level,
        });
        Ok(SyncOutcome {
            full,
            written_chains: written,
            deleted_chains: deleted,
            input: text,
            elapsed: start.elapsed(),
            tool_elapsed,
        })
    }
}

/// `--iptables-min-sync-period` and `--iptables-sync-period`.
#[derive(Debug, Clone, Copy)]
pub struct SyncPeriods {
    pub min_sync_period: Duration,
    pub sync_period: Duration,
}

/// Syncs `syncer` whenever `changes` moves (batched to one sync per minimum
/// period) and at least every sync period, with the model `model` gives
/// (`None` while the initial lists are not in). Returns when `changes`'
/// sender is dropped; hands the syncer back.
pub async fn run_sync_loop<S, M>(
    mut syncer: S,
    mut changes: watch::Receiver<u64>,
    model: M,
    periods: SyncPeriods,
) -> S
where
    S: RuleSyncer,
    M: Fn() -> Option<ProxyModel>,
{
    let mut last_sync: Option<tokio::time::Instant> = None;
    let mut last_full: Option<Instant> = None;
    let mut need_full = true;
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut last_model: Option<ProxyModel> = None;
    loop {
        let periodic = last_sync.map(|t| t + periods.sync_period);
        let wake = match (periodic, retry_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return syncer;
                }
            }
            _ = async {
                match wake {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        // Batch: changes arriving until the minimum period has passed since
        // the last sync are applied together.
        if let Some(t) = last_sync {
            tokio::time::sleep_until(t + periods.min_sync_period).await;
        }
        changes.borrow_and_update();
        let Some(current) = model() else {
            tracing::debug!(
                "service proxy: waiting for the initial lists of Services and EndpointSlices"
            );
            continue;
        };
        let full = need_full
            || last_full.is_none_or(|t| t.elapsed() >= FULL_SYNC_PERIOD.max(periods.sync_period));
        let changed = last_model
            .as_ref()
            .map(|old| super::model::changed_services(old, &current))
            .unwrap_or_default();
        last_sync = Some(tokio::time::Instant::now());
        let (back, result) = {
            let current = current.clone();
            match tokio::task::spawn_blocking(move || {
                let r = syncer.sync(&current, full);
                (syncer, r)
            })
            .await
            {
                Ok(v) => v,
                Err(e) => panic!("service proxy sync panicked: {e}"),
            }
        };
        syncer = back;
        match result {
            Ok(outcome) => {
                need_full = false;
                retry_at = None;
                if outcome.full {
                    last_full = Some(Instant::now());
                }
                log_outcome(syncer.mode(), &current, &changed, &outcome);
                last_model = Some(current);
            }
            Err(e) => {
                need_full = true;
                let delay = periods.min_sync_period.max(Duration::from_secs(1));
                retry_at = Some(tokio::time::Instant::now() + delay);
                tracing::error!(
                    mode = syncer.mode(),
                    full,
                    retry_in = ?delay,
                    "service proxy sync failed: {}",
                    crate::error_chain(&e)
                );
            }
        }
    }
}

fn log_outcome(
    mode: &str,
    model: &ProxyModel,
    changed: &BTreeSet<super::model::ServicePortName>,
    o: &SyncOutcome,
) {
    let changed: Vec<String> = changed.iter().take(5).map(|n| n.to_string()).collect();
    if o.full {
        tracing::info!(
            mode,
            services = model.services.len(),
            endpoints = model.endpoint_count(),
            chains_written = o.written_chains.len(),
            stale_chains_deleted = o.deleted_chains.len(),
            elapsed = ?o.elapsed,
            "service proxy: full sync"
        );
    } else if !o.input.is_empty() {
        tracing::info!(
            mode,
            ?changed,
            chains_written = o.written_chains.len(),
            chains_deleted = o.deleted_chains.len(),
            elapsed = ?o.elapsed,
            "service proxy: partial sync"
        );
    } else {
        tracing::debug!(mode, "service proxy: nothing to sync");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Records each sync's `full` flag; fails the syncs listed in `fail`.
    struct Recorder {
        calls: Arc<Mutex<Vec<bool>>>,
        fail: Vec<usize>,
    }

    impl RuleSyncer for Recorder {
        fn mode(&self) -> &'static str {
            "test"
        }
        fn sync(&mut self, _: &ProxyModel, full: bool) -> Result<SyncOutcome, ApplyError> {
            let mut calls = self.calls.lock().unwrap();
            calls.push(full);
            if self.fail.contains(&(calls.len() - 1)) {
                return Err(ApplyError::UnknownBackend("injected failure".into()));
            }
            Ok(SyncOutcome {
                full,
                input: "x".into(),
                ..Default::default()
            })
        }
    }

    #[tokio::test]
    async fn bursts_are_batched_and_a_failure_makes_the_next_sync_full() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = watch::channel(0u64);
        let periods = SyncPeriods {
            min_sync_period: Duration::from_millis(300),
            sync_period: Duration::from_secs(3600),
        };
        let syncer = Recorder {
            calls: calls.clone(),
            fail: vec![1],
        };
        let handle = tokio::spawn(run_sync_loop(
            syncer,
            rx,
            || Some(ProxyModel::default()),
            periods,
        ));
        tx.send_modify(|g| *g += 1);
        // Wait for the first (full) sync.
        while calls.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A burst of 20 changes within the minimum period: one sync for all.
        for _ in 0..20 {
            tx.send_modify(|g| *g += 1);
        }
        while calls.lock().unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // That sync failed: the retry comes by itself, and is full.
        while calls.lock().unwrap().len() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tx.send_modify(|g| *g += 1);
        while calls.lock().unwrap().len() < 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(tx);
        handle.await.unwrap();
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls, [true, false, true, false], "full flags of the syncs");
    }

    #[tokio::test]
    async fn nothing_is_synced_before_the_initial_lists() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = watch::channel(0u64);
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = ready.clone();
        let periods = SyncPeriods {
            min_sync_period: Duration::from_millis(10),
            sync_period: Duration::from_secs(3600),
        };
        let syncer = Recorder {
            calls: calls.clone(),
            fail: vec![],
        };
        let handle = tokio::spawn(run_sync_loop(
            syncer,
            rx,
            move || {
                r.load(std::sync::atomic::Ordering::SeqCst)
                    .then(ProxyModel::default)
            },
            periods,
        ));
        tx.send_modify(|g| *g += 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(calls.lock().unwrap().is_empty());
        ready.store(true, std::sync::atomic::Ordering::SeqCst);
        tx.send_modify(|g| *g += 1);
        while calls.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(tx);
        handle.await.unwrap();
        assert_eq!(*calls.lock().unwrap(), [true]);
    }
}
