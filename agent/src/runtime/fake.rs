//! A runtime that only pretends ([`RuntimeService`]): sandboxes and
//! containers are records, a container "runs" until it is signalled or told
//! to exit, hooks and probes succeed. For tests it records every call in
//! order, so a test can check what the pod worker asked and when, with no
//! root and no process. For hollow nodes ([`FakeRuntime::pretending`]) it
//! records nothing, forgets what is removed and gives each sandbox an
//! address of the node's pod CIDR, so thousands of pods cost little.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use jiff::Timestamp;
use nix::sys::signal::Signal;
use tokio::sync::watch;

use crate::cgroups::CgroupPath;
use crate::runtime::cri::{ExecSyncError, ExecSyncResponse};
use crate::runtime::sandbox::SandboxState;
use crate::runtime::service::{
    ContainerRequest, CreateError, CurrentRun, ExecTarget, Found, FoundRun, FoundSandbox,
    PodRemoval, RecordedPod, RuntimeService, SandboxRequest,
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
    /// Whether calls are recorded (tests) or not (hollow nodes).
    quiet: bool,
    calls: Vec<String>,
    /// Sandbox id → its pod IP, while the sandbox exists.
    pod_ips: HashMap<String, Ipv4Addr>,
    containers: HashMap<String, FakeContainer>,
    missing_images: HashSet<String>,
    /// Containers (by name) whose process ignores SIGTERM, as a shell loop as PID 1 does.
    ignoring_sigterm: HashSet<String>,
    /// What `ExecSync` in a container (by name) answers; exit 0 and no
    /// output for the others.
    exec_responses: HashMap<String, ExecSyncResponse>,
    next_pid: i32,
}

impl State {
    fn note(&mut self, call: String) {
        if !self.quiet {
            self.calls.push(call);
        }
    }
}

/// Where a pretending runtime finds the node's pod CIDR (it may be assigned
/// after the node registered).
pub type PodCidrSource = Box<dyn Fn() -> Option<String> + Send + Sync>;

#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
    /// Set for a hollow node: sandboxes get addresses of this CIDR.
    pod_cidr: Option<PodCidrSource>,
}

/// The first and last host address of `cidr` (`10.244.3.0/24`) a pod may
/// get, as the bridge plugin's host-local IPAM hands them out: the network
/// address and the gateway (`.1`) are never given, nor the broadcast one.
fn host_range(cidr: &str) -> Option<(u32, u32)> {
    let (addr, len) = cidr.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 30)?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let network = u32::from(addr) & mask;
    let broadcast = network | !mask;
    Some((network + 2, broadcast - 1))
}

impl FakeRuntime {
    /// The runtime of a hollow node: records nothing, forgets removed
    /// containers, and gives sandboxes the lowest free address of the pod
    /// CIDR `pod_cidr` yields (none while it yields none).
    pub fn pretending(pod_cidr: PodCidrSource) -> Self {
        FakeRuntime {
            state: Mutex::new(State {
                quiet: true,
                ..Default::default()
            }),
            pod_cidr: Some(pod_cidr),
        }
    }

    /// A free address of the pod CIDR for sandbox `id`.
    fn allocate_ip(&self, state: &mut State, id: &str) -> Result<Option<String>, String> {
        let Some(cidr) = self.pod_cidr.as_ref().and_then(|source| source()) else {
            return Ok(None);
        };
        let (first, last) =
            host_range(&cidr).ok_or_else(|| format!("invalid pod CIDR {cidr:?}"))?;
        let used: HashSet<u32> = state.pod_ips.values().map(|ip| u32::from(*ip)).collect();
        let free = (first..=last).find(|a| !used.contains(a)).ok_or_else(|| {
            format!(
                "failed to allocate for range 0: no IP addresses available in range set: {}-{}",
                Ipv4Addr::from(first),
                Ipv4Addr::from(last)
            )
        })?;
        let ip = Ipv4Addr::from(free);
        state.pod_ips.insert(id.to_string(), ip);
        Ok(Some(ip.to_string()))
    }

    /// Every call so far, in order: `run_pod_sandbox`, `start web busybox`,
    /// `exec web <cmd>` (exec hooks and probes), `signal web SIGTERM`, `kill web`, `remove web`,
    /// `remove_pod_sandbox`.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().expect("lock").calls.clone()
    }

    /// Containers of images not "present" fail with `ErrImagePull`.
    pub fn set_image_missing(&self, image: &str) {
        let mut state = self.state.lock().expect("lock");
        state.missing_images.insert(image.to_string());
    }

    /// Every command run in `container` from now on ends as `response` says.
    pub fn answer_execs_in(&self, container: &str, response: ExecSyncResponse) {
        let mut state = self.state.lock().expect("lock");
        state.exec_responses.insert(container.to_string(), response);
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
        self.state.lock().expect("lock").note(call);
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

/// Whether a hollow node's container is done as soon as it started, as
/// the pod layer marks it (an init container, or a pod that runs to
/// completion). It exits 0.
fn runs_to_completion(req: &ContainerRequest) -> bool {
    req.config
        .annotations
        .get(crate::runtime::cri::RUNS_TO_COMPLETION_ANNOTATION)
        .is_some_and(|v| v == "true")
}

impl RuntimeService for FakeRuntime {
    fn run_pod_sandbox(
        &self,
        req: &SandboxRequest,
    ) -> Result<(SandboxState, Option<String>), String> {
        let mut state = self.state.lock().expect("lock");
        state.note("run_pod_sandbox".into());
        let host_network = req.config.linux.security_context.namespace_options.network
            == crate::runtime::cri::NamespaceMode::Node;
        let pod_ip = match (&self.pod_cidr, host_network) {
            (None, _) => Some("10.0.0.2".into()),
            (Some(_), true) => None,
            (Some(_), false) => self.allocate_ip(&mut state, req.id)?,
        };
        Ok((
            SandboxState {
                id: req.id.to_string(),
                pid: 0,
                start_ticks: 0,
                host_network,
                share_pid: false,
                user_namespace: None,
            },
            pod_ip,
        ))
    }

    fn pod_sandbox_ready(&self, _sandbox: &SandboxState) -> bool {
        true
    }

    fn remove_pod_sandbox(&self, removal: PodRemoval) {
        for id in &removal.runs {
            self.remove_container(&removal.pod_dir, &removal.pod_cgroup, id);
        }
        let mut state = self.state.lock().expect("lock");
        if let Some(sandbox) = &removal.sandbox {
            state.pod_ips.remove(&sandbox.id);
        }
        state.note("remove_pod_sandbox".into());
    }

    fn create_and_start_container(
        &self,
        req: &ContainerRequest,
    ) -> Result<(CurrentRun, Option<ContainerExit>), CreateError> {
        let image = req.config.image.clone();
        let name = req.config.metadata.name.clone();
        let mut state = self.state.lock().expect("lock");
        if state.missing_images.contains(&image) {
            state.note(format!("pull failed {name} {image}"));
            return Err(CreateError::ImageMissing(format!(
                "image {image:?} is not present"
            )));
        }
        state.note(format!("start {name} {image}"));
        state.next_pid += 1;
        let pid = 1000 + state.next_pid;
        let started_at = Timestamp::now();
        let mut container = FakeContainer {
            name,
            started_at,
            exit: None,
            exited: watch::Sender::new(false),
        };
        if self.pod_cidr.is_some() && runs_to_completion(req) {
            finish(&mut container, 0, None);
        }
        state.containers.insert(req.id.to_string(), container);
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
        state.note(format!("signal {name} {signal}"));
    }

    fn kill_container(&self, _pod_cgroup: &CgroupPath, container_id: &str) {
        let mut state = self.state.lock().expect("lock");
        let Some(c) = state.containers.get_mut(container_id) else {
            return;
        };
        let name = c.name.clone();
        finish(c, 137, Some(Signal::SIGKILL as i32));
        state.note(format!("kill {name}"));
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
        let mut state = self.state.lock().expect("lock");
        if state.quiet {
            state.containers.remove(container_id);
        }
        state.note(format!("remove {name}"));
    }

    /// A pretending runtime keeps nothing on the node: of what a previous
    /// agent process recorded, no sandbox lives and no run left a trace,
    /// so started runs are adopted (and found lost) and intended ones dropped.
    fn pod_leftovers(&self, recorded: &RecordedPod) -> Found {
        let state = self.state.lock().expect("lock");
        let exited = |id: &str| state.containers.get(id).is_some_and(|c| c.exit.is_some());
        let recorded_runs = recorded.runs.iter().map(|(slot, run)| FoundRun {
            slot: slot.clone(),
            container_id: run.container_id.clone(),
            recorded: true,
            started: Some(run.started.clone()),
            exited: exited(&run.container_id),
        });
        let intended_runs = recorded.intended.iter().map(|(slot, id)| FoundRun {
            slot: slot.clone(),
            container_id: id.clone(),
            recorded: false,
            started: None,
            exited: exited(id),
        });
        Found {
            sandbox: recorded.sandbox.as_ref().map(|s| FoundSandbox {
                id: s.id.clone(),
                alive: false,
            }),
            sandbox_intent: recorded.sandbox_intent.clone(),
            runs: recorded_runs.chain(intended_runs).collect(),
            on_node: Default::default(),
        }
    }

    fn remove_leftover(&self, _pod_dir: &Path, _pod_cgroup: &CgroupPath, id: &str) {
        let mut state = self.state.lock().expect("lock");
        state.containers.remove(id);
        state.pod_ips.remove(id);
        state.note(format!("remove_leftover {id}"));
    }

    fn exec_sync(
        &self,
        target: &ExecTarget,
        cmd: &[String],
        _timeout: Duration,
    ) -> Result<ExecSyncResponse, ExecSyncError> {
        let id = target
            .bundle
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = self.name_of(&id);
        self.log(format!("exec {name} {}", cmd.join(" ")));
        let state = self.state.lock().expect("lock");
        Ok(state.exec_responses.get(&name).cloned().unwrap_or_default())
    }

    fn pods_are_real(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_addresses_skip_the_network_gateway_and_broadcast() {
        let (first, last) = host_range("10.244.3.0/24").unwrap();
        assert_eq!(Ipv4Addr::from(first), Ipv4Addr::new(10, 244, 3, 2));
        assert_eq!(Ipv4Addr::from(last), Ipv4Addr::new(10, 244, 3, 254));
        assert_eq!(host_range("10.244.3.7/24"), Some((first, last)));
        assert_eq!(host_range("10.244.3.0/31"), None);
        assert_eq!(host_range("nonsense"), None);
    }

    #[test]
    fn a_pretending_runtime_hands_out_and_takes_back_pod_addresses() {
        let rt = FakeRuntime::pretending(Box::new(|| Some("10.1.0.0/29".into())));
        let mut state = rt.state.lock().unwrap();
        let ips: Vec<_> = (0..5)
            .map(|i| rt.allocate_ip(&mut state, &format!("s{i}")).unwrap())
            .collect();
        assert_eq!(ips[0].as_deref(), Some("10.1.0.2"));
        assert_eq!(ips[4].as_deref(), Some("10.1.0.6"));
        let full = rt.allocate_ip(&mut state, "s5").unwrap_err();
        assert!(full.contains("no IP addresses available"), "{full}");
        state.pod_ips.remove("s1");
        let again = rt.allocate_ip(&mut state, "s6").unwrap();
        assert_eq!(again.as_deref(), Some("10.1.0.3"));
        assert!(state.calls.is_empty(), "a hollow node records no calls");
    }
}
