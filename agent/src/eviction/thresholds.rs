//! Which thresholds are crossed and which pressure conditions the node
//! reports (kubelet's `synchronize` bookkeeping), pure: observations and a
//! clock in, conditions and the thresholds to reclaim out.
//!
//! A threshold is met while the signal's available amount is below it;
//! once met it stays met until the amount is back above it plus its
//! minimum reclaim. A soft threshold must be met for its grace period
//! before pods go; a pressure condition stays for the pressure transition
//! period after its threshold was last met, so a node does not flap.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::config::{EvictionConfig, PressureCondition, Signal, Threshold, threshold_amount};

/// One signal's reading: how much is available of how much there is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub available: i64,
    pub capacity: u64,
}

pub type Observations = BTreeMap<Signal, Observation>;

/// kubelet's `thresholdsMet`: the thresholds whose signal is below them
/// (below them plus their minimum reclaim, when `enforce_min_reclaim`).
pub fn thresholds_met(
    thresholds: &[Threshold],
    observations: &Observations,
    enforce_min_reclaim: bool,
) -> Vec<Threshold> {
    thresholds
        .iter()
        .filter(|t| {
            let Some(obs) = observations.get(&t.signal) else {
                return false;
            };
            let mut amount = threshold_amount(&t.value, obs.capacity);
            if enforce_min_reclaim && let Some(reclaim) = &t.min_reclaim {
                amount += threshold_amount(reclaim, obs.capacity);
            }
            amount > obs.available
        })
        .cloned()
        .collect()
}

/// Memory first, as kubelet's `byEvictionPriority` ranks what to reclaim.
fn eviction_priority(t: &Threshold) -> u8 {
    match t.signal.condition() {
        PressureCondition::MemoryPressure => 0,
        _ => 1,
    }
}

/// What one synchronization found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncOutcome {
    /// The pressure conditions the node reports now.
    pub conditions: BTreeSet<PressureCondition>,
    /// Thresholds met for their grace period, memory first: the first one
    /// is what pods are evicted for.
    pub to_reclaim: Vec<Threshold>,
}

/// What the eviction manager remembers between synchronizations.
#[derive(Debug, Default)]
pub struct EvictionState {
    /// Thresholds met at the last synchronization (after their grace period).
    met: Vec<Threshold>,
    /// When each currently met threshold was first seen met.
    first_observed: Vec<(Threshold, Instant)>,
    /// When each pressure condition was last seen.
    condition_last_observed: BTreeMap<PressureCondition, Instant>,
}

impl EvictionState {
    /// One round of kubelet's `synchronize` up to choosing pods.
    pub fn synchronize(
        &mut self,
        config: &EvictionConfig,
        observations: &Observations,
        now: Instant,
    ) -> SyncOutcome {
        let mut met = thresholds_met(&config.thresholds, observations, false);
        // Thresholds met before stay met until their minimum reclaim is free.
        for t in thresholds_met(&self.met, observations, true) {
            if !met.contains(&t) {
                met.push(t);
            }
        }
        let first_observed: Vec<(Threshold, Instant)> = met
            .iter()
            .map(|t| {
                let at = self
                    .first_observed
                    .iter()
                    .find(|(seen, _)| seen == t)
                    .map_or(now, |(_, at)| *at);
                (t.clone(), at)
            })
            .collect();
        for t in &met {
            self.condition_last_observed
                .insert(t.signal.condition(), now);
        }
        let period = config.pressure_transition_period;
        self.condition_last_observed
            .retain(|_, at| now.saturating_duration_since(*at) < period);
        let conditions = self.condition_last_observed.keys().copied().collect();
        let mut to_reclaim: Vec<Threshold> = first_observed
            .iter()
            .filter(|(t, at)| now.saturating_duration_since(*at) >= t.grace_period)
            .map(|(t, _)| t.clone())
            .collect();
        self.first_observed = first_observed;
        self.met = to_reclaim.clone();
        to_reclaim.sort_by_key(eviction_priority);
        SyncOutcome {
            conditions,
            to_reclaim,
        }
    }
}

/// How long a pod evicted for `threshold` gets to stop: one second for a
/// hard threshold, else `--eviction-max-pod-grace-period` or the pod's own
/// grace period when shorter.
pub fn eviction_grace_period(
    threshold: &Threshold,
    config: &EvictionConfig,
    pod_grace: Option<Duration>,
) -> Duration {
    if threshold.is_hard() {
        return Duration::from_secs(1);
    }
    match pod_grace {
        Some(own) => own.min(config.max_pod_grace_period),
        None => config.max_pod_grace_period,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::reserved;
    use crate::eviction::config::{ThresholdStatements, parse_pairs};

    const MI: i64 = 1 << 20;

    fn config(hard: &str, soft: &str, grace: &str, reclaim: &str) -> EvictionConfig {
        let mut c = EvictionConfig::build(
            &ThresholdStatements {
                hard: reserved::parse_eviction_hard("h", hard).unwrap(),
                soft: reserved::parse_eviction_hard("s", soft).unwrap(),
                soft_grace_period: parse_pairs("g", grace).unwrap(),
                minimum_reclaim: parse_pairs("r", reclaim).unwrap(),
            },
            "g",
            "r",
        )
        .unwrap();
        c.pressure_transition_period = Duration::from_secs(30);
        c
    }

    fn memory(available_mi: i64) -> Observations {
        [(
            Signal::MemoryAvailable,
            Observation {
                available: available_mi * MI,
                capacity: 1 << 30,
            },
        )]
        .into()
    }

    #[test]
    fn a_hard_threshold_is_met_below_it_and_sets_its_condition() {
        let c = config("memory.available<100Mi,nodefs.available<10%", "", "", "");
        let mut state = EvictionState::default();
        let t0 = Instant::now();
        let out = state.synchronize(&c, &memory(150), t0);
        assert!(out.conditions.is_empty());
        assert!(out.to_reclaim.is_empty());
        let out = state.synchronize(&c, &memory(80), t0 + Duration::from_secs(10));
        assert_eq!(out.conditions, [PressureCondition::MemoryPressure].into());
        assert_eq!(out.to_reclaim.len(), 1);
        assert_eq!(out.to_reclaim[0].signal, Signal::MemoryAvailable);
        // nodefs is not observed here: never met.
        let mut obs = memory(80);
        obs.insert(
            Signal::NodeFsAvailable,
            Observation {
                available: 5,
                capacity: 100,
            },
        );
        let out = state.synchronize(&c, &obs, t0 + Duration::from_secs(20));
        assert_eq!(
            out.conditions,
            [
                PressureCondition::MemoryPressure,
                PressureCondition::DiskPressure
            ]
            .into()
        );
        assert_eq!(
            out.to_reclaim[0].signal,
            Signal::MemoryAvailable,
            "memory first"
        );
    }

    #[test]
    fn the_condition_outlives_the_threshold_by_the_transition_period() {
        let c = config("memory.available<100Mi", "", "", "");
        let mut state = EvictionState::default();
        let t0 = Instant::now();
        state.synchronize(&c, &memory(80), t0);
        let out = state.synchronize(&c, &memory(500), t0 + Duration::from_secs(10));
        assert_eq!(out.conditions, [PressureCondition::MemoryPressure].into());
        assert!(
            out.to_reclaim.is_empty(),
            "nothing to evict once it is free"
        );
        let out = state.synchronize(&c, &memory(500), t0 + Duration::from_secs(30));
        assert!(out.conditions.is_empty());
    }

    #[test]
    fn a_met_threshold_stays_met_until_its_minimum_reclaim_is_free() {
        let c = config("memory.available<100Mi", "", "", "memory.available=50Mi");
        let mut state = EvictionState::default();
        let t0 = Instant::now();
        assert_eq!(state.synchronize(&c, &memory(90), t0).to_reclaim.len(), 1);
        let mid = state.synchronize(&c, &memory(120), t0 + Duration::from_secs(10));
        assert_eq!(mid.to_reclaim.len(), 1, "120Mi < 100Mi + 50Mi");
        let done = state.synchronize(&c, &memory(160), t0 + Duration::from_secs(20));
        assert!(done.to_reclaim.is_empty());
        // Without a previous crossing, 120Mi is no pressure at all.
        let mut fresh = EvictionState::default();
        assert!(
            fresh
                .synchronize(&c, &memory(120), t0)
                .to_reclaim
                .is_empty()
        );
    }

    #[test]
    fn a_soft_threshold_waits_for_its_grace_period_but_reports_at_once() {
        let c = config("", "memory.available<300Mi", "memory.available=1m", "");
        let mut state = EvictionState::default();
        let t0 = Instant::now();
        let out = state.synchronize(&c, &memory(200), t0);
        assert_eq!(out.conditions, [PressureCondition::MemoryPressure].into());
        assert!(out.to_reclaim.is_empty());
        let out = state.synchronize(&c, &memory(200), t0 + Duration::from_secs(59));
        assert!(out.to_reclaim.is_empty());
        let out = state.synchronize(&c, &memory(200), t0 + Duration::from_secs(60));
        assert_eq!(out.to_reclaim.len(), 1);
        // Relieved in between: the clock starts again.
        let mut state = EvictionState::default();
        state.synchronize(&c, &memory(200), t0);
        state.synchronize(&c, &memory(400), t0 + Duration::from_secs(30));
        let out = state.synchronize(&c, &memory(200), t0 + Duration::from_secs(70));
        assert!(out.to_reclaim.is_empty());
    }

    #[test]
    fn hard_evictions_give_one_second_and_soft_ones_the_shorter_grace() {
        let mut c = config(
            "memory.available<100Mi",
            "memory.available<300Mi",
            "memory.available=1m",
            "",
        );
        c.max_pod_grace_period = Duration::from_secs(20);
        let secs = Duration::from_secs;
        assert_eq!(
            eviction_grace_period(&c.thresholds[0], &c, Some(secs(30))),
            secs(1)
        );
        assert_eq!(
            eviction_grace_period(&c.thresholds[1], &c, Some(secs(30))),
            secs(20)
        );
        assert_eq!(
            eviction_grace_period(&c.thresholds[1], &c, Some(secs(5))),
            secs(5)
        );
    }
}
