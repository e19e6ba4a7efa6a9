//! Helpers for objects as JSON: metadata access, server-set fields, and
//! the storage encoding (stored without `resourceVersion`, which is the
//! store's `mod_revision` on the way out).

use serde_json::{Map, Value, json};

use crate::storage::KeyValue;

pub fn meta(v: &Value) -> &Value {
    v.get("metadata").unwrap_or(&Value::Null)
}

pub fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = json!({});
    }
    let obj = v.as_object_mut().expect("object");
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj.insert("metadata".into(), json!({}));
    }
    obj.get_mut("metadata")
        .and_then(Value::as_object_mut)
        .expect("metadata object")
}

pub fn meta_str<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    meta(v)
        .get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

pub fn name(v: &Value) -> &str {
    meta_str(v, "name").unwrap_or("")
}

pub fn labels(v: &Value) -> std::collections::BTreeMap<String, String> {
    meta(v)
        .get("labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

pub fn resource_version(v: &Value) -> Option<u64> {
    meta_str(v, "resourceVersion").and_then(|s| s.parse().ok())
}

/// Now, at the second precision `metav1.Time` carries.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
        .expect("valid time")
        .to_string()
}

pub fn timestamp_after(seconds: i64) -> String {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + seconds)
        .expect("valid time")
        .to_string()
}

pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `generateName` suffix: five characters from the alphabet
/// `utilrand.String` uses (no vowels, no confusable digits).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

pub fn encode(v: &Value) -> Vec<u8> {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&v).expect("JSON serializes")
}

/// Whether `new` is `old` again, whatever resourceVersion either carries:
/// an update that changes nothing.
pub fn same_but_resource_version(old: &Value, new: &Value) -> bool {
    let without_rv = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        v
    };
    without_rv(old) == without_rv(new)
}

pub fn decode(kv: &KeyValue) -> Value {
    let mut v: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
    meta_mut(&mut v).insert("resourceVersion".into(), kv.mod_revision.to_string().into());
    v
}

/// A field's value for field selectors: a dotted path into the object,
/// rendered as the apiserver's field sets render it.
pub fn field_value(v: &Value, path: &str) -> Option<String> {
    if path == "source" {
        return field_value(v, "source.component").or_else(|| field_value(v, "reportingComponent"));
    }
    let mut cur = v;
    for part in path.split('.') {
        cur = cur.get(part)?;
    }
    Some(match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// The row object kubectl needs for `--show-labels`, `-L` and `-A`.
pub fn partial_metadata(v: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta(v)})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_that_changes_only_the_resource_version_is_no_change() {
        let old = json!({"metadata": {"name": "a", "resourceVersion": "5"}, "status": {"x": 1}});
        let mut new = old.clone();
        new["metadata"]["resourceVersion"] = "4".into();
        assert!(same_but_resource_version(&old, &new));
        new["status"]["x"] = 2.into();
        assert!(!same_but_resource_version(&old, &new));
    }
}
