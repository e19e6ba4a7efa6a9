//! The agent as a CNI client. It writes nothing into a pod's netns itself: it
//! runs the plugins of the node's network config (from `--cni-conf-dir`,
//! binaries from `--cni-bin-dir`) with ADD when a sandbox starts and DEL when
//! it goes, exactly as the spec has a runtime do it. Every attachment is
//! cached under `<root-dir>/cni/results/` (the config used and the result) so
//! DEL gets the same config and its `prevResult` even after a restart, and so
//! attachments of sandboxes that died with a crashed agent are still released.

pub mod cluster;
pub mod config;
pub mod dns;

use std::path::PathBuf;

use kubelab_cni::invoke::{self, InvokeError, PluginEnv};
use kubelab_cni::types::CniResult;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::runtime::sandbox::SandboxState;
pub use config::NetworkConfigList;

/// The interface every pod gets, as kubelet names it.
pub const POD_IFNAME: &str = "eth0";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("network config {}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    #[error("network {network}: {source}")]
    Plugin {
        network: String,
        #[source]
        source: InvokeError,
    },
    #[error("network {network}: the result of ADD has no IP address for {ifname}")]
    NoAddress { network: String, ifname: String },
}

/// Where the CNI client looks and keeps things.
#[derive(Debug, Clone)]
pub struct NetworkOptions {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    /// `--pod-cidr`: with an empty conf dir, a default bridge network for it.
    pub pod_cidr: Option<String>,
    /// `<root-dir>/cni`.
    pub state_dir: PathBuf,
    /// `--pod-network-backend`: how pods reach other nodes' pods (recorded
    /// in the default config, which it shapes).
    pub backend: cluster::PodNetworkBackend,
    /// The pods' MTU in the default config (VXLAN: the node's less the
    /// encapsulation); `None`: the bridge's default.
    pub pod_mtu: Option<u32>,
}

/// Which pod an attachment belongs to (CNI_ARGS, as kubelet passes them).
#[derive(Debug, Clone)]
pub struct PodRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

/// One cached attachment (libcni keeps the same facts in its cache).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub kind: String,
    pub container_id: String,
    pub if_name: String,
    pub network_name: String,
    pub pod_uid: String,
    pub cni_args: String,
    /// The config list ADD ran with; DEL runs with it too.
    pub config: Value,
    /// The final ADD result; `None` while ADD has not finished.
    pub result: Option<Value>,
}

pub struct PodNetwork {
    opts: NetworkOptions,
    /// The Node's `spec.podCIDR`, for a cluster node without `--pod-cidr`.
    node_pod_cidr: std::sync::OnceLock<String>,
}

impl PodNetwork {
    pub fn new(opts: NetworkOptions) -> PodNetwork {
        PodNetwork {
            opts,
            node_pod_cidr: std::sync::OnceLock::new(),
        }
    }

    /// The pod CIDR the default config is written for: `--pod-cidr`, else
    /// the one the cluster assigned to the Node.
    pub fn pod_cidr(&self) -> Option<&str> {
        self.opts
            .pod_cidr
            .as_deref()
            .or_else(|| self.node_pod_cidr.get().map(String::as_str))
    }

    /// Takes the Node's `spec.podCIDR` (once; `--pod-cidr` still wins).
    pub fn set_node_pod_cidr(&self, cidr: String) {
        if self.node_pod_cidr.set(cidr.clone()).is_ok() {
            tracing::info!(pod_cidr = %cidr, "using the Node's spec.podCIDR for the pod network");
        }
    }

    /// Whether pods would get only their loopback now: no config in the
    /// conf dir and no pod CIDR to write the default one for.
    pub fn lacks_config(&self) -> bool {
        self.pod_cidr().is_none()
            && config::config_files(&self.opts.conf_dir).is_ok_and(|f| f.is_empty())
    }

    pub fn conf_dir(&self) -> &std::path::Path {
        &self.opts.conf_dir
    }

    fn results_dir(&self) -> PathBuf {
        self.opts.state_dir.join("results")
    }

    /// The node's network config. With an empty conf dir and a pod CIDR, the
    /// default bridge config is written first (and written again when the
    /// agent's own file was made for another pod CIDR or backend); with
    /// neither, `None`: pods get only their loopback.
    pub fn load_config(&self) -> Result<Option<NetworkConfigList>, NetworkError> {
        let first = config::load_first(&self.opts.conf_dir)?;
        let Some(cidr) = self.pod_cidr() else {
            return Ok(first);
        };
        let path = self.opts.conf_dir.join(config::DEFAULT_CONFIG_FILE);
        let value = config::default_config(
            cidr,
            &self.opts.state_dir.join("networks"),
            self.opts.backend,
            self.opts.pod_mtu,
        );
        if let Some(c) = first {
            if c.source != path || c.to_value() == list_value(&value) {
                return Ok(Some(c));
            }
            tracing::info!(path = %path.display(), "the default pod network config was written for another pod CIDR or backend");
        }
        let io = |source| NetworkError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.opts.conf_dir).map_err(io)?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&value).expect("json")).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        tracing::info!(path = %path.display(), pod_cidr = %cidr, "wrote the default pod network config");
        config::load_first(&self.opts.conf_dir)
    }

    fn env<'a>(&'a self, command: &'a str, a: &'a Attachment, netns: &'a str) -> PluginEnv<'a> {
        PluginEnv {
            command,
            container_id: &a.container_id,
            netns,
            ifname: &a.if_name,
            args: &a.cni_args,
            path: &self.opts.bin_dirs,
        }
    }

    fn cache_path(&self, a: &Attachment) -> PathBuf {
        self.results_dir().join(format!(
            "{}-{}-{}",
            a.network_name, a.container_id, a.if_name
        ))
    }

    fn save(&self, a: &Attachment) -> Result<(), NetworkError> {
        let path = self.cache_path(a);
        let io = |source| NetworkError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(self.results_dir()).map_err(io)?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(a).expect("json")).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Every cached attachment.
    pub fn attachments(&self) -> Vec<Attachment> {
        let Ok(entries) = std::fs::read_dir(self.results_dir()) else {
            return vec![];
        };
        entries
            .flatten()
            .filter(|e| e.path().extension().is_none_or(|x| x != "tmp"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect()
    }

    /// CNI ADD of the pod's sandbox: runs the config list's plugins in order,
    /// each getting the previous result. Attachments left by an earlier
    /// sandbox of the same pod are released first. Returns the pod's IP, or
    /// `None` when the node has no network config.
    pub fn setup_pod(
        &self,
        pod: &PodRef,
        sandbox: &SandboxState,
    ) -> Result<Option<String>, NetworkError> {
        self.teardown_pod(pod.uid, Some(sandbox))?;
        let Some(list) = self.load_config()? else {
            return Ok(None);
        };
        let netns = format!("/proc/{}/ns/net", sandbox.pid);
        let mut a = Attachment {
            kind: "cniCacheV1".into(),
            container_id: sandbox.id.clone(),
            if_name: POD_IFNAME.into(),
            network_name: list.name.clone(),
            pod_uid: pod.uid.to_string(),
            cni_args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
                pod.namespace, pod.name, sandbox.id, pod.uid
            ),
            config: list.to_value(),
            result: None,
        };
        // Recorded before ADD: if the agent dies halfway, DEL still knows what to undo.
        self.save(&a)?;
        let mut prev: Option<Value> = None;
        for i in 0..list.plugins.len() {
            let conf = list.plugin_config(i, prev.as_ref());
            let kind = conf["type"].as_str().unwrap_or_default().to_string();
            let out = invoke::exec_by_name(
                &kind,
                &self.env("ADD", &a, &netns),
                conf.to_string().as_bytes(),
            )
            .and_then(|out| {
                invoke::parse_result(&kind, "ADD", &out)?;
                serde_json::from_slice::<Value>(&out).map_err(|e| InvokeError::BadOutput {
                    plugin: kind.clone(),
                    command: "ADD".into(),
                    reason: e.to_string(),
                    output: String::from_utf8_lossy(&out).into_owned(),
                })
            });
            match out {
                Ok(r) => prev = Some(r),
                Err(source) => {
                    // Undo what the earlier plugins (and this one) may have done.
                    if let Err(e) = self.del(&a, Some(sandbox)) {
                        tracing::warn!(
                            pod = pod.name,
                            "releasing a failed attachment: {}",
                            crate::error_chain(&e)
                        );
                    }
                    return Err(NetworkError::Plugin {
                        network: list.name.clone(),
                        source,
                    });
                }
            }
        }
        a.result = prev.clone();
        self.save(&a)?;
        let result: CniResult = prev
            .and_then(|p| serde_json::from_value(p).ok())
            .unwrap_or_default();
        match pod_ip(&result, POD_IFNAME) {
            Some(ip) => Ok(Some(ip)),
            None => {
                let _ = self.del(&a, Some(sandbox));
                Err(NetworkError::NoAddress {
                    network: list.name,
                    ifname: POD_IFNAME.into(),
                })
            }
        }
    }

    /// CNI DEL of one attachment: plugins in reverse order, each with the
    /// cached result as `prevResult`. The netns is passed only while the
    /// sandbox that owns it lives: `/proc/<pid>` of a dead one may be another
    /// process's.
    fn del(&self, a: &Attachment, sandbox: Option<&SandboxState>) -> Result<(), NetworkError> {
        let netns = sandbox
            .filter(|s| s.id == a.container_id && s.is_alive())
            .map(|s| format!("/proc/{}/ns/net", s.pid))
            .unwrap_or_default();
        let list = NetworkConfigList::parse(&self.cache_path(a), a.config.to_string().as_bytes())?;
        for i in (0..list.plugins.len()).rev() {
            let conf = list.plugin_config(i, a.result.as_ref());
            let kind = conf["type"].as_str().unwrap_or_default().to_string();
            invoke::exec_by_name(
                &kind,
                &self.env("DEL", a, &netns),
                conf.to_string().as_bytes(),
            )
            .map_err(|source| NetworkError::Plugin {
                network: list.name.clone(),
                source,
            })?;
        }
        match std::fs::remove_file(self.cache_path(a)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(NetworkError::Io {
                path: self.cache_path(a),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// CNI DEL of every attachment of pod `uid` (its live sandbox's and any a
    /// dead one left). Nothing attached is fine.
    pub fn teardown_pod(
        &self,
        uid: &str,
        sandbox: Option<&SandboxState>,
    ) -> Result<(), NetworkError> {
        let mut first_error = None;
        for a in self.attachments().into_iter().filter(|a| a.pod_uid == uid) {
            if let Err(e) = self.del(&a, sandbox) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// CNI DEL of the attachments made for sandbox `container_id` (none is
    /// fine): a sandbox removed after a restart, whose process is gone.
    pub fn release_container(&self, container_id: &str) -> Result<(), NetworkError> {
        let mut first_error = None;
        for a in self
            .attachments()
            .into_iter()
            .filter(|a| a.container_id == container_id)
        {
            if let Err(e) = self.del(&a, None) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Removes cache files a killed agent was writing (`.tmp`, never renamed
    /// into place): the attachment they describe was either not made yet or
    /// is cached already under its final name.
    pub fn remove_unfinished_cache_files(&self) {
        let Ok(entries) = std::fs::read_dir(self.results_dir()) else {
            return;
        };
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Releases attachments of pods the node no longer has (`has_pod` false),
    /// e.g. whose dirs were removed while the agent was down.
    pub fn release_orphans(&self, has_pod: impl Fn(&str) -> bool) {
        for a in self
            .attachments()
            .into_iter()
            .filter(|a| !has_pod(&a.pod_uid))
        {
            match self.del(&a, None) {
                Ok(()) => {
                    tracing::info!(container = %a.container_id, "released the network of a pod that is gone")
                }
                Err(e) => {
                    tracing::warn!(container = %a.container_id, "releasing an orphaned attachment: {}", crate::error_chain(&e))
                }
            }
        }
    }
}

/// The pod's IP from an ADD result: an IPv4 address on `ifname` inside the
/// sandbox if there is one, else the first address there.
pub fn pod_ip(result: &CniResult, ifname: &str) -> Option<String> {
    let on_pod = |i: Option<usize>| match i {
        None => true,
        Some(i) => result
            .interfaces
            .get(i)
            .is_some_and(|iface| iface.name == ifname && !iface.sandbox.is_empty()),
    };
    let ips: Vec<_> = result
        .ips
        .iter()
        .filter(|ip| on_pod(ip.interface))
        .collect();
    ips.iter()
        .find(|ip| ip.address.addr.is_ipv4())
        .or(ips.first())
        .map(|ip| ip.address.addr.to_string())
}

/// A config list as [`NetworkConfigList::to_value`] gives it back (what
/// comparing a written default with a new one looks at).
fn list_value(v: &Value) -> Value {
    serde_json::json!({ "cniVersion": v["cniVersion"], "name": v["name"], "plugins": v["plugins"] })
}

/// `--cni-bin-dir`: a comma-separated list.
pub fn parse_bin_dirs(s: &str) -> Vec<PathBuf> {
    s.split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ip_prefers_ipv4_on_the_pod_interface() {
        let r: CniResult = serde_json::from_str(
            r#"{"cniVersion":"1.0.0",
                "interfaces":[{"name":"cni0"},{"name":"veth1"},{"name":"eth0","sandbox":"/proc/9/ns/net"}],
                "ips":[{"address":"10.9.9.9/24","interface":0},{"address":"fd00::5/64","interface":2},{"address":"10.1.0.5/24","interface":2}]}"#,
        )
        .unwrap();
        assert_eq!(pod_ip(&r, "eth0").as_deref(), Some("10.1.0.5"));
        let ipam_only: CniResult =
            serde_json::from_str(r#"{"ips":[{"address":"10.2.0.7/24"}]}"#).unwrap();
        assert_eq!(pod_ip(&ipam_only, "eth0").as_deref(), Some("10.2.0.7"));
        assert_eq!(pod_ip(&CniResult::default(), "eth0"), None);
    }

    #[test]
    fn bin_dirs_are_comma_separated() {
        assert_eq!(
            parse_bin_dirs("/opt/cni/bin, /usr/lib/cni,"),
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
    }
}
