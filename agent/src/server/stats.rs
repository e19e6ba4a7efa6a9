//! The Summary API (`/stats/summary`, kubelet's stats/v1alpha1 shape) and the
//! sampler behind its rates: CPU usage is a counter in the cgroup, so
//! `usageNanoCores` needs two readings; a task takes one every second, as
//! cAdvisor does, so a request is answered from memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::Serialize;

use crate::cgroups::pressure::Pressure;
use crate::cgroups::{CgroupPath, CgroupStats};
use crate::context::AgentContext;

pub const SAMPLE_PERIOD: Duration = Duration::from_secs(1);

#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    cpu_ns: u64,
}

/// The two newest CPU readings of every cgroup the agent watches.
#[derive(Clone, Default)]
pub struct CpuSampler {
    samples: Arc<Mutex<HashMap<String, (Option<Sample>, Sample)>>>,
}

impl CpuSampler {
    fn record(&self, key: String, cpu_ns: u64) {
        let now = Sample {
            at: Instant::now(),
            cpu_ns,
        };
        let mut map = self.samples.lock().expect("lock");
        let entry = map.entry(key).or_insert((None, now));
        if entry.1.at != now.at {
            *entry = (Some(entry.1), now);
        }
    }

    /// Cores used between the two newest readings, in nanocores.
    fn nano_cores(&self, key: &str) -> Option<u64> {
        let map = self.samples.lock().expect("lock");
        let (prev, last) = map.get(key)?;
        let prev = prev.as_ref()?;
        let dt = last.at.duration_since(prev.at).as_nanos() as f64;
        if dt <= 0.0 {
            return None;
        }
        let used = last.cpu_ns.saturating_sub(prev.cpu_ns) as f64;
        Some((used / dt * 1e9) as u64)
    }

    fn retain(&self, keys: &std::collections::HashSet<String>) {
        self.samples
            .lock()
            .expect("lock")
            .retain(|k, _| keys.contains(k));
    }

    /// Takes one reading of every pod and container cgroup and of the node.
    pub fn sample_all(&self, ctx: &AgentContext) {
        let mut keys = std::collections::HashSet::new();
        for entry in ctx.status.list() {
            let mut paths: Vec<&CgroupPath> = vec![&entry.pod_cgroup];
            paths.extend(entry.containers.iter().map(|c| &c.cgroup));
            for path in paths {
                if let Ok(stats) = ctx.cgroups.stats(path) {
                    keys.insert(path.to_string());
                    self.record(path.to_string(), stats.cpu_usage_ns);
                }
            }
        }
        if let Some(ns) = node_cpu_ns() {
            keys.insert(NODE_KEY.into());
            self.record(NODE_KEY.into(), ns);
        }
        self.retain(&keys);
    }

    pub async fn run(self, ctx: Arc<AgentContext>) {
        let mut tick = tokio::time::interval(SAMPLE_PERIOD);
        loop {
            tick.tick().await;
            let (me, ctx2) = (self.clone(), ctx.clone());
            let _ = tokio::task::spawn_blocking(move || me.sample_all(&ctx2)).await;
        }
    }
}

const NODE_KEY: &str = "<node>";

/// Busy CPU time of the whole node from `/proc/stat`, in nanoseconds.
fn node_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy = all - idle - iowait.
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).unwrap_or(&0);
    let ticks = 100; // USER_HZ on Linux
    Some((total - idle) * (1_000_000_000 / ticks))
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    pub usage_core_nano_seconds: u64,
    /// CFS throttling counters of the cgroup (not in kubelet's API: this
    /// project's addition, so limits can be watched at work).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttling: Option<Throttling>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psi: Option<PsiStats>,
}

/// KEP-4205's PSI figures of one resource (kubelet's `PSIStats`).
#[derive(Serialize, Default, Debug, Clone, PartialEq)]
pub struct PsiStats {
    pub full: PsiData,
    pub some: PsiData,
}

/// kubelet's `PSIData`: the averages in percent; `total` as cAdvisor passes
/// it on, the kernel's microseconds.
#[derive(Serialize, Default, Debug, Clone, PartialEq)]
pub struct PsiData {
    pub total: u64,
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
}

impl From<&crate::cgroups::pressure::PsiStats> for PsiStats {
    fn from(p: &crate::cgroups::pressure::PsiStats) -> Self {
        let data = |d: &crate::cgroups::pressure::PsiData| PsiData {
            total: d.total_us,
            avg10: d.avg10,
            avg60: d.avg60,
            avg300: d.avg300,
        };
        PsiStats {
            full: data(&p.full),
            some: data(&p.some),
        }
    }
}

/// kubelet's `IOStats`: only its PSI so far.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct IoStats {
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psi: Option<PsiStats>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Throttling {
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_time_nano_seconds: u64,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    pub usage_bytes: u64,
    pub working_set_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub psi: Option<PsiStats>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSummary {
    pub name: String,
    pub start_time: String,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io: Option<IoStats>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodReference {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSummary {
    pub pod_ref: PodReference,
    pub start_time: String,
    pub containers: Vec<ContainerSummary>,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io: Option<IoStats>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSummary {
    pub node_name: String,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io: Option<IoStats>,
}

#[derive(Serialize)]
pub struct Summary {
    pub node: NodeSummary,
    pub pods: Vec<PodSummary>,
}

/// The PSI parts of a summary: cpu, memory, io (all `None` without figures).
fn psi_of(
    pressure: Option<&Pressure>,
    now: &str,
) -> (Option<PsiStats>, Option<PsiStats>, Option<IoStats>) {
    match pressure {
        None => (None, None, None),
        Some(p) => (
            Some((&p.cpu).into()),
            Some((&p.memory).into()),
            Some(IoStats {
                time: now.to_string(),
                psi: Some((&p.io).into()),
            }),
        ),
    }
}

fn cpu_of(sampler: &CpuSampler, key: &str, stats: &CgroupStats, now: &str) -> CpuStats {
    CpuStats {
        time: now.to_string(),
        usage_nano_cores: sampler.nano_cores(key),
        usage_core_nano_seconds: stats.cpu_usage_ns,
        throttling: Some(Throttling {
            nr_periods: stats.nr_periods,
            nr_throttled: stats.nr_throttled,
            throttled_time_nano_seconds: stats.throttled_time_ns,
        }),
        psi: None,
    }
}

fn memory_of(stats: &CgroupStats, now: &str) -> MemoryStats {
    MemoryStats {
        time: now.to_string(),
        available_bytes: stats
            .memory_limit_bytes
            .map(|l| l.saturating_sub(stats.memory_working_set_bytes)),
        usage_bytes: stats.memory_usage_bytes,
        working_set_bytes: stats.memory_working_set_bytes,
        limit_bytes: stats.memory_limit_bytes,
        oom_kills: Some(stats.oom_kills),
        psi: None,
    }
}

/// CPU, memory and io stats of a cgroup, PSI included when `psi` (the
/// `KubeletPSI` gate) and the cgroup has figures.
fn cgroup_summary(
    sampler: &CpuSampler,
    key: &str,
    stats: &CgroupStats,
    now: &str,
    psi: bool,
) -> (CpuStats, MemoryStats, Option<IoStats>) {
    let (cpu_psi, memory_psi, io) = psi_of(stats.pressure.as_ref().filter(|_| psi), now);
    let mut cpu = cpu_of(sampler, key, stats, now);
    cpu.psi = cpu_psi;
    let mut memory = memory_of(stats, now);
    memory.psi = memory_psi;
    (cpu, memory, io)
}

pub fn summary(ctx: &AgentContext, sampler: &CpuSampler) -> Summary {
    let now = Timestamp::now().to_string();
    let mem = crate::host::meminfo();
    let total = mem.get("MemTotal").copied().unwrap_or(0);
    let available = mem.get("MemAvailable").copied().unwrap_or(0);
    let free = mem.get("MemFree").copied().unwrap_or(0);
    // The node's PSI from /proc/pressure (there on cgroup v1 hosts too).
    let node_pressure = if ctx.psi_stats {
        crate::cgroups::pressure::node_pressure().unwrap_or_else(|e| {
            tracing::debug!(error = %e, "reading /proc/pressure");
            None
        })
    } else {
        None
    };
    let (node_cpu_psi, node_memory_psi, node_io) = psi_of(node_pressure.as_ref(), &now);
    let node = NodeSummary {
        node_name: ctx.node_name.clone(),
        cpu: CpuStats {
            time: now.clone(),
            usage_nano_cores: sampler.nano_cores(NODE_KEY),
            usage_core_nano_seconds: node_cpu_ns().unwrap_or(0),
            throttling: None,
            psi: node_cpu_psi,
        },
        memory: MemoryStats {
            time: now.clone(),
            available_bytes: Some(available),
            usage_bytes: total.saturating_sub(free),
            working_set_bytes: total.saturating_sub(available),
            limit_bytes: Some(total),
            oom_kills: None,
            psi: node_memory_psi,
        },
        io: node_io,
    };
    let mut pods = Vec::new();
    for entry in ctx.status.list() {
        let meta = &entry.pod.metadata;
        let start = entry
            .pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| now.clone());
        let pod_stats = ctx.cgroups.stats(&entry.pod_cgroup).unwrap_or_default();
        let containers = entry
            .containers
            .iter()
            .filter_map(|c| {
                let stats = ctx.cgroups.stats(&c.cgroup).ok()?;
                let (cpu, memory, io) =
                    cgroup_summary(sampler, &c.cgroup.to_string(), &stats, &now, ctx.psi_stats);
                Some(ContainerSummary {
                    name: c.name.clone(),
                    start_time: c.started_at.to_string(),
                    cpu,
                    memory,
                    io,
                })
            })
            .collect();
        let (cpu, memory, io) = cgroup_summary(
            sampler,
            &entry.pod_cgroup.to_string(),
            &pod_stats,
            &now,
            ctx.psi_stats,
        );
        pods.push(PodSummary {
            pod_ref: PodReference {
                name: meta.name.clone().unwrap_or_default(),
                namespace: meta.namespace.clone().unwrap_or_default(),
                uid: meta.uid.clone().unwrap_or_default(),
            },
            start_time: start,
            containers,
            cpu,
            memory,
            io,
        });
    }
    Summary { node, pods }
}
