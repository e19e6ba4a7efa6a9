//! `kubelab experiment cpu|memory|probe`: runs a seed-style pod under
//! given limits (or probes) on a running node, samples its container every 100 ms
//! through the agent's API, and writes a report directory: `samples.csv`,
//! `report.md` and plots (`.svg`, and `.png` with `--png`).
//!
//! - [`workload`]: the experiment pods (pure).
//! - [`trial`]: one pod on the node: manifest in, samples, manifest out.
//! - [`sample`]: samples and OOM kills from what the node serves (pure).
//! - [`report`]: summary numbers, CSV, Markdown (pure).
//! - [`plot`]: the plots.

pub mod plot;
pub mod report;
pub mod sample;
pub mod trial;
pub mod workload;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::client::{ClientError, DEFAULT_SERVER, NodeClient};
use plot::PlotError;
use report::{Run, cpu_summary, memory_summary, quantity_bytes, quantity_cores};
use trial::{INTERRUPTED, Node, Trial, TrialError};
use workload::{ProbeKind, ProbeSpec, Resources};

#[derive(clap::Subcommand, Debug, Clone)]
pub enum ExperimentCommand {
    /// Busy loops under a CPU limit: usage against the limit, CFS throttling.
    /// With --compare, the same loops under several limits, one after the other.
    Cpu(CpuArgs),
    /// A paced allocation past a memory limit: working set against the limit,
    /// the OOM kill and the restart.
    Memory(MemoryArgs),
    /// A container that turns unhealthy under a liveness or readiness probe:
    /// when the kubelet notices, against what its period and threshold promise.
    Probe(ProbeArgs),
}

/// Where the experiment runs, and where its report goes.
#[derive(clap::Args, Debug, Clone)]
pub struct NodeArgs {
    /// The agent's read-only API.
    #[arg(long, default_value = DEFAULT_SERVER, env = "KUBELAB_SERVER")]
    pub server: String,
    /// The agent's --pod-manifest-path (the default is `scripts/kubelab up`'s).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/etc/kubelab/manifests",
        env = "KUBELAB_MANIFESTS"
    )]
    pub manifest_dir: PathBuf,
    /// The report directory (default: kubelab-reports/<cpu|memory>-<time>).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Also write the plots as PNG.
    #[arg(long)]
    pub png: bool,
    /// Time between samples.
    #[arg(long, default_value = "100ms", value_name = "DURATION")]
    pub sample_interval: String,
    /// The workload's image (it needs `sh`, `seq` and `awk`).
    #[arg(long, default_value = "busybox")]
    pub image: String,
    /// The pod's name (a static pod's name gets the node's name appended).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct CpuArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// The container's CPU limit.
    #[arg(long, default_value = "500m", value_name = "QUANTITY")]
    pub cpu_limit: String,
    /// The container's CPU request (default: none, so the limit).
    #[arg(long, value_name = "QUANTITY")]
    pub cpu_request: Option<String>,
    /// Run under each of these limits instead (e.g. 100m,250m,500m,1000m).
    #[arg(long, value_delimiter = ',', value_name = "LIMITS")]
    pub compare: Vec<String>,
    /// CFS burst for the pod (the `kubelab.io/cpu-burst` annotation): unused
    /// quota it may bank and spend above the limit within a period.
    #[arg(long, value_name = "QUANTITY")]
    pub burst: Option<String>,
    /// Run the same limit under each of these bursts instead (e.g. 0,200m:
    /// without and with burst). Pair it with --spike: burst helps a workload
    /// that stays under its limit on average.
    #[arg(long, value_delimiter = ',', value_name = "BURSTS", conflicts_with_all = ["compare", "burst"])]
    pub compare_burst: Vec<String>,
    /// Spin in spikes of this length (a bursty workload) instead of without a pause.
    #[arg(long, value_name = "DURATION")]
    pub spike: Option<String>,
    /// How often a spike starts (with --spike).
    #[arg(
        long,
        default_value = "500ms",
        value_name = "DURATION",
        requires = "spike"
    )]
    pub spike_every: String,
    /// Busy loops (default: one more than the whole cores in the limit, at most the CPUs).
    #[arg(long)]
    pub workers: Option<u32>,
    /// How long each run is sampled.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub duration: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct MemoryArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// The container's memory limit.
    #[arg(long, default_value = "64Mi", value_name = "QUANTITY")]
    pub memory_limit: String,
    /// The container's memory request (default: none, so the limit).
    #[arg(long, value_name = "QUANTITY")]
    pub memory_request: Option<String>,
    /// How much the workload allocates and touches.
    #[arg(long, default_value = "128Mi", value_name = "QUANTITY")]
    pub allocate: String,
    /// How long the allocation takes to reach --allocate.
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    pub ramp: String,
    /// The longest the run is sampled.
    #[arg(long, default_value = "20s", value_name = "DURATION")]
    pub duration: String,
    /// Stop a second after this many OOM kills (0: sample the whole duration).
    #[arg(long, default_value_t = 2)]
    pub oom_kills: u32,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// The probe that watches the container.
    #[arg(long, value_enum, default_value_t = ProbeKind::Liveness)]
    pub probe: ProbeKind,
    /// The probe's periodSeconds.
    #[arg(long, default_value_t = 1)]
    pub period_seconds: i32,
    /// The probe's failureThreshold.
    #[arg(long, default_value_t = 3)]
    pub failure_threshold: i32,
    /// The container turns unhealthy this long after each start.
    #[arg(long, default_value = "3s", value_name = "DURATION")]
    pub fail_after: String,
    /// The longest the run is sampled.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub duration: String,
    /// Stop a second after this many detections (restarts or readiness losses; 0: the whole duration).
    #[arg(long, default_value_t = 1)]
    pub detections: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Trial(#[from] TrialError),
    #[error(transparent)]
    Plot(#[from] PlotError),
    #[error("--{flag} {value:?}: {reason}")]
    Flag {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn duration_flag(flag: &'static str, value: &str) -> Result<Duration, ExperimentError> {
    kubelab_rules::duration::parse_go_duration(value).map_err(|e| ExperimentError::Flag {
        flag,
        value: value.into(),
        reason: e.to_string(),
    })
}

/// A CPU quantity without a unit counts cores (`500` is 500 cores, `500m`
/// half of one); a large one is more likely a forgotten `m`.
pub fn unitless_cpu_warning(flag: &str, value: &str) -> Option<String> {
    let cores: f64 = value.trim().parse().ok()?;
    (cores >= 10.0).then(|| {
        format!(
            "warning: --{flag} {value} means {value} cores (a CPU quantity without a unit counts \
             cores); for {value} millicores write {value}m"
        )
    })
}

fn cpu_flag(flag: &'static str, value: &str) -> Result<f64, ExperimentError> {
    if let Some(w) = unitless_cpu_warning(flag, value) {
        eprintln!("{w}");
    }
    quantity_cores(value)
        .filter(|c| *c > 0.0)
        .ok_or_else(|| ExperimentError::Flag {
            flag,
            value: value.into(),
            reason: "expected a positive CPU quantity, e.g. 500m or 1".into(),
        })
}

fn bytes_flag(flag: &'static str, value: &str) -> Result<u64, ExperimentError> {
    quantity_bytes(value)
        .filter(|b| *b > 0)
        .ok_or_else(|| ExperimentError::Flag {
            flag,
            value: value.into(),
            reason: "expected a positive byte quantity, e.g. 64Mi".into(),
        })
}

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C stops sampling; the pod is still removed and the report written.
fn catch_interrupts() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        let _ = unsafe { sigaction(sig, &action) };
    }
}

struct Setup {
    node: Node,
    node_name: String,
    interval: Duration,
    out: PathBuf,
}

fn setup(args: &NodeArgs, kind: &str) -> Result<Setup, ExperimentError> {
    let interval =
        duration_flag("sample-interval", &args.sample_interval)?.max(Duration::from_millis(10));
    let client = NodeClient::new(&args.server)?;
    // Reach the node before anything is written.
    let node_name = client.summary()?.node.node_name;
    let out = args.out.clone().unwrap_or_else(|| {
        let stamp = jiff::Zoned::now().strftime("%Y%m%d-%H%M%S").to_string();
        PathBuf::from("kubelab-reports").join(format!("{kind}-{stamp}"))
    });
    catch_interrupts();
    Ok(Setup {
        node: Node {
            client,
            manifest_dir: args.manifest_dir.clone(),
        },
        node_name,
        interval,
        out,
    })
}

fn run_id(name: &str) -> String {
    let ms = jiff::Timestamp::now().as_millisecond();
    let base: String = name.chars().take(40).collect();
    format!("{base}-{ms}")
}

fn write(path: &Path, text: &str) -> Result<(), ExperimentError> {
    std::fs::write(path, text).map_err(|source| ExperimentError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn create_dir(path: &Path) -> Result<(), ExperimentError> {
    std::fs::create_dir_all(path).map_err(|source| ExperimentError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs the experiment and returns its report directory.
pub fn run(cmd: ExperimentCommand) -> Result<PathBuf, ExperimentError> {
    INTERRUPTED.store(false, Ordering::SeqCst);
    match cmd {
        ExperimentCommand::Cpu(args) => run_cpu(args),
        ExperimentCommand::Memory(args) => run_memory(args),
        ExperimentCommand::Probe(args) => run_probe(args),
    }
}

/// One CPU run: a limit, and the burst it gets.
struct CpuRunSpec {
    limit: String,
    cores: f64,
    burst: Option<String>,
}

/// The runs the flags ask for: one per `--compare` limit, one per
/// `--compare-burst` burst (`0` is no burst), or the one `--cpu-limit`.
fn cpu_runs(args: &CpuArgs) -> Result<Vec<CpuRunSpec>, ExperimentError> {
    let burst_flag = |flag: &'static str, b: &str| -> Result<Option<String>, ExperimentError> {
        let millis =
            kubelab_rules::cpu_burst::parse_millis(b).map_err(|e| ExperimentError::Flag {
                flag,
                value: b.into(),
                reason: e.reason,
            })?;
        Ok((millis > 0).then(|| b.to_string()))
    };
    if !args.compare_burst.is_empty() {
        let cores = cpu_flag("cpu-limit", &args.cpu_limit)?;
        return args
            .compare_burst
            .iter()
            .map(|b| {
                Ok(CpuRunSpec {
                    limit: args.cpu_limit.clone(),
                    cores,
                    burst: burst_flag("compare-burst", b)?,
                })
            })
            .collect();
    }
    let burst = args
        .burst
        .as_deref()
        .map(|b| burst_flag("burst", b))
        .transpose()?
        .flatten();
    let (flag, limits) = if args.compare.is_empty() {
        ("cpu-limit", vec![args.cpu_limit.clone()])
    } else {
        ("compare", args.compare.clone())
    };
    limits
        .into_iter()
        .map(|limit| {
            Ok(CpuRunSpec {
                cores: cpu_flag(flag, &limit)?,
                limit,
                burst: burst.clone(),
            })
        })
        .collect()
}

fn run_cpu(args: CpuArgs) -> Result<PathBuf, ExperimentError> {
    let duration = duration_flag("duration", &args.duration)?;
    let specs = cpu_runs(&args)?;
    if let Some(r) = &args.cpu_request {
        cpu_flag("cpu-request", r)?;
    }
    let spikes = match &args.spike {
        None => None,
        Some(spike) => {
            let spikes = workload::Spikes {
                spike: duration_flag("spike", spike)?,
                every: duration_flag("spike-every", &args.spike_every)?,
            };
            if spikes.spike.is_zero() || spikes.spike >= spikes.every {
                return Err(ExperimentError::Flag {
                    flag: "spike",
                    value: spike.clone(),
                    reason: format!(
                        "must be above 0 and shorter than --spike-every {}",
                        args.spike_every
                    ),
                });
            }
            Some(spikes)
        }
    };
    let setup = setup(&args.node, "cpu")?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut runs = Vec::new();
    for spec in &specs {
        if INTERRUPTED.load(Ordering::SeqCst) {
            break;
        }
        let CpuRunSpec {
            limit,
            cores,
            burst,
        } = spec;
        let workers = args
            .workers
            .unwrap_or_else(|| workload::workers_for((cores * 1000.0).round() as i64, cpus));
        let base = args
            .node
            .name
            .clone()
            .unwrap_or_else(|| "kubelab-exp-cpu".into());
        let mut label = limit.clone();
        if !args.compare_burst.is_empty() {
            label = match burst {
                Some(b) => format!("{limit} burst {b}"),
                None => format!("{limit} no burst"),
            };
        }
        let name = format!(
            "{base}-{}",
            label.to_ascii_lowercase().replace(['.', ' '], "-")
        );
        let resources = Resources {
            cpu_limit: Some(limit.clone()),
            cpu_request: args.cpu_request.clone(),
            cpu_burst: burst.clone(),
            ..Default::default()
        };
        let command = match spikes {
            Some(s) => workload::spiky_command(workers, s),
            None => workload::cpu_command(workers),
        };
        let pod = workload::pod(&name, &run_id(&name), &args.node.image, command, &resources);
        eprintln!(
            "== {label}: {} for {duration:?}",
            match spikes {
                Some(s) => format!(
                    "{workers} loop(s) spinning {} ms every {} ms",
                    s.spike.as_millis(),
                    s.every.as_millis()
                ),
                None => format!("{workers} busy loop(s)"),
            }
        );
        let trial = Trial::start(&setup.node, &pod)?;
        let recording = trial.record(setup.interval, duration, |_, _| false);
        let pod_name = trial.pod_name.clone();
        trial.finish()?;
        let recording = recording?;
        let run = Run {
            label,
            pod: pod_name,
            cpu_limit: Some(limit.clone()),
            cpu_request: args.cpu_request.clone(),
            memory_limit: None,
            memory_request: None,
            cpu_burst: burst.clone(),
            spikes,
            workers: Some(workers),
            allocate: None,
            samples: recording.samples,
            oom_kills: recording.oom_kills,
            interrupted: recording.interrupted,
            starts: recording.starts,
            events: recording.events,
            probe: None,
        };
        let sum = cpu_summary(&run.samples);
        eprintln!(
            "   measured {:.3} cores (limit {cores:.3}), {:.0}% of periods throttled",
            sum.mean.unwrap_or(0.0),
            sum.throttled_share().unwrap_or(0.0) * 100.0
        );
        runs.push(run);
    }
    create_dir(&setup.out)?;
    let mut files = vec!["samples.csv".to_string()];
    write(&setup.out.join("samples.csv"), &report::samples_csv(&runs))?;
    files.extend(plot::save(
        &plot::CpuOverTime { runs: &runs },
        &setup.out,
        "cpu",
        args.node.png,
    )?);
    files.extend(save_pressure(&runs, &setup.out, args.node.png)?);
    if runs.len() > 1 {
        files.extend(plot::save(
            &plot::UsageAgainstLimit { runs: &runs },
            &setup.out,
            "compare",
            args.node.png,
        )?);
    }
    let md = report::cpu_markdown(&setup.node_name, &runs, setup.interval.as_millis(), &files);
    write(&setup.out.join("report.md"), &md)?;
    if INTERRUPTED.load(Ordering::SeqCst) {
        eprintln!("interrupted: the report has what was sampled");
    }
    Ok(setup.out)
}

/// `pressure.svg` (and `.png`) when the runs have PSI figures (cgroup v2).
fn save_pressure(runs: &[Run], out: &Path, png: bool) -> Result<Vec<String>, ExperimentError> {
    let chart = plot::PressureOverTime { runs };
    if !chart.has_data() {
        return Ok(Vec::new());
    }
    Ok(plot::save(&chart, out, "pressure", png)?)
}

fn run_memory(args: MemoryArgs) -> Result<PathBuf, ExperimentError> {
    let duration = duration_flag("duration", &args.duration)?;
    let ramp = duration_flag("ramp", &args.ramp)?;
    bytes_flag("memory-limit", &args.memory_limit)?;
    if let Some(r) = &args.memory_request {
        bytes_flag("memory-request", r)?;
    }
    let allocate = bytes_flag("allocate", &args.allocate)?;
    let setup = setup(&args.node, "memory")?;
    let name = args
        .node
        .name
        .clone()
        .unwrap_or_else(|| "kubelab-exp-memory".into());
    let resources = Resources {
        memory_limit: Some(args.memory_limit.clone()),
        memory_request: args.memory_request.clone(),
        ..Default::default()
    };
    let pod = workload::pod(
        &name,
        &run_id(&name),
        &args.node.image,
        workload::memory_command(allocate, ramp.as_secs_f64()),
        &resources,
    );
    eprintln!(
        "== allocating {} in {ramp:?} under a {} limit (at most {duration:?})",
        args.allocate, args.memory_limit
    );
    let trial = Trial::start(&setup.node, &pod)?;
    let wanted = args.oom_kills as usize;
    let mut enough_at: Option<f64> = None;
    let recording = trial.record(setup.interval, duration, |obs, s| {
        if wanted > 0 && enough_at.is_none() && obs.oom_kills.len() >= wanted {
            enough_at = Some(s.t);
        }
        enough_at.is_some_and(|at| s.t - at >= 1.0)
    });
    let pod_name = trial.pod_name.clone();
    trial.finish()?;
    let recording = recording?;
    let run = Run {
        label: args.memory_limit.clone(),
        pod: pod_name,
        cpu_limit: None,
        cpu_request: None,
        memory_limit: Some(args.memory_limit.clone()),
        memory_request: args.memory_request.clone(),
        cpu_burst: None,
        spikes: None,
        workers: None,
        allocate: Some(allocate),
        samples: recording.samples,
        oom_kills: recording.oom_kills,
        interrupted: recording.interrupted,
        starts: recording.starts,
        events: recording.events,
        probe: None,
    };
    let sum = memory_summary(&run.samples, &run.oom_kills);
    eprintln!(
        "   peak working set {}, {} OOM kill(s){}",
        crate::top::table::bytes(sum.peak_working_set),
        sum.oom_kills,
        sum.time_to_oom
            .map(|a| format!(", the first {a:.1} s after the start"))
            .unwrap_or_default()
    );
    create_dir(&setup.out)?;
    let mut files = vec!["samples.csv".to_string()];
    write(
        &setup.out.join("samples.csv"),
        &report::samples_csv(std::slice::from_ref(&run)),
    )?;
    files.extend(plot::save(
        &plot::MemoryOverTime { run: &run },
        &setup.out,
        "memory",
        args.node.png,
    )?);
    files.extend(save_pressure(
        std::slice::from_ref(&run),
        &setup.out,
        args.node.png,
    )?);
    let md = report::memory_markdown(&setup.node_name, &run, setup.interval.as_millis(), &files);
    write(&setup.out.join("report.md"), &md)?;
    Ok(setup.out)
}

fn run_probe(args: ProbeArgs) -> Result<PathBuf, ExperimentError> {
    let duration = duration_flag("duration", &args.duration)?;
    let fail_after = duration_flag("fail-after", &args.fail_after)?;
    for (flag, v) in [
        ("period-seconds", args.period_seconds),
        ("failure-threshold", args.failure_threshold),
    ] {
        if v < 1 {
            return Err(ExperimentError::Flag {
                flag,
                value: v.to_string(),
                reason: "must be at least 1".into(),
            });
        }
    }
    let spec = ProbeSpec {
        kind: args.probe,
        period_seconds: args.period_seconds,
        failure_threshold: args.failure_threshold,
        fail_after: fail_after.as_secs_f64(),
    };
    let setup = setup(&args.node, "probe")?;
    let name = args
        .node
        .name
        .clone()
        .unwrap_or_else(|| format!("kubelab-exp-{}", spec.kind.as_str()));
    let pod = workload::with_probe(
        workload::pod(
            &name,
            &run_id(&name),
            &args.node.image,
            workload::probe_command(spec.fail_after),
            &Resources::default(),
        ),
        &spec,
    );
    let (lo, hi) = spec.expected_detection();
    eprintln!(
        "== {} probe every {} s, failureThreshold {}; unhealthy {:?} after each start (expected detection {lo:.0}-{hi:.0} s later)",
        spec.kind.as_str(),
        spec.period_seconds,
        spec.failure_threshold,
        fail_after
    );
    let trial = Trial::start(&setup.node, &pod)?;
    let wanted = args.detections as i32;
    let mut was_ready = false;
    let mut detected = 0;
    let mut enough_at: Option<f64> = None;
    let recording = trial.record(setup.interval, duration, |_, s| {
        match spec.kind {
            ProbeKind::Liveness => detected = s.restarts,
            ProbeKind::Readiness => {
                if was_ready && s.ready == Some(false) {
                    detected += 1;
                }
                was_ready = s.ready == Some(true);
            }
        }
        if wanted > 0 && enough_at.is_none() && detected >= wanted {
            enough_at = Some(s.t);
        }
        enough_at.is_some_and(|at| s.t - at >= 1.0)
    });
    let pod_name = trial.pod_name.clone();
    trial.finish()?;
    let recording = recording?;
    let run = Run {
        label: spec.kind.as_str().to_string(),
        pod: pod_name,
        samples: recording.samples,
        oom_kills: recording.oom_kills,
        probe: Some(spec),
        starts: recording.starts,
        events: recording.events,
        interrupted: recording.interrupted,
        ..Default::default()
    };
    let latencies: Vec<String> = report::probe_detections(&run, &spec)
        .iter()
        .filter_map(|d| d.latency())
        .map(|l| format!("{l:.1} s"))
        .collect();
    eprintln!(
        "   detected after {}",
        if latencies.is_empty() {
            "-".into()
        } else {
            latencies.join(", ")
        }
    );
    create_dir(&setup.out)?;
    let mut files = vec!["samples.csv".to_string()];
    write(
        &setup.out.join("samples.csv"),
        &report::samples_csv(std::slice::from_ref(&run)),
    )?;
    files.extend(plot::save(
        &plot::ProbeTimeline {
            run: &run,
            spec: &spec,
        },
        &setup.out,
        "probe",
        args.node.png,
    )?);
    let md = report::probe_markdown(
        &setup.node_name,
        &run,
        &spec,
        setup.interval.as_millis(),
        &files,
    );
    write(&setup.out.join("report.md"), &md)?;
    Ok(setup.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_limit_without_a_unit_warns_that_it_counts_cores() {
        let w = unitless_cpu_warning("cpu-limit", "500").unwrap();
        assert_eq!(
            w,
            "warning: --cpu-limit 500 means 500 cores (a CPU quantity without a unit counts \
             cores); for 500 millicores write 500m"
        );
        assert_eq!(unitless_cpu_warning("cpu-limit", "500m"), None);
        assert_eq!(unitless_cpu_warning("cpu-limit", "1"), None);
        assert_eq!(unitless_cpu_warning("cpu-limit", "0.5"), None);
    }
}
