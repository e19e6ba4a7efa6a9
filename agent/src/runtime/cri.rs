//! What the runtime is asked for, in the shape of CRI's `runtime/v1` API
//! (k8s.io/cri-api): plain values the pod layer resolves from the API
//! objects, so that the runtime never sees a Pod. Field names are CRI's, so
//! a reader can look them up there.

use std::path::PathBuf;

/// CRI's `MountPropagation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MountPropagation {
    /// `PROPAGATION_PRIVATE`: no mount events either way (`mountPropagation: None`).
    #[default]
    Private,
    /// `PROPAGATION_HOST_TO_CONTAINER`: rslave.
    HostToContainer,
    /// `PROPAGATION_BIDIRECTIONAL`: rshared.
    Bidirectional,
}

/// CRI's `Mount`: one host path bind-mounted into a container. The pod
/// layer has resolved the volume and any subPath to `host_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub container_path: String,
    pub host_path: PathBuf,
    pub readonly: bool,
    /// `recursiveReadOnly`: submounts read-only too (only with `readonly`).
    pub recursive_read_only: bool,
    pub selinux_relabel: bool,
    pub propagation: MountPropagation,
}

/// The kubelet's container annotation naming where its termination
/// message is read from (`terminationMessagePath`): the runtime mounts the
/// run's termination-log file there.
pub const TERMINATION_MESSAGE_PATH_ANNOTATION: &str =
    "io.kubernetes.container.terminationMessagePath";

/// Marks a container a pretending runtime ([`super::fake`]) lets
/// exit 0 as soon as it started: an init container (not a sidecar), or any
/// container of a pod that runs to completion.
pub const RUNS_TO_COMPLETION_ANNOTATION: &str = "kubelab.io/runs-to-completion";

/// CRI's `NamespaceMode`: whose namespace a sandbox or container uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NamespaceMode {
    /// `POD`: the sandbox's, shared by the pod's containers.
    #[default]
    Pod,
    /// `CONTAINER`: the container's own.
    Container,
    /// `NODE`: the node's (`hostNetwork`, `hostPID`, `hostIPC`).
    Node,
}

/// CRI's `IDMapping`: the one user namespaces already use.
pub use super::userns::IdMapping;

/// CRI's `UserNamespace`: `Pod` with the pod's mappings (`hostUsers:
/// false`), or `Node`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserNamespace {
    pub mode: NamespaceMode,
    pub uids: Vec<IdMapping>,
    pub gids: Vec<IdMapping>,
}

/// CRI's `NamespaceOption`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NamespaceOption {
    pub network: NamespaceMode,
    pub pid: NamespaceMode,
    pub ipc: NamespaceMode,
    /// `None`: the node's users.
    pub userns_options: Option<UserNamespace>,
}

/// CRI's `DNSConfig`: what the runtime writes into the pod's `resolv.conf`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// CRI's `Protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

/// CRI's `PortMapping`: a `hostPort` of one of the pod's containers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortMapping {
    pub protocol: Protocol,
    pub container_port: i32,
    pub host_port: i32,
    pub host_ip: String,
}

/// CRI's `SecurityProfile` (seccomp, AppArmor).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SecurityProfile {
    #[default]
    RuntimeDefault,
    Unconfined,
    /// A profile on the node, relative to the runtime's profile dir.
    Localhost(String),
}

/// CRI's `PodSandboxMetadata`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodSandboxMetadata {
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub attempt: u32,
}

/// CRI's `LinuxSandboxSecurityContext`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinuxSandboxSecurityContext {
    pub namespace_options: NamespaceOption,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub readonly_rootfs: bool,
    pub supplemental_groups: Vec<i64>,
    pub privileged: bool,
    pub seccomp: Option<SecurityProfile>,
}

/// CRI's `LinuxPodSandboxConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinuxPodSandboxConfig {
    /// The pod cgroup the kubelet made; the sandbox and containers go below it.
    pub cgroup_parent: String,
    pub security_context: LinuxSandboxSecurityContext,
    /// CRI's map, kept in the pod's order (a sysctl may depend on another).
    pub sysctls: Vec<(String, String)>,
    pub overhead: Option<LinuxContainerResources>,
    pub resources: Option<LinuxContainerResources>,
}

/// CRI's `PodSandboxConfig`: what `RunPodSandbox` is given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodSandboxConfig {
    pub metadata: PodSandboxMetadata,
    pub hostname: String,
    pub log_directory: String,
    pub dns_config: Option<DnsConfig>,
    pub port_mappings: Vec<PortMapping>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub annotations: std::collections::BTreeMap<String, String>,
    pub linux: LinuxPodSandboxConfig,
}

/// CRI's `HugepageLimit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HugepageLimit {
    pub page_size: String,
    pub limit: u64,
}

/// CRI's `LinuxContainerResources` (0: unset, as in CRI).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinuxContainerResources {
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub cpu_shares: i64,
    pub memory_limit_in_bytes: i64,
    pub oom_score_adj: i64,
    pub hugepage_limits: Vec<HugepageLimit>,
    /// cgroup v2 files by name (`memory.high`, ...).
    pub unified: std::collections::BTreeMap<String, String>,
    pub memory_swap_limit_in_bytes: i64,
}

/// CRI's `Capability`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capability {
    pub add_capabilities: Vec<String>,
    pub drop_capabilities: Vec<String>,
}

/// CRI's `LinuxContainerSecurityContext`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinuxContainerSecurityContext {
    pub capabilities: Capability,
    pub privileged: bool,
    pub namespace_options: NamespaceOption,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_username: String,
    /// Not CRI's: the kubelet checks `runAsNonRoot` against the image's
    /// user itself; here the runtime resolves that user (from the image's
    /// /etc/passwd), so it checks.
    pub run_as_non_root: bool,
    pub readonly_rootfs: bool,
    pub supplemental_groups: Vec<i64>,
    pub no_new_privs: bool,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub seccomp: Option<SecurityProfile>,
    pub apparmor: Option<SecurityProfile>,
}

/// CRI's `LinuxContainerConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinuxContainerConfig {
    pub resources: LinuxContainerResources,
    pub security_context: LinuxContainerSecurityContext,
}

/// CRI's `ContainerMetadata`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerMetadata {
    pub name: String,
    pub attempt: u32,
}

/// CRI's `Device`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub container_path: String,
    pub host_path: String,
    pub permissions: String,
}

/// CRI's `ContainerConfig`: what `CreateContainer` is given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerConfig {
    pub metadata: ContainerMetadata,
    /// The image reference (CRI's `ImageSpec.image`).
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub working_dir: String,
    pub envs: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub devices: Vec<Device>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub annotations: std::collections::BTreeMap<String, String>,
    /// Relative to the sandbox's `log_directory`.
    pub log_path: String,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    pub linux: LinuxContainerConfig,
}

/// cgroup settings CRI has no field for travel in `unified`, by their v2
/// file names, as the kubelet sends MemoryQoS (`memory.min`, `memory.high`)
/// and `memory.oom.group`.
const UNIFIED_MEMORY_MIN: &str = "memory.min";
const UNIFIED_MEMORY_HIGH: &str = "memory.high";
const UNIFIED_SWAP_MAX: &str = "memory.swap.max";
const UNIFIED_OOM_GROUP: &str = "memory.oom.group";
const UNIFIED_CPU_BURST: &str = "cpu.max.burst";
const UNIFIED_PIDS_MAX: &str = "pids.max";

impl LinuxContainerResources {
    /// A container cgroup's limits as CRI carries them (0: unset).
    pub fn from_limits(limits: &crate::cgroups::CgroupLimits, oom_score_adj: i32) -> Self {
        let mut unified = std::collections::BTreeMap::new();
        let mut put = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                unified.insert(key.to_string(), v);
            }
        };
        put(
            UNIFIED_MEMORY_MIN,
            limits.memory_min_bytes.map(|v| v.to_string()),
        );
        put(
            UNIFIED_MEMORY_HIGH,
            limits.memory_high_bytes.map(|v| v.to_string()),
        );
        put(
            UNIFIED_SWAP_MAX,
            limits.swap_max_bytes.map(|v| v.to_string()),
        );
        put(UNIFIED_OOM_GROUP, limits.oom_group.then(|| "1".to_string()));
        put(
            UNIFIED_CPU_BURST,
            limits.cpu_burst_us.map(|v| v.to_string()),
        );
        put(UNIFIED_PIDS_MAX, limits.pids_max.map(|v| v.to_string()));
        LinuxContainerResources {
            cpu_period: limits.cpu_period_us as i64,
            cpu_quota: limits.cpu_quota_us.unwrap_or(0),
            cpu_shares: limits.cpu_shares.map_or(0, |s| s as i64),
            memory_limit_in_bytes: limits.memory_limit_bytes.unwrap_or(0),
            oom_score_adj: oom_score_adj as i64,
            hugepage_limits: vec![],
            unified,
            memory_swap_limit_in_bytes: 0,
        }
    }

    /// The cgroup limits these resources ask for (what the cgroup driver writes).
    pub fn to_limits(&self) -> crate::cgroups::CgroupLimits {
        let get = |key: &str| self.unified.get(key).and_then(|v| v.parse::<i64>().ok());
        let set = |v: i64| (v != 0).then_some(v);
        crate::cgroups::CgroupLimits {
            cpu_shares: set(self.cpu_shares).map(|s| s as u64),
            cpu_quota_us: set(self.cpu_quota),
            cpu_period_us: self.cpu_period as u64,
            memory_limit_bytes: set(self.memory_limit_in_bytes),
            pids_max: get(UNIFIED_PIDS_MAX),
            oom_group: get(UNIFIED_OOM_GROUP) == Some(1),
            memory_min_bytes: get(UNIFIED_MEMORY_MIN),
            memory_high_bytes: get(UNIFIED_MEMORY_HIGH),
            swap_max_bytes: get(UNIFIED_SWAP_MAX),
            cpu_burst_us: get(UNIFIED_CPU_BURST).map(|v| v as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::CgroupLimits;

    #[test]
    fn limits_travel_through_cri_resources_unchanged() {
        let plain = CgroupLimits {
            cpu_shares: Some(2),
            ..CgroupLimits::unlimited()
        };
        let full = CgroupLimits {
            cpu_shares: Some(512),
            cpu_quota_us: Some(50_000),
            cpu_period_us: 100_000,
            memory_limit_bytes: Some(64 << 20),
            pids_max: Some(100),
            oom_group: true,
            memory_min_bytes: Some(32 << 20),
            memory_high_bytes: Some(60 << 20),
            swap_max_bytes: None,
            cpu_burst_us: Some(10_000),
        };
        for limits in [plain, full, CgroupLimits::unlimited()] {
            let cri = LinuxContainerResources::from_limits(&limits, -997);
            assert_eq!(cri.oom_score_adj, -997);
            assert_eq!(cri.to_limits(), limits);
        }
        let cri = LinuxContainerResources::from_limits(&CgroupLimits::unlimited(), 0);
        assert_eq!(
            cri.unified["memory.swap.max"], "0",
            "no swap is said, not left out"
        );
        assert_eq!(cri.cpu_quota, 0, "unset is 0, as in CRI");
    }
}

/// The most of each of stdout and stderr that `ExecSync` keeps: all any
/// caller reads (the kubelet's exec prober reads 10 KiB of output).
pub const EXEC_SYNC_OUTPUT_LIMIT: usize = 10 << 10;

/// CRI's `ExecSyncResponse`: how a command run in a container ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecSyncResponse {
    /// At most [`EXEC_SYNC_OUTPUT_LIMIT`] bytes.
    pub stdout: Vec<u8>,
    /// At most [`EXEC_SYNC_OUTPUT_LIMIT`] bytes.
    pub stderr: Vec<u8>,
    /// 128 + the signal for a command killed by one.
    pub exit_code: i32,
}

/// Why `ExecSync` has no response, in the kubelet's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecSyncError {
    /// The command ran past its timeout and was killed (CRI's
    /// `DeadlineExceeded`); `command` is its words joined by spaces.
    #[error("command {command:?} timed out")]
    TimedOut { command: String },
    /// The command could not be run at all.
    #[error("{0}")]
    Start(String),
}
