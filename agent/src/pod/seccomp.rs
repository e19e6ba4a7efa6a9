//! Which seccomp profile a container runs under, as the kubelet chooses it
//! (the runtime is handed the choice as CRI's `SecurityProfile`).

use k8s_openapi::api::core::v1::{Container, Pod, SeccompProfile};

use crate::runtime::cri::SecurityProfile;

/// A bad `seccompProfile` in the pod, worded as kube-apiserver words it.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SeccompFieldError {
    pub field: String,
    pub message: String,
}

/// The kubelet's choice: the container's `seccompProfile`, else the pod's,
/// else `RuntimeDefault` with `--seccomp-default` and `Unconfined` without.
/// Privileged containers run unconfined, as containerd runs them.
pub fn seccomp_profile(
    pod: &Pod,
    container: &Container,
    seccomp_default: bool,
) -> Result<SecurityProfile, SeccompFieldError> {
    let sc = container.security_context.as_ref();
    if sc.and_then(|s| s.privileged).unwrap_or(false) {
        return Ok(SecurityProfile::Unconfined);
    }
    let pod_profile = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.seccomp_profile.as_ref());
    let (profile, field) = match sc.and_then(|s| s.seccomp_profile.as_ref()) {
        Some(p) => (
            Some(p),
            format!(
                "spec.containers[{:?}].securityContext.seccompProfile",
                container.name
            ),
        ),
        None => (
            pod_profile,
            "spec.securityContext.seccompProfile".to_string(),
        ),
    };
    let Some(SeccompProfile {
        type_,
        localhost_profile,
    }) = profile
    else {
        return Ok(if seccomp_default {
            SecurityProfile::RuntimeDefault
        } else {
            SecurityProfile::Unconfined
        });
    };
    match type_.as_str() {
        "RuntimeDefault" => Ok(SecurityProfile::RuntimeDefault),
        "Unconfined" => Ok(SecurityProfile::Unconfined),
        "Localhost" => match localhost_profile.as_deref().filter(|p| !p.is_empty()) {
            Some(p) => Ok(SecurityProfile::Localhost(p.to_string())),
            None => Err(SeccompFieldError {
                field: format!("{field}.localhostProfile"),
                message: "Required value: must be set when seccomp type is Localhost".into(),
            }),
        },
        other => Err(SeccompFieldError {
            field: format!("{field}.type"),
            message: format!(
                "Unsupported value: {other:?}: supported values: \"Localhost\", \"RuntimeDefault\", \"Unconfined\""
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSecurityContext, PodSpec, SecurityContext};

    fn pod_with(pod_type: Option<&str>, container_type: Option<&str>) -> (Pod, Container) {
        let profile = |t: &str| SeccompProfile {
            type_: t.to_string(),
            localhost_profile: (t == "Localhost").then(|| "profiles/audit.json".to_string()),
        };
        let pod = Pod {
            spec: Some(PodSpec {
                security_context: Some(PodSecurityContext {
                    seccomp_profile: pod_type.map(profile),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let container = Container {
            name: "c".into(),
            security_context: Some(SecurityContext {
                seccomp_profile: container_type.map(profile),
                ..Default::default()
            }),
            ..Default::default()
        };
        (pod, container)
    }

    #[test]
    fn the_container_profile_wins_then_the_pods_then_the_node_default() {
        let (p, c) = pod_with(None, None);
        assert_eq!(
            seccomp_profile(&p, &c, false).unwrap(),
            SecurityProfile::Unconfined
        );
        assert_eq!(
            seccomp_profile(&p, &c, true).unwrap(),
            SecurityProfile::RuntimeDefault
        );
        let (p, c) = pod_with(Some("RuntimeDefault"), None);
        assert_eq!(
            seccomp_profile(&p, &c, false).unwrap(),
            SecurityProfile::RuntimeDefault
        );
        let (p, c) = pod_with(Some("RuntimeDefault"), Some("Unconfined"));
        assert_eq!(
            seccomp_profile(&p, &c, true).unwrap(),
            SecurityProfile::Unconfined
        );
        let (p, c) = pod_with(None, Some("Localhost"));
        assert_eq!(
            seccomp_profile(&p, &c, false).unwrap(),
            SecurityProfile::Localhost("profiles/audit.json".into())
        );
        let (p, mut c) = pod_with(Some("RuntimeDefault"), None);
        c.security_context.as_mut().unwrap().privileged = Some(true);
        assert_eq!(
            seccomp_profile(&p, &c, true).unwrap(),
            SecurityProfile::Unconfined
        );
        let (p, mut c) = pod_with(None, Some("Localhost"));
        c.security_context
            .as_mut()
            .unwrap()
            .seccomp_profile
            .as_mut()
            .unwrap()
            .localhost_profile = None;
        assert_eq!(
            seccomp_profile(&p, &c, false).unwrap_err().to_string(),
            "spec.containers[\"c\"].securityContext.seccompProfile.localhostProfile: Required value: must be set when seccomp type is Localhost"
        );
    }
}
