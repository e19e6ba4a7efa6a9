//! The pod worker: one task per pod, the only owner of its pod's runtime state
//! (kubelet's `podWorkers`). It sets up the pod cgroup and sandbox, starts the
//! containers in order, reacts to their exits with the restart policy and
//! back-off, and on stop terminates them with the grace period and removes
//! every trace (cgroups, mounts, dirs).
//!
//! State is written to `<root>/pods/<uid>/worker.json` after every change, so
//! a restarted agent adopts running containers instead of starting new ones.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::cgroups::{CgroupPath, QosClass};
use crate::config::is_static_pod;
use crate::context::AgentContext;
use crate::images;
use crate::logs;
use crate::pod::actions::{self, ContainerToKill, DownwardMetadata, Observed, PodActions};
use crate::pod::recovery;
use crate::pod::slot::{ContainerSlot, CurrentRun, Terminated};
use crate::prober::{self, ProbeEvent, ProbeNotice, ProbeTarget};
use crate::runtime::container;
use crate::runtime::handlers::RuntimeHandlers;
use crate::runtime::sandbox::SandboxState;
use crate::runtime::service::{
    ContainerRequest, CreateError, ExecTarget, PodRemoval, RecordedPod, RuntimeService,
    SandboxRequest,
};
use crate::runtime::shim::ContainerStarted;
use crate::status::{self, ContainerRuntimeInfo, PodEntry, PodView};

/// How long a `postStart` hook may take before it counts as failed.
const POST_START_TIMEOUT: Duration = Duration::from_secs(120);

/// Messages from the pod manager (kubelet's `UpdatePod`): every change of
/// the pod reaches its worker.
#[derive(Debug)]
pub enum WorkerMsg {
    /// The pod as its source has it now (a new image, deadline, labels…).
    Update(Arc<Pod>),
    /// Terminate the pod: SIGTERM, the grace period, SIGKILL, clean up.
    Stop { grace: Option<Duration> },
    /// Fail the pod with this status (the eviction manager's): its
    /// containers are killed within the grace period and never restarted;
    /// the pod stays, Failed, until it is deleted.
    Evict(crate::pod::manager::PodEviction),
}

/// What `worker.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistedState {
    pub sandbox: Option<SandboxState>,
    pub slots: Vec<ContainerSlot>,
    pub start_time: Option<Timestamp>,
    /// The sandbox's IP from CNI ADD.
    #[serde(default)]
    pub pod_ip: Option<String>,
    /// The id of a sandbox being made: recorded before its cgroup, process
    /// and network exist, and replaced by `sandbox` once all three do.
    #[serde(default)]
    pub sandbox_intent: Option<String>,
}

pub fn load_persisted(pod_dir: &Path) -> Option<(Pod, PersistedState)> {
    let pod = serde_json::from_slice(&std::fs::read(pod_dir.join("pod.json")).ok()?).ok()?;
    let state = serde_json::from_slice(&std::fs::read(pod_dir.join("worker.json")).ok()?).ok()?;
    Some((pod, state))
}

/// An exit noticed by a watcher task: (container name, container id).
type ExitNotice = (String, String);

pub struct PodWorker {
    ctx: Arc<AgentContext>,
    /// Sandboxes and containers are made and stopped through it.
    runtime: Arc<dyn RuntimeService>,
    /// Where `runtime` comes from: the backend of the pod's runtime handler
    /// (`None`: always `runtime`).
    handlers: Option<Arc<RuntimeHandlers>>,
    /// Shared with the pod manager and the source's snapshots.
    pod: Arc<Pod>,
    uid: String,
    /// `namespace/name`, for events and logs.
    key: String,
    dir: PathBuf,
    qos: QosClass,
    pod_cgroup: CgroupPath,
    sandbox: Option<SandboxState>,
    /// See [`PersistedState::sandbox_intent`].
    sandbox_intent: Option<String>,
    slots: Vec<ContainerSlot>,
    start_time: Option<Timestamp>,
    /// The sandbox's IP from CNI ADD (`None`: hostNetwork, or no network config).
    pod_ip: Option<String>,
    terminating: bool,
    /// The pod manager's messages (set when the worker runs).
    inbox: Option<mpsc::UnboundedReceiver<WorkerMsg>>,
    /// The newest update not yet taken in (a newer one replaces it).
    pending_update: Option<Arc<Pod>>,
    /// A stop that arrived while containers were starting: it ends the
    /// start-up loop and is carried out next (with its grace period).
    stop_requested: Option<Option<Duration>>,
    /// An eviction that arrived while containers were starting.
    eviction_requested: Option<crate::pod::manager::PodEviction>,
    exits_tx: mpsc::UnboundedSender<ExitNotice>,
    exits_rx: mpsc::UnboundedReceiver<ExitNotice>,
    probes_tx: mpsc::UnboundedSender<ProbeNotice>,
    probes_rx: mpsc::UnboundedReceiver<ProbeNotice>,
    /// The prober of each running container, by container name.
    probers: std::collections::HashMap<String, tokio::task::JoinHandle<()>>,
    /// Notices of ConfigMap, Secret and Service changes (`None`: standalone).
    object_changes: Option<tokio::sync::watch::Receiver<u64>>,
    /// The pod's referenced objects as last seen (`objects::fingerprint`).
    objects_seen: Vec<Option<String>>,
    /// The volume problems last reported, so a retry does not repeat the Event.
    mount_errors: Vec<String>,
    /// The pod failed as a whole (reason, message): nothing restarts.
    failure: Option<(String, String)>,
    /// Runs killed because their `postStart` hook failed: container id → why.
    hook_failures: std::collections::HashMap<String, String>,
    /// What the API-backed volumes were last written with.
    volumes_written: Option<DownwardMetadata>,
    /// When a ServiceAccount token of the pod's volumes is due for refresh.
    tokens_refresh_at: Option<Timestamp>,
    /// Runs being killed because their container's definition changed:
    /// they start again once gone.
    killing: Vec<String>,
}

/// Why the node refuses to run a pod at all (reason, message), as kubelet's
/// admission handlers do: a pod from the API with more containers than
/// the agent runs in one pod (a manifest file is refused before that).
fn admission_rejection(
    spec: &k8s_openapi::api::core::v1::PodSpec,
) -> Option<(&'static str, String)> {
    crate::config::manifest::too_many_containers(spec).map(|e| ("TooManyContainers", e.to_string()))
}

/// Resolves on the next change notice; never without a receiver (or sender).
async fn next_change(rx: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Go's `%v` of a command: `[sh -c exit 1]`.
fn go_command(command: &[String]) -> String {
    format!("[{}]", command.join(" "))
}

/// A failed `preStop` hook: the kubelet keeps the hook's output out of
/// the Event (it may hold secrets) and only logs it.
fn pre_stop_failed(events: &crate::events::EventRecorder, key: &str, name: &str, error: &str) {
    tracing::warn!(pod = %key, container = name, "PreStop hook failed: {error}");
    events.warning(
        key,
        Some(name),
        "FailedPreStopHook",
        "PreStopHook failed".into(),
    );
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn spec_of(pod: &Pod) -> &k8s_openapi::api::core::v1::PodSpec {
    pod.spec.as_ref().expect("validated pods have a spec")
}

impl PodWorker {
    pub fn new(ctx: Arc<AgentContext>, runtime: Arc<dyn RuntimeService>, pod: Arc<Pod>) -> Self {
        let uid = uid_of(&pod);
        // Manifests are validated before they get here: quantities parse.
        let qos = QosClass::from_pod(spec_of(&pod)).unwrap_or(QosClass::BestEffort);
        let pod_cgroup = ctx.cgroups.pod_path(qos, &uid);
        let spec = spec_of(&pod);
        let slots = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| ContainerSlot::new_init(&c.name, c.image.as_deref().unwrap_or_default()))
            .chain(
                spec.containers
                    .iter()
                    .map(|c| ContainerSlot::new(&c.name, c.image.as_deref().unwrap_or_default())),
            )
            .collect();
        let (exits_tx, exits_rx) = mpsc::unbounded_channel();
        let (probes_tx, probes_rx) = mpsc::unbounded_channel();
        let ctx_changes = ctx.api_objects.as_ref().map(|c| c.changes());
        PodWorker {
            key: format!(
                "{}/{}",
                pod.metadata.namespace.as_deref().unwrap_or("default"),
                pod.metadata.name.as_deref().unwrap_or_default()
            ),
            dir: ctx.pod_dir(&uid),
            ctx,
            runtime,
            handlers: None,
            pod,
            uid,
            qos,
            pod_cgroup,
            sandbox: None,
            sandbox_intent: None,
            slots,
            start_time: None,
            pod_ip: None,
            terminating: false,
            inbox: None,
            pending_update: None,
            stop_requested: None,
            eviction_requested: None,
            exits_tx,
            exits_rx,
            probes_tx,
            probes_rx,
            probers: Default::default(),
            object_changes: ctx_changes,
            objects_seen: Vec::new(),
            mount_errors: Vec::new(),
            failure: None,
            hook_failures: Default::default(),
            volumes_written: None,
            tokens_refresh_at: None,
            killing: Vec::new(),
        }
    }

    /// Runs the pod under the backend of its RuntimeClass's handler.
    pub fn with_handlers(mut self, handlers: Arc<RuntimeHandlers>) -> Self {
        self.handlers = Some(handlers);
        self
    }

    /// The kubelet's `LookupRuntimeHandler` and CRI's handler → runtime:
    /// the backend for this pod, or why there is none.
    fn select_runtime(&mut self) -> Result<(), String> {
        let Some(handlers) = &self.handlers else {
            return Ok(());
        };
        let cache = self.ctx.api_objects.as_ref();
        let lookup =
            cache.map(|c| move |name: &str| c.runtime_handler(name).map_err(|e| e.to_string()));
        let handler = crate::runtime::handlers::runtime_handler(
            spec_of(&self.pod).runtime_class_name.as_deref(),
            lookup
                .as_ref()
                .map(|f| f as &dyn Fn(&str) -> Result<String, String>),
        )
        .map_err(|e| e.to_string())?;
        self.runtime = handlers.get(&handler).map_err(|e| e.to_string())?;
        if !handler.is_empty() {
            tracing::info!(pod = %self.key, runtime_handler = %handler, "Running pod with runtime handler");
        }
        Ok(())
    }

    /// The worker's loop: take in what happened (an update, an exit, a
    /// probe's verdict, a changed object, a timer), then decide what to do
    /// from the pod and what is observed ([`actions::compute_actions`]) and
    /// do it, until the pod is stopped.
    pub async fn run(
        mut self,
        rx: mpsc::UnboundedReceiver<WorkerMsg>,
        adopted: Option<PersistedState>,
    ) {
        self.inbox = Some(rx);
        // The work of each turn is boxed while it runs: the future of an idle
        // worker (most of a node's pods, most of the time) then holds the
        // loop's state only, not that of the largest step it might take.
        match adopted {
            Some(state) => Box::pin(self.adopt(state)).await,
            None => self.setup().await,
        }
        loop {
            // What the manager sent meanwhile first: a stop wins over any start.
            self.stop_requested();
            if let Some(pod) = self.pending_update.take() {
                self.on_update(pod);
            }
            if let Some(grace) = self.stop_requested.take() {
                Box::pin(self.terminate(grace)).await;
                break;
            }
            if let Some(e) = self.eviction_requested.take() {
                Box::pin(self.fail_pod(&e.reason, &e.message, e.grace)).await;
            }
            let now_due = self.compute_actions();
            Box::pin(self.carry_out(now_due)).await;
            if self.stop_requested.is_some() || self.pending_update.is_some() {
                continue;
            }
            self.publish();
            let sleep = self.compute_actions().next_wake.map(|t| {
                let wait = t.duration_since(Timestamp::now());
                Duration::from_nanos(wait.as_nanos().clamp(0, i64::MAX as i128) as u64)
            });
            let inbox = self.inbox.as_mut().expect("set above");
            tokio::select! {
                msg = inbox.recv() => self.take_message(msg),
                Some((name, id)) = self.exits_rx.recv() => self.on_exit(&name, &id).await,
                Some(notice) = self.probes_rx.recv() => self.on_probe(notice),
                _ = next_change(&mut self.object_changes) => Box::pin(self.on_objects_changed()).await,
                // Whatever is due then is decided at the top of the loop.
                _ = tokio::time::sleep(sleep.unwrap_or_default()), if sleep.is_some() => {}
            }
        }
        // The final status (containers terminated), for the status manager
        // to send before it finishes the pod's deletion.
        self.publish();
        self.ctx.status.remove(&self.uid);
        if let Some(tokens) = &self.ctx.tokens {
            tokens.delete_service_account_token(&self.uid);
        }
    }

    /// A new pod: its dir, cgroup and sandbox; containers start from the loop.
    async fn setup(&mut self) {
        self.start_time = Some(Timestamp::now());
        // The kubelet's admission: a pod asking for sysctls this node does
        // not allow is rejected before anything of it exists.
        if let Err(message) =
            crate::pod::sysctls::admit(&self.pod, &self.ctx.policy.allowed_unsafe_sysctls)
        {
            self.reject(crate::pod::sysctls::FORBIDDEN_REASON, &message);
            return;
        }
        if let Some((reason, message)) = admission_rejection(spec_of(&self.pod)) {
            self.reject(reason, &message);
            return;
        }
        let best_effort = self.qos == QosClass::BestEffort;
        let pressure = self.ctx.node_pressure.borrow().clone();
        if let Err(message) = crate::eviction::admission::admit(&self.pod, best_effort, &pressure) {
            self.reject(crate::eviction::REASON, &message);
            return;
        }
        // Both files before anything is made for the pod: a pod dir the
        // agent can read names everything the pod may have on the node.
        if let Err(e) = std::fs::create_dir_all(&self.dir).and_then(|_| {
            crate::runtime::shim::write_json_atomic(&self.dir.join("pod.json"), &*self.pod)
        }) {
            tracing::error!(pod = %self.key, "writing {}: {e}", self.dir.display());
        }
        self.persist();
    }

    /// The kubelet's `rejectPod`: the pod fails with `reason`, an event says
    /// why, and none of its containers is ever started.
    fn reject(&mut self, reason: &str, message: &str) {
        self.ctx
            .events
            .warning(&self.key, None, reason, message.to_string());
        self.failure = Some((reason.into(), format!("Pod was rejected: {message}")));
        for slot in &mut self.slots {
            slot.done = true;
            slot.next_start = None;
            slot.waiting = None;
        }
        self.persist();
    }

    /// Keeps a message of the pod manager for the top of the loop: the
    /// newest update, and a stop (a closed inbox is one too).
    fn take_message(&mut self, msg: Option<WorkerMsg>) {
        match msg {
            Some(WorkerMsg::Update(pod)) => self.pending_update = Some(pod),
            Some(WorkerMsg::Stop { grace }) => {
                self.stop_requested.get_or_insert(grace);
            }
            Some(WorkerMsg::Evict(e)) => {
                self.eviction_requested.get_or_insert(e);
            }
            None => {
                self.stop_requested.get_or_insert(None);
            }
        }
    }

    /// Whether the pod manager asked this pod to stop; a stop found here
    /// (between two container starts) ends the start-up loop.
    fn stop_requested(&mut self) -> bool {
        while self.stop_requested.is_none() {
            let Some(inbox) = self.inbox.as_mut() else {
                break;
            };
            match inbox.try_recv() {
                Ok(msg) => self.take_message(Some(msg)),
                Err(mpsc::error::TryRecvError::Disconnected) => self.take_message(None),
                Err(mpsc::error::TryRecvError::Empty) => break,
            }
        }
        self.stop_requested.is_some() || self.eviction_requested.is_some()
    }

    /// Takes in the pod as its source has it now. What changed is acted on
    /// by the next [`Self::compute_actions`]: a new image restarts its
    /// container, new labels or annotations rewrite the downward volumes, a
    /// new `activeDeadlineSeconds` moves the deadline.
    fn on_update(&mut self, pod: Arc<Pod>) {
        if self.terminating || uid_of(&pod) != self.uid {
            return;
        }
        tracing::info!(pod = %self.key, "pod updated");
        self.pod = pod;
        // A restarted agent adopts the pod as it is now.
        if self.dir.exists()
            && let Err(e) =
                crate::runtime::shim::write_json_atomic(&self.dir.join("pod.json"), &*self.pod)
        {
            tracing::warn!(pod = %self.key, "writing pod.json: {e}");
        }
    }

    /// What to do now, from the pod and what this worker observes.
    fn compute_actions(&self) -> PodActions {
        actions::compute_actions(
            &self.pod,
            &Observed {
                slots: &self.slots,
                terminating: self.terminating,
                failed: self.failure.is_some(),
                start_time: self.start_time,
                sandbox_ready: self.sandbox.is_some(),
                volumes_written: self.volumes_written.as_ref(),
                killing: &self.killing,
                tokens_refresh_at: self.tokens_refresh_at,
            },
            Timestamp::now(),
        )
    }

    /// The executor of [`actions::compute_actions`]' decisions.
    async fn carry_out(&mut self, actions: PodActions) {
        if actions.deadline_exceeded {
            self.fail_for_deadline().await;
            return;
        }
        for kill in actions.kill {
            self.kill_for_new_definition(kill);
        }
        if actions.refresh_volumes {
            let _ = self.ensure_api_volumes().await;
        }
        if !actions.start.is_empty() {
            self.start_due(actions.start).await;
        }
    }

    /// Kills a run whose container's definition changed (kubelet's
    /// "definition changed, will be restarted"); its exit starts the new one.
    fn kill_for_new_definition(&mut self, kill: ContainerToKill) {
        let slot = &self.slots[kill.slot];
        let Some(run) = slot.current.clone() else {
            return;
        };
        let name = slot.name.clone();
        tracing::info!(pod = %self.key, container = %name, image = ?self.container_spec(&name).and_then(|c| c.image.clone()), "{}", kill.message);
        self.ctx.events.normal(
            &self.key,
            Some(&name),
            "Killing",
            format!("{}, will be restarted", kill.message),
        );
        self.killing.push(kill.container_id);
        if let Some(task) = self.probers.remove(&name) {
            task.abort();
        }
        self.stop_run(&name, &run);
    }

    /// Takes over a pod the previous agent process ran. What it left is
    /// observed (recorded and intended sandbox and runs, bundles, cgroups),
    /// [`recovery::decide`] says what is adopted and what goes, the rest is
    /// removed; then the adopted runs are watched as if this process had
    /// started them, and their exits meanwhile are learned.
    async fn adopt(&mut self, state: PersistedState) {
        // The containers found are the ones its handler's backend started.
        if let Err(e) = self.select_runtime() {
            tracing::warn!(pod = %self.key, "adopting the pod under the default runtime handler: {e}");
        }
        self.start_time = state.start_time;
        for slot in &mut self.slots {
            if let Some(old) = state.slots.iter().find(|s| s.name == slot.name) {
                *slot = old.clone();
            }
        }
        if let Err(e) =
            crate::runtime::shim::write_json_atomic(&self.dir.join("pod.json"), &*self.pod)
        {
            tracing::warn!(pod = %self.key, "writing pod.json: {e}");
        }
        // The node runs the pod as recorded until the recovery says more:
        // it is listed while its leftovers are looked at.
        self.publish();
        let recorded = RecordedPod {
            pod_dir: self.dir.clone(),
            pod_cgroup: self.pod_cgroup.clone(),
            sandbox: state.sandbox.clone(),
            sandbox_intent: state.sandbox_intent.clone(),
            runs: state
                .slots
                .iter()
                .filter_map(|s| Some((s.name.clone(), s.current.clone()?)))
                .collect(),
            intended: state
                .slots
                .iter()
                .filter_map(|s| Some((s.name.clone(), s.creating.clone()?)))
                .collect(),
        };
        let runtime = self.runtime.clone();
        let key = self.key.clone();
        let plan = tokio::task::spawn_blocking(move || {
            let found = runtime.pod_leftovers(&recorded);
            let plan = recovery::decide(&found);
            if !plan.remove.is_empty() {
                tracing::info!(pod = %key, removed = ?plan.remove, "removing what a previous agent process left half made");
            }
            for id in &plan.remove {
                runtime.remove_leftover(&recorded.pod_dir, &recorded.pod_cgroup, id);
            }
            for run in plan.adopt.iter().filter(|r| r.kill) {
                // Containers joined namespaces that are gone: start over, as
                // kubelet does when a sandbox dies.
                runtime.kill_container(&recorded.pod_cgroup, &run.container_id);
            }
            plan
        })
        .await;
        let plan = match plan {
            Ok(plan) => plan,
            Err(e) => {
                // Nothing was removed: keep what is recorded, as before.
                tracing::error!(pod = %self.key, "recovering the pod: {e}");
                recovery::decide(&recovery::Found {
                    sandbox: state.sandbox.as_ref().map(|s| recovery::FoundSandbox {
                        id: s.id.clone(),
                        alive: s.is_alive(),
                    }),
                    runs: state
                        .slots
                        .iter()
                        .filter_map(|s| {
                            let run = s.current.as_ref()?;
                            Some(recovery::FoundRun {
                                slot: s.name.clone(),
                                container_id: run.container_id.clone(),
                                recorded: true,
                                started: Some(run.started.clone()),
                                exited: false,
                            })
                        })
                        .collect(),
                    ..Default::default()
                })
            }
        };
        self.sandbox = state.sandbox.filter(|_| plan.keep_sandbox);
        self.pod_ip = state.pod_ip.filter(|_| self.sandbox.is_some());
        self.sandbox_intent = None;
        for idx in 0..self.slots.len() {
            self.slots[idx].creating = None;
            let Some(adopted) = plan.adopt.iter().find(|a| a.slot == self.slots[idx].name) else {
                self.slots[idx].current = None;
                continue;
            };
            if self.slots[idx]
                .current
                .as_ref()
                .is_some_and(|r| r.container_id == adopted.container_id)
            {
                continue;
            }
            // A run the previous process started but did not record: it is
            // this slot's run now, as if the start had been seen.
            let image_id = self
                .ctx
                .image_manager
                .service()
                .image_status(&self.slots[idx].image)
                .ok()
                .flatten()
                .map(|i| i.id)
                .unwrap_or_default();
            let started = adopted.started.clone().unwrap_or_else(|| ContainerStarted {
                pid: 0,
                shim_pid: 0,
                started_at: Timestamp::now(),
            });
            let run = CurrentRun {
                container_id: adopted.container_id.clone(),
                started,
                image_id,
            };
            tracing::info!(pod = %self.key, container = %self.slots[idx].name, id = %run.container_id, "adopted a container started before the restart");
            self.record_start(idx, run);
        }
        self.persist();
        let running: Vec<(String, CurrentRun)> = self
            .slots
            .iter()
            .filter_map(|s| s.current.clone().map(|r| (s.name.clone(), r)))
            .collect();
        for (name, run) in running {
            self.watch(name.clone(), run.clone());
            if self.sandbox.is_some() {
                self.start_prober(&name, &run);
            }
        }
        // What the previous process wrote into the pod's volumes is not
        // known: they are written once more with the pod as it is now.
        if self.sandbox.is_some() {
            self.volumes_written = Some(DownwardMetadata::default());
            // This process has no token of the pod: it asks for its own
            // before the previous one's expire.
            if !crate::token::pod_token_keys(&self.pod).is_empty() {
                self.tokens_refresh_at = Some(Timestamp::now());
            }
        }
        tracing::info!(pod = %self.key, "adopted pod");
    }

    /// A run has started in slot `idx`: it is the slot's current run, with
    /// the restart count, probe state and events a start brings.
    fn record_start(&mut self, idx: usize, run: CurrentRun) {
        let name = self.slots[idx].name.clone();
        let probes = self.container_spec(&name).cloned();
        let slot = &mut self.slots[idx];
        let is_restart = !slot.terminated.is_empty();
        slot.restart_count += i32::from(is_restart);
        slot.ready = probes
            .as_ref()
            .and_then(|c| c.readiness_probe.as_ref())
            .map(|_| false);
        slot.started = probes.as_ref().is_none_or(|c| c.startup_probe.is_none());
        slot.image_id = Some(run.image_id.clone());
        slot.current = Some(run);
        slot.waiting = None;
        slot.next_start = None;
        slot.creating = None;
        self.ctx.events.normal(
            &self.key,
            Some(&name),
            "Created",
            format!("Created container {name}"),
        );
        self.ctx.events.normal(
            &self.key,
            Some(&name),
            "Started",
            format!("Started container {name}"),
        );
    }

    fn container_spec(&self, name: &str) -> Option<&Container> {
        let spec = spec_of(&self.pod);
        spec.init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .find(|c| c.name == name)
    }

    /// The restart policy that applies to a container of this pod.
    fn restart_policy_for(&self, init: bool) -> String {
        actions::restart_policy_for(spec_of(&self.pod), init).to_string()
    }

    /// kubelet's active deadline handler: the pod fails with
    /// `DeadlineExceeded` and its containers are killed, never restarted.
    async fn fail_for_deadline(&mut self) {
        self.ctx.events.normal(
            &self.key,
            None,
            actions::DEADLINE_REASON,
            actions::DEADLINE_MESSAGE.into(),
        );
        self.fail_pod(
            actions::DEADLINE_REASON,
            actions::DEADLINE_MESSAGE,
            self.grace_period(),
        )
        .await;
    }

    /// The pod fails as a whole with `reason` and `message` (its deadline
    /// ran out, it was evicted): its containers are killed within `grace`
    /// and never restarted.
    async fn fail_pod(&mut self, reason: &str, message: &str, grace: Duration) {
        if self.terminating || self.failure.is_some() {
            return;
        }
        self.failure = Some((reason.into(), message.into()));
        for (_, task) in self.probers.drain() {
            task.abort();
        }
        self.publish();
        self.kill_containers(grace).await;
        for slot in &mut self.slots {
            slot.done = true;
            slot.next_start = None;
            slot.waiting = None;
        }
        self.persist();
    }

    fn grace_period(&self) -> Duration {
        Duration::from_secs(
            spec_of(&self.pod)
                .termination_grace_period_seconds
                .unwrap_or(30)
                .max(0) as u64,
        )
    }

    /// A ConfigMap, Secret or Service changed somewhere: if one this pod
    /// refers to did, its volumes are rewritten and containers waiting for
    /// it try again now.
    async fn on_objects_changed(&mut self) {
        if self.terminating || self.failure.is_some() {
            return;
        }
        let seen = crate::kubeapi::objects::fingerprint(self.ctx.objects(), &self.pod);
        if seen == self.objects_seen {
            return;
        }
        self.objects_seen = seen;
        if self.sandbox.is_some() {
            let _ = self.ensure_api_volumes().await;
        }
        // Containers waiting for these objects try again at once (at the
        // top of the loop).
        let now = Timestamp::now();
        for slot in &mut self.slots {
            let waiting_on_objects = slot.waiting.as_ref().is_some_and(|w| {
                w.reason == "CreateContainerConfigError" || w.reason == "ContainerCreating"
            });
            if slot.current.is_none()
                && !slot.done
                && waiting_on_objects
                && slot.next_start.is_some()
            {
                slot.next_start = Some(now);
            }
        }
    }

    /// Whether every claim the pod mounts is bound to a volume this node
    /// can find; if not, a `FailedMount` Event (once per distinct reason).
    fn claims_bound(&mut self) -> Result<(), String> {
        let has_claims = spec_of(&self.pod)
            .volumes
            .iter()
            .flatten()
            .any(|v| v.persistent_volume_claim.is_some());
        if !has_claims {
            return Ok(());
        }
        match crate::volume::plugins::resolve_claims(&self.pod, self.ctx.objects()) {
            Ok(_) => Ok(()),
            Err(e) => {
                let message = e.to_string();
                if !self.mount_errors.contains(&message) {
                    self.ctx
                        .events
                        .warning(&self.key, None, "FailedMount", message.clone());
                }
                self.mount_errors = vec![message.clone()];
                Err(message)
            }
        }
    }

    /// Writes the pod's configMap, secret, downwardAPI and projected volumes
    /// (again, when their objects changed). A failure is a `FailedMount`
    /// Event, once per distinct error.
    async fn ensure_api_volumes(&mut self) -> Result<(), String> {
        let has_api_volumes = spec_of(&self.pod)
            .volumes
            .iter()
            .flatten()
            .any(|v| crate::volume::projection::plugin_dir(v).is_some());
        if !has_api_volumes {
            return Ok(());
        }
        let (ctx, pod, dir) = (self.ctx.clone(), self.pod.clone(), self.dir.clone());
        // Also after a failure: it is retried when an object changes, not in a loop.
        self.volumes_written = Some(DownwardMetadata::of(&self.pod));
        let tokens = match &self.ctx.tokens {
            Some(manager) if !is_static_pod(&self.pod) => {
                let tokens = manager.pod_tokens(&self.pod).await;
                self.tokens_refresh_at = manager.next_refresh(&self.uid);
                Some(tokens)
            }
            _ => None,
        };
        let (notes, errors) = tokio::task::spawn_blocking(move || {
            let node = crate::pod::downward::NodeAllocatable::of_host(&ctx.root_dir);
            ctx.volumes.setup_api_volumes(
                &pod,
                &dir,
                &crate::volume::projection::ProjectionInputs {
                    pod: &pod,
                    node: &node,
                    objects: ctx.objects(),
                    tokens: tokens.as_ref(),
                },
            )
        })
        .await
        .unwrap_or_else(|e| {
            (
                vec![],
                vec![crate::volume::plugins::VolumeError::SetUp {
                    name: String::new(),
                    message: format!("volume task: {e}"),
                }],
            )
        });
        let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let reports: Vec<String> = messages
            .iter()
            .cloned()
            .chain(
                notes
                    .iter()
                    .map(|n| format!("volume {:?}: {}", n.volume, n.message)),
            )
            .collect();
        for m in reports.iter().filter(|m| !self.mount_errors.contains(m)) {
            self.ctx
                .events
                .warning(&self.key, None, "FailedMount", m.clone());
        }
        self.mount_errors = reports;
        match messages.into_iter().next() {
            Some(first) => Err(first),
            None => Ok(()),
        }
    }

    /// Starts the slots `due` (in order), after the pod's volumes and
    /// sandbox.
    async fn start_due(&mut self, due: Vec<usize>) {
        if self.terminating {
            return;
        }
        if self.ctx.api_objects.is_some() {
            self.objects_seen = crate::kubeapi::objects::fingerprint(self.ctx.objects(), &self.pod);
        }
        // Volumes first, as the kubelet mounts them before the sandbox exists:
        // until they are there the containers wait in ContainerCreating.
        let volumes_ready = match self.claims_bound() {
            Ok(()) => self.ensure_api_volumes().await,
            Err(e) => Err(e),
        };
        if let Err(msg) = volumes_ready {
            for i in due {
                let slot = &mut self.slots[i];
                slot.schedule_after_create_error(
                    "ContainerCreating",
                    msg.clone(),
                    Timestamp::now(),
                );
                if let Some(w) = slot.waiting.as_mut() {
                    w.message = None;
                }
            }
            return;
        }
        if self.stop_requested() {
            return;
        }
        if let Err(msg) = self.ensure_pod_infrastructure().await {
            for i in due {
                let slot = &mut self.slots[i];
                slot.schedule_after_create_error(
                    "CreateContainerError",
                    msg.clone(),
                    Timestamp::now(),
                );
            }
            return;
        }
        for i in due {
            // A pod being deleted does not wait for the rest of its containers.
            if self.stop_requested() {
                return;
            }
            self.start_container(i).await;
        }
    }

    /// The pod cgroup and the sandbox, created once per pod.
    async fn ensure_pod_infrastructure(&mut self) -> Result<(), String> {
        if self
            .sandbox
            .as_ref()
            .is_some_and(|s| self.runtime.pod_sandbox_ready(s))
        {
            return Ok(());
        }
        if let Err(msg) = self.select_runtime() {
            tracing::warn!(pod = %self.key, "choosing the runtime: {msg}");
            self.ctx.events.warning(
                &self.key,
                None,
                "FailedCreatePodSandBox",
                format!("Failed to create pod sandbox: {msg}"),
            );
            return Err(msg);
        }
        let runtime = self.runtime.clone();
        let pod = self.pod.clone();
        let pod_cgroup = self.pod_cgroup.clone();
        let dir = self.dir.clone();
        if !spec_of(&pod).host_network.unwrap_or(false) {
            self.ctx.refresh_pod_cidr().await;
        }
        let key = self.key.clone();
        // The id is on disk before anything carries it: whatever this
        // process is killed in the middle of, the next one finds it.
        let id = container::new_container_id();
        self.sandbox_intent = Some(id.clone());
        self.persist();
        let sandbox_id = id.clone();
        let (ctx, log_dir) = (self.ctx.clone(), self.log_dir());
        let result = tokio::task::spawn_blocking(move || {
            let config =
                super::sandbox_config::sandbox_config(&ctx, &pod, &pod_cgroup, &log_dir, &key)?;
            runtime.run_pod_sandbox(&SandboxRequest {
                config: &config,
                pod_dir: &dir,
                id: &id,
            })
        })
        .await
        .unwrap_or_else(|e| Err(format!("sandbox task: {e}")));
        self.sandbox_intent = None;
        match result {
            Ok((state, pod_ip)) => {
                self.sandbox = Some(state);
                self.pod_ip = pod_ip;
                self.persist();
                Ok(())
            }
            Err(msg) => {
                self.persist();
                tracing::warn!(pod = %self.key, sandbox = %sandbox_id, "creating the sandbox: {msg}");
                self.ctx.events.warning(
                    &self.key,
                    None,
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {msg}"),
                );
                Err(msg)
            }
        }
    }

    async fn start_container(&mut self, idx: usize) {
        let Some(container) = self.container_spec(&self.slots[idx].name).cloned() else {
            return;
        };
        let Some(sandbox) = self.sandbox.clone() else {
            return;
        };
        let slot = &self.slots[idx];
        let is_restart = !slot.terminated.is_empty();
        let restart_count = slot.restart_count + i32::from(is_restart);
        let runtime = self.runtime.clone();
        let pod = self.pod.clone();
        let dir = self.dir.clone();
        let pod_cgroup = self.pod_cgroup.clone();
        let log_dir = self.log_dir();
        let image_ref = container.image.clone().unwrap_or_default();
        if self.slots[idx].image != image_ref {
            // A new definition (an updated image): no back-off of the old one.
            self.slots[idx].image = image_ref.clone();
            self.slots[idx].backoff = None;
        }
        let name = container.name.clone();
        let pod_ip = self.pod_ip.clone();
        // The image first, as the kubelet's EnsureImageExists (it may pull).
        let ctx = self.ctx.clone();
        let image = ctx
            .image_manager
            .ensure_image_exists(&pod, &container, ctx.objects());
        if let Err(failure) = image.await {
            self.image_failed(idx, failure);
            return;
        }
        // The id is on disk before its bundle, cgroup and shim exist: a
        // restarted agent adopts or removes it, and never starts it again.
        let id = container::new_container_id();
        self.slots[idx].creating = Some(id.clone());
        self.persist();

        let outcome = tokio::task::spawn_blocking(move || {
            use super::container_config as cc;
            // The environment after the image, as the kubelet orders it.
            let env = cc::container_environment(&ctx, &pod, &container, pod_ip.as_deref())
                .map_err(CreateError::Config)?;
            // Then its mounts: the pod's /etc/hosts, its volumes made on the
            // node and its subPaths mounted.
            let mut mounts = vec![
                cc::etc_hosts_mount(&ctx, &pod, &dir, pod_ip.as_deref())
                    .map_err(CreateError::Other)?,
            ];
            mounts.extend(
                ctx.volumes
                    .container_mounts(&pod, &dir, &container, &env, ctx.objects())
                    .map_err(|e| CreateError::Config(crate::error_chain(&e)))?,
            );
            let limits =
                cc::container_limits(&ctx, &pod, &container).map_err(CreateError::Config)?;
            let config = cc::container_config(
                &pod,
                &container,
                env,
                mounts,
                &limits,
                restart_count,
                &cc::ContainerNode {
                    seccomp_default: ctx.policy.seccomp_default,
                    memory_bytes: crate::host::memory_total() as i64,
                },
            )
            .map_err(CreateError::Config)?;
            let sandbox_config = super::sandbox_config::sandbox_config_of(
                &ctx,
                &pod,
                &pod_cgroup,
                &log_dir,
                &sandbox,
            )
            .map_err(CreateError::Other)?;
            runtime.create_and_start_container(&ContainerRequest {
                config: &config,
                sandbox_config: &sandbox_config,
                sandbox: &sandbox,
                pod_dir: &dir,
                id: &id,
            })
        })
        .await
        .unwrap_or_else(|e| Err(CreateError::Other(format!("start task: {e}"))));
        self.slots[idx].creating = None;

        let now = Timestamp::now();
        let key = self.key.clone();
        let events = self.ctx.events.clone();
        let policy = self.restart_policy_for(self.slots[idx].init);
        if let Ok((run, None)) = &outcome {
            self.record_start(idx, run.clone());
            self.watch(name.clone(), run.clone());
            if self.run_post_start(&name, run).await {
                self.start_prober(&name, run);
            }
            self.persist();
            return;
        }
        let slot = &mut self.slots[idx];
        match outcome {
            Ok((_, None)) => unreachable!("handled above"),
            Ok((run, Some(exit))) => {
                // The runtime made the container but its process never ran.
                slot.restart_count = restart_count;
                let msg = exit.start_error.clone().unwrap_or_default();
                events.warning(&key, Some(&name), "Failed", format!("Error: {msg}"));
                slot.record_exit(Terminated::from_exit(&run.container_id, &exit, None));
                slot.schedule_after_exit(&policy, now);
            }
            // The runtime lost the image after the image manager saw it.
            Err(CreateError::ImageMissing(msg)) => {
                let reason = match slot.waiting.as_ref().map(|w| w.reason.as_str()) {
                    Some("ErrImagePull") | Some("ImagePullBackOff") => "ImagePullBackOff",
                    _ => "ErrImagePull",
                };
                events.warning(
                    &key,
                    Some(&name),
                    "Failed",
                    format!("Failed to pull image {:?}: {msg}", slot.image),
                );
                slot.schedule_after_create_error(reason, msg, now);
            }
            Err(CreateError::Config(msg)) => {
                events.warning(&key, Some(&name), "Failed", format!("Error: {msg}"));
                slot.schedule_after_create_error("CreateContainerConfigError", msg, now);
            }
            Err(CreateError::Other(msg)) => {
                events.warning(&key, Some(&name), "Failed", format!("Error: {msg}"));
                slot.schedule_after_create_error("CreateContainerError", msg, now);
            }
        }
        self.persist();
    }

    /// The image is not there: waiting as the image manager says, retried
    /// with the container's back-off.
    fn image_failed(&mut self, idx: usize, failure: images::ImagePullFailure) {
        let slot = &mut self.slots[idx];
        self.ctx.events.warning(
            &self.key,
            Some(&slot.name),
            "Failed",
            format!("Error: {}", failure.reason),
        );
        slot.schedule_after_create_error(failure.reason, failure.message, Timestamp::now());
        self.persist();
    }

    /// Notifies the loop when this run's shim exits.
    fn watch(&self, name: String, run: CurrentRun) {
        let tx = self.exits_tx.clone();
        let exited = self.runtime.wait_container(&run);
        tokio::spawn(async move {
            exited.await;
            let _ = tx.send((name, run.container_id));
        });
    }

    async fn on_exit(&mut self, name: &str, id: &str) {
        let Some(idx) = self.slots.iter().position(|s| s.name == name) else {
            return;
        };
        let Some(run) = self.slots[idx].current.clone() else {
            return;
        };
        if run.container_id != id {
            return;
        }
        let (runtime, dir, pod_cgroup) = (
            self.runtime.clone(),
            self.dir.clone(),
            self.pod_cgroup.clone(),
        );
        let policy = self
            .container_spec(name)
            .and_then(|c| c.termination_message_policy.clone())
            .unwrap_or_else(|| "File".into());
        let log_path = logs::container_log_path(
            &self.log_dir(),
            name,
            self.slots[idx].restart_count.max(0) as u32,
        );
        let hook_failure = self.hook_failures.remove(id);
        let terminated = tokio::task::spawn_blocking(move || {
            let terminated = match runtime.container_exit(&dir, &run.container_id) {
                Some(exit) => {
                    let message = crate::pod::termination_message::termination_message(
                        &dir.join("containers")
                            .join(&run.container_id)
                            .join("termination-log"),
                        &log_path,
                        &policy,
                        exit.exit_code,
                    )
                    .or(hook_failure);
                    Terminated::from_exit(&run.container_id, &exit, message)
                }
                None => Terminated::lost(&run.container_id, Some(run.started.started_at)),
            };
            runtime.remove_container(&dir, &pod_cgroup, &run.container_id);
            terminated
        })
        .await
        .unwrap_or_else(|_| Terminated::lost(id, None));

        if let Some(task) = self.probers.remove(name) {
            task.abort();
        }
        let oom = terminated.reason == "OOMKilled";
        tracing::info!(
            pod = %self.key,
            container = name,
            exit_code = terminated.exit_code,
            reason = %terminated.reason,
            "container exited"
        );
        if oom {
            self.ctx.events.warning(
                &self.key,
                Some(name),
                "OOMKilled",
                format!("Container {name} was OOM-killed (memory limit reached), exit code 137"),
            );
        }
        let policy = self.restart_policy_for(self.slots[idx].init);
        let killed_for_new_definition = match self.killing.iter().position(|k| k == id) {
            Some(i) => {
                self.killing.remove(i);
                true
            }
            None => false,
        };
        let slot = &mut self.slots[idx];
        slot.record_exit(terminated);
        if self.failure.is_some() {
            // The pod has failed as a whole: nothing starts again.
            slot.done = true;
            slot.next_start = None;
            slot.waiting = None;
        } else if self.terminating {
        } else if killed_for_new_definition {
            slot.restart_for_new_definition(Timestamp::now());
        } else {
            slot.schedule_after_exit(&policy, Timestamp::now());
            if slot
                .waiting
                .as_ref()
                .is_some_and(|w| w.reason == "CrashLoopBackOff")
            {
                self.ctx.events.warning(
                    &self.key,
                    Some(name),
                    "BackOff",
                    "Back-off restarting failed container".into(),
                );
            }
        }
        self.persist();
    }

    /// SIGTERM, the grace period, SIGKILL; then the sandbox, cgroups and dirs go.
    async fn terminate(&mut self, grace: Option<Duration>) {
        self.terminating = true;
        for (_, task) in self.probers.drain() {
            task.abort();
        }
        self.publish();
        let grace = grace.unwrap_or_else(|| self.grace_period());
        self.kill_containers(grace).await;
        let removal = PodRemoval {
            uid: self.uid.clone(),
            key: self.key.clone(),
            sandbox: self.sandbox.take(),
            pod_cgroup: self.pod_cgroup.clone(),
            pod_dir: self.dir.clone(),
            log_dir: self.log_dir(),
            runs: self
                .slots
                .iter()
                .filter_map(|s| s.current.as_ref())
                .map(|r| r.container_id.clone())
                .collect(),
        };
        self.pod_ip = None;
        let runtime = self.runtime.clone();
        let _ = tokio::task::spawn_blocking(move || runtime.remove_pod_sandbox(removal)).await;
        tracing::info!(pod = %self.key, "pod terminated and cleaned up");
    }

    /// preStop hooks, SIGTERM, the grace period, then SIGKILL for what is left.
    async fn kill_containers(&mut self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        self.run_pre_stop_hooks(deadline).await;

        for slot in &self.slots {
            if let Some(run) = &slot.current {
                self.ctx.events.normal(
                    &self.key,
                    Some(&slot.name),
                    "Killing",
                    format!("Stopping container {}", slot.name),
                );
                self.runtime
                    .signal_container(run, nix::sys::signal::Signal::SIGTERM);
            }
        }
        self.drain_exits_until(deadline).await;
        if self.slots.iter().any(|s| s.current.is_some()) {
            for slot in &self.slots {
                if let Some(run) = &slot.current {
                    self.runtime
                        .kill_container(&self.pod_cgroup, &run.container_id);
                    self.runtime
                        .signal_container(run, nix::sys::signal::Signal::SIGKILL);
                }
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            self.drain_exits_until(deadline).await;
        }
    }

    /// Where lifecycle hooks and probes of a run reach its container
    /// (`None` without a sandbox).
    fn hook_target(&self, run: &CurrentRun) -> Option<ProbeTarget> {
        let sandbox = self.sandbox.as_ref()?;
        Some(ProbeTarget {
            netns: (!sandbox.host_network)
                .then(|| PathBuf::from(format!("/proc/{}/ns/net", sandbox.pid))),
            pod_ip: self.pod_ip.clone(),
            container: ExecTarget {
                pid: run.started.pid,
                bundle: self.dir.join("containers").join(&run.container_id),
            },
        })
    }

    /// Runs the container's `postStart` hook, if it has one, right after the
    /// start (the next container waits, as with the kubelet). A failed hook
    /// kills the run; it restarts by the pod's restart policy. Returns
    /// whether the container may go on.
    async fn run_post_start(&mut self, name: &str, run: &CurrentRun) -> bool {
        let Some(container) = self.container_spec(name).cloned() else {
            return true;
        };
        let Some(hook) = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.clone())
        else {
            return true;
        };
        let Some(target) = self.hook_target(run) else {
            return true;
        };
        let (h, c, runtime) = (hook.clone(), container.clone(), self.runtime.clone());
        let outcome = tokio::task::spawn_blocking(move || {
            prober::probe::run_handler(&h, &c, &target, POST_START_TIMEOUT, runtime.as_ref())
        })
        .await
        .unwrap_or_else(|e| prober::ProbeOutcome::Failure(format!("hook task: {e}")));
        let prober::ProbeOutcome::Failure(error) = outcome else {
            return true;
        };
        let pod = format!(
            "{}_{}({})",
            self.pod.metadata.name.as_deref().unwrap_or_default(),
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
            self.uid
        );
        let detail = if let Some(exec) = &hook.exec {
            format!(
                "Exec lifecycle hook ({}) for Container {name:?} in Pod {pod:?} failed - error: {error}",
                go_command(exec.command.as_deref().unwrap_or_default())
            )
        } else if let Some(http) = &hook.http_get {
            format!(
                "HTTP lifecycle hook ({}) for Container {name:?} in Pod {pod:?} failed - error: {error}",
                http.path.as_deref().unwrap_or("")
            )
        } else {
            format!("lifecycle hook for Container {name:?} in Pod {pod:?} failed - error: {error}")
        };
        tracing::warn!(pod = %self.key, container = name, "{detail}");
        // The kubelet keeps the hook's output out of the Event (it may hold secrets).
        self.ctx.events.warning(
            &self.key,
            Some(name),
            "FailedPostStartHook",
            "PostStartHook failed".into(),
        );
        self.ctx.events.normal(
            &self.key,
            Some(name),
            "Killing",
            "FailedPostStartHook".into(),
        );
        self.hook_failures.insert(run.container_id.clone(), detail);
        self.stop_run(name, run);
        false
    }

    /// Stops one run in the background, as kubelet's `killContainer` does:
    /// its `preStop` hook, SIGTERM, and once the grace period is over
    /// SIGKILL for whatever is left in its cgroup. Its exit then arrives as
    /// any exit does.
    fn stop_run(&self, name: &str, run: &CurrentRun) {
        let grace = self.grace_period();
        let pod_cgroup = self.pod_cgroup.clone();
        let pre_stop = self
            .container_spec(name)
            .and_then(|c| Some((c.lifecycle.as_ref()?.pre_stop.clone()?, c.clone())))
            .zip(self.hook_target(run));
        let (ctx, key, name) = (self.ctx.clone(), self.key.clone(), name.to_string());
        let (runtime, run) = (self.runtime.clone(), run.clone());
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + grace;
            if let Some(((hook, container), target)) = pre_stop {
                let hook_runtime = runtime.clone();
                let hook = tokio::task::spawn_blocking(move || {
                    prober::probe::run_handler(
                        &hook,
                        &container,
                        &target,
                        grace,
                        hook_runtime.as_ref(),
                    )
                });
                if let Ok(Ok(prober::ProbeOutcome::Failure(msg))) =
                    tokio::time::timeout_at(deadline, hook).await
                {
                    pre_stop_failed(&ctx.events, &key, &name, &msg);
                }
            }
            runtime.signal_container(&run, nix::sys::signal::Signal::SIGTERM);
            tokio::time::sleep_until(deadline).await;
            if runtime.container_running(&run) {
                runtime.kill_container(&pod_cgroup, &run.container_id);
            }
        });
    }

    /// Starts probing a container run, if its spec has probes.
    fn start_prober(&mut self, name: &str, run: &CurrentRun) {
        let Some(container) = self.container_spec(name).cloned() else {
            return;
        };
        if container.liveness_probe.is_none()
            && container.readiness_probe.is_none()
            && container.startup_probe.is_none()
        {
            return;
        }
        let Some(target) = self.hook_target(run) else {
            return;
        };
        let task = tokio::spawn(prober::run(
            self.runtime.clone(),
            container,
            run.container_id.clone(),
            target,
            self.probes_tx.clone(),
        ));
        if let Some(old) = self.probers.insert(name.to_string(), task) {
            old.abort();
        }
    }

    /// What a probe reported: readiness, startup, or a failed liveness or
    /// startup probe, which restarts the container as the kubelet does.
    fn on_probe(&mut self, notice: ProbeNotice) {
        let Some(slot) = self.slots.iter_mut().find(|s| s.name == notice.container) else {
            return;
        };
        let Some(run) = slot
            .current
            .clone()
            .filter(|r| r.container_id == notice.container_id)
        else {
            return;
        };
        let name = notice.container.as_str();
        match notice.event {
            ProbeEvent::Unhealthy { kind, message } => self.ctx.events.warning(
                &self.key,
                Some(name),
                "Unhealthy",
                format!("{} probe failed: {message}", kind.as_str()),
            ),
            ProbeEvent::Ready(ready) => slot.ready = Some(ready),
            ProbeEvent::Started => slot.started = true,
            ProbeEvent::Restart { kind } => {
                self.ctx.events.normal(
                    &self.key,
                    Some(name),
                    "Killing",
                    format!(
                        "Container {name} failed {} probe, will be restarted",
                        kind.as_str().to_lowercase()
                    ),
                );
                self.stop_run(name, &run);
            }
        }
    }

    /// Each running container's `preStop` hook, all at once, within the grace
    /// period (the kubelet runs the hook, then sends SIGTERM).
    async fn run_pre_stop_hooks(&self, deadline: tokio::time::Instant) {
        let mut hooks = Vec::new();
        for slot in &self.slots {
            let Some(run) = &slot.current else {
                continue;
            };
            let Some(container) = self.container_spec(&slot.name).cloned() else {
                continue;
            };
            let Some(hook) = container
                .lifecycle
                .as_ref()
                .and_then(|l| l.pre_stop.clone())
            else {
                continue;
            };
            let Some(target) = self.hook_target(run) else {
                continue;
            };
            let timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (events, key, name) =
                (self.ctx.events.clone(), self.key.clone(), slot.name.clone());
            let runtime = self.runtime.clone();
            hooks.push(tokio::task::spawn_blocking(move || {
                let outcome = prober::probe::run_handler(
                    &hook,
                    &container,
                    &target,
                    timeout,
                    runtime.as_ref(),
                );
                if let prober::ProbeOutcome::Failure(msg) = outcome {
                    pre_stop_failed(&events, &key, &name, &msg);
                }
            }));
        }
        for hook in hooks {
            let _ = tokio::time::timeout_at(deadline, hook).await;
        }
    }

    async fn drain_exits_until(&mut self, deadline: tokio::time::Instant) {
        while self.slots.iter().any(|s| s.current.is_some()) {
            match tokio::time::timeout_at(deadline, self.exits_rx.recv()).await {
                Ok(Some((name, id))) => self.on_exit(&name, &id).await,
                _ => break,
            }
        }
    }

    fn log_dir(&self) -> PathBuf {
        logs::pod_log_dir(
            &self.ctx.root_dir,
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
            self.pod.metadata.name.as_deref().unwrap_or_default(),
            &self.uid,
        )
    }

    fn persist(&self) {
        if self.terminating && !self.dir.exists() {
            return;
        }
        let state = PersistedState {
            sandbox: self.sandbox.clone(),
            slots: self.slots.clone(),
            start_time: self.start_time,
            pod_ip: self.pod_ip.clone(),
            sandbox_intent: self.sandbox_intent.clone(),
        };
        if let Err(e) =
            crate::runtime::shim::write_json_atomic(&self.dir.join("worker.json"), &state)
        {
            tracing::warn!(pod = %self.key, "saving worker state: {e}");
        }
    }

    /// Puts the pod's current status where the HTTP API reads it.
    fn publish(&self) {
        let view = PodView {
            pod: &self.pod,
            slots: &self.slots,
            qos: self.qos,
            sandbox_ready: self.sandbox.is_some(),
            pod_ip: self.pod_ip.as_deref(),
            host_ip: self.ctx.host_ip.as_deref(),
            start_time: self.start_time,
            terminating: self.terminating,
            failure: self.failure.as_ref().map(|(r, m)| (r.as_str(), m.as_str())),
        };
        let pod_status = status::compute_pod_status(&view);
        let containers = self
            .slots
            .iter()
            .filter_map(|s| {
                s.current.as_ref().map(|r| ContainerRuntimeInfo {
                    name: s.name.clone(),
                    container_id: r.container_id.clone(),
                    cgroup: self
                        .ctx
                        .cgroups
                        .container_path(&self.pod_cgroup, &r.container_id),
                    started_at: r.started.started_at,
                })
            })
            .collect();
        self.ctx.status.set(
            &self.uid,
            PodEntry {
                pod: self.pod.clone(),
                status: pod_status,
                pod_cgroup: self.pod_cgroup.clone(),
                containers,
                log_dir: self.log_dir(),
                restart_counts: self
                    .slots
                    .iter()
                    .map(|s| (s.name.clone(), s.restart_count))
                    .collect(),
            },
        );
    }
}
