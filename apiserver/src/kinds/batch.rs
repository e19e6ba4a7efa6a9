//! `batch/v1` Job and CronJob: defaults as `SetDefaults_Job` /
//! `SetDefaults_CronJob` and the Job strategy's generated selector,
//! validation as `pkg/apis/batch/validation`, columns as kubectl's
//! printers.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    CronJob, CronJobStatus, Job, JobSpec, JobStatus, JobTemplateSpec, PodFailurePolicy,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kubelab_rules::selector;
use serde_json::Value;

use super::KindSpec;
use super::pod::validate_pod_spec;
use super::pod_template::{container_cells, default_template, selector_mismatch, template_labels};
use super::table::{Column, age, age_col, col, human_duration, name_col, none_if_empty};
use super::validation::{go_label_selector, nonnegative};
use crate::cron_schedule::Schedule;
use crate::status::FieldError;

/// `batch.kubernetes.io/controller-uid`: the label the generated selector uses.
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// `batch.kubernetes.io/job-name`.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// The labels without prefix that pods of older releases carried and
/// still carry.
pub const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";
pub const LEGACY_JOB_NAME_LABEL: &str = "job-name";

/// `completionsSoftLimit` and `parallelismLimitForHighCompletions`.
const INDEXED_LIMIT: i32 = 100_000;
/// A CronJob's name plus `-<11 digits>` must stay a valid Job name.
const CRONJOB_NAME_MAX: usize = 52;

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Value {
    meta.name.clone().unwrap_or_default().into()
}

/// `SetDefaults_Job`'s spec part.
fn default_job_spec(spec: &mut JobSpec) {
    if spec.completions.is_none() && spec.parallelism.is_none() {
        spec.completions = Some(1);
    }
    spec.parallelism.get_or_insert(1);
    if spec.backoff_limit.is_none() {
        spec.backoff_limit = Some(if spec.backoff_limit_per_index.is_some() {
            i32::MAX
        } else {
            6
        });
    }
    spec.completion_mode
        .get_or_insert_with(|| "NonIndexed".into());
    spec.suspend.get_or_insert(false);
    spec.manual_selector.get_or_insert(false);
    spec.pod_replacement_policy.get_or_insert_with(|| {
        if spec.pod_failure_policy.is_some() {
            "Failed".into()
        } else {
            "TerminatingOrFailed".into()
        }
    });
    default_template(&mut spec.template);
}

/// `generateSelectorIfNeeded`: unless `manualSelector`, the pods carry the
/// Job's name and UID and the selector is the UID label.
fn generate_selector(spec: &mut JobSpec, name: &str, uid: &str) {
    if spec.manual_selector == Some(true) {
        return;
    }
    let labels = spec
        .template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(BTreeMap::new);
    for (k, v) in [
        (CONTROLLER_UID_LABEL, uid),
        (JOB_NAME_LABEL, name),
        (LEGACY_CONTROLLER_UID_LABEL, uid),
        (LEGACY_JOB_NAME_LABEL, name),
    ] {
        labels.entry(k.to_owned()).or_insert_with(|| v.to_owned());
    }
    let sel = spec.selector.get_or_insert_with(Default::default);
    sel.match_labels
        .get_or_insert_with(BTreeMap::new)
        .entry(CONTROLLER_UID_LABEL.to_owned())
        .or_insert_with(|| uid.to_owned());
}

fn failure_policy_errors(policy: &PodFailurePolicy, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, rule) in policy.rules.iter().enumerate() {
        let rule_path = format!("{path}.rules[{i}]");
        if !["FailJob", "FailIndex", "Ignore", "Count"].contains(&rule.action.as_str()) {
            errs.push(FieldError::not_supported(
                format!("{rule_path}.action"),
                &rule.action,
                &["Count", "FailIndex", "FailJob", "Ignore"],
            ));
        }
        match (&rule.on_exit_codes, &rule.on_pod_conditions) {
            (Some(_), Some(c)) if !c.is_empty() => errs.push(FieldError::invalid_raw(
                &rule_path,
                "",
                "specifying both OnExitCodes and OnPodConditions is not supported",
            )),
            (None, None) => errs.push(FieldError::invalid_raw(
                &rule_path,
                "",
                "specifying one of OnExitCodes and OnPodConditions is required",
            )),
            _ => {}
        }
        if let Some(codes) = &rule.on_exit_codes {
            let op = codes.operator.as_str();
            if !["In", "NotIn"].contains(&op) {
                errs.push(FieldError::not_supported(
                    format!("{rule_path}.onExitCodes.operator"),
                    op,
                    &["In", "NotIn"],
                ));
            }
            let values_path = format!("{rule_path}.onExitCodes.values");
            if codes.values.is_empty() {
                errs.push(FieldError::invalid_raw(
                    &values_path,
                    "[]int32{}",
                    "at least one value is required",
                ));
            }
            for (j, v) in codes.values.iter().enumerate() {
                if op == "In" && *v == 0 {
                    errs.push(FieldError::invalid_raw(
                        format!("{values_path}[{j}]"),
                        "0",
                        "must not be 0 for the In operator",
                    ));
                }
                if j > 0 && codes.values[j - 1] == *v {
                    errs.push(FieldError::duplicate(
                        format!("{values_path}[{j}]"),
                        &v.to_string(),
                    ));
                } else if j > 0 && codes.values[j - 1] > *v {
                    errs.push(FieldError::invalid_raw(
                        format!("{values_path}[{j}]"),
                        v.to_string(),
                        "must be ordered",
                    ));
                }
            }
        }
        for (j, c) in rule.on_pod_conditions.iter().flatten().enumerate() {
            let status = c.status.as_str();
            if !["True", "False", "Unknown"].contains(&status) {
                errs.push(FieldError::not_supported(
                    format!("{rule_path}.onPodConditions[{j}].status"),
                    status,
                    &["False", "True", "Unknown"],
                ));
            }
        }
    }
    errs
}

/// `validateJobSpec` (and `ValidateJobTemplateSpec`'s part of it) with
/// paths under `path`; `needs_selector` is false for a CronJob's template,
/// whose Jobs get their selector when they are created.
fn validate_job_spec(spec: &JobSpec, path: &str, needs_selector: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (field, v) in [
        ("parallelism", spec.parallelism.map(i64::from)),
        ("completions", spec.completions.map(i64::from)),
        ("activeDeadlineSeconds", spec.active_deadline_seconds),
        ("backoffLimit", spec.backoff_limit.map(i64::from)),
        (
            "ttlSecondsAfterFinished",
            spec.ttl_seconds_after_finished.map(i64::from),
        ),
    ] {
        if let Some(v) = v {
            errs.extend(nonnegative(&format!("{path}.{field}"), v));
        }
    }
    let mode = spec.completion_mode.as_deref().unwrap_or("NonIndexed");
    match mode {
        "NonIndexed" => {}
        "Indexed" => {
            match spec.completions {
                None => errs.push(FieldError::required(
                    format!("{path}.completions"),
                    "when completion mode is Indexed",
                )),
                Some(c) if c > INDEXED_LIMIT => errs.push(FieldError::invalid_raw(
                    format!("{path}.completions"),
                    c.to_string(),
                    format!(
                        "must be less than or equal to {INDEXED_LIMIT} when completion mode is Indexed"
                    ),
                )),
                _ => {}
            }
            if let Some(p) = spec.parallelism
                && p > INDEXED_LIMIT
            {
                errs.push(FieldError::invalid_raw(
                    format!("{path}.parallelism"),
                    p.to_string(),
                    format!(
                        "must be less than or equal to {INDEXED_LIMIT} when completion mode is Indexed"
                    ),
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            format!("{path}.completionMode"),
            other,
            &["NonIndexed", "Indexed"],
        )),
    }
    match &spec.selector {
        None if needs_selector => errs.push(FieldError::required(format!("{path}.selector"), "")),
        None => {}
        Some(sel) => {
            if let Err(e) = selector::validate(sel) {
                errs.push(FieldError::invalid_raw(
                    format!("{path}.selector"),
                    go_label_selector(sel),
                    e.to_string(),
                ));
            } else if !selector::is_empty(sel)
                && !selector::matches(sel, &template_labels(&spec.template))
            {
                errs.push(selector_mismatch(
                    &format!("{path}.template"),
                    &spec.template,
                ));
            }
        }
    }
    let template_spec = format!("{path}.template.spec");
    match &spec.template.spec {
        None => errs.push(FieldError::required(&template_spec, "")),
        Some(pod) => {
            errs.extend(validate_pod_spec(pod, &template_spec));
            let policy = pod.restart_policy.as_deref().unwrap_or("");
            if spec.pod_failure_policy.is_some() && policy != "Never" {
                errs.push(FieldError::invalid(
                    format!("{template_spec}.restartPolicy"),
                    policy,
                    "only \"Never\" is supported when podFailurePolicy is specified",
                ));
            } else if !["OnFailure", "Never"].contains(&policy) {
                errs.push(FieldError::not_supported(
                    format!("{template_spec}.restartPolicy"),
                    policy,
                    &["OnFailure", "Never"],
                ));
            }
        }
    }
    if let Some(p) = &spec.pod_failure_policy {
        errs.extend(failure_policy_errors(
            p,
            &format!("{path}.podFailurePolicy"),
        ));
    }
    errs.extend(index_policy_errors(spec, path, mode == "Indexed"));
    if let Some(m) = spec.managed_by.as_deref() {
        errs.extend(domain_prefixed_path(&format!("{path}.managedBy"), m));
    }
    if let Some(p) = spec.pod_replacement_policy.as_deref() {
        if !["TerminatingOrFailed", "Failed"].contains(&p) {
            errs.push(FieldError::not_supported(
                format!("{path}.podReplacementPolicy"),
                p,
                &["Failed", "TerminatingOrFailed"],
            ));
        } else if spec.pod_failure_policy.is_some() && p != "Failed" {
            errs.push(FieldError::not_supported(
                format!("{path}.podReplacementPolicy"),
                p,
                &["Failed"],
            ));
        }
    }
    errs
}

/// `backoffLimitPerIndex`, `maxFailedIndexes` and `successPolicy`: for
/// Indexed Jobs only, within the completions.
fn index_policy_errors(spec: &JobSpec, path: &str, indexed: bool) -> Vec<FieldError> {
    const INDEXED_ONLY: &str = "requires indexed completion mode";
    let mut errs = Vec::new();
    if let Some(b) = spec.backoff_limit_per_index {
        errs.extend(nonnegative(
            &format!("{path}.backoffLimitPerIndex"),
            b.into(),
        ));
        if !indexed {
            errs.push(FieldError::invalid_raw(
                format!("{path}.backoffLimitPerIndex"),
                b.to_string(),
                INDEXED_ONLY,
            ));
        }
    }
    if let Some(m) = spec.max_failed_indexes {
        let field = format!("{path}.maxFailedIndexes");
        errs.extend(nonnegative(&field, m.into()));
        if spec.backoff_limit_per_index.is_none() {
            errs.push(FieldError::required(
                format!("{path}.backoffLimitPerIndex"),
                "when maxFailedIndexes is specified",
            ));
        }
        if !indexed {
            errs.push(FieldError::invalid_raw(&field, m.to_string(), INDEXED_ONLY));
        } else if let Some(c) = spec.completions
            && m > c
        {
            errs.push(FieldError::invalid_raw(
                &field,
                m.to_string(),
                "must be less than or equal to completions",
            ));
        }
    }
    let Some(policy) = &spec.success_policy else {
        return errs;
    };
    if !indexed {
        errs.push(FieldError::invalid_raw(
            format!("{path}.successPolicy"),
            "batch.SuccessPolicy{...}",
            INDEXED_ONLY,
        ));
        return errs;
    }
    if policy.rules.is_empty() {
        errs.push(FieldError::required(
            format!("{path}.successPolicy.rules"),
            "at least one rules must be specified when the successPolicy is specified",
        ));
    }
    for (i, rule) in policy.rules.iter().enumerate() {
        let rule_path = format!("{path}.successPolicy.rules[{i}]");
        if rule.succeeded_count.is_none() && rule.succeeded_indexes.is_none() {
            errs.push(FieldError::required(
                &rule_path,
                "at least one of succeededCount or succeededIndexes must be specified",
            ));
        }
        if let Some(n) = rule.succeeded_count {
            let field = format!("{rule_path}.succeededCount");
            errs.extend(nonnegative(&field, n.into()));
            if let Some(c) = spec.completions
                && n > c
            {
                errs.push(FieldError::invalid_raw(
                    &field,
                    n.to_string(),
                    format!(
                        "must be less than or equal to {c} (the number of specified completions)"
                    ),
                ));
            }
        }
    }
    errs
}

/// `IsDomainPrefixedPath`: `<DNS subdomain>/<path>`.
fn domain_prefixed_path(field: &str, value: &str) -> Vec<FieldError> {
    match value.split_once('/') {
        Some((host, rest)) if !host.is_empty() && !rest.is_empty() => {
            crate::kinds::validation::dns1123_subdomain(field, host)
        }
        _ => vec![FieldError::invalid(
            field,
            value,
            "must be a domain-prefixed path (such as \"acme.io/foo\")",
        )],
    }
}

/// `ValidateGeneratedSelector`: without `manualSelector`, the selector
/// must be the one the server generated.
fn generated_selector_errors(job: &Job) -> Vec<FieldError> {
    let Some(spec) = &job.spec else {
        return Vec::new();
    };
    if spec.manual_selector == Some(true) {
        return Vec::new();
    }
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let want = LabelSelector {
        match_labels: Some([(CONTROLLER_UID_LABEL.to_owned(), uid.clone())].into()),
        match_expressions: None,
    };
    let mut errs = Vec::new();
    if let Some(sel) = &spec.selector
        && sel != &want
    {
        errs.push(FieldError::invalid_raw(
            "spec.selector",
            go_label_selector(sel),
            "`selector` not auto-generated",
        ));
    }
    if template_labels(&spec.template).get(CONTROLLER_UID_LABEL) != Some(&uid) {
        errs.push(FieldError::invalid_raw(
            format!("spec.template.metadata.labels[{CONTROLLER_UID_LABEL}]"),
            "",
            "must be '".to_owned() + &uid + "'",
        ));
    }
    errs
}

/// What the Job's conditions say, as kubectl's printer reads them.
fn has_condition(status: &JobStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.status == "True")
}

impl KindSpec for Job {
    const CATEGORIES: &'static [&'static str] = &["all"];
    const HAS_STATUS: bool = true;
    const FIELDS: &'static [&'static str] = &["status.successful"];

    fn prepare_create(&mut self) {
        let name = self.metadata.name.clone().unwrap_or_default();
        let uid = self.metadata.uid.clone().unwrap_or_default();
        let spec = self.spec.get_or_insert_with(Default::default);
        default_job_spec(spec);
        generate_selector(spec, &name, &uid);
        // `SetDefaults_Job`: a Job without labels takes its pods' labels.
        if self.metadata.labels.as_ref().is_none_or(|l| l.is_empty()) {
            self.metadata.labels = spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone());
        }
        self.status = Some(JobStatus::default());
    }

    fn prepare_update(&mut self, _old: &Self) {
        if let Some(spec) = &mut self.spec {
            default_job_spec(spec);
        }
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let Some(spec) = &self.spec else {
            return vec![FieldError::required("spec", "")];
        };
        let mut errs = validate_job_spec(spec, "spec", true);
        let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) else {
            errs.extend(generated_selector_errors(self));
            return errs;
        };
        if spec.selector != old_spec.selector {
            errs.push(FieldError::invalid_raw(
                "spec.selector",
                spec.selector
                    .as_ref()
                    .map(go_label_selector)
                    .unwrap_or_default(),
                "field is immutable",
            ));
        }
        if spec.template != old_spec.template {
            errs.push(FieldError::invalid_raw(
                "spec.template",
                "core.PodTemplateSpec{...}",
                "field is immutable",
            ));
        }
        if spec.completion_mode != old_spec.completion_mode {
            errs.push(FieldError::invalid(
                "spec.completionMode",
                spec.completion_mode.as_deref().unwrap_or(""),
                "field is immutable",
            ));
        }
        // Elastic Indexed Jobs may scale completions with parallelism.
        let elastic = spec.completion_mode.as_deref() == Some("Indexed")
            && spec.completions == spec.parallelism;
        if spec.completions != old_spec.completions && !elastic {
            errs.push(FieldError::invalid_raw(
                "spec.completions",
                spec.completions.map(|c| c.to_string()).unwrap_or_default(),
                "field is immutable",
            ));
        }
        if spec.managed_by != old_spec.managed_by {
            errs.push(FieldError::invalid_raw(
                "spec.managedBy",
                spec.managed_by
                    .as_ref()
                    .map_or("null".to_owned(), |m| format!("{m:?}")),
                "field is immutable",
            ));
        }
        if spec.pod_failure_policy != old_spec.pod_failure_policy {
            errs.push(FieldError::invalid_raw(
                "spec.podFailurePolicy",
                "",
                "field is immutable",
            ));
        }
        errs
    }

    fn columns() -> Vec<Column> {
        vec![
            name_col(),
            col("Status", "string", 0),
            col("Completions", "string", 0),
            col("Duration", "string", 0),
            age_col(),
            col("Containers", "string", 1),
            col("Images", "string", 1),
            col("Selector", "string", 1),
        ]
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let succeeded = status.succeeded.unwrap_or(0);
        let completions = match spec.completions {
            Some(c) => format!("{succeeded}/{c}"),
            None => match spec.parallelism.unwrap_or(0) {
                p if p > 1 => format!("{succeeded}/1 of {p}"),
                _ => format!("{succeeded}/1"),
            },
        };
        let secs = |t: &Time| t.0.as_second();
        let duration = match (&status.start_time, &status.completion_time) {
            (None, _) => String::new(),
            (Some(s), None) => human_duration(now.as_second() - secs(s)),
            (Some(s), Some(c)) => human_duration(secs(c) - secs(s)),
        };
        let state = if has_condition(&status, "Complete") {
            "Complete"
        } else if has_condition(&status, "Failed") {
            "Failed"
        } else if self.metadata.deletion_timestamp.is_some() {
            "Terminating"
        } else if has_condition(&status, "Suspended") {
            "Suspended"
        } else if has_condition(&status, "FailureTarget") {
            "FailureTarget"
        } else if has_condition(&status, "SuccessCriteriaMet") {
            "SuccessCriteriaMet"
        } else {
            "Running"
        };
        let (containers, images) = container_cells(&spec.template);
        vec![
            name_of(&self.metadata),
            state.into(),
            completions.into(),
            duration.into(),
            age(self.metadata.creation_timestamp.as_ref(), now),
            containers,
            images,
            none_if_empty(
                spec.selector
                    .as_ref()
                    .map(selector::selector_string)
                    .unwrap_or_default(),
            ),
        ]
    }
}

/// `SetDefaults_CronJob`, and pod spec defaults in the Job template.
fn default_cronjob(cj: &mut CronJob) {
    let spec = cj.spec.get_or_insert_with(Default::default);
    spec.concurrency_policy
        .get_or_insert_with(|| "Allow".into());
    spec.suspend.get_or_insert(false);
    spec.successful_jobs_history_limit.get_or_insert(3);
    spec.failed_jobs_history_limit.get_or_insert(1);
    if let Some(t) = spec.job_template.spec.as_mut() {
        default_template(&mut t.template);
    }
}

fn validate_job_template(t: &JobTemplateSpec, path: &str) -> Vec<FieldError> {
    match &t.spec {
        Some(spec) => validate_job_spec(spec, &format!("{path}.spec"), false),
        None => vec![FieldError::required(format!("{path}.spec"), "")],
    }
}

impl KindSpec for CronJob {
    const SHORT_NAMES: &'static [&'static str] = &["cj"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const HAS_STATUS: bool = true;

    fn prepare_create(&mut self) {
        default_cronjob(self);
        self.status = Some(CronJobStatus::default());
    }

    fn prepare_update(&mut self, _old: &Self) {
        default_cronjob(self);
    }

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let name = self.metadata.name.as_deref().unwrap_or("");
        if name.len() > CRONJOB_NAME_MAX {
            errs.push(FieldError::invalid(
                "metadata.name",
                name,
                format!("must be no more than {CRONJOB_NAME_MAX} characters"),
            ));
        }
        let Some(spec) = &self.spec else {
            errs.push(FieldError::required("spec", ""));
            return errs;
        };
        if spec.schedule.is_empty() {
            errs.push(FieldError::required("spec.schedule", ""));
        } else if let Err(e) = Schedule::parse(&spec.schedule, Some("UTC")) {
            errs.push(FieldError::invalid(
                "spec.schedule",
                &spec.schedule,
                e.to_string(),
            ));
        }
        if let Some(tz) = &spec.time_zone
            && let Err(e) = Schedule::parse("* * * * *", Some(tz))
        {
            errs.push(FieldError::invalid("spec.timeZone", tz, e.to_string()));
        }
        match spec.concurrency_policy.as_deref().unwrap_or("") {
            "Allow" | "Forbid" | "Replace" => {}
            "" => errs.push(FieldError::required("spec.concurrencyPolicy", "")),
            other => errs.push(FieldError::not_supported(
                "spec.concurrencyPolicy",
                other,
                &["Allow", "Forbid", "Replace"],
            )),
        }
        for (field, v) in [
            ("startingDeadlineSeconds", spec.starting_deadline_seconds),
            (
                "successfulJobsHistoryLimit",
                spec.successful_jobs_history_limit.map(i64::from),
            ),
            (
                "failedJobsHistoryLimit",
                spec.failed_jobs_history_limit.map(i64::from),
            ),
        ] {
            if let Some(v) = v {
                errs.extend(nonnegative(&format!("spec.{field}"), v));
            }
        }
        errs.extend(validate_job_template(
            &spec.job_template,
            "spec.jobTemplate",
        ));
        errs
    }

    fn columns() -> Vec<Column> {
        vec![
            name_col(),
            col("Schedule", "string", 0),
            col("Timezone", "string", 0),
            col("Suspend", "boolean", 0),
            col("Active", "integer", 0),
            col("Last Schedule", "string", 0),
            age_col(),
            col("Containers", "string", 1),
            col("Images", "string", 1),
            col("Selector", "string", 1),
        ]
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let template = spec.job_template.spec.clone().unwrap_or_default();
        let (containers, images) = container_cells(&template.template);
        vec![
            name_of(&self.metadata),
            spec.schedule.clone().into(),
            spec.time_zone
                .clone()
                .unwrap_or_else(|| "<none>".into())
                .into(),
            // `printBoolPtr`.
            match spec.suspend {
                Some(true) => "True".into(),
                Some(false) => "False".into(),
                None => "<unset>".into(),
            },
            status.active.map_or(0, |a| a.len()).into(),
            match &status.last_schedule_time {
                Some(t) => age(Some(t), now),
                None => "<none>".into(),
            },
            age(self.metadata.creation_timestamp.as_ref(), now),
            containers,
            images,
            none_if_empty(
                template
                    .selector
                    .as_ref()
                    .map(selector::selector_string)
                    .unwrap_or_default(),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(v: Value) -> Job {
        serde_json::from_value(v).unwrap()
    }

    fn errors(errs: Vec<FieldError>) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn jobs_get_upstream_defaults_and_a_generated_selector() {
        let mut j = job(json!({"metadata": {"name": "pi", "uid": "u-1"},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "pi", "image": "perl"}]}}}}));
        j.prepare_create();
        let spec = j.spec.clone().unwrap();
        assert_eq!(spec.completions, Some(1));
        assert_eq!(spec.parallelism, Some(1));
        assert_eq!(spec.backoff_limit, Some(6));
        assert_eq!(spec.completion_mode.as_deref(), Some("NonIndexed"));
        assert_eq!(spec.suspend, Some(false));
        assert_eq!(
            spec.pod_replacement_policy.as_deref(),
            Some("TerminatingOrFailed")
        );
        let labels = template_labels(&spec.template);
        assert_eq!(labels[CONTROLLER_UID_LABEL], "u-1");
        assert_eq!(labels[JOB_NAME_LABEL], "pi");
        assert_eq!(labels["controller-uid"], "u-1");
        assert_eq!(labels["job-name"], "pi");
        assert_eq!(
            spec.selector.unwrap().match_labels.unwrap(),
            BTreeMap::from([(CONTROLLER_UID_LABEL.to_owned(), "u-1".to_owned())])
        );
        assert_eq!(j.metadata.labels.as_ref(), Some(&labels));
        assert!(
            j.validate(None).is_empty(),
            "{:?}",
            errors(j.validate(None))
        );

        // Parallelism alone leaves completions unset (a work queue).
        let mut q = job(json!({"metadata": {"name": "q", "uid": "u-2"},
            "spec": {"parallelism": 3, "template": {"spec": {"restartPolicy": "OnFailure",
                "containers": [{"name": "c", "image": "busybox"}]}}}}));
        q.prepare_create();
        assert_eq!(q.spec.as_ref().unwrap().completions, None);
    }

    #[test]
    fn job_validation_speaks_kube_apiservers_messages() {
        let mut j = job(json!({"metadata": {"name": "pi", "uid": "u-1"},
            "spec": {"completionMode": "Indexed", "parallelism": 2, "backoffLimit": -1,
                "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}}}));
        j.prepare_create();
        let errs = errors(j.validate(None));
        assert!(
            errs.contains(&"spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"".to_owned()),
            "{errs:?}"
        );
        assert!(
            errs.contains(
                &"spec.backoffLimit: Invalid value: -1: must be greater than or equal to 0"
                    .to_owned()
            ),
            "{errs:?}"
        );
        assert!(
            errs.contains(
                &"spec.completions: Required value: when completion mode is Indexed".to_owned()
            ),
            "{errs:?}"
        );

        let mut manual = job(json!({"metadata": {"name": "m", "uid": "u-3"},
            "spec": {"selector": {"matchLabels": {"app": "x"}},
                "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}));
        manual.prepare_create();
        assert!(
            errors(manual.validate(None))
                .iter()
                .any(|e| e.contains("`selector` not auto-generated")),
        );
        let mut manual = job(json!({"metadata": {"name": "m", "uid": "u-3"},
            "spec": {"manualSelector": true, "selector": {"matchLabels": {"app": "x"}},
                "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}));
        manual.prepare_create();
        assert!(manual.validate(None).is_empty());
        assert!(
            !template_labels(&manual.spec.as_ref().unwrap().template).contains_key(JOB_NAME_LABEL)
        );
    }

    #[test]
    fn job_templates_and_selectors_are_immutable() {
        let mut old = job(json!({"metadata": {"name": "pi", "uid": "u-1"},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "pi", "image": "perl"}]}}}}));
        old.prepare_create();
        let mut new = old.clone();
        new.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = Some("perl:5".into());
        new.spec.as_mut().unwrap().completions = Some(3);
        let errs = errors(new.validate(Some(&old)));
        assert!(
            errs.contains(
                &"spec.template: Invalid value: core.PodTemplateSpec{...}: field is immutable"
                    .to_owned()
            ),
            "{errs:?}"
        );
        assert!(
            errs.contains(&"spec.completions: Invalid value: 3: field is immutable".to_owned()),
            "{errs:?}"
        );
        let mut suspended = old.clone();
        suspended.spec.as_mut().unwrap().suspend = Some(true);
        assert!(suspended.validate(Some(&old)).is_empty());
    }

    #[test]
    fn pod_failure_policies_are_checked() {
        let mut j = job(json!({"metadata": {"name": "p", "uid": "u"},
            "spec": {"podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [0, 3, 2]}},
                {"action": "Explode", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]},
              "template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}));
        j.prepare_create();
        let errs = errors(j.validate(None));
        for want in [
            "spec.template.spec.restartPolicy: Invalid value: \"OnFailure\": only \"Never\" is supported when podFailurePolicy is specified",
            "spec.podFailurePolicy.rules[0].onExitCodes.values[0]: Invalid value: 0: must not be 0 for the In operator",
            "spec.podFailurePolicy.rules[0].onExitCodes.values[2]: Invalid value: 2: must be ordered",
            "spec.podFailurePolicy.rules[1].action: Unsupported value: \"Explode\": supported values: \"Count\", \"FailIndex\", \"FailJob\", \"Ignore\"",
        ] {
            assert!(errs.contains(&want.to_owned()), "{want}\n{errs:?}");
        }
    }

    #[test]
    fn job_rows_read_as_kubectl_prints_them() {
        let now = jiff::Timestamp::from_second(1_700_000_100).unwrap();
        let j = job(
            json!({"metadata": {"name": "pi", "creationTimestamp": "2023-11-14T22:13:20Z"},
            "spec": {"completions": 5, "parallelism": 2, "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
            "status": {"succeeded": 3, "startTime": "2023-11-14T22:13:20Z"}}),
        );
        let cells = j.cells(now);
        assert_eq!(cells[1], "Running");
        assert_eq!(cells[2], "3/5");
        assert_eq!(cells[3], "100s");
        let done = job(json!({"metadata": {"name": "pi"},
            "spec": {"parallelism": 3, "template": {}},
            "status": {"succeeded": 1, "startTime": "2023-11-14T22:13:20Z", "completionTime": "2023-11-14T22:13:50Z",
                "conditions": [{"type": "Complete", "status": "True"}]}}));
        let cells = done.cells(now);
        assert_eq!(cells[1], "Complete");
        assert_eq!(cells[2], "1/1 of 3");
        assert_eq!(cells[3], "30s");
    }

    #[test]
    fn cronjobs_default_and_validate_schedules_and_time_zones() {
        let mut cj: CronJob = serde_json::from_value(json!({"metadata": {"name": "hello"},
            "spec": {"schedule": "*/1 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}}))
        .unwrap();
        cj.prepare_create();
        let spec = cj.spec.clone().unwrap();
        assert_eq!(spec.concurrency_policy.as_deref(), Some("Allow"));
        assert_eq!(spec.successful_jobs_history_limit, Some(3));
        assert_eq!(spec.failed_jobs_history_limit, Some(1));
        assert_eq!(spec.suspend, Some(false));
        // Job defaults are the Job's, not the template's.
        assert_eq!(spec.job_template.spec.as_ref().unwrap().backoff_limit, None);
        assert!(
            cj.validate(None).is_empty(),
            "{:?}",
            errors(cj.validate(None))
        );

        let mut bad = cj.clone();
        let s = bad.spec.as_mut().unwrap();
        s.schedule = "TZ=UTC 0 * * * *".into();
        s.concurrency_policy = Some("Sometimes".into());
        let errs = errors(bad.validate(None));
        assert!(
            errs.contains(&"spec.schedule: Invalid value: \"TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead".to_owned()),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("spec.concurrencyPolicy: Unsupported value: \"Sometimes\""))
        );
        let mut bad = cj.clone();
        bad.spec.as_mut().unwrap().time_zone = Some("Mars/Olympus".into());
        assert_eq!(
            errors(bad.validate(None)),
            ["spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone Mars/Olympus"]
        );
        bad.metadata.name = Some("x".repeat(53));
        bad.spec.as_mut().unwrap().time_zone = None;
        assert!(errors(bad.validate(None))[0].ends_with("must be no more than 52 characters"));
    }
}
