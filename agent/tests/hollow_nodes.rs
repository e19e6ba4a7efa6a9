//! Hollow nodes through the real kubectl: one `kubelab-agent hollow`
//! process registers twenty Nodes that `kubectl get nodes` shows Ready, with
//! a pod CIDR each; a Deployment of 60 pods (a readiness probe each) is
//! spread over them by the scheduler and goes Running and Ready with
//! addresses of its node's CIDR; a Job's pods go Completed; and once the
//! process is gone the node lifecycle controller marks the nodes NotReady.
//! Two hundred nodes registering at once all get distinct pod CIDRs.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cluster::ApiServer;

const NODES: usize = 20;
const REPLICAS: usize = 60;

/// The hollow process; killed and reaped when dropped.
struct Hollow {
    child: Child,
    dir: tempfile::TempDir,
}

impl Hollow {
    fn start(api: &ApiServer, nodes: usize) -> Hollow {
        let dir = tempfile::Builder::new()
            .prefix("kubelab-hollow-")
            .tempdir()
            .unwrap();
        let log = std::fs::File::create(dir.path().join("hollow.log")).unwrap();
        let child = Command::new(common::agent_bin())
            .arg("--root-dir")
            .arg(dir.path())
            .arg("hollow")
            .arg("--kubeconfig")
            .arg(api.kubeconfig())
            .args(["--nodes", &nodes.to_string()])
            .args(["--node-name-prefix", "hollow-"])
            .args(["--node-lease-duration-seconds", "4"])
            .args(["--node-ip", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kubelab-agent hollow");
        Hollow { child, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("hollow.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Hollow {
    fn drop(&mut self) {
        self.kill();
    }
}

fn poll<T>(hollow: &Hollow, what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    common::poll_until(
        what,
        timeout,
        Duration::from_millis(500),
        || format!("hollow log (tail):\n{}", common::tail(&hollow.log(), 40)),
        check,
    )
}

/// `kubectl get nodes`' STATUS column of the hollow nodes, by name.
fn node_statuses(api: &ApiServer) -> Option<HashMap<String, String>> {
    let table = api.try_kubectl(&["get", "nodes", "--no-headers"])?;
    Some(
        table
            .lines()
            .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
            .filter(|c| c.len() > 1 && c[0].starts_with("hollow-"))
            .map(|c| (c[0].clone(), c[1].clone()))
            .collect(),
    )
}

/// The hollow nodes' `spec.podCIDR`s, by name, of those that have one;
/// `spec.podCIDRs` must say the same.
fn pod_cidrs(api: &ApiServer) -> Option<HashMap<String, String>> {
    let out = api.try_kubectl(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.spec.podCIDR} {.spec.podCIDRs[*]}{\"\\n\"}{end}",
    ])?;
    let mut m = HashMap::new();
    for line in out.lines().filter(|l| l.starts_with("hollow-")) {
        let mut cols = line.split(' ');
        let (name, cidr, cidrs) = (cols.next()?, cols.next()?, cols.next().unwrap_or(""));
        if !cidr.is_empty() {
            assert_eq!(cidr, cidrs, "{name}: podCIDR and podCIDRs differ");
            m.insert(name.to_string(), cidr.to_string());
        }
    }
    Some(m)
}

fn in_cidr(ip: &str, cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').unwrap();
    let (net, len): (Ipv4Addr, u32) = (net.parse().unwrap(), len.parse().unwrap());
    let mask = u32::MAX << (32 - len);
    ip.parse::<Ipv4Addr>()
        .is_ok_and(|ip| u32::from(ip) & mask == u32::from(net) & mask)
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 60
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: busybox
        command: [\"sh\", \"-c\", \"exec httpd -f -p 8080\"]
        resources:
          requests: {cpu: 100m, memory: 64Mi}
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 1
";

const JOB: &str = "apiVersion: batch/v1
kind: Job
metadata:
  name: batch
spec:
  completions: 3
  parallelism: 3
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      initContainers:
      - name: prepare
        image: busybox
        command: [\"true\"]
      containers:
      - name: work
        image: busybox
        command: [\"true\"]
";

#[test]
fn hollow_nodes_run_a_deployment_and_go_not_ready_when_their_process_dies() {
    let api = ApiServer::start_with(&[
        "--allocate-node-cidrs=true",
        "--node-monitor-grace-period=4s",
        "--node-monitor-period=1s",
    ]);
    let mut hollow = Hollow::start(&api, NODES);
    let statuses = poll(
        &hollow,
        "20 Ready hollow nodes",
        Duration::from_secs(90),
        || {
            let s = node_statuses(&api)?;
            (s.len() == NODES && s.values().all(|v| v == "Ready")).then_some(s)
        },
    );
    assert!(statuses.contains_key("hollow-0") && statuses.contains_key("hollow-19"));
    let cidrs: HashMap<String, String> =
        poll(&hollow, "pod CIDRs", Duration::from_secs(30), || {
            let m = pod_cidrs(&api)?;
            (m.len() == NODES).then_some(m)
        });
    let capacity = api.kubectl(&[
        "get",
        "node",
        "hollow-3",
        "-o",
        "jsonpath={.status.capacity}",
    ]);
    assert!(
        capacity.contains("\"pods\":\"110\"") && capacity.contains("\"cpu\":\"4\""),
        "{capacity}"
    );

    api.apply(DEPLOYMENT);
    poll(
        &hollow,
        "60 ready replicas",
        Duration::from_secs(180),
        || {
            let ready = api.try_kubectl(&[
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.status.readyReplicas}",
            ])?;
            (ready.trim() == REPLICAS.to_string()).then_some(())
        },
    );
    let pods = api.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={range .items[*]}{.spec.nodeName} {.status.podIP} {.status.phase}{\"\\n\"}{end}",
    ]);
    let rows: Vec<Vec<&str>> = pods.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(rows.len(), REPLICAS, "{pods}");
    let mut ips = HashSet::new();
    let mut nodes = HashSet::new();
    for row in &rows {
        let [node, ip, phase] = row[..] else {
            panic!("row {row:?}");
        };
        assert_eq!(phase, "Running", "{pods}");
        assert!(
            in_cidr(ip, &cidrs[node]),
            "{ip} not in {node}'s {}",
            cidrs[node]
        );
        ips.insert(ip);
        nodes.insert(node);
    }
    assert_eq!(
        ips.len(),
        REPLICAS,
        "every pod has an address of its own:\n{pods}"
    );
    assert!(
        nodes.len() >= NODES / 2,
        "the pods are spread over the nodes, not piled on a few:\n{pods}"
    );
    // A hollow node lists the images of the pods it ran, as kubemark's do.
    let node = rows[0][0];
    poll(
        &hollow,
        "the pods' image in the node's status.images",
        Duration::from_secs(30),
        || {
            let names = api.try_kubectl(&[
                "get",
                "node",
                node,
                "-o",
                "jsonpath={.status.images[*].names[*]}",
            ])?;
            names
                .split_whitespace()
                .any(|n| n == "docker.io/library/busybox:latest")
                .then_some(())
        },
    );
    let table = api.kubectl(&["get", "pods", "-l", "app=web", "--no-headers"]);
    assert!(
        table
            .lines()
            .all(|l| l.contains(" 1/1 ") && l.contains("Running")),
        "{table}"
    );

    // Run-to-completion pods finish: init container, then the main one.
    api.apply(JOB);
    api.kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/batch",
        "--timeout=120s",
    ]);
    let phases = api.kubectl(&[
        "get",
        "pods",
        "-l",
        "job-name=batch",
        "-o",
        "jsonpath={.items[*].status.phase}",
    ]);
    assert_eq!(
        phases
            .split_whitespace()
            .filter(|p| *p == "Succeeded")
            .count(),
        3,
        "{phases}"
    );

    // No process, no heartbeats: the node lifecycle controller notices.
    hollow.kill();
    poll(
        &hollow,
        "every hollow node NotReady",
        Duration::from_secs(60),
        || {
            let s = node_statuses(&api)?;
            (s.len() == NODES && s.values().all(|v| v == "NotReady")).then_some(())
        },
    );
}

#[test]
fn two_hundred_nodes_registering_at_once_all_get_distinct_pod_cidrs() {
    const MANY: usize = 200;
    let api = ApiServer::start_with(&["--allocate-node-cidrs=true"]);
    let hollow = Hollow::start(&api, MANY);
    let cidrs = poll(
        &hollow,
        "a pod CIDR on each of 200 hollow nodes",
        Duration::from_secs(240),
        || {
            let m = pod_cidrs(&api)?;
            (m.len() == MANY).then_some(m)
        },
    );
    let distinct: HashSet<&String> = cidrs.values().collect();
    assert_eq!(distinct.len(), MANY, "no subnet is given twice: {cidrs:?}");
    for (node, cidr) in &cidrs {
        assert!(
            cidr.ends_with("/24") && in_cidr(cidr.split('/').next().unwrap(), "10.244.0.0/16"),
            "{node}'s {cidr} is a /24 of the default --cluster-cidr"
        );
    }
}
