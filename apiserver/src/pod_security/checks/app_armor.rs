//! baseline `appArmorProfile`: AppArmor may be RuntimeDefault or
//! Localhost, never Unconfined, in the fields or the deprecated
//! `container.apparmor.security.beta.kubernetes.io/*` annotations.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::pod_security::check::{Forbidden, containers, join_quote, named_containers, pluralize};

const ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

fn allowed_type(t: &str) -> bool {
    matches!(t, "RuntimeDefault" | "Localhost")
}

fn allowed_annotation(v: &str) -> bool {
    v.is_empty() || v == "runtime/default" || v.starts_with("localhost/")
}

pub fn app_armor_1_0(meta: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let mut setters = Vec::new();
    let mut values = BTreeSet::new();
    if let Some(p) = spec
        .security_context
        .as_ref()
        .and_then(|sc| sc.app_armor_profile.as_ref())
        .filter(|p| !allowed_type(&p.type_))
    {
        setters.push("pod".to_owned());
        values.insert(p.type_.clone());
    }
    let mut bad = Vec::new();
    for c in containers(spec) {
        if let Some(p) = c
            .security_context
            .and_then(|sc| sc.app_armor_profile.as_ref())
            .filter(|p| !allowed_type(&p.type_))
        {
            bad.push(c.name.to_owned());
            values.insert(p.type_.clone());
        }
    }
    if !bad.is_empty() {
        setters.push(named_containers(&bad));
    }
    let mut values: Vec<String> = values.into_iter().collect();
    let annotations: BTreeSet<String> = meta
        .annotations
        .iter()
        .flatten()
        .filter(|(k, v)| k.starts_with(ANNOTATION_PREFIX) && !allowed_annotation(v))
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    if !annotations.is_empty() {
        setters.push(pluralize("annotation", "annotations", annotations.len()).to_owned());
        values.extend(annotations);
    }
    (!setters.is_empty()).then(|| {
        Forbidden::new(
            pluralize(
                "forbidden AppArmor profile",
                "forbidden AppArmor profiles",
                values.len(),
            ),
            format!(
                "{} must not set AppArmor profile type to {}",
                setters.join(" and "),
                join_quote(&values)
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_security::checks::test_pod;

    #[test]
    fn unconfined_app_armor_is_refused() {
        let (m, s) = test_pod(serde_json::json!({
            "securityContext": {"appArmorProfile": {"type": "Unconfined"}},
            "containers": [{"name": "a", "securityContext": {"appArmorProfile": {"type": "Localhost", "localhostProfile": "x"}}}],
        }));
        assert_eq!(
            app_armor_1_0(&m, &s),
            Some(Forbidden::new(
                "forbidden AppArmor profile",
                "pod must not set AppArmor profile type to \"Unconfined\""
            ))
        );
        let (mut m, s) = test_pod(serde_json::json!({"containers": [{"name": "a"}]}));
        m.annotations = Some(
            [(format!("{ANNOTATION_PREFIX}a"), "unconfined".to_owned())]
                .into_iter()
                .collect(),
        );
        assert_eq!(
            app_armor_1_0(&m, &s),
            Some(Forbidden::new(
                "forbidden AppArmor profile",
                "annotation must not set AppArmor profile type to \"container.apparmor.security.beta.kubernetes.io/a=\"unconfined\"\""
            ))
        );
    }
}
