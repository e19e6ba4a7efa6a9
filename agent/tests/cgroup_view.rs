//! What a container sees of its own limits: its cgroup, read-only, at
//! `/sys/fs/cgroup`, and `/proc/self/cgroup` rooted there, as under
//! containerd, so the classic "read your limits from inside" exercise works.

mod common;

use std::path::Path;
use std::time::Duration;

use common::TestNode;

#[test]
fn a_container_reads_its_own_limits_read_only_at_sys_fs_cgroup() {
    let node = TestNode::start();
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    // The files a learner reads on each cgroup version.
    let (memory_file, cpu_file) = if unified {
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/cpu.max")
    } else {
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
        )
    };
    node.write_manifest(
        "limits.yaml",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: limits
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    resources:
      limits: {{cpu: 250m, memory: 48Mi}}
    command:
    - sh
    - -c
    - |
      echo "memory=$(cat {memory_file})"
      echo "cpu=$(cat {cpu_file})"
      echo "self=$(cut -d: -f3 /proc/self/cgroup | sort -u | tr '\n' ' ')"
      echo 1 > {memory_file} 2>/dev/null && echo write=ok || echo write=refused
      echo "entries=$(ls /sys/fs/cgroup | wc -l)"
      exec sleep 3600
"#
        ),
    );
    let name = format!("limits-{}", node.node_name);
    let logs = node.wait_for("the container's output", Duration::from_secs(30), |n| {
        n.get(&format!("/containerLogs/default/{name}/c"))
            .ok()
            .filter(|l| l.contains("entries="))
    });
    let value = |key: &str| {
        logs.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in:\n{logs}"))
            .trim()
            .to_string()
    };
    assert_eq!(value("memory"), (48u64 << 20).to_string(), "{logs}");
    if unified {
        assert_eq!(value("cpu"), "25000 100000", "{logs}");
    } else {
        assert_eq!(value("cpu"), "25000", "{logs}");
    }
    // Its own cgroup namespace: every hierarchy's path is its root.
    assert_eq!(value("self"), "/", "{logs}");
    assert_eq!(value("write"), "refused", "{logs}");
    assert!(
        value("entries").parse::<u32>().unwrap() > 0,
        "the view is not empty:\n{logs}"
    );
    node.remove_manifest("limits.yaml");
    node.wait_for("the pod gone", Duration::from_secs(30), |n| {
        n.pod("limits").is_none().then_some(())
    });
}
