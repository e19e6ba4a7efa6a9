//! baseline `privileged`: no privileged containers.

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::pod_security::check::{Forbidden, containers_where, named_containers};

pub fn privileged_1_0(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let bad = containers_where(spec, |sc| sc.privileged == Some(true));
    (!bad.is_empty()).then(|| {
        Forbidden::new(
            "privileged",
            format!(
                "{} must not set securityContext.privileged=true",
                named_containers(&bad)
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_security::checks::test_pod;

    #[test]
    fn privileged_containers_are_named() {
        let (m, s) = test_pod(serde_json::json!({
            "initContainers": [{"name": "init", "securityContext": {"privileged": true}}],
            "containers": [{"name": "a", "securityContext": {"privileged": true}},
                           {"name": "b", "securityContext": {"privileged": false}}],
        }));
        assert_eq!(
            privileged_1_0(&m, &s),
            Some(Forbidden::new(
                "privileged",
                "containers \"init\", \"a\" must not set securityContext.privileged=true"
            ))
        );
    }
}
