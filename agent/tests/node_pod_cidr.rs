//! A cluster node without `--pod-cidr` networks its pods in the subnet the
//! apiserver's node IPAM assigns its Node. The apiserver and the agent both
//! run inside a network namespace this test creates (the bridge goes there,
//! never on the host's interfaces); everything is removed on drop.

mod common;
#[path = "common/netns_cluster.rs"]
mod netns_cluster;

use std::time::Duration;

use netns_cluster::NetnsCluster;
use serde_json::Value;

const WEB: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox
    command: [\"sh\", \"-c\", \"exec sleep 3600\"]
";

#[test]
fn node_without_pod_cidr_flag_uses_the_nodes_assigned_pod_cidr() {
    // No --pod-cidr: the apiserver's node IPAM gives the Node its subnet.
    let c = NetnsCluster::start_nodes("kl-cidr", 1, &[]);
    let node = &c.node;
    let conf_dir = std::path::PathBuf::from(node.arg_value("--cni-conf-dir").unwrap());
    node.write_manifest("web.yaml", WEB);
    let pod = node.wait_running("web");
    let ip = pod["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let cidr = c.kubectl(&[
        "get",
        "node",
        &node.node_name,
        "-o",
        "jsonpath={.spec.podCIDR}",
    ]);
    assert_eq!(cidr, "10.244.0.0/24");
    assert_eq!(
        ip, "10.244.0.2",
        "the first pod address of the node's subnet"
    );
    let written: Value =
        serde_json::from_slice(&std::fs::read(conf_dir.join("10-kubelab.conflist")).unwrap())
            .unwrap();
    assert_eq!(
        written["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
        "10.244.0.0/24"
    );
    let log = node.agent_log();
    assert!(
        log.contains("waiting up to 10s for the Node's spec.podCIDR"),
        "{log}"
    );
    assert!(
        log.contains("using the Node's spec.podCIDR for the pod network"),
        "{log}"
    );

    node.remove_manifest("web.yaml");
    node.wait_for("pods gone", Duration::from_secs(30), |n| {
        n.pods().is_empty().then_some(())
    });
}
