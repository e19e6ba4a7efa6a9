//! The plugins alone, driven as a runtime drives them, in network namespaces
//! this test creates: a "node" namespace where the bridge lives and one per
//! "pod". Interop both ways with Debian's reference plugins in /usr/lib/cni.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{Value, json};

fn conf(plugin: &str, ipam: &str, subnet: &str, data_dir: &Path, extra: Value) -> Value {
    let mut c = json!({
        "cniVersion": "1.0.0",
        "name": "kltest",
        "type": plugin,
        "bridge": "kltest0",
        "isGateway": true,
        "ipMasq": true,
        "hairpinMode": true,
        "ipam": {
            "type": ipam,
            "ranges": [[{ "subnet": subnet }]],
            "routes": [{ "dst": "0.0.0.0/0" }],
            "dataDir": data_dir,
        }
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    // The reference bridge adds the default route itself and fails on a duplicate.
    if extra["isDefaultGateway"] == true {
        c["ipam"].as_object_mut().unwrap().remove("routes");
    }
    c
}

struct Setup {
    bridge: PathBuf,
    path: Vec<PathBuf>,
    conf: Value,
}

impl Setup {
    fn call<'a>(
        &self,
        host: &'a Netns,
        command: &'a str,
        id: &'a str,
        netns: &'a str,
    ) -> Invocation<'a> {
        Invocation {
            plugin: self.bridge.clone(),
            host: Some(host),
            command,
            container_id: id,
            netns,
            ifname: "eth0",
            cni_args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=x",
            path: self.path.clone(),
        }
    }

    fn with_prev(&self, prev: &Value) -> String {
        let mut c = self.conf.clone();
        c["prevResult"] = prev.clone();
        c.to_string()
    }
}

fn ip_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("kltest"))
        .map(|it| {
            it.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Two pods on one bridge: addresses from the subnet, reachable both ways and
/// through the gateway; CHECK passes; DEL (twice) leaves nothing behind.
fn two_pods_scenario(setup: &Setup, data_dir: &Path, subnet_prefix: &str) {
    let host = Netns::new();
    let pods = [Netns::new(), Netns::new()];
    let ids = ["pod-a-0001", "pod-b-0002"];
    let mut ips = Vec::new();
    let mut results = Vec::new();
    for (pod, id) in pods.iter().zip(ids) {
        let r = setup
            .call(&host, "ADD", id, &pod.path())
            .run(&setup.conf.to_string())
            .expect_ok()
            .json();
        assert_eq!(r["cniVersion"], "1.0.0", "{r}");
        let ifaces = r["interfaces"].as_array().unwrap();
        assert_eq!(ifaces[0]["name"], "kltest0");
        let c = ifaces
            .iter()
            .position(|i| i["sandbox"] == pod.path().as_str())
            .expect("a container interface");
        assert_eq!(ifaces[c]["name"], "eth0");
        let ip = &r["ips"][0];
        assert_eq!(ip["interface"], c);
        assert_eq!(ip["gateway"], format!("{subnet_prefix}.1"));
        let addr = ip["address"].as_str().unwrap().to_string();
        assert!(
            addr.starts_with(&format!("{subnet_prefix}.")) && addr.ends_with("/24"),
            "{addr}"
        );
        ips.push(addr.split('/').next().unwrap().to_string());
        results.push(r);
    }
    assert_ne!(ips[0], ips[1]);
    let mut held = ip_files(data_dir);
    held.sort();
    let mut want = ips.clone();
    want.sort();
    assert_eq!(held, want);

    assert!(
        pods[0].ping(&ips[1]),
        "pod a cannot reach pod b at {}",
        ips[1]
    );
    assert!(
        pods[1].ping(&ips[0]),
        "pod b cannot reach pod a at {}",
        ips[0]
    );
    assert!(
        pods[0].ping(&format!("{subnet_prefix}.1")),
        "pod a cannot reach the gateway"
    );
    assert!(host.ping(&ips[0]), "the node cannot reach pod a");
    let routes = pods[0].exec_ok(&["ip", "route"]);
    assert!(
        routes.contains(&format!("default via {subnet_prefix}.1 dev eth0")),
        "{routes}"
    );

    for ((pod, id), r) in pods.iter().zip(ids).zip(&results) {
        setup
            .call(&host, "CHECK", id, &pod.path())
            .run(&setup.with_prev(r))
            .expect_ok();
    }
    let nat = host.exec_ok(&["iptables", "-t", "nat", "-S", "POSTROUTING"]);
    assert_eq!(
        nat.matches("-s ").count(),
        2,
        "masquerade jumps for both pods:\n{nat}"
    );

    for ((pod, id), r) in pods.iter().zip(ids).zip(&results) {
        for _ in 0..2 {
            setup
                .call(&host, "DEL", id, &pod.path())
                .run(&setup.with_prev(r))
                .expect_ok();
        }
        assert!(
            pod.exec_ok(&["ip", "-o", "link"])
                .lines()
                .all(|l| !l.contains("eth0"))
        );
    }
    assert_eq!(host.veths(), Vec::<String>::new());
    assert_eq!(ip_files(data_dir), Vec::<String>::new());
    let nat = host.exec_ok(&["iptables", "-t", "nat", "-S"]);
    assert!(!nat.contains("-s "), "masquerade rules left:\n{nat}");
    // CHECK of something that is gone fails.
    let gone = setup
        .call(&host, "CHECK", ids[0], &pods[0].path())
        .run(&setup.with_prev(&results[0]));
    assert!(!gone.ok, "{gone:?}");
    assert!(gone.json()["code"].as_u64().unwrap() > 0);
}

#[test]
fn our_bridge_with_our_ipam() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup {
        bridge: our_bin_dir().join("kubelab-bridge"),
        path: vec![our_bin_dir()],
        conf: conf(
            "kubelab-bridge",
            "kubelab-host-local",
            "10.123.0.0/24",
            tmp.path(),
            json!({"isDefaultGateway": true, "mtu": 1400}),
        ),
    };
    two_pods_scenario(&setup, tmp.path(), "10.123.0");
}

#[test]
fn our_bridge_sets_mtu_hairpin_and_masquerade() {
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup {
        bridge: our_bin_dir().join("kubelab-bridge"),
        path: vec![our_bin_dir()],
        conf: conf(
            "kubelab-bridge",
            "kubelab-host-local",
            "10.124.0.0/24",
            tmp.path(),
            json!({"mtu": 1400}),
        ),
    };
    let host = Netns::new();
    let pod = Netns::new();
    let r = setup
        .call(&host, "ADD", "c1", &pod.path())
        .run(&setup.conf.to_string())
        .expect_ok()
        .json();
    let eth0 = pod.exec_ok(&["ip", "-d", "link", "show", "eth0"]);
    assert!(eth0.contains("mtu 1400"), "{eth0}");
    assert!(
        eth0.contains(r["interfaces"][2]["mac"].as_str().unwrap()),
        "result MAC is the interface's: {eth0}"
    );
    let veth = r["interfaces"][1]["name"].as_str().unwrap().to_string();
    let port = host.exec_ok(&["ip", "-d", "link", "show", &veth]);
    assert!(
        port.contains("master kltest0") && port.contains("hairpin on") && port.contains("mtu 1400"),
        "{port}"
    );
    let br = host.exec_ok(&["ip", "addr", "show", "kltest0"]);
    assert!(
        br.contains("inet 10.124.0.1/24"),
        "the gateway address is on the bridge: {br}"
    );
    assert_eq!(
        host.exec_ok(&["cat", "/proc/sys/net/ipv4/ip_forward"])
            .trim(),
        "1"
    );
    let nat = host.exec_ok(&["iptables", "-t", "nat", "-S"]);
    assert!(
        nat.contains("-A POSTROUTING -s 10.124.0.2/32 -m comment"),
        "{nat}"
    );
    assert!(
        nat.contains("-d 10.124.0.0/24")
            && nat.contains("! -d 224.0.0.0/4")
            && nat.contains("-j MASQUERADE"),
        "{nat}"
    );
    // Without isDefaultGateway there is no default route, only the IPAM's routes.
    let routes = pod.exec_ok(&["ip", "route"]);
    assert!(
        routes.contains("default via 10.124.0.1"),
        "ipam route 0.0.0.0/0 via the gateway: {routes}"
    );
    // A second ADD for an existing interface is refused with a spec error.
    let again = setup
        .call(&host, "ADD", "c1", &pod.path())
        .run(&setup.conf.to_string());
    assert!(!again.ok);
    assert!(
        again.json()["msg"]
            .as_str()
            .unwrap()
            .contains("already exists"),
        "{again:?}"
    );
    setup
        .call(&host, "DEL", "c1", &pod.path())
        .run(&setup.conf.to_string())
        .expect_ok();
    // DEL without a netns (the pod's netns is already gone) still succeeds.
    setup
        .call(&host, "DEL", "c1", "")
        .run(&setup.conf.to_string())
        .expect_ok();
    setup
        .call(&host, "DEL", "c1", "/var/run/netns/no-such-ns")
        .run(&setup.conf.to_string())
        .expect_ok();
    assert_eq!(host.veths(), Vec::<String>::new());
}

#[test]
fn our_bridge_with_reference_host_local() {
    if !reference_plugins_present() {
        panic!("the reference plugins are missing: apt-get install containernetworking-plugins");
    }
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup {
        bridge: our_bin_dir().join("kubelab-bridge"),
        path: vec![our_bin_dir(), PathBuf::from(REFERENCE_DIR)],
        conf: conf(
            "kubelab-bridge",
            "host-local",
            "10.125.0.0/24",
            tmp.path(),
            json!({"isDefaultGateway": true}),
        ),
    };
    two_pods_scenario(&setup, tmp.path(), "10.125.0");
}

#[test]
fn reference_bridge_with_our_ipam() {
    if !reference_plugins_present() {
        panic!("the reference plugins are missing: apt-get install containernetworking-plugins");
    }
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup {
        bridge: PathBuf::from(REFERENCE_DIR).join("bridge"),
        path: vec![our_bin_dir(), PathBuf::from(REFERENCE_DIR)],
        conf: conf(
            "bridge",
            "kubelab-host-local",
            "10.126.0.0/24",
            tmp.path(),
            json!({"isDefaultGateway": true}),
        ),
    };
    two_pods_scenario(&setup, tmp.path(), "10.126.0");
}

fn ipam_call<'a>(plugin: PathBuf, command: &'a str, id: &'a str) -> Invocation<'a> {
    Invocation {
        plugin,
        host: None,
        command,
        container_id: id,
        netns: "/proc/self/ns/net",
        ifname: "eth0",
        cni_args: "",
        path: vec![our_bin_dir(), PathBuf::from(REFERENCE_DIR)],
    }
}

/// Ours and the reference host-local, all at once on one data dir: the shared
/// lock keeps every address distinct.
#[test]
fn concurrent_adds_share_the_store_with_the_reference_ipam() {
    let tmp = tempfile::tempdir().unwrap();
    let c = json!({
        "cniVersion": "1.0.0", "name": "kltest",
        "ipam": { "type": "x", "subnet": "10.127.0.0/24", "dataDir": tmp.path() }
    })
    .to_string();
    let reference = reference_plugins_present();
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let c = c.clone();
            std::thread::spawn(move || {
                let plugin = if reference && i % 2 == 1 {
                    PathBuf::from(REFERENCE_DIR).join("host-local")
                } else {
                    our_bin_dir().join("kubelab-host-local")
                };
                let id = format!("c{i}");
                let r = ipam_call(plugin, "ADD", &id).run(&c).expect_ok().json();
                r["ips"][0]["address"].as_str().unwrap().to_string()
            })
        })
        .collect();
    let mut ips: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 16, "{ips:?}");
    assert_eq!(ip_files(tmp.path()).len(), 16);
    // Our DEL releases what the reference plugin allocated, and the other way round.
    let ours = our_bin_dir().join("kubelab-host-local");
    for i in 0..16 {
        let plugin = if reference && i % 2 == 0 {
            PathBuf::from(REFERENCE_DIR).join("host-local")
        } else {
            ours.clone()
        };
        ipam_call(plugin, "DEL", &format!("c{i}"))
            .run(&c)
            .expect_ok();
    }
    assert_eq!(ip_files(tmp.path()), Vec::<String>::new());
    // CHECK: fails for a container without an address.
    assert!(!ipam_call(ours, "CHECK", "c1").run(&c).ok);
}

#[test]
fn version_and_spec_errors() {
    let bridge = our_bin_dir().join("kubelab-bridge");
    let v = ipam_call(bridge.clone(), "VERSION", "")
        .run(r#"{"cniVersion":"0.4.0"}"#)
        .expect_ok()
        .json();
    assert_eq!(v["cniVersion"], "0.4.0");
    assert!(
        v["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("1.0.0"))
    );

    let mut inv = ipam_call(bridge.clone(), "ADD", "");
    inv.container_id = "";
    let r = inv.run(r#"{"cniVersion":"1.0.0","name":"n","type":"kubelab-bridge"}"#);
    assert!(!r.ok);
    let e = r.json();
    assert_eq!(e["code"], 4, "{e}");
    assert_eq!(
        e["msg"],
        "required environment variables missing: CNI_CONTAINERID"
    );
    assert_eq!(e["cniVersion"], "1.0.0");

    let r = ipam_call(bridge.clone(), "ADD", "c").run("{not json");
    assert_eq!(r.json()["code"], 6);
    let r = ipam_call(bridge.clone(), "ADD", "c").run(r#"{"cniVersion":"0.1.0","name":"n"}"#);
    assert_eq!(r.json()["code"], 1);
    let r = ipam_call(bridge.clone(), "FROB", "c").run("{}");
    assert_eq!(r.json()["code"], 4);
    // A missing IPAM plugin is a config error naming the plugin and the path.
    let r = ipam_call(bridge, "DEL", "c")
        .run(r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"no-such-ipam"}}"#);
    let e = r.json();
    assert_eq!(e["code"], 7, "{e}");
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("\"no-such-ipam\" not found"),
        "{e}"
    );
}

/// An old-version config gets an old-version result ("version" on each IP).
#[test]
fn results_follow_the_config_version() {
    let tmp = tempfile::tempdir().unwrap();
    let c = json!({"cniVersion": "0.4.0", "name": "kltest", "ipam": {"type": "kubelab-host-local", "subnet": "10.128.0.0/24", "dataDir": tmp.path()}});
    let r = ipam_call(our_bin_dir().join("kubelab-host-local"), "ADD", "c")
        .run(&c.to_string())
        .expect_ok()
        .json();
    assert_eq!(r["cniVersion"], "0.4.0");
    assert_eq!(r["ips"][0]["version"], "4");
    assert_eq!(r["ips"][0]["address"], "10.128.0.2/24");
    assert_eq!(r["ips"][0]["gateway"], "10.128.0.1");
}
