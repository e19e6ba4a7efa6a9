//! The runtime as the pod worker drives it, in the shape of CRI's
//! `RuntimeService`: run and remove a pod sandbox, create and start, stop,
//! wait for, inspect and remove a container, exec in it. The built-in
//! runtime (image store, rootfs, init, shim) sits behind it on a node; a
//! fake one stands in for it where no container may run (unit tests).
//!
//! Calls block (they fork, mount, write cgroups): the worker makes them
//! from `spawn_blocking`, except [`RuntimeService::wait_container`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::cgroups::CgroupPath;
use crate::pod::slot::CurrentRun;
use crate::prober::ProbeTarget;
use crate::runtime::cri::{ContainerConfig, ExecSyncError, ExecSyncResponse, PodSandboxConfig};
use crate::runtime::sandbox::SandboxState;
use crate::runtime::shim::ContainerExit;

/// What `RunPodSandbox` is given.
pub struct SandboxRequest<'a> {
    /// Resolved from the pod by the pod layer.
    pub config: &'a PodSandboxConfig,
    /// The pod's dir on the node (`<root>/pods/<uid>`).
    pub pod_dir: &'a Path,
    /// The new sandbox's id (on disk before anything carries it).
    pub id: &'a str,
}

/// What `CreateContainer` + `StartContainer` are given.
pub struct ContainerRequest<'a> {
    /// Resolved from the pod and container by the pod layer.
    pub config: &'a ContainerConfig,
    /// The pod's sandbox config, as CRI's `CreateContainerRequest` carries
    /// it (host name, cgroup parent, log directory).
    pub sandbox_config: &'a PodSandboxConfig,
    pub sandbox: &'a SandboxState,
    pub pod_dir: &'a Path,
    /// The new container's id (on disk before anything carries it).
    pub id: &'a str,
}

/// Everything of a pod to remove once its containers are stopped:
/// `StopPodSandbox` and `RemovePodSandbox`, and the runs left.
pub struct PodRemoval {
    pub uid: String,
    pub key: String,
    pub sandbox: Option<SandboxState>,
    pub pod_cgroup: CgroupPath,
    pub pod_dir: PathBuf,
    pub log_dir: PathBuf,
    /// Ids of runs still recorded.
    pub runs: Vec<String>,
}

/// Why a container could not be created, as the kubelet tells it apart.
#[derive(Debug)]
pub enum CreateError {
    /// `ErrImagePull`.
    ImageMissing(String),
    /// `CreateContainerConfigError`.
    Config(String),
    /// `CreateContainerError`.
    Other(String),
}

pub trait RuntimeService: Send + Sync + 'static {
    /// The pod cgroup, the sandbox holding the pod's namespaces, its /etc
    /// files and network; returns it and the pod's IP. Nothing half made
    /// stays on failure.
    fn run_pod_sandbox(
        &self,
        req: &SandboxRequest,
    ) -> Result<(SandboxState, Option<String>), String>;

    /// Whether the sandbox still holds the pod's namespaces.
    fn pod_sandbox_ready(&self, sandbox: &SandboxState) -> bool;

    /// Stops and removes the sandbox, its network, cgroups and dirs.
    fn remove_pod_sandbox(&self, removal: PodRemoval);

    /// Creates and starts a container; the run and, if its process never
    /// ran, its exit.
    fn create_and_start_container(
        &self,
        req: &ContainerRequest,
    ) -> Result<(CurrentRun, Option<ContainerExit>), CreateError>;

    /// Sends `signal` to the container's process (`StopContainer`'s first step).
    fn signal_container(&self, run: &CurrentRun, signal: nix::sys::signal::Signal);

    /// SIGKILL for every process of the container (after the grace period).
    fn kill_container(&self, pod_cgroup: &CgroupPath, container_id: &str);

    /// Whether the container's supervisor still runs.
    fn container_running(&self, run: &CurrentRun) -> bool;

    /// Resolves once the run has exited.
    fn wait_container(&self, run: &CurrentRun) -> BoxFuture<'static, ()>;

    /// How a run ended (`ContainerStatus` of an exited container).
    fn container_exit(&self, pod_dir: &Path, container_id: &str) -> Option<ContainerExit>;

    /// Removes what a run left: processes, rootfs, cgroup, bundle.
    fn remove_container(&self, pod_dir: &Path, pod_cgroup: &CgroupPath, container_id: &str);

    /// CRI's `ExecSync`: runs `cmd` in the container run `target` names,
    /// for at most `timeout`; its exit code and output. Exec probes and
    /// hooks go through it and judge the result themselves; the pod layer
    /// makes HTTP, TCP and sleep ones itself.
    fn exec_sync(
        &self,
        target: &ProbeTarget,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecSyncResponse, ExecSyncError>;

    /// Whether this runtime's pods are real: a runtime that only pretends
    /// has no pod network for the pod layer's HTTP and TCP checks to reach,
    /// so those (and sleep hooks) succeed at once, as its containers pretend
    /// to serve.
    fn pods_are_real(&self) -> bool {
        true
    }
}
