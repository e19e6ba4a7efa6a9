//! A stand-in for a node agent's kubelet API on a free loopback port, over
//! HTTPS as a kubelet serves it (a self-signed serving certificate; client
//! certificates checked against the cluster CA): `/containerLogs` (three
//! lines; `follow` keeps adding a line every 100 ms) and `/stats/summary`
//! with fixed figures. It records each log request's path and query and
//! who made it; it stops when dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

pub struct FakeNode {
    pub port: u16,
    pub log_requests: Arc<Mutex<Vec<String>>>,
    /// The client certificate user of each request (empty: none).
    pub users: Arc<Mutex<Vec<String>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Recorded = Arc<Mutex<Vec<String>>>;

async fn container_logs(
    State(rec): State<Recorded>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> axum::response::Response {
    let mut keys: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
    keys.sort();
    rec.lock()
        .unwrap()
        .push(format!("{ns}/{pod}/{container}?{}", keys.join("&")));
    if container == "missing" {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            format!("container {container:?} in pod {pod:?} is waiting to start"),
        )
            .into_response();
    }
    let lines: Vec<String> = (1..=3).map(|i| format!("{container} line {i}\n")).collect();
    let tail = q
        .get("tailLines")
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(lines.len());
    let first: String = lines[lines.len() - tail.min(lines.len())..].concat();
    if q.get("follow").map(String::as_str) != Some("true") {
        return first.into_response();
    }
    let stream = futures::stream::unfold(0u64, move |n| {
        let first = first.clone();
        async move {
            if n > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let chunk = if n == 0 {
                first
            } else {
                format!("follow {n}\n")
            };
            Some((Ok::<_, std::convert::Infallible>(chunk), n + 1))
        }
    });
    Body::from_stream(stream).into_response()
}

/// Summary API figures: the node uses 250m CPU and 1 GiB; pod `web`
/// (container `nginx`) 100m and 64 MiB; pod `db` in `prod` 5m and 32 MiB.
pub fn summary(node: &str) -> serde_json::Value {
    let t = "2025-01-01T00:00:00Z";
    let stats = |cores: u64, mem: u64| {
        (
            json!({"time": t, "usageNanoCores": cores, "usageCoreNanoSeconds": 1_000_000_000u64}),
            json!({"time": t, "usageBytes": mem + 4096, "workingSetBytes": mem}),
        )
    };
    let pod = |ns: &str, name: &str, container: &str, cores: u64, mem: u64| {
        let (cpu, memory) = stats(cores, mem);
        json!({"podRef": {"name": name, "namespace": ns, "uid": format!("uid-{name}")}, "startTime": t,
               "containers": [{"name": container, "startTime": t, "cpu": cpu, "memory": memory}],
               "cpu": cpu, "memory": memory})
    };
    let (cpu, memory) = stats(250_000_000, 1 << 30);
    json!({"node": {"nodeName": node, "cpu": cpu, "memory": memory},
           "pods": [pod("default", "web", "nginx", 100_000_000, 64 << 20), pod("prod", "db", "postgres", 5_000_000, 32 << 20)]})
}

/// Records the verified client certificate's user of every request.
async fn record_user(
    State(users): State<Recorded>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let user = req
        .extensions()
        .get::<kubelab_apiserver::auth::ClientCertUser>()
        .map(|u| u.0.name.clone())
        .unwrap_or_default();
    users.lock().unwrap().push(user);
    next.run(req).await
}

impl FakeNode {
    /// A node whose clients are checked against `client_ca` (PEM).
    pub fn start(node_name: &str, client_ca: &str) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let log_requests: Recorded = Arc::default();
        let users: Recorded = Arc::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let rec = log_requests.clone();
        let seen = users.clone();
        let name = node_name.to_owned();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
        let tls = kubelab_apiserver::server::tls_config(&kubelab_apiserver::pki::ServingPki {
            ca_pem: client_ca.to_owned(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            kubelet_client_cert: Default::default(),
            kubelet_client_key: Default::default(),
        })
        .unwrap();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = Router::new()
                    .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
                    .route(
                        "/stats/summary",
                        get(move || async move { axum::Json(summary(&name)) }),
                    )
                    .with_state(rec)
                    .layer(axum::middleware::from_fn_with_state(seen, record_user));
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    r = kubelab_apiserver::server::serve(listener, tls, app) => r.unwrap(),
                    _ = rx => {}
                }
            });
        });
        Self {
            port,
            log_requests,
            users,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// A Node object whose kubelet API is this server.
    pub fn node_yaml(&self, name: &str) -> String {
        format!(
            "apiVersion: v1
kind: Node
metadata:
  name: {name}
status:
  capacity: {{cpu: \"2\", memory: 4Gi, pods: \"110\"}}
  allocatable: {{cpu: \"2\", memory: 4Gi, pods: \"110\"}}
  conditions:
  - {{type: Ready, status: \"True\", reason: KubeletReady, message: ready}}
  addresses:
  - {{type: InternalIP, address: 127.0.0.1}}
  - {{type: Hostname, address: {name}}}
  daemonEndpoints:
    kubeletEndpoint: {{Port: {}}}
",
            self.port
        )
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // A follow stream may still be open; don't wait for it.
        drop(self.thread.take());
    }
}
