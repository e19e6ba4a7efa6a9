//! `kubelab top`, read the way a person reads it: the plain table of
//! `--once`, and the live screen in an 80×24 tmux pane (`capture-pane`).
//! A 200m-limited busy loop must show ≈ 0.20 cores and most CFS periods
//! throttled; a memory hog's OOM kill must show in its row and in the events.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::TestNode;

const SPIN: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: spin
  labels:
    app: spin
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: spin
    image: busybox
    command: ["sh", "-c", "while :; do :; done"]
    resources:
      requests:
        cpu: 100m
      limits:
        cpu: 200m
        memory: 32Mi
"#;

const HOG: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: hog
  labels:
    app: hog
spec:
  containers:
  - name: hog
    image: busybox
    command: ["dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"]
    resources:
      limits:
        memory: 32Mi
"#;

fn server(node: &TestNode) -> String {
    format!("http://127.0.0.1:{}", node.port)
}

#[test]
fn top_once_prints_usage_against_the_limits() {
    let node = TestNode::start();
    node.write_manifest("spin.yaml", SPIN);
    node.wait_running("spin");
    std::thread::sleep(Duration::from_millis(500));
    let out = Command::new(common::tools_bin())
        .args([
            "top",
            "--once",
            "--server",
            &server(&node),
            "-l",
            "app=spin",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
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
            "MEM-PSI"
        ]
    );
    assert_eq!(
        lines.len(),
        2,
        "the selector keeps only the spin pod:\n{text}"
    );
    let cols: Vec<&str> = lines[1].split_whitespace().collect();
    let pod = format!("spin-{}", node.node_name);
    assert_eq!(
        &cols[..4],
        ["default", pod.as_str(), "spin", "Burstable"],
        "{text}"
    );
    let cores: f64 = cols[4].parse().unwrap();
    assert!(
        (0.16..=0.24).contains(&cores),
        "a 200m limit holds the loop at 0.2 cores:\n{text}"
    );
    assert_eq!(&cols[5..7], ["0.10", "0.20"], "request and limit:\n{text}");
    let throttled: f64 = cols[7].trim_end_matches('%').parse().unwrap();
    assert!(
        throttled >= 50.0,
        "the busy loop is throttled in most periods:\n{text}"
    );
    assert_eq!(cols[9], "32Mi", "{text}");
    assert_eq!(&cols[10..13], ["0", "0", "Running"], "{text}");
    // PSI: per-cgroup pressure files exist only on cgroup v2.
    let v2 = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
    if v2 {
        assert!(cols[13].ends_with('%') && cols[14].ends_with('%'), "{text}");
    } else {
        assert_eq!(
            &cols[13..],
            ["-", "-"],
            "cgroup v1 has no PSI:
{text}"
        );
    }
}

/// A tmux server of this test's own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(command: &str) -> Tmux {
        let tmux = Tmux {
            socket: format!("kubelab-top-test-{}", std::process::id()),
        };
        let status = Command::new("tmux")
            .args(["-L", &tmux.socket, "-f", "/dev/null", "new-session", "-d"])
            .args(["-x", "80", "-y", "24", command])
            .env("TERM", "xterm-256color")
            .status()
            .expect("tmux is installed (apt install tmux)");
        assert!(status.success(), "tmux new-session failed");
        tmux
    }

    fn resize(&self, width: u16, height: u16) {
        let status = Command::new("tmux")
            .args(["-L", &self.socket, "resize-window", "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "tmux resize-window");
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// The text of the column whose header is `header`, in the row that starts with `row`.
fn cell(screen: &str, row: &str, header: &str) -> Option<String> {
    let lines: Vec<Vec<char>> = screen.lines().map(|l| l.chars().collect()).collect();
    let head = lines
        .iter()
        .find(|l| l.iter().collect::<String>().starts_with("POD/CONTAINER"))?;
    let head_text: String = head.iter().collect();
    let start = head_text.split(' ').scan(0, |pos, word| {
        let at = *pos;
        *pos += word.chars().count() + 1;
        Some((at, word))
    });
    let (at, _) = start.into_iter().find(|(_, w)| *w == header)?;
    let line = lines
        .iter()
        .find(|l| l.iter().collect::<String>().starts_with(row))?;
    let text: String = line.iter().skip(at).take_while(|c| **c != ' ').collect();
    Some(text)
}

#[test]
fn top_in_tmux_shows_the_busy_loop_throttled_and_the_oom_kill() {
    let node = TestNode::start();
    node.write_manifest("spin.yaml", SPIN);
    node.write_manifest("hog.yaml", HOG);
    node.wait_running("spin");
    let tmux = Tmux::start(&format!(
        "{} top --server {}",
        common::tools_bin().display(),
        server(&node)
    ));
    let spin_row = format!("spin-{}/spin", node.node_name);
    let hog_row = format!("hog-{}/hog", node.node_name);
    let started = Instant::now();
    let mut readings = Vec::new();
    let mut screen = String::new();
    // Three refreshes' worth of CPU readings, and the OOM kill on screen.
    while started.elapsed() < Duration::from_secs(9) {
        std::thread::sleep(Duration::from_secs(1));
        screen = tmux.screen();
        if let Some(c) = cell(&screen, &spin_row, "CPU").and_then(|c| c.parse::<f64>().ok())
            && started.elapsed() > Duration::from_millis(1500)
        {
            readings.push(c);
        }
        let oom = cell(&screen, &hog_row, "OOM").and_then(|c| c.parse::<u32>().ok());
        if readings.len() >= 3 && oom.is_some_and(|n| n >= 1) && screen.contains("OOMKilled") {
            break;
        }
    }
    assert!(screen.lines().count() <= 24, "{screen}");
    assert!(screen.contains("kubelab top"), "{screen}");
    readings.sort_by(f64::total_cmp);
    let median = readings.get(readings.len() / 2).copied().unwrap_or(-1.0);
    assert!(
        (0.16..=0.24).contains(&median),
        "a 200m limit shows as ≈ 0.20 cores (readings {readings:?}):\n{screen}"
    );
    assert_eq!(
        cell(&screen, &spin_row, "LIM").as_deref(),
        Some("0.20"),
        "{screen}"
    );
    let throttled: f64 = cell(&screen, &spin_row, "THR")
        .and_then(|t| t.trim_end_matches('%').parse().ok())
        .unwrap_or(-1.0);
    assert!(throttled >= 50.0, "most periods throttled:\n{screen}");
    let oom: u32 = cell(&screen, &hog_row, "OOM")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    assert!(
        oom >= 1,
        "the hog's OOM kill is counted in its row:\n{screen}"
    );
    assert!(
        screen
            .lines()
            .any(|l| l.contains("OOMKilled") && l.contains(&hog_row)),
        "the events pane shows the OOM kill:\n{screen}"
    );

    // At 120 columns the request and the state come before wider names.
    tmux.resize(120, 32);
    let wide_enough = (0..10).find_map(|_| {
        std::thread::sleep(Duration::from_secs(1));
        let screen = tmux.screen();
        let req = cell(&screen, &spin_row, "REQ")?;
        let state = cell(&screen, &spin_row, "STATE")?;
        Some((req, state, screen))
    });
    let (req, state, screen) = wide_enough.expect("REQ and STATE columns at 120x32");
    assert_eq!(req, "0.10", "{screen}");
    assert_eq!(state, "Running", "{screen}");
    // The node's cpu figure says what it is out of.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        screen
            .lines()
            .next()
            .unwrap_or("")
            .contains(&format!("/{cores} cores")),
        "the header names the node's {cores} cores:\n{screen}"
    );
}
