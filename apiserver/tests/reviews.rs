//! TokenReview and SubjectAccessReview, as a kubelet's webhooks ask them
//! (SubjectAccessReviews answered by `system:masters` and RBAC):
//! `kubectl create --raw` POSTs the review, the answer is the same object
//! with its status.

mod common;

use common::ApiServer;
use serde_json::{Value, json};

fn review(s: &ApiServer, path: &str, body: Value) -> Value {
    let file = s.file("review.json", &body.to_string());
    serde_json::from_str(&s.ok(&["create", "--raw", path, "-f", &file])).unwrap()
}

#[test]
fn token_reviews_answer_from_the_token_file() {
    let tokens = tempfile::tempdir().unwrap();
    let file = tokens.path().join("tokens.csv");
    std::fs::write(&file, "dev-token,dev,42,\"developers\"\n").unwrap();
    let s = ApiServer::start_with(&["--token-auth-file", file.to_str().unwrap()]);
    let path = "/apis/authentication.k8s.io/v1/tokenreviews";
    let tr = |token: &str| json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
    let ok = review(&s, path, tr("dev-token"));
    assert_eq!(ok["kind"], "TokenReview");
    assert_eq!(
        ok["status"],
        json!({"authenticated": true, "user": {"username": "dev", "uid": "42", "groups": ["developers", "system:authenticated"]}})
    );
    let bad = review(&s, path, tr("nope"));
    assert_eq!(bad["status"]["authenticated"], false);
    assert!(bad["status"].get("user").is_none(), "{bad}");
    let err = s.fails(&[
        "create",
        "--raw",
        path,
        "-f",
        &s.file("empty.json", &tr("").to_string()),
    ]);
    assert!(err.contains("spec.token: Required value"), "{err}");
}

#[test]
fn subject_access_reviews_answer_from_rbac() {
    let s = ApiServer::start();
    let path = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
    let sar = |user: &str, groups: &[&str]| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
            "user": user, "groups": groups,
            "resourceAttributes": {"verb": "create", "version": "v1", "resource": "nodes", "subresource": "proxy", "name": "node1"}}})
    };
    let admin = review(&s, path, sar("kubernetes-admin", &["system:masters"]));
    assert_eq!(admin["status"]["allowed"], true, "{admin}");
    let client = review(&s, path, sar("kube-apiserver-kubelet-client", &[]));
    assert_eq!(client["status"]["allowed"], true, "{client}");
    let dev = review(
        &s,
        path,
        sar("dev", &["developers", "system:authenticated"]),
    );
    assert_eq!(dev["status"]["allowed"], false, "{dev}");
    // RBAC decides for everyone else: a binding of the kubelet API role.
    s.ok(&[
        "create",
        "clusterrolebinding",
        "dev-kubelet-api",
        "--clusterrole=system:kubelet-api-admin",
        "--group=developers",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let dev = review(
            &s,
            path,
            sar("dev", &["developers", "system:authenticated"]),
        );
        if dev["status"]["allowed"] == true {
            assert!(
                dev["status"]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("ClusterRoleBinding \"dev-kubelet-api\""),
                "{dev}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{dev}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let neither = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {"user": "dev"}});
    let err = s.fails(&[
        "create",
        "--raw",
        path,
        "-f",
        &s.file("bad.json", &neither.to_string()),
    ]);
    assert!(
        err.contains(
            "exactly one of nonResourceAttributes or resourceAttributes must be specified"
        ),
        "{err}"
    );
}

#[test]
fn reviews_are_discovered_so_kubectl_create_f_finds_them() {
    let s = ApiServer::start();
    let names = s.ok(&[
        "api-resources",
        "--api-group=authorization.k8s.io",
        "-o",
        "name",
    ]);
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        [
            "localsubjectaccessreviews.authorization.k8s.io",
            "selfsubjectaccessreviews.authorization.k8s.io",
            "selfsubjectrulesreviews.authorization.k8s.io",
            "subjectaccessreviews.authorization.k8s.io",
        ]
    );
    let tr = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": "nope"}});
    let file = s.file("tokenreview.json", &tr.to_string());
    let out = s.ok(&["create", "-f", &file, "--validate=false"]);
    assert!(
        out.contains("tokenreview.authentication.k8s.io/") && out.contains("created"),
        "{out}"
    );
}
