//! Pod networking through CNI, with the agent running inside a network
//! namespace this test creates (`nsenter --net`): that namespace is the
//! "node", where the bridge, the veths' host ends and the nat rules live.
//! Never the host's own interfaces. Everything is removed on drop.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{TestNode, agent_bin};
use serde_json::{Value, json};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `ip netns add kl-test-<pid>-<n>`; `ip netns del` on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        let name = format!(
            "kl-test-{}-n{}",
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
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn exec(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    fn veths(&self) -> Vec<String> {
        let (_, out) = self.exec(&["ip", "-o", "link", "show", "type", "veth"]);
        out.lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Where `cargo build --workspace` puts the kubelab-cni plugins (next to the agent).
fn our_plugin_dir() -> PathBuf {
    let dir = agent_bin().parent().unwrap().to_path_buf();
    assert!(
        dir.join("kubelab-bridge").exists() && dir.join("kubelab-host-local").exists(),
        "the kubelab-cni plugins are not built in {}: run cargo build --workspace",
        dir.display()
    );
    dir
}

fn pod_yaml(name: &str, body: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n{body}")
}

fn bridge_conflist(plugin: &str, ipam: &str, subnet: &str, data_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "podnet",
        "plugins": [{
            "type": plugin,
            "bridge": "cni0",
            "isGateway": true,
            "isDefaultGateway": true,
            "ipMasq": true,
            "hairpinMode": true,
            "ipam": { "type": ipam, "ranges": [[{ "subnet": subnet }]], "dataDir": data_dir }
        }]
    })
}

fn ip_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
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
    let conf_dir = tmp.path().join("net.d");
    let ipam_dir = tmp.path().join("ipam");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let conf = bridge_conflist(
        "kubelab-bridge",
        "kubelab-host-local",
        "10.130.0.0/24",
        &ipam_dir,
    );
    std::fs::write(conf_dir.join("10-podnet.conflist"), conf.to_string()).unwrap();
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
    let conf_dir = tmp.path().join("net.d");
    let ipam_dir = tmp.path().join("ipam");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let conf = bridge_conflist("bridge", "host-local", "10.132.0.0/24", &ipam_dir);
    std::fs::write(conf_dir.join("10-podnet.conflist"), conf.to_string()).unwrap();
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
