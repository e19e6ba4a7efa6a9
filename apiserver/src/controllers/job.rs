//! The Job controller (`job-controller`): runs each Job's pods to
//! completion as [`super::job_decide`] decides, tracking finished pods
//! with the `batch.kubernetes.io/job-tracking` finalizer as upstream
//! does: a finished pod is first recorded in the Job's
//! `status.uncountedTerminatedPods`, then its finalizer is removed, then it
//! moves into `succeeded`/`failed`, so no pod is counted twice or lost
//! when the controller restarts or the pod is deleted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::join_all;
use k8s_openapi::api::batch::v1::{Job, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::controller_ref_manager::{ClaimError, adopt_and_release};
use super::expectations::Expectations;
use super::informers::{Change, Informers, SharedInformer};
use super::job_decide::{
    BackoffRecord, JOB_TRACKING_FINALIZER, Plan, decide, finished_condition,
    has_tracking_finalizer, job_pod, next_status,
};
use super::pod_owner_changes::{PodOwners, owner_key};
use super::replicaset_decide::{claim, controller_of, controller_ref};
use super::work_queue;
use crate::event_recorder::{EventRecorder, reference};

/// `--concurrent-job-syncs`.
pub const CONCURRENT_SYNCS: u16 = 5;
const COMPONENT: &str = "job-controller";

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{verb} pod {pod}: {source}")]
    Pod {
        verb: &'static str,
        pod: String,
        source: kube::Error,
    },
    #[error("job {job}: {message}")]
    Pods { job: String, message: String },
    #[error("updating status of job {job}: {source}")]
    Status { job: String, source: kube::Error },
    #[error("job {job}: {pending} finished pods still hold their finalizer")]
    Uncounted { job: String, pending: usize },
    #[error(transparent)]
    Claim(#[from] ClaimError),
}

struct Context {
    client: kube::Client,
    pods: SharedInformer<Pod>,
    jobs: SharedInformer<Job>,
    expectations: Mutex<Expectations>,
    /// Per Job: failures since the last success, for the pod back-off.
    backoff: Mutex<HashMap<String, BackoffRecord>>,
    recorder: EventRecorder,
}

fn selects(job: &Job, labels: &BTreeMap<String, String>) -> bool {
    job.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| {
            !kubelab_rules::selector::is_empty(s) && kubelab_rules::selector::matches(s, labels)
        })
}

/// Runs the controller until its informers end.
pub async fn run(informers: Informers) -> anyhow::Result<()> {
    let client = informers.client();
    let ctx = Arc::new(Context {
        recorder: EventRecorder::new(client.clone(), COMPONENT),
        client,
        pods: informers.get::<Pod>(),
        jobs: informers.get::<Job>(),
        expectations: Mutex::default(),
        backoff: Mutex::default(),
    });
    let (queue, keys) = work_queue::queue::<Job>();
    let changes = PodOwners {
        owners: &ctx.jobs,
        pods: &ctx.pods,
        expectations: &ctx.expectations,
        selects,
    }
    .watch(queue);
    ctx.pods.synced().await;
    ctx.jobs.synced().await;
    let orphans = release_orphans(ctx.clone());
    let workers = work_queue::run(
        COMPONENT,
        ctx.jobs.store.clone(),
        keys,
        ctx.clone(),
        CONCURRENT_SYNCS,
        sync,
    );
    tokio::select! {
        _ = changes => {}
        _ = workers => {}
        _ = orphans => {}
    }
    Ok(())
}

/// Pods holding the tracking finalizer whose Job is gone (deleted, or
/// replaced by another of the same name) can never be counted: their
/// finalizer goes, so that their deletion completes.
async fn release_orphans(ctx: Arc<Context>) {
    let mut pods = ctx.pods.subscribe();
    let mut jobs = ctx.jobs.subscribe();
    let check_all = |ctx: &Context| -> Vec<Arc<Pod>> {
        ctx.pods
            .store
            .state()
            .into_iter()
            .filter(|p| is_orphan(ctx, p))
            .collect()
    };
    let mut todo = check_all(&ctx);
    loop {
        for p in todo.drain(..) {
            if let Err(e) = remove_finalizer(&ctx.client, &p).await {
                tracing::warn!(controller = COMPONENT, "{e}");
            }
        }
        tokio::select! {
            change = pods.recv() => match change {
                Ok(Change::Applied(p)) if is_orphan(&ctx, &p) => todo.push(p),
                Ok(Change::Resync) | Err(RecvError::Lagged(_)) => todo = check_all(&ctx),
                Err(RecvError::Closed) => return,
                Ok(_) => {}
            },
            change = jobs.recv() => match change {
                Ok(Change::Deleted(_)) | Ok(Change::Resync) | Err(RecvError::Lagged(_)) => {
                    todo = check_all(&ctx)
                }
                Err(RecvError::Closed) => return,
                Ok(_) => {}
            },
        }
    }
}

fn is_orphan(ctx: &Context, pod: &Pod) -> bool {
    if !has_tracking_finalizer(pod) {
        return false;
    }
    let Some(owner) = controller_of(&pod.metadata).filter(|r| r.kind == "Job") else {
        return true;
    };
    let ns = pod.namespace();
    !ctx.jobs
        .store
        .state()
        .iter()
        .any(|j| j.namespace() == ns && j.metadata.uid.as_deref() == Some(owner.uid.as_str()))
}

/// Drops the tracking finalizer, on the pod as the cache saw it (a
/// conflicting write makes the next sync try again).
async fn remove_finalizer(client: &kube::Client, pod: &Pod) -> Result<(), JobError> {
    let rest: Vec<&String> = pod
        .finalizers()
        .iter()
        .filter(|f| *f != JOB_TRACKING_FINALIZER)
        .collect();
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let patch = json!({"metadata": {
        "resourceVersion": pod.resource_version(),
        "finalizers": if rest.is_empty() { serde_json::Value::Null } else { json!(rest) },
    }});
    match api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(JobError::Pod {
            verb: "removing the tracking finalizer of",
            pod: pod.name_any(),
            source,
        }),
    }
}

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// `syncJob`.
async fn sync(job: Arc<Job>, ctx: Arc<Context>) -> work_queue::SyncResult<JobError> {
    if !super::job_index_policy::managed_by_job_controller(&job) {
        // Another controller owns this Job's pods and status.
        return Ok(None);
    }
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let key = owner_key(&ns, &name);
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let deleting = job.metadata.deletion_timestamp.is_some();
    let all: Vec<Arc<Pod>> = ctx
        .pods
        .store
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .collect();
    let claims = claim(&all, &uid, |l| selects(&job, l), deleting);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let owner = controller_ref("batch/v1", "Job", &job.metadata);
    adopt_and_release(&pods_api, &claims, &owner).await?;
    let owned = claims.owned;
    if deleting || finished_condition(&job).is_some() {
        // Nothing more is counted: let every pod go.
        for p in owned.iter().filter(|p| has_tracking_finalizer(p)) {
            remove_finalizer(&ctx.client, p).await?;
        }
        ctx.backoff.lock().expect("backoff").remove(&key);
        return Ok(None);
    }
    let now = jiff::Timestamp::now();
    let satisfied = ctx
        .expectations
        .lock()
        .expect("expectations")
        .satisfied(&key, Instant::now());
    let backoff = ctx
        .backoff
        .lock()
        .expect("backoff")
        .get(&key)
        .copied()
        .unwrap_or_default();
    let mut plan = decide(&job, &owned, backoff, now);
    if !satisfied {
        // The cache has not caught up with our own creations or deletions.
        plan.create.clear();
        plan.delete.retain(|_| false);
    }
    let about = reference("batch/v1", "Job", &job.metadata);

    // 1. Record newly finished pods before their finalizers go.
    let old = job.status.clone().unwrap_or_default();
    let mut uncounted = old.uncounted_terminated_pods.clone().unwrap_or_default();
    let uids = |v: &[Arc<Pod>]| -> Vec<String> {
        v.iter().filter_map(|p| p.metadata.uid.clone()).collect()
    };
    let new_s = uids(&plan.new_succeeded);
    let new_f = uids(&plan.new_failed);
    if !new_s.is_empty() || !new_f.is_empty() {
        uncounted
            .succeeded
            .get_or_insert_with(Vec::new)
            .extend(new_s);
        uncounted.failed.get_or_insert_with(Vec::new).extend(new_f);
        let mut patch = json!({"uncountedTerminatedPods": uncounted});
        if super::job_decide::is_indexed(&job) {
            patch["completedIndexes"] =
                json!(super::job_decide::format_indexes(&plan.completed_indexes));
        }
        // A failed index is recorded with the failure that failed it.
        if super::job_index_policy::backoff_limit_per_index(&job).is_some() {
            patch["failedIndexes"] = json!(super::job_decide::format_indexes(&plan.failed_indexes));
        }
        patch_status(&ctx, &ns, &name, patch).await?;
    }
    ctx.backoff
        .lock()
        .expect("backoff")
        .insert(key.clone(), plan.backoff);

    // 2. Let the recorded (and ignored) pods go.
    let recorded: HashSet<&String> = uncounted
        .succeeded
        .iter()
        .flatten()
        .chain(uncounted.failed.iter().flatten())
        .collect();
    let mut held: HashSet<String> = HashSet::new();
    for p in owned.iter().filter(|p| has_tracking_finalizer(p)) {
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let ignored = plan
            .ignored
            .iter()
            .any(|i| i.metadata.uid == p.metadata.uid);
        if !recorded.contains(&uid) && !ignored {
            continue;
        }
        if let Err(e) = remove_finalizer(&ctx.client, p).await {
            tracing::warn!(controller = COMPONENT, job = %key, "{e}");
            held.insert(uid);
        }
    }
    // Recorded pods no longer cached are gone: counted.
    let keep = |v: &Option<Vec<String>>| -> Option<Vec<String>> {
        let left: Vec<String> = v
            .iter()
            .flatten()
            .filter(|u| held.contains(*u))
            .cloned()
            .collect();
        Some(left)
    };
    let pending = UncountedTerminatedPods {
        succeeded: keep(&uncounted.succeeded),
        failed: keep(&uncounted.failed),
    };

    // 3. Start and stop pods.
    let failure = manage_pods(&ctx, &job, &key, &plan, &owner, &about).await;

    // 4. The counts and conditions.
    let status = next_status(&job, &plan, &pending, now);
    if Some(&status) != job.status.as_ref() {
        let mut value = serde_json::to_value(&status).expect("status serializes");
        for f in [
            "completionTime",
            "startTime",
            "completedIndexes",
            "conditions",
        ] {
            if value.get(f).is_none() {
                value[f] = serde_json::Value::Null;
            }
        }
        patch_status(&ctx, &ns, &name, value).await?;
        record_transitions(&ctx, &about, &job, &status);
    }
    if let Some(message) = failure {
        return Err(JobError::Pods { job: key, message });
    }
    if !held.is_empty() {
        return Err(JobError::Uncounted {
            job: key,
            pending: held.len(),
        });
    }
    Ok(plan.requeue)
}

async fn patch_status(
    ctx: &Context,
    ns: &str,
    name: &str,
    status: serde_json::Value,
) -> Result<(), JobError> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map(|_| ())
    .map_err(|source| JobError::Status {
        job: owner_key(ns, name),
        source,
    })
}

/// Events for conditions this sync set.
fn record_transitions(
    ctx: &Context,
    about: &k8s_openapi::api::core::v1::ObjectReference,
    job: &Job,
    status: &k8s_openapi::api::batch::v1::JobStatus,
) {
    let had = |t: &str, s: &str| {
        job.status
            .as_ref()
            .and_then(|st| st.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == t && c.status == s))
    };
    for c in status.conditions.iter().flatten() {
        if had(&c.type_, &c.status) {
            continue;
        }
        let message = c.message.clone().unwrap_or_default();
        match (c.type_.as_str(), c.status.as_str()) {
            ("Complete", "True") => {
                ctx.recorder
                    .normal(about.clone(), "Completed", "Job completed".into())
            }
            ("Failed", "True") => ctx.recorder.warning(
                about.clone(),
                c.reason.as_deref().unwrap_or("Failed"),
                message,
            ),
            ("Suspended", "True") => {
                ctx.recorder
                    .normal(about.clone(), "Suspended", "Job suspended".into())
            }
            ("Suspended", "False") => {
                ctx.recorder
                    .normal(about.clone(), "Resumed", "Job resumed".into())
            }
            _ => {}
        }
    }
}

/// Creates and deletes the pods the plan asks for; the first error's
/// message, if any.
async fn manage_pods(
    ctx: &Context,
    job: &Job,
    key: &str,
    plan: &Plan,
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    about: &k8s_openapi::api::core::v1::ObjectReference,
) -> Option<String> {
    if plan.create.is_empty() && plan.delete.is_empty() {
        return None;
    }
    let ns = job.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let names: Vec<String> = plan.delete.iter().map(|p| p.name_any()).collect();
    ctx.expectations.lock().expect("expectations").expect(
        key,
        plan.create.len(),
        &names,
        Instant::now(),
    );
    let mut error = None;
    let params = DeleteParams::default();
    let deletes = join_all(names.iter().map(|n| api.delete(n, &params))).await;
    for (n, r) in names.iter().zip(deletes) {
        match r {
            Ok(_) => ctx.recorder.normal(
                about.clone(),
                "SuccessfulDelete",
                format!("Deleted pod: {n}"),
            ),
            Err(e) => {
                ctx.expectations
                    .lock()
                    .expect("expectations")
                    .deletion_observed(key, n);
                if !matches!(&e, kube::Error::Api(s) if s.code == 404) {
                    error.get_or_insert(format!("Error deleting: {}", api_message(&e)));
                }
            }
        }
    }
    let new_pods: Vec<Pod> = plan
        .create
        .iter()
        .map(|i| {
            let failures = i
                .and_then(|i| plan.index_failures.get(&i))
                .map_or(0, |f| f.count);
            job_pod(job, *i, failures, owner.clone())
        })
        .collect();
    let params = PostParams::default();
    let creates = join_all(new_pods.iter().map(|p| api.create(&params, p))).await;
    for r in creates {
        match r {
            Ok(p) => ctx.recorder.normal(
                about.clone(),
                "SuccessfulCreate",
                format!("Created pod: {}", p.name_any()),
            ),
            Err(e) => {
                ctx.expectations
                    .lock()
                    .expect("expectations")
                    .creation_observed(key);
                let message = format!("Error creating: {}", api_message(&e));
                ctx.recorder
                    .warning(about.clone(), "FailedCreate", message.clone());
                error.get_or_insert(message);
            }
        }
    }
    error
}
