//! One sample of the experiment's container, made from what the node serves
//! (pure): its cgroup counters from `/stats/summary`, its status from `/pods`.
//!
//! CPU use is a counter, so a rate needs the previous sample of the *same*
//! container: a restarted container has a new cgroup whose counters start
//! again from zero. OOM kills are read from the container's status (a new
//! terminated state with reason `OOMKilled`); the killed cgroup is gone by then.

use std::collections::HashSet;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus};

use crate::client::{ContainerStats, Throttling};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// Seconds since sampling began.
    pub t: f64,
    /// Cores used since the previous sample of the same container.
    pub cpu_cores: Option<f64>,
    pub cpu_usage_ns: Option<u64>,
    pub nr_periods: Option<u64>,
    pub nr_throttled: Option<u64>,
    pub throttled_ns: Option<u64>,
    /// The pod cgroup's throttling counters (a one-container pod's cgroup has
    /// the same quota, and the kernel counts a throttled period at whichever
    /// level ran out first).
    pub pod_nr_periods: Option<u64>,
    pub pod_nr_throttled: Option<u64>,
    pub pod_throttled_ns: Option<u64>,
    pub working_set: Option<u64>,
    pub memory_usage: Option<u64>,
    pub memory_limit: Option<u64>,
    /// OOM kills seen since sampling began.
    pub oom_kills: u32,
    /// Restarts since sampling began.
    pub restarts: i32,
    /// `Running`, or the waiting/terminated reason.
    pub state: String,
    /// The container's readiness as the status reports it.
    pub ready: Option<bool>,
    /// `cpu.psi.some.avg10` and `memory.psi.some.avg10`: percent of the last
    /// 10 s some task waited for CPU / stalled on memory (cgroup v2 only).
    pub cpu_pressure: Option<f64>,
    pub memory_pressure: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OomKill {
    /// When it happened, in seconds since sampling began.
    pub t: f64,
    /// Seconds from that container's start to the kill.
    pub after: Option<f64>,
}

/// Everything sampled in one run.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    pub samples: Vec<Sample>,
    pub oom_kills: Vec<OomKill>,
    /// When each container run started, in seconds since sampling began.
    pub starts: Vec<f64>,
    /// The pod's events while it was sampled.
    pub events: Vec<RunEvent>,
    pub interrupted: bool,
}

/// An event about the experiment's pod.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEvent {
    /// Seconds since sampling began.
    pub t: f64,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone)]
struct Previous {
    t: f64,
    start: String,
    cpu_ns: u64,
}

/// Turns successive readings into samples.
#[derive(Debug)]
pub struct Observer {
    t0: Timestamp,
    previous: Option<Previous>,
    base_restarts: Option<i32>,
    seen_exits: HashSet<String>,
    /// The start time of the newest container seen running.
    last_start: Option<Timestamp>,
    pub oom_kills: Vec<OomKill>,
    /// Container starts, in seconds since `t0`.
    pub starts: Vec<f64>,
}

impl Observer {
    /// `t0`: the wall-clock time of `t = 0`.
    pub fn new(t0: Timestamp) -> Self {
        Observer {
            t0,
            previous: None,
            base_restarts: None,
            seen_exits: HashSet::new(),
            last_start: None,
            oom_kills: Vec::new(),
            starts: Vec::new(),
        }
    }

    /// Seconds since `t0` of a wall-clock time.
    pub fn since_t0(&self, at: Timestamp) -> f64 {
        at.duration_since(self.t0).as_secs_f64()
    }

    pub fn observe(
        &mut self,
        t: f64,
        stats: Option<&ContainerStats>,
        pod_throttling: Option<&Throttling>,
        status: Option<&ContainerStatus>,
    ) -> Sample {
        let first = self.base_restarts.is_none();
        let restart_count = status.map(|s| s.restart_count).unwrap_or(0);
        let base = *self.base_restarts.get_or_insert(restart_count);
        // Exits: the current state (restartPolicy Never) and the last one.
        let exits: Vec<&ContainerStateTerminated> = status
            .into_iter()
            .flat_map(|s| [s.state.as_ref(), s.last_state.as_ref()])
            .flatten()
            .filter_map(|st| st.terminated.as_ref())
            .collect();
        for exit in exits {
            let key = format!(
                "{}|{:?}|{:?}",
                exit.container_id.as_deref().unwrap_or(""),
                exit.started_at,
                exit.finished_at
            );
            // Exits from before sampling began are not this run's.
            if self.seen_exits.insert(key) && !first && exit.reason.as_deref() == Some("OOMKilled")
            {
                // Marked where the kill happened (the exit's finishedAt, which
                // the runtime takes from the kernel's OOM event), not where a
                // sample first saw it.
                let killed = exit
                    .finished_at
                    .as_ref()
                    .map(|f| self.since_t0(f.0))
                    .filter(|k| (0.0..=t).contains(k))
                    .unwrap_or(t);
                let now = self.t0 + jiff::SignedDuration::from_secs_f64(killed);
                let started = exit.started_at.as_ref().map(|s| s.0).or(self.last_start);
                let after = started
                    .map(|s| now.duration_since(s).as_secs_f64())
                    .filter(|a| *a >= 0.0);
                self.oom_kills.push(OomKill { t: killed, after });
            }
        }
        let running = status
            .and_then(|s| s.state.as_ref())
            .is_some_and(|s| s.running.is_some());
        let stats = stats.filter(|_| running);
        let mut sample = Sample {
            t,
            oom_kills: self.oom_kills.len() as u32,
            restarts: restart_count - base,
            state: status.map(state_of).unwrap_or_else(|| "Pending".into()),
            ready: status.map(|s| s.ready),
            ..Default::default()
        };
        let Some(cs) = stats else {
            self.previous = None;
            return sample;
        };
        if let Ok(start) = cs.start_time.parse::<Timestamp>()
            && self.last_start != Some(start)
        {
            self.last_start = Some(start);
            self.starts.push(self.since_t0(start));
        }
        let cpu_ns = cs.cpu.usage_core_nano_seconds;
        sample.cpu_cores = self.previous.as_ref().and_then(|p| {
            (p.start == cs.start_time && cpu_ns >= p.cpu_ns && t > p.t)
                .then(|| (cpu_ns - p.cpu_ns) as f64 / ((t - p.t) * 1e9))
        });
        self.previous = Some(Previous {
            t,
            start: cs.start_time.clone(),
            cpu_ns,
        });
        let throttling = cs.cpu.throttling.clone();
        sample.cpu_usage_ns = Some(cpu_ns);
        sample.nr_periods = throttling.as_ref().map(|x| x.nr_periods);
        sample.nr_throttled = throttling.as_ref().map(|x| x.nr_throttled);
        sample.throttled_ns = throttling.as_ref().map(|x| x.throttled_time_nano_seconds);
        sample.pod_nr_periods = pod_throttling.map(|x| x.nr_periods);
        sample.pod_nr_throttled = pod_throttling.map(|x| x.nr_throttled);
        sample.pod_throttled_ns = pod_throttling.map(|x| x.throttled_time_nano_seconds);
        sample.working_set = Some(cs.memory.working_set_bytes);
        sample.memory_usage = Some(cs.memory.usage_bytes);
        sample.memory_limit = cs.memory.limit_bytes;
        sample.cpu_pressure = cs.cpu.psi.as_ref().map(|p| p.some.avg10);
        sample.memory_pressure = cs.memory.psi.as_ref().map(|p| p.some.avg10);
        sample
    }
}

fn state_of(s: &ContainerStatus) -> String {
    kubelab_rules::container_state::state_word(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{CpuStats, MemoryStats};

    fn stats(start: &str, cpu_ns: u64, ws: u64) -> ContainerStats {
        ContainerStats {
            name: "workload".into(),
            start_time: start.into(),
            cpu: CpuStats {
                usage_core_nano_seconds: cpu_ns,
                ..Default::default()
            },
            memory: MemoryStats {
                working_set_bytes: ws,
                limit_bytes: Some(64 << 20),
                ..Default::default()
            },
        }
    }

    fn status(v: serde_json::Value) -> ContainerStatus {
        let mut base = serde_json::json!({"name": "workload", "image": "busybox", "imageID": "",
            "ready": true, "restartCount": 0, "state": {"running": {}}});
        base.as_object_mut()
            .unwrap()
            .extend(v.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn cpu_rate_within_one_container_and_oom_kills_from_status() {
        let t0: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        let mut obs = Observer::new(t0);
        let s1 = "2023-12-31T23:59:59.5Z";
        // An OOM kill from before sampling began is not counted.
        let before = status(serde_json::json!({"restartCount": 1,
            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "containerID": "old"}}}));
        let a = obs.observe(
            0.0,
            Some(&stats(s1, 1_000_000_000, 1 << 20)),
            None,
            Some(&before),
        );
        assert_eq!((a.cpu_cores, a.oom_kills, a.restarts), (None, 0, 0));
        let b = obs.observe(
            0.5,
            Some(&stats(s1, 1_100_000_000, 2 << 20)),
            None,
            Some(&before),
        );
        assert!((b.cpu_cores.unwrap() - 0.2).abs() < 1e-9);
        assert_eq!(b.working_set, Some(2 << 20));
        // Killed: restarted with a new container (new start time, counters from zero).
        let after = status(serde_json::json!({"restartCount": 2,
            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "containerID": "c2"}}}));
        let c = obs.observe(
            1.0,
            Some(&stats("2024-01-01T00:00:00.9Z", 5_000, 0)),
            None,
            Some(&after),
        );
        assert_eq!((c.oom_kills, c.restarts, c.cpu_cores), (1, 1, None));
        let kill = &obs.oom_kills[0];
        assert_eq!(kill.t, 1.0);
        assert!((kill.after.unwrap() - 1.5).abs() < 1e-6, "{kill:?}");
        // Seen again: not counted twice. Waiting: no stats.
        let waiting = status(
            serde_json::json!({"restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "containerID": "c2"}}}),
        );
        let d = obs.observe(1.5, Some(&stats("x", 1, 1)), None, Some(&waiting));
        assert_eq!(
            (d.oom_kills, d.state.as_str(), d.working_set),
            (1, "CrashLoopBackOff", None)
        );
        assert_eq!(d.ready, Some(true));
        assert_eq!(obs.starts.len(), 2);
        assert!(
            (obs.starts[0] + 0.5).abs() < 1e-6 && (obs.starts[1] - 0.9).abs() < 1e-6,
            "{:?}",
            obs.starts
        );
    }

    #[test]
    fn an_oom_kill_is_placed_at_its_finish_time_not_where_it_was_seen() {
        let t0: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        let mut obs = Observer::new(t0);
        let running = status(serde_json::json!({}));
        obs.observe(0.0, None, None, Some(&running));
        // Seen at 3.0 s; the container started at 0.5 s and was killed at 2.2 s.
        let killed = status(serde_json::json!({"restartCount": 1,
            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "containerID": "c1",
                "startedAt": "2024-01-01T00:00:00.5Z", "finishedAt": "2024-01-01T00:00:02.2Z"}}}));
        obs.observe(3.0, None, None, Some(&killed));
        let kill = &obs.oom_kills[0];
        assert!((kill.t - 2.2).abs() < 1e-6, "{kill:?}");
        assert!((kill.after.unwrap() - 1.7).abs() < 1e-6, "{kill:?}");
    }
}
