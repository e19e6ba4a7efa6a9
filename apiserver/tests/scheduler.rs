//! The scheduler as a user meets it through the real kubectl: Node objects
//! (no agents behind them, kept Ready by a long node-monitor grace period)
//! and pods placed, refused or preempted by the in-process scheduler, a
//! second scheduler process, or a second apiserver's scheduler.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::ApiServer;
use common::etcd::EtcdServer;

/// An apiserver whose nodes stay Ready without kubelets.
fn cluster(extra: &[&str]) -> ApiServer {
    let mut args = vec!["--node-monitor-grace-period", "1h"];
    args.extend_from_slice(extra);
    ApiServer::start_with(&args)
}

fn node_yaml(name: &str, cpu: &str, labels: &[(&str, &str)]) -> String {
    let mut labels_yaml = format!("    kubernetes.io/hostname: {name}\n");
    for (k, v) in labels {
        labels_yaml.push_str(&format!("    {k}: \"{v}\"\n"));
    }
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n{labels_yaml}status:\n  conditions:\n  - type: Ready\n    status: \"True\"\n    reason: KubeletReady\n    message: kubelet is posting ready status\n  capacity: {{cpu: \"{cpu}\", memory: 8Gi, pods: \"110\"}}\n  allocatable: {{cpu: \"{cpu}\", memory: 8Gi, pods: \"110\"}}\n"
    )
}

fn add_node(s: &ApiServer, name: &str, cpu: &str, labels: &[(&str, &str)]) {
    s.kubectl_stdin(&["create", "-f", "-"], &node_yaml(name, cpu, labels));
    assert!(s.ok(&["get", "node", name, "-o", "name"]).contains(name));
}

fn apply(s: &ApiServer, yaml: &str) {
    let out = s.kubectl_stdin(&["apply", "-f", "-"], yaml);
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `f` until it returns `Some`, for at most `secs` seconds.
fn wait_for<T>(s: &ApiServer, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}\n{}", s.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn node_of(s: &ApiServer, pod: &str) -> String {
    s.ok(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"])
}

fn wait_bound(s: &ApiServer, pod: &str) -> String {
    wait_for(s, &format!("{pod} to be bound"), 30, || {
        Some(node_of(s, pod)).filter(|n| !n.is_empty())
    })
}

/// The pod's FailedScheduling message once the scheduler has written one
/// containing `needle`.
fn failed_scheduling(s: &ApiServer, pod: &str, needle: &str) -> String {
    wait_for(s, &format!("FailedScheduling on {pod}"), 30, || {
        let msgs = s.ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod},reason=FailedScheduling"),
            "-o",
            "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
        ]);
        msgs.lines()
            .rev()
            .find(|m| m.contains(needle))
            .map(str::to_owned)
    })
}

fn scheduled_by(s: &ApiServer, pod: &str) -> String {
    wait_for(s, &format!("Scheduled event on {pod}"), 30, || {
        let out = s.ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod},reason=Scheduled"),
            "-o",
            "jsonpath={range .items[*]}{.source.component}|{.message}{\"\\n\"}{end}",
        ]);
        out.lines().next().map(str::to_owned)
    })
}

#[test]
fn kubectl_run_is_scheduled_with_the_schedulers_event() {
    let s = cluster(&[]);
    add_node(&s, "node1", "2", &[]);
    s.ok(&["run", "nginx", "--image=nginx"]);
    assert_eq!(wait_bound(&s, "nginx"), "node1");
    assert_eq!(
        scheduled_by(&s, "nginx"),
        "default-scheduler|Successfully assigned default/nginx to node1"
    );
    let describe = s.ok(&["describe", "pod", "nginx"]);
    assert!(
        describe.lines().any(|l| l.contains("Scheduled")
            && l.contains("default-scheduler")
            && l.contains("Successfully assigned default/nginx to node1")),
        "{describe}"
    );
    assert_eq!(
        s.ok(&[
            "get",
            "pod",
            "nginx",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].status}"
        ]),
        "True"
    );
}

#[test]
fn taints_keep_pods_off_until_tolerated_or_removed() {
    let s = cluster(&[]);
    add_node(&s, "node1", "2", &[]);
    assert_eq!(
        s.ok(&["taint", "nodes", "node1", "app=blue:NoSchedule"])
            .trim(),
        "node/node1 tainted"
    );
    s.ok(&["run", "plain", "--image=nginx"]);
    let msg = failed_scheduling(&s, "plain", "untolerated taint");
    assert_eq!(
        msg,
        "0/1 nodes are available: 1 node(s) had untolerated taint {app: blue}. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.."
    );
    assert_eq!(
        s.ok(&[
            "get",
            "pod",
            "plain",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].reason}"
        ]),
        "Unschedulable"
    );
    apply(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: tolerant\nspec:\n  containers:\n  - name: nginx\n    image: nginx\n  tolerations:\n  - key: app\n    operator: Equal\n    value: blue\n    effect: NoSchedule\n",
    );
    assert_eq!(wait_bound(&s, "tolerant"), "node1");
    assert_eq!(node_of(&s, "plain"), "", "still Pending while tainted");
    assert_eq!(
        s.ok(&["taint", "nodes", "node1", "app=blue:NoSchedule-"])
            .trim(),
        "node/node1 untainted"
    );
    assert_eq!(wait_bound(&s, "plain"), "node1");
}

#[test]
fn node_selector_waits_for_the_label_and_affinity_picks_the_node() {
    let s = cluster(&[]);
    add_node(&s, "node1", "2", &[]);
    add_node(&s, "node2", "2", &[]);
    apply(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: large\nspec:\n  nodeSelector:\n    size: Large\n  containers:\n  - name: nginx\n    image: nginx\n",
    );
    failed_scheduling(
        &s,
        "large",
        "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.",
    );
    s.ok(&["label", "node", "node2", "size=Large"]);
    assert_eq!(wait_bound(&s, "large"), "node2");

    s.ok(&["label", "node", "node1", "disktype=ssd"]);
    apply(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: affine\nspec:\n  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions:\n          - key: size\n            operator: NotIn\n            values: [Large]\n          - key: disktype\n            operator: Exists\n  containers:\n  - name: nginx\n    image: nginx\n",
    );
    assert_eq!(wait_bound(&s, "affine"), "node1");
    // matchFields on metadata.name, as DaemonSet pods are placed.
    apply(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pinned\nspec:\n  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchFields:\n          - key: metadata.name\n            operator: In\n            values: [node2]\n  containers:\n  - name: nginx\n    image: nginx\n",
    );
    assert_eq!(wait_bound(&s, "pinned"), "node2");
}

#[test]
fn inter_pod_affinity_and_anti_affinity() {
    let s = cluster(&[]);
    add_node(&s, "node1", "4", &[("zone", "a")]);
    add_node(&s, "node2", "4", &[("zone", "b")]);
    apply(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: cache\n  labels:\n    app: cache\nspec:\n  nodeSelector:\n    zone: b\n  containers:\n  - name: redis\n    image: redis\n",
    );
    assert_eq!(wait_bound(&s, "cache"), "node2");
    // Affinity: next to the cache, in its zone.
    apply(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels:\n    app: web\nspec:\n  affinity:\n    podAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector:\n          matchLabels:\n            app: cache\n        topologyKey: zone\n  containers:\n  - name: nginx\n    image: nginx\n",
    );
    assert_eq!(wait_bound(&s, "web"), "node2");
    // Anti-affinity: away from the cache's node.
    apply(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: batch\nspec:\n  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector:\n          matchLabels:\n            app: cache\n        topologyKey: kubernetes.io/hostname\n  containers:\n  - name: job\n    image: busybox\n",
    );
    assert_eq!(wait_bound(&s, "batch"), "node1");
    // No zone holds a `db` pod and this pod is no `db` itself: nowhere to go.
    apply(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: lonely\nspec:\n  affinity:\n    podAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector:\n          matchLabels:\n            app: db\n        topologyKey: zone\n  containers:\n  - name: c\n    image: busybox\n",
    );
    failed_scheduling(
        &s,
        "lonely",
        "0/2 nodes are available: 2 node(s) didn't match pod affinity rules.",
    );
}

#[test]
fn a_request_bigger_than_any_node_is_insufficient_cpu() {
    let s = cluster(&[]);
    add_node(&s, "node1", "2", &[]);
    add_node(&s, "node2", "2", &[]);
    s.ok(&[
        "taint",
        "nodes",
        "node1",
        "node-role.kubernetes.io/control-plane=:NoSchedule",
    ]);
    apply(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: huge\nspec:\n  containers:\n  - name: app\n    image: nginx\n    resources:\n      requests:\n        cpu: \"3\"\n",
    );
    let msg = failed_scheduling(&s, "huge", "Insufficient cpu");
    assert_eq!(
        msg,
        "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }. preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling.."
    );
    let describe = s.ok(&["describe", "pod", "huge"]);
    assert!(
        describe.lines().any(|l| l.contains("Warning")
            && l.contains("FailedScheduling")
            && l.contains("default-scheduler")
            && l.contains("1 Insufficient cpu")),
        "{describe}"
    );
    assert!(s.ok(&["get", "events"]).contains("Insufficient cpu"));
}

#[test]
fn a_custom_scheduler_process_places_only_its_pods() {
    let s = cluster(&[]);
    add_node(&s, "node1", "2", &[]);
    apply(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: custom\nspec:\n  schedulerName: my-custom-scheduler\n  containers:\n  - name: nginx\n    image: nginx\n",
    );
    s.ok(&["run", "plain", "--image=nginx"]);
    assert_eq!(wait_bound(&s, "plain"), "node1");
    // The default scheduler leaves it alone: no binding, no event.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(node_of(&s, "custom"), "");
    assert_eq!(
        s.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=custom",
            "-o",
            "name"
        ]),
        ""
    );
    let config = s.file(
        "my-scheduler.yaml",
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nleaderElection:\n  leaderElect: true\n  resourceName: my-custom-scheduler\nprofiles:\n- schedulerName: my-custom-scheduler\n",
    );
    let _custom = SchedulerProcess::start(&s, &["--config", &config]);
    assert_eq!(wait_bound(&s, "custom"), "node1");
    assert_eq!(
        scheduled_by(&s, "custom"),
        "my-custom-scheduler|Successfully assigned default/custom to node1"
    );
    // Its own lease, apart from the default scheduler's.
    let holders = s.ok(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}{\" \"}{end}",
    ]);
    assert!(holders.contains("kube-scheduler"), "{holders}");
    assert!(holders.contains("my-custom-scheduler"), "{holders}");
}

#[test]
fn two_profiles_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("profiles.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n- schedulerName: default-scheduler\n- schedulerName: bin-packer\n  pluginConfig:\n  - name: NodeResourcesFit\n    args:\n      scoringStrategy:\n        type: MostAllocated\n        resources:\n        - name: cpu\n          weight: 1\n  plugins:\n    score:\n      disabled:\n      - name: NodeResourcesBalancedAllocation\n",
    )
    .unwrap();
    let s = cluster(&["--scheduler-config", config.to_str().unwrap()]);
    add_node(&s, "node1", "4", &[]);
    add_node(&s, "node2", "4", &[]);
    apply(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: base\nspec:\n  nodeName: node1\n  containers:\n  - name: c\n    image: busybox\n    resources:\n      requests:\n        cpu: \"2\"\n",
    );
    let pod = |name: &str, scheduler: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  schedulerName: {scheduler}\n  containers:\n  - name: c\n    image: busybox\n    resources:\n      requests:\n        cpu: 500m\n"
        )
    };
    apply(&s, &pod("packed", "bin-packer"));
    apply(&s, &pod("spread", "default-scheduler"));
    // MostAllocated packs onto the busier node; LeastAllocated spreads.
    assert_eq!(wait_bound(&s, "packed"), "node1");
    assert_eq!(wait_bound(&s, "spread"), "node2");
    assert_eq!(
        scheduled_by(&s, "packed"),
        "bin-packer|Successfully assigned default/packed to node1"
    );
    assert_eq!(
        scheduled_by(&s, "spread"),
        "default-scheduler|Successfully assigned default/spread to node2"
    );
}

#[test]
fn a_burst_never_overcommits_a_node() {
    let s = cluster(&[]);
    add_node(&s, "node1", "1", &[]);
    add_node(&s, "node2", "1", &[]);
    let mut yaml = String::new();
    for i in 0..10 {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p{i}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources:\n      requests:\n        cpu: 300m\n"
        ));
    }
    apply(&s, &yaml);
    // 3 fit on each node (900m of 1000m); the other 4 stay Pending.
    wait_for(&s, "six pods bound", 30, || {
        let nodes = s.ok(&[
            "get",
            "pods",
            "-o",
            "jsonpath={range .items[*]}{.spec.nodeName}{\" \"}{end}",
        ]);
        (nodes.split_whitespace().count() == 6).then_some(())
    });
    failed_scheduling(&s, "p9", "Insufficient cpu");
    let nodes = s.ok(&[
        "get",
        "pods",
        "-o",
        "jsonpath={range .items[*]}{.spec.nodeName}{\" \"}{end}",
    ]);
    let on1 = nodes.split_whitespace().filter(|n| *n == "node1").count();
    assert_eq!((on1, nodes.split_whitespace().count()), (3, 6), "{nodes}");
}

/// `kubelab-apiserver scheduler` against a cluster, killed on drop.
struct SchedulerProcess {
    child: Child,
}

impl SchedulerProcess {
    fn start(s: &ApiServer, args: &[&str]) -> Self {
        let log = std::fs::File::create(s.dir.path().join("scheduler.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kubelab-apiserver"))
            .arg("scheduler")
            .args(["--kubeconfig", s.kubeconfig().to_str().unwrap()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kubelab-apiserver scheduler");
        SchedulerProcess { child }
    }
}

impl Drop for SchedulerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_apiservers_on_one_etcd_schedule_and_control_once() {
    let etcd = EtcdServer::start();
    let a = cluster(&["--etcd-servers", &etcd.url()]);
    let b = cluster(&["--etcd-servers", &etcd.url()]);
    add_node(&a, "node1", "4", &[]);
    add_node(&a, "node2", "4", &[]);
    let holder = wait_for(&a, "the scheduler lease", 30, || {
        Some(a.ok(&[
            "get",
            "lease",
            "-n",
            "kube-system",
            "kube-scheduler",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ]))
        .filter(|h| !h.is_empty())
    });
    let mut yaml = String::new();
    for i in 0..20 {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p{i}\nspec:\n  containers:\n  - name: c\n    image: busybox\n"
        ));
    }
    apply(&b, &yaml);
    for i in 0..20 {
        wait_bound(&a, &format!("p{i}"));
    }
    // Bound once each: one Scheduled event per pod, all from the leader's
    // scheduler, and no conflicts from a second one.
    let scheduled = a.ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=Scheduled",
        "-o",
        "jsonpath={range .items[*]}{.involvedObject.name}|{.reportingInstance}{\"\\n\"}{end}",
    ]);
    let mut pods: Vec<&str> = scheduled
        .lines()
        .map(|l| l.split('|').next().unwrap())
        .collect();
    pods.sort();
    pods.dedup();
    assert_eq!(
        (pods.len(), scheduled.lines().count()),
        (20, 20),
        "{scheduled}"
    );
    let still = a.ok(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        "kube-scheduler",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(still, holder, "the lease stayed with one scheduler");
    let took = |s: &ApiServer| {
        s.log().lines().any(|l| {
            l.contains("successfully acquired lease") && l.contains("kube-system/kube-scheduler")
        })
    };
    assert!(
        took(&a) != took(&b),
        "exactly one apiserver leads:\nA:\n{}\nB:\n{}",
        a.log(),
        b.log()
    );
    assert!(!a.log().contains("binding:") && !b.log().contains("binding:"));

    // The controller manager is leader-elected the same way: a ReplicaSet
    // made through one apiserver gets its 5 pods once, not once per server.
    apply(
        &b,
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: rs\nspec:\n  replicas: 5\n  selector:\n    matchLabels: {app: rs}\n  template:\n    metadata:\n      labels: {app: rs}\n    spec:\n      containers:\n      - name: c\n        image: busybox\n",
    );
    let count = || {
        a.ok(&["get", "pods", "-l", "app=rs", "-o", "name"])
            .lines()
            .count()
    };
    wait_for(&a, "the ReplicaSet's 5 pods", 60, || {
        (count() == 5).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(count(), 5, "one controller manager made the pods");
    let events = a.ok(&[
        "get",
        "events",
        "-o",
        "jsonpath={range .items[*]}{.reason}|{.involvedObject.kind}/{.involvedObject.name}|{.count}{\"\\n\"}{end}",
    ]);
    let creates: u32 = events
        .lines()
        .filter_map(|l| l.strip_prefix("SuccessfulCreate|ReplicaSet/rs|"))
        .filter_map(|c| c.trim().parse::<u32>().ok())
        .sum();
    assert_eq!(creates, 5, "five pods created in all:\n{events}");
    let led = |s: &ApiServer| {
        s.log().lines().any(|l| {
            l.contains("successfully acquired lease")
                && l.contains("kube-system/kube-controller-manager")
        })
    };
    assert!(
        led(&a) != led(&b),
        "exactly one controller manager leads:\nA:\n{}\nB:\n{}",
        a.log(),
        b.log()
    );
}

#[test]
fn a_higher_priority_pod_preempts_a_lower_one() {
    let s = cluster(&[]);
    add_node(&s, "node1", "2", &[]);
    apply(
        &s,
        "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: low\nvalue: 100\n---\napiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: high\nvalue: 1000000\ndescription: for the important pods\n",
    );
    let classes = s.ok(&["get", "priorityclass"]);
    for want in [
        "high",
        "low",
        "system-cluster-critical",
        "system-node-critical",
    ] {
        assert!(classes.contains(want), "{classes}");
    }
    // An unknown class is refused at admission.
    let out = s.kubectl(&[
        "run",
        "nope",
        "--image=busybox",
        "--overrides",
        r#"{"spec":{"priorityClassName":"nope"}}"#,
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        r#"Error from server (Forbidden): pods "nope" is forbidden: no PriorityClass with name nope was found"#
    );
    let pod = |name: &str, class: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  priorityClassName: {class}\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: busybox\n    resources:\n      requests:\n        cpu: \"1\"\n"
        )
    };
    apply(&s, &pod("low1", "low"));
    apply(&s, &pod("low2", "low"));
    wait_bound(&s, "low1");
    wait_bound(&s, "low2");
    assert_eq!(
        s.ok(&["get", "pod", "low1", "-o", "jsonpath={.spec.priority}"]),
        "100"
    );
    apply(&s, &pod("critical", "high"));
    assert_eq!(wait_bound(&s, "critical"), "node1");
    let uid = s.ok(&["get", "pod", "critical", "-o", "jsonpath={.metadata.uid}"]);
    let preempted = s.ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=Preempted",
        "-o",
        "jsonpath={range .items[*]}{.involvedObject.name}|{.message}|{.source.component}{\"\\n\"}{end}",
    ]);
    let victim = preempted
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no Preempted event"));
    let (name, rest) = victim.split_once('|').unwrap();
    assert!(name == "low1" || name == "low2", "{victim}");
    assert_eq!(
        rest,
        format!("Preempted by pod {uid} on node node1|default-scheduler")
    );
    // One victim was enough: the other low pod stays.
    let left = s.ok(&[
        "get",
        "pods",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {end}",
    ]);
    assert_eq!(left.split_whitespace().count(), 2, "{left}");
    assert_eq!(
        s.ok(&[
            "get",
            "pod",
            "critical",
            "-o",
            "jsonpath={.status.nominatedNodeName}"
        ]),
        "node1"
    );
}

/// A preemptor waits, nominated, while its victim terminates (no kubelet
/// here to finish it); when preemption later finds no node at all its
/// nomination is withdrawn, as kube-scheduler withdraws it.
#[test]
fn a_nomination_stands_while_victims_leave_and_goes_when_nothing_can_help() {
    let s = cluster(&[]);
    add_node(&s, "node1", "1", &[]);
    apply(
        &s,
        "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: low\nvalue: 100\n---\napiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: high\nvalue: 1000000\n",
    );
    let pod = |name: &str, class: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  priorityClassName: {class}\n  terminationGracePeriodSeconds: 600\n  containers:\n  - name: c\n    image: busybox\n    resources:\n      requests:\n        cpu: \"1\"\n"
        )
    };
    apply(&s, &pod("victim", "low"));
    wait_bound(&s, "victim");
    apply(&s, &pod("preemptor", "high"));
    let nominated = || {
        s.ok(&[
            "get",
            "pod",
            "preemptor",
            "-o",
            "jsonpath={.status.nominatedNodeName}",
        ])
    };
    wait_for(&s, "preemptor nominated to node1", 30, || {
        (nominated() == "node1").then_some(())
    });
    wait_for(&s, "the victim terminating", 30, || {
        let ts = s.ok(&[
            "get",
            "pod",
            "victim",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ]);
        (!ts.is_empty()).then_some(())
    });
    // The victim holds its room until it is gone: the preemptor waits,
    // nominated.
    failed_scheduling(
        &s,
        "preemptor",
        "0/1 nodes are available: 1 Insufficient cpu.",
    );
    assert_eq!(nominated(), "node1");
    assert_eq!(node_of(&s, "preemptor"), "");

    // The node is cordoned and the victim goes: preemption cannot help.
    s.ok(&["cordon", "node1"]);
    s.ok(&["delete", "pod", "victim", "--force", "--grace-period=0"]);
    failed_scheduling(
        &s,
        "preemptor",
        "0/1 nodes are available: 1 node(s) were unschedulable. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
    );
    wait_for(&s, "the nomination withdrawn", 30, || {
        nominated().is_empty().then_some(())
    });
    s.ok(&["uncordon", "node1"]);
    assert_eq!(wait_bound(&s, "preemptor"), "node1");
}

fn claim_pod(name: &str, claim: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: c\n    image: busybox\n  volumes:\n  - name: data\n    persistentVolumeClaim:\n      claimName: {claim}\n"
    )
}

/// A hand-made volume pinned to `node` (`local`, or `hostPath` when
/// `local_path` is `None`), labelled `disk: <label>`.
fn pinned_volume(
    name: &str,
    node: &str,
    class: &str,
    size: &str,
    label: &str,
    local: bool,
) -> String {
    let source = if local {
        "  local:\n    path: /mnt/disks/ssd1\n"
    } else {
        "  hostPath:\n    path: /srv/data\n"
    };
    format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: {name}\n  labels:\n    disk: {label}\nspec:\n  capacity:\n    storage: {size}\n  accessModes: [ReadWriteOnce]\n  storageClassName: \"{class}\"\n{source}  nodeAffinity:\n    required:\n      nodeSelectorTerms:\n      - matchExpressions:\n        - key: kubernetes.io/hostname\n          operator: In\n          values: [{node}]\n"
    )
}

fn claim(name: &str, class: Option<&str>, size: &str, label: Option<&str>) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {name}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: {size}\n"
    );
    if let Some(c) = class {
        y.push_str(&format!("  storageClassName: \"{c}\"\n"));
    }
    if let Some(l) = label {
        y.push_str(&format!("  selector:\n    matchLabels:\n      disk: {l}\n"));
    }
    y
}

fn claim_phase(s: &ApiServer, claim: &str) -> String {
    s.ok(&["get", "pvc", claim, "-o", "jsonpath={.status.phase}"])
}

fn wait_claim_bound(s: &ApiServer, claim: &str) -> String {
    wait_for(s, &format!("claim {claim} to be Bound"), 30, || {
        (claim_phase(s, claim) == "Bound")
            .then(|| s.ok(&["get", "pvc", claim, "-o", "jsonpath={.spec.volumeName}"]))
    })
}

#[test]
fn pods_go_where_their_volumes_are() {
    let s = cluster(&[]);
    for n in ["node1", "node2", "node3"] {
        add_node(&s, n, "2", &[]);
    }
    // A `local` PV made by hand on node2, bound at once to a class-less claim.
    apply(
        &s,
        &pinned_volume("disk-node2", "node2", "", "1Gi", "node2", true),
    );
    apply(&s, &claim("pinned", Some(""), "1Gi", Some("node2")));
    assert_eq!(wait_claim_bound(&s, "pinned"), "disk-node2");
    // A hostPath PV on node3 of a class nobody defined: bound at once too.
    apply(
        &s,
        &pinned_volume("srv-node3", "node3", "manual", "1Gi", "srv", false),
    );
    apply(&s, &claim("manual", Some("manual"), "1Gi", None));
    assert_eq!(wait_claim_bound(&s, "manual"), "srv-node3");
    for (pod, claim) in [("uses-pinned", "pinned"), ("uses-manual", "manual")] {
        apply(&s, &claim_pod(pod, claim));
    }
    assert_eq!(wait_bound(&s, "uses-pinned"), "node2");
    assert_eq!(wait_bound(&s, "uses-manual"), "node3");

    // A class that waits for the first consumer and has only hand-made
    // volumes: the claim waits, the pod goes to the node with a free
    // volume, and the claim binds to it.
    apply(
        &s,
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: local-disks\nprovisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: WaitForFirstConsumer\n",
    );
    apply(
        &s,
        &pinned_volume("ssd-node1", "node1", "local-disks", "1Gi", "ssd", true),
    );
    apply(&s, &claim("late", Some("local-disks"), "1Gi", None));
    wait_for(&s, "the WaitForFirstConsumer event", 30, || {
        s.ok(&["describe", "pvc", "late"])
            .contains("waiting for first consumer to be created before binding")
            .then_some(())
    });
    assert_eq!(claim_phase(&s, "late"), "Pending");
    apply(&s, &claim_pod("uses-late", "late"));
    assert_eq!(wait_bound(&s, "uses-late"), "node1");
    assert_eq!(wait_claim_bound(&s, "late"), "ssd-node1");

    // The default class provisions on the node the scheduler picked; the
    // pod's successors follow the volume there.
    apply(&s, &claim("fresh", None, "1Gi", None));
    apply(&s, &claim_pod("writer", "fresh"));
    let first = wait_bound(&s, "writer");
    let volume = wait_claim_bound(&s, "fresh");
    assert_eq!(
        s.ok(&[
            "get",
            "pvc",
            "fresh",
            "-o",
            "jsonpath={.metadata.annotations.volume\\.kubernetes\\.io/selected-node}"
        ]),
        first
    );
    assert_eq!(
        s.ok(&["get", "pv", &volume, "-o", "jsonpath={.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}"]),
        first
    );
    s.ok(&["delete", "pod", "writer", "--grace-period=0", "--force"]);
    for i in 0..3 {
        apply(&s, &claim_pod(&format!("reader-{i}"), "fresh"));
    }
    for i in 0..3 {
        assert_eq!(wait_bound(&s, &format!("reader-{i}")), first);
    }

    // An immediate claim with no volume yet keeps its pod Pending with
    // kube-scheduler's words, until a volume appears and binds.
    apply(&s, &claim("nowhere", Some(""), "5Gi", Some("big")));
    apply(&s, &claim_pod("stuck", "nowhere"));
    assert_eq!(
        failed_scheduling(&s, "stuck", "unbound immediate"),
        "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.."
    );
    apply(
        &s,
        &pinned_volume("big-node3", "node3", "", "5Gi", "big", true),
    );
    assert_eq!(wait_bound(&s, "stuck"), "node3");

    // A bound volume on a node that is not there: no node will do.
    apply(
        &s,
        &pinned_volume("lost-disk", "node9", "", "2Gi", "lost", true),
    );
    apply(&s, &claim("far", Some(""), "2Gi", Some("lost")));
    assert_eq!(wait_claim_bound(&s, "far"), "lost-disk");
    apply(&s, &claim_pod("far-away", "far"));
    assert_eq!(
        failed_scheduling(&s, "far-away", "conflict"),
        "0/3 nodes are available: 3 node(s) had volume node affinity conflict. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.."
    );
    apply(&s, &claim_pod("ghostly", "ghost"));
    assert_eq!(
        failed_scheduling(&s, "ghostly", "not found"),
        "0/3 nodes are available: persistentvolumeclaim \"ghost\" not found. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.."
    );
}
