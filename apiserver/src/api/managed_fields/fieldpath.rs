//! Sets of field paths, as structured-merge-diff keeps them for each
//! manager, and their `FieldsV1` form (`f:name`, `k:{"name":"web"}`,
//! `v:"x"`, `i:0`; `.` when a node is itself in the set).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

/// One step into an object: a field, a list item by its keys, a set item
/// by its value, or a list item by its index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    Field(String),
    /// `(key name, JSON value)`, sorted by name.
    Key(Vec<(String, String)>),
    /// The item's JSON.
    Value(String),
    Index(usize),
}

impl PathElement {
    /// The key of a list item from the list's map keys; `None` when the
    /// item lacks all of them.
    pub fn key_of(item: &Value, keys: &[String]) -> Option<Self> {
        let mut k: Vec<(String, String)> = keys
            .iter()
            .filter_map(|name| Some((name.clone(), item.get(name)?.to_string())))
            .collect();
        if k.is_empty() {
            return None;
        }
        k.sort();
        Some(PathElement::Key(k))
    }

    fn encode(&self) -> String {
        match self {
            PathElement::Field(f) => format!("f:{f}"),
            PathElement::Key(k) => {
                let body: Vec<String> = k
                    .iter()
                    .map(|(n, v)| format!("{}:{v}", Value::from(n.as_str())))
                    .collect();
                format!("k:{{{}}}", body.join(","))
            }
            PathElement::Value(v) => format!("v:{v}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(s: &str) -> Option<Self> {
        let (kind, rest) = s.split_at_checked(2)?;
        Some(match kind {
            "f:" => PathElement::Field(rest.to_owned()),
            "v:" => PathElement::Value(serde_json::from_str::<Value>(rest).ok()?.to_string()),
            "i:" => PathElement::Index(rest.parse().ok()?),
            "k:" => {
                let Value::Object(m) = serde_json::from_str::<Value>(rest).ok()? else {
                    return None;
                };
                let mut k: Vec<(String, String)> =
                    m.into_iter().map(|(n, v)| (n, v.to_string())).collect();
                k.sort();
                PathElement::Key(k)
            }
            _ => return None,
        })
    }
}

/// As structured-merge-diff prints paths in conflicts:
/// `.spec.containers[name="web"].image`.
impl fmt::Display for PathElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(n) => write!(f, ".{n}"),
            PathElement::Key(k) => {
                let parts: Vec<String> = k.iter().map(|(n, v)| format!("{n}={v}")).collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(v) => write!(f, "[={v}]"),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

pub type Path = Vec<PathElement>;

pub fn path_string(p: &[PathElement]) -> String {
    p.iter().map(ToString::to_string).collect()
}

/// A set of paths, as a tree: `members` are paths ending here, `children`
/// the subtrees below.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Set {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, Set>,
}

impl Set {
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    pub fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    pub fn has(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    /// The subtree under `pe`, if any path goes below it.
    pub fn child(&self, pe: &PathElement) -> Option<&Set> {
        self.children.get(pe)
    }

    pub fn has_member(&self, pe: &PathElement) -> bool {
        self.members.contains(pe)
    }

    pub fn union(&self, other: &Set) -> Set {
        let mut out = self.clone();
        out.union_in(other);
        out
    }

    pub fn union_in(&mut self, other: &Set) {
        self.members.extend(other.members.iter().cloned());
        for (pe, c) in &other.children {
            self.children.entry(pe.clone()).or_default().union_in(c);
        }
    }

    pub fn difference(&self, other: &Set) -> Set {
        let members = self.members.difference(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (pe, c) in &self.children {
            let d = match other.children.get(pe) {
                Some(o) => c.difference(o),
                None => c.clone(),
            };
            if !d.is_empty() {
                children.insert(pe.clone(), d);
            }
        }
        Set { members, children }
    }

    pub fn intersection(&self, other: &Set) -> Set {
        let members = self.members.intersection(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (pe, c) in &self.children {
            if let Some(o) = other.children.get(pe) {
                let i = c.intersection(o);
                if !i.is_empty() {
                    children.insert(pe.clone(), i);
                }
            }
        }
        Set { members, children }
    }

    /// Every path in the set, members before the subtrees at each level.
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        for m in &self.members {
            let mut p = prefix.clone();
            p.push(m.clone());
            out.push(p);
        }
        for (pe, c) in &self.children {
            prefix.push(pe.clone());
            c.collect(prefix, out);
            prefix.pop();
        }
    }

    /// The `fieldsV1` JSON of this set.
    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        for pe in &self.members {
            if !self.children.contains_key(pe) {
                m.insert(pe.encode(), Value::Object(Map::new()));
            }
        }
        for (pe, c) in &self.children {
            let mut v = c.to_fields_v1();
            if self.members.contains(pe)
                && let Value::Object(o) = &mut v
            {
                o.insert(".".into(), Value::Object(Map::new()));
            }
            m.insert(pe.encode(), v);
        }
        Value::Object(m)
    }

    /// Reads a `fieldsV1` value; `None` when it is not one.
    pub fn from_fields_v1(v: &Value) -> Option<Set> {
        let Value::Object(m) = v else {
            return None;
        };
        let mut set = Set::default();
        for (k, child) in m {
            if k == "." {
                continue;
            }
            let pe = PathElement::decode(k)?;
            let Value::Object(cm) = child else {
                return None;
            };
            if cm.is_empty() || cm.contains_key(".") {
                set.members.insert(pe.clone());
            }
            let sub = Set::from_fields_v1(child)?;
            if !sub.is_empty() {
                set.children.insert(pe, sub);
            }
        }
        Some(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(n: &str) -> PathElement {
        PathElement::Field(n.into())
    }

    #[test]
    fn fields_v1_round_trips_with_keys_values_and_dots() {
        let v = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}}},
                       "f:finalizers": {"v:\"a\"": {}}}
        });
        let s = Set::from_fields_v1(&v).unwrap();
        assert!(s.has(&[f("metadata"), f("labels")]));
        assert!(s.has(&[f("metadata"), f("labels"), f("app")]));
        let web = PathElement::Key(vec![("name".into(), "\"web\"".into())]);
        assert!(s.has(&[f("spec"), f("containers"), web.clone(), f("image")]));
        assert!(!s.has(&[f("spec")]));
        assert_eq!(s.to_fields_v1(), v);
        assert_eq!(
            path_string(&[f("spec"), f("containers"), web, f("image")]),
            ".spec.containers[name=\"web\"].image"
        );
    }

    #[test]
    fn set_algebra() {
        let mut a = Set::default();
        a.insert(&[f("a"), f("x")]);
        a.insert(&[f("a"), f("y")]);
        let mut b = Set::default();
        b.insert(&[f("a"), f("y")]);
        b.insert(&[f("b")]);
        assert_eq!(a.intersection(&b).paths(), vec![vec![f("a"), f("y")]]);
        assert_eq!(a.difference(&b).paths(), vec![vec![f("a"), f("x")]]);
        assert_eq!(a.union(&b).paths().len(), 3);
        assert!(a.difference(&a).is_empty());
    }
}
