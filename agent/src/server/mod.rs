//! The kubelet HTTP API, on kubelet's paths: `/healthz`, `/pods`,
//! `/stats/summary`, `/containerLogs/{ns}/{pod}/{container}`, `/metrics`,
//! `/exec/{ns}/{pod}/{container}`, `/attach/{ns}/{pod}/{container}`,
//! `/portForward/{ns}/{pod}`.
//!
//! Two servers, as the kubelet has: `--port` over HTTPS with every path
//! behind authentication and authorization ([`auth`]), and the read-only
//! port in plain HTTP with only what reads state (no exec, no logs).

pub mod auth;
pub mod exec;
pub mod metrics;
pub mod stats;
pub mod streaming;
pub mod tls;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::context::AgentContext;
use crate::logs;

#[derive(Clone)]
pub struct ServerState {
    pub ctx: Arc<AgentContext>,
    pub sampler: stats::CpuSampler,
}

/// The read-only port's paths: node and pod state, no way to act on a pod
/// or read its logs (kubelet's read-only server has no such handlers: 404).
pub fn read_only_router(state: ServerState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/pods", get(pods))
        .route("/stats/summary", get(summary))
        .route("/metrics", get(metrics))
        .route("/events", get(events))
        .with_state(state)
}

/// `--port`'s paths: the read-only ones plus logs and exec, every one
/// behind `auth`'s filter.
pub fn router(state: ServerState, auth: Arc<auth::KubeletAuth>) -> Router {
    let debugging = Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route(
            "/exec/{namespace}/{pod}/{container}",
            get(exec::exec).post(exec::exec),
        )
        .route(
            "/attach/{namespace}/{pod}/{container}",
            get(streaming::attach::attach).post(streaming::attach::attach),
        )
        .route(
            "/portForward/{namespace}/{pod}",
            get(streaming::portforward::port_forward).post(streaming::portforward::port_forward),
        )
        .with_state(state.clone());
    read_only_router(state)
        .merge(debugging)
        // A layer on the router, not on its routes: unknown paths are
        // refused to strangers too (401 before 404), as on kubelet.
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(axum::middleware::from_fn_with_state(auth, auth::filter))
}

async fn pods(State(s): State<ServerState>) -> Json<serde_json::Value> {
    let items: Vec<_> = s
        .ctx
        .status
        .list()
        .into_iter()
        .map(|e| e.with_status())
        .collect();
    Json(serde_json::json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": items,
    }))
}

/// Recent events (newest last), for tools that show them (`kubelab top`).
async fn events(State(s): State<ServerState>) -> Json<Vec<crate::events::Event>> {
    Json(s.ctx.events.list())
}

async fn summary(State(s): State<ServerState>) -> Response {
    let ctx = s.ctx.clone();
    let sampler = s.sampler.clone();
    match tokio::task::spawn_blocking(move || stats::summary(&ctx, &sampler)).await {
        Ok(sum) => Json(sum).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn metrics(State(s): State<ServerState>) -> Response {
    let ctx = s.ctx.clone();
    let text = tokio::task::spawn_blocking(move || metrics::render(&ctx))
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct LogQuery {
    #[serde(default)]
    follow: Option<String>,
    #[serde(default)]
    previous: Option<String>,
    tail_lines: Option<usize>,
    limit_bytes: Option<usize>,
    #[serde(default)]
    timestamps: Option<String>,
}

fn flag(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("true") | Some("1") | Some(""))
}

fn not_found(msg: String) -> Response {
    (StatusCode::NOT_FOUND, msg).into_response()
}

async fn container_logs(
    State(s): State<ServerState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(q): Query<LogQuery>,
) -> Response {
    let Some(entry) = s.ctx.status.find(&namespace, &pod) else {
        return not_found(format!("pod {namespace}/{pod} not found on this node"));
    };
    let Some(&restarts) = entry.restart_counts.get(&container) else {
        return not_found(format!(
            "container {container:?} is not valid for pod {pod}"
        ));
    };
    let previous = flag(&q.previous);
    let run = if previous {
        if restarts == 0 {
            return (
                StatusCode::BAD_REQUEST,
                format!("previous terminated container {container:?} in pod {pod:?} not found"),
            )
                .into_response();
        }
        restarts - 1
    } else {
        restarts
    };
    let path = logs::container_log_path(&entry.log_dir, &container, run.max(0) as u32);
    if !path.exists() {
        return (
            StatusCode::BAD_REQUEST,
            format!("container {container:?} in pod {pod:?} is waiting to start"),
        )
            .into_response();
    }
    let running_id = entry
        .containers
        .iter()
        .find(|c| c.name == container)
        .map(|c| c.container_id.clone());
    let follow = flag(&q.follow) && !previous && running_id.is_some();
    // Following ends when this run of the container is over.
    let ctx = s.ctx.clone();
    let (ns2, pod2, c2) = (namespace.clone(), pod.clone(), container.clone());
    let finished = async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            let still = ctx
                .status
                .find(&ns2, &pod2)
                .and_then(|e| e.containers.iter().find(|c| c.name == c2).cloned())
                .map(|c| Some(c.container_id) == running_id)
                .unwrap_or(false);
            if !still {
                break;
            }
        }
    };
    let opts = logs::LogOptions {
        follow,
        tail_lines: q.tail_lines,
        timestamps: flag(&q.timestamps),
        limit_bytes: q.limit_bytes,
        ..Default::default()
    };
    let stream = logs::read_container_log(&path, opts, finished);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}
