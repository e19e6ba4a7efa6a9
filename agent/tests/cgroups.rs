//! The cgroup driver on this host, for real: pod and container cgroups nested
//! under the test process's own cgroups (a relative `--cgroup-root` unique per
//! test), CFS throttling measured from the cgroup's own counters, an OOM kill at
//! the memory limit, and removal that leaves nothing behind. Needs root.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PodSpec;
use kubelab_agent::cgroups::{CgroupDriver, CgroupLimits, CgroupPath, QosClass};
use serde_json::json;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A cgroup subtree of the test's own and the processes started in it; dropping
/// it kills them and removes every directory it made, even when the test failed.
struct Fixture {
    driver: CgroupDriver,
    children: Vec<Child>,
}

impl Fixture {
    /// `None` (the test is skipped) when not running as root.
    fn new(test: &str) -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping {test}: cgroup tests need root");
            return None;
        }
        let root = format!(
            "kubelab-test-{test}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let driver = CgroupDriver::detect(&root).expect("detect cgroups");
        Some(Fixture {
            driver,
            children: Vec::new(),
        })
    }

    /// Creates the pod cgroup and one container cgroup for `spec` (the first container).
    fn pod(&self, spec: &PodSpec) -> (CgroupPath, CgroupPath) {
        let uid = format!(
            "{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let qos = QosClass::from_pod(spec).unwrap();
        let pod = self.driver.pod_path(qos, &uid);
        self.driver
            .create(&pod, &CgroupLimits::for_pod(spec, Some(64)).unwrap())
            .unwrap();
        let container = self.driver.container_path(&pod, "c0");
        self.driver
            .create(
                &container,
                &CgroupLimits::for_container(&spec.containers[0]).unwrap(),
            )
            .unwrap();
        (pod, container)
    }

    /// Runs `sh -c script` inside `path`: the child moves itself there between fork
    /// and exec (writing "0" to each cgroup.procs), so it never runs outside it.
    fn spawn_in(&mut self, path: &CgroupPath, script: &str) -> u32 {
        let files: Vec<CString> = self
            .driver
            .procs_files(path)
            .iter()
            .map(|p| CString::new(p.as_os_str().as_bytes()).unwrap())
            .collect();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (open/write/close) on memory prepared
        // before the fork.
        unsafe {
            cmd.pre_exec(move || {
                for f in &files {
                    let fd = libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                    if n != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn sh");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    fn wait(&mut self, pid: u32, timeout: Duration) -> ExitStatus {
        let child = self
            .children
            .iter_mut()
            .find(|c| c.id() == pid)
            .expect("our child");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process {pid} still running after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn read(&self, path: &CgroupPath, file: &str) -> String {
        let dir = self
            .driver
            .dirs(path)
            .into_iter()
            .find(|d| d.join(file).exists())
            .unwrap_or_else(|| panic!("no {file} for {path}"));
        std::fs::read_to_string(dir.join(file))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Tears everything down and returns what is left of the root directories.
    fn finish(mut self) -> Vec<PathBuf> {
        let roots = self.driver.root_dirs();
        self.cleanup();
        roots.into_iter().filter(|d| d.exists()).collect()
    }

    fn cleanup(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
        let kubepods = CgroupPath::new("kubepods").unwrap();
        if let Err(e) = self.driver.kill_all(&kubepods) {
            eprintln!("cleanup: {e}");
        }
        if let Err(e) = self.driver.remove_root() {
            eprintln!("cleanup: {e}");
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn spec(limits: serde_json::Value) -> PodSpec {
    serde_json::from_value(json!({"containers": [{"name": "c", "resources": {"limits": limits}}]}))
        .unwrap()
}

#[test]
fn cpu_limit_throttles_a_busy_loop_to_200m() {
    let Some(mut fx) = Fixture::new("cpu") else {
        return;
    };
    assert_eq!(
        fx.driver.version(),
        kubelab_agent::cgroups::CgroupVersion::V1,
        "this host is cgroup v1"
    );
    let spec = spec(json!({"cpu": "200m", "memory": "64Mi"}));
    let (pod, container) = fx.pod(&spec);
    assert!(
        pod.as_str().starts_with("kubepods/pod"),
        "Guaranteed pods sit directly under kubepods: {pod}"
    );

    assert_eq!(fx.read(&container, "cpu.cfs_quota_us"), "20000");
    assert_eq!(fx.read(&container, "cpu.cfs_period_us"), "100000");
    assert_eq!(fx.read(&container, "cpu.shares"), "204");
    assert_eq!(fx.read(&container, "memory.limit_in_bytes"), "67108864");
    assert_eq!(fx.read(&pod, "cpu.cfs_quota_us"), "20000");
    assert_eq!(fx.read(&pod, "pids.max"), "64");
    assert_eq!(fx.read(&container, "pids.max"), "max");

    let pid = fx.spawn_in(&container, "while :; do :; done");
    assert_eq!(fx.driver.pids(&pod).unwrap(), vec![pid as i32]);
    std::thread::sleep(Duration::from_millis(300));

    let (t0, s0) = (Instant::now(), fx.driver.stats(&container).unwrap());
    std::thread::sleep(Duration::from_secs(3));
    let (t1, s1) = (Instant::now(), fx.driver.stats(&container).unwrap());
    let cores = (s1.cpu_usage_ns - s0.cpu_usage_ns) as f64 / (t1 - t0).as_nanos() as f64;
    eprintln!(
        "busy loop under a 200m limit: {cores:.3} cores, {} of {} periods throttled",
        s1.nr_throttled, s1.nr_periods
    );
    assert!(
        (0.17..=0.23).contains(&cores),
        "usage {cores:.3} cores, want 0.2 ± 15%"
    );
    assert!(s1.nr_throttled > 0, "throttled periods: {s1:?}");
    assert!(
        s1.nr_periods >= s1.nr_throttled && s1.throttled_time_ns > 0,
        "{s1:?}"
    );
    assert_eq!(s1.memory_limit_bytes, Some(64 << 20));
    assert_eq!(s1.pids_current, 1);
    assert_eq!(s1.oom_kills, 0);
    let pod_stats = fx.driver.stats(&pod).unwrap();
    assert!(
        pod_stats.cpu_usage_ns >= s1.cpu_usage_ns,
        "the pod's usage includes its container's"
    );

    let pods = fx.driver.list_pod_cgroups().unwrap();
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].0, pod);
    assert!(pod.as_str().ends_with(&pods[0].1));

    fx.driver.kill_all(&pod).unwrap();
    let status = fx.wait(pid, Duration::from_secs(5));
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert!(fx.driver.pids(&pod).unwrap().is_empty());

    fx.driver.remove(&pod).unwrap();
    assert!(!fx.driver.exists(&pod) && !fx.driver.exists(&container));
    fx.driver.remove(&pod).unwrap(); // idempotent
    assert_eq!(
        fx.finish(),
        Vec::<PathBuf>::new(),
        "cgroup directories left behind"
    );
}

#[test]
fn memory_limit_oom_kills_the_process() {
    let Some(mut fx) = Fixture::new("oom") else {
        return;
    };
    let spec = spec(json!({"memory": "32Mi"}));
    let (pod, container) = fx.pod(&spec);
    assert!(pod.as_str().starts_with("kubepods/burstable/pod"), "{pod}");
    assert_eq!(fx.read(&container, "memory.limit_in_bytes"), "33554432");
    assert_eq!(fx.read(&pod, "memory.limit_in_bytes"), "33554432");
    assert_eq!(fx.read(&container, "cpu.cfs_quota_us"), "-1");

    // dd's 96 MiB buffer, filled from /dev/zero, is charged to the cgroup page by page.
    let pid = fx.spawn_in(
        &container,
        "exec dd if=/dev/zero of=/dev/null bs=96M count=1",
    );
    let status = fx.wait(pid, Duration::from_secs(30));
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert!(fx.driver.oom_kill_count(&container).unwrap() >= 1);
    assert!(
        fx.driver.oom_kill_count(&pod).unwrap() >= 1,
        "the pod counts its containers' OOM kills"
    );
    let stats = fx.driver.stats(&container).unwrap();
    assert!(stats.oom_kills >= 1, "{stats:?}");
    assert_eq!(stats.memory_limit_bytes, Some(32 << 20));

    assert_eq!(
        fx.finish(),
        Vec::<PathBuf>::new(),
        "cgroup directories left behind"
    );
}

#[test]
fn create_updates_limits_and_kill_all_catches_every_process() {
    let Some(mut fx) = Fixture::new("update") else {
        return;
    };
    let spec = spec(json!({"cpu": "1", "memory": "128Mi"}));
    let (pod, container) = fx.pod(&spec);

    // Idempotent create updates the values in place.
    let mut limits = CgroupLimits::for_container(&spec.containers[0]).unwrap();
    limits.cpu_quota_us = Some(50_000);
    limits.memory_limit_bytes = None;
    fx.driver.create(&container, &limits).unwrap();
    assert_eq!(fx.read(&container, "cpu.cfs_quota_us"), "50000");
    assert_eq!(
        fx.read(&container, "memory.limit_in_bytes"),
        "9223372036854771712"
    );

    // A shell with background children: every one of them dies.
    let pid = fx.spawn_in(
        &container,
        "sleep 100 & sleep 100 & sh -c 'sleep 100' & wait",
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while fx.driver.pids(&pod).unwrap().len() < 4 {
        assert!(
            Instant::now() < deadline,
            "children didn't start: {:?}",
            fx.driver.pids(&pod)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let running = fx.driver.pids(&pod).unwrap().len() as u64;
    assert_eq!(fx.driver.stats(&pod).unwrap().pids_current, running);
    fx.driver.kill_all(&pod).unwrap();
    assert_eq!(
        fx.wait(pid, Duration::from_secs(5)).signal(),
        Some(libc::SIGKILL)
    );
    assert!(fx.driver.pids(&pod).unwrap().is_empty());

    let roots = fx.driver.root_dirs();
    assert!(roots.iter().all(|d| d.is_dir()));
    drop(fx); // the fixture's own cleanup removes everything
    let left: Vec<_> = roots.into_iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The cgroup v2 device program, for real: this host mounts a cgroup2
/// hierarchy beside its v1 controllers, and the kernel asks a
/// `BPF_CGROUP_DEVICE` program attached there on every device open. A child
/// in a cgroup with runc's default allow-list opens /dev/null but not a kmsg
/// or disk node it could make with CAP_MKNOD.
#[test]
fn v2_device_program_allows_the_default_devices_only() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let Some(mount) = mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let point = pre.split(' ').nth(4)?;
        (post.split(' ').next() == Some("cgroup2")).then(|| PathBuf::from(point))
    }) else {
        eprintln!("skipped: no cgroup2 mount");
        return;
    };
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_string();
    let dir = mount
        .join(own)
        .join(format!("kubelab-devices-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    struct RemoveOnDrop(PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _guard = RemoveOnDrop(dir.clone());
    use kubelab_agent::cgroups::devices;
    devices::attach(&dir, &devices::default_rules()).unwrap();

    let nodes = tempfile::tempdir().unwrap();
    let mk = |name: &str, kind: nix::sys::stat::SFlag, major: u64, minor: u64| {
        nix::sys::stat::mknod(
            &nodes.path().join(name),
            kind,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(major, minor),
        )
        .unwrap();
    };
    mk("kmsg", nix::sys::stat::SFlag::S_IFCHR, 1, 11);
    mk("sda", nix::sys::stat::SFlag::S_IFBLK, 8, 0);
    mk("null", nix::sys::stat::SFlag::S_IFCHR, 1, 3);
    let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).unwrap();
    let script = r#"for f in /dev/null "$0/null" "$0/kmsg" "$0/sda"; do
        (exec 3<"$f") 2>/dev/null && echo "$f open" || echo "$f denied"; done
        mknod "$0/made" b 8 0 && echo mknod=ok || echo mknod=denied"#;
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).arg(nodes.path());
    // SAFETY: only open/write/close between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).replace(&nodes.path().display().to_string(), "T");
    assert_eq!(
        text,
        "/dev/null open\nT/null open\nT/kmsg denied\nT/sda denied\nmknod=ok\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
