//! What a PodDisruptionBudget's status should say, as the disruption
//! controller's `trySync` computes it: how many pods the budget expects
//! (its pods' controllers' scale, or the pods themselves for an integer
//! `minAvailable`), how many must stay healthy, how many are, and so how
//! many may be disrupted now. Pure; [`super::disruption`] feeds it.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{
    PodDisruptionBudget, PodDisruptionBudgetSpec, PodDisruptionBudgetStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::replicaset_decide::is_ready;
use crate::kinds::policy::{SYNC_FAILED, set_disruption_allowed, update_disruption_allowed};

/// How long an eviction's entry in `status.disruptedPods` counts before
/// the controller gives up waiting to see the pod go (`DeletionTimeout`).
pub const DELETION_TIMEOUT_SECS: i64 = 2 * 60;

/// The scale a pod's controller asks for, found by the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum PodController {
    /// The controller's uid (a Deployment's for its ReplicaSets' pods)
    /// and its `spec.replicas`.
    Scaled { uid: String, replicas: i32 },
    /// The pod has no controller.
    Unmanaged,
    /// The pod names a controller that cannot be found (or has no scale).
    Missing,
}

/// `GetScaledValueFromIntOrPercent`.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let p: i64 = s
                .strip_suffix('%')
                .and_then(|d| d.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let n = p * i64::from(total);
            let v = if round_up {
                (n + 99).div_euclid(100)
            } else {
                n.div_euclid(100)
            };
            Ok(v as i32)
        }
    }
}

/// What the budget expects: `(expectedCount, desiredHealthy)`, and the
/// pods that have no controller (left out of a scale-based count).
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    pub expected: i32,
    pub desired_healthy: i32,
    pub unmanaged: Vec<String>,
}

/// `getExpectedPodCount`.
pub fn expected_pod_count(
    spec: &PodDisruptionBudgetSpec,
    pods: &[(&Pod, PodController)],
) -> Result<Expectation, String> {
    let mut unmanaged = Vec::new();
    let mut expected_scale = || -> Result<i32, String> {
        let mut seen = BTreeSet::new();
        let mut total = 0;
        for (pod, c) in pods {
            match c {
                PodController::Scaled { uid, replicas } => {
                    if seen.insert(uid.clone()) {
                        total += replicas;
                    }
                }
                PodController::Unmanaged => {
                    unmanaged.push(pod.metadata.name.clone().unwrap_or_default())
                }
                PodController::Missing => {
                    return Err(format!(
                        "found no controllers for pod {:?}",
                        pod.metadata.name.as_deref().unwrap_or_default()
                    ));
                }
            }
        }
        Ok(total)
    };
    let (expected, desired_healthy) = if let Some(max) = &spec.max_unavailable {
        let expected = expected_scale()?;
        let max = scaled_value(max, expected, true)?;
        (expected, (expected - max).max(0))
    } else {
        match &spec.min_available {
            Some(IntOrString::Int(min)) => (pods.len() as i32, *min),
            Some(min) => {
                let expected = expected_scale()?;
                (expected, scaled_value(min, expected, true)?)
            }
            None => (pods.len() as i32, 0),
        }
    };
    Ok(Expectation {
        expected,
        desired_healthy,
        unmanaged,
    })
}

/// `buildDisruptedPodMap`: the evictions still awaited (the pod is there
/// and not yet deleting, and the eviction is under two minutes old), and
/// when the oldest of them expires.
pub fn disrupted_pods(
    recorded: Option<&BTreeMap<String, Time>>,
    pods: &[&Pod],
    now: jiff::Timestamp,
) -> (BTreeMap<String, Time>, Option<jiff::Timestamp>) {
    let mut kept = BTreeMap::new();
    let mut recheck: Option<jiff::Timestamp> = None;
    let Some(recorded) = recorded else {
        return (kept, None);
    };
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(at) = recorded.get(&name) else {
            continue;
        };
        let expires = at.0.as_second() + DELETION_TIMEOUT_SECS;
        if expires < now.as_second() {
            tracing::info!(pod = %name, "eviction not confirmed within the deletion timeout");
            continue;
        }
        let expires = jiff::Timestamp::from_second(expires).unwrap_or(now);
        recheck = Some(recheck.map_or(expires, |r| r.min(expires)));
        kept.insert(name, at.clone());
    }
    (kept, recheck)
}

/// `countHealthyPods`: ready, not deleting, and not just evicted.
pub fn count_healthy(pods: &[&Pod], disrupted: &BTreeMap<String, Time>) -> i32 {
    pods.iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or_default())
                && is_ready(p)
        })
        .count() as i32
}

/// Whether a budget's selector covers a pod: in policy/v1 an empty
/// selector covers the whole namespace, a missing one nothing.
pub fn selects(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    pdb.metadata.namespace == pod.metadata.namespace
        && pdb
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .is_some_and(|s| {
                kubelab_rules::selector::matches(
                    s,
                    pod.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()),
                )
            })
}

/// `updatePdbStatus`: the status from the counts, its condition following.
pub fn new_status(
    pdb: &PodDisruptionBudget,
    current_healthy: i32,
    expectation: &Expectation,
    disrupted: BTreeMap<String, Time>,
    now: jiff::Timestamp,
) -> PodDisruptionBudgetStatus {
    let mut allowed = current_healthy - expectation.desired_healthy;
    if expectation.expected <= 0 || allowed <= 0 {
        allowed = 0;
    }
    let mut status = pdb.status.clone().unwrap_or_default();
    status.current_healthy = current_healthy;
    status.desired_healthy = expectation.desired_healthy;
    status.expected_pods = expectation.expected;
    status.disruptions_allowed = allowed;
    status.disrupted_pods = (!disrupted.is_empty()).then_some(disrupted);
    status.observed_generation = pdb.metadata.generation;
    update_disruption_allowed(&mut status, now);
    status
}

/// `failSafe`: no disruptions until the controller can count again.
pub fn failsafe_status(
    pdb: &PodDisruptionBudget,
    message: String,
    now: jiff::Timestamp,
) -> PodDisruptionBudgetStatus {
    let mut status = pdb.status.clone().unwrap_or_default();
    status.disruptions_allowed = 0;
    status.observed_generation = pdb.metadata.generation;
    set_disruption_allowed(&mut status, false, SYNC_FAILED, message, now);
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn owned(uid: &str, replicas: i32) -> PodController {
        PodController::Scaled {
            uid: uid.into(),
            replicas,
        }
    }

    fn budget(min: Option<IntOrString>, max: Option<IntOrString>) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: ObjectMeta {
                generation: Some(3),
                ..Default::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                min_available: min,
                max_unavailable: max,
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn percentages_scale_with_the_controllers_replicas_rounding_up() {
        assert_eq!(
            scaled_value(&IntOrString::String("50%".into()), 3, true),
            Ok(2)
        );
        assert_eq!(
            scaled_value(&IntOrString::String("50%".into()), 3, false),
            Ok(1)
        );
        assert!(scaled_value(&IntOrString::String("half".into()), 3, true).is_err());
        let (a, b, c) = (pod("a", true), pod("b", true), pod("c", false));
        // Three pods of one Deployment of 4 (one still to come).
        let pods = [
            (&a, owned("d", 4)),
            (&b, owned("d", 4)),
            (&c, owned("d", 4)),
        ];
        let max = budget(None, Some(IntOrString::String("30%".into())));
        let e = expected_pod_count(max.spec.as_ref().unwrap(), &pods).unwrap();
        assert_eq!((e.expected, e.desired_healthy), (4, 2));
        let min = budget(Some(IntOrString::String("50%".into())), None);
        let e = expected_pod_count(min.spec.as_ref().unwrap(), &pods).unwrap();
        assert_eq!((e.expected, e.desired_healthy), (4, 2));
        // An integer minAvailable counts the pods themselves.
        let min = budget(Some(IntOrString::Int(2)), None);
        let e = expected_pod_count(min.spec.as_ref().unwrap(), &pods).unwrap();
        assert_eq!((e.expected, e.desired_healthy), (3, 2));
    }

    #[test]
    fn unmanaged_pods_are_named_and_missing_controllers_fail() {
        let (a, b) = (pod("a", true), pod("b", true));
        let spec = budget(None, Some(IntOrString::Int(1))).spec.unwrap();
        let e = expected_pod_count(
            &spec,
            &[(&a, owned("r", 1)), (&b, PodController::Unmanaged)],
        )
        .unwrap();
        assert_eq!(e.unmanaged, ["b"]);
        assert_eq!((e.expected, e.desired_healthy), (1, 0));
        let err = expected_pod_count(&spec, &[(&a, PodController::Missing)]).unwrap_err();
        assert_eq!(err, "found no controllers for pod \"a\"");
    }

    #[test]
    fn a_deployment_of_three_with_min_available_two_allows_one_disruption() {
        let (a, b, c) = (pod("a", true), pod("b", true), pod("c", true));
        let pdb = budget(Some(IntOrString::Int(2)), None);
        let pods = [
            (&a, owned("d", 3)),
            (&b, owned("d", 3)),
            (&c, owned("d", 3)),
        ];
        let e = expected_pod_count(pdb.spec.as_ref().unwrap(), &pods).unwrap();
        let now = jiff::Timestamp::now();
        let all = [&a, &b, &c];
        let (disrupted, _) = disrupted_pods(None, &all, now);
        let s = new_status(&pdb, count_healthy(&all, &disrupted), &e, disrupted, now);
        assert_eq!(
            (
                s.current_healthy,
                s.desired_healthy,
                s.expected_pods,
                s.disruptions_allowed
            ),
            (3, 2, 3, 1)
        );
        assert_eq!(s.observed_generation, Some(3));
        let cond = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (
                cond.type_.as_str(),
                cond.status.as_str(),
                cond.reason.as_str()
            ),
            ("DisruptionAllowed", "True", "SufficientPods")
        );

        // One evicted a moment ago: it no longer counts, nothing more may go.
        let recorded = BTreeMap::from([("a".to_string(), Time(now))]);
        let (disrupted, recheck) = disrupted_pods(Some(&recorded), &all, now);
        assert_eq!(
            recheck.map(|r| r.as_second()),
            Some(now.as_second() + DELETION_TIMEOUT_SECS)
        );
        let s = new_status(&pdb, count_healthy(&all, &disrupted), &e, disrupted, now);
        assert_eq!((s.current_healthy, s.disruptions_allowed), (2, 0));
        assert_eq!(s.disrupted_pods.as_ref().map(|d| d.len()), Some(1));
        let cond = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("False", "InsufficientPods")
        );

        // An eviction older than the deletion timeout is forgotten.
        let old = jiff::Timestamp::from_second(now.as_second() - 200).unwrap();
        let recorded = BTreeMap::from([("a".to_string(), Time(old))]);
        let (disrupted, recheck) = disrupted_pods(Some(&recorded), &all, now);
        assert!(disrupted.is_empty() && recheck.is_none());
    }

    #[test]
    fn unready_pods_and_no_expected_pods_allow_nothing() {
        let (a, b) = (pod("a", true), pod("b", false));
        let pdb = budget(None, Some(IntOrString::Int(1)));
        let pods = [(&a, owned("d", 2)), (&b, owned("d", 2))];
        let e = expected_pod_count(pdb.spec.as_ref().unwrap(), &pods).unwrap();
        let now = jiff::Timestamp::now();
        let all = [&a, &b];
        let s = new_status(
            &pdb,
            count_healthy(&all, &BTreeMap::new()),
            &e,
            BTreeMap::new(),
            now,
        );
        assert_eq!(
            (s.current_healthy, s.desired_healthy, s.disruptions_allowed),
            (1, 1, 0)
        );
        let none = expected_pod_count(pdb.spec.as_ref().unwrap(), &[]).unwrap();
        let s = new_status(&pdb, 0, &none, BTreeMap::new(), now);
        assert_eq!(s.disruptions_allowed, 0);
        let failed = failsafe_status(&pdb, "found no controllers for pod \"x\"".into(), now);
        let cond = &failed.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (cond.reason.as_str(), failed.disruptions_allowed),
            ("SyncFailed", 0)
        );
    }

    fn selecting(
        selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    ) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                selector,
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn an_empty_selector_covers_the_namespace_a_missing_one_nothing() {
        let pod = Pod {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(selects(
            &selecting(Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector::default()
            )),
            &pod
        ));
        assert!(!selects(&selecting(None), &pod));
        let other = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "db".into())])),
            ..Default::default()
        };
        assert!(!selects(&selecting(Some(other)), &pod));
    }
}
