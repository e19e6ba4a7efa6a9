//! The DaemonSet controller's decisions, pure (kube-controller-manager's
//! `daemon_controller.go`, `update.go` and `daemon/util`): which nodes
//! should run a daemon pod, the pod made for a node, which pods to create
//! and delete (`manage`), the rolling update's steps with `maxUnavailable`
//! or `maxSurge`, the status, and the ControllerRevision history.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kubelab_rules::node_affinity::required_node_affinity_matches;
use kubelab_rules::taints::{NO_EXECUTE, NO_SCHEDULE, find_untolerated, node_taints};
use serde_json::Value;

use super::controller_history;

/// `apps.ControllerRevisionHashLabelKey` (`DefaultDaemonSetUniqueLabelKey`).
pub use super::controller_history::REVISION_HASH_LABEL;
/// `extensions.DaemonSetTemplateGenerationKey`.
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
/// The annotation kube-apiserver keeps the template generation in.
pub const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";

fn toleration(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        value: None,
        toleration_seconds: None,
    }
}

/// `AddOrUpdateDaemonPodTolerations`: daemon pods stay on nodes that are
/// not ready, unreachable, under pressure or cordoned; host-network ones
/// also where the network is not set up.
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut wanted = vec![
        toleration("node.kubernetes.io/not-ready", NO_EXECUTE),
        toleration("node.kubernetes.io/unreachable", NO_EXECUTE),
        toleration("node.kubernetes.io/disk-pressure", NO_SCHEDULE),
        toleration("node.kubernetes.io/memory-pressure", NO_SCHEDULE),
        toleration("node.kubernetes.io/pid-pressure", NO_SCHEDULE),
        toleration("node.kubernetes.io/unschedulable", NO_SCHEDULE),
    ];
    if spec.host_network == Some(true) {
        wanted.push(toleration(
            "node.kubernetes.io/network-unavailable",
            NO_SCHEDULE,
        ));
    }
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for t in wanted {
        // `AddOrUpdateTolerationInPodSpec`: one with the same key,
        // operator, value and effect is replaced.
        match tolerations.iter_mut().find(|x| {
            x.key == t.key && x.operator == t.operator && x.value == t.value && x.effect == t.effect
        }) {
            Some(existing) => *existing = t,
            None => tolerations.push(t),
        }
    }
}

/// `ReplaceDaemonSetPodNodeNameNodeAffinity`: the pod may only land on
/// `node` (`matchFields metadata.name In [node]`), so the scheduler places
/// it; other required node affinity is replaced, preferred kept.
pub fn node_name_affinity(affinity: Option<Affinity>, node: &str) -> Affinity {
    let term = NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.into()]),
        }]),
    };
    let mut affinity = affinity.unwrap_or_default();
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![term],
    });
    affinity
}

/// The node a daemon pod is for (`GetTargetNodeName`): its `nodeName`, or
/// the `metadata.name` its required node affinity names.
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n.to_owned());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref())
        .filter(|v| v.len() == 1)
        .map(|v| v[0].clone())
}

/// Whether the node should run a daemon pod, and whether one already there
/// may keep running (`NodeShouldRunDaemonPod`): nodeName, nodeSelector and
/// required node affinity must fit; taints must be tolerated with the
/// daemon tolerations added — a `NoSchedule` taint keeps new pods off but
/// lets running ones stay, an untolerated `NoExecute` taint does neither.
pub fn node_should_run(node: &Node, ds: &DaemonSet) -> (bool, bool) {
    let node_name = node.metadata.name.as_deref().unwrap_or("");
    let mut spec = template_spec(ds);
    if spec
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != node_name)
    {
        return (false, false);
    }
    spec.node_name = Some(node_name.into());
    add_daemon_tolerations(&mut spec);
    if !required_node_affinity_matches(&spec, node) {
        return (false, false);
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    let taints = node_taints(node);
    let blocked = find_untolerated(taints, tolerations, |t| {
        t.effect == NO_EXECUTE || t.effect == NO_SCHEDULE
    });
    if blocked.is_none() {
        return (true, true);
    }
    let evicted = find_untolerated(taints, tolerations, |t| t.effect == NO_EXECUTE);
    (false, evicted.is_none())
}

fn template_spec(ds: &DaemonSet) -> PodSpec {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default()
}

/// The template generation the apiserver recorded, if any.
pub fn template_generation(ds: &DaemonSet) -> Option<String> {
    ds.metadata
        .annotations
        .as_ref()?
        .get(TEMPLATE_GENERATION_ANNOTATION)
        .cloned()
}

/// `CreatePodTemplate` + the node's affinity: the pod the controller posts
/// for `node` (named by the apiserver from `generateName`).
pub fn pod_for_node(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut labels = tmeta.labels.clone().unwrap_or_default();
    if let Some(g) = template_generation(ds) {
        labels.insert(TEMPLATE_GENERATION_LABEL.into(), g);
    }
    if !hash.is_empty() {
        labels.insert(REVISION_HASH_LABEL.into(), hash.into());
    }
    let mut spec = template.spec.unwrap_or_default();
    add_daemon_tolerations(&mut spec);
    spec.affinity = Some(node_name_affinity(spec.affinity.take(), node));
    let name = ds.metadata.name.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![controller_ref(ds)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The DaemonSet as its pods' and revisions' controller.
pub fn controller_ref(ds: &DaemonSet) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "DaemonSet".into(),
        name: ds.metadata.name.clone().unwrap_or_default(),
        uid: ds.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// `IsPodUpdated`: the pod carries the current revision's hash, or the
/// current template generation.
pub fn is_pod_updated(pod: &Pod, hash: &str, generation: Option<&str>) -> bool {
    let labels = pod.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    let hash_matches = !hash.is_empty() && label(REVISION_HASH_LABEL) == Some(hash);
    let generation_matches = generation.is_some() && label(TEMPLATE_GENERATION_LABEL) == generation;
    hash_matches || generation_matches
}

fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

pub fn is_pod_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// `IsPodAvailable`: ready for at least `min_ready_seconds`.
pub fn is_pod_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    let Some(c) = ready_condition(pod).filter(|c| c.status == "True") else {
        return false;
    };
    if min_ready_seconds <= 0 {
        return true;
    }
    c.last_transition_time
        .as_ref()
        .is_some_and(|t| t.0.as_second() + i64::from(min_ready_seconds) <= now.as_second())
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// `podByCreationTimestampAndPhase`: scheduled pods first, then oldest,
/// then by name.
pub fn by_creation_and_phase(a: &Pod, b: &Pod) -> Ordering {
    let bound = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
    };
    bound(b)
        .cmp(&bound(a))
        .then_with(|| {
            let t = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            t(a).cmp(&t(b))
        })
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// The DaemonSet's pods by the node they are for (`getNodesToDaemonPods`),
/// leaving out finished pods already being deleted.
pub fn pods_by_node(pods: &[Pod]) -> BTreeMap<String, Vec<Pod>> {
    let mut out: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for p in pods {
        if is_terminal(p) && p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Some(node) = target_node(p) {
            out.entry(node).or_default().push(p.clone());
        }
    }
    out
}

/// The pods to create and delete (`manage`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// Nodes that get a new daemon pod.
    pub create_on: Vec<String>,
    /// Names of pods to delete.
    pub delete: Vec<String>,
}

fn allows_surge(ds: &DaemonSet) -> bool {
    let Some(ru) = rolling_update(ds) else {
        return false;
    };
    ru.max_surge.as_ref().is_some_and(|s| match s {
        IntOrString::Int(n) => *n != 0,
        IntOrString::String(s) => s.trim_end_matches('%').trim() != "0",
    })
}

fn rolling_update(ds: &DaemonSet) -> Option<&k8s_openapi::api::apps::v1::RollingUpdateDaemonSet> {
    let strategy = ds.spec.as_ref()?.update_strategy.as_ref()?;
    if strategy.type_.as_deref().unwrap_or("RollingUpdate") != "RollingUpdate" {
        return None;
    }
    strategy.rolling_update.as_ref()
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

/// `podsShouldBeOnNode` for one node.
pub fn pods_should_be_on_node(
    node: &Node,
    pods: &[Pod],
    ds: &DaemonSet,
    hash: &str,
    now: Timestamp,
) -> Plan {
    let node_name = node.metadata.name.clone().unwrap_or_default();
    let (should_run, should_continue) = node_should_run(node, ds);
    let mut plan = Plan::default();
    let exists = !pods.is_empty();
    if should_run && !exists {
        plan.create_on.push(node_name);
        return plan;
    }
    if should_continue {
        let mut running: Vec<&Pod> = Vec::new();
        for p in pods {
            if p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            // A failed or finished daemon pod is replaced.
            if matches!(phase(p), "Failed" | "Succeeded") {
                plan.delete.push(name(p));
            } else {
                running.push(p);
            }
        }
        if running.len() <= 1 {
            return plan;
        }
        running.sort_by(|a, b| by_creation_and_phase(a, b));
        if !allows_surge(ds) {
            // More than one: all but the oldest go.
            plan.delete.extend(running[1..].iter().map(|p| name(p)));
            return plan;
        }
        // Surging: keep the oldest new pod, and the oldest old one only
        // while it is ready and the new one not yet available.
        let generation = template_generation(ds);
        let mut oldest_new: Option<&Pod> = None;
        let mut oldest_old: Option<&Pod> = None;
        for p in running {
            let slot = if is_pod_updated(p, hash, generation.as_deref()) {
                &mut oldest_new
            } else {
                &mut oldest_old
            };
            if slot.is_none() {
                *slot = Some(p);
            } else {
                plan.delete.push(name(p));
            }
        }
        if let (Some(new), Some(old)) = (oldest_new, oldest_old) {
            let min_ready = ds
                .spec
                .as_ref()
                .and_then(|s| s.min_ready_seconds)
                .unwrap_or(0);
            if !is_pod_ready(old) || is_pod_available(new, min_ready, now) {
                plan.delete.push(name(old));
            }
        }
        return plan;
    }
    if exists {
        plan.delete.extend(
            pods.iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(name),
        );
    }
    plan
}

/// `manage`: the plan over every node, plus unscheduled pods for nodes
/// that no longer exist (nothing else would remove them).
pub fn manage(ds: &DaemonSet, nodes: &[Node], pods: &[Pod], hash: &str, now: Timestamp) -> Plan {
    let by_node = pods_by_node(pods);
    let mut plan = Plan::default();
    let mut known = BTreeSet::new();
    for node in nodes {
        let node_name = node.metadata.name.clone().unwrap_or_default();
        let on_node = by_node.get(&node_name).map(Vec::as_slice).unwrap_or(&[]);
        let p = pods_should_be_on_node(node, on_node, ds, hash, now);
        plan.create_on.extend(p.create_on);
        plan.delete.extend(p.delete);
        known.insert(node_name);
    }
    for (node, node_pods) in &by_node {
        if known.contains(node) {
            continue;
        }
        plan.delete.extend(
            node_pods
                .iter()
                .filter(|p| {
                    p.spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_deref())
                        .is_none_or(str::is_empty)
                })
                .map(name),
        );
    }
    plan
}

/// `GetScaledValueFromIntOrPercent`: an int, or a percentage of `total`.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match v {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let pct: f64 = s
                .strip_suffix('%')
                .and_then(|p| p.trim().parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let v = pct * f64::from(total) / 100.0;
            Ok(if round_up { v.ceil() } else { v.floor() } as i32)
        }
    }
}

/// `updatedDesiredNodeCounts`: (maxSurge, maxUnavailable, desired), with
/// the "neither configured" fallback of one unavailable.
pub fn rolling_counts(ds: &DaemonSet, nodes: &[Node]) -> (i32, i32, i32) {
    let desired = nodes.iter().filter(|n| node_should_run(n, ds).0).count() as i32;
    let ru = rolling_update(ds);
    let unavailable = ru
        .and_then(|r| r.max_unavailable.as_ref())
        .map(|v| scaled_value(v, desired, true).unwrap_or(1))
        .unwrap_or(1);
    let surge = ru
        .and_then(|r| r.max_surge.as_ref())
        .map(|v| scaled_value(v, desired, true).unwrap_or(0))
        .unwrap_or(0);
    if desired > 0 && unavailable == 0 && surge == 0 {
        return (0, 1, desired);
    }
    (surge, unavailable, desired)
}

/// `findUpdatedPodsOnNode`: at most one new and one old live pod, or
/// `None` when there are more (the manage step sorts that out).
fn updated_and_old<'a>(
    pods: &'a [Pod],
    hash: &str,
    generation: Option<&str>,
) -> Option<(Option<&'a Pod>, Option<&'a Pod>)> {
    let mut new = None;
    let mut old = None;
    for p in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let slot = if is_pod_updated(p, hash, generation) {
            &mut new
        } else {
            &mut old
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(p);
    }
    Some((new, old))
}

/// One step of a RollingUpdate (`rollingUpdate`): old pods to delete and,
/// when surging, nodes to give a new pod next to the old one.
pub fn rolling_update_step(
    ds: &DaemonSet,
    nodes: &[Node],
    pods: &[Pod],
    hash: &str,
    now: Timestamp,
) -> Plan {
    let (max_surge, max_unavailable, desired) = rolling_counts(ds, nodes);
    let generation = template_generation(ds);
    let min_ready = ds
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let available = |p: &Pod| is_pod_available(p, min_ready, now);
    let mut by_node = pods_by_node(pods);
    for n in nodes {
        if node_should_run(n, ds).0 {
            by_node
                .entry(n.metadata.name.clone().unwrap_or_default())
                .or_default();
        }
    }
    let node_of = |name: &str| {
        nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
    };
    let mut plan = Plan::default();
    if max_surge == 0 {
        // Delete just enough old pods to stay within maxUnavailable; the
        // manage step creates their replacements.
        let mut unavailable = 0;
        let mut replacements = Vec::new();
        let mut candidates = Vec::new();
        for node_pods in by_node.values() {
            let Some((new, old)) = updated_and_old(node_pods, hash, generation.as_deref()) else {
                unavailable += 1;
                continue;
            };
            match (new, old) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (Some(new), None) => {
                    if !available(new) {
                        unavailable += 1;
                    }
                }
                (None, Some(old)) => {
                    if !available(old) {
                        replacements.push(name(old));
                    } else if unavailable < max_unavailable {
                        candidates.push(name(old));
                    }
                }
            }
        }
        let room = (max_unavailable - unavailable).clamp(0, candidates.len() as i32) as usize;
        plan.delete = replacements;
        plan.delete.extend(candidates.into_iter().take(room));
        return plan;
    }
    // Surging: a new pod goes next to an old one (at most maxSurge at a
    // time; at once where the old one is unavailable); an old pod goes
    // once its node's new pod is available.
    let mut surge = 0;
    let mut available_count = 0;
    let mut allowed_new = Vec::new();
    let mut candidate_new = Vec::new();
    let mut not_to_run = Vec::new();
    for (node_name, node_pods) in &by_node {
        let Some((new, old)) = updated_and_old(node_pods, hash, generation.as_deref()) else {
            surge += 1;
            continue;
        };
        if let Some(p) = old.or(new)
            && available(p)
        {
            available_count += 1;
        }
        let should_run = node_of(node_name).is_some_and(|n| node_should_run(n, ds).0);
        match (new, old) {
            (_, None) => {}
            (None, Some(old)) => {
                if !available(old) {
                    if should_run {
                        allowed_new.push(node_name.clone());
                    } else {
                        plan.delete.push(name(old));
                    }
                } else if !should_run {
                    not_to_run.push(old);
                } else if surge < max_surge {
                    candidate_new.push(node_name.clone());
                }
            }
            (Some(new), Some(old)) => {
                if available(new) {
                    plan.delete.push(name(old));
                } else {
                    surge += 1;
                }
            }
        }
    }
    // Pods on nodes they should leave go only while enough are available
    // elsewhere.
    let deletable = (available_count - desired).clamp(0, not_to_run.len() as i32) as usize;
    plan.delete
        .extend(not_to_run.iter().take(deletable).map(|p| name(p)));
    let room = (max_surge - surge).clamp(0, candidate_new.len() as i32) as usize;
    plan.create_on = allowed_new;
    plan.create_on.extend(candidate_new.into_iter().take(room));
    plan
}

/// `updateDaemonSetStatus`'s counts.
pub fn status(
    ds: &DaemonSet,
    nodes: &[Node],
    pods: &[Pod],
    hash: &str,
    now: Timestamp,
) -> DaemonSetStatus {
    let by_node = pods_by_node(pods);
    let generation = template_generation(ds);
    let min_ready = ds
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let mut st = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
        ..Default::default()
    };
    let mut updated = 0;
    let mut available = 0;
    for node in nodes {
        let node_name = node.metadata.name.clone().unwrap_or_default();
        let (should_run, _) = node_should_run(node, ds);
        let mut node_pods = by_node.get(&node_name).cloned().unwrap_or_default();
        let scheduled = !node_pods.is_empty();
        if !should_run {
            if scheduled {
                st.number_misscheduled += 1;
            }
            continue;
        }
        st.desired_number_scheduled += 1;
        if !scheduled {
            continue;
        }
        st.current_number_scheduled += 1;
        node_pods.sort_by(by_creation_and_phase);
        let pod = &node_pods[0];
        if is_pod_ready(pod) {
            st.number_ready += 1;
            if is_pod_available(pod, min_ready, now) {
                available += 1;
            }
        }
        if is_pod_updated(pod, hash, generation.as_deref()) {
            updated += 1;
        }
    }
    st.number_available = Some(available);
    st.updated_number_scheduled = Some(updated);
    let unavailable = st.desired_number_scheduled - available;
    st.number_unavailable = Some(unavailable);
    st
}

/// The revision's data (`getPatch`).
pub fn revision_data(ds: &DaemonSet) -> Value {
    controller_history::patch_data(
        &ds.spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default(),
    )
}

pub use super::controller_history::{HistoryStep, revision_template};

/// The current template's hash: the name suffix of its revision.
pub fn template_hash(ds: &DaemonSet) -> String {
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
    kubelab_rules::template_hash::compute_hash(&template, collisions)
}

/// A new ControllerRevision for the DaemonSet's template (`snapshot`).
pub fn new_revision(ds: &DaemonSet, hash: &str, revision: i64) -> ControllerRevision {
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    controller_history::new_revision(&ds.metadata, controller_ref(ds), &template, hash, revision)
}

/// Whether a revision holds the DaemonSet's current template.
pub fn revision_matches(rev: &ControllerRevision, ds: &DaemonSet) -> bool {
    rev.data.as_ref().map(|d| &d.0) == Some(&revision_data(ds))
}

pub fn history_step(ds: &DaemonSet, revisions: &[ControllerRevision], hash: &str) -> HistoryStep {
    controller_history::history_step(revisions, &revision_data(ds), |n| new_revision(ds, hash, n))
}

/// `cleanupHistory`: old revisions beyond `revisionHistoryLimit` that no
/// live pod runs, oldest first.
pub fn revisions_to_prune(
    revisions: &[ControllerRevision],
    current: &str,
    pods: &[Pod],
    limit: i32,
) -> Vec<String> {
    let live: BTreeSet<&str> = pods
        .iter()
        .filter_map(|p| p.metadata.labels.as_ref()?.get(REVISION_HASH_LABEL))
        .map(String::as_str)
        .collect();
    let mut old: Vec<&ControllerRevision> = revisions
        .iter()
        .filter(|r| r.metadata.name.as_deref() != Some(current))
        .filter(|r| {
            let hash = r
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_HASH_LABEL))
                .map(String::as_str);
            !hash.is_some_and(|h| live.contains(h))
        })
        .collect();
    let excess = old.len().saturating_sub(limit.max(0) as usize);
    old.sort_by_key(|r| r.revision);
    old.iter()
        .take(excess)
        .filter_map(|r| r.metadata.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
    };
    use k8s_openapi::api::core::v1::{
        Container, NodeCondition, NodeSpec, NodeStatus, PodCondition, PodStatus, PodTemplateSpec,
        Taint,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    fn ds(image: &str) -> DaemonSet {
        let labels: BTreeMap<String, String> = [("app".to_owned(), "agent".to_owned())].into();
        DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("default".into()),
                uid: Some("ds-uid".into()),
                generation: Some(1),
                ..Default::default()
            },
            spec: Some(DaemonSetSpec {
                selector: LabelSelector {
                    match_labels: Some(labels.clone()),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            image: Some(image.into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                update_strategy: Some(DaemonSetUpdateStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDaemonSet {
                        max_unavailable: Some(IntOrString::Int(1)),
                        max_surge: Some(IntOrString::Int(0)),
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn node(name: &str, labels: &[(&str, &str)], taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: None,
            effect: effect.into(),
            time_added: None,
        }
    }

    /// A daemon pod of `d` on `node`, ready or not, of revision `hash`.
    fn pod(d: &DaemonSet, name: &str, node: &str, hash: &str, ready: bool, created: i64) -> Pod {
        let mut p = pod_for_node(d, node, hash);
        p.metadata.name = Some(name.into());
        p.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        p.spec.as_mut().unwrap().node_name = Some(node.into());
        p.status = Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                last_transition_time: Some(Time(Timestamp::from_second(created).unwrap())),
                ..Default::default()
            }]),
            ..Default::default()
        });
        p
    }

    #[test]
    fn daemon_pods_tolerate_node_conditions_and_are_pinned_to_their_node() {
        let mut d = ds("busybox:1");
        d.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .host_network = Some(true);
        let p = pod_for_node(&d, "n1", "abc");
        let spec = p.spec.unwrap();
        let keys: Vec<(String, String)> = spec
            .tolerations
            .unwrap()
            .iter()
            .map(|t| (t.key.clone().unwrap(), t.effect.clone().unwrap()))
            .collect();
        assert_eq!(keys.len(), 7);
        assert!(keys.contains(&("node.kubernetes.io/unreachable".into(), "NoExecute".into())));
        assert!(keys.contains(&(
            "node.kubernetes.io/network-unavailable".into(),
            "NoSchedule".into()
        )));
        let term = &spec
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms[0];
        let field = &term.match_fields.as_ref().unwrap()[0];
        assert_eq!(
            (field.key.as_str(), field.operator.as_str()),
            ("metadata.name", "In")
        );
        assert_eq!(field.values.as_deref(), Some(&["n1".to_owned()][..]));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("agent-"));
        assert_eq!(
            p.metadata
                .labels
                .unwrap()
                .get(REVISION_HASH_LABEL)
                .map(String::as_str),
            Some("abc")
        );
        let owner = &p.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("DaemonSet", Some(true))
        );
    }

    #[test]
    fn eligibility_follows_selector_and_taints() {
        let mut d = ds("busybox:1");
        d.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .node_selector = Some([("disk".to_owned(), "ssd".to_owned())].into());
        assert_eq!(
            node_should_run(&node("a", &[("disk", "ssd")], vec![]), &d),
            (true, true)
        );
        assert_eq!(node_should_run(&node("b", &[], vec![]), &d), (false, false));
        // Cordoned and not-ready nodes keep their daemon pods.
        let cordoned = node(
            "c",
            &[("disk", "ssd")],
            vec![
                taint("node.kubernetes.io/unschedulable", "NoSchedule"),
                taint("node.kubernetes.io/not-ready", "NoExecute"),
            ],
        );
        assert_eq!(node_should_run(&cordoned, &d), (true, true));
        // A user's NoSchedule taint: no new pod, the running one stays.
        let tainted = node(
            "d",
            &[("disk", "ssd")],
            vec![taint("dedicated", "NoSchedule")],
        );
        assert_eq!(node_should_run(&tainted, &d), (false, true));
        let evicting = node(
            "e",
            &[("disk", "ssd")],
            vec![taint("dedicated", "NoExecute")],
        );
        assert_eq!(node_should_run(&evicting, &d), (false, false));
    }

    #[test]
    fn manage_creates_on_new_nodes_and_removes_from_ineligible_ones() {
        let mut d = ds("busybox:1");
        d.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .node_selector = Some([("role".to_owned(), "worker".to_owned())].into());
        let nodes = [
            node("n1", &[("role", "worker")], vec![]),
            node("n2", &[("role", "worker")], vec![]),
            node("n3", &[], vec![]),
        ];
        let pods = [
            pod(&d, "p1", "n1", "h", true, 1),
            pod(&d, "p3", "n3", "h", true, 1),
        ];
        let plan = manage(&d, &nodes, &pods, "h", now());
        assert_eq!(plan.create_on, ["n2"]);
        assert_eq!(plan.delete, ["p3"]);
        // Two on one node: the younger goes; a failed one is replaced.
        let mut failed = pod(&d, "p2", "n2", "h", false, 1);
        failed.status.as_mut().unwrap().phase = Some("Failed".into());
        let pods = [
            pod(&d, "p1", "n1", "h", true, 1),
            pod(&d, "p1b", "n1", "h", true, 5),
            failed,
        ];
        let plan = manage(&d, &nodes[..2], &pods, "h", now());
        assert_eq!(plan.delete, ["p1b", "p2"]);
        assert!(plan.create_on.is_empty(), "n2's failed pod goes first");
        // A pod pending for a node that is gone is removed.
        let mut orphan = pod_for_node(&d, "gone", "h");
        orphan.metadata.name = Some("px".into());
        let plan = manage(
            &d,
            &nodes[..1],
            &[pod(&d, "p1", "n1", "h", true, 1), orphan],
            "h",
            now(),
        );
        assert_eq!(plan.delete, ["px"]);
    }

    #[test]
    fn a_rolling_update_replaces_within_max_unavailable() {
        let d = ds("busybox:2");
        let nodes = [
            node("n1", &[], vec![]),
            node("n2", &[], vec![]),
            node("n3", &[], vec![]),
        ];
        let old = |n: &str, name: &str| pod(&d, name, n, "old", true, 1);
        let pods = [old("n1", "a"), old("n2", "b"), old("n3", "c")];
        let step = rolling_update_step(&d, &nodes, &pods, "new", now());
        assert_eq!(step.delete.len(), 1, "maxUnavailable 1: {step:?}");
        assert!(step.create_on.is_empty());
        // n1 replaced but not ready yet: nothing more goes.
        let pods = [
            pod(&d, "a2", "n1", "new", false, 10),
            old("n2", "b"),
            old("n3", "c"),
        ];
        assert!(
            rolling_update_step(&d, &nodes, &pods, "new", now())
                .delete
                .is_empty()
        );
        // Ready: the next old one goes.
        let pods = [
            pod(&d, "a2", "n1", "new", true, 10),
            old("n2", "b"),
            old("n3", "c"),
        ];
        assert_eq!(
            rolling_update_step(&d, &nodes, &pods, "new", now())
                .delete
                .len(),
            1
        );
        // An unavailable old pod is replaced regardless.
        let pods = [
            pod(&d, "a2", "n1", "new", false, 10),
            pod(&d, "b", "n2", "old", false, 1),
            old("n3", "c"),
        ];
        assert_eq!(
            rolling_update_step(&d, &nodes, &pods, "new", now()).delete,
            ["b"]
        );
    }

    #[test]
    fn a_surging_update_starts_new_pods_beside_old_ones() {
        let mut d = ds("busybox:2");
        let ru = d
            .spec
            .as_mut()
            .unwrap()
            .update_strategy
            .as_mut()
            .unwrap()
            .rolling_update
            .as_mut()
            .unwrap();
        ru.max_surge = Some(IntOrString::String("50%".into()));
        ru.max_unavailable = Some(IntOrString::Int(0));
        let nodes = [node("n1", &[], vec![]), node("n2", &[], vec![])];
        let pods = [
            pod(&d, "a", "n1", "old", true, 1),
            pod(&d, "b", "n2", "old", true, 1),
        ];
        assert_eq!(rolling_counts(&d, &nodes), (1, 0, 2));
        let step = rolling_update_step(&d, &nodes, &pods, "new", now());
        assert_eq!(step.create_on, ["n1"]);
        assert!(step.delete.is_empty());
        // The new pod is available: the old one on its node goes.
        let pods = [
            pod(&d, "a", "n1", "old", true, 1),
            pod(&d, "a2", "n1", "new", true, 10),
            pod(&d, "b", "n2", "old", true, 1),
        ];
        let step = rolling_update_step(&d, &nodes, &pods, "new", now());
        assert_eq!(step.delete, ["a"]);
        // n1's new pod is available, so n2 may surge now.
        assert_eq!(step.create_on, ["n2"]);
        // While n1's new pod is not available, n2 waits (maxSurge 1).
        let pods = [
            pod(&d, "a", "n1", "old", true, 1),
            pod(&d, "a2", "n1", "new", false, 10),
            pod(&d, "b", "n2", "old", true, 1),
        ];
        let step = rolling_update_step(&d, &nodes, &pods, "new", now());
        assert!(
            step.delete.is_empty() && step.create_on.is_empty(),
            "{step:?}"
        );
    }

    #[test]
    fn status_counts_nodes_as_kubectl_shows_them() {
        let mut d = ds("busybox:1");
        d.spec.as_mut().unwrap().min_ready_seconds = Some(30);
        let nodes = [
            node("n1", &[], vec![]),
            node("n2", &[], vec![]),
            node("n3", &[], vec![]),
        ];
        let pods = [
            pod(&d, "a", "n1", "h", true, 1),
            pod(&d, "b", "n2", "old", true, 1_699_999_990),
        ];
        let st = status(&d, &nodes, &pods, "h", now());
        assert_eq!(st.desired_number_scheduled, 3);
        assert_eq!(st.current_number_scheduled, 2);
        assert_eq!(st.number_ready, 2);
        assert_eq!(st.number_available, Some(1), "b is ready for 10 s of 30");
        assert_eq!(st.updated_number_scheduled, Some(1));
        assert_eq!(st.number_unavailable, Some(2));
        assert_eq!(st.number_misscheduled, 0);
        assert_eq!(st.observed_generation, Some(1));
    }

    #[test]
    fn history_creates_renumbers_and_prunes_revisions() {
        let v1 = ds("busybox:1");
        let v2 = ds("busybox:2");
        let h1 = template_hash(&v1);
        let h2 = template_hash(&v2);
        assert_ne!(h1, h2);
        let HistoryStep::Create(r1) = history_step(&v1, &[], &h1) else {
            panic!("first revision");
        };
        assert_eq!(r1.revision, 1);
        assert_eq!(
            r1.metadata.name.as_deref(),
            Some(format!("agent-{h1}").as_str())
        );
        let HistoryStep::Create(r2) = history_step(&v2, std::slice::from_ref(&r1), &h2) else {
            panic!("second revision");
        };
        assert_eq!(r2.revision, 2);
        // Rolled back to v1: its revision becomes the newest.
        let revs = [r1.clone(), r2.clone()];
        assert_eq!(
            history_step(&v1, &revs, &h1),
            HistoryStep::Current {
                name: format!("agent-{h1}"),
                renumber_to: Some(3),
                duplicates: vec![]
            }
        );
        assert_eq!(
            revision_template(&r1).unwrap().spec.unwrap().containers[0]
                .image
                .as_deref(),
            Some("busybox:1")
        );
        // Pruning keeps what pods run and the limit.
        let pods = [pod(&v1, "a", "n1", &h1, true, 1)];
        assert!(revisions_to_prune(&revs, &r2.metadata.name.clone().unwrap(), &pods, 0).is_empty());
        assert_eq!(
            revisions_to_prune(&revs, &r2.metadata.name.clone().unwrap(), &[], 0),
            [format!("agent-{h1}")]
        );
        assert_eq!(
            scaled_value(&IntOrString::String("25%".into()), 3, true),
            Ok(1)
        );
        assert!(scaled_value(&IntOrString::String("x".into()), 3, true).is_err());
    }
}
