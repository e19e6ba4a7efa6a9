use prost::Message;
use serde_json::{Value, json};

use super::*;

fn round_trip(obj: &Value) -> Value {
    decode(&encode(obj).unwrap_or_else(|e| panic!("{}: {e}", obj["kind"]))).unwrap()
}

#[test]
fn every_served_kind_round_trips() {
    let registry = crate::kinds::Registry::default();
    for kind in registry.all() {
        let info = kind.info();
        let api_version = match info.group {
            "" => info.version.to_owned(),
            g => format!("{g}/{}", info.version),
        };
        let obj = json!({
            "apiVersion": api_version, "kind": info.kind,
            "metadata": {"name": "x", "namespace": "ns", "labels": {"app": "web"},
                         "annotations": {"a": "b"}, "uid": "u-1",
                         "creationTimestamp": "2024-05-06T07:08:09Z", "generation": 2,
                         "finalizers": ["f"],
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p",
                                              "uid": "u-2", "controller": true}]},
        });
        assert_eq!(round_trip(&obj), obj, "{api_version} {}", info.kind);
    }
}

/// Objects that use every JSON form the schema has: pointers set to zero,
/// quantities, int-or-strings, times, micro-times, raw JSON, bytes, maps,
/// Go named slices, schemas.
#[test]
fn objects_of_every_form_round_trip() {
    let container = json!({
        "name": "c", "image": "busybox", "command": ["sh", "-c", "sleep 1"],
        "ports": [{"containerPort": 80, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1"}},
        "livenessProbe": {"httpGet": {"path": "/", "port": "http"}, "timeoutSeconds": 1},
        "readinessProbe": {"tcpSocket": {"port": 8080}},
        "securityContext": {"runAsNonRoot": false, "allowPrivilegeEscalation": false,
                            "runAsUser": 0},
        "env": [{"name": "A", "value": "1"}],
    });
    let objects = [
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
               "spec": {"containers": [container],
                        "ephemeralContainers": [{"name": "debugger", "image": "busybox",
                                                 "targetContainerName": "c", "stdin": true, "tty": true}],
                        "terminationGracePeriodSeconds": 0, "enableServiceLinks": false,
                        "nodeSelector": {"disk": "ssd"}},
               "status": {"phase": "Running", "startTime": "2024-05-06T07:08:09Z",
                          "podIPs": [{"ip": "10.0.0.1"}]}}),
        json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
               "metadata": {"name": "high"}, "value": 0,
               "description": "d", "preemptionPolicy": "Never"}),
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "node-1", "namespace": "kube-node-lease"},
               "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40,
                        "acquireTime": "2024-05-06T07:08:09.123456Z",
                        "renewTime": "2024-05-06T07:08:10.000000Z", "leaseTransitions": 0}}),
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
               "metadata": {"name": "e", "namespace": "default"},
               "eventTime": "2024-05-06T07:08:09.000001Z", "reason": "Started",
               "reportingController": "kubelet", "reportingInstance": "node-1", "action": "Start",
               "type": "Normal", "note": "n",
               "regarding": {"kind": "Pod", "name": "p", "namespace": "default"},
               "series": {"count": 2, "lastObservedTime": "2024-05-06T07:09:09.500000Z"}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "d"}},
                        "strategy": {"type": "RollingUpdate",
                                     "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                        "template": {"metadata": {"labels": {"app": "d"}},
                                     "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
        json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
               "metadata": {"name": "r"}, "revision": 3,
               "data": {"spec": {"template": {"metadata": {"labels": {"a": "b"}}}}}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
               "data": {"k": "aGVsbG8="}, "type": "Opaque", "immutable": true}),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "c", "managedFields": [{
                   "manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                   "time": "2024-05-06T07:08:09Z", "fieldsType": "FieldsV1",
                   "fieldsV1": {"f:data": {"f:k": {}}}}]},
               "data": {"k": "v"}, "binaryData": {"b": "AAEC"}}),
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
               "spec": {"hard": {"pods": "10", "requests.cpu": "2"}},
               "status": {"used": {"pods": "0"}}}),
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
               "metadata": {}, "spec": {"user": "u", "groups": ["g"], "extra": {"scopes": ["a", "b"]},
                                        "resourceAttributes": {"verb": "get", "resource": "pods"}},
               "status": {"allowed": false}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "i"},
               "spec": {"rules": [{"host": "a.example", "http": {"paths": [{
                   "path": "/", "pathType": "Prefix",
                   "backend": {"service": {"name": "s", "port": {"number": 80}}}}]}}]}}),
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
               "metadata": {"name": "h"},
               "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "d", "apiVersion": "apps/v1"},
                        "minReplicas": 1, "maxReplicas": 5,
                        "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                     "target": {"type": "Utilization", "averageUtilization": 0}}}],
                        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}}),
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
               "metadata": {"name": "crontabs.example.com"},
               "spec": {"group": "example.com", "scope": "Namespaced",
                        "names": {"plural": "crontabs", "kind": "CronTab", "shortNames": ["ct"]},
                        "versions": [{"name": "v1", "served": true, "storage": true,
                            "subresources": {"status": {}},
                            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                "spec": {"type": "object",
                                         "x-kubernetes-preserve-unknown-fields": true,
                                         "properties": {
                                             "cron": {"type": "string", "default": "* * * * *",
                                                      "pattern": "^.*$"},
                                             "replicas": {"type": "integer", "minimum": 1.0,
                                                          "x-kubernetes-int-or-string": true},
                                             "tags": {"type": "array", "items": {"type": "string"},
                                                      "x-kubernetes-list-type": "set"},
                                             "labels": {"type": "object",
                                                        "additionalProperties": {"type": "string"}},
                                             "free": {"type": "object", "additionalProperties": false}},
                                         "required": ["cron"]}}}}}]}}),
    ];
    for obj in objects {
        assert_eq!(round_trip(&obj), obj);
    }
}

#[test]
fn durations_are_go_duration_strings() {
    let s = schema::schema();
    let desc = s.pool.get_message_by_name(schema::DURATION).unwrap();
    let msg = json::json_to_message(s, &json!("1h30m0s"), &desc, "").unwrap();
    assert_eq!(
        msg.get_field_by_number(1).unwrap().as_i64(),
        Some(5_400_000_000_000)
    );
    assert_eq!(
        json::message_to_json(s, &msg, "").unwrap(),
        Some(json!("1h30m0s"))
    );
}

/// A body built by prost's generated types (k8s-pb), as Go writes it:
/// every non-pointer field on the wire, zero or not.
fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

fn go_meta(name: &str) -> k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    use k8s_pb::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    ObjectMeta {
        name: Some(name.into()),
        generate_name: Some(String::new()),
        namespace: Some(String::new()),
        uid: Some(String::new()),
        resource_version: Some(String::new()),
        generation: Some(0),
        creation_timestamp: Some(Time::default()),
        labels: [("app".to_owned(), "web".to_owned())].into(),
        ..Default::default()
    }
}

#[test]
fn bodies_encoded_by_k8s_pb_decode_to_go_s_json() {
    use k8s_pb::api::core::v1 as core;
    use k8s_pb::api::scheduling::v1::PriorityClass;
    use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;

    let pc = PriorityClass {
        metadata: Some(go_meta("high")),
        value: Some(0),
        global_default: Some(false),
        description: Some(String::new()),
        preemption_policy: None,
    };
    assert_eq!(
        decode(&envelope(
            "scheduling.k8s.io/v1",
            "PriorityClass",
            pc.encode_to_vec()
        ))
        .unwrap(),
        json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
               "metadata": {"name": "high", "labels": {"app": "web"}}, "value": 0})
    );

    let container = core::EphemeralContainer {
        ephemeral_container_common: Some(core::EphemeralContainerCommon {
            name: Some("debugger".into()),
            image: Some("busybox".into()),
            working_dir: Some(String::new()),
            stdin: Some(true),
            tty: Some(false),
            resources: Some(Default::default()),
            termination_message_path: Some(String::new()),
            ..Default::default()
        }),
        target_container_name: Some("c".into()),
    };
    let probe = core::Probe {
        handler: Some(core::ProbeHandler {
            http_get: Some(core::HttpGetAction {
                path: Some("/".into()),
                port: Some(IntOrString {
                    r#type: Some(1),
                    int_val: Some(0),
                    str_val: Some("http".into()),
                }),
                host: Some(String::new()),
                scheme: Some(String::new()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        initial_delay_seconds: Some(0),
        timeout_seconds: Some(0),
        ..Default::default()
    };
    let pod = core::Pod {
        metadata: Some(go_meta("p")),
        spec: Some(core::PodSpec {
            containers: vec![core::Container {
                name: Some("c".into()),
                image: Some("busybox".into()),
                liveness_probe: Some(probe),
                ports: vec![core::ContainerPort {
                    container_port: Some(80),
                    host_port: Some(0),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ephemeral_containers: vec![container],
            termination_grace_period_seconds: Some(0),
            restart_policy: Some(String::new()),
            host_network: Some(false),
            ..Default::default()
        }),
        status: Some(Default::default()),
    };
    assert_eq!(
        decode(&envelope("v1", "Pod", pod.encode_to_vec())).unwrap(),
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "p", "labels": {"app": "web"}},
               "spec": {
                   "containers": [{"name": "c", "image": "busybox",
                                   "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                   "livenessProbe": {"httpGet": {"path": "/", "port": "http"}}}],
                   "ephemeralContainers": [{"name": "debugger", "image": "busybox",
                                            "resources": {}, "stdin": true,
                                            "targetContainerName": "c"}],
                   "terminationGracePeriodSeconds": 0},
               "status": {}})
    );
}

#[test]
fn unknown_fields_are_kept_for_field_validation() {
    use k8s_pb::api::core::v1::{ConfigMap, NamespaceSpec};
    let mut cm = ConfigMap {
        metadata: Some(go_meta("c")),
        ..Default::default()
    }
    .encode_to_vec();
    // Field 99 of ConfigMap does not exist (a varint), nor does field 7 of
    // ObjectMeta's owner reference list.
    cm.extend([0x98, 0x06, 0x01]);
    let obj = decode(&envelope("v1", "ConfigMap", cm)).unwrap();
    assert_eq!(obj["#99"], json!(true));

    let kind = crate::kinds::Registry::default()
        .find("", "v1", "configmaps")
        .unwrap();
    let (_, unknown) = kind.normalize(obj).unwrap();
    assert_eq!(unknown, ["#99"]);

    // A nested message: field 5 of NamespaceSpec (which has field 1 only).
    let mut spec = NamespaceSpec::default().encode_to_vec();
    spec.extend([0x2a, 0x01, b'x']);
    let mut ns = k8s_pb::api::core::v1::Namespace {
        metadata: Some(go_meta("n")),
        ..Default::default()
    }
    .encode_to_vec();
    ns.push(0x12);
    ns.push(spec.len() as u8);
    ns.extend(spec);
    let obj = decode(&envelope("v1", "Namespace", ns)).unwrap();
    assert_eq!(obj["spec"], json!({"#5": true}));
}

#[test]
fn kinds_without_a_protobuf_form_are_refused() {
    let body = envelope("example.com/v1", "CronTab", Vec::new());
    assert_eq!(
        decode(&body),
        Err(ProtobufError::UnsupportedKind(
            "example.com/v1, Kind=CronTab".into()
        ))
    );
    assert_eq!(decode(b"{}"), Err(ProtobufError::NoMagic));
    assert!(matches!(
        decode(b"k8s\0\x0a\xff"),
        Err(ProtobufError::Malformed(_))
    ));
}
