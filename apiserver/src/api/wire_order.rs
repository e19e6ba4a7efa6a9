//! Field order as kube-apiserver writes discovery documents and Status
//! bodies: Go's encoder follows the struct's field order, while a
//! `serde_json::Value` (and k8s-openapi's serializers) sort keys. Clients
//! and scripts that match raw JSON (`"name":"pods",…,"categories":["all"]`)
//! depend on the order, so these bodies are written through [`InWireOrder`].

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

/// Field orders of the Go types, tried in turn: an object takes the first
/// order that names all of its keys (keys no order names go last, sorted).
const ORDERS: &[&[&str]] = &[
    // APIResourceList
    &["kind", "apiVersion", "groupVersion", "resources"],
    // APIResource
    &[
        "name",
        "singularName",
        "namespaced",
        "group",
        "version",
        "kind",
        "verbs",
        "shortNames",
        "categories",
        "storageVersionHash",
    ],
    // APIGroupList, APIGroup
    &["kind", "apiVersion", "groups"],
    &[
        "kind",
        "apiVersion",
        "name",
        "versions",
        "preferredVersion",
        "serverAddressByClientCIDRs",
    ],
    // GroupVersionForDiscovery, ServerAddressByClientCIDR
    &["groupVersion", "version"],
    &["clientCIDR", "serverAddress"],
    // APIVersions
    &["kind", "versions", "serverAddressByClientCIDRs"],
    // Status, StatusDetails, StatusCause
    &[
        "kind",
        "apiVersion",
        "metadata",
        "status",
        "message",
        "reason",
        "details",
        "code",
    ],
    &[
        "name",
        "group",
        "kind",
        "uid",
        "causes",
        "retryAfterSeconds",
    ],
    &["reason", "message", "field"],
];

/// A JSON value serialized with kube-apiserver's field order.
pub struct InWireOrder<'a>(pub &'a Value);

impl Serialize for InWireOrder<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(m) => {
                let order: &[&str] = ORDERS
                    .iter()
                    .find(|o| m.keys().all(|k| o.contains(&k.as_str())))
                    .copied()
                    .unwrap_or(&[]);
                let mut map = s.serialize_map(Some(m.len()))?;
                for k in order {
                    if let Some(v) = m.get(*k) {
                        map.serialize_entry(k, &InWireOrder(v))?;
                    }
                }
                for (k, v) in m {
                    if !order.contains(&k.as_str()) {
                        map.serialize_entry(k, &InWireOrder(v))?;
                    }
                }
                map.end()
            }
            Value::Array(a) => s.collect_seq(a.iter().map(InWireOrder)),
            other => other.serialize(s),
        }
    }
}

pub fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(&InWireOrder(v)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn discovery_and_status_fields_come_in_go_struct_order() {
        let list = json!({"apiVersion": "v1", "groupVersion": "v1", "kind": "APIResourceList", "resources": [
            {"categories": ["all"], "kind": "Pod", "name": "pods", "namespaced": true, "shortNames": ["po"],
             "singularName": "pod", "storageVersionHash": "xPOwRZ+Yhw8=", "verbs": ["get"]}
        ]});
        assert_eq!(
            String::from_utf8(to_vec(&list)).unwrap(),
            r#"{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"v1","resources":[{"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","verbs":["get"],"shortNames":["po"],"categories":["all"],"storageVersionHash":"xPOwRZ+Yhw8="}]}"#
        );
        let status = json!({"apiVersion": "v1", "code": 404, "details": {"kind": "pods", "name": "x"},
            "kind": "Status", "message": "pods \"x\" not found", "metadata": {}, "reason": "NotFound", "status": "Failure"});
        assert_eq!(
            String::from_utf8(to_vec(&status)).unwrap(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"x\" not found","reason":"NotFound","details":{"name":"x","kind":"pods"},"code":404}"#
        );
        let groups = json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [{"name": "apps",
            "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"},
            "versions": [{"groupVersion": "apps/v1", "version": "v1"}]}]});
        assert_eq!(
            String::from_utf8(to_vec(&groups)).unwrap(),
            r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[{"name":"apps","versions":[{"groupVersion":"apps/v1","version":"v1"}],"preferredVersion":{"groupVersion":"apps/v1","version":"v1"}}]}"#
        );
    }
}
