//! TLS bootstrapping as a joining node does it: the agent starts with only
//! a bootstrap kubeconfig (a bootstrap token), gets its client certificate
//! approved and issued, writes `--kubeconfig` and runs as
//! `system:node:<name>` (NodeRestriction then holds it); with
//! `--rotate-server-certificates` its `--port` serves nothing until an
//! administrator approves its kubelet-serving request, then serves with a
//! certificate the cluster CA signed, which the apiserver checks
//! (`--kubelet-certificate-authority`) when `kubectl logs` goes through it.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::process::Command;
use std::time::Duration;

use cluster::{ApiServer, api_pod, wait_for};
use common::TestNode;

/// With the ServiceAccount token volume (its `kube-root-ca.crt` ConfigMap
/// is read as the node: one object at a time).
const SHELL: &str = "  containers:
  - name: main
    image: busybox
    command: [\"sh\", \"-c\", \"echo hello from main; exec sleep 3600\"]
";

/// kubectl as whoever `kubeconfig` names.
fn kubectl_as(
    kubeconfig: &std::path::Path,
    home: &std::path::Path,
    args: &[&str],
) -> (bool, String, String) {
    let out = Command::new("/usr/bin/kubectl")
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_node_joins_with_a_bootstrap_token_and_serves_with_a_certificate_the_admin_approved() {
    let dir = ApiServer::data_dir();
    let ca = dir.path().join("ca.crt");
    let api = ApiServer::start_in(
        dir,
        &[
            "--enable-bootstrap-token-auth",
            "--kubelet-certificate-authority",
            ca.to_str().unwrap(),
        ],
    );
    // What `kubeadm token create` and kubeadm's bootstrap bindings make.
    api.kubectl(&[
        "-n",
        "kube-system",
        "create",
        "secret",
        "generic",
        "bootstrap-token-abcdef",
        "--type",
        "bootstrap.kubernetes.io/token",
        "--from-literal",
        "token-id=abcdef",
        "--from-literal",
        "token-secret=0123456789abcdef",
        "--from-literal",
        "usage-bootstrap-authentication=true",
        "--from-literal",
        "auth-extra-groups=system:bootstrappers:kubeadm:default-node-token",
    ]);
    api.kubectl(&[
        "create",
        "clusterrolebinding",
        "kubeadm:kubelet-bootstrap",
        "--clusterrole=system:node-bootstrapper",
        "--group=system:bootstrappers",
    ]);
    api.kubectl(&[
        "create",
        "clusterrolebinding",
        "kubeadm:node-autoapprove-bootstrap",
        "--clusterrole=system:certificates.k8s.io:certificatesigningrequests:nodeclient",
        "--group=system:bootstrappers",
    ]);
    let server = api.kubectl(&[
        "config",
        "view",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let node_files = tempfile::tempdir().unwrap();
    let bootstrap = node_files.path().join("bootstrap-kubelet.conf");
    std::fs::write(
        &bootstrap,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kubelab\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: tls-bootstrap-token-user\n  user:\n    token: abcdef.0123456789abcdef\ncontexts:\n- name: tls-bootstrap-token-user@kubelab\n  context:\n    cluster: kubelab\n    user: tls-bootstrap-token-user\ncurrent-context: tls-bootstrap-token-user@kubelab\n",
            ca.display()
        ),
    )
    .unwrap();
    let kubeconfig = node_files.path().join("kubelet.conf");
    let port = common::free_port().to_string();
    let node = TestNode::start_with(&[
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--bootstrap-kubeconfig",
        bootstrap.to_str().unwrap(),
        "--rotate-server-certificates",
        "--node-ip",
        "127.0.0.1",
        "--port",
        &port,
        "--client-ca-file",
        ca.to_str().unwrap(),
        "--authentication-token-webhook",
        "--authorization-mode",
        "Webhook",
    ]);
    let name = node.node_name.clone();

    // The client certificate: auto-approved, issued, and the agent is the node.
    let client_pem = node.state_dir().join("pki/kubelet-client-current.pem");
    assert!(client_pem.exists(), "{}", node.agent_log());
    let written = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(
        written.contains(&format!("client-certificate: {}", client_pem.display())),
        "{written}"
    );
    let home = node_files.path();
    let (_, whoami, err) = kubectl_as(
        &kubeconfig,
        home,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
        ],
    );
    assert_eq!(
        whoami,
        format!(r#"system:node:{name} ["system:nodes","system:authenticated"]"#),
        "{err}"
    );
    let other = node_files.path().join("other-node.yaml");
    std::fs::write(
        &other,
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: other-node\n",
    )
    .unwrap();
    let (ok, _, err) = kubectl_as(
        &kubeconfig,
        home,
        &["create", "-f", other.to_str().unwrap()],
    );
    assert!(
        !ok && err.contains(&format!(
            "node \"{name}\" is not allowed to modify node \"other-node\""
        )),
        "NodeRestriction holds the node: {err}"
    );
    wait_for(
        &node,
        "the Node registered by the node",
        Duration::from_secs(60),
        || api.try_kubectl(&["get", "node", &name, "-o", "name"]),
    );
    let csrs = api.kubectl(&["get", "csr", "-o", "jsonpath={range .items[*]}{.spec.username} {.spec.signerName} {.status.conditions[0].reason}{\"\\n\"}{end}"]);
    assert!(
        csrs.contains(
            "system:bootstrap:abcdef kubernetes.io/kube-apiserver-client-kubelet AutoApproved"
        ),
        "{csrs}"
    );

    // The serving certificate waits for the administrator; until then the
    // apiserver cannot read logs from the node.
    api.apply(&api_pod("shell", &name, SHELL));
    wait_for(&node, "pod running", Duration::from_secs(60), || {
        let phase = api.try_kubectl(&["get", "pod", "shell", "-o", "jsonpath={.status.phase}"])?;
        (phase == "Running").then_some(())
    });
    let serving = wait_for(
        &node,
        "the kubelet-serving request",
        Duration::from_secs(30),
        || {
            let names = api.kubectl(&[
            "get", "csr", "-o",
            &format!("jsonpath={{.items[?(@.spec.signerName==\"kubernetes.io/kubelet-serving\")].metadata.name}}"),
        ]);
            (!names.is_empty()).then_some(names)
        },
    );
    let pending = api.kubectl(&[
        "get",
        "csr",
        &serving,
        "-o",
        "jsonpath={.spec.username} {.status}",
    ]);
    assert_eq!(pending, format!("system:node:{name} {{}}"));
    assert!(
        api.try_kubectl(&["logs", "shell"]).is_none(),
        "no serving certificate yet"
    );
    assert_eq!(
        api.kubectl(&["certificate", "approve", &serving]),
        format!("certificatesigningrequest.certificates.k8s.io/{serving} approved\n")
    );
    let logs = wait_for(
        &node,
        "logs through a verified kubelet certificate",
        Duration::from_secs(60),
        || api.try_kubectl(&["logs", "shell"]),
    );
    assert_eq!(logs, "hello from main\n");
    assert!(
        node.state_dir()
            .join("pki/kubelet-server-current.pem")
            .exists()
    );
    api.delete_all_pods();
}
