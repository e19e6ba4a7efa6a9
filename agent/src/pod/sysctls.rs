//! Pod sysctls (`spec.securityContext.sysctls`), the kubelet's way: the safe
//! set is always allowed, others only when `--allowed-unsafe-sysctls` names
//! them; a pod asking for anything else is rejected at admission
//! (`SysctlForbidden`). Allowed ones are written by the pod's sandbox, in the
//! namespaces the pod's containers share. Classification is pure.

use k8s_openapi::api::core::v1::Pod;

/// Reason of a pod rejected for its sysctls.
pub const FORBIDDEN_REASON: &str = "SysctlForbidden";

/// The kubelet's safe sysctls: namespaced, and isolated from other pods.
pub const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// Which namespace a sysctl lives in (the kubelet's `GetNamespace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysctlNamespace {
    Ipc,
    Net,
    /// Node-wide: never settable from a pod.
    None,
}

/// `kernel/shm_rmid_forced` and `kernel.shm_rmid_forced` are one name.
pub fn normalize(name: &str) -> String {
    if name.contains('/') && !name.contains('.') {
        name.replace('/', ".")
    } else if let Some(first) = name.find(['.', '/'])
        && name.as_bytes()[first] == b'/'
    {
        // a/b.c/d: '/' separates, '.' belongs to a part; swap them.
        name.chars()
            .map(|c| match c {
                '/' => '.',
                '.' => '/',
                c => c,
            })
            .collect()
    } else {
        name.to_string()
    }
}

pub fn namespace_of(name: &str) -> SysctlNamespace {
    let ipc_exact = ["kernel.sem"];
    let ipc_prefixes = ["kernel.shm", "kernel.msg", "fs.mqueue."];
    if ipc_exact.contains(&name) || ipc_prefixes.iter().any(|p| name.starts_with(p)) {
        SysctlNamespace::Ipc
    } else if name.starts_with("net.") {
        SysctlNamespace::Net
    } else {
        SysctlNamespace::None
    }
}

fn allowed(name: &str, allowed_unsafe: &[String]) -> bool {
    SAFE_SYSCTLS.contains(&name)
        || allowed_unsafe
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == pattern,
            })
}

/// The pod's sysctls as (name, value), normalized.
pub fn pod_sysctls(pod: &Pod) -> Vec<(String, String)> {
    pod.spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.sysctls.as_ref())
        .into_iter()
        .flatten()
        .map(|s| (normalize(&s.name), s.value.clone()))
        .collect()
}

/// The kubelet's sysctl admission: `Err` is the rejection message.
pub fn admit(pod: &Pod, allowed_unsafe: &[String]) -> Result<(), String> {
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let host_ipc = pod.spec.as_ref().and_then(|s| s.host_ipc).unwrap_or(false);
    for (name, _) in pod_sysctls(pod) {
        let problem = match namespace_of(&name) {
            SysctlNamespace::Net if host_network => Some("not allowed with host net enabled"),
            SysctlNamespace::Ipc if host_ipc => Some("not allowed with host ipc enabled"),
            SysctlNamespace::None => Some("not allowlisted"),
            _ if !allowed(&name, allowed_unsafe) => Some("not allowlisted"),
            _ => None,
        };
        if let Some(problem) = problem {
            return Err(format!("forbidden sysctl: {name:?} {problem}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSecurityContext, PodSpec, Sysctl};

    fn pod(names: &[&str], host_network: bool) -> Pod {
        Pod {
            spec: Some(PodSpec {
                host_network: Some(host_network),
                security_context: Some(PodSecurityContext {
                    sysctls: Some(
                        names
                            .iter()
                            .map(|n| Sysctl {
                                name: n.to_string(),
                                value: "1".into(),
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn safe_sysctls_pass_unsafe_ones_need_the_flag() {
        admit(
            &pod(
                &["kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range"],
                false,
            ),
            &[],
        )
        .unwrap();
        assert_eq!(
            admit(&pod(&["kernel.msgmax"], false), &[]).unwrap_err(),
            "forbidden sysctl: \"kernel.msgmax\" not allowlisted"
        );
        admit(&pod(&["kernel.msgmax"], false), &["kernel.msg*".into()]).unwrap();
        admit(
            &pod(&["net.core.somaxconn"], false),
            &["net.core.somaxconn".into()],
        )
        .unwrap();
        assert_eq!(
            admit(&pod(&["vm.overcommit_memory"], false), &["vm.*".into()]).unwrap_err(),
            "forbidden sysctl: \"vm.overcommit_memory\" not allowlisted",
            "node-wide sysctls never"
        );
        assert_eq!(
            admit(&pod(&["net.ipv4.tcp_syncookies"], true), &[]).unwrap_err(),
            "forbidden sysctl: \"net.ipv4.tcp_syncookies\" not allowed with host net enabled"
        );
    }

    #[test]
    fn names_are_classified_and_normalized() {
        assert_eq!(namespace_of("kernel.sem"), SysctlNamespace::Ipc);
        assert_eq!(namespace_of("fs.mqueue.msg_max"), SysctlNamespace::Ipc);
        assert_eq!(namespace_of("net.core.somaxconn"), SysctlNamespace::Net);
        assert_eq!(namespace_of("kernel.panic"), SysctlNamespace::None);
        assert_eq!(
            normalize("kernel/shm_rmid_forced"),
            "kernel.shm_rmid_forced"
        );
        assert_eq!(
            normalize("net/ipv4/conf/eth0.100/forwarding"),
            "net.ipv4.conf.eth0/100.forwarding"
        );
    }
}
