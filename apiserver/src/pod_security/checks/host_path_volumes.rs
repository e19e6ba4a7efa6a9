//! baseline `hostPathVolumes`: no hostPath volumes.

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::pod_security::check::{Forbidden, join_quote, pluralize};

pub fn host_path_volumes_1_0(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let bad: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.host_path.is_some())
        .map(|v| v.name.as_str())
        .collect();
    (!bad.is_empty()).then(|| {
        Forbidden::new(
            "hostPath volumes",
            format!(
                "{} {}",
                pluralize("volume", "volumes", bad.len()),
                join_quote(&bad)
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_security::checks::test_pod;

    #[test]
    fn host_path_volumes_are_named() {
        let (m, s) = test_pod(serde_json::json!({
            "containers": [{"name": "a"}],
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}, {"name": "tmp", "emptyDir": {}}],
        }));
        assert_eq!(
            host_path_volumes_1_0(&m, &s),
            Some(Forbidden::new("hostPath volumes", "volume \"root\""))
        );
    }
}
