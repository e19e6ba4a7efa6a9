//! What a check says about a pod, and the wording helpers upstream's checks
//! share: `container "a"` / `containers "a", "b"`, and the walk over init,
//! regular and ephemeral containers.

use k8s_openapi::api::core::v1::{ContainerPort, PodSpec, SecurityContext};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Why a pod fails one check: a short reason (`privileged`) and the detail
/// naming what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden {
    pub reason: String,
    pub detail: String,
}

impl Forbidden {
    pub fn new(reason: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            detail: detail.into(),
        }
    }
}

/// A check over a pod's metadata and spec: `None` when it passes.
pub type CheckFn = fn(&ObjectMeta, &PodSpec) -> Option<Forbidden>;

/// Everything a pod fails at one level and version, in check order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Violations(pub Vec<Forbidden>);

impl Violations {
    pub fn allowed(&self) -> bool {
        self.0.is_empty()
    }

    /// `privileged, hostPort`: the reasons alone.
    pub fn reasons(&self) -> String {
        self.0
            .iter()
            .map(|f| f.reason.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `privileged (container "a" must not …), hostPort (…)`.
    pub fn details(&self) -> String {
        self.0
            .iter()
            .map(|f| {
                if f.detail.is_empty() {
                    f.reason.clone()
                } else {
                    format!("{} ({})", f.reason, f.detail)
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What the checks read of any container, init, regular or ephemeral.
pub struct ContainerView<'a> {
    pub name: &'a str,
    pub security_context: Option<&'a SecurityContext>,
    pub ports: &'a [ContainerPort],
}

/// Init containers, then containers, then ephemeral containers.
pub fn containers(spec: &PodSpec) -> impl Iterator<Item = ContainerView<'_>> {
    let init = spec.init_containers.iter().flatten();
    init.chain(spec.containers.iter())
        .map(|c| ContainerView {
            name: &c.name,
            security_context: c.security_context.as_ref(),
            ports: c.ports.as_deref().unwrap_or_default(),
        })
        .chain(
            spec.ephemeral_containers
                .iter()
                .flatten()
                .map(|c| ContainerView {
                    name: &c.name,
                    security_context: c.security_context.as_ref(),
                    ports: c.ports.as_deref().unwrap_or_default(),
                }),
        )
}

/// The names of the containers whose security context `bad` flags.
pub fn containers_where(spec: &PodSpec, bad: impl Fn(&SecurityContext) -> bool) -> Vec<String> {
    containers(spec)
        .filter(|c| c.security_context.is_some_and(&bad))
        .map(|c| c.name.to_owned())
        .collect()
}

pub fn pluralize<'a>(singular: &'a str, plural: &'a str, count: usize) -> &'a str {
    if count == 1 { singular } else { plural }
}

/// `"a", "b"`.
pub fn join_quote<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|s| format!("\"{}\"", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `container "a"` / `containers "a", "b"`.
pub fn named_containers<S: AsRef<str>>(names: &[S]) -> String {
    format!(
        "{} {}",
        pluralize("container", "containers", names.len()),
        join_quote(names)
    )
}

/// Whether the pod declares `spec.os.name: windows`, where the Linux-only
/// restricted requirements do not apply (v1.25+).
pub fn is_windows(spec: &PodSpec) -> bool {
    spec.os.as_ref().is_some_and(|os| os.name == "windows")
}
