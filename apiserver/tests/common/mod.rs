//! A fixture that runs the real `kubelab-apiserver` on a free loopback port
//! with a temp data dir, and drives it with the real `/usr/bin/kubectl`
//! (fresh discovery cache per server). The server is killed on drop.
//!
//! `KUBELAB_TEST_STORE=etcd` runs every such server on a real etcd of its
//! own instead of the embedded store: the same suite judges both backends.

#![allow(dead_code)]

pub mod etcd;
pub mod fake_node;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct ApiServer {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    extra_args: Vec<String>,
    /// The etcd behind this server when the suite runs on etcd; it outlives
    /// apiserver restarts, as a real etcd would.
    etcd: Option<etcd::EtcdServer>,
}

/// Whether this run judges the etcd backend (`KUBELAB_TEST_STORE=etcd`).
pub fn on_etcd() -> bool {
    std::env::var("KUBELAB_TEST_STORE").is_ok_and(|v| v == "etcd")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl ApiServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra_args: &[&str]) -> Self {
        let mut extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let etcd = if on_etcd() && !extra_args.iter().any(|a| a == "--etcd-servers") {
            let etcd = etcd::EtcdServer::start();
            extra_args.extend(["--etcd-servers".to_owned(), etcd.url()]);
            Some(etcd)
        } else {
            None
        };
        let mut s = Self {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            extra_args,
            etcd,
        };
        s.spawn();
        s
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("apiserver.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kubelab-apiserver"))
            .args([
                "--data-dir",
                self.dir.path().to_str().unwrap(),
                "--bind-address",
                "127.0.0.1",
            ])
            .args(["--secure-port", &self.port.to_string()])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kubelab-apiserver");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("apiserver exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "apiserver did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }

    /// `kill -9`, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("/usr/bin/kubectl");
        c.env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path())
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .args(args);
        c
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd(args).output().expect("run kubectl")
    }

    /// Runs `tests/python/<script>` with Debian's Python `kubernetes`
    /// client against this server; panics unless it succeeds and prints
    /// `<done>`.
    #[allow(dead_code)]
    pub fn run_python_client(&self, script: &str, done: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/python")
            .join(script);
        let out = Command::new("/usr/bin/python3")
            .arg(path)
            .arg(self.kubeconfig())
            .output()
            .expect("run /usr/bin/python3");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(done),
            "{script} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs kubectl, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs kubectl, asserts failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} should fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// Writes `contents` to a file in the data dir and returns its path.
    pub fn file(&self, name: &str, contents: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).unwrap();
        p.to_str().unwrap().to_owned()
    }

    /// The admin client certificate and key as PEM files (for curl).
    pub fn client_cert_files(&self) -> (String, String) {
        (
            self.dir
                .path()
                .join("admin.crt")
                .to_str()
                .unwrap()
                .to_owned(),
            self.dir
                .path()
                .join("admin.key")
                .to_str()
                .unwrap()
                .to_owned(),
        )
    }

    pub fn ca_file(&self) -> String {
        self.dir.path().join("ca.crt").to_str().unwrap().to_owned()
    }

    /// curl with the admin client certificate; returns (HTTP code, body).
    pub fn curl(&self, args: &[&str]) -> (u16, String) {
        let (crt, key) = self.client_cert_files();
        let out = Command::new("curl")
            .args([
                "-sS",
                "--cacert",
                &self.ca_file(),
                "--cert",
                &crt,
                "--key",
                &key,
                "-w",
                "\n%{http_code}",
            ])
            .args(args)
            .output()
            .expect("run curl");
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.trim().parse().unwrap(), body.to_owned())
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Splits `kubectl get` table output into rows of whitespace-separated cells.
pub fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

pub const POD_WEB: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    env: dev
    app: web
spec:
  containers:
  - name: nginx
    image: nginx:1.25
    ports:
    - containerPort: 80
";

pub const NODE1: &str = "apiVersion: v1
kind: Node
metadata:
  name: node1
  labels:
    kubernetes.io/hostname: node1
status:
  conditions:
  - type: Ready
    status: \"True\"
    reason: KubeletReady
    message: kubelet is posting ready status
  addresses:
  - type: InternalIP
    address: 10.0.0.5
  nodeInfo:
    kubeletVersion: v1.33.0
    osImage: Debian GNU/Linux 12
    kernelVersion: 6.1.0
    containerRuntimeVersion: kubelab://0.1
    architecture: amd64
    operatingSystem: linux
    bootID: \"\"
    kubeProxyVersion: \"\"
    machineID: \"\"
    systemUUID: \"\"
";
