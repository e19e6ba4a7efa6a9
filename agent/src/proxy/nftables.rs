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
//! Endpoint chains exist only with ClientIP affinity, as kube-proxy lays them
//! out: `update @affinity-<endpoint> { ip saddr }` (a set with the affinity
//! timeout) before the DNAT, and `ip saddr @affinity-<endpoint> goto
//! endpoint-<endpoint>` in the service chain before the random pick.
//!
//! External IPs are `service-ips` elements leading to the service's
//! `external-` chain, like NodePorts; `externalTrafficPolicy: Local` sends
//! external traffic to a `local-` chain of this node's endpoints (no SNAT),
//! `internalTrafficPolicy: Local` cluster IP traffic too; without a local
//! endpoint that traffic is dropped (`no-endpoint-*` verdict `drop`).
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
use super::model::{Endpoint, ProxyModel, ServicePort, ServicePortName};
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

/// kube-proxy's `hashAndTruncate`: `HASH-name`, cut to the length limit.
fn hash_and_truncate(name: &str) -> String {
    let mut out = format!("{}-{name}", hash8(name));
    if out.len() > CHAIN_NAME_BASE_MAX {
        out.truncate(CHAIN_NAME_BASE_MAX - 3);
        out.push_str("...");
    }
    out
}

/// `HASH-ns/name/proto/port`, kube-proxy's `servicePortChainNameBase`.
pub fn chain_name_base(sp: &ServicePort) -> String {
    hash_and_truncate(&format!(
        "{}/{}/{}/{}",
        sp.name.namespace,
        sp.name.name,
        sp.protocol.as_str(),
        sp.name.port
    ))
}

/// `HASH-ns/name/proto/port__ip/port`, kube-proxy's
/// `servicePortEndpointChainNameBase`: the endpoint chain and affinity set.
pub fn endpoint_name_base(sp: &ServicePort, ep: &Endpoint) -> String {
    hash_and_truncate(&format!(
        "{}/{}/{}/{}__{}/{}",
        sp.name.namespace,
        sp.name.name,
        sp.protocol.as_str(),
        sp.name.port,
        ep.ip,
        ep.port
    ))
}

/// One element of a set or map: what identifies it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ElementKey {
    set: &'static str,
    key: String,
}

/// What one service port puts in the table: its chains with their rules,
/// its affinity sets (name, definition), and its elements (key, then the
/// text after the key: ` comment ".." : verdict`, or nothing for a plain set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ServiceUnit {
    chains: Vec<(String, Vec<String>)>,
    sets: Vec<(String, String)>,
    elements: Vec<(ElementKey, String)>,
}

impl ServiceUnit {
    /// kube-proxy's nftables `syncProxyRules` for one service port: map
    /// elements capturing its destinations (or `no-endpoint-*` verdicts for
    /// those with nowhere to go), the service/local/external chains, and,
    /// with ClientIP affinity, an endpoint chain and affinity set per endpoint.
    fn render(sp: &ServicePort, opts: &NftOptions) -> ServiceUnit {
        let mut elements: Vec<(ElementKey, String)> = Vec::new();
        let mut element = |set: &'static str, key: String, rest: String| {
            elements.push((ElementKey { set, key }, rest));
        };
        let base = chain_name_base(sp);
        let proto = sp.protocol.as_str();
        let name = sp.name.to_string();
        let r = sp.routing();
        let svc_chain = format!("service-{base}");
        let local_chain = format!("local-{base}");
        let ext_chain = format!("external-{base}");
        let internal_chain = if r.internal_local {
            &local_chain
        } else {
            &svc_chain
        };
        let external_policy_chain = if r.external_local {
            &local_chain
        } else {
            &svc_chain
        };
        element("cluster-ips", sp.cluster_ip.to_string(), String::new());
        let ip_key = |ip: &Ipv4Addr| format!("{ip} . {proto} . {}", sp.port);
        // No endpoints anywhere: refused. Endpoints, but none on this node
        // for a Local policy: dropped.
        let no_endpoints = format!(
            " comment \"{name}\" : {}",
            if r.has_endpoints {
                "drop"
            } else {
                "goto reject-chain"
            }
        );
        if r.has_internal {
            element(
                "service-ips",
                ip_key(&sp.cluster_ip),
                format!(" : goto {internal_chain}"),
            );
        } else {
            element(
                "no-endpoint-services",
                ip_key(&sp.cluster_ip),
                no_endpoints.clone(),
            );
        }
        for ip in &sp.external_ips {
            if r.has_endpoints {
                element("service-ips", ip_key(ip), format!(" : goto {ext_chain}"));
            }
            if !r.has_external {
                element("no-endpoint-services", ip_key(ip), no_endpoints.clone());
            }
        }
        if let Some(np) = sp.node_port {
            let key = format!("{proto} . {np}");
            if r.has_endpoints {
                element(
                    "service-nodeports",
                    key.clone(),
                    format!(" : goto {ext_chain}"),
                );
            }
            if !r.has_external {
                element("no-endpoint-nodeports", key, no_endpoints.clone());
            }
        }
        let mut unit = ServiceUnit::default();
        if !r.has_endpoints {
            unit.elements = elements;
            return unit;
        }
        let mut svc_rules = Vec::new();
        let mut local_rules = Vec::new();
        if r.has_internal
            && let Some(cidr) = &opts.cluster_cidr
        {
            let masq = format!(
                "ip daddr {} ip saddr != {cidr} jump mark-for-masquerade",
                sp.cluster_ip
            );
            if r.internal_local {
                local_rules.push(masq);
            } else {
                svc_rules.push(masq);
            }
        }
        if r.uses_external_chain {
            let mut rules = Vec::new();
            if !r.external_local {
                // Endpoints may be on other nodes: replies must come back here.
                rules.push("jump mark-for-masquerade".to_string());
            } else {
                // Only this node's endpoints: the client's address is kept,
                // except for pods and the node itself, which are sent to any
                // endpoint as if they had gone out to a load balancer.
                if let Some(cidr) = &opts.cluster_cidr {
                    rules.push(format!(
                        "ip saddr {cidr} goto {svc_chain} comment \"short-circuit pod traffic\""
                    ));
                }
                rules.push(
                    "fib saddr type local jump mark-for-masquerade comment \"masquerade local traffic\""
                        .to_string(),
                );
                rules.push(format!(
                    "fib saddr type local goto {svc_chain} comment \"short-circuit local traffic\""
                ));
            }
            if r.has_external {
                rules.push(format!("goto {external_policy_chain}"));
            }
            unit.chains.push((ext_chain, rules));
        }
        if !r.cluster.is_empty() {
            svc_rules.extend(endpoint_rules(sp, r.cluster));
            unit.chains.push((svc_chain, svc_rules));
        }
        if !r.local.is_empty() {
            local_rules.extend(endpoint_rules(sp, r.local));
            unit.chains.push((local_chain, local_rules));
        }
        for ep in &r.reachable {
            if let Some(timeout) = sp.affinity_timeout {
                let ep_base = endpoint_name_base(sp, ep);
                let set = format!("affinity-{ep_base}");
                unit.chains.push((
                    format!("endpoint-{ep_base}"),
                    vec![
                        format!("update @{set} {{ ip saddr }}"),
                        format!("meta l4proto {proto} dnat to {ep}"),
                    ],
                ));
                // "dynamic" as kube-proxy: the kernel adds it to a set that
                // rules update, and an `add` without it would then differ.
                unit.sets.push((
                    set,
                    format!("type ipv4_addr ; flags dynamic,timeout ; timeout {timeout}s ;"),
                ));
            }
            elements.push((
                ElementKey {
                    set: "hairpin-connections",
                    key: format!("{} . {}", ep.ip, ep.ip),
                },
                String::new(),
            ));
        }
        unit.elements = elements;
        unit
    }
}

/// The rules of a policy chain (`service-`/`local-`) leading to `eps`: with
/// ClientIP affinity, first back to the endpoint a client had within the
/// timeout (`ip saddr @affinity-…`), then through the endpoint chains; else
/// straight to a DNAT. `numgen random mod (N-i) 0` picks the i-th of N with
/// probability 1/(N-i), so each gets 1/N.
fn endpoint_rules(sp: &ServicePort, eps: &[Endpoint]) -> Vec<String> {
    let proto = sp.protocol.as_str();
    let mut rules = Vec::new();
    let affinity = sp.affinity_timeout.is_some();
    if affinity {
        for ep in eps {
            let ep_base = endpoint_name_base(sp, ep);
            rules.push(format!(
                "ip saddr @affinity-{ep_base} goto endpoint-{ep_base}"
            ));
        }
    }
    let n = eps.len();
    for (i, ep) in eps.iter().enumerate() {
        let pick = if i + 1 < n {
            format!("numgen random mod {} 0 ", n - i)
        } else {
            String::new()
        };
        if affinity {
            rules.push(format!(
                "{pick}goto endpoint-{}",
                endpoint_name_base(sp, ep)
            ));
        } else {
            rules.push(format!("{pick}meta l4proto {proto} dnat to {ep}"));
        }
    }
    rules
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
        let mut old_sets: BTreeMap<String, String> = BTreeMap::new();
        let mut new_sets: BTreeMap<String, String> = BTreeMap::new();
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
            old_sets: &mut BTreeMap<String, String>,
        ) {
            for (key, _) in &unit.elements {
                touched
                    .entry(key.clone())
                    .or_insert_with(|| rs.elements.get(key).map(|e| e.0.clone()));
                rs.release(key);
            }
            old_chains.extend(unit.chains);
            old_sets.extend(unit.sets);
        }
        for k in gone {
            if let Some((_, unit)) = self.services.remove(&k) {
                drop_unit(self, unit, &mut touched, &mut old_chains, &mut old_sets);
            }
        }
        for sp in changed {
            if let Some((_, unit)) = self.services.remove(&sp.name) {
                drop_unit(self, unit, &mut touched, &mut old_chains, &mut old_sets);
            }
            let unit = ServiceUnit::render(sp, &self.opts);
            for (key, rest) in &unit.elements {
                touched
                    .entry(key.clone())
                    .or_insert_with(|| self.elements.get(key).map(|e| e.0.clone()));
                self.hold(key.clone(), rest.clone());
            }
            new_chains.extend(unit.chains.iter().cloned());
            new_sets.extend(unit.sets.iter().cloned());
            self.services.insert(sp.name.clone(), (sp.clone(), unit));
        }

        // A set whose definition changed (its timeout) is deleted and added
        // again, so every chain using it is emptied first and rewritten.
        let redefined: Vec<&String> = new_sets
            .iter()
            .filter(|(n, def)| old_sets.get(*n).is_some_and(|old| old != *def))
            .map(|(n, _)| n)
            .collect();
        let uses_redefined = |rules: &[String]| {
            redefined
                .iter()
                .any(|set| rules.iter().any(|r| r.contains(&format!("@{set} "))))
        };
        let mut out = String::new();
        let mut change = NftChange::default();
        for (chain, rules) in &new_chains {
            match old_chains.get(chain) {
                Some(old) if old == rules && !uses_redefined(rules) => continue,
                Some(_) => {
                    let _ = writeln!(out, "flush chain {TABLE} {chain}");
                }
                None => {
                    let _ = writeln!(out, "add chain {TABLE} {chain}");
                }
            }
            change.written_chains.push(chain.clone());
        }
        change.deleted_chains = old_chains
            .keys()
            .filter(|c| !new_chains.contains_key(*c))
            .cloned()
            .collect();
        // Flush all before deleting any chain (a stale external chain jumps
        // to a stale service chain) or set (stale chains may use it).
        for chain in &change.deleted_chains {
            let _ = writeln!(out, "flush chain {TABLE} {chain}");
        }
        for set in &redefined {
            let _ = writeln!(out, "delete set {TABLE} {set}");
        }
        for (set, def) in &new_sets {
            if !old_sets.contains_key(set) || redefined.contains(&set) {
                let _ = writeln!(out, "add set {TABLE} {set} {{ {def} }}");
            }
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
        for chain in &change.deleted_chains {
            let _ = writeln!(out, "delete chain {TABLE} {chain}");
        }
        for set in old_sets.keys().filter(|s| !new_sets.contains_key(*s)) {
            let _ = writeln!(out, "delete set {TABLE} {set}");
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
        let sets: BTreeMap<&String, &String> = self
            .services
            .values()
            .flat_map(|(_, u)| u.sets.iter().map(|(n, d)| (n, d)))
            .collect();
        for (set, def) in &sets {
            let _ = writeln!(out, "add set {TABLE} {set} {{ {def} }}");
        }
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
    use crate::proxy::model::tests::{
        NODE, client_ip_affinity, external_ip_node_port, internal_traffic_local, local_and_remote,
        plain_slice, service, spec,
    };

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
        let e1 = plain_slice(
            "ns1",
            "svc1",
            "p80",
            80,
            &["10.180.0.1", "10.180.0.2", "10.180.0.3"],
        );
        let e3 = plain_slice("ns3", "svc3", "p80", 80, &["10.180.0.3"]);
        let model = ProxyModel::build([&svc1, &svc3, &svc6], [&e1, &e3], NODE);
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
        let ea = plain_slice("ns", "a", "", 80, &["10.1.0.1"]);
        let eb2 = plain_slice("ns", "b", "", 80, &["10.1.0.2", "10.1.0.3"]);
        let eb1 = plain_slice("ns", "b", "", 80, &["10.1.0.3"]);
        let mut rs = NftRuleset::render(&ProxyModel::build([&a, &b], [&ea, &eb2], NODE), &opts());
        let after = ProxyModel::build([&a, &b], [&ea, &eb1], NODE);
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
        let none = ProxyModel::build([&a, &b], [&ea], NODE);
        let change = rs.update(&none);
        let text = &change.text;
        assert_eq!(change.deleted_chains, ["service-6447YX26-ns/b/tcp/"]);
        assert!(
            text.contains("delete element ip kubelab-proxy service-ips { 10.96.0.2 . tcp . 80 }\n"),
            "{text}"
        );
        assert!(text.contains("add element ip kubelab-proxy no-endpoint-services { 10.96.0.2 . tcp . 80 comment \"ns/b\" : goto reject-chain }\n"), "{text}");
        assert!(
            text.starts_with("flush chain ip kubelab-proxy service-6447YX26-ns/b/tcp/\n"),
            "{text}"
        );
        assert!(
            text.ends_with("delete chain ip kubelab-proxy service-6447YX26-ns/b/tcp/\n"),
            "{text}"
        );
        // An endpoint IP shared by two services stays a hairpin element
        // until neither has it.
        let a2 = plain_slice("ns", "a", "", 80, &["10.1.0.1", "10.1.0.3"]);
        rs.update(&ProxyModel::build([&a, &b], [&a2, &eb1], NODE));
        let change = rs.update(&ProxyModel::build([&a, &b], [&ea, &eb1], NODE));
        assert!(!change.text.contains("hairpin"), "{}", change.text);
        assert_eq!(
            rs.update(&ProxyModel::build([&a, &b], [&ea, &eb1], NODE))
                .text,
            ""
        );
    }

    /// The lines of a full table that are not the fixed skeleton.
    fn body(rs: &NftRuleset) -> Vec<String> {
        let fixed = skeleton(&opts());
        rs.full_text()
            .lines()
            .filter(|l| !fixed.contains(&format!("{l}\n")))
            .skip(2)
            .map(String::from)
            .collect()
    }

    #[test]
    fn client_ip_affinity_uses_a_timeout_set_per_endpoint_as_kube_proxy() {
        let (svc, eps) = client_ip_affinity();
        let rs = NftRuleset::render(&ProxyModel::build([&svc], [&eps], NODE), &opts());
        let t = "ip kubelab-proxy";
        let e1 = "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80";
        let e2 = "2ZNDXFAB-ns1/svc1/tcp/p80__10.180.0.2/80";
        let svc_chain = "service-ULMVA6XW-ns1/svc1/tcp/p80";
        assert_eq!(
            body(&rs),
            [
                format!(
                    "add set {t} affinity-{e2} {{ type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }}"
                ),
                format!(
                    "add set {t} affinity-{e1} {{ type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }}"
                ),
                format!("add chain {t} endpoint-{e2}"),
                format!("add chain {t} endpoint-{e1}"),
                format!("add chain {t} {svc_chain}"),
                format!("add rule {t} endpoint-{e2} update @affinity-{e2} {{ ip saddr }}"),
                format!("add rule {t} endpoint-{e2} meta l4proto tcp dnat to 10.180.0.2:80"),
                format!("add rule {t} endpoint-{e1} update @affinity-{e1} {{ ip saddr }}"),
                format!("add rule {t} endpoint-{e1} meta l4proto tcp dnat to 10.180.0.1:80"),
                format!(
                    "add rule {t} {svc_chain} ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade"
                ),
                format!("add rule {t} {svc_chain} ip saddr @affinity-{e1} goto endpoint-{e1}"),
                format!("add rule {t} {svc_chain} ip saddr @affinity-{e2} goto endpoint-{e2}"),
                format!("add rule {t} {svc_chain} numgen random mod 2 0 goto endpoint-{e1}"),
                format!("add rule {t} {svc_chain} goto endpoint-{e2}"),
                format!("add element {t} cluster-ips {{ 172.30.0.41 }}"),
                format!(
                    "add element {t} hairpin-connections {{ 10.180.0.1 . 10.180.0.1 , 10.180.0.2 . 10.180.0.2 }}"
                ),
                format!("add element {t} nodeport-ips {{ 192.168.0.2 }}"),
                format!(
                    "add element {t} service-ips {{ 172.30.0.41 . tcp . 80 : goto {svc_chain} }}"
                ),
            ]
        );
    }

    #[test]
    fn affinity_changes_rewrite_chains_and_sets_in_a_partial_update() {
        use k8s_openapi::api::core::v1::{ClientIPConfig, SessionAffinityConfig};
        let (mut svc, eps) = client_ip_affinity();
        let mut rs = NftRuleset::render(&ProxyModel::build([&svc], [&eps], NODE), &opts());
        let t = "ip kubelab-proxy";
        let e1 = "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80";
        let e2 = "2ZNDXFAB-ns1/svc1/tcp/p80__10.180.0.2/80";
        let svc_chain = "service-ULMVA6XW-ns1/svc1/tcp/p80";
        // A new timeout: the sets are made again, and the chains using them
        // emptied before and refilled after.
        spec(&mut svc).session_affinity_config = Some(SessionAffinityConfig {
            client_ip: Some(ClientIPConfig {
                timeout_seconds: Some(60),
            }),
        });
        let m = ProxyModel::build([&svc], [&eps], NODE);
        let change = rs.update(&m);
        let lines: Vec<&str> = change.text.lines().collect();
        assert_eq!(
            lines[..7],
            [
                format!("flush chain {t} endpoint-{e2}"),
                format!("flush chain {t} endpoint-{e1}"),
                format!("flush chain {t} {svc_chain}"),
                format!("delete set {t} affinity-{e2}"),
                format!("delete set {t} affinity-{e1}"),
                format!(
                    "add set {t} affinity-{e2} {{ type ipv4_addr ; flags dynamic,timeout ; timeout 60s ; }}"
                ),
                format!(
                    "add set {t} affinity-{e1} {{ type ipv4_addr ; flags dynamic,timeout ; timeout 60s ; }}"
                ),
            ]
        );
        assert_eq!(lines.len(), 7 + 9, "{}", change.text);
        assert_eq!(rs, NftRuleset::render(&m, &opts()));
        // An endpoint gone: its chain, then its set, are deleted.
        let eps1 = plain_slice("ns1", "svc1", "p80", 80, &["10.180.0.2"]);
        let change = rs.update(&ProxyModel::build([&svc], [&eps1], NODE));
        assert_eq!(change.deleted_chains, [format!("endpoint-{e1}")]);
        assert!(
            change.text.ends_with(&format!(
                "delete chain {t} endpoint-{e1}\ndelete set {t} affinity-{e1}\n"
            )),
            "{}",
            change.text
        );
        // Affinity off: back to a DNAT in the service chain.
        spec(&mut svc).session_affinity = None;
        let m = ProxyModel::build([&svc], [&eps1], NODE);
        let change = rs.update(&m);
        assert_eq!(
            change.text,
            format!(
                "flush chain {t} {svc_chain}\n\
                 flush chain {t} endpoint-{e2}\n\
                 add rule {t} {svc_chain} ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade\n\
                 add rule {t} {svc_chain} meta l4proto tcp dnat to 10.180.0.2:80\n\
                 delete chain {t} endpoint-{e2}\n\
                 delete set {t} affinity-{e2}\n"
            )
        );
        assert_eq!(rs, NftRuleset::render(&m, &opts()));
    }

    #[test]
    fn external_ips_and_external_traffic_policy_local() {
        let mut svc = external_ip_node_port();
        let eps = local_and_remote("ns2", "svc2", ["10.180.0.2", "10.180.1.2"]);
        let t = "ip kubelab-proxy";
        let base = "42NFTM6N-ns2/svc2/tcp/p80";
        let ext = format!("external-{base}");
        // Cluster policy: the external IP leads to the external chain, which
        // masquerades.
        let rs = NftRuleset::render(&ProxyModel::build([&svc], [&eps], NODE), &opts());
        let b = body(&rs);
        assert!(
            b.contains(&format!("add rule {t} {ext} jump mark-for-masquerade")),
            "{b:#?}"
        );
        assert!(
            b.contains(&format!("add rule {t} {ext} goto service-{base}")),
            "{b:#?}"
        );
        assert!(b.contains(&format!("add element {t} service-ips {{ 172.30.0.42 . tcp . 80 : goto service-{base} , 192.168.99.22 . tcp . 80 : goto {ext} }}")), "{b:#?}");

        // Local policy: no SNAT; pods and the node short-circuit to all
        // endpoints, everyone else reaches this node's.
        spec(&mut svc).external_traffic_policy = Some("Local".into());
        let mut rs = NftRuleset::render(&ProxyModel::build([&svc], [&eps], NODE), &opts());
        assert_eq!(
            body(&rs),
            [
                format!("add chain {t} {ext}"),
                format!("add chain {t} local-{base}"),
                format!("add chain {t} service-{base}"),
                format!(
                    "add rule {t} {ext} ip saddr 10.0.0.0/8 goto service-{base} comment \"short-circuit pod traffic\""
                ),
                format!(
                    "add rule {t} {ext} fib saddr type local jump mark-for-masquerade comment \"masquerade local traffic\""
                ),
                format!(
                    "add rule {t} {ext} fib saddr type local goto service-{base} comment \"short-circuit local traffic\""
                ),
                format!("add rule {t} {ext} goto local-{base}"),
                format!("add rule {t} local-{base} meta l4proto tcp dnat to 10.180.0.2:80"),
                format!(
                    "add rule {t} service-{base} ip daddr 172.30.0.42 ip saddr != 10.0.0.0/8 jump mark-for-masquerade"
                ),
                format!(
                    "add rule {t} service-{base} numgen random mod 2 0 meta l4proto tcp dnat to 10.180.0.2:80"
                ),
                format!("add rule {t} service-{base} meta l4proto tcp dnat to 10.180.1.2:80"),
                format!("add element {t} cluster-ips {{ 172.30.0.42 }}"),
                format!(
                    "add element {t} hairpin-connections {{ 10.180.0.2 . 10.180.0.2 , 10.180.1.2 . 10.180.1.2 }}"
                ),
                format!("add element {t} nodeport-ips {{ 192.168.0.2 }}"),
                format!(
                    "add element {t} service-ips {{ 172.30.0.42 . tcp . 80 : goto service-{base} , 192.168.99.22 . tcp . 80 : goto {ext} }}"
                ),
                format!("add element {t} service-nodeports {{ tcp . 3002 : goto {ext} }}"),
            ]
        );
        // This node loses its endpoint: the local chain goes, and external
        // traffic that is not short-circuited is dropped.
        let elsewhere = ProxyModel::build([&svc], [&eps], "node3");
        let change = rs.update(&elsewhere);
        assert_eq!(change.deleted_chains, [format!("local-{base}")]);
        assert_eq!(change.written_chains, std::slice::from_ref(&ext));
        assert!(change.text.contains(&format!("add element {t} no-endpoint-nodeports {{ tcp . 3002 comment \"ns2/svc2:p80\" : drop }}\n")), "{}", change.text);
        assert!(change.text.contains(&format!("add element {t} no-endpoint-services {{ 192.168.99.22 . tcp . 80 comment \"ns2/svc2:p80\" : drop }}\n")), "{}", change.text);
        assert!(
            !change.text.contains(&format!("goto local-{base}")),
            "{}",
            change.text
        );
        assert_eq!(rs, NftRuleset::render(&elsewhere, &opts()));
    }

    #[test]
    fn internal_traffic_policy_local_uses_a_local_chain_or_drops() {
        let (svc, eps) = internal_traffic_local();
        let t = "ip kubelab-proxy";
        let local = "local-4AT6LBPK-ns3/svc3/tcp/p80";
        let rs = NftRuleset::render(&ProxyModel::build([&svc], [&eps], NODE), &opts());
        assert_eq!(
            body(&rs),
            [
                format!("add chain {t} {local}"),
                format!(
                    "add rule {t} {local} ip daddr 172.30.0.43 ip saddr != 10.0.0.0/8 jump mark-for-masquerade"
                ),
                format!("add rule {t} {local} meta l4proto tcp dnat to 10.180.0.3:80"),
                format!("add element {t} cluster-ips {{ 172.30.0.43 }}"),
                format!("add element {t} hairpin-connections {{ 10.180.0.3 . 10.180.0.3 }}"),
                format!("add element {t} nodeport-ips {{ 192.168.0.2 }}"),
                format!("add element {t} service-ips {{ 172.30.0.43 . tcp . 80 : goto {local} }}"),
            ]
        );
        let rs = NftRuleset::render(&ProxyModel::build([&svc], [&eps], "node3"), &opts());
        assert_eq!(
            body(&rs),
            [
                format!("add element {t} cluster-ips {{ 172.30.0.43 }}"),
                format!(
                    "add element {t} no-endpoint-services {{ 172.30.0.43 . tcp . 80 comment \"ns3/svc3:p80\" : drop }}"
                ),
                format!("add element {t} nodeport-ips {{ 192.168.0.2 }}"),
            ]
        );
    }
}
