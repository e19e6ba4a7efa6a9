//! `/attach/{namespace}/{pod}/{container}`: kubelet's attach, the client
//! joined to the running container's stdin, output and terminal through its
//! shim's attach socket ([`crate::runtime::attach`]). Spoken as exec is:
//! the WebSocket channel protocols ([`super::channel`]; kubectl ≥ 1.30), and the same channels as SPDY streams (`v4.channel.k8s.io` over
//! SPDY/3.1, kubectl ≤ 1.29): one stream per `streamType` (error, stdin,
//! stdout, stderr, resize). The session ends when the container's output
//! does (it exited) or when the client leaves.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::channel::{self, ChannelCodec, Inbound, decode_inbound, normal_close};
use super::remote_command::{self, SPDY_PROTOCOLS, Wanted};
use super::spdy::session;
use super::{SPDY_UPGRADE, accept_spdy, asks_upgrade_to, negotiate, offered_stream_protocols};
use crate::runtime::attach;
use crate::server::ServerState;
use crate::server::exec::{error, find_target, parse_bool, query_pairs};

/// What an attach asks for, as kubelet reads its query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttachOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl AttachOptions {
    pub fn from_query(pairs: &[(String, String)]) -> Result<Self, String> {
        let mut o = AttachOptions {
            stdin: false,
            stdout: false,
            stderr: false,
            tty: false,
        };
        for (k, v) in pairs {
            match k.as_str() {
                "stdin" | "input" => o.stdin = parse_bool(k, v)?,
                "stdout" | "output" => o.stdout = parse_bool(k, v)?,
                "stderr" | "error" => o.stderr = parse_bool(k, v)?,
                "tty" => o.tty = parse_bool(k, v)?,
                _ => {}
            }
        }
        if !o.stdin && !o.stdout && !o.stderr {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        // A terminal has one output stream.
        if o.tty {
            o.stderr = false;
        }
        Ok(o)
    }
}

/// From the client, for the container.
#[derive(Debug, PartialEq)]
enum Input {
    Stdin(Bytes),
    StdinClose,
    Resize(u16, u16),
}

/// From the container, for the client.
enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
}

pub async fn attach(
    State(s): State<ServerState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    req: Request,
) -> Response {
    let opts = match query_pairs(query.as_deref().unwrap_or_default())
        .and_then(|p| AttachOptions::from_query(&p))
    {
        Ok(o) => o,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let target = match find_target(&s, &namespace, &pod, &container) {
        Ok(t) => t,
        Err((code, msg)) => return error(code, msg),
    };
    let shim = match attach::short_path(&target.bundle) {
        Ok((_dir, path)) => UnixStream::connect(path).await,
        Err(e) => Err(e),
    };
    let shim = match shim {
        Ok(s) => s,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("attaching to container {container} in pod {namespace}/{pod}: {e}"),
            );
        }
    };
    let who = format!("{namespace}/{pod}/{container}");
    let headers = req.headers().clone();
    if asks_upgrade_to(&headers, "websocket") {
        let (mut parts, _) = req.into_parts();
        let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(ws) => ws,
            Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
        };
        tracing::info!(container = %who, ?opts, "attach (WebSocket)");
        return ws
            .protocols(channel::PROTOCOLS)
            .on_upgrade(move |socket| websocket_session(socket, shim, opts));
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
        tracing::info!(container = %who, ?opts, "attach (SPDY)");
        return accept_spdy(req, protocol, move |io| spdy_session(io, shim, opts));
    }
    error(
        StatusCode::BAD_REQUEST,
        format!(
            "attach needs a connection upgrade: a WebSocket ({}) or {SPDY_UPGRADE}",
            channel::PROTOCOLS.join(", ")
        ),
    )
}

/// Joins the shim's socket to the session: input to the container until
/// `input` closes (the client left), output until the container's ends.
fn relay_shim(
    shim: UnixStream,
    opts: AttachOptions,
    mut input: mpsc::Receiver<Input>,
) -> mpsc::Receiver<Output> {
    let (out_tx, out_rx) = mpsc::channel(64);
    let (mut from_shim, mut to_shim) = shim.into_split();
    tokio::spawn(async move {
        if opts.stdin
            && to_shim
                .write_all(&attach::encode(attach::ATTACH_STDIN, b""))
                .await
                .is_err()
        {
            return;
        }
        while let Some(i) = input.recv().await {
            let msg = match i {
                Input::Stdin(b) if opts.stdin => attach::encode(attach::STDIN, &b),
                Input::Stdin(_) => continue,
                Input::StdinClose => attach::encode(attach::STDIN_CLOSE, b""),
                Input::Resize(w, h) => attach::encode_resize(w, h),
            };
            if to_shim.write_all(&msg).await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let mut head = [0u8; 5];
            if from_shim.read_exact(&mut head).await.is_err() {
                return;
            }
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            if len > attach::MAX_MESSAGE {
                return;
            }
            let mut payload = vec![0u8; len];
            if from_shim.read_exact(&mut payload).await.is_err() {
                return;
            }
            let out = match head[0] {
                attach::STDOUT if opts.stdout => Output::Stdout(Bytes::from(payload)),
                attach::STDERR if opts.stderr => Output::Stderr(Bytes::from(payload)),
                // With a terminal there is no stderr; what would go there shows on it.
                attach::STDERR if opts.tty && opts.stdout => Output::Stdout(Bytes::from(payload)),
                _ => continue,
            };
            if out_tx.send(out).await.is_err() {
                return;
            }
        }
    });
    out_rx
}

fn success_status() -> serde_json::Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
}

async fn websocket_session(socket: WebSocket, shim: UnixStream, opts: AttachOptions) {
    let codec = ChannelCodec::of(socket.protocol().and_then(|p| p.to_str().ok()));
    let (mut ws_tx, mut ws_rx) = socket.split();
    let (in_tx, in_rx) = mpsc::channel(16);
    let mut output = relay_shim(shim, opts, in_rx);
    let inbound = async move {
        while let Some(Ok(msg)) = ws_rx.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            let Some(data) = codec.unframe(msg) else {
                continue;
            };
            let input = match decode_inbound(data) {
                Inbound::Stdin(b) => Input::Stdin(b),
                Inbound::Resize { width, height } => Input::Resize(width, height),
                Inbound::CloseStdin => Input::StdinClose,
                Inbound::Ignored => continue,
            };
            if in_tx.send(input).await.is_err() {
                break;
            }
        }
    };
    let outbound = async {
        while let Some(o) = output.recv().await {
            let m = match o {
                Output::Stdout(b) => codec.frame(channel::STDOUT, &b),
                Output::Stderr(b) => codec.frame(channel::STDERR, &b),
            };
            if ws_tx.send(m).await.is_err() {
                return;
            }
        }
        // The container's output has ended: so has the attach.
        let status = success_status().to_string();
        let _ = ws_tx
            .send(codec.frame(channel::ERROR, status.as_bytes()))
            .await;
        let _ = ws_tx.send(normal_close()).await;
    };
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
    }
}

async fn spdy_session(
    io: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    shim: UnixStream,
    opts: AttachOptions,
) {
    let mut incoming = session::serve(io);
    let wanted = Wanted {
        stdin: opts.stdin,
        stdout: opts.stdout,
        stderr: opts.stderr,
        tty: opts.tty,
    };
    let Some(mut streams) = remote_command::collect(&mut incoming, wanted, "attach").await else {
        return;
    };
    let (in_tx, in_rx) = mpsc::channel(16);
    let mut output = relay_shim(shim, opts, in_rx);
    if let Some(mut stdin) = streams.stdin.take() {
        let tx = in_tx.clone();
        tokio::spawn(async move {
            while let Some(b) = stdin.data.recv().await {
                if tx.send(Input::Stdin(b)).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(Input::StdinClose).await;
        });
    }
    if let Some(resize) = streams.resize.take() {
        let tx = in_tx.clone();
        let mut sizes = remote_command::sizes(resize);
        tokio::spawn(async move {
            while let Some((w, h)) = sizes.recv().await {
                if tx.send(Input::Resize(w, h)).await.is_err() {
                    return;
                }
            }
        });
    }
    let stdout = streams.stdout.as_ref().map(|s| s.writer.clone());
    let stderr = streams.stderr.as_ref().map(|s| s.writer.clone());
    loop {
        tokio::select! {
            o = output.recv() => match o {
                Some(Output::Stdout(b)) => { if let Some(w) = &stdout { w.send(b); } }
                Some(Output::Stderr(b)) => { if let Some(w) = &stderr { w.send(b); } }
                None => break,
            },
            // The connection has ended: the client left.
            more = incoming.recv() => match more {
                Some(s) => s.writer.reset(),
                None => { drop(in_tx); return; }
            },
        }
    }
    // The container's output has ended: every stream ends, the error stream
    // empty (success).
    for w in [&stdout, &stderr].into_iter().flatten() {
        w.close();
    }
    if let Some(e) = &streams.error {
        e.writer.close();
    }
    drop(in_tx);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_read_the_query_and_a_terminal_has_no_stderr() {
        let q = query_pairs("stdin=true&stdout=1&stderr=true&tty=true").unwrap();
        let o = AttachOptions::from_query(&q).unwrap();
        assert_eq!(
            o,
            AttachOptions {
                stdin: true,
                stdout: true,
                stderr: false,
                tty: true
            }
        );
        assert_eq!(
            AttachOptions::from_query(&query_pairs("tty=true").unwrap()).unwrap_err(),
            "you must specify at least 1 of stdin, stdout, stderr"
        );
    }
}
