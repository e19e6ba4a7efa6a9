//! Jobs on a real node: an Indexed Job's busybox pods each see their
//! completion index (`JOB_COMPLETION_INDEX`, hostname `<job>-<index>`)
//! and the Job completes; a Job whose container exits 3 is retried after
//! the back-off and fails with `BackoffLimitExceeded`.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::time::Duration;

use cluster::{ApiServer, row, wait_for};

#[test]
fn indexed_job_pods_see_their_index_and_a_failing_job_hits_its_backoff_limit() {
    let api = ApiServer::start();
    // The host's disk is shared with builds: no DiskPressure taint unless
    // it is really full.
    let node = api.join_with(&[
        "--eviction-hard",
        "memory.available<1Mi,nodefs.available<1%",
    ]);
    let name = node.node_name.clone();
    wait_for(&node, "node Ready", Duration::from_secs(30), || {
        (row(&api.try_kubectl(&["get", "nodes"])?, &name)?[1] == "Ready").then_some(())
    });
    api.apply(
        "apiVersion: batch/v1
kind: Job
metadata:
  name: idx
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox
        command: [\"sh\", \"-c\", \"echo index=$JOB_COMPLETION_INDEX host=$(hostname)\"]
",
    );
    let out = api.kubectl_with(
        &[
            "wait",
            "--for=condition=complete",
            "job/idx",
            "--timeout=180s",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "job idx did not complete: {}\n{}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        api.try_kubectl(&["get", "pods", "-o", "wide"])
            .unwrap_or_default(),
        common::tail(&node.agent_log(), 40)
    );
    let job = api.kubectl(&["get", "job", "idx"]);
    assert_eq!(
        row(&job, "idx").unwrap()[1..3],
        ["Complete", "3/3"],
        "{job}"
    );
    let pods = api.kubectl(&[
        "get",
        "pods",
        "-l",
        "job-name=idx",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.metadata.annotations.batch\\.kubernetes\\.io/job-completion-index}{\"\\n\"}{end}",
    ]);
    let mut seen = Vec::new();
    for line in pods.lines().filter(|l| !l.is_empty()) {
        let (pod, index) = line.split_once(' ').unwrap();
        let log = api.kubectl(&["logs", pod]);
        assert_eq!(
            log.trim(),
            format!("index={index} host=idx-{index}"),
            "pod {pod}"
        );
        seen.push(index.to_owned());
    }
    seen.sort();
    assert_eq!(seen, ["0", "1", "2"], "{pods}");

    api.apply(
        "apiVersion: batch/v1
kind: Job
metadata:
  name: fails
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox
        command: [\"sh\", \"-c\", \"exit 3\"]
",
    );
    let out = api.kubectl_with(
        &[
            "wait",
            "--for=condition=failed",
            "job/fails",
            "--timeout=180s",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "job fails did not fail: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        common::tail(&node.agent_log(), 40)
    );
    let reason = api.kubectl(&[
        "get",
        "job",
        "fails",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason} {.status.failed}",
    ]);
    assert_eq!(reason.trim(), "BackoffLimitExceeded 2");
    // Both pods ran and exited 3 on the node.
    let codes = api.kubectl(&[
        "get",
        "pods",
        "-l",
        "job-name=fails",
        "-o",
        "jsonpath={.items[*].status.containerStatuses[0].state.terminated.exitCode}",
    ]);
    assert_eq!(codes.split_whitespace().collect::<Vec<_>>(), ["3", "3"]);
}
