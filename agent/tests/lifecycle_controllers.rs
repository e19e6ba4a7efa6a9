//! The control plane's controllers with a real node: a deleted namespace
//! stays `Terminating` while the agent stops its pods gracefully, and goes
//! once they are gone; a Deployment's pods run as real containers through
//! `kubectl create deployment`, `scale`, `set image` and `rollout undo`.

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

/// The node's view of the Deployment's pods: (image, phase) of each pod the
/// agent runs for it, sorted.
fn web_pods_on_node(node: &common::TestNode) -> Vec<(String, String)> {
    let mut pods: Vec<(String, String)> = node
        .pods()
        .iter()
        .filter(|p| p["metadata"]["labels"]["app"] == "web")
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                p["status"]["phase"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    pods.sort();
    pods
}

#[test]
fn a_deployment_runs_scales_rolls_out_and_back_on_a_real_node() {
    let api = ApiServer::start();
    // The host's disk is shared with builds: no DiskPressure taint unless
    // it is really full.
    let node = api.join_with(&[
        "--eviction-hard",
        "memory.available<1Mi,nodefs.available<1%",
    ]);
    let name = node.node_name.clone();
    wait_for(&node, "node Ready", Duration::from_secs(20), || {
        (row(&api.try_kubectl(&["get", "nodes"])?, &name)?[1] == "Ready").then_some(())
    });
    let rollout_status = || {
        let out = api.kubectl_with(&["rollout", "status", "deploy/web", "--timeout=180s"], None);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("deployment \"web\" successfully rolled out"),
            "rollout status: {stdout}{}\n{}\napiserver log (tail):\n{}",
            String::from_utf8_lossy(&out.stderr),
            api.kubectl(&["get", "deploy,rs,pods,events", "-o", "wide"]),
            common::tail(&api.log(), 60)
        );
    };
    api.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=2",
        "--",
        "sh",
        "-c",
        "exec sleep 3600",
    ]);
    // The shell loop ignores SIGTERM: a short grace period keeps the
    // rollout quick (a template change, so revision 2).
    api.kubectl(&[
        "patch",
        "deploy/web",
        "-p",
        r#"{"spec":{"template":{"spec":{"terminationGracePeriodSeconds":1}}}}"#,
    ]);
    rollout_status();
    wait_for(
        &node,
        "2 pods running on the node",
        Duration::from_secs(60),
        || {
            (web_pods_on_node(&node) == vec![("busybox".to_owned(), "Running".to_owned()); 2])
                .then_some(())
        },
    );

    api.kubectl(&["scale", "deploy/web", "--replicas=3"]);
    rollout_status();
    wait_for(
        &node,
        "3 pods running on the node",
        Duration::from_secs(60),
        || {
            (web_pods_on_node(&node) == vec![("busybox".to_owned(), "Running".to_owned()); 3])
                .then_some(())
        },
    );
    let deploy = api.kubectl(&["get", "deploy", "web", "--no-headers"]);
    assert_eq!(
        row(&deploy, "web").unwrap()[1..4],
        ["3/3", "3", "3"],
        "{deploy}"
    );

    // A new image: a new ReplicaSet takes over, the old one is scaled to 0.
    api.kubectl(&[
        "annotate",
        "deploy/web",
        "kubernetes.io/change-cause=image busybox:latest",
    ]);
    api.kubectl(&["set", "image", "deploy/web", "busybox=busybox:latest"]);
    rollout_status();
    wait_for(
        &node,
        "the new image on the node",
        Duration::from_secs(90),
        || {
            (web_pods_on_node(&node)
                == vec![("busybox:latest".to_owned(), "Running".to_owned()); 3])
            .then_some(())
        },
    );
    let rss = api.kubectl(&[
        "get",
        "rs",
        "-l",
        "app=web",
        "-o",
        r#"jsonpath={range .items[*]}{.spec.template.spec.containers[0].image}={.spec.replicas}{"\n"}{end}"#,
    ]);
    let mut rss: Vec<&str> = rss.lines().collect();
    rss.sort();
    assert_eq!(
        rss,
        ["busybox:latest=3", "busybox=0", "busybox=0"],
        "revisions 1 and 2 kept at zero"
    );
    let history = api.kubectl(&["rollout", "history", "deploy/web"]);
    assert!(
        history
            .lines()
            .any(|l| l.starts_with('3') && l.contains("image busybox:latest")),
        "{history}"
    );

    // Back to revision 2: the old image runs again.
    api.kubectl(&["rollout", "undo", "deploy/web"]);
    rollout_status();
    wait_for(
        &node,
        "the old image back on the node",
        Duration::from_secs(90),
        || {
            (web_pods_on_node(&node) == vec![("busybox".to_owned(), "Running".to_owned()); 3])
                .then_some(())
        },
    );
    let revision = api.kubectl(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
    ]);
    assert_eq!(
        revision, "4",
        "the rolled-back template is the newest revision"
    );

    api.kubectl(&[
        "delete",
        "deploy",
        "web",
        "--cascade=foreground",
        "--timeout=90s",
    ]);
    api.delete_all_pods();
    wait_for(
        &node,
        "the node to stop the pods",
        Duration::from_secs(60),
        || web_pods_on_node(&node).is_empty().then_some(()),
    );
}
