//! DefaultPreemption (PostFilter): when a pod fits nowhere, find a node
//! where evicting lower-priority pods makes room, with the fewest and least
//! important victims, preferring victims whose eviction violates no
//! PodDisruptionBudget. Pure: it names the node and the victims; the
//! caller nominates the pod there and deletes the victims gracefully.

use std::collections::BTreeMap;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use super::framework::{FitError, Profile, run_filters};
use super::node_info::PodInfo;
use super::plugins::{Code, CycleState, Plugin, Rejection, Snapshot};

pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// The node to nominate and the pods to evict there.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub node: String,
    pub victims: Vec<PodInfo>,
    /// Victims whose eviction a PodDisruptionBudget does not allow.
    pub pdb_violations: usize,
}

/// `filterPodsWithPDBViolation`: splits pods (in order) into those whose
/// eviction would exceed a budget's `disruptionsAllowed` and the others.
/// Evicting several pods of one budget uses its allowance up in turn; a
/// pod the budget already counts as disrupted takes nothing from it. A
/// budget with an empty selector covers nothing here.
pub fn split_by_budget_violation(
    pods: Vec<PodInfo>,
    budgets: &[PodDisruptionBudget],
) -> (Vec<PodInfo>, Vec<PodInfo>) {
    let mut allowed: Vec<i32> = budgets
        .iter()
        .map(|b| b.status.as_ref().map_or(0, |s| s.disruptions_allowed))
        .collect();
    let (mut violating, mut fine) = (Vec::new(), Vec::new());
    for p in pods {
        let labels = p.pod.metadata.labels.clone().unwrap_or_default();
        let mut violated = false;
        if !labels.is_empty() {
            for (i, b) in budgets.iter().enumerate() {
                if b.metadata.namespace.as_deref() != Some(p.namespace.as_str()) {
                    continue;
                }
                let Some(sel) = b.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
                    continue;
                };
                if kubelab_rules::selector::is_empty(sel)
                    || !kubelab_rules::selector::matches(sel, &labels)
                {
                    continue;
                }
                let disrupted = b
                    .status
                    .as_ref()
                    .and_then(|s| s.disrupted_pods.as_ref())
                    .is_some_and(|d| d.contains_key(&p.name));
                if disrupted {
                    continue;
                }
                allowed[i] -= 1;
                violated |= allowed[i] < 0;
            }
        }
        if violated {
            violating.push(p);
        } else {
            fine.push(p);
        }
    }
    (violating, fine)
}

fn start_time(p: &PodInfo) -> Option<jiff::Timestamp> {
    p.pod.status.as_ref()?.start_time.as_ref().map(|t| t.0)
}

/// `PodEligibleToPreemptOthers`: `None` if the pod may preempt, else why not.
pub fn ineligible(state: &CycleState, snapshot: &Snapshot) -> Option<&'static str> {
    let spec = state.pod.pod.spec.as_ref()?;
    if spec.preemption_policy.as_deref() == Some("Never") {
        return Some("not eligible due to preemptionPolicy=Never.");
    }
    let nominated = state
        .pod
        .pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty())?;
    let node = snapshot.nodes.iter().find(|n| n.name == nominated)?;
    // Victims of an earlier round are still terminating: wait for them.
    node.pods
        .iter()
        .any(|p| p.is_terminating() && p.priority < state.pod.priority)
        .then_some("not eligible due to a terminating pod on the nominated node.")
}

/// Why preemption found no node: the `preemption: …` message, and
/// whether the pod's earlier nomination goes (no candidate anywhere) or
/// stays (the pod may not preempt yet: its victims are still leaving).
#[derive(Debug, Clone, PartialEq)]
pub struct NoCandidate {
    pub message: String,
    pub clear_nomination: bool,
}

/// Finds the best candidate, or says why there is none.
pub fn preempt(
    profile: &Profile,
    snapshot: &Snapshot,
    state: &CycleState,
    fit: &FitError,
    budgets: &[PodDisruptionBudget],
) -> Result<Candidate, NoCandidate> {
    if let Some(why) = ineligible(state, snapshot) {
        return Err(NoCandidate {
            message: format!("preemption: {why}"),
            clear_nomination: false,
        });
    }
    let mut statuses: BTreeMap<String, Rejection> = BTreeMap::new();
    let mut candidates = Vec::new();
    for node in snapshot.nodes {
        let helpful = fit
            .statuses
            .get(&node.name)
            .is_some_and(|r| r.code == Code::Unschedulable);
        if !helpful {
            statuses.insert(
                node.name.clone(),
                Rejection::new(
                    Plugin::DefaultPreemption,
                    Code::UnschedulableAndUnresolvable,
                    NOT_HELPFUL,
                ),
            );
            continue;
        }
        match victims_on(profile, snapshot, state, node, budgets) {
            Some((victims, pdb_violations)) => candidates.push(Candidate {
                node: node.name.clone(),
                victims,
                pdb_violations,
            }),
            None => {
                statuses.insert(
                    node.name.clone(),
                    Rejection::new(Plugin::DefaultPreemption, Code::Unschedulable, NO_VICTIMS),
                );
            }
        }
    }
    if candidates.is_empty() {
        let inner = FitError {
            num_all_nodes: snapshot.nodes.len(),
            statuses,
            pre_filter_msg: None,
            post_filter_msg: None,
        };
        return Err(NoCandidate {
            message: format!("preemption: {}", inner.message()),
            clear_nomination: true,
        });
    }
    Ok(pick_one(candidates))
}

/// `SelectVictimsOnNode`: remove every lower-priority pod; if the pod then
/// fits, add back the most important ones while it still fits, those
/// whose eviction would violate a budget first. Returns the victims and
/// how many of them violate a budget.
fn victims_on(
    profile: &Profile,
    snapshot: &Snapshot,
    state: &CycleState,
    node: &super::node_info::NodeInfo,
    budgets: &[PodDisruptionBudget],
) -> Option<(Vec<PodInfo>, usize)> {
    let mut trial = node.clone();
    let mut lower: Vec<PodInfo> = node
        .pods
        .iter()
        .filter(|p| p.priority < state.pod.priority)
        .cloned()
        .collect();
    if lower.is_empty() {
        return None;
    }
    for p in &lower {
        trial.remove_pod(&p.uid);
    }
    run_filters(profile, state, &trial, snapshot).ok()?;
    // Most important first: higher priority, then started earlier.
    lower.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| start_time(a).cmp(&start_time(b)))
    });
    let (violating, fine) = split_by_budget_violation(lower, budgets);
    let mut victims = Vec::new();
    let mut violations = 0;
    for (p, violates) in violating
        .into_iter()
        .map(|p| (p, true))
        .chain(fine.into_iter().map(|p| (p, false)))
    {
        trial.add_pod(p.clone());
        if run_filters(profile, state, &trial, snapshot).is_err() {
            trial.remove_pod(&p.uid);
            victims.push(p);
            violations += usize::from(violates);
        }
    }
    Some((victims, violations))
}

/// `pickOneNodeForPreemption`: the fewest budget violations, then the
/// lowest highest-priority victim, then the smallest priority sum, then
/// the fewest victims.
fn pick_one(mut candidates: Vec<Candidate>) -> Candidate {
    let key = |c: &Candidate| {
        let highest = c
            .victims
            .iter()
            .map(|v| v.priority)
            .max()
            .unwrap_or(i32::MIN);
        let sum: i64 = c
            .victims
            .iter()
            .map(|v| i64::from(v.priority) + i64::from(i32::MAX) + 1)
            .sum();
        (c.pdb_violations, highest, sum, c.victims.len())
    };
    candidates.sort_by_key(key);
    candidates.swap_remove(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::{Profile, schedule_pod};
    use crate::scheduler::node_info::NodeInfo;
    use crate::scheduler::plugins::testing::*;
    use std::collections::HashMap;

    fn prioritized(name: &str, cpu: &str, priority: i32, node: Option<&str>) -> PodInfo {
        let mut p = pod(name, cpu, "");
        p.spec.as_mut().unwrap().priority = Some(priority);
        match node {
            Some(n) => on(p, n),
            None => pinfo(p),
        }
    }

    fn run(nodes: &[NodeInfo], incoming: PodInfo) -> Result<Candidate, NoCandidate> {
        run_with_budgets(nodes, incoming, &[])
    }

    fn run_with_budgets(
        nodes: &[NodeInfo],
        incoming: PodInfo,
        budgets: &[PodDisruptionBudget],
    ) -> Result<Candidate, NoCandidate> {
        let ns = HashMap::new();
        let snap = Snapshot {
            nodes,
            namespace_labels: &ns,
            workloads: &NO_WORKLOADS,
            volumes: no_volumes(),
        };
        let profile = Profile::default_named("default-scheduler");
        let failed = schedule_pod(&profile, &snap, incoming, HashMap::new(), 0, |_| 0).unwrap_err();
        preempt(&profile, &snap, &failed.state, &failed.error, budgets)
    }

    fn labelled(name: &str, cpu: &str, priority: i32, node: &str, app: &str) -> PodInfo {
        let mut p = (*prioritized(name, cpu, priority, Some(node)).pod).clone();
        p.metadata.labels = Some([("app".to_string(), app.to_string())].into());
        PodInfo::new(std::sync::Arc::new(p))
    }

    fn budget(app: &str, allowed: i32) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(app.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec {
                selector: Some(
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                        match_labels: Some([("app".to_string(), app.to_string())].into()),
                        ..Default::default()
                    },
                ),
                ..Default::default()
            }),
            status: Some(k8s_openapi::api::policy::v1::PodDisruptionBudgetStatus {
                disruptions_allowed: allowed,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn victims_whose_budget_allows_no_disruption_are_spared_when_possible() {
        // Node a: the cheapest victim by priority, but its budget is spent.
        let mut a = info(node("a", "1", "4Gi", &[]));
        a.add_pod(labelled("guarded", "1", 10, "a", "db"));
        // Node b: a more important victim, with room in its budget.
        let mut b = info(node("b", "1", "4Gi", &[]));
        b.add_pod(labelled("free", "1", 100, "b", "web"));
        let budgets = [budget("db", 0), budget("web", 1)];
        let c = run_with_budgets(
            &[a.clone(), b.clone()],
            prioritized("p", "1", 1000, None),
            &budgets,
        )
        .unwrap();
        assert_eq!((c.node.as_str(), c.pdb_violations), ("b", 0));
        // Without budgets the lower priority decides.
        let c = run(&[a.clone(), b], prioritized("p", "1", 1000, None)).unwrap();
        assert_eq!(c.node, "a");
        // Where only a violating victim makes room, it is still taken.
        let c = run_with_budgets(&[a], prioritized("p", "1", 1000, None), &budgets).unwrap();
        assert_eq!((c.node.as_str(), c.pdb_violations), ("a", 1));
    }

    #[test]
    fn a_budget_allows_as_many_victims_as_its_disruptions() {
        let pods: Vec<PodInfo> = (0..3)
            .map(|i| labelled(&format!("web-{i}"), "1", 0, "a", "web"))
            .collect();
        let (violating, fine) = split_by_budget_violation(pods.clone(), &[budget("web", 2)]);
        assert_eq!(
            (violating.len(), fine.len(), violating[0].name.as_str()),
            (1, 2, "web-2")
        );
        // An already-disrupted pod takes nothing from the budget.
        let mut b = budget("web", 1);
        b.status.as_mut().unwrap().disrupted_pods = Some(
            [(
                "web-0".to_string(),
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
            )]
            .into(),
        );
        let (violating, _) = split_by_budget_violation(pods.clone(), &[b]);
        assert_eq!(violating.len(), 1);
        // An empty selector covers nothing for the scheduler.
        let mut empty = budget("web", 0);
        empty.spec.as_mut().unwrap().selector = Some(Default::default());
        assert!(split_by_budget_violation(pods, &[empty]).0.is_empty());
    }

    #[test]
    fn evicts_the_fewest_least_important_pods() {
        let mut a = info(node("a", "2", "4Gi", &[]));
        a.add_pod(prioritized("a-low", "1", 10, Some("a")));
        a.add_pod(prioritized("a-mid", "1", 100, Some("a")));
        let mut b = info(node("b", "2", "4Gi", &[]));
        b.add_pod(prioritized("b-high", "2", 500, Some("b")));
        let c = run(&[a, b], prioritized("critical", "1", 1000, None)).unwrap();
        assert_eq!(c.node, "a");
        let names: Vec<&str> = c.victims.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, vec!["a-low"]);
    }

    #[test]
    fn nothing_lower_to_evict_is_said_as_kube_scheduler_says_it() {
        let mut a = info(node("a", "1", "4Gi", &[]));
        a.add_pod(prioritized("peer", "1", 1000, Some("a")));
        let cordoned = {
            let mut n = node("b", "8", "4Gi", &[]);
            n.spec.as_mut().unwrap().unschedulable = Some(true);
            info(n)
        };
        let err = run(&[a, cordoned], prioritized("p", "1", 1000, None)).unwrap_err();
        assert_eq!(
            err.message,
            "preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling."
        );
        // No candidate anywhere: an earlier nomination is withdrawn.
        assert!(err.clear_nomination);
    }

    #[test]
    fn preemption_policy_never_does_not_preempt() {
        let mut a = info(node("a", "1", "4Gi", &[]));
        a.add_pod(prioritized("low", "1", 0, Some("a")));
        let mut p = prioritized("p", "1", 1000, None);
        let mut pod = (*p.pod).clone();
        pod.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
        p = pinfo(pod);
        assert_eq!(
            run(&[a], p).unwrap_err(),
            NoCandidate {
                message: "preemption: not eligible due to preemptionPolicy=Never.".into(),
                clear_nomination: false,
            }
        );
    }

    #[test]
    fn a_pod_waiting_for_its_victims_keeps_its_nomination() {
        let mut a = info(node("a", "1", "4Gi", &[]));
        let mut leaving = (*prioritized("low", "1", 0, Some("a")).pod).clone();
        leaving.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        a.add_pod(PodInfo::new(std::sync::Arc::new(leaving)));
        let mut p = (*prioritized("p", "1", 1000, None).pod).clone();
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            nominated_node_name: Some("a".into()),
            ..Default::default()
        });
        assert_eq!(
            run(&[a], pinfo(p)).unwrap_err(),
            NoCandidate {
                message: "preemption: not eligible due to a terminating pod on the nominated node."
                    .into(),
                clear_nomination: false,
            }
        );
    }
}
