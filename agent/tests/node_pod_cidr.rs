//! A cluster node without `--pod-cidr` networks its pods in the subnet the
//! apiserver's node IPAM assigns its Node. The apiserver and the agent both
//! run inside a network namespace this test creates (the bridge goes there,
//! never on the host's interfaces); everything is removed on drop.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{TestNode, agent_bin};
use serde_json::Value;

/// The apiserver's port inside the namespace (nothing else listens there).
const API_PORT: u16 = 16443;

/// `ip netns add`; `ip netns del` on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        let name = format!("kl-cidr-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add {name}");
        let ns = Netns { name };
        assert!(
            ns.command("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .unwrap()
                .success()
        );
        ns
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// `program` run in the namespace (network only: `/sys` stays the host's).
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path())).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The real apiserver inside the namespace; killed on drop.
struct ApiServer {
    child: Child,
    dir: tempfile::TempDir,
}

impl ApiServer {
    fn start(ns: &Netns) -> ApiServer {
        let bin = agent_bin().with_file_name("kubelab-apiserver");
        assert!(
            bin.exists(),
            "{} missing: cargo build --workspace",
            bin.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("kubelab-apiserver-")
            .tempdir()
            .unwrap();
        let log = std::fs::File::create(dir.path().join("apiserver.log")).unwrap();
        let child = ns
            .command(bin.to_str().unwrap())
            .arg("--data-dir")
            .arg(dir.path())
            .args([
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                &API_PORT.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let server = ApiServer { child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !server.kubeconfig().exists() || !server.log().contains("serving on") {
            assert!(
                Instant::now() < deadline,
                "apiserver did not start:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }

    fn kubectl(&self, ns: &Netns, args: &[&str]) -> Output {
        ns.command("/usr/bin/kubectl")
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path())
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const WEB: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox
    command: [\"sh\", \"-c\", \"exec sleep 3600\"]
";

#[test]
fn node_without_pod_cidr_flag_uses_the_nodes_assigned_pod_cidr() {
    let ns = Netns::new();
    let api = ApiServer::start(&ns);
    let conf = tempfile::tempdir().unwrap();
    let conf_dir = conf.path().join("net.d");
    let plugins = agent_bin().parent().unwrap().to_path_buf();
    assert!(
        plugins.join("kubelab-bridge").exists(),
        "cargo build --workspace"
    );
    let node = TestNode::start_in_netns(
        &ns.name,
        &[
            "--kubeconfig",
            api.kubeconfig().to_str().unwrap(),
            "--node-ip",
            "127.0.0.1",
            "--cni-conf-dir",
            conf_dir.to_str().unwrap(),
            "--cni-bin-dir",
            plugins.to_str().unwrap(),
        ],
    );
    node.write_manifest("web.yaml", WEB);
    let pod = node.wait_running("web");
    let ip = pod["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let out = api.kubectl(
        &ns,
        &[
            "get",
            "node",
            &node.node_name,
            "-o",
            "jsonpath={.spec.podCIDR}",
        ],
    );
    let cidr = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        cidr,
        "10.244.0.0/24",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        ip, "10.244.0.2",
        "the first pod address of the node's subnet"
    );
    let written: Value =
        serde_json::from_slice(&std::fs::read(conf_dir.join("10-kubelab.conflist")).unwrap())
            .unwrap();
    assert_eq!(
        written["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
        "10.244.0.0/24"
    );
    let log = node.agent_log();
    assert!(
        log.contains("waiting up to 10s for the Node's spec.podCIDR"),
        "{log}"
    );
    assert!(
        log.contains("using the Node's spec.podCIDR for the pod network"),
        "{log}"
    );

    node.remove_manifest("web.yaml");
    node.wait_for("pods gone", Duration::from_secs(30), |n| {
        n.pods().is_empty().then_some(())
    });
}
