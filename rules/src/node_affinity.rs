//! Which nodes a pod may land on by their labels and name: `nodeSelector`
//! and `affinity.nodeAffinity` (component-helpers' `nodeaffinity`
//! package). The scheduler's NodeAffinity plugin and the DaemonSet
//! controller share these rules.
//!
//! A `NodeSelector` is an OR of terms; a term is an AND of its
//! `matchExpressions` (on labels) and `matchFields` (only `metadata.name`).
//! A term with no requirements, or with an invalid one, matches no node.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec, PreferredSchedulingTerm,
};

/// The only field a `matchFields` requirement may name.
pub const FIELD_NODE_NAME: &str = "metadata.name";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeSelectorError {
    #[error("{operator:?} is not a valid node selector operator")]
    UnknownOperator { operator: String },
    #[error("{key}: values must be non-empty for operator {operator}")]
    EmptyValues { key: String, operator: String },
    #[error("{key}: values must be empty for operator {operator}")]
    UnexpectedValues { key: String, operator: String },
    #[error(
        "{key}: for 'Gt', 'Lt' operators, exactly one integer value is required, got {values:?}"
    )]
    NotOneInteger { key: String, values: Vec<String> },
    #[error("{key:?} is not a supported field selector key (only \"metadata.name\")")]
    UnsupportedField { key: String },
    #[error("{key}: only 'In' and 'NotIn' are supported for fields, got {operator:?}")]
    UnsupportedFieldOperator { key: String, operator: String },
}

fn labels_of(node: &Node) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    node.metadata.labels.as_ref().unwrap_or(&EMPTY)
}

fn node_name(node: &Node) -> &str {
    node.metadata.name.as_deref().unwrap_or_default()
}

/// One `matchExpressions` requirement against a label set. NotIn and
/// DoesNotExist match a missing label; Gt and Lt compare integers and need
/// the label to be an integer.
pub fn label_requirement_matches(
    req: &NodeSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> Result<bool, NodeSelectorError> {
    let values = req.values.as_deref().unwrap_or_default();
    let value = labels.get(&req.key);
    let need_values = || {
        if values.is_empty() {
            Err(NodeSelectorError::EmptyValues {
                key: req.key.clone(),
                operator: req.operator.clone(),
            })
        } else {
            Ok(())
        }
    };
    let need_none = || {
        if values.is_empty() {
            Ok(())
        } else {
            Err(NodeSelectorError::UnexpectedValues {
                key: req.key.clone(),
                operator: req.operator.clone(),
            })
        }
    };
    match req.operator.as_str() {
        "In" => need_values().map(|_| value.is_some_and(|v| values.contains(v))),
        "NotIn" => need_values().map(|_| value.is_none_or(|v| !values.contains(v))),
        "Exists" => need_none().map(|_| value.is_some()),
        "DoesNotExist" => need_none().map(|_| value.is_none()),
        op @ ("Gt" | "Lt") => {
            let bound: i64 = match values {
                [one] => one.parse().map_err(|_| NodeSelectorError::NotOneInteger {
                    key: req.key.clone(),
                    values: values.to_vec(),
                })?,
                _ => {
                    return Err(NodeSelectorError::NotOneInteger {
                        key: req.key.clone(),
                        values: values.to_vec(),
                    });
                }
            };
            Ok(value
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| if op == "Gt" { v > bound } else { v < bound }))
        }
        other => Err(NodeSelectorError::UnknownOperator {
            operator: other.to_owned(),
        }),
    }
}

/// One `matchFields` requirement: `metadata.name` In/NotIn.
pub fn field_requirement_matches(
    req: &NodeSelectorRequirement,
    node: &Node,
) -> Result<bool, NodeSelectorError> {
    if req.key != FIELD_NODE_NAME {
        return Err(NodeSelectorError::UnsupportedField {
            key: req.key.clone(),
        });
    }
    let values = req.values.as_deref().unwrap_or_default();
    if values.is_empty() {
        return Err(NodeSelectorError::EmptyValues {
            key: req.key.clone(),
            operator: req.operator.clone(),
        });
    }
    let name = node_name(node);
    match req.operator.as_str() {
        "In" => Ok(values.iter().any(|v| v == name)),
        "NotIn" => Ok(!values.iter().any(|v| v == name)),
        other => Err(NodeSelectorError::UnsupportedFieldOperator {
            key: req.key.clone(),
            operator: other.to_owned(),
        }),
    }
}

/// Whether every requirement of the term holds. An empty term is an error
/// upstream's parser turns into "matches nothing"; so is an invalid one.
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> Result<bool, NodeSelectorError> {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return Ok(false);
    }
    let labels = labels_of(node);
    let mut all = true;
    for r in exprs {
        all &= label_requirement_matches(r, labels)?;
    }
    for r in fields {
        all &= field_requirement_matches(r, node)?;
    }
    Ok(all)
}

/// Whether any term matches (invalid terms match nothing).
pub fn node_selector_matches(selector: &NodeSelector, node: &Node) -> bool {
    selector
        .node_selector_terms
        .iter()
        .any(|t| term_matches(t, node).unwrap_or(false))
}

/// Checks every term as the apiserver's validation would, for messages.
pub fn validate_node_selector(selector: &NodeSelector) -> Result<(), NodeSelectorError> {
    let probe = Node::default();
    for t in &selector.node_selector_terms {
        term_matches(t, &probe)?;
    }
    Ok(())
}

/// The pod's `spec.nodeSelector` labels are all on the node.
pub fn node_selector_labels_match(
    node_selector: Option<&BTreeMap<String, String>>,
    node: &Node,
) -> bool {
    let labels = labels_of(node);
    node_selector
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
}

/// The pod's required node affinity (`GetRequiredNodeAffinity(pod).Match`):
/// `nodeSelector` and `requiredDuringSchedulingIgnoredDuringExecution`,
/// both, when both are set.
pub fn required_node_affinity_matches(spec: &PodSpec, node: &Node) -> bool {
    if !node_selector_labels_match(spec.node_selector.as_ref(), node) {
        return false;
    }
    match required_terms(spec) {
        Some(required) => node_selector_matches(required, node),
        None => true,
    }
}

/// `requiredDuringSchedulingIgnoredDuringExecution`, when set.
pub fn required_terms(spec: &PodSpec) -> Option<&NodeSelector> {
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()
}

/// `preferredDuringSchedulingIgnoredDuringExecution` (empty when unset).
pub fn preferred_terms(spec: &PodSpec) -> &[PreferredSchedulingTerm] {
    spec.affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.preferred_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default()
}

/// The sum of the weights of the preferred terms the node matches (the
/// NodeAffinity score before normalisation). A term with weight 0 counts
/// nothing.
pub fn preferred_weight(terms: &[PreferredSchedulingTerm], node: &Node) -> i64 {
    terms
        .iter()
        .filter(|t| t.weight != 0 && term_matches(&t.preference, node).unwrap_or(false))
        .map(|t| i64::from(t.weight))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Affinity, NodeAffinity};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, labels: &[(&str, &str)]) -> Node {
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
            ..Default::default()
        }
    }

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn term(
        exprs: Vec<NodeSelectorRequirement>,
        fields: Vec<NodeSelectorRequirement>,
    ) -> NodeSelectorTerm {
        NodeSelectorTerm {
            match_expressions: (!exprs.is_empty()).then_some(exprs),
            match_fields: (!fields.is_empty()).then_some(fields),
        }
    }

    fn selector(terms: Vec<NodeSelectorTerm>) -> NodeSelector {
        NodeSelector {
            node_selector_terms: terms,
        }
    }

    #[test]
    fn every_label_operator() {
        let n = node("n1", &[("size", "Large"), ("cores", "8")]);
        let m = |r| term_matches(&term(vec![r], vec![]), &n).unwrap();
        assert!(m(req("size", "In", &["Large", "Medium"])));
        assert!(!m(req("size", "In", &["Small"])));
        assert!(!m(req("size", "NotIn", &["Large"])));
        assert!(
            m(req("zone", "NotIn", &["a"])),
            "NotIn matches a missing label"
        );
        assert!(m(req("size", "Exists", &[])));
        assert!(!m(req("zone", "Exists", &[])));
        assert!(m(req("zone", "DoesNotExist", &[])));
        assert!(m(req("cores", "Gt", &["4"])));
        assert!(!m(req("cores", "Gt", &["8"])));
        assert!(m(req("cores", "Lt", &["16"])));
        assert!(
            !m(req("size", "Lt", &["16"])),
            "a non-integer label fails Gt/Lt"
        );
        assert!(!m(req("zone", "Gt", &["1"])));
    }

    #[test]
    fn invalid_requirements_are_errors_and_match_nothing() {
        let n = node("n1", &[("cores", "8")]);
        for r in [
            req("cores", "Gt", &["x"]),
            req("cores", "Gt", &["1", "2"]),
            req("cores", "In", &[]),
            req("cores", "Exists", &["8"]),
            req("cores", "Matches", &["8"]),
        ] {
            let t = term(vec![r.clone()], vec![]);
            assert!(term_matches(&t, &n).is_err(), "{r:?}");
            assert!(!node_selector_matches(&selector(vec![t]), &n));
        }
        assert!(matches!(
            field_requirement_matches(&req("metadata.labels", "In", &["a"]), &n),
            Err(NodeSelectorError::UnsupportedField { .. })
        ));
    }

    #[test]
    fn terms_are_ored_and_requirements_anded() {
        let n = node("n1", &[("size", "Large"), ("zone", "a")]);
        let both = term(
            vec![req("size", "In", &["Large"]), req("zone", "In", &["b"])],
            vec![],
        );
        assert!(!node_selector_matches(&selector(vec![both.clone()]), &n));
        let other = term(vec![req("zone", "In", &["a"])], vec![]);
        assert!(node_selector_matches(&selector(vec![both, other]), &n));
        assert!(
            !node_selector_matches(&selector(vec![term(vec![], vec![])]), &n),
            "empty term"
        );
        assert!(!node_selector_matches(&selector(vec![]), &n), "no terms");
    }

    #[test]
    fn match_fields_select_by_node_name_as_daemonsets_do() {
        let n = node("node1", &[]);
        let pick = |name: &str| {
            selector(vec![term(
                vec![],
                vec![req(FIELD_NODE_NAME, "In", &[name])],
            )])
        };
        assert!(node_selector_matches(&pick("node1"), &n));
        assert!(!node_selector_matches(&pick("node2"), &n));
        let not = selector(vec![term(
            vec![],
            vec![req(FIELD_NODE_NAME, "NotIn", &["node1"])],
        )]);
        assert!(!node_selector_matches(&not, &n));
    }

    #[test]
    fn node_selector_and_required_affinity_must_both_hold() {
        let n = node("n1", &[("disktype", "ssd"), ("size", "Large")]);
        let mut spec = PodSpec {
            node_selector: Some([("disktype".to_string(), "ssd".to_string())].into()),
            ..Default::default()
        };
        assert!(required_node_affinity_matches(&spec, &n));
        spec.affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(selector(vec![term(
                    vec![req("size", "In", &["Small"])],
                    vec![],
                )])),
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    PreferredSchedulingTerm {
                        weight: 5,
                        preference: term(vec![req("size", "In", &["Large"])], vec![]),
                    },
                    PreferredSchedulingTerm {
                        weight: 3,
                        preference: term(vec![req("disktype", "Exists", &[])], vec![]),
                    },
                    PreferredSchedulingTerm {
                        weight: 7,
                        preference: term(vec![req("gpu", "Exists", &[])], vec![]),
                    },
                ]),
            }),
            ..Default::default()
        });
        assert!(!required_node_affinity_matches(&spec, &n));
        assert_eq!(preferred_weight(preferred_terms(&spec), &n), 8);
        spec.node_selector = Some([("disktype".to_string(), "hdd".to_string())].into());
        spec.affinity = None;
        assert!(!required_node_affinity_matches(&spec, &n));
    }
}
