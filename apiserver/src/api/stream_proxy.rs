//! `pods/{name}/exec`, `pods/{name}/attach` and `pods/{name}/portforward`:
//! checked here as kube-apiserver checks them, then proxied to the pod's
//! kubelet as kube-apiserver's upgrade-aware proxy does: the client's upgrade
//! request goes to the kubelet (`/exec/...`, `/attach/...`,
//! `/portForward/...`) over HTTPS with
//! the apiserver's kubelet client certificate; when the kubelet switches
//! protocols, so does the client's connection, and bytes flow both ways
//! untouched. Every protocol the kubelet speaks (SPDY/3.1, SPDY tunnelled
//! in WebSocket, the WebSocket channel protocols) passes as it is.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::{Api, ApiResult, Params};
use crate::node_client::{NodeClientError, kubelet_base_url};
use crate::status::ApiError;

const KUBELET_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Request headers that stay with the apiserver: the user's credentials are
/// for the API, the kubelet trusts the apiserver's certificate.
const NOT_FORWARDED: [HeaderName; 4] = [
    header::HOST,
    header::AUTHORIZATION,
    header::CONTENT_LENGTH,
    header::PROXY_AUTHORIZATION,
];

fn encode(s: &str) -> String {
    super::logs::encode(s)
}

/// A TLS connection to the kubelet `uri` names, as the apiserver's kubelet
/// client makes it (its client certificate; the kubelet's checked when a CA
/// is configured).
async fn connect_tls(
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

/// The pod and its node, refused as kube-apiserver refuses them.
async fn pod_and_node(api: &Api, ns: &str, name: &str) -> ApiResult<(Value, Value)> {
    let pods = api.kind("", "v1", "pods");
    let nodes = api.kind("", "v1", "nodes");
    let pod = api.get(pods.as_ref(), Some(ns), name).await?;
    let Some(node_name) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let node = api.get(nodes.as_ref(), None, node_name).await?;
    Ok((pod, node))
}

/// kubelet's query for port forwarding: one `port` per port (clients send
/// the API's `ports`, possibly comma-separated).
pub fn kubelet_portforward_query(query: &str) -> ApiResult<String> {
    let mut out = Vec::new();
    for (k, v) in url_pairs(query) {
        if k != "ports" && k != "port" {
            continue;
        }
        for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => out.push(format!("port={n}")),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "PodPortForwardOptions \"\" is invalid: ports: Invalid value: {p:?}: must be a valid port number"
                    )));
                }
            }
        }
    }
    Ok(out.join("&"))
}

pub async fn pod_portforward(
    State(api): State<Arc<Api>>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    req: Request,
) -> Response {
    let result = async {
        let (_, node) = pod_and_node(&api, &ns, &name).await?;
        let query = kubelet_portforward_query(query.as_deref().unwrap_or_default())?;
        let mut path = format!("/portForward/{}/{}", encode(&ns), encode(&name));
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query);
        }
        proxy_upgrade(&api, &node, &path, req).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

pub async fn pod_exec(
    State(api): State<Arc<Api>>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    req: Request,
) -> Response {
    let query = query.unwrap_or_default();
    if !url_pairs(&query).iter().any(|(k, _)| k == "command") {
        return ApiError::bad_request("you must specify at least one command for the container")
            .into_response();
    }
    proxy_to_container(&api, "exec", "exec into", &ns, &name, &query, req).await
}

pub async fn pod_attach(
    State(api): State<Arc<Api>>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    req: Request,
) -> Response {
    let query = query.unwrap_or_default();
    proxy_to_container(&api, "attach", "attach", &ns, &name, &query, req).await
}

/// Exec and attach: the container the query names (or the pod's only or
/// default one) of a pod that has not completed, at kubelet's
/// `/{verb}/{ns}/{pod}/{container}` with the same query.
async fn proxy_to_container(
    api: &Api,
    verb: &str,
    doing: &str,
    ns: &str,
    name: &str,
    query: &str,
    req: Request,
) -> Response {
    let result = async {
        let (pod, node) = pod_and_node(api, ns, name).await?;
        let params: Params = url_pairs(query).into_iter().collect();
        let container = super::logs::container_name(&pod, &params)?;
        if let Some(phase @ ("Succeeded" | "Failed")) = pod["status"]["phase"].as_str() {
            return Err(ApiError::bad_request(format!(
                "cannot {doing} a container in a completed pod; current phase is {phase}"
            )));
        }
        let mut path = format!(
            "/{verb}/{}/{}/{}",
            encode(ns),
            encode(name),
            encode(&container)
        );
        if !query.is_empty() {
            path.push('?');
            path.push_str(query);
        }
        proxy_upgrade(api, &node, &path, req).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Sends the client's request to the kubelet; on 101 joins the two
/// upgraded connections, otherwise answers with the kubelet's refusal.
async fn proxy_upgrade(
    api: &Api,
    node: &Value,
    path: &str,
    mut req: Request,
) -> ApiResult<Response> {
    let node_name = node["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let url = format!("{}{path}", kubelet_base_url(node)?);
    let unreachable = |reason: String| NodeClientError::Unreachable {
        node: node_name.clone(),
        url: url.clone(),
        reason,
    };
    let uri: axum::http::Uri = url.parse().map_err(|e| unreachable(format!("{e}")))?;
    let tls = api
        .nodes
        .tls_config()
        .ok_or_else(|| unreachable("no TLS configuration for kubelets".into()))?;
    let handshake = async {
        let stream = connect_tls(tls, uri.clone()).await?;
        hyper::client::conn::http1::handshake::<_, http_body_util::Empty<Bytes>>(TokioIo::new(
            stream,
        ))
        .await
        .map_err(std::io::Error::other)
    };
    let (mut sender, conn) = tokio::time::timeout(KUBELET_HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| unreachable("timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("kubelet stream connection: {e}");
        }
    });

    let mut upstream = hyper::Request::builder()
        .method(req.method().clone())
        .uri(path)
        .header(
            header::HOST,
            uri.authority().map(|a| a.as_str()).unwrap_or_default(),
        );
    for (name, value) in req.headers() {
        if !NOT_FORWARDED.contains(name) {
            upstream = upstream.header(name, value);
        }
    }
    let upstream = upstream
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut answer = tokio::time::timeout(KUBELET_HANDSHAKE_TIMEOUT, sender.send_request(upstream))
        .await
        .map_err(|_| unreachable("timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?;

    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        let code = answer.status().as_u16();
        let body = answer
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned())
            .unwrap_or_default();
        return Err(NodeClientError::Status {
            node: node_name,
            url,
            code,
            body,
        }
        .into());
    }

    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *response.headers_mut() = answer.headers().clone();
    let client_side = hyper::upgrade::on(&mut req);
    let kubelet_side = hyper::upgrade::on(&mut answer);
    tokio::spawn(async move {
        let (client, kubelet) = match tokio::join!(client_side, kubelet_side) {
            (Ok(c), Ok(k)) => (c, k),
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!("stream upgrade failed: {e}");
                return;
            }
        };
        let (mut client, mut kubelet) = (TokioIo::new(client), TokioIo::new(kubelet));
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut kubelet).await {
            tracing::debug!("stream proxy ended: {e}");
        }
    });
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn the_api_ports_become_the_kubelets_port_parameters() {
        assert_eq!(
            kubelet_portforward_query("ports=80,8080&ports=9090").unwrap(),
            "port=80&port=8080&port=9090"
        );
        assert_eq!(kubelet_portforward_query("").unwrap(), "");
        let err = kubelet_portforward_query("ports=http").unwrap_err();
        assert_eq!(err.into_response().status(), StatusCode::BAD_REQUEST);
    }
}
