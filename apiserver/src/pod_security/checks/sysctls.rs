//! baseline `sysctls`: only the namespaced, isolated "safe" sysctls; the
//! set grew in v1.27, v1.29 and v1.32.

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::pod_security::check::Forbidden;

const SAFE_1_0: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
];
const ADDED_1_27: &[&str] = &["net.ipv4.ip_local_reserved_ports"];
const ADDED_1_29: &[&str] = &[
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];
const ADDED_1_32: &[&str] = &["net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"];

pub fn sysctls_1_0(meta: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    sysctls(meta, spec, &[SAFE_1_0])
}

pub fn sysctls_1_27(meta: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    sysctls(meta, spec, &[SAFE_1_0, ADDED_1_27])
}

pub fn sysctls_1_29(meta: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    sysctls(meta, spec, &[SAFE_1_0, ADDED_1_27, ADDED_1_29])
}

pub fn sysctls_1_32(meta: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    sysctls(meta, spec, &[SAFE_1_0, ADDED_1_27, ADDED_1_29, ADDED_1_32])
}

fn sysctls(_: &ObjectMeta, spec: &PodSpec, safe: &[&[&str]]) -> Option<Forbidden> {
    let bad: Vec<&str> = spec
        .security_context
        .iter()
        .flat_map(|sc| sc.sysctls.iter().flatten())
        .map(|s| s.name.as_str())
        .filter(|name| !safe.iter().any(|set| set.contains(name)))
        .collect();
    (!bad.is_empty()).then(|| Forbidden::new("forbidden sysctls", bad.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_security::checks::test_pod;

    #[test]
    fn unsafe_sysctls_are_listed_by_version() {
        let (m, s) = test_pod(serde_json::json!({
            "securityContext": {"sysctls": [
                {"name": "kernel.msgmax", "value": "1"},
                {"name": "net.ipv4.tcp_rmem", "value": "4096 87380 6291456"},
                {"name": "net.ipv4.tcp_syncookies", "value": "1"},
            ]},
            "containers": [{"name": "a"}],
        }));
        assert_eq!(
            sysctls_1_32(&m, &s),
            Some(Forbidden::new("forbidden sysctls", "kernel.msgmax"))
        );
        assert_eq!(
            sysctls_1_29(&m, &s),
            Some(Forbidden::new(
                "forbidden sysctls",
                "kernel.msgmax, net.ipv4.tcp_rmem"
            ))
        );
    }
}
