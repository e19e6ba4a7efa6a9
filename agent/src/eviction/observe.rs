//! Reading the signals and what each pod uses (kubelet's
//! `makeSignalObservations` over the Summary API).
//!
//! `memory.available` is the node's memory less the working set of its
//! root cgroup, as the kubelet computes it. With an absolute
//! `--cgroup-root` the node is the machine: `/proc/meminfo`'s total less
//! what is used (usage without inactive file pages, the root cgroup's
//! working set). With a relative (nested) one the node is what the agent
//! controls: the working set of its `kubepods` against the least memory
//! limit on the way up from the cgroup root (the machine's memory when
//! none is set); `pid.available` likewise with `pids.max` and the pods'
//! `pids.current`. This is what lets a test own a node inside its cgroup.
//! `nodefs` is the filesystem of `--root-dir`, `imagefs` that of the image
//! store.

use std::path::{Path, PathBuf};

use super::config::Signal;
use super::rank::{Candidate, ContainerUsage, PodUsage};
use super::thresholds::{Observation, Observations};
use crate::cgroups::{CgroupDriver, CgroupPath, KUBEPODS};
use crate::context::AgentContext;

/// Where the signals are read from.
#[derive(Debug, Clone)]
pub struct SignalSources {
    pub cgroups: CgroupDriver,
    /// `--cgroup-root` is relative: the node is the agent's cgroup subtree.
    pub nested: bool,
    /// nodefs: the filesystem of `--root-dir`.
    pub root_dir: PathBuf,
    /// imagefs: the filesystem of the image store.
    pub images_dir: PathBuf,
    /// The Node's allocatable memory, for `allocatableMemory.available`.
    pub allocatable_memory: Option<u64>,
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The least of `file` in `dir` and its ancestors ("max" and absent files
/// are no limit); stops at the hierarchy's mount under `/sys/fs/cgroup`.
fn least_limit_upwards(dir: &Path, file: &str) -> Option<u64> {
    let mut least: Option<u64> = None;
    let mut at = Some(dir);
    while let Some(d) = at {
        if d == Path::new("/sys/fs/cgroup") || !d.starts_with("/sys/fs/cgroup") {
            break;
        }
        if let Some(v) = read_number(&d.join(file)) {
            least = Some(least.map_or(v, |l| l.min(v)));
        }
        at = d.parent();
    }
    least
}

/// The limit `file` puts on the cgroup root in any hierarchy.
fn root_limit(cgroups: &CgroupDriver, file: &str) -> Option<u64> {
    cgroups
        .root_dirs()
        .iter()
        .filter_map(|d| least_limit_upwards(d, file))
        .min()
}

fn filesystem(path: &Path) -> Option<(Observation, Observation)> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let frsize = st.fragment_size() as u64;
    Some((
        Observation {
            available: (st.blocks_available() as u64 * frsize) as i64,
            capacity: st.blocks() as u64 * frsize,
        },
        Observation {
            available: st.files_available() as i64,
            capacity: st.files() as u64,
        },
    ))
}

/// Tasks running on the machine (`sysinfo(2)`'s `procs`, as the kubelet counts them).
fn machine_processes() -> u64 {
    let mut info = std::mem::MaybeUninit::<libc::sysinfo>::zeroed();
    // SAFETY: sysinfo fills the struct it is given and nothing else.
    if unsafe { libc::sysinfo(info.as_mut_ptr()) } != 0 {
        return 0;
    }
    // SAFETY: filled by the successful call above.
    u64::from(unsafe { info.assume_init() }.procs)
}

/// Every signal this node can read now.
pub fn observe(src: &SignalSources) -> Observations {
    let mut obs = Observations::new();
    let mem = crate::host::meminfo();
    let total = mem.get("MemTotal").copied().unwrap_or(0);
    let pods = src
        .cgroups
        .stats(&CgroupPath::new(KUBEPODS).expect("valid"))
        .ok();
    let pods_working_set = pods.as_ref().map_or(0, |s| s.memory_working_set_bytes);
    let (capacity, working_set) = if src.nested {
        let limit = root_limit(&src.cgroups, "memory.limit_in_bytes")
            .into_iter()
            .chain(root_limit(&src.cgroups, "memory.max"))
            .min();
        (limit.map_or(total, |l| l.min(total)), pods_working_set)
    } else {
        let free = mem.get("MemFree").copied().unwrap_or(0);
        let inactive_file = mem.get("Inactive(file)").copied().unwrap_or(0);
        (
            total,
            total.saturating_sub(free).saturating_sub(inactive_file),
        )
    };
    if capacity > 0 {
        obs.insert(
            Signal::MemoryAvailable,
            Observation {
                available: capacity as i64 - working_set as i64,
                capacity,
            },
        );
    }
    if let Some(allocatable) = src.allocatable_memory {
        obs.insert(
            Signal::AllocatableMemoryAvailable,
            Observation {
                available: allocatable as i64 - pods_working_set as i64,
                capacity: allocatable,
            },
        );
    }
    if let Some((bytes, inodes)) = filesystem(&src.root_dir) {
        obs.insert(Signal::NodeFsAvailable, bytes);
        obs.insert(Signal::NodeFsInodesFree, inodes);
    }
    if let Some((bytes, inodes)) = filesystem(&src.images_dir).or_else(|| filesystem(&src.root_dir))
    {
        obs.insert(Signal::ImageFsAvailable, bytes);
        obs.insert(Signal::ImageFsInodesFree, inodes);
    }
    let pid_max = [
        read_number(Path::new("/proc/sys/kernel/pid_max")),
        read_number(Path::new("/proc/sys/kernel/threads-max")),
    ]
    .into_iter()
    .flatten()
    .min();
    let (pid_capacity, pids_used) = if src.nested {
        let limit = root_limit(&src.cgroups, "pids.max");
        (
            pid_max.into_iter().chain(limit).min(),
            pods.as_ref().map_or(0, |s| s.pids_current),
        )
    } else {
        (pid_max, machine_processes())
    };
    if let Some(capacity) = pid_capacity {
        obs.insert(
            Signal::PidAvailable,
            Observation {
                available: capacity as i64 - pids_used as i64,
                capacity,
            },
        );
    }
    obs
}

/// Bytes and inodes under `dir`, on its own filesystem only (the rootfs
/// mounts and memory-backed volumes under a pod dir are not its disk).
fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return (0, 0);
    };
    let dev = top.dev();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.dev() != dev {
                continue;
            }
            bytes += meta.blocks() * 512;
            inodes += 1;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    (bytes, inodes)
}

/// The pods the node runs that may be evicted (not finished, not being
/// deleted), with what each uses; disk use only when `with_disk`.
pub fn candidates(ctx: &AgentContext, with_disk: bool) -> Vec<Candidate> {
    ctx.status
        .list()
        .into_iter()
        .filter(|e| {
            let phase = e.status.phase.as_deref();
            !matches!(phase, Some("Failed" | "Succeeded"))
                && e.pod.metadata.deletion_timestamp.is_none()
        })
        .map(|e| {
            let usage = ctx.cgroups.stats(&e.pod_cgroup).ok().map(|stats| {
                let (disk_bytes, inodes) = if with_disk {
                    let uid = e.pod.metadata.uid.as_deref().unwrap_or_default();
                    let (b1, i1) = disk_usage(&ctx.pod_dir(uid));
                    let (b2, i2) = disk_usage(&e.log_dir);
                    (b1 + b2, i1 + i2)
                } else {
                    (0, 0)
                };
                PodUsage {
                    memory_working_set: stats.memory_working_set_bytes,
                    disk_bytes,
                    inodes,
                    processes: stats.pids_current,
                    containers: e
                        .containers
                        .iter()
                        .map(|c| ContainerUsage {
                            name: c.name.clone(),
                            memory_working_set: ctx
                                .cgroups
                                .stats(&c.cgroup)
                                .map_or(0, |s| s.memory_working_set_bytes),
                        })
                        .collect(),
                }
            });
            Candidate {
                pod: e.with_status(),
                usage,
            }
        })
        .collect()
}
