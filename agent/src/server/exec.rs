//! `/exec/{namespace}/{pod}/{container}`: kubelet's exec endpoint, on the
//! WebSocket channel protocols `kubectl exec` speaks since 1.30 (see
//! [`super::streaming::channel`]), and on SPDY/3.1 streams
//! (`v4.channel.k8s.io`, kubectl ≤ 1.29; see [`super::streaming::remote_command`]).
//!
//! The command runs through
//! `kubelab-agent exec` ([`crate::runtime::exec`]), which joins the
//! container's cgroup and namespaces; with `tty=true` it makes a pty in the
//! container and hands its master end over, which this side reads, writes
//! and resizes.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::ServerState;
use super::streaming::channel::{
    ChannelCodec, ERROR, Inbound, PROTOCOLS, STDERR, STDOUT, decode_inbound, normal_close,
};
use super::streaming::remote_command::{self, SPDY_PROTOCOLS, Wanted};
use super::streaming::spdy::session as spdy;
use super::streaming::{
    SPDY_UPGRADE, accept_spdy, asks_upgrade_to, negotiate, offered_stream_protocols,
};
use crate::runtime::service::ExecTarget;
use crate::runtime::shim;

/// How long the exec process may take to hand over its terminal.
const CONSOLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The query of an exec request, as kubelet's `remotecommand.NewOptions`
/// reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Go's `strconv.ParseBool`, which the apiserver's query decoding uses.
pub(super) fn parse_bool(name: &str, v: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" | "" => Ok(false),
        other => Err(format!("invalid value {other:?} for {name}: not a boolean")),
    }
}

impl ExecOptions {
    pub fn from_query(pairs: &[(String, String)]) -> Result<Self, String> {
        let mut o = ExecOptions {
            command: Vec::new(),
            stdin: false,
            stdout: false,
            stderr: false,
            tty: false,
        };
        for (k, v) in pairs {
            match k.as_str() {
                "command" => o.command.push(v.clone()),
                "stdin" | "input" => o.stdin = parse_bool(k, v)?,
                "stdout" | "output" => o.stdout = parse_bool(k, v)?,
                "stderr" | "error" => o.stderr = parse_bool(k, v)?,
                "tty" => o.tty = parse_bool(k, v)?,
                _ => {}
            }
        }
        if o.command.is_empty() {
            return Err("you must specify at least one command for the container".into());
        }
        if !o.stdin && !o.stdout && !o.stderr {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        // A terminal has one output stream: stderr goes to it too.
        if o.tty {
            o.stderr = false;
        }
        Ok(o)
    }
}

/// The `Status` on the error channel for a command that ended with `code`,
/// as the kubelet writes it: kubectl exits with the code of the `ExitCode`
/// cause.
pub fn exit_status(code: i32) -> Value {
    if code == 0 {
        return json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"});
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}
    })
}

/// The `Status` for a command that could not be run at all.
pub fn internal_error_status(message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: error executing command in container: {message}"),
        "reason": "InternalError",
        "details": {"causes": [{"message": format!("error executing command in container: {message}")}]},
        "code": 500
    })
}

/// A refusal before the upgrade: the code and the user's message.
pub(super) type Refusal = (StatusCode, String);

pub(super) fn error(code: StatusCode, msg: String) -> Response {
    (code, msg).into_response()
}

/// The running container `container` of pod `ns/pod`, or the reason there
/// is none, worded for the user.
pub(super) fn find_target(
    s: &ServerState,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<ExecTarget, Refusal> {
    let Some(entry) = s.ctx.status.find(ns, pod) else {
        return Err((
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{pod} not found on node {}", s.ctx.node_name),
        ));
    };
    let Some(run) = entry.containers.iter().find(|c| c.name == container) else {
        let status = &entry.status;
        let known = status
            .container_statuses
            .iter()
            .flatten()
            .chain(status.init_container_statuses.iter().flatten())
            .find(|c| c.name == container);
        return Err(match known {
            None => (
                StatusCode::NOT_FOUND,
                format!("container {container} not found in pod {ns}/{pod}"),
            ),
            Some(c) => (
                StatusCode::BAD_REQUEST,
                format!(
                    "container {container} in pod {ns}/{pod} is not running (state: {})",
                    crate::status::state_word(c)
                ),
            ),
        });
    };
    let uid = entry.pod.metadata.uid.clone().unwrap_or_default();
    let bundle = s
        .ctx
        .pod_dir(&uid)
        .join("containers")
        .join(&run.container_id);
    match shim::read_started(&bundle) {
        Some(started) if PathBuf::from(format!("/proc/{}", started.pid)).exists() => {
            Ok(ExecTarget {
                pid: started.pid,
                bundle,
            })
        }
        _ => Err((
            StatusCode::BAD_REQUEST,
            format!("container {container} in pod {ns}/{pod} is not running"),
        )),
    }
}

pub async fn exec(
    State(s): State<ServerState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    req: Request,
) -> Response {
    let pairs: Vec<(String, String)> = match query_pairs(query.as_deref().unwrap_or_default()) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let opts = match ExecOptions::from_query(&pairs) {
        Ok(o) => o,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let target = match find_target(&s, &namespace, &pod, &container) {
        Ok(t) => t,
        Err((code, msg)) => return error(code, msg),
    };
    let agent_exe = s.ctx.agent_exe.clone();
    let who = format!("{namespace}/{pod}/{container}");
    let headers = req.headers().clone();
    if asks_upgrade_to(&headers, "websocket") {
        let (mut parts, _) = req.into_parts();
        let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(ws) => ws,
            Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
        };
        let offered: Vec<String> = ws
            .requested_protocols()
            .filter_map(|p| p.to_str().ok())
            .flat_map(|p| p.split(',').map(|s| s.trim().to_owned()))
            .collect();
        if !PROTOCOLS.iter().any(|p| offered.iter().any(|o| o == p)) {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "unsupported streaming protocols {offered:?}; this node speaks {}",
                    PROTOCOLS.join(", ")
                ),
            );
        }
        return ws
            .protocols(PROTOCOLS)
            .on_upgrade(move |socket| async move {
                tracing::info!(container = %who, command = ?opts.command, tty = opts.tty, "exec");
                session(socket, agent_exe, target, opts).await;
            });
    }
    if asks_upgrade_to(&headers, SPDY_UPGRADE) {
        let offered = offered_stream_protocols(&headers);
        let Some(protocol) = negotiate(&offered, &SPDY_PROTOCOLS) else {
            return error(
                StatusCode::FORBIDDEN,
                format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {SPDY_PROTOCOLS:?}"
                ),
            );
        };
        tracing::info!(container = %who, command = ?opts.command, tty = opts.tty, "exec (SPDY)");
        return accept_spdy(req, protocol, move |io| {
            spdy_session(io, agent_exe, target, opts)
        });
    }
    error(
        StatusCode::BAD_REQUEST,
        format!(
            "exec needs a connection upgrade: a WebSocket ({}) or {SPDY_UPGRADE}",
            PROTOCOLS.join(", ")
        ),
    )
}

/// `a=1&b=x%20y` as key/value pairs, in order (repeated keys kept).
pub(super) fn query_pairs(query: &str) -> Result<Vec<(String, String)>, String> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{query}")
            .parse()
            .map_err(|e| format!("invalid query: {e}"))?,
    )
    .map(|q| q.0)
    .map_err(|e| format!("invalid query: {e}"))
}

/// The command's side of a session: its process and stdio.
struct ExecProcess {
    child: tokio::process::Child,
    stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    outputs: Vec<(u8, Box<dyn AsyncRead + Send + Unpin>)>,
    /// The pty's master end, for resizes.
    pty: Option<OwnedFd>,
}

impl ExecProcess {
    async fn spawn(
        agent_exe: &std::path::Path,
        t: &ExecTarget,
        o: &ExecOptions,
    ) -> std::io::Result<Self> {
        let mut cmd = tokio::process::Command::new(agent_exe);
        cmd.arg("exec")
            .arg("--pid")
            .arg(t.pid.to_string())
            .arg("--bundle")
            .arg(&t.bundle);
        if o.tty {
            cmd.arg("--tty");
        }
        cmd.arg("--").args(&o.command);
        if o.tty {
            return Self::spawn_on_terminal(cmd).await;
        }
        let piped = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
        cmd.stdin(piped(o.stdin))
            .stdout(piped(o.stdout))
            .stderr(piped(o.stderr));
        let mut child = cmd.spawn()?;
        let mut outputs: Vec<(u8, Box<dyn AsyncRead + Send + Unpin>)> = Vec::new();
        if let Some(out) = child.stdout.take() {
            outputs.push((STDOUT, Box::new(out)));
        }
        if let Some(err) = child.stderr.take() {
            outputs.push((STDERR, Box::new(err)));
        }
        let stdin = child
            .stdin
            .take()
            .map(|s| Box::new(s) as Box<dyn AsyncWrite + Send + Unpin>);
        Ok(ExecProcess {
            child,
            stdin,
            outputs,
            pty: None,
        })
    }

    /// The command on a pty made inside the container (its devpts, so
    /// `tty` names it there): the exec process sends the master end back
    /// over a socket on its stdin. Its own stdout and stderr only ever carry
    /// its errors, which go to the client's terminal output too.
    async fn spawn_on_terminal(mut cmd: tokio::process::Command) -> std::io::Result<Self> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        cmd.stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        drop(cmd);
        ours.set_read_timeout(Some(CONSOLE_TIMEOUT))?;
        // Fails (end of file) when the exec process dies before sending it.
        let master =
            tokio::task::spawn_blocking(move || crate::runtime::exec::receive_console(&ours))
                .await
                .map_err(std::io::Error::other)?;
        let mut outputs: Vec<(u8, Box<dyn AsyncRead + Send + Unpin>)> = Vec::new();
        if let Some(out) = child.stdout.take() {
            outputs.push((STDOUT, Box::new(out)));
        }
        if let Some(err) = child.stderr.take() {
            outputs.push((STDOUT, Box::new(err)));
        }
        let Ok(master) = master else {
            return Ok(ExecProcess {
                child,
                stdin: None,
                outputs,
                pty: None,
            });
        };
        let reader = tokio::fs::File::from_std(std::fs::File::from(master.try_clone()?));
        let writer = tokio::fs::File::from_std(std::fs::File::from(master.try_clone()?));
        outputs.push((STDOUT, Box::new(reader)));
        Ok(ExecProcess {
            child,
            stdin: Some(Box::new(writer)),
            outputs,
            pty: Some(master),
        })
    }
}

fn resize_terminal(pty: &OwnedFd, width: u16, height: u16) {
    let size = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer; the fd is a pty master.
    if unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &size) } < 0 {
        tracing::debug!(
            "resizing the exec terminal: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Runs the command and relays its streams until it has ended and its
/// output is drained; then the Status, then the close.
async fn session(socket: WebSocket, agent_exe: PathBuf, target: ExecTarget, opts: ExecOptions) {
    let codec = ChannelCodec::of(socket.protocol().and_then(|p| p.to_str().ok()));
    let (mut sink, mut stream) = socket.split();
    let mut process = match ExecProcess::spawn(&agent_exe, &target, &opts).await {
        Ok(p) => p,
        Err(e) => {
            let status = internal_error_status(&format!("starting {}: {e}", agent_exe.display()));
            let _ = sink
                .send(codec.frame(ERROR, status.to_string().as_bytes()))
                .await;
            let _ = sink.send(normal_close()).await;
            return;
        }
    };
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(16);
    let writer = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            let close = matches!(msg, Message::Close(_));
            if sink.send(msg).await.is_err() || close {
                break;
            }
        }
    });
    let readers: Vec<_> = std::mem::take(&mut process.outputs)
        .into_iter()
        .map(|(channel, mut r)| {
            let tx = out_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match r.read(&mut buf).await {
                        // EOF, or EIO from a pty whose last slave is closed.
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tx.send(codec.frame(channel, &buf[..n])).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            })
        })
        .collect();

    // Client → command: stdin, resizes, stdin's close. Writes go through a
    // task of their own so a command that does not read never stalls resizes.
    let (stdin_tx, mut stdin_rx) = mpsc::channel::<Bytes>(16);
    let stdin_task = process.stdin.take().map(|mut w| {
        tokio::spawn(async move {
            while let Some(data) = stdin_rx.recv().await {
                if w.write_all(&data).await.is_err() || w.flush().await.is_err() {
                    break;
                }
            }
            let _ = w.shutdown().await;
        })
    });
    let pty = process.pty.take();
    let inbound = tokio::spawn(async move {
        let mut stdin_tx = Some(stdin_tx);
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            let Some(data) = codec.unframe(msg) else {
                continue;
            };
            match decode_inbound(data) {
                Inbound::Stdin(bytes) => {
                    if let Some(tx) = &stdin_tx
                        && tx.send(bytes).await.is_err()
                    {
                        stdin_tx = None;
                    }
                }
                Inbound::Resize { width, height } => {
                    if let Some(p) = &pty {
                        resize_terminal(p, width, height);
                    }
                }
                Inbound::CloseStdin => stdin_tx = None,
                Inbound::Ignored => {}
            }
        }
        // The client is gone (or closed): so is stdin; a terminal hangs up.
        drop(stdin_tx);
        drop(pty);
    });

    for r in readers {
        let _ = r.await;
    }
    let status = match process.child.wait().await {
        Ok(st) => {
            use std::os::unix::process::ExitStatusExt;
            exit_status(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)))
        }
        Err(e) => internal_error_status(&format!("waiting for the command: {e}")),
    };
    let _ = out_tx
        .send(codec.frame(ERROR, status.to_string().as_bytes()))
        .await;
    let _ = out_tx.send(normal_close()).await;
    drop(out_tx);
    let _ = writer.await;
    inbound.abort();
    if let Some(t) = stdin_task {
        t.abort();
    }
}

/// The same session on SPDY streams: each output on its own stream, stdin
/// and resizes from theirs, the Status on the error stream, then every
/// stream closed.
async fn spdy_session(
    io: impl AsyncRead + AsyncWrite + Send + 'static,
    agent_exe: PathBuf,
    target: ExecTarget,
    opts: ExecOptions,
) {
    let mut incoming = spdy::serve(io);
    let wanted = Wanted {
        stdin: opts.stdin,
        stdout: opts.stdout,
        stderr: opts.stderr,
        tty: opts.tty,
    };
    let Some(mut streams) = remote_command::collect(&mut incoming, wanted, "exec").await else {
        return;
    };
    let Some(error_stream) = streams.error.take() else {
        return;
    };
    let mut process = match ExecProcess::spawn(&agent_exe, &target, &opts).await {
        Ok(p) => p,
        Err(e) => {
            let status = internal_error_status(&format!("starting {}: {e}", agent_exe.display()));
            error_stream.writer.send(Bytes::from(status.to_string()));
            error_stream.writer.close();
            return;
        }
    };
    let stdout = streams.stdout.as_ref().map(|s| s.writer.clone());
    let stderr = streams.stderr.as_ref().map(|s| s.writer.clone());
    let readers: Vec<_> = std::mem::take(&mut process.outputs)
        .into_iter()
        .filter_map(|(channel, mut r)| {
            let w = if channel == STDERR {
                stderr.clone()
            } else {
                stdout.clone()
            }?;
            Some(tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if !w.send(Bytes::copy_from_slice(&buf[..n])) {
                                break;
                            }
                        }
                    }
                }
            }))
        })
        .collect();
    let stdin_task = match (process.stdin.take(), streams.stdin.take()) {
        (Some(mut w), Some(mut from_client)) => Some(tokio::spawn(async move {
            while let Some(data) = from_client.data.recv().await {
                if w.write_all(&data).await.is_err() || w.flush().await.is_err() {
                    break;
                }
            }
            let _ = w.shutdown().await;
        })),
        _ => None,
    };
    let resize_task = match (process.pty.take(), streams.resize.take()) {
        (Some(pty), Some(resize)) => {
            let mut sizes = remote_command::sizes(resize);
            Some(tokio::spawn(async move {
                while let Some((w, h)) = sizes.recv().await {
                    resize_terminal(&pty, w, h);
                }
            }))
        }
        _ => None,
    };
    for r in readers {
        let _ = r.await;
    }
    let status = match process.child.wait().await {
        Ok(st) => {
            use std::os::unix::process::ExitStatusExt;
            exit_status(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)))
        }
        Err(e) => internal_error_status(&format!("waiting for the command: {e}")),
    };
    error_stream.writer.send(Bytes::from(status.to_string()));
    for w in [&stdout, &stderr].into_iter().flatten() {
        w.close();
    }
    error_stream.writer.close();
    for t in [stdin_task, resize_task].into_iter().flatten() {
        t.abort();
    }
    // The client closes the connection once it has read the Status.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(s) = incoming.recv().await {
            s.writer.reset();
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_keep_the_command_in_order_and_drop_stderr_for_a_tty() {
        let o = ExecOptions::from_query(&q(&[
            ("command", "sh"),
            ("command", "-c"),
            ("command", "echo hi"),
            ("stdin", "true"),
            ("stdout", "true"),
            ("stderr", "true"),
            ("tty", "1"),
        ]))
        .unwrap();
        assert_eq!(o.command, ["sh", "-c", "echo hi"]);
        assert!(o.stdin && o.stdout && o.tty);
        assert!(!o.stderr, "a terminal has one output stream");
        assert_eq!(
            ExecOptions::from_query(&q(&[("stdout", "true")])).unwrap_err(),
            "you must specify at least one command for the container"
        );
        assert_eq!(
            ExecOptions::from_query(&q(&[("command", "ls")])).unwrap_err(),
            "you must specify at least 1 of stdin, stdout, stderr"
        );
        assert!(ExecOptions::from_query(&q(&[("command", "ls"), ("stdout", "yes")])).is_err());
    }

    #[test]
    fn exit_codes_become_the_status_kubectl_reads() {
        assert_eq!(exit_status(0)["status"], "Success");
        let st = exit_status(3);
        assert_eq!(st["status"], "Failure");
        assert_eq!(st["reason"], "NonZeroExitCode");
        assert_eq!(st["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(st["details"]["causes"][0]["message"], "3");
    }
}
