//! What a restarted agent does with what the previous process left of a pod:
//! a pure decision over what was found on disk and in `/proc`.
//!
//! The worker records its intent before it acts (`worker.json`: the sandbox
//! id before the sandbox is made, a container id before its bundle, cgroup
//! and shim are), so after a `kill -9` at any point every sandbox and
//! container a pod may have is named somewhere. This is kubelet's
//! `computePodActions` after a restart, with containerd's rule that an id is
//! started once: a sandbox is kept only if it was recorded as made (its
//! network attached) and still lives; a container that was started is adopted
//! (its exit, if it already came, is learned as usual); everything else that
//! carries an id of the pod is removed, and what needs a new start gets a new id.

use std::collections::BTreeSet;

use crate::runtime::shim::ContainerStarted;

pub use crate::runtime::service::{Found, FoundRun, FoundSandbox};

/// A run that becomes its slot's current run again.
#[derive(Debug, Clone, PartialEq)]
pub struct AdoptedRun {
    pub slot: String,
    pub container_id: String,
    /// From the shim's `state.json`; a start that failed before the process
    /// ran (only `exit.json`) has none, and its exit is read right away.
    pub started: Option<ContainerStarted>,
    /// Kill it: its sandbox (and so its namespaces) is gone, as kubelet
    /// kills a pod's containers when the sandbox died.
    pub kill: bool,
}

/// What to do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Keep the recorded sandbox (it lives and its network is attached).
    pub keep_sandbox: bool,
    pub adopt: Vec<AdoptedRun>,
    /// Ids to remove entirely: processes in their cgroup and their shim,
    /// rootfs mount, cgroup, bundle dir, and a network attachment under the id.
    pub remove: BTreeSet<String>,
}

/// Decides, for everything found of one pod, whether it is adopted or removed.
pub fn decide(found: &Found) -> Plan {
    let keep_sandbox = found.sandbox.as_ref().is_some_and(|s| s.alive);
    let mut adopt: Vec<AdoptedRun> = Vec::new();
    // Recorded runs first: a slot has one current run, and a recorded one
    // wins over an intent the agent may have written for the same slot.
    let mut runs: Vec<&FoundRun> = found.runs.iter().collect();
    runs.sort_by_key(|r| !r.recorded);
    for run in runs {
        if adopt.iter().any(|a| a.slot == run.slot) {
            continue;
        }
        // An intended run counts only if its shim got as far as writing
        // down a start (or a failed start): then that id was started.
        if !run.recorded && run.started.is_none() && !run.exited {
            continue;
        }
        adopt.push(AdoptedRun {
            slot: run.slot.clone(),
            container_id: run.container_id.clone(),
            started: run.started.clone(),
            kill: !keep_sandbox,
        });
    }
    let kept: BTreeSet<&str> = adopt
        .iter()
        .map(|a| a.container_id.as_str())
        .chain(
            found
                .sandbox
                .as_ref()
                .filter(|_| keep_sandbox)
                .map(|s| s.id.as_str()),
        )
        .collect();
    let remove = found
        .on_node
        .iter()
        .cloned()
        .chain(found.sandbox.iter().map(|s| s.id.clone()))
        .chain(found.sandbox_intent.iter().cloned())
        .chain(found.runs.iter().map(|r| r.container_id.clone()))
        .filter(|id| !kept.contains(id.as_str()))
        .collect();
    Plan {
        keep_sandbox,
        adopt,
        remove,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(pid: i32) -> ContainerStarted {
        ContainerStarted {
            pid,
            shim_pid: pid - 1,
            started_at: "2026-01-01T00:00:00Z".parse().unwrap(),
        }
    }

    fn run(slot: &str, id: &str, recorded: bool, s: Option<i32>, exited: bool) -> FoundRun {
        FoundRun {
            slot: slot.into(),
            container_id: id.into(),
            recorded,
            started: s.map(started),
            exited,
        }
    }

    fn ids(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn live_sandbox(id: &str) -> Option<FoundSandbox> {
        Some(FoundSandbox {
            id: id.into(),
            alive: true,
        })
    }

    #[test]
    fn a_fully_recorded_pod_is_adopted_as_it_is() {
        let found = Found {
            sandbox: live_sandbox("sb"),
            runs: vec![run("a", "c1", true, Some(10), false)],
            on_node: ids(&["sb", "c1"]),
            ..Default::default()
        };
        let plan = decide(&found);
        assert!(plan.keep_sandbox);
        assert_eq!(
            plan.adopt,
            vec![AdoptedRun {
                slot: "a".into(),
                container_id: "c1".into(),
                started: Some(started(10)),
                kill: false,
            }]
        );
        assert!(plan.remove.is_empty());
    }

    #[test]
    fn a_sandbox_only_intended_is_removed_even_if_its_process_lives() {
        // Killed between starting the sandbox and recording it: its network
        // may be half attached, so it goes (CNI DEL included) and a new one
        // is made; the pod never ends up with two.
        let found = Found {
            sandbox_intent: Some("sb2".into()),
            on_node: ids(&["sb2"]),
            ..Default::default()
        };
        let plan = decide(&found);
        assert!(!plan.keep_sandbox);
        assert!(plan.adopt.is_empty());
        assert_eq!(plan.remove, ids(&["sb2"]));
    }

    #[test]
    fn an_intent_recorded_before_anything_was_made_is_just_dropped() {
        let found = Found {
            sandbox_intent: Some("sb".into()),
            ..Default::default()
        };
        assert_eq!(decide(&found).remove, ids(&["sb"]));
    }

    #[test]
    fn an_intended_container_whose_shim_started_it_is_adopted_not_started_again() {
        let found = Found {
            sandbox: live_sandbox("sb"),
            runs: vec![run("a", "c1", false, Some(42), false)],
            on_node: ids(&["sb", "c1"]),
            ..Default::default()
        };
        let plan = decide(&found);
        assert_eq!(plan.adopt.len(), 1);
        assert_eq!(plan.adopt[0].container_id, "c1");
        assert_eq!(plan.adopt[0].started, Some(started(42)));
        assert!(plan.remove.is_empty());
    }

    #[test]
    fn an_intended_container_that_failed_to_start_is_adopted_for_its_exit() {
        let found = Found {
            sandbox: live_sandbox("sb"),
            runs: vec![run("a", "c1", false, None, true)],
            on_node: ids(&["sb", "c1"]),
            ..Default::default()
        };
        let plan = decide(&found);
        assert_eq!(plan.adopt[0].started, None);
        assert!(plan.remove.is_empty());
    }

    #[test]
    fn an_intended_container_that_never_ran_is_removed() {
        // Bundle, rootfs and cgroup may exist; no shim wrote anything.
        let found = Found {
            sandbox: live_sandbox("sb"),
            runs: vec![run("a", "c1", false, None, false)],
            on_node: ids(&["sb", "c1"]),
            ..Default::default()
        };
        let plan = decide(&found);
        assert!(plan.adopt.is_empty());
        assert_eq!(plan.remove, ids(&["c1"]));
    }

    #[test]
    fn a_dead_sandbox_goes_and_the_runs_in_its_namespaces_are_killed() {
        let found = Found {
            sandbox: Some(FoundSandbox {
                id: "sb".into(),
                alive: false,
            }),
            runs: vec![
                run("a", "c1", true, Some(10), false),
                run("b", "c2", false, Some(20), false),
            ],
            on_node: ids(&["sb", "c1", "c2"]),
            ..Default::default()
        };
        let plan = decide(&found);
        assert!(!plan.keep_sandbox);
        assert!(plan.adopt.iter().all(|a| a.kill));
        assert_eq!(plan.adopt.len(), 2);
        assert_eq!(plan.remove, ids(&["sb"]));
    }

    #[test]
    fn one_current_run_per_slot_the_recorded_one() {
        let found = Found {
            sandbox: live_sandbox("sb"),
            runs: vec![
                run("a", "c2", false, Some(20), false),
                run("a", "c1", true, Some(10), false),
            ],
            on_node: ids(&["sb", "c1", "c2"]),
            ..Default::default()
        };
        let plan = decide(&found);
        assert_eq!(plan.adopt.len(), 1);
        assert_eq!(plan.adopt[0].container_id, "c1");
        assert_eq!(plan.remove, ids(&["c2"]));
    }

    #[test]
    fn ids_no_record_names_are_removed() {
        // A bundle or cgroup of an older run whose removal was cut short, or
        // the cgroup of a sandbox whose intent was overwritten.
        let found = Found {
            sandbox: live_sandbox("sb"),
            runs: vec![run("a", "c1", true, Some(10), false)],
            on_node: ids(&["sb", "c1", "old-run", "old-sandbox"]),
            ..Default::default()
        };
        assert_eq!(decide(&found).remove, ids(&["old-run", "old-sandbox"]));
    }

    #[test]
    fn a_recorded_run_whose_shim_is_gone_is_still_adopted_for_its_exit() {
        // The container ended while the agent was down: the exit is learned
        // from exit.json (or reported lost), and the restart policy decides.
        let found = Found {
            sandbox: live_sandbox("sb"),
            runs: vec![run("a", "c1", true, Some(10), true)],
            on_node: ids(&["sb", "c1"]),
            ..Default::default()
        };
        let plan = decide(&found);
        assert_eq!(plan.adopt.len(), 1);
        assert!(!plan.adopt[0].kill);
        assert!(plan.remove.is_empty());
    }
}
