//! host-local's configuration: range sets (`ranges`: a list of lists of
//! ranges, one address per set), the legacy single range at the top of
//! `ipam`, routes, `dataDir`, `resolvConf`; requested addresses from
//! `CNI_ARGS` (`IP=`), `args.cni.ips` or `runtimeConfig.ips`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::ip::{self, IpPrefix};
use crate::types::{CniError, Dns, Route, code};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RangeConf {
    subnet: Option<IpPrefix>,
    range_start: Option<IpAddr>,
    range_end: Option<IpAddr>,
    gateway: Option<IpAddr>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct IpamConf {
    #[serde(default)]
    ranges: Vec<Vec<RangeConf>>,
    #[serde(flatten)]
    legacy: RangeConf,
    #[serde(default)]
    routes: Vec<Route>,
    data_dir: Option<PathBuf>,
    resolv_conf: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetConf {
    #[serde(default)]
    cni_version: String,
    #[serde(default)]
    name: String,
    ipam: Option<IpamConf>,
    #[serde(default)]
    args: Option<Value>,
    #[serde(default)]
    runtime_config: Option<Value>,
}

/// One range, canonical: every bound filled in and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    /// The network (host bits cleared).
    pub subnet: IpPrefix,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: Option<IpAddr>,
}

impl Range {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.subnet.contains(ip)
            && ip::to_int(ip) >= ip::to_int(self.start)
            && ip::to_int(ip) <= ip::to_int(self.end)
    }
}

#[derive(Debug, Clone)]
pub struct IpamConfig {
    pub cni_version: String,
    /// The network's name: the store's directory under `data_dir`.
    pub network: String,
    pub range_sets: Vec<Vec<Range>>,
    pub routes: Vec<Route>,
    pub data_dir: PathBuf,
    pub resolv_conf: Option<PathBuf>,
    /// Addresses the runtime asked for, one per range set at most.
    pub requested: Vec<IpAddr>,
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_CONFIG, msg)
}

/// The network name rule of the spec, which also keeps it a safe directory name.
pub fn valid_network_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

impl RangeConf {
    fn canonicalize(&self) -> Result<Range, CniError> {
        let subnet = self
            .subnet
            .ok_or_else(|| invalid("ipam: a range has no \"subnet\""))?;
        if subnet.prefix + 2 > subnet.bits() {
            return Err(invalid(format!(
                "ipam: network {subnet} too small to allocate from"
            )));
        }
        if subnet.network() != subnet.addr {
            return Err(invalid(format!(
                "ipam: network {subnet} has host bits set; the network address is {}",
                subnet.network()
            )));
        }
        let inside = |what: &str, ip: IpAddr| {
            if subnet.contains(ip) {
                Ok(ip)
            } else {
                Err(invalid(format!(
                    "ipam: {what} {ip} is not in network {subnet}"
                )))
            }
        };
        let gateway = match self.gateway {
            Some(gw) => inside("gateway", gw)?,
            None => ip::next_ip(subnet.network()),
        };
        let start = match self.range_start {
            Some(s) => inside("rangeStart", s)?,
            None => ip::next_ip(subnet.network()),
        };
        let end = match self.range_end {
            Some(e) => inside("rangeEnd", e)?,
            // Past the broadcast address for IPv4.
            None if subnet.addr.is_ipv4() => ip::prev_ip(subnet.last()),
            None => subnet.last(),
        };
        if ip::to_int(start) > ip::to_int(end) {
            return Err(invalid(format!(
                "ipam: rangeStart {start} is after rangeEnd {end}"
            )));
        }
        Ok(Range {
            subnet,
            start,
            end,
            gateway: Some(gateway),
        })
    }
}

impl IpamConfig {
    pub fn parse(stdin: &[u8], cni_args: &[(String, String)]) -> Result<IpamConfig, CniError> {
        let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(code::DECODE_FAILURE, "decoding the network config")
                .with_details(e.to_string())
        })?;
        if !valid_network_name(&conf.name) {
            return Err(invalid(format!(
                "network name {:?} is not valid",
                conf.name
            )));
        }
        let ipam = conf
            .ipam
            .ok_or_else(|| invalid("the network config has no \"ipam\" section"))?;
        let mut sets = ipam.ranges.clone();
        if ipam.legacy.subnet.is_some() {
            sets.insert(0, vec![ipam.legacy.clone()]);
        }
        if sets.is_empty() {
            return Err(invalid("ipam: no \"ranges\" (or \"subnet\") given"));
        }
        let mut range_sets = Vec::new();
        for set in &sets {
            if set.is_empty() {
                return Err(invalid("ipam: an empty range set"));
            }
            let ranges = set
                .iter()
                .map(RangeConf::canonicalize)
                .collect::<Result<Vec<_>, _>>()?;
            for (i, a) in ranges.iter().enumerate() {
                if a.subnet.addr.is_ipv4() != ranges[0].subnet.addr.is_ipv4() {
                    return Err(invalid("ipam: a range set mixes IPv4 and IPv6"));
                }
                for b in &ranges[i + 1..] {
                    if a.contains(b.start) || a.contains(b.end) || b.contains(a.start) {
                        return Err(invalid(format!(
                            "ipam: ranges {}-{} and {}-{} overlap",
                            a.start, a.end, b.start, b.end
                        )));
                    }
                }
            }
            range_sets.push(ranges);
        }
        let mut requested: Vec<IpAddr> = Vec::new();
        for (k, v) in cni_args {
            if k == "IP" {
                for s in v.split(',') {
                    requested.push(s.trim().parse().map_err(|_| {
                        CniError::new(
                            code::INVALID_ENV,
                            format!("CNI_ARGS IP={s:?} is not an IP address"),
                        )
                    })?);
                }
            }
        }
        let from_json = |v: Option<&Value>| -> Vec<IpAddr> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .filter_map(|s| s.split('/').next()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        requested.extend(from_json(
            conf.args.as_ref().and_then(|a| a.pointer("/cni/ips")),
        ));
        requested.extend(from_json(
            conf.runtime_config.as_ref().and_then(|r| r.get("ips")),
        ));
        Ok(IpamConfig {
            cni_version: conf.cni_version,
            network: conf.name,
            range_sets,
            routes: ipam.routes,
            data_dir: ipam
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            resolv_conf: ipam.resolv_conf,
            requested,
        })
    }
}

/// `cni.dev/valid-attachments` of a GC config: (containerID, ifname) pairs.
pub fn valid_attachments(stdin: &[u8]) -> Result<Vec<(String, String)>, CniError> {
    let v: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(code::DECODE_FAILURE, "decoding the network config")
            .with_details(e.to_string())
    })?;
    Ok(v.get("cni.dev/valid-attachments")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| {
                    (
                        x["containerID"].as_str().unwrap_or_default().to_string(),
                        x["ifname"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The DNS settings of a resolv.conf-style file.
pub fn parse_resolv_conf(path: &Path) -> Result<Dns, CniError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CniError::io(format!("reading resolvConf {}", path.display()), e))?;
    let mut dns = Dns::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.nameservers.extend(words.next().map(String::from)),
            Some("domain") => dns.domain = words.next().unwrap_or_default().to_string(),
            Some("search") => dns.search = words.map(String::from).collect(),
            Some("options") => dns.options.extend(words.map(String::from)),
            _ => {}
        }
    }
    Ok(dns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<IpamConfig, CniError> {
        IpamConfig::parse(json.as_bytes(), &[])
    }

    #[test]
    fn defaults_follow_host_local() {
        let c = parse(r#"{"cniVersion":"1.0.0","name":"net","ipam":{"type":"host-local","subnet":"10.1.0.0/24"}}"#).unwrap();
        let r = &c.range_sets[0][0];
        assert_eq!(r.start.to_string(), "10.1.0.1");
        assert_eq!(r.end.to_string(), "10.1.0.254");
        assert_eq!(r.gateway.unwrap().to_string(), "10.1.0.1");
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/cni/networks"));
    }

    #[test]
    fn ranges_and_requested_ips() {
        let c = IpamConfig::parse(
            br#"{"cniVersion":"1.0.0","name":"net","ipam":{"type":"host-local","dataDir":"/tmp/x",
                "ranges":[[{"subnet":"10.1.0.0/16","rangeStart":"10.1.5.10","rangeEnd":"10.1.5.20","gateway":"10.1.0.254"}],[{"subnet":"fd00::/64"}]],
                "routes":[{"dst":"0.0.0.0/0"}]}}"#,
            &[("IP".into(), "10.1.5.12".into())],
        )
        .unwrap();
        assert_eq!(c.range_sets.len(), 2);
        assert_eq!(
            c.range_sets[0][0].gateway.unwrap().to_string(),
            "10.1.0.254"
        );
        assert_eq!(
            c.range_sets[1][0].end.to_string(),
            "fd00::ffff:ffff:ffff:ffff"
        );
        assert_eq!(c.requested, vec!["10.1.5.12".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.routes[0].dst.to_string(), "0.0.0.0/0");
    }

    #[test]
    fn bad_configs_are_explained() {
        let e = parse(r#"{"cniVersion":"1.0.0","name":"net","ipam":{"subnet":"10.1.0.5/24"}}"#)
            .unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("host bits set"), "{}", e.msg);
        let e = parse(r#"{"cniVersion":"1.0.0","name":"net","ipam":{"subnet":"10.1.0.0/31"}}"#)
            .unwrap_err();
        assert!(e.msg.contains("too small"), "{}", e.msg);
        let e = parse(r#"{"cniVersion":"1.0.0","name":"../x","ipam":{"subnet":"10.1.0.0/24"}}"#)
            .unwrap_err();
        assert!(e.msg.contains("not valid"), "{}", e.msg);
        let e = parse(r#"{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.1.0.0/24","rangeStart":"10.2.0.1"}}"#).unwrap_err();
        assert!(
            e.msg
                .contains("rangeStart 10.2.0.1 is not in network 10.1.0.0/24"),
            "{}",
            e.msg
        );
    }
}
