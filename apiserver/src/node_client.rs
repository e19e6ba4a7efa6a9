//! Apiserver → node agent: where a node's kubelet API is, and one plain
//! HTTP GET to it, as kube-apiserver's `pkg/kubelet/client` does (the
//! agent serves its API over HTTP on `--port`).
//!
//! The address is the node's first `InternalIP` (else its first address)
//! and the port `status.daemonEndpoints.kubeletEndpoint.port`, both set by
//! the agent when it registers its Node.

use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// kubelet's default port, for nodes that don't report one.
pub const DEFAULT_KUBELET_PORT: u64 = 10250;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NodeClientError {
    #[error("node {node:?} has no addresses in its status")]
    NoAddress { node: String },
    #[error("connecting to the kubelet API of node {node:?} at {url}: {reason}")]
    Unreachable {
        node: String,
        url: String,
        reason: String,
    },
    #[error("kubelet API of node {node:?} answered {code} for {url}: {body}")]
    Status {
        node: String,
        url: String,
        code: u16,
        body: String,
    },
    #[error("reading {url} from node {node:?}: {reason}")]
    Body {
        node: String,
        url: String,
        reason: String,
    },
}

/// `http://<ip>:<port>` of a Node object's kubelet API.
pub fn kubelet_base_url(node: &Value) -> Result<String, NodeClientError> {
    let name = node["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let addresses = node["status"]["addresses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let address = addresses
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .or_else(|| addresses.first())
        .and_then(|a| a["address"].as_str())
        .ok_or(NodeClientError::NoAddress { node: name })?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .or_else(|| node["status"]["daemonEndpoints"]["kubeletEndpoint"]["port"].as_u64())
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Ok(if address.contains(':') {
        format!("http://[{address}]:{port}")
    } else {
        format!("http://{address}:{port}")
    })
}

#[derive(Clone)]
pub struct NodeClient {
    http: Client<HttpConnector, Body>,
}

impl Default for NodeClient {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        Self {
            http: Client::builder(TokioExecutor::new()).build(connector),
        }
    }
}

impl NodeClient {
    /// GETs `path_and_query` from the node; the body streams (for logs
    /// with `follow`). A non-2xx answer is an error carrying its body.
    pub async fn get(
        &self,
        node: &Value,
        path_and_query: &str,
    ) -> Result<hyper::Response<hyper::body::Incoming>, NodeClientError> {
        let name = node["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let url = format!("{}{path_and_query}", kubelet_base_url(node)?);
        let unreachable = |reason: String| NodeClientError::Unreachable {
            node: name.clone(),
            url: url.clone(),
            reason,
        };
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| unreachable(e.to_string()))?;
        let resp = self
            .http
            .get(uri)
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        if !resp.status().is_success() {
            let code = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(NodeClientError::Status {
                node: name,
                url,
                code,
                body: String::from_utf8_lossy(&body).trim().to_owned(),
            });
        }
        Ok(resp)
    }

    /// GETs a JSON document from the node.
    pub async fn get_json(&self, node: &Value, path: &str) -> Result<Value, NodeClientError> {
        let resp = self.get(node, path).await?;
        let name = node["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let body_err = |reason: String| NodeClientError::Body {
            node: name.clone(),
            url: path.to_owned(),
            reason,
        };
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| body_err(e.to_string()))?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| body_err(e.to_string()))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubelet_url_prefers_internal_ip_and_reported_port() {
        let node = json!({"metadata": {"name": "n1"}, "status": {
            "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10255}}}});
        assert_eq!(kubelet_base_url(&node).unwrap(), "http://10.0.0.5:10255");
        let bare = json!({"metadata": {"name": "n2"}, "status": {"addresses": [{"type": "InternalIP", "address": "fd00::1"}]}});
        assert_eq!(kubelet_base_url(&bare).unwrap(), "http://[fd00::1]:10250");
        assert!(matches!(
            kubelet_base_url(&json!({"metadata": {"name": "n3"}})),
            Err(NodeClientError::NoAddress { .. })
        ));
    }
}
