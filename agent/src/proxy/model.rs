//! What the proxy programs, reduced from the API's `Service` and
//! `discovery.k8s.io/v1` `EndpointSlice` objects: one [`ServicePort`] per port
//! of every service with a cluster IP, with the endpoints traffic may go to
//! (all nodes', and this node's for the Local traffic policies);
//! [`ServicePort::routing`] is kube-proxy's reading of those policies, shared
//! by both renderers. Pure: the renderers ([`super::iptables`], [`super::nftables`]) turn it into
//! rules.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label tying an EndpointSlice to its service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// `namespace/name:port` (`namespace/name` for an unnamed port), kube-proxy's
/// `ServicePortName`: the identity chain names are hashed from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    pub namespace: String,
    pub name: String,
    pub port: String,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        if !self.port.is_empty() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The API's spelling (`TCP`, ...); absent means TCP.
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// Lower case, as in rules and chain-name hashes.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// An address traffic is sent to: `ip:port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.ip, self.port)
    }
}

/// kube-proxy's default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

/// One port of one service, with the endpoints the proxy sends its traffic to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: ServicePortName,
    pub protocol: Protocol,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub node_port: Option<u16>,
    /// `spec.externalIPs` (the IPv4 ones, sorted): traffic to them on `port`
    /// is the service's, like NodePort traffic.
    pub external_ips: Vec<Ipv4Addr>,
    /// `sessionAffinity: ClientIP`: how many seconds a client keeps its endpoint.
    pub affinity_timeout: Option<u32>,
    /// `externalTrafficPolicy: Local`, on a port with external destinations
    /// (only then: [`service_ports`] leaves it false otherwise).
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// Sorted; the endpoints of the Cluster policy (all nodes'); empty means
    /// the service has no endpoint anywhere and is refused (REJECT).
    pub endpoints: Vec<Endpoint>,
    /// Sorted; the endpoints on this node, when a Local policy uses them
    /// (empty otherwise).
    pub local_endpoints: Vec<Endpoint>,
}

/// Where a port's traffic goes under its traffic policies, as kube-proxy
/// decides it (`CategorizeEndpoints` and its proxiers' `has*Endpoints`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing<'a> {
    /// The Cluster-policy chain's endpoints; empty: no such chain.
    pub cluster: &'a [Endpoint],
    /// The Local-policy chain's endpoints; empty: no such chain.
    pub local: &'a [Endpoint],
    /// Every endpoint some chain leads to (one endpoint chain each), sorted.
    pub reachable: Vec<Endpoint>,
    /// Endpoints exist somewhere; without any, every destination is refused.
    pub has_endpoints: bool,
    /// Cluster IP traffic goes to the Local chain (else the Cluster one).
    pub internal_local: bool,
    /// Cluster IP traffic has somewhere to go (else it is dropped).
    pub has_internal: bool,
    /// External traffic that is not short-circuited goes to the Local chain.
    pub external_local: bool,
    /// External traffic has somewhere to go (else it is dropped).
    pub has_external: bool,
    /// NodePort / external IP traffic enters through the external chain.
    pub uses_external_chain: bool,
}

impl ServicePort {
    /// A NodePort or external IPs: traffic from outside reaches the service.
    pub fn externally_accessible(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty()
    }

    /// Whether the Cluster policy's endpoints are used: for cluster IP
    /// traffic under `internalTrafficPolicy: Cluster`, and always when the
    /// port is external (pod and node traffic to external destinations is
    /// short-circuited to them even under `externalTrafficPolicy: Local`).
    pub fn uses_cluster_endpoints(&self) -> bool {
        !self.internal_local || self.externally_accessible()
    }

    /// Whether a Local policy applies (so the model keeps local endpoints).
    pub fn uses_local_endpoints(&self) -> bool {
        self.internal_local || self.external_local
    }

    pub fn routing(&self) -> Routing<'_> {
        let cluster: &[Endpoint] = if self.uses_cluster_endpoints() {
            &self.endpoints
        } else {
            &[]
        };
        let local: &[Endpoint] = if self.uses_local_endpoints() {
            &self.local_endpoints
        } else {
            &[]
        };
        let reachable: BTreeSet<Endpoint> = cluster.iter().chain(local).copied().collect();
        let has_endpoints = !self.endpoints.is_empty();
        let external_local = self.external_local;
        Routing {
            cluster,
            local,
            reachable: reachable.into_iter().collect(),
            has_endpoints,
            internal_local: self.internal_local,
            has_internal: has_endpoints && (!self.internal_local || !local.is_empty()),
            external_local,
            has_external: has_endpoints && (!external_local || !local.is_empty()),
            uses_external_chain: has_endpoints && self.externally_accessible(),
        }
    }
}

/// Every service port the node proxies, in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyModel {
    pub services: BTreeMap<ServicePortName, ServicePort>,
}

impl ProxyModel {
    /// The model of `services` with the endpoints of `slices`, on the node
    /// `node_name` (endpoints whose `nodeName` is it are local).
    pub fn build<'a>(
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
        node_name: &str,
    ) -> ProxyModel {
        let endpoints = endpoints_by_port(slices, node_name);
        let mut out = BTreeMap::new();
        for svc in services {
            for mut sp in service_ports(svc) {
                if let Some(eps) = endpoints.get(&(sp.name.clone(), sp.protocol)) {
                    sp.endpoints = eps.cluster.clone();
                    if sp.uses_local_endpoints() {
                        sp.local_endpoints = eps.local.clone();
                    }
                }
                out.insert(sp.name.clone(), sp);
            }
        }
        ProxyModel { services: out }
    }

    /// Endpoints over all services (kube-proxy's measure of cluster size).
    pub fn endpoint_count(&self) -> usize {
        self.services.values().map(|s| s.endpoints.len()).sum()
    }
}

/// The proxied ports of `svc`, without endpoints. A service without a cluster
/// IP (headless, ExternalName) or with an IPv6 one is not proxied here.
pub fn service_ports(svc: &Service) -> Vec<ServicePort> {
    let (Some(ns), Some(name), Some(spec)) = (
        svc.metadata.namespace.as_deref(),
        svc.metadata.name.as_deref(),
        svc.spec.as_ref(),
    ) else {
        return vec![];
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return vec![];
    }
    let Some(cluster_ip) = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
    else {
        return vec![];
    };
    let node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
    let external_ips: Vec<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
    });
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    spec.ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let protocol = Protocol::parse(p.protocol.as_deref())?;
            let port = u16::try_from(p.port).ok().filter(|p| *p > 0)?;
            let node_port = p
                .node_port
                .filter(|_| node_ports)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0);
            Some(ServicePort {
                name: ServicePortName {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                    port: p.name.clone().unwrap_or_default(),
                },
                protocol,
                cluster_ip,
                port,
                node_port,
                external_ips: external_ips.clone(),
                affinity_timeout,
                // The policy means nothing without external destinations.
                external_local: external_local && (node_port.is_some() || !external_ips.is_empty()),
                internal_local,
                endpoints: vec![],
                local_endpoints: vec![],
            })
        })
        .collect()
}

/// An endpoint's conditions as kube-proxy reads them: `ready` unset means
/// ready, `serving` unset means as ready, `terminating` unset means not.
#[derive(Debug, Clone, Copy, Default)]
struct Conditions {
    ready: bool,
    serving_terminating: bool,
    /// On this node (`nodeName`).
    local: bool,
}

/// The usable endpoints of one service port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortEndpoints {
    /// All nodes': the ready ones, or, when none is ready, those still
    /// serving while terminating (so connections drain during a rollout, as
    /// kube-proxy does).
    pub cluster: Vec<Endpoint>,
    /// This node's, chosen the same way among this node's only.
    pub local: Vec<Endpoint>,
}

/// The ready endpoints of `eps` that `keep` selects, or, when none is ready,
/// the serving-terminating ones.
fn usable(
    eps: &BTreeMap<Endpoint, Conditions>,
    keep: impl Fn(&Conditions) -> bool,
) -> Vec<Endpoint> {
    let pick = |f: &dyn Fn(&Conditions) -> bool| -> Vec<Endpoint> {
        eps.iter()
            .filter(|(_, c)| keep(c) && f(c))
            .map(|(e, _)| *e)
            .collect()
    };
    let ready = pick(&|c| c.ready);
    if ready.is_empty() {
        pick(&|c| c.serving_terminating)
    } else {
        ready
    }
}

/// The endpoints of every `(service port, protocol)` in `slices`, as seen
/// from the node `node_name`.
pub fn endpoints_by_port<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node_name: &str,
) -> BTreeMap<(ServicePortName, Protocol), PortEndpoints> {
    let mut all: BTreeMap<(ServicePortName, Protocol), BTreeMap<Endpoint, Conditions>> =
        BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let (Some(ns), Some(service)) = (
            slice.metadata.namespace.as_deref(),
            slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL)),
        ) else {
            continue;
        };
        for port in slice.ports.iter().flatten() {
            let (Some(protocol), Some(number)) = (
                Protocol::parse(port.protocol.as_deref()),
                port.port
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p > 0),
            ) else {
                continue;
            };
            let key = (
                ServicePortName {
                    namespace: ns.to_string(),
                    name: service.clone(),
                    port: port.name.clone().unwrap_or_default(),
                },
                protocol,
            );
            let entry = all.entry(key).or_default();
            for ep in &slice.endpoints {
                // kube-proxy uses the first address only.
                let Some(ip) = ep.addresses.first().and_then(|a| a.parse().ok()) else {
                    continue;
                };
                let c = ep.conditions.as_ref();
                let ready = c.and_then(|c| c.ready).unwrap_or(true);
                let serving = c.and_then(|c| c.serving).unwrap_or(ready);
                let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
                // The same address in two slices (mid-update): the best view wins.
                let cond = entry.entry(Endpoint { ip, port: number }).or_default();
                cond.ready |= ready;
                cond.serving_terminating |= serving && terminating;
                cond.local |= !node_name.is_empty() && ep.node_name.as_deref() == Some(node_name);
            }
        }
    }
    all.into_iter()
        .map(|(key, eps)| {
            let cluster = usable(&eps, |_| true);
            let local = usable(&eps, |c| c.local);
            (key, PortEndpoints { cluster, local })
        })
        .collect()
}

/// Service port names whose rules differ between two models (added, removed
/// or changed), for logs.
pub fn changed_services(old: &ProxyModel, new: &ProxyModel) -> BTreeSet<ServicePortName> {
    let mut out = BTreeSet::new();
    for (k, v) in &new.services {
        if old.services.get(k) != Some(v) {
            out.insert(k.clone());
        }
    }
    for k in old.services.keys() {
        if !new.services.contains_key(k) {
            out.insert(k.clone());
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort as ApiPort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{
        Endpoint as ApiEndpoint, EndpointConditions, EndpointPort,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// The node the tests' proxy runs on.
    pub const NODE: &str = "node1";

    pub fn service(
        ns: &str,
        name: &str,
        type_: &str,
        ip: &str,
        ports: &[(&str, i32, i32)],
    ) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                cluster_ip: Some(ip.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p, np)| ApiPort {
                            name: (!n.is_empty()).then(|| n.to_string()),
                            port: *p,
                            node_port: (*np != 0).then_some(*np),
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// `(ip, ready, serving, terminating)`.
    pub type EndpointSpec<'a> = (&'a str, Option<bool>, Option<bool>, Option<bool>);

    /// A slice of `service` with endpoints on one named port.
    pub fn slice(
        ns: &str,
        service: &str,
        port_name: &str,
        port: i32,
        eps: &[EndpointSpec],
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(format!("{service}-abcde")),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), service.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: eps
                .iter()
                .map(|(ip, ready, serving, terminating)| ApiEndpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        serving: *serving,
                        terminating: *terminating,
                    }),
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: (!port_name.is_empty()).then(|| port_name.to_string()),
                port: Some(port),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        }
    }

    /// A slice of ready endpoints (no conditions set) at `ips`.
    pub fn plain_slice(
        ns: &str,
        service: &str,
        port_name: &str,
        port: i32,
        ips: &[&str],
    ) -> EndpointSlice {
        let eps: Vec<EndpointSpec> = ips.iter().map(|ip| (*ip, None, None, None)).collect();
        slice(ns, service, port_name, port, &eps)
    }

    /// The spec of `svc`, to set what [`service`] leaves out.
    pub fn spec(svc: &mut Service) -> &mut ServiceSpec {
        svc.spec.as_mut().unwrap()
    }

    /// `slice` with the `nodeName` of each endpoint, in order.
    pub fn on_nodes(mut slice: EndpointSlice, nodes: &[&str]) -> EndpointSlice {
        for (ep, node) in slice.endpoints.iter_mut().zip(nodes) {
            ep.node_name = Some(node.to_string());
        }
        slice
    }

    /// ns1/svc1: ClusterIP 172.30.0.41 with ClientIP affinity, endpoints
    /// 10.180.0.1 and 10.180.0.2 (the scenario both renderers' tests use).
    pub fn client_ip_affinity() -> (Service, EndpointSlice) {
        let mut svc = service("ns1", "svc1", "ClusterIP", "172.30.0.41", &[("p80", 80, 0)]);
        spec(&mut svc).session_affinity = Some("ClientIP".into());
        let eps = plain_slice("ns1", "svc1", "p80", 80, &["10.180.0.1", "10.180.0.2"]);
        (svc, eps)
    }

    /// ns2/svc2: NodePort 3002 with external IP 192.168.99.22.
    pub fn external_ip_node_port() -> Service {
        let mut svc = service(
            "ns2",
            "svc2",
            "NodePort",
            "172.30.0.42",
            &[("p80", 80, 3002)],
        );
        spec(&mut svc).external_ips = Some(vec!["192.168.99.22".into()]);
        svc
    }

    /// Endpoints `ips` of `ns/svc` port p80, the first on this node and the
    /// second on node2.
    pub fn local_and_remote(ns: &str, svc: &str, ips: [&str; 2]) -> EndpointSlice {
        on_nodes(plain_slice(ns, svc, "p80", 80, &ips), &[NODE, "node2"])
    }

    /// ns3/svc3: ClusterIP 172.30.0.43 with internalTrafficPolicy Local, one
    /// endpoint here and one on node2.
    pub fn internal_traffic_local() -> (Service, EndpointSlice) {
        let mut svc = service("ns3", "svc3", "ClusterIP", "172.30.0.43", &[("p80", 80, 0)]);
        spec(&mut svc).internal_traffic_policy = Some("Local".into());
        let eps = local_and_remote("ns3", "svc3", ["10.180.0.3", "10.180.1.3"]);
        (svc, eps)
    }

    fn ep(s: &str) -> Endpoint {
        let (ip, port) = s.split_once(':').unwrap();
        Endpoint {
            ip: ip.parse().unwrap(),
            port: port.parse().unwrap(),
        }
    }

    #[test]
    fn service_port_names_read_like_kube_proxys() {
        let mut n = ServicePortName {
            namespace: "ns1".into(),
            name: "svc1".into(),
            port: "p80".into(),
        };
        assert_eq!(n.to_string(), "ns1/svc1:p80");
        n.port.clear();
        assert_eq!(n.to_string(), "ns1/svc1");
    }

    #[test]
    fn only_ready_endpoints_are_used_and_unset_ready_means_ready() {
        let svc = service("ns1", "web", "ClusterIP", "10.96.0.10", &[("http", 80, 0)]);
        let s = slice(
            "ns1",
            "web",
            "http",
            8080,
            &[
                ("10.1.0.3", Some(true), None, None),
                ("10.1.0.1", None, None, None),
                ("10.1.0.2", Some(false), Some(false), None),
                ("10.1.0.4", Some(false), Some(true), Some(true)),
            ],
        );
        let m = ProxyModel::build([&svc], [&s], NODE);
        let sp = m.services.values().next().unwrap();
        assert_eq!(sp.endpoints, vec![ep("10.1.0.1:8080"), ep("10.1.0.3:8080")]);
        assert_eq!(sp.cluster_ip.to_string(), "10.96.0.10");
        assert_eq!(sp.node_port, None);
    }

    #[test]
    fn terminating_but_serving_endpoints_are_used_only_when_none_is_ready() {
        let svc = service(
            "ns1",
            "web",
            "NodePort",
            "10.96.0.10",
            &[("http", 80, 30080)],
        );
        let s = slice(
            "ns1",
            "web",
            "http",
            8080,
            &[
                ("10.1.0.2", Some(false), Some(true), Some(true)),
                ("10.1.0.3", Some(false), Some(false), Some(true)),
            ],
        );
        let m = ProxyModel::build([&svc], [&s], NODE);
        let sp = m.services.values().next().unwrap();
        assert_eq!(sp.endpoints, vec![ep("10.1.0.2:8080")]);
        assert_eq!(sp.node_port, Some(30080));
    }

    #[test]
    fn headless_external_name_and_unmatched_ports_are_left_out() {
        let headless = service("ns1", "db", "ClusterIP", "None", &[("", 5432, 0)]);
        let ext = service("ns1", "ext", "ExternalName", "", &[("", 80, 0)]);
        let web = service("ns1", "web", "ClusterIP", "10.96.0.10", &[("http", 80, 0)]);
        let other_port = plain_slice("ns1", "web", "metrics", 9090, &["10.1.0.1"]);
        let m = ProxyModel::build([&headless, &ext, &web], [&other_port], NODE);
        assert_eq!(m.services.len(), 1);
        assert!(m.services.values().next().unwrap().endpoints.is_empty());
    }

    #[test]
    fn endpoints_of_several_slices_are_merged_without_duplicates() {
        let svc = service("ns1", "web", "ClusterIP", "10.96.0.10", &[("", 80, 0)]);
        let a = plain_slice("ns1", "web", "", 80, &["10.1.0.1"]);
        let b = slice(
            "ns1",
            "web",
            "",
            80,
            &[
                ("10.1.0.1", Some(false), None, None),
                ("10.1.0.2", None, None, None),
            ],
        );
        let m = ProxyModel::build([&svc], [&a, &b], NODE);
        assert_eq!(
            m.services.values().next().unwrap().endpoints,
            vec![ep("10.1.0.1:80"), ep("10.1.0.2:80")]
        );
        assert_eq!(m.endpoint_count(), 2);
    }

    #[test]
    fn client_ip_affinity_and_external_ips_are_read_from_the_spec() {
        use k8s_openapi::api::core::v1::{ClientIPConfig, SessionAffinityConfig};
        let mut svc = service("ns1", "web", "ClusterIP", "10.96.0.10", &[("http", 80, 0)]);
        let ports = service_ports(&svc);
        assert_eq!(ports[0].affinity_timeout, None);
        assert!(ports[0].external_ips.is_empty() && !ports[0].externally_accessible());
        spec(&mut svc).session_affinity = Some("ClientIP".into());
        spec(&mut svc).external_ips = Some(vec![
            "192.168.1.20".into(),
            "fd00::1".into(),
            "192.168.1.10".into(),
            "192.168.1.20".into(),
        ]);
        let sp = &service_ports(&svc)[0];
        assert_eq!(sp.affinity_timeout, Some(DEFAULT_AFFINITY_TIMEOUT));
        assert_eq!(
            sp.external_ips,
            [
                "192.168.1.10".parse::<Ipv4Addr>().unwrap(),
                "192.168.1.20".parse().unwrap()
            ]
        );
        assert!(sp.externally_accessible());
        spec(&mut svc).session_affinity_config = Some(SessionAffinityConfig {
            client_ip: Some(ClientIPConfig {
                timeout_seconds: Some(60),
            }),
        });
        assert_eq!(service_ports(&svc)[0].affinity_timeout, Some(60));
        spec(&mut svc).session_affinity = Some("None".into());
        assert_eq!(service_ports(&svc)[0].affinity_timeout, None);
    }

    #[test]
    fn local_policies_keep_this_nodes_endpoints() {
        let eps = on_nodes(
            plain_slice(
                "ns1",
                "web",
                "http",
                8080,
                &["10.1.0.1", "10.1.0.2", "10.2.0.1"],
            ),
            &[NODE, NODE, "node2"],
        );
        // externalTrafficPolicy: Local on a ClusterIP service without
        // external IPs means nothing.
        let mut svc = service("ns1", "web", "ClusterIP", "10.96.0.10", &[("http", 80, 0)]);
        spec(&mut svc).external_traffic_policy = Some("Local".into());
        let m = ProxyModel::build([&svc], [&eps], NODE);
        let sp = m.services.values().next().unwrap();
        assert!(!sp.external_local && !sp.uses_local_endpoints());
        assert!(sp.local_endpoints.is_empty());
        assert_eq!(sp.endpoints.len(), 3);

        let mut np = service(
            "ns1",
            "web",
            "NodePort",
            "10.96.0.10",
            &[("http", 80, 30080)],
        );
        spec(&mut np).external_traffic_policy = Some("Local".into());
        let m = ProxyModel::build([&np], [&eps], NODE);
        let sp = m.services.values().next().unwrap();
        assert!(sp.external_local);
        assert_eq!(
            sp.local_endpoints,
            [ep("10.1.0.1:8080"), ep("10.1.0.2:8080")]
        );
        let r = sp.routing();
        assert!(r.has_internal && r.has_external && r.uses_external_chain);
        assert_eq!(r.cluster.len(), 3);
        assert_eq!(r.reachable.len(), 3);
        // On another node only 10.2.0.1 is local; on a third none is.
        let m = ProxyModel::build([&np], [&eps], "node2");
        assert_eq!(
            m.services.values().next().unwrap().local_endpoints,
            [ep("10.2.0.1:8080")]
        );
        let m = ProxyModel::build([&np], [&eps], "node3");
        let r = m.services.values().next().unwrap().routing();
        assert!(r.has_endpoints && r.has_internal && !r.has_external);

        // internalTrafficPolicy: Local: only local endpoints, no cluster chain.
        let mut itp = service("ns1", "web", "ClusterIP", "10.96.0.10", &[("http", 80, 0)]);
        spec(&mut itp).internal_traffic_policy = Some("Local".into());
        let m = ProxyModel::build([&itp], [&eps], "node2");
        let r = m.services.values().next().unwrap().routing();
        assert!(r.cluster.is_empty() && r.internal_local && r.has_internal);
        assert_eq!(r.local, [ep("10.2.0.1:8080")]);
        assert_eq!(r.reachable, [ep("10.2.0.1:8080")]);
        let m = ProxyModel::build([&itp], [&eps], "node3");
        let r = m.services.values().next().unwrap().routing();
        assert!(r.has_endpoints && !r.has_internal && r.reachable.is_empty());
    }

    #[test]
    fn a_local_policy_falls_back_to_this_nodes_terminating_endpoints() {
        let mut svc = service("ns1", "web", "ClusterIP", "10.96.0.10", &[("http", 80, 0)]);
        spec(&mut svc).internal_traffic_policy = Some("Local".into());
        let eps = on_nodes(
            slice(
                "ns1",
                "web",
                "http",
                8080,
                &[
                    ("10.1.0.1", Some(false), Some(true), Some(true)),
                    ("10.2.0.1", None, None, None),
                ],
            ),
            &[NODE, "node2"],
        );
        let m = ProxyModel::build([&svc], [&eps], NODE);
        let sp = m.services.values().next().unwrap();
        // Cluster-wide a ready endpoint exists; locally only the draining one.
        assert_eq!(sp.endpoints, [ep("10.2.0.1:8080")]);
        assert_eq!(sp.local_endpoints, [ep("10.1.0.1:8080")]);
    }
}
