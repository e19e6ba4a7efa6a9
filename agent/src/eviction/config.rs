//! The eviction manager's thresholds (kubelet's `ParseThresholdConfig`):
//! hard ones from `--eviction-hard`, soft ones from `--eviction-soft` with
//! their `--eviction-soft-grace-period`, each with its
//! `--eviction-minimum-reclaim`. The `<signal><<value>` syntax itself is
//! read by [`crate::config::reserved`], which also takes the hard
//! thresholds out of allocatable.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::config::reserved::{self, EvictionThreshold, ThresholdValue};
use crate::quantity;

/// kubelet's `evictionPressureTransitionPeriod` default.
pub const DEFAULT_PRESSURE_TRANSITION_PERIOD: Duration = Duration::from_secs(300);

/// What the eviction manager watches (kubelet's `evictionapi.Signal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    MemoryAvailable,
    AllocatableMemoryAvailable,
    NodeFsAvailable,
    NodeFsInodesFree,
    ImageFsAvailable,
    ImageFsInodesFree,
    PidAvailable,
}

/// The node conditions a signal's threshold sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PressureCondition {
    MemoryPressure,
    DiskPressure,
    PIDPressure,
}

impl PressureCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            PressureCondition::MemoryPressure => "MemoryPressure",
            PressureCondition::DiskPressure => "DiskPressure",
            PressureCondition::PIDPressure => "PIDPressure",
        }
    }
}

impl Signal {
    pub const ALL: [Signal; 7] = [
        Signal::MemoryAvailable,
        Signal::AllocatableMemoryAvailable,
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
        Signal::PidAvailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::AllocatableMemoryAvailable => "allocatableMemory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::ImageFsInodesFree => "imagefs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    pub fn parse(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// kubelet's `signalToNodeCondition`.
    pub fn condition(self) -> PressureCondition {
        match self {
            Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable => {
                PressureCondition::MemoryPressure
            }
            Signal::PidAvailable => PressureCondition::PIDPressure,
            _ => PressureCondition::DiskPressure,
        }
    }

    /// kubelet's `signalToResource`: what is starved, as messages name it.
    pub fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable => "memory",
            Signal::NodeFsAvailable | Signal::ImageFsAvailable => "ephemeral-storage",
            Signal::NodeFsInodesFree | Signal::ImageFsInodesFree => "inodes",
            Signal::PidAvailable => "pids",
        }
    }

    /// Whether amounts of this signal are bytes (printed `100Mi`) rather
    /// than counts (printed `5k`).
    pub fn is_bytes(self) -> bool {
        matches!(self.resource(), "memory" | "ephemeral-storage")
    }
}

/// One threshold: the signal, the least amount the node may have, how long
/// it must be crossed before pods go (zero: a hard threshold), and how much
/// beyond the threshold must be free again before the pressure ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub value: ThresholdValue,
    pub grace_period: Duration,
    pub min_reclaim: Option<ThresholdValue>,
}

impl Threshold {
    /// kubelet's `isHardEvictionThreshold`.
    pub fn is_hard(&self) -> bool {
        self.grace_period.is_zero()
    }
}

/// kubelet's `GetThresholdQuantity`: the amount a value stands for on a
/// node with `capacity` (a percentage of it, or the quantity itself).
pub fn threshold_amount(value: &ThresholdValue, capacity: u64) -> i64 {
    match value {
        ThresholdValue::Quantity(q) => {
            quantity::nanos_to_ceil(quantity::nano_value(q).unwrap_or(0), 1_000_000_000)
        }
        ThresholdValue::Percent(p) => ((capacity as u128 * *p as u128) / 100_000) as i64,
    }
}

/// The threshold's value as the eviction message prints it.
pub fn format_threshold(value: &ThresholdValue, signal: Signal, capacity: u64) -> String {
    match value {
        ThresholdValue::Quantity(Quantity(text)) => text.clone(),
        ThresholdValue::Percent(_) => format_amount(signal, threshold_amount(value, capacity)),
    }
}

/// An amount of a signal's resource as apimachinery prints it.
pub fn format_amount(signal: Signal, amount: i64) -> String {
    if signal.is_bytes() {
        quantity::format_binary_si(amount)
    } else {
        quantity::format_decimal_si(amount)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvictionConfigError {
    #[error(transparent)]
    Threshold(#[from] reserved::ReservedError),
    #[error("{source_name}: unsupported eviction signal {signal}")]
    UnsupportedSignal { source_name: String, signal: String },
    #[error("grace period must be specified for the soft eviction threshold {0}")]
    MissingGracePeriod(String),
    #[error(
        "{source_name}: invalid eviction grace period specified: {value}, must be a positive duration ({reason})"
    )]
    GracePeriod {
        source_name: String,
        value: String,
        reason: String,
    },
    #[error("{source_name}: invalid minimum reclaim {value:?} for {signal}: {reason}")]
    MinimumReclaim {
        source_name: String,
        signal: String,
        value: String,
        reason: String,
    },
}

/// What the eviction manager is told.
#[derive(Debug, Clone, PartialEq)]
pub struct EvictionConfig {
    pub thresholds: Vec<Threshold>,
    /// `--eviction-pressure-transition-period`: how long a pressure
    /// condition stays after its threshold was last crossed.
    pub pressure_transition_period: Duration,
    /// `--eviction-max-pod-grace-period`: the longest grace period a pod
    /// evicted for a soft threshold gets (0: its own).
    pub max_pod_grace_period: Duration,
}

impl Default for EvictionConfig {
    fn default() -> Self {
        EvictionConfig::from_hard(&reserved::default_eviction_hard())
    }
}

fn signal_of(source_name: &str, name: &str) -> Result<Signal, EvictionConfigError> {
    Signal::parse(name).ok_or_else(|| EvictionConfigError::UnsupportedSignal {
        source_name: source_name.to_owned(),
        signal: name.to_owned(),
    })
}

/// The raw statements, as flags or the config file give them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThresholdStatements {
    pub hard: Vec<EvictionThreshold>,
    pub soft: Vec<EvictionThreshold>,
    /// (signal, Go duration) pairs.
    pub soft_grace_period: Vec<(String, String)>,
    /// (signal, quantity or percentage) pairs.
    pub minimum_reclaim: Vec<(String, String)>,
}

impl EvictionConfig {
    /// Hard thresholds only, with the default transition period.
    pub fn from_hard(hard: &[EvictionThreshold]) -> Self {
        EvictionConfig::build(
            &ThresholdStatements {
                hard: hard.to_vec(),
                ..Default::default()
            },
            "--eviction-soft-grace-period",
            "--eviction-minimum-reclaim",
        )
        .expect("validated thresholds")
    }

    /// kubelet's `ParseThresholdConfig`: every soft threshold needs a grace
    /// period; a minimum reclaim applies to the hard and soft thresholds of
    /// its signal. Values of 0% and 100% are ignored, as the kubelet does.
    pub fn build(
        statements: &ThresholdStatements,
        grace_source: &str,
        reclaim_source: &str,
    ) -> Result<Self, EvictionConfigError> {
        let mut grace = Vec::new();
        for (name, text) in &statements.soft_grace_period {
            let signal = signal_of(grace_source, name)?;
            let period = kubelab_rules::duration::parse_go_duration(text).map_err(|e| {
                EvictionConfigError::GracePeriod {
                    source_name: grace_source.to_owned(),
                    value: text.clone(),
                    reason: e.to_string(),
                }
            })?;
            grace.push((signal, period));
        }
        let mut reclaim = Vec::new();
        for (name, text) in &statements.minimum_reclaim {
            let signal = signal_of(reclaim_source, name)?;
            let err = |reason: String| EvictionConfigError::MinimumReclaim {
                source_name: reclaim_source.to_owned(),
                signal: name.clone(),
                value: text.clone(),
                reason,
            };
            // The same value syntax as a threshold's.
            let parsed = reserved::thresholds_from_pairs(
                reclaim_source,
                &[(signal.as_str().to_owned(), text.clone())],
            )
            .map_err(|e| err(e.reason))?;
            reclaim.push((signal, parsed[0].value.clone()));
        }
        let mut thresholds = Vec::new();
        for (statements, soft) in [(&statements.hard, false), (&statements.soft, true)] {
            for t in statements.iter() {
                let signal = signal_of(
                    if soft {
                        "--eviction-soft"
                    } else {
                        "--eviction-hard"
                    },
                    &t.signal,
                )?;
                if matches!(
                    t.value,
                    ThresholdValue::Percent(0) | ThresholdValue::Percent(100_000)
                ) {
                    continue;
                }
                let grace_period = if soft {
                    grace
                        .iter()
                        .find(|(s, _)| *s == signal)
                        .map(|(_, p)| *p)
                        .ok_or_else(|| {
                            EvictionConfigError::MissingGracePeriod(signal.as_str().to_owned())
                        })?
                } else {
                    Duration::ZERO
                };
                thresholds.push(Threshold {
                    signal,
                    value: t.value.clone(),
                    grace_period,
                    min_reclaim: reclaim
                        .iter()
                        .find(|(s, _)| *s == signal)
                        .map(|(_, v)| v.clone()),
                });
            }
        }
        Ok(EvictionConfig {
            thresholds,
            pressure_transition_period: DEFAULT_PRESSURE_TRANSITION_PERIOD,
            max_pod_grace_period: Duration::ZERO,
        })
    }
}

/// `memory.available=1m30s,nodefs.available=2m` (kubelet's map flags).
pub fn parse_pairs(
    source_name: &str,
    text: &str,
) -> Result<Vec<(String, String)>, EvictionConfigError> {
    Ok(reserved::split_map(source_name, text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statements(hard: &str, soft: &str, grace: &str, reclaim: &str) -> ThresholdStatements {
        ThresholdStatements {
            hard: reserved::parse_eviction_hard("--eviction-hard", hard).unwrap(),
            soft: reserved::parse_eviction_hard("--eviction-soft", soft).unwrap(),
            soft_grace_period: parse_pairs("g", grace).unwrap(),
            minimum_reclaim: parse_pairs("r", reclaim).unwrap(),
        }
    }

    #[test]
    fn soft_thresholds_take_their_grace_period_and_reclaim_applies_to_both() {
        let c = EvictionConfig::build(
            &statements(
                "memory.available<100Mi",
                "memory.available<300Mi,nodefs.available<15%",
                "memory.available=1m30s,nodefs.available=2m",
                "memory.available=50Mi",
            ),
            "g",
            "r",
        )
        .unwrap();
        assert_eq!(c.thresholds.len(), 3);
        assert!(c.thresholds[0].is_hard());
        assert_eq!(
            c.thresholds[0].min_reclaim,
            Some(ThresholdValue::Quantity(Quantity("50Mi".into())))
        );
        assert_eq!(c.thresholds[1].grace_period, Duration::from_secs(90));
        assert_eq!(c.thresholds[1].min_reclaim, c.thresholds[0].min_reclaim);
        assert_eq!(c.thresholds[2].signal, Signal::NodeFsAvailable);
        assert_eq!(c.thresholds[2].grace_period, Duration::from_secs(120));
        assert_eq!(c.thresholds[2].min_reclaim, None);
    }

    #[test]
    fn a_soft_threshold_without_grace_period_is_refused_in_kubelets_words() {
        let e = EvictionConfig::build(&statements("", "memory.available<300Mi", "", ""), "g", "r")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "grace period must be specified for the soft eviction threshold memory.available"
        );
        let e =
            EvictionConfig::build(&statements("", "", "memory.free=1m", ""), "g", "r").unwrap_err();
        assert_eq!(e.to_string(), "g: unsupported eviction signal memory.free");
        let e = EvictionConfig::build(&statements("", "", "memory.available=soon", ""), "g", "r")
            .unwrap_err();
        assert!(
            e.to_string().contains("invalid eviction grace period"),
            "{e}"
        );
    }

    #[test]
    fn zero_and_full_percentages_are_ignored_and_defaults_are_kubelets() {
        let c = EvictionConfig::build(
            &statements("nodefs.available<0%,imagefs.available<100%", "", "", ""),
            "g",
            "r",
        )
        .unwrap();
        assert!(c.thresholds.is_empty());
        let d = EvictionConfig::default();
        let names: Vec<&str> = d.thresholds.iter().map(|t| t.signal.as_str()).collect();
        assert_eq!(
            names,
            [
                "memory.available",
                "nodefs.available",
                "nodefs.inodesFree",
                "imagefs.available"
            ]
        );
        assert_eq!(d.pressure_transition_period, Duration::from_secs(300));
    }

    #[test]
    fn amounts_of_percentages_are_of_capacity() {
        assert_eq!(
            threshold_amount(&ThresholdValue::Percent(10_000), 1000),
            100
        );
        assert_eq!(
            threshold_amount(&ThresholdValue::Quantity(Quantity("100Mi".into())), 0),
            100 << 20
        );
        assert_eq!(
            format_threshold(
                &ThresholdValue::Percent(10_000),
                Signal::NodeFsAvailable,
                20 << 30
            ),
            "2Gi"
        );
        assert_eq!(format_amount(Signal::NodeFsInodesFree, 5000), "5k");
    }
}
