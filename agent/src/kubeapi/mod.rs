//! The agent as a node of a cluster (`--kubeconfig`): it registers its Node
//! and keeps it alive ([`node`]), sends pod status and keeps mirror pods of its
//! static pods ([`status`]), and sends its events ([`events`]). The pods the
//! apiserver binds to this node come in through [`crate::config::api`].

pub mod events;
pub mod node;
pub mod objects;
pub mod status;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::config::ApiSource;
use crate::context::AgentContext;

#[derive(Debug, thiserror::Error)]
pub enum KubeApiError {
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("building a client from kubeconfig {path}: {source}")]
    Client {
        path: PathBuf,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Api(#[from] kube::Error),
}

/// A client for the cluster `path` points at (its current context).
pub async fn client_from_kubeconfig(path: &Path) -> Result<Client, KubeApiError> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|source| KubeApiError::Kubeconfig {
        path: path.to_owned(),
        source,
    })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| KubeApiError::Kubeconfig {
            path: path.to_owned(),
            source,
        })?;
    Client::try_from(config).map_err(|source| KubeApiError::Client {
        path: path.to_owned(),
        source,
    })
}

/// Where the node is reached: `--node-ip`, else the default-route address.
pub fn node_ip(flag: Option<&str>) -> String {
    flag.map(String::from)
        .or_else(node::default_route_ip)
        .unwrap_or_else(|| "127.0.0.1".into())
}

/// Starts the node's heartbeats, the status manager and the event sink. The
/// pod source itself is started by the caller, which owns the update channel.
pub fn start(
    client: Client,
    ctx: Arc<AgentContext>,
    source: &ApiSource,
    internal_ip: String,
    kubelet_port: u16,
    reservations: crate::config::reserved::NodeReservations,
    pressure: tokio::sync::watch::Receiver<crate::eviction::Pressure>,
    lease_duration_seconds: i32,
) {
    let (uid_tx, uid_rx) = tokio::sync::watch::channel(None);
    // What CRI's RuntimeStatus would list: asked once, as the kubelet does
    // when it starts.
    let runc = crate::runtime::runc::Runc {
        binary: ctx.runtime_handlers.runc_binary.clone(),
        root: ctx.root_dir.join("runc"),
    };
    let runtime_handlers =
        crate::runtime::handlers::status_handlers(&ctx.runtime_handlers, runc.features());
    tokio::spawn(
        node::NodeAgent {
            client: client.clone(),
            name: ctx.node_name.clone(),
            internal_ip,
            root_dir: ctx.root_dir.clone(),
            kubelet_port,
            reservations,
            pressure,
            lease_duration_seconds,
            fixed_facts: None,
            runtime_handlers,
            images: ctx.image_manager.service().clone(),
            nodes: None,
            lease_offset: std::time::Duration::ZERO,
        }
        .run(uid_tx),
    );
    tokio::spawn(
        status::StatusManager {
            client: client.clone(),
            node: ctx.node_name.clone(),
            status: ctx.status.clone(),
            pods: source.store(),
            pod_changes: source.changes(),
            node_uid: uid_rx,
        }
        .run(),
    );
    tokio::spawn(
        events::EventSink {
            client,
            node: ctx.node_name.clone(),
            pods: source.store(),
        }
        .run(ctx.events.subscribe()),
    );
}
