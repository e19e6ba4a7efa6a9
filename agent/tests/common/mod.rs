//! A test node: the real `kubelab-agent` binary with its own root dir, manifest
//! dir and cgroup subtree (nested under this test's own cgroup), talking on a
//! loopback port. Dropping it deletes every pod, stops the agent and removes
//! what it made, even when the test failed.

#![allow(dead_code)]

pub mod node_net;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kubelab-agent"))
}

/// `kubelab`, the user tools (`top`, `experiment`): the workspace's `tools/`
/// crate, built next to the agent by `cargo build --workspace`.
pub fn tools_bin() -> PathBuf {
    let bin = agent_bin().with_file_name("kubelab");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        bin.display()
    );
    bin
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The busybox test image archive, built once per checkout by the project's script.
pub fn test_image() -> PathBuf {
    let dir = repo_root().join("target/test-images");
    let out = dir.join("busybox.tar");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join(".lock")).unwrap();
    nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map(|guard| {
            if !out.exists() {
                let status = Command::new("bash")
                    .arg(repo_root().join("scripts/build-test-image.sh"))
                    .arg(&out)
                    .status()
                    .expect("run build-test-image.sh");
                assert!(status.success(), "build-test-image.sh failed");
            }
            drop(guard);
        })
        .unwrap_or_else(|(_, e)| panic!("lock: {e}"));
    out
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct TestNode {
    pub root: tempfile::TempDir,
    pub manifests: PathBuf,
    /// Relative: resolved under this process's own cgroup in each hierarchy.
    pub cgroup_root: String,
    pub port: u16,
    pub node_name: String,
    pub agent: Option<Child>,
    pub extra_args: Vec<String>,
    /// Run the agent inside network namespace `<netns>` (one the test made with
    /// `ip netns add`); the API is then reached from inside that namespace.
    pub netns: Option<String>,
    /// `--port` (HTTPS), where logs are read; 0 when the test turned it off.
    pub secure_port: u16,
    /// The client certificate and key the test reads logs with: the
    /// apiserver's kubelet client for a cluster node (next to the
    /// `--client-ca-file` the test gave), else one of a CA made for this node.
    pub client_cert: (PathBuf, PathBuf),
}

/// A CA in `dir` with a client certificate of `system:masters`; returns
/// (CA file, client certificate, client key).
fn test_client_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "kubelab-test-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let mut client = CertificateParams::default();
    client
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    client
        .distinguished_name
        .push(DnType::CommonName, "kubelab-test");
    client.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = client
        .signed_by(&key, &Issuer::from_params(&ca, &ca_key))
        .unwrap();
    let paths = (
        dir.join("ca.crt"),
        dir.join("client.crt"),
        dir.join("client.key"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

impl TestNode {
    pub fn start() -> TestNode {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> TestNode {
        Self::start_opts(None, extra, &|_| {})
    }

    /// [`Self::start_with`], with `prepare` run on the root dir (not yet
    /// made) before the test image is imported, e.g. to mount the image
    /// store's own filesystem.
    pub fn start_prepared(extra: &[&str], prepare: &dyn Fn(&Path)) -> TestNode {
        Self::start_opts(None, extra, prepare)
    }

    /// A node whose agent runs inside network namespace `netns`. It enters only
    /// the netns (`nsenter --net`): `ip netns exec` would also mount a fresh
    /// /sys, which hides the cgroup hierarchies under /sys/fs/cgroup.
    pub fn start_in_netns(netns: &str, extra: &[&str]) -> TestNode {
        Self::start_opts(Some(netns), extra, &|_| {})
    }

    fn start_opts(netns: Option<&str>, extra: &[&str], prepare: &dyn Fn(&Path)) -> TestNode {
        let root = tempfile::Builder::new()
            .prefix("kubelab-node-")
            .tempdir()
            .unwrap();
        let manifests = root.path().join("manifests");
        std::fs::create_dir_all(&manifests).unwrap();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        prepare(&root.path().join("state"));
        let image = test_image();
        let status = Command::new(agent_bin())
            .arg("--root-dir")
            .arg(root.path().join("state"))
            .args(["image", "import"])
            .arg(&image)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "image import failed");
        let mut extra_args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let flag = |args: &[String], f: &str| args.iter().position(|a| a == f);
        // Every node serves --port (HTTPS), where logs are read, unless the
        // test chose its own.
        if flag(&extra_args, "--port").is_none() {
            extra_args.extend(["--port".to_owned(), free_port().to_string()]);
        }
        let secure_port: u16 = extra_args[flag(&extra_args, "--port").unwrap() + 1]
            .parse()
            .unwrap();
        // The host's disk is shared with builds and often nearly full: the
        // kubelet's default disk thresholds (nodefs 10%, imagefs 15%) would
        // put every test node under DiskPressure and evict its pods. Tests
        // keep the default memory threshold and a disk one only a full disk
        // crosses, unless they choose their own.
        if flag(&extra_args, "--eviction-hard").is_none() {
            extra_args.extend([
                "--eviction-hard".to_owned(),
                "memory.available<100Mi,nodefs.available<1%".to_owned(),
            ]);
        }
        let client_cert = match flag(&extra_args, "--client-ca-file") {
            Some(i) => {
                let dir = Path::new(&extra_args[i + 1]).parent().unwrap().to_owned();
                (
                    dir.join("apiserver-kubelet-client.crt"),
                    dir.join("apiserver-kubelet-client.key"),
                )
            }
            None => {
                let (ca, crt, key) = test_client_pki(&root.path().join("test-pki"));
                extra_args.extend(["--client-ca-file".to_owned(), ca.display().to_string()]);
                (crt, key)
            }
        };
        let mut node = TestNode {
            root,
            manifests,
            cgroup_root: format!("kubelab-test-{}-{n}", std::process::id()),
            port: free_port(),
            node_name: format!("node{n}"),
            agent: None,
            extra_args,
            netns: netns.map(String::from),
            secure_port,
            client_cert,
        };
        node.spawn_agent();
        node
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root.path().join("state")
    }

    pub fn spawn_agent(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.path().join("agent.log"))
            .unwrap();
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/var/run/netns/{ns}")).arg(agent_bin());
                c
            }
            None => Command::new(agent_bin()),
        };
        let child = cmd
            .arg("--root-dir")
            .arg(self.state_dir())
            .arg("--pod-manifest-path")
            .arg(&self.manifests)
            .arg("--cgroup-root")
            .arg(&self.cgroup_root)
            .arg("--hostname-override")
            .arg(&self.node_name)
            // Loopback and no --port, unless the test says otherwise.
            .args(
                (!self.has_arg("--address"))
                    .then_some(["--address", "127.0.0.1"])
                    .into_iter()
                    .flatten(),
            )
            .args(
                (!self.has_arg("--port"))
                    .then_some(["--port", "0"])
                    .into_iter()
                    .flatten(),
            )
            .args(
                (!self.has_arg("--read-only-port"))
                    .then(|| ["--read-only-port".to_owned(), self.port.to_string()])
                    .into_iter()
                    .flatten(),
            )
            .args(&self.extra_args)
            // The service proxy (on by default with --kubeconfig) writes
            // iptables rules: only ever in a namespace the test made.
            .args(
                (self.netns.is_none() && !self.extra_args.iter().any(|a| a == "--proxy-mode"))
                    .then_some(["--proxy-mode", "none"])
                    .into_iter()
                    .flatten(),
            )
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.agent = Some(child);
        if self.arg_value("--read-only-port") == Some("0") {
            // Only --port listens (HTTPS, credentials needed): up once it accepts.
            let port: u16 = self
                .arg_value("--port")
                .and_then(|p| p.parse().ok())
                .expect("--read-only-port 0 needs a --port to wait for");
            self.wait_for("the agent's --port", Duration::from_secs(20), |n| {
                n.connect_to(port).ok()
            });
            return;
        }
        self.wait_for("the agent's /healthz", Duration::from_secs(20), |n| {
            n.get("/healthz").ok().filter(|b| b == "ok")
        });
    }

    fn has_arg(&self, flag: &str) -> bool {
        self.extra_args.iter().any(|a| a == flag)
    }

    /// The value of `flag` among the extra arguments.
    pub fn arg_value(&self, flag: &str) -> Option<&str> {
        let i = self.extra_args.iter().position(|a| a == flag)?;
        self.extra_args.get(i + 1).map(String::as_str)
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("agent.log")).unwrap_or_default()
    }

    /// SIGKILL the agent (its pods and shims stay).
    pub fn kill_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn write_manifest(&self, file: &str, yaml: &str) {
        // Write then rename, as editors and kubeadm do, so the agent never reads half a file.
        let tmp = self.root.path().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, self.manifests.join(file)).unwrap();
    }

    pub fn remove_manifest(&self, file: &str) {
        std::fs::remove_file(self.manifests.join(file)).unwrap();
    }

    /// GETs `path` from the read-only port, except the logs, which only
    /// `--port` serves: those with the node's client certificate over HTTPS.
    pub fn get(&self, path: &str) -> std::io::Result<String> {
        if path.starts_with("/containerLogs/") {
            return self.get_secure(path);
        }
        let mut s = self.connect()?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
        if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
            return Err(std::io::Error::other(format!("{path}: {head}\n{body}")));
        }
        Ok(body.to_string())
    }

    /// GETs `path` from `--port` with [`Self::client_cert`] (curl, in the
    /// node's netns if it has one); only a 200 is a success.
    pub fn get_secure(&self, path: &str) -> std::io::Result<String> {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/var/run/netns/{ns}")).arg("curl");
                c
            }
            None => Command::new("curl"),
        };
        let out = cmd
            .args(["-sk", "--max-time", "10", "-w", "\n%{http_code}", "--cert"])
            .arg(&self.client_cert.0)
            .arg("--key")
            .arg(&self.client_cert.1)
            .arg(format!("https://127.0.0.1:{}{path}", self.secure_port))
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        if code != "200" {
            return Err(std::io::Error::other(format!(
                "{path}: HTTP {code}\n{body}"
            )));
        }
        Ok(body.to_owned())
    }

    /// A connection to the agent's read-only port, from inside its netns if it has one.
    fn connect(&self) -> std::io::Result<TcpStream> {
        self.connect_to(self.port)
    }

    /// A connection to `port` on the agent's loopback, from inside its netns if it has one.
    pub fn connect_to(&self, port: u16) -> std::io::Result<TcpStream> {
        let Some(ns) = &self.netns else {
            return TcpStream::connect(("127.0.0.1", port));
        };
        let path = format!("/var/run/netns/{ns}");
        // setns changes only the calling thread: a thread of its own opens the
        // socket there, and the socket stays in that namespace.
        std::thread::spawn(move || {
            let f = std::fs::File::open(path)?;
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)?;
            TcpStream::connect(("127.0.0.1", port))
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("netns thread panicked")))
    }

    pub fn get_json(&self, path: &str) -> Value {
        serde_json::from_str(&self.get(path).unwrap()).unwrap()
    }

    pub fn pods(&self) -> Vec<Value> {
        self.get_json("/pods")["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The pod named `<name>-<node>` in /pods.
    pub fn pod(&self, name: &str) -> Option<Value> {
        let full = format!("{name}-{}", self.node_name);
        self.pods()
            .into_iter()
            .find(|p| p["metadata"]["name"] == full.as_str())
    }

    pub fn container_status(&self, pod: &str, container: &str) -> Option<Value> {
        self.pod(pod)?["status"]["containerStatuses"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == container)
            .cloned()
    }

    /// Polls `check` until it yields a value, or fails the test naming `what`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Self) -> Option<T>,
    ) -> T {
        poll_until(
            what,
            timeout,
            Duration::from_millis(100),
            || {
                format!(
                    "/pods: {}\nagent log (tail):\n{}",
                    self.get("/pods").unwrap_or_default(),
                    tail(&self.agent_log(), 40)
                )
            },
            || check(self),
        )
    }

    pub fn wait_running(&self, pod: &str) -> Value {
        self.wait_for(
            &format!("pod {pod} Running"),
            Duration::from_secs(30),
            |n| {
                let p = n.pod(pod)?;
                let running = p["status"]["containerStatuses"]
                    .as_array()?
                    .iter()
                    .all(|c| c["state"]["running"].is_object());
                (p["status"]["phase"] == "Running" && running).then_some(p)
            },
        )
    }

    /// Absolute cgroup dirs of this node's root in each v1 controller (or the v2 dir).
    pub fn cgroup_root_dirs(&self) -> Vec<PathBuf> {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let mut dirs = Vec::new();
        for line in own.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, ctrls, path) = (
                parts.next(),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            for ctrl in ["cpu", "memory", "pids", "cpuacct", "devices"] {
                if ctrls.split(',').any(|c| c == ctrl) {
                    let mount = PathBuf::from("/sys/fs/cgroup").join(ctrls);
                    let dir = mount
                        .join(path.trim_start_matches('/'))
                        .join(&self.cgroup_root);
                    if !dirs.contains(&dir) {
                        dirs.push(dir);
                    }
                }
            }
        }
        dirs
    }

    /// Every cgroup directory below this node's root.
    pub fn cgroup_dirs_below_root(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for root in self.cgroup_root_dirs() {
            walk_dirs(&root, &mut out);
        }
        out
    }

    /// Pids of every process in this node's cgroups.
    pub fn processes_in_cgroups(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for dir in self.cgroup_dirs_below_root() {
            if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.parse::<i32>().ok()));
            }
        }
        pids.sort();
        pids.dedup();
        pids
    }

    /// Mount points under this node's temp dir.
    pub fn mounts_below_root(&self) -> Vec<String> {
        let root = self.root.path().to_string_lossy().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(String::from))
            .filter(|m| m.starts_with(&root))
            .collect()
    }

    fn teardown(&mut self) {
        for entry in std::fs::read_dir(&self.manifests)
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_file(entry.path());
        }
        if self.agent.is_some() {
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                match self.get("/pods") {
                    Ok(body)
                        if !body.contains("\"metadata\":{\"") || body.contains("\"items\":[]") =>
                    {
                        break;
                    }
                    Err(_) => break,
                    _ => std::thread::sleep(Duration::from_millis(100)),
                }
            }
            if let Some(c) = &self.agent {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            if let Some(mut c) = self.agent.take() {
                let _ = c.wait();
            }
        }
        // Whatever is left (a failed test): kill its processes, remove its cgroups and mounts.
        for pid in self.processes_in_cgroups() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut dirs = self.cgroup_dirs_below_root();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(&d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let mut mounts = self.mounts_below_root();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn walk_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    out.push(dir.to_path_buf());
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk_dirs(&e.path(), out);
        }
    }
}

/// Polls `check` every `every` until it yields a value; after `timeout`
/// fails the test naming `what`, followed by `diag()` (logs, state).
pub fn poll_until<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    diag: impl FnOnce() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}\n{}", diag());
        }
        std::thread::sleep(every);
    }
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
