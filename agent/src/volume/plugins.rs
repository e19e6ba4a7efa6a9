//! Pod volumes in kubelet's layout, `<pod dir>/volumes/<plugin>/<name>`:
//! `emptyDir` (a dir, or a tmpfs for `medium: Memory`), `hostPath` (with its
//! `type` checks), and the volumes made from API objects and the pod itself:
//! `configMap`, `secret`, `downwardAPI` and `projected`, written with the
//! [`atomic_writer`](super::atomic_writer) (secret and projected ones on a
//! tmpfs) and rewritten in place when their objects change;
//! `persistentVolumeClaim` volumes resolve through the claim to its bound
//! PersistentVolume, whose `hostPath` or `local` directory is used as a
//! hostPath volume is. Other kinds (NFS, ...) are refused by name.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{HostPathVolumeSource, PersistentVolume, Pod, Volume};
use nix::mount::{MsFlags, mount};

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {name:?}: {kind} volumes are not supported on this node yet")]
    Unsupported { name: String, kind: &'static str },
    #[error("volume {name:?}: hostPath {path:?} {problem}")]
    HostPathType {
        name: String,
        path: String,
        problem: String,
    },
    #[error("volume {name:?}: preparing {path}: {source}")]
    Io {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("volume {name:?}: sizeLimit: {source}")]
    Size {
        name: String,
        #[source]
        source: crate::quantity::QuantityError,
    },
    /// A name that is not a DNS label would be a path on the node.
    #[error("spec.volumes[{index}].name: Invalid value: {name:?}: {detail}")]
    InvalidName {
        index: usize,
        name: String,
        detail: String,
    },
    #[error("volume {name:?}: {source}")]
    Ownership {
        name: String,
        #[source]
        source: super::ownership::OwnershipError,
    },
    /// The claim is missing, unbound or its volume is not there (yet).
    #[error("{0}")]
    Claim(String),
    /// The kubelet's `FailedMount` wording.
    #[error("MountVolume.SetUp failed for volume {name:?} : {message}")]
    SetUp { name: String, message: String },
}

fn kind_of(v: &Volume) -> &'static str {
    if v.config_map.is_some() {
        "configMap"
    } else if v.secret.is_some() {
        "secret"
    } else if v.persistent_volume_claim.is_some() {
        "persistentVolumeClaim"
    } else if v.projected.is_some() {
        "projected"
    } else if v.downward_api.is_some() {
        "downwardAPI"
    } else if v.nfs.is_some() {
        "nfs"
    } else {
        "this kind of"
    }
}

fn is_mounted(path: &Path) -> bool {
    let target = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(&*target)))
        .unwrap_or(false)
}

/// Creates (idempotently) every volume of the pod and returns where each is
/// on the node, by volume name.
pub fn prepare_volumes(
    pod: &Pod,
    pod_dir: &Path,
    claims: &BTreeMap<String, std::sync::Arc<PersistentVolume>>,
) -> Result<BTreeMap<String, PathBuf>, VolumeError> {
    let mut out = BTreeMap::new();
    check_volume_names(pod)?;
    let fs_group = super::ownership::fs_group(pod);
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    for v in volumes.into_iter().flatten() {
        let name = v.name.clone();
        let io = |path: &Path| {
            let (name, path) = (name.clone(), path.to_path_buf());
            move |source| VolumeError::Io { name, path, source }
        };
        if let Some(empty) = &v.empty_dir {
            let dir = pod_dir.join("volumes/kubernetes.io~empty-dir").join(&name);
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            // Any user in any container of the pod may write it, as on Kubernetes.
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .map_err(io(&dir))?;
            if empty.medium.as_deref() == Some("Memory") && !is_mounted(&dir) {
                let size_limit =
                    match &empty.size_limit {
                        Some(limit) => Some(crate::quantity::bytes(limit).map_err(|source| {
                            VolumeError::Size {
                                name: name.clone(),
                                source,
                            }
                        })?),
                        None => None,
                    };
                let size = memory_volume_size(
                    crate::host::memory_total() as i64,
                    pod_memory_limit(pod),
                    size_limit,
                );
                let data = format!("mode=1777,size={size}");
                mount(
                    Some("tmpfs"),
                    &dir,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some(data.as_str()),
                )
                .map_err(|e| io(&dir)(std::io::Error::from(e)))?;
            }
            if let Some(group) = fs_group
                && super::ownership::needs_ownership(&dir, group, false)
            {
                super::ownership::set_volume_ownership(&dir, group, false).map_err(|e| {
                    VolumeError::Ownership {
                        name: name.clone(),
                        source: e,
                    }
                })?;
            }
            out.insert(name, dir);
        } else if let Some(host) = &v.host_path {
            out.insert(name.clone(), host_path_volume(&name, host)?);
        } else if v.persistent_volume_claim.is_some() {
            let Some(pv) = claims.get(&name) else {
                return Err(VolumeError::Claim(format!(
                    "volume {name:?}: its claim is not resolved"
                )));
            };
            out.insert(name.clone(), claimed_volume(&name, pv)?);
        } else if let Some(plugin) = super::projection::plugin_dir(v) {
            // Written by `setup_api_volumes` before any container starts.
            out.insert(
                name.clone(),
                pod_dir.join("volumes").join(plugin).join(&name),
            );
        } else {
            return Err(VolumeError::Unsupported {
                name,
                kind: kind_of(v),
            });
        }
    }
    Ok(out)
}

/// A hostPath volume's directory on the node, after its `type` checks
/// (creating it for the `...OrCreate` types).
fn host_path_volume(name: &str, host: &HostPathVolumeSource) -> Result<PathBuf, VolumeError> {
    let path = PathBuf::from(&host.path);
    let kind = host.type_.as_deref().unwrap_or("");
    let meta = std::fs::metadata(&path).ok();
    let io = |source| VolumeError::Io {
        name: name.to_owned(),
        path: path.clone(),
        source,
    };
    let problem = |p: &str| VolumeError::HostPathType {
        name: name.to_owned(),
        path: host.path.clone(),
        problem: p.to_string(),
    };
    match kind {
        "" => {}
        "DirectoryOrCreate" => {
            if meta.is_none() {
                std::fs::create_dir_all(&path).map_err(io)?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    .map_err(io)?;
            }
        }
        "FileOrCreate" => {
            if meta.is_none() {
                std::fs::write(&path, b"").map_err(io)?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                    .map_err(io)?;
            }
        }
        "Directory" if !meta.as_ref().is_some_and(|m| m.is_dir()) => {
            return Err(problem("is not a directory"));
        }
        "File" if !meta.as_ref().is_some_and(|m| m.is_file()) => {
            return Err(problem("is not a file"));
        }
        "Socket" if !meta.as_ref().is_some_and(|m| m.file_type().is_socket()) => {
            return Err(problem("is not a socket"));
        }
        "CharDevice"
            if !meta
                .as_ref()
                .is_some_and(|m| m.file_type().is_char_device()) =>
        {
            return Err(problem("is not a character device"));
        }
        "BlockDevice"
            if !meta
                .as_ref()
                .is_some_and(|m| m.file_type().is_block_device()) =>
        {
            return Err(problem("is not a block device"));
        }
        "Directory" | "File" | "Socket" | "CharDevice" | "BlockDevice" => {}
        other => return Err(problem(&format!("has an unknown type {other:?}"))),
    }
    Ok(path)
}

/// The directory of a claim's bound volume: a `hostPath` one as a
/// hostPath volume, a `local` one only if its directory is there. Either
/// path must be absolute and free of `..`, as the apiserver requires.
fn claimed_volume(name: &str, pv: &PersistentVolume) -> Result<PathBuf, VolumeError> {
    let pv_name = pv.metadata.name.clone().unwrap_or_default();
    let spec = pv.spec.clone().unwrap_or_default();
    let path = match (&spec.host_path, &spec.local) {
        (Some(h), _) => &h.path,
        (None, Some(l)) => &l.path,
        (None, None) => {
            return Err(VolumeError::Claim(format!(
                "volume {name:?}: persistentvolume {pv_name:?} has a volume type this node cannot mount"
            )));
        }
    };
    if !path.starts_with('/') || path.split('/').any(|p| p == "..") {
        return Err(VolumeError::Claim(format!(
            "volume {name:?}: persistentvolume {pv_name:?} path {path:?} must be absolute without '..'"
        )));
    }
    match (&spec.host_path, &spec.local) {
        (Some(h), _) => host_path_volume(name, h),
        _ if Path::new(path).is_dir() => Ok(PathBuf::from(path)),
        _ => Err(VolumeError::Claim(format!(
            "MountVolume.NewMounter initialization failed for volume {pv_name:?} : path {path:?} does not exist"
        ))),
    }
}

/// The kubelet's claim lookup (`getPVCExtractPV`): each
/// `persistentVolumeClaim` volume's bound PersistentVolume, by volume
/// name; a claim that is missing, being deleted or not bound yet is an
/// error worded as the kubelet's, and the pod waits.
pub fn resolve_claims(
    pod: &Pod,
    objects: &dyn crate::kubeapi::objects::ObjectGetter,
) -> Result<BTreeMap<String, std::sync::Arc<PersistentVolume>>, VolumeError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = BTreeMap::new();
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    for v in volumes.into_iter().flatten() {
        let Some(source) = &v.persistent_volume_claim else {
            continue;
        };
        let claim = objects
            .persistent_volume_claim(ns, &source.claim_name)
            .map_err(|e| {
                VolumeError::Claim(format!(
                    "error processing PVC {ns}/{}: {e}",
                    source.claim_name
                ))
            })?;
        if claim.metadata.deletion_timestamp.is_some() {
            return Err(VolumeError::Claim(format!(
                "error processing PVC {ns}/{}: PVC is being deleted",
                source.claim_name
            )));
        }
        let phase = claim
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let volume_name = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .unwrap_or_default();
        if phase != "Bound" || volume_name.is_empty() {
            return Err(VolumeError::Claim(format!(
                "PVC {ns}/{} has non-bound phase ({phase:?}) or empty pvc.Spec.VolumeName ({volume_name:?})",
                source.claim_name
            )));
        }
        let pv = objects.persistent_volume(&volume_name).map_err(|e| {
            VolumeError::Claim(format!(
                "error processing PVC {ns}/{}: {e}",
                source.claim_name
            ))
        })?;
        out.insert(v.name.clone(), pv);
    }
    Ok(out)
}

/// Every volume name is a DNS label: it becomes a directory name under the
/// pod's dir, so `../../x` must never reach the filesystem.
pub fn check_volume_names(pod: &Pod) -> Result<(), VolumeError> {
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    for (index, v) in volumes.into_iter().flatten().enumerate() {
        if let Err(detail) = crate::config::manifest::check_dns1123_label(&v.name) {
            return Err(VolumeError::InvalidName {
                index,
                name: v.name.clone(),
                detail,
            });
        }
    }
    Ok(())
}

/// The pod cgroup's memory limit (`None`: unlimited).
fn pod_memory_limit(pod: &Pod) -> Option<i64> {
    let spec = pod.spec.as_ref()?;
    crate::cgroups::CgroupLimits::for_pod(spec, None)
        .ok()?
        .memory_limit_bytes
}

/// kubelet's `calculateEmptyDirMemorySize`: a memory-backed emptyDir is as
/// large as the node's memory, or the pod's memory limit if smaller, or its
/// own `sizeLimit` if smaller still. Its pages are charged to the memory
/// cgroup of whoever writes them, so the pod's limit bounds it either way.
pub fn memory_volume_size(
    node_memory: i64,
    pod_limit: Option<i64>,
    size_limit: Option<i64>,
) -> i64 {
    let mut size = node_memory;
    if let Some(limit) = pod_limit.filter(|l| *l > 0 && *l <= size) {
        size = limit;
    }
    if let Some(limit) = size_limit.filter(|l| *l > 0 && *l <= size) {
        size = limit;
    }
    size
}

/// A problem worth an Event that did not stop a volume (a projected source skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeNote {
    pub volume: String,
    pub message: String,
}

/// Writes (or rewrites, when their objects changed) every configMap, secret,
/// downwardAPI and projected volume of the pod. A volume that fails is
/// reported and the others are still written. `pretend`: contents are
/// computed (and their errors reported) but nothing is written.
pub fn setup_api_volumes(
    pod: &Pod,
    pod_dir: &Path,
    inputs: &super::projection::ProjectionInputs,
    pretend: bool,
) -> (Vec<VolumeNote>, Vec<VolumeError>) {
    let mut notes = Vec::new();
    let mut errors = Vec::new();
    if let Err(e) = check_volume_names(pod) {
        return (notes, vec![e]);
    }
    let fs_group = super::ownership::fs_group(pod);
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    for v in volumes.into_iter().flatten() {
        let (Some(plugin), Some(content)) = (
            super::projection::plugin_dir(v),
            super::projection::volume_content(v, inputs),
        ) else {
            continue;
        };
        let name = v.name.clone();
        let setup = |message: String| VolumeError::SetUp {
            name: name.clone(),
            message,
        };
        let mut content = match content {
            Ok(c) => c,
            Err(e) => {
                errors.push(setup(e.to_string()));
                continue;
            }
        };
        let dir = pod_dir.join("volumes").join(plugin).join(&name);
        let prepared = (|| -> Result<(), String> {
            if pretend {
                return Ok(());
            }
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            if super::projection::memory_backed(v) && !is_mounted(&dir) {
                // Secrets never touch the node's disk.
                mount(
                    Some("tmpfs"),
                    &dir,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some("mode=0755"),
                )
                .map_err(|e| format!("mounting a tmpfs at {}: {e}", dir.display()))?;
            }
            let Some(group) = fs_group else {
                super::atomic_writer::write(&dir, &content.payload)
                    .map_err(|e| crate::error_chain(&e))?;
                return Ok(());
            };
            // The kubelet mounts these volumes read-only: group read, set in
            // the payload so that an unchanged volume compares equal.
            for file in content.payload.values_mut() {
                file.mode = super::ownership::owned_mode(file.mode, false, true);
            }
            let own = |ts_dir: &Path| {
                super::ownership::set_volume_ownership(ts_dir, group, true).map_err(|e| e.into())
            };
            super::atomic_writer::write_with(&dir, &content.payload, &own)
                .map_err(|e| crate::error_chain(&e))?;
            if super::ownership::needs_ownership(&dir, group, true) {
                super::ownership::set_volume_ownership(&dir, group, true)
                    .map_err(|e| crate::error_chain(&e))?;
            }
            Ok(())
        })();
        match prepared {
            Ok(()) => notes.extend(content.skipped.into_iter().map(|message| VolumeNote {
                volume: name.clone(),
                message,
            })),
            Err(message) => errors.push(setup(message)),
        }
    }
    (notes, errors)
}

/// Unmounts everything mounted at or below `dir` (deepest first), so that a
/// later recursive delete can never reach through a mount.
pub fn unmount_below(dir: &Path) {
    let prefix = dir.to_string_lossy().to_string();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_with(volumes: Vec<Volume>) -> Pod {
        Pod {
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                volumes: Some(volumes),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn empty_dir_and_host_path_types() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host-data");
        let pod = pod_with(vec![
            Volume {
                name: "scratch".into(),
                empty_dir: Some(Default::default()),
                ..Default::default()
            },
            Volume {
                name: "data".into(),
                host_path: Some(k8s_openapi::api::core::v1::HostPathVolumeSource {
                    path: host.to_string_lossy().into(),
                    type_: Some("DirectoryOrCreate".into()),
                }),
                ..Default::default()
            },
        ]);
        let paths = prepare_volumes(&pod, dir.path(), &BTreeMap::new()).unwrap();
        assert_eq!(
            paths["scratch"],
            dir.path().join("volumes/kubernetes.io~empty-dir/scratch")
        );
        assert!(paths["scratch"].is_dir());
        assert!(host.is_dir());
        // Idempotent.
        assert_eq!(
            prepare_volumes(&pod, dir.path(), &BTreeMap::new()).unwrap(),
            paths
        );

        let missing = pod_with(vec![Volume {
            name: "f".into(),
            host_path: Some(k8s_openapi::api::core::v1::HostPathVolumeSource {
                path: "/nonexistent/kubelab".into(),
                type_: Some("File".into()),
            }),
            ..Default::default()
        }]);
        let err = prepare_volumes(&missing, dir.path(), &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "volume \"f\": hostPath \"/nonexistent/kubelab\" is not a file"
        );

        let nfs = pod_with(vec![Volume {
            name: "share".into(),
            nfs: Some(Default::default()),
            ..Default::default()
        }]);
        assert_eq!(
            prepare_volumes(&nfs, dir.path(), &BTreeMap::new())
                .unwrap_err()
                .to_string(),
            "volume \"share\": nfs volumes are not supported on this node yet"
        );
    }

    #[test]
    fn claims_resolve_to_their_bound_volumes_directory() {
        use crate::kubeapi::objects::InMemoryObjects;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("pvc-1");
        let mut pod = pod_with(vec![Volume {
            name: "www".into(),
            persistent_volume_claim: Some(
                k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource {
                    claim_name: "www-web-0".into(),
                    read_only: None,
                },
            ),
            ..Default::default()
        }]);
        pod.metadata.namespace = Some("default".into());
        let claim = |phase: &str, volume: Option<&str>| {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "www-web-0", "namespace": "default"},
                "spec": {"volumeName": volume},
                "status": {"phase": phase}}))
            .unwrap()
        };
        let pv = |path: &str| -> PersistentVolume {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "pvc-1"},
                "spec": {"hostPath": {"path": path, "type": "DirectoryOrCreate"}}}))
            .unwrap()
        };
        let mut objects = InMemoryObjects::default();
        assert_eq!(
            resolve_claims(&pod, &objects).unwrap_err().to_string(),
            "error processing PVC default/www-web-0: persistentvolumeclaim \"www-web-0\" not found"
        );
        objects.claims = vec![claim("Pending", None)];
        assert_eq!(
            resolve_claims(&pod, &objects).unwrap_err().to_string(),
            "PVC default/www-web-0 has non-bound phase (\"Pending\") or empty pvc.Spec.VolumeName (\"\")"
        );
        objects.claims = vec![claim("Bound", Some("pvc-1"))];
        objects.volumes = vec![pv(&data.to_string_lossy())];
        let claims = resolve_claims(&pod, &objects).unwrap();
        let paths = prepare_volumes(&pod, dir.path(), &claims).unwrap();
        assert_eq!(paths["www"], data);
        assert!(
            data.is_dir(),
            "DirectoryOrCreate made the volume's directory"
        );
        // A volume path the apiserver would refuse is refused here too.
        objects.volumes = vec![pv("/var/lib/../../etc")];
        let claims = resolve_claims(&pod, &objects).unwrap();
        assert!(
            prepare_volumes(&pod, dir.path(), &claims)
                .unwrap_err()
                .to_string()
                .contains("must be absolute without '..'")
        );
    }

    #[test]
    fn memory_volumes_are_sized_as_the_kubelet_sizes_them() {
        let gib = 1i64 << 30;
        assert_eq!(memory_volume_size(8 * gib, None, None), 8 * gib);
        assert_eq!(memory_volume_size(8 * gib, Some(gib), None), gib);
        assert_eq!(
            memory_volume_size(8 * gib, Some(gib), Some(gib / 4)),
            gib / 4
        );
        assert_eq!(
            memory_volume_size(8 * gib, Some(gib), Some(2 * gib)),
            gib,
            "a larger sizeLimit does not count"
        );
        assert_eq!(memory_volume_size(8 * gib, None, Some(16 * gib)), 8 * gib);
    }

    #[test]
    fn api_volumes_are_written_atomically_and_follow_their_objects() {
        use crate::kubeapi::objects::InMemoryObjects;
        use crate::pod::downward::NodeAllocatable;
        use crate::volume::projection::ProjectionInputs;
        use k8s_openapi::api::core::v1::{ConfigMap, ConfigMapVolumeSource};

        let dir = tempfile::tempdir().unwrap();
        let mut pod = pod_with(vec![
            Volume {
                name: "conf".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: "nginx".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "missing".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: "absent".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]);
        pod.metadata.namespace = Some("default".into());
        let cm = |text: &str| ConfigMap {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("nginx".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            data: Some([("default.conf".to_string(), text.to_string())].into()),
            ..Default::default()
        };
        let node = NodeAllocatable {
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            ephemeral_storage_bytes: 1 << 30,
        };
        let mut objects = InMemoryObjects {
            config_maps: vec![cm("listen 80;")],
            ..Default::default()
        };
        let run = |objects: &InMemoryObjects| {
            setup_api_volumes(
                &pod,
                dir.path(),
                &ProjectionInputs {
                    pod: &pod,
                    node: &node,
                    objects,
                    tokens: None,
                },
                false,
            )
        };
        let (_, errors) = run(&objects);
        assert_eq!(
            errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            ["MountVolume.SetUp failed for volume \"missing\" : configmap \"absent\" not found"]
        );
        let paths = prepare_volumes(&pod, dir.path(), &BTreeMap::new()).unwrap();
        let conf = &paths["conf"];
        assert_eq!(
            *conf,
            dir.path().join("volumes/kubernetes.io~configmap/conf")
        );
        assert_eq!(
            std::fs::read_to_string(conf.join("default.conf")).unwrap(),
            "listen 80;"
        );
        objects.config_maps = vec![cm("listen 81;")];
        run(&objects);
        assert_eq!(
            std::fs::read_to_string(conf.join("default.conf")).unwrap(),
            "listen 81;"
        );
    }
}
