//! The prober (kubelet's `prober`): liveness, readiness and startup probes of
//! one container run, with the kubelet's timing and thresholds. It only
//! reports; the pod worker decides (restart, readiness).

pub mod probe;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use tokio::sync::mpsc;

use crate::runtime::service::RuntimeService;

pub use probe::{ProbeOutcome, ProbeTarget};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }
}

/// What the prober tells the pod worker about one container run.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeEvent {
    /// One failed probe (kubelet records an `Unhealthy` event for each).
    Unhealthy { kind: ProbeKind, message: String },
    /// The readiness result changed.
    Ready(bool),
    /// The startup probe succeeded (or there is none).
    Started,
    /// Liveness or startup failed `failureThreshold` times in a row.
    Restart { kind: ProbeKind },
}

#[derive(Debug, Clone)]
pub struct ProbeNotice {
    pub container: String,
    pub container_id: String,
    pub event: ProbeEvent,
}

/// Consecutive results against the thresholds, as the kubelet counts them.
#[derive(Debug, Clone)]
pub struct Thresholds {
    success_threshold: i32,
    failure_threshold: i32,
    successes: i32,
    failures: i32,
}

impl Thresholds {
    pub fn new(probe: &Probe) -> Self {
        Thresholds {
            success_threshold: probe.success_threshold.unwrap_or(1).max(1),
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1),
            successes: 0,
            failures: 0,
        }
    }

    /// Feeds one result; returns `Some(true)` when the success threshold is
    /// reached, `Some(false)` when the failure threshold is, else `None`.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes += 1;
            (self.successes == self.success_threshold).then_some(true)
        } else {
            self.successes = 0;
            self.failures += 1;
            (self.failures == self.failure_threshold).then_some(false)
        }
    }
}

fn period(p: &Probe) -> Duration {
    Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64)
}

fn initial_delay(p: &Probe) -> Duration {
    Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64)
}

async fn probe_once(
    runtime: &Arc<dyn RuntimeService>,
    probe: &Probe,
    container: &Arc<Container>,
    target: &Arc<ProbeTarget>,
) -> ProbeOutcome {
    let (p, c, t) = (probe.clone(), container.clone(), target.clone());
    let runtime = runtime.clone();
    tokio::task::spawn_blocking(move || probe::run_probe(&p, &c, &t, runtime.as_ref()))
        .await
        .unwrap_or_else(|e| ProbeOutcome::Failure(format!("probe task: {e}")))
}

/// Probes one container run until the task is aborted (the worker aborts it
/// when the run ends).
pub async fn run(
    runtime: Arc<dyn RuntimeService>,
    container: Container,
    container_id: String,
    target: ProbeTarget,
    tx: mpsc::UnboundedSender<ProbeNotice>,
) {
    let container = Arc::new(container);
    let target = Arc::new(target);
    let send = |event: ProbeEvent| {
        let _ = tx.send(ProbeNotice {
            container: container.name.clone(),
            container_id: container_id.clone(),
            event,
        });
    };

    // Startup holds the other two back until it succeeds.
    if let Some(startup) = container.startup_probe.clone() {
        tokio::time::sleep(initial_delay(&startup)).await;
        let mut counts = Thresholds::new(&startup);
        loop {
            let outcome = probe_once(&runtime, &startup, &container, &target).await;
            let ok = outcome == ProbeOutcome::Success;
            if let ProbeOutcome::Failure(message) = outcome {
                send(ProbeEvent::Unhealthy {
                    kind: ProbeKind::Startup,
                    message,
                });
            }
            match counts.observe(ok) {
                Some(true) => break,
                Some(false) => {
                    send(ProbeEvent::Restart {
                        kind: ProbeKind::Startup,
                    });
                    return;
                }
                None => {}
            }
            tokio::time::sleep(period(&startup)).await;
        }
    }
    send(ProbeEvent::Started);

    let liveness = container.liveness_probe.clone().map(|p| {
        let (runtime, container, target, tx, id) = (
            runtime.clone(),
            container.clone(),
            target.clone(),
            tx.clone(),
            container_id.clone(),
        );
        tokio::spawn(async move {
            tokio::time::sleep(initial_delay(&p)).await;
            let mut counts = Thresholds::new(&p);
            loop {
                let outcome = probe_once(&runtime, &p, &container, &target).await;
                let ok = outcome == ProbeOutcome::Success;
                if let ProbeOutcome::Failure(message) = outcome {
                    let _ = tx.send(ProbeNotice {
                        container: container.name.clone(),
                        container_id: id.clone(),
                        event: ProbeEvent::Unhealthy {
                            kind: ProbeKind::Liveness,
                            message,
                        },
                    });
                }
                if counts.observe(ok) == Some(false) {
                    let _ = tx.send(ProbeNotice {
                        container: container.name.clone(),
                        container_id: id.clone(),
                        event: ProbeEvent::Restart {
                            kind: ProbeKind::Liveness,
                        },
                    });
                    return;
                }
                tokio::time::sleep(period(&p)).await;
            }
        })
    });

    if let Some(p) = container.readiness_probe.clone() {
        tokio::time::sleep(initial_delay(&p)).await;
        let mut counts = Thresholds::new(&p);
        let mut ready = false;
        loop {
            let outcome = probe_once(&runtime, &p, &container, &target).await;
            let ok = outcome == ProbeOutcome::Success;
            if let ProbeOutcome::Failure(message) = outcome {
                send(ProbeEvent::Unhealthy {
                    kind: ProbeKind::Readiness,
                    message,
                });
            }
            if let Some(result) = counts.observe(ok)
                && result != ready
            {
                ready = result;
                send(ProbeEvent::Ready(ready));
            }
            tokio::time::sleep(period(&p)).await;
        }
    }
    if let Some(task) = liveness {
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_count_consecutive_results() {
        let probe = Probe {
            failure_threshold: Some(3),
            success_threshold: Some(2),
            ..Default::default()
        };
        let mut t = Thresholds::new(&probe);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), Some(false));
        let mut t = Thresholds::new(&probe);
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(true), Some(true));
        let defaults = Thresholds::new(&Probe::default());
        assert_eq!(
            (defaults.success_threshold, defaults.failure_threshold),
            (1, 3)
        );
    }
}
