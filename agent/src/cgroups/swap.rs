//! Node swap (the kubelet's `NodeSwap`, KEP-2400): which containers may swap
//! and how much. `memorySwap.swapBehavior: NoSwap` (the default) writes
//! `memory.swap.max = 0` on every container cgroup; `LimitedSwap` lets
//! Burstable containers swap in proportion to their memory request. Pure.

use std::fmt;

/// KubeletConfiguration `memorySwap.swapBehavior`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SwapBehavior {
    #[default]
    NoSwap,
    LimitedSwap,
}

impl SwapBehavior {
    pub fn as_str(self) -> &'static str {
        match self {
            SwapBehavior::NoSwap => "NoSwap",
            SwapBehavior::LimitedSwap => "LimitedSwap",
        }
    }
}

impl fmt::Display for SwapBehavior {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SwapBehavior {
    type Err = String;
    /// The kubelet's values; `""` is `NoSwap`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" | "NoSwap" => Ok(SwapBehavior::NoSwap),
            "LimitedSwap" => Ok(SwapBehavior::LimitedSwap),
            other => Err(format!(
                "memorySwap.swapBehavior {other:?} must be one of: \"\", \"LimitedSwap\" or \"NoSwap\""
            )),
        }
    }
}

/// What the kubelet knows of a container when it decides on swap.
#[derive(Debug, Clone, Copy)]
pub struct SwapCandidate {
    /// `system-node-critical`-class priority, or a static or mirror pod.
    pub critical: bool,
    pub burstable: bool,
    pub memory_request: i64,
    /// 0: no limit.
    pub memory_limit: i64,
}

/// kuberuntime's `GetContainerSwapBehavior`: `LimitedSwap` only for a
/// Burstable pod's container that is not critical, asks for memory and whose
/// request is not its limit; only on cgroup v2 with the swap controller;
/// everything else `NoSwap`.
pub fn container_swap_behavior(
    configured: SwapBehavior,
    cgroup_v2_with_swap: bool,
    c: &SwapCandidate,
) -> SwapBehavior {
    if configured != SwapBehavior::LimitedSwap || !cgroup_v2_with_swap || c.critical {
        return SwapBehavior::NoSwap;
    }
    let no_memory = c.memory_request == 0 && c.memory_limit == 0;
    if !c.burstable || no_memory || c.memory_request == c.memory_limit {
        return SwapBehavior::NoSwap;
    }
    SwapBehavior::LimitedSwap
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwapError {
    #[error("total node memory is 0")]
    NoNodeMemory,
    #[error("container request {request} is larger than total node memory {node_total}")]
    RequestOverNodeMemory { request: i64, node_total: i64 },
}

/// The `LimitedSwap` amount, `(request / node memory) × node swap`
/// (kuberuntime's `calcSwapForBurstablePods`), truncated to whole bytes.
pub fn limited_swap_bytes(
    memory_request: i64,
    node_total_memory: i64,
    node_swap: i64,
) -> Result<i64, SwapError> {
    if node_total_memory <= 0 {
        return Err(SwapError::NoNodeMemory);
    }
    if memory_request > node_total_memory {
        return Err(SwapError::RequestOverNodeMemory {
            request: memory_request,
            node_total: node_total_memory,
        });
    }
    let share = memory_request as f64 / node_total_memory as f64;
    Ok((share * node_swap as f64) as i64)
}

/// `memory.swap.max` for a container: 0 unless it may swap, and 0 when the
/// amount can't be computed (the kubelet then disallows swap too).
pub fn container_swap_max(
    configured: SwapBehavior,
    cgroup_v2_with_swap: bool,
    c: &SwapCandidate,
    node_total_memory: i64,
    node_swap: i64,
) -> i64 {
    match container_swap_behavior(configured, cgroup_v2_with_swap, c) {
        SwapBehavior::NoSwap => 0,
        SwapBehavior::LimitedSwap => {
            limited_swap_bytes(c.memory_request, node_total_memory, node_swap).unwrap_or_else(
                |e| {
                    tracing::error!(error = %e, "cannot calculate swap allocation amount; disallowing swap");
                    0
                },
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: i64 = 1 << 30;

    fn burstable(request: i64, limit: i64) -> SwapCandidate {
        SwapCandidate {
            critical: false,
            burstable: true,
            memory_request: request,
            memory_limit: limit,
        }
    }

    #[test]
    fn parse_behavior() {
        assert_eq!("".parse(), Ok(SwapBehavior::NoSwap));
        assert_eq!("NoSwap".parse(), Ok(SwapBehavior::NoSwap));
        assert_eq!("LimitedSwap".parse(), Ok(SwapBehavior::LimitedSwap));
        assert_eq!(
            "UnlimitedSwap".parse::<SwapBehavior>().unwrap_err(),
            r#"memorySwap.swapBehavior "UnlimitedSwap" must be one of: "", "LimitedSwap" or "NoSwap""#
        );
    }

    #[test]
    fn only_burstable_non_critical_containers_with_room_swap() {
        let limited = SwapBehavior::LimitedSwap;
        assert_eq!(
            container_swap_behavior(limited, true, &burstable(GI, 2 * GI)),
            SwapBehavior::LimitedSwap
        );
        // A request without a limit is Burstable too.
        assert_eq!(
            container_swap_behavior(limited, true, &burstable(GI, 0)),
            SwapBehavior::LimitedSwap
        );
        // NoSwap configured, cgroup v1 or no swap controller.
        let c = burstable(GI, 2 * GI);
        assert_eq!(
            container_swap_behavior(SwapBehavior::NoSwap, true, &c),
            SwapBehavior::NoSwap
        );
        assert_eq!(
            container_swap_behavior(limited, false, &c),
            SwapBehavior::NoSwap
        );
        // Critical (static, mirror, system priority) pods never swap.
        let critical = SwapCandidate {
            critical: true,
            ..c
        };
        assert_eq!(
            container_swap_behavior(limited, true, &critical),
            SwapBehavior::NoSwap
        );
        // Guaranteed and BestEffort pods don't either.
        let guaranteed = SwapCandidate {
            burstable: false,
            ..burstable(GI, GI)
        };
        assert_eq!(
            container_swap_behavior(limited, true, &guaranteed),
            SwapBehavior::NoSwap
        );
        // A Burstable pod's container asking for no memory, or request == limit.
        assert_eq!(
            container_swap_behavior(limited, true, &burstable(0, 0)),
            SwapBehavior::NoSwap
        );
        assert_eq!(
            container_swap_behavior(limited, true, &burstable(GI, GI)),
            SwapBehavior::NoSwap
        );
    }

    #[test]
    fn limited_swap_is_proportional_to_the_request() {
        // 1Gi of 8Gi memory, 2Gi swap: a quarter Gi.
        assert_eq!(limited_swap_bytes(GI, 8 * GI, 2 * GI), Ok(GI / 4));
        // Truncated: 100 of 300 bytes with 1000 of swap is 333.33, so 333.
        assert_eq!(limited_swap_bytes(100, 300, 1000), Ok(333));
        assert_eq!(limited_swap_bytes(GI, 8 * GI, 0), Ok(0));
        assert_eq!(limited_swap_bytes(GI, 0, GI), Err(SwapError::NoNodeMemory));
        assert_eq!(
            limited_swap_bytes(9 * GI, 8 * GI, GI)
                .unwrap_err()
                .to_string(),
            "container request 9663676416 is larger than total node memory 8589934592"
        );
        // The whole decision: computed for LimitedSwap, 0 otherwise or on error.
        let c = burstable(GI, 2 * GI);
        assert_eq!(
            container_swap_max(SwapBehavior::LimitedSwap, true, &c, 8 * GI, 2 * GI),
            GI / 4
        );
        assert_eq!(
            container_swap_max(SwapBehavior::NoSwap, true, &c, 8 * GI, 2 * GI),
            0
        );
        assert_eq!(
            container_swap_max(SwapBehavior::LimitedSwap, true, &c, 0, 2 * GI),
            0
        );
    }
}
