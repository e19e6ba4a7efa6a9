//! Pod volumes on the node, the kubelet's volume manager: each volume
//! prepared in the kubelet's layout under the pod's dir, and each
//! container's `volumeMounts` handed to the runtime as CRI mounts (host
//! path, container path, read-only, propagation), subPaths resolved here.
//! The runtime never sees a volume.
//!
//! - [`plugins`]: emptyDir, hostPath, persistentVolumeClaim, and the
//!   API-backed kinds (configMap, secret, downwardAPI, projected).
//! - [`projection`], [`atomic_writer`]: what API-backed volumes hold, and
//!   how it is written so a reader never sees half of it.
//! - [`ownership`]: `fsGroup`.
//! - [`subpath`]: a subPath looked up and bind-mounted where nothing can swap it.
//! - [`mounts`]: a container's volumeMounts as CRI mounts (pure).

pub mod atomic_writer;
pub mod mounts;
pub mod ownership;
pub mod plugins;
pub mod projection;
pub mod subpath;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::kubeapi::objects::ObjectGetter;
use crate::runtime::cri::Mount;

#[derive(Debug, thiserror::Error)]
pub enum VolumeSetupError {
    #[error(transparent)]
    Volume(#[from] plugins::VolumeError),
    #[error(transparent)]
    SubPath(#[from] subpath::SubPathError),
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
}

/// Prepares pods' volumes on the node, or only pretends to (a hollow node,
/// unit tests): paths are the same, but nothing is created, mounted,
/// written or chowned, so thousands of pods cost nothing on disk.
#[derive(Debug, Clone, Copy, Default)]
pub struct VolumeManager {
    pretend: bool,
}

impl VolumeManager {
    /// Volumes made for real (the agent on a node).
    pub fn on_node() -> Self {
        VolumeManager { pretend: false }
    }

    /// Volumes only described (hollow nodes, unit tests).
    pub fn pretending() -> Self {
        VolumeManager { pretend: true }
    }

    /// The container's mounts, after making sure the pod's volumes and the
    /// container's subPaths exist (idempotent). A missing claim, a bad
    /// subPath or a volume that cannot be made is the error (a
    /// `CreateContainerConfigError`). Blocking.
    pub fn container_mounts(
        &self,
        pod: &Pod,
        pod_dir: &Path,
        container: &Container,
        env: &[(String, String)],
        objects: &dyn ObjectGetter,
    ) -> Result<Vec<Mount>, VolumeSetupError> {
        let volumes = if self.pretend {
            plugins::check_volume_names(pod)?;
            described_volumes(pod, pod_dir)
        } else {
            let claims = plugins::resolve_claims(pod, objects)?;
            plugins::prepare_volumes(pod, pod_dir, &claims)?
        };
        // Each subPath looked up beneath its volume and bind-mounted where
        // nothing in the pod can swap it (a missing one is created, as the kubelet does).
        let mut sub_paths = BTreeMap::new();
        for (i, vm) in container.volume_mounts.iter().flatten().enumerate() {
            let Some(sub) = mounts::sub_path_of(vm, env) else {
                continue;
            };
            mounts::check_sub_path(&container.name, &vm.name, &sub)?;
            let Some(volume_dir) = volumes.get(&vm.name) else {
                continue;
            };
            let target = subpath::target_path(pod_dir, &vm.name, &container.name, i);
            if !self.pretend {
                subpath::prepare(volume_dir, &vm.name, &sub, &target)?;
            }
            sub_paths.insert(i, target);
        }
        Ok(mounts::container_mounts(
            pod, container, &volumes, &sub_paths, env,
        )?)
    }

    /// Writes (or rewrites) the pod's configMap, secret, downwardAPI and
    /// projected volumes; see [`plugins::setup_api_volumes`]. Pretending,
    /// their contents are still computed, so a missing object is reported
    /// the same way. Blocking.
    pub fn setup_api_volumes(
        &self,
        pod: &Pod,
        pod_dir: &Path,
        inputs: &projection::ProjectionInputs,
    ) -> (Vec<plugins::VolumeNote>, Vec<plugins::VolumeError>) {
        plugins::setup_api_volumes(pod, pod_dir, inputs, self.pretend)
    }
}

/// Where each volume of the pod would be, touching nothing.
fn described_volumes(pod: &Pod, pod_dir: &Path) -> BTreeMap<String, PathBuf> {
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    volumes
        .into_iter()
        .flatten()
        .map(|v| {
            let path = match (&v.host_path, projection::plugin_dir(v)) {
                (Some(host), _) => PathBuf::from(&host.path),
                (None, Some(plugin)) => pod_dir.join("volumes").join(plugin).join(&v.name),
                (None, None) if v.persistent_volume_claim.is_some() => {
                    pod_dir.join("volumes/kubernetes.io~pvc").join(&v.name)
                }
                (None, None) => pod_dir
                    .join("volumes/kubernetes.io~empty-dir")
                    .join(&v.name),
            };
            (v.name.clone(), path)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretending_describes_mounts_and_touches_nothing() {
        let pod: Pod = serde_yaml::from_str(
            "
metadata: {name: web, namespace: default, uid: u1}
spec:
  volumes:
  - {name: cache, emptyDir: {medium: Memory}}
  - {name: host, hostPath: {path: /var/log}}
  containers:
  - name: app
    volumeMounts:
    - {name: cache, mountPath: /cache, subPath: a/b}
    - {name: host, mountPath: /logs, readOnly: true}
",
        )
        .unwrap();
        let root = tempfile::tempdir().unwrap();
        let pod_dir = root.path().join("pods/u1");
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let mounts = VolumeManager::pretending()
            .container_mounts(
                &pod,
                &pod_dir,
                c,
                &[],
                &crate::kubeapi::objects::NoApiObjects,
            )
            .unwrap();
        let got: Vec<(&str, PathBuf, bool)> = mounts
            .iter()
            .map(|m| (m.container_path.as_str(), m.host_path.clone(), m.readonly))
            .collect();
        assert_eq!(
            got,
            [
                ("/cache", pod_dir.join("volume-subpaths/cache/app/0"), false),
                ("/logs", PathBuf::from("/var/log"), true),
            ]
        );
        assert!(!pod_dir.exists(), "nothing was made on the node");
    }
}
