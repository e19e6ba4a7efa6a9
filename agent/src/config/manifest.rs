//! One static pod manifest: decode it, validate what the agent relies on the
//! way the apiserver would, then default it the way kubelet and the apiserver
//! do for a static pod.
//!
//! Everything here is pure: bytes and a node name in, a [`Pod`] or a
//! [`ManifestError`] out.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod, PodSpec, Probe, Toleration, Volume};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use sha2::{Digest, Sha256};

use super::SOURCE_FILE;
use crate::quantity::{self, QuantityError};

pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
pub const CONFIG_HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
pub const CONFIG_SEEN_ANNOTATION: &str = "kubernetes.io/config.seen";

pub const DEFAULT_NAMESPACE: &str = "default";
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";
pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];
const IMAGE_PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];

/// The largest manifest file the agent reads: kube-apiserver's request size
/// limit, so a static pod is never bigger than its mirror pod could be.
pub const MAX_MANIFEST_BYTES: u64 = 3 * 1024 * 1024;
/// The most containers (init and app together) the agent runs in one pod.
/// Kubernetes sets no number; each container costs a shim, a rootfs mount
/// and a cgroup, so a pod of thousands is refused instead of worked on for
/// minutes.
pub const MAX_CONTAINERS_PER_POD: usize = 250;

/// A manifest file that did not become a pod. Display reads like kubectl:
/// `pods/bad.yaml: spec.containers[0].image: Required value`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read (permissions, vanished mid-read, ...).
    #[error("{}: {message}", file.display())]
    Read { file: PathBuf, message: String },
    /// Not YAML/JSON, or a field of the wrong type. `field` is the path of
    /// the offending field when the decoder got that far.
    #[error("{}: {}{message}", file.display(), field.as_deref().map(|f| format!("{f}: ")).unwrap_or_default())]
    Decode {
        file: PathBuf,
        field: Option<String>,
        message: String,
    },
    /// The file is larger than [`MAX_MANIFEST_BYTES`]; it was not decoded.
    #[error("{}: the manifest is {size} bytes, over the limit of {limit} bytes", file.display())]
    TooLarge {
        file: PathBuf,
        size: u64,
        limit: u64,
    },
    /// Decoded, but the apiserver would reject it. Never empty.
    #[error("{}: {}", file.display(), FieldErrors(errors))]
    Invalid {
        file: PathBuf,
        errors: Vec<FieldError>,
    },
}

impl ManifestError {
    /// The manifest file this error is about.
    pub fn file(&self) -> &Path {
        match self {
            Self::Read { file, .. }
            | Self::Decode { file, .. }
            | Self::TooLarge { file, .. }
            | Self::Invalid { file, .. } => file,
        }
    }
}

/// kubectl shows one field error bare and several as `[a, b]`.
struct FieldErrors<'a>(&'a [FieldError]);

impl fmt::Display for FieldErrors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [one] => write!(f, "{one}"),
            many => {
                f.write_str("[")?;
                for (i, e) in many.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// One invalid field, as apimachinery's `field.Error` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `spec.containers[0].resources.limits.cpu`
    pub field: String,
    pub kind: FieldErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required {
        detail: Option<String>,
    },
    /// `value` is already rendered: strings quoted, numbers bare.
    Invalid {
        value: String,
        detail: String,
    },
    Duplicate {
        value: String,
    },
    NotSupported {
        value: String,
        supported: &'static [&'static str],
    },
    Forbidden {
        detail: String,
    },
    /// A list longer than allowed.
    TooMany {
        actual: usize,
        max: usize,
    },
    NotFound {
        value: String,
    },
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.field)?;
        match &self.kind {
            FieldErrorKind::Required { detail: None } => f.write_str("Required value"),
            FieldErrorKind::Required { detail: Some(d) } => write!(f, "Required value: {d}"),
            FieldErrorKind::Invalid { value, detail } => {
                write!(f, "Invalid value: {value}: {detail}")
            }
            FieldErrorKind::Duplicate { value } => write!(f, "Duplicate value: {value}"),
            FieldErrorKind::NotSupported { value, supported } => {
                let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
                write!(
                    f,
                    "Unsupported value: {value}: supported values: {}",
                    list.join(", ")
                )
            }
            FieldErrorKind::Forbidden { detail } => write!(f, "Forbidden: {detail}"),
            FieldErrorKind::TooMany { actual, max } => {
                write!(f, "Too many: {actual}: must have at most {max} items")
            }
            FieldErrorKind::NotFound { value } => write!(f, "Not found: {value}"),
        }
    }
}

impl FieldError {
    fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::TooMany { actual, max },
        }
    }
    fn required(field: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Required { detail: None },
        }
    }
    pub(super) fn invalid(
        field: impl Into<String>,
        value: &str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Invalid {
                value: format!("{value:?}"),
                detail: detail.into(),
            },
        }
    }
    fn invalid_number(field: impl Into<String>, value: i64, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Invalid {
                value: value.to_string(),
                detail: detail.into(),
            },
        }
    }
    fn duplicate(field: impl Into<String>, value: &str) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Duplicate {
                value: format!("{value:?}"),
            },
        }
    }
    fn not_supported(
        field: impl Into<String>,
        value: &str,
        supported: &'static [&'static str],
    ) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::NotSupported {
                value: format!("{value:?}"),
                supported,
            },
        }
    }
    fn not_found(field: impl Into<String>, value: &str) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::NotFound {
                value: format!("{value:?}"),
            },
        }
    }
    fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Forbidden {
                detail: detail.into(),
            },
        }
    }
}

/// Decode, validate and default one manifest file into the static pod kubelet
/// would run: `file` names the manifest in errors, `seen` becomes the
/// `kubernetes.io/config.seen` annotation.
pub fn load_static_pod(
    file: &Path,
    content: &[u8],
    node_name: &str,
    seen: jiff::Timestamp,
) -> Result<Pod, ManifestError> {
    let mut pod = decode_pod(file, content)?;
    let errors = validate_pod(&pod, node_name);
    if !errors.is_empty() {
        return Err(ManifestError::Invalid {
            file: file.to_owned(),
            errors,
        });
    }
    // The kubelet refuses what only the apiserver could resolve: a static
    // pod must run with the API down.
    if let Some(kind) = crate::kubeapi::objects::api_reference_kind(&pod) {
        return Err(ManifestError::Decode {
            file: file.to_owned(),
            field: None,
            message: format!("static pods may not reference {kind}"),
        });
    }
    apply_static_pod_defaults(&mut pod, node_name);
    apply_pod_defaults(&mut pod);
    pod.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(CONFIG_SEEN_ANNOTATION.into(), format_rfc3339_nano(seen));
    Ok(pod)
}

/// Decode one Pod from YAML or JSON (a document starting with `{`). Type
/// errors name the field path; `kind` and `apiVersion` are required, as the
/// apiserver's decoder requires them.
pub fn decode_pod(file: &Path, content: &[u8]) -> Result<Pod, ManifestError> {
    let decode_error = |field: Option<String>, message: String| ManifestError::Decode {
        file: file.to_owned(),
        field,
        message,
    };
    if !content.iter().any(|b| !b.is_ascii_whitespace()) {
        return Err(decode_error(None, "file is empty: expected one Pod".into()));
    }

    // First a look at the type fields, so a Deployment or a typo in `kind`
    // is reported as that and not as some missing Pod field. JSON is read as
    // JSON (YAML parsers differ on some of it), but a document starting with
    // `{` may also be YAML flow style.
    let looks_like_json = content.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let json = looks_like_json.then(|| serde_json::from_slice::<serde_json::Value>(content));
    let is_json = matches!(json, Some(Ok(_)));
    let (kind, api_version) = match json {
        Some(Ok(v)) => {
            let get = |k: &str| {
                v.get(k).map(|x| {
                    x.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| x.to_string())
                })
            };
            (get("kind"), get("apiVersion"))
        }
        json_error => {
            let v: serde_yaml::Value = serde_yaml::from_slice(content).map_err(|e| {
                // Not YAML either: for a `{` document the JSON error is the
                // one that helps.
                let message = match json_error {
                    Some(Err(json)) => json.to_string(),
                    _ => e.to_string(),
                };
                decode_error(None, message)
            })?;
            if !v.is_mapping() {
                return Err(decode_error(
                    None,
                    "expected a Pod object (a mapping with kind, apiVersion, metadata, spec)"
                        .into(),
                ));
            }
            let get = |k: &str| {
                v.get(k).map(|x| {
                    x.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| format!("{x:?}"))
                })
            };
            (get("kind"), get("apiVersion"))
        }
    };
    let mut errors = Vec::new();
    match kind.as_deref() {
        None | Some("") => errors.push(FieldError::required("kind")),
        Some("Pod") => {}
        Some(other) => errors.push(FieldError::not_supported("kind", other, &["Pod"])),
    }
    match api_version.as_deref() {
        None | Some("") => errors.push(FieldError::required("apiVersion")),
        Some("v1") => {}
        Some(other) => errors.push(FieldError::not_supported("apiVersion", other, &["v1"])),
    }
    if !errors.is_empty() {
        return Err(ManifestError::Invalid {
            file: file.to_owned(),
            errors,
        });
    }

    let decoded = if is_json {
        let mut de = serde_json::Deserializer::from_slice(content);
        serde_path_to_error::deserialize(&mut de).map_err(split_decode_error)
    } else {
        serde_path_to_error::deserialize(serde_yaml::Deserializer::from_slice(content))
            .map_err(split_decode_error)
    };
    decoded.map_err(|(field, message)| decode_error(field, message))
}

/// Field path and message of a decode error. serde_yaml already prefixes
/// its message with the path; it is kept once, in the field.
pub(super) fn split_decode_error<E: fmt::Display>(
    e: serde_path_to_error::Error<E>,
) -> (Option<String>, String) {
    let path = e.path().to_string();
    let message = e.into_inner().to_string();
    if path == "." {
        return (None, message);
    }
    let message = message
        .strip_prefix(&format!("{path}: "))
        .map(str::to_owned)
        .unwrap_or(message);
    (Some(path), message)
}

/// The checks the apiserver would make that the agent relies on. `node_name`
/// is needed because the static pod's final name is `<name>-<node>`.
pub fn validate_pod(pod: &Pod, node_name: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let meta = &pod.metadata;
    match meta.name.as_deref() {
        None | Some("") => errors.push(FieldError::required("metadata.name")),
        Some(name) => {
            if let Err(detail) = check_dns1123_subdomain(name) {
                errors.push(FieldError::invalid("metadata.name", name, detail));
            } else {
                let full = static_pod_name(name, node_name);
                if let Err(detail) = check_dns1123_subdomain(&full) {
                    errors.push(FieldError::invalid(
                        "metadata.name",
                        &full,
                        format!("{detail} (the static pod name is <name>-<node name>)"),
                    ));
                }
            }
        }
    }
    if let Some(ns) = meta.namespace.as_deref().filter(|ns| !ns.is_empty())
        && let Err(detail) = check_dns1123_label(ns)
    {
        errors.push(FieldError::invalid("metadata.namespace", ns, detail));
    }

    let Some(spec) = pod.spec.as_ref() else {
        errors.push(FieldError::required("spec.containers"));
        return errors;
    };
    if let Some(policy) = spec.restart_policy.as_deref().filter(|p| !p.is_empty())
        && !RESTART_POLICIES.contains(&policy)
    {
        errors.push(FieldError::not_supported(
            "spec.restartPolicy",
            policy,
            RESTART_POLICIES,
        ));
    }
    if let Some(grace) = spec.termination_grace_period_seconds
        && grace < 0
    {
        errors.push(FieldError::invalid_number(
            "spec.terminationGracePeriodSeconds",
            grace,
            "must be greater than or equal to 0",
        ));
    }
    if spec.containers.is_empty() {
        errors.push(FieldError::required("spec.containers"));
    }
    errors.extend(host_users_errors(spec));
    if let Some(e) = too_many_containers(spec) {
        // Checked before the containers one by one: that is the work refused.
        errors.push(e);
        return errors;
    }

    // Volume names become directory names on the node: DNS labels only.
    let mut volumes = HashSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let field = format!("spec.volumes[{i}].name");
        if v.name.is_empty() {
            errors.push(FieldError::required(field));
        } else if let Err(detail) = check_dns1123_label(&v.name) {
            errors.push(FieldError::invalid(field, &v.name, detail));
        } else if !volumes.insert(v.name.clone()) {
            errors.push(FieldError::duplicate(field, &v.name));
        }
        volume_source_paths(v, &format!("spec.volumes[{i}]"), &mut errors);
    }

    // Names are unique across init and app containers: they share the
    // pod's log directory and cgroup namespace.
    let mut names = HashSet::new();
    let host_network = spec.host_network.unwrap_or(false);
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        validate_container(
            c,
            &format!("spec.initContainers[{i}]"),
            true,
            host_network,
            &volumes,
            &mut names,
            &mut errors,
        );
    }
    for (i, c) in spec.containers.iter().enumerate() {
        validate_container(
            c,
            &format!("spec.containers[{i}]"),
            false,
            host_network,
            &volumes,
            &mut names,
            &mut errors,
        );
    }
    errors
}

/// The host and volume paths a volume names, checked as the apiserver
/// checks them: a hostPath without `..`, projected files inside the volume.
fn volume_source_paths(v: &Volume, path: &str, errors: &mut Vec<FieldError>) {
    use kubelab_rules::validation::{local_non_reserved_path, path_no_backsteps};
    if let Some(h) = &v.host_path {
        for why in path_no_backsteps(&h.path) {
            errors.push(FieldError::invalid(
                format!("{path}.hostPath.path"),
                &h.path,
                why,
            ));
        }
    }
    let mut files: Vec<(String, String)> = Vec::new();
    let mut keys = |at: String, items: &Option<Vec<KeyToPath>>| {
        for (j, item) in items.iter().flatten().enumerate() {
            files.push((format!("{at}.items[{j}].path"), item.path.clone()));
        }
    };
    if let Some(c) = &v.config_map {
        keys(format!("{path}.configMap"), &c.items);
    }
    if let Some(s) = &v.secret {
        keys(format!("{path}.secret"), &s.items);
    }
    for (k, source) in v
        .projected
        .iter()
        .flat_map(|p| p.sources.iter().flatten())
        .enumerate()
    {
        if let Some(c) = &source.config_map {
            keys(format!("{path}.projected.sources[{k}].configMap"), &c.items);
        }
        if let Some(s) = &source.secret {
            keys(format!("{path}.projected.sources[{k}].secret"), &s.items);
        }
    }
    let downward = v
        .downward_api
        .iter()
        .map(|d| (format!("{path}.downwardAPI"), &d.items))
        .chain(
            v.projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten())
                .enumerate()
                .filter_map(|(k, s)| {
                    let d = s.downward_api.as_ref()?;
                    Some((
                        format!("{path}.projected.sources[{k}].downwardAPI"),
                        &d.items,
                    ))
                }),
        );
    for (at, items) in downward {
        for (j, item) in items.iter().flatten().enumerate() {
            files.push((format!("{at}.items[{j}].path"), item.path.clone()));
        }
    }
    for (field, p) in files {
        for why in local_non_reserved_path(&p) {
            errors.push(FieldError::invalid(field.clone(), &p, why));
        }
    }
}

/// The node's namespaces that `hostUsers: false` forbids, as errors.
pub fn host_users_errors(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<FieldError> {
    kubelab_rules::host_users::forbidden_host_namespaces(spec)
        .into_iter()
        .map(|field| {
            FieldError::forbidden(
                format!("spec.{field}"),
                kubelab_rules::host_users::FORBIDDEN_DETAIL,
            )
        })
        .collect()
}

/// A pod with more containers than [`MAX_CONTAINERS_PER_POD`], as an error
/// on the list that goes over it (`spec.containers`, or `spec.initContainers`
/// when the init containers alone do).
pub fn too_many_containers(spec: &k8s_openapi::api::core::v1::PodSpec) -> Option<FieldError> {
    let init = spec.init_containers.as_ref().map_or(0, Vec::len);
    let total = init + spec.containers.len();
    if total <= MAX_CONTAINERS_PER_POD {
        return None;
    }
    Some(if init > MAX_CONTAINERS_PER_POD {
        FieldError::too_many("spec.initContainers", init, MAX_CONTAINERS_PER_POD)
    } else {
        FieldError::too_many(
            "spec.containers",
            spec.containers.len(),
            MAX_CONTAINERS_PER_POD - init,
        )
    })
}

fn validate_container(
    c: &Container,
    path: &str,
    is_init: bool,
    host_network: bool,
    volumes: &HashSet<String>,
    names: &mut HashSet<String>,
    errors: &mut Vec<FieldError>,
) {
    for (j, vm) in c.volume_mounts.iter().flatten().enumerate() {
        let field = format!("{path}.volumeMounts[{j}]");
        if vm.name.is_empty() {
            errors.push(FieldError::required(format!("{field}.name")));
        } else if !volumes.contains(&vm.name) {
            errors.push(FieldError::not_found(format!("{field}.name"), &vm.name));
        }
        if vm.mount_path.is_empty() {
            errors.push(FieldError::required(format!("{field}.mountPath")));
        }
        for (key, value) in [
            ("subPath", &vm.sub_path),
            ("subPathExpr", &vm.sub_path_expr),
        ] {
            if let Some(sub) = value.as_deref().filter(|s| !s.is_empty())
                && let Err(detail) = check_local_descending_path(sub)
            {
                errors.push(FieldError::invalid(format!("{field}.{key}"), sub, detail));
            }
        }
    }
    if c.name.is_empty() {
        errors.push(FieldError::required(format!("{path}.name")));
    } else if let Err(detail) = check_dns1123_label(&c.name) {
        errors.push(FieldError::invalid(format!("{path}.name"), &c.name, detail));
    } else if !names.insert(c.name.clone()) {
        errors.push(FieldError::duplicate(format!("{path}.name"), &c.name));
    }

    match c.image.as_deref() {
        None => errors.push(FieldError::required(format!("{path}.image"))),
        Some(image) if image.trim().is_empty() => {
            errors.push(FieldError::required(format!("{path}.image")))
        }
        Some(image) if image.trim() != image => errors.push(FieldError::invalid(
            format!("{path}.image"),
            image,
            "must not have leading or trailing whitespace",
        )),
        Some(_) => {}
    }
    if let Some(policy) = c.image_pull_policy.as_deref().filter(|p| !p.is_empty())
        && !IMAGE_PULL_POLICIES.contains(&policy)
    {
        errors.push(FieldError::not_supported(
            format!("{path}.imagePullPolicy"),
            policy,
            IMAGE_PULL_POLICIES,
        ));
    }
    if let Some(policy) = c.restart_policy.as_deref() {
        if !is_init {
            errors.push(FieldError::forbidden(
                format!("{path}.restartPolicy"),
                "may not be set for non-init containers",
            ));
        } else if policy != "Always" {
            errors.push(FieldError::not_supported(
                format!("{path}.restartPolicy"),
                policy,
                &["Always"],
            ));
        }
    }

    if let Some(resources) = &c.resources {
        let limits = validate_resource_list(
            resources.limits.as_ref(),
            &format!("{path}.resources.limits"),
            errors,
        );
        let requests = validate_resource_list(
            resources.requests.as_ref(),
            &format!("{path}.resources.requests"),
            errors,
        );
        for (name, request) in &requests {
            if let Some(limit) = limits.get(name)
                && request > limit
            {
                let raw = &resources.requests.as_ref().expect("parsed from requests")[name].0;
                let limit_raw = &resources.limits.as_ref().expect("parsed from limits")[name].0;
                errors.push(FieldError::invalid(
                    format!("{path}.resources.requests.{name}"),
                    raw,
                    format!("must be less than or equal to {name} limit of {limit_raw}"),
                ));
            }
        }
    }

    let mut port_names = HashSet::new();
    for (i, port) in c.ports.iter().flatten().enumerate() {
        let ppath = format!("{path}.ports[{i}]");
        if !(1..=65535).contains(&port.container_port) {
            errors.push(FieldError::invalid_number(
                format!("{ppath}.containerPort"),
                port.container_port.into(),
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(host_port) = port.host_port.filter(|p| *p != 0) {
            if !(1..=65535).contains(&host_port) {
                errors.push(FieldError::invalid_number(
                    format!("{ppath}.hostPort"),
                    host_port.into(),
                    "must be between 1 and 65535, inclusive",
                ));
            } else if host_network && host_port != port.container_port {
                errors.push(FieldError::invalid_number(
                    format!("{ppath}.hostPort"),
                    host_port.into(),
                    "must match `containerPort` when `hostNetwork` is true",
                ));
            }
        }
        if let Some(protocol) = port.protocol.as_deref()
            && !PROTOCOLS.contains(&protocol)
        {
            errors.push(FieldError::not_supported(
                format!("{ppath}.protocol"),
                protocol,
                PROTOCOLS,
            ));
        }
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            if let Err(detail) = check_iana_svc_name(name) {
                errors.push(FieldError::invalid(format!("{ppath}.name"), name, detail));
            } else if !port_names.insert(name) {
                errors.push(FieldError::duplicate(format!("{ppath}.name"), name));
            }
        }
    }
}

/// Parses every quantity of a resource list; returns the ones that parsed,
/// in the resource's base unit (millicores for cpu, bytes otherwise).
fn validate_resource_list(
    list: Option<&BTreeMap<String, Quantity>>,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> BTreeMap<String, i64> {
    let mut parsed = BTreeMap::new();
    for (name, quantity) in list.into_iter().flatten() {
        let field = format!("{path}.{name}");
        let (value, example) = if name == "cpu" {
            (quantity::cpu_millis(quantity), "500m or 0.5")
        } else {
            (
                quantity::bytes(quantity),
                if name == "memory" {
                    "128Mi or 1G"
                } else {
                    "1Gi or 500M"
                },
            )
        };
        match value {
            Ok(v) => {
                parsed.insert(name.clone(), v);
            }
            Err(QuantityError::Negative { .. }) => errors.push(FieldError::invalid(
                field,
                &quantity.0,
                "must be greater than or equal to 0",
            )),
            Err(QuantityError::OutOfRange { .. }) => errors.push(FieldError::invalid(
                field,
                &quantity.0,
                "must be less than 2^63 units",
            )),
            Err(QuantityError::Invalid { .. }) => errors.push(FieldError::invalid(
                field,
                &quantity.0,
                format!("must be a quantity like {example}"),
            )),
        }
    }
    parsed
}

/// kubelet's `generatePodName`: static pods are named after their node so
/// that mirror pods of different nodes do not collide.
pub fn static_pod_name(name: &str, node_name: &str) -> String {
    format!("{name}-{}", node_name.to_lowercase())
}

/// What kubelet's file source does to a decoded pod (`applyDefaults` in
/// `pkg/kubelet/config/common.go`): name and namespace, a UID that changes
/// whenever the manifest does, the config annotations, the node binding and
/// a toleration of every `NoExecute` taint.
pub fn apply_static_pod_defaults(pod: &mut Pod, node_name: &str) {
    let name = static_pod_name(pod.metadata.name.as_deref().unwrap_or_default(), node_name);
    let namespace = match pod.metadata.namespace.as_deref() {
        None | Some("") => DEFAULT_NAMESPACE.to_owned(),
        Some(ns) => ns.to_owned(),
    };
    if pod.metadata.uid.as_deref().unwrap_or_default().is_empty() {
        pod.metadata.uid = Some(static_pod_uid(pod, &namespace, &name));
    }
    pod.metadata.name = Some(name);
    pod.metadata.namespace = Some(namespace);
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(CONFIG_SOURCE_ANNOTATION.into(), SOURCE_FILE.into());
    annotations.insert(CONFIG_HASH_ANNOTATION.into(), uid);

    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    spec.node_name = Some(node_name.to_owned());
    spec.tolerations
        .get_or_insert_with(Vec::new)
        .push(Toleration {
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            ..Default::default()
        });
    pod.status.get_or_insert_with(Default::default).phase = Some("Pending".into());
}

/// A static pod's UID: sha256 over namespace, name and the decoded manifest
/// (its canonical JSON, so comments and formatting do not restart the pod),
/// shaped like a UUID. kubelet uses md5 of the object the same way.
pub fn static_pod_uid(pod: &Pod, namespace: &str, name: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(namespace.as_bytes());
    hasher.update([0]);
    hasher.update(name.as_bytes());
    hasher.update([0]);
    hasher.update(serde_json::to_vec(pod).expect("a Pod always serializes"));
    let hex = hex::encode(hasher.finalize());
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The apiserver's defaults (`SetDefaults_Pod`, `SetDefaults_Container`, ...)
/// for the fields the agent reads, so nothing downstream needs to know the
/// defaults.
pub fn apply_pod_defaults(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    default_str(&mut spec.restart_policy, "Always");
    default_str(&mut spec.dns_policy, "ClusterFirst");
    default_str(&mut spec.scheduler_name, DEFAULT_SCHEDULER_NAME);
    spec.termination_grace_period_seconds
        .get_or_insert(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS);
    spec.enable_service_links.get_or_insert(true);
    spec.security_context.get_or_insert_with(Default::default);
    let host_network = spec.host_network.unwrap_or(false);
    let containers = spec
        .init_containers
        .iter_mut()
        .flatten()
        .chain(spec.containers.iter_mut());
    for c in containers {
        apply_container_defaults(c, host_network);
    }
}

fn apply_container_defaults(c: &mut Container, host_network: bool) {
    let pull = kubelab_rules::image_pull_policy::default_pull_policy(
        c.image.as_deref().unwrap_or_default(),
    );
    default_str(&mut c.image_pull_policy, pull.as_str());
    default_str(
        &mut c.termination_message_path,
        DEFAULT_TERMINATION_MESSAGE_PATH,
    );
    default_str(&mut c.termination_message_policy, "File");
    for port in c.ports.iter_mut().flatten() {
        default_str(&mut port.protocol, "TCP");
        if host_network && port.host_port.unwrap_or(0) == 0 {
            port.host_port = Some(port.container_port);
        }
    }
    // A limit without a request requests the limit (this is what makes a
    // pod with only limits Guaranteed).
    if let Some(resources) = c.resources.as_mut()
        && let Some(limits) = resources.limits.as_ref().filter(|l| !l.is_empty())
    {
        let requests = resources.requests.get_or_insert_with(BTreeMap::new);
        for (name, limit) in limits {
            requests
                .entry(name.clone())
                .or_insert_with(|| limit.clone());
        }
    }
    for probe in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        apply_probe_defaults(probe);
    }
}

fn apply_probe_defaults(probe: &mut Probe) {
    probe.timeout_seconds.get_or_insert(1);
    probe.period_seconds.get_or_insert(10);
    probe.success_threshold.get_or_insert(1);
    probe.failure_threshold.get_or_insert(3);
    if let Some(http) = probe.http_get.as_mut() {
        default_str(&mut http.path, "/");
        default_str(&mut http.scheme, "HTTP");
    }
}

fn default_str(field: &mut Option<String>, value: &str) {
    if field.as_deref().unwrap_or_default().is_empty() {
        *field = Some(value.to_owned());
    }
}

/// Go's `time.RFC3339Nano` in UTC, with all nine digits (as kubelet prints
/// timestamps).
pub fn format_rfc3339_nano(ts: jiff::Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S.%NZ").to_string()
}

const DNS1123_LABEL_FMT: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_FMT: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && alnum(&b[0])
        && alnum(&b[b.len() - 1])
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

/// apimachinery's `IsDNS1123Label`.
/// kube-apiserver's `validateLocalDescendingPath` (subPath, subPathExpr).
pub fn check_local_descending_path(p: &str) -> Result<(), String> {
    match kubelab_rules::validation::local_descending_path(p).first() {
        Some(why) => Err((*why).into()),
        None => Ok(()),
    }
}

pub fn check_dns1123_label(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    if !is_label(s) {
        return Err(DNS1123_LABEL_FMT.into());
    }
    Ok(())
}

/// apimachinery's `IsDNS1123Subdomain`.
pub fn check_dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.len() > 253 {
        return Err("must be no more than 253 characters".into());
    }
    if !s.split('.').all(is_label) {
        return Err(DNS1123_SUBDOMAIN_FMT.into());
    }
    Ok(())
}

/// apimachinery's `IsValidPortName` (IANA_SVC_NAME).
fn check_iana_svc_name(s: &str) -> Result<(), String> {
    if s.len() > 15 {
        return Err("must be no more than 15 characters".into());
    }
    if !s
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        return Err(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into(),
        );
    }
    if s.contains("--") {
        return Err("must not contain consecutive hyphens".into());
    }
    if !s.bytes().any(|c| c.is_ascii_lowercase()) {
        return Err("must contain at least one letter (a-z)".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must not begin or end with a hyphen".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "node01";

    fn seen() -> jiff::Timestamp {
        "2024-05-01T10:00:00.5Z".parse().unwrap()
    }

    fn load(content: &str) -> Result<Pod, ManifestError> {
        load_static_pod(
            Path::new("pods/test.yaml"),
            content.as_bytes(),
            NODE,
            seen(),
        )
    }

    fn err(content: &str) -> String {
        load(content)
            .expect_err("manifest should be rejected")
            .to_string()
    }

    // From the study notes: the smallest pod there is.
    const MYAPP: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: myapp-pod
  labels:
    app: myapp
    type: front-end
spec:
  containers:  # a list
  - name: nginx-container
    image: nginx
";

    #[test]
    fn minimal_pod_gets_static_pod_identity() {
        let pod = load(MYAPP).unwrap();
        let meta = &pod.metadata;
        assert_eq!(meta.name.as_deref(), Some("myapp-pod-node01"));
        assert_eq!(meta.namespace.as_deref(), Some("default"));
        let uid = meta.uid.clone().unwrap();
        assert_eq!(uid.len(), 36);
        assert_eq!(uid.matches('-').count(), 4);
        let ann = meta.annotations.as_ref().unwrap();
        assert_eq!(ann[CONFIG_SOURCE_ANNOTATION], "file");
        assert_eq!(ann[CONFIG_HASH_ANNOTATION], uid);
        assert_eq!(
            ann[CONFIG_SEEN_ANNOTATION],
            "2024-05-01T10:00:00.500000000Z"
        );
        assert_eq!(meta.labels.as_ref().unwrap()["app"], "myapp");
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some(NODE));
        assert_eq!(
            spec.tolerations.as_ref().unwrap()[0].effect.as_deref(),
            Some("NoExecute")
        );
        assert_eq!(
            pod.status.as_ref().unwrap().phase.as_deref(),
            Some("Pending")
        );
    }

    #[test]
    fn apiserver_defaults_are_applied() {
        let pod = load(
            "\
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  hostNetwork: true
  containers:
  - name: a
    image: nginx:1.25
    ports: [{containerPort: 8080}]
    resources:
      limits: {cpu: 2, memory: 2Gi}
    readinessProbe:
      httpGet: {port: 8080}
  - name: b
    image: registry:5000/busybox
",
        )
        .unwrap();
        let spec = pod.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
        assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"));
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        assert_eq!(spec.enable_service_links, Some(true));
        let a = &spec.containers[0];
        assert_eq!(a.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(
            a.termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
        assert_eq!(a.termination_message_policy.as_deref(), Some("File"));
        let port = &a.ports.as_ref().unwrap()[0];
        assert_eq!(port.protocol.as_deref(), Some("TCP"));
        assert_eq!(port.host_port, Some(8080));
        let requests = a.resources.as_ref().unwrap().requests.as_ref().unwrap();
        assert_eq!(requests["cpu"].0, "2");
        assert_eq!(requests["memory"].0, "2Gi");
        let probe = a.readiness_probe.as_ref().unwrap();
        assert_eq!(
            (
                probe.timeout_seconds,
                probe.period_seconds,
                probe.success_threshold,
                probe.failure_threshold
            ),
            (Some(1), Some(10), Some(1), Some(3))
        );
        assert_eq!(probe.http_get.as_ref().unwrap().path.as_deref(), Some("/"));
        assert_eq!(
            spec.containers[1].image_pull_policy.as_deref(),
            Some("Always")
        );
    }

    #[test]
    fn explicit_values_win_over_defaults() {
        let pod = load(
            "\
apiVersion: v1
kind: Pod
metadata: {name: job, namespace: kube-system, uid: fixed-uid}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  containers:
  - {name: c, image: busybox, imagePullPolicy: Never}
",
        )
        .unwrap();
        assert_eq!(pod.metadata.namespace.as_deref(), Some("kube-system"));
        assert_eq!(pod.metadata.uid.as_deref(), Some("fixed-uid"));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.termination_grace_period_seconds, Some(2));
        assert_eq!(
            spec.containers[0].image_pull_policy.as_deref(),
            Some("Never")
        );
    }

    #[test]
    fn json_manifests_decode() {
        let pod = load(r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j"},"spec":{"containers":[{"name":"c","image":"busybox:1.35"}]}}"#).unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("j-node01"));
        assert_eq!(
            pod.spec.unwrap().containers[0].image_pull_policy.as_deref(),
            Some("IfNotPresent")
        );
    }

    #[test]
    fn yaml_flow_style_is_not_taken_for_json() {
        let pod = load("{apiVersion: v1, kind: Pod, metadata: {name: f}, spec: {containers: [{name: c, image: busybox}]}}").unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("f-node01"));
    }

    #[test]
    fn uid_follows_content_not_formatting() {
        let uid = |s: &str| load(s).unwrap().metadata.uid.unwrap();
        let reformatted = MYAPP
            .replace("# a list", "")
            .replace("  labels:", "  labels: # who\n");
        assert_eq!(uid(MYAPP), uid(&reformatted));
        assert_ne!(
            uid(MYAPP),
            uid(&MYAPP.replace("image: nginx", "image: nginx:1.25"))
        );
        assert_ne!(
            uid(MYAPP),
            uid(&MYAPP.replace("metadata:\n", "metadata:\n  namespace: other\n"))
        );
        let other_node =
            load_static_pod(Path::new("x"), MYAPP.as_bytes(), "node02", seen()).unwrap();
        assert_ne!(uid(MYAPP), other_node.metadata.uid.unwrap());
    }

    #[test]
    fn bad_cpu_quantity_reads_like_kubectl() {
        let e = err("\
apiVersion: v1
kind: Pod
metadata: {name: bad}
spec:
  containers:
  - name: app
    image: nginx
    resources:
      limits: {cpu: abc, memory: 1Gi}
");
        assert_eq!(
            e,
            r#"pods/test.yaml: spec.containers[0].resources.limits.cpu: Invalid value: "abc": must be a quantity like 500m or 0.5"#
        );
    }

    #[test]
    fn negative_quantities_are_rejected() {
        let e = err("\
apiVersion: v1
kind: Pod
metadata: {name: bad}
spec:
  containers:
  - name: app
    image: nginx
    resources:
      requests: {memory: -1Mi}
");
        assert_eq!(
            e,
            r#"pods/test.yaml: spec.containers[0].resources.requests.memory: Invalid value: "-1Mi": must be greater than or equal to 0"#
        );
    }

    #[test]
    fn request_above_limit_is_rejected() {
        let e = err("\
apiVersion: v1
kind: Pod
metadata: {name: greedy}
spec:
  containers:
  - name: app
    image: nginx
    resources:
      requests: {memory: 4Gi, cpu: 2}
      limits: {memory: 2Gi, cpu: 2}
");
        assert_eq!(
            e,
            r#"pods/test.yaml: spec.containers[0].resources.requests.memory: Invalid value: "4Gi": must be less than or equal to memory limit of 2Gi"#
        );
    }

    #[test]
    fn volume_names_and_sub_paths_cannot_name_node_paths() {
        let e = err("\
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  volumes:
  - name: ../../tmp/victim
    emptyDir: {}
  containers:
  - name: app
    image: busybox
    volumeMounts:
    - {name: ../../tmp/victim, mountPath: /v, subPath: ../up}
    - {name: missing, mountPath: /m}
");
        assert!(
            e.contains(r#"spec.volumes[0].name: Invalid value: "../../tmp/victim": a lowercase RFC 1123 label must consist of"#),
            "{e}"
        );
        assert!(
            e.contains(r#"spec.containers[0].volumeMounts[0].subPath: Invalid value: "../up": must not contain '..'"#),
            "{e}"
        );
        assert!(
            e.contains(r#"spec.containers[0].volumeMounts[1].name: Not found: "missing""#),
            "{e}"
        );
    }

    #[test]
    fn type_errors_name_the_field_path() {
        let e = load(
            "\
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: app
    image: nginx
    ports:
    - containerPort: http
",
        );
        let e = e.unwrap_err();
        assert_eq!(
            e.to_string(),
            "pods/test.yaml: spec.containers[0].ports[0].containerPort: invalid type: string \"http\", expected i32 at line 9 column 22"
        );
        let ManifestError::Decode { field, message, .. } = e else {
            panic!("expected a decode error")
        };
        assert_eq!(
            field.as_deref(),
            Some("spec.containers[0].ports[0].containerPort")
        );
        assert!(
            message.starts_with("invalid type: string \"http\", expected i32"),
            "{message}"
        );
    }

    #[test]
    fn several_errors_are_listed_together() {
        let e = err("\
apiVersion: v1
kind: Pod
metadata: {name: Bad_Name}
spec:
  restartPolicy: Sometimes
  containers:
  - name: app
    image: nginx
  - name: app
  - name: web
    image: nginx
    ports:
    - {containerPort: 0, protocol: HTTP}
    - {containerPort: 80, name: http}
    - {containerPort: 81, name: http}
");
        assert!(e.starts_with("pods/test.yaml: [metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{e}");
        for part in [
            r#"spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never""#,
            r#"spec.containers[1].name: Duplicate value: "app""#,
            "spec.containers[1].image: Required value",
            "spec.containers[2].ports[0].containerPort: Invalid value: 0: must be between 1 and 65535, inclusive",
            r#"spec.containers[2].ports[0].protocol: Unsupported value: "HTTP": supported values: "TCP", "UDP", "SCTP""#,
            r#"spec.containers[2].ports[2].name: Duplicate value: "http""#,
        ] {
            assert!(e.contains(part), "missing {part:?} in {e}");
        }
    }

    #[test]
    fn kind_and_api_version_are_checked() {
        assert_eq!(
            err("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n"),
            r#"pods/test.yaml: [kind: Unsupported value: "Deployment": supported values: "Pod", apiVersion: Unsupported value: "apps/v1": supported values: "v1"]"#
        );
        assert_eq!(
            err("metadata: {name: d}\n"),
            "pods/test.yaml: [kind: Required value, apiVersion: Required value]"
        );
        assert_eq!(
            err("apiVersion: v1\nkind: Pod\nmetadata: {name: d}\n"),
            "pods/test.yaml: spec.containers: Required value"
        );
        assert_eq!(
            err("apiVersion: v1\nkind: Pod\nspec: {containers: [{name: c, image: i}]}\n"),
            "pods/test.yaml: metadata.name: Required value"
        );
    }

    #[test]
    fn syntax_errors_and_empty_files() {
        assert!(err("apiVersion: v1\nkind: [Pod\n").starts_with("pods/test.yaml: "));
        assert_eq!(
            err("  \n"),
            "pods/test.yaml: file is empty: expected one Pod"
        );
        assert!(err("- a\n- b\n").contains("expected a Pod object"));
        assert!(err("{\"kind\": \"Pod\",").starts_with("pods/test.yaml: EOF while parsing"));
    }

    #[test]
    fn name_must_fit_with_node_suffix() {
        let long = "a".repeat(250);
        let e = err(&MYAPP.replace("myapp-pod", &long));
        assert!(
            e.contains(
                "must be no more than 253 characters (the static pod name is <name>-<node name>)"
            ),
            "{e}"
        );
    }

    #[test]
    fn forbidden_sidecar_restart_policy_on_app_container() {
        let e = err("\
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  initContainers:
  - {name: sidecar, image: busybox, restartPolicy: Always}
  containers:
  - {name: app, image: busybox, restartPolicy: Always}
");
        assert_eq!(
            e,
            "pods/test.yaml: spec.containers[0].restartPolicy: Forbidden: may not be set for non-init containers"
        );
    }

    #[test]
    fn dns_names() {
        assert!(check_dns1123_label("my-name").is_ok());
        assert!(check_dns1123_label("123-abc").is_ok());
        assert!(check_dns1123_label("-a").is_err());
        assert!(check_dns1123_label("a.b").is_err());
        assert!(check_dns1123_label(&"a".repeat(64)).is_err());
        assert!(check_dns1123_subdomain("example.com").is_ok());
        assert!(check_dns1123_subdomain("example..com").is_err());
        assert!(check_dns1123_subdomain("Example").is_err());
        assert!(check_iana_svc_name("http").is_ok());
        assert!(check_iana_svc_name("8080").is_err());
        assert!(check_iana_svc_name("a--b").is_err());
    }

    #[test]
    fn pods_with_too_many_containers_are_refused_naming_the_list() {
        let containers: String = (0..10_000)
            .map(|i| format!("  - {{name: c{i}, image: busybox}}\n"))
            .collect();
        let e = err(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n{containers}"
        ));
        assert_eq!(
            e,
            "pods/test.yaml: spec.containers: Too many: 10000: must have at most 250 items"
        );
        let init: String = (0..300)
            .map(|i| format!("  - {{name: i{i}, image: busybox}}\n"))
            .collect();
        let e = err(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  initContainers:\n{init}  containers:\n  - {{name: app, image: busybox}}\n"
        ));
        assert_eq!(
            e,
            "pods/test.yaml: spec.initContainers: Too many: 300: must have at most 250 items"
        );
        // 200 init containers leave room for 50 app containers.
        let init: String = (0..200)
            .map(|i| format!("  - {{name: i{i}, image: busybox}}\n"))
            .collect();
        let apps: String = (0..51)
            .map(|i| format!("  - {{name: a{i}, image: busybox}}\n"))
            .collect();
        let e = err(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  initContainers:\n{init}  containers:\n{apps}"
        ));
        assert_eq!(
            e,
            "pods/test.yaml: spec.containers: Too many: 51: must have at most 50 items"
        );
        let apps: String = (0..250)
            .map(|i| format!("  - {{name: a{i}, image: busybox}}\n"))
            .collect();
        assert!(
            load(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n{apps}"
            ))
            .is_ok()
        );
    }
}
