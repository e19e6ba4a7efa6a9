//! The pod network across nodes, end to end: two nodes, each an agent in a
//! network namespace of its own, joined by a bridge in another namespace
//! (the LAN, where a client outside the cluster lives), one apiserver giving
//! each Node its pod CIDR. For each backend (`host-gw`, `vxlan`): the routes
//! (and VXLAN entries) to the other node's pod CIDR appear; a pod reaches a
//! pod on the other node by IP and is seen with its own address; a Service
//! with endpoints on both nodes answers from both, by ClusterIP from a pod
//! and by NodePort from outside on every node; `externalTrafficPolicy:
//! Local` keeps the outside client's address; traffic leaving the cluster is
//! masqueraded to the node's address; the routes go when the Node is deleted.

mod common;
#[path = "common/netns_cluster.rs"]
mod netns_cluster;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use netns_cluster::{LAN_GATEWAY, NetnsCluster};

/// An httpd pod whose `/cgi-bin/who` answers `<pod name> <client address>`.
fn who_pod(name: &str, node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: who}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c", "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $(hostname) $REMOTE_ADDR\\n' > /www/cgi-bin/who && chmod +x /www/cgi-bin/who && exec httpd -f -p 8080 -h /www"]
"#
    )
}

const SERVICES: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: who
spec:
  type: NodePort
  selector: {app: who}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: v1
kind: Service
metadata:
  name: who-local
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: who}
  ports: [{port: 80, targetPort: 8080, nodePort: 30081}]
"#;

/// `<pod> <client address>` from a response of `/cgi-bin/who` (httpd
/// listens on IPv6 too and writes IPv4 clients as `[::ffff:a.b.c.d]`).
fn who_answer(response: &str) -> Option<String> {
    // The body follows the first empty line (CGI headers end in "\n").
    let mut lines = response.lines();
    lines.by_ref().find(|l| l.trim_end().is_empty())?;
    let body = lines.next()?.trim();
    let (pod, client) = body.split_once(' ')?;
    let client = client.trim_start_matches("[::ffff:").trim_end_matches(']');
    Some(format!("{pod} {client}"))
}

/// `GET /cgi-bin/who` at `addr`, from the current namespace.
fn who(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /cgi-bin/who HTTP/1.0\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    who_answer(&buf).ok_or_else(|| std::io::Error::other(format!("no answer in {buf:?}")))
}

/// `GET /cgi-bin/who` at `target` (ip:port) from inside pod `pod`.
fn who_from_pod(c: &NetnsCluster, pod: &str, target: &str) -> Option<String> {
    let (ip, port) = target.rsplit_once(':').unwrap();
    let out = c.exec(
        pod,
        &format!("printf 'GET /cgi-bin/who HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} {port}"),
    );
    out.status
        .success()
        .then(|| who_answer(&String::from_utf8_lossy(&out.stdout)))
        .flatten()
}

fn pod_ip(c: &NetnsCluster, pod: &str) -> String {
    c.kubectl(&["get", "pod", pod, "-o", "jsonpath={.status.podIP}"])
}

fn node_pod_cidr(c: &NetnsCluster, node: &str) -> Option<String> {
    let cidr = c.kubectl(&["get", "node", node, "-o", "jsonpath={.spec.podCIDR}"]);
    (!cidr.is_empty()).then_some(cidr)
}

fn pod_network_across_two_nodes(backend: &str) {
    let c = NetnsCluster::start_nodes(
        &format!("kl-pn-{backend}"),
        2,
        &["--pod-network-backend", backend],
    );
    let lan = c.lan.as_ref().unwrap();
    let peer = &c.peers[0];
    let (n1, n2) = (c.node.node_name.clone(), peer.node.node_name.clone());
    let long = Duration::from_secs(90);
    let cidr1 = c.wait_for("node 1's pod CIDR", long, || node_pod_cidr(&c, &n1));
    let cidr2 = c.wait_for("node 2's pod CIDR", long, || node_pod_cidr(&c, &n2));

    // Each node routes to the other's pod CIDR, with the agent's protocol number.
    let routes_to = |ns: &netns_cluster::Netns, cidr: &str| {
        ns.sh("ip -4 route show proto 75")
            .lines()
            .find(|l| l.starts_with(&format!("{cidr} ")))
            .map(String::from)
    };
    let r1 = c.wait_for("node 1's route to node 2's pods", long, || {
        routes_to(&c.ns, &cidr2)
    });
    let r2 = c.wait_for("node 2's route to node 1's pods", long, || {
        routes_to(&peer.ns, &cidr1)
    });
    match backend {
        "host-gw" => {
            assert!(r1.contains(&format!("via {} dev eth0", peer.ip)), "{r1}");
            assert!(r2.contains(&format!("via {} dev eth0", c.node_ip)), "{r2}");
            assert!(
                c.ns.sh("ip link show kubelab.1 2>/dev/null || true")
                    .is_empty(),
                "no VXLAN device in host-gw mode"
            );
        }
        "vxlan" => {
            let vtep2 = cidr2.split('/').next().unwrap();
            assert!(
                r1.contains(&format!("via {vtep2} dev kubelab.1")) && r1.contains("onlink"),
                "{r1}"
            );
            let link = c.ns.sh("ip -d link show kubelab.1");
            assert!(
                link.contains("vxlan id 1 ")
                    && link.contains(&format!("local {} ", c.node_ip))
                    && link.contains("dstport 8472")
                    && link.contains("nolearning"),
                "{link}"
            );
            let fdb = c.ns.sh("bridge fdb show dev kubelab.1");
            assert!(
                fdb.lines()
                    .any(|l| l.contains(&format!("dst {} ", peer.ip)) && l.contains("permanent")),
                "{fdb}"
            );
            let neigh = c.ns.sh("ip neigh show dev kubelab.1");
            assert!(
                neigh
                    .lines()
                    .any(|l| l.starts_with(&format!("{vtep2} ")) && l.contains("PERMANENT")),
                "{neigh}"
            );
        }
        _ => unreachable!(),
    }
    c.apply(&format!(
        "{}---\n{}",
        who_pod("who-1", &n1),
        who_pod("who-2", &n2)
    ));
    c.apply(SERVICES);
    c.wait_running("who-1");
    c.wait_running("who-2");
    // The default CNI config the agent wrote records the backend, and leaves
    // masquerading to the agent.
    let conf = std::fs::read_to_string(
        std::path::Path::new(c.node.arg_value("--cni-conf-dir").unwrap())
            .join("10-kubelab.conflist"),
    )
    .unwrap();
    assert!(
        conf.contains(&format!("\"podNetworkBackend\": \"{backend}\""))
            && conf.contains("\"ipMasq\": false"),
        "{conf}"
    );
    let (ip1, ip2) = (pod_ip(&c, "who-1"), pod_ip(&c, "who-2"));

    // Pod to pod across the nodes, both ways: the answer names the other
    // pod and the asking pod's own address (no masquerading between pods).
    let got = c.wait_for("who-1 to reach who-2 by IP", long, || {
        who_from_pod(&c, "who-1", &format!("{ip2}:8080"))
    });
    assert_eq!(got, format!("who-2 {ip1}"));
    let got = c.wait_for("who-2 to reach who-1 by IP", long, || {
        who_from_pod(&c, "who-2", &format!("{ip1}:8080"))
    });
    assert_eq!(got, format!("who-1 {ip2}"));

    // The ClusterIP answers from both nodes' endpoints, from a pod.
    let cluster_ip = c.kubectl(&["get", "svc", "who", "-o", "jsonpath={.spec.clusterIP}"]);
    let both: BTreeSet<String> = ["who-1", "who-2"].map(String::from).into();
    let mut seen = BTreeSet::new();
    c.wait_for(
        "both endpoints through the ClusterIP from who-1",
        long,
        || {
            if let Some(a) = who_from_pod(&c, "who-1", &format!("{cluster_ip}:80")) {
                let (name, client) = a.split_once(' ').unwrap_or_default();
                // (who-1 reaching itself is masqueraded: hairpin traffic is.)
                if name == "who-2" {
                    assert_eq!(
                        client, ip1,
                        "the other node's endpoint sees the pod's own address"
                    );
                }
                seen.insert(name.to_string());
            }
            (seen == both).then_some(())
        },
    );

    // The NodePort answers on every node, from both nodes' endpoints, for a
    // client outside the cluster.
    for node_ip in [c.node_ip.clone(), peer.ip.clone()] {
        let addr: SocketAddr = format!("{node_ip}:30080").parse().unwrap();
        let mut seen = BTreeSet::new();
        c.wait_for(
            &format!("both endpoints through {addr} from the LAN"),
            long,
            || {
                let answers: Vec<String> =
                    lan.run(move || (0..10).filter_map(|_| who(addr).ok()).collect());
                for a in answers {
                    seen.insert(a.split(' ').next().unwrap_or_default().to_string());
                }
                (seen == both).then_some(())
            },
        );
    }

    // externalTrafficPolicy: Local: only the node's own endpoint, which sees
    // the outside client's address.
    for (node_ip, pod) in [(c.node_ip.clone(), "who-1"), (peer.ip.clone(), "who-2")] {
        let addr: SocketAddr = format!("{node_ip}:30081").parse().unwrap();
        let got = c.wait_for(&format!("{addr} (Local) from the LAN"), long, || {
            lan.run(move || who(addr).ok())
        });
        assert_eq!(got, format!("{pod} {LAN_GATEWAY}"));
    }

    // Leaving the cluster network, a pod's traffic is masqueraded to its
    // node's address.
    // (The connection is closed at once: nc waits for the far end to close.)
    let listener = lan.run(|| TcpListener::bind(format!("{LAN_GATEWAY}:9000")).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((conn, from)) = listener.accept() {
            drop(conn);
            let _ = tx.send(from.ip().to_string());
        }
    });
    let seen_from = c.wait_for("who-2's connection to the LAN", long, || {
        let _ = c.exec("who-2", &format!("echo hi | nc -w 2 {LAN_GATEWAY} 9000"));
        rx.recv_timeout(Duration::from_secs(1)).ok()
    });
    assert_eq!(seen_from, peer.ip, "masqueraded to node 2's address");

    // A deleted Node's routes (and VXLAN entries) go.
    c.kubectl(&["delete", "pod", "who-2", "--timeout=60s"]);
    let mut c = c;
    c.peers[0].node.kill_agent();
    c.kubectl(&["delete", "node", &n2]);
    c.wait_for("node 1's route to node 2's pods to go", long, || {
        routes_to(&c.ns, &cidr2).is_none().then_some(())
    });
    if backend == "vxlan" {
        let peer_ip = c.peers[0].ip.clone();
        c.wait_for("node 2's forwarding entry to go", long, || {
            (!c.ns
                .sh("bridge fdb show dev kubelab.1")
                .contains(&format!("dst {peer_ip} ")))
            .then_some(())
        });
        let vtep2 = cidr2.split('/').next().unwrap().to_string();
        assert!(
            !c.ns
                .sh("ip neigh show dev kubelab.1")
                .lines()
                .any(|l| l.starts_with(&format!("{vtep2} "))),
            "node 2's neighbour entry is gone"
        );
    }

    // `--cleanup` on node 2 (its agent stopped) removes what the pod network
    // made there: the route to node 1's pods, the VXLAN device, the chains.
    let peer = &c.peers[0];
    assert!(routes_to(&peer.ns, &cidr1).is_some());
    let out = peer
        .ns
        .command(common::agent_bin().to_str().unwrap())
        .arg("--cleanup")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "--cleanup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(peer.ns.sh("ip -4 route show proto 75"), "", "routes left");
    assert!(
        peer.ns
            .sh("ip link show kubelab.1 2>/dev/null || true")
            .is_empty(),
        "the VXLAN device is left"
    );
    let rules = peer.ns.sh("iptables-save");
    assert!(
        !rules.contains("KUBELAB-POSTRTG") && !rules.contains("KUBELAB-FWD"),
        "pod network chains left:\n{rules}"
    );
}

#[test]
fn host_gw_routes_pods_across_nodes() {
    pod_network_across_two_nodes("host-gw");
}

#[test]
fn vxlan_carries_pods_across_nodes() {
    pod_network_across_two_nodes("vxlan");
}
