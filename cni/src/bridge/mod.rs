//! `kubelab-bridge`: the reference `bridge` plugin's behaviour. A Linux bridge
//! on the host (`bridge`, default `cni0`), a veth pair per container with the
//! host end on the bridge and the other end named `CNI_IFNAME` in `CNI_NETNS`,
//! addresses from the delegated IPAM plugin (`ipam.type`, found in `CNI_PATH`),
//! the gateway address on the bridge (`isGateway`), a default route via it
//! (`isDefaultGateway`), masquerading (`ipMasq`), `hairpinMode`, `mtu`.

pub mod masq;
pub mod netlink;

use std::fs::File;

use serde::Deserialize;
use serde_json::Value;

use crate::invoke::{self, PluginEnv};
use crate::ip::{self, IpPrefix};
use crate::skel::{CmdArgs, Plugin};
use crate::types::{CniError, CniResult, Dns, Interface, Route, code};
use netlink::{Netlink, NetlinkError};

pub const DEFAULT_BRIDGE: &str = "cni0";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BridgeConf {
    #[serde(default)]
    pub cni_version: String,
    pub name: String,
    #[serde(default)]
    pub bridge: Option<String>,
    #[serde(default)]
    pub is_gateway: bool,
    #[serde(default)]
    pub is_default_gateway: bool,
    #[serde(default)]
    pub force_address: bool,
    #[serde(default)]
    pub ip_masq: bool,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub hairpin_mode: bool,
    #[serde(default)]
    pub promisc_mode: bool,
    #[serde(default)]
    pub ipam: Option<Value>,
    #[serde(default)]
    pub dns: Option<Dns>,
    #[serde(default)]
    pub prev_result: Option<CniResult>,
}

impl BridgeConf {
    pub fn parse(stdin: &[u8]) -> Result<BridgeConf, CniError> {
        let mut c: BridgeConf = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(code::DECODE_FAILURE, "decoding the bridge network config")
                .with_details(e.to_string())
        })?;
        if c.is_default_gateway {
            c.is_gateway = true;
        }
        if c.mtu == Some(0) {
            c.mtu = None;
        }
        let bridge = c.bridge_name().to_string();
        if bridge.is_empty()
            || bridge.len() > 15
            || bridge.contains('/')
            || bridge.contains(char::is_whitespace)
        {
            return Err(CniError::config(format!(
                "bridge name {bridge:?} is not a valid interface name"
            )));
        }
        Ok(c)
    }

    pub fn bridge_name(&self) -> &str {
        self.bridge
            .as_deref()
            .filter(|b| !b.is_empty())
            .unwrap_or(DEFAULT_BRIDGE)
    }

    fn ipam_type(&self) -> Result<Option<String>, CniError> {
        match &self.ipam {
            None => Ok(None),
            Some(v) => match v.get("type").and_then(Value::as_str) {
                Some(t) if !t.is_empty() => Ok(Some(t.to_string())),
                _ => Err(CniError::config("ipam: \"type\" is required")),
            },
        }
    }
}

fn nl_err(e: NetlinkError) -> CniError {
    CniError::new(code::INTERNAL, e.to_string())
}

fn runtime() -> Result<tokio::runtime::Runtime, CniError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::internal("starting the async runtime", e))
}

fn open_netns(path: &str) -> Result<File, CniError> {
    File::open(path).map_err(|e| {
        CniError::new(code::UNKNOWN_CONTAINER, format!("opening netns {path:?}"))
            .with_details(e.to_string())
    })
}

fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n.div_ceil(2)];
    if let Ok(mut f) = File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut buf);
    }
    hex::encode(buf)[..n].to_string()
}

fn enable_forwarding(v4: bool) -> Result<(), CniError> {
    let path = if v4 {
        "/proc/sys/net/ipv4/ip_forward"
    } else {
        "/proc/sys/net/ipv6/conf/all/forwarding"
    };
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(path, "1").map_err(|e| CniError::io(format!("enabling forwarding ({path})"), e))
}

fn ipam_env<'a>(command: &'a str, args: &'a CmdArgs) -> PluginEnv<'a> {
    PluginEnv {
        command,
        container_id: &args.container_id,
        netns: &args.netns,
        ifname: &args.ifname,
        args: &args.args,
        path: &args.path,
    }
}

pub struct Bridge;

/// Undoes a half-done ADD when dropped without `disarm`.
struct AddUndo<'a> {
    args: &'a CmdArgs,
    ipam: Option<String>,
    armed: bool,
}

impl Drop for AddUndo<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Some(t) = &self.ipam {
                let _ = invoke::exec_by_name(t, &ipam_env("DEL", self.args), &self.args.stdin);
            }
        }
    }
}

/// Runs the IPAM plugin on the blocking pool, so that the caller can go on meanwhile.
fn spawn_ipam(
    ipam_type: &str,
    command: &'static str,
    args: &CmdArgs,
) -> tokio::task::JoinHandle<Result<Vec<u8>, CniError>> {
    let (t, a) = (ipam_type.to_string(), args.clone());
    tokio::task::spawn_blocking(move || {
        invoke::exec_by_name(&t, &ipam_env(command, &a), &a.stdin).map_err(CniError::from)
    })
}

async fn join_ipam(
    task: tokio::task::JoinHandle<Result<Vec<u8>, CniError>>,
) -> Result<Vec<u8>, CniError> {
    task.await
        .map_err(|e| CniError::new(code::INTERNAL, format!("running the IPAM plugin: {e}")))?
}

/// The pod's address families, from the addresses on its interface
/// (IPv6 link-local ones aside: every IPv6 interface has one).
fn families_of(addrs: &[IpPrefix]) -> Vec<masq::Family> {
    let mut out = Vec::new();
    for a in addrs {
        if let std::net::IpAddr::V6(v6) = a.addr
            && v6.segments()[0] & 0xffc0 == 0xfe80
        {
            continue;
        }
        let f = masq::Family::of(a.addr);
        if !out.contains(&f) {
            out.push(f);
        }
    }
    out
}

impl Bridge {
    async fn add_async(&self, args: &CmdArgs, conf: &BridgeConf) -> Result<CniResult, CniError> {
        let Some(ipam_type) = conf.ipam_type()? else {
            return Err(CniError::config(
                "the bridge plugin needs an \"ipam\" section",
            ));
        };
        let host = Netlink::current().map_err(nl_err)?;
        let ns = open_netns(&args.netns)?;
        let cont = Netlink::in_netns(&ns).map_err(nl_err)?;
        if cont
            .link_by_name(&args.ifname)
            .await
            .map_err(nl_err)?
            .is_some()
        {
            return Err(CniError::new(
                code::INTERNAL,
                format!(
                    "container interface {} already exists in {}",
                    args.ifname, args.netns
                ),
            ));
        }

        // Addresses from the delegated IPAM plugin, which runs while the links are made.
        let ipam_task = spawn_ipam(&ipam_type, "ADD", args);
        let links = self.make_links(args, conf, &host, &cont, &ns).await;
        let out = join_ipam(ipam_task).await;
        // From here on a failure releases the addresses (if they were allocated).
        let mut undo = AddUndo {
            args,
            ipam: out.is_ok().then(|| ipam_type.clone()),
            armed: true,
        };
        let (br, hv, cont_link) = links?;
        let cleanup_links = async || {
            let _ = cont.delete_link(cont_link.index).await;
        };
        let ipam = match out.and_then(|out| Ok(invoke::parse_result(&ipam_type, "ADD", &out)?)) {
            Ok(r) => r,
            Err(e) => {
                cleanup_links().await;
                return Err(e);
            }
        };
        match self
            .configure(args, conf, &host, &cont, &br, &hv, &cont_link, ipam)
            .await
        {
            Ok(result) => {
                undo.armed = false;
                Ok(result)
            }
            Err(e) => {
                cleanup_links().await;
                if conf.ip_masq {
                    let _ = masq::teardown(
                        &masq::chain_name(&conf.name, &args.container_id),
                        &masq::Family::BOTH,
                    );
                }
                Err(e)
            }
        }
    }

    /// The bridge and the veth pair: the host end on the bridge, the other end
    /// made as `CNI_IFNAME` right in the container's namespace, both up.
    /// Returns (bridge, host end, container end).
    async fn make_links(
        &self,
        args: &CmdArgs,
        conf: &BridgeConf,
        host: &Netlink,
        cont: &Netlink,
        ns: &File,
    ) -> Result<(netlink::Link, netlink::Link, netlink::Link), CniError> {
        let br = host
            .ensure_bridge(conf.bridge_name(), conf.mtu, conf.promisc_mode)
            .await
            .map_err(nl_err)?;
        let host_name = format!("veth{}", random_hex(8));
        host.create_veth_pair(&host_name, &args.ifname, ns, br.index, conf.mtu)
            .await
            .map_err(nl_err)?;
        let ends = async {
            let hv = host
                .link_by_name(&host_name)
                .await?
                .ok_or_else(|| NetlinkError::Invalid(format!("veth {host_name} vanished")))?;
            let c = cont.link_by_name(&args.ifname).await?.ok_or_else(|| {
                NetlinkError::Invalid(format!("{} vanished from the container", args.ifname))
            })?;
            cont.set_up(c.index, false).await?;
            if conf.hairpin_mode {
                host.set_hairpin(hv.index).await?;
            }
            Ok::<_, NetlinkError>((hv, c))
        }
        .await;
        match ends {
            Ok((hv, c)) => Ok((br, hv, c)),
            Err(e) => {
                // Either end going takes the pair with it.
                if let Ok(Some(l)) = host.link_by_name(&host_name).await {
                    let _ = host.delete_link(l.index).await;
                }
                Err(nl_err(e))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn configure(
        &self,
        args: &CmdArgs,
        conf: &BridgeConf,
        host: &Netlink,
        cont: &Netlink,
        br: &netlink::Link,
        hv: &netlink::Link,
        cont_link: &netlink::Link,
        ipam: CniResult,
    ) -> Result<CniResult, CniError> {
        let cont_index = cont_link.index;
        if ipam.ips.is_empty() {
            return Err(CniError::new(
                code::INTERNAL,
                "the IPAM plugin returned no IP addresses",
            ));
        }
        let mut result = ipam;
        for ipc in &mut result.ips {
            if ipc.gateway.is_none() && conf.is_gateway {
                ipc.gateway = Some(ip::next_ip(ipc.address.network()));
            }
            ipc.interface = Some(2);
        }
        if conf.is_default_gateway {
            for ipc in result.ips.clone() {
                let Some(gw) = ipc.gateway else { continue };
                let dst = if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
                let dst: IpPrefix = dst.parse().expect("literal");
                if !result.routes.iter().any(|r| r.dst == dst) {
                    result.routes.push(Route {
                        dst,
                        gw: Some(gw),
                        extra: Default::default(),
                    });
                }
            }
        }

        // The container side: addresses, then routes (via the family's gateway when none is given).
        for ipc in &result.ips {
            cont.add_address(cont_index, ipc.address)
                .await
                .map_err(nl_err)?;
        }
        for r in &result.routes {
            let gw = r.gw.or_else(|| {
                result
                    .ips
                    .iter()
                    .find(|i| i.address.addr.is_ipv4() == r.dst.addr.is_ipv4())
                    .and_then(|i| i.gateway)
            });
            cont.add_route(cont_index, r.dst, gw)
                .await
                .map_err(nl_err)?;
        }

        // The host side: the gateway address on the bridge, forwarding, masquerading.
        if conf.is_gateway {
            let existing = host.addresses(br.index).await.map_err(nl_err)?;
            for ipc in &result.ips {
                let Some(gw) = ipc.gateway else { continue };
                let want = IpPrefix::new(gw, ipc.address.prefix);
                if existing.contains(&want) {
                    continue;
                }
                for other in existing
                    .iter()
                    .filter(|a| a.addr.is_ipv4() == gw.is_ipv4() && a.masked() == want.masked())
                {
                    if !conf.force_address {
                        return Err(CniError::new(
                            code::INTERNAL,
                            format!(
                                "bridge {} already has address {other} in {}; expected {want} (set forceAddress to replace it)",
                                conf.bridge_name(),
                                want.masked()
                            ),
                        ));
                    }
                    host.del_address(br.index, *other).await.map_err(nl_err)?;
                }
                host.add_address(br.index, want).await.map_err(nl_err)?;
                enable_forwarding(gw.is_ipv4())?;
            }
        }
        if conf.ip_masq {
            let chain = masq::chain_name(&conf.name, &args.container_id);
            let comment = format!("name: {:?} id: {:?}", conf.name, args.container_id);
            for family in masq::Family::BOTH {
                let ips: Vec<IpPrefix> = result
                    .ips
                    .iter()
                    .map(|i| i.address)
                    .filter(|a| masq::Family::of(a.addr) == family)
                    .collect();
                masq::setup(&ips, &chain, &comment).map_err(|e| {
                    CniError::new(code::INTERNAL, "setting up IP masquerading").with_details(e)
                })?;
            }
        }

        // The bridge's MAC is read now: a bridge takes a port's address when it
        // gets its first port. The veth ends keep the ones they were made with.
        let br_now = host
            .link_by_index(br.index)
            .await
            .map_err(nl_err)?
            .unwrap_or_else(|| br.clone());
        result.interfaces = vec![
            Interface {
                name: br_now.name,
                mac: br_now.mac,
                ..Default::default()
            },
            Interface {
                name: hv.name.clone(),
                mac: hv.mac.clone(),
                ..Default::default()
            },
            Interface {
                name: cont_link.name.clone(),
                mac: cont_link.mac.clone(),
                mtu: None,
                sandbox: args.netns.clone(),
            },
        ];
        if let Some(dns) = conf.dns.clone().filter(|d| !d.is_empty()) {
            result.dns = dns;
        }
        result.cni_version = conf.cni_version.clone();
        Ok(result)
    }

    async fn del_async(&self, args: &CmdArgs, conf: &BridgeConf) -> Result<(), CniError> {
        // The addresses, the pod's link and the masquerade rules are released
        // at once: none of the three needs another gone first.
        let ipam_task = conf.ipam_type()?.map(|t| spawn_ipam(&t, "DEL", args));
        let mut link_step = Ok(());
        let mut pod_link = None;
        // The rules' families are the pod's addresses'; both when they are not known.
        let mut families = masq::Family::BOTH.to_vec();
        // A netns that is gone took its veth end (and so the pair) with it.
        if let Some(ns) = (!args.netns.is_empty())
            .then(|| File::open(&args.netns).ok())
            .flatten()
        {
            let found = async {
                let cont = Netlink::in_netns(&ns)?;
                let Some(link) = cont.link_by_name(&args.ifname).await? else {
                    return Ok(None);
                };
                let addrs = cont.addresses(link.index).await?;
                Ok::<_, NetlinkError>(Some((cont, link.index, families_of(&addrs))))
            }
            .await;
            match found {
                Ok(Some((cont, index, fams))) => {
                    if !fams.is_empty() {
                        families = fams;
                    }
                    pod_link = Some((cont, index));
                }
                Ok(None) => {}
                Err(e) => link_step = Err(nl_err(e)),
            }
        }
        let masq_task = conf.ip_masq.then(|| {
            let chain = masq::chain_name(&conf.name, &args.container_id);
            tokio::task::spawn_blocking(move || masq::teardown(&chain, &families))
        });
        if let Some((cont, index)) = pod_link {
            link_step = cont.delete_link(index).await.map_err(nl_err);
        }
        // The IPAM plugin's error first, as a runtime expects it.
        if let Some(t) = ipam_task {
            join_ipam(t).await?;
        }
        link_step?;
        if let Some(t) = masq_task {
            t.await
                .map_err(|e| {
                    CniError::new(code::INTERNAL, format!("removing IP masquerading: {e}"))
                })?
                .map_err(|e| {
                    CniError::new(code::INTERNAL, "removing IP masquerading").with_details(e)
                })?;
        }
        Ok(())
    }

    async fn check_async(&self, args: &CmdArgs, conf: &BridgeConf) -> Result<(), CniError> {
        let prev = conf
            .prev_result
            .clone()
            .ok_or_else(|| CniError::config("CHECK needs a prevResult"))?;
        if let Some(t) = conf.ipam_type()? {
            invoke::exec_by_name(&t, &ipam_env("CHECK", args), &args.stdin)?;
        }
        let fail = |msg: String| Err(CniError::new(code::INTERNAL, msg));
        let host = Netlink::current().map_err(nl_err)?;
        let Some(br) = host
            .link_by_name(conf.bridge_name())
            .await
            .map_err(nl_err)?
        else {
            return fail(format!("bridge {} does not exist", conf.bridge_name()));
        };
        if !br.is_bridge {
            return fail(format!("{} is not a bridge", conf.bridge_name()));
        }
        let ns = open_netns(&args.netns)?;
        let cont = Netlink::in_netns(&ns).map_err(nl_err)?;
        let Some(c) = cont.link_by_name(&args.ifname).await.map_err(nl_err)? else {
            return fail(format!(
                "interface {} does not exist in {}",
                args.ifname, args.netns
            ));
        };
        let idx = prev
            .interfaces
            .iter()
            .position(|i| i.name == args.ifname && !i.sandbox.is_empty());
        let have = cont.addresses(c.index).await.map_err(nl_err)?;
        for ipc in prev
            .ips
            .iter()
            .filter(|i| i.interface.is_none() || i.interface == idx)
        {
            if !have.contains(&ipc.address) {
                return fail(format!(
                    "{} does not have address {}",
                    args.ifname, ipc.address
                ));
            }
        }
        for i in prev
            .interfaces
            .iter()
            .filter(|i| i.sandbox.is_empty() && i.name != br.name)
        {
            match host.link_by_name(&i.name).await.map_err(nl_err)? {
                Some(l) if l.controller == Some(br.index) => {}
                Some(_) => {
                    return fail(format!("{} is not attached to bridge {}", i.name, br.name));
                }
                None => return fail(format!("host interface {} does not exist", i.name)),
            }
        }
        Ok(())
    }
}

impl Plugin for Bridge {
    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let conf = BridgeConf::parse(&args.stdin)?;
        runtime()?.block_on(self.add_async(args, &conf))
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = BridgeConf::parse(&args.stdin)?;
        runtime()?.block_on(self.del_async(args, &conf))
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = BridgeConf::parse(&args.stdin)?;
        runtime()?.block_on(self.check_async(args, &conf))
    }

    fn status(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = BridgeConf::parse(&args.stdin)?;
        if let Some(t) = conf.ipam_type()? {
            invoke::exec_by_name(&t, &ipam_env("STATUS", args), &args.stdin)?;
        }
        Ok(())
    }

    fn gc(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = BridgeConf::parse(&args.stdin)?;
        if let Some(t) = conf.ipam_type()? {
            invoke::exec_by_name(&t, &ipam_env("GC", args), &args.stdin)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_implications() {
        let c = BridgeConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"kubelab-bridge","isDefaultGateway":true,"mtu":0,"ipam":{"type":"host-local"}}"#).unwrap();
        assert_eq!(c.bridge_name(), "cni0");
        assert!(c.is_gateway);
        assert_eq!(c.mtu, None);
        assert_eq!(c.ipam_type().unwrap().as_deref(), Some("host-local"));
        let e = BridgeConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","bridge":"much-too-long-bridge-name"}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, 7);
        let e = BridgeConf::parse(br#"{"cniVersion":"1.0.0","name":"n","ipam":{}}"#)
            .unwrap()
            .ipam_type()
            .unwrap_err();
        assert_eq!(e.msg, "ipam: \"type\" is required");
    }
}
