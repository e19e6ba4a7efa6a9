//! The ownership graph (upstream's `GraphBuilder` and its `uidToNode`):
//! every object the collector watches, by uid, with its owner references
//! and the dependents that point at it. Owners named by a reference but not
//! (yet) observed are *virtual* nodes, to be checked against the API.
//!
//! Pure: watch events go in, the work they call for comes out — an item
//! to look at (may it be collected? may a foreground deletion finish?) or an
//! owner whose dependents are to be orphaned.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::api::deletion::{FINALIZER_FOREGROUND, FINALIZER_ORPHAN};

pub type Uid = String;

/// Where an object is: enough to GET or DELETE it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub api_version: String,
    pub kind: String,
    /// The namespace of a namespaced object; for a virtual owner, the
    /// namespace of the dependent that names it (used if its kind is
    /// namespaced).
    pub namespace: Option<String>,
    pub name: String,
    pub uid: Uid,
}

/// What a watch event says about an object.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub identity: Identity,
    pub owners: Vec<OwnerReference>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    pub finalizers: Vec<String>,
}

impl Observed {
    fn deleting_with(&self, finalizer: &str) -> bool {
        self.deleting && self.finalizers.iter().any(|f| f == finalizer)
    }
}

/// Work for the collector's workers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Work {
    /// `attemptToDelete`: decide whether the item goes (it may have lost
    /// its owners), or whether its foreground deletion may finish.
    Delete(Uid),
    /// `attemptToOrphan`: remove the owner's references from its
    /// dependents, then its `orphan` finalizer.
    Orphan(Uid),
}

#[derive(Debug, Clone)]
struct Node {
    identity: Identity,
    owners: Vec<OwnerReference>,
    dependents: BTreeSet<Uid>,
    /// Being deleted in the foreground: waits for blocking dependents.
    deleting_dependents: bool,
    /// Being deleted with the `orphan` finalizer.
    orphaning: bool,
    /// Named by a dependent's reference, not observed by any watch.
    virtual_: bool,
}

/// A dependent as the foreground deletion of its owner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Dependent {
    pub uid: Uid,
    /// Its reference to the owner has `blockOwnerDeletion: true`.
    pub blocks_owner: bool,
    /// It is itself being deleted in the foreground.
    pub deleting_dependents: bool,
}

/// What the workers need to know about an item.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemView {
    pub identity: Identity,
    pub virtual_: bool,
    pub deleting_dependents: bool,
    pub dependents: Vec<Dependent>,
}

#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<Uid, Node>,
    /// Owners confirmed gone (`absentOwnerCache`), so their other
    /// dependents need no GET to know it.
    absent: HashSet<Uid>,
    /// Owners whose dependents were orphaned: a dependent that names one
    /// lets go of it instead of being collected when it is gone.
    orphaned: HashSet<Uid>,
    /// Per watched resource (`group/Kind`), the uids seen since its watch
    /// (re)listed, to drop objects deleted while it was away.
    relisting: BTreeMap<String, HashSet<Uid>>,
}

fn blocks(r: &OwnerReference) -> bool {
    r.block_owner_deletion == Some(true)
}

/// The resource key a relist is tracked under.
pub fn resource_key(api_version: &str, kind: &str) -> String {
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    format!("{group}/{kind}")
}

impl Graph {
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.nodes.contains_key(uid)
    }

    pub fn is_absent(&self, uid: &str) -> bool {
        self.absent.contains(uid)
    }

    pub fn mark_absent(&mut self, uid: &str) {
        self.absent.insert(uid.to_owned());
    }

    pub fn was_orphaned(&self, uid: &str) -> bool {
        self.orphaned.contains(uid)
    }

    pub fn mark_orphaned(&mut self, uid: &str) {
        self.orphaned.insert(uid.to_owned());
    }

    /// An add or update from a watch.
    pub fn observe(&mut self, o: Observed) -> Vec<Work> {
        let uid = o.identity.uid.clone();
        let mut work = Vec::new();
        if let Some(seen) = self
            .relisting
            .get_mut(&resource_key(&o.identity.api_version, &o.identity.kind))
        {
            seen.insert(uid.clone());
        }
        let deleting_dependents = o.deleting_with(FINALIZER_FOREGROUND);
        let orphaning = o.deleting_with(FINALIZER_ORPHAN);
        let previous = self.nodes.get(&uid).cloned();
        let (was_deleting_dependents, was_orphaning, old_owners) = match &previous {
            Some(n) if !n.virtual_ => (n.deleting_dependents, n.orphaning, n.owners.clone()),
            _ => (false, false, Vec::new()),
        };
        let dependents = previous.map(|n| n.dependents).unwrap_or_default();
        // An object seen again is not absent after all (a uid is never reused).
        self.absent.remove(&uid);
        self.nodes.insert(
            uid.clone(),
            Node {
                identity: o.identity.clone(),
                owners: o.owners.clone(),
                dependents,
                deleting_dependents,
                orphaning,
                virtual_: false,
            },
        );

        // References added, removed, or no longer blocking.
        for r in &o.owners {
            if !old_owners.iter().any(|old| old.uid == r.uid) {
                work.extend(self.add_dependent_to_owner(&o.identity, r));
            }
        }
        for old in &old_owners {
            let now = o.owners.iter().find(|r| r.uid == old.uid);
            if now.is_none()
                && let Some(owner) = self.nodes.get_mut(&old.uid)
            {
                owner.dependents.remove(&uid);
            }
            let unblocked = blocks(old) && !now.is_some_and(blocks);
            if unblocked
                && self
                    .nodes
                    .get(&old.uid)
                    .is_some_and(|owner| owner.deleting_dependents)
            {
                work.push(Work::Delete(old.uid.clone()));
            }
        }

        // Transitions: a deletion that starts with a collector's finalizer.
        if orphaning && !was_orphaning {
            work.push(Work::Orphan(uid.clone()));
        }
        if deleting_dependents && !was_deleting_dependents {
            let deps = &self.nodes[&uid].dependents;
            work.extend(deps.iter().map(|d| Work::Delete(d.clone())));
            work.push(Work::Delete(uid.clone()));
        }
        work
    }

    fn add_dependent_to_owner(&mut self, dependent: &Identity, r: &OwnerReference) -> Vec<Work> {
        match self.nodes.get_mut(&r.uid) {
            Some(owner) => {
                owner.dependents.insert(dependent.uid.clone());
                Vec::new()
            }
            None => {
                // Not observed (yet): a virtual node, checked by a worker.
                let mut dependents = BTreeSet::new();
                dependents.insert(dependent.uid.clone());
                self.nodes.insert(
                    r.uid.clone(),
                    Node {
                        identity: Identity {
                            api_version: r.api_version.clone(),
                            kind: r.kind.clone(),
                            namespace: dependent.namespace.clone(),
                            name: r.name.clone(),
                            uid: r.uid.clone(),
                        },
                        owners: Vec::new(),
                        dependents,
                        deleting_dependents: false,
                        orphaning: false,
                        virtual_: true,
                    },
                );
                vec![Work::Delete(r.uid.clone())]
            }
        }
    }

    /// A deletion from a watch, or an object a worker found gone (a
    /// "virtual delete"). Its dependents are looked at (they may be
    /// dangling now), and owners waiting for it in the foreground too.
    pub fn remove(&mut self, uid: &str) -> Vec<Work> {
        let Some(node) = self.nodes.remove(uid) else {
            return Vec::new();
        };
        let mut work = Vec::new();
        if !node.dependents.is_empty() {
            self.absent.insert(uid.to_owned());
        }
        for dep in &node.dependents {
            work.push(Work::Delete(dep.clone()));
        }
        for r in &node.owners {
            if let Some(owner) = self.nodes.get_mut(&r.uid) {
                owner.dependents.remove(uid);
                if owner.deleting_dependents {
                    work.push(Work::Delete(r.uid.clone()));
                }
                // A virtual owner nobody names any more is forgotten.
                if owner.virtual_ && owner.dependents.is_empty() {
                    self.nodes.remove(&r.uid);
                }
            }
        }
        work
    }

    /// A watch of `resource` starts listing again.
    pub fn relist_started(&mut self, resource: &str) {
        self.relisting.insert(resource.to_owned(), HashSet::new());
    }

    /// Its list is complete: objects of that resource not seen in it were
    /// deleted while the watch was away.
    pub fn relist_done(&mut self, resource: &str) -> Vec<Work> {
        let Some(seen) = self.relisting.remove(resource) else {
            return Vec::new();
        };
        let gone: Vec<Uid> = self
            .nodes
            .values()
            .filter(|n| {
                !n.virtual_
                    && resource_key(&n.identity.api_version, &n.identity.kind) == resource
                    && !seen.contains(&n.identity.uid)
            })
            .map(|n| n.identity.uid.clone())
            .collect();
        gone.iter().flat_map(|uid| self.remove(uid)).collect()
    }

    /// The item as a worker sees it.
    pub fn view(&self, uid: &str) -> Option<ItemView> {
        let node = self.nodes.get(uid)?;
        let dependents = node
            .dependents
            .iter()
            .filter_map(|d| self.nodes.get(d))
            .map(|d| Dependent {
                uid: d.identity.uid.clone(),
                blocks_owner: d.owners.iter().any(|r| r.uid == uid && blocks(r)),
                deleting_dependents: d.deleting_dependents,
            })
            .collect();
        Some(ItemView {
            identity: node.identity.clone(),
            virtual_: node.virtual_,
            deleting_dependents: node.deleting_dependents,
            dependents,
        })
    }

    /// The identities of an owner's dependents (to orphan them).
    pub fn dependents_of(&self, uid: &str) -> Vec<Identity> {
        self.nodes
            .get(uid)
            .map(|n| {
                n.dependents
                    .iter()
                    .filter_map(|d| self.nodes.get(d))
                    .map(|d| d.identity.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(kind: &str, name: &str, uid: &str) -> Identity {
        Identity {
            api_version: if kind == "Pod" { "v1" } else { "apps/v1" }.into(),
            kind: kind.into(),
            namespace: Some("default".into()),
            name: name.into(),
            uid: uid.into(),
        }
    }

    fn owner_ref(kind: &str, name: &str, uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(block),
        }
    }

    fn obs(identity: Identity, owners: Vec<OwnerReference>) -> Observed {
        Observed {
            identity,
            owners,
            deleting: false,
            finalizers: Vec::new(),
        }
    }

    fn rs() -> Observed {
        obs(id("ReplicaSet", "web", "rs1"), vec![])
    }

    fn pod(name: &str, uid: &str, block: bool) -> Observed {
        obs(
            id("Pod", name, uid),
            vec![owner_ref("ReplicaSet", "web", "rs1", block)],
        )
    }

    #[test]
    fn a_dependent_seen_before_its_owner_makes_a_virtual_owner_to_check() {
        let mut g = Graph::default();
        assert_eq!(
            g.observe(pod("a", "p1", true)),
            [Work::Delete("rs1".into())]
        );
        assert!(g.view("rs1").unwrap().virtual_);
        // The owner's own event makes it real, keeping its dependents.
        assert_eq!(g.observe(rs()), []);
        let view = g.view("rs1").unwrap();
        assert!(!view.virtual_);
        assert_eq!(view.dependents.len(), 1);
        assert!(view.dependents[0].blocks_owner);
    }

    #[test]
    fn a_deleted_owner_sends_its_dependents_to_be_looked_at() {
        let mut g = Graph::default();
        g.observe(rs());
        g.observe(pod("a", "p1", true));
        g.observe(pod("b", "p2", false));
        let mut work = g.remove("rs1");
        work.sort();
        assert_eq!(work, [Work::Delete("p1".into()), Work::Delete("p2".into())]);
        assert!(g.is_absent("rs1"));
        // A dependent going away leaves a virtual owner nobody names forgotten.
        g.remove("p1");
        g.remove("p2");
        assert!(g.is_empty());
    }

    #[test]
    fn a_foreground_deletion_wakes_the_dependents_then_the_owner_as_they_go() {
        let mut g = Graph::default();
        g.observe(rs());
        g.observe(pod("a", "p1", true));
        let mut deleting = rs();
        deleting.deleting = true;
        deleting.finalizers = vec!["foregroundDeletion".into()];
        assert_eq!(
            g.observe(deleting.clone()),
            [Work::Delete("p1".into()), Work::Delete("rs1".into())]
        );
        assert!(g.view("rs1").unwrap().deleting_dependents);
        assert_eq!(g.observe(deleting), [], "no new transition");
        // The pod's deletion lets the owner finish.
        assert_eq!(g.remove("p1"), [Work::Delete("rs1".into())]);
        assert!(g.view("rs1").unwrap().dependents.is_empty());
    }

    #[test]
    fn orphaning_starts_once_and_unblocking_wakes_a_waiting_owner() {
        let mut g = Graph::default();
        g.observe(rs());
        g.observe(pod("a", "p1", true));
        let mut orphaning = rs();
        orphaning.deleting = true;
        orphaning.finalizers = vec!["orphan".into()];
        assert_eq!(g.observe(orphaning.clone()), [Work::Orphan("rs1".into())]);
        assert_eq!(g.observe(orphaning), []);
        assert_eq!(g.dependents_of("rs1")[0].name, "a");

        let mut g = Graph::default();
        let mut fg = rs();
        fg.deleting = true;
        fg.finalizers = vec!["foregroundDeletion".into()];
        g.observe(fg);
        g.observe(pod("a", "p1", true));
        // The pod stops blocking: the owner may go.
        assert_eq!(
            g.observe(pod("a", "p1", false)),
            [Work::Delete("rs1".into())]
        );
        // The pod drops the reference altogether.
        assert_eq!(g.observe(obs(id("Pod", "a", "p1"), vec![])), []);
        assert!(g.view("rs1").unwrap().dependents.is_empty());
    }

    #[test]
    fn a_relist_drops_what_was_deleted_while_the_watch_was_away() {
        let mut g = Graph::default();
        g.observe(rs());
        g.observe(pod("a", "p1", true));
        g.observe(pod("b", "p2", true));
        g.relist_started("/Pod");
        g.observe(pod("a", "p1", true));
        let work = g.relist_done("/Pod");
        assert!(work.is_empty(), "{work:?}");
        assert!(!g.contains("p2"));
        assert!(g.contains("p1"));
        assert_eq!(g.view("rs1").unwrap().dependents.len(), 1);
    }
}
