//! PriorityClass (`scheduling.k8s.io/v1`): a name for a pod priority,
//! resolved into `spec.priority` when a pod is admitted. Validation and
//! columns as kube-apiserver's (`kubectl get priorityclass`).

use k8s_openapi::api::scheduling::v1::PriorityClass;
use serde_json::Value;

use super::KindSpec;
use super::table::{Column, age, age_col, col, name_col};
use crate::status::FieldError;

/// The highest value a user-defined class may have (`HighestUserDefinablePriority`).
pub const HIGHEST_USER_DEFINABLE_PRIORITY: i32 = 1_000_000_000;
/// The classes every cluster has, and their values.
pub const SYSTEM_PRIORITY_CLASSES: [(&str, i32, &str); 2] = [
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

impl KindSpec for PriorityClass {
    const SHORT_NAMES: &'static [&'static str] = &["pc"];

    fn prepare_create(&mut self) {
        self.preemption_policy
            .get_or_insert_with(|| "PreemptLowerPriority".into());
    }

    fn prepare_update(&mut self, _old: &Self) {
        self.preemption_policy
            .get_or_insert_with(|| "PreemptLowerPriority".into());
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let name = self.metadata.name.as_deref().unwrap_or_default();
        let system = SYSTEM_PRIORITY_CLASSES.iter().find(|(n, _, _)| *n == name);
        match system {
            Some((_, value, _)) if self.value != *value => errs.push(FieldError::forbidden(
                "metadata.name",
                format!("{name:?} is a reserved name: its value must be {value}"),
            )),
            Some(_) => {}
            None if name.starts_with("system-") => errs.push(FieldError::forbidden(
                "metadata.name",
                "priority class names with 'system-' prefix are reserved",
            )),
            None if self.value > HIGHEST_USER_DEFINABLE_PRIORITY => {
                errs.push(FieldError::forbidden(
                    "value",
                    format!(
                        "maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}"
                    ),
                ))
            }
            None => {}
        }
        if let Some(p) = &self.preemption_policy
            && !["PreemptLowerPriority", "Never"].contains(&p.as_str())
        {
            errs.push(FieldError::not_supported(
                "preemptionPolicy",
                p,
                &["Never", "PreemptLowerPriority"],
            ));
        }
        if let Some(old) = old {
            if old.value != self.value {
                errs.push(FieldError::forbidden(
                    "value",
                    "may not be changed in an update.",
                ));
            }
            if old.preemption_policy != self.preemption_policy {
                errs.push(FieldError::invalid(
                    "preemptionPolicy",
                    self.preemption_policy.as_deref().unwrap_or_default(),
                    "field is immutable",
                ));
            }
        }
        errs
    }

    fn columns() -> Vec<Column> {
        vec![
            name_col(),
            col("Value", "integer", 0),
            col("Global-Default", "boolean", 0),
            age_col(),
            col("PreemptionPolicy", "string", 0),
        ]
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            self.metadata.name.clone().unwrap_or_default().into(),
            self.value.into(),
            self.global_default.unwrap_or(false).into(),
            age(self.metadata.creation_timestamp.as_ref(), now),
            self.preemption_policy
                .clone()
                .unwrap_or_else(|| "PreemptLowerPriority".into())
                .into(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn class(name: &str, value: i32) -> PriorityClass {
        PriorityClass {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            value,
            ..Default::default()
        }
    }

    #[test]
    fn user_classes_stay_below_the_system_ones() {
        assert!(class("high", 1_000_000).validate(None).is_empty());
        let errs = class("huge", 2_000_000_000).validate(None);
        assert_eq!(errs[0].field, "value");
        assert!(!class("system-mine", 5).validate(None).is_empty());
        assert!(
            class("system-node-critical", 2_000_001_000)
                .validate(None)
                .is_empty()
        );
        let old = class("high", 1_000_000);
        assert!(!class("high", 7).validate(Some(&old)).is_empty());
    }
}
