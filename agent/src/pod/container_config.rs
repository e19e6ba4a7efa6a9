//! What the runtime is given for a container, resolved from the API objects
//! it names, as the kubelet's `generateContainerConfig` does before a CRI
//! `CreateContainer`: the runtime sees the result, never the objects.
//! Today: its environment (env, envFrom, downward API, service variables).

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
