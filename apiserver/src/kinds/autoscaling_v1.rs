//! `autoscaling/v1` HorizontalPodAutoscaler, served over the objects stored
//! as `autoscaling/v2` (the storage version) with the conversion
//! kube-apiserver does (`pkg/apis/autoscaling/v1/conversion.go`): the CPU
//! utilization metric is `targetCPUUtilizationPercentage`, its current
//! value `currentCPUUtilizationPercentage`. What v1 cannot say (other
//! metrics, behavior, conditions) is kept from the stored object when a v1
//! client writes, where kube-apiserver round-trips it through annotations.
//! Defaults, validation and columns are v2's, applied to the converted
//! object.

use k8s_openapi::api::autoscaling::{v1, v2};
use serde_json::Value;

use super::KindSpec;
use super::table::Column;
use crate::status::FieldError;

fn is_cpu_utilization(m: &v2::MetricSpec) -> bool {
    m.type_ == "Resource"
        && m.resource
            .as_ref()
            .is_some_and(|r| r.name == "cpu" && r.target.type_ == "Utilization")
}

fn is_cpu_status(m: &v2::MetricStatus) -> bool {
    m.type_ == "Resource" && m.resource.as_ref().is_some_and(|r| r.name == "cpu")
}

/// The v1 view of a stored HPA.
pub fn to_v1(hpa: &v2::HorizontalPodAutoscaler) -> v1::HorizontalPodAutoscaler {
    let spec = hpa.spec.clone().unwrap_or_default();
    let target = spec
        .metrics
        .iter()
        .flatten()
        .find(|m| is_cpu_utilization(m))
        .and_then(|m| m.resource.as_ref()?.target.average_utilization);
    let status = hpa
        .status
        .as_ref()
        .map(|s| v1::HorizontalPodAutoscalerStatus {
            current_cpu_utilization_percentage: s
                .current_metrics
                .iter()
                .flatten()
                .find(|m| is_cpu_status(m))
                .and_then(|m| m.resource.as_ref()?.current.average_utilization),
            current_replicas: s.current_replicas.unwrap_or(0),
            desired_replicas: s.desired_replicas,
            last_scale_time: s.last_scale_time.clone(),
            observed_generation: s.observed_generation,
        });
    v1::HorizontalPodAutoscaler {
        metadata: hpa.metadata.clone(),
        spec: Some(v1::HorizontalPodAutoscalerSpec {
            max_replicas: spec.max_replicas,
            min_replicas: spec.min_replicas,
            scale_target_ref: v1::CrossVersionObjectReference {
                api_version: spec.scale_target_ref.api_version,
                kind: spec.scale_target_ref.kind,
                name: spec.scale_target_ref.name,
            },
            target_cpu_utilization_percentage: target,
        }),
        status,
    }
}

/// The stored form of a v1 HPA; `stored` is the object it replaces,
/// whose other metrics, behavior and conditions v1 cannot carry.
pub fn to_v2(
    hpa: &v1::HorizontalPodAutoscaler,
    stored: Option<&v2::HorizontalPodAutoscaler>,
) -> v2::HorizontalPodAutoscaler {
    let spec = hpa.spec.clone().unwrap_or_default();
    let old_spec = stored.and_then(|s| s.spec.clone()).unwrap_or_default();
    let mut metrics: Vec<v2::MetricSpec> = old_spec
        .metrics
        .into_iter()
        .flatten()
        .filter(|m| !is_cpu_utilization(m))
        .collect();
    if let Some(percent) = spec.target_cpu_utilization_percentage {
        metrics.push(v2::MetricSpec {
            type_: "Resource".into(),
            resource: Some(v2::ResourceMetricSource {
                name: "cpu".into(),
                target: v2::MetricTarget {
                    type_: "Utilization".into(),
                    average_utilization: Some(percent),
                    ..Default::default()
                },
            }),
            ..Default::default()
        });
    }
    let old_status = stored.and_then(|s| s.status.clone()).unwrap_or_default();
    let status = hpa.status.as_ref().map(|s| {
        let mut current: Vec<v2::MetricStatus> = old_status
            .current_metrics
            .clone()
            .into_iter()
            .flatten()
            .filter(|m| !is_cpu_status(m))
            .collect();
        if let Some(percent) = s.current_cpu_utilization_percentage {
            // The stored reading, when it says the same, keeps its average value.
            let same = old_status.current_metrics.iter().flatten().find(|m| {
                is_cpu_status(m)
                    && m.resource
                        .as_ref()
                        .and_then(|r| r.current.average_utilization)
                        == Some(percent)
            });
            current.push(same.cloned().unwrap_or_else(|| v2::MetricStatus {
                type_: "Resource".into(),
                resource: Some(v2::ResourceMetricStatus {
                    name: "cpu".into(),
                    current: v2::MetricValueStatus {
                        average_utilization: Some(percent),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }));
        }
        v2::HorizontalPodAutoscalerStatus {
            conditions: old_status.conditions.clone(),
            current_metrics: (!current.is_empty()).then_some(current),
            current_replicas: Some(s.current_replicas),
            desired_replicas: s.desired_replicas,
            last_scale_time: s.last_scale_time.clone(),
            observed_generation: s.observed_generation,
        }
    });
    v2::HorizontalPodAutoscaler {
        metadata: hpa.metadata.clone(),
        spec: Some(v2::HorizontalPodAutoscalerSpec {
            behavior: old_spec.behavior,
            max_replicas: spec.max_replicas,
            metrics: (!metrics.is_empty()).then_some(metrics),
            min_replicas: spec.min_replicas,
            scale_target_ref: v2::CrossVersionObjectReference {
                api_version: spec.scale_target_ref.api_version,
                kind: spec.scale_target_ref.kind,
                name: spec.scale_target_ref.name,
            },
        }),
        status,
    }
}

fn decode<K: serde::de::DeserializeOwned>(v: &Value) -> Option<K> {
    K::deserialize(v).ok()
}

fn encode<K: serde::Serialize>(k: &K) -> Value {
    serde_json::to_value(k).expect("k8s-openapi types serialize")
}

impl KindSpec for v1::HorizontalPodAutoscaler {
    const SHORT_NAMES: &'static [&'static str] = &["hpa"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const HAS_STATUS: bool = true;
    const CONVERTED: bool = true;

    fn from_storage(v: Value) -> Value {
        match decode::<v2::HorizontalPodAutoscaler>(&v) {
            Some(hpa) => encode(&to_v1(&hpa)),
            None => v,
        }
    }

    fn to_storage(v: Value, stored: Option<&Value>) -> Value {
        match decode::<v1::HorizontalPodAutoscaler>(&v) {
            Some(hpa) => {
                let stored = stored.and_then(decode::<v2::HorizontalPodAutoscaler>);
                encode(&to_v2(&hpa, stored.as_ref()))
            }
            None => v,
        }
    }

    fn prepare_create(&mut self) {
        let mut v2 = to_v2(self, None);
        v2.prepare_create();
        *self = to_v1(&v2);
    }

    fn prepare_update(&mut self, old: &Self) {
        let mut v2 = to_v2(self, None);
        v2.prepare_update(&to_v2(old, None));
        *self = to_v1(&v2);
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let old = old.map(|o| to_v2(o, None));
        to_v2(self, None).validate(old.as_ref())
    }

    fn columns() -> Vec<Column> {
        v2::HorizontalPodAutoscaler::columns()
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        to_v2(self, None).cells(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v2_hpa() -> v2::HorizontalPodAutoscaler {
        serde_json::from_value(json!({
            "metadata": {"name": "php-apache", "namespace": "default"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "php-apache"},
                "minReplicas": 1, "maxReplicas": 10,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 5}},
            },
            "status": {
                "currentReplicas": 3, "desiredReplicas": 3,
                "currentMetrics": [
                    {"type": "Resource", "resource": {"name": "memory", "current": {"averageValue": "80Mi"}}},
                    {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 138, "averageValue": "276m"}}},
                ],
                "conditions": [{"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale"}],
            },
        }))
        .unwrap()
    }

    #[test]
    fn the_cpu_metric_is_the_v1_target_and_the_rest_survives_a_v1_write() {
        let stored = v2_hpa();
        let v1 = to_v1(&stored);
        assert_eq!(
            serde_json::to_value(&v1).unwrap(),
            json!({
                "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "php-apache", "namespace": "default"},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "php-apache"},
                         "minReplicas": 1, "maxReplicas": 10, "targetCPUUtilizationPercentage": 50},
                "status": {"currentReplicas": 3, "desiredReplicas": 3, "currentCPUUtilizationPercentage": 138},
            })
        );
        // Unchanged through v1: the same object comes back.
        let back = to_v2(&v1, Some(&stored));
        assert_eq!(back.spec, stored.spec);
        assert_eq!(back.status, stored.status);
        // A new target through v1 replaces only the CPU metric.
        let mut edited = v1.clone();
        edited
            .spec
            .as_mut()
            .unwrap()
            .target_cpu_utilization_percentage = Some(70);
        let back = to_v2(&edited, Some(&stored));
        let metrics = back.spec.as_ref().unwrap().metrics.clone().unwrap();
        assert_eq!(metrics.len(), 2);
        assert_eq!(metrics[0].resource.as_ref().unwrap().name, "memory");
        assert_eq!(
            metrics[1]
                .resource
                .as_ref()
                .unwrap()
                .target
                .average_utilization,
            Some(70)
        );
        assert!(back.spec.unwrap().behavior.is_some());
    }

    #[test]
    fn a_v1_object_gets_v2_defaults_and_validation() {
        let mut v1: v1::HorizontalPodAutoscaler = serde_json::from_value(json!({
            "metadata": {"name": "h"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3},
        }))
        .unwrap();
        v1.prepare_create();
        let spec = v1.spec.as_ref().unwrap();
        assert_eq!(spec.min_replicas, Some(1));
        assert_eq!(spec.target_cpu_utilization_percentage, Some(80));
        v1.spec.as_mut().unwrap().max_replicas = 0;
        let errs = v1.validate(None);
        assert_eq!(errs.len(), 1);
    }
}
