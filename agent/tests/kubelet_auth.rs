//! The kubelet API's authentication and authorization, tried as a user and
//! an attacker would: `curl` against `--port` (HTTPS) with no credentials, a
//! wrong token, the token of a user outside `system:masters`, an admin's
//! token and the apiserver's kubelet client certificate; the read-only port
//! without exec, run or logs; `--read-only-port 0`; `kubectl exec`/`logs`
//! through the apiserver; and a pod trying the node's exec endpoint.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cluster::{ApiServer, api_pod, wait_for};
use common::{TestNode, agent_bin, free_port};

const SHELL: &str = "  containers:
  - name: main
    image: busybox
    command: [\"sh\", \"-c\", \"echo hello from main; exec sleep 3600\"]
";

/// Credentials `curl` presents.
enum Cred<'a> {
    None,
    Token(&'a str),
    ClientCert { cert: &'a Path, key: &'a Path },
}

/// `curl` to the agent over HTTPS (its certificate not checked: the
/// attacker's view); returns (HTTP status, body).
fn curl(url: &str, method: &str, cred: Cred, netns_of_pid: Option<i32>) -> (u16, String) {
    let mut cmd = match netns_of_pid {
        Some(pid) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/proc/{pid}/ns/net")).arg("curl");
            c
        }
        None => Command::new("curl"),
    };
    cmd.args([
        "-sk",
        "--max-time",
        "10",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ]);
    match cred {
        Cred::None => {}
        Cred::Token(t) => {
            cmd.arg("-H").arg(format!("Authorization: Bearer {t}"));
        }
        Cred::ClientCert { cert, key } => {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
    }
    let out = cmd.arg(url).output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

const EXEC: &str = "/exec/default/shell/main?command=id&stdout=true";

#[test]
fn the_kubelet_api_authenticates_and_authorizes_as_the_kubelet_does() {
    let tokens = tempfile::tempdir().unwrap();
    let token_file = tokens.path().join("tokens.csv");
    std::fs::write(
        &token_file,
        "admin-token,admin,1,\"system:masters\"\ndev-token,dev,2,\"developers\"\n",
    )
    .unwrap();
    let api = ApiServer::start_with(&["--token-auth-file", token_file.to_str().unwrap()]);
    let node = api.join();
    let name = node.node_name.clone();
    api.apply(&api_pod("shell", &name, SHELL));
    wait_for(&node, "shell running", Duration::from_secs(40), || {
        let phase = api.try_kubectl(&["get", "pod", "shell", "-o", "jsonpath={.status.phase}"])?;
        (phase == "Running").then_some(())
    });
    let base = format!("https://127.0.0.1:{}", node.secure_port);
    let url = |path: &str| format!("{base}{path}");

    // No credentials: 401, for exec and for /pods alike.
    for (method, path) in [
        ("POST", EXEC),
        ("GET", EXEC),
        ("GET", "/pods"),
        ("GET", "/healthz"),
        // A path no handler serves: still 401 first, as on kubelet.
        ("GET", "/configz"),
    ] {
        assert_eq!(
            curl(&url(path), method, Cred::None, None),
            (401, "Unauthorized".to_owned()),
            "{method} {path}"
        );
    }
    // A token the apiserver does not know: 401.
    assert_eq!(
        curl(&url("/pods"), "GET", Cred::Token("not-a-token"), None),
        (401, "Unauthorized".to_owned())
    );
    // A real user outside system:masters: 403, in the kubelet's words, with
    // the subresource the path maps to.
    for (method, path, verb, sub) in [
        ("POST", EXEC, "create", "proxy"),
        ("GET", "/pods", "get", "proxy"),
        ("GET", "/containerLogs/default/shell/main", "get", "proxy"),
        ("GET", "/stats/summary", "get", "stats"),
        ("GET", "/metrics", "get", "metrics"),
    ] {
        assert_eq!(
            curl(&url(path), method, Cred::Token("dev-token"), None),
            (
                403,
                format!("Forbidden (user=dev, verb={verb}, resource=nodes, subresource={sub})")
            ),
            "{method} {path}"
        );
    }
    // An admin's token: served.
    let (code, pods) = curl(&url("/pods"), "GET", Cred::Token("admin-token"), None);
    assert_eq!(code, 200, "{pods}");
    assert!(pods.contains("\"name\":\"shell\""), "{pods}");
    // The apiserver's kubelet client certificate (kube-apiserver-kubelet-client
    // in system:masters): served, logs included.
    let data = api.dir.path();
    let apiserver_cert = Cred::ClientCert {
        cert: &data.join("apiserver-kubelet-client.crt"),
        key: &data.join("apiserver-kubelet-client.key"),
    };
    assert_eq!(
        curl(
            &url("/containerLogs/default/shell/main"),
            "GET",
            apiserver_cert,
            None
        ),
        (200, "hello from main\n".to_owned())
    );
    // A certificate from another CA names nobody: 401, as on kubelet (the
    // handshake takes it; the x509 authenticator does not).
    let stranger = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_client(stranger.path(), "kubernetes-admin", "system:masters");
    let forged = Cred::ClientCert {
        cert: &cert,
        key: &key,
    };
    assert_eq!(
        curl(&url("/pods"), "GET", forged, None),
        (401, "Unauthorized".to_owned())
    );

    // The node's serving certificate is the self-signed one in its root dir,
    // valid for the node's address.
    let pinned = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(node.state_dir().join("pki/kubelet.crt"))
        .arg(url("/healthz"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&pinned.stdout), "401");

    // The read-only port has no exec, run or logs at all (404), only state.
    let ro = format!("http://127.0.0.1:{}", node.port);
    for path in [
        EXEC,
        "/run/default/shell/main",
        "/containerLogs/default/shell/main",
    ] {
        assert_eq!(
            curl(&format!("{ro}{path}"), "POST", Cred::None, None).0,
            404,
            "{path}"
        );
        assert_eq!(
            curl(&format!("{ro}{path}"), "GET", Cred::None, None).0,
            404,
            "{path}"
        );
    }
    assert_eq!(curl(&format!("{ro}/pods"), "GET", Cred::None, None).0, 200);
    let (code, summary) = curl(&format!("{ro}/stats/summary"), "GET", Cred::None, None);
    assert_eq!(code, 200);
    assert!(summary.contains("\"nodeName\""), "{summary}");

    // kubectl exec and logs go through the apiserver, with its certificate.
    let out = api.kubectl_with(&["exec", "shell", "-c", "main", "--", "id", "-u"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n", "{out:?}");
    assert_eq!(api.kubectl(&["logs", "shell"]), "hello from main\n");

    api.delete_all_pods();
}

/// A client certificate signed by nobody the node trusts.
fn self_signed_client(dir: &Path, cn: &str, org: &str) -> (PathBuf, PathBuf) {
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, org);
    dn.push(rcgen::DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (dir.join("client.crt"), dir.join("client.key"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// The agent's listening TCP ports, from `ss`.
fn listening_ports(pid: u32) -> Vec<u16> {
    let out = Command::new("ss").args(["-Hltnp"]).output().unwrap();
    let mut ports: Vec<u16> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .filter_map(|l| {
            l.split_whitespace()
                .nth(3)?
                .rsplit(':')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    ports.sort();
    ports
}

#[test]
fn read_only_port_zero_serves_nothing_in_plain_http() {
    let port = free_port();
    let node = TestNode::start_with(&["--port", &port.to_string(), "--read-only-port", "0"]);
    let pid = node.agent.as_ref().unwrap().id();
    assert_eq!(listening_ports(pid), [port]);
    // Standalone, no client CA: nobody can authenticate on --port.
    assert_eq!(
        curl(
            &format!("https://127.0.0.1:{port}/pods"),
            "GET",
            Cred::None,
            None
        ),
        (401, "Unauthorized".to_owned())
    );
}

static NETNS: AtomicU32 = AtomicU32::new(0);

/// `ip netns add`; `ip netns del` on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!(
            "kl-auth-{}-{}",
            std::process::id(),
            NETNS.fetch_add(1, Ordering::SeqCst)
        );
        assert!(
            Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .unwrap()
                .success()
        );
        let ns = Netns(name);
        Command::new("ip")
            .args(["netns", "exec", &ns.0, "ip", "link", "set", "lo", "up"])
            .status()
            .unwrap();
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The attack the kubelet API had no answer to: from inside any pod, the
/// node's address on the pod bridge reached its exec endpoint.
#[test]
fn a_pod_reaching_the_nodes_exec_endpoint_gets_401_and_no_exec_on_the_read_only_port() {
    let ns = Netns::new();
    let port = free_port();
    let tmp = tempfile::tempdir().unwrap();
    let conf_dir = tmp.path().join("net.d");
    let plugins = agent_bin().parent().unwrap().to_path_buf();
    assert!(
        plugins.join("kubelab-bridge").exists(),
        "build the workspace first"
    );
    let node = TestNode::start_in_netns(
        &ns.0,
        &[
            // All addresses, the kubelet's default: the pod bridge's too.
            "--address",
            "0.0.0.0",
            "--port",
            &port.to_string(),
            "--cni-conf-dir",
            conf_dir.to_str().unwrap(),
            "--cni-bin-dir",
            plugins.to_str().unwrap(),
            "--pod-cidr",
            "10.133.9.0/24",
        ],
    );
    node.write_manifest(
        "attacker.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: attacker\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: busybox\n    command: [\"sleep\", \"3600\"]\n",
    );
    node.wait_running("attacker");
    // A process of the pod: in the node's cgroups, in another netns than the node's.
    let node_ns_ino = {
        use std::os::unix::fs::MetadataExt;
        format!(
            "net:[{}]",
            std::fs::metadata(format!("/var/run/netns/{}", ns.0))
                .unwrap()
                .ino()
        )
    };
    let pod_pid = node
        .processes_in_cgroups()
        .into_iter()
        .find(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .map(|l| l.to_string_lossy() != node_ns_ino)
                .unwrap_or(false)
        })
        .expect("a process in the pod's network namespace");
    let pod_name = format!("attacker-{}", node.node_name);
    let exec = format!("/exec/default/{pod_name}/main?command=id&stdout=true");
    let gateway = "10.133.9.1";
    assert_eq!(
        curl(
            &format!("https://{gateway}:{port}{exec}"),
            "POST",
            Cred::None,
            Some(pod_pid)
        ),
        (401, "Unauthorized".to_owned())
    );
    assert_eq!(
        curl(
            &format!("http://{gateway}:{}{exec}", node.port),
            "POST",
            Cred::None,
            Some(pod_pid)
        )
        .0,
        404
    );
    node.remove_manifest("attacker.yaml");
    node.wait_for("pods gone", Duration::from_secs(30), |n| {
        n.pods().is_empty().then_some(())
    });
}

/// A CA in `dir` and a kubelet serving certificate it signed for 127.0.0.1;
/// returns (CA file, certificate, key).
fn kubelet_serving_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "kubelet-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let mut serving = CertificateParams::default();
    serving
        .distinguished_name
        .push(DnType::CommonName, "system:node:node");
    serving.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
    serving.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = serving
        .signed_by(&key, &Issuer::from_params(&ca, &ca_key))
        .unwrap();
    let paths = (
        dir.join("kubelet-ca.crt"),
        dir.join("kubelet.crt"),
        dir.join("kubelet.key"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// `--kubelet-certificate-authority`: the apiserver reads logs from a node
/// whose `--tls-cert-file` that CA signed, and refuses to talk to one with a
/// self-signed certificate (kubectl shows the TLS error).
#[test]
fn the_apiserver_checks_kubelet_certificates_against_its_kubelet_ca() {
    let pki = tempfile::tempdir().unwrap();
    let (ca, crt, key) = kubelet_serving_pki(pki.path());
    let api = ApiServer::start_with(&["--kubelet-certificate-authority", ca.to_str().unwrap()]);
    let signed = api.join_with(&[
        "--tls-cert-file",
        crt.to_str().unwrap(),
        "--tls-private-key-file",
        key.to_str().unwrap(),
    ]);
    let self_signed = api.join();
    for node in [&signed, &self_signed] {
        let pod = format!("shell-{}", node.node_name);
        api.apply(&api_pod(&pod, &node.node_name, SHELL));
    }
    for node in [&signed, &self_signed] {
        let pod = format!("shell-{}", node.node_name);
        wait_for(node, "pod running", Duration::from_secs(40), || {
            let phase = api.try_kubectl(&["get", "pod", &pod, "-o", "jsonpath={.status.phase}"])?;
            (phase == "Running").then_some(())
        });
    }
    let logs =
        |node: &TestNode| api.kubectl_with(&["logs", &format!("shell-{}", node.node_name)], None);
    let good = logs(&signed);
    assert_eq!(
        String::from_utf8_lossy(&good.stdout),
        "hello from main\n",
        "{good:?}"
    );
    let bad = logs(&self_signed);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains(&format!("node {:?}", self_signed.node_name))
            && err.contains("invalid peer certificate"),
        "{err}"
    );
    api.delete_all_pods();
}
