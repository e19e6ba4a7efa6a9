//! What the proxy programs, reduced from the API's `Service` and
//! `discovery.k8s.io/v1` `EndpointSlice` objects: one [`ServicePort`] per port
//! of every service with a cluster IP, with the endpoints traffic may go to.
//! Pure: the renderers ([`super::iptables`], [`super::nftables`]) turn it into
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

/// One port of one service, with the endpoints the proxy sends its traffic to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: ServicePortName,
    pub protocol: Protocol,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub node_port: Option<u16>,
    /// Sorted; empty means the service is refused (REJECT).
    pub endpoints: Vec<Endpoint>,
}

/// Every service port the node proxies, in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyModel {
    pub services: BTreeMap<ServicePortName, ServicePort>,
}

impl ProxyModel {
    /// The model of `services` with the endpoints of `slices`.
    pub fn build<'a>(
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> ProxyModel {
        let endpoints = endpoints_by_port(slices);
        let mut out = BTreeMap::new();
        for svc in services {
            for mut sp in service_ports(svc) {
                if let Some(eps) = endpoints.get(&(sp.name.clone(), sp.protocol)) {
                    sp.endpoints = eps.clone();
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
    spec.ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let protocol = Protocol::parse(p.protocol.as_deref())?;
            let port = u16::try_from(p.port).ok().filter(|p| *p > 0)?;
            Some(ServicePort {
                name: ServicePortName {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                    port: p.name.clone().unwrap_or_default(),
                },
                protocol,
                cluster_ip,
                port,
                node_port: p
                    .node_port
                    .filter(|_| node_ports)
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| *n > 0),
                endpoints: vec![],
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
}

/// The endpoints of every `(service port, protocol)` in `slices`: the ready
/// ones, or, when none is ready, those still serving while terminating (so
/// connections drain during a rollout, as kube-proxy does).
pub fn endpoints_by_port<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> BTreeMap<(ServicePortName, Protocol), Vec<Endpoint>> {
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
            }
        }
    }
    all.into_iter()
        .map(|(key, eps)| {
            let ready: Vec<Endpoint> = eps
                .iter()
                .filter(|(_, c)| c.ready)
                .map(|(e, _)| *e)
                .collect();
            let usable = if ready.is_empty() {
                eps.iter()
                    .filter(|(_, c)| c.serving_terminating)
                    .map(|(e, _)| *e)
                    .collect()
            } else {
                ready
            };
            (key, usable)
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
        let m = ProxyModel::build([&svc], [&s]);
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
        let m = ProxyModel::build([&svc], [&s]);
        let sp = m.services.values().next().unwrap();
        assert_eq!(sp.endpoints, vec![ep("10.1.0.2:8080")]);
        assert_eq!(sp.node_port, Some(30080));
    }

    #[test]
    fn headless_external_name_and_unmatched_ports_are_left_out() {
        let headless = service("ns1", "db", "ClusterIP", "None", &[("", 5432, 0)]);
        let ext = service("ns1", "ext", "ExternalName", "", &[("", 80, 0)]);
        let web = service("ns1", "web", "ClusterIP", "10.96.0.10", &[("http", 80, 0)]);
        let other_port = slice(
            "ns1",
            "web",
            "metrics",
            9090,
            &[("10.1.0.1", None, None, None)],
        );
        let m = ProxyModel::build([&headless, &ext, &web], [&other_port]);
        assert_eq!(m.services.len(), 1);
        assert!(m.services.values().next().unwrap().endpoints.is_empty());
    }

    #[test]
    fn endpoints_of_several_slices_are_merged_without_duplicates() {
        let svc = service("ns1", "web", "ClusterIP", "10.96.0.10", &[("", 80, 0)]);
        let a = slice("ns1", "web", "", 80, &[("10.1.0.1", None, None, None)]);
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
        let m = ProxyModel::build([&svc], [&a, &b]);
        assert_eq!(
            m.services.values().next().unwrap().endpoints,
            vec![ep("10.1.0.1:80"), ep("10.1.0.2:80")]
        );
        assert_eq!(m.endpoint_count(), 2);
    }
}
