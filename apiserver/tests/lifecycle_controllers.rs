//! The lifecycle controllers as a user sees them through the real kubectl:
//! the garbage collector (cascading deletes: background, foreground,
//! orphan), the namespace controller, taint eviction, PodGC and the
//! DaemonSet controller. Nodes are Node objects without agents (no kubelet
//! finishes a graceful pod deletion there, so pods on them are given short
//! grace periods or none at all).

mod common;

use std::time::{Duration, Instant};

use common::{ApiServer, rows};

/// Polls `check` until it returns `Some`, for at most `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn names(s: &ApiServer, args: &[&str]) -> Vec<String> {
    let mut full = vec!["get"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", "jsonpath={.items[*].metadata.name}"]);
    s.ok(&full).split_whitespace().map(str::to_owned).collect()
}

const POD_IN_DEV: &str = "apiVersion: v1
kind: Pod
metadata:
  name: NAME
  namespace: dev
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
";

#[test]
fn a_deleted_namespace_is_terminating_until_its_content_is_gone() {
    let s = ApiServer::start();
    s.ok(&["create", "namespace", "dev"]);
    for name in ["a", "b"] {
        s.kubectl_stdin(&["apply", "-f", "-"], &POD_IN_DEV.replace("NAME", name));
    }
    s.ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "dev",
        "--from-literal=k=v",
    ]);
    // A finalizer of someone else's holds a configmap, and with it the namespace.
    s.ok(&[
        "patch",
        "configmap",
        "settings",
        "-n",
        "dev",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ]);
    assert_eq!(
        s.ok(&["delete", "namespace", "dev", "--wait=false"]).trim(),
        r#"namespace "dev" deleted"#
    );
    let row = rows(&s.ok(&["get", "namespace", "dev", "--no-headers"]));
    assert_eq!(row[0][1], "Terminating");
    let err = s
        .kubectl_stdin(&["apply", "-f", "-"], &POD_IN_DEV.replace("NAME", "late"))
        .stderr;
    assert!(
        String::from_utf8_lossy(&err).contains(
            r#"pods "late" is forbidden: unable to create new content in namespace dev because it is being terminated"#
        ),
        "{}",
        String::from_utf8_lossy(&err)
    );
    // The pods go; the held configmap stays, and the conditions say why.
    wait_for("the pods to go", Duration::from_secs(20), || {
        names(&s, &["pods", "-n", "dev"]).is_empty().then_some(())
    });
    let message = wait_for("the finalizer condition", Duration::from_secs(20), || {
        let m = s.ok(&[
            "get",
            "namespace",
            "dev",
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="NamespaceFinalizersRemaining")].message}"#,
        ]);
        m.contains("example.com/hold").then_some(m)
    });
    assert_eq!(
        message,
        "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
    );
    assert_eq!(
        s.ok(&[
            "get",
            "namespace",
            "dev",
            "-o",
            "jsonpath={.spec.finalizers}"
        ]),
        r#"["kubernetes"]"#
    );
    s.ok(&[
        "patch",
        "configmap",
        "settings",
        "-n",
        "dev",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    s.ok(&["wait", "--for=delete", "namespace/dev", "--timeout=30s"]);
    assert!(
        s.fails(&["get", "ns", "dev"])
            .contains(r#"namespaces "dev" not found"#)
    );
}

#[test]
fn system_namespaces_cannot_be_deleted() {
    let s = ApiServer::start();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let err = s.fails(&["delete", "namespace", ns]);
        assert!(
            err.contains(&format!(
                r#"Error from server (Forbidden): namespaces "{ns}" is forbidden: this namespace may not be deleted"#
            )),
            "{err}"
        );
    }
    assert_eq!(
        rows(&s.ok(&["get", "namespace", "default", "--no-headers"]))[0][1],
        "Active"
    );
}

/// A pod owned by `owner` (kind, name, uid), unscheduled: deleting it is
/// immediate unless a finalizer holds it.
fn owned_pod(name: &str, owner: (&str, &str, &str), finalizers: &[&str]) -> String {
    let (kind, owner_name, uid) = owner;
    let api_version = if kind == "ConfigMap" { "v1" } else { "apps/v1" };
    let finalizers = if finalizers.is_empty() {
        String::new()
    } else {
        format!("  finalizers: [{}]\n", finalizers.join(", "))
    };
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: owned}}
{finalizers}  ownerReferences:
  - {{apiVersion: {api_version}, kind: {kind}, name: {owner_name}, uid: {uid}, controller: true, blockOwnerDeletion: true}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {{name: c, image: busybox}}
"
    )
}

fn uid_of(s: &ApiServer, what: &[&str]) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "jsonpath={.metadata.uid}"]);
    s.ok(&args)
}

fn apply(s: &ApiServer, yaml: &str) {
    let out = s.kubectl_stdin(&["apply", "-f", "-"], yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_collector_cascades_orphans_and_collects_dangling_dependents() {
    let s = ApiServer::start();
    // Background (kubectl's default): the owner goes, then its dependents.
    s.ok(&["create", "configmap", "owner", "--from-literal=k=v"]);
    let uid = uid_of(&s, &["configmap", "owner"]);
    for name in ["a", "b"] {
        apply(&s, &owned_pod(name, ("ConfigMap", "owner", &uid), &[]));
    }
    s.ok(&["delete", "configmap", "owner"]);
    wait_for(
        "the dependents to be collected",
        Duration::from_secs(20),
        || {
            names(&s, &["pods", "-l", "app=owned"])
                .is_empty()
                .then_some(())
        },
    );

    // Orphan: the dependents stay, without the reference.
    s.ok(&["create", "configmap", "owner", "--from-literal=k=v"]);
    let uid = uid_of(&s, &["configmap", "owner"]);
    apply(&s, &owned_pod("c", ("ConfigMap", "owner", &uid), &[]));
    s.ok(&["delete", "configmap", "owner", "--cascade=orphan"]);
    assert!(
        s.fails(&["get", "configmap", "owner"])
            .contains("not found")
    );
    wait_for("the reference to go", Duration::from_secs(20), || {
        let refs = s.ok(&[
            "get",
            "pod",
            "c",
            "-o",
            "jsonpath={.metadata.ownerReferences}",
        ]);
        refs.is_empty().then_some(())
    });
    assert_eq!(names(&s, &["pods", "-l", "app=owned"]), ["c"]);

    // A dependent the collector sees only after the orphaning (its watch
    // event late behind the owner's; here: made while another finalizer
    // still holds the owner) lets go of the owner too, instead of being
    // collected as dangling once the owner is gone.
    s.ok(&["create", "configmap", "held", "--from-literal=k=v"]);
    s.ok(&[
        "patch",
        "configmap",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ]);
    let uid = uid_of(&s, &["configmap", "held"]);
    s.ok(&[
        "delete",
        "configmap",
        "held",
        "--cascade=orphan",
        "--wait=false",
    ]);
    wait_for("the orphaning to finish", Duration::from_secs(20), || {
        let f = s.ok(&[
            "get",
            "configmap",
            "held",
            "-o",
            "jsonpath={.metadata.finalizers}",
        ]);
        (f == r#"["example.com/hold"]"#).then_some(())
    });
    apply(&s, &owned_pod("late", ("ConfigMap", "held", &uid), &[]));
    s.ok(&[
        "patch",
        "configmap",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    wait_for("the late reference to go", Duration::from_secs(20), || {
        let refs = s.ok(&[
            "get",
            "pod",
            "late",
            "-o",
            "jsonpath={.metadata.ownerReferences}",
        ]);
        refs.is_empty().then_some(())
    });
    assert_eq!(names(&s, &["pods", "-l", "app=owned"]), ["c", "late"]);

    // Dangling: a reference to an owner that never existed.
    apply(
        &s,
        &owned_pod(
            "d",
            ("ConfigMap", "ghost", "9b1c5d4e-0000-4000-8000-000000000000"),
            &[],
        ),
    );
    wait_for(
        "the dangling dependent to go",
        Duration::from_secs(20),
        || (names(&s, &["pods", "-l", "app=owned"]) == ["c", "late"]).then_some(()),
    );
}

#[test]
fn a_foreground_deletion_keeps_the_owner_until_blocking_dependents_are_gone() {
    let s = ApiServer::start();
    s.ok(&["create", "configmap", "owner", "--from-literal=k=v"]);
    let uid = uid_of(&s, &["configmap", "owner"]);
    // A finalizer of someone else's holds one dependent once it is deleted.
    apply(
        &s,
        &owned_pod("held", ("ConfigMap", "owner", &uid), &["example.com/hold"]),
    );
    apply(&s, &owned_pod("free", ("ConfigMap", "owner", &uid), &[]));
    s.ok(&[
        "delete",
        "configmap",
        "owner",
        "--cascade=foreground",
        "--wait=false",
    ]);
    let owner_finalizers = s.ok(&[
        "get",
        "configmap",
        "owner",
        "-o",
        "jsonpath={.metadata.finalizers}",
    ]);
    assert_eq!(owner_finalizers, r#"["foregroundDeletion"]"#);
    wait_for(
        "the held dependent to be deleted",
        Duration::from_secs(20),
        || {
            let ts = s.ok(&[
                "get",
                "pod",
                "held",
                "-o",
                "jsonpath={.metadata.deletionTimestamp}",
            ]);
            (!ts.is_empty() && names(&s, &["pods", "-l", "app=owned"]) == ["held"]).then_some(())
        },
    );
    // The owner is still there, waiting.
    assert!(
        !s.ok(&[
            "get",
            "configmap",
            "owner",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}"
        ])
        .is_empty()
    );
    s.ok(&[
        "patch",
        "pod",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    s.ok(&["wait", "--for=delete", "configmap/owner", "--timeout=30s"]);
    assert!(names(&s, &["pods", "-l", "app=owned"]).is_empty());
}

const NODE: &str = "apiVersion: v1
kind: Node
metadata:
  name: NAME
  labels: {kubernetes.io/hostname: NAME, role: worker}
status:
  capacity: {cpu: \"2\", memory: 4Gi, pods: \"110\"}
  allocatable: {cpu: \"2\", memory: 4Gi, pods: \"110\"}
  conditions:
  - {type: Ready, status: \"True\", reason: KubeletReady, message: ready}
";

fn add_node(s: &ApiServer, name: &str) {
    apply(s, &NODE.replace("NAME", name));
}

/// A pod bound to `node` by its spec (no scheduler involved), deleted at
/// once when asked (no kubelet would finish a graceful deletion here).
fn bound_pod(name: &str, node: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
{extra}spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 0
  containers:
  - {{name: c, image: busybox}}
"
    )
}

#[test]
fn a_no_execute_taint_evicts_intolerant_pods_and_tolerant_ones_after_their_time() {
    let s = ApiServer::start();
    add_node(&s, "n1");
    // Held by a finalizer once deleted, so its DisruptionTarget condition shows.
    apply(
        &s,
        &bound_pod("intolerant", "n1", "  finalizers: [example.com/hold]\n"),
    );
    apply(
        &s,
        &bound_pod("tolerant", "n1", "").replace(
            "spec:\n",
            "spec:\n  tolerations:\n  - {key: k, operator: Equal, value: v, effect: NoExecute}\n",
        ),
    );
    apply(
        &s,
        &bound_pod("briefly", "n1", "").replace(
            "spec:\n",
            "spec:\n  tolerations:\n  - {key: k, operator: Exists, effect: NoExecute, tolerationSeconds: 2}\n",
        ),
    );
    s.ok(&["taint", "nodes", "n1", "k=v:NoExecute"]);
    let reason = wait_for(
        "the intolerant pod's eviction",
        Duration::from_secs(20),
        || {
            let r = s.ok(&[
            "get",
            "pod",
            "intolerant",
            "-o",
            r#"jsonpath={.metadata.deletionTimestamp} {.status.conditions[?(@.type=="DisruptionTarget")].reason}"#,
        ]);
            r.split_whitespace().nth(1).map(str::to_owned)
        },
    );
    assert_eq!(reason, "DeletionByTaintManager");
    let events = s.ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=TaintManagerEviction",
    ]);
    assert!(
        events.contains("Marking for deletion Pod default/intolerant"),
        "{events}"
    );
    s.ok(&[
        "patch",
        "pod",
        "intolerant",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    // The pod tolerating the taint for 2 s goes after them; the one
    // tolerating it forever stays.
    wait_for(
        "the briefly tolerant pod to go",
        Duration::from_secs(20),
        || (names(&s, &["pods"]) == ["tolerant"]).then_some(()),
    );
    let events = s.ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=TaintManagerEviction",
    ]);
    assert!(
        events.contains("Marking for deletion Pod default/briefly"),
        "{events}"
    );
    assert!(!events.contains("default/tolerant"), "{events}");
}

#[test]
fn pods_of_a_deleted_node_are_removed() {
    let s = ApiServer::start();
    add_node(&s, "n1");
    add_node(&s, "n2");
    apply(
        &s,
        &bound_pod("on-n1", "n1", "").replace(
            "terminationGracePeriodSeconds: 0",
            "terminationGracePeriodSeconds: 30",
        ),
    );
    apply(
        &s,
        &bound_pod("on-n2", "n2", "").replace(
            "terminationGracePeriodSeconds: 0",
            "terminationGracePeriodSeconds: 30",
        ),
    );
    s.ok(&["delete", "node", "n2"]);
    wait_for(
        "the pod of the deleted node to go",
        Duration::from_secs(20),
        || (names(&s, &["pods"]) == ["on-n1"]).then_some(()),
    );
}

#[test]
fn terminated_pods_beyond_the_threshold_are_collected_oldest_first() {
    // (Created within a second of each other, they go by name: first, second.)
    let s = ApiServer::start_with(&["--terminated-pod-gc-threshold=1"]);
    add_node(&s, "n1");
    for name in ["first", "second", "third"] {
        apply(&s, &bound_pod(name, "n1", ""));
        s.ok(&[
            "patch",
            "pod",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Succeeded"}}"#,
        ]);
    }
    wait_for(
        "two terminated pods collected",
        Duration::from_secs(30),
        || (names(&s, &["pods"]) == ["third"]).then_some(()),
    );
}

const REPLICASET: &str = "apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - {name: c, image: busybox}
";

fn web_pods(s: &ApiServer) -> Vec<String> {
    names(s, &["pods", "-l", "app=web"])
}

#[test]
fn deleting_a_replicaset_cascades_unless_told_to_orphan() {
    let s = ApiServer::start();
    apply(&s, REPLICASET);
    let pods = wait_for("two pods", Duration::from_secs(30), || {
        let p = web_pods(&s);
        (p.len() == 2).then_some(p)
    });
    // --cascade=orphan: the pods stay, no longer owned.
    s.ok(&["delete", "rs", "web", "--cascade=orphan"]);
    wait_for(
        "the owner references to go",
        Duration::from_secs(20),
        || {
            let refs = s.ok(&[
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                "jsonpath={.items[*].metadata.ownerReferences}",
            ]);
            refs.is_empty().then_some(())
        },
    );
    assert_eq!(web_pods(&s), pods);
    assert!(s.fails(&["get", "rs", "web"]).contains("not found"));

    // Recreated, it adopts the orphans; kubectl's default delete
    // (background) then takes them with it.
    apply(&s, REPLICASET);
    wait_for("the orphans adopted", Duration::from_secs(20), || {
        let owners = s.ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].metadata.ownerReferences[0].kind}",
        ]);
        (owners == "ReplicaSet ReplicaSet").then_some(())
    });
    assert_eq!(web_pods(&s), pods, "adopted, not replaced");
    s.ok(&["delete", "rs", "web"]);
    wait_for("the pods to go with it", Duration::from_secs(20), || {
        web_pods(&s).is_empty().then_some(())
    });
}
/// What a kubelet would do for pods on Node objects without one: bound
/// pods are reported Running and Ready, and a pod being deleted is finished
/// off. Runs until dropped.
struct FakeKubelets {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeKubelets {
    fn start(s: &ApiServer) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let kubeconfig = s.kubeconfig();
        let home = s.dir.path().to_owned();
        let thread = std::thread::spawn(move || {
            let kubectl = |args: &[&str]| {
                std::process::Command::new("/usr/bin/kubectl")
                    .env("KUBECONFIG", &kubeconfig)
                    .env("HOME", &home)
                    .arg("--cache-dir")
                    .arg(home.join("kube-cache-kubelets"))
                    .args(args)
                    .output()
                    .expect("run kubectl")
            };
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let out = kubectl(&[
                    "get",
                    "pods",
                    "-A",
                    "-o",
                    r#"jsonpath={range .items[*]}{.metadata.namespace} {.metadata.name} {.spec.nodeName} {.metadata.deletionTimestamp} {.status.phase}{"\n"}{end}"#,
                ]);
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    let f: Vec<&str> = line.split(' ').collect();
                    let [ns, name, node, deleting, phase] = f[..] else {
                        continue;
                    };
                    if node.is_empty() {
                        continue;
                    }
                    if !deleting.is_empty() {
                        kubectl(&[
                            "delete",
                            "pod",
                            name,
                            "-n",
                            ns,
                            "--grace-period=0",
                            "--force",
                        ]);
                    } else if phase != "Running" {
                        let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
                            .unwrap();
                        let status = format!(
                            r#"{{"status":{{"phase":"Running","conditions":[{{"type":"Ready","status":"True","lastTransitionTime":"{now}"}}]}}}}"#
                        );
                        kubectl(&[
                            "patch",
                            "pod",
                            name,
                            "-n",
                            ns,
                            "--subresource=status",
                            "--type=merge",
                            "-p",
                            &status,
                        ]);
                    }
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

const DAEMONSET: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 1}
  template:
    metadata:
      labels: {app: agent}
    spec:
      nodeSelector: {role: worker}
      terminationGracePeriodSeconds: 0
      containers:
      - {name: c, image: IMAGE}
";

/// `kubectl get ds agent` as (DESIRED, CURRENT, READY, UP-TO-DATE, AVAILABLE, NODE SELECTOR).
fn ds_row(s: &ApiServer) -> Vec<String> {
    let r = rows(&s.ok(&["get", "ds", "agent", "--no-headers"]));
    r[0][1..7].to_vec()
}

fn pods_per_node(s: &ApiServer) -> Vec<String> {
    let mut nodes: Vec<String> = s
        .ok(&[
            "get",
            "pods",
            "-l",
            "app=agent",
            "-o",
            r#"jsonpath={range .items[*]}{.spec.nodeName}{"\n"}{end}"#,
        ])
        .lines()
        .map(str::to_owned)
        .collect();
    nodes.sort();
    nodes
}

#[test]
fn a_daemonset_runs_one_pod_per_eligible_node() {
    let s = ApiServer::start();
    let _kubelets = FakeKubelets::start(&s);
    add_node(&s, "n1");
    add_node(&s, "n2");
    apply(&s, &DAEMONSET.replace("IMAGE", "busybox:1.35"));
    wait_for("a pod on each node", Duration::from_secs(30), || {
        (ds_row(&s) == ["2", "2", "2", "2", "2", "role=worker"]).then_some(())
    });
    assert_eq!(pods_per_node(&s), ["n1", "n2"]);
    let affinity = s.ok(&[
        "get",
        "pods",
        "-l",
        "app=agent",
        "--field-selector",
        "spec.nodeName=n1",
        "-o",
        "jsonpath={.items[0].spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0]}",
    ]);
    assert_eq!(
        affinity,
        r#"{"key":"metadata.name","operator":"In","values":["n1"]}"#
    );

    // A new node gets one.
    add_node(&s, "n3");
    wait_for("a pod on the new node", Duration::from_secs(30), || {
        (pods_per_node(&s) == ["n1", "n2", "n3"]).then_some(())
    });
    // A node labelled out of the selector loses its pod.
    s.ok(&["label", "node", "n1", "role-"]);
    wait_for("the pod of n1 to go", Duration::from_secs(30), || {
        (pods_per_node(&s) == ["n2", "n3"]).then_some(())
    });
    wait_for("the status to follow", Duration::from_secs(30), || {
        (ds_row(&s) == ["2", "2", "2", "2", "2", "role=worker"]).then_some(())
    });
}

/// `kubectl rollout status ds/agent`, its output; on failure, what the
/// DaemonSet and its pods looked like.
fn rollout_status(s: &ApiServer) -> String {
    let out = s.kubectl(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    assert!(
        out.status.success(),
        "rollout status: {}{}\n{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        s.ok(&["get", "ds", "agent", "-o", "yaml"]),
        s.ok(&["get", "pods", "-o", "wide", "--show-labels"]),
        s.log()
            .lines()
            .filter(|l| l.contains("daemonsets") && !l.contains("GET"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_daemonset_rolls_out_a_new_template_and_back() {
    let s = ApiServer::start();
    let _kubelets = FakeKubelets::start(&s);
    for n in ["n1", "n2", "n3"] {
        add_node(&s, n);
    }
    apply(&s, &DAEMONSET.replace("IMAGE", "busybox:1.35"));
    rollout_status(&s);
    s.ok(&["set", "image", "ds/agent", "c=busybox:1.36"]);
    let status = rollout_status(&s);
    assert!(
        status.contains(r#"daemon set "agent" successfully rolled out"#),
        "{status}"
    );
    let images = s.ok(&[
        "get",
        "pods",
        "-l",
        "app=agent",
        "-o",
        "jsonpath={.items[*].spec.containers[0].image}",
    ]);
    assert_eq!(images, "busybox:1.36 busybox:1.36 busybox:1.36");
    let history = s.ok(&["rollout", "history", "ds/agent"]);
    let revisions: Vec<String> = rows(&history)
        .iter()
        .skip(2)
        .filter_map(|r| r.first().cloned())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    let hashes = s.ok(&[
        "get",
        "controllerrevisions",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    assert_eq!(hashes.split_whitespace().count(), 2, "{hashes}");
    let pod_hash = s.ok(&[
        "get",
        "pods",
        "-l",
        "app=agent",
        "-o",
        "jsonpath={.items[0].metadata.labels.controller-revision-hash}",
    ]);
    assert!(
        hashes.contains(&format!("agent-{pod_hash}")),
        "{hashes} / {pod_hash}"
    );

    s.ok(&["rollout", "undo", "ds/agent"]);
    rollout_status(&s);
    wait_for("the old image back", Duration::from_secs(30), || {
        let images = s.ok(&[
            "get",
            "pods",
            "-l",
            "app=agent",
            "-o",
            "jsonpath={.items[*].spec.containers[0].image}",
        ]);
        (images == "busybox:1.35 busybox:1.35 busybox:1.35").then_some(())
    });
    let history = s.ok(&["rollout", "history", "ds/agent"]);
    let revisions: Vec<String> = rows(&history)
        .iter()
        .skip(2)
        .filter_map(|r| r.first().cloned())
        .collect();
    assert_eq!(
        revisions,
        ["2", "3"],
        "the rolled-back revision is the newest: {history}"
    );
}

/// (name, node, image) of the DaemonSet's pods, by node.
fn ds_pods(s: &ApiServer) -> Vec<(String, String, String)> {
    let mut pods: Vec<(String, String, String)> = s
        .ok(&[
            "get",
            "pods",
            "-l",
            "app=agent",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.spec.containers[0].image}{"\n"}{end}"#,
        ])
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() == 3).then(|| (f[0].to_owned(), f[1].to_owned(), f[2].to_owned()))
        })
        .collect();
    pods.sort_by(|a, b| a.1.cmp(&b.1));
    pods
}

#[test]
fn an_on_delete_daemonset_replaces_a_pod_only_when_it_is_deleted() {
    let s = ApiServer::start();
    let _kubelets = FakeKubelets::start(&s);
    add_node(&s, "n1");
    add_node(&s, "n2");
    apply(
        &s,
        &DAEMONSET.replace("IMAGE", "busybox:1.35").replace(
            "    type: RollingUpdate\n    rollingUpdate: {maxUnavailable: 1}",
            "    type: OnDelete",
        ),
    );
    // kubectl rollout status answers only for RollingUpdate, as upstream.
    let err = s.fails(&["rollout", "status", "ds/agent"]);
    assert!(
        err.contains("rollout status is only available for RollingUpdate strategy type"),
        "{err}"
    );
    wait_for("a ready pod on each node", Duration::from_secs(30), || {
        (ds_row(&s)[..5] == ["2", "2", "2", "2", "2"]).then_some(())
    });
    let before = ds_pods(&s);
    assert_eq!(before.len(), 2, "{before:?}");

    // A new template replaces nothing by itself.
    s.ok(&["set", "image", "ds/agent", "c=busybox:1.36"]);
    let ds = wait_for(
        "the new generation observed",
        Duration::from_secs(30),
        || {
            let ds: serde_json::Value =
                serde_json::from_str(&s.ok(&["get", "ds", "agent", "-o", "json"])).unwrap();
            (ds["status"]["observedGeneration"] == 2).then_some(ds)
        },
    );
    assert_eq!(
        ds["status"]["updatedNumberScheduled"].as_i64().unwrap_or(0),
        0
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ds_pods(&s), before, "no pod replaced without a delete");
    assert_eq!(ds_row(&s)[..5], ["2", "2", "2", "0", "2"]);

    // The deleted pod comes back with the new template; the other stays.
    let (victim, node, _) = before[0].clone();
    s.ok(&["delete", "pod", &victim, "--wait=false"]);
    let after = wait_for("a new pod on the node", Duration::from_secs(30), || {
        let pods = ds_pods(&s);
        (pods.len() == 2 && pods.iter().all(|p| p.0 != victim)).then_some(pods)
    });
    assert_eq!(after[0].1, node);
    assert_eq!(after[0].2, "busybox:1.36");
    assert_eq!(after[1], before[1], "the other node's pod untouched");
    wait_for("one pod up to date", Duration::from_secs(30), || {
        (ds_row(&s)[..5] == ["2", "2", "2", "1", "2"]).then_some(())
    });
    let hash = s.ok(&[
        "get",
        "pod",
        &after[0].0,
        "-o",
        "jsonpath={.metadata.labels.controller-revision-hash}",
    ]);
    let revision = s.ok(&[
        "get",
        "controllerrevision",
        &format!("agent-{hash}"),
        "-o",
        "jsonpath={.revision}",
    ]);
    assert_eq!(revision, "2");
}

#[test]
fn a_daemonset_counts_pods_available_only_after_min_ready_seconds() {
    const MIN_READY: i64 = 10;
    let s = ApiServer::start();
    add_node(&s, "n1");
    add_node(&s, "n2");
    apply(
        &s,
        &DAEMONSET.replace("IMAGE", "busybox:1.35").replace(
            "  selector:\n",
            &format!("  minReadySeconds: {MIN_READY}\n  selector:\n"),
        ),
    );
    wait_for("a pod on each node", Duration::from_secs(30), || {
        (ds_pods(&s).len() == 2).then_some(())
    });
    let ready_at = jiff::Timestamp::now().as_second();
    let _kubelets = FakeKubelets::start(&s);
    let now = || jiff::Timestamp::now().as_second();
    let ds = wait_for("2 ready pods", Duration::from_secs(30), || {
        let ds: serde_json::Value =
            serde_json::from_str(&s.ok(&["get", "ds", "agent", "-o", "json"])).unwrap();
        (ds["status"]["numberReady"] == 2).then_some(ds)
    });
    assert!(
        now() < ready_at + MIN_READY,
        "the machine is too slow to see the ready-not-available window"
    );
    assert_eq!(
        ds["status"]["numberAvailable"].as_i64().unwrap_or(0),
        0,
        "{ds}"
    );
    assert_eq!(ds["status"]["numberUnavailable"], 2, "{ds}");
    let ds = wait_for("2 available pods", Duration::from_secs(30), || {
        let ds: serde_json::Value =
            serde_json::from_str(&s.ok(&["get", "ds", "agent", "-o", "json"])).unwrap();
        (ds["status"]["numberAvailable"] == 2).then_some(ds)
    });
    assert!(now() >= ready_at + MIN_READY, "available too early: {ds}");
    assert_eq!(ds_row(&s)[..5], ["2", "2", "2", "2", "2"]);
}
