//! Capabilities. baseline `capabilities_baseline`: nothing added beyond
//! the container runtime's default set (less NET_RAW); restricted
//! `capabilities_restricted` (v1.22+, not for Windows pods from v1.25):
//! drop ALL, add at most NET_BIND_SERVICE.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::pod_security::check::{Forbidden, containers, is_windows, join_quote, named_containers};

const BASELINE_ALLOWED: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

pub fn baseline_1_0(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let mut bad = Vec::new();
    let mut caps = BTreeSet::new();
    for c in containers(spec) {
        let added = c
            .security_context
            .and_then(|sc| sc.capabilities.as_ref())
            .and_then(|caps| caps.add.as_deref())
            .unwrap_or_default();
        let extra: Vec<&String> = added
            .iter()
            .filter(|a| !BASELINE_ALLOWED.contains(&a.as_str()))
            .collect();
        if !extra.is_empty() {
            bad.push(c.name.to_owned());
            caps.extend(extra.into_iter().cloned());
        }
    }
    (!bad.is_empty()).then(|| {
        Forbidden::new(
            "non-default capabilities",
            format!(
                "{} must not include {} in securityContext.capabilities.add",
                named_containers(&bad),
                join_quote(&caps.into_iter().collect::<Vec<_>>())
            ),
        )
    })
}

pub fn restricted_1_22(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let mut missing_drop_all = Vec::new();
    let mut adding = Vec::new();
    let mut forbidden_caps = BTreeSet::new();
    for c in containers(spec) {
        let Some(caps) = c.security_context.and_then(|sc| sc.capabilities.as_ref()) else {
            missing_drop_all.push(c.name.to_owned());
            continue;
        };
        if !caps.drop.iter().flatten().any(|d| d == "ALL") {
            missing_drop_all.push(c.name.to_owned());
        }
        let extra: Vec<&String> = caps
            .add
            .iter()
            .flatten()
            .filter(|a| *a != "NET_BIND_SERVICE")
            .collect();
        if !extra.is_empty() {
            adding.push(c.name.to_owned());
            forbidden_caps.extend(extra.into_iter().cloned());
        }
    }
    let mut details = Vec::new();
    if !missing_drop_all.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            named_containers(&missing_drop_all)
        ));
    }
    if !adding.is_empty() {
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            named_containers(&adding),
            join_quote(&forbidden_caps.into_iter().collect::<Vec<_>>())
        ));
    }
    (!details.is_empty()).then(|| Forbidden::new("unrestricted capabilities", details.join("; ")))
}

pub fn restricted_1_25(meta: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    if is_windows(spec) {
        return None;
    }
    restricted_1_22(meta, spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_security::checks::test_pod;

    #[test]
    fn baseline_refuses_capabilities_beyond_the_default_set() {
        let (m, s) = test_pod(serde_json::json!({"containers": [
            {"name": "a", "securityContext": {"capabilities": {"add": ["SYS_ADMIN", "CHOWN", "NET_RAW"]}}},
            {"name": "b", "securityContext": {"capabilities": {"add": ["KILL"]}}},
        ]}));
        assert_eq!(
            baseline_1_0(&m, &s),
            Some(Forbidden::new(
                "non-default capabilities",
                "container \"a\" must not include \"NET_RAW\", \"SYS_ADMIN\" in securityContext.capabilities.add"
            ))
        );
    }

    #[test]
    fn restricted_wants_drop_all_and_only_net_bind_service() {
        let (m, s) = test_pod(serde_json::json!({"containers": [
            {"name": "a"},
            {"name": "b", "securityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "CHOWN"]}}},
            {"name": "c", "securityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}},
        ]}));
        assert_eq!(
            restricted_1_25(&m, &s),
            Some(Forbidden::new(
                "unrestricted capabilities",
                "container \"a\" must set securityContext.capabilities.drop=[\"ALL\"]; container \"b\" must not include \"CHOWN\" in securityContext.capabilities.add"
            ))
        );
        let (m, s) =
            test_pod(serde_json::json!({"os": {"name": "windows"}, "containers": [{"name": "a"}]}));
        assert_eq!(restricted_1_25(&m, &s), None);
        assert!(restricted_1_22(&m, &s).is_some());
    }
}
