//! The CronJob controller's decisions (`pkg/controller/cronjob`, the v2
//! controller), pure over a CronJob, the Jobs it owns and the time: which
//! active Jobs are still active, whether a start time is due and what the
//! concurrency policy makes of it, the Job for a start time, and which
//! finished Jobs the history limits remove.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::replicaset_decide::controller_ref;
use crate::cron_schedule::{MISSED_COUNT_CAP, Schedule, most_recent_schedule, next_schedule_in};

/// The annotation a scheduled Job carries: its start time, in the
/// CronJob's time zone.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Past this many missed start times the controller warns.
pub const TOO_MANY_MISSED: u32 = 100;

/// `getJobName`: the CronJob's name and the start time in minutes, so a
/// start time makes one Job however often the controller looks.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// `Complete` or `Failed`, when the Job has finished.
pub fn job_finished(job: &Job) -> Option<&'static str> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    conds
        .iter()
        .filter(|c| c.status == "True")
        .find_map(|c| match c.type_.as_str() {
            "Complete" => Some("Complete"),
            "Failed" => Some("Failed"),
            _ => None,
        })
}

fn job_ref(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        field_path: None,
    }
}

/// An event the controller records: type, reason, message.
pub type Note = (&'static str, &'static str, String);

/// `syncCronJob`'s plan for one look at a CronJob.
#[derive(Debug, Default)]
pub struct CronPlan {
    /// `status.active` after this look.
    pub active: Vec<ObjectReference>,
    pub last_successful_time: Option<Timestamp>,
    /// The start time to create a Job for.
    pub create: Option<Timestamp>,
    /// Active Jobs to delete first (`Replace`).
    pub replace: Vec<ObjectReference>,
    /// Finished Jobs past the history limits.
    pub cleanup: Vec<Arc<Job>>,
    pub events: Vec<Note>,
    pub requeue: Option<Duration>,
}

/// Finished Jobs past `limit`, oldest start first (`removeOldestJobs`).
fn oldest_past_limit(mut jobs: Vec<Arc<Job>>, limit: i32) -> Vec<Arc<Job>> {
    let limit = limit.max(0) as usize;
    if jobs.len() <= limit {
        return Vec::new();
    }
    let start = |j: &Job| {
        j.status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0)
    };
    jobs.sort_by(|a, b| match (start(a), start(b)) {
        (Some(x), Some(y)) if x != y => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        _ => a.metadata.name.cmp(&b.metadata.name),
    });
    let n = jobs.len() - limit;
    jobs.truncate(n);
    jobs
}

/// Decides for `cj` given the Jobs it controls and its parsed schedule.
pub fn decide(cj: &CronJob, jobs: &[Arc<Job>], schedule: &Schedule, now: Timestamp) -> CronPlan {
    let spec = cj.spec.clone().unwrap_or_default();
    let status = cj.status.clone().unwrap_or_default();
    let mut plan = CronPlan {
        last_successful_time: status.last_successful_time.as_ref().map(|t| t.0),
        ..Default::default()
    };
    let by_uid: BTreeMap<&str, &Arc<Job>> = jobs
        .iter()
        .filter_map(|j| Some((j.metadata.uid.as_deref()?, j)))
        .collect();
    // The active list, checked against the Jobs that exist.
    for r in status.active.iter().flatten() {
        let Some(job) = r.uid.as_deref().and_then(|u| by_uid.get(u)) else {
            plan.events.push((
                "Normal",
                "MissingJob",
                format!(
                    "Active job went missing: {}",
                    r.name.as_deref().unwrap_or("")
                ),
            ));
            continue;
        };
        match job_finished(job) {
            Some(state) => {
                plan.events.push((
                    "Normal",
                    "SawCompletedJob",
                    format!(
                        "Saw completed job: {}, condition: {state}",
                        job.metadata.name.as_deref().unwrap_or("")
                    ),
                ));
                if state == "Complete" {
                    let done = job
                        .status
                        .as_ref()
                        .and_then(|s| s.completion_time.as_ref())
                        .map(|t| t.0);
                    if done > plan.last_successful_time {
                        plan.last_successful_time = done;
                    }
                }
            }
            None => plan.active.push(r.clone()),
        }
    }
    // Unfinished Jobs it controls but does not list: made by hand
    // (`kubectl create job --from`), or created before a status write was
    // lost. Upstream only warns about them.
    for j in jobs {
        if job_finished(j).is_none()
            && !status
                .active
                .iter()
                .flatten()
                .any(|r| r.uid == j.metadata.uid)
        {
            plan.events.push((
                "Warning",
                "UnexpectedJob",
                format!(
                    "Saw a job that the controller did not create or forgot: {}",
                    j.metadata.name.as_deref().unwrap_or("")
                ),
            ));
        }
    }
    let (succeeded, failed): (Vec<Arc<Job>>, Vec<Arc<Job>>) = jobs
        .iter()
        .filter(|j| job_finished(j).is_some())
        .cloned()
        .partition(|j| job_finished(j) == Some("Complete"));
    plan.cleanup = oldest_past_limit(succeeded, spec.successful_jobs_history_limit.unwrap_or(3));
    plan.cleanup.extend(oldest_past_limit(
        failed,
        spec.failed_jobs_history_limit.unwrap_or(1),
    ));

    if cj.metadata.deletion_timestamp.is_some() || spec.suspend == Some(true) {
        return plan;
    }
    plan.requeue = next_schedule_in(schedule, now);
    let created = cj.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let last = status.last_schedule_time.as_ref().map(|t| t.0);
    let state = most_recent_schedule(schedule, created, last, spec.starting_deadline_seconds, now);
    if state.missed > TOO_MANY_MISSED {
        let shown = if state.missed >= MISSED_COUNT_CAP {
            format!("more than {TOO_MANY_MISSED}")
        } else {
            state.missed.to_string()
        };
        plan.events.push((
            "Warning",
            "TooManyMissedTimes",
            format!("too many missed start times: {shown}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"),
        ));
    }
    let Some(scheduled) = state.most_recent else {
        return plan;
    };
    if let Some(deadline) = spec.starting_deadline_seconds
        && scheduled.as_second() + deadline < now.as_second()
    {
        plan.events.push((
            "Warning",
            "MissSchedule",
            format!("Missed scheduled time to start a job: {scheduled}"),
        ));
        return plan;
    }
    let name = job_name(cj.metadata.name.as_deref().unwrap_or(""), scheduled);
    if plan
        .active
        .iter()
        .any(|r| r.name.as_deref() == Some(name.as_str()))
        || last == Some(scheduled)
    {
        return plan;
    }
    match spec.concurrency_policy.as_deref().unwrap_or("Allow") {
        "Forbid" if !plan.active.is_empty() => {
            plan.events.push((
                "Normal",
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
            ));
            // Look again soon: the running Job may finish before the next
            // start time, and this one is still due then.
            plan.requeue = Some(
                plan.requeue
                    .map_or(Duration::from_secs(10), |r| r.min(Duration::from_secs(10))),
            );
            return plan;
        }
        "Replace" => plan.replace = std::mem::take(&mut plan.active),
        _ => {}
    }
    plan.create = Some(scheduled);
    plan
}

/// `getJobFromTemplate2`: the Job for start time `scheduled`.
pub fn job_from_template(cj: &CronJob, scheduled: Timestamp, tz: &jiff::tz::TimeZone) -> Job {
    let spec = cj.spec.clone().unwrap_or_default();
    let template = spec.job_template;
    let tmeta = template.metadata.unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP.into(),
        scheduled
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
            .replace("+00:00", "Z"),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(
                cj.metadata.name.as_deref().unwrap_or(""),
                scheduled,
            )),
            namespace: cj.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref("batch/v1", "CronJob", &cj.metadata)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// The reference `status.active` keeps to a created Job.
pub fn active_ref(job: &Job) -> ObjectReference {
    job_ref(job)
}

/// `lastScheduleTime` as the status stores it.
pub fn schedule_time(t: Timestamp) -> Time {
    Time(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn cronjob(spec: Value, status: Value) -> CronJob {
        let mut s = json!({"schedule": "*/1 * * * *", "concurrencyPolicy": "Allow",
            "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
            "jobTemplate": {"metadata": {"labels": {"app": "hello"}}, "spec": {"template": {"spec": {"containers": []}}}}});
        if let (Some(a), Value::Object(b)) = (s.as_object_mut(), spec) {
            a.extend(b);
        }
        serde_json::from_value(
            json!({"metadata": {"name": "hello", "namespace": "default", "uid": "cj1",
            "creationTimestamp": "2025-03-01T10:00:30Z"}, "spec": s, "status": status}),
        )
        .unwrap()
    }

    fn job(name: &str, uid: &str, cond: Option<&str>, start: &str) -> Arc<Job> {
        let conds = cond
            .map(|c| json!([{"type": c, "status": "True"}]))
            .unwrap_or(json!([]));
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": name, "namespace": "default", "uid": uid},
                "status": {"startTime": start, "completionTime": start, "conditions": conds}}),
            )
            .unwrap(),
        )
    }

    fn utc(s: &str) -> Schedule {
        Schedule::parse(s, Some("UTC")).unwrap()
    }

    #[test]
    fn a_due_start_time_creates_one_job_named_by_its_minute() {
        let cj = cronjob(json!({}), json!({}));
        let plan = decide(&cj, &[], &utc("*/1 * * * *"), ts("2025-03-01T10:01:05Z"));
        assert_eq!(plan.create, Some(ts("2025-03-01T10:01:00Z")));
        assert_eq!(plan.requeue, Some(Duration::from_millis(55_100)));
        assert_eq!(
            job_name("hello", ts("2025-03-01T10:01:00Z")),
            "hello-29013721"
        );
        // Already scheduled: nothing more until the next minute.
        let cj = cronjob(
            json!({}),
            json!({"lastScheduleTime": "2025-03-01T10:01:00Z"}),
        );
        let plan = decide(&cj, &[], &utc("*/1 * * * *"), ts("2025-03-01T10:01:40Z"));
        assert_eq!(plan.create, None);
        // Not due yet.
        let cj = cronjob(json!({}), json!({}));
        let plan = decide(&cj, &[], &utc("0 * * * *"), ts("2025-03-01T10:30:00Z"));
        assert_eq!(plan.create, None);
    }

    #[test]
    fn concurrency_policies() {
        let running = job("hello-1", "j1", None, "2025-03-01T10:01:00Z");
        let status = json!({"lastScheduleTime": "2025-03-01T10:01:00Z",
            "active": [{"kind": "Job", "name": "hello-1", "namespace": "default", "uid": "j1"}]});
        let now = ts("2025-03-01T10:02:03Z");
        let allow = decide(
            &cronjob(json!({}), status.clone()),
            &[running.clone()],
            &utc("*/1 * * * *"),
            now,
        );
        assert_eq!(allow.create, Some(ts("2025-03-01T10:02:00Z")));
        assert_eq!(allow.active.len(), 1);
        let forbid = decide(
            &cronjob(json!({"concurrencyPolicy": "Forbid"}), status.clone()),
            &[running.clone()],
            &utc("*/1 * * * *"),
            now,
        );
        assert_eq!(forbid.create, None);
        assert_eq!(forbid.events[0].1, "JobAlreadyActive");
        let replace = decide(
            &cronjob(json!({"concurrencyPolicy": "Replace"}), status),
            &[running],
            &utc("*/1 * * * *"),
            now,
        );
        assert_eq!(replace.create, Some(ts("2025-03-01T10:02:00Z")));
        assert_eq!(replace.replace[0].name.as_deref(), Some("hello-1"));
        assert!(replace.active.is_empty());
    }

    #[test]
    fn finished_jobs_leave_the_active_list_and_history_is_trimmed() {
        let status = json!({"active": [
            {"kind": "Job", "name": "a", "uid": "ja"},
            {"kind": "Job", "name": "gone", "uid": "jg"}]});
        let jobs = vec![
            job("a", "ja", Some("Complete"), "2025-03-01T10:04:00Z"),
            job("s1", "s1", Some("Complete"), "2025-03-01T10:01:00Z"),
            job("s2", "s2", Some("Complete"), "2025-03-01T10:02:00Z"),
            job("s3", "s3", Some("Complete"), "2025-03-01T10:03:00Z"),
            job("f1", "f1", Some("Failed"), "2025-03-01T10:01:30Z"),
            job("f2", "f2", Some("Failed"), "2025-03-01T10:02:30Z"),
        ];
        let plan = decide(
            &cronjob(json!({"suspend": true}), status),
            &jobs,
            &utc("*/1 * * * *"),
            ts("2025-03-01T10:05:00Z"),
        );
        assert!(plan.active.is_empty());
        let reasons: Vec<_> = plan.events.iter().map(|e| e.1).collect();
        assert_eq!(reasons, ["SawCompletedJob", "MissingJob"]);
        assert_eq!(plan.last_successful_time, Some(ts("2025-03-01T10:04:00Z")));
        let cleaned: Vec<_> = plan
            .cleanup
            .iter()
            .map(|j| j.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(cleaned, ["s1", "f1"]);
        // Suspended: no start.
        assert_eq!(plan.create, None);
    }

    #[test]
    fn starting_deadline_and_too_many_missed_start_times() {
        // The controller was away for a day: warn, still run the latest.
        let cj = cronjob(json!({}), json!({}));
        let plan = decide(&cj, &[], &utc("*/1 * * * *"), ts("2025-03-02T10:00:10Z"));
        assert_eq!(plan.events[0].1, "TooManyMissedTimes");
        assert_eq!(plan.create, Some(ts("2025-03-02T10:00:00Z")));
        // The start time is older than the deadline allows: skipped.
        let cj = cronjob(
            json!({"startingDeadlineSeconds": 5}),
            json!({"lastScheduleTime": "2025-03-01T10:00:00Z"}),
        );
        let plan = decide(&cj, &[], &utc("*/2 * * * *"), ts("2025-03-01T10:02:30Z"));
        assert_eq!(plan.create, None);
    }

    #[test]
    fn jobs_from_the_template_carry_the_start_time_and_an_owner() {
        let cj = cronjob(json!({}), json!({}));
        let tz = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
        let j = job_from_template(&cj, ts("2025-03-01T10:01:00Z"), &tz);
        assert_eq!(j.metadata.name.as_deref(), Some("hello-29013721"));
        assert_eq!(j.metadata.labels.unwrap()["app"], "hello");
        assert_eq!(
            j.metadata.annotations.unwrap()[SCHEDULED_TIMESTAMP],
            "2025-03-01T11:01:00+01:00"
        );
        let owner = &j.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("CronJob", "cj1")
        );
    }
}
