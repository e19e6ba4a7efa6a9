//! The PersistentVolume controller's decisions, as pure functions
//! (`pkg/controller/volume/persistentvolume`): which volume a claim binds
//! to (`FindMatchingVolume`: class, access modes, volume mode, size,
//! selector, pre-binding, node affinity, smallest fit), what a claim or a
//! volume needs next, and the volume the local-path provisioner makes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, Pod,
    VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::kinds::storage::is_default_class;

/// The provisioner of the built-in node-local class.
pub const LOCAL_PATH_PROVISIONER: &str = "kubelab.io/local-path";
/// The built-in class's name.
pub const LOCAL_PATH_CLASS: &str = "local-path";
/// The node annotation where an agent says under which directory its
/// local-path volumes live.
pub const LOCAL_PATH_DIR_ANNOTATION: &str = "kubelab.io/local-path-dir";
/// Where local-path volumes live on a node that does not say.
pub const DEFAULT_LOCAL_PATH_DIR: &str = "/var/lib/kubelab/storage";
/// The node the scheduler chose for a claim's first consumer.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
pub const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

fn storage(m: Option<&BTreeMap<String, Quantity>>) -> i64 {
    m.and_then(|m| m.get("storage"))
        .and_then(|q| kubelab_rules::quantity::value(q).ok())
        .unwrap_or(0)
}

pub fn requested_bytes(claim: &PersistentVolumeClaim) -> i64 {
    storage(
        claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref()),
    )
}

pub fn capacity_bytes(pv: &PersistentVolume) -> i64 {
    storage(pv.spec.as_ref().and_then(|s| s.capacity.as_ref()))
}

/// The class a claim asks for (`GetPersistentVolumeClaimClass`): the
/// field, or the beta annotation; "" for none.
pub fn claim_class(claim: &PersistentVolumeClaim) -> String {
    if let Some(c) = claim
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("volume.beta.kubernetes.io/storage-class"))
    {
        return c.clone();
    }
    claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default()
}

pub fn volume_class(pv: &PersistentVolume) -> String {
    pv.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default()
}

fn volume_mode(m: Option<&String>) -> &str {
    m.map(String::as_str).unwrap_or("Filesystem")
}

fn key(ns: Option<&str>, name: Option<&str>) -> (String, String) {
    (
        ns.unwrap_or_default().to_owned(),
        name.unwrap_or_default().to_owned(),
    )
}

/// Whether the volume's claimRef names this claim (and, when it carries
/// a uid, this very claim rather than an older one of the same name).
pub fn claim_ref_is(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    key(r.namespace.as_deref(), r.name.as_deref())
        == key(
            claim.metadata.namespace.as_deref(),
            claim.metadata.name.as_deref(),
        )
        && r.uid
            .as_deref()
            .is_none_or(|u| u.is_empty() || Some(u) == claim.metadata.uid.as_deref())
}

/// Whether a volume may go to a node (`CheckNodeAffinity`); a volume
/// without node affinity goes anywhere.
pub fn volume_fits_node(pv: &PersistentVolume, node: &Node) -> bool {
    match pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    {
        None => true,
        Some(sel) => kubelab_rules::node_affinity::node_selector_matches(sel, node),
    }
}

/// Why a volume does not fit a claim, or `None` when it does
/// (`checkVolumeSatisfyClaim` plus the class, selector and state checks
/// of `FindMatchingVolume`).
pub fn mismatch(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> Option<&'static str> {
    let (Some(vs), Some(cs)) = (pv.spec.as_ref(), claim.spec.as_ref()) else {
        return Some("no spec");
    };
    if pv.metadata.deletion_timestamp.is_some() {
        return Some("volume is being deleted");
    }
    if let Some(r) = &vs.claim_ref
        && !claim_ref_is(pv, claim)
    {
        let _ = r;
        return Some("volume is bound to another claim");
    }
    if vs.claim_ref.is_none()
        && pv
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Released" || p == "Failed")
    {
        return Some("volume is released");
    }
    if volume_class(pv) != claim_class(claim) {
        return Some("storage class differs");
    }
    if volume_mode(vs.volume_mode.as_ref()) != volume_mode(cs.volume_mode.as_ref()) {
        return Some("volume mode differs");
    }
    let have = vs.access_modes.clone().unwrap_or_default();
    if !cs.access_modes.iter().flatten().all(|m| have.contains(m)) {
        return Some("access modes differ");
    }
    if capacity_bytes(pv) < requested_bytes(claim) {
        return Some("too small");
    }
    if let Some(sel) = &cs.selector {
        let labels = pv.metadata.labels.clone().unwrap_or_default();
        if !kubelab_rules::selector::matches(sel, &labels) {
            return Some("selector does not match");
        }
    }
    None
}

/// `FindMatchingVolume`: a volume pre-bound to the claim if it fits,
/// otherwise the smallest free volume that fits (on `node`, when the
/// binding waits for the first consumer).
pub fn find_matching_volume<'a>(
    claim: &PersistentVolumeClaim,
    volumes: &'a [PersistentVolume],
    node: Option<&Node>,
) -> Option<&'a PersistentVolume> {
    let fits = |pv: &&PersistentVolume| {
        mismatch(pv, claim).is_none() && node.is_none_or(|n| volume_fits_node(pv, n))
    };
    if let Some(pre) = volumes
        .iter()
        .filter(|pv| pv.spec.as_ref().is_some_and(|s| s.claim_ref.is_some()))
        .find(fits)
    {
        return Some(pre);
    }
    volumes
        .iter()
        .filter(|pv| pv.spec.as_ref().is_some_and(|s| s.claim_ref.is_none()))
        .filter(fits)
        .min_by_key(|pv| capacity_bytes(pv))
}

/// The default class (`GetDefaultClass`): the newest of those marked.
pub fn default_class(classes: &[StorageClass]) -> Option<&StorageClass> {
    classes
        .iter()
        .filter(|c| is_default_class(c))
        .max_by_key(|c| c.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// What an unbound or binding claim needs next (`syncUnboundClaim`).
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimStep {
    /// Nothing to do now.
    Wait,
    /// A claim without `storageClassName` gets the default class
    /// (`RetroactiveDefaultStorageClass`).
    SetClass(String),
    /// Bind the claim and this volume to each other.
    Bind(String),
    /// The claim's class waits for a pod: note the node of the first one.
    SelectNode(String),
    /// The local-path provisioner makes a volume on this node.
    Provision { node: String },
    /// The claim stays Pending; the event to say why.
    Pending {
        reason: &'static str,
        message: String,
    },
}

/// `claim`'s next step given the world; `consumer_node` is the node of a
/// scheduled pod that uses it, if any.
pub fn claim_step(
    claim: &PersistentVolumeClaim,
    volumes: &[PersistentVolume],
    classes: &[StorageClass],
    nodes: &[Node],
    consumer_node: Option<&str>,
) -> ClaimStep {
    let Some(spec) = &claim.spec else {
        return ClaimStep::Wait;
    };
    if claim.metadata.deletion_timestamp.is_some() {
        return ClaimStep::Wait;
    }
    let volume_name = spec.volume_name.clone().unwrap_or_default();
    if !volume_name.is_empty() {
        // Pre-bound by the user (or bound already): only that volume.
        return match volumes
            .iter()
            .find(|v| v.metadata.name.as_deref() == Some(volume_name.as_str()))
        {
            None => ClaimStep::Pending {
                reason: "FailedBinding",
                message: format!("volume {volume_name:?} not found"),
            },
            Some(pv) if claim_ref_is(pv, claim) => ClaimStep::Bind(volume_name),
            Some(pv) if pv.spec.as_ref().is_some_and(|s| s.claim_ref.is_some()) => {
                ClaimStep::Pending {
                    reason: "FailedBinding",
                    message: format!("volume {volume_name:?} already bound to a different claim."),
                }
            }
            Some(pv) => match mismatch(pv, claim) {
                None => ClaimStep::Bind(volume_name),
                Some(why) => ClaimStep::Pending {
                    reason: "VolumeMismatch",
                    message: format!("Cannot bind to requested volume {volume_name:?}: {why}"),
                },
            },
        };
    }
    if spec.storage_class_name.is_none()
        && !claim
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("volume.beta.kubernetes.io/storage-class"))
        && let Some(c) = default_class(classes)
    {
        return ClaimStep::SetClass(c.metadata.name.clone().unwrap_or_default());
    }
    let class_name = claim_class(claim);
    let class = classes
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(class_name.as_str()));
    let delayed =
        class.is_some_and(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"));
    let selected = claim
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SELECTED_NODE))
        .cloned();
    if delayed {
        // The scheduler pre-bound a volume on the pod's node.
        if selected.is_none()
            && let Some(pv) = volumes
                .iter()
                .find(|pv| claim_ref_is(pv, claim) && mismatch(pv, claim).is_none())
        {
            return ClaimStep::Bind(pv.metadata.name.clone().unwrap_or_default());
        }
        let Some(node_name) = selected else {
            return match consumer_node {
                Some(n) => ClaimStep::SelectNode(n.to_owned()),
                None => ClaimStep::Pending {
                    reason: "WaitForFirstConsumer",
                    message: "waiting for first consumer to be created before binding".into(),
                },
            };
        };
        let node = nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(node_name.as_str()));
        if let Some(node) = node
            && let Some(pv) = find_matching_volume(claim, volumes, Some(node))
        {
            return ClaimStep::Bind(pv.metadata.name.clone().unwrap_or_default());
        }
        return provision_or_pending(claim, class, Some(node_name));
    }
    if let Some(pv) = find_matching_volume(claim, volumes, None) {
        return ClaimStep::Bind(pv.metadata.name.clone().unwrap_or_default());
    }
    provision_or_pending(claim, class, None)
}

fn provision_or_pending(
    claim: &PersistentVolumeClaim,
    class: Option<&StorageClass>,
    node: Option<String>,
) -> ClaimStep {
    let class_name = claim_class(claim);
    match class {
        None if class_name.is_empty() => ClaimStep::Pending {
            reason: "FailedBinding",
            message: "no persistent volumes available for this claim and no storage class is set"
                .into(),
        },
        None => ClaimStep::Pending {
            reason: "ProvisioningFailed",
            message: format!("storageclass.storage.k8s.io {class_name:?} not found"),
        },
        Some(c) if c.provisioner == LOCAL_PATH_PROVISIONER => match node {
            Some(node) => ClaimStep::Provision { node },
            None => ClaimStep::Pending {
                reason: "ProvisioningFailed",
                message: "configuration error, no node was specified: the local-path provisioner needs volumeBindingMode WaitForFirstConsumer".into(),
            },
        },
        Some(c) => ClaimStep::Pending {
            reason: "ExternalProvisioning",
            message: format!(
                "Waiting for a volume to be created either by the external provisioner '{}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.",
                c.provisioner
            ),
        },
    }
}

/// What a volume needs next (`syncVolume` and `reclaimVolume`).
#[derive(Debug, Clone, PartialEq)]
pub enum VolumeStep {
    Wait,
    /// Move the status to this phase.
    Phase(&'static str),
    /// The claim it was bound to is gone and its policy says Delete.
    Delete,
    /// The controller bound it to a claim that went to another volume:
    /// free it again.
    Unbind,
}

/// `claim` is the claim its claimRef names, as last seen (by name).
pub fn volume_step(pv: &PersistentVolume, claim: Option<&PersistentVolumeClaim>) -> VolumeStep {
    let phase = pv
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("");
    let Some(spec) = &pv.spec else {
        return VolumeStep::Wait;
    };
    let Some(r) = &spec.claim_ref else {
        return if phase == "Available" {
            VolumeStep::Wait
        } else {
            VolumeStep::Phase("Available")
        };
    };
    let claim = claim.filter(|c| claim_ref_is(pv, c));
    match claim {
        // Pre-bound to a claim that is not there yet.
        None if r.uid.as_deref().unwrap_or("").is_empty() => {
            if phase == "Available" {
                VolumeStep::Wait
            } else {
                VolumeStep::Phase("Available")
            }
        }
        None => {
            if phase != "Released" && phase != "Failed" {
                return VolumeStep::Phase("Released");
            }
            match spec.persistent_volume_reclaim_policy.as_deref() {
                Some("Delete")
                    if phase == "Released" && pv.metadata.deletion_timestamp.is_none() =>
                {
                    VolumeStep::Delete
                }
                _ => VolumeStep::Wait,
            }
        }
        Some(c) => {
            let claim_volume = c
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.clone())
                .unwrap_or_default();
            if claim_volume.is_empty() {
                // The claim's sync finishes the binding.
                VolumeStep::Wait
            } else if Some(claim_volume.as_str()) == pv.metadata.name.as_deref() {
                if phase == "Bound" {
                    VolumeStep::Wait
                } else {
                    VolumeStep::Phase("Bound")
                }
            } else if pv
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(BOUND_BY_CONTROLLER))
            {
                VolumeStep::Unbind
            } else {
                VolumeStep::Wait
            }
        }
    }
}

/// The reference a bound volume keeps to its claim.
pub fn claim_ref(claim: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: claim.metadata.namespace.clone(),
        name: claim.metadata.name.clone(),
        uid: claim.metadata.uid.clone(),
        resource_version: claim.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// The claims a pod uses, by name.
pub fn pod_claims(pod: &Pod) -> impl Iterator<Item = &str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.as_str())
}

/// Whether a pod still holds its claims (`podIsShutDown` negated): not
/// finished.
pub fn pod_uses_claims(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed"))
}

/// The directory a local-path volume gets on its node
/// (`<dir>/pvc-<uid>_<namespace>_<name>`, as k3s's provisioner names it).
pub fn local_path(node: Option<&Node>, pv_name: &str, claim: &PersistentVolumeClaim) -> String {
    let dir = node
        .and_then(|n| n.metadata.annotations.as_ref())
        .and_then(|a| a.get(LOCAL_PATH_DIR_ANNOTATION))
        .cloned()
        .unwrap_or_else(|| DEFAULT_LOCAL_PATH_DIR.into());
    format!(
        "{}/{pv_name}_{}_{}",
        dir.trim_end_matches('/'),
        claim.metadata.namespace.as_deref().unwrap_or_default(),
        claim.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The volume the local-path provisioner makes for `claim` on `node`:
/// a hostPath directory there, pinned to the node, pre-bound to the claim.
pub fn provisioned_volume(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    node_name: &str,
    node: Option<&Node>,
) -> PersistentVolume {
    let name = format!("pvc-{}", claim.metadata.uid.as_deref().unwrap_or_default());
    let spec = claim.spec.clone().unwrap_or_default();
    let capacity = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .cloned()
        .unwrap_or_else(|| Quantity("0".into()));
    // A class without a policy deletes (the StorageClass default).
    let policy = class
        .reclaim_policy
        .clone()
        .unwrap_or_else(|| "Delete".into());
    // The directory goes before the volume object does, whichever is
    // deleted first.
    let finalizers = (policy == "Delete")
        .then(|| vec![super::local_path_reclaim::DELETION_PROTECTION_FINALIZER.to_owned()]);
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            annotations: Some([(PROVISIONED_BY.to_owned(), class.provisioner.clone())].into()),
            finalizers,
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: spec.access_modes.clone(),
            capacity: Some([("storage".to_owned(), capacity)].into()),
            claim_ref: Some(claim_ref(claim)),
            host_path: Some(HostPathVolumeSource {
                path: local_path(node, &name, claim),
                type_: Some("DirectoryOrCreate".into()),
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: HOSTNAME_LABEL.into(),
                            operator: "In".into(),
                            values: Some(vec![node_hostname(node, node_name)]),
                        }]),
                        ..Default::default()
                    }],
                }),
            }),
            persistent_volume_reclaim_policy: Some(policy),
            storage_class_name: class.metadata.name.clone(),
            volume_mode: spec.volume_mode.clone(),
            mount_options: class.mount_options.clone(),
            ..Default::default()
        }),
        status: None,
    }
}

fn node_hostname(node: Option<&Node>, node_name: &str) -> String {
    node.and_then(|n| n.metadata.labels.as_ref())
        .and_then(|l| l.get(HOSTNAME_LABEL))
        .cloned()
        .unwrap_or_else(|| node_name.to_owned())
}

/// The built-in default class: node-local directories, made when the
/// first pod using a claim is scheduled.
pub fn local_path_class() -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some(LOCAL_PATH_CLASS.into()),
            annotations: Some(
                [(
                    crate::kinds::storage::DEFAULT_CLASS_ANNOTATION.to_owned(),
                    "true".to_owned(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        provisioner: LOCAL_PATH_PROVISIONER.into(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("WaitForFirstConsumer".into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pv(name: &str, size: &str, extra: serde_json::Value) -> PersistentVolume {
        let mut v = json!({"metadata": {"name": name, "labels": {"disk": "ssd"}},
            "spec": {"accessModes": ["ReadWriteOnce", "ReadOnlyMany"], "capacity": {"storage": size},
                "hostPath": {"path": format!("/data/{name}")}},
            "status": {"phase": "Available"}});
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn pvc(name: &str, size: &str, extra: serde_json::Value) -> PersistentVolumeClaim {
        let mut v = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                "resources": {"requests": {"storage": size}}}});
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn node(name: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name,
            "labels": {"kubernetes.io/hostname": name},
            "annotations": {LOCAL_PATH_DIR_ANNOTATION: "/var/lib/kubelet/storage"}}}))
        .unwrap()
    }

    #[test]
    fn the_smallest_volume_that_fits_wins() {
        let vols = [
            pv("big", "10Gi", json!({})),
            pv("small", "1Gi", json!({})),
            pv("fits", "2Gi", json!({})),
            pv(
                "rwx",
                "2Gi",
                json!({"spec": {"accessModes": ["ReadWriteMany"]}}),
            ),
            pv(
                "classy",
                "2Gi",
                json!({"spec": {"storageClassName": "fast"}}),
            ),
        ];
        let claim = pvc("data", "1500Mi", json!({}));
        assert_eq!(
            find_matching_volume(&claim, &vols, None)
                .unwrap()
                .metadata
                .name
                .as_deref(),
            Some("fits")
        );
        let fast = pvc("data", "1Gi", json!({"spec": {"storageClassName": "fast"}}));
        assert_eq!(
            find_matching_volume(&fast, &vols, None)
                .unwrap()
                .metadata
                .name
                .as_deref(),
            Some("classy")
        );
        let many = pvc(
            "data",
            "1Gi",
            json!({"spec": {"accessModes": ["ReadWriteMany"]}}),
        );
        assert_eq!(
            claim_step(&many, &vols, &[], &[], None),
            ClaimStep::Bind("rwx".into())
        );
        let picky = pvc(
            "data",
            "1Gi",
            json!({"spec": {"selector": {"matchLabels": {"disk": "hdd"}}}}),
        );
        assert_eq!(
            claim_step(&picky, &vols, &[], &[], None),
            ClaimStep::Pending {
                reason: "FailedBinding",
                message:
                    "no persistent volumes available for this claim and no storage class is set"
                        .into()
            }
        );
    }

    #[test]
    fn pre_binding_goes_both_ways() {
        // A volume reserved for another claim is not taken.
        let reserved = pv(
            "res",
            "1Gi",
            json!({"spec": {"claimRef": {"namespace": "default", "name": "other"}}}),
        );
        let free = pv("free", "5Gi", json!({}));
        let claim = pvc("data", "1Gi", json!({}));
        let vols = [reserved.clone(), free];
        assert_eq!(
            claim_step(&claim, &vols, &[], &[], None),
            ClaimStep::Bind("free".into())
        );
        // The claim it is reserved for gets it, though a bigger one is free.
        let other = pvc("other", "1Gi", json!({}));
        assert_eq!(
            claim_step(&other, &vols, &[], &[], None),
            ClaimStep::Bind("res".into())
        );
        // A claim naming a volume waits for exactly that one.
        let named = pvc("data", "1Gi", json!({"spec": {"volumeName": "res"}}));
        assert!(matches!(claim_step(&named, &vols, &[], &[], None),
            ClaimStep::Pending { reason: "FailedBinding", ref message } if message.contains("already bound to a different claim")));
        let named = pvc("data", "1Gi", json!({"spec": {"volumeName": "free"}}));
        assert_eq!(
            claim_step(&named, &vols, &[], &[], None),
            ClaimStep::Bind("free".into())
        );
    }

    #[test]
    fn wait_for_first_consumer_provisions_on_the_pods_node() {
        let class = local_path_class();
        let mut claim = pvc("www-web-0", "1Gi", json!({}));
        claim.spec.as_mut().unwrap().storage_class_name = None;
        let classes = [class.clone()];
        let nodes = [node("n1")];
        assert_eq!(
            claim_step(&claim, &[], &classes, &nodes, None),
            ClaimStep::SetClass("local-path".into())
        );
        claim.spec.as_mut().unwrap().storage_class_name = Some("local-path".into());
        assert!(matches!(
            claim_step(&claim, &[], &classes, &nodes, None),
            ClaimStep::Pending {
                reason: "WaitForFirstConsumer",
                ..
            }
        ));
        assert_eq!(
            claim_step(&claim, &[], &classes, &nodes, Some("n1")),
            ClaimStep::SelectNode("n1".into())
        );
        // The scheduler pre-bound a free volume on the node it chose.
        let mut chosen = pv(
            "disk-n1",
            "1Gi",
            json!({"spec": {"storageClassName": "local-path"}}),
        );
        chosen.spec.as_mut().unwrap().claim_ref = Some(claim_ref(&claim));
        assert_eq!(
            claim_step(&claim, &[chosen], &classes, &nodes, None),
            ClaimStep::Bind("disk-n1".into())
        );
        claim.metadata.annotations = Some([(SELECTED_NODE.to_owned(), "n1".to_owned())].into());
        assert_eq!(
            claim_step(&claim, &[], &classes, &nodes, None),
            ClaimStep::Provision { node: "n1".into() }
        );
        let made = provisioned_volume(&claim, &class, "n1", Some(&nodes[0]));
        assert_eq!(made.metadata.name.as_deref(), Some("pvc-uid-www-web-0"));
        let spec = made.spec.as_ref().unwrap();
        assert_eq!(
            spec.host_path.as_ref().unwrap().path,
            "/var/lib/kubelet/storage/pvc-uid-www-web-0_default_www-web-0"
        );
        assert!(volume_fits_node(&made, &nodes[0]));
        assert!(!volume_fits_node(&made, &node("n2")));
        assert!(claim_ref_is(&made, &claim));
        // A local volume on another node is not bound to a claim whose pod went to n1.
        let elsewhere = pv(
            "local-n2",
            "5Gi",
            json!({"spec": {"storageClassName": "local-path",
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}]}}}}),
        );
        assert_eq!(
            claim_step(&claim, &[elsewhere.clone()], &classes, &nodes, None),
            ClaimStep::Provision { node: "n1".into() }
        );
        // A node the controller does not know yet still gets the volume.
        assert_eq!(
            claim_step(&claim, &[elsewhere], &classes, &[node("n2")], None),
            ClaimStep::Provision { node: "n1".into() }
        );
    }

    #[test]
    fn volumes_move_through_their_phases() {
        let claim = pvc("data", "1Gi", json!({"spec": {"volumeName": "pv0"}}));
        let free = pv("pv0", "1Gi", json!({"status": {"phase": "Pending"}}));
        assert_eq!(volume_step(&free, None), VolumeStep::Phase("Available"));
        let bound = pv(
            "pv0",
            "1Gi",
            json!({"spec": {"claimRef": {"namespace": "default", "name": "data", "uid": "uid-data"}}}),
        );
        assert_eq!(
            volume_step(&bound, Some(&claim)),
            VolumeStep::Phase("Bound")
        );
        assert_eq!(volume_step(&bound, None), VolumeStep::Phase("Released"));
        let released = pv(
            "pv0",
            "1Gi",
            json!({"spec": {"claimRef": {"namespace": "default", "name": "data", "uid": "uid-data"}},
            "status": {"phase": "Released"}}),
        );
        assert_eq!(
            volume_step(&released, None),
            VolumeStep::Wait,
            "Retain keeps it"
        );
        let mut delete = released.clone();
        delete
            .spec
            .as_mut()
            .unwrap()
            .persistent_volume_reclaim_policy = Some("Delete".into());
        assert_eq!(volume_step(&delete, None), VolumeStep::Delete);
        // A new claim of the same name is not the one it was bound to.
        let mut newer = claim.clone();
        newer.metadata.uid = Some("uid-2".into());
        assert_eq!(volume_step(&delete, Some(&newer)), VolumeStep::Delete);
        // A released volume is not bound again.
        let mut again = released.clone();
        again.spec.as_mut().unwrap().claim_ref = None;
        assert_eq!(
            mismatch(&again, &pvc("x", "1Gi", json!({}))),
            Some("volume is released")
        );
    }
}
