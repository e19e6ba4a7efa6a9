//! The controller manager (kube-controller-manager): the workload and
//! cluster controllers as clients of the API through one `kube::Client`,
//! sharing informers, leader-elected on the Lease
//! `kube-system/kube-controller-manager`. It runs inside the apiserver by
//! default and alone as `kubelab-apiserver controller-manager`.
//!
//! A controller is an entry of [`CONTROLLERS`]: its name as
//! `--controllers` knows it, and a function that runs it on the shared
//! [`Informers`] until it fails.

use std::collections::BTreeSet;

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::ReplicationController;

use super::informers::Informers;
use super::pod_gc::PodGcOptions;
use super::{
    cronjob, csr_approving, csr_signing, daemonset, deployment, disruption, garbage_collector,
    horizontal, job, namespace, persistent_volume, pod_gc, replicaset, resource_quota,
    root_ca_publisher, statefulset, taint_eviction, ttl_after_finished,
};
use crate::leader_election::{LeaderElection, run_as_leader};

/// The lease the active controller manager holds.
pub const LEASE_NAME: &str = "kube-controller-manager";

type Start = fn(Informers, &ManagerOptions) -> BoxFuture<'static, anyhow::Result<()>>;

/// One controller the manager can run.
pub struct ControllerEntry {
    /// The `--controllers` name, e.g. `replicaset-controller`.
    pub name: &'static str,
    /// The older short name kube-controller-manager also accepts.
    pub alias: &'static str,
    pub start: Start,
}

/// Every controller, all on by default.
pub const CONTROLLERS: &[ControllerEntry] = &[
    ControllerEntry {
        name: "replicaset-controller",
        alias: "replicaset",
        start: |i, _| Box::pin(replicaset::run::<ReplicaSet>(i)),
    },
    ControllerEntry {
        name: "replicationcontroller-controller",
        alias: "replicationcontroller",
        start: |i, _| Box::pin(replicaset::run::<ReplicationController>(i)),
    },
    ControllerEntry {
        name: "daemonset-controller",
        alias: "daemonset",
        start: |i, _| Box::pin(daemonset::run(i)),
    },
    ControllerEntry {
        name: "garbage-collector-controller",
        alias: "garbagecollector",
        start: |i, o| {
            let workers = o.concurrent_gc_syncs;
            Box::pin(async move {
                garbage_collector::run(i.client(), workers).await;
                Ok(())
            })
        },
    },
    ControllerEntry {
        name: "namespace-controller",
        alias: "namespace",
        start: |i, _| {
            Box::pin(async move {
                namespace::run(i.client()).await;
                Ok(())
            })
        },
    },
    ControllerEntry {
        name: "taint-eviction-controller",
        alias: "taint-eviction-controller",
        start: |i, _| Box::pin(taint_eviction::run(i)),
    },
    ControllerEntry {
        name: "pod-garbage-collector-controller",
        alias: "podgc",
        start: |i, o| {
            Box::pin(pod_gc::run(
                i,
                PodGcOptions {
                    terminated_pod_gc_threshold: o.terminated_pod_gc_threshold,
                },
            ))
        },
    },
    ControllerEntry {
        name: "job-controller",
        alias: "job",
        start: |i, _| Box::pin(job::run(i)),
    },
    ControllerEntry {
        name: "cronjob-controller",
        alias: "cronjob",
        start: |i, _| Box::pin(cronjob::run(i)),
    },
    ControllerEntry {
        name: "ttl-after-finished-controller",
        alias: "ttl-after-finished",
        start: |i, _| Box::pin(ttl_after_finished::run(i)),
    },
    ControllerEntry {
        name: "deployment-controller",
        alias: "deployment",
        start: |i, _| Box::pin(deployment::run(i)),
    },
    ControllerEntry {
        name: "persistentvolume-binder-controller",
        alias: "persistentvolume-binder",
        start: |i, _| Box::pin(persistent_volume::run(i)),
    },
    ControllerEntry {
        name: "statefulset-controller",
        alias: "statefulset",
        start: |i, _| Box::pin(statefulset::run(i)),
    },
    ControllerEntry {
        name: "disruption-controller",
        alias: "disruption",
        start: |i, _| Box::pin(disruption::run(i)),
    },
    ControllerEntry {
        name: "resourcequota-controller",
        alias: "resourcequota",
        start: |i, _| Box::pin(resource_quota::run(i)),
    },
    ControllerEntry {
        name: "root-ca-certificate-publisher-controller",
        alias: "root-ca-cert-publisher",
        start: |i, o| {
            let ca = o.root_ca.clone();
            Box::pin(async move {
                match ca {
                    Some(ca) => root_ca_publisher::run(i, ca).await,
                    None => {
                        tracing::warn!(
                            "no root CA (--root-ca-file or the kubeconfig's): kube-root-ca.crt is not published"
                        );
                        Ok(())
                    }
                }
            })
        },
    },
    ControllerEntry {
        name: "certificatesigningrequest-approving-controller",
        alias: "csrapproving",
        start: |i, _| Box::pin(csr_approving::run(i)),
    },
    ControllerEntry {
        name: "certificatesigningrequest-signing-controller",
        alias: "csrsigning",
        start: |i, o| {
            let signing = o.cluster_signing.clone();
            Box::pin(async move {
                match signing {
                    Some(s) => csr_signing::run(i, s).await,
                    None => {
                        tracing::info!(
                            "skipping CSR signer controller because no csr cert/key was specified"
                        );
                        Ok(())
                    }
                }
            })
        },
    },
    ControllerEntry {
        name: "horizontal-pod-autoscaler-controller",
        alias: "horizontalpodautoscaling",
        start: |i, o| Box::pin(horizontal::run(i, o.horizontal_pod_autoscaler)),
    },
];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ManagerError {
    #[error("{0:?} is not in the list of known controllers")]
    UnknownController(String),
}

/// kube-controller-manager's flags for what this manager does.
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// `--controllers`: `*` all on-by-default ones, `foo` enables foo,
    /// `-foo` disables foo.
    pub controllers: Vec<String>,
    /// `--leader-elect`.
    pub leader_elect: bool,
    pub leader_election: LeaderElection,
    /// `--concurrent-gc-syncs`: the garbage collector's workers.
    pub concurrent_gc_syncs: usize,
    /// `--terminated-pod-gc-threshold`: finished pods kept before PodGC
    /// deletes the oldest (0: no limit).
    pub terminated_pod_gc_threshold: usize,
    /// `--horizontal-pod-autoscaler-*`.
    pub horizontal_pod_autoscaler: horizontal::HpaOptions,
    /// The cluster CA (PEM) published as `kube-root-ca.crt`: `--root-ca-file`,
    /// else the CA the manager trusts the apiserver with.
    pub root_ca: Option<String>,
    /// `--cluster-signing-cert-file`, `--cluster-signing-key-file` and
    /// `--cluster-signing-duration`: the CA the CSR signers issue with.
    pub cluster_signing: Option<csr_signing::ClusterSigning>,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        Self {
            controllers: vec!["*".into()],
            leader_elect: true,
            leader_election: LeaderElection::new(LEASE_NAME),
            concurrent_gc_syncs: garbage_collector::CONCURRENT_GC_SYNCS,
            terminated_pod_gc_threshold: pod_gc::TERMINATED_POD_GC_THRESHOLD,
            horizontal_pod_autoscaler: Default::default(),
            root_ca: None,
            cluster_signing: None,
        }
    }
}

/// `IsControllerEnabled`: an explicit choice wins; otherwise `*` enables.
fn is_enabled(entry: &ControllerEntry, flags: &[String]) -> bool {
    let mut star = false;
    for f in flags {
        if f == entry.name || f == entry.alias {
            return true;
        }
        if f.strip_prefix('-')
            .is_some_and(|n| n == entry.name || n == entry.alias)
        {
            return false;
        }
        star |= f == "*";
    }
    star
}

/// The controllers `--controllers` selects, or the first unknown name.
pub fn enabled_controllers(
    flags: &[String],
) -> Result<Vec<&'static ControllerEntry>, ManagerError> {
    let known: BTreeSet<&str> = CONTROLLERS.iter().flat_map(|c| [c.name, c.alias]).collect();
    for f in flags {
        let name = f.strip_prefix('-').unwrap_or(f);
        if name != "*" && !name.is_empty() && !known.contains(name) {
            return Err(ManagerError::UnknownController(name.to_owned()));
        }
    }
    Ok(CONTROLLERS
        .iter()
        .filter(|c| is_enabled(c, flags))
        .collect())
}

/// Runs the selected controllers (while leading, with `--leader-elect`)
/// until one fails.
pub async fn run(client: kube::Client, opts: ManagerOptions) -> anyhow::Result<()> {
    let enabled = enabled_controllers(&opts.controllers)?;
    if enabled.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = enabled.iter().map(|c| c.name).collect();
    tracing::info!(controllers = ?names, "starting controllers");
    if !opts.leader_elect {
        return run_controllers(client, &enabled, &opts).await;
    }
    run_as_leader(client.clone(), opts.leader_election.clone(), || {
        run_controllers(client.clone(), &enabled, &opts)
    })
    .await
}

/// One term of leadership: fresh informers, every controller on them.
/// Dropping this future (the lease was lost) stops them all.
async fn run_controllers(
    client: kube::Client,
    enabled: &[&'static ControllerEntry],
    opts: &ManagerOptions,
) -> anyhow::Result<()> {
    let informers = Informers::new(client);
    let mut running = tokio::task::JoinSet::new();
    for c in enabled {
        let fut = (c.start)(informers.clone(), opts);
        let name = c.name;
        running.spawn(async move { (name, fut.await) });
    }
    while let Some(done) = running.join_next().await {
        let (name, result) = done?;
        result.map_err(|e| e.context(format!("{name} stopped")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(flags: &[&str]) -> Vec<&'static str> {
        let flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        enabled_controllers(&flags)
            .unwrap()
            .iter()
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn controllers_flag_reads_as_kube_controller_managers() {
        assert!(names(&["*"]).contains(&"replicaset-controller"));
        assert!(!names(&["*", "-replicaset"]).contains(&"replicaset-controller"));
        assert_eq!(names(&["replicaset-controller"]), ["replicaset-controller"]);
        assert!(names(&[""]).is_empty());
        assert_eq!(
            enabled_controllers(&["bogus".to_string()]).err(),
            Some(ManagerError::UnknownController("bogus".into()))
        );
    }
}
