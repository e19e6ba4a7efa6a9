//! Running one probe once: `httpGet` and `tcpSocket` from the node into the
//! pod's network namespace, as the kubelet does, `exec` inside the container
//! through the runtime (CRI's `ExecSync`). Blocking; the prober calls it off
//! the async runtime.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::runtime::cri::{ExecSyncError, ExecSyncResponse};
use crate::runtime::service::{ExecTarget, RuntimeService};

/// Where the probed container lives.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    /// The sandbox's network namespace (`/proc/<pid>/ns/net`), or `None` for
    /// `hostNetwork` pods.
    pub netns: Option<PathBuf>,
    pub pod_ip: Option<String>,
    /// Where exec probes and hooks run their command.
    pub container: ExecTarget,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProbeOutcome {
    Success,
    /// With the kubelet's wording of why, e.g.
    /// `HTTP probe failed with statuscode: 500`.
    Failure(String),
}

/// `port` by number or by the name of a container port.
fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port as u16)
                .ok_or_else(|| {
                    format!(
                        "couldn't find port {name:?} in container {}",
                        container.name
                    )
                })
        }
    }
}

/// Runs `f` on a fresh thread that has joined `netns` (setns changes only the
/// calling thread, so the agent's own threads never move).
fn in_netns<T: Send + 'static>(
    netns: Option<PathBuf>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    std::thread::spawn(move || -> Result<T, String> {
        if let Some(path) = netns {
            let file =
                std::fs::File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns {}: {e}", path.display()))?;
        }
        Ok(f())
    })
    .join()
    .map_err(|_| "probe thread panicked".to_string())?
}

pub fn run_probe(
    probe: &Probe,
    container: &Container,
    target: &ProbeTarget,
    runtime: &dyn RuntimeService,
) -> ProbeOutcome {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        return exec_probe_outcome(runtime.exec_sync(&target.container, &command, timeout));
    }
    if !runtime.pods_are_real() && (probe.http_get.is_some() || probe.tcp_socket.is_some()) {
        return ProbeOutcome::Success;
    }
    if let Some(http) = &probe.http_get {
        let port = match resolve_port(&http.port, container) {
            Ok(p) => p,
            Err(e) => return ProbeOutcome::Failure(e),
        };
        let host = http
            .host
            .clone()
            .or_else(|| target.pod_ip.clone())
            .unwrap_or_else(|| "127.0.0.1".into());
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let headers: Vec<(String, String)> = http
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        let scheme = http.scheme.clone().unwrap_or_else(|| "HTTP".into());
        if scheme != "HTTP" {
            return ProbeOutcome::Failure(format!("scheme {scheme} is not supported by this node"));
        }
        return in_netns(target.netns.clone(), move || {
            http_get(&host, port, &path, &headers, timeout)
        })
        .unwrap_or_else(ProbeOutcome::Failure);
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = match resolve_port(&tcp.port, container) {
            Ok(p) => p,
            Err(e) => return ProbeOutcome::Failure(e),
        };
        let host = tcp
            .host
            .clone()
            .or_else(|| target.pod_ip.clone())
            .unwrap_or_else(|| "127.0.0.1".into());
        return in_netns(target.netns.clone(), move || {
            match connect(&host, port, timeout) {
                Ok(_) => ProbeOutcome::Success,
                Err(e) => ProbeOutcome::Failure(format!("dial tcp {host}:{port}: {e}")),
            }
        })
        .unwrap_or_else(ProbeOutcome::Failure);
    }
    ProbeOutcome::Failure("probe has no handler".into())
}

/// Runs a lifecycle hook (`preStop`, `postStart`): the same handlers as a
/// probe, plus `sleep`, bounded by `timeout`. A failed exec hook's reason
/// is [`exec_hook_error`]'s.
pub fn run_handler(
    handler: &k8s_openapi::api::core::v1::LifecycleHandler,
    container: &Container,
    target: &ProbeTarget,
    timeout: Duration,
    runtime: &dyn RuntimeService,
) -> ProbeOutcome {
    if let Some(sleep) = &handler.sleep {
        if !runtime.pods_are_real() {
            return ProbeOutcome::Success;
        }
        std::thread::sleep(Duration::from_secs(sleep.seconds.max(0) as u64).min(timeout));
        return ProbeOutcome::Success;
    }
    if let Some(exec) = &handler.exec {
        let command = exec.command.clone().unwrap_or_default();
        return match exec_hook_error(
            &command,
            runtime.exec_sync(&target.container, &command, timeout),
        ) {
            None => ProbeOutcome::Success,
            Some(error) => ProbeOutcome::Failure(error),
        };
    }
    let probe = Probe {
        http_get: handler.http_get.clone(),
        tcp_socket: handler.tcp_socket.clone(),
        timeout_seconds: Some(timeout.as_secs().max(1) as i32),
        ..Default::default()
    };
    run_probe(&probe, container, target, runtime)
}

fn connect(host: &str, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let addr: SocketAddr = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    TcpStream::connect_timeout(&addr, timeout)
}

/// kubelet's HTTP probe: 200–399 is success; anything else, or no answer in
/// time, is a failure worded as kubelet words it.
pub fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> ProbeOutcome {
    let url = format!("http://{host}:{port}{path}");
    let result = (|| -> std::io::Result<u16> {
        let mut s = connect(host, port, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n"
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes())?;
        let mut buf = [0u8; 1024];
        let mut got = Vec::new();
        while !got.windows(2).any(|w| w == b"\r\n") {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&got);
        line.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other("malformed HTTP response"))
    })();
    match result {
        Ok(code) if (200..400).contains(&code) => ProbeOutcome::Success,
        Ok(code) => ProbeOutcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut =>
        {
            ProbeOutcome::Failure(format!(
                "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            ))
        }
        Err(e) => ProbeOutcome::Failure(format!("Get \"{url}\": dial tcp {host}:{port}: {e}")),
    }
}

/// The kubelet's `maxReadLength`: the most of an exec probe's output it
/// reads (stdout, then stderr).
pub const MAX_EXEC_PROBE_OUTPUT: usize = 10 << 10;

/// An exec probe's result from CRI's `ExecSync`, as the kubelet's exec
/// prober reads it: exit code 0 succeeds; any other fails with the
/// command's output, at most [`MAX_EXEC_PROBE_OUTPUT`] bytes of it (the
/// `Unhealthy` event then reads `Liveness probe failed: <output>`); a
/// command that ran out of time fails with the runtime's error.
pub fn exec_probe_outcome(result: Result<ExecSyncResponse, ExecSyncError>) -> ProbeOutcome {
    match result {
        Ok(r) if r.exit_code == 0 => ProbeOutcome::Success,
        Ok(r) => ProbeOutcome::Failure(combined_output(&r, MAX_EXEC_PROBE_OUTPUT)),
        Err(e) => ProbeOutcome::Failure(e.to_string()),
    }
}

/// A failed exec hook's error, as the kubelet's handler runner words it
/// after `- error: `: the runtime's error (for a non-zero exit, the code and
/// stderr), then all of the output, quoted. `None`: the hook succeeded.
pub fn exec_hook_error(
    command: &[String],
    result: Result<ExecSyncResponse, ExecSyncError>,
) -> Option<String> {
    let (error, output) = match result {
        Ok(r) if r.exit_code == 0 => return None,
        Ok(r) => (
            format!(
                "command '{}' exited with {}: {}",
                command.join(" "),
                r.exit_code,
                String::from_utf8_lossy(&r.stderr)
            ),
            combined_output(&r, usize::MAX),
        ),
        Err(e) => (e.to_string(), String::new()),
    };
    Some(format!("{error}, message: {output:?}"))
}

/// stdout then stderr, as the kubelet's `RunInContainer` joins them, cut
/// at `limit` bytes.
fn combined_output(r: &ExecSyncResponse, limit: usize) -> String {
    let mut out = r.stdout.clone();
    out.extend_from_slice(&r.stderr);
    out.truncate(limit);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn serve_once(status: u16) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
                let _ = write!(s, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
            }
        });
        port
    }

    #[test]
    fn http_status_codes_decide_as_kubelet_does() {
        let t = Duration::from_secs(1);
        assert_eq!(
            http_get("127.0.0.1", serve_once(200), "/", &[], t),
            ProbeOutcome::Success
        );
        assert_eq!(
            http_get("127.0.0.1", serve_once(302), "/", &[], t),
            ProbeOutcome::Success
        );
        assert_eq!(
            http_get("127.0.0.1", serve_once(500), "/", &[], t),
            ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        match http_get("127.0.0.1", closed, "/healthz", &[], t) {
            ProbeOutcome::Failure(m) => assert!(
                m.contains("connection refused") || m.contains("refused"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
    }

    fn exited(code: i32, stdout: &[u8], stderr: &[u8]) -> Result<ExecSyncResponse, ExecSyncError> {
        Ok(ExecSyncResponse {
            stdout: stdout.to_vec(),
            stderr: stderr.to_vec(),
            exit_code: code,
        })
    }

    #[test]
    fn exec_probes_fail_with_their_output_as_the_kubelet_reads_it() {
        assert_eq!(
            exec_probe_outcome(exited(0, b"fine", b"")),
            ProbeOutcome::Success
        );
        assert_eq!(
            exec_probe_outcome(exited(1, b"", b"cat: can't open '/tmp/ready'\n")),
            ProbeOutcome::Failure("cat: can't open '/tmp/ready'\n".into())
        );
        // stdout, then stderr; no output at all is an empty reason.
        assert_eq!(
            exec_probe_outcome(exited(2, b"out ", b"err")),
            ProbeOutcome::Failure("out err".into())
        );
        assert_eq!(
            exec_probe_outcome(exited(2, b"", b"")),
            ProbeOutcome::Failure(String::new())
        );
        // The kubelet reads 10 KiB of it.
        let ProbeOutcome::Failure(long) =
            exec_probe_outcome(exited(1, &[b'x'; 8 << 10], &[b'y'; 8 << 10]))
        else {
            panic!("a failure");
        };
        assert_eq!(long.len(), MAX_EXEC_PROBE_OUTPUT);
        assert!(long.ends_with(&"y".repeat(2 << 10)));
        let timed_out = ExecSyncError::TimedOut {
            command: "sh -c sleep 10".into(),
        };
        assert_eq!(
            exec_probe_outcome(Err(timed_out)),
            ProbeOutcome::Failure("command \"sh -c sleep 10\" timed out".into())
        );
    }

    #[test]
    fn exec_hooks_fail_with_the_handler_runners_words() {
        let cmd: Vec<String> = ["sh", "-c", "echo cannot configure; exit 3"]
            .map(String::from)
            .to_vec();
        assert_eq!(exec_hook_error(&cmd, exited(0, b"ok", b"")), None);
        assert_eq!(
            exec_hook_error(&cmd, exited(3, b"cannot configure\n", b"")).unwrap(),
            "command 'sh -c echo cannot configure; exit 3' exited with 3: , message: \"cannot configure\\n\""
        );
        assert_eq!(
            exec_hook_error(&cmd, exited(1, b"out\n", b"err")).unwrap(),
            "command 'sh -c echo cannot configure; exit 3' exited with 1: err, message: \"out\\nerr\""
        );
        let timed_out = ExecSyncError::TimedOut {
            command: cmd.join(" "),
        };
        assert_eq!(
            exec_hook_error(&cmd, Err(timed_out)).unwrap(),
            "command \"sh -c echo cannot configure; exit 3\" timed out, message: \"\""
        );
    }

    #[test]
    fn named_ports_resolve_from_the_container() {
        let c = Container {
            name: "web".into(),
            ports: Some(vec![k8s_openapi::api::core::v1::ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c),
            Ok(8080)
        );
        assert_eq!(resolve_port(&IntOrString::Int(81), &c), Ok(81));
        assert!(resolve_port(&IntOrString::String("nope".into()), &c).is_err());
    }
}
