//! CRI's `ExecSync` for the built-in runtime: `kubelab-agent exec` runs the
//! command inside the container; its exit code and output come back once it
//! ends, or an error once the timeout is over.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::runtime::cri::{EXEC_SYNC_OUTPUT_LIMIT, ExecSyncError, ExecSyncResponse};
use crate::runtime::service::ExecTarget;

/// How long output still in the pipes is waited for once the command ended
/// (a process it left behind may hold them open).
const OUTPUT_GRACE: Duration = Duration::from_millis(100);

pub fn exec_sync(
    agent_exe: &Path,
    target: &ExecTarget,
    command: &[String],
    timeout: Duration,
) -> Result<ExecSyncResponse, ExecSyncError> {
    let mut child = Command::new(agent_exe)
        .arg("exec")
        .arg("--pid")
        .arg(target.pid.to_string())
        .arg("--bundle")
        .arg(&target.bundle)
        .arg("--")
        .args(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ExecSyncError::Start(format!("exec: {e}")))?;
    // Both pipes are drained while the command runs, so that one filling
    // up never blocks it.
    let (tx, rx) = mpsc::channel();
    let pipes: [Option<Box<dyn Read + Send>>; 2] = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ];
    for (i, pipe) in pipes.into_iter().enumerate() {
        let Some(pipe) = pipe else { continue };
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = tx.send((i, read_capped(pipe, EXEC_SYNC_OUTPUT_LIMIT)));
        });
    }
    drop(tx);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ExecSyncError::TimedOut {
                    command: command.join(" "),
                });
            }
        }
    };
    let mut output = [Vec::new(), Vec::new()];
    let wait_until = deadline.max(Instant::now() + OUTPUT_GRACE);
    while let Ok((i, bytes)) = rx.recv_timeout(wait_until.saturating_duration_since(Instant::now()))
    {
        output[i] = bytes;
    }
    let [stdout, stderr] = output;
    Ok(ExecSyncResponse {
        stdout,
        stderr,
        exit_code: status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
    })
}

/// Everything `r` gives until it ends, of which the first `limit` bytes
/// are kept.
fn read_capped(mut r: impl Read, limit: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let room = limit.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_read_to_the_end_and_kept_up_to_the_limit() {
        let long = vec![b'x'; 20_000];
        let kept = read_capped(std::io::Cursor::new(&long), 10 << 10);
        assert_eq!(kept.len(), 10 << 10);
        assert_eq!(
            read_capped(std::io::Cursor::new(b"short"), 10 << 10),
            b"short"
        );
    }
}
