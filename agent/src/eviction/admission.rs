//! Admission under pressure (kubelet's eviction `Admit`): a node under
//! pressure refuses new pods that would add to it. Under memory pressure
//! alone only BestEffort pods are refused (unless they tolerate the
//! `memory-pressure` taint); under disk or PID pressure every pod is.
//! Critical pods are always admitted.

use k8s_openapi::api::core::v1::{Pod, Taint};

use super::Pressure;
use super::config::PressureCondition;

/// The taint the node lifecycle controller puts on a node with `MemoryPressure`.
pub const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";

/// `Err(message)` when the node refuses `pod` (reason `Evicted`): "The node
/// had condition: [MemoryPressure]. ", word for word.
pub fn admit(pod: &Pod, best_effort: bool, pressure: &Pressure) -> Result<(), String> {
    if pressure.is_empty() || super::rank::is_critical(pod) {
        return Ok(());
    }
    if pressure.len() == 1 && pressure.contains(&PressureCondition::MemoryPressure) {
        if !best_effort {
            return Ok(());
        }
        let taint = Taint {
            key: TAINT_MEMORY_PRESSURE.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or_default();
        if kubelab_rules::taints::is_tolerated(&taint, tolerations) {
            return Ok(());
        }
    }
    let names: Vec<&str> = pressure.iter().map(|c| c.as_str()).collect();
    Err(format!("The node had condition: [{}]. ", names.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, Toleration};

    fn pod(tolerations: Option<Vec<Toleration>>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                tolerations,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn memory_pressure_refuses_best_effort_pods_only() {
        let memory: Pressure = [PressureCondition::MemoryPressure].into();
        assert_eq!(admit(&pod(None), false, &memory), Ok(()));
        assert_eq!(
            admit(&pod(None), true, &memory),
            Err("The node had condition: [MemoryPressure]. ".into())
        );
        let tolerant = pod(Some(vec![Toleration {
            key: Some(TAINT_MEMORY_PRESSURE.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }]));
        assert_eq!(admit(&tolerant, true, &memory), Ok(()));
        assert_eq!(admit(&pod(None), true, &Pressure::new()), Ok(()));
    }

    #[test]
    fn disk_or_pid_pressure_refuses_every_pod_but_critical_ones() {
        let both: Pressure = [
            PressureCondition::MemoryPressure,
            PressureCondition::DiskPressure,
        ]
        .into();
        assert_eq!(
            admit(&pod(None), false, &both),
            Err("The node had condition: [MemoryPressure DiskPressure]. ".into())
        );
        let mut critical = pod(None);
        critical.spec.as_mut().unwrap().priority =
            Some(super::super::rank::SYSTEM_CRITICAL_PRIORITY);
        assert_eq!(admit(&critical, true, &both), Ok(()));
    }
}
