//! The control plane's lifecycle controllers with a real node: a deleted
//! namespace stays `Terminating` while the agent stops its pods gracefully,
//! and goes once they are gone.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::time::Duration;

use cluster::{ApiServer, row, wait_for};

#[test]
fn a_deleted_namespace_waits_for_the_node_to_stop_its_pods() {
    let api = ApiServer::start();
    let node = api.join();
    let name = node.node_name.clone();
    wait_for(&node, "node Ready", Duration::from_secs(20), || {
        (row(&api.try_kubectl(&["get", "nodes"])?, &name)?[1] == "Ready").then_some(())
    });
    api.kubectl(&["create", "namespace", "dev"]);
    api.apply(&format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: sleeper
  namespace: dev
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: busybox
    command: [\"sh\", \"-c\", \"exec sleep 3600\"]
"
    ));
    wait_for(&node, "sleeper Running", Duration::from_secs(30), || {
        (row(&api.try_kubectl(&["get", "pods", "-n", "dev"])?, "sleeper")?[2] == "Running")
            .then_some(())
    });
    api.kubectl(&["delete", "namespace", "dev", "--wait=false"]);
    let ns = api.kubectl(&["get", "namespace", "dev", "--no-headers"]);
    assert_eq!(row(&ns, "dev").unwrap()[1], "Terminating", "{ns}");
    // The pod terminates through its kubelet: Terminating first, then gone.
    wait_for(
        &node,
        "sleeper Terminating",
        Duration::from_secs(10),
        || {
            let pods = api.try_kubectl(&["get", "pods", "-n", "dev"])?;
            match row(&pods, "sleeper") {
                Some(r) if r[2] == "Terminating" => Some(true),
                // Already gone: the grace period is short.
                None => Some(false),
                Some(_) => None,
            }
        },
    );
    api.kubectl(&["wait", "--for=delete", "namespace/dev", "--timeout=60s"]);
    assert!(
        node.pods()
            .iter()
            .all(|p| p["metadata"]["name"] != "sleeper"),
        "the node stopped the pod"
    );
}
