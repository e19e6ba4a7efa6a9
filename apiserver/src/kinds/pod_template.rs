//! Pod templates, as controllers (ReplicaSet, Deployment, DaemonSet,
//! ReplicationController) and the `PodTemplate` kind carry them: the pod
//! spec defaults templates get, and `ValidatePodTemplateSpecForReplicaSet`'s
//! checks.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodTemplate, PodTemplateSpec};
use serde_json::Value;

use super::KindSpec;
use super::pod::validate_pod_spec;
use super::pod_defaults::default_pod_spec;
use super::table::{Column, col, name_col, none_if_empty};
use super::validation::go_string_map;
use crate::status::FieldError;

/// `SetDefaults_PodSpec` on a template; pod-only defaults (service account,
/// tolerations, priority) come when its pods are created.
pub fn default_template(t: &mut PodTemplateSpec) {
    default_pod_spec(t.spec.get_or_insert_with(Default::default));
}

/// The template labels as a map (empty when unset).
pub fn template_labels(t: &PodTemplateSpec) -> BTreeMap<String, String> {
    t.metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

/// Why a template does not match its controller's selector, as
/// `field.Invalid(template.metadata.labels, ...)`.
pub fn selector_mismatch(path: &str, t: &PodTemplateSpec) -> FieldError {
    FieldError::invalid_raw(
        format!("{path}.metadata.labels"),
        go_string_map(t.metadata.as_ref().and_then(|m| m.labels.as_ref())),
        "`selector` does not match template `labels`",
    )
}

/// The checks every replicated controller's template gets: a valid pod
/// spec that restarts `Always` and has no deadline. `owner` names the
/// controller kind in the deadline message.
pub fn validate_controller_template(
    t: &PodTemplateSpec,
    path: &str,
    owner: &str,
) -> Vec<FieldError> {
    let Some(spec) = &t.spec else {
        return vec![FieldError::required(format!("{path}.spec"), "")];
    };
    let mut errs = validate_pod_spec(spec, &format!("{path}.spec"));
    let policy = spec.restart_policy.as_deref().unwrap_or("");
    if policy != "Always" && !errs.iter().any(|e| e.field.ends_with("restartPolicy")) {
        errs.push(FieldError::not_supported(
            format!("{path}.spec.restartPolicy"),
            policy,
            &["Always"],
        ));
    }
    if let Some(d) = spec.active_deadline_seconds {
        errs.push(FieldError::invalid_raw(
            format!("{path}.spec.activeDeadlineSeconds"),
            d.to_string(),
            format!("activeDeadlineSeconds in {owner} is not Supported"),
        ));
    }
    errs
}

/// Container names and images, comma-separated (`layoutContainerCells`).
pub fn container_cells(t: &PodTemplateSpec) -> (Value, Value) {
    let containers = t
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    let images: Vec<&str> = containers
        .iter()
        .map(|c| c.image.as_deref().unwrap_or(""))
        .collect();
    (names.join(",").into(), images.join(",").into())
}

/// `labels.FormatLabels`: `k=v` pairs sorted by key, `<none>` when empty.
pub fn format_labels(m: Option<&BTreeMap<String, String>>) -> Value {
    let pairs: Vec<String> = m
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    none_if_empty(pairs.join(","))
}

impl KindSpec for PodTemplate {
    fn prepare_create(&mut self) {
        if let Some(t) = &mut self.template {
            default_template(t);
        }
    }

    fn prepare_update(&mut self, _old: &Self) {
        self.prepare_create();
    }

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        match &self.template {
            Some(t) => match &t.spec {
                Some(spec) => validate_pod_spec(spec, "template.spec"),
                None => vec![FieldError::required("template.spec", "")],
            },
            None => vec![FieldError::required("template", "")],
        }
    }

    fn columns() -> Vec<Column> {
        vec![
            name_col(),
            col("Containers", "string", 0),
            col("Images", "string", 0),
            col("Pod Labels", "string", 0),
        ]
    }

    fn cells(&self, _now: jiff::Timestamp) -> Vec<Value> {
        let t = self.template.clone().unwrap_or_default();
        let (containers, images) = container_cells(&t);
        vec![
            self.metadata.name.clone().unwrap_or_default().into(),
            containers,
            images,
            format_labels(t.metadata.as_ref().and_then(|m| m.labels.as_ref())),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(v: Value) -> PodTemplateSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn templates_get_pod_spec_defaults_but_not_pod_admission() {
        let mut t = template(json!({"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]}}));
        default_template(&mut t);
        let spec = t.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"));
        assert_eq!(
            spec.containers[0].image_pull_policy.as_deref(),
            Some("IfNotPresent")
        );
        assert!(spec.service_account_name.is_none());
        assert!(spec.tolerations.is_none());
        assert!(spec.enable_service_links.is_none());
    }

    #[test]
    fn controller_templates_must_restart_always() {
        let t = template(json!({"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox"}]}}));
        let errs: Vec<String> = validate_controller_template(&t, "spec.template", "ReplicaSet")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errs,
            vec![
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""
            ]
        );
        assert_eq!(
            selector_mismatch(
                "spec.template",
                &template(json!({"metadata": {"labels": {"app": "web", "tier": "fe"}}}))
            )
            .to_string(),
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\", \"tier\":\"fe\"}: `selector` does not match template `labels`"
        );
    }
}
