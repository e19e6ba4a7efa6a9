//! `kubelab experiment`, run against a test node as a user runs it
//! against a lab node (`--server` its read-only port, `--manifest-dir` its
//! static pod directory): the CSV's CPU mean lies within ±10% of the limit,
//! the memory report records the OOM kill, the SVGs hold the limit line and
//! the data series, and the PNGs decode.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::TestNode;

/// The CPU experiments measure throttling, so they run one at a time: a
/// neighbour's busy loop on this 2-core machine shifts what they measure.
static CPU_MEASUREMENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn cpu_measurement() -> std::sync::MutexGuard<'static, ()> {
    CPU_MEASUREMENT.lock().unwrap_or_else(|e| e.into_inner())
}

fn experiment(node: &TestNode, out: &Path, args: &[&str]) -> String {
    let result = Command::new(common::tools_bin())
        .arg("experiment")
        .args(args)
        .args(["--server", &format!("http://127.0.0.1:{}", node.port)])
        .arg("--manifest-dir")
        .arg(&node.manifests)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        result.status.success(),
        "experiment {args:?} failed:\n{stderr}\nagent log:\n{}",
        common::tail(&node.agent_log(), 30)
    );
    let stdout = String::from_utf8(result.stdout).unwrap();
    assert_eq!(stdout.trim(), out.join("report.md").display().to_string());
    assert!(
        std::fs::read_dir(&node.manifests).unwrap().next().is_none(),
        "the experiment's manifest is removed when it ends"
    );
    stderr.into_owned()
}

/// The CSV as header → column, per row.
fn csv(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split(',').map(String::from))
                .collect()
        })
        .collect()
}

/// Mean of the `cpu_cores` column over the rows of one run.
fn cpu_mean(rows: &[std::collections::HashMap<String, String>], run: &str) -> f64 {
    let v: Vec<f64> = rows
        .iter()
        .filter(|r| r["run"] == run)
        .filter_map(|r| r["cpu_cores"].parse().ok())
        .collect();
    assert!(v.len() >= 10, "run {run}: {} rates", v.len());
    v.iter().sum::<f64>() / v.len() as f64
}

fn png_size(path: &PathBuf) -> (u32, u32) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("PNG data decodes");
    // Not a blank image: a plot has many colours.
    let distinct: std::collections::HashSet<&[u8]> = buf.chunks(3).take(200_000).collect();
    assert!(
        distinct.len() > 10,
        "{} colours in {}",
        distinct.len(),
        path.display()
    );
    (info.width, info.height)
}

#[test]
fn cpu_experiment_measures_the_limit_and_plots_it() {
    let _one_at_a_time = cpu_measurement();
    let node = TestNode::start();
    let out = node.root.path().join("report-cpu");
    experiment(
        &node,
        &out,
        &[
            "cpu",
            "--cpu-limit",
            "500m",
            "--cpu-request",
            "250m",
            "--duration",
            "4s",
            "--png",
        ],
    );
    let rows = csv(&out.join("samples.csv"));
    assert!(
        rows.len() >= 35,
        "every 100 ms for 4 s: {} samples",
        rows.len()
    );
    let mean = cpu_mean(&rows, "500m");
    assert!(
        (0.45..=0.55).contains(&mean),
        "CSV mean {mean:.3} cores, limit 0.5"
    );
    // Counted at the container's or the pod's cgroup (both carry the quota),
    // whichever ran out first.
    let last = rows.last().unwrap();
    let share =
        |p: &str, t: &str| last[t].parse::<f64>().unwrap() / last[p].parse::<f64>().unwrap();
    let throttled =
        share("nr_periods", "nr_throttled").max(share("pod_nr_periods", "pod_nr_throttled"));
    assert!(
        throttled > 0.5,
        "a busy loop is throttled in most periods: {last:?}"
    );

    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.starts_with("# CPU experiment: 500m limit"),
        "{report}"
    );
    assert!(report.contains("| CPU request | 250m |"), "{report}");
    assert!(report.contains("| measured mean | **0."), "{report}");
    assert!(
        report.contains("![CPU usage over time against the limit](cpu.svg)"),
        "{report}"
    );

    let svg = std::fs::read_to_string(out.join("cpu.svg")).unwrap();
    assert!(
        svg.contains("limit 500m (0.50 cores)"),
        "the limit line's legend"
    );
    assert!(svg.contains("stroke=\"#D62728\""), "the limit line (red)");
    assert!(svg.contains("usage, 1 s average") && svg.contains("usage, 100 ms samples"));
    assert!(
        svg.contains("stroke=\"#1F77B4\""),
        "the usage series (blue)"
    );
    assert!(svg.contains("request 250m"));
    assert_eq!(png_size(&out.join("cpu.png")), (960, 540));
}

#[test]
fn memory_experiment_records_the_oom_kill() {
    let node = TestNode::start();
    let out = node.root.path().join("report-memory");
    experiment(
        &node,
        &out,
        &[
            "memory",
            "--memory-limit",
            "32Mi",
            "--allocate",
            "64Mi",
            "--ramp",
            "1s",
            "--oom-kills",
            "1",
            "--duration",
            "8s",
            "--png",
        ],
    );
    let rows = csv(&out.join("samples.csv"));
    let last = rows.last().unwrap();
    assert!(last["oom_kills"].parse::<u32>().unwrap() >= 1, "{last:?}");
    let peak = rows
        .iter()
        .filter_map(|r| r["memory_working_set_bytes"].parse::<u64>().ok())
        .max()
        .unwrap();
    assert!(
        peak > 16 << 20 && peak <= 32 << 20,
        "the working set climbs to the limit: {peak}"
    );
    assert!(
        rows.iter()
            .all(|r| r["memory_limit_bytes"].is_empty() || r["memory_limit_bytes"] == "33554432")
    );

    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    let kills: u32 = report
        .split("| OOM kills | **")
        .nth(1)
        .and_then(|r| r.split("**").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(kills >= 1, "the report records the OOM kill:\n{report}");
    assert!(report.contains("| time to OOM kill | "), "{report}");
    assert!(!report.contains("no OOM kill"), "{report}");
    let svg = std::fs::read_to_string(out.join("memory.svg")).unwrap();
    assert!(
        svg.contains("limit 32Mi") && svg.contains("stroke=\"#D62728\""),
        "limit line"
    );
    assert!(
        svg.contains("working set") && svg.contains("stroke=\"#1F77B4\""),
        "data series"
    );
    assert!(svg.contains("OOM kill ("), "the OOM kill is marked");
    assert_eq!(png_size(&out.join("memory.png")), (960, 540));
}

#[test]
fn cpu_comparison_puts_usage_on_the_limit_line() {
    let _one_at_a_time = cpu_measurement();
    let node = TestNode::start();
    let out = node.root.path().join("report-compare");
    experiment(
        &node,
        &out,
        &["cpu", "--compare", "200m,500m", "--duration", "2s"],
    );
    let rows = csv(&out.join("samples.csv"));
    for (run, limit) in [("200m", 0.2), ("500m", 0.5)] {
        let mean = cpu_mean(&rows, run);
        assert!(
            (mean - limit).abs() <= limit * 0.1,
            "run {run}: CSV mean {mean:.3} cores"
        );
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("| 200m | - | 1 busy loop(s) | 0.")
            && report.contains("| 500m | - | 1 busy loop(s) | 0."),
        "{report}"
    );
    let svg = std::fs::read_to_string(out.join("compare.svg")).unwrap();
    assert!(svg.contains("limit (usage = limit)") && svg.contains("measured mean"));
    assert!(
        svg.contains("200m → 0.") && svg.contains("500m → 0."),
        "both runs plotted"
    );
    assert!(out.join("cpu.svg").exists() && !out.join("compare.png").exists());
}

/// Throttled periods over the run: the container's or the pod's cgroup,
/// whichever ran out of quota more often.
fn throttled_share(rows: &[std::collections::HashMap<String, String>], run: &str) -> f64 {
    let last = rows.iter().rfind(|r| r["run"] == run).unwrap();
    let first = rows.iter().find(|r| r["run"] == run).unwrap();
    let delta =
        |k: &str| last[k].parse::<f64>().unwrap_or(0.0) - first[k].parse::<f64>().unwrap_or(0.0);
    let share = |p: &str, t: &str| delta(t) / delta(p).max(1.0);
    share("nr_periods", "nr_throttled").max(share("pod_nr_periods", "pod_nr_throttled"))
}

#[test]
fn cpu_burst_lets_spikes_under_the_limit_through() {
    let _one_at_a_time = cpu_measurement();
    let node = TestNode::start();
    let out = node.root.path().join("report-burst");
    experiment(
        &node,
        &out,
        &[
            "cpu",
            "--cpu-limit",
            "200m",
            "--spike",
            "30ms",
            "--spike-every",
            "400ms",
            "--compare-burst",
            "0,200m",
            "--duration",
            "3s",
        ],
    );
    let rows = csv(&out.join("samples.csv"));
    // A 30 ms spike needs more than the 20 ms quota of a 100 ms period:
    // throttled without burst; with 20 ms banked in the quiet periods it fits,
    // with 10 ms to spare for the fork and kill around it (a 40 ms spike
    // would fill quota and burst exactly, and overrun under load).
    let without = throttled_share(&rows, "200m no burst");
    let with = throttled_share(&rows, "200m burst 200m");
    eprintln!("throttled share: {without:.2} without burst, {with:.2} with");
    assert!(
        without > 0.1,
        "spikes are throttled without burst: {without:.2}"
    );
    assert!(
        with < without / 2.0,
        "burst takes most of the throttling away: {with:.2} with, {without:.2} without"
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("| 200m | - | none | 1 loop(s) spinning 30 ms every 400 ms |")
            && report.contains("| 200m | - | 200m | 1 loop(s) spinning 30 ms every 400 ms |"),
        "{report}"
    );
    assert!(report.contains("Without burst "), "{report}");
    assert!(!report.contains("Not the limit"), "{report}");
}

#[test]
fn probe_experiment_times_the_liveness_restart() {
    let node = TestNode::start();
    let out = node.root.path().join("report-probe");
    experiment(
        &node,
        &out,
        &[
            "probe",
            "--probe",
            "liveness",
            "--period-seconds",
            "1",
            "--failure-threshold",
            "2",
            "--fail-after",
            "1s",
            "--duration",
            "9s",
            "--png",
        ],
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("| expected detection | 1–2 s after health is lost"),
        "{report}"
    );
    let measured: f64 = report
        .split("| measured detection | ")
        .nth(1)
        .and_then(|r| r.split(" s").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no measured detection:\n{report}"));
    assert!(
        (0.8..=3.0).contains(&measured),
        "two failures one second apart restart the container 1-2 s after health is lost, measured {measured} s:\n{report}"
    );
    assert!(
        report
            .contains("| Killing | Container workload failed liveness probe, will be restarted |"),
        "{report}"
    );
    let rows = csv(&out.join("samples.csv"));
    assert!(rows.last().unwrap()["restarts"].parse::<i32>().unwrap() >= 1);
    let svg = std::fs::read_to_string(out.join("probe.svg")).unwrap();
    assert!(
        svg.contains("health lost")
            && svg.contains("probe failed (Unhealthy)")
            && svg.contains("restart (Killing)")
    );
    assert_eq!(png_size(&out.join("probe.png")), (960, 540));
}
