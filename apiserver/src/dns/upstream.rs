//! Where names outside the cluster go: the node's resolvers (its
//! `resolv.conf`, as CoreDNS' `forward . /etc/resolv.conf`) or the ones
//! given with `--upstream`, through hickory's caching resolver.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

pub type UpstreamResolver = hickory_resolver::Resolver<TokioRuntimeProvider>;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error(
        "invalid upstream {0:?}: expected an IP address, optionally with a port (1.1.1.1, 10.0.0.2:5353, [fd00::1]:53)"
    )]
    Address(String),
    #[error("building the upstream resolver: {0}")]
    Build(String),
}

/// `1.1.1.1`, `10.0.0.2:5353`, `[fd00::1]:53`: port 53 unless given.
pub fn parse_upstream(s: &str) -> Result<SocketAddr, UpstreamError> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.trim_matches(['[', ']'])
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| UpstreamError::Address(s.to_owned()))
}

/// The nameservers of a resolv.conf, on port 53.
pub fn resolv_conf_nameservers(path: &Path) -> Result<Vec<SocketAddr>, UpstreamError> {
    let data = std::fs::read(path).map_err(|source| UpstreamError::Read {
        path: path.to_owned(),
        source,
    })?;
    let (config, _) = hickory_resolver::system_conf::parse_resolv_conf(data).map_err(|e| {
        UpstreamError::Parse {
            path: path.to_owned(),
            reason: e.to_string(),
        }
    })?;
    let mut ips: Vec<SocketAddr> = config
        .name_servers()
        .iter()
        .map(|ns| SocketAddr::new(ns.ip, 53))
        .collect();
    ips.dedup();
    Ok(ips)
}

/// A caching resolver asking `servers` in turn. Names are looked up as
/// given (no search list, no hosts file): the client already chose them.
pub fn resolver(servers: &[SocketAddr]) -> Result<UpstreamResolver, UpstreamError> {
    let name_servers = servers
        .iter()
        .map(|s| {
            let mut udp = ConnectionConfig::udp();
            udp.port = s.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = s.port();
            NameServerConfig::new(s.ip(), true, vec![udp, tcp])
        })
        .collect();
    let mut opts = ResolverOpts::default();
    opts.use_hosts_file = ResolveHosts::Never;
    // A forwarder hands on the CNAMEs it followed (RFC 1034 4.3.2).
    opts.preserve_intermediates = true;
    opts.ndots = 0;
    let mut builder = hickory_resolver::Resolver::builder_with_config(
        ResolverConfig::from_name_servers(name_servers),
        TokioRuntimeProvider::default(),
    );
    *builder.options_mut() = opts;
    builder
        .build()
        .map_err(|e| UpstreamError::Build(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_default_to_port_53() {
        assert_eq!(
            parse_upstream("10.0.0.2").unwrap(),
            "10.0.0.2:53".parse().unwrap()
        );
        assert_eq!(
            parse_upstream("10.0.0.2:5353").unwrap(),
            "10.0.0.2:5353".parse().unwrap()
        );
        assert_eq!(
            parse_upstream("[fd00::1]").unwrap(),
            "[fd00::1]:53".parse().unwrap()
        );
        assert!(parse_upstream("dns.example").is_err());
    }

    #[test]
    fn resolv_conf_gives_its_nameservers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(
            &path,
            "search example.com\nnameserver 192.0.2.53\nnameserver 192.0.2.54\noptions ndots:2\n",
        )
        .unwrap();
        assert_eq!(
            resolv_conf_nameservers(&path).unwrap(),
            [
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "192.0.2.54:53".parse().unwrap()
            ]
        );
    }
}
