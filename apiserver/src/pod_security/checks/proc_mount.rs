//! baseline `procMount`: the default /proc masks stay.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::pod_security::check::{Forbidden, containers, join_quote, named_containers};

pub fn proc_mount_1_0(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let mut bad = Vec::new();
    let mut types = BTreeSet::new();
    for c in containers(spec) {
        if let Some(t) = c
            .security_context
            .and_then(|sc| sc.proc_mount.as_deref())
            .filter(|t| *t != "Default")
        {
            bad.push(c.name.to_owned());
            types.insert(t.to_owned());
        }
    }
    (!bad.is_empty()).then(|| {
        Forbidden::new(
            "procMount",
            format!(
                "{} must not set securityContext.procMount to {}",
                named_containers(&bad),
                join_quote(&types.into_iter().collect::<Vec<_>>())
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_security::checks::test_pod;

    #[test]
    fn unmasked_proc_is_refused() {
        let (m, s) = test_pod(serde_json::json!({"containers": [
            {"name": "a", "securityContext": {"procMount": "Unmasked"}},
            {"name": "b", "securityContext": {"procMount": "Default"}},
        ]}));
        assert_eq!(
            proc_mount_1_0(&m, &s),
            Some(Forbidden::new(
                "procMount",
                "container \"a\" must not set securityContext.procMount to \"Unmasked\""
            ))
        );
    }
}
