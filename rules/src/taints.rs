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
