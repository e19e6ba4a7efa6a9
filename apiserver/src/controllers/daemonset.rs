//! The DaemonSet controller (kube-controller-manager's
//! `daemonset-controller`): one pod of each DaemonSet on every node that
//! should run it — created without a node, pinned to it by node affinity
//! so the scheduler places it — pods removed from nodes that should not,
//! RollingUpdate (`maxUnavailable` or `maxSurge`) and OnDelete updates, a
//! ControllerRevision per template (`controller-revision-hash`), and the
//! status `kubectl get ds` and `kubectl rollout status ds` read.
//!
//! A client of the API on the shared informers (DaemonSets, pods, nodes,
//! ControllerRevisions) with a work queue of DaemonSet keys; expectations
//! keep a burst of events from creating a second pod on a node. The
//! decisions are in [`super::daemonset_decide`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::controller_ref_manager::{ClaimError, adopt_and_release};
use super::daemonset_decide::{self as decide, HistoryStep, Plan};
use super::expectations::Expectations;
use super::informers::{Change, Informers, SharedInformer};
use super::pod_owner_changes::{PodOwners, owner_key};
use super::replicaset_decide::{claim, controller_of, slow_start_batches};
use super::work_queue::{self, Queue};
use crate::event_recorder::{EventRecorder, reference};

pub const COMPONENT: &str = "daemonset-controller";
/// `--concurrent-daemonset-syncs`.
pub const CONCURRENT_SYNCS: u16 = 2;
/// `BurstReplicas`: most creates or deletes of one sync.
const BURST_REPLICAS: usize = 250;
/// `revisionHistoryLimit`'s default.
const REVISION_HISTORY_LIMIT: i32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum DaemonSetError {
    #[error("{verb} {what} for daemon set {ds}: {source}")]
    Api {
        verb: &'static str,
        what: String,
        ds: String,
        #[source]
        source: kube::Error,
    },
    #[error("daemon set {ds}: {message}")]
    Sync { ds: String, message: String },
    #[error(transparent)]
    Claim(#[from] ClaimError),
}

struct Context {
    client: kube::Client,
    daemonsets: SharedInformer<DaemonSet>,
    pods: SharedInformer<Pod>,
    nodes: SharedInformer<Node>,
    revisions: SharedInformer<ControllerRevision>,
    expectations: Mutex<Expectations>,
    recorder: EventRecorder,
}

/// Runs the controller on the shared informers until they stop.
pub async fn run(informers: Informers) -> anyhow::Result<()> {
    let client = informers.client();
    let ctx = Arc::new(Context {
        recorder: EventRecorder::new(client.clone(), COMPONENT),
        client,
        daemonsets: informers.get::<DaemonSet>(),
        pods: informers.get::<Pod>(),
        nodes: informers.get::<Node>(),
        revisions: informers.get::<ControllerRevision>(),
        expectations: Mutex::default(),
    });
    let pod_owners = PodOwners {
        owners: &ctx.daemonsets,
        pods: &ctx.pods,
        expectations: &ctx.expectations,
        selects,
    };
    work_queue::serve(
        COMPONENT,
        ctx.daemonsets.store.clone(),
        ctx.clone(),
        CONCURRENT_SYNCS,
        |queue| async {
            tokio::join!(
                pod_owners.watch(queue.clone()),
                watch_nodes_and_revisions(ctx.clone(), queue)
            );
        },
        async {
            tokio::join!(
                ctx.daemonsets.synced(),
                ctx.pods.synced(),
                ctx.nodes.synced(),
                ctx.revisions.synced()
            );
        },
        |ds, ctx| sync(ds, ctx),
    )
    .await;
    Ok(())
}

fn owning_daemonset(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<String> {
    controller_of(meta)
        .filter(|r| r.kind == "DaemonSet")
        .map(|r| r.name.clone())
}

fn selects(ds: &DaemonSet, labels: &std::collections::BTreeMap<String, String>) -> bool {
    ds.spec.as_ref().is_some_and(|s| {
        !kubelab_rules::selector::is_empty(&s.selector)
            && kubelab_rules::selector::matches(&s.selector, labels)
    })
}

/// Node and ControllerRevision changes as DaemonSet keys (pods and the
/// DaemonSets themselves: [`PodOwners`]).
async fn watch_nodes_and_revisions(ctx: Arc<Context>, queue: Queue<DaemonSet>) {
    let mut nodes = ctx.nodes.subscribe();
    let mut revisions = ctx.revisions.subscribe();
    ctx.daemonsets.synced().await;
    loop {
        tokio::select! {
            // Any node change may change where daemon pods belong.
            change = nodes.recv() => match change {
                Ok(_) | Err(RecvError::Lagged(_)) => queue.add_all(&ctx.daemonsets.store),
                Err(RecvError::Closed) => return,
            },
            change = revisions.recv() => match change {
                Ok(Change::Applied(r) | Change::Deleted(r)) => {
                    if let Some(name) = owning_daemonset(&r.metadata) {
                        queue.add(r.namespace().as_deref(), &name);
                    }
                }
                Ok(Change::Resync) | Err(RecvError::Lagged(_)) => queue.add_all(&ctx.daemonsets.store),
                Err(RecvError::Closed) => return,
            },
        }
    }
}

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// `syncDaemonSet`.
async fn sync(ds: Arc<DaemonSet>, ctx: Arc<Context>) -> work_queue::SyncResult<DaemonSetError> {
    let ns = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let key = owner_key(&ns, &name);
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let nodes: Vec<Node> = ctx
        .nodes
        .store
        .state()
        .iter()
        .map(|n| (**n).clone())
        .collect();
    let in_ns: Vec<Arc<Pod>> = ctx
        .pods
        .store
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .collect();
    let claims = claim(&in_ns, &uid, |l| selects(&ds, l), false);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let owner_ref = decide::controller_ref(&ds);
    adopt_and_release(&pods_api, &claims, &owner_ref).await?;
    let pods: Vec<Pod> = claims.owned.iter().map(|p| (**p).clone()).collect();

    let (hash, old_revisions) = construct_history(&ctx, &ds, &pods).await?;
    let now = jiff::Timestamp::now();
    let satisfied = ctx
        .expectations
        .lock()
        .expect("expectations")
        .satisfied(&key, Instant::now());
    if satisfied {
        let mut plan = decide::manage(&ds, &nodes, &pods, &hash, now);
        if plan == Plan::default() && is_rolling_update(&ds) {
            plan = decide::rolling_update_step(&ds, &nodes, &pods, &hash, now);
        }
        sync_nodes(&ctx, &ds, &key, plan, &hash).await?;
        cleanup_history(&ctx, &ds, &old_revisions, &pods).await?;
    }
    let status = decide::status(&ds, &nodes, &pods, &hash, now);
    update_status(&ctx, &ds, status.clone(), satisfied).await?;
    // A ready pod becomes available after minReadySeconds: look again then.
    let min_ready = ds
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    if min_ready > 0 && Some(status.number_ready) != status.number_available {
        return Ok(Some(Duration::from_secs(min_ready as u64)));
    }
    Ok(None)
}

fn is_rolling_update(ds: &DaemonSet) -> bool {
    ds.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

/// `constructHistory`: the current revision's hash (creating or
/// renumbering its ControllerRevision, dropping duplicates), and the other
/// revisions.
async fn construct_history(
    ctx: &Context,
    ds: &DaemonSet,
    _pods: &[Pod],
) -> Result<(String, Vec<ControllerRevision>), DaemonSetError> {
    let ns = ds.namespace().unwrap_or_default();
    let key = owner_key(&ns, &ds.name_any());
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let owned: Vec<ControllerRevision> = ctx
        .revisions
        .store
        .state()
        .iter()
        .filter(|r| r.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|r| controller_of(&r.metadata).is_some_and(|o| o.uid == uid))
        .map(|r| (**r).clone())
        .collect();
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    let err = |verb, what: String| {
        let key = key.clone();
        move |source| DaemonSetError::Api {
            verb,
            what,
            ds: key,
            source,
        }
    };
    let hash = decide::template_hash(ds);
    let current = match decide::history_step(ds, &owned, &hash) {
        HistoryStep::Create(rev) => {
            let rev_name = rev.metadata.name.clone().unwrap_or_default();
            match api.create(&PostParams::default(), &rev).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    // A revision of that name holds another template: a hash
                    // collision; the next hash comes from collisionCount + 1.
                    let existing = api
                        .get_opt(&rev_name)
                        .await
                        .map_err(err("reading", format!("revision {rev_name}")))?;
                    if !existing.is_some_and(|e| decide::revision_matches(&e, ds)) {
                        bump_collision_count(ctx, ds).await?;
                        return Err(DaemonSetError::Sync {
                            ds: key.clone(),
                            message: format!("hash collision on revision {rev_name}"),
                        });
                    }
                }
                Err(e) => return Err(err("creating", format!("revision {rev_name}"))(e)),
            }
            rev_name
        }
        HistoryStep::Current {
            name,
            renumber_to,
            duplicates,
        } => {
            for d in &duplicates {
                match api.delete(d, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(err("deleting", format!("revision {d}"))(e)),
                }
            }
            if let Some(revision) = renumber_to {
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"revision": revision})),
                )
                .await
                .map_err(err("renumbering", format!("revision {name}")))?;
            }
            name
        }
    };
    let old = owned
        .into_iter()
        .filter(|r| r.metadata.name.as_deref() != Some(current.as_str()))
        .collect();
    Ok((hash, old))
}

async fn bump_collision_count(ctx: &Context, ds: &DaemonSet) -> Result<(), DaemonSetError> {
    let count = ds
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0)
        + 1;
    let api: Api<DaemonSet> =
        Api::namespaced(ctx.client.clone(), &ds.namespace().unwrap_or_default());
    api.patch_status(
        &ds.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"collisionCount": count}})),
    )
    .await
    .map_err(|source| DaemonSetError::Api {
        verb: "updating",
        what: "collisionCount".into(),
        ds: ds.name_any(),
        source,
    })?;
    Ok(())
}

/// `syncNodes`: deletes, then creates in slow-start batches, at most a
/// burst of each, with expectations set first.
async fn sync_nodes(
    ctx: &Context,
    ds: &DaemonSet,
    key: &str,
    plan: Plan,
    hash: &str,
) -> Result<(), DaemonSetError> {
    let mut create_on = plan.create_on;
    create_on.truncate(BURST_REPLICAS);
    let mut delete = plan.delete;
    delete.truncate(BURST_REPLICAS);
    if create_on.is_empty() && delete.is_empty() {
        return Ok(());
    }
    ctx.expectations.lock().expect("expectations").expect(
        key,
        create_on.len(),
        &delete,
        Instant::now(),
    );
    let ns = ds.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let about = reference("apps/v1", "DaemonSet", &ds.metadata);
    let mut first_error: Option<String> = None;

    let mut done = 0;
    for batch in slow_start_batches(create_on.len()) {
        let nodes = &create_on[done..done + batch];
        done += batch;
        let results = join_all(nodes.iter().map(|node| {
            let pod = decide::pod_for_node(ds, node, hash);
            let api = api.clone();
            async move { api.create(&PostParams::default(), &pod).await }
        }))
        .await;
        let mut failed = false;
        for (node, r) in nodes.iter().zip(results) {
            match r {
                Ok(p) => ctx.recorder.normal(
                    about.clone(),
                    "SuccessfulCreate",
                    format!("Created pod: {}", p.name_any()),
                ),
                Err(e) => {
                    failed = true;
                    ctx.expectations
                        .lock()
                        .expect("expectations")
                        .creation_observed(key);
                    let message = format!("Error creating: {}", api_message(&e));
                    tracing::warn!(ds = %key, %node, "{message}");
                    ctx.recorder
                        .warning(about.clone(), "FailedCreate", message.clone());
                    first_error.get_or_insert(message);
                }
            }
        }
        if failed {
            let mut e = ctx.expectations.lock().expect("expectations");
            for _ in done..create_on.len() {
                e.creation_observed(key);
            }
            break;
        }
    }

    let params = DeleteParams::default();
    let results = join_all(delete.iter().map(|name| api.delete(name, &params))).await;
    for (name, r) in delete.iter().zip(results) {
        match r {
            Ok(_) => ctx.recorder.normal(
                about.clone(),
                "SuccessfulDelete",
                format!("Deleted pod: {name}"),
            ),
            Err(e) => {
                ctx.expectations
                    .lock()
                    .expect("expectations")
                    .deletion_observed(key, name);
                if matches!(&e, kube::Error::Api(s) if s.code == 404) {
                    continue;
                }
                let message = format!("Error deleting: {}", api_message(&e));
                ctx.recorder
                    .warning(about.clone(), "FailedDelete", message.clone());
                first_error.get_or_insert(message);
            }
        }
    }
    match first_error {
        Some(message) => Err(DaemonSetError::Sync {
            ds: key.to_owned(),
            message,
        }),
        None => Ok(()),
    }
}

/// `cleanupHistory`: old revisions beyond `revisionHistoryLimit` that no
/// pod runs any more.
async fn cleanup_history(
    ctx: &Context,
    ds: &DaemonSet,
    old: &[ControllerRevision],
    pods: &[Pod],
) -> Result<(), DaemonSetError> {
    let limit = ds
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(REVISION_HISTORY_LIMIT);
    if old.len() <= limit.max(0) as usize {
        return Ok(());
    }
    let api: Api<ControllerRevision> =
        Api::namespaced(ctx.client.clone(), &ds.namespace().unwrap_or_default());
    for name in decide::revisions_to_prune(old, "", pods, limit) {
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(DaemonSetError::Api {
                    verb: "deleting",
                    what: format!("revision {name}"),
                    ds: ds.name_any(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Writes the status when it changed; `observedGeneration` moves only when
/// this sync acted on the generation (expectations were satisfied).
async fn update_status(
    ctx: &Context,
    ds: &DaemonSet,
    mut status: DaemonSetStatus,
    observed: bool,
) -> Result<(), DaemonSetError> {
    let old = ds.status.clone().unwrap_or_default();
    if !observed {
        status.observed_generation = old.observed_generation;
    }
    if status == old {
        return Ok(());
    }
    let mut body = serde_json::to_value(&status).expect("status serializes");
    for f in [
        "numberAvailable",
        "numberUnavailable",
        "updatedNumberScheduled",
    ] {
        if body.get(f).is_none() {
            body[f] = Value::Null;
        }
    }
    let api: Api<DaemonSet> =
        Api::namespaced(ctx.client.clone(), &ds.namespace().unwrap_or_default());
    match api
        .patch_status(
            &ds.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": body })),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(DaemonSetError::Api {
            verb: "updating",
            what: "status".into(),
            ds: ds.name_any(),
            source,
        }),
    }
}
