//! `RunPodSandbox` of the built-in runtime: the pod cgroup, the sandbox's
//! cgroup and process (the pod's namespaces), its /etc files and its
//! network (CNI ADD).

use k8s_openapi::api::core::v1::Pod;

use crate::cgroups::CgroupLimits;
use crate::context::AgentContext;
use crate::network::dns;
use crate::runtime::sandbox::{self, SandboxState};
use crate::runtime::service::SandboxRequest;

fn spec_of(pod: &Pod) -> &k8s_openapi::api::core::v1::PodSpec {
    pod.spec.as_ref().expect("validated pods have a spec")
}

/// The pod's user namespace range with `hostUsers: false` (`None`: the
/// node's users). The host namespaces are refused with it, in kube-apiserver's
/// words, as a pod that skipped validation would otherwise share them.
fn pod_user_namespace(
    ctx: &AgentContext,
    pod: &Pod,
    uid: &str,
) -> Result<Option<crate::runtime::userns::UserNamespace>, String> {
    let spec = spec_of(pod);
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

/// Makes a pod's sandbox: the pod cgroup, the sandbox's cgroup and process,
/// its /etc files and its network (CNI ADD). Blocking.
pub(crate) fn run_pod_sandbox(
    ctx: &AgentContext,
    req: &SandboxRequest,
) -> Result<(SandboxState, Option<String>), String> {
    let SandboxRequest {
        pod,
        pod_cgroup,
        pod_dir: dir,
        id,
        uid,
        key,
    } = *req;
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let host_network = spec_of(pod).host_network.unwrap_or(false);
    let share_pid = spec_of(pod).share_process_namespace.unwrap_or(false);
    let mut limits = CgroupLimits::for_pod(spec_of(pod), ctx.pod_pids_limit)
        .map_err(|e| crate::error_chain(&e))?;
    ctx.cgroup_config
        .apply_to_pod(&mut limits, spec_of(pod), pod_cpu_burst(ctx, pod, key));
    ctx.cgroups
        .create(pod_cgroup, &limits)
        .map_err(|e| format!("creating the pod cgroup: {}", crate::error_chain(&e)))?;
    let sandbox_cgroup = ctx.cgroups.container_path(pod_cgroup, id);
    ctx.cgroups
        .create(&sandbox_cgroup, &CgroupLimits::default())
        .map_err(|e| format!("creating the sandbox cgroup: {}", crate::error_chain(&e)))?;
    let user_namespace = pod_user_namespace(ctx, pod, uid)?;
    let names = dns::pod_hostname(pod, &ctx.dns.cluster_domain).map_err(|e| e.to_string())?;
    let (resolv, warnings) = dns::pod_resolv_conf(pod, &ctx.dns);
    for w in warnings {
        ctx.events.warning(key, None, w.reason, w.message);
    }
    let etc_files = |pod_ip: Option<&str>| -> Vec<(&str, String)> {
        let (hostname, hosts) = if host_network {
            let node_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
            let node_hostname = nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default();
            (
                node_hostname,
                dns::host_network_hosts_file(&node_hosts, pod),
            )
        } else {
            let ips: Vec<String> = pod_ip.map(str::to_owned).into_iter().collect();
            (
                names.hostname.clone(),
                dns::pod_hosts_file(pod, &names, &ips),
            )
        };
        vec![
            ("hosts", hosts),
            ("hostname", format!("{hostname}\n")),
            ("resolv.conf", resolv.render()),
        ]
    };
    sandbox::write_pod_etc(&dir.join("etc"), &etc_files(None))
        .map_err(|e| crate::error_chain(&e))?;
    let state = sandbox::start(
        &ctx.agent_exe,
        id,
        &names.hostname,
        host_network,
        share_pid,
        &crate::runtime::sysctls::pod_sysctls(pod),
        user_namespace.as_ref(),
        &ctx.cgroups.procs_files(&sandbox_cgroup),
    )
    .map_err(|e| crate::error_chain(&e))?;
    if host_network {
        return Ok((state, None));
    }
    // CNI ADD into the sandbox's netns; the pod's /etc/hosts then names its IP.
    let pod_ref = crate::network::PodRef {
        namespace: pod.metadata.namespace.as_deref().unwrap_or("default"),
        name: pod_name,
        uid,
    };
    let pod_ip = match ctx.network.setup_pod(&pod_ref, &state) {
        Ok(ip) => ip,
        Err(e) => {
            sandbox::stop(&state);
            return Err(format!(
                "setting up the pod network: {}",
                crate::error_chain(&e)
            ));
        }
    };
    if pod_ip.is_some() {
        sandbox::write_pod_etc(&dir.join("etc"), &etc_files(pod_ip.as_deref()))
            .map_err(|e| crate::error_chain(&e))?;
    }
    Ok((state, pod_ip))
}
