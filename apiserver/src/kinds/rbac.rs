//! `rbac.authorization.k8s.io/v1`: Role, ClusterRole, RoleBinding and
//! ClusterRoleBinding, validated as `pkg/apis/rbac/validation` does and
//! printed as `kubectl get` shows them upstream.

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use super::KindSpec;
use super::table::{Column, age, age_col, col, name_col};
use crate::status::FieldError;

pub const GROUP: &str = "rbac.authorization.k8s.io";

/// `path.IsValidPathSegmentName`: RBAC names may hold `:` (`system:node`)
/// but must stay one URL path segment.
pub fn path_segment_name(field: &str, name: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if name == "." || name == ".." {
        errs.push(FieldError::invalid(
            field,
            name,
            format!("may not be '{name}'"),
        ));
    }
    for bad in ["/", "%"] {
        if name.contains(bad) {
            errs.push(FieldError::invalid(
                field,
                name,
                format!("may not contain '{bad}'"),
            ));
        }
    }
    errs
}

fn validate_rule(rule: &PolicyRule, namespaced: bool, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if rule.verbs.is_empty() {
        errs.push(FieldError::required(
            format!("{path}.verbs"),
            "verbs must contain at least one value",
        ));
    }
    let urls = rule.non_resource_urls.as_deref().unwrap_or_default();
    let groups = rule.api_groups.as_deref().unwrap_or_default();
    let resources = rule.resources.as_deref().unwrap_or_default();
    if !urls.is_empty() {
        let value = format!("[]string{{{}}}", go_quoted(urls));
        if namespaced {
            errs.push(FieldError::invalid_raw(
                format!("{path}.nonResourceURLs"),
                value,
                "namespaced rules cannot apply to non-resource URLs",
            ));
        } else if !groups.is_empty() || !resources.is_empty() {
            errs.push(FieldError::invalid_raw(
                format!("{path}.nonResourceURLs"),
                value,
                "rules cannot apply to both regular resources and non-resource URLs",
            ));
        }
        return errs;
    }
    if groups.is_empty() {
        errs.push(FieldError::required(
            format!("{path}.apiGroups"),
            "resource rules must supply at least one api group",
        ));
    }
    if resources.is_empty() {
        errs.push(FieldError::required(
            format!("{path}.resources"),
            "resource rules must supply at least one resource",
        ));
    }
    errs
}

fn go_quoted(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn validate_rules(rules: Option<&Vec<PolicyRule>>, namespaced: bool) -> Vec<FieldError> {
    rules
        .into_iter()
        .flatten()
        .enumerate()
        .flat_map(|(i, r)| validate_rule(r, namespaced, &format!("rules[{i}]")))
        .collect()
}

fn validate_role_ref(role_ref: &RoleRef, kinds: &[&str]) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if role_ref.api_group != GROUP {
        errs.push(FieldError::not_supported(
            "roleRef.apiGroup",
            &role_ref.api_group,
            &[GROUP],
        ));
    }
    if !kinds.contains(&role_ref.kind.as_str()) {
        errs.push(FieldError::not_supported(
            "roleRef.kind",
            &role_ref.kind,
            kinds,
        ));
    }
    if role_ref.name.is_empty() {
        errs.push(FieldError::required("roleRef.name", ""));
    } else {
        errs.extend(path_segment_name("roleRef.name", &role_ref.name));
    }
    errs
}

fn validate_subjects(subjects: Option<&Vec<Subject>>, namespaced: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, s) in subjects.into_iter().flatten().enumerate() {
        let path = format!("subjects[{i}]");
        if s.name.is_empty() {
            errs.push(FieldError::required(format!("{path}.name"), ""));
        }
        let api_group = s.api_group.as_deref().unwrap_or_default();
        match s.kind.as_str() {
            "ServiceAccount" => {
                if !s.name.is_empty() {
                    errs.extend(super::validation::dns1123_subdomain(
                        &format!("{path}.name"),
                        &s.name,
                    ));
                }
                if !api_group.is_empty() {
                    errs.push(FieldError::not_supported(
                        format!("{path}.apiGroup"),
                        api_group,
                        &[""],
                    ));
                }
                if !namespaced && s.namespace.as_deref().unwrap_or_default().is_empty() {
                    errs.push(FieldError::required(format!("{path}.namespace"), ""));
                }
            }
            "User" | "Group" => {
                if api_group != GROUP {
                    errs.push(FieldError::not_supported(
                        format!("{path}.apiGroup"),
                        api_group,
                        &[GROUP],
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                format!("{path}.kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
    errs
}

fn role_ref_unchanged(new: &RoleRef, old: Option<&RoleRef>) -> Vec<FieldError> {
    match old {
        Some(old) if old != new => vec![FieldError::invalid_raw(
            "roleRef",
            format!(
                "rbac.RoleRef{{APIGroup:{:?}, Kind:{:?}, Name:{:?}}}",
                new.api_group, new.kind, new.name
            ),
            "cannot change roleRef",
        )],
        _ => Vec::new(),
    }
}

/// `Created At` as the RBAC printers show it: RFC 3339 in UTC.
fn created_at(t: Option<&Time>) -> Value {
    t.map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string().into())
        .unwrap_or(Value::Null)
}

fn role_columns() -> Vec<Column> {
    vec![name_col(), col("Created At", "date", 0)]
}

fn binding_columns() -> Vec<Column> {
    vec![
        name_col(),
        col("Role", "string", 0),
        age_col(),
        col("Users", "string", 1),
        col("Groups", "string", 1),
        col("ServiceAccounts", "string", 1),
    ]
}

fn binding_cells(
    name: Option<&String>,
    created: Option<&Time>,
    role_ref: &RoleRef,
    subjects: Option<&Vec<Subject>>,
    now: jiff::Timestamp,
) -> Vec<Value> {
    let of = |kind: &str| {
        subjects
            .into_iter()
            .flatten()
            .filter(|s| s.kind == kind)
            .map(|s| match (kind, s.namespace.as_deref()) {
                ("ServiceAccount", Some(ns)) => format!("{ns}/{}", s.name),
                _ => s.name.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        name.cloned().unwrap_or_default().into(),
        format!("{}/{}", role_ref.kind, role_ref.name).into(),
        age(created, now),
        of("User").into(),
        of("Group").into(),
        of("ServiceAccount").into(),
    ]
}

impl KindSpec for Role {
    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        validate_rules(self.rules.as_ref(), true)
    }
    fn columns() -> Vec<Column> {
        role_columns()
    }
    fn cells(&self, _now: jiff::Timestamp) -> Vec<Value> {
        vec![
            self.metadata.name.clone().unwrap_or_default().into(),
            created_at(self.metadata.creation_timestamp.as_ref()),
        ]
    }
}

impl KindSpec for ClusterRole {
    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = validate_rules(self.rules.as_ref(), false);
        if let Some(agg) = &self.aggregation_rule
            && agg
                .cluster_role_selectors
                .as_deref()
                .unwrap_or_default()
                .is_empty()
        {
            errs.push(FieldError::required(
                "aggregationRule.clusterRoleSelectors",
                "at least one clusterRoleSelector required if aggregationRule is non-nil",
            ));
        }
        errs
    }
    fn columns() -> Vec<Column> {
        role_columns()
    }
    fn cells(&self, _now: jiff::Timestamp) -> Vec<Value> {
        vec![
            self.metadata.name.clone().unwrap_or_default().into(),
            created_at(self.metadata.creation_timestamp.as_ref()),
        ]
    }
}

impl KindSpec for RoleBinding {
    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = validate_role_ref(&self.role_ref, &["Role", "ClusterRole"]);
        errs.extend(validate_subjects(self.subjects.as_ref(), true));
        errs.extend(role_ref_unchanged(&self.role_ref, old.map(|o| &o.role_ref)));
        errs
    }
    fn columns() -> Vec<Column> {
        binding_columns()
    }
    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        binding_cells(
            self.metadata.name.as_ref(),
            self.metadata.creation_timestamp.as_ref(),
            &self.role_ref,
            self.subjects.as_ref(),
            now,
        )
    }
}

impl KindSpec for ClusterRoleBinding {
    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let mut errs = validate_role_ref(&self.role_ref, &["ClusterRole"]);
        errs.extend(validate_subjects(self.subjects.as_ref(), false));
        errs.extend(role_ref_unchanged(&self.role_ref, old.map(|o| &o.role_ref)));
        errs
    }
    fn columns() -> Vec<Column> {
        binding_columns()
    }
    fn cells(&self, now: jiff::Timestamp) -> Vec<Value> {
        binding_cells(
            self.metadata.name.as_ref(),
            self.metadata.creation_timestamp.as_ref(),
            &self.role_ref,
            self.subjects.as_ref(),
            now,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str], urls: &[&str]) -> PolicyRule {
        let v = |s: &[&str]| Some(s.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        PolicyRule {
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            api_groups: v(groups).filter(|g| !g.is_empty()),
            resources: v(resources).filter(|g| !g.is_empty()),
            non_resource_urls: v(urls).filter(|g| !g.is_empty()),
            resource_names: None,
        }
    }

    #[test]
    fn rules_are_checked_with_upstream_words() {
        let errs = validate_rule(&rule(&[], &[""], &["pods"], &[]), true, "rules[0]");
        assert_eq!(
            errs[0].to_string(),
            "rules[0].verbs: Required value: verbs must contain at least one value"
        );
        let errs = validate_rule(&rule(&["get"], &[], &[], &[]), true, "rules[0]");
        assert_eq!(errs.len(), 2);
        assert_eq!(
            errs[1].to_string(),
            "rules[0].resources: Required value: resource rules must supply at least one resource"
        );
        let errs = validate_rule(&rule(&["get"], &[], &[], &["/healthz"]), true, "rules[1]");
        assert_eq!(
            errs[0].to_string(),
            "rules[1].nonResourceURLs: Invalid value: []string{\"/healthz\"}: namespaced rules cannot apply to non-resource URLs"
        );
        assert!(validate_rule(&rule(&["get"], &[], &[], &["/healthz"]), false, "r").is_empty());
    }

    #[test]
    fn bindings_name_a_role_of_the_right_kind_and_known_subjects() {
        let binding = |kind: &str, subject: Subject| ClusterRoleBinding {
            role_ref: RoleRef {
                api_group: GROUP.into(),
                kind: kind.into(),
                name: "view".into(),
            },
            subjects: Some(vec![subject]),
            ..Default::default()
        };
        let sa = Subject {
            kind: "ServiceAccount".into(),
            name: "builder".into(),
            ..Default::default()
        };
        let errs = binding("Role", sa.clone()).validate(None);
        assert_eq!(
            errs.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            [
                "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",
                "subjects[0].namespace: Required value",
            ]
        );
        let user = Subject {
            kind: "User".into(),
            name: "alice".into(),
            api_group: Some(GROUP.into()),
            ..Default::default()
        };
        let old = binding("ClusterRole", user.clone());
        let mut changed = old.clone();
        changed.role_ref.name = "edit".into();
        assert_eq!(
            changed.validate(Some(&old))[0].detail,
            "cannot change roleRef"
        );
        assert!(old.validate(None).is_empty());
    }

    #[test]
    fn names_are_path_segments() {
        assert!(path_segment_name("metadata.name", "system:node").is_empty());
        assert_eq!(
            path_segment_name("metadata.name", "a/b")[0].to_string(),
            "metadata.name: Invalid value: \"a/b\": may not contain '/'"
        );
    }
}
