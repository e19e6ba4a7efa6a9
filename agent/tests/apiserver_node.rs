//! The agent as a cluster node: the real `kubelab-apiserver` on a free loopback
//! port, the agent joined to it with `--kubeconfig`, and the real `kubectl`
//! (its own cache dir per test) as the user's eyes.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::TestNode;

/// The apiserver binary of this workspace build (`cargo build --workspace`
/// puts it next to the agent's).
fn apiserver_bin() -> PathBuf {
    let bin = common::agent_bin().with_file_name("kubelab-apiserver");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        bin.display()
    );
    bin
}

struct ApiServer {
    child: Child,
    dir: tempfile::TempDir,
}

impl ApiServer {
    fn start() -> ApiServer {
        let dir = tempfile::Builder::new()
            .prefix("kubelab-apiserver-")
            .tempdir()
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("apiserver.log")).unwrap();
        let child = Command::new(apiserver_bin())
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--bind-address", "127.0.0.1", "--secure-port"])
            .arg(port.to_string())
            // These nodes run in the host's network namespace: with a pod
            // CIDR they would write a bridge network config there.
            .arg("--allocate-node-cidrs=false")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kubelab-apiserver");
        let server = ApiServer { child, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            || !server.kubeconfig().exists()
        {
            assert!(Instant::now() < deadline, "apiserver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    fn kubectl_with(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new("/usr/bin/kubectl")
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path())
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    /// Runs kubectl; its stdout, or `None` when it failed.
    fn try_kubectl(&self, args: &[&str]) -> Option<String> {
        let out = self.kubectl_with(args, None);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs kubectl and asserts it succeeded.
    fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_with(args, None);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply(&self, yaml: &str) {
        let out = self.kubectl_with(&["apply", "-f", "-"], Some(yaml));
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it yields a value; on time-out fails naming `what`,
/// with the agent's log.
fn wait_for<T>(
    node: &TestNode,
    what: &str,
    timeout: Duration,
    check: impl FnMut() -> Option<T>,
) -> T {
    common::poll_until(
        what,
        timeout,
        Duration::from_millis(200),
        || format!("agent log (tail):\n{}", common::tail(&node.agent_log(), 40)),
        check,
    )
}

/// The cells of the `kubectl get` row whose first cell is `name`.
fn row(table: &str, name: &str) -> Option<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .find(|cells| cells.first().map(String::as_str) == Some(name))
}

/// The values of every `Key:  value` line of `kubectl describe` output.
fn field(describe: &str, key: &str) -> Vec<String> {
    describe
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
        .collect()
}

/// A node of the cluster with its kubelet API on an HTTPS `--port` that
/// takes the cluster CA's client certificates (the apiserver's among them)
/// and asks the apiserver about tokens and permissions.
fn join(api: &ApiServer) -> TestNode {
    let kubeconfig = api.kubeconfig();
    let ca = api.dir.path().join("ca.crt");
    let port = common::free_port().to_string();
    TestNode::start_with(&[
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--node-ip",
        "127.0.0.1",
        "--port",
        &port,
        "--client-ca-file",
        ca.to_str().unwrap(),
        "--authentication-token-webhook",
        "--authorization-mode",
        "Webhook",
    ])
}

fn api_pod(name: &str, node: &str, body: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 2\n{body}"
    )
}

const SLEEPER: &str = "  containers:
  - name: main
    image: busybox
    command: [\"sh\", \"-c\", \"exec sleep 3600\"]
";

#[test]
fn node_is_ready_runs_bound_pods_mirrors_static_pods_and_finishes_deletions() {
    let api = ApiServer::start();
    let node = join(&api);
    let name = node.node_name.clone();

    let ready = wait_for(&node, "the node Ready", Duration::from_secs(20), || {
        let cells = row(&api.try_kubectl(&["get", "nodes"])?, &name)?;
        (cells[1] == "Ready").then_some(cells)
    });
    assert_eq!(
        ready[4], "v1.33.0",
        "VERSION is the kubelet version: {ready:?}"
    );
    let labels = api.kubectl(&[
        "get",
        "node",
        &name,
        "-o",
        "jsonpath={.metadata.labels.kubernetes\\.io/hostname} {.metadata.labels.kubernetes\\.io/os} {.status.capacity.pods} {.status.addresses[0].type}={.status.addresses[0].address}",
    ]);
    assert_eq!(labels, format!("{name} linux 110 InternalIP=127.0.0.1"));
    // status.runtimeHandlers: the built-in runtime, the default again
    // unnamed (as containerd reports it), and runc where it is installed.
    let handlers = api.kubectl(&[
        "get",
        "node",
        &name,
        "-o",
        "jsonpath={range .status.runtimeHandlers[*]}{.name},{end} {.status.runtimeHandlers[0].features}",
    ]);
    let runc = Command::new("runc").arg("--version").output().is_ok();
    let names = if runc { "kubelab,,runc," } else { "kubelab,," };
    assert_eq!(
        handlers,
        format!("{names} {{\"recursiveReadOnlyMounts\":true,\"userNamespaces\":true}}")
    );
    let holder = wait_for(&node, "the node lease", Duration::from_secs(15), || {
        api.try_kubectl(&[
            "get",
            "lease",
            "-n",
            "kube-node-lease",
            &name,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
    });
    assert_eq!(holder, name);

    // A pod bound to the node runs, with the UID the apiserver gave it.
    api.apply(&api_pod("sleeper", &name, SLEEPER));
    wait_for(
        &node,
        "sleeper Running in kubectl",
        Duration::from_secs(30),
        || {
            let cells = row(&api.try_kubectl(&["get", "pods"])?, "sleeper")?;
            (cells[1] == "1/1" && cells[2] == "Running").then_some(())
        },
    );
    let api_uid = api.kubectl(&["get", "pod", "sleeper", "-o", "jsonpath={.metadata.uid}"]);
    let local = node
        .pods()
        .into_iter()
        .find(|p| p["metadata"]["name"] == "sleeper")
        .expect("sleeper in the agent's /pods");
    assert_eq!(local["metadata"]["uid"], api_uid.as_str());
    let status = api.kubectl(&[
        "get",
        "pod",
        "sleeper",
        "-o",
        "jsonpath={.status.hostIP} {.status.qosClass} {.status.containerStatuses[0].ready} {.status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    assert_eq!(status, "127.0.0.1 BestEffort true True");

    // A static pod shows up as its mirror pod, owned by the node.
    node.write_manifest(
        "web.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  terminationGracePeriodSeconds: 1\n{SLEEPER}"
        ),
    );
    let mirror = format!("web-{name}");
    wait_for(
        &node,
        "the mirror pod Running",
        Duration::from_secs(30),
        || {
            let cells = row(&api.try_kubectl(&["get", "pods"])?, &mirror)?;
            (cells[2] == "Running").then_some(())
        },
    );
    let meta = api.kubectl(&[
        "get",
        "pod",
        &mirror,
        "-o",
        "jsonpath={.metadata.annotations.kubernetes\\.io/config\\.source} {.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name} {.metadata.uid}",
    ]);
    let parts: Vec<&str> = meta.split(' ').collect();
    assert_eq!(&parts[..2], ["file", &format!("Node/{name}")], "{meta}");
    let static_uid = node.pod("web").unwrap()["metadata"]["uid"].clone();
    let mirror_annotation = api.kubectl(&[
        "get",
        "pod",
        &mirror,
        "-o",
        "jsonpath={.metadata.annotations.kubernetes\\.io/config\\.mirror}",
    ]);
    assert_eq!(static_uid, mirror_annotation.as_str());
    // kubectl describe of the mirror finds the static pod's events (recorded
    // under the UID the mirror carries), Pulled among them.
    let describe = wait_for(
        &node,
        "the static pod's events in describe",
        Duration::from_secs(30),
        || {
            let d = api.try_kubectl(&["describe", "pod", &mirror])?;
            (d.contains("Started") && d.contains("Pulled")).then_some(d)
        },
    );
    assert!(
        describe.contains("Container image \"busybox\" already present on machine"),
        "{describe}"
    );

    // Deleting the mirror does not stop the static pod: the mirror comes back.
    api.kubectl(&["delete", "pod", &mirror, "--wait=false"]);
    wait_for(&node, "a new mirror pod", Duration::from_secs(30), || {
        let uid = api.try_kubectl(&["get", "pod", &mirror, "-o", "jsonpath={.metadata.uid}"])?;
        (!uid.is_empty() && uid != parts[2]).then_some(())
    });
    assert!(node.pod("web").is_some(), "the static pod keeps running");

    // kubectl delete returns once the agent has stopped the pod and finished
    // the deletion.
    let started = Instant::now();
    api.kubectl(&["delete", "pod", "sleeper", "--timeout=60s"]);
    let took = started.elapsed();
    assert!(
        api.try_kubectl(&["get", "pod", "sleeper"]).is_none(),
        "sleeper is gone from the API"
    );
    assert!(
        !node
            .pods()
            .iter()
            .any(|p| p["metadata"]["name"] == "sleeper"),
        "sleeper is gone from the node"
    );
    // `exec sleep` ignores SIGTERM as PID 1: the 2 s grace period runs out.
    assert!(took >= Duration::from_secs(2), "deleted after {took:?}");
    assert!(took < Duration::from_secs(20), "deleted after {took:?}");

    // Removing the manifest removes the mirror.
    node.remove_manifest("web.yaml");
    wait_for(
        &node,
        "the mirror pod gone",
        Duration::from_secs(30),
        || {
            api.try_kubectl(&["get", "pod", &mirror])
                .is_none()
                .then_some(())
        },
    );
    let _ = api.log();
}

#[test]
fn oom_killed_pod_shows_reason_exit_code_and_events_in_kubectl() {
    let api = ApiServer::start();
    let node = join(&api);
    let name = node.node_name.clone();
    api.apply(&api_pod(
        "hog",
        &name,
        "  restartPolicy: Never
  containers:
  - name: hog
    image: busybox
    command: [\"dd\", \"if=/dev/zero\", \"of=/dev/null\", \"bs=96M\", \"count=1\"]
    resources:
      limits:
        memory: 32Mi
",
    ));
    wait_for(
        &node,
        "hog OOMKilled in kubectl get pods",
        Duration::from_secs(40),
        || {
            let cells = row(&api.try_kubectl(&["get", "pods"])?, "hog")?;
            (cells[2] == "OOMKilled").then_some(())
        },
    );
    let describe = wait_for(
        &node,
        "events in kubectl describe",
        Duration::from_secs(20),
        || {
            let d = api.try_kubectl(&["describe", "pod", "hog"])?;
            (d.contains("Started") && d.contains("OOMKilled") && d.contains("kubelet")).then_some(d)
        },
    );
    assert_eq!(field(&describe, "Exit Code"), ["137"], "{describe}");
    assert_eq!(field(&describe, "Reason"), ["OOMKilled"], "{describe}");
    assert_eq!(field(&describe, "Status"), ["Failed"], "{describe}");
    assert_eq!(field(&describe, "QoS Class"), ["Burstable"], "{describe}");
    let events = api.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=hog",
    ]);
    for reason in ["Created", "Started"] {
        assert!(events.contains(reason), "no {reason} event: {events}");
    }

    // With restartPolicy Always it restarts, backs off, and RESTARTS grows.
    api.apply(&api_pod(
        "hog2",
        &name,
        "  containers:
  - name: hog
    image: busybox
    command: [\"dd\", \"if=/dev/zero\", \"of=/dev/null\", \"bs=96M\", \"count=1\"]
    resources:
      limits:
        memory: 32Mi
",
    ));
    // RESTARTS grows (the state flips between Running, OOMKilled and
    // CrashLoopBackOff as it does).
    wait_for(&node, "hog2 restarted", Duration::from_secs(40), || {
        let cells = row(&api.try_kubectl(&["get", "pods"])?, "hog2")?;
        (cells[3].parse::<u32>().ok()? >= 1).then_some(())
    });
    let describe = wait_for(&node, "the BackOff event", Duration::from_secs(20), || {
        let d = api.try_kubectl(&["describe", "pod", "hog2"])?;
        d.contains("Back-off restarting failed container")
            .then_some(d)
    });
    assert!(
        field(&describe, "Exit Code").contains(&"137".to_string()),
        "{describe}"
    );

    // A failed pod is deleted at once, and the node forgets it.
    api.kubectl(&["delete", "pod", "hog", "--timeout=30s"]);
    api.kubectl(&["delete", "pod", "hog2", "--timeout=30s"]);
    wait_for(
        &node,
        "hog gone from the node",
        Duration::from_secs(20),
        || node.pods().is_empty().then_some(()),
    );
}

#[test]
fn kubectl_logs_and_top_reach_the_real_agent() {
    let api = ApiServer::start();
    let node = join(&api);
    let name = node.node_name.clone();
    api.apply(&api_pod(
        "spin",
        &name,
        "  containers:
  - name: spin
    image: busybox
    command: [\"sh\", \"-c\", \"echo hello from the node; while :; do :; done\"]
    resources:
      limits:
        cpu: 200m
        memory: 32Mi
",
    ));
    let logs = wait_for(&node, "kubectl logs", Duration::from_secs(30), || {
        api.try_kubectl(&["logs", "spin"])
            .filter(|l| l.contains("hello"))
    });
    assert_eq!(logs.trim(), "hello from the node");
    // kubectl top: CPU in millicores, from the agent's /stats/summary.
    let cpu = wait_for(&node, "kubectl top pod", Duration::from_secs(30), || {
        let out = api.try_kubectl(&["top", "pod", "spin", "--no-headers"])?;
        let cells: Vec<&str> = out.split_whitespace().collect();
        // The first reading has no rate yet (two samples make one).
        cells
            .get(1)?
            .strip_suffix('m')?
            .parse::<u32>()
            .ok()
            .filter(|&m| m > 0)
    });
    assert!(
        (150..=250).contains(&cpu),
        "a 200m limit shows as about 200m in kubectl top, got {cpu}m"
    );
    // Memory as metrics-server reports it: the working set in Ki (a shell
    // loop's is a few hundred Ki, which kubectl top rounds down to 0Mi).
    let metrics = api.kubectl(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/spin",
    ]);
    let metrics: serde_json::Value = serde_json::from_str(&metrics).unwrap();
    let memory = metrics["containers"][0]["usage"]["memory"]
        .as_str()
        .unwrap_or_default();
    let kib: u64 = memory
        .strip_suffix("Ki")
        .unwrap_or_default()
        .parse()
        .unwrap_or(0);
    assert!(
        kib > 0,
        "the working set of a running shell is not zero: {metrics}"
    );
    let top = api.kubectl(&["top", "pod", "spin", "--no-headers"]);
    assert!(
        top.split_whitespace()
            .nth(2)
            .is_some_and(|m| m.ends_with("Mi")),
        "{top}"
    );
    let top_node = api.kubectl(&["top", "node", "--no-headers"]);
    assert!(top_node.starts_with(&name), "{top_node}");
    api.kubectl(&["delete", "pod", "spin"]);
}
