//! Strategies for a namespace's resource policies: LimitRange (defaults and
//! bounds for containers and pods) and ResourceQuota (totals, with the
//! status the resourcequota controller keeps). Their rules live in
//! `kubelab_rules::{limit_range, resource_quota}`.

use k8s_openapi::api::core::v1::{LimitRange, ResourceQuota};
use serde_json::Value;

use super::KindSpec;
use super::table::{Column, age, age_col, col, name_col};
use crate::status::FieldError;
use kubelab_rules::limit_range;

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Value {
    meta.name.clone().unwrap_or_default().into()
}

const LIMIT_TYPES: [&str; 3] = ["Container", "Pod", "PersistentVolumeClaim"];

impl KindSpec for LimitRange {
    const SHORT_NAMES: &'static [&'static str] = &["limits"];

    /// `SetDefaults_LimitRangeItem`.
    fn prepare_create(&mut self) {
        for item in self.spec.iter_mut().flat_map(|s| s.limits.iter_mut()) {
            limit_range::default_item(item);
        }
    }

    fn prepare_update(&mut self, _old: &Self) {
        self.prepare_create();
    }

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        for (i, item) in self.spec.iter().flat_map(|s| s.limits.iter()).enumerate() {
            if !LIMIT_TYPES.contains(&item.type_.as_str()) {
                errs.push(FieldError::not_supported(
                    format!("spec.limits[{i}].type"),
                    &item.type_,
                    &LIMIT_TYPES,
                ));
            }
        }
        for (field, value, detail) in limit_range::validate(self) {
            errs.push(FieldError::invalid(field, &value, detail));
        }
        errs
    }

    fn columns() -> Vec<Column> {
        vec![name_col(), col("Created At", "date", 0)]
    }

    fn cells(&self, _now: jiff::Timestamp) -> Vec<Value> {
        let created = self
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        vec![name_of(&self.metadata), created.into()]
    }
}

impl KindSpec for ResourceQuota {
    const SHORT_NAMES: &'static [&'static str] = &["quota"];
    const HAS_STATUS: bool = true;

    /// The status is the controller's: a new quota starts without one.
    fn prepare_create(&mut self) {
        self.status = None;
    }

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        for (k, v) in self.spec.iter().flat_map(|s| s.hard.iter().flatten()) {
            match kubelab_rules::quantity::nano_value(v) {
                Ok(n) if n < 0 => errs.push(FieldError::invalid(
                    format!("spec.hard[{k}]"),
                    &v.0,
                    "must be greater than or equal to 0",
                )),
                Ok(_) => {}
                Err(e) => errs.push(FieldError::invalid(
                    format!("spec.hard[{k}]"),
                    &v.0,
                    e.to_string(),
                )),
            }
        }
        errs
    }

    fn columns() -> Vec<Column> {
        vec![
            name_col(),
            age_col(),
            col("Request", "string", 0),
            col("Limit", "string", 0),
        ]
    }

    /// `printResourceQuota`: `used/hard` per resource, limits apart.
    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        let status = self.status.clone().unwrap_or_default();
        let hard = status.hard.unwrap_or_default();
        let used = status.used.unwrap_or_default();
        let mut requests = Vec::new();
        let mut limits = Vec::new();
        for (k, h) in &hard {
            let u = used.get(k).map_or("0", |q| q.0.as_str());
            let cell = format!("{k}: {u}/{}", h.0);
            if k.starts_with("limits.") {
                limits.push(cell);
            } else {
                requests.push(cell);
            }
        }
        vec![
            name_of(&self.metadata),
            age(self.metadata.creation_timestamp.as_ref(), now),
            requests.join(", ").into(),
            limits.join(", ").into(),
        ]
    }
}
