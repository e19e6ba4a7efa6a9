//! Cgroup values from a pod's resources, computed as the kubelet does
//! (`ResourceConfigForPod`, and the container values of `kuberuntime`'s
//! `calculateLinuxResources`), over the QoS class and resource sums of
//! [`kubelab_rules::qos`], which the apiserver's `status.qosClass` uses too. Pure.
//!
//! Not modelled: pod-level `spec.resources` (the `PodLevelResources` feature gate is
//! off by default in 1.33), hugepages, and the `CPUCFSQuotaPeriod` gate (the period
//! is always 100 ms).

use k8s_openapi::api::core::v1::{Container, PodSpec};

use kubelab_rules::qos::{ContainerResources, PodResources};
pub use kubelab_rules::qos::{QosClass, ResourceError};

use crate::quantity;

/// CFS period, in µs (kubelet's `QuotaPeriod`).
pub const CPU_PERIOD_US: u64 = 100_000;
/// The kernel's minimum CFS quota, in µs (kubelet's `MinQuotaPeriod`).
pub const MIN_QUOTA_US: i64 = 1_000;
/// The kernel's bounds for `cpu.shares` (kubelet's `MinShares`/`MaxShares`).
pub const MIN_SHARES: u64 = 2;
pub const MAX_SHARES: u64 = 262_144;
const SHARES_PER_CPU: i64 = 1024;
const MILLI_PER_CPU: i64 = 1000;

const NANOS_PER_MILLI: i128 = 1_000_000;
const NANOS_PER_UNIT: i128 = quantity::NANOS_PER_UNIT;

/// The QoS cgroup under `kubepods`; Guaranteed pods live directly in `kubepods`.
pub fn qos_cgroup_dir(qos: QosClass) -> Option<&'static str> {
    match qos {
        QosClass::Guaranteed => None,
        QosClass::Burstable => Some("burstable"),
        QosClass::BestEffort => Some("besteffort"),
    }
}

/// Values for one cgroup. `None` means "no limit" (or "leave the kernel default"
/// for shares).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLimits {
    /// v1 `cpu.shares`; v2 `cpu.weight` is derived with [`shares_to_weight`].
    pub cpu_shares: Option<u64>,
    /// CFS quota per period, µs (`cpu.cfs_quota_us` / first field of `cpu.max`).
    pub cpu_quota_us: Option<i64>,
    pub cpu_period_us: u64,
    pub memory_limit_bytes: Option<i64>,
    pub pids_max: Option<i64>,
    /// cgroup v2 `memory.oom.group`: the OOM killer takes every process of the
    /// cgroup, not only the one it picked (v1 has no such setting).
    pub oom_group: bool,
    /// cgroup v2 `memory.min` (MemoryQoS).
    pub memory_min_bytes: Option<i64>,
    /// cgroup v2 `memory.high` (MemoryQoS).
    pub memory_high_bytes: Option<i64>,
    /// cgroup v2 `memory.swap.max`; `None` leaves the kernel's `max` (a pod
    /// cgroup: its containers decide).
    pub swap_max_bytes: Option<i64>,
    /// `cpu.max.burst` (v2) or `cpu.cfs_burst_us` (v1), µs.
    pub cpu_burst_us: Option<u64>,
}

impl Default for CgroupLimits {
    fn default() -> Self {
        Self::unlimited()
    }
}

impl CgroupLimits {
    /// No limits at all (QoS parents, tests).
    pub fn unlimited() -> Self {
        CgroupLimits {
            cpu_shares: None,
            cpu_quota_us: None,
            cpu_period_us: CPU_PERIOD_US,
            memory_limit_bytes: None,
            pids_max: None,
            oom_group: false,
            memory_min_bytes: None,
            memory_high_bytes: None,
            swap_max_bytes: Some(0),
            cpu_burst_us: None,
        }
    }

    /// A container's own cgroup, as kuberuntime computes it: shares from the cpu
    /// request (defaulting to the limit; 2 without either), quota from the cpu
    /// limit, memory limit from the memory limit.
    pub fn for_container(container: &Container) -> Result<Self, ResourceError> {
        Self::for_container_at(container, &format!("container {:?}", container.name))
    }

    /// Like [`for_container`](Self::for_container), naming fields under `field`
    /// (e.g. `spec.containers[0]`) in errors.
    pub fn for_container_at(container: &Container, field: &str) -> Result<Self, ResourceError> {
        let r = ContainerResources::from_container(container, field)?;
        let cpu_request = r
            .requests
            .cpu
            .map_or(0, |n| quantity::nanos_to_ceil(n, NANOS_PER_MILLI));
        let cpu_limit = r
            .limits
            .cpu
            .map_or(0, |n| quantity::nanos_to_ceil(n, NANOS_PER_MILLI));
        let memory_limit = r
            .limits
            .memory
            .map_or(0, |n| quantity::nanos_to_ceil(n, NANOS_PER_UNIT));
        Ok(CgroupLimits {
            cpu_shares: Some(milli_cpu_to_shares(cpu_request)),
            cpu_quota_us: milli_cpu_to_quota(cpu_limit),
            cpu_period_us: CPU_PERIOD_US,
            memory_limit_bytes: (memory_limit != 0).then_some(memory_limit),
            ..CgroupLimits::unlimited()
        })
    }

    /// The pod cgroup, as `ResourceConfigForPod` computes it: shares from the summed
    /// requests (effective init-container rule, plus overhead); the summed cpu and
    /// memory limits only if every container declares that limit (Guaranteed pods
    /// always do); BestEffort pods get the minimum shares and nothing else.
    pub fn for_pod(spec: &PodSpec, pids_max: Option<i64>) -> Result<Self, ResourceError> {
        let pod = PodResources::from_spec(spec)?;
        let qos = pod.qos();
        let requests = pod.requests();
        let (limits, declared) = pod.limits();

        let cpu_requests = requests
            .cpu
            .map_or(0, |n| quantity::nanos_to_ceil(n, NANOS_PER_MILLI));
        let cpu_limits = limits
            .cpu
            .map_or(0, |n| quantity::nanos_to_ceil(n, NANOS_PER_MILLI));
        let memory_limits = limits
            .memory
            .map_or(0, |n| quantity::nanos_to_ceil(n, NANOS_PER_UNIT));
        let shares = milli_cpu_to_shares(cpu_requests);
        let quota = milli_cpu_to_quota(cpu_limits);
        // A memory limit of 0 means "unset" to the kernel-facing layer (libcontainer).
        let memory = (memory_limits != 0).then_some(memory_limits);

        let mut out = CgroupLimits {
            pids_max,
            swap_max_bytes: None,
            ..CgroupLimits::unlimited()
        };
        match qos {
            QosClass::Guaranteed => {
                out.cpu_shares = Some(shares);
                out.cpu_quota_us = quota;
                out.memory_limit_bytes = memory;
            }
            QosClass::Burstable => {
                out.cpu_shares = Some(shares);
                if declared.cpu {
                    out.cpu_quota_us = quota;
                }
                if declared.memory {
                    out.memory_limit_bytes = memory;
                }
            }
            QosClass::BestEffort => out.cpu_shares = Some(MIN_SHARES),
        }
        Ok(out)
    }

    /// cgroup v2 `cpu.weight` for these shares.
    pub fn cpu_weight(&self) -> Option<u64> {
        self.cpu_shares.map(shares_to_weight)
    }
}

/// kubelet's `MilliCPUToShares`: `milli × 1024 / 1000`, clamped to [2, 262144]; no
/// request gives 2 (the kernel's minimum, not its default of 1024).
pub fn milli_cpu_to_shares(milli_cpu: i64) -> u64 {
    if milli_cpu <= 0 {
        return MIN_SHARES;
    }
    let shares = i128::from(milli_cpu) * i128::from(SHARES_PER_CPU) / i128::from(MILLI_PER_CPU);
    shares.clamp(MIN_SHARES as i128, MAX_SHARES as i128) as u64
}

/// kubelet's `MilliCPUToQuota` with a 100 ms period: `milli × 100` µs, at least
/// 1000 µs; no limit (0) gives `None`.
pub fn milli_cpu_to_quota(milli_cpu: i64) -> Option<i64> {
    if milli_cpu <= 0 {
        return None;
    }
    let quota = i128::from(milli_cpu) * i128::from(CPU_PERIOD_US) / i128::from(MILLI_PER_CPU);
    Some(i64::try_from(quota).unwrap_or(i64::MAX).max(MIN_QUOTA_US))
}

/// The OCI runtimes' conversion of `cpu.shares` to cgroup v2 `cpu.weight`:
/// `1 + ((shares − 2) × 9999) / 262142`, mapping [2, 262144] onto [1, 10000].
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(MIN_SHARES, MAX_SHARES);
    1 + ((shares - 2) * 9999) / 262_142
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).expect("valid PodSpec")
    }

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).expect("valid Container")
    }

    fn res(requests: serde_json::Value, limits: serde_json::Value) -> serde_json::Value {
        json!({ "requests": requests, "limits": limits })
    }

    #[test]
    fn kubelet_cpu_maths() {
        assert_eq!(milli_cpu_to_shares(0), 2);
        assert_eq!(milli_cpu_to_shares(1), 2);
        assert_eq!(milli_cpu_to_shares(2), 2);
        assert_eq!(milli_cpu_to_shares(100), 102);
        assert_eq!(milli_cpu_to_shares(200), 204);
        assert_eq!(milli_cpu_to_shares(250), 256);
        assert_eq!(milli_cpu_to_shares(1000), 1024);
        assert_eq!(milli_cpu_to_shares(1500), 1536);
        assert_eq!(milli_cpu_to_shares(256_000), 262_144);
        assert_eq!(milli_cpu_to_shares(1_000_000), 262_144);

        assert_eq!(milli_cpu_to_quota(0), None);
        assert_eq!(milli_cpu_to_quota(1), Some(1000));
        assert_eq!(milli_cpu_to_quota(5), Some(1000));
        assert_eq!(milli_cpu_to_quota(10), Some(1000));
        assert_eq!(milli_cpu_to_quota(15), Some(1500));
        assert_eq!(milli_cpu_to_quota(200), Some(20_000));
        assert_eq!(milli_cpu_to_quota(2500), Some(250_000));

        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(102), 4);
        assert_eq!(shares_to_weight(204), 8);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn container_limits() {
        let c = container(
            json!({"name": "a", "resources": {"limits": {"cpu": "200m", "memory": "32Mi"}}}),
        );
        assert_eq!(
            CgroupLimits::for_container(&c).unwrap(),
            CgroupLimits {
                cpu_shares: Some(204),
                cpu_quota_us: Some(20_000),
                cpu_period_us: 100_000,
                memory_limit_bytes: Some(33_554_432),
                ..CgroupLimits::unlimited()
            }
        );

        let c = container(
            json!({"name": "a", "resources": res(json!({"cpu": "250m"}), json!({"memory": "100m"}))}),
        );
        let l = CgroupLimits::for_container(&c).unwrap();
        assert_eq!(l.cpu_shares, Some(256));
        assert_eq!(l.cpu_quota_us, None);
        assert_eq!(l.memory_limit_bytes, Some(1)); // 0.1 byte rounds up

        let c = container(json!({"name": "a"}));
        assert_eq!(
            CgroupLimits::for_container(&c).unwrap(),
            CgroupLimits {
                cpu_shares: Some(2),
                ..CgroupLimits::unlimited()
            }
        );

        let c = container(json!({"name": "a", "resources": {"limits": {"cpu": "0.0001"}}}));
        let l = CgroupLimits::for_container(&c).unwrap();
        assert_eq!((l.cpu_shares, l.cpu_quota_us), (Some(2), Some(1000)));
    }

    #[test]
    fn pod_limits_guaranteed_sum() {
        let spec = pod(json!({"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "200m", "memory": "32Mi"}}},
            {"name": "b", "resources": {"limits": {"cpu": "1.3", "memory": "1G"}}},
        ]}));
        assert_eq!(
            CgroupLimits::for_pod(&spec, Some(1024)).unwrap(),
            CgroupLimits {
                cpu_shares: Some(1536), // 1500m
                cpu_quota_us: Some(150_000),
                cpu_period_us: 100_000,
                memory_limit_bytes: Some(1_033_554_432),
                pids_max: Some(1024),
                swap_max_bytes: None,
                ..CgroupLimits::unlimited()
            }
        );
    }

    #[test]
    fn pod_limits_burstable_only_when_every_container_declares() {
        // Both declare cpu limits, only one declares memory: quota yes, memory no.
        let spec = pod(json!({"containers": [
            {"name": "a", "resources": res(json!({"cpu": "100m"}), json!({"cpu": "500m", "memory": "64Mi"}))},
            {"name": "b", "resources": res(json!({"cpu": "150m", "memory": "10Mi"}), json!({"cpu": "250m"}))},
        ]}));
        assert_eq!(
            CgroupLimits::for_pod(&spec, None).unwrap(),
            CgroupLimits {
                cpu_shares: Some(256), // 250m requested
                cpu_quota_us: Some(75_000),
                cpu_period_us: 100_000,
                swap_max_bytes: None,
                ..CgroupLimits::unlimited()
            }
        );

        // A container without any limits: no quota, no memory limit.
        let spec = pod(json!({"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
            {"name": "b", "resources": {"requests": {"cpu": "1"}}},
        ]}));
        assert_eq!(
            CgroupLimits::for_pod(&spec, None).unwrap(),
            CgroupLimits {
                cpu_shares: Some(2048),
                swap_max_bytes: None,
                ..CgroupLimits::unlimited()
            }
        );
    }

    #[test]
    fn pod_limits_best_effort() {
        let spec = pod(json!({"containers": [{"name": "a"}]}));
        assert_eq!(
            CgroupLimits::for_pod(&spec, Some(100)).unwrap(),
            CgroupLimits {
                cpu_shares: Some(2),
                pids_max: Some(100),
                swap_max_bytes: None,
                ..CgroupLimits::unlimited()
            }
        );
    }

    #[test]
    fn pod_limits_init_containers_take_the_max() {
        // App containers sum to 300m / 96Mi; one init container needs 1 cpu / 64Mi.
        let spec = pod(json!({
            "initContainers": [
                {"name": "i1", "resources": {"limits": {"cpu": "1", "memory": "64Mi"}}},
                {"name": "i2", "resources": {"limits": {"cpu": "100m", "memory": "16Mi"}}},
            ],
            "containers": [
                {"name": "a", "resources": {"limits": {"cpu": "100m", "memory": "32Mi"}}},
                {"name": "b", "resources": {"limits": {"cpu": "200m", "memory": "64Mi"}}},
            ],
        }));
        let l = CgroupLimits::for_pod(&spec, None).unwrap();
        assert_eq!(l.cpu_shares, Some(1024));
        assert_eq!(l.cpu_quota_us, Some(100_000));
        assert_eq!(l.memory_limit_bytes, Some(100_663_296)); // 96Mi
    }

    #[test]
    fn pod_limits_with_sidecars_and_overhead() {
        // Sidecar s (restartPolicy Always) runs alongside the app containers and
        // alongside init container i that starts after it.
        let spec = pod(json!({
            "initContainers": [
                {"name": "s", "restartPolicy": "Always", "resources": {"limits": {"cpu": "100m", "memory": "16Mi"}}},
                {"name": "i", "resources": {"limits": {"cpu": "1", "memory": "8Mi"}}},
            ],
            "containers": [
                {"name": "a", "resources": {"limits": {"cpu": "200m", "memory": "32Mi"}}},
            ],
            "overhead": {"cpu": "10m", "memory": "1Mi"},
        }));
        let l = CgroupLimits::for_pod(&spec, None).unwrap();
        // requests: max(app 200m + sidecar 100m, init 1 + sidecar 100m) + 10m overhead
        assert_eq!(l.cpu_shares, Some(1136)); // 1110m
        assert_eq!(l.cpu_quota_us, Some(111_000));
        // memory: max(32Mi + 16Mi, 8Mi + 16Mi) + 1Mi = 49Mi
        assert_eq!(l.memory_limit_bytes, Some(51_380_224));
    }

    #[test]
    fn pod_sums_are_exact_before_rounding() {
        // 0.5 byte + 0.5 byte is 1 byte (Go adds quantities exactly), not 2.
        let spec = pod(json!({"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "0.0005", "memory": "500m"}}},
            {"name": "b", "resources": {"limits": {"cpu": "0.0005", "memory": "500m"}}},
        ]}));
        let l = CgroupLimits::for_pod(&spec, None).unwrap();
        assert_eq!(l.memory_limit_bytes, Some(1));
        assert_eq!(l.cpu_quota_us, Some(1000)); // 1m → 100 µs → minimum 1000
        assert_eq!(l.cpu_shares, Some(2));
    }

    #[test]
    fn errors_name_the_field() {
        let spec =
            pod(json!({"containers": [{"name": "a", "resources": {"limits": {"cpu": "abc"}}}]}));
        let err = CgroupLimits::for_pod(&spec, None).unwrap_err();
        assert_eq!(err.field, "spec.containers[0].resources.limits.cpu");
        assert!(
            err.to_string().starts_with(
                r#"spec.containers[0].resources.limits.cpu: "abc" is not a valid quantity"#
            ),
            "{err}"
        );

        let spec = pod(json!({
            "initContainers": [{"name": "i", "resources": {"requests": {"memory": "5 Mi"}}}],
            "containers": [{"name": "a"}],
        }));
        let err = QosClass::from_pod(&spec).unwrap_err();
        assert_eq!(
            err.field,
            "spec.initContainers[0].resources.requests.memory"
        );

        let spec =
            pod(json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "-1"}}}]}));
        let err = QosClass::from_pod(&spec).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"spec.containers[0].resources.requests.cpu: "-1" is negative: a resource amount must be greater than or equal to 0"#
        );

        let c = container(json!({"name": "web", "resources": {"limits": {"memory": "Mi"}}}));
        let err = CgroupLimits::for_container(&c).unwrap_err();
        assert_eq!(err.field, r#"container "web".resources.limits.memory"#);
    }
}
