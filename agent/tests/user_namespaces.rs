//! Pods in their own user namespace (`hostUsers: false`): root inside is an
//! unprivileged range of the node's IDs, volumes reach it through idmapped
//! mounts, ranges never overlap and survive an agent restart, and `procMount`
//! follows upstream's rules. Run as root; each test owns a node.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use common::TestNode;
use serde_json::Value;

fn pod_yaml(name: &str, body: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n{body}")
}

fn logs_with(node: &TestNode, pod: &str, container: &str, marker: &str) -> String {
    let name = format!("{pod}-{}", node.node_name);
    node.wait_for(
        &format!("{pod}/{container} printing {marker}"),
        Duration::from_secs(60),
        |n| {
            n.get(&format!("/containerLogs/default/{name}/{container}"))
                .ok()
                .filter(|l| l.contains(marker))
        },
    )
}

/// `key=value` lines of a container's output.
fn field<'a>(logs: &'a str, key: &str) -> &'a str {
    logs.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in:\n{logs}"))
}

fn pod_dir(node: &TestNode, pod: &str) -> PathBuf {
    let uid = node.pod(pod).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    node.state_dir().join("pods").join(uid)
}

/// The first host ID of the pod's range, from its `userns` file.
fn range_start(node: &TestNode, pod: &str) -> u32 {
    let file = pod_dir(node, pod).join("userns");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["uidMappings"], v["gidMappings"], "{text}");
    assert_eq!(v["uidMappings"][0]["containerId"], 0, "{text}");
    assert_eq!(v["uidMappings"][0]["length"], 65536, "{text}");
    v["uidMappings"][0]["hostId"].as_u64().unwrap() as u32
}

/// The host PID of the pod's only container, from its shim's state.
fn container_pid(node: &TestNode, pod: &str) -> i32 {
    let containers = pod_dir(node, pod).join("containers");
    let pids: Vec<i32> = std::fs::read_dir(&containers)
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("state.json")).ok())
        .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
        .filter_map(|v| v["pid"].as_i64())
        .map(|p| p as i32)
        .collect();
    assert_eq!(pids.len(), 1, "{pids:?}");
    pids[0]
}

/// `Uid:`/`Gid:` of `/proc/<pid>/status`: real, effective, saved, fs.
fn status_ids(pid: i32, key: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

const PROBE: &str = r#"    command:
    - sh
    - -c
    - |
      echo "uid_map=$(tr -s ' ' < /proc/self/uid_map | sed 's/^ //')"
      echo "id=$(id -u) $(id -g)"
      touch /data/made && echo "made=$(stat -c '%u %g' /data/made)"
      echo "passwd=$(stat -c '%u %g' /etc/passwd)"
      touch /dev/shm/shm-made && echo "shm=$(stat -c '%u' /dev/shm/shm-made)"
      mknod /tmp/null2 c 1 3 2>/tmp/e && echo mknod=ok || echo "mknod=$(cat /tmp/e)"
      mkdir -p /mnt; mount -t tmpfs t /mnt 2>/tmp/e && echo mount=ok || echo "mount=$(cat /tmp/e)"
      renice -n -5 1 >/dev/null 2>/tmp/e && echo nice=ok || echo "nice=$(cat /tmp/e)"
      echo done=1
      exec sleep 3600
"#;

fn probe_pod(name: &str, host_users: bool) -> String {
    pod_yaml(
        name,
        &format!(
            r#"spec:
  terminationGracePeriodSeconds: 1
  hostUsers: {host_users}
  volumes:
  - name: data
    emptyDir: {{}}
  containers:
  - name: c
    image: busybox
    securityContext:
      capabilities:
        add: ["SYS_ADMIN", "SYS_NICE", "MKNOD"]
    volumeMounts:
    - name: data
      mountPath: /data
{PROBE}"#
        ),
    )
}

/// Root in a `hostUsers: false` pod is root of its own range only: the
/// container's process is a non-zero host ID on the node, it sees its
/// mapping in `/proc/self/uid_map`, capabilities that need the node's root
/// (mknod of a device, mount, raising priority) fail although granted, while
/// the same container with the node's users can do all three. Its emptyDir
/// and rootfs are idmapped (0 inside is 0 on disk, as the kubelet's
/// idmapped volumes are), while a tmpfs it writes shows the mapped host ID.
#[test]
fn root_in_a_pod_user_namespace_is_an_unprivileged_range_of_the_node() {
    let mut node = TestNode::start();
    node.write_manifest("userns.yaml", &probe_pod("userns", false));
    node.write_manifest("hostusers.yaml", &probe_pod("hostusers", true));

    let logs = logs_with(&node, "userns", "c", "done=1");
    let start = range_start(&node, "userns");
    assert!(start >= 65536 && start.is_multiple_of(65536), "{start}");
    assert_eq!(
        field(&logs, "uid_map"),
        format!("0 {start} 65536"),
        "{logs}"
    );
    assert_eq!(field(&logs, "id"), "0 0", "{logs}");
    assert_eq!(field(&logs, "made"), "0 0", "{logs}");
    assert_eq!(field(&logs, "passwd"), "0 0", "{logs}");
    assert_eq!(field(&logs, "shm"), "0", "{logs}");
    assert!(
        field(&logs, "mknod").contains("Operation not permitted"),
        "{logs}"
    );
    assert_ne!(field(&logs, "mount"), "ok", "{logs}");
    assert_ne!(field(&logs, "nice"), "ok", "{logs}");

    // On the node: the process, and what it wrote.
    let pid = container_pid(&node, "userns");
    assert_eq!(status_ids(pid, "Uid:"), [start; 4]);
    assert_eq!(status_ids(pid, "Gid:"), [start; 4]);
    let made = pod_dir(&node, "userns").join("volumes/kubernetes.io~empty-dir/data/made");
    let meta = std::fs::metadata(&made).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "idmapped emptyDir");
    let shm = std::fs::metadata(format!("/proc/{pid}/root/dev/shm/shm-made")).unwrap();
    assert_eq!((shm.uid(), shm.gid()), (start, start), "the pod's tmpfs");

    // The control: the node's users, same capabilities.
    let control = logs_with(&node, "hostusers", "c", "done=1");
    assert_eq!(field(&control, "uid_map"), "0 0 4294967295", "{control}");
    assert_eq!(field(&control, "mknod"), "ok", "{control}");
    assert_eq!(field(&control, "mount"), "ok", "{control}");
    assert_eq!(field(&control, "nice"), "ok", "{control}");
    assert!(!pod_dir(&node, "hostusers").join("userns").exists());
    assert_eq!(
        status_ids(container_pid(&node, "hostusers"), "Uid:"),
        [0; 4]
    );

    // A second pod gets a range of its own.
    node.write_manifest("userns2.yaml", &probe_pod("userns2", false));
    logs_with(&node, "userns2", "c", "done=1");
    let second = range_start(&node, "userns2");
    assert_ne!(second, start);

    // kill -9 and a new agent: the pods keep their ranges and a new pod
    // gets neither.
    node.kill_agent();
    node.spawn_agent();
    node.write_manifest("userns3.yaml", &probe_pod("userns3", false));
    let third_logs = logs_with(&node, "userns3", "c", "done=1");
    let third = range_start(&node, "userns3");
    assert!(
        third != start && third != second,
        "{start} {second} {third}"
    );
    assert_eq!(field(&third_logs, "uid_map"), format!("0 {third} 65536"));
    assert_eq!(range_start(&node, "userns"), start);
    assert_eq!(
        status_ids(container_pid(&node, "userns"), "Uid:"),
        [start; 4]
    );
}

/// The node's namespaces and `hostUsers: false` do not mix: the manifest is
/// refused with kube-apiserver's words, and nothing of it runs.
#[test]
fn host_namespaces_with_a_pod_user_namespace_are_refused() {
    let node = TestNode::start();
    node.write_manifest(
        "hostns.yaml",
        &pod_yaml(
            "hostns",
            r#"spec:
  hostUsers: false
  hostNetwork: true
  hostPID: true
  containers:
  - name: c
    image: busybox
    command: ["sleep", "3600"]
"#,
        ),
    );
    node.write_manifest(
        "good.yaml",
        &pod_yaml(
            "good",
            "spec:\n  terminationGracePeriodSeconds: 1\n  hostUsers: false\n  containers:\n  - name: c\n    image: busybox\n    command: [\"sleep\", \"3600\"]\n",
        ),
    );
    node.wait_running("good");
    let log = node.wait_for("the manifest error", Duration::from_secs(10), |n| {
        let log = n.agent_log();
        log.contains("hostns.yaml").then_some(log)
    });
    for want in [
        "spec.hostNetwork: Forbidden: when `hostUsers` is false",
        "spec.HostPID: Forbidden: when `hostUsers` is false",
    ] {
        assert!(log.contains(want), "{want}\n{}", common::tail(&log, 20));
    }
    assert_eq!(node.pods().len(), 1, "the refused pod is not run");
}

/// `procMount`: `Default` masks and write-protects /proc as runc does;
/// `Unmasked` leaves /proc whole, and only in a pod user namespace, as
/// kube-apiserver requires: with the node's users it is refused.
#[test]
fn proc_mount_unmasked_only_with_a_pod_user_namespace() {
    let node = TestNode::start();
    let script = r#"    command:
    - sh
    - -c
    - |
      echo "proc-mounts=$(awk '$5 ~ "^/proc/" {print $5}' /proc/self/mountinfo | sort | tr '\n' ' ')"
      echo "keys=$(wc -c < /proc/keys)"
      exec sleep 3600
"#;
    node.write_manifest(
        "procmount.yaml",
        &pod_yaml(
            "procmount",
            &format!(
                r#"spec:
  terminationGracePeriodSeconds: 1
  hostUsers: false
  containers:
  - name: default
    image: busybox
{script}  - name: unmasked
    image: busybox
    securityContext:
      procMount: Unmasked
{script}"#
            ),
        ),
    );
    node.write_manifest(
        "hostprocmount.yaml",
        &pod_yaml(
            "hostprocmount",
            r#"spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sleep", "3600"]
    securityContext:
      procMount: Unmasked
"#,
        ),
    );
    let masked = logs_with(&node, "procmount", "default", "keys=");
    // runc's masked and read-only /proc paths, those this kernel has.
    let mut want: Vec<&str> = [
        "/proc/acpi",
        "/proc/asound",
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/proc/sys",
        "/proc/sysrq-trigger",
        "/proc/timer_list",
        "/proc/timer_stats",
    ]
    .into_iter()
    .filter(|p| std::path::Path::new(p).exists())
    .collect();
    want.sort();
    assert!(want.contains(&"/proc/sys") && want.contains(&"/proc/keys"));
    let mounts: Vec<&str> = field(&masked, "proc-mounts").split_whitespace().collect();
    assert_eq!(mounts, want, "{masked}");
    assert_eq!(field(&masked, "keys"), "0", "{masked}");
    let unmasked = logs_with(&node, "procmount", "unmasked", "keys=");
    assert_eq!(field(&unmasked, "proc-mounts"), "", "{unmasked}");

    let waiting = node.wait_for("hostprocmount/c refused", Duration::from_secs(30), |n| {
        let c = n.container_status("hostprocmount", "c")?;
        (c["state"]["waiting"]["reason"] == "CreateContainerConfigError")
            .then(|| c["state"]["waiting"].clone())
    });
    assert_eq!(
        waiting["message"],
        "container \"c\": securityContext.procMount: Invalid value: \"Unmasked\": `hostUsers` must be false to use `Unmasked`"
    );
}
