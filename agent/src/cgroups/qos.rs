//! QoS class and cgroup values from a pod's resources, computed as the kubelet does
//! (`GetPodQOS`, `PodRequests`/`PodLimits`, `ResourceConfigForPod`, and the
//! container values of `kuberuntime`'s `calculateLinuxResources`). Pure.
//!
//! Amounts are summed in nano-units (i128), the precision apimachinery keeps, so a
//! sum is exactly Go's `Quantity.Add`; it is rounded up only at the end, like
//! `MilliValue()`/`Value()` on the summed quantity.
//!
//! Not modelled: pod-level `spec.resources` (the `PodLevelResources` feature gate is
//! off by default in 1.33), hugepages, and the `CPUCFSQuotaPeriod` gate (the period
//! is always 100 ms).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity::{self, QuantityError};

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

/// A pod's quality-of-service class (`status.qosClass`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// A resource quantity that could not be used; `field` is where it is in the pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {source}")]
pub struct ResourceError {
    pub field: String,
    pub source: QuantityError,
}

impl QosClass {
    /// Kubernetes' `GetPodQOS`: over init and app containers, considering only
    /// positive cpu and memory amounts, with requests defaulted to limits. Guaranteed
    /// iff every container has cpu and memory limits and the summed requests equal
    /// the summed limits; BestEffort iff there are no requests and no limits at all.
    pub fn from_pod(spec: &PodSpec) -> Result<Self, ResourceError> {
        Ok(PodResources::from_spec(spec)?.qos())
    }

    /// The name Kubernetes uses (`Guaranteed`, `Burstable`, `BestEffort`).
    pub fn as_str(&self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }

    /// The QoS cgroup under `kubepods`; Guaranteed pods live directly in `kubepods`.
    pub fn cgroup_dir(&self) -> Option<&'static str> {
        match self {
            QosClass::Guaranteed => None,
            QosClass::Burstable => Some("burstable"),
            QosClass::BestEffort => Some("besteffort"),
        }
    }
}

impl std::fmt::Display for QosClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
            pids_max: None,
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

/// The cpu and memory entries of a ResourceList, in nano-units; `None` = absent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Amounts {
    cpu: Option<i128>,
    memory: Option<i128>,
}

impl Amounts {
    fn parse(
        list: Option<&BTreeMap<String, Quantity>>,
        field: &str,
    ) -> Result<Self, ResourceError> {
        let get = |name: &str| -> Result<Option<i128>, ResourceError> {
            let Some(q) = list.and_then(|l| l.get(name)) else {
                return Ok(None);
            };
            let err = |source| ResourceError {
                field: format!("{field}.{name}"),
                source,
            };
            let nanos = quantity::nano_value(q).map_err(err)?;
            if nanos < 0 {
                return Err(err(QuantityError::Negative { value: q.0.clone() }));
            }
            Ok(Some(nanos))
        };
        Ok(Amounts {
            cpu: get("cpu")?,
            memory: get("memory")?,
        })
    }

    /// `addResourceList`: sums what both have, copies what only `other` has.
    fn add(&mut self, other: &Amounts) {
        fn add(a: &mut Option<i128>, b: Option<i128>) {
            if let Some(b) = b {
                *a = Some(a.unwrap_or(0) + b);
            }
        }
        add(&mut self.cpu, other.cpu);
        add(&mut self.memory, other.memory);
    }

    /// `maxResourceList`: per resource, the larger (present beats absent).
    fn max(&mut self, other: &Amounts) {
        fn max(a: &mut Option<i128>, b: Option<i128>) {
            if let Some(b) = b {
                *a = Some(a.map_or(b, |a| a.max(b)));
            }
        }
        max(&mut self.cpu, other.cpu);
        max(&mut self.memory, other.memory);
    }

    /// Only the strictly positive entries (what `GetPodQOS` looks at).
    fn positive(&self) -> Amounts {
        Amounts {
            cpu: self.cpu.filter(|&v| v > 0),
            memory: self.memory.filter(|&v| v > 0),
        }
    }

    fn len(&self) -> usize {
        usize::from(self.cpu.is_some()) + usize::from(self.memory.is_some())
    }
}

/// One container's requests (defaulted to limits, as the API server's defaulting
/// does) and limits.
#[derive(Debug, Clone, Copy)]
struct ContainerResources {
    requests: Amounts,
    limits: Amounts,
}

impl ContainerResources {
    fn from_container(c: &Container, field: &str) -> Result<Self, ResourceError> {
        let res = c.resources.as_ref();
        let limits = Amounts::parse(
            res.and_then(|r| r.limits.as_ref()),
            &format!("{field}.resources.limits"),
        )?;
        let mut requests = Amounts::parse(
            res.and_then(|r| r.requests.as_ref()),
            &format!("{field}.resources.requests"),
        )?;
        requests.cpu = requests.cpu.or(limits.cpu);
        requests.memory = requests.memory.or(limits.memory);
        Ok(ContainerResources { requests, limits })
    }
}

/// Which limits every container declared (kubelet's `cpuLimitsDeclared` /
/// `memoryLimitsDeclared`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Declared {
    cpu: bool,
    memory: bool,
}

/// A pod's containers' resources, parsed once.
struct PodResources {
    app: Vec<ContainerResources>,
    /// Init containers in order, with whether each is a restartable (sidecar) one.
    init: Vec<(ContainerResources, bool)>,
    overhead: Amounts,
}

impl PodResources {
    fn from_spec(spec: &PodSpec) -> Result<Self, ResourceError> {
        let app = spec
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| ContainerResources::from_container(c, &format!("spec.containers[{i}]")))
            .collect::<Result<_, _>>()?;
        let init = spec
            .init_containers
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, c)| {
                let r =
                    ContainerResources::from_container(c, &format!("spec.initContainers[{i}]"))?;
                Ok((r, c.restart_policy.as_deref() == Some("Always")))
            })
            .collect::<Result<_, _>>()?;
        let overhead = Amounts::parse(spec.overhead.as_ref(), "spec.overhead")?;
        Ok(PodResources {
            app,
            init,
            overhead,
        })
    }

    fn all(&self) -> impl Iterator<Item = &ContainerResources> {
        self.app.iter().chain(self.init.iter().map(|(c, _)| c))
    }

    fn qos(&self) -> QosClass {
        let mut requests = Amounts::default();
        let mut limits = Amounts::default();
        let mut guaranteed = true;
        for c in self.all() {
            requests.add(&c.requests.positive());
            let found = c.limits.positive();
            limits.add(&found);
            if found.cpu.is_none() || found.memory.is_none() {
                guaranteed = false;
            }
        }
        if requests.len() == 0 && limits.len() == 0 {
            return QosClass::BestEffort;
        }
        let matches = |req: Option<i128>, lim: Option<i128>| req.is_none() || req == lim;
        if guaranteed
            && matches(requests.cpu, limits.cpu)
            && matches(requests.memory, limits.memory)
            && requests.len() == limits.len()
        {
            QosClass::Guaranteed
        } else {
            QosClass::Burstable
        }
    }

    /// `PodRequests`: the larger of the app containers' sum and any init container's
    /// need (its own requests plus the restartable init containers started before
    /// it), with restartable init containers also counted with the app containers;
    /// plus the pod overhead.
    fn requests(&self) -> Amounts {
        let mut requests = self.aggregate(|c| c.requests, |_| {});
        requests.add(&self.overhead);
        requests
    }

    /// `PodLimits`, and whether every container (init containers as seen with the
    /// sidecars before them) declared a non-zero cpu and memory limit.
    fn limits(&self) -> (Amounts, Declared) {
        let mut declared = Declared {
            cpu: true,
            memory: true,
        };
        let mut limits = self.aggregate(
            |c| c.limits,
            |l| {
                declared.cpu &= l.cpu.is_some_and(|v| v != 0);
                declared.memory &= l.memory.is_some_and(|v| v != 0);
            },
        );
        // Overhead is added only to limits that are set and non-zero.
        for (lim, over) in [
            (&mut limits.cpu, self.overhead.cpu),
            (&mut limits.memory, self.overhead.memory),
        ] {
            if let (Some(l), Some(o)) = (lim.as_mut(), over)
                && *l != 0
            {
                *l += o;
            }
        }
        (limits, declared)
    }

    fn aggregate(
        &self,
        pick: impl Fn(&ContainerResources) -> Amounts,
        mut each: impl FnMut(&Amounts),
    ) -> Amounts {
        let mut total = Amounts::default();
        for c in &self.app {
            let a = pick(c);
            each(&a);
            total.add(&a);
        }
        let mut sidecars = Amounts::default();
        let mut init_max = Amounts::default();
        for (c, restartable) in &self.init {
            let a = pick(c);
            let effective = if *restartable {
                total.add(&a);
                sidecars.add(&a);
                sidecars
            } else {
                let mut t = Amounts::default();
                t.add(&a);
                t.add(&sidecars);
                t
            };
            each(&effective);
            init_max.max(&effective);
        }
        total.max(&init_max);
        total
    }
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
    fn qos_classes() {
        let guaranteed = pod(json!({"containers": [
            {"name": "a", "resources": res(json!({"cpu": "500m", "memory": "64Mi"}), json!({"cpu": "0.5", "memory": "67108864"}))},
        ]}));
        assert_eq!(
            QosClass::from_pod(&guaranteed).unwrap(),
            QosClass::Guaranteed
        );

        // Only limits given: requests default to them.
        let limits_only = pod(json!({"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
            {"name": "b", "resources": {"limits": {"cpu": "200m", "memory": "128Mi"}}},
        ]}));
        assert_eq!(
            QosClass::from_pod(&limits_only).unwrap(),
            QosClass::Guaranteed
        );

        let best_effort =
            pod(json!({"containers": [{"name": "a"}, {"name": "b", "resources": {}}]}));
        assert_eq!(
            QosClass::from_pod(&best_effort).unwrap(),
            QosClass::BestEffort
        );

        // Zero amounts don't count.
        let zeros = pod(
            json!({"containers": [{"name": "a", "resources": res(json!({"cpu": "0"}), json!({"memory": "0"}))}]}),
        );
        assert_eq!(QosClass::from_pod(&zeros).unwrap(), QosClass::BestEffort);

        let request_below_limit = pod(json!({"containers": [
            {"name": "a", "resources": res(json!({"cpu": "100m", "memory": "64Mi"}), json!({"cpu": "200m", "memory": "64Mi"}))},
        ]}));
        assert_eq!(
            QosClass::from_pod(&request_below_limit).unwrap(),
            QosClass::Burstable
        );

        let no_memory_limit =
            pod(json!({"containers": [{"name": "a", "resources": {"limits": {"cpu": "1"}}}]}));
        assert_eq!(
            QosClass::from_pod(&no_memory_limit).unwrap(),
            QosClass::Burstable
        );

        // One container without limits makes the pod Burstable.
        let mixed = pod(json!({"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
            {"name": "b"},
        ]}));
        assert_eq!(QosClass::from_pod(&mixed).unwrap(), QosClass::Burstable);

        // Init containers count too.
        let init_unlimited = pod(json!({
            "initContainers": [{"name": "init"}],
            "containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}],
        }));
        assert_eq!(
            QosClass::from_pod(&init_unlimited).unwrap(),
            QosClass::Burstable
        );
        let init_requests_only = pod(json!({
            "initContainers": [{"name": "init", "resources": {"requests": {"cpu": "1m"}}}],
            "containers": [{"name": "a"}],
        }));
        assert_eq!(
            QosClass::from_pod(&init_requests_only).unwrap(),
            QosClass::Burstable
        );

        // An explicit zero request next to limits: the summed requests lack memory.
        let zero_request = pod(json!({"containers": [
            {"name": "a", "resources": res(json!({"memory": "0"}), json!({"cpu": "1", "memory": "1Gi"}))},
        ]}));
        assert_eq!(
            QosClass::from_pod(&zero_request).unwrap(),
            QosClass::Burstable
        );

        // Non-cgroup resources are ignored.
        let gpu = pod(
            json!({"containers": [{"name": "a", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}),
        );
        assert_eq!(QosClass::from_pod(&gpu).unwrap(), QosClass::BestEffort);

        assert_eq!(QosClass::Guaranteed.as_str(), "Guaranteed");
        assert_eq!(QosClass::Burstable.as_str(), "Burstable");
        assert_eq!(QosClass::BestEffort.to_string(), "BestEffort");
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
                pids_max: None,
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
                memory_limit_bytes: None,
                pids_max: None,
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
