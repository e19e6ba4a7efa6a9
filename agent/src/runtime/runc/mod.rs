//! The `runc` backend behind [`RuntimeService`] (the `runc` runtime
//! handler): the same bundles, cgroups, sandbox, shim and logs as the
//! built-in runtime, but each container's process is created and started by
//! Debian's `runc` instead of the agent's own init. It is a peer to compare
//! the built-in runtime with: a pod behaves the same under either.
//!
//! - [`command`]: the `runc` command line.
//! - [`launch`]: the shim's side (`runc create` + `start` as a subreaper).

pub mod command;
pub mod launch;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

pub use command::{Runc, RuncFeatures};

use crate::cgroups::CgroupPath;
use crate::context::AgentContext;
use crate::runtime::builtin::BuiltinRuntime;
use crate::runtime::cri::{ExecSyncError, ExecSyncResponse};
use crate::runtime::sandbox::SandboxState;
use crate::runtime::service::{
    ContainerRequest, CreateError, CurrentRun, ExecTarget, Found, PodRemoval, RecordedPod,
    RuntimeService, SandboxRequest,
};
use crate::runtime::shim::ContainerExit;

pub struct RuncRuntime {
    ctx: Arc<AgentContext>,
    runc: Runc,
    /// Sandboxes, waiting, exits and exec are runtime-neutral: the built-in
    /// runtime's.
    builtin: BuiltinRuntime,
}

impl RuncRuntime {
    pub fn new(ctx: Arc<AgentContext>, runc: Runc) -> Self {
        RuncRuntime {
            builtin: BuiltinRuntime::new(ctx.clone()),
            ctx,
            runc,
        }
    }
}

impl RuntimeService for RuncRuntime {
    fn run_pod_sandbox(
        &self,
        req: &SandboxRequest,
    ) -> Result<(SandboxState, Option<String>), String> {
        self.builtin.run_pod_sandbox(req)
    }

    fn pod_sandbox_ready(&self, sandbox: &SandboxState) -> bool {
        self.builtin.pod_sandbox_ready(sandbox)
    }

    fn remove_pod_sandbox(&self, removal: PodRemoval) {
        for id in &removal.runs {
            self.forget(&removal.pod_dir, id);
        }
        self.builtin.remove_pod_sandbox(removal)
    }

    fn create_and_start_container(
        &self,
        req: &ContainerRequest,
    ) -> Result<(CurrentRun, Option<ContainerExit>), CreateError> {
        crate::runtime::builtin::create_container::create_and_start(
            &self.ctx,
            req,
            Some(&self.runc),
        )
    }

    fn signal_container(&self, run: &CurrentRun, signal: nix::sys::signal::Signal) {
        self.builtin.signal_container(run, signal)
    }

    fn kill_container(&self, pod_cgroup: &CgroupPath, container_id: &str) {
        self.builtin.kill_container(pod_cgroup, container_id)
    }

    fn container_running(&self, run: &CurrentRun) -> bool {
        self.builtin.container_running(run)
    }

    fn wait_container(&self, run: &CurrentRun) -> BoxFuture<'static, ()> {
        self.builtin.wait_container(run)
    }

    fn container_exit(&self, pod_dir: &Path, container_id: &str) -> Option<ContainerExit> {
        self.builtin.container_exit(pod_dir, container_id)
    }

    fn remove_container(&self, pod_dir: &Path, pod_cgroup: &CgroupPath, container_id: &str) {
        self.forget(pod_dir, container_id);
        self.builtin
            .remove_container(pod_dir, pod_cgroup, container_id)
    }

    fn pod_leftovers(&self, recorded: &RecordedPod) -> Found {
        self.builtin.pod_leftovers(recorded)
    }

    fn remove_leftover(&self, pod_dir: &Path, pod_cgroup: &CgroupPath, id: &str) {
        self.builtin.remove_leftover(pod_dir, pod_cgroup, id)
    }

    fn exec_sync(
        &self,
        target: &ExecTarget,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecSyncResponse, ExecSyncError> {
        self.builtin.exec_sync(target, cmd, timeout)
    }
}

/// What runc needs different in a spec the built-in runtime would run:
/// - /dev without `nodev`: the built-in runtime bind-mounts each device node
///   into a `nodev` /dev, runc makes them with mknod (as its own default
///   spec does); the devices cgroup still limits which ones open;
/// - an `oomScoreAdj` it can set: lowering a score needs CAP_SYS_RESOURCE,
///   which a confined node lacks; the built-in runtime then leaves the score
///   inherited, runc would fail, so with `keep_oom_score_adj` (the node's
///   own score, when it cannot lower it) a lower one becomes that.
pub fn adapt_spec(spec: &mut oci_spec::runtime::Spec, keep_oom_score_adj: Option<i32>) {
    if let (Some(own), Some(mut process)) = (keep_oom_score_adj, spec.process().clone())
        && process.oom_score_adj().is_some_and(|adj| adj < own)
    {
        process.set_oom_score_adj(Some(own));
        spec.set_process(Some(process));
    }
    let Some(mounts) = spec.mounts().clone() else {
        return;
    };
    let mounts = mounts
        .into_iter()
        .map(|mut m| {
            if m.destination() == Path::new("/dev") && m.typ().as_deref() == Some("tmpfs") {
                let options = m
                    .options()
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|o| o != "nodev")
                    .collect();
                m.set_options(Some(options));
            }
            m
        })
        .collect();
    spec.set_mounts(Some(mounts));
}

/// This node's own `oom_score_adj` when it cannot lower a score (no
/// CAP_SYS_RESOURCE), for [`adapt_spec`].
pub fn unlowerable_oom_score_adj() -> Option<i32> {
    let can_lower = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap_or(false);
    if can_lower {
        return None;
    }
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

impl RuncRuntime {
    /// runc's record of a run its shim did not live to delete (the shim
    /// deletes it when the container exits).
    fn forget(&self, pod_dir: &Path, container_id: &str) {
        if !self.runc.root.join(container_id).exists() {
            return;
        }
        let bundle = pod_dir.join("containers").join(container_id);
        if let Err(e) = self.runc.delete(container_id, &bundle, true) {
            tracing::warn!(container = %container_id, "runc delete: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{MountBuilder, Spec};

    fn mount(dest: &str, typ: &str, options: &[&str]) -> oci_spec::runtime::Mount {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(typ)
            .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
            .build()
            .unwrap()
    }

    #[test]
    fn runc_gets_a_dev_where_its_device_nodes_open_and_a_score_it_can_set() {
        let mut spec = Spec::default();
        spec.set_mounts(Some(vec![
            mount("/dev", "tmpfs", &["nosuid", "nodev", "mode=755"]),
            mount("/dev/shm", "tmpfs", &["nosuid", "noexec", "nodev"]),
        ]));
        let mut process = oci_spec::runtime::Process::default();
        process.set_oom_score_adj(Some(-997));
        spec.set_process(Some(process.clone()));
        adapt_spec(&mut spec, None);
        assert_eq!(spec.process().as_ref().unwrap().oom_score_adj(), Some(-997));
        adapt_spec(&mut spec, Some(0));
        assert_eq!(spec.process().as_ref().unwrap().oom_score_adj(), Some(0));
        process.set_oom_score_adj(Some(1000));
        spec.set_process(Some(process));
        adapt_spec(&mut spec, Some(0));
        assert_eq!(spec.process().as_ref().unwrap().oom_score_adj(), Some(1000));
        let mounts = spec.mounts().clone().unwrap();
        assert_eq!(mounts[0].options().clone().unwrap(), ["nosuid", "mode=755"]);
        assert_eq!(
            mounts[1].options().clone().unwrap(),
            ["nosuid", "noexec", "nodev"]
        );
    }
}
