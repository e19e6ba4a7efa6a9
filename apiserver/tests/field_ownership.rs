//! Field ownership as kubectl shows it: every write records its manager in
//! `metadata.managedFields`, server-side apply conflicts, forces and
//! prunes by ownership, and strategic merge follows each field's patch
//! metadata (taints are one atomic list).

mod common;

use common::{ApiServer, NODE1};
use serde_json::Value;

fn managed(s: &ApiServer, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json", "--show-managed-fields"]);
    let v: Value = serde_json::from_str(&s.ok(&a)).unwrap();
    v["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn entry<'a>(fields: &'a [Value], manager: &str) -> &'a Value {
    fields
        .iter()
        .find(|e| e["manager"] == manager)
        .unwrap_or_else(|| panic!("no {manager} in {fields:#?}"))
}

#[test]
fn kubectl_writes_record_their_managers_and_fields() {
    let s = ApiServer::start();
    s.ok(&["create", "configmap", "cfg", "--from-literal=a=1"]);
    let fields = managed(&s, &["cm", "cfg"]);
    let create = entry(&fields, "kubectl-create");
    assert_eq!(create["operation"], "Update");
    assert_eq!(create["apiVersion"], "v1");
    assert_eq!(create["fieldsType"], "FieldsV1");
    assert!(create["time"].is_string(), "{create}");
    assert_eq!(
        create["fieldsV1"],
        serde_json::json!({"f:data": {".": {}, "f:a": {}}})
    );
    // The default output leaves them out, as kubectl does.
    assert!(
        !s.ok(&["get", "cm", "cfg", "-o", "yaml"])
            .contains("managedFields")
    );

    s.ok(&["label", "cm", "cfg", "tier=web"]);
    let fields = managed(&s, &["cm", "cfg"]);
    assert_eq!(
        entry(&fields, "kubectl-label")["fieldsV1"],
        serde_json::json!({"f:metadata": {"f:labels": {".": {}, "f:tier": {}}}})
    );

    s.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.25",
        "--replicas=1",
    ]);
    s.ok(&["set", "image", "deployment/web", "nginx=nginx:1.26"]);
    let fields = managed(&s, &["deployment", "web"]);
    let set = entry(&fields, "kubectl-set");
    assert_eq!(
        set["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"]
            ["f:image"],
        serde_json::json!({})
    );
    // The image moved from kubectl-create to kubectl-set.
    let create = entry(&fields, "kubectl-create");
    assert!(
        create["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
            ["k:{\"name\":\"nginx\"}"]
            .get("f:image")
            .is_none(),
        "{create}"
    );

    // Client-side apply keeps working, under its own manager.
    let cm = s.file(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  k: \"1\"\n",
    );
    assert_eq!(
        s.ok(&["apply", "-f", &cm]).trim(),
        "configmap/applied created"
    );
    assert_eq!(
        s.ok(&["apply", "-f", &cm]).trim(),
        "configmap/applied unchanged"
    );
    entry(
        &managed(&s, &["cm", "applied"]),
        "kubectl-client-side-apply",
    );
}

const APPLIED: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: owned
  labels:
    x: \"1\"
    q: \"1\"
data:
  k: v
";

#[test]
fn server_side_apply_conflicts_forces_and_removes_dropped_fields() {
    let s = ApiServer::start();
    let first = s.file("first.yaml", APPLIED);
    assert_eq!(
        s.ok(&["apply", "--server-side", "-f", &first]).trim(),
        "configmap/owned serverside-applied"
    );
    let fields = managed(&s, &["cm", "owned"]);
    let kubectl = entry(&fields, "kubectl");
    assert_eq!(kubectl["operation"], "Apply");

    // Another manager changing x conflicts, with kube-apiserver's message.
    let other = s.file("other.yaml", &APPLIED.replace("x: \"1\"", "x: \"2\""));
    let err = s.fails(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "-f",
        &other,
    ]);
    assert!(
        err.contains(
            r#"Apply failed with 1 conflict: conflict with "kubectl": .metadata.labels.x"#
        ),
        "{err}"
    );
    assert_eq!(
        s.ok(&["get", "cm", "owned", "-o", "jsonpath={.metadata.labels.x}"]),
        "1"
    );
    // --force-conflicts takes x over.
    s.ok(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "--force-conflicts",
        "-f",
        &other,
    ]);
    assert_eq!(
        s.ok(&["get", "cm", "owned", "-o", "jsonpath={.metadata.labels.x}"]),
        "2"
    );
    let fields = managed(&s, &["cm", "owned"]);
    assert!(
        entry(&fields, "kubectl")["fieldsV1"]["f:metadata"]["f:labels"]
            .get("f:x")
            .is_none()
    );

    // A field only kubectl applied goes when its manifest drops it; one
    // that another manager applied too stays.
    let cm = |labels: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owned\n  labels:\n{labels}data:\n  k: v\n"
        )
    };
    let with_z = s.file("z.yaml", &cm("    q: \"1\"\n    z: \"1\"\n"));
    s.ok(&["apply", "--server-side", "-f", &with_z]);
    assert_eq!(
        s.ok(&["get", "cm", "owned", "-o", "jsonpath={.metadata.labels}"]),
        r#"{"q":"1","x":"2","z":"1"}"#
    );
    let without_z = s.file("noz.yaml", &cm("    q: \"1\"\n"));
    s.ok(&["apply", "--server-side", "-f", &without_z]);
    assert_eq!(
        s.ok(&["get", "cm", "owned", "-o", "jsonpath={.metadata.labels}"]),
        r#"{"q":"1","x":"2"}"#
    );
    let no_labels = s.file("none.yaml", &cm("    {}\n"));
    s.ok(&["apply", "--server-side", "-f", &no_labels]);
    assert_eq!(
        s.ok(&["get", "cm", "owned", "-o", "jsonpath={.metadata.labels}"]),
        r#"{"q":"1","x":"2"}"#
    );

    // A field an updater owns conflicts as that updater at its version.
    s.ok(&["label", "cm", "owned", "w=1"]);
    let w = s.file(
        "w.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owned\n  labels:\n    w: \"2\"\n",
    );
    let err = s.fails(&["apply", "--server-side", "--field-manager=third", "-f", &w]);
    assert!(
        err.contains(
            r#"Apply failed with 1 conflict: conflict with "kubectl-label" using v1: .metadata.labels.w"#
        ),
        "{err}"
    );
}

#[test]
fn taints_are_one_list_and_removing_one_by_key_and_effect_leaves_the_other() {
    let s = ApiServer::start_with(&["--disable-scheduler"]);
    s.ok(&["create", "-f", &s.file("node.yaml", NODE1)]);
    s.ok(&[
        "taint",
        "node",
        "node1",
        "k=v1:NoSchedule",
        "k=v2:NoExecute",
    ]);
    entry(&managed(&s, &["node", "node1"]), "kubectl-taint");
    s.ok(&["taint", "node", "node1", "k:NoSchedule-"]);
    let taints: Value =
        serde_json::from_str(&s.ok(&["get", "node", "node1", "-o", "jsonpath={.spec.taints}"]))
            .unwrap();
    assert_eq!(
        taints,
        serde_json::json!([{"key": "k", "value": "v2", "effect": "NoExecute"}])
    );
}

#[test]
fn client_side_applied_objects_move_to_server_side_apply_without_conflicts() {
    let s = ApiServer::start();
    let cm = |x: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: moved\n  labels: {{x: \"{x}\"}}\ndata: {{k: \"{x}\"}}\n"
        )
    };
    s.ok(&["apply", "-f", &s.file("csa.yaml", &cm("1"))]);
    let changed = s.file("ssa.yaml", &cm("2"));
    // Another manager's apply is refused over what client-side apply set…
    let err = s.fails(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "-f",
        &changed,
    ]);
    assert!(
        err.contains("conflicts with \"kubectl-client-side-apply\""),
        "{err}"
    );
    // …kubectl's own takes the object over, and keeps the annotation in
    // step so a client-side apply after it diffs against what it applied.
    s.ok(&["apply", "--server-side", "-f", &changed]);
    let fields = managed(&s, &["cm", "moved"]);
    assert_eq!(entry(&fields, "kubectl")["operation"], "Apply");
    assert!(
        !fields
            .iter()
            .any(|e| e["manager"] == "kubectl-client-side-apply"),
        "{fields:#?}"
    );
    let last = s.ok(&["apply", "view-last-applied", "cm/moved", "-o", "json"]);
    let last: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(last["data"]["k"], "2");
    s.ok(&["apply", "-f", &s.file("csa3.yaml", &cm("3"))]);
    assert_eq!(
        s.ok(&["get", "cm", "moved", "-o", "jsonpath={.data.k}"]),
        "3"
    );
}
