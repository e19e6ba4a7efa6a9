//! `hostUsers: false` (a pod in its own user namespace) and the node's
//! namespaces do not mix: kube-apiserver's `validateHostUsers`, which the
//! kubelet applies to static pods too.

use k8s_openapi::api::core::v1::PodSpec;

/// The detail of every error here, as kube-apiserver words it.
pub const FORBIDDEN_DETAIL: &str = "when `hostUsers` is false";

/// The fields (under the pod spec's path, upstream's spelling) that
/// `hostUsers: false` forbids in this spec.
pub fn forbidden_host_namespaces(spec: &PodSpec) -> Vec<&'static str> {
    if spec.host_users != Some(false) {
        return Vec::new();
    }
    [
        (spec.host_network, "hostNetwork"),
        (spec.host_pid, "HostPID"),
        (spec.host_ipc, "HostIPC"),
    ]
    .into_iter()
    .filter(|(set, _)| set.unwrap_or(false))
    .map(|(_, field)| field)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_namespaces_are_forbidden_only_without_host_users() {
        let mut spec = PodSpec {
            host_network: Some(true),
            host_pid: Some(true),
            host_ipc: Some(false),
            ..Default::default()
        };
        assert!(forbidden_host_namespaces(&spec).is_empty());
        spec.host_users = Some(false);
        assert_eq!(forbidden_host_namespaces(&spec), ["hostNetwork", "HostPID"]);
        spec.host_network = None;
        spec.host_pid = None;
        assert!(forbidden_host_namespaces(&spec).is_empty());
    }
}
