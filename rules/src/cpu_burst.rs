//! CFS burst for a pod: an annotation naming a CPU amount (`50m`, `0.5`) the
//! pod's and its containers' quotas may bank while idle and spend above their
//! limit within a period (`cpu.max.burst` on cgroup v2, `cpu.cfs_burst_us` on
//! v1, Linux 5.14 and later). Kubernetes has no field for it, so the name is
//! the project's own; the agent applies it and `kubelab experiment cpu` sets it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity;

pub const CPU_BURST_ANNOTATION: &str = "kubelab.io/cpu-burst";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {CPU_BURST_ANNOTATION}: {value:?} {reason}")]
pub struct CpuBurstError {
    pub value: String,
    pub reason: String,
}

/// The burst `value` asks for, in millicores (rounded up).
pub fn parse_millis(value: &str) -> Result<i64, CpuBurstError> {
    let err = |reason: String| CpuBurstError {
        value: value.to_string(),
        reason,
    };
    let nanos =
        quantity::nano_value(&Quantity(value.to_string())).map_err(|e| err(e.to_string()))?;
    if nanos < 0 {
        return Err(err("must be greater than or equal to 0".into()));
    }
    Ok(quantity::nanos_to_ceil(nanos, 1_000_000))
}

/// The pod's burst annotation, in millicores; `None` without it.
pub fn cpu_burst_millis(
    annotations: Option<&BTreeMap<String, String>>,
) -> Result<Option<i64>, CpuBurstError> {
    annotations
        .and_then(|a| a.get(CPU_BURST_ANNOTATION))
        .map(|v| parse_millis(v))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_round_up_to_millicores_and_negatives_are_refused() {
        assert_eq!(parse_millis("50m"), Ok(50));
        assert_eq!(parse_millis("0.5"), Ok(500));
        assert_eq!(parse_millis("1500u"), Ok(2));
        let e = parse_millis("-1").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"annotation kubelab.io/cpu-burst: "-1" must be greater than or equal to 0"#
        );
        assert!(parse_millis("lots").is_err());
        let a = BTreeMap::from([(CPU_BURST_ANNOTATION.to_string(), "200m".to_string())]);
        assert_eq!(cpu_burst_millis(Some(&a)), Ok(Some(200)));
        assert_eq!(cpu_burst_millis(None), Ok(None));
    }
}
