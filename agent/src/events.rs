//! Events, as the kubelet records them (`Created`, `Started`, `Killing`,
//! `BackOff`, `Failed`, ...): logged, and kept in a bounded in-memory list for
//! the API and for tools that show recent events.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use serde::Serialize;

const KEEP: usize = 1000;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub time: Timestamp,
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    pub reason: String,
    pub message: String,
    /// `namespace/name` of the pod, the manifest file for source errors, or
    /// the node's name for the node's own events.
    pub object: String,
    /// What `object` is: `Pod`, or `Node` for the node's own events
    /// (`FreeDiskSpaceFailed`, `EvictionThresholdMet`…).
    pub kind: &'static str,
    /// `spec.containers{name}` when the event is about one container.
    pub field_path: Option<String>,
}

/// Recorded events are also broadcast to subscribers (the apiserver event
/// sink); a slow subscriber loses the oldest, never blocks a pod worker.
#[derive(Clone)]
pub struct EventRecorder {
    events: Arc<Mutex<VecDeque<Event>>>,
    sink: tokio::sync::broadcast::Sender<Event>,
    keep: usize,
}

impl Default for EventRecorder {
    fn default() -> Self {
        Self::keeping(KEEP)
    }
}

impl EventRecorder {
    /// Keeps (and buffers for subscribers) the last `keep` events: a hollow
    /// node, one of thousands in a process, keeps few.
    pub fn keeping(keep: usize) -> Self {
        let keep = keep.max(1);
        EventRecorder {
            events: Default::default(),
            sink: tokio::sync::broadcast::Sender::new(keep),
            keep,
        }
    }

    pub fn record(
        &self,
        type_: &'static str,
        object: &str,
        field_path: Option<String>,
        reason: &str,
        message: String,
    ) {
        self.record_about("Pod", type_, object, field_path, reason, message);
    }

    fn record_about(
        &self,
        kind: &'static str,
        type_: &'static str,
        object: &str,
        field_path: Option<String>,
        reason: &str,
        message: String,
    ) {
        if type_ == "Warning" {
            tracing::warn!(object, reason, "{message}");
        } else {
            tracing::info!(object, reason, "{message}");
        }
        let mut events = self.events.lock().expect("lock");
        if events.len() >= self.keep {
            events.pop_front();
        }
        let event = Event {
            time: Timestamp::now(),
            type_,
            reason: reason.to_string(),
            message,
            object: object.to_string(),
            kind,
            field_path,
        };
        let _ = self.sink.send(event.clone());
        events.push_back(event);
    }

    /// Every event recorded from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.sink.subscribe()
    }

    pub fn normal(&self, object: &str, container: Option<&str>, reason: &str, message: String) {
        let fp = container.map(|c| format!("spec.containers{{{c}}}"));
        self.record("Normal", object, fp, reason, message);
    }

    pub fn warning(&self, object: &str, container: Option<&str>, reason: &str, message: String) {
        let fp = container.map(|c| format!("spec.containers{{{c}}}"));
        self.record("Warning", object, fp, reason, message);
    }

    /// A warning about the node itself (kubelet's `nodeRef` events).
    pub fn node_warning(&self, node: &str, reason: &str, message: String) {
        self.record_about("Node", "Warning", node, None, reason, message);
    }

    pub fn list(&self) -> Vec<Event> {
        self.events.lock().expect("lock").iter().cloned().collect()
    }
}
