//! The policies of Indexed Jobs that look at each completion index on its
//! own (`pkg/controller/job`'s `backoff_utils`, `indexed_job_utils` and
//! `success_policy`): `backoffLimitPerIndex` counts the failures of each
//! index (the pods' `job-index-failure-count` annotation) and waits
//! before retrying one, and `successPolicy` declares a Job successful
//! once chosen indexes have succeeded. Pure functions over a Job's pods.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, SuccessPolicy};
use k8s_openapi::api::core::v1::Pod;

use super::job_decide::{
    DEFAULT_BACKOFF, Finished, MAX_BACKOFF, completion_index, finish_time, finished,
    match_failure_policy, parse_indexes,
};

/// How many times a pod's index failed before the pod was made.
pub const INDEX_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";
/// The Job controller's own `spec.managedBy`.
pub const JOB_CONTROLLER: &str = "kubernetes.io/job-controller";

/// Whether the built-in controller syncs the Job: not when `managedBy`
/// names another controller.
pub fn managed_by_job_controller(job: &Job) -> bool {
    job.spec
        .as_ref()
        .and_then(|s| s.managed_by.as_deref())
        .is_none_or(|m| m == JOB_CONTROLLER)
}

/// `spec.backoffLimitPerIndex` of an Indexed Job.
pub fn backoff_limit_per_index(job: &Job) -> Option<i32> {
    let spec = job.spec.as_ref()?;
    (spec.completion_mode.as_deref() == Some("Indexed"))
        .then_some(spec.backoff_limit_per_index)
        .flatten()
}

/// The failures the pod's index had before it (its annotation).
pub fn pod_index_failure_count(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INDEX_FAILURE_COUNT))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The failures of one index so far and when the last one ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexFailures {
    pub count: i32,
    pub last: Timestamp,
}

impl IndexFailures {
    /// How long a new pod for the index must still wait: 10 s after one
    /// failure, doubling with each further one, up to six minutes.
    pub fn backoff_remaining(&self, now: Timestamp) -> Duration {
        if self.count <= 0 {
            return Duration::ZERO;
        }
        let backoff = DEFAULT_BACKOFF
            .checked_mul(
                1u32.checked_shl((self.count - 1) as u32)
                    .unwrap_or(u32::MAX),
            )
            .unwrap_or(MAX_BACKOFF)
            .min(MAX_BACKOFF);
        let elapsed = now.duration_since(self.last);
        if elapsed.is_negative() {
            return backoff;
        }
        backoff.saturating_sub(elapsed.unsigned_abs())
    }
}

/// Whether a failed pod counts against its index: not when a pod
/// failure policy `Ignore` rule matches it.
fn counts_as_failure(job: &Job, pod: &Pod) -> bool {
    let ignored = job
        .spec
        .as_ref()
        .and_then(|s| s.pod_failure_policy.as_ref())
        .and_then(|p| match_failure_policy(p, pod))
        .is_some_and(|m| m.action == "Ignore");
    !ignored
}

/// The failure count of a failed pod's index with this failure included,
/// or `None` when the pod has not failed (or its failure is ignored).
pub fn failure_count_with(job: &Job, pod: &Pod) -> Option<i32> {
    (finished(pod, job) == Some(Finished::Failed) && counts_as_failure(job, pod))
        .then(|| pod_index_failure_count(pod) + 1)
}

/// `getNewIndexFailureCounts`: per index, the failures its pods went
/// through (the most any failed pod of it has seen) and the last one's
/// time.
pub fn index_failures(
    job: &Job,
    pods: &[Arc<Pod>],
    now: Timestamp,
) -> BTreeMap<i32, IndexFailures> {
    let mut out: BTreeMap<i32, IndexFailures> = BTreeMap::new();
    for p in pods {
        let (Some(index), Some(count)) = (completion_index(p), failure_count_with(job, p)) else {
            continue;
        };
        let at = finish_time(p, now);
        let e = out
            .entry(index)
            .or_insert(IndexFailures { count, last: at });
        e.count = e.count.max(count);
        e.last = e.last.max(at);
    }
    out
}

/// `matchSuccessPolicy`: the message of the first rule the succeeded
/// indexes satisfy.
pub fn match_success_policy(
    policy: &SuccessPolicy,
    completions: i32,
    succeeded: &BTreeSet<i32>,
) -> Option<String> {
    policy.rules.iter().enumerate().find_map(|(i, rule)| {
        let met = match (&rule.succeeded_indexes, rule.succeeded_count) {
            (Some(indexes), count) => {
                let required = parse_indexes(indexes, completions);
                let done = required.intersection(succeeded).count() as i32;
                // A rule whose indexes do not parse matches nothing.
                !required.is_empty() && done >= count.unwrap_or(required.len() as i32)
            }
            (None, Some(count)) => count <= succeeded.len() as i32,
            (None, None) => false,
        };
        met.then(|| format!("Matched rules at index {i}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(spec: serde_json::Value) -> Job {
        let mut spec = spec;
        spec["template"] = json!({"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox"}]}});
        serde_json::from_value(
            json!({"metadata": {"name": "j", "namespace": "default"}, "spec": spec}),
        )
        .unwrap()
    }

    fn failed_pod(index: i32, before: Option<i32>, finished_at: i64) -> Arc<Pod> {
        let mut annotations =
            json!({"batch.kubernetes.io/job-completion-index": index.to_string()});
        if let Some(n) = before {
            annotations[INDEX_FAILURE_COUNT] = json!(n.to_string());
        }
        let at = Timestamp::from_second(1_700_000_000 + finished_at).unwrap();
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": format!("j-{index}-{finished_at}"), "annotations": annotations},
                "status": {"phase": "Failed", "containerStatuses": [{"name": "c", "image": "busybox",
                    "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 1, "finishedAt": at.to_string()}}}]}}))
            .unwrap(),
        )
    }

    #[test]
    fn each_index_counts_its_own_failures_and_backs_off_on_its_own() {
        let j =
            job(json!({"completionMode": "Indexed", "completions": 3, "backoffLimitPerIndex": 1}));
        assert_eq!(backoff_limit_per_index(&j), Some(1));
        let pods = [
            failed_pod(0, None, 0),
            failed_pod(0, Some(1), 20),
            failed_pod(2, None, 30),
        ];
        let now = Timestamp::from_second(1_700_000_035).unwrap();
        let f = index_failures(&j, &pods, now);
        assert_eq!(f[&0].count, 2);
        assert_eq!(f[&2].count, 1);
        assert!(!f.contains_key(&1));
        // Index 2 failed once 5 s ago: 10 s back-off, 5 s left; index 0
        // twice, 20 s back-off from its last failure 15 s ago.
        assert_eq!(f[&2].backoff_remaining(now), Duration::from_secs(5));
        assert_eq!(f[&0].backoff_remaining(now), Duration::from_secs(5));
        assert_eq!(failure_count_with(&j, &pods[1]), Some(2));
        // Failures an Ignore rule matches count for nothing.
        let ignoring = job(json!({"completionMode": "Indexed", "completions": 3,
            "backoffLimitPerIndex": 1,
            "podFailurePolicy": {"rules": [{"action": "Ignore",
                "onExitCodes": {"operator": "In", "values": [1]}}]}}));
        assert!(index_failures(&ignoring, &pods, now).is_empty());
        let non_indexed = job(json!({"backoffLimitPerIndex": 1}));
        assert_eq!(backoff_limit_per_index(&non_indexed), None);
    }

    #[test]
    fn success_policy_rules_match_indexes_and_counts() {
        let policy = |rules: serde_json::Value| -> SuccessPolicy {
            serde_json::from_value(json!({"rules": rules})).unwrap()
        };
        let done = |v: &[i32]| v.iter().copied().collect::<BTreeSet<i32>>();
        let leader = policy(json!([{"succeededIndexes": "0"}]));
        assert_eq!(match_success_policy(&leader, 5, &done(&[1, 2])), None);
        assert_eq!(
            match_success_policy(&leader, 5, &done(&[0])),
            Some("Matched rules at index 0".into())
        );
        let two_of_workers = policy(json!([
            {"succeededIndexes": "0", "succeededCount": 1},
            {"succeededIndexes": "1-4", "succeededCount": 2}
        ]));
        assert_eq!(match_success_policy(&two_of_workers, 5, &done(&[3])), None);
        assert_eq!(
            match_success_policy(&two_of_workers, 5, &done(&[3, 4])),
            Some("Matched rules at index 1".into())
        );
        let any_three = policy(json!([{"succeededCount": 3}]));
        assert_eq!(match_success_policy(&any_three, 5, &done(&[0, 4])), None);
        assert!(match_success_policy(&any_three, 5, &done(&[0, 2, 4])).is_some());
        // Indexes beyond completions are no index at all.
        let out_of_range = policy(json!([{"succeededIndexes": "7-9"}]));
        assert_eq!(
            match_success_policy(&out_of_range, 5, &done(&[0, 1, 2, 3, 4])),
            None
        );
    }

    #[test]
    fn a_job_managed_elsewhere_is_left_alone() {
        assert!(managed_by_job_controller(&job(json!({}))));
        assert!(managed_by_job_controller(&job(
            json!({"managedBy": "kubernetes.io/job-controller"})
        )));
        assert!(!managed_by_job_controller(&job(
            json!({"managedBy": "kueue.x-k8s.io/multikueue"})
        )));
    }
}
