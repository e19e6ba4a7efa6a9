//! cgroup v2: one unified hierarchy. Children only get a controller if their
//! parent lists it in `cgroup.subtree_control`, and a cgroup that lists any can't
//! hold processes itself (the no-internal-process rule; the root is exempt).

use std::io;
use std::path::{Path, PathBuf};

use cgroups_rs::fs::MaxValue;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;

use super::{
    Backend, CgroupError, CgroupLimits, CgroupPath, CgroupStats, CgroupVersion, CreatedRoots,
    KUBEPODS, MIN_SHARES, Result, RootLocation, ctl_err, io_err, mkdir, parse_flat_keyed,
    read_file, read_flat_keyed, read_u64, set_quota_with_burst, shares_to_weight, working_set,
    write_existing,
};

/// The controllers every cgroup of ours needs.
const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

#[derive(Debug)]
pub(super) struct V2 {
    mount_point: PathBuf,
    root: RootLocation,
    /// The root is under the agent's own cgroup (which the driver never modifies).
    relative: bool,
}

/// Whether the driver may write a cgroup's `cgroup.subtree_control`, and if not, why.
enum Access {
    Write,
    ReadOnly(&'static str),
}

impl V2 {
    pub(super) fn new(mount_point: PathBuf, root: RootLocation, relative: bool) -> Self {
        V2 {
            mount_point,
            root,
            relative,
        }
    }

    fn access(&self, dir: &Path, created: &CreatedRoots) -> Access {
        if dir == self.mount_point {
            // The root cgroup may have processes and controllers both.
            Access::Write
        } else if self.relative && dir == self.root.base {
            Access::ReadOnly(
                "it is the agent's own cgroup, which the driver does not modify; it holds the agent's \
                 processes, and cgroup v2's no-internal-process rule forbids enabling controllers for children \
                 of a cgroup that has processes. Use an absolute --cgroup-root, or run the agent from the root \
                 cgroup",
            )
        } else if dir.starts_with(self.root.root_dir()) || created.contains(dir) {
            Access::Write
        } else {
            Access::ReadOnly(
                "it existed before the agent and is not the hierarchy root, so the driver leaves it alone; \
                 enable them there (echo '+cpu +memory +pids' > cgroup.subtree_control) or pick another \
                 --cgroup-root",
            )
        }
    }

    /// Makes `cpu memory pids` available to the children of `dir`.
    fn delegate(&self, dir: &Path, access: Access) -> Result<()> {
        let enabled = read_file(&dir.join("cgroup.subtree_control"))?;
        let missing: Vec<&str> = CONTROLLERS
            .into_iter()
            .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let delegation = |reason: &str| CgroupError::Delegation {
            path: dir.to_path_buf(),
            missing: missing.iter().map(|s| s.to_string()).collect(),
            reason: reason.to_string(),
        };
        if let Access::ReadOnly(reason) = access {
            return Err(delegation(reason));
        }
        let available = read_file(&dir.join("cgroup.controllers"))?;
        if missing
            .iter()
            .any(|c| !available.split_whitespace().any(|a| a == *c))
        {
            return Err(delegation(
                "they are not in its cgroup.controllers: its parent does not delegate them",
            ));
        }
        let file = dir.join("cgroup.subtree_control");
        let line = missing
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(" ");
        write_existing(&file, &line).map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                delegation(
                    "it has processes of its own, and cgroup v2's no-internal-process rule forbids enabling \
                     controllers for children of a cgroup with processes; only leaf (container) cgroups may \
                     hold processes",
                )
            } else {
                io_err(format!("write {line:?} to"), &file)(e)
            }
        })
    }
}

impl Backend for V2 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn dirs(&self, path: &CgroupPath) -> Vec<PathBuf> {
        vec![self.root.dir(path)]
    }

    fn root_dirs(&self) -> Vec<PathBuf> {
        vec![self.root.root_dir()]
    }

    fn oci_cgroups_path(&self, path: &CgroupPath) -> String {
        self.root.oci_path(path, false, Some(&self.mount_point))
    }

    /// Walks down from the root: each parent delegates the controllers before its
    /// child is made. The target itself gets none enabled, so it can hold
    /// processes (a container) or get children later (a pod: enabled then).
    fn create(
        &self,
        path: &CgroupPath,
        limits: &CgroupLimits,
        created: &CreatedRoots,
    ) -> Result<()> {
        let mut parent = self.root.base.clone();
        for level in self.root.levels(path) {
            self.delegate(&parent, self.access(&parent, created))?;
            let made = mkdir(&level.dir)?;
            if made && level.logical.is_none() {
                created.record(&level.dir);
            }
            // The kubelet gives the BestEffort QoS cgroup the minimum shares.
            if made && level.logical.as_deref() == Some(&format!("{KUBEPODS}/besteffort")) {
                let cpu = CpuController::new(level.dir.clone(), PathBuf::new(), true);
                cpu.set_shares(shares_to_weight(MIN_SHARES))
                    .map_err(ctl_err("set cpu.weight", &level.dir))?;
            }
            parent = level.dir;
        }
        let dir = self.root.dir(path);

        let cpu = CpuController::new(dir.clone(), PathBuf::new(), true);
        if let Some(weight) = limits.cpu_weight() {
            cpu.set_shares(weight)
                .map_err(ctl_err("set cpu.weight", &dir))?;
        }
        // "<quota> <period>", or "max <period>" for -1.
        set_quota_with_burst(&dir, "cpu.max.burst", limits.cpu_burst_us, || {
            cpu.set_cfs_quota_and_period(
                Some(limits.cpu_quota_us.unwrap_or(-1)),
                Some(limits.cpu_period_us),
            )
            .map_err(ctl_err("set cpu.max", &dir))
        })?;

        let memory = MemController::new(dir.clone(), PathBuf::new(), true);
        memory
            .set_limit(limits.memory_limit_bytes.unwrap_or(-1))
            .map_err(ctl_err("set memory.max", &dir))?;
        // MemoryQoS: memory.min protects the request from reclaim, memory.high
        // throttles and reclaims before memory.max kills.
        write_optional(&dir, "memory.min", limits.memory_min_bytes, "0")?;
        write_optional(&dir, "memory.high", limits.memory_high_bytes, "max")?;
        // No swap unless LimitedSwap allows some, so going over memory.max
        // OOM-kills instead of swapping (the file exists only with swap accounting).
        write_optional(&dir, "memory.swap.max", limits.swap_max_bytes, "max")?;
        // 1: an OOM kill takes every process in the cgroup (the kubelet's
        // default since 1.28); 0: only the one the kernel picked.
        let oom_group = if limits.oom_group { "1" } else { "0" };
        let oom_group_file = dir.join("memory.oom.group");
        if oom_group_file.exists() {
            write_existing(&oom_group_file, oom_group)
                .map_err(io_err(format!("write {oom_group} to"), &oom_group_file))?;
        }

        let pids = PidController::new(dir.clone(), PathBuf::new(), true);
        pids.set_pid_max(limits.pids_max.map_or(MaxValue::Max, MaxValue::Value))
            .map_err(ctl_err("set pids.max", &dir))?;
        Ok(())
    }

    /// v2 has no devices file: runc's allow-list goes in as an eBPF program.
    fn restrict_devices(&self, path: &CgroupPath) -> Result<()> {
        let dir = self.root.dir(path);
        super::devices::attach(&dir, &super::devices::default_rules()).map_err(|e| {
            CgroupError::Io {
                op: "restrict devices".into(),
                path: dir.clone(),
                source: std::io::Error::other(e.to_string()),
            }
        })
    }

    fn kill_at_once(&self, path: &CgroupPath) -> Result<bool> {
        let file = self.root.dir(path).join("cgroup.kill");
        match write_existing(&file, "1") {
            Ok(()) => Ok(true),
            // No cgroup.kill before Linux 5.14 (or no cgroup): fall back to the kill loop.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("write 1 to", &file)(e)),
        }
    }

    fn oom_kill_count(&self, path: &CgroupPath) -> Result<u64> {
        // memory.events is hierarchical (unless mounted with memory_localevents).
        Ok(parse_memory_events(&read_file(&self.root.dir(path).join("memory.events"))?).oom_kill)
    }

    fn stats(&self, path: &CgroupPath) -> Result<CgroupStats> {
        let dir = self.root.dir(path);
        let cpu = parse_cpu_stat(&read_file(&dir.join("cpu.stat"))?);
        let usage = read_u64(&dir.join("memory.current"))?;
        let inactive_file = read_flat_keyed(&dir.join("memory.stat"))?
            .get("inactive_file")
            .copied()
            .unwrap_or(0);
        let max_file = dir.join("memory.max");
        let memory_limit_bytes =
            parse_max(&read_file(&max_file)?).ok_or_else(|| CgroupError::Parse {
                path: max_file,
                detail: "expected \"max\" or an integer".into(),
            })?;
        Ok(CgroupStats {
            cpu_usage_ns: cpu.usage_usec.saturating_mul(1000),
            nr_periods: cpu.nr_periods,
            nr_throttled: cpu.nr_throttled,
            throttled_time_ns: cpu.throttled_usec.saturating_mul(1000),
            memory_usage_bytes: usage,
            memory_working_set_bytes: working_set(usage, inactive_file),
            memory_limit_bytes,
            oom_kills: self.oom_kill_count(path)?,
            pids_current: read_u64(&dir.join("pids.current"))?,
            pressure: super::pressure::read_pressure(&dir, ".pressure")
                .map_err(io_err("read pressure in", &dir))?,
        })
    }
}

/// Writes `value` (or `unset` for `None`) to a cgroup file the kernel may not
/// provide (`memory.swap.max` without swap accounting): absent, it is skipped
/// unless a positive amount was asked for.
fn write_optional(dir: &Path, file: &str, value: Option<i64>, unset: &str) -> Result<()> {
    let path = dir.join(file);
    if !path.exists() {
        return match value {
            Some(v) if v > 0 => Err(CgroupError::Io {
                op: format!("write {v} to"),
                path,
                source: io::Error::from(io::ErrorKind::NotFound),
            }),
            _ => Ok(()),
        };
    }
    let text = value.map_or_else(|| unset.to_string(), |v| v.to_string());
    write_existing(&path, &text).map_err(io_err(format!("write {text} to"), &path))
}

/// v2 `cpu.stat` (µs).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct CpuStat {
    pub usage_usec: u64,
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_usec: u64,
}

pub(super) fn parse_cpu_stat(content: &str) -> CpuStat {
    let m = parse_flat_keyed(content);
    let get = |k| m.get(k).copied().unwrap_or(0);
    CpuStat {
        usage_usec: get("usage_usec"),
        nr_periods: get("nr_periods"),
        nr_throttled: get("nr_throttled"),
        throttled_usec: get("throttled_usec"),
    }
}

/// v2 `memory.events`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct MemoryEvents {
    pub max: u64,
    pub oom: u64,
    pub oom_kill: u64,
}

pub(super) fn parse_memory_events(content: &str) -> MemoryEvents {
    let m = parse_flat_keyed(content);
    let get = |k| m.get(k).copied().unwrap_or(0);
    MemoryEvents {
        max: get("max"),
        oom: get("oom"),
        oom_kill: get("oom_kill"),
    }
}

/// A `max`-or-number file (`memory.max`, `pids.max`): `Some(None)` for `max`,
/// `None` if it is neither.
pub(super) fn parse_max(content: &str) -> Option<Option<u64>> {
    match content.trim() {
        "max" => Some(None),
        n => n.parse().ok().map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_stat() {
        let s = "usage_usec 2046215\nuser_usec 2040105\nsystem_usec 6110\ncore_sched.force_idle_usec 0\n\
                 nr_periods 31\nnr_throttled 28\nthrottled_usec 2301155\nnr_bursts 0\nburst_usec 0\n";
        assert_eq!(
            parse_cpu_stat(s),
            CpuStat {
                usage_usec: 2_046_215,
                nr_periods: 31,
                nr_throttled: 28,
                throttled_usec: 2_301_155
            }
        );
        // Without the cpu controller enabled only the usage fields are there.
        let s = "usage_usec 10\nuser_usec 7\nsystem_usec 3\n";
        assert_eq!(
            parse_cpu_stat(s),
            CpuStat {
                usage_usec: 10,
                ..Default::default()
            }
        );
    }

    #[test]
    fn memory_events() {
        let s = "low 0\nhigh 0\nmax 1385\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(
            parse_memory_events(s),
            MemoryEvents {
                max: 1385,
                oom: 2,
                oom_kill: 1
            }
        );
        assert_eq!(
            parse_memory_events("low 0\nhigh 0\nmax 0\noom 0\n").oom_kill,
            0
        );
    }

    #[test]
    fn memory_stat_working_set() {
        let s = "anon 30130176\nfile 4096000\nkernel 466944\nactive_anon 30105600\ninactive_anon 0\n\
                 active_file 1024000\ninactive_file 3072000\nunevictable 0\npgfault 8245\n";
        let m = parse_flat_keyed(s);
        assert_eq!(m.get("inactive_file"), Some(&3_072_000));
        assert_eq!(working_set(34_693_120, m["inactive_file"]), 31_621_120);
    }

    #[test]
    fn max_files() {
        assert_eq!(parse_max("max\n"), Some(None));
        assert_eq!(parse_max("33554432\n"), Some(Some(33_554_432)));
        assert_eq!(parse_max("lots"), None);
    }
}
