//! Controllers that run inside the apiserver process, each the counterpart
//! of a kube-controller-manager (or kube-apiserver) loop: they read the
//! store and its change feed directly and write through [`crate::api::Api`]
//! with a client's semantics (defaults, validation, resourceVersion
//! preconditions).
//!
//! [`start`] is called once from [`crate::server::run`] after bootstrap;
//! each controller runs as its own task for the life of the process.
//!
//! The workload controllers are instead clients of the API (shared
//! informers, work queues, `kube::Client`) run by the controller
//! [`manager`], in-process or as its own process.

pub mod controller_history;
pub mod controller_ref_manager;
pub mod cronjob;
pub mod cronjob_decide;
pub mod csr_approving;
pub mod csr_signing;
pub mod daemonset;
pub mod daemonset_decide;
pub mod deployment;
pub mod disruption;
pub mod disruption_budget;
pub mod endpoints;
pub mod endpoints_render;
pub mod expectations;
pub mod garbage_collector;
pub mod horizontal;
pub mod informers;
pub mod job;
pub mod job_decide;
pub mod job_index_policy;
pub mod kubernetes_service;
pub mod local_path_reclaim;
pub mod manager;
pub mod metric_sources;
pub mod namespace;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod persistent_volume;
pub mod persistent_volume_decide;
pub mod pod_gc;
pub mod pod_owner_changes;
pub mod replica_calculator;
pub mod replicaset;
pub mod replicaset_decide;
pub mod resource_quota;
pub mod rollout;
pub mod root_ca_publisher;
pub mod scale_recommendations;
pub mod served_resources;
pub mod statefulset;
pub mod statefulset_decide;
pub mod taint_eviction;
pub mod ttl_after_finished;
pub mod work_queue;

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
    /// The in-process controller manager's `--controllers`.
    pub manager: manager::ManagerOptions,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        Self {
            node_ipam: Some(Default::default()),
            node_lifecycle: Default::default(),
            manager: Default::default(),
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
    let manager_opts = opts.manager.clone();
    tokio::spawn(async move {
        if let Err(e) = manager::run(client, manager_opts).await {
            tracing::error!("controller manager stopped: {e:#}");
        }
    });
    Ok(())
}
