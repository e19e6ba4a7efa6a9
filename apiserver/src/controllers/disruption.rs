//! The disruption controller (kube-controller-manager's
//! `disruption-controller`): keeps each PodDisruptionBudget's status
//! (currentHealthy, desiredHealthy, expectedPods, disruptionsAllowed, the
//! evictions still awaited in disruptedPods, the `DisruptionAllowed`
//! condition) so the `pods/eviction` subresource can decide. A client of
//! the API on the shared informers; the counting is in
//! [`super::disruption_budget`].

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::{Resource, ResourceExt};
use tokio::sync::broadcast::error::RecvError;

use super::disruption_budget::{
    PodController, count_healthy, disrupted_pods, expected_pod_count, failsafe_status, new_status,
    selects,
};
use super::informers::{Change, Informers, SharedInformer};
use super::replicaset_decide::controller_of;
use super::work_queue::{self, Queue};
use crate::event_recorder::{EventRecorder, reference};

/// The component its events are recorded as.
pub const COMPONENT: &str = "controllermanager";
const WORKERS: u16 = 2;

#[derive(Debug, thiserror::Error)]
pub enum DisruptionError {
    #[error("updating status of poddisruptionbudget {pdb}: {source}")]
    Status { pdb: String, source: kube::Error },
}

struct Context {
    client: kube::Client,
    pods: SharedInformer<Pod>,
    budgets: SharedInformer<PodDisruptionBudget>,
    replica_sets: SharedInformer<ReplicaSet>,
    deployments: SharedInformer<Deployment>,
    controllers: SharedInformer<ReplicationController>,
    recorder: EventRecorder,
}

pub async fn run(informers: Informers) -> anyhow::Result<()> {
    let client = informers.client();
    let ctx = Arc::new(Context {
        recorder: EventRecorder::new(client.clone(), COMPONENT),
        client,
        pods: informers.get(),
        budgets: informers.get(),
        replica_sets: informers.get(),
        deployments: informers.get(),
        controllers: informers.get(),
    });
    let (queue, keys) = work_queue::queue::<PodDisruptionBudget>();
    let changes = watch(ctx.clone(), queue);
    ctx.pods.synced().await;
    ctx.budgets.synced().await;
    ctx.replica_sets.synced().await;
    ctx.deployments.synced().await;
    ctx.controllers.synced().await;
    let workers = work_queue::run(
        "disruption-controller",
        ctx.budgets.store.clone(),
        keys,
        ctx.clone(),
        WORKERS,
        |pdb, ctx| sync(pdb, ctx),
    );
    tokio::select! {
        _ = changes => {}
        _ = workers => {}
    }
    Ok(())
}

/// Budget changes queue the budget; pod changes queue the budgets that
/// select the pod (`addPod`/`updatePod`/`deletePod`).
async fn watch(ctx: Arc<Context>, queue: Queue<PodDisruptionBudget>) {
    let mut budgets = ctx.budgets.subscribe();
    let mut pods = ctx.pods.subscribe();
    ctx.budgets.synced().await;
    queue.add_all(&ctx.budgets.store);
    let for_pod = |pod: &Pod| {
        for pdb in ctx.budgets.store.state() {
            if selects(&pdb, pod) {
                queue.add_object(&pdb);
            }
        }
    };
    loop {
        tokio::select! {
            change = budgets.recv() => match change {
                Ok(Change::Applied(p)) => queue.add_object(&p),
                Ok(Change::Deleted(_)) => {}
                Ok(Change::Resync) | Err(RecvError::Lagged(_)) => queue.add_all(&ctx.budgets.store),
                Err(RecvError::Closed) => return,
            },
            change = pods.recv() => match change {
                Ok(Change::Applied(p) | Change::Deleted(p)) => for_pod(&p),
                Ok(Change::Resync) | Err(RecvError::Lagged(_)) => queue.add_all(&ctx.budgets.store),
                Err(RecvError::Closed) => return,
            },
        }
    }
}

/// The scale of the controller a pod belongs to (`finders`): a
/// ReplicaSet's Deployment, a ReplicaSet, a ReplicationController, or any
/// kind with a scale subresource (a StatefulSet).
async fn controller_of_pod(ctx: &Context, pod: &Pod) -> PodController {
    let Some(owner) = controller_of(&pod.metadata) else {
        return PodController::Unmanaged;
    };
    let ns = pod.namespace().unwrap_or_default();
    let same = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.uid.as_deref() == Some(owner.uid.as_str())
    };
    let scaled = |uid: Option<&String>, replicas: Option<i32>| PodController::Scaled {
        uid: uid.cloned().unwrap_or_default(),
        replicas: replicas.unwrap_or(1),
    };
    match (owner.api_version.as_str(), owner.kind.as_str()) {
        ("apps/v1", "ReplicaSet") => {
            let Some(rs) = find(&ctx.replica_sets, &ns, &owner.name).filter(|r| same(&r.metadata))
            else {
                return PodController::Missing;
            };
            if let Some(d) = controller_of(&rs.metadata).filter(|r| r.kind == "Deployment")
                && let Some(dep) = find(&ctx.deployments, &ns, &d.name)
                    .filter(|x| x.metadata.uid.as_deref() == Some(d.uid.as_str()))
            {
                return scaled(
                    dep.metadata.uid.as_ref(),
                    dep.spec.as_ref().and_then(|s| s.replicas),
                );
            }
            scaled(
                rs.metadata.uid.as_ref(),
                rs.spec.as_ref().and_then(|s| s.replicas),
            )
        }
        ("v1", "ReplicationController") => match find(&ctx.controllers, &ns, &owner.name) {
            Some(rc) if same(&rc.metadata) => scaled(
                rc.metadata.uid.as_ref(),
                rc.spec.as_ref().and_then(|s| s.replicas),
            ),
            _ => PodController::Missing,
        },
        _ => scale_subresource(&ctx.client, &ns, owner).await,
    }
}

fn find<K>(informer: &SharedInformer<K>, ns: &str, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    informer
        .store
        .get(&kube::runtime::reflector::ObjectRef::new(name).within(ns))
}

/// `getScaleController`: any owner that serves `scale`.
async fn scale_subresource(
    client: &kube::Client,
    ns: &str,
    owner: &OwnerReference,
) -> PodController {
    let (group, version) = match owner.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", owner.api_version.as_str()),
    };
    let gvk = GroupVersionKind::gvk(group, version, &owner.kind);
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk));
    match api.get_scale(&owner.name).await {
        Ok(scale) if scale.metadata.uid.as_deref() == Some(owner.uid.as_str()) => {
            PodController::Scaled {
                uid: owner.uid.clone(),
                replicas: scale.spec.and_then(|s| s.replicas).unwrap_or(0),
            }
        }
        _ => PodController::Missing,
    }
}

/// `trySync`, with `failSafe` when the pods' controllers cannot be counted.
async fn sync(
    pdb: Arc<PodDisruptionBudget>,
    ctx: Arc<Context>,
) -> work_queue::SyncResult<DisruptionError> {
    if pdb.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let now = jiff::Timestamp::now();
    let about = reference("policy/v1", "PodDisruptionBudget", &pdb.metadata);
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .store
        .state()
        .into_iter()
        .filter(|p| selects(&pdb, p))
        .collect();
    if pods.is_empty() {
        ctx.recorder
            .normal(about.clone(), "NoPods", "No matching pods found".into());
    }
    let mut owned = Vec::with_capacity(pods.len());
    for p in &pods {
        owned.push((p.as_ref(), controller_of_pod(&ctx, p).await));
    }
    let spec = pdb.spec.clone().unwrap_or_default();
    let (status, recheck) = match expected_pod_count(&spec, &owned) {
        Ok(expectation) => {
            if !expectation.unmanaged.is_empty() {
                ctx.recorder.warning(
                    about,
                    "UnmanagedPods",
                    format!(
                        "Pods selected by this PodDisruptionBudget (selector: {}) were found to be unmanaged. As a result, the status of the PDB cannot be calculated correctly, which may result in undefined behavior. To account for these pods please set \".spec.minAvailable\" field of the PDB to an integer value.",
                        spec.selector
                            .as_ref()
                            .map(kubelab_rules::selector::selector_string)
                            .unwrap_or_default()
                    ),
                );
            }
            let all: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
            let recorded = pdb.status.as_ref().and_then(|s| s.disrupted_pods.as_ref());
            let (disrupted, recheck) = disrupted_pods(recorded, &all, now);
            let healthy = count_healthy(&all, &disrupted);
            (
                new_status(&pdb, healthy, &expectation, disrupted, now),
                recheck,
            )
        }
        Err(e) => {
            ctx.recorder.warning(
                about,
                "CalculateExpectedPodCountFailed",
                format!("Failed to calculate the number of expected pods: {e}"),
            );
            (failsafe_status(&pdb, e, now), None)
        }
    };
    if pdb.status.as_ref() != Some(&status) {
        let mut updated = (*pdb).clone();
        updated.status = Some(status);
        let api: Api<PodDisruptionBudget> =
            Api::namespaced(ctx.client.clone(), &pdb.namespace().unwrap_or_default());
        api.replace_status(&pdb.name_any(), &PostParams::default(), &updated)
            .await
            .map_err(|source| DisruptionError::Status {
                pdb: format!("{}/{}", pdb.namespace().unwrap_or_default(), pdb.name_any()),
                source,
            })?;
    }
    // Look again when the oldest awaited eviction times out.
    Ok(recheck.map(|t| {
        let secs = (t.as_second() - now.as_second()).max(0) as u64;
        Duration::from_secs(secs + 1)
    }))
}
