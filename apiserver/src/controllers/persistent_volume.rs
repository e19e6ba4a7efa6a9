//! The PersistentVolume controller (kube-controller-manager's
//! `persistentvolume-binder-controller`, with the `pvc-protection` and
//! `pv-protection` controllers and a built-in local-path provisioner):
//! binds claims to volumes both ways, moves volumes through
//! Available/Bound/Released, deletes released volumes whose policy says
//! Delete, gives class-less claims the default class, makes a node-local
//! hostPath volume for a claim of the `local-path` class on the node of
//! the first pod that uses it, and lifts the protection finalizers once no
//! pod uses a deleted claim and no claim is bound to a deleted volume.
//!
//! A client of the API on the shared informers with two work queues, one
//! of claims and one of volumes. The decisions are in
//! [`super::persistent_volume_decide`].

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::informers::{Change, Informers, SharedInformer};
use super::local_path_reclaim::{self as reclaim, HelperState, Reclaim};
use super::persistent_volume_decide::{
    self as decide, BIND_COMPLETED, BOUND_BY_CONTROLLER, ClaimStep, STORAGE_PROVISIONER, VolumeStep,
};
use super::work_queue::{self, Queue};
use crate::event_recorder::{EventRecorder, reference};
use crate::kinds::storage::{PV_PROTECTION, PVC_PROTECTION};

pub const COMPONENT: &str = "persistentvolume-controller";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{verb} {what}: {source}")]
    Api {
        verb: &'static str,
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Reclaim(#[from] reclaim::ReclaimError),
}

fn api_err(verb: &'static str, what: impl Into<String>) -> impl FnOnce(kube::Error) -> VolumeError {
    let what = what.into();
    move |source| VolumeError::Api { verb, what, source }
}

struct Context {
    client: kube::Client,
    claims: SharedInformer<PersistentVolumeClaim>,
    volumes: SharedInformer<PersistentVolume>,
    classes: SharedInformer<StorageClass>,
    pods: SharedInformer<Pod>,
    nodes: SharedInformer<Node>,
    recorder: EventRecorder,
}

/// Runs the controller on the shared informers until they stop.
pub async fn run(informers: Informers) -> anyhow::Result<()> {
    let client = informers.client();
    let ctx = Arc::new(Context {
        recorder: EventRecorder::new(client.clone(), COMPONENT),
        client,
        claims: informers.get(),
        volumes: informers.get(),
        classes: informers.get(),
        pods: informers.get(),
        nodes: informers.get(),
    });
    ctx.classes.synced().await;
    ensure_default_class(&ctx).await;
    let (claim_queue, claim_keys) = work_queue::queue::<PersistentVolumeClaim>();
    let (volume_queue, volume_keys) = work_queue::queue::<PersistentVolume>();
    let changes = watch(ctx.clone(), claim_queue, volume_queue);
    for synced in [
        Box::pin(ctx.claims.synced()) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
        Box::pin(ctx.volumes.synced()),
        Box::pin(ctx.pods.synced()),
        Box::pin(ctx.nodes.synced()),
    ] {
        synced.await;
    }
    // One claim at a time: two claims never race for one volume.
    let claim_workers = work_queue::run(
        COMPONENT,
        ctx.claims.store.clone(),
        claim_keys,
        ctx.clone(),
        1,
        |c, ctx| sync_claim(c, ctx),
    );
    let volume_workers = work_queue::run(
        COMPONENT,
        ctx.volumes.store.clone(),
        volume_keys,
        ctx.clone(),
        1,
        |v, ctx| sync_volume(v, ctx),
    );
    tokio::select! {
        _ = changes => {}
        _ = claim_workers => {}
        _ = volume_workers => {}
    }
    Ok(())
}

/// The built-in `local-path` class, made once at start when there is no
/// class of that name (as k3s deploys its local-storage class).
async fn ensure_default_class(ctx: &Context) {
    let name = decide::LOCAL_PATH_CLASS;
    if ctx
        .classes
        .store
        .state()
        .iter()
        .any(|c| c.metadata.name.as_deref() == Some(name))
    {
        return;
    }
    let api: Api<StorageClass> = Api::all(ctx.client.clone());
    match api
        .create(&PostParams::default(), &decide::local_path_class())
        .await
    {
        Ok(_) => tracing::info!("created the default StorageClass {name}"),
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => tracing::warn!("creating the default StorageClass {name}: {e}"),
    }
}

/// Maps every change to the claims and volumes it may concern.
async fn watch(
    ctx: Arc<Context>,
    claims: Queue<PersistentVolumeClaim>,
    volumes: Queue<PersistentVolume>,
) {
    let mut claim_changes = ctx.claims.subscribe();
    let mut volume_changes = ctx.volumes.subscribe();
    let mut pod_changes = ctx.pods.subscribe();
    let mut class_changes = ctx.classes.subscribe();
    ctx.claims.synced().await;
    ctx.volumes.synced().await;
    claims.add_all(&ctx.claims.store);
    volumes.add_all(&ctx.volumes.store);
    let volumes_of_claim = |c: &PersistentVolumeClaim| {
        for v in ctx.volumes.store.state() {
            if decide::claim_ref_is(&v, c) {
                volumes.add_object(&v);
            }
        }
    };
    loop {
        tokio::select! {
            change = claim_changes.recv() => match change {
                Ok(Change::Applied(c)) => {
                    claims.add_object(&c);
                    volumes_of_claim(&c);
                }
                Ok(Change::Deleted(c)) => volumes_of_claim(&c),
                Ok(Change::Resync) | Err(RecvError::Lagged(_)) => {
                    claims.add_all(&ctx.claims.store);
                    volumes.add_all(&ctx.volumes.store);
                }
                Err(RecvError::Closed) => return,
            },
            change = volume_changes.recv() => match change {
                Ok(Change::Applied(v) | Change::Deleted(v)) => {
                    volumes.add_object(&v);
                    if let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
                        claims.add(r.namespace.as_deref(), r.name.as_deref().unwrap_or_default());
                    }
                    // A freed volume may fit a waiting claim.
                    for c in ctx.claims.store.state() {
                        if c.spec.as_ref().and_then(|s| s.volume_name.as_deref()).unwrap_or("").is_empty() {
                            claims.add_object(&c);
                        }
                    }
                }
                Ok(Change::Resync) | Err(RecvError::Lagged(_)) => volumes.add_all(&ctx.volumes.store),
                Err(RecvError::Closed) => return,
            },
            change = pod_changes.recv() => match change {
                Ok(Change::Applied(p) | Change::Deleted(p)) => {
                    let ns = p.namespace();
                    if let Some(v) = reclaim::volume_of_helper(ns.as_deref(), &p.name_any()) {
                        volumes.add(None, v);
                    }
                    for c in decide::pod_claims(&p) {
                        claims.add(ns.as_deref(), c);
                    }
                }
                Ok(Change::Resync) | Err(RecvError::Lagged(_)) => claims.add_all(&ctx.claims.store),
                Err(RecvError::Closed) => return,
            },
            change = class_changes.recv() => match change {
                Ok(_) | Err(RecvError::Lagged(_)) => claims.add_all(&ctx.claims.store),
                Err(RecvError::Closed) => return,
            },
        }
    }
}

/// Pods of the claim's namespace that use it.
fn users(ctx: &Context, claim: &PersistentVolumeClaim) -> Vec<Arc<Pod>> {
    let ns = claim.metadata.namespace.as_deref();
    let name = claim.metadata.name.as_deref().unwrap_or_default();
    ctx.pods
        .store
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == ns)
        .filter(|p| decide::pod_claims(p).any(|c| c == name))
        .collect()
}

fn without_finalizer(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    f: &str,
) -> Value {
    let rest: Vec<&String> = meta
        .finalizers
        .iter()
        .flatten()
        .filter(|x| *x != f)
        .collect();
    json!({"metadata": {"finalizers": rest, "resourceVersion": meta.resource_version}})
}

fn has_finalizer(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    f: &str,
) -> bool {
    meta.finalizers.iter().flatten().any(|x| x == f)
}

fn claim_key(c: &PersistentVolumeClaim) -> String {
    format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any())
}

async fn sync_claim(
    claim: Arc<PersistentVolumeClaim>,
    ctx: Arc<Context>,
) -> work_queue::SyncResult<VolumeError> {
    let ns = claim.namespace().unwrap_or_default();
    let name = claim.name_any();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let about = reference("v1", "PersistentVolumeClaim", &claim.metadata);
    let users = users(&ctx, &claim);
    if claim.metadata.deletion_timestamp.is_some() {
        // `pvc-protection`: the claim goes once no running pod uses it.
        if has_finalizer(&claim.metadata, PVC_PROTECTION)
            && !users.iter().any(|p| decide::pod_uses_claims(p))
        {
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(without_finalizer(&claim.metadata, PVC_PROTECTION)),
            )
            .await
            .map_err(api_err(
                "removing the protection finalizer of claim",
                claim_key(&claim),
            ))?;
        }
        return Ok(None);
    }
    let volumes: Vec<PersistentVolume> = ctx
        .volumes
        .store
        .state()
        .iter()
        .map(|v| (**v).clone())
        .collect();
    let classes: Vec<StorageClass> = ctx
        .classes
        .store
        .state()
        .iter()
        .map(|c| (**c).clone())
        .collect();
    let nodes: Vec<Node> = ctx
        .nodes
        .store
        .state()
        .iter()
        .map(|n| (**n).clone())
        .collect();
    let phase = claim
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("");
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if !volume_name.is_empty()
        && phase == "Bound"
        && !volumes
            .iter()
            .any(|v| v.metadata.name.as_deref() == Some(volume_name.as_str()))
    {
        ctx.recorder.warning(
            about,
            "ClaimLost",
            "Bound claim has lost its PersistentVolume. Data on the volume is lost!".into(),
        );
        return patch_claim_status(&api, &name, json!({"phase": "Lost"}))
            .await
            .map(|_| None);
    }
    let consumer_node = users
        .iter()
        .filter(|p| decide::pod_uses_claims(p))
        .find_map(|p| p.spec.as_ref()?.node_name.clone().filter(|n| !n.is_empty()));
    match decide::claim_step(&claim, &volumes, &classes, &nodes, consumer_node.as_deref()) {
        ClaimStep::Wait => {}
        ClaimStep::SetClass(class) => {
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"storageClassName": class}})),
            )
            .await
            .map_err(api_err(
                "setting the default class of claim",
                claim_key(&claim),
            ))?;
        }
        ClaimStep::SelectNode(node) => {
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {decide::SELECTED_NODE: node}}})),
            )
            .await
            .map_err(api_err("selecting the node of claim", claim_key(&claim)))?;
        }
        ClaimStep::Provision { node } => provision(&ctx, &claim, &classes, &nodes, &node).await?,
        ClaimStep::Bind(volume) => {
            let Some(pv) = volumes
                .iter()
                .find(|v| v.metadata.name.as_deref() == Some(volume.as_str()))
            else {
                return Ok(None);
            };
            bind(&ctx, &claim, pv).await?;
        }
        ClaimStep::Pending { reason, message } => {
            if matches!(reason, "WaitForFirstConsumer" | "ExternalProvisioning") {
                ctx.recorder.normal(about, reason, message);
            } else {
                ctx.recorder.warning(about, reason, message);
            }
        }
    }
    Ok(None)
}

async fn patch_claim_status(
    api: &Api<PersistentVolumeClaim>,
    name: &str,
    status: Value,
) -> Result<(), VolumeError> {
    match api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(api_err("updating the status of claim", name)(e)),
    }
}

/// The local-path provisioner: a hostPath volume on `node`, pre-bound to
/// the claim (the next sync binds them).
async fn provision(
    ctx: &Context,
    claim: &PersistentVolumeClaim,
    classes: &[StorageClass],
    nodes: &[Node],
    node: &str,
) -> Result<(), VolumeError> {
    let class_name = decide::claim_class(claim);
    let Some(class) = classes
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(class_name.as_str()))
    else {
        return Ok(());
    };
    let about = reference("v1", "PersistentVolumeClaim", &claim.metadata);
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &claim.namespace().unwrap_or_default());
    if !claim
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(STORAGE_PROVISIONER))
    {
        claims
            .patch(
                &claim.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {
                    STORAGE_PROVISIONER: class.provisioner,
                    decide::BETA_STORAGE_PROVISIONER: class.provisioner,
                }}})),
            )
            .await
            .map_err(api_err("annotating claim", claim_key(claim)))?;
        ctx.recorder.normal(
            about.clone(),
            "Provisioning",
            format!(
                "External provisioner is provisioning volume for claim {:?}",
                claim_key(claim)
            ),
        );
    }
    let node_obj = nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(node));
    let pv = decide::provisioned_volume(claim, class, node, node_obj);
    let pv_name = pv.metadata.name.clone().unwrap_or_default();
    let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    match api.create(&PostParams::default(), &pv).await {
        Ok(_) => ctx.recorder.normal(
            about,
            "ProvisioningSucceeded",
            format!("Successfully provisioned volume {pv_name}"),
        ),
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => {
            ctx.recorder.warning(
                about,
                "ProvisioningFailed",
                format!("failed to provision volume with StorageClass {class_name:?}: {e}"),
            );
            return Err(api_err("provisioning a volume for claim", claim_key(claim))(e));
        }
    }
    Ok(())
}

/// `bind`: the volume's claimRef, its phase, the claim's volumeName and
/// annotations, the claim's status, each written only when not yet so.
async fn bind(
    ctx: &Context,
    claim: &PersistentVolumeClaim,
    pv: &PersistentVolume,
) -> Result<(), VolumeError> {
    let pv_name = pv.name_any();
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &claim.namespace().unwrap_or_default());
    let ref_uid_set = pv
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .and_then(|r| r.uid.as_deref())
        .is_some_and(|u| !u.is_empty());
    if !decide::claim_ref_is(pv, claim) || !ref_uid_set {
        // Pinned to the version decided on: two claims never take one volume.
        let mut patch = json!({"metadata": {"resourceVersion": pv.metadata.resource_version},
            "spec": {"claimRef": decide::claim_ref(claim)}});
        if pv
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_none()
        {
            patch["metadata"]["annotations"] = json!({BOUND_BY_CONTROLLER: "yes"});
        }
        volumes
            .patch(&pv_name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(api_err("binding volume", pv_name.clone()))?;
    }
    if pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
        set_volume_phase(ctx, &pv_name, "Bound").await?;
    }
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    let completed = claim
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(BIND_COMPLETED));
    if volume_name != pv_name || !completed {
        let mut annotations = json!({BIND_COMPLETED: "yes"});
        if volume_name.is_empty() {
            annotations[BOUND_BY_CONTROLLER] = "yes".into();
        }
        claims
            .patch(
                &claim.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": annotations},
                    "spec": {"volumeName": pv_name}})),
            )
            .await
            .map_err(api_err("binding claim", claim_key(claim)))?;
    }
    let spec = pv.spec.clone().unwrap_or_default();
    let status = claim.status.clone().unwrap_or_default();
    if status.phase.as_deref() != Some("Bound")
        || status.capacity != spec.capacity
        || status.access_modes != spec.access_modes
    {
        patch_claim_status(
            &claims,
            &claim.name_any(),
            json!({"phase": "Bound", "capacity": spec.capacity, "accessModes": spec.access_modes}),
        )
        .await?;
    }
    Ok(())
}

async fn set_volume_phase(ctx: &Context, name: &str, phase: &str) -> Result<(), VolumeError> {
    let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    match api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": phase, "lastPhaseTransitionTime": now}})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(api_err("updating the phase of volume", name)(e)),
    }
}

async fn sync_volume(
    pv: Arc<PersistentVolume>,
    ctx: Arc<Context>,
) -> work_queue::SyncResult<VolumeError> {
    let name = pv.name_any();
    let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let claim = pv
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .and_then(|r| {
            ctx.claims
                .store
                .state()
                .into_iter()
                .find(|c| c.metadata.namespace == r.namespace && c.metadata.name == r.name)
        });
    let claim = claim.filter(|c| decide::claim_ref_is(&pv, c));
    let step = decide::volume_step(&pv, claim.as_deref());
    // A volume being deleted still moves to Released when its claim goes.
    if let VolumeStep::Phase(phase) = step {
        set_volume_phase(&ctx, &name, phase).await?;
        return Ok(None);
    }
    if reclaim::directory_pending(&pv) {
        match reclaim::reclaim(&pv) {
            Reclaim::NotYet => {}
            Reclaim::Keep => {
                return remove_volume_finalizer(&api, &pv, reclaim::DELETION_PROTECTION_FINALIZER)
                    .await
                    .map(|_| None);
            }
            Reclaim::RemoveDirectory => {
                if remove_directory(&ctx, &pv).await? {
                    remove_volume_finalizer(&api, &pv, reclaim::DELETION_PROTECTION_FINALIZER)
                        .await?;
                    delete_volume(&ctx, &pv).await?;
                }
                return Ok(None);
            }
        }
    }
    if pv.metadata.deletion_timestamp.is_some() {
        // `pv-protection`: the volume goes once it is not bound.
        let bound = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        if has_finalizer(&pv.metadata, PV_PROTECTION) && !bound {
            remove_volume_finalizer(&api, &pv, PV_PROTECTION).await?;
        }
        return Ok(None);
    }
    match step {
        VolumeStep::Wait | VolumeStep::Phase(_) => {}
        VolumeStep::Delete => delete_volume(&ctx, &pv).await?,
        VolumeStep::Unbind => {
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"resourceVersion": pv.metadata.resource_version,
                    "annotations": {BOUND_BY_CONTROLLER: null}},
                    "spec": {"claimRef": null}}),
                ),
            )
            .await
            .map_err(api_err("unbinding volume", name.clone()))?;
            set_volume_phase(&ctx, &name, "Available").await?;
        }
    }
    Ok(None)
}

async fn remove_volume_finalizer(
    api: &Api<PersistentVolume>,
    pv: &PersistentVolume,
    finalizer: &str,
) -> Result<(), VolumeError> {
    match api
        .patch(
            &pv.name_any(),
            &PatchParams::default(),
            &Patch::Merge(without_finalizer(&pv.metadata, finalizer)),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(api_err("removing a finalizer of volume", pv.name_any())(e)),
    }
}

/// Deletes the volume object (its storage is gone or not ours to delete).
async fn delete_volume(ctx: &Context, pv: &PersistentVolume) -> Result<(), VolumeError> {
    if pv.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    match api.delete(&pv.name_any(), &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => {
            ctx.recorder.warning(
                reference("v1", "PersistentVolume", &pv.metadata),
                "VolumeFailedDelete",
                e.to_string(),
            );
            Err(api_err("deleting released volume", pv.name_any())(e))
        }
    }
}

/// Runs the helper pod that removes a local-path volume's directory on
/// its node; true once it has succeeded (and is deleted). A failed helper
/// is a `VolumeFailedDelete` event and a retry with back-off.
async fn remove_directory(ctx: &Context, pv: &PersistentVolume) -> Result<bool, VolumeError> {
    let name = pv.name_any();
    let about = reference("v1", "PersistentVolume", &pv.metadata);
    let helper_name = reclaim::helper_pod_name(&name);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), reclaim::HELPER_NAMESPACE);
    let helper = ctx.pods.store.state().into_iter().find(|p| {
        p.metadata.namespace.as_deref() == Some(reclaim::HELPER_NAMESPACE)
            && p.metadata.name.as_deref() == Some(helper_name.as_str())
    });
    let delete_helper = || async {
        match pods.delete(&helper_name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(api_err("deleting helper pod", helper_name.clone())(e)),
        }
    };
    match reclaim::helper_state(helper.as_deref()) {
        HelperState::Absent => {
            let nodes: Vec<Node> = ctx
                .nodes
                .store
                .state()
                .iter()
                .map(|n| (**n).clone())
                .collect();
            let started = reclaim::volume_node(pv, &nodes)
                .ok_or_else(|| reclaim::ReclaimError::NoNode {
                    volume: name.clone(),
                })
                .and_then(|node| {
                    let node_obj = nodes
                        .iter()
                        .find(|n| n.metadata.name.as_deref() == Some(node));
                    reclaim::helper_pod(pv, node, node_obj)
                });
            let pod = match started {
                Ok(pod) => pod,
                Err(e) => {
                    ctx.recorder
                        .warning(about, "VolumeFailedDelete", e.to_string());
                    return Err(VolumeError::Reclaim(e));
                }
            };
            match pods.create(&PostParams::default(), &pod).await {
                Ok(_) => {
                    tracing::info!(volume = %name, "started {helper_name} to remove the volume's directory")
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => {
                    ctx.recorder.warning(
                        about,
                        "VolumeFailedDelete",
                        format!(
                            "failed to delete volume {name}: creating helper pod {helper_name}: {e}"
                        ),
                    );
                    return Err(api_err("creating helper pod", helper_name.clone())(e));
                }
            }
            Ok(false)
        }
        HelperState::Running => Ok(false),
        HelperState::Succeeded => {
            delete_helper().await?;
            Ok(true)
        }
        HelperState::Failed(why) => {
            let message = format!("failed to delete volume {name}: {why}");
            ctx.recorder
                .warning(about, "VolumeFailedDelete", message.clone());
            delete_helper().await?;
            Err(VolumeError::Reclaim(reclaim::ReclaimError::HelperFailed {
                volume: name,
                why,
            }))
        }
    }
}
