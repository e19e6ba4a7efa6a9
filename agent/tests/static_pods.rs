//! Static pods as real containers, driven the way a user drives the agent:
//! manifest files in, `/pods`, `/stats/summary` and `/containerLogs` out.
//! Run as root; each test owns a node (temp dirs, a cgroup subtree under the
//! test's own cgroup) that is removed even if the test fails.

mod common;

use std::time::{Duration, Instant};

use common::TestNode;
use serde_json::Value;

fn pod_yaml(name: &str, body: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n{body}")
}

#[test]
fn container_runs_isolated_with_pod_hostname_and_default_capabilities() {
    let node = TestNode::start();
    node.write_manifest(
        "web.yaml",
        &pod_yaml(
            "web",
            r#"spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    workingDir: /tmp
    env:
    - name: GREETING
      value: hello
    - name: MY_POD
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    command: ["sh", "-c"]
    args:
    - |
      echo "host=$(hostname) pwd=$(pwd) greet=$GREETING pod=$MY_POD pid1=$(cat /proc/1/comm) uid=$(id -u)"
      grep CapEff /proc/self/status
      echo "oom=$(cat /proc/self/oom_score_adj)"
      ls /dev | tr '\n' ' '; echo
      touch /sys/x 2>/dev/null && echo sys=rw || echo sys=ro
      mknod /tmp/kmsg c 1 11 && ( exec 3</tmp/kmsg ) 2>/dev/null && echo kmsg=open || echo kmsg=denied
      cat /etc/hostname
      exec sleep 3600
"#,
        ),
    );
    let pod = node.wait_running("web");
    assert_eq!(pod["status"]["qosClass"], "BestEffort");
    assert_eq!(
        pod["metadata"]["annotations"]["kubernetes.io/config.source"],
        "file"
    );
    let name = format!("web-{}", node.node_name);
    let logs = node.wait_for("container output", Duration::from_secs(10), |n| {
        n.get(&format!("/containerLogs/default/{name}/main"))
            .ok()
            .filter(|l| l.contains("kmsg=") && l.lines().count() >= 7)
    });
    assert!(
        logs.contains(&format!(
            "host={name} pwd=/tmp greet=hello pod={name} pid1=sh uid=0"
        )),
        "{logs}"
    );
    // containerd's default set: 0x00000000a80425fb.
    assert!(logs.contains("CapEff:\t00000000a80425fb"), "{logs}");
    assert!(
        logs.contains("oom=1000"),
        "BestEffort containers are OOM-killed first: {logs}"
    );
    for dev in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm",
    ] {
        assert!(logs.contains(dev), "/dev lacks {dev}: {logs}");
    }
    assert!(logs.contains("sys=ro"), "{logs}");
    assert!(
        logs.contains("kmsg=denied"),
        "mknod of a node device works (CAP_MKNOD), opening it must not: {logs}"
    );
}

#[test]
fn cpu_limit_throttles_a_busy_loop_to_its_quota() {
    let node = TestNode::start();
    node.write_manifest(
        "spin.yaml",
        &pod_yaml(
            "spin",
            r#"spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: spin
    image: busybox
    command: ["sh", "-c", "while :; do :; done"]
    resources:
      limits:
        cpu: 200m
        memory: 64Mi
"#,
        ),
    );
    let pod = node.wait_running("spin");
    assert_eq!(pod["status"]["qosClass"], "Guaranteed");
    let full = format!("spin-{}", node.node_name);
    let sample = |n: &TestNode| -> Option<(u64, Value)> {
        let summary = n.get_json("/stats/summary");
        let pod = summary["pods"]
            .as_array()?
            .iter()
            .find(|p| p["podRef"]["name"] == full.as_str())?
            .clone();
        let c = pod["containers"].as_array()?.first()?.clone();
        Some((c["cpu"]["usageCoreNanoSeconds"].as_u64()?, c))
    };
    let (before, _) = node.wait_for("container stats", Duration::from_secs(10), sample);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(6));
    let (after, c) = sample(&node).expect("stats");
    let cores = (after - before) as f64 / t0.elapsed().as_nanos() as f64;
    assert!(
        (0.18..=0.22).contains(&cores),
        "a 200m limit should hold the loop at 0.2 cores, measured {cores:.3}"
    );
    let throttling = &c["cpu"]["throttling"];
    assert!(throttling["nrThrottled"].as_u64().unwrap() > 0, "{c}");
    assert!(throttling["nrPeriods"].as_u64().unwrap() >= 50, "{c}");
    let nano_cores = c["cpu"]["usageNanoCores"].as_u64().unwrap_or(0);
    assert!((150_000_000..=250_000_000).contains(&nano_cores), "{c}");
}

fn oom_pod(name: &str, policy: &str) -> String {
    pod_yaml(
        name,
        &format!(
            r#"spec:
  restartPolicy: {policy}
  containers:
  - name: hog
    image: busybox
    command: ["dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"]
    resources:
      limits:
        memory: 32Mi
"#
        ),
    )
}

#[test]
fn memory_limit_ends_in_oom_kill_and_restarts_with_growing_backoff() {
    let node = TestNode::start();
    node.write_manifest("hog.yaml", &oom_pod("hog", "Always"));
    let status = node.wait_for("two OOM restarts", Duration::from_secs(40), |n| {
        let c = n.container_status("hog", "hog")?;
        (c["restartCount"].as_i64()? >= 2 && c["state"]["waiting"].is_object()).then_some(c)
    });
    let last = &status["lastState"]["terminated"];
    assert_eq!(last["reason"], "OOMKilled", "{status}");
    assert_eq!(last["exitCode"], 137, "{status}");
    let waiting = &status["state"]["waiting"];
    assert_eq!(waiting["reason"], "CrashLoopBackOff", "{status}");
    assert_eq!(
        waiting["message"], "back-off 20s restarting failed container=hog",
        "the back-off doubles: 0 s, 10 s, then 20 s; {status}"
    );
    let pod = node.pod("hog").unwrap();
    assert_eq!(pod["status"]["phase"], "Running");
    assert_eq!(pod["status"]["qosClass"], "Burstable");
}

#[test]
fn memory_limit_with_restart_policy_never_ends_failed() {
    let node = TestNode::start();
    node.write_manifest("hog.yaml", &oom_pod("hog", "Never"));
    let pod = node.wait_for("pod Failed", Duration::from_secs(30), |n| {
        let p = n.pod("hog")?;
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    let c = &pod["status"]["containerStatuses"][0];
    assert_eq!(c["state"]["terminated"]["reason"], "OOMKilled", "{pod}");
    assert_eq!(c["state"]["terminated"]["exitCode"], 137, "{pod}");
    assert_eq!(c["restartCount"], 0);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        node.container_status("hog", "hog").unwrap()["restartCount"],
        0
    );
}

#[test]
fn edited_manifest_replaces_its_pod() {
    let node = TestNode::start();
    let yaml = |msg: &str| {
        pod_yaml(
            "echo",
            &format!(
                "spec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    command: [\"sh\", \"-c\", \"echo {msg}; exec sleep 3600\"]\n"
            ),
        )
    };
    node.write_manifest("echo.yaml", &yaml("first"));
    let first = node.wait_running("echo");
    let uid1 = first["metadata"]["uid"].as_str().unwrap().to_string();
    node.write_manifest("echo.yaml", &yaml("second"));
    let second = node.wait_for("the edited pod", Duration::from_secs(20), |n| {
        let p = n.pod("echo")?;
        let running = p["status"]["containerStatuses"][0]["state"]["running"].is_object();
        (p["metadata"]["uid"] != uid1.as_str() && running).then_some(p)
    });
    assert_eq!(
        node.pods().len(),
        1,
        "the old pod must be gone once its replacement runs"
    );
    let name = second["metadata"]["name"].as_str().unwrap().to_string();
    let logs = node.wait_for("new output", Duration::from_secs(5), |n| {
        n.get(&format!("/containerLogs/default/{name}/c"))
            .ok()
            .filter(|l| !l.is_empty())
    });
    assert_eq!(logs.trim(), "second");
}

#[test]
fn deleted_manifest_stops_the_pod_within_its_grace_period() {
    let node = TestNode::start();
    // PID 1 without a TERM handler ignores SIGTERM: the agent must SIGKILL
    // after the grace period, exactly as on Kubernetes.
    node.write_manifest(
        "stubborn.yaml",
        &pod_yaml(
            "stubborn",
            "spec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: c\n    image: busybox\n    command: [\"sh\", \"-c\", \"while :; do sleep 1; done\"]\n",
        ),
    );
    node.write_manifest(
        "polite.yaml",
        &pod_yaml(
            "polite",
            "spec:\n  terminationGracePeriodSeconds: 30\n  containers:\n  - name: c\n    image: busybox\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; while :; do sleep 0.1; done\"]\n",
        ),
    );
    node.wait_running("stubborn");
    node.wait_running("polite");
    let t0 = Instant::now();
    node.remove_manifest("stubborn.yaml");
    node.remove_manifest("polite.yaml");
    node.wait_for("both pods gone", Duration::from_secs(10), |n| {
        n.pods().is_empty().then_some(())
    });
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
        "the stubborn pod is killed after its 2 s grace period, took {took:?}"
    );
    assert!(node.processes_in_cgroups().is_empty());
}

#[test]
fn a_broken_manifest_beside_good_ones_breaks_nothing() {
    let node = TestNode::start();
    node.write_manifest(
        "good.yaml",
        &pod_yaml(
            "good",
            "spec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    command: [\"sleep\", \"3600\"]\n",
        ),
    );
    node.write_manifest(
        "broken.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: [not, a, map\n",
    );
    node.write_manifest(
        "badqty.yaml",
        &pod_yaml(
            "badqty",
            "spec:\n  containers:\n  - name: c\n    image: busybox\n    resources:\n      limits:\n        cpu: lots\n",
        ),
    );
    node.write_manifest(
        "noimage.yaml",
        &pod_yaml(
            "noimage",
            "spec:\n  containers:\n  - name: c\n    image: registry.local:5000/absent:1.0\n",
        ),
    );
    node.wait_running("good");
    let waiting = node.wait_for("ErrImagePull", Duration::from_secs(10), |n| {
        let c = n.container_status("noimage", "c")?;
        let reason = c["state"]["waiting"]["reason"].as_str()?.to_string();
        (reason == "ErrImagePull" || reason == "ImagePullBackOff").then_some(c)
    });
    assert!(
        waiting["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .contains("registry.local:5000/absent:1.0")
    );
    assert_eq!(node.pods().len(), 2, "broken files make no pods");
    let log = node.agent_log();
    assert!(
        log.contains("badqty.yaml") && log.contains("spec.containers[0].resources.limits.cpu"),
        "{}",
        common::tail(&log, 20)
    );
    assert!(log.contains("broken.yaml"), "{}", common::tail(&log, 20));
    // The good pod keeps running after more bad input arrives.
    node.write_manifest("broken2.yaml", "kind: Pod\napiVersion: v1\nspec: 3\n");
    std::thread::sleep(Duration::from_millis(500));
    node.wait_running("good");
}

#[test]
fn agent_restart_adopts_running_containers_without_duplicates() {
    let mut node = TestNode::start();
    node.write_manifest(
        "long.yaml",
        &pod_yaml(
            "long",
            "spec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    command: [\"sleep\", \"3600\"]\n",
        ),
    );
    node.write_manifest(
        "short.yaml",
        &pod_yaml(
            "short",
            "spec:\n  restartPolicy: OnFailure\n  containers:\n  - name: c\n    image: busybox\n    command: [\"sh\", \"-c\", \"sleep 3; exit 3\"]\n",
        ),
    );
    let before = node.wait_running("long");
    node.wait_running("short");
    let procs_before = node.processes_in_cgroups();
    node.kill_agent();
    // The short container exits while no agent is watching.
    std::thread::sleep(Duration::from_secs(4));
    node.spawn_agent();
    let after = node.wait_running("long");
    let c0 = &before["status"]["containerStatuses"][0];
    let c1 = &after["status"]["containerStatuses"][0];
    assert_eq!(
        c1["containerID"], c0["containerID"],
        "same container, not a new one"
    );
    assert_eq!(c1["restartCount"], 0);
    assert_eq!(
        c1["state"]["running"]["startedAt"],
        c0["state"]["running"]["startedAt"]
    );
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    let short = node.wait_for("the missed exit", Duration::from_secs(10), |n| {
        let c = n.container_status("short", "c")?;
        (c["restartCount"].as_i64()? >= 1).then_some(c)
    });
    assert_eq!(short["lastState"]["terminated"]["exitCode"], 3, "{short}");
    assert_eq!(node.pods().len(), 2);
    let long_pids: Vec<i32> = node.processes_in_cgroups();
    // The long pod's processes (sandbox + sleep) are the very same ones.
    let survivors = procs_before
        .iter()
        .filter(|p| long_pids.contains(p))
        .count();
    assert!(
        survivors >= 2,
        "before {procs_before:?} after {long_pids:?}"
    );
}

#[test]
fn fifty_pods_come_and_go_without_leaks() {
    let node = TestNode::start();
    for i in 0..50 {
        node.write_manifest(
            &format!("p{i}.yaml"),
            &pod_yaml(
                &format!("p{i}"),
                "spec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    command: [\"sleep\", \"3600\"]\n    resources:\n      limits:\n        cpu: 100m\n        memory: 16Mi\n",
            ),
        );
    }
    node.wait_for("50 running pods", Duration::from_secs(90), |n| {
        let pods = n.pods();
        let running = pods
            .iter()
            .filter(|p| p["status"]["containerStatuses"][0]["state"]["running"].is_object())
            .count();
        (running == 50).then_some(())
    });
    assert!(
        node.processes_in_cgroups().len() >= 100,
        "a sandbox and a container per pod"
    );
    for i in 0..50 {
        node.remove_manifest(&format!("p{i}.yaml"));
    }
    node.wait_for("no pods", Duration::from_secs(60), |n| {
        n.pods().is_empty().then_some(())
    });
    assert!(node.processes_in_cgroups().is_empty(), "leftover processes");
    let leftover: Vec<_> = node
        .cgroup_dirs_below_root()
        .into_iter()
        .filter(|d| d.to_string_lossy().contains("/pod"))
        .collect();
    assert!(leftover.is_empty(), "leftover pod cgroups: {leftover:?}");
    assert!(
        node.mounts_below_root().is_empty(),
        "leftover mounts: {:?}",
        node.mounts_below_root()
    );
    let pods_dir = node.state_dir().join("pods");
    assert_eq!(
        std::fs::read_dir(pods_dir).unwrap().count(),
        0,
        "leftover pod dirs"
    );
}

#[test]
fn security_context_user_and_read_only_rootfs_are_honoured() {
    let node = TestNode::start();
    node.write_manifest(
        "secure.yaml",
        &pod_yaml(
            "secure",
            r#"spec:
  terminationGracePeriodSeconds: 1
  securityContext:
    runAsUser: 65534
    runAsGroup: 65534
  containers:
  - name: c
    image: busybox
    securityContext:
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
    command: ["sh", "-c"]
    args:
    - |
      echo "id=$(id -u):$(id -g)"
      grep -E 'CapEff|NoNewPrivs' /proc/self/status
      touch /rootfs-write 2>/dev/null && echo root=rw || echo root=ro
      echo ok > /dev/termination-log && echo termlog=rw
      exec sleep 3600
"#,
        ),
    );
    node.wait_running("secure");
    let name = format!("secure-{}", node.node_name);
    let logs = node.wait_for("output", Duration::from_secs(10), |n| {
        n.get(&format!("/containerLogs/default/{name}/c"))
            .ok()
            .filter(|l| l.contains("termlog"))
    });
    assert!(logs.contains("id=65534:65534"), "{logs}");
    assert!(
        logs.contains("CapEff:\t0000000000000000"),
        "a non-root user keeps no capabilities: {logs}"
    );
    assert!(logs.contains("NoNewPrivs:\t1"), "{logs}");
    assert!(logs.contains("root=ro"), "{logs}");
}

#[test]
fn logs_of_the_current_and_previous_run_and_metrics() {
    let node = TestNode::start();
    node.write_manifest(
        "crash.yaml",
        &pod_yaml(
            "crash",
            r#"spec:
  restartPolicy: OnFailure
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "for i in 1 2 3; do echo line $i; done; echo oops >&2; echo bye > /dev/termination-log; exit 2"]
"#,
        ),
    );
    let status = node.wait_for("a restart", Duration::from_secs(20), |n| {
        let c = n.container_status("crash", "c")?;
        (c["restartCount"].as_i64()? >= 1).then_some(c)
    });
    let last = &status["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 2, "{status}");
    assert_eq!(last["reason"], "Error", "{status}");
    assert_eq!(
        last["message"], "bye\n",
        "the termination log becomes the message: {status}"
    );
    let name = format!("crash-{}", node.node_name);
    let previous = node
        .get(&format!("/containerLogs/default/{name}/c?previous=true"))
        .unwrap();
    assert_eq!(previous, "line 1\nline 2\nline 3\noops\n");
    let tail = node
        .get(&format!(
            "/containerLogs/default/{name}/c?previous=true&tailLines=2"
        ))
        .unwrap();
    assert_eq!(tail, "line 3\noops\n");
    let stamped = node
        .get(&format!(
            "/containerLogs/default/{name}/c?previous=true&timestamps=true"
        ))
        .unwrap();
    assert!(
        stamped
            .lines()
            .all(|l| l.len() > 31 && l.as_bytes()[4] == b'-' && l.contains('Z')),
        "{stamped}"
    );
    // The raw file is in the CRI format under the root dir.
    let uid = node.pod("crash").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let raw = std::fs::read_to_string(
        node.state_dir()
            .join(format!("logs/default_{name}_{uid}/c/0.log")),
    )
    .unwrap();
    assert!(
        raw.lines().next().unwrap().contains(" stdout F line 1"),
        "{raw}"
    );
    assert!(raw.contains(" stderr F oops"), "{raw}");
    let metrics = node.get("/metrics").unwrap();
    assert!(
        metrics.contains(&format!("kube_pod_container_status_restarts_total{{namespace=\"default\",pod=\"{name}\",container=\"c\"}}")),
        "{metrics}"
    );
}

#[test]
fn containers_of_a_pod_share_an_empty_dir_and_see_a_host_path() {
    let node = TestNode::start();
    let host_dir = node.root.path().join("host-data");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("greeting"), "from the node\n").unwrap();
    node.write_manifest(
        "shared.yaml",
        &pod_yaml(
            "shared",
            &format!(
                r#"spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: html
    emptyDir: {{}}
  - name: mem
    emptyDir:
      medium: Memory
      sizeLimit: 8Mi
  - name: node-data
    hostPath:
      path: {host}
      type: Directory
  containers:
  - name: writer
    image: busybox
    command: ["sh", "-c", "echo written-by-writer > /html/index.html; df -k /scratch | tail -1; exec sleep 3600"]
    volumeMounts:
    - name: html
      mountPath: /html
    - name: mem
      mountPath: /scratch
  - name: reader
    image: busybox
    command: ["sh", "-c", "while [ ! -f /usr/share/html/index.html ]; do sleep 0.1; done; cat /usr/share/html/index.html /data/greeting; touch /data/x 2>/dev/null || echo data=ro; exec sleep 3600"]
    volumeMounts:
    - name: html
      mountPath: /usr/share/html
    - name: node-data
      mountPath: /data
      readOnly: true
"#,
                host = host_dir.display()
            ),
        ),
    );
    node.wait_running("shared");
    let name = format!("shared-{}", node.node_name);
    let logs = node.wait_for("the reader's output", Duration::from_secs(10), |n| {
        n.get(&format!("/containerLogs/default/{name}/reader"))
            .ok()
            .filter(|l| l.contains("data=ro"))
    });
    assert_eq!(logs, "written-by-writer\nfrom the node\ndata=ro\n");
    let writer = node
        .get(&format!("/containerLogs/default/{name}/writer"))
        .unwrap();
    assert!(
        writer.contains("tmpfs") && writer.contains("8192"),
        "a Memory emptyDir is an 8Mi tmpfs: {writer}"
    );
    node.remove_manifest("shared.yaml");
    node.wait_for("pod gone", Duration::from_secs(10), |n| {
        n.pods().is_empty().then_some(())
    });
    assert!(
        node.mounts_below_root().is_empty(),
        "{:?}",
        node.mounts_below_root()
    );
    assert!(
        host_dir.join("greeting").exists(),
        "a hostPath is never deleted"
    );
}

#[test]
fn pre_stop_hook_runs_before_the_container_is_stopped() {
    let node = TestNode::start();
    let host_dir = node.root.path().join("hook-out");
    std::fs::create_dir_all(&host_dir).unwrap();
    node.write_manifest(
        "hook.yaml",
        &pod_yaml(
            "hook",
            &format!(
                r#"spec:
  terminationGracePeriodSeconds: 3
  volumes:
  - name: out
    hostPath:
      path: {}
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "trap 'echo got-term >> /out/log; exit 0' TERM; while :; do sleep 0.1; done"]
    volumeMounts:
    - name: out
      mountPath: /out
    lifecycle:
      preStop:
        exec:
          command: ["sh", "-c", "echo pre-stop >> /out/log"]
"#,
                host_dir.display()
            ),
        ),
    );
    node.wait_running("hook");
    node.remove_manifest("hook.yaml");
    node.wait_for("pod gone", Duration::from_secs(10), |n| {
        n.pods().is_empty().then_some(())
    });
    let log = std::fs::read_to_string(host_dir.join("log")).unwrap();
    assert_eq!(
        log, "pre-stop\ngot-term\n",
        "the hook runs first, then SIGTERM"
    );
}

#[test]
fn privileged_container_keeps_the_nodes_capabilities_and_devices() {
    let node = TestNode::start();
    node.write_manifest(
        "priv.yaml",
        &pod_yaml(
            "priv",
            r#"spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    securityContext:
      privileged: true
    command: ["sh", "-c"]
    args:
    - |
      mknod /tmp/kmsg c 1 11 && ( exec 3</tmp/kmsg ) 2>/dev/null && echo kmsg=open || echo kmsg=denied
      echo "proc-mounts=$(awk '$5 ~ "^/proc/" {print $5}' /proc/self/mountinfo | tr '\n' ' ')"
      grep CapEff /proc/self/status
      exec sleep 3600
"#,
        ),
    );
    node.wait_running("priv");
    let name = format!("priv-{}", node.node_name);
    let logs = node.wait_for("output", Duration::from_secs(10), |n| {
        n.get(&format!("/containerLogs/default/{name}/c"))
            .ok()
            .filter(|l| l.contains("CapEff"))
    });
    assert!(logs.contains("kmsg=open"), "{logs}");
    // Nothing of /proc is masked or made read-only for it.
    assert!(logs.contains("proc-mounts=\n"), "{logs}");
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let own_eff = own.lines().find(|l| l.starts_with("CapEff")).unwrap();
    assert!(
        logs.contains(own_eff),
        "a privileged container has the node's capabilities ({own_eff}): {logs}"
    );
}
