//! Controllers that run inside the apiserver process, each the counterpart
//! of a kube-controller-manager (or kube-apiserver) loop: they read the
//! store and its change feed directly and write through [`crate::api::Api`]
//! with a client's semantics (defaults, validation, resourceVersion
//! preconditions).
//!
//! [`start`] is called once from [`crate::server::run`] after bootstrap;
//! each controller runs as its own task for the life of the process.

pub mod daemonset_decide;
pub mod endpoints;
pub mod endpoints_render;
pub mod garbage_collector;
pub mod kubernetes_service;
pub mod namespace;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod served_resources;

use std::sync::Arc;

use anyhow::Context;

use crate::api::Api;
use kubernetes_service::KubernetesService;

/// The controllers' settings, from kube-controller-manager's flags.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// `--allocate-node-cidrs` with `--cluster-cidr` and
    /// `--node-cidr-mask-size`; `None`: nodes get no pod CIDR.
    pub node_ipam: Option<node_ipam::NodeIpamOptions>,
    /// `--node-monitor-period` and `--node-monitor-grace-period`.
    pub node_lifecycle: node_lifecycle::NodeLifecycleOptions,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        Self {
            node_ipam: Some(Default::default()),
            node_lifecycle: Default::default(),
        }
    }
}

/// Checks the options, reconciles the `kubernetes` service once (so it is
/// there before the first request), then starts every controller as its
/// own task.
pub async fn start(
    api: &Arc<Api>,
    opts: &ControllerOptions,
    kubernetes: KubernetesService,
) -> anyhow::Result<()> {
    let ipam = match opts.node_ipam {
        Some(o) => Some(node_ipam::NodeIpamController::new(api.clone(), o)?),
        None => None,
    };
    kubernetes
        .reconcile(api)
        .await
        .map_err(|e| anyhow::anyhow!(e.message))
        .context("creating the kubernetes service")?;
    tokio::spawn(kubernetes.run(api.clone()));
    tokio::spawn(endpoints::EndpointsController::new(api.clone()).run());
    tokio::spawn(
        node_lifecycle::NodeLifecycleController::new(api.clone(), opts.node_lifecycle).run(),
    );
    if let Some(ipam) = ipam {
        tokio::spawn(ipam.run());
    }
    let client = crate::client::in_process(api.clone(), "system:kube-controller-manager");
    tokio::spawn(namespace::run(client.clone()));
    tokio::spawn(garbage_collector::run(
        client.clone(),
        garbage_collector::CONCURRENT_GC_SYNCS,
    ));
    Ok(())
}
