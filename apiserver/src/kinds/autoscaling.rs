//! `autoscaling/v2` HorizontalPodAutoscaler: defaults as
//! `pkg/apis/autoscaling/v2` sets them (one replica at least, CPU at 80%
//! when no metric is given, filled-in behavior rules), validation as
//! `pkg/apis/autoscaling/validation`, and the columns `kubectl get hpa`
//! prints (`TARGETS` as `cpu: 138%/50%`).

use k8s_openapi::api::autoscaling::v2::{
    HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler, HorizontalPodAutoscalerStatus,
    MetricSpec, MetricStatus, MetricTarget, ResourceMetricSource,
};
use serde_json::Value;

use super::KindSpec;
use super::table::{Column, age, age_col, col, name_col};
use crate::status::FieldError;

/// `autoscaling.DefaultCPUUtilization`.
pub const DEFAULT_CPU_UTILIZATION: i32 = 80;

fn policy(type_: &str, value: i32) -> HPAScalingPolicy {
    HPAScalingPolicy {
        type_: type_.into(),
        value,
        period_seconds: 15,
    }
}

/// `GenerateHPAScaleUpRules`: the defaults for whatever a rule leaves out.
pub fn scale_up_rules(given: Option<HPAScalingRules>) -> HPAScalingRules {
    let mut r = given.unwrap_or_default();
    r.stabilization_window_seconds.get_or_insert(0);
    r.select_policy.get_or_insert_with(|| "Max".into());
    r.policies
        .get_or_insert_with(|| vec![policy("Pods", 4), policy("Percent", 100)]);
    r
}

/// `GenerateHPAScaleDownRules`; the window stays unset so the controller's
/// `--horizontal-pod-autoscaler-downscale-stabilization` applies.
pub fn scale_down_rules(given: Option<HPAScalingRules>) -> HPAScalingRules {
    let mut r = given.unwrap_or_default();
    r.select_policy.get_or_insert_with(|| "Max".into());
    r.policies
        .get_or_insert_with(|| vec![policy("Percent", 100)]);
    r
}

fn cpu_utilization(percent: i32) -> MetricSpec {
    MetricSpec {
        type_: "Resource".into(),
        resource: Some(ResourceMetricSource {
            name: "cpu".into(),
            target: MetricTarget {
                type_: "Utilization".into(),
                average_utilization: Some(percent),
                ..Default::default()
            },
        }),
        ..Default::default()
    }
}

/// `formatHPAMetrics`: each metric as `current/target`, at most two, then
/// `+ N more...`.
pub fn format_metrics(specs: &[MetricSpec], statuses: &[MetricStatus]) -> String {
    if specs.is_empty() {
        return "<none>".into();
    }
    const MAX: usize = 2;
    let list: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let status = statuses.get(i);
            match spec.type_.as_str() {
                "Resource" => {
                    let Some(r) = &spec.resource else {
                        return "<unknown type>".into();
                    };
                    let current = status.and_then(|s| s.resource.as_ref()).map(|s| &s.current);
                    resource_target(&r.name, &r.target, current)
                }
                "ContainerResource" => {
                    let Some(r) = &spec.container_resource else {
                        return "<unknown type>".into();
                    };
                    let current = status
                        .and_then(|s| s.container_resource.as_ref())
                        .map(|s| &s.current);
                    resource_target(&r.name, &r.target, current)
                }
                "Pods" => {
                    let current = status
                        .and_then(|s| s.pods.as_ref())
                        .and_then(|p| p.current.average_value.as_ref())
                        .map_or("<unknown>".into(), |q| q.0.clone());
                    let target = spec
                        .pods
                        .as_ref()
                        .and_then(|p| p.target.average_value.as_ref())
                        .map_or(String::new(), |q| q.0.clone());
                    format!("{current}/{target}")
                }
                "Object" => {
                    let Some(o) = &spec.object else {
                        return "<unknown type>".into();
                    };
                    let current = status.and_then(|s| s.object.as_ref()).map(|s| &s.current);
                    value_target(&o.target, current)
                }
                "External" => {
                    let Some(e) = &spec.external else {
                        return "<unknown type>".into();
                    };
                    let current = status.and_then(|s| s.external.as_ref()).map(|s| &s.current);
                    value_target(&e.target, current)
                }
                _ => "<unknown type>".into(),
            }
        })
        .collect();
    if list.len() > MAX {
        return format!("{} + {} more...", list[..MAX].join(", "), list.len() - MAX);
    }
    list.join(", ")
}

fn resource_target(
    name: &str,
    target: &MetricTarget,
    current: Option<&k8s_openapi::api::autoscaling::v2::MetricValueStatus>,
) -> String {
    if let Some(value) = &target.average_value {
        let cur = current
            .and_then(|c| c.average_value.as_ref())
            .map_or("<unknown>".into(), |q| q.0.clone());
        return format!("{name}: {cur}/{}", value.0);
    }
    let cur = current
        .and_then(|c| c.average_utilization)
        .map_or("<unknown>".into(), |u| format!("{u}%"));
    let want = target
        .average_utilization
        .map_or("<auto>".into(), |u| format!("{u}%"));
    format!("{name}: {cur}/{want}")
}

/// An `Object` or `External` metric: `current/target`, `(avg)` after an
/// `AverageValue` target.
fn value_target(
    target: &MetricTarget,
    current: Option<&k8s_openapi::api::autoscaling::v2::MetricValueStatus>,
) -> String {
    let quantity = |q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
        q.map_or("<unknown>".to_owned(), |q| q.0.clone())
    };
    if let Some(value) = &target.average_value {
        let cur = quantity(current.and_then(|c| c.average_value.as_ref()));
        return format!("{cur}/{} (avg)", value.0);
    }
    let cur = quantity(current.and_then(|c| c.value.as_ref()));
    let want = target.value.as_ref().map_or(String::new(), |q| q.0.clone());
    format!("{cur}/{want}")
}

fn validate_rules(field: &str, rules: &HPAScalingRules) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(w) = rules.stabilization_window_seconds
        && !(0..=3600).contains(&w)
    {
        errs.push(FieldError::invalid_raw(
            format!("{field}.stabilizationWindowSeconds"),
            w.to_string(),
            "must be less than or equal to 3600 and greater than or equal to 0",
        ));
    }
    if let Some(p) = rules.select_policy.as_deref()
        && !["Max", "Min", "Disabled"].contains(&p)
    {
        errs.push(FieldError::not_supported(
            format!("{field}.selectPolicy"),
            p,
            &["Disabled", "Max", "Min"],
        ));
    }
    for (i, p) in rules.policies.iter().flatten().enumerate() {
        let f = format!("{field}.policies[{i}]");
        if !["Pods", "Percent"].contains(&p.type_.as_str()) {
            errs.push(FieldError::not_supported(
                format!("{f}.type"),
                &p.type_,
                &["Percent", "Pods"],
            ));
        }
        if p.value <= 0 {
            errs.push(FieldError::invalid_raw(
                format!("{f}.value"),
                p.value.to_string(),
                "must be greater than zero",
            ));
        }
        if !(1..=1800).contains(&p.period_seconds) {
            errs.push(FieldError::invalid_raw(
                format!("{f}.periodSeconds"),
                p.period_seconds.to_string(),
                "must be greater than zero and less than or equal to 1800",
            ));
        }
    }
    errs
}

fn validate_metric(field: &str, m: &MetricSpec) -> Vec<FieldError> {
    const TYPES: [&str; 5] = [
        "ContainerResource",
        "External",
        "Object",
        "Pods",
        "Resource",
    ];
    if !TYPES.contains(&m.type_.as_str()) {
        return vec![FieldError::not_supported(
            format!("{field}.type"),
            &m.type_,
            &TYPES,
        )];
    }
    let target = match m.type_.as_str() {
        "Resource" => m.resource.as_ref().map(|r| &r.target),
        "ContainerResource" => m.container_resource.as_ref().map(|r| &r.target),
        _ => return Vec::new(),
    };
    let sub = if m.type_ == "Resource" {
        "resource"
    } else {
        "containerResource"
    };
    let Some(target) = target else {
        return vec![FieldError::required(
            format!("{field}.{sub}"),
            format!(
                "must populate information for the given metric source (only allowed when type is {:?})",
                m.type_
            ),
        )];
    };
    let mut errs = Vec::new();
    if let Some(u) = target.average_utilization
        && u <= 0
    {
        errs.push(FieldError::invalid_raw(
            format!("{field}.{sub}.target.averageUtilization"),
            u.to_string(),
            "must be greater than 0",
        ));
    }
    if target.type_ == "Utilization" && target.average_utilization.is_none() {
        errs.push(FieldError::required(
            format!("{field}.{sub}.target.averageUtilization"),
            "must set averageUtilization when type is Utilization",
        ));
    }
    errs
}

impl KindSpec for HorizontalPodAutoscaler {
    const SHORT_NAMES: &'static [&'static str] = &["hpa"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const HAS_STATUS: bool = true;

    fn prepare_create(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        spec.min_replicas.get_or_insert(1);
        if spec.metrics.as_ref().is_none_or(Vec::is_empty) {
            spec.metrics = Some(vec![cpu_utilization(DEFAULT_CPU_UTILIZATION)]);
        }
        if let Some(b) = &mut spec.behavior {
            b.scale_up = Some(scale_up_rules(b.scale_up.take()));
            b.scale_down = Some(scale_down_rules(b.scale_down.take()));
        }
        self.status = Some(HorizontalPodAutoscalerStatus::default());
    }

    fn prepare_update(&mut self, _old: &Self) {
        let status = self.status.take();
        self.prepare_create();
        self.status = status;
    }

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let Some(spec) = &self.spec else {
            return vec![FieldError::required("spec", "")];
        };
        let min = spec.min_replicas.unwrap_or(1);
        if min < 1 {
            errs.push(FieldError::invalid_raw(
                "spec.minReplicas",
                min.to_string(),
                "must be greater than or equal to 1",
            ));
        }
        if spec.max_replicas < 1 {
            errs.push(FieldError::invalid_raw(
                "spec.maxReplicas",
                spec.max_replicas.to_string(),
                "must be greater than 0",
            ));
        } else if spec.max_replicas < min {
            errs.push(FieldError::invalid_raw(
                "spec.maxReplicas",
                spec.max_replicas.to_string(),
                "must be greater than or equal to `minReplicas`",
            ));
        }
        let target = &spec.scale_target_ref;
        if target.kind.is_empty() {
            errs.push(FieldError::required("spec.scaleTargetRef.kind", ""));
        }
        if target.name.is_empty() {
            errs.push(FieldError::required("spec.scaleTargetRef.name", ""));
        }
        for (i, m) in spec.metrics.iter().flatten().enumerate() {
            errs.extend(validate_metric(&format!("spec.metrics[{i}]"), m));
        }
        if let Some(b) = &spec.behavior {
            if let Some(r) = &b.scale_up {
                errs.extend(validate_rules("spec.behavior.scaleUp", r));
            }
            if let Some(r) = &b.scale_down {
                errs.extend(validate_rules("spec.behavior.scaleDown", r));
            }
        }
        errs
    }

    fn columns() -> Vec<Column> {
        vec![
            name_col(),
            col("Reference", "string", 0),
            col("Targets", "string", 0),
            col("MinPods", "string", 0),
            col("MaxPods", "integer", 0),
            col("Replicas", "integer", 0),
            age_col(),
        ]
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        vec![
            self.metadata.name.clone().unwrap_or_default().into(),
            format!(
                "{}/{}",
                spec.scale_target_ref.kind, spec.scale_target_ref.name
            )
            .into(),
            format_metrics(
                spec.metrics.as_deref().unwrap_or_default(),
                status.current_metrics.as_deref().unwrap_or_default(),
            )
            .into(),
            spec.min_replicas
                .map_or("<unset>".into(), |m| m.to_string())
                .into(),
            spec.max_replicas.into(),
            status.current_replicas.unwrap_or(0).into(),
            age(self.metadata.creation_timestamp.as_ref(), now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::autoscaling::v2::{
        HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricValueStatus,
        ResourceMetricStatus,
    };

    fn cpu_status(u: i32) -> MetricStatus {
        MetricStatus {
            type_: "Resource".into(),
            resource: Some(ResourceMetricStatus {
                name: "cpu".into(),
                current: MetricValueStatus {
                    average_utilization: Some(u),
                    ..Default::default()
                },
            }),
            ..Default::default()
        }
    }

    #[test]
    fn targets_read_as_kubectl_prints_them() {
        let specs = [cpu_utilization(50)];
        assert_eq!(format_metrics(&specs, &[]), "cpu: <unknown>/50%");
        assert_eq!(format_metrics(&specs, &[cpu_status(138)]), "cpu: 138%/50%");
        let three = [
            cpu_utilization(50),
            cpu_utilization(60),
            cpu_utilization(70),
        ];
        assert_eq!(
            format_metrics(&three, &[]),
            "cpu: <unknown>/50%, cpu: <unknown>/60% + 1 more..."
        );
        assert_eq!(format_metrics(&[], &[]), "<none>");
        let metric = |v: serde_json::Value| -> MetricSpec { serde_json::from_value(v).unwrap() };
        let status = |v: serde_json::Value| -> MetricStatus { serde_json::from_value(v).unwrap() };
        let average = [metric(
            serde_json::json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "AverageValue", "averageValue": "200m"}}}),
        )];
        assert_eq!(format_metrics(&average, &[]), "cpu: <unknown>/200m");
        assert_eq!(
            format_metrics(
                &average,
                &[status(
                    serde_json::json!({"type": "Resource", "resource": {"name": "cpu",
                    "current": {"averageValue": "100m"}}})
                )]
            ),
            "cpu: 100m/200m"
        );
        let others = [
            metric(
                serde_json::json!({"type": "External", "external": {"metric": {"name": "q"},
                "target": {"type": "AverageValue", "averageValue": "30"}}}),
            ),
            metric(
                serde_json::json!({"type": "Object", "object": {"metric": {"name": "rps"},
                "describedObject": {"kind": "Ingress", "name": "main"},
                "target": {"type": "Value", "value": "10k"}}}),
            ),
        ];
        // A metric that failed has an empty status.
        assert_eq!(
            format_metrics(&others, &[MetricStatus::default(), MetricStatus::default()]),
            "<unknown>/30 (avg), <unknown>/10k"
        );
    }

    #[test]
    fn defaults_fill_min_replicas_the_cpu_metric_and_behavior_rules() {
        let mut hpa = HorizontalPodAutoscaler {
            spec: Some(HorizontalPodAutoscalerSpec {
                max_replicas: 10,
                behavior: Some(HorizontalPodAutoscalerBehavior {
                    scale_down: Some(HPAScalingRules {
                        stabilization_window_seconds: Some(5),
                        ..Default::default()
                    }),
                    scale_up: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        hpa.prepare_create();
        let spec = hpa.spec.as_ref().unwrap();
        assert_eq!(spec.min_replicas, Some(1));
        assert_eq!(spec.metrics.as_ref().unwrap()[0], cpu_utilization(80));
        let b = spec.behavior.as_ref().unwrap();
        let up = b.scale_up.as_ref().unwrap();
        assert_eq!(up.stabilization_window_seconds, Some(0));
        assert_eq!(up.policies.as_ref().unwrap().len(), 2);
        let down = b.scale_down.as_ref().unwrap();
        assert_eq!(down.stabilization_window_seconds, Some(5));
        assert_eq!(down.policies.as_ref().unwrap()[0], policy("Percent", 100));
    }

    #[test]
    fn validation_names_the_field() {
        let hpa = HorizontalPodAutoscaler {
            spec: Some(HorizontalPodAutoscalerSpec {
                min_replicas: Some(5),
                max_replicas: 2,
                metrics: Some(vec![cpu_utilization(0)]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let fields: Vec<_> = hpa.validate(None).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "spec.maxReplicas",
                "spec.scaleTargetRef.kind",
                "spec.scaleTargetRef.name",
                "spec.metrics[0].resource.target.averageUtilization"
            ]
        );
    }
}
