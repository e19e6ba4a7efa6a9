//! The runtime as the pod worker drives it, in the shape of CRI's
//! `RuntimeService`: run and remove a pod sandbox, create and start, stop,
//! wait for, inspect and remove a container, exec in it; after a restart,
//! report and remove what the previous agent process left. The built-in
//! runtime (image store, rootfs, init, shim) sits behind it on a node; a
//! fake one stands in for it where no container may run (unit tests).
//!
//! Calls block (they fork, mount, write cgroups): the worker makes them
//! from `spawn_blocking`, except [`RuntimeService::wait_container`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::BoxFuture;

use crate::cgroups::CgroupPath;
use crate::runtime::cri::{ContainerConfig, ExecSyncError, ExecSyncResponse, PodSandboxConfig};
use crate::runtime::sandbox::SandboxState;
use crate::runtime::shim::{ContainerExit, ContainerStarted};

/// A container run the runtime started (`CreateContainer` +
/// `StartContainer`): the handle every later call about it takes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CurrentRun {
    pub container_id: String,
    /// What its shim wrote once the process ran.
    pub started: ContainerStarted,
    /// The ID of the image it runs.
    pub image_id: String,
}

/// The container `ExecSync` runs a command in: its init pid (the command
/// joins its namespaces and cgroups) and bundle (its config gives user,
/// capabilities, environment, working dir).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecTarget {
    pub pid: i32,
    pub bundle: PathBuf,
}

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

/// What the pod layer recorded of a pod before the agent restarted: what
/// the runtime looks for in [`RuntimeService::pod_leftovers`].
pub struct RecordedPod {
    pub pod_dir: PathBuf,
    pub pod_cgroup: CgroupPath,
    pub sandbox: Option<SandboxState>,
    /// A sandbox id recorded as about to be made.
    pub sandbox_intent: Option<String>,
    /// The slots' current runs: (slot, run).
    pub runs: Vec<(String, CurrentRun)>,
    /// Runs only intended (the agent died while creating them): (slot, container id).
    pub intended: Vec<(String, String)>,
}

/// The sandbox the pod layer recorded as made (after its network was attached).
#[derive(Debug, Clone, PartialEq)]
pub struct FoundSandbox {
    pub id: String,
    /// Its process still runs (pid and start time match).
    pub alive: bool,
}

/// A container run of one slot, recorded as current or only as intended.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundRun {
    /// The container (slot) name.
    pub slot: String,
    pub container_id: String,
    /// Recorded as the slot's current run; `false`: only the intent to start
    /// it was recorded (the agent died while creating it).
    pub recorded: bool,
    /// What its shim wrote once the container process ran (`state.json`).
    pub started: Option<ContainerStarted>,
    /// Its shim wrote how it ended (`exit.json`), or that it never started.
    pub exited: bool,
}

/// Everything of one pod the previous agent process may have left, as the
/// runtime finds it (CRI's `ListPodSandbox` and `ListContainers` with their
/// statuses, for one pod).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    pub sandbox: Option<FoundSandbox>,
    /// A sandbox id recorded as about to be made.
    pub sandbox_intent: Option<String>,
    pub runs: Vec<FoundRun>,
    /// Ids that have a bundle dir (`containers/<id>`) or a cgroup under the
    /// pod's cgroup: sandboxes and containers, known or not.
    pub on_node: BTreeSet<String>,
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

    /// After a restart: what is left on the node of a pod the previous
    /// agent process recorded (the sandbox and runs, whether they live,
    /// every id that has something there). Blocks a moment for shims still
    /// starting an intended container.
    fn pod_leftovers(&self, recorded: &RecordedPod) -> Found;

    /// Removes everything that carries sandbox or container id `id` of a
    /// pod, whatever state it was left in. Idempotent.
    fn remove_leftover(&self, pod_dir: &Path, pod_cgroup: &CgroupPath, id: &str);

    /// CRI's `ExecSync`: runs `cmd` in the container `target`, for at most
    /// `timeout`; its exit code and output. Exec probes and
    /// hooks go through it and judge the result themselves; the pod layer
    /// makes HTTP, TCP and sleep ones itself.
    fn exec_sync(
        &self,
        target: &ExecTarget,
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
