//! restricted `runAsNonRoot`: the pod or every container sets
//! `runAsNonRoot: true`, and none sets it false.

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::pod_security::check::{Forbidden, containers, named_containers};

pub fn run_as_non_root_1_0(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let pod = spec
        .security_context
        .as_ref()
        .and_then(|sc| sc.run_as_non_root);
    let mut setters = Vec::new();
    if pod == Some(false) {
        setters.push("pod".to_owned());
    }
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for c in containers(spec) {
        match c.security_context.and_then(|sc| sc.run_as_non_root) {
            Some(false) => explicit.push(c.name),
            Some(true) => {}
            None if pod != Some(true) => implicit.push(c.name),
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(named_containers(&explicit));
    }
    if !setters.is_empty() {
        return Some(Forbidden::new(
            "runAsNonRoot != true",
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters.join(" and ")
            ),
        ));
    }
    (!implicit.is_empty()).then(|| {
        Forbidden::new(
            "runAsNonRoot != true",
            format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                named_containers(&implicit)
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_security::checks::test_pod;

    #[test]
    fn run_as_non_root_on_the_pod_or_each_container() {
        let (m, s) = test_pod(serde_json::json!({"containers": [
            {"name": "a"}, {"name": "b", "securityContext": {"runAsNonRoot": true}},
        ]}));
        assert_eq!(
            run_as_non_root_1_0(&m, &s),
            Some(Forbidden::new(
                "runAsNonRoot != true",
                "pod or container \"a\" must set securityContext.runAsNonRoot=true"
            ))
        );
        let (m, s) = test_pod(serde_json::json!({
            "securityContext": {"runAsNonRoot": true},
            "containers": [{"name": "a"}, {"name": "b", "securityContext": {"runAsNonRoot": false}}],
        }));
        assert_eq!(
            run_as_non_root_1_0(&m, &s),
            Some(Forbidden::new(
                "runAsNonRoot != true",
                "container \"b\" must not set securityContext.runAsNonRoot=false"
            ))
        );
    }
}
