//! The container and pod lifecycle around the processes themselves, with
//! static pods on a real node: postStart hooks, termination messages,
//! activeDeadlineSeconds, the phases of run-to-completion pods, a shared
//! PID namespace and memory-backed emptyDirs.

mod common;

use std::time::Duration;

use common::TestNode;
use serde_json::Value;

fn pod_yaml(name: &str, body: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n{body}")
}

fn events_for(node: &TestNode, pod: &str) -> Vec<Value> {
    let full = format!("default/{pod}-{}", node.node_name);
    node.get_json("/events")
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["object"] == full.as_str())
        .collect()
}

fn has_event(node: &TestNode, pod: &str, reason: &str, message: &str) -> bool {
    events_for(node, pod)
        .iter()
        .any(|e| e["reason"] == reason && e["message"] == message)
}

fn logs(node: &TestNode, pod: &str, container: &str) -> Option<String> {
    node.get(&format!(
        "/containerLogs/default/{pod}-{}/{container}",
        node.node_name
    ))
    .ok()
}

/// The `state.terminated` of a container once it has one.
fn wait_terminated(node: &TestNode, pod: &str, container: &str) -> Value {
    node.wait_for(
        &format!("{pod}/{container} terminated"),
        Duration::from_secs(40),
        |n| {
            let t = n.container_status(pod, container)?["state"]["terminated"].clone();
            t.is_object().then_some(t)
        },
    )
}

#[test]
fn post_start_hook_runs_in_the_container_and_a_failed_one_kills_it() {
    let node = TestNode::start();
    node.write_manifest(
        "hooked.yaml",
        &pod_yaml(
            "hooked",
            r#"spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: shared
    emptyDir: {}
  containers:
  - name: main
    image: busybox
    volumeMounts:
    - name: shared
      mountPath: /shared
    command: ["sh", "-c", "until [ -f /shared/hook ]; do sleep 0.1; done; cat /shared/hook; exec sleep 3600"]
    lifecycle:
      postStart:
        exec:
          command: ["sh", "-c", "echo written by postStart in $(hostname) > /shared/hook"]
"#,
        ),
    );
    let full = format!("hooked-{}", node.node_name);
    let out = node.wait_for("the hook's file in the log", Duration::from_secs(30), |n| {
        logs(n, "hooked", "main").filter(|l| l.contains("postStart"))
    });
    assert_eq!(out.trim(), format!("written by postStart in {full}"));
    node.wait_running("hooked");

    node.write_manifest(
        "badhook.yaml",
        &pod_yaml(
            "badhook",
            r#"spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "trap 'exit 143' TERM; while :; do sleep 0.1; done"]
    lifecycle:
      postStart:
        exec:
          command: ["sh", "-c", "echo cannot configure; exit 3"]
"#,
        ),
    );
    let terminated = wait_terminated(&node, "badhook", "main");
    assert_eq!(terminated["exitCode"], 143, "{terminated}");
    let message = terminated["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "Exec lifecycle hook ([sh -c echo cannot configure; exit 3]) for Container \"main\" in Pod \"badhook-"
        ),
        "{message}"
    );
    // The runtime's error (exit code, stderr), then the whole output.
    assert!(
        message.ends_with(
            "failed - error: command 'sh -c echo cannot configure; exit 3' exited with 3: , message: \"cannot configure\\n\""
        ),
        "{message}"
    );
    assert!(has_event(
        &node,
        "badhook",
        "FailedPostStartHook",
        "PostStartHook failed"
    ));
    assert!(has_event(
        &node,
        "badhook",
        "Killing",
        "FailedPostStartHook"
    ));
    let pod = node.pod("badhook").unwrap();
    assert_eq!(pod["status"]["phase"], "Failed");
}

#[test]
fn termination_messages_from_the_file_and_from_the_log() {
    let node = TestNode::start();
    node.write_manifest(
        "messages.yaml",
        &pod_yaml(
            "messages",
            r#"spec:
  restartPolicy: Never
  containers:
  - name: default-path
    image: busybox
    command: ["sh", "-c", "echo -n 'bye from /dev/termination-log' > /dev/termination-log; exit 1"]
  - name: custom-path
    image: busybox
    terminationMessagePath: /tmp/why
    command: ["sh", "-c", "echo all done > /tmp/why"]
  - name: from-logs
    image: busybox
    terminationMessagePolicy: FallbackToLogsOnError
    command: ["sh", "-c", "for i in $(seq 1 100); do echo line $i; done; exit 2"]
  - name: logs-but-success
    image: busybox
    terminationMessagePolicy: FallbackToLogsOnError
    command: ["sh", "-c", "echo fine"]
"#,
        ),
    );
    let t = wait_terminated(&node, "messages", "default-path");
    assert_eq!(t["exitCode"], 1);
    assert_eq!(t["message"], "bye from /dev/termination-log");
    let t = wait_terminated(&node, "messages", "custom-path");
    assert_eq!(t["reason"], "Completed");
    assert_eq!(t["message"], "all done\n");
    let t = wait_terminated(&node, "messages", "from-logs");
    assert_eq!(t["exitCode"], 2);
    let message = t["message"].as_str().unwrap();
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(lines.len(), 80, "the last 80 lines: {message}");
    assert_eq!(lines[0], "line 21");
    assert_eq!(lines[79], "line 100");
    let t = wait_terminated(&node, "messages", "logs-but-success");
    assert!(t["message"].is_null(), "no message for a success: {t}");
    let pod = node.wait_for("phase Failed", Duration::from_secs(20), |n| {
        n.pod("messages")
            .filter(|p| p["status"]["phase"] == "Failed")
    });
    assert_eq!(pod["status"]["conditions"][2]["reason"], "PodCompleted");
}

#[test]
fn active_deadline_fails_the_pod_and_run_to_completion_phases() {
    let node = TestNode::start();
    node.write_manifest(
        "deadline.yaml",
        &pod_yaml(
            "deadline",
            r#"spec:
  activeDeadlineSeconds: 3
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: ["sleep", "3600"]
"#,
        ),
    );
    for (name, policy, code) in [
        ("ok-never", "Never", 0),
        ("bad-never", "Never", 1),
        ("ok-onfailure", "OnFailure", 0),
    ] {
        node.write_manifest(
            &format!("{name}.yaml"),
            &pod_yaml(
                name,
                &format!(
                    "spec:\n  restartPolicy: {policy}\n  containers:\n  - name: main\n    image: busybox\n    command: [\"sh\", \"-c\", \"exit {code}\"]\n"
                ),
            ),
        );
    }
    node.wait_running("deadline");
    let started = std::time::Instant::now();
    let pod = node.wait_for("DeadlineExceeded", Duration::from_secs(30), |n| {
        n.pod("deadline")
            .filter(|p| p["status"]["phase"] == "Failed")
    });
    let took = started.elapsed();
    assert!(took < Duration::from_secs(8), "failed after {took:?}");
    assert_eq!(pod["status"]["reason"], "DeadlineExceeded");
    assert_eq!(
        pod["status"]["message"],
        "Pod was active on the node longer than the specified deadline"
    );
    let t = wait_terminated(&node, "deadline", "main");
    assert_eq!(t["exitCode"], 137, "sleep ignores SIGTERM as PID 1: {t}");
    assert!(has_event(
        &node,
        "deadline",
        "DeadlineExceeded",
        "Pod was active on the node longer than the specified deadline"
    ));
    // It stays down.
    std::thread::sleep(Duration::from_secs(2));
    let cs = node.container_status("deadline", "main").unwrap();
    assert_eq!(cs["restartCount"], 0);
    assert!(cs["state"]["terminated"].is_object());

    for (name, phase) in [
        ("ok-never", "Succeeded"),
        ("bad-never", "Failed"),
        ("ok-onfailure", "Succeeded"),
    ] {
        node.wait_for(&format!("{name} {phase}"), Duration::from_secs(30), |n| {
            n.pod(name).filter(|p| p["status"]["phase"] == phase)
        });
    }
}

#[test]
fn shared_process_namespace_shows_the_other_containers_processes() {
    let node = TestNode::start();
    node.write_manifest(
        "shared.yaml",
        &pod_yaml(
            "shared",
            r#"spec:
  shareProcessNamespace: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox
    command: ["sleep", "3600"]
  - name: debug
    image: busybox
    command: ["sh", "-c", "until ps | grep -q '[s]leep 3600'; do sleep 0.2; done; ps; exec sleep 3600"]
"#,
        ),
    );
    let out = node.wait_for("ps in the debug container", Duration::from_secs(30), |n| {
        logs(n, "shared", "debug").filter(|l| l.contains("sleep 3600"))
    });
    let pid1 = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some("1"))
        .unwrap_or_else(|| panic!("no PID 1 in {out}"));
    assert!(
        pid1.contains("sandbox"),
        "PID 1 is the pod's sandbox: {out}"
    );
    assert!(
        out.lines()
            .any(|l| l.ends_with("sleep 3600") && l.split_whitespace().next() != Some("1")),
        "the app container's process is visible: {out}"
    );
    node.wait_running("shared");

    // Without sharing, each container is PID 1 of its own namespace.
    node.write_manifest(
        "alone.yaml",
        &pod_yaml(
            "alone",
            r#"spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "ps; exec sleep 3600"]
"#,
        ),
    );
    let out = node.wait_for("ps in its own namespace", Duration::from_secs(30), |n| {
        logs(n, "alone", "app").filter(|l| l.contains("ps"))
    });
    let pid1 = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some("1"))
        .unwrap_or_default();
    assert!(pid1.contains("sh -c ps"), "{out}");
    assert!(!out.contains("sandbox"), "{out}");
}

#[test]
fn memory_emptydir_is_a_sized_tmpfs_charged_to_the_pod() {
    let node = TestNode::start();
    node.write_manifest(
        "cache.yaml",
        &pod_yaml(
            "cache",
            r#"spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: cache
    emptyDir:
      medium: Memory
      sizeLimit: 16Mi
  containers:
  - name: main
    image: busybox
    resources:
      limits:
        memory: 64Mi
    volumeMounts:
    - name: cache
      mountPath: /cache
    command: ["sh", "-c", "df -k /cache | tail -n 1; dd if=/dev/zero of=/cache/big bs=1M count=32 2>&1 | head -n 1; rm /cache/big; dd if=/dev/zero of=/cache/twelve bs=1M count=12 2>/dev/null; echo wrote; exec sleep 3600"]
"#,
        ),
    );
    let out = node.wait_for("the writes", Duration::from_secs(30), |n| {
        logs(n, "cache", "main").filter(|l| l.contains("wrote"))
    });
    let df: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(df[0], "tmpfs", "{out}");
    assert_eq!(df[1], "16384", "sizeLimit 16Mi is the tmpfs size: {out}");
    assert!(out.contains("No space left on device"), "{out}");
    // 12 MiB of tmpfs pages are charged to the container that wrote them.
    let full = format!("cache-{}", node.node_name);
    let ws = node.wait_for(
        "the container's working set",
        Duration::from_secs(15),
        |n| {
            let summary = n.get_json("/stats/summary");
            let pod = summary["pods"]
                .as_array()?
                .iter()
                .find(|p| p["podRef"]["name"] == full.as_str())?
                .clone();
            pod["containers"][0]["memory"]["workingSetBytes"].as_u64()
        },
    );
    assert!(ws >= 12 << 20, "working set {ws} includes the tmpfs pages");
}
