//! The node-wide settings that shape pod and container cgroups beyond their
//! resources: the OOM kill policy (`singleProcessOOMKill`), MemoryQoS, swap,
//! and the `cpu.max.burst` a pod may ask for with an annotation. Resolved once
//! against the cgroup version, then applied to each cgroup's values. Pure.

use k8s_openapi::api::core::v1::{Container, PodSpec};

use kubelab_rules::qos::{ContainerResources, PodResources, QosClass};

use super::memory_qos::{DEFAULT_MEMORY_THROTTLING_FACTOR, container_memory_qos, pod_memory_min};
use super::swap::{SwapBehavior, SwapCandidate, container_swap_max};
use super::{CPU_PERIOD_US, CgroupLimits, CgroupVersion};
use crate::quantity;

pub use kubelab_rules::cpu_burst::{CPU_BURST_ANNOTATION, CpuBurstError, cpu_burst_millis};

/// The kubelet's SystemCriticalPriority: pods at or above it never swap.
const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// The cgroup settings as configured (KubeletConfiguration and feature gates).
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupFeatures {
    /// `singleProcessOOMKill`; `None`: the kubelet's default for the version.
    pub single_process_oom_kill: Option<bool>,
    /// The `MemoryQoS` feature gate.
    pub memory_qos: bool,
    /// `memoryThrottlingFactor`.
    pub memory_throttling_factor: f64,
    /// The `NodeSwap` feature gate.
    pub node_swap: bool,
    /// `memorySwap.swapBehavior`.
    pub swap_behavior: SwapBehavior,
}

impl Default for CgroupFeatures {
    fn default() -> Self {
        CgroupFeatures {
            single_process_oom_kill: None,
            memory_qos: false,
            memory_throttling_factor: DEFAULT_MEMORY_THROTTLING_FACTOR,
            node_swap: true,
            swap_behavior: SwapBehavior::NoSwap,
        }
    }
}

/// What the node has, as far as these settings care.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeMemory {
    pub capacity: i64,
    pub allocatable: i64,
    /// `SwapTotal`.
    pub swap: i64,
    /// The cgroup v2 swap controller is there (`memory.swap.max` exists).
    pub swap_controller: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeConfigError {
    /// The kubelet's own refusal.
    #[error(
        "invalid configuration: singleProcessOOMKill must not be explicitly set to false when using cgroup v1"
    )]
    GroupKillOnV1,
}

/// The settings in effect on this node: [`CgroupFeatures`] resolved against
/// the cgroup version.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeCgroupConfig {
    pub version: CgroupVersion,
    /// The kernel kills only the process it picks (always so on v1).
    pub single_process_oom_kill: bool,
    /// MemoryQoS in force (the gate, on v2).
    pub memory_qos: bool,
    pub memory_throttling_factor: f64,
    pub swap_behavior: SwapBehavior,
    pub memory: NodeMemory,
    pub page_size: i64,
}

impl Default for NodeCgroupConfig {
    /// The kubelet's defaults on a cgroup v2 node with nothing known of its memory.
    fn default() -> Self {
        NodeCgroupConfig {
            version: CgroupVersion::V2,
            single_process_oom_kill: false,
            memory_qos: false,
            memory_throttling_factor: DEFAULT_MEMORY_THROTTLING_FACTOR,
            swap_behavior: SwapBehavior::NoSwap,
            memory: NodeMemory::default(),
            page_size: 4096,
        }
    }
}

impl NodeCgroupConfig {
    /// As the kubelet decides at start: v1 always kills a single process (and
    /// refuses an explicit `false`); v2 kills the whole container unless
    /// `singleProcessOOMKill: true`. Also returns what is configured but has
    /// no effect here, for the log.
    pub fn resolve(
        features: &CgroupFeatures,
        version: CgroupVersion,
        memory: NodeMemory,
        page_size: i64,
    ) -> Result<(Self, Vec<String>), NodeConfigError> {
        let mut ignored = Vec::new();
        let single_process_oom_kill = match (version, features.single_process_oom_kill) {
            (CgroupVersion::V1, Some(false)) => return Err(NodeConfigError::GroupKillOnV1),
            (CgroupVersion::V1, _) => true,
            (CgroupVersion::V2, setting) => setting.unwrap_or(false),
        };
        let memory_qos = features.memory_qos && version == CgroupVersion::V2;
        if features.memory_qos && !memory_qos {
            ignored.push(
                "feature gate MemoryQoS: not available on cgroup v1 (memory.min and memory.high are cgroup v2 files); \
                 containers get memory limits only"
                    .to_string(),
            );
        }
        let mut swap_behavior = features.swap_behavior;
        if swap_behavior == SwapBehavior::LimitedSwap {
            let why = if !features.node_swap {
                Some("the NodeSwap feature gate is off")
            } else if version == CgroupVersion::V1 {
                Some("not available on cgroup v1")
            } else if !memory.swap_controller {
                Some("the cgroup v2 swap controller is missing (no memory.swap.max)")
            } else {
                None
            };
            if let Some(why) = why {
                ignored.push(format!(
                    "memorySwap.swapBehavior LimitedSwap: {why}; containers get NoSwap"
                ));
                swap_behavior = SwapBehavior::NoSwap;
            }
        }
        Ok((
            NodeCgroupConfig {
                version,
                single_process_oom_kill,
                memory_qos,
                memory_throttling_factor: features.memory_throttling_factor,
                swap_behavior,
                memory,
                page_size,
            },
            ignored,
        ))
    }

    /// Adds to a container's limits what this node's settings ask for.
    pub fn apply_to_container(
        &self,
        limits: &mut CgroupLimits,
        pod: &PodSpec,
        critical_pod: bool,
        container: &Container,
        cpu_burst: Option<i64>,
    ) {
        let bytes =
            |n: Option<i128>| n.map_or(0, |n| quantity::nanos_to_ceil(n, quantity::NANOS_PER_UNIT));
        let (request, limit) = ContainerResources::from_container(container, "")
            .map(|r| (bytes(r.requests.memory), bytes(r.limits.memory)))
            .unwrap_or((0, 0));
        limits.oom_group = self.version == CgroupVersion::V2 && !self.single_process_oom_kill;
        if self.memory_qos {
            let qos = container_memory_qos(
                request,
                limit,
                self.memory.allocatable,
                self.memory_throttling_factor,
                self.page_size,
            );
            limits.memory_min_bytes = qos.min;
            limits.memory_high_bytes = qos.high;
        }
        let qos_class = QosClass::from_pod(pod).unwrap_or(QosClass::BestEffort);
        let candidate = SwapCandidate {
            critical: critical_pod || pod.priority.is_some_and(|p| p >= SYSTEM_CRITICAL_PRIORITY),
            burstable: qos_class == QosClass::Burstable,
            memory_request: request,
            memory_limit: limit,
        };
        limits.swap_max_bytes = Some(container_swap_max(
            self.swap_behavior,
            self.version == CgroupVersion::V2 && self.memory.swap_controller,
            &candidate,
            self.memory.capacity,
            self.memory.swap,
        ));
        limits.cpu_burst_us = burst_within_quota(cpu_burst, limits.cpu_quota_us);
    }

    /// Adds to a pod's limits what this node's settings ask for.
    pub fn apply_to_pod(&self, limits: &mut CgroupLimits, pod: &PodSpec, cpu_burst: Option<i64>) {
        if self.memory_qos
            && let Ok(resources) = PodResources::from_spec(pod)
        {
            let requests = resources
                .requests()
                .memory
                .map_or(0, |n| quantity::nanos_to_ceil(n, quantity::NANOS_PER_UNIT));
            limits.memory_min_bytes = pod_memory_min(requests);
        }
        limits.cpu_burst_us = burst_within_quota(cpu_burst, limits.cpu_quota_us);
    }
}

/// `cpu.max.burst` for a cgroup with this quota: the burst over a 100 ms
/// period, at most the quota (the kernel refuses more), none without a quota.
fn burst_within_quota(burst_millis: Option<i64>, quota_us: Option<i64>) -> Option<u64> {
    let burst = burst_millis.filter(|m| *m > 0)?;
    let quota = quota_us.filter(|q| *q > 0)?;
    let us = i128::from(burst) * i128::from(CPU_PERIOD_US) / 1000;
    Some(us.min(i128::from(quota)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MI: i64 = 1 << 20;
    const GI: i64 = 1 << 30;

    fn memory() -> NodeMemory {
        NodeMemory {
            capacity: 8 * GI,
            allocatable: 7 * GI,
            swap: 2 * GI,
            swap_controller: true,
        }
    }

    fn v2(features: CgroupFeatures) -> NodeCgroupConfig {
        NodeCgroupConfig::resolve(&features, CgroupVersion::V2, memory(), 4096)
            .unwrap()
            .0
    }

    fn pod(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    fn burstable_pod() -> PodSpec {
        pod(json!({"containers": [{"name": "a", "resources": {
            "requests": {"memory": "64Mi", "cpu": "100m"},
            "limits": {"memory": "128Mi", "cpu": "200m"}}}]}))
    }

    fn container_limits(
        cfg: &NodeCgroupConfig,
        spec: &PodSpec,
        burst: Option<i64>,
    ) -> CgroupLimits {
        let c = &spec.containers[0];
        let mut l = CgroupLimits::for_container(c).unwrap();
        cfg.apply_to_container(&mut l, spec, false, c, burst);
        l
    }

    #[test]
    fn oom_kill_policy_follows_the_kubelet() {
        // v2: group kill by default, single process when configured.
        let cfg = v2(CgroupFeatures::default());
        assert!(!cfg.single_process_oom_kill);
        assert!(container_limits(&cfg, &burstable_pod(), None).oom_group);
        let cfg = v2(CgroupFeatures {
            single_process_oom_kill: Some(true),
            ..Default::default()
        });
        assert!(!container_limits(&cfg, &burstable_pod(), None).oom_group);

        // v1: always a single process; an explicit false is refused.
        let (cfg, ignored) = NodeCgroupConfig::resolve(
            &CgroupFeatures::default(),
            CgroupVersion::V1,
            memory(),
            4096,
        )
        .unwrap();
        assert!(cfg.single_process_oom_kill && ignored.is_empty());
        assert!(!container_limits(&cfg, &burstable_pod(), None).oom_group);
        let err = NodeCgroupConfig::resolve(
            &CgroupFeatures {
                single_process_oom_kill: Some(false),
                ..Default::default()
            },
            CgroupVersion::V1,
            memory(),
            4096,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration: singleProcessOOMKill must not be explicitly set to false when using cgroup v1"
        );
    }

    #[test]
    fn memory_qos_only_with_the_gate_on_v2() {
        let off = container_limits(&v2(CgroupFeatures::default()), &burstable_pod(), None);
        assert_eq!((off.memory_min_bytes, off.memory_high_bytes), (None, None));

        let gate = CgroupFeatures {
            memory_qos: true,
            ..Default::default()
        };
        let on = container_limits(&v2(gate.clone()), &burstable_pod(), None);
        assert_eq!(on.memory_min_bytes, Some(64 * MI));
        assert_eq!(on.memory_high_bytes, Some(127_504_384));
        let mut pod_limits = CgroupLimits::for_pod(&burstable_pod(), None).unwrap();
        v2(gate.clone()).apply_to_pod(&mut pod_limits, &burstable_pod(), None);
        assert_eq!(pod_limits.memory_min_bytes, Some(64 * MI));

        let (v1, ignored) =
            NodeCgroupConfig::resolve(&gate, CgroupVersion::V1, memory(), 4096).unwrap();
        assert!(!v1.memory_qos);
        assert!(ignored[0].starts_with("feature gate MemoryQoS: not available on cgroup v1"));
        let l = container_limits(&v1, &burstable_pod(), None);
        assert_eq!((l.memory_min_bytes, l.memory_high_bytes), (None, None));
    }

    #[test]
    fn swap_is_off_unless_limited_swap_applies() {
        assert_eq!(
            container_limits(&v2(CgroupFeatures::default()), &burstable_pod(), None).swap_max_bytes,
            Some(0)
        );
        let limited = CgroupFeatures {
            swap_behavior: SwapBehavior::LimitedSwap,
            ..Default::default()
        };
        // 64Mi of 8Gi, 2Gi swap: 16Mi.
        assert_eq!(
            container_limits(&v2(limited.clone()), &burstable_pod(), None).swap_max_bytes,
            Some(16 * MI)
        );
        // A static (critical) pod: none.
        let spec = burstable_pod();
        let mut l = CgroupLimits::for_container(&spec.containers[0]).unwrap();
        v2(limited.clone()).apply_to_container(&mut l, &spec, true, &spec.containers[0], None);
        assert_eq!(l.swap_max_bytes, Some(0));
        // No swap controller, or the gate off: NoSwap, and said so.
        let bare = NodeMemory {
            swap_controller: false,
            ..memory()
        };
        let (cfg, ignored) =
            NodeCgroupConfig::resolve(&limited, CgroupVersion::V2, bare, 4096).unwrap();
        assert_eq!(cfg.swap_behavior, SwapBehavior::NoSwap);
        assert!(
            ignored[0].contains("swap controller is missing"),
            "{ignored:?}"
        );
        let gate_off = CgroupFeatures {
            node_swap: false,
            ..limited
        };
        let (cfg, _) =
            NodeCgroupConfig::resolve(&gate_off, CgroupVersion::V2, memory(), 4096).unwrap();
        assert_eq!(cfg.swap_behavior, SwapBehavior::NoSwap);
    }

    #[test]
    fn cpu_burst_from_the_annotation() {
        let ann = |v: &str| Some([(CPU_BURST_ANNOTATION.to_string(), v.to_string())].into());
        assert_eq!(cpu_burst_millis(None), Ok(None));
        assert_eq!(cpu_burst_millis(ann("50m").as_ref()), Ok(Some(50)));
        assert_eq!(cpu_burst_millis(ann("0.5").as_ref()), Ok(Some(500)));
        let err = cpu_burst_millis(ann("lots").as_ref())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(r#"annotation kubelab.io/cpu-burst: "lots" "#),
            "{err}"
        );
        assert_eq!(
            cpu_burst_millis(ann("-1").as_ref()).unwrap_err().reason,
            "must be greater than or equal to 0"
        );

        let cfg = v2(CgroupFeatures::default());
        // 50m over 100 ms is 5000 µs; within the 200m limit's 20000 µs quota.
        assert_eq!(
            container_limits(&cfg, &burstable_pod(), Some(50)).cpu_burst_us,
            Some(5000)
        );
        // Capped at the quota; nothing without a cpu limit.
        assert_eq!(
            container_limits(&cfg, &burstable_pod(), Some(1000)).cpu_burst_us,
            Some(20_000)
        );
        let no_limit = pod(json!({"containers": [{"name": "a"}]}));
        assert_eq!(
            container_limits(&cfg, &no_limit, Some(50)).cpu_burst_us,
            None
        );
    }
}
