//! What a DELETE asks for and what it does to an object before it goes, as
//! kube-apiserver's generic registry decides it (`rest.BeforeDelete`,
//! `deletionFinalizersForGarbageCollection`): the `DeleteOptions` (body, or
//! query parameters without one), their validation, and the garbage
//! collector's finalizers a deletion adds — `orphan` when dependents are to
//! be orphaned, `foregroundDeletion` when they go first. Pure functions; the
//! handler in [`super`] applies them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions;
use serde_json::Value;

use super::Params;
use crate::kinds::ResourceInfo;
use crate::status::{ApiError, FieldError, Subject};

/// `metav1.FinalizerOrphanDependents`.
pub const FINALIZER_ORPHAN: &str = "orphan";
/// `metav1.FinalizerDeleteDependents`.
pub const FINALIZER_FOREGROUND: &str = "foregroundDeletion";
/// The namespace controller's finalizer in a Namespace's `spec.finalizers`.
pub const FINALIZER_KUBERNETES: &str = "kubernetes";

/// `metav1.DeletionPropagation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Orphan,
    Background,
    Foreground,
}

impl Propagation {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Orphan" => Some(Self::Orphan),
            "Background" => Some(Self::Background),
            "Foreground" => Some(Self::Foreground),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Orphan => "Orphan",
            Self::Background => "Background",
            Self::Foreground => "Foreground",
        }
    }
}

/// A DELETE's options, checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeleteRequest {
    pub grace_period_seconds: Option<i64>,
    pub propagation: Option<Propagation>,
    /// The deprecated `orphanDependents`.
    pub orphan_dependents: Option<bool>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
    pub dry_run: bool,
}

const DELETE_OPTIONS: Subject<'static> = Subject {
    group: "meta.k8s.io",
    plural: "deleteoptions",
    kind: "DeleteOptions.meta.k8s.io",
};

impl DeleteRequest {
    /// From the request body (a `DeleteOptions`) or, without one, the query,
    /// as the DELETE handler reads them; then `ValidateDeleteOptions`.
    pub fn from_request(body: &Value, params: &Params) -> Result<Self, ApiError> {
        let opts: DeleteOptions = if body.is_null() {
            from_query(params)?
        } else {
            serde_json::from_value(body.clone())
                .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
        };
        let mut errs = Vec::new();
        if opts.orphan_dependents.is_some() && opts.propagation_policy.is_some() {
            errs.push(FieldError::invalid(
                "propagationPolicy",
                opts.propagation_policy.as_deref().unwrap_or(""),
                "orphanDependents and deletionPropagation cannot be both set",
            ));
        }
        let propagation = match opts.propagation_policy.as_deref() {
            None => None,
            Some(p) => match Propagation::parse(p) {
                Some(p) => Some(p),
                None => {
                    errs.push(FieldError::not_supported(
                        "propagationPolicy",
                        p,
                        &["Foreground", "Background", "Orphan", "nil"],
                    ));
                    None
                }
            },
        };
        let dry_run = opts.dry_run.unwrap_or_default();
        for d in &dry_run {
            if d != "All" {
                errs.push(FieldError::not_supported("dryRun", d, &["All"]));
            }
        }
        if !errs.is_empty() {
            return Err(ApiError::invalid(DELETE_OPTIONS, "", &errs));
        }
        let pre = opts.preconditions.unwrap_or_default();
        Ok(Self {
            grace_period_seconds: opts.grace_period_seconds,
            propagation,
            orphan_dependents: opts.orphan_dependents,
            precondition_uid: pre.uid,
            precondition_resource_version: pre.resource_version,
            dry_run: !dry_run.is_empty() || params.get("dryRun").is_some_and(|d| d == "All"),
        })
    }

    /// The 202 that kube-apiserver answers when a deletion is left pending
    /// and the client asked for cascading with `orphanDependents: false`.
    pub fn wants_accepted(&self) -> bool {
        self.orphan_dependents == Some(false)
    }
}

fn from_query(params: &Params) -> Result<DeleteOptions, ApiError> {
    let grace_period_seconds = match params.get("gracePeriodSeconds") {
        Some(g) => Some(g.parse::<i64>().map_err(|_| {
            ApiError::bad_request(format!("invalid value for gracePeriodSeconds: {g:?}"))
        })?),
        None => None,
    };
    let orphan_dependents = match params.get("orphanDependents") {
        Some(_) => Some(
            super::param_bool(params, "orphanDependents").ok_or_else(|| {
                ApiError::bad_request("invalid value for orphanDependents: must be a boolean")
            })?,
        ),
        None => None,
    };
    Ok(DeleteOptions {
        grace_period_seconds,
        orphan_dependents,
        propagation_policy: params.get("propagationPolicy").cloned(),
        dry_run: params.get("dryRun").map(|d| vec![d.clone()]),
        ..Default::default()
    })
}

/// A kind's `DefaultGarbageCollectionPolicy` when a DELETE names none:
/// dependents go in the background, except that batch/v1 Jobs keep their
/// pods (kept for compatibility upstream; kubectl asks for Background).
pub fn default_policy(info: &ResourceInfo) -> Propagation {
    match (info.group, info.plural) {
        ("batch", "jobs") => Propagation::Orphan,
        _ => Propagation::Background,
    }
}

fn has(finalizers: &[String], f: &str) -> bool {
    finalizers.iter().any(|x| x == f)
}

/// `shouldOrphanDependents`: the request first, then a finalizer already on
/// the object, then the kind's default.
fn should_orphan(finalizers: &[String], req: &DeleteRequest, default: Propagation) -> bool {
    if let Some(o) = req.orphan_dependents {
        return o;
    }
    if let Some(p) = req.propagation {
        return p == Propagation::Orphan;
    }
    if has(finalizers, FINALIZER_ORPHAN) {
        return true;
    }
    if has(finalizers, FINALIZER_FOREGROUND) {
        return false;
    }
    default == Propagation::Orphan
}

/// `shouldDeleteDependents`: foreground when asked, or already under way.
fn should_delete_dependents(finalizers: &[String], req: &DeleteRequest) -> bool {
    if req.orphan_dependents.is_some() {
        return false;
    }
    if let Some(p) = req.propagation {
        return p == Propagation::Foreground;
    }
    has(finalizers, FINALIZER_FOREGROUND)
}

/// The object's finalizers after a DELETE with `req`, when they change:
/// the garbage collector's two are dropped and added back as the request
/// (or what is on the object, or the kind's default) asks.
pub fn gc_finalizers(
    finalizers: &[String],
    req: &DeleteRequest,
    default: Propagation,
) -> Option<Vec<String>> {
    let orphan = should_orphan(finalizers, req, default);
    let foreground = should_delete_dependents(finalizers, req);
    let mut out: Vec<String> = finalizers
        .iter()
        .filter(|f| *f != FINALIZER_ORPHAN && *f != FINALIZER_FOREGROUND)
        .cloned()
        .collect();
    if orphan {
        out.push(FINALIZER_ORPHAN.into());
    }
    if foreground {
        out.push(FINALIZER_FOREGROUND.into());
    }
    let same = out.len() == finalizers.len() && out.iter().all(|f| has(finalizers, f));
    (!same).then_some(out)
}

/// `metadata.finalizers` as strings.
pub fn finalizers(obj: &Value) -> Vec<String> {
    super::object::meta(obj)
        .get("finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// A Namespace's `spec.finalizers` (the namespace controller's `kubernetes`).
pub fn spec_finalizers(ns: &Value) -> Vec<String> {
    ns["spec"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether an update of an object under deletion is the one that lets it
/// go (`ShouldDeleteDuringUpdate`): its last finalizer was removed and no
/// graceful termination is pending (a pod waits for its kubelet). A
/// Namespace also waits for its `spec.finalizers`.
pub fn finalized_by_update(old: &Value, new: &Value, plural: &str) -> bool {
    let m = super::object::meta(new);
    if m.get("deletionTimestamp").is_none_or(Value::is_null) {
        return false;
    }
    if !finalizers(new).is_empty() {
        return false;
    }
    match plural {
        "namespaces" => spec_finalizers(new).is_empty(),
        // A pod under graceful termination goes through its kubelet's
        // final DELETE; one whose grace is over went when its finalizers did.
        "pods" => {
            !finalizers(old).is_empty()
                && m.get("deletionGracePeriodSeconds").and_then(Value::as_i64) == Some(0)
        }
        _ => true,
    }
}

/// kube-apiserver's NamespaceLifecycle keeps these.
pub const IMMORTAL_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(body: Value) -> DeleteRequest {
        DeleteRequest::from_request(&body, &Params::new()).unwrap()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn kubectls_cascade_flags_become_the_collectors_finalizers() {
        let bg = Propagation::Background;
        // --cascade=background (kubectl's default): nothing to add.
        let background = req(json!({"kind": "DeleteOptions", "propagationPolicy": "Background"}));
        assert_eq!(gc_finalizers(&[], &background, bg), None);
        // --cascade=orphan
        let orphan = req(json!({"propagationPolicy": "Orphan"}));
        assert_eq!(gc_finalizers(&[], &orphan, bg), Some(s(&["orphan"])));
        // --cascade=foreground, keeping a user's finalizer
        let fg = req(json!({"propagationPolicy": "Foreground"}));
        assert_eq!(
            gc_finalizers(&s(&["example.com/keep"]), &fg, bg),
            Some(s(&["example.com/keep", "foregroundDeletion"]))
        );
        // A later orphaning delete replaces foreground.
        assert_eq!(
            gc_finalizers(&s(&["foregroundDeletion"]), &orphan, bg),
            Some(s(&["orphan"]))
        );
        // The deprecated orphanDependents.
        let od = req(json!({"orphanDependents": true}));
        assert_eq!(gc_finalizers(&[], &od, bg), Some(s(&["orphan"])));
        assert!(req(json!({"orphanDependents": false})).wants_accepted());
    }

    #[test]
    fn without_a_policy_the_object_then_the_kind_decide() {
        let none = DeleteRequest::default();
        assert_eq!(
            gc_finalizers(&s(&["foregroundDeletion"]), &none, Propagation::Background),
            None,
            "a foreground deletion under way stays one"
        );
        assert_eq!(
            gc_finalizers(&[], &none, Propagation::Orphan),
            Some(s(&["orphan"])),
            "batch/v1 Jobs orphan by default"
        );
        let jobs = ResourceInfo {
            group: "batch",
            version: "v1",
            plural: "jobs",
            singular: "job".into(),
            kind: "Job",
            namespaced: true,
            short_names: &[],
            categories: &[],
            has_status: true,
            has_scale: false,
            annotations_bump_generation: false,
            status_updates_annotations: false,
        };
        assert_eq!(default_policy(&jobs), Propagation::Orphan);
    }

    #[test]
    fn bad_options_are_refused_with_kube_apiservers_words() {
        let e =
            DeleteRequest::from_request(&json!({"propagationPolicy": "Sideways"}), &Params::new())
                .unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            r#"DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: "Sideways": supported values: "Foreground", "Background", "Orphan", "nil""#
        );
        let e = DeleteRequest::from_request(
            &json!({"propagationPolicy": "Orphan", "orphanDependents": true}),
            &Params::new(),
        )
        .unwrap_err();
        assert!(
            e.message
                .contains("orphanDependents and deletionPropagation cannot be both set"),
            "{}",
            e.message
        );
    }

    #[test]
    fn the_query_is_read_when_there_is_no_body() {
        let mut p = Params::new();
        p.insert("propagationPolicy".into(), "Foreground".into());
        p.insert("gracePeriodSeconds".into(), "5".into());
        let r = DeleteRequest::from_request(&Value::Null, &p).unwrap();
        assert_eq!(r.propagation, Some(Propagation::Foreground));
        assert_eq!(r.grace_period_seconds, Some(5));
    }

    #[test]
    fn an_update_lets_a_deleted_object_go_once_its_finalizers_are_gone() {
        let old = json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z", "deletionGracePeriodSeconds": 0, "finalizers": ["orphan"]}});
        let new = json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z", "deletionGracePeriodSeconds": 0}});
        assert!(finalized_by_update(&old, &new, "replicasets"));
        assert!(finalized_by_update(&old, &new, "pods"));
        let graceful = json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z", "deletionGracePeriodSeconds": 30}});
        assert!(
            !finalized_by_update(&old, &graceful, "pods"),
            "its kubelet finishes it"
        );
        let ns = json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"}, "spec": {"finalizers": ["kubernetes"]}});
        assert!(!finalized_by_update(&ns, &ns, "namespaces"));
        let done = json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"}, "spec": {}});
        assert!(finalized_by_update(&ns, &done, "namespaces"));
        let live = json!({"metadata": {}});
        assert!(!finalized_by_update(&live, &live, "replicasets"));
    }
}
