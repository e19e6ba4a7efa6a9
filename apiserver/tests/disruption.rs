//! PodDisruptionBudgets through the real kubectl: `kubectl create pdb`,
//! the disruption controller's status and `kubectl get pdb` columns, the
//! `pods/eviction` subresource refusing with 429 while a budget has no
//! disruption left, and `kubectl drain` evicting a Deployment's pods one
//! at a time as replacements become ready elsewhere, and a StatefulSet's
//! pods one at a time as each comes back under its own name on the other
//! node. Node objects stand
//! in for nodes; the test plays the kubelets (marks bound pods Ready,
//! removes pods once they are terminating).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{ApiServer, rows};
use serde_json::Value;

const WEB: &str = "apiVersion: apps/v1
kind: Deployment
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
      terminationGracePeriodSeconds: 1
      containers:
      - name: nginx
        image: nginx:1.25
";

fn node_yaml(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    kubernetes.io/hostname: {name}\nstatus:\n  conditions:\n  - type: Ready\n    status: \"True\"\n    reason: KubeletReady\n    message: kubelet is posting ready status\n  capacity: {{cpu: \"4\", memory: 8Gi, pods: \"110\"}}\n  allocatable: {{cpu: \"4\", memory: 8Gi, pods: \"110\"}}\n"
    )
}

fn json(s: &ApiServer, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&s.ok(&a)).unwrap()
}

fn wait_for<T>(s: &ApiServer, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}\n{}", s.log());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn is_ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Plays the kubelets for the pods labelled `app=<app>`: bound pods
/// become Running and Ready, terminating pods are removed; it also records
/// the fewest ready, not-terminating ones it ever saw.
struct FakeKubelets {
    stop: Arc<AtomicBool>,
    fewest_ready: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeKubelets {
    fn start(s: &ApiServer, app: &str) -> Self {
        let selector = format!("app={app}");
        let stop = Arc::new(AtomicBool::new(false));
        let fewest_ready = Arc::new(AtomicUsize::new(usize::MAX));
        let kubectl = {
            let (kubeconfig, home) = (s.kubeconfig(), s.dir.path().to_owned());
            move |args: &[&str]| {
                std::process::Command::new("/usr/bin/kubectl")
                    .env("KUBECONFIG", &kubeconfig)
                    .env("HOME", &home)
                    .args(args)
                    .output()
                    .unwrap()
            }
        };
        let (flag, fewest) = (stop.clone(), fewest_ready.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let out = kubectl(&["get", "pods", "-l", &selector, "-o", "json"]);
                let list: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                let pods = list["items"].as_array().cloned().unwrap_or_default();
                let ready = pods
                    .iter()
                    .filter(|p| is_ready(p) && p["metadata"]["deletionTimestamp"].is_null())
                    .count();
                if !pods.is_empty() {
                    fewest.fetch_min(ready, Ordering::Relaxed);
                }
                for p in &pods {
                    let name = p["metadata"]["name"].as_str().unwrap_or_default();
                    if !p["metadata"]["deletionTimestamp"].is_null() {
                        kubectl(&["delete", "pod", name, "--grace-period=0", "--force"]);
                    } else if !p["spec"]["nodeName"].is_null() && !is_ready(p) {
                        let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
                            .unwrap();
                        let patch = serde_json::json!({"status": {"phase": "Running", "conditions": [
                            {"type": "Ready", "status": "True", "lastTransitionTime": now.to_string()}]}});
                        kubectl(&[
                            "patch",
                            "pod",
                            name,
                            "--subresource=status",
                            "--type=merge",
                            "-p",
                            &patch.to_string(),
                        ]);
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Self {
            stop,
            fewest_ready,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeKubelets {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pdb_status(s: &ApiServer) -> Value {
    json(s, &["get", "pdb", "web"])["status"].clone()
}

/// Two Ready nodes, `node-b` cordoned so that what is applied next starts
/// on `node-a`.
fn two_nodes_first_a(s: &ApiServer) {
    for n in ["node-a", "node-b"] {
        let out = s.kubectl_stdin(&["create", "-f", "-"], &node_yaml(n));
        assert!(out.status.success(), "{out:?}");
    }
    s.ok(&["cordon", "node-b"]);
}

/// Waits for the three `app=<app>` pods to be ready on `node-a`.
fn three_ready_on_node_a(s: &ApiServer, app: &str) {
    let selector = format!("app={app}");
    wait_for(
        s,
        &format!("three ready {selector} pods on node-a"),
        60,
        || {
            let pods = json(s, &["get", "pods", "-l", &selector]);
            let items = pods["items"].as_array()?;
            (items.len() == 3
                && items
                    .iter()
                    .all(|p| is_ready(p) && p["spec"]["nodeName"] == "node-a"))
            .then_some(())
        },
    );
}

/// `kubectl drain node-a`: what it said, asserting it succeeded.
fn drain_node_a(s: &ApiServer) -> String {
    let out = s.kubectl(&["drain", "node-a", "--ignore-daemonsets", "--timeout=180s"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubectl drain: {said}\n{}", s.log());
    said
}

#[test]
fn drain_evicts_a_budgeted_deployment_one_pod_at_a_time() {
    let s = ApiServer::start_with(&["--node-monitor-grace-period", "1h"]);
    // All three replicas start on node-a.
    two_nodes_first_a(&s);
    let out = s.kubectl_stdin(&["apply", "-f", "-"], WEB);
    assert!(out.status.success(), "{out:?}");
    let kubelets = FakeKubelets::start(&s, "web");
    three_ready_on_node_a(&s, "web");
    s.ok(&["uncordon", "node-b"]);

    assert_eq!(
        s.ok(&[
            "create",
            "pdb",
            "web",
            "--selector=app=web",
            "--min-available=2"
        ])
        .trim(),
        "poddisruptionbudget.policy/web created"
    );
    let status = wait_for(&s, "the budget's status", 30, || {
        let st = pdb_status(&s);
        (st["disruptionsAllowed"] == 1).then_some(st)
    });
    assert_eq!(status["currentHealthy"], 3);
    assert_eq!(status["desiredHealthy"], 2);
    assert_eq!(status["expectedPods"], 3);
    assert_eq!(status["observedGeneration"], 1);
    let cond = &status["conditions"][0];
    assert_eq!(
        (&cond["type"], &cond["status"], &cond["reason"]),
        (
            &"DisruptionAllowed".into(),
            &"True".into(),
            &"SufficientPods".into()
        )
    );
    let table = rows(&s.ok(&["get", "pdb"]));
    assert_eq!(
        table[0],
        [
            "NAME",
            "MIN",
            "AVAILABLE",
            "MAX",
            "UNAVAILABLE",
            "ALLOWED",
            "DISRUPTIONS",
            "AGE"
        ]
    );
    assert_eq!(table[1][..4], ["web", "2", "N/A", "1"]);

    // Count from here: the pods were all ready a moment ago.
    std::thread::sleep(Duration::from_secs(1));
    kubelets.fewest_ready.store(usize::MAX, Ordering::Relaxed);
    let said = drain_node_a(&s);
    assert!(
        said.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "drain met the budget: {said}"
    );
    assert!(said.contains("(will retry after 5s)"), "{said}");
    assert_eq!(said.matches("evicted").count(), 3, "{said}");
    assert!(said.contains("node/node-a drained"), "{said}");
    // Never fewer than minAvailable ready pods on the way.
    assert!(
        kubelets.fewest_ready.load(Ordering::Relaxed) >= 2,
        "ready pods fell to {}",
        kubelets.fewest_ready.load(Ordering::Relaxed)
    );
    let pods = json(&s, &["get", "pods", "-l", "app=web"]);
    let nodes: Vec<&str> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    assert!(nodes.iter().all(|n| *n == "node-b"), "{nodes:?}");

    // A budget with nothing left answers an eviction with 429 and the
    // DisruptionBudget cause, as kube-apiserver does.
    s.ok(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minAvailable":3}}"#,
    ]);
    wait_for(&s, "no disruption allowed", 30, || {
        let st = pdb_status(&s);
        (st["observedGeneration"] == 2 && st["disruptionsAllowed"] == 0).then_some(())
    });
    let victim = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["metadata"]["deletionTimestamp"].is_null())
        .and_then(|p| p["metadata"]["name"].as_str())
        .unwrap()
        .to_owned();
    let body = format!(
        r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{victim}","namespace":"default"}}}}"#
    );
    let (code, answer) = s.curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        &body,
        &format!(
            "{}/api/v1/namespaces/default/pods/{victim}/eviction",
            s.url()
        ),
    ]);
    assert_eq!(code, 429, "{answer}");
    let status: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(
        status["message"],
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(status["details"]["causes"][0]["reason"], "DisruptionBudget");
    assert_eq!(
        status["details"]["causes"][0]["message"],
        "The disruption budget web needs 3 healthy pods and has 3 currently"
    );
    drop(kubelets);
}

const DB: &str = "apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  replicas: 3
  selector:
    matchLabels:
      app: db
  template:
    metadata:
      labels:
        app: db
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: db
        image: busybox
";

#[test]
fn drain_waits_for_a_budgeted_stateful_set_to_come_back_elsewhere() {
    let s = ApiServer::start_with(&["--node-monitor-grace-period", "1h"]);
    two_nodes_first_a(&s);
    let out = s.kubectl_stdin(&["apply", "-f", "-"], DB);
    assert!(out.status.success(), "{out:?}");
    let kubelets = FakeKubelets::start(&s, "db");
    three_ready_on_node_a(&s, "db");
    s.ok(&["uncordon", "node-b"]);
    s.ok(&[
        "create",
        "pdb",
        "db",
        "--selector=app=db",
        "--max-unavailable=1",
    ]);
    wait_for(&s, "one disruption allowed", 30, || {
        let st = json(&s, &["get", "pdb", "db"])["status"].clone();
        (st["disruptionsAllowed"] == 1 && st["expectedPods"] == 3).then_some(())
    });

    // Count from here: the pods were all ready a moment ago.
    std::thread::sleep(Duration::from_secs(1));
    kubelets.fewest_ready.store(usize::MAX, Ordering::Relaxed);
    let said = drain_node_a(&s);
    assert!(
        said.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "drain met the budget: {said}"
    );
    for pod in ["db-0", "db-1", "db-2"] {
        assert!(said.contains(&format!("pod/{pod} evicted")), "{said}");
    }
    assert!(said.contains("node/node-a drained"), "{said}");
    assert!(
        kubelets.fewest_ready.load(Ordering::Relaxed) >= 2,
        "ready pods fell to {}",
        kubelets.fewest_ready.load(Ordering::Relaxed)
    );
    // The same three names, now on node-b.
    let placed = wait_for(&s, "db-0..2 on node-b", 60, || {
        let pods = json(&s, &["get", "pods", "-l", "app=db"]);
        let mut placed: Vec<(String, String)> = pods["items"]
            .as_array()?
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && is_ready(p))
            .map(|p| {
                (
                    p["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    p["spec"]["nodeName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect();
        placed.sort();
        (placed.len() == 3).then_some(placed)
    });
    assert_eq!(
        placed,
        [("db-0", "node-b"), ("db-1", "node-b"), ("db-2", "node-b")]
            .map(|(p, n)| (p.to_owned(), n.to_owned()))
    );
    drop(kubelets);
}
