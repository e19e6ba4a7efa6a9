//! Events a controller records about the objects it manages, as client-go's
//! `record.EventRecorder` writes them: core/v1 Events named
//! `<object>.<hex nanoseconds>` in the object's namespace, with
//! `source.component` the controller's name. Recording never blocks or
//! fails a sync.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, PostParams};

#[derive(Clone)]
pub struct EventRecorder {
    client: kube::Client,
    component: &'static str,
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
    pub fn new(client: kube::Client, component: &'static str) -> Self {
        Self { client, component }
    }

    pub fn normal(&self, about: ObjectReference, reason: &str, message: String) {
        self.record(about, "Normal", reason, message);
    }

    pub fn warning(&self, about: ObjectReference, reason: &str, message: String) {
        self.record(about, "Warning", reason, message);
    }

    fn record(&self, about: ObjectReference, type_: &str, reason: &str, message: String) {
        let now = jiff::Timestamp::now();
        let second = jiff::Timestamp::from_second(now.as_second()).unwrap_or(now);
        let ns = about.namespace.clone().unwrap_or_else(|| "default".into());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    about.name.as_deref().unwrap_or(""),
                    now.as_nanosecond()
                )),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: about,
            reason: Some(reason.to_owned()),
            message: Some(message),
            type_: Some(type_.to_owned()),
            source: Some(EventSource {
                component: Some(self.component.to_owned()),
                host: None,
            }),
            reporting_component: Some(self.component.to_owned()),
            reporting_instance: Some(self.component.to_owned()),
            count: Some(1),
            first_timestamp: Some(Time(second)),
            last_timestamp: Some(Time(second)),
            event_time: None::<MicroTime>,
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        tokio::spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::debug!("recording event: {e}");
            }
        });
    }
}
