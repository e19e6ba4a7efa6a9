//! Services' other half, judged by kubectl: the endpoints controller keeps
//! `Endpoints` and EndpointSlices in step with the pods (their status set
//! through the status subresource, as the agent sets it), the `kubernetes`
//! service points at the apiserver, node ports don't collide, and nodes get
//! distinct pod CIDRs that survive a restart.

mod common;

use std::time::{Duration, Instant};

use common::etcd::EtcdServer;
use common::{ApiServer, NODE1, rows};
use serde_json::{Value, json};

/// A pod of the `web` app with a container port named `http`.
fn web_pod(name: &str, container_ports: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: web
spec:
  nodeName: node1
  containers:
  - name: main
    image: busybox
{container_ports}"
    )
}

const HTTP_8080: &str = "    ports:
    - name: http
      containerPort: 8080
";

/// Sets a pod's IP and Ready condition through `pods/status`, as the
/// agent's status manager does.
fn set_pod_status(s: &ApiServer, pod: &str, ip: &str, ready: bool) {
    let status = json!({"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "10.0.0.5",
        "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}});
    s.ok(&[
        "patch",
        "pod",
        pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
}

fn get_json(s: &ApiServer, path: &str) -> (u16, Value) {
    let (code, body) = s.curl(&[&format!("{}{path}", s.url())]);
    (code, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Polls `path` with curl (a few ms a request) until `ok` holds; returns
/// how long that took.
fn wait_for(s: &ApiServer, path: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let (code, v) = get_json(s, path);
        if code == 200 && ok(&v) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}; last {path}: {v:#}\nserver log:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The IPs of a subset field (`addresses` / `notReadyAddresses`) over all subsets.
fn ips(endpoints: &Value, field: &str) -> Vec<String> {
    let mut v: Vec<String> = endpoints["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s[field].as_array().cloned().unwrap_or_default())
        .map(|a| a["ip"].as_str().unwrap_or_default().to_owned())
        .collect();
    v.sort();
    v
}

const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";

fn slices_of(s: &ApiServer, service: &str) -> Vec<Value> {
    let (_, list) = get_json(
        s,
        &format!("{SLICES}?labelSelector=kubernetes.io/service-name%3D{service}"),
    );
    list["items"].as_array().cloned().unwrap_or_default()
}

/// (address, ready, serving, terminating) of every endpoint of a service's slices.
fn slice_endpoints(slices: &[Value]) -> Vec<(String, bool, bool, bool)> {
    let mut v: Vec<_> = slices
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            let c = &e["conditions"];
            (
                e["addresses"][0].as_str().unwrap_or_default().to_owned(),
                c["ready"] == true,
                c["serving"] == true,
                c["terminating"] == true,
            )
        })
        .collect();
    v.sort();
    v
}

/// The whole endpoints workflow; run on both storage backends.
fn endpoints_follow_pods(s: &ApiServer) {
    for (i, name) in ["web-0", "web-1", "web-2"].iter().enumerate() {
        let file = s.file(&format!("{name}.yaml"), &web_pod(name, HTTP_8080));
        s.ok(&["create", "-f", &file]);
        set_pod_status(s, name, &format!("10.244.0.1{i}"), true);
    }
    assert_eq!(
        s.ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"])
            .trim(),
        "service/web created"
    );
    let ep_path = "/api/v1/namespaces/default/endpoints/web";
    let all_ready = ["10.244.0.10", "10.244.0.11", "10.244.0.12"];
    wait_for(s, ep_path, "three ready addresses", |e| {
        ips(e, "addresses") == all_ready
    });

    let table = rows(&s.ok(&["get", "endpoints", "web"]));
    assert_eq!(table[0], ["NAME", "ENDPOINTS", "AGE"]);
    assert_eq!(
        table[1][..2],
        ["web", "10.244.0.10:8080,10.244.0.11:8080,10.244.0.12:8080"]
    );
    let (_, ep) = get_json(s, ep_path);
    let a0 = &ep["subsets"][0]["addresses"][0];
    assert_eq!(a0["nodeName"], "node1");
    assert_eq!(a0["targetRef"]["kind"], "Pod");
    assert_eq!(a0["targetRef"]["name"], "web-0");
    // kubectl names the port `<port>-<targetPort>`.
    assert_eq!(
        ep["subsets"][0]["ports"],
        json!([{"name": "80-8080", "port": 8080, "protocol": "TCP"}])
    );

    let table = rows(&s.ok(&["get", "endpointslices"]));
    assert_eq!(
        table[0],
        ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    );
    let row = table
        .iter()
        .find(|r| r[0].starts_with("web-"))
        .unwrap_or_else(|| panic!("no web slice: {table:?}"));
    assert_eq!(
        row[1..4],
        ["IPv4", "8080", "10.244.0.10,10.244.0.11,10.244.0.12"]
    );
    let slices = slices_of(s, "web");
    assert_eq!(slices.len(), 1);
    let slice = &slices[0];
    let svc_uid = s.ok(&["get", "svc", "web", "-o", "jsonpath={.metadata.uid}"]);
    assert_eq!(
        slice["metadata"]["ownerReferences"][0]["uid"],
        svc_uid.as_str()
    );
    assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Service");
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(
        slice["ports"],
        json!([{"name": "80-8080", "port": 8080, "protocol": "TCP"}])
    );

    // Nothing changes, so nothing is written: the objects stay at their
    // resourceVersions (no write loop between the controller and its feed).
    let rv = |v: &Value| v["metadata"]["resourceVersion"].clone();
    let (ep_rv, slice_rv) = (rv(&ep), rv(slice));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rv(&get_json(s, ep_path).1), ep_rv);
    assert_eq!(rv(&slices_of(s, "web")[0]), slice_rv);

    // web-1 turns not ready: it moves to notReadyAddresses, ready=false.
    set_pod_status(s, "web-1", "10.244.0.11", false);
    let took = wait_for(s, ep_path, "web-1 not ready", |e| {
        ips(e, "notReadyAddresses") == ["10.244.0.11"]
            && ips(e, "addresses") == ["10.244.0.10", "10.244.0.12"]
    });
    assert!(took < Duration::from_secs(1), "took {took:?}");
    eprintln!("not-ready to Endpoints: {took:?}");
    let slices = slices_of(s, "web");
    assert_eq!(slices[0]["metadata"]["name"], slice["metadata"]["name"]);
    assert_eq!(
        slice_endpoints(&slices)[1],
        ("10.244.0.11".to_owned(), false, false, false)
    );
    assert_eq!(
        rows(&s.ok(&["get", "ep", "web"]))[1][1],
        "10.244.0.10:8080,10.244.0.12:8080"
    );

    // A deleted pod on a node terminates first: out of Endpoints, kept in
    // the slice as terminating; gone from both once it is removed.
    s.ok(&["delete", "pod", "web-2", "--wait=false"]);
    let took = wait_for(s, ep_path, "web-2 out of Endpoints", |e| {
        ips(e, "addresses") == ["10.244.0.10"]
    });
    assert!(took < Duration::from_secs(1), "took {took:?}");
    wait_for(s, SLICES, "web-2 terminating in the slice", |_| {
        slice_endpoints(&slices_of(s, "web")).contains(&(
            "10.244.0.12".to_owned(),
            false,
            true,
            true,
        ))
    });
    s.ok(&["delete", "pod", "web-2", "--grace-period=0", "--force"]);
    let took = wait_for(s, SLICES, "web-2 out of the slice", |_| {
        slice_endpoints(&slices_of(s, "web")).len() == 2
    });
    assert!(took < Duration::from_secs(1), "took {took:?}");

    // A named targetPort resolves per pod; a pod without that port is left out.
    let file = s.file("noport.yaml", &web_pod("web-noport", ""));
    s.ok(&["create", "-f", &file]);
    set_pod_status(s, "web-noport", "10.244.0.20", true);
    assert_eq!(
        s.ok(&[
            "expose",
            "pod",
            "web-0",
            "--name=web-named",
            "--port=80",
            "--target-port=http"
        ])
        .trim(),
        "service/web-named exposed"
    );
    wait_for(
        s,
        "/api/v1/namespaces/default/endpoints/web-named",
        "the named port's endpoints",
        |e| {
            ips(e, "addresses") == ["10.244.0.10"]
                && ips(e, "notReadyAddresses") == ["10.244.0.11"]
                && e["subsets"][0]["ports"][0]["port"] == 8080
        },
    );
    // The numeric targetPort of `web` takes the port-less pod as is.
    wait_for(s, ep_path, "web-noport in web", |e| {
        ips(e, "addresses") == ["10.244.0.10", "10.244.0.20"]
    });

    // A service without a selector: its endpoints are the user's.
    let manual = s.file(
        "manual.yaml",
        "apiVersion: v1
kind: Service
metadata:
  name: manual
spec:
  ports:
  - port: 5432
---
apiVersion: v1
kind: Endpoints
metadata:
  name: manual
subsets:
- addresses:
  - ip: 192.0.2.7
  ports:
  - port: 5432
",
    );
    s.ok(&["create", "-f", &manual]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        rows(&s.ok(&["get", "endpoints", "manual"]))[1][1],
        "192.0.2.7:5432"
    );
    assert!(slices_of(s, "manual").is_empty());

    // Deleting a service deletes its Endpoints and slices.
    s.ok(&["delete", "service", "web"]);
    wait_for(s, SLICES, "web's slices gone", |_| {
        slices_of(s, "web").is_empty()
    });
    let (code, _) = get_json(s, ep_path);
    assert_eq!(code, 404);
}

#[test]
fn endpoints_and_slices_follow_pod_readiness_and_deletion() {
    let s = ApiServer::start();
    endpoints_follow_pods(&s);
}

#[test]
fn endpoints_and_slices_follow_pods_on_etcd() {
    let etcd = EtcdServer::start();
    let s = ApiServer::start_with(&["--etcd-servers", &etcd.url()]);
    endpoints_follow_pods(&s);
}

#[test]
fn node_ports_are_allocated_once_and_checked() {
    let s = ApiServer::start();
    assert_eq!(
        s.ok(&[
            "create",
            "service",
            "nodeport",
            "web",
            "--tcp=80:8080",
            "--node-port=30080"
        ])
        .trim(),
        "service/web created"
    );
    let err = s.fails(&[
        "create",
        "service",
        "nodeport",
        "web2",
        "--tcp=80:8080",
        "--node-port=30080",
    ]);
    assert!(
        err.contains(r#"Service "web2" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"#),
        "{err}"
    );
    let err = s.fails(&[
        "create",
        "service",
        "nodeport",
        "web3",
        "--tcp=80:8080",
        "--node-port=40000",
    ]);
    assert!(
        err.contains("spec.ports[0].nodePort: Invalid value: 40000: provided port is not in the valid range. The range of valid ports is 30000-32767"),
        "{err}"
    );
    // The status code is 422, as kube-apiserver answers.
    let body = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web4"},
        "spec": {"type": "NodePort", "selector": {"app": "web"},
                 "ports": [{"port": 80, "nodePort": 30080}]}});
    let (code, _) = s.curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &body.to_string(),
        &format!("{}/api/v1/namespaces/default/services", s.url()),
    ]);
    assert_eq!(code, 422);

    // An allocated port; switching a service to NodePort allocates one too.
    s.ok(&["create", "service", "nodeport", "auto", "--tcp=80:8080"]);
    let auto: i64 = s
        .ok(&[
            "get",
            "svc",
            "auto",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])
        .parse()
        .unwrap();
    assert!((30000..=32767).contains(&auto) && auto != 30080, "{auto}");
    s.ok(&["create", "service", "clusterip", "later", "--tcp=80:8080"]);
    s.ok(&[
        "patch",
        "svc",
        "later",
        "-p",
        r#"{"spec":{"type":"NodePort"}}"#,
    ]);
    let later: i64 = s
        .ok(&[
            "get",
            "svc",
            "later",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])
        .parse()
        .unwrap();
    assert!(![30080, auto].contains(&later) && later >= 30000, "{later}");
    let table = rows(&s.ok(&["get", "svc", "web"]));
    assert_eq!(
        table[1][..5],
        ["web", "NodePort", "10.96.0.2", "<none>", "80:30080/TCP"]
    );
}

#[test]
fn kubernetes_service_points_at_the_apiserver_from_the_service_range() {
    let s = ApiServer::start_with(&["--service-cluster-ip-range", "10.100.0.0/16"]);
    let svc = rows(&s.ok(&["get", "svc", "kubernetes"]));
    assert_eq!(
        svc[1][..5],
        ["kubernetes", "ClusterIP", "10.100.0.1", "<none>", "443/TCP"]
    );
    let target = s.ok(&[
        "get",
        "svc",
        "kubernetes",
        "-o",
        "jsonpath={.spec.ports[0].name} {.spec.ports[0].targetPort}",
    ]);
    assert_eq!(target, format!("https {}", s.port));
    let ep = rows(&s.ok(&["get", "endpoints", "kubernetes"]));
    assert_eq!(ep[1][1], format!("127.0.0.1:{}", s.port));
    let slice = rows(&s.ok(&["get", "endpointslice", "kubernetes"]));
    assert_eq!(
        slice[1][..4],
        ["kubernetes", "IPv4", &s.port.to_string(), "127.0.0.1"]
    );
    s.ok(&["create", "service", "clusterip", "next", "--tcp=80"]);
    assert_eq!(
        s.ok(&["get", "svc", "next", "-o", "jsonpath={.spec.clusterIP}"]),
        "10.100.0.2"
    );
    let err = s.fails(&[
        "create",
        "service",
        "clusterip",
        "out",
        "--tcp=80",
        "--clusterip=10.96.0.50",
    ]);
    assert!(
        err.contains("the provided IP (10.96.0.50) is not in the valid range. The range of valid IPs is 10.100.0.0/16"),
        "{err}"
    );

    // The endpoints controller leaves the selector-less `kubernetes` alone,
    // and a deleted kubernetes Endpoints comes back with the reconciler.
    s.ok(&["delete", "endpoints", "kubernetes"]);
    let start = Instant::now();
    while s
        .kubectl(&["get", "endpoints", "kubernetes"])
        .status
        .success()
    {
        assert!(start.elapsed() < Duration::from_secs(5), "not deleted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let start = Instant::now();
    while !s
        .kubectl(&["get", "endpoints", "kubernetes"])
        .status
        .success()
    {
        assert!(start.elapsed() < Duration::from_secs(15), "not reconciled");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn node(name: &str) -> String {
    NODE1
        .replace("name: node1", &format!("name: {name}"))
        .replace("hostname: node1", &format!("hostname: {name}"))
}

fn pod_cidrs(s: &ApiServer) -> Vec<(String, String)> {
    let out = s.ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.spec.podCIDR},{.spec.podCIDRs[0]}{\"\\n\"}{end}",
    ]);
    out.lines()
        .filter_map(|l| {
            let (name, cidrs) = l.split_once('=')?;
            let (one, list) = cidrs.split_once(',')?;
            assert_eq!(one, list, "podCIDR and podCIDRs[0] differ for {name}");
            Some((name.to_owned(), one.to_owned()))
        })
        .collect()
}

fn wait_for_cidrs(s: &ApiServer, n: usize) -> Vec<(String, String)> {
    let start = Instant::now();
    loop {
        let got = pod_cidrs(s);
        if got.iter().filter(|(_, c)| !c.is_empty()).count() == n {
            return got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{got:?}\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn nodes_get_distinct_pod_cidrs_that_survive_a_restart() {
    // Two /24s in the cluster CIDR: the third node has to wait for one.
    let mut s = ApiServer::start_with(&["--cluster-cidr", "10.244.0.0/23"]);
    for n in ["node1", "node2"] {
        let file = s.file(&format!("{n}.yaml"), &node(n));
        s.ok(&["create", "-f", &file]);
    }
    let got = wait_for_cidrs(&s, 2);
    assert_eq!(
        got,
        [
            ("node1".to_owned(), "10.244.0.0/24".to_owned()),
            ("node2".to_owned(), "10.244.1.0/24".to_owned())
        ]
    );

    s.restart();
    assert_eq!(wait_for_cidrs(&s, 2), got, "allocations survive a restart");
    let file = s.file("node3.yaml", &node("node3"));
    s.ok(&["create", "-f", &file]);
    let start = Instant::now();
    loop {
        let events = s.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=node3",
        ]);
        if events.contains("CIDRNotAvailable")
            && events.contains("Node node3 status is now: CIDRNotAvailable")
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{events}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(pod_cidrs(&s).contains(&("node3".to_owned(), String::new())));

    // node2's subnet is released with it and goes to the waiting node3.
    s.ok(&["delete", "node", "node2"]);
    let got = wait_for_cidrs(&s, 2);
    assert_eq!(
        got,
        [
            ("node1".to_owned(), "10.244.0.0/24".to_owned()),
            ("node3".to_owned(), "10.244.1.0/24".to_owned())
        ]
    );
}

#[test]
fn nodes_keep_no_pod_cidr_without_allocate_node_cidrs() {
    let s = ApiServer::start_with(&["--allocate-node-cidrs=false"]);
    let file = s.file("node1.yaml", NODE1);
    s.ok(&["create", "-f", &file]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pod_cidrs(&s), [("node1".to_owned(), String::new())]);
}

#[test]
fn python_client_lists_endpoint_slices() {
    let s = ApiServer::start();
    let file = s.file("web-0.yaml", &web_pod("web-0", HTTP_8080));
    s.ok(&["create", "-f", &file]);
    set_pod_status(&s, "web-0", "10.244.0.10", true);
    s.ok(&["create", "service", "clusterip", "web", "--tcp=80:http"]);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/endpoint_slices.py"
    );
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(script)
        .arg(s.kubeconfig())
        .output()
        .expect("run /usr/bin/python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );
    assert!(stdout.contains("endpoint slices: OK"), "{stdout}");
}
