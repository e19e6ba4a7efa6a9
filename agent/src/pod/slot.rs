//! What the agent knows of one container of a pod across its runs: the run in
//! progress, how the previous runs ended, the restart count and back-off.
//! Pure data and rules; the worker drives it.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::runtime::shim::ContainerExit;

/// kubelet's container restart back-off: 10 s doubling to 5 min.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A run this long resets the back-off (kubelet forgets a back-off entry after
/// twice the maximum without a crash).
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);

/// A finished run, as `containerStatuses[].state.terminated` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Terminated {
    pub container_id: String,
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled`, `StartError`, `ContainerStatusUnknown`.
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
}

impl Terminated {
    pub fn from_exit(container_id: &str, exit: &ContainerExit, message: Option<String>) -> Self {
        let reason = if exit.start_error.is_some() {
            "StartError"
        } else if exit.oom_killed {
            "OOMKilled"
        } else if exit.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        };
        Terminated {
            container_id: container_id.to_string(),
            exit_code: exit.exit_code,
            signal: exit.signal,
            reason: reason.into(),
            message: exit.start_error.clone().or(message),
            started_at: exit.started_at,
            finished_at: exit.finished_at,
        }
    }

    /// A run whose shim vanished without a record (the node lost it).
    pub fn lost(container_id: &str, started_at: Option<Timestamp>) -> Self {
        Terminated {
            container_id: container_id.to_string(),
            exit_code: 137,
            signal: None,
            reason: "ContainerStatusUnknown".into(),
            message: Some("The container could not be located when the pod was terminated".into()),
            started_at,
            finished_at: Timestamp::now(),
        }
    }

    pub fn succeeded(&self) -> bool {
        self.exit_code == 0
    }
}

/// The run in progress: what the runtime started.
pub use crate::runtime::service::CurrentRun;

/// Why a container is not running right now, as `state.waiting` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Waiting {
    pub reason: String,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSlot {
    pub name: String,
    pub restart_count: i32,
    pub current: Option<CurrentRun>,
    /// The last two finished runs, newest first.
    pub terminated: Vec<Terminated>,
    pub waiting: Option<Waiting>,
    /// The delay before the next restart after this one (None: restart at once).
    pub backoff: Option<Duration>,
    /// When the next start is due, if one is scheduled.
    pub next_start: Option<Timestamp>,
    /// The restart policy says this container stays down.
    pub done: bool,
    pub image: String,
    pub image_id: Option<String>,
    /// An init container: runs to completion before the app containers start.
    #[serde(default)]
    pub init: bool,
    /// The readiness probe's verdict for the current run; `None` without a
    /// readiness probe (then running means ready).
    #[serde(default)]
    pub ready: Option<bool>,
    /// The startup probe has succeeded for the current run (or there is none).
    #[serde(default)]
    pub started: bool,
    /// The id of a run being created: recorded before its bundle, cgroup and
    /// shim exist, so a restarted agent finds them (and never starts the id twice).
    #[serde(default)]
    pub creating: Option<String>,
}

impl ContainerSlot {
    pub fn new(name: &str, image: &str) -> Self {
        ContainerSlot {
            init: false,
            ready: None,
            started: false,
            name: name.to_string(),
            restart_count: 0,
            current: None,
            terminated: Vec::new(),
            waiting: Some(Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            }),
            backoff: None,
            next_start: Some(Timestamp::now()),
            done: false,
            image: image.to_string(),
            image_id: None,
            creating: None,
        }
    }

    pub fn last_terminated(&self) -> Option<&Terminated> {
        self.terminated.first()
    }

    pub fn new_init(name: &str, image: &str) -> Self {
        ContainerSlot {
            init: true,
            waiting: Some(Waiting {
                reason: "PodInitializing".into(),
                message: None,
            }),
            ..Self::new(name, image)
        }
    }

    /// An init container that has run to success stays done.
    pub fn completed(&self) -> bool {
        self.current.is_none() && self.last_terminated().is_some_and(|t| t.succeeded())
    }

    /// Running, started, and ready by its readiness probe (if it has one).
    pub fn is_ready(&self) -> bool {
        self.current.is_some() && self.started && self.ready.unwrap_or(true)
    }

    pub fn record_exit(&mut self, t: Terminated) {
        self.current = None;
        self.ready = self.ready.map(|_| false);
        self.started = false;
        self.terminated.insert(0, t);
        self.terminated.truncate(2);
    }

    /// Applies the pod's restart policy to the run that just ended and
    /// schedules the next start with kubelet's back-off.
    pub fn schedule_after_exit(&mut self, restart_policy: &str, now: Timestamp) {
        let Some(last) = self.terminated.first().cloned() else {
            return;
        };
        let restart = match restart_policy {
            "Never" => false,
            "OnFailure" => !last.succeeded(),
            _ => true,
        };
        if !restart {
            self.done = true;
            self.next_start = None;
            self.waiting = None;
            return;
        }
        let ran_for = last
            .started_at
            .map(|s| {
                Duration::from_nanos(last.finished_at.duration_since(s).as_nanos().max(0) as u64)
            })
            .unwrap_or_default();
        if ran_for >= BACKOFF_RESET_AFTER {
            self.backoff = None;
        }
        let delay = self.backoff.unwrap_or(Duration::ZERO);
        self.backoff = Some(match self.backoff {
            None => BACKOFF_INITIAL,
            Some(d) => (d * 2).min(BACKOFF_MAX),
        });
        self.next_start = Some(now + jiff::SignedDuration::try_from(delay).unwrap_or_default());
        self.waiting = Some(if delay.is_zero() {
            Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            }
        } else {
            Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(format!(
                    "back-off {} restarting failed container={}",
                    format_go_duration(delay),
                    self.name
                )),
            }
        });
    }

    /// A run killed because its container's definition changed: it starts
    /// again at once with the new one, whatever the restart policy, and
    /// without the old definition's back-off (kubelet keys its back-off by
    /// the container's hash).
    pub fn restart_for_new_definition(&mut self, now: Timestamp) {
        self.done = false;
        self.backoff = None;
        self.next_start = Some(now);
        self.waiting = Some(Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        });
    }

    /// A failed attempt to create the container (image missing, bad spec):
    /// retried with the same back-off, shown as `reason`.
    pub fn schedule_after_create_error(&mut self, reason: &str, message: String, now: Timestamp) {
        let delay = self.backoff.unwrap_or(Duration::ZERO);
        self.backoff = Some(match self.backoff {
            None => BACKOFF_INITIAL,
            Some(d) => (d * 2).min(BACKOFF_MAX),
        });
        let delay = delay.max(Duration::from_secs(1));
        self.next_start = Some(now + jiff::SignedDuration::try_from(delay).unwrap_or_default());
        self.waiting = Some(Waiting {
            reason: reason.to_string(),
            message: Some(message),
        });
    }
}

/// `5m0s`, `10s`, `40s` as Go prints durations in kubelet messages.
pub fn format_go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32, oom: bool, ran_secs: i64) -> ContainerExit {
        let finished = Timestamp::now();
        ContainerExit {
            exit_code: code,
            signal: None,
            oom_killed: oom,
            start_error: None,
            started_at: Some(finished - jiff::SignedDuration::from_secs(ran_secs)),
            finished_at: finished,
        }
    }

    #[test]
    fn reasons_follow_the_exit() {
        assert_eq!(
            Terminated::from_exit("x", &exit(137, true, 1), None).reason,
            "OOMKilled"
        );
        assert_eq!(
            Terminated::from_exit("x", &exit(0, false, 1), None).reason,
            "Completed"
        );
        assert_eq!(
            Terminated::from_exit("x", &exit(1, false, 1), None).reason,
            "Error"
        );
    }

    #[test]
    fn backoff_restarts_at_once_then_doubles_to_five_minutes() {
        let mut slot = ContainerSlot::new("c", "busybox");
        let now = Timestamp::now();
        let mut delays = Vec::new();
        for _ in 0..8 {
            slot.record_exit(Terminated::from_exit("x", &exit(1, false, 1), None));
            slot.schedule_after_exit("Always", now);
            delays.push(slot.next_start.unwrap().duration_since(now).as_secs());
        }
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(slot.waiting.as_ref().unwrap().reason, "CrashLoopBackOff");
        assert_eq!(
            slot.waiting.as_ref().unwrap().message.as_deref(),
            Some("back-off 5m0s restarting failed container=c")
        );
    }

    #[test]
    fn a_long_run_resets_the_backoff() {
        let mut slot = ContainerSlot::new("c", "busybox");
        let now = Timestamp::now();
        for _ in 0..3 {
            slot.record_exit(Terminated::from_exit("x", &exit(1, false, 1), None));
            slot.schedule_after_exit("Always", now);
        }
        slot.record_exit(Terminated::from_exit("x", &exit(1, false, 601), None));
        slot.schedule_after_exit("Always", now);
        assert_eq!(slot.next_start, Some(now));
    }

    #[test]
    fn restart_policies() {
        let now = Timestamp::now();
        for (policy, code, done) in [
            ("Never", 0, true),
            ("Never", 1, true),
            ("OnFailure", 0, true),
            ("OnFailure", 1, false),
            ("Always", 0, false),
        ] {
            let mut slot = ContainerSlot::new("c", "busybox");
            slot.record_exit(Terminated::from_exit("x", &exit(code, false, 1), None));
            slot.schedule_after_exit(policy, now);
            assert_eq!(slot.done, done, "{policy} exit {code}");
        }
    }

    #[test]
    fn only_two_terminations_are_kept() {
        let mut slot = ContainerSlot::new("c", "busybox");
        for code in [1, 2, 3] {
            slot.record_exit(Terminated::from_exit("x", &exit(code, false, 1), None));
        }
        let codes: Vec<i32> = slot.terminated.iter().map(|t| t.exit_code).collect();
        assert_eq!(codes, [3, 2]);
    }
}
