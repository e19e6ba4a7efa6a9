//! One cgroup driver over cgroup v1 and v2, and the QoS maths.
//!
//! Layout (the kubelet's `cgroupfs` driver):
//!
//! ```text
//! <cgroup-root>/kubepods/pod<uid>/<container-id>              Guaranteed
//! <cgroup-root>/kubepods/burstable/pod<uid>/<container-id>
//! <cgroup-root>/kubepods/besteffort/pod<uid>/<container-id>
//! ```
//!
//! `--cgroup-root`: an absolute path (`/kubelab`) is that path in every hierarchy,
//! as for the kubelet. A relative path (`kubelab-test-1`) is resolved under the
//! agent's own cgroup in each hierarchy (from `/proc/self/cgroup`); on a v1 host the
//! agent's memory cgroup can differ from its cpu cgroup, and this is how tests nest
//! their cgroups under their own.
//!
//! The version is chosen from `/proc/self/mountinfo`: v2 only if `/sys/fs/cgroup`
//! itself is a cgroup2 mount. On a hybrid host (v1 controllers plus an empty
//! cgroup2 at `/sys/fs/cgroup/unified`) the driver is v1, and uses only the `cpu`,
//! `cpuacct`, `memory` and `pids` hierarchies: not `cpuset` (a new cpuset cgroup
//! refuses tasks until `cpuset.cpus`/`cpuset.mems` are copied in), not
//! `name=systemd`.
//!
//! On v2 the no-internal-process rule applies: a cgroup that has controllers
//! enabled for its children can't hold processes itself. So processes go only into
//! leaf (container) cgroups, and with a relative root the agent's own cgroup must
//! already delegate `cpu memory pids` in its `cgroup.subtree_control`; the driver
//! never writes to a cgroup it didn't create (except enabling controllers in the
//! hierarchy's root cgroup for an absolute root), and says so in the error.
//!
//! All of it is plain synchronous std code: it runs in the agent (via
//! `spawn_blocking`) and in single-threaded helper processes alike.

pub mod devices;
pub mod memory_qos;
pub mod node_config;
pub mod pressure;
mod qos;
pub mod swap;
mod v1;
mod v2;

pub use node_config::{CgroupFeatures, NodeCgroupConfig, NodeMemory};
pub use qos::{
    CPU_PERIOD_US, CgroupLimits, MAX_SHARES, MIN_QUOTA_US, MIN_SHARES, QosClass, ResourceError,
    milli_cpu_to_quota, milli_cpu_to_shares, qos_cgroup_dir, shares_to_weight,
};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The cgroup under the root that holds every pod.
pub const KUBEPODS: &str = "kubepods";

/// How long `kill_all` waits for a cgroup to empty after SIGKILL.
const KILL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup: {op} {path}: {source}")]
    Io {
        op: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cgroup: {op} {path}: {source}")]
    Controller {
        op: String,
        path: PathBuf,
        #[source]
        source: cgroups_rs::fs::error::Error,
    },
    #[error("cgroup: reading {path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("cgroup detection: {0}")]
    Detect(String),
    #[error("invalid cgroup path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("cgroup v2: controllers {missing:?} are not available to children of {path}: {reason}")]
    Delegation {
        path: PathBuf,
        missing: Vec<String>,
        reason: String,
    },
    #[error("cgroup: {op} {path}: processes {pids:?} still present after {waited:?}")]
    StillPopulated {
        op: String,
        path: PathBuf,
        pids: Vec<i32>,
        waited: Duration,
    },
}

type Result<T, E = CgroupError> = std::result::Result<T, E>;

fn io_err(op: impl Into<String>, path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    let op = op.into();
    move |source| CgroupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn ctl_err(
    op: impl Into<String>,
    path: &Path,
) -> impl FnOnce(cgroups_rs::fs::error::Error) -> CgroupError + '_ {
    let op = op.into();
    move |source| CgroupError::Controller {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// A cgroup's logical path under the cgroup root, e.g.
/// `kubepods/burstable/pod<uid>/<container-id>`: the same in every hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CgroupPath(String);

impl CgroupPath {
    /// A relative path of plain components (no `..`, `.`, empty parts or NUL).
    pub fn new(path: impl Into<String>) -> Result<Self> {
        let path = CgroupPath(path.into());
        path.validate()?;
        Ok(path)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    pub fn join(&self, name: &str) -> CgroupPath {
        CgroupPath(format!("{}/{name}", self.0))
    }

    pub fn parent(&self) -> Option<CgroupPath> {
        self.0
            .rsplit_once('/')
            .map(|(p, _)| CgroupPath(p.to_string()))
    }

    fn validate(&self) -> Result<()> {
        let invalid = |reason: &str| CgroupError::InvalidPath {
            path: self.0.clone(),
            reason: reason.into(),
        };
        if self.0.is_empty() {
            return Err(invalid("it is empty"));
        }
        if self.0.starts_with('/') {
            return Err(invalid("it must be relative to the cgroup root"));
        }
        for c in self.components() {
            if c.is_empty() || c == "." || c == ".." || c.contains('\0') || c.len() > 255 {
                return Err(invalid(
                    "each component must be a plain, non-empty file name",
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Display for CgroupPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Usage and limits of one cgroup (and its descendants), as cadvisor reports them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupStats {
    pub cpu_usage_ns: u64,
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_time_ns: u64,
    pub memory_usage_bytes: u64,
    /// Usage minus inactive file pages (cadvisor's working set).
    pub memory_working_set_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    pub oom_kills: u64,
    pub pids_current: u64,
    /// Pressure stall information (cgroup v2 only; `None` on v1).
    pub pressure: Option<pressure::Pressure>,
}

/// cadvisor's working set: usage minus inactive file cache, never below zero.
pub fn working_set(usage: u64, inactive_file: u64) -> u64 {
    usage.saturating_sub(inactive_file)
}

/// Where the cgroup root lies in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RootLocation {
    /// An existing directory that is not ours: the hierarchy's mount point (absolute
    /// `--cgroup-root`) or the agent's own cgroup in it (relative).
    base: PathBuf,
    /// The `--cgroup-root` components below `base` (empty for `/`).
    components: Vec<String>,
}

/// One directory on the way from `base` down to a cgroup.
struct Level {
    dir: PathBuf,
    /// The logical path for levels under the root; `None` for the root's own parts.
    logical: Option<String>,
}

impl RootLocation {
    /// `linux.cgroupsPath` for `path` as runc resolves it. On v1 a relative
    /// path is joined to the runtime's own cgroup in each hierarchy, as a
    /// relative `--cgroup-root` is to the agent's (a runtime started by the
    /// agent's shim is in the same cgroups); on v2 runc joins a relative
    /// path to the parent of its own cgroup, so the path there is absolute,
    /// from `mount_point`.
    fn oci_path(&self, path: &CgroupPath, relative_v1: bool, mount_point: Option<&Path>) -> String {
        let below_root = self
            .components
            .iter()
            .map(String::as_str)
            .chain(path.components())
            .collect::<Vec<_>>()
            .join("/");
        let above_root = match mount_point {
            Some(mount) => self
                .base
                .strip_prefix(mount)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            None if relative_v1 => return below_root,
            None => String::new(),
        };
        if above_root.is_empty() {
            format!("/{below_root}")
        } else {
            format!("/{above_root}/{below_root}")
        }
    }

    fn root_dir(&self) -> PathBuf {
        let mut dir = self.base.clone();
        dir.extend(&self.components);
        dir
    }

    fn dir(&self, path: &CgroupPath) -> PathBuf {
        let mut dir = self.root_dir();
        dir.extend(path.components());
        dir
    }

    /// Every directory below `base` down to `path`, outermost first.
    fn levels(&self, path: &CgroupPath) -> Vec<Level> {
        let mut out = Vec::new();
        let mut dir = self.base.clone();
        for c in &self.components {
            dir.push(c);
            out.push(Level {
                dir: dir.clone(),
                logical: None,
            });
        }
        let mut logical = String::new();
        for c in path.components() {
            dir.push(c);
            if !logical.is_empty() {
                logical.push('/');
            }
            logical.push_str(c);
            out.push(Level {
                dir: dir.clone(),
                logical: Some(logical.clone()),
            });
        }
        out
    }
}

/// Root-level directories this driver created, so `remove_root` takes away only those.
#[derive(Debug, Default)]
struct CreatedRoots(Mutex<Vec<PathBuf>>);

impl CreatedRoots {
    fn record(&self, dir: &Path) {
        let mut dirs = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !dirs.iter().any(|d| d == dir) {
            dirs.push(dir.to_path_buf());
        }
    }

    fn contains(&self, dir: &Path) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|d| d == dir)
    }

    fn take(&self) -> Vec<PathBuf> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// What differs between v1 and v2.
trait Backend: fmt::Debug + Send + Sync {
    fn version(&self) -> CgroupVersion;
    /// The directory of `path` in every hierarchy (one on v2).
    fn dirs(&self, path: &CgroupPath) -> Vec<PathBuf>;
    fn root_dirs(&self) -> Vec<PathBuf>;
    fn create(
        &self,
        path: &CgroupPath,
        limits: &CgroupLimits,
        created: &CreatedRoots,
    ) -> Result<()>;
    /// SIGKILLs the whole subtree in one step if the kernel can (v2 `cgroup.kill`);
    /// `Ok(false)` if it can't.
    fn kill_at_once(&self, path: &CgroupPath) -> Result<bool>;
    fn oom_kill_count(&self, path: &CgroupPath) -> Result<u64>;
    fn stats(&self, path: &CgroupPath) -> Result<CgroupStats>;
    /// Limits the cgroup to the devices a container may use (see
    /// [`CgroupDriver::restrict_devices`]).
    fn restrict_devices(&self, _path: &CgroupPath) -> Result<()> {
        Ok(())
    }
    /// `linux.cgroupsPath` naming `path` for an OCI runtime (see
    /// [`CgroupDriver::oci_cgroups_path`]).
    fn oci_cgroups_path(&self, path: &CgroupPath) -> String;
}

/// The cgroup driver: creates, fills, measures and removes pod and container cgroups.
#[derive(Debug, Clone)]
pub struct CgroupDriver {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    backend: Box<dyn Backend>,
    created: CreatedRoots,
}

impl CgroupDriver {
    /// Chooses v1 or v2 from this process's mounts and resolves `cgroup_root`
    /// (absolute: the same path in every hierarchy; relative: under this process's
    /// own cgroup). Creates nothing.
    pub fn detect(cgroup_root: &str) -> Result<Self> {
        let read = |p: &str| fs::read_to_string(p).map_err(io_err("read", Path::new(p)));
        let mountinfo = read("/proc/self/mountinfo")?;
        let own = read("/proc/self/cgroup")?;
        Self::from_system(&mountinfo, &own, cgroup_root)
    }

    fn from_system(mountinfo: &str, proc_self_cgroup: &str, cgroup_root: &str) -> Result<Self> {
        let backend: Box<dyn Backend> = match plan(mountinfo, proc_self_cgroup, cgroup_root)? {
            Plan::V1(hierarchies) => {
                Box::new(v1::V1::new(hierarchies, !cgroup_root.starts_with('/')))
            }
            Plan::V2 {
                mount_point,
                root,
                relative,
            } => Box::new(v2::V2::new(mount_point, root, relative)),
        };
        Ok(CgroupDriver {
            inner: Arc::new(Inner {
                backend,
                created: CreatedRoots::default(),
            }),
        })
    }

    pub fn version(&self) -> CgroupVersion {
        self.inner.backend.version()
    }

    /// Whether the cgroup v2 swap controller is there: `memory.swap.max` in
    /// this process's own cgroup (the kubelet's check; the root has none).
    /// Always false on v1, where the agent allows no swap.
    pub fn has_swap_controller(&self) -> bool {
        if self.version() != CgroupVersion::V2 {
            return false;
        }
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        parse_proc_cgroup(&own)
            .into_iter()
            .find(|(ctrls, _)| ctrls.is_empty())
            .is_some_and(|(_, path)| {
                Path::new(CGROUP_MOUNT)
                    .join(path.trim_start_matches('/'))
                    .join("memory.swap.max")
                    .exists()
            })
    }

    /// `kubepods/pod<uid>` (Guaranteed) or `kubepods/<qos>/pod<uid>`.
    pub fn pod_path(&self, qos: QosClass, pod_uid: &str) -> CgroupPath {
        match qos_cgroup_dir(qos) {
            None => CgroupPath(format!("{KUBEPODS}/pod{pod_uid}")),
            Some(q) => CgroupPath(format!("{KUBEPODS}/{q}/pod{pod_uid}")),
        }
    }

    pub fn container_path(&self, pod: &CgroupPath, container_id: &str) -> CgroupPath {
        pod.join(container_id)
    }

    /// The directory of `path` in every hierarchy (one on v2).
    pub fn dirs(&self, path: &CgroupPath) -> Vec<PathBuf> {
        self.inner.backend.dirs(path)
    }

    /// The resolved `--cgroup-root` in every hierarchy.
    pub fn root_dirs(&self) -> Vec<PathBuf> {
        self.inner.backend.root_dirs()
    }

    pub fn exists(&self, path: &CgroupPath) -> bool {
        self.dirs(path).iter().any(|d| d.is_dir())
    }

    /// Creates `path` and any missing parents (the root, `kubepods`, the QoS
    /// cgroup) and writes `limits` to it. Idempotent: on an existing cgroup it
    /// updates the limits.
    pub fn create(&self, path: &CgroupPath, limits: &CgroupLimits) -> Result<()> {
        path.validate()?;
        self.inner.backend.create(path, limits, &self.inner.created)
    }

    /// The `linux.cgroupsPath` an OCI runtime (runc's cgroupfs driver) needs
    /// to put a container in `path`, the very directories [`Self::dirs`] names.
    pub fn oci_cgroups_path(&self, path: &CgroupPath) -> String {
        self.inner.backend.oci_cgroups_path(path)
    }

    /// Every `cgroup.procs` a new process must be written to (one per hierarchy on
    /// v1). A process can move itself by writing `0` to each, e.g. between fork
    /// and exec.
    pub fn procs_files(&self, path: &CgroupPath) -> Vec<PathBuf> {
        self.dirs(path)
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    pub fn add_process(&self, path: &CgroupPath, pid: i32) -> Result<()> {
        path.validate()?;
        for file in self.procs_files(path) {
            write_existing(&file, &pid.to_string())
                .map_err(io_err(format!("add process {pid} to"), &file))?;
        }
        Ok(())
    }

    /// Processes in `path` and its descendants, sorted; empty if it doesn't exist.
    pub fn pids(&self, path: &CgroupPath) -> Result<Vec<i32>> {
        path.validate()?;
        let mut pids = BTreeSet::new();
        for dir in self.dirs(path) {
            collect_pids(&dir, &mut pids)?;
        }
        Ok(pids.into_iter().collect())
    }

    /// SIGKILLs every process in `path` and its descendants (`cgroup.kill` where
    /// the kernel has it, else a kill loop that also catches forks), then waits
    /// briefly for the cgroup to empty.
    /// Lets the cgroup's processes create any device node but open only the
    /// container runtimes' default set (null, zero, full, random, urandom, tty,
    /// console, ptmx, pts, tun), as runc does for a non-privileged container:
    /// with CAP_MKNOD a process could otherwise make and open the node's disks.
    /// On v1 the `devices` controller does it; on v2 it takes an eBPF program,
    /// which this driver does not load yet (a no-op there).
    pub fn restrict_devices(&self, path: &CgroupPath) -> Result<()> {
        path.validate()?;
        self.inner.backend.restrict_devices(path)
    }

    pub fn kill_all(&self, path: &CgroupPath) -> Result<()> {
        path.validate()?;
        let at_once = self.inner.backend.kill_at_once(path)?;
        let start = Instant::now();
        loop {
            let pids = self.pids(path)?;
            if pids.is_empty() {
                return Ok(());
            }
            if start.elapsed() > KILL_TIMEOUT {
                return Err(CgroupError::StillPopulated {
                    op: "kill".into(),
                    path: self.dirs(path).into_iter().next().unwrap_or_default(),
                    pids,
                    waited: KILL_TIMEOUT,
                });
            }
            if !at_once {
                for pid in pids {
                    // ESRCH: it exited meanwhile.
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::SIGKILL,
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How many processes the kernel OOM-killed in `path` and its descendants.
    pub fn oom_kill_count(&self, path: &CgroupPath) -> Result<u64> {
        path.validate()?;
        self.inner.backend.oom_kill_count(path)
    }

    pub fn stats(&self, path: &CgroupPath) -> Result<CgroupStats> {
        path.validate()?;
        self.inner.backend.stats(path)
    }

    /// Removes `path` and its descendants (children first) in every hierarchy.
    /// Idempotent; retries briefly while the kernel still reports it busy.
    pub fn remove(&self, path: &CgroupPath) -> Result<()> {
        path.validate()?;
        for dir in self.dirs(path) {
            remove_tree(&dir)?;
        }
        Ok(())
    }

    /// Removes the whole `kubepods` tree and the root directories this driver created.
    pub fn remove_root(&self) -> Result<()> {
        self.remove(&CgroupPath(KUBEPODS.into()))?;
        let mut created = self.inner.created.take();
        // Deepest first.
        created.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        let mut first_err = None;
        for dir in created {
            if let Err(e) = rmdir_retrying(&dir) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The names of `path`'s child cgroups in any hierarchy (a pod's:
    /// its sandbox and container ids). Empty if it does not exist.
    pub fn children(&self, path: &CgroupPath) -> BTreeSet<String> {
        self.dirs(path)
            .iter()
            .filter_map(|d| fs::read_dir(d).ok())
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Every `pod<uid>` cgroup under `kubepods`, for cleaning up orphans after a restart.
    pub fn list_pod_cgroups(&self) -> Result<Vec<(CgroupPath, String)>> {
        let mut found = BTreeMap::new();
        for qos in [None, Some("burstable"), Some("besteffort")] {
            let parent = match qos {
                None => CgroupPath(KUBEPODS.into()),
                Some(q) => CgroupPath(format!("{KUBEPODS}/{q}")),
            };
            for dir in self.dirs(&parent) {
                let entries = match fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err("list", &dir)(e)),
                };
                for entry in entries {
                    let entry = entry.map_err(io_err("list", &dir))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let Some(uid) = name.strip_prefix("pod") else {
                        continue;
                    };
                    if uid.is_empty() || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                        continue;
                    }
                    found.insert(parent.join(&name), uid.to_string());
                }
            }
        }
        Ok(found.into_iter().collect())
    }
}

// ---- file helpers shared by both backends ----

fn read_file(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(io_err("read", path))
}

fn read_u64(path: &Path) -> Result<u64> {
    let s = read_file(path)?;
    s.trim().parse().map_err(|_| CgroupError::Parse {
        path: path.into(),
        detail: format!("expected an integer, got {:?}", s.trim()),
    })
}

/// A flat-keyed file (`key value` lines: `cpu.stat`, `memory.stat`,
/// `memory.events`, v1 `memory.oom_control`). Lines that aren't `key <u64>` are
/// skipped, so new kernel fields can't break the parse.
pub(crate) fn parse_flat_keyed(content: &str) -> BTreeMap<&str, u64> {
    content
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (k, v, rest) = (it.next()?, it.next()?, it.next());
            if rest.is_some() {
                return None;
            }
            Some((k, v.parse().ok()?))
        })
        .collect()
}

fn read_flat_keyed(path: &Path) -> Result<BTreeMap<String, u64>> {
    let s = read_file(path)?;
    Ok(parse_flat_keyed(&s)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect())
}

/// Writes an existing cgroup file. (`fs::write` would try `O_CREAT`, which cgroupfs
/// answers with EACCES for a file the kernel doesn't provide.)
fn write_existing(path: &Path, content: &str) -> io::Result<()> {
    use std::io::Write;
    fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(content.as_bytes())
}

/// Sets a CFS quota together with its burst file (`cpu.max.burst` on v2,
/// `cpu.cfs_burst_us` on v1, both from Linux 5.14). The kernel keeps the burst
/// within the quota, so the burst is cleared before the quota changes and set
/// after it; a burst asked for where the kernel has no such file is an error.
fn set_quota_with_burst(
    dir: &Path,
    burst_file: &str,
    burst_us: Option<u64>,
    set_quota: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let file = dir.join(burst_file);
    let has_burst = file.exists();
    if has_burst {
        write_existing(&file, "0").map_err(io_err("write 0 to", &file))?;
    }
    set_quota()?;
    if let Some(burst) = burst_us.filter(|b| *b > 0) {
        if !has_burst {
            return Err(CgroupError::Io {
                op: format!("set {burst_file} (Linux 5.14 or later) in"),
                path: dir.to_path_buf(),
                source: io::Error::from(io::ErrorKind::NotFound),
            });
        }
        let value = burst.to_string();
        write_existing(&file, &value).map_err(io_err(format!("write {value} to"), &file))?;
    }
    Ok(())
}

fn mkdir(dir: &Path) -> Result<bool> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_err("mkdir", dir)(e)),
    }
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list", dir))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(entry.path());
        }
    }
    Ok(out)
}

fn collect_pids(dir: &Path, pids: &mut BTreeSet<i32>) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    let content = match fs::read_to_string(&procs) {
        Ok(c) => c,
        // Gone (or removed while we walked): nothing in it.
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV) => {
            return Ok(());
        }
        Err(e) => return Err(io_err("read", &procs)(e)),
    };
    for line in content.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let pid = line.parse().map_err(|_| CgroupError::Parse {
            path: procs.clone(),
            detail: format!("expected a pid, got {line:?}"),
        })?;
        pids.insert(pid);
    }
    for sub in subdirs(dir)? {
        collect_pids(&sub, pids)?;
    }
    Ok(())
}

fn remove_tree(dir: &Path) -> Result<()> {
    for sub in subdirs(dir)? {
        remove_tree(&sub)?;
    }
    rmdir_retrying(dir)
}

/// `rmdir`, retried for a moment on EBUSY: the kernel lets go of a cgroup only
/// after its last task has fully exited.
fn rmdir_retrying(dir: &Path) -> Result<()> {
    let mut delay = Duration::from_millis(10);
    let mut attempt = 0;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 8 => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(200));
                attempt += 1;
            }
            Err(e) => return Err(io_err("rmdir", dir)(e)),
        }
    }
}

// ---- detection (pure, from the text of /proc/self/{mountinfo,cgroup}) ----

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    root: String,
    mount_point: PathBuf,
    fs_type: String,
    super_options: Vec<String>,
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_mountinfo(content: &str) -> Vec<Mount> {
    content
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split_whitespace().collect();
            let right: Vec<&str> = right.split_whitespace().collect();
            if left.len() < 5 || right.len() < 3 {
                return None;
            }
            Some(Mount {
                root: unescape_octal(left[3]),
                mount_point: PathBuf::from(unescape_octal(left[4])),
                fs_type: right[0].to_string(),
                super_options: right[2].split(',').map(String::from).collect(),
            })
        })
        .collect()
}

/// `/proc/self/cgroup` lines: (controllers, path); v2's `0::/path` has no controllers.
fn parse_proc_cgroup(content: &str) -> Vec<(Vec<String>, String)> {
    content
        .lines()
        .filter_map(|line| {
            let mut it = line.splitn(3, ':');
            let (_id, ctrls, path) = (it.next()?, it.next()?, it.next()?);
            let ctrls = ctrls
                .split(',')
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect();
            Some((ctrls, path.trim_end_matches(" (deleted)").to_string()))
        })
        .collect()
}

/// The `--cgroup-root` components and whether it is relative to our own cgroup.
fn parse_cgroup_root(root: &str) -> Result<(Vec<String>, bool)> {
    let invalid = |reason: &str| CgroupError::InvalidPath {
        path: root.into(),
        reason: reason.into(),
    };
    if root.is_empty() {
        return Err(invalid(
            "--cgroup-root is empty; use \"/\" for the hierarchy root",
        ));
    }
    let relative = !root.starts_with('/');
    let mut components = Vec::new();
    for c in root.split('/').filter(|c| !c.is_empty()) {
        if c == "." || c == ".." || c.contains('\0') {
            return Err(invalid(
                "each component must be a plain, non-empty file name",
            ));
        }
        components.push(c.to_string());
    }
    if relative && components.is_empty() {
        return Err(invalid(
            "a relative --cgroup-root needs at least one component",
        ));
    }
    Ok((components, relative))
}

/// The v1 controllers the driver uses (and the ones it must have).
const V1_CONTROLLERS: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "devices"];
const V1_REQUIRED: [&str; 3] = ["cpu", "cpuacct", "memory"];
const CGROUP_MOUNT: &str = "/sys/fs/cgroup";

#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Per hierarchy: the controllers of ours it carries, and where the root is.
    V1(Vec<(Vec<String>, RootLocation)>),
    V2 {
        mount_point: PathBuf,
        root: RootLocation,
        relative: bool,
    },
}

/// The agent's own cgroup dir in a hierarchy mounted at `mount` (its path in
/// `/proc/self/cgroup` is relative to the hierarchy root; the mount may show only
/// a subtree of it, as inside a container).
fn own_dir(mount: &Mount, own_path: &str) -> PathBuf {
    let rel = if mount.root != "/" {
        own_path.strip_prefix(&mount.root).unwrap_or(own_path)
    } else {
        own_path
    };
    mount.mount_point.join(rel.trim_start_matches('/'))
}

/// On a v1 (or hybrid) host, the mount points of cgroup hierarchies that
/// carry none of the controllers this driver uses (`cpuset`, `blkio`,
/// `freezer`, `name=systemd`, the hybrid `unified` one…). An OCI runtime
/// makes a container's cgroup in every hierarchy it sees: one that sees only
/// these stays within the directories the driver creates and removes.
/// Empty on a v2 host.
pub fn unmanaged_v1_hierarchies(mountinfo: &str) -> Vec<PathBuf> {
    let mounts = parse_mountinfo(mountinfo);
    let top = mounts
        .iter()
        .rev()
        .find(|m| m.mount_point == Path::new(CGROUP_MOUNT));
    if top.is_some_and(|m| m.fs_type == "cgroup2") {
        return Vec::new();
    }
    mounts
        .iter()
        .filter(|m| m.mount_point.starts_with(CGROUP_MOUNT))
        .filter(|m| match m.fs_type.as_str() {
            "cgroup2" => true,
            "cgroup" => !m
                .super_options
                .iter()
                .any(|o| V1_CONTROLLERS.contains(&o.as_str())),
            _ => false,
        })
        .map(|m| m.mount_point.clone())
        .collect()
}

fn plan(mountinfo: &str, proc_self_cgroup: &str, cgroup_root: &str) -> Result<Plan> {
    let (components, relative) = parse_cgroup_root(cgroup_root)?;
    let mounts = parse_mountinfo(mountinfo);
    let own = parse_proc_cgroup(proc_self_cgroup);

    // The top-most mount at /sys/fs/cgroup decides (a later line shadows an earlier one).
    let top = mounts
        .iter()
        .rev()
        .find(|m| m.mount_point == Path::new(CGROUP_MOUNT));
    if let Some(m) = top.filter(|m| m.fs_type == "cgroup2") {
        let base = if relative {
            let own_path = own
                .iter()
                .find(|(c, _)| c.is_empty())
                .map(|(_, p)| p.as_str())
                .ok_or_else(|| {
                    CgroupError::Detect("/proc/self/cgroup has no cgroup v2 (0::) entry".into())
                })?;
            own_dir(m, own_path)
        } else {
            m.mount_point.clone()
        };
        return Ok(Plan::V2 {
            mount_point: m.mount_point.clone(),
            root: RootLocation { base, components },
            relative,
        });
    }

    let mut hierarchies: Vec<(Vec<String>, RootLocation)> = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    for ctrl in V1_CONTROLLERS {
        let candidates: Vec<&Mount> = mounts
            .iter()
            .filter(|m| m.fs_type == "cgroup" && m.super_options.iter().any(|o| o == ctrl))
            .collect();
        let Some(m) = candidates
            .iter()
            .find(|m| m.mount_point.starts_with(CGROUP_MOUNT))
            .or_else(|| candidates.first())
            .copied()
        else {
            if V1_REQUIRED.contains(&ctrl) {
                return Err(CgroupError::Detect(format!(
                    "no cgroup v1 hierarchy with the {ctrl} controller is mounted, and {CGROUP_MOUNT} is not cgroup2"
                )));
            }
            continue;
        };
        if let Some(i) = seen.iter().position(|p| *p == m.mount_point) {
            hierarchies[i].0.push(ctrl.to_string()); // co-mounted, e.g. cpu,cpuacct
            continue;
        }
        let base = if relative {
            let own_path = own
                .iter()
                .find(|(c, _)| c.iter().any(|c| c == ctrl))
                .map(|(_, p)| p.as_str())
                .ok_or_else(|| {
                    CgroupError::Detect(format!("/proc/self/cgroup has no {ctrl} entry"))
                })?;
            own_dir(m, own_path)
        } else {
            m.mount_point.clone()
        };
        seen.push(m.mount_point.clone());
        hierarchies.push((
            vec![ctrl.to_string()],
            RootLocation {
                base,
                components: components.clone(),
            },
        ));
    }
    Ok(Plan::V1(hierarchies))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
24 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/process_api/9a7d
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

    fn loc(base: &str, components: &[&str]) -> RootLocation {
        RootLocation {
            base: base.into(),
            components: components.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn hybrid_host_is_v1_with_relative_root_under_own_cgroups() {
        let plan = plan(HYBRID_MOUNTINFO, HYBRID_CGROUP, "kubelab-test-1").unwrap();
        assert_eq!(
            plan,
            Plan::V1(vec![
                (
                    vec!["cpu".into()],
                    loc("/sys/fs/cgroup/cpu", &["kubelab-test-1"])
                ),
                (
                    vec!["cpuacct".into()],
                    loc("/sys/fs/cgroup/cpuacct", &["kubelab-test-1"])
                ),
                (
                    vec!["memory".into()],
                    loc(
                        "/sys/fs/cgroup/memory/process_api/9a7d",
                        &["kubelab-test-1"]
                    )
                ),
                (
                    vec!["pids".into()],
                    loc("/sys/fs/cgroup/pids", &["kubelab-test-1"])
                ),
            ])
        );
    }

    #[test]
    fn absolute_root_is_the_same_path_in_every_hierarchy() {
        let Plan::V1(h) = plan(HYBRID_MOUNTINFO, HYBRID_CGROUP, "/kubelab/nested").unwrap() else {
            panic!()
        };
        let dirs: Vec<PathBuf> = h.iter().map(|(_, r)| r.root_dir()).collect();
        assert_eq!(
            dirs,
            [
                "/sys/fs/cgroup/cpu/kubelab/nested",
                "/sys/fs/cgroup/cpuacct/kubelab/nested",
                "/sys/fs/cgroup/memory/kubelab/nested",
                "/sys/fs/cgroup/pids/kubelab/nested"
            ]
            .map(PathBuf::from)
        );
        let Plan::V1(h) = plan(HYBRID_MOUNTINFO, HYBRID_CGROUP, "/").unwrap() else {
            panic!()
        };
        assert_eq!(h[0].1.root_dir(), PathBuf::from("/sys/fs/cgroup/cpu"));
    }

    #[test]
    fn oci_cgroups_path_names_the_drivers_directories_as_runc_resolves_them() {
        let pod = CgroupPath::new("kubepods/besteffort/pod1/c1").unwrap();
        // v1, relative root: runc joins it to its own cgroup in each
        // hierarchy, as the driver does with the agent's.
        let relative = loc(
            "/sys/fs/cgroup/memory/process_api/9a7d",
            &["kubelab-test-1"],
        );
        assert_eq!(
            relative.oci_path(&pod, true, None),
            "kubelab-test-1/kubepods/besteffort/pod1/c1"
        );
        // v1, absolute root: the same absolute path in every hierarchy.
        let absolute = loc("/sys/fs/cgroup/cpu", &["kubelab", "nested"]);
        assert_eq!(
            absolute.oci_path(&pod, false, None),
            "/kubelab/nested/kubepods/besteffort/pod1/c1"
        );
        // v2: always absolute, the agent's own cgroup included for a relative root.
        let mount = Path::new("/sys/fs/cgroup");
        let v2 = loc("/sys/fs/cgroup/system.slice/agent.service", &["t"]);
        assert_eq!(
            v2.oci_path(&pod, false, Some(mount)),
            "/system.slice/agent.service/t/kubepods/besteffort/pod1/c1"
        );
        let v2_root = loc("/sys/fs/cgroup", &["kubelab"]);
        assert_eq!(
            v2_root.oci_path(&pod, false, Some(mount)),
            "/kubelab/kubepods/besteffort/pod1/c1"
        );
    }

    #[test]
    fn hierarchies_without_the_drivers_controllers_are_unmanaged() {
        assert_eq!(
            unmanaged_v1_hierarchies(HYBRID_MOUNTINFO),
            [
                "/sys/fs/cgroup/cpuset",
                "/sys/fs/cgroup/systemd",
                "/sys/fs/cgroup/unified"
            ]
            .map(PathBuf::from)
        );
        let v2 = "31 23 0:28 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n";
        assert!(unmanaged_v1_hierarchies(v2).is_empty());
    }

    #[test]
    fn comounted_cpu_cpuacct_is_one_hierarchy() {
        let mi = "\
30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
31 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        let own = "3:cpu,cpuacct:/user.slice\n2:memory:/user.slice/x\n";
        let Plan::V1(h) = plan(mi, own, "t").unwrap() else {
            panic!()
        };
        assert_eq!(
            h,
            vec![
                (
                    vec!["cpu".into(), "cpuacct".into()],
                    loc("/sys/fs/cgroup/cpu,cpuacct/user.slice", &["t"])
                ),
                (
                    vec!["memory".into()],
                    loc("/sys/fs/cgroup/memory/user.slice/x", &["t"])
                ),
            ]
        );
    }

    #[test]
    fn unified_host_is_v2() {
        let mi = "26 23 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        let own = "0::/system.slice/kubelab.service\n";
        assert_eq!(
            plan(mi, own, "/kubelab").unwrap(),
            Plan::V2 {
                mount_point: "/sys/fs/cgroup".into(),
                root: loc("/sys/fs/cgroup", &["kubelab"]),
                relative: false
            }
        );
        assert_eq!(
            plan(mi, own, "t").unwrap(),
            Plan::V2 {
                mount_point: "/sys/fs/cgroup".into(),
                root: loc("/sys/fs/cgroup/system.slice/kubelab.service", &["t"]),
                relative: true
            }
        );
    }

    #[test]
    fn container_view_strips_the_mount_root() {
        let mi = "100 90 0:29 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n\
                  101 90 0:30 /docker/abc /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu,cpuacct\n";
        let own = "4:memory:/docker/abc/sub\n1:cpu,cpuacct:/docker/abc\n";
        let Plan::V1(h) = plan(mi, own, "t").unwrap() else {
            panic!()
        };
        assert_eq!(h[0].1, loc("/sys/fs/cgroup/cpu", &["t"]));
        assert_eq!(h[1].1, loc("/sys/fs/cgroup/memory/sub", &["t"]));
    }

    #[test]
    fn missing_controllers_and_bad_roots_are_errors() {
        let mi = "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        let err = plan(mi, "1:cpu:/\n", "/k").unwrap_err().to_string();
        assert!(err.contains("cpuacct controller"), "{err}");
        for root in ["", "a/../b", "./x", "/a/.."] {
            assert!(
                matches!(
                    plan(HYBRID_MOUNTINFO, HYBRID_CGROUP, root),
                    Err(CgroupError::InvalidPath { .. })
                ),
                "{root}"
            );
        }
    }

    #[test]
    fn mountinfo_escapes() {
        let m = parse_mountinfo("1 2 0:3 / /mnt/with\\040space rw - cgroup cgroup rw,memory\n");
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(m[0].super_options, vec!["rw", "memory"]);
    }

    #[test]
    fn paths() {
        let d = CgroupDriver::from_system(HYBRID_MOUNTINFO, HYBRID_CGROUP, "/kubelab").unwrap();
        assert_eq!(d.version(), CgroupVersion::V1);
        let g = d.pod_path(QosClass::Guaranteed, "1234-ab");
        assert_eq!(g.as_str(), "kubepods/pod1234-ab");
        let b = d.pod_path(QosClass::Burstable, "u1");
        assert_eq!(b.as_str(), "kubepods/burstable/podu1");
        let e = d.pod_path(QosClass::BestEffort, "u2");
        let c = d.container_path(&e, "c0ffee");
        assert_eq!(c.as_str(), "kubepods/besteffort/podu2/c0ffee");
        assert_eq!(c.parent(), Some(e));
        assert_eq!(
            d.procs_files(&c),
            [
                "/sys/fs/cgroup/cpu/kubelab/kubepods/besteffort/podu2/c0ffee/cgroup.procs",
                "/sys/fs/cgroup/cpuacct/kubelab/kubepods/besteffort/podu2/c0ffee/cgroup.procs",
                "/sys/fs/cgroup/memory/kubelab/kubepods/besteffort/podu2/c0ffee/cgroup.procs",
                "/sys/fs/cgroup/pids/kubelab/kubepods/besteffort/podu2/c0ffee/cgroup.procs",
            ]
            .map(PathBuf::from)
        );
        for bad in ["", "/abs", "a/../b", "a//b", "a/."] {
            assert!(CgroupPath::new(bad).is_err(), "{bad}");
        }
        assert!(CgroupPath::new("kubepods/podx").is_ok());
        let bad = d.container_path(&g, "..");
        assert!(matches!(
            d.create(&bad, &CgroupLimits::unlimited()),
            Err(CgroupError::InvalidPath { .. })
        ));
    }

    #[test]
    fn driver_is_shareable() {
        fn assert_clone_send_sync<T: Clone + Send + Sync>() {}
        assert_clone_send_sync::<CgroupDriver>();
    }

    #[test]
    fn flat_keyed() {
        let m = parse_flat_keyed(
            "nr_periods 12\nnr_throttled 3\nthrottled_time 456789\nweird line here\nbad x\n",
        );
        assert_eq!(m.get("nr_periods"), Some(&12));
        assert_eq!(m.get("nr_throttled"), Some(&3));
        assert_eq!(m.get("throttled_time"), Some(&456_789));
        assert_eq!(m.len(), 3);
        assert_eq!(working_set(100, 30), 70);
        assert_eq!(working_set(10, 30), 0);
    }
}
