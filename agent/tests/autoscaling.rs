//! The seed's HorizontalPodAutoscaler walkthrough on a real node: a
//! Deployment whose pod requests 100m CPU and burns up to its 200m limit,
//! `kubectl autoscale deployment php --cpu-percent=50 --min=1 --max=3`,
//! the autoscaler reading the pods' usage from the apiserver's metrics API
//! and scaling to 3 with upstream's event, then back to 1 once the load
//! stops (the scale-down window shortened through the HPA's `behavior`;
//! the controller syncs every 2 s instead of 15 s).

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::time::Duration;

use cluster::{ApiServer, row, wait_for};

const PHP: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: php
spec:
  replicas: 1
  selector:
    matchLabels:
      app: php
  template:
    metadata:
      labels:
        app: php
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: php
        image: busybox
        command: [\"sh\", \"-c\", \"while [ ! -f /tmp/idle ]; do :; done; exec sleep 3600\"]
        resources:
          requests:
            cpu: 100m
          limits:
            cpu: 200m
";

fn replicas(api: &ApiServer) -> Option<String> {
    api.try_kubectl(&[
        "get",
        "deployment",
        "php",
        "-o",
        "jsonpath={.spec.replicas}",
    ])
}

#[test]
fn an_hpa_scales_a_busy_deployment_up_and_back_down() {
    let api = ApiServer::start_with(&["--horizontal-pod-autoscaler-sync-period", "2s"]);
    let node = api.join_with(&[
        "--eviction-hard",
        "memory.available<1Mi,nodefs.available<1%",
    ]);
    let name = node.node_name.clone();
    wait_for(&node, "node Ready", Duration::from_secs(20), || {
        (row(&api.try_kubectl(&["get", "nodes"])?, &name)?[1] == "Ready").then_some(())
    });
    api.apply(PHP);
    wait_for(
        &node,
        "the php pod running",
        Duration::from_secs(60),
        || {
            let pods = api.try_kubectl(&["get", "pods", "-l", "app=php", "--no-headers"])?;
            pods.lines()
                .any(|l| l.split_whitespace().nth(2) == Some("Running"))
                .then_some(())
        },
    );

    let said = api.kubectl(&[
        "autoscale",
        "deployment",
        "php",
        "--cpu-percent=50",
        "--min=1",
        "--max=3",
    ]);
    assert_eq!(
        said.trim(),
        "horizontalpodautoscaler.autoscaling/php autoscaled"
    );
    // 200m used of 100m requested: 200% against 50%, ceil(1 × 4) = 4,
    // held at --max=3.
    wait_for(
        &node,
        "the HPA to scale to 3",
        Duration::from_secs(90),
        || (replicas(&api)? == "3").then_some(()),
    );
    let events = api.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=HorizontalPodAutoscaler",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        events.contains(
            "New size: 3; reason: cpu resource utilization (percentage of request) above target"
        ),
        "{events}"
    );
    // The next sync reports the three replicas the Deployment now has.
    let (table, cells) = wait_for(
        &node,
        "the HPA to report 3 replicas",
        Duration::from_secs(60),
        || {
            let table = api.try_kubectl(&["get", "hpa", "php"])?;
            let cells = row(&table, "php")?;
            (cells.get(6)? == "3").then_some((table, cells))
        },
    );
    assert_eq!(cells[1], "Deployment/php", "{table}");
    assert_eq!(cells[2], "cpu:", "{table}");
    let (current, target) = cells[3].split_once('/').unwrap();
    let current: u32 = current.trim_end_matches('%').parse().unwrap_or(0);
    assert!(current > 55, "usage above the target: {table}");
    assert_eq!(target, "50%", "{table}");
    assert_eq!(&cells[4..7], ["1", "3", "3"].map(String::from), "{table}");
    let conditions = api.kubectl(&[
        "get",
        "hpa",
        "php",
        "-o",
        "jsonpath={range .status.conditions[*]}{.type}={.status}/{.reason} {end}",
    ]);
    assert!(
        conditions.contains("ScalingActive=True/ValidMetricFound"),
        "{conditions}"
    );
    wait_for(
        &node,
        "three php pods running",
        Duration::from_secs(60),
        || {
            let pods = api.try_kubectl(&["get", "pods", "-l", "app=php", "--no-headers"])?;
            (pods
                .lines()
                .filter(|l| l.split_whitespace().nth(2) == Some("Running"))
                .count()
                == 3)
                .then_some(())
        },
    );

    // The load stops; a 5 s scale-down window instead of the default 300 s.
    api.kubectl(&[
        "patch",
        "hpa",
        "php",
        "--type=merge",
        "-p",
        r#"{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":5}}}}"#,
    ]);
    let pods = api.kubectl(&["get", "pods", "-l", "app=php", "-o", "name"]);
    for pod in pods.lines() {
        api.kubectl(&["exec", pod, "--", "touch", "/tmp/idle"]);
    }
    wait_for(
        &node,
        "the HPA to scale back to 1",
        Duration::from_secs(90),
        || (replicas(&api)? == "1").then_some(()),
    );
    let events = api.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=HorizontalPodAutoscaler",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        events.contains("New size: 1; reason: All metrics below target"),
        "{events}"
    );
    api.kubectl(&["delete", "deployment", "php"]);
    api.delete_all_pods();
}
