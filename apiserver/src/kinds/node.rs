//! RuntimeClass (`node.k8s.io/v1`): a name for a container runtime
//! configuration; a node maps its `handler` to one of its runtimes, and the
//! RuntimeClass admission plugin adds its overhead and scheduling to pods
//! that name it. Validation (`ValidateRuntimeClass`: handler, overhead,
//! scheduling) and columns as kube-apiserver's.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::api::node::v1::{Overhead, RuntimeClass, Scheduling};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kubelab_rules::selector::{label_value_errors, qualified_name_errors};
use kubelab_rules::taints::{NO_EXECUTE, NO_SCHEDULE, PREFER_NO_SCHEDULE};
use serde_json::Value;

use super::KindSpec;
use super::table::{Column, age, age_col, col, name_col};
use crate::status::{FieldError, FieldErrorKind};

impl KindSpec for RuntimeClass {
    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        // `handler` is a DNS label, and fixed once set.
        let mut errs = super::validation::dns1123_label("handler", &self.handler);
        if let Some(old) = old
            && old.handler != self.handler
        {
            errs.push(FieldError::invalid(
                "handler",
                &self.handler,
                "field is immutable",
            ));
        }
        if let Some(overhead) = &self.overhead {
            errs.extend(validate_overhead(overhead, "overhead"));
        }
        if let Some(scheduling) = &self.scheduling {
            errs.extend(validate_scheduling(scheduling, "scheduling"));
        }
        errs
    }

    fn columns() -> Vec<Column> {
        vec![name_col(), col("Handler", "string", 0), age_col()]
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            self.metadata.name.clone().unwrap_or_default().into(),
            self.handler.clone().into(),
            age(self.metadata.creation_timestamp.as_ref(), now),
        ]
    }
}

/// `validateOverhead`: `podFixed` checked as a container's limits
/// (`ValidateResourceRequirements`): resource names a container may
/// have, amounts that are quantities and not negative, whole numbers of
/// extended resources, and hugepages only beside cpu or memory.
fn validate_overhead(overhead: &Overhead, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let fixed: BTreeMap<String, Quantity> = overhead.pod_fixed.clone().unwrap_or_default();
    for (name, amount) in &fixed {
        let field = format!("{path}.limits[{name}]");
        errs.extend(container_resource_name(&field, name));
        if let Err(why) = kubelab_rules::validation::resource_amount(amount) {
            errs.push(FieldError::invalid(&field, &amount.0, why));
        } else if is_extended_resource(name)
            && kubelab_rules::quantity::nano_value(amount).is_ok_and(|n| n % 1_000_000_000 != 0)
        {
            errs.push(FieldError::invalid(&field, &amount.0, "must be an integer"));
        }
    }
    let has_cpu_or_memory = fixed.contains_key("cpu") || fixed.contains_key("memory");
    if !has_cpu_or_memory && fixed.keys().any(|n| n.starts_with("hugepages-")) {
        errs.push(FieldError::forbidden(
            path,
            "HugePages require cpu or memory",
        ));
    }
    errs
}

/// Resource names every kind of object may use (`IsStandardResourceName`).
const STANDARD_RESOURCES: &[&str] = &[
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "storage",
    "requests.storage",
    "services.nodeports",
    "services.loadbalancers",
];

/// `validateContainerResourceName`.
fn container_resource_name(field: &str, name: &str) -> Vec<FieldError> {
    let errs: Vec<FieldError> = qualified_name_errors(name)
        .into_iter()
        .map(|why| FieldError::invalid(field, name, why))
        .collect();
    if !errs.is_empty() {
        return errs;
    }
    let hugepages = name.starts_with("hugepages-");
    if !name.contains('/') {
        if !STANDARD_RESOURCES.contains(&name) && !hugepages {
            return vec![FieldError::invalid(
                field,
                name,
                "must be a standard resource type or fully qualified",
            )];
        }
        if !matches!(name, "cpu" | "memory" | "ephemeral-storage") && !hugepages {
            return vec![FieldError::invalid(
                field,
                name,
                "must be a standard resource for containers",
            )];
        }
    } else if !is_native_resource(name) && !is_extended_resource(name) {
        return vec![FieldError::invalid(
            field,
            name,
            "doesn't follow extended resource name standard",
        )];
    }
    Vec::new()
}

/// `IsNativeResource`: unprefixed, or in the kubernetes.io domain.
fn is_native_resource(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

/// `IsExtendedResourceName`: a domain-prefixed name outside kubernetes.io
/// that also makes a valid quota name (`requests.<name>`).
fn is_extended_resource(name: &str) -> bool {
    !is_native_resource(name)
        && !name.starts_with("requests.")
        && qualified_name_errors(&format!("requests.{name}")).is_empty()
}

/// `validateScheduling`: the node selector as labels, the tolerations as
/// a pod's, and no toleration twice.
fn validate_scheduling(scheduling: &Scheduling, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(selector) = &scheduling.node_selector {
        let field = format!("{path}.nodeSelector");
        for (key, value) in selector {
            for why in qualified_name_errors(key) {
                errs.push(FieldError::invalid(&field, key, why));
            }
            for why in label_value_errors(value) {
                errs.push(FieldError::invalid(&field, value, why));
            }
        }
    }
    let tolerations = scheduling.tolerations.as_deref().unwrap_or_default();
    let field = format!("{path}.tolerations");
    errs.extend(validate_tolerations(tolerations, &field));
    let mut seen = BTreeSet::new();
    for (i, t) in tolerations.iter().enumerate() {
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        let list_key = (s(&t.key), s(&t.operator), s(&t.value), s(&t.effect));
        if !seen.insert(list_key) {
            errs.push(FieldError {
                field: format!("{field}[{i}]"),
                kind: FieldErrorKind::Duplicate(go_toleration(t)),
                detail: String::new(),
            });
        }
    }
    errs
}

/// `ValidateTolerations`, with paths under `path`.
pub fn validate_tolerations(tolerations: &[Toleration], path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, t) in tolerations.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let key = t.key.as_deref().unwrap_or_default();
        let operator = t.operator.as_deref().unwrap_or_default();
        let value = t.value.as_deref().unwrap_or_default();
        let effect = t.effect.as_deref().unwrap_or_default();
        if !key.is_empty() {
            for why in qualified_name_errors(key) {
                errs.push(FieldError::invalid(format!("{at}.key"), key, why));
            }
        }
        // An empty key with Exists (and no value) matches every taint.
        if key.is_empty() && operator != "Exists" {
            errs.push(FieldError::invalid(
                format!("{at}.operator"),
                operator,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if t.toleration_seconds.is_some() && effect != NO_EXECUTE {
            errs.push(FieldError::invalid(
                format!("{at}.effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match operator {
            "" | "Equal" => {
                let why = label_value_errors(value);
                if !why.is_empty() {
                    errs.push(FieldError::invalid(
                        format!("{at}.operator"),
                        value,
                        why.join(";"),
                    ));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    errs.push(FieldError::invalid_raw(
                        format!("{at}.operator"),
                        go_toleration(t),
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                format!("{at}.operator"),
                other,
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() && ![NO_SCHEDULE, PREFER_NO_SCHEDULE, NO_EXECUTE].contains(&effect) {
            errs.push(FieldError::not_supported(
                format!("{at}.effect"),
                effect,
                &[NO_SCHEDULE, PREFER_NO_SCHEDULE, NO_EXECUTE],
            ));
        }
    }
    errs
}

/// A toleration as Go's `%#v` prints kube-apiserver's internal one.
fn go_toleration(t: &Toleration) -> String {
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    let seconds = match t.toleration_seconds {
        Some(n) => format!("(*int64)({n})"),
        None => "(*int64)(nil)".into(),
    };
    format!(
        "core.Toleration{{Key:{:?}, Operator:{:?}, Value:{:?}, Effect:{:?}, TolerationSeconds:{seconds}}}",
        s(&t.key),
        s(&t.operator),
        s(&t.value),
        s(&t.effect)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn class(handler: &str) -> RuntimeClass {
        RuntimeClass {
            metadata: ObjectMeta {
                name: Some("sandboxed".into()),
                ..Default::default()
            },
            handler: handler.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_handler_is_a_dns_label_that_never_changes() {
        assert!(class("runc").validate(None).is_empty());
        let errs = class("Not_A_Label").validate(None);
        assert_eq!(errs[0].field, "handler");
        let errs = class("kata").validate(Some(&class("runc")));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "handler");
    }

    fn messages(rc: &RuntimeClass) -> Vec<String> {
        rc.validate(None).iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn overhead_is_checked_as_container_limits() {
        let with = |pairs: &[(&str, &str)]| RuntimeClass {
            overhead: Some(Overhead {
                pod_fixed: Some(
                    pairs
                        .iter()
                        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                        .collect(),
                ),
            }),
            ..class("runc")
        };
        assert!(messages(&with(&[("cpu", "250m"), ("memory", "120Mi")])).is_empty());
        assert!(messages(&with(&[("example.com/gpu", "1"), ("memory", "1Gi")])).is_empty());
        assert_eq!(
            messages(&with(&[("cpu", "-1")])),
            ["overhead.limits[cpu]: Invalid value: \"-1\": must be greater than or equal to 0"]
        );
        assert_eq!(
            messages(&with(&[("gpu", "1")])),
            [
                "overhead.limits[gpu]: Invalid value: \"gpu\": must be a standard resource type or fully qualified"
            ]
        );
        assert_eq!(
            messages(&with(&[("pods", "1")])),
            [
                "overhead.limits[pods]: Invalid value: \"pods\": must be a standard resource for containers"
            ]
        );
        assert_eq!(
            messages(&with(&[("example.com/gpu", "500m")])),
            ["overhead.limits[example.com/gpu]: Invalid value: \"500m\": must be an integer"]
        );
        assert_eq!(
            messages(&with(&[("hugepages-2Mi", "2Mi")])),
            ["overhead: Forbidden: HugePages require cpu or memory"]
        );
    }

    #[test]
    fn scheduling_needs_valid_labels_and_tolerations() {
        let with = |selector: &[(&str, &str)], tolerations: Vec<Toleration>| RuntimeClass {
            scheduling: Some(Scheduling {
                node_selector: Some(
                    selector
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                tolerations: Some(tolerations),
            }),
            ..class("runc")
        };
        let tol = |key: &str, op: &str, value: &str, effect: &str| Toleration {
            key: Some(key.into()),
            operator: Some(op.into()),
            value: Some(value.into()),
            effect: Some(effect.into()),
            ..Default::default()
        };
        assert!(
            messages(&with(
                &[("kubernetes.io/arch", "amd64")],
                vec![tol("sandboxed", "Exists", "", "NoSchedule")]
            ))
            .is_empty()
        );
        assert_eq!(
            messages(&with(&[("bad key!", "x")], vec![])),
            [
                "scheduling.nodeSelector: Invalid value: \"bad key!\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
            ]
        );
        assert_eq!(
            messages(&with(&[("zone", "-a")], vec![])),
            [
                "scheduling.nodeSelector: Invalid value: \"-a\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
            ]
        );
        assert_eq!(
            messages(&with(&[], vec![tol("", "Equal", "", "")])),
            [
                "scheduling.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\""
            ]
        );
        assert_eq!(
            messages(&with(&[], vec![tol("a", "Exists", "x", "")])),
            [
                "scheduling.tolerations[0].operator: Invalid value: core.Toleration{Key:\"a\", Operator:\"Exists\", Value:\"x\", Effect:\"\", TolerationSeconds:(*int64)(nil)}: value must be empty when `operator` is 'Exists'"
            ]
        );
        assert_eq!(
            messages(&with(&[], vec![tol("a", "Gt", "", "Sometimes")])),
            [
                "scheduling.tolerations[0].operator: Unsupported value: \"Gt\": supported values: \"Equal\", \"Exists\"",
                "scheduling.tolerations[0].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\""
            ]
        );
        let mut timed = tol("a", "Exists", "", "NoSchedule");
        timed.toleration_seconds = Some(30);
        assert_eq!(
            messages(&with(&[], vec![timed])),
            [
                "scheduling.tolerations[0].effect: Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set"
            ]
        );
        let twice = tol("a", "Exists", "", "NoSchedule");
        assert_eq!(
            messages(&with(&[], vec![twice.clone(), twice])),
            [
                "scheduling.tolerations[1]: Duplicate value: core.Toleration{Key:\"a\", Operator:\"Exists\", Value:\"\", Effect:\"NoSchedule\", TolerationSeconds:(*int64)(nil)}"
            ]
        );
    }
}
