//! baseline `hostNamespaces`: no host network, PID or IPC namespace.

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::pod_security::check::Forbidden;

pub fn host_namespaces_1_0(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let shared: Vec<&str> = [
        (spec.host_network, "hostNetwork=true"),
        (spec.host_pid, "hostPID=true"),
        (spec.host_ipc, "hostIPC=true"),
    ]
    .into_iter()
    .filter(|(on, _)| *on == Some(true))
    .map(|(_, what)| what)
    .collect();
    (!shared.is_empty()).then(|| Forbidden::new("host namespaces", shared.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_security::checks::test_pod;

    #[test]
    fn host_namespaces_are_listed() {
        let (m, s) = test_pod(serde_json::json!({
            "hostNetwork": true, "hostIPC": true, "hostPID": false,
            "containers": [{"name": "a"}],
        }));
        assert_eq!(
            host_namespaces_1_0(&m, &s),
            Some(Forbidden::new(
                "host namespaces",
                "hostNetwork=true, hostIPC=true"
            ))
        );
        let (m, s) =
            test_pod(serde_json::json!({"hostNetwork": false, "containers": [{"name": "a"}]}));
        assert_eq!(host_namespaces_1_0(&m, &s), None);
    }
}
