//! Pods as kube-apiserver stores and refuses them: its defaults (as
//! `kubectl describe` shows them), one QoS computation with the node, and
//! its validation of paths and resource amounts.

mod common;

use common::ApiServer;

const PROBED: &str = "apiVersion: v1
kind: Pod
metadata:
  name: probed
spec:
  containers:
  - name: web
    image: nginx:1.25
    livenessProbe:
      httpGet:
        port: 8080
    resources:
      requests: {cpu: \"1\", memory: 64Mi}
      limits: {cpu: 1000m, memory: 64Mi}
";

#[test]
fn probes_are_defaulted_and_equal_amounts_are_guaranteed() {
    let s = ApiServer::start();
    s.ok(&["create", "-f", &s.file("probed.yaml", PROBED)]);
    let describe = s.ok(&["describe", "pod", "probed"]);
    assert!(
        describe.contains(
            "http-get http://:8080/ delay=0s timeout=1s period=10s #success=1 #failure=3"
        ),
        "{describe}"
    );
    let qos = describe.lines().find(|l| l.starts_with("QoS Class:"));
    assert_eq!(
        qos.and_then(|l| l.split_whitespace().last()),
        Some("Guaranteed"),
        "{describe}"
    );
    let probe = s.ok(&[
        "get", "pod", "probed", "-o",
        "jsonpath={.spec.containers[0].livenessProbe.httpGet.scheme} {.spec.containers[0].terminationMessagePolicy}",
    ]);
    assert_eq!(probe, "HTTP File");
}

#[test]
fn bad_paths_and_amounts_are_refused_with_kube_apiservers_messages() {
    let s = ApiServer::start();
    let pod = |name: &str, container_extra: &str, volumes: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: c\n    image: busybox\n{container_extra}{volumes}"
        )
    };
    let cases = [
        (
            pod("neg", "    resources:\n      limits: {cpu: \"-1\"}\n", ""),
            "spec.containers[0].resources.limits[cpu]: Invalid value: \"-1\": must be greater than or equal to 0",
        ),
        (
            pod(
                "huge",
                "    resources:\n      requests: {memory: 1e400}\n",
                "",
            ),
            "spec.containers[0].resources.requests[memory]: Invalid value: \"1e400\"",
        ),
        (
            pod(
                "over",
                "    resources:\n      requests: {cpu: \"2\"}\n      limits: {cpu: \"1\"}\n",
                "",
            ),
            "spec.containers[0].resources.requests[cpu]: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
        ),
        (
            pod(
                "host",
                "",
                "  volumes:\n  - name: h\n    hostPath: {path: /tmp/../x}\n",
            ),
            "spec.volumes[0].hostPath.path: Invalid value: \"/tmp/../x\": must not contain '..'",
        ),
        (
            pod(
                "items",
                "",
                "  volumes:\n  - name: cm\n    configMap:\n      name: x\n      items: [{key: a, path: ../a}]\n",
            ),
            "spec.volumes[0].configMap.items[0].path: Invalid value: \"../a\": must not contain '..'",
        ),
        (
            pod(
                "projected",
                "",
                "  volumes:\n  - name: p\n    projected:\n      sources:\n      - downwardAPI:\n          items: [{path: /abs, fieldRef: {fieldPath: metadata.name}}]\n",
            ),
            "spec.volumes[0].projected.sources[0].downwardAPI.items[0].path: Invalid value: \"/abs\": must be a relative path",
        ),
        (
            pod(
                "sub",
                "    volumeMounts: [{name: v, mountPath: /v, subPath: ../..}]\n",
                "  volumes:\n  - name: v\n    emptyDir: {}\n",
            ),
            "spec.containers[0].volumeMounts[0].subPath: Invalid value: \"../..\": must not contain '..'",
        ),
    ];
    for (manifest, message) in cases {
        let err = s.fails(&["create", "-f", &s.file("bad.yaml", &manifest)]);
        assert!(err.contains(message), "{message}\n{err}");
    }
    assert!(
        s.ok(&["get", "pods", "-o", "name"]).trim().is_empty(),
        "nothing stored"
    );
}

#[test]
fn runtime_classes_are_validated_and_merge_tolerations_as_kube_apiserver_does() {
    let s = ApiServer::start();
    let class = |name: &str, body: &str| {
        format!(
            "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata:\n  name: {name}\nhandler: runc\n{body}"
        )
    };
    let cases = [
        (
            class("neg", "overhead:\n  podFixed: {cpu: \"-1\"}\n"),
            "The RuntimeClass \"neg\" is invalid: overhead.limits[cpu]: Invalid value: \"-1\": must be greater than or equal to 0",
        ),
        (
            class("gpu", "overhead:\n  podFixed: {gpu: \"1\"}\n"),
            "The RuntimeClass \"gpu\" is invalid: overhead.limits[gpu]: Invalid value: \"gpu\": must be a standard resource type or fully qualified",
        ),
        (
            class("sel", "scheduling:\n  nodeSelector: {zone: \"-a\"}\n"),
            "The RuntimeClass \"sel\" is invalid: scheduling.nodeSelector: Invalid value: \"-a\": a valid label must be an empty string or consist of alphanumeric characters",
        ),
        (
            class(
                "tol",
                "scheduling:\n  tolerations: [{operator: Equal, value: x}]\n",
            ),
            "The RuntimeClass \"tol\" is invalid: scheduling.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
        ),
        (
            class(
                "dup",
                "scheduling:\n  tolerations: [{key: a, operator: Exists}, {key: a, operator: Exists}]\n",
            ),
            "The RuntimeClass \"dup\" is invalid: scheduling.tolerations[1]: Duplicate value: core.Toleration{Key:\"a\", Operator:\"Exists\", Value:\"\", Effect:\"\", TolerationSeconds:(*int64)(nil)}",
        ),
    ];
    for (manifest, message) in cases {
        let err = s.fails(&["create", "-f", &s.file("class.yaml", &manifest)]);
        assert!(err.contains(message), "{message}\n{err}");
    }
    assert!(
        s.ok(&["get", "runtimeclasses", "-o", "name"])
            .trim()
            .is_empty(),
        "nothing stored"
    );

    // The class's Exists toleration covers the pod's Equal one of its key:
    // only the class's stays (MergeTolerations).
    s.ok(&[
        "create",
        "-f",
        &s.file(
            "sandboxed.yaml",
            &class(
                "sandboxed",
                "overhead:\n  podFixed: {cpu: 100m, example.com/vcpu: \"1\"}\nscheduling:\n  nodeSelector: {sandbox: \"true\"}\n  tolerations: [{key: sandboxed, operator: Exists}]\n",
            ),
        ),
    ]);
    s.ok(&[
        "create",
        "-f",
        &s.file(
            "pod.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: boxed\nspec:\n  runtimeClassName: sandboxed\n  tolerations:\n  - {key: sandboxed, operator: Equal, value: \"yes\", effect: NoSchedule}\n  - {key: zone, operator: Exists}\n  containers:\n  - name: c\n    image: busybox\n",
        ),
    ]);
    let tolerations = s.ok(&[
        "get",
        "pod",
        "boxed",
        "-o",
        "jsonpath={range .spec.tolerations[*]}{.key}/{.operator}/{.effect} {end}",
    ]);
    assert!(
        tolerations.starts_with("zone/Exists/ sandboxed/Exists/ "),
        "{tolerations}"
    );
    assert!(!tolerations.contains("Equal"), "{tolerations}");
}
