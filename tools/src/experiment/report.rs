//! What a run measured (pure): summary numbers, the samples CSV, and the
//! Markdown report.

use std::fmt::Write as _;

use super::sample::{OomKill, RunEvent, Sample};
use super::workload::{ProbeKind, ProbeSpec, Spikes};
use crate::top::table::bytes as fmt_bytes;

/// One run as the report shows it.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// `500m`, `64Mi`: what distinguishes the run.
    pub label: String,
    pub pod: String,
    pub cpu_limit: Option<String>,
    pub cpu_request: Option<String>,
    pub memory_limit: Option<String>,
    pub memory_request: Option<String>,
    /// CFS burst (the `kubelab.io/cpu-burst` annotation).
    pub cpu_burst: Option<String>,
    /// Set when the busy loops spin in spikes rather than without a pause.
    pub spikes: Option<Spikes>,
    /// Busy loops (CPU) or bytes allocated (memory).
    pub workers: Option<u32>,
    pub allocate: Option<u64>,
    pub samples: Vec<Sample>,
    pub oom_kills: Vec<OomKill>,
    pub probe: Option<ProbeSpec>,
    /// Container starts, in seconds since sampling began.
    pub starts: Vec<f64>,
    pub events: Vec<RunEvent>,
    pub interrupted: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuSummary {
    pub samples: usize,
    /// Seconds covered by CPU rates.
    pub seconds: f64,
    /// Cores: CPU time used over the time it was measured in.
    pub mean: Option<f64>,
    /// Cores: the 95th percentile of 1 s averages.
    pub p95: Option<f64>,
    /// Cores: the largest single-interval rate.
    pub max_sample: Option<f64>,
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_seconds: f64,
}

impl CpuSummary {
    pub fn throttled_share(&self) -> Option<f64> {
        (self.periods > 0).then(|| self.throttled_periods as f64 / self.periods as f64)
    }
}

/// Same container from `a` to `b`: every sample after `a` up to `b` has a rate.
fn same_container(samples: &[Sample], a: usize, b: usize) -> bool {
    samples[a].cpu_usage_ns.is_some() && samples[a + 1..=b].iter().all(|s| s.cpu_cores.is_some())
}

/// The nearest-rank percentile `p` (0..=100) of `values`.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    Some(v[rank.min(v.len()) - 1])
}

/// 1 s averages ending at every sample (`window` seconds back, at least).
pub fn windowed(samples: &[Sample], window: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut j = 0;
    for i in 0..samples.len() {
        while j < i && samples[i].t - samples[j + 1].t >= window {
            j += 1;
        }
        if j < i && samples[i].t - samples[j].t >= window * 0.95 && same_container(samples, j, i) {
            let (a, b) = (&samples[j], &samples[i]);
            let used = b.cpu_usage_ns.unwrap_or(0) as f64 - a.cpu_usage_ns.unwrap_or(0) as f64;
            out.push((b.t, used / ((b.t - a.t) * 1e9)));
        }
    }
    out
}

/// Averages over the last `window` seconds of the same container (shorter
/// at its start, from `min_span` on): the line a plot draws.
pub fn smoothed(samples: &[Sample], window: f64, min_span: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for i in 0..samples.len() {
        if samples[i].cpu_usage_ns.is_none() {
            continue;
        }
        let mut j = i;
        while j > 0
            && samples[j].cpu_cores.is_some()
            && samples[i].t - samples[j - 1].t <= window + 1e-9
        {
            j -= 1;
        }
        let span = samples[i].t - samples[j].t;
        if span >= min_span - 1e-9 {
            let used = samples[i].cpu_usage_ns.unwrap_or(0) as f64
                - samples[j].cpu_usage_ns.unwrap_or(0) as f64;
            out.push((samples[i].t, used / (span * 1e9)));
        }
    }
    out
}

pub fn cpu_summary(samples: &[Sample]) -> CpuSummary {
    let mut s = CpuSummary {
        samples: samples.len(),
        ..Default::default()
    };
    let mut used = 0.0;
    // (periods, throttled periods, throttled ns) at the container's and the pod's level.
    let (mut container, mut pod) = ([0u64; 3], [0u64; 3]);
    for pair in samples.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let Some(cores) = b.cpu_cores else { continue };
        let dt = b.t - a.t;
        used += cores * dt;
        s.seconds += dt;
        let delta = |x: Option<u64>, y: Option<u64>| y.unwrap_or(0).saturating_sub(x.unwrap_or(0));
        container[0] += delta(a.nr_periods, b.nr_periods);
        container[1] += delta(a.nr_throttled, b.nr_throttled);
        container[2] += delta(a.throttled_ns, b.throttled_ns);
        pod[0] += delta(a.pod_nr_periods, b.pod_nr_periods);
        pod[1] += delta(a.pod_nr_throttled, b.pod_nr_throttled);
        pod[2] += delta(a.pod_throttled_ns, b.pod_throttled_ns);
    }
    // The kernel counts a throttled period at the level whose quota ran out
    // first; both carry the limit, so the level that throttled more tells.
    let share = |l: &[u64; 3]| {
        if l[0] == 0 {
            0.0
        } else {
            l[1] as f64 / l[0] as f64
        }
    };
    let level = if share(&pod) > share(&container) {
        pod
    } else {
        container
    };
    s.periods = level[0];
    s.throttled_periods = level[1].min(level[0]);
    s.throttled_seconds = level[2] as f64 / 1e9;
    s.mean = (s.seconds > 0.0).then(|| used / s.seconds);
    let rates: Vec<f64> = samples.iter().filter_map(|x| x.cpu_cores).collect();
    s.max_sample = rates.iter().copied().reduce(f64::max);
    let windows: Vec<f64> = windowed(samples, 1.0).into_iter().map(|w| w.1).collect();
    s.p95 = percentile(&windows, 95.0).or_else(|| percentile(&rates, 95.0));
    s
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemorySummary {
    pub limit: Option<u64>,
    pub peak_working_set: Option<u64>,
    pub mean_working_set: Option<u64>,
    pub oom_kills: usize,
    /// Seconds from the killed container's start to its first OOM kill.
    pub time_to_oom: Option<f64>,
    /// When the first OOM kill was seen, in seconds since sampling began.
    pub first_oom_at: Option<f64>,
    pub restarts: i32,
}

pub fn memory_summary(samples: &[Sample], ooms: &[OomKill]) -> MemorySummary {
    let ws: Vec<u64> = samples.iter().filter_map(|s| s.working_set).collect();
    MemorySummary {
        limit: samples.iter().find_map(|s| s.memory_limit),
        peak_working_set: ws.iter().copied().max(),
        mean_working_set: (!ws.is_empty()).then(|| ws.iter().sum::<u64>() / ws.len() as u64),
        oom_kills: ooms.len(),
        time_to_oom: ooms.first().and_then(|o| o.after),
        first_oom_at: ooms.first().map(|o| o.t),
        restarts: samples.last().map(|s| s.restarts).unwrap_or(0),
    }
}

/// One loss of health and when the kubelet acted on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// When the container turned unhealthy (its start + `fail_after`).
    pub lost: f64,
    /// When the kubelet acted: the `Killing` event (liveness) or the first
    /// sample with `ready: false` (readiness).
    pub acted: Option<f64>,
}

impl Detection {
    pub fn latency(&self) -> Option<f64> {
        Some(self.acted? - self.lost)
    }
}

/// Each container run's loss of health (within the sampled time) and its detection.
pub fn probe_detections(run: &Run, spec: &ProbeSpec) -> Vec<Detection> {
    let end = run.samples.last().map(|s| s.t).unwrap_or(0.0);
    let mut starts = run.starts.clone();
    starts.sort_by(f64::total_cmp);
    starts
        .iter()
        .enumerate()
        .map(|(i, start)| {
            let lost = start + spec.fail_after;
            let next_start = starts.get(i + 1).copied().unwrap_or(f64::INFINITY);
            let acted = match spec.kind {
                ProbeKind::Liveness => run
                    .events
                    .iter()
                    .find(|e| e.reason == "Killing" && e.t >= lost && e.t <= next_start)
                    .map(|e| e.t),
                ProbeKind::Readiness => run
                    .samples
                    .iter()
                    .find(|s| s.t >= lost && s.t <= next_start && s.ready == Some(false))
                    .map(|s| s.t),
            };
            Detection { lost, acted }
        })
        .filter(|d| d.lost <= end)
        .collect()
}

pub const CSV_HEADER: &str = "run,t_seconds,cpu_cores,cpu_usage_core_ns,nr_periods,nr_throttled,throttled_time_ns,pod_nr_periods,pod_nr_throttled,pod_throttled_time_ns,memory_working_set_bytes,memory_usage_bytes,memory_limit_bytes,oom_kills,restarts,state,ready,cpu_psi_some_avg10,memory_psi_some_avg10";

/// Every sample of every run, one line each; empty cells where nothing was measured.
pub fn samples_csv(runs: &[Run]) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    // Percentages as the kernel prints them (two decimals); empty on cgroup v1.
    let psi = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_default();
    for run in runs {
        for s in &run.samples {
            let _ = writeln!(
                out,
                "{},{:.3},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                run.label,
                s.t,
                s.cpu_cores.map(|c| format!("{c:.4}")).unwrap_or_default(),
                opt(s.cpu_usage_ns),
                opt(s.nr_periods),
                opt(s.nr_throttled),
                opt(s.throttled_ns),
                opt(s.pod_nr_periods),
                opt(s.pod_nr_throttled),
                opt(s.pod_throttled_ns),
                opt(s.working_set),
                opt(s.memory_usage),
                opt(s.memory_limit),
                s.oom_kills,
                s.restarts,
                s.state,
                s.ready.map(|r| r.to_string()).unwrap_or_default(),
                psi(s.cpu_pressure),
                psi(s.memory_pressure),
            );
        }
    }
    out
}

/// Cores of a CPU quantity (`500m` → 0.5).
pub fn quantity_cores(q: &str) -> Option<f64> {
    let q = k8s_openapi::apimachinery::pkg::api::resource::Quantity(q.to_string());
    kubelab_rules::quantity::cpu_millis(&q)
        .ok()
        .map(|m| m as f64 / 1000.0)
}

pub fn quantity_bytes(q: &str) -> Option<u64> {
    let q = k8s_openapi::apimachinery::pkg::api::resource::Quantity(q.to_string());
    kubelab_rules::quantity::bytes(&q)
        .ok()
        .map(|b| b.max(0) as u64)
}

fn cores(c: Option<f64>) -> String {
    c.map(|c| format!("{c:.3} cores"))
        .unwrap_or_else(|| "-".into())
}

fn share(s: Option<f64>) -> String {
    s.map(|s| format!("{:.0}%", s * 100.0))
        .unwrap_or_else(|| "-".into())
}

fn duration_line(run: &Run, interval_ms: u128) -> String {
    let secs = run.samples.last().map(|s| s.t).unwrap_or(0.0);
    let mut line = format!(
        "{secs:.1} s, {} samples every {interval_ms} ms",
        run.samples.len()
    );
    if run.interrupted {
        line.push_str(" (interrupted)");
    }
    line
}

/// The PSI plot, when the node had figures (cgroup v2).
fn pressure_section(out: &mut String, files: &[String]) {
    if !files.iter().any(|f| f == "pressure.svg") {
        return;
    }
    out.push_str(
        "\n## Pressure\n\n![Pressure stall information over time](pressure.svg)\n\n\
         `cpu.pressure` and `memory.pressure` of the container's cgroup (`some`, 10 s average): \
         the share of time at least one of its tasks waited for CPU (a throttled task waits \
         while its quota is spent) or stalled on memory (reclaim at `memory.high` or near \
         `memory.max`, before an OOM kill).\n",
    );
}

/// Files listed at the end of every report.
fn files_section(out: &mut String, files: &[String]) {
    out.push_str("\n## Files\n\n");
    for f in files {
        let _ = writeln!(out, "- [`{f}`]({f})");
    }
    let _ = writeln!(
        out,
        "\nColumns of `samples.csv`: `{CSV_HEADER}`. Counters are the container cgroup's, \
         read through the agent's `/stats/summary` (`pod_*`: the pod cgroup's, which carries \
         the same CPU quota; the kernel counts a throttled period at the level that ran out \
         first, and the report takes the level that throttled more); `cpu_cores` is the rate \
         since the previous sample of the same container."
    );
}

pub fn cpu_markdown(node: &str, runs: &[Run], interval_ms: u128, files: &[String]) -> String {
    let mut out = String::new();
    if let [run] = runs {
        let sum = cpu_summary(&run.samples);
        let limit = run.cpu_limit.as_deref().and_then(quantity_cores);
        let _ = writeln!(
            out,
            "# CPU experiment: {} limit\n",
            run.cpu_limit.as_deref().unwrap_or("no")
        );
        let _ = writeln!(out, "| | |\n|---|---|");
        let _ = writeln!(out, "| node | {node} |");
        let _ = writeln!(out, "| pod | `{}` |", run.pod);
        let _ = writeln!(
            out,
            "| CPU limit | {} |",
            match (&run.cpu_limit, limit) {
                (Some(q), Some(c)) => format!(
                    "{q} ({c:.2} cores): CFS quota {:.0} µs per 100 ms period",
                    c * 100_000.0
                ),
                _ => "none".into(),
            }
        );
        let _ = writeln!(
            out,
            "| CPU request | {} |",
            run.cpu_request.as_deref().unwrap_or("none")
        );
        if let Some(burst) = &run.cpu_burst {
            let _ = writeln!(out, "| CPU burst | {} |", burst_line(burst, limit));
        }
        let _ = writeln!(out, "| workload | {} |", workload_line(run));
        let _ = writeln!(out, "| duration | {} |", duration_line(run, interval_ms));
        let _ = writeln!(
            out,
            "| measured mean | **{}**{} |",
            cores(sum.mean),
            match (sum.mean, limit) {
                (Some(m), Some(l)) if l > 0.0 => format!(" ({:.1}% of the limit)", m / l * 100.0),
                _ => String::new(),
            }
        );
        let _ = writeln!(out, "| measured p95 (1 s averages) | {} |", cores(sum.p95));
        let _ = writeln!(out, "| largest 100 ms sample | {} |", cores(sum.max_sample));
        let _ = writeln!(
            out,
            "| throttled periods | {} of {} ({}), {:.2} s throttled in all |",
            sum.throttled_periods,
            sum.periods,
            share(sum.throttled_share()),
            sum.throttled_seconds
        );
        let _ = writeln!(
            out,
            "| restarts | {} |",
            run.samples.last().map(|s| s.restarts).unwrap_or(0)
        );
        if let Some(note) = run_note(run, &sum, limit) {
            let _ = writeln!(out, "\n**{note}**");
        }
        out.push_str("\n![CPU usage over time against the limit](cpu.svg)\n");
        out.push_str(
            "\nA single 100 ms sample can exceed the limit: the quota is per CFS period, and a \
             sample rarely lines up with one. Averaged over a second, usage sits on the limit.\n",
        );
    } else {
        let _ = writeln!(out, "# CPU experiment: usage under {} limits\n", runs.len());
        let with_burst = runs.iter().any(|r| r.cpu_burst.is_some());
        let _ = writeln!(
            out,
            "Node {node}. The same workload under each {}, one run after the other.\n",
            if with_burst { "setting" } else { "limit" }
        );
        let _ = writeln!(
            out,
            "| limit | request | {}workload | measured mean | mean / limit | p95 (1 s) | throttled periods | duration |",
            if with_burst { "burst | " } else { "" }
        );
        let _ = writeln!(
            out,
            "|---|---|{}---|---|---|---|---|---|",
            if with_burst { "---|" } else { "" }
        );
        for run in runs {
            let sum = cpu_summary(&run.samples);
            let limit = run.cpu_limit.as_deref().and_then(quantity_cores);
            let _ = writeln!(
                out,
                "| {} | {} | {}{} | {} | {} | {} | {} | {:.1} s |",
                run.cpu_limit.as_deref().unwrap_or("none"),
                run.cpu_request.as_deref().unwrap_or("-"),
                if with_burst {
                    format!("{} | ", run.cpu_burst.as_deref().unwrap_or("none"))
                } else {
                    String::new()
                },
                workload_line(run),
                cores(sum.mean),
                match (sum.mean, limit) {
                    (Some(m), Some(l)) if l > 0.0 => format!("{:.1}%", m / l * 100.0),
                    _ => "-".into(),
                },
                cores(sum.p95),
                share(sum.throttled_share()),
                run.samples.last().map(|s| s.t).unwrap_or(0.0),
            );
        }
        for run in runs {
            let sum = cpu_summary(&run.samples);
            let limit = run.cpu_limit.as_deref().and_then(quantity_cores);
            if let Some(note) = run_note(run, &sum, limit) {
                let _ = writeln!(out, "\n**{}**: {note}", run.label);
            }
        }
        if with_burst {
            out.push_str(&burst_comparison(runs));
        }
        out.push_str(
            "\n![Measured usage against the limit](compare.svg)\n\n\
             Measured mean usage against the limit: on the diagonal when CFS enforces the quota.\n\n\
             ![CPU usage over time under each limit](cpu.svg)\n",
        );
    }
    pressure_section(&mut out, files);
    files_section(&mut out, files);
    out
}

/// `2 busy loops`, or `1 loop spinning 30 ms every 500 ms`.
fn workload_line(run: &Run) -> String {
    let n = run.workers.unwrap_or(1);
    match run.spikes {
        None => format!("{n} busy loop(s)"),
        Some(Spikes { spike, every }) => format!(
            "{n} loop(s) spinning {} ms every {} ms",
            spike.as_millis(),
            every.as_millis()
        ),
    }
}

/// `200m (up to 20000 µs of unused quota banked, spent above the limit)`.
fn burst_line(burst: &str, limit: Option<f64>) -> String {
    let Some(cores) = quantity_cores(burst) else {
        return burst.to_string();
    };
    // The agent keeps the burst within the quota, as the kernel requires.
    let us = match limit {
        Some(l) => cores.min(l),
        None => return format!("{burst} (no effect without a limit)"),
    } * 100_000.0;
    format!(
        "{burst} (up to {us:.0} µs of unused quota banked per 100 ms period, spent above the limit)"
    )
}

/// A note under a run's figures: contention for steady loops only (a spiky
/// workload stays under its limit by design).
fn run_note(run: &Run, sum: &CpuSummary, limit: Option<f64>) -> Option<String> {
    if run.spikes.is_some() {
        return None;
    }
    contention_note(sum.mean, limit, sum.throttled_share())
}

/// With and without burst, side by side: the share of periods throttled and
/// the CPU the spikes got.
fn burst_comparison(runs: &[Run]) -> String {
    let sums: Vec<(&Run, CpuSummary)> = runs.iter().map(|r| (r, cpu_summary(&r.samples))).collect();
    let without = sums.iter().find(|(r, _)| r.cpu_burst.is_none());
    let with = sums.iter().find(|(r, _)| r.cpu_burst.is_some());
    let (Some((_, off)), Some((on_run, on))) = (without, with) else {
        return String::new();
    };
    let (Some(off_share), Some(on_share)) = (off.throttled_share(), on.throttled_share()) else {
        return String::new();
    };
    format!(
        "\nWithout burst {:.0}% of the periods were throttled; with a burst of {} {:.0}% were, \
         and the workload got {} instead of {}. Burst lets a container that stays under its \
         limit on average spend quota it left unused in quiet periods on a spike, instead of \
         being stopped at the limit within each 100 ms period.\n",
        off_share * 100.0,
        on_run.cpu_burst.as_deref().unwrap_or_default(),
        on_share * 100.0,
        cores(on.mean),
        cores(off.mean),
    )
}

/// When a run's usage stayed well under its limit and the quota rarely ran
/// out, the limit did not hold it back: other work on the node's CPUs did.
pub fn contention_note(
    mean: Option<f64>,
    limit: Option<f64>,
    throttled: Option<f64>,
) -> Option<String> {
    let (mean, limit) = (mean?, limit?);
    let throttled = throttled.unwrap_or(0.0);
    (limit > 0.0 && mean < 0.8 * limit && throttled < 0.1).then(|| {
        format!(
            "Not the limit: the loop used {:.0}% of its {limit:.2}-core limit with only {:.0}% of \
             periods throttled, so the CFS quota was not what held it back. The node's CPUs were \
             busy with other work (CPU contention); run it again on a quieter node.",
            mean / limit * 100.0,
            throttled * 100.0
        )
    })
}

pub fn memory_markdown(node: &str, run: &Run, interval_ms: u128, files: &[String]) -> String {
    let sum = memory_summary(&run.samples, &run.oom_kills);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Memory experiment: {} limit, {} allocated\n",
        run.memory_limit.as_deref().unwrap_or("no"),
        fmt_bytes(run.allocate)
    );
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| node | {node} |");
    let _ = writeln!(out, "| pod | `{}` |", run.pod);
    let _ = writeln!(
        out,
        "| memory limit | {} |",
        match (&run.memory_limit, sum.limit) {
            (Some(q), Some(b)) => format!("{q} ({b} bytes)"),
            (Some(q), None) => q.clone(),
            _ => "none".into(),
        }
    );
    let _ = writeln!(
        out,
        "| memory request | {} |",
        run.memory_request.as_deref().unwrap_or("none")
    );
    let _ = writeln!(
        out,
        "| workload | allocates and touches {} |",
        fmt_bytes(run.allocate)
    );
    let _ = writeln!(out, "| duration | {} |", duration_line(run, interval_ms));
    let _ = writeln!(
        out,
        "| peak working set | {} |",
        fmt_bytes(sum.peak_working_set)
    );
    let _ = writeln!(out, "| OOM kills | **{}** |", sum.oom_kills);
    let _ = writeln!(
        out,
        "| time to OOM kill | {} |",
        match (sum.time_to_oom, sum.first_oom_at) {
            (Some(a), Some(t)) =>
                format!("{a:.1} s after the container started (seen at t = {t:.1} s)"),
            (None, Some(t)) => format!("seen at t = {t:.1} s"),
            _ => "no OOM kill".into(),
        }
    );
    let _ = writeln!(out, "| restarts | {} |", sum.restarts);
    out.push_str("\n![Memory working set over time against the limit](memory.svg)\n");
    if sum.oom_kills > 0 {
        out.push_str(
            "\nThe kernel OOM-killed the container when its cgroup reached the limit \
             (`memory.max` / `memory.limit_in_bytes`); the agent read the kill from the \
             cgroup and reports it as `OOMKilled`, exit code 137.\n",
        );
    }
    pressure_section(&mut out, files);
    files_section(&mut out, files);
    out
}

pub fn probe_markdown(
    node: &str,
    run: &Run,
    spec: &ProbeSpec,
    interval_ms: u128,
    files: &[String],
) -> String {
    let detections = probe_detections(run, spec);
    let (lo, hi) = spec.expected_detection();
    let kind = spec.kind.as_str();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Probe experiment: a failing {kind} probe every {} s, failureThreshold {}\n",
        spec.period_seconds, spec.failure_threshold
    );
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| node | {node} |");
    let _ = writeln!(out, "| pod | `{}` |", run.pod);
    let _ = writeln!(
        out,
        "| probe | {kind}: `exec cat /tmp/healthy`, periodSeconds {}, failureThreshold {}, timeoutSeconds 1 |",
        spec.period_seconds, spec.failure_threshold
    );
    let _ = writeln!(
        out,
        "| workload | healthy for {:.1} s after each start, then not |",
        spec.fail_after
    );
    let _ = writeln!(out, "| duration | {} |", duration_line(run, interval_ms));
    let _ = writeln!(
        out,
        "| expected detection | {lo:.0}–{hi:.0} s after health is lost ((failureThreshold − 1) to failureThreshold periods) |"
    );
    let measured: Vec<String> = detections
        .iter()
        .filter_map(|d| d.latency())
        .map(|l| format!("{l:.1} s"))
        .collect();
    let _ = writeln!(
        out,
        "| measured detection | {} |",
        if measured.is_empty() {
            "none in the sampled time".to_string()
        } else {
            measured.join(", ")
        }
    );
    let unhealthy = run
        .events
        .iter()
        .filter(|e| e.reason == "Unhealthy")
        .count();
    let _ = writeln!(out, "| `Unhealthy` events | {unhealthy} |");
    let _ = writeln!(
        out,
        "| restarts | {} |",
        run.samples.last().map(|s| s.restarts).unwrap_or(0)
    );
    out.push_str("\n![Probe timeline](probe.svg)\n");
    out.push_str(&format!(
        "\nThe kubelet acts after {} consecutive failures (failureThreshold): the first failing probe \
         comes within a period of the loss, so the {} happens {lo:.0}–{hi:.0} s after it (plus the \
         probe's own run time).\n",
        spec.failure_threshold,
        match spec.kind {
            ProbeKind::Liveness => "restart",
            ProbeKind::Readiness => "change to `ready: false`",
        }
    ));
    if !run.events.is_empty() {
        out.push_str("\n## Events\n\n| t (s) | reason | message |\n|---|---|---|\n");
        for e in &run.events {
            let _ = writeln!(
                out,
                "| {:.2} | {} | {} |",
                e.t,
                e.reason,
                e.message.replace('|', "\\|")
            );
        }
    }
    pressure_section(&mut out, files);
    files_section(&mut out, files);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_far_below_its_limit_and_rarely_throttled_is_contention() {
        let note = contention_note(Some(0.08), Some(0.2), Some(0.02)).unwrap();
        assert!(
            note.starts_with("Not the limit: the loop used 40% of its 0.20-core limit"),
            "{note}"
        );
        assert!(note.contains("CPU contention"), "{note}");
        // On the limit, or throttled most of the time: the limit is what bit.
        assert_eq!(contention_note(Some(0.19), Some(0.2), Some(0.9)), None);
        assert_eq!(contention_note(Some(0.1), Some(0.2), Some(0.6)), None);
        assert_eq!(contention_note(Some(0.1), None, None), None);
    }

    fn sample(t: f64, cpu_ns: u64, rate: bool, periods: u64, throttled: u64) -> Sample {
        Sample {
            t,
            cpu_cores: None,
            cpu_usage_ns: Some(cpu_ns),
            nr_periods: Some(periods),
            nr_throttled: Some(throttled),
            throttled_ns: Some(throttled * 80_000_000),
            state: "Running".into(),
            ..Default::default()
        }
        .with_rate(rate)
    }

    impl Sample {
        fn with_rate(mut self, rate: bool) -> Sample {
            self.cpu_cores = rate.then_some(0.0);
            self
        }
    }

    fn fix_rates(mut v: Vec<Sample>) -> Vec<Sample> {
        for i in 1..v.len() {
            if v[i].cpu_cores.is_some() {
                let d = (v[i].cpu_usage_ns.unwrap() - v[i - 1].cpu_usage_ns.unwrap()) as f64;
                v[i].cpu_cores = Some(d / ((v[i].t - v[i - 1].t) * 1e9));
            }
        }
        v
    }

    #[test]
    fn cpu_summary_of_a_steady_half_core() {
        // 0.5 cores for 3 s, sampled every 100 ms; one period per sample, 9 in 10 throttled.
        let samples = fix_rates(
            (0..=30)
                .map(|i| sample(i as f64 * 0.1, i * 50_000_000, i > 0, i, i * 9 / 10))
                .collect(),
        );
        let s = cpu_summary(&samples);
        assert!((s.mean.unwrap() - 0.5).abs() < 1e-9, "{s:?}");
        assert!((s.p95.unwrap() - 0.5).abs() < 1e-9, "{s:?}");
        assert!((s.seconds - 3.0).abs() < 1e-9);
        assert_eq!((s.periods, s.throttled_periods), (30, 27));
        assert!((s.throttled_share().unwrap() - 0.9).abs() < 1e-9);
        let csv = samples_csv(&[Run {
            label: "500m".into(),
            pod: "p".into(),
            cpu_limit: Some("500m".into()),
            cpu_request: None,
            memory_limit: None,
            memory_request: None,
            cpu_burst: None,
            spikes: None,
            workers: Some(1),
            allocate: None,
            samples: samples.clone(),
            ..Default::default()
        }]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines.len(), 32);
        assert!(
            lines[2].starts_with("500m,0.100,0.5000,50000000,1,0,0,,,,"),
            "{}",
            lines[2]
        );
        assert_eq!(
            lines[1].split(',').nth(2),
            Some(""),
            "no rate for the first sample"
        );
    }

    #[test]
    fn throttling_counts_at_the_level_that_throttled_more() {
        let mut samples = fix_rates(
            (0..=10)
                .map(|i| sample(i as f64 * 0.1, i * 20_000_000, i > 0, i, i / 2))
                .collect(),
        );
        for (i, s) in samples.iter_mut().enumerate() {
            s.pod_nr_periods = Some(i as u64);
            s.pod_nr_throttled = Some(i as u64);
            s.pod_throttled_ns = Some(i as u64 * 80_000_000);
        }
        let s = cpu_summary(&samples);
        assert_eq!((s.periods, s.throttled_periods), (10, 10), "{s:?}");
        assert!((s.throttled_seconds - 0.8).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn a_restart_breaks_rates_and_windows() {
        let mut samples: Vec<Sample> = (0..=10)
            .map(|i| sample(i as f64 * 0.1, i * 20_000_000, i > 0, i, i))
            .collect();
        // A new container at t = 1.1 s: counters from zero, no rate.
        samples.extend((0..=10).map(|i| sample(1.1 + i as f64 * 0.1, i * 20_000_000, i > 0, i, i)));
        let samples = fix_rates(samples);
        let s = cpu_summary(&samples);
        assert!((s.mean.unwrap() - 0.2).abs() < 1e-9, "{s:?}");
        assert!((s.seconds - 2.0).abs() < 1e-9, "{s:?}");
        let line = smoothed(&samples, 1.0, 0.2);
        assert!(line.iter().all(|(_, c)| (c - 0.2).abs() < 1e-9), "{line:?}");
        assert_eq!(
            line.len(),
            2 * 9,
            "from 0.2 s into each container: {line:?}"
        );
        let w = windowed(&samples, 1.0);
        assert!(w.iter().all(|(_, c)| (c - 0.2).abs() < 1e-9), "{w:?}");
        assert_eq!(w.len(), 2, "one full second in each container: {w:?}");
    }

    #[test]
    fn probe_detection_per_container_run() {
        let spec = ProbeSpec {
            kind: ProbeKind::Liveness,
            period_seconds: 1,
            failure_threshold: 3,
            fail_after: 2.0,
        };
        let ev = |t: f64, reason: &str| RunEvent {
            t,
            reason: reason.into(),
            message: String::new(),
        };
        let run = Run {
            samples: vec![
                Sample {
                    t: 0.0,
                    ..Default::default()
                },
                Sample {
                    t: 9.0,
                    ..Default::default()
                },
            ],
            starts: vec![-0.5, 4.2],
            events: vec![
                ev(2.5, "Unhealthy"),
                ev(4.1, "Killing"),
                ev(8.0, "Unhealthy"),
            ],
            ..Default::default()
        };
        let d = probe_detections(&run, &spec);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!((d[0].latency().unwrap() - 2.6).abs() < 1e-9, "{d:?}");
        assert_eq!((d[1].lost, d[1].acted), (6.2, None));
        let md = probe_markdown("n", &run, &spec, 100, &[]);
        assert!(md.contains("| measured detection | 2.6 s |"), "{md}");
        assert!(md.contains("| expected detection | 2–3 s"), "{md}");
        assert!(md.contains("| `Unhealthy` events | 2 |"), "{md}");
    }

    #[test]
    fn percentiles_and_memory_summary() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 95.0), Some(95.0));
        assert_eq!(percentile(&[3.0], 95.0), Some(3.0));
        assert_eq!(percentile(&[], 95.0), None);
        let samples = vec![
            Sample {
                t: 0.0,
                working_set: Some(10),
                memory_limit: Some(100),
                ..Default::default()
            },
            Sample {
                t: 0.1,
                working_set: Some(90),
                memory_limit: Some(100),
                ..Default::default()
            },
            Sample {
                t: 0.2,
                restarts: 1,
                oom_kills: 1,
                ..Default::default()
            },
        ];
        let ooms = vec![OomKill {
            t: 0.2,
            after: Some(1.25),
        }];
        let m = memory_summary(&samples, &ooms);
        assert_eq!(m.limit, Some(100));
        assert_eq!(m.peak_working_set, Some(90));
        assert_eq!((m.oom_kills, m.restarts), (1, 1));
        assert_eq!(m.time_to_oom, Some(1.25));
        assert_eq!(quantity_cores("250m"), Some(0.25));
        assert_eq!(quantity_bytes("64Mi"), Some(64 << 20));
    }
}
