//! The control plane's controllers with a real node: a deleted namespace
//! stays `Terminating` while the agent stops its pods gracefully, and goes
//! once they are gone; a Deployment's pods run as real containers through
//! `kubectl create deployment`, `scale`, `set image` and `rollout undo`;
//! on two real nodes, a DaemonSet's pods, NoExecute taint eviction and the
//! PodGC of a deleted Node.

#[path = "common/cluster.rs"]
mod cluster;
mod common;
#[path = "common/netns_cluster.rs"]
mod netns_cluster;

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

const SLEEPER_DS: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        command: [\"sh\", \"-c\", \"exec sleep 3600\"]
";

/// A pod bound to `node` by its spec, with `extra` spec lines.
fn sleeper_on(name: &str, node: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
{extra}  containers:
  - name: c
    image: busybox
    command: [\"sh\", \"-c\", \"exec sleep 3600\"]
"
    )
}

/// The pods a node's agent runs (Running, not being deleted), sorted.
fn running_on(node: &common::TestNode) -> Vec<String> {
    let mut names: Vec<String> = node
        .pods()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| p["status"]["phase"] == "Running")
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// The pods the API has bound to `node`, sorted.
fn bound_to(c: &netns_cluster::NetnsCluster, node: &str) -> Vec<String> {
    let mut names: Vec<String> = c
        .kubectl(&[
            "get",
            "pods",
            "--field-selector",
            &format!("spec.nodeName={node}"),
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

fn is_daemon_pod(name: &str) -> bool {
    name.starts_with("agent-")
}

#[test]
fn a_daemonset_taint_eviction_and_pod_gc_on_two_real_nodes() {
    let c = netns_cluster::NetnsCluster::start_nodes(
        "kl-ds",
        2,
        &[
            "--eviction-hard",
            "memory.available<1Mi,nodefs.available<1%",
        ],
    );
    let peer = &c.peers[0];
    let (n1, n2) = (c.node.node_name.clone(), peer.node.node_name.clone());
    let long = Duration::from_secs(90);
    c.wait_for("both nodes Ready", long, || {
        let ready = c.kubectl(&[
            "get",
            "nodes",
            "-o",
            r#"jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{" "}{end}"#,
        ]);
        (ready.trim() == "True True").then_some(())
    });

    // One real pod on each node, and the status counts them.
    c.apply(SLEEPER_DS);
    c.wait_for("a daemon pod running on each agent", long, || {
        let (a, b) = (running_on(&c.node), running_on(&peer.node));
        (a.len() == 1 && is_daemon_pod(&a[0]) && b.len() == 1 && is_daemon_pod(&b[0])).then_some(())
    });
    c.wait_for("the DaemonSet status", long, || {
        let s = c.kubectl(&[
            "get",
            "ds",
            "agent",
            "-o",
            "jsonpath={.status.desiredNumberScheduled} {.status.numberReady} {.status.numberAvailable}",
        ]);
        (s == "2 2 2").then_some(())
    });
    let daemon_on_n2 = bound_to(&c, &n2);
    assert_eq!(daemon_on_n2, running_on(&peer.node));
    let tolerations = c.kubectl(&[
        "get",
        "pod",
        &daemon_on_n2[0],
        "-o",
        r#"jsonpath={range .spec.tolerations[*]}{.key}:{.effect} {end}"#,
    ]);
    for t in [
        "node.kubernetes.io/not-ready:NoExecute",
        "node.kubernetes.io/unreachable:NoExecute",
        "node.kubernetes.io/unschedulable:NoSchedule",
    ] {
        assert!(tolerations.contains(t), "{t} missing: {tolerations}");
    }

    // Two pods of node 2's own: one that tolerates the taint to come for
    // a while, one that does not.
    const TOLERATION_SECONDS: u64 = 10;
    c.apply(&sleeper_on("intolerant", &n2, ""));
    c.apply(&sleeper_on(
        "tolerant",
        &n2,
        &format!(
            "  tolerations:\n  - {{key: dedicated, operator: Equal, value: x, effect: NoExecute, tolerationSeconds: {TOLERATION_SECONDS}}}\n"
        ),
    ));
    c.wait_running("intolerant");
    c.wait_running("tolerant");
    let tainted = std::time::Instant::now();
    c.kubectl(&["taint", "node", &n2, "dedicated=x:NoExecute"]);
    // The intolerant pods (the daemon's too) go at once, from the API and
    // from the node; the tolerant one stays until its time is up.
    let still = c.wait_for("the intolerant pods evicted", long, || {
        let api = bound_to(&c, &n2);
        let node = running_on(&peer.node);
        (api == ["tolerant"] && node == ["tolerant"]).then_some(tainted.elapsed())
    });
    assert!(
        still < Duration::from_secs(TOLERATION_SECONDS),
        "evicted only after {still:?}"
    );
    c.wait_for("the tolerant pod evicted", long, || {
        bound_to(&c, &n2).is_empty().then_some(())
    });
    let evicted_after = tainted.elapsed();
    assert!(
        evicted_after >= Duration::from_secs(TOLERATION_SECONDS - 1),
        "tolerationSeconds not honoured: evicted after {evicted_after:?}"
    );
    c.wait_for("node 2 to stop the tolerant pod", long, || {
        running_on(&peer.node).is_empty().then_some(())
    });
    let events = c.kubectl(&[
        "get",
        "events",
        "--field-selector=reason=TaintManagerEviction",
        "-o",
        "custom-columns=MSG:.message",
    ]);
    // (The daemon pod may go through its controller first: no event then.)
    for pod in ["intolerant", "tolerant"] {
        assert!(
            events.contains(&format!("Marking for deletion Pod default/{pod}")),
            "{events}"
        );
    }
    // The daemon does not come back to a node whose taint it does not
    // tolerate; the first node keeps its pod.
    let desired = || {
        c.kubectl(&[
            "get",
            "ds",
            "agent",
            "-o",
            "jsonpath={.status.desiredNumberScheduled}",
        ])
    };
    c.wait_for("one node eligible", long, || {
        (desired() == "1").then_some(())
    });
    assert!(bound_to(&c, &n2).is_empty());
    assert_eq!(running_on(&c.node).len(), 1);

    // Untainted, node 2 gets a daemon pod again.
    c.kubectl(&["taint", "node", &n2, "dedicated-"]);
    c.wait_for("a daemon pod back on node 2", long, || {
        let node = running_on(&peer.node);
        (node.len() == 1 && is_daemon_pod(&node[0])).then_some(())
    });

    // A deleted Node: PodGC removes its pods from the API, and its agent
    // (still running) stops them.
    c.apply(&sleeper_on("stranded", &n2, ""));
    c.wait_running("stranded");
    c.kubectl(&["delete", "node", &n2]);
    c.wait_for("PodGC to remove node 2's pods", long, || {
        bound_to(&c, &n2).is_empty().then_some(())
    });
    c.wait_for("node 2 to stop its pods", long, || {
        running_on(&peer.node).is_empty().then_some(())
    });
    c.wait_for("one node left for the DaemonSet", long, || {
        (desired() == "1").then_some(())
    });
    assert_eq!(bound_to(&c, &n1).len(), 1);

    c.kubectl(&[
        "delete",
        "ds",
        "agent",
        "--cascade=foreground",
        "--timeout=90s",
    ]);
    c.wait_for("node 1 to stop the daemon pod", long, || {
        running_on(&c.node).is_empty().then_some(())
    });
}
