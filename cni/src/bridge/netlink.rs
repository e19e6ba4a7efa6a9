//! The link, address and route operations the bridge plugin needs, over
//! rtnetlink. A [`Netlink`] is bound to one network namespace: the socket is
//! opened in it (from a short-lived thread that entered it), so every request
//! on it acts there while this process stays where it is.

use std::fs::File;
use std::net::IpAddr;

use futures::TryStreamExt;
use nix::sched::CloneFlags;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};

use crate::ip::IpPrefix;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("opening a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("entering the network namespace: {0}")]
    Setns(#[source] nix::Error),
    #[error("{what}: {source}")]
    Request {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// The errno of a failed netlink request (0 when it is not a kernel error).
pub fn errno(e: &rtnetlink::Error) -> i32 {
    match e {
        rtnetlink::Error::NetlinkError(m) => -m.raw_code(),
        _ => 0,
    }
}

pub struct Netlink {
    handle: Handle,
}

/// What the plugin needs to know of a link.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: String,
    pub controller: Option<u32>,
    pub is_bridge: bool,
    pub up: bool,
    pub promisc: bool,
}

impl Link {
    fn from_message(m: &LinkMessage) -> Link {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            mac: String::new(),
            controller: None,
            is_bridge: false,
            up: m.header.flags.contains(LinkFlags::Up),
            promisc: m.header.flags.contains(LinkFlags::Promisc),
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Address(b) => {
                    link.mac = b
                        .iter()
                        .map(|x| format!("{x:02x}"))
                        .collect::<Vec<_>>()
                        .join(":")
                }
                LinkAttribute::Controller(c) => link.controller = Some(*c),
                LinkAttribute::LinkInfo(infos) => {
                    link.is_bridge |= infos
                        .iter()
                        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge)))
                }
                _ => {}
            }
        }
        link
    }
}

impl Netlink {
    /// A connection in this process's own network namespace.
    pub fn current() -> Result<Netlink, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// A connection in the namespace `ns` (an open nsfs file, e.g. `/proc/<pid>/ns/net`).
    pub fn in_netns(ns: &File) -> Result<Netlink, NetlinkError> {
        let rt = tokio::runtime::Handle::current();
        let ns = ns.try_clone().map_err(NetlinkError::Socket)?;
        // setns affects only the calling thread: do it on a thread of its own,
        // which ends right after, and open the socket there.
        let opened = std::thread::spawn(move || {
            let _enter = rt.enter();
            nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).map_err(NetlinkError::Setns)?;
            rtnetlink::new_connection().map_err(NetlinkError::Socket)
        })
        .join()
        .map_err(|_| NetlinkError::Invalid("the netns thread panicked".into()))?;
        let (conn, handle, _) = opened?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    fn req(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
        let what = what.into();
        move |source| NetlinkError::Request { what, source }
    }

    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let mut s = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match s.try_next().await {
            Ok(m) => Ok(m.as_ref().map(Link::from_message)),
            Err(e) if errno(&e) == libc::ENODEV => Ok(None),
            Err(e) => Err(Self::req(format!("looking up link {name}"))(e)),
        }
    }

    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>, NetlinkError> {
        let mut s = self.handle.link().get().match_index(index).execute();
        match s.try_next().await {
            Ok(m) => Ok(m.as_ref().map(Link::from_message)),
            Err(e) if errno(&e) == libc::ENODEV => Ok(None),
            Err(e) => Err(Self::req(format!("looking up link #{index}"))(e)),
        }
    }

    /// The bridge `name`, created (and brought up) if missing.
    pub async fn ensure_bridge(
        &self,
        name: &str,
        mtu: Option<u32>,
        promisc: bool,
    ) -> Result<Link, NetlinkError> {
        let link = match self.link_by_name(name).await? {
            Some(l) => l,
            None => {
                let mut b = LinkBridge::new(name).up();
                if let Some(m) = mtu {
                    b = b.mtu(m);
                }
                if promisc {
                    b = b.promiscuous(true);
                }
                match self.handle.link().add(b.build()).execute().await {
                    // Another ADD made it meanwhile.
                    Err(e) if errno(&e) == libc::EEXIST => {}
                    r => r.map_err(Self::req(format!("creating bridge {name}")))?,
                }
                self.link_by_name(name)
                    .await?
                    .ok_or_else(|| NetlinkError::Invalid(format!("bridge {name} vanished")))?
            }
        };
        if !link.is_bridge {
            return Err(NetlinkError::Invalid(format!(
                "{name} already exists but is not a bridge"
            )));
        }
        // Only a request when something is to change: most ADDs find it as they want it.
        if !link.up || (promisc && !link.promisc) {
            self.set_up(link.index, promisc).await?;
        }
        Ok(link)
    }

    pub async fn set_up(&self, index: u32, promisc: bool) -> Result<(), NetlinkError> {
        let mut m = LinkUnspec::new_with_index(index).up();
        if promisc {
            m = m.promiscuous(true);
        }
        self.handle
            .link()
            .set(m.build())
            .execute()
            .await
            .map_err(Self::req(format!("setting link #{index} up")))
    }

    /// A veth pair made in one request, as `ip link add HOST master BRIDGE up
    /// type veth peer name PEER netns NS` does: the host end here, up and on
    /// the bridge; the peer named `peer` in the namespace `ns`, still down (the
    /// kernel refuses to bring up a peer made in another namespace). Nothing is
    /// moved or renamed afterwards (each of those costs the kernel a namespace
    /// change or a rename notification).
    pub async fn create_veth_pair(
        &self,
        host: &str,
        peer: &str,
        ns: &File,
        bridge: u32,
        mtu: Option<u32>,
    ) -> Result<(), NetlinkError> {
        use std::os::fd::AsRawFd;
        let mut p = LinkUnspec::new_with_name(peer).setns_by_fd(ns.as_raw_fd());
        let mut h = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host)
            .up()
            .controller(bridge);
        if let Some(m) = mtu {
            p = p.mtu(m);
            h = h.mtu(m);
        }
        let msg = h
            .set_info_data(InfoData::Veth(InfoVeth::Peer(p.build())))
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(Self::req(format!("creating veth pair {host}/{peer}")))
    }

    /// Hairpin mode on a bridge port.
    pub async fn set_hairpin(&self, index: u32) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set_port(LinkBridgePort::new(index).hairpin(true).build())
            .execute()
            .await
            .map_err(Self::req(format!("setting hairpin mode on link #{index}")))
    }

    pub async fn delete_link(&self, index: u32) -> Result<(), NetlinkError> {
        match self.handle.link().del(index).execute().await {
            Err(e) if errno(&e) == libc::ENODEV => Ok(()),
            r => r.map_err(Self::req(format!("deleting link #{index}"))),
        }
    }

    /// Addresses on a link (with their prefix lengths).
    pub async fn addresses(&self, index: u32) -> Result<Vec<IpPrefix>, NetlinkError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(Self::req(format!("listing addresses of link #{index}")))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.index == index)
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(IpPrefix::new(*ip, m.header.prefix_len)),
                    _ => None,
                })
            })
            .collect())
    }

    pub async fn add_address(&self, index: u32, addr: IpPrefix) -> Result<(), NetlinkError> {
        match self
            .handle
            .address()
            .add(index, addr.addr, addr.prefix)
            .execute()
            .await
        {
            Err(e) if errno(&e) == libc::EEXIST => Ok(()),
            r => r.map_err(Self::req(format!("adding address {addr} to link #{index}"))),
        }
    }

    pub async fn del_address(&self, index: u32, addr: IpPrefix) -> Result<(), NetlinkError> {
        let mut msgs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(m) = msgs
            .try_next()
            .await
            .map_err(Self::req("listing addresses"))?
        {
            let matches = m.header.prefix_len == addr.prefix
                && m.attributes
                    .iter()
                    .any(|a| matches!(a, AddressAttribute::Address(ip) if *ip == addr.addr));
            if matches {
                return self
                    .handle
                    .address()
                    .del(m)
                    .execute()
                    .await
                    .map_err(Self::req(format!("removing address {addr}")));
            }
        }
        Ok(())
    }

    /// A route to `dst` out of `index`, via `gw` if given (else on-link).
    pub async fn add_route(
        &self,
        index: u32,
        dst: IpPrefix,
        gw: Option<IpAddr>,
    ) -> Result<(), NetlinkError> {
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst.network(), dst.prefix)
            .map_err(|e| NetlinkError::Invalid(format!("route to {dst}: {e}")))?
            .output_interface(index);
        match gw {
            Some(gw) => {
                b = b
                    .gateway(gw)
                    .map_err(|e| NetlinkError::Invalid(format!("route to {dst}: {e}")))?
            }
            None => b = b.scope(RouteScope::Link),
        }
        match self.handle.route().add(b.build()).execute().await {
            Err(e) if errno(&e) == libc::EEXIST => Ok(()),
            r => r.map_err(Self::req(format!(
                "adding route to {dst}{}",
                gw.map(|g| format!(" via {g}")).unwrap_or_default()
            ))),
        }
    }
}
