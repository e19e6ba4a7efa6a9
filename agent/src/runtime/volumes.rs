//! Pod volumes the node can provide by itself: `emptyDir` (a dir, or tmpfs
//! for `medium: Memory`) and `hostPath` (with its `type` checks), in kubelet's
//! layout: `<pod dir>/volumes/kubernetes.io~empty-dir/<name>`.
//! Volumes that need the API (configMap, secret, PVCs) are refused by name.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Pod, Volume};
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
) -> Result<BTreeMap<String, PathBuf>, VolumeError> {
    let mut out = BTreeMap::new();
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
                let mut data = String::from("mode=1777");
                if let Some(limit) = &empty.size_limit {
                    let bytes =
                        crate::quantity::bytes(limit).map_err(|source| VolumeError::Size {
                            name: name.clone(),
                            source,
                        })?;
                    data.push_str(&format!(",size={bytes}"));
                }
                mount(
                    Some("tmpfs"),
                    &dir,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some(data.as_str()),
                )
                .map_err(|e| io(&dir)(std::io::Error::from(e)))?;
            }
            out.insert(name, dir);
        } else if let Some(host) = &v.host_path {
            let path = PathBuf::from(&host.path);
            let kind = host.type_.as_deref().unwrap_or("");
            let meta = std::fs::metadata(&path).ok();
            let problem = |p: &str| VolumeError::HostPathType {
                name: name.clone(),
                path: host.path.clone(),
                problem: p.to_string(),
            };
            match kind {
                "" => {}
                "DirectoryOrCreate" => {
                    if meta.is_none() {
                        std::fs::create_dir_all(&path).map_err(io(&path))?;
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                            .map_err(io(&path))?;
                    }
                }
                "FileOrCreate" => {
                    if meta.is_none() {
                        std::fs::write(&path, b"").map_err(io(&path))?;
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                            .map_err(io(&path))?;
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
            out.insert(name, path);
        } else {
            return Err(VolumeError::Unsupported {
                name,
                kind: kind_of(v),
            });
        }
    }
    Ok(out)
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
        let paths = prepare_volumes(&pod, dir.path()).unwrap();
        assert_eq!(
            paths["scratch"],
            dir.path().join("volumes/kubernetes.io~empty-dir/scratch")
        );
        assert!(paths["scratch"].is_dir());
        assert!(host.is_dir());
        // Idempotent.
        assert_eq!(prepare_volumes(&pod, dir.path()).unwrap(), paths);

        let missing = pod_with(vec![Volume {
            name: "f".into(),
            host_path: Some(k8s_openapi::api::core::v1::HostPathVolumeSource {
                path: "/nonexistent/kubelab".into(),
                type_: Some("File".into()),
            }),
            ..Default::default()
        }]);
        let err = prepare_volumes(&missing, dir.path())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "volume \"f\": hostPath \"/nonexistent/kubelab\" is not a file"
        );

        let cm = pod_with(vec![Volume {
            name: "conf".into(),
            config_map: Some(Default::default()),
            ..Default::default()
        }]);
        assert_eq!(
            prepare_volumes(&cm, dir.path()).unwrap_err().to_string(),
            "volume \"conf\": configMap volumes are not supported on this node yet"
        );
    }
}
