//! The ServiceAccount admission plugin's decisions, on pod creation: the
//! pod runs as its ServiceAccount (`default` unless named), takes the
//! ServiceAccount's `imagePullSecrets` when it names none and, unless the
//! pod or its ServiceAccount says `automountServiceAccountToken: false`,
//! gets the projected `kube-api-access-<random>` volume (a bound token, the
//! cluster CA from `kube-root-ca.crt`, the namespace) mounted read-only at
//! `/var/run/secrets/kubernetes.io/serviceaccount` in every container and
//! init container (ephemeral containers are added later, by hand, and get
//! none). Mirror pods are not changed: the kubelet would not recognise its
//! static pod; they may not reference a ServiceAccount, Secrets or tokens.
//! [`crate::api`] looks the ServiceAccount up and applies these.

use k8s_openapi::api::core::v1::{
    ConfigMapProjection, DownwardAPIProjection, DownwardAPIVolumeFile, KeyToPath,
    LocalObjectReference, ObjectFieldSelector, Pod, PodSpec, ProjectedVolumeSource, ServiceAccount,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};

use super::token_request::WARN_ONLY_EXPIRATION_SECONDS;
use crate::controllers::root_ca_publisher::{CA_KEY, CONFIG_MAP_NAME};
use crate::rbac::node::pod_refs;

/// The ServiceAccount a pod names none of.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// Where containers find their token, CA and namespace.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The volume's name prefix.
pub const VOLUME_NAME_PREFIX: &str = "kube-api-access";
/// Pods the kubelet made for its static pods carry this annotation.
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Why a pod is refused; each reads as the plugin's reason after
/// `pods "x" is forbidden: `.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AdmissionError {
    #[error("a mirror pod may not reference service accounts")]
    MirrorPodServiceAccount,
    #[error("a mirror pod may not reference secrets")]
    MirrorPodSecrets,
    #[error("a mirror pod may not use ServiceAccountToken volume projections")]
    MirrorPodTokenProjection,
}

pub fn is_mirror_pod(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_POD_ANNOTATION))
}

/// The ServiceAccount a pod runs as: the one it names, else `default`.
pub fn service_account_name(spec: &PodSpec) -> String {
    spec.service_account_name
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| spec.service_account.clone().filter(|n| !n.is_empty()))
        .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.to_owned())
}

/// Whether the token is mounted: the pod's choice, else its
/// ServiceAccount's, else yes.
pub fn automount(spec: &PodSpec, service_account: &ServiceAccount) -> bool {
    spec.automount_service_account_token
        .or(service_account.automount_service_account_token)
        .unwrap_or(true)
}

/// What a mirror pod may not reference.
pub fn validate_mirror_pod(pod: &Pod) -> Result<(), AdmissionError> {
    let Some(spec) = &pod.spec else { return Ok(()) };
    if spec
        .service_account_name
        .as_deref()
        .is_some_and(|n| !n.is_empty())
    {
        return Err(AdmissionError::MirrorPodServiceAccount);
    }
    if !pod_refs(pod).secrets.is_empty() {
        return Err(AdmissionError::MirrorPodSecrets);
    }
    let projects_token = spec
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .any(|s| s.service_account_token.is_some());
    if projects_token {
        return Err(AdmissionError::MirrorPodTokenProjection);
    }
    Ok(())
}

/// Admits a pod that is not a mirror pod, given the ServiceAccount it runs
/// as (looked up by [`service_account_name`]); `suffix` names a new volume.
pub fn admit(pod: &mut Pod, service_account: &ServiceAccount, suffix: &str) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    let name = service_account_name(spec);
    spec.service_account_name = Some(name.clone());
    spec.service_account = Some(name);
    if automount(spec, service_account) {
        mount_token(spec, suffix);
    }
    if spec.image_pull_secrets.as_ref().is_none_or(Vec::is_empty) {
        let from_account: Vec<LocalObjectReference> = service_account
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|s| LocalObjectReference {
                name: s.name.clone(),
            })
            .collect();
        spec.image_pull_secrets = (!from_account.is_empty()).then_some(from_account);
    }
}

/// `TokenVolumeSource`: a bound token, the cluster CA and the namespace.
pub fn token_volume_source() -> ProjectedVolumeSource {
    ProjectedVolumeSource {
        // Set here rather than left to defaulting, as upstream does.
        default_mode: Some(0o644),
        sources: Some(vec![
            VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    expiration_seconds: Some(WARN_ONLY_EXPIRATION_SECONDS),
                    path: "token".into(),
                    audience: None,
                }),
                ..Default::default()
            },
            VolumeProjection {
                config_map: Some(ConfigMapProjection {
                    name: CONFIG_MAP_NAME.into(),
                    items: Some(vec![KeyToPath {
                        key: CA_KEY.into(),
                        path: "ca.crt".into(),
                        mode: None,
                    }]),
                    optional: None,
                }),
                ..Default::default()
            },
            VolumeProjection {
                downward_api: Some(DownwardAPIProjection {
                    items: Some(vec![DownwardAPIVolumeFile {
                        path: "namespace".into(),
                        field_ref: Some(ObjectFieldSelector {
                            api_version: Some("v1".into()),
                            field_path: "metadata.namespace".into(),
                        }),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            },
        ]),
    }
}

/// `mountServiceAccountToken`: mounts the token volume in every init
/// container and container without a mount at [`TOKEN_MOUNT_PATH`], adding
/// the volume (`kube-api-access-<suffix>`) unless the pod has one of that
/// prefix already.
pub fn mount_token(spec: &mut PodSpec, suffix: &str) {
    let existing = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| {
            v.name
                .strip_prefix(VOLUME_NAME_PREFIX)
                .is_some_and(|rest| rest.starts_with('-'))
        })
        .map(|v| v.name.clone());
    let name = existing
        .clone()
        .unwrap_or_else(|| format!("{VOLUME_NAME_PREFIX}-{suffix}"));
    let mount = VolumeMount {
        name: name.clone(),
        mount_path: TOKEN_MOUNT_PATH.into(),
        read_only: Some(true),
        ..Default::default()
    };
    let mut needed = false;
    for c in spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut())
    {
        let mounts = c.volume_mounts.get_or_insert_with(Vec::new);
        if !mounts.iter().any(|m| m.mount_path == TOKEN_MOUNT_PATH) {
            mounts.push(mount.clone());
            needed = true;
        }
    }
    if needed && existing.is_none() {
        spec.volumes.get_or_insert_with(Vec::new).push(Volume {
            name,
            projected: Some(token_volume_source()),
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn account(v: serde_json::Value) -> ServiceAccount {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn every_container_and_init_container_mounts_the_api_access_volume() {
        let mut p = pod(json!({"metadata": {"name": "web"}, "spec": {
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [
                {"name": "a", "image": "busybox"},
                {"name": "b", "image": "busybox", "volumeMounts": [
                    {"name": "mine", "mountPath": TOKEN_MOUNT_PATH}]}],
            "ephemeralContainers": [{"name": "debug", "image": "busybox"}],
            "volumes": [{"name": "mine", "emptyDir": {}}]}}));
        admit(&mut p, &ServiceAccount::default(), "x7k2q");
        let v = serde_json::to_value(&p).unwrap()["spec"].clone();
        assert_eq!(v["serviceAccountName"], "default");
        assert_eq!(v["serviceAccount"], "default");
        assert_eq!(
            v["volumes"][1],
            json!({"name": "kube-api-access-x7k2q", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}, "path": "namespace"}]}}]}})
        );
        let mount = json!({"name": "kube-api-access-x7k2q", "readOnly": true,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"});
        assert_eq!(v["initContainers"][0]["volumeMounts"], json!([mount]));
        assert_eq!(v["containers"][0]["volumeMounts"], json!([mount]));
        // A container with its own mount there keeps it.
        assert_eq!(
            v["containers"][1]["volumeMounts"].as_array().unwrap().len(),
            1
        );
        assert_eq!(v["containers"][1]["volumeMounts"][0]["name"], "mine");
        assert!(v["ephemeralContainers"][0].get("volumeMounts").is_none());
    }

    #[test]
    fn no_new_volume_when_every_container_has_its_own_mount_or_one_exists() {
        let mut s: PodSpec = serde_json::from_value(json!({"containers": [{"name": "a",
            "image": "i", "volumeMounts": [{"name": "mine", "mountPath": TOKEN_MOUNT_PATH}]}]}))
        .unwrap();
        mount_token(&mut s, "aaaaa");
        assert!(s.volumes.is_none());
        let mut s: PodSpec =
            serde_json::from_value(json!({"containers": [{"name": "a", "image": "i"}],
            "volumes": [{"name": "kube-api-access-old12", "emptyDir": {}}]}))
            .unwrap();
        mount_token(&mut s, "aaaaa");
        assert_eq!(s.volumes.as_ref().unwrap().len(), 1);
        assert_eq!(
            s.containers[0].volume_mounts.as_ref().unwrap()[0].name,
            "kube-api-access-old12"
        );
    }

    #[test]
    fn the_pods_choice_beats_its_service_accounts() {
        let s = |v: Option<bool>| PodSpec {
            automount_service_account_token: v,
            ..Default::default()
        };
        let sa = |v: Option<bool>| ServiceAccount {
            automount_service_account_token: v,
            ..Default::default()
        };
        assert!(automount(&s(None), &sa(None)));
        assert!(!automount(&s(None), &sa(Some(false))));
        assert!(automount(&s(Some(true)), &sa(Some(false))));
        assert!(!automount(&s(Some(false)), &sa(Some(true))));
        let mut quiet = pod(json!({"spec": {"automountServiceAccountToken": false,
            "containers": [{"name": "c", "image": "i"}]}}));
        admit(&mut quiet, &sa(None), "aaaaa");
        let spec = quiet.spec.unwrap();
        assert!(spec.volumes.is_none());
        assert!(spec.containers[0].volume_mounts.is_none());
        assert_eq!(service_account_name(&s(None)), "default");
        let legacy = PodSpec {
            service_account: Some("legacy".into()),
            ..Default::default()
        };
        assert_eq!(service_account_name(&legacy), "legacy");
    }

    #[test]
    fn pull_secrets_come_from_the_service_account_when_the_pod_names_none() {
        let sa = account(json!({"imagePullSecrets": [{"name": "regcred"}]}));
        let mut p = pod(json!({"spec": {"containers": [{"name": "c", "image": "i"}]}}));
        admit(&mut p, &sa, "aaaaa");
        let names: Vec<String> = p
            .spec
            .as_ref()
            .unwrap()
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|s| s.name.clone())
            .collect();
        assert_eq!(names, ["regcred"]);
        let mut own = pod(json!({"spec": {"imagePullSecrets": [{"name": "mine"}],
            "containers": [{"name": "c", "image": "i"}]}}));
        admit(&mut own, &sa, "aaaaa");
        assert_eq!(
            own.spec.unwrap().image_pull_secrets.unwrap()[0].name,
            "mine"
        );
    }

    #[test]
    fn mirror_pods_may_not_reference_accounts_secrets_or_tokens() {
        let mirror = |spec: serde_json::Value| {
            let mut spec = spec;
            spec["containers"] = json!([{"name": "c", "image": "i"}]);
            pod(json!({"metadata": {"name": "static-n1",
                "annotations": {MIRROR_POD_ANNOTATION: "abc"}}, "spec": spec}))
        };
        let plain = mirror(json!({}));
        assert!(is_mirror_pod(&plain));
        assert_eq!(validate_mirror_pod(&plain), Ok(()));
        assert_eq!(
            validate_mirror_pod(&mirror(json!({"serviceAccountName": "builder"}))),
            Err(AdmissionError::MirrorPodServiceAccount)
        );
        assert_eq!(
            validate_mirror_pod(&mirror(
                json!({"volumes": [{"name": "s", "secret": {"secretName": "x"}}]})
            )),
            Err(AdmissionError::MirrorPodSecrets)
        );
        assert_eq!(
            validate_mirror_pod(&mirror(
                json!({"volumes": [{"name": "t", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token"}}]}}]})
            )),
            Err(AdmissionError::MirrorPodTokenProjection)
        );
        assert_eq!(
            AdmissionError::MirrorPodTokenProjection.to_string(),
            "a mirror pod may not use ServiceAccountToken volume projections"
        );
    }
}
