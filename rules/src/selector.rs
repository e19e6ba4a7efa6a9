//! `metav1.LabelSelector` (matchLabels + matchExpressions), as controllers
//! select their pods and as `status.selector` / `kubectl get -o wide` print
//! it (apimachinery's `LabelSelectorAsSelector` and `FormatLabelSelector`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("{operator:?} is not a valid label selector operator")]
    UnknownOperator { operator: String },
    #[error("for 'In', 'NotIn' operators, values set can't be empty")]
    EmptyValues,
    #[error("values set must be empty for 'Exists', 'DoesNotExist'")]
    UnexpectedValues,
    #[error("key: Invalid value: {key:?}: {detail}")]
    InvalidKey { key: String, detail: String },
    #[error("values[{index}]: Invalid value: {value:?}: {detail}")]
    InvalidValue {
        index: usize,
        value: String,
        detail: String,
    },
}

const NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const PREFIX_MSG: &str = "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// apimachinery's `IsQualifiedName`: `[prefix/]name`, the messages joined.
pub fn qualified_name_errors(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let name = match key.split_once('/') {
        Some((prefix, name)) if !name.contains('/') => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                if prefix.len() > 253 {
                    errs.push("prefix part must be no more than 253 characters".to_string());
                }
                let label = |l: &str| {
                    !l.is_empty()
                        && l.bytes()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                };
                if !prefix.split('.').all(label) {
                    errs.push(PREFIX_MSG.to_string());
                }
            }
            name
        }
        Some(_) => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                &NAME_MSG["name part ".len()..]
            )];
        }
        None => key,
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    }
    if !is_label_name(name) {
        errs.push(NAME_MSG.to_string());
    }
    errs
}

/// apimachinery's `IsValidLabelValue`.
pub fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !value.is_empty() && !is_label_name(value) {
        errs.push(VALUE_MSG.to_string());
    }
    errs
}

fn check_key(key: &str) -> Result<(), SelectorError> {
    let errs = qualified_name_errors(key);
    if errs.is_empty() {
        return Ok(());
    }
    Err(SelectorError::InvalidKey {
        key: key.to_string(),
        detail: errs.join("; "),
    })
}

fn check_values<'a>(values: impl IntoIterator<Item = &'a String>) -> Result<(), SelectorError> {
    for (index, value) in values.into_iter().enumerate() {
        let errs = label_value_errors(value);
        if !errs.is_empty() {
            return Err(SelectorError::InvalidValue {
                index,
                value: value.clone(),
                detail: errs.join("; "),
            });
        }
    }
    Ok(())
}

/// Checks the requirements as `LabelSelectorAsSelector` does before use.
pub fn validate(selector: &LabelSelector) -> Result<(), SelectorError> {
    for (key, value) in selector.match_labels.iter().flatten() {
        check_key(key)?;
        check_values([value])?;
    }
    for r in selector.match_expressions.iter().flatten() {
        check_key(&r.key)?;
        let values = r.values.as_deref().unwrap_or_default();
        check_values(values)?;
        match r.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => return Err(SelectorError::EmptyValues),
            "In" | "NotIn" => {}
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(SelectorError::UnexpectedValues);
            }
            "Exists" | "DoesNotExist" => {}
            other => {
                return Err(SelectorError::UnknownOperator {
                    operator: other.to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// Whether `labels` satisfy every requirement. An empty selector selects
/// everything (as `LabelSelectorAsSelector` makes it); an invalid operator
/// selects nothing.
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    labels_ok
        && selector
            .match_expressions
            .iter()
            .flatten()
            .all(|r| requirement_matches(r, labels))
}

fn requirement_matches(r: &LabelSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let value = labels.get(&r.key);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => false,
    }
}

/// Whether the selector selects nothing at all (`nil` in Go: no selector).
pub fn is_empty(selector: &LabelSelector) -> bool {
    selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
}

/// The selector in the `labelSelector` query grammar, requirements sorted
/// by key as apimachinery prints them: `app=web,tier in (a,b),!legacy`.
pub fn selector_string(selector: &LabelSelector) -> String {
    let mut reqs: Vec<(String, String)> = Vec::new();
    for (k, v) in selector.match_labels.iter().flatten() {
        reqs.push((k.clone(), format!("{k}={v}")));
    }
    for r in selector.match_expressions.iter().flatten() {
        let mut values = r.values.clone().unwrap_or_default();
        values.sort();
        let text = match r.operator.as_str() {
            "In" => format!("{} in ({})", r.key, values.join(",")),
            "NotIn" => format!("{} notin ({})", r.key, values.join(",")),
            "Exists" => r.key.clone(),
            "DoesNotExist" => format!("!{}", r.key),
            other => format!("{} {other} ({})", r.key, values.join(",")),
        };
        reqs.push((r.key.clone(), text));
    }
    reqs.sort();
    reqs.into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn keys_and_values_are_checked_as_label_selector_as_selector_does() {
        let with = |e: LabelSelectorRequirement| LabelSelector {
            match_expressions: Some(vec![e]),
            ..Default::default()
        };
        let key_err = |e| match validate(&with(e)) {
            Err(SelectorError::InvalidKey { detail, .. }) => detail,
            other => panic!("{other:?}"),
        };
        assert!(key_err(expr("", "In", &["a"])).starts_with("name part must be non-empty; "));
        assert!(key_err(expr("a b", "Exists", &[])).starts_with("name part must consist of"));
        assert_eq!(
            key_err(expr("/x", "Exists", &[])),
            "prefix part must be non-empty"
        );
        assert!(key_err(expr("a/b/c", "Exists", &[])).starts_with("a qualified name must consist"));
        assert!(validate(&with(expr("example.com/app_name.x", "In", &["", "v-1"]))).is_ok());
        assert!(matches!(
            validate(&with(expr("app", "In", &["ok", "not ok"]))),
            Err(SelectorError::InvalidValue { index: 1, .. })
        ));
        let bad_label = LabelSelector {
            match_labels: Some(labels(&[("app", "-web")])),
            ..Default::default()
        };
        assert!(matches!(
            validate(&bad_label),
            Err(SelectorError::InvalidValue { index: 0, .. })
        ));
    }

    #[test]
    fn match_labels_and_expressions_must_all_hold() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                expr("tier", "In", &["front", "back"]),
                expr("legacy", "DoesNotExist", &[]),
                expr("env", "NotIn", &["prod"]),
            ]),
        };
        assert!(matches(&sel, &labels(&[("app", "web"), ("tier", "front")])));
        assert!(matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "back"), ("env", "dev")])
        ));
        assert!(!matches(&sel, &labels(&[("app", "web")])), "tier missing");
        assert!(!matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "front"), ("legacy", "")])
        ));
        assert!(!matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "front"), ("env", "prod")])
        ));
        assert!(!matches(&sel, &labels(&[("app", "db"), ("tier", "front")])));
    }

    #[test]
    fn empty_selector_selects_everything() {
        let sel = LabelSelector::default();
        assert!(is_empty(&sel));
        assert!(matches(&sel, &labels(&[("a", "b")])));
        assert!(matches(&sel, &BTreeMap::new()));
    }

    #[test]
    fn invalid_operators_and_values_are_reported() {
        let bad_op = LabelSelector {
            match_expressions: Some(vec![expr("a", "Like", &["x"])]),
            ..Default::default()
        };
        assert_eq!(
            validate(&bad_op).unwrap_err().to_string(),
            "\"Like\" is not a valid label selector operator"
        );
        assert!(!matches(&bad_op, &labels(&[("a", "x")])));
        let empty_in = LabelSelector {
            match_expressions: Some(vec![expr("a", "In", &[])]),
            ..Default::default()
        };
        assert_eq!(validate(&empty_in), Err(SelectorError::EmptyValues));
    }

    #[test]
    fn printed_sorted_by_key_as_kubectl_shows_it() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("tier", "front"), ("app", "web")])),
            match_expressions: Some(vec![
                expr("zone", "NotIn", &["b", "a"]),
                expr("legacy", "DoesNotExist", &[]),
                expr("env", "Exists", &[]),
            ]),
        };
        assert_eq!(
            selector_string(&sel),
            "app=web,env,!legacy,tier=front,zone notin (a,b)"
        );
    }
}
