//! The CronJob controller (`cronjob-controller`): creates a Job for each
//! start time of a CronJob's schedule as [`super::cronjob_decide`]
//! decides, keeps `status.active`, `lastScheduleTime` and
//! `lastSuccessfulTime`, and trims finished Jobs to the history limits.
//! Each CronJob is looked at again just after its next start time.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::cronjob_decide::{active_ref, decide, job_from_template};
use super::informers::{Change, Informers, SharedInformer};
use super::replicaset_decide::controller_of;
use super::work_queue;
use crate::cron_schedule::Schedule;
use crate::event_recorder::{EventRecorder, reference};

pub const CONCURRENT_SYNCS: u16 = 5;
const COMPONENT: &str = "cronjob-controller";

#[derive(Debug, thiserror::Error)]
pub enum CronJobError {
    #[error("{verb} job {job}: {source}")]
    Job {
        verb: &'static str,
        job: String,
        source: kube::Error,
    },
    #[error("updating status of cronjob {cronjob}: {source}")]
    Status {
        cronjob: String,
        source: kube::Error,
    },
}

struct Context {
    client: kube::Client,
    jobs: SharedInformer<Job>,
    cronjobs: SharedInformer<CronJob>,
    recorder: EventRecorder,
}

pub async fn run(informers: Informers) -> anyhow::Result<()> {
    let client = informers.client();
    let ctx = Arc::new(Context {
        recorder: EventRecorder::new(client.clone(), COMPONENT),
        client,
        jobs: informers.get::<Job>(),
        cronjobs: informers.get::<CronJob>(),
    });
    let (queue, keys) = work_queue::queue::<CronJob>();
    let mut cronjobs = ctx.cronjobs.subscribe();
    let mut jobs = ctx.jobs.subscribe();
    ctx.jobs.synced().await;
    ctx.cronjobs.synced().await;
    queue.add_all(&ctx.cronjobs.store);
    // Job changes wake the CronJob that controls them.
    let changes = async {
        loop {
            tokio::select! {
                c = cronjobs.recv() => match c {
                    Ok(Change::Applied(cj)) => queue.add_object(&cj),
                    Ok(Change::Deleted(_)) => {}
                    Ok(Change::Resync) | Err(RecvError::Lagged(_)) => queue.add_all(&ctx.cronjobs.store),
                    Err(RecvError::Closed) => return,
                },
                c = jobs.recv() => match c {
                    Ok(Change::Applied(j)) | Ok(Change::Deleted(j)) => {
                        if let Some(r) = controller_of(&j.metadata).filter(|r| r.kind == "CronJob") {
                            queue.add(j.metadata.namespace.as_deref(), &r.name);
                        }
                    }
                    Ok(Change::Resync) | Err(RecvError::Lagged(_)) => queue.add_all(&ctx.cronjobs.store),
                    Err(RecvError::Closed) => return,
                },
            }
        }
    };
    let workers = work_queue::run(
        COMPONENT,
        ctx.cronjobs.store.clone(),
        keys,
        ctx.clone(),
        CONCURRENT_SYNCS,
        sync,
    );
    tokio::select! {
        _ = changes => {}
        _ = workers => {}
    }
    Ok(())
}

/// `syncCronJob`.
async fn sync(cj: Arc<CronJob>, ctx: Arc<Context>) -> work_queue::SyncResult<CronJobError> {
    let ns = cj.namespace().unwrap_or_default();
    let name = cj.name_any();
    let uid = cj.meta().uid.clone();
    let about = reference("batch/v1", "CronJob", cj.meta());
    let spec = cj.spec.clone().unwrap_or_default();
    let schedule = match Schedule::parse(&spec.schedule, spec.time_zone.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            let reason = match e {
                crate::cron_schedule::ScheduleError::TimeZone(_) => "UnknownTimeZone",
                _ => "UnparseableSchedule",
            };
            ctx.recorder.warning(
                about,
                reason,
                format!("unparseable schedule: {:?} : {e}", spec.schedule),
            );
            return Ok(None);
        }
    };
    let owned: Vec<Arc<Job>> = ctx
        .jobs
        .store
        .state()
        .into_iter()
        .filter(|j| j.namespace().as_deref() == Some(ns.as_str()))
        .filter(|j| controller_of(&j.metadata).is_some_and(|r| Some(&r.uid) == uid.as_ref()))
        .collect();
    let now = jiff::Timestamp::now();
    if schedule.next_after(now).is_none() {
        // A schedule that never comes (the 31st of February): upstream
        // finds its next two start times equal and stops at that until the
        // spec changes.
        ctx.recorder.warning(
            about,
            "InvalidSchedule",
            format!(
                "invalid schedule: {} : time difference between two schedules is less than 1 second",
                spec.schedule
            ),
        );
        return Ok(None);
    }
    let mut plan = decide(&cj, &owned, &schedule, now);
    for (type_, reason, message) in plan.events.drain(..) {
        ctx.recorder
            .record(about.clone(), type_, reason, None, message);
    }
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let background = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    let mut status = cj.status.clone().unwrap_or_default();
    for r in &plan.replace {
        let job = r.name.clone().unwrap_or_default();
        match jobs.delete(&job, &background).await {
            Ok(_) => ctx.recorder.normal(
                about.clone(),
                "SuccessfulDelete",
                format!("Deleted job {job}"),
            ),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(CronJobError::Job {
                    verb: "deleting",
                    job,
                    source,
                });
            }
        }
    }
    if let Some(scheduled) = plan.create {
        let tz = match spec.time_zone.as_deref() {
            Some(name) => jiff::tz::TimeZone::get(name).unwrap_or(jiff::tz::TimeZone::UTC),
            None => jiff::tz::TimeZone::system(),
        };
        let job = job_from_template(&cj, scheduled, &tz);
        let job_name = job.name_any();
        match jobs.create(&PostParams::default(), &job).await {
            Ok(created) => {
                ctx.recorder.normal(
                    about.clone(),
                    "SuccessfulCreate",
                    format!("Created job {job_name}"),
                );
                plan.active.push(active_ref(&created));
            }
            // Made by an earlier look whose status write this look's cache
            // has not seen yet: it is still this CronJob's active Job.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                if let Ok(existing) = jobs.get(&job_name).await
                    && controller_of(&existing.metadata)
                        .is_some_and(|r| Some(&r.uid) == uid.as_ref())
                    && !plan
                        .active
                        .iter()
                        .any(|r| r.name.as_deref() == Some(job_name.as_str()))
                {
                    plan.active.push(active_ref(&existing));
                }
            }
            Err(source) => {
                ctx.recorder.warning(
                    about.clone(),
                    "FailedCreate",
                    format!("Error creating job: {}", source),
                );
                return Err(CronJobError::Job {
                    verb: "creating",
                    job: job_name,
                    source,
                });
            }
        }
        status.last_schedule_time = Some(super::cronjob_decide::schedule_time(scheduled));
    }
    status.active = (!plan.active.is_empty()).then(|| plan.active.clone());
    status.last_successful_time = plan
        .last_successful_time
        .map(super::cronjob_decide::schedule_time);
    if Some(&status) != cj.status.as_ref() {
        let mut value = serde_json::to_value(&status).expect("status serializes");
        for f in ["active", "lastScheduleTime", "lastSuccessfulTime"] {
            if value.get(f).is_none() {
                value[f] = serde_json::Value::Null;
            }
        }
        let api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": value })),
        )
        .await
        .map_err(|source| CronJobError::Status {
            cronjob: format!("{ns}/{name}"),
            source,
        })?;
    }
    for job in &plan.cleanup {
        let job_name = job.name_any();
        match jobs.delete(&job_name, &background).await {
            Ok(_) => ctx.recorder.normal(
                about.clone(),
                "SuccessfulDelete",
                format!("Deleted job {job_name}"),
            ),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(CronJobError::Job {
                    verb: "deleting",
                    job: job_name,
                    source,
                });
            }
        }
    }
    Ok(plan.requeue)
}
