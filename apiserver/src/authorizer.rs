//! Who may do what: the authorizers of `--authorization-mode` (default
//! `Node,RBAC`, as kubeadm sets it; `AlwaysAllow` and `AlwaysDeny` too),
//! asked in order after kube-apiserver's own rule that `system:masters`
//! may do anything. Every request passes [`authorize`]; the
//! SubjectAccessReviews the kubelets send get the same answers.

use std::sync::{Arc, RwLock};

use axum::extract::{Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::rbac::v1::PolicyRule;

use crate::api::Api;
use crate::auth::UserInfo;
use crate::pki::KUBELET_CLIENT_USER;
use crate::rbac::attributes::{self, Attributes};
use crate::rbac::index::PolicyIndex;
use crate::rbac::node::{self, NodeGraph};
use crate::rbac::{admission, bootstrap, impersonation};

pub const MASTERS_GROUP: &str = "system:masters";

/// One `--authorization-mode` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    AlwaysAllow,
    AlwaysDeny,
    Node,
    Rbac,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModeError {
    #[error("authorization-mode {0:?} is not a valid mode")]
    Unknown(String),
    #[error("authorization-mode {0:?} has mode specified more than once")]
    Repeated(String),
}

impl Mode {
    /// `--authorization-mode Node,RBAC`.
    pub fn parse_list(s: &str) -> Result<Vec<Mode>, ModeError> {
        let mut modes = Vec::new();
        for m in s.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            let mode = match m {
                "AlwaysAllow" => Mode::AlwaysAllow,
                "AlwaysDeny" => Mode::AlwaysDeny,
                "Node" => Mode::Node,
                "RBAC" => Mode::Rbac,
                other => return Err(ModeError::Unknown(other.into())),
            };
            if modes.contains(&mode) {
                return Err(ModeError::Repeated(m.into()));
            }
            modes.push(mode);
        }
        Ok(modes)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow { reason: String },
    Deny { reason: String },
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

pub struct Authorizer {
    modes: Vec<Mode>,
    policy: RwLock<Arc<PolicyIndex>>,
    graph: RwLock<NodeGraph>,
    node_rules: Vec<PolicyRule>,
}

impl Default for Authorizer {
    /// An authorizer that allows everything (an Api made without flags).
    fn default() -> Self {
        Self::new(vec![Mode::AlwaysAllow])
    }
}

fn is_privileged(user: &UserInfo) -> bool {
    user.groups.iter().any(|g| g == MASTERS_GROUP)
}

impl Authorizer {
    pub fn new(modes: Vec<Mode>) -> Self {
        Self {
            modes,
            policy: RwLock::default(),
            graph: RwLock::default(),
            node_rules: bootstrap::node_rules(),
        }
    }

    pub fn modes(&self) -> &[Mode] {
        &self.modes
    }

    pub fn set_policy(&self, index: PolicyIndex) {
        *self.policy.write().expect("policy lock") = Arc::new(index);
    }

    pub fn policy(&self) -> Arc<PolicyIndex> {
        self.policy.read().expect("policy lock").clone()
    }

    pub fn graph(&self) -> std::sync::RwLockWriteGuard<'_, NodeGraph> {
        self.graph.write().expect("node graph lock")
    }

    /// Whether pod `namespace/name` is bound to `node`.
    pub fn pod_on(&self, node: &str, namespace: &str, name: &str) -> bool {
        self.graph
            .read()
            .expect("node graph lock")
            .pod_on(node, namespace, name)
    }

    pub fn authorize(&self, attrs: &Attributes) -> Decision {
        if is_privileged(&attrs.user) {
            return Decision::Allow {
                reason: String::new(),
            };
        }
        let mut reasons = Vec::new();
        for mode in &self.modes {
            match mode {
                Mode::AlwaysAllow => {
                    return Decision::Allow {
                        reason: String::new(),
                    };
                }
                Mode::AlwaysDeny => {
                    return Decision::Deny {
                        reason: "Everything is forbidden.".into(),
                    };
                }
                Mode::Node => {
                    let Some(name) = node::node_name(&attrs.user) else {
                        continue;
                    };
                    let graph = self.graph.read().expect("node graph lock");
                    match node::authorize(name, attrs, &graph, &self.node_rules) {
                        Some(Ok(reason)) => return Decision::Allow { reason },
                        Some(Err(reason)) => reasons.push(reason),
                        None => {}
                    }
                }
                Mode::Rbac => {
                    if let Some(reason) = self.policy().allows(attrs) {
                        return Decision::Allow { reason };
                    }
                }
            }
        }
        Decision::Deny {
            reason: reasons.join("\n"),
        }
    }

    /// The rules `user` holds in `namespace`, for SelfSubjectRulesReview
    /// and the escalation check; `true` when they may not be all (another
    /// mode than RBAC decides too).
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> (Vec<PolicyRule>, bool) {
        let everything = || {
            vec![
                PolicyRule {
                    verbs: vec!["*".into()],
                    api_groups: Some(vec!["*".into()]),
                    resources: Some(vec!["*".into()]),
                    ..Default::default()
                },
                PolicyRule {
                    verbs: vec!["*".into()],
                    non_resource_urls: Some(vec!["*".into()]),
                    ..Default::default()
                },
            ]
        };
        if is_privileged(user) || self.modes.first() == Some(&Mode::AlwaysAllow) {
            return (everything(), false);
        }
        let mut rules = Vec::new();
        let mut incomplete = false;
        for mode in &self.modes {
            match mode {
                Mode::AlwaysAllow => {
                    rules.extend(everything());
                    break;
                }
                Mode::AlwaysDeny => break,
                Mode::Node => {
                    if node::node_name(user).is_some() {
                        rules.extend(self.node_rules.iter().cloned());
                        incomplete = true;
                    }
                }
                Mode::Rbac => rules.extend(self.policy().rules_for(user, namespace)),
            }
        }
        (rules, incomplete)
    }
}

/// The default kubelet client identity, for an Api made without flags.
pub fn default_kubelet_client_user() -> String {
    KUBELET_CLIENT_USER.to_owned()
}

/// The authorization filter: impersonation first (`Impersonate-User`…),
/// then the decision for the request's attributes; a denied request is
/// answered 403 in kube-apiserver's words. Requests that carry no user
/// are the public paths authentication let through.
pub async fn authorize(State(api): State<Arc<Api>>, mut req: Request, next: Next) -> Response {
    let Some(user) = req.extensions().get::<UserInfo>().cloned() else {
        return next.run(req).await;
    };
    let user = match impersonation::impersonate(&api.authorizer, user, req.headers()) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    req.extensions_mut().insert(user.clone());
    let params = Query::<crate::api::Params>::try_from_uri(req.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    let attrs = attributes::from_request(
        user.clone(),
        req.method().as_str(),
        req.uri().path(),
        &params,
    );
    match api.authorizer.authorize(&attrs) {
        Decision::Allow { .. } => {
            if let Err(e) = admission::admit_request(&api.authorizer, &attrs) {
                return e.into_response();
            }
            let requester = admission::Requester {
                user,
                authorizer: api.authorizer.clone(),
            };
            admission::REQUESTER.scope(requester, next.run(req)).await
        }
        Decision::Deny { reason } => {
            tracing::debug!(user = %attrs.user.name, verb = %attrs.verb, path = %attrs.path, "forbidden");
            attrs.forbidden(&reason).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::rules::rule;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleRef, Subject};

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn list_nodes(u: UserInfo) -> Attributes {
        Attributes {
            user: u,
            verb: "list".into(),
            resource_request: true,
            resource: "nodes".into(),
            ..Default::default()
        }
    }

    #[test]
    fn modes_parse_as_kube_apiservers_flag() {
        assert_eq!(
            Mode::parse_list("Node,RBAC").unwrap(),
            vec![Mode::Node, Mode::Rbac]
        );
        assert_eq!(
            Mode::parse_list("RBAC,Foo").unwrap_err().to_string(),
            "authorization-mode \"Foo\" is not a valid mode"
        );
        assert!(Mode::parse_list("RBAC,RBAC").is_err());
    }

    #[test]
    fn masters_always_rbac_by_bindings_nodes_by_node_rules() {
        let a = Authorizer::new(vec![Mode::Node, Mode::Rbac]);
        assert!(
            a.authorize(&list_nodes(user("admin", &[MASTERS_GROUP])))
                .allowed()
        );
        assert!(!a.authorize(&list_nodes(user("bob", &["dev"]))).allowed());
        let role = ClusterRole {
            metadata: Default::default(),
            rules: Some(vec![rule(&["list"], &[""], &["nodes"])]),
            ..Default::default()
        };
        let mut role = role;
        role.metadata.name = Some("node-lister".into());
        let mut binding = ClusterRoleBinding {
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: "node-lister".into(),
            },
            subjects: Some(vec![Subject {
                kind: "Group".into(),
                name: "dev".into(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        binding.metadata.name = Some("dev-nodes".into());
        a.set_policy(PolicyIndex::build(&[], &[&role], &[], &[&binding]));
        assert!(a.authorize(&list_nodes(user("bob", &["dev"]))).allowed());
        let node = user("system:node:n1", &["system:nodes"]);
        assert!(a.authorize(&list_nodes(node.clone())).allowed());
        let mut secret = list_nodes(node);
        secret.resource = "secrets".into();
        secret.verb = "get".into();
        secret.namespace = "default".into();
        secret.name = "s".into();
        assert_eq!(
            a.authorize(&secret),
            Decision::Deny {
                reason: "no relationship found between node 'n1' and this object".into()
            }
        );
        let allow_all = Authorizer::new(vec![Mode::AlwaysAllow]);
        assert!(allow_all.authorize(&secret).allowed());
    }
}
