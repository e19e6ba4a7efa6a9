//! The scheduler loop (kube-scheduler's `scheduleOne`): one task owns the
//! cache and the queue, fed by watches of nodes, pods and namespaces
//! (`kube::runtime::watcher`). It pops the most important pending pod,
//! runs the profile's plugins over the cache, assumes the pod on the chosen
//! node and hands the binding to its own task; a pod that fits nowhere
//! may preempt, gets a `FailedScheduling` event and the `PodScheduled=False`
//! condition, and waits in the queue for an event that could help it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{
    Binding, Namespace, Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod,
    ReplicationController, Service,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};

use super::cache::{Cache, is_placed};
use super::config::SchedulerSettings;
use super::events::{PodEvent, Recorder};
use super::framework::{self, Profile};
use super::node_info::PodInfo;
use super::plugins::Plugin;
use super::plugins::volume_binding::{self, VolumeAction};
use super::preemption;
use super::queue::{ClusterEvent, SchedulingQueue};
use super::workload_selectors::SelectorSource;

/// How many bindings may be in flight at once.
const MAX_CONCURRENT_BINDS: usize = 64;
/// How often the unschedulable pool is checked for pods left too long.
const FLUSH_PERIOD: Duration = Duration::from_secs(30);
/// How long PreBind waits for the PV controller to bind a pod's claims
/// (kube-scheduler's `bindTimeoutSeconds`).
const VOLUME_BIND_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs the scheduler: under leader election when the settings ask for it.
pub async fn run(client: kube::Client, settings: SchedulerSettings) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let names: Vec<&str> = settings
        .profiles
        .iter()
        .map(|p| p.scheduler_name.as_str())
        .collect();
    tracing::info!(profiles = ?names, leader_elect = settings.leader_elect, "starting the scheduler");
    if !settings.leader_elect {
        return run_scheduling(client, settings).await;
    }
    let lease = crate::leader_election::LeaderElection {
        lease_name: settings.lease_name.clone(),
        namespace: settings.lease_namespace.clone(),
        identity: crate::leader_election::default_identity(),
        lease_duration: settings.lease_duration,
        renew_deadline: settings.renew_deadline,
        retry_period: settings.retry_period,
    };
    let c = client.clone();
    crate::leader_election::run_as_leader(client, lease, move || {
        run_scheduling(c.clone(), settings.clone())
    })
    .await
}

/// What a binding task reports back.
enum BindOutcome {
    Bound { uid: String },
    Failed { uid: String, gone: bool },
}

/// Whether a pod waits for one of these profiles.
fn wants_scheduling(pod: &Pod, settings: &SchedulerSettings) -> bool {
    let Some(spec) = &pod.spec else { return false };
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    spec.node_name.as_deref().unwrap_or_default().is_empty()
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(phase, Some("Succeeded") | Some("Failed"))
        && spec.scheduling_gates.as_ref().is_none_or(Vec::is_empty)
        && settings
            .profile(
                spec.scheduler_name
                    .as_deref()
                    .unwrap_or("default-scheduler"),
            )
            .is_some()
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn nominated_node(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .nominated_node_name
        .clone()
        .filter(|n| !n.is_empty())
}

struct Scheduler {
    client: kube::Client,
    settings: Arc<SchedulerSettings>,
    cache: Cache,
    queue: SchedulingQueue,
    /// Pending pods nominated to a node by preemption: UID → (node, pod).
    nominated: HashMap<String, (String, PodInfo)>,
    recorder: Recorder,
    binds: Arc<Semaphore>,
    bind_tx: mpsc::UnboundedSender<BindOutcome>,
    rng: fastrand::Rng,
    next_start: usize,
    /// Relist bookkeeping: what a fresh list has shown so far.
    relist_pods: Option<Vec<String>>,
    relist_nodes: Option<Vec<String>>,
    nodes_synced: bool,
    pods_synced: bool,
    claims_synced: bool,
}

/// Every object of a kind, as a relisting watch.
fn watch<K>(client: &kube::Client) -> futures::stream::BoxStream<'static, watcher::Result<Event<K>>>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    watcher::watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .boxed()
}

async fn run_scheduling(
    client: kube::Client,
    settings: Arc<SchedulerSettings>,
) -> anyhow::Result<()> {
    let mut nodes = watch::<Node>(&client);
    let mut pods = watch::<Pod>(&client);
    let mut namespaces = watch::<Namespace>(&client);
    // Selectors for the default topology spreading.
    let mut services = watch::<Service>(&client);
    let mut rcs = watch::<ReplicationController>(&client);
    let mut replica_sets = watch::<ReplicaSet>(&client);
    let mut budgets = watch::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(&client);
    // What VolumeBinding needs.
    let mut claims = watch::<PersistentVolumeClaim>(&client);
    let mut volumes = watch::<PersistentVolume>(&client);
    let mut classes = watch::<StorageClass>(&client);
    let (bind_tx, mut bind_rx) = mpsc::unbounded_channel();
    let mut s = Scheduler {
        recorder: Recorder::spawn(client.clone()),
        queue: SchedulingQueue::new(settings.initial_backoff, settings.max_backoff),
        client,
        settings,
        cache: Cache::default(),
        nominated: HashMap::new(),
        binds: Arc::new(Semaphore::new(MAX_CONCURRENT_BINDS)),
        bind_tx,
        rng: fastrand::Rng::new(),
        next_start: 0,
        relist_pods: None,
        relist_nodes: None,
        nodes_synced: false,
        pods_synced: false,
        claims_synced: false,
    };
    let mut next_flush = Instant::now() + FLUSH_PERIOD;
    loop {
        let ready = s.nodes_synced && s.pods_synced && s.claims_synced && s.queue.active_len() > 0;
        let wake = s
            .queue
            .next_backoff()
            .map_or(next_flush, |t| t.min(next_flush));
        tokio::select! {
            biased;
            Some(e) = nodes.next() => match e {
                Ok(e) => s.on_node(e),
                Err(err) => tracing::warn!("watching nodes: {err}"),
            },
            Some(e) = pods.next() => match e {
                Ok(e) => s.on_pod(e),
                Err(err) => tracing::warn!("watching pods: {err}"),
            },
            Some(e) = namespaces.next() => match e {
                Ok(e) => s.on_namespace(e),
                Err(err) => tracing::warn!("watching namespaces: {err}"),
            },
            Some(e) = services.next() => s.on_workload(e, "services"),
            Some(e) = rcs.next() => s.on_workload(e, "replicationcontrollers"),
            Some(e) = replica_sets.next() => s.on_workload(e, "replicasets"),
            Some(e) = budgets.next() => match e {
                Ok(e) => s.on_budget(e),
                Err(err) => tracing::warn!("watching poddisruptionbudgets: {err}"),
            },
            Some(e) = claims.next() => match e {
                Ok(e) => s.on_claim(e),
                Err(err) => tracing::warn!("watching persistentvolumeclaims: {err}"),
            },
            Some(e) = volumes.next() => match e {
                Ok(e) => s.on_volume(e),
                Err(err) => tracing::warn!("watching persistentvolumes: {err}"),
            },
            Some(e) = classes.next() => match e {
                Ok(e) => s.on_class(e),
                Err(err) => tracing::warn!("watching storageclasses: {err}"),
            },
            Some(out) = bind_rx.recv() => s.on_bind(out),
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if now >= next_flush {
                    next_flush = now + FLUSH_PERIOD;
                }
                s.queue.flush(now);
            }
            _ = std::future::ready(()), if ready => s.schedule_one(),
        }
    }
}

impl Scheduler {
    fn emit(&mut self, events: impl IntoIterator<Item = ClusterEvent>) {
        let now = Instant::now();
        for e in events {
            self.queue.on_event(e, now);
        }
    }

    fn on_node(&mut self, e: Event<Node>) {
        match e {
            Event::Init => self.relist_nodes = Some(Vec::new()),
            Event::InitApply(n) => {
                if let Some(seen) = self.relist_nodes.as_mut() {
                    seen.push(n.metadata.name.clone().unwrap_or_default());
                }
                let ev = self.cache.upsert_node(Arc::new(n));
                self.emit(ev);
            }
            Event::InitDone => {
                if let Some(seen) = self.relist_nodes.take() {
                    for name in self.cache.node_names() {
                        if !seen.contains(&name) {
                            self.cache.remove_node(&name);
                        }
                    }
                }
                self.nodes_synced = true;
            }
            Event::Apply(n) => {
                let ev = self.cache.upsert_node(Arc::new(n));
                self.emit(ev);
            }
            Event::Delete(n) => self
                .cache
                .remove_node(n.metadata.name.as_deref().unwrap_or_default()),
        }
    }

    fn on_budget(&mut self, e: Event<k8s_openapi::api::policy::v1::PodDisruptionBudget>) {
        let key = |b: &k8s_openapi::api::policy::v1::PodDisruptionBudget| {
            format!(
                "{}/{}",
                b.metadata.namespace.as_deref().unwrap_or_default(),
                b.metadata.name.as_deref().unwrap_or_default()
            )
        };
        match e {
            Event::Init => self.cache.budgets.clear(),
            Event::InitApply(b) | Event::Apply(b) => {
                self.cache.budgets.insert(key(&b), b);
            }
            Event::Delete(b) => {
                self.cache.budgets.remove(&key(&b));
            }
            Event::InitDone => {}
        }
    }

    fn on_claim(&mut self, e: Event<PersistentVolumeClaim>) {
        let key = |c: &PersistentVolumeClaim| {
            format!(
                "{}/{}",
                c.metadata.namespace.as_deref().unwrap_or_default(),
                c.metadata.name.as_deref().unwrap_or_default()
            )
        };
        let claims = &mut self.cache.volumes.claims;
        match e {
            Event::Init => claims.clear(),
            Event::InitApply(c) => {
                claims.insert(key(&c), Arc::new(c));
            }
            Event::InitDone => {
                self.claims_synced = true;
                self.emit([ClusterEvent::PvcChange]);
            }
            Event::Apply(c) => {
                claims.insert(key(&c), Arc::new(c));
                self.emit([ClusterEvent::PvcChange]);
            }
            Event::Delete(c) => {
                claims.remove(&key(&c));
            }
        }
    }

    fn on_volume(&mut self, e: Event<PersistentVolume>) {
        let volumes = &mut self.cache.volumes.volumes;
        match e {
            Event::Init => volumes.clear(),
            Event::InitApply(v) => {
                volumes.insert(v.metadata.name.clone().unwrap_or_default(), Arc::new(v));
            }
            Event::InitDone => self.emit([ClusterEvent::PvChange]),
            Event::Apply(v) => {
                volumes.insert(v.metadata.name.clone().unwrap_or_default(), Arc::new(v));
                self.emit([ClusterEvent::PvChange]);
            }
            Event::Delete(v) => {
                volumes.remove(v.metadata.name.as_deref().unwrap_or_default());
            }
        }
    }

    fn on_class(&mut self, e: Event<StorageClass>) {
        let classes = &mut self.cache.volumes.classes;
        match e {
            Event::Init => classes.clear(),
            Event::InitApply(c) => {
                classes.insert(c.metadata.name.clone().unwrap_or_default(), Arc::new(c));
            }
            Event::InitDone => self.emit([ClusterEvent::StorageClassChange]),
            Event::Apply(c) => {
                classes.insert(c.metadata.name.clone().unwrap_or_default(), Arc::new(c));
                self.emit([ClusterEvent::StorageClassChange]);
            }
            Event::Delete(c) => {
                classes.remove(c.metadata.name.as_deref().unwrap_or_default());
            }
        }
    }

    /// VolumeBinding's Reserve: what binds the pod's waiting claims on
    /// the chosen node.
    fn volume_actions(&self, profile: &Profile, pod: &Pod, node: &str) -> Vec<VolumeAction> {
        if !profile.filters.contains(&Plugin::VolumeBinding) {
            return Vec::new();
        }
        let Ok(Some(pre)) = volume_binding::pre_filter(pod, &self.cache.volumes) else {
            return Vec::new();
        };
        self.cache
            .node(node)
            .and_then(|n| volume_binding::find_bindings(&pre, &n.node).ok())
            .unwrap_or_default()
    }

    fn on_namespace(&mut self, e: Event<Namespace>) {
        match e {
            Event::Apply(ns) | Event::InitApply(ns) => {
                let name = ns.metadata.name.clone().unwrap_or_default();
                let labels = ns.metadata.labels.clone().unwrap_or_default();
                if self.cache.namespace_labels.get(&name) != Some(&labels) {
                    self.cache.namespace_labels.insert(name, labels);
                    self.emit([ClusterEvent::NamespaceChange]);
                }
            }
            Event::Delete(ns) => {
                self.cache
                    .namespace_labels
                    .remove(ns.metadata.name.as_deref().unwrap_or_default());
            }
            Event::Init | Event::InitDone => {}
        }
    }

    fn on_workload<K: SelectorSource>(&mut self, e: Result<Event<K>, watcher::Error>, what: &str) {
        let w = &mut self.cache.workloads;
        let e = match e {
            Ok(e) => e,
            Err(err) => return tracing::warn!("watching {what}: {err}"),
        };
        match e {
            Event::Init => K::clear(w),
            Event::InitApply(o) | Event::Apply(o) => o.put(w),
            Event::Delete(o) => o.remove(w),
            Event::InitDone => {}
        }
    }

    fn on_pod(&mut self, e: Event<Pod>) {
        match e {
            Event::Init => self.relist_pods = Some(Vec::new()),
            Event::InitApply(p) => {
                if let Some(seen) = self.relist_pods.as_mut() {
                    seen.push(uid(&p));
                }
                self.apply_pod(p);
            }
            Event::InitDone => {
                if let Some(seen) = self.relist_pods.take() {
                    let seen: std::collections::HashSet<String> = seen.into_iter().collect();
                    for u in self.cache.placed_uids() {
                        if !seen.contains(&u) && !self.cache.is_assumed(&u) {
                            let ev = self.cache.remove_pod(&u);
                            self.emit(ev);
                        }
                    }
                }
                self.pods_synced = true;
            }
            Event::Apply(p) => self.apply_pod(p),
            Event::Delete(p) => {
                let u = uid(&p);
                self.queue.delete(&u);
                self.nominated.remove(&u);
                let ev = self.cache.remove_pod(&u);
                self.emit(ev);
            }
        }
    }

    fn apply_pod(&mut self, pod: Pod) {
        let u = uid(&pod);
        let pod = Arc::new(pod);
        if is_placed(&pod)
            || pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty())
        {
            // Bound (by us or anyone): counted on its node, no longer pending.
            self.queue.done(&u);
            self.nominated.remove(&u);
            let ev = self.cache.upsert_pod(pod);
            self.emit(ev);
            return;
        }
        if self.cache.is_assumed(&u) {
            // Our binding is in flight; this is an older view of the pod.
            return;
        }
        if wants_scheduling(&pod, &self.settings) {
            match nominated_node(&pod) {
                Some(node) => {
                    self.nominated
                        .insert(u.clone(), (node, PodInfo::new(pod.clone())));
                }
                None => {
                    self.nominated.remove(&u);
                }
            }
            if self.queue.contains(&u) {
                self.queue.update(pod, Instant::now());
            } else {
                self.queue.add(pod);
            }
        } else {
            self.queue.delete(&u);
            self.nominated.remove(&u);
        }
    }

    fn on_bind(&mut self, out: BindOutcome) {
        match out {
            BindOutcome::Bound { uid } => self.queue.done(&uid),
            BindOutcome::Failed { uid, gone } => {
                self.cache.forget(&uid);
                if gone {
                    self.queue.done(&uid);
                } else {
                    self.queue.error(&uid, Instant::now());
                }
            }
        }
    }

    /// Nominated pods at least as important as `priority`, by node.
    fn nominated_for(&self, uid: &str, priority: i32) -> HashMap<String, Vec<PodInfo>> {
        let mut m: HashMap<String, Vec<PodInfo>> = HashMap::new();
        for (u, (node, p)) in &self.nominated {
            if u != uid && p.priority >= priority {
                m.entry(node.clone()).or_default().push(p.clone());
            }
        }
        m
    }

    fn schedule_one(&mut self) {
        let now = Instant::now();
        let Some(queued) = self.queue.pop(now) else {
            return;
        };
        let pod = queued.pod.clone();
        let settings = self.settings.clone();
        let scheduler_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or("default-scheduler");
        let Some(profile) = settings.profile(scheduler_name) else {
            self.queue.delete(&uid(&pod));
            return;
        };
        let info = PodInfo::new(pod.clone());
        let u = info.uid.clone();
        let info_priority = info.priority;
        let nominated = self.nominated_for(&u, info.priority);
        let n = self.cache.node_count();

        // A pod nominated by an earlier preemption tries its node first.
        if let Some(node) = nominated_node(&pod)
            && let Some(ni) = self.cache.node(&node)
        {
            let snapshot = self.cache.snapshot();
            let state = framework::prepare(profile, info.clone(), &snapshot, nominated.clone());
            if framework::run_filters(profile, &state, ni, &snapshot).is_ok() {
                self.bind(profile, pod, node);
                return;
            }
        }

        let rng = &mut self.rng;
        let result = framework::schedule_pod(
            profile,
            &self.cache.snapshot(),
            info,
            nominated,
            self.next_start,
            |k| rng.usize(..k),
        );
        match result {
            Ok(placement) => {
                if n > 0 {
                    self.next_start = (self.next_start + placement.evaluated) % n;
                }
                self.bind(profile, pod, placement.node);
            }
            Err(failed) => {
                let mut error = failed.error;
                let mut nominate = None;
                // Without preemption (or when it may not run yet) an earlier
                // nomination stands; when it finds nothing, it goes.
                let mut nomination = Nomination::Keep;
                if profile.preemption && error.num_all_nodes > 0 {
                    let budgets: Vec<_> = self.cache.budgets.values().cloned().collect();
                    match preemption::preempt(
                        profile,
                        &self.cache.snapshot(),
                        &failed.state,
                        &error,
                        &budgets,
                    ) {
                        Ok(c) => {
                            nomination = Nomination::Set(c.node.clone());
                            nominate = Some(c);
                        }
                        Err(no) => {
                            error.post_filter_msg = Some(no.message);
                            if no.clear_nomination {
                                nomination = Nomination::Clear;
                            }
                        }
                    }
                }
                let message = error.message();
                tracing::debug!(pod = %format!("{}/{}", failed.state.pod.namespace, failed.state.pod.name), %message, "unschedulable");
                self.queue
                    .unschedulable(&u, error.rejecting_plugins(), Instant::now());
                match &nominate {
                    Some(c) => {
                        self.nominated
                            .insert(u.clone(), (c.node.clone(), failed.state.pod.clone()));
                        self.withdraw_lower_nominations(&u, info_priority, &c.node);
                    }
                    None if nomination == Nomination::Clear => {
                        self.nominated.remove(&u);
                    }
                    None => {}
                }
                self.recorder.record(PodEvent::new(
                    &pod,
                    &profile.scheduler_name,
                    "Warning",
                    "FailedScheduling",
                    "Scheduling",
                    message.clone(),
                ));
                tokio::spawn(report_unschedulable(
                    self.client.clone(),
                    pod.clone(),
                    message,
                    nomination,
                ));
                if let Some(c) = nominate {
                    tokio::spawn(evict_victims(
                        self.client.clone(),
                        self.recorder.clone(),
                        pod,
                        profile.scheduler_name.clone(),
                        c,
                    ));
                }
            }
        }
    }

    /// Pods of lower priority than the preemptor nominated to the same
    /// node may no longer fit there: their nominations go (as
    /// `prepareCandidate` clears them).
    fn withdraw_lower_nominations(&mut self, preemptor: &str, priority: i32, node: &str) {
        let lower: Vec<String> = self
            .nominated
            .iter()
            .filter(|(u, (n, p))| u.as_str() != preemptor && n == node && p.priority < priority)
            .map(|(u, _)| u.clone())
            .collect();
        for u in lower {
            if let Some((_, p)) = self.nominated.remove(&u) {
                tokio::spawn(clear_nominated_node(self.client.clone(), p.pod));
            }
        }
    }

    /// Assumes the pod on the node and binds it in the background.
    fn bind(&mut self, profile: &Profile, pod: Arc<Pod>, node: String) {
        let u = uid(&pod);
        let volume_actions = self.volume_actions(profile, &pod, &node);
        self.cache.assume(&pod, &node);
        self.nominated.remove(&u);
        let client = self.client.clone();
        let tx = self.bind_tx.clone();
        let recorder = self.recorder.clone();
        let permits = self.binds.clone();
        let reporter = profile.scheduler_name.clone();
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            if let Err(e) = bind_volumes(&client, &node, &volume_actions).await {
                tracing::warn!(pod = %format!("{ns}/{name}"), %node, "binding volumes: {e}");
                recorder.record(PodEvent::new(
                    &pod,
                    &reporter,
                    "Warning",
                    "FailedScheduling",
                    "Scheduling",
                    format!("running PreBind plugin \"VolumeBinding\": binding volumes: {e}"),
                ));
                let _ = tx.send(BindOutcome::Failed {
                    uid: u,
                    gone: false,
                });
                return;
            }
            let binding = Binding {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    uid: pod.metadata.uid.clone(),
                    ..Default::default()
                },
                target: ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Node".into()),
                    name: Some(node.clone()),
                    ..Default::default()
                },
            };
            let pods: Api<Pod> = Api::namespaced(client, &ns);
            let r: Result<serde_json::Value, kube::Error> = pods
                .create_subresource("binding", &name, &PostParams::default(), &binding)
                .await;
            match r {
                Ok(_) => {
                    recorder.record(PodEvent::new(
                        &pod,
                        &reporter,
                        "Normal",
                        "Scheduled",
                        "Binding",
                        format!("Successfully assigned {ns}/{name} to {node}"),
                    ));
                    let _ = tx.send(BindOutcome::Bound { uid: u });
                }
                Err(e) => {
                    let gone = matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 409);
                    tracing::warn!(pod = %format!("{ns}/{name}"), %node, "binding: {e}");
                    if !gone {
                        recorder.record(PodEvent::new(
                            &pod,
                            &reporter,
                            "Warning",
                            "FailedScheduling",
                            "Scheduling",
                            format!("Binding rejected: {e}"),
                        ));
                    }
                    let _ = tx.send(BindOutcome::Failed { uid: u, gone });
                }
            }
        });
    }
}

/// Why VolumeBinding's PreBind failed.
#[derive(Debug, thiserror::Error)]
enum PreBindError {
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("waiting for claim {claim}: {source}")]
    Watch {
        claim: String,
        #[source]
        source: kube::runtime::wait::Error,
    },
    #[error("binding {claim}: timed out waiting for the condition")]
    Timeout { claim: String },
}

/// VolumeBinding's PreBind: pre-binds the chosen volumes, asks the
/// provisioner for the rest on `node`, and waits until the PV controller
/// has bound every one of those claims.
async fn bind_volumes(
    client: &kube::Client,
    node: &str,
    actions: &[VolumeAction],
) -> Result<(), PreBindError> {
    use crate::controllers::persistent_volume_decide::{
        BOUND_BY_CONTROLLER, SELECTED_NODE, claim_ref,
    };
    for action in actions {
        let claim = action.claim();
        let ns = claim.metadata.namespace.clone().unwrap_or_default();
        let claim_name = claim.metadata.name.clone().unwrap_or_default();
        match action {
            VolumeAction::BindVolume {
                volume,
                resource_version,
                claim,
            } => {
                let patch = json!({
                    "metadata": {"resourceVersion": resource_version,
                                 "annotations": {BOUND_BY_CONTROLLER: "yes"}},
                    "spec": {"claimRef": claim_ref(claim)},
                });
                Api::<PersistentVolume>::all(client.clone())
                    .patch(volume, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .map_err(|source| PreBindError::Api {
                        what: format!("binding volume {volume} to claim {ns}/{claim_name}"),
                        source,
                    })?;
            }
            VolumeAction::Provision { .. } => {
                let patch = json!({"metadata": {"annotations": {SELECTED_NODE: node}}});
                Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
                    .patch(&claim_name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .map_err(|source| PreBindError::Api {
                        what: format!("selecting node {node} for claim {ns}/{claim_name}"),
                        source,
                    })?;
            }
        }
    }
    for action in actions {
        let claim = action.claim();
        let ns = claim.metadata.namespace.clone().unwrap_or_default();
        let claim_name = claim.metadata.name.clone().unwrap_or_default();
        let api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
        let bound = kube::runtime::wait::await_condition(
            api,
            &claim_name,
            |c: Option<&PersistentVolumeClaim>| c.is_some_and(volume_binding::fully_bound),
        );
        match tokio::time::timeout(VOLUME_BIND_TIMEOUT, bound).await {
            Ok(Ok(_)) => {}
            Ok(Err(source)) => {
                return Err(PreBindError::Watch {
                    claim: format!("{ns}/{claim_name}"),
                    source,
                });
            }
            Err(_) => {
                return Err(PreBindError::Timeout {
                    claim: format!("{ns}/{claim_name}"),
                });
            }
        }
    }
    Ok(())
}

/// What a failed cycle does to `status.nominatedNodeName`
/// (kube-scheduler's `NominatingInfo`).
#[derive(Debug, Clone, PartialEq)]
enum Nomination {
    Keep,
    Set(String),
    Clear,
}

/// `PodScheduled=False reason=Unschedulable` with the message (unless the
/// pod says so already), and `status.nominatedNodeName` set after
/// preemption or cleared when preemption found no node.
async fn report_unschedulable(
    client: kube::Client,
    pod: Arc<Pod>,
    message: String,
    nomination: Nomination,
) {
    let unchanged = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(message.as_str())
        });
    let nominated_now = nominated_node(&pod);
    let nomination_unchanged = match &nomination {
        Nomination::Keep => true,
        Nomination::Set(n) => nominated_now.as_ref() == Some(n),
        Nomination::Clear => nominated_now.is_none(),
    };
    if unchanged && nomination_unchanged {
        return;
    }
    let mut status = json!({"conditions": [{
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": Time(jiff::Timestamp::now()),
    }]});
    match nomination {
        Nomination::Set(n) if !nomination_unchanged => status["nominatedNodeName"] = n.into(),
        Nomination::Clear if !nomination_unchanged => {
            status["nominatedNodeName"] = serde_json::Value::Null
        }
        _ => {}
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    if let Err(e) = pods
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"status": status})),
        )
        .await
    {
        tracing::debug!(pod = %format!("{ns}/{name}"), "updating the PodScheduled condition: {e}");
    }
}

/// Withdraws a pending pod's `status.nominatedNodeName`.
async fn clear_nominated_node(client: kube::Client, pod: Arc<Pod>) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    if let Err(e) = pods
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"nominatedNodeName": null}})),
        )
        .await
    {
        tracing::debug!(pod = %format!("{ns}/{name}"), "clearing nominatedNodeName: {e}");
    }
}

/// Deletes the victims gracefully, each marked `DisruptionTarget` and
/// told why with a `Preempted` event.
async fn evict_victims(
    client: kube::Client,
    recorder: Recorder,
    preemptor: Arc<Pod>,
    scheduler_name: String,
    c: preemption::Candidate,
) {
    for v in &c.victims {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &v.namespace);
        let condition = json!({"status": {"conditions": [{
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "PreemptionByScheduler",
            "message": format!("{scheduler_name}: preempting to accommodate a higher priority pod"),
            "lastTransitionTime": Time(jiff::Timestamp::now()),
        }]}});
        let _ = pods
            .patch_status(
                &v.name,
                &PatchParams::default(),
                &Patch::Strategic(condition),
            )
            .await;
        match pods.delete(&v.name, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::info!(victim = %format!("{}/{}", v.namespace, v.name), node = %c.node, "preempted");
                recorder.record(PodEvent::new(
                    &v.pod,
                    &scheduler_name,
                    "Normal",
                    "Preempted",
                    "Preempting",
                    format!(
                        "Preempted by pod {} on node {}",
                        preemptor.metadata.uid.as_deref().unwrap_or_default(),
                        c.node
                    ),
                ));
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => tracing::warn!(victim = %v.name, "preempting: {e}"),
        }
    }
}
