//! The KubeletConfiguration file (`--config`,
//! `apiVersion: kubelet.config.k8s.io/v1beta1`): the fields the agent uses,
//! with kubelet's defaults for the ones left out. Flags given on the command
//! line override these; that merge belongs to `main`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Deserialize;

pub const KUBELET_CONFIG_API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";
pub const KUBELET_CONFIG_KIND: &str = "KubeletConfiguration";

/// The subset of kubelet's `KubeletConfiguration` the agent uses, defaults
/// applied (v1beta1 defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct KubeletConfiguration {
    /// Static pod manifests (a directory, or a single file). Relative paths
    /// are resolved against the config file's directory, as kubelet does.
    pub static_pod_path: Option<PathBuf>,
    /// How often the static pod directory is re-read besides inotify.
    /// Default 20 s.
    pub file_check_frequency: Duration,
    /// Parent cgroup of `kubepods`; `None` is the root.
    pub cgroup_root: Option<String>,
    /// `cgroupfs` (default) or `systemd`.
    pub cgroup_driver: String,
    /// Kubelet API port, default 10250.
    pub port: u16,
    /// Unauthenticated read-only port; 0 (default) disables it.
    pub read_only_port: u16,
    /// Per-pod pids limit; -1 (default) is unlimited.
    pub pod_pids_limit: i64,
    /// Rotate a container log when it grows past this; default 10Mi.
    pub container_log_max_size: u64,
    /// Log files kept per container, the live one included; default 5.
    pub container_log_max_files: u32,
    /// `systemReserved`: held back for the OS's daemons.
    pub system_reserved: super::reserved::Reservation,
    /// `kubeReserved`: held back for the node agent and runtime.
    pub kube_reserved: super::reserved::Reservation,
    /// `evictionHard`; `None`: kubelet's defaults.
    pub eviction_hard: Option<Vec<super::reserved::EvictionThreshold>>,
    /// `evictionSoft`, `evictionSoftGracePeriod`, `evictionMinimumReclaim`
    /// (signal → value pairs checked with the flags' rules).
    pub eviction_soft: Vec<super::reserved::EvictionThreshold>,
    pub eviction_soft_grace_period: Vec<(String, String)>,
    pub eviction_minimum_reclaim: Vec<(String, String)>,
    /// `evictionPressureTransitionPeriod` (5m).
    pub eviction_pressure_transition_period: Duration,
    /// `evictionMaxPodGracePeriod` (0).
    pub eviction_max_pod_grace_period: i64,
    /// `nodeLeaseDurationSeconds`, default 40.
    pub node_lease_duration_seconds: i32,
    /// `clusterDNS`: nameservers of `ClusterFirst` pods.
    pub cluster_dns: Vec<std::net::IpAddr>,
    /// `clusterDomain`; kubelet has none by default, kubeadm writes
    /// `cluster.local`.
    pub cluster_domain: Option<String>,
    /// `resolvConf`, default `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
    /// `seccompDefault`: RuntimeDefault for containers that name no profile.
    pub seccomp_default: bool,
    /// `serializeImagePulls` (default true): one image pull at a time.
    pub serialize_image_pulls: bool,
    /// `maxParallelImagePulls`: the limit when pulls are not serialized.
    pub max_parallel_image_pulls: Option<i32>,
    /// `allowedUnsafeSysctls`: names or `prefix*` patterns.
    pub allowed_unsafe_sysctls: Vec<String>,
    /// `podNetworkBackend` (the agent's own field): how pods reach other
    /// nodes' pods, `host-gw`, `vxlan` or `none` (default).
    pub pod_network_backend: crate::network::cluster::PodNetworkBackend,
    /// `tlsCertFile`/`tlsPrivateKeyFile`: the `port`'s serving certificate
    /// (absent: a self-signed one under the root dir's `pki/`).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    /// `serverTLSBootstrap`: the `port`'s certificate comes from the
    /// cluster's `kubernetes.io/kubelet-serving` signer.
    pub server_tls_bootstrap: bool,
    /// `authentication`: who a request to `port` comes from.
    pub authentication: KubeletAuthentication,
    /// `authorization`: what that user may do.
    pub authorization: KubeletAuthorization,
    /// `featureGates`: gate name to on/off (the gates the agent knows are read
    /// where they matter; others are kept and have no effect).
    pub feature_gates: std::collections::BTreeMap<String, bool>,
    /// `singleProcessOOMKill`: `None` is the kubelet's default for the cgroup
    /// version (v1: true; v2: false, the whole container is killed).
    pub single_process_oom_kill: Option<bool>,
    /// `memoryThrottlingFactor` (MemoryQoS's `memory.high`), default 0.9.
    pub memory_throttling_factor: f64,
    /// `memorySwap.swapBehavior`, default `NoSwap`.
    pub swap_behavior: crate::cgroups::swap::SwapBehavior,
}

/// `authentication` of a KubeletConfiguration (v1beta1 defaults: anonymous
/// off, the token webhook on with a 2 minute cache, no client CA).
#[derive(Debug, Clone, PartialEq)]
pub struct KubeletAuthentication {
    /// `x509.clientCAFile`: client certificates signed by it authenticate
    /// (user from CN, groups from O).
    pub client_ca_file: Option<PathBuf>,
    /// `webhook.enabled`: bearer tokens are checked with a TokenReview.
    pub webhook_enabled: bool,
    /// `webhook.cacheTTL`.
    pub webhook_cache_ttl: Duration,
    /// `anonymous.enabled`: requests without credentials are
    /// `system:anonymous` instead of 401.
    pub anonymous_enabled: bool,
}

impl Default for KubeletAuthentication {
    fn default() -> Self {
        Self {
            client_ca_file: None,
            webhook_enabled: true,
            webhook_cache_ttl: Duration::from_secs(120),
            anonymous_enabled: false,
        }
    }
}

/// `authorization.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationMode {
    AlwaysAllow,
    /// A SubjectAccessReview to the apiserver for every request (cached).
    Webhook,
}

impl std::str::FromStr for AuthorizationMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "AlwaysAllow" => Ok(Self::AlwaysAllow),
            "Webhook" => Ok(Self::Webhook),
            other => Err(format!(
                "unsupported authorization mode {other:?}: must be \"AlwaysAllow\" or \"Webhook\""
            )),
        }
    }
}

/// `authorization` of a KubeletConfiguration (v1beta1 defaults: Webhook,
/// allowed answers cached 5 minutes, denials 30 seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct KubeletAuthorization {
    pub mode: AuthorizationMode,
    /// `webhook.cacheAuthorizedTTL`.
    pub cache_authorized_ttl: Duration,
    /// `webhook.cacheUnauthorizedTTL`.
    pub cache_unauthorized_ttl: Duration,
}

impl Default for KubeletAuthorization {
    fn default() -> Self {
        Self {
            mode: AuthorizationMode::Webhook,
            cache_authorized_ttl: Duration::from_secs(300),
            cache_unauthorized_ttl: Duration::from_secs(30),
        }
    }
}

impl Default for KubeletConfiguration {
    fn default() -> Self {
        Self {
            static_pod_path: None,
            file_check_frequency: Duration::from_secs(20),
            cgroup_root: None,
            cgroup_driver: "cgroupfs".into(),
            port: 10250,
            read_only_port: 0,
            pod_pids_limit: -1,
            container_log_max_size: 10 << 20,
            container_log_max_files: 5,
            system_reserved: Default::default(),
            kube_reserved: Default::default(),
            eviction_hard: None,
            eviction_soft: Vec::new(),
            eviction_soft_grace_period: Vec::new(),
            eviction_minimum_reclaim: Vec::new(),
            eviction_pressure_transition_period:
                crate::eviction::config::DEFAULT_PRESSURE_TRANSITION_PERIOD,
            eviction_max_pod_grace_period: 0,
            node_lease_duration_seconds: 40,
            cluster_dns: Vec::new(),
            cluster_domain: None,
            resolv_conf: "/etc/resolv.conf".into(),
            seccomp_default: false,
            serialize_image_pulls: true,
            max_parallel_image_pulls: None,
            allowed_unsafe_sysctls: Vec::new(),
            pod_network_backend: Default::default(),
            tls_cert_file: None,
            tls_private_key_file: None,
            server_tls_bootstrap: false,
            authentication: KubeletAuthentication::default(),
            authorization: KubeletAuthorization::default(),
            feature_gates: Default::default(),
            single_process_oom_kill: None,
            memory_throttling_factor: crate::cgroups::memory_qos::DEFAULT_MEMORY_THROTTLING_FACTOR,
            swap_behavior: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubeletConfigError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {}{message}", path.display(), field.as_deref().map(|f| format!("{f}: ")).unwrap_or_default())]
    Decode {
        path: PathBuf,
        field: Option<String>,
        message: String,
    },
    #[error("{}: {field}: Invalid value: {value}: {detail}", path.display())]
    Invalid {
        path: PathBuf,
        field: &'static str,
        value: String,
        detail: String,
    },
}

/// The file as written: every field optional, unknown fields ignored (a real
/// kubelet config has many the agent does not use).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawKubeletConfiguration {
    api_version: Option<String>,
    kind: Option<String>,
    static_pod_path: Option<String>,
    file_check_frequency: Option<String>,
    cgroup_root: Option<String>,
    cgroup_driver: Option<String>,
    port: Option<i64>,
    read_only_port: Option<i64>,
    pod_pids_limit: Option<i64>,
    container_log_max_size: Option<Quantity>,
    container_log_max_files: Option<i64>,
    system_reserved: Option<std::collections::BTreeMap<String, String>>,
    kube_reserved: Option<std::collections::BTreeMap<String, String>>,
    eviction_hard: Option<std::collections::BTreeMap<String, String>>,
    eviction_soft: Option<std::collections::BTreeMap<String, String>>,
    eviction_soft_grace_period: Option<std::collections::BTreeMap<String, String>>,
    eviction_minimum_reclaim: Option<std::collections::BTreeMap<String, String>>,
    eviction_pressure_transition_period: Option<String>,
    eviction_max_pod_grace_period: Option<i64>,
    node_lease_duration_seconds: Option<i64>,
    #[serde(rename = "clusterDNS")]
    cluster_dns: Option<Vec<String>>,
    cluster_domain: Option<String>,
    resolv_conf: Option<String>,
    seccomp_default: Option<bool>,
    serialize_image_pulls: Option<bool>,
    max_parallel_image_pulls: Option<i32>,
    allowed_unsafe_sysctls: Option<Vec<String>>,
    pod_network_backend: Option<String>,
    tls_cert_file: Option<String>,
    tls_private_key_file: Option<String>,
    #[serde(rename = "serverTLSBootstrap")]
    server_tls_bootstrap: Option<bool>,
    authentication: Option<RawAuthentication>,
    authorization: Option<RawAuthorization>,
    feature_gates: Option<std::collections::BTreeMap<String, bool>>,
    #[serde(rename = "singleProcessOOMKill")]
    single_process_oom_kill: Option<bool>,
    memory_throttling_factor: Option<f64>,
    memory_swap: Option<RawMemorySwap>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMemorySwap {
    swap_behavior: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawAuthentication {
    x509: Option<RawX509>,
    webhook: Option<RawAuthnWebhook>,
    anonymous: Option<RawAnonymous>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawX509 {
    #[serde(rename = "clientCAFile")]
    client_ca_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAuthnWebhook {
    enabled: Option<bool>,
    #[serde(rename = "cacheTTL")]
    cache_ttl: Option<String>,
}

#[derive(Deserialize)]
struct RawAnonymous {
    enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAuthorization {
    mode: Option<String>,
    webhook: Option<RawAuthzWebhook>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAuthzWebhook {
    #[serde(rename = "cacheAuthorizedTTL")]
    cache_authorized_ttl: Option<String>,
    #[serde(rename = "cacheUnauthorizedTTL")]
    cache_unauthorized_ttl: Option<String>,
}

/// Read and validate a KubeletConfiguration file.
pub fn load_kubelet_config(
    path: impl AsRef<Path>,
) -> Result<KubeletConfiguration, KubeletConfigError> {
    let path = path.as_ref();
    let content = std::fs::read(path).map_err(|source| KubeletConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_kubelet_config(path, &content)
}

/// [`load_kubelet_config`] on content already read; `path` names the file in
/// errors and anchors relative paths.
pub fn parse_kubelet_config(
    path: &Path,
    content: &[u8],
) -> Result<KubeletConfiguration, KubeletConfigError> {
    let raw: RawKubeletConfiguration = serde_path_to_error::deserialize(
        serde_yaml::Deserializer::from_slice(content),
    )
    .map_err(|e| {
        let (field, message) = super::manifest::split_decode_error(e);
        KubeletConfigError::Decode {
            path: path.to_owned(),
            field,
            message,
        }
    })?;
    let invalid = |field: &'static str, value: String, detail: &str| KubeletConfigError::Invalid {
        path: path.to_owned(),
        field,
        value,
        detail: detail.to_owned(),
    };

    if raw.kind.as_deref() != Some(KUBELET_CONFIG_KIND) {
        return Err(invalid(
            "kind",
            format!("{:?}", raw.kind.unwrap_or_default()),
            "expected \"KubeletConfiguration\"",
        ));
    }
    if raw.api_version.as_deref() != Some(KUBELET_CONFIG_API_VERSION) {
        return Err(invalid(
            "apiVersion",
            format!("{:?}", raw.api_version.unwrap_or_default()),
            "expected \"kubelet.config.k8s.io/v1beta1\"",
        ));
    }

    let mut config = KubeletConfiguration::default();
    if let Some(p) = raw.static_pod_path.filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        let base = path.parent().unwrap_or(Path::new(""));
        config.static_pod_path = Some(if p.is_relative() { base.join(p) } else { p });
    }
    if let Some(f) = raw.file_check_frequency {
        config.file_check_frequency = parse_go_duration(&f)
            .map_err(|e| invalid("fileCheckFrequency", format!("{f:?}"), &e.to_string()))?;
    }
    config.cgroup_root = raw.cgroup_root.filter(|r| !r.is_empty());
    if let Some(driver) = raw.cgroup_driver {
        if driver != "cgroupfs" && driver != "systemd" {
            return Err(invalid(
                "cgroupDriver",
                format!("{driver:?}"),
                "must be \"cgroupfs\" or \"systemd\"",
            ));
        }
        config.cgroup_driver = driver;
    }
    if let Some(port) = raw.port {
        config.port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                invalid(
                    "port",
                    port.to_string(),
                    "must be between 1 and 65535, inclusive",
                )
            })?;
    }
    if let Some(port) = raw.read_only_port {
        config.read_only_port = u16::try_from(port).map_err(|_| {
            invalid(
                "readOnlyPort",
                port.to_string(),
                "must be between 0 and 65535, inclusive",
            )
        })?;
    }
    if let Some(limit) = raw.pod_pids_limit {
        config.pod_pids_limit = limit;
    }
    if let Some(on) = raw.seccomp_default {
        config.seccomp_default = on;
    }
    if let Some(on) = raw.serialize_image_pulls {
        config.serialize_image_pulls = on;
    }
    config.max_parallel_image_pulls = raw.max_parallel_image_pulls;
    if let Some(list) = raw.allowed_unsafe_sysctls {
        config.allowed_unsafe_sysctls = list;
    }
    if let Some(b) = raw.pod_network_backend {
        config.pod_network_backend = b
            .parse()
            .map_err(|e: String| invalid("podNetworkBackend", format!("{b:?}"), &e))?;
    }
    if let Some(size) = raw.container_log_max_size {
        config.container_log_max_size = crate::quantity::bytes(&size)
            .ok()
            .and_then(|b| u64::try_from(b).ok())
            .ok_or_else(|| {
                invalid(
                    "containerLogMaxSize",
                    format!("{:?}", size.0),
                    "must be a quantity like 10Mi",
                )
            })?;
    }
    if let Some(files) = raw.container_log_max_files {
        config.container_log_max_files =
            u32::try_from(files)
                .ok()
                .filter(|n| *n >= 2)
                .ok_or_else(|| {
                    invalid(
                        "containerLogMaxFiles",
                        files.to_string(),
                        "must be greater than 1",
                    )
                })?;
    }
    let pairs = |m: std::collections::BTreeMap<String, String>| -> Vec<(String, String)> {
        m.into_iter().collect()
    };
    if let Some(m) = raw.system_reserved {
        config.system_reserved =
            super::reserved::reservation_from_pairs("systemReserved", &pairs(m))
                .map_err(|e| reserved_error(path, "systemReserved", e))?;
    }
    if let Some(m) = raw.kube_reserved {
        config.kube_reserved = super::reserved::reservation_from_pairs("kubeReserved", &pairs(m))
            .map_err(|e| reserved_error(path, "kubeReserved", e))?;
    }
    if let Some(m) = raw.eviction_hard {
        config.eviction_hard = Some(
            super::reserved::thresholds_from_pairs("evictionHard", &pairs(m))
                .map_err(|e| reserved_error(path, "evictionHard", e))?,
        );
    }
    if let Some(m) = raw.eviction_soft {
        config.eviction_soft = super::reserved::thresholds_from_pairs("evictionSoft", &pairs(m))
            .map_err(|e| reserved_error(path, "evictionSoft", e))?;
    }
    config.eviction_soft_grace_period = raw
        .eviction_soft_grace_period
        .map(pairs)
        .unwrap_or_default();
    config.eviction_minimum_reclaim = raw.eviction_minimum_reclaim.map(pairs).unwrap_or_default();
    if let Some(p) = raw.eviction_pressure_transition_period {
        config.eviction_pressure_transition_period = parse_go_duration(&p).map_err(|e| {
            invalid(
                "evictionPressureTransitionPeriod",
                format!("{p:?}"),
                &e.to_string(),
            )
        })?;
    }
    if let Some(secs) = raw.eviction_max_pod_grace_period {
        config.eviction_max_pod_grace_period = secs;
    }
    if let Some(secs) = raw.node_lease_duration_seconds {
        config.node_lease_duration_seconds =
            i32::try_from(secs).ok().filter(|s| *s > 0).ok_or_else(|| {
                invalid(
                    "nodeLeaseDurationSeconds",
                    secs.to_string(),
                    "must be greater than 0",
                )
            })?;
    }
    for (i, ip) in raw.cluster_dns.iter().flatten().enumerate() {
        let parsed = ip.parse().map_err(|_| KubeletConfigError::Invalid {
            path: path.to_owned(),
            field: "clusterDNS",
            value: format!("{ip:?}"),
            detail: format!("entry {i} must be a valid IP address"),
        })?;
        config.cluster_dns.push(parsed);
    }
    config.cluster_domain = raw.cluster_domain.filter(|d| !d.is_empty());
    if let Some(r) = raw.resolv_conf.filter(|r| !r.is_empty()) {
        config.resolv_conf = r.into();
    }
    let file_path = |p: String| {
        let p = PathBuf::from(p);
        let base = path.parent().unwrap_or(Path::new(""));
        if p.is_relative() { base.join(p) } else { p }
    };
    config.tls_cert_file = raw.tls_cert_file.filter(|p| !p.is_empty()).map(file_path);
    config.server_tls_bootstrap = raw.server_tls_bootstrap.unwrap_or(false);
    config.tls_private_key_file = raw
        .tls_private_key_file
        .filter(|p| !p.is_empty())
        .map(file_path);
    let duration = |field: &'static str, value: String| {
        parse_go_duration(&value).map_err(|e| invalid(field, format!("{value:?}"), &e.to_string()))
    };
    if let Some(authn) = raw.authentication {
        let x509 = authn.x509.and_then(|x| x.client_ca_file);
        config.authentication.client_ca_file = x509.filter(|p| !p.is_empty()).map(file_path);
        if let Some(webhook) = authn.webhook {
            if let Some(enabled) = webhook.enabled {
                config.authentication.webhook_enabled = enabled;
            }
            if let Some(ttl) = webhook.cache_ttl {
                config.authentication.webhook_cache_ttl =
                    duration("authentication.webhook.cacheTTL", ttl)?;
            }
        }
        if let Some(enabled) = authn.anonymous.and_then(|a| a.enabled) {
            config.authentication.anonymous_enabled = enabled;
        }
    }
    config.feature_gates = raw.feature_gates.unwrap_or_default();
    config.single_process_oom_kill = raw.single_process_oom_kill;
    if let Some(f) = raw.memory_throttling_factor {
        crate::cgroups::memory_qos::validate_throttling_factor(f)
            .map_err(|e| invalid("memoryThrottlingFactor", f.to_string(), &e))?;
        config.memory_throttling_factor = f;
    }
    if let Some(b) = raw.memory_swap.and_then(|m| m.swap_behavior) {
        config.swap_behavior = b
            .parse()
            .map_err(|e: String| invalid("memorySwap.swapBehavior", format!("{b:?}"), &e))?;
    }
    if let Some(authz) = raw.authorization {
        if let Some(mode) = authz.mode {
            config.authorization.mode = mode
                .parse()
                .map_err(|e: String| invalid("authorization.mode", format!("{mode:?}"), &e))?;
        }
        if let Some(webhook) = authz.webhook {
            if let Some(ttl) = webhook.cache_authorized_ttl {
                config.authorization.cache_authorized_ttl =
                    duration("authorization.webhook.cacheAuthorizedTTL", ttl)?;
            }
            if let Some(ttl) = webhook.cache_unauthorized_ttl {
                config.authorization.cache_unauthorized_ttl =
                    duration("authorization.webhook.cacheUnauthorizedTTL", ttl)?;
            }
        }
    }
    Ok(config)
}

fn reserved_error(
    path: &Path,
    field: &'static str,
    e: super::reserved::ReservedError,
) -> KubeletConfigError {
    KubeletConfigError::Invalid {
        path: path.to_owned(),
        field,
        value: format!("{:?}", e.entry),
        detail: e.reason,
    }
}

pub use kubelab_rules::duration::{GoDurationError, parse_go_duration};

/// Go's `Duration.String()`, for logs and errors: `1m30s`, `200ms`, `0s`.
pub struct GoDuration(pub Duration);

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let nanos = d.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        if nanos < 1_000_000_000 {
            let (value, unit) = match nanos {
                n if n < 1_000 => return write!(f, "{n}ns"),
                n if n < 1_000_000 => (n as f64 / 1e3, "µs"),
                n => (n as f64 / 1e6, "ms"),
            };
            return write!(f, "{value}{unit}");
        }
        let secs = d.as_secs();
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        let sub = d.subsec_nanos();
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if h > 0 || m > 0 {
            write!(f, "{m}m")?;
        }
        if sub == 0 {
            write!(f, "{s}s")
        } else {
            let frac = format!("{sub:09}");
            write!(f, "{s}.{}s", frac.trim_end_matches('0'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_duration_display() {
        let s = |d: Duration| GoDuration(d).to_string();
        assert_eq!(s(Duration::from_secs(20)), "20s");
        assert_eq!(s(Duration::from_secs(90)), "1m30s");
        assert_eq!(s(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(s(Duration::from_millis(200)), "200ms");
        assert_eq!(s(Duration::from_millis(1500)), "1.5s");
        assert_eq!(s(Duration::ZERO), "0s");
    }

    const CONFIG: &str = "\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: manifests
fileCheckFrequency: 1m30s
cgroupRoot: /kubelab
cgroupDriver: cgroupfs
port: 10250
readOnlyPort: 10255
podPidsLimit: 1024
containerLogMaxSize: 5Mi
containerLogMaxFiles: 3
systemReserved:
  cpu: 100m
  memory: 256Mi
kubeReserved:
  memory: 128Mi
evictionHard:
  memory.available: 200Mi
evictionSoft:
  memory.available: 300Mi
evictionSoftGracePeriod:
  memory.available: 1m30s
evictionMinimumReclaim:
  memory.available: 50Mi
evictionPressureTransitionPeriod: 1m
evictionMaxPodGracePeriod: 10
clusterDNS:
- 10.96.0.10
clusterDomain: cluster.local
seccompDefault: true
serializeImagePulls: false
maxParallelImagePulls: 3
allowedUnsafeSysctls: [kernel.msg*, net.core.somaxconn]
podNetworkBackend: vxlan
tlsCertFile: pki/node.crt
tlsPrivateKeyFile: /etc/kubelab/pki/node.key
authentication:
  anonymous: {enabled: false}
  webhook:
    enabled: true
    cacheTTL: 1m
  x509:
    clientCAFile: /etc/kubelab/pki/ca.crt
authorization:
  mode: Webhook
  webhook:
    cacheAuthorizedTTL: 10s
    cacheUnauthorizedTTL: 5s
featureGates:
  MemoryQoS: true
  NodeSwap: false
singleProcessOOMKill: true
memoryThrottlingFactor: 0.8
memorySwap:
  swapBehavior: LimitedSwap
";

    #[test]
    fn reads_the_fields_the_agent_uses() {
        let c =
            parse_kubelet_config(Path::new("/etc/kubelab/config.yaml"), CONFIG.as_bytes()).unwrap();
        assert_eq!(
            c,
            KubeletConfiguration {
                static_pod_path: Some("/etc/kubelab/manifests".into()),
                file_check_frequency: Duration::from_secs(90),
                cgroup_root: Some("/kubelab".into()),
                cgroup_driver: "cgroupfs".into(),
                port: 10250,
                read_only_port: 10255,
                pod_pids_limit: 1024,
                container_log_max_size: 5 << 20,
                container_log_max_files: 3,
                system_reserved: [("cpu", "100m"), ("memory", "256Mi")]
                    .map(|(k, v)| (k.to_owned(), Quantity(v.into())))
                    .into(),
                kube_reserved: [("memory".to_owned(), Quantity("128Mi".into()))].into(),
                eviction_hard: Some(vec![super::super::reserved::EvictionThreshold {
                    signal: "memory.available".into(),
                    value: super::super::reserved::ThresholdValue::Quantity(Quantity(
                        "200Mi".into()
                    )),
                }]),
                eviction_soft: vec![super::super::reserved::EvictionThreshold {
                    signal: "memory.available".into(),
                    value: super::super::reserved::ThresholdValue::Quantity(Quantity(
                        "300Mi".into()
                    )),
                }],
                eviction_soft_grace_period: vec![("memory.available".into(), "1m30s".into())],
                eviction_minimum_reclaim: vec![("memory.available".into(), "50Mi".into())],
                eviction_pressure_transition_period: Duration::from_secs(60),
                eviction_max_pod_grace_period: 10,
                node_lease_duration_seconds: 40,
                cluster_dns: vec!["10.96.0.10".parse().unwrap()],
                cluster_domain: Some("cluster.local".into()),
                resolv_conf: "/etc/resolv.conf".into(),
                seccomp_default: true,
                serialize_image_pulls: false,
                max_parallel_image_pulls: Some(3),
                allowed_unsafe_sysctls: vec!["kernel.msg*".into(), "net.core.somaxconn".into()],
                pod_network_backend: crate::network::cluster::PodNetworkBackend::Vxlan,
                tls_cert_file: Some("/etc/kubelab/pki/node.crt".into()),
                tls_private_key_file: Some("/etc/kubelab/pki/node.key".into()),
                server_tls_bootstrap: false,
                authentication: KubeletAuthentication {
                    client_ca_file: Some("/etc/kubelab/pki/ca.crt".into()),
                    webhook_enabled: true,
                    webhook_cache_ttl: Duration::from_secs(60),
                    anonymous_enabled: false,
                },
                authorization: KubeletAuthorization {
                    mode: AuthorizationMode::Webhook,
                    cache_authorized_ttl: Duration::from_secs(10),
                    cache_unauthorized_ttl: Duration::from_secs(5),
                },
                feature_gates: [
                    ("MemoryQoS".to_string(), true),
                    ("NodeSwap".to_string(), false)
                ]
                .into(),
                single_process_oom_kill: Some(true),
                memory_throttling_factor: 0.8,
                swap_behavior: crate::cgroups::swap::SwapBehavior::LimitedSwap,
            }
        );
    }

    #[test]
    fn omitted_fields_take_kubelet_defaults() {
        let c = parse_kubelet_config(
            Path::new("c.yaml"),
            b"apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n",
        )
        .unwrap();
        assert_eq!(c, KubeletConfiguration::default());
        let abs = parse_kubelet_config(
            Path::new("/x/c.yaml"),
            CONFIG
                .replace("manifests", "/etc/kubernetes/manifests")
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            abs.static_pod_path,
            Some("/etc/kubernetes/manifests".into())
        );
    }

    #[test]
    fn errors_name_file_and_field() {
        let e = |s: &str| {
            parse_kubelet_config(Path::new("kc.yaml"), s.as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            e(&CONFIG.replace("1m30s", "90")),
            r#"kc.yaml: fileCheckFrequency: Invalid value: "90": time: missing unit in duration "90""#
        );
        assert_eq!(
            e(&CONFIG.replace("port: 10250", "port: 70000")),
            "kc.yaml: port: Invalid value: 70000: must be between 1 and 65535, inclusive"
        );
        assert_eq!(
            e(&CONFIG.replace("5Mi", "lots")),
            r#"kc.yaml: containerLogMaxSize: Invalid value: "lots": must be a quantity like 10Mi"#
        );
        assert_eq!(
            e(&CONFIG.replace("Files: 3", "Files: 1")),
            "kc.yaml: containerLogMaxFiles: Invalid value: 1: must be greater than 1"
        );
        assert_eq!(
            e(&CONFIG.replace("cpu: 100m", "cpu: fast")),
            r#"kc.yaml: systemReserved: Invalid value: "cpu=fast": "fast" is not a valid quantity: it has no digits before its suffix; expected a number with an optional suffix (m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei) or decimal exponent (e3, E-3), e.g. "500m", "0.5", "128Mi", "1e3""#
        );
        let pids = e(&CONFIG.replace("podPidsLimit: 1024", "podPidsLimit: many"));
        assert!(
            pids.starts_with("kc.yaml: podPidsLimit: invalid type"),
            "{pids}"
        );
        assert_eq!(
            e(&CONFIG.replace("mode: Webhook", "mode: RBAC")),
            r#"kc.yaml: authorization.mode: Invalid value: "RBAC": unsupported authorization mode "RBAC": must be "AlwaysAllow" or "Webhook""#
        );
        assert_eq!(
            e(&CONFIG.replace("cacheTTL: 1m", "cacheTTL: soon")),
            r#"kc.yaml: authentication.webhook.cacheTTL: Invalid value: "soon": time: invalid duration "soon""#
        );
        assert_eq!(
            e(&CONFIG.replace("podNetworkBackend: vxlan", "podNetworkBackend: flannel")),
            r#"kc.yaml: podNetworkBackend: Invalid value: "flannel": unsupported pod network backend "flannel": must be "host-gw", "vxlan" or "none""#
        );
        assert_eq!(
            e(&CONFIG.replace("Factor: 0.8", "Factor: 1.5")),
            "kc.yaml: memoryThrottlingFactor: Invalid value: 1.5: memoryThrottlingFactor 1.5 must be greater than 0 and less than or equal to 1.0"
        );
        assert_eq!(
            e(&CONFIG.replace("swapBehavior: LimitedSwap", "swapBehavior: UnlimitedSwap")),
            r#"kc.yaml: memorySwap.swapBehavior: Invalid value: "UnlimitedSwap": memorySwap.swapBehavior "UnlimitedSwap" must be one of: "", "LimitedSwap" or "NoSwap""#
        );
        assert_eq!(
            e("apiVersion: v1\nkind: Pod\n"),
            r#"kc.yaml: kind: Invalid value: "Pod": expected "KubeletConfiguration""#
        );
    }
}
