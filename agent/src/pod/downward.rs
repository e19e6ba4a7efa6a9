//! The downward API: pod fields (`fieldRef`) and container resources
//! (`resourceFieldRef`) as strings, for environment variables and for
//! `downwardAPI` volume files, with the kubelet's formats and rounding
//! (`pkg/fieldpath`, `pkg/api/v1/resource`). Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod, ResourceFieldSelector};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownwardError {
    #[error("unsupported fieldPath: {0}")]
    UnsupportedField(String),
    #[error("fieldPath {0:?} does not support subscript")]
    NoSubscript(String),
    #[error("unsupported container resource : {0}")]
    UnsupportedResource(String),
    #[error("container {0} not found")]
    NoContainer(String),
    #[error("{field}: {source}")]
    Quantity {
        field: String,
        #[source]
        source: quantity::QuantityError,
    },
}

/// What the node reports as allocatable: the default of every limit a
/// container leaves unset (kubelet's `defaultPodLimitsForDownwardAPI`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeAllocatable {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
    pub ephemeral_storage_bytes: i64,
}

impl NodeAllocatable {
    /// This host: its CPUs and memory, and the filesystem holding `root_dir`.
    pub fn of_host(root_dir: &std::path::Path) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as i64);
        let storage = nix::sys::statvfs::statvfs(root_dir)
            .map(|st| (st.blocks() * st.fragment_size()) as i64)
            .unwrap_or(0);
        NodeAllocatable {
            cpu_millis: cpus * 1000,
            memory_bytes: crate::host::memory_total() as i64,
            ephemeral_storage_bytes: storage,
        }
    }
}

/// Where the pod is, as only the node knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodPlacement {
    pub pod_ips: Vec<String>,
    pub host_ips: Vec<String>,
}

/// Go's `%q` of a string: quoted, with Go's escapes.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `fieldpath.FormatMap`: `key="value"` lines in key order.
pub fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `metadata.labels['app']` → (`metadata.labels`, `app`).
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let inner = path.strip_suffix("']")?;
    let (base, key) = inner.split_once("['")?;
    (!base.is_empty()).then_some((base, key))
}

/// `fieldpath.ExtractFieldPathAsString`: the metadata fields, the only ones a
/// `downwardAPI` volume may use.
pub fn metadata_field(pod: &Pod, path: &str) -> Result<String, DownwardError> {
    let meta = &pod.metadata;
    if let Some((base, key)) = split_subscript(path) {
        return match base {
            "metadata.annotations" => Ok(meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(key).cloned())
                .unwrap_or_default()),
            "metadata.labels" => Ok(meta
                .labels
                .as_ref()
                .and_then(|l| l.get(key).cloned())
                .unwrap_or_default()),
            _ => Err(DownwardError::NoSubscript(path.to_string())),
        };
    }
    Ok(match path {
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        other => return Err(DownwardError::UnsupportedField(other.to_string())),
    })
}

/// `podFieldSelectorRuntimeValue`: an environment variable's `fieldRef`,
/// which may also name the pod's node, service account and addresses.
pub fn env_field(
    pod: &Pod,
    field: &ObjectFieldSelector,
    placement: &PodPlacement,
) -> Result<String, DownwardError> {
    let spec = pod.spec.as_ref();
    Ok(match field.field_path.as_str() {
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => placement.host_ips.first().cloned().unwrap_or_default(),
        "status.hostIPs" => placement.host_ips.join(","),
        "status.podIP" => placement.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => placement.pod_ips.join(","),
        path => metadata_field(pod, path)?,
    })
}

/// A quantity in the base unit of `resource`: millicores for cpu, else bytes.
fn amount(resource: &str, q: &Quantity, field: &str) -> Result<i64, DownwardError> {
    let parsed = if resource == "cpu" {
        quantity::milli_value(q)
    } else {
        quantity::value(q)
    };
    parsed.map_err(|source| DownwardError::Quantity {
        field: field.to_string(),
        source,
    })
}

/// `ExtractContainerResourceValue` after `MergeContainerResourceLimits`: a
/// limit the container leaves unset is the node's allocatable amount; the
/// result is divided by `divisor` (default 1) and rounded up, so a 250m cpu
/// limit reads `1` with the default divisor and `250` with divisor `1m`.
pub fn container_resource(
    selector: &ResourceFieldSelector,
    container: &Container,
    node: &NodeAllocatable,
) -> Result<String, DownwardError> {
    let resource_path = selector.resource.as_str();
    let (kind, name) = resource_path
        .split_once('.')
        .filter(|(k, _)| *k == "limits" || *k == "requests")
        .ok_or_else(|| DownwardError::UnsupportedResource(resource_path.to_string()))?;
    if !matches!(name, "cpu" | "memory" | "ephemeral-storage") {
        return Err(DownwardError::UnsupportedResource(
            resource_path.to_string(),
        ));
    }
    let resources = container.resources.as_ref();
    let list = if kind == "limits" {
        resources.and_then(|r| r.limits.as_ref())
    } else {
        resources.and_then(|r| r.requests.as_ref())
    };
    let field = format!("resourceFieldRef {resource_path}");
    let value = match list.and_then(|l| l.get(name)) {
        Some(q) => amount(name, q, &field)?,
        None if kind == "limits" => match name {
            "cpu" => node.cpu_millis,
            "memory" => node.memory_bytes,
            _ => node.ephemeral_storage_bytes,
        },
        None => 0,
    };
    let divisor = match selector.divisor.as_ref() {
        Some(d) => amount(name, d, &format!("{field} divisor"))?,
        None => 0,
    };
    let divisor = if divisor == 0 {
        if name == "cpu" { 1000 } else { 1 }
    } else {
        divisor
    };
    Ok(ceil_div(value, divisor).to_string())
}

fn ceil_div(value: i64, divisor: i64) -> i64 {
    let q = value / divisor;
    if value % divisor != 0 && (value > 0) == (divisor > 0) {
        q + 1
    } else {
        q
    }
}

/// A `downwardAPI` volume item's `resourceFieldRef`, which names its container.
pub fn pod_container_resource(
    pod: &Pod,
    selector: &ResourceFieldSelector,
    node: &NodeAllocatable,
) -> Result<String, DownwardError> {
    let name = selector.container_name.as_deref().unwrap_or_default();
    let spec = pod.spec.as_ref();
    let container = spec
        .into_iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .find(|c| c.name == name)
        .ok_or_else(|| DownwardError::NoContainer(name.to_string()))?;
    container_resource(selector, container, node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};

    const NODE: NodeAllocatable = NodeAllocatable {
        cpu_millis: 2000,
        memory_bytes: 4 << 30,
        ephemeral_storage_bytes: 100 << 30,
    };

    fn container(limits: &[(&str, &str)], requests: &[(&str, &str)]) -> Container {
        let list = |l: &[(&str, &str)]| {
            (!l.is_empty()).then(|| {
                l.iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect()
            })
        };
        Container {
            name: "app".into(),
            resources: Some(ResourceRequirements {
                limits: list(limits),
                requests: list(requests),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sel(resource: &str, divisor: Option<&str>) -> ResourceFieldSelector {
        ResourceFieldSelector {
            resource: resource.into(),
            divisor: divisor.map(|d| Quantity(d.into())),
            container_name: None,
        }
    }

    #[test]
    fn resource_values_round_up_as_the_kubelet_does() {
        let c = container(&[("cpu", "250m"), ("memory", "64Mi")], &[("cpu", "100m")]);
        let v = |r: &str, d: Option<&str>| container_resource(&sel(r, d), &c, &NODE).unwrap();
        assert_eq!(v("limits.cpu", None), "1", "250m rounds up to a whole core");
        assert_eq!(v("limits.cpu", Some("1m")), "250");
        assert_eq!(v("limits.cpu", Some("100m")), "3");
        assert_eq!(v("limits.memory", None), "67108864");
        assert_eq!(v("limits.memory", Some("1Mi")), "64");
        assert_eq!(v("limits.memory", Some("1M")), "68", "67.1 MB rounds up");
        assert_eq!(v("requests.cpu", Some("1m")), "100");
        assert_eq!(v("requests.memory", None), "0", "no request reads 0");
        assert_eq!(
            v("limits.ephemeral-storage", Some("1Gi")),
            "100",
            "no limit reads the node's allocatable"
        );
        let unlimited = container(&[], &[]);
        let cpu = container_resource(&sel("limits.cpu", None), &unlimited, &NODE).unwrap();
        assert_eq!(cpu, "2");
        let mem = container_resource(&sel("limits.memory", Some("1Gi")), &unlimited, &NODE);
        assert_eq!(mem.unwrap(), "4");
        assert_eq!(
            container_resource(&sel("limits.gpu", None), &c, &NODE)
                .unwrap_err()
                .to_string(),
            "unsupported container resource : limits.gpu"
        );
    }

    #[test]
    fn fields_and_formats() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".into());
        pod.metadata.namespace = Some("shop".into());
        pod.metadata.uid = Some("u-1".into());
        pod.metadata.labels = Some(
            [("tier", "front"), ("app", "web \"x\"")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        pod.spec = Some(PodSpec {
            node_name: Some("node1".into()),
            service_account_name: Some("default".into()),
            ..Default::default()
        });
        let placement = PodPlacement {
            pod_ips: vec!["10.1.0.5".into(), "fd00::5".into()],
            host_ips: vec!["192.168.1.2".into()],
        };
        let f = |path: &str| {
            env_field(
                &pod,
                &ObjectFieldSelector {
                    field_path: path.into(),
                    api_version: None,
                },
                &placement,
            )
        };
        assert_eq!(f("metadata.name").unwrap(), "web");
        assert_eq!(f("metadata.namespace").unwrap(), "shop");
        assert_eq!(f("metadata.uid").unwrap(), "u-1");
        assert_eq!(f("metadata.labels['tier']").unwrap(), "front");
        assert_eq!(f("metadata.labels['none']").unwrap(), "");
        assert_eq!(
            f("metadata.labels").unwrap(),
            "app=\"web \\\"x\\\"\"\ntier=\"front\""
        );
        assert_eq!(f("spec.nodeName").unwrap(), "node1");
        assert_eq!(f("spec.serviceAccountName").unwrap(), "default");
        assert_eq!(f("status.podIP").unwrap(), "10.1.0.5");
        assert_eq!(f("status.podIPs").unwrap(), "10.1.0.5,fd00::5");
        assert_eq!(f("status.hostIP").unwrap(), "192.168.1.2");
        assert_eq!(
            f("spec.hostname").unwrap_err().to_string(),
            "unsupported fieldPath: spec.hostname"
        );
        assert_eq!(
            metadata_field(&pod, "spec.nodeName")
                .unwrap_err()
                .to_string(),
            "unsupported fieldPath: spec.nodeName"
        );
    }
}
