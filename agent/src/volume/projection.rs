//! What a configMap, secret, downwardAPI or projected volume holds: its
//! files as an [`atomic_writer::Payload`], from the API objects and the pod
//! (kubelet's `MakePayload` and `CollectData` of those volume plugins). Pure,
//! given an [`ObjectGetter`] and the pod's ServiceAccount tokens as the
//! [token manager](crate::token) had them; [`super::plugins`] writes the result.

use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume, VolumeProjection,
};

use super::atomic_writer::{FileProjection, Payload};
use crate::kubeapi::objects::{ObjectError, ObjectGetter};
use crate::pod::downward::{self, DownwardError, NodeAllocatable};
use crate::token::{PodTokens, TokenError, TokenKey};

/// The mode of every file whose volume or item sets none (0644).
pub const DEFAULT_MODE: i32 = 0o644;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error("configmap references non-existent config key: {0}")]
    MissingConfigMapKey(String),
    #[error("secret references non-existent secret key: {0}")]
    MissingSecretKey(String),
    #[error(transparent)]
    Downward(#[from] DownwardError),
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Several errors, as Go's `utilerrors.NewAggregate` prints them.
    #[error("[{}]", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "))]
    Aggregate(Vec<ProjectionError>),
}

fn aggregate(mut errors: Vec<ProjectionError>) -> Result<(), ProjectionError> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(ProjectionError::Aggregate(errors)),
    }
}

/// What a volume's contents are computed from.
pub struct ProjectionInputs<'a> {
    pub pod: &'a Pod,
    pub node: &'a NodeAllocatable,
    pub objects: &'a dyn ObjectGetter,
    /// The pod's ServiceAccount tokens (`None`: this node has no token
    /// source: no apiserver, or a static pod).
    pub tokens: Option<&'a PodTokens>,
}

/// A volume's files, and notes worth an Event (sources skipped).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeContent {
    pub payload: Payload,
    pub skipped: Vec<String>,
}

/// The kubelet's directory name of each API-backed volume kind, or `None`
/// for volumes that are not made from API objects.
pub fn plugin_dir(v: &Volume) -> Option<&'static str> {
    if v.config_map.is_some() {
        Some("kubernetes.io~configmap")
    } else if v.secret.is_some() {
        Some("kubernetes.io~secret")
    } else if v.downward_api.is_some() {
        Some("kubernetes.io~downward-api")
    } else if v.projected.is_some() {
        Some("kubernetes.io~projected")
    } else {
        None
    }
}

/// Secrets and projected volumes (which may hold secrets) live on a tmpfs,
/// never on the node's disk.
pub fn memory_backed(v: &Volume) -> bool {
    v.secret.is_some() || v.projected.is_some()
}

fn mode_of(mode: Option<i32>, default: i32) -> u32 {
    (mode.unwrap_or(default) & 0o7777) as u32
}

/// `MakePayload`: every key (data and binaryData) as a file, or just `items`,
/// each at its `path` with its `mode`.
fn key_payload(
    data: &[(&String, &[u8])],
    items: Option<&Vec<KeyToPath>>,
    default_mode: i32,
    optional: bool,
    missing: impl Fn(&str) -> ProjectionError,
) -> Result<Payload, ProjectionError> {
    let mut payload = Payload::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data {
                payload.insert(
                    k.to_string(),
                    FileProjection {
                        data: v.to_vec(),
                        mode: mode_of(None, default_mode),
                    },
                );
            }
        }
        Some(items) => {
            for item in items {
                let Some((_, v)) = data.iter().find(|(k, _)| **k == item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(missing(&item.key));
                };
                payload.insert(
                    item.path.clone(),
                    FileProjection {
                        data: v.to_vec(),
                        mode: mode_of(item.mode, default_mode),
                    },
                );
            }
        }
    }
    Ok(payload)
}

fn config_map_payload(
    cm: Option<&ConfigMap>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, ProjectionError> {
    let empty_data = Default::default();
    let empty_bin = Default::default();
    let data = cm.and_then(|c| c.data.as_ref()).unwrap_or(&empty_data);
    let bin: &std::collections::BTreeMap<String, ByteString> = cm
        .and_then(|c| c.binary_data.as_ref())
        .unwrap_or(&empty_bin);
    let all: Vec<(&String, &[u8])> = data
        .iter()
        .map(|(k, v)| (k, v.as_bytes()))
        .chain(bin.iter().map(|(k, v)| (k, v.0.as_slice())))
        .collect();
    key_payload(&all, items, default_mode, optional, |k| {
        ProjectionError::MissingConfigMapKey(k.to_string())
    })
}

fn secret_payload(
    secret: Option<&Secret>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, ProjectionError> {
    let all: Vec<(&String, &[u8])> = secret
        .and_then(|s| s.data.as_ref())
        .into_iter()
        .flatten()
        .map(|(k, v)| (k, v.0.as_slice()))
        .collect();
    key_payload(&all, items, default_mode, optional, |k| {
        ProjectionError::MissingSecretKey(k.to_string())
    })
}

/// The object, or `None` when it is missing and optional.
fn fetch<T>(
    got: Result<Arc<T>, ObjectError>,
    optional: bool,
) -> Result<Option<Arc<T>>, ProjectionError> {
    match got {
        Ok(o) => Ok(Some(o)),
        Err(e) if optional && e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `downwardapi.CollectData`: one file per item, every failing item reported.
fn downward_payload(
    items: Option<&Vec<DownwardAPIVolumeFile>>,
    default_mode: i32,
    inputs: &ProjectionInputs,
) -> Result<Payload, ProjectionError> {
    let mut payload = Payload::new();
    let mut errors = Vec::new();
    for item in items.into_iter().flatten() {
        let value = if let Some(field) = &item.field_ref {
            downward::metadata_field(inputs.pod, &field.field_path)
        } else if let Some(res) = &item.resource_field_ref {
            downward::pod_container_resource(inputs.pod, res, inputs.node)
        } else {
            Ok(String::new())
        };
        match value {
            Ok(v) => {
                payload.insert(
                    item.path.clone(),
                    FileProjection {
                        data: v.into_bytes(),
                        mode: mode_of(item.mode, default_mode),
                    },
                );
            }
            Err(e) => errors.push(e.into()),
        }
    }
    aggregate(errors)?;
    Ok(payload)
}

fn projected_source(
    source: &VolumeProjection,
    default_mode: i32,
    inputs: &ProjectionInputs,
    namespace: &str,
    out: &mut VolumeContent,
) -> Result<(), ProjectionError> {
    let part = if let Some(cm) = &source.config_map {
        let optional = cm.optional.unwrap_or(false);
        let obj = fetch(inputs.objects.config_map(namespace, &cm.name), optional)?;
        config_map_payload(obj.as_deref(), cm.items.as_ref(), default_mode, optional)?
    } else if let Some(s) = &source.secret {
        let optional = s.optional.unwrap_or(false);
        let obj = fetch(inputs.objects.secret(namespace, &s.name), optional)?;
        secret_payload(obj.as_deref(), s.items.as_ref(), default_mode, optional)?
    } else if let Some(d) = &source.downward_api {
        downward_payload(d.items.as_ref(), default_mode, inputs)?
    } else if let Some(token) = &source.service_account_token {
        let Some(tokens) = inputs.tokens else {
            out.skipped.push(format!(
                "serviceAccountToken {:?}: this node has no token source; the file is not written",
                token.path
            ));
            return Ok(());
        };
        let data = tokens.get(&TokenKey::for_projection(inputs.pod, token))?;
        // Only the pod's user reads it; with an fsGroup the ownership step
        // lets the group read it too (0640).
        let mode = if super::ownership::fs_group(inputs.pod).is_some() {
            0o600
        } else {
            mode_of(None, default_mode)
        };
        Payload::from([(
            token.path.clone(),
            FileProjection {
                data: data.as_bytes().to_vec(),
                mode,
            },
        )])
    } else {
        out.skipped
            .push("a projected source of a kind this node does not know".into());
        Payload::new()
    };
    out.payload.extend(part);
    Ok(())
}

/// The files of `volume`, or `None` if it is not made from API objects.
pub fn volume_content(
    volume: &Volume,
    inputs: &ProjectionInputs,
) -> Option<Result<VolumeContent, ProjectionError>> {
    let namespace = inputs
        .pod
        .metadata
        .namespace
        .as_deref()
        .unwrap_or("default");
    let payload = |p: Result<Payload, ProjectionError>| {
        p.map(|payload| VolumeContent {
            payload,
            skipped: Vec::new(),
        })
    };
    if let Some(src) = &volume.config_map {
        let optional = src.optional.unwrap_or(false);
        return Some(payload(
            fetch(inputs.objects.config_map(namespace, &src.name), optional).and_then(|cm| {
                config_map_payload(
                    cm.as_deref(),
                    src.items.as_ref(),
                    src.default_mode.unwrap_or(DEFAULT_MODE),
                    optional,
                )
            }),
        ));
    }
    if let Some(src) = &volume.secret {
        let optional = src.optional.unwrap_or(false);
        let name = src.secret_name.clone().unwrap_or_default();
        return Some(payload(
            fetch(inputs.objects.secret(namespace, &name), optional).and_then(|s| {
                secret_payload(
                    s.as_deref(),
                    src.items.as_ref(),
                    src.default_mode.unwrap_or(DEFAULT_MODE),
                    optional,
                )
            }),
        ));
    }
    if let Some(src) = &volume.downward_api {
        return Some(payload(downward_payload(
            src.items.as_ref(),
            src.default_mode.unwrap_or(DEFAULT_MODE),
            inputs,
        )));
    }
    if let Some(src) = &volume.projected {
        let default_mode = src.default_mode.unwrap_or(DEFAULT_MODE);
        let mut out = VolumeContent::default();
        let mut errors = Vec::new();
        for source in src.sources.iter().flatten() {
            if let Err(e) = projected_source(source, default_mode, inputs, namespace, &mut out) {
                errors.push(e);
            }
        }
        return Some(aggregate(errors).map(|_| out));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubeapi::objects::InMemoryObjects;
    use k8s_openapi::api::core::v1::{
        ConfigMapProjection, ConfigMapVolumeSource, Container, DownwardAPIProjection,
        ObjectFieldSelector, PodSpec, ProjectedVolumeSource, ResourceFieldSelector,
        ResourceRequirements, SecretVolumeSource, ServiceAccountTokenProjection,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const NODE: NodeAllocatable = NodeAllocatable {
        cpu_millis: 4000,
        memory_bytes: 8 << 30,
        ephemeral_storage_bytes: 1 << 36,
    };

    fn objects() -> InMemoryObjects {
        InMemoryObjects {
            config_maps: vec![ConfigMap {
                metadata: ObjectMeta {
                    namespace: Some("default".into()),
                    name: Some("nginx-conf".into()),
                    ..Default::default()
                },
                data: Some([("default.conf".to_string(), "server {}".to_string())].into()),
                binary_data: Some([("logo.png".to_string(), ByteString(vec![0x89, 0x50]))].into()),
                ..Default::default()
            }],
            secrets: vec![Secret {
                metadata: ObjectMeta {
                    namespace: Some("default".into()),
                    name: Some("tls".into()),
                    ..Default::default()
                },
                data: Some([("tls.key".to_string(), ByteString(b"KEY".to_vec()))].into()),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "nginx".into(),
                    resources: Some(ResourceRequirements {
                        limits: Some([("memory".to_string(), Quantity("128Mi".into()))].into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn content(v: &Volume) -> Result<VolumeContent, ProjectionError> {
        let (pod, objects) = (pod(), objects());
        volume_content(
            v,
            &ProjectionInputs {
                pod: &pod,
                node: &NODE,
                objects: &objects,
                tokens: None,
            },
        )
        .expect("an API volume")
    }

    fn cm_volume(name: &str, items: Option<Vec<KeyToPath>>, optional: Option<bool>) -> Volume {
        Volume {
            name: "conf".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.into(),
                items,
                optional,
                default_mode: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn config_map_keys_items_and_modes() {
        let all = content(&cm_volume("nginx-conf", None, None))
            .unwrap()
            .payload;
        assert_eq!(all.keys().collect::<Vec<_>>(), ["default.conf", "logo.png"]);
        assert_eq!(all["default.conf"].data, b"server {}");
        assert_eq!(all["default.conf"].mode, 0o644);
        assert_eq!(all["logo.png"].data, [0x89, 0x50]);

        let item = KeyToPath {
            key: "default.conf".into(),
            path: "conf.d/site.conf".into(),
            mode: Some(0o600),
        };
        let some = content(&cm_volume("nginx-conf", Some(vec![item]), None))
            .unwrap()
            .payload;
        assert_eq!(some.keys().collect::<Vec<_>>(), ["conf.d/site.conf"]);
        assert_eq!(some["conf.d/site.conf"].mode, 0o600);

        let missing_key = KeyToPath {
            key: "nope".into(),
            path: "x".into(),
            mode: None,
        };
        assert_eq!(
            content(&cm_volume("nginx-conf", Some(vec![missing_key]), None))
                .unwrap_err()
                .to_string(),
            "configmap references non-existent config key: nope"
        );
        assert_eq!(
            content(&cm_volume("absent", None, None))
                .unwrap_err()
                .to_string(),
            "configmap \"absent\" not found"
        );
        assert!(
            content(&cm_volume("absent", None, Some(true)))
                .unwrap()
                .payload
                .is_empty()
        );
    }

    #[test]
    fn secret_and_projected_and_downward() {
        let secret = Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some("tls".into()),
                default_mode: Some(0o400),
                ..Default::default()
            }),
            ..Default::default()
        };
        let p = content(&secret).unwrap().payload;
        assert_eq!(p["tls.key"].data, b"KEY");
        assert_eq!(p["tls.key"].mode, 0o400);
        assert!(memory_backed(&secret));

        let projected = Volume {
            name: "all".into(),
            projected: Some(ProjectedVolumeSource {
                default_mode: None,
                sources: Some(vec![
                    VolumeProjection {
                        config_map: Some(ConfigMapProjection {
                            name: "nginx-conf".into(),
                            items: Some(vec![KeyToPath {
                                key: "default.conf".into(),
                                path: "nginx/default.conf".into(),
                                mode: None,
                            }]),
                            optional: None,
                        }),
                        ..Default::default()
                    },
                    VolumeProjection {
                        downward_api: Some(DownwardAPIProjection {
                            items: Some(vec![
                                DownwardAPIVolumeFile {
                                    path: "labels".into(),
                                    field_ref: Some(ObjectFieldSelector {
                                        field_path: "metadata.labels".into(),
                                        api_version: None,
                                    }),
                                    ..Default::default()
                                },
                                DownwardAPIVolumeFile {
                                    path: "mem_mi".into(),
                                    resource_field_ref: Some(ResourceFieldSelector {
                                        container_name: Some("nginx".into()),
                                        resource: "limits.memory".into(),
                                        divisor: Some(Quantity("1Mi".into())),
                                    }),
                                    ..Default::default()
                                },
                                DownwardAPIVolumeFile {
                                    path: "cpu".into(),
                                    resource_field_ref: Some(ResourceFieldSelector {
                                        container_name: Some("nginx".into()),
                                        resource: "limits.cpu".into(),
                                        divisor: None,
                                    }),
                                    ..Default::default()
                                },
                            ]),
                        }),
                        ..Default::default()
                    },
                    VolumeProjection {
                        service_account_token: Some(ServiceAccountTokenProjection {
                            path: "token".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ]),
            }),
            ..Default::default()
        };
        let c = content(&projected).unwrap();
        let keys: Vec<&String> = c.payload.keys().collect();
        assert_eq!(keys, ["cpu", "labels", "mem_mi", "nginx/default.conf"]);
        assert_eq!(c.payload["labels"].data, b"app=\"web\"");
        assert_eq!(c.payload["mem_mi"].data, b"128");
        assert_eq!(
            c.payload["cpu"].data, b"4",
            "no cpu limit: the node's cores"
        );
        assert_eq!(c.skipped.len(), 1, "{:?}", c.skipped);
        assert_eq!(plugin_dir(&projected), Some("kubernetes.io~projected"));
    }

    #[test]
    fn service_account_tokens_are_written_from_the_token_manager() {
        let mut pod = pod();
        pod.metadata.uid = Some("u-1".into());
        pod.spec.as_mut().unwrap().service_account_name = Some("reader".into());
        let projection = ServiceAccountTokenProjection {
            path: "token".into(),
            expiration_seconds: Some(3607),
            ..Default::default()
        };
        let volume = Volume {
            name: "kube-api-access-test".into(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(0o644),
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(projection.clone()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        };
        let key = TokenKey::for_projection(&pod, &projection);
        assert_eq!(key.service_account, "reader");
        let objects = objects();
        let content = |tokens: &PodTokens, pod: &Pod| {
            volume_content(
                &volume,
                &ProjectionInputs {
                    pod,
                    node: &NODE,
                    objects: &objects,
                    tokens: Some(tokens),
                },
            )
            .expect("an API volume")
        };
        let tokens = PodTokens::from_tokens([(key.clone(), Ok("jwt".to_string()))]);
        let c = content(&tokens, &pod).unwrap();
        assert!(c.skipped.is_empty());
        assert_eq!(c.payload["token"].data, b"jwt");
        assert_eq!(c.payload["token"].mode, 0o644);

        // With an fsGroup the token is the user's alone until ownership adds the group.
        let mut grouped = pod.clone();
        grouped.spec.as_mut().unwrap().security_context = Some(Default::default());
        grouped
            .spec
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap()
            .fs_group = Some(2000);
        assert_eq!(
            content(&tokens, &grouped).unwrap().payload["token"].mode,
            0o600
        );

        let failed = PodTokens::from_tokens([(
            key,
            Err(TokenError::Fetch(
                "serviceaccounts \"reader\" not found".into(),
            )),
        )]);
        assert_eq!(
            content(&failed, &pod).unwrap_err().to_string(),
            "failed to fetch token: serviceaccounts \"reader\" not found"
        );
    }
}
