//! The pod manager: turns source snapshots into pod workers. New pods get a
//! worker, changed pods are handed to their worker (kubelet's `UpdatePod`),
//! vanished pods are told to stop, and a pod that replaces another of the
//! same name (an edited manifest) starts only once the old one is gone, as
//! kubelet's pod workers do.
//!
//! Each source (manifest files, the apiserver) sends full snapshots; the
//! manager keeps the latest one per source and diffs their union against what
//! runs. A pod with a `deletionTimestamp` is no longer wanted: it is stopped
//! with its `deletionGracePeriodSeconds`.
//!
//! On start it also reads what the previous agent process left under
//! `<root>/pods`: pods still wanted are adopted; the rest are cleaned up once
//! every source has sent its first snapshot (kubelet's "sources ready").

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::SourceUpdate;
use crate::context::AgentContext;
use crate::pod::worker::{self, PersistedState, PodWorker, WorkerMsg};
use crate::runtime::builtin::BuiltinRuntime;
use crate::runtime::handlers::{self, RuntimeHandlers};
use crate::runtime::runc::{Runc, RuncRuntime};
use crate::runtime::service::RuntimeService;

/// A pod to fail with the given status, as the eviction manager's
/// `killPodFunc` does: phase Failed with `reason` and `message`, its
/// containers stopped within `grace`.
#[derive(Debug, Clone, PartialEq)]
pub struct PodEviction {
    pub reason: String,
    pub message: String,
    pub grace: Duration,
}

/// Hands evictions to the pod manager, which passes them to the pod's worker.
#[derive(Debug, Clone)]
pub struct PodEvictor(mpsc::UnboundedSender<(String, PodEviction)>);

impl PodEvictor {
    /// Evicts the pod of `uid`; `false` when the manager is gone.
    pub fn evict(&self, uid: &str, eviction: PodEviction) -> bool {
        self.0.send((uid.to_owned(), eviction)).is_ok()
    }
}

struct WorkerHandle {
    /// `namespace/name`: one pod of a name at a time.
    full_name: String,
    tx: mpsc::UnboundedSender<WorkerMsg>,
    /// The pod as last handed to the worker.
    pod: Arc<Pod>,
    stopping: bool,
    task: JoinHandle<()>,
}

pub struct PodManager {
    ctx: Arc<AgentContext>,
    /// What the workers run their pods with, by runtime handler.
    handlers: Arc<RuntimeHandlers>,
    workers: HashMap<String, WorkerHandle>,
    /// Pods waiting for an older pod of the same name to finish terminating.
    waiting: Vec<Arc<Pod>>,
    /// What the previous agent process left, until the first snapshot decides.
    leftovers: Option<HashMap<String, (Pod, PersistedState)>>,
    /// Source errors already reported, so a broken file is reported once.
    reported_errors: HashMap<&'static str, HashSet<String>>,
    /// The latest snapshot of each source.
    snapshots: HashMap<&'static str, Vec<Arc<Pod>>>,
    /// Sources whose first snapshot must arrive before leftovers are judged.
    sources: Vec<&'static str>,
    evictions_tx: mpsc::UnboundedSender<(String, PodEviction)>,
    evictions: mpsc::UnboundedReceiver<(String, PodEviction)>,
}

fn full_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

impl PodManager {
    /// Pods run by the built-in runtime or runc, as their runtime handler says.
    pub fn new(ctx: Arc<AgentContext>) -> anyhow::Result<Self> {
        let builtin: Arc<dyn RuntimeService> = Arc::new(BuiltinRuntime::new(ctx.clone()));
        let runc: Arc<dyn RuntimeService> = Arc::new(RuncRuntime::new(
            ctx.clone(),
            Runc {
                binary: ctx.runtime_handlers.runc_binary.clone(),
                root: ctx.root_dir.join("runc"),
            },
        ));
        let handlers = RuntimeHandlers::new(
            &ctx.runtime_handlers.default,
            vec![
                (handlers::BUILTIN.into(), builtin),
                (handlers::RUNC.into(), runc),
            ],
        )
        .map_err(|e| anyhow::anyhow!("--default-runtime-handler: {e}"))?;
        Ok(Self::with_handlers(ctx, handlers))
    }

    /// Pods run by `runtime` (a hollow node's pretends).
    pub fn with_runtime(ctx: Arc<AgentContext>, runtime: Arc<dyn RuntimeService>) -> Self {
        Self::with_handlers(ctx, RuntimeHandlers::single(runtime))
    }

    fn with_handlers(ctx: Arc<AgentContext>, handlers: RuntimeHandlers) -> Self {
        let leftovers = scan_pods_dir(&ctx);
        let (evictions_tx, evictions) = mpsc::unbounded_channel();
        PodManager {
            handlers: Arc::new(handlers),
            ctx,
            workers: HashMap::new(),
            waiting: Vec::new(),
            leftovers: Some(leftovers),
            reported_errors: HashMap::new(),
            snapshots: HashMap::new(),
            sources: vec![crate::config::SOURCE_FILE],
            evictions_tx,
            evictions,
        }
    }

    /// Where the eviction manager sends the pods it evicts.
    pub fn evictor(&self) -> PodEvictor {
        PodEvictor(self.evictions_tx.clone())
    }

    /// The sources this manager merges (default: the manifest files only).
    pub fn with_sources(mut self, sources: &[&'static str]) -> Self {
        self.sources = sources.to_vec();
        self
    }

    pub async fn run(mut self, mut updates: mpsc::Receiver<SourceUpdate>) {
        let mut reap = tokio::time::interval(std::time::Duration::from_millis(200));
        loop {
            tokio::select! {
                update = updates.recv() => match update {
                    Some(update) => self.apply(update),
                    None => break,
                },
                Some((uid, eviction)) = self.evictions.recv() => self.evict(&uid, eviction),
                _ = reap.tick() => self.reap_finished(),
            }
        }
    }

    fn apply(&mut self, update: SourceUpdate) {
        let mut errors_now = HashSet::new();
        let reported = self
            .reported_errors
            .remove(update.source)
            .unwrap_or_default();
        for err in &update.errors {
            let text = err.to_string();
            if !reported.contains(&text) {
                self.ctx.events.warning(
                    &err.file().display().to_string(),
                    None,
                    "FailedToCreatePod",
                    text.clone(),
                );
            }
            errors_now.insert(text);
        }
        self.reported_errors.insert(update.source, errors_now);
        self.snapshots.insert(update.source, update.pods);
        let sources_ready = self.sources.iter().all(|s| self.snapshots.contains_key(s));

        let (wanted, deleting) = merge_snapshots(&self.snapshots);
        let mut leftovers = self.leftovers.take().unwrap_or_default();

        for (uid, handle) in &mut self.workers {
            if !wanted.contains_key(uid) && !handle.stopping {
                handle.stopping = true;
                let grace = deleting.get(uid).copied().flatten();
                let _ = handle.tx.send(WorkerMsg::Stop { grace });
            }
        }
        // Every change of a pod goes to its worker, which decides what it means.
        for (uid, handle) in &mut self.workers {
            if let Some(pod) = wanted.get(uid)
                && !handle.stopping
                && changed(&handle.pod, pod)
            {
                handle.pod = pod.clone();
                let _ = handle.tx.send(WorkerMsg::Update(pod.clone()));
            }
        }
        self.waiting
            .retain(|p| wanted.contains_key(p.metadata.uid.as_deref().unwrap_or_default()));
        for pod in &mut self.waiting {
            if let Some(newer) = wanted.get(pod.metadata.uid.as_deref().unwrap_or_default()) {
                *pod = newer.clone();
            }
        }

        // Pods of the previous agent process that nobody wants any more.
        let unwanted: Vec<String> = leftovers
            .keys()
            .filter(|uid| sources_ready && !wanted.contains_key(*uid))
            .cloned()
            .collect();
        for uid in unwanted {
            let (pod, state) = leftovers.remove(&uid).expect("listed");
            tracing::info!(pod = %full_name(&pod), "cleaning up a pod the agent no longer runs");
            self.spawn(Arc::new(pod), Some(state));
            if let Some(h) = self.workers.get_mut(&uid) {
                h.stopping = true;
                let _ = h.tx.send(WorkerMsg::Stop { grace: None });
            }
        }

        let mut sorted: Vec<(String, Arc<Pod>)> = wanted.into_iter().collect();
        sorted.sort_by(|a, b| full_name(&a.1).cmp(&full_name(&b.1)));
        for (uid, pod) in sorted {
            if self.workers.contains_key(&uid)
                || self
                    .waiting
                    .iter()
                    .any(|p| p.metadata.uid.as_deref() == Some(&uid))
            {
                continue;
            }
            let adopted = leftovers.remove(&uid).map(|(_, state)| state);
            if adopted.is_none() && self.name_in_use(&full_name(&pod)) {
                self.waiting.push(pod);
            } else {
                self.spawn(pod, adopted);
            }
        }
        if !sources_ready {
            self.leftovers = Some(leftovers);
        }
    }

    fn evict(&mut self, uid: &str, eviction: PodEviction) {
        match self.workers.get(uid) {
            Some(h) if !h.stopping => {
                let _ = h.tx.send(WorkerMsg::Evict(eviction));
            }
            _ => tracing::debug!(%uid, "evicting a pod that is no longer running"),
        }
    }

    fn name_in_use(&self, name: &str) -> bool {
        self.workers.values().any(|w| w.full_name == name)
    }

    fn spawn(&mut self, pod: Arc<Pod>, adopted: Option<PersistedState>) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let (tx, rx) = mpsc::unbounded_channel();
        let name = full_name(&pod);
        let worker = PodWorker::new(
            self.ctx.clone(),
            self.handlers.default_runtime(),
            pod.clone(),
        )
        .with_handlers(self.handlers.clone());
        let task = tokio::spawn(worker.run(rx, adopted));
        self.workers.insert(
            uid,
            WorkerHandle {
                full_name: name,
                tx,
                pod,
                stopping: false,
                task,
            },
        );
    }

    /// Forgets workers that have finished, and starts pods that were waiting
    /// for their name to be free.
    fn reap_finished(&mut self) {
        let done: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| w.task.is_finished())
            .map(|(uid, _)| uid.clone())
            .collect();
        if done.is_empty() {
            return;
        }
        for uid in done {
            self.workers.remove(&uid);
        }
        let waiting = std::mem::take(&mut self.waiting);
        for pod in waiting {
            if self.name_in_use(&full_name(&pod)) {
                self.waiting.push(pod);
            } else {
                self.spawn(pod, None);
            }
        }
    }
}

/// Whether a pod changed in what its worker acts on: its spec, labels and
/// annotations (not its status or resourceVersion, which change with every
/// status write).
fn changed(old: &Pod, new: &Pod) -> bool {
    old.spec != new.spec
        || old.metadata.labels != new.metadata.labels
        || old.metadata.annotations != new.metadata.annotations
}

/// The union of all sources' snapshots by UID, and the pods being deleted
/// (`deletionTimestamp` set) with their grace period: those are not wanted.
fn merge_snapshots(
    snapshots: &HashMap<&'static str, Vec<Arc<Pod>>>,
) -> (HashMap<String, Arc<Pod>>, HashMap<String, Option<Duration>>) {
    let mut wanted = HashMap::new();
    let mut deleting = HashMap::new();
    for pod in snapshots.values().flatten() {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .map(|s| Duration::from_secs(s.max(0) as u64));
            deleting.insert(uid, grace);
        } else {
            wanted.insert(uid, pod.clone());
        }
    }
    (wanted, deleting)
}

/// Pods the previous agent process left under `<root>/pods`.
fn scan_pods_dir(ctx: &AgentContext) -> HashMap<String, (Pod, PersistedState)> {
    let mut found = HashMap::new();
    let Ok(entries) = std::fs::read_dir(ctx.pods_dir()) else {
        return found;
    };
    for entry in entries.flatten() {
        let uid = entry.file_name().to_string_lossy().into_owned();
        match worker::load_persisted(&entry.path()) {
            Some(state) => {
                found.insert(uid, state);
            }
            None => {
                tracing::warn!("removing unreadable pod dir {}", entry.path().display());
                crate::runtime::builtin::leftovers::sweep_unreadable_pod(ctx, &entry.path(), &uid);
            }
        }
    }
    // Cgroups and networks of pods whose dir is gone (an agent killed while
    // removing a pod), now that the readable dirs are known.
    crate::runtime::builtin::leftovers::sweep_pods_without_dir(ctx, |uid| found.contains_key(uid));
    found
}
