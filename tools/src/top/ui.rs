//! The terminal screen of `top` (ratatui): a header line, one row per
//! container, a pane of recent events, a line of keys. Fits 80×24; wider
//! terminals get the namespace, request, state and a longer history.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row as TableRow, Table};

use super::model::{Row, SortKey};
use super::table::{bar, bytes, cores, percent, pressure, sparkline};
use crate::client::{Event, NodeStats};

/// Terminals at least this wide get the wide layout.
const WIDE: u16 = 140;
/// From this width the short layout also shows REQ and STATE: what a
/// request and a crash loop look like matter more than long names.
const MEDIUM: u16 = 100;

pub struct View<'a> {
    pub server: &'a str,
    pub node: Option<&'a NodeStats>,
    pub node_cores: Option<u64>,
    pub rows: &'a [Row],
    pub events: &'a [Event],
    pub sort: SortKey,
    pub warnings_only: bool,
    pub filter_text: &'a str,
    pub editing_filter: bool,
    pub error: Option<&'a str>,
    pub updated: Option<jiff::Zoned>,
}

pub fn draw(frame: &mut Frame, view: &View) {
    let area = frame.area();
    let events_height = if area.height >= 20 { 7 } else { 4 };
    let [header, table, events, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(events_height),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(header_line(view)), header);
    draw_table(frame, table, view);
    draw_events(frame, events, view);
    frame.render_widget(Paragraph::new(footer_line(view)), footer);
}

fn header_line(view: &View) -> Line<'static> {
    let mut spans = vec![Span::styled(
        " kubelab top ",
        Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD),
    )];
    if let Some(node) = view.node {
        spans.push(Span::raw(format!(" {} ", node.node_name)));
        let cpu = node.cpu.usage_nano_cores.map(|n| n as f64 / 1e9);
        let of_cores = view
            .node_cores
            .map(|n| format!("/{n} cores"))
            .unwrap_or_default();
        spans.push(Span::raw(format!(
            " cpu {}{of_cores}  mem {}/{} ",
            cores(cpu),
            bytes(Some(node.memory.working_set_bytes)),
            bytes(node.memory.limit_bytes)
        )));
    } else {
        spans.push(Span::raw(format!(" {} ", view.server)));
    }
    spans.push(Span::raw(format!(" {} containers", view.rows.len())));
    if let Some(t) = &view.updated {
        spans.push(Span::raw(format!("  {}", t.strftime("%H:%M:%S"))));
    }
    if let Some(err) = view.error {
        spans.push(Span::styled(
            format!("  {err}"),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
    }
    Line::from(spans)
}

fn footer_line(view: &View) -> Line<'static> {
    if view.editing_filter {
        return Line::from(vec![
            Span::styled(" filter: ", Style::new().add_modifier(Modifier::REVERSED)),
            Span::raw(format!("{}▏ (Enter: keep, Esc: clear)", view.filter_text)),
        ]);
    }
    let key = |k: &str| {
        Span::styled(
            format!(" {k} "),
            Style::new().add_modifier(Modifier::REVERSED),
        )
    };
    let mut spans = vec![
        key("q"),
        Span::raw(" quit "),
        key("s"),
        Span::raw(format!(" sort:{} ", view.sort.as_str())),
        key("/"),
        Span::raw(if view.filter_text.is_empty() {
            " filter ".to_string()
        } else {
            format!(" filter:{} ", view.filter_text)
        }),
        key("e"),
        Span::raw(if view.warnings_only {
            " events:warnings".to_string()
        } else {
            " events:all".to_string()
        }),
    ];
    spans.push(Span::raw("  THR=throttled PSI=cpu pressure (some, 10 s)"));
    Line::from(spans)
}

fn cpu_style(r: &Row) -> Style {
    match (r.cpu, r.cpu_scale()) {
        (Some(c), Some(s)) if c >= 0.9 * s => Style::new().fg(Color::Yellow),
        _ => Style::new().fg(Color::Green),
    }
}

fn throttle_style(share: Option<f64>) -> Style {
    match share {
        Some(s) if s >= 0.5 => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        Some(s) if s >= 0.1 => Style::new().fg(Color::Yellow),
        _ => Style::new(),
    }
}

fn memory_style(r: &Row) -> Style {
    match (r.memory, r.memory_limit) {
        (Some(m), Some(l)) if l > 0 && m as f64 >= 0.9 * l as f64 => Style::new().fg(Color::Red),
        _ => Style::new(),
    }
}

fn qos_short(q: &str) -> &str {
    match q {
        "Guaranteed" => "Guar",
        "Burstable" => "Burst",
        "BestEffort" => "BestE",
        other => other,
    }
}

fn draw_table(frame: &mut Frame, area: Rect, view: &View) {
    let wide = area.width >= WIDE;
    let (headers, widths): (Vec<&str>, Vec<Constraint>) = if wide {
        (
            vec![
                "NAMESPACE",
                "POD",
                "CONTAINER",
                "QOS",
                "CPU",
                "REQ",
                "LIMIT",
                "USE",
                "THR",
                "PSI",
                "MEMORY",
                "MLIMIT",
                "OOM",
                "RST",
                "STATE",
                "CPU HISTORY",
            ],
            vec![
                Constraint::Length(10),
                Constraint::Min(16),
                Constraint::Length(12),
                Constraint::Length(10),
                Constraint::Length(5),
                Constraint::Length(5),
                Constraint::Length(5),
                Constraint::Length(10),
                Constraint::Length(4),
                Constraint::Length(5),
                Constraint::Length(7),
                Constraint::Length(6),
                Constraint::Length(3),
                Constraint::Length(3),
                Constraint::Length(16),
                Constraint::Length(12),
            ],
        )
    } else {
        let medium = area.width >= MEDIUM;
        let mut headers = vec!["POD/CONTAINER", "QOS", "CPU"];
        let mut widths = vec![
            Constraint::Min(12),
            Constraint::Length(5),
            Constraint::Length(4),
        ];
        if medium {
            headers.push("REQ");
            widths.push(Constraint::Length(4));
        }
        headers.extend(["LIM", "USE", "THR", "MEM", "MLIM", "OOM", "RST"]);
        widths.extend([
            Constraint::Length(4),
            Constraint::Length(6),
            Constraint::Length(4),
            Constraint::Length(6),
            Constraint::Length(5),
            Constraint::Length(3),
            Constraint::Length(3),
        ]);
        if medium {
            headers.push("STATE");
            widths.push(Constraint::Length(16));
        }
        headers.push("HISTORY");
        widths.push(Constraint::Length(8));
        (headers, widths)
    };
    let medium = area.width >= MEDIUM;
    let history_width = if wide { 12 } else { 8 };
    let bar_width = if wide { 10 } else { 6 };
    let rows = view.rows.iter().map(|r| {
        let usage = match (r.cpu, r.cpu_scale()) {
            (Some(c), Some(s)) => bar(c / s, bar_width),
            (Some(c), None) => bar(c, bar_width),
            _ => " ".repeat(bar_width),
        };
        let history = sparkline(&r.history, r.cpu_scale(), history_width);
        let oom_style = if r.oom_kills > 0 {
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
        } else {
            Style::new()
        };
        let mut cells = Vec::new();
        if wide {
            cells.push(Cell::from(r.key.namespace.clone()));
            cells.push(Cell::from(r.key.pod.clone()));
            cells.push(Cell::from(r.key.container.clone()));
            cells.push(Cell::from(r.qos.clone()));
        } else {
            cells.push(Cell::from(format!("{}/{}", r.key.pod, r.key.container)));
            cells.push(Cell::from(qos_short(&r.qos).to_string()));
        }
        cells.push(Cell::from(cores(r.cpu)).style(cpu_style(r)));
        if medium {
            cells.push(Cell::from(cores(r.cpu_request)));
        }
        cells.push(Cell::from(cores(r.cpu_limit)));
        cells.push(Cell::from(usage).style(cpu_style(r)));
        cells.push(Cell::from(percent(r.throttled)).style(throttle_style(r.throttled)));
        if wide {
            // cpu.pressure some avg10: time a task waited for CPU.
            cells.push(Cell::from(pressure(r.cpu_pressure)).style(throttle_style(r.cpu_pressure)));
        }
        cells.push(Cell::from(bytes(r.memory)).style(memory_style(r)));
        cells.push(Cell::from(bytes(r.memory_limit)));
        cells.push(Cell::from(r.oom_kills.to_string()).style(oom_style));
        cells.push(Cell::from(r.restarts.to_string()));
        if medium {
            let style = if r.state == "Running" {
                Style::new()
            } else {
                Style::new().fg(Color::Yellow)
            };
            cells.push(Cell::from(r.state.clone()).style(style));
        }
        cells.push(Cell::from(history).style(Style::new().fg(Color::Cyan)));
        TableRow::new(cells)
    });
    let header = TableRow::new(headers)
        .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let table = Table::new(rows, widths).header(header).column_spacing(1);
    frame.render_widget(table, area);
}

fn draw_events(frame: &mut Frame, area: Rect, view: &View) {
    let title = if view.warnings_only {
        " Events (warnings) "
    } else {
        " Events "
    };
    let block = Block::new().borders(Borders::TOP).title(title);
    let inner = block.inner(area);
    let shown: Vec<&Event> = view
        .events
        .iter()
        .filter(|e| !view.warnings_only || e.type_ != "Normal")
        .collect();
    let keep = inner.height as usize;
    let lines: Vec<Line> = shown[shown.len().saturating_sub(keep)..]
        .iter()
        .map(|e| {
            let time = e
                .time
                .to_zoned(jiff::tz::TimeZone::system())
                .strftime("%H:%M:%S")
                .to_string();
            let style = if e.type_ == "Warning" {
                Style::new().fg(Color::Red)
            } else {
                Style::new()
            };
            let pod = e
                .object
                .split_once('/')
                .map(|(_, p)| p)
                .unwrap_or(&e.object);
            let who = match e.container() {
                Some(c) => format!("{pod}/{c}"),
                None => pod.to_string(),
            };
            Line::from(vec![
                Span::raw(format!("{time} ")),
                Span::styled(format!("{} ", e.reason), style.add_modifier(Modifier::BOLD)),
                Span::raw(format!("{who}: {}", e.message)),
            ])
        })
        .collect();
    frame.render_widget(block, area);
    frame.render_widget(Paragraph::new(lines), inner);
}
