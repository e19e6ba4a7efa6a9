//! API request bodies through the apiserver's real router: a dry-run create
//! (`?dryRun=All`: decode as JSON, YAML or protobuf, normalize through the
//! typed struct, default, validate; nothing is stored) of a pod, service,
//! configmap, node, namespace or event. Every body gets a Kubernetes Status
//! or the object back, never a panic or a 5xx.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use kubelab_apiserver::api::{self, Api};
use kubelab_apiserver::storage::embedded::EmbeddedStore;
use tower::ServiceExt;

const PATHS: &[&str] = &[
    "/api/v1/namespaces/default/pods",
    "/api/v1/namespaces/default/services",
    "/api/v1/namespaces/default/configmaps",
    "/api/v1/nodes",
    "/api/v1/namespaces",
    "/api/v1/namespaces/default/events",
];
const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "",
];

struct Server {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    _dir: tempfile::TempDir,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(&dir.path().join("store.redb")).expect("store");
        let api = Arc::new(Api::new(Arc::new(store), "127.0.0.1:6443".into()));
        runtime.block_on(api.bootstrap()).expect("bootstrap");
        Server {
            runtime,
            router: api::router(api),
            _dir: dir,
        }
    })
}

/// Panics when `data` breaks the property.
pub fn check(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let path = PATHS[usize::from(selector) % PATHS.len()];
    let content_type = CONTENT_TYPES[usize::from(selector / 16) % CONTENT_TYPES.len()];
    let s = server();
    let mut request = Request::post(format!("{path}?dryRun=All"));
    if !content_type.is_empty() {
        request = request.header("content-type", content_type);
    }
    let request = request.body(Body::from(body.to_vec())).expect("request");
    let response = s
        .runtime
        .block_on(s.router.clone().oneshot(request))
        .expect("the router is infallible");
    assert!(
        response.status() != StatusCode::INTERNAL_SERVER_ERROR,
        "500 for a body of {} bytes to {path} ({content_type:?})",
        body.len()
    );
}
