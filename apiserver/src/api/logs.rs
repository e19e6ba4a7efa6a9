//! `GET pods/{name}/log`: proxied to the agent on the pod's node
//! (`/containerLogs/{ns}/{pod}/{container}`), streamed back as it arrives
//! so `kubectl logs -f` follows. As kube-apiserver does, a pod with one
//! container needs no `container=`, a pod with several does, and an error
//! from the node comes back with its code and the node's message.

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::{Api, ApiResult, Params};
use crate::node_client::NodeClientError;
use crate::status::ApiError;

/// The log options kubectl sends that the agent understands, passed through.
const FORWARDED: [&str; 6] = [
    "follow",
    "previous",
    "tailLines",
    "timestamps",
    "limitBytes",
    "sinceSeconds",
];

/// Which container's log: the one asked for, or the only one there is.
pub(super) fn container_name(pod: &Value, params: &Params) -> ApiResult<String> {
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let names: Vec<&str> = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|f| pod["spec"][f].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect();
    match params
        .get("container")
        .map(String::as_str)
        .filter(|c| !c.is_empty())
    {
        Some(c) if names.contains(&c) => Ok(c.to_owned()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {pod_name}"
        ))),
        None => {
            let regular: Vec<&str> = pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str())
                .collect();
            match regular.as_slice() {
                [only] => Ok((*only).to_owned()),
                _ => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                    regular.join(" ")
                ))),
            }
        }
    }
}

/// `/containerLogs/...?...` for the agent.
pub fn container_logs_path(ns: &str, pod: &str, container: &str, params: &Params) -> String {
    let mut query: Vec<String> = FORWARDED
        .iter()
        .filter_map(|k| params.get(*k).map(|v| format!("{k}={}", encode(v))))
        .collect();
    query.sort();
    let mut path = format!(
        "/containerLogs/{}/{}/{}",
        encode(ns),
        encode(pod),
        encode(container)
    );
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    path
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(super) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl From<NodeClientError> for ApiError {
    fn from(e: NodeClientError) -> Self {
        match e {
            // The node's own message, as kubectl users know it ("container
            // ... is waiting to start", "previous terminated container ...").
            NodeClientError::Status { code, body, .. } => match code {
                404 => ApiError::new(404, "NotFound", body),
                400..=499 => ApiError::bad_request(body),
                _ => ApiError::internal(body),
            },
            other => ApiError::internal(other),
        }
    }
}

pub async fn pod_log(api: &Api, ns: &str, name: &str, params: &Params) -> ApiResult<Response> {
    let pods = api.registry.find("", "v1", "pods").expect("pods served");
    let nodes = api.registry.find("", "v1", "nodes").expect("nodes served");
    let pod = api.get(pods.as_ref(), Some(ns), name).await?;
    let container = container_name(&pod, params)?;
    let Some(node_name) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let node = api.get(nodes.as_ref(), None, node_name).await?;
    let resp = api
        .nodes
        .get(&node, &container_logs_path(ns, name, &container, params))
        .await?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/plain"),
            (header::CACHE_CONTROL, "no-cache, private"),
        ],
        Body::new(resp.into_body()),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_only_container_is_the_default_and_others_must_be_named() {
        let one = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
        assert_eq!(container_name(&one, &Params::new()).unwrap(), "c");
        let two = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let e = container_name(&two, &Params::new()).unwrap_err();
        assert_eq!(
            e.message,
            "a container name must be specified for pod p, choose one of: [a b]"
        );
        let asked: Params = [("container".to_owned(), "x".to_owned())].into();
        assert_eq!(
            container_name(&two, &asked).unwrap_err().message,
            "container x is not valid for pod p"
        );
    }

    #[test]
    fn log_options_are_forwarded_to_the_agent() {
        let params: Params = [
            ("follow", "true"),
            ("tailLines", "5"),
            ("container", "c"),
            ("pretty", "1"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
        assert_eq!(
            container_logs_path("default", "web", "c", &params),
            "/containerLogs/default/web/c?follow=true&tailLines=5"
        );
    }
}
