//! Events the control plane records about the objects it handles (the
//! scheduler's `Scheduled`/`FailedScheduling`, the controllers'
//! `SuccessfulCreate`, `ScalingReplicaSet`, ...), as client-go's
//! `record.EventRecorder` writes them: core/v1 Events named
//! `<object>.<hex nanoseconds>` in the object's namespace (cluster-scoped
//! objects' in `default`), `source.component` and `reportingComponent` the
//! component's name. One task writes them all, so recording never blocks
//! or fails the caller; a repeat of an event (same object, component, type,
//! reason and message) bumps the `count` and `lastTimestamp` of the one
//! written before, as client-go's event correlator does.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;

/// How many distinct events the correlator remembers (client-go's
/// `maxLruCacheEntries`).
const REMEMBERED: usize = 4096;

/// One event to write.
#[derive(Debug, Clone)]
pub struct Record {
    pub about: ObjectReference,
    /// `source.component`: a controller's or a scheduler profile's name.
    pub component: String,
    pub type_: &'static str,
    pub reason: String,
    /// `action` (events.k8s.io), e.g. `Binding`; controllers leave it out.
    pub action: Option<&'static str>,
    pub message: String,
}

impl Record {
    /// What makes two events the same one, counted (the correlator's key).
    fn key(&self) -> (String, String, &'static str, String, String) {
        (
            self.about.uid.clone().unwrap_or_default(),
            self.component.clone(),
            self.type_,
            self.reason.clone(),
            self.message.clone(),
        )
    }
}

/// Records events as one component; cheap to clone.
#[derive(Clone)]
pub struct EventRecorder {
    tx: mpsc::UnboundedSender<Record>,
    component: String,
}

/// The object an event is about.
pub fn reference(api_version: &str, kind: &str, meta: &ObjectMeta) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.to_owned()),
        kind: Some(kind.to_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}

impl EventRecorder {
    /// Starts the writing task (on the current tokio runtime).
    pub fn new(client: kube::Client, component: &str) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_events(client, rx));
        Self {
            tx,
            component: component.to_owned(),
        }
    }

    /// The same writer, recording as another component (kube-scheduler
    /// gives each profile its own recorder, named after the profile).
    pub fn as_component(&self, component: &str) -> Self {
        Self {
            tx: self.tx.clone(),
            component: component.to_owned(),
        }
    }

    pub fn normal(&self, about: ObjectReference, reason: &str, message: String) {
        self.record(about, "Normal", reason, None, message);
    }

    pub fn warning(&self, about: ObjectReference, reason: &str, message: String) {
        self.record(about, "Warning", reason, None, message);
    }

    pub fn record(
        &self,
        about: ObjectReference,
        type_: &'static str,
        reason: &str,
        action: Option<&'static str>,
        message: String,
    ) {
        let _ = self.tx.send(Record {
            about,
            component: self.component.clone(),
            type_,
            reason: reason.to_owned(),
            action,
            message,
        });
    }
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// The Event object for `r`, first seen `now`, written from `host`.
pub fn render(r: &Record, host: &str, now: jiff::Timestamp) -> Event {
    let time = Time(jiff::Timestamp::from_second(now.as_second()).unwrap_or(now));
    Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}.{:x}",
                r.about.name.as_deref().unwrap_or_default(),
                now.as_nanosecond()
            )),
            namespace: Some(namespace_of(r)),
            ..Default::default()
        },
        involved_object: r.about.clone(),
        reason: Some(r.reason.clone()),
        message: Some(r.message.clone()),
        type_: Some(r.type_.into()),
        action: r.action.map(Into::into),
        source: Some(EventSource {
            component: Some(r.component.clone()),
            host: None,
        }),
        reporting_component: Some(r.component.clone()),
        reporting_instance: Some(format!("{}-{host}", r.component)),
        count: Some(1),
        first_timestamp: Some(time.clone()),
        last_timestamp: Some(time),
        ..Default::default()
    }
}

fn namespace_of(r: &Record) -> String {
    r.about
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into())
}

async fn write_events(client: kube::Client, mut rx: mpsc::UnboundedReceiver<Record>) {
    let host = host();
    // The correlator's memory: event → (its name, count). Decided here, in
    // order; the writes themselves go out concurrently.
    let mut seen: HashMap<(String, String, &'static str, String, String), (String, i32)> =
        HashMap::new();
    while let Some(r) = rx.recv().await {
        let events: Api<Event> = Api::namespaced(client.clone(), &namespace_of(&r));
        let ev = render(&r, &host, jiff::Timestamp::now());
        let key = r.key();
        let bump = match seen.get_mut(&key) {
            Some((name, count)) => {
                *count += 1;
                Some((name.clone(), *count))
            }
            None => {
                if seen.len() >= REMEMBERED {
                    seen.clear();
                }
                let name = ev.metadata.name.clone().unwrap_or_default();
                seen.insert(key, (name, 1));
                None
            }
        };
        tokio::spawn(async move {
            if let Some((name, count)) = bump {
                let patch = serde_json::json!({
                    "count": count,
                    "lastTimestamp": Time(jiff::Timestamp::now()),
                });
                match events
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => return,
                    // Gone (expired, deleted): written anew.
                    Err(err) => tracing::debug!(event = %name, "bumping an event: {err}"),
                }
            }
            if let Err(err) = events.create(&PostParams::default(), &ev).await {
                tracing::debug!(
                    object = %r.about.name.as_deref().unwrap_or_default(),
                    reason = %r.reason,
                    "recording an event: {err}"
                );
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(namespace: Option<&str>) -> Record {
        Record {
            about: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some("web".into()),
                namespace: namespace.map(Into::into),
                uid: Some("u1".into()),
                ..Default::default()
            },
            component: "my-custom-scheduler".into(),
            type_: "Normal",
            reason: "Scheduled".into(),
            action: Some("Binding"),
            message: "Successfully assigned dev/web to node1".into(),
        }
    }

    #[test]
    fn events_name_their_object_and_component() {
        let now = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let ev = render(&record(Some("dev")), "host", now);
        assert_eq!(ev.metadata.namespace.as_deref(), Some("dev"));
        assert_eq!(
            ev.metadata.name.as_deref(),
            Some(format!("web.{:x}", now.as_nanosecond()).as_str())
        );
        assert_eq!(
            ev.source.unwrap().component.as_deref(),
            Some("my-custom-scheduler")
        );
        assert_eq!(
            ev.reporting_component.as_deref(),
            Some("my-custom-scheduler")
        );
        assert_eq!(
            ev.reporting_instance.as_deref(),
            Some("my-custom-scheduler-host")
        );
        assert_eq!(ev.involved_object.uid.as_deref(), Some("u1"));
        assert_eq!(ev.action.as_deref(), Some("Binding"));
        assert_eq!(ev.count, Some(1));
    }

    #[test]
    fn events_of_cluster_scoped_objects_go_to_default() {
        let ev = render(&record(None), "host", jiff::Timestamp::now());
        assert_eq!(ev.metadata.namespace.as_deref(), Some("default"));
    }

    #[test]
    fn the_same_event_from_another_component_is_another_event() {
        let a = record(Some("dev"));
        let mut b = a.clone();
        assert_eq!(a.key(), b.key());
        b.component = "default-scheduler".into();
        assert_ne!(a.key(), b.key());
        let mut c = a.clone();
        c.message = "other".into();
        assert_ne!(a.key(), c.key());
    }
}
