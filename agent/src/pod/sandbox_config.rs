//! What `RunPodSandbox` is given, resolved from the pod as the kubelet's
//! `generatePodSandboxConfig` does: names, DNS, namespaces, sysctls, the
//! pod cgroup and its resources. The runtime sees the result, never the
//! pod. [`pod_sandbox_config`] is pure; [`sandbox_config`] adds what the
//! node decides (the pod's user namespace, its cgroup's limits).

use k8s_openapi::api::core::v1::Pod;

use crate::cgroups::{CgroupLimits, CgroupPath};
use crate::context::AgentContext;
use crate::network::dns::{self, DnsWarning, NodeDns};
use crate::runtime::cri::{
    DnsConfig, LinuxContainerResources, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PortMapping, Protocol,
    UserNamespace,
};

/// What the node adds to a pod's sandbox config.
pub struct SandboxNode<'a> {
    pub dns: &'a NodeDns,
    /// The pod cgroup, as the runtime names it.
    pub cgroup_parent: String,
    pub log_directory: String,
    /// The pod's user namespace (`hostUsers: false`), allocated by the node.
    pub user_namespace: Option<&'a crate::runtime::userns::UserNamespace>,
}

/// The pod's sandbox config, and DNS warnings worth an Event. A host name
/// the pod cannot have is the error.
pub fn pod_sandbox_config(
    pod: &Pod,
    node: &SandboxNode,
) -> Result<(PodSandboxConfig, Vec<DnsWarning>), String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let names = dns::pod_hostname(pod, &node.dns.cluster_domain).map_err(|e| e.to_string())?;
    let (resolv, warnings) = dns::pod_resolv_conf(pod, node.dns);
    let pod_sc = spec.security_context.clone().unwrap_or_default();
    let config = PodSandboxConfig {
        metadata: PodSandboxMetadata {
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            attempt: 0,
        },
        hostname: names.hostname,
        log_directory: node.log_directory.clone(),
        dns_config: Some(DnsConfig {
            servers: resolv.nameservers,
            searches: resolv.searches,
            options: resolv.options,
        }),
        port_mappings: port_mappings(pod),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        annotations: pod.metadata.annotations.clone().unwrap_or_default(),
        linux: LinuxPodSandboxConfig {
            cgroup_parent: node.cgroup_parent.clone(),
            security_context: LinuxSandboxSecurityContext {
                namespace_options: namespace_options(pod, node.user_namespace),
                run_as_user: pod_sc.run_as_user,
                run_as_group: pod_sc.run_as_group,
                readonly_rootfs: false,
                supplemental_groups: pod_sc.supplemental_groups.clone().unwrap_or_default(),
                privileged: false,
                seccomp: None,
            },
            sysctls: crate::pod::sysctls::pod_sysctls(pod),
            overhead: None,
            resources: None,
        },
    };
    Ok((config, warnings))
}

/// The pod's sandbox config on this node: its user namespace allocated
/// (`hostUsers: false`), its cgroup's limits (with the node's cgroup
/// settings and the pod's `kubelab.io/cpu-burst`), DNS warnings and a bad
/// cpu burst reported as Warning events. Blocking (it may write the pod's
/// user namespace file).
pub fn sandbox_config(
    ctx: &AgentContext,
    pod: &Pod,
    pod_cgroup: &CgroupPath,
    log_directory: &std::path::Path,
    key: &str,
) -> Result<PodSandboxConfig, String> {
    let spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
    let mut limits =
        CgroupLimits::for_pod(spec, ctx.pod_pids_limit).map_err(|e| crate::error_chain(&e))?;
    ctx.cgroup_config
        .apply_to_pod(&mut limits, spec, pod_cpu_burst(ctx, pod, key));
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let user_namespace = pod_user_namespace(ctx, pod, uid)?;
    let (mut config, warnings) = pod_sandbox_config(
        pod,
        &SandboxNode {
            dns: &ctx.dns,
            cgroup_parent: pod_cgroup.as_str().to_string(),
            log_directory: log_directory.to_string_lossy().into_owned(),
            user_namespace: user_namespace.as_ref(),
        },
    )?;
    for w in warnings {
        ctx.events.warning(key, None, w.reason, w.message);
    }
    config.linux.resources = Some(LinuxContainerResources::from_limits(&limits, 0));
    Ok(config)
}

/// The config a container of the pod is created with (CRI's
/// `CreateContainerRequest.sandbox_config`): the sandbox's, as it was made,
/// without reporting anything again.
pub fn sandbox_config_of(
    ctx: &AgentContext,
    pod: &Pod,
    pod_cgroup: &CgroupPath,
    log_directory: &std::path::Path,
    sandbox: &crate::runtime::sandbox::SandboxState,
) -> Result<PodSandboxConfig, String> {
    let (config, _) = pod_sandbox_config(
        pod,
        &SandboxNode {
            dns: &ctx.dns,
            cgroup_parent: pod_cgroup.as_str().to_string(),
            log_directory: log_directory.to_string_lossy().into_owned(),
            user_namespace: sandbox.user_namespace.as_ref(),
        },
    )?;
    Ok(config)
}

/// The pod's user namespace range with `hostUsers: false` (`None`: the
/// node's users). The host namespaces are refused with it, in kube-apiserver's
/// words, as a pod that skipped validation would otherwise share them.
fn pod_user_namespace(
    ctx: &AgentContext,
    pod: &Pod,
    uid: &str,
) -> Result<Option<crate::runtime::userns::UserNamespace>, String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(None);
    };
    if spec.host_users != Some(false) {
        return Ok(None);
    }
    if let Some(e) = crate::config::manifest::host_users_errors(spec)
        .into_iter()
        .next()
    {
        return Err(e.to_string());
    }
    ctx.user_namespaces
        .get_or_create(uid)
        .map(Some)
        .map_err(|e| format!("user namespace: {e}"))
}

/// The pod's `kubelab.io/cpu-burst` in millicores; a bad value is a Warning
/// event and no burst.
fn pod_cpu_burst(ctx: &AgentContext, pod: &Pod, key: &str) -> Option<i64> {
    crate::cgroups::node_config::cpu_burst_millis(pod.metadata.annotations.as_ref()).unwrap_or_else(
        |e| {
            ctx.events
                .warning(key, None, "InvalidCPUBurst", e.to_string());
            None
        },
    )
}

/// Whose network, PID and IPC namespaces the pod's containers use, and
/// its user namespace.
pub fn namespace_options(
    pod: &Pod,
    user_namespace: Option<&crate::runtime::userns::UserNamespace>,
) -> NamespaceOption {
    let spec = pod.spec.clone().unwrap_or_default();
    let mode = |node_wide: Option<bool>, otherwise: NamespaceMode| {
        if node_wide.unwrap_or(false) {
            NamespaceMode::Node
        } else {
            otherwise
        }
    };
    let pid_mode = if spec.share_process_namespace.unwrap_or(false) {
        NamespaceMode::Pod
    } else {
        NamespaceMode::Container
    };
    NamespaceOption {
        network: mode(spec.host_network, NamespaceMode::Pod),
        pid: mode(spec.host_pid, pid_mode),
        ipc: mode(spec.host_ipc, NamespaceMode::Pod),
        userns_options: user_namespace.map(|ns| UserNamespace {
            mode: NamespaceMode::Pod,
            uids: ns.uid_mappings.clone(),
            gids: ns.gid_mappings.clone(),
        }),
    }
}

/// Every `hostPort` of the pod's containers (CRI's `port_mappings`).
fn port_mappings(pod: &Pod) -> Vec<PortMapping> {
    let containers = pod.spec.iter().flat_map(|s| s.containers.iter());
    containers
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.is_some_and(|h| h != 0))
        .map(|p| PortMapping {
            protocol: match p.protocol.as_deref() {
                Some("UDP") => Protocol::Udp,
                Some("SCTP") => Protocol::Sctp,
                _ => Protocol::Tcp,
            },
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_dns() -> NodeDns {
        NodeDns {
            cluster_dns: vec!["10.96.0.10".parse().unwrap()],
            cluster_domain: "cluster.local".into(),
            host: Default::default(),
        }
    }

    #[test]
    fn a_pod_becomes_a_sandbox_config() {
        let pod: Pod = serde_yaml::from_str(
            "
metadata:
  name: web-0
  namespace: shop
  uid: u1
  labels: {app: web}
spec:
  hostname: web-0
  subdomain: web
  shareProcessNamespace: true
  securityContext:
    runAsUser: 1000
    supplementalGroups: [5, 6]
    sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: '80'}]
  containers:
  - name: app
    ports: [{containerPort: 80, hostPort: 8080}, {containerPort: 53, protocol: UDP}]
",
        )
        .unwrap();
        let ns = crate::runtime::userns::UserNamespace {
            uid_mappings: vec![crate::runtime::userns::IdMapping {
                host_id: 65536,
                container_id: 0,
                length: 65536,
            }],
            gid_mappings: vec![],
        };
        let dns = node_dns();
        let (config, warnings) = pod_sandbox_config(
            &pod,
            &SandboxNode {
                dns: &dns,
                cgroup_parent: "/kubepods/besteffort/podu1".into(),
                log_directory: "/var/log/pods/shop_web-0_u1".into(),
                user_namespace: Some(&ns),
            },
        )
        .unwrap();
        assert!(warnings.is_empty());
        assert_eq!(
            config.metadata,
            PodSandboxMetadata {
                name: "web-0".into(),
                uid: "u1".into(),
                namespace: "shop".into(),
                attempt: 0
            }
        );
        assert_eq!(config.hostname, "web-0");
        let dns = config.dns_config.unwrap();
        assert_eq!(dns.servers, ["10.96.0.10"]);
        assert_eq!(dns.searches[0], "shop.svc.cluster.local");
        assert_eq!(
            config.port_mappings,
            [PortMapping {
                protocol: Protocol::Tcp,
                container_port: 80,
                host_port: 8080,
                host_ip: String::new()
            }]
        );
        assert_eq!(config.labels["app"], "web");
        assert_eq!(config.linux.cgroup_parent, "/kubepods/besteffort/podu1");
        let sc = &config.linux.security_context;
        assert_eq!(
            (
                sc.namespace_options.network,
                sc.namespace_options.pid,
                sc.namespace_options.ipc
            ),
            (NamespaceMode::Pod, NamespaceMode::Pod, NamespaceMode::Pod)
        );
        assert_eq!(
            sc.namespace_options.userns_options.as_ref().unwrap().uids[0].host_id,
            65536
        );
        assert_eq!(sc.run_as_user, Some(1000));
        assert_eq!(sc.supplemental_groups, [5, 6]);
        assert_eq!(
            config.linux.sysctls,
            [(
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "80".to_string()
            )]
        );
    }

    #[test]
    fn host_network_uses_the_node_namespace() {
        let pod: Pod = serde_yaml::from_str(
            "
metadata: {name: agent, namespace: kube-system, uid: u2}
spec:
  hostNetwork: true
  containers: [{name: a}]
",
        )
        .unwrap();
        let dns = node_dns();
        let (config, _) = pod_sandbox_config(
            &pod,
            &SandboxNode {
                dns: &dns,
                cgroup_parent: String::new(),
                log_directory: String::new(),
                user_namespace: None,
            },
        )
        .unwrap();
        let ns = &config.linux.security_context.namespace_options;
        assert_eq!(ns.network, NamespaceMode::Node);
        assert_eq!(ns.pid, NamespaceMode::Container);
        assert!(ns.userns_options.is_none());
    }
}
