//! How an OOM kill ends, and which cgroup v2 features a node has, as the
//! kubelet decides them per cgroup version: on v1 the kernel kills only the
//! process over the limit (a shell whose child died keeps running); on v2
//! the agent sets `memory.oom.group` and the whole container ends `OOMKilled`
//! (checked in the VM tests, vm-tests/). MemoryQoS and per-cgroup PSI need v2;
//! the node's `/proc/pressure` is there on either. Run as root.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestNode;
use serde_json::Value;

fn host_is_cgroup_v2() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// A shell that runs a `dd` needing 96M under a 32Mi limit, then sleeps.
const SHELL_WITH_HOG: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: shell
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: sh
    image: busybox
    command: ["sh", "-c", "dd if=/dev/zero of=/dev/null bs=96M count=1; echo dd ended $?; sleep 3600"]
    resources:
      limits:
        memory: 32Mi
"#;

/// The container's summary in `/stats/summary`.
fn container_summary(node: &TestNode, pod: &str) -> Option<Value> {
    let full = format!("{pod}-{}", node.node_name);
    let summary = node.get_json("/stats/summary");
    summary["pods"]
        .as_array()?
        .iter()
        .find(|p| p["podRef"]["name"] == full.as_str())?["containers"]
        .as_array()?
        .first()
        .cloned()
}

#[test]
fn an_oom_kill_takes_one_process_on_cgroup_v1_and_the_container_on_v2() {
    let node = TestNode::start();
    node.write_manifest("shell.yaml", SHELL_WITH_HOG);
    if host_is_cgroup_v2() {
        // memory.oom.group=1: the shell goes with dd.
        let status = node.wait_for("an OOMKilled run", Duration::from_secs(40), |n| {
            let c = n.container_status("shell", "sh")?;
            let t = &c["lastState"]["terminated"];
            t.is_object().then_some(c)
        });
        assert_eq!(
            status["lastState"]["terminated"]["reason"], "OOMKilled",
            "{status}"
        );
        return;
    }
    // v1: the kernel kills dd alone; the counter rises, the shell sleeps on.
    let c = node.wait_for(
        "an OOM kill counted in /stats/summary",
        Duration::from_secs(40),
        |n| {
            let c = container_summary(n, "shell")?;
            (c["memory"]["oomKills"].as_u64()? >= 1).then_some(c)
        },
    );
    // Give a group kill time to show, were there one.
    std::thread::sleep(Duration::from_secs(2));
    let status = node.container_status("shell", "sh").unwrap();
    assert!(status["state"]["running"].is_object(), "{status}");
    assert_eq!(status["restartCount"], 0, "{status}");
    assert!(status["lastState"]["terminated"].is_null(), "{status}");
    assert_eq!(node.pod("shell").unwrap()["status"]["phase"], "Running");
    let logs = node
        .get(&format!(
            "/containerLogs/default/shell-{}/sh",
            node.node_name
        ))
        .unwrap();
    assert!(logs.contains("dd ended 137"), "{logs}\n{c}");
}

#[test]
fn single_process_oom_kill_false_is_refused_on_cgroup_v1() {
    if host_is_cgroup_v2() {
        return; // v2 takes either value.
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nsingleProcessOOMKill: false\n",
    )
    .unwrap();
    let mut child = Command::new(common::agent_bin())
        .arg("--config")
        .arg(&config)
        .arg("--root-dir")
        .arg(dir.path().join("state"))
        .args([
            "--cgroup-root",
            &format!("kubelab-test-refused-{}", std::process::id()),
        ])
        .args([
            "--port",
            "0",
            "--read-only-port",
            "0",
            "--hostname-override",
            "refused",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the agent kept running with singleProcessOOMKill: false on cgroup v1");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains(
            "invalid configuration: singleProcessOOMKill must not be explicitly set to false when using cgroup v1"
        ),
        "{stderr}"
    );
}

#[test]
fn memory_qos_and_cgroup_pressure_are_not_available_on_cgroup_v1() {
    if host_is_cgroup_v2() {
        return; // The VM tests check v2.
    }
    let node = TestNode::start_with(&["--feature-gates", "MemoryQoS=true"]);
    node.write_manifest(
        "idle.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: idle\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    command: [sleep, '3600']\n    resources:\n      requests: {memory: 16Mi}\n      limits: {memory: 64Mi}\n",
    );
    node.wait_running("idle");
    assert!(
        node.agent_log()
            .contains("feature gate MemoryQoS: not available on cgroup v1"),
        "{}",
        common::tail(&node.agent_log(), 20)
    );
    let c = node.wait_for("container stats", Duration::from_secs(10), |n| {
        container_summary(n, "idle")
    });
    // The node's PSI comes from /proc/pressure where the kernel has it; a v1
    // cgroup has no pressure files, so pods and containers show none.
    let summary = node.get_json("/stats/summary");
    let node_cpu = &summary["node"]["cpu"];
    if std::path::Path::new("/proc/pressure/cpu").exists() {
        let some = &node_cpu["psi"]["some"];
        assert!(some["total"].as_u64().is_some(), "{node_cpu}");
        assert!(some["avg10"].as_f64().is_some(), "{node_cpu}");
        assert!(
            summary["node"]["io"]["psi"]["full"].is_object(),
            "{summary}"
        );
    }
    assert!(
        c["cpu"]["psi"].is_null() && c["memory"]["psi"].is_null(),
        "{c}"
    );
    assert!(c["io"].is_null(), "{c}");
    let metrics = node.get("/metrics").unwrap();
    assert!(!metrics.contains("container_pressure_"), "{metrics}");
}
