//! A finished container's `state.terminated.message`, as the kubelet finds it
//! (`getTerminationMessage`): the end of the file at
//! `terminationMessagePath` (at most 4096 bytes), or with
//! `terminationMessagePolicy: FallbackToLogsOnError`, when that file is empty
//! and the container failed, the end of its log (the last 80 lines, at most
//! the last 2048 bytes of them).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::logs::reader::parse_cri_record;

/// kubelet's `MaxContainerTerminationMessageLength`.
pub const MAX_MESSAGE_BYTES: u64 = 4096;
/// kubelet's `MaxContainerTerminationMessageLogLines`.
pub const MAX_LOG_LINES: usize = 80;
/// kubelet's `MaxContainerTerminationMessageLogLength`.
pub const MAX_LOG_BYTES: usize = 2048;

/// The last `max` bytes of a file (`tail.ReadAtMost`), or `None` if unreadable.
fn read_at_most(path: &Path, max: u64) -> Option<Vec<u8>> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    if len > max {
        f.seek(SeekFrom::Start(len - max)).ok()?;
    }
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// What `kubectl logs --tail=80` would print of a CRI log, cut to its last
/// 2048 bytes (a circular buffer in the kubelet).
pub fn log_tail(cri_log: &[u8]) -> String {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    // A `P` record continues in the next record of the same stream.
    let mut partial: [Option<Vec<u8>>; 2] = [None, None];
    for record in cri_log.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(rec) = parse_cri_record(record) else {
            continue;
        };
        let idx = rec.stream as usize;
        let mut line = partial[idx].take().unwrap_or_default();
        line.extend_from_slice(rec.content);
        if rec.partial {
            partial[idx] = Some(line);
        } else {
            line.push(b'\n');
            lines.push(line);
        }
    }
    let start = lines.len().saturating_sub(MAX_LOG_LINES);
    let out: Vec<u8> = lines[start..].concat();
    let cut = out.len().saturating_sub(MAX_LOG_BYTES);
    String::from_utf8_lossy(&out[cut..]).into_owned()
}

/// The message of a run that exited with `exit_code`, given its
/// termination-log file, its log file and the container's policy.
pub fn termination_message(
    message_file: &Path,
    log_file: &Path,
    policy: &str,
    exit_code: i32,
) -> Option<String> {
    let from_file = read_at_most(message_file, MAX_MESSAGE_BYTES)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .filter(|m| !m.is_empty());
    if from_file.is_some() || policy != "FallbackToLogsOnError" || exit_code == 0 {
        return from_file;
    }
    let log = read_at_most(log_file, 1 << 20)?;
    Some(log_tail(&log)).filter(|m| !m.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(stream: &str, tag: &str, text: &str) -> String {
        format!("2024-05-01T10:00:00.000000000Z {stream} {tag} {text}\n")
    }

    #[test]
    fn the_last_80_lines_and_2048_bytes_of_the_log() {
        let mut log = String::new();
        for i in 0..100 {
            log.push_str(&record("stdout", "F", &format!("line {i}")));
        }
        let tail = log_tail(log.as_bytes());
        assert!(tail.starts_with("line 20\n"), "{tail}");
        assert!(tail.ends_with("line 99\n"));
        assert_eq!(tail.lines().count(), 80);

        let long = "x".repeat(1500);
        let log = [
            record("stdout", "F", "first"),
            record("stderr", "F", &long),
            record("stdout", "P", "par"),
            record("stdout", "F", "tial"),
        ]
        .concat();
        let tail = log_tail(log.as_bytes());
        assert!(tail.ends_with("x\npartial\n"), "{tail}");
        assert!(tail.starts_with("first\n"));

        let huge = [record("stdout", "F", &long), record("stdout", "F", &long)].concat();
        let tail = log_tail(huge.as_bytes());
        assert_eq!(tail.len(), MAX_LOG_BYTES);
    }

    #[test]
    fn file_first_then_logs_only_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (file, log) = (dir.path().join("termination-log"), dir.path().join("0.log"));
        std::fs::write(&log, record("stderr", "F", "panic: boom")).unwrap();
        std::fs::write(&file, b"").unwrap();
        let msg = |policy, code| termination_message(&file, &log, policy, code);
        assert_eq!(msg("File", 1), None);
        assert_eq!(msg("FallbackToLogsOnError", 0), None);
        assert_eq!(
            msg("FallbackToLogsOnError", 2).as_deref(),
            Some("panic: boom\n")
        );
        std::fs::write(&file, "y".repeat(5000)).unwrap();
        assert_eq!(msg("FallbackToLogsOnError", 2).unwrap().len(), 4096);
        std::fs::write(&file, b"bye").unwrap();
        assert_eq!(msg("File", 0).as_deref(), Some("bye"));
    }
}
