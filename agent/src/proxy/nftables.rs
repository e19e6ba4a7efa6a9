//! `--proxy-mode nftables`: the rules as native nftables in a table of the
//! proxy's own (`ip kubelab-proxy`), laid out like kube-proxy's nftables mode:
//! verdict maps from `ip . proto . port` to a per-service chain
//! (`service-ips`, `service-nodeports`), `no-endpoint-*` maps sending traffic
//! for services without endpoints to a `reject`, and `mark-for-masquerade` /
//! `masquerading` for SNAT.
//!
//! One difference, measured: kube-proxy picks the endpoint with `numgen random
//! mod N vmap { ... }`, an anonymous map per service, then jumps to a chain per
//! endpoint. Binding thousands of anonymous sets in one transaction is
//! quadratic in the kernel (`__nft_set_trans_bind`: 10 000 services took 128 s
//! here), so each service chain instead has one rule per endpoint,
//! `numgen random mod (N-i) 0 ... dnat to`, the same 1/(N-i) series as the
//! iptables mode; hairpin traffic is masqueraded through the
//! `hairpin-connections` set (endpoint . endpoint) as newer kube-proxy does.
//!
//! A full sync replaces the table in one transaction; a partial sync writes
//! only the service chains whose rules changed and the map elements that
//! changed, and deletes chains no service has any more.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::apply::{ApplyError, run_with_input};
use super::iptables::MASQ_MARK;
use super::model::{ProxyModel, ServicePort, ServicePortName};
use super::sync::{RuleSyncer, SyncOutcome};

/// The family and name of the proxy's table.
pub const TABLE: &str = "ip kubelab-proxy";

/// kube-proxy's limit for the variable part of chain names.
const CHAIN_NAME_BASE_MAX: usize = 240;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NftOptions {
    /// `--cluster-cidr`: traffic to a cluster IP from outside it is masqueraded.
    pub cluster_cidr: Option<String>,
    /// Addresses NodePorts answer on; empty: every local address but loopback.
    pub node_ips: Vec<Ipv4Addr>,
}

fn hash8(text: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let d = Sha256::digest(text.as_bytes());
    let n = d[..5].iter().fold(0u64, |acc, b| (acc << 8) | *b as u64);
    (0..8)
        .rev()
        .map(|i| ALPHABET[((n >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// `HASH-ns/name/proto/port`, kube-proxy's `servicePortChainNameBase`.
pub fn chain_name_base(sp: &ServicePort) -> String {
    let name = format!(
        "{}/{}/{}/{}",
        sp.name.namespace,
        sp.name.name,
        sp.protocol.as_str(),
        sp.name.port
    );
    let mut out = format!("{}-{name}", hash8(&name));
    if out.len() > CHAIN_NAME_BASE_MAX {
        out.truncate(CHAIN_NAME_BASE_MAX - 3);
        out.push_str("...");
    }
    out
}

/// One element of a set or map: what identifies it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ElementKey {
    set: &'static str,
    key: String,
}

/// What one service port puts in the table: its chains with their rules,
/// and its elements (key, then the text after the key: ` comment ".." :
/// verdict`, or nothing for a plain set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ServiceUnit {
    chains: Vec<(String, Vec<String>)>,
    elements: Vec<(ElementKey, String)>,
}

impl ServiceUnit {
    fn render(sp: &ServicePort, opts: &NftOptions) -> ServiceUnit {
        let mut unit = ServiceUnit::default();
        let mut element = |set: &'static str, key: String, rest: String| {
            unit.elements.push((ElementKey { set, key }, rest));
        };
        let base = chain_name_base(sp);
        let proto = sp.protocol.as_str();
        let name = sp.name.to_string();
        element("cluster-ips", sp.cluster_ip.to_string(), String::new());
        let ip_key = format!("{} . {proto} . {}", sp.cluster_ip, sp.port);
        if sp.endpoints.is_empty() {
            let rest = format!(" comment \"{name}\" : goto reject-chain");
            element("no-endpoint-services", ip_key, rest.clone());
            if let Some(np) = sp.node_port {
                element("no-endpoint-nodeports", format!("{proto} . {np}"), rest);
            }
            return unit;
        }
        let svc_chain = format!("service-{base}");
        let mut rules = Vec::new();
        if let Some(cidr) = &opts.cluster_cidr {
            rules.push(format!(
                "ip daddr {} ip saddr != {cidr} jump mark-for-masquerade",
                sp.cluster_ip
            ));
        }
        let n = sp.endpoints.len();
        for (i, ep) in sp.endpoints.iter().enumerate() {
            let pick = if i + 1 < n {
                format!("numgen random mod {} 0 ", n - i)
            } else {
                String::new()
            };
            rules.push(format!("{pick}meta l4proto {proto} dnat to {ep}"));
            element(
                "hairpin-connections",
                format!("{} . {}", ep.ip, ep.ip),
                String::new(),
            );
        }
        element("service-ips", ip_key, format!(" : goto {svc_chain}"));
        if let Some(np) = sp.node_port {
            let ext = format!("external-{base}");
            element(
                "service-nodeports",
                format!("{proto} . {np}"),
                format!(" : goto {ext}"),
            );
            unit.chains.push((
                ext,
                vec![
                    "jump mark-for-masquerade".into(),
                    format!("goto {svc_chain}"),
                ],
            ));
        }
        unit.chains.push((svc_chain, rules));
        unit
    }
}

/// The desired content of the table, kept per service so an update
/// re-renders and writes only what changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NftRuleset {
    opts: NftOptions,
    /// The fixed chains, sets and maps, as `add` commands.
    skeleton: String,
    /// Each service port, with what it was rendered from.
    services: BTreeMap<ServicePortName, (ServicePort, ServiceUnit)>,
    /// Every element: its text after the key, and how many services hold it
    /// (an endpoint IP in two services is one hairpin element).
    elements: BTreeMap<ElementKey, (String, usize)>,
}

/// What [`NftRuleset::update`] changed, as one `nft -f` input.
#[derive(Debug, Clone, Default)]
pub struct NftChange {
    /// Empty: nothing to do.
    pub text: String,
    pub written_chains: Vec<String>,
    pub deleted_chains: Vec<String>,
}

impl NftRuleset {
    pub fn render(model: &ProxyModel, opts: &NftOptions) -> NftRuleset {
        let mut rs = NftRuleset {
            opts: opts.clone(),
            skeleton: skeleton(opts),
            ..Default::default()
        };
        for ip in &opts.node_ips {
            rs.hold(
                ElementKey {
                    set: "nodeport-ips",
                    key: ip.to_string(),
                },
                String::new(),
            );
        }
        for (k, sp) in &model.services {
            let unit = ServiceUnit::render(sp, opts);
            for (key, rest) in &unit.elements {
                rs.hold(key.clone(), rest.clone());
            }
            rs.services.insert(k.clone(), (sp.clone(), unit));
        }
        rs
    }

    fn hold(&mut self, key: ElementKey, rest: String) {
        self.elements.entry(key).or_insert((rest, 0)).1 += 1;
    }

    fn release(&mut self, key: &ElementKey) {
        if let Some(e) = self.elements.get_mut(key) {
            e.1 -= 1;
            if e.1 == 0 {
                self.elements.remove(key);
            }
        }
    }

    /// Whether `other` needs a full sync to get to (its fixed part differs).
    pub fn same_skeleton(&self, other: &NftRuleset) -> bool {
        self.skeleton == other.skeleton
    }

    /// Brings the ruleset to `model`, re-rendering only service ports that
    /// changed, and returns the `nft -f` input that makes the same change in
    /// a table holding the ruleset as it was.
    pub fn update(&mut self, model: &ProxyModel) -> NftChange {
        // Elements whose presence or text may change, with how they were.
        let mut touched: BTreeMap<ElementKey, Option<String>> = BTreeMap::new();
        let mut old_chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut new_chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let gone: Vec<ServicePortName> = self
            .services
            .keys()
            .filter(|k| !model.services.contains_key(*k))
            .cloned()
            .collect();
        let changed: Vec<&ServicePort> = model
            .services
            .iter()
            .filter(|(k, sp)| self.services.get(*k).is_none_or(|(old, _)| old != *sp))
            .map(|(_, sp)| sp)
            .collect();
        fn drop_unit(
            rs: &mut NftRuleset,
            unit: ServiceUnit,
            touched: &mut BTreeMap<ElementKey, Option<String>>,
            old_chains: &mut BTreeMap<String, Vec<String>>,
        ) {
            for (key, _) in &unit.elements {
                touched
                    .entry(key.clone())
                    .or_insert_with(|| rs.elements.get(key).map(|e| e.0.clone()));
                rs.release(key);
            }
            old_chains.extend(unit.chains);
        }
        for k in gone {
            if let Some((_, unit)) = self.services.remove(&k) {
                drop_unit(self, unit, &mut touched, &mut old_chains);
            }
        }
        for sp in changed {
            if let Some((_, unit)) = self.services.remove(&sp.name) {
                drop_unit(self, unit, &mut touched, &mut old_chains);
            }
            let unit = ServiceUnit::render(sp, &self.opts);
            for (key, rest) in &unit.elements {
                touched
                    .entry(key.clone())
                    .or_insert_with(|| self.elements.get(key).map(|e| e.0.clone()));
                self.hold(key.clone(), rest.clone());
            }
            new_chains.extend(unit.chains.iter().cloned());
            self.services.insert(sp.name.clone(), (sp.clone(), unit));
        }

        let mut out = String::new();
        let mut change = NftChange::default();
        for (chain, rules) in &new_chains {
            match old_chains.get(chain) {
                Some(old) if old == rules => continue,
                Some(_) => {
                    let _ = writeln!(out, "flush chain {TABLE} {chain}");
                }
                None => {
                    let _ = writeln!(out, "add chain {TABLE} {chain}");
                }
            }
            change.written_chains.push(chain.clone());
        }
        for chain in &change.written_chains {
            write_chain(&mut out, chain, &new_chains[chain]);
        }
        // Elements whose key is gone or whose verdict changed go first.
        let mut deletes: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut adds: Vec<(&ElementKey, &String)> = Vec::new();
        for (key, before) in &touched {
            let now = self.elements.get(key).map(|e| &e.0);
            if before.as_ref() == now {
                continue;
            }
            if before.is_some() {
                deletes.entry(key.set).or_default().push(&key.key);
            }
            if let Some(rest) = now {
                adds.push((key, rest));
            }
        }
        for (set, keys) in deletes {
            let _ = writeln!(
                out,
                "delete element {TABLE} {set} {{ {} }}",
                keys.join(" , ")
            );
        }
        write_elements(&mut out, adds.into_iter());
        change.deleted_chains = old_chains
            .keys()
            .filter(|c| !new_chains.contains_key(*c))
            .cloned()
            .collect();
        // Flush all before deleting any: a stale external chain jumps to a
        // stale service chain.
        for chain in &change.deleted_chains {
            let _ = writeln!(out, "flush chain {TABLE} {chain}");
        }
        for chain in &change.deleted_chains {
            let _ = writeln!(out, "delete chain {TABLE} {chain}");
        }
        change.text = out;
        change
    }

    /// The whole table, replacing whatever is there, as one `nft -f` input.
    pub fn full_text(&self) -> String {
        let mut out = String::new();
        // Creating before deleting makes the delete valid when the table is
        // absent; the whole input is one transaction.
        let _ = writeln!(out, "add table {TABLE}\ndelete table {TABLE}");
        out.push_str(&self.skeleton);
        let chains: BTreeMap<&String, &Vec<String>> = self
            .services
            .values()
            .flat_map(|(_, u)| u.chains.iter().map(|(c, r)| (c, r)))
            .collect();
        for chain in chains.keys() {
            let _ = writeln!(out, "add chain {TABLE} {chain}");
        }
        for (chain, rules) in &chains {
            write_chain(&mut out, chain, rules);
        }
        write_elements(
            &mut out,
            self.elements.iter().map(|(k, (rest, _))| (k, rest)),
        );
        out
    }

    pub fn chain_names(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .services
            .values()
            .flat_map(|(_, u)| u.chains.iter().map(|(c, _)| c.clone()))
            .collect();
        out.sort();
        out
    }
}

fn write_chain(out: &mut String, chain: &str, rules: &[String]) {
    for r in rules {
        let _ = writeln!(out, "add rule {TABLE} {chain} {r}");
    }
}

fn write_elements<'a>(
    out: &mut String,
    elements: impl Iterator<Item = (&'a ElementKey, &'a String)>,
) {
    // One command per set: nft parses a long element list much faster than
    // as many commands.
    let mut by_set: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (k, rest) in elements {
        by_set
            .entry(k.set)
            .or_default()
            .push(format!("{}{rest}", k.key));
    }
    for (set, elems) in by_set {
        let _ = writeln!(out, "add element {TABLE} {set} {{ {} }}", elems.join(" , "));
    }
}

/// The fixed part of the table: sets, maps, hooks and helper chains.
fn skeleton(opts: &NftOptions) -> String {
    let t = TABLE;
    let node_ports = if opts.node_ips.is_empty() {
        "fib daddr type local ip daddr != 127.0.0.0/8"
    } else {
        "ip daddr @nodeport-ips"
    };
    format!(
        "\
add table {t} {{ comment \"rules for the kubelab-agent service proxy\" ; }}
add set {t} cluster-ips {{ type ipv4_addr ; comment \"Active ClusterIPs\" ; }}
add set {t} nodeport-ips {{ type ipv4_addr ; comment \"IPs that accept NodePort traffic\" ; }}
add set {t} hairpin-connections {{ type ipv4_addr . ipv4_addr ; comment \"endpoints reaching themselves through a service\" ; }}
add map {t} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; comment \"vmap to drop or reject packets to service nodeports with no endpoints\" ; }}
add map {t} no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \"vmap to drop or reject packets to services with no endpoints\" ; }}
add map {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \"ClusterIP traffic\" ; }}
add map {t} service-nodeports {{ type inet_proto . inet_service : verdict ; comment \"NodePort traffic\" ; }}
add chain {t} cluster-ips-check
add chain {t} filter-forward {{ type filter hook forward priority 0 ; }}
add chain {t} filter-input {{ type filter hook input priority 0 ; }}
add chain {t} filter-output {{ type filter hook output priority 0 ; }}
add chain {t} mark-for-masquerade
add chain {t} masquerading
add chain {t} nat-output {{ type nat hook output priority -100 ; }}
add chain {t} nat-postrouting {{ type nat hook postrouting priority 100 ; }}
add chain {t} nat-prerouting {{ type nat hook prerouting priority -100 ; }}
add chain {t} nodeport-endpoints-check
add chain {t} reject-chain {{ comment \"helper for @no-endpoint-services / @no-endpoint-nodeports\" ; }}
add chain {t} services
add chain {t} service-endpoints-check
add rule {t} cluster-ips-check ip daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\"
add rule {t} filter-forward ct state new jump service-endpoints-check
add rule {t} filter-forward ct state new jump cluster-ips-check
add rule {t} filter-input ct state new jump nodeport-endpoints-check
add rule {t} filter-input ct state new jump service-endpoints-check
add rule {t} filter-output ct state new jump service-endpoints-check
add rule {t} filter-output ct state new jump cluster-ips-check
add rule {t} mark-for-masquerade mark set mark or {MASQ_MARK}
add rule {t} masquerading ct status dnat ip saddr . ip daddr @hairpin-connections jump mark-for-masquerade
add rule {t} masquerading mark and {MASQ_MARK} == 0 return
add rule {t} masquerading mark set mark xor {MASQ_MARK}
add rule {t} masquerading masquerade fully-random
add rule {t} nat-output jump services
add rule {t} nat-postrouting jump masquerading
add rule {t} nat-prerouting jump services
add rule {t} nodeport-endpoints-check {node_ports} meta l4proto . th dport vmap @no-endpoint-nodeports
add rule {t} reject-chain reject
add rule {t} services ip daddr . meta l4proto . th dport vmap @service-ips
add rule {t} services {node_ports} meta l4proto . th dport vmap @service-nodeports
add rule {t} service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
"
    )
}

/// `nft -f -` of `text`.
pub fn apply(text: &str) -> Result<(), ApplyError> {
    run_with_input("nft", &["-f", "-"], text).map(|_| ())
}

/// Deletes the proxy's table; whether it was there.
pub fn delete_table() -> Result<bool, ApplyError> {
    if run_with_input("nft", &["list", "table", "ip", "kubelab-proxy"], "").is_err() {
        return Ok(false);
    }
    run_with_input("nft", &["delete", "table", "ip", "kubelab-proxy"], "")?;
    Ok(true)
}

/// Keeps the table in line with the model, writing only what changed.
pub struct NftSyncer {
    pub opts: NftOptions,
    applied: Option<NftRuleset>,
}

impl NftSyncer {
    pub fn new(opts: NftOptions) -> NftSyncer {
        NftSyncer {
            opts,
            applied: None,
        }
    }
}

impl RuleSyncer for NftSyncer {
    fn mode(&self) -> &'static str {
        "nftables"
    }

    fn sync(&mut self, model: &ProxyModel, full: bool) -> Result<SyncOutcome, ApplyError> {
        let start = Instant::now();
        // Until nft succeeds the table's state is unknown: on any error
        // `applied` stays empty, so the next sync is full.
        let fixed = skeleton(&self.opts);
        let (ruleset, change) = match self.applied.take() {
            Some(mut applied) if !full && applied.skeleton == fixed => {
                let change = applied.update(model);
                (applied, Some(change))
            }
            _ => (NftRuleset::render(model, &self.opts), None),
        };
        let (text, written, deleted, is_full) = match change {
            Some(c) => (c.text, c.written_chains, c.deleted_chains, false),
            None => (ruleset.full_text(), ruleset.chain_names(), vec![], true),
        };
        let t = Instant::now();
        if !text.is_empty() {
            apply(&text)?;
        }
        let tool_elapsed = t.elapsed();
        self.applied = Some(ruleset);
        Ok(SyncOutcome {
            full: is_full,
            written_chains: written,
            deleted_chains: deleted,
            input: text,
            elapsed: start.elapsed(),
            tool_elapsed,
        })
    }
}

/// Service chains of the table as the kernel has them (for tests and logs).
pub fn listed_chains() -> Result<BTreeSet<String>, ApplyError> {
    let out = run_with_input("nft", &["list", "chains", "ip"], "")?;
    let mut in_table = false;
    let mut chains = BTreeSet::new();
    for line in out.lines() {
        let l = line.trim();
        if let Some(t) = l.strip_prefix("table ip ") {
            in_table = t.trim_end_matches(" {") == "kubelab-proxy";
        } else if in_table && let Some(c) = l.strip_prefix("chain ") {
            chains.insert(c.trim_end_matches(" {").to_string());
        }
    }
    Ok(chains)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model::tests::{service, slice};

    fn opts() -> NftOptions {
        NftOptions {
            cluster_cidr: Some("10.0.0.0/8".into()),
            node_ips: vec!["192.168.0.2".parse().unwrap()],
        }
    }

    #[test]
    fn chain_names_are_kube_proxys() {
        let svc = service("ns1", "svc1", "ClusterIP", "172.30.0.41", &[("p80", 80, 0)]);
        let sp = &crate::proxy::model::service_ports(&svc)[0];
        // kube-proxy's nftables tests name this chain service-ULMVA6XW-ns1/svc1/tcp/p80.
        assert_eq!(chain_name_base(sp), "ULMVA6XW-ns1/svc1/tcp/p80");
    }

    #[test]
    fn services_render_to_chains_and_map_elements() {
        let svc1 = service("ns1", "svc1", "ClusterIP", "172.30.0.41", &[("p80", 80, 0)]);
        let svc3 = service(
            "ns3",
            "svc3",
            "NodePort",
            "172.30.0.43",
            &[("p80", 80, 3003)],
        );
        let svc6 = service(
            "ns6",
            "svc6",
            "NodePort",
            "172.30.0.46",
            &[("p80", 80, 3006)],
        );
        let e1 = slice(
            "ns1",
            "svc1",
            "p80",
            80,
            &[
                ("10.180.0.1", None, None, None),
                ("10.180.0.2", None, None, None),
                ("10.180.0.3", None, None, None),
            ],
        );
        let e3 = slice(
            "ns3",
            "svc3",
            "p80",
            80,
            &[("10.180.0.3", None, None, None)],
        );
        let model = ProxyModel::build([&svc1, &svc3, &svc6], [&e1, &e3]);
        let text = NftRuleset::render(&model, &opts()).full_text();
        let body: Vec<&str> = text
            .lines()
            .filter(|l| !skeleton(&opts()).contains(&format!("{l}\n")))
            .collect();
        assert_eq!(
            body,
            [
                "add table ip kubelab-proxy",
                "delete table ip kubelab-proxy",
                "add chain ip kubelab-proxy external-4AT6LBPK-ns3/svc3/tcp/p80",
                "add chain ip kubelab-proxy service-4AT6LBPK-ns3/svc3/tcp/p80",
                "add chain ip kubelab-proxy service-ULMVA6XW-ns1/svc1/tcp/p80",
                "add rule ip kubelab-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 jump mark-for-masquerade",
                "add rule ip kubelab-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 goto service-4AT6LBPK-ns3/svc3/tcp/p80",
                "add rule ip kubelab-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 ip daddr 172.30.0.43 ip saddr != 10.0.0.0/8 jump mark-for-masquerade",
                "add rule ip kubelab-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 meta l4proto tcp dnat to 10.180.0.3:80",
                "add rule ip kubelab-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade",
                "add rule ip kubelab-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 3 0 meta l4proto tcp dnat to 10.180.0.1:80",
                "add rule ip kubelab-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 2 0 meta l4proto tcp dnat to 10.180.0.2:80",
                "add rule ip kubelab-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 meta l4proto tcp dnat to 10.180.0.3:80",
                "add element ip kubelab-proxy cluster-ips { 172.30.0.41 , 172.30.0.43 , 172.30.0.46 }",
                "add element ip kubelab-proxy hairpin-connections { 10.180.0.1 . 10.180.0.1 , 10.180.0.2 . 10.180.0.2 , 10.180.0.3 . 10.180.0.3 }",
                "add element ip kubelab-proxy no-endpoint-nodeports { tcp . 3006 comment \"ns6/svc6:p80\" : goto reject-chain }",
                "add element ip kubelab-proxy no-endpoint-services { 172.30.0.46 . tcp . 80 comment \"ns6/svc6:p80\" : goto reject-chain }",
                "add element ip kubelab-proxy nodeport-ips { 192.168.0.2 }",
                "add element ip kubelab-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 , 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }",
                "add element ip kubelab-proxy service-nodeports { tcp . 3003 : goto external-4AT6LBPK-ns3/svc3/tcp/p80 }",
            ]
        );
    }

    #[test]
    fn partial_updates_touch_only_the_changed_service() {
        let a = service("ns", "a", "ClusterIP", "10.96.0.1", &[("", 80, 0)]);
        let b = service("ns", "b", "ClusterIP", "10.96.0.2", &[("", 80, 0)]);
        let ea = slice("ns", "a", "", 80, &[("10.1.0.1", None, None, None)]);
        let eb2 = slice(
            "ns",
            "b",
            "",
            80,
            &[
                ("10.1.0.2", None, None, None),
                ("10.1.0.3", None, None, None),
            ],
        );
        let eb1 = slice("ns", "b", "", 80, &[("10.1.0.3", None, None, None)]);
        let mut rs = NftRuleset::render(&ProxyModel::build([&a, &b], [&ea, &eb2]), &opts());
        let after = ProxyModel::build([&a, &b], [&ea, &eb1]);
        let change = rs.update(&after);
        assert_eq!(change.written_chains, ["service-6447YX26-ns/b/tcp/"]);
        assert!(change.deleted_chains.is_empty());
        assert_eq!(
            change.text,
            "flush chain ip kubelab-proxy service-6447YX26-ns/b/tcp/\n\
             add rule ip kubelab-proxy service-6447YX26-ns/b/tcp/ ip daddr 10.96.0.2 ip saddr != 10.0.0.0/8 jump mark-for-masquerade\n\
             add rule ip kubelab-proxy service-6447YX26-ns/b/tcp/ meta l4proto tcp dnat to 10.1.0.3:80\n\
             delete element ip kubelab-proxy hairpin-connections { 10.1.0.2 . 10.1.0.2 }\n"
        );
        // The updated ruleset is the one rendered from scratch.
        assert_eq!(rs, NftRuleset::render(&after, &opts()));
        // Endpoints gone: the chain goes, the service is rejected.
        let none = ProxyModel::build([&a, &b], [&ea]);
        let change = rs.update(&none);
        let text = &change.text;
        assert_eq!(change.deleted_chains, ["service-6447YX26-ns/b/tcp/"]);
        assert!(
            text.contains("delete element ip kubelab-proxy service-ips { 10.96.0.2 . tcp . 80 }\n"),
            "{text}"
        );
        assert!(text.contains("add element ip kubelab-proxy no-endpoint-services { 10.96.0.2 . tcp . 80 comment \"ns/b\" : goto reject-chain }\n"), "{text}");
        assert!(text.ends_with("flush chain ip kubelab-proxy service-6447YX26-ns/b/tcp/\ndelete chain ip kubelab-proxy service-6447YX26-ns/b/tcp/\n"), "{text}");
        // An endpoint IP shared by two services stays a hairpin element
        // until neither has it.
        let a2 = slice(
            "ns",
            "a",
            "",
            80,
            &[
                ("10.1.0.1", None, None, None),
                ("10.1.0.3", None, None, None),
            ],
        );
        rs.update(&ProxyModel::build([&a, &b], [&a2, &eb1]));
        let change = rs.update(&ProxyModel::build([&a, &b], [&ea, &eb1]));
        assert!(!change.text.contains("hairpin"), "{}", change.text);
        assert_eq!(
            rs.update(&ProxyModel::build([&a, &b], [&ea, &eb1])).text,
            ""
        );
    }
}
