//! ServiceAccount admission and the root CA publisher through the real
//! kubectl: every namespace gets `kube-root-ca.crt` (put back when deleted
//! or edited), pods get the `kube-api-access-*` volume mounted at
//! `/var/run/secrets/kubernetes.io/serviceaccount` unless automounting is
//! off, mirror pods are left alone, and a pod naming a missing
//! ServiceAccount is refused in kube-apiserver's words.

mod common;

use std::time::{Duration, Instant};

use common::ApiServer;
use serde_json::{Value, json};

const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Waits until `ns` has `kube-root-ca.crt` holding `ca`.
fn wait_for_ca(s: &ApiServer, ns: &str, ca: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = s.kubectl(&[
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            ns,
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ]);
        if out.status.success() && String::from_utf8_lossy(&out.stdout) == ca {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no kube-root-ca.crt with the cluster CA in {ns}: {}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn pod_json(s: &ApiServer, ns: &str, name: &str) -> Value {
    serde_json::from_str(&s.ok(&["get", "pod", name, "-n", ns, "-o", "json"])).unwrap()
}

#[test]
fn namespaces_get_the_root_ca_back_after_delete_and_edit() {
    let s = ApiServer::start();
    let ca = std::fs::read_to_string(s.ca_file()).unwrap();
    wait_for_ca(&s, "kube-system", &ca);
    s.ok(&["create", "namespace", "dev"]);
    wait_for_ca(&s, "dev", &ca);
    let described = s.ok(&[
        "get",
        "configmap",
        "kube-root-ca.crt",
        "-n",
        "dev",
        "-o",
        "jsonpath={.metadata.annotations.kubernetes\\.io/description}",
    ]);
    assert!(
        described.starts_with("Contains a CA bundle that can be used to verify the kube-apiserver")
    );

    s.ok(&["delete", "configmap", "kube-root-ca.crt", "-n", "dev"]);
    wait_for_ca(&s, "dev", &ca);
    s.ok(&[
        "patch",
        "configmap",
        "kube-root-ca.crt",
        "-n",
        "dev",
        "-p",
        r#"{"data": {"ca.crt": "forged"}}"#,
    ]);
    wait_for_ca(&s, "dev", &ca);
}

#[test]
fn pods_run_as_their_service_account_with_the_api_access_volume() {
    let s = ApiServer::start();
    s.ok(&["create", "namespace", "dev"]);
    // Right after its namespace, a pod already finds the `default` account.
    s.ok(&[
        "run",
        "web",
        "-n",
        "dev",
        "--image=busybox",
        "--",
        "sleep",
        "3600",
    ]);
    let pod = pod_json(&s, "dev", "web");
    assert_eq!(pod["spec"]["serviceAccountName"], "default");
    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str().unwrap().starts_with("kube-api-access-"))
        .cloned()
        .expect("a kube-api-access volume");
    let name = volume["name"].as_str().unwrap();
    assert_eq!(name.len(), "kube-api-access-".len() + 5);
    assert_eq!(
        volume["projected"],
        json!({"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}, "path": "namespace"}]}}]})
    );
    assert_eq!(
        pod["spec"]["containers"][0]["volumeMounts"],
        json!([{"name": name, "readOnly": true, "mountPath": MOUNT_PATH}])
    );
    let described = s.ok(&["describe", "pod", "web", "-n", "dev"]);
    for line in [
        &format!("{MOUNT_PATH} from {name} (ro)"),
        "Type:                    Projected (a volume that contains injected data from multiple sources)",
        "TokenExpirationSeconds:  3607",
        "ConfigMapName:           kube-root-ca.crt",
    ] {
        assert!(described.contains(line), "{line:?} in {described}");
    }

    // A server-side dry run shows the volume and stores nothing.
    let dry: Value = serde_json::from_str(&s.ok(&[
        "run",
        "trial",
        "-n",
        "dev",
        "--image=busybox",
        "--dry-run=server",
        "-o",
        "json",
    ]))
    .unwrap();
    assert!(
        dry["spec"]["volumes"][0]["name"]
            .as_str()
            .unwrap()
            .starts_with("kube-api-access-")
    );
    assert!(
        !s.kubectl(&["get", "pod", "trial", "-n", "dev"])
            .status
            .success()
    );

    // Automounting off, on the ServiceAccount or the pod; and a mirror pod
    // (as a kubelet makes for a static pod): no volume, no account.
    let quiet = s.file(
        "quiet.yaml",
        "apiVersion: v1
kind: ServiceAccount
metadata: {name: quiet, namespace: dev}
automountServiceAccountToken: false
---
apiVersion: v1
kind: Pod
metadata: {name: q, namespace: dev}
spec:
  serviceAccountName: quiet
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: dev}
spec:
  automountServiceAccountToken: false
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: static-n1, namespace: dev, annotations: {kubernetes.io/config.mirror: abc}}
spec:
  nodeName: n1
  containers: [{name: c, image: busybox}]
",
    );
    s.ok(&["create", "-f", &quiet]);
    for p in ["q", "p", "static-n1"] {
        let pod = pod_json(&s, "dev", p);
        assert!(pod["spec"].get("volumes").is_none(), "{pod}");
        assert!(pod["spec"]["containers"][0].get("volumeMounts").is_none());
    }
    assert_eq!(
        pod_json(&s, "dev", "q")["spec"]["serviceAccountName"],
        "quiet"
    );
    assert!(
        pod_json(&s, "dev", "static-n1")["spec"]
            .get("serviceAccountName")
            .is_none()
    );

    let err = s.fails(&[
        "run",
        "lost",
        "-n",
        "dev",
        "--image=busybox",
        "--overrides",
        r#"{"spec": {"serviceAccountName": "nosuch"}}"#,
    ]);
    assert!(
        err.contains(
            r#"pods "lost" is forbidden: error looking up service account dev/nosuch: serviceaccount "nosuch" not found"#
        ),
        "{err}"
    );
}
