//! `pods/{name}/exec`: `kubectl exec` over WebSocket (`v5.channel.k8s.io`,
//! also v4). The request is checked here as kube-apiserver checks it (the
//! pod, its container, its phase, its node), then relayed message by message
//! to the agent on the pod's node (`/exec/{ns}/{pod}/{container}` with the
//! same query, found as the log proxy finds it). The agent's handshake comes
//! first: when it refuses (container not running), the client gets its
//! answer as a `Status` instead of an upgrade.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use super::{Api, ApiResult, Params};
use crate::node_client::{NodeClientError, kubelet_base_url};
use crate::status::ApiError;

/// The subprotocols relayed, preferred first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
const AGENT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type AgentSocket =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// `wss://<node>/exec/{ns}/{pod}/{container}?<query>` for the agent.
pub fn agent_exec_url(
    node: &serde_json::Value,
    ns: &str,
    pod: &str,
    container: &str,
    query: &str,
) -> Result<String, NodeClientError> {
    let base = kubelet_base_url(node)?;
    let base = base.replacen("https://", "wss://", 1);
    let mut url = format!(
        "{base}/exec/{}/{}/{}",
        super::logs::encode(ns),
        super::logs::encode(pod),
        super::logs::encode(container)
    );
    if !query.is_empty() {
        url.push('?');
        url.push_str(query);
    }
    Ok(url)
}

/// The client's requested subprotocols that this relay speaks, in the
/// client's order.
fn relayed_protocols(requested: &[String]) -> Vec<String> {
    requested
        .iter()
        .filter(|p| PROTOCOLS.contains(&p.as_str()))
        .cloned()
        .collect()
}

/// Checks the request against the pod and opens the agent's side.
async fn connect_agent(
    api: &Api,
    ns: &str,
    name: &str,
    query: &str,
    protocols: &[String],
) -> ApiResult<(AgentSocket, Option<String>)> {
    let params: Params = url_pairs(query).into_iter().collect();
    let pods = api.kind("", "v1", "pods");
    let nodes = api.kind("", "v1", "nodes");
    let pod = api.get(pods.as_ref(), Some(ns), name).await?;
    if !params.contains_key("command") {
        return Err(ApiError::bad_request(
            "you must specify at least one command for the container",
        ));
    }
    let container = super::logs::container_name(&pod, &params)?;
    if let Some(phase @ ("Succeeded" | "Failed")) = pod["status"]["phase"].as_str() {
        return Err(ApiError::bad_request(format!(
            "cannot exec into a container in a completed pod; current phase is {phase}"
        )));
    }
    let Some(node_name) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let node = api.get(nodes.as_ref(), None, node_name).await?;
    let url = agent_exec_url(&node, ns, name, &container, query)?;
    let unreachable = |reason: String| NodeClientError::Unreachable {
        node: node_name.to_owned(),
        url: url.clone(),
        reason,
    };
    let mut request = url
        .clone()
        .into_client_request()
        .map_err(|e| unreachable(e.to_string()))?;
    if !protocols.is_empty() {
        let value = HeaderValue::from_str(&protocols.join(", "))
            .map_err(|e| ApiError::bad_request(format!("Sec-WebSocket-Protocol: {e}")))?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", value);
    }
    let tls = api
        .nodes
        .tls_config()
        .ok_or_else(|| unreachable("no TLS configuration for kubelets".into()))?;
    let stream = tokio::time::timeout(
        AGENT_HANDSHAKE_TIMEOUT,
        connect_tls(tls, request.uri().clone()),
    )
    .await
    .map_err(|_| unreachable("timed out".into()))?
    .map_err(|e| unreachable(e.to_string()))?;
    let connected = tokio::time::timeout(
        AGENT_HANDSHAKE_TIMEOUT,
        tokio_tungstenite::client_async(request, stream),
    )
    .await
    .map_err(|_| unreachable("timed out".into()))?;
    match connected {
        Ok((socket, response)) => {
            let selected = response
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Ok((socket, selected))
        }
        // The agent refused: its code and message, as for logs.
        Err(tungstenite::Error::Http(resp)) => Err(NodeClientError::Status {
            node: node_name.to_owned(),
            url,
            code: resp.status().as_u16(),
            body: String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default())
                .trim()
                .to_owned(),
        }
        .into()),
        Err(e) => Err(unreachable(e.to_string()).into()),
    }
}

/// A TLS connection to the kubelet `uri` names, as the apiserver's kubelet
/// client makes it (its client certificate; the kubelet's checked when a CA
/// is configured).
pub(super) async fn connect_tls(
    tls: std::sync::Arc<rustls::ClientConfig>,
    uri: axum::http::Uri,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let host = uri
        .host()
        .ok_or_else(|| std::io::Error::other("no host in the kubelet's URL"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri
        .port_u16()
        .unwrap_or(crate::node_client::DEFAULT_KUBELET_PORT as u16);
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| std::io::Error::other(format!("{host}: {e}")))?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let _ = tcp.set_nodelay(true);
    tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
}

/// `a=1&b=2` decoded, repeated keys kept (`command` is one per word).
pub fn url_pairs(query: &str) -> Vec<(String, String)> {
    let uri = format!("/?{query}").parse().ok();
    uri.and_then(|u| axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&u).ok())
        .map(|q| q.0)
        .unwrap_or_default()
}

pub async fn pod_exec(
    State(api): State<Arc<Api>>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let query = query.unwrap_or_default();
    let requested: Vec<String> = match &ws {
        Ok(ws) => ws
            .requested_protocols()
            .filter_map(|p| p.to_str().ok())
            .flat_map(|p| p.split(',').map(|s| s.trim().to_owned()))
            .collect(),
        Err(_) => Vec::new(),
    };
    let protocols = relayed_protocols(&requested);
    // A request that is no WebSocket upgrade (kubectl's SPDY fallback) still
    // gets the checks, so a refusal reads the same either way.
    let (agent, selected) = match connect_agent(&api, &ns, &name, &query, &protocols).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let ws = match ws {
        Ok(ws) if !protocols.is_empty() => ws,
        _ => {
            drop(agent);
            return ApiError::bad_request(format!(
                "exec is served over WebSocket only, with the subprotocol {}; upgrade the client or let it use WebSockets",
                PROTOCOLS.join(" or ")
            ))
            .into_response();
        }
    };
    let chosen: Vec<String> = selected.into_iter().collect();
    ws.protocols(chosen)
        .on_upgrade(move |client| relay(client, agent))
}

fn to_agent(m: Message) -> Option<tungstenite::Message> {
    match m {
        Message::Binary(b) => Some(tungstenite::Message::Binary(b)),
        Message::Text(t) => Some(tungstenite::Message::text(t.as_str())),
        Message::Close(f) => Some(tungstenite::Message::Close(f.map(|f| {
            tungstenite::protocol::CloseFrame {
                code: f.code.into(),
                reason: f.reason.as_str().into(),
            }
        }))),
        Message::Ping(_) | Message::Pong(_) => None,
    }
}

fn to_client(m: tungstenite::Message) -> Option<Message> {
    match m {
        tungstenite::Message::Binary(b) => Some(Message::Binary(b)),
        tungstenite::Message::Text(t) => Some(Message::text(t.as_str())),
        tungstenite::Message::Close(f) => {
            Some(Message::Close(f.map(|f| axum::extract::ws::CloseFrame {
                code: f.code.into(),
                reason: f.reason.as_str().into(),
            })))
        }
        _ => None,
    }
}

/// A close with code 1000, which client-go reads as the end of its streams.
fn normal_close() -> Message {
    Message::Close(Some(axum::extract::ws::CloseFrame {
        code: axum::extract::ws::close_code::NORMAL,
        reason: "".into(),
    }))
}

/// Copies messages both ways until either side closes, then closes the other.
async fn relay(client: WebSocket, agent: AgentSocket) {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut agent_tx, mut agent_rx) = agent.split();
    let upstream = async {
        while let Some(Ok(m)) = client_rx.next().await {
            let Some(m) = to_agent(m) else { continue };
            let close = matches!(m, tungstenite::Message::Close(_));
            if agent_tx.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = agent_tx.close().await;
    };
    let downstream = async {
        while let Some(Ok(m)) = agent_rx.next().await {
            let Some(m) = to_client(m) else { continue };
            let close = matches!(m, Message::Close(_));
            if client_tx.send(m).await.is_err() || close {
                return;
            }
        }
        // The agent went away without a close: end the client's streams.
        let _ = client_tx.send(normal_close()).await;
    };
    // The agent ending the session (status sent) ends it for the client; a
    // client going away ends it for the agent.
    tokio::select! {
        _ = downstream => {}
        _ = upstream => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_agent_url_keeps_the_query_and_speaks_websocket() {
        let node = json!({"metadata": {"name": "n1"}, "status": {
            "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10255}}}});
        assert_eq!(
            agent_exec_url(
                &node,
                "default",
                "web",
                "main",
                "command=sh&command=-c&stdout=true"
            )
            .unwrap(),
            "wss://10.0.0.5:10255/exec/default/web/main?command=sh&command=-c&stdout=true"
        );
    }

    #[test]
    fn repeated_query_keys_stay_in_order() {
        assert_eq!(
            url_pairs("command=sh&command=-c&command=echo%20hi&tty=false"),
            [
                ("command".to_owned(), "sh".to_owned()),
                ("command".to_owned(), "-c".to_owned()),
                ("command".to_owned(), "echo hi".to_owned()),
                ("tty".to_owned(), "false".to_owned()),
            ]
        );
        assert_eq!(
            relayed_protocols(&["v5.channel.k8s.io".into(), "channel.k8s.io".into()]),
            ["v5.channel.k8s.io"]
        );
    }
}
