//! The pod worker's decisions (kubelet's `computePodActions`): from the pod
//! as its sources want it now and what the worker observes of its containers,
//! what to do next. Pure; the worker carries the actions out.
//!
//! The pod a worker holds changes under it: an API update may change a
//! container's image, `activeDeadlineSeconds`, tolerations, labels and
//! annotations (kube-apiserver refuses any other spec change). A running
//! container whose image differs from the spec is killed and started again
//! with the new one, whatever the restart policy; downward volumes are
//! rewritten when labels or annotations changed.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

use crate::pod::slot::ContainerSlot;

/// The labels and annotations a pod's downward volumes were written with:
/// the only fields they show that an update may change.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DownwardMetadata {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

impl DownwardMetadata {
    pub fn of(pod: &Pod) -> Self {
        DownwardMetadata {
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            annotations: pod.metadata.annotations.clone().unwrap_or_default(),
        }
    }
}

/// What the worker knows of its pod besides the desired spec.
pub struct Observed<'a> {
    /// One per init and app container, init containers first.
    pub slots: &'a [ContainerSlot],
    /// The pod is being stopped: nothing starts any more.
    pub terminating: bool,
    /// The pod failed as a whole (rejected, deadline): nothing starts.
    pub failed: bool,
    /// When the worker first took the pod (`status.startTime`).
    pub start_time: Option<Timestamp>,
    /// The sandbox runs (volumes are mounted in its containers).
    pub sandbox_ready: bool,
    /// What the API-backed volumes were last written with (`None`: never).
    pub volumes_written: Option<&'a DownwardMetadata>,
    /// Runs already being killed for a new definition (container ids).
    pub killing: &'a [String],
    /// When a ServiceAccount token of the pod's projected volumes is to be
    /// requested again ([`crate::token::refresh_due`]), if ever.
    pub tokens_refresh_at: Option<Timestamp>,
}

/// A run to kill because its container's definition changed; it is
/// started again with the new one once it has exited.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerToKill {
    pub slot: usize,
    pub container_id: String,
    /// The kubelet's `Killing` event message.
    pub message: String,
}

#[derive(Debug, Default, PartialEq)]
pub struct PodActions {
    /// `activeDeadlineSeconds` ran out: the pod fails, its containers are
    /// killed and nothing starts again.
    pub deadline_exceeded: bool,
    pub kill: Vec<ContainerToKill>,
    /// Slots to start now, in order.
    pub start: Vec<usize>,
    /// Rewrite the configMap, secret, downwardAPI and projected volumes
    /// (new labels or annotations, a token due for refresh).
    pub refresh_volumes: bool,
    /// When something is due next (a back-off ends, the deadline), if ever.
    pub next_wake: Option<Timestamp>,
}

pub const DEADLINE_REASON: &str = "DeadlineExceeded";
pub const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

fn spec_of(pod: &Pod) -> &PodSpec {
    pod.spec.as_ref().expect("validated pods have a spec")
}

/// The container of the spec that a slot stands for.
pub fn container_of<'a>(spec: &'a PodSpec, slot: &ContainerSlot) -> Option<&'a Container> {
    if slot.init {
        spec.init_containers
            .iter()
            .flatten()
            .find(|c| c.name == slot.name)
    } else {
        spec.containers.iter().find(|c| c.name == slot.name)
    }
}

/// The restart policy that applies to a container: the pod's, except that
/// init containers are retried only on failure (and never under `Never`).
pub fn restart_policy_for(spec: &PodSpec, init: bool) -> &str {
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    if init && policy == "Always" {
        "OnFailure"
    } else {
        policy
    }
}

/// The slots that may start now: the first unfinished init container
/// while any remains, then the app containers.
pub fn startable(slots: &[ContainerSlot]) -> Vec<usize> {
    if let Some(i) = slots.iter().position(|s| s.init && !s.completed()) {
        return if slots[i].done { vec![] } else { vec![i] };
    }
    (0..slots.len()).filter(|&i| !slots[i].init).collect()
}

/// When `activeDeadlineSeconds` (counted from the pod's start) runs out,
/// unless the pod already ended.
pub fn active_deadline(pod: &Pod, observed: &Observed) -> Option<Timestamp> {
    let spec = spec_of(pod);
    let secs = spec.active_deadline_seconds?;
    let policy = restart_policy_for(spec, false);
    if observed.failed
        || matches!(
            crate::status::pod_phase(observed.slots, policy),
            "Succeeded" | "Failed"
        )
    {
        return None;
    }
    Some(observed.start_time? + jiff::SignedDuration::from_secs(secs))
}

/// The image the spec asks of a slot's container (`None`: the container
/// is gone from the spec, which validation forbids).
fn desired_image<'a>(spec: &'a PodSpec, slot: &ContainerSlot) -> Option<&'a str> {
    container_of(spec, slot).map(|c| c.image.as_deref().unwrap_or_default())
}

/// Whether a slot's container asks for another image than its last run had.
pub fn image_changed(spec: &PodSpec, slot: &ContainerSlot) -> bool {
    desired_image(spec, slot).is_some_and(|image| image != slot.image)
}

pub fn compute_actions(pod: &Pod, observed: &Observed, now: Timestamp) -> PodActions {
    let mut actions = PodActions::default();
    if observed.terminating || observed.failed {
        return actions;
    }
    let spec = spec_of(pod);
    if let Some(deadline) = active_deadline(pod, observed) {
        if deadline <= now {
            actions.deadline_exceeded = true;
            return actions;
        }
        actions.next_wake = Some(deadline);
    }
    for (i, slot) in observed.slots.iter().enumerate() {
        let Some(run) = &slot.current else {
            continue;
        };
        if image_changed(spec, slot) && !observed.killing.contains(&run.container_id) {
            actions.kill.push(ContainerToKill {
                slot: i,
                container_id: run.container_id.clone(),
                message: format!("Container {} definition changed", slot.name),
            });
        }
    }
    for i in startable(observed.slots) {
        let slot = &observed.slots[i];
        if slot.current.is_some() || slot.done || slot.creating.is_some() {
            continue;
        }
        // A new image is tried at once: the back-off was the old one's.
        let due = slot
            .next_start
            .map(|t| t <= now || image_changed(spec, slot));
        match due {
            Some(true) => actions.start.push(i),
            Some(false) => {
                let t = slot.next_start.expect("due is Some");
                actions.next_wake = Some(actions.next_wake.map_or(t, |w| w.min(t)));
            }
            None => {}
        }
    }
    let has_api_volumes = spec
        .volumes
        .iter()
        .flatten()
        .any(|v| crate::volume::projection::plugin_dir(v).is_some());
    let metadata_changed = observed
        .volumes_written
        .is_some_and(|written| *written != DownwardMetadata::of(pod));
    // A token is refreshed under the running containers: the projected
    // volume's file changes in place.
    let mut token_due = false;
    if let Some(t) = observed
        .tokens_refresh_at
        .filter(|_| observed.sandbox_ready)
    {
        if t <= now {
            token_due = true;
        } else {
            actions.next_wake = Some(actions.next_wake.map_or(t, |w| w.min(t)));
        }
    }
    actions.refresh_volumes =
        observed.sandbox_ready && has_api_volumes && (metadata_changed || token_due);
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::slot::{CurrentRun, Terminated};
    use crate::runtime::shim::{ContainerExit, ContainerStarted};

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn web_pod(image: &str) -> Pod {
        pod(&format!(
            "metadata: {{name: web, uid: u1, labels: {{app: web}}}}\n\
             spec:\n  containers:\n  - {{name: web, image: {image}}}\n  \
             volumes:\n  - name: info\n    downwardAPI:\n      items:\n      \
             - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}\n"
        ))
    }

    fn running(name: &str, image: &str, id: &str) -> ContainerSlot {
        let mut slot = ContainerSlot::new(name, image);
        slot.current = Some(CurrentRun {
            container_id: id.into(),
            started: ContainerStarted {
                pid: 10,
                shim_pid: 9,
                started_at: Timestamp::now(),
            },
            image_id: "sha256:1".into(),
        });
        slot.next_start = None;
        slot.waiting = None;
        slot
    }

    fn observed<'a>(slots: &'a [ContainerSlot]) -> Observed<'a> {
        Observed {
            slots,
            terminating: false,
            failed: false,
            start_time: Some(Timestamp::now()),
            sandbox_ready: true,
            volumes_written: None,
            killing: &[],
            tokens_refresh_at: None,
        }
    }

    fn exited(slot: &mut ContainerSlot, code: i32, policy: &str, now: Timestamp) {
        slot.record_exit(Terminated::from_exit(
            "c1",
            &ContainerExit {
                exit_code: code,
                signal: None,
                oom_killed: false,
                start_error: None,
                started_at: Some(now - jiff::SignedDuration::from_secs(1)),
                finished_at: now,
            },
            None,
        ));
        slot.schedule_after_exit(policy, now);
    }

    #[test]
    fn a_new_pod_starts_its_containers() {
        let slots = [ContainerSlot::new("web", "busybox")];
        let a = compute_actions(&web_pod("busybox"), &observed(&slots), Timestamp::now());
        assert_eq!(a.start, [0]);
        assert!(a.kill.is_empty());
    }

    #[test]
    fn a_running_container_whose_image_changed_is_killed_once() {
        let slots = [running("web", "busybox:latest", "c1")];
        let o = observed(&slots);
        let a = compute_actions(&web_pod("busybox:v2"), &o, Timestamp::now());
        assert_eq!(
            a.kill,
            [ContainerToKill {
                slot: 0,
                container_id: "c1".into(),
                message: "Container web definition changed".into(),
            }]
        );
        assert!(a.start.is_empty());
        let killing = ["c1".to_string()];
        let o = Observed {
            killing: &killing,
            ..observed(&slots)
        };
        assert!(
            compute_actions(&web_pod("busybox:v2"), &o, Timestamp::now())
                .kill
                .is_empty()
        );
        // The same image: nothing to do.
        let a = compute_actions(
            &web_pod("busybox:latest"),
            &observed(&slots),
            Timestamp::now(),
        );
        assert_eq!(a, PodActions::default());
    }

    #[test]
    fn a_container_in_back_off_starts_at_once_with_a_new_image() {
        let now = Timestamp::now();
        let mut slot = ContainerSlot::new("web", "busybox");
        for _ in 0..3 {
            exited(&mut slot, 1, "Always", now);
        }
        let slots = [slot];
        let old = compute_actions(&web_pod("busybox"), &observed(&slots), now);
        assert!(old.start.is_empty());
        assert_eq!(old.next_wake, slots[0].next_start);
        let new = compute_actions(&web_pod("busybox:v2"), &observed(&slots), now);
        assert_eq!(new.start, [0]);
    }

    #[test]
    fn restart_policy_decides_what_starts_again() {
        let now = Timestamp::now();
        for (policy, code, restarts) in [
            ("Always", 0, true),
            ("Always", 1, true),
            ("OnFailure", 0, false),
            ("OnFailure", 1, true),
            ("Never", 0, false),
            ("Never", 1, false),
        ] {
            let mut slot = ContainerSlot::new("web", "busybox");
            exited(&mut slot, code, policy, now);
            let slots = [slot];
            let mut p = web_pod("busybox");
            p.spec.as_mut().unwrap().restart_policy = Some(policy.into());
            let a = compute_actions(&p, &observed(&slots), now);
            assert_eq!(a.start == [0], restarts, "{policy}, exit {code}");
        }
    }

    #[test]
    fn a_finished_container_under_never_keeps_its_old_image() {
        let now = Timestamp::now();
        let mut slot = ContainerSlot::new("web", "busybox");
        exited(&mut slot, 0, "Never", now);
        let slots = [slot];
        let mut p = web_pod("busybox:v2");
        p.spec.as_mut().unwrap().restart_policy = Some("Never".into());
        assert_eq!(
            compute_actions(&p, &observed(&slots), now),
            PodActions::default()
        );
    }

    #[test]
    fn init_containers_run_one_at_a_time_before_the_app_containers() {
        let p = pod("metadata: {name: p, uid: u}\n\
             spec:\n  initContainers:\n  - {name: a, image: busybox}\n  - {name: b, image: busybox}\n  \
             containers:\n  - {name: web, image: busybox}\n");
        let mut slots = vec![
            ContainerSlot::new_init("a", "busybox"),
            ContainerSlot::new_init("b", "busybox"),
            ContainerSlot::new("web", "busybox"),
        ];
        let now = Timestamp::now();
        assert_eq!(compute_actions(&p, &observed(&slots), now).start, [0]);
        exited(&mut slots[0], 0, "OnFailure", now);
        assert_eq!(compute_actions(&p, &observed(&slots), now).start, [1]);
        // A failed init container is retried (init containers under Always
        // restart on failure only) before anything else.
        exited(
            &mut slots[1],
            1,
            restart_policy_for(p.spec.as_ref().unwrap(), true),
            now,
        );
        assert_eq!(compute_actions(&p, &observed(&slots), now).start, [1]);
        exited(&mut slots[1], 0, "OnFailure", now);
        assert_eq!(compute_actions(&p, &observed(&slots), now).start, [2]);
    }

    #[test]
    fn the_active_deadline_fails_a_running_pod_only() {
        let start = Timestamp::now();
        let mut p = web_pod("busybox");
        p.spec.as_mut().unwrap().active_deadline_seconds = Some(30);
        let slots = [running("web", "busybox", "c1")];
        let o = Observed {
            start_time: Some(start),
            ..observed(&slots)
        };
        let before = compute_actions(&p, &o, start + jiff::SignedDuration::from_secs(29));
        assert!(!before.deadline_exceeded);
        assert_eq!(
            before.next_wake,
            Some(start + jiff::SignedDuration::from_secs(30))
        );
        let after = compute_actions(&p, &o, start + jiff::SignedDuration::from_secs(30));
        assert!(after.deadline_exceeded);
        // An update that shortens the deadline takes effect on the next sync.
        p.spec.as_mut().unwrap().active_deadline_seconds = Some(5);
        assert!(
            compute_actions(&p, &o, start + jiff::SignedDuration::from_secs(6)).deadline_exceeded
        );
        // A pod that succeeded has no deadline any more.
        let mut done = ContainerSlot::new("web", "busybox");
        exited(&mut done, 0, "Never", start);
        let slots = [done];
        p.spec.as_mut().unwrap().restart_policy = Some("Never".into());
        let o = Observed {
            start_time: Some(start),
            ..observed(&slots)
        };
        assert!(
            !compute_actions(&p, &o, start + jiff::SignedDuration::from_secs(60)).deadline_exceeded
        );
    }

    #[test]
    fn downward_volumes_are_rewritten_when_labels_change() {
        let slots = [running("web", "busybox", "c1")];
        let mut p = web_pod("busybox");
        let written = DownwardMetadata::of(&p);
        let o = Observed {
            volumes_written: Some(&written),
            ..observed(&slots)
        };
        assert!(!compute_actions(&p, &o, Timestamp::now()).refresh_volumes);
        p.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("tier".into(), "front".into());
        assert!(compute_actions(&p, &o, Timestamp::now()).refresh_volumes);
        // Not before the volumes were first written (the start does that).
        let o = observed(&slots);
        assert!(!compute_actions(&p, &o, Timestamp::now()).refresh_volumes);
    }

    #[test]
    fn a_terminating_or_failed_pod_does_nothing() {
        let slots = [ContainerSlot::new("web", "busybox")];
        let o = Observed {
            terminating: true,
            ..observed(&slots)
        };
        assert_eq!(
            compute_actions(&web_pod("busybox"), &o, Timestamp::now()),
            PodActions::default()
        );
        let o = Observed {
            failed: true,
            ..observed(&slots)
        };
        assert_eq!(
            compute_actions(&web_pod("busybox"), &o, Timestamp::now()),
            PodActions::default()
        );
    }

    #[test]
    fn projected_volumes_are_rewritten_when_a_token_is_due() {
        let slots = [running("web", "busybox", "c1")];
        let p = web_pod("busybox");
        let written = DownwardMetadata::of(&p);
        let now = Timestamp::now();
        let due = now + jiff::SignedDuration::from_secs(24);
        let o = Observed {
            volumes_written: Some(&written),
            tokens_refresh_at: Some(due),
            ..observed(&slots)
        };
        let before = compute_actions(&p, &o, now);
        assert!(!before.refresh_volumes);
        assert_eq!(before.next_wake, Some(due), "the worker wakes up for it");
        assert!(compute_actions(&p, &o, due).refresh_volumes);
        // Not before the sandbox runs: the start writes the volumes.
        let o = Observed {
            sandbox_ready: false,
            ..o
        };
        let a = compute_actions(&p, &o, due);
        assert!(!a.refresh_volumes);
    }
}
