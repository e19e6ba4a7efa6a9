//! RuntimeClass end to end: the apiserver serves `node.k8s.io/v1`
//! RuntimeClasses and admits pods naming them as kube-apiserver does; a node
//! maps `handler: runc` to containers created by Debian's `runc`, and the
//! same pods under the built-in runtime and under runc look the same through
//! the real kubectl (Running, logs, exec, exit codes, restarts, cgroup
//! limits, OOM kills).

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::process::Command;
use std::time::Duration;

use cluster::{ApiServer, api_pod, row, wait_for};

const RUNC_CLASS: &str = "apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata:
  name: runc
handler: runc
";

/// The pods compared, each under `runtimeClassName: <class>` when given.
fn pods(suffix: &str, node: &str, class: Option<&str>) -> Vec<String> {
    let class = class
        .map(|c| format!("  runtimeClassName: {c}\n"))
        .unwrap_or_default();
    let pod = |name: &str, body: &str| {
        api_pod(&format!("{name}-{suffix}"), node, &format!("{class}{body}"))
    };
    vec![
        pod(
            "web",
            "  containers:
  - name: main
    image: busybox
    command: [sh, -c, 'echo hello from $(hostname); exec sleep 3600']
    resources:
      limits: {cpu: 200m, memory: 64Mi}
",
        ),
        pod(
            "exit",
            "  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    command: [sh, -c, 'echo bye; exit 3']
",
        ),
        pod(
            "oom",
            "  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    command: [dd, if=/dev/zero, of=/dev/null, bs=96M, count=1]
    resources:
      limits: {memory: 32Mi}
",
        ),
        pod(
            "crash",
            "  restartPolicy: Always
  containers:
  - name: main
    image: busybox
    command: [sh, -c, 'echo run; exit 1']
",
        ),
    ]
}

/// What a user sees of the pods of `suffix`, with the pod names made alike.
fn observed(api: &ApiServer, node: &common::TestNode, suffix: &str) -> Vec<String> {
    let web = format!("web-{suffix}");
    wait_for(
        node,
        &format!("{web} Running"),
        Duration::from_secs(60),
        || {
            let cells = row(&api.try_kubectl(&["get", "pods"])?, &web)?;
            (cells[1] == "1/1" && cells[2] == "Running").then_some(())
        },
    );
    let field = |pod: &str, path: &str| {
        api.kubectl(&[
            "get",
            "pod",
            &format!("{pod}-{suffix}"),
            "-o",
            &format!("jsonpath={{{path}}}"),
        ])
    };
    for (pod, state) in [("exit", "Error"), ("oom", "OOMKilled")] {
        wait_for(
            node,
            &format!("{pod}-{suffix} {state}"),
            Duration::from_secs(60),
            || {
                (field(pod, ".status.containerStatuses[0].state.terminated.reason") == state)
                    .then_some(())
            },
        );
    }
    wait_for(
        node,
        &format!("crash-{suffix} restarted"),
        Duration::from_secs(60),
        || {
            (field(
                "crash",
                ".status.containerStatuses[0].lastState.terminated.exitCode",
            ) == "1")
                .then_some(())
        },
    );
    let exec = |args: &[&str]| {
        let mut full = vec!["exec", web.as_str(), "--"];
        full.extend_from_slice(args);
        let out = api.kubectl_with(&full, None);
        format!(
            "{} (exit {:?})",
            String::from_utf8_lossy(&out.stdout).trim(),
            out.status.code()
        )
    };
    vec![
        format!(
            "logs: {}",
            api.kubectl(&["logs", &web]).trim().replace(suffix, "*")
        ),
        format!(
            "exec hostname: {}",
            exec(&["hostname"]).replace(suffix, "*")
        ),
        format!("exec exit code: {}", exec(&["sh", "-c", "exit 7"])),
        format!(
            "cpu quota: {}",
            exec(&["cat", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"])
        ),
        format!(
            "memory limit: {}",
            exec(&["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"])
        ),
        format!("exec user: {}", exec(&["id"])),
        format!(
            "exit: {} {} logs {}",
            field(
                "exit",
                ".status.containerStatuses[0].state.terminated.exitCode"
            ),
            field("exit", ".status.phase"),
            api.kubectl(&["logs", &format!("exit-{suffix}")]).trim()
        ),
        format!(
            "oom: {} {}",
            field(
                "oom",
                ".status.containerStatuses[0].state.terminated.exitCode"
            ),
            field("oom", ".status.phase")
        ),
        format!(
            "crash: lastState {} logs {}",
            field(
                "crash",
                ".status.containerStatuses[0].lastState.terminated.reason"
            ),
            api.kubectl(&["logs", &format!("crash-{suffix}"), "--previous"])
                .trim()
        ),
    ]
}

/// The ids of the containers `runc list` shows running under the node's runc root.
fn runc_running(node: &common::TestNode) -> Vec<String> {
    let out = Command::new("runc")
        .arg("--root")
        .arg(node.state_dir().join("runc"))
        .args(["list", "--format", "json"])
        .output()
        .expect("runc list");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    list.as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "running")
        .filter_map(|c| c["id"].as_str().map(String::from))
        .collect()
}

#[test]
fn the_same_pods_look_the_same_under_the_built_in_runtime_and_runc() {
    let api = ApiServer::start();
    let node = api.join();
    let name = node.node_name.clone();
    api.apply(RUNC_CLASS);
    let classes = api.kubectl(&["get", "runtimeclass"]);
    assert_eq!(
        row(&classes, "runc")
            .map(|cells| cells[1].clone())
            .as_deref(),
        Some("runc"),
        "{classes}"
    );
    for pod in pods("builtin", &name, None)
        .into_iter()
        .chain(pods("runc", &name, Some("runc")))
    {
        api.apply(&pod);
    }
    let builtin = observed(&api, &node, "builtin");
    let runc = observed(&api, &node, "runc");
    assert_eq!(builtin, runc);
    // What both show is what Kubernetes shows.
    assert_eq!(builtin[0], "logs: hello from web-*");
    assert_eq!(builtin[2], "exec exit code:  (exit Some(7))");
    assert_eq!(builtin[3], "cpu quota: 20000 (exit Some(0))");
    assert_eq!(builtin[4], "memory limit: 67108864 (exit Some(0))");
    assert_eq!(builtin[6], "exit: 3 Failed logs bye");
    assert_eq!(builtin[7], "oom: 137 Failed");
    assert_eq!(builtin[8], "crash: lastState Error logs run");

    // The runc pod's container is runc's, the other one is not.
    let id_of = |pod: &str| {
        api.kubectl(&[
            "get",
            "pod",
            pod,
            "-o",
            "jsonpath={.status.containerStatuses[0].containerID}",
        ])
        .trim_start_matches("kubelab://")
        .to_string()
    };
    let running = runc_running(&node);
    assert!(
        running.contains(&id_of("web-runc")),
        "runc list: {running:?}"
    );
    assert!(
        !running.contains(&id_of("web-builtin")),
        "runc list: {running:?}"
    );
    api.delete_all_pods();
    // runc's record of each container went with it.
    assert_eq!(runc_running(&node), Vec::<String>::new());
}

#[test]
fn runtime_class_admission_and_unknown_handlers_in_kubernetes_words() {
    let api = ApiServer::start();
    let node = api.join();
    let name = node.node_name.clone();
    let out = api.kubectl_with(
        &["apply", "-f", "-"],
        Some(&api_pod("lost", &name, "  runtimeClassName: nope\n  containers:\n  - name: main\n    image: busybox\n    command: [sleep, '3600']\n")),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Error from server (Forbidden): error when creating \"STDIN\": pods \"lost\" is forbidden: pod rejected: RuntimeClass \"nope\" not found"
    );
    api.apply(
        "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata:\n  name: kata\nhandler: kata\n",
    );
    api.apply(&api_pod(
        "kata",
        &name,
        "  runtimeClassName: kata\n  containers:\n  - name: main\n    image: busybox\n    command: [sleep, '3600']\n",
    ));
    let message = wait_for(
        &node,
        "FailedCreatePodSandBox",
        Duration::from_secs(40),
        || {
            let text = api.try_kubectl(&[
                "get",
                "events",
                "--field-selector",
                "reason=FailedCreatePodSandBox,involvedObject.name=kata",
                "-o",
                "jsonpath={.items[0].message}",
            ])?;
            (!text.is_empty()).then_some(text)
        },
    );
    assert_eq!(
        message,
        "Failed to create pod sandbox: no runtime for \"kata\" is configured"
    );

    // A class's overhead becomes the pod's; a pod may not bring another one.
    api.apply("apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata:\n  name: weighed\nhandler: runc\noverhead:\n  podFixed: {cpu: 100m, memory: 16Mi}\n");
    let body = |overhead: &str| {
        format!(
            "  runtimeClassName: weighed\n{overhead}  containers:\n  - name: main\n    image: busybox\n    command: [sleep, '3600']\n"
        )
    };
    api.apply(&api_pod("weighed", &name, &body("")));
    assert_eq!(
        api.kubectl(&["get", "pod", "weighed", "-o", "jsonpath={.spec.overhead}"]),
        r#"{"cpu":"100m","memory":"16Mi"}"#
    );
    let out = api.kubectl_with(
        &["apply", "-f", "-"],
        Some(&api_pod(
            "heavier",
            &name,
            &body("  overhead: {cpu: '1'}\n"),
        )),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Error from server (Forbidden): error when creating \"STDIN\": pods \"heavier\" is forbidden: pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead"
    );
    api.delete_all_pods();
}

#[test]
fn runc_containers_outlive_a_restart_of_the_agent() {
    let api = ApiServer::start();
    let mut node = api.join();
    let name = node.node_name.clone();
    api.apply(RUNC_CLASS);
    api.apply(&api_pod(
        "steady",
        &name,
        "  runtimeClassName: runc\n  containers:\n  - name: main\n    image: busybox\n    command: [sh, -c, 'echo up; exec sleep 3600']\n",
    ));
    let status = |field: &str| {
        api.kubectl(&[
            "get",
            "pod",
            "steady",
            "-o",
            &format!("jsonpath={{.status.containerStatuses[0].{field}}}"),
        ])
    };
    wait_for(&node, "steady running", Duration::from_secs(60), || {
        (!status("state.running.startedAt").is_empty()).then_some(())
    });
    let id = status("containerID");
    let started = status("state.running.startedAt");

    // The shim and the container stay while no agent runs; the next agent
    // adopts them under the same handler.
    node.kill_agent();
    let id_alone = id.trim_start_matches("kubelab://").to_string();
    assert!(runc_running(&node).contains(&id_alone));
    node.spawn_agent();
    assert_eq!(api.kubectl(&["logs", "steady"]).trim(), "up");
    wait_for(&node, "the pod seen again", Duration::from_secs(40), || {
        let pods = node.pods();
        pods.into_iter().find(|p| {
            p["metadata"]["name"] == "steady"
                && p["status"]["containerStatuses"][0]["containerID"] == id.as_str()
                && p["status"]["containerStatuses"][0]["state"]["running"].is_object()
        })
    });
    assert_eq!(status("containerID"), id);
    assert_eq!(status("state.running.startedAt"), started);
    assert_eq!(status("restartCount"), "0");
    api.delete_all_pods();
    assert_eq!(runc_running(&node), Vec::<String>::new());
}
