//! A runtime that only pretends ([`RuntimeService`]): sandboxes and
//! containers are records, a container "runs" until it is signalled or told
//! to exit, hooks succeed. It records every call in order, so a test can
//! check what the pod worker asked and when, with no root and no process.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, LifecycleHandler};
use nix::sys::signal::Signal;
use tokio::sync::watch;

use crate::cgroups::CgroupPath;
use crate::pod::slot::CurrentRun;
use crate::prober::{ProbeOutcome, ProbeTarget};
use crate::runtime::sandbox::SandboxState;
use crate::runtime::service::{
    ContainerRequest, CreateError, PodRemoval, RuntimeService, SandboxRequest,
};
use crate::runtime::shim::{ContainerExit, ContainerStarted};

struct FakeContainer {
    name: String,
    started_at: Timestamp,
    exit: Option<ContainerExit>,
    exited: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    calls: Vec<String>,
    containers: HashMap<String, FakeContainer>,
    missing_images: HashSet<String>,
    /// Containers (by name) whose process ignores SIGTERM, as a shell loop as PID 1 does.
    ignoring_sigterm: HashSet<String>,
    next_pid: i32,
}

#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
}

impl FakeRuntime {
    /// Every call so far, in order: `run_pod_sandbox`, `start web busybox`,
    /// `hook web`, `signal web SIGTERM`, `kill web`, `remove web`,
    /// `remove_pod_sandbox`.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().expect("lock").calls.clone()
    }

    /// Containers of images not "present" fail with `ErrImagePull`.
    pub fn set_image_missing(&self, image: &str) {
        let mut state = self.state.lock().expect("lock");
        state.missing_images.insert(image.to_string());
    }

    pub fn ignore_sigterm(&self, container: &str) {
        let mut state = self.state.lock().expect("lock");
        state.ignoring_sigterm.insert(container.to_string());
    }

    /// The running container `name` exits with `code`; returns whether one ran.
    pub fn exit(&self, name: &str, code: i32) -> bool {
        let mut state = self.state.lock().expect("lock");
        let found = state
            .containers
            .values_mut()
            .find(|c| c.name == name && c.exit.is_none());
        match found {
            Some(c) => {
                finish(c, code, None);
                true
            }
            None => false,
        }
    }

    fn log(&self, call: String) {
        self.state.lock().expect("lock").calls.push(call);
    }

    fn name_of(&self, container_id: &str) -> String {
        let state = self.state.lock().expect("lock");
        state
            .containers
            .get(container_id)
            .map(|c| c.name.clone())
            .unwrap_or_else(|| container_id.to_string())
    }
}

fn finish(c: &mut FakeContainer, code: i32, signal: Option<i32>) {
    if c.exit.is_some() {
        return;
    }
    c.exit = Some(ContainerExit {
        exit_code: code,
        signal,
        oom_killed: false,
        start_error: None,
        started_at: Some(c.started_at),
        finished_at: Timestamp::now(),
    });
    c.exited.send_replace(true);
}

impl RuntimeService for FakeRuntime {
    fn run_pod_sandbox(
        &self,
        req: &SandboxRequest,
    ) -> Result<(SandboxState, Option<String>), String> {
        self.log("run_pod_sandbox".into());
        let spec = req.pod.spec.as_ref();
        Ok((
            SandboxState {
                id: req.id.to_string(),
                pid: 0,
                start_ticks: 0,
                host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
                share_pid: false,
                user_namespace: None,
            },
            Some("10.0.0.2".into()),
        ))
    }

    fn pod_sandbox_ready(&self, _sandbox: &SandboxState) -> bool {
        true
    }

    fn remove_pod_sandbox(&self, removal: PodRemoval) {
        for id in &removal.runs {
            self.remove_container(&removal.pod_dir, &removal.pod_cgroup, id);
        }
        self.log("remove_pod_sandbox".into());
    }

    fn create_and_start_container(
        &self,
        req: &ContainerRequest,
    ) -> Result<(CurrentRun, Option<ContainerExit>), CreateError> {
        let image = req.container.image.clone().unwrap_or_default();
        let name = req.container.name.clone();
        let mut state = self.state.lock().expect("lock");
        if state.missing_images.contains(&image) {
            state.calls.push(format!("pull failed {name} {image}"));
            return Err(CreateError::ImageMissing(format!(
                "image {image:?} is not present"
            )));
        }
        state.calls.push(format!("start {name} {image}"));
        state.next_pid += 1;
        let pid = 1000 + state.next_pid;
        let started_at = Timestamp::now();
        state.containers.insert(
            req.id.to_string(),
            FakeContainer {
                name,
                started_at,
                exit: None,
                exited: watch::Sender::new(false),
            },
        );
        Ok((
            CurrentRun {
                container_id: req.id.to_string(),
                started: ContainerStarted {
                    pid,
                    shim_pid: pid,
                    started_at,
                },
                image_id: format!("fake://{image}"),
            },
            None,
        ))
    }

    fn signal_container(&self, run: &CurrentRun, signal: Signal) {
        let mut state = self.state.lock().expect("lock");
        let ignoring = state.ignoring_sigterm.clone();
        let Some(c) = state.containers.get_mut(&run.container_id) else {
            return;
        };
        let name = c.name.clone();
        if c.exit.is_none() && !(signal == Signal::SIGTERM && ignoring.contains(&name)) {
            finish(c, 128 + signal as i32, Some(signal as i32));
        }
        state.calls.push(format!("signal {name} {signal}"));
    }

    fn kill_container(&self, _pod_cgroup: &CgroupPath, container_id: &str) {
        let mut state = self.state.lock().expect("lock");
        let Some(c) = state.containers.get_mut(container_id) else {
            return;
        };
        let name = c.name.clone();
        finish(c, 137, Some(Signal::SIGKILL as i32));
        state.calls.push(format!("kill {name}"));
    }

    fn container_running(&self, run: &CurrentRun) -> bool {
        let state = self.state.lock().expect("lock");
        state
            .containers
            .get(&run.container_id)
            .is_some_and(|c| c.exit.is_none())
    }

    fn wait_container(&self, run: &CurrentRun) -> BoxFuture<'static, ()> {
        let state = self.state.lock().expect("lock");
        let Some(c) = state.containers.get(&run.container_id) else {
            return futures::future::ready(()).boxed();
        };
        let mut exited = c.exited.subscribe();
        async move {
            let _ = exited.wait_for(|e| *e).await;
        }
        .boxed()
    }

    fn container_exit(&self, _pod_dir: &Path, container_id: &str) -> Option<ContainerExit> {
        let state = self.state.lock().expect("lock");
        state.containers.get(container_id)?.exit.clone()
    }

    fn remove_container(&self, _pod_dir: &Path, _pod_cgroup: &CgroupPath, container_id: &str) {
        let name = self.name_of(container_id);
        self.log(format!("remove {name}"));
    }

    fn run_hook(
        &self,
        hook: &LifecycleHandler,
        container: &Container,
        _target: &ProbeTarget,
        _timeout: Duration,
    ) -> ProbeOutcome {
        let command = hook
            .exec
            .as_ref()
            .and_then(|e| e.command.clone())
            .unwrap_or_default();
        self.log(format!("hook {} {}", container.name, command.join(" ")));
        ProbeOutcome::Success
    }
}
