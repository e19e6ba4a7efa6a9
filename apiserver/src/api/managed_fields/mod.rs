//! Field ownership (`metadata.managedFields`) and server-side apply, as
//! kube-apiserver's field manager keeps them: every write records which
//! fields its manager (the `fieldManager` parameter, else the user agent)
//! set; an apply owns exactly the fields of its configuration, conflicts
//! with other managers over values it would change, and removes the fields
//! it stopped applying that nobody else owns.

pub mod fieldpath;
pub mod last_applied;
pub mod typed;

use serde_json::{Value, json};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

use crate::kinds::Kind;
use crate::patch_metadata::Node;
use crate::status::ApiError;
use fieldpath::{PathElement, Set, path_string};

/// Managers are named in at most this many characters, as upstream.
const MAX_MANAGER_LEN: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// Who writes: the manager and what it does, at which version, through
/// which subresource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    /// `status` for writes through the status subresource.
    pub subresource: Option<String>,
}

impl Writer {
    /// The manager of a request: `fieldManager`, else the user agent up to
    /// its first `/` (kube-apiserver's default).
    pub fn manager_name(field_manager: Option<&str>, user_agent: Option<&str>) -> String {
        let name = match field_manager.filter(|m| !m.is_empty()) {
            Some(m) => m,
            None => user_agent.unwrap_or("").split('/').next().unwrap_or(""),
        };
        name.chars().take(MAX_MANAGER_LEN).collect()
    }

    fn owns(&self, e: &Entry) -> bool {
        e.manager == self.manager
            && e.operation == self.operation
            && e.subresource == self.subresource
            && (self.operation == Operation::Apply || e.api_version == self.api_version)
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: Operation,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
    set: Set,
}

impl Entry {
    fn decode(v: &Value) -> Option<Entry> {
        let operation = match v.get("operation")?.as_str()? {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            _ => return None,
        };
        Some(Entry {
            manager: v.get("manager")?.as_str()?.to_owned(),
            operation,
            api_version: v.get("apiVersion")?.as_str().unwrap_or("").to_owned(),
            time: v.get("time").and_then(Value::as_str).map(str::to_owned),
            subresource: v
                .get("subresource")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            set: Set::from_fields_v1(v.get("fieldsV1").unwrap_or(&json!({})))?,
        })
    }

    fn encode(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": self.operation.as_str(),
            "apiVersion": self.api_version,
            "fieldsType": "FieldsV1",
            "fieldsV1": self.set.to_fields_v1(),
        });
        if let Some(t) = &self.time {
            v["time"] = t.clone().into();
        }
        if let Some(s) = &self.subresource {
            v["subresource"] = s.clone().into();
        }
        v
    }
}

/// Which fields a write may own: never the server's metadata; through the
/// main resource not `status` (for kinds with a status subresource),
/// through `status` nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Main { status_subresource: bool },
    Status,
}

impl Scope {
    fn ignores(self, path: &[PathElement]) -> bool {
        let field = |i: usize| match path.get(i) {
            Some(PathElement::Field(f)) => Some(f.as_str()),
            _ => None,
        };
        match (path.len(), field(0)) {
            (1, Some("apiVersion" | "kind")) => true,
            (_, Some("status")) => {
                self == (Scope::Main {
                    status_subresource: true,
                })
            }
            (2, Some("metadata")) => {
                matches!(
                    field(1),
                    Some(
                        "name"
                            | "namespace"
                            | "creationTimestamp"
                            | "selfLink"
                            | "uid"
                            | "generation"
                            | "resourceVersion"
                            | "managedFields"
                            | "deletionTimestamp"
                            | "deletionGracePeriodSeconds"
                    )
                )
            }
            _ => self == Scope::Status,
        }
    }
}

/// The entries a write starts from (upstream's `decodeLiveOrNew`): the
/// request's own when it sends some (a client may rewrite them), none when
/// it sends an empty list (a reset), else the stored object's.
fn base_entries(live: Option<&Value>, new: &Value, scope: Scope) -> Vec<Entry> {
    let decode = |v: Option<&Value>| -> Vec<Entry> {
        v.and_then(|o| o.pointer("/metadata/managedFields"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Entry::decode).collect())
            .unwrap_or_default()
    };
    if scope == Scope::Status {
        return decode(live);
    }
    match new
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    {
        Some(a) if a.is_empty() || (a.len() == 1 && a[0] == json!({})) => Vec::new(),
        Some(_) => {
            let own = decode(Some(new));
            if own.is_empty() { decode(live) } else { own }
        }
        None => decode(live),
    }
}

fn store(obj: &mut Value, mut entries: Vec<Entry>) {
    // Upstream's order: operation, then time, then manager.
    entries.sort_by(|a, b| {
        (
            a.operation.as_str(),
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                b.operation.as_str(),
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    let list: Vec<Value> = entries.iter().map(Entry::encode).collect();
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// The object a create compares against: what a new, empty object of the
/// kind already has (its top-level structs), so they are not counted as
/// the creator's own.
fn empty_like(new: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for k in ["metadata", "spec", "status"] {
        if new.get(k).is_some_and(Value::is_object) {
            out.insert(k.into(), json!({}));
        }
    }
    Value::Object(out)
}

/// Records `writer`'s update of `live` (`None` on create) into `new`'s
/// `managedFields`: it owns what it added or changed; other managers lose
/// those fields and the ones it removed.
pub fn record_update(
    live: Option<&Value>,
    new: &mut Value,
    node: Node,
    writer: &Writer,
    scope: Scope,
    now: &str,
) {
    let mut entries = base_entries(live, new, scope);
    let empty;
    let old = match live {
        Some(l) => l,
        None => {
            empty = empty_like(new);
            &empty
        }
    };
    let ignore = |p: &[PathElement]| scope.ignores(p);
    let c = typed::compare(old, new, node, &ignore);
    let changed = c.modified.union(&c.added);
    for e in entries.iter_mut().filter(|e| !writer.owns(e)) {
        e.set = e.set.difference(&changed).difference(&c.removed);
    }
    let mine = match entries.iter().position(|e| writer.owns(e)) {
        Some(i) => entries.remove(i),
        None => Entry {
            manager: writer.manager.clone(),
            operation: writer.operation,
            api_version: writer.api_version.clone(),
            time: None,
            subresource: writer.subresource.clone(),
            set: Set::default(),
        },
    };
    let set = mine.set.difference(&c.removed).union(&changed);
    let time = if set != mine.set || mine.time.is_none() {
        Some(now.to_owned())
    } else {
        mine.time.clone()
    };
    entries.push(Entry { set, time, ..mine });
    entries.retain(|e| !e.set.is_empty());
    store(new, entries);
}

/// Apply conflicts: the fields other managers own that an apply would change.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.message())]
pub struct Conflicts(pub Vec<Conflict>);

#[derive(Debug, Clone)]
pub struct Conflict {
    /// As upstream prints a manager: `"name"`, plus `using <version>` for
    /// an updater and `with subresource "status"`.
    pub manager: String,
    pub field: String,
}

impl Conflicts {
    /// kube-apiserver's message for an apply that conflicts.
    pub fn message(&self) -> String {
        if let [c] = self.0.as_slice() {
            return format!(
                "Apply failed with 1 conflict: conflict with {}: {}",
                c.manager, c.field
            );
        }
        let mut managers: Vec<&str> = self.0.iter().map(|c| c.manager.as_str()).collect();
        managers.sort();
        managers.dedup();
        let mut lines = Vec::new();
        for m in managers {
            lines.push(format!("conflicts with {m}:"));
            for c in self.0.iter().filter(|c| c.manager == m) {
                lines.push(format!("- {}", c.field));
            }
        }
        format!(
            "Apply failed with {} conflicts: {}",
            self.0.len(),
            lines.join("\n")
        )
    }
}

fn printed_manager(e: &Entry) -> String {
    let mut s = format!("{:?}", e.manager);
    if let Some(sub) = &e.subresource {
        s.push_str(&format!(" with subresource {sub:?}"));
    }
    if e.operation == Operation::Update {
        s.push_str(&format!(" using {}", e.api_version));
    }
    s
}

/// Server-side apply of `config` by `writer` onto `live` (`None`: the
/// object does not exist yet). Returns the object to store, with its
/// `managedFields`, or the conflicts when `force` is not set.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    node: Node,
    writer: &Writer,
    scope: Scope,
    force: bool,
    now: &str,
) -> Result<Value, Conflicts> {
    let ignore = |p: &[PathElement]| scope.ignores(p);
    let mut entries = match live {
        Some(l) => base_entries(Some(l), l, scope),
        None => Vec::new(),
    };
    let empty = json!({});
    let live_obj = live.unwrap_or(&empty);
    let mut merged = typed::merge(live_obj, config, node);
    let applied = typed::to_field_set(config, node, &ignore);
    let last = entries
        .iter()
        .position(|e| writer.owns(e))
        .map(|i| entries.remove(i));
    // Fields this manager applied last time and no longer does go, unless
    // another manager owns them.
    if let Some(last) = &last {
        let others = entries
            .iter()
            .fold(applied.clone(), |acc, e| acc.union(&e.set));
        let dropped = last.set.difference(&others);
        if !dropped.is_empty() {
            typed::remove_items(&mut merged, &dropped, &others, node);
        }
    }
    let c = typed::compare(live_obj, &merged, node, &ignore);
    let changed = c.modified.union(&c.added);
    // kubectl moving an object from client-side apply may take what the
    // annotation says it applied before.
    let allowed = match live {
        Some(l) if !force && writer.manager == last_applied::KUBECTL_MANAGER => {
            last_applied::allowed_conflicts(l, node, &ignore)
        }
        _ => None,
    };
    let mut conflicts = Vec::new();
    for e in &mut entries {
        let taken = e.set.intersection(&changed);
        if !taken.is_empty() {
            let refused = match &allowed {
                Some(a) => taken.difference(a),
                None => taken.clone(),
            };
            for p in refused.paths() {
                conflicts.push(Conflict {
                    manager: printed_manager(e),
                    field: path_string(&p),
                });
            }
            e.set = e.set.difference(&taken);
        }
        e.set = e.set.difference(&c.removed);
    }
    if !conflicts.is_empty() && !force {
        return Err(Conflicts(conflicts));
    }
    let time = match &last {
        Some(l)
            if l.set == applied
                && c.modified.is_empty()
                && c.added.is_empty()
                && c.removed.is_empty() =>
        {
            l.time.clone()
        }
        _ => Some(now.to_owned()),
    };
    entries.push(Entry {
        manager: writer.manager.clone(),
        operation: Operation::Apply,
        api_version: writer.api_version.clone(),
        time,
        subresource: writer.subresource.clone(),
        set: applied,
    });
    entries.retain(|e| !e.set.is_empty());
    if merged.get("metadata").is_none() {
        merged["metadata"] = json!({});
    }
    if writer.manager == last_applied::KUBECTL_MANAGER {
        last_applied::update(&mut merged, config);
    }
    store(&mut merged, entries);
    Ok(merged)
}

/// The query parameter a request's `User-Agent` is kept under, for
/// naming its manager when it sends no `fieldManager`.
pub const USER_AGENT_PARAM: &str = "\u{0}userAgent";

/// Keeps the request's user agent with its parameters.
pub fn remember_user_agent(headers: &axum::http::HeaderMap, params: &mut super::Params) {
    if let Some(ua) = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|h| h.to_str().ok())
    {
        params.insert(USER_AGENT_PARAM.into(), ua.to_owned());
    }
}

fn scope(kind: &dyn Kind, status: bool) -> Scope {
    if status {
        Scope::Status
    } else {
        Scope::Main {
            status_subresource: kind.info().has_status,
        }
    }
}

fn node(kind: &dyn Kind) -> Node {
    Node::for_kind(&kind.info().api_version(), kind.info().kind)
}

/// The writer of a request to `kind`.
pub fn writer(
    kind: &dyn Kind,
    params: &super::Params,
    operation: Operation,
    status: bool,
) -> Writer {
    let manager = Writer::manager_name(
        params.get("fieldManager").map(String::as_str),
        params.get(USER_AGENT_PARAM).map(String::as_str),
    );
    Writer {
        // The apiserver's own writes (bootstrap objects).
        manager: if manager.is_empty() {
            "kube-apiserver".into()
        } else {
            manager
        },
        operation,
        api_version: kind.info().api_version(),
        subresource: status.then(|| "status".to_owned()),
    }
}

/// Records a create or update of `kind` by the request's manager.
pub fn record(
    kind: &dyn Kind,
    live: Option<&Value>,
    new: &mut Value,
    params: &super::Params,
    status: bool,
) {
    let w = writer(kind, params, Operation::Update, status);
    record_update(
        live,
        new,
        node(kind),
        &w,
        scope(kind, status),
        &super::object::now_rfc3339(),
    );
}

/// A server-side apply request: the object to store, or kube-apiserver's
/// 409 with the conflicts.
pub fn apply_request(
    kind: &dyn Kind,
    live: Option<&Value>,
    config: &Value,
    params: &super::Params,
    status: bool,
) -> Result<Value, ApiError> {
    let w = writer(kind, params, Operation::Apply, status);
    let force = super::param_bool(params, "force") == Some(true);
    apply(
        live,
        config,
        node(kind),
        &w,
        scope(kind, status),
        force,
        &super::object::now_rfc3339(),
    )
    .map_err(|c| c.into_api_error())
}

impl Conflicts {
    fn into_api_error(self) -> ApiError {
        let causes = self
            .0
            .iter()
            .map(|c| StatusCause {
                reason: Some("FieldManagerConflict".into()),
                message: Some(format!("conflict with {}", c.manager)),
                field: Some(c.field.clone()),
            })
            .collect();
        ApiError {
            details: Some(Box::new(StatusDetails {
                causes: Some(causes),
                ..Default::default()
            })),
            ..ApiError::new(409, "Conflict", self.message())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(m: &str, op: Operation) -> Writer {
        Writer {
            manager: m.into(),
            operation: op,
            api_version: "v1".into(),
            subresource: None,
        }
    }

    const MAIN: Scope = Scope::Main {
        status_subresource: true,
    };

    fn managers(v: &Value) -> Vec<(String, String)> {
        v["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["manager"].as_str().unwrap().to_owned(),
                    e["operation"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    fn cm() -> Node {
        Node::for_kind("v1", "ConfigMap")
    }

    #[test]
    fn create_then_update_moves_ownership_of_changed_fields() {
        let mut obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "uid": "u", "labels": {"a": "1"}}, "data": {"k": "v"}});
        record_update(
            None,
            &mut obj,
            cm(),
            &writer("kubectl-create", Operation::Update),
            MAIN,
            "t1",
        );
        let fields = &obj["metadata"]["managedFields"][0];
        assert_eq!(fields["manager"], "kubectl-create");
        assert_eq!(fields["fieldsType"], "FieldsV1");
        assert_eq!(fields["time"], "t1");
        assert_eq!(
            fields["fieldsV1"],
            json!({"f:data": {".": {}, "f:k": {}}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}})
        );
        let mut edited = obj.clone();
        edited["data"]["k"] = "w".into();
        record_update(
            Some(&obj),
            &mut edited,
            cm(),
            &writer("kubectl-edit", Operation::Update),
            MAIN,
            "t2",
        );
        assert_eq!(
            managers(&edited),
            vec![
                ("kubectl-create".into(), "Update".into()),
                ("kubectl-edit".into(), "Update".into())
            ]
        );
        let edit = &edited["metadata"]["managedFields"][1];
        assert_eq!(edit["fieldsV1"], json!({"f:data": {"f:k": {}}}));
        assert_eq!(
            edited["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:data": {}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}})
        );
    }

    #[test]
    fn apply_conflicts_forces_and_prunes() {
        let cfg = |labels: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": labels}});
        let a = apply(
            None,
            &cfg(json!({"x": "1", "y": "1"})),
            cm(),
            &writer("a", Operation::Apply),
            MAIN,
            false,
            "t",
        )
        .unwrap();
        // The same value from another manager is shared, not a conflict.
        let shared = apply(
            Some(&a),
            &cfg(json!({"x": "1"})),
            cm(),
            &writer("b", Operation::Apply),
            MAIN,
            false,
            "t",
        )
        .unwrap();
        assert_eq!(managers(&shared).len(), 2);
        let err = apply(
            Some(&a),
            &cfg(json!({"x": "2"})),
            cm(),
            &writer("b", Operation::Apply),
            MAIN,
            false,
            "t",
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"a\": .metadata.labels.x"
        );
        let forced = apply(
            Some(&a),
            &cfg(json!({"x": "2"})),
            cm(),
            &writer("b", Operation::Apply),
            MAIN,
            true,
            "t",
        )
        .unwrap();
        assert_eq!(forced["metadata"]["labels"], json!({"x": "2", "y": "1"}));
        // `a` stops applying y (its own) and x (now b's): y goes, x stays.
        let bare = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let pruned = apply(
            Some(&forced),
            &bare,
            cm(),
            &writer("a", Operation::Apply),
            MAIN,
            false,
            "t",
        )
        .unwrap();
        assert_eq!(pruned["metadata"]["labels"], json!({"x": "2"}));
        assert_eq!(managers(&pruned), vec![("b".into(), "Apply".into())]);
    }

    #[test]
    fn updaters_are_printed_with_their_version() {
        let mut obj = json!({"metadata": {"name": "c", "labels": {"x": "1"}}});
        record_update(
            None,
            &mut obj,
            cm(),
            &writer("kubectl-client-side-apply", Operation::Update),
            MAIN,
            "t",
        );
        let cfg = json!({"metadata": {"name": "c", "labels": {"x": "2"}}});
        let err = apply(
            Some(&obj),
            &cfg,
            cm(),
            &writer("kubectl", Operation::Apply),
            MAIN,
            false,
            "t",
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using v1: .metadata.labels.x"
        );
    }

    #[test]
    fn kubectl_takes_over_what_its_client_side_apply_applied() {
        let cfg = |x: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"x": x}}});
        let mut obj = cfg("1");
        obj["metadata"]["annotations"] = json!({last_applied::ANNOTATION: cfg("1").to_string()});
        let csa = writer("kubectl-client-side-apply", Operation::Update);
        record_update(None, &mut obj, cm(), &csa, MAIN, "t");
        let apply_as = |live: &Value, manager: &str| {
            let w = writer(manager, Operation::Apply);
            apply(Some(live), &cfg("2"), cm(), &w, MAIN, false, "t")
        };
        assert!(apply_as(&obj, "not-kubectl").is_err());
        let upgraded = apply_as(&obj, "kubectl").unwrap();
        assert_eq!(upgraded["metadata"]["labels"]["x"], "2");
        let annotation = &upgraded["metadata"]["annotations"][last_applied::ANNOTATION];
        let recorded: Value = serde_json::from_str(annotation.as_str().unwrap()).unwrap();
        assert_eq!(recorded, cfg("2"));
        // Changed by someone since it was applied: theirs now, a conflict.
        let mut edited = obj.clone();
        edited["metadata"]["labels"]["x"] = "3".into();
        let edit = writer("kubectl-edit", Operation::Update);
        record_update(Some(&obj), &mut edited, cm(), &edit, MAIN, "t");
        assert_eq!(
            apply_as(&edited, "kubectl").unwrap_err().message(),
            "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using v1: .metadata.labels.x"
        );
    }

    #[test]
    fn manager_defaults_to_the_user_agent_program() {
        assert_eq!(
            Writer::manager_name(Some("kubectl-set"), Some("kubectl/v1.33")),
            "kubectl-set"
        );
        assert_eq!(
            Writer::manager_name(None, Some("kubectl/v1.33.1 (linux/amd64) kubernetes/abc")),
            "kubectl"
        );
        assert_eq!(Writer::manager_name(None, None), "");
    }
}
