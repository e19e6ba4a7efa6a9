//! Who may do what, for SubjectAccessReviews (the kubelets ask before they
//! serve their API). No RBAC objects are served yet, so the decision is
//! kube-apiserver's built-in one for `system:masters` (always allowed) plus
//! the apiserver's own kubelet client identity (which RBAC's
//! `system:kubelet-api-admin` would grant); everyone else is denied with a
//! reason that says so.

use crate::pki::KUBELET_CLIENT_USER;

pub const MASTERS_GROUP: &str = "system:masters";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow { reason: String },
    Deny { reason: String },
}

/// The decision for `user` in `groups`; `kubelet_client_user` is the name
/// the apiserver's kubelet client certificate carries.
pub fn decide(user: &str, groups: &[String], kubelet_client_user: &str) -> Decision {
    if groups.iter().any(|g| g == MASTERS_GROUP) {
        return Decision::Allow {
            reason: format!("user {user:?} is in group {MASTERS_GROUP:?}"),
        };
    }
    if user == kubelet_client_user {
        return Decision::Allow {
            reason: format!("user {user:?} is the apiserver's kubelet client"),
        };
    }
    Decision::Deny {
        reason: format!(
            "user {user:?} is not in group {MASTERS_GROUP:?} nor the apiserver's kubelet client ({kubelet_client_user}); no RBAC roles are served to grant more"
        ),
    }
}

/// The default kubelet client identity, for an Api made without flags.
pub fn default_kubelet_client_user() -> String {
    KUBELET_CLIENT_USER.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_and_the_kubelet_client_are_allowed_others_denied() {
        let g = |gs: &[&str]| gs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(matches!(
            decide(
                "kubernetes-admin",
                &g(&["system:masters", "system:authenticated"]),
                KUBELET_CLIENT_USER
            ),
            Decision::Allow { .. }
        ));
        assert!(matches!(
            decide(
                "kube-apiserver-kubelet-client",
                &g(&["system:authenticated"]),
                KUBELET_CLIENT_USER
            ),
            Decision::Allow { .. }
        ));
        assert_eq!(
            decide("bob", &g(&["dev", "system:authenticated"]), KUBELET_CLIENT_USER),
            Decision::Deny {
                reason: "user \"bob\" is not in group \"system:masters\" nor the apiserver's kubelet client (kube-apiserver-kubelet-client); no RBAC roles are served to grant more".into()
            }
        );
        // Another configured client identity replaces the default one.
        assert!(matches!(
            decide("kube-apiserver-kubelet-client", &g(&[]), "custom-client"),
            Decision::Deny { .. }
        ));
    }
}
