//! VolumeBinding (kube-scheduler's `volumebinding` plugin): a pod goes
//! only where its volumes can follow it. A bound claim's volume must
//! accept the node (the PV's `nodeAffinity`); a claim whose class waits for
//! its first consumer must find a free volume that accepts the node, or a
//! provisioner that may make one there; a claim that binds immediately but
//! is not bound yet keeps the pod waiting. For the chosen node,
//! [`find_bindings`] says what PreBind writes: a free volume pre-bound to
//! the claim, or the claim's `volume.kubernetes.io/selected-node`
//! annotation for the provisioner.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;

use super::{Code, CycleState, FilterResult, Plugin, Rejection};
use crate::controllers::persistent_volume_decide::{
    BIND_COMPLETED, SELECTED_NODE, claim_class, find_matching_volume, volume_fits_node,
};
use crate::scheduler::node_info::NodeInfo;

pub const ERR_UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";
pub const ERR_NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
pub const ERR_BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
pub const ERR_PV_NOT_EXIST: &str =
    "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";
/// The provisioner of classes whose volumes are only ever made by hand.
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// The storage objects the scheduler watches.
#[derive(Debug, Default, Clone)]
pub struct VolumeObjects {
    /// Claims by `namespace/name`.
    pub claims: HashMap<String, Arc<PersistentVolumeClaim>>,
    pub volumes: BTreeMap<String, Arc<PersistentVolume>>,
    pub classes: HashMap<String, Arc<StorageClass>>,
}

/// What the filter needs of a pod's claims, computed once per cycle.
#[derive(Debug, Clone, Default)]
pub struct PreFilterState {
    /// The volumes of the fully bound claims (`None`: the volume is gone).
    bound: Vec<Option<Arc<PersistentVolume>>>,
    /// Unbound claims whose class waits for the first consumer.
    delayed: Vec<(Arc<PersistentVolumeClaim>, Option<Arc<StorageClass>>)>,
    /// Every volume, for the delayed claims to choose from.
    candidates: Vec<PersistentVolume>,
}

/// The claims a pod names: `persistentVolumeClaim` volumes and the
/// `<pod>-<volume>` claims of generic ephemeral volumes.
pub fn pod_claim_names(pod: &Pod) -> Vec<String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| {
            if let Some(c) = &v.persistent_volume_claim {
                Some(c.claim_name.clone())
            } else {
                v.ephemeral
                    .as_ref()
                    .map(|_| format!("{pod_name}-{}", v.name))
            }
        })
        .collect()
}

/// `isPVCFullyBound`: bound by the PV controller, not just named.
pub fn fully_bound(claim: &PersistentVolumeClaim) -> bool {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_some_and(|v| !v.is_empty())
        && claim
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(BIND_COMPLETED))
}

fn waits_for_first_consumer(class: Option<&StorageClass>) -> bool {
    class.is_some_and(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"))
}

/// PreFilter: `None` when the pod has no claims (the plugin skips it); a
/// refusal of every node when a claim is missing, being deleted, or binds
/// immediately and is not bound yet.
pub fn pre_filter(pod: &Pod, objects: &VolumeObjects) -> Result<Option<PreFilterState>, Rejection> {
    let names = pod_claim_names(pod);
    if names.is_empty() {
        return Ok(None);
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let refuse = |msg: String| {
        Rejection::new(
            Plugin::VolumeBinding,
            Code::UnschedulableAndUnresolvable,
            msg,
        )
    };
    let mut state = PreFilterState::default();
    let mut immediate = 0;
    for name in names {
        let Some(claim) = objects.claims.get(&format!("{ns}/{name}")) else {
            return Err(refuse(format!("persistentvolumeclaim {name:?} not found")));
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return Err(refuse(format!(
                "persistentvolumeclaim {name:?} is being deleted"
            )));
        }
        if fully_bound(claim) {
            let volume = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref());
            state
                .bound
                .push(volume.and_then(|v| objects.volumes.get(v)).cloned());
            continue;
        }
        let class = objects.classes.get(&claim_class(claim)).cloned();
        if waits_for_first_consumer(class.as_deref()) {
            state.delayed.push((claim.clone(), class));
        } else {
            immediate += 1;
        }
    }
    if immediate > 0 {
        return Err(refuse(ERR_UNBOUND_IMMEDIATE.into()));
    }
    if !state.delayed.is_empty() {
        state.candidates = objects.volumes.values().map(|v| (**v).clone()).collect();
    }
    Ok(Some(state))
}

/// What PreBind writes for a claim once the pod's node is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum VolumeAction {
    /// Pre-bind this free volume to the claim; the PV controller completes
    /// the binding.
    BindVolume {
        volume: String,
        /// The version decided on: two pods never take one volume.
        resource_version: Option<String>,
        claim: Arc<PersistentVolumeClaim>,
    },
    /// Ask the claim's provisioner for a volume on the node
    /// (`volume.kubernetes.io/selected-node`).
    Provision { claim: Arc<PersistentVolumeClaim> },
}

impl VolumeAction {
    pub fn claim(&self) -> &PersistentVolumeClaim {
        match self {
            VolumeAction::BindVolume { claim, .. } | VolumeAction::Provision { claim } => claim,
        }
    }
}

/// `v1helper.MatchTopologySelectorTerms`: no terms match every node.
fn allowed_on(class: &StorageClass, node: &Node) -> bool {
    let Some(terms) = class.allowed_topologies.as_ref().filter(|t| !t.is_empty()) else {
        return true;
    };
    let labels = node.metadata.labels.clone().unwrap_or_default();
    terms.iter().any(|t| {
        t.match_label_expressions
            .iter()
            .flatten()
            .all(|r| labels.get(&r.key).is_some_and(|v| r.values.contains(v)))
    })
}

/// `FindPodVolumes` for one node: the writes that bind the pod's waiting
/// claims there, or the reasons the node cannot take its volumes.
pub fn find_bindings(
    state: &PreFilterState,
    node: &Node,
) -> Result<Vec<VolumeAction>, Vec<String>> {
    if state.bound.iter().any(Option::is_none) {
        return Err(vec![ERR_PV_NOT_EXIST.into()]);
    }
    let bound_ok = state
        .bound
        .iter()
        .flatten()
        .all(|pv| volume_fits_node(pv, node));
    let node_name = node.metadata.name.as_deref().unwrap_or_default();
    let mut unbound_ok = true;
    let mut actions = Vec::new();
    let mut chosen: Vec<String> = Vec::new();
    for (claim, class) in &state.delayed {
        let selected = claim
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SELECTED_NODE));
        if selected.is_none() {
            let free: Vec<PersistentVolume> = state
                .candidates
                .iter()
                .filter(|v| !chosen.iter().any(|c| Some(c) == v.metadata.name.as_ref()))
                .cloned()
                .collect();
            if let Some(pv) = find_matching_volume(claim, &free, Some(node)) {
                let volume = pv.metadata.name.clone().unwrap_or_default();
                chosen.push(volume.clone());
                actions.push(VolumeAction::BindVolume {
                    volume,
                    resource_version: pv.metadata.resource_version.clone(),
                    claim: claim.clone(),
                });
                continue;
            }
        } else if selected.map(String::as_str) != Some(node_name) {
            // Provisioning has started for another node.
            unbound_ok = false;
            break;
        }
        match class {
            Some(c) if c.provisioner != NO_PROVISIONER && allowed_on(c, node) => {
                actions.push(VolumeAction::Provision {
                    claim: claim.clone(),
                });
            }
            _ => {
                unbound_ok = false;
                break;
            }
        }
    }
    let mut reasons = Vec::new();
    if !bound_ok {
        reasons.push(ERR_NODE_CONFLICT.to_owned());
    }
    if !unbound_ok {
        reasons.push(ERR_BIND_CONFLICT.to_owned());
    }
    if reasons.is_empty() {
        Ok(actions)
    } else {
        Err(reasons)
    }
}

pub fn filter(state: &CycleState, node: &NodeInfo) -> FilterResult {
    let Some(pre) = &state.volumes else {
        return Ok(());
    };
    find_bindings(pre, &node.node)
        .map(|_| ())
        .map_err(|reasons| Rejection {
            code: Code::UnschedulableAndUnresolvable,
            plugin: Plugin::VolumeBinding,
            reasons,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::*;
    use serde_json::json;

    fn claim(name: &str, extra: serde_json::Value) -> Arc<PersistentVolumeClaim> {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        });
        merge(&mut v, extra);
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn volume(
        name: &str,
        on_node: Option<&str>,
        extra: serde_json::Value,
    ) -> Arc<PersistentVolume> {
        let mut v = json!({
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
                     "local": {"path": "/mnt/disk"}},
        });
        if let Some(n) = on_node {
            v["spec"]["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [n]}]}]}});
        }
        merge(&mut v, extra);
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn class(name: &str, mode: &str, provisioner: &str) -> Arc<StorageClass> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name}, "provisioner": provisioner, "volumeBindingMode": mode,
            }))
            .unwrap(),
        )
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

    fn bound_to(volume: &str) -> serde_json::Value {
        json!({"metadata": {"annotations": {BIND_COMPLETED: "yes"}}, "spec": {"volumeName": volume}})
    }

    fn objects(
        claims: &[Arc<PersistentVolumeClaim>],
        volumes: &[Arc<PersistentVolume>],
        classes: &[Arc<StorageClass>],
    ) -> VolumeObjects {
        VolumeObjects {
            claims: claims
                .iter()
                .map(|c| {
                    (
                        format!("default/{}", c.metadata.name.clone().unwrap()),
                        c.clone(),
                    )
                })
                .collect(),
            volumes: volumes
                .iter()
                .map(|v| (v.metadata.name.clone().unwrap(), v.clone()))
                .collect(),
            classes: classes
                .iter()
                .map(|c| (c.metadata.name.clone().unwrap(), c.clone()))
                .collect(),
        }
    }

    fn using(claims: &[&str]) -> Pod {
        let mut p = pod("p", "", "");
        p.spec.as_mut().unwrap().volumes = Some(
            claims
                .iter()
                .map(|c| {
                    serde_json::from_value(
                        json!({"name": c, "persistentVolumeClaim": {"claimName": c}}),
                    )
                    .unwrap()
                })
                .collect(),
        );
        p
    }

    fn nodes() -> [Node; 2] {
        [node("n1", "1", "1Gi", &[]), node("n2", "1", "1Gi", &[])]
    }

    #[test]
    fn a_bound_claim_keeps_the_pod_on_its_volumes_node() {
        let o = objects(
            &[claim("data", bound_to("pv-n2"))],
            &[volume("pv-n2", Some("n2"), json!({}))],
            &[],
        );
        let pre = pre_filter(&using(&["data"]), &o).unwrap().unwrap();
        let [n1, n2] = nodes();
        assert_eq!(
            find_bindings(&pre, &n1),
            Err(vec![ERR_NODE_CONFLICT.to_owned()])
        );
        assert_eq!(find_bindings(&pre, &n2), Ok(vec![]));

        // A volume without node affinity goes anywhere; a missing one nowhere.
        let o = objects(
            &[
                claim("a", bound_to("anywhere")),
                claim("b", bound_to("gone")),
            ],
            &[volume("anywhere", None, json!({}))],
            &[],
        );
        let pre = pre_filter(&using(&["a"]), &o).unwrap().unwrap();
        assert_eq!(find_bindings(&pre, &n1), Ok(vec![]));
        let pre = pre_filter(&using(&["a", "b"]), &o).unwrap().unwrap();
        assert_eq!(
            find_bindings(&pre, &n1),
            Err(vec![ERR_PV_NOT_EXIST.to_owned()])
        );
    }

    #[test]
    fn missing_deleted_and_unbound_immediate_claims_refuse_every_node() {
        let o = objects(
            &[
                claim("pending", json!({})),
                claim(
                    "going",
                    json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}}),
                ),
            ],
            &[],
            &[class("slow", "Immediate", "example.com/nas")],
        );
        let reason = |p: &Pod| pre_filter(p, &o).unwrap_err().reasons;
        assert_eq!(
            reason(&using(&["nope"])),
            vec![r#"persistentvolumeclaim "nope" not found"#]
        );
        assert_eq!(
            reason(&using(&["going"])),
            vec![r#"persistentvolumeclaim "going" is being deleted"#]
        );
        assert_eq!(reason(&using(&["pending"])), vec![ERR_UNBOUND_IMMEDIATE]);
        assert_eq!(
            pre_filter(&using(&["nope"]), &o).unwrap_err().code,
            Code::UnschedulableAndUnresolvable
        );
        assert!(pre_filter(&pod("plain", "", ""), &o).unwrap().is_none());
    }

    #[test]
    fn a_waiting_claim_takes_a_free_volume_on_the_node_or_is_provisioned_there() {
        let wait = class("local", "WaitForFirstConsumer", NO_PROVISIONER);
        let local_path = class(
            "local-path",
            "WaitForFirstConsumer",
            "kubelab.io/local-path",
        );
        let pvc = claim("data", json!({"spec": {"storageClassName": "local"}}));
        let o = objects(
            &[
                pvc.clone(),
                claim("fresh", json!({"spec": {"storageClassName": "local-path"}})),
            ],
            &[volume(
                "disk-n2",
                Some("n2"),
                json!({"spec": {"storageClassName": "local"}}),
            )],
            &[wait, local_path],
        );
        let [n1, n2] = nodes();
        let pre = pre_filter(&using(&["data"]), &o).unwrap().unwrap();
        assert_eq!(
            find_bindings(&pre, &n1),
            Err(vec![ERR_BIND_CONFLICT.to_owned()])
        );
        assert_eq!(
            find_bindings(&pre, &n2),
            Ok(vec![VolumeAction::BindVolume {
                volume: "disk-n2".into(),
                resource_version: None,
                claim: pvc
            }])
        );
        let pre = pre_filter(&using(&["fresh"]), &o).unwrap().unwrap();
        let actions = find_bindings(&pre, &n1).unwrap();
        assert!(
            matches!(&actions[..], [VolumeAction::Provision { claim }] if claim.metadata.name.as_deref() == Some("fresh"))
        );
    }

    #[test]
    fn two_claims_of_one_pod_do_not_share_a_volume() {
        let wait = class("local", "WaitForFirstConsumer", NO_PROVISIONER);
        let o = objects(
            &[
                claim("a", json!({"spec": {"storageClassName": "local"}})),
                claim("b", json!({"spec": {"storageClassName": "local"}})),
            ],
            &[
                volume(
                    "one-n1",
                    Some("n1"),
                    json!({"spec": {"storageClassName": "local"}}),
                ),
                volume(
                    "one-n2",
                    Some("n2"),
                    json!({"spec": {"storageClassName": "local"}}),
                ),
                volume(
                    "two-n2",
                    Some("n2"),
                    json!({"spec": {"storageClassName": "local"}}),
                ),
            ],
            &[wait],
        );
        let [n1, n2] = nodes();
        let pre = pre_filter(&using(&["a", "b"]), &o).unwrap().unwrap();
        assert_eq!(
            find_bindings(&pre, &n1),
            Err(vec![ERR_BIND_CONFLICT.to_owned()])
        );
        let volumes: Vec<String> = find_bindings(&pre, &n2)
            .unwrap()
            .iter()
            .map(|a| match a {
                VolumeAction::BindVolume { volume, .. } => volume.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(volumes, vec!["one-n2", "two-n2"]);
    }

    #[test]
    fn a_claim_already_provisioning_on_a_node_and_allowed_topologies_limit_the_nodes() {
        let zoned: Arc<StorageClass> = Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "zoned"}, "provisioner": "kubelab.io/local-path",
                "volumeBindingMode": "WaitForFirstConsumer",
                "allowedTopologies": [{"matchLabelExpressions": [
                    {"key": "kubernetes.io/hostname", "values": ["n2"]}]}],
            }))
            .unwrap(),
        );
        let local_path = class(
            "local-path",
            "WaitForFirstConsumer",
            "kubelab.io/local-path",
        );
        let o = objects(
            &[
                claim("z", json!({"spec": {"storageClassName": "zoned"}})),
                claim(
                    "started",
                    json!({"metadata": {"annotations": {SELECTED_NODE: "n1"}},
                                        "spec": {"storageClassName": "local-path"}}),
                ),
            ],
            &[],
            &[zoned, local_path],
        );
        let [n1, n2] = nodes();
        let pre = pre_filter(&using(&["z"]), &o).unwrap().unwrap();
        assert!(find_bindings(&pre, &n1).is_err());
        assert!(find_bindings(&pre, &n2).is_ok());
        let pre = pre_filter(&using(&["started"]), &o).unwrap().unwrap();
        assert!(find_bindings(&pre, &n1).is_ok());
        assert_eq!(
            find_bindings(&pre, &n2),
            Err(vec![ERR_BIND_CONFLICT.to_owned()])
        );
    }
}
