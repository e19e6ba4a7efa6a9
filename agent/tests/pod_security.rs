//! What a pod spec can do to the node: each attack here must fail, and the
//! node's files and mounts must be as they were. Run as root; each test owns
//! a node (temp dirs, a cgroup subtree) removed even if the test fails.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::TestNode;
use serde_json::Value;

fn pod_yaml(name: &str, body: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n{body}")
}

/// A node directory holding one file, to check nothing reached it.
fn victim_dir(node: &TestNode) -> std::path::PathBuf {
    let dir = node.root.path().join("victim");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(dir.join("secret"), "node secret\n").unwrap();
    dir
}

fn assert_untouched(dir: &Path) {
    let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "{} changed mode", dir.display());
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["secret"], "files appeared in {}", dir.display());
    assert_eq!(
        std::fs::read_to_string(dir.join("secret")).unwrap(),
        "node secret\n"
    );
    let target = dir.to_string_lossy().to_string();
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&target)));
    assert!(!mounted, "something is mounted on {target}");
}

/// The container's waiting state once it has one with `reason`.
fn wait_waiting(node: &TestNode, pod: &str, container: &str, reason: &str) -> Value {
    node.wait_for(
        &format!("{pod}/{container} waiting with {reason}"),
        Duration::from_secs(30),
        |n| {
            let c = n.container_status(pod, container)?;
            (c["state"]["waiting"]["reason"] == reason).then(|| c["state"]["waiting"].clone())
        },
    )
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

/// CVE-2017-1002101: an init container turns the subPath into a link to the
/// node's directory; the app container must not get it.
#[test]
fn a_sub_path_made_a_symlink_by_an_init_container_does_not_reach_the_node() {
    let node = TestNode::start();
    let victim = victim_dir(&node);
    node.write_manifest(
        "subpath.yaml",
        &pod_yaml(
            "subpath",
            &format!(
                r#"spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: shared
    emptyDir: {{}}
  initContainers:
  - name: plant
    image: busybox
    command: ["sh", "-c", "ln -s {victim} /shared/escape && ln -s / /shared/root && mkdir /shared/ok && echo inside > /shared/ok/f"]
    volumeMounts:
    - name: shared
      mountPath: /shared
  containers:
  - name: escape
    image: busybox
    command: ["sh", "-c", "ls /mnt; cat /mnt/secret; echo hacked > /mnt/pwned; exec sleep 3600"]
    volumeMounts:
    - name: shared
      mountPath: /mnt
      subPath: escape
  - name: root
    image: busybox
    command: ["sh", "-c", "ls /mnt; exec sleep 3600"]
    volumeMounts:
    - name: shared
      mountPath: /mnt
      subPath: root
  - name: fine
    image: busybox
    command: ["sh", "-c", "cat /mnt/f; exec sleep 3600"]
    volumeMounts:
    - name: shared
      mountPath: /mnt
      subPath: ok
"#,
                victim = victim.display()
            ),
        ),
    );
    for container in ["escape", "root"] {
        let waiting = wait_waiting(&node, "subpath", container, "CreateContainerConfigError");
        let message = waiting["message"].as_str().unwrap();
        assert!(
            message.contains("not within volume path"),
            "{container}: {message}"
        );
    }
    let name = format!("subpath-{}", node.node_name);
    let logs = node.wait_for(
        "the fine container's output",
        Duration::from_secs(20),
        |n| {
            n.get(&format!("/containerLogs/default/{name}/fine"))
                .ok()
                .filter(|l| !l.is_empty())
        },
    );
    assert_eq!(logs, "inside\n", "a subPath inside the volume works");
    assert_untouched(&victim);
    node.remove_manifest("subpath.yaml");
    node.wait_for("pod gone", Duration::from_secs(20), |n| {
        n.pods().is_empty().then_some(())
    });
    assert!(
        node.mounts_below_root().is_empty(),
        "{:?}",
        node.mounts_below_root()
    );
    assert_untouched(&victim);
}

/// A volume named like a path would be a directory outside the pod's:
/// refused before anything is made (emptyDir would chmod it 0777, a Memory
/// emptyDir would leave a tmpfs over it).
#[test]
fn a_volume_named_like_a_path_is_refused() {
    let node = TestNode::start();
    // pods/<uid>/volumes/kubernetes.io~empty-dir/../../../../victim is <state>/victim.
    let victim = node.state_dir().join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(victim.join("secret"), "node secret\n").unwrap();
    node.write_manifest(
        "badvol.yaml",
        &pod_yaml(
            "badvol",
            r#"spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: ../../../../victim
    emptyDir:
      medium: Memory
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "echo x > /v/pwned; exec sleep 3600"]
    volumeMounts:
    - name: ../../../../victim
      mountPath: /v
"#,
        ),
    );
    node.write_manifest(
        "good.yaml",
        &pod_yaml(
            "good",
            "spec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n    command: [\"sleep\", \"3600\"]\n",
        ),
    );
    node.wait_running("good");
    let log = node.wait_for("the manifest error", Duration::from_secs(10), |n| {
        let log = n.agent_log();
        log.contains("badvol.yaml").then_some(log)
    });
    assert!(
        log.contains(r#"spec.volumes[0].name: Invalid value: "../../../../victim": a lowercase RFC 1123 label must consist of"#),
        "{}",
        common::tail(&log, 20)
    );
    assert_eq!(node.pods().len(), 1, "the bad pod is not run");
    assert_untouched(&victim);
}

/// Mount paths through links: a 41-hop chain, and a mount target that an
/// init container made a symlink to a node directory.
#[test]
fn mount_paths_through_symlinks_create_nothing_on_the_node() {
    let node = TestNode::start();
    let victim = victim_dir(&node);
    let chain = format!(
        "i=0; while [ $i -lt 41 ]; do ln -s /data/l$((i+1)) /data/l$i; i=$((i+1)); done; ln -s {v} /data/l41; ln -s {v} /data/link",
        v = victim.display()
    );
    node.write_manifest(
        "links.yaml",
        &pod_yaml(
            "links",
            &format!(
                r#"spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  volumes:
  - name: data
    emptyDir: {{}}
  - name: other
    emptyDir: {{}}
  initContainers:
  - name: plant
    image: busybox
    command: ["sh", "-c", "{chain}"]
    volumeMounts:
    - name: data
      mountPath: /data
  containers:
  - name: chain
    image: busybox
    command: ["sh", "-c", "touch /data/l0/x/pwned; sleep 3600"]
    volumeMounts:
    - name: data
      mountPath: /data
    - name: other
      mountPath: /data/l0/x
  - name: link
    image: busybox
    command: ["sh", "-c", "touch /data/link/pwned; sleep 3600"]
    volumeMounts:
    - name: data
      mountPath: /data
    - name: other
      mountPath: /data/link
"#
            ),
        ),
    );
    let status = |container: &str| {
        node.wait_for(
            &format!("{container} refused"),
            Duration::from_secs(30),
            |n| {
                let c = n.container_status("links", container)?;
                let t = &c["state"]["terminated"];
                t.is_object().then(|| t.clone())
            },
        )
    };
    let chain = status("chain");
    assert_eq!(chain["reason"], "StartError", "{chain}");
    assert!(
        chain["message"]
            .as_str()
            .unwrap()
            .contains("too many levels of symbolic links"),
        "{chain}"
    );
    let link = status("link");
    assert_eq!(link["reason"], "StartError", "{link}");
    assert!(
        link["message"].as_str().unwrap().contains("is a symlink"),
        "{link}"
    );
    assert_untouched(&victim);
    node.remove_manifest("links.yaml");
    node.wait_for("pod gone", Duration::from_secs(20), |n| {
        n.pods().is_empty().then_some(())
    });
    assert!(
        node.mounts_below_root().is_empty(),
        "{:?}",
        node.mounts_below_root()
    );
    assert_untouched(&victim);
}

/// Seccomp: `--seccomp-default` puts RuntimeDefault (containerd's profile)
/// on containers that name none; `Unconfined` and `Localhost` as asked.
#[test]
fn seccomp_profiles_confine_containers() {
    let node = TestNode::start_with(&["--seccomp-default"]);
    let profiles = node.state_dir().join("seccomp/profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(
        profiles.join("no-mkdir.json"),
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let probe = r#"grep Seccomp: /proc/self/status; unshare -U true && echo unshare=ok || echo unshare=refused; mkdir /tmp/d && echo mkdir=ok || echo mkdir=refused; echo done; exec sleep 3600"#;
    node.write_manifest(
        "seccomp.yaml",
        &pod_yaml(
            "seccomp",
            &format!(
                r#"spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: default
    image: busybox
    command: ["sh", "-c", '{probe}']
  - name: unconfined
    image: busybox
    command: ["sh", "-c", '{probe}']
    securityContext:
      seccompProfile:
        type: Unconfined
  - name: localhost
    image: busybox
    command: ["sh", "-c", '{probe}']
    securityContext:
      seccompProfile:
        type: Localhost
        localhostProfile: profiles/no-mkdir.json
  - name: no-new-privs
    image: busybox
    command: ["sh", "-c", '{probe}']
    securityContext:
      allowPrivilegeEscalation: false
      seccompProfile:
        type: RuntimeDefault
  - name: missing
    image: busybox
    command: ["sh", "-c", '{probe}']
    securityContext:
      seccompProfile:
        type: Localhost
        localhostProfile: ../../../etc/passwd
"#
            ),
        ),
    );
    let name = format!("seccomp-{}", node.node_name);
    let logs = |container: &str| {
        node.wait_for(
            &format!("{container}'s output"),
            Duration::from_secs(30),
            |n| {
                n.get(&format!("/containerLogs/default/{name}/{container}"))
                    .ok()
                    .filter(|l| l.contains("done"))
            },
        )
    };
    let default = logs("default");
    assert!(default.contains("Seccomp:\t2"), "{default}");
    assert!(default.contains("unshare=refused"), "{default}");
    assert!(default.contains("mkdir=ok"), "{default}");
    let unconfined = logs("unconfined");
    assert!(unconfined.contains("Seccomp:\t0"), "{unconfined}");
    assert!(unconfined.contains("unshare=ok"), "{unconfined}");
    let localhost = logs("localhost");
    assert!(localhost.contains("Seccomp:\t2"), "{localhost}");
    assert!(localhost.contains("unshare=ok"), "{localhost}");
    assert!(localhost.contains("mkdir=refused"), "{localhost}");
    let nnp = logs("no-new-privs");
    assert!(nnp.contains("Seccomp:\t2"), "{nnp}");
    assert!(nnp.contains("unshare=refused"), "{nnp}");
    let missing = wait_waiting(&node, "seccomp", "missing", "CreateContainerError");
    let message = missing["message"].as_str().unwrap();
    assert!(
        message.contains("cannot load seccomp profile") && message.contains("leads out of"),
        "{message}"
    );
}

/// `runAsNonRoot` refuses a container that would run as root: the busybox
/// image runs as root (no USER), and `USER`-less images are the common case.
#[test]
fn run_as_non_root_refuses_a_root_container() {
    let node = TestNode::start();
    node.write_manifest(
        "nonroot.yaml",
        &pod_yaml(
            "nonroot",
            r#"spec:
  terminationGracePeriodSeconds: 1
  securityContext:
    runAsNonRoot: true
  containers:
  - name: image-root
    image: busybox
    command: ["sleep", "3600"]
  - name: explicit-root
    image: busybox
    command: ["sleep", "3600"]
    securityContext:
      runAsUser: 0
  - name: nobody
    image: busybox
    command: ["sleep", "3600"]
    securityContext:
      runAsUser: 65534
"#,
        ),
    );
    let pod = node.wait_for("the pod's uid", Duration::from_secs(20), |n| {
        n.pod("nonroot")
    });
    let who = format!(
        "nonroot-{}_default({})",
        node.node_name,
        pod["metadata"]["uid"].as_str().unwrap()
    );
    let waiting = wait_waiting(&node, "nonroot", "image-root", "CreateContainerConfigError");
    assert_eq!(
        waiting["message"],
        format!(
            "container has runAsNonRoot and image will run as root (pod: {who:?}, container: image-root)"
        )
    );
    let waiting = wait_waiting(
        &node,
        "nonroot",
        "explicit-root",
        "CreateContainerConfigError",
    );
    assert_eq!(
        waiting["message"],
        format!(
            "container's runAsUser breaks non-root policy (pod: {who:?}, container: explicit-root)"
        )
    );
    node.wait_for("nobody running", Duration::from_secs(20), |n| {
        let c = n.container_status("nonroot", "nobody")?;
        c["state"]["running"].is_object().then_some(())
    });
    let failed = events_for(&node, "nonroot");
    assert!(
        failed.iter().any(|e| e["reason"] == "Failed"
            && e["type"] == "Warning"
            && e["message"]
                .as_str()
                .is_some_and(|m| m
                    .starts_with("Error: container has runAsNonRoot and image will run as root"))),
        "{failed:?}"
    );
}

/// Sysctls: safe ones and those `--allowed-unsafe-sysctls` names are set in
/// the pod's namespaces (the node's values stay); others reject the pod.
#[test]
fn pod_sysctls_are_set_in_the_pod_or_the_pod_is_rejected() {
    let node = TestNode::start_with(&["--allowed-unsafe-sysctls", "kernel.msg*"]);
    let host_port_start =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    let host_msgmax = std::fs::read_to_string("/proc/sys/kernel/msgmax").unwrap();
    node.write_manifest(
        "sysctls.yaml",
        &pod_yaml(
            "sysctls",
            r#"spec:
  terminationGracePeriodSeconds: 1
  securityContext:
    sysctls:
    - name: net.ipv4.ip_unprivileged_port_start
      value: "80"
    - name: kernel.shm_rmid_forced
      value: "1"
    - name: kernel.msgmax
      value: "12345"
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "echo port=$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start) shm=$(cat /proc/sys/kernel/shm_rmid_forced) msgmax=$(cat /proc/sys/kernel/msgmax); exec sleep 3600"]
"#,
        ),
    );
    node.write_manifest(
        "forbidden.yaml",
        &pod_yaml(
            "forbidden",
            r#"spec:
  terminationGracePeriodSeconds: 1
  securityContext:
    sysctls:
    - name: net.core.somaxconn
      value: "1024"
  containers:
  - name: c
    image: busybox
    command: ["sleep", "3600"]
"#,
        ),
    );
    let name = format!("sysctls-{}", node.node_name);
    let logs = node.wait_for("the container's output", Duration::from_secs(30), |n| {
        n.get(&format!("/containerLogs/default/{name}/c"))
            .ok()
            .filter(|l| !l.is_empty())
    });
    assert_eq!(logs, "port=80 shm=1 msgmax=12345\n");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap(),
        host_port_start
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/msgmax").unwrap(),
        host_msgmax
    );

    let rejected = node.wait_for("forbidden pod Failed", Duration::from_secs(20), |n| {
        let p = n.pod("forbidden")?;
        (p["status"]["phase"] == "Failed").then_some(p)
    });
    assert_eq!(rejected["status"]["reason"], "SysctlForbidden");
    assert_eq!(
        rejected["status"]["message"],
        "Pod was rejected: forbidden sysctl: \"net.core.somaxconn\" not allowlisted"
    );
    let events = events_for(&node, "forbidden");
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "SysctlForbidden" && e["type"] == "Warning"),
        "{events:?}"
    );
}

/// A container's /dev is `nodev`: the runtime's nodes (bind mounts of the
/// node's) open, a node the container makes there with CAP_MKNOD does not,
/// even for a device the device cgroup allows.
#[test]
fn dev_is_nodev_apart_from_the_runtime_devices() {
    let node = TestNode::start();
    node.write_manifest(
        "devnodes.yaml",
        &pod_yaml(
            "devnodes",
            r#"spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command:
    - sh
    - -c
    - |
      awk '$5 == "/dev" { print "dev-options=" $6 }' /proc/self/mountinfo
      mknod /dev/null2 c 1 3 && echo mknod=ok
      for f in /dev/null /dev/zero /dev/null2; do (exec 3<$f) 2>/tmp/err && echo "$f=open" || echo "$f=denied $(cat /tmp/err)"; done
      exec sleep 3600
"#,
        ),
    );
    let name = format!("devnodes-{}", node.node_name);
    let logs = node.wait_for("the container's output", Duration::from_secs(30), |n| {
        n.get(&format!("/containerLogs/default/{name}/c"))
            .ok()
            .filter(|l| l.contains("/dev/null2="))
    });
    let lines: Vec<&str> = logs.lines().collect();
    let options = lines[0].strip_prefix("dev-options=").unwrap();
    assert!(
        options.split(',').any(|o| o == "nodev") && options.split(',').any(|o| o == "nosuid"),
        "{logs}"
    );
    assert_eq!(
        lines[1..4],
        ["mknod=ok", "/dev/null=open", "/dev/zero=open"]
    );
    assert!(
        lines[4].starts_with("/dev/null2=denied") && lines[4].ends_with("Permission denied"),
        "{logs}"
    );
}

/// `fsGroup` owns the pod's volumes, as the kubelet's SetVolumeOwnership
/// does: a non-root user reads a downwardAPI file of mode 0400 through the
/// group, files made in an emptyDir get the group, and the process has the
/// fsGroup and `supplementalGroups` as its groups.
#[test]
fn fs_group_owns_volumes_and_supplemental_groups_are_set() {
    use std::os::unix::fs::MetadataExt;
    let node = TestNode::start();
    node.write_manifest(
        "fsgroup.yaml",
        &pod_yaml(
            "fsgroup",
            r#"  labels:
    app: owned
spec:
  terminationGracePeriodSeconds: 1
  securityContext:
    runAsUser: 1000
    runAsGroup: 3000
    fsGroup: 2000
    supplementalGroups: [4000]
  volumes:
  - name: data
    emptyDir: {}
  - name: info
    downwardAPI:
      defaultMode: 256 # 0400
      items:
      - path: labels
        fieldRef:
          fieldPath: metadata.labels
  containers:
  - name: c
    image: busybox
    volumeMounts:
    - name: data
      mountPath: /data
    - name: info
      mountPath: /info
    command:
    - sh
    - -c
    - |
      echo "ids=$(id -u) $(id -g) groups=$(id -G)"
      echo "data=$(stat -c '%g %a' /data)"
      touch /data/made && echo "made=$(stat -c '%u %g' /data/made)"
      echo "labels=$(stat -L -c '%g %a' /info/labels) $(cat /info/labels)"
      exec sleep 3600
"#,
        ),
    );
    let name = format!("fsgroup-{}", node.node_name);
    let logs = node.wait_for("the container's output", Duration::from_secs(30), |n| {
        n.get(&format!("/containerLogs/default/{name}/c"))
            .ok()
            .filter(|l| l.contains("labels="))
    });
    let lines: Vec<&str> = logs.lines().collect();
    let mut groups: Vec<&str> = lines[0]
        .strip_prefix("ids=1000 3000 groups=")
        .unwrap_or_else(|| panic!("{logs}"))
        .split(' ')
        .collect();
    groups.sort();
    assert_eq!(groups, ["2000", "3000", "4000"], "{logs}");
    assert_eq!(lines[1], "data=2000 2777", "{logs}");
    assert_eq!(lines[2], "made=1000 2000", "{logs}");
    assert_eq!(lines[3], "labels=2000 440 app=\"owned\"", "{logs}");

    // On the node too.
    let pod = node.pod("fsgroup").unwrap();
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let volume = node
        .state_dir()
        .join(format!("pods/{uid}/volumes/kubernetes.io~empty-dir/data"));
    let meta = std::fs::metadata(&volume).unwrap_or_else(|e| panic!("{}: {e}", volume.display()));
    assert_eq!((meta.gid(), meta.mode() & 0o7777), (2000, 0o2777));
}

/// `recursiveReadOnly: Enabled` makes what is mounted below a read-only
/// volume read-only too (a plain `readOnly` leaves a submount writable);
/// a mode the kubelet refuses stops the container with a clear error.
#[test]
fn recursive_read_only_mounts_and_refused_modes() {
    let node = TestNode::start();
    let shared = node.root.path().join("shared");
    std::fs::create_dir_all(shared.join("sub")).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &shared.join("sub"),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _unmount = Unmount(shared.join("sub"));
    node.write_manifest(
        "rro.yaml",
        &pod_yaml(
            "rro",
            &format!(
                r#"spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: shared
    hostPath:
      path: {}
  containers:
  - name: c
    image: busybox
    volumeMounts:
    - name: shared
      mountPath: /rro
      readOnly: true
      recursiveReadOnly: Enabled
    - name: shared
      mountPath: /ro
      readOnly: true
    command:
    - sh
    - -c
    - |
      for f in /rro/top /rro/sub/x /ro/top /ro/sub/x; do touch $f 2>/dev/null && echo "$f=written" || echo "$f=refused"; done
      exec sleep 3600
  - name: not-read-only
    image: busybox
    command: ["sleep", "3600"]
    volumeMounts:
    - name: shared
      mountPath: /rro
      recursiveReadOnly: Enabled
"#,
                shared.display()
            ),
        ),
    );
    let name = format!("rro-{}", node.node_name);
    let logs = node.wait_for("the container's output", Duration::from_secs(30), |n| {
        n.get(&format!("/containerLogs/default/{name}/c"))
            .ok()
            .filter(|l| l.contains("/ro/sub/x="))
    });
    assert_eq!(
        logs,
        "/rro/top=refused\n/rro/sub/x=refused\n/ro/top=refused\n/ro/sub/x=written\n"
    );
    let waiting = wait_waiting(&node, "rro", "not-read-only", "CreateContainerConfigError");
    assert_eq!(
        waiting["message"],
        "container \"not-read-only\": volume mount \"shared\": recursiveReadOnly: may only be specified when readOnly is true"
    );
}
