//! An address with a prefix length (`10.22.0.5/24`), as CNI results write it,
//! and the address arithmetic IPAM needs (as integers: u32 for v4, u128 for v6).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `addr/prefix`; `addr` may have host bits set (an interface address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpPrefix {
    pub addr: IpAddr,
    pub prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid CIDR {input:?}: {reason}")]
pub struct ParsePrefixError {
    pub input: String,
    pub reason: &'static str,
}

impl IpPrefix {
    pub fn new(addr: IpAddr, prefix: u8) -> Self {
        IpPrefix { addr, prefix }
    }

    pub fn bits(&self) -> u8 {
        bits_of(self.addr)
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> IpAddr {
        let bits = self.bits() as u32;
        let mask = mask(bits, self.prefix as u32);
        from_int(to_int(self.addr) & mask, self.addr.is_ipv4())
    }

    /// The last address of the network (the broadcast address for IPv4).
    pub fn last(&self) -> IpAddr {
        let bits = self.bits() as u32;
        let host = !mask(bits, self.prefix as u32) & full(bits);
        from_int(to_int(self.addr) | host, self.addr.is_ipv4())
    }

    /// The same prefix with the host bits cleared.
    pub fn masked(&self) -> IpPrefix {
        IpPrefix::new(self.network(), self.prefix)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4()
            && IpPrefix::new(ip, self.prefix).network() == self.network()
    }
}

fn bits_of(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn full(bits: u32) -> u128 {
    if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    }
}

fn mask(bits: u32, prefix: u32) -> u128 {
    if prefix == 0 {
        0
    } else {
        (full(bits) >> (bits - prefix)) << (bits - prefix)
    }
}

pub fn to_int(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

pub fn from_int(n: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

/// `ip + 1`, wrapping within the family.
pub fn next_ip(ip: IpAddr) -> IpAddr {
    let bits = bits_of(ip) as u32;
    from_int(to_int(ip).wrapping_add(1) & full(bits), ip.is_ipv4())
}

pub fn prev_ip(ip: IpAddr) -> IpAddr {
    let bits = bits_of(ip) as u32;
    from_int(to_int(ip).wrapping_sub(1) & full(bits), ip.is_ipv4())
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpPrefix {
    type Err = ParsePrefixError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParsePrefixError {
            input: s.to_string(),
            reason,
        };
        let (a, p) = s.split_once('/').ok_or_else(|| err("no /prefix"))?;
        let addr: IpAddr = a.parse().map_err(|_| err("not an IP address"))?;
        let prefix: u8 = p.parse().map_err(|_| err("prefix is not a number"))?;
        if prefix > bits_of(addr) {
            return Err(err("prefix longer than the address"));
        }
        Ok(IpPrefix { addr, prefix })
    }
}

impl Serialize for IpPrefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> IpPrefix {
        s.parse().unwrap()
    }

    #[test]
    fn network_and_last_address() {
        assert_eq!(p("10.22.3.7/16").network().to_string(), "10.22.0.0");
        assert_eq!(p("10.22.3.7/16").last().to_string(), "10.22.255.255");
        assert_eq!(p("10.0.0.1/32").last().to_string(), "10.0.0.1");
        assert_eq!(p("0.0.0.0/0").last().to_string(), "255.255.255.255");
        assert_eq!(p("fd00::5/64").network().to_string(), "fd00::");
        assert_eq!(p("fd00::5/120").last().to_string(), "fd00::ff");
    }

    #[test]
    fn contains_and_neighbours() {
        assert!(p("10.1.0.0/24").contains("10.1.0.200".parse().unwrap()));
        assert!(!p("10.1.0.0/24").contains("10.1.1.0".parse().unwrap()));
        assert!(!p("10.1.0.0/24").contains("fd00::1".parse().unwrap()));
        assert_eq!(
            next_ip("10.0.0.255".parse().unwrap()).to_string(),
            "10.0.1.0"
        );
        assert_eq!(
            prev_ip("10.0.1.0".parse().unwrap()).to_string(),
            "10.0.0.255"
        );
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        assert_eq!(
            "10.0.0.0/33".parse::<IpPrefix>().unwrap_err().reason,
            "prefix longer than the address"
        );
        assert_eq!(
            "10.0.0.0".parse::<IpPrefix>().unwrap_err().reason,
            "no /prefix"
        );
    }
}
