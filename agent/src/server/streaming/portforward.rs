//! `/portForward/{namespace}/{pod}`: kubelet's port forwarding, on each
//! protocol a client may speak:
//! - `portforward.k8s.io` over SPDY/3.1 (kubectl ≤ 1.30): for every local
//!   connection the client opens an error stream and a data stream, both
//!   named by `port` and `requestID` headers;
//! - the same SPDY session tunnelled in a WebSocket
//!   (`SPDY/3.1+portforward.k8s.io`, kubectl ≥ 1.31);
//! - the WebSocket channel protocol (`v4.channel.k8s.io`, the Python
//!   client): the ports come in the query; port `i` has data channel `2i`
//!   and error channel `2i+1`, each opened by the server with the port
//!   number (2 bytes, little-endian).
//!
//! Each forwarded connection is a TCP connection to the port on the pod's
//! loopback, made from inside the pod's network namespace.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::spdy::session::{self, IncomingStream};
use super::{SPDY_UPGRADE, accept_spdy, asks_upgrade_to, negotiate, offered_stream_protocols};
use crate::server::ServerState;
use crate::server::exec::{error, find_target, query_pairs};

/// The SPDY streaming protocol of port forwarding.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// SPDY tunnelled in WebSocket binary messages.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The WebSocket channel protocol (binary frames).
pub const CHANNEL_PROTOCOL: &str = "v4.channel.k8s.io";
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The pod a session forwards to: a process in its network namespace, and
/// the names error messages use.
#[derive(Clone)]
struct PodTarget {
    pid: i32,
    name: String,
    uid: String,
}

/// The pod's network namespace is any running container's.
fn pod_target(s: &ServerState, ns: &str, pod: &str) -> Result<PodTarget, Response> {
    let Some(entry) = s.ctx.status.find(ns, pod) else {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{pod} not found on node {}", s.ctx.node_name),
        ));
    };
    let uid = entry.pod.metadata.uid.clone().unwrap_or_default();
    entry
        .containers
        .iter()
        .find_map(|c| find_target(s, ns, pod, &c.name).ok())
        .map(|t| PodTarget {
            pid: t.pid,
            name: pod.to_owned(),
            uid,
        })
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                format!("pod {ns}/{pod} has no running container to forward ports to"),
            )
        })
}

/// The ports of a channel-protocol request: `port=80&port=81` as the
/// kubelet reads them, or `ports=80,81` as clients send them to the API.
pub fn requested_ports(pairs: &[(String, String)]) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (k, v) in pairs {
        if k != "port" && k != "ports" {
            continue;
        }
        for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            ports.push(parse_port(p)?);
        }
    }
    if ports.is_empty() {
        return Err("at least one port must be specified".into());
    }
    Ok(ports)
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("unable to parse {p:?} as a port")),
        Ok(n) => Ok(n),
    }
}

pub async fn port_forward(
    State(s): State<ServerState>,
    Path((namespace, pod)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    req: Request,
) -> Response {
    let target = match pod_target(&s, &namespace, &pod) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
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
        if offered.iter().any(|p| p == TUNNEL_PROTOCOL) {
            tracing::info!(pod = %format!("{namespace}/{pod}"), "port forwarding (SPDY over WebSocket)");
            return ws
                .protocols([TUNNEL_PROTOCOL])
                .on_upgrade(move |socket| serve_spdy(super::websocket_bytes(socket), target));
        }
        let pairs = match query_pairs(query.as_deref().unwrap_or_default()) {
            Ok(p) => p,
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        };
        let ports = match requested_ports(&pairs) {
            Ok(p) => p,
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        };
        tracing::info!(pod = %format!("{namespace}/{pod}"), ?ports, "port forwarding (WebSocket channels)");
        return ws
            .protocols([CHANNEL_PROTOCOL])
            .on_upgrade(move |socket| serve_channels(socket, target, ports));
    }
    if asks_upgrade_to(&headers, SPDY_UPGRADE) {
        let offered = offered_stream_protocols(&headers);
        let Some(protocol) = negotiate(&offered, &[PROTOCOL]) else {
            return error(
                StatusCode::FORBIDDEN,
                format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports [{PROTOCOL:?}]"
                ),
            );
        };
        tracing::info!(pod = %format!("{namespace}/{pod}"), "port forwarding (SPDY)");
        return accept_spdy(req, protocol, move |io| serve_spdy(io, target));
    }
    error(
        StatusCode::BAD_REQUEST,
        format!(
            "port forwarding needs a connection upgrade: {SPDY_UPGRADE} ({PROTOCOL}) or a WebSocket ({TUNNEL_PROTOCOL} or {CHANNEL_PROTOCOL})"
        ),
    )
}

/// A TCP connection to `port` on the pod's loopback. `setns` moves only the
/// calling thread, so a thread of its own enters the namespace, makes the
/// socket (which keeps its namespace) and ends.
async fn dial(pid: i32, port: u16) -> std::io::Result<TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("port-forward-dial".into())
        .spawn(move || {
            let result = (|| {
                let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                match std::net::TcpStream::connect_timeout(&v4, DIAL_TIMEOUT) {
                    Ok(s) => Ok(s),
                    Err(e4) => {
                        let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
                        std::net::TcpStream::connect_timeout(&v6, DIAL_TIMEOUT).map_err(|_| e4)
                    }
                }
            })();
            let _ = tx.send(result);
        })?;
    let stream = rx
        .await
        .map_err(|_| std::io::Error::other("the dialing thread died"))??;
    stream.set_nonblocking(true)?;
    let _ = stream.set_nodelay(true);
    TcpStream::from_std(stream)
}

/// kubelet's message when the pod's port cannot be reached.
fn forward_error(target: &PodTarget, port: u16, e: &std::io::Error) -> String {
    format!(
        "error forwarding port {port} to pod {}, uid {}: {e}",
        target.name, target.uid
    )
}

/// The streams of one forwarded connection, paired by request id.
#[derive(Default)]
struct StreamPair {
    error: Option<IncomingStream>,
    data: Option<IncomingStream>,
}

/// A SPDY session: pairs each connection's error and data streams and
/// forwards each pair.
async fn serve_spdy<S>(io: S, target: PodTarget)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut incoming = session::serve(io);
    let mut pending: HashMap<String, StreamPair> = HashMap::new();
    while let Some(stream) = incoming.recv().await {
        stream.writer.reply();
        let kind = stream.header("streamType").unwrap_or_default().to_owned();
        // Without a request id (older clients), a data stream follows its
        // error stream: the pair shares the data stream's id.
        let key = match stream.header("requestID") {
            Some(id) => id.to_owned(),
            None if kind == "error" => (stream.id + 2).to_string(),
            None => stream.id.to_string(),
        };
        let slot = pending.entry(key.clone()).or_default();
        match kind.as_str() {
            "error" => slot.error = Some(stream),
            "data" => slot.data = Some(stream),
            other => {
                tracing::debug!("port forwarding: unknown stream type {other:?}");
                stream.writer.reset();
                continue;
            }
        }
        if slot.error.is_some() && slot.data.is_some() {
            let pair = pending.remove(&key).expect("just filled");
            let (error, data) = (pair.error.expect("error"), pair.data.expect("data"));
            tokio::spawn(forward_streams(target.clone(), error, data));
        }
    }
}

async fn forward_streams(target: PodTarget, error: IncomingStream, mut data: IncomingStream) {
    let port = match data.header("port").map(parse_port) {
        Some(Ok(p)) => p,
        Some(Err(e)) => return fail(&error, &data, e),
        None => return fail(&error, &data, "the data stream names no port".into()),
    };
    let tcp = match dial(target.pid, port).await {
        Ok(t) => t,
        Err(e) => return fail(&error, &data, forward_error(&target, port, &e)),
    };
    let (mut from_pod, mut to_pod) = tcp.into_split();
    let upstream = async {
        while let Some(chunk) = data.data.recv().await {
            if to_pod.write_all(&chunk).await.is_err() {
                break;
            }
        }
        // The client closed its side: so does the connection to the pod.
        let _ = to_pod.shutdown().await;
    };
    let writer = data.writer.clone();
    let downstream = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from_pod.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !writer.send(Bytes::copy_from_slice(&buf[..n])) {
                        break;
                    }
                }
            }
        }
        writer.close();
    };
    tokio::join!(upstream, downstream);
    error.writer.close();
}

fn fail(error: &IncomingStream, data: &IncomingStream, message: String) {
    tracing::info!("port forwarding: {message}");
    error.writer.send(Bytes::from(message));
    error.writer.close();
    data.writer.close();
}

/// The channel protocol: one connection per requested port, made at once.
async fn serve_channels(socket: WebSocket, target: PodTarget, ports: Vec<u16>) {
    let (mut ws_tx, mut ws_rx) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if ws_tx.send(m).await.is_err() || close {
                break;
            }
        }
    });
    let frame = |channel: usize, data: &[u8]| {
        let mut v = Vec::with_capacity(data.len() + 1);
        v.push(channel as u8);
        v.extend_from_slice(data);
        Message::Binary(Bytes::from(v))
    };
    for (i, port) in ports.iter().enumerate() {
        let _ = out_tx.send(frame(2 * i, &port.to_le_bytes())).await;
        let _ = out_tx.send(frame(2 * i + 1, &port.to_le_bytes())).await;
    }
    let mut to_pod = Vec::new();
    let mut readers = tokio::task::JoinSet::new();
    for (i, &port) in ports.iter().enumerate() {
        match dial(target.pid, port).await {
            Ok(tcp) => {
                let (mut from_pod, w) = tcp.into_split();
                to_pod.push(Some(w));
                let tx = out_tx.clone();
                readers.spawn(async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    loop {
                        match from_pod.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if tx.send(frame(2 * i, &buf[..n])).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
            Err(e) => {
                to_pod.push(None);
                let msg = forward_error(&target, port, &e);
                tracing::info!("port forwarding: {msg}");
                let _ = out_tx.send(frame(2 * i + 1, msg.as_bytes())).await;
            }
        }
    }
    let inbound = async {
        while let Some(Ok(m)) = ws_rx.next().await {
            let data: Bytes = match m {
                Message::Binary(b) => b,
                Message::Text(t) => Bytes::copy_from_slice(t.as_str().as_bytes()),
                Message::Close(_) => break,
                _ => continue,
            };
            let Some(&channel) = data.first() else {
                continue;
            };
            let channel = channel as usize;
            if channel % 2 != 0 {
                continue;
            }
            if let Some(Some(w)) = to_pod.get_mut(channel / 2)
                && w.write_all(&data[1..]).await.is_err()
            {
                to_pod[channel / 2] = None;
            }
        }
    };
    // The session ends when the client leaves or every pod side has closed.
    tokio::select! {
        _ = inbound => {}
        _ = async { while readers.join_next().await.is_some() {} } => {}
    }
    readers.abort_all();
    let _ = out_tx
        .send(Message::Close(Some(axum::extract::ws::CloseFrame {
            code: axum::extract::ws::close_code::NORMAL,
            reason: "".into(),
        })))
        .await;
    drop(out_tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_either_query_form_and_bad_ones_are_named() {
        assert_eq!(
            requested_ports(&query_pairs("port=80&port=8080").unwrap()).unwrap(),
            [80, 8080]
        );
        assert_eq!(
            requested_ports(&query_pairs("ports=80,81").unwrap()).unwrap(),
            [80, 81]
        );
        assert_eq!(
            requested_ports(&query_pairs("ports=http").unwrap()).unwrap_err(),
            "unable to parse \"http\" as a port"
        );
        assert_eq!(
            requested_ports(&query_pairs("ports=0").unwrap()).unwrap_err(),
            "unable to parse \"0\" as a port"
        );
        assert!(requested_ports(&query_pairs("").unwrap()).is_err());
    }
}
