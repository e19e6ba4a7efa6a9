//! `kubectl port-forward` end to end: the real kubectl (the oldest one
//! installed speaks SPDY/3.1, the newest tunnels SPDY in a WebSocket) → the
//! real apiserver's `pods/portforward` (an upgrade-aware proxy) → the
//! agent's `/portForward/...` → a TCP connection on the pod's loopback.
//! The Python client's channel protocol goes the same way.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cluster::{ApiServer, api_pod, row, wait_for};

/// An echo server on 8080 (`cat` per connection, for ever).
const ECHO: &str = "  containers:
  - name: main
    image: busybox
    command: [\"nc\", \"-ll\", \"-p\", \"8080\", \"-e\", \"cat\"]
";

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: echo
spec:
  selector:
    app: echo-app
  ports:
  - name: talk
    port: 80
    targetPort: 8080
";

/// The oldest and the newest kubectl installed: plain SPDY, and SPDY
/// tunnelled in a WebSocket.
const KUBECTLS: [&str; 2] = ["1.27", "1.33"];

fn kubectl_bin(version: &str) -> String {
    format!("/usr/lib/google-cloud-sdk/bin/kubectl.{version}")
}

/// A running `kubectl port-forward`, killed on drop.
struct PortForward {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl PortForward {
    fn start(api: &ApiServer, version: &str, target: &str, ports: &str) -> PortForward {
        let mut child = Command::new(kubectl_bin(version))
            .env("KUBECONFIG", api.kubeconfig())
            .env("HOME", api.dir.path())
            .arg("--cache-dir")
            .arg(api.dir.path().join(format!("kube-cache-{version}")))
            .args(["port-forward", "--address", "127.0.0.1", target, ports])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl port-forward");
        let (ready_tx, ready_rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("Forwarding from") {
                    let _ = ready_tx.send(line);
                }
            }
        });
        let (err_tx, err_rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = err_tx.send(line);
            }
        });
        let mut pf = PortForward {
            child,
            stderr: err_rx,
        };
        if ready_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let status = pf.child.try_wait().ok().flatten();
            panic!(
                "kubectl {version} port-forward {target} {ports} never got ready ({status:?}): {}",
                pf.stderr_text()
            );
        }
        pf
    }

    fn stderr_text(&self) -> String {
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a line through the forwarded port and reads it back.
fn echo_through(port: u16, line: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(line.as_bytes())?;
    let mut got = vec![0u8; line.len()];
    s.read_exact(&mut got)?;
    Ok(String::from_utf8_lossy(&got).into_owned())
}

#[test]
fn kubectl_port_forward_reaches_a_pod_and_a_service() {
    let api = ApiServer::start();
    let node = api.join();
    api.apply(&api_pod("echo", &node.node_name, ECHO));
    api.apply(SERVICE);
    wait_for(&node, "echo running", Duration::from_secs(60), || {
        let cells = row(&api.try_kubectl(&["get", "pods"])?, "echo")?;
        (cells[2] == "Running").then_some(())
    });

    for version in KUBECTLS {
        // To the pod: two connections, one after the other, each its own
        // pair of streams; a larger payload than one frame.
        let local = common::free_port();
        let pf = PortForward::start(&api, version, "pod/echo", &format!("{local}:8080"));
        let big = format!("{}\n", "x".repeat(100_000));
        for line in ["hello through the tunnel\n", big.as_str()] {
            let got = echo_through(local, line).unwrap_or_else(|e| {
                panic!(
                    "kubectl {version}: echo through port {local}: {e}\n{}\nagent:\n{}",
                    pf.stderr_text(),
                    common::tail(&node.agent_log(), 30)
                )
            });
            assert_eq!(got, line, "kubectl {version}: the pod echoes what was sent");
        }
        drop(pf);

        // To the Service: kubectl picks a pod behind it and its targetPort.
        let local = common::free_port();
        let pf = PortForward::start(&api, version, "svc/echo", &format!("{local}:80"));
        let got = echo_through(local, "via the service\n")
            .unwrap_or_else(|e| panic!("kubectl {version}: svc/echo: {e}\n{}", pf.stderr_text()));
        assert_eq!(got, "via the service\n");
        drop(pf);
    }

    // A port nobody listens on: the connection ends, and kubectl reports
    // the node's error naming the port and the pod.
    let local = common::free_port();
    let pf = PortForward::start(&api, "1.33", "pod/echo", &format!("{local}:9999"));
    let mut s = TcpStream::connect(("127.0.0.1", local)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(b"anyone?\n");
    let mut buf = [0u8; 16];
    assert!(
        matches!(s.read(&mut buf), Ok(0) | Err(_)),
        "nothing answers"
    );
    let mut said = String::new();
    for _ in 0..100 {
        said.push_str(&pf.stderr_text());
        if said.contains("error forwarding port 9999 to pod echo") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        said.contains("error forwarding port 9999 to pod echo"),
        "kubectl's stderr: {said}"
    );
    drop(pf);

    // The Python client's portforward: the WebSocket channel protocol.
    if let Some(out) = python_port_forward(&api) {
        assert!(
            out.status.success(),
            "python portforward: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "python says hi"
        );
    }

    api.delete_all_pods();
}

const PYTHON_PORT_FORWARD: &str = r#"
import sys
from kubernetes import client, config
from kubernetes.stream import portforward
config.load_kube_config(sys.argv[1])
api = client.CoreV1Api()
pf = portforward(api.connect_get_namespaced_pod_portforward, "echo", "default", ports="8080")
sock = pf.socket(8080)
sock.settimeout(30)
sock.sendall(b"python says hi\n")
got = b""
while not got.endswith(b"\n"):
    chunk = sock.recv(1024)
    if not chunk:
        break
    got += chunk
sock.close()
print(got.decode().strip())
err = pf.error(8080)
if err:
    print("error:", err, file=sys.stderr)
    sys.exit(1)
"#;

/// Runs the Python client's port forward when Debian's python3-kubernetes
/// is installed (`None` otherwise: the test says so and goes on).
fn python_port_forward(api: &ApiServer) -> Option<std::process::Output> {
    let has_client = Command::new("/usr/bin/python3")
        .args(["-c", "import kubernetes.stream"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_client {
        eprintln!("python3-kubernetes is not installed: skipping the Python client");
        return None;
    }
    Some(
        Command::new("timeout")
            .arg("60")
            .arg("/usr/bin/python3")
            .args(["-c", PYTHON_PORT_FORWARD])
            .arg(api.kubeconfig())
            .output()
            .expect("run python3"),
    )
}
