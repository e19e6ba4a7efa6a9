//! IPv4 CIDR ranges, as the service and pod networks are given on the
//! command line (`--service-cluster-ip-range`, `--cluster-cidr`).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network: its base address (host bits zero) and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    base: u32,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("invalid CIDR address: {0:?} (expected an IPv4 network such as 10.244.0.0/16)")]
    Syntax(String),
    #[error("invalid CIDR address: {0:?}: the prefix length must be between 0 and 32")]
    Prefix(String),
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl Ipv4Cidr {
    /// The network of `addr` at `prefix` (host bits cleared).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Self {
        let prefix = prefix.min(32);
        Self {
            base: u32::from(addr) & mask(prefix),
            prefix,
        }
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// How many addresses the range spans.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The `n`th address of the range (0 is the network address).
    pub fn nth(&self, n: u64) -> Option<Ipv4Addr> {
        (n < self.size()).then(|| Ipv4Addr::from(self.base.wrapping_add(n as u32)))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == self.base
    }

    /// Whether `other` lies wholly inside this range.
    pub fn contains_net(&self, other: &Ipv4Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.network())
    }

    /// The `n`th subnet of length `prefix` inside this range.
    pub fn subnet(&self, prefix: u8, n: u64) -> Option<Ipv4Cidr> {
        if prefix < self.prefix || prefix > 32 {
            return None;
        }
        let count = 1u64 << (prefix - self.prefix);
        (n < count).then(|| Ipv4Cidr {
            base: self.base + (n << (32 - u32::from(prefix))) as u32,
            prefix,
        })
    }

    /// Which subnet of length `prefix` `other` is, if it is exactly one.
    pub fn subnet_index(&self, other: &Ipv4Cidr) -> Option<u64> {
        if !self.contains_net(other) {
            return None;
        }
        Some(u64::from(other.base - self.base) >> (32 - u32::from(other.prefix)))
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| CidrError::Syntax(s.into()))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| CidrError::Syntax(s.into()))?;
        let prefix: u8 = prefix.parse().map_err(|_| CidrError::Syntax(s.into()))?;
        if prefix > 32 {
            return Err(CidrError::Prefix(s.into()));
        }
        Ok(Self::new(addr, prefix))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_normalizes_and_counts() {
        let c: Ipv4Cidr = "10.244.7.9/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.244.0.0/16");
        assert_eq!(c.size(), 65536);
        assert_eq!(c.nth(1), Some(Ipv4Addr::new(10, 244, 0, 1)));
        assert_eq!(c.nth(65536), None);
        assert!(c.contains(Ipv4Addr::new(10, 244, 255, 255)));
        assert!(!c.contains(Ipv4Addr::new(10, 245, 0, 0)));
        assert!(matches!(
            "10.0.0.0".parse::<Ipv4Cidr>(),
            Err(CidrError::Syntax(_))
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Ipv4Cidr>(),
            Err(CidrError::Prefix(_))
        ));
        assert!(matches!(
            "fd00::/64".parse::<Ipv4Cidr>(),
            Err(CidrError::Syntax(_))
        ));
    }

    #[test]
    fn subnets_and_their_indexes() {
        let c: Ipv4Cidr = "10.244.0.0/16".parse().unwrap();
        let s = c.subnet(24, 3).unwrap();
        assert_eq!(s.to_string(), "10.244.3.0/24");
        assert_eq!(c.subnet_index(&s), Some(3));
        assert_eq!(c.subnet(24, 256), None);
        assert_eq!(c.subnet(8, 0), None);
        let outside: Ipv4Cidr = "10.245.0.0/24".parse().unwrap();
        assert_eq!(c.subnet_index(&outside), None);
    }
}
