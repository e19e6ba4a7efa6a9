//! A one-node cluster inside a network namespace this test makes (the
//! "node"): the real apiserver (its cluster DNS included) advertising the
//! node's address, the agent joined to it with pods on its CNI bridge and
//! the iptables service proxy, and the real `kubectl` run inside the
//! namespace. Everything is removed on drop.
//! Include with `#[path = "common/netns_cluster.rs"] mod netns_cluster;`
//! next to `mod common;`.

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::common::{TestNode, agent_bin};

pub const API_PORT: u16 = 6443;

/// `ip netns add`; deleted on drop (with the rules and links in it).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let name = format!("{prefix}-{}", std::process::id());
        assert!(
            Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .unwrap()
                .success()
        );
        Netns { name }
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    pub fn sh(&self, cmd: &str) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.path()))
            .args(["sh", "-c", cmd])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a thread inside the namespace and waits for it.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("thread in the netns panicked")
    }

    /// Starts `f` on a thread inside the namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = self.path();
        std::thread::spawn(move || {
            let file = std::fs::File::open(path).unwrap();
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
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

/// A node of a [`NetnsCluster`] besides the first: its agent in a namespace
/// of its own, on the cluster's LAN.
pub struct PeerNode {
    pub node: TestNode,
    pub ip: String,
    _cni_conf: tempfile::TempDir,
    /// Dropped after the agent.
    pub ns: Netns,
}

pub struct NetnsCluster {
    pub node: TestNode,
    /// Further nodes ([`Self::start_nodes`]), in order.
    pub peers: Vec<PeerNode>,
    api: Child,
    pub dir: tempfile::TempDir,
    /// Dropped last: the agent and apiserver run inside it.
    pub ns: Netns,
    pub node_ip: String,
    _cni_conf: tempfile::TempDir,
    /// The segment joining the nodes ([`Self::start_nodes`]): a bridge in a
    /// namespace of its own holding [`LAN_GATEWAY`], the nodes' default
    /// gateway and a client outside the cluster.
    pub lan: Option<Netns>,
}

/// The LAN of [`NetnsCluster::start_nodes`]: node `i` (1-based) is `LAN_PREFIX.i`.
pub const LAN_PREFIX: &str = "192.168.80";
pub const LAN_GATEWAY: &str = "192.168.80.254";

/// The real apiserver inside `ns`, serving on `node_ip`; waits until it answers.
fn start_apiserver(ns: &Netns, node_ip: &str, api_flags: &[&str]) -> (Child, tempfile::TempDir) {
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
    let api = ns
        .command(bin.to_str().unwrap())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--bind-address", "0.0.0.0", "--advertise-address", node_ip])
        .args(["--secure-port", &API_PORT.to_string()])
        .args(api_flags)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr: std::net::SocketAddr = format!("{node_ip}:{API_PORT}").parse().unwrap();
    while !kubeconfig.exists() || ns.run(move || std::net::TcpStream::connect(addr)).is_err() {
        assert!(Instant::now() < deadline, "apiserver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (api, dir)
}

/// An agent of the cluster whose apiserver data is in `api_dir`, inside
/// `ns` with address `node_ip`, its pods on the kubelab CNI bridge.
fn start_agent(
    ns: &Netns,
    api_dir: &std::path::Path,
    node_ip: &str,
    agent_flags: &[&str],
) -> (TestNode, tempfile::TempDir) {
    let cni_conf = tempfile::tempdir().unwrap();
    let plugins = agent_bin().parent().unwrap().to_path_buf();
    assert!(
        plugins.join("kubelab-bridge").exists(),
        "the kubelab-cni plugins are not built: cargo build --workspace"
    );
    let kubeconfig = api_dir.join("admin.kubeconfig");
    let ca = api_dir.join("ca.crt");
    // The kubelet API as kubeadm sets it up: HTTPS, client certificates
    // of the cluster CA, permissions checked with the apiserver.
    let mut args: Vec<&str> = vec![
        "--port",
        "10250",
        "--client-ca-file",
        ca.to_str().unwrap(),
        "--authentication-token-webhook",
        "--authorization-mode",
        "Webhook",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--node-ip",
        node_ip,
        "--cni-conf-dir",
        cni_conf.path().to_str().unwrap(),
        "--cni-bin-dir",
        plugins.to_str().unwrap(),
        "--proxy-mode",
        "iptables",
        "--address",
        "0.0.0.0",
    ];
    args.extend_from_slice(agent_flags);
    (TestNode::start_in_netns(&ns.name, &args), cni_conf)
}

impl NetnsCluster {
    /// The node's address is `node_ip` (on a veth end inside the
    /// namespace), its pods get `pod_cidr`.
    pub fn start(
        prefix: &str,
        node_ip: &str,
        pod_cidr: &str,
        api_flags: &[&str],
        agent_flags: &[&str],
    ) -> NetnsCluster {
        let ns = Netns::new(prefix);
        ns.sh(&format!(
            "ip link set lo up && sysctl -qw net.ipv4.ip_forward=1 \
             && ip link add ext0 type veth peer name ext1 && ip link set ext1 up && ip link set ext0 up \
             && ip addr add {node_ip}/32 dev ext0 && ip route add 10.96.0.0/12 dev ext0"
        ));
        let mut api_args = vec!["--allocate-node-cidrs=false"];
        api_args.extend_from_slice(api_flags);
        let (api, dir) = start_apiserver(&ns, node_ip, &api_args);
        let mut args = vec!["--pod-cidr", pod_cidr, "--cluster-cidr", "10.0.0.0/8"];
        args.extend_from_slice(agent_flags);
        let (node, cni_conf) = start_agent(&ns, dir.path(), node_ip, &args);
        NetnsCluster {
            node,
            peers: vec![],
            api,
            dir,
            ns,
            node_ip: node_ip.to_owned(),
            _cni_conf: cni_conf,
            lan: None,
        }
    }

    /// `count` nodes, each an agent in a namespace of its own, on one LAN (a
    /// bridge in a namespace of its own, see [`LAN_GATEWAY`]); the apiserver
    /// in the first node's namespace gives each Node a pod CIDR of
    /// 10.244.0.0/16.
    pub fn start_nodes(prefix: &str, count: usize, agent_flags: &[&str]) -> NetnsCluster {
        assert!(count >= 1);
        let lan = Netns::new(&format!("{prefix}-lan"));
        lan.sh(&format!(
            "ip link set lo up && ip link add br0 type bridge && ip link set br0 up \
             && ip addr add {LAN_GATEWAY}/24 dev br0"
        ));
        let join = |i: usize| {
            let ns = Netns::new(&format!("{prefix}-n{i}"));
            let ip = format!("{LAN_PREFIX}.{i}");
            lan.sh(&format!(
                "ip link add lan{i} type veth peer name eth0 netns {} \
                 && ip link set lan{i} master br0 up",
                ns.name
            ));
            ns.sh(&format!(
                "ip link set lo up && sysctl -qw net.ipv4.ip_forward=1 && ip link set eth0 up \
                 && ip addr add {ip}/24 dev eth0 && ip route add default via {LAN_GATEWAY}"
            ));
            (ns, ip)
        };
        let (ns, node_ip) = join(1);
        let (api, dir) = start_apiserver(&ns, &node_ip, &[]);
        let mut args = vec!["--cluster-cidr", "10.244.0.0/16"];
        args.extend_from_slice(agent_flags);
        let (node, cni_conf) = start_agent(&ns, dir.path(), &node_ip, &args);
        let peers = (2..=count)
            .map(|i| {
                let (ns, ip) = join(i);
                let (node, cni_conf) = start_agent(&ns, dir.path(), &ip, &args);
                PeerNode {
                    node,
                    ip,
                    _cni_conf: cni_conf,
                    ns,
                }
            })
            .collect();
        NetnsCluster {
            node,
            peers,
            api,
            dir,
            ns,
            node_ip,
            _cni_conf: cni_conf,
            lan: Some(lan),
        }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    pub fn api_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }

    /// `kubectl` inside the namespace, with this cluster's kubeconfig.
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut c = self.ns.command("/usr/bin/kubectl");
        c.env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path())
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .args(args);
        c
    }

    pub fn kubectl_with(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = self
            .kubectl_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(data) = stdin {
            input.write_all(data).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

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
        let out = self.kubectl_with(&["apply", "-f", "-"], Some(yaml.as_bytes()));
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// What to print when a wait times out.
    pub fn diag(&self) -> String {
        format!(
            "agent log:\n{}\napiserver log:\n{}\nkubectl get pods,svc,endpointslices -A:\n{}",
            super::common::tail(&self.node.agent_log(), 30)
                + &self
                    .peers
                    .iter()
                    .map(|p| format!(
                        "\nagent log of {}:\n{}",
                        p.node.node_name,
                        super::common::tail(&p.node.agent_log(), 30)
                    ))
                    .collect::<String>(),
            super::common::tail(&self.api_log(), 15),
            String::from_utf8_lossy(
                &self
                    .kubectl_with(
                        &["get", "pods,svc,endpointslices", "-A", "-o", "wide"],
                        None
                    )
                    .stdout
            )
        )
    }

    /// Polls `f` until it yields a value, failing with [`Self::diag`].
    pub fn wait_for<T>(&self, what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
        super::common::poll_until(what, timeout, Duration::from_millis(100), || self.diag(), f)
    }

    pub fn wait_running(&self, pod: &str) {
        self.wait_for(&format!("{pod} Running"), Duration::from_secs(60), || {
            let phase = self.kubectl(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"]);
            (phase == "Running").then_some(())
        });
    }

    /// Runs `sh -c cmd` in a pod's container through `kubectl exec`.
    pub fn exec(&self, pod: &str, cmd: &str) -> Output {
        self.kubectl_with(&["exec", pod, "--", "sh", "-c", cmd], None)
    }

    /// [`Self::exec`] that must succeed; its stdout.
    pub fn exec_ok(&self, pod: &str, cmd: &str) -> String {
        let out = self.exec(pod, cmd);
        assert!(
            out.status.success(),
            "kubectl exec {pod} -- sh -c {cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for NetnsCluster {
    fn drop(&mut self) {
        let _ = self.kubectl_with(
            &[
                "delete",
                "pods",
                "--all",
                "--grace-period=1",
                "--timeout=30s",
            ],
            None,
        );
        let _ = self.api.kill();
        let _ = self.api.wait();
    }
}
