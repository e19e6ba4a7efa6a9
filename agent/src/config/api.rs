//! The apiserver pod source (kubelet's `config/apiserver.go`): a watch of the
//! pods bound to this node (`spec.nodeName=<node>`), kept in a reflector store
//! and sent as full snapshots like the file source's. Pods from the API keep
//! the UID the apiserver gave them. Mirror pods (the API's view of this node's
//! static pods) are in the store but never in a snapshot: the file source
//! runs those.
//!
//! The store is shared: the status manager and the event sink read the API's
//! view of this node's pods from it instead of asking the apiserver.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{mpsc, watch};

use super::SourceUpdate;
use super::manifest::apply_pod_defaults;

/// `kubernetes.io/config.source` of pods from the apiserver.
pub const SOURCE_API: &str = "api";
/// The annotation that marks a mirror pod; its value is the static pod's UID.
pub const CONFIG_MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

pub struct ApiSource {
    client: Client,
    node_name: String,
    reader: Store<Pod>,
    writer: reflector::store::Writer<Pod>,
    changes: Arc<watch::Sender<u64>>,
}

/// The static pod UID a mirror pod stands for, if `pod` is a mirror pod.
pub fn mirror_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(CONFIG_MIRROR_ANNOTATION)
        .map(String::as_str)
}

/// What the API wants this node to run: its pods minus mirror pods, with the
/// defaults the agent relies on, in a stable order.
pub fn desired_pods<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Vec<Arc<Pod>> {
    DesiredPods::default().snapshot(pods)
}

/// [`desired_pods`], remembered by UID and resourceVersion: a snapshot sent
/// after one pod changed rebuilds that pod alone and shares the others with
/// the snapshots before it, so a node with many pods neither copies every
/// pod at every event nor holds a copy per snapshot.
#[derive(Default)]
pub struct DesiredPods {
    by_uid: HashMap<String, (Option<String>, Arc<Pod>)>,
}

impl DesiredPods {
    pub fn snapshot<'a>(&mut self, pods: impl IntoIterator<Item = &'a Pod>) -> Vec<Arc<Pod>> {
        let mut kept = HashMap::with_capacity(self.by_uid.len());
        let mut out: Vec<Arc<Pod>> = Vec::new();
        for p in pods {
            let Some(uid) = p.metadata.uid.as_ref().filter(|_| mirror_of(p).is_none()) else {
                continue;
            };
            let version = &p.metadata.resource_version;
            let pod = match self.by_uid.remove(uid) {
                Some((v, pod)) if &v == version && version.is_some() => pod,
                cached => {
                    let mut fresh = Pod {
                        metadata: p.metadata.clone(),
                        spec: p.spec.clone(),
                        status: None,
                    };
                    apply_pod_defaults(&mut fresh);
                    match cached {
                        // Most new versions of a running pod are the node's
                        // own status writes: nothing a worker acts on changed,
                        // so the copy the workers hold stays the only one.
                        Some((_, pod)) if same_but_version(&pod, &mut fresh) => pod,
                        _ => Arc::new(fresh),
                    }
                }
            };
            kept.insert(uid.clone(), (version.clone(), pod.clone()));
            out.push(pod);
        }
        self.by_uid = kept;
        out.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        out
    }
}

/// Whether two desired pods differ in their resourceVersion at most,
/// compared in place: `new`'s version is set aside for the comparison.
fn same_but_version(old: &Pod, new: &mut Pod) -> bool {
    let version = std::mem::replace(
        &mut new.metadata.resource_version,
        old.metadata.resource_version.clone(),
    );
    let same = old == new;
    new.metadata.resource_version = version;
    same
}

impl ApiSource {
    pub fn new(client: Client, node_name: String) -> Self {
        let (reader, writer) = reflector::store();
        ApiSource {
            client,
            node_name,
            reader,
            writer,
            changes: Arc::new(watch::Sender::new(0)),
        }
    }

    /// The API's pods of this node, as last seen.
    pub fn store(&self) -> Store<Pod> {
        self.reader.clone()
    }

    /// Wakes up whenever the store changed.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub async fn run(self, tx: mpsc::Sender<SourceUpdate>) {
        let api: Api<Pod> = Api::all(self.client);
        let selector = format!("spec.nodeName={}", self.node_name);
        let cfg = watcher::Config::default().fields(&selector);
        // The watcher re-lists after errors with back-off; the store is swapped
        // whole on each re-list (`InitDone`), so a snapshot is never partial.
        // Field ownership is the apiserver's business: the node never reads
        // `managedFields`, and it is often the largest part of a stored pod.
        let pods = watcher(api, cfg)
            .default_backoff()
            .modify(|pod| pod.managed_fields_mut().clear());
        let stream = reflector::reflector(self.writer, pods);
        let mut stream = std::pin::pin!(stream);
        let mut desired = DesiredPods::default();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(_))
                | Ok(watcher::Event::Delete(_))
                | Ok(watcher::Event::InitDone) => {
                    let state = self.reader.state();
                    let update = SourceUpdate {
                        source: SOURCE_API,
                        pods: desired.snapshot(state.iter().map(|p| p.as_ref())),
                        errors: vec![],
                    };
                    self.changes.send_modify(|g| *g += 1);
                    if tx.send(update).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("watching the pods of this node: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, mirror: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                annotations: mirror
                    .then(|| [(CONFIG_MIRROR_ANNOTATION.to_string(), "abc".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some("busybox".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn mirror_pods_are_not_run_and_api_pods_keep_their_uid() {
        let pods = [
            pod("web", false),
            pod("static-node1", true),
            pod("db", false),
        ];
        let desired = desired_pods(pods.iter());
        let names: Vec<_> = desired
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["db", "web"]);
        assert_eq!(desired[1].metadata.uid.as_deref(), Some("uid-web"));
        let spec = desired[1].spec.as_ref().unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    }

    #[test]
    fn a_snapshot_rebuilds_only_the_pods_that_changed() {
        let versioned = |name: &str, rv: &str| {
            let mut p = pod(name, false);
            p.metadata.resource_version = Some(rv.into());
            p
        };
        let mut desired = DesiredPods::default();
        let first = desired.snapshot([versioned("db", "1"), versioned("web", "1")].iter());
        let mut relabelled = versioned("db", "2");
        relabelled.metadata.labels = Some([("tier".to_string(), "db".to_string())].into());
        let mut status_only = versioned("web", "2");
        status_only.status = Some(Default::default());
        let second = desired.snapshot([relabelled, status_only].iter());
        assert!(
            !Arc::ptr_eq(&first[0], &second[0]),
            "new labels are a change"
        );
        assert!(
            Arc::ptr_eq(&first[1], &second[1]),
            "a new version with only a new status keeps the pod the workers hold"
        );
        let third = desired.snapshot([versioned("web", "2")].iter());
        assert_eq!(third.len(), 1);
        assert_eq!(
            desired.by_uid.len(),
            1,
            "a pod gone from the store is forgotten"
        );
    }
}
