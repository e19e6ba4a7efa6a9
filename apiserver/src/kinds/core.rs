//! Strategies for the core kinds other than pods, and leases.

use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, NamespaceSpec, NamespaceStatus, Node, Secret, Service,
    ServiceAccount, ServiceSpec, ServiceStatus,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::KindSpec;
use super::table::{Column, age, age_col, col, name_col, none_if_empty};
use crate::status::FieldError;

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Value {
    meta.name.clone().unwrap_or_default().into()
}

impl KindSpec for Namespace {
    const SHORT_NAMES: &'static [&'static str] = &["ns"];
    const HAS_STATUS: bool = true;
    const FIELDS: &'static [&'static str] = &["status.phase"];

    fn prepare_create(&mut self) {
        let name = self.metadata.name.clone().unwrap_or_default();
        // NamespaceLifecycle sets this label on every namespace.
        self.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert("kubernetes.io/metadata.name".into(), name);
        let spec = self.spec.get_or_insert_with(NamespaceSpec::default);
        spec.finalizers
            .get_or_insert_with(|| vec!["kubernetes".into()]);
        self.status = Some(NamespaceStatus {
            phase: Some("Active".into()),
            ..Default::default()
        });
    }

    fn prepare_update(&mut self, old: &Self) {
        let name = self.metadata.name.clone().unwrap_or_default();
        self.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert("kubernetes.io/metadata.name".into(), name);
        // spec.finalizers change only through `namespaces/{name}/finalize`.
        let finalizers = old.spec.as_ref().and_then(|s| s.finalizers.clone());
        self.spec
            .get_or_insert_with(NamespaceSpec::default)
            .finalizers = finalizers;
    }

    fn columns() -> Vec<Column> {
        vec![name_col(), col("Status", "string", 0), age_col()]
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        let phase = self
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        vec![
            name_of(&self.metadata),
            phase.into(),
            age(self.metadata.creation_timestamp.as_ref(), now),
        ]
    }
}

impl KindSpec for Node {
    const SHORT_NAMES: &'static [&'static str] = &["no"];
    const HAS_STATUS: bool = true;
    const FIELDS: &'static [&'static str] = &["spec.unschedulable"];

    fn columns() -> Vec<Column> {
        vec![
            name_col(),
            col("Status", "string", 0),
            col("Roles", "string", 0),
            age_col(),
            col("Version", "string", 0),
            col("Internal-IP", "string", 1),
            col("External-IP", "string", 1),
            col("OS-Image", "string", 1),
            col("Kernel-Version", "string", 1),
            col("Container-Runtime", "string", 1),
        ]
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        let status = self.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status.as_str());
        // As kubectl's printer: any Ready condition but True (False, or
        // Unknown once the node controller lost the kubelet) is NotReady.
        let mut state = match ready {
            Some("True") => "Ready".to_owned(),
            Some(_) => "NotReady".to_owned(),
            None => "Unknown".to_owned(),
        };
        if self.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
            state.push_str(",SchedulingDisabled");
        }
        let mut roles: Vec<String> = self
            .metadata
            .labels
            .iter()
            .flatten()
            .filter_map(|(k, v)| {
                k.strip_prefix("node-role.kubernetes.io/")
                    .map(String::from)
                    .or_else(|| (k == "kubernetes.io/role").then(|| v.clone()))
            })
            .filter(|r| !r.is_empty())
            .collect();
        roles.sort();
        let address = |t: &str| {
            none_if_empty(
                status
                    .addresses
                    .iter()
                    .flatten()
                    .find(|a| a.type_ == t)
                    .map(|a| a.address.clone())
                    .unwrap_or_default(),
            )
        };
        let info = status.node_info.clone().unwrap_or_default();
        let unknown = |s: String| {
            if s.is_empty() {
                "<unknown>".to_owned()
            } else {
                s
            }
        };
        vec![
            name_of(&self.metadata),
            state.into(),
            none_if_empty(roles.join(",")),
            age(self.metadata.creation_timestamp.as_ref(), now),
            info.kubelet_version.into(),
            address("InternalIP"),
            address("ExternalIP"),
            unknown(info.os_image).into(),
            unknown(info.kernel_version).into(),
            unknown(info.container_runtime_version).into(),
        ]
    }
}

/// Defaults of `SetDefaults_Service` that need no allocation; cluster IPs
/// and node ports are allocated by the API layer, which sees the store.
fn default_service_spec(spec: &mut ServiceSpec) {
    let type_ = spec.type_.get_or_insert_with(|| "ClusterIP".into()).clone();
    let affinity = spec
        .session_affinity
        .get_or_insert_with(|| "None".into())
        .clone();
    match affinity.as_str() {
        "None" => spec.session_affinity_config = None,
        "ClientIP" => {
            spec.session_affinity_config
                .get_or_insert_with(Default::default)
                .client_ip
                .get_or_insert_with(Default::default)
                .timeout_seconds
                .get_or_insert(10800);
        }
        _ => {}
    }
    if type_ != "ExternalName" {
        spec.internal_traffic_policy
            .get_or_insert_with(|| "Cluster".into());
        spec.ip_families.get_or_insert_with(|| vec!["IPv4".into()]);
        spec.ip_family_policy
            .get_or_insert_with(|| "SingleStack".into());
    }
    if type_ == "NodePort" || type_ == "LoadBalancer" {
        spec.external_traffic_policy
            .get_or_insert_with(|| "Cluster".into());
    }
    if type_ == "LoadBalancer" {
        spec.allocate_load_balancer_node_ports.get_or_insert(true);
    }
    for p in spec.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
        if p.target_port.is_none() {
            p.target_port = Some(IntOrString::Int(p.port));
        }
    }
}

impl KindSpec for Service {
    const SHORT_NAMES: &'static [&'static str] = &["svc"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const HAS_STATUS: bool = true;
    const FIELDS: &'static [&'static str] = &["spec.clusterIP", "spec.type"];

    fn prepare_create(&mut self) {
        default_service_spec(self.spec.get_or_insert_with(Default::default));
        self.status = Some(ServiceStatus {
            load_balancer: Some(Default::default()),
            ..Default::default()
        });
    }

    fn prepare_update(&mut self, old: &Self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        let old_spec = old.spec.clone().unwrap_or_default();
        // Allocated addresses stay when an update leaves them out.
        if spec.cluster_ip.as_deref().unwrap_or("").is_empty() {
            spec.cluster_ip = old_spec.cluster_ip.clone();
            spec.cluster_ips = old_spec.cluster_ips.clone();
        }
        for p in spec.ports.iter_mut().flatten() {
            if p.node_port.is_none() {
                p.node_port = old_spec
                    .ports
                    .iter()
                    .flatten()
                    .find(|o| o.port == p.port)
                    .and_then(|o| o.node_port);
            }
        }
        default_service_spec(spec);
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let spec = self.spec.clone().unwrap_or_default();
        let type_ = spec.type_.clone().unwrap_or_default();
        let types = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
        if !types.contains(&type_.as_str()) {
            errs.push(FieldError::not_supported("spec.type", &type_, &types));
        }
        let headless = spec.cluster_ip.as_deref() == Some("None");
        if spec.ports.as_deref().unwrap_or_default().is_empty()
            && !headless
            && type_ != "ExternalName"
        {
            errs.push(FieldError::required("spec.ports", ""));
        }
        for (i, p) in spec.ports.iter().flatten().enumerate() {
            if !(1..=65535).contains(&p.port) {
                errs.push(FieldError::invalid_raw(
                    format!("spec.ports[{i}].port"),
                    p.port.to_string(),
                    "must be between 1 and 65535, inclusive",
                ));
            }
            if let Some(proto) = &p.protocol
                && !["TCP", "UDP", "SCTP"].contains(&proto.as_str())
            {
                errs.push(FieldError::not_supported(
                    format!("spec.ports[{i}].protocol"),
                    proto,
                    &["SCTP", "TCP", "UDP"],
                ));
            }
        }
        if let Some(old_ip) = old
            .and_then(|o| o.spec.as_ref())
            .and_then(|s| s.cluster_ip.clone())
            && !old_ip.is_empty()
            && spec.cluster_ip.as_deref() != Some(old_ip.as_str())
        {
            errs.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                spec.cluster_ip.as_deref().unwrap_or(""),
                "may not change once set",
            ));
        }
        errs
    }

    fn columns() -> Vec<Column> {
        vec![
            name_col(),
            col("Type", "string", 0),
            col("Cluster-IP", "string", 0),
            col("External-IP", "string", 0),
            col("Port(s)", "string", 0),
            age_col(),
            col("Selector", "string", 1),
        ]
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let type_ = spec.type_.clone().unwrap_or_default();
        let external_ips = spec.external_ips.clone().unwrap_or_default();
        let external = match type_.as_str() {
            "ClusterIP" | "NodePort" => none_if_empty(external_ips.join(",")),
            "LoadBalancer" => {
                let mut ips: Vec<String> = self
                    .status
                    .iter()
                    .flat_map(|s| s.load_balancer.iter())
                    .flat_map(|lb| lb.ingress.iter().flatten())
                    .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
                    .collect();
                ips.extend(external_ips);
                if ips.is_empty() {
                    "<pending>".into()
                } else {
                    ips.join(",").into()
                }
            }
            "ExternalName" => spec.external_name.clone().unwrap_or_default().into(),
            _ => "<unknown>".into(),
        };
        let ports: Vec<String> = spec
            .ports
            .iter()
            .flatten()
            .map(|p| {
                let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                match p.node_port.filter(|n| *n > 0) {
                    Some(n) => format!("{}:{n}/{proto}", p.port),
                    None => format!("{}/{proto}", p.port),
                }
            })
            .collect();
        let selector: Vec<String> = spec
            .selector
            .iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        vec![
            name_of(&self.metadata),
            type_.into(),
            none_if_empty(spec.cluster_ip.clone().unwrap_or_default()),
            external,
            none_if_empty(ports.join(",")),
            age(self.metadata.creation_timestamp.as_ref(), now),
            none_if_empty(selector.join(",")),
        ]
    }
}

impl KindSpec for Endpoints {
    const SHORT_NAMES: &'static [&'static str] = &["ep"];

    fn columns() -> Vec<Column> {
        vec![name_col(), col("Endpoints", "string", 0), age_col()]
    }

    /// `formatEndpoints`: ready addresses only, port by port; `<none>`
    /// only when there are no subsets at all.
    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        let mut list = Vec::new();
        let subsets = self.subsets.as_deref().unwrap_or_default();
        for s in subsets {
            let addresses = s.addresses.as_deref().unwrap_or_default();
            let ports = s.ports.as_deref().unwrap_or_default();
            if ports.is_empty() {
                // Headless services may have no ports.
                list.extend(addresses.iter().map(|a| a.ip.clone()));
            }
            for p in ports {
                list.extend(addresses.iter().map(|a| match a.ip.contains(':') {
                    true => format!("[{}]:{}", a.ip, p.port),
                    false => format!("{}:{}", a.ip, p.port),
                }));
            }
        }
        let shown = if list.len() > 3 {
            format!("{} + {} more...", list[..3].join(","), list.len() - 3)
        } else {
            list.join(",")
        };
        vec![
            name_of(&self.metadata),
            if subsets.is_empty() {
                "<none>".into()
            } else {
                shown.into()
            },
            age(self.metadata.creation_timestamp.as_ref(), now),
        ]
    }
}

impl KindSpec for Event {
    const SHORT_NAMES: &'static [&'static str] = &["ev"];
    const FIELDS: &'static [&'static str] = &[
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ];

    fn columns() -> Vec<Column> {
        vec![
            col("Last Seen", "string", 0),
            col("Type", "string", 0),
            col("Reason", "string", 0),
            col("Object", "string", 0),
            col("Subobject", "string", 1),
            col("Source", "string", 1),
            col("Message", "string", 0),
            col("First Seen", "string", 1),
            col("Count", "string", 1),
            col("Name", "string", 1),
        ]
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        let first = self
            .first_timestamp
            .as_ref()
            .map(|t| t.0)
            .or_else(|| self.event_time.as_ref().map(|t| t.0));
        let last = self.last_timestamp.as_ref().map(|t| t.0).or(first);
        let since = |t: Option<jiff::Timestamp>| match t {
            Some(t) => super::table::human_duration(now.as_second() - t.as_second()),
            None => "<unknown>".into(),
        };
        let count = self.count.unwrap_or(1);
        let last_seen = if count > 1 {
            format!("{} (x{count} over {})", since(last), since(first))
        } else {
            since(last)
        };
        let source = match &self.source {
            Some(s) if s.host.as_deref().is_some_and(|h| !h.is_empty()) => {
                format!(
                    "{}, {}",
                    s.component.clone().unwrap_or_default(),
                    s.host.clone().unwrap_or_default()
                )
            }
            Some(s) => s.component.clone().unwrap_or_default(),
            None => self.reporting_component.clone().unwrap_or_default(),
        };
        let o = &self.involved_object;
        vec![
            last_seen.into(),
            self.type_.clone().unwrap_or_default().into(),
            self.reason.clone().unwrap_or_default().into(),
            format!(
                "{}/{}",
                o.kind.clone().unwrap_or_default().to_lowercase(),
                o.name.clone().unwrap_or_default()
            )
            .into(),
            o.field_path.clone().unwrap_or_default().into(),
            source.into(),
            self.message.clone().unwrap_or_default().into(),
            since(first).into(),
            count.to_string().into(),
            name_of(&self.metadata),
        ]
    }
}

impl KindSpec for ConfigMap {
    const SHORT_NAMES: &'static [&'static str] = &["cm"];

    fn columns() -> Vec<Column> {
        vec![name_col(), col("Data", "string", 0), age_col()]
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        let n = self.data.as_ref().map_or(0, |d| d.len())
            + self.binary_data.as_ref().map_or(0, |d| d.len());
        vec![
            name_of(&self.metadata),
            n.to_string().into(),
            age(self.metadata.creation_timestamp.as_ref(), now),
        ]
    }
}

/// `stringData` is write-only: merged into `data` and dropped.
fn fold_string_data(s: &mut Secret) {
    if let Some(string_data) = s.string_data.take() {
        let data = s.data.get_or_insert_with(Default::default);
        for (k, v) in string_data {
            data.insert(k, ByteString(v.into_bytes()));
        }
    }
}

impl KindSpec for Secret {
    const FIELDS: &'static [&'static str] = &["type"];

    fn prepare_create(&mut self) {
        self.type_.get_or_insert_with(|| "Opaque".into());
        fold_string_data(self);
    }

    fn prepare_update(&mut self, _old: &Self) {
        self.type_.get_or_insert_with(|| "Opaque".into());
        fold_string_data(self);
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        for k in self.data.iter().flatten().map(|(k, _)| k) {
            if k.is_empty()
                || !k
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                errs.push(FieldError::invalid(format!("data[{k}]"), k, "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"));
            }
        }
        if let Some(old) = old
            && old.type_ != self.type_
        {
            errs.push(FieldError::invalid(
                "type",
                self.type_.as_deref().unwrap_or(""),
                "field is immutable",
            ));
        }
        errs
    }

    fn columns() -> Vec<Column> {
        vec![
            name_col(),
            col("Type", "string", 0),
            col("Data", "string", 0),
            age_col(),
        ]
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            name_of(&self.metadata),
            self.type_.clone().unwrap_or_default().into(),
            self.data.as_ref().map_or(0, |d| d.len()).to_string().into(),
            age(self.metadata.creation_timestamp.as_ref(), now),
        ]
    }
}

impl KindSpec for ServiceAccount {
    const SHORT_NAMES: &'static [&'static str] = &["sa"];

    fn columns() -> Vec<Column> {
        vec![name_col(), col("Secrets", "string", 0), age_col()]
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            name_of(&self.metadata),
            self.secrets
                .as_ref()
                .map_or(0, |s| s.len())
                .to_string()
                .into(),
            age(self.metadata.creation_timestamp.as_ref(), now),
        ]
    }
}

impl KindSpec for Lease {
    fn columns() -> Vec<Column> {
        vec![name_col(), col("Holder", "string", 0), age_col()]
    }

    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        let holder = self
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default();
        vec![
            name_of(&self.metadata),
            holder.into(),
            age(self.metadata.creation_timestamp.as_ref(), now),
        ]
    }
}
