//! The one place the pod network's kernel state is made so, over rtnetlink in
//! the agent's own network namespace: routes of the agent's protocol number,
//! the VXLAN device, its address, forwarding (FDB) and neighbour entries.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use kubelab_cni::bridge::netlink::errno;
use kubelab_cni::ip::IpPrefix;

use super::plan::{PeerRoute, ROUTE_PROTOCOL, format_mac};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("opening a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("{what}: {source}")]
    Request {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("no interface of this node has the address {0} (--node-ip)")]
    NoInterface(Ipv4Addr),
}

fn req(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let what = what.into();
    move |source| LinkError::Request { what, source }
}

/// The VXLAN device as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanDevice {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    /// The node's address: the outer source of encapsulated packets.
    pub local: Ipv4Addr,
    /// The interface holding it.
    pub underlay: u32,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// Its tunnel endpoint address (/32).
    pub vtep: Ipv4Addr,
}

/// A device as the kernel reports it.
#[derive(Debug, Default)]
struct LinkFacts {
    index: u32,
    mac: Vec<u8>,
    mtu: u32,
    vxlan: Option<(u32, u16, Option<Ipv4Addr>, Option<u32>)>,
}

fn link_facts(m: &rtnetlink::packet_route::link::LinkMessage) -> LinkFacts {
    let mut f = LinkFacts {
        index: m.header.index,
        ..Default::default()
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::Address(b) => f.mac = b.clone(),
            LinkAttribute::Mtu(m) => f.mtu = *m,
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Data(InfoData::Vxlan(vx)) = i {
                        let (mut id, mut port, mut local, mut link) = (0, 0, None, None);
                        for x in vx {
                            match x {
                                InfoVxlan::Id(v) => id = *v,
                                InfoVxlan::Port(p) => port = *p,
                                InfoVxlan::Local(l) => local = Some(*l),
                                InfoVxlan::Link(l) => link = Some(*l),
                                _ => {}
                            }
                        }
                        f.vxlan = Some((id, port, local, link));
                    }
                }
            }
            _ => {}
        }
    }
    f
}

pub struct NodeLinks {
    handle: Handle,
}

impl NodeLinks {
    /// A connection in the agent's network namespace.
    pub fn connect() -> Result<NodeLinks, LinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(LinkError::Socket)?;
        tokio::spawn(conn);
        Ok(NodeLinks { handle })
    }

    async fn link_by_name(&self, name: &str) -> Result<Option<LinkFacts>, LinkError> {
        let mut s = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match s.try_next().await {
            Ok(m) => Ok(m.as_ref().map(link_facts)),
            Err(e) if errno(&e) == libc::ENODEV => Ok(None),
            Err(e) => Err(req(format!("looking up link {name}"))(e)),
        }
    }

    /// The interface holding `ip`, and its MTU.
    pub async fn interface_with(&self, ip: Ipv4Addr) -> Result<(u32, u32), LinkError> {
        let addrs: Vec<_> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(req("listing addresses"))?;
        let index = addrs
            .iter()
            .find(|m| {
                m.attributes
                    .iter()
                    .any(|a| matches!(a, AddressAttribute::Address(IpAddr::V4(a)) if *a == ip))
            })
            .map(|m| m.header.index)
            .ok_or(LinkError::NoInterface(ip))?;
        let mut s = self.handle.link().get().match_index(index).execute();
        let mtu = match s.try_next().await {
            Ok(Some(m)) => link_facts(&m).mtu,
            _ => 1500,
        };
        Ok((index, mtu))
    }

    /// The VXLAN device as `want` says, made anew when one of that name
    /// differs in VNI, port, local address or underlay; up, with its
    /// address. Its index.
    pub async fn ensure_vxlan(&self, want: &VxlanDevice) -> Result<u32, LinkError> {
        let existing = self.link_by_name(&want.name).await?;
        let fits = existing.as_ref().is_some_and(|f| {
            f.vxlan == Some((want.vni, want.port, Some(want.local), Some(want.underlay)))
        });
        if let Some(f) = existing.as_ref().filter(|_| !fits) {
            tracing::info!(device = %want.name, "replacing a VXLAN device made for other settings");
            self.delete_link_index(f.index).await?;
        }
        let index = if fits {
            let f = existing.expect("fits");
            if f.mac != want.mac || f.mtu != want.mtu {
                self.handle
                    .link()
                    .set(
                        LinkUnspec::new_with_index(f.index)
                            .address(want.mac.to_vec())
                            .mtu(want.mtu)
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(req(format!("setting {}'s address and MTU", want.name)))?;
            }
            f.index
        } else {
            let msg = LinkVxlan::new(&want.name, want.vni)
                .dev(want.underlay)
                .local(want.local)
                .port(want.port)
                .learning(false)
                .address(want.mac.to_vec())
                .mtu(want.mtu)
                .build();
            match self.handle.link().add(msg).execute().await {
                Err(e) if errno(&e) == libc::EEXIST => {}
                r => r.map_err(req(format!(
                    "creating VXLAN device {} (VNI {}, port {})",
                    want.name, want.vni, want.port
                )))?,
            }
            tracing::info!(device = %want.name, vni = want.vni, port = want.port, local = %want.local,
                mac = %format_mac(&want.mac), mtu = want.mtu, "created the VXLAN device");
            self.link_by_name(&want.name)
                .await?
                .map(|f| f.index)
                .ok_or_else(|| LinkError::Request {
                    what: format!("{} vanished after it was made", want.name),
                    source: rtnetlink::Error::RequestFailed,
                })?
        };
        self.ensure_only_address(index, want.vtep).await?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(req(format!("setting {} up", want.name)))?;
        Ok(index)
    }

    /// `vtep/32` as the only IPv4 address of link `index`.
    async fn ensure_only_address(&self, index: u32, vtep: Ipv4Addr) -> Result<(), LinkError> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(req("listing the VXLAN device's addresses"))?;
        let mut present = false;
        for m in msgs.into_iter().filter(|m| m.header.index == index) {
            let addr = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V4(a)) => Some(*a),
                _ => None,
            });
            match addr {
                Some(a) if a == vtep && m.header.prefix_len == 32 => present = true,
                Some(a) => {
                    self.handle
                        .address()
                        .del(m)
                        .execute()
                        .await
                        .map_err(req(format!("removing {a} from the VXLAN device")))?;
                }
                None => {}
            }
        }
        if !present {
            match self
                .handle
                .address()
                .add(index, IpAddr::V4(vtep), 32)
                .execute()
                .await
            {
                Err(e) if errno(&e) == libc::EEXIST => {}
                r => r.map_err(req(format!("adding {vtep}/32 to the VXLAN device")))?,
            }
        }
        Ok(())
    }

    /// Deletes the device `name` if there is one (a node switched to host-gw).
    pub async fn delete_link(&self, name: &str) -> Result<bool, LinkError> {
        match self.link_by_name(name).await? {
            Some(f) => self.delete_link_index(f.index).await.map(|_| true),
            None => Ok(false),
        }
    }

    async fn delete_link_index(&self, index: u32) -> Result<(), LinkError> {
        match self.handle.link().del(index).execute().await {
            Err(e) if errno(&e) == libc::ENODEV => Ok(()),
            r => r.map_err(req(format!("deleting link #{index}"))),
        }
    }

    /// The IPv4 routes of the main table carrying the agent's protocol
    /// number, by destination.
    pub async fn our_routes(&self) -> Result<BTreeMap<IpPrefix, RouteMessage>, LinkError> {
        let all: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(req("listing routes"))?;
        Ok(all
            .into_iter()
            .filter(|m| {
                m.header.protocol == RouteProtocol::Other(ROUTE_PROTOCOL)
                    && m.header.table == RouteHeader::RT_TABLE_MAIN
            })
            .filter_map(|m| {
                let dst = m.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => Some(*d),
                    _ => None,
                })?;
                let len = m.header.destination_prefix_length;
                Some((IpPrefix::new(IpAddr::V4(dst), len), m))
            })
            .collect())
    }

    /// What a route the agent made says, to compare with what it wants.
    pub fn route_of(m: &RouteMessage, dst: IpPrefix, vxlan_index: Option<u32>) -> PeerRoute {
        let gateway = m
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(*g),
                _ => None,
            })
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let oif = m.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        });
        PeerRoute {
            dst,
            gateway,
            via_vxlan: vxlan_index.is_some() && oif == vxlan_index,
        }
    }

    /// Adds or replaces the route `r` (out of `vxlan_index` when it goes
    /// through the VXLAN device).
    pub async fn set_route(
        &self,
        r: &PeerRoute,
        vxlan_index: Option<u32>,
    ) -> Result<(), LinkError> {
        let IpAddr::V4(dst) = r.dst.network() else {
            return Ok(());
        };
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, r.dst.prefix)
            .gateway(r.gateway)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL));
        if let (true, Some(index)) = (r.via_vxlan, vxlan_index) {
            b = b.output_interface(index).onlink();
        }
        self.handle
            .route()
            .add(b.build())
            .replace()
            .execute()
            .await
            .map_err(req(format!(
                "adding the route to {} via {}",
                r.dst, r.gateway
            )))
    }

    pub async fn delete_route(&self, dst: IpPrefix, m: RouteMessage) -> Result<(), LinkError> {
        match self.handle.route().del(m).execute().await {
            Err(e) if errno(&e) == libc::ESRCH => Ok(()),
            r => r.map_err(req(format!("removing the route to {dst}"))),
        }
    }

    /// The permanent forwarding entries of device `index`: MAC → remote address.
    pub async fn fdb(
        &self,
        index: u32,
    ) -> Result<BTreeMap<[u8; 6], (Ipv4Addr, NeighbourMessage)>, LinkError> {
        let all: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(req("listing forwarding entries"))?;
        Ok(all
            .into_iter()
            .filter(|m| m.header.ifindex == index && m.header.state == NeighbourState::Permanent)
            .filter_map(|m| {
                let mac: [u8; 6] = m.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::LinkLayerAddress(l) => l.as_slice().try_into().ok(),
                    _ => None,
                })?;
                // An AF_BRIDGE message's NDA_DST is parsed as raw bytes.
                let dst = m.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => Some(*d),
                    NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                        <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
                    }
                    _ => None,
                })?;
                Some((mac, (dst, m)))
            })
            .collect())
    }

    /// `bridge fdb replace MAC dev DEVICE dst REMOTE self permanent`.
    pub async fn set_fdb(
        &self,
        index: u32,
        mac: [u8; 6],
        remote: Ipv4Addr,
    ) -> Result<(), LinkError> {
        self.handle
            .neighbours()
            .add_bridge(index, &mac)
            .flags(NeighbourFlags::Own)
            .destination(IpAddr::V4(remote))
            .replace()
            .execute()
            .await
            .map_err(req(format!(
                "adding the forwarding entry {} to {remote}",
                format_mac(&mac)
            )))
    }

    /// The permanent IPv4 neighbour entries of device `index`.
    pub async fn neighbours(
        &self,
        index: u32,
    ) -> Result<BTreeMap<Ipv4Addr, ([u8; 6], NeighbourMessage)>, LinkError> {
        let all: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute()
            .try_collect()
            .await
            .map_err(req("listing neighbour entries"))?;
        Ok(all
            .into_iter()
            .filter(|m| m.header.ifindex == index && m.header.state == NeighbourState::Permanent)
            .filter_map(|m| {
                let ip = m.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => Some(*d),
                    _ => None,
                })?;
                let mac: [u8; 6] = m.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::LinkLayerAddress(l) => l.as_slice().try_into().ok(),
                    _ => None,
                })?;
                Some((ip, (mac, m)))
            })
            .collect())
    }

    /// `ip neigh replace IP lladdr MAC dev DEVICE nud permanent`.
    pub async fn set_neighbour(
        &self,
        index: u32,
        ip: Ipv4Addr,
        mac: [u8; 6],
    ) -> Result<(), LinkError> {
        self.handle
            .neighbours()
            .add(index, IpAddr::V4(ip))
            .link_layer_address(&mac)
            .replace()
            .execute()
            .await
            .map_err(req(format!(
                "adding the neighbour entry {ip} at {}",
                format_mac(&mac)
            )))
    }

    pub async fn delete_neighbour(&self, what: &str, m: NeighbourMessage) -> Result<(), LinkError> {
        match self.handle.neighbours().del(m).execute().await {
            Err(e) if errno(&e) == libc::ENOENT => Ok(()),
            r => r.map_err(req(format!("removing the {what}"))),
        }
    }
}
