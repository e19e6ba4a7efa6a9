//! Node allocatable, as the kubelet computes it (`cm/node_container_manager`):
//! `allocatable = capacity - kube-reserved - system-reserved - hard eviction`,
//! per resource, never below zero.
//!
//! Reservations come from `--kube-reserved` / `--system-reserved`
//! (`cpu=100m,memory=256Mi,ephemeral-storage=1Gi,pid=100`) or the
//! KubeletConfiguration's `kubeReserved` / `systemReserved` maps; hard
//! eviction thresholds from `--eviction-hard` (`memory.available<100Mi,
//! nodefs.available<10%`) or `evictionHard`. Of the thresholds,
//! `memory.available` reserves memory and `nodefs.available` ephemeral
//! storage. A `pid` reservation is accepted (kubelet's syntax) but the node
//! reports no pid resource, so it changes no allocatable figure.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity;

/// Resources the kubelet lets one reserve.
pub const RESERVABLE: [&str; 4] = ["cpu", "memory", "ephemeral-storage", "pid"];

/// Eviction signals the kubelet knows.
pub const SIGNALS: [&str; 7] = [
    "memory.available",
    "allocatableMemory.available",
    "nodefs.available",
    "nodefs.inodesFree",
    "imagefs.available",
    "imagefs.inodesFree",
    "pid.available",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: invalid entry {entry:?}: {reason}")]
pub struct ReservedError {
    /// The flag (`--system-reserved`) or config field (`systemReserved`).
    pub source_name: String,
    pub entry: String,
    pub reason: String,
}

/// One resource list (`kubeReserved` or `systemReserved`), validated.
pub type Reservation = BTreeMap<String, Quantity>;

/// `key=value,key=value` as kubelet's `ConfigurationMap` flag reads it.
pub fn split_map(source_name: &str, text: &str) -> Result<Vec<(String, String)>, ReservedError> {
    text.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            entry
                .split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| ReservedError {
                    source_name: source_name.to_owned(),
                    entry: entry.to_owned(),
                    reason: "expected key=value".into(),
                })
        })
        .collect()
}

/// A reservation from `key → quantity` pairs (kubelet's `ParseResourceList`).
pub fn reservation_from_pairs(
    source_name: &str,
    pairs: &[(String, String)],
) -> Result<Reservation, ReservedError> {
    let mut out = Reservation::new();
    for (key, value) in pairs {
        let err = |reason: String| ReservedError {
            source_name: source_name.to_owned(),
            entry: format!("{key}={value}"),
            reason,
        };
        if !RESERVABLE.contains(&key.as_str()) {
            return Err(err(format!(
                "cannot reserve {key:?} resource (expected one of {})",
                RESERVABLE.join(", ")
            )));
        }
        let q = Quantity(value.clone());
        let amount = quantity::nano_value(&q).map_err(|e| err(e.to_string()))?;
        if amount < 0 {
            return Err(err(format!(
                "resource quantity for {key:?} cannot be negative: {value}"
            )));
        }
        out.insert(key.clone(), q);
    }
    Ok(out)
}

/// `--kube-reserved` / `--system-reserved`.
pub fn parse_reservation(source_name: &str, text: &str) -> Result<Reservation, ReservedError> {
    reservation_from_pairs(source_name, &split_map(source_name, text)?)
}

/// What a threshold is measured in.
#[derive(Debug, Clone, PartialEq)]
pub enum ThresholdValue {
    Quantity(Quantity),
    /// Thousandths of a percent of capacity (`10%` is 10 000), exact.
    Percent(u32),
}

/// One hard eviction threshold, `<signal><<value>`.
#[derive(Debug, Clone, PartialEq)]
pub struct EvictionThreshold {
    pub signal: String,
    pub value: ThresholdValue,
}

/// kubelet's `evictionHard` defaults.
pub fn default_eviction_hard() -> Vec<EvictionThreshold> {
    let q = |s: &str| ThresholdValue::Quantity(Quantity(s.into()));
    vec![
        EvictionThreshold {
            signal: "memory.available".into(),
            value: q("100Mi"),
        },
        EvictionThreshold {
            signal: "nodefs.available".into(),
            value: ThresholdValue::Percent(10_000),
        },
        EvictionThreshold {
            signal: "nodefs.inodesFree".into(),
            value: ThresholdValue::Percent(5_000),
        },
        EvictionThreshold {
            signal: "imagefs.available".into(),
            value: ThresholdValue::Percent(15_000),
        },
    ]
}

fn parse_percent(s: &str) -> Option<u32> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty() || frac.len() > 3 {
        return None;
    }
    let int: u32 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac: u32 = if frac.is_empty() {
        0
    } else {
        frac.parse::<u32>().ok()? * 10u32.pow(3 - frac.len() as u32)
    };
    let v = int.checked_mul(1000)?.checked_add(frac)?;
    (v <= 100_000).then_some(v)
}

/// Thresholds from `signal → value` pairs (kubelet's `ParseThresholdConfig`).
pub fn thresholds_from_pairs(
    source_name: &str,
    pairs: &[(String, String)],
) -> Result<Vec<EvictionThreshold>, ReservedError> {
    pairs
        .iter()
        .map(|(signal, value)| {
            let err = |reason: String| ReservedError {
                source_name: source_name.to_owned(),
                entry: format!("{signal}<{value}"),
                reason,
            };
            if !SIGNALS.contains(&signal.as_str()) {
                return Err(err(format!("unsupported eviction signal {signal:?}")));
            }
            let value = if let Some(p) = value.strip_suffix('%') {
                ThresholdValue::Percent(parse_percent(p).ok_or_else(|| {
                    err(format!(
                        "invalid percentage {value:?}: expected 0% to 100%, at most 3 decimals"
                    ))
                })?)
            } else {
                let q = Quantity(value.clone());
                let amount = quantity::nano_value(&q).map_err(|e| err(e.to_string()))?;
                if amount < 0 {
                    return Err(err(format!(
                        "eviction threshold {signal} cannot be negative: {value}"
                    )));
                }
                ThresholdValue::Quantity(q)
            };
            Ok(EvictionThreshold {
                signal: signal.clone(),
                value,
            })
        })
        .collect()
}

/// `--eviction-hard memory.available<100Mi,nodefs.available<10%`.
pub fn parse_eviction_hard(
    source_name: &str,
    text: &str,
) -> Result<Vec<EvictionThreshold>, ReservedError> {
    let pairs = text
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            entry
                .split_once('<')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| ReservedError {
                    source_name: source_name.to_owned(),
                    entry: entry.to_owned(),
                    reason: "expected <signal><<quantity or percentage>, e.g. memory.available<100Mi (only the \"<\" operator is supported)".into(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    thresholds_from_pairs(source_name, &pairs)
}

/// Everything subtracted from capacity.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeReservations {
    pub kube_reserved: Reservation,
    pub system_reserved: Reservation,
    pub eviction_hard: Vec<EvictionThreshold>,
}

impl Default for NodeReservations {
    fn default() -> Self {
        Self {
            kube_reserved: Reservation::new(),
            system_reserved: Reservation::new(),
            eviction_hard: default_eviction_hard(),
        }
    }
}

/// Which resource a threshold's signal holds back.
fn threshold_resource(signal: &str) -> Option<&'static str> {
    match signal {
        "memory.available" => Some("memory"),
        "nodefs.available" => Some("ephemeral-storage"),
        _ => None,
    }
}

fn nanos(q: &Quantity) -> i128 {
    quantity::nano_value(q).unwrap_or(0)
}

/// A figure in the form kubelet reports it: CPU in cores or millicores,
/// byte amounts in `Ki` when whole, else plain.
fn render(resource: &str, nanos: i128) -> Quantity {
    let nanos = nanos.max(0);
    if resource == "cpu" {
        let millis = quantity::nanos_to_ceil(nanos, 1_000_000);
        return Quantity(if millis % 1000 == 0 {
            (millis / 1000).to_string()
        } else {
            format!("{millis}m")
        });
    }
    let units = quantity::nanos_to_ceil(nanos, quantity::NANOS_PER_UNIT);
    Quantity(if units != 0 && units % 1024 == 0 && resource != "pods" {
        format!("{}Ki", units / 1024)
    } else {
        units.to_string()
    })
}

impl NodeReservations {
    /// How much of `resource` (of `capacity`) is held back in all.
    pub fn reserved_nanos(&self, resource: &str, capacity: &Quantity) -> i128 {
        let mut total = 0i128;
        for list in [&self.kube_reserved, &self.system_reserved] {
            if let Some(q) = list.get(resource) {
                total += nanos(q);
            }
        }
        for t in &self.eviction_hard {
            if threshold_resource(&t.signal) != Some(resource) {
                continue;
            }
            total += match &t.value {
                ThresholdValue::Quantity(q) => nanos(q),
                // Of whole units, as the kubelet's `int64(capacity.Value() * percentage)`.
                ThresholdValue::Percent(p) => {
                    let units =
                        quantity::nanos_to_ceil(nanos(capacity), quantity::NANOS_PER_UNIT) as i128;
                    units * *p as i128 / 100_000 * quantity::NANOS_PER_UNIT
                }
            };
        }
        total
    }

    /// Allocatable from capacity: every capacity resource, less what is held
    /// back for it, never below zero. Unreserved resources keep their figure.
    pub fn allocatable(&self, capacity: &BTreeMap<String, Quantity>) -> BTreeMap<String, Quantity> {
        capacity
            .iter()
            .map(|(resource, cap)| {
                let reserved = self.reserved_nanos(resource, cap);
                let q = if reserved == 0 {
                    cap.clone()
                } else {
                    render(resource, nanos(cap) - reserved)
                };
                (resource.clone(), q)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capacity() -> BTreeMap<String, Quantity> {
        [
            ("cpu", "2"),
            ("memory", "4194304Ki"),
            ("ephemeral-storage", "20971520Ki"),
            ("pods", "110"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Quantity(v.into())))
        .collect()
    }

    #[test]
    fn allocatable_is_capacity_less_kube_system_and_hard_eviction() {
        let r = NodeReservations {
            kube_reserved: parse_reservation("--kube-reserved", "cpu=100m,memory=256Mi").unwrap(),
            system_reserved: parse_reservation(
                "--system-reserved",
                "cpu=200m,memory=512Mi,ephemeral-storage=1Gi,pid=100",
            )
            .unwrap(),
            eviction_hard: parse_eviction_hard(
                "--eviction-hard",
                "memory.available<100Mi,nodefs.available<10%",
            )
            .unwrap(),
        };
        let a = r.allocatable(&capacity());
        assert_eq!(a["cpu"].0, "1700m");
        // 4Gi - 256Mi - 512Mi - 100Mi = 3228Mi
        assert_eq!(a["memory"].0, format!("{}Ki", 3228 * 1024));
        // 20Gi - 1Gi - 10% of 20Gi (2147483648 bytes) = 18253611008 bytes
        assert_eq!(a["ephemeral-storage"].0, "17825792Ki");
        assert_eq!(a["pods"].0, "110");
    }

    #[test]
    fn defaults_hold_back_100mi_of_memory_and_a_tenth_of_the_disk() {
        let a = NodeReservations::default().allocatable(&capacity());
        assert_eq!(a["cpu"].0, "2");
        assert_eq!(a["memory"].0, format!("{}Ki", 4 * 1024 * 1024 - 100 * 1024));
        let disk = 20i64 * 1024 * 1024 * 1024;
        assert_eq!(
            a["ephemeral-storage"].0,
            format!("{}Ki", (disk - disk / 10) / 1024)
        );
        // An odd disk size leaves a plain byte count, as real nodes show.
        let mut cap = capacity();
        cap.insert("ephemeral-storage".into(), Quantity("1000001Ki".into()));
        let a = NodeReservations::default().allocatable(&cap);
        let bytes = 1000001i64 * 1024;
        assert_eq!(a["ephemeral-storage"].0, (bytes - bytes / 10).to_string());
    }

    #[test]
    fn more_reserved_than_there_is_leaves_zero() {
        let r = NodeReservations {
            system_reserved: parse_reservation("--system-reserved", "cpu=3,memory=8Gi").unwrap(),
            ..Default::default()
        };
        let a = r.allocatable(&capacity());
        assert_eq!(a["cpu"].0, "0");
        assert_eq!(a["memory"].0, "0");
    }

    #[test]
    fn bad_entries_name_the_flag_and_the_entry() {
        let e = parse_reservation("--system-reserved", "cpu=100m,memory=lots").unwrap_err();
        assert_eq!(e.source_name, "--system-reserved");
        assert_eq!(e.entry, "memory=lots");
        assert!(
            e.to_string()
                .starts_with("--system-reserved: invalid entry \"memory=lots\": "),
            "{e}"
        );
        let e = parse_reservation("--kube-reserved", "gpu=1").unwrap_err();
        assert!(e.reason.contains("cannot reserve \"gpu\""), "{e}");
        let e = parse_reservation("--kube-reserved", "cpu").unwrap_err();
        assert_eq!(e.entry, "cpu");
        let e = parse_reservation("--kube-reserved", "memory=-1Gi").unwrap_err();
        assert!(e.reason.contains("cannot be negative"), "{e}");
        let e = parse_eviction_hard("--eviction-hard", "memory.available>100Mi").unwrap_err();
        assert_eq!(e.entry, "memory.available>100Mi");
        let e = parse_eviction_hard("--eviction-hard", "memory.free<100Mi").unwrap_err();
        assert!(e.reason.contains("unsupported eviction signal"), "{e}");
        let e = parse_eviction_hard("--eviction-hard", "nodefs.available<120%").unwrap_err();
        assert!(e.reason.contains("invalid percentage"), "{e}");
        assert_eq!(
            parse_eviction_hard("x", "nodefs.available<7.5%").unwrap()[0].value,
            ThresholdValue::Percent(7_500)
        );
        assert!(parse_reservation("x", "").unwrap().is_empty());
    }
}
