//! In-cluster credentials end to end: a pod with the projected
//! `kube-api-access-*` volume (a bound ServiceAccount token, the cluster's
//! CA from the `kube-root-ca.crt` ConfigMap, the namespace) finds them at
//! `/var/run/secrets/kubernetes.io/serviceaccount`; the token, requested by
//! the agent with TokenRequest, authenticates as the pod's ServiceAccount;
//! a real kubectl run inside the pod with in-cluster config reaches the
//! API through the `kubernetes` Service (the node's service proxy) as that
//! ServiceAccount, refused until a RoleBinding grants it; and with
//! `--service-account-max-token-expiration` capping tokens to 30 s the
//! agent replaces the file under the running container before the token
//! expires, and the new token works; a token that cannot be had is a
//! FailedMount event in the kubelet's words.

mod common;
#[path = "common/netns_cluster.rs"]
mod netns_cluster;

use std::time::Duration;

use netns_cluster::{API_PORT, NetnsCluster};
use serde_json::Value;

const NODE_IP: &str = "192.168.84.1";
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The kubectl releases on this machine, mounted into the pod.
const KUBECTL_DIR: &str = "/usr/lib/google-cloud-sdk/bin";

/// The JWT's claims, unverified (the apiserver verifies them on use).
fn claims(token: &str) -> Value {
    let token = token.trim();
    let header = jsonwebtoken::decode_header(token).expect("a JWT");
    let mut read = jsonwebtoken::Validation::new(header.alg);
    read.insecure_disable_signature_validation();
    read.validate_exp = false;
    read.validate_aud = false;
    read.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(token, &jsonwebtoken::DecodingKey::from_secret(&[]), &read)
        .expect("JSON claims")
        .claims
}

/// The pod: its ServiceAccount's token volume as ServiceAccount admission
/// makes it (named with admission's prefix, so admission adds no second
/// one), and the node's kubectl binaries.
fn pod(node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: in-cluster
spec:
  nodeName: {node}
  serviceAccountName: reader
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox
    command: ["sleep", "3600"]
    volumeMounts:
    - {{name: kube-api-access-test, mountPath: {SA_DIR}, readOnly: true}}
    - {{name: kubectl, mountPath: /kubectl, readOnly: true}}
  volumes:
  - name: kube-api-access-test
    projected:
      defaultMode: 420
      sources:
      - serviceAccountToken: {{path: token, expirationSeconds: 3607}}
      - configMap:
          name: kube-root-ca.crt
          items: [{{key: ca.crt, path: ca.crt}}]
      - downwardAPI:
          items:
          - path: namespace
            fieldRef: {{apiVersion: v1, fieldPath: metadata.namespace}}
  - name: kubectl
    hostPath: {{path: {KUBECTL_DIR}, type: Directory}}
"#
    )
}

/// kubectl inside the pod, with no kubeconfig: in-cluster config.
fn in_pod_kubectl(c: &NetnsCluster, version: &str, args: &str) -> std::process::Output {
    c.exec(
        "in-cluster",
        &format!("HOME=/tmp /kubectl/kubectl.{version} --cache-dir=/tmp/kube-cache {args} 2>&1"),
    )
}

/// kubectl on the node authenticating with `token` alone.
fn with_token(c: &NetnsCluster, token: &str, args: &[&str]) -> std::process::Output {
    let server = format!("https://{NODE_IP}:{API_PORT}");
    let ca = c.dir.path().join("ca.crt");
    let mut all = vec![
        "--kubeconfig=/dev/null",
        "--server",
        &server,
        "--certificate-authority",
        ca.to_str().unwrap(),
        "--token",
        token.trim(),
    ];
    all.extend_from_slice(args);
    c.kubectl_with(&all, None)
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_pod_reaches_the_api_as_its_service_account_with_a_token_the_agent_rotates() {
    let c = NetnsCluster::start(
        "kl-satoken",
        NODE_IP,
        "10.154.7.0/24",
        &["--service-account-max-token-expiration=30s"],
        &[],
    );
    let node = c.node.node_name.clone();
    c.kubectl(&["create", "serviceaccount", "reader"]);
    // The CA's ConfigMap, unless the apiserver publishes it already.
    let ca_file = c.dir.path().join("ca.crt");
    let ca = std::fs::read_to_string(&ca_file).unwrap();
    let published = c.kubectl_with(&["get", "configmap", "kube-root-ca.crt"], None);
    if !published.status.success() {
        let made = c.kubectl_with(
            &[
                "create",
                "configmap",
                "kube-root-ca.crt",
                &format!("--from-file=ca.crt={}", ca_file.display()),
            ],
            None,
        );
        assert!(
            made.status.success() || text(&made).contains("AlreadyExists"),
            "{}",
            text(&made)
        );
    }
    c.apply(&pod(&node));
    c.wait_running("in-cluster");

    // The three files, as a client library reads them.
    let token = c.exec_ok("in-cluster", &format!("cat {SA_DIR}/token"));
    assert_eq!(c.exec_ok("in-cluster", &format!("cat {SA_DIR}/ca.crt")), ca);
    assert_eq!(
        c.exec_ok("in-cluster", &format!("cat {SA_DIR}/namespace")),
        "default"
    );
    let first = claims(&token);
    let pod_uid = c.kubectl(&["get", "pod", "in-cluster", "-o", "jsonpath={.metadata.uid}"]);
    assert_eq!(
        first["sub"], "system:serviceaccount:default:reader",
        "{first}"
    );
    assert_eq!(first["kubernetes.io"]["pod"]["name"], "in-cluster");
    assert_eq!(first["kubernetes.io"]["pod"]["uid"], pod_uid.as_str());
    assert_eq!(first["kubernetes.io"]["node"]["name"], node.as_str());
    assert_eq!(
        first["exp"].as_i64().unwrap() - first["iat"].as_i64().unwrap(),
        30,
        "the 3607 s asked for are capped by --service-account-max-token-expiration: {first}"
    );

    // The token is the ServiceAccount, for the API.
    let whoami = with_token(
        &c,
        &token,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert_eq!(text(&whoami), "system:serviceaccount:default:reader");

    // The pod's own view: the kubernetes Service in its environment, and
    // kubectl with in-cluster config reaching the API through it.
    let service_ip = c.kubectl(&[
        "get",
        "svc",
        "kubernetes",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert_eq!(
        c.exec_ok(
            "in-cluster",
            "echo $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"
        )
        .trim(),
        format!("{service_ip}:443")
    );
    let server_minor = c.kubectl(&["version", "-o", "json"]);
    let server_minor: Value = serde_json::from_str(&server_minor).unwrap();
    let minor = server_minor["serverVersion"]["minor"]
        .as_str()
        .unwrap()
        .trim_end_matches('+')
        .to_string();
    let version = format!("1.{minor}");
    let me = in_pod_kubectl(
        &c,
        &version,
        "auth whoami -o jsonpath={.status.userInfo.username}",
    );
    assert_eq!(text(&me), "system:serviceaccount:default:reader");
    // RBAC gives a ServiceAccount nothing until a binding does.
    let denied = in_pod_kubectl(&c, &version, "get pods -o name");
    assert!(!denied.status.success());
    assert!(
        text(&denied).contains(
            r#"User "system:serviceaccount:default:reader" cannot list resource "pods" in API group "" in the namespace "default""#
        ),
        "{}",
        text(&denied)
    );
    c.kubectl(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get,list",
        "--resource=pods",
    ]);
    c.kubectl(&[
        "create",
        "rolebinding",
        "reader-reads-pods",
        "--role=pod-reader",
        "--serviceaccount=default:reader",
    ]);
    let allowed = c.wait_for("the RoleBinding to apply", Duration::from_secs(30), || {
        let out = in_pod_kubectl(&c, &version, "get pods -o name");
        out.status.success().then(|| text(&out))
    });
    assert_eq!(allowed.trim(), "pod/in-cluster");

    // Rotation: the agent asks for a new token once 80% of the 30 s are
    // gone (less up to 10 s of jitter) and rewrites the file in place.
    let rotated = c.wait_for("a new token in the file", Duration::from_secs(60), || {
        let now = c.exec_ok("in-cluster", &format!("cat {SA_DIR}/token"));
        (now != token).then_some(now)
    });
    let second = claims(&rotated);
    assert!(
        second["iat"].as_i64() > first["iat"].as_i64(),
        "{first} then {second}"
    );
    assert_ne!(second["jti"], first["jti"]);
    assert_eq!(second["sub"], "system:serviceaccount:default:reader");
    assert_eq!(
        c.kubectl(&[
            "get",
            "pod",
            "in-cluster",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}"
        ]),
        "0",
        "the same container saw the file change"
    );
    let whoami = with_token(
        &c,
        &rotated,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert_eq!(text(&whoami), "system:serviceaccount:default:reader");
    let listed = in_pod_kubectl(&c, &version, "get pods -o name");
    assert_eq!(text(&listed).trim(), "pod/in-cluster");

    // No token to be had: the running container keeps the last one until
    // it expires, then a FailedMount event says why; once the
    // ServiceAccount is back the file gets a token that works again.
    c.kubectl(&["delete", "serviceaccount", "reader"]);
    let failed = c.wait_for("a FailedMount event", Duration::from_secs(90), || {
        let events: Value =
            serde_json::from_str(&c.kubectl(&["get", "events", "-o", "json"])).unwrap();
        events["items"]
            .as_array()?
            .iter()
            .filter(|e| e["involvedObject"]["name"] == "in-cluster" && e["reason"] == "FailedMount")
            .find_map(|e| e["message"].as_str().map(String::from))
    });
    assert!(
        failed.starts_with(r#"MountVolume.SetUp failed for volume "kube-api-access-test" : token "reader"/"default"/"#)
            && failed.ends_with(r#"expired and refresh failed: serviceaccounts "reader" not found"#),
        "{failed}"
    );
    c.kubectl(&["create", "serviceaccount", "reader"]);
    let renewed = c.wait_for(
        "a token of the new ServiceAccount",
        Duration::from_secs(60),
        || {
            let now = c.exec_ok("in-cluster", &format!("cat {SA_DIR}/token"));
            (now != rotated).then_some(now)
        },
    );
    let whoami = with_token(
        &c,
        &renewed,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert_eq!(text(&whoami), "system:serviceaccount:default:reader");

    // A deleted pod's tokens stop working with it.
    c.kubectl(&[
        "delete",
        "pod",
        "in-cluster",
        "--wait=true",
        "--timeout=60s",
    ]);
    let gone = with_token(&c, &renewed, &["auth", "whoami"]);
    assert!(!gone.status.success(), "{}", text(&gone));
}
