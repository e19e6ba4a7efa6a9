//! `kubectl logs` and `kubectl top` through the apiserver to a node's kubelet
//! API (a fake node serving `/containerLogs` and `/stats/summary` here):
//! logs stream with `-f`, top shows the Summary API's figures.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::fake_node::FakeNode;
use common::{ApiServer, rows};

const POD_ON_NODE1: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  nodeName: node1
  containers:
  - name: nginx
    image: nginx:1.25
";

fn cluster_with_node() -> (ApiServer, FakeNode) {
    let s = ApiServer::start();
    let ca = std::fs::read_to_string(s.data_dir().join("ca.crt")).unwrap();
    let node = FakeNode::start("node1", &ca);
    s.ok(&[
        "create",
        "-f",
        &s.file("node.yaml", &node.node_yaml("node1")),
    ]);
    s.ok(&["create", "-f", &s.file("pod.yaml", POD_ON_NODE1)]);
    (s, node)
}

#[test]
fn kubectl_logs_reads_the_container_log_from_the_node() {
    let (s, node) = cluster_with_node();
    assert_eq!(
        s.ok(&["logs", "web"]),
        "nginx line 1\nnginx line 2\nnginx line 3\n"
    );
    assert_eq!(
        s.ok(&["logs", "web", "-c", "nginx", "--tail", "1", "--timestamps"]),
        "nginx line 3\n"
    );
    let seen = node.log_requests.lock().unwrap().clone();
    assert_eq!(seen[0], "default/web/nginx?");
    // The apiserver came with its kubelet client certificate.
    assert_eq!(
        node.users.lock().unwrap()[0],
        "kube-apiserver-kubelet-client"
    );
    assert_eq!(seen[1], "default/web/nginx?tailLines=1&timestamps=true");

    let err = s.fails(&["logs", "web", "-c", "sidecar"]);
    assert!(
        err.contains("container sidecar is not valid for pod web"),
        "{err}"
    );
    s.ok(&[
        "create",
        "-f",
        &s.file(
            "pending.yaml",
            &POD_ON_NODE1
                .replace("name: web", "name: pending")
                // A scheduler that doesn't run: it stays unassigned.
                .replace("  nodeName: node1\n", "  schedulerName: none\n"),
        ),
    ]);
    let err = s.fails(&["logs", "pending"]);
    assert!(
        err.contains("pod pending does not have a host assigned"),
        "{err}"
    );
}

#[test]
fn kubectl_logs_follow_streams_new_lines_as_the_node_writes_them() {
    let (s, _node) = cluster_with_node();
    let mut child = s
        .kubectl_cmd(&["logs", "-f", "web"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Vec<String> = (0..5).map(|_| lines.next().unwrap().unwrap()).collect();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        first,
        [
            "nginx line 1",
            "nginx line 2",
            "nginx line 3",
            "follow 1",
            "follow 2"
        ]
    );
}

#[test]
fn kubectl_top_shows_usage_from_the_nodes_summary_api() {
    let (s, _node) = cluster_with_node();
    s.ok(&["create", "namespace", "prod"]);
    let db = POD_ON_NODE1
        .replace(
            "name: web",
            "name: db\n  namespace: prod\n  labels: {app: db}",
        )
        .replace("name: nginx", "name: postgres");
    s.ok(&["create", "-f", &s.file("db.yaml", &db)]);

    let nodes = rows(&s.ok(&["top", "node"]));
    assert_eq!(
        nodes[0],
        ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
    );
    assert_eq!(nodes[1], ["node1", "250m", "12%", "1024Mi", "25%"]);

    let pods = rows(&s.ok(&["top", "pod"]));
    assert_eq!(
        pods,
        [
            vec!["NAME", "CPU(cores)", "MEMORY(bytes)"],
            vec!["web", "100m", "64Mi"]
        ]
    );
    let all = rows(&s.ok(&["top", "pod", "-A", "--containers"]));
    assert_eq!(
        all[0],
        ["NAMESPACE", "POD", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    );
    assert_eq!(
        all[1..],
        [
            vec!["default", "web", "nginx", "100m", "64Mi"],
            vec!["prod", "db", "postgres", "5m", "32Mi"]
        ]
    );
    assert_eq!(
        rows(&s.ok(&["top", "pod", "-n", "prod", "-l", "app=db", "--no-headers"])),
        [["db", "5m", "32Mi"]]
    );
    let err = s.fails(&["top", "pod", "nothere"]);
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
}
