//! Reclaiming a local-path volume whose policy says Delete, the way
//! rancher's local-path-provisioner does it: a helper pod on the volume's
//! node mounts the class directory and removes the volume's directory;
//! once it has succeeded, the volume object goes. The volume carries the
//! external provisioner's deletion-protection finalizer
//! (`HonorPVReclaimPolicy`) from its creation until its directory is gone,
//! so deleting the volume object first still removes the data.
//!
//! Pure: which helper pod, and what its state means.

use k8s_openapi::api::core::v1::{
    Container, HostPathVolumeSource, Node, PersistentVolume, Pod, PodSpec, Toleration, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::persistent_volume_decide::{
    DEFAULT_LOCAL_PATH_DIR, HOSTNAME_LABEL, LOCAL_PATH_DIR_ANNOTATION, LOCAL_PATH_PROVISIONER,
    PROVISIONED_BY,
};

/// Held by a provisioned volume until its storage is deleted
/// (`external-provisioner.volume.kubernetes.io/finalizer`).
pub const DELETION_PROTECTION_FINALIZER: &str =
    "external-provisioner.volume.kubernetes.io/finalizer";
/// Where helper pods run.
pub const HELPER_NAMESPACE: &str = "kube-system";
/// The helper's image (the provisioner's default `helperImage`).
pub const HELPER_IMAGE: &str = "busybox";
const HELPER_PREFIX: &str = "helper-pod-delete-";
const HELPER_CONTAINER: &str = "helper-pod";

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ReclaimError {
    #[error("failed to delete volume {volume}: it has no hostPath")]
    NoPath { volume: String },
    #[error("failed to delete volume {volume}: no node in its node affinity")]
    NoNode { volume: String },
    #[error(
        "failed to delete volume {volume}: path {path:?} is not a volume directory under the node's local-path directory {dir:?}"
    )]
    OutsideLocalPath {
        volume: String,
        path: String,
        dir: String,
    },
    #[error("failed to delete volume {volume}: {why}")]
    HelperFailed { volume: String, why: String },
}

/// `helper-pod-delete-<volume>`.
pub fn helper_pod_name(volume: &str) -> String {
    format!("{HELPER_PREFIX}{volume}")
}

/// The volume a helper pod works for, from its namespace and name.
pub fn volume_of_helper<'a>(namespace: Option<&str>, name: &'a str) -> Option<&'a str> {
    (namespace == Some(HELPER_NAMESPACE))
        .then(|| name.strip_prefix(HELPER_PREFIX))
        .flatten()
}

/// Whether the volume was made by the local-path provisioner and its
/// directory is still there (the finalizer is lifted once it is gone).
pub fn directory_pending(pv: &PersistentVolume) -> bool {
    let ours = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROVISIONED_BY))
        .is_some_and(|p| p == LOCAL_PATH_PROVISIONER);
    ours && pv
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == DELETION_PROTECTION_FINALIZER)
}

/// What to do with a volume holding the deletion-protection finalizer.
#[derive(Debug, PartialEq)]
pub enum Reclaim {
    /// Still bound, or not yet released: nothing yet.
    NotYet,
    /// Its policy keeps the data: lift the finalizer without touching it.
    Keep,
    /// Released with policy Delete: remove the directory.
    RemoveDirectory,
}

pub fn reclaim(pv: &PersistentVolume) -> Reclaim {
    let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
    let policy = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref());
    let released = matches!(phase, Some("Released" | "Failed"));
    let unclaimed = pv
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .is_none()
        && phase != Some("Bound");
    match policy {
        Some("Delete") if released => Reclaim::RemoveDirectory,
        // Deleted by hand before anyone claimed it: nothing to keep.
        Some("Delete") if unclaimed && pv.metadata.deletion_timestamp.is_some() => {
            Reclaim::RemoveDirectory
        }
        Some("Delete") => Reclaim::NotYet,
        _ if pv.metadata.deletion_timestamp.is_some() && phase != Some("Bound") => Reclaim::Keep,
        _ => Reclaim::NotYet,
    }
}

/// The node a local-path volume lives on: the node whose hostname label
/// its node affinity names (the label is the name when no node says).
pub fn volume_node<'a>(pv: &'a PersistentVolume, nodes: &'a [Node]) -> Option<&'a str> {
    let hostname = pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_expressions.iter().flatten())
        .find(|e| e.key == HOSTNAME_LABEL && e.operator == "In")?
        .values
        .as_ref()?
        .first()?;
    let by_label = nodes.iter().find(|n| {
        n.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(HOSTNAME_LABEL))
            == Some(hostname)
    });
    Some(
        by_label
            .and_then(|n| n.metadata.name.as_deref())
            .unwrap_or(hostname),
    )
}

/// The helper pod that removes the volume's directory on `node_name`:
/// the node's local-path directory mounted at its own path, `rm -rf` of
/// the volume's directory in it. Refuses a path that is not a volume
/// directory right under the node's local-path directory, so a volume
/// made by hand cannot have any other directory of the node removed.
pub fn helper_pod(
    pv: &PersistentVolume,
    node_name: &str,
    node: Option<&Node>,
) -> Result<Pod, ReclaimError> {
    let volume = pv.metadata.name.clone().unwrap_or_default();
    let path = pv
        .spec
        .as_ref()
        .and_then(|s| s.host_path.as_ref())
        .map(|h| h.path.clone())
        .ok_or_else(|| ReclaimError::NoPath {
            volume: volume.clone(),
        })?;
    let dir = node
        .and_then(|n| n.metadata.annotations.as_ref())
        .and_then(|a| a.get(LOCAL_PATH_DIR_ANNOTATION))
        .cloned()
        .unwrap_or_else(|| DEFAULT_LOCAL_PATH_DIR.into());
    let dir = dir.trim_end_matches('/').to_owned();
    let base = path
        .strip_prefix(&dir)
        .and_then(|rest| rest.strip_prefix('/'));
    let valid = dir.starts_with('/')
        && base.is_some_and(|b| {
            b.starts_with(&format!("{volume}_")) && !b.contains('/') && !b.contains("..")
        });
    if !valid {
        return Err(ReclaimError::OutsideLocalPath { volume, path, dir });
    }
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(helper_pod_name(&volume)),
            namespace: Some(HELPER_NAMESPACE.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node_name.into()),
            restart_policy: Some("Never".into()),
            termination_grace_period_seconds: Some(1),
            // Cleaning up must work on a tainted node too.
            tolerations: Some(vec![Toleration {
                operator: Some("Exists".into()),
                ..Default::default()
            }]),
            containers: vec![Container {
                name: HELPER_CONTAINER.into(),
                image: Some(HELPER_IMAGE.into()),
                image_pull_policy: Some("IfNotPresent".into()),
                command: Some(vec!["rm".into(), "-rf".into(), path]),
                volume_mounts: Some(vec![VolumeMount {
                    name: "data".into(),
                    mount_path: dir.clone(),
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            volumes: Some(vec![Volume {
                name: "data".into(),
                host_path: Some(HostPathVolumeSource {
                    path: dir,
                    type_: Some("DirectoryOrCreate".into()),
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    })
}

/// Where the helper pod is.
#[derive(Debug, PartialEq)]
pub enum HelperState {
    /// None yet: start it.
    Absent,
    Running,
    Succeeded,
    /// It failed; why, in the words of its container's status.
    Failed(String),
}

pub fn helper_state(helper: Option<&Pod>) -> HelperState {
    let Some(pod) = helper else {
        return HelperState::Absent;
    };
    let status = pod.status.as_ref();
    match status.and_then(|s| s.phase.as_deref()) {
        Some("Succeeded") => HelperState::Succeeded,
        Some("Failed") => {
            let terminated = status
                .and_then(|s| s.container_statuses.as_ref())
                .into_iter()
                .flatten()
                .find_map(|c| c.state.as_ref()?.terminated.as_ref());
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            HelperState::Failed(match terminated {
                Some(t) => format!(
                    "helper pod {name} failed: exit code {}{}{}",
                    t.exit_code,
                    t.reason
                        .as_deref()
                        .map(|r| format!(", reason {r}"))
                        .unwrap_or_default(),
                    t.message
                        .as_deref()
                        .map(|m| format!(": {}", m.trim()))
                        .unwrap_or_default()
                ),
                None => format!(
                    "helper pod {name} failed: {}",
                    status
                        .and_then(|s| s.message.as_deref())
                        .unwrap_or("no container status")
                ),
            })
        }
        _ => HelperState::Running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A bound local-path volume, changed by `edit` first.
    fn volume(edit: impl FnOnce(&mut serde_json::Value)) -> PersistentVolume {
        let mut v = json!({
            "metadata": {"name": "pvc-1",
                "annotations": {PROVISIONED_BY: LOCAL_PATH_PROVISIONER},
                "finalizers": ["kubernetes.io/pv-protection", DELETION_PROTECTION_FINALIZER]},
            "spec": {"persistentVolumeReclaimPolicy": "Delete",
                "hostPath": {"path": "/var/lib/kubelet/storage/pvc-1_default_data"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["host-a"]}]}]}}},
            "status": {"phase": "Bound"}});
        edit(&mut v);
        serde_json::from_value(v).unwrap()
    }

    fn node() -> Node {
        serde_json::from_value(json!({"metadata": {"name": "node-a",
            "labels": {"kubernetes.io/hostname": "host-a"},
            "annotations": {LOCAL_PATH_DIR_ANNOTATION: "/var/lib/kubelet/storage/"}}}))
        .unwrap()
    }

    #[test]
    fn a_released_volume_with_policy_delete_has_its_directory_removed() {
        let bound = volume(|_| {});
        assert!(directory_pending(&bound));
        assert_eq!(reclaim(&bound), Reclaim::NotYet);
        let released = volume(|v| v["status"]["phase"] = json!("Released"));
        assert_eq!(reclaim(&released), Reclaim::RemoveDirectory);
        let retain = |v: &mut serde_json::Value| {
            v["spec"]["persistentVolumeReclaimPolicy"] = json!("Retain");
            v["status"]["phase"] = json!("Released");
        };
        assert_eq!(reclaim(&volume(retain)), Reclaim::NotYet);
        let deleted_retained = volume(|v| {
            retain(v);
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        });
        assert_eq!(reclaim(&deleted_retained), Reclaim::Keep);
        let made_by_hand = volume(|v| v["metadata"]["annotations"] = json!(null));
        assert!(!directory_pending(&made_by_hand));
    }

    #[test]
    fn the_helper_removes_only_the_volume_directory_on_its_node() {
        let nodes = [node()];
        let pv = volume(|_| {});
        assert_eq!(volume_node(&pv, &nodes), Some("node-a"));
        assert_eq!(volume_node(&pv, &[]), Some("host-a"));
        let pod = helper_pod(&pv, "node-a", Some(&nodes[0])).unwrap();
        assert_eq!(
            pod.metadata.name.as_deref(),
            Some("helper-pod-delete-pvc-1")
        );
        assert_eq!(
            volume_of_helper(Some("kube-system"), "helper-pod-delete-pvc-1"),
            Some("pvc-1")
        );
        assert_eq!(
            volume_of_helper(Some("default"), "helper-pod-delete-pvc-1"),
            None
        );
        let spec = pod.spec.unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("node-a"));
        let c = &spec.containers[0];
        assert_eq!(
            c.command.as_deref().unwrap(),
            ["rm", "-rf", "/var/lib/kubelet/storage/pvc-1_default_data"]
        );
        assert_eq!(
            c.volume_mounts.as_ref().unwrap()[0].mount_path,
            "/var/lib/kubelet/storage"
        );
        for path in [
            "/etc",
            "/var/lib/kubelet/storage",
            "/var/lib/kubelet/storage/pvc-2_default_data",
            "/var/lib/kubelet/storage/pvc-1_x/../../etc",
            "/var/lib/kubelet/storage-other/pvc-1_default_data",
        ] {
            let pv = volume(|v| v["spec"]["hostPath"]["path"] = json!(path));
            assert!(
                matches!(
                    helper_pod(&pv, "node-a", Some(&nodes[0])),
                    Err(ReclaimError::OutsideLocalPath { .. })
                ),
                "{path}"
            );
        }
    }

    #[test]
    fn a_failed_helper_says_why() {
        assert_eq!(helper_state(None), HelperState::Absent);
        let pod = |status: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "helper-pod-delete-pvc-1"},
                "status": status}))
            .unwrap()
        };
        assert_eq!(
            helper_state(Some(&pod(json!({"phase": "Running"})))),
            HelperState::Running
        );
        assert_eq!(
            helper_state(Some(&pod(json!({"phase": "Succeeded"})))),
            HelperState::Succeeded
        );
        let failed = pod(json!({"phase": "Failed", "containerStatuses": [{
            "name": "helper-pod", "image": "busybox", "imageID": "", "ready": false,
            "restartCount": 0,
            "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}));
        assert_eq!(
            helper_state(Some(&failed)),
            HelperState::Failed(
                "helper pod helper-pod-delete-pvc-1 failed: exit code 1, reason Error".into()
            )
        );
    }
}
