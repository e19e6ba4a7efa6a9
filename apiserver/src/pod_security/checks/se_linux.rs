//! baseline `seLinuxOptions`: the SELinux type only from the container
//! types (`container_engine_t` too from v1.31), no user or role.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{PodSpec, SELinuxOptions};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::pod_security::check::{Forbidden, containers, join_quote, named_containers, pluralize};

const TYPES_1_0: &[&str] = &["", "container_t", "container_init_t", "container_kvm_t"];
const TYPES_1_31: &[&str] = &[
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

pub fn se_linux_1_0(meta: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    se_linux(meta, spec, TYPES_1_0)
}

pub fn se_linux_1_31(meta: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    se_linux(meta, spec, TYPES_1_31)
}

fn se_linux(_: &ObjectMeta, spec: &PodSpec, allowed: &[&str]) -> Option<Forbidden> {
    let mut bad_types = BTreeSet::new();
    let (mut set_user, mut set_role) = (false, false);
    let mut valid = |o: &SELinuxOptions| {
        let mut ok = true;
        let t = o.type_.as_deref().unwrap_or("");
        if !allowed.contains(&t) {
            ok = false;
            bad_types.insert(t.to_owned());
        }
        if o.user.as_deref().is_some_and(|u| !u.is_empty()) {
            ok = false;
            set_user = true;
        }
        if o.role.as_deref().is_some_and(|r| !r.is_empty()) {
            ok = false;
            set_role = true;
        }
        ok
    };
    let mut setters = Vec::new();
    if let Some(o) = spec
        .security_context
        .as_ref()
        .and_then(|sc| sc.se_linux_options.as_ref())
        && !valid(o)
    {
        setters.push("pod".to_owned());
    }
    let mut bad = Vec::new();
    for c in containers(spec) {
        if let Some(o) = c
            .security_context
            .and_then(|sc| sc.se_linux_options.as_ref())
            && !valid(o)
        {
            bad.push(c.name.to_owned());
        }
    }
    if !bad.is_empty() {
        setters.push(named_containers(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    let mut what = Vec::new();
    if !bad_types.is_empty() {
        what.push(format!(
            "{} {}",
            pluralize("type", "types", bad_types.len()),
            join_quote(&bad_types.into_iter().collect::<Vec<_>>())
        ));
    }
    if set_user {
        what.push("user may not be set".to_owned());
    }
    if set_role {
        what.push("role may not be set".to_owned());
    }
    Some(Forbidden::new(
        "seLinuxOptions",
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            setters.join(" and "),
            what.join("; ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_security::checks::test_pod;

    #[test]
    fn se_linux_types_users_and_roles() {
        let (m, s) = test_pod(serde_json::json!({
            "securityContext": {"seLinuxOptions": {"type": "spc_t"}},
            "containers": [
                {"name": "a", "securityContext": {"seLinuxOptions": {"user": "root", "role": "r"}}},
                {"name": "b", "securityContext": {"seLinuxOptions": {"type": "container_engine_t", "level": "s0"}}},
            ],
        }));
        assert_eq!(
            se_linux_1_31(&m, &s),
            Some(Forbidden::new(
                "seLinuxOptions",
                "pod and container \"a\" set forbidden securityContext.seLinuxOptions: type \"spc_t\"; user may not be set; role may not be set"
            ))
        );
        assert_eq!(
            se_linux_1_0(&m, &s).unwrap().detail,
            "pod and containers \"a\", \"b\" set forbidden securityContext.seLinuxOptions: types \"container_engine_t\", \"spc_t\"; user may not be set; role may not be set"
        );
    }
}
