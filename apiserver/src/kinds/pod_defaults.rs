//! The defaults kube-apiserver gives every pod spec, in pods and in every
//! template that carries one (`SetDefaults_PodSpec`, `SetDefaults_Container`,
//! `SetDefaults_Probe`, `SetDefaults_HTTPGetAction`, `SetDefaults_Volume`
//! and the volume sources', as the generated `SetObjectDefaults_PodTemplate`
//! applies them), so a stored object reads as it would on Kubernetes.

use k8s_openapi::api::core::v1::{
    Container, EphemeralContainer, HTTPGetAction, Lifecycle, ObjectFieldSelector, PodSpec, Probe,
    Volume,
};
use serde_json::Value;

/// `SetDefaults_Probe`: zero or unset means the default.
fn default_probe(p: &mut Probe) {
    for (field, default) in [
        (&mut p.timeout_seconds, 1),
        (&mut p.period_seconds, 10),
        (&mut p.success_threshold, 1),
        (&mut p.failure_threshold, 3),
    ] {
        if field.unwrap_or(0) == 0 {
            *field = Some(default);
        }
    }
    if let Some(h) = &mut p.http_get {
        default_http_get(h);
    }
    if let Some(g) = &mut p.grpc {
        g.service.get_or_insert_with(String::new);
    }
}

/// `SetDefaults_HTTPGetAction`.
fn default_http_get(h: &mut HTTPGetAction) {
    if h.path.as_deref().unwrap_or("").is_empty() {
        h.path = Some("/".into());
    }
    if h.scheme.as_deref().unwrap_or("").is_empty() {
        h.scheme = Some("HTTP".into());
    }
}

fn default_lifecycle(l: &mut Lifecycle) {
    for hook in [&mut l.post_start, &mut l.pre_stop].into_iter().flatten() {
        if let Some(h) = &mut hook.http_get {
            default_http_get(h);
        }
    }
}

/// `SetDefaults_ObjectFieldSelector`.
fn default_field_ref(f: &mut ObjectFieldSelector) {
    if f.api_version.as_deref().unwrap_or("").is_empty() {
        f.api_version = Some("v1".into());
    }
}

/// `SetDefaults_Container` and what the generated defaulter applies inside
/// a container (ports, env field references, probes, lifecycle hooks).
fn default_container(c: &mut Container) {
    if c.image_pull_policy.as_deref().unwrap_or("").is_empty() {
        c.image_pull_policy = Some(
            kubelab_rules::image_pull_policy::default_pull_policy(c.image.as_deref().unwrap_or(""))
                .as_str()
                .to_owned(),
        );
    }
    if c.termination_message_path
        .as_deref()
        .unwrap_or("")
        .is_empty()
    {
        c.termination_message_path = Some("/dev/termination-log".into());
    }
    if c.termination_message_policy
        .as_deref()
        .unwrap_or("")
        .is_empty()
    {
        c.termination_message_policy = Some("File".into());
    }
    for p in c.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
    }
    for e in c.env.iter_mut().flatten() {
        if let Some(f) = e.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            default_field_ref(f);
        }
    }
    for probe in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        default_probe(probe);
    }
    if let Some(l) = &mut c.lifecycle {
        default_lifecycle(l);
    }
}

/// An ephemeral container has a container's fields (and its defaults) plus
/// its target; the defaults go through the shared [`Container`] shape.
fn default_ephemeral_container(e: &mut EphemeralContainer) {
    let mut v = serde_json::to_value(&*e).expect("EphemeralContainer serializes");
    let Ok(mut c) = serde_json::from_value::<Container>(v.clone()) else {
        return;
    };
    default_container(&mut c);
    if let (Value::Object(out), Value::Object(defaulted)) = (
        &mut v,
        serde_json::to_value(&c).expect("Container serializes"),
    ) {
        out.extend(defaulted);
    }
    if let Ok(d) = serde_json::from_value(v) {
        *e = d;
    }
}

/// File mode 0644, the default of secret, configMap, downwardAPI and
/// projected volumes.
const DEFAULT_MODE: i32 = 0o644;

/// `SetDefaults_Volume` (a volume without a source is an emptyDir) and the
/// volume sources' defaults.
fn default_volume(v: &mut Volume) {
    let has_source = serde_json::to_value(&*v)
        .ok()
        .and_then(|j| j.as_object().map(|o| o.keys().any(|k| k != "name")))
        .unwrap_or(true);
    if !has_source {
        v.empty_dir = Some(Default::default());
    }
    if let Some(h) = &mut v.host_path {
        h.type_.get_or_insert_with(String::new);
    }
    if let Some(s) = &mut v.secret {
        s.default_mode.get_or_insert(DEFAULT_MODE);
    }
    if let Some(c) = &mut v.config_map {
        c.default_mode.get_or_insert(DEFAULT_MODE);
    }
    if let Some(d) = &mut v.downward_api {
        d.default_mode.get_or_insert(DEFAULT_MODE);
        for item in d.items.iter_mut().flatten() {
            if let Some(f) = &mut item.field_ref {
                default_field_ref(f);
            }
        }
    }
    if let Some(p) = &mut v.projected {
        p.default_mode.get_or_insert(DEFAULT_MODE);
        for source in p.sources.iter_mut().flatten() {
            for item in source
                .downward_api
                .iter_mut()
                .flat_map(|d| d.items.iter_mut().flatten())
            {
                if let Some(f) = &mut item.field_ref {
                    default_field_ref(f);
                }
            }
            if let Some(t) = &mut source.service_account_token {
                t.expiration_seconds.get_or_insert(3600);
            }
        }
    }
}

/// Every default a pod spec gets wherever it is: a pod's, or a template's
/// (ReplicaSet, Deployment, DaemonSet, StatefulSet, Job, CronJob,
/// PodTemplate, ReplicationController).
pub fn default_pod_spec(spec: &mut PodSpec) {
    if spec.dns_policy.as_deref().unwrap_or("").is_empty() {
        spec.dns_policy = Some("ClusterFirst".into());
    }
    if spec.restart_policy.as_deref().unwrap_or("").is_empty() {
        spec.restart_policy = Some("Always".into());
    }
    spec.security_context.get_or_insert_with(Default::default);
    spec.termination_grace_period_seconds.get_or_insert(30);
    if spec.scheduler_name.as_deref().unwrap_or("").is_empty() {
        spec.scheduler_name = Some("default-scheduler".into());
    }
    for v in spec.volumes.iter_mut().flatten() {
        default_volume(v);
    }
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        default_container(c);
    }
    for e in spec.ephemeral_containers.iter_mut().flatten() {
        default_ephemeral_container(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defaulted(spec: Value) -> Value {
        let mut s: PodSpec = serde_json::from_value(spec).unwrap();
        default_pod_spec(&mut s);
        serde_json::to_value(s).unwrap()
    }

    #[test]
    fn probes_and_hooks_get_kube_apiservers_defaults() {
        let s = defaulted(json!({"containers": [{"name": "c", "image": "nginx",
            "livenessProbe": {"httpGet": {"port": 8080}},
            "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 5, "timeoutSeconds": 0},
            "startupProbe": {"grpc": {"port": 9000}},
            "lifecycle": {"preStop": {"httpGet": {"port": 80, "path": "/quit"}}}}]}));
        let c = &s["containers"][0];
        assert_eq!(
            c["livenessProbe"],
            json!({"httpGet": {"port": 8080, "path": "/", "scheme": "HTTP"},
                "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(c["readinessProbe"]["periodSeconds"], 5);
        assert_eq!(c["readinessProbe"]["timeoutSeconds"], 1);
        assert_eq!(
            c["startupProbe"]["grpc"],
            json!({"port": 9000, "service": ""})
        );
        assert_eq!(
            c["lifecycle"]["preStop"]["httpGet"],
            json!({"port": 80, "path": "/quit", "scheme": "HTTP"})
        );
        assert_eq!(c["imagePullPolicy"], "Always");
    }

    #[test]
    fn volumes_env_and_ephemeral_containers_get_defaults() {
        let s = defaulted(json!({
        "containers": [{"name": "c", "image": "busybox:1.36",
            "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]}],
        "ephemeralContainers": [{"name": "debug", "image": "busybox", "targetContainerName": "c"}],
        "volumes": [
            {"name": "bare"},
            {"name": "s", "secret": {"secretName": "x"}},
            {"name": "cm", "configMap": {"name": "x", "defaultMode": 256}},
            {"name": "h", "hostPath": {"path": "/tmp"}},
            {"name": "p", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token"}},
                {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}
        ]}));
        assert_eq!(
            s["containers"][0]["env"][0]["valueFrom"]["fieldRef"]["apiVersion"],
            "v1"
        );
        let e = &s["ephemeralContainers"][0];
        assert_eq!(e["targetContainerName"], "c");
        assert_eq!(e["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(e["imagePullPolicy"], "Always");
        let v = &s["volumes"];
        assert_eq!(v[0], json!({"name": "bare", "emptyDir": {}}));
        assert_eq!(v[1]["secret"]["defaultMode"], 420);
        assert_eq!(v[2]["configMap"]["defaultMode"], 256);
        assert_eq!(v[3]["hostPath"]["type"], "");
        assert_eq!(v[4]["projected"]["defaultMode"], 420);
        assert_eq!(
            v[4]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
            3600
        );
        assert_eq!(
            v[4]["projected"]["sources"][1]["downwardAPI"]["items"][0]["fieldRef"]["apiVersion"],
            "v1"
        );
    }
}
