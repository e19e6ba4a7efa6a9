//! ServiceAccount tokens through the real kubectl: `kubectl create token`
//! (the TokenRequest API) issues a JWT with kube-apiserver's claims, the
//! token authenticates as `system:serviceaccount:<ns>:<name>` on the API
//! and in TokenReviews, and stops working once its ServiceAccount or the
//! pod it is bound to is deleted.

mod common;

use base64::Engine;
use common::ApiServer;
use serde_json::{Value, json};

/// The JWT's payload, as any JWT reader sees it.
fn payload(token: &str) -> Value {
    let part = token
        .trim()
        .split('.')
        .nth(1)
        .expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON payload")
}

/// A kubeconfig that authenticates with `token` only (no client certificate).
fn token_kubeconfig(s: &ApiServer, name: &str, token: &str) -> String {
    s.file(
        name,
        &format!(
            "apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {{server: '{}', certificate-authority: '{}'}}
users:
- name: u
  user: {{token: '{}'}}
contexts:
- name: c
  context: {{cluster: c, user: u}}
current-context: c
",
            s.url(),
            s.ca_file(),
            token.trim()
        ),
    )
}

/// kubectl as the token's user.
fn as_token(s: &ApiServer, kubeconfig: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--kubeconfig", kubeconfig];
    all.extend_from_slice(args);
    s.kubectl(&all)
}

/// Lets ServiceAccount `sa` of `default` read ServiceAccounts and Pods there
/// (RBAC gives a ServiceAccount nothing of its own).
fn grant_reading(s: &ApiServer, sa: &str) {
    s.ok(&[
        "create",
        "role",
        &format!("{sa}-reader"),
        "--verb=get",
        "--resource=serviceaccounts,pods",
    ]);
    s.ok(&[
        "create",
        "rolebinding",
        &format!("{sa}-reads"),
        &format!("--role={sa}-reader"),
        &format!("--serviceaccount=default:{sa}"),
    ]);
}

fn token_review(s: &ApiServer, token: &str, audiences: &[&str]) -> Value {
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "spec": {"token": token.trim(), "audiences": audiences}});
    let file = s.file("review.json", &body.to_string());
    serde_json::from_str(&s.ok(&[
        "create",
        "--raw",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        "-f",
        &file,
    ]))
    .unwrap()
}

#[test]
fn kubectl_create_token_issues_a_jwt_that_works_until_its_service_account_is_deleted() {
    let s = ApiServer::start();
    s.ok(&["create", "serviceaccount", "builder"]);
    let sa_uid = s.ok(&["get", "sa", "builder", "-o", "jsonpath={.metadata.uid}"]);
    let token = s.ok(&["create", "token", "builder", "--duration", "20m"]);
    let claims = payload(&token);
    let issuer = "https://kubernetes.default.svc.cluster.local";
    assert_eq!(claims["iss"], issuer, "{claims}");
    assert_eq!(claims["aud"], json!([issuer]));
    assert_eq!(claims["sub"], "system:serviceaccount:default:builder");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        1200
    );
    assert_eq!(claims["nbf"], claims["iat"]);
    assert_eq!(
        claims["kubernetes.io"],
        json!({"namespace": "default", "serviceaccount": {"name": "builder", "uid": sa_uid}})
    );

    // The token is a user of the API, with what RBAC grants it.
    let kc = token_kubeconfig(&s, "builder.kubeconfig", &token);
    let denied = as_token(&s, &kc, &["get", "sa", "builder", "-o", "name"]);
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains(
            r#"User "system:serviceaccount:default:builder" cannot get resource "serviceaccounts""#
        ),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    grant_reading(&s, "builder");
    let got = as_token(&s, &kc, &["get", "sa", "builder", "-o", "name"]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        "serviceaccount/builder"
    );
    let review = token_review(&s, &token, &[]);
    assert_eq!(
        review["status"],
        json!({"authenticated": true, "audiences": [issuer], "user": {
            "username": "system:serviceaccount:default:builder", "uid": sa_uid,
            "groups": ["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"]}}),
        "{review}"
    );
    // Asked about an audience the token is not for, it is refused.
    let other = token_review(&s, &token, &["vault"]);
    assert_eq!(other["status"]["authenticated"], false, "{other}");
    assert!(
        other["status"]["error"]
            .as_str()
            .unwrap()
            .contains("is invalid for the target audiences [\"vault\"]"),
        "{other}"
    );

    // Gone with its ServiceAccount, even if one of that name comes back.
    s.ok(&["delete", "sa", "builder"]);
    s.ok(&["create", "serviceaccount", "builder"]);
    let refused = as_token(&s, &kc, &["get", "sa", "builder"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("You must be logged in to the server (Unauthorized)"),
        "{err}"
    );
    let review = token_review(&s, &token, &[]);
    assert_eq!(
        review["status"],
        json!({"authenticated": false, "error": "[invalid bearer token, service account token has been invalidated]"}),
        "{review}"
    );
}

#[test]
fn tokens_bound_to_a_pod_die_with_it_and_bad_requests_get_upstreams_errors() {
    let s = ApiServer::start();
    s.ok(&["run", "web", "--image=busybox", "--", "sleep", "3600"]);
    let pod_uid = s.ok(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"]);
    let token = s.ok(&[
        "create",
        "token",
        "default",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "web",
        "--audience",
        "https://kubernetes.default.svc.cluster.local",
        "--audience",
        "vault",
    ]);
    let claims = payload(&token);
    assert_eq!(
        claims["kubernetes.io"]["pod"],
        json!({"name": "web", "uid": pod_uid})
    );
    assert_eq!(
        claims["aud"],
        json!(["https://kubernetes.default.svc.cluster.local", "vault"])
    );
    // The default lifetime is an hour.
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    let kc = token_kubeconfig(&s, "web.kubeconfig", &token);
    grant_reading(&s, "default");
    assert!(as_token(&s, &kc, &["get", "pod", "web"]).status.success());
    assert_eq!(
        token_review(&s, &token, &["vault"])["status"]["audiences"],
        json!(["vault"])
    );

    s.ok(&["delete", "pod", "web", "--grace-period=0", "--force"]);
    let refused = as_token(&s, &kc, &["get", "pods"]);
    assert!(
        !refused.status.success(),
        "a deleted pod's token still works"
    );

    // Bad requests, worded as kube-apiserver words them.
    let err = s.fails(&["create", "token", "nosuch"]);
    assert!(
        err.contains("serviceaccounts \"nosuch\" not found"),
        "{err}"
    );
    let err = s.fails(&["create", "token", "default", "--duration", "5m"]);
    assert!(
        err.contains(
            "spec.expirationSeconds: Invalid value: 300: may not specify a duration less than 10 minutes"
        ),
        "{err}"
    );
    s.ok(&["create", "serviceaccount", "other"]);
    s.ok(&["run", "db", "--image=busybox", "--", "sleep", "3600"]);
    let err = s.fails(&[
        "create",
        "token",
        "other",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "db",
    ]);
    assert!(
        err.contains(
            "cannot bind token for serviceaccount \"other\" to pod running with different serviceaccount name."
        ),
        "{err}"
    );
    let err = s.fails(&[
        "create",
        "token",
        "default",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "db",
        "--bound-object-uid",
        "not-its-uid",
    ]);
    assert!(
        err.contains(
            "the UID in the bound object reference (not-its-uid) does not match the UID in record"
        ),
        "{err}"
    );
}

/// kubectl as a node: `system:node:<node>` in `system:nodes`, by a token.
fn as_node(s: &ApiServer, node: &str, args: &[&str]) -> std::process::Output {
    let kubeconfig = token_kubeconfig(s, &format!("{node}.kubeconfig"), &format!("{node}-token"));
    as_token(s, &kubeconfig, args)
}

#[test]
fn a_node_gets_year_long_tokens_for_its_own_pods_and_none_for_others() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("tokens.csv");
    std::fs::write(
        &csv,
        "n1-token,system:node:n1,1,\"system:nodes\"\nn2-token,system:node:n2,2,\"system:nodes\"\n",
    )
    .unwrap();
    let s = ApiServer::start_with(&["--token-auth-file", csv.to_str().unwrap()]);
    let pods = s.file(
        "pods.yaml",
        "apiVersion: v1
kind: Pod
metadata: {name: web}
spec: {nodeName: n1, containers: [{name: c, image: busybox}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db}
spec: {nodeName: n2, containers: [{name: c, image: busybox}]}
",
    );
    s.ok(&["create", "-f", &pods]);
    let uid = |pod: &str| s.ok(&["get", "pod", pod, "-o", "jsonpath={.metadata.uid}"]);
    let (web, db) = (uid("web"), uid("db"));
    // What the kubelet asks for its projected token: bound to the pod, 3607 s.
    let request = |node: &str, pod: &str, pod_uid: &str| {
        as_node(
            &s,
            node,
            &[
                "create",
                "token",
                "default",
                "--duration",
                "3607s",
                "--bound-object-kind",
                "Pod",
                "--bound-object-name",
                pod,
                "--bound-object-uid",
                pod_uid,
            ],
        )
    };
    // The node authorizer learns of the pods through a watch.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let token = loop {
        let out = request("n1", "web", &web);
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let claims = payload(&token);
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    // --service-account-extend-token-expiration: a year, warning after 3607 s.
    assert_eq!(exp - iat, 365 * 24 * 3600);
    assert_eq!(
        claims["kubernetes.io"]["warnafter"].as_i64(),
        Some(iat + 3607)
    );
    assert_eq!(
        claims["kubernetes.io"]["pod"],
        json!({"name": "web", "uid": web})
    );
    assert_eq!(claims["kubernetes.io"]["node"]["name"], "n1");

    let refused = |out: std::process::Output| {
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused(request("n1", "db", &db));
    assert!(
        err.contains(
            r#"serviceaccounts "default" is forbidden: node requested token bound to a pod scheduled on a different node"#
        ),
        "{err}"
    );
    let err = refused(as_node(&s, "n1", &["create", "token", "default"]));
    assert!(
        err.contains("node requested token not bound to a pod"),
        "{err}"
    );
    let err = refused(request("n2", "db", "not-its-uid"));
    assert!(
        err.contains(
            "the UID in the bound object reference (not-its-uid) does not match the UID in record"
        ),
        "{err}"
    );
}

#[test]
fn tokens_survive_a_restart_and_the_signing_key_can_be_given() {
    let mut s = ApiServer::start();
    s.ok(&["create", "serviceaccount", "keeper"]);
    grant_reading(&s, "keeper");
    let token = s.ok(&["create", "token", "keeper"]);
    s.restart();
    let kc = token_kubeconfig(&s, "keeper.kubeconfig", &token);
    let got = as_token(&s, &kc, &["get", "sa", "keeper"]);
    assert!(
        got.status.success(),
        "a token from before the restart: {}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(s.data_dir().join("sa.key").exists());

    // Another apiserver with this one's key as its signing key accepts it
    // only for objects it has; with a key of its own it refuses it.
    let key = s.data_dir().join("sa.key");
    let other = ApiServer::start_with(&[
        "--service-account-signing-key-file",
        key.to_str().unwrap(),
        "--service-account-issuer",
        "https://issuer.example",
    ]);
    other.ok(&["create", "serviceaccount", "keeper"]);
    let t2 = other.ok(&["create", "token", "keeper"]);
    assert_eq!(payload(&t2)["iss"], "https://issuer.example");
    assert_eq!(
        jwt_kid(&t2),
        jwt_kid(&token),
        "the same key gives the same key id"
    );
}

fn jwt_kid(token: &str) -> String {
    let part = token.trim().split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "ES256");
    header["kid"].as_str().unwrap().to_owned()
}
