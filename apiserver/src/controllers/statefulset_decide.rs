//! The StatefulSet controller's decisions, pure
//! (`pkg/controller/statefulset`: `stateful_set_control.go`,
//! `stateful_set_utils.go`): the pod of each ordinal with its stable name,
//! hostname and claims, which pods to create, delete or replace next under
//! OrderedReady or Parallel management, RollingUpdate (partition,
//! maxUnavailable) and OnDelete, and the status.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::controller_history::REVISION_HASH_LABEL;
use super::replicaset_decide::{is_available, is_ready};

/// `apps.StatefulSetPodNameLabel`.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// `apps.PodIndexLabel`.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

pub fn replicas(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.ordinals.as_ref())
        .and_then(|o| o.start)
        .unwrap_or(0)
}

fn name(set: &StatefulSet) -> &str {
    set.metadata.name.as_deref().unwrap_or_default()
}

/// `getParentNameAndOrdinal`: the ordinal of a pod named `<set>-<n>`.
pub fn ordinal_of(set: &StatefulSet, pod: &Pod) -> Option<i32> {
    let pod_name = pod.metadata.name.as_deref()?;
    let n = pod_name.strip_prefix(name(set))?.strip_prefix('-')?;
    if n.is_empty() || (n.len() > 1 && n.starts_with('0')) {
        return None;
    }
    n.parse().ok()
}

pub fn pod_name(set: &StatefulSet, ordinal: i32) -> String {
    format!("{}-{ordinal}", name(set))
}

/// `getPersistentVolumeClaimName`: `<template>-<set>-<ordinal>`.
pub fn claim_name(set: &StatefulSet, template: &PersistentVolumeClaim, ordinal: i32) -> String {
    format!(
        "{}-{}",
        template.metadata.name.as_deref().unwrap_or_default(),
        pod_name(set, ordinal)
    )
}

fn claim_templates(set: &StatefulSet) -> &[PersistentVolumeClaim] {
    set.spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_deref())
        .unwrap_or_default()
}

pub fn controller_ref(set: &StatefulSet) -> OwnerReference {
    super::replicaset_decide::controller_ref("apps/v1", "StatefulSet", &set.metadata)
}

/// The claims the pod of `ordinal` mounts (`getPersistentVolumeClaims`):
/// each template's spec, the set's selector labels, owned by the set when
/// `whenDeleted: Delete`.
pub fn claims_for(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let selector_labels = set
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    let delete_with_set = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref())
        .and_then(|p| p.when_deleted.as_deref())
        == Some("Delete");
    claim_templates(set)
        .iter()
        .map(|t| {
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.extend(selector_labels.clone());
            let owner = delete_with_set.then(|| {
                let mut r = controller_ref(set);
                r.controller = None;
                vec![r]
            });
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(set, t, ordinal)),
                    namespace: set.metadata.namespace.clone(),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    owner_references: owner,
                    ..Default::default()
                },
                spec: t.spec.clone(),
                status: None,
            }
        })
        .collect()
}

/// `newVersionedStatefulSetPod`: the pod of `ordinal` from `template`
/// (the revision it belongs to), named and labelled for its identity,
/// with one claim volume per template.
pub fn pod_for(set: &StatefulSet, template: &PodTemplateSpec, hash: &str, ordinal: i32) -> Pod {
    let pod_name = pod_name(set, ordinal);
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), pod_name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_HASH_LABEL.into(), hash.into());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(pod_name.clone());
    spec.subdomain = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .filter(|s| !s.is_empty());
    // `updateStorage`: a claim template replaces a template volume of its name.
    let mut volumes: Vec<Volume> = spec.volumes.take().unwrap_or_default();
    for t in claim_templates(set) {
        let vname = t.metadata.name.clone().unwrap_or_default();
        volumes.retain(|v| v.name != vname);
        volumes.push(Volume {
            name: vname,
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(set, t, ordinal),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    spec.volumes = (!volumes.is_empty()).then_some(volumes);
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name),
            namespace: set.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![controller_ref(set)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

pub fn revision_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(REVISION_HASH_LABEL)
        .map(String::as_str)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn is_failed(pod: &Pod) -> bool {
    phase(pod) == "Failed"
}

fn is_succeeded(pod: &Pod) -> bool {
    phase(pod) == "Succeeded"
}

fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// `isRunningAndReady`.
fn is_running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running" && is_ready(pod)
}

/// `isHealthy`: running, ready and not going away.
fn is_healthy(pod: &Pod) -> bool {
    is_running_and_ready(pod) && !is_terminating(pod)
}

fn is_ordered_ready(set: &StatefulSet) -> bool {
    set.spec
        .as_ref()
        .and_then(|s| s.pod_management_policy.as_deref())
        .unwrap_or("OrderedReady")
        == "OrderedReady"
}

fn strategy_type(set: &StatefulSet) -> &str {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
}

fn partition(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0)
}

/// `getStatefulSetMaxUnavailable`: at least 1.
pub fn max_unavailable(set: &StatefulSet) -> i32 {
    let r = replicas(set);
    let v = set
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.clone())
        .unwrap_or(IntOrString::Int(1));
    let n = match v {
        IntOrString::Int(i) => i,
        IntOrString::String(s) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            ((i64::from(r) * pct) / 100) as i32
        }
    };
    n.max(1)
}

/// One thing the controller does to the set's pods.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create the pod of this ordinal at the current (`false`) or the
    /// update (`true`) revision, after its missing claims.
    Create { ordinal: i32, update_revision: bool },
    /// Create the claims of a pod that exists without them.
    CreateClaims { ordinal: i32 },
    /// Delete this pod (failed, condemned by a scale down, or out of date).
    Delete(String),
}

/// Which pods to touch next (`updateStatefulSet`). `pods` are the set's
/// pods; `claims_missing(ordinal)` says whether any of the ordinal's claims
/// is absent.
pub fn plan(
    set: &StatefulSet,
    pods: &[Pod],
    current_revision: &str,
    update_revision: &str,
    claims_missing: impl Fn(i32) -> bool,
) -> Vec<Action> {
    let start = start_ordinal(set);
    let end = start + replicas(set);
    let monotonic = is_ordered_ready(set);
    let mut actions = Vec::new();
    let mut by_ordinal: BTreeMap<i32, &Pod> = BTreeMap::new();
    let mut condemned: Vec<(i32, &Pod)> = Vec::new();
    for p in pods {
        match ordinal_of(set, p) {
            Some(o) if (start..end).contains(&o) => {
                by_ordinal.insert(o, p);
            }
            Some(o) => condemned.push((o, p)),
            None => {}
        }
    }
    condemned.sort_by_key(|(o, _)| std::cmp::Reverse(*o));
    // The revision a (re)created pod gets (`newVersionedStatefulSetPod`).
    let at_update = |o: i32| {
        current_revision == update_revision
            || strategy_type(set) != "RollingUpdate"
            || o >= start + partition(set)
    };
    // Replicas first, lowest ordinal first; OrderedReady stops at the
    // first one that is not yet running and ready.
    for o in start..end {
        let Some(pod) = by_ordinal.get(&o) else {
            actions.push(Action::Create {
                ordinal: o,
                update_revision: at_update(o),
            });
            if monotonic {
                return actions;
            }
            continue;
        };
        if is_failed(pod) || is_succeeded(pod) {
            if !is_terminating(pod) {
                actions.push(Action::Delete(
                    pod.metadata.name.clone().unwrap_or_default(),
                ));
            }
            if monotonic {
                return actions;
            }
            continue;
        }
        if claims_missing(o) {
            actions.push(Action::CreateClaims { ordinal: o });
        }
        if monotonic && !is_healthy(pod) {
            return actions;
        }
    }
    // Then the condemned, highest ordinal first; OrderedReady one at a
    // time, and only while the rest are healthy.
    for (_, pod) in &condemned {
        if is_terminating(pod) {
            if monotonic {
                return actions;
            }
            continue;
        }
        if monotonic && by_ordinal.values().any(|p| !is_healthy(p)) {
            return actions;
        }
        actions.push(Action::Delete(
            pod.metadata.name.clone().unwrap_or_default(),
        ));
        if monotonic {
            return actions;
        }
    }
    if !actions.is_empty() || strategy_type(set) != "RollingUpdate" {
        return actions;
    }
    // RollingUpdate: from the highest ordinal down to the partition, an
    // out-of-date pod is deleted (and recreated at the update revision)
    // while at most maxUnavailable pods are unhealthy.
    let unhealthy = by_ordinal.values().filter(|p| !is_healthy(p)).count() as i32;
    let mut budget = max_unavailable(set) - unhealthy;
    for o in (start + partition(set).max(0)..end).rev() {
        let Some(pod) = by_ordinal.get(&o) else {
            continue;
        };
        if revision_of(pod) == Some(update_revision) {
            continue;
        }
        if is_terminating(pod) || budget <= 0 {
            break;
        }
        actions.push(Action::Delete(
            pod.metadata.name.clone().unwrap_or_default(),
        ));
        budget -= 1;
    }
    actions
}

/// The status of the set (`computeReplicaStatus` and
/// `completeRollingUpdate`).
pub fn status(
    set: &StatefulSet,
    pods: &[Pod],
    current_revision: &str,
    update_revision: &str,
    now: jiff::Timestamp,
) -> StatefulSetStatus {
    let min_ready = set
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let mut st = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        collision_count: set.status.as_ref().and_then(|s| s.collision_count),
        current_revision: Some(current_revision.to_owned()),
        update_revision: Some(update_revision.to_owned()),
        ..Default::default()
    };
    let (mut ready, mut available, mut current, mut updated) = (0, 0, 0, 0);
    for p in pods.iter().filter(|p| ordinal_of(set, p).is_some()) {
        if is_terminating(p) || is_failed(p) || is_succeeded(p) {
            continue;
        }
        st.replicas += 1;
        if is_running_and_ready(p) {
            ready += 1;
            if is_available(p, min_ready, now) {
                available += 1;
            }
        }
        if revision_of(p) == Some(current_revision) {
            current += 1;
        }
        if revision_of(p) == Some(update_revision) {
            updated += 1;
        }
    }
    st.ready_replicas = Some(ready);
    st.available_replicas = Some(available);
    st.current_replicas = Some(current);
    st.updated_replicas = Some(updated);
    if strategy_type(set) == "RollingUpdate"
        && updated == replicas(set)
        && ready == replicas(set)
        && st.replicas == replicas(set)
    {
        st.current_revision = Some(update_revision.to_owned());
        st.current_replicas = Some(updated);
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(extra: serde_json::Value) -> StatefulSet {
        let mut v = json!({"metadata": {"name": "web", "namespace": "default", "uid": "set-uid"},
            "spec": {"replicas": 3, "serviceName": "nginx",
                "selector": {"matchLabels": {"app": "nginx"}},
                "template": {"metadata": {"labels": {"app": "nginx"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx"}],
                        "volumes": [{"name": "www", "emptyDir": {}}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "www"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}});
        if let serde_json::Value::Object(extra) = extra {
            for (k, val) in extra {
                v["spec"][k] = val;
            }
        }
        serde_json::from_value(v).unwrap()
    }

    fn pod(name: &str, rev: &str, state: &str) -> Pod {
        let (phase, ready, deleting) = match state {
            "ready" => ("Running", "True", false),
            "starting" => ("Running", "False", false),
            "pending" => ("Pending", "False", false),
            "failed" => ("Failed", "False", false),
            "terminating" => ("Running", "True", true),
            _ => unreachable!(),
        };
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {REVISION_HASH_LABEL: rev}},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]}}))
        .unwrap();
        if deleting {
            p.metadata.deletion_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
            );
        }
        p
    }

    fn creates(actions: &[Action]) -> Vec<i32> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Create { ordinal, .. } => Some(*ordinal),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn pods_have_stable_names_hostnames_and_claims() {
        let s = set(json!({}));
        let p = pod_for(&s, &s.spec.as_ref().unwrap().template, "abc", 2);
        assert_eq!(p.metadata.name.as_deref(), Some("web-2"));
        let labels = p.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[POD_NAME_LABEL], "web-2");
        assert_eq!(labels[POD_INDEX_LABEL], "2");
        assert_eq!(labels[REVISION_HASH_LABEL], "abc");
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let vols = spec.volumes.as_ref().unwrap();
        assert_eq!(
            vols.len(),
            1,
            "the claim replaces the template's volume of its name"
        );
        assert_eq!(
            vols[0].persistent_volume_claim.as_ref().unwrap().claim_name,
            "www-web-2"
        );
        let claims = claims_for(&s, 2);
        assert_eq!(claims[0].metadata.name.as_deref(), Some("www-web-2"));
        assert_eq!(claims[0].metadata.labels.as_ref().unwrap()["app"], "nginx");
        assert!(
            claims[0].metadata.owner_references.is_none(),
            "Retain: claims outlive the set"
        );
        let deleting = set(
            json!({"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"}}),
        );
        assert_eq!(
            claims_for(&deleting, 0)[0]
                .metadata
                .owner_references
                .as_ref()
                .unwrap()[0]
                .uid,
            "set-uid"
        );
        assert_eq!(ordinal_of(&s, &pod("web-10", "a", "ready")), Some(10));
        assert_eq!(ordinal_of(&s, &pod("web-01", "a", "ready")), None);
        assert_eq!(ordinal_of(&s, &pod("webby-1", "a", "ready")), None);
    }

    #[test]
    fn ordered_ready_creates_one_at_a_time_and_deletes_from_the_top() {
        let s = set(json!({}));
        let none = |_| false;
        assert_eq!(creates(&plan(&s, &[], "a", "a", none)), [0]);
        let starting = [pod("web-0", "a", "starting")];
        assert!(
            plan(&s, &starting, "a", "a", none).is_empty(),
            "waits for web-0 to be ready"
        );
        let one = [pod("web-0", "a", "ready")];
        assert_eq!(creates(&plan(&s, &one, "a", "a", none)), [1]);
        // A deleted middle pod comes back first, with the same name.
        let gap = [pod("web-0", "a", "ready"), pod("web-2", "a", "ready")];
        assert_eq!(creates(&plan(&s, &gap, "a", "a", none)), [1]);
        // A failed pod is deleted, to be recreated.
        let failed = [pod("web-0", "a", "failed")];
        assert_eq!(
            plan(&s, &failed, "a", "a", none),
            [Action::Delete("web-0".into())]
        );
        // Scale down: the highest ordinal first, one at a time.
        let over: Vec<Pod> = (0..5)
            .map(|i| pod(&format!("web-{i}"), "a", "ready"))
            .collect();
        assert_eq!(
            plan(&s, &over, "a", "a", none),
            [Action::Delete("web-4".into())]
        );
        let mut going = over.clone();
        going[4] = pod("web-4", "a", "terminating");
        assert!(plan(&s, &going, "a", "a", none).is_empty());
        // Parallel: everything at once.
        let p = set(json!({"podManagementPolicy": "Parallel"}));
        assert_eq!(creates(&plan(&p, &[], "a", "a", none)), [0, 1, 2]);
        assert_eq!(
            plan(&p, &over, "a", "a", none),
            [
                Action::Delete("web-4".into()),
                Action::Delete("web-3".into())
            ]
        );
        // Claims deleted under a live pod come back.
        let all: Vec<Pod> = (0..3)
            .map(|i| pod(&format!("web-{i}"), "a", "ready"))
            .collect();
        assert_eq!(
            plan(&s, &all, "a", "a", |o| o == 1),
            [Action::CreateClaims { ordinal: 1 }]
        );
    }

    #[test]
    fn rolling_update_goes_down_from_the_top_to_the_partition() {
        let s = set(json!({}));
        let none = |_| false;
        let old: Vec<Pod> = (0..3)
            .map(|i| pod(&format!("web-{i}"), "a", "ready"))
            .collect();
        assert_eq!(
            plan(&s, &old, "a", "b", none),
            [Action::Delete("web-2".into())]
        );
        let mut mid = old.clone();
        mid[2] = pod("web-2", "b", "starting");
        assert!(
            plan(&s, &mid, "a", "b", none).is_empty(),
            "waits for the updated pod"
        );
        mid[2] = pod("web-2", "b", "ready");
        assert_eq!(
            plan(&s, &mid, "a", "b", none),
            [Action::Delete("web-1".into())]
        );
        // partition 2: only web-2 is updated; pods below keep the old revision.
        let part = set(
            json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}),
        );
        assert!(plan(&part, &mid, "a", "b", none).is_empty());
        assert_eq!(
            plan(&part, &[pod("web-0", "a", "ready")], "a", "b", none),
            [Action::Create {
                ordinal: 1,
                update_revision: false
            }]
        );
        // maxUnavailable 2 replaces two at a time.
        let wide = set(
            json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}}}),
        );
        assert_eq!(
            plan(&wide, &old, "a", "b", none),
            [
                Action::Delete("web-2".into()),
                Action::Delete("web-1".into())
            ]
        );
        // OnDelete never deletes for an update; a recreated pod is new.
        let on_delete = set(json!({"updateStrategy": {"type": "OnDelete"}}));
        assert!(plan(&on_delete, &old, "a", "b", none).is_empty());
        assert_eq!(
            plan(&on_delete, &old[..2], "a", "b", none),
            [Action::Create {
                ordinal: 2,
                update_revision: true
            }]
        );
    }

    #[test]
    fn status_counts_and_completes_the_rollout() {
        let s = set(json!({}));
        let now = jiff::Timestamp::now();
        let pods = [
            pod("web-0", "a", "ready"),
            pod("web-1", "b", "ready"),
            pod("web-2", "b", "starting"),
        ];
        let st = status(&s, &pods, "a", "b", now);
        assert_eq!(
            (
                st.replicas,
                st.ready_replicas,
                st.current_replicas,
                st.updated_replicas
            ),
            (3, Some(2), Some(1), Some(2))
        );
        assert_eq!(st.current_revision.as_deref(), Some("a"));
        let done = [
            pod("web-0", "b", "ready"),
            pod("web-1", "b", "ready"),
            pod("web-2", "b", "ready"),
        ];
        let st = status(&s, &done, "a", "b", now);
        assert_eq!(st.current_revision.as_deref(), Some("b"));
        assert_eq!(st.current_replicas, Some(3));
    }
}
