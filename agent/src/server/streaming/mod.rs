//! The connection upgrades kubelet's streaming endpoints accept, whatever
//! the verb on top: a plain `Upgrade: SPDY/3.1` (client-go before WebSockets),
//! and a WebSocket whose binary messages carry a byte stream (SPDY tunnelled
//! in WebSocket, `SPDY/3.1+portforward.k8s.io`).

pub mod attach;
pub mod channel;
pub mod portforward;
pub mod remote_command;
pub mod spdy;

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket};
use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// The SPDY version string of the HTTP upgrade.
pub const SPDY_UPGRADE: &str = "SPDY/3.1";
/// The header naming the streaming protocols offered and chosen.
pub const STREAM_PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";

/// Whether the request asks to upgrade to `protocol` (case-insensitively).
pub fn asks_upgrade_to(headers: &HeaderMap, protocol: &str) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case(protocol))
}

/// The streaming protocols a SPDY upgrade offers, in the client's order
/// (the header may repeat, each with one or several values).
pub fn offered_stream_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(STREAM_PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The first protocol of `ours` (preferred first) the client offers.
pub fn negotiate<'a>(offered: &[String], ours: &[&'a str]) -> Option<&'a str> {
    ours.iter()
        .copied()
        .find(|p| offered.iter().any(|o| o == p))
}

/// Answers a SPDY upgrade with 101 and `protocol`; `session` gets the
/// upgraded connection once hyper hands it over.
pub fn accept_spdy<F, Fut>(mut req: Request<Body>, protocol: &str, session: F) -> Response<Body>
where
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => session(TokioIo::new(upgraded)).await,
            Err(e) => tracing::debug!("SPDY upgrade failed: {e}"),
        }
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static(SPDY_UPGRADE));
    if let Ok(v) = HeaderValue::from_str(protocol) {
        h.insert(STREAM_PROTOCOL_HEADER, v);
    }
    resp
}

/// The bytes a WebSocket carries in its binary messages, as one duplex
/// byte stream (what a tunnelling client writes is one stream of bytes cut
/// into messages anywhere). The stream ends when the socket closes; closing
/// the stream's write side closes the socket.
pub fn websocket_bytes(socket: WebSocket) -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut ws_tx, mut ws_rx) = socket.split();
    let (mut rd, mut wr) = tokio::io::split(ours);
    tokio::spawn(async move {
        while let Some(Ok(msg)) = ws_rx.next().await {
            let data: Bytes = match msg {
                Message::Binary(b) => b,
                Message::Text(t) => Bytes::copy_from_slice(t.as_str().as_bytes()),
                Message::Close(_) => break,
                _ => continue,
            };
            if wr.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if ws_tx
                        .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = ws_tx
            .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                code: axum::extract::ws::close_code::NORMAL,
                reason: "".into(),
            })))
            .await;
    });
    theirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_protocols_are_read_from_repeated_headers_and_ours_win_in_our_order() {
        let mut h = HeaderMap::new();
        h.append(
            STREAM_PROTOCOL_HEADER,
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        h.append(
            STREAM_PROTOCOL_HEADER,
            HeaderValue::from_static("v3.channel.k8s.io, v2.channel.k8s.io"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("spdy/3.1"));
        let offered = offered_stream_protocols(&h);
        assert_eq!(
            offered,
            [
                "v4.channel.k8s.io",
                "v3.channel.k8s.io",
                "v2.channel.k8s.io"
            ]
        );
        assert_eq!(
            negotiate(&offered, &["v5.channel.k8s.io", "v4.channel.k8s.io"]),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(negotiate(&offered, &["portforward.k8s.io"]), None);
        assert!(asks_upgrade_to(&h, SPDY_UPGRADE));
        assert!(!asks_upgrade_to(&h, "websocket"));
    }
}
