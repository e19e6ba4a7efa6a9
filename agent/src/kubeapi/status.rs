//! The status manager (kubelet's `status_manager` and `mirror_client`): sends
//! each pod's status, exactly as `/pods` shows it, through the `status`
//! subresource when it changed (or when the API's copy says otherwise: the
//! node controller marks pods not ready when it loses the node); keeps a
//! mirror pod for every static pod; and finishes the deletion of pods whose
//! containers are gone, after sending their final status (containers
//! terminated with their exit codes, a terminal phase), as the kubelet does.
//!
//! It reads the API's view of this node's pods from the pod source's store
//! and wakes up when either that store or the agent's status store changes.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;

use crate::config::SOURCE_FILE;
use crate::config::api::{CONFIG_MIRROR_ANNOTATION, mirror_of};
use crate::config::manifest::CONFIG_SOURCE_ANNOTATION;
use crate::status::PodStatusStore;

/// Even without changes, look again this often (recreate deleted mirrors,
/// retry failed writes, remove mirrors of manifests removed while down).
const RESYNC: Duration = Duration::from_secs(10);

fn is_static(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONFIG_SOURCE_ANNOTATION))
        .is_some_and(|s| s == SOURCE_FILE)
}

/// The mirror pod of a static pod: the same pod, without the identity the
/// apiserver assigns, marked as a mirror and owned by the node (kubelet's
/// `CreateMirrorPod`).
pub fn render_mirror(static_pod: &Pod, node: &str, node_uid: &str) -> Pod {
    let m = &static_pod.metadata;
    let mut annotations = m.annotations.clone().unwrap_or_default();
    annotations.insert(
        CONFIG_MIRROR_ANNOTATION.into(),
        m.uid.clone().unwrap_or_default(),
    );
    Pod {
        metadata: ObjectMeta {
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            labels: m.labels.clone(),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node.into(),
                uid: node_uid.into(),
                controller: Some(true),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: static_pod.spec.clone(),
        status: None,
    }
}

/// A finished pod's last status as the API should keep it: a pod whose
/// containers have all terminated is over, `Succeeded` if they all exited
/// 0, else `Failed` (kubelet's terminal phase for deleted pods).
pub fn final_status(mut status: PodStatus) -> PodStatus {
    let containers = status.container_statuses.as_deref().unwrap_or_default();
    let exits: Option<Vec<i32>> = containers
        .iter()
        .map(|c| Some(c.state.as_ref()?.terminated.as_ref()?.exit_code))
        .collect();
    if let Some(codes) = exits.filter(|c| !c.is_empty()) {
        let phase = if codes.iter().all(|c| *c == 0) {
            "Succeeded"
        } else {
            "Failed"
        };
        status.phase = Some(phase.into());
    }
    status
}

/// The two things others change in an API pod's status: its phase and
/// whether it is Ready.
fn phase_and_ready(status: Option<&PodStatus>) -> (Option<String>, Option<String>) {
    let Some(s) = status else {
        return (None, None);
    };
    let ready = s
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone());
    (s.phase.clone(), ready)
}

pub struct StatusManager {
    pub client: Client,
    pub node: String,
    pub status: PodStatusStore,
    pub pods: Store<Pod>,
    pub pod_changes: watch::Receiver<u64>,
    pub node_uid: watch::Receiver<Option<String>>,
}

fn delete_exactly(uid: &str) -> DeleteParams {
    DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..Default::default()
    }
}

fn ignore_gone<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => Ok(()),
        Err(e) => Err(e),
    }
}

impl StatusManager {
    pub async fn run(mut self) {
        let node_uid = loop {
            if let Some(uid) = self.node_uid.borrow().clone() {
                break uid;
            }
            if self.node_uid.changed().await.is_err() {
                return;
            }
        };
        if self.pods.wait_until_ready().await.is_err() {
            return;
        }
        let mut local = self.status.subscribe();
        let mut sync = Sync {
            sent: HashMap::new(),
            created: HashSet::new(),
            node_uid,
        };
        let mut resync = tokio::time::interval(RESYNC);
        loop {
            let full = tokio::select! {
                r = local.changed() => { if r.is_err() { return; } false }
                r = self.pod_changes.changed() => { if r.is_err() { return; } false }
                _ = resync.tick() => true,
            };
            // Coalesce a burst of changes (a worker publishes several in a row).
            tokio::time::sleep(Duration::from_millis(20)).await;
            local.mark_unchanged();
            self.pod_changes.mark_unchanged();
            sync.run(&self, full).await;
        }
    }
}

struct Sync {
    /// The status last sent, by the API pod's UID: typed, compared as is
    /// each round, and serialized only for a patch.
    sent: HashMap<String, PodStatus>,
    /// Static pod UIDs whose mirror this process made.
    created: HashSet<String>,
    node_uid: String,
}

impl Sync {
    async fn run(&mut self, m: &StatusManager, full: bool) {
        let entries = m.status.list();
        let api_pods = m.pods.state();
        let by_uid: HashMap<&str, &Pod> = api_pods
            .iter()
            .filter_map(|p| Some((p.metadata.uid.as_deref()?, p.as_ref())))
            .collect();
        let by_name: HashMap<(&str, &str), &Pod> = api_pods
            .iter()
            .filter_map(|p| {
                Some((
                    (
                        p.metadata.namespace.as_deref()?,
                        p.metadata.name.as_deref()?,
                    ),
                    p.as_ref(),
                ))
            })
            .collect();
        let mut live: HashSet<String> = HashSet::new();

        for entry in &entries {
            let pod = &entry.pod;
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            live.insert(uid.clone());
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(m.client.clone(), ns);
            // The API's pod is read, not copied: only its UID and status count.
            let target: Cow<'_, Pod> = if is_static(pod) {
                match by_name.get(&(ns, name)) {
                    Some(mirror)
                        if mirror_of(mirror) == Some(uid.as_str())
                            && mirror.metadata.deletion_timestamp.is_none() =>
                    {
                        Cow::Borrowed(*mirror)
                    }
                    Some(other) => {
                        // A mirror of an older version of the manifest, one being
                        // deleted through the API, or a pod that is no mirror:
                        // it goes, and the next round creates ours.
                        if mirror_of(other).is_some() {
                            let other_uid = other.metadata.uid.clone().unwrap_or_default();
                            tracing::info!(pod = %format!("{ns}/{name}"), "replacing the mirror pod");
                            if let Err(e) =
                                ignore_gone(api.delete(name, &delete_exactly(&other_uid)).await)
                            {
                                tracing::warn!(pod = %format!("{ns}/{name}"), "deleting the mirror pod: {e}");
                            }
                        }
                        continue;
                    }
                    None => {
                        let mirror = render_mirror(pod, &m.node, &self.node_uid);
                        match api.create(&PostParams::default(), &mirror).await {
                            Ok(created) => {
                                self.created.insert(uid.clone());
                                Cow::Owned(created)
                            }
                            Err(e) => {
                                tracing::warn!(pod = %format!("{ns}/{name}"), "creating the mirror pod: {e}");
                                continue;
                            }
                        }
                    }
                }
            } else {
                match by_uid.get(uid.as_str()) {
                    Some(p) => Cow::Borrowed(*p),
                    None => continue,
                }
            };
            let target_uid = target.metadata.uid.clone().unwrap_or_default();
            let api_agrees =
                phase_and_ready(target.status.as_ref()) == phase_and_ready(Some(&entry.status));
            if self.sent.get(&target_uid) == Some(&entry.status) && api_agrees {
                continue;
            }
            // The UID pins the patch to this very pod, not a namesake made since.
            let patch = json!({"metadata": {"uid": target_uid}, "status": entry.status});
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.sent.insert(target_uid, entry.status.clone());
                }
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(pod = %format!("{ns}/{name}"), "updating the pod status: {e}")
                }
            }
        }

        for p in &api_pods {
            let (Some(ns), Some(name), Some(uid)) = (
                p.metadata.namespace.as_deref(),
                p.metadata.name.as_deref(),
                p.metadata.uid.as_deref(),
            ) else {
                continue;
            };
            let api: Api<Pod> = Api::namespaced(m.client.clone(), ns);
            let gone = match mirror_of(p) {
                // A mirror whose static pod no longer runs. Those this process
                // did not make are judged only on resyncs, once the manifests
                // have surely been read.
                Some(static_uid) => {
                    !live.contains(static_uid) && (full || self.created.contains(static_uid))
                }
                // Being deleted, and its containers are gone: finish it.
                None => p.metadata.deletion_timestamp.is_some() && !live.contains(uid),
            };
            if gone {
                // The uid the node ran it under: a mirror's static pod's.
                let local_uid = mirror_of(p).unwrap_or(uid);
                if let Some(last) = m.status.finished(local_uid) {
                    self.send_final_status(&api, p, last).await;
                }
                tracing::info!(pod = %format!("{ns}/{name}"), "deleting the pod from the API");
                match ignore_gone(api.delete(name, &delete_exactly(uid)).await) {
                    Ok(()) => {
                        m.status.forget_finished(local_uid);
                        if let Some(s) = mirror_of(p) {
                            self.created.remove(s);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(pod = %format!("{ns}/{name}"), "deleting the pod: {e}")
                    }
                }
            }
        }
        self.sent.retain(|uid, _| by_uid.contains_key(uid.as_str()));
    }

    /// Patches the API pod `p` with the final status of the pod the node
    /// ran, unless that is what was sent last.
    async fn send_final_status(&mut self, api: &Api<Pod>, p: &Pod, last: Pod) {
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let name = p.metadata.name.as_deref().unwrap_or_default();
        let status = final_status(last.status.unwrap_or_default());
        if self.sent.get(&uid) == Some(&status) {
            return;
        }
        let patch = json!({"metadata": {"uid": uid}, "status": status});
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                self.sent.insert(uid, status);
            }
            Err(e) => tracing::debug!(pod = %name, "sending the final status: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStatus};

    fn exited(code: i32) -> ContainerStatus {
        ContainerStatus {
            name: format!("c{code}"),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_finished_pod_ends_in_a_terminal_phase() {
        let status = |cs: Vec<ContainerStatus>| PodStatus {
            phase: Some("Running".into()),
            container_statuses: Some(cs),
            ..Default::default()
        };
        let ok = final_status(status(vec![exited(0), exited(0)]));
        assert_eq!(ok.phase.as_deref(), Some("Succeeded"));
        let killed = final_status(status(vec![exited(0), exited(137)]));
        assert_eq!(killed.phase.as_deref(), Some("Failed"));
        let running = ContainerStatus {
            state: Some(ContainerState::default()),
            ..exited(0)
        };
        let mixed = final_status(status(vec![exited(0), running]));
        assert_eq!(
            mixed.phase.as_deref(),
            Some("Running"),
            "not all terminated"
        );
    }
}
