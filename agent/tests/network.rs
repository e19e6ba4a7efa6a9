//! Pod networking through CNI, with the agent running inside a network
//! namespace this test creates (`nsenter --net`): that namespace is the
//! "node", where the bridge, the veths' host ends and the nat rules live.
//! Never the host's own interfaces. Everything is removed on drop.

mod common;

use std::path::Path;
use std::time::Duration;

use common::TestNode;
use common::node_net::*;
use serde_json::Value;

fn pod_yaml(name: &str, body: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n{body}")
}

fn pod_ip(pod: &Value) -> String {
    let ip = pod["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        pod["status"]["podIPs"][0]["ip"],
        ip.as_str(),
        "{}",
        pod["status"]
    );
    ip
}

/// A shell snippet fetching `/` from port 8080 (bash's /dev/tcp: the image's
/// and the host's static busybox `wget` crash in getaddrinfo).
fn http_get(ip: &str) -> String {
    format!("exec 3<>/dev/tcp/{ip}/8080 && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3")
}

const WEB: &str = r#"spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"]
"#;

fn wait_gone(node: &TestNode, ns: &Netns) {
    node.wait_for("pods gone", Duration::from_secs(30), |n| {
        n.pods().is_empty().then_some(())
    });
    node.wait_for("veths gone", Duration::from_secs(10), |_| {
        ns.veths().is_empty().then_some(())
    });
}

#[test]
fn pods_get_ips_from_our_bridge_and_reach_each_other() {
    let ns = Netns::new();
    let tmp = tempfile::tempdir().unwrap();
    let (conf_dir, ipam_dir) = write_bridge_conf(
        tmp.path(),
        "kubelab-bridge",
        "kubelab-host-local",
        "10.130.0.0/24",
    );
    let node = TestNode::start_in_netns(
        &ns.name,
        &[
            "--cni-conf-dir",
            conf_dir.to_str().unwrap(),
            "--cni-bin-dir",
            &format!("/nonexistent,{}", our_plugin_dir().display()),
        ],
    );

    node.write_manifest("web.yaml", &pod_yaml("web", WEB));
    let web = node.wait_running("web");
    let web_ip = pod_ip(&web);
    assert!(
        web_ip.starts_with("10.130.0."),
        "podIP {web_ip:?} from the subnet"
    );

    let client = format!(
        r#"spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: busybox
    command: ["sh", "-c", "until printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {web_ip} 8080; do sleep 0.5; done; grep -w $(hostname) /etc/hosts; exec sleep 3600"]
"#
    );
    node.write_manifest("client.yaml", &pod_yaml("client", &client));
    let client_pod = node.wait_running("client");
    let client_ip = pod_ip(&client_pod);
    assert!(
        client_ip.starts_with("10.130.0.") && client_ip != web_ip,
        "{client_ip} vs {web_ip}"
    );

    // Pod to pod over the bridge; the pod's /etc/hosts names its own IP.
    let name = format!("client-{}", node.node_name);
    let logs = node.wait_for(
        "the client to fetch the web page",
        Duration::from_secs(20),
        |n| {
            n.get(&format!("/containerLogs/default/{name}/client"))
                .ok()
                .filter(|l| l.contains("hello-from-web") && l.contains(&client_ip))
        },
    );
    assert!(
        logs.contains(&format!("{client_ip}\tclient-{}", node.node_name)),
        "{logs}"
    );
    // The node reaches both pods.
    for ip in [&web_ip, &client_ip] {
        let (ok, out) = ns.exec(&["busybox", "ping", "-c", "1", "-W", "3", ip]);
        assert!(ok, "the node cannot ping {ip}: {out}");
    }
    assert_eq!(ns.veths().len(), 2);
    let mut held = ip_files(&ipam_dir.join("podnet"));
    held.sort();
    let mut want = vec![web_ip.clone(), client_ip.clone()];
    want.sort();
    assert_eq!(held, want);
    let cache = node.state_dir().join("cni/results");
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        2,
        "one cached result per pod"
    );

    node.remove_manifest("client.yaml");
    node.remove_manifest("web.yaml");
    wait_gone(&node, &ns);
    assert_eq!(
        ip_files(&ipam_dir.join("podnet")),
        Vec::<String>::new(),
        "addresses released"
    );
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        0,
        "cache emptied"
    );
    let (_, nat) = ns.exec(&["iptables", "-t", "nat", "-S", "POSTROUTING"]);
    assert!(!nat.contains("CNI-"), "masquerade rules left: {nat}");
}

#[test]
fn reference_plugins_driven_by_the_agent_and_host_network_skips_cni() {
    assert!(
        Path::new("/usr/lib/cni/bridge").exists(),
        "the reference plugins are missing: apt-get install containernetworking-plugins"
    );
    let ns = Netns::new();
    let tmp = tempfile::tempdir().unwrap();
    let (conf_dir, ipam_dir) =
        write_bridge_conf(tmp.path(), "bridge", "host-local", "10.132.0.0/24");
    let node = TestNode::start_in_netns(
        &ns.name,
        &[
            "--cni-conf-dir",
            conf_dir.to_str().unwrap(),
            "--cni-bin-dir",
            "/usr/lib/cni",
        ],
    );
    node.write_manifest("web.yaml", &pod_yaml("web", WEB));
    node.write_manifest(
        "hostnet.yaml",
        &pod_yaml(
            "hostnet",
            "spec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    command: [\"sleep\", \"3600\"]\n",
        ),
    );
    let ip = pod_ip(&node.wait_running("web"));
    assert!(ip.starts_with("10.132.0."), "{ip}");
    let (ok, page) = ns.exec(&["bash", "-c", &http_get(&ip)]);
    assert!(ok && page.contains("hello-from-web"), "{page}");
    let hostnet = node.wait_running("hostnet");
    assert!(
        hostnet["status"]["podIP"]
            .as_str()
            .is_none_or(|i| !i.starts_with("10.132."))
    );
    assert_eq!(ns.veths().len(), 1, "only the web pod has a veth");
    assert_eq!(ip_files(&ipam_dir.join("podnet")), vec![ip]);
    node.remove_manifest("web.yaml");
    node.remove_manifest("hostnet.yaml");
    wait_gone(&node, &ns);
    assert_eq!(ip_files(&ipam_dir.join("podnet")), Vec::<String>::new());
}

#[test]
fn default_network_is_written_for_the_pod_cidr() {
    let ns = Netns::new();
    let tmp = tempfile::tempdir().unwrap();
    let conf_dir = tmp.path().join("net.d");
    let node = TestNode::start_in_netns(
        &ns.name,
        &[
            "--cni-conf-dir",
            conf_dir.to_str().unwrap(),
            "--cni-bin-dir",
            our_plugin_dir().to_str().unwrap(),
            "--pod-cidr",
            "10.131.7.0/24",
        ],
    );
    node.write_manifest("web.yaml", &pod_yaml("web", WEB));
    let ip = pod_ip(&node.wait_running("web"));
    assert_eq!(ip, "10.131.7.2");
    let written: Value =
        serde_json::from_slice(&std::fs::read(conf_dir.join("10-kubelab.conflist")).unwrap())
            .unwrap();
    assert_eq!(written["plugins"][0]["type"], "kubelab-bridge");
    let (_, br) = ns.exec(&["ip", "addr", "show", "cni0"]);
    assert!(br.contains("inet 10.131.7.1/24"), "{br}");
    node.remove_manifest("web.yaml");
    wait_gone(&node, &ns);
    assert_eq!(
        ip_files(&node.state_dir().join("cni/networks/kubelab")),
        Vec::<String>::new()
    );
}

/// `iptables-save` of the namespace as a set of `table chain-or-rule` lines:
/// rules and user chains, without counters or built-in chains' policies (a
/// table the first pod brought into being is no leak once it is empty).
#[test]
fn fifty_pods_created_and_deleted_leave_nothing_behind() {
    const PODS: usize = 50;
    let ns = Netns::new();
    let tmp = tempfile::tempdir().unwrap();
    // ipMasq on: every pod gets its own nat chain, which must go with it.
    let (conf_dir, ipam_dir) = write_bridge_conf(
        tmp.path(),
        "kubelab-bridge",
        "kubelab-host-local",
        "10.133.0.0/24",
    );
    let ipam_net = ipam_dir.join("podnet");
    // No apiserver here, so no service proxy: it runs only with --kubeconfig
    // (its rules are covered by service_proxy*.rs); said explicitly.
    let node = TestNode::start_in_netns(
        &ns.name,
        &[
            "--cni-conf-dir",
            conf_dir.to_str().unwrap(),
            "--cni-bin-dir",
            our_plugin_dir().to_str().unwrap(),
            "--proxy-mode",
            "none",
        ],
    );

    let base_veths = ns.veths();
    let base_ipt = iptables_rules(&ns);
    let base_nft = nft_rules(&ns);
    let base_mounts = mountinfo_naming(node.root.path());
    let base_cgroups = node.cgroup_dirs_below_root();
    assert!(base_veths.is_empty(), "{base_veths:?}");
    assert!(ip_files(&ipam_net).is_empty());

    let names: Vec<String> = (0..PODS).map(|i| format!("churn{i:02}")).collect();
    let started = std::time::Instant::now();
    for name in &names {
        node.write_manifest(
            &format!("{name}.yaml"),
            &pod_yaml(
                name,
                "spec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    command: [\"sleep\", \"3600\"]\n",
            ),
        );
    }
    let running = node.wait_for(
        "all 50 pods Running with a podIP",
        Duration::from_secs(600),
        |n| {
            let pods: Vec<Value> = n
                .pods()
                .into_iter()
                .filter(|p| {
                    let running = p["status"]["containerStatuses"]
                        .as_array()
                        .is_some_and(|cs| cs.iter().all(|c| c["state"]["running"].is_object()));
                    p["status"]["phase"] == "Running"
                        && running
                        && p["status"]["podIP"]
                            .as_str()
                            .is_some_and(|ip| !ip.is_empty())
                })
                .collect();
            (pods.len() == PODS).then_some(pods)
        },
    );
    eprintln!("{PODS} pods Running in {:?}", started.elapsed());

    let mut ips: Vec<String> = running.iter().map(pod_ip).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), PODS, "pod IPs not distinct: {ips:?}");
    assert!(ips.iter().all(|ip| ip.starts_with("10.133.0.")), "{ips:?}");
    assert_eq!(ns.veths().len(), PODS, "{:?}", ns.veths());
    let mut held = ip_files(&ipam_net);
    held.sort();
    assert_eq!(held, ips, "one allocation file per pod IP");
    let netns = pod_netns(&node, &ns);
    assert_eq!(netns.len(), PODS, "one netns per pod: {netns:?}");
    let masq_chains = iptables_rules(&ns)
        .into_iter()
        .filter(|r| r.starts_with("nat :CNI-"))
        .count();
    assert_eq!(masq_chains, PODS, "one masquerade chain per pod");
    // What the checks below look for is there now: one rootfs mount and one
    // pod cgroup per pod, the masquerade rules in nftables' view too.
    let mounts_now = mountinfo_naming(node.root.path())
        .into_iter()
        .filter(|m| !base_mounts.contains(m))
        .count();
    assert!(
        mounts_now >= PODS,
        "{mounts_now} new mounts for {PODS} pods"
    );
    let mut pod_cgroup_names: Vec<String> = pod_cgroups(&node, &base_cgroups)
        .iter()
        .filter_map(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pod"))
        .collect();
    pod_cgroup_names.sort();
    pod_cgroup_names.dedup();
    assert_eq!(pod_cgroup_names.len(), PODS, "{pod_cgroup_names:?}");
    let nft_now = nft_rules(&ns).difference(&base_nft).count();
    assert!(nft_now >= PODS, "{nft_now} new nftables entries");

    let started = std::time::Instant::now();
    for name in &names {
        node.remove_manifest(&format!("{name}.yaml"));
    }
    node.wait_for("all pods gone from /pods", Duration::from_secs(600), |n| {
        n.pods().is_empty().then_some(())
    });
    eprintln!("{PODS} pods deleted in {:?}", started.elapsed());

    // A netns dies with its last process, its veth pair with it; the kernel
    // does that in the background, so veths get time to go.
    let veths = until_empty(Duration::from_secs(120), || ns.veths());
    assert!(
        veths.is_empty(),
        "{} veths left in the node netns: {veths:?}",
        veths.len()
    );
    let still_held = netns_still_held(&netns);
    assert!(
        still_held.is_empty(),
        "pod netns still held: {still_held:?}"
    );
    let ip_left = ip_files(&ipam_net);
    assert!(
        ip_left.is_empty(),
        "IP allocations left in {}: {ip_left:?}",
        ipam_net.display()
    );
    let other: Vec<String> = std::fs::read_dir(&ipam_net)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip."))
        .collect();
    assert!(
        other.is_empty(),
        "files left in {}: {other:?}",
        ipam_net.display()
    );
    let ipt = iptables_rules(&ns);
    let ipt_left: Vec<&String> = ipt.difference(&base_ipt).collect();
    assert!(
        ipt_left.is_empty(),
        "iptables rules/chains left: {ipt_left:#?}"
    );
    let nft = nft_rules(&ns);
    let nft_left: Vec<&String> = nft.difference(&base_nft).collect();
    assert!(
        nft_left.is_empty(),
        "nftables rules/chains left: {nft_left:#?}"
    );
    let mounts: Vec<String> = mountinfo_naming(node.root.path())
        .into_iter()
        .filter(|m| !base_mounts.contains(m))
        .collect();
    assert!(mounts.is_empty(), "mounts left: {mounts:#?}");
    let cgroups = pod_cgroups(&node, &base_cgroups);
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:#?}");
    let cache: Vec<_> = std::fs::read_dir(node.state_dir().join("cni/results"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        cache.is_empty(),
        "CNI results cached for gone pods: {cache:?}"
    );
    let pod_dirs: Vec<_> = std::fs::read_dir(node.state_dir().join("pods"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(pod_dirs.is_empty(), "pod dirs left: {pod_dirs:?}");
}
