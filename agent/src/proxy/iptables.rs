//! The proxy's rules as `iptables-restore` input, in kube-proxy's layout and
//! wording, so `iptables-save` on a node reads like one running kube-proxy:
//!
//! - nat `KUBE-SERVICES` (from PREROUTING and OUTPUT): one rule per service
//!   port matching its cluster IP, jumping to `KUBE-SVC-<hash>` (`KUBE-SVL-`
//!   under `internalTrafficPolicy: Local`), and one per external IP, jumping
//!   to `KUBE-EXT-<hash>`; its last rule sends traffic to local addresses on
//!   to `KUBE-NODEPORTS`.
//! - `KUBE-SVC-<hash>` (all endpoints) / `KUBE-SVL-<hash>` (this node's, for
//!   the Local policies): marks traffic from outside `--cluster-cidr` for
//!   masquerade; with ClientIP affinity, sends a client back to the endpoint
//!   it had (`-m recent --rcheck`); then picks an endpoint at random
//!   (`-m statistic`, probability 1/(n-i) for the i-th of n, so each gets 1/n).
//! - `KUBE-SEP-<hash>`: marks hairpin traffic (from the endpoint itself),
//!   records the client for affinity (`-m recent --set`), DNAT.
//! - `KUBE-EXT-<hash>` (NodePort, external IPs): marks for masquerade, then
//!   `KUBE-SVC-`; under `externalTrafficPolicy: Local` no SNAT, pods and the
//!   node go to `KUBE-SVC-`, everyone else to `KUBE-SVL-`.
//! - `KUBE-MARK-MASQ` sets mark 0x4000; `KUBE-POSTROUTING` masquerades it.
//! - filter `KUBE-SERVICES` / `KUBE-EXTERNAL-SERVICES`: REJECT for service
//!   ports without endpoints, so clients are refused at once; DROP for a
//!   Local policy without an endpoint on this node.
//!
//! Everything here is pure: [`Ruleset::render`] from the model, and
//! [`render_restore`] writes all of it or only the parts a partial sync needs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use sha2::{Digest, Sha256};

use super::model::{Endpoint, Protocol, ProxyModel, ServicePort, ServicePortName};

/// The mark (bit 14, kube-proxy's default) on packets that need SNAT.
pub const MASQ_MARK: &str = "0x4000";

pub const KUBE_SERVICES: &str = "KUBE-SERVICES";
pub const KUBE_NODEPORTS: &str = "KUBE-NODEPORTS";
pub const KUBE_POSTROUTING: &str = "KUBE-POSTROUTING";
pub const KUBE_MARK_MASQ: &str = "KUBE-MARK-MASQ";
pub const KUBE_EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";
pub const KUBE_FORWARD: &str = "KUBE-FORWARD";

/// The nat chains every ruleset has, in kube-proxy's declaration order.
pub const NAT_TOP_CHAINS: [&str; 4] = [
    KUBE_SERVICES,
    KUBE_NODEPORTS,
    KUBE_POSTROUTING,
    KUBE_MARK_MASQ,
];
/// The filter chains every ruleset has.
pub const FILTER_TOP_CHAINS: [&str; 3] = [KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD];
/// Filter chains kube-proxy also creates; removed by cleanup if present.
const FILTER_CLEANUP_ONLY: [&str; 3] =
    ["KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL", "KUBE-PROXY-CANARY"];
/// Prefixes of the per-service nat chains (kube-proxy's, including kinds this
/// proxy does not write, so cleanup and stale-chain removal find them too).
const SERVICE_CHAIN_PREFIXES: [&str; 5] = [
    "KUBE-SVC-",
    "KUBE-SEP-",
    "KUBE-EXT-",
    "KUBE-SVL-",
    "KUBE-FW-",
];

/// kube-proxy switches to this many endpoints to "large cluster mode": rules
/// of endpoint chains lose their comments (fewer bytes to parse and store).
pub const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// `--cluster-cidr`: traffic to a cluster IP from outside it is masqueraded.
    pub cluster_cidr: Option<String>,
    /// `MASQUERADE --random-fully` (iptables ≥ 1.6.2).
    pub random_fully: bool,
}

/// RFC 4648 base32 of the first 10 bytes of `digest`: 16 characters, the part
/// kube-proxy keeps.
fn base32_16(digest: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(16);
    for chunk in digest[..10].chunks(5) {
        let n = chunk.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64);
        for i in (0..8).rev() {
            out.push(ALPHABET[((n >> (i * 5)) & 31) as usize] as char);
        }
    }
    out
}

fn hash16(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
    }
    base32_16(&h.finalize())
}

/// `KUBE-SVC-` + hash of the service port name and protocol.
pub fn service_chain(name: &ServicePortName, protocol: Protocol) -> String {
    format!(
        "KUBE-SVC-{}",
        hash16(&[&name.to_string(), protocol.as_str()])
    )
}

/// `KUBE-EXT-`: the NodePort entry of a service (same hash as its SVC chain).
pub fn external_chain(name: &ServicePortName, protocol: Protocol) -> String {
    format!(
        "KUBE-EXT-{}",
        hash16(&[&name.to_string(), protocol.as_str()])
    )
}

/// `KUBE-SVL-`: the endpoints of a Local traffic policy (same hash as its SVC chain).
pub fn local_chain(name: &ServicePortName, protocol: Protocol) -> String {
    format!(
        "KUBE-SVL-{}",
        hash16(&[&name.to_string(), protocol.as_str()])
    )
}

/// `KUBE-SEP-` + hash of the service port name, protocol and `ip:port`.
pub fn endpoint_chain(name: &ServicePortName, protocol: Protocol, ep: &Endpoint) -> String {
    format!(
        "KUBE-SEP-{}",
        hash16(&[&name.to_string(), protocol.as_str(), &ep.to_string()])
    )
}

/// Whether `chain` is a per-service chain of this proxy's (or kube-proxy's) kind.
pub fn is_service_chain(chain: &str) -> bool {
    SERVICE_CHAIN_PREFIXES.iter().any(|p| chain.starts_with(p))
}

/// kube-proxy's `%0.10f` of 1/n.
pub fn probability(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}

/// `"text"` when it has a space, as kube-proxy quotes comments.
fn comment(text: &str) -> String {
    if text.contains(' ') {
        format!("-m comment --comment \"{text}\"")
    } else {
        format!("-m comment --comment {text}")
    }
}

/// A rule in a built-in chain that leads into the proxy's chains. kube-proxy
/// inserts these with `iptables -I` and never rewrites the built-in chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpRule {
    pub table: &'static str,
    pub chain: &'static str,
    pub target: &'static str,
    pub comment: &'static str,
    pub new_only: bool,
}

impl JumpRule {
    /// The rule after `-A <chain> `, as iptables-save prints it.
    pub fn spec(&self) -> String {
        let ct = if self.new_only {
            "-m conntrack --ctstate NEW "
        } else {
            ""
        };
        format!(
            "{ct}-m comment --comment \"{}\" -j {}",
            self.comment, self.target
        )
    }

    /// Whether iptables-save output of this rule's table has it.
    pub fn present_in(&self, saved: &SavedTable) -> bool {
        saved.rules.iter().any(|(chain, spec)| {
            chain == self.chain
                && spec.ends_with(&format!("-j {}", self.target))
                && spec.contains(self.comment)
        })
    }
}

/// kube-proxy's jump rules (`iptablesJumpChains`), less the load-balancer
/// firewall and health-check ones this proxy has no use for.
pub fn jump_rules() -> Vec<JumpRule> {
    let j = |table, chain, target, comment, new_only| JumpRule {
        table,
        chain,
        target,
        comment,
        new_only,
    };
    vec![
        j(
            "filter",
            "INPUT",
            KUBE_EXTERNAL_SERVICES,
            "kubernetes externally-visible service portals",
            true,
        ),
        j(
            "filter",
            "FORWARD",
            KUBE_EXTERNAL_SERVICES,
            "kubernetes externally-visible service portals",
            true,
        ),
        j(
            "filter",
            "FORWARD",
            KUBE_SERVICES,
            "kubernetes service portals",
            true,
        ),
        j(
            "filter",
            "OUTPUT",
            KUBE_SERVICES,
            "kubernetes service portals",
            true,
        ),
        j(
            "filter",
            "FORWARD",
            KUBE_FORWARD,
            "kubernetes forwarding rules",
            false,
        ),
        j(
            "nat",
            "OUTPUT",
            KUBE_SERVICES,
            "kubernetes service portals",
            false,
        ),
        j(
            "nat",
            "PREROUTING",
            KUBE_SERVICES,
            "kubernetes service portals",
            false,
        ),
        j(
            "nat",
            "POSTROUTING",
            KUBE_POSTROUTING,
            "kubernetes postrouting rules",
            false,
        ),
    ]
}

/// The rules of one service port: the nat chains it owns and what it adds to
/// the shared chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRules {
    /// `KUBE-SVC-`, `KUBE-SVL-`, `KUBE-EXT-` (those in use), then the
    /// `KUBE-SEP-` chains; empty without endpoints.
    pub chains: Vec<String>,
    /// The `-A` lines of those chains.
    pub rules: Vec<String>,
    /// Its lines in nat `KUBE-SERVICES` and `KUBE-NODEPORTS`.
    pub services_rules: Vec<String>,
    pub nodeports_rules: Vec<String>,
    /// Its lines in filter `KUBE-SERVICES` and `KUBE-EXTERNAL-SERVICES` (REJECT).
    pub filter_rules: Vec<String>,
}

impl ServiceRules {
    /// kube-proxy's `syncProxyRules` for one service port, in its order:
    /// capture rules (cluster IP, external IPs, node port) or filter rules
    /// for destinations with nowhere to go, then the SVC/SVL/EXT chains and
    /// one SEP chain per endpoint they lead to.
    pub fn render(sp: &ServicePort, opts: &RenderOptions, large_cluster: bool) -> ServiceRules {
        let name = sp.name.to_string();
        let proto = sp.protocol.as_str();
        let r = sp.routing();
        let svc_chain = service_chain(&sp.name, sp.protocol);
        let svl_chain = local_chain(&sp.name, sp.protocol);
        let ext_chain = external_chain(&sp.name, sp.protocol);
        let internal_chain = if r.internal_local {
            &svl_chain
        } else {
            &svc_chain
        };
        let external_policy_chain = if r.external_local {
            &svl_chain
        } else {
            &svc_chain
        };
        let dest = format!(
            "-m {proto} -p {proto} -d {} --dport {}",
            sp.cluster_ip, sp.port
        );
        let mut out = ServiceRules {
            chains: vec![],
            rules: vec![],
            services_rules: vec![],
            nodeports_rules: vec![],
            filter_rules: vec![],
        };
        // No endpoints anywhere: refused. Endpoints, but none on this node
        // for a Local policy: dropped.
        let (no_route, verdict) = if !r.has_endpoints {
            (comment(&format!("{name} has no endpoints")), "REJECT")
        } else {
            (comment(&format!("{name} has no local endpoints")), "DROP")
        };
        let cluster_ip_comment = comment(&format!("{name} cluster IP"));
        if r.has_internal {
            out.services_rules.push(format!(
                "-A {KUBE_SERVICES} {cluster_ip_comment} {dest} -j {internal_chain}"
            ));
        } else {
            out.filter_rules
                .push(format!("-A {KUBE_SERVICES} {no_route} {dest} -j {verdict}"));
        }
        for ip in &sp.external_ips {
            let ext_dest = format!("-m {proto} -p {proto} -d {ip} --dport {}", sp.port);
            if r.has_endpoints {
                out.services_rules.push(format!(
                    "-A {KUBE_SERVICES} {} {ext_dest} -j {ext_chain}",
                    comment(&format!("{name} external IP"))
                ));
            }
            if !r.has_external {
                out.filter_rules.push(format!(
                    "-A {KUBE_EXTERNAL_SERVICES} {no_route} {ext_dest} -j {verdict}"
                ));
            }
        }
        if let Some(np) = sp.node_port {
            if r.has_endpoints {
                out.nodeports_rules.push(format!(
                    "-A {KUBE_NODEPORTS} {} -m {proto} -p {proto} --dport {np} -j {ext_chain}",
                    comment(&name)
                ));
            }
            if !r.has_external {
                out.filter_rules.push(format!(
                    "-A {KUBE_EXTERNAL_SERVICES} {no_route} -m addrtype --dst-type LOCAL -m {proto} -p {proto} --dport {np} -j {verdict}"
                ));
            }
        }
        if !r.has_endpoints {
            return out;
        }
        if !r.cluster.is_empty() {
            out.chains.push(svc_chain.clone());
        }
        if !r.local.is_empty() {
            out.chains.push(svl_chain.clone());
        }
        if r.has_internal
            && let Some(cidr) = &opts.cluster_cidr
        {
            // Traffic to the cluster IP from outside the pod network (the node
            // itself, or routed in from elsewhere) may leave the node again.
            out.rules.push(format!(
                "-A {internal_chain} {cluster_ip_comment} {dest} ! -s {cidr} -j {KUBE_MARK_MASQ}"
            ));
        }
        if r.uses_external_chain {
            out.chains.push(ext_chain.clone());
            if !r.external_local {
                // Endpoints may be on other nodes: replies must come back here.
                out.rules.push(format!(
                    "-A {ext_chain} {} -j {KUBE_MARK_MASQ}",
                    comment(&format!(
                        "masquerade traffic for {name} external destinations"
                    ))
                ));
            } else {
                // Only this node's endpoints: the client's address is kept,
                // except for pods and the node itself, which are sent to any
                // endpoint as if they had gone out to a load balancer.
                if let Some(cidr) = &opts.cluster_cidr {
                    out.rules.push(format!(
                        "-A {ext_chain} {} -s {cidr} -j {svc_chain}",
                        comment(&format!("pod traffic for {name} external destinations"))
                    ));
                }
                out.rules.push(format!(
                    "-A {ext_chain} {} -m addrtype --src-type LOCAL -j {KUBE_MARK_MASQ}",
                    comment(&format!(
                        "masquerade LOCAL traffic for {name} external destinations"
                    ))
                ));
                out.rules.push(format!(
                    "-A {ext_chain} {} -m addrtype --src-type LOCAL -j {svc_chain}",
                    comment(&format!(
                        "route LOCAL traffic for {name} external destinations"
                    ))
                ));
            }
            if r.has_external {
                out.rules
                    .push(format!("-A {ext_chain} -j {external_policy_chain}"));
            }
        }
        let sep_comment = if large_cluster {
            String::new()
        } else {
            format!("{} ", comment(&name))
        };
        for (chain, eps) in [(&svc_chain, r.cluster), (&svl_chain, r.local)] {
            if !eps.is_empty() {
                endpoint_jumps(&mut out.rules, sp, chain, eps, large_cluster);
            }
        }
        for ep in &r.reachable {
            let sep = endpoint_chain(&sp.name, sp.protocol, ep);
            out.rules.push(format!(
                "-A {sep} {sep_comment}-s {} -j {KUBE_MARK_MASQ}",
                ep.ip
            ));
            // Affinity: remember which endpoint this client got.
            let recent = if sp.affinity_timeout.is_some() {
                format!("-m recent --name {sep} --set ")
            } else {
                String::new()
            };
            out.rules.push(format!(
                "-A {sep} {sep_comment}{recent}-m {proto} -p {proto} -j DNAT --to-destination {ep}"
            ));
            out.chains.push(sep);
        }
        out
    }
}

/// The rules of a policy chain (`KUBE-SVC-`/`KUBE-SVL-`) leading to `eps`:
/// with ClientIP affinity, first back to the endpoint a client had within
/// the timeout, then one at random (`-m statistic`, probability 1/(n-i) for
/// the i-th of n, so each gets 1/n).
fn endpoint_jumps(
    rules: &mut Vec<String>,
    sp: &ServicePort,
    chain: &str,
    eps: &[Endpoint],
    large_cluster: bool,
) {
    let name = sp.name.to_string();
    let head = |ep: &Endpoint| {
        let mut rule = format!("-A {chain} ");
        if !large_cluster {
            rule.push_str(&comment(&format!("{name} -> {ep}")));
            rule.push(' ');
        }
        rule
    };
    if let Some(timeout) = sp.affinity_timeout {
        for ep in eps {
            let sep = endpoint_chain(&sp.name, sp.protocol, ep);
            rules.push(format!(
                "{}-m recent --name {sep} --rcheck --seconds {timeout} --reap -j {sep}",
                head(ep)
            ));
        }
    }
    let n = eps.len();
    for (i, ep) in eps.iter().enumerate() {
        let mut rule = head(ep);
        if i + 1 < n {
            let _ = write!(
                rule,
                "-m statistic --mode random --probability {} ",
                probability(n - i)
            );
        }
        let _ = write!(rule, "-j {}", endpoint_chain(&sp.name, sp.protocol, ep));
        rules.push(rule);
    }
}

/// The whole desired state, kept per service so a sync can write parts of it
/// and re-render only the services that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub services: BTreeMap<ServicePortName, ServiceRules>,
    /// What each service's rules were rendered from.
    ports: BTreeMap<ServicePortName, ServicePort>,
    large_cluster: bool,
    pub opts: RenderOptions,
}

/// What [`Ruleset::update`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RulesetChange {
    /// Services whose chains must be (re)written.
    pub services: Vec<ServicePortName>,
    /// Chains no service owns any more.
    pub stale_chains: Vec<String>,
}

impl Ruleset {
    pub fn render(model: &ProxyModel, opts: &RenderOptions) -> Ruleset {
        let large = model.endpoint_count() > LARGE_CLUSTER_ENDPOINTS;
        Ruleset {
            services: model
                .services
                .iter()
                .map(|(k, sp)| (k.clone(), ServiceRules::render(sp, opts, large)))
                .collect(),
            ports: model.services.clone(),
            large_cluster: large,
            opts: opts.clone(),
        }
    }

    /// Brings the ruleset to `model`, re-rendering only service ports that
    /// differ from what they were rendered from (all of them when the
    /// cluster crosses the large-cluster size).
    pub fn update(&mut self, model: &ProxyModel) -> RulesetChange {
        let large = model.endpoint_count() > LARGE_CLUSTER_ENDPOINTS;
        let mut change = RulesetChange::default();
        if large != self.large_cluster {
            let fresh = Ruleset::render(model, &self.opts);
            let keep = fresh.service_chains();
            change.stale_chains = self
                .service_chains()
                .into_iter()
                .filter(|c| !keep.contains(c))
                .map(String::from)
                .collect();
            change.services = fresh.services.keys().cloned().collect();
            *self = fresh;
            return change;
        }
        let removed: Vec<ServicePortName> = self
            .ports
            .keys()
            .filter(|k| !model.services.contains_key(*k))
            .cloned()
            .collect();
        for k in removed {
            self.ports.remove(&k);
            if let Some(old) = self.services.remove(&k) {
                change.stale_chains.extend(old.chains);
            }
        }
        for (k, sp) in &model.services {
            if self.ports.get(k) == Some(sp) {
                continue;
            }
            let new = ServiceRules::render(sp, &self.opts, large);
            self.ports.insert(k.clone(), sp.clone());
            match self.services.insert(k.clone(), new) {
                Some(old) => {
                    let new = &self.services[k];
                    change.stale_chains.extend(
                        old.chains
                            .iter()
                            .filter(|c| !new.chains.contains(c))
                            .cloned(),
                    );
                    if old.chains != new.chains || old.rules != new.rules {
                        change.services.push(k.clone());
                    }
                }
                None => change.services.push(k.clone()),
            }
        }
        change
    }

    /// Every per-service nat chain of the ruleset.
    pub fn service_chains(&self) -> BTreeSet<&str> {
        self.services
            .values()
            .flat_map(|s| s.chains.iter().map(String::as_str))
            .collect()
    }

    /// The rules of the filter chains (REJECTs, then KUBE-FORWARD's).
    pub fn filter_rules(&self) -> String {
        let mut out = String::new();
        for s in self.services.values() {
            for r in &s.filter_rules {
                out.push_str(r);
                out.push('\n');
            }
        }
        let mark = format!("{MASQ_MARK}/{MASQ_MARK}");
        let _ = writeln!(
            out,
            "-A {KUBE_FORWARD} -m conntrack --ctstate INVALID -j DROP"
        );
        let _ = writeln!(
            out,
            "-A {KUBE_FORWARD} -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {mark} -j ACCEPT"
        );
        let _ = writeln!(
            out,
            "-A {KUBE_FORWARD} -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
        );
        out
    }

    /// The rules of nat KUBE-SERVICES and KUBE-NODEPORTS; the jump to
    /// KUBE-NODEPORTS must stay last.
    pub fn top_level_rules(&self) -> String {
        let mut out = String::new();
        for s in self.services.values() {
            for r in &s.services_rules {
                out.push_str(r);
                out.push('\n');
            }
        }
        // Not loopback: that would need route_localnet, which this proxy
        // leaves off (kube-proxy's --iptables-localhost-nodeports=false).
        let _ = writeln!(
            out,
            "-A {KUBE_SERVICES} -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j {KUBE_NODEPORTS}"
        );
        for s in self.services.values() {
            for r in &s.nodeports_rules {
                out.push_str(r);
                out.push('\n');
            }
        }
        out
    }

    /// KUBE-POSTROUTING and KUBE-MARK-MASQ.
    pub fn base_rules(&self) -> String {
        let mark = format!("{MASQ_MARK}/{MASQ_MARK}");
        let random = if self.opts.random_fully {
            " --random-fully"
        } else {
            ""
        };
        format!(
            "-A {KUBE_POSTROUTING} -m mark ! --mark {mark} -j RETURN\n\
             -A {KUBE_POSTROUTING} -j MARK --xor-mark {MASQ_MARK}\n\
             -A {KUBE_POSTROUTING} -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE{random}\n\
             -A {KUBE_MARK_MASQ} -j MARK --or-mark {MASQ_MARK}\n"
        )
    }
}

/// What one `iptables-restore --noflush` writes. Declaring a chain (`:NAME`)
/// flushes it, so only chains that are declared are touched; everything else
/// in the tables (other programs' rules, unchanged services) stays.
#[derive(Debug, Clone, Default)]
pub struct WritePlan<'a> {
    /// The filter chains (all three, rewritten whole).
    pub filter: bool,
    /// nat KUBE-SERVICES and KUBE-NODEPORTS.
    pub top_level: bool,
    /// KUBE-POSTROUTING and KUBE-MARK-MASQ.
    pub base: bool,
    /// Services whose chains are (re)written.
    pub services: Vec<&'a ServicePortName>,
    /// nat chains to flush and delete (`-X`).
    pub stale_chains: Vec<String>,
    /// Jump rules to insert (missing from the built-in chains).
    pub jumps: Vec<JumpRule>,
}

impl WritePlan<'_> {
    /// Everything, as a full sync writes it.
    pub fn full(ruleset: &Ruleset) -> WritePlan<'_> {
        WritePlan {
            filter: true,
            top_level: true,
            base: true,
            services: ruleset.services.keys().collect(),
            stale_chains: vec![],
            jumps: vec![],
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.filter
            && !self.top_level
            && !self.base
            && self.services.is_empty()
            && self.stale_chains.is_empty()
            && self.jumps.is_empty()
    }
}

/// The `iptables-restore --noflush` input for `plan`.
pub fn render_restore(ruleset: &Ruleset, plan: &WritePlan) -> String {
    let mut out = String::new();
    let jumps = |out: &mut String, table: &str| {
        for j in plan.jumps.iter().filter(|j| j.table == table) {
            let _ = writeln!(out, "-I {} 1 {}", j.chain, j.spec());
        }
    };
    let filter_jumps = plan.jumps.iter().any(|j| j.table == "filter");
    if plan.filter || filter_jumps {
        out.push_str("*filter\n");
        if plan.filter {
            for c in FILTER_TOP_CHAINS {
                let _ = writeln!(out, ":{c} - [0:0]");
            }
            out.push_str(&ruleset.filter_rules());
        }
        jumps(&mut out, "filter");
        out.push_str("COMMIT\n");
    }
    let nat_jumps = plan.jumps.iter().any(|j| j.table == "nat");
    if !(plan.top_level
        || plan.base
        || !plan.services.is_empty()
        || !plan.stale_chains.is_empty()
        || nat_jumps)
    {
        return out;
    }
    out.push_str("*nat\n");
    if plan.top_level {
        let _ = writeln!(out, ":{KUBE_SERVICES} - [0:0]\n:{KUBE_NODEPORTS} - [0:0]");
    }
    if plan.base {
        let _ = writeln!(
            out,
            ":{KUBE_POSTROUTING} - [0:0]\n:{KUBE_MARK_MASQ} - [0:0]"
        );
    }
    let written: Vec<&ServiceRules> = plan
        .services
        .iter()
        .filter_map(|k| ruleset.services.get(*k))
        .collect();
    for s in &written {
        for c in &s.chains {
            let _ = writeln!(out, ":{c} - [0:0]");
        }
    }
    for c in &plan.stale_chains {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    if plan.base {
        out.push_str(&ruleset.base_rules());
    }
    if plan.top_level {
        out.push_str(&ruleset.top_level_rules());
    }
    for s in &written {
        for r in &s.rules {
            out.push_str(r);
            out.push('\n');
        }
    }
    for c in &plan.stale_chains {
        let _ = writeln!(out, "-X {c}");
    }
    jumps(&mut out, "nat");
    out.push_str("COMMIT\n");
    out
}

/// The whole ruleset as one `iptables-restore --noflush` input (no stale
/// chains, no jump rules): what a first sync writes.
pub fn render_ruleset(model: &ProxyModel, opts: &RenderOptions) -> String {
    let ruleset = Ruleset::render(model, opts);
    render_restore(&ruleset, &WritePlan::full(&ruleset))
}

/// One table of `iptables-save` output: its chains and `-A` rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedTable {
    pub chains: BTreeSet<String>,
    /// `(chain, rest of the rule after "-A <chain> ")`.
    pub rules: Vec<(String, String)>,
}

impl SavedTable {
    /// Parses the `*<table>` section of `iptables-save` output.
    pub fn parse(save: &str, table: &str) -> SavedTable {
        let mut out = SavedTable::default();
        let mut inside = false;
        for line in save.lines() {
            if let Some(t) = line.strip_prefix('*') {
                inside = t == table;
            } else if !inside {
                continue;
            } else if let Some(c) = line.strip_prefix(':') {
                if let Some(name) = c.split_whitespace().next() {
                    out.chains.insert(name.to_string());
                }
            } else if let Some((chain, rest)) =
                line.strip_prefix("-A ").and_then(|r| r.split_once(' '))
            {
                out.rules.push((chain.to_string(), rest.to_string()));
            }
        }
        out
    }
}

/// Input for `iptables-restore --noflush` that removes everything the proxy
/// (or kube-proxy's iptables mode) installed in `nat` and `filter`: jump rules
/// into its chains, then the chains. `None` when there is nothing to remove.
pub fn render_cleanup(nat: &SavedTable, filter: &SavedTable) -> Option<String> {
    let nat_ours = |c: &str| NAT_TOP_CHAINS.contains(&c) || is_service_chain(c);
    let filter_ours = |c: &str| FILTER_TOP_CHAINS.contains(&c) || FILTER_CLEANUP_ONLY.contains(&c);
    render_chain_removal(nat, &nat_ours, filter, &filter_ours)
}

/// Input for `iptables-restore --noflush` that removes the chains `ours`
/// selects in `nat` and `filter`, and every rule elsewhere that jumps into
/// them. `None` when there is nothing to remove.
pub fn render_chain_removal(
    nat: &SavedTable,
    nat_ours: &dyn Fn(&str) -> bool,
    filter: &SavedTable,
    filter_ours: &dyn Fn(&str) -> bool,
) -> Option<String> {
    let mut out = String::new();
    for (name, saved, ours) in [("filter", filter, filter_ours), ("nat", nat, nat_ours)] {
        let chains: Vec<&String> = saved.chains.iter().filter(|c| ours(c)).collect();
        // Rules of other chains that jump into ours (the jump rules).
        let jumps: Vec<&(String, String)> = saved
            .rules
            .iter()
            .filter(|(chain, spec)| {
                !ours(chain)
                    && spec
                        .rsplit_once("-j ")
                        .is_some_and(|(_, t)| ours(t.split_whitespace().next().unwrap_or("")))
            })
            .collect();
        if chains.is_empty() && jumps.is_empty() {
            continue;
        }
        let _ = writeln!(out, "*{name}");
        for c in &chains {
            let _ = writeln!(out, ":{c} - [0:0]");
        }
        for (chain, spec) in jumps {
            let _ = writeln!(out, "-D {chain} {spec}");
        }
        for c in &chains {
            let _ = writeln!(out, "-X {c}");
        }
        out.push_str("COMMIT\n");
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model::tests::{
        EndpointSpec, NODE, client_ip_affinity, external_ip_node_port, internal_traffic_local,
        local_and_remote, plain_slice, service, slice, spec,
    };

    fn name(ns: &str, svc: &str, port: &str) -> ServicePortName {
        ServicePortName {
            namespace: ns.into(),
            name: svc.into(),
            port: port.into(),
        }
    }

    fn opts() -> RenderOptions {
        RenderOptions {
            cluster_cidr: Some("10.0.0.0/8".into()),
            random_fully: true,
        }
    }

    #[test]
    fn chain_names_are_kube_proxys_hashes() {
        // The values kube-proxy's own tests expect for these names.
        assert_eq!(
            service_chain(&name("ns1", "svc1", "p80"), Protocol::Tcp),
            "KUBE-SVC-XPGD46QRK7WJZT7O"
        );
        assert_eq!(
            service_chain(&name("ns2", "svc2", "p80"), Protocol::Tcp),
            "KUBE-SVC-GNZBNJ2PO5MGZ6GT"
        );
        assert_eq!(
            external_chain(&name("ns2", "svc2", "p80"), Protocol::Tcp),
            "KUBE-EXT-GNZBNJ2PO5MGZ6GT"
        );
        assert_eq!(
            service_chain(&name("ns2", "svc2", "p8080"), Protocol::Tcp),
            "KUBE-SVC-2VJB64SDSIJUP5T6"
        );
        let ep = Endpoint {
            ip: "10.180.0.1".parse().unwrap(),
            port: 80,
        };
        assert_eq!(
            endpoint_chain(&name("ns1", "svc1", "p80"), Protocol::Tcp, &ep),
            "KUBE-SEP-SXIVWICOYRO3J4NJ"
        );
        // Protocol is part of the identity.
        assert_ne!(
            service_chain(&name("ns1", "svc1", "p80"), Protocol::Udp),
            "KUBE-SVC-XPGD46QRK7WJZT7O"
        );
    }

    #[test]
    fn one_service_one_endpoint_renders_exactly_kube_proxys_lines() {
        let svc = service("ns1", "svc1", "ClusterIP", "172.30.0.41", &[("p80", 80, 0)]);
        let eps = plain_slice("ns1", "svc1", "p80", 80, &["10.180.0.1"]);
        let model = ProxyModel::build([&svc], [&eps], NODE);
        let text = render_ruleset(&model, &opts());
        let want = "\
*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
:KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-SERVICES -m comment --comment \"ns1/svc1:p80 cluster IP\" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment \"ns1/svc1:p80 cluster IP\" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment \"ns1/svc1:p80 -> 10.180.0.1:80\" -j KUBE-SEP-SXIVWICOYRO3J4NJ
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
COMMIT
";
        assert_eq!(text, want);
    }

    #[test]
    fn endpoints_get_the_probability_series_of_kube_proxy() {
        let svc = service("ns1", "web", "ClusterIP", "10.96.0.10", &[("", 80, 0)]);
        let eps = plain_slice(
            "ns1",
            "web",
            "",
            8080,
            &[
                "10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6",
            ],
        );
        let rs = Ruleset::render(&ProxyModel::build([&svc], [&eps], NODE), &opts());
        let probs: Vec<Option<&str>> = rs
            .services
            .values()
            .next()
            .unwrap()
            .rules
            .iter()
            .filter(|r| r.contains("-j KUBE-SEP-"))
            .map(|r| {
                r.split("--probability ")
                    .nth(1)
                    .map(|p| p.split(' ').next().unwrap())
            })
            .collect();
        assert_eq!(
            probs,
            [
                Some("0.1666666667"),
                Some("0.2000000000"),
                Some("0.2500000000"),
                Some("0.3333333333"),
                Some("0.5000000000"),
                None
            ]
        );
        assert_eq!(probability(3), "0.3333333333");
        assert_eq!(probability(7), "0.1428571429");
    }

    #[test]
    fn a_service_without_endpoints_is_rejected_in_filter_and_absent_from_nat() {
        let svc = service(
            "ns1",
            "gone",
            "NodePort",
            "10.96.0.20",
            &[("http", 80, 30080)],
        );
        let model = ProxyModel::build([&svc], [], NODE);
        let rs = Ruleset::render(&model, &opts());
        let s = &rs.services[&name("ns1", "gone", "http")];
        assert!(s.chains.is_empty() && s.rules.is_empty() && s.services_rules.is_empty());
        assert_eq!(
            s.filter_rules,
            [
                "-A KUBE-SERVICES -m comment --comment \"ns1/gone:http has no endpoints\" -m tcp -p tcp -d 10.96.0.20 --dport 80 -j REJECT",
                "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"ns1/gone:http has no endpoints\" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30080 -j REJECT",
            ]
        );
        let text = render_ruleset(&model, &opts());
        assert!(
            !text.contains("10.96.0.20 --dport 80 -j KUBE-SVC"),
            "{text}"
        );
    }

    #[test]
    fn node_ports_go_through_an_external_chain_that_masquerades() {
        let svc = service(
            "ns3",
            "svc3",
            "NodePort",
            "172.30.0.43",
            &[("p80", 80, 3003)],
        );
        let eps = plain_slice("ns3", "svc3", "p80", 80, &["10.180.0.3"]);
        let rs = Ruleset::render(
            &ProxyModel::build([&svc], [&eps], NODE),
            &RenderOptions::default(),
        );
        let s = &rs.services[&name("ns3", "svc3", "p80")];
        assert_eq!(
            s.nodeports_rules,
            [
                "-A KUBE-NODEPORTS -m comment --comment ns3/svc3:p80 -m tcp -p tcp --dport 3003 -j KUBE-EXT-X27LE4BHSL4DOUIK"
            ]
        );
        assert!(s.rules.contains(&"-A KUBE-EXT-X27LE4BHSL4DOUIK -m comment --comment \"masquerade traffic for ns3/svc3:p80 external destinations\" -j KUBE-MARK-MASQ".to_string()));
        assert!(
            s.rules
                .contains(&"-A KUBE-EXT-X27LE4BHSL4DOUIK -j KUBE-SVC-X27LE4BHSL4DOUIK".to_string())
        );
        // Without --cluster-cidr there is no off-cluster masquerade rule.
        assert!(!s.rules.iter().any(|r| r.contains("! -s")));
        // Without --random-fully support, plain MASQUERADE.
        assert!(rs.base_rules().contains("-j MASQUERADE\n"));
        // The nodeports jump is the last KUBE-SERVICES rule.
        let top = rs.top_level_rules();
        let last_services = top
            .lines()
            .rfind(|l| l.starts_with("-A KUBE-SERVICES"))
            .unwrap();
        assert!(last_services.ends_with("-j KUBE-NODEPORTS"), "{top}");
    }

    #[test]
    fn large_clusters_drop_endpoint_comments() {
        let svc = service("ns", "big", "ClusterIP", "10.96.0.1", &[("", 80, 0)]);
        let ips: Vec<String> = (0..1001)
            .map(|i| format!("10.2.{}.{}", i / 250, i % 250 + 1))
            .collect();
        let eps: Vec<EndpointSpec> = ips
            .iter()
            .map(|ip| (ip.as_str(), None, None, None))
            .collect();
        let s = slice("ns", "big", "", 80, &eps);
        let rs = Ruleset::render(&ProxyModel::build([&svc], [&s], NODE), &opts());
        let rules = &rs.services.values().next().unwrap().rules;
        assert!(
            rules
                .iter()
                .filter(|r| r.contains("KUBE-SEP-"))
                .all(|r| !r.contains("--comment"))
        );
    }

    #[test]
    fn partial_plans_declare_only_what_they_write_and_delete_stale_chains() {
        let svc = service("ns1", "svc1", "ClusterIP", "172.30.0.41", &[("p80", 80, 0)]);
        let eps = plain_slice("ns1", "svc1", "p80", 80, &["10.180.0.1"]);
        let rs = Ruleset::render(&ProxyModel::build([&svc], [&eps], NODE), &opts());
        let key = name("ns1", "svc1", "p80");
        let plan = WritePlan {
            services: vec![&key],
            stale_chains: vec!["KUBE-SEP-AAAAAAAAAAAAAAAA".into()],
            ..Default::default()
        };
        let text = render_restore(&rs, &plan);
        assert!(!text.contains("*filter"));
        assert!(!text.contains(":KUBE-SERVICES"));
        assert!(text.contains(":KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]\n"));
        assert!(text.ends_with(":KUBE-SEP-AAAAAAAAAAAAAAAA - [0:0]\n-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment \"ns1/svc1:p80 cluster IP\" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ\n-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment \"ns1/svc1:p80 -> 10.180.0.1:80\" -j KUBE-SEP-SXIVWICOYRO3J4NJ\n-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ\n-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80\n-X KUBE-SEP-AAAAAAAAAAAAAAAA\nCOMMIT\n"), "{text}");
        assert!(WritePlan::default().is_empty());
        assert_eq!(render_restore(&rs, &WritePlan::default()), "");
    }

    #[test]
    fn updates_rerender_only_changed_services_and_match_a_fresh_render() {
        let a = service("ns", "a", "ClusterIP", "10.96.0.1", &[("", 80, 0)]);
        let b = service("ns", "b", "NodePort", "10.96.0.2", &[("", 80, 30002)]);
        let ea = plain_slice("ns", "a", "", 80, &["10.1.0.1"]);
        let eb = plain_slice("ns", "b", "", 80, &["10.1.0.2", "10.1.0.3"]);
        let eb1 = plain_slice("ns", "b", "", 80, &["10.1.0.3"]);
        let mut rs = Ruleset::render(&ProxyModel::build([&a, &b], [&ea, &eb], NODE), &opts());
        let after = ProxyModel::build([&a, &b], [&ea, &eb1], NODE);
        let change = rs.update(&after);
        assert_eq!(change.services, [name("ns", "b", "")]);
        let gone = endpoint_chain(
            &name("ns", "b", ""),
            Protocol::Tcp,
            &"10.1.0.2:80"
                .parse::<std::net::SocketAddrV4>()
                .map(|a| Endpoint {
                    ip: *a.ip(),
                    port: a.port(),
                })
                .unwrap(),
        );
        assert_eq!(change.stale_chains, [gone]);
        assert_eq!(rs, Ruleset::render(&after, &opts()));
        // Service a deleted: all its chains are stale, nothing to write.
        let only_b = ProxyModel::build([&b], [&eb1], NODE);
        let change = rs.update(&only_b);
        assert!(change.services.is_empty());
        assert_eq!(change.stale_chains.len(), 2);
        assert_eq!(rs, Ruleset::render(&only_b, &opts()));
        assert_eq!(rs.update(&only_b), RulesetChange::default());
    }

    #[test]
    fn jump_rules_are_found_in_iptables_save_output_and_cleanup_removes_ours_only() {
        let save = "\
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-abc - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A POSTROUTING -s 10.1.0.0/24 -j CNI-abc
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES
COMMIT
";
        let nat = SavedTable::parse(save, "nat");
        let filter = SavedTable::parse(save, "filter");
        assert!(nat.chains.contains("CNI-abc"));
        let jumps = jump_rules();
        let present: Vec<bool> = jumps
            .iter()
            .map(|j| j.present_in(if j.table == "nat" { &nat } else { &filter }))
            .collect();
        assert_eq!(
            present,
            [true, false, false, false, false, false, true, false]
        );
        assert_eq!(
            jumps[0].spec(),
            "-m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES"
        );
        let cleanup = render_cleanup(&nat, &filter).unwrap();
        assert_eq!(
            cleanup,
            "*filter\n-D INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\nCOMMIT\n\
             *nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]\n-D PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n-X KUBE-SERVICES\n-X KUBE-SVC-XPGD46QRK7WJZT7O\nCOMMIT\n"
        );
        assert_eq!(
            render_cleanup(&SavedTable::default(), &SavedTable::default()),
            None
        );
    }

    #[test]
    fn client_ip_affinity_sends_a_client_back_to_its_endpoint_with_recent() {
        let (mut svc, eps) = client_ip_affinity();
        let rs = Ruleset::render(&ProxyModel::build([&svc], [&eps], NODE), &opts());
        let s = &rs.services[&name("ns1", "svc1", "p80")];
        assert_eq!(
            s.chains,
            [
                "KUBE-SVC-XPGD46QRK7WJZT7O",
                "KUBE-SEP-SXIVWICOYRO3J4NJ",
                "KUBE-SEP-LXVODXWDISEETFEF"
            ]
        );
        assert_eq!(
            s.rules,
            [
                "-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment \"ns1/svc1:p80 cluster IP\" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ",
                "-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment \"ns1/svc1:p80 -> 10.180.0.1:80\" -m recent --name KUBE-SEP-SXIVWICOYRO3J4NJ --rcheck --seconds 10800 --reap -j KUBE-SEP-SXIVWICOYRO3J4NJ",
                "-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment \"ns1/svc1:p80 -> 10.180.0.2:80\" -m recent --name KUBE-SEP-LXVODXWDISEETFEF --rcheck --seconds 10800 --reap -j KUBE-SEP-LXVODXWDISEETFEF",
                "-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment \"ns1/svc1:p80 -> 10.180.0.1:80\" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-SXIVWICOYRO3J4NJ",
                "-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment \"ns1/svc1:p80 -> 10.180.0.2:80\" -j KUBE-SEP-LXVODXWDISEETFEF",
                "-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ",
                "-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m recent --name KUBE-SEP-SXIVWICOYRO3J4NJ --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80",
                "-A KUBE-SEP-LXVODXWDISEETFEF -m comment --comment ns1/svc1:p80 -s 10.180.0.2 -j KUBE-MARK-MASQ",
                "-A KUBE-SEP-LXVODXWDISEETFEF -m comment --comment ns1/svc1:p80 -m recent --name KUBE-SEP-LXVODXWDISEETFEF --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80",
            ]
        );
        // A timeout of its own; a changed timeout is a changed service.
        use k8s_openapi::api::core::v1::{ClientIPConfig, SessionAffinityConfig};
        spec(&mut svc).session_affinity_config = Some(SessionAffinityConfig {
            client_ip: Some(ClientIPConfig {
                timeout_seconds: Some(60),
            }),
        });
        let mut rs = rs;
        let change = rs.update(&ProxyModel::build([&svc], [&eps], NODE));
        assert_eq!(change.services, [name("ns1", "svc1", "p80")]);
        assert!(change.stale_chains.is_empty());
        let rules = &rs.services[&name("ns1", "svc1", "p80")].rules;
        assert_eq!(
            rules
                .iter()
                .filter(|r| r.contains("--rcheck --seconds 60 --reap"))
                .count(),
            2
        );
    }

    #[test]
    fn external_ips_go_through_the_external_chain_that_masquerades() {
        let svc = external_ip_node_port();
        let eps = plain_slice("ns2", "svc2", "p80", 80, &["10.180.0.2"]);
        let rs = Ruleset::render(&ProxyModel::build([&svc], [&eps], NODE), &opts());
        let s = &rs.services[&name("ns2", "svc2", "p80")];
        assert_eq!(
            s.services_rules,
            [
                "-A KUBE-SERVICES -m comment --comment \"ns2/svc2:p80 cluster IP\" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT",
                "-A KUBE-SERVICES -m comment --comment \"ns2/svc2:p80 external IP\" -m tcp -p tcp -d 192.168.99.22 --dport 80 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT",
            ]
        );
        assert_eq!(
            s.nodeports_rules,
            [
                "-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp --dport 3002 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT"
            ]
        );
        assert_eq!(
            s.chains,
            [
                "KUBE-SVC-GNZBNJ2PO5MGZ6GT",
                "KUBE-EXT-GNZBNJ2PO5MGZ6GT",
                "KUBE-SEP-RS4RBKLTHTF2IUXJ"
            ]
        );
        assert_eq!(
            s.rules[1..3],
            [
                "-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment \"masquerade traffic for ns2/svc2:p80 external destinations\" -j KUBE-MARK-MASQ",
                "-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -j KUBE-SVC-GNZBNJ2PO5MGZ6GT",
            ]
        );
        assert!(s.filter_rules.is_empty());
        // External IPs alone (a ClusterIP service) make the external chain too.
        let mut cip = service("ns2", "svc2", "ClusterIP", "172.30.0.42", &[("p80", 80, 0)]);
        spec(&mut cip).external_ips = Some(vec!["192.168.99.22".into()]);
        let rs = Ruleset::render(&ProxyModel::build([&cip], [&eps], NODE), &opts());
        let s = &rs.services[&name("ns2", "svc2", "p80")];
        assert!(s.chains.contains(&"KUBE-EXT-GNZBNJ2PO5MGZ6GT".to_string()));
        assert!(s.nodeports_rules.is_empty());
        // Without endpoints the external IP is refused, like the node port.
        let rs = Ruleset::render(&ProxyModel::build([&svc], [], NODE), &opts());
        assert_eq!(
            rs.services[&name("ns2", "svc2", "p80")].filter_rules,
            [
                "-A KUBE-SERVICES -m comment --comment \"ns2/svc2:p80 has no endpoints\" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j REJECT",
                "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"ns2/svc2:p80 has no endpoints\" -m tcp -p tcp -d 192.168.99.22 --dport 80 -j REJECT",
                "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"ns2/svc2:p80 has no endpoints\" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3002 -j REJECT",
            ]
        );
    }

    #[test]
    fn external_traffic_policy_local_keeps_the_source_and_uses_local_endpoints() {
        let mut svc = external_ip_node_port();
        spec(&mut svc).external_traffic_policy = Some("Local".into());
        let eps = local_and_remote("ns2", "svc2", ["10.180.0.2", "10.180.1.2"]);
        let mut rs = Ruleset::render(&ProxyModel::build([&svc], [&eps], NODE), &opts());
        let s = &rs.services[&name("ns2", "svc2", "p80")];
        assert_eq!(
            s.chains,
            [
                "KUBE-SVC-GNZBNJ2PO5MGZ6GT",
                "KUBE-SVL-GNZBNJ2PO5MGZ6GT",
                "KUBE-EXT-GNZBNJ2PO5MGZ6GT",
                "KUBE-SEP-RS4RBKLTHTF2IUXJ",
                "KUBE-SEP-J7UNSSMXXN3UTZD6"
            ]
        );
        assert_eq!(
            s.rules[..8],
            [
                "-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment \"ns2/svc2:p80 cluster IP\" -m tcp -p tcp -d 172.30.0.42 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ",
                "-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment \"pod traffic for ns2/svc2:p80 external destinations\" -s 10.0.0.0/8 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT",
                "-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment \"masquerade LOCAL traffic for ns2/svc2:p80 external destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ",
                "-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment \"route LOCAL traffic for ns2/svc2:p80 external destinations\" -m addrtype --src-type LOCAL -j KUBE-SVC-GNZBNJ2PO5MGZ6GT",
                "-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -j KUBE-SVL-GNZBNJ2PO5MGZ6GT",
                "-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment \"ns2/svc2:p80 -> 10.180.0.2:80\" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-RS4RBKLTHTF2IUXJ",
                "-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment \"ns2/svc2:p80 -> 10.180.1.2:80\" -j KUBE-SEP-J7UNSSMXXN3UTZD6",
                "-A KUBE-SVL-GNZBNJ2PO5MGZ6GT -m comment --comment \"ns2/svc2:p80 -> 10.180.0.2:80\" -j KUBE-SEP-RS4RBKLTHTF2IUXJ",
            ]
        );
        // No external traffic is masqueraded unconditionally.
        assert!(!s.rules.iter().any(|r| r.contains("masquerade traffic for")));
        assert!(s.filter_rules.is_empty());

        // On a node without an endpoint of its own: external traffic from
        // elsewhere is dropped in filter; pods and the node still get through.
        let elsewhere = ProxyModel::build([&svc], [&eps], "node3");
        let change = rs.update(&elsewhere);
        assert_eq!(change.stale_chains, ["KUBE-SVL-GNZBNJ2PO5MGZ6GT"]);
        let s = &rs.services[&name("ns2", "svc2", "p80")];
        assert_eq!(
            s.filter_rules,
            [
                "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"ns2/svc2:p80 has no local endpoints\" -m tcp -p tcp -d 192.168.99.22 --dport 80 -j DROP",
                "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"ns2/svc2:p80 has no local endpoints\" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3002 -j DROP",
            ]
        );
        assert!(s.rules.iter().all(|r| !r.contains("KUBE-SVL-")));
        assert_eq!(
            s.rules
                .iter()
                .filter(|r| r.starts_with("-A KUBE-EXT-"))
                .count(),
            3,
            "{:#?}",
            s.rules
        );
        assert_eq!(rs, Ruleset::render(&elsewhere, &opts()));
    }

    #[test]
    fn internal_traffic_policy_local_sends_the_cluster_ip_to_local_endpoints_or_drops() {
        let (svc, eps) = internal_traffic_local();
        let rs = Ruleset::render(&ProxyModel::build([&svc], [&eps], NODE), &opts());
        let s = &rs.services[&name("ns3", "svc3", "p80")];
        assert_eq!(
            s.services_rules,
            [
                "-A KUBE-SERVICES -m comment --comment \"ns3/svc3:p80 cluster IP\" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j KUBE-SVL-X27LE4BHSL4DOUIK"
            ]
        );
        assert_eq!(
            s.chains,
            ["KUBE-SVL-X27LE4BHSL4DOUIK", "KUBE-SEP-OYPFS5VJICHGATKP"]
        );
        assert_eq!(
            s.rules,
            [
                "-A KUBE-SVL-X27LE4BHSL4DOUIK -m comment --comment \"ns3/svc3:p80 cluster IP\" -m tcp -p tcp -d 172.30.0.43 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ",
                "-A KUBE-SVL-X27LE4BHSL4DOUIK -m comment --comment \"ns3/svc3:p80 -> 10.180.0.3:80\" -j KUBE-SEP-OYPFS5VJICHGATKP",
                "-A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment ns3/svc3:p80 -s 10.180.0.3 -j KUBE-MARK-MASQ",
                "-A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80",
            ]
        );
        let rs = Ruleset::render(&ProxyModel::build([&svc], [&eps], "node3"), &opts());
        let s = &rs.services[&name("ns3", "svc3", "p80")];
        assert!(s.chains.is_empty() && s.services_rules.is_empty());
        assert_eq!(
            s.filter_rules,
            [
                "-A KUBE-SERVICES -m comment --comment \"ns3/svc3:p80 has no local endpoints\" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j DROP"
            ]
        );
    }
}
