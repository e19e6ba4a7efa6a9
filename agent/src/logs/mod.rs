//! CRI-format container logs, as containerd writes them and kubelet reads
//! them: one record per line,
//!
//! ```text
//! 2024-06-19T15:22:45.123456789Z stdout F a complete line
//! 2024-06-19T15:22:45.123456789Z stderr P first part of a long line...
//! 2024-06-19T15:22:45.123456789Z stderr F ...and its end
//! ```
//!
//! [`writer`] is what a container's shim uses (sync, std only); [`reader`]
//! serves `GET /containerLogs` (`kubectl logs`), following the file as it
//! grows and rotates.
//!
//! Layout under the agent's root dir, one file per container run:
//! `<root>/logs/<namespace>_<pod>_<uid>/<container>/<restartCount>.log`,
//! rotated files next to it as `<restartCount>.log.<UTC timestamp>`.

pub mod reader;
pub mod writer;

use std::path::{Path, PathBuf};

pub use reader::{LogOptions, read_container_log};
pub use writer::CriLogWriter;

/// Which output of the container a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// The directory of one pod's logs: `<root_dir>/logs/<ns>_<name>_<uid>`.
pub fn pod_log_dir(root_dir: &Path, namespace: &str, pod_name: &str, pod_uid: &str) -> PathBuf {
    root_dir
        .join("logs")
        .join(format!("{namespace}_{pod_name}_{pod_uid}"))
}

/// The log of one container run: `<pod_log_dir>/<container>/<restart_count>.log`.
/// `kubectl logs --previous` reads `restart_count - 1`.
pub fn container_log_path(pod_log_dir: &Path, container: &str, restart_count: u32) -> PathBuf {
    pod_log_dir
        .join(container)
        .join(format!("{restart_count}.log"))
}

/// Go's RFC3339Nano in UTC with all nine fraction digits, as kubelet prints
/// log timestamps (fixed width, so records sort as text).
pub fn format_timestamp(ts: jiff::Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S.%NZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_kubelet() {
        let dir = pod_log_dir(
            Path::new("/var/lib/kubelab"),
            "default",
            "web-node01",
            "0a1b",
        );
        assert_eq!(
            dir,
            Path::new("/var/lib/kubelab/logs/default_web-node01_0a1b")
        );
        assert_eq!(
            container_log_path(&dir, "nginx", 2),
            Path::new("/var/lib/kubelab/logs/default_web-node01_0a1b/nginx/2.log")
        );
    }

    #[test]
    fn timestamps_have_nine_digits() {
        let ts: jiff::Timestamp = "2024-06-19T15:22:45.1Z".parse().unwrap();
        assert_eq!(format_timestamp(ts), "2024-06-19T15:22:45.100000000Z");
        let ts: jiff::Timestamp = "2024-06-19T17:22:45+02:00".parse().unwrap();
        assert_eq!(format_timestamp(ts), "2024-06-19T15:22:45.000000000Z");
    }
}
