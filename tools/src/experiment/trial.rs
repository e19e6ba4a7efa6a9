//! Running one experiment pod on a node, the way a user would: its manifest
//! goes into the node's static pod directory, the agent runs it, and its
//! container is read through the agent's API every sample interval until
//! the run is over; then the manifest is removed and the pod is waited out.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::sample::{Observer, Recording, RunEvent, Sample};
use super::workload::{self, CONTAINER, RUN_LABEL};
use crate::client::{ClientError, NodeClient};

/// Set by SIGINT/SIGTERM: the run stops sampling, cleans up and reports what it has.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How long a pod may take to start (an image unpacked for the first time).
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(
        "manifest dir {0}: not a directory (give the agent's --pod-manifest-path with --manifest-dir)"
    )]
    NoManifestDir(PathBuf),
    #[error("writing the manifest {path}: {source}")]
    Manifest {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "pod {name} did not start within {secs} s ({detail}); is the agent at --server watching --manifest-dir?"
    )]
    NotStarted {
        name: String,
        secs: u64,
        detail: String,
    },
    #[error("pod {name} failed to start: {reason}: {message}")]
    StartFailed {
        name: String,
        reason: String,
        message: String,
    },
    #[error("interrupted")]
    Interrupted,
}

/// A node to experiment on: its API and its static pod directory.
pub struct Node {
    pub client: NodeClient,
    pub manifest_dir: PathBuf,
}

/// One pod of one run; its manifest is removed when it is dropped.
pub struct Trial<'a> {
    node: &'a Node,
    file: PathBuf,
    run_id: String,
    /// The pod's name in `/pods` (a static pod's name ends in the node's name).
    pub pod_name: String,
    pub namespace: String,
}

fn find<'p>(pods: &'p [Pod], run_id: &str) -> Option<&'p Pod> {
    pods.iter().find(|p| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(RUN_LABEL))
            .is_some_and(|v| v == run_id)
    })
}

fn status_of(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == CONTAINER)
}

fn sleep_unless_interrupted(d: Duration) -> Result<(), TrialError> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Err(TrialError::Interrupted);
        }
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
    }
    Ok(())
}

impl<'a> Trial<'a> {
    /// Writes the pod's manifest and waits until its container runs.
    pub fn start(node: &'a Node, pod: &Pod) -> Result<Trial<'a>, TrialError> {
        if !node.manifest_dir.is_dir() {
            return Err(TrialError::NoManifestDir(node.manifest_dir.clone()));
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let run_id = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(RUN_LABEL))
            .cloned()
            .unwrap_or_default();
        let file = node
            .manifest_dir
            .join(format!("kubelab-experiment-{name}.yaml"));
        write_atomically(&file, &workload::manifest(pod))?;
        let mut trial = Trial {
            node,
            file,
            run_id,
            pod_name: name.clone(),
            namespace: "default".into(),
        };
        let started = Instant::now();
        let mut detail = "not in /pods".to_string();
        loop {
            if INTERRUPTED.load(Ordering::SeqCst) {
                return Err(TrialError::Interrupted);
            }
            let pods = node.client.pods()?;
            if let Some(p) = find(&pods, &trial.run_id) {
                trial.pod_name = p.metadata.name.clone().unwrap_or_default();
                trial.namespace = p.metadata.namespace.clone().unwrap_or_default();
                let state = status_of(p).and_then(|s| s.state.clone());
                if state.as_ref().is_some_and(|s| s.running.is_some()) {
                    return Ok(trial);
                }
                if let Some(w) = state.as_ref().and_then(|s| s.waiting.as_ref()) {
                    let reason = w.reason.clone().unwrap_or_default();
                    if matches!(
                        reason.as_str(),
                        "ErrImagePull"
                            | "ImagePullBackOff"
                            | "CreateContainerConfigError"
                            | "CreateContainerError"
                    ) {
                        return Err(TrialError::StartFailed {
                            name: trial.pod_name.clone(),
                            reason,
                            message: w.message.clone().unwrap_or_default(),
                        });
                    }
                    detail = format!("waiting: {reason}");
                } else {
                    detail = "pending".into();
                }
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(TrialError::NotStarted {
                    name: trial.pod_name.clone(),
                    secs: START_TIMEOUT.as_secs(),
                    detail,
                });
            }
            sleep_unless_interrupted(Duration::from_millis(100))?;
        }
    }

    /// Samples the container every `interval` for `duration`, or until `done`
    /// says the run has shown what it was for.
    pub fn record(
        &self,
        interval: Duration,
        duration: Duration,
        mut done: impl FnMut(&Observer, &Sample) -> bool,
    ) -> Result<Recording, TrialError> {
        let client = &self.node.client;
        let origin = Instant::now();
        let mut observer = Observer::new(jiff::Timestamp::now());
        let mut recording = Recording::default();
        let mut next = origin;
        loop {
            if INTERRUPTED.load(Ordering::SeqCst) {
                recording.interrupted = true;
                break;
            }
            let before = origin.elapsed().as_secs_f64();
            let summary = client.summary()?;
            let after = origin.elapsed().as_secs_f64();
            let pods = client.pods()?;
            // The counters were read while the request was in flight.
            let t = (before + after) / 2.0;
            let pod_stats = summary
                .pods
                .iter()
                .find(|p| p.pod_ref.name == self.pod_name && p.pod_ref.namespace == self.namespace);
            let stats = pod_stats.and_then(|p| p.containers.iter().find(|c| c.name == CONTAINER));
            let pod_throttling = pod_stats.and_then(|p| p.cpu.throttling.as_ref());
            let status = find(&pods, &self.run_id).and_then(status_of);
            let sample = observer.observe(t, stats, pod_throttling, status);
            let finished = t >= duration.as_secs_f64() || done(&observer, &sample);
            recording.samples.push(sample);
            if finished {
                break;
            }
            next += interval;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                next = now;
            }
        }
        // The pod's events, for what the samples can't time (probe failures, kills).
        let object = format!("{}/{}", self.namespace, self.pod_name);
        recording.events = match client.events() {
            Ok(events) => events
                .into_iter()
                .filter(|e| e.object == object)
                .map(|e| RunEvent {
                    t: observer.since_t0(e.time),
                    reason: e.reason,
                    message: e.message,
                })
                .collect(),
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        recording.starts = observer.starts;
        recording.oom_kills = observer.oom_kills;
        Ok(recording)
    }

    /// Removes the manifest and waits until the pod is gone.
    pub fn finish(self) -> Result<(), TrialError> {
        self.remove_manifest();
        let started = Instant::now();
        while started.elapsed() < STOP_TIMEOUT {
            if find(&self.node.client.pods()?, &self.run_id).is_none() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        tracing::warn!(pod = %self.pod_name, "still on the node {}s after its manifest was removed", STOP_TIMEOUT.as_secs());
        Ok(())
    }

    fn remove_manifest(&self) {
        match std::fs::remove_file(&self.file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                tracing::warn!("removing {}: {e}", self.file.display())
            }
            _ => {}
        }
    }
}

impl Drop for Trial<'_> {
    fn drop(&mut self) {
        self.remove_manifest();
    }
}

/// Write, then rename into place, so the agent never reads half a manifest.
fn write_atomically(path: &Path, text: &str) -> Result<(), TrialError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    let err = |source| TrialError::Manifest {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}
