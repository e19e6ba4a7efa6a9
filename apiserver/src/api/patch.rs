//! The PATCH bodies kubectl sends: JSON merge patch (RFC 7386, `kubectl
//! label`), strategic merge patch (`kubectl apply`, `taint`, `edit`) and
//! JSON patch (RFC 6902, `kubectl patch --type=json`).
//!
//! Strategic merge follows each field's patch metadata
//! (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`) from
//! [`crate::patch_metadata`]: lists with the `merge` strategy merge by
//! their key (or as a set of scalars), every other list is replaced whole.

use serde_json::{Map, Value};

use crate::patch_metadata::{FieldMetadata, Node};

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut out = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            out.remove(k);
        } else {
            let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), v);
            out.insert(k.clone(), merged);
        }
    }
    Value::Object(out)
}

/// How a list field merges under strategic merge patch.
enum ListStrategy<'a> {
    /// Elements are objects matched by this key.
    ByKey(&'a str),
    /// A set of primitives (`finalizers`).
    Union,
    Replace,
}

fn list_strategy(field: Option<&FieldMetadata>) -> ListStrategy<'_> {
    match field {
        Some(f) if f.patch_merges() => match f.patch_merge_key.as_deref() {
            Some(key) => ListStrategy::ByKey(key),
            None => ListStrategy::Union,
        },
        _ => ListStrategy::Replace,
    }
}

/// Removes `$`-directives from a value that replaces rather than merges.
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// Applies a strategic merge patch to `original`, an object of `node`
/// ([`Node::for_kind`]).
pub fn strategic_merge(original: &Value, patch: &Value, node: Node) -> Value {
    merge_object(original.as_object(), patch, node).unwrap_or(Value::Null)
}

/// Returns `None` when the patch deletes the whole object (`$patch: delete`).
fn merge_object(original: Option<&Map<String, Value>>, patch: &Value, node: Node) -> Option<Value> {
    let Value::Object(p) = patch else {
        return Some(patch.clone());
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => return Some(strip_directives(patch)),
        Some("delete") => return None,
        _ => {}
    }
    let mut out = original.cloned().unwrap_or_default();
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        let (child, field) = node.child(k);
        let replaces = field.and_then(|f| f.patch_strategy.as_deref()) == Some("replace");
        let merged = match (out.get(k), v) {
            _ if replaces => Some(strip_directives(v)),
            (Some(Value::Object(o)), Value::Object(_)) => merge_object(Some(o), v, child),
            (_, Value::Object(_)) => merge_object(None, v, child),
            (Some(Value::Array(o)), Value::Array(pl)) => Some(merge_list(field, child, o, pl)),
            (None, Value::Array(pl)) => Some(merge_list(field, child, &[], pl)),
            _ => Some(v.clone()),
        };
        match merged {
            Some(m) => out.insert(k.clone(), m),
            None => out.remove(k),
        };
    }
    // `$deleteFromPrimitiveList/<field>`: values to drop from a set.
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/")
            && let (Some(Value::Array(list)), Value::Array(del)) = (out.get_mut(field), v)
        {
            list.retain(|x| !del.contains(x));
        }
    }
    // `$setElementOrder/<field>`: the order the client wants the list in.
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$setElementOrder/")
            && let (Some(Value::Array(list)), Value::Array(order)) = (out.get_mut(field), v)
        {
            reorder(node.child(field).1, list, order);
        }
    }
    // `$retainKeys`: fields not listed are cleared (union types like volume sources).
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    Some(Value::Object(out))
}

fn key_of<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object().and_then(|o| o.get(key))
}

fn merge_list(
    field: Option<&FieldMetadata>,
    item: Node,
    original: &[Value],
    patch: &[Value],
) -> Value {
    match list_strategy(field) {
        ListStrategy::Replace => strip_directives(&Value::Array(patch.to_vec())),
        ListStrategy::Union => {
            let mut out = original.to_vec();
            for v in patch {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            Value::Array(out)
        }
        ListStrategy::ByKey(key) => {
            // A list-level `$patch: replace` element replaces everything.
            if patch
                .iter()
                .any(|e| key_of(e, "$patch").and_then(Value::as_str) == Some("replace"))
            {
                return strip_directives(&Value::Array(
                    patch
                        .iter()
                        .filter(|e| key_of(e, "$patch").is_none())
                        .cloned()
                        .collect(),
                ));
            }
            let mut out: Vec<Value> = original.to_vec();
            for pe in patch {
                let Some(kv) = key_of(pe, key) else {
                    out.push(strip_directives(pe));
                    continue;
                };
                let pos = out.iter().position(|o| key_of(o, key) == Some(kv));
                match (
                    pos,
                    merge_object(pos.and_then(|i| out[i].as_object()), pe, item),
                ) {
                    (Some(i), Some(m)) => out[i] = m,
                    (Some(i), None) => {
                        out.remove(i);
                    }
                    (None, Some(m)) => out.push(m),
                    (None, None) => {}
                }
            }
            Value::Array(out)
        }
    }
}

fn reorder(field: Option<&FieldMetadata>, list: &mut [Value], order: &[Value]) {
    let key = match list_strategy(field) {
        ListStrategy::ByKey(k) => Some(k),
        _ => None,
    };
    let id = |v: &Value| -> Value {
        match key {
            Some(k) => key_of(v, k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let rank = |v: &Value| {
        let i = id(v);
        order.iter().position(|o| match key {
            Some(k) => key_of(o, k) == Some(&i),
            None => *o == i,
        })
    };
    // Stable: listed elements in the given order, others keep their place after.
    list.sort_by_key(|v| rank(v).unwrap_or(usize::MAX));
}

#[derive(Debug, thiserror::Error)]
pub enum JsonPatchError {
    #[error("the JSON patch must be a list of operations")]
    NotAList,
    #[error("unsupported or malformed operation: {0}")]
    BadOperation(String),
    #[error("path {0:?} does not exist")]
    NoPath(String),
    #[error("test failed at path {0:?}")]
    TestFailed(String),
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn parent_and_last(pointer: &str) -> Result<(String, String), JsonPatchError> {
    let idx = pointer
        .rfind('/')
        .ok_or_else(|| JsonPatchError::NoPath(pointer.to_owned()))?;
    Ok((pointer[..idx].to_owned(), unescape(&pointer[idx + 1..])))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), JsonPatchError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = parent_and_last(path)?;
    match doc.pointer_mut(&parent) {
        Some(Value::Object(m)) => {
            m.insert(last, value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse()
                    .map_err(|_| JsonPatchError::NoPath(path.to_owned()))?
            };
            if i > a.len() {
                return Err(JsonPatchError::NoPath(path.to_owned()));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(JsonPatchError::NoPath(path.to_owned())),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, JsonPatchError> {
    let (parent, last) = parent_and_last(path)?;
    let missing = || JsonPatchError::NoPath(path.to_owned());
    match doc.pointer_mut(&parent) {
        Some(Value::Object(m)) => m.remove(&last).ok_or_else(missing),
        Some(Value::Array(a)) => {
            let i: usize = last.parse().map_err(|_| missing())?;
            if i >= a.len() {
                return Err(missing());
            }
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

/// RFC 6902.
pub fn json_patch(doc: &Value, ops: &Value) -> Result<Value, JsonPatchError> {
    let Value::Array(ops) = ops else {
        return Err(JsonPatchError::NotAList);
    };
    let mut doc = doc.clone();
    for op in ops {
        let name = op.get("op").and_then(Value::as_str).unwrap_or("");
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| JsonPatchError::BadOperation(op.to_string()))?;
        let from = op.get("from").and_then(Value::as_str);
        match (name, op.get("value"), from) {
            ("add", Some(v), _) => add(&mut doc, path, v.clone())?,
            ("remove", _, _) => {
                remove(&mut doc, path)?;
            }
            ("replace", Some(v), _) => {
                remove(&mut doc, path)?;
                add(&mut doc, path, v.clone())?;
            }
            ("test", Some(v), _) => {
                if doc.pointer(path) != Some(v) {
                    return Err(JsonPatchError::TestFailed(path.to_owned()));
                }
            }
            ("move", _, Some(from)) => {
                let v = remove(&mut doc, from)?;
                add(&mut doc, path, v)?;
            }
            ("copy", _, Some(from)) => {
                let v = doc
                    .pointer(from)
                    .cloned()
                    .ok_or_else(|| JsonPatchError::NoPath(from.to_owned()))?;
                add(&mut doc, path, v)?;
            }
            _ => return Err(JsonPatchError::BadOperation(op.to_string())),
        }
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Node {
        Node::for_kind("v1", "Pod")
    }

    fn node() -> Node {
        Node::for_kind("v1", "Node")
    }

    /// Container ports merge by `containerPort`, service ports by `port`,
    /// finalizers as a set: each list by its own field's metadata.
    #[test]
    fn strategic_merge_follows_each_fields_metadata() {
        let o = json!({"metadata": {"finalizers": ["a"]}, "spec": {"containers": [
            {"name": "c", "ports": [{"containerPort": 80, "name": "http"}]}]}});
        let p = json!({"metadata": {"finalizers": ["b"]}, "spec": {"containers": [
            {"name": "c", "ports": [{"containerPort": 81}]}]}});
        let m = strategic_merge(&o, &p, pod());
        assert_eq!(m["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(
            m["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80, "name": "http"}, {"containerPort": 81}])
        );
        let svc = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}});
        let m = strategic_merge(
            &svc,
            &json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}, {"port": 443}]}}),
            Node::for_kind("v1", "Service"),
        );
        assert_eq!(
            m["spec"]["ports"],
            json!([{"port": 80, "targetPort": 9090}, {"port": 443}])
        );
        // A kind without metadata (a custom resource) replaces its lists.
        let cr = json!({"spec": {"containers": [{"name": "a"}]}});
        let m = strategic_merge(
            &cr,
            &json!({"spec": {"containers": [{"name": "b"}]}}),
            Node::for_kind("example.com/v1", "Widget"),
        );
        assert_eq!(m["spec"]["containers"], json!([{"name": "b"}]));
    }

    #[test]
    fn merge_patch_sets_and_deletes_labels() {
        let o = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let p = json!({"metadata": {"labels": {"a": null, "c": "3"}}});
        assert_eq!(
            merge_patch(&o, &p),
            json!({"metadata": {"labels": {"b": "2", "c": "3"}}})
        );
    }

    #[test]
    fn strategic_merge_merges_containers_by_name_and_keeps_order() {
        let o = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}]}});
        let p = json!({"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "a", "image": "x:2"}]}});
        assert_eq!(
            strategic_merge(&o, &p, pod()),
            json!({"spec": {"containers": [{"name": "b", "image": "y:1"}, {"name": "a", "image": "x:2"}]}})
        );
    }

    /// `NodeSpec.taints` is `listType=atomic`: a patch's list is the new
    /// list (kubectl taint sends them all); a key with two effects stays two.
    #[test]
    fn strategic_merge_replaces_taints_whole() {
        let o = json!({"spec": {"taints": [
            {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]}});
        let all = json!([
            {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
            {"key": "k2", "value": "v", "effect": "NoExecute"}]);
        let added = strategic_merge(&o, &json!({"spec": {"taints": all}}), node());
        assert_eq!(added["spec"]["taints"], all);
        let removed = strategic_merge(
            &added,
            &json!({"spec": {"taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]}}),
            node(),
        );
        assert_eq!(
            removed["spec"]["taints"],
            json!([{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}])
        );
        let cleared = strategic_merge(&removed, &json!({"spec": {"taints": null}}), node());
        assert_eq!(cleared, json!({"spec": {}}));
    }

    #[test]
    fn strategic_merge_replaces_lists_without_a_key() {
        let o = json!({"spec": {"containers": [{"name": "a", "args": ["1", "2"]}]}});
        let p = json!({"spec": {"containers": [{"name": "a", "args": ["3"]}]}});
        assert_eq!(
            strategic_merge(&o, &p, pod())["spec"]["containers"][0]["args"],
            json!(["3"])
        );
    }

    #[test]
    fn json_patch_operations() {
        let o = json!({"metadata": {"labels": {"a": "1"}}, "list": [1, 2]});
        let p = json!([
            {"op": "add", "path": "/metadata/labels/b", "value": "2"},
            {"op": "remove", "path": "/metadata/labels/a"},
            {"op": "add", "path": "/list/-", "value": 3},
            {"op": "test", "path": "/list/0", "value": 1},
            {"op": "replace", "path": "/list/1", "value": 9}
        ]);
        assert_eq!(
            json_patch(&o, &p).unwrap(),
            json!({"metadata": {"labels": {"b": "2"}}, "list": [1, 9, 3]})
        );
        assert!(matches!(
            json_patch(&o, &json!([{"op": "remove", "path": "/nope"}])),
            Err(JsonPatchError::NoPath(_))
        ));
    }
}
