//! A one-node cluster for tests: the real `kubelab-apiserver` on a free
//! loopback port, a [`TestNode`] joined to it with `--kubeconfig`, and the
//! real `kubectl` (its own cache dir) as the user's hands and eyes.
//! Include with `#[path = "common/cluster.rs"] mod cluster;` next to `mod common;`.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::common::TestNode;

/// The apiserver binary of this workspace build (`cargo build --workspace`
/// puts it next to the agent's).
fn apiserver_bin() -> PathBuf {
    let bin = super::common::agent_bin().with_file_name("kubelab-apiserver");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        bin.display()
    );
    bin
}

pub struct ApiServer {
    child: Child,
    pub dir: tempfile::TempDir,
}

impl ApiServer {
    pub fn start() -> ApiServer {
        Self::start_with(&[])
    }

    /// With extra apiserver flags (e.g. `--node-monitor-grace-period=4s`).
    pub fn start_with(extra: &[&str]) -> ApiServer {
        Self::start_in(Self::data_dir(), extra)
    }

    /// A fresh data dir, for flags that name files the apiserver makes
    /// there (its `ca.crt`).
    pub fn data_dir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("kubelab-apiserver-")
            .tempdir()
            .unwrap()
    }

    /// With `dir` as its data dir.
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> ApiServer {
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
            // CIDR they would write a bridge network config there (a test
            // of nodes that make no network may ask for CIDRs).
            .args(
                (!extra.iter().any(|a| a.starts_with("--allocate-node-cidrs")))
                    .then_some("--allocate-node-cidrs=false"),
            )
            .args(extra)
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

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    pub fn kubectl_with(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.run_kubectl("/usr/bin/kubectl", "kube-cache", args, stdin)
    }

    /// Runs one installed kubectl release (`1.27` … `1.33`) directly.
    pub fn kubectl_version_with(
        &self,
        version: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Output {
        self.run_kubectl(
            &format!("/usr/lib/google-cloud-sdk/bin/kubectl.{version}"),
            &format!("kube-cache-{version}"),
            args,
            stdin,
        )
    }

    fn run_kubectl(&self, bin: &str, cache: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(bin)
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path())
            .arg("--cache-dir")
            .arg(self.dir.path().join(cache))
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
    pub fn try_kubectl(&self, args: &[&str]) -> Option<String> {
        let out = self.kubectl_with(args, None);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs kubectl and asserts it succeeded.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_with(args, None);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn apply(&self, yaml: &str) {
        let out = self.kubectl_with(&["apply", "-f", "-"], Some(yaml));
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Deletes every pod and waits until the node has stopped them (a
    /// node's teardown otherwise waits for API pods that never go).
    pub fn delete_all_pods(&self) {
        self.kubectl(&["delete", "pods", "--all", "--timeout=60s"]);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A node of this cluster (its IP is 127.0.0.1), its kubelet API on an
    /// HTTPS `--port` as kubeadm sets a kubelet up: client certificates of
    /// the cluster CA, tokens and permissions checked with the apiserver.
    pub fn join(&self) -> TestNode {
        self.join_with(&[])
    }

    /// [`Self::join`] with more agent flags.
    pub fn join_with(&self, extra: &[&str]) -> TestNode {
        let kubeconfig = self.kubeconfig();
        let ca = self.ca_file();
        let port = super::common::free_port().to_string();
        let mut args = vec![
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
        ];
        args.extend_from_slice(extra);
        TestNode::start_with(&args)
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
pub fn wait_for<T>(
    node: &TestNode,
    what: &str,
    timeout: Duration,
    check: impl FnMut() -> Option<T>,
) -> T {
    super::common::poll_until(
        what,
        timeout,
        Duration::from_millis(200),
        || {
            format!(
                "agent log (tail):\n{}",
                super::common::tail(&node.agent_log(), 40)
            )
        },
        check,
    )
}

/// A pod bound to `node`, with a short grace period; `body` is the rest of its spec.
pub fn api_pod(name: &str, node: &str, body: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    app: {name}-app\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n{body}"
    )
}

/// The cells of the `kubectl get` row whose first cell is `name`.
pub fn row(table: &str, name: &str) -> Option<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .find(|cells| cells.first().map(String::as_str) == Some(name))
}
