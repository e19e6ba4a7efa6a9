//! restricted `allowPrivilegeEscalation` (v1.8+, not for Windows pods from
//! v1.25): every container sets `allowPrivilegeEscalation: false`.

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::pod_security::check::{Forbidden, containers, is_windows, named_containers};

pub fn allow_privilege_escalation_1_8(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let bad: Vec<&str> = containers(spec)
        .filter(|c| {
            c.security_context
                .and_then(|sc| sc.allow_privilege_escalation)
                .unwrap_or(true)
        })
        .map(|c| c.name)
        .collect();
    (!bad.is_empty()).then(|| {
        Forbidden::new(
            "allowPrivilegeEscalation != false",
            format!(
                "{} must set securityContext.allowPrivilegeEscalation=false",
                named_containers(&bad)
            ),
        )
    })
}

pub fn allow_privilege_escalation_1_25(meta: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    if is_windows(spec) {
        return None;
    }
    allow_privilege_escalation_1_8(meta, spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_security::checks::test_pod;

    #[test]
    fn containers_must_set_allow_privilege_escalation_false() {
        let (m, s) = test_pod(serde_json::json!({"containers": [
            {"name": "c"},
            {"name": "d", "securityContext": {"allowPrivilegeEscalation": false}},
        ]}));
        assert_eq!(
            allow_privilege_escalation_1_25(&m, &s),
            Some(Forbidden::new(
                "allowPrivilegeEscalation != false",
                "container \"c\" must set securityContext.allowPrivilegeEscalation=false"
            ))
        );
    }
}
