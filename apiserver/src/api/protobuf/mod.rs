//! The Kubernetes protobuf encoding (`application/vnd.kubernetes.protobuf`),
//! read and written through Kubernetes' own descriptors with prost-reflect.
//!
//! kubectl's typed clients (`kubectl create priorityclass|quota|role|
//! ingress|deployment ...`, `kubectl debug`, `kubectl auth can-i`) send
//! protobuf and do not retry in JSON on a 415. A body is the magic `k8s\0`
//! followed by a `runtime.Unknown {typeMeta, raw}`; `raw` is the object,
//! whose message the envelope's apiVersion and kind name. Objects become
//! the JSON the rest of the apiserver handles (see [`json`]); a client that
//! accepts only protobuf gets objects and lists back in it.
//! Custom resources have no protobuf form: their bodies are refused with
//! 415, as kube-apiserver does.

mod json;
mod schema;

use prost::Message;
use prost_reflect::{DynamicMessage, Value as Pb};
use serde_json::Value;

use schema::{UNKNOWN, schema};

const MAGIC: &[u8] = b"k8s\0";

pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtobufError {
    #[error("not a Kubernetes protobuf message (missing the k8s\\0 prefix)")]
    NoMagic,
    #[error("malformed protobuf: {0}")]
    Malformed(String),
    #[error("{0} has no protobuf form; send JSON")]
    UnsupportedKind(String),
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

impl ProtobufError {
    fn invalid(path: &str, reason: &str) -> ProtobufError {
        ProtobufError::Invalid {
            path: if path.is_empty() { "<object>" } else { path }.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

fn envelope_descriptor() -> prost_reflect::MessageDescriptor {
    schema()
        .pool
        .get_message_by_name(UNKNOWN)
        .expect("runtime.Unknown is in the schema")
}

/// Decodes a `k8s\0`-prefixed protobuf body into the JSON form of the
/// object. Fields the schema does not know stay in as `"#<number>"` keys,
/// for field validation to report.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let s = schema();
    let bytes = body.strip_prefix(MAGIC).ok_or(ProtobufError::NoMagic)?;
    let envelope = DynamicMessage::decode(envelope_descriptor(), bytes)
        .map_err(|e| ProtobufError::Malformed(e.to_string()))?;
    let type_meta = envelope.get_field_by_name("typeMeta");
    let type_meta = type_meta.as_deref().and_then(Pb::as_message);
    let text = |name: &str| {
        type_meta
            .and_then(|t| t.get_field_by_name(name))
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    let desc = s
        .kind(&api_version, &kind)
        .ok_or_else(|| ProtobufError::UnsupportedKind(format!("{api_version}, Kind={kind}")))?;
    let raw = envelope
        .get_field_by_name("raw")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    let msg =
        DynamicMessage::decode(desc, raw).map_err(|e| ProtobufError::Malformed(e.to_string()))?;
    let mut obj =
        json::message_to_json(s, &msg, "")?.unwrap_or_else(|| Value::Object(Default::default()));
    if let Some(o) = obj.as_object_mut() {
        o.insert("apiVersion".into(), api_version.into());
        o.insert("kind".into(), kind.into());
    }
    Ok(obj)
}

/// Encodes the JSON form of an object (with its `apiVersion` and `kind`)
/// as a `k8s\0`-prefixed protobuf body.
pub fn encode(obj: &Value) -> Result<Vec<u8>, ProtobufError> {
    let s = schema();
    let field = |name: &str| obj.get(name).and_then(Value::as_str).unwrap_or("");
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    let desc = s
        .kind(api_version, kind)
        .ok_or_else(|| ProtobufError::UnsupportedKind(format!("{api_version}, Kind={kind}")))?;
    let raw = json::json_to_message(s, obj, &desc, "")?.encode_to_vec();
    let mut envelope = DynamicMessage::new(envelope_descriptor());
    let type_meta_field = envelope_descriptor()
        .get_field_by_name("typeMeta")
        .expect("runtime.Unknown has typeMeta");
    let prost_reflect::Kind::Message(type_meta_desc) = type_meta_field.kind() else {
        unreachable!("typeMeta is a message");
    };
    let mut type_meta = DynamicMessage::new(type_meta_desc);
    type_meta.set_field_by_name("apiVersion", Pb::String(api_version.to_owned()));
    type_meta.set_field_by_name("kind", Pb::String(kind.to_owned()));
    envelope.set_field(&type_meta_field, Pb::Message(type_meta));
    envelope.set_field_by_name("raw", Pb::Bytes(raw.into()));
    // Go writes the envelope's strings even when empty.
    envelope.set_field_by_name("contentEncoding", Pb::String(String::new()));
    envelope.set_field_by_name("contentType", Pb::String(String::new()));
    let mut out = MAGIC.to_vec();
    envelope.encode(&mut out).expect("a Vec grows as needed");
    Ok(out)
}

#[cfg(test)]
mod tests;
