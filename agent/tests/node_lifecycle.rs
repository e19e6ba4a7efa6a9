//! A node's life in the cluster, through the real kubectl: the node
//! controller losing and finding the agent again (NotReady, unreachable
//! taints), cordon / drain / uncordon with evictions the agent carries out,
//! `kubectl run` placed by the in-process scheduler and run, allocatable less the
//! node's reservations, and a ReplicaSet replacing the pods of a dead node.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cluster::{ApiServer, api_pod, row, wait_for};
use common::TestNode;

const SLEEPER: &str = "  containers:
  - name: main
    image: busybox
    command: [\"sh\", \"-c\", \"exec sleep 3600\"]
";

/// The node controller's settings in these tests: 4 s of silence, checked
/// every second; the agents renew their lease every second to match.
const GRACE: &[&str] = &["--node-monitor-grace-period=4s", "--node-monitor-period=1s"];

fn join(api: &ApiServer, extra: &[&str]) -> TestNode {
    let kubeconfig = api.kubeconfig();
    let mut args = vec![
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--node-ip",
        "127.0.0.1",
        "--node-lease-duration-seconds",
        "4",
    ];
    args.extend_from_slice(extra);
    TestNode::start_with(&args)
}

fn node_status(api: &ApiServer, name: &str) -> Option<String> {
    Some(row(&api.try_kubectl(&["get", "nodes"])?, name)?[1].clone())
}

fn wait_node_status(api: &ApiServer, node: &TestNode, want: &str, timeout: Duration) {
    let name = node.node_name.clone();
    wait_for(node, &format!("node {want}"), timeout, || {
        (node_status(api, &name)? == want).then_some(())
    });
}

/// The node's `key:effect` taints about reachability and cordoning (a host
/// short of disk or memory gets its pressure taints too; those are left out).
fn lifecycle_taints(api: &ApiServer, name: &str) -> Option<Vec<String>> {
    let all = api.try_kubectl(&[
        "get",
        "node",
        name,
        "-o",
        "jsonpath={range .spec.taints[*]}{.key}:{.effect} {end}",
    ])?;
    let mut t: Vec<String> = all
        .split_whitespace()
        .filter(|t| !t.contains("-pressure:"))
        .map(String::from)
        .collect();
    t.sort();
    Some(t)
}

fn pod_ready(api: &ApiServer, pod: &str) -> Option<String> {
    api.try_kubectl(&[
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ])
}

#[test]
fn a_silent_node_goes_not_ready_and_unreachable_and_comes_back() {
    let api = ApiServer::start_with(GRACE);
    let mut node = join(&api, &[]);
    let name = node.node_name.clone();
    wait_node_status(&api, &node, "Ready", Duration::from_secs(20));
    api.apply(&api_pod("sleeper", &name, SLEEPER));
    wait_for(&node, "sleeper Ready", Duration::from_secs(30), || {
        (pod_ready(&api, "sleeper")? == "True").then_some(())
    });
    // A healthy node stays Ready across several grace periods (its lease
    // keeps it alive between status reports).
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(node_status(&api, &name).as_deref(), Some("Ready"));
    assert_eq!(
        lifecycle_taints(&api, &name),
        Some(vec![]),
        "a healthy node is not unreachable"
    );

    // SIGKILL: no goodbye. Within grace + period (+ slack) it is NotReady.
    node.kill_agent();
    let killed = Instant::now();
    wait_node_status(&api, &node, "NotReady", Duration::from_secs(15));
    let took = killed.elapsed();
    assert!(took >= Duration::from_secs(3), "NotReady after {took:?}");
    let describe = api.kubectl(&["describe", "node", &name]);
    for taint in [
        "node.kubernetes.io/unreachable:NoExecute",
        "node.kubernetes.io/unreachable:NoSchedule",
    ] {
        assert!(describe.contains(taint), "no {taint} in:\n{describe}");
    }
    assert!(
        describe.contains("NodeStatusUnknown")
            && describe.contains("Kubelet stopped posting node status."),
        "{describe}"
    );
    let conditions = api.kubectl(&[
        "get",
        "node",
        &name,
        "-o",
        "jsonpath={range .status.conditions[*]}{.type}={.status} {end}",
    ]);
    for c in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert!(conditions.contains(&format!("{c}=Unknown")), "{conditions}");
    }
    let added = api.kubectl(&[
        "get",
        "node",
        &name,
        "-o",
        "jsonpath={range .spec.taints[*]}{.key}:{.effect}@{.timeAdded} {end}",
    ]);
    assert!(
        added
            .split_whitespace()
            .all(|t| t.split_once('@').is_some_and(|(_, at)| at.ends_with('Z'))),
        "every taint has timeAdded: {added}"
    );
    // Its pods are marked not ready, as the node controller does.
    wait_for(&node, "sleeper not ready", Duration::from_secs(10), || {
        (pod_ready(&api, "sleeper")? == "False").then_some(())
    });
    let events = api.kubectl(&["get", "events", "-A"]);
    assert!(
        events.contains(&format!("Node {name} status is now: NodeNotReady")),
        "{events}"
    );

    // Back: Ready, the taints gone, the pod ready again.
    node.spawn_agent();
    wait_node_status(&api, &node, "Ready", Duration::from_secs(20));
    wait_for(&node, "the taints removed", Duration::from_secs(10), || {
        lifecycle_taints(&api, &name)?.is_empty().then_some(())
    });
    let describe = api.kubectl(&["describe", "node", &name]);
    assert!(!describe.contains("unreachable"), "{describe}");
    wait_for(
        &node,
        "sleeper ready again",
        Duration::from_secs(20),
        || (pod_ready(&api, "sleeper")? == "True").then_some(()),
    );
    api.kubectl(&["delete", "pod", "sleeper", "--timeout=30s"]);
}

#[test]
fn cordon_drain_and_uncordon_evict_api_pods_and_leave_the_mirror_pod() {
    let api = ApiServer::start_with(GRACE);
    let node = join(
        &api,
        &[
            "--system-reserved",
            "cpu=100m,memory=256Mi",
            "--kube-reserved",
            "memory=128Mi,pid=100",
        ],
    );
    let name = node.node_name.clone();
    wait_node_status(&api, &node, "Ready", Duration::from_secs(20));

    // Allocatable: capacity less kube-reserved, system-reserved and the
    // default hard eviction threshold (memory.available<100Mi).
    let figures = api.kubectl(&[
        "get",
        "node",
        &name,
        "-o",
        "jsonpath={.status.capacity.memory} {.status.allocatable.memory} {.status.capacity.cpu} {.status.allocatable.cpu}",
    ]);
    let f: Vec<&str> = figures.split(' ').collect();
    let kib = |s: &str| s.strip_suffix("Ki").unwrap().parse::<u64>().unwrap();
    assert_eq!(kib(f[0]) - kib(f[1]), (256 + 128 + 100) * 1024, "{figures}");
    let cores: u64 = f[2].parse().unwrap();
    assert_eq!(f[3], format!("{}m", cores * 1000 - 100), "{figures}");

    node.write_manifest(
        "static.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: static\nspec:\n  terminationGracePeriodSeconds: 1\n{SLEEPER}"
        ),
    );
    let mirror = format!("static-{name}");
    for pod in ["one", "two"] {
        api.apply(&api_pod(pod, &name, SLEEPER));
    }
    wait_for(&node, "three pods running", Duration::from_secs(40), || {
        let table = api.try_kubectl(&["get", "pods"])?;
        ["one", "two", mirror.as_str()]
            .iter()
            .all(|p| row(&table, p).is_some_and(|c| c[2] == "Running"))
            .then_some(())
    });

    api.kubectl(&["cordon", &name]);
    assert_eq!(
        node_status(&api, &name).as_deref(),
        Some("Ready,SchedulingDisabled")
    );
    wait_for(
        &node,
        "the unschedulable taint",
        Duration::from_secs(10),
        || {
            (lifecycle_taints(&api, &name)? == ["node.kubernetes.io/unschedulable:NoSchedule"])
                .then_some(())
        },
    );

    // A watcher sees how `one` ended before it is gone.
    let mut watch = Command::new("/usr/bin/kubectl")
        .env("KUBECONFIG", api.kubeconfig())
        .env("HOME", api.dir.path())
        .arg("--cache-dir")
        .arg(api.dir.path().join("kube-cache"))
        .args([
            "get",
            "pod",
            "one",
            "--watch",
            "-o",
            "jsonpath={.status.phase}/{.status.containerStatuses[0].state.terminated.exitCode}{\"\\n\"}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));

    let out = api.kubectl_with(
        &[
            "drain",
            &name,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            // The test's pods have no controller.
            "--force",
            "--timeout=60s",
        ],
        None,
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubectl drain: {said}");
    for pod in ["one", "two"] {
        assert!(
            said.contains(&format!("evicting pod default/{pod}")),
            "{said}"
        );
        assert!(said.contains(&format!("pod/{pod} evicted")), "{said}");
    }
    assert!(!said.contains(&mirror), "the mirror pod is skipped: {said}");
    assert!(said.contains(&format!("node/{name} drained")), "{said}");

    // Evicted: gone from the API and stopped on the node; the mirror stays.
    let table = api.kubectl(&["get", "pods"]);
    assert!(
        row(&table, "one").is_none() && row(&table, "two").is_none(),
        "{table}"
    );
    assert_eq!(
        row(&table, &mirror).map(|c| c[2].clone()).as_deref(),
        Some("Running")
    );
    let local: Vec<String> = node
        .pods()
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
        .collect();
    assert_eq!(
        local,
        std::slice::from_ref(&mirror),
        "the agent runs only the static pod"
    );
    assert_eq!(
        node_status(&api, &name).as_deref(),
        Some("Ready,SchedulingDisabled")
    );

    let _ = watch.kill();
    let watched = String::from_utf8_lossy(&watch.wait_with_output().unwrap().stdout).into_owned();
    // `exec sleep` ignores SIGTERM: killed after the grace period, 137.
    assert!(
        watched.lines().any(|l| l == "Failed/137"),
        "the final status before deletion: {watched:?}"
    );

    api.kubectl(&["uncordon", &name]);
    wait_for(&node, "uncordoned", Duration::from_secs(10), || {
        (node_status(&api, &name)? == "Ready" && lifecycle_taints(&api, &name)?.is_empty())
            .then_some(())
    });
}

#[test]
fn kubectl_run_is_scheduled_onto_the_node_and_runs() {
    let api = ApiServer::start();
    let node = api.join();
    let name = node.node_name.clone();
    api.kubectl(&[
        "run",
        "sched",
        "--image=busybox",
        "--overrides",
        // A busy build machine's disk may be past the agent's 10% nodefs
        // threshold; its DiskPressure taint would (rightly) keep the pod off.
        r#"{"spec":{"terminationGracePeriodSeconds":1,"tolerations":[{"key":"node.kubernetes.io/disk-pressure","operator":"Exists","effect":"NoSchedule"}]}}"#,
        "--command",
        "--",
        "sleep",
        "3600",
    ]);
    // The in-process scheduler binds it; the agent starts it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let placed = loop {
        let out = api.try_kubectl(&[
            "get",
            "pod",
            "sched",
            "-o",
            "jsonpath={.spec.nodeName} {.status.phase}",
        ]);
        if out.as_deref() == Some(format!("{name} Running").as_str()) || Instant::now() > deadline {
            break out.unwrap_or_default();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        placed,
        format!("{name} Running"),
        "{}\nagent log:\n{}",
        api.kubectl(&["describe", "pod", "sched"]),
        common::tail(&node.agent_log(), 30)
    );
    let message = format!("Successfully assigned default/sched to {name}");
    let describe = wait_for(&node, "events in describe", Duration::from_secs(30), || {
        let d = api.try_kubectl(&["describe", "pod", "sched"])?;
        d.contains("Started").then_some(d)
    });
    let scheduled = describe
        .lines()
        .find(|l| l.contains(&message))
        .unwrap_or_else(|| panic!("no Scheduled event:\n{describe}"));
    let cells: Vec<&str> = scheduled.split_whitespace().collect();
    assert_eq!(&cells[..2], ["Normal", "Scheduled"], "{scheduled}");
    assert!(scheduled.contains("default-scheduler"), "{scheduled}");
    let events = api.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "reason=Scheduled",
        "-o",
        "jsonpath={.items[0].source.component} {.items[0].involvedObject.name} {.items[0].message}",
    ]);
    assert_eq!(events, format!("default-scheduler sched {message}"));
    api.kubectl(&["delete", "pod", "sched", "--timeout=30s"]);
}

#[test]
fn a_bad_reservation_is_refused_naming_the_flag_and_entry() {
    let out = Command::new(common::agent_bin())
        .args([
            "--root-dir",
            "/nonexistent-kubelab-root",
            "--system-reserved",
            "cpu=100m,memory=lots",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--system-reserved: invalid entry \"memory=lots\""),
        "{err}"
    );
    let out = Command::new(common::agent_bin())
        .args(["--eviction-hard", "memory.available>100Mi"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--eviction-hard: invalid entry \"memory.available>100Mi\""),
        "{err}"
    );
}

/// (name, phase, terminating) of the ReplicaSet `keeper`'s pods, by name.
fn keeper_pods(api: &ApiServer) -> Vec<(String, String, bool)> {
    let out = api.kubectl(&[
        "get",
        "pods",
        "-l",
        "app=keeper",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.metadata.deletionTimestamp}{"\n"}{end}"#,
    ]);
    let mut pods: Vec<(String, String, bool)> = out
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                f[0].to_owned(),
                f.get(1).copied().unwrap_or_default().to_owned(),
                f.get(2).is_some_and(|t| !t.is_empty()),
            )
        })
        .collect();
    pods.sort();
    pods
}

#[test]
fn a_replica_set_replaces_the_pods_of_a_dead_node() {
    let api = ApiServer::start_with(GRACE);
    let mut node = join(
        &api,
        &[
            "--eviction-hard",
            "memory.available<1Mi,nodefs.available<1%",
        ],
    );
    let name = node.node_name.clone();
    wait_node_status(&api, &node, "Ready", Duration::from_secs(20));
    // Its pods tolerate an unreachable node for 2 s (instead of the 300 s
    // DefaultTolerationSeconds gives).
    api.apply(&format!(
        "apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: keeper
spec:
  replicas: 2
  selector:
    matchLabels: {{app: keeper}}
  template:
    metadata:
      labels: {{app: keeper}}
    spec:
      terminationGracePeriodSeconds: 1
      tolerations:
      - {{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}}
{}",
        SLEEPER
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    ));
    let first = wait_for(&node, "2 pods running", Duration::from_secs(60), || {
        let pods = keeper_pods(&api);
        (pods.len() == 2 && pods.iter().all(|p| p.1 == "Running" && !p.2)).then_some(pods)
    });

    // The node dies: unreachable, its pods evicted after their toleration;
    // no kubelet finishes them, so they stay Terminating, and the
    // ReplicaSet makes two more (nowhere to run yet).
    node.kill_agent();
    wait_node_status(&api, &node, "NotReady", Duration::from_secs(20));
    let pods = wait_for(&node, "two replacements", Duration::from_secs(60), || {
        let pods = keeper_pods(&api);
        let old_terminating = first.iter().all(|f| pods.iter().any(|p| p.0 == f.0 && p.2));
        let new: Vec<_> = pods
            .iter()
            .filter(|p| !first.iter().any(|f| f.0 == p.0))
            .collect();
        (old_terminating && new.len() == 2 && new.iter().all(|p| !p.2)).then_some(pods)
    });
    assert_eq!(pods.len(), 4, "{pods:?}");
    let events = api.kubectl(&[
        "get",
        "events",
        "--field-selector=reason=TaintManagerEviction",
        "-o",
        "custom-columns=MSG:.message",
    ]);
    for (pod, _, _) in &first {
        assert!(
            events.contains(&format!("Marking for deletion Pod default/{pod}")),
            "{events}"
        );
    }

    // Declared out of service, the node's terminating pods are
    // force-deleted (PodGC).
    api.kubectl(&[
        "taint",
        "node",
        &name,
        "node.kubernetes.io/out-of-service=nodeshutdown:NoExecute",
    ]);
    wait_for(
        &node,
        "the old pods force-deleted",
        Duration::from_secs(60),
        || {
            let pods = keeper_pods(&api);
            (pods.len() == 2 && pods.iter().all(|p| !first.iter().any(|f| f.0 == p.0)))
                .then_some(())
        },
    );

    // Back in service, the node stops what its dead agent left and runs
    // the replacements.
    api.kubectl(&["taint", "node", &name, "node.kubernetes.io/out-of-service-"]);
    node.spawn_agent();
    wait_node_status(&api, &node, "Ready", Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(90);
    while !{
        let pods = keeper_pods(&api);
        pods.len() == 2 && pods.iter().all(|p| p.1 == "Running")
    } {
        assert!(
            Instant::now() < deadline,
            "the replacements not running:\n{}\n{}\n{}",
            api.kubectl(&["get", "pods,events", "-o", "wide"]),
            api.kubectl(&["describe", "node", &name]),
            common::tail(&api.log(), 40)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for(
        &node,
        "the node to run only the replacements",
        Duration::from_secs(60),
        || {
            let running: Vec<String> = node
                .pods()
                .iter()
                .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
                .collect();
            (running.len() == 2 && running.iter().all(|n| !first.iter().any(|f| f.0 == *n)))
                .then_some(())
        },
    );
    api.kubectl(&[
        "delete",
        "rs",
        "keeper",
        "--cascade=foreground",
        "--timeout=60s",
    ]);
    wait_for(
        &node,
        "the node to stop the pods",
        Duration::from_secs(60),
        || node.pods().is_empty().then_some(()),
    );
}
