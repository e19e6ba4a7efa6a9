//! Helpers for objects as JSON: metadata access, server-set fields, and
//! the storage encoding (stored without `resourceVersion`, which is the
//! store's `mod_revision` on the way out).

use std::collections::BTreeMap;

use serde_json::value::RawValue;
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
    serde_json::to_vec(&WithoutResourceVersion(v)).expect("JSON serializes")
}

/// `v` serialized as if `metadata.resourceVersion` were absent, without a
/// copy of the object (every write encodes one).
struct WithoutResourceVersion<'a>(&'a Value);

/// A `metadata` map serialized without `resourceVersion`.
struct MetadataWithoutResourceVersion<'a>(&'a Map<String, Value>);

impl serde::Serialize for WithoutResourceVersion<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(top) = self.0 else {
            return self.0.serialize(s);
        };
        let mut map = s.serialize_map(Some(top.len()))?;
        for (k, v) in top {
            match v {
                Value::Object(m) if k == "metadata" => {
                    map.serialize_entry(k, &MetadataWithoutResourceVersion(m))?
                }
                _ => map.serialize_entry(k, v)?,
            }
        }
        map.end()
    }
}

impl serde::Serialize for MetadataWithoutResourceVersion<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let len = self.0.len() - usize::from(self.0.contains_key("resourceVersion"));
        let mut map = s.serialize_map(Some(len))?;
        for (k, v) in self.0.iter().filter(|(k, _)| *k != "resourceVersion") {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Whether `new` is `old` again, whatever resourceVersion either carries:
/// an update that changes nothing. Compared in place: no copy of either.
pub fn same_but_resource_version(old: &Value, new: &Value) -> bool {
    let (Value::Object(a), Value::Object(b)) = (old, new) else {
        return old == new;
    };
    let metadata_equal = |x: Option<&Value>, y: Option<&Value>| match (x, y) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let without =
                |m: &Map<String, Value>| m.iter().filter(|(k, _)| *k != "resourceVersion").count();
            without(x) == without(y)
                && x.iter()
                    .filter(|(k, _)| *k != "resourceVersion")
                    .all(|(k, v)| y.get(k) == Some(v))
        }
        (x, y) => x == y,
    };
    a.len() == b.len()
        && metadata_equal(a.get("metadata"), b.get("metadata"))
        && a.iter()
            .filter(|(k, _)| *k != "metadata")
            .all(|(k, v)| b.get(k) == Some(v))
}

pub fn decode(kv: &KeyValue) -> Value {
    let mut v: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
    meta_mut(&mut v).insert("resourceVersion".into(), kv.mod_revision.to_string().into());
    v
}

/// The JSON of a stored object as [`decode`] would write it back, with
/// `metadata.resourceVersion` set to `revision`, but made from the stored
/// bytes: only `metadata` is parsed, every other field is copied as stored
/// (stored objects are already compact, with sorted keys). Every watch
/// event is written this way, so a pod's spec and status are not decoded
/// and encoded again per event. `None` for bytes it cannot splice (not an
/// object, escaped keys, metadata not an object): then use [`decode`].
pub fn encode_with_version(stored: &[u8], revision: u64) -> Option<Vec<u8>> {
    let mut top: BTreeMap<&str, &RawValue> = serde_json::from_slice(stored).ok()?;
    let meta = metadata_with_version(&top, revision)?;
    top.insert("metadata", &meta);
    serde_json::to_vec(&top).ok()
}

/// As [`encode_with_version`], the object's `PartialObjectMetadata`
/// (what [`partial_metadata`] makes of the decoded object).
pub fn encode_metadata_with_version(stored: &[u8], revision: u64) -> Option<Vec<u8>> {
    let top: BTreeMap<&str, &RawValue> = serde_json::from_slice(stored).ok()?;
    let meta = metadata_with_version(&top, revision)?;
    let head = br#"{"apiVersion":"meta.k8s.io/v1","kind":"PartialObjectMetadata","metadata":"#;
    let mut out = Vec::with_capacity(head.len() + meta.get().len() + 1);
    out.extend_from_slice(head);
    out.extend_from_slice(meta.get().as_bytes());
    out.push(b'}');
    Some(out)
}

/// The `metadata` of a stored object's top level, with `resourceVersion`.
fn metadata_with_version(top: &BTreeMap<&str, &RawValue>, revision: u64) -> Option<Box<RawValue>> {
    let mut meta: Map<String, Value> = match top.get("metadata") {
        Some(raw) => serde_json::from_str(raw.get()).ok()?,
        None => Map::new(),
    };
    meta.insert("resourceVersion".into(), revision.to_string().into());
    RawValue::from_string(serde_json::to_string(&meta).ok()?).ok()
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
    fn a_stored_object_gets_its_version_without_being_decoded_whole() {
        let objects = [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "labels": {"x": "\"q\" é"}},
                   "spec": {"containers": [{"name": "c", "image": "i"}], "priority": 0},
                   "status": {"phase": "Pending", "ratio": 0.5}}),
            json!({"kind": "Event", "zz": 1}),
            json!({"metadata": {}}),
        ];
        for obj in objects {
            let stored = encode(&obj);
            let kv = KeyValue {
                key: "k".into(),
                value: stored.clone(),
                mod_revision: 42,
            };
            let spliced = encode_with_version(&stored, 42).expect("spliced");
            assert_eq!(spliced, serde_json::to_vec(&decode(&kv)).unwrap(), "{obj}");
            let partial = encode_metadata_with_version(&stored, 42).expect("spliced");
            let expected = partial_metadata(&decode(&kv));
            assert_eq!(partial, serde_json::to_vec(&expected).unwrap(), "{obj}");
        }
        assert_eq!(encode_with_version(b"null", 1), None);
        assert_eq!(encode_with_version(br#"{"metadata": 3}"#, 1), None);
    }

    #[test]
    fn an_update_that_changes_only_the_resource_version_is_no_change() {
        let old = json!({"metadata": {"name": "a", "resourceVersion": "5"}, "status": {"x": 1}});
        let mut new = old.clone();
        new["metadata"]["resourceVersion"] = "4".into();
        assert!(same_but_resource_version(&old, &new));
        new["status"]["x"] = 2.into();
        assert!(!same_but_resource_version(&old, &new));
        let mut new = old.clone();
        new["metadata"]["labels"] = json!({"a": "b"});
        assert!(!same_but_resource_version(&old, &new));
        let mut new = old.clone();
        new["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        assert!(same_but_resource_version(&old, &new));
        assert!(!same_but_resource_version(
            &old,
            &json!({"status": {"x": 1}})
        ));
    }

    #[test]
    fn the_stored_encoding_leaves_out_only_the_resource_version() {
        let obj = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "a", "resourceVersion": "5", "uid": "u"},
            "spec": {"resourceVersion": "kept"}});
        let stored: Value = serde_json::from_slice(&encode(&obj)).unwrap();
        assert_eq!(
            stored,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "uid": "u"},
                "spec": {"resourceVersion": "kept"}})
        );
        for v in [
            json!({"kind": "X"}),
            json!({"metadata": null}),
            json!([1, 2]),
        ] {
            assert_eq!(encode(&v), serde_json::to_vec(&v).unwrap());
        }
    }
}
