//! What the runtime is given for a container, resolved from the API objects
//! it names, as the kubelet's `generateContainerConfig` does before a CRI
//! `CreateContainer`: the runtime sees the result, never the objects.
//! Its environment (env, envFrom, downward API, service variables) and the
//! pod's managed `/etc/hosts`.

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::context::AgentContext;
use crate::runtime::downward::{NodeAllocatable, PodPlacement};
use crate::runtime::env::{EnvInputs, make_environment_variables};

/// The container's environment; a missing ConfigMap or Secret (a
/// `CreateContainerConfigError`) is the error. Warnings (a key that is no
/// valid variable name…) become Warning events of the container. Blocking
/// (it reads the node's allocatable).
pub fn container_environment(
    ctx: &AgentContext,
    pod: &Pod,
    container: &Container,
    pod_ip: Option<&str>,
) -> Result<Vec<(String, String)>, String> {
    let placement = PodPlacement {
        pod_ips: pod_ip.map(String::from).into_iter().collect(),
        host_ips: ctx.host_ip.clone().into_iter().collect(),
    };
    let node = NodeAllocatable::of_host(&ctx.root_dir);
    let env = make_environment_variables(
        &EnvInputs {
            pod,
            placement: &placement,
            node: &node,
            is_static: crate::config::is_static_pod(pod),
            objects: ctx.objects(),
        },
        container,
    )
    .map_err(|e| e.to_string())?;
    let key = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    for w in &env.warnings {
        ctx.events
            .warning(&key, Some(&container.name), w.reason, w.message.clone());
    }
    Ok(env.vars)
}

/// The pod's `/etc/hosts`, written by the kubelet under the pod's dir
/// (`etc-hosts`) with the pod's current IP, and mounted into each container
/// (the kubelet's `makeHostsMount`). A host-network pod gets the node's
/// file plus its `hostAliases`. Blocking.
pub fn etc_hosts_mount(
    ctx: &AgentContext,
    pod: &Pod,
    pod_dir: &std::path::Path,
    pod_ip: Option<&str>,
) -> Result<crate::runtime::cri::Mount, String> {
    use crate::network::dns;
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let hosts = if host_network {
        let node_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        dns::host_network_hosts_file(&node_hosts, pod)
    } else {
        let names = dns::pod_hostname(pod, &ctx.dns.cluster_domain).map_err(|e| e.to_string())?;
        let ips: Vec<String> = pod_ip.map(str::to_owned).into_iter().collect();
        dns::pod_hosts_file(pod, &names, &ips)
    };
    let path = pod_dir.join("etc-hosts");
    std::fs::write(&path, hosts).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(crate::runtime::cri::Mount {
        container_path: "/etc/hosts".into(),
        host_path: path,
        readonly: false,
        recursive_read_only: false,
        selinux_relabel: false,
        propagation: Default::default(),
    })
}
