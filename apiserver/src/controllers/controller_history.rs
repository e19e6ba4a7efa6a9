//! ControllerRevision history shared by the DaemonSet and StatefulSet
//! controllers (upstream's `pkg/controller/history`): a revision holds the
//! owner's pod template as the patch `kubectl rollout undo` applies, is
//! named `<owner>-<hash>`, and an owner rolled back to an older template
//! renumbers that revision rather than making a new one.

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde_json::{Value, json};

/// `apps.ControllerRevisionHashLabelKey`.
pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";

/// The revision's data (`getPatch`): the template, replacing the owner's
/// wholesale when rolled back to.
pub fn patch_data(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).expect("template serializes");
    t["$patch"] = "replace".into();
    json!({"spec": {"template": t}})
}

/// The template a revision holds (what `kubectl rollout undo` restores).
pub fn revision_template(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut data = rev.data.as_ref()?.0.get("spec")?.get("template")?.clone();
    if let Some(o) = data.as_object_mut() {
        o.remove("$patch");
    }
    serde_json::from_value(data).ok()
}

/// A new revision of `owner_meta`'s template (`snapshot`/`NewControllerRevision`).
pub fn new_revision(
    owner_meta: &ObjectMeta,
    owner: OwnerReference,
    template: &PodTemplateSpec,
    hash: &str,
    revision: i64,
) -> ControllerRevision {
    let name = owner_meta.name.clone().unwrap_or_default();
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(REVISION_HASH_LABEL.into(), hash.into());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{hash}")),
            namespace: owner_meta.namespace.clone(),
            labels: Some(labels),
            annotations: owner_meta.annotations.clone(),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        data: Some(RawExtension(patch_data(template))),
        revision,
    }
}

/// What the history needs (`constructHistory`).
#[derive(Debug, Clone, PartialEq)]
pub enum HistoryStep {
    /// No revision holds the template: create this one.
    Create(ControllerRevision),
    /// The current revision (by name), renumbered to `revision` when it
    /// is an older one rolled back to; duplicates of it to delete.
    Current {
        name: String,
        renumber_to: Option<i64>,
        duplicates: Vec<String>,
    },
}

/// The step for `data` among the owner's `revisions`; `make` builds a new
/// revision with the given number.
pub fn history_step(
    revisions: &[ControllerRevision],
    data: &Value,
    make: impl FnOnce(i64) -> ControllerRevision,
) -> HistoryStep {
    let max = revisions.iter().map(|r| r.revision).max().unwrap_or(0);
    let mut current: Vec<&ControllerRevision> = revisions
        .iter()
        .filter(|r| r.data.as_ref().map(|d| &d.0) == Some(data))
        .collect();
    if current.is_empty() {
        return HistoryStep::Create(make(max + 1));
    }
    // Keep the newest of equal revisions.
    current.sort_by_key(|r| std::cmp::Reverse(r.revision));
    let keep = current[0];
    HistoryStep::Current {
        name: keep.metadata.name.clone().unwrap_or_default(),
        renumber_to: (keep.revision < max).then_some(max + 1),
        duplicates: current[1..]
            .iter()
            .filter_map(|r| r.metadata.name.clone())
            .collect(),
    }
}
