//! MemoryQoS (the kubelet's `MemoryQoS` feature gate, KEP-2570): on cgroup v2
//! a container's memory request becomes `memory.min` (the kernel never
//! reclaims below it) and, between request and limit, `memory.high` makes the
//! kernel throttle and reclaim before `memory.max` OOM-kills. The maths of
//! kuberuntime's `generateLinuxContainerResources` and the pod cgroup's
//! `ResourceConfigForPod`. Pure.

/// KubeletConfiguration `memoryThrottlingFactor` default.
pub const DEFAULT_MEMORY_THROTTLING_FACTOR: f64 = 0.9;

/// What MemoryQoS writes for one container cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryQos {
    /// `memory.min`: the memory request (none without one).
    pub min: Option<i64>,
    /// `memory.high`: the throttling point (none for Guaranteed containers,
    /// whose request is their limit).
    pub high: Option<i64>,
}

/// The container's `memory.min` and `memory.high`, as the kubelet computes
/// them (Kubernetes 1.27+):
///
/// `memory.high = floor((request + factor × (limit − request)) / page) × page`,
/// with the node's allocatable memory standing in for a missing limit; left
/// unset when request equals limit, or when it would not lie above the request.
pub fn container_memory_qos(
    request: i64,
    limit: i64,
    node_allocatable: i64,
    throttling_factor: f64,
    page_size: i64,
) -> MemoryQos {
    let min = (request != 0).then_some(request);
    if request == limit {
        return MemoryQos { min, high: None };
    }
    let ceiling = if limit != 0 { limit } else { node_allocatable };
    if ceiling <= 0 || page_size <= 0 {
        return MemoryQos { min, high: None };
    }
    let raw = request as f64 + (ceiling as f64 - request as f64) * throttling_factor;
    let high = (raw / page_size as f64).floor() as i64 * page_size;
    MemoryQos {
        min,
        high: (high != 0 && high > request).then_some(high),
    }
}

/// The pod cgroup's `memory.min`: the pod's summed memory requests (the
/// kubelet leaves it unset at zero).
pub fn pod_memory_min(pod_memory_requests: i64) -> Option<i64> {
    (pod_memory_requests > 0).then_some(pod_memory_requests)
}

/// Whether `memoryThrottlingFactor` is acceptable; the kubelet's validation
/// message otherwise.
pub fn validate_throttling_factor(factor: f64) -> Result<(), String> {
    if factor > 0.0 && factor <= 1.0 {
        Ok(())
    } else {
        Err(format!(
            "memoryThrottlingFactor {factor} must be greater than 0 and less than or equal to 1.0"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: i64 = 1 << 20;
    const PAGE: i64 = 4096;

    #[test]
    fn burstable_high_lies_between_request_and_limit() {
        // 64Mi request, 128Mi limit, factor 0.9: 64 + 0.9 × 64 = 121.6Mi,
        // floored to a page.
        let q = container_memory_qos(64 * MI, 128 * MI, 8192 * MI, 0.9, PAGE);
        assert_eq!(q.min, Some(64 * MI));
        assert_eq!(q.high, Some(127_504_384));
        assert_eq!(q.high.unwrap() % PAGE, 0);
        // Factor 0.8 (the default before 1.27's change of formula, still settable).
        let q = container_memory_qos(0, 100 * MI, 0, 0.8, PAGE);
        assert_eq!(q.min, None);
        assert_eq!(q.high, Some(83_886_080)); // 80Mi exactly
    }

    #[test]
    fn guaranteed_gets_min_only() {
        let q = container_memory_qos(32 * MI, 32 * MI, 8192 * MI, 0.9, PAGE);
        assert_eq!(
            q,
            MemoryQos {
                min: Some(32 * MI),
                high: None
            }
        );
    }

    #[test]
    fn no_limit_throttles_against_node_allocatable() {
        // Request 1Gi, no limit, 4Gi allocatable: 1 + 0.9 × 3 = 3.7Gi.
        let q = container_memory_qos(1024 * MI, 0, 4096 * MI, 0.9, PAGE);
        assert_eq!(q.min, Some(1024 * MI));
        assert_eq!(q.high, Some(3_972_841_472));
        // Allocatable unknown: nothing to throttle against.
        assert_eq!(container_memory_qos(MI, 0, 0, 0.9, PAGE).high, None);
        // BestEffort (neither request nor limit): request == limit, nothing.
        assert_eq!(
            container_memory_qos(0, 0, 4096 * MI, 0.9, PAGE),
            MemoryQos::default()
        );
    }

    #[test]
    fn high_not_above_request_is_left_unset() {
        // A limit a few bytes over the request floors to a page at or below it.
        let q = container_memory_qos(10 * PAGE, 10 * PAGE + 100, 0, 0.9, PAGE);
        assert_eq!(q.high, None);
        assert_eq!(pod_memory_min(0), None);
        assert_eq!(pod_memory_min(96 * MI), Some(96 * MI));
    }

    #[test]
    fn throttling_factor_bounds() {
        assert!(validate_throttling_factor(0.9).is_ok());
        assert!(validate_throttling_factor(1.0).is_ok());
        assert_eq!(
            validate_throttling_factor(0.0).unwrap_err(),
            "memoryThrottlingFactor 0 must be greater than 0 and less than or equal to 1.0"
        );
        assert!(validate_throttling_factor(1.5).is_err());
    }
}
