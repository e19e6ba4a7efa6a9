//! Events the apiserver process records itself, as the components it stands
//! in for do: `node-controller` on node health. Core/v1 Events, named `<object>.<hex time>` as client-go names them.

use serde_json::{Value, json};

use super::{Api, object};

/// Who records an event: `source.component` and `reportingComponent`.
#[derive(Debug, Clone, Copy)]
pub struct EventSource {
    pub component: &'static str,
    /// `action` (events.k8s.io), e.g. `Binding`.
    pub action: &'static str,
}

pub const NODE_CONTROLLER: EventSource = EventSource {
    component: "node-controller",
    action: "NodeHealth",
};

/// The Event about `involved` (a stored object with kind and apiVersion).
pub fn render_event(
    involved: &Value,
    source: EventSource,
    type_: &str,
    reason: &str,
    message: &str,
    now: jiff::Timestamp,
) -> Value {
    let name = object::name(involved);
    // Cluster-scoped objects' events go to `default`, as kubectl looks for them.
    let ns = object::meta_str(involved, "namespace").unwrap_or("default");
    let time = jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string();
    let mut reference = json!({
        "kind": involved["kind"],
        "apiVersion": involved["apiVersion"],
        "name": name,
        "uid": object::meta_str(involved, "uid").unwrap_or_default(),
        "resourceVersion": object::meta_str(involved, "resourceVersion").unwrap_or_default(),
    });
    if let Some(obj_ns) = object::meta_str(involved, "namespace") {
        reference["namespace"] = obj_ns.into();
    }
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{name}.{:x}", now.as_nanosecond()), "namespace": ns},
        "involvedObject": reference,
        "reason": reason,
        "message": message,
        "type": type_,
        "source": {"component": source.component},
        "reportingComponent": source.component,
        "reportingInstance": source.component,
        "action": source.action,
        "count": 1,
        "firstTimestamp": time,
        "lastTimestamp": time,
    })
}

impl Api {
    /// Records an event; a failure is logged, never the caller's failure.
    pub async fn record_event(
        &self,
        involved: &Value,
        source: EventSource,
        type_: &str,
        reason: &str,
        message: &str,
    ) {
        let event = render_event(
            involved,
            source,
            type_,
            reason,
            message,
            jiff::Timestamp::now(),
        );
        let events = self.kind("", "v1", "events");
        if let Err(e) = self.create_object(events.as_ref(), event).await {
            tracing::warn!(object = %object::name(involved), %reason, "recording an event: {}", e.message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_the_components() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "dev", "uid": "u1", "resourceVersion": "7"}});
        let e = render_event(
            &pod,
            NODE_CONTROLLER,
            "Normal",
            "NodeNotReady",
            "Node is not ready",
            jiff::Timestamp::from_second(1_700_000_000).unwrap(),
        );
        assert_eq!(e["metadata"]["namespace"], "dev");
        assert!(e["metadata"]["name"].as_str().unwrap().starts_with("web."));
        assert_eq!(e["involvedObject"]["kind"], "Pod");
        assert_eq!(e["involvedObject"]["uid"], "u1");
        assert_eq!(e["source"]["component"], "node-controller");
        assert_eq!(e["firstTimestamp"], "2023-11-14T22:13:20Z");
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node1"}});
        let e = render_event(
            &node,
            NODE_CONTROLLER,
            "Normal",
            "NodeNotReady",
            "x",
            jiff::Timestamp::now(),
        );
        assert_eq!(e["metadata"]["namespace"], "default");
        assert!(e["involvedObject"].get("namespace").is_none());
    }
}
