//! The `kube-dns` Service in `kube-system`, as kubeadm and k3s create it for
//! CoreDNS (name, labels, ports `dns` 53/UDP and `dns-tcp` 53/TCP, cluster IP
//! the service range's tenth address), with no selector: its `Endpoints`
//! and EndpointSlice are written here and point at where the DNS server
//! listens, so the service proxy carries DNS traffic like any Service's.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};

pub const NAME: &str = "kube-dns";
pub const NAMESPACE: &str = "kube-system";

/// What the `kube-dns` Service points at.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeDnsService {
    pub cluster_ip: IpAddr,
    /// The DNS server's address as the nodes reach it.
    pub endpoint: SocketAddr,
}

fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// The labels CoreDNS' Service carries (`kubectl get svc -l k8s-app=kube-dns`).
fn service_labels() -> Option<BTreeMap<String, String>> {
    labels(&[
        ("k8s-app", "kube-dns"),
        ("kubernetes.io/cluster-service", "true"),
        ("kubernetes.io/name", "CoreDNS"),
    ])
}

fn meta(labels: Option<BTreeMap<String, String>>) -> ObjectMeta {
    ObjectMeta {
        name: Some(NAME.into()),
        namespace: Some(NAMESPACE.into()),
        labels,
        ..Default::default()
    }
}

/// `(name, protocol)` of the two ports, as CoreDNS' manifest names them.
const PORTS: [(&str, &str); 2] = [("dns", "UDP"), ("dns-tcp", "TCP")];

impl KubeDnsService {
    pub fn service(&self) -> Service {
        Service {
            metadata: meta(service_labels()),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                cluster_ip: Some(self.cluster_ip.to_string()),
                ports: Some(
                    PORTS
                        .iter()
                        .map(|(name, protocol)| ServicePort {
                            name: Some(name.to_string()),
                            protocol: Some(protocol.to_string()),
                            port: 53,
                            target_port: Some(IntOrString::Int(i32::from(self.endpoint.port()))),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn endpoints(&self) -> Endpoints {
        let mut labels = service_labels().unwrap_or_default();
        // Its slice is written here, not mirrored from these.
        labels.insert(
            "endpointslice.kubernetes.io/skip-mirror".into(),
            "true".into(),
        );
        Endpoints {
            metadata: meta(Some(labels)),
            subsets: Some(vec![EndpointSubset {
                addresses: Some(vec![EndpointAddress {
                    ip: self.endpoint.ip().to_string(),
                    ..Default::default()
                }]),
                ports: Some(
                    PORTS
                        .iter()
                        .map(|(name, protocol)| EndpointPort {
                            name: Some(name.to_string()),
                            protocol: Some(protocol.to_string()),
                            port: i32::from(self.endpoint.port()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }]),
        }
    }

    pub fn endpoint_slice(&self) -> EndpointSlice {
        let mut labels = service_labels().unwrap_or_default();
        labels.insert("kubernetes.io/service-name".into(), NAME.into());
        EndpointSlice {
            metadata: meta(Some(labels)),
            address_type: match self.endpoint.ip() {
                IpAddr::V4(_) => "IPv4".into(),
                IpAddr::V6(_) => "IPv6".into(),
            },
            endpoints: vec![Endpoint {
                addresses: vec![self.endpoint.ip().to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                ..Default::default()
            }],
            ports: Some(
                PORTS
                    .iter()
                    .map(|(name, protocol)| SlicePort {
                        name: Some(name.to_string()),
                        protocol: Some(protocol.to_string()),
                        port: Some(i32::from(self.endpoint.port())),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }
    }

    /// Creates the Service and its endpoints, or corrects what differs
    /// (the cluster IP is immutable: a Service with another one is left).
    pub async fn reconcile(&self, client: &kube::Client) -> Result<(), kube::Error> {
        let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
        let desired = self.service();
        match services.get_opt(NAME).await? {
            None => {
                services.create(&PostParams::default(), &desired).await?;
            }
            Some(mut current) => {
                let spec = current.spec.get_or_insert_with(Default::default);
                let want = desired.spec.clone().unwrap_or_default();
                if spec.ports != want.ports || current.metadata.labels != desired.metadata.labels {
                    spec.ports = want.ports;
                    current.metadata.labels = desired.metadata.labels.clone();
                    services
                        .replace(NAME, &PostParams::default(), &current)
                        .await?;
                }
            }
        }
        let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), NAMESPACE);
        let desired = self.endpoints();
        match endpoints.get_opt(NAME).await? {
            None => {
                endpoints.create(&PostParams::default(), &desired).await?;
            }
            Some(mut current) => {
                if current.subsets != desired.subsets
                    || current.metadata.labels != desired.metadata.labels
                {
                    current.subsets = desired.subsets;
                    current.metadata.labels = desired.metadata.labels;
                    endpoints
                        .replace(NAME, &PostParams::default(), &current)
                        .await?;
                }
            }
        }
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
        let desired = self.endpoint_slice();
        match slices.get_opt(NAME).await? {
            None => {
                slices.create(&PostParams::default(), &desired).await?;
            }
            Some(mut current) => {
                if current.endpoints != desired.endpoints
                    || current.ports != desired.ports
                    || current.address_type != desired.address_type
                    || current.metadata.labels != desired.metadata.labels
                {
                    current.endpoints = desired.endpoints;
                    current.ports = desired.ports;
                    current.address_type = desired.address_type;
                    current.metadata.labels = desired.metadata.labels;
                    slices
                        .replace(NAME, &PostParams::default(), &current)
                        .await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_is_corednss_with_endpoints_where_the_server_listens() {
        let k = KubeDnsService {
            cluster_ip: "10.96.0.10".parse().unwrap(),
            endpoint: "192.168.1.5:53".parse().unwrap(),
        };
        let svc = serde_json::to_value(k.service()).unwrap();
        assert_eq!(svc["metadata"]["labels"]["k8s-app"], "kube-dns");
        assert_eq!(svc["metadata"]["labels"]["kubernetes.io/name"], "CoreDNS");
        assert_eq!(svc["spec"]["clusterIP"], "10.96.0.10");
        assert_eq!(svc["spec"]["ports"][0]["name"], "dns");
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "UDP");
        assert_eq!(svc["spec"]["ports"][1]["name"], "dns-tcp");
        assert_eq!(svc["spec"]["ports"][1]["port"], 53);
        assert!(svc["spec"]["selector"].is_null());
        let slice = serde_json::to_value(k.endpoint_slice()).unwrap();
        assert_eq!(slice["endpoints"][0]["addresses"][0], "192.168.1.5");
        assert_eq!(
            slice["metadata"]["labels"]["kubernetes.io/service-name"],
            "kube-dns"
        );
        let ep = serde_json::to_value(k.endpoints()).unwrap();
        assert_eq!(ep["subsets"][0]["ports"][1]["protocol"], "TCP");
    }
}
