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

/// Names of the pods `selector` selects, with their controller's name.
fn pods(s: &ApiServer, selector: &str) -> Vec<(String, Option<String>)> {
    let list = json(s, &["get", "pods", "-l", selector]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let owner = p["metadata"]["ownerReferences"]
                .as_array()
                .and_then(|refs| refs.iter().find(|r| r["controller"] == true))
                .map(|r| r["name"].as_str().unwrap().to_owned());
            (p["metadata"]["name"].as_str().unwrap().to_owned(), owner)
        })
        .collect()
}

fn wait_for_pods(s: &ApiServer, selector: &str, n: usize) -> Vec<(String, Option<String>)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = pods(s, selector);
        if p.len() == n {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {n} pods with {selector} (have {}); server log:\n{}",
            p.len(),
            s.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Marks a pod Running and Ready through the status subresource, as its
/// kubelet would.
fn make_ready(s: &ApiServer, pod: &str) {
    let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap();
    let patch = serde_json::json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": now.to_string()}]}});
    s.ok(&[
        "patch",
        "pod",
        pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch.to_string(),
    ]);
}

#[test]
fn replica_sets_and_replication_controllers_keep_their_pods() {
    let s = ApiServer::start();
    s.kubectl_stdin(&["create", "-f", "-"], RS_WEB);
    let first = wait_for_pods(&s, "app=web", 3);
    for (name, owner) in &first {
        assert!(
            name.starts_with("web-") && name.len() == "web-".len() + 5,
            "{name}"
        );
        assert_eq!(owner.as_deref(), Some("web"));
    }
    let pod = json(&s, &["get", "pod", &first[0].0]);
    let owner = &pod["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "ReplicaSet");
    assert_eq!(owner["apiVersion"], "apps/v1");
    assert_eq!(owner["blockOwnerDeletion"], true);
    assert_eq!(
        owner["uid"],
        json(&s, &["get", "rs", "web"])["metadata"]["uid"]
    );

    // Scale 3 → 6 (kubectl scale) → 2 (a patch, as kubectl edit sends) → 4 (replace -f).
    s.ok(&["scale", "rs/web", "--replicas=6"]);
    wait_for_pods(&s, "app=web", 6);
    s.ok(&[
        "patch",
        "rs/web",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":2}}"#,
    ]);
    wait_for_pods(&s, "app=web", 2);
    let file = s.file("rs.yaml", &RS_WEB.replace("replicas: 3", "replicas: 4"));
    s.ok(&["replace", "-f", &file]);
    let four = wait_for_pods(&s, "app=web", 4);

    // Ready pods (as a kubelet reports them) show in the status and columns.
    for (name, _) in &four[..2] {
        make_ready(&s, name);
    }
    let rs = eventually("2 ready replicas", || {
        let rs = json(&s, &["get", "rs", "web"]);
        (rs["status"]["readyReplicas"] == 2).then_some(rs)
    });
    assert_eq!(rs["status"]["replicas"], 4);
    assert_eq!(rs["status"]["availableReplicas"], 2);
    assert_eq!(rs["status"]["fullyLabeledReplicas"], 4);
    assert_eq!(
        rs["status"]["observedGeneration"],
        rs["metadata"]["generation"]
    );
    assert_eq!(rows(&s.ok(&["get", "rs", "web"]))[1][1..4], ["4", "4", "2"]);

    // A deleted pod is replaced.
    let victim = four[3].0.clone();
    s.ok(&["delete", "pod", &victim, "--wait=false"]);
    let after = eventually("a replacement pod", || {
        let p = pods(&s, "app=web");
        (p.len() == 4 && !p.iter().any(|(n, _)| *n == victim)).then_some(p)
    });
    assert!(after.iter().all(|(_, o)| o.as_deref() == Some("web")));

    // A pod relabeled out of the selector is released, and replaced.
    let relabeled = after[0].0.clone();
    s.ok(&["label", "pod", &relabeled, "app=debug", "--overwrite"]);
    wait_for_pods(&s, "app=web", 4);
    let released = eventually("the relabeled pod released", || {
        let p = json(&s, &["get", "pod", &relabeled]);
        p["metadata"]["ownerReferences"].is_null().then_some(p)
    });
    assert_eq!(released["metadata"]["labels"]["app"], "debug");
    // Labeled back, it is adopted again and one pod too many goes.
    s.ok(&["label", "pod", &relabeled, "app=web", "--overwrite"]);
    eventually("4 pods again after adoption", || {
        let p = pods(&s, "app=web");
        (p.len() == 4 && p.iter().all(|(_, o)| o.as_deref() == Some("web"))).then_some(())
    });

    let events = s.ok(&[
        "get",
        "events",
        "--field-selector=involvedObject.kind=ReplicaSet",
    ]);
    assert!(
        events.contains("SuccessfulCreate") && events.contains("Created pod: web-"),
        "{events}"
    );
    assert!(
        events.contains("SuccessfulDelete") && events.contains("Deleted pod: web-"),
        "{events}"
    );

    // A ReplicationController from YAML does the same with its own pods.
    s.kubectl_stdin(&["create", "-f", "-"], RC_WEB);
    let rc_pods = wait_for_pods(&s, "app=web-rc", 3);
    assert!(
        rc_pods
            .iter()
            .all(|(n, o)| n.starts_with("web-rc-") && o.as_deref() == Some("web-rc"))
    );
    s.ok(&["scale", "rc/web-rc", "--replicas=1"]);
    wait_for_pods(&s, "app=web-rc", 1);
    let rc = eventually("rc status", || {
        let rc = json(&s, &["get", "rc", "web-rc"]);
        (rc["status"]["replicas"] == 1).then_some(rc)
    });
    assert_eq!(
        rc["status"]["observedGeneration"],
        rc["metadata"]["generation"]
    );
}

#[test]
fn a_burst_of_100_replicas_never_makes_extra_pods() {
    let s = ApiServer::start();
    s.kubectl_stdin(
        &["create", "-f", "-"],
        &RS_WEB.replace("replicas: 3", "replicas: 100"),
    );
    wait_for_pods(&s, "app=web", 100);
    // Events about the new pods keep arriving after the last create;
    // the count must stay put while the controller sees them all.
    let rs = eventually("status of 100", || {
        let rs = json(&s, &["get", "rs", "web"]);
        (rs["status"]["replicas"] == 100).then_some(rs)
    });
    assert_eq!(rs["status"]["replicas"], 100);
    assert_eq!(pods(&s, "app=web").len(), 100);
    let created = s
        .ok(&[
            "get",
            "events",
            "--field-selector=reason=SuccessfulCreate",
            "-o",
            "name",
        ])
        .lines()
        .count();
    assert_eq!(created, 100);
}
