//! What one policy rule allows, and who a binding subject names: the
//! matching of `plugin/pkg/auth/authorizer/rbac` (`RuleAllows`,
//! `appliesTo`), pure.

use k8s_openapi::api::rbac::v1::{PolicyRule, Subject};

use super::attributes::Attributes;
use crate::auth::UserInfo;

const ALL: &str = "*";

fn has(list: Option<&Vec<String>>, want: &str) -> bool {
    list.into_iter().flatten().any(|v| v == ALL || v == want)
}

pub fn verb_matches(rule: &PolicyRule, verb: &str) -> bool {
    rule.verbs.iter().any(|v| v == ALL || v == verb)
}

pub fn api_group_matches(rule: &PolicyRule, group: &str) -> bool {
    has(rule.api_groups.as_ref(), group)
}

/// `pods`, `pods/log`, or `*/log` for a subresource of any resource.
pub fn resource_matches(rule: &PolicyRule, resource: &str, subresource: &str) -> bool {
    let combined = if subresource.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}/{subresource}")
    };
    rule.resources.iter().flatten().any(|r| {
        r == ALL
            || *r == combined
            || (!subresource.is_empty() && r.strip_prefix("*/") == Some(subresource))
    })
}

/// No names: any object; else only the ones listed (a request without a
/// name, such as list or create, matches none of them).
pub fn resource_name_matches(rule: &PolicyRule, name: &str) -> bool {
    match rule.resource_names.as_deref() {
        None | Some([]) => true,
        Some(names) => names.iter().any(|n| n == name),
    }
}

/// `*`, an exact path, or a prefix ending in `*`.
pub fn non_resource_url_matches(rule: &PolicyRule, path: &str) -> bool {
    rule.non_resource_urls.iter().flatten().any(|u| {
        u == ALL
            || u == path
            || u.strip_suffix('*')
                .is_some_and(|prefix| path.starts_with(prefix))
    })
}

/// Whether `rule` allows the request `attrs` describes.
pub fn rule_allows(rule: &PolicyRule, attrs: &Attributes) -> bool {
    if !verb_matches(rule, &attrs.verb) {
        return false;
    }
    if attrs.resource_request {
        api_group_matches(rule, &attrs.api_group)
            && resource_matches(rule, &attrs.resource, &attrs.subresource)
            && resource_name_matches(rule, &attrs.name)
    } else {
        non_resource_url_matches(rule, &attrs.path)
    }
}

/// The user name a service account authenticates as.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Whether `subject` of a binding in `binding_namespace` (empty for a
/// ClusterRoleBinding) names `user`.
pub fn subject_applies(subject: &Subject, user: &UserInfo, binding_namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => user.name == subject.name,
        "Group" => user.groups.iter().any(|g| *g == subject.name),
        "ServiceAccount" => {
            let ns = subject
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_namespace);
            !ns.is_empty() && user.name == service_account_user(ns, &subject.name)
        }
        _ => false,
    }
}

/// Whether the rules in `owned` allow everything `wanted` does — the
/// escalation check (`validation.Covers`): each verb, group, resource and
/// name (or URL) of `wanted` broken down, and each piece allowed by some
/// owned rule.
pub fn covers(owned: &[PolicyRule], wanted: &PolicyRule) -> bool {
    let one = |v: &str| vec![v.to_owned()];
    let names: Vec<Option<String>> = match wanted.resource_names.as_deref() {
        None | Some([]) => vec![None],
        Some(n) => n.iter().cloned().map(Some).collect(),
    };
    for verb in &wanted.verbs {
        for url in wanted.non_resource_urls.iter().flatten() {
            let piece = PolicyRule {
                verbs: one(verb),
                non_resource_urls: Some(one(url)),
                ..Default::default()
            };
            if !owned.iter().any(|o| rule_covers(o, &piece)) {
                return false;
            }
        }
        for group in wanted.api_groups.iter().flatten() {
            for resource in wanted.resources.iter().flatten() {
                for name in &names {
                    let piece = PolicyRule {
                        verbs: one(verb),
                        api_groups: Some(one(group)),
                        resources: Some(one(resource)),
                        resource_names: name.clone().map(|n| vec![n]),
                        non_resource_urls: None,
                    };
                    if !owned.iter().any(|o| rule_covers(o, &piece)) {
                        return false;
                    }
                }
            }
        }
    }
    true
}

/// Whether `owner` allows all of `piece` (one verb, one group, one
/// resource, at most one name, or one URL); a wildcard is covered only
/// by a wildcard.
fn rule_covers(owner: &PolicyRule, piece: &PolicyRule) -> bool {
    let verb = &piece.verbs[0];
    if !owner.verbs.iter().any(|v| v == ALL || v == verb) {
        return false;
    }
    if let Some(url) = piece.non_resource_urls.as_ref().and_then(|u| u.first()) {
        return owner.non_resource_urls.iter().flatten().any(|o| {
            o == ALL || o == url || o.strip_suffix('*').is_some_and(|p| url.starts_with(p))
        });
    }
    let group = &piece.api_groups.as_ref().expect("a resource piece")[0];
    let resource = &piece.resources.as_ref().expect("a resource piece")[0];
    if !has(owner.api_groups.as_ref(), group) {
        return false;
    }
    let resource_ok = owner.resources.iter().flatten().any(|o| {
        o == ALL
            || o == resource
            || resource
                .split_once('/')
                .is_some_and(|(_, sub)| o.strip_prefix("*/") == Some(sub))
    });
    if !resource_ok {
        return false;
    }
    match owner.resource_names.as_deref() {
        None | Some([]) => true,
        Some(owned) => piece
            .resource_names
            .as_ref()
            .and_then(|n| n.first())
            .is_some_and(|n| owned.contains(n)),
    }
}

#[cfg(test)]
pub(crate) fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    PolicyRule {
        verbs: v(verbs),
        api_groups: Some(v(groups)),
        resources: Some(v(resources)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }
    }

    #[test]
    fn verbs_groups_resources_and_subresources_match_as_upstream() {
        let r = rule(&["get", "list"], &[""], &["pods", "pods/log"]);
        assert!(rule_allows(&r, &attrs("list", "", "pods", "", "")));
        assert!(rule_allows(&r, &attrs("get", "", "pods", "log", "web")));
        assert!(!rule_allows(&r, &attrs("get", "", "pods", "exec", "web")));
        assert!(!rule_allows(&r, &attrs("get", "apps", "pods", "", "")));
        assert!(!rule_allows(&r, &attrs("watch", "", "pods", "", "")));
        let any_status = rule(&["update"], &["*"], &["*/status"]);
        assert!(rule_allows(
            &any_status,
            &attrs("update", "apps", "deployments", "status", "d")
        ));
        assert!(!rule_allows(
            &any_status,
            &attrs("update", "apps", "deployments", "", "d")
        ));
        let all = rule(&["*"], &["*"], &["*"]);
        assert!(rule_allows(
            &all,
            &attrs("deletecollection", "batch", "jobs", "", "")
        ));
    }

    #[test]
    fn resource_names_limit_named_requests_only() {
        let mut r = rule(&["get", "list"], &[""], &["configmaps"]);
        r.resource_names = Some(vec!["settings".into()]);
        assert!(rule_allows(
            &r,
            &attrs("get", "", "configmaps", "", "settings")
        ));
        assert!(!rule_allows(
            &r,
            &attrs("get", "", "configmaps", "", "other")
        ));
        assert!(!rule_allows(&r, &attrs("list", "", "configmaps", "", "")));
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_star_prefix() {
        let r = PolicyRule {
            verbs: vec!["get".into()],
            non_resource_urls: Some(vec!["/healthz".into(), "/apis/*".into()]),
            ..Default::default()
        };
        let get = |path: &str| Attributes {
            verb: "get".into(),
            path: path.into(),
            ..Default::default()
        };
        assert!(rule_allows(&r, &get("/healthz")));
        assert!(rule_allows(&r, &get("/apis/apps/v1")));
        assert!(!rule_allows(&r, &get("/healthz/etcd")));
        assert!(!rule_allows(&r, &get("/metrics")));
    }

    #[test]
    fn subjects_name_users_groups_and_service_accounts() {
        let user = UserInfo {
            name: "system:serviceaccount:kube-system:my-scheduler".into(),
            uid: String::new(),
            groups: vec!["system:serviceaccounts".into()],
        };
        let sa = Subject {
            kind: "ServiceAccount".into(),
            name: "my-scheduler".into(),
            namespace: Some("kube-system".into()),
            ..Default::default()
        };
        assert!(subject_applies(&sa, &user, ""));
        let local = Subject {
            namespace: None,
            ..sa.clone()
        };
        assert!(subject_applies(&local, &user, "kube-system"));
        assert!(!subject_applies(&local, &user, "default"));
        assert!(!subject_applies(&local, &user, ""));
        let group = Subject {
            kind: "Group".into(),
            name: "system:serviceaccounts".into(),
            ..Default::default()
        };
        assert!(subject_applies(&group, &user, ""));
    }

    #[test]
    fn covering_needs_every_piece_and_wildcards_only_from_wildcards() {
        let owned = vec![
            rule(&["get", "list"], &[""], &["pods", "configmaps"]),
            rule(&["*"], &["apps"], &["deployments"]),
        ];
        assert!(covers(&owned, &rule(&["get"], &[""], &["pods"])));
        assert!(covers(
            &owned,
            &rule(&["delete", "get"], &["apps"], &["deployments"])
        ));
        assert!(!covers(&owned, &rule(&["delete"], &[""], &["pods"])));
        assert!(!covers(&owned, &rule(&["get"], &[""], &["*"])));
        assert!(!covers(&owned, &rule(&["get"], &["", "apps"], &["pods"])));
        let admin = vec![rule(&["*"], &["*"], &["*"])];
        assert!(covers(&admin, &rule(&["*"], &["*"], &["*"])));
        let mut named = rule(&["get"], &[""], &["secrets"]);
        named.resource_names = Some(vec!["a".into()]);
        assert!(covers(&[named.clone()], &named));
        assert!(!covers(&[named], &rule(&["get"], &[""], &["secrets"])));
    }
}
