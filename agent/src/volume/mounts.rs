//! A container's `volumeMounts` as the runtime is handed them: CRI
//! [`Mount`]s from prepared volumes and subPaths (pure). The kubelet's
//! `makeMounts`: the runtime never sees a volume, only host paths.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, Pod, VolumeMount};

use crate::runtime::cri::{Mount, MountPropagation};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("container {container:?}: volumeMounts: volume {volume:?} not found")]
    UnknownVolume { container: String, volume: String },
    #[error(
        "container {container:?}: volumeMounts[{volume:?}].subPath {sub_path:?} must be a relative path inside the volume"
    )]
    BadSubPath {
        container: String,
        volume: String,
        sub_path: String,
    },
    #[error(
        "container {container:?}: volumeMounts[{volume:?}].subPath {sub_path:?} was not prepared"
    )]
    SubPathNotPrepared {
        container: String,
        volume: String,
        sub_path: String,
    },
    /// `volumeMounts[].recursiveReadOnly`, worded as kube-apiserver's validation.
    #[error("container {container:?}: volume mount {volume:?}: recursiveReadOnly: {message}")]
    RecursiveReadOnly {
        container: String,
        volume: String,
        message: String,
    },
}

/// The subPath of a volumeMount: `subPath`, or `subPathExpr` with `$(VAR)`
/// expanded from the container's environment, as the kubelet does.
pub fn sub_path_of(vm: &VolumeMount, env: &[(String, String)]) -> Option<String> {
    if let Some(sub) = vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
        return Some(sub.to_string());
    }
    let expr = vm.sub_path_expr.as_deref().filter(|s| !s.is_empty())?;
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    Some(crate::runtime::spec::expand_vars(expr, &lookup)).filter(|s| !s.is_empty())
}

/// A subPath must be relative and stay in its volume by name alone; links
/// are checked when it is looked up ([`super::subpath`]).
pub fn check_sub_path(container: &str, volume: &str, sub: &str) -> Result<(), MountError> {
    if !kubelab_rules::validation::local_descending_path(sub).is_empty() {
        return Err(MountError::BadSubPath {
            container: container.to_string(),
            volume: volume.to_string(),
            sub_path: sub.to_string(),
        });
    }
    Ok(())
}

/// Each `volumeMounts` entry as a CRI mount. Volumes made from API objects
/// are always read-only, as the kubelet mounts them. A mount with a subPath
/// uses its prepared mount point from `sub_paths` (by index in
/// `volumeMounts`), never the volume path joined with it.
pub fn container_mounts(
    pod: &Pod,
    container: &Container,
    volumes: &BTreeMap<String, PathBuf>,
    sub_paths: &BTreeMap<usize, PathBuf>,
    env: &[(String, String)],
) -> Result<Vec<Mount>, MountError> {
    let mut out = Vec::new();
    for (i, vm) in container.volume_mounts.iter().flatten().enumerate() {
        let base = volumes
            .get(&vm.name)
            .ok_or_else(|| MountError::UnknownVolume {
                container: container.name.clone(),
                volume: vm.name.clone(),
            })?;
        let host_path = match sub_path_of(vm, env) {
            None => base.clone(),
            Some(sub) => {
                check_sub_path(&container.name, &vm.name, &sub)?;
                sub_paths
                    .get(&i)
                    .cloned()
                    .ok_or_else(|| MountError::SubPathNotPrepared {
                        container: container.name.clone(),
                        volume: vm.name.clone(),
                        sub_path: sub.clone(),
                    })?
            }
        };
        let api_backed = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .and_then(|vs| vs.iter().find(|v| v.name == vm.name))
            .is_some_and(|v| super::projection::plugin_dir(v).is_some());
        let readonly = vm.read_only.unwrap_or(false) || api_backed;
        out.push(Mount {
            container_path: vm.mount_path.clone(),
            host_path,
            readonly,
            recursive_read_only: recursive_read_only(container, vm)?,
            selinux_relabel: false,
            propagation: match vm.mount_propagation.as_deref() {
                Some("HostToContainer") => MountPropagation::HostToContainer,
                Some("Bidirectional") => MountPropagation::Bidirectional,
                _ => MountPropagation::Private,
            },
        });
    }
    Ok(out)
}

/// `recursiveReadOnly`: `Disabled` (or unset), `IfPossible` or `Enabled`,
/// the last two only with `readOnly: true`. This runtime can always do it
/// (kernels since 5.12), so `IfPossible` is `Enabled`.
fn recursive_read_only(container: &Container, vm: &VolumeMount) -> Result<bool, MountError> {
    let invalid = |message: String| MountError::RecursiveReadOnly {
        container: container.name.clone(),
        volume: vm.name.clone(),
        message,
    };
    match vm.recursive_read_only.as_deref() {
        None | Some("Disabled") => Ok(false),
        Some("IfPossible" | "Enabled") if !vm.read_only.unwrap_or(false) => Err(invalid(
            "may only be specified when readOnly is true".into(),
        )),
        Some(mode @ ("IfPossible" | "Enabled"))
            if vm.mount_propagation.as_deref().is_some_and(|p| p != "None") =>
        {
            Err(invalid(format!(
                "{mode:?}: may only be specified when mountPropagation is None"
            )))
        }
        Some("IfPossible" | "Enabled") => Ok(true),
        Some(other) => Err(invalid(format!(
            "Unsupported value: {other:?}: supported values: \"Disabled\", \"IfPossible\", \"Enabled\""
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    const POD: &str = "
metadata: {name: web, namespace: default, uid: u1}
spec:
  volumes:
  - {name: data, emptyDir: {}}
  - {name: conf, configMap: {name: web-conf}}
  containers:
  - name: app
    image: busybox
    env: [{name: POD, value: web-0}]
    volumeMounts:
    - {name: data, mountPath: /data}
    - {name: data, mountPath: /logs, subPathExpr: 'logs/$(POD)', readOnly: true}
    - {name: conf, mountPath: /etc/web}
    - {name: data, mountPath: /host, readOnly: true, recursiveReadOnly: Enabled}
    - {name: data, mountPath: /shared, mountPropagation: HostToContainer}
";

    fn volumes() -> BTreeMap<String, PathBuf> {
        BTreeMap::from([
            (
                "data".into(),
                PathBuf::from("/p/volumes/kubernetes.io~empty-dir/data"),
            ),
            (
                "conf".into(),
                PathBuf::from("/p/volumes/kubernetes.io~configmap/conf"),
            ),
        ])
    }

    fn env() -> Vec<(String, String)> {
        vec![("POD".into(), "web-0".into())]
    }

    #[test]
    fn mounts_resolve_sub_paths_and_read_only() {
        let pod = pod(POD);
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let sub_paths = BTreeMap::from([(1, PathBuf::from("/p/volume-subpaths/data/app/1"))]);
        let mounts = container_mounts(&pod, c, &volumes(), &sub_paths, &env()).unwrap();
        let m = |path: &str, host: &str, readonly, recursive, propagation| Mount {
            container_path: path.into(),
            host_path: host.into(),
            readonly,
            recursive_read_only: recursive,
            selinux_relabel: false,
            propagation,
        };
        use MountPropagation::*;
        let data = "/p/volumes/kubernetes.io~empty-dir/data";
        assert_eq!(
            mounts,
            [
                m("/data", data, false, false, Private),
                m(
                    "/logs",
                    "/p/volume-subpaths/data/app/1",
                    true,
                    false,
                    Private
                ),
                // Made from an API object: read-only though the mount does not say so.
                m(
                    "/etc/web",
                    "/p/volumes/kubernetes.io~configmap/conf",
                    true,
                    false,
                    Private
                ),
                m("/host", data, true, true, Private),
                m("/shared", data, false, false, HostToContainer),
            ]
        );
    }

    #[test]
    fn a_sub_path_is_expanded_from_the_environment() {
        let pod = pod(POD);
        let vm = &pod.spec.as_ref().unwrap().containers[0]
            .volume_mounts
            .as_ref()
            .unwrap()[1];
        assert_eq!(sub_path_of(vm, &env()).as_deref(), Some("logs/web-0"));
        // An unknown variable is left as written, as the kubelet does.
        assert_eq!(sub_path_of(vm, &[]).as_deref(), Some("logs/$(POD)"));
    }

    #[test]
    fn unprepared_or_escaping_sub_paths_and_unknown_volumes_are_refused() {
        let pod = pod(POD);
        let c = &pod.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            container_mounts(&pod, c, &volumes(), &BTreeMap::new(), &env())
                .unwrap_err()
                .to_string(),
            "container \"app\": volumeMounts[\"data\"].subPath \"logs/web-0\" was not prepared"
        );
        assert_eq!(
            check_sub_path("app", "data", "../x")
                .unwrap_err()
                .to_string(),
            "container \"app\": volumeMounts[\"data\"].subPath \"../x\" must be a relative path inside the volume"
        );
        let mut only_conf = volumes();
        only_conf.remove("data");
        assert_eq!(
            container_mounts(&pod, c, &only_conf, &BTreeMap::new(), &env())
                .unwrap_err()
                .to_string(),
            "container \"app\": volumeMounts: volume \"data\" not found"
        );
    }

    #[test]
    fn recursive_read_only_needs_read_only() {
        let pod = pod("
spec:
  volumes: [{name: data, emptyDir: {}}]
  containers:
  - name: app
    volumeMounts: [{name: data, mountPath: /d, recursiveReadOnly: IfPossible}]
");
        let c = &pod.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            container_mounts(&pod, c, &volumes(), &BTreeMap::new(), &[])
                .unwrap_err()
                .to_string(),
            "container \"app\": volume mount \"data\": recursiveReadOnly: may only be specified when readOnly is true"
        );
    }
}
