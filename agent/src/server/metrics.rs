//! `/metrics` in the Prometheus text format, with cAdvisor's and
//! kube-state-metrics' names where those exist, so dashboards users know work.

use std::fmt::Write;

use crate::cgroups::pressure::Pressure;
use crate::context::AgentContext;

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<(String, f64)>,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Self {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }
    fn add(&mut self, labels: &str, v: f64) {
        self.samples.push((labels.to_string(), v));
    }
    fn write(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        for (labels, v) in &self.samples {
            if labels.is_empty() {
                let _ = writeln!(out, "{} {}", self.name, v);
            } else {
                let _ = writeln!(out, "{}{{{}}} {}", self.name, labels, v);
            }
        }
    }
}

pub fn render(ctx: &AgentContext) -> String {
    let mut running = Family::new(
        "kubelet_running_pods",
        "gauge",
        "Number of pods that have a running pod sandbox.",
    );
    let mut containers = Family::new(
        "kubelet_running_containers",
        "gauge",
        "Number of containers currently running.",
    );
    let mut cpu = Family::new(
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed in seconds.",
    );
    let mut periods = Family::new(
        "container_cpu_cfs_periods_total",
        "counter",
        "Number of elapsed enforcement period intervals.",
    );
    let mut throttled = Family::new(
        "container_cpu_cfs_throttled_periods_total",
        "counter",
        "Number of throttled period intervals.",
    );
    let mut throttled_s = Family::new(
        "container_cpu_cfs_throttled_seconds_total",
        "counter",
        "Total time duration the container has been throttled.",
    );
    let mut wss = Family::new(
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set in bytes.",
    );
    let mut usage = Family::new(
        "container_memory_usage_bytes",
        "gauge",
        "Current memory usage in bytes.",
    );
    let mut limit = Family::new(
        "container_spec_memory_limit_bytes",
        "gauge",
        "Memory limit for the container.",
    );
    let mut ooms = Family::new(
        "container_oom_events_total",
        "counter",
        "Count of out of memory events observed for the container.",
    );
    // cAdvisor's PSI counters (KubeletPSI): "waiting" is `some`, "stalled" `full`.
    let mut pressure: Vec<(Family, fn(&Pressure) -> u64)> = vec![
        (
            Family::new(
                "container_pressure_cpu_stalled_seconds_total",
                "counter",
                "Total time duration no tasks in the container could make progress due to CPU congestion.",
            ),
            |p| p.cpu.full.total_us,
        ),
        (
            Family::new(
                "container_pressure_cpu_waiting_seconds_total",
                "counter",
                "Total time duration tasks in the container have waited due to CPU congestion.",
            ),
            |p| p.cpu.some.total_us,
        ),
        (
            Family::new(
                "container_pressure_memory_stalled_seconds_total",
                "counter",
                "Total time duration no tasks in the container could make progress due to memory congestion.",
            ),
            |p| p.memory.full.total_us,
        ),
        (
            Family::new(
                "container_pressure_memory_waiting_seconds_total",
                "counter",
                "Total time duration tasks in the container have waited due to memory congestion.",
            ),
            |p| p.memory.some.total_us,
        ),
        (
            Family::new(
                "container_pressure_io_stalled_seconds_total",
                "counter",
                "Total time duration no tasks in the container could make progress due to IO congestion.",
            ),
            |p| p.io.full.total_us,
        ),
        (
            Family::new(
                "container_pressure_io_waiting_seconds_total",
                "counter",
                "Total time duration tasks in the container have waited due to IO congestion.",
            ),
            |p| p.io.some.total_us,
        ),
    ];
    let mut restarts = Family::new(
        "kube_pod_container_status_restarts_total",
        "counter",
        "The number of container restarts per container.",
    );

    let entries = ctx.status.list();
    running.add("", entries.len() as f64);
    let mut n_containers = 0;
    for e in &entries {
        let ns = escape(e.pod.metadata.namespace.as_deref().unwrap_or_default());
        let pod = escape(e.pod.metadata.name.as_deref().unwrap_or_default());
        for (name, count) in &e.restart_counts {
            restarts.add(
                &format!(
                    "namespace=\"{ns}\",pod=\"{pod}\",container=\"{}\"",
                    escape(name)
                ),
                *count as f64,
            );
        }
        for c in &e.containers {
            n_containers += 1;
            let Ok(s) = ctx.cgroups.stats(&c.cgroup) else {
                continue;
            };
            let l = format!(
                "namespace=\"{ns}\",pod=\"{pod}\",container=\"{}\"",
                escape(&c.name)
            );
            cpu.add(&l, s.cpu_usage_ns as f64 / 1e9);
            periods.add(&l, s.nr_periods as f64);
            throttled.add(&l, s.nr_throttled as f64);
            throttled_s.add(&l, s.throttled_time_ns as f64 / 1e9);
            wss.add(&l, s.memory_working_set_bytes as f64);
            usage.add(&l, s.memory_usage_bytes as f64);
            if let Some(lim) = s.memory_limit_bytes {
                limit.add(&l, lim as f64);
            }
            ooms.add(&l, s.oom_kills as f64);
            if let Some(p) = s.pressure.as_ref().filter(|_| ctx.psi_stats) {
                for (family, total_us) in &mut pressure {
                    family.add(&l, total_us(p) as f64 / 1e6);
                }
            }
        }
    }
    containers.add("", n_containers as f64);
    let mut machine_cores =
        Family::new("machine_cpu_cores", "gauge", "Number of logical CPU cores.");
    machine_cores.add("", crate::host::cpu_count() as f64);
    let mut evictions = Family::new(
        "kubelet_evictions",
        "counter",
        "Cumulative number of pod evictions by eviction signal",
    );
    for (signal, n) in ctx.evictions.snapshot() {
        evictions.add(&format!("eviction_signal=\"{signal}\""), n as f64);
    }
    let mut out = String::new();
    for f in [
        &machine_cores,
        &running,
        &containers,
        &cpu,
        &periods,
        &throttled,
        &throttled_s,
        &wss,
        &usage,
        &limit,
        &ooms,
        &restarts,
        &evictions,
    ] {
        f.write(&mut out);
    }
    for (family, _) in &pressure {
        if !family.samples.is_empty() {
            family.write(&mut out);
        }
    }
    out
}
