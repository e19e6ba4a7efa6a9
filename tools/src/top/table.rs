//! Text for `top`: number formats, bars and sparklines, and the plain table
//! of `--once` (for scripts: one line per container, columns split by spaces).

use super::model::Row;

pub fn cores(c: Option<f64>) -> String {
    c.map(|c| format!("{c:.2}")).unwrap_or_else(|| "-".into())
}

pub fn percent(share: Option<f64>) -> String {
    share
        .map(|s| format!("{:.0}%", (s * 100.0).clamp(0.0, 100.0)))
        .unwrap_or_else(|| "-".into())
}

/// A PSI share (`some` avg10) as a percent with one decimal: stalls are
/// often a fraction of a percent.
pub fn pressure(share: Option<f64>) -> String {
    share
        .map(|s| format!("{:.1}%", (s * 100.0).clamp(0.0, 100.0)))
        .unwrap_or_else(|| "-".into())
}

/// Bytes in binary units, as Kubernetes quantities are written (`512Ki`, `12.3Mi`).
pub fn bytes(b: Option<u64>) -> String {
    let Some(b) = b else { return "-".into() };
    const UNITS: [&str; 5] = ["", "Ki", "Mi", "Gi", "Ti"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b}")
    } else if v < 10.0 && v.fract() > 0.05 {
        format!("{v:.1}{}", UNITS[unit])
    } else {
        format!("{v:.0}{}", UNITS[unit])
    }
}

/// A bar of `width` cells filled to `fraction` (eighths of a cell).
pub fn bar(fraction: f64, width: usize) -> String {
    const PARTS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let eighths = (fraction.clamp(0.0, 1.0) * (width * 8) as f64).round() as usize;
    let mut s = "█".repeat(eighths / 8);
    if eighths % 8 > 0 {
        s.push(PARTS[eighths % 8]);
    }
    let used = s.chars().count();
    s.extend(std::iter::repeat_n(' ', width.saturating_sub(used)));
    s
}

/// The last `width` values as block characters, scaled to `scale` (or the
/// largest value when there is none).
pub fn sparkline(values: &[f64], scale: Option<f64>, width: usize) -> String {
    const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let tail = &values[values.len().saturating_sub(width)..];
    let max = scale
        .unwrap_or_else(|| tail.iter().copied().fold(0.0, f64::max))
        .max(1e-9);
    let mut s: String = tail
        .iter()
        .map(|v| {
            let level = ((v / max).clamp(0.0, 1.0) * 7.0).round() as usize;
            LEVELS[level]
        })
        .collect();
    s.extend(std::iter::repeat_n(' ', width.saturating_sub(tail.len())));
    s
}

pub const HEADERS: [&str; 15] = [
    "NAMESPACE",
    "POD",
    "CONTAINER",
    "QOS",
    "CPU",
    "REQUEST",
    "LIMIT",
    "THROTTLED",
    "MEMORY",
    "MEM-LIMIT",
    "OOM-KILLS",
    "RESTARTS",
    "STATE",
    "CPU-PSI",
    "MEM-PSI",
];

/// The `--once` table: aligned columns, `-` for what is unknown or unset.
pub fn render(rows: &[Row]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.key.namespace.clone(),
                r.key.pod.clone(),
                r.key.container.clone(),
                if r.qos.is_empty() {
                    "-".into()
                } else {
                    r.qos.clone()
                },
                cores(r.cpu),
                cores(r.cpu_request),
                cores(r.cpu_limit),
                percent(r.throttled),
                bytes(r.memory),
                bytes(r.memory_limit),
                r.oom_kills.to_string(),
                r.restarts.to_string(),
                r.state.clone(),
                pressure(r.cpu_pressure),
                pressure(r.memory_pressure),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = HEADERS.iter().map(|h| h.len()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = HEADERS.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(&cells) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(cores(Some(0.2049)), "0.20");
        assert_eq!(cores(None), "-");
        assert_eq!(percent(Some(0.956)), "96%");
        assert_eq!(bytes(Some(32 << 20)), "32Mi");
        assert_eq!(bytes(Some(1_300_000)), "1.2Mi");
        assert_eq!(bytes(Some(512)), "512");
        assert_eq!(bytes(Some(2 << 30)), "2Gi");
        assert_eq!(bar(0.5, 4), "██  ");
        assert_eq!(bar(1.7, 3), "███");
        assert_eq!(bar(0.0625, 2), "▏ ");
        assert_eq!(sparkline(&[0.0, 0.1, 0.2], Some(0.2), 4), "▁▅█ ");
        assert_eq!(sparkline(&[1.0, 2.0, 3.0, 4.0], None, 2), "▆█");
    }
}
