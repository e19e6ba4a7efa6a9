//! Seccomp. baseline `seccompProfile_baseline`: never Unconfined (before
//! v1.19 in the deprecated annotations, from v1.19 in the fields);
//! restricted `seccompProfile_restricted` (v1.19+, not for Windows pods
//! from v1.25): every container RuntimeDefault or Localhost, set on it or
//! on the pod.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::pod_security::check::{
    Forbidden, containers, is_windows, join_quote, named_containers, pluralize,
};

const POD_ANNOTATION: &str = "seccomp.security.alpha.kubernetes.io/pod";
const CONTAINER_ANNOTATION_PREFIX: &str = "container.seccomp.security.alpha.kubernetes.io/";

fn valid_type(t: &str) -> bool {
    matches!(t, "RuntimeDefault" | "Localhost")
}

fn valid_annotation(v: &str) -> bool {
    v == "runtime/default" || v == "docker/default" || v.starts_with("localhost/")
}

pub fn baseline_1_0(meta: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let annotations = meta.annotations.clone().unwrap_or_default();
    let mut forbidden = BTreeSet::new();
    let mut check = |key: String| {
        if let Some(v) = annotations.get(&key).filter(|v| !valid_annotation(v)) {
            forbidden.insert(format!("{key}={v:?}"));
        }
    };
    check(POD_ANNOTATION.to_owned());
    for c in containers(spec) {
        check(format!("{CONTAINER_ANNOTATION_PREFIX}{}", c.name));
    }
    (!forbidden.is_empty()).then(|| {
        Forbidden::new(
            "seccompProfile",
            format!(
                "forbidden {} {}",
                pluralize("annotation", "annotations", forbidden.len()),
                forbidden.into_iter().collect::<Vec<_>>().join(", ")
            ),
        )
    })
}

/// The pod's own profile type, and the containers that set a bad one,
/// with the bad types and the containers that set none.
struct Profiles {
    pod: Option<String>,
    bad_containers: Vec<String>,
    unset_containers: Vec<String>,
    bad_values: BTreeSet<String>,
}

fn profiles(spec: &PodSpec) -> Profiles {
    let pod = spec
        .security_context
        .as_ref()
        .and_then(|sc| sc.seccomp_profile.as_ref())
        .map(|p| p.type_.clone());
    let mut p = Profiles {
        pod: pod.clone(),
        bad_containers: Vec::new(),
        unset_containers: Vec::new(),
        bad_values: BTreeSet::new(),
    };
    if let Some(t) = pod.filter(|t| !valid_type(t)) {
        p.bad_values.insert(t);
    }
    for c in containers(spec) {
        match c
            .security_context
            .and_then(|sc| sc.seccomp_profile.as_ref())
        {
            Some(prof) if !valid_type(&prof.type_) => {
                p.bad_containers.push(c.name.to_owned());
                p.bad_values.insert(prof.type_.clone());
            }
            Some(_) => {}
            None => p.unset_containers.push(c.name.to_owned()),
        }
    }
    p
}

fn explicitly_bad(p: &Profiles) -> Option<Forbidden> {
    let mut setters = Vec::new();
    if p.pod.as_deref().is_some_and(|t| !valid_type(t)) {
        setters.push("pod".to_owned());
    }
    if !p.bad_containers.is_empty() {
        setters.push(named_containers(&p.bad_containers));
    }
    (!setters.is_empty()).then(|| {
        Forbidden::new(
            "seccompProfile",
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                setters.join(" and "),
                join_quote(&p.bad_values.iter().collect::<Vec<_>>())
            ),
        )
    })
}

pub fn baseline_1_19(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    explicitly_bad(&profiles(spec))
}

pub fn restricted_1_19(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let p = profiles(spec);
    if let Some(f) = explicitly_bad(&p) {
        return Some(f);
    }
    // A valid pod-level profile covers the containers that set none.
    let pod_set = p.pod.as_deref().is_some_and(valid_type);
    (!pod_set && !p.unset_containers.is_empty()).then(|| {
        Forbidden::new(
            "seccompProfile",
            format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                named_containers(&p.unset_containers)
            ),
        )
    })
}

pub fn restricted_1_25(meta: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    if is_windows(spec) {
        return None;
    }
    restricted_1_19(meta, spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_security::checks::test_pod;

    #[test]
    fn baseline_refuses_unconfined_only() {
        let (m, s) = test_pod(serde_json::json!({
            "securityContext": {"seccompProfile": {"type": "Unconfined"}},
            "containers": [{"name": "a", "securityContext": {"seccompProfile": {"type": "Unconfined"}}}, {"name": "b"}],
        }));
        assert_eq!(
            baseline_1_19(&m, &s),
            Some(Forbidden::new(
                "seccompProfile",
                "pod and container \"a\" must not set securityContext.seccompProfile.type to \"Unconfined\""
            ))
        );
        let (m, s) = test_pod(serde_json::json!({"containers": [{"name": "a"}]}));
        assert_eq!(baseline_1_19(&m, &s), None);
    }

    #[test]
    fn baseline_before_1_19_reads_the_annotations() {
        let (mut m, s) = test_pod(serde_json::json!({"containers": [{"name": "a"}]}));
        m.annotations = Some(
            [
                (POD_ANNOTATION.to_owned(), "unconfined".to_owned()),
                (
                    format!("{CONTAINER_ANNOTATION_PREFIX}a"),
                    "runtime/default".to_owned(),
                ),
            ]
            .into_iter()
            .collect(),
        );
        assert_eq!(
            baseline_1_0(&m, &s),
            Some(Forbidden::new(
                "seccompProfile",
                "forbidden annotation seccomp.security.alpha.kubernetes.io/pod=\"unconfined\""
            ))
        );
    }

    #[test]
    fn restricted_wants_a_profile_on_the_pod_or_every_container() {
        let (m, s) = test_pod(serde_json::json!({"containers": [
            {"name": "a"},
            {"name": "b", "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}},
        ]}));
        assert_eq!(
            restricted_1_25(&m, &s),
            Some(Forbidden::new(
                "seccompProfile",
                "pod or container \"a\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\""
            ))
        );
        let (m, s) = test_pod(serde_json::json!({
            "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}},
            "containers": [{"name": "a"}],
        }));
        assert_eq!(restricted_1_25(&m, &s), None);
    }
}
