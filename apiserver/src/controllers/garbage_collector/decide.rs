//! What the collector does with one item (upstream's `attemptToDeleteItem`
//! and `processDeletingDependentsItem`), decided from the item and the live
//! state of its owners: keep it, drop references to owners that are gone or
//! waiting for it, or delete it with the right propagation.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::graph::{Dependent, Uid};
use crate::api::deletion::{FINALIZER_FOREGROUND, FINALIZER_ORPHAN, Propagation};

/// An owner as a live read finds it (`classifyReferences`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    /// Exists with the referenced uid and is not waiting for its dependents.
    Solid,
    /// Gone, or another object (another uid) by that name.
    Dangling,
    /// Being deleted in the foreground: waiting for its dependents to go.
    WaitingForDependents,
    /// Deleted with the `orphan` finalizer: its dependents are let go, even
    /// one the collector first saw after the orphaning (the watches of two
    /// resources are not ordered), so a reference to it never collects.
    Orphaned,
}

/// What happens to an item that has owner references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Keep,
    /// It has a solid owner; the references to these (dangling or waiting)
    /// owners are removed, so a waiting owner is not held up by it.
    RemoveOwnerReferences(Vec<Uid>),
    /// It goes. With `unblock_first`, its references stop blocking their
    /// owners before (a cycle of foreground deletions would wait forever).
    Delete {
        propagation: Propagation,
        unblock_first: bool,
    },
}

/// The item, as far as the decision goes.
#[derive(Debug, Clone, Default)]
pub struct ItemFacts {
    pub finalizers: Vec<String>,
    pub dependents: Vec<Dependent>,
}

pub fn decide(owners: &[(OwnerReference, OwnerState)], item: &ItemFacts) -> Decision {
    let (orphaned, others): (Vec<_>, Vec<_>) = owners
        .iter()
        .cloned()
        .partition(|(_, s)| *s == OwnerState::Orphaned);
    let orphaned: Vec<Uid> = orphaned.into_iter().map(|(r, _)| r.uid).collect();
    // References to orphaning owners go; the others decide.
    match decide_by_others(&others, item) {
        Decision::Keep if !orphaned.is_empty() => Decision::RemoveOwnerReferences(orphaned),
        Decision::RemoveOwnerReferences(mut gone) => {
            gone.extend(orphaned);
            Decision::RemoveOwnerReferences(gone)
        }
        d => d,
    }
}

fn decide_by_others(owners: &[(OwnerReference, OwnerState)], item: &ItemFacts) -> Decision {
    if owners.is_empty() {
        return Decision::Keep;
    }
    let of = |state: OwnerState| -> Vec<Uid> {
        owners
            .iter()
            .filter(|(_, s)| *s == state)
            .map(|(r, _)| r.uid.clone())
            .collect()
    };
    let solid = of(OwnerState::Solid);
    let dangling = of(OwnerState::Dangling);
    let waiting = of(OwnerState::WaitingForDependents);
    if !solid.is_empty() {
        if dangling.is_empty() && waiting.is_empty() {
            return Decision::Keep;
        }
        let mut gone = dangling;
        gone.extend(waiting);
        return Decision::RemoveOwnerReferences(gone);
    }
    if !waiting.is_empty() && !item.dependents.is_empty() {
        // Its owners wait for it, and it has dependents of its own: it is
        // deleted in the foreground too, after its dependents.
        let cycle = item.dependents.iter().any(|d| d.deleting_dependents);
        return Decision::Delete {
            propagation: Propagation::Foreground,
            unblock_first: cycle,
        };
    }
    // No solid owner left: collected, honouring a deletion already asked.
    let has = |f: &str| item.finalizers.iter().any(|x| x == f);
    let propagation = if has(FINALIZER_ORPHAN) {
        Propagation::Orphan
    } else if has(FINALIZER_FOREGROUND) {
        Propagation::Foreground
    } else {
        Propagation::Background
    };
    Decision::Delete {
        propagation,
        unblock_first: false,
    }
}

/// The next step of an owner deleted in the foreground.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForegroundStep {
    /// No dependent blocks it any more: its `foregroundDeletion` finalizer goes.
    RemoveFinalizer,
    /// These blocking dependents are looked at (and deleted) first.
    AttemptDependents(Vec<Uid>),
}

pub fn foreground_step(dependents: &[Dependent]) -> ForegroundStep {
    let blocking: Vec<&Dependent> = dependents.iter().filter(|d| d.blocks_owner).collect();
    if blocking.is_empty() {
        return ForegroundStep::RemoveFinalizer;
    }
    ForegroundStep::AttemptDependents(
        blocking
            .iter()
            .filter(|d| !d.deleting_dependents)
            .map(|d| d.uid.clone())
            .collect(),
    )
}

/// The owner references left after removing those to `owners`.
pub fn without_owners(refs: &[OwnerReference], owners: &[Uid]) -> Vec<OwnerReference> {
    refs.iter()
        .filter(|r| !owners.contains(&r.uid))
        .cloned()
        .collect()
}

/// The owner references with none blocking its owners' deletion.
pub fn unblocked(refs: &[OwnerReference]) -> Vec<OwnerReference> {
    refs.iter()
        .cloned()
        .map(|mut r| {
            if r.block_owner_deletion == Some(true) {
                r.block_owner_deletion = Some(false);
            }
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: format!("rs-{uid}"),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn dep(uid: &str, blocks: bool, deleting_dependents: bool) -> Dependent {
        Dependent {
            uid: uid.into(),
            blocks_owner: blocks,
            deleting_dependents,
        }
    }

    #[test]
    fn an_item_with_a_live_owner_stays_and_lets_go_of_the_others() {
        let item = ItemFacts::default();
        assert_eq!(
            decide(&[(r("a"), OwnerState::Solid)], &item),
            Decision::Keep
        );
        assert_eq!(
            decide(
                &[
                    (r("a"), OwnerState::Solid),
                    (r("b"), OwnerState::Dangling),
                    (r("c"), OwnerState::WaitingForDependents)
                ],
                &item
            ),
            Decision::RemoveOwnerReferences(vec!["b".into(), "c".into()])
        );
        assert_eq!(
            decide(&[], &item),
            Decision::Keep,
            "no owners, nothing to do"
        );
    }

    #[test]
    fn an_item_whose_owners_are_gone_is_collected_in_the_background() {
        let item = ItemFacts::default();
        assert_eq!(
            decide(&[(r("a"), OwnerState::Dangling)], &item),
            Decision::Delete {
                propagation: Propagation::Background,
                unblock_first: false
            }
        );
        // Waiting owners and no dependents: background as well.
        assert_eq!(
            decide(&[(r("a"), OwnerState::WaitingForDependents)], &item),
            Decision::Delete {
                propagation: Propagation::Background,
                unblock_first: false
            }
        );
        // A deletion already asked for is honoured.
        let orphaning = ItemFacts {
            finalizers: vec!["orphan".into()],
            ..Default::default()
        };
        assert_eq!(
            decide(&[(r("a"), OwnerState::Dangling)], &orphaning),
            Decision::Delete {
                propagation: Propagation::Orphan,
                unblock_first: false
            }
        );
    }

    #[test]
    fn references_to_an_orphaning_owner_go_and_never_collect_the_item() {
        let item = ItemFacts::default();
        assert_eq!(
            decide(&[(r("a"), OwnerState::Orphaned)], &item),
            Decision::RemoveOwnerReferences(vec!["a".into()])
        );
        assert_eq!(
            decide(
                &[(r("a"), OwnerState::Orphaned), (r("b"), OwnerState::Solid)],
                &item
            ),
            Decision::RemoveOwnerReferences(vec!["a".into()])
        );
        assert_eq!(
            decide(
                &[
                    (r("a"), OwnerState::Orphaned),
                    (r("b"), OwnerState::Solid),
                    (r("c"), OwnerState::Dangling)
                ],
                &item
            ),
            Decision::RemoveOwnerReferences(vec!["c".into(), "a".into()])
        );
        // Another owner that is gone still collects it.
        assert_eq!(
            decide(
                &[
                    (r("a"), OwnerState::Orphaned),
                    (r("b"), OwnerState::Dangling)
                ],
                &item
            ),
            Decision::Delete {
                propagation: Propagation::Background,
                unblock_first: false
            }
        );
    }

    #[test]
    fn foreground_deletion_cascades_through_owners_with_dependents() {
        let item = ItemFacts {
            dependents: vec![dep("pod", true, false)],
            ..Default::default()
        };
        assert_eq!(
            decide(&[(r("deploy"), OwnerState::WaitingForDependents)], &item),
            Decision::Delete {
                propagation: Propagation::Foreground,
                unblock_first: false
            }
        );
        let cycle = ItemFacts {
            dependents: vec![dep("x", true, true)],
            ..Default::default()
        };
        assert_eq!(
            decide(&[(r("deploy"), OwnerState::WaitingForDependents)], &cycle),
            Decision::Delete {
                propagation: Propagation::Foreground,
                unblock_first: true
            }
        );
    }

    #[test]
    fn a_foreground_owner_waits_only_for_blocking_dependents() {
        assert_eq!(
            foreground_step(&[dep("a", false, false)]),
            ForegroundStep::RemoveFinalizer
        );
        assert_eq!(
            foreground_step(&[
                dep("a", true, false),
                dep("b", true, true),
                dep("c", false, false)
            ]),
            ForegroundStep::AttemptDependents(vec!["a".into()])
        );
        let refs = [r("a"), r("b")];
        assert_eq!(without_owners(&refs, &["a".into()]), [r("b")]);
        assert!(
            unblocked(&refs)
                .iter()
                .all(|r| r.block_owner_deletion == Some(false))
        );
    }
}
