//! `metrics.k8s.io/v1beta1`: NodeMetrics and PodMetrics, computed on each
//! request from every node's Summary API (`GET /stats/summary` on its
//! agent), as metrics-server would serve them; `kubectl top` reads these.
//! A node whose agent does not answer is left out, as metrics-server does.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Api, ApiResult, Params, json_response, object};
use crate::selectors::LabelSelector;
use crate::status::ApiError;

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
/// The agent samples CPU once a second; its rates span that window.
const WINDOW: &str = "1s";

pub fn resource_list() -> Value {
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/{VERSION}"), "resources": [
        {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
        {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]}
    ]})
}

/// CPU in nanocores and memory in KiB, the units metrics-server reports.
fn usage(stats_cpu: &Value, stats_memory: &Value) -> Value {
    let cores = stats_cpu["usageNanoCores"].as_u64().unwrap_or(0);
    let memory = stats_memory["workingSetBytes"].as_u64().unwrap_or(0);
    json!({"cpu": format!("{cores}n"), "memory": format!("{}Ki", memory / 1024)})
}

fn labels(obj: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(obj["metadata"]["labels"].clone()).unwrap_or_default()
}

fn selector(params: &Params) -> ApiResult<LabelSelector> {
    LabelSelector::parse(
        params
            .get("labelSelector")
            .map(String::as_str)
            .unwrap_or(""),
    )
    .map_err(ApiError::bad_request)
}

/// The node's metrics from a Summary document.
pub fn node_metrics(node: &Value, summary: &Value) -> Value {
    let n = &summary["node"];
    json!({
        "metadata": {"name": node["metadata"]["name"], "labels": node["metadata"]["labels"].clone(),
                     "creationTimestamp": jiff::Timestamp::now().to_string()},
        "timestamp": n["cpu"]["time"].as_str().map(str::to_owned).unwrap_or_else(|| jiff::Timestamp::now().to_string()),
        "window": WINDOW,
        "usage": usage(&n["cpu"], &n["memory"]),
    })
}

/// One pod's metrics from its Summary entry.
pub fn pod_metrics(pod: &Value, entry: &Value) -> Value {
    let containers: Vec<Value> = entry["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| json!({"name": c["name"], "usage": usage(&c["cpu"], &c["memory"])}))
        .collect();
    json!({
        "metadata": {"name": pod["metadata"]["name"], "namespace": pod["metadata"]["namespace"],
                     "labels": pod["metadata"]["labels"].clone(), "creationTimestamp": jiff::Timestamp::now().to_string()},
        "timestamp": entry["cpu"]["time"].as_str().map(str::to_owned).unwrap_or_else(|| jiff::Timestamp::now().to_string()),
        "window": WINDOW,
        "containers": containers,
    })
}

impl Api {
    async fn stored(&self, plural: &str, ns: Option<&str>) -> ApiResult<Vec<Value>> {
        let kind = self
            .registry
            .find("", "v1", plural)
            .expect("core kind served");
        let (kvs, _) = self.store.list(&kind.info().key_prefix(ns)).await?;
        Ok(kvs.iter().map(object::decode).collect())
    }

    /// Every reachable node with its Summary, fetched concurrently.
    async fn summaries(&self, nodes: Vec<Value>) -> Vec<(Value, Value)> {
        let fetches = nodes.into_iter().map(|node| async move {
            match self.nodes.get_json(&node, "/stats/summary").await {
                Ok(summary) => Some((node, summary)),
                Err(e) => {
                    tracing::debug!("metrics: skipping node: {e}");
                    None
                }
            }
        });
        futures::future::join_all(fetches)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    async fn node_metrics_list(
        &self,
        params: &Params,
        name: Option<&str>,
    ) -> ApiResult<Vec<Value>> {
        let sel = selector(params)?;
        let nodes: Vec<Value> = self
            .stored("nodes", None)
            .await?
            .into_iter()
            .filter(|n| {
                name.is_none_or(|want| n["metadata"]["name"] == want) && sel.matches(&labels(n))
            })
            .collect();
        Ok(self
            .summaries(nodes)
            .await
            .iter()
            .map(|(n, s)| node_metrics(n, s))
            .collect())
    }

    async fn pod_metrics_list(
        &self,
        ns: Option<&str>,
        params: &Params,
        name: Option<&str>,
    ) -> ApiResult<Vec<Value>> {
        let sel = selector(params)?;
        let pods: BTreeMap<(String, String), Value> = self
            .stored("pods", ns)
            .await?
            .into_iter()
            .filter(|p| {
                name.is_none_or(|want| p["metadata"]["name"] == want) && sel.matches(&labels(p))
            })
            .map(|p| {
                let key = (
                    object::meta_str(&p, "namespace").unwrap_or("").to_owned(),
                    object::meta_str(&p, "name").unwrap_or("").to_owned(),
                );
                (key, p)
            })
            .collect();
        let node_names: Vec<&str> = pods
            .values()
            .filter_map(|p| p["spec"]["nodeName"].as_str())
            .collect();
        let nodes: Vec<Value> = self
            .stored("nodes", None)
            .await?
            .into_iter()
            .filter(|n| {
                n["metadata"]["name"]
                    .as_str()
                    .is_some_and(|name| node_names.contains(&name))
            })
            .collect();
        let mut out = BTreeMap::new();
        for (_, summary) in self.summaries(nodes).await {
            for entry in summary["pods"].as_array().into_iter().flatten() {
                let key = (
                    entry["podRef"]["namespace"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                    entry["podRef"]["name"].as_str().unwrap_or("").to_owned(),
                );
                if let Some(pod) = pods.get(&key) {
                    out.insert(key, pod_metrics(pod, entry));
                }
            }
        }
        Ok(out.into_values().collect())
    }
}

fn list(kind: &str, items: Vec<Value>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"kind": format!("{kind}List"), "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": {}, "items": items}),
    )
}

fn one(kind: &str, plural: &str, name: &str, items: Vec<Value>) -> Response {
    match items.into_iter().next() {
        Some(mut item) => {
            item["kind"] = kind.into();
            item["apiVersion"] = format!("{GROUP}/{VERSION}").into();
            json_response(StatusCode::OK, &item)
        }
        None => ApiError::new(
            404,
            "NotFound",
            format!("{plural}.{GROUP} {name:?} not found"),
        )
        .into_response(),
    }
}

fn respond(r: ApiResult<Response>) -> Response {
    r.unwrap_or_else(|e| e.into_response())
}

pub async fn resources() -> Response {
    json_response(StatusCode::OK, &resource_list())
}

pub async fn nodes(State(api): State<Arc<Api>>, Query(params): Query<Params>) -> Response {
    respond(
        api.node_metrics_list(&params, None)
            .await
            .map(|items| list("NodeMetrics", items)),
    )
}

pub async fn node(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    Query(params): Query<Params>,
) -> Response {
    respond(
        api.node_metrics_list(&params, Some(&name))
            .await
            .map(|items| one("NodeMetrics", "nodemetrics", &name, items)),
    )
}

pub async fn all_pods(State(api): State<Arc<Api>>, Query(params): Query<Params>) -> Response {
    respond(
        api.pod_metrics_list(None, &params, None)
            .await
            .map(|items| list("PodMetrics", items)),
    )
}

pub async fn namespace_pods(
    State(api): State<Arc<Api>>,
    Path(ns): Path<String>,
    Query(params): Query<Params>,
) -> Response {
    respond(
        api.pod_metrics_list(Some(&ns), &params, None)
            .await
            .map(|items| list("PodMetrics", items)),
    )
}

pub async fn pod(
    State(api): State<Arc<Api>>,
    Path((ns, name)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> Response {
    respond(
        api.pod_metrics_list(Some(&ns), &params, Some(&name))
            .await
            .map(|items| one("PodMetrics", "podmetrics", &name, items)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_in_nanocores_and_kibibytes() {
        let node = json!({"metadata": {"name": "n1", "labels": {"a": "b"}}});
        let summary = json!({"node": {"cpu": {"time": "2025-01-01T00:00:00Z", "usageNanoCores": 250000000u64},
                                      "memory": {"workingSetBytes": 1073741824u64}}});
        let m = node_metrics(&node, &summary);
        assert_eq!(
            m["usage"],
            json!({"cpu": "250000000n", "memory": "1048576Ki"})
        );
        assert_eq!(
            (m["timestamp"].as_str(), m["window"].as_str()),
            (Some("2025-01-01T00:00:00Z"), Some("1s"))
        );
    }
}
