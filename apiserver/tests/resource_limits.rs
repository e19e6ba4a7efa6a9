//! A namespace's resource policies through the real kubectl: a LimitRange
//! fills in the requests and limits pods leave out and refuses pods outside
//! its bounds, and a ResourceQuota refuses what would exceed it (or pods
//! naming no requests), counts use in `status.used` for `kubectl get quota`
//! and `describe quota`, and gives back the share of a deleted pod.

mod common;

use std::time::{Duration, Instant};

use common::{ApiServer, rows};
use serde_json::Value;

fn wait_for<T>(s: &ApiServer, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
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

fn pod(name: &str, resources: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  containers:
  - name: app
    image: busybox
    resources: {resources}
"
    )
}

fn apply(s: &ApiServer, yaml: &str) -> std::process::Output {
    s.kubectl_stdin(&["apply", "-f", "-"], yaml)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_limit_range_defaults_and_bounds_new_pods() {
    let s = ApiServer::start();
    let out = apply(
        &s,
        "apiVersion: v1
kind: LimitRange
metadata:
  name: cpu-resource-constraint
spec:
  limits:
  - default:
      cpu: 500m
    defaultRequest:
      cpu: 500m
    max:
      cpu: \"1\"
    min:
      cpu: 100m
    type: Container
",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = rows(&s.ok(&["get", "limits"]));
    assert_eq!(table[0], ["NAME", "CREATED", "AT"]);
    assert_eq!(table[1][0], "cpu-resource-constraint");
    let described = s.ok(&["describe", "limitrange", "cpu-resource-constraint"]);
    let line = described
        .lines()
        .find(|l| l.trim_start().starts_with("Container"))
        .unwrap_or_else(|| panic!("{described}"));
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        ["Container", "cpu", "100m", "1", "500m", "500m", "-"],
        "{described}"
    );

    // A pod naming nothing gets the defaults, and says so.
    let out = apply(&s, &pod("plain", "{}"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let p: Value = serde_json::from_str(&s.ok(&["get", "pod", "plain", "-o", "json"])).unwrap();
    let res = &p["spec"]["containers"][0]["resources"];
    assert_eq!(res["requests"]["cpu"], "500m");
    assert_eq!(res["limits"]["cpu"], "500m");
    assert_eq!(
        p["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu request for container app; cpu limit for container app"
    );

    // A pod over the max, or under the min, is refused in LimitRanger's words.
    let out = apply(&s, &pod("big", "{limits: {cpu: \"2\"}}"));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(
            "pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
        ),
        "{}",
        text(&out.stderr)
    );
    let out = apply(&s, &pod("tiny", "{requests: {cpu: 50m}}"));
    assert!(
        text(&out.stderr).contains("minimum cpu usage per Container is 100m, but request is 50m"),
        "{}",
        text(&out.stderr)
    );
    assert!(s.fails(&["get", "pod", "big"]).contains("NotFound"));

    // A LimitRange whose default is over its max is refused itself.
    let out = apply(
        &s,
        "apiVersion: v1
kind: LimitRange
metadata:
  name: wrong
spec:
  limits:
  - type: Container
    default: {memory: 2Gi}
    max: {memory: 1Gi}
",
    );
    assert!(
        text(&out.stderr).contains("spec.limits[0].default[memory]: Invalid value: \"2Gi\": default value 2Gi is greater than max value 1Gi"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_resource_quota_refuses_what_exceeds_it_and_counts_use() {
    let s = ApiServer::start();
    let out = apply(
        &s,
        "apiVersion: v1
kind: ResourceQuota
metadata:
  name: compute-quota
spec:
  hard:
    pods: \"10\"
    requests.cpu: \"1\"
    requests.memory: 1Gi
    limits.cpu: \"2\"
    limits.memory: 2Gi
",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Every container must name what the quota limits.
    let out = apply(&s, &pod("bare", "{}"));
    assert!(
        text(&out.stderr).contains("pods \"bare\" is forbidden: failed quota: compute-quota: must specify limits.cpu for: app; limits.memory for: app; requests.cpu for: app; requests.memory for: app"),
        "{}",
        text(&out.stderr)
    );

    let sized = "{requests: {cpu: 400m, memory: 256Mi}, limits: {cpu: 600m, memory: 512Mi}}";
    for name in ["one", "two"] {
        let out = apply(&s, &pod(name, sized));
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = apply(&s, &pod("three", sized));
    assert!(
        text(&out.stderr).contains("pods \"three\" is forbidden: exceeded quota: compute-quota, requested: requests.cpu=400m, used: requests.cpu=800m, limited: requests.cpu=1"),
        "{}",
        text(&out.stderr)
    );

    // The controller counts what is there.
    let table = wait_for(&s, "quota status", || {
        let t = rows(&s.ok(&["get", "quota"]));
        t.iter()
            .any(|r| r.join(" ").contains("requests.cpu: 800m/1"))
            .then_some(t)
    });
    assert_eq!(table[0], ["NAME", "AGE", "REQUEST", "LIMIT"]);
    let line = table[1].join(" ");
    assert!(
        line.contains("pods: 2/10, requests.cpu: 800m/1, requests.memory: 512Mi/1Gi"),
        "{line}"
    );
    assert!(
        line.contains("limits.cpu: 1200m/2, limits.memory: 1Gi/2Gi"),
        "{line}"
    );
    let described = s.ok(&["describe", "quota", "compute-quota"]);
    let cpu = described
        .lines()
        .find(|l| l.trim_start().starts_with("requests.cpu"))
        .unwrap_or_else(|| panic!("{described}"));
    assert_eq!(
        cpu.split_whitespace().collect::<Vec<_>>(),
        ["requests.cpu", "800m", "1"]
    );

    // A deleted pod gives its share back.
    s.ok(&["delete", "pod", "one", "--grace-period=0", "--force"]);
    wait_for(&s, "the share of the deleted pod back", || {
        s.ok(&[
            "get",
            "quota",
            "compute-quota",
            "-o",
            "jsonpath={.status.used.requests\\.cpu}",
        ])
        .eq("400m")
        .then_some(())
    });
    let out = apply(&s, &pod("three", sized));
    assert!(out.status.success(), "{}", text(&out.stderr));
}
