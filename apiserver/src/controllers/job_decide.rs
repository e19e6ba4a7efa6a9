//! The Job controller's decisions, as pure functions over a Job and its
//! pods (`pkg/controller/job`): which finished pods are still to be
//! accounted (job tracking with finalizers), the pod back-off, how many
//! pods to create (and for which completion indexes) or delete, the pod
//! failure policy, and the conditions and counts of the Job's status.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{
    Job, JobCondition, JobSpec, JobStatus, PodFailurePolicy, UncountedTerminatedPods,
};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

use super::job_index_policy::{
    INDEX_FAILURE_COUNT, IndexFailures, backoff_limit_per_index, failure_count_with,
    index_failures, match_success_policy,
};
use super::replicaset_decide::{is_ready, pod_from_template, pods_to_delete};

/// Keeps a finished pod until the Job has counted it.
pub const JOB_TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The completion index of a pod of an Indexed Job (annotation and label).
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The environment variable that carries it into containers.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// `DefaultJobPodFailureBackOff` and `MaxJobPodFailureBackOff`.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(10);
pub const MAX_BACKOFF: Duration = Duration::from_secs(360);

/// How a pod ended, for the Job's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Succeeded,
    Failed,
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn spec(job: &Job) -> JobSpec {
    job.spec.clone().unwrap_or_default()
}

pub fn is_indexed(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.completion_mode.as_deref()) == Some("Indexed")
}

/// `isPodFailed`, and success: with `podReplacementPolicy:
/// TerminatingOrFailed` a pod being deleted counts as failed already.
pub fn finished(pod: &Pod, job: &Job) -> Option<Finished> {
    match phase(pod) {
        "Succeeded" => Some(Finished::Succeeded),
        "Failed" => Some(Finished::Failed),
        _ if pod.metadata.deletion_timestamp.is_some()
            && job
                .spec
                .as_ref()
                .and_then(|s| s.pod_replacement_policy.as_deref())
                != Some("Failed") =>
        {
            Some(Finished::Failed)
        }
        _ => None,
    }
}

/// Running or waiting to run, and not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && pod.metadata.deletion_timestamp.is_none()
}

pub fn has_tracking_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == JOB_TRACKING_FINALIZER)
}

/// The pod's completion index, when it has a valid one.
pub fn completion_index(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(COMPLETION_INDEX)?
        .parse()
        .ok()
        .filter(|i: &i32| *i >= 0)
}

/// When the pod ended: its containers' last finish time, else `now`.
pub fn finish_time(pod: &Pod, now: Timestamp) -> Timestamp {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max()
        .unwrap_or(now)
}

/// `completedIndexes`: `"1,3-5,7"` to indexes and back.
pub fn parse_indexes(s: &str, completions: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
            out.extend((a..=b).filter(|i| (0..completions).contains(i)));
        }
    }
    out
}

pub fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap_or(end);
        }
        // Two in a row read as a pair, longer runs as a range.
        parts.push(match end - start {
            0 => start.to_string(),
            1 => format!("{start},{end}"),
            _ => format!("{start}-{end}"),
        });
    }
    parts.join(",")
}

/// Failures since the last success (upstream's `backoffRecord`), kept per
/// Job by the controller; new pods wait 10 s after one failure, doubling
/// with each further one, up to six minutes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackoffRecord {
    pub failures_after_last_success: u32,
    pub last_failure: Option<Timestamp>,
}

impl BackoffRecord {
    /// `newBackoffRecord`: folds in the finish times of pods that ended
    /// since the last sync.
    pub fn update(self, succeeded: &[Timestamp], failed: &[Timestamp]) -> Self {
        match succeeded.iter().max() {
            None if failed.is_empty() => self,
            None => Self {
                failures_after_last_success: self.failures_after_last_success + failed.len() as u32,
                last_failure: failed.iter().copied().chain(self.last_failure).max(),
            },
            Some(last_success) => {
                let after: Vec<Timestamp> = failed
                    .iter()
                    .copied()
                    .filter(|t| t > last_success)
                    .collect();
                Self {
                    failures_after_last_success: after.len() as u32,
                    last_failure: after.into_iter().max(),
                }
            }
        }
    }

    /// How long new pods must still wait.
    pub fn remaining(&self, now: Timestamp) -> Duration {
        let (n, Some(last)) = (self.failures_after_last_success, self.last_failure) else {
            return Duration::ZERO;
        };
        if n == 0 {
            return Duration::ZERO;
        }
        let backoff = DEFAULT_BACKOFF
            .checked_mul(1u32.checked_shl(n - 1).unwrap_or(u32::MAX))
            .unwrap_or(MAX_BACKOFF)
            .min(MAX_BACKOFF);
        let elapsed = now.duration_since(last);
        if elapsed.is_negative() {
            return backoff;
        }
        backoff.saturating_sub(elapsed.unsigned_abs())
    }
}

/// What a pod failure policy rule does with a failed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyMatch {
    pub action: String,
    pub message: String,
}

/// `matchPodFailurePolicy`: the first rule that matches the failed pod.
pub fn match_failure_policy(policy: &PodFailurePolicy, pod: &Pod) -> Option<PolicyMatch> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let status = pod.status.clone().unwrap_or_default();
    let containers: Vec<_> = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .collect();
    for (i, rule) in policy.rules.iter().enumerate() {
        if let Some(codes) = &rule.on_exit_codes {
            for c in &containers {
                if codes.container_name.as_deref().is_some_and(|n| n != c.name) {
                    continue;
                }
                let Some(code) = c
                    .state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| t.exit_code)
                else {
                    continue;
                };
                if code == 0 {
                    continue;
                }
                let listed = codes.values.contains(&code);
                if (codes.operator == "In") == listed {
                    return Some(PolicyMatch {
                        action: rule.action.clone(),
                        message: format!(
                            "Container {} for pod {ns}/{name} failed with exit code {code} matching {} rule at index {i}",
                            c.name, rule.action
                        ),
                    });
                }
            }
        }
        for want in rule.on_pod_conditions.iter().flatten() {
            let has = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == want.type_ && c.status == want.status);
            if has {
                return Some(PolicyMatch {
                    action: rule.action.clone(),
                    message: format!(
                        "Pod {ns}/{name} has condition {} matching {} rule at index {i}",
                        want.type_, rule.action
                    ),
                });
            }
        }
    }
    None
}

fn condition<'a>(status: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// `Complete` or `Failed`, once the Job has either.
pub fn finished_condition(job: &Job) -> Option<&'static str> {
    let status = job.status.as_ref()?;
    if condition(status, "Complete").is_some() {
        Some("Complete")
    } else if condition(status, "Failed").is_some() {
        Some("Failed")
    } else {
        None
    }
}

/// Why a Job fails: a reason and message as upstream words them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: String,
    pub message: String,
}

impl Failure {
    fn new(reason: &str, message: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// What one sync does.
#[derive(Debug, Default)]
pub struct Plan {
    /// Finished pods not yet recorded in `uncountedTerminatedPods`.
    pub new_succeeded: Vec<Arc<Pod>>,
    pub new_failed: Vec<Arc<Pod>>,
    /// Failed pods a pod failure policy `Ignore` rule matched: their
    /// finalizer goes, they count for nothing.
    pub ignored: Vec<Arc<Pod>>,
    /// Pods to create, with their completion index for Indexed Jobs.
    pub create: Vec<Option<i32>>,
    pub delete: Vec<Arc<Pod>>,
    /// The Job succeeds (`SuccessCriteriaMet`) or fails (`FailureTarget`).
    pub success: bool,
    /// The success policy rule that made it succeed ("Matched rules at
    /// index 0").
    pub success_policy_message: Option<String>,
    pub failure: Option<Failure>,
    /// Pods are still running or terminating: the final condition waits.
    pub pods_remaining: bool,
    pub suspended: bool,
    /// Look again after this long (a back-off or a deadline).
    pub requeue: Option<Duration>,
    /// The back-off record after this sync's finished pods.
    pub backoff: BackoffRecord,
    /// Succeeded completion indexes, with this sync's.
    pub completed_indexes: BTreeSet<i32>,
    /// Indexes that failed more often than `backoffLimitPerIndex` allows
    /// (or that a `FailIndex` rule failed), with this sync's.
    pub failed_indexes: BTreeSet<i32>,
    /// Per index, the failures so far (for `backoffLimitPerIndex`).
    pub index_failures: BTreeMap<i32, IndexFailures>,
    /// The counts once everything finished is counted.
    pub succeeded: i32,
    pub failed: i32,
    pub active: i32,
    pub ready: i32,
    pub terminating: i32,
}

/// `syncJob`'s decisions for a Job that has not finished.
pub fn decide(job: &Job, pods: &[Arc<Pod>], backoff: BackoffRecord, now: Timestamp) -> Plan {
    let spec = spec(job);
    let status = job.status.clone().unwrap_or_default();
    let uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let recorded: HashSet<&str> = uncounted
        .succeeded
        .iter()
        .flatten()
        .chain(uncounted.failed.iter().flatten())
        .map(String::as_str)
        .collect();
    let indexed = is_indexed(job);
    let completions = spec.completions;
    let mut plan = Plan {
        completed_indexes: if indexed {
            parse_indexes(
                status.completed_indexes.as_deref().unwrap_or(""),
                completions.unwrap_or(0),
            )
        } else {
            BTreeSet::new()
        },
        failed_indexes: if backoff_limit_per_index(job).is_some() {
            parse_indexes(
                status.failed_indexes.as_deref().unwrap_or(""),
                completions.unwrap_or(0),
            )
        } else {
            BTreeSet::new()
        },
        ..Default::default()
    };
    let per_index = backoff_limit_per_index(job);
    let mut policy_failure = None;
    for p in pods {
        let uid = p.metadata.uid.as_deref().unwrap_or("");
        if !has_tracking_finalizer(p) || recorded.contains(uid) {
            continue;
        }
        match finished(p, job) {
            Some(Finished::Succeeded) => {
                if indexed {
                    match completion_index(p).filter(|i| *i < completions.unwrap_or(0)) {
                        Some(i) => {
                            plan.completed_indexes.insert(i);
                        }
                        // A pod without a valid index counts for nothing.
                        None => {
                            plan.ignored.push(p.clone());
                            continue;
                        }
                    }
                }
                plan.new_succeeded.push(p.clone());
            }
            Some(Finished::Failed) => {
                let matched = spec
                    .pod_failure_policy
                    .as_ref()
                    .filter(|_| phase(p) == "Failed")
                    .and_then(|policy| match_failure_policy(policy, p));
                match matched.as_ref().map(|m| m.action.as_str()) {
                    Some("Ignore") => {
                        plan.ignored.push(p.clone());
                        continue;
                    }
                    Some("FailJob") => {
                        policy_failure.get_or_insert_with(|| {
                            Failure::new("PodFailurePolicy", matched.clone().unwrap().message)
                        });
                    }
                    _ => {}
                }
                if let Some(limit) = per_index
                    && let Some(i) = completion_index(p).filter(|i| *i < completions.unwrap_or(0))
                {
                    let fail_index = matched.as_ref().is_some_and(|m| m.action == "FailIndex");
                    if fail_index || failure_count_with(job, p).is_some_and(|n| n > limit) {
                        plan.failed_indexes.insert(i);
                    }
                }
                plan.new_failed.push(p.clone());
            }
            None => {}
        }
    }
    let times =
        |v: &[Arc<Pod>]| -> Vec<Timestamp> { v.iter().map(|p| finish_time(p, now)).collect() };
    plan.backoff = backoff.update(&times(&plan.new_succeeded), &times(&plan.new_failed));
    if per_index.is_some() {
        plan.index_failures = index_failures(job, pods, now);
    }
    let uncounted_len = |v: &Option<Vec<String>>| v.as_ref().map_or(0, Vec::len) as i32;
    plan.failed = status.failed.unwrap_or(0)
        + uncounted_len(&uncounted.failed)
        + plan.new_failed.len() as i32;
    plan.succeeded = if indexed {
        plan.completed_indexes.len() as i32
    } else {
        status.succeeded.unwrap_or(0)
            + uncounted_len(&uncounted.succeeded)
            + plan.new_succeeded.len() as i32
    };
    let active: Vec<Arc<Pod>> = pods.iter().filter(|p| is_active(p)).cloned().collect();
    plan.terminating = pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_some() && !matches!(phase(p), "Succeeded" | "Failed")
        })
        .count() as i32;
    plan.ready = active.iter().filter(|p| is_ready(p)).count() as i32;

    // A Job already failing or succeeding stays so.
    if let Some(c) = condition(&status, "FailureTarget") {
        policy_failure = Some(Failure::new(
            c.reason.as_deref().unwrap_or(""),
            c.message.clone().unwrap_or_default(),
        ));
    }
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let restarts: i32 = if spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure")
    {
        active
            .iter()
            .filter_map(|p| p.status.as_ref())
            .flat_map(|s| {
                s.init_container_statuses
                    .iter()
                    .flatten()
                    .chain(s.container_statuses.iter().flatten())
            })
            .map(|c| c.restart_count)
            .sum()
    } else {
        0
    };
    let deadline_in = match (spec.active_deadline_seconds, &status.start_time) {
        (Some(d), Some(start)) if !spec.suspend.unwrap_or(false) => {
            Some(start.0.as_second() + d - now.as_second())
        }
        _ => None,
    };
    plan.failure = policy_failure.or_else(|| {
        let over_limit =
            plan.failed > backoff_limit || (restarts > 0 && restarts >= backoff_limit.max(1));
        if over_limit {
            Some(Failure::new(
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ))
        } else if deadline_in.is_some_and(|s| s <= 0) {
            Some(Failure::new(
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ))
        } else {
            None
        }
    });
    if plan.failure.is_none() && per_index.is_some() {
        let failed = plan.failed_indexes.len() as i32;
        if spec.max_failed_indexes.is_some_and(|m| failed > m) {
            plan.failure = Some(Failure::new(
                "MaxFailedIndexesExceeded",
                "Job has exceeded the specified maximal number of failed indexes",
            ));
        } else if failed > 0 && plan.succeeded + failed >= completions.unwrap_or(0) {
            plan.failure = Some(Failure::new("FailedIndexes", "Job has failed indexes"));
        }
    }
    if plan.failure.is_none()
        && indexed
        && let Some(policy) = &spec.success_policy
    {
        plan.success_policy_message =
            match_success_policy(policy, completions.unwrap_or(0), &plan.completed_indexes);
    }
    plan.success = plan.failure.is_none()
        && (condition(&status, "SuccessCriteriaMet").is_some()
            || plan.success_policy_message.is_some()
            || match completions {
                Some(c) => plan.succeeded >= c,
                None => plan.succeeded > 0 && active.is_empty(),
            });
    plan.suspended = spec.suspend.unwrap_or(false) && plan.failure.is_none() && !plan.success;

    if plan.failure.is_some() || plan.success || plan.suspended {
        plan.delete = active.clone();
        plan.active = 0;
        plan.terminating += active.len() as i32;
    } else {
        manage_pods(job, &spec, &active, &mut plan, now);
    }
    plan.pods_remaining = plan.terminating > 0 || plan.active > 0;
    if plan.failure.is_none()
        && let Some(s) = deadline_in
        && s > 0
    {
        plan.requeue = Some(plan.requeue.map_or(Duration::from_secs(s as u64), |r| {
            r.min(Duration::from_secs(s as u64))
        }));
    }
    plan
}

/// `manageJob`: how many pods to add or remove (and which indexes).
fn manage_pods(job: &Job, spec: &JobSpec, active: &[Arc<Pod>], plan: &mut Plan, now: Timestamp) {
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let mut keep: Vec<Arc<Pod>> = active.to_vec();
    let mut running_indexes = BTreeSet::new();
    if is_indexed(job) {
        let completions = spec.completions.unwrap_or(0);
        // Pods with a completed, duplicate or invalid index go.
        keep.clear();
        for p in active {
            match completion_index(p) {
                Some(i)
                    if i < completions
                        && !plan.completed_indexes.contains(&i)
                        && !plan.failed_indexes.contains(&i)
                        && running_indexes.insert(i) =>
                {
                    keep.push(p.clone())
                }
                _ => plan.delete.push(p.clone()),
            }
        }
    }
    let want = match spec.completions {
        Some(c) => (c - plan.succeeded - plan.failed_indexes.len() as i32).clamp(0, parallelism),
        None if plan.succeeded > 0 => keep.len() as i32,
        None => parallelism,
    };
    let have = keep.len() as i32;
    if have > want {
        plan.delete
            .extend(pods_to_delete(&keep, &keep, (have - want) as usize));
    } else if have < want {
        // With a back-off limit per index, each index waits on its own.
        let per_index = backoff_limit_per_index(job).is_some();
        let wait = if per_index {
            Duration::ZERO
        } else {
            plan.backoff.remaining(now)
        };
        if wait > Duration::ZERO {
            plan.requeue = Some(wait);
        } else if is_indexed(job) {
            let mut soonest: Option<Duration> = None;
            let index_failures = &plan.index_failures;
            plan.create = (0..spec.completions.unwrap_or(0))
                .filter(|i| {
                    !plan.completed_indexes.contains(i)
                        && !plan.failed_indexes.contains(i)
                        && !running_indexes.contains(i)
                })
                .filter(|i| {
                    let wait = index_failures
                        .get(i)
                        .map_or(Duration::ZERO, |f| f.backoff_remaining(now));
                    if wait > Duration::ZERO {
                        soonest = Some(soonest.map_or(wait, |s| s.min(wait)));
                    }
                    wait == Duration::ZERO
                })
                .take((want - have) as usize)
                .map(Some)
                .collect();
            if soonest.is_some() {
                plan.requeue = soonest;
            }
        } else {
            plan.create = vec![None; (want - have) as usize];
        }
    }
    plan.active = have.min(want) + plan.create.len() as i32;
    plan.terminating += plan.delete.len() as i32;
}

/// A pod for the Job: its template, the tracking finalizer, and for an
/// Indexed Job the index (annotation, label, hostname `<job>-<index>` and
/// `JOB_COMPLETION_INDEX` in every container).
/// `failure_count`: the failures of the index so far (its
/// `job-index-failure-count` annotation under `backoffLimitPerIndex`).
pub fn job_pod(job: &Job, index: Option<i32>, failure_count: i32, owner: OwnerReference) -> Pod {
    let spec = spec(job);
    let name = job.metadata.name.clone().unwrap_or_default();
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let prefix = match index {
        Some(i) => format!("{name}-{i}"),
        None => name.clone(),
    };
    let mut pod = pod_from_template(&spec.template, &ns, &prefix, owner);
    pod.metadata
        .finalizers
        .get_or_insert_with(Vec::new)
        .push(JOB_TRACKING_FINALIZER.to_owned());
    if let Some(i) = index {
        pod.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(COMPLETION_INDEX.to_owned(), i.to_string());
        if backoff_limit_per_index(job).is_some() {
            pod.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(INDEX_FAILURE_COUNT.to_owned(), failure_count.to_string());
        }
        pod.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(COMPLETION_INDEX.to_owned(), i.to_string());
        let pod_spec = pod.spec.get_or_insert_with(Default::default);
        if pod_spec.hostname.is_none() {
            pod_spec.hostname = Some(format!("{name}-{i}"));
        }
        let env = EnvVar {
            name: COMPLETION_INDEX_ENV.to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: Some("v1".into()),
                    field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                }),
                ..Default::default()
            }),
        };
        for c in pod_spec
            .containers
            .iter_mut()
            .chain(pod_spec.init_containers.iter_mut().flatten())
        {
            let vars = c.env.get_or_insert_with(Vec::new);
            if !vars.iter().any(|v| v.name == COMPLETION_INDEX_ENV) {
                vars.push(env.clone());
            }
        }
    }
    pod
}

fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Sets a condition, keeping the old one (and its times) when nothing
/// changed.
fn set_condition(conds: &mut Vec<JobCondition>, c: JobCondition) -> bool {
    match conds.iter_mut().find(|x| x.type_ == c.type_) {
        Some(x) if x.status == c.status && x.reason == c.reason => false,
        Some(x) => {
            *x = c;
            true
        }
        None => {
            conds.push(c);
            true
        }
    }
}

/// The status after this sync's writes: `flushed` are the uids of
/// recorded finished pods whose finalizer is gone (they move into the
/// counts), `pending` those still held (they stay uncounted).
pub fn next_status(
    job: &Job,
    plan: &Plan,
    pending: &UncountedTerminatedPods,
    now: Timestamp,
) -> JobStatus {
    let mut status = job.status.clone().unwrap_or_default();
    let pending_len = |v: &Option<Vec<String>>| v.as_ref().map_or(0, Vec::len) as i32;
    status.failed = Some(plan.failed - pending_len(&pending.failed));
    status.succeeded = Some(if is_indexed(job) {
        plan.succeeded
    } else {
        plan.succeeded - pending_len(&pending.succeeded)
    });
    status.uncounted_terminated_pods = Some(pending.clone());
    status.active = Some(plan.active);
    status.ready = Some(plan.ready);
    status.terminating = Some(plan.terminating);
    if is_indexed(job) {
        let s = format_indexes(&plan.completed_indexes);
        status.completed_indexes = (!s.is_empty()).then_some(s);
    }
    if backoff_limit_per_index(job).is_some() {
        status.failed_indexes = Some(format_indexes(&plan.failed_indexes));
    }
    let mut conds = status.conditions.take().unwrap_or_default();
    let everything_counted =
        pending_len(&pending.failed) == 0 && pending_len(&pending.succeeded) == 0;
    let settled = !plan.pods_remaining && everything_counted;
    if let Some(f) = &plan.failure {
        set_condition(
            &mut conds,
            new_condition("FailureTarget", "True", &f.reason, &f.message, now),
        );
        if settled {
            set_condition(
                &mut conds,
                new_condition("Failed", "True", &f.reason, &f.message, now),
            );
        }
    } else if plan.success {
        // Complete repeats why the Job succeeded, as first said.
        let (reason, msg) = match conds.iter().find(|c| c.type_ == "SuccessCriteriaMet") {
            Some(c) => (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            ),
            None => match &plan.success_policy_message {
                Some(m) => ("SuccessPolicy".to_owned(), m.clone()),
                None => (
                    "CompletionsReached".to_owned(),
                    "Reached expected number of succeeded pods".to_owned(),
                ),
            },
        };
        set_condition(
            &mut conds,
            new_condition("SuccessCriteriaMet", "True", &reason, &msg, now),
        );
        if settled {
            set_condition(
                &mut conds,
                new_condition("Complete", "True", &reason, &msg, now),
            );
            status.completion_time.get_or_insert(Time(now));
        }
    } else if plan.suspended {
        if set_condition(
            &mut conds,
            new_condition("Suspended", "True", "JobSuspended", "Job suspended", now),
        ) {
            status.start_time = None;
        }
    } else {
        let was_suspended = conds
            .iter()
            .any(|c| c.type_ == "Suspended" && c.status == "True");
        if was_suspended {
            set_condition(
                &mut conds,
                new_condition("Suspended", "False", "JobResumed", "Job resumed", now),
            );
            status.start_time = Some(Time(now));
        }
    }
    if status.start_time.is_none() && !plan.suspended {
        status.start_time = Some(Time(now));
    }
    status.conditions = (!conds.is_empty()).then_some(conds);
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn job(spec: Value) -> Job {
        let mut spec = spec;
        spec["template"] = json!({"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}});
        serde_json::from_value(
            json!({"metadata": {"name": "pi", "namespace": "default", "uid": "j1"},
            "spec": spec, "status": {"startTime": "2025-01-01T00:00:00Z"}}),
        )
        .unwrap()
    }

    fn pod(name: &str, phase: &str, extra: Value) -> Arc<Pod> {
        let mut v = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
            "finalizers": [JOB_TRACKING_FINALIZER]},
            "status": {"phase": phase}});
        if let (Some(a), Value::Object(b)) = (v.as_object_mut(), extra) {
            for (k, val) in b {
                match (a.get_mut(&k), val) {
                    (Some(Value::Object(x)), Value::Object(y)) => x.extend(y),
                    (_, val) => {
                        a.insert(k, val);
                    }
                }
            }
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn indexed(name: &str, phase: &str, i: i32) -> Arc<Pod> {
        pod(
            name,
            phase,
            json!({"metadata": {"annotations": {COMPLETION_INDEX: i.to_string()}}}),
        )
    }

    fn now() -> Timestamp {
        "2025-01-01T00:01:00Z".parse().unwrap()
    }

    #[test]
    fn parallelism_bounds_creations_and_completions_the_total() {
        let j = job(json!({"completions": 5, "parallelism": 2}));
        let plan = decide(&j, &[], BackoffRecord::default(), now());
        assert_eq!(plan.create.len(), 2);
        assert_eq!(plan.active, 2);
        // Four done, one running: nothing more to start.
        let pods: Vec<_> = (0..4)
            .map(|i| pod(&format!("s{i}"), "Succeeded", json!({})))
            .chain([pod("r", "Running", json!({}))])
            .collect();
        let plan = decide(&j, &pods, BackoffRecord::default(), now());
        assert_eq!((plan.create.len(), plan.delete.len()), (0, 0));
        assert_eq!(plan.new_succeeded.len(), 4);
        assert_eq!(plan.succeeded, 4);
        // Too many running (parallelism lowered): the extra go.
        let j1 = job(json!({"completions": 5, "parallelism": 1}));
        let pods = [
            pod("a", "Running", json!({})),
            pod("b", "Pending", json!({})),
        ];
        let plan = decide(&j1, &pods, BackoffRecord::default(), now());
        assert_eq!(plan.delete.len(), 1);
        assert_eq!(plan.delete[0].metadata.name.as_deref(), Some("b"));
        // A work queue (no completions) stops starting pods after a success.
        let q = job(json!({"parallelism": 3}));
        let pods = [
            pod("a", "Succeeded", json!({})),
            pod("b", "Running", json!({})),
        ];
        let plan = decide(&q, &pods, BackoffRecord::default(), now());
        assert!(plan.create.is_empty() && !plan.success);
        let pods = [pod("a", "Succeeded", json!({}))];
        assert!(decide(&q, &pods, BackoffRecord::default(), now()).success);
    }

    #[test]
    fn indexed_jobs_fill_the_lowest_missing_indexes() {
        let mut j = job(json!({"completions": 5, "parallelism": 3, "completionMode": "Indexed"}));
        j.status.as_mut().unwrap().completed_indexes = Some("0".into());
        let pods = [
            indexed("a", "Succeeded", 1),
            indexed("b", "Running", 2),
            indexed("dup", "Running", 2),
            indexed("done", "Running", 0),
        ];
        let plan = decide(&j, &pods, BackoffRecord::default(), now());
        assert_eq!(plan.create, [Some(3), Some(4)]);
        let deleted: Vec<_> = plan
            .delete
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(deleted, ["dup", "done"]);
        assert_eq!(format_indexes(&plan.completed_indexes), "0,1");
        assert_eq!(plan.succeeded, 2);
        assert_eq!(parse_indexes("0,2-4,9", 5), BTreeSet::from([0, 2, 3, 4]));
        assert_eq!(
            format_indexes(&BTreeSet::from([0, 2, 3, 4, 7, 8])),
            "0,2-4,7,8"
        );
    }

    #[test]
    fn index_pods_carry_hostname_annotation_label_and_env() {
        let j = job(json!({"completions": 3, "completionMode": "Indexed"}));
        let owner = super::super::replicaset_decide::controller_ref("batch/v1", "Job", &j.metadata);
        let p = job_pod(&j, Some(2), 0, owner);
        assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-2-"));
        assert_eq!(
            p.metadata.annotations.as_ref().unwrap()[COMPLETION_INDEX],
            "2"
        );
        assert_eq!(p.metadata.labels.as_ref().unwrap()[COMPLETION_INDEX], "2");
        assert_eq!(
            p.metadata.finalizers.as_deref(),
            Some(&[JOB_TRACKING_FINALIZER.to_owned()][..])
        );
        let spec = p.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("pi-2"));
        let env = &spec.containers[0].env.as_ref().unwrap()[0];
        assert_eq!(env.name, "JOB_COMPLETION_INDEX");
        assert_eq!(
            env.value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        );
    }

    #[test]
    fn backoff_starts_at_10s_doubles_and_caps_at_6_minutes() {
        let t0: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        let r = BackoffRecord::default().update(&[], &[t0]);
        assert_eq!(r.remaining(t0), Duration::from_secs(10));
        assert_eq!(
            r.remaining(t0 + jiff::SignedDuration::from_secs(4)),
            Duration::from_secs(6)
        );
        let r = r.update(&[], &[t0]);
        assert_eq!(r.remaining(t0), Duration::from_secs(20));
        let r = r.update(&[], &[t0, t0, t0, t0, t0]);
        assert_eq!(r.failures_after_last_success, 7);
        assert_eq!(r.remaining(t0), MAX_BACKOFF);
        // A later success forgives earlier failures.
        let later = t0 + jiff::SignedDuration::from_secs(30);
        assert_eq!(r.update(&[later], &[]).remaining(later), Duration::ZERO);
        // Pods wait out the back-off: nothing created, a requeue instead.
        let j = job(json!({"completions": 1}));
        let pods = [pod("f", "Failed", json!({}))];
        let plan = decide(&j, &pods, BackoffRecord::default(), now());
        assert!(plan.create.is_empty());
        assert!(plan.requeue.unwrap() <= Duration::from_secs(10));
        assert_eq!(plan.failed, 1);
    }

    #[test]
    fn failures_over_the_backoff_limit_fail_the_job_after_its_pods_are_gone() {
        let j = job(json!({"completions": 1, "backoffLimit": 1}));
        let pods = [
            pod("a", "Failed", json!({})),
            pod("b", "Failed", json!({})),
            pod("c", "Running", json!({})),
        ];
        let plan = decide(&j, &pods, BackoffRecord::default(), now());
        let f = plan.failure.clone().unwrap();
        assert_eq!(f.reason, "BackoffLimitExceeded");
        assert_eq!(f.message, "Job has reached the specified backoff limit");
        assert_eq!(plan.delete.len(), 1);
        let pending = UncountedTerminatedPods::default();
        let s = next_status(&j, &plan, &pending, now());
        let types: Vec<_> = s
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(types, ["FailureTarget"]);
        assert_eq!(s.failed, Some(2));
        // Once the last pod is gone and counted: Failed.
        let mut j2 = j.clone();
        j2.status = Some(s);
        let pods = [pod("c", "Failed", json!({}))];
        let plan = decide(&j2, &pods, BackoffRecord::default(), now());
        let s = next_status(&j2, &plan, &pending, now());
        let failed = s
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Failed")
            .unwrap();
        assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
        assert_eq!(s.failed, Some(3));
    }

    #[test]
    fn completion_waits_for_every_pod_to_be_counted() {
        let j = job(json!({"completions": 2, "parallelism": 2}));
        let pods = [
            pod("a", "Succeeded", json!({})),
            pod("b", "Succeeded", json!({})),
        ];
        let plan = decide(&j, &pods, BackoffRecord::default(), now());
        assert!(plan.success);
        // Finalizer removal of one pod failed: it stays uncounted, no Complete yet.
        let pending = UncountedTerminatedPods {
            succeeded: Some(vec!["uid-b".into()]),
            failed: None,
        };
        let s = next_status(&j, &plan, &pending, now());
        assert_eq!(s.succeeded, Some(1));
        let types: Vec<_> = s
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(types, ["SuccessCriteriaMet"]);
        let s = next_status(&j, &plan, &UncountedTerminatedPods::default(), now());
        let c = s
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Complete")
            .unwrap();
        assert_eq!(c.reason.as_deref(), Some("CompletionsReached"));
        assert_eq!(s.succeeded, Some(2));
        assert!(s.completion_time.is_some());
    }

    #[test]
    fn active_deadline_and_pod_failure_policy() {
        let j = job(json!({"completions": 1, "activeDeadlineSeconds": 30}));
        let pods = [pod("a", "Running", json!({}))];
        let plan = decide(&j, &pods, BackoffRecord::default(), now());
        assert_eq!(plan.failure.unwrap().reason, "DeadlineExceeded");
        let j = job(json!({"completions": 1, "activeDeadlineSeconds": 100}));
        let plan = decide(&j, &pods, BackoffRecord::default(), now());
        assert_eq!(plan.requeue, Some(Duration::from_secs(40)));

        let mut j = job(
            json!({"completions": 1, "backoffLimit": 6, "podFailurePolicy": {"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailJob", "onExitCodes": {"containerName": "c", "operator": "In", "values": [42]}}]}}),
        );
        j.spec.as_mut().unwrap().pod_replacement_policy = Some("Failed".into());
        let exited = |code: i32| {
            json!({"status": {"containerStatuses": [{"name": "c", "image": "busybox", "imageID": "",
            "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": code}}}]}})
        };
        let evicted = pod(
            "ev",
            "Failed",
            json!({"status": {"conditions": [{"type": "DisruptionTarget", "status": "True"}]}}),
        );
        let plan = decide(&j, &[evicted], BackoffRecord::default(), now());
        assert_eq!((plan.ignored.len(), plan.failed), (1, 0));
        assert!(plan.failure.is_none());
        let plan = decide(
            &j,
            &[pod("x", "Failed", exited(1))],
            BackoffRecord::default(),
            now(),
        );
        assert!(plan.failure.is_none());
        let plan = decide(
            &j,
            &[pod("x", "Failed", exited(42))],
            BackoffRecord::default(),
            now(),
        );
        let f = plan.failure.unwrap();
        assert_eq!(f.reason, "PodFailurePolicy");
        assert_eq!(
            f.message,
            "Container c for pod default/x failed with exit code 42 matching FailJob rule at index 1"
        );
    }

    #[test]
    fn suspended_jobs_delete_their_pods_and_resume_with_a_new_start_time() {
        let j = job(json!({"completions": 3, "parallelism": 2, "suspend": true}));
        let pods = [pod("a", "Running", json!({}))];
        let plan = decide(&j, &pods, BackoffRecord::default(), now());
        assert!(plan.suspended && plan.create.is_empty());
        assert_eq!(plan.delete.len(), 1);
        let s = next_status(&j, &plan, &UncountedTerminatedPods::default(), now());
        let c = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.type_.as_str(), c.reason.as_deref()),
            ("Suspended", Some("JobSuspended"))
        );
        assert!(s.start_time.is_none());
        let mut resumed = j.clone();
        resumed.spec.as_mut().unwrap().suspend = Some(false);
        resumed.status = Some(s);
        let plan = decide(&resumed, &[], BackoffRecord::default(), now());
        assert_eq!(plan.create.len(), 2);
        let s = next_status(&resumed, &plan, &UncountedTerminatedPods::default(), now());
        let c = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("False", Some("JobResumed"))
        );
        assert_eq!(s.start_time, Some(Time(now())));
    }

    #[test]
    fn terminating_pods_count_as_failed_unless_replacement_waits_for_failure() {
        let j = job(json!({"completions": 1}));
        let deleting = pod(
            "d",
            "Running",
            json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:30Z"}}),
        );
        assert_eq!(finished(&deleting, &j), Some(Finished::Failed));
        let mut j2 = j.clone();
        j2.spec.as_mut().unwrap().pod_replacement_policy = Some("Failed".into());
        assert_eq!(finished(&deleting, &j2), None);
        // Pods without the finalizer were counted already.
        let mut counted = (*pod("old", "Failed", json!({}))).clone();
        counted.metadata.finalizers = None;
        let plan = decide(&j, &[Arc::new(counted)], BackoffRecord::default(), now());
        assert_eq!(plan.failed, 0);
    }
}
