//! What `top` shows, computed from what the agent serves (pure: no I/O).
//!
//! The Summary API gives cumulative counters (CPU time, CFS periods and
//! throttled periods); rates need two readings, so the model keeps the previous
//! reading of every container and a short CPU history for the sparkline.

use std::collections::{BTreeMap, HashMap, VecDeque};

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::client::{ContainerStats, Event, Summary, Throttling};
use kubelab_rules::quantity;

/// Samples kept for a row's sparkline.
pub const HISTORY: usize = 32;

/// One reading of everything the node serves.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Seconds on a monotonic clock (any origin) when it was taken.
    pub at: f64,
    pub pods: Vec<Pod>,
    pub summary: Summary,
    /// `None` when the agent serves no `/events`.
    pub events: Option<Vec<Event>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerKey {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// One container, as a row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub key: ContainerKey,
    pub labels: BTreeMap<String, String>,
    pub qos: String,
    /// `Running`, or the waiting/terminated reason (`CrashLoopBackOff`, ...).
    pub state: String,
    /// Cores used in the last interval (None: no running container, or no reading yet).
    pub cpu: Option<f64>,
    pub cpu_request: Option<f64>,
    pub cpu_limit: Option<f64>,
    /// Share of CFS periods that were throttled in the last interval (0..=1).
    pub throttled: Option<f64>,
    pub memory: Option<u64>,
    pub memory_request: Option<u64>,
    pub memory_limit: Option<u64>,
    pub oom_kills: u32,
    pub restarts: i32,
    /// Share of the last 10 s some task waited for CPU (`cpu.psi.some.avg10`,
    /// 0..=1); `None` without PSI (cgroup v1).
    pub cpu_pressure: Option<f64>,
    /// The same for memory: stalls in reclaim before an OOM kill.
    pub memory_pressure: Option<f64>,
    /// CPU cores, oldest first.
    pub history: Vec<f64>,
}

impl Row {
    /// What CPU usage is measured against: the limit, else the request.
    pub fn cpu_scale(&self) -> Option<f64> {
        self.cpu_limit.or(self.cpu_request).filter(|s| *s > 0.0)
    }
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    at: f64,
    cpu_ns: u64,
    periods: u64,
    throttled: u64,
    pod_periods: u64,
    pod_throttled: u64,
}

fn max_share(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Throttled share between two readings of (periods, throttled periods).
fn share(prev: (u64, u64), now: (u64, u64)) -> Option<f64> {
    let periods = now.0.checked_sub(prev.0)?;
    let throttled = now.1.saturating_sub(prev.1);
    Some(if periods == 0 {
        0.0
    } else {
        (throttled as f64 / periods as f64).min(1.0)
    })
}

/// Rows from successive snapshots.
#[derive(Debug, Default)]
pub struct TopModel {
    previous: HashMap<ContainerKey, Reading>,
    history: HashMap<ContainerKey, VecDeque<f64>>,
}

impl TopModel {
    pub fn update(&mut self, snap: &Snapshot) -> Vec<Row> {
        let stats = container_stats(&snap.summary);
        let mut rows = Vec::new();
        let mut seen = HashMap::new();
        for pod in &snap.pods {
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            let qos = pod
                .status
                .as_ref()
                .and_then(|s| s.qos_class.clone())
                .unwrap_or_default();
            let statuses = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.clone())
                .unwrap_or_default();
            for container in pod.spec.iter().flat_map(|s| &s.containers) {
                let key = ContainerKey {
                    namespace: namespace.clone(),
                    pod: pod_name.clone(),
                    container: container.name.clone(),
                };
                let status = statuses.iter().find(|s| s.name == container.name);
                let resources = container.resources.as_ref();
                let request = |r: &str| resources?.requests.as_ref()?.get(r).cloned();
                let limit = |r: &str| resources?.limits.as_ref()?.get(r).cloned();
                let running =
                    status.is_some_and(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()));
                let found = stats.get(&key).filter(|_| running);
                let cs = found.map(|f| &f.0);
                let (cpu, throttled) = match found {
                    Some((cs, pod_t)) => self.rates(&key, snap.at, cs, pod_t.as_ref()),
                    None => {
                        self.previous.remove(&key);
                        (None, None)
                    }
                };
                let history = self.history.entry(key.clone()).or_default();
                history.push_back(cpu.unwrap_or(0.0));
                while history.len() > HISTORY {
                    history.pop_front();
                }
                let events_oom = snap
                    .events
                    .as_ref()
                    .map(|ev| count_oom_events(ev, &key))
                    .unwrap_or(0);
                rows.push(Row {
                    labels: labels.clone(),
                    qos: qos.clone(),
                    state: status.map(state_of).unwrap_or_else(|| "Pending".into()),
                    cpu,
                    cpu_request: request("cpu").and_then(|q| cores(&q)),
                    cpu_limit: limit("cpu").and_then(|q| cores(&q)),
                    throttled,
                    memory: cs.map(|c| c.memory.working_set_bytes),
                    memory_request: request("memory").and_then(|q| bytes(&q)),
                    memory_limit: limit("memory")
                        .and_then(|q| bytes(&q))
                        .or_else(|| cs.and_then(|c| c.memory.limit_bytes)),
                    oom_kills: events_oom.max(oom_from_status(status, cs)),
                    restarts: status.map(|s| s.restart_count).unwrap_or(0),
                    cpu_pressure: cs
                        .and_then(|c| c.cpu.psi.as_ref())
                        .map(|p| p.some.avg10 / 100.0),
                    memory_pressure: cs
                        .and_then(|c| c.memory.psi.as_ref())
                        .map(|p| p.some.avg10 / 100.0),
                    history: history.iter().copied().collect(),
                    key: key.clone(),
                });
                seen.insert(key, ());
            }
        }
        self.previous.retain(|k, _| seen.contains_key(k));
        self.history.retain(|k, _| seen.contains_key(k));
        rows
    }

    /// Cores and throttled share since the previous reading of this container
    /// (the agent's own 1 s rate and lifetime share until there is one).
    ///
    /// The pod cgroup of a one-container pod carries the same CFS quota as the
    /// container's, and the kernel counts a throttled period at whichever level
    /// ran out first: the share is the larger of the two.
    fn rates(
        &mut self,
        key: &ContainerKey,
        at: f64,
        cs: &ContainerStats,
        pod: Option<&Throttling>,
    ) -> (Option<f64>, Option<f64>) {
        let t = cs.cpu.throttling.clone().unwrap_or_default();
        let pt = pod.cloned().unwrap_or_default();
        let now = Reading {
            at,
            cpu_ns: cs.cpu.usage_core_nano_seconds,
            periods: t.nr_periods,
            throttled: t.nr_throttled,
            pod_periods: pt.nr_periods,
            pod_throttled: pt.nr_throttled,
        };
        let prev = self.previous.insert(key.clone(), now);
        match prev {
            // A counter that went down is a new container (a restart): no rate yet.
            Some(p)
                if now.at - p.at > 0.05 && now.cpu_ns >= p.cpu_ns && now.periods >= p.periods =>
            {
                let cores = (now.cpu_ns - p.cpu_ns) as f64 / ((now.at - p.at) * 1e9);
                let container = share((p.periods, p.throttled), (now.periods, now.throttled));
                let pod = share(
                    (p.pod_periods, p.pod_throttled),
                    (now.pod_periods, now.pod_throttled),
                );
                (Some(cores), max_share(container, pod))
            }
            _ => {
                let lifetime = |t: &Throttling| {
                    (t.nr_periods > 0).then(|| t.nr_throttled as f64 / t.nr_periods as f64)
                };
                (
                    cs.cpu.usage_nano_cores.map(|n| n as f64 / 1e9),
                    max_share(lifetime(&t), pod.and_then(lifetime)),
                )
            }
        }
    }
}

/// Every container's stats, with its pod's throttling when it is the pod's only container.
fn container_stats(
    summary: &Summary,
) -> HashMap<ContainerKey, (ContainerStats, Option<Throttling>)> {
    let mut out = HashMap::new();
    for pod in &summary.pods {
        let pod_throttling = (pod.containers.len() == 1)
            .then(|| pod.cpu.throttling.clone())
            .flatten();
        for c in &pod.containers {
            out.insert(
                ContainerKey {
                    namespace: pod.pod_ref.namespace.clone(),
                    pod: pod.pod_ref.name.clone(),
                    container: c.name.clone(),
                },
                (c.clone(), pod_throttling.clone()),
            );
        }
    }
    out
}

fn count_oom_events(events: &[Event], key: &ContainerKey) -> u32 {
    let object = format!("{}/{}", key.namespace, key.pod);
    events
        .iter()
        .filter(|e| e.reason == "OOMKilled" && e.object == object)
        .filter(|e| e.container().is_none_or(|c| c == key.container))
        .count() as u32
}

/// Without events: the running cgroup's own count, or at least the last exit.
fn oom_from_status(status: Option<&ContainerStatus>, cs: Option<&ContainerStats>) -> u32 {
    let last_oom = status
        .and_then(|s| s.last_state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"));
    let now_oom = status
        .and_then(|s| s.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"));
    let cgroup = cs.and_then(|c| c.memory.oom_kills).unwrap_or(0) as u32;
    cgroup + u32::from(last_oom || now_oom)
}

fn state_of(s: &ContainerStatus) -> String {
    kubelab_rules::container_state::state_word(s)
}

fn cores(q: &Quantity) -> Option<f64> {
    quantity::cpu_millis(q).ok().map(|m| m as f64 / 1000.0)
}

fn bytes(q: &Quantity) -> Option<u64> {
    quantity::bytes(q).ok().map(|b| b.max(0) as u64)
}

/// Which rows to show: `--namespace` and a label selector (`-l app=web,tier!=db,key,!key`).
#[derive(Debug, Clone, Default)]
pub struct RowFilter {
    pub namespace: Option<String>,
    pub selector: Vec<Requirement>,
    /// Typed in the UI: a substring of `namespace/pod/container`.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

/// Parses an equality-based label selector, as `kubectl get -l` takes it.
pub fn parse_selector(s: &str) -> Result<Vec<Requirement>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let req = if let Some((k, v)) = part.split_once("!=") {
            Requirement::NotEquals(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            Requirement::Equals(k.trim().into(), v.trim().into())
        } else if let Some(k) = part.strip_prefix('!') {
            Requirement::NotExists(k.trim().into())
        } else {
            Requirement::Exists(part.into())
        };
        let key = match &req {
            Requirement::Equals(k, _)
            | Requirement::NotEquals(k, _)
            | Requirement::Exists(k)
            | Requirement::NotExists(k) => k,
        };
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!("label selector {s:?}: bad requirement {part:?}"));
        }
        out.push(req);
    }
    Ok(out)
}

impl RowFilter {
    pub fn matches(&self, row: &Row) -> bool {
        if self
            .namespace
            .as_ref()
            .is_some_and(|ns| *ns != row.key.namespace)
        {
            return false;
        }
        let labels = &row.labels;
        let selected = self.selector.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        });
        let name = format!(
            "{}/{}/{}",
            row.key.namespace, row.key.pod, row.key.container
        );
        selected && (self.text.is_empty() || name.contains(&self.text))
    }

    /// Events about the pods this filter lets through.
    pub fn matches_event(&self, e: &Event, rows: &[Row]) -> bool {
        rows.iter()
            .any(|r| e.object == format!("{}/{}", r.key.namespace, r.key.pod))
            || (self.namespace.is_none() && self.selector.is_empty() && self.text.is_empty())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SortKey {
    #[default]
    Name,
    Cpu,
    Throttled,
    Memory,
    Restarts,
}

impl SortKey {
    pub fn next(self) -> SortKey {
        match self {
            SortKey::Name => SortKey::Cpu,
            SortKey::Cpu => SortKey::Throttled,
            SortKey::Throttled => SortKey::Memory,
            SortKey::Memory => SortKey::Restarts,
            SortKey::Restarts => SortKey::Name,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::Name => "name",
            SortKey::Cpu => "cpu",
            SortKey::Throttled => "throttled",
            SortKey::Memory => "memory",
            SortKey::Restarts => "restarts",
        }
    }
}

/// Sorts rows: by name ascending, every measure descending (ties by name).
pub fn sort_rows(rows: &mut [Row], key: SortKey) {
    let f = |x: Option<f64>| x.unwrap_or(-1.0);
    rows.sort_by(|a, b| {
        let by = match key {
            SortKey::Name => std::cmp::Ordering::Equal,
            SortKey::Cpu => f(b.cpu).total_cmp(&f(a.cpu)),
            SortKey::Throttled => f(b.throttled).total_cmp(&f(a.throttled)),
            SortKey::Memory => b.memory.cmp(&a.memory),
            SortKey::Restarts => b.restarts.cmp(&a.restarts),
        };
        by.then_with(|| a.key.cmp(&b.key))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{CpuStats, MemoryStats, PodRef, PodStats, PsiData, PsiStats, Throttling};

    fn pod(name: &str, status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "resources": {
                "requests": {"cpu": "100m", "memory": "16Mi"},
                "limits": {"cpu": "200m", "memory": "32Mi"}}}]},
            "status": status,
        }))
        .unwrap()
    }

    fn running() -> serde_json::Value {
        serde_json::json!({"qosClass": "Burstable", "containerStatuses": [{
            "name": "c", "image": "busybox", "imageID": "", "ready": true, "restartCount": 1,
            "state": {"running": {}},
            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]})
    }

    fn stats(name: &str, cpu_ns: u64, periods: u64, throttled: u64) -> Summary {
        Summary {
            pods: vec![PodStats {
                pod_ref: PodRef {
                    name: name.into(),
                    namespace: "default".into(),
                    uid: "u".into(),
                },
                containers: vec![ContainerStats {
                    name: "c".into(),
                    cpu: CpuStats {
                        usage_nano_cores: Some(150_000_000),
                        usage_core_nano_seconds: cpu_ns,
                        throttling: Some(Throttling {
                            nr_periods: periods,
                            nr_throttled: throttled,
                            throttled_time_nano_seconds: 0,
                        }),
                        psi: Some(PsiStats {
                            some: PsiData {
                                avg10: 42.5,
                                ..Default::default()
                            },
                            ..Default::default()
                        }),
                    },
                    memory: MemoryStats {
                        working_set_bytes: 5 << 20,
                        ..Default::default()
                    },
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn rates_come_from_the_difference_of_two_readings() {
        let mut model = TopModel::default();
        let snap = |at, ns, p, t| Snapshot {
            at,
            pods: vec![pod("spin", running())],
            summary: stats("spin", ns, p, t),
            events: None,
        };
        // First reading: the agent's own rate and the lifetime share.
        let rows = model.update(&snap(10.0, 1_000_000_000, 100, 50));
        assert_eq!(rows[0].cpu, Some(0.15));
        assert_eq!(rows[0].throttled, Some(0.5));
        // One second later: 0.2 s of CPU, 9 of 10 periods throttled.
        let rows = model.update(&snap(11.0, 1_200_000_000, 110, 59));
        let r = &rows[0];
        assert!((r.cpu.unwrap() - 0.2).abs() < 1e-9, "{r:?}");
        assert!((r.throttled.unwrap() - 0.9).abs() < 1e-9, "{r:?}");
        assert_eq!((r.cpu_request, r.cpu_limit), (Some(0.1), Some(0.2)));
        // PSI from cgroup v2: cpu some avg10 in percent; no memory figures.
        assert_eq!((r.cpu_pressure, r.memory_pressure), (Some(0.425), None));
        assert_eq!(super::super::table::pressure(r.cpu_pressure), "42.5%");
        assert_eq!((r.memory, r.memory_limit), (Some(5 << 20), Some(32 << 20)));
        assert_eq!(r.qos, "Burstable");
        assert_eq!(r.state, "Running");
        assert_eq!(r.restarts, 1);
        assert_eq!(r.oom_kills, 1, "the last exit was an OOM kill");
        assert_eq!(r.history.len(), 2);
        // Throttled at the pod's level (the same quota): the larger share counts.
        let mut pod_level = snap(12.0, 1_400_000_000, 120, 59);
        pod_level.summary.pods[0].cpu.throttling = Some(Throttling {
            nr_periods: 10,
            nr_throttled: 10,
            throttled_time_nano_seconds: 0,
        });
        model.update(&pod_level);
        pod_level.at = 13.0;
        pod_level.summary.pods[0].containers[0]
            .cpu
            .usage_core_nano_seconds = 1_600_000_000;
        pod_level.summary.pods[0].containers[0]
            .cpu
            .throttling
            .as_mut()
            .unwrap()
            .nr_periods = 130;
        pod_level.summary.pods[0].cpu.throttling = Some(Throttling {
            nr_periods: 20,
            nr_throttled: 20,
            throttled_time_nano_seconds: 0,
        });
        let rows = model.update(&pod_level);
        assert_eq!(rows[0].throttled, Some(1.0), "{:?}", rows[0]);
        // A counter that went down is a restarted container: no difference.
        let rows = model.update(&snap(14.0, 5_000, 1, 0));
        assert_eq!(rows[0].cpu, Some(0.15));
    }

    #[test]
    fn oom_kills_are_counted_from_events() {
        let mut model = TopModel::default();
        let ev = |reason: &str, c: &str| Event {
            time: jiff::Timestamp::UNIX_EPOCH,
            type_: "Warning".into(),
            reason: reason.into(),
            message: String::new(),
            object: "default/hog".into(),
            field_path: Some(format!("spec.containers{{{c}}}")),
        };
        let rows = model.update(&Snapshot {
            at: 1.0,
            pods: vec![pod(
                "hog",
                serde_json::json!({"containerStatuses": [{
                "name": "c", "image": "busybox", "imageID": "", "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
            )],
            summary: Summary::default(),
            events: Some(vec![
                ev("OOMKilled", "c"),
                ev("BackOff", "c"),
                ev("OOMKilled", "c"),
                ev("OOMKilled", "other"),
            ]),
        });
        assert_eq!(rows[0].oom_kills, 2);
        assert_eq!(rows[0].state, "CrashLoopBackOff");
        assert_eq!(rows[0].cpu, None);
        assert_eq!(rows[0].memory, None);
    }

    #[test]
    fn selectors_filter_and_sorting() {
        let sel = parse_selector("app=web, tier!=db,team,!legacy").unwrap();
        assert_eq!(
            sel,
            vec![
                Requirement::Equals("app".into(), "web".into()),
                Requirement::NotEquals("tier".into(), "db".into()),
                Requirement::Exists("team".into()),
                Requirement::NotExists("legacy".into()),
            ]
        );
        assert!(parse_selector("=x").is_err());
        let mut model = TopModel::default();
        let mut rows = model.update(&Snapshot {
            at: 0.0,
            pods: vec![pod("b", running()), pod("a", running())],
            summary: stats("b", 0, 0, 0),
            events: None,
        });
        let f = RowFilter {
            selector: parse_selector("app=a").unwrap(),
            ..Default::default()
        };
        assert_eq!(rows.iter().filter(|r| f.matches(r)).count(), 1);
        sort_rows(&mut rows, SortKey::Name);
        assert_eq!(rows[0].key.pod, "a");
        sort_rows(&mut rows, SortKey::Cpu);
        assert_eq!(rows[0].key.pod, "b", "b has a CPU reading");
    }
}
