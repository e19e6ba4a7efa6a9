//! What this node lets a pod spec ask for, from the kubelet's flags.

/// `--seccomp-default` and `--allowed-unsafe-sysctls` (KubeletConfiguration
/// `seccompDefault`, `allowedUnsafeSysctls`).
#[derive(Debug, Clone, Default)]
pub struct NodePolicy {
    /// Containers without a `seccompProfile` run under `RuntimeDefault`
    /// (otherwise `Unconfined`, the kubelet's default).
    pub seccomp_default: bool,
    /// Unsafe sysctls pods may set: names, or prefixes ending in `*`.
    pub allowed_unsafe_sysctls: Vec<String>,
}
