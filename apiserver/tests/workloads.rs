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

/// `kubectl edit OBJECT -v=6` with `script FILE` as the editor (its
/// temporary files under the test's dir, in `edit-tmp`).
fn kubectl_edit(s: &ApiServer, object: &str, script: &str) -> std::process::Output {
    let editor = s.file("editor.sh", &format!("#!/bin/sh\n{script} \"$1\"\n"));
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let tmp = s.dir.path().join("edit-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    s.kubectl_cmd(&["edit", object, "-v=6"])
        .env("EDITOR", &editor)
        .env("TMPDIR", &tmp)
        .output()
        .unwrap()
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

    // Scale 3 → 6 (kubectl scale) → 2 (kubectl edit) → 4 (replace -f).
    s.ok(&["scale", "rs/web", "--replicas=6"]);
    wait_for_pods(&s, "app=web", 6);
    let out = kubectl_edit(&s, "rs/web", "sed -i -e 's/^  replicas: 6$/  replicas: 2/'");
    assert!(
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains("replicaset.apps/web edited"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    // Events are written behind the creates: their count reaches 100 and
    // stays there.
    let created = || {
        s.ok(&[
            "get",
            "events",
            "--field-selector=reason=SuccessfulCreate",
            "-o",
            "name",
        ])
        .lines()
        .count()
    };
    eventually("100 SuccessfulCreate events", || {
        (created() >= 100).then_some(())
    });
    assert_eq!(created(), 100);
}

/// Stands in for the kubelets: marks every pending pod that `selector`
/// selects Running and Ready, until dropped.
struct FakeKubelets {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeKubelets {
    fn start(s: &ApiServer, selector: &str) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (kubeconfig, home) = (s.kubeconfig(), s.dir.path().to_owned());
        let (flag, selector) = (stop.clone(), selector.to_owned());
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let out = std::process::Command::new("/usr/bin/kubectl")
                    .env("KUBECONFIG", &kubeconfig)
                    .env("HOME", &home)
                    .args([
                        "get",
                        "pods",
                        "-l",
                        &selector,
                        "--field-selector=status.phase=Pending",
                        "-o",
                        "name",
                    ])
                    .output()
                    .unwrap();
                let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap();
                let patch = serde_json::json!({"status": {"phase": "Running", "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": now.to_string()}]}});
                for pod in String::from_utf8_lossy(&out.stdout).lines() {
                    let _ = std::process::Command::new("/usr/bin/kubectl")
                        .env("KUBECONFIG", &kubeconfig)
                        .env("HOME", &home)
                        .args([
                            "patch",
                            pod,
                            "--subresource=status",
                            "--type=merge",
                            "-p",
                            &patch.to_string(),
                        ])
                        .output();
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeKubelets {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn replica_sets(s: &ApiServer) -> Vec<Value> {
    json(s, &["get", "rs", "-l", "app=web"])["items"]
        .as_array()
        .unwrap()
        .clone()
}

fn image_of(rs: &Value) -> &str {
    rs["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
}

/// The controller reference of an object, as (kind, name, uid).
fn controller(obj: &Value) -> Option<(String, String, String)> {
    let r = obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)?;
    let f = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
    Some((f("kind"), f("name"), f("uid")))
}

#[test]
fn a_deployment_adopts_the_replica_set_an_orphaning_delete_left() {
    let s = ApiServer::start();
    s.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:1.35",
        "--replicas=2",
    ]);
    let pods_before = wait_for_pods(&s, "app=web", 2);
    let rs = eventually("the replica set", || {
        let rss = replica_sets(&s);
        (rss.len() == 1).then(|| rss[0].clone())
    });
    let rs_name = rs["metadata"]["name"].as_str().unwrap().to_owned();

    // --cascade=orphan: the set stays, without a controller.
    s.ok(&["delete", "deployment", "web", "--cascade=orphan"]);
    eventually("the set to be orphaned", || {
        let rs = json(&s, &["get", "rs", &rs_name]);
        controller(&rs).is_none().then_some(())
    });

    // A Deployment that selects it takes it back: no new set, no new pods.
    s.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:1.35",
        "--replicas=2",
    ]);
    let uid = json(&s, &["get", "deploy", "web"])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually("the set to be adopted", || {
        let rs = json(&s, &["get", "rs", &rs_name]);
        (controller(&rs) == Some(("Deployment".into(), "web".into(), uid.clone()))).then_some(())
    });
    let names: Vec<String> = replica_sets(&s)
        .iter()
        .map(|r| r["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, [rs_name.clone()]);
    assert_eq!(pods(&s, "app=web"), pods_before);
    let revision = json(&s, &["get", "deploy", "web"])["metadata"]["annotations"]
        ["deployment.kubernetes.io/revision"]
        .clone();
    assert_eq!(revision, "1");

    // Scaling the new Deployment goes through the adopted set.
    s.ok(&["scale", "deploy/web", "--replicas=3"]);
    let pods_after = wait_for_pods(&s, "app=web", 3);
    assert!(
        pods_after
            .iter()
            .all(|(_, o)| o.as_deref() == Some(rs_name.as_str()))
    );
}

#[test]
fn deployments_roll_out_roll_back_pause_and_resume() {
    let s = ApiServer::start();
    s.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.25",
        "--replicas=3",
    ]);
    s.ok(&[
        "annotate",
        "deploy/web",
        "kubernetes.io/change-cause=first release",
    ]);
    let _kubelets = FakeKubelets::start(&s, "app=web");
    let done = s.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    assert!(
        done.contains("deployment \"web\" successfully rolled out"),
        "{done}"
    );

    let rs1 = replica_sets(&s);
    assert_eq!(rs1.len(), 1);
    let rs1_name = rs1[0]["metadata"]["name"].as_str().unwrap().to_owned();
    let hash = rs1[0]["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(rs1_name, format!("web-{hash}"));
    assert_eq!(
        rs1[0]["spec"]["selector"]["matchLabels"]["pod-template-hash"],
        hash.as_str()
    );
    assert_eq!(
        rs1[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    assert_eq!(
        rs1[0]["metadata"]["annotations"]["kubernetes.io/change-cause"],
        "first release"
    );
    for (pod, owner) in pods(&s, "app=web") {
        assert!(pod.starts_with(&format!("{rs1_name}-")), "{pod}");
        assert_eq!(owner.as_deref(), Some(rs1_name.as_str()));
    }
    let d = json(&s, &["get", "deploy", "web"]);
    let cond = |d: &Value, t: &str| {
        d["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .cloned()
            .unwrap()
    };
    assert_eq!(cond(&d, "Available")["reason"], "MinimumReplicasAvailable");
    assert_eq!(cond(&d, "Progressing")["reason"], "NewReplicaSetAvailable");
    assert_eq!(d["status"]["availableReplicas"], 3);
    assert_eq!(
        d["status"]["observedGeneration"],
        d["metadata"]["generation"]
    );
    assert_eq!(
        rows(&s.ok(&["get", "deploy", "web"]))[1][1..4],
        ["3/3", "3", "3"]
    );

    // A new image: a second ReplicaSet, the old one scaled down one pod at
    // a time (maxSurge 25% → 1, maxUnavailable 25% → 0 of 3).
    s.ok(&["set", "image", "deploy/web", "nginx=nginx:1.26"]);
    s.ok(&[
        "annotate",
        "deploy/web",
        "kubernetes.io/change-cause=upgrade to 1.26",
        "--overwrite",
    ]);
    let done = s.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    assert!(done.contains("successfully rolled out"), "{done}");
    let rss = replica_sets(&s);
    assert_eq!(rss.len(), 2);
    let rs2 = rss.iter().find(|r| image_of(r) == "nginx:1.26").unwrap();
    let rs2_name = rs2["metadata"]["name"].as_str().unwrap().to_owned();
    assert_eq!(rs2["spec"]["replicas"], 3);
    assert_eq!(
        rs2["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let old = rss
        .iter()
        .find(|r| r["metadata"]["name"] == rs1_name.as_str())
        .unwrap();
    assert_eq!(old["spec"]["replicas"], 0);
    let events = s.ok(&[
        "get",
        "events",
        "--field-selector=involvedObject.kind=Deployment",
        "-o",
        "custom-columns=MSG:.message",
    ]);
    assert!(
        events.contains(&format!("Scaled up replica set {rs2_name} from 0 to 1")),
        "{events}"
    );
    assert!(
        events.contains(&format!("Scaled down replica set {rs1_name} from 3 to 2")),
        "{events}"
    );
    assert!(
        !events.contains(&format!("Scaled down replica set {rs1_name} from 3 to 1")),
        "{events}"
    );
    assert!(
        pods(&s, "app=web")
            .iter()
            .all(|(_, o)| o.as_deref() == Some(rs2_name.as_str()))
    );

    // History lists both revisions with their change causes.
    let history = s.ok(&["rollout", "history", "deploy/web"]);
    assert!(history.contains("1         first release"), "{history}");
    assert!(history.contains("2         upgrade to 1.26"), "{history}");

    // Undo goes back to the first template, as revision 3.
    s.ok(&["rollout", "undo", "deploy/web"]);
    s.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    let d = json(&s, &["get", "deploy", "web"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.25"
    );
    let back = replica_sets(&s)
        .into_iter()
        .find(|r| r["metadata"]["name"] == rs1_name.as_str())
        .unwrap();
    assert_eq!(back["spec"]["replicas"], 3);
    assert_eq!(
        back["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(
        back["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"],
        "1"
    );
    s.ok(&["rollout", "undo", "deploy/web", "--to-revision=2"]);
    s.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    assert_eq!(
        json(&s, &["get", "deploy", "web"])["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.26"
    );

    // Paused, a template change makes no ReplicaSet; resumed, it does.
    s.ok(&["rollout", "pause", "deploy/web"]);
    let paused = eventually("the DeploymentPaused condition", || {
        let d = json(&s, &["get", "deploy", "web"]);
        (cond(&d, "Progressing")["reason"] == "DeploymentPaused").then_some(d)
    });
    assert_eq!(cond(&paused, "Progressing")["status"], "Unknown");
    s.ok(&["set", "image", "deploy/web", "nginx=nginx:1.27"]);
    let err = s.fails(&["rollout", "undo", "deploy/web"]);
    assert!(
        err.contains("you cannot rollback a paused deployment"),
        "{err}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(replica_sets(&s).iter().all(|r| image_of(r) != "nginx:1.27"));
    s.ok(&["rollout", "resume", "deploy/web"]);
    s.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    assert!(
        replica_sets(&s)
            .iter()
            .any(|r| image_of(r) == "nginx:1.27" && r["spec"]["replicas"] == 3)
    );

    // Restart: a new ReplicaSet for the same image.
    let before = replica_sets(&s).len();
    s.ok(&["rollout", "restart", "deploy/web"]);
    s.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    assert_eq!(replica_sets(&s).len(), before + 1);

    // Scaling keeps the revision and sizes the one active set.
    s.ok(&["scale", "deploy/web", "--replicas=5"]);
    s.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    wait_for_pods(&s, "app=web", 5);
}

#[test]
fn python_client_creates_reads_and_scales_a_deployment() {
    let s = ApiServer::start();
    s.run_python_client("deployments.py", "python deployments: OK");
}

/// The condition `t` of an object's status.
fn condition(obj: &Value, t: &str) -> Option<Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)
        .cloned()
}

#[test]
fn kubectl_edit_changes_a_deployment_and_refuses_an_invalid_edit() {
    let s = ApiServer::start();
    s.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.25",
        "--replicas=2",
    ]);
    let _kubelets = FakeKubelets::start(&s, "app=web");
    s.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    let first = replica_sets(&s)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();

    // kubectl runs $EDITOR on a temporary copy, then sends the difference
    // as a strategic merge patch (field manager `kubectl-edit`).
    let edit = |script: &str| kubectl_edit(&s, "deployment/web", script);
    let out =
        edit("sed -i -e 's/image: nginx:1.25/image: nginx:1.26/' -e 's/replicas: 2/replicas: 3/'");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("deployment.apps/web edited"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().any(|l| l.contains("verb=\"PATCH\"")
            && l.contains(
                "/apis/apps/v1/namespaces/default/deployments/web?fieldManager=kubectl-edit"
            )
            && l.contains("status=\"200 OK\"")),
        "the edit arrives as kubectl-edit's patch: {stderr}"
    );
    let done = s.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    assert!(done.contains("successfully rolled out"), "{done}");
    let d = json(&s, &["get", "deploy", "web"]);
    assert_eq!(d["metadata"]["generation"], 2);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let rss = replica_sets(&s);
    let new = rss.iter().find(|r| image_of(r) == "nginx:1.26").unwrap();
    assert_eq!(new["spec"]["replicas"], 3);
    let old = rss
        .iter()
        .find(|r| r["metadata"]["name"] == first.as_str())
        .unwrap();
    assert_eq!(old["spec"]["replicas"], 0);
    let new_name = new["metadata"]["name"].as_str().unwrap();
    let running = wait_for_pods(&s, "app=web", 3);
    assert!(running.iter().all(|(_, o)| o.as_deref() == Some(new_name)));

    // An edit the API refuses (a selector that no longer selects the
    // template) changes nothing: kubectl names the error and keeps a copy.
    let out = edit("sed -i -e '/matchLabels:/{n;s/app: web/app: other/}'");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("deployments.apps \"web\" is invalid")
            || stderr.contains("Edit cancelled, no valid changes were saved"),
        "{stderr}"
    );
    assert!(
        stderr.contains("A copy of your changes has been stored to"),
        "{stderr}"
    );
    let copy = stderr
        .split("A copy of your changes has been stored to \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the path of the kept copy");
    let copy = std::fs::read_to_string(copy).unwrap();
    assert!(copy.contains("app: other"), "{copy}");
    assert!(
        copy.contains("# deployments.apps \"web\" was not valid:")
            && copy.contains("`selector` does not match template `labels`"),
        "the reopened file names the refusal: {copy}"
    );
    let d = json(&s, &["get", "deploy", "web"]);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
    assert_eq!(d["metadata"]["generation"], 2);
}

/// Runs `kubectl get pods -l SELECTOR --watch --output-watch-events -o json`
/// until dropped; [`PodWatch::events`] parses what it printed.
struct PodWatch {
    child: std::process::Child,
    out: std::path::PathBuf,
}

impl PodWatch {
    fn start(s: &ApiServer, selector: &str) -> Self {
        let out = s.dir.path().join("pod-watch.json");
        let child = s
            .kubectl_cmd(&[
                "get",
                "pods",
                "-l",
                selector,
                "--watch",
                "--output-watch-events",
                "-o",
                "json",
            ])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Self { child, out }
    }

    /// (event type, pod name, controlling ReplicaSet) in the order the
    /// watch delivered them.
    fn events(&self) -> Vec<(String, String, String)> {
        let text = std::fs::read_to_string(&self.out).unwrap();
        serde_json::Deserializer::from_str(&text)
            .into_iter::<Value>()
            .map_while(Result::ok)
            .map(|e| {
                let o = &e["object"];
                let owner = controller(o).map(|c| c.1).unwrap_or_default();
                (
                    e["type"].as_str().unwrap_or_default().to_owned(),
                    o["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    owner,
                )
            })
            .collect()
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn recreate_removes_every_old_pod_before_creating_a_new_one() {
    let s = ApiServer::start();
    s.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.25",
        "--replicas=3",
    ]);
    s.ok(&[
        "patch",
        "deploy/web",
        "--type=merge",
        "-p",
        r#"{"spec":{"strategy":{"type":"Recreate","rollingUpdate":null}}}"#,
    ]);
    let _kubelets = FakeKubelets::start(&s, "app=web");
    s.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    let old_rs = replica_sets(&s)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    // A finalizer holds each old pod in Terminating, as a slow kubelet
    // would: nothing new may start meanwhile.
    let old_pods = wait_for_pods(&s, "app=web", 3);
    for (name, _) in &old_pods {
        s.ok(&[
            "patch",
            "pod",
            name,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":["kubelab.test/hold"]}}"#,
        ]);
    }
    let watch = PodWatch::start(&s, "app=web");
    s.ok(&["set", "image", "deploy/web", "nginx=nginx:1.26"]);
    eventually("the old pods terminating", || {
        let list = json(&s, &["get", "pods", "-l", "app=web"]);
        let items = list["items"].as_array().unwrap().clone();
        (items.len() == 3
            && items
                .iter()
                .all(|p| !p["metadata"]["deletionTimestamp"].is_null()))
        .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let d = json(&s, &["get", "deploy", "web"]);
    assert_eq!(
        replica_sets(&s).len(),
        1,
        "no new ReplicaSet while old pods terminate: {d}"
    );
    assert_eq!(pods(&s, "app=web").len(), 3);

    // Released, the old pods go and the new ReplicaSet comes at full size.
    for (name, _) in &old_pods {
        s.ok(&[
            "patch",
            "pod",
            name,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ]);
    }
    let done = s.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    assert!(done.contains("successfully rolled out"), "{done}");
    let new_rs = replica_sets(&s)
        .into_iter()
        .find(|r| image_of(r) == "nginx:1.26")
        .unwrap();
    let new_rs = new_rs["metadata"]["name"].as_str().unwrap().to_owned();
    eventually("3 new pods watched", || {
        let added = watch
            .events()
            .iter()
            .filter(|(t, _, o)| t == "ADDED" && *o == new_rs)
            .count();
        (added == 3).then_some(())
    });
    let events = watch.events();
    let first_new = events
        .iter()
        .position(|(t, _, o)| t == "ADDED" && *o == new_rs)
        .unwrap();
    for (old, _) in &old_pods {
        let gone = events
            .iter()
            .position(|(t, n, _)| t == "DELETED" && n == old)
            .unwrap_or_else(|| panic!("{old} deleted: {events:?}"));
        assert!(
            gone < first_new,
            "{old} gone before any new pod: {events:?}"
        );
    }
    let scaled = s.ok(&[
        "get",
        "events",
        "--field-selector=involvedObject.kind=Deployment",
        "-o",
        "custom-columns=MSG:.message",
    ]);
    assert!(
        scaled.contains(&format!("Scaled down replica set {old_rs} from 3 to 0"))
            && scaled.contains(&format!("Scaled up replica set {new_rs} from 0 to 3")),
        "{scaled}"
    );
}

#[test]
fn a_rollout_whose_pods_never_become_ready_exceeds_its_progress_deadline() {
    let s = ApiServer::start();
    s.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.25",
        "--replicas=2",
    ]);
    s.ok(&[
        "patch",
        "deploy/web",
        "--type=merge",
        "-p",
        r#"{"spec":{"progressDeadlineSeconds":3}}"#,
    ]);
    // No kubelet: the pods stay Pending, never Ready.
    wait_for_pods(&s, "app=web", 2);
    let out = s.kubectl(&["rollout", "status", "deploy/web", "--timeout=90s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("error: deployment \"web\" exceeded its progress deadline"),
        "{stderr}"
    );
    let d = json(&s, &["get", "deploy", "web"]);
    let progressing = condition(&d, "Progressing").unwrap();
    assert_eq!(progressing["status"], "False");
    assert_eq!(progressing["reason"], "ProgressDeadlineExceeded");
    let rs = replica_sets(&s)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        progressing["message"],
        format!("ReplicaSet \"{rs}\" has timed out progressing.")
    );
    let available = condition(&d, "Available").unwrap();
    assert_eq!(available["status"], "False");
    assert_eq!(available["reason"], "MinimumReplicasUnavailable");

    // Pods that come up late still complete the rollout: the condition
    // turns back (until then, rollout status keeps failing, as on Kubernetes).
    let _kubelets = FakeKubelets::start(&s, "app=web");
    let d = eventually("Progressing back to True", || {
        let d = json(&s, &["get", "deploy", "web"]);
        (condition(&d, "Progressing")?["reason"] == "NewReplicaSetAvailable").then_some(d)
    });
    assert_eq!(condition(&d, "Progressing").unwrap()["status"], "True");
    assert_eq!(condition(&d, "Available").unwrap()["status"], "True");
    let done = s.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    assert!(done.contains("successfully rolled out"), "{done}");
}

#[test]
fn min_ready_seconds_holds_pods_back_from_available() {
    const MIN_READY: i64 = 10;
    let s = ApiServer::start();
    s.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.25",
        "--replicas=2",
    ]);
    s.ok(&[
        "patch",
        "deploy/web",
        "--type=merge",
        "-p",
        &format!(r#"{{"spec":{{"minReadySeconds":{MIN_READY}}}}}"#),
    ]);
    let pods = wait_for_pods(&s, "app=web", 2);
    // The Deployment hands the setting to its ReplicaSet, which counts.
    eventually("minReadySeconds on the ReplicaSet", || {
        let rs = replica_sets(&s).pop()?;
        (rs["spec"]["minReadySeconds"] == MIN_READY).then_some(())
    });
    for (name, _) in &pods {
        make_ready(&s, name);
    }
    // The Ready conditions' time, as the controllers read it.
    let ready_at = pods
        .iter()
        .map(|(name, _)| {
            let p = json(&s, &["get", "pod", name]);
            let t = condition(&p, "Ready").unwrap()["lastTransitionTime"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .unwrap();
            t.as_second()
        })
        .max()
        .unwrap();
    let now = || jiff::Timestamp::now().as_second();
    let (d, rs) = eventually("2 ready replicas", || {
        let d = json(&s, &["get", "deploy", "web"]);
        let rs = replica_sets(&s).pop()?;
        (d["status"]["readyReplicas"] == 2 && rs["status"]["readyReplicas"] == 2).then_some((d, rs))
    });
    assert!(
        now() < ready_at + MIN_READY,
        "the machine is too slow to see the ready-not-available window"
    );
    assert_eq!(
        d["status"]["availableReplicas"].as_i64().unwrap_or(0),
        0,
        "{d}"
    );
    assert_eq!(
        rs["status"]["availableReplicas"].as_i64().unwrap_or(0),
        0,
        "{rs}"
    );
    assert_eq!(condition(&d, "Available").unwrap()["status"], "False");
    assert_eq!(
        rows(&s.ok(&["get", "deploy", "web"]))[1][1..4],
        ["2/2", "2", "0"]
    );

    // minReadySeconds later, both are available; not before.
    let d = eventually("2 available replicas", || {
        let d = json(&s, &["get", "deploy", "web"]);
        (d["status"]["availableReplicas"] == 2).then_some(d)
    });
    assert!(now() >= ready_at + MIN_READY, "available too early: {d}");
    assert_eq!(condition(&d, "Available").unwrap()["status"], "True");
    let rs = replica_sets(&s).pop().unwrap();
    assert_eq!(rs["status"]["availableReplicas"], 2);
    s.ok(&["rollout", "status", "deploy/web", "--timeout=10s"]);
}

#[test]
fn an_hpa_is_served_as_autoscaling_v1_and_v2() {
    // No HPA controller: the status written here is the only one.
    let s = ApiServer::start_with(&["--controllers", "*,-horizontal-pod-autoscaler-controller"]);
    let all: Value = serde_json::from_str(&s.ok(&["get", "--raw", "/apis"])).unwrap();
    let groups = all["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "autoscaling")
        .unwrap()
        .clone();
    assert_eq!(groups["preferredVersion"]["version"], "v2", "{groups}");
    let versions: Vec<&str> = groups["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["v2", "v1"]);

    s.ok(&["create", "deployment", "web", "--image=nginx:1.25"]);
    assert_eq!(
        s.ok(&[
            "autoscale",
            "deployment",
            "web",
            "--cpu-percent=50",
            "--min=1",
            "--max=5"
        ])
        .trim(),
        "horizontalpodautoscaler.autoscaling/web autoscaled"
    );
    assert_eq!(
        s.ok(&[
            "get",
            "horizontalpodautoscalers.v1.autoscaling",
            "web",
            "-o",
            "jsonpath={.apiVersion} {.spec.targetCPUUtilizationPercentage} {.spec.maxReplicas}"
        ]),
        "autoscaling/v1 50 5"
    );
    let table = rows(&s.ok(&["get", "horizontalpodautoscalers.v1.autoscaling"]));
    assert_eq!(
        table[0],
        [
            "NAME",
            "REFERENCE",
            "TARGETS",
            "MINPODS",
            "MAXPODS",
            "REPLICAS",
            "AGE"
        ]
    );
    assert_eq!(
        &table[1][..7],
        [
            "web",
            "Deployment/web",
            "cpu:",
            "<unknown>/50%",
            "1",
            "5",
            "0"
        ]
    );

    // A status written as the controller writes it (v2) reads back as v1's
    // current utilization.
    s.ok(&[
        "patch",
        "horizontalpodautoscalers.v2.autoscaling",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"currentReplicas":2,"desiredReplicas":3,"currentMetrics":[{"type":"Resource","resource":{"name":"cpu","current":{"averageUtilization":138,"averageValue":"276m"}}}]}}"#,
    ]);
    assert_eq!(
        s.ok(&[
            "get",
            "horizontalpodautoscalers.v1.autoscaling",
            "web",
            "-o",
            "jsonpath={.status.currentCPUUtilizationPercentage} {.status.currentReplicas}"
        ]),
        "138 2"
    );
    assert_eq!(
        s.ok(&[
            "get",
            "horizontalpodautoscalers.v2.autoscaling",
            "web",
            "-o",
            "jsonpath={.status.currentMetrics[0].resource.current.averageValue}"
        ]),
        "276m"
    );
    // A v1 edit of the target keeps the v2 status reading.
    s.ok(&[
        "patch",
        "horizontalpodautoscalers.v1.autoscaling",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"targetCPUUtilizationPercentage":60}}"#,
    ]);
    assert_eq!(
        s.ok(&["get", "horizontalpodautoscalers.v2.autoscaling", "web", "-o", "jsonpath={.spec.metrics[0].resource.target.averageUtilization} {.status.currentMetrics[0].resource.current.averageValue}"]),
        "60 276m"
    );

    s.run_python_client("autoscaling_v1.py", "python autoscaling/v1: OK");
}

/// The pod the kubelet stand-in reports usage for (100m CPU in container
/// `nginx`), requesting 200m there and ready since long ago.
const WEB_POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  nodeName: node1
  containers:
  - name: nginx
    image: nginx:1.25
    resources:
      requests: {cpu: 200m}
";

const AUTOSCALERS: &str = "apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: web
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 5
  metrics:
  - type: Resource
    resource:
      name: cpu
      target: {type: AverageValue, averageValue: 200m}
  - type: ContainerResource
    containerResource:
      name: cpu
      container: nginx
      target: {type: Utilization, averageUtilization: 50}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: queue
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: queue}
  maxReplicas: 5
  metrics:
  - type: Pods
    pods:
      metric: {name: packets-per-second}
      target: {type: AverageValue, averageValue: 1k}
  - type: External
    external:
      metric:
        name: queue_messages_ready
        selector: {matchLabels: {queue: worker_tasks}}
      target: {type: AverageValue, averageValue: \"30\"}
";

#[test]
fn an_hpa_scales_on_average_values_and_container_usage_and_says_which_metrics_it_cannot_read() {
    // No Deployment or ReplicaSet controllers: the pod made here is the
    // only one the target selects.
    let s = ApiServer::start_with(&[
        "--controllers",
        "*,-deployment-controller,-replicaset-controller",
    ]);
    let ca = std::fs::read_to_string(s.data_dir().join("ca.crt")).unwrap();
    let node = common::fake_node::FakeNode::start("node1", &ca);
    s.ok(&[
        "create",
        "-f",
        &s.file("node.yaml", &node.node_yaml("node1")),
    ]);
    s.ok(&["create", "deployment", "web", "--image=nginx:1.25"]);
    s.ok(&["create", "deployment", "queue", "--image=nginx:1.25"]);
    s.ok(&["create", "-f", &s.file("web.yaml", WEB_POD)]);
    let long_ago = "2020-01-01T00:00:00Z";
    let status = serde_json::json!({"status": {"phase": "Running", "startTime": long_ago,
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": long_ago}]}});
    s.ok(&[
        "patch",
        "pod",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
    s.ok(&["create", "-f", &s.file("hpa.yaml", AUTOSCALERS)]);

    // 100m a pod against 200m, 50% of the container's request against 50%.
    let web = eventually("the web autoscaler's metrics", || {
        let hpa = json(&s, &["get", "hpa", "web"]);
        (hpa["status"]["currentMetrics"][1]["containerResource"]["current"]["averageUtilization"]
            == 50)
            .then_some(hpa)
    });
    let current = &web["status"]["currentMetrics"];
    assert_eq!(current[0]["type"], "Resource");
    assert_eq!(current[0]["resource"]["current"]["averageValue"], "100m");
    assert!(current[0]["resource"]["current"]["averageUtilization"].is_null());
    assert_eq!(current[1]["containerResource"]["container"], "nginx");
    assert_eq!(web["status"]["desiredReplicas"], 1);
    let active = condition(&web, "ScalingActive").unwrap();
    assert_eq!(active["status"], "True");
    assert_eq!(active["reason"], "ValidMetricFound");
    let table = rows(&s.ok(&["get", "hpa"]));
    assert_eq!(table[0][..3], ["NAME", "REFERENCE", "TARGETS"]);
    let web_row = table.iter().find(|r| r[0] == "web").unwrap();
    // `cpu: 100m/200m, cpu: 50%/50%`, split at blanks.
    assert_eq!(
        web_row[2..6],
        ["cpu:", "100m/200m,", "cpu:", "50%/50%"],
        "{table:?}"
    );

    // Pods and External metrics need metrics APIs nobody serves here: the
    // autoscaler says so in its condition and events and does not scale.
    let queue = eventually("the queue autoscaler's ScalingActive condition", || {
        let hpa = json(&s, &["get", "hpa", "queue"]);
        condition(&hpa, "ScalingActive").map(|c| (hpa, c))
    });
    let (queue, active) = queue;
    assert_eq!(active["status"], "False");
    assert_eq!(active["reason"], "FailedGetPodsMetric");
    assert_eq!(
        active["message"],
        "the HPA was unable to compute the replica count: unable to get metric packets-per-second: unable to fetch metrics from custom metrics API: no custom metrics API (custom.metrics.k8s.io) registered"
    );
    assert!(queue["status"]["lastScaleTime"].is_null());
    let queue_row = table_row(&s, "queue");
    assert_eq!(
        queue_row[2..4],
        ["<unknown>/1k,", "<unknown>/30"],
        "{queue_row:?}"
    );
    let events = eventually("the queue autoscaler's events", || {
        let out = s.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=queue,involvedObject.kind=HorizontalPodAutoscaler",
            "-o",
            "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}",
        ]);
        [
            "FailedGetPodsMetric",
            "FailedGetExternalMetric",
            "FailedComputeMetricsReplicas",
        ]
        .iter()
        .all(|r| out.lines().any(|l| l == *r))
        .then_some(out)
    });
    assert!(!events.contains("SuccessfulRescale"), "{events}");
    let said = s.ok(&["describe", "hpa", "queue"]);
    assert!(
        said.contains("invalid metrics (2 invalid out of 2), first error is: failed to get pods metric value: unable to get metric packets-per-second"),
        "{said}"
    );
}

fn table_row(s: &ApiServer, name: &str) -> Vec<String> {
    rows(&s.ok(&["get", "hpa"]))
        .into_iter()
        .find(|r| r[0] == name)
        .unwrap()
}
