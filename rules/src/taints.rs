//! Taints and tolerations (k8s.io/api core/v1 `toleration.go`, `taint.go`
//! and component-helpers' `FindMatchingUntoleratedTaint`): the rule the
//! scheduler's TaintToleration plugin, the DaemonSet controller and the
//! taint manager share.

use k8s_openapi::api::core::v1::{Node, Taint, Toleration};

/// The three taint effects.
pub const NO_SCHEDULE: &str = "NoSchedule";
pub const PREFER_NO_SCHEDULE: &str = "PreferNoSchedule";
pub const NO_EXECUTE: &str = "NoExecute";

/// Taints the node lifecycle controller and `kubectl cordon` put on nodes.
pub const TAINT_NODE_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_NODE_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_NODE_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// `Toleration.ToleratesTaint`: an empty effect matches every effect, an
/// empty key with `Exists` matches every key, `Equal` (or no operator)
/// compares values, `Exists` ignores them. Unknown operators tolerate nothing.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or_default() {
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        "Exists" => true,
        _ => false,
    }
}

/// Whether any of `tolerations` tolerates `taint`.
pub fn is_tolerated(taint: &Taint, tolerations: &[Toleration]) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// The first taint passing `filter` that no toleration tolerates
/// (`FindMatchingUntoleratedTaint`).
pub fn find_untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    filter: impl Fn(&Taint) -> bool,
) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| filter(t))
        .find(|t| !is_tolerated(t, tolerations))
}

/// Whether a taint keeps new pods off a node: NoSchedule and NoExecute do,
/// PreferNoSchedule only scores.
pub fn blocks_scheduling(taint: &Taint) -> bool {
    taint.effect == NO_SCHEDULE || taint.effect == NO_EXECUTE
}

/// The node's taints (none when unset).
pub fn node_taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// The first taint that keeps a pod with these tolerations off the node,
/// as the TaintToleration filter and the DaemonSet controller decide.
pub fn untolerated_scheduling_taint<'a>(
    node: &'a Node,
    tolerations: &[Toleration],
) -> Option<&'a Taint> {
    find_untolerated(node_taints(node), tolerations, blocks_scheduling)
}

/// How many PreferNoSchedule taints the tolerations leave untolerated (the
/// TaintToleration score counts them; fewer is better). Only tolerations
/// with an empty or PreferNoSchedule effect count, as upstream.
pub fn count_intolerable_prefer_no_schedule(taints: &[Taint], tolerations: &[Toleration]) -> i64 {
    let relevant: Vec<Toleration> = tolerations
        .iter()
        .filter(|t| {
            matches!(
                t.effect.as_deref(),
                None | Some("") | Some(PREFER_NO_SCHEDULE)
            )
        })
        .cloned()
        .collect();
    taints
        .iter()
        .filter(|t| t.effect == PREFER_NO_SCHEDULE && !is_tolerated(t, &relevant))
        .count() as i64
}

/// pkg/util/tolerations' `MergeTolerations`: `first` then `second`, less
/// every toleration another one covers (an `Exists` toleration covers the
/// `Equal` ones of its key, an empty effect covers every effect); of two
/// equal ones the first stays. What the RuntimeClass admission plugin
/// makes of a pod's tolerations and its class's.
pub fn merge_tolerations(first: &[Toleration], second: &[Toleration]) -> Vec<Toleration> {
    let all: Vec<&Toleration> = first.iter().chain(second).collect();
    let mut merged: Vec<Toleration> = Vec::new();
    for (i, &t) in all.iter().enumerate() {
        if merged.iter().any(|kept| is_superset(kept, t)) {
            continue;
        }
        // A later toleration that covers this one (and is not the same) wins.
        if all[i + 1..]
            .iter()
            .any(|&later| !same_toleration(t, later) && is_superset(later, t))
        {
            continue;
        }
        merged.push(t.clone());
    }
    merged
}

/// Equal as Go compares them: an unset field is an empty one.
fn same_toleration(a: &Toleration, b: &Toleration) -> bool {
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    s(&a.key) == s(&b.key)
        && s(&a.operator) == s(&b.operator)
        && s(&a.value) == s(&b.value)
        && s(&a.effect) == s(&b.effect)
        && a.toleration_seconds == b.toleration_seconds
}

/// Whether `ss` tolerates every taint `t` tolerates.
fn is_superset(ss: &Toleration, t: &Toleration) -> bool {
    if same_toleration(ss, t) {
        return true;
    }
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    let (ss_key, ss_op, ss_effect) = (s(&ss.key), s(&ss.operator), s(&ss.effect));
    // An empty key with Exists matches every key.
    if s(&t.key) != ss_key && (!ss_key.is_empty() || ss_op != "Exists") {
        return false;
    }
    // An empty effect matches every effect.
    if s(&t.effect) != ss_effect && !ss_effect.is_empty() {
        return false;
    }
    // A NoExecute toleration with a deadline covers only shorter ones.
    if ss_effect == NO_EXECUTE
        && let Some(limit) = ss.toleration_seconds
        && t.toleration_seconds.is_none_or(|secs| secs > limit)
    {
        return false;
    }
    match ss_op.as_str() {
        "" | "Equal" => s(&t.operator) == "Equal" && s(&t.value) == s(&ss.value),
        "Exists" => true,
        _ => false,
    }
}

/// `Taint.ToString()`: `key=value:effect`, `key:effect` without a value.
pub fn taint_string(taint: &Taint) -> String {
    match taint.value.as_deref() {
        Some(v) if !v.is_empty() => format!("{}={}:{}", taint.key, v, taint.effect),
        _ => format!("{}:{}", taint.key, taint.effect),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: (!value.is_empty()).then(|| value.into()),
            effect: effect.into(),
            ..Default::default()
        }
    }

    fn tol(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Toleration {
            key: opt(key),
            operator: opt(op),
            value: opt(value),
            effect: opt(effect),
            ..Default::default()
        }
    }

    #[test]
    fn merged_tolerations_keep_only_those_nothing_else_covers() {
        let keys = |ts: Vec<Toleration>| -> Vec<String> {
            ts.iter()
                .map(|t| {
                    format!(
                        "{}/{}/{}/{}",
                        t.key.clone().unwrap_or_default(),
                        t.operator.clone().unwrap_or_default(),
                        t.value.clone().unwrap_or_default(),
                        t.effect.clone().unwrap_or_default()
                    )
                })
                .collect()
        };
        // An Exists toleration covers Equal ones of its key and effect,
        // wherever it comes in the lists.
        let pod = [
            tol("gpu", "Equal", "a100", NO_SCHEDULE),
            tol("zone", "Equal", "a", ""),
        ];
        let class = [tol("gpu", "Exists", "", NO_SCHEDULE)];
        assert_eq!(
            keys(merge_tolerations(&pod, &class)),
            ["zone/Equal/a/", "gpu/Exists//NoSchedule"]
        );
        // An empty effect covers every effect; another key is not covered.
        let all_effects = [tol("gpu", "Exists", "", "")];
        assert_eq!(
            keys(merge_tolerations(&pod, &all_effects)),
            ["zone/Equal/a/", "gpu/Exists//"]
        );
        // An empty key with Exists tolerates everything.
        assert_eq!(
            keys(merge_tolerations(&pod, &[tol("", "Exists", "", "")])),
            ["/Exists//"]
        );
        // Identical ones (unset and empty alike) are kept once, the first.
        let same = [tol("a", "Equal", "", NO_SCHEDULE)];
        let unset = [Toleration {
            key: Some("a".into()),
            operator: Some("Equal".into()),
            value: Some(String::new()),
            effect: Some(NO_SCHEDULE.into()),
            ..Default::default()
        }];
        assert_eq!(merge_tolerations(&same, &unset), same);
        // Different values of one key both stay.
        let values = [tol("a", "Equal", "1", ""), tol("a", "Equal", "2", "")];
        assert_eq!(merge_tolerations(&values, &[]).len(), 2);
        // An empty operator (Equal) covers an Equal one of the same value,
        // not the other way round, as upstream: it is the one that stays.
        let (empty, equal) = (tol("a", "", "1", ""), tol("a", "Equal", "1", ""));
        assert_eq!(
            merge_tolerations(&[empty.clone()], &[equal.clone()]),
            [empty.clone()]
        );
        assert_eq!(merge_tolerations(&[equal], &[empty.clone()]), [empty]);
        assert!(merge_tolerations(&[], &[]).is_empty());
    }

    #[test]
    fn a_no_execute_deadline_covers_only_shorter_ones() {
        let secs = |t: Toleration, s: Option<i64>| Toleration {
            toleration_seconds: s,
            ..t
        };
        let base = tol("node.kubernetes.io/not-ready", "Exists", "", NO_EXECUTE);
        let short = secs(base.clone(), Some(60));
        let long = secs(base.clone(), Some(300));
        // 300 s covers 60 s; 60 s does not cover 300 s nor "forever".
        assert_eq!(
            merge_tolerations(&[short.clone()], &[long.clone()]),
            [long.clone()]
        );
        assert_eq!(
            merge_tolerations(&[base.clone()], &[short.clone()]),
            [base.clone()],
            "no deadline covers every deadline"
        );
        assert_eq!(
            merge_tolerations(&[short.clone()], &[base.clone()]),
            [base.clone()]
        );
        assert_eq!(
            merge_tolerations(&[long.clone(), base.clone()], &[]),
            [base]
        );
    }

    #[test]
    fn equal_compares_key_value_and_effect() {
        let t = taint("app", "blue", NO_SCHEDULE);
        assert!(tolerates(&tol("app", "Equal", "blue", NO_SCHEDULE), &t));
        assert!(
            tolerates(&tol("app", "", "blue", NO_SCHEDULE), &t),
            "no operator is Equal"
        );
        assert!(!tolerates(&tol("app", "Equal", "red", NO_SCHEDULE), &t));
        assert!(!tolerates(&tol("app", "Equal", "blue", NO_EXECUTE), &t));
        assert!(!tolerates(&tol("other", "Equal", "blue", NO_SCHEDULE), &t));
        assert!(
            tolerates(&tol("app", "Equal", "blue", ""), &t),
            "empty effect matches all"
        );
    }

    #[test]
    fn exists_ignores_the_value_and_an_empty_key_matches_every_key() {
        let t = taint("node-role.kubernetes.io/control-plane", "", NO_SCHEDULE);
        assert!(tolerates(
            &tol("node-role.kubernetes.io/control-plane", "Exists", "", ""),
            &t
        ));
        assert!(
            tolerates(&tol("", "Exists", "", ""), &t),
            "tolerates everything"
        );
        assert!(tolerates(&tol("", "Exists", "", NO_SCHEDULE), &t));
        assert!(!tolerates(&tol("", "Exists", "", NO_EXECUTE), &t));
        // An empty value equals a missing one.
        assert!(tolerates(
            &tol("node-role.kubernetes.io/control-plane", "Equal", "", ""),
            &t
        ));
        assert!(!tolerates(
            &tol("x", "Gt", "1", ""),
            &taint("x", "2", NO_SCHEDULE)
        ));
    }

    #[test]
    fn prefer_no_schedule_taints_do_not_block() {
        let node = Node {
            spec: Some(NodeSpec {
                taints: Some(vec![
                    taint("soft", "", PREFER_NO_SCHEDULE),
                    taint("app", "blue", NO_SCHEDULE),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            untolerated_scheduling_taint(&node, &[]).map(|t| t.key.as_str()),
            Some("app")
        );
        assert!(
            untolerated_scheduling_taint(&node, &[tol("app", "Equal", "blue", NO_SCHEDULE)])
                .is_none()
        );
        assert_eq!(
            count_intolerable_prefer_no_schedule(node_taints(&node), &[]),
            1
        );
        assert_eq!(
            count_intolerable_prefer_no_schedule(
                node_taints(&node),
                &[tol("soft", "Exists", "", PREFER_NO_SCHEDULE)]
            ),
            0
        );
        // A NoSchedule toleration does not count for the PreferNoSchedule score.
        assert_eq!(
            count_intolerable_prefer_no_schedule(
                node_taints(&node),
                &[tol("soft", "Exists", "", NO_SCHEDULE)]
            ),
            1
        );
    }

    #[test]
    fn taints_print_as_kubectl_writes_them() {
        assert_eq!(
            taint_string(&taint("app", "blue", NO_SCHEDULE)),
            "app=blue:NoSchedule"
        );
        assert_eq!(
            taint_string(&taint("dedicated", "", NO_EXECUTE)),
            "dedicated:NoExecute"
        );
    }
}
