//! Pod sources (kubelet's `pkg/kubelet/config`): static manifests from a
//! directory, the pods the apiserver binds to this node, and the
//! KubeletConfiguration file that points at the manifests.
//!
//! A source sends full snapshots ([`SourceUpdate`]) of the pods it wants on
//! this node; whoever merges sources diffs them against what is running.

pub mod api;
pub mod feature_gates;
pub mod file;
pub mod kubelet_config;
pub mod manifest;
pub mod reserved;

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

pub use api::{ApiSource, SOURCE_API};
pub use file::FileSource;
pub use kubelet_config::{KubeletConfiguration, load_kubelet_config, parse_go_duration};
pub use manifest::{FieldError, ManifestError, load_static_pod};

/// `kubernetes.io/config.source` of pods read from manifest files.
pub const SOURCE_FILE: &str = "file";

/// A pod from a manifest file (it may not refer to API objects).
pub fn is_static_pod(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(manifest::CONFIG_SOURCE_ANNOTATION))
        .is_some_and(|s| s == SOURCE_FILE)
}

/// Everything one source wants running right now (kubelet's `PodUpdate` with
/// `Op: SET`): pods absent from a snapshot are to be stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceUpdate {
    /// Which source sent it: [`SOURCE_FILE`] or [`SOURCE_API`].
    pub source: &'static str,
    /// Valid pods, with static-pod and apiserver defaults applied, ordered by
    /// file name. Shared: snapshots, the pod manager and the workers hold
    /// the same pods.
    pub pods: Vec<Arc<Pod>>,
    /// Files that could not become a pod, ordered by file name. A broken
    /// file never hides the pods of the others.
    pub errors: Vec<ManifestError>,
}
