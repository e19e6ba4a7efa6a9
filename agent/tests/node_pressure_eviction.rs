//! Node-pressure eviction on a real node, seen through the real kubectl:
//! a node whose `--eviction-hard=memory.available<…` leaves its pods
//! 96 MiB, a Guaranteed pod that stays within its request and a BestEffort
//! pod that holds 160 MiB. The BestEffort pod is evicted (Failed, reason
//! Evicted, the kubelet's message, a Warning `Evicted` event), the
//! Guaranteed one keeps running, a new BestEffort pod is refused, and the
//! node reports MemoryPressure (with its taint) until the pressure
//! transition period has passed.
//!
//! The node is the agent's nested cgroup root: its memory is the least
//! limit on the way up from this test's own memory cgroup (the machine's
//! memory when there is none), and what it uses is its pods' working set,
//! so no other process on the host moves the threshold.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cluster::{ApiServer, api_pod, wait_for};

/// What the pods may use before the node is under memory pressure.
const POD_BUDGET: u64 = 96 << 20;

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The memory the agent's node has: the machine's, or less if this test's
/// memory cgroup (whose child the agent's root is) or one above it is limited.
fn node_memory() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    let mut least = total_kib * 1024;
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let (mount, file) = if ctrls.split(',').any(|c| c == "memory") {
            (
                PathBuf::from("/sys/fs/cgroup").join(ctrls),
                "memory.limit_in_bytes",
            )
        } else if ctrls.is_empty() && Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            (PathBuf::from("/sys/fs/cgroup"), "memory.max")
        } else {
            continue;
        };
        let mut dir = mount.join(path.trim_start_matches('/'));
        while dir.starts_with(&mount) && dir != mount {
            if let Some(v) = read_number(&dir.join(file)) {
                least = least.min(v);
            }
            dir.pop();
        }
    }
    least
}

fn jsonpath(api: &ApiServer, kind_name: &[&str], path: &str) -> Option<String> {
    let mut args = vec!["get"];
    args.extend_from_slice(kind_name);
    let expr = format!("jsonpath={path}");
    args.extend(["-o", &expr]);
    api.try_kubectl(&args)
}

fn memory_pressure(api: &ApiServer, node: &str) -> Option<(String, String)> {
    let out = jsonpath(
        api,
        &["node", node],
        "{.status.conditions[?(@.type==\"MemoryPressure\")].status} {.status.conditions[?(@.type==\"MemoryPressure\")].reason}",
    )?;
    let (status, reason) = out.split_once(' ')?;
    Some((status.to_owned(), reason.to_owned()))
}

#[test]
fn a_besteffort_pod_filling_memory_is_evicted_before_a_guaranteed_one() {
    let threshold_kib = (node_memory() - POD_BUDGET) / 1024;
    let api = ApiServer::start();
    let hard = format!("memory.available<{threshold_kib}Ki,nodefs.available<1%");
    let node = api.join_with(&[
        "--eviction-hard",
        &hard,
        "--eviction-pressure-transition-period",
        "20s",
    ]);
    let name = node.node_name.clone();
    wait_for(
        &node,
        "MemoryPressure False",
        Duration::from_secs(60),
        || {
            (memory_pressure(&api, &name)? == ("False".into(), "KubeletHasSufficientMemory".into()))
                .then_some(())
        },
    );

    api.apply(&api_pod(
        "steady",
        &name,
        "  containers:
  - name: steady
    image: busybox
    command: [\"sh\", \"-c\", \"exec sleep 3600\"]
    resources:
      requests: {cpu: 100m, memory: 64Mi}
      limits: {cpu: 100m, memory: 64Mi}
",
    ));
    wait_for(&node, "steady Running", Duration::from_secs(60), || {
        (jsonpath(&api, &["pod", "steady"], "{.status.phase}")? == "Running").then_some(())
    });
    assert_eq!(
        jsonpath(&api, &["pod", "steady"], "{.status.qosClass}").unwrap(),
        "Guaranteed"
    );

    // dd holds its 160 MiB buffer while it waits to write into a pipe nobody reads.
    api.apply(&api_pod(
        "hog",
        &name,
        "  containers:
  - name: hog
    image: busybox
    command: [\"sh\", \"-c\", \"dd if=/dev/zero bs=160M count=1 | sleep 3600\"]
",
    ));

    // The node reports the pressure, and the node controller taints it.
    wait_for(
        &node,
        "MemoryPressure True",
        Duration::from_secs(90),
        || {
            (memory_pressure(&api, &name)?
                == ("True".into(), "KubeletHasInsufficientMemory".into()))
                .then_some(())
        },
    );
    let status = jsonpath(
        &api,
        &["pod", "hog"],
        "{.status.phase}|{.status.reason}|{.status.message}",
    );
    // Under memory pressure a new BestEffort pod is refused, in the kubelet's words.
    api.apply(&api_pod(
        "late",
        &name,
        "  containers:
  - name: late
    image: busybox
    command: [\"sleep\", \"3600\"]
",
    ));
    let refused = wait_for(&node, "late refused", Duration::from_secs(30), || {
        let s = jsonpath(
            &api,
            &["pod", "late"],
            "{.status.phase}|{.status.reason}|{.status.message}",
        )?;
        s.starts_with("Failed|").then_some(s)
    });
    assert_eq!(
        refused,
        "Failed|Evicted|Pod was rejected: The node had condition: [MemoryPressure]. "
    );
    let taints = wait_for(
        &node,
        "the memory-pressure taint",
        Duration::from_secs(30),
        || {
            let t = jsonpath(
                &api,
                &["node", &name],
                "{range .spec.taints[*]}{.key}:{.effect} {end}",
            )?;
            t.contains("node.kubernetes.io/memory-pressure:NoSchedule")
                .then_some(t)
        },
    );
    assert!(
        taints.contains("memory-pressure"),
        "{taints} (hog: {status:?})"
    );

    // The BestEffort pod goes, with the kubelet's status and event.
    let evicted = wait_for(&node, "hog Failed/Evicted", Duration::from_secs(60), || {
        let s = jsonpath(
            &api,
            &["pod", "hog"],
            "{.status.phase}|{.status.reason}|{.status.message}",
        )?;
        s.starts_with("Failed|Evicted|").then_some(s)
    });
    let message = evicted.splitn(3, '|').nth(2).unwrap().to_owned();
    assert!(
        message.starts_with(&format!(
            "The node was low on resource: memory. Threshold quantity: {threshold_kib}Ki, available: "
        )),
        "{message}"
    );
    assert!(
        message.contains("Container hog was using ")
            && message.ends_with(", request is 0, has larger consumption of memory. "),
        "{message}"
    );
    let events = wait_for(&node, "the Evicted event", Duration::from_secs(30), || {
        let e = api.try_kubectl(&[
            "get",
            "events",
            "--field-selector",
            "reason=Evicted,involvedObject.name=hog",
            "-o",
            "jsonpath={range .items[*]}{.type}|{.message}{end}",
        ])?;
        (!e.is_empty()).then_some(e)
    });
    assert_eq!(events, format!("Warning|{message}"));
    let describe = api.kubectl(&["describe", "pod", "hog"]);
    let field = |name: &str| {
        describe
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(field("Status:"), "Failed", "{describe}");
    assert_eq!(field("Reason:"), "Evicted", "{describe}");
    assert!(
        field("Message:").starts_with("The node was low on resource: memory."),
        "{describe}"
    );

    let metrics = node.get("/metrics").unwrap();
    assert!(
        metrics.contains("kubelet_evictions{eviction_signal=\"memory.available\"} 1\n"),
        "{metrics}"
    );

    // The Guaranteed pod keeps running, never restarted.
    assert_eq!(
        jsonpath(
            &api,
            &["pod", "steady"],
            "{.status.phase} {.status.containerStatuses[0].restartCount}"
        )
        .unwrap(),
        "Running 0"
    );

    // With the memory free again the condition goes after the transition period.
    wait_for(
        &node,
        "MemoryPressure False again",
        Duration::from_secs(90),
        || {
            (memory_pressure(&api, &name)? == ("False".into(), "KubeletHasSufficientMemory".into()))
                .then_some(())
        },
    );
    wait_for(&node, "the taint removed", Duration::from_secs(30), || {
        let t = jsonpath(
            &api,
            &["node", &name],
            "{range .spec.taints[*]}{.key}:{.effect} {end}",
        )?;
        (!t.contains("memory-pressure")).then_some(())
    });
    assert_eq!(
        jsonpath(&api, &["pod", "steady"], "{.status.phase}").unwrap(),
        "Running"
    );
    api.delete_all_pods();
}
