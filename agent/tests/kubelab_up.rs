//! `scripts/kubelab up` as a learner runs it, in a network namespace of the
//! test's own with every directory moved to a fresh temp dir: a whole
//! one-node cluster answers kubectl (node Ready, `kubectl run` Running, a
//! static pod's events in `describe`), and `down` leaves no pod, process,
//! cgroup or veth behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::node_net::Netns;

struct Lab {
    netns: Netns,
    dir: tempfile::TempDir,
    cgroup_root: String,
}

impl Lab {
    fn new() -> Lab {
        let netns = Netns::new();
        // The node's address and default route: a veth pair inside the
        // namespace (this kernel has no dummy links).
        for cmd in [
            "ip link add kl-node type veth peer name kl-peer",
            "ip addr add 10.251.0.2/24 dev kl-node",
            "ip link set kl-node up",
            "ip link set kl-peer up",
            "ip route add default dev kl-node",
        ] {
            let args: Vec<&str> = cmd.split(' ').collect();
            let (ok, out) = netns.exec(&args);
            assert!(ok, "{cmd}: {out}");
        }
        let dir = tempfile::Builder::new()
            .prefix("kubelab-up-")
            .tempdir()
            .unwrap();
        Lab {
            netns,
            dir,
            cgroup_root: format!("kubelab-up-test-{}", std::process::id()),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn script(&self, verb: &str) -> Output {
        let bin_dir = common::agent_bin().parent().unwrap().to_path_buf();
        Command::new("bash")
            .arg(common::repo_root().join("scripts/kubelab"))
            .arg(verb)
            .env("HOME", self.path("home"))
            .env("KUBELAB_BIN_DIR", &bin_dir)
            .env("KUBELAB_PREFIX", self.path("bin"))
            .env("KUBELAB_CNI_BIN_DIR", self.path("cni-bin"))
            .env("KUBELAB_CNI_CONF_DIR", self.path("cni-conf"))
            .env("KUBELAB_ETC", self.path("etc"))
            .env("KUBELAB_STATE", self.path("state"))
            .env("KUBELAB_APISERVER_DATA", self.path("apiserver"))
            .env("KUBELAB_CGROUP_ROOT", &self.cgroup_root)
            .env("KUBELAB_NETNS", &self.netns.name)
            .env("KUBELAB_IMAGE", common::test_image())
            // The test machine's disk may be fuller than kubelet's 10%.
            .env("KUBELAB_AGENT_ARGS", "--eviction-hard=nodefs.available<1%")
            .output()
            .expect("run scripts/kubelab")
    }

    fn kubectl(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns.name))
            .arg("kubectl")
            .arg("--kubeconfig")
            .arg(self.path("etc/admin.kubeconfig"))
            .arg("--request-timeout=10s")
            .args(args)
            .env("HOME", self.path("home"))
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn wait_for<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "{what} within 120 s\n-- agent log --\n{}\n-- apiserver log --\n{}",
                    tail(&self.path("state/agent.log")),
                    tail(&self.path("apiserver/apiserver.log"))
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Processes whose command line names this lab's directories.
    fn processes(&self) -> Vec<String> {
        let marker = self.dir.path().to_string_lossy().into_owned();
        let mut found = vec![];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(&marker) && pid != std::process::id() {
                found.push(format!("{pid}: {cmd}"));
            }
        }
        found
    }

    /// Pod cgroups left under this lab's cgroup root, in every hierarchy.
    fn pod_cgroups(&self) -> Vec<PathBuf> {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let mut left = vec![];
        for line in own.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) =
                (parts.next(), parts.next().unwrap(), parts.next().unwrap());
            let mount = if controllers.is_empty() {
                "/sys/fs/cgroup/unified".to_string()
            } else {
                format!("/sys/fs/cgroup/{}", controllers.split(',').next().unwrap())
            };
            let root = Path::new(&mount)
                .join(path.trim_start_matches('/'))
                .join(&self.cgroup_root);
            collect_pod_dirs(&root, &mut left);
        }
        left
    }
}

fn collect_pod_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            if e.file_name().to_string_lossy().starts_with("pod") {
                out.push(e.path());
            }
            collect_pod_dirs(&e.path(), out);
        }
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Whatever happened, the lab goes: `down` stops the pods and both
        // components; anything still holding the directories is killed.
        let _ = self.script("down");
        for pidfile in ["state/agent.pid", "apiserver/apiserver.pid"] {
            if let Ok(pid) = std::fs::read_to_string(self.path(pidfile))
                && let Ok(pid) = pid.trim().parse::<i32>()
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

#[test]
fn kubelab_up_brings_a_one_node_cluster_and_down_leaves_nothing() {
    let lab = Lab::new();
    let up = lab.script("up");
    let stdout = String::from_utf8_lossy(&up.stdout);
    assert!(
        up.status.success(),
        "kubelab up failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let node = lab.kubectl(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    let node = node.expect("kubectl get nodes");
    let ready = lab
        .kubectl(&[
            "get",
            "node",
            &node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ])
        .unwrap_or_default();
    assert_eq!(ready, "True", "{stdout}");
    // The admin kubeconfig is also where kubectl looks by default.
    assert!(lab.path("home/.kube/config").exists());
    // Binaries and plugins were installed where the script was told.
    for f in [
        "bin/kubelab-agent",
        "bin/kubelab-apiserver",
        "cni-bin/kubelab-bridge",
    ] {
        assert!(lab.path(f).exists(), "{f} not installed");
    }

    // A learner's first command: scheduled, started, Running with an IP.
    lab.kubectl(&[
        "run",
        "first",
        "--image=busybox",
        "--",
        "httpd",
        "-f",
        "-p",
        "8080",
    ])
    .expect("kubectl run");
    let ip = lab.wait_for("kubectl run's pod Running with an IP", || {
        let out = lab.kubectl(&[
            "get",
            "pod",
            "first",
            "-o",
            "jsonpath={.status.phase} {.status.podIP}",
        ])?;
        let (phase, ip) = out.split_once(' ')?;
        (phase == "Running" && !ip.is_empty()).then(|| ip.to_string())
    });
    assert!(
        ip.starts_with("10.244."),
        "a pod IP from the node's podCIDR: {ip}"
    );

    // The web example is a static pod: its events show under its mirror.
    let describe = lab.wait_for("the web static pod's events in describe", || {
        let d = lab.kubectl(&["describe", "pod", &format!("web-{node}")])?;
        (d.contains("Started") && d.contains("Pulled")).then_some(d)
    });
    assert!(describe.contains("kubelet"), "{describe}");

    // The agent serves a certificate of the cluster CA, and the apiserver
    // checks it (--kubelet-certificate-authority): logs come through.
    let verify = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(lab.path("apiserver/ca.crt"))
        .arg(lab.path("state/pki/kubelet.crt"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");
    lab.wait_for("kubectl logs through the verified kubelet", || {
        lab.kubectl(&["logs", &format!("web-{node}")])
    });

    let veths_before = lab.netns.veths();
    assert!(veths_before.len() > 2, "pod veths: {veths_before:?}");

    let down = lab.script("down");
    assert!(
        down.status.success(),
        "kubelab down failed:\n{}\n{}",
        String::from_utf8_lossy(&down.stdout),
        String::from_utf8_lossy(&down.stderr)
    );
    assert_eq!(lab.processes(), Vec::<String>::new(), "processes left");
    assert_eq!(lab.pod_cgroups(), Vec::<PathBuf>::new(), "pod cgroups left");
    let mut veths = lab.netns.veths();
    veths.sort();
    assert_eq!(veths, ["kl-node", "kl-peer"], "pod veths left");
}
