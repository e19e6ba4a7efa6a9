//! A pod's name resolution, as kubelet's `pkg/kubelet/network/dns` composes
//! it: `/etc/resolv.conf` from the pod's `dnsPolicy` and `dnsConfig`, the
//! node's `--cluster-dns`/`--cluster-domain` and its own resolv.conf; and
//! the pod's host name, domain and `/etc/hosts` (`hostname`, `subdomain`,
//! `setHostnameAsFQDN`, `hostAliases`). All pure: the pod worker writes
//! what these return.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

/// kubelet's defaults and limits (`validation.MaxDNSSearchPaths`,
/// `MaxDNSSearchListChars`).
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
const MAX_SEARCH_PATHS: usize = 32;
const MAX_SEARCH_CHARS: usize = 2048;
/// The C resolver reads no more than this many nameservers (`MAXNS`).
const MAX_NAMESERVERS: usize = 3;
/// Linux host names are at most this long.
const MAX_HOSTNAME_LEN: usize = 64;

/// One resolv.conf: what it says, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Reads `nameserver`, `search`/`domain` and `options` lines as kubelet's
    /// `parseResolvConf` does (the last `search` wins; trailing dots go).
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["nameserver", ns, ..] => conf.nameservers.push(ns.to_string()),
                ["search" | "domain", rest @ ..] => {
                    conf.searches = rest
                        .iter()
                        .filter(|s| **s != ".")
                        .map(|s| s.trim_end_matches('.').to_string())
                        .collect();
                }
                ["options", rest @ ..] => {
                    conf.options = rest.iter().map(|s| s.to_string()).collect()
                }
                _ => {}
            }
        }
        conf
    }

    /// The file: `search`, then `nameserver` lines, then `options`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// The node's side of pod DNS: kubelet's `clusterDNS`, `clusterDomain` and
/// `resolvConf`.
#[derive(Debug, Clone, Default)]
pub struct NodeDns {
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    /// The node's resolv.conf (`--resolv-conf`), what `Default` pods get.
    pub host: ResolvConf,
}

/// kubelet's Event for a pod whose DNS could not be as asked.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsWarning {
    pub reason: &'static str,
    pub message: String,
}

fn push_unique(list: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for item in items {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

/// `dnsConfig.options` over `base`: an option of the same name is replaced
/// (kubelet's `mergeDNSOptions`).
fn merge_options(base: &[String], extra: &[(String, Option<String>)]) -> Vec<String> {
    let mut merged: Vec<(String, Option<String>)> = base
        .iter()
        .map(|o| match o.split_once(':') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (o.clone(), None),
        })
        .collect();
    for (name, value) in extra {
        match merged.iter_mut().find(|(n, _)| n == name) {
            Some(existing) => existing.1 = value.clone(),
            None => merged.push((name.clone(), value.clone())),
        }
    }
    merged
        .into_iter()
        .map(|(n, v)| match v {
            Some(v) => format!("{n}:{v}"),
            None => n,
        })
        .collect()
}

/// The pod's resolv.conf, with a warning when kubelet would record one.
pub fn pod_resolv_conf(pod: &Pod, node: &NodeDns) -> (ResolvConf, Vec<DnsWarning>) {
    let spec = pod.spec.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let host_network = spec.host_network.unwrap_or(false);
    let mut warnings = Vec::new();
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    #[derive(PartialEq)]
    enum Kind {
        Cluster,
        Host,
        None,
    }
    let mut kind = match policy {
        "None" => Kind::None,
        "Default" => Kind::Host,
        "ClusterFirstWithHostNet" => Kind::Cluster,
        // ClusterFirst: a host-network pod resolves as its node does.
        _ if host_network => Kind::Host,
        _ => Kind::Cluster,
    };
    if kind == Kind::Cluster && node.cluster_dns.is_empty() {
        warnings.push(DnsWarning {
            reason: "MissingClusterDNS",
            message: format!(
                "pod: {:?}. kubelet does not have ClusterDNS IP configured and cannot create Pod using {policy:?} policy. Falling back to \"Default\" policy.",
                pod.metadata.name.as_deref().unwrap_or_default()
            ),
        });
        kind = Kind::Host;
    }
    let mut conf = match kind {
        Kind::None => ResolvConf::default(),
        Kind::Host => node.host.clone(),
        Kind::Cluster => {
            let domain = node.cluster_domain.trim_end_matches('.');
            let mut searches = Vec::new();
            if !domain.is_empty() {
                searches = vec![
                    format!("{ns}.svc.{domain}"),
                    format!("svc.{domain}"),
                    domain.to_owned(),
                ];
            }
            push_unique(&mut searches, node.host.searches.iter().cloned());
            ResolvConf {
                nameservers: node.cluster_dns.iter().map(IpAddr::to_string).collect(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
    };
    if let Some(extra) = &spec.dns_config {
        push_unique(
            &mut conf.nameservers,
            extra.nameservers.iter().flatten().cloned(),
        );
        push_unique(
            &mut conf.searches,
            extra
                .searches
                .iter()
                .flatten()
                .map(|s| s.trim_end_matches('.').to_owned()),
        );
        let options: Vec<(String, Option<String>)> = extra
            .options
            .iter()
            .flatten()
            .filter_map(|o| Some((o.name.clone()?, o.value.clone())))
            .collect();
        conf.options = merge_options(&conf.options, &options);
    }
    let mut searches = conf.searches.clone();
    searches.dedup();
    if searches.len() > MAX_SEARCH_PATHS
        || searches.iter().map(|s| s.len() + 1).sum::<usize>() > MAX_SEARCH_CHARS
    {
        let mut kept = Vec::new();
        let mut chars = 0;
        for s in searches {
            if kept.len() == MAX_SEARCH_PATHS || chars + s.len() + 1 > MAX_SEARCH_CHARS {
                break;
            }
            chars += s.len() + 1;
            kept.push(s);
        }
        warnings.push(DnsWarning {
            reason: "DNSConfigForming",
            message: format!(
                "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: {}",
                kept.join(" ")
            ),
        });
        searches = kept;
    }
    conf.searches = searches;
    if conf.nameservers.len() > MAX_NAMESERVERS {
        conf.nameservers.truncate(MAX_NAMESERVERS);
        warnings.push(DnsWarning {
            reason: "DNSConfigForming",
            message: format!(
                "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: {}",
                conf.nameservers.join(" ")
            ),
        });
    }
    (conf, warnings)
}

/// A pod's names: `hostname` for its UTS namespace and `/etc/hostname`,
/// `short` and `domain` for its `/etc/hosts` line.
#[derive(Debug, Clone, PartialEq)]
pub struct PodHostname {
    pub hostname: String,
    pub short: String,
    /// `<subdomain>.<ns>.svc.<cluster-domain>`, when the pod has a subdomain.
    pub domain: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HostnameError {
    #[error(
        "failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} is too long ({MAX_HOSTNAME_LEN} characters is the max, {len} characters requested)"
    )]
    FqdnTooLong { fqdn: String, len: usize },
}

/// kubelet's `GeneratePodHostNameAndDomain` and `GetPodHostnameAndDomain`:
/// the pod's `hostname` (or its name, cut to 63 characters), its domain from
/// `subdomain`, and with `setHostnameAsFQDN` the FQDN as host name.
pub fn pod_hostname(pod: &Pod, cluster_domain: &str) -> Result<PodHostname, HostnameError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let short = match spec.hostname.as_deref().filter(|h| !h.is_empty()) {
        Some(h) => h.to_owned(),
        None => truncate_hostname(name),
    };
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let domain = spec
        .subdomain
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|sub| format!("{sub}.{ns}.svc.{}", cluster_domain.trim_end_matches('.')));
    let mut hostname = short.clone();
    if spec.set_hostname_as_fqdn == Some(true)
        && let Some(d) = &domain
    {
        let fqdn = format!("{short}.{d}");
        if fqdn.len() > MAX_HOSTNAME_LEN {
            return Err(HostnameError::FqdnTooLong {
                len: fqdn.len(),
                fqdn,
            });
        }
        hostname = fqdn;
    }
    Ok(PodHostname {
        hostname,
        short,
        domain,
    })
}

/// Pod names may be 253 characters; host names 63 (kubelet trims trailing
/// `-` and `.` after cutting).
fn truncate_hostname(name: &str) -> String {
    if name.len() <= 63 {
        return name.to_owned();
    }
    name[..63].trim_end_matches(['-', '.']).to_owned()
}

/// kubelet's managed `/etc/hosts` for a pod on the pod network.
pub fn pod_hosts_file(pod: &Pod, names: &PodHostname, pod_ips: &[String]) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    for ip in pod_ips {
        match &names.domain {
            Some(d) => out.push_str(&format!("{ip}\t{}.{d}\t{}\n", names.short, names.short)),
            None => out.push_str(&format!("{ip}\t{}\n", names.short)),
        }
    }
    out.push_str(&host_aliases(pod));
    out
}

/// A host-network pod's `/etc/hosts`: the node's, with the pod's aliases.
pub fn host_network_hosts_file(node_hosts: &str, pod: &Pod) -> String {
    let mut out = String::from("# Kubernetes-managed hosts file (host network).\n");
    out.push_str(node_hosts);
    if !node_hosts.is_empty() && !node_hosts.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&host_aliases(pod));
    out
}

fn host_aliases(pod: &Pod) -> String {
    let aliases = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_aliases.as_ref())
        .filter(|a| !a.is_empty());
    let Some(aliases) = aliases else {
        return String::new();
    };
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for a in aliases {
        let names = a.hostnames.clone().unwrap_or_default();
        out.push_str(&format!("{}\t{}\n", a.ip, names.join("\t")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-0", "namespace": "shop"},
            "spec": spec
        }))
        .unwrap()
    }

    fn node() -> NodeDns {
        NodeDns {
            cluster_dns: vec!["10.96.0.10".parse().unwrap()],
            cluster_domain: "cluster.local".into(),
            host: ResolvConf::parse(
                "# generated\nnameserver 192.0.2.53\nsearch corp.example. lab.example\noptions edns0 ndots:2\n",
            ),
        }
    }

    #[test]
    fn the_host_file_parses_as_kubelet_reads_it() {
        let host = node().host;
        assert_eq!(host.nameservers, ["192.0.2.53"]);
        assert_eq!(host.searches, ["corp.example", "lab.example"]);
        assert_eq!(host.options, ["edns0", "ndots:2"]);
    }

    #[test]
    fn cluster_first_searches_the_namespace_then_the_host_domains() {
        let (conf, warnings) = pod_resolv_conf(&pod(json!({"containers": []})), &node());
        assert!(warnings.is_empty());
        assert_eq!(
            conf.render(),
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn host_network_pods_resolve_as_the_node_unless_cluster_first_with_host_net() {
        let (conf, _) = pod_resolv_conf(&pod(json!({"hostNetwork": true})), &node());
        assert_eq!(conf, node().host);
        let (conf, _) = pod_resolv_conf(
            &pod(json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"})),
            &node(),
        );
        assert_eq!(conf.nameservers, ["10.96.0.10"]);
        let (conf, _) = pod_resolv_conf(&pod(json!({"dnsPolicy": "Default"})), &node());
        assert_eq!(conf, node().host);
    }

    #[test]
    fn none_takes_only_the_dns_config_and_configs_merge() {
        let (conf, _) = pod_resolv_conf(
            &pod(json!({"dnsPolicy": "None", "dnsConfig": {
                "nameservers": ["1.2.3.4"], "searches": ["ns1.svc.cluster-domain.example"],
                "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}})),
            &node(),
        );
        assert_eq!(
            conf.render(),
            "search ns1.svc.cluster-domain.example\nnameserver 1.2.3.4\noptions ndots:2 edns0\n"
        );
        // ClusterFirst plus a dnsConfig: appended, duplicates dropped, an
        // option of the same name replaced.
        let (conf, _) = pod_resolv_conf(
            &pod(json!({"dnsConfig": {
                "nameservers": ["10.96.0.10", "1.1.1.1"], "searches": ["cluster.local", "extra.example"],
                "options": [{"name": "ndots", "value": "1"}, {"name": "single-request-reopen"}]}})),
            &node(),
        );
        assert_eq!(conf.nameservers, ["10.96.0.10", "1.1.1.1"]);
        assert_eq!(conf.searches.last().unwrap(), "extra.example");
        assert_eq!(
            conf.searches
                .iter()
                .filter(|s| *s == "cluster.local")
                .count(),
            1
        );
        assert_eq!(conf.options, ["ndots:1", "single-request-reopen"]);
    }

    #[test]
    fn without_cluster_dns_cluster_first_falls_back_with_an_event() {
        let mut n = node();
        n.cluster_dns.clear();
        let (conf, warnings) = pod_resolv_conf(&pod(json!({})), &n);
        assert_eq!(conf, n.host);
        assert_eq!(warnings[0].reason, "MissingClusterDNS");
        assert!(
            warnings[0]
                .message
                .contains("Falling back to \"Default\" policy")
        );
    }

    #[test]
    fn too_many_nameservers_and_searches_are_cut_with_an_event() {
        let searches: Vec<String> = (0..40).map(|i| format!("s{i}.example")).collect();
        let (conf, warnings) = pod_resolv_conf(
            &pod(json!({"dnsPolicy": "None", "dnsConfig": {
                "nameservers": ["1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4"],
                "searches": searches}})),
            &node(),
        );
        assert_eq!(conf.searches.len(), 32);
        assert_eq!(conf.nameservers.len(), 3);
        assert_eq!(warnings.len(), 2);
        assert!(warnings.iter().all(|w| w.reason == "DNSConfigForming"));
    }

    #[test]
    fn hostname_subdomain_and_fqdn() {
        let p = pod(json!({"hostname": "db-0", "subdomain": "db"}));
        let names = pod_hostname(&p, "cluster.local").unwrap();
        assert_eq!(names.hostname, "db-0");
        assert_eq!(names.domain.as_deref(), Some("db.shop.svc.cluster.local"));
        assert_eq!(
            pod_hosts_file(&p, &names, &["10.244.0.9".into()])
                .lines()
                .last(),
            Some("10.244.0.9\tdb-0.db.shop.svc.cluster.local\tdb-0")
        );
        let p = pod(json!({"hostname": "db-0", "subdomain": "db", "setHostnameAsFQDN": true}));
        assert_eq!(
            pod_hostname(&p, "cluster.local").unwrap().hostname,
            "db-0.db.shop.svc.cluster.local"
        );
        // Without a hostname: the pod's name.
        let p = pod(json!({}));
        let names = pod_hostname(&p, "cluster.local").unwrap();
        assert_eq!(
            (names.hostname.as_str(), names.domain.clone()),
            ("web-0", None)
        );
        assert_eq!(
            pod_hosts_file(&p, &names, &["10.244.0.9".into()])
                .lines()
                .last(),
            Some("10.244.0.9\tweb-0")
        );
        let long = "x".repeat(60);
        let p = pod(json!({"hostname": long, "subdomain": "db", "setHostnameAsFQDN": true}));
        assert!(matches!(
            pod_hostname(&p, "cluster.local"),
            Err(HostnameError::FqdnTooLong { .. })
        ));
    }

    #[test]
    fn host_aliases_are_appended() {
        let p = pod(
            json!({"hostAliases": [{"ip": "127.0.0.1", "hostnames": ["foo.local", "bar.local"]}]}),
        );
        let names = pod_hostname(&p, "cluster.local").unwrap();
        let hosts = pod_hosts_file(&p, &names, &[]);
        assert!(
            hosts.ends_with("# Entries added by HostAliases.\n127.0.0.1\tfoo.local\tbar.local\n"),
            "{hosts}"
        );
    }
}
