//! restricted `runAsUser` (v1.23+): neither the pod nor a container sets
//! `runAsUser: 0`.

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::pod_security::check::{Forbidden, containers_where, named_containers};

pub fn run_as_user_1_23(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let mut setters = Vec::new();
    if spec.security_context.as_ref().and_then(|sc| sc.run_as_user) == Some(0) {
        setters.push("pod".to_owned());
    }
    let bad = containers_where(spec, |sc| sc.run_as_user == Some(0));
    if !bad.is_empty() {
        setters.push(named_containers(&bad));
    }
    (!setters.is_empty()).then(|| {
        Forbidden::new(
            "runAsUser=0",
            format!("{} must not set runAsUser=0", setters.join(" and ")),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_security::checks::test_pod;

    #[test]
    fn root_user_is_refused() {
        let (m, s) = test_pod(serde_json::json!({
            "securityContext": {"runAsUser": 0},
            "containers": [{"name": "a", "securityContext": {"runAsUser": 0}}, {"name": "b", "securityContext": {"runAsUser": 1000}}],
        }));
        assert_eq!(
            run_as_user_1_23(&m, &s),
            Some(Forbidden::new(
                "runAsUser=0",
                "pod and container \"a\" must not set runAsUser=0"
            ))
        );
    }
}
