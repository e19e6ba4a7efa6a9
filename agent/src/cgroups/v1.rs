//! cgroup v1: the same logical cgroup is one directory in each of the `cpu`,
//! `cpuacct`, `memory` and `pids` hierarchies (some may be co-mounted).

use std::path::{Path, PathBuf};

use cgroups_rs::fs::MaxValue;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;

use super::{
    Backend, CgroupError, CgroupLimits, CgroupPath, CgroupStats, CgroupVersion, CreatedRoots,
    KUBEPODS, MIN_SHARES, Result, RootLocation, ctl_err, mkdir, parse_flat_keyed, read_file,
    read_flat_keyed, read_u64, set_quota_with_burst, subdirs, working_set,
};

/// `memory.limit_in_bytes` at or above this means "no limit": the kernel reports
/// `PAGE_COUNTER_MAX` pages (9223372036854771712 with 4 KiB pages).
const UNLIMITED_BYTES: u64 = 1 << 62;

#[derive(Debug)]
struct Hierarchy {
    controllers: Vec<String>,
    root: RootLocation,
}

impl Hierarchy {
    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

#[derive(Debug)]
pub(super) struct V1 {
    hierarchies: Vec<Hierarchy>,
    /// The root is under the agent's own cgroup in each hierarchy.
    relative: bool,
}

impl V1 {
    pub(super) fn new(hierarchies: Vec<(Vec<String>, RootLocation)>, relative: bool) -> Self {
        V1 {
            relative,
            hierarchies: hierarchies
                .into_iter()
                .map(|(controllers, root)| Hierarchy { controllers, root })
                .collect(),
        }
    }

    /// The directory of `path` in the hierarchy carrying `controller`.
    fn dir_of(&self, controller: &str, path: &CgroupPath) -> Result<PathBuf> {
        self.hierarchies
            .iter()
            .find(|h| h.has(controller))
            .map(|h| h.root.dir(path))
            .ok_or_else(|| {
                CgroupError::Detect(format!(
                    "no cgroup v1 hierarchy with the {controller} controller"
                ))
            })
    }
}

impl Backend for V1 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn dirs(&self, path: &CgroupPath) -> Vec<PathBuf> {
        self.hierarchies.iter().map(|h| h.root.dir(path)).collect()
    }

    fn root_dirs(&self) -> Vec<PathBuf> {
        self.hierarchies.iter().map(|h| h.root.root_dir()).collect()
    }

    fn oci_cgroups_path(&self, path: &CgroupPath) -> String {
        // Every hierarchy has the same components below its base.
        self.hierarchies
            .first()
            .map(|h| h.root.oci_path(path, self.relative, None))
            .unwrap_or_default()
    }

    fn create(
        &self,
        path: &CgroupPath,
        limits: &CgroupLimits,
        created: &CreatedRoots,
    ) -> Result<()> {
        if limits.pids_max.is_some() && !self.hierarchies.iter().any(|h| h.has("pids")) {
            return Err(CgroupError::Detect(format!(
                "{path}: a pids limit was asked for, but no cgroup v1 hierarchy has the pids controller"
            )));
        }
        for h in &self.hierarchies {
            for level in h.root.levels(path) {
                let made = mkdir(&level.dir)?;
                if made && level.logical.is_none() {
                    created.record(&level.dir);
                }
                // The kubelet gives the BestEffort QoS cgroup the minimum shares.
                if made
                    && h.has("cpu")
                    && level.logical.as_deref() == Some(&format!("{KUBEPODS}/besteffort"))
                {
                    let cpu = CpuController::new(level.dir.clone(), PathBuf::new(), false);
                    cpu.set_shares(MIN_SHARES)
                        .map_err(ctl_err("set cpu.shares", &level.dir))?;
                }
            }
            let dir = h.root.dir(path);
            if h.has("cpu") {
                apply_cpu(&dir, limits)?;
            }
            if h.has("memory") {
                apply_memory(&dir, limits)?;
            }
            if h.has("pids") {
                let pids = PidController::new(dir.clone(), PathBuf::new(), false);
                let max = limits.pids_max.map_or(MaxValue::Max, MaxValue::Value);
                pids.set_pid_max(max)
                    .map_err(ctl_err("set pids.max", &dir))?;
            }
        }
        Ok(())
    }

    fn restrict_devices(&self, path: &CgroupPath) -> Result<()> {
        let Ok(dir) = self.dir_of("devices", path) else {
            return Ok(()); // no devices hierarchy mounted
        };
        let write = |file: &str, rule: &str| {
            std::fs::write(dir.join(file), rule).map_err(|e| CgroupError::Io {
                op: "write device rule".into(),
                path: dir.join(file),
                source: e,
            })
        };
        write("devices.deny", "a")?;
        for rule in super::devices::DEFAULT_DEVICE_RULES {
            write("devices.allow", rule)?;
        }
        Ok(())
    }

    fn kill_at_once(&self, _path: &CgroupPath) -> Result<bool> {
        Ok(false) // v1 has no cgroup.kill
    }

    /// v1 counts OOM kills only in the victim's own memory cgroup, so sum the subtree
    /// (which is what v2's hierarchical `memory.events` reports).
    fn oom_kill_count(&self, path: &CgroupPath) -> Result<u64> {
        fn sum(dir: &Path) -> Result<u64> {
            let mut total = parse_oom_control(&read_file(&dir.join("memory.oom_control"))?);
            for sub in subdirs(dir)? {
                total += sum(&sub)?;
            }
            Ok(total)
        }
        sum(&self.dir_of("memory", path)?)
    }

    fn stats(&self, path: &CgroupPath) -> Result<CgroupStats> {
        let cpuacct = self.dir_of("cpuacct", path)?;
        let cpu = self.dir_of("cpu", path)?;
        let memory = self.dir_of("memory", path)?;
        let throttling = parse_cpu_stat(&read_file(&cpu.join("cpu.stat"))?);
        let usage = read_u64(&memory.join("memory.usage_in_bytes"))?;
        let memory_stat = read_flat_keyed(&memory.join("memory.stat"))?;
        // cadvisor on v1: the hierarchical total_inactive_file.
        let inactive_file = memory_stat.get("total_inactive_file").copied().unwrap_or(0);
        let limit = read_u64(&memory.join("memory.limit_in_bytes"))?;
        let pids_current = match self.dir_of("pids", path) {
            Ok(dir) => read_u64(&dir.join("pids.current"))?,
            Err(_) => 0,
        };
        Ok(CgroupStats {
            cpu_usage_ns: read_u64(&cpuacct.join("cpuacct.usage"))?,
            nr_periods: throttling.nr_periods,
            nr_throttled: throttling.nr_throttled,
            throttled_time_ns: throttling.throttled_time_ns,
            memory_usage_bytes: usage,
            memory_working_set_bytes: working_set(usage, inactive_file),
            memory_limit_bytes: memory_limit(limit),
            oom_kills: self.oom_kill_count(path)?,
            pids_current,
            // v1 hierarchies have no pressure files.
            pressure: None,
        })
    }
}

fn apply_cpu(dir: &Path, limits: &CgroupLimits) -> Result<()> {
    let cpu = CpuController::new(dir.to_path_buf(), PathBuf::new(), false);
    if let Some(shares) = limits.cpu_shares {
        cpu.set_shares(shares)
            .map_err(ctl_err("set cpu.shares", dir))?;
    }
    cpu.set_cfs_period(limits.cpu_period_us)
        .map_err(ctl_err("set cpu.cfs_period_us", dir))?;
    set_quota_with_burst(dir, "cpu.cfs_burst_us", limits.cpu_burst_us, || {
        cpu.set_cfs_quota(limits.cpu_quota_us.unwrap_or(-1))
            .map_err(ctl_err("set cpu.cfs_quota_us", dir))
    })
}

fn apply_memory(dir: &Path, limits: &CgroupLimits) -> Result<()> {
    let memory = MemController::new(dir.to_path_buf(), PathBuf::new(), false);
    memory
        .set_limit(limits.memory_limit_bytes.unwrap_or(-1))
        .map_err(ctl_err("set memory.limit_in_bytes", dir))?;
    // With swappiness 0 the cgroup's reclaim never swaps anonymous memory, so going
    // over the limit OOM-kills instead of swapping. Some kernels refuse it; harmless.
    if let Err(e) = memory.set_swappiness(0) {
        tracing::debug!(dir = %dir.display(), error = %e, "memory.swappiness not set");
    }
    Ok(())
}

/// The throttling counters of v1 `cpu.stat`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct CpuStat {
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_time_ns: u64,
}

pub(super) fn parse_cpu_stat(content: &str) -> CpuStat {
    let m = parse_flat_keyed(content);
    let get = |k| m.get(k).copied().unwrap_or(0);
    CpuStat {
        nr_periods: get("nr_periods"),
        nr_throttled: get("nr_throttled"),
        throttled_time_ns: get("throttled_time"),
    }
}

/// `oom_kill` of v1 `memory.oom_control` (0 on kernels before 4.13, which lack it).
pub(super) fn parse_oom_control(content: &str) -> u64 {
    parse_flat_keyed(content)
        .get("oom_kill")
        .copied()
        .unwrap_or(0)
}

pub(super) fn memory_limit(limit_in_bytes: u64) -> Option<u64> {
    (limit_in_bytes < UNLIMITED_BYTES).then_some(limit_in_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_stat() {
        let s = "nr_periods 31\nnr_throttled 28\nthrottled_time 2301155866\nnr_bursts 0\nburst_time 0\n";
        assert_eq!(
            parse_cpu_stat(s),
            CpuStat {
                nr_periods: 31,
                nr_throttled: 28,
                throttled_time_ns: 2_301_155_866
            }
        );
        assert_eq!(parse_cpu_stat(""), CpuStat::default());
    }

    #[test]
    fn oom_control() {
        assert_eq!(
            parse_oom_control("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            2
        );
        assert_eq!(parse_oom_control("oom_kill_disable 0\nunder_oom 0\n"), 0);
    }

    #[test]
    fn limits() {
        assert_eq!(memory_limit(9_223_372_036_854_771_712), None);
        assert_eq!(memory_limit(33_554_432), Some(33_554_432));
    }
}
