//! The Certificates API as a user drives it: a CSR made with openssl,
//! `kubectl create`, `kubectl get csr`, `kubectl certificate approve|deny`,
//! and the certificate the cluster CA signs for it, checked with openssl
//! and used to talk to the apiserver.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{ApiServer, rows};

fn eventually<T>(s: &ApiServer, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: timed out\n{}", s.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A key and a PEM request for `subject` (`/O=devs/CN=alice`) made by
/// openssl, with `-addext` extensions; returns the key and request files.
fn openssl_request(s: &ApiServer, name: &str, subject: &str, addext: &[&str]) -> (String, String) {
    let key = s.file(&format!("{name}.key"), "");
    let req = s.file(&format!("{name}.csr"), "");
    let mut args = vec![
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &req, "-subj",
        subject,
    ];
    for e in addext {
        args.extend(["-addext", e]);
    }
    openssl(&args);
    (key, req)
}

fn csr_manifest(
    name: &str,
    request_file: &str,
    signer: &str,
    usages: &[&str],
    expiration: Option<u32>,
) -> String {
    let request =
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(request_file).unwrap());
    let usages: Vec<String> = usages.iter().map(|u| format!("  - {u}")).collect();
    let expiration = expiration.map_or(String::new(), |e| format!("  expirationSeconds: {e}\n"));
    format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {name}\nspec:\n  request: {request}\n  signerName: {signer}\n{expiration}  usages:\n{}\n",
        usages.join("\n")
    )
}

/// `kubectl auth whoami` with only a client certificate: user and groups.
fn whoami_with_certificate(s: &ApiServer, cert_file: &str, key_file: &str) -> String {
    let out = Command::new("/usr/bin/kubectl")
        .env("HOME", s.data_dir())
        .args(["--kubeconfig", "/dev/null", "--server", &s.url()])
        .args(["--certificate-authority", &s.ca_file()])
        .args(["--client-certificate", cert_file, "--client-key", key_file])
        .args(["auth", "whoami", "-o"])
        .arg("jsonpath={.status.userInfo.username} {.status.userInfo.groups}")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn create(s: &ApiServer, name: &str, manifest: &str) -> String {
    let file = s.file(&format!("{name}.yaml"), manifest);
    s.ok(&["create", "-f", &file])
}

fn issued(s: &ApiServer, name: &str) -> String {
    eventually(s, &format!("{name}'s certificate"), || {
        let b64 = s.ok(&["get", "csr", name, "-o", "jsonpath={.status.certificate}"]);
        (!b64.is_empty()).then(|| {
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap(),
            )
            .unwrap()
        })
    })
}

#[test]
fn kubectl_approves_a_request_and_the_cluster_ca_signs_it() {
    let s = ApiServer::start();
    let (key, req) = openssl_request(&s, "alice", "/O=devs/CN=alice", &[]);
    let out = create(
        &s,
        "alice",
        &csr_manifest(
            "alice",
            &req,
            "kubernetes.io/kube-apiserver-client",
            &["client auth"],
            Some(3600),
        ),
    );
    assert_eq!(
        out,
        "certificatesigningrequest.certificates.k8s.io/alice created\n"
    );
    let table = rows(&s.ok(&["get", "csr", "alice"]));
    assert_eq!(
        table[0],
        [
            "NAME",
            "AGE",
            "SIGNERNAME",
            "REQUESTOR",
            "REQUESTEDDURATION",
            "CONDITION"
        ]
    );
    assert_eq!(
        table[1][2..],
        [
            "kubernetes.io/kube-apiserver-client",
            "kubernetes-admin",
            "60m",
            "Pending"
        ]
    );
    // The requester is recorded by the server, not taken from the body.
    let groups = s.ok(&["get", "csr", "alice", "-o", "jsonpath={.spec.groups}"]);
    assert_eq!(groups, r#"["system:masters","system:authenticated"]"#);

    assert_eq!(
        s.ok(&["certificate", "approve", "alice"]),
        "certificatesigningrequest.certificates.k8s.io/alice approved\n"
    );
    let cert = issued(&s, "alice");
    let cert_file = s.file("alice.crt", &cert);
    assert_eq!(
        openssl(&["verify", "-CAfile", &s.ca_file(), &cert_file]),
        format!("{cert_file}: OK\n")
    );
    let text = openssl(&[
        "x509",
        "-in",
        &cert_file,
        "-noout",
        "-subject",
        "-ext",
        "extendedKeyUsage,basicConstraints",
    ]);
    assert!(text.contains("subject=O = devs, CN = alice"), "{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(!text.contains("TLS Web Server Authentication"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    // expirationSeconds (an hour) is honoured: valid for 55 more minutes,
    // not for 65.
    openssl(&["x509", "-in", &cert_file, "-noout", "-checkend", "3300"]);
    let later = Command::new("openssl")
        .args(["x509", "-in", &cert_file, "-noout", "-checkend", "3900"])
        .output()
        .unwrap();
    assert!(!later.status.success());
    let table = rows(&s.ok(&["get", "csr", "alice"]));
    assert_eq!(table[1][5], "Approved,Issued");

    // The certificate is alice's credential to the apiserver.
    let whoami = whoami_with_certificate(&s, &cert_file, &key);
    assert_eq!(whoami, r#"alice ["devs","system:authenticated"]"#);
}

#[test]
fn denied_requests_are_never_signed_and_refused_ones_fail() {
    let s = ApiServer::start();
    let (_, bob) = openssl_request(&s, "bob", "/CN=bob", &[]);
    create(
        &s,
        "bob",
        &csr_manifest(
            "bob",
            &bob,
            "kubernetes.io/kube-apiserver-client",
            &["client auth"],
            None,
        ),
    );
    assert_eq!(
        s.ok(&["certificate", "deny", "bob"]),
        "certificatesigningrequest.certificates.k8s.io/bob denied\n"
    );
    let reason = s.ok(&[
        "get",
        "csr",
        "bob",
        "-o",
        "jsonpath={.status.conditions[0].type} {.status.conditions[0].reason}",
    ]);
    assert_eq!(reason, "Denied KubectlDeny");
    // Once denied, kubectl will not approve it.
    let err = s.fails(&["certificate", "approve", "bob"]);
    assert!(err.contains("is already Denied"), "{err}");

    // A kubelet-serving request whose subject is no node's: the signer
    // fails it with its reason once approved.
    let (_, web) = openssl_request(
        &s,
        "web",
        "/O=system:nodes/CN=web",
        &["subjectAltName=DNS:web"],
    );
    create(
        &s,
        "web",
        &csr_manifest(
            "web",
            &web,
            "kubernetes.io/kubelet-serving",
            &["digital signature", "key encipherment", "server auth"],
            None,
        ),
    );
    s.ok(&["certificate", "approve", "web"]);
    let failed = eventually(&s, "the Failed condition", || {
        let c = s.ok(&["get", "csr", "web", "-o", "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason}: {.status.conditions[?(@.type==\"Failed\")].message}"]);
        (!c.starts_with(':')).then_some(c)
    });
    assert_eq!(
        failed,
        "SignerValidationFailure: subject common name does not begin with system:node:"
    );
    assert_eq!(rows(&s.ok(&["get", "csr", "web"]))[1][5], "Approved,Failed");
    // The signer had its turn at both: the denied one still has nothing.
    assert_eq!(
        s.ok(&["get", "csr", "bob", "-o", "jsonpath={.status.certificate}"]),
        ""
    );
}

#[test]
fn invalid_requests_are_refused_with_upstreams_messages() {
    let s = ApiServer::start();
    let (_, req) = openssl_request(&s, "x", "/CN=x", &[]);
    let legacy = s.file(
        "legacy.yaml",
        &csr_manifest(
            "legacy",
            &req,
            "kubernetes.io/legacy-unknown",
            &["client auth"],
            None,
        ),
    );
    let err = s.fails(&["create", "-f", &legacy]);
    assert!(
        err.contains("spec.signerName: Invalid value: \"kubernetes.io/legacy-unknown\": the legacy signerName is not allowed via this API version"),
        "{err}"
    );
    let short = s.file(
        "short.yaml",
        &csr_manifest(
            "short",
            &req,
            "example.com/signer",
            &["client auth"],
            Some(60),
        ),
    );
    let err = s.fails(&["create", "-f", &short]);
    assert!(
        err.contains("spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 600 seconds (10 minutes)"),
        "{err}"
    );
    let unsigned = s.file(
        "unsigned.yaml",
        &csr_manifest("unsigned", &s.ca_file(), "nodomain", &["client auth"], None),
    );
    let err = s.fails(&["create", "-f", &unsigned]);
    assert!(
        err.contains("PEM block type must be CERTIFICATE REQUEST"),
        "{err}"
    );
    assert!(
        err.contains("spec.signerName: Invalid value: \"nodomain\": must be a fully qualified domain and path of the form 'example.com/signer-name'"),
        "{err}"
    );
}

/// kubectl with only a bearer token, as a joining node holds one.
fn kubectl_as(s: &ApiServer, token: &str, args: &[&str]) -> std::process::Output {
    Command::new("/usr/bin/kubectl")
        .env("HOME", s.data_dir())
        .args([
            "--kubeconfig",
            "/dev/null",
            "--server",
            &s.url(),
            "--certificate-authority",
            &s.ca_file(),
        ])
        .args(["--token", token])
        .args(args)
        .output()
        .unwrap()
}

fn bootstrap_token_secret(s: &ApiServer, id: &str, expiration: &str) {
    s.ok(&[
        "-n",
        "kube-system",
        "create",
        "secret",
        "generic",
        &format!("bootstrap-token-{id}"),
        "--type",
        "bootstrap.kubernetes.io/token",
        "--from-literal",
        &format!("token-id={id}"),
        "--from-literal",
        "token-secret=0123456789abcdef",
        "--from-literal",
        "usage-bootstrap-authentication=true",
        "--from-literal",
        "auth-extra-groups=system:bootstrappers:kubeadm:default-node-token",
        "--from-literal",
        &format!("expiration={expiration}"),
    ]);
}

#[test]
fn a_bootstrap_token_gets_a_node_client_certificate_approved_but_not_a_serving_one() {
    let s = ApiServer::start_with(&["--enable-bootstrap-token-auth"]);
    bootstrap_token_secret(&s, "abcdef", "2099-01-01T00:00:00Z");
    bootstrap_token_secret(&s, "old123", "2020-01-01T00:00:00Z");
    // What kubeadm binds for joining nodes.
    s.ok(&[
        "create",
        "clusterrolebinding",
        "kubeadm:kubelet-bootstrap",
        "--clusterrole=system:node-bootstrapper",
        "--group=system:bootstrappers",
    ]);
    s.ok(&[
        "create",
        "clusterrolebinding",
        "kubeadm:node-autoapprove-bootstrap",
        "--clusterrole=system:certificates.k8s.io:certificatesigningrequests:nodeclient",
        "--group=system:bootstrappers",
    ]);
    let token = "abcdef.0123456789abcdef";
    let whoami = kubectl_as(
        &s,
        token,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&whoami.stdout),
        r#"system:bootstrap:abcdef ["system:bootstrappers","system:bootstrappers:kubeadm:default-node-token","system:authenticated"]"#,
        "{}",
        String::from_utf8_lossy(&whoami.stderr)
    );
    let expired = kubectl_as(&s, "old123.0123456789abcdef", &["get", "csr"]);
    assert!(!expired.status.success());
    assert!(
        String::from_utf8_lossy(&expired.stderr)
            .contains("error: You must be logged in to the server"),
        "{}",
        String::from_utf8_lossy(&expired.stderr)
    );

    let (_, serving) = openssl_request(
        &s,
        "serving",
        "/O=system:nodes/CN=system:node:n1",
        &["subjectAltName=IP:10.0.0.1"],
    );
    let file = s.file(
        "serving.yaml",
        &csr_manifest(
            "serving-n1",
            &serving,
            "kubernetes.io/kubelet-serving",
            &["digital signature", "key encipherment", "server auth"],
            None,
        ),
    );
    let out = kubectl_as(&s, token, &["create", "-f", &file]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (key, client) = openssl_request(&s, "client", "/O=system:nodes/CN=system:node:n1", &[]);
    let file = s.file(
        "client.yaml",
        &csr_manifest(
            "client-n1",
            &client,
            "kubernetes.io/kube-apiserver-client-kubelet",
            &["digital signature", "key encipherment", "client auth"],
            None,
        ),
    );
    let out = kubectl_as(&s, token, &["create", "-f", &file]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let cert = issued(&s, "client-n1");
    let approval = s.ok(&[
        "get",
        "csr",
        "client-n1",
        "-o",
        "jsonpath={.status.conditions[0].reason}: {.status.conditions[0].message}",
    ]);
    assert_eq!(
        approval,
        "AutoApproved: Auto approving kubelet client certificate after SubjectAccessReview."
    );
    let table = rows(&s.ok(&["get", "csr", "client-n1", "serving-n1"]));
    assert_eq!(
        table[1][3..],
        ["system:bootstrap:abcdef", "<none>", "Approved,Issued"]
    );
    assert_eq!(
        table[2][3..],
        ["system:bootstrap:abcdef", "<none>", "Pending"]
    );

    // The certificate makes its holder the node.
    let cert_file = s.file("n1.crt", &cert);
    let whoami = whoami_with_certificate(&s, &cert_file, &key);
    assert_eq!(
        whoami,
        r#"system:node:n1 ["system:nodes","system:authenticated"]"#
    );
}
