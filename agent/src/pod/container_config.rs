//! What the runtime is given for a container, resolved from the API objects
//! it names, as the kubelet's `generateContainerConfig` does before a CRI
//! `CreateContainer`: the runtime sees the result, never the objects.
//! Its environment (env, envFrom, downward API, service variables), the
//! pod's managed `/etc/hosts`, and the CRI [`ContainerConfig`] itself
//! ([`container_config`] is pure).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::cgroups::{CgroupLimits, QosClass};
use crate::context::AgentContext;
use crate::pod::downward::{NodeAllocatable, PodPlacement};
use crate::pod::env::{EnvInputs, make_environment_variables};
use crate::runtime::cri::{
    Capability, ContainerConfig, ContainerMetadata, LinuxContainerConfig, LinuxContainerResources,
    LinuxContainerSecurityContext, Mount, RUNS_TO_COMPLETION_ANNOTATION,
    TERMINATION_MESSAGE_PATH_ANNOTATION,
};
use crate::runtime::spec;

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

/// What the node adds to a container's config.
pub struct ContainerNode {
    /// `--seccomp-default`: `RuntimeDefault` for containers that ask nothing.
    pub seccomp_default: bool,
    /// The node's memory, for the OOM score of Burstable containers.
    pub memory_bytes: i64,
}

/// A container's CRI config, as the kubelet's `generateContainerConfig`
/// builds it: command and args with `$(VAR)` expanded from `env`, the
/// effective security context (the container's fields over the pod's), the
/// seccomp profile chosen, cgroup resources from `limits` with the OOM score
/// of the pod's QoS class. Pure; an invalid field is the error (a
/// `CreateContainerConfigError`).
#[allow(clippy::too_many_arguments)]
pub fn container_config(
    pod: &Pod,
    container: &Container,
    env: Vec<(String, String)>,
    mounts: Vec<Mount>,
    limits: &CgroupLimits,
    restart_count: i32,
    node: &ContainerNode,
) -> Result<ContainerConfig, String> {
    let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let expand = |v: &Option<Vec<String>>| -> Vec<String> {
        v.iter()
            .flatten()
            .map(|a| spec::expand_vars(a, &lookup))
            .collect()
    };
    let pod_sc = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let sc = container.security_context.clone().unwrap_or_default();
    let proc_unmasked = check_proc_mount(pod, container)?;
    let mut supplemental_groups = pod_sc.supplemental_groups.clone().unwrap_or_default();
    supplemental_groups.extend(pod_sc.fs_group);
    let seccomp = super::seccomp::seccomp_profile(pod, container, node.seccomp_default)
        .map_err(|e| e.to_string())?;
    let memory_request = container
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("memory"))
        .and_then(|q| crate::quantity::bytes(q).ok())
        .unwrap_or(0);
    let qos = pod
        .spec
        .as_ref()
        .and_then(|s| QosClass::from_pod(s).ok())
        .unwrap_or(QosClass::BestEffort);
    let oom_score_adj = spec::oom_score_adj(qos, memory_request, node.memory_bytes);
    let caps = sc.capabilities.clone().unwrap_or_default();
    let (masked_paths, readonly_paths) = if proc_unmasked {
        (vec![], vec![])
    } else {
        (
            spec::MASKED_PATHS.iter().map(|s| s.to_string()).collect(),
            spec::READONLY_PATHS.iter().map(|s| s.to_string()).collect(),
        )
    };
    let termination_message_path = container
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    Ok(ContainerConfig {
        metadata: ContainerMetadata {
            name: container.name.clone(),
            attempt: restart_count.max(0) as u32,
        },
        image: container.image.clone().unwrap_or_default(),
        command: expand(&container.command),
        args: expand(&container.args),
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs: env.clone(),
        mounts,
        devices: vec![],
        labels: BTreeMap::from([
            (
                "io.kubernetes.container.name".into(),
                container.name.clone(),
            ),
            (
                "io.kubernetes.pod.name".into(),
                pod.metadata.name.clone().unwrap_or_default(),
            ),
            (
                "io.kubernetes.pod.namespace".into(),
                pod.metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
            ),
            (
                "io.kubernetes.pod.uid".into(),
                pod.metadata.uid.clone().unwrap_or_default(),
            ),
        ]),
        annotations: BTreeMap::from_iter(
            [(
                TERMINATION_MESSAGE_PATH_ANNOTATION.to_string(),
                termination_message_path,
            )]
            .into_iter()
            .chain(runs_to_completion(pod, container).then(|| {
                (
                    RUNS_TO_COMPLETION_ANNOTATION.to_string(),
                    "true".to_string(),
                )
            })),
        ),
        log_path: format!("{}/{}.log", container.name, restart_count.max(0)),
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
        linux: LinuxContainerConfig {
            resources: LinuxContainerResources::from_limits(limits, oom_score_adj),
            security_context: LinuxContainerSecurityContext {
                capabilities: Capability {
                    add_capabilities: caps.add.clone().unwrap_or_default(),
                    drop_capabilities: caps.drop.clone().unwrap_or_default(),
                },
                privileged: sc.privileged.unwrap_or(false),
                namespace_options: super::sandbox_config::namespace_options(pod, None),
                run_as_user: sc.run_as_user.or(pod_sc.run_as_user),
                run_as_group: sc.run_as_group.or(pod_sc.run_as_group),
                run_as_username: String::new(),
                run_as_non_root: sc
                    .run_as_non_root
                    .or(pod_sc.run_as_non_root)
                    .unwrap_or(false),
                readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
                supplemental_groups,
                no_new_privs: sc.allow_privilege_escalation == Some(false),
                masked_paths,
                readonly_paths,
                seccomp: Some(seccomp),
                apparmor: None,
            },
        },
    })
}

fn runs_to_completion(pod: &Pod, container: &Container) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == container.name);
    match init {
        Some(c) => c.restart_policy.as_deref() != Some("Always"),
        None => spec
            .restart_policy
            .as_deref()
            .is_some_and(|p| p != "Always"),
    }
}

/// `procMount`: `Default` masks `/proc` as runc does; `Unmasked` leaves it
/// whole, and only in a user namespace (`hostUsers: false`), as
/// kube-apiserver requires. Returns whether `/proc` is unmasked.
pub fn check_proc_mount(pod: &Pod, container: &Container) -> Result<bool, String> {
    let value = container
        .security_context
        .as_ref()
        .and_then(|s| s.proc_mount.as_deref())
        .unwrap_or("Default");
    let refuse = |message: String| {
        format!(
            "container {:?}: securityContext.procMount: {message}",
            container.name
        )
    };
    match value {
        "Default" => Ok(false),
        "Unmasked" => {
            let host_users = pod.spec.as_ref().and_then(|s| s.host_users).unwrap_or(true);
            if host_users {
                Err(refuse(
                    "Invalid value: \"Unmasked\": `hostUsers` must be false to use `Unmasked`"
                        .into(),
                ))
            } else {
                Ok(true)
            }
        }
        other => Err(refuse(format!(
            "Unsupported value: {other:?}: supported values: \"Default\", \"Unmasked\""
        ))),
    }
}

/// The container's cgroup limits on this node: from its resources, with
/// the node's cgroup settings (MemoryQoS, swap, OOM group) and the pod's
/// `kubelab.io/cpu-burst` (a bad value was reported when the sandbox was made).
pub fn container_limits(
    ctx: &AgentContext,
    pod: &Pod,
    container: &Container,
) -> Result<CgroupLimits, String> {
    let mut limits = CgroupLimits::for_container(container).map_err(|e| crate::error_chain(&e))?;
    let spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
    ctx.cgroup_config.apply_to_container(
        &mut limits,
        spec,
        crate::config::is_static_pod(pod),
        container,
        crate::cgroups::node_config::cpu_burst_millis(pod.metadata.annotations.as_ref())
            .ok()
            .flatten(),
    );
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::cri::{NamespaceMode, SecurityProfile};

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    const NODE: ContainerNode = ContainerNode {
        seccomp_default: true,
        memory_bytes: 4 << 30,
    };

    #[test]
    fn a_container_becomes_a_cri_config() {
        let pod = pod("
metadata: {name: web, namespace: shop, uid: u1}
spec:
  hostUsers: false
  securityContext: {runAsUser: 1000, runAsNonRoot: true, supplementalGroups: [5], fsGroup: 2000}
  containers:
  - name: app
    image: busybox:1.36
    command: [sh, -c]
    args: ['echo $(GREETING) $(UNKNOWN)']
    workingDir: /srv
    tty: true
    stdin: true
    terminationMessagePath: /tmp/msg
    resources: {requests: {memory: 1Gi}, limits: {memory: 2Gi}}
    securityContext:
      runAsGroup: 3000
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      procMount: Unmasked
      capabilities: {add: [NET_ADMIN], drop: [ALL]}
      seccompProfile: {type: Localhost, localhostProfile: profiles/audit.json}
");
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let env = vec![("GREETING".to_string(), "hi".to_string())];
        let limits = CgroupLimits::for_container(c).unwrap();
        let config = container_config(&pod, c, env.clone(), vec![], &limits, 2, &NODE).unwrap();
        assert_eq!(
            config.metadata,
            ContainerMetadata {
                name: "app".into(),
                attempt: 2
            }
        );
        assert_eq!(config.image, "busybox:1.36");
        assert_eq!(config.command, ["sh", "-c"]);
        assert_eq!(
            config.args,
            ["echo hi $(UNKNOWN)"],
            "expanded from the environment"
        );
        assert_eq!(config.working_dir, "/srv");
        assert_eq!(config.envs, env);
        assert_eq!(config.log_path, "app/2.log");
        assert!(config.tty && config.stdin && !config.stdin_once);
        assert_eq!(
            config.annotations[TERMINATION_MESSAGE_PATH_ANNOTATION],
            "/tmp/msg"
        );
        assert_eq!(config.labels["io.kubernetes.pod.namespace"], "shop");
        let r = &config.linux.resources;
        assert_eq!(r.memory_limit_in_bytes, 2 << 30);
        // Burstable: 1000 - 1000 * 1Gi / 4Gi.
        assert_eq!(r.oom_score_adj, 750);
        assert_eq!(r.to_limits(), limits);
        let sc = &config.linux.security_context;
        assert_eq!(sc.run_as_user, Some(1000), "the pod's");
        assert_eq!(sc.run_as_group, Some(3000), "the container's");
        assert!(sc.run_as_non_root && sc.no_new_privs && sc.readonly_rootfs);
        assert_eq!(
            sc.supplemental_groups,
            [5, 2000],
            "fsGroup after the others"
        );
        assert_eq!(sc.capabilities.add_capabilities, ["NET_ADMIN"]);
        assert_eq!(sc.capabilities.drop_capabilities, ["ALL"]);
        assert!(
            sc.masked_paths.is_empty() && sc.readonly_paths.is_empty(),
            "procMount: Unmasked"
        );
        assert_eq!(
            sc.seccomp,
            Some(SecurityProfile::Localhost("profiles/audit.json".into()))
        );
        assert_eq!(sc.namespace_options.network, NamespaceMode::Pod);
    }

    #[test]
    fn defaults_mask_proc_and_follow_the_node_seccomp_default() {
        let pod = pod("
metadata: {name: web, uid: u1}
spec:
  containers: [{name: app, image: busybox}]
");
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let limits = CgroupLimits::for_container(c).unwrap();
        let config = container_config(&pod, c, vec![], vec![], &limits, 0, &NODE).unwrap();
        let sc = &config.linux.security_context;
        assert_eq!(sc.masked_paths.len(), spec::MASKED_PATHS.len());
        assert_eq!(sc.readonly_paths.len(), spec::READONLY_PATHS.len());
        assert_eq!(sc.seccomp, Some(SecurityProfile::RuntimeDefault));
        assert_eq!(config.linux.resources.oom_score_adj, 1000, "BestEffort");
        assert_eq!(
            config.annotations[TERMINATION_MESSAGE_PATH_ANNOTATION],
            "/dev/termination-log"
        );
        assert!(
            !config
                .annotations
                .contains_key(RUNS_TO_COMPLETION_ANNOTATION)
        );
        let node = ContainerNode {
            seccomp_default: false,
            ..NODE
        };
        let config = container_config(&pod, c, vec![], vec![], &limits, 0, &node).unwrap();
        assert_eq!(
            config.linux.security_context.seccomp,
            Some(SecurityProfile::Unconfined)
        );
    }

    #[test]
    fn init_containers_and_run_once_pods_run_to_completion() {
        let pod = pod("
metadata: {name: job}
spec:
  restartPolicy: Always
  initContainers: [{name: setup}, {name: sidecar, restartPolicy: Always}]
  containers: [{name: app}]
");
        let spec = pod.spec.as_ref().unwrap();
        let init = spec.init_containers.as_ref().unwrap();
        assert!(runs_to_completion(&pod, &init[0]));
        assert!(
            !runs_to_completion(&pod, &init[1]),
            "a sidecar keeps running"
        );
        assert!(!runs_to_completion(&pod, &spec.containers[0]));
    }

    #[test]
    fn proc_mount_unmasked_only_in_a_user_namespace() {
        let mut pod = pod("
metadata: {name: web}
spec:
  containers: [{name: c, securityContext: {procMount: Unmasked}}]
");
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        assert_eq!(
            check_proc_mount(&pod, &c).unwrap_err(),
            "container \"c\": securityContext.procMount: Invalid value: \"Unmasked\": `hostUsers` must be false to use `Unmasked`"
        );
        pod.spec.as_mut().unwrap().host_users = Some(false);
        assert!(check_proc_mount(&pod, &c).unwrap());
        let mut hidden = c.clone();
        hidden.security_context.as_mut().unwrap().proc_mount = Some("Hidden".into());
        assert_eq!(
            check_proc_mount(&pod, &hidden).unwrap_err(),
            "container \"c\": securityContext.procMount: Unsupported value: \"Hidden\": supported values: \"Default\", \"Unmasked\""
        );
    }
}
