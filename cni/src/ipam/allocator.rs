//! One address per range set, as host-local picks them: a requested address
//! if there is one, else round-robin from the address after the last one
//! reserved in that set, skipping gateways and taken addresses.

use std::net::IpAddr;

use super::config::{IpamConfig, Range};
use super::store::Store;
use crate::ip;
use crate::types::{CniError, code};

/// Addresses of one range set in host-local's order, starting after `last`.
fn candidates(set: &[Range], last: Option<IpAddr>) -> impl Iterator<Item = (IpAddr, &Range)> {
    // Start at the range holding `last`, just after it; else at the first range's start.
    let (first_range, first_ip) = last
        .and_then(|l| set.iter().position(|r| r.contains(l)).map(|i| (i, l)))
        .map(|(i, l)| {
            if l == set[i].end {
                let n = (i + 1) % set.len();
                (n, set[n].start)
            } else {
                (i, ip::next_ip(l))
            }
        })
        .unwrap_or((0, set[0].start));
    let total: u128 = set
        .iter()
        .map(|r| ip::to_int(r.end) - ip::to_int(r.start) + 1)
        .fold(0u128, u128::saturating_add);
    let mut range = first_range;
    let mut cur = first_ip;
    let mut left = total;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        left -= 1;
        let out = (cur, &set[range]);
        if cur == set[range].end {
            range = (range + 1) % set.len();
            cur = set[range].start;
        } else {
            cur = ip::next_ip(cur);
        }
        Some(out)
    })
    .filter(|(ip, r)| r.gateway != Some(*ip))
}

/// Reserves one address in every range set for (id, ifname). An address the
/// container already holds in a set is returned again (ADD is repeatable).
pub fn allocate<'c>(
    store: &Store,
    cfg: &'c IpamConfig,
    id: &str,
    ifname: &str,
) -> Result<Vec<(IpAddr, &'c Range)>, CniError> {
    let io = |e: std::io::Error| CniError::io("writing the IPAM store", e);
    let held = store.find_by_id(id, ifname).map_err(io)?;
    let mut requested = cfg.requested.clone();
    let mut out = Vec::new();
    for (set_id, set) in cfg.range_sets.iter().enumerate() {
        if let Some(ip) = held.iter().find(|ip| set.iter().any(|r| r.contains(**ip))) {
            let range = set.iter().find(|r| r.contains(*ip)).expect("found");
            out.push((*ip, range));
            continue;
        }
        if let Some(pos) = requested
            .iter()
            .position(|ip| set.iter().any(|r| r.subnet.contains(*ip)))
        {
            let ip = requested.remove(pos);
            let range = set.iter().find(|r| r.contains(ip)).ok_or_else(|| {
                CniError::config(format!(
                    "requested IP {ip} is outside the configured ranges"
                ))
            })?;
            if range.gateway == Some(ip) {
                return Err(CniError::config(format!(
                    "requested IP {ip} is the gateway"
                )));
            }
            if !store.reserve(id, ifname, ip, set_id).map_err(io)? {
                return Err(CniError::new(
                    code::INTERNAL,
                    format!(
                        "requested IP address {ip} is not available in range set {}",
                        describe(set)
                    ),
                ));
            }
            out.push((ip, range));
            continue;
        }
        let mut got = None;
        for (ip, range) in candidates(set, store.last_reserved(set_id)) {
            if store.reserve(id, ifname, ip, set_id).map_err(io)? {
                got = Some((ip, range));
                break;
            }
        }
        match got {
            Some(g) => out.push(g),
            None => {
                return Err(CniError::new(
                    code::INTERNAL,
                    format!("no IP addresses available in range set: {}", describe(set)),
                ));
            }
        }
    }
    if let Some(ip) = requested.first() {
        return Err(CniError::config(format!(
            "requested IP {ip} is in none of the configured range sets"
        )));
    }
    Ok(out)
}

fn describe(set: &[Range]) -> String {
    set.iter()
        .map(|r| format!("{}-{}", r.start, r.end))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &std::path::Path, ipam: &str) -> IpamConfig {
        let json = format!(
            r#"{{"cniVersion":"1.0.0","name":"testnet","ipam":{{"type":"host-local","dataDir":"{}",{ipam}}}}}"#,
            dir.display()
        );
        IpamConfig::parse(json.as_bytes(), &[]).unwrap()
    }

    #[test]
    fn round_robin_skips_gateway_and_wraps() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cfg(tmp.path(), r#""subnet":"10.9.0.0/29""#); // .1 gateway, .2-.6 usable
        let store = Store::open(&c.data_dir, &c.network).unwrap();
        let mut got = Vec::new();
        for i in 0..5 {
            let ips = allocate(&store, &c, &format!("c{i}"), "eth0").unwrap();
            got.push(ips[0].0.to_string());
        }
        assert_eq!(
            got,
            ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"]
        );
        let e = allocate(&store, &c, "c5", "eth0").unwrap_err();
        assert_eq!(
            e.msg,
            "no IP addresses available in range set: 10.9.0.1-10.9.0.6"
        );
        store.release_by_id("c1", "eth0").unwrap();
        // Round robin: the next one after the last reserved (.6) wraps to the free .3.
        assert_eq!(
            allocate(&store, &c, "c6", "eth0").unwrap()[0].0.to_string(),
            "10.9.0.3"
        );
        // The same container asking again gets the same address.
        assert_eq!(
            allocate(&store, &c, "c6", "eth0").unwrap()[0].0.to_string(),
            "10.9.0.3"
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("testnet/10.9.0.3")).unwrap(),
            "c6\r\neth0"
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("testnet/last_reserved_ip.0")).unwrap(),
            "10.9.0.3"
        );
    }

    #[test]
    fn multiple_ranges_in_a_set_and_dual_stack() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cfg(
            tmp.path(),
            r#""ranges":[[{"subnet":"10.9.0.0/24","rangeStart":"10.9.0.10","rangeEnd":"10.9.0.10"},{"subnet":"10.9.1.0/24","rangeStart":"10.9.1.10","rangeEnd":"10.9.1.11"}],[{"subnet":"fd00::/120"}]]"#,
        );
        let store = Store::open(&c.data_dir, &c.network).unwrap();
        let a = allocate(&store, &c, "a", "eth0").unwrap();
        assert_eq!(a[0].0.to_string(), "10.9.0.10");
        assert_eq!(a[1].0.to_string(), "fd00::2");
        let b = allocate(&store, &c, "b", "eth0").unwrap();
        assert_eq!(b[0].0.to_string(), "10.9.1.10");
        assert_eq!(b[0].1.gateway.unwrap().to_string(), "10.9.1.1");
    }

    #[test]
    fn requested_address() {
        let tmp = tempfile::tempdir().unwrap();
        let json = format!(
            r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"dataDir":"{}","subnet":"10.9.0.0/24"}}}}"#,
            tmp.path().display()
        );
        let c = IpamConfig::parse(json.as_bytes(), &[("IP".into(), "10.9.0.77".into())]).unwrap();
        let store = Store::open(&c.data_dir, &c.network).unwrap();
        assert_eq!(
            allocate(&store, &c, "a", "eth0").unwrap()[0].0.to_string(),
            "10.9.0.77"
        );
        let e = allocate(&store, &c, "b", "eth0").unwrap_err();
        assert!(e.msg.contains("10.9.0.77 is not available"), "{}", e.msg);
    }
}
