//! Pod Security admission, as kube-apiserver's built-in `PodSecurity`
//! plugin (k8s.io/pod-security-admission): namespaces choose, with the
//! `pod-security.kubernetes.io/{enforce,warn,audit}[-version]` labels, a
//! Pod Security Standard level (privileged, baseline, restricted) per mode.
//!
//! - [`level`]: levels, versions, and the policy a namespace's labels ask for.
//! - [`check`], [`checks`]: the standards' checks as pure functions over a
//!   pod's metadata and spec, versioned as upstream's, and the evaluator.
//! - [`admission`]: the decisions for pods, pod templates and namespaces.
//! - [`config`]: the PodSecurityConfiguration in `--admission-control-config-file`.

pub mod admission;
pub mod check;
pub mod checks;
pub mod config;
pub mod level;

use std::path::PathBuf;

pub use admission::{Decision, NamespaceDecision, PodSecurity, Request};

/// Why the admission configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading admission configuration {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing admission configuration {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid PodSecurity configuration in {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}
