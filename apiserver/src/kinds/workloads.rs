//! Replicated workloads: `apps/v1` ReplicaSet, Deployment, DaemonSet and
//! ControllerRevision, core `v1` ReplicationController. Defaults as
//! `SetDefaults_*` in `pkg/apis/apps/v1`, validation as
//! `pkg/apis/apps/validation`, columns as kubectl's printers.

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, DaemonSetUpdateStrategy, Deployment, DeploymentStrategy,
    ReplicaSet, RollingUpdateDaemonSet, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kubelab_rules::selector;
use serde_json::Value;

use super::KindSpec;
use super::pod_template::{
    container_cells, default_template, format_labels, selector_mismatch, template_labels,
    validate_controller_template,
};
use super::table::{Column, age, age_col, col, name_col, none_if_empty};
use super::validation::{
    go_int_or_string, go_label_selector, int_or_percent, nonnegative, percent,
};
use crate::status::FieldError;

pub(super) fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Value {
    meta.name.clone().unwrap_or_default().into()
}

/// `metav1.FormatLabelSelector`: the selector string, `<none>` when empty.
fn format_selector(s: &LabelSelector) -> Value {
    none_if_empty(selector::selector_string(s))
}

/// The selector and template checks apps/v1 controllers share
/// (`ValidateReplicaSetSpec` and friends): a selector is required, may not
/// be empty, must be valid and must select the template's labels.
pub(super) fn validate_selector_and_template(
    sel: &LabelSelector,
    template: &PodTemplateSpec,
    owner: &str,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if selector::is_empty(sel) {
        // apps/v1 decodes a missing selector and an empty one alike.
        errs.push(FieldError::required("spec.selector", ""));
        errs.push(selector_mismatch("spec.template", template));
    } else if let Err(e) = selector::validate(sel) {
        errs.push(FieldError::invalid_raw(
            "spec.selector",
            go_label_selector(sel),
            e.to_string(),
        ));
    } else if !selector::matches(sel, &template_labels(template)) {
        errs.push(selector_mismatch("spec.template", template));
    }
    errs.extend(validate_controller_template(
        template,
        "spec.template",
        owner,
    ));
    errs
}

/// What the apps/v1 controllers' specs share (`ValidateReplicaSetSpec`,
/// `ValidateDeploymentSpec`, `ValidateDaemonSetSpec`).
struct AppsSpec<'a> {
    /// The kind named in template errors.
    owner: &'a str,
    /// `None` where the kind has no replicas (DaemonSet).
    replicas: Option<i32>,
    min_ready_seconds: Option<i32>,
    selector: &'a LabelSelector,
    template: Option<&'a PodTemplateSpec>,
    revision_history_limit: Option<i32>,
}

impl AppsSpec<'_> {
    /// The shared checks; `old_selector` is the stored object's, on update.
    fn validate(&self, old_selector: Option<&LabelSelector>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Some(replicas) = self.replicas {
            errs.extend(nonnegative("spec.replicas", replicas.into()));
        }
        errs.extend(nonnegative(
            "spec.minReadySeconds",
            self.min_ready_seconds.unwrap_or(0).into(),
        ));
        match self.template {
            Some(t) => errs.extend(validate_selector_and_template(self.selector, t, self.owner)),
            None => errs.push(FieldError::required("spec.template", "")),
        }
        if let Some(limit) = self.revision_history_limit {
            errs.extend(nonnegative("spec.revisionHistoryLimit", limit.into()));
        }
        if let Some(old) = old_selector {
            errs.extend(immutable_selector(self.selector, old));
        }
        errs
    }
}

/// A strategy `type` among `supported`: `RollingUpdate` (its parameters
/// checked, defaulted when `rolling` is `None` unless `rolling_required`)
/// or `other` (`Recreate`, `OnDelete`), with what that one forbids.
fn validate_strategy(
    path: &str,
    type_: Option<&str>,
    rolling: Option<(Option<&IntOrString>, Option<&IntOrString>)>,
    rolling_required: bool,
    (other, other_errors): (&str, Vec<FieldError>),
    supported: &[&str],
) -> Vec<FieldError> {
    let rolling_path = format!("{path}.rollingUpdate");
    match type_.unwrap_or("") {
        t if t == other => other_errors,
        "RollingUpdate" => match rolling {
            None if rolling_required => vec![FieldError::required(rolling_path, "")],
            None => validate_rolling(&rolling_path, None, None),
            Some((max_unavailable, max_surge)) => {
                validate_rolling(&rolling_path, max_unavailable, max_surge)
            }
        },
        t => vec![FieldError::not_supported(
            format!("{path}.type"),
            t,
            supported,
        )],
    }
}

/// apps/v1 selectors never change after creation.
pub(super) fn immutable_selector(new: &LabelSelector, old: &LabelSelector) -> Option<FieldError> {
    (new != old).then(|| {
        FieldError::invalid_raw(
            "spec.selector",
            go_label_selector(new),
            "field is immutable",
        )
    })
}

fn int_value(v: &IntOrString) -> i64 {
    match v {
        IntOrString::Int(i) => i64::from(*i),
        IntOrString::String(s) => percent(s).unwrap_or(0),
    }
}

/// `ValidateRollingUpdateDeployment` / `ValidateRollingUpdateDaemonSet`.
fn validate_rolling(
    path: &str,
    max_unavailable: Option<&IntOrString>,
    max_surge: Option<&IntOrString>,
) -> Vec<FieldError> {
    let zero = IntOrString::Int(0);
    let mu = max_unavailable.unwrap_or(&zero);
    let ms = max_surge.unwrap_or(&zero);
    let mut errs = int_or_percent(&format!("{path}.maxUnavailable"), mu, true);
    errs.extend(int_or_percent(&format!("{path}.maxSurge"), ms, false));
    if int_value(mu) == 0 && int_value(ms) == 0 {
        errs.push(FieldError::invalid_raw(
            format!("{path}.maxUnavailable"),
            go_int_or_string(mu),
            "may not be 0 when `maxSurge` is 0",
        ));
    }
    errs
}

/// The workloads' `-o wide` columns after their own.
fn with_wide_columns(mut own: Vec<Column>) -> Vec<Column> {
    own.extend([
        col("Containers", "string", 1),
        col("Images", "string", 1),
        col("Selector", "string", 1),
    ]);
    own
}

/// The columns ReplicaSets and ReplicationControllers print.
fn replica_columns() -> Vec<Column> {
    with_wide_columns(vec![
        name_col(),
        col("Desired", "integer", 0),
        col("Current", "integer", 0),
        col("Ready", "integer", 0),
        age_col(),
    ])
}

/// A ReplicaSet's or ReplicationController's row: name, (desired,
/// current, ready), age, then `-o wide`'s containers, images, selector.
fn replica_cells(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    (desired, current, ready): (Option<i32>, i32, Option<i32>),
    template: Option<&PodTemplateSpec>,
    selector: Value,
    now: jiff::Timestamp,
) -> Vec<Value> {
    let (containers, images) = container_cells(&template.cloned().unwrap_or_default());
    vec![
        name_of(meta),
        desired.unwrap_or(0).into(),
        current.into(),
        ready.unwrap_or(0).into(),
        age(meta.creation_timestamp.as_ref(), now),
        containers,
        images,
        selector,
    ]
}

impl KindSpec for ReplicaSet {
    const SHORT_NAMES: &'static [&'static str] = &["rs"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const HAS_STATUS: bool = true;
    const HAS_SCALE: bool = true;
    const FIELDS: &'static [&'static str] = &["status.replicas"];

    fn prepare_create(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        spec.replicas.get_or_insert(1);
        if let Some(t) = &mut spec.template {
            default_template(t);
        }
        self.status = Some(Default::default());
    }

    fn prepare_update(&mut self, _old: &Self) {
        let status = self.status.take();
        self.prepare_create();
        self.status = status;
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let Some(spec) = &self.spec else {
            return vec![FieldError::required("spec", "")];
        };
        AppsSpec {
            owner: "ReplicaSet",
            replicas: Some(spec.replicas.unwrap_or(1)),
            min_ready_seconds: spec.min_ready_seconds,
            selector: &spec.selector,
            template: spec.template.as_ref(),
            revision_history_limit: None,
        }
        .validate(old.and_then(|o| o.spec.as_ref()).map(|s| &s.selector))
    }

    fn columns() -> Vec<Column> {
        replica_columns()
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let counts = (spec.replicas, status.replicas, status.ready_replicas);
        let selector = format_selector(&spec.selector);
        replica_cells(
            &self.metadata,
            counts,
            spec.template.as_ref(),
            selector,
            now,
        )
    }
}

impl KindSpec for ReplicationController {
    const SHORT_NAMES: &'static [&'static str] = &["rc"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const HAS_STATUS: bool = true;
    const HAS_SCALE: bool = true;
    const FIELDS: &'static [&'static str] = &["status.replicas"];

    /// `SetDefaults_ReplicationController`: selector and labels default to
    /// the template's labels.
    fn prepare_create(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        spec.replicas.get_or_insert(1);
        if let Some(t) = &mut spec.template {
            default_template(t);
            let labels = template_labels(t);
            if !labels.is_empty() {
                if spec.selector.as_ref().is_none_or(|s| s.is_empty()) {
                    spec.selector = Some(labels.clone());
                }
                if self.metadata.labels.as_ref().is_none_or(|l| l.is_empty()) {
                    self.metadata.labels = Some(labels);
                }
            }
        }
        if self.status.is_none() {
            self.status = Some(Default::default());
        }
    }

    fn prepare_update(&mut self, _old: &Self) {
        self.prepare_create();
    }

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let Some(spec) = &self.spec else {
            return vec![FieldError::required("spec", "")];
        };
        let mut errs = nonnegative(
            "spec.minReadySeconds",
            spec.min_ready_seconds.unwrap_or(0).into(),
        );
        let sel = spec.selector.clone().unwrap_or_default();
        if sel.is_empty() {
            errs.push(FieldError::required("spec.selector", ""));
        }
        errs.extend(nonnegative(
            "spec.replicas",
            spec.replicas.unwrap_or(1).into(),
        ));
        match &spec.template {
            Some(t) => {
                let labels = template_labels(t);
                if !sel.is_empty() && !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                    errs.push(selector_mismatch("spec.template", t));
                }
                errs.extend(validate_controller_template(
                    t,
                    "spec.template",
                    "ReplicationController",
                ));
            }
            None => errs.push(FieldError::required("spec.template", "")),
        }
        errs
    }

    fn columns() -> Vec<Column> {
        replica_columns()
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let counts = (spec.replicas, status.replicas, status.ready_replicas);
        let selector = format_labels(spec.selector.as_ref());
        replica_cells(
            &self.metadata,
            counts,
            spec.template.as_ref(),
            selector,
            now,
        )
    }
}

/// `SetDefaults_Deployment`'s strategy: RollingUpdate, 25% / 25%.
fn default_deployment_strategy(s: &mut DeploymentStrategy) {
    let type_ = s.type_.get_or_insert_with(|| "RollingUpdate".into());
    if type_ == "RollingUpdate" {
        let r = s
            .rolling_update
            .get_or_insert_with(RollingUpdateDeployment::default);
        r.max_unavailable
            .get_or_insert_with(|| IntOrString::String("25%".into()));
        r.max_surge
            .get_or_insert_with(|| IntOrString::String("25%".into()));
    }
}

impl KindSpec for Deployment {
    const SHORT_NAMES: &'static [&'static str] = &["deploy"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const HAS_STATUS: bool = true;
    const HAS_SCALE: bool = true;
    /// Annotations are copied to the ReplicaSets, so their changes are
    /// changes the controller must observe.
    const ANNOTATIONS_BUMP_GENERATION: bool = true;
    /// `deploymentStatusStrategy` keeps only spec and labels.
    const STATUS_UPDATES_ANNOTATIONS: bool = true;

    fn prepare_create(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        spec.replicas.get_or_insert(1);
        default_deployment_strategy(spec.strategy.get_or_insert_with(Default::default));
        spec.revision_history_limit.get_or_insert(10);
        spec.progress_deadline_seconds.get_or_insert(600);
        // A plain bool in Go, left out when false.
        if spec.paused == Some(false) {
            spec.paused = None;
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
        let mut errs = AppsSpec {
            owner: "ReplicaSet",
            replicas: Some(spec.replicas.unwrap_or(1)),
            min_ready_seconds: spec.min_ready_seconds,
            selector: &spec.selector,
            template: Some(&spec.template),
            revision_history_limit: spec.revision_history_limit,
        }
        .validate(old.and_then(|o| o.spec.as_ref()).map(|s| &s.selector));
        let strategy = spec.strategy.clone().unwrap_or_default();
        let recreate_forbids = strategy.rolling_update.as_ref().map(|_| {
            FieldError::forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            )
        });
        let rolling = strategy.rolling_update.as_ref();
        errs.extend(validate_strategy(
            "spec.strategy",
            strategy.type_.as_deref(),
            rolling.map(|r| (r.max_unavailable.as_ref(), r.max_surge.as_ref())),
            false,
            ("Recreate", recreate_forbids.into_iter().collect()),
            &["Recreate", "RollingUpdate"],
        ));
        if let Some(deadline) = spec.progress_deadline_seconds {
            errs.extend(nonnegative("spec.progressDeadlineSeconds", deadline.into()));
            if deadline <= spec.min_ready_seconds.unwrap_or(0) {
                errs.push(FieldError::invalid_raw(
                    "spec.progressDeadlineSeconds",
                    deadline.to_string(),
                    "must be greater than minReadySeconds",
                ));
            }
        }
        errs
    }

    fn columns() -> Vec<Column> {
        with_wide_columns(vec![
            name_col(),
            col("Ready", "string", 0),
            col("Up-to-date", "string", 0),
            col("Available", "string", 0),
            age_col(),
        ])
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
            status.updated_replicas.unwrap_or(0).into(),
            status.available_replicas.unwrap_or(0).into(),
            age(self.metadata.creation_timestamp.as_ref(), now),
            containers,
            images,
            selector::selector_string(&spec.selector).into(),
        ]
    }
}

/// `SetDefaults_DaemonSet`'s update strategy: RollingUpdate, one
/// unavailable at a time, no surge.
fn default_daemonset_strategy(s: &mut DaemonSetUpdateStrategy) {
    let type_ = s.type_.get_or_insert_with(|| "RollingUpdate".into());
    if type_ == "RollingUpdate" {
        let r = s
            .rolling_update
            .get_or_insert_with(RollingUpdateDaemonSet::default);
        r.max_unavailable.get_or_insert(IntOrString::Int(1));
        r.max_surge.get_or_insert(IntOrString::Int(0));
    }
}

impl KindSpec for DaemonSet {
    const SHORT_NAMES: &'static [&'static str] = &["ds"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const HAS_STATUS: bool = true;

    fn prepare_create(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        default_daemonset_strategy(spec.update_strategy.get_or_insert_with(Default::default));
        spec.revision_history_limit.get_or_insert(10);
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
        let mut errs = AppsSpec {
            owner: "DaemonSet",
            replicas: None,
            min_ready_seconds: spec.min_ready_seconds,
            selector: &spec.selector,
            template: Some(&spec.template),
            revision_history_limit: spec.revision_history_limit,
        }
        .validate(old.and_then(|o| o.spec.as_ref()).map(|s| &s.selector));
        let strategy = spec.update_strategy.clone().unwrap_or_default();
        let rolling = strategy.rolling_update.as_ref();
        errs.extend(validate_strategy(
            "spec.updateStrategy",
            strategy.type_.as_deref(),
            rolling.map(|r| (r.max_unavailable.as_ref(), r.max_surge.as_ref())),
            true,
            ("OnDelete", Vec::new()),
            &["RollingUpdate", "OnDelete"],
        ));
        errs
    }

    fn columns() -> Vec<Column> {
        with_wide_columns(vec![
            name_col(),
            col("Desired", "integer", 0),
            col("Current", "integer", 0),
            col("Ready", "integer", 0),
            col("Up-to-date", "integer", 0),
            col("Available", "integer", 0),
            col("Node Selector", "string", 0),
            age_col(),
        ])
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let (containers, images) = container_cells(&spec.template);
        let node_selector = spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.node_selector.clone());
        vec![
            name_of(&self.metadata),
            status.desired_number_scheduled.into(),
            status.current_number_scheduled.into(),
            status.number_ready.into(),
            status.updated_number_scheduled.unwrap_or(0).into(),
            status.number_available.unwrap_or(0).into(),
            format_labels(node_selector.as_ref()),
            age(self.metadata.creation_timestamp.as_ref(), now),
            containers,
            images,
            format_selector(&spec.selector),
        ]
    }
}

impl KindSpec for ControllerRevision {
    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = nonnegative("revision", self.revision);
        if let Some(old) = old {
            // Only the data is fixed: a controller renumbers the revision
            // it rolls back to (`ValidateControllerRevisionUpdate`).
            if old.data != self.data {
                errs.push(FieldError::forbidden("data", "field is immutable"));
            }
        }
        errs
    }

    fn columns() -> Vec<Column> {
        vec![
            name_col(),
            col("Controller", "string", 0),
            col("Revision", "integer", 0),
            age_col(),
        ]
    }

    /// The controller as `<kind>.<group>/<name>`, lower-cased kind.
    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        let controller = self
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true))
            .map(|r| {
                let group = r.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
                let kind = r.kind.to_lowercase();
                if group.is_empty() {
                    format!("{kind}/{}", r.name)
                } else {
                    format!("{kind}.{group}/{}", r.name)
                }
            })
            .unwrap_or_else(|| "<none>".into());
        vec![
            name_of(&self.metadata),
            controller.into(),
            self.revision.into(),
            age(self.metadata.creation_timestamp.as_ref(), now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(v: Value) -> Deployment {
        serde_json::from_value(v).unwrap()
    }

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    /// What `kubectl create deployment web --image=nginx` sends.
    fn created_by_kubectl() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "strategy": {},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]}}},
            "status": {}})
    }

    #[test]
    fn deployments_get_upstream_defaults() {
        let mut d = deployment(created_by_kubectl());
        d.prepare_create();
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.revision_history_limit, Some(10));
        assert_eq!(spec.progress_deadline_seconds, Some(600));
        let strategy = spec.strategy.as_ref().unwrap();
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
        let r = strategy.rolling_update.as_ref().unwrap();
        assert_eq!(r.max_surge, Some(IntOrString::String("25%".into())));
        assert_eq!(r.max_unavailable, Some(IntOrString::String("25%".into())));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Always"));
        assert_eq!(
            pod.containers[0].image_pull_policy.as_deref(),
            Some("Always")
        );
        assert!(
            d.validate(None).is_empty(),
            "{:?}",
            messages(&d.validate(None))
        );
    }

    #[test]
    fn selector_must_match_template_and_never_change() {
        let mut v = created_by_kubectl();
        v["spec"]["selector"]["matchLabels"]["app"] = "other".into();
        let mut d = deployment(v);
        d.prepare_create();
        assert_eq!(
            messages(&d.validate(None)),
            vec![
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`"
            ]
        );
        let mut old = deployment(created_by_kubectl());
        old.prepare_create();
        let mut new = old.clone();
        let spec = new.spec.as_mut().unwrap();
        spec.selector.match_labels =
            Some([("app".into(), "web".into()), ("tier".into(), "fe".into())].into());
        spec.template.metadata.as_mut().unwrap().labels = spec.selector.match_labels.clone();
        assert_eq!(
            messages(&new.validate(Some(&old))),
            vec![
                "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"tier\":\"fe\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
            ]
        );
        let mut missing = created_by_kubectl();
        missing["spec"].as_object_mut().unwrap().remove("selector");
        let mut d = deployment(missing);
        d.prepare_create();
        let errs = messages(&d.validate(None));
        assert_eq!(errs[0], "spec.selector: Required value");
    }

    #[test]
    fn rolling_update_bounds() {
        let mut v = created_by_kubectl();
        v["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}});
        let mut d = deployment(v);
        d.prepare_create();
        assert_eq!(
            messages(&d.validate(None)),
            vec![
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"0%\"}: may not be 0 when `maxSurge` is 0"
            ]
        );
        let mut v = created_by_kubectl();
        v["spec"]["strategy"] = json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}});
        let mut d = deployment(v);
        d.prepare_create();
        assert_eq!(
            messages(&d.validate(None))[0],
            "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"
        );
    }

    #[test]
    fn replication_controllers_default_selector_and_labels_from_the_template() {
        let mut rc: ReplicationController = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"replicas": 3, "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}))
        .unwrap();
        rc.prepare_create();
        let spec = rc.spec.as_ref().unwrap();
        assert_eq!(spec.selector, Some([("app".into(), "web".into())].into()));
        assert_eq!(rc.metadata.labels, spec.selector);
        assert!(rc.validate(None).is_empty());
    }

    #[test]
    fn tables_print_as_kubectl() {
        let now = jiff::Timestamp::now();
        let mut d = deployment(created_by_kubectl());
        d.prepare_create();
        d.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
            ready_replicas: Some(1),
            updated_replicas: Some(1),
            available_replicas: Some(1),
            ..Default::default()
        });
        let cells = d.cells(now);
        assert_eq!(cells[1], "1/1");
        assert_eq!(cells[2], 1);
        assert_eq!(cells[5], "nginx");
        assert_eq!(cells[7], "app=web");
        let ds: DaemonSet = serde_json::from_value(json!({"metadata": {"name": "agent"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}},
                    "spec": {"nodeSelector": {"disk": "ssd"}, "containers": [{"name": "a", "image": "busybox"}]}}}}))
        .unwrap();
        assert_eq!(ds.cells(now)[6], "disk=ssd");
        assert_eq!(DaemonSet::columns().len(), ds.cells(now).len());
        let cr: ControllerRevision = serde_json::from_value(json!({"metadata": {"name": "agent-5d4b",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "u", "controller": true}]},
            "revision": 2}))
        .unwrap();
        assert_eq!(cr.cells(now)[1], "daemonset.apps/agent");
    }
}
