//! The Deployment controller's decisions, as pure functions
//! (`pkg/controller/deployment`, `deployment/util`): which ReplicaSet is the
//! new one, how far a rolling update may scale the new one up and the old
//! ones down under `maxSurge`/`maxUnavailable`, proportional scaling, which
//! old ReplicaSets the history limit removes, and the status with its
//! Available and Progressing conditions.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// `DefaultDeploymentUniqueLabelKey`.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// Deployment annotations never copied to its ReplicaSets.
const NOT_COPIED: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (
        s.replicas,
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

pub fn revision(meta: &ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

pub fn is_recreate(d: &Deployment) -> bool {
    !is_rolling(d)
}

fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        != Some("Recreate")
}

/// `intstr.GetScaledValueFromIntOrPercent`.
fn scaled(v: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match v {
        None => 0,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            let product = pct * i64::from(total);
            (if round_up {
                (product + 99) / 100
            } else {
                product / 100
            }) as i32
        }
    }
}

/// `ResolveFenceposts`: (maxSurge, maxUnavailable) as pod counts; both
/// zero would stall, so unavailable becomes one.
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    if !is_rolling(d) {
        return (0, 0);
    }
    let r = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.clone())
        .unwrap_or_default();
    let desired = replicas(d);
    let surge = scaled(r.max_surge.as_ref(), desired, true);
    let unavailable = scaled(r.max_unavailable.as_ref(), desired, false);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// `MaxUnavailable`: never more than the replicas.
pub fn max_unavailable(d: &Deployment) -> i32 {
    fenceposts(d).1.min(replicas(d))
}

/// The template without the `pod-template-hash` label, for comparing an
/// RS's template with the Deployment's (`EqualIgnoreHash`).
pub fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(POD_TEMPLATE_HASH);
        if labels.is_empty() {
            t.metadata.as_mut().expect("metadata").labels = None;
        }
    }
    t
}

/// `FindNewReplicaSet`: the oldest RS whose template is the Deployment's.
pub fn find_new<'a>(d: &Deployment, rss: &'a [ReplicaSet]) -> Option<&'a ReplicaSet> {
    let want = without_hash(&d.spec.clone().unwrap_or_default().template);
    let mut matching: Vec<&ReplicaSet> = rss
        .iter()
        .filter(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| without_hash(t) == want)
        })
        .collect();
    matching.sort_by_key(|rs| {
        (
            rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
            rs.metadata.name.clone(),
        )
    });
    matching.first().copied()
}

/// The annotations a Deployment passes to its ReplicaSets.
pub fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `SetReplicasAnnotations`.
pub fn replicas_annotations(d: &Deployment) -> BTreeMap<String, String> {
    let desired = replicas(d);
    BTreeMap::from([
        (DESIRED_REPLICAS.to_owned(), desired.to_string()),
        (
            MAX_REPLICAS.to_owned(),
            (desired + fenceposts(d).0).to_string(),
        ),
    ])
}

/// The new ReplicaSet for the Deployment's template: named
/// `<deployment>-<hash>`, the hash label on its selector and template.
pub fn new_replica_set(
    d: &Deployment,
    hash: &str,
    initial_replicas: i32,
    revision: i64,
    owner: OwnerReference,
) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default)
        .insert(POD_TEMPLATE_HASH.into(), hash.into());
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(POD_TEMPLATE_HASH.into(), hash.into());
    let mut annotations = copied_annotations(d);
    annotations.extend(replicas_annotations(d));
    annotations.insert(REVISION.into(), revision.to_string());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}-{hash}",
                d.metadata.name.as_deref().unwrap_or("")
            )),
            namespace: d.metadata.namespace.clone(),
            labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(initial_replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

/// `NewRSNewReplicas`: how big the new RS may be now.
pub fn new_rs_replicas(d: &Deployment, all: &[ReplicaSet], new: &ReplicaSet) -> i32 {
    let desired = replicas(d);
    if !is_rolling(d) {
        return desired;
    }
    let current: i32 = all.iter().map(rs_replicas).sum();
    let max_total = desired + fenceposts(d).0;
    if current >= max_total {
        return rs_replicas(new);
    }
    let up = (max_total - current).min(desired - rs_replicas(new)).max(0);
    rs_replicas(new) + up
}

/// `reconcileOldReplicaSets`: the old ReplicaSets' new sizes (by name),
/// scaling down first what is unavailable anyway, then what the
/// availability budget allows, oldest first.
pub fn scale_down_old(
    d: &Deployment,
    old: &[ReplicaSet],
    new: Option<&ReplicaSet>,
) -> Vec<(String, i32)> {
    let old_count: i32 = old.iter().map(rs_replicas).sum();
    if old_count == 0 {
        return Vec::new();
    }
    let all_count = old_count + new.map(rs_replicas).unwrap_or(0);
    let min_available = replicas(d) - max_unavailable(d);
    let new_unavailable = new
        .map(|n| rs_replicas(n) - rs_status(n).2)
        .unwrap_or(0)
        .max(0);
    let max_scaled_down = all_count - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Vec::new();
    }
    let mut sizes: Vec<(String, i32, i32, Option<jiff::Timestamp>)> = old
        .iter()
        .map(|rs| {
            (
                rs.metadata.name.clone().unwrap_or_default(),
                rs_replicas(rs),
                rs_status(rs).2,
                rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        })
        .collect();
    sizes.sort_by(|a, b| a.3.cmp(&b.3).then(a.0.cmp(&b.0)));
    let original: Vec<i32> = sizes.iter().map(|s| s.1).collect();
    // `cleanupUnhealthyReplicas`: unavailable pods of old sets go first.
    let mut cleaned = 0;
    for s in sizes.iter_mut() {
        if cleaned >= max_scaled_down {
            break;
        }
        let unhealthy = (s.1 - s.2).max(0);
        let n = unhealthy.min(max_scaled_down - cleaned);
        s.1 -= n;
        cleaned += n;
    }
    // `scaleDownOldReplicaSetsForRollingUpdate`: then down to minAvailable.
    let available: i32 =
        sizes.iter().map(|s| s.2.min(s.1)).sum::<i32>() + new.map(|n| rs_status(n).2).unwrap_or(0);
    let mut budget = (available - min_available).max(0);
    for s in sizes.iter_mut() {
        if budget == 0 {
            break;
        }
        let n = s.1.min(budget);
        s.1 -= n;
        budget -= n;
    }
    sizes
        .into_iter()
        .zip(original)
        .filter(|(s, o)| s.1 != *o)
        .map(|(s, _)| (s.0, s.1))
        .collect()
}

/// The active ReplicaSet to scale when only one has pods, or the newest
/// (`FindActiveOrLatest`); `None` when several have pods.
pub fn active_or_latest<'a>(
    new: Option<&'a ReplicaSet>,
    old: &'a [ReplicaSet],
) -> Option<&'a ReplicaSet> {
    let mut all: Vec<&ReplicaSet> = old.iter().chain(new).collect();
    let active: Vec<&ReplicaSet> = all
        .iter()
        .copied()
        .filter(|rs| rs_replicas(rs) > 0)
        .collect();
    match active.len() {
        0 => {
            all.sort_by_key(|rs| rs.metadata.creation_timestamp.as_ref().map(|t| t.0));
            new.or(all.last().copied())
        }
        1 => Some(active[0]),
        _ => None,
    }
}

/// `isScalingEvent`: an active ReplicaSet was sized for another replica count.
pub fn is_scaling_event(d: &Deployment, all: &[ReplicaSet]) -> bool {
    let want = replicas(d).to_string();
    all.iter().filter(|rs| rs_replicas(rs) > 0).any(|rs| {
        rs.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DESIRED_REPLICAS))
            .is_some_and(|v| *v != want)
    })
}

/// Proportional scaling (`scale`): new sizes for the active ReplicaSets
/// when the Deployment was resized mid-rollout, shared by their size.
pub fn proportional_sizes(d: &Deployment, all: &[ReplicaSet]) -> Vec<(String, i32)> {
    let desired = replicas(d);
    let allowed = if desired > 0 {
        desired + fenceposts(d).0
    } else {
        0
    };
    let current: i32 = all.iter().map(rs_replicas).sum();
    let mut to_add = allowed - current;
    if to_add == 0 || current == 0 {
        return Vec::new();
    }
    let mut sized: Vec<(String, i32, Option<jiff::Timestamp>)> = all
        .iter()
        .filter(|rs| rs_replicas(rs) > 0)
        .map(|rs| {
            (
                rs.metadata.name.clone().unwrap_or_default(),
                rs_replicas(rs),
                rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        })
        .collect();
    // Bigger (then newer) first when adding, smaller first when removing.
    sized.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)));
    if to_add < 0 {
        sized.reverse();
    }
    let total_add = to_add;
    let mut out: Vec<(String, i32)> = Vec::new();
    for (name, size, _) in &sized {
        let share = ((i64::from(*size) * i64::from(total_add)) / i64::from(current)) as i32;
        let share = if total_add > 0 {
            share.min(to_add)
        } else {
            share.max(to_add).max(-size)
        };
        to_add -= share;
        out.push((name.clone(), size + share));
    }
    // Leftovers go to the first (largest) set.
    if to_add != 0
        && let Some(first) = out.first_mut()
    {
        first.1 = (first.1 + to_add).max(0);
    }
    out.into_iter()
        .filter(|(n, s)| sized.iter().any(|(m, o, _)| m == n && o != s))
        .collect()
}

/// `cleanupDeployment`: old ReplicaSets without pods beyond
/// `revisionHistoryLimit`, lowest revision first.
pub fn history_to_delete(d: &Deployment, old: &[ReplicaSet]) -> Vec<String> {
    let limit = d
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10)
        .max(0) as usize;
    let mut idle: Vec<&ReplicaSet> = old
        .iter()
        .filter(|rs| {
            rs_replicas(rs) == 0 && rs_status(rs).0 == 0 && rs.metadata.deletion_timestamp.is_none()
        })
        .collect();
    if idle.len() <= limit {
        return Vec::new();
    }
    idle.sort_by_key(|rs| {
        (
            revision(&rs.metadata),
            rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
        )
    });
    idle.iter()
        .take(idle.len() - limit)
        .filter_map(|rs| rs.metadata.name.clone())
        .collect()
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: jiff::Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

pub fn get_condition<'a>(s: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    s.conditions.iter().flatten().find(|c| c.type_ == type_)
}

/// `SetDeploymentCondition`: same status and reason keeps the old one;
/// same status keeps its transition time.
pub fn set_condition(s: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(cur) = get_condition(s, &c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    let conds = s.conditions.get_or_insert_with(Vec::new);
    conds.retain(|x| x.type_ != c.type_);
    conds.push(c);
}

/// `checkPausedConditions`: Progressing Unknown while paused.
pub fn paused_condition(d: &Deployment, now: jiff::Timestamp) -> Option<DeploymentCondition> {
    if !d
        .spec
        .as_ref()
        .is_some_and(|s| s.progress_deadline_seconds.is_some())
    {
        return None;
    }
    let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    let status = d.status.clone().unwrap_or_default();
    let reason = get_condition(&status, "Progressing").and_then(|c| c.reason.as_deref());
    if paused && reason != Some("DeploymentPaused") {
        Some(condition(
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
            now,
        ))
    } else if !paused && reason == Some("DeploymentPaused") {
        Some(condition(
            "Progressing",
            "Unknown",
            "DeploymentResumed",
            "Deployment is resumed".into(),
            now,
        ))
    } else {
        None
    }
}

/// `Created new replica set "x"` / `Found new replica set "x"`.
pub fn new_rs_condition(reason: &str, rs: &str, now: jiff::Timestamp) -> DeploymentCondition {
    let verb = if reason == "NewReplicaSetCreated" {
        "Created"
    } else {
        "Found"
    };
    condition(
        "Progressing",
        "True",
        reason,
        format!("{verb} new replica set {rs:?}"),
        now,
    )
}

/// `DeploymentComplete`.
pub fn is_complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let want = replicas(d);
    s.updated_replicas.unwrap_or(0) == want
        && s.replicas.unwrap_or(0) == want
        && s.available_replicas.unwrap_or(0) == want
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// `calculateStatus` and `syncRolloutStatus`: counts from the ReplicaSets,
/// Available from the availability budget, Progressing from how the
/// rollout moved since the last status (or its deadline passing).
pub fn status(
    d: &Deployment,
    all: &[ReplicaSet],
    new: Option<&ReplicaSet>,
    now: jiff::Timestamp,
) -> DeploymentStatus {
    let old = d.status.clone().unwrap_or_default();
    let sum = |f: fn(&ReplicaSet) -> i32| all.iter().map(f).sum::<i32>();
    let total = sum(|rs| rs_status(rs).0);
    let available = sum(|rs| rs_status(rs).2);
    let some = |n: i32| (n != 0).then_some(n);
    let mut s = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: some(total),
        updated_replicas: some(new.map(|n| rs_status(n).0).unwrap_or(0)),
        ready_replicas: some(sum(|rs| rs_status(rs).1)),
        available_replicas: some(available),
        unavailable_replicas: some((total - available).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: None,
    };
    if available >= replicas(d) - max_unavailable(d) {
        set_condition(
            &mut s,
            condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                now,
            ),
        );
    } else {
        set_condition(
            &mut s,
            condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                now,
            ),
        );
    }
    let spec = d.spec.clone().unwrap_or_default();
    let paused = spec.paused.unwrap_or(false);
    let Some(deadline) = spec.progress_deadline_seconds.filter(|_| !paused) else {
        return s;
    };
    let current = get_condition(&s, "Progressing").cloned();
    let done = s.replicas == s.updated_replicas
        && current.as_ref().and_then(|c| c.reason.as_deref()) == Some("NewReplicaSetAvailable");
    if done {
        return s;
    }
    let new_name = new
        .and_then(|n| n.metadata.name.clone())
        .unwrap_or_default();
    let progressed = s.updated_replicas > old.updated_replicas
        || s.replicas.unwrap_or(0) < old.replicas.unwrap_or(0)
        || s.ready_replicas > old.ready_replicas
        || s.available_replicas > old.available_replicas;
    if is_complete(d, &s) {
        set_condition(
            &mut s,
            condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet {new_name:?} has successfully progressed."),
                now,
            ),
        );
    } else if progressed {
        let mut c = condition(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet {new_name:?} is progressing."),
            now,
        );
        if let Some(cur) = current.as_ref().filter(|c| c.status == "True") {
            c.last_transition_time = cur.last_transition_time.clone();
        }
        // Progress moves lastUpdateTime even with the same reason.
        s.conditions
            .get_or_insert_with(Vec::new)
            .retain(|x| x.type_ != "Progressing");
        s.conditions.get_or_insert_with(Vec::new).push(c);
    } else if timed_out(current.as_ref(), deadline, now) {
        set_condition(
            &mut s,
            condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet {new_name:?} has timed out progressing."),
                now,
            ),
        );
    }
    s
}

/// `DeploymentTimedOut`.
fn timed_out(c: Option<&DeploymentCondition>, deadline: i32, now: jiff::Timestamp) -> bool {
    let Some(c) = c else { return false };
    match c.reason.as_deref() {
        Some("NewReplicaSetAvailable") => false,
        Some("ProgressDeadlineExceeded") => true,
        _ => c
            .last_update_time
            .as_ref()
            .is_some_and(|t| now.as_second() - t.0.as_second() > i64::from(deadline)),
    }
}

/// When to look again for the progress deadline, if it can still pass.
pub fn deadline_check_in(
    d: &Deployment,
    s: &DeploymentStatus,
    now: jiff::Timestamp,
) -> Option<std::time::Duration> {
    let deadline = d.spec.as_ref()?.progress_deadline_seconds?;
    if d.spec.as_ref()?.paused == Some(true) || is_complete(d, s) {
        return None;
    }
    let c = get_condition(s, "Progressing")?;
    if c.reason.as_deref() != Some("ReplicaSetUpdated")
        && c.reason.as_deref() != Some("NewReplicaSetCreated")
        && c.reason.as_deref() != Some("FoundNewReplicaSet")
    {
        return None;
    }
    let since = c.last_update_time.as_ref()?.0.as_second();
    let left = since + i64::from(deadline) + 1 - now.as_second();
    Some(std::time::Duration::from_secs(left.max(1) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(replicas: i32, surge: &str, unavailable: &str) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default", "generation": 2},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
                "progressDeadlineSeconds": 600, "revisionHistoryLimit": 2,
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}}))
        .unwrap()
    }

    fn rs(name: &str, replicas: i32, available: i32, created: &str, rev: i64) -> ReplicaSet {
        serde_json::from_value(json!({"metadata": {"name": name, "creationTimestamp": created,
                "annotations": {REVISION: rev.to_string()}},
            "spec": {"replicas": replicas, "selector": {}},
            "status": {"replicas": replicas, "readyReplicas": available, "availableReplicas": available}}))
        .unwrap()
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        assert_eq!(fenceposts(&deployment(10, "25%", "25%")), (3, 2));
        assert_eq!(fenceposts(&deployment(3, "0%", "0%")), (0, 1));
        assert_eq!(fenceposts(&deployment(4, "1", "0")), (1, 0));
    }

    #[test]
    fn a_rolling_update_surges_then_scales_old_down_within_availability() {
        let d = deployment(4, "25%", "25%");
        let old = rs("web-old", 4, 4, "2024-01-01T00:00:00Z", 1);
        let new = rs("web-new", 0, 0, "2024-02-01T00:00:00Z", 2);
        // One surge pod: the new set may have 1.
        assert_eq!(new_rs_replicas(&d, &[old.clone(), new.clone()], &new), 1);
        // With 5 pods and the new one not available, one old may go (min 3 available).
        let new1 = rs("web-new", 1, 0, "2024-02-01T00:00:00Z", 2);
        assert_eq!(
            scale_down_old(&d, std::slice::from_ref(&old), Some(&new1)),
            [("web-old".to_owned(), 3)]
        );
        // Nothing more goes while the new pod is unavailable.
        let old3 = rs("web-old", 3, 3, "2024-01-01T00:00:00Z", 1);
        assert!(scale_down_old(&d, std::slice::from_ref(&old3), Some(&new1)).is_empty());
        // Unavailable old pods are removed first, beyond the budget.
        // (5 pods, 3 must stay available, the new one is not: one may go.)
        let broken = rs("web-old", 4, 1, "2024-01-01T00:00:00Z", 1);
        assert_eq!(
            scale_down_old(&d, &[broken.clone()], Some(&new1)),
            [("web-old".to_owned(), 3)]
        );
        let d = deployment(4, "25%", "50%");
        assert_eq!(
            scale_down_old(&d, &[broken], Some(&new1)),
            [("web-old".to_owned(), 2)]
        );
    }

    #[test]
    fn resizing_mid_rollout_is_proportional() {
        let mut d = deployment(20, "15%", "0%");
        let a = rs("web-a", 10, 10, "2024-01-01T00:00:00Z", 1);
        let b = rs("web-b", 5, 5, "2024-02-01T00:00:00Z", 2);
        // 23 allowed, 15 there: 8 more, shared 10:5.
        let sizes = proportional_sizes(&d, &[a.clone(), b.clone()]);
        let total: i32 = sizes.iter().map(|(_, s)| s).sum();
        assert_eq!(total, 23, "{sizes:?}");
        d.spec.as_mut().unwrap().replicas = Some(6);
        let sizes = proportional_sizes(&d, &[a, b]);
        // 6 + 1 surge allowed: 7, the smaller set shrinking first.
        assert_eq!(sizes.iter().map(|(_, s)| s).sum::<i32>(), 7, "{sizes:?}");
    }

    #[test]
    fn history_beyond_the_limit_goes_oldest_revision_first() {
        let d = deployment(1, "1", "0");
        let old: Vec<ReplicaSet> = (1..=4)
            .map(|r| rs(&format!("web-{r}"), 0, 0, "2024-01-01T00:00:00Z", r))
            .collect();
        assert_eq!(history_to_delete(&d, &old), ["web-1", "web-2"]);
    }

    #[test]
    fn status_conditions_follow_the_rollout() {
        let now = jiff::Timestamp::now();
        let d = deployment(2, "1", "0");
        let new = rs("web-new", 2, 2, "2024-02-01T00:00:00Z", 2);
        let s = status(&d, std::slice::from_ref(&new), Some(&new), now);
        assert_eq!(s.replicas, Some(2));
        assert_eq!(s.updated_replicas, Some(2));
        let av = get_condition(&s, "Available").unwrap();
        assert_eq!(
            (av.status.as_str(), av.reason.as_deref()),
            ("True", Some("MinimumReplicasAvailable"))
        );
        let p = get_condition(&s, "Progressing").unwrap();
        assert_eq!(p.reason.as_deref(), Some("NewReplicaSetAvailable"));
        assert_eq!(
            p.message.as_deref(),
            Some("ReplicaSet \"web-new\" has successfully progressed.")
        );

        // Stuck past the deadline: ProgressDeadlineExceeded.
        let mut stuck = deployment(2, "1", "0");
        let past = jiff::Timestamp::from_second(now.as_second() - 700).unwrap();
        let mut st = DeploymentStatus {
            updated_replicas: Some(1),
            replicas: Some(2),
            ready_replicas: Some(1),
            available_replicas: Some(1),
            ..Default::default()
        };
        set_condition(
            &mut st,
            condition("Progressing", "True", "ReplicaSetUpdated", "x".into(), past),
        );
        stuck.status = Some(st);
        let half = rs("web-new", 1, 0, "2024-02-01T00:00:00Z", 2);
        let oldrs = rs("web-old", 1, 1, "2024-01-01T00:00:00Z", 1);
        let s = status(&stuck, &[oldrs, half.clone()], Some(&half), now);
        let p = get_condition(&s, "Progressing").unwrap();
        assert_eq!(
            (p.status.as_str(), p.reason.as_deref()),
            ("False", Some("ProgressDeadlineExceeded"))
        );
        let av = get_condition(&s, "Available").unwrap();
        assert_eq!(av.reason.as_deref(), Some("MinimumReplicasUnavailable"));
    }

    #[test]
    fn the_new_replica_set_is_named_by_hash_and_labeled() {
        let d = deployment(3, "1", "0");
        let owner = OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "web".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let rs = new_replica_set(&d, "5d4b9c", 1, 3, owner);
        assert_eq!(rs.metadata.name.as_deref(), Some("web-5d4b9c"));
        let spec = rs.spec.as_ref().unwrap();
        assert_eq!(
            spec.selector.match_labels.as_ref().unwrap()[POD_TEMPLATE_HASH],
            "5d4b9c"
        );
        let t = spec.template.as_ref().unwrap();
        assert_eq!(
            t.metadata.as_ref().unwrap().labels.as_ref().unwrap()[POD_TEMPLATE_HASH],
            "5d4b9c"
        );
        assert_eq!(rs.metadata.annotations.as_ref().unwrap()[REVISION], "3");
        assert_eq!(rs.metadata.annotations.as_ref().unwrap()[MAX_REPLICAS], "4");
        assert_eq!(
            find_new(&d, std::slice::from_ref(&rs)).map(|r| r.metadata.name.clone()),
            Some(rs.metadata.name.clone())
        );
    }
}
