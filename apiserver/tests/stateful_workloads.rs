//! Storage and StatefulSets through the real kubectl, with the PV and
//! StatefulSet controllers running in the apiserver: binding of claims to
//! hand-made volumes, reclaim policies, the default local-path class
//! provisioning on the first consumer's node, claim protection, and a
//! StatefulSet's ordered pods, claims, scaling, rolling update and rollback.
//! No agent here: tests report pods Running and Ready through the status
//! subresource as a kubelet would.

mod common;

use std::time::{Duration, Instant};

use common::{ApiServer, rows};
use serde_json::Value;

fn json(s: &ApiServer, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&s.ok(&a)).unwrap()
}

/// Polls `check` until it returns `Some`, or fails after 60 s.
fn eventually<T>(s: &ApiServer, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; server log:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reports every Pending pod `selector` selects Running and Ready.
fn kubelet_reports_ready(s: &ApiServer, selector: &str) {
    let out = s.ok(&[
        "get",
        "pods",
        "-l",
        selector,
        "--field-selector=status.phase=Pending",
        "-o",
        "name",
    ]);
    let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap();
    let patch = serde_json::json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": now.to_string()}]}});
    for pod in out.lines() {
        let _ = s.kubectl(&[
            "patch",
            pod,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ]);
    }
}

fn apply(s: &ApiServer, yaml: &str) {
    let out = s.kubectl_stdin(&["apply", "-f", "-"], yaml);
    assert!(
        out.status.success(),
        "kubectl apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn create_fails(s: &ApiServer, yaml: &str) -> String {
    let out = s.kubectl_stdin(&["create", "-f", "-"], yaml);
    assert!(!out.status.success(), "kubectl create succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn pod_names(s: &ApiServer, selector: &str) -> Vec<String> {
    let list = json(s, &["get", "pods", "-l", selector]);
    let mut names: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

fn phase(s: &ApiServer, kind: &str, name: &str) -> String {
    let v = json(s, &["get", kind, name]);
    v["status"]["phase"].as_str().unwrap_or_default().to_owned()
}

const PV_HOSTPATH: &str = "apiVersion: v1
kind: PersistentVolume
metadata:
  name: pv-small
  labels:
    disk: ssd
spec:
  capacity:
    storage: 2Gi
  accessModes: [ReadWriteOnce]
  hostPath:
    path: /tmp/kubelab-pv-small
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: pv-big
spec:
  capacity:
    storage: 10Gi
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Delete
  hostPath:
    path: /tmp/kubelab-pv-big
";

const CLAIM: &str = "apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  storageClassName: \"\"
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 1Gi
";

#[test]
fn claims_bind_to_volumes_and_volumes_are_reclaimed() {
    let s = ApiServer::start();
    // The built-in default class.
    let classes = eventually(&s, "the default class", || {
        let out = s.ok(&["get", "storageclass"]);
        out.contains("local-path (default)").then_some(out)
    });
    let r = rows(&classes);
    assert_eq!(
        r[0],
        [
            "NAME",
            "PROVISIONER",
            "RECLAIMPOLICY",
            "VOLUMEBINDINGMODE",
            "ALLOWVOLUMEEXPANSION",
            "AGE"
        ]
    );
    assert_eq!(
        r[1][..6],
        [
            "local-path",
            "(default)",
            "kubelab.io/local-path",
            "Delete",
            "WaitForFirstConsumer",
            "false"
        ]
    );

    // Validation speaks as kube-apiserver.
    let err = create_fails(
        &s,
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: bad}\nspec: {accessModes: [ReadWriteOnce], hostPath: {path: /x}}\n",
    );
    assert!(
        err.contains("PersistentVolume \"bad\" is invalid: spec.capacity: Required value"),
        "{err}"
    );

    apply(&s, PV_HOSTPATH);
    apply(&s, CLAIM);
    // The smallest volume that fits is bound, both ways.
    eventually(&s, "the claim to bind", || {
        (phase(&s, "pvc", "data") == "Bound").then_some(())
    });
    let pvc = json(&s, &["get", "pvc", "data"]);
    assert_eq!(pvc["spec"]["volumeName"], "pv-small");
    assert_eq!(pvc["status"]["capacity"]["storage"], "2Gi");
    assert_eq!(
        pvc["metadata"]["finalizers"][0],
        "kubernetes.io/pvc-protection"
    );
    eventually(&s, "the volume to show Bound", || {
        (phase(&s, "pv", "pv-small") == "Bound").then_some(())
    });
    let pv_rows = rows(&s.ok(&["get", "pv"]));
    assert_eq!(
        pv_rows[0][..8],
        [
            "NAME", "CAPACITY", "ACCESS", "MODES", "RECLAIM", "POLICY", "STATUS", "CLAIM"
        ]
    );
    let small = pv_rows.iter().find(|r| r[0] == "pv-small").unwrap();
    assert_eq!(
        small[1..6],
        ["2Gi", "RWO", "Retain", "Bound", "default/data"]
    );
    let pvc_rows = rows(&s.ok(&["get", "pvc"]));
    assert_eq!(
        pvc_rows[0][..7],
        [
            "NAME",
            "STATUS",
            "VOLUME",
            "CAPACITY",
            "ACCESS",
            "MODES",
            "STORAGECLASS"
        ]
    );
    assert_eq!(
        pvc_rows[1][..5],
        ["data", "Bound", "pv-small", "2Gi", "RWO"]
    );

    // A claim in use by a pod is kept (Terminating) until the pod goes.
    apply(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: user}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers: [{name: c, image: busybox}]\n  volumes: [{name: d, persistentVolumeClaim: {claimName: data}}]\n",
    );
    s.ok(&["delete", "pvc", "data", "--wait=false"]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        s.ok(&["get", "pvc", "data"]).contains("Terminating"),
        "the protection finalizer keeps a used claim"
    );
    s.ok(&["delete", "pod", "user", "--grace-period=0", "--force"]);
    eventually(&s, "the claim to go", || {
        s.kubectl(&["get", "pvc", "data"])
            .status
            .code()
            .filter(|c| *c != 0)
    });
    // Retain: the volume is Released and not bound again.
    eventually(&s, "pv-small Released", || {
        (phase(&s, "pv", "pv-small") == "Released").then_some(())
    });
    // A pre-bound claim takes exactly its volume; Delete reclaims it.
    apply(
        &s,
        &CLAIM.replace("name: data", "name: big").replace(
            "  storageClassName: \"\"\n",
            "  storageClassName: \"\"\n  volumeName: pv-big\n",
        ),
    );
    eventually(&s, "the pre-bound claim to bind", || {
        (phase(&s, "pvc", "big") == "Bound").then_some(())
    });
    s.ok(&["delete", "pvc", "big"]);
    eventually(&s, "pv-big to be deleted by its reclaim policy", || {
        s.kubectl(&["get", "pv", "pv-big"])
            .status
            .code()
            .filter(|c| *c != 0)
    });
    assert_eq!(phase(&s, "pv", "pv-small"), "Released");
}

#[test]
fn the_default_class_provisions_on_the_first_consumers_node() {
    let s = ApiServer::start();
    apply(
        &s,
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: node1\n  labels: {kubernetes.io/hostname: node1}\n  annotations: {kubelab.io/local-path-dir: /var/lib/node1/storage}\n",
    );
    apply(
        &s,
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: cache}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 1Gi}}\n",
    );
    // No class asked: the default one, waiting for a consumer.
    let claim = eventually(&s, "the default class on the claim", || {
        let c = json(&s, &["get", "pvc", "cache"]);
        (c["spec"]["storageClassName"] == "local-path").then_some(c)
    });
    assert_eq!(claim["status"]["phase"], "Pending");
    eventually(&s, "the WaitForFirstConsumer event", || {
        s.ok(&[
            "get",
            "events",
            "--field-selector=involvedObject.name=cache",
        ])
        .contains("waiting for first consumer to be created before binding")
        .then_some(())
    });
    apply(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: user}\nspec:\n  nodeName: node1\n  containers: [{name: c, image: busybox}]\n  volumes: [{name: d, persistentVolumeClaim: {claimName: cache}}]\n",
    );
    eventually(&s, "the claim to bind", || {
        (phase(&s, "pvc", "cache") == "Bound").then_some(())
    });
    let claim = json(&s, &["get", "pvc", "cache"]);
    let uid = claim["metadata"]["uid"].as_str().unwrap();
    assert_eq!(
        claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        "node1"
    );
    let pv = json(&s, &["get", "pv", &format!("pvc-{uid}")]);
    assert_eq!(
        pv["spec"]["hostPath"]["path"],
        format!("/var/lib/node1/storage/pvc-{uid}_default_cache")
    );
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"]
            [0],
        "node1"
    );
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(pv["spec"]["claimRef"]["uid"], uid);
}

const STS_WEB: &str = "apiVersion: v1
kind: Service
metadata:
  name: nginx
spec:
  clusterIP: None
  selector:
    app: nginx
  ports:
  - port: 80
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: nginx
  replicas: 3
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: nginx
        image: nginx:1.25
  volumeClaimTemplates:
  - metadata:
      name: www
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests:
          storage: 1Gi
";

#[test]
fn stateful_sets_create_in_order_scale_from_the_top_and_roll_back() {
    let s = ApiServer::start();
    apply(&s, STS_WEB);
    // OrderedReady: web-1 only once web-0 is ready, and so on.
    for n in 1..=3 {
        let expected: Vec<String> = (0..n).map(|i| format!("web-{i}")).collect();
        eventually(&s, &format!("{n} pods"), || {
            (pod_names(&s, "app=nginx") == expected).then_some(())
        });
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            pod_names(&s, "app=nginx"),
            expected,
            "no pod before its predecessor is ready"
        );
        kubelet_reports_ready(&s, "app=nginx");
    }
    let pod = json(&s, &["get", "pod", "web-1"]);
    assert_eq!(pod["spec"]["hostname"], "web-1");
    assert_eq!(pod["spec"]["subdomain"], "nginx");
    assert_eq!(
        pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
        "web-1"
    );
    assert_eq!(
        pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"],
        "1"
    );
    assert_eq!(
        pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "www-web-1"
    );
    let claims = rows(&s.ok(&["get", "pvc", "-o", "name"]))
        .into_iter()
        .flatten()
        .collect::<Vec<_>>();
    assert_eq!(
        claims,
        [
            "persistentvolumeclaim/www-web-0",
            "persistentvolumeclaim/www-web-1",
            "persistentvolumeclaim/www-web-2"
        ]
    );
    eventually(&s, "READY 3/3", || {
        let r = rows(&s.ok(&["get", "sts"]));
        (r.len() == 2 && r[0][..3] == ["NAME", "READY", "AGE"] && r[1][..2] == ["web", "3/3"])
            .then_some(())
    });
    let wide = rows(&s.ok(&["get", "sts", "-o", "wide"]));
    assert_eq!(wide[0][3..], ["CONTAINERS", "IMAGES"]);
    assert_eq!(wide[1][3..], ["nginx", "nginx:1.25"]);

    // A deleted pod comes back with its name and its claim.
    s.ok(&["delete", "pod", "web-1", "--wait=false"]);
    eventually(&s, "web-1 back", || {
        let p = json(&s, &["get", "pods", "-l", "app=nginx"]);
        p["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| {
                p["metadata"]["name"] == "web-1" && p["metadata"]["uid"] != pod["metadata"]["uid"]
            })
            .then_some(())
    });
    kubelet_reports_ready(&s, "app=nginx");

    // Scale down through the scale subresource: highest ordinal first; the
    // claims stay.
    s.ok(&["scale", "sts", "web", "--replicas=1"]);
    eventually(&s, "one pod", || {
        (pod_names(&s, "app=nginx") == ["web-0"]).then_some(())
    });
    assert_eq!(rows(&s.ok(&["get", "pvc", "-o", "name"])).len(), 3);
    s.ok(&["scale", "sts", "web", "--replicas=3"]);
    eventually(&s, "three pods again", || {
        kubelet_reports_ready(&s, "app=nginx");
        (pod_names(&s, "app=nginx").len() == 3).then_some(())
    });
    kubelet_reports_ready(&s, "app=nginx");

    // RollingUpdate: from the top down, and rollout status waits for it.
    s.ok(&["set", "image", "sts/web", "nginx=nginx:1.26"]);
    eventually(&s, "every pod on the new image", || {
        kubelet_reports_ready(&s, "app=nginx");
        let p = json(&s, &["get", "pods", "-l", "app=nginx"]);
        let items = p["items"].as_array().unwrap();
        (items.len() == 3
            && items
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "nginx:1.26"))
        .then_some(())
    });
    let sts = eventually(&s, "the rollout to complete", || {
        kubelet_reports_ready(&s, "app=nginx");
        let sts = json(&s, &["get", "sts", "web"]);
        (sts["status"]["readyReplicas"] == 3
            && sts["status"]["currentRevision"] == sts["status"]["updateRevision"])
            .then_some(sts)
    });
    assert_eq!(sts["status"]["updatedReplicas"], 3);
    let status = s.ok(&["rollout", "status", "sts/web", "--timeout=60s"]);
    assert!(status.contains("roll out complete"), "{status}");
    let history = s.ok(&["rollout", "history", "sts/web"]);
    let revisions = rows(&history)
        .into_iter()
        .filter(|r| r.first().is_some_and(|c| c == "1" || c == "2"))
        .count();
    assert_eq!(revisions, 2, "{history}");
    s.ok(&["rollout", "undo", "sts/web"]);
    eventually(&s, "the rollback", || {
        kubelet_reports_ready(&s, "app=nginx");
        let p = json(&s, &["get", "pods", "-l", "app=nginx"]);
        let items = p["items"].as_array().unwrap();
        (items.len() == 3
            && items
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "nginx:1.25"))
        .then_some(())
    });

    // Deleting the set leaves the claims (whenDeleted: Retain).
    s.ok(&["delete", "sts", "web"]);
    eventually(&s, "the pods to go", || {
        pod_names(&s, "app=nginx").is_empty().then_some(())
    });
    assert_eq!(rows(&s.ok(&["get", "pvc", "-o", "name"])).len(), 3);
}
