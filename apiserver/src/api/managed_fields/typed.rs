//! Objects read through their schema ([`Node`]): the set of fields an
//! object sets, how two versions of an object differ, applying a
//! configuration onto an object and removing fields from it — what
//! structured-merge-diff's typed values do, with lists and maps as the
//! patch metadata says (`x-kubernetes-list-type`, `-list-map-keys`,
//! `-map-type`).

use serde_json::{Map, Value};

use super::fieldpath::{Path, PathElement, Set};
use crate::patch_metadata::{FieldMetadata, ListType, MapType, Node};

/// Which fields a walk leaves out (server-set metadata, reset fields).
pub type Ignore<'a> = &'a dyn Fn(&[PathElement]) -> bool;

enum ListKind<'a> {
    Atomic,
    Set,
    Map(&'a [String]),
}

fn list_kind(field: Option<&FieldMetadata>) -> ListKind<'_> {
    let Some(f) = field else {
        return ListKind::Atomic;
    };
    match f.list_type {
        Some(ListType::Atomic) => ListKind::Atomic,
        Some(ListType::Set) => ListKind::Set,
        Some(ListType::Map) if !f.list_map_keys.is_empty() => ListKind::Map(&f.list_map_keys),
        // A list without a type: associative by its merge key, as
        // kube-openapi reads patch metadata.
        _ if f.patch_merges() => match &f.patch_merge_key {
            Some(k) => ListKind::Map(std::slice::from_ref(k)),
            None => ListKind::Set,
        },
        _ => ListKind::Atomic,
    }
}

fn object_is_atomic(node: Node, field: Option<&FieldMetadata>) -> bool {
    node.is_atomic() || field.is_some_and(|f| f.map_type == Some(MapType::Atomic))
}

/// The path element of a list item, or `None` for an atomic list.
fn item_element(kind: &ListKind, item: &Value, index: usize) -> PathElement {
    match kind {
        ListKind::Map(keys) => PathElement::key_of(item, keys).unwrap_or(PathElement::Index(index)),
        _ => PathElement::Value(item.to_string()),
    }
}

/// The fields `v` sets.
pub fn to_field_set(v: &Value, node: Node, ignore: Ignore) -> Set {
    let mut set = Set::default();
    let mut path = Vec::new();
    walk_set(v, node, None, &mut path, &mut set, ignore);
    set
}

fn walk_set(
    v: &Value,
    node: Node,
    field: Option<&FieldMetadata>,
    path: &mut Path,
    set: &mut Set,
    ignore: Ignore,
) {
    match v {
        Value::Object(m) => {
            if object_is_atomic(node, field) {
                set.insert(path);
                return;
            }
            for (k, cv) in m {
                path.push(PathElement::Field(k.clone()));
                if !ignore(path) {
                    let (child, cf) = node.child(k);
                    walk_set(cv, child, cf, path, set, ignore);
                    let empty = cv.is_null() || cv.as_object().is_some_and(Map::is_empty);
                    if empty || !node.is_struct() {
                        set.insert(path);
                    }
                }
                path.pop();
            }
        }
        Value::Array(items) => {
            let kind = list_kind(field);
            if matches!(kind, ListKind::Atomic) {
                set.insert(path);
                return;
            }
            let mut seen = std::collections::HashSet::new();
            for (i, item) in items.iter().enumerate() {
                let pe = item_element(&kind, item, i);
                path.push(pe.clone());
                set.insert(path);
                if seen.insert(pe) {
                    walk_set(item, node, None, path, set, ignore);
                }
                path.pop();
            }
        }
        _ => set.insert(path),
    }
}

/// How `new` differs from `old`, field by field.
#[derive(Debug, Default)]
pub struct Comparison {
    pub added: Set,
    pub modified: Set,
    pub removed: Set,
}

pub fn compare(old: &Value, new: &Value, node: Node, ignore: Ignore) -> Comparison {
    let mut c = Comparison::default();
    walk_compare(
        Some(old),
        Some(new),
        node,
        None,
        &mut Vec::new(),
        &mut c,
        ignore,
    );
    c
}

fn leaf(l: Option<&Value>, r: Option<&Value>, path: &Path, c: &mut Comparison) {
    match (l, r) {
        (None, Some(_)) => c.added.insert(path),
        (Some(_), None) => c.removed.insert(path),
        (Some(a), Some(b)) if a != b => c.modified.insert(path),
        _ => {}
    }
}

fn walk_compare(
    l: Option<&Value>,
    r: Option<&Value>,
    node: Node,
    field: Option<&FieldMetadata>,
    path: &mut Path,
    c: &mut Comparison,
    ignore: Ignore,
) {
    let lo = l.and_then(Value::as_object);
    let ro = r.and_then(Value::as_object);
    let la = l.and_then(Value::as_array);
    let ra = r.and_then(Value::as_array);
    let objects = (lo.is_some() || l.is_none()) && (ro.is_some() || r.is_none());
    let arrays = (la.is_some() || l.is_none()) && (ra.is_some() || r.is_none());
    if objects && (lo.is_some() || ro.is_some()) {
        let both_empty = lo.is_none_or(Map::is_empty) && ro.is_none_or(Map::is_empty);
        if both_empty || object_is_atomic(node, field) {
            return leaf(l, r, path, c);
        }
        let empty = Map::new();
        let (lm, rm) = (lo.unwrap_or(&empty), ro.unwrap_or(&empty));
        for (k, lv) in lm {
            path.push(PathElement::Field(k.clone()));
            if !ignore(path) {
                let (child, cf) = node.child(k);
                walk_compare(Some(lv), rm.get(k), child, cf, path, c, ignore);
            }
            path.pop();
        }
        for (k, rv) in rm {
            if lm.contains_key(k) {
                continue;
            }
            path.push(PathElement::Field(k.clone()));
            if !ignore(path) {
                let (child, cf) = node.child(k);
                walk_compare(None, Some(rv), child, cf, path, c, ignore);
            }
            path.pop();
        }
    } else if arrays && (la.is_some() || ra.is_some()) {
        let kind = list_kind(field);
        let both_empty = la.is_none_or(Vec::is_empty) && ra.is_none_or(Vec::is_empty);
        if both_empty || matches!(kind, ListKind::Atomic) {
            return leaf(l, r, path, c);
        }
        let (li, ri) = (index_items(&kind, la), index_items(&kind, ra));
        for (pe, lv) in &li {
            let rv = ri.iter().find(|(p, _)| p == pe).map(|(_, v)| *v);
            path.push(pe.clone());
            walk_compare(Some(lv), rv, node, None, path, c, ignore);
            path.pop();
        }
        for (pe, rv) in &ri {
            if li.iter().any(|(p, _)| p == pe) {
                continue;
            }
            path.push(pe.clone());
            walk_compare(None, Some(rv), node, None, path, c, ignore);
            path.pop();
        }
    } else {
        return leaf(l, r, path, c);
    }
    // A map or list that appears or goes is itself added or removed.
    match (l, r) {
        (None, Some(_)) => c.added.insert(path),
        (Some(_), None) => c.removed.insert(path),
        _ => {}
    }
}

/// A list's items by their path elements, the first of duplicates only.
fn index_items<'v>(kind: &ListKind, list: Option<&'v Vec<Value>>) -> Vec<(PathElement, &'v Value)> {
    let mut seen = std::collections::HashSet::new();
    list.into_iter()
        .flatten()
        .enumerate()
        .map(|(i, v)| (item_element(kind, v, i), v))
        .filter(|(pe, _)| seen.insert(pe.clone()))
        .collect()
}

/// `config` applied onto `live`: its fields replace the live ones, maps
/// and granular objects merge key by key, associative lists item by item
/// (live items keep their place, new ones follow), atomic values are
/// replaced whole.
pub fn merge(live: &Value, config: &Value, node: Node) -> Value {
    merge_value(live, config, node, None)
}

fn merge_value(live: &Value, config: &Value, node: Node, field: Option<&FieldMetadata>) -> Value {
    match (live, config) {
        (Value::Object(lm), Value::Object(cm)) if !object_is_atomic(node, field) => {
            let mut out = lm.clone();
            for (k, cv) in cm {
                let (child, cf) = node.child(k);
                let merged = match lm.get(k) {
                    Some(lv) => merge_value(lv, cv, child, cf),
                    None => cv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(la), Value::Array(ca)) => {
            let kind = list_kind(field);
            if matches!(kind, ListKind::Atomic) {
                return config.clone();
            }
            let ce: Vec<PathElement> = ca
                .iter()
                .enumerate()
                .map(|(i, v)| item_element(&kind, v, i))
                .collect();
            let mut out = Vec::with_capacity(la.len().max(ca.len()));
            let mut used = vec![false; ca.len()];
            for (i, lv) in la.iter().enumerate() {
                let pe = item_element(&kind, lv, i);
                match ce.iter().position(|p| *p == pe) {
                    Some(j) => {
                        used[j] = true;
                        out.push(merge_value(lv, &ca[j], node, None));
                    }
                    None => out.push(lv.clone()),
                }
            }
            for (j, cv) in ca.iter().enumerate() {
                if !used[j] {
                    out.push(cv.clone());
                }
            }
            Value::Array(out)
        }
        _ => config.clone(),
    }
}

/// Removes from `v` the fields and items in `remove`, except those that
/// `keep` has something under (another manager's fields inside them).
pub fn remove_items(v: &mut Value, remove: &Set, keep: &Set, node: Node) {
    remove_in(v, remove, Some(keep), node, None);
}

fn remove_in(
    v: &mut Value,
    remove: &Set,
    keep: Option<&Set>,
    node: Node,
    field: Option<&FieldMetadata>,
) {
    let kept_below = |pe: &PathElement| {
        keep.and_then(|k| k.child(pe))
            .is_some_and(|s| !s.is_empty())
    };
    match v {
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let pe = PathElement::Field(k.clone());
                if remove.has_member(&pe) && !kept_below(&pe) {
                    m.remove(&k);
                } else if let Some(sub) = remove.child(&pe)
                    && let Some(cv) = m.get_mut(&k)
                {
                    let (child, cf) = node.child(&k);
                    remove_in(cv, sub, keep.and_then(|s| s.child(&pe)), child, cf);
                }
            }
        }
        Value::Array(items) => {
            let kind = list_kind(field);
            if matches!(kind, ListKind::Atomic) {
                return;
            }
            let mut i = 0;
            let mut index = 0;
            while i < items.len() {
                let pe = item_element(&kind, &items[i], index);
                index += 1;
                if remove.has_member(&pe) && !kept_below(&pe) {
                    items.remove(i);
                    continue;
                }
                if let Some(sub) = remove.child(&pe) {
                    remove_in(
                        &mut items[i],
                        sub,
                        keep.and_then(|s| s.child(&pe)),
                        node,
                        None,
                    );
                }
                i += 1;
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::managed_fields::fieldpath::path_string;
    use serde_json::json;

    fn none(_: &[PathElement]) -> bool {
        false
    }

    fn pod() -> Node {
        Node::for_kind("v1", "Pod")
    }

    fn strings(s: &Set) -> Vec<String> {
        s.paths().iter().map(|p| path_string(p)).collect()
    }

    #[test]
    fn field_sets_key_list_items_and_keep_atomic_values_whole() {
        let v = json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx", "resources": {},
                                     "ports": [{"containerPort": 80, "protocol": "TCP"}]}],
                     "tolerations": [{"key": "k"}],
                     "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}}
        });
        let s = to_field_set(&v, pod(), &none);
        let got = strings(&s);
        for want in [
            ".metadata.labels.app",
            ".spec.containers[name=\"web\"]",
            ".spec.containers[name=\"web\"].image",
            ".spec.containers[name=\"web\"].resources",
            ".spec.containers[name=\"web\"].ports[containerPort=80,protocol=\"TCP\"].containerPort",
            ".spec.tolerations",
            ".spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
        ] {
            assert!(
                got.contains(&want.to_owned()),
                "{want} missing from {got:#?}"
            );
        }
        assert!(!got.contains(&".spec".to_owned()));
        assert!(!got.iter().any(|p| p.starts_with(".spec.tolerations[")));
    }

    #[test]
    fn comparison_sees_added_modified_and_removed_fields() {
        let old = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}});
        let new = json!({"metadata": {"labels": {"a": "1", "c": "3"}}, "spec": {"containers": [{"name": "c", "image": "x:2"}]}});
        let c = compare(&old, &new, pod(), &none);
        assert_eq!(strings(&c.added), vec![".metadata.labels.c"]);
        assert_eq!(strings(&c.removed), vec![".metadata.labels.b"]);
        assert_eq!(
            strings(&c.modified),
            vec![".spec.containers[name=\"c\"].image"]
        );
    }

    #[test]
    fn merge_and_remove_follow_list_types() {
        let live = json!({"spec": {"containers": [{"name": "a", "image": "x:1", "args": ["1"]}],
                                   "nodeName": "n"}});
        let config = json!({"spec": {"containers": [{"name": "b", "image": "y"}, {"name": "a", "args": ["2"]}]}});
        let merged = merge(&live, &config, pod());
        assert_eq!(
            merged,
            json!({"spec": {"containers": [{"name": "a", "image": "x:1", "args": ["2"]}, {"name": "b", "image": "y"}], "nodeName": "n"}})
        );
        let mut v = merged;
        let mut rm = Set::default();
        let b = PathElement::key_of(&json!({"name": "b"}), &["name".into()]).unwrap();
        rm.insert(&[
            PathElement::Field("spec".into()),
            PathElement::Field("containers".into()),
            b,
        ]);
        remove_items(&mut v, &rm, &Set::default(), pod());
        assert_eq!(v["spec"]["containers"].as_array().unwrap().len(), 1);
    }
}
