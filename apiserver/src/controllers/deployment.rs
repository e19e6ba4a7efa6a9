//! The Deployment controller: one ReplicaSet per pod template, named
//! `<deployment>-<pod-template-hash>`, rolled from old to new as the
//! strategy says (RollingUpdate under maxSurge/maxUnavailable, or
//! Recreate), proportional scaling, revision annotations, history cleanup,
//! pause/resume, and the status with its Available and Progressing
//! conditions. A client of the API on shared informers; the decisions are
//! in [`super::rollout`].

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::Resource as _;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::controller_ref_manager::{ClaimError, adopt_and_release};
use super::informers::{Change, Informers, SharedInformer};
use super::replicaset_decide::{claim, controller_of, controller_ref, is_active};
use super::rollout::{
    self, REVISION, REVISION_HISTORY, find_new, new_rs_condition, paused_condition,
    replicas_annotations, rs_replicas, set_condition,
};
use super::work_queue::{self, Queue};
use crate::event_recorder::{EventRecorder, reference};

/// `--concurrent-deployment-syncs`.
pub const CONCURRENT_SYNCS: u16 = 5;
const COMPONENT: &str = "deployment-controller";

#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error("{verb} replica set {name}: {source}")]
    ReplicaSet {
        verb: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("updating deployment {name}: {source}")]
    Deployment { name: String, source: kube::Error },
    #[error("replica set {0} exists with another template; collision count raised")]
    HashCollision(String),
    #[error(transparent)]
    Claim(#[from] ClaimError),
}

struct Context {
    client: kube::Client,
    deployments: SharedInformer<Deployment>,
    replica_sets: SharedInformer<ReplicaSet>,
    pods: SharedInformer<Pod>,
    recorder: EventRecorder,
}

pub async fn run(informers: Informers) -> anyhow::Result<()> {
    let client = informers.client();
    let ctx = Arc::new(Context {
        recorder: EventRecorder::new(client.clone(), COMPONENT),
        client,
        deployments: informers.get::<Deployment>(),
        replica_sets: informers.get::<ReplicaSet>(),
        pods: informers.get::<Pod>(),
    });
    work_queue::serve(
        COMPONENT,
        ctx.deployments.store.clone(),
        ctx.clone(),
        CONCURRENT_SYNCS,
        |queue| watch_changes(ctx.clone(), queue),
        async {
            tokio::join!(
                ctx.deployments.synced(),
                ctx.replica_sets.synced(),
                ctx.pods.synced()
            );
        },
        |d, ctx| sync(d, ctx),
    )
    .await;
    Ok(())
}

/// Deployments are queued for their own changes, their ReplicaSets'
/// changes, and (for Recreate) the deletion of their pods.
async fn watch_changes(ctx: Arc<Context>, queue: Queue<Deployment>) {
    let mut deployments = ctx.deployments.subscribe();
    let mut replica_sets = ctx.replica_sets.subscribe();
    let mut pods = ctx.pods.subscribe();
    ctx.deployments.synced().await;
    queue.add_all(&ctx.deployments.store);
    let owner_of_rs = |rs: &ReplicaSet| {
        controller_of(&rs.metadata)
            .filter(|r| r.kind == Deployment::KIND)
            .map(|r| (rs.namespace().unwrap_or_default(), r.name.clone()))
    };
    loop {
        tokio::select! {
            c = deployments.recv() => match c {
                Ok(Change::Applied(d)) => queue.add_object(&d),
                Ok(Change::Deleted(_)) => {}
                Ok(Change::Resync) | Err(RecvError::Lagged(_)) => queue.add_all(&ctx.deployments.store),
                Err(RecvError::Closed) => return,
            },
            c = replica_sets.recv() => match c {
                Ok(Change::Applied(rs) | Change::Deleted(rs)) => {
                    if let Some((ns, name)) = owner_of_rs(&rs) {
                        queue.add(Some(&ns), &name);
                    } else if controller_of(&rs.metadata).is_none() {
                        // An orphan goes to every Deployment that selects it.
                        let ns = rs.namespace();
                        for d in ctx.deployments.store.state() {
                            if d.namespace() == ns && selects(&d, rs.labels()) {
                                queue.add_object(&d);
                            }
                        }
                    }
                }
                Ok(Change::Resync) | Err(RecvError::Lagged(_)) => queue.add_all(&ctx.deployments.store),
                Err(RecvError::Closed) => return,
            },
            c = pods.recv() => match c {
                Ok(Change::Deleted(p)) => {
                    let ns = p.namespace().unwrap_or_default();
                    let rs = controller_of(&p.metadata)
                        .filter(|r| r.kind == ReplicaSet::KIND)
                        .and_then(|r| ctx.replica_sets.store.state().into_iter()
                            .find(|rs| rs.metadata.uid.as_deref() == Some(r.uid.as_str())));
                    if let Some((ns, name)) = rs.and_then(|rs| owner_of_rs(&rs)).filter(|(n, _)| *n == ns) {
                        queue.add(Some(&ns), &name);
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => queue.add_all(&ctx.deployments.store),
                Err(RecvError::Closed) => return,
            },
        }
    }
}

/// One sync's view and writes: the Deployment (its status updated as the
/// sync goes) and its ReplicaSets as last written.
struct Rollout<'a> {
    ctx: &'a Context,
    d: Deployment,
    rss: Vec<ReplicaSet>,
    rs_api: Api<ReplicaSet>,
    now: jiff::Timestamp,
}

impl Rollout<'_> {
    fn name(&self) -> String {
        self.d.name_any()
    }

    fn about(&self) -> k8s_openapi::api::core::v1::ObjectReference {
        reference(&Deployment::API_VERSION, Deployment::KIND, &self.d.metadata)
    }

    fn new_rs(&self) -> Option<ReplicaSet> {
        find_new(&self.d, &self.rss).cloned()
    }

    fn old_rss(&self) -> Vec<ReplicaSet> {
        let new = self.new_rs().and_then(|n| n.metadata.uid);
        self.rss
            .iter()
            .filter(|rs| rs.metadata.uid != new)
            .cloned()
            .collect()
    }

    /// Resizes one ReplicaSet (`scaleReplicaSet`), with the replica
    /// annotations, and records `ScalingReplicaSet`.
    async fn scale(&mut self, rs_name: &str, to: i32) -> Result<bool, DeploymentError> {
        let Some(i) = self
            .rss
            .iter()
            .position(|r| r.metadata.name.as_deref() == Some(rs_name))
        else {
            return Ok(false);
        };
        let from = rs_replicas(&self.rss[i]);
        let annotations = replicas_annotations(&self.d);
        let current = self.rss[i].metadata.annotations.clone().unwrap_or_default();
        let stale = annotations.iter().any(|(k, v)| current.get(k) != Some(v));
        if from == to && !stale {
            return Ok(false);
        }
        let patch = json!({"metadata": {"annotations": annotations}, "spec": {"replicas": to}});
        let updated = self
            .rs_api
            .patch(rs_name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|source| DeploymentError::ReplicaSet {
                verb: "scaling",
                name: rs_name.to_owned(),
                source,
            })?;
        self.rss[i] = updated;
        if from != to {
            let op = if to > from { "up" } else { "down" };
            self.ctx.recorder.normal(
                self.about(),
                "ScalingReplicaSet",
                format!("Scaled {op} replica set {rs_name} from {from} to {to}"),
            );
        }
        Ok(from != to)
    }

    /// `getNewReplicaSet`: brings an existing new ReplicaSet's revision up
    /// to date, or (with `create`) makes one.
    async fn sync_revision(&mut self, create: bool) -> Result<Option<ReplicaSet>, DeploymentError> {
        let old_max = self
            .old_rss()
            .iter()
            .map(|rs| rollout::revision(&rs.metadata))
            .max()
            .unwrap_or(0);
        let revision = old_max + 1;
        if let Some(new) = self.new_rs() {
            let mut annotations = new.metadata.annotations.clone().unwrap_or_default();
            let mut changed = false;
            let current = rollout::revision(&new.metadata);
            if current < revision {
                if current > 0 {
                    let history = annotations.get(REVISION_HISTORY).cloned();
                    let entry = match history.filter(|h| !h.is_empty()) {
                        Some(h) => format!("{h},{current}"),
                        None => current.to_string(),
                    };
                    annotations.insert(REVISION_HISTORY.into(), entry);
                }
                annotations.insert(REVISION.into(), revision.to_string());
                changed = true;
            }
            for (k, v) in rollout::copied_annotations(&self.d) {
                if annotations.get(&k) != Some(&v) {
                    annotations.insert(k, v);
                    changed = true;
                }
            }
            // The new set counts availability with the Deployment's minReadySeconds.
            let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
            let min_ready_stale = new
                .spec
                .as_ref()
                .and_then(|s| s.min_ready_seconds)
                .unwrap_or(0)
                != min_ready.unwrap_or(0);
            let mut new = new;
            if changed || min_ready_stale {
                let name = new.name_any();
                let patch = json!({
                    "metadata": {"annotations": annotations},
                    "spec": {"minReadySeconds": min_ready.unwrap_or(0)},
                });
                new = self
                    .rs_api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .map_err(|source| DeploymentError::ReplicaSet {
                        verb: "updating",
                        name: name.clone(),
                        source,
                    })?;
                self.replace(new.clone());
            }
            self.set_deployment_revision(rollout::revision(&new.metadata))
                .await?;
            let status = self.d.status.get_or_insert_with(Default::default);
            if rollout::get_condition(status, "Progressing").is_none() {
                set_condition(
                    status,
                    new_rs_condition("FoundNewReplicaSet", &new.name_any(), self.now),
                );
            }
            return Ok(Some(new));
        }
        if !create {
            return Ok(None);
        }
        let spec = self.d.spec.clone().unwrap_or_default();
        let collisions = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = kubelab_rules::template_hash::compute_hash(&spec.template, collisions);
        let owner = controller_ref(&Deployment::API_VERSION, Deployment::KIND, &self.d.metadata);
        // Sized as the strategy allows with the new set still at zero.
        let mut rs = rollout::new_replica_set(&self.d, &hash, 0, revision, owner);
        let mut all = self.rss.clone();
        all.push(rs.clone());
        let initial = rollout::new_rs_replicas(&self.d, &all, &rs);
        rs.spec.as_mut().expect("spec").replicas = Some(initial);
        let name = rs.name_any();
        let created =
            match self.rs_api.create(&PostParams::default(), &rs).await {
                Ok(c) => c,
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    // Ours with this template (a stale cache)? Otherwise a hash collision.
                    let existing = self.rs_api.get(&name).await.map_err(|source| {
                        DeploymentError::ReplicaSet {
                            verb: "reading",
                            name: name.clone(),
                            source,
                        }
                    })?;
                    let ours = controller_of(&existing.metadata)
                        .is_some_and(|r| Some(&r.uid) == self.d.metadata.uid.as_ref());
                    let same = existing
                        .spec
                        .as_ref()
                        .and_then(|s| s.template.as_ref())
                        .map(rollout::without_hash)
                        == Some(rollout::without_hash(&spec.template));
                    if ours && same {
                        self.rss.push(existing.clone());
                        return Ok(Some(existing));
                    }
                    let status = self.d.status.get_or_insert_with(Default::default);
                    status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                    self.write_status(self.d.status.clone().unwrap_or_default())
                        .await?;
                    return Err(DeploymentError::HashCollision(name));
                }
                Err(source) => {
                    return Err(DeploymentError::ReplicaSet {
                        verb: "creating",
                        name,
                        source,
                    });
                }
            };
        if initial > 0 {
            self.ctx.recorder.normal(
                self.about(),
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} from 0 to {initial}"),
            );
        }
        self.rss.push(created.clone());
        self.set_deployment_revision(revision).await?;
        set_condition(
            self.d.status.get_or_insert_with(Default::default),
            new_rs_condition("NewReplicaSetCreated", &name, self.now),
        );
        Ok(Some(created))
    }

    fn replace(&mut self, rs: ReplicaSet) {
        if let Some(slot) = self
            .rss
            .iter_mut()
            .find(|r| r.metadata.uid == rs.metadata.uid)
        {
            *slot = rs;
        }
    }

    /// `SetDeploymentRevision`: the Deployment carries its new set's revision.
    async fn set_deployment_revision(&mut self, revision: i64) -> Result<(), DeploymentError> {
        let current = rollout::revision(&self.d.metadata);
        if current == revision {
            return Ok(());
        }
        let api: Api<Deployment> = Api::namespaced(
            self.ctx.client.clone(),
            &self.d.namespace().unwrap_or_default(),
        );
        let patch = json!({"metadata": {"annotations": {REVISION: revision.to_string()}}});
        // Through the status subresource, as upstream: no new generation.
        let updated = api
            .patch_status(&self.name(), &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|source| DeploymentError::Deployment {
                name: self.name(),
                source,
            })?;
        // Keep this sync's status work; take the new metadata.
        self.d.metadata = updated.metadata;
        Ok(())
    }

    /// `scale`: resizing without a template change.
    async fn scale_only(&mut self) -> Result<(), DeploymentError> {
        let new = self.new_rs();
        let old = self.old_rss();
        if let Some(target) = rollout::active_or_latest(new.as_ref(), &old) {
            let name = target.name_any();
            self.scale(&name, rollout::replicas(&self.d)).await?;
            return Ok(());
        }
        for (name, size) in rollout::proportional_sizes(&self.d, &self.rss.clone()) {
            self.scale(&name, size).await?;
        }
        Ok(())
    }

    async fn rolling(&mut self) -> Result<(), DeploymentError> {
        let Some(new) = self.sync_revision(true).await? else {
            return Ok(());
        };
        let desired = rollout::replicas(&self.d);
        let new_name = new.name_any();
        if rs_replicas(&new) > desired {
            self.scale(&new_name, desired).await?;
            return Ok(());
        }
        let target = rollout::new_rs_replicas(&self.d, &self.rss, &new);
        if target != rs_replicas(&new) && self.scale(&new_name, target).await? {
            return Ok(());
        }
        let new = self.new_rs();
        let mut scaled = false;
        for (name, size) in rollout::scale_down_old(&self.d, &self.old_rss(), new.as_ref()) {
            scaled |= self.scale(&name, size).await?;
        }
        if !scaled {
            self.cleanup_if_complete().await?;
        }
        Ok(())
    }

    async fn recreate(&mut self) -> Result<(), DeploymentError> {
        self.sync_revision(false).await?;
        let mut scaled = false;
        for rs in self.old_rss() {
            if rs_replicas(&rs) > 0 {
                scaled |= self.scale(&rs.name_any(), 0).await?;
            }
        }
        if scaled {
            return Ok(());
        }
        // Recreate waits for every old pod to be gone before the new ones.
        let old_uids: HashSet<String> = self
            .old_rss()
            .iter()
            .filter_map(|rs| rs.metadata.uid.clone())
            .collect();
        let ns = self.d.namespace().unwrap_or_default();
        let old_pods_running = self.ctx.pods.store.state().iter().any(|p| {
            p.metadata.namespace.as_deref() == Some(ns.as_str())
                && controller_of(&p.metadata).is_some_and(|r| old_uids.contains(&r.uid))
                && (is_active(p) || p.metadata.deletion_timestamp.is_some())
        });
        if old_pods_running {
            return Ok(());
        }
        let Some(new) = self.sync_revision(true).await? else {
            return Ok(());
        };
        let desired = rollout::replicas(&self.d);
        if !self.scale(&new.name_any(), desired).await? {
            self.cleanup_if_complete().await?;
        }
        Ok(())
    }

    async fn cleanup_if_complete(&mut self) -> Result<(), DeploymentError> {
        let new = self.new_rs();
        let s = rollout::status(&self.d, &self.rss, new.as_ref(), self.now);
        if rollout::is_complete(&self.d, &s) {
            self.cleanup().await?;
        }
        Ok(())
    }

    /// `cleanupDeployment`: history beyond `revisionHistoryLimit` goes.
    async fn cleanup(&mut self) -> Result<(), DeploymentError> {
        for name in rollout::history_to_delete(&self.d, &self.old_rss()) {
            match self.rs_api.delete(&name, &DeleteParams::default()).await {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(source) => {
                    return Err(DeploymentError::ReplicaSet {
                        verb: "deleting",
                        name,
                        source,
                    });
                }
            }
            self.rss
                .retain(|rs| rs.metadata.name.as_deref() != Some(name.as_str()));
        }
        Ok(())
    }

    async fn write_status(
        &self,
        status: k8s_openapi::api::apps::v1::DeploymentStatus,
    ) -> Result<(), DeploymentError> {
        let mut v = serde_json::to_value(&status).expect("status serializes");
        for f in [
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
            "unavailableReplicas",
            "conditions",
        ] {
            if v.get(f).is_none() {
                v[f] = Value::Null;
            }
        }
        let api: Api<Deployment> = Api::namespaced(
            self.ctx.client.clone(),
            &self.d.namespace().unwrap_or_default(),
        );
        api.patch_status(
            &self.name(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": v })),
        )
        .await
        .map_err(|source| DeploymentError::Deployment {
            name: self.name(),
            source,
        })?;
        Ok(())
    }
}

/// Whether the Deployment's selector covers `labels` (an empty selector
/// covers nothing for a controller).
fn selects(d: &Deployment, labels: &std::collections::BTreeMap<String, String>) -> bool {
    d.spec.as_ref().is_some_and(|s| {
        !kubelab_rules::selector::is_empty(&s.selector)
            && kubelab_rules::selector::matches(&s.selector, labels)
    })
}

/// `syncDeployment`.
async fn sync(d: Arc<Deployment>, ctx: Arc<Context>) -> work_queue::SyncResult<DeploymentError> {
    let ns = d.namespace().unwrap_or_default();
    let uid = d.metadata.uid.clone().unwrap_or_default();
    // `getReplicaSetsForDeployment`: its own sets, orphans it selects
    // adopted, its sets whose labels stopped matching released.
    let in_ns: Vec<Arc<ReplicaSet>> = ctx
        .replica_sets
        .store
        .state()
        .into_iter()
        .filter(|rs| rs.metadata.namespace.as_deref() == Some(ns.as_str()))
        .collect();
    let deleting = d.metadata.deletion_timestamp.is_some();
    let claims = claim(&in_ns, &uid, |l| selects(&d, l), deleting);
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let owner = controller_ref(&Deployment::API_VERSION, Deployment::KIND, &d.metadata);
    adopt_and_release(&rs_api, &claims, &owner).await?;
    let rss = claims.owned.iter().map(|rs| (**rs).clone()).collect();
    let mut r = Rollout {
        ctx: &ctx,
        d: (*d).clone(),
        rss,
        rs_api,
        now: jiff::Timestamp::now(),
    };
    if d.metadata.deletion_timestamp.is_none() {
        if let Some(c) = paused_condition(&r.d, r.now) {
            set_condition(r.d.status.get_or_insert_with(Default::default), c);
        }
        let paused = r.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        if paused || rollout::is_scaling_event(&r.d, &r.rss) {
            r.sync_revision(false).await?;
            r.scale_only().await?;
            if paused {
                r.cleanup().await?;
            }
        } else if rollout::is_recreate(&r.d) {
            r.recreate().await?;
        } else {
            r.rolling().await?;
        }
    }
    let new = r.new_rs();
    let status = rollout::status(&r.d, &r.rss, new.as_ref(), r.now);
    if Some(&status) != d.status.as_ref() {
        r.write_status(status.clone()).await?;
    }
    Ok(rollout::deadline_check_in(&r.d, &status, r.now))
}
