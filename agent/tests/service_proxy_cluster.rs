//! Services end to end: the real apiserver (with its endpoints controller)
//! and the agent joined to it with `--kubeconfig`, both inside a network
//! namespace this test makes (the "node"), pods on the node's CNI bridge,
//! services created with the real `kubectl`. Three pods behind a ClusterIP
//! service are all reached from the node and from another pod; the NodePort
//! answers on the node's address; a pod reaches itself through a service
//! (hairpin); a deleted pod leaves the rules while it is still terminating;
//! a service without endpoints is refused at once.

mod common;
#[path = "common/netns_cluster.rs"]
mod netns_cluster;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use netns_cluster::NetnsCluster;

const NODE_IP: &str = "192.168.78.1";

/// `GET /` over a fresh connection; the first line of the body.
fn http_get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("")
        .lines()
        .next()
        .unwrap_or("")
        .to_string())
}

fn web_pod(name: &str, node: &str, extra_labels: &str, extra_container: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: web
{extra_labels}spec:
  nodeName: {node}
  # httpd as PID 1 ignores SIGTERM: a deleted pod stays Terminating this long.
  terminationGracePeriodSeconds: 20
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"]
{extra_container}"#
    )
}

/// A container printing `<target> <first body line or error>` for each
/// request to each `ip:port` target, in a loop.
fn prober(name: &str, targets: &[String]) -> String {
    let targets = targets.join(" ");
    format!(
        r#"  - name: {name}
    image: busybox
    command: ["sh", "-c", "while true; do for t in {targets}; do echo \"$t $(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 ${{t%:*}} ${{t#*:}} 2>&1 | tail -n 1)\"; done; sleep 0.2; done"]
"#
    )
}

#[test]
fn services_reach_all_pods_from_node_and_pods_nodeport_hairpin_deletion_and_reject() {
    let c = NetnsCluster::start("kl-pxe2e", NODE_IP, "10.151.7.0/24", &[], &[]);
    let resources = c.kubectl(&[
        "api-resources",
        "--api-group=discovery.k8s.io",
        "-o",
        "name",
    ]);
    assert!(
        resources.lines().any(|l| l.starts_with("endpointslices")),
        "the apiserver serves no EndpointSlices: {resources}"
    );
    let (ns, node, api) = (&c.ns, &c.node, &c);
    let name = node.node_name.clone();

    api.apply(
        r#"apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: v1
kind: Service
metadata:
  name: hairpin
spec:
  selector: {hairpin: "yes"}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: empty
spec:
  selector: {app: nothing}
  ports: [{port: 80, targetPort: 8080}]
"#,
    );
    let ip = |svc: &str| api.kubectl(&["get", "svc", svc, "-o", "jsonpath={.spec.clusterIP}"]);
    let (web_ip, hairpin_ip, empty_ip) = (ip("web"), ip("hairpin"), ip("empty"));
    let web = format!("{web_ip}:80");
    let node_port = format!("{NODE_IP}:30080");
    let empty = format!("{empty_ip}:80");

    api.apply(&web_pod(
        "web-1",
        &name,
        "    hairpin: \"yes\"\n",
        &prober("hairpin", &[format!("{hairpin_ip}:80")]),
    ));
    for p in ["web-2", "web-3"] {
        api.apply(&web_pod(p, &name, "", ""));
    }
    api.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: client\nspec:\n  nodeName: {name}\n  terminationGracePeriodSeconds: 1\n  containers:\n{}",
        prober("client", &[web.clone(), node_port.clone(), empty.clone()])
    ));
    for p in ["web-1", "web-2", "web-3", "client"] {
        c.wait_for(&format!("{p} Running"), Duration::from_secs(60), || {
            let phase = api.kubectl(&["get", "pod", p, "-o", "jsonpath={.status.phase}"]);
            (phase == "Running").then_some(())
        });
    }
    let all: BTreeSet<String> = ["web-1", "web-2", "web-3"]
        .iter()
        .map(|p| format!("hello-from-{p}"))
        .collect();

    // From the node: through the ClusterIP every pod answers.
    let web_addr: SocketAddr = web.parse().unwrap();
    let seen = c.wait_for(
        "all three pods through the ClusterIP from the node",
        Duration::from_secs(30),
        || {
            let seen: BTreeSet<String> =
                ns.run(move || (0..40).filter_map(|_| http_get(web_addr).ok()).collect());
            (seen == all).then_some(seen)
        },
    );
    assert_eq!(seen, all);
    // The NodePort on the node's address, from the node.
    let np_addr: SocketAddr = node_port.parse().unwrap();
    let np: BTreeSet<String> =
        ns.run(move || (0..20).filter_map(|_| http_get(np_addr).ok()).collect());
    assert!(
        np.len() >= 2 && np.is_subset(&all),
        "NodePort from the node: {np:?}"
    );
    // A service without endpoints is refused at once (REJECT), from the node.
    let empty_addr: SocketAddr = empty.parse().unwrap();
    let err = ns
        .run(move || TcpStream::connect_timeout(&empty_addr, Duration::from_secs(5)))
        .expect_err("connected to a service without endpoints");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");

    // From another pod: ClusterIP (all three), NodePort, refusal.
    let logs = |pod: &str, c: &str| {
        node.get(&format!("/containerLogs/default/{pod}/{c}"))
            .unwrap_or_default()
    };
    c.wait_for(
        "the client pod to reach all three pods and the NodePort",
        Duration::from_secs(30),
        || {
            let log = logs("client", "client");
            let via_cluster_ip: BTreeSet<String> = log
                .lines()
                .filter_map(|l| {
                    l.split_once(&format!("{web} "))
                        .map(|(_, b)| b.trim().to_string())
                })
                .filter(|b| all.contains(b))
                .collect();
            let via_node_port = log
                .lines()
                .any(|l| l.contains(&format!("{node_port} hello-from-web-")));
            let refused = log
                .lines()
                .any(|l| l.contains(&format!("{empty} ")) && l.contains("refused"));
            (via_cluster_ip == all && via_node_port && refused).then_some(())
        },
    );
    // Hairpin: web-1 reaches itself through a service whose only endpoint it is.
    c.wait_for(
        "web-1 reaching itself through its service",
        Duration::from_secs(30),
        || {
            logs("web-1", "hairpin")
                .contains(&format!("{hairpin_ip}:80 hello-from-web-1"))
                .then_some(())
        },
    );

    // Deleting a pod takes it out of the rules while it is still terminating.
    let web3_ip = api.kubectl(&["get", "pod", "web-3", "-o", "jsonpath={.status.podIP}"]);
    let dnat = format!("--to-destination {web3_ip}:8080");
    assert!(
        ns.sh("iptables-save -t nat").contains(&dnat),
        "web-3's DNAT rule"
    );
    let deleted_at = Instant::now();
    api.kubectl(&["delete", "pod", "web-3", "--wait=false"]);
    c.wait_for("web-3's rules to go", Duration::from_secs(15), || {
        (!ns.sh("iptables-save -t nat").contains(&dnat)).then_some(())
    });
    let took = deleted_at.elapsed();
    let still = api.kubectl(&[
        "get",
        "pod",
        "web-3",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ]);
    assert!(
        !still.is_empty(),
        "web-3 should still be terminating when its rules are gone"
    );
    eprintln!("pod deletion to rules without it: {took:?} (kubectl delete included)");
    let after: BTreeSet<String> =
        ns.run(move || (0..20).filter_map(|_| http_get(web_addr).ok()).collect());
    assert!(
        !after.contains("hello-from-web-3") && !after.is_empty(),
        "{after:?}"
    );
    assert!(
        node.agent_log().contains("service proxy: full sync"),
        "sync logs"
    );

    let _ = api.kubectl_with(
        &[
            "delete",
            "pods",
            "--all",
            "--grace-period=1",
            "--wait=false",
        ],
        None,
    );
}
