//! Cluster DNS end to end, from inside a pod: the apiserver's DNS behind the
//! `kube-dns` Service (reached through the node's service proxy, UDP and
//! TCP), the agent writing pods' resolv.conf from `--cluster-dns`, busybox's
//! `nslookup` resolving Services (short names through the search path),
//! a headless Service's pods, their hostnames, SRV records, and a name
//! outside the cluster forwarded to an upstream this test runs in the
//! node's namespace.

mod common;
#[path = "common/netns_cluster.rs"]
mod netns_cluster;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use netns_cluster::NetnsCluster;

const NODE_IP: &str = "192.168.79.1";
const UPSTREAM: &str = "127.0.0.1:5300";
const EXTERNAL_ANSWER: [u8; 4] = [192, 0, 2, 77];

/// A DNS answer for one query, as a stub upstream gives it: `A 192.0.2.77`
/// for names under `example.test`, NXDOMAIN for the rest, nothing else.
fn upstream_reply(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut i = 12;
    let mut labels = Vec::new();
    while *query.get(i)? != 0 {
        let len = query[i] as usize;
        labels.push(String::from_utf8_lossy(query.get(i + 1..i + 1 + len)?).to_lowercase());
        i += 1 + len;
    }
    let question_end = i + 5;
    let qtype = u16::from_be_bytes([*query.get(i + 1)?, *query.get(i + 2)?]);
    let known = labels.ends_with(&["example".into(), "test".into()]);
    let answer = known && qtype == 1;
    let mut reply = query[..2].to_vec();
    reply.extend_from_slice(&[0x81, if known { 0x80 } else { 0x83 }]);
    reply.extend_from_slice(&[0, 1, 0, u8::from(answer), 0, 0, 0, 0]);
    reply.extend_from_slice(query.get(12..question_end)?);
    if answer {
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        reply.extend_from_slice(&EXTERNAL_ANSWER);
    }
    Some(reply)
}

/// Serves [`upstream_reply`] on UDP until `stop` is set.
fn run_upstream(stop: Arc<AtomicBool>) {
    let socket = UdpSocket::bind(UPSTREAM).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = socket.recv_from(&mut buf)
            && let Some(reply) = upstream_reply(&buf[..n])
        {
            let _ = socket.send_to(&reply, from);
        }
    }
}

fn web_pod(name: &str, node: &str, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: web}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
{extra_spec}  containers:
  - name: web
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]
"#
    )
}

#[test]
fn pods_resolve_services_headless_pods_srv_and_external_names() {
    let c = NetnsCluster::start(
        "kl-dns",
        NODE_IP,
        "10.152.7.0/24",
        &["--upstream", UPSTREAM],
        &["--cluster-dns", "10.96.0.10"],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let upstream = {
        let stop = stop.clone();
        c.ns.spawn(move || run_upstream(stop))
    };
    let node = c.node.node_name.clone();

    // The kube-dns Service, as CoreDNS' is, pointing at the apiserver's DNS.
    let svc = c.kubectl(&["get", "svc", "-n", "kube-system", "-l", "k8s-app=kube-dns", "-o",
        "jsonpath={.items[0].metadata.name} {.items[0].spec.clusterIP} {.items[0].spec.ports[*].name}"]);
    assert_eq!(svc, "kube-dns 10.96.0.10 dns dns-tcp");
    let endpoints = c.kubectl(&[
        "get",
        "endpointslice",
        "kube-dns",
        "-n",
        "kube-system",
        "-o",
        "jsonpath={.endpoints[0].addresses[0]}",
    ]);
    assert_eq!(endpoints, NODE_IP);

    c.apply(
        r#"apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: nginx}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: web, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: docs}
spec:
  type: ExternalName
  externalName: docs.example.test
"#,
    );
    c.apply(&web_pod(
        "web-0",
        &node,
        "  hostname: web-0\n  subdomain: nginx\n",
    ));
    c.apply(&web_pod("web-1", &node, ""));
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: client\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    command: [\"sleep\", \"3600\"]\n"
    ));
    for p in ["web-0", "web-1", "client"] {
        c.wait_running(p);
    }
    let ip = |kind: &str, name: &str, path: &str| {
        c.kubectl(&["get", kind, name, "-o", &format!("jsonpath={{{path}}}")])
    };
    let web_ip = ip("svc", "web", ".spec.clusterIP");
    let pod0 = ip("pod", "web-0", ".status.podIP");
    let pod1 = ip("pod", "web-1", ".status.podIP");

    // The pod's resolv.conf, as kubelet writes it for ClusterFirst.
    let resolv = c.exec_ok("client", "cat /etc/resolv.conf");
    assert!(
        resolv.starts_with("search default.svc.cluster.local svc.cluster.local cluster.local")
            && resolv.contains("\nnameserver 10.96.0.10\n")
            && resolv.ends_with("options ndots:5\n"),
        "{resolv}"
    );
    // A pod with a subdomain: its FQDN in /etc/hosts.
    let hosts = c.exec_ok("web-0", "cat /etc/hosts");
    assert!(
        hosts.contains(&format!(
            "{pod0}\tweb-0.nginx.default.svc.cluster.local\tweb-0"
        )),
        "{hosts}"
    );

    let lookup = |args: &str| {
        let out = c.exec("client", &format!("nslookup {args}"));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // The first answer waits for the endpoints to reach the DNS and the proxy.
    let mut last = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !last.contains("Address: 10.96.0.1") {
        assert!(
            std::time::Instant::now() < deadline,
            "kubernetes did not resolve in a pod: {last}\n{}",
            c.diag()
        );
        // busybox's nslookup applies the search list to names without a
        // dot only (libc's resolver uses ndots, below).
        last = lookup("kubernetes");
    }
    // The libc resolver of the pod, search list and ndots:5: the name
    // `kubernetes.default` reaches the apiserver through its Service.
    let out = c.exec_ok(
        "client",
        "nc -w 3 kubernetes.default 443 </dev/null && echo connected",
    );
    assert!(out.contains("connected"), "{out}");
    let out = lookup("web.default.svc.cluster.local");
    assert!(out.contains(&format!("Address: {web_ip}")), "{out}");
    // Over TCP too (the `dns-tcp` port).
    let out = c.exec(
        "client",
        &format!("printf '' | nc -w 2 10.96.0.10 53 && echo tcp-open"),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("tcp-open"));

    // Headless: the ready pods' addresses, and each pod by name.
    let out = c.wait_for("nginx to list both pods", Duration::from_secs(30), || {
        let out = lookup("nginx.default.svc.cluster.local");
        (out.contains(&format!("Address: {pod0}")) && out.contains(&format!("Address: {pod1}")))
            .then_some(out)
    });
    assert!(!out.contains(&format!("Address: {web_ip}")), "{out}");
    let out = lookup("web-0.nginx.default.svc.cluster.local");
    assert!(out.contains(&format!("Address: {pod0}")), "{out}");
    let dashed = pod1.replace('.', "-");
    let out = lookup(&format!("{dashed}.nginx.default.svc.cluster.local"));
    assert!(out.contains(&format!("Address: {pod1}")), "{out}");

    // SRV for a named port.
    let out = lookup("-type=srv _http._tcp.web.default.svc.cluster.local");
    assert!(
        out.contains("service = 0 100 80 web.default.svc.cluster.local"),
        "{out}"
    );
    // PTR of the service's IP.
    let out = lookup(&web_ip);
    assert!(
        out.contains("name = web.default.svc.cluster.local"),
        "{out}"
    );
    // Unknown cluster names: NXDOMAIN.
    let out = lookup("nope.default.svc.cluster.local");
    assert!(out.contains("NXDOMAIN"), "{out}");

    // Outside the cluster: forwarded upstream; an ExternalName follows its CNAME.
    let out = lookup("www.example.test");
    assert!(out.contains("Address: 192.0.2.77"), "{out}");
    let out = lookup("docs.default.svc.cluster.local");
    assert!(
        out.contains("canonical name = docs.example.test") && out.contains("Address: 192.0.2.77"),
        "{out}"
    );
    // A short name through the search path, as applications resolve: the
    // libc resolver of the pod (not nslookup) connects to the service.
    let out = c.exec("client", "nc -w 3 web 80 </dev/null >/dev/null && echo connected || echo failed; printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 web 80 | tail -n 1");
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("web-"), "{out}");

    stop.store(true, Ordering::Relaxed);
    upstream.join().unwrap();
}
