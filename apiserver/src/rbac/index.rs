//! The RBAC objects as one in-memory index, rebuilt whenever one of them
//! changes: bindings filed under the users and groups they name, roles by
//! name. A decision looks up only the requesting user's own bindings.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

use super::attributes::Attributes;
use super::rules::{rule_allows, service_account_user, subject_applies};
use crate::auth::UserInfo;

/// Whom a binding names, as the index files it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SubjectKey {
    User(String),
    Group(String),
}

/// One binding of one subject: where it applies and which role it grants.
#[derive(Debug, Clone)]
struct Grant {
    /// `None`: a ClusterRoleBinding, everywhere.
    namespace: Option<String>,
    binding_name: String,
    role_ref: RoleRef,
    subject: Subject,
}

impl Grant {
    /// `RBAC: allowed by ClusterRoleBinding "x" of ClusterRole "y" to Group "z"`.
    fn describe(&self) -> String {
        let binding = match &self.namespace {
            None => format!("ClusterRoleBinding {:?}", self.binding_name),
            Some(ns) => format!("RoleBinding {:?}", format!("{}/{ns}", self.binding_name)),
        };
        format!(
            "RBAC: allowed by {binding} of {} {:?} to {} {:?}",
            self.role_ref.kind, self.role_ref.name, self.subject.kind, self.subject.name
        )
    }
}

#[derive(Debug, Default)]
pub struct PolicyIndex {
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    grants: HashMap<SubjectKey, Vec<Grant>>,
}

fn subject_key(subject: &Subject, binding_namespace: &str) -> Option<SubjectKey> {
    match subject.kind.as_str() {
        "User" => Some(SubjectKey::User(subject.name.clone())),
        "Group" => Some(SubjectKey::Group(subject.name.clone())),
        "ServiceAccount" => {
            let ns = subject
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_namespace);
            (!ns.is_empty()).then(|| SubjectKey::User(service_account_user(ns, &subject.name)))
        }
        _ => None,
    }
}

impl PolicyIndex {
    pub fn build(
        roles: &[&Role],
        cluster_roles: &[&ClusterRole],
        role_bindings: &[&RoleBinding],
        cluster_role_bindings: &[&ClusterRoleBinding],
    ) -> Self {
        let mut index = Self::default();
        for r in cluster_roles {
            let name = r.metadata.name.clone().unwrap_or_default();
            index
                .cluster_roles
                .insert(name, r.rules.clone().unwrap_or_default());
        }
        for r in roles {
            let key = (
                r.metadata.namespace.clone().unwrap_or_default(),
                r.metadata.name.clone().unwrap_or_default(),
            );
            index.roles.insert(key, r.rules.clone().unwrap_or_default());
        }
        let bindings = cluster_role_bindings
            .iter()
            .map(|b| (None, &b.metadata, &b.role_ref, b.subjects.as_ref()))
            .chain(role_bindings.iter().map(|b| {
                (
                    Some(b.metadata.namespace.clone().unwrap_or_default()),
                    &b.metadata,
                    &b.role_ref,
                    b.subjects.as_ref(),
                )
            }));
        for (namespace, meta, role_ref, subjects) in bindings {
            for subject in subjects.into_iter().flatten() {
                let Some(key) = subject_key(subject, namespace.as_deref().unwrap_or_default())
                else {
                    continue;
                };
                index.grants.entry(key).or_default().push(Grant {
                    namespace: namespace.clone(),
                    binding_name: meta.name.clone().unwrap_or_default(),
                    role_ref: role_ref.clone(),
                    subject: subject.clone(),
                });
            }
        }
        index
    }

    fn rules_of(&self, grant: &Grant) -> &[PolicyRule] {
        let rules = match (grant.role_ref.kind.as_str(), &grant.namespace) {
            ("ClusterRole", _) => self.cluster_roles.get(&grant.role_ref.name),
            ("Role", Some(ns)) => self.roles.get(&(ns.clone(), grant.role_ref.name.clone())),
            _ => None,
        };
        rules.map(Vec::as_slice).unwrap_or_default()
    }

    /// The user's grants that apply in `namespace` (cluster-wide ones
    /// always; empty namespace: only those).
    fn grants_for<'a>(
        &'a self,
        user: &'a UserInfo,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a Grant> + 'a {
        std::iter::once(SubjectKey::User(user.name.clone()))
            .chain(user.groups.iter().map(|g| SubjectKey::Group(g.clone())))
            .filter_map(|k| self.grants.get(&k))
            .flatten()
            .filter(move |g| match &g.namespace {
                None => true,
                Some(ns) => !namespace.is_empty() && ns == namespace,
            })
            // Guards the index against a key collision, never expected.
            .filter(move |g| {
                subject_applies(&g.subject, user, g.namespace.as_deref().unwrap_or(""))
            })
    }

    /// Why the request is allowed, or `None`.
    pub fn allows(&self, attrs: &Attributes) -> Option<String> {
        self.grants_for(&attrs.user, &attrs.namespace)
            .find(|g| self.rules_of(g).iter().any(|r| rule_allows(r, attrs)))
            .map(Grant::describe)
    }

    /// Every rule the user holds in `namespace` (cluster-wide ones included).
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<PolicyRule> {
        let mut out: Vec<PolicyRule> = Vec::new();
        for g in self.grants_for(user, namespace) {
            for r in self.rules_of(g) {
                if !out.contains(r) {
                    out.push(r.clone());
                }
            }
        }
        out
    }

    /// The rules of the role a binding refers to, in `namespace`.
    pub fn role_rules(&self, role_ref: &RoleRef, namespace: &str) -> Option<Vec<PolicyRule>> {
        match role_ref.kind.as_str() {
            "ClusterRole" => self.cluster_roles.get(&role_ref.name),
            _ => self
                .roles
                .get(&(namespace.to_owned(), role_ref.name.clone())),
        }
        .cloned()
    }
}

/// The rules an aggregated ClusterRole should hold: those of every other
/// ClusterRole its selectors match, by name order, each rule once.
pub fn aggregated_rules(role: &ClusterRole, all: &[&ClusterRole]) -> Option<Vec<PolicyRule>> {
    let selectors = role
        .aggregation_rule
        .as_ref()?
        .cluster_role_selectors
        .as_ref()?;
    let empty = BTreeMap::new();
    let mut sources: Vec<&&ClusterRole> = all
        .iter()
        .filter(|c| c.metadata.name != role.metadata.name)
        .filter(|c| {
            let labels = c.metadata.labels.as_ref().unwrap_or(&empty);
            selectors
                .iter()
                .any(|s| kubelab_rules::selector::matches(s, labels))
        })
        .collect();
    sources.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut rules: Vec<PolicyRule> = Vec::new();
    for c in sources {
        for r in c.rules.iter().flatten() {
            if !rules.contains(r) {
                rules.push(r.clone());
            }
        }
    }
    Some(rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::rules::rule;
    use k8s_openapi::api::rbac::v1::AggregationRule;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

    fn meta(ns: Option<&str>, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: ns.map(String::from),
            ..Default::default()
        }
    }

    fn subject(kind: &str, name: &str) -> Subject {
        Subject {
            kind: kind.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn list_pods(user: UserInfo, ns: &str) -> Attributes {
        Attributes {
            user,
            verb: "list".into(),
            resource_request: true,
            resource: "pods".into(),
            namespace: ns.into(),
            ..Default::default()
        }
    }

    #[test]
    fn role_bindings_grant_in_their_namespace_cluster_bindings_everywhere() {
        let view = ClusterRole {
            metadata: meta(None, "view"),
            rules: Some(vec![rule(&["get", "list"], &[""], &["pods"])]),
            ..Default::default()
        };
        let local = RoleBinding {
            metadata: meta(Some("dev"), "alice-view"),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: "view".into(),
            },
            subjects: Some(vec![subject("User", "alice")]),
        };
        let global = ClusterRoleBinding {
            metadata: meta(None, "auditors-view"),
            role_ref: local.role_ref.clone(),
            subjects: Some(vec![subject("Group", "auditors")]),
        };
        let index = PolicyIndex::build(&[], &[&view], &[&local], &[&global]);
        assert_eq!(
            index
                .allows(&list_pods(user("alice", &[]), "dev"))
                .as_deref(),
            Some(
                "RBAC: allowed by RoleBinding \"alice-view/dev\" of ClusterRole \"view\" to User \"alice\""
            )
        );
        assert!(
            index
                .allows(&list_pods(user("alice", &[]), "prod"))
                .is_none()
        );
        assert!(index.allows(&list_pods(user("alice", &[]), "")).is_none());
        assert_eq!(
            index
                .allows(&list_pods(user("bob", &["auditors"]), "prod"))
                .as_deref(),
            Some(
                "RBAC: allowed by ClusterRoleBinding \"auditors-view\" of ClusterRole \"view\" to Group \"auditors\""
            )
        );
        assert_eq!(index.rules_for(&user("alice", &[]), "dev").len(), 1);
        assert!(index.rules_for(&user("alice", &[]), "prod").is_empty());
    }

    #[test]
    fn a_binding_to_a_missing_role_grants_nothing() {
        let b = RoleBinding {
            metadata: meta(Some("dev"), "b"),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: "ghost".into(),
            },
            subjects: Some(vec![subject("User", "alice")]),
        };
        let index = PolicyIndex::build(&[], &[], &[&b], &[]);
        assert!(
            index
                .allows(&list_pods(user("alice", &[]), "dev"))
                .is_none()
        );
    }

    #[test]
    fn aggregation_collects_matching_roles_rules_once_in_name_order() {
        let label = |k: &str| Some(BTreeMap::from([(k.to_owned(), "true".to_owned())]));
        let agg = ClusterRole {
            metadata: meta(None, "monitoring"),
            aggregation_rule: Some(AggregationRule {
                cluster_role_selectors: Some(vec![LabelSelector {
                    match_labels: label("aggregate-to-monitoring"),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        };
        let mut b = ClusterRole {
            metadata: meta(None, "b"),
            rules: Some(vec![rule(&["get"], &[""], &["pods"])]),
            ..Default::default()
        };
        b.metadata.labels = label("aggregate-to-monitoring");
        let mut a = b.clone();
        a.metadata.name = Some("a".into());
        a.rules = Some(vec![
            rule(&["list"], &[""], &["services"]),
            rule(&["get"], &[""], &["pods"]),
        ]);
        let other = ClusterRole {
            metadata: meta(None, "other"),
            rules: Some(vec![rule(&["*"], &["*"], &["*"])]),
            ..Default::default()
        };
        let rules = aggregated_rules(&agg, &[&agg, &b, &other, &a]).unwrap();
        assert_eq!(
            rules,
            vec![
                rule(&["list"], &[""], &["services"]),
                rule(&["get"], &[""], &["pods"])
            ]
        );
        assert!(aggregated_rules(&other, &[&agg]).is_none());
    }
}
