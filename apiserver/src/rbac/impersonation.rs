//! Impersonation (`kubectl --as USER --as-group G`): the `Impersonate-User`,
//! `Impersonate-Group` and `Impersonate-Uid` headers, each allowed only
//! with the `impersonate` verb on the users, groups, serviceaccounts or
//! uids it names; the request then runs as that user, as kube-apiserver's
//! impersonation filter does.

use axum::http::HeaderMap;

use super::attributes::Attributes;
use crate::auth::UserInfo;
use crate::authorizer::Authorizer;
use crate::status::ApiError;

pub const USER_HEADER: &str = "impersonate-user";
pub const GROUP_HEADER: &str = "impersonate-group";
pub const UID_HEADER: &str = "impersonate-uid";
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

fn impersonate_attrs(
    actor: &UserInfo,
    group: &str,
    resource: &str,
    namespace: &str,
    name: &str,
) -> Attributes {
    Attributes {
        user: actor.clone(),
        verb: "impersonate".into(),
        resource_request: true,
        api_group: group.into(),
        resource: resource.into(),
        namespace: namespace.into(),
        name: name.into(),
        ..Default::default()
    }
}

/// The user the request acts as: `actor` itself without impersonation
/// headers, else the impersonated user once every part is allowed.
pub fn impersonate(
    authz: &Authorizer,
    actor: UserInfo,
    headers: &HeaderMap,
) -> Result<UserInfo, ApiError> {
    let values = |h: &str| -> Vec<String> {
        headers
            .get_all(h)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    };
    let users = values(USER_HEADER);
    let groups = values(GROUP_HEADER);
    let uids = values(UID_HEADER);
    let Some(name) = users.first().cloned() else {
        if groups.is_empty() && uids.is_empty() {
            return Ok(actor);
        }
        return Err(ApiError::bad_request(format!(
            "requested [{}] without impersonating a user",
            groups
                .iter()
                .map(|g| format!("{{Group  {g}  authentication.k8s.io/v1  }}"))
                .collect::<Vec<_>>()
                .join(" ")
        )));
    };
    let mut checks = Vec::new();
    let service_account = name
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)
        .and_then(|rest| rest.split_once(':'));
    match service_account {
        Some((ns, sa)) => checks.push(impersonate_attrs(&actor, "", "serviceaccounts", ns, sa)),
        None => checks.push(impersonate_attrs(&actor, "", "users", "", &name)),
    }
    for g in &groups {
        checks.push(impersonate_attrs(&actor, "", "groups", "", g));
    }
    for u in &uids {
        checks.push(impersonate_attrs(
            &actor,
            "authentication.k8s.io",
            "uids",
            "",
            u,
        ));
    }
    for attrs in &checks {
        if let crate::authorizer::Decision::Deny { reason } = authz.authorize(attrs) {
            tracing::debug!(actor = %actor.name, as_user = %name, "impersonation denied");
            return Err(attrs.forbidden(&reason));
        }
    }
    let mut out_groups = groups;
    if let Some((ns, _)) = service_account
        && out_groups.is_empty()
    {
        out_groups.push("system:serviceaccounts".into());
        out_groups.push(format!("system:serviceaccounts:{ns}"));
    }
    let everyone = if name == "system:anonymous" {
        "system:unauthenticated"
    } else {
        "system:authenticated"
    };
    if !out_groups.iter().any(|g| g == everyone) {
        out_groups.push(everyone.into());
    }
    Ok(UserInfo {
        name,
        uid: uids.into_iter().next().unwrap_or_default(),
        groups: out_groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authorizer::Mode;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn without_headers_the_actor_acts() {
        let a = Authorizer::new(vec![Mode::Rbac]);
        let bob = user("bob", &[]);
        assert_eq!(
            impersonate(&a, bob.clone(), &HeaderMap::new()).unwrap(),
            bob
        );
    }

    #[test]
    fn impersonating_needs_the_verb_and_yields_the_named_user() {
        let a = Authorizer::new(vec![Mode::Rbac]);
        let h = headers(&[("impersonate-user", "alice"), ("impersonate-group", "dev")]);
        let e = impersonate(&a, user("bob", &[]), &h).unwrap_err();
        assert_eq!(
            e.message,
            "users \"alice\" is forbidden: User \"bob\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        );
        let admin = user("admin", &["system:masters"]);
        let as_alice = impersonate(&a, admin.clone(), &h).unwrap();
        assert_eq!(as_alice.name, "alice");
        assert_eq!(as_alice.groups, ["dev", "system:authenticated"]);
        let sa = headers(&[(
            "impersonate-user",
            "system:serviceaccount:kube-system:my-scheduler",
        )]);
        assert_eq!(
            impersonate(&a, admin, &sa).unwrap().groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
                "system:authenticated"
            ]
        );
    }
}
