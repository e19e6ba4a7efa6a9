//! The agent's static pod manifest reader: decode (YAML or JSON), validate,
//! default. Any input must give a pod or a `ManifestError`, never a panic.

use std::path::Path;

use kubelab_agent::config::manifest::load_static_pod;

/// Panics when `data` breaks the property.
pub fn check(data: &[u8]) {
    let seen = jiff::Timestamp::UNIX_EPOCH;
    if let Ok(pod) = load_static_pod(Path::new("fuzz.yaml"), data, "node1", seen) {
        // A pod that loads is one the worker can take: a name and a spec.
        assert!(pod.metadata.name.is_some_and(|n| n.ends_with("-node1")));
        assert!(pod.spec.is_some());
    }
}
