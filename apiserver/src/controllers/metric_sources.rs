//! Why an autoscaler metric gave no replica count, in the words of the
//! HPA controller: the reason of the `ScalingActive` condition and of the
//! event, and the messages. `Pods` and `Object` metrics come from the
//! custom metrics API (`custom.metrics.k8s.io`) and `External` ones from
//! the external metrics API (`external.metrics.k8s.io`); this apiserver
//! aggregates no API servers, so neither is ever registered, and those
//! metrics read as they do on a cluster without a metrics adapter.
//!
//! Pure: a metric spec in, the failure out.

use k8s_openapi::api::autoscaling::v2::MetricSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A metric that gave no replica count.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricFailure {
    /// The reason of the `ScalingActive` False condition and the event
    /// (`FailedGetResourceMetric`, `FailedGetPodsMetric`, …).
    pub reason: &'static str,
    /// What went wrong (the condition's and the event's message).
    pub error: String,
    /// The same, as `computeReplicasForMetric` wraps it (the
    /// `FailedComputeMetricsReplicas` event's "first error").
    pub outer: String,
}

const NO_CUSTOM_METRICS_API: &str = "unable to fetch metrics from custom metrics API: no custom metrics API (custom.metrics.k8s.io) registered";

/// The failure of a metric of a source this apiserver does not serve,
/// or of an unknown type.
pub fn unserved_metric(spec: &MetricSpec, namespace: &str) -> MetricFailure {
    match spec.type_.as_str() {
        "Pods" if spec.pods.is_some() => {
            let name = &spec.pods.as_ref().expect("checked").metric.name;
            let error = format!("unable to get metric {name}: {NO_CUSTOM_METRICS_API}");
            MetricFailure {
                reason: "FailedGetPodsMetric",
                outer: format!("failed to get pods metric value: {error}"),
                error,
            }
        }
        "Object" if spec.object.is_some() => {
            let o = spec.object.as_ref().expect("checked");
            // The order of kube-controller-manager's message, as it prints it.
            let error = format!(
                "unable to get metric {}: {} on {namespace} {}/{NO_CUSTOM_METRICS_API}",
                o.metric.name, o.described_object.kind, o.described_object.name
            );
            MetricFailure {
                reason: "FailedGetObjectMetric",
                outer: format!("failed to get object metric value: {error}"),
                error,
            }
        }
        "External" if spec.external.is_some() => {
            let m = &spec.external.as_ref().expect("checked").metric;
            let error = format!(
                "unable to get external metric {namespace}/{}/{}: unable to fetch metrics from external metrics API: the server could not find the requested resource (get {}.external.metrics.k8s.io)",
                m.name,
                go_selector(m.selector.as_ref()),
                m.name
            );
            MetricFailure {
                reason: "FailedGetExternalMetric",
                outer: format!("failed to get {} external metric value: {error}", m.name),
                error,
            }
        }
        other => {
            let error = format!("unknown metric source type {other:?}");
            MetricFailure {
                reason: "InvalidMetricSourceType",
                outer: format!("{error}: invalid metrics"),
                error,
            }
        }
    }
}

/// A label selector as Go's `%+v` prints a `*metav1.LabelSelector`.
fn go_selector(selector: Option<&LabelSelector>) -> String {
    let Some(s) = selector else {
        return "nil".into();
    };
    let labels: String = s
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}: {v},"))
        .collect();
    let expressions: String = s
        .match_expressions
        .iter()
        .flatten()
        .map(|e| {
            format!(
                "LabelSelectorRequirement{{Key:{},Operator:{},Values:[{}],}},",
                e.key,
                e.operator,
                e.values
                    .iter()
                    .flatten()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        })
        .collect();
    format!(
        "&LabelSelector{{MatchLabels:map[string]string{{{labels}}},MatchExpressions:[]LabelSelectorRequirement{{{expressions}}},}}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn metric(v: serde_json::Value) -> MetricSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn pods_and_object_metrics_need_the_custom_metrics_api() {
        let f = unserved_metric(
            &metric(
                json!({"type": "Pods", "pods": {"metric": {"name": "packets-per-second"},
                "target": {"type": "AverageValue", "averageValue": "1k"}}}),
            ),
            "default",
        );
        assert_eq!(f.reason, "FailedGetPodsMetric");
        assert_eq!(
            f.error,
            "unable to get metric packets-per-second: unable to fetch metrics from custom metrics API: no custom metrics API (custom.metrics.k8s.io) registered"
        );
        assert_eq!(
            f.outer,
            format!("failed to get pods metric value: {}", f.error)
        );
        let f = unserved_metric(
            &metric(
                json!({"type": "Object", "object": {"metric": {"name": "requests-per-second"},
                "describedObject": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "main-route"},
                "target": {"type": "Value", "value": "10k"}}}),
            ),
            "default",
        );
        assert_eq!(f.reason, "FailedGetObjectMetric");
        assert!(
            f.error.starts_with(
                "unable to get metric requests-per-second: Ingress on default main-route/unable to fetch"
            ),
            "{}",
            f.error
        );
    }

    #[test]
    fn external_metrics_are_not_found() {
        let f = unserved_metric(
            &metric(
                json!({"type": "External", "external": {"metric": {"name": "queue_messages_ready",
                "selector": {"matchLabels": {"queue": "worker_tasks"}}},
                "target": {"type": "AverageValue", "averageValue": "30"}}}),
            ),
            "default",
        );
        assert_eq!(f.reason, "FailedGetExternalMetric");
        assert_eq!(
            f.error,
            "unable to get external metric default/queue_messages_ready/&LabelSelector{MatchLabels:map[string]string{queue: worker_tasks,},MatchExpressions:[]LabelSelectorRequirement{},}: unable to fetch metrics from external metrics API: the server could not find the requested resource (get queue_messages_ready.external.metrics.k8s.io)"
        );
        let f = unserved_metric(&metric(json!({"type": "Bogus"})), "default");
        assert_eq!(f.reason, "InvalidMetricSourceType");
        assert_eq!(f.error, "unknown metric source type \"Bogus\"");
    }
}
