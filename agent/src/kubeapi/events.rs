//! The event sink (kubelet's event broadcaster to the apiserver): every event
//! the agent records about a pod (or about the node itself) becomes a core/v1 Event, with the pod (or node) as its
//! involvedObject and `kubelet` as its source. A repeat of the same event
//! (same pod, container, reason and message) bumps `count` and
//! `lastTimestamp` of the first, as kubelet's event correlator does.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::broadcast;

use crate::events::Event as AgentEvent;

/// Remembered series at most; past that, repeats start new Events.
const KEEP_SERIES: usize = 4096;

/// The Event for `ev` about `pod` on `node`, pure.
pub fn render_event(ev: &AgentEvent, pod: &Pod, node: &str) -> Event {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let involved = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(ns.clone()),
        name: Some(name.clone()),
        // A static pod's events are about the pod the kubelet runs, whose
        // UID its mirror carries in `kubernetes.io/config.mirror`: kubectl
        // describe of the mirror looks them up there.
        uid: mirror_source_uid(pod).or_else(|| pod.metadata.uid.clone()),
        resource_version: pod.metadata.resource_version.clone(),
        field_path: ev.field_path.clone(),
    };
    render(ev, involved, &ns, &name, node)
}

/// The Event for `ev` about the node itself, pure: as the kubelet's
/// `nodeRef`, the UID is the node's name (what `kubectl describe node`
/// looks events up by) and the Event lives in `default`.
pub fn render_node_event(ev: &AgentEvent, node: &str) -> Event {
    let involved = ObjectReference {
        kind: Some("Node".into()),
        name: Some(node.into()),
        uid: Some(node.into()),
        ..Default::default()
    };
    render(ev, involved, "default", node, node)
}

fn render(ev: &AgentEvent, involved: ObjectReference, ns: &str, name: &str, node: &str) -> Event {
    let nanos = ev.time.as_nanosecond();
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{nanos:x}")),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        involved_object: involved,
        reason: Some(ev.reason.clone()),
        message: Some(ev.message.clone()),
        type_: Some(ev.type_.into()),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(node.into()),
        }),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(node.into()),
        count: Some(1),
        first_timestamp: Some(Time(ev.time)),
        last_timestamp: Some(Time(ev.time)),
        ..Default::default()
    }
}

fn mirror_source_uid(pod: &Pod) -> Option<String> {
    pod.metadata
        .annotations
        .as_ref()?
        .get("kubernetes.io/config.mirror")
        .filter(|u| !u.is_empty())
        .cloned()
}

pub struct EventSink {
    pub client: Client,
    pub node: String,
    pub pods: Store<Pod>,
}

type SeriesKey = (String, Option<String>, String, String);

impl EventSink {
    /// The API pod an event is about: the pod itself, or a static pod's
    /// mirror. Events recorded before the mirror exists wait for it a little.
    async fn involved(&self, object: &str) -> Option<Pod> {
        let (ns, name) = object.split_once('/')?;
        if ns.is_empty() || name.contains('/') {
            return None; // a manifest file, not a pod
        }
        let key = ObjectRef::<Pod>::new(name).within(ns);
        for _ in 0..25 {
            if let Some(p) = self.pods.get(&key) {
                return Some((*p).clone());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    pub async fn run(self, mut events: broadcast::Receiver<AgentEvent>) {
        let mut series: HashMap<SeriesKey, (String, String, i32)> = HashMap::new();
        loop {
            let ev = match events.recv().await {
                Ok(ev) => ev,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("{n} events were not sent to the apiserver");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let event = if ev.kind == "Node" {
                render_node_event(&ev, &self.node)
            } else {
                let Some(pod) = self.involved(&ev.object).await else {
                    continue;
                };
                render_event(&ev, &pod, &self.node)
            };
            let key: SeriesKey = (
                event.involved_object.uid.clone().unwrap_or_default(),
                ev.field_path.clone(),
                ev.reason.clone(),
                ev.message.clone(),
            );
            if let Some((ns, name, count)) = series.get_mut(&key) {
                let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
                *count += 1;
                let patch = json!({"count": *count, "lastTimestamp": Time(ev.time)});
                match api
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => continue,
                    Err(e) => tracing::debug!("updating event {name}: {e}"),
                }
                series.remove(&key);
            }
            let ns = event.metadata.namespace.clone().unwrap_or_default();
            let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
            match api.create(&PostParams::default(), &event).await {
                Ok(created) => {
                    if series.len() >= KEEP_SERIES {
                        series.clear();
                    }
                    series.insert(key, (ns, created.metadata.name.unwrap_or_default(), 1));
                }
                Err(e) => {
                    tracing::warn!(object = %ev.object, reason = %ev.reason, "sending an event: {e}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> AgentEvent {
        AgentEvent {
            time: jiff::Timestamp::now(),
            type_: "Normal",
            reason: "Started".into(),
            message: "Started container web".into(),
            object: "default/web-node1".into(),
            kind: "Pod",
            field_path: Some("spec.containers{web}".into()),
        }
    }

    fn pod(annotations: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-node1".into()),
                namespace: Some("default".into()),
                uid: Some("api-uid".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_pod_from_the_api_is_referred_to_by_its_uid() {
        let e = render_event(&event(), &pod(&[]), "node1");
        assert_eq!(e.involved_object.uid.as_deref(), Some("api-uid"));
        assert_eq!(e.involved_object.name.as_deref(), Some("web-node1"));
        assert_eq!(
            e.involved_object.field_path.as_deref(),
            Some("spec.containers{web}")
        );
        assert_eq!(e.source.unwrap().component.as_deref(), Some("kubelet"));
    }

    #[test]
    fn a_static_pod_is_referred_to_by_the_uid_its_mirror_carries() {
        let mirror = pod(&[("kubernetes.io/config.mirror", "static-hash")]);
        let e = render_event(&event(), &mirror, "node1");
        assert_eq!(e.involved_object.uid.as_deref(), Some("static-hash"));
    }

    #[test]
    fn a_node_event_refers_to_the_node_by_name_in_the_default_namespace() {
        let ev = AgentEvent {
            type_: "Warning",
            reason: "FreeDiskSpaceFailed".into(),
            object: "node1".into(),
            kind: "Node",
            field_path: None,
            ..event()
        };
        let e = render_node_event(&ev, "node1");
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(e.involved_object.kind.as_deref(), Some("Node"));
        assert_eq!(e.involved_object.name.as_deref(), Some("node1"));
        assert_eq!(e.involved_object.uid.as_deref(), Some("node1"));
        assert_eq!(e.involved_object.namespace, None);
        assert_eq!(e.type_.as_deref(), Some("Warning"));
    }
}
