//! The report's plots (plotters), each drawn once per format: SVG always,
//! PNG when asked. Text is set in DejaVu Sans, embedded in the binary, so a
//! PNG looks the same on a machine without fonts.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::report::{Run, cpu_summary, probe_detections, quantity_cores, smoothed};
use super::workload::ProbeSpec;

const SIZE: (u32, u32) = (960, 540);
const FONT: &str = "sans-serif";

/// Run colours, in order (the limit lines take their run's colour).
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];
const LIMIT: RGBColor = RGBColor(214, 39, 40);
const REQUEST: RGBColor = RGBColor(127, 127, 127);

#[derive(Debug, thiserror::Error)]
#[error("drawing {path}: {detail}")]
pub struct PlotError {
    pub path: PathBuf,
    pub detail: String,
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// A chart that draws on any backend.
pub trait Chart {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

fn register_fonts() {
    static FONTS: Once = Once::new();
    FONTS.call_once(|| {
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

/// Writes `<stem>.svg` (and `<stem>.png`) in `dir`; returns the file names.
pub fn save(
    chart: &impl Chart,
    dir: &Path,
    stem: &str,
    png: bool,
) -> Result<Vec<String>, PlotError> {
    register_fonts();
    let mut files = Vec::new();
    let svg = dir.join(format!("{stem}.svg"));
    let err = |path: &Path, e: &dyn std::fmt::Display| PlotError {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    {
        let area = SVGBackend::new(&svg, SIZE).into_drawing_area();
        chart.draw(&area).map_err(|e| err(&svg, &e))?;
        area.present().map_err(|e| err(&svg, &e))?;
    }
    files.push(format!("{stem}.svg"));
    if png {
        let path = dir.join(format!("{stem}.png"));
        let area = BitMapBackend::new(&path, SIZE).into_drawing_area();
        chart.draw(&area).map_err(|e| err(&path, &e))?;
        area.present().map_err(|e| err(&path, &e))?;
        files.push(format!("{stem}.png"));
    }
    Ok(files)
}

/// A chart with f64 axes.
type Chart2d<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The series' legend, in the report's style.
fn draw_legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart2d<'a, DB>,
    position: SeriesLabelPosition,
) -> DrawResult<DB> {
    chart
        .configure_series_labels()
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .position(position)
        .draw()
}

/// The runs' time axis: 0 to the last sample (at least 1 s).
fn time_extent(runs: &[Run]) -> f64 {
    runs.iter()
        .flat_map(|r| r.samples.last())
        .map(|s| s.t)
        .fold(1.0, f64::max)
}

/// A chart of a value over time, `0..x_max` by `0..y_max`, its mesh drawn.
fn time_chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    title: String,
    x_max: f64,
    y_max: f64,
    y_desc: &str,
) -> Result<Chart2d<'a, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc(y_desc)
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .light_line_style(RGBColor(246, 246, 246))
        .draw()?;
    Ok(chart)
}

fn legend_line(color: RGBColor, width: u32) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(width))
}

/// CPU cores over time: every run's 100 ms rates (faint) and 1 s averages,
/// and its limit (dashed).
pub struct CpuOverTime<'a> {
    pub runs: &'a [Run],
}

impl Chart for CpuOverTime<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        area.fill(&WHITE)?;
        let x_max = time_extent(self.runs);
        let limits: Vec<Option<f64>> = self
            .runs
            .iter()
            .map(|r| r.cpu_limit.as_deref().and_then(quantity_cores))
            .collect();
        let y_max = self
            .runs
            .iter()
            .flat_map(|r| r.samples.iter().filter_map(|s| s.cpu_cores))
            .chain(limits.iter().flatten().copied())
            .fold(0.1, f64::max)
            * 1.15;
        let title = match self.runs {
            [run] => format!(
                "CPU usage against a {} limit",
                run.cpu_limit.as_deref().unwrap_or("(no)")
            ),
            _ => "CPU usage under each limit".to_string(),
        };
        let mut chart = time_chart(area, title, x_max, y_max, "CPU (cores)")?;
        let single = self.runs.len() == 1;
        for (i, run) in self.runs.iter().enumerate() {
            let color = if single {
                PALETTE[0]
            } else {
                PALETTE[i % PALETTE.len()]
            };
            let raw: Vec<(f64, f64)> = run
                .samples
                .iter()
                .filter_map(|s| Some((s.t, s.cpu_cores?)))
                .collect();
            if single {
                chart
                    .draw_series(LineSeries::new(raw, color.mix(0.35).stroke_width(1)))?
                    .label("usage, 100 ms samples")
                    .legend(legend_line(RGBColor(160, 190, 220), 1));
            }
            let smooth = smoothed(&run.samples, 1.0, 0.2);
            let label = if single {
                "usage, 1 s average".to_string()
            } else {
                let mean = cpu_summary(&run.samples).mean.unwrap_or(0.0);
                format!("{} limit: {mean:.3} cores", run.label)
            };
            chart
                .draw_series(LineSeries::new(smooth, color.stroke_width(3)))?
                .label(label)
                .legend(legend_line(color, 3));
            if let Some(limit) = limits[i] {
                let limit_color = if single { LIMIT } else { color };
                let series = chart.draw_series(DashedLineSeries::new(
                    vec![(0.0, limit), (x_max, limit)],
                    10,
                    6,
                    limit_color.stroke_width(2).into(),
                ))?;
                if single {
                    series
                        .label(format!("limit {} ({limit:.2} cores)", run.label))
                        .legend(legend_line(LIMIT, 2));
                }
            }
            if single && let Some(req) = run.cpu_request.as_deref().and_then(quantity_cores) {
                chart
                    .draw_series(DashedLineSeries::new(
                        vec![(0.0, req), (x_max, req)],
                        4,
                        4,
                        REQUEST.stroke_width(2).into(),
                    ))?
                    .label(format!(
                        "request {}",
                        run.cpu_request.as_deref().unwrap_or("")
                    ))
                    .legend(legend_line(REQUEST, 2));
            }
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        Ok(())
    }
}

/// Pressure stall information over time: the share of the last 10 s some
/// task of the container waited for CPU (a throttled container waits while
/// its quota is spent) and stalled on memory (reclaim before an OOM kill).
pub struct PressureOverTime<'a> {
    pub runs: &'a [Run],
}

impl PressureOverTime<'_> {
    /// Whether any sample has PSI figures (none on cgroup v1).
    pub fn has_data(&self) -> bool {
        self.runs
            .iter()
            .flat_map(|r| &r.samples)
            .any(|s| s.cpu_pressure.is_some() || s.memory_pressure.is_some())
    }
}

impl Chart for PressureOverTime<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        area.fill(&WHITE)?;
        let mut chart = time_chart(
            area,
            "Pressure stall information (some, 10 s average)".into(),
            time_extent(self.runs),
            100.0,
            "time stalled (%)",
        )?;
        let single = self.runs.len() == 1;
        for (i, run) in self.runs.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let name = |what: &str| {
                if single {
                    what.to_string()
                } else {
                    format!("{} {what}", run.label)
                }
            };
            let cpu: Vec<(f64, f64)> = run
                .samples
                .iter()
                .filter_map(|s| Some((s.t, s.cpu_pressure?)))
                .collect();
            if !cpu.is_empty() {
                chart
                    .draw_series(LineSeries::new(cpu, color.stroke_width(3)))?
                    .label(name("cpu waiting"))
                    .legend(legend_line(color, 3));
            }
            let memory: Vec<(f64, f64)> = run
                .samples
                .iter()
                .filter_map(|s| Some((s.t, s.memory_pressure?)))
                .collect();
            if memory.iter().any(|(_, v)| *v > 0.0) || single {
                let mcolor = if single { LIMIT } else { color };
                chart
                    .draw_series(DashedLineSeries::new(
                        memory,
                        8,
                        4,
                        mcolor.stroke_width(2).into(),
                    ))?
                    .label(name("memory stalled"))
                    .legend(legend_line(mcolor, 2));
            }
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        Ok(())
    }
}

/// Measured mean usage against the limit, one point per run, and the
/// diagonal where usage equals the limit.
pub struct UsageAgainstLimit<'a> {
    pub runs: &'a [Run],
}

impl Chart for UsageAgainstLimit<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        area.fill(&WHITE)?;
        let points: Vec<(f64, f64, f64)> = self
            .runs
            .iter()
            .filter_map(|r| {
                let limit = r.cpu_limit.as_deref().and_then(quantity_cores)?;
                let s = cpu_summary(&r.samples);
                Some((limit, s.mean?, s.p95.unwrap_or(s.mean?)))
            })
            .collect();
        let max = points
            .iter()
            .flat_map(|p| [p.0, p.1, p.2])
            .fold(0.1, f64::max)
            * 1.3;
        let mut chart = ChartBuilder::on(area)
            .caption("Measured CPU usage against the limit", (FONT, 24))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..max, 0f64..max)?;
        chart
            .configure_mesh()
            .x_desc("CPU limit (cores)")
            .y_desc("measured usage (cores)")
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .light_line_style(RGBColor(246, 246, 246))
            .draw()?;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, 0.0), (max, max)],
                10,
                6,
                LIMIT.stroke_width(2).into(),
            ))?
            .label("limit (usage = limit)")
            .legend(legend_line(LIMIT, 2));
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.0, p.1)),
                PALETTE[0].stroke_width(2),
            ))?
            .label("measured mean")
            .legend(legend_line(PALETTE[0], 2));
        chart.draw_series(
            points
                .iter()
                .map(|p| Circle::new((p.0, p.1), 6, PALETTE[0].filled())),
        )?;
        chart
            .draw_series(
                points
                    .iter()
                    .map(|p| TriangleMarker::new((p.0, p.2), 6, PALETTE[1].filled())),
            )?
            .label("p95 of 1 s averages")
            .legend(|(x, y)| TriangleMarker::new((x + 12, y), 6, PALETTE[1].filled()));
        chart.draw_series(points.iter().map(|p| {
            EmptyElement::at((p.0, p.1))
                + Text::new(
                    format!("{:.0}m → {:.3} cores", p.0 * 1000.0, p.1),
                    (12, 4),
                    (FONT, 15).into_font(),
                )
        }))?;
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        Ok(())
    }
}

/// Memory working set over time against the limit, OOM kills marked.
pub struct MemoryOverTime<'a> {
    pub run: &'a Run,
}

impl Chart for MemoryOverTime<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        const MIB: f64 = (1 << 20) as f64;
        area.fill(&WHITE)?;
        let run = self.run;
        let x_max = run.samples.last().map(|s| s.t).unwrap_or(0.0).max(1.0);
        let limit = run
            .samples
            .iter()
            .find_map(|s| s.memory_limit)
            .map(|l| l as f64 / MIB)
            .or_else(|| {
                run.memory_limit
                    .as_deref()
                    .and_then(super::report::quantity_bytes)
                    .map(|b| b as f64 / MIB)
            });
        let ws: Vec<(f64, f64)> = run
            .samples
            .iter()
            .filter_map(|s| Some((s.t, s.working_set? as f64 / MIB)))
            .collect();
        let y_max = ws.iter().map(|p| p.1).chain(limit).fold(1.0, f64::max) * 1.2;
        let title = format!(
            "Memory working set against a {} limit",
            run.memory_limit.as_deref().unwrap_or("(no)")
        );
        let mut chart = time_chart(area, title, x_max, y_max, "memory (MiB)")?;
        // One line per container run: a gap where no container ran.
        let mut segments: Vec<Vec<(f64, f64)>> = Vec::new();
        let mut current = Vec::new();
        for s in &run.samples {
            match s.working_set {
                Some(w) => current.push((s.t, w as f64 / MIB)),
                None if !current.is_empty() => segments.push(std::mem::take(&mut current)),
                None => {}
            }
        }
        if !current.is_empty() {
            segments.push(current);
        }
        for (i, seg) in segments.into_iter().enumerate() {
            let series = chart.draw_series(LineSeries::new(seg, PALETTE[0].stroke_width(3)))?;
            if i == 0 {
                series
                    .label("working set")
                    .legend(legend_line(PALETTE[0], 3));
            }
        }
        if let Some(limit) = limit {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(0.0, limit), (x_max, limit)],
                    10,
                    6,
                    LIMIT.stroke_width(2).into(),
                ))?
                .label(format!(
                    "limit {}",
                    run.memory_limit.as_deref().unwrap_or("")
                ))
                .legend(legend_line(LIMIT, 2));
        }
        for (i, kill) in run.oom_kills.iter().enumerate() {
            let series = chart.draw_series(LineSeries::new(
                vec![(kill.t, 0.0), (kill.t, y_max)],
                RGBColor(0, 0, 0).stroke_width(2),
            ))?;
            if i == 0 {
                series
                    .label("OOM kill")
                    .legend(legend_line(RGBColor(0, 0, 0), 2));
            }
            let text = match kill.after {
                Some(a) => format!(" OOM kill ({a:.1} s after start)"),
                None => " OOM kill".to_string(),
            };
            chart.draw_series(std::iter::once(Text::new(
                text,
                (kill.t, y_max * 0.93),
                (FONT, 15).into_font().color(&BLACK),
            )))?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        Ok(())
    }
}

/// A probe run over time: readiness (or, for a liveness probe, the restart
/// count) as a step line, when health was lost,
/// each failed probe (`Unhealthy`) and each restart (`Killing`).
pub struct ProbeTimeline<'a> {
    pub run: &'a Run,
    pub spec: &'a ProbeSpec,
}

impl Chart for ProbeTimeline<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        area.fill(&WHITE)?;
        let run = self.run;
        let x_max = run.samples.last().map(|s| s.t).unwrap_or(0.0).max(1.0);
        // A liveness probe restarts the container: its plot counts restarts.
        // A readiness probe only takes the pod out of endpoints: it plots ready.
        let liveness = matches!(self.spec.kind, super::workload::ProbeKind::Liveness);
        let level = |s: &super::sample::Sample| {
            if liveness {
                s.restarts as f64
            } else if s.ready == Some(true) {
                1.0
            } else {
                0.0
            }
        };
        let y_max = if liveness {
            run.samples.iter().map(level).fold(1.0, f64::max)
        } else {
            1.0
        };
        let (bottom, top) = (-0.1 * y_max, 1.6 * y_max);
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!(
                    "{} probe every {} s, failureThreshold {}",
                    match self.spec.kind {
                        super::workload::ProbeKind::Liveness => "Liveness",
                        super::workload::ProbeKind::Readiness => "Readiness",
                    },
                    self.spec.period_seconds,
                    self.spec.failure_threshold
                ),
                (FONT, 24),
            )
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..x_max, bottom..top)?;
        chart
            .configure_mesh()
            .x_desc("time (s)")
            .y_desc(if liveness { "restarts" } else { "ready" })
            .y_labels(if liveness { y_max as usize + 1 } else { 2 })
            .y_label_formatter(&|y| {
                if liveness {
                    format!("{}", y.round() as i64)
                } else if *y > 0.5 {
                    "true".into()
                } else {
                    "false".into()
                }
            })
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .light_line_style(RGBColor(246, 246, 246))
            .draw()?;
        // Readiness (or the restart count) as a step line.
        let mut steps: Vec<(f64, f64)> = Vec::new();
        for s in &run.samples {
            let y = level(s);
            if let Some(&(_, prev)) = steps.last()
                && prev != y
            {
                steps.push((s.t, prev));
            }
            steps.push((s.t, y));
        }
        chart
            .draw_series(LineSeries::new(steps, PALETTE[0].stroke_width(3)))?
            .label(if liveness {
                "restarts (the liveness probe's kills)"
            } else {
                "ready"
            })
            .legend(legend_line(PALETTE[0], 3));
        let lost_color = PALETTE[2];
        for (i, d) in probe_detections(run, self.spec).iter().enumerate() {
            let series = chart.draw_series(DashedLineSeries::new(
                vec![(d.lost, bottom), (d.lost, top)],
                8,
                5,
                lost_color.stroke_width(2).into(),
            ))?;
            if i == 0 {
                series
                    .label("health lost")
                    .legend(legend_line(lost_color, 2));
            }
            if let Some(l) = d.latency() {
                chart.draw_series(std::iter::once(Text::new(
                    format!(" detected after {l:.1} s"),
                    (d.lost, 1.45 * y_max),
                    (FONT, 15).into_font(),
                )))?;
            }
        }
        let failed: Vec<f64> = run
            .events
            .iter()
            .filter(|e| e.reason == "Unhealthy")
            .map(|e| e.t)
            .collect();
        chart
            .draw_series(
                failed
                    .iter()
                    .map(|t| TriangleMarker::new((*t, 0.5 * y_max), 7, LIMIT.filled())),
            )?
            .label("probe failed (Unhealthy)")
            .legend(|(x, y)| TriangleMarker::new((x + 12, y), 6, LIMIT.filled()));
        for (i, e) in run
            .events
            .iter()
            .filter(|e| e.reason == "Killing")
            .enumerate()
        {
            let series = chart.draw_series(LineSeries::new(
                vec![(e.t, bottom), (e.t, top)],
                RGBColor(0, 0, 0).stroke_width(2),
            ))?;
            if i == 0 {
                series
                    .label("restart (Killing)")
                    .legend(legend_line(RGBColor(0, 0, 0), 2));
            }
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        Ok(())
    }
}
