//! baseline `hostPorts`: no container port bound on the node.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::pod_security::check::{Forbidden, containers, named_containers, pluralize};

pub fn host_ports_1_0(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let mut bad = Vec::new();
    // Sorted as strings, as upstream lists them.
    let mut ports = BTreeSet::new();
    for c in containers(spec) {
        let used: Vec<String> = c
            .ports
            .iter()
            .filter_map(|p| p.host_port.filter(|&h| h != 0))
            .map(|h| h.to_string())
            .collect();
        if !used.is_empty() {
            bad.push(c.name.to_owned());
            ports.extend(used);
        }
    }
    (!bad.is_empty()).then(|| {
        Forbidden::new(
            "hostPort",
            format!(
                "{} {} {} {}",
                named_containers(&bad),
                pluralize("uses", "use", bad.len()),
                pluralize("hostPort", "hostPorts", ports.len()),
                ports.into_iter().collect::<Vec<_>>().join(", ")
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_security::checks::test_pod;

    #[test]
    fn host_ports_are_listed() {
        let (m, s) = test_pod(serde_json::json!({"containers": [
            {"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81, "hostPort": 10}]},
            {"name": "b", "ports": [{"containerPort": 80}]},
        ]}));
        assert_eq!(
            host_ports_1_0(&m, &s),
            Some(Forbidden::new(
                "hostPort",
                "container \"a\" uses hostPorts 10, 8080"
            ))
        );
    }
}
