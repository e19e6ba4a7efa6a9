//! The StatefulSet controller (kube-controller-manager's
//! `statefulset-controller`): pods `<set>-<ordinal>` with stable hostnames
//! under the set's Service, their claims from `volumeClaimTemplates`
//! (created before the pod, kept after it), OrderedReady or Parallel
//! management, RollingUpdate with partition and maxUnavailable, OnDelete,
//! `persistentVolumeClaimRetentionPolicy`, a ControllerRevision per
//! template, and the status `kubectl rollout status sts` reads.
//!
//! A client of the API on the shared informers (StatefulSets, pods,
//! claims, ControllerRevisions) with a work queue of set keys. The
//! decisions are in [`super::statefulset_decide`].

use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::controller_history::{self as history, HistoryStep};
use super::controller_ref_manager::{ClaimError, adopt_and_release};
use super::expectations::Expectations;
use super::informers::{Change, Informers, SharedInformer};
use super::pod_owner_changes::PodOwners;
use super::replicaset_decide::{claim, controller_of};
use super::statefulset_decide::{self as decide, Action};
use super::work_queue::{self, Queue};
use crate::event_recorder::{EventRecorder, reference};

pub const COMPONENT: &str = "statefulset-controller";
/// `--concurrent-statefulset-syncs`.
pub const CONCURRENT_SYNCS: u16 = 5;

#[derive(Debug, thiserror::Error)]
pub enum StatefulSetError {
    #[error("{verb} {what} for StatefulSet {set}: {source}")]
    Api {
        verb: &'static str,
        what: String,
        set: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Claim(#[from] ClaimError),
}

struct Context {
    client: kube::Client,
    sets: SharedInformer<StatefulSet>,
    pods: SharedInformer<Pod>,
    claims: SharedInformer<PersistentVolumeClaim>,
    revisions: SharedInformer<ControllerRevision>,
    recorder: EventRecorder,
}

/// Runs the controller on the shared informers until they stop.
pub async fn run(informers: Informers) -> anyhow::Result<()> {
    let client = informers.client();
    let ctx = Arc::new(Context {
        recorder: EventRecorder::new(client.clone(), COMPONENT),
        client,
        sets: informers.get(),
        pods: informers.get(),
        claims: informers.get(),
        revisions: informers.get(),
    });
    let (queue, keys) = work_queue::queue::<StatefulSet>();
    // The set's sync reads the world afresh; expectations only feed the
    // shared pod-event mapping.
    let expectations = Mutex::new(Expectations::default());
    let pod_changes = PodOwners {
        owners: &ctx.sets,
        pods: &ctx.pods,
        expectations: &expectations,
        selects,
    }
    .watch(queue.clone());
    let other_changes = watch_claims_and_revisions(ctx.clone(), queue);
    for synced in [
        Box::pin(ctx.sets.synced()) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
        Box::pin(ctx.pods.synced()),
        Box::pin(ctx.claims.synced()),
        Box::pin(ctx.revisions.synced()),
    ] {
        synced.await;
    }
    let workers = work_queue::run(
        COMPONENT,
        ctx.sets.store.clone(),
        keys,
        ctx.clone(),
        CONCURRENT_SYNCS,
        |set, ctx| sync(set, ctx),
    );
    tokio::select! {
        _ = pod_changes => {}
        _ = other_changes => {}
        _ = workers => {}
    }
    Ok(())
}

fn selects(set: &StatefulSet, labels: &std::collections::BTreeMap<String, String>) -> bool {
    set.spec.as_ref().is_some_and(|s| {
        !kubelab_rules::selector::is_empty(&s.selector)
            && kubelab_rules::selector::matches(&s.selector, labels)
    })
}

/// A deleted claim (its pod needs it back) and revision changes as set keys.
async fn watch_claims_and_revisions(ctx: Arc<Context>, queue: Queue<StatefulSet>) {
    let mut claims = ctx.claims.subscribe();
    let mut revisions = ctx.revisions.subscribe();
    ctx.sets.synced().await;
    loop {
        tokio::select! {
            change = claims.recv() => match change {
                Ok(Change::Deleted(c)) => {
                    let ns = c.namespace();
                    for s in ctx.sets.store.state() {
                        if s.namespace() == ns && selects(&s, c.labels()) {
                            queue.add_object(&s);
                        }
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => queue.add_all(&ctx.sets.store),
                Err(RecvError::Closed) => return,
            },
            change = revisions.recv() => match change {
                Ok(Change::Applied(r) | Change::Deleted(r)) => {
                    if let Some(o) = controller_of(&r.metadata).filter(|o| o.kind == "StatefulSet") {
                        queue.add(r.namespace().as_deref(), &o.name);
                    }
                }
                Ok(Change::Resync) | Err(RecvError::Lagged(_)) => queue.add_all(&ctx.sets.store),
                Err(RecvError::Closed) => return,
            },
        }
    }
}

fn api_err(
    verb: &'static str,
    what: impl Into<String>,
    set: &str,
) -> impl FnOnce(kube::Error) -> StatefulSetError {
    let (what, set) = (what.into(), set.to_owned());
    move |source| StatefulSetError::Api {
        verb,
        what,
        set,
        source,
    }
}

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// `syncStatefulSet`.
async fn sync(
    set: Arc<StatefulSet>,
    ctx: Arc<Context>,
) -> work_queue::SyncResult<StatefulSetError> {
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let ns = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let uid = set.metadata.uid.clone().unwrap_or_default();
    let in_ns: Vec<Arc<Pod>> = ctx
        .pods
        .store
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|p| {
            decide::ordinal_of(&set, p).is_some()
                || controller_of(&p.metadata).is_some_and(|r| r.uid == uid)
        })
        .collect();
    let claims = claim(&in_ns, &uid, |l| selects(&set, l), false);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    adopt_and_release(&pods_api, &claims, &decide::controller_ref(&set)).await?;
    let pods: Vec<Pod> = claims.owned.iter().map(|p| (**p).clone()).collect();

    let (current, update, revisions) = construct_history(&ctx, &set).await?;
    let template_of = |hash: &str| {
        revisions
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(&format!("{name}-{hash}")))
            .and_then(history::revision_template)
            .unwrap_or_else(|| {
                set.spec
                    .as_ref()
                    .map(|s| s.template.clone())
                    .unwrap_or_default()
            })
    };
    let existing_claims: std::collections::HashSet<String> = ctx
        .claims
        .store
        .state()
        .iter()
        .filter(|c| c.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    let claims_missing = |o: i32| {
        decide::claims_for(&set, o)
            .iter()
            .any(|c| !existing_claims.contains(c.metadata.name.as_deref().unwrap_or_default()))
    };
    let about = reference("apps/v1", "StatefulSet", &set.metadata);
    let actions = decide::plan(&set, &pods, &current, &update, claims_missing);
    for action in actions {
        match action {
            Action::CreateClaims { ordinal } => {
                create_claims(&ctx, &set, ordinal, &existing_claims).await?;
            }
            Action::Create {
                ordinal,
                update_revision,
            } => {
                create_claims(&ctx, &set, ordinal, &existing_claims).await?;
                let hash = if update_revision { &update } else { &current };
                let pod = decide::pod_for(&set, &template_of(hash), hash, ordinal);
                let pod_name = decide::pod_name(&set, ordinal);
                match pods_api.create(&PostParams::default(), &pod).await {
                    Ok(_) => ctx.recorder.normal(
                        about.clone(),
                        "SuccessfulCreate",
                        format!("create Pod {pod_name} in StatefulSet {name} successful"),
                    ),
                    // The old pod of that name is still going away.
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => {
                        ctx.recorder.warning(
                            about.clone(),
                            "FailedCreate",
                            format!(
                                "create Pod {pod_name} in StatefulSet {name} failed error: {}",
                                api_message(&e)
                            ),
                        );
                        return Err(api_err("creating", format!("pod {pod_name}"), &name)(e));
                    }
                }
            }
            Action::Delete(pod_name) => {
                match pods_api.delete(&pod_name, &DeleteParams::default()).await {
                    Ok(_) => ctx.recorder.normal(
                        about.clone(),
                        "SuccessfulDelete",
                        format!("delete Pod {pod_name} in StatefulSet {name} successful"),
                    ),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => {
                        ctx.recorder.warning(
                            about.clone(),
                            "FailedDelete",
                            format!(
                                "delete Pod {pod_name} in StatefulSet {name} failed error: {}",
                                api_message(&e)
                            ),
                        );
                        return Err(api_err("deleting", format!("pod {pod_name}"), &name)(e));
                    }
                }
            }
        }
    }
    delete_scaled_down_claims(&ctx, &set, &pods).await?;
    let status = decide::status(&set, &pods, &current, &update, jiff::Timestamp::now());
    update_status(&ctx, &set, status).await?;
    cleanup_history(&ctx, &set, &revisions, &pods, &current, &update).await?;
    Ok(None)
}

/// `createPersistentVolumeClaims`: the ordinal's claims not there yet.
async fn create_claims(
    ctx: &Context,
    set: &StatefulSet,
    ordinal: i32,
    existing: &std::collections::HashSet<String>,
) -> Result<(), StatefulSetError> {
    let ns = set.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let about = reference("apps/v1", "StatefulSet", &set.metadata);
    for c in decide::claims_for(set, ordinal) {
        let claim_name = c.metadata.name.clone().unwrap_or_default();
        if existing.contains(&claim_name) {
            continue;
        }
        let pod = decide::pod_name(set, ordinal);
        match api.create(&PostParams::default(), &c).await {
            Ok(_) => ctx.recorder.normal(
                about.clone(),
                "SuccessfulCreate",
                format!(
                    "create Claim {claim_name} Pod {pod} in StatefulSet {} success",
                    set.name_any()
                ),
            ),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                ctx.recorder.warning(
                    about.clone(),
                    "FailedCreate",
                    format!("create Claim {claim_name} for Pod {pod} in StatefulSet {} failed error: {}", set.name_any(), api_message(&e)),
                );
                return Err(api_err(
                    "creating",
                    format!("claim {claim_name}"),
                    &set.name_any(),
                )(e));
            }
        }
    }
    Ok(())
}

/// `whenScaled: Delete`: claims of ordinals the set no longer has go
/// once their pods are gone.
async fn delete_scaled_down_claims(
    ctx: &Context,
    set: &StatefulSet,
    pods: &[Pod],
) -> Result<(), StatefulSetError> {
    let spec = set.spec.clone().unwrap_or_default();
    if spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|p| p.when_scaled.as_deref())
        != Some("Delete")
    {
        return Ok(());
    }
    let ns = set.namespace().unwrap_or_default();
    let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0);
    let end = start + decide::replicas(set);
    let live: std::collections::HashSet<i32> = pods
        .iter()
        .filter_map(|p| decide::ordinal_of(set, p))
        .collect();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    for c in ctx.claims.store.state() {
        if c.metadata.namespace.as_deref() != Some(ns.as_str())
            || c.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let claim_name = c.metadata.name.clone().unwrap_or_default();
        let condemned = spec.volume_claim_templates.iter().flatten().any(|t| {
            let prefix = format!(
                "{}-{}-",
                t.metadata.name.as_deref().unwrap_or_default(),
                set.name_any()
            );
            claim_name
                .strip_prefix(&prefix)
                .and_then(|n| n.parse::<i32>().ok())
                .is_some_and(|o| (o < start || o >= end) && !live.contains(&o))
        });
        if condemned && selects(set, c.labels()) {
            match api.delete(&claim_name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    return Err(api_err(
                        "deleting",
                        format!("claim {claim_name}"),
                        &set.name_any(),
                    )(e));
                }
            }
        }
    }
    Ok(())
}

/// The current and update revisions' hashes (creating or renumbering the
/// update revision's ControllerRevision), and the set's revisions.
async fn construct_history(
    ctx: &Context,
    set: &StatefulSet,
) -> Result<(String, String, Vec<ControllerRevision>), StatefulSetError> {
    let ns = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let uid = set.metadata.uid.clone().unwrap_or_default();
    let mut revisions: Vec<ControllerRevision> = ctx
        .revisions
        .store
        .state()
        .iter()
        .filter(|r| r.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|r| controller_of(&r.metadata).is_some_and(|o| o.uid == uid))
        .map(|r| (**r).clone())
        .collect();
    let template = set
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let collisions = set.status.as_ref().and_then(|s| s.collision_count);
    let hash = kubelab_rules::template_hash::compute_hash(&template, collisions);
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    let data = history::patch_data(&template);
    let step = history::history_step(&revisions, &data, |n| {
        history::new_revision(
            &set.metadata,
            decide::controller_ref(set),
            &template,
            &hash,
            n,
        )
    });
    let update_name = match step {
        HistoryStep::Create(rev) => {
            let rev_name = rev.metadata.name.clone().unwrap_or_default();
            match api.create(&PostParams::default(), &rev).await {
                Ok(r) => revisions.push(r),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    // Another template under this hash: count the collision.
                    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
                    sets.patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(
                            json!({"status": {"collisionCount": collisions.unwrap_or(0) + 1}}),
                        ),
                    )
                    .await
                    .map_err(api_err("updating", "collisionCount", &name))?;
                }
                Err(e) => {
                    return Err(api_err("creating", format!("revision {rev_name}"), &name)(
                        e,
                    ));
                }
            }
            rev_name
        }
        HistoryStep::Current {
            name: rev_name,
            renumber_to,
            duplicates,
        } => {
            for d in &duplicates {
                match api.delete(d, &DeleteParams::default()).await {
                    Ok(_) | Err(kube::Error::Api(_)) => {}
                    Err(e) => return Err(api_err("deleting", format!("revision {d}"), &name)(e)),
                }
            }
            if let Some(revision) = renumber_to {
                api.patch(
                    &rev_name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"revision": revision})),
                )
                .await
                .map_err(api_err(
                    "renumbering",
                    format!("revision {rev_name}"),
                    &name,
                ))?;
            }
            rev_name
        }
    };
    let hash_of = |rev_name: &str| {
        rev_name
            .strip_prefix(&format!("{name}-"))
            .unwrap_or(rev_name)
            .to_owned()
    };
    let update = hash_of(&update_name);
    let current = set
        .status
        .as_ref()
        .and_then(|s| s.current_revision.clone())
        .filter(|c| {
            revisions
                .iter()
                .any(|r| r.metadata.name.as_deref() == Some(&format!("{name}-{c}")))
        })
        .unwrap_or_else(|| update.clone());
    Ok((current, update, revisions))
}

/// `truncateHistory`: revisions beyond `revisionHistoryLimit` that are
/// neither current nor update and run no pod.
async fn cleanup_history(
    ctx: &Context,
    set: &StatefulSet,
    revisions: &[ControllerRevision],
    pods: &[Pod],
    current: &str,
    update: &str,
) -> Result<(), StatefulSetError> {
    let limit = set
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10)
        .max(0) as usize;
    let name = set.name_any();
    let live: std::collections::HashSet<String> = pods
        .iter()
        .filter_map(decide::revision_of)
        .chain([current, update])
        .map(|h| format!("{name}-{h}"))
        .collect();
    let mut old: Vec<&ControllerRevision> = revisions
        .iter()
        .filter(|r| !live.contains(r.metadata.name.as_deref().unwrap_or_default()))
        .collect();
    if old.len() <= limit {
        return Ok(());
    }
    old.sort_by_key(|r| r.revision);
    let api: Api<ControllerRevision> =
        Api::namespaced(ctx.client.clone(), &set.namespace().unwrap_or_default());
    for r in &old[..old.len() - limit] {
        let rev_name = r.metadata.name.clone().unwrap_or_default();
        match api.delete(&rev_name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(api_err("deleting", format!("revision {rev_name}"), &name)(
                    e,
                ));
            }
        }
    }
    Ok(())
}

async fn update_status(
    ctx: &Context,
    set: &StatefulSet,
    status: StatefulSetStatus,
) -> Result<(), StatefulSetError> {
    if set.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<StatefulSet> =
        Api::namespaced(ctx.client.clone(), &set.namespace().unwrap_or_default());
    match api
        .patch_status(
            &set.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(api_err("updating", "status", &set.name_any())(e)),
    }
}
