//! Pod status as the API reports it, computed from what the pod's worker knows
//! (kubelet's `generateAPIPodStatus`), and the store the HTTP API reads it from.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::cgroups::{CgroupPath, QosClass};
use crate::pod::slot::{ContainerSlot, Terminated};

/// Everything the status is computed from.
pub struct PodView<'a> {
    pub pod: &'a Pod,
    pub slots: &'a [ContainerSlot],
    pub qos: QosClass,
    pub sandbox_ready: bool,
    pub pod_ip: Option<&'a str>,
    pub host_ip: Option<&'a str>,
    pub start_time: Option<Timestamp>,
    pub terminating: bool,
    /// The pod failed as a whole: (reason, message), e.g. `DeadlineExceeded`.
    pub failure: Option<(&'a str, &'a str)>,
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

pub fn terminated_state(t: &Terminated) -> ContainerStateTerminated {
    ContainerStateTerminated {
        container_id: Some(format!("kubelab://{}", t.container_id)),
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()),
        message: t.message.clone().filter(|m| !m.is_empty()),
        started_at: t.started_at.map(time),
        finished_at: Some(time(t.finished_at)),
    }
}

pub fn container_status(slot: &ContainerSlot, terminating: bool) -> ContainerStatus {
    let running = slot.current.as_ref();
    let (state, last_state) = if let Some(run) = running {
        (
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(time(run.started.started_at)),
                }),
                ..Default::default()
            },
            slot.last_terminated(),
        )
    } else if let (Some(w), false) = (&slot.waiting, slot.done || terminating) {
        (
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(w.reason.clone()),
                    message: w.message.clone(),
                }),
                ..Default::default()
            },
            slot.last_terminated(),
        )
    } else if let Some(last) = slot.last_terminated() {
        (
            ContainerState {
                terminated: Some(terminated_state(last)),
                ..Default::default()
            },
            slot.terminated.get(1),
        )
    } else {
        (
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("ContainerCreating".into()),
                    message: None,
                }),
                ..Default::default()
            },
            None,
        )
    };
    let last_state = last_state.map(|t| ContainerState {
        terminated: Some(terminated_state(t)),
        ..Default::default()
    });
    let container_id = running
        .map(|r| r.container_id.clone())
        .or_else(|| slot.last_terminated().map(|t| t.container_id.clone()))
        .map(|id| format!("kubelab://{id}"));
    ContainerStatus {
        name: slot.name.clone(),
        image: slot.image.clone(),
        image_id: slot.image_id.clone().unwrap_or_default(),
        container_id,
        ready: slot.is_ready() && !terminating,
        started: Some(running.is_some() && slot.started),
        restart_count: slot.restart_count,
        state: Some(state),
        last_state: Some(last_state.unwrap_or_default()),
        ..Default::default()
    }
}

pub use kubelab_rules::container_state::state_word;

/// kubelet's `getPhase`: init containers first (a failed one that will not
/// be retried fails the pod; any not yet completed keeps it Pending), then
/// the app containers.
pub fn pod_phase(slots: &[ContainerSlot], restart_policy: &str) -> &'static str {
    let inits: Vec<&ContainerSlot> = slots.iter().filter(|s| s.init).collect();
    if inits.iter().any(|s| s.done && !s.completed()) {
        return "Failed";
    }
    if !inits.iter().all(|s| s.completed()) {
        return "Pending";
    }
    let (mut pending, mut running, mut succeeded, mut failed) = (0, 0, 0, 0);
    for slot in slots.iter().filter(|s| !s.init) {
        if slot.current.is_some() {
            running += 1;
        } else if let Some(last) = slot.last_terminated() {
            if slot.done {
                if last.succeeded() {
                    succeeded += 1;
                } else {
                    failed += 1;
                }
            } else if restart_policy == "Always" || !last.succeeded() {
                // Will be restarted: counts as running, as kubelet counts it.
                running += 1;
            } else {
                succeeded += 1;
            }
        } else {
            pending += 1;
        }
    }
    if pending > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if failed > 0 {
        "Failed"
    } else if succeeded > 0 {
        "Succeeded"
    } else {
        "Pending"
    }
}

fn condition(kind: &str, ok: bool, since: Option<Timestamp>, reason: Option<&str>) -> PodCondition {
    PodCondition {
        type_: kind.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        last_transition_time: since.map(time),
        reason: reason.map(String::from),
        ..Default::default()
    }
}

pub fn compute_pod_status(view: &PodView) -> PodStatus {
    let restart_policy = view
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into());
    let initialized = view.slots.iter().filter(|s| s.init).all(|s| s.completed());
    let statuses: Vec<ContainerStatus> = view
        .slots
        .iter()
        .filter(|s| !s.init)
        .map(|s| {
            let mut st = container_status(s, view.terminating);
            if !initialized && s.current.is_none() && s.terminated.is_empty() {
                st.state = Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("PodInitializing".into()),
                        message: None,
                    }),
                    ..Default::default()
                });
            }
            st
        })
        .collect();
    let init_statuses: Vec<ContainerStatus> = view
        .slots
        .iter()
        .filter(|s| s.init)
        .map(|s| {
            let mut st = container_status(s, view.terminating);
            // An init container is ready once it has completed.
            st.ready = s.completed();
            // A completed init container shows its terminated state, not a wait.
            if s.completed() {
                st.state = Some(ContainerState {
                    terminated: s.last_terminated().map(terminated_state),
                    ..Default::default()
                });
                st.last_state = Some(
                    s.terminated
                        .get(1)
                        .map(|t| ContainerState {
                            terminated: Some(terminated_state(t)),
                            ..Default::default()
                        })
                        .unwrap_or_default(),
                );
            }
            st
        })
        .collect();
    let phase = match view.failure {
        Some(_) => "Failed",
        None => pod_phase(view.slots, &restart_policy),
    };
    let all_ready = !statuses.is_empty() && statuses.iter().all(|s| s.ready);
    let not_ready: Vec<&str> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let completed = phase == "Succeeded" || phase == "Failed";
    let ready_reason = if completed {
        Some("PodCompleted")
    } else if all_ready {
        None
    } else {
        Some("ContainersNotReady")
    };
    let since = view.start_time;
    let mut conditions = vec![
        condition("PodReadyToStartContainers", view.sandbox_ready, since, None),
        condition(
            "Initialized",
            initialized,
            since,
            (!initialized).then_some("ContainersNotInitialized"),
        ),
        condition("Ready", all_ready, since, ready_reason),
        condition("ContainersReady", all_ready, since, ready_reason),
        condition("PodScheduled", true, since, None),
    ];
    if !all_ready && !completed {
        let msg = format!("containers with unready status: [{}]", not_ready.join(" "));
        conditions[2].message = Some(msg.clone());
        conditions[3].message = Some(msg);
    }
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        host_ip: view.host_ip.map(String::from),
        host_ips: view
            .host_ip
            .map(|ip| vec![k8s_openapi::api::core::v1::HostIP { ip: ip.to_string() }]),
        pod_ip: view.pod_ip.map(String::from),
        pod_ips: view.pod_ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
        qos_class: Some(view.qos.as_str().to_string()),
        start_time: view.start_time.map(time),
        reason: view.failure.map(|(r, _)| r.to_string()),
        message: view.failure.map(|(_, m)| m.to_string()),
        ..Default::default()
    }
}

/// Where a running container's resources can be read.
#[derive(Debug, Clone)]
pub struct ContainerRuntimeInfo {
    pub name: String,
    pub container_id: String,
    pub cgroup: CgroupPath,
    pub started_at: Timestamp,
}

/// What the HTTP API shows of one pod.
#[derive(Debug, Clone)]
pub struct PodEntry {
    /// The pod as its worker runs it (shared with the worker; its status is
    /// not kept up to date: `status` is).
    pub pod: Arc<Pod>,
    /// The live status.
    pub status: PodStatus,
    pub pod_cgroup: CgroupPath,
    pub containers: Vec<ContainerRuntimeInfo>,
    /// `<root>/logs/<ns>_<name>_<uid>`.
    pub log_dir: PathBuf,
    /// Restart counts per container, to find current and previous log files.
    pub restart_counts: BTreeMap<String, i32>,
}

impl PodEntry {
    /// The pod with its live status, as the API shows it.
    pub fn with_status(&self) -> Pod {
        Pod {
            status: Some(self.status.clone()),
            ..Pod::clone(&self.pod)
        }
    }
}

/// The agent's view of all its pods, written by pod workers, read by the API.
/// Every write bumps a generation counter that the status manager watches, so
/// it learns of changes without polling.
///
/// A removed pod's last view stays as its *final* status (its containers
/// terminated, with their exit codes) until the status manager has sent it
/// and [`PodStatusStore::forget_finished`] it: the API's watchers see how a
/// pod ended before it is deleted.
#[derive(Clone)]
pub struct PodStatusStore {
    /// Shared entries: a list for the API or the status manager copies
    /// pointers, not pods.
    inner: Arc<RwLock<BTreeMap<String, Arc<PodEntry>>>>,
    finished: Arc<RwLock<std::collections::VecDeque<(String, Pod)>>>,
    changes: Arc<tokio::sync::watch::Sender<u64>>,
}

/// Final statuses kept for pods nobody collects (standalone nodes).
const FINISHED_KEPT: usize = 256;

impl Default for PodStatusStore {
    fn default() -> Self {
        PodStatusStore {
            inner: Default::default(),
            finished: Default::default(),
            changes: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }
}

impl PodStatusStore {
    pub fn set(&self, uid: &str, entry: PodEntry) {
        self.inner
            .write()
            .expect("lock")
            .insert(uid.to_string(), Arc::new(entry));
        self.changes.send_modify(|g| *g += 1);
    }
    pub fn remove(&self, uid: &str) {
        let last = self.inner.write().expect("lock").remove(uid);
        if let Some(entry) = last {
            let mut finished = self.finished.write().expect("lock");
            finished.retain(|(u, _)| u != uid);
            if finished.len() >= FINISHED_KEPT {
                finished.pop_front();
            }
            finished.push_back((uid.to_string(), entry.with_status()));
        }
        self.changes.send_modify(|g| *g += 1);
    }
    /// The last status of a removed pod, until forgotten.
    pub fn finished(&self, uid: &str) -> Option<Pod> {
        self.finished
            .read()
            .expect("lock")
            .iter()
            .find(|(u, _)| u == uid)
            .map(|(_, p)| p.clone())
    }
    pub fn forget_finished(&self, uid: &str) {
        self.finished
            .write()
            .expect("lock")
            .retain(|(u, _)| u != uid);
    }
    /// Wakes up on every later `set` or `remove`.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }
    pub fn list(&self) -> Vec<Arc<PodEntry>> {
        self.inner.read().expect("lock").values().cloned().collect()
    }
    /// The image IDs of every container the node's pods have, running or
    /// exited: what image garbage collection must leave.
    pub fn image_ids_in_use(&self) -> std::collections::BTreeSet<String> {
        let entries = self.inner.read().expect("lock");
        entries
            .values()
            .map(|e| &e.status)
            .flat_map(|s| {
                s.container_statuses
                    .iter()
                    .chain(s.init_container_statuses.iter())
                    .flatten()
            })
            .map(|c| c.image_id.clone())
            .filter(|id| !id.is_empty())
            .collect()
    }

    pub fn find(&self, namespace: &str, name: &str) -> Option<Arc<PodEntry>> {
        self.inner
            .read()
            .expect("lock")
            .values()
            .find(|e| {
                e.pod.metadata.namespace.as_deref() == Some(namespace)
                    && e.pod.metadata.name.as_deref() == Some(name)
            })
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::shim::ContainerExit;

    fn exited(code: i32, oom: bool) -> Terminated {
        Terminated::from_exit(
            "abc",
            &ContainerExit {
                exit_code: code,
                signal: None,
                oom_killed: oom,
                start_error: None,
                started_at: Some(Timestamp::now()),
                finished_at: Timestamp::now(),
            },
            None,
        )
    }

    #[test]
    fn oom_killed_container_in_backoff_shows_last_state() {
        let mut slot = ContainerSlot::new("hog", "busybox");
        slot.record_exit(exited(137, true));
        slot.schedule_after_exit("Always", Timestamp::now());
        slot.record_exit(exited(137, true));
        slot.schedule_after_exit("Always", Timestamp::now());
        slot.restart_count = 1;
        let st = container_status(&slot, false);
        assert_eq!(
            st.state.unwrap().waiting.unwrap().reason.as_deref(),
            Some("CrashLoopBackOff")
        );
        let last = st.last_state.unwrap().terminated.unwrap();
        assert_eq!(last.reason.as_deref(), Some("OOMKilled"));
        assert_eq!(last.exit_code, 137);
        assert_eq!(pod_phase(&[slot], "Always"), "Running");
    }

    #[test]
    fn never_policy_ends_failed() {
        let mut slot = ContainerSlot::new("hog", "busybox");
        slot.record_exit(exited(137, true));
        slot.schedule_after_exit("Never", Timestamp::now());
        let st = container_status(&slot, false);
        let term = st.state.unwrap().terminated.unwrap();
        assert_eq!(term.reason.as_deref(), Some("OOMKilled"));
        assert_eq!(pod_phase(&[slot], "Never"), "Failed");
    }

    #[test]
    fn completed_pod_succeeds() {
        let mut slot = ContainerSlot::new("job", "busybox");
        slot.record_exit(exited(0, false));
        slot.schedule_after_exit("OnFailure", Timestamp::now());
        assert_eq!(pod_phase(&[slot], "OnFailure"), "Succeeded");
        let fresh = ContainerSlot::new("new", "busybox");
        assert_eq!(pod_phase(&[fresh], "Always"), "Pending");
    }
}
