//! The scheduler's Events (`Scheduled`, `FailedScheduling`, `Preempted`),
//! written by one task so that recording never slows scheduling. The
//! reporting controller is the profile's scheduler name, as kube-scheduler
//! gives each profile its own recorder. A repeated event (same pod, reason
//! and message) bumps `count` on the existing one, as client-go's event
//! correlator does.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;

/// One event to record about a pod.
#[derive(Debug, Clone)]
pub struct PodEvent {
    pub pod: ObjectReference,
    pub type_: &'static str,
    pub reason: &'static str,
    pub action: &'static str,
    pub message: String,
    /// The profile's `schedulerName`.
    pub reporter: String,
}

impl PodEvent {
    pub fn new(
        pod: &Pod,
        reporter: &str,
        type_: &'static str,
        reason: &'static str,
        action: &'static str,
        message: String,
    ) -> Self {
        PodEvent {
            pod: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                namespace: pod.metadata.namespace.clone(),
                uid: pod.metadata.uid.clone(),
                resource_version: pod.metadata.resource_version.clone(),
                ..Default::default()
            },
            type_,
            reason,
            action,
            message,
            reporter: reporter.to_owned(),
        }
    }
}

/// Sends events to the recording task; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<PodEvent>,
}

impl Recorder {
    pub fn spawn(client: kube::Client) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(record(client, rx));
        Recorder { tx }
    }

    pub fn record(&self, e: PodEvent) {
        let _ = self.tx.send(e);
    }
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// The Event object, named `<pod>.<hex nanos>` as client-go names them.
pub fn render(e: &PodEvent, instance: &str, now: jiff::Timestamp) -> Event {
    let time = Time(jiff::Timestamp::from_second(now.as_second()).unwrap_or(now));
    Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}.{:x}",
                e.pod.name.as_deref().unwrap_or_default(),
                now.as_nanosecond()
            )),
            namespace: e.pod.namespace.clone(),
            ..Default::default()
        },
        involved_object: e.pod.clone(),
        reason: Some(e.reason.into()),
        message: Some(e.message.clone()),
        type_: Some(e.type_.into()),
        action: Some(e.action.into()),
        source: Some(EventSource {
            component: Some(e.reporter.clone()),
            host: None,
        }),
        reporting_component: Some(e.reporter.clone()),
        reporting_instance: Some(format!("{}-{instance}", e.reporter)),
        count: Some(1),
        first_timestamp: Some(time.clone()),
        last_timestamp: Some(time),
        ..Default::default()
    }
}

async fn record(client: kube::Client, mut rx: mpsc::UnboundedReceiver<PodEvent>) {
    let instance = host();
    // (pod UID, reason, message) → (event name, count), for repeats.
    let mut seen: HashMap<(String, &'static str, String), (String, i32)> = HashMap::new();
    while let Some(e) = rx.recv().await {
        let ns = e.pod.namespace.clone().unwrap_or_default();
        let uid = e.pod.uid.clone().unwrap_or_default();
        let events: Api<Event> = Api::namespaced(client.clone(), &ns);
        if e.reason == "Scheduled" {
            seen.retain(|(u, _, _), _| *u != uid);
        }
        let key = (uid, e.reason, e.message.clone());
        if let Some((name, count)) = seen.get_mut(&key) {
            *count += 1;
            let patch = serde_json::json!({
                "count": *count,
                "lastTimestamp": Time(jiff::Timestamp::now()),
            });
            match events
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => continue,
                Err(err) => tracing::debug!(event = %name, "bumping an event: {err}"),
            }
        }
        let ev = render(&e, &instance, jiff::Timestamp::now());
        let name = ev.metadata.name.clone().unwrap_or_default();
        match events.create(&PostParams::default(), &ev).await {
            Ok(_) => {
                if e.reason == "FailedScheduling" {
                    seen.insert(key, (name, 1));
                }
            }
            Err(err) => tracing::warn!(
                pod = %e.pod.name.as_deref().unwrap_or_default(),
                reason = e.reason,
                "recording an event: {err}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_name_the_profile_as_their_source() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("dev".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let e = PodEvent::new(
            &pod,
            "my-custom-scheduler",
            "Normal",
            "Scheduled",
            "Binding",
            "Successfully assigned dev/web to node1".into(),
        );
        let ev = render(
            &e,
            "host",
            jiff::Timestamp::from_second(1_700_000_000).unwrap(),
        );
        assert_eq!(ev.metadata.namespace.as_deref(), Some("dev"));
        assert!(ev.metadata.name.unwrap().starts_with("web."));
        assert_eq!(
            ev.source.unwrap().component.as_deref(),
            Some("my-custom-scheduler")
        );
        assert_eq!(
            ev.reporting_component.as_deref(),
            Some("my-custom-scheduler")
        );
        assert_eq!(ev.involved_object.uid.as_deref(), Some("u1"));
        assert_eq!(ev.reason.as_deref(), Some("Scheduled"));
    }
}
