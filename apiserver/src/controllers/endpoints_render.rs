//! What a Service's endpoints should be, as pure functions of the Service
//! and its pods: the `Endpoints` object of kube-controller-manager's
//! endpoints controller and the EndpointSlices of its endpointslice
//! controller (`pkg/controller/endpoint`, `pkg/controller/endpointslice`,
//! `staging/src/k8s.io/endpointslice`), and the plan that turns the slices
//! a service has into the ones it should have with as few writes as
//! possible.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// kube-controller-manager's `--max-endpoints-per-slice` default.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// The only address family this cluster hands out.
pub const ADDRESS_TYPE: &str = "IPv4";

fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

fn publish_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

fn service_ports(svc: &Service) -> &[ServicePort] {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default()
}

/// The selector of a service whose endpoints this controller manages;
/// `None` for services without one (their endpoints are the user's).
pub fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
}

/// Whether the service's selector selects a pod with these labels.
pub fn selects(svc: &Service, labels: Option<&BTreeMap<String, String>>) -> bool {
    let Some(sel) = selector(svc) else {
        return false;
    };
    let labels = labels.cloned().unwrap_or_default();
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// `podutil.IsPodReady`: the Ready condition is True.
pub fn is_pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// The pod's IPv4 addresses: `podIPs`, or `podIP` when that is all it has.
fn pod_ipv4s(pod: &Pod) -> Vec<String> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let mut ips: Vec<String> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.clone())
        .collect();
    if ips.is_empty() {
        ips.extend(status.pod_ip.clone().filter(|ip| !ip.is_empty()));
    }
    ips.retain(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok());
    ips
}

/// `ShouldPodBeInEndpoints`: not terminal (Succeeded/Failed), has an IP,
/// and, unless `include_terminating`, is not being deleted.
pub fn should_pod_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return false;
    }
    if pod_ipv4s(pod).is_empty() {
        return false;
    }
    include_terminating || !is_terminating(pod)
}

/// `podutil.FindPort`: a numeric targetPort as is; a named one is the
/// container port of that name and the service port's protocol.
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match port.target_port.as_ref() {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            pod.spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// `ShouldSetHostname`: the pod asked to be `<hostname>.<service>`.
fn hostname_for(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.clone().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc.metadata.name.as_deref()
        && pod.metadata.namespace == svc.metadata.namespace)
        .then_some(hostname)
}

fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

fn node_name(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
}

/// Service labels plus the headless marker, as both controllers copy them.
fn copied_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = svc
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k != SERVICE_NAME_LABEL && k != MANAGED_BY_LABEL && k != HEADLESS_LABEL)
        .collect();
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

type PortKey = (String, i32, String, String);
/// Addresses by identity (`ip/uid`), each with whether it is ready.
type AddressSet = BTreeMap<String, (EndpointAddress, bool)>;

fn port_key(p: &EndpointPort) -> PortKey {
    (
        p.name.clone().unwrap_or_default(),
        p.port,
        p.protocol.clone().unwrap_or_default(),
        p.app_protocol.clone().unwrap_or_default(),
    )
}

/// The endpoints controller's `Endpoints` for a service with a selector
/// (name, namespace, labels and subsets; the rest of the metadata is the
/// store's). Ready pods go to `addresses`, the others to
/// `notReadyAddresses`; subsets are packed as `RepackSubsets` packs them.
pub fn render_endpoints<'a>(svc: &Service, pods: impl IntoIterator<Item = &'a Pod>) -> Endpoints {
    let tolerate_unready = publish_not_ready(svc);
    let ports = service_ports(svc);
    // Each port with the addresses (and their readiness) that serve it;
    // the port `None` stands for a headless service without ports.
    let mut by_port: BTreeMap<Option<PortKey>, (Option<EndpointPort>, AddressSet)> =
        BTreeMap::new();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, tolerate_unready) {
            continue;
        }
        let Some(ip) = pod_ipv4s(pod).into_iter().next() else {
            continue;
        };
        let address = EndpointAddress {
            ip: ip.clone(),
            hostname: hostname_for(pod, svc),
            node_name: node_name(pod),
            target_ref: Some(pod_ref(pod)),
        };
        let ready = tolerate_unready || is_pod_ready(pod);
        let addr_key = format!("{ip}/{}", pod.metadata.uid.as_deref().unwrap_or(""));
        if ports.is_empty() {
            if is_headless(svc) {
                by_port
                    .entry(None)
                    .or_insert_with(|| (None, BTreeMap::new()))
                    .1
                    .insert(addr_key, (address, ready));
            }
            continue;
        }
        for sp in ports {
            let Some(number) = find_port(pod, sp) else {
                continue;
            };
            let port = EndpointPort {
                name: sp.name.clone().filter(|n| !n.is_empty()),
                port: number,
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            };
            by_port
                .entry(Some(port_key(&port)))
                .or_insert_with(|| (Some(port), BTreeMap::new()))
                .1
                .insert(addr_key.clone(), (address.clone(), ready));
        }
    }
    // Ports offered by the same set of addresses share a subset.
    let mut subsets: BTreeMap<String, (Vec<EndpointPort>, AddressSet)> = BTreeMap::new();
    for (port, addresses) in by_port.into_values() {
        let set_key = addresses
            .iter()
            .map(|(k, (_, ready))| format!("{k}={ready}"))
            .collect::<Vec<_>>()
            .join(",");
        let entry = subsets
            .entry(set_key)
            .or_insert_with(|| (Vec::new(), addresses));
        entry.0.extend(port);
    }
    let subsets: Vec<EndpointSubset> = subsets
        .into_values()
        .map(|(ports, addresses)| {
            let (ready, not_ready): (Vec<_>, Vec<_>) =
                addresses.into_values().partition(|(_, ready)| *ready);
            let strip = |v: Vec<(EndpointAddress, bool)>| {
                let v: Vec<EndpointAddress> = v.into_iter().map(|(a, _)| a).collect();
                (!v.is_empty()).then_some(v)
            };
            EndpointSubset {
                addresses: strip(ready),
                not_ready_addresses: strip(not_ready),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect();
    Endpoints {
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(copied_labels(svc)).filter(|l| !l.is_empty()),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

/// One slice's worth of identity: the ports its endpoints share.
type SlicePorts = Vec<(String, i32, String, String)>;

fn slice_ports_key(ports: &[SlicePort]) -> SlicePorts {
    let mut key: SlicePorts = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or(0),
                p.protocol.clone().unwrap_or_default(),
                p.app_protocol.clone().unwrap_or_default(),
            )
        })
        .collect();
    key.sort();
    key
}

/// An endpoint's identity across slices: its address and its pod.
fn endpoint_key(e: &Endpoint) -> String {
    let uid = e
        .target_ref
        .as_ref()
        .and_then(|r| r.uid.clone())
        .unwrap_or_default();
    format!("{}/{uid}", e.addresses.join(","))
}

/// The endpoints a service should have, grouped by the ports they serve
/// (pods resolving a named targetPort differently land in different slices).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DesiredEndpoints {
    groups: BTreeMap<SlicePorts, (Vec<SlicePort>, BTreeMap<String, Endpoint>)>,
}

/// The endpointslice controller's endpoints: terminating pods stay, with
/// `ready=false` and `serving` from their Ready condition.
pub fn render_slice_endpoints<'a>(
    svc: &Service,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> DesiredEndpoints {
    let publish = publish_not_ready(svc);
    let mut desired = DesiredEndpoints::default();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, true) {
            continue;
        }
        let ports: Vec<SlicePort> = service_ports(svc)
            .iter()
            .filter_map(|sp| {
                Some(SlicePort {
                    name: Some(sp.name.clone().unwrap_or_default()),
                    port: Some(find_port(pod, sp)?),
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: sp.app_protocol.clone(),
                })
            })
            .collect();
        let terminating = is_terminating(pod);
        let serving = publish || is_pod_ready(pod);
        // "ready" is never true for a terminating pod, unless the service
        // publishes not-ready addresses.
        let ready = serving && (publish || !terminating);
        let endpoint = Endpoint {
            addresses: pod_ipv4s(pod),
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            hostname: hostname_for(pod, svc),
            node_name: node_name(pod),
            target_ref: Some(pod_ref(pod)),
            ..Default::default()
        };
        desired
            .groups
            .entry(slice_ports_key(&ports))
            .or_insert_with(|| (ports, BTreeMap::new()))
            .1
            .insert(endpoint_key(&endpoint), endpoint);
    }
    desired
}

/// Writes that bring a service's slices to the desired state.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SlicePlan {
    /// New slices (named by `generateName`).
    pub create: Vec<EndpointSlice>,
    /// Existing slices with new content, at the resourceVersion they were read at.
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<EndpointSlice>,
}

impl SlicePlan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// Whether a slice is one of this controller's for the service `name`.
pub fn is_managed_slice_of(slice: &EndpointSlice, name: &str) -> bool {
    let labels = slice.metadata.labels.clone().unwrap_or_default();
    labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(CONTROLLER_NAME)
        && labels.get(SERVICE_NAME_LABEL).map(String::as_str) == Some(name)
}

/// Labels and owner of every slice of `svc` (`setEndpointSliceLabels`).
fn slice_meta(svc: &Service) -> ObjectMeta {
    let name = svc.metadata.name.clone().unwrap_or_default();
    let mut labels = copied_labels(svc);
    labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
    labels.insert(MANAGED_BY_LABEL.into(), CONTROLLER_NAME.into());
    ObjectMeta {
        generate_name: Some(format!("{name}-")),
        namespace: svc.metadata.namespace.clone(),
        labels: Some(labels),
        owner_references: Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Service".into(),
            name,
            uid: svc.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]),
        ..Default::default()
    }
}

fn new_slice(svc: &Service, ports: Vec<SlicePort>, endpoints: Vec<Endpoint>) -> EndpointSlice {
    EndpointSlice {
        metadata: slice_meta(svc),
        address_type: ADDRESS_TYPE.into(),
        endpoints,
        ports: Some(ports),
    }
}

/// Plans the slices of `svc` from the ones it has (`existing`: this
/// controller's, for this service). Endpoints stay in the slice they are
/// in; new ones fill slices with room before new slices are made; slices
/// left empty go, except one placeholder when the service has no
/// endpoints at all (the controller always keeps one slice per service).
pub fn plan_slices(
    svc: &Service,
    desired: &DesiredEndpoints,
    mut existing: Vec<EndpointSlice>,
) -> SlicePlan {
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let template = slice_meta(svc);
    let mut plan = SlicePlan::default();
    // Endpoints not yet placed in a slice, per port group.
    let mut unplaced: BTreeMap<SlicePorts, BTreeMap<String, Endpoint>> = desired
        .groups
        .iter()
        .map(|(k, (_, eps))| (k.clone(), eps.clone()))
        .collect();
    // Slices kept, per port group: (slice, changed).
    let mut kept: BTreeMap<SlicePorts, Vec<(EndpointSlice, bool)>> = BTreeMap::new();
    let mut spare: Vec<EndpointSlice> = Vec::new();
    for slice in existing {
        let key = slice_ports_key(slice.ports.as_deref().unwrap_or_default());
        let Some(group) = unplaced
            .get_mut(&key)
            .filter(|_| slice.address_type == ADDRESS_TYPE)
        else {
            spare.push(slice);
            continue;
        };
        let endpoints: Vec<Endpoint> = slice
            .endpoints
            .iter()
            .filter_map(|e| group.remove(&endpoint_key(e)))
            .collect();
        if endpoints.is_empty() {
            spare.push(slice);
            continue;
        }
        let mut updated = slice.clone();
        updated.endpoints = endpoints;
        updated.metadata.labels = template.labels.clone();
        updated.metadata.owner_references = template.owner_references.clone();
        let changed = updated != slice;
        kept.entry(key).or_default().push((updated, changed));
    }
    for (key, (ports, _)) in &desired.groups {
        let mut rest: Vec<Endpoint> = unplaced
            .remove(key)
            .unwrap_or_default()
            .into_values()
            .collect();
        let slices = kept.entry(key.clone()).or_default();
        for (slice, changed) in slices.iter_mut() {
            let room = MAX_ENDPOINTS_PER_SLICE.saturating_sub(slice.endpoints.len());
            if room > 0 && !rest.is_empty() {
                let take = room.min(rest.len());
                slice.endpoints.extend(rest.drain(..take));
                *changed = true;
            }
        }
        while !rest.is_empty() {
            let take = MAX_ENDPOINTS_PER_SLICE.min(rest.len());
            let chunk: Vec<Endpoint> = rest.drain(..take).collect();
            // Reusing a slice that would be deleted saves a create and a delete.
            match spare.pop() {
                Some(mut s) => {
                    s.metadata.labels = template.labels.clone();
                    s.metadata.owner_references = template.owner_references.clone();
                    s.address_type = ADDRESS_TYPE.into();
                    s.ports = Some(ports.clone());
                    s.endpoints = chunk;
                    slices.push((s, true));
                }
                None => plan.create.push(new_slice(svc, ports.clone(), chunk)),
            }
        }
    }
    let any_kept = kept.values().any(|v| !v.is_empty());
    for (slice, changed) in kept.into_values().flatten() {
        if changed {
            plan.update.push(slice);
        }
    }
    if !any_kept && plan.create.is_empty() {
        // No endpoints: one empty placeholder slice.
        let placeholder = new_slice(svc, Vec::new(), Vec::new());
        match spare.first().cloned() {
            Some(s) => {
                spare.remove(0);
                let mut p = s.clone();
                p.metadata.labels = placeholder.metadata.labels;
                p.metadata.owner_references = placeholder.metadata.owner_references;
                p.address_type = ADDRESS_TYPE.into();
                p.endpoints = Vec::new();
                p.ports = Some(Vec::new());
                if p != s {
                    plan.update.push(p);
                }
            }
            None => plan.create.push(placeholder),
        }
    }
    plan.delete = spare;
    plan
}

/// The pods of `svc`'s namespace its selector selects.
pub fn selected_pods<'a>(
    svc: &'a Service,
    pods: impl IntoIterator<Item = &'a Pod> + 'a,
) -> impl Iterator<Item = &'a Pod> + 'a {
    pods.into_iter().filter(move |p| {
        p.metadata.namespace == svc.metadata.namespace && selects(svc, p.metadata.labels.as_ref())
    })
}

/// The names of the services (of `services`) that select a pod with these
/// labels in this namespace.
pub fn services_selecting<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    namespace: Option<&str>,
    labels: Option<&BTreeMap<String, String>>,
) -> BTreeSet<String> {
    services
        .into_iter()
        .filter(|s| s.metadata.namespace.as_deref() == namespace && selects(s, labels))
        .filter_map(|s| s.metadata.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str, ready: bool, extra: serde_json::Value) -> Pod {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "busybox",
                "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        });
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn service(target_port: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "svc-uid", "labels": {"app": "web"}},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10",
                "ports": [{"port": 80, "targetPort": target_port, "protocol": "TCP"}]}
        }))
        .unwrap()
    }

    #[test]
    fn endpoints_split_ready_and_not_ready_and_skip_pods_without_ip_or_terminal() {
        let svc = service(json!(8080));
        let pods = [
            pod("a", "10.244.0.3", true, json!({})),
            pod("b", "10.244.0.2", false, json!({})),
            pod("c", "", true, json!({})),
            pod(
                "d",
                "10.244.0.9",
                true,
                json!({"status": {"phase": "Succeeded"}}),
            ),
            pod(
                "e",
                "10.244.0.7",
                true,
                json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"}}),
            ),
        ];
        let ep = render_endpoints(&svc, &pods);
        let v = serde_json::to_value(&ep).unwrap();
        assert_eq!(
            v["subsets"],
            json!([{
                "addresses": [{"ip": "10.244.0.3", "nodeName": "node1",
                    "targetRef": {"kind": "Pod", "namespace": "default", "name": "a", "uid": "uid-a"}}],
                "notReadyAddresses": [{"ip": "10.244.0.2", "nodeName": "node1",
                    "targetRef": {"kind": "Pod", "namespace": "default", "name": "b", "uid": "uid-b"}}],
                "ports": [{"port": 8080, "protocol": "TCP"}]
            }])
        );
        assert_eq!(v["metadata"]["name"], "web");
        assert_eq!(v["metadata"]["labels"], json!({"app": "web"}));
    }

    #[test]
    fn named_target_port_resolves_per_pod_and_unresolved_pods_are_left_out() {
        let svc = service(json!("http"));
        let other: serde_json::Value = json!({"spec": {"containers": [{"name": "c", "image": "busybox",
            "ports": [{"name": "http", "containerPort": 9090}]}]}});
        let pods = [
            pod("a", "10.244.0.2", true, json!({})),
            pod("b", "10.244.0.3", true, other),
            pod(
                "c",
                "10.244.0.4",
                true,
                json!({"spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
            ),
        ];
        let ep = render_endpoints(&svc, &pods);
        let subsets = ep.subsets.unwrap();
        assert_eq!(subsets.len(), 2, "{subsets:?}");
        let ports: BTreeSet<i32> = subsets
            .iter()
            .map(|s| s.ports.as_ref().unwrap()[0].port)
            .collect();
        assert_eq!(ports, BTreeSet::from([8080, 9090]));
        let desired = render_slice_endpoints(&svc, &pods);
        assert_eq!(desired.groups.len(), 3, "pod c has no ports: its own group");
        let plan = plan_slices(&svc, &desired, Vec::new());
        assert_eq!(plan.create.len(), 3);
    }

    #[test]
    fn slices_carry_conditions_labels_and_owner() {
        let svc = service(json!(8080));
        let pods = [
            pod("a", "10.244.0.2", true, json!({})),
            pod(
                "b",
                "10.244.0.3",
                true,
                json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"}}),
            ),
            pod("c", "10.244.0.4", false, json!({})),
        ];
        let plan = plan_slices(&svc, &render_slice_endpoints(&svc, &pods), Vec::new());
        assert_eq!(plan.create.len(), 1);
        let s = serde_json::to_value(&plan.create[0]).unwrap();
        assert_eq!(s["addressType"], "IPv4");
        assert_eq!(s["metadata"]["generateName"], "web-");
        assert_eq!(
            s["metadata"]["labels"],
            json!({"app": "web", "kubernetes.io/service-name": "web",
                   "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"})
        );
        assert_eq!(
            s["metadata"]["ownerReferences"],
            json!([{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "svc-uid",
                    "controller": true, "blockOwnerDeletion": true}])
        );
        assert_eq!(
            s["ports"],
            json!([{"name": "", "port": 8080, "protocol": "TCP"}])
        );
        let conditions: Vec<_> = s["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["addresses"][0].clone(), e["conditions"].clone()))
            .collect();
        assert_eq!(
            conditions,
            vec![
                (
                    json!("10.244.0.2"),
                    json!({"ready": true, "serving": true, "terminating": false})
                ),
                (
                    json!("10.244.0.3"),
                    json!({"ready": false, "serving": true, "terminating": true})
                ),
                (
                    json!("10.244.0.4"),
                    json!({"ready": false, "serving": false, "terminating": false})
                ),
            ]
        );
    }

    fn stored(mut s: EndpointSlice, name: &str) -> EndpointSlice {
        s.metadata.name = Some(name.into());
        s.metadata.resource_version = Some("7".into());
        s
    }

    #[test]
    fn replanning_the_same_state_writes_nothing_and_changes_stay_in_place() {
        let svc = service(json!(8080));
        let mut pods = vec![
            pod("a", "10.244.0.2", true, json!({})),
            pod("b", "10.244.0.3", true, json!({})),
        ];
        let plan = plan_slices(&svc, &render_slice_endpoints(&svc, &pods), Vec::new());
        let existing = vec![stored(plan.create[0].clone(), "web-abcde")];
        let again = plan_slices(&svc, &render_slice_endpoints(&svc, &pods), existing.clone());
        assert!(again.is_empty(), "{again:?}");

        // b turns not ready: one update of the same slice, nothing else.
        pods[1] = pod("b", "10.244.0.3", false, json!({}));
        let plan = plan_slices(&svc, &render_slice_endpoints(&svc, &pods), existing.clone());
        assert!(plan.create.is_empty() && plan.delete.is_empty());
        assert_eq!(plan.update.len(), 1);
        assert_eq!(plan.update[0].metadata.name.as_deref(), Some("web-abcde"));
        assert_eq!(
            plan.update[0].metadata.resource_version.as_deref(),
            Some("7")
        );
        assert_eq!(
            plan.update[0].endpoints[1]
                .conditions
                .as_ref()
                .unwrap()
                .ready,
            Some(false)
        );

        // Every pod gone: the slice stays as an empty placeholder.
        let plan = plan_slices(&svc, &render_slice_endpoints(&svc, &[]), existing);
        assert!(plan.create.is_empty() && plan.delete.is_empty());
        assert_eq!(plan.update[0].endpoints, vec![]);
        assert_eq!(plan.update[0].ports, Some(vec![]));
    }

    #[test]
    fn big_services_are_split_at_one_hundred_endpoints_per_slice() {
        let svc = service(json!(8080));
        let pods: Vec<Pod> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.244.{}.{}", i / 200, i % 200 + 1),
                    true,
                    json!({}),
                )
            })
            .collect();
        let plan = plan_slices(&svc, &render_slice_endpoints(&svc, &pods), Vec::new());
        let sizes: Vec<usize> = plan.create.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
    }

    #[test]
    fn duplicate_and_stray_slices_are_deleted() {
        let svc = service(json!(8080));
        let pods = [pod("a", "10.244.0.2", true, json!({}))];
        let desired = render_slice_endpoints(&svc, &pods);
        let made = plan_slices(&svc, &desired, Vec::new()).create.remove(0);
        let existing = vec![stored(made.clone(), "web-aaaaa"), stored(made, "web-bbbbb")];
        let plan = plan_slices(&svc, &desired, existing);
        assert!(plan.create.is_empty() && plan.update.is_empty());
        assert_eq!(plan.delete.len(), 1);
        assert_eq!(plan.delete[0].metadata.name.as_deref(), Some("web-bbbbb"));
    }

    #[test]
    fn headless_services_without_ports_list_addresses_only() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "default", "uid": "u"},
            "spec": {"selector": {"app": "web"}, "clusterIP": "None"}
        }))
        .unwrap();
        let pods = [pod(
            "a",
            "10.244.0.2",
            true,
            json!({"spec": {"hostname": "a", "subdomain": "db"}}),
        )];
        let ep = serde_json::to_value(render_endpoints(&svc, &pods)).unwrap();
        assert_eq!(ep["subsets"][0]["addresses"][0]["hostname"], "a");
        assert!(ep["subsets"][0].get("ports").is_none());
        assert_eq!(ep["metadata"]["labels"][HEADLESS_LABEL], "");
        let services = [service(json!(80)), svc];
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        assert_eq!(
            services_selecting(&services, Some("default"), Some(&labels)),
            BTreeSet::from(["db".to_string(), "web".to_string()])
        );
        assert!(services_selecting(&services, Some("other"), Some(&labels)).is_empty());
    }
}
