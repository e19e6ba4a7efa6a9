//! The built-in runtime behind [`RuntimeService`]: sandboxes and containers
//! of this agent's own making (image store, rootfs, init, shim, cgroups,
//! the CNI client).
//!
//! - [`run_sandbox`]: the pod sandbox (`RunPodSandbox`).
//! - [`create_container`]: `CreateContainer` + `StartContainer`.
//! - [`remove`]: what a run and a pod leave.
//! - [`leftovers`]: what an agent that was killed left, found and removed.
//! - [`exec_sync`]: `ExecSync`, a command in a container and how it ended.

pub mod create_container;
pub mod exec_sync;
pub mod leftovers;
pub mod remove;
pub mod run_sandbox;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::cgroups::CgroupPath;
use crate::context::AgentContext;
use crate::runtime::container;
use crate::runtime::cri::{ExecSyncError, ExecSyncResponse};
use crate::runtime::sandbox::{self, SandboxState};
use crate::runtime::service::{
    ContainerRequest, CreateError, CurrentRun, ExecTarget, Found, PodRemoval, RecordedPod,
    RuntimeService, SandboxRequest,
};
use crate::runtime::shim::ContainerExit;

pub struct BuiltinRuntime {
    ctx: Arc<AgentContext>,
}

impl BuiltinRuntime {
    pub fn new(ctx: Arc<AgentContext>) -> Self {
        BuiltinRuntime { ctx }
    }
}

fn bundle(pod_dir: &Path, container_id: &str) -> std::path::PathBuf {
    pod_dir.join("containers").join(container_id)
}

impl RuntimeService for BuiltinRuntime {
    fn run_pod_sandbox(
        &self,
        req: &SandboxRequest,
    ) -> Result<(SandboxState, Option<String>), String> {
        let made = run_sandbox::run_pod_sandbox(&self.ctx, req);
        if made.is_err()
            && let Ok(pod_cgroup) = run_sandbox::pod_cgroup(req.config)
        {
            // Nothing half made stays: processes, cgroup, network.
            leftovers::remove_id(&self.ctx, req.pod_dir, &pod_cgroup, req.id);
        }
        made
    }

    fn pod_sandbox_ready(&self, sandbox: &SandboxState) -> bool {
        sandbox.is_alive()
    }

    fn remove_pod_sandbox(&self, removal: PodRemoval) {
        let ctx = &self.ctx;
        let key = &removal.key;
        for id in &removal.runs {
            self.remove_container(&removal.pod_dir, &removal.pod_cgroup, id);
        }
        // CNI DEL while the netns still exists (also for a dead sandbox's leftovers).
        if let Err(e) = ctx
            .network
            .teardown_pod(&removal.uid, removal.sandbox.as_ref())
        {
            tracing::warn!(pod = %key, "tearing down the pod network: {}", crate::error_chain(&e));
        }
        if let Some(s) = &removal.sandbox {
            sandbox::stop(s);
            for _ in 0..100 {
                if !s.is_alive() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // Anything else in the pod's cgroup: a run no record names.
        if let Err(e) = ctx.cgroups.kill_all(&removal.pod_cgroup) {
            tracing::warn!(pod = %key, "killing what is left in the pod cgroup: {e}");
        }
        if let Err(e) = ctx.cgroups.remove(&removal.pod_cgroup) {
            tracing::warn!(pod = %key, "removing the pod cgroup: {e}");
        }
        remove::remove_pod_dir_if_unused(&removal.pod_dir);
        let _ = std::fs::remove_dir_all(&removal.log_dir);
    }

    fn create_and_start_container(
        &self,
        req: &ContainerRequest,
    ) -> Result<(CurrentRun, Option<ContainerExit>), CreateError> {
        create_container::create_and_start(&self.ctx, req, None)
    }

    fn signal_container(&self, run: &CurrentRun, signal: nix::sys::signal::Signal) {
        container::signal(&run.started, signal);
    }

    fn kill_container(&self, pod_cgroup: &CgroupPath, container_id: &str) {
        let cgroup = self.ctx.cgroups.container_path(pod_cgroup, container_id);
        let _ = self.ctx.cgroups.kill_all(&cgroup);
    }

    fn container_running(&self, run: &CurrentRun) -> bool {
        container::shim_alive(&run.started)
    }

    fn wait_container(&self, run: &CurrentRun) -> BoxFuture<'static, ()> {
        let started = run.started.clone();
        async move { container::wait_for_exit(&started).await }.boxed()
    }

    fn container_exit(&self, pod_dir: &Path, container_id: &str) -> Option<ContainerExit> {
        container::read_exit(&bundle(pod_dir, container_id))
    }

    fn remove_container(&self, pod_dir: &Path, pod_cgroup: &CgroupPath, container_id: &str) {
        let cgroup = self.ctx.cgroups.container_path(pod_cgroup, container_id);
        remove::remove_run(&self.ctx, &bundle(pod_dir, container_id), &cgroup);
    }

    fn pod_leftovers(&self, recorded: &RecordedPod) -> Found {
        leftovers::observe(&self.ctx, recorded)
    }

    fn remove_leftover(&self, pod_dir: &Path, pod_cgroup: &CgroupPath, id: &str) {
        leftovers::remove_id(&self.ctx, pod_dir, pod_cgroup, id);
    }

    fn exec_sync(
        &self,
        target: &ExecTarget,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecSyncResponse, ExecSyncError> {
        exec_sync::exec_sync(&self.ctx.agent_exe, target, cmd, timeout)
    }
}
