//! `dryRun=All` on every verb and subresource: the request is judged in
//! full and answered as kube-apiserver answers it, and nothing is stored.
//! Driven through `kubectl --dry-run=server` and raw requests.

mod common;

use common::{ApiServer, NODE1};
use serde_json::{Value, json};

/// Pods the default scheduler leaves alone, one unbound and one on node1.
const PODS: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  schedulerName: none
  containers:
  - name: c
    image: nginx:1.25
---
apiVersion: v1
kind: Pod
metadata:
  name: bound
spec:
  nodeName: node1
  containers:
  - name: c
    image: nginx:1.25
";

/// A raw request with the admin certificate: (HTTP code, JSON body).
fn request(s: &ApiServer, method: &str, path: &str, body: Option<(&str, &Value)>) -> (u16, Value) {
    let url = format!("{}{path}", s.url());
    let mut args = vec!["-X".to_owned(), method.to_owned()];
    if let Some((content_type, body)) = body {
        args.extend([
            "-H".to_owned(),
            format!("Content-Type: {content_type}"),
            "--data-binary".to_owned(),
            body.to_string(),
        ]);
    }
    args.push(url);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, text) = s.curl(&args);
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn get(s: &ApiServer, path: &str) -> Value {
    let (code, v) = request(s, "GET", path, None);
    assert_eq!(code, 200, "GET {path}: {v}");
    v
}

fn absent(s: &ApiServer, path: &str) {
    let (code, v) = request(s, "GET", path, None);
    assert_eq!(code, 404, "{path} was stored: {v}");
}

const CM: &str = "/api/v1/namespaces/default/configmaps";
const PODS_PATH: &str = "/api/v1/namespaces/default/pods";

#[test]
fn kubectl_dry_run_server_stores_nothing_on_any_verb() {
    let s = ApiServer::start();
    s.ok(&["create", "-f", &s.file("node1.yaml", NODE1)]);
    s.ok(&["create", "-f", &s.file("pods.yaml", PODS)]);
    s.ok(&["create", "configmap", "a", "--from-literal=k=v"]);
    s.ok(&["create", "configmap", "b"]);
    s.ok(&[
        "create",
        "deployment",
        "d",
        "--image=nginx:1.25",
        "--replicas=1",
    ]);
    s.ok(&["create", "namespace", "tmp"]);
    let a_before = get(&s, &format!("{CM}/a"));

    // create, create from a file, run, expose, apply (both kinds) of new objects
    let out = s.ok(&["create", "configmap", "new", "--dry-run=server"]);
    assert_eq!(out.trim(), "configmap/new created (server dry run)");
    s.ok(&["run", "dry", "--image=busybox", "--dry-run=server"]);
    let new_cm = s.file(
        "new.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  k: v\n",
    );
    s.ok(&["apply", "-f", &new_cm, "--dry-run=server"]);
    s.ok(&["apply", "--server-side", "-f", &new_cm, "--dry-run=server"]);
    s.ok(&["expose", "deployment", "d", "--port=80", "--dry-run=server"]);
    for path in [
        format!("{CM}/new"),
        format!("{CM}/applied"),
        format!("{PODS_PATH}/dry"),
        "/api/v1/namespaces/default/services/d".to_owned(),
    ] {
        absent(&s, &path);
    }

    // update and patch: label, annotate, patch (three types), replace, edit-like apply, set
    s.ok(&["label", "cm", "a", "x=y", "--dry-run=server"]);
    s.ok(&["annotate", "cm", "a", "x=y", "--dry-run=server"]);
    s.ok(&[
        "patch",
        "cm",
        "a",
        "-p",
        r#"{"data":{"k":"patched"}}"#,
        "--dry-run=server",
    ]);
    s.ok(&[
        "patch",
        "cm",
        "a",
        "--type=merge",
        "-p",
        r#"{"data":{"k":"merged"}}"#,
        "--dry-run=server",
    ]);
    s.ok(&[
        "patch",
        "cm",
        "a",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/data/k","value":"json"}]"#,
        "--dry-run=server",
    ]);
    let replaced = s.file(
        "a.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: replaced\n",
    );
    s.ok(&["replace", "-f", &replaced, "--dry-run=server"]);
    s.ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        &replaced,
        "--dry-run=server",
    ]);
    s.ok(&[
        "set",
        "image",
        "deployment/d",
        "nginx=nginx:1.26",
        "--dry-run=server",
    ]);
    s.ok(&[
        "taint",
        "node",
        "node1",
        "k=v:NoSchedule",
        "--dry-run=server",
    ]);
    assert_eq!(get(&s, &format!("{CM}/a")), a_before, "configmap a changed");
    let d = get(&s, "/apis/apps/v1/namespaces/default/deployments/d");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.25"
    );
    assert!(get(&s, "/api/v1/nodes/node1")["spec"]["taints"].is_null());

    // subresources: scale
    let out = s.ok(&[
        "scale",
        "deployment",
        "d",
        "--replicas=5",
        "--dry-run=server",
    ]);
    assert_eq!(out.trim(), "deployment.apps/d scaled (server dry run)");
    assert_eq!(
        get(&s, "/apis/apps/v1/namespaces/default/deployments/d")["spec"]["replicas"],
        1
    );

    // delete, one and all
    let out = s.ok(&["delete", "cm", "a", "--dry-run=server"]);
    assert_eq!(out.trim(), "configmap \"a\" deleted (server dry run)");
    s.ok(&["delete", "cm", "--all", "--dry-run=server"]);
    s.ok(&["delete", "pod", "bound", "--dry-run=server"]);
    s.ok(&[
        "delete",
        "deployment",
        "d",
        "--dry-run=server",
        "--cascade=foreground",
    ]);
    s.ok(&["delete", "namespace", "tmp", "--dry-run=server"]);
    assert_eq!(get(&s, &format!("{CM}/a")), a_before, "configmap a changed");
    get(&s, &format!("{CM}/b"));
    let bound = get(&s, &format!("{PODS_PATH}/bound"));
    assert!(bound["metadata"]["deletionTimestamp"].is_null(), "{bound}");
    let d = get(&s, "/apis/apps/v1/namespaces/default/deployments/d");
    assert!(d["metadata"]["deletionTimestamp"].is_null(), "{d}");
    assert!(d["metadata"]["finalizers"].is_null(), "{d}");
    let tmp = get(&s, "/api/v1/namespaces/tmp");
    assert_eq!(tmp["status"]["phase"], "Active");

    // drain evicts through pods/eviction
    s.ok(&[
        "drain",
        "node1",
        "--dry-run=server",
        "--force",
        "--ignore-daemonsets",
        "--grace-period=1",
    ]);
    let bound = get(&s, &format!("{PODS_PATH}/bound"));
    assert!(bound["metadata"]["deletionTimestamp"].is_null(), "{bound}");
    assert!(get(&s, "/api/v1/nodes/node1")["spec"]["unschedulable"].is_null());
}

#[test]
fn raw_dry_run_requests_answer_as_kube_apiserver_and_store_nothing() {
    let s = ApiServer::start();
    s.ok(&["create", "-f", &s.file("node1.yaml", NODE1)]);
    s.ok(&["create", "-f", &s.file("pods.yaml", PODS)]);
    s.ok(&["create", "configmap", "a", "--from-literal=k=v"]);
    s.ok(&[
        "create",
        "deployment",
        "d",
        "--image=nginx:1.25",
        "--replicas=1",
    ]);
    s.ok(&["create", "namespace", "tmp"]);
    let a = get(&s, &format!("{CM}/a"));
    let rv = a["metadata"]["resourceVersion"].clone();
    let json_ct = "application/json";

    // create: the object as it would be, without a resourceVersion
    let new = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new"}});
    let (code, v) = request(
        &s,
        "POST",
        &format!("{CM}?dryRun=All"),
        Some((json_ct, &new)),
    );
    assert_eq!(code, 201, "{v}");
    assert!(v["metadata"]["uid"].is_string(), "{v}");
    assert!(v["metadata"]["resourceVersion"].is_null(), "{v}");
    absent(&s, &format!("{CM}/new"));
    // ... and the same checks as a real create: a taken name is a conflict
    let taken = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}});
    let (code, v) = request(
        &s,
        "POST",
        &format!("{CM}?dryRun=All"),
        Some((json_ct, &taken)),
    );
    assert_eq!(
        (code, v["reason"].as_str()),
        (409, Some("AlreadyExists")),
        "{v}"
    );

    // update: the new content, at the version the object still has
    let mut changed = a.clone();
    changed["data"]["k"] = "changed".into();
    let (code, v) = request(
        &s,
        "PUT",
        &format!("{CM}/a?dryRun=All"),
        Some((json_ct, &changed)),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (&v["data"]["k"], &v["metadata"]["resourceVersion"]),
        (&json!("changed"), &rv)
    );
    // ... with the same precondition as a real update
    changed["metadata"]["resourceVersion"] = "1".into();
    let (code, v) = request(
        &s,
        "PUT",
        &format!("{CM}/a?dryRun=All"),
        Some((json_ct, &changed)),
    );
    assert_eq!(code, 409, "{v}");

    // patch, every content type, apply included
    for (ct, body) in [
        ("application/merge-patch+json", json!({"data": {"k": "m"}})),
        (
            "application/strategic-merge-patch+json",
            json!({"data": {"k": "s"}}),
        ),
        (
            "application/json-patch+json",
            json!([{"op": "replace", "path": "/data/k", "value": "j"}]),
        ),
        (
            "application/apply-patch+yaml",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "a"}}),
        ),
    ] {
        let path = format!("{CM}/a?dryRun=All&fieldManager=test&force=true");
        let (code, v) = request(&s, "PATCH", &path, Some((ct, &body)));
        assert_eq!(code, 200, "{ct}: {v}");
        assert_ne!(v["data"]["k"], "v", "{ct}: the response shows the patch");
    }
    let apply_new =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}});
    let (code, v) = request(
        &s,
        "PATCH",
        &format!("{CM}/applied?dryRun=All&fieldManager=test"),
        Some(("application/apply-patch+yaml", &apply_new)),
    );
    assert_eq!(code, 201, "{v}");
    absent(&s, &format!("{CM}/applied"));
    assert_eq!(get(&s, &format!("{CM}/a")), a, "configmap a changed");

    // status
    let status = json!({"status": {"phase": "Running"}});
    let (code, v) = request(
        &s,
        "PATCH",
        &format!("{PODS_PATH}/web/status?dryRun=All"),
        Some(("application/merge-patch+json", &status)),
    );
    assert_eq!(
        (code, &v["status"]["phase"]),
        (200, &json!("Running")),
        "{v}"
    );
    assert_eq!(
        get(&s, &format!("{PODS_PATH}/web"))["status"]["phase"],
        "Pending"
    );

    // scale: PUT and PATCH
    let deploy = "/apis/apps/v1/namespaces/default/deployments/d";
    let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": "d", "namespace": "default"}, "spec": {"replicas": 7}});
    let (code, v) = request(
        &s,
        "PUT",
        &format!("{deploy}/scale?dryRun=All"),
        Some((json_ct, &scale)),
    );
    assert_eq!((code, &v["spec"]["replicas"]), (200, &json!(7)), "{v}");
    let (code, v) = request(
        &s,
        "PATCH",
        &format!("{deploy}/scale?dryRun=All"),
        Some((
            "application/merge-patch+json",
            &json!({"spec": {"replicas": 9}}),
        )),
    );
    assert_eq!((code, &v["spec"]["replicas"]), (200, &json!(9)), "{v}");
    assert_eq!(get(&s, deploy)["spec"]["replicas"], 1);

    // binding, both paths: the scheduler's write, checked, not made
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web"},
        "target": {"kind": "Node", "name": "node1"}});
    for path in [
        format!("{PODS_PATH}/web/binding?dryRun=All"),
        "/api/v1/namespaces/default/bindings?dryRun=All".to_owned(),
    ] {
        let (code, v) = request(&s, "POST", &path, Some((json_ct, &binding)));
        assert_eq!(code, 201, "{path}: {v}");
        assert!(
            get(&s, &format!("{PODS_PATH}/web"))["spec"]["nodeName"].is_null(),
            "{path}"
        );
    }
    let (code, v) = request(
        &s,
        "POST",
        &format!("{PODS_PATH}/bound/binding?dryRun=All"),
        Some((
            json_ct,
            &json!({"metadata": {"name": "bound"}, "target": {"name": "node2"}}),
        )),
    );
    assert_eq!(
        code, 409,
        "an assigned pod refuses a binding, dry run or not: {v}"
    );

    // eviction, asked in the query or in its deleteOptions
    for (query, options) in [("?dryRun=All", json!({})), ("", json!({"dryRun": ["All"]}))] {
        let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": "bound"}, "deleteOptions": options});
        let (code, v) = request(
            &s,
            "POST",
            &format!("{PODS_PATH}/bound/eviction{query}"),
            Some((json_ct, &eviction)),
        );
        assert_eq!(code, 201, "{v}");
        let bound = get(&s, &format!("{PODS_PATH}/bound"));
        assert!(bound["metadata"]["deletionTimestamp"].is_null(), "{bound}");
    }

    // delete: a pod on a node answers as marked for graceful deletion
    let (code, v) = request(&s, "DELETE", &format!("{PODS_PATH}/bound?dryRun=All"), None);
    assert_eq!(code, 200, "{v}");
    assert!(v["metadata"]["deletionTimestamp"].is_string(), "{v}");
    let opts = json!({"kind": "DeleteOptions", "apiVersion": "v1", "dryRun": ["All"], "gracePeriodSeconds": 0});
    let (code, v) = request(
        &s,
        "DELETE",
        &format!("{PODS_PATH}/bound"),
        Some((json_ct, &opts)),
    );
    assert_eq!(code, 200, "{v}");
    let bound = get(&s, &format!("{PODS_PATH}/bound"));
    assert!(bound["metadata"]["deletionTimestamp"].is_null(), "{bound}");
    // delete collection
    let (code, v) = request(&s, "DELETE", &format!("{CM}?dryRun=All"), None);
    assert_eq!(code, 200, "{v}");
    assert_eq!(get(&s, &format!("{CM}/a")), a, "configmap a changed");
    let pod_names = |s: &ApiServer| -> Vec<Value> {
        get(s, PODS_PATH)["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["metadata"]["name"].clone())
            .collect()
    };
    let pods = pod_names(&s);
    let (code, v) = request(&s, "DELETE", PODS_PATH, Some((json_ct, &opts)));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["items"].as_array().unwrap().len(), pods.len(), "{v}");
    assert_eq!(pod_names(&s), pods);

    // namespace: delete and finalize
    let (code, v) = request(&s, "DELETE", "/api/v1/namespaces/tmp?dryRun=All", None);
    assert_eq!(
        (code, &v["status"]["phase"]),
        (200, &json!("Terminating")),
        "{v}"
    );
    let finalize = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tmp"},
        "spec": {"finalizers": []}});
    let (code, v) = request(
        &s,
        "PUT",
        "/api/v1/namespaces/tmp/finalize?dryRun=All",
        Some((json_ct, &finalize)),
    );
    assert_eq!(code, 200, "{v}");
    let tmp = get(&s, "/api/v1/namespaces/tmp");
    assert_eq!(tmp["status"]["phase"], "Active");
    assert_eq!(tmp["spec"]["finalizers"], json!(["kubernetes"]));

    // values other than All: ValidateDryRun's 422, before anything is done
    for (method, path) in [
        ("POST", format!("{CM}?dryRun=true")),
        ("POST", format!("{CM}?dryRun=All&dryRun=foo")),
        ("DELETE", format!("{CM}/a?dryRun=foo")),
    ] {
        let body = (method == "POST").then_some((json_ct, &new));
        let (code, v) = request(&s, method, &path, body);
        assert_eq!(
            (code, v["reason"].as_str()),
            (422, Some("Invalid")),
            "{path}: {v}"
        );
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains("dryRun: Unsupported value"),
            "{v}"
        );
    }
    absent(&s, &format!("{CM}/new"));
    get(&s, &format!("{CM}/a"));
}
