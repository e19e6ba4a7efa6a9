//! Finding the network config, as container runtimes do: the first
//! `.conflist`, `.conf` or `.json` file of the conf dir in lexical order. A
//! single-plugin `.conf` is read as a list of one. With no config there and a
//! pod CIDR known, the agent writes a default bridge config for it.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::NetworkError;
use super::cluster::PodNetworkBackend;

/// A network configuration list (`.conflist`), or a `.conf` made into one.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    /// The file it came from.
    pub source: PathBuf,
    pub cni_version: String,
    pub name: String,
    /// Each plugin's config object, as written.
    pub plugins: Vec<Value>,
}

impl NetworkConfigList {
    pub fn parse(source: &Path, bytes: &[u8]) -> Result<NetworkConfigList, NetworkError> {
        let bad = |reason: String| NetworkError::Config {
            path: source.to_path_buf(),
            reason,
        };
        let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let str_field = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let name = str_field("name");
        if name.is_empty() {
            return Err(bad("no \"name\"".into()));
        }
        let cni_version = str_field("cniVersion");
        let plugins = match v.get("plugins") {
            Some(Value::Array(p)) => p.clone(),
            Some(_) => return Err(bad("\"plugins\" is not a list".into())),
            // A single plugin's config (.conf).
            None => vec![v.clone()],
        };
        if plugins.is_empty() {
            return Err(bad("no plugins".into()));
        }
        for p in &plugins {
            if p.get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .is_empty()
            {
                return Err(bad("a plugin has no \"type\"".into()));
            }
        }
        Ok(NetworkConfigList {
            source: source.to_path_buf(),
            cni_version,
            name,
            plugins,
        })
    }

    /// The config plugin `i` gets on stdin: its own object plus the list's
    /// `cniVersion` and `name`, and the previous plugin's result if any.
    pub fn plugin_config(&self, i: usize, prev_result: Option<&Value>) -> Value {
        let mut c = self.plugins[i].clone();
        c["cniVersion"] = json!(self.cni_version);
        c["name"] = json!(self.name);
        if let Some(prev) = prev_result {
            c["prevResult"] = prev.clone();
        }
        c
    }

    /// The list as one JSON value (what the result cache keeps for DEL).
    pub fn to_value(&self) -> Value {
        json!({ "cniVersion": self.cni_version, "name": self.name, "plugins": self.plugins })
    }
}

/// The config files of `dir` in the order they are considered.
pub fn config_files(dir: &Path) -> Result<Vec<PathBuf>, NetworkError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(source) => {
            return Err(NetworkError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            )
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The first config of `dir`, or `None` if it holds none.
pub fn load_first(dir: &Path) -> Result<Option<NetworkConfigList>, NetworkError> {
    let Some(path) = config_files(dir)?.into_iter().next() else {
        return Ok(None);
    };
    let bytes = std::fs::read(&path).map_err(|source| NetworkError::Io {
        path: path.clone(),
        source,
    })?;
    NetworkConfigList::parse(&path, &bytes).map(Some)
}

pub const DEFAULT_CONFIG_FILE: &str = "10-kubelab.conflist";

/// The default bridge network for a node's pod CIDR: our bridge plugin with
/// our host-local IPAM, the first address as the gateway on `cni0`. Without a
/// pod network across nodes the bridge masquerades whatever leaves the
/// node's pod CIDR; with one (`podNetworkBackend`, recorded in the list) the
/// agent masquerades only what leaves the pod networks, so pods on other
/// nodes see a pod's own address, and over VXLAN pods get the smaller MTU.
pub fn default_config(
    pod_cidr: &str,
    ipam_data_dir: &Path,
    backend: PodNetworkBackend,
    mtu: Option<u32>,
) -> Value {
    let mut bridge = json!({
        "type": "kubelab-bridge",
        "bridge": "cni0",
        "isGateway": true,
        "isDefaultGateway": true,
        "ipMasq": backend == PodNetworkBackend::None,
        "hairpinMode": true,
        "ipam": {
            "type": "kubelab-host-local",
            "ranges": [[{ "subnet": pod_cidr }]],
            "dataDir": ipam_data_dir,
        }
    });
    if let Some(mtu) = mtu {
        bridge["mtu"] = json!(mtu);
    }
    json!({
        "cniVersion": "1.0.0",
        "name": "kubelab",
        "podNetworkBackend": backend.as_str(),
        "plugins": [bridge]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_file_in_lexical_order_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("20-b.conflist"),
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("10-a.conf"),
            r#"{"cniVersion":"0.4.0","name":"a","type":"bridge","bridge":"br9"}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("00-notes.txt"), "ignored").unwrap();
        let c = load_first(dir.path()).unwrap().unwrap();
        assert_eq!(c.name, "a");
        assert_eq!(c.cni_version, "0.4.0");
        assert_eq!(c.plugins.len(), 1);
        let pc = c.plugin_config(0, Some(&json!({"cniVersion": "0.4.0"})));
        assert_eq!(pc["bridge"], "br9");
        assert_eq!(pc["prevResult"]["cniVersion"], "0.4.0");
        assert_eq!(load_first(&dir.path().join("missing")).unwrap(), None);
    }

    #[test]
    fn broken_configs_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("10-x.conflist"),
            r#"{"cniVersion":"1.0.0","name":"x","plugins":[{}]}"#,
        )
        .unwrap();
        let e = load_first(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("10-x.conflist") && e.contains("a plugin has no \"type\""),
            "{e}"
        );
    }

    #[test]
    fn default_config_is_a_valid_list() {
        let dir = Path::new("/var/lib/kubelet/cni/networks");
        let v = default_config("10.244.3.0/24", dir, PodNetworkBackend::None, None);
        let c = NetworkConfigList::parse(Path::new("x"), v.to_string().as_bytes()).unwrap();
        assert_eq!(c.plugins[0]["type"], "kubelab-bridge");
        assert_eq!(
            c.plugins[0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.3.0/24"
        );
        assert_eq!(v["podNetworkBackend"], "none");
        assert_eq!(c.plugins[0]["ipMasq"], true);
        assert_eq!(c.plugins[0].get("mtu"), None);
        // Across nodes the agent masquerades (only off the pod networks).
        let vx = default_config("10.244.3.0/24", dir, PodNetworkBackend::Vxlan, Some(1450));
        assert_eq!(vx["podNetworkBackend"], "vxlan");
        assert_eq!(vx["plugins"][0]["ipMasq"], false);
        assert_eq!(vx["plugins"][0]["mtu"], 1450);
        let hg = default_config("10.244.3.0/24", dir, PodNetworkBackend::HostGw, None);
        assert_eq!(hg["podNetworkBackend"], "host-gw");
        assert_eq!(hg["plugins"][0]["ipMasq"], false);
    }
}
