//! The cluster's DNS records, computed from Services and EndpointSlices as
//! the Kubernetes DNS specification (`cluster-dns` schema, as CoreDNS'
//! `kubernetes` plugin serves it) lays them out:
//!
//! - `<svc>.<ns>.svc.<zone>`: A/AAAA of a ClusterIP Service's cluster IPs; of
//!   a headless Service's ready endpoints; a CNAME for an ExternalName one.
//! - `_<port>._<proto>.<svc>.<ns>.svc.<zone>`: SRV per named port (headless:
//!   per endpoint, its target the endpoint's own name).
//! - `<hostname>.<svc>.<ns>.svc.<zone>`: a headless Service's endpoint, by the
//!   EndpointSlice endpoint's `hostname` (StatefulSet pods) or its dashed IP.
//! - `<a-b-c-d>.<ns>.pod.<zone>`: the address spelled by the name (CoreDNS'
//!   `pods insecure`, the kubeadm default).
//! - PTR for cluster IPs and headless endpoints in `in-addr.arpa`/`ip6.arpa`.
//! - Anything else in the zone: NXDOMAIN with the zone's SOA; a name that
//!   exists without records of the asked type: NOERROR with the SOA.
//!
//! [`ClusterRecords::build`] indexes the objects once per change;
//! [`ClusterRecords::resolve`] answers a query from the index alone.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// CoreDNS' `kubernetes` plugin answers with this TTL unless told otherwise.
pub const DEFAULT_TTL: u32 = 5;
/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What the zone answers a query with.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// NOERROR with records. `chase` is an ExternalName's target, to be
    /// resolved upstream for an address query (the answer holds its CNAME).
    Records {
        answers: Vec<Record>,
        additionals: Vec<Record>,
        chase: Option<Name>,
    },
    /// The name exists but has no records of the asked type: NOERROR, SOA.
    NoData,
    /// The name is in the zone but does not exist: NXDOMAIN, SOA.
    NxDomain,
    /// Not a cluster name: forward it.
    NotOurs,
}

/// One named port of a Service (or of a headless Service's endpoints).
#[derive(Debug, Clone, PartialEq)]
struct PortRecord {
    name: String,
    /// `tcp`, `udp`, `sctp`: the SRV name's `_<proto>` label.
    protocol: String,
    port: u16,
}

/// One ready endpoint of a headless Service.
#[derive(Debug, Clone, PartialEq)]
struct EndpointRecord {
    /// Its name under the Service: the endpoint's `hostname`, or the IP with
    /// dashes (`10-244-0-5`).
    label: String,
    ip: IpAddr,
}

#[derive(Debug, Clone, PartialEq)]
enum ServiceKind {
    ClusterIp(Vec<IpAddr>),
    Headless(Vec<EndpointRecord>),
    ExternalName(Name),
}

#[derive(Debug, Clone, PartialEq)]
struct ServiceRecord {
    kind: ServiceKind,
    ports: Vec<PortRecord>,
}

/// The index the server answers from: every Service of the cluster, its
/// endpoints, and the reverse names of their addresses.
#[derive(Debug, Clone)]
pub struct ClusterRecords {
    zone: Name,
    ttl: u32,
    soa: Record,
    /// `(namespace, name)` → the Service's records.
    services: HashMap<(String, String), ServiceRecord>,
    namespaces: HashMap<String, usize>,
    /// Address → the name its PTR record points at.
    reverse: HashMap<IpAddr, Name>,
}

/// `10.244.0.5` → `10-244-0-5`; IPv6 colons become dashes as CoreDNS does.
pub fn dashed_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// `10-244-0-5` → `10.244.0.5` (IPv6: dashes back to colons).
pub fn parse_dashed_ip(label: &str) -> Option<IpAddr> {
    if label.contains('-') && label.matches('-').count() == 3 && !label.contains("--") {
        if let Ok(ip) = label.replace('-', ".").parse() {
            return Some(ip);
        }
    }
    label.replace('-', ":").parse().ok()
}

fn service_key(svc: &Service) -> Option<(String, String)> {
    Some((svc.metadata.namespace.clone()?, svc.metadata.name.clone()?))
}

/// An EndpointSlice endpoint counts unless it says it is not ready (a
/// missing condition means ready, as the API documents);
/// `publishNotReadyAddresses` takes them all.
fn endpoint_serves(ready: Option<bool>, publish_not_ready: bool) -> bool {
    publish_not_ready || ready.unwrap_or(true)
}

fn lower_labels(name: &Name) -> Vec<String> {
    name.iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect()
}

impl ClusterRecords {
    /// Indexes `services` and the EndpointSlices of the headless ones.
    /// `zone` is the cluster domain (`cluster.local`).
    pub fn build<'a>(
        zone: &Name,
        ttl: u32,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> ClusterRecords {
        let mut zone = zone.to_lowercase();
        zone.set_fqdn(true);
        let mut slices_by_service: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            let (Some(ns), Some(svc)) = (
                slice.metadata.namespace.clone(),
                slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .cloned(),
            ) else {
                continue;
            };
            slices_by_service.entry((ns, svc)).or_default().push(slice);
        }
        let mut records = ClusterRecords {
            soa: soa_record(&zone, ttl),
            zone,
            ttl,
            services: HashMap::new(),
            namespaces: HashMap::new(),
            reverse: HashMap::new(),
        };
        for svc in services {
            let Some(key) = service_key(svc) else {
                continue;
            };
            let slices = slices_by_service
                .get(&key)
                .map(Vec::as_slice)
                .unwrap_or_default();
            if let Some(record) = service_record(svc, slices) {
                records.add(key, record);
            }
        }
        records
    }

    fn add(&mut self, (ns, name): (String, String), record: ServiceRecord) {
        let service_name = self.service_name(&name, &ns);
        match &record.kind {
            ServiceKind::ClusterIp(ips) => {
                for ip in ips {
                    self.reverse
                        .entry(*ip)
                        .or_insert_with(|| service_name.clone());
                }
            }
            ServiceKind::Headless(endpoints) => {
                for ep in endpoints {
                    if let Ok(n) = service_name.prepend_label(ep.label.as_str()) {
                        self.reverse.entry(ep.ip).or_insert(n);
                    }
                }
            }
            ServiceKind::ExternalName(_) => {}
        }
        *self.namespaces.entry(ns.clone()).or_default() += 1;
        self.services.insert((ns, name), record);
    }

    /// `<svc>.<ns>.svc.<zone>`.
    fn service_name(&self, svc: &str, ns: &str) -> Name {
        Name::from_labels([svc, ns, "svc"].iter().map(|s| s.as_bytes()))
            .and_then(|n| n.append_domain(&self.zone))
            .unwrap_or_else(|_| self.zone.clone())
    }

    pub fn zone(&self) -> &Name {
        &self.zone
    }

    /// The zone's SOA, for the authority section of negative answers.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// Answers `qtype` for `name` from the index.
    pub fn resolve(&self, name: &Name, qtype: RecordType) -> Answer {
        let mut name = name.to_lowercase();
        name.set_fqdn(true);
        if self.zone.zone_of(&name) {
            let labels = lower_labels(&name);
            let relative = &labels[..labels.len() - self.zone.num_labels() as usize];
            return self.resolve_in_zone(&name, relative, qtype);
        }
        if let Ok(net) = name.parse_arpa_name()
            && let Some(target) = self.reverse.get(&net.addr())
            && net.prefix_len() == net.max_prefix_len()
        {
            return match qtype {
                RecordType::PTR | RecordType::ANY => self.records(vec![Record::from_rdata(
                    name,
                    self.ttl,
                    RData::PTR(PTR(target.clone())),
                )]),
                _ => Answer::NoData,
            };
        }
        Answer::NotOurs
    }

    fn records(&self, answers: Vec<Record>) -> Answer {
        if answers.is_empty() {
            return Answer::NoData;
        }
        Answer::Records {
            answers,
            additionals: Vec::new(),
            chase: None,
        }
    }

    fn resolve_in_zone(&self, name: &Name, labels: &[String], qtype: RecordType) -> Answer {
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        match labels.as_slice() {
            [] => match qtype {
                RecordType::SOA => self.records(vec![self.soa.clone()]),
                RecordType::NS => self.records(vec![Record::from_rdata(
                    name.clone(),
                    self.ttl,
                    RData::NS(NS(self.ns_name())),
                )]),
                _ => Answer::NoData,
            },
            ["svc"] | ["pod"] => Answer::NoData,
            [ns, "svc"] | [ns, "pod"] => {
                if self.namespaces.contains_key(*ns) {
                    Answer::NoData
                } else {
                    Answer::NxDomain
                }
            }
            [svc, ns, "svc"] => self.service_answer(name, ns, svc, qtype),
            [endpoint, svc, ns, "svc"] => self.endpoint_answer(name, ns, svc, endpoint, qtype),
            [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
                self.port_answer(name, ns, svc, &port[1..], &proto[1..], qtype)
            }
            [ip, _ns, "pod"] => match parse_dashed_ip(ip) {
                Some(ip) => self.address_answer(name, &[ip], qtype),
                None => Answer::NxDomain,
            },
            _ => Answer::NxDomain,
        }
    }

    fn ns_name(&self) -> Name {
        Name::from_labels(["ns", "dns"].iter().map(|s| s.as_bytes()))
            .and_then(|n| n.append_domain(&self.zone))
            .unwrap_or_else(|_| self.zone.clone())
    }

    /// A/AAAA records of `ips` for the asked type.
    fn address_records(&self, name: &Name, ips: &[IpAddr], qtype: RecordType) -> Vec<Record> {
        ips.iter()
            .filter_map(|ip| {
                let rdata = match (ip, qtype) {
                    (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(*v4)),
                    (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(*v6)),
                    _ => return None,
                };
                Some(Record::from_rdata(name.clone(), self.ttl, rdata))
            })
            .collect()
    }

    fn address_answer(&self, name: &Name, ips: &[IpAddr], qtype: RecordType) -> Answer {
        self.records(self.address_records(name, ips, qtype))
    }

    fn service_answer(&self, name: &Name, ns: &str, svc: &str, qtype: RecordType) -> Answer {
        let Some(record) = self.services.get(&(ns.to_owned(), svc.to_owned())) else {
            return Answer::NxDomain;
        };
        match (&record.kind, qtype) {
            (ServiceKind::ExternalName(target), _) => Answer::Records {
                answers: vec![Record::from_rdata(
                    name.clone(),
                    self.ttl,
                    RData::CNAME(CNAME(target.clone())),
                )],
                additionals: Vec::new(),
                chase: matches!(qtype, RecordType::A | RecordType::AAAA).then(|| target.clone()),
            },
            (_, RecordType::SRV) => self.srv_answer(name, record, None),
            (ServiceKind::ClusterIp(ips), _) => self.address_answer(name, ips, qtype),
            (ServiceKind::Headless(endpoints), _) => {
                let ips: Vec<IpAddr> = endpoints.iter().map(|e| e.ip).collect();
                self.address_answer(name, &ips, qtype)
            }
        }
    }

    fn endpoint_answer(
        &self,
        name: &Name,
        ns: &str,
        svc: &str,
        endpoint: &str,
        qtype: RecordType,
    ) -> Answer {
        let Some(ServiceRecord {
            kind: ServiceKind::Headless(endpoints),
            ..
        }) = self.services.get(&(ns.to_owned(), svc.to_owned()))
        else {
            return Answer::NxDomain;
        };
        let ips: Vec<IpAddr> = endpoints
            .iter()
            .filter(|e| e.label == endpoint)
            .map(|e| e.ip)
            .collect();
        if ips.is_empty() {
            return Answer::NxDomain;
        }
        self.address_answer(name, &ips, qtype)
    }

    fn port_answer(
        &self,
        name: &Name,
        ns: &str,
        svc: &str,
        port: &str,
        proto: &str,
        qtype: RecordType,
    ) -> Answer {
        let Some(record) = self.services.get(&(ns.to_owned(), svc.to_owned())) else {
            return Answer::NxDomain;
        };
        if matches!(record.kind, ServiceKind::ExternalName(_))
            || !record
                .ports
                .iter()
                .any(|p| p.name == port && p.protocol == proto)
        {
            return Answer::NxDomain;
        }
        if qtype != RecordType::SRV && qtype != RecordType::ANY {
            return Answer::NoData;
        }
        self.srv_answer(name, record, Some((port, proto)))
    }

    /// SRV records (and the A/AAAA of their targets as additionals) for the
    /// Service's named ports, or the one `(port, proto)`.
    fn srv_answer(
        &self,
        name: &Name,
        record: &ServiceRecord,
        only: Option<(&str, &str)>,
    ) -> Answer {
        let ports: Vec<&PortRecord> = record
            .ports
            .iter()
            .filter(|p| !p.name.is_empty())
            .filter(|p| only.is_none_or(|(n, proto)| p.name == n && p.protocol == proto))
            .collect();
        // The Service's own name: the SRV name minus `_port._proto`.
        let service_name = if only.is_some() {
            name.base_name().base_name()
        } else {
            name.clone()
        };
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        match &record.kind {
            ServiceKind::ClusterIp(ips) => {
                for p in &ports {
                    answers.push(Record::from_rdata(
                        name.clone(),
                        self.ttl,
                        RData::SRV(SRV::new(0, 100, p.port, service_name.clone())),
                    ));
                }
                if !answers.is_empty() {
                    additionals.extend(self.address_records(&service_name, ips, RecordType::ANY));
                }
            }
            ServiceKind::Headless(endpoints) => {
                let weight = (100 / endpoints.len().max(1)).max(1) as u16;
                for ep in endpoints {
                    let Ok(target) = service_name.prepend_label(ep.label.as_str()) else {
                        continue;
                    };
                    for p in &ports {
                        answers.push(Record::from_rdata(
                            name.clone(),
                            self.ttl,
                            RData::SRV(SRV::new(0, weight, p.port, target.clone())),
                        ));
                    }
                    if !ports.is_empty() {
                        additionals.extend(self.address_records(
                            &target,
                            &[ep.ip],
                            RecordType::ANY,
                        ));
                    }
                }
            }
            ServiceKind::ExternalName(_) => {}
        }
        if answers.is_empty() {
            return Answer::NoData;
        }
        Answer::Records {
            answers,
            additionals,
            chase: None,
        }
    }
}

/// `ns.dns.<zone> hostmaster.<zone>` with CoreDNS' timers.
fn soa_record(zone: &Name, ttl: u32) -> Record {
    let name = |first: &[&str]| {
        Name::from_labels(first.iter().map(|s| s.as_bytes()))
            .and_then(|n| n.append_domain(zone))
            .unwrap_or_else(|_| zone.clone())
    };
    let serial = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1);
    Record::from_rdata(
        zone.clone(),
        ttl,
        RData::SOA(SOA::new(
            name(&["ns", "dns"]),
            name(&["hostmaster"]),
            serial,
            7200,
            1800,
            86400,
            ttl,
        )),
    )
}

/// The records one Service contributes, or `None` for one that has none
/// (no cluster IP yet, an ExternalName that is no DNS name).
fn service_record(svc: &Service, slices: &[&EndpointSlice]) -> Option<ServiceRecord> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        let target = spec.external_name.as_deref().filter(|n| !n.is_empty())?;
        let mut target = Name::from_ascii(target).ok()?;
        target.set_fqdn(true);
        return Some(ServiceRecord {
            kind: ServiceKind::ExternalName(target),
            ports: Vec::new(),
        });
    }
    let cluster_ips: Vec<&str> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        _ => spec.cluster_ip.as_deref().into_iter().collect(),
    };
    if cluster_ips.first() == Some(&"None") {
        let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
        let mut endpoints = Vec::new();
        // Headless: the ports are the endpoints' (named alike across slices).
        let mut ports: BTreeMap<(String, String), u16> = BTreeMap::new();
        for slice in slices {
            for ep in &slice.endpoints {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready);
                if !endpoint_serves(ready, publish_not_ready) {
                    continue;
                }
                for addr in &ep.addresses {
                    let Ok(ip) = addr.parse::<IpAddr>() else {
                        continue;
                    };
                    let label = ep
                        .hostname
                        .clone()
                        .filter(|h| !h.is_empty())
                        .unwrap_or_else(|| dashed_ip(ip));
                    endpoints.push(EndpointRecord { label, ip });
                }
            }
            for p in slice.ports.iter().flatten() {
                if let (Some(name), Some(port)) = (&p.name, p.port) {
                    let protocol = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                    ports.insert((name.clone(), protocol), port as u16);
                }
            }
        }
        endpoints.sort_by(|a, b| (&a.label, a.ip).cmp(&(&b.label, b.ip)));
        endpoints.dedup();
        return Some(ServiceRecord {
            kind: ServiceKind::Headless(endpoints),
            ports: ports
                .into_iter()
                .map(|((name, protocol), port)| PortRecord {
                    name,
                    protocol,
                    port,
                })
                .collect(),
        });
    }
    let ips: Vec<IpAddr> = cluster_ips
        .iter()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    if ips.is_empty() {
        return None;
    }
    let ports = spec
        .ports
        .iter()
        .flatten()
        .map(|p| PortRecord {
            name: p.name.clone().unwrap_or_default(),
            protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
            port: p.port as u16,
        })
        .collect();
    Some(ServiceRecord {
        kind: ServiceKind::ClusterIp(ips),
        ports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn cluster() -> ClusterRecords {
        let services = [
            service(json!({"metadata": {"name": "web", "namespace": "default"},
                "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                              {"name": "dns", "port": 53, "protocol": "UDP"}]}})),
            service(
                json!({"metadata": {"name": "nginx", "namespace": "default"},
                "spec": {"clusterIP": "None", "ports": [{"name": "web", "port": 80}]}}),
            ),
            service(json!({"metadata": {"name": "db", "namespace": "prod"},
                "spec": {"type": "ExternalName", "externalName": "db.example.com"}})),
            service(
                json!({"metadata": {"name": "pending", "namespace": "default"},
                "spec": {"type": "ClusterIP"}}),
            ),
        ];
        let slices = [
            slice(
                json!({"metadata": {"name": "nginx-abc", "namespace": "default",
                    "labels": {"kubernetes.io/service-name": "nginx"}},
                "addressType": "IPv4",
                "endpoints": [
                    {"addresses": ["10.244.0.5"], "hostname": "web-0", "conditions": {"ready": true}},
                    {"addresses": ["10.244.0.6"], "conditions": {}},
                    {"addresses": ["10.244.0.7"], "hostname": "web-2", "conditions": {"ready": false}}],
                "ports": [{"name": "web", "port": 8080, "protocol": "TCP"}]}),
            ),
            // Another namespace's slice of the same name changes nothing.
            slice(json!({"metadata": {"name": "nginx-x", "namespace": "other",
                    "labels": {"kubernetes.io/service-name": "nginx"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.244.9.9"]}]})),
        ];
        ClusterRecords::build(&n("cluster.local"), DEFAULT_TTL, &services, &slices)
    }

    fn answers(a: &Answer) -> Vec<String> {
        match a {
            Answer::Records { answers, .. } => answers
                .iter()
                .map(|r| format!("{} {}", r.record_type(), r.data))
                .collect(),
            other => panic!("expected records, got {other:?}"),
        }
    }

    #[test]
    fn a_cluster_ip_service_answers_its_cluster_ip_and_nodata_for_aaaa() {
        let c = cluster();
        let a = c.resolve(&n("web.default.svc.cluster.local."), RecordType::A);
        assert_eq!(answers(&a), ["A 10.96.0.20"]);
        // Any case, as DNS names are.
        let a = c.resolve(&n("WEB.Default.svc.Cluster.Local."), RecordType::A);
        assert_eq!(answers(&a), ["A 10.96.0.20"]);
        assert_eq!(
            c.resolve(&n("web.default.svc.cluster.local."), RecordType::AAAA),
            Answer::NoData
        );
    }

    #[test]
    fn a_headless_service_answers_its_ready_endpoints() {
        let c = cluster();
        let a = c.resolve(&n("nginx.default.svc.cluster.local."), RecordType::A);
        assert_eq!(answers(&a), ["A 10.244.0.6", "A 10.244.0.5"]);
    }

    #[test]
    fn endpoints_have_names_by_hostname_or_dashed_ip() {
        let c = cluster();
        let a = c.resolve(&n("web-0.nginx.default.svc.cluster.local."), RecordType::A);
        assert_eq!(answers(&a), ["A 10.244.0.5"]);
        let a = c.resolve(
            &n("10-244-0-6.nginx.default.svc.cluster.local."),
            RecordType::A,
        );
        assert_eq!(answers(&a), ["A 10.244.0.6"]);
        // Not ready: not served.
        assert_eq!(
            c.resolve(&n("web-2.nginx.default.svc.cluster.local."), RecordType::A),
            Answer::NxDomain
        );
        // A ClusterIP service's endpoints have no names.
        assert_eq!(
            c.resolve(&n("web-0.web.default.svc.cluster.local."), RecordType::A),
            Answer::NxDomain
        );
    }

    #[test]
    fn srv_records_name_the_port_and_the_target() {
        let c = cluster();
        let a = c.resolve(
            &n("_http._tcp.web.default.svc.cluster.local."),
            RecordType::SRV,
        );
        assert_eq!(answers(&a), ["SRV 0 100 80 web.default.svc.cluster.local."]);
        let Answer::Records { additionals, .. } = &a else {
            unreachable!()
        };
        assert_eq!(additionals.len(), 1);
        assert_eq!(&additionals[0].name, &n("web.default.svc.cluster.local."));
        let a = c.resolve(
            &n("_dns._udp.web.default.svc.cluster.local."),
            RecordType::SRV,
        );
        assert_eq!(answers(&a), ["SRV 0 100 53 web.default.svc.cluster.local."]);
        // The wrong protocol is no such name.
        assert_eq!(
            c.resolve(
                &n("_http._udp.web.default.svc.cluster.local."),
                RecordType::SRV
            ),
            Answer::NxDomain
        );
        // A headless service: one per endpoint, its port the endpoints'.
        let a = c.resolve(
            &n("_web._tcp.nginx.default.svc.cluster.local."),
            RecordType::SRV,
        );
        assert_eq!(
            answers(&a),
            [
                "SRV 0 50 8080 10-244-0-6.nginx.default.svc.cluster.local.",
                "SRV 0 50 8080 web-0.nginx.default.svc.cluster.local."
            ]
        );
        // SRV on the service name itself lists every named port.
        let a = c.resolve(&n("web.default.svc.cluster.local."), RecordType::SRV);
        assert_eq!(answers(&a).len(), 2);
    }

    #[test]
    fn an_external_name_is_a_cname_chased_for_addresses() {
        let c = cluster();
        let a = c.resolve(&n("db.prod.svc.cluster.local."), RecordType::A);
        assert_eq!(answers(&a), ["CNAME db.example.com."]);
        let Answer::Records { chase, .. } = a else {
            unreachable!()
        };
        assert_eq!(chase, Some(n("db.example.com.")));
        let Answer::Records { chase, .. } =
            c.resolve(&n("db.prod.svc.cluster.local."), RecordType::CNAME)
        else {
            panic!()
        };
        assert_eq!(chase, None);
    }

    #[test]
    fn pod_names_spell_their_address() {
        let c = cluster();
        let a = c.resolve(&n("10-244-1-7.default.pod.cluster.local."), RecordType::A);
        assert_eq!(answers(&a), ["A 10.244.1.7"]);
        assert_eq!(
            c.resolve(&n("not-an-ip.default.pod.cluster.local."), RecordType::A),
            Answer::NxDomain
        );
        assert_eq!(parse_dashed_ip("fd00--1"), Some("fd00::1".parse().unwrap()));
        assert_eq!(dashed_ip("fd00::1".parse().unwrap()), "fd00--1");
    }

    #[test]
    fn unknown_cluster_names_are_nxdomain_and_the_rest_is_forwarded() {
        let c = cluster();
        for name in [
            "nope.default.svc.cluster.local.",
            "kubernetes.default.default.svc.cluster.local.",
            "web.nowhere.svc.cluster.local.",
            "x.cluster.local.",
            "pending.default.svc.cluster.local.",
        ] {
            assert_eq!(
                c.resolve(&n(name), RecordType::A),
                Answer::NxDomain,
                "{name}"
            );
        }
        assert_eq!(
            c.resolve(&n("default.svc.cluster.local."), RecordType::A),
            Answer::NoData
        );
        assert_eq!(
            c.resolve(&n("cluster.local."), RecordType::A),
            Answer::NoData
        );
        assert_eq!(
            answers(&c.resolve(&n("cluster.local."), RecordType::SOA)),
            [format!("SOA {}", c.soa().data)]
        );
        assert_eq!(
            c.resolve(&n("example.com."), RecordType::A),
            Answer::NotOurs
        );
        // An unqualified name is read as absolute.
        assert_eq!(
            answers(&c.resolve(&n("web.default.svc.cluster.local"), RecordType::A)),
            ["A 10.96.0.20"]
        );
    }

    #[test]
    fn ptr_records_for_cluster_ips_and_endpoints() {
        let c = cluster();
        let ptr = |ip: &str| c.resolve(&Name::from(ip.parse::<IpAddr>().unwrap()), RecordType::PTR);
        assert_eq!(
            answers(&ptr("10.96.0.20")),
            ["PTR web.default.svc.cluster.local."]
        );
        assert_eq!(
            answers(&ptr("10.244.0.5")),
            ["PTR web-0.nginx.default.svc.cluster.local."]
        );
        assert_eq!(ptr("192.0.2.1"), Answer::NotOurs);
    }
}
