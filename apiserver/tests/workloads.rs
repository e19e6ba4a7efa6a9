//! Replicated workloads through the real kubectl: the apps/v1 and core
//! kinds (columns, defaults, validation, scale), and the ReplicaSet,
//! ReplicationController and Deployment controllers running in the
//! apiserver. No scheduler or agent here: pods stay unbound, and tests set
//! their readiness through the status subresource as a kubelet would.

mod common;

use std::time::{Duration, Instant};

use common::{ApiServer, rows};
use serde_json::Value;

const RS_WEB: &str = "apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: nginx
        image: nginx:1.25
";

const RC_WEB: &str = "apiVersion: v1
kind: ReplicationController
metadata:
  name: web-rc
spec:
  replicas: 3
  template:
    metadata:
      labels:
        app: web-rc
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
";

fn json(s: &ApiServer, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&s.ok(&a)).unwrap()
}

/// Polls `check` until it returns `Some`, or fails with `what` after 30 s.
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn workload_kinds_are_served_with_kubectl_columns_defaults_and_validation() {
    let s = ApiServer::start();
    s.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.25",
        "--replicas=3",
    ]);
    let d = json(&s, &["get", "deploy", "web"]);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(
        d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        "25%"
    );
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
    assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    assert_eq!(d["metadata"]["generation"], 1);

    let header = &rows(&s.ok(&["get", "deploy"]))[0];
    assert_eq!(header, &["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    let wide = rows(&s.ok(&["get", "deploy", "-o", "wide"]));
    assert_eq!(
        wide[0],
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert_eq!(wide[1][5..], ["nginx", "nginx:1.25", "app=web"]);

    // The scale subresource, as kubectl scale uses it; only spec changes
    // move the generation.
    s.ok(&["scale", "deploy/web", "--replicas=5"]);
    let d = json(&s, &["get", "deploy", "web"]);
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["metadata"]["generation"], 2);
    s.ok(&["label", "deploy/web", "tier=fe"]);
    assert_eq!(
        json(&s, &["get", "deploy", "web"])["metadata"]["generation"],
        2
    );
    let scale: Value = serde_json::from_str(&s.ok(&[
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
    ]))
    .unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 5);
    assert_eq!(scale["status"]["selector"], "app=web");
    let err = s.fails(&["scale", "deploy/web", "--replicas=-1"]);
    assert!(
        err.contains("--replicas=COUNT") || err.contains("must be greater than or equal to 0"),
        "{err}"
    );

    // The selector must select the template, and never changes.
    let bad = RS_WEB.replace("      app: web\n  template", "      app: other\n  template");
    let out = s.kubectl_stdin(&["apply", "-f", "-"], &bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("The ReplicaSet \"web\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`"),
        "{err}"
    );
    let err = s.fails(&[
        "patch", "deploy/web", "--type=merge", "-p",
        r#"{"spec":{"selector":{"matchLabels":{"app":"web","v":"2"}},"template":{"metadata":{"labels":{"app":"web","v":"2"}}}}}"#,
    ]);
    assert!(err.contains("spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"v\":\"2\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"), "{err}");
    let never = RS_WEB.replace(
        "      terminationGracePeriodSeconds: 0",
        "      restartPolicy: Never",
    );
    let out = s.kubectl_stdin(&["create", "-f", "-"], &never);
    assert!(String::from_utf8_lossy(&out.stderr).contains(
        "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""
    ));

    // A ReplicationController takes its selector and labels from the template.
    s.kubectl_stdin(&["create", "-f", "-"], RC_WEB);
    let rc = json(&s, &["get", "rc", "web-rc"]);
    assert_eq!(rc["spec"]["selector"]["app"], "web-rc");
    assert_eq!(rc["metadata"]["labels"]["app"], "web-rc");
    let header = &rows(&s.ok(&["get", "rc"]))[0];
    assert_eq!(header, &["NAME", "DESIRED", "CURRENT", "READY", "AGE"]);

    let ds = "apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      nodeSelector: {disk: ssd}
      containers:
      - {name: agent, image: busybox}
";
    s.kubectl_stdin(&["create", "-f", "-"], ds);
    let ds_obj = json(&s, &["get", "ds", "agent"]);
    assert_eq!(ds_obj["spec"]["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(
        ds_obj["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );
    let table = rows(&s.ok(&["get", "ds"]));
    assert_eq!(
        table[0],
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE",
            "SELECTOR",
            "AGE"
        ]
    );
    assert_eq!(table[1][6], "disk=ssd");

    // `kubectl get all` lists the workloads by their category.
    let all = s.ok(&["get", "all"]);
    for name in [
        "deployment.apps/web",
        "replicationcontroller/web-rc",
        "daemonset.apps/agent",
    ] {
        assert!(
            all.contains(name),
            "{name} missing from kubectl get all:\n{all}"
        );
    }
}
