//! Validation helpers with apimachinery's wording, so errors read as users
//! of the real apiserver know them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::status::FieldError;

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

pub fn dns1123_label(field: &str, value: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(FieldError::invalid(
            field,
            value,
            "must be no more than 63 characters",
        ));
    }
    if !is_label(value) {
        errs.push(FieldError::invalid(field, value, DNS1123_LABEL_MSG));
    }
    errs
}

/// `validateLocalDescendingPath`: a subPath stays inside its volume by name.
pub fn local_descending_path(field: &str, value: &str) -> Vec<FieldError> {
    details(
        field,
        value,
        kubelab_rules::validation::local_descending_path(value),
    )
}

/// `validateLocalNonReservedPath`: a file a volume projects.
pub fn local_non_reserved_path(field: &str, value: &str) -> Vec<FieldError> {
    details(
        field,
        value,
        kubelab_rules::validation::local_non_reserved_path(value),
    )
}

/// `validatePathNoBacksteps`.
pub fn path_no_backsteps(field: &str, value: &str) -> Vec<FieldError> {
    details(
        field,
        value,
        kubelab_rules::validation::path_no_backsteps(value),
    )
}

fn details(field: &str, value: &str, details: Vec<&str>) -> Vec<FieldError> {
    details
        .into_iter()
        .map(|d| FieldError::invalid(field, value, d))
        .collect()
}

pub fn dns1123_subdomain(field: &str, value: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if value.len() > 253 {
        errs.push(FieldError::invalid(
            field,
            value,
            "must be no more than 253 characters",
        ));
    }
    if !value.split('.').all(is_label) {
        errs.push(FieldError::invalid(field, value, DNS1123_SUBDOMAIN_MSG));
    }
    errs
}

pub fn dns1035_label(field: &str, value: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(FieldError::invalid(
            field,
            value,
            "must be no more than 63 characters",
        ));
    }
    if !is_label(value) || !value.as_bytes()[0].is_ascii_lowercase() {
        errs.push(FieldError::invalid(field, value, DNS1035_LABEL_MSG));
    }
    errs
}

/// Whether `s` is a resource quantity as `resource.ParseQuantity` accepts
/// it: the one grammar the node reads quantities with too.
pub fn is_quantity(s: &str) -> bool {
    kubelab_rules::quantity::parse(s).is_ok()
}

pub const QUANTITY_MSG: &str = kubelab_rules::validation::QUANTITY_SYNTAX;

pub const NEGATIVE_MSG: &str = "must be greater than or equal to 0";

/// `ValidateNonnegativeField`.
pub fn nonnegative(field: &str, value: i64) -> Vec<FieldError> {
    if value < 0 {
        vec![FieldError::invalid_raw(
            field,
            value.to_string(),
            NEGATIVE_MSG,
        )]
    } else {
        Vec::new()
    }
}

/// A `map[string]string` as Go's `%#v` prints it, keys sorted:
/// `map[string]string{"app":"web"}`, or `map[string]string(nil)`.
pub fn go_string_map(m: Option<&std::collections::BTreeMap<String, String>>) -> String {
    match m {
        Some(m) if !m.is_empty() => {
            let pairs: Vec<String> = m.iter().map(|(k, v)| format!("{k:?}:{v:?}")).collect();
            format!("map[string]string{{{}}}", pairs.join(", "))
        }
        Some(_) => "map[string]string{}".into(),
        None => "map[string]string(nil)".into(),
    }
}

/// A `metav1.LabelSelector` as Go's `%#v` prints it in field errors.
pub fn go_label_selector(s: &LabelSelector) -> String {
    let exprs = match &s.match_expressions {
        None => "[]v1.LabelSelectorRequirement(nil)".to_owned(),
        Some(reqs) => {
            let items: Vec<String> = reqs
                .iter()
                .map(|r| {
                    let values = match &r.values {
                        None => "[]string(nil)".to_owned(),
                        Some(v) => format!(
                            "[]string{{{}}}",
                            v.iter()
                                .map(|x| format!("{x:?}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    };
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{:?}, Operator:{:?}, Values:{values}}}",
                        r.key, r.operator
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
    };
    format!(
        "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{exprs}}}",
        go_string_map(s.match_labels.as_ref())
    )
}

/// An `intstr.IntOrString` as Go's `%#v` prints it in field errors.
pub fn go_int_or_string(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(i) => format!("intstr.IntOrString{{Type:0, IntVal:{i}, StrVal:\"\"}}"),
        IntOrString::String(s) => format!("intstr.IntOrString{{Type:1, IntVal:0, StrVal:{s:?}}}"),
    }
}

/// `ValidatePositiveIntOrPercent` and `IsNotMoreThan100Percent`.
pub fn int_or_percent(field: &str, v: &IntOrString, at_most_100: bool) -> Vec<FieldError> {
    match v {
        IntOrString::Int(i) => nonnegative(field, i64::from(*i)),
        IntOrString::String(s) => match percent(s) {
            None => vec![FieldError::invalid_raw(
                field,
                go_int_or_string(v),
                "must be an integer or percentage (e.g '5%')",
            )],
            Some(p) if at_most_100 && p > 100 => vec![FieldError::invalid_raw(
                field,
                go_int_or_string(v),
                "must not be greater than 100%",
            )],
            Some(p) => nonnegative(field, p),
        },
    }
}

/// The number in `"25%"`, as `IsValidPercent` accepts it.
pub fn percent(s: &str) -> Option<i64> {
    let digits = s.strip_suffix('%')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `ValidateFinalizerName` as a Namespace's `spec.finalizers` is checked:
/// a qualified name, either one of the standard finalizers or with a
/// domain prefix.
pub fn finalizer_name(field: &str, value: &str) -> Vec<FieldError> {
    if !super::valid_qualified_name(value) {
        return vec![FieldError::invalid(
            field,
            value,
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
        )];
    }
    let standard = ["kubernetes", "orphan", "foregroundDeletion"];
    if !value.contains('/') && !standard.contains(&value) {
        return vec![FieldError::invalid(
            field,
            value,
            "name is neither a standard finalizer name nor is it fully qualified",
        )];
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for q in [
            "1", "100m", "0.5", "1Gi", "128Mi", "1e3", "1E-2", "+2k", ".5",
        ] {
            assert!(is_quantity(q), "{q}");
        }
        for q in ["", "abc", "1GB", "1..2", "Mi", "1e", "12 Mi"] {
            assert!(!is_quantity(q), "{q}");
        }
    }

    #[test]
    fn names() {
        assert!(dns1123_subdomain("metadata.name", "web-1.example").is_empty());
        assert_eq!(dns1123_subdomain("metadata.name", "Web_1").len(), 1);
        assert!(dns1123_label("f", "a.b").len() == 1);
        assert!(dns1035_label("f", "1abc").len() == 1);
    }
}
