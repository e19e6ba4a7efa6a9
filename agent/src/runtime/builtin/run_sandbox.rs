//! `RunPodSandbox` of the built-in runtime: the pod cgroup (`cgroup_parent`,
//! with the pod's resources), the sandbox's cgroup and process (the pod's
//! namespaces), its `hostname` and `resolv.conf`, and its network (CNI ADD).

use crate::cgroups::{CgroupLimits, CgroupPath};
use crate::context::AgentContext;
use crate::network::dns::ResolvConf;
use crate::runtime::cri::NamespaceMode;
use crate::runtime::sandbox::{self, SandboxState};
use crate::runtime::service::SandboxRequest;
use crate::runtime::userns::UserNamespace;

/// Makes a pod's sandbox from its config. Blocking.
pub(crate) fn run_pod_sandbox(
    ctx: &AgentContext,
    req: &SandboxRequest,
) -> Result<(SandboxState, Option<String>), String> {
    let SandboxRequest {
        config,
        pod_dir: dir,
        id,
    } = *req;
    let linux = &config.linux;
    let namespaces = &linux.security_context.namespace_options;
    let host_network = namespaces.network == NamespaceMode::Node;
    let share_pid = namespaces.pid == NamespaceMode::Pod;
    let pod_cgroup = pod_cgroup(config)?;
    let limits = linux
        .resources
        .as_ref()
        .map(|r| r.to_limits())
        .unwrap_or_default();
    ctx.cgroups
        .create(&pod_cgroup, &limits)
        .map_err(|e| format!("creating the pod cgroup: {}", crate::error_chain(&e)))?;
    let sandbox_cgroup = ctx.cgroups.container_path(&pod_cgroup, id);
    ctx.cgroups
        .create(&sandbox_cgroup, &CgroupLimits::default())
        .map_err(|e| format!("creating the sandbox cgroup: {}", crate::error_chain(&e)))?;
    let user_namespace = namespaces.userns_options.as_ref().map(|u| UserNamespace {
        uid_mappings: u.uids.clone(),
        gid_mappings: u.gids.clone(),
    });
    // A host-network pod shares the node's host name.
    let hostname = if host_network {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        config.hostname.clone()
    };
    let dns = config.dns_config.clone().unwrap_or_default();
    let resolv = ResolvConf {
        nameservers: dns.servers,
        searches: dns.searches,
        options: dns.options,
    };
    sandbox::write_pod_etc(
        &dir.join("etc"),
        &[
            ("hostname", format!("{hostname}\n")),
            ("resolv.conf", resolv.render()),
        ],
    )
    .map_err(|e| crate::error_chain(&e))?;
    let state = sandbox::start(
        &ctx.agent_exe,
        id,
        &config.hostname,
        host_network,
        share_pid,
        &linux.sysctls,
        user_namespace.as_ref(),
        &ctx.cgroups.procs_files(&sandbox_cgroup),
    )
    .map_err(|e| crate::error_chain(&e))?;
    if host_network {
        return Ok((state, None));
    }
    // CNI ADD into the sandbox's netns.
    let pod_ref = crate::network::PodRef {
        namespace: &config.metadata.namespace,
        name: &config.metadata.name,
        uid: &config.metadata.uid,
    };
    match ctx.network.setup_pod(&pod_ref, &state) {
        Ok(pod_ip) => Ok((state, pod_ip)),
        Err(e) => {
            sandbox::stop(&state);
            Err(format!(
                "setting up the pod network: {}",
                crate::error_chain(&e)
            ))
        }
    }
}

/// The pod cgroup the config names.
pub(crate) fn pod_cgroup(
    config: &crate::runtime::cri::PodSandboxConfig,
) -> Result<CgroupPath, String> {
    CgroupPath::new(config.linux.cgroup_parent.as_str())
        .map_err(|e| format!("cgroup_parent {:?}: {e}", config.linux.cgroup_parent))
}
