//! The service proxy's rules applied for real, in network namespaces this
//! test creates (never the host's): the proxy's own sync code runs on a
//! thread that entered the namespace (`setns` changes only the calling
//! thread, and the iptables-restore / nft it starts inherit it), and the
//! results are read back with `iptables-save` / `nft` there. A traffic test
//! puts three endpoint namespaces running busybox httpd behind a ClusterIP.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kubelab_agent::proxy::apply::{self, Iptables, IptablesBackend};
use kubelab_agent::proxy::iptables::{
    SavedTable, endpoint_chain, external_chain, local_chain, service_chain,
};
use kubelab_agent::proxy::model::{Endpoint, Protocol, ProxyModel, ServicePort, ServicePortName};
use kubelab_agent::proxy::nftables::{self, NftOptions, NftSyncer};
use kubelab_agent::proxy::sync::{IptablesSyncer, RuleSyncer};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `ip netns add`; deleted (with everything in it) on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!(
            "kl-px-{}-{tag}{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add {name}");
        let ns = Netns { name };
        ns.sh("ip link set lo up");
        ns
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// Runs a command line inside the namespace; its stdout, asserting success.
    fn sh(&self, cmd: &str) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.path()))
            .args(["sh", "-c", cmd])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "in {}: {cmd}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a thread inside the namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        std::thread::spawn(move || {
            let file = std::fs::File::open(path).unwrap();
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .expect("thread in the netns panicked")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn spn(name: &str, port: &str) -> ServicePortName {
    ServicePortName {
        namespace: "default".into(),
        name: name.into(),
        port: port.into(),
    }
}

fn ep(ip: &str, port: u16) -> Endpoint {
    Endpoint {
        ip: ip.parse().unwrap(),
        port,
    }
}

fn service(name: &str, ip: &str, node_port: Option<u16>, eps: &[Endpoint]) -> ServicePort {
    let mut eps = eps.to_vec();
    eps.sort();
    ServicePort {
        name: spn(name, "http"),
        protocol: Protocol::Tcp,
        cluster_ip: ip.parse().unwrap(),
        port: 80,
        node_port,
        external_ips: vec![],
        affinity_timeout: None,
        external_local: false,
        internal_local: false,
        endpoints: eps,
        local_endpoints: vec![],
    }
}

fn model(services: Vec<ServicePort>) -> ProxyModel {
    ProxyModel {
        services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
    }
}

/// `iptables-save` of both tables, parsed, in the namespace.
fn saved(ns: &Netns, ipt: &Iptables) -> (SavedTable, SavedTable) {
    let ipt = ipt.clone();
    ns.run(move || (ipt.save("nat").unwrap(), ipt.save("filter").unwrap()))
}

fn chains_of(model: &ProxyModel, name: &str) -> Vec<String> {
    let s = &model.services[&spn(name, "http")];
    let mut out = vec![service_chain(&s.name, s.protocol)];
    if s.node_port.is_some() {
        out.push(external_chain(&s.name, s.protocol));
    }
    out.extend(
        s.endpoints
            .iter()
            .map(|e| endpoint_chain(&s.name, s.protocol, e)),
    );
    out
}

fn partial_sync_stale_chains_and_cleanup(backend: IptablesBackend) {
    let ns = Netns::new("ipt");
    let ipt = Iptables::with_backend(backend).unwrap();
    // Someone else's rules, which the proxy must leave alone.
    let tool = ipt.save_program().replace("-save", "");
    ns.sh(&format!(
        "{tool} -t nat -N OTHER && {tool} -t nat -A POSTROUTING -s 10.99.0.0/24 -j OTHER && {tool} -t filter -A INPUT -p tcp --dport 22 -j ACCEPT"
    ));
    let (nat0, filter0) = saved(&ns, &ipt);

    let m1 = model(vec![
        service(
            "web",
            "10.96.0.10",
            None,
            &[
                ep("10.1.0.1", 8080),
                ep("10.1.0.2", 8080),
                ep("10.1.0.3", 8080),
            ],
        ),
        service(
            "api",
            "10.96.0.11",
            Some(30080),
            &[ep("10.1.0.4", 9090), ep("10.1.0.5", 9090)],
        ),
        service("empty", "10.96.0.12", Some(30081), &[]),
    ]);
    let mut syncer = IptablesSyncer::new(ipt.clone(), Some("10.1.0.0/16".into()));
    let (mut syncer, first) = {
        let m = m1.clone();
        ns.run(move || {
            let o = syncer.sync(&m, false).unwrap();
            (syncer, o)
        })
    };
    assert!(first.full, "the first sync is full");

    // Only the project's chains were added, and every one of them.
    let (nat, filter) = saved(&ns, &ipt);
    let mut want: BTreeSet<String> = nat0.chains.clone();
    want.extend(
        [
            "KUBE-SERVICES",
            "KUBE-NODEPORTS",
            "KUBE-POSTROUTING",
            "KUBE-MARK-MASQ",
        ]
        .map(String::from),
    );
    want.extend(chains_of(&m1, "web"));
    want.extend(chains_of(&m1, "api"));
    assert_eq!(nat.chains, want, "nat chains after the first sync");
    let mut want_filter = filter0.chains.clone();
    want_filter
        .extend(["KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD"].map(String::from));
    assert_eq!(filter.chains, want_filter);
    // The foreign rules are still there, and the jump rules were inserted.
    for r in &nat0.rules {
        assert!(nat.rules.contains(r), "foreign rule {r:?} lost");
    }
    for r in &filter0.rules {
        assert!(filter.rules.contains(r), "foreign rule {r:?} lost");
    }
    let jumps = |t: &SavedTable, chain: &str, target: &str| {
        t.rules
            .iter()
            .filter(|(c, spec)| c == chain && spec.ends_with(&format!("-j {target}")))
            .count()
    };
    assert_eq!(jumps(&nat, "PREROUTING", "KUBE-SERVICES"), 1);
    assert_eq!(jumps(&nat, "OUTPUT", "KUBE-SERVICES"), 1);
    assert_eq!(jumps(&nat, "POSTROUTING", "KUBE-POSTROUTING"), 1);
    assert_eq!(jumps(&filter, "OUTPUT", "KUBE-SERVICES"), 1);
    assert_eq!(jumps(&filter, "INPUT", "KUBE-EXTERNAL-SERVICES"), 1);
    // The service without endpoints is refused in filter, for its cluster IP
    // and its node port, and has nothing in nat.
    let rejects: Vec<&String> = filter
        .rules
        .iter()
        .filter(|(_, s)| s.contains("-j REJECT"))
        .map(|(_, s)| s)
        .collect();
    assert_eq!(rejects.len(), 2, "{rejects:?}");
    assert!(
        rejects
            .iter()
            .all(|r| r.contains("default/empty:http has no endpoints"))
    );
    assert!(
        rejects.iter().any(|r| r.contains("-d 10.96.0.12/32"))
            && rejects.iter().any(|r| r.contains("--dport 30081")),
        "{rejects:?}"
    );
    assert!(!nat.rules.iter().any(|(_, s)| s.contains("10.96.0.12")));
    // Each SEP chain DNATs to its endpoint and masquerades its own traffic.
    let sep = endpoint_chain(&spn("web", "http"), Protocol::Tcp, &ep("10.1.0.2", 8080));
    let sep_rules: Vec<&String> = nat
        .rules
        .iter()
        .filter(|(c, _)| *c == sep)
        .map(|(_, s)| s)
        .collect();
    assert_eq!(sep_rules.len(), 2, "{sep_rules:?}");
    assert!(sep_rules[0].contains("-s 10.1.0.2") && sep_rules[0].ends_with("-j KUBE-MARK-MASQ"));
    assert!(sep_rules[1].ends_with("--to-destination 10.1.0.2:8080"));

    // A pod of "api" replaced: only api's chains are written, the old SEP goes.
    let mut m2 = m1.clone();
    m2.services.get_mut(&spn("api", "http")).unwrap().endpoints =
        vec![ep("10.1.0.4", 9090), ep("10.1.0.6", 9090)];
    let (mut syncer, second) = {
        let m = m2.clone();
        ns.run(move || {
            let o = syncer.sync(&m, false).unwrap();
            (syncer, o)
        })
    };
    assert!(!second.full);
    let written: BTreeSet<String> = second.written_chains.iter().cloned().collect();
    assert_eq!(written, chains_of(&m2, "api").into_iter().collect());
    let old_sep = endpoint_chain(&spn("api", "http"), Protocol::Tcp, &ep("10.1.0.5", 9090));
    assert_eq!(second.deleted_chains, vec![old_sep.clone()]);
    let declared: Vec<&str> = second
        .input
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert!(
        !declared.contains(&"KUBE-SERVICES"),
        "KUBE-SERVICES is unchanged: {}",
        second.input
    );
    assert!(!second.input.contains("*filter"), "{}", second.input);
    for c in chains_of(&m1, "web") {
        assert!(
            !second.input.contains(&c),
            "web's chain {c} written: {}",
            second.input
        );
    }
    let (nat, _) = saved(&ns, &ipt);
    assert!(
        !nat.chains.contains(&old_sep),
        "stale chain {old_sep} still there"
    );
    assert!(nat.chains.contains(&endpoint_chain(
        &spn("api", "http"),
        Protocol::Tcp,
        &ep("10.1.0.6", 9090)
    )));

    // "web" deleted: its chains vanish, KUBE-SERVICES is rewritten.
    let mut m3 = m2.clone();
    m3.services.remove(&spn("web", "http"));
    let (_, third) = {
        let m = m3.clone();
        ns.run(move || {
            let o = syncer.sync(&m, false).unwrap();
            (syncer, o)
        })
    };
    let deleted: BTreeSet<String> = third.deleted_chains.iter().cloned().collect();
    assert_eq!(deleted, chains_of(&m1, "web").into_iter().collect());
    assert!(third.input.contains(":KUBE-SERVICES - [0:0]\n"));
    let (nat, _) = saved(&ns, &ipt);
    assert!(!nat.rules.iter().any(|(_, s)| s.contains("10.96.0.10")));

    // A restarted proxy (no memory) with only "empty" left: its full sync
    // finds api's chains with iptables-save and deletes them, and adds no
    // second copy of the jump rules.
    let m4 = model(vec![service("empty", "10.96.0.12", Some(30081), &[])]);
    let restarted = IptablesSyncer::new(ipt.clone(), Some("10.1.0.0/16".into()));
    let (_, fourth) = {
        let m = m4.clone();
        let mut s = restarted;
        ns.run(move || {
            let o = s.sync(&m, false).unwrap();
            (s, o)
        })
    };
    assert!(fourth.full);
    let deleted: BTreeSet<String> = fourth.deleted_chains.iter().cloned().collect();
    assert_eq!(deleted, chains_of(&m2, "api").into_iter().collect());
    let (nat, filter) = saved(&ns, &ipt);
    assert_eq!(jumps(&nat, "PREROUTING", "KUBE-SERVICES"), 1);
    assert_eq!(jumps(&filter, "FORWARD", "KUBE-FORWARD"), 1);
    assert!(
        !nat.chains
            .iter()
            .any(|c| c.starts_with("KUBE-SVC-") || c.starts_with("KUBE-SEP-"))
    );

    // --cleanup leaves both tables exactly as they were.
    let report = ns.run(|| apply::cleanup().unwrap());
    assert_eq!(report.iptables.len(), 1, "one backend had rules");
    assert_eq!(report.iptables[0].0, backend);
    let (nat, filter) = saved(&ns, &ipt);
    assert_eq!(nat, nat0, "nat after cleanup");
    assert_eq!(filter, filter0, "filter after cleanup");
}

#[test]
fn iptables_nft_backend_partial_sync_stale_chains_and_cleanup() {
    partial_sync_stale_chains_and_cleanup(IptablesBackend::Nft);
}

#[test]
fn iptables_legacy_backend_partial_sync_stale_chains_and_cleanup() {
    partial_sync_stale_chains_and_cleanup(IptablesBackend::Legacy);
}

#[test]
fn nftables_partial_sync_and_cleanup() {
    let ns = Netns::new("nft");
    let opts = NftOptions {
        cluster_cidr: Some("10.1.0.0/16".into()),
        node_ips: vec!["192.168.77.1".parse().unwrap()],
    };
    let m1 = model(vec![
        service(
            "web",
            "10.96.0.10",
            None,
            &[ep("10.1.0.1", 8080), ep("10.1.0.2", 8080)],
        ),
        service("api", "10.96.0.11", Some(30080), &[ep("10.1.0.4", 9090)]),
        service("empty", "10.96.0.12", None, &[]),
    ]);
    let mut m2 = m1.clone();
    m2.services.get_mut(&spn("web", "http")).unwrap().endpoints = vec![ep("10.1.0.1", 8080)];
    m2.services.remove(&spn("api", "http"));
    let (first, second, listed1, listed2) = {
        let (m1, m2) = (m1.clone(), m2.clone());
        ns.run(move || {
            let mut s = NftSyncer::new(opts);
            let a = s.sync(&m1, false).unwrap();
            let l1 = nftables::listed_chains().unwrap();
            let b = s.sync(&m2, false).unwrap();
            let l2 = nftables::listed_chains().unwrap();
            (a, b, l1, l2)
        })
    };
    assert!(first.full && !second.full);
    let services1: BTreeSet<&String> = listed1.iter().filter(|c| c.contains('/')).collect();
    assert_eq!(services1.len(), 3, "{listed1:?}");
    assert_eq!(
        second.written_chains.len(),
        1,
        "{:?}",
        second.written_chains
    );
    assert!(second.written_chains[0].ends_with("-default/web/tcp/http"));
    assert_eq!(
        second.deleted_chains.len(),
        2,
        "{:?}",
        second.deleted_chains
    );
    assert!(!second.input.contains("delete table"), "{}", second.input);
    for c in &second.deleted_chains {
        assert!(!listed2.contains(c), "{c} still listed");
    }
    let table = ns.sh("nft list table ip kubelab-proxy");
    assert!(
        table.contains("10.96.0.12 . tcp . 80 comment \"default/empty:http\" : goto reject-chain"),
        "{table}"
    );
    assert!(
        !table.contains("10.1.0.2 . 10.1.0.2"),
        "hairpin element of a gone endpoint: {table}"
    );
    // `kubelab-agent --cleanup`, as an operator runs it, removes the table.
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.path()))
        .arg(env!("CARGO_BIN_EXE_kubelab-agent"))
        .arg("--cleanup")
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("removed the proxy's nftables table"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ns.sh("nft list tables"), "");
    let again = ns.run(|| apply::cleanup().unwrap());
    assert!(
        !again.nftables_table && again.iptables.is_empty(),
        "nothing left to remove"
    );
}

/// Services with every feature the renderers know (ClientIP affinity,
/// external IPs, both Local traffic policies with and without an endpoint on
/// this node), applied for real, then changed through partial syncs: the
/// tools accept every input.
fn feature_models() -> Vec<ProxyModel> {
    let eps = [ep("10.1.0.1", 8080), ep("10.1.0.2", 8080)];
    let mut sticky = service("sticky", "10.96.0.20", Some(30090), &eps);
    sticky.affinity_timeout = Some(10800);
    let mut ext = service("ext", "10.96.0.21", Some(30091), &eps);
    ext.external_ips = vec!["192.168.99.22".parse().unwrap()];
    ext.external_local = true;
    ext.local_endpoints = vec![eps[0]];
    ext.affinity_timeout = Some(300);
    let mut ext_none = service("ext-none", "10.96.0.22", Some(30092), &eps);
    ext_none.external_ips = vec!["192.168.99.23".parse().unwrap()];
    ext_none.external_local = true;
    let mut itp = service("itp", "10.96.0.23", None, &eps);
    itp.internal_local = true;
    itp.local_endpoints = vec![eps[1]];
    let mut itp_none = service("itp-none", "10.96.0.24", None, &eps);
    itp_none.internal_local = true;
    let first = model(vec![sticky, ext, ext_none, itp, itp_none]);
    // A new timeout, an endpoint gone, a policy back to Cluster.
    let mut second = first.clone();
    let s = second.services.get_mut(&spn("sticky", "http")).unwrap();
    s.affinity_timeout = Some(60);
    let s = second.services.get_mut(&spn("ext", "http")).unwrap();
    s.endpoints = vec![eps[0]];
    s.external_local = false;
    s.local_endpoints.clear();
    // Affinity off, and the Local policy without its endpoint.
    let mut third = second.clone();
    third
        .services
        .get_mut(&spn("sticky", "http"))
        .unwrap()
        .affinity_timeout = None;
    third
        .services
        .get_mut(&spn("ext", "http"))
        .unwrap()
        .affinity_timeout = None;
    third
        .services
        .get_mut(&spn("itp", "http"))
        .unwrap()
        .local_endpoints
        .clear();
    vec![first, second, third]
}

/// Runs `syncer` through [`feature_models`] in `ns`; the outcomes.
fn sync_features(
    ns: &Netns,
    mut syncer: Box<dyn RuleSyncer>,
) -> Vec<kubelab_agent::proxy::sync::SyncOutcome> {
    let models = feature_models();
    ns.run(move || {
        models
            .iter()
            .map(|m| syncer.sync(m, false).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    })
}

fn iptables_features(backend: IptablesBackend) {
    let ns = Netns::new("iptf");
    let ipt = Iptables::with_backend(backend).unwrap();
    let syncer = Box::new(IptablesSyncer::new(ipt.clone(), Some("10.1.0.0/16".into())));
    let models = feature_models();
    let outcomes = sync_features(&ns, syncer);
    assert!(outcomes[0].full && !outcomes[1].full && !outcomes[2].full);
    // The last state, read back.
    let (nat, filter) = saved(&ns, &ipt);
    let last = &models[2];
    let sticky_svc = service_chain(&spn("sticky", "http"), Protocol::Tcp);
    assert!(
        !nat.rules.iter().any(|(_, r)| r.contains("-m recent")),
        "affinity off, yet: {nat:?}"
    );
    let ext = &last.services[&spn("ext", "http")];
    assert!(
        !nat.chains.contains(&local_chain(&ext.name, ext.protocol)),
        "the Local chain of a service back to Cluster is gone"
    );
    let drops: BTreeSet<&str> = filter
        .rules
        .iter()
        .filter(|(_, r)| r.ends_with("-j DROP") && r.contains("has no local endpoints"))
        .map(|(c, _)| c.as_str())
        .collect();
    assert_eq!(
        drops,
        BTreeSet::from(["KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES"]),
        "{filter:?}"
    );
    assert!(nat.chains.contains(&sticky_svc));
    // The affinity rules as iptables-save prints them, after the first sync.
    let first = &outcomes[0].input;
    assert!(
        first.contains(&format!(
            "-m recent --name {sep} --rcheck --seconds 10800 --reap -j {sep}",
            sep = endpoint_chain(&spn("sticky", "http"), Protocol::Tcp, &ep("10.1.0.1", 8080))
        )),
        "{first}"
    );
    assert!(outcomes[1].input.contains("--rcheck --seconds 60 --reap"));
    let report = ns.run(|| apply::cleanup().unwrap());
    assert_eq!(report.iptables.len(), 1);
}

#[test]
fn iptables_nft_backend_applies_affinity_external_ips_and_local_policies() {
    iptables_features(IptablesBackend::Nft);
}

#[test]
fn iptables_legacy_backend_applies_affinity_external_ips_and_local_policies() {
    iptables_features(IptablesBackend::Legacy);
}

#[test]
fn nftables_applies_affinity_external_ips_and_local_policies() {
    let ns = Netns::new("nftf");
    let syncer = Box::new(NftSyncer::new(NftOptions {
        cluster_cidr: Some("10.1.0.0/16".into()),
        node_ips: vec!["192.168.77.1".parse().unwrap()],
    }));
    let outcomes = sync_features(&ns, syncer);
    assert!(outcomes[0].full && !outcomes[1].full && !outcomes[2].full);
    assert!(
        outcomes[1].input.contains("timeout 60s"),
        "{}",
        outcomes[1].input
    );
    let table = ns.sh("nft list table ip kubelab-proxy");
    assert!(!table.contains("affinity-"), "affinity off, yet: {table}");
    assert!(!table.contains("chain local-"), "{table}");
    assert!(
        table.contains("10.96.0.24 . tcp . 80 comment \"default/itp-none:http\" : drop"),
        "{table}"
    );
    assert!(
        table.contains("192.168.99.23 . tcp . 80 comment \"default/ext-none:http\" : drop"),
        "{table}"
    );
    assert!(
        table.contains("192.168.99.22 . tcp . 80 : goto external-"),
        "{table}"
    );
}

/// Three "pods" (namespaces running busybox httpd on :8080, each answering
/// its own name), a client pod and the node, wired by veths through the node.
struct Lab {
    node: Netns,
    pods: Vec<Netns>,
    client: Netns,
    servers: Vec<Child>,
    _www: tempfile::TempDir,
}

const NODE_IP: &str = "192.168.77.1";
const CLUSTER_CIDR: &str = "10.150.0.0/16";
/// An external IP of "web", routed to the node by the pods' default route.
const EXTERNAL_IP: &str = "192.168.99.22";

impl Lab {
    fn new() -> Lab {
        let node = Netns::new("node");
        node.sh(&format!(
            "sysctl -qw net.ipv4.ip_forward=1 && ip link add ext0 type veth peer name ext1 && ip link set ext1 up && ip link set ext0 up && ip addr add {NODE_IP}/32 dev ext0 && ip route add 10.96.0.0/16 dev ext0"
        ));
        let www = tempfile::tempdir().unwrap();
        let mut pods = Vec::new();
        let mut servers = Vec::new();
        let wire = |ns: &Netns, k: u32| {
            let host = format!("vh{k}-{}", COUNTER.fetch_add(1, Ordering::SeqCst));
            node.sh(&format!(
                "ip link add {host} type veth peer name eth0 netns {} && ip addr add 10.150.{k}.1/24 dev {host} && ip link set {host} up",
                ns.name
            ));
            ns.sh(&format!(
                "ip addr add 10.150.{k}.2/24 dev eth0 && ip link set eth0 up && ip route add default via 10.150.{k}.1"
            ));
        };
        for k in 1..=3u32 {
            let pod = Netns::new("pod");
            wire(&pod, k);
            let dir: PathBuf = www.path().join(format!("pod{k}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("index.html"), format!("hello-from-pod{k}\n")).unwrap();
            servers.push(
                Command::new("nsenter")
                    .arg(format!("--net={}", pod.path()))
                    .args(["/bin/busybox", "httpd", "-f", "-p", "8080", "-h"])
                    .arg(&dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            pods.push(pod);
        }
        let client = Netns::new("client");
        wire(&client, 9);
        let lab = Lab {
            node,
            pods,
            client,
            servers,
            _www: www,
        };
        // Until every httpd listens (reached directly from the node).
        for k in 1..=3 {
            let addr: SocketAddr = format!("10.150.{k}.2:8080").parse().unwrap();
            let mut ok = false;
            for _ in 0..100 {
                if lab.node.run(move || http_get(addr)).is_ok() {
                    ok = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(ok, "httpd in pod{k} did not come up");
        }
        lab
    }

    fn pod_ip(k: usize) -> Ipv4Addr {
        format!("10.150.{k}.2").parse().unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `GET /` over a fresh connection; the body's first line.
fn http_get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok(body.lines().next().unwrap_or("").to_string())
}

/// Which pods answered `tries` requests to `addr` made from `ns`.
fn answers(ns: &Netns, addr: SocketAddr, tries: usize) -> BTreeMap<String, usize> {
    ns.run(move || {
        let mut seen = BTreeMap::new();
        for _ in 0..tries {
            let body = http_get(addr).unwrap_or_else(|e| format!("error: {e}"));
            *seen.entry(body).or_insert(0) += 1;
        }
        seen
    })
}

fn lab_model() -> ProxyModel {
    let eps: Vec<Endpoint> = (1..=3)
        .map(|k| Endpoint {
            ip: Lab::pod_ip(k),
            port: 8080,
        })
        .collect();
    let mut web = service("web", "10.96.0.10", Some(30080), &eps);
    web.external_ips = vec![EXTERNAL_IP.parse().unwrap()];
    let mut sticky = service("sticky", "10.96.0.13", None, &eps);
    sticky.affinity_timeout = Some(10800);
    model(vec![
        web,
        sticky,
        // Only pod1 behind it: pod1 reaching itself through it is hairpin traffic.
        service("self", "10.96.0.11", None, &eps[..1]),
        service("empty", "10.96.0.12", None, &[]),
    ])
}

fn traffic_through_rules(syncer: Box<dyn RuleSyncer>) {
    let lab = Lab::new();
    let m = lab_model();
    let mut syncer = syncer;
    lab.node.run(move || {
        syncer.sync(&m, false).unwrap();
    });
    let all: BTreeSet<String> = (1..=3).map(|k| format!("hello-from-pod{k}")).collect();
    let cluster_ip: SocketAddr = "10.96.0.10:80".parse().unwrap();
    for (who, ns) in [("another pod", &lab.client), ("the node", &lab.node)] {
        let seen = answers(ns, cluster_ip, 60);
        let got: BTreeSet<String> = seen.keys().cloned().collect();
        assert_eq!(got, all, "{who} through the ClusterIP reached {seen:?}");
    }
    // NodePort on the node's address, from another pod and from the node.
    let node_port: SocketAddr = format!("{NODE_IP}:30080").parse().unwrap();
    for (who, ns) in [("another pod", &lab.client), ("the node", &lab.node)] {
        let seen = answers(ns, node_port, 30);
        assert!(
            seen.keys().all(|k| all.contains(k)) && seen.len() >= 2,
            "{who} through the NodePort: {seen:?}"
        );
    }
    // Hairpin: pod1 through a service whose only endpoint is pod1.
    let seen = answers(&lab.pods[0], "10.96.0.11:80".parse().unwrap(), 3);
    assert_eq!(seen, BTreeMap::from([("hello-from-pod1".to_string(), 3)]));
    // The external IP of "web", from another pod (routed through the node).
    let seen = answers(
        &lab.client,
        format!("{EXTERNAL_IP}:80").parse().unwrap(),
        30,
    );
    assert!(
        seen.keys().all(|k| all.contains(k)) && seen.len() >= 2,
        "another pod through the external IP: {seen:?}"
    );
    // ClientIP affinity: every request of one client reaches the same pod
    // (without it, 20 requests over 3 pods all land on one pod with
    // probability 3^-19), from a pod and from the node.
    let sticky: SocketAddr = "10.96.0.13:80".parse().unwrap();
    for (who, ns) in [("another pod", &lab.client), ("the node", &lab.node)] {
        let seen = answers(ns, sticky, 20);
        assert_eq!(
            seen.len(),
            1,
            "{who} through a ClientIP-affinity service: {seen:?}"
        );
        assert!(seen.keys().all(|k| all.contains(k)), "{who}: {seen:?}");
    }
    // A service without endpoints is refused, from a pod and from the node
    // (a REJECT: connection refused, not a time-out).
    let empty: SocketAddr = "10.96.0.12:80".parse().unwrap();
    for (who, ns) in [("another pod", &lab.client), ("the node", &lab.node)] {
        let err = ns
            .run(move || TcpStream::connect_timeout(&empty, Duration::from_secs(5)))
            .expect_err("connected to a service without endpoints");
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{who}: {err}"
        );
    }
}

#[test]
fn iptables_rules_carry_traffic_to_all_endpoints() {
    let ipt = Iptables::detect().unwrap();
    traffic_through_rules(Box::new(IptablesSyncer::new(
        ipt,
        Some(CLUSTER_CIDR.into()),
    )));
}

#[test]
fn nftables_rules_carry_traffic_to_all_endpoints() {
    traffic_through_rules(Box::new(NftSyncer::new(NftOptions {
        cluster_cidr: Some(CLUSTER_CIDR.into()),
        node_ips: vec![NODE_IP.parse().unwrap()],
    })));
}
