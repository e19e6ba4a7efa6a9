//! The TTL-after-finished controller (`ttl-after-finished-controller`):
//! deletes a finished Job (and, in the foreground, its pods)
//! `ttlSecondsAfterFinished` after it finished.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};

use super::informers::{Informers, SharedInformer};
use super::work_queue;

pub const CONCURRENT_SYNCS: u16 = 5;
const COMPONENT: &str = "ttl-after-finished-controller";

/// When a Job finished: its `Complete` or `Failed` condition's time.
pub fn finish_time(job: &Job) -> Option<Timestamp> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

/// What to do with a Job now.
#[derive(Debug, PartialEq, Eq)]
pub enum Expiry {
    /// No TTL, not finished, or already being deleted.
    Never,
    Delete,
    In(Duration),
}

/// `processTTL` / `timeLeft`.
pub fn expiry(job: &Job, now: Timestamp) -> Expiry {
    let ttl = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished);
    let (Some(ttl), Some(done)) = (ttl, finish_time(job)) else {
        return Expiry::Never;
    };
    if job.metadata.deletion_timestamp.is_some() {
        return Expiry::Never;
    }
    let left = done.as_second() + i64::from(ttl) - now.as_second();
    if left <= 0 {
        Expiry::Delete
    } else {
        Expiry::In(Duration::from_secs(left as u64))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("deleting job {job}: {source}")]
pub struct TtlError {
    job: String,
    source: kube::Error,
}

pub async fn run(informers: Informers) -> anyhow::Result<()> {
    let client = informers.client();
    let jobs: SharedInformer<Job> = informers.get::<Job>();
    let (queue, keys) = work_queue::queue::<Job>();
    let changes = jobs.subscribe();
    jobs.synced().await;
    queue.add_all(&jobs.store);
    let feed = queue.follow(changes, &jobs.store);
    let workers = work_queue::run(
        COMPONENT,
        jobs.store.clone(),
        keys,
        Arc::new(client),
        CONCURRENT_SYNCS,
        |job: Arc<Job>, client: Arc<kube::Client>| async move {
            match expiry(&job, Timestamp::now()) {
                Expiry::Never => Ok(None),
                Expiry::In(d) => Ok(Some(d)),
                Expiry::Delete => {
                    let api: Api<Job> =
                        Api::namespaced((*client).clone(), &job.namespace().unwrap_or_default());
                    let params = DeleteParams {
                        propagation_policy: Some(PropagationPolicy::Foreground),
                        preconditions: Some(Preconditions {
                            uid: job.metadata.uid.clone(),
                            resource_version: job.metadata.resource_version.clone(),
                        }),
                        ..Default::default()
                    };
                    tracing::info!(controller = COMPONENT, job = %job.name_any(), "cleaning up finished job");
                    match api.delete(&job.name_any(), &params).await {
                        Ok(_) => Ok(None),
                        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
                        Err(source) => Err(TtlError {
                            job: job.name_any(),
                            source,
                        }),
                    }
                }
            }
        },
    );
    tokio::select! {
        _ = feed => {}
        _ = workers => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finished_jobs_expire_ttl_seconds_after_their_final_condition() {
        let job = |ttl: Option<i32>, cond: Option<&str>| -> Job {
            let conds = cond
                .map(|c| json!([{"type": c, "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}]))
                .unwrap_or(json!([]));
            serde_json::from_value(json!({"metadata": {"name": "pi"},
                "spec": {"ttlSecondsAfterFinished": ttl, "template": {}},
                "status": {"conditions": conds}}))
            .unwrap()
        };
        let at = |s: &str| -> Timestamp { s.parse().unwrap() };
        assert_eq!(
            expiry(
                &job(Some(100), Some("Complete")),
                at("2025-01-01T00:00:40Z")
            ),
            Expiry::In(Duration::from_secs(60))
        );
        assert_eq!(
            expiry(&job(Some(0), Some("Failed")), at("2025-01-01T00:00:00Z")),
            Expiry::Delete
        );
        assert_eq!(
            expiry(&job(None, Some("Complete")), at("2025-01-02T00:00:00Z")),
            Expiry::Never
        );
        assert_eq!(
            expiry(&job(Some(5), None), at("2025-01-02T00:00:00Z")),
            Expiry::Never
        );
        assert_eq!(
            expiry(
                &job(Some(5), Some("FailureTarget")),
                at("2025-01-02T00:00:00Z")
            ),
            Expiry::Never
        );
    }
}
