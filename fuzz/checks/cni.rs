//! CNI: the plugins' config parsing (bridge, host-local IPAM), the agent's
//! network config list (and the per-plugin configs it derives), and the
//! results the agent reads back from plugins.

use std::path::Path;

use kubelab_agent::network::NetworkConfigList;
use kubelab_cni::bridge::BridgeConf;
use kubelab_cni::invoke::parse_result;
use kubelab_cni::ipam::IpamConfig;

/// Panics when `data` breaks the property.
pub fn check(data: &[u8]) {
    let _ = BridgeConf::parse(data);
    let _ = IpamConfig::parse(data, &[("K8S_POD_NAME".into(), "p".into())]);
    if let Ok(result) = parse_result("bridge", "ADD", data) {
        let _ = kubelab_agent::network::pod_ip(&result, "eth0");
        let _ = result.for_version("0.4.0");
    }
    if let Ok(list) = NetworkConfigList::parse(Path::new("fuzz.conflist"), data) {
        let prev = serde_json::json!({"cniVersion": "1.0.0", "ips": []});
        for i in 0..list.plugins.len() {
            let _ = list.plugin_config(i, None);
            let _ = list.plugin_config(i, Some(&prev));
        }
        let _ = list.to_value();
    }
}
