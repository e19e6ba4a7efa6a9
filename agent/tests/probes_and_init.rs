//! Probes and init containers, as the seed notes use them (kubia-liveness:
//! an HTTP server that starts answering 500 after five requests).

mod common;

use std::time::Duration;

use common::TestNode;
use serde_json::Value;

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

const KUBIA: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: kubia-liveness
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: kubia
    image: busybox
    ports:
    - name: http
      containerPort: 8080
    command: ["sh", "-c"]
    args:
    - |
      mkdir -p /www/cgi-bin
      cat > /www/cgi-bin/health <<'EOS'
      #!/bin/sh
      n=$(cat /tmp/count 2>/dev/null || echo 0); n=$((n+1)); echo $n > /tmp/count
      if [ $n -gt 5 ]; then
        printf 'Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\nI am not well. Please restart me!\n'
      else
        printf 'Content-Type: text/plain\r\n\r\nYou have hit %s\n' "$(hostname)"
      fi
      EOS
      sed -i 's/^      //' /www/cgi-bin/health
      chmod +x /www/cgi-bin/health
      exec httpd -f -p 8080 -h /www
    livenessProbe:
      httpGet:
        path: /cgi-bin/health
        port: http
      periodSeconds: 1
      failureThreshold: 3
"#;

#[test]
fn failing_liveness_probe_restarts_the_container_as_kubelet_does() {
    let node = TestNode::start();
    node.write_manifest("kubia.yaml", KUBIA);
    let status = node.wait_for("a liveness restart", Duration::from_secs(40), |n| {
        let c = n.container_status("kubia-liveness", "kubia")?;
        (c["restartCount"].as_i64()? >= 1).then_some(c)
    });
    let last = &status["lastState"]["terminated"];
    // httpd as PID 1 ignores SIGTERM: killed after the grace period.
    assert_eq!(last["exitCode"], 137, "{status}");
    assert_eq!(last["reason"], "Error", "{status}");
    let events = events_for(&node, "kubia-liveness");
    let messages: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["reason"].as_str().unwrap(),
                e["message"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        messages.contains(
            &"Unhealthy Liveness probe failed: HTTP probe failed with statuscode: 500".to_string()
        ),
        "{messages:#?}"
    );
    assert!(
        messages.contains(
            &"Killing Container kubia failed liveness probe, will be restarted".to_string()
        ),
        "{messages:#?}"
    );
    let unhealthy = messages
        .iter()
        .filter(|m| m.starts_with("Unhealthy"))
        .count();
    assert!(unhealthy >= 3, "failureThreshold 3: {messages:#?}");
}

#[test]
fn readiness_and_exec_probes_set_ready() {
    let node = TestNode::start();
    node.write_manifest(
        "ready.yaml",
        r#"apiVersion: v1
kind: Pod
metadata:
  name: ready
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "sleep 3; touch /tmp/ready; exec sleep 3600"]
    readinessProbe:
      exec:
        command: ["cat", "/tmp/ready"]
      periodSeconds: 1
"#,
    );
    let early = node.wait_running("ready");
    assert_eq!(
        early["status"]["containerStatuses"][0]["ready"], false,
        "{early}"
    );
    let ready_cond = |p: &Value| {
        p["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(ready_cond(&early), "False");
    let later = node.wait_for("ready", Duration::from_secs(15), |n| {
        let p = n.pod("ready")?;
        (p["status"]["containerStatuses"][0]["ready"] == true).then_some(p)
    });
    assert_eq!(ready_cond(&later), "True");
    let unhealthy: Vec<String> = events_for(&node, "ready")
        .into_iter()
        .filter(|e| e["reason"] == "Unhealthy")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        !unhealthy.is_empty(),
        "readiness failed at least once before the file appeared"
    );
    // The command's output, as the kubelet's exec prober reports it.
    assert!(
        unhealthy.iter().any(|m| m
            == "Readiness probe failed: cat: can't open '/tmp/ready': No such file or directory\n"),
        "{unhealthy:#?}"
    );
}

#[test]
fn init_containers_run_in_order_before_the_app() {
    let node = TestNode::start();
    node.write_manifest(
        "init.yaml",
        r#"apiVersion: v1
kind: Pod
metadata:
  name: init-demo
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: first
    image: busybox
    command: ["sh", "-c", "sleep 1; echo first > /dev/termination-log"]
  - name: second
    image: busybox
    command: ["sh", "-c", "echo second"]
  containers:
  - name: app
    image: busybox
    command: ["sleep", "3600"]
"#,
    );
    let pending = node.wait_for("Pending while init runs", Duration::from_secs(10), |n| {
        let p = n.pod("init-demo")?;
        (p["status"]["phase"] == "Pending").then_some(p)
    });
    assert_eq!(
        pending["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "PodInitializing",
        "{pending}"
    );
    let pod = node.wait_running("init-demo");
    let inits = pod["status"]["initContainerStatuses"].as_array().unwrap();
    assert_eq!(inits.len(), 2);
    for c in inits {
        assert_eq!(c["state"]["terminated"]["reason"], "Completed", "{c}");
    }
    let first_done = inits[0]["state"]["terminated"]["finishedAt"]
        .as_str()
        .unwrap();
    let second_start = inits[1]["state"]["terminated"]["startedAt"]
        .as_str()
        .unwrap();
    assert!(first_done <= second_start, "in order: {inits:?}");
    let app_start = pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
        .as_str()
        .unwrap();
    assert!(
        inits[1]["state"]["terminated"]["finishedAt"]
            .as_str()
            .unwrap()
            <= app_start
    );
}

#[test]
fn failing_init_container_with_restart_never_fails_the_pod() {
    let node = TestNode::start();
    node.write_manifest(
        "initfail.yaml",
        r#"apiVersion: v1
kind: Pod
metadata:
  name: initfail
spec:
  restartPolicy: Never
  initContainers:
  - name: check
    image: busybox
    command: ["sh", "-c", "exit 1"]
  containers:
  - name: app
    image: busybox
    command: ["sleep", "3600"]
"#,
    );
    let pod = node.wait_for("Failed", Duration::from_secs(15), |n| {
        let p = n.pod("initfail")?;
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    assert_eq!(
        pod["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"],
        1
    );
    assert!(
        pod["status"]["containerStatuses"][0]["state"]["running"].is_null(),
        "the app never ran: {pod}"
    );
}
