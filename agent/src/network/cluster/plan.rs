//! What the pod network across nodes should be on this node, from the Nodes
//! the apiserver knows (pure): each peer's pod CIDR and address, the routes,
//! VXLAN forwarding and neighbour entries that reach it, and the masquerade
//! and forwarding rules that keep pod-to-pod traffic's source addresses.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::Node;
use kubelab_cni::ip::IpPrefix;

use super::PodNetworkBackend;

/// VXLAN network identifier, UDP port and device name (flannel's VNI and
/// port, so the same firewall openings serve; a device name of our own).
pub const VXLAN_VNI: u32 = 1;
pub const VXLAN_PORT: u16 = 8472;
pub const VXLAN_DEVICE: &str = "kubelab.1";
/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) headers.
pub const VXLAN_OVERHEAD: u32 = 50;

/// The route protocol number the agent's routes carry (`ip route show proto
/// 75`), so it knows which routes are its own to remove when a node leaves,
/// even those an earlier agent process made.
pub const ROUTE_PROTOCOL: u8 = 75;

/// Another node whose pods this node must reach.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub node: String,
    pub pod_cidr: IpPrefix,
    pub node_ip: Ipv4Addr,
}

/// Why a Node is left out of the peers (logged, never fatal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub node: String,
    pub reason: String,
}

/// The pod CIDR and InternalIP of every Node but `me` that has both, sorted
/// by name; Nodes without them yet are skipped (IPAM and the node's first
/// status come later), an unusable value is reported.
pub fn peers(nodes: &[Node], me: &str) -> (Vec<Peer>, Vec<Skipped>) {
    let mut peers = Vec::new();
    let mut skipped = Vec::new();
    for n in nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        if name == me || n.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(cidr) = node_pod_cidr(n) else {
            continue;
        };
        let pod_cidr = match cidr.parse::<IpPrefix>() {
            Ok(p) if p.addr.is_ipv4() => p.masked(),
            _ => {
                skipped.push(Skipped {
                    node: name,
                    reason: format!("spec.podCIDR: {cidr:?} is not an IPv4 CIDR"),
                });
                continue;
            }
        };
        let Some(ip) = internal_ip(n) else {
            continue;
        };
        match ip.parse::<Ipv4Addr>() {
            Ok(node_ip) => peers.push(Peer {
                node: name,
                pod_cidr,
                node_ip,
            }),
            Err(_) => skipped.push(Skipped {
                node: name,
                reason: format!("status.addresses: InternalIP {ip:?} is not an IPv4 address"),
            }),
        }
    }
    peers.sort();
    (peers, skipped)
}

/// `spec.podCIDR` when set.
pub fn node_pod_cidr(n: &Node) -> Option<&str> {
    n.spec
        .as_ref()?
        .pod_cidr
        .as_deref()
        .filter(|c| !c.is_empty())
}

fn internal_ip(n: &Node) -> Option<&str> {
    n.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address.as_str())
}

/// A node's VXLAN tunnel endpoint address: the network address of its pod
/// CIDR (never a pod's), as flannel numbers its `flannel.1` devices.
pub fn vtep_ip(pod_cidr: &IpPrefix) -> Ipv4Addr {
    match pod_cidr.network() {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    }
}

/// A node's VXLAN device MAC, derived from its tunnel endpoint address
/// (locally administered, unicast): every node computes its peers' without
/// publishing anything.
pub fn vtep_mac(vtep: Ipv4Addr) -> [u8; 6] {
    let o = vtep.octets();
    [0x0a, 0x6b, o[0], o[1], o[2], o[3]]
}

pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// One route to a peer's pods. host-gw: via the peer's address on the
/// shared segment; vxlan: via the peer's tunnel endpoint, on-link through
/// the VXLAN device.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PeerRoute {
    pub dst: IpPrefix,
    pub gateway: Ipv4Addr,
    /// Out of the VXLAN device, `onlink` (its gateway is on no subnet).
    pub via_vxlan: bool,
}

/// What this node's kernel should hold for its peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerState {
    /// By destination.
    pub routes: BTreeMap<IpPrefix, PeerRoute>,
    /// VXLAN forwarding entries: peer device MAC → peer node address.
    pub fdb: BTreeMap<[u8; 6], Ipv4Addr>,
    /// VXLAN neighbour entries: peer tunnel endpoint → its device MAC.
    pub neighbours: BTreeMap<Ipv4Addr, [u8; 6]>,
}

pub fn desired_state(backend: PodNetworkBackend, peers: &[Peer]) -> PeerState {
    let mut s = PeerState::default();
    for p in peers {
        match backend {
            PodNetworkBackend::None => {}
            PodNetworkBackend::HostGw => {
                s.routes.insert(
                    p.pod_cidr,
                    PeerRoute {
                        dst: p.pod_cidr,
                        gateway: p.node_ip,
                        via_vxlan: false,
                    },
                );
            }
            PodNetworkBackend::Vxlan => {
                let vtep = vtep_ip(&p.pod_cidr);
                let mac = vtep_mac(vtep);
                s.routes.insert(
                    p.pod_cidr,
                    PeerRoute {
                        dst: p.pod_cidr,
                        gateway: vtep,
                        via_vxlan: true,
                    },
                );
                s.fdb.insert(mac, p.node_ip);
                s.neighbours.insert(vtep, mac);
            }
        }
    }
    s
}

/// What to add (or replace) and what to remove to go from `have` to `want`.
#[derive(Debug, PartialEq, Eq)]
pub struct Changes<K, V> {
    pub set: Vec<(K, V)>,
    pub remove: Vec<K>,
}

pub fn diff<K: Ord + Clone, V: PartialEq + Clone>(
    want: &BTreeMap<K, V>,
    have: &BTreeMap<K, V>,
) -> Changes<K, V> {
    Changes {
        set: want
            .iter()
            .filter(|(k, v)| have.get(k) != Some(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        remove: have
            .keys()
            .filter(|k| !want.contains_key(k))
            .cloned()
            .collect(),
    }
}

/// The nat and filter chains of the pod network.
pub const POSTROUTING_CHAIN: &str = "KUBELAB-POSTRTG";
pub const FORWARD_CHAIN: &str = "KUBELAB-FWD";

/// `iptables-restore --noflush` text for the node's pod traffic: pods of
/// `own` keep their address towards every pod network in `cluster` and are
/// masqueraded everywhere else (multicast aside); traffic from and to the
/// pod networks is forwarded even under a FORWARD policy of DROP.
pub fn render_rules(own: &IpPrefix, cluster: &[IpPrefix], random_fully: bool) -> String {
    use std::fmt::Write;
    let random = if random_fully { " --random-fully" } else { "" };
    let mut out = format!("*nat\n:{POSTROUTING_CHAIN} - [0:0]\n");
    for c in cluster {
        let _ = writeln!(
            out,
            "-A {POSTROUTING_CHAIN} -s {own} -d {c} -m comment --comment \"pod to pod: keep the source address\" -j RETURN"
        );
    }
    let _ = writeln!(
        out,
        "-A {POSTROUTING_CHAIN} -s {own} ! -d 224.0.0.0/4 -m comment --comment \"pod traffic leaving the cluster network\" -j MASQUERADE{random}"
    );
    out.push_str("COMMIT\n*filter\n");
    let _ = writeln!(out, ":{FORWARD_CHAIN} - [0:0]");
    for c in cluster {
        let _ = writeln!(
            out,
            "-A {FORWARD_CHAIN} -s {c} -m comment --comment \"pod network\" -j ACCEPT"
        );
        let _ = writeln!(
            out,
            "-A {FORWARD_CHAIN} -d {c} -m comment --comment \"pod network\" -j ACCEPT"
        );
    }
    out.push_str("COMMIT\n");
    out
}

/// The pod networks pod traffic keeps its source towards: `--cluster-cidr`
/// when given, else every node's pod CIDR (this node's included).
pub fn cluster_networks(
    cluster_cidr: Option<&IpPrefix>,
    own: &IpPrefix,
    peers: &[Peer],
) -> Vec<IpPrefix> {
    match cluster_cidr {
        Some(c) => vec![c.masked()],
        None => {
            let mut v: Vec<IpPrefix> = std::iter::once(own.masked())
                .chain(peers.iter().map(|p| p.pod_cidr))
                .collect();
            v.sort();
            v.dedup();
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Node {
        Node {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(String::from),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: ip.map(|ip| {
                    vec![
                        NodeAddress {
                            type_: "Hostname".into(),
                            address: name.into(),
                        },
                        NodeAddress {
                            type_: "InternalIP".into(),
                            address: ip.into(),
                        },
                    ]
                }),
                ..Default::default()
            }),
        }
    }

    fn p(s: &str) -> IpPrefix {
        s.parse().unwrap()
    }

    #[test]
    fn peers_are_the_other_nodes_with_a_pod_cidr_and_an_internal_ip() {
        let nodes = [
            node("node3", Some("10.244.3.0/24"), Some("192.168.1.13")),
            node("node1", Some("10.244.1.0/24"), Some("192.168.1.11")),
            node("node2", Some("10.244.2.0/24"), Some("192.168.1.12")),
            node("new", None, Some("192.168.1.14")),
            node("booting", Some("10.244.5.0/24"), None),
            node("bad", Some("fd00::/64"), Some("192.168.1.15")),
        ];
        let (peers, skipped) = peers(&nodes, "node1");
        assert_eq!(
            peers,
            [
                Peer {
                    node: "node2".into(),
                    pod_cidr: p("10.244.2.0/24"),
                    node_ip: "192.168.1.12".parse().unwrap()
                },
                Peer {
                    node: "node3".into(),
                    pod_cidr: p("10.244.3.0/24"),
                    node_ip: "192.168.1.13".parse().unwrap()
                },
            ]
        );
        assert_eq!(
            skipped,
            [Skipped {
                node: "bad".into(),
                reason: "spec.podCIDR: \"fd00::/64\" is not an IPv4 CIDR".into()
            }]
        );
    }

    // flannel's rule: a node's routes go with its Node object, not with
    // its readiness.
    #[test]
    fn a_not_ready_node_stays_a_peer_until_it_is_deleted() {
        use k8s_openapi::api::core::v1::{NodeCondition, Taint};
        let mut lost = node("node2", Some("10.244.2.0/24"), Some("192.168.1.12"));
        lost.status.as_mut().unwrap().conditions = Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "Unknown".into(),
            reason: Some("NodeStatusUnknown".into()),
            ..Default::default()
        }]);
        lost.spec.as_mut().unwrap().taints = Some(vec![Taint {
            key: "node.kubernetes.io/unreachable".into(),
            effect: "NoExecute".into(),
            ..Default::default()
        }]);
        let (peers_now, _) = peers(std::slice::from_ref(&lost), "node1");
        assert_eq!(peers_now.len(), 1, "a NotReady node keeps its route");

        lost.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert_eq!(peers(&[lost], "node1").0, [], "a deleted node has none");
    }

    #[test]
    fn host_gw_routes_go_via_the_peer_and_vxlan_through_its_tunnel_endpoint() {
        let peers = [Peer {
            node: "node2".into(),
            pod_cidr: p("10.244.2.0/24"),
            node_ip: "192.168.1.12".parse().unwrap(),
        }];
        let hg = desired_state(PodNetworkBackend::HostGw, &peers);
        assert_eq!(
            hg.routes.values().collect::<Vec<_>>(),
            [&PeerRoute {
                dst: p("10.244.2.0/24"),
                gateway: "192.168.1.12".parse().unwrap(),
                via_vxlan: false
            }]
        );
        assert!(hg.fdb.is_empty() && hg.neighbours.is_empty());

        let vx = desired_state(PodNetworkBackend::Vxlan, &peers);
        let mac = [0x0a, 0x6b, 10, 244, 2, 0];
        assert_eq!(format_mac(&mac), "0a:6b:0a:f4:02:00");
        assert_eq!(
            vx.routes[&p("10.244.2.0/24")],
            PeerRoute {
                dst: p("10.244.2.0/24"),
                gateway: "10.244.2.0".parse().unwrap(),
                via_vxlan: true
            }
        );
        assert_eq!(vx.fdb[&mac], "192.168.1.12".parse::<Ipv4Addr>().unwrap());
        assert_eq!(vx.neighbours[&"10.244.2.0".parse().unwrap()], mac);
        assert_eq!(
            desired_state(PodNetworkBackend::None, &peers),
            PeerState::default()
        );
    }

    #[test]
    fn a_node_that_left_is_removed_and_a_moved_one_replaced() {
        let have: BTreeMap<&str, &str> = [("a", "1"), ("b", "2"), ("gone", "3")].into();
        let want: BTreeMap<&str, &str> = [("a", "1"), ("b", "9"), ("new", "4")].into();
        assert_eq!(
            diff(&want, &have),
            Changes {
                set: vec![("b", "9"), ("new", "4")],
                remove: vec!["gone"]
            }
        );
    }

    #[test]
    fn pods_are_masqueraded_only_leaving_the_cluster_network() {
        let own = p("10.244.1.0/24");
        let peers = [Peer {
            node: "node2".into(),
            pod_cidr: p("10.244.2.0/24"),
            node_ip: "192.168.1.12".parse().unwrap(),
        }];
        let nets = cluster_networks(None, &own, &peers);
        assert_eq!(nets, [p("10.244.1.0/24"), p("10.244.2.0/24")]);
        assert_eq!(
            cluster_networks(Some(&p("10.244.7.1/16")), &own, &peers),
            [p("10.244.0.0/16")]
        );
        let text = render_rules(&own, &[p("10.244.0.0/16")], true);
        assert_eq!(
            text,
            "*nat\n\
             :KUBELAB-POSTRTG - [0:0]\n\
             -A KUBELAB-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment \"pod to pod: keep the source address\" -j RETURN\n\
             -A KUBELAB-POSTRTG -s 10.244.1.0/24 ! -d 224.0.0.0/4 -m comment --comment \"pod traffic leaving the cluster network\" -j MASQUERADE --random-fully\n\
             COMMIT\n\
             *filter\n\
             :KUBELAB-FWD - [0:0]\n\
             -A KUBELAB-FWD -s 10.244.0.0/16 -m comment --comment \"pod network\" -j ACCEPT\n\
             -A KUBELAB-FWD -d 10.244.0.0/16 -m comment --comment \"pod network\" -j ACCEPT\n\
             COMMIT\n"
        );
    }
}
