//! The ReplicaSet controller, which also runs ReplicationControllers (as
//! kube-controller-manager's does): keeps `spec.replicas` active pods of
//! each, adopting matching orphans and releasing pods whose labels stopped
//! matching, and reports the counts in `status`. A client of the API:
//! shared pod and owner informers, a work queue of owner keys, writes
//! through `kube::Client`. Decisions are in [`super::replicaset_decide`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::join_all;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::controller_ref_manager::{ClaimError, adopt_and_release};
use super::expectations::Expectations;
use super::informers::{Informers, SharedInformer};
use super::pod_owner_changes::{PodOwners, owner_key};
use super::replicaset_decide::{
    BURST_REPLICAS, ReplicaCounts, claim, controller_ref, count, is_active, next_available_in,
    pod_from_template, pods_to_delete, slow_start_batches,
};
use super::work_queue;
use crate::event_recorder::{EventRecorder, reference};

/// How many owners sync at once (`--concurrent-replicaset-syncs`).
pub const CONCURRENT_SYNCS: u16 = 5;

#[derive(Debug, thiserror::Error)]
pub enum ReplicaSetError {
    #[error("{verb} pod {pod}: {source}")]
    Pod {
        verb: &'static str,
        pod: String,
        source: kube::Error,
    },
    #[error("updating status of {owner}: {source}")]
    Status { owner: String, source: kube::Error },
    #[error("{0}")]
    Replicas(String),
    #[error(transparent)]
    Claim(#[from] ClaimError),
}

/// What differs between a ReplicaSet and a ReplicationController: how
/// each reads as a ReplicaSet (upstream's RC controller converts an RC to
/// an RS the same way); everything else is written once, over that view.
pub trait Replicated:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + k8s_openapi::Resource
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    /// The events' `source.component`.
    const COMPONENT: &'static str;
    fn spec_view(&self) -> SpecView<'_>;
    /// The status as a ReplicaSet's (the same fields and conditions).
    fn status_view(&self) -> ReplicaSetStatus;

    fn replicas(&self) -> i32 {
        self.spec_view().replicas.unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec_view().min_ready_seconds.unwrap_or(0)
    }
    /// An empty selector selects nothing for a controller.
    fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.spec_view().selector.is_some_and(|s| {
            !kubelab_rules::selector::is_empty(&s) && kubelab_rules::selector::matches(&s, labels)
        })
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec_view().template
    }
    /// The status this object should have; `None` when it has it already.
    /// `ReplicaFailure` is set on a failed create/delete and cleared when a
    /// sync succeeds; kept (with its time) while the failure persists.
    fn new_status(&self, c: ReplicaCounts, failure: Option<(&str, String)>) -> Option<Value> {
        let old = self.status_view();
        let mut conditions = old.conditions.clone().unwrap_or_default();
        let is_failure = |c: &ReplicaSetCondition| c.type_ == "ReplicaFailure";
        let existing = conditions.iter().any(is_failure);
        match failure {
            Some((reason, message)) if !existing => conditions.push(ReplicaSetCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(message),
                last_transition_time: Some(Time(jiff::Timestamp::now())),
            }),
            None if existing => conditions.retain(|c| !is_failure(c)),
            _ => {}
        }
        let nonzero = |n: i32| (n != 0).then_some(n);
        let status = ReplicaSetStatus {
            replicas: c.replicas,
            fully_labeled_replicas: nonzero(c.fully_labeled),
            ready_replicas: nonzero(c.ready),
            available_replicas: nonzero(c.available),
            observed_generation: self.meta().generation,
            conditions: (!conditions.is_empty()).then_some(conditions),
            terminating_replicas: old.terminating_replicas,
        };
        (status != old).then(|| serde_json::to_value(status).expect("status serializes"))
    }
}

/// A ReplicaSet's or ReplicationController's spec, read as a ReplicaSet's.
pub struct SpecView<'a> {
    replicas: Option<i32>,
    min_ready_seconds: Option<i32>,
    selector: Option<Cow<'a, LabelSelector>>,
    template: Option<&'a PodTemplateSpec>,
}

impl Replicated for ReplicaSet {
    const COMPONENT: &'static str = "replicaset-controller";

    fn spec_view(&self) -> SpecView<'_> {
        let spec = self.spec.as_ref();
        SpecView {
            replicas: spec.and_then(|s| s.replicas),
            min_ready_seconds: spec.and_then(|s| s.min_ready_seconds),
            selector: spec.map(|s| Cow::Borrowed(&s.selector)),
            template: spec.and_then(|s| s.template.as_ref()),
        }
    }
    fn status_view(&self) -> ReplicaSetStatus {
        self.status.clone().unwrap_or_default()
    }
}

impl Replicated for ReplicationController {
    const COMPONENT: &'static str = "replication-controller";

    /// The RC's selector map is the RS's `matchLabels`.
    fn spec_view(&self) -> SpecView<'_> {
        let spec = self.spec.as_ref();
        SpecView {
            replicas: spec.and_then(|s| s.replicas),
            min_ready_seconds: spec.and_then(|s| s.min_ready_seconds),
            selector: spec.and_then(|s| s.selector.clone()).map(|m| {
                Cow::Owned(LabelSelector {
                    match_labels: Some(m),
                    match_expressions: None,
                })
            }),
            template: spec.and_then(|s| s.template.as_ref()),
        }
    }
    fn status_view(&self) -> ReplicaSetStatus {
        let status = serde_json::to_value(self.status.clone().unwrap_or_default());
        serde_json::from_value(status.expect("status serializes"))
            .expect("an RC status reads as an RS status")
    }
}

struct Context<K: Replicated> {
    client: kube::Client,
    pods: SharedInformer<Pod>,
    owners: SharedInformer<K>,
    expectations: Mutex<Expectations>,
    recorder: EventRecorder,
}

/// Runs the controller for `K` until its informers end.
pub async fn run<K: Replicated>(informers: Informers) -> anyhow::Result<()> {
    let client = informers.client();
    let ctx = Arc::new(Context::<K> {
        recorder: EventRecorder::new(client.clone(), K::COMPONENT),
        client,
        pods: informers.get::<Pod>(),
        owners: informers.get::<K>(),
        expectations: Mutex::default(),
    });
    let pod_owners = PodOwners {
        owners: &ctx.owners,
        pods: &ctx.pods,
        expectations: &ctx.expectations,
        selects: |o: &K, labels| o.selects(labels),
    };
    work_queue::serve(
        K::COMPONENT,
        ctx.owners.store.clone(),
        ctx.clone(),
        CONCURRENT_SYNCS,
        |queue| pod_owners.watch(queue),
        async {
            tokio::join!(ctx.pods.synced(), ctx.owners.synced());
        },
        |owner, ctx| sync(owner, ctx),
    )
    .await;
    Ok(())
}

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// `syncReplicaSet`.
async fn sync<K: Replicated>(
    owner: Arc<K>,
    ctx: Arc<Context<K>>,
) -> work_queue::SyncResult<ReplicaSetError> {
    let ns = owner.namespace().unwrap_or_default();
    let name = owner.name_any();
    let key = owner_key(&ns, &name);
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let deleting = owner.meta().deletion_timestamp.is_some();
    let all: Vec<Arc<Pod>> = ctx
        .pods
        .store
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .collect();
    let claims = claim(&all, &uid, |l| owner.selects(l), deleting);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let owner_ref = controller_ref(&K::API_VERSION, K::KIND, owner.meta());
    adopt_and_release(&pods, &claims, &owner_ref).await?;
    let active: Vec<Arc<Pod>> = claims.owned.into_iter().filter(|p| is_active(p)).collect();
    let satisfied = ctx
        .expectations
        .lock()
        .expect("expectations")
        .satisfied(&key, Instant::now());
    let mut failure = None;
    if satisfied && !deleting {
        let want = owner.replicas().max(0) as usize;
        if active.len() < want {
            failure = create_pods(&ctx, &owner, &key, want - active.len(), &owner_ref)
                .await
                .map(|m| ("FailedCreate", m));
        } else if active.len() > want {
            failure = delete_pods(&ctx, &owner, &key, &active, &all, active.len() - want)
                .await
                .map(|m| ("FailedDelete", m));
        }
    }
    let now = jiff::Timestamp::now();
    let template_labels = owner
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let counts = count(&active, &template_labels, owner.min_ready_seconds(), now);
    let failed = failure.as_ref().map(|(_, m)| m.clone());
    if let Some(status) = owner.new_status(counts, failure) {
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": with_nulls(status) })),
        )
        .await
        .map_err(|source| ReplicaSetError::Status {
            owner: key.clone(),
            source,
        })?;
    }
    if let Some(m) = failed {
        return Err(ReplicaSetError::Replicas(m));
    }
    Ok(next_available_in(&active, owner.min_ready_seconds(), now))
}

/// A merge patch removes fields only when told so with `null`.
fn with_nulls(mut status: Value) -> Value {
    for f in [
        "conditions",
        "fullyLabeledReplicas",
        "readyReplicas",
        "availableReplicas",
    ] {
        if status.get(f).is_none() {
            status[f] = Value::Null;
        }
    }
    status
}

/// Creates `n` pods (at most a burst) in slow-start batches; returns the
/// first error's message.
async fn create_pods<K: Replicated>(
    ctx: &Context<K>,
    owner: &K,
    key: &str,
    n: usize,
    owner_ref: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> Option<String> {
    let n = n.min(BURST_REPLICAS);
    let ns = owner.namespace().unwrap_or_default();
    let about = reference(&K::API_VERSION, K::KIND, owner.meta());
    ctx.expectations
        .lock()
        .expect("expectations")
        .expect_creations(key, n, Instant::now());
    let template = owner.template().cloned().unwrap_or_default();
    let pod = pod_from_template(&template, &ns, &owner.name_any(), owner_ref.clone());
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut done = 0;
    let params = PostParams::default();
    for batch in slow_start_batches(n) {
        let results = join_all((0..batch).map(|_| api.create(&params, &pod))).await;
        done += batch;
        let mut error = None;
        for r in results {
            match r {
                Ok(p) => ctx.recorder.normal(
                    about.clone(),
                    "SuccessfulCreate",
                    format!("Created pod: {}", p.name_any()),
                ),
                Err(e) => {
                    let message = format!("Error creating: {}", api_message(&e));
                    ctx.expectations
                        .lock()
                        .expect("expectations")
                        .creation_observed(key);
                    ctx.recorder
                        .warning(about.clone(), "FailedCreate", message.clone());
                    error.get_or_insert(message);
                }
            }
        }
        if let Some(e) = error {
            // The rest of the creations will not happen: stop expecting them.
            let mut exp = ctx.expectations.lock().expect("expectations");
            for _ in done..n {
                exp.creation_observed(key);
            }
            return Some(e);
        }
    }
    None
}

async fn delete_pods<K: Replicated>(
    ctx: &Context<K>,
    owner: &K,
    key: &str,
    active: &[Arc<Pod>],
    related: &[Arc<Pod>],
    n: usize,
) -> Option<String> {
    let victims = pods_to_delete(active, related, n.min(BURST_REPLICAS));
    let names: Vec<String> = victims.iter().map(|p| p.name_any()).collect();
    ctx.expectations
        .lock()
        .expect("expectations")
        .expect_deletions(key, &names, Instant::now());
    let about = reference(&K::API_VERSION, K::KIND, owner.meta());
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &owner.namespace().unwrap_or_default());
    let params = DeleteParams::default();
    let results = join_all(names.iter().map(|n| api.delete(n, &params))).await;
    let mut error = None;
    for (name, r) in names.iter().zip(results) {
        match r {
            Ok(_) => ctx.recorder.normal(
                about.clone(),
                "SuccessfulDelete",
                format!("Deleted pod: {name}"),
            ),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                ctx.expectations
                    .lock()
                    .expect("expectations")
                    .deletion_observed(key, name);
            }
            Err(e) => {
                ctx.expectations
                    .lock()
                    .expect("expectations")
                    .deletion_observed(key, name);
                let message = format!("Error deleting: {}", api_message(&e));
                ctx.recorder
                    .warning(about.clone(), "FailedDelete", message.clone());
                error.get_or_insert(message);
            }
        }
    }
    error
}
