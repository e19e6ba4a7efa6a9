//! Updates of a running pod reach the node, as kubelet's pod workers take
//! them: `kubectl set image` restarts that container with the new image
//! (restartCount +1), `kubectl label` rewrites a downwardAPI volume file, and
//! the apiserver refuses any other change to a pod's spec in its words.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cluster::{ApiServer, api_pod, wait_for};
use serde_json::Value;

/// A second image, `busybox:v2`: the test image plus `/etc/image-version`
/// saying `v2`, imported into the node's store.
fn import_v2_image(node: &common::TestNode, work: &Path) {
    let version = work.join("image-version");
    std::fs::write(&version, "v2\n").unwrap();
    let archive = work.join("busybox-v2.tar");
    let status = Command::new("bash")
        .arg(common::repo_root().join("scripts/build-test-image.sh"))
        .args(["--ref", "busybox:v2", "--add"])
        .arg(format!("{}:/etc/image-version", version.display()))
        .arg(&archive)
        .stdout(Stdio::null())
        .status()
        .expect("run build-test-image.sh");
    assert!(status.success(), "build-test-image.sh failed");
    let status = Command::new(common::agent_bin())
        .arg("--root-dir")
        .arg(node.state_dir())
        .args(["image", "import"])
        .arg(&archive)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "importing busybox:v2 failed");
}

fn pod_json(api: &ApiServer, name: &str) -> Option<Value> {
    serde_json::from_str(&api.try_kubectl(&["get", "pod", name, "-o", "json"])?).ok()
}

fn container_status(pod: &Value, name: &str) -> Option<Value> {
    pod["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
}

#[test]
fn set_image_restarts_the_container_with_the_new_image() {
    let api = ApiServer::start();
    let node = api.join();
    let work = tempfile::tempdir().unwrap();
    import_v2_image(&node, work.path());
    api.apply(&api_pod(
        "web",
        &node.node_name,
        "  containers:\n  - name: web\n    image: busybox\n    command: [sh, -c, 'exec sleep 3600']\n  - name: side\n    image: busybox\n    command: [sh, -c, 'exec sleep 3600']\n",
    ));
    let first = wait_for(&node, "web Running", Duration::from_secs(60), || {
        let pod = pod_json(&api, "web")?;
        let web = container_status(&pod, "web")?;
        web["state"]["running"].is_object().then_some(web)
    });
    assert_eq!(first["restartCount"], 0);
    let side_before = container_status(&pod_json(&api, "web").unwrap(), "side").unwrap();

    api.kubectl(&["set", "image", "pod/web", "web=busybox:v2"]);
    let second = wait_for(
        &node,
        "web running busybox:v2",
        Duration::from_secs(60),
        || {
            let web = container_status(&pod_json(&api, "web")?, "web")?;
            (web["image"] == "busybox:v2" && web["state"]["running"].is_object()).then_some(web)
        },
    );
    assert_eq!(second["restartCount"], 1, "{second}");
    assert_ne!(second["containerID"], first["containerID"]);
    assert_eq!(
        second["lastState"]["terminated"]["containerID"], first["containerID"],
        "{second}"
    );
    // The new run is the new image's: only busybox:v2 has this file.
    let version = api.kubectl(&[
        "exec",
        "web",
        "-c",
        "web",
        "--",
        "cat",
        "/etc/image-version",
    ]);
    assert_eq!(version.trim(), "v2");
    // The other container was left alone.
    let side = container_status(&pod_json(&api, "web").unwrap(), "side").unwrap();
    assert_eq!(side["containerID"], side_before["containerID"]);
    assert_eq!(side["restartCount"], 0);
    // Told as the kubelet tells it.
    wait_for(&node, "the Killing event", Duration::from_secs(20), || {
        let events = api.try_kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=web,reason=Killing",
            "-o",
            "jsonpath={.items[*].message}",
        ])?;
        events
            .contains("Container web definition changed, will be restarted")
            .then_some(())
    });

    // Any other change of the spec is refused, in kube-apiserver's words.
    let out = api.kubectl_with(
        &[
            "patch",
            "pod",
            "web",
            "-p",
            r#"{"spec":{"containers":[{"name":"web","command":["sh","-c","exec sleep 10"]}]}}"#,
        ],
        None,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pod updates may not change fields other than `spec.containers[*].image`"),
        "{stderr}"
    );
    api.delete_all_pods();
}

#[test]
fn a_label_change_rewrites_the_downward_api_volume() {
    let api = ApiServer::start();
    let node = api.join();
    api.apply(&api_pod(
        "info",
        &node.node_name,
        "  containers:
  - name: main
    image: busybox
    command: [sh, -c, 'exec sleep 3600']
    volumeMounts:
    - {name: podinfo, mountPath: /etc/podinfo}
  volumes:
  - name: podinfo
    downwardAPI:
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: annotations, fieldRef: {fieldPath: metadata.annotations}}
",
    ));
    let labels = || api.try_kubectl(&["exec", "info", "--", "cat", "/etc/podinfo/labels"]);
    let before = wait_for(&node, "the labels file", Duration::from_secs(60), labels);
    assert_eq!(before.trim(), r#"app="info-app""#);

    api.kubectl(&["label", "pod", "info", "tier=front"]);
    api.kubectl(&["annotate", "pod", "info", "owner=team-a"]);
    let after = wait_for(
        &node,
        "the new label in the file",
        Duration::from_secs(30),
        || labels().filter(|l| l.contains("tier=")),
    );
    assert_eq!(after.trim(), "app=\"info-app\"\ntier=\"front\"");
    wait_for(
        &node,
        "the new annotation in the file",
        Duration::from_secs(30),
        || {
            api.try_kubectl(&["exec", "info", "--", "cat", "/etc/podinfo/annotations"])
                .filter(|a| a.contains(r#"owner="team-a""#))
        },
    );
    // The container kept running: labels change files, not runs.
    let pod = pod_json(&api, "info").unwrap();
    assert_eq!(container_status(&pod, "main").unwrap()["restartCount"], 0);
    api.delete_all_pods();
}
