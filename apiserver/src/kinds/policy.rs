//! `policy/v1` PodDisruptionBudget: validation as
//! `pkg/apis/policy/validation`, a fresh status on create as its strategy
//! sets it, and the columns `kubectl get pdb` prints.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kubelab_rules::selector;
use serde_json::Value;

use super::KindSpec;
use super::table::{Column, age, age_col, col, name_col};
use super::validation::{go_label_selector, int_or_percent};
use crate::status::FieldError;

/// `spec.unhealthyPodEvictionPolicy` values.
pub const UNHEALTHY_POD_EVICTION_POLICIES: [&str; 2] = ["AlwaysAllow", "IfHealthyBudget"];

/// The condition type the disruption controller and evictions keep.
pub const DISRUPTION_ALLOWED: &str = "DisruptionAllowed";
pub const SUFFICIENT_PODS: &str = "SufficientPods";
pub const INSUFFICIENT_PODS: &str = "InsufficientPods";
pub const SYNC_FAILED: &str = "SyncFailed";

/// `apimeta.SetStatusCondition` for `DisruptionAllowed`: the transition
/// time moves only when the status does.
pub fn set_disruption_allowed(
    status: &mut PodDisruptionBudgetStatus,
    allowed: bool,
    reason: &str,
    message: String,
    now: jiff::Timestamp,
) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let value = if allowed { "True" } else { "False" };
    let existing = conditions
        .iter_mut()
        .find(|c| c.type_ == DISRUPTION_ALLOWED);
    let transition = match &existing {
        Some(c) if c.status == value => c.last_transition_time.clone(),
        _ => Time(now),
    };
    let condition = Condition {
        type_: DISRUPTION_ALLOWED.into(),
        status: value.into(),
        reason: reason.into(),
        message,
        observed_generation: status.observed_generation,
        last_transition_time: transition,
    };
    match existing {
        Some(c) => *c = condition,
        None => conditions.push(condition),
    }
}

/// `UpdateDisruptionAllowedCondition`: the condition as the count says.
pub fn update_disruption_allowed(status: &mut PodDisruptionBudgetStatus, now: jiff::Timestamp) {
    let allowed = status.disruptions_allowed > 0;
    let reason = if allowed {
        SUFFICIENT_PODS
    } else {
        INSUFFICIENT_PODS
    };
    set_disruption_allowed(status, allowed, reason, String::new(), now);
}

fn int_or_string_text(v: Option<&IntOrString>) -> Value {
    match v {
        Some(IntOrString::Int(i)) => i.to_string().into(),
        Some(IntOrString::String(s)) => s.clone().into(),
        None => "N/A".into(),
    }
}

impl KindSpec for PodDisruptionBudget {
    const SHORT_NAMES: &'static [&'static str] = &["pdb"];
    const HAS_STATUS: bool = true;

    /// The disruption controller owns the status; a new budget starts
    /// with none of its own (`podDisruptionBudgetStrategy.PrepareForCreate`).
    fn prepare_create(&mut self) {
        self.status = Some(PodDisruptionBudgetStatus::default());
    }

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let Some(spec) = &self.spec else {
            return errs;
        };
        if spec.min_available.is_some() && spec.max_unavailable.is_some() {
            errs.push(FieldError::invalid_raw(
                "spec",
                "policy.PodDisruptionBudgetSpec{...}",
                "minAvailable and maxUnavailable cannot be both set",
            ));
        }
        if let Some(v) = &spec.min_available {
            errs.extend(int_or_percent("spec.minAvailable", v, true));
        }
        if let Some(v) = &spec.max_unavailable {
            errs.extend(int_or_percent("spec.maxUnavailable", v, true));
        }
        if let Some(sel) = &spec.selector
            && let Err(e) = selector::validate(sel)
        {
            errs.push(FieldError::invalid_raw(
                "spec.selector",
                go_label_selector(sel),
                e.to_string(),
            ));
        }
        if let Some(p) = spec.unhealthy_pod_eviction_policy.as_deref()
            && !UNHEALTHY_POD_EVICTION_POLICIES.contains(&p)
        {
            errs.push(FieldError::not_supported(
                "spec.unhealthyPodEvictionPolicy",
                p,
                &UNHEALTHY_POD_EVICTION_POLICIES,
            ));
        }
        errs
    }

    fn columns() -> Vec<Column> {
        vec![
            name_col(),
            col("Min Available", "string", 0),
            col("Max Unavailable", "string", 0),
            col("Allowed Disruptions", "integer", 0),
            age_col(),
        ]
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        vec![
            self.metadata.name.clone().unwrap_or_default().into(),
            int_or_string_text(spec.min_available.as_ref()),
            int_or_string_text(spec.max_unavailable.as_ref()),
            self.status
                .as_ref()
                .map_or(0, |s| s.disruptions_allowed)
                .into(),
            age(self.metadata.creation_timestamp.as_ref(), now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;

    fn pdb(min: Option<IntOrString>, max: Option<IntOrString>) -> PodDisruptionBudget {
        PodDisruptionBudget {
            spec: Some(PodDisruptionBudgetSpec {
                min_available: min,
                max_unavailable: max,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert!(
            pdb(Some(IntOrString::Int(2)), None)
                .validate(None)
                .is_empty()
        );
        let both = pdb(
            Some(IntOrString::Int(2)),
            Some(IntOrString::String("10%".into())),
        );
        assert!(
            both.validate(None)[0]
                .to_string()
                .ends_with("minAvailable and maxUnavailable cannot be both set")
        );
        let errs = pdb(Some(IntOrString::String("120%".into())), None).validate(None);
        assert_eq!(errs[0].field, "spec.minAvailable");
        let mut bad = pdb(None, Some(IntOrString::Int(-1)));
        bad.spec.as_mut().unwrap().unhealthy_pod_eviction_policy = Some("Sometimes".into());
        let fields: Vec<_> = bad.validate(None).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            ["spec.maxUnavailable", "spec.unhealthyPodEvictionPolicy"]
        );
    }

    #[test]
    fn cells_print_n_a_for_the_unset_bound() {
        let mut p = pdb(Some(IntOrString::String("50%".into())), None);
        p.status = Some(PodDisruptionBudgetStatus {
            disruptions_allowed: 1,
            ..Default::default()
        });
        let cells = p.cells(jiff::Timestamp::now());
        assert_eq!(cells[1], "50%");
        assert_eq!(cells[2], "N/A");
        assert_eq!(cells[3], 1);
    }
}
