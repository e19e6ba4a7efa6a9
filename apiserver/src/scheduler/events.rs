//! The scheduler's Events (`Scheduled`, `FailedScheduling`, `Preempted`),
//! written by the control plane's [`EventRecorder`] so that recording never
//! slows scheduling. The reporting controller is the profile's scheduler
//! name.

use k8s_openapi::api::core::v1::{ObjectReference, Pod};

use crate::event_recorder::EventRecorder;

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

/// Sends events to the control plane's event writer; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    events: EventRecorder,
}

impl Recorder {
    pub fn spawn(client: kube::Client) -> Self {
        Recorder {
            events: EventRecorder::new(client, "default-scheduler"),
        }
    }

    /// Recorded under the profile's name, as kube-scheduler gives each
    /// profile its own recorder; repeats are counted on one Event.
    pub fn record(&self, e: PodEvent) {
        self.events.as_component(&e.reporter).record(
            e.pod,
            e.type_,
            e.reason,
            Some(e.action),
            e.message,
        );
    }
}
