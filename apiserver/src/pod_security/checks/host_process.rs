//! baseline `windowsHostProcess`: no Windows HostProcess containers.

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::pod_security::check::{Forbidden, containers_where, named_containers};

pub fn host_process_1_0(_: &ObjectMeta, spec: &PodSpec) -> Option<Forbidden> {
    let host_process = |o: Option<&k8s_openapi::api::core::v1::WindowsSecurityContextOptions>| {
        o.and_then(|o| o.host_process) == Some(true)
    };
    let mut setters = Vec::new();
    if spec
        .security_context
        .as_ref()
        .is_some_and(|sc| host_process(sc.windows_options.as_ref()))
    {
        setters.push("pod".to_owned());
    }
    let bad = containers_where(spec, |sc| host_process(sc.windows_options.as_ref()));
    if !bad.is_empty() {
        setters.push(named_containers(&bad));
    }
    (!setters.is_empty()).then(|| {
        Forbidden::new(
            "hostProcess",
            format!(
                "{} must not set securityContext.windowsOptions.hostProcess=true",
                setters.join(" and ")
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_security::checks::test_pod;

    #[test]
    fn host_process_pods_and_containers_are_refused() {
        let (m, s) = test_pod(serde_json::json!({
            "securityContext": {"windowsOptions": {"hostProcess": true}},
            "containers": [{"name": "a", "securityContext": {"windowsOptions": {"hostProcess": true}}}, {"name": "b"}],
        }));
        assert_eq!(
            host_process_1_0(&m, &s),
            Some(Forbidden::new(
                "hostProcess",
                "pod and container \"a\" must not set securityContext.windowsOptions.hostProcess=true"
            ))
        );
        let (m, s) = test_pod(serde_json::json!({"containers": [{"name": "a"}]}));
        assert_eq!(host_process_1_0(&m, &s), None);
    }
}
