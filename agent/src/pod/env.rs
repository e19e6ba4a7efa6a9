//! A container's environment as the kubelet computes it
//! (`makeEnvironmentVariables`): service variables, then `envFrom`
//! (ConfigMaps and Secrets, with a prefix), then `env` in order, where a
//! `value` may refer to earlier variables with `$(NAME)` and a `valueFrom`
//! reads a ConfigMap or Secret key, a pod field or a container resource.
//! The image's own environment is not part of this: the runtime layers it
//! underneath (see [`crate::runtime::spec::effective_env`]).
//!
//! Pure, given an [`ObjectGetter`]: a missing object or key is an
//! [`EnvError`] with the kubelet's wording, which keeps the container in
//! `CreateContainerConfigError`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::downward::{self, DownwardError, NodeAllocatable, PodPlacement};
use super::envvars;
use crate::kubeapi::objects::{ObjectError, ObjectGetter};
use crate::runtime::spec::expand_vars;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    MissingKey {
        key: String,
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error(transparent)]
    Downward(#[from] DownwardError),
}

/// Something worth an Event that does not stop the container (keys skipped
/// by `envFrom`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvWarning {
    pub reason: &'static str,
    pub message: String,
}

/// What the environment is computed from besides the container.
pub struct EnvInputs<'a> {
    pub pod: &'a Pod,
    pub placement: &'a PodPlacement,
    pub node: &'a NodeAllocatable,
    /// A static pod: it may not refer to API objects, and does not wait for
    /// the service list.
    pub is_static: bool,
    pub objects: &'a dyn ObjectGetter,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerEnv {
    /// In a stable order: `envFrom` and `env` as declared, then the service
    /// variables they did not override.
    pub vars: Vec<(String, String)>,
    pub warnings: Vec<EnvWarning>,
}

impl ContainerEnv {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `$(VAR)` in a command or argument, from this environment.
    pub fn expand(&self, input: &str) -> String {
        expand_vars(input, &|name| self.get(name).map(String::from))
    }
}

/// `validation.IsEnvVarName`: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
pub fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    let ok = |c: char, first: bool| {
        c == '-'
            || c == '.'
            || c == '_'
            || c.is_ascii_alphabetic()
            || (!first && c.is_ascii_digit())
    };
    chars.next().is_some_and(|c| ok(c, true)) && chars.all(|c| ok(c, false))
}

/// An insertion-ordered map: a later value replaces an earlier one in place.
#[derive(Default)]
struct OrderedEnv(Vec<(String, String)>);

impl OrderedEnv {
    fn set(&mut self, k: String, v: String) {
        match self.0.iter_mut().find(|(name, _)| *name == k) {
            Some(slot) => slot.1 = v,
            None => self.0.push((k, v)),
        }
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
}

/// The service variables of `inputs.pod`'s namespace. A static pod gets
/// what the cache knows; a pod from the API waits until services were listed.
fn service_env(inputs: &EnvInputs) -> Result<BTreeMap<String, String>, EnvError> {
    let spec = inputs.pod.spec.as_ref();
    let enable_links = spec.and_then(|s| s.enable_service_links).unwrap_or(true);
    let namespace = inputs
        .pod
        .metadata
        .namespace
        .as_deref()
        .unwrap_or("default");
    let services = match inputs.objects.services() {
        Ok(s) => s,
        Err(_) if inputs.is_static => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    Ok(envvars::service_env(
        services.iter().map(|s| s.as_ref()),
        namespace,
        enable_links,
    ))
}

/// Optional lookups: a missing object of an optional reference is skipped.
fn optional_lookup<T>(
    result: Result<T, ObjectError>,
    optional: bool,
) -> Result<Option<T>, EnvError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if optional && e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub fn make_environment_variables(
    inputs: &EnvInputs,
    container: &Container,
) -> Result<ContainerEnv, EnvError> {
    let pod = inputs.pod;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut service = service_env(inputs)?;
    let mut env = OrderedEnv::default();
    let mut warnings = Vec::new();

    // envFrom first; `env` entries then override.
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let (kind, name, data): (&str, String, BTreeMap<String, String>) =
            if let Some(cm_ref) = &from.config_map_ref {
                let got = optional_lookup(
                    inputs.objects.config_map(namespace, &cm_ref.name),
                    cm_ref.optional.unwrap_or(false),
                )?;
                let Some(cm) = got else { continue };
                (
                    "configMap",
                    cm_ref.name.clone(),
                    cm.data.clone().unwrap_or_default(),
                )
            } else if let Some(s_ref) = &from.secret_ref {
                let got = optional_lookup(
                    inputs.objects.secret(namespace, &s_ref.name),
                    s_ref.optional.unwrap_or(false),
                )?;
                let Some(secret) = got else { continue };
                let data = secret
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
                    .collect();
                ("secret", s_ref.name.clone(), data)
            } else {
                continue;
            };
        let mut invalid = Vec::new();
        for (k, v) in data {
            let key = format!("{prefix}{k}");
            if !is_env_var_name(&key) {
                invalid.push(key);
                continue;
            }
            env.set(key, v);
        }
        if !invalid.is_empty() {
            invalid.sort();
            warnings.push(EnvWarning {
                reason: "InvalidEnvironmentVariableNames",
                message: format!(
                    "Keys [{}] from the EnvFrom {kind} {namespace}/{name} were skipped since they are considered invalid environment variable names.",
                    invalid.join(", ")
                ),
            });
        }
    }

    for var in container.env.iter().flatten() {
        let value = match (
            var.value.as_deref().filter(|v| !v.is_empty()),
            &var.value_from,
        ) {
            (Some(v), _) => expand_vars(v, &|name| {
                env.get(name)
                    .or_else(|| service.get(name).map(String::as_str))
                    .map(String::from)
            }),
            (None, Some(from)) => {
                if let Some(field) = &from.field_ref {
                    downward::env_field(pod, field, inputs.placement)?
                } else if let Some(res) = &from.resource_field_ref {
                    let target = match res.container_name.as_deref().filter(|n| !n.is_empty()) {
                        None => container,
                        Some(name) => pod
                            .spec
                            .iter()
                            .flat_map(|s| {
                                s.containers
                                    .iter()
                                    .chain(s.init_containers.iter().flatten())
                            })
                            .find(|c| c.name == name)
                            .ok_or_else(|| DownwardError::NoContainer(name.to_string()))?,
                    };
                    downward::container_resource(res, target, inputs.node)?
                } else if let Some(key_ref) = &from.config_map_key_ref {
                    let optional = key_ref.optional.unwrap_or(false);
                    let Some(cm) = optional_lookup(
                        inputs.objects.config_map(namespace, &key_ref.name),
                        optional,
                    )?
                    else {
                        continue;
                    };
                    match cm.data.as_ref().and_then(|d| d.get(&key_ref.key)) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => {
                            return Err(EnvError::MissingKey {
                                key: key_ref.key.clone(),
                                kind: "ConfigMap",
                                namespace: namespace.into(),
                                name: key_ref.name.clone(),
                            });
                        }
                    }
                } else if let Some(key_ref) = &from.secret_key_ref {
                    let optional = key_ref.optional.unwrap_or(false);
                    let Some(secret) =
                        optional_lookup(inputs.objects.secret(namespace, &key_ref.name), optional)?
                    else {
                        continue;
                    };
                    match secret.data.as_ref().and_then(|d| d.get(&key_ref.key)) {
                        Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(EnvError::MissingKey {
                                key: key_ref.key.clone(),
                                kind: "Secret",
                                namespace: namespace.into(),
                                name: key_ref.name.clone(),
                            });
                        }
                    }
                } else {
                    String::new()
                }
            }
            (None, None) => String::new(),
        };
        // A declared variable hides the service variable of the same name.
        service.remove(&var.name);
        env.set(var.name.clone(), value);
    }

    let mut vars = env.0;
    for (k, v) in service {
        if !vars.iter().any(|(name, _)| *name == k) {
            vars.push((k, v));
        }
    }
    Ok(ContainerEnv { vars, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubeapi::objects::InMemoryObjects;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{
        ConfigMap, ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
        ObjectFieldSelector, PodSpec, ResourceFieldSelector, Secret, SecretKeySelector, Service,
        ServicePort, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn meta(ns: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..Default::default()
        }
    }

    fn objects() -> InMemoryObjects {
        InMemoryObjects {
            config_maps: vec![ConfigMap {
                metadata: meta("shop", "app-config"),
                data: Some(
                    [("APP_COLOR", "blue"), ("APP_MODE", "prod"), ("1bad", "x")]
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            }],
            secrets: vec![Secret {
                metadata: meta("shop", "db"),
                data: Some([("password".to_string(), ByteString(b"s3cret".to_vec()))].into()),
                ..Default::default()
            }],
            services: vec![Service {
                metadata: meta("default", "kubernetes"),
                spec: Some(ServiceSpec {
                    cluster_ip: Some("10.96.0.1".into()),
                    ports: Some(vec![ServicePort {
                        name: Some("https".into()),
                        port: 443,
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                uid: Some("uid-1".into()),
                ..meta("shop", "web")
            },
            spec: Some(PodSpec {
                node_name: Some("node1".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }

    fn from(name: &str, source: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(source),
            ..Default::default()
        }
    }

    fn cm_key(name: &str, key: &str, optional: bool) -> EnvVarSource {
        EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: name.into(),
                key: key.into(),
                optional: Some(optional),
            }),
            ..Default::default()
        }
    }

    fn run(container: &Container, objects: &InMemoryObjects) -> Result<ContainerEnv, EnvError> {
        let pod = pod();
        let placement = PodPlacement {
            pod_ips: vec!["10.1.0.7".into()],
            host_ips: vec!["192.168.0.2".into()],
        };
        let node = NodeAllocatable {
            cpu_millis: 2000,
            memory_bytes: 1 << 30,
            ephemeral_storage_bytes: 1 << 34,
        };
        make_environment_variables(
            &EnvInputs {
                pod: &pod,
                placement: &placement,
                node: &node,
                is_static: false,
                objects,
            },
            container,
        )
    }

    #[test]
    fn every_source_and_expansion() {
        let c = Container {
            name: "app".into(),
            env_from: Some(vec![EnvFromSource {
                prefix: Some("CFG_".into()),
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "app-config".into(),
                    optional: None,
                }),
                ..Default::default()
            }]),
            env: Some(vec![
                from("COLOR", cm_key("app-config", "APP_COLOR", false)),
                from(
                    "PASSWORD",
                    EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "db".into(),
                            key: "password".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "POD_IP",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "status.podIP".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "CPU",
                    EnvVarSource {
                        resource_field_ref: Some(ResourceFieldSelector {
                            resource: "limits.cpu".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ),
                var(
                    "URL",
                    "https://$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)/$(COLOR)",
                ),
                var("LITERAL", "$$(COLOR) $(UNKNOWN)"),
                var("CFG_APP_MODE", "overridden-$(CFG_APP_MODE)"),
                from("MISSING_OPTIONAL", cm_key("nope", "k", true)),
                from("MISSING_KEY_OPTIONAL", cm_key("app-config", "nope", true)),
                var("EMPTY", ""),
            ]),
            ..Default::default()
        };
        let env = run(&c, &objects()).unwrap();
        assert_eq!(env.get("CFG_APP_COLOR"), Some("blue"));
        assert_eq!(env.get("CFG_1bad"), Some("x"), "the prefix makes it valid");
        assert_eq!(env.get("COLOR"), Some("blue"));
        assert_eq!(env.get("PASSWORD"), Some("s3cret"));
        assert_eq!(env.get("POD_IP"), Some("10.1.0.7"));
        assert_eq!(env.get("CPU"), Some("2"), "no limit: the node's 2 cores");
        assert_eq!(env.get("URL"), Some("https://10.96.0.1:443/blue"));
        assert_eq!(env.get("LITERAL"), Some("$(COLOR) $(UNKNOWN)"));
        assert_eq!(env.get("CFG_APP_MODE"), Some("overridden-prod"));
        assert_eq!(env.get("MISSING_OPTIONAL"), None);
        assert_eq!(env.get("MISSING_KEY_OPTIONAL"), None);
        assert_eq!(env.get("EMPTY"), Some(""));
        assert_eq!(env.get("KUBERNETES_PORT_443_TCP_PROTO"), Some("tcp"));
        assert!(env.warnings.is_empty());
        assert_eq!(env.expand("echo $(COLOR) $(NOPE)"), "echo blue $(NOPE)");
    }

    #[test]
    fn invalid_envfrom_keys_are_skipped_with_a_warning() {
        let c = Container {
            name: "app".into(),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "app-config".into(),
                    optional: None,
                }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let env = run(&c, &objects()).unwrap();
        assert_eq!(env.get("APP_MODE"), Some("prod"));
        assert_eq!(env.get("1bad"), None);
        assert_eq!(
            env.warnings,
            [EnvWarning {
                reason: "InvalidEnvironmentVariableNames",
                message: "Keys [1bad] from the EnvFrom configMap shop/app-config were skipped since they are considered invalid environment variable names.".into(),
            }]
        );
    }

    #[test]
    fn missing_objects_and_keys_are_worded_as_the_kubelet_does() {
        let with = |v: EnvVar| Container {
            name: "app".into(),
            env: Some(vec![v]),
            ..Default::default()
        };
        let err = run(&with(from("X", cm_key("late", "k", false))), &objects()).unwrap_err();
        assert_eq!(err.to_string(), "configmap \"late\" not found");
        let err = run(
            &with(from("X", cm_key("app-config", "k", false))),
            &objects(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "couldn't find key k in ConfigMap shop/app-config"
        );
        let secret = EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: "db".into(),
                key: "user".into(),
                optional: None,
            }),
            ..Default::default()
        };
        let err = run(&with(from("X", secret)), &objects()).unwrap_err();
        assert_eq!(err.to_string(), "couldn't find key user in Secret shop/db");
        let secret = EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: "gone".into(),
                key: "user".into(),
                optional: None,
            }),
            ..Default::default()
        };
        let err = run(&with(from("X", secret)), &objects()).unwrap_err();
        assert_eq!(err.to_string(), "secret \"gone\" not found");
    }

    #[test]
    fn env_var_names() {
        for ok in ["A", "a_b", "-x", ".y", "A1", "my.var-2"] {
            assert!(is_env_var_name(ok), "{ok}");
        }
        for bad in ["", "1a", "a b", "a=b", "ü"] {
            assert!(!is_env_var_name(bad), "{bad}");
        }
    }
}
