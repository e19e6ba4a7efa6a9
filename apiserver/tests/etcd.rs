//! The apiserver on a real etcd (`--etcd-servers`), judged by kubectl: the
//! objects live in etcd under `/registry/...`, survive an apiserver restart,
//! and resourceVersions are etcd's revisions.

mod common;

use common::etcd::EtcdServer;
use common::{ApiServer, POD_WEB, rows};

#[test]
fn kubectl_workflow_on_etcd_survives_an_apiserver_restart() {
    let etcd = EtcdServer::start();
    let mut s = ApiServer::start_with(&["--etcd-servers", &etcd.url()]);
    let pod = s.file("pod.yaml", POD_WEB);
    assert_eq!(s.ok(&["create", "-f", &pod]).trim(), "pod/web created");
    assert!(
        s.fails(&["create", "-f", &pod])
            .contains(r#"pods "web" already exists"#)
    );
    assert_eq!(
        s.ok(&["label", "pod", "web", "tier=front"]).trim(),
        "pod/web labeled"
    );
    let table = rows(&s.ok(&["get", "pods", "-l", "tier=front"]));
    assert_eq!(table[1][..3], ["web", "0/1", "Pending"]);

    // A stale resourceVersion is a conflict, as etcd's txn compare decides.
    let stale = s.ok(&["get", "pod", "web", "-o", "json"]);
    s.ok(&["label", "pod", "web", "tier=back", "--overwrite"]);
    let replace = s.file("stale.json", &stale);
    let err = s.fails(&["replace", "-f", &replace]);
    assert!(
        err.contains("Conflict") || err.contains("the object has been modified"),
        "{err}"
    );

    s.restart();
    let got = s.ok(&[
        "get",
        "pod",
        "web",
        "-o",
        "jsonpath={.metadata.labels.tier} {.metadata.resourceVersion}",
    ]);
    let (tier, rv) = got.split_once(' ').unwrap();
    assert_eq!(tier, "back");
    assert!(rv.parse::<u64>().unwrap() > 1, "{got}");
    assert!(
        rows(&s.ok(&["get", "namespaces"]))
            .iter()
            .any(|r| r[0] == "kube-system")
    );
    assert_eq!(
        s.ok(&["delete", "pod", "web"]).trim(),
        r#"pod "web" deleted"#
    );
    assert!(
        s.fails(&["get", "pod", "web"])
            .contains(r#"pods "web" not found"#)
    );
    drop(s);
    drop(etcd);
}
