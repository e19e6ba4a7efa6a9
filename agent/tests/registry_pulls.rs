//! Images from registries: Debian's `docker-registry` (the reference
//! distribution server) on a free loopback port, the test image pushed to it
//! with `skopeo copy`, and pods on a real node that pull it as the kubelet
//! does: events, waiting reasons, pull policies and pull secrets, seen
//! through the real `kubectl`.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cluster::{ApiServer, api_pod, wait_for};
use common::{TestNode, free_port, test_image};
use serde_json::Value;

/// A `docker-registry` serving its own temp dir on 127.0.0.1; basic auth
/// from an htpasswd file when given a user.
struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Registry {
    fn start(user: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("kubelab-registry-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let auth = match user {
            Some((name, password)) => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", name, password])
                    .output()
                    .expect("htpasswd (apache2-utils) is installed");
                assert!(out.status.success(), "htpasswd failed");
                std::fs::write(dir.path().join("htpasswd"), out.stdout).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: kubelab\n    path: {}\n",
                    dir.path().join("htpasswd").display()
                )
            }
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry is installed");
        let registry = Registry { child, dir, port };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "docker-registry did not start: {}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// `127.0.0.1:PORT/<repo>`.
    fn image(&self, repo: &str) -> String {
        format!("127.0.0.1:{}/{repo}", self.port)
    }

    /// Pushes the test image archive as `repo` with `skopeo copy`.
    fn push(&self, repo: &str, creds: Option<&str>) {
        let archive = test_image();
        let out = Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
            .args(creds.map(|c| format!("--dest-creds={c}")))
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{}", self.image(repo)))
            .stdin(Stdio::null())
            .output()
            .expect("skopeo is installed");
        assert!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Requests the registry answered for `GET /v2/<repo>/<kind>/…`
    /// (`blobs`, `manifests`), from its access log.
    fn gets(&self, kind: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains(&format!("/{kind}/")))
            .count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Empties the node's image store (the fixture imports the test image), so
/// what the pods run can only have come from the registry.
fn empty_image_store(node: &TestNode) {
    let images = node.state_dir().join("images");
    std::fs::remove_file(images.join("index.json")).unwrap();
    for dir in ["blobs/sha256", "layers"] {
        for entry in std::fs::read_dir(images.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
        }
    }
}

fn pod_with_image(name: &str, node: &str, image: &str, extra: &str) -> String {
    api_pod(
        name,
        node,
        &format!(
            "  containers:\n  - name: c\n    image: {image}\n    command: [\"sleep\", \"3600\"]\n{extra}"
        ),
    )
}

/// The pod's events as (reason, message), oldest first.
fn events(api: &ApiServer, pod: &str) -> Vec<(String, String)> {
    let out = api.kubectl(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod}"),
        "-o",
        "json",
    ]);
    let list: Value = serde_json::from_str(&out).unwrap();
    let mut items: Vec<Value> = list["items"].as_array().cloned().unwrap_or_default();
    items.sort_by_key(|e| e["firstTimestamp"].as_str().unwrap_or("").to_string());
    items
        .iter()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or("").to_string(),
                e["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn wait_for_event(
    api: &ApiServer,
    node: &TestNode,
    pod: &str,
    reason: &str,
    message: impl Fn(&str) -> bool,
) -> String {
    wait_for(
        node,
        &format!("a {reason} event of pod {pod}"),
        Duration::from_secs(60),
        || {
            events(api, pod)
                .into_iter()
                .find(|(r, m)| r == reason && message(m))
                .map(|(_, m)| m)
        },
    )
}

fn phase(api: &ApiServer, pod: &str) -> String {
    api.try_kubectl(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"])
        .unwrap_or_default()
}

fn wait_running(api: &ApiServer, node: &TestNode, pod: &str) {
    wait_for(
        node,
        &format!("pod {pod} Running"),
        Duration::from_secs(90),
        || (phase(api, pod) == "Running").then_some(()),
    );
}

/// `(reason, message)` of the first container's waiting state.
fn waiting(api: &ApiServer, pod: &str) -> Option<(String, String)> {
    let out = api.try_kubectl(&[
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.status.containerStatuses[0].state.waiting.reason}|{.status.containerStatuses[0].state.waiting.message}",
    ])?;
    let (reason, message) = out.split_once('|')?;
    (!reason.is_empty()).then(|| (reason.to_string(), message.to_string()))
}

/// `Successfully pulled image "x" in 1.2s (1.5s including waiting). Image size: N bytes.`
fn check_pulled_message(message: &str, image: &str) {
    let rest = message
        .strip_prefix(&format!("Successfully pulled image {image:?} in "))
        .unwrap_or_else(|| panic!("Pulled message: {message}"));
    let (pull, rest) = rest.split_once(" (").expect(message);
    let (total, rest) = rest
        .split_once(" including waiting). Image size: ")
        .expect(message);
    let size = rest.strip_suffix(" bytes.").expect(message);
    for d in [pull, total] {
        assert!(
            d.ends_with("ms") || d.ends_with('s'),
            "a Go duration: {d} in {message}"
        );
    }
    assert!(size.parse::<u64>().unwrap() > 100_000, "{message}");
}

#[test]
fn pods_pull_from_a_registry_with_the_kubelets_policies_events_and_back_off() {
    let registry = Registry::start(None);
    registry.push("busybox:1", None);
    let api = ApiServer::start();
    let node = api.join();
    empty_image_store(&node);
    let name = node.node_name.clone();
    let image = registry.image("busybox:1");

    // Not in the store: pulled (IfNotPresent is the default for a tag other than latest).
    api.apply(&pod_with_image("first", &name, &image, ""));
    wait_running(&api, &node, "first");
    let pulling = wait_for_event(&api, &node, "first", "Pulling", |_| true);
    assert_eq!(pulling, format!("Pulling image {image:?}"));
    let pulled = wait_for_event(&api, &node, "first", "Pulled", |_| true);
    check_pulled_message(&pulled, &image);
    assert_eq!(
        api.kubectl(&[
            "get",
            "pod",
            "first",
            "-o",
            "jsonpath={.spec.containers[0].imagePullPolicy}"
        ]),
        "IfNotPresent"
    );
    let blobs_after_first = registry.gets("blobs");
    let manifests_after_first = registry.gets("manifests");
    assert!(
        blobs_after_first >= 2,
        "config and layer fetched: {}",
        registry.log()
    );
    assert!(
        node.agent_log().contains("layer 1/1: downloading"),
        "progress in the log"
    );

    // IfNotPresent and present: the registry hears nothing.
    api.apply(&pod_with_image("second", &name, &image, ""));
    wait_running(&api, &node, "second");
    let present = wait_for_event(&api, &node, "second", "Pulled", |_| true);
    assert_eq!(
        present,
        format!("Container image {image:?} already present on machine")
    );
    assert_eq!(registry.gets("manifests"), manifests_after_first);
    assert_eq!(registry.gets("blobs"), blobs_after_first);

    // Always: the manifest is asked for again, the blobs the store has are not.
    api.apply(&pod_with_image(
        "always",
        &name,
        &image,
        "    imagePullPolicy: Always\n",
    ));
    wait_running(&api, &node, "always");
    let pulled = wait_for_event(&api, &node, "always", "Pulled", |_| true);
    check_pulled_message(&pulled, &image);
    assert!(registry.gets("manifests") > manifests_after_first);
    assert_eq!(
        registry.gets("blobs"),
        blobs_after_first,
        "no blob fetched twice"
    );

    // A tag the registry does not have: ErrImagePull, then ImagePullBackOff.
    let missing = registry.image("busybox:nope");
    api.apply(&pod_with_image("missing", &name, &missing, ""));
    let failed = wait_for_event(&api, &node, "missing", "Failed", |m| {
        m.starts_with("Failed to pull image")
    });
    assert_eq!(
        failed,
        format!(
            "Failed to pull image {missing:?}: failed to pull and unpack image {missing:?}: failed to resolve reference {missing:?}: {missing}: not found"
        )
    );
    wait_for_event(&api, &node, "missing", "Failed", |m| {
        m == "Error: ErrImagePull"
    });
    let (reason, message) = wait_for(&node, "ImagePullBackOff", Duration::from_secs(60), || {
        waiting(&api, "missing").filter(|(r, _)| r == "ImagePullBackOff")
    });
    assert_eq!(reason, "ImagePullBackOff");
    assert!(
        message.starts_with(&format!(
            "Back-off pulling image {missing:?}: ErrImagePull: failed to pull and unpack image"
        )),
        "{message}"
    );
    let backoff = wait_for_event(&api, &node, "missing", "BackOff", |_| true);
    assert_eq!(backoff, format!("Back-off pulling image {missing:?}"));
    assert_eq!(phase(&api, "missing"), "Pending");

    // Never, and not in the store.
    let absent = registry.image("busybox:absent");
    api.apply(&pod_with_image(
        "never",
        &name,
        &absent,
        "    imagePullPolicy: Never\n",
    ));
    let (reason, message) = wait_for(&node, "ErrImageNeverPull", Duration::from_secs(60), || {
        waiting(&api, "never").filter(|(r, _)| r == "ErrImageNeverPull")
    });
    assert_eq!(reason, "ErrImageNeverPull");
    assert_eq!(
        message,
        format!("Container image {absent:?} is not present with pull policy of Never")
    );

    api.delete_all_pods();
}

#[test]
fn a_private_registry_needs_the_pods_image_pull_secret() {
    let registry = Registry::start(Some(("puller", "s3cret-pw")));
    registry.push("private/busybox:1", Some("puller:s3cret-pw"));
    let api = ApiServer::start();
    let node = api.join();
    let name = node.node_name.clone();
    let image = registry.image("private/busybox:1");

    // Without credentials the registry refuses.
    api.apply(&pod_with_image("anonymous", &name, &image, ""));
    let failed = wait_for_event(&api, &node, "anonymous", "Failed", |m| {
        m.starts_with("Failed to pull image")
    });
    assert!(
        failed
            .contains("pull access denied, repository does not exist or may require authorization"),
        "{failed}"
    );

    // A missing secret is named, and the pull goes on without it.
    api.apply(&pod_with_image(
        "unknown-secret",
        &name,
        &image,
        "  imagePullSecrets:\n  - name: nosuch\n",
    ));
    let warning = wait_for_event(
        &api,
        &node,
        "unknown-secret",
        "FailedToRetrieveImagePullSecret",
        |_| true,
    );
    assert_eq!(
        warning,
        "Unable to retrieve some image pull secrets (nosuch); attempting to pull the image may not succeed."
    );

    // The kubectl-made dockerconfigjson secret lets it through.
    api.kubectl(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server=127.0.0.1:{}", registry.port),
        "--docker-username=puller",
        "--docker-password=s3cret-pw",
    ]);
    api.apply(&pod_with_image(
        "private",
        &name,
        &image,
        "  imagePullSecrets:\n  - name: regcred\n",
    ));
    wait_running(&api, &node, "private");
    let pulled = wait_for_event(&api, &node, "private", "Pulled", |_| true);
    check_pulled_message(&pulled, &image);
    assert!(
        !Path::new(&node.state_dir().join("images/partial")).exists()
            || std::fs::read_dir(node.state_dir().join("images/partial"))
                .unwrap()
                .next()
                .is_none(),
        "no partial download left behind"
    );

    api.delete_all_pods();
}
