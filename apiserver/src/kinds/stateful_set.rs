//! `apps/v1` StatefulSet: defaults as `SetDefaults_StatefulSet`, validation
//! as `ValidateStatefulSet`/`ValidateStatefulSetUpdate`, the scale
//! subresource, and kubectl's columns.

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use serde_json::Value;

use super::KindSpec;
use super::pod_template::{container_cells, default_template};
use super::table::{Column, age, age_col, col, name_col};
use super::validation::{int_or_percent, nonnegative};
use super::workloads::{immutable_selector, name_of, validate_selector_and_template};
use crate::status::FieldError;

const RETENTION: [&str; 2] = ["Retain", "Delete"];

impl KindSpec for StatefulSet {
    const SHORT_NAMES: &'static [&'static str] = &["sts"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const HAS_STATUS: bool = true;
    const HAS_SCALE: bool = true;

    fn prepare_create(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        spec.replicas.get_or_insert(1);
        spec.pod_management_policy
            .get_or_insert_with(|| "OrderedReady".into());
        let strategy = spec
            .update_strategy
            .get_or_insert_with(StatefulSetUpdateStrategy::default);
        let type_ = strategy.type_.get_or_insert_with(|| "RollingUpdate".into());
        if type_ == "RollingUpdate" {
            strategy
                .rolling_update
                .get_or_insert_with(RollingUpdateStatefulSetStrategy::default)
                .partition
                .get_or_insert(0);
        }
        spec.revision_history_limit.get_or_insert(10);
        let retention = spec
            .persistent_volume_claim_retention_policy
            .get_or_insert_with(StatefulSetPersistentVolumeClaimRetentionPolicy::default);
        retention
            .when_deleted
            .get_or_insert_with(|| "Retain".into());
        retention.when_scaled.get_or_insert_with(|| "Retain".into());
        for t in spec.volume_claim_templates.iter_mut().flatten() {
            let s = t.spec.get_or_insert_with(Default::default);
            s.volume_mode.get_or_insert_with(|| "Filesystem".into());
            t.status
                .get_or_insert_with(Default::default)
                .phase
                .get_or_insert_with(|| "Pending".into());
        }
        default_template(&mut spec.template);
        if self.status.is_none() {
            self.status = Some(Default::default());
        }
    }

    fn prepare_update(&mut self, _old: &Self) {
        self.prepare_create();
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let Some(spec) = &self.spec else {
            return vec![FieldError::required("spec", "")];
        };
        let mut errs = Vec::new();
        match spec.pod_management_policy.as_deref().unwrap_or("") {
            "OrderedReady" | "Parallel" => {}
            other => errs.push(FieldError::invalid(
                "spec.podManagementPolicy",
                other,
                "must be 'OrderedReady' or 'Parallel'",
            )),
        }
        let strategy = spec.update_strategy.clone().unwrap_or_default();
        match strategy.type_.as_deref().unwrap_or("") {
            "RollingUpdate" => {
                if let Some(r) = &strategy.rolling_update {
                    errs.extend(nonnegative(
                        "spec.updateStrategy.rollingUpdate.partition",
                        r.partition.unwrap_or(0).into(),
                    ));
                    if let Some(mu) = &r.max_unavailable {
                        errs.extend(int_or_percent(
                            "spec.updateStrategy.rollingUpdate.maxUnavailable",
                            mu,
                            true,
                        ));
                        if is_zero(mu) {
                            errs.push(FieldError::invalid_raw(
                                "spec.updateStrategy.rollingUpdate.maxUnavailable",
                                super::validation::go_int_or_string(mu),
                                "must be greater than 0",
                            ));
                        }
                    }
                }
            }
            "OnDelete" => {
                if strategy.rolling_update.is_some() {
                    errs.push(FieldError::invalid_raw(
                        "spec.updateStrategy.rollingUpdate",
                        "",
                        "only allowed for updateStrategy 'RollingUpdate'",
                    ));
                }
            }
            other => errs.push(FieldError::invalid(
                "spec.updateStrategy",
                other,
                "must be 'RollingUpdate' or 'OnDelete'",
            )),
        }
        if let Some(p) = &spec.persistent_volume_claim_retention_policy {
            for (field, v) in [
                ("whenDeleted", p.when_deleted.as_deref()),
                ("whenScaled", p.when_scaled.as_deref()),
            ] {
                let v = v.unwrap_or("");
                if !RETENTION.contains(&v) {
                    errs.push(FieldError::not_supported(
                        format!("spec.persistentVolumeClaimRetentionPolicy.{field}"),
                        v,
                        &RETENTION,
                    ));
                }
            }
        }
        errs.extend(nonnegative(
            "spec.replicas",
            spec.replicas.unwrap_or(1).into(),
        ));
        errs.extend(nonnegative(
            "spec.minReadySeconds",
            spec.min_ready_seconds.unwrap_or(0).into(),
        ));
        if let Some(o) = &spec.ordinals {
            errs.extend(nonnegative(
                "spec.ordinals.start",
                o.start.unwrap_or(0).into(),
            ));
        }
        if let Some(limit) = spec.revision_history_limit {
            errs.extend(nonnegative("spec.revisionHistoryLimit", limit.into()));
        }
        for (i, t) in spec.volume_claim_templates.iter().flatten().enumerate() {
            errs.extend(claim_template_errors(i, t));
        }
        errs.extend(validate_selector_and_template(
            &spec.selector,
            &spec.template,
            "StatefulSet",
        ));
        if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
            errs.extend(immutable_selector(&spec.selector, &old_spec.selector));
            // Only these fields may change (`ValidateStatefulSetUpdate`).
            let mut a = spec.clone();
            let b = old_spec;
            a.replicas = b.replicas;
            a.ordinals = b.ordinals.clone();
            a.template = b.template.clone();
            a.update_strategy = b.update_strategy.clone();
            a.persistent_volume_claim_retention_policy =
                b.persistent_volume_claim_retention_policy.clone();
            a.min_ready_seconds = b.min_ready_seconds;
            a.revision_history_limit = b.revision_history_limit;
            a.selector = b.selector.clone();
            if &a != b {
                errs.push(FieldError::forbidden(
                    "spec",
                    "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                ));
            }
        }
        errs
    }

    fn columns() -> Vec<Column> {
        vec![
            name_col(),
            col("Ready", "string", 0),
            age_col(),
            col("Containers", "string", 1),
            col("Images", "string", 1),
        ]
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let (containers, images) = container_cells(&spec.template);
        vec![
            name_of(&self.metadata),
            format!(
                "{}/{}",
                status.ready_replicas.unwrap_or(0),
                spec.replicas.unwrap_or(0)
            )
            .into(),
            age(self.metadata.creation_timestamp.as_ref(), now),
            containers,
            images,
        ]
    }
}

fn is_zero(v: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString) -> bool {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match v {
        IntOrString::Int(i) => *i == 0,
        IntOrString::String(s) => super::validation::percent(s) == Some(0),
    }
}

/// A volumeClaimTemplate is validated as a claim of that name would be.
fn claim_template_errors(i: usize, t: &PersistentVolumeClaim) -> Vec<FieldError> {
    let prefix = format!("spec.volumeClaimTemplates[{i}]");
    let mut errs = Vec::new();
    match t.metadata.name.as_deref() {
        None | Some("") => errs.push(FieldError::required(
            format!("{prefix}.metadata.name"),
            "name or generateName is required",
        )),
        Some(n) => errs.extend(super::validation::dns1123_subdomain(
            &format!("{prefix}.metadata.name"),
            n,
        )),
    }
    errs.extend(KindSpec::validate(t, None).into_iter().map(|mut e| {
        e.field = format!("{prefix}.{}", e.field);
        e
    }));
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sts(v: Value) -> StatefulSet {
        let mut s: StatefulSet = serde_json::from_value(v).unwrap();
        s.prepare_create();
        s
    }

    fn web() -> Value {
        json!({"metadata": {"name": "web"},
            "spec": {"serviceName": "nginx", "replicas": 3, "selector": {"matchLabels": {"app": "nginx"}},
                "template": {"metadata": {"labels": {"app": "nginx"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "www"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}})
    }

    #[test]
    fn defaults_and_validation_follow_upstream() {
        let s = sts(web());
        let spec = s.spec.as_ref().unwrap();
        assert_eq!(spec.pod_management_policy.as_deref(), Some("OrderedReady"));
        let u = spec.update_strategy.as_ref().unwrap();
        assert_eq!(u.type_.as_deref(), Some("RollingUpdate"));
        assert_eq!(u.rolling_update.as_ref().unwrap().partition, Some(0));
        let r = spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .unwrap();
        assert_eq!(r.when_deleted.as_deref(), Some("Retain"));
        assert!(s.validate(None).is_empty(), "{:?}", s.validate(None));

        let mut bad = web();
        bad["spec"]["podManagementPolicy"] = "Random".into();
        bad["spec"]["updateStrategy"] =
            json!({"type": "OnDelete", "rollingUpdate": {"partition": 1}});
        bad["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] = json!([]);
        let errs: Vec<String> = sts(bad)
            .validate(None)
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            errs,
            [
                "spec.podManagementPolicy: Invalid value: \"Random\": must be 'OrderedReady' or 'Parallel'",
                "spec.updateStrategy.rollingUpdate: Invalid value: : only allowed for updateStrategy 'RollingUpdate'",
                "spec.volumeClaimTemplates[0].spec.accessModes: Required value: at least 1 access mode is required",
            ]
        );

        let old = sts(web());
        let mut new = old.clone();
        new.spec.as_mut().unwrap().service_name = Some("other".into());
        let errs: Vec<String> = new
            .validate(Some(&old))
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert!(
            errs[0].starts_with(
                "spec: Forbidden: updates to statefulset spec for fields other than 'replicas'"
            ),
            "{errs:?}"
        );
        let mut scaled = old.clone();
        scaled.spec.as_mut().unwrap().replicas = Some(5);
        assert!(scaled.validate(Some(&old)).is_empty());
    }
}
