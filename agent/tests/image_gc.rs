//! Image garbage collection on a real node, seen through the real kubectl
//! and `kubelab-agent image ls`: the node's image store is a small tmpfs of
//! its own (a separate imagefs), holding busybox, which a pod runs, and an
//! unused image. When the imagefs crosses its eviction threshold, the
//! eviction manager deletes unused images before it evicts any pod: the
//! unused image leaves the store and the Node's `status.images`, busybox
//! stays, the pod keeps running, and the node says `EvictionThresholdMet`.
//! Once the pod is gone, busybox goes too and `status.images` is empty.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cluster::{ApiServer, api_pod, wait_for};

const UNUSED: &str = "kubelab.test/unused:v1";
/// The imagefs: busybox (~3 MiB) and the unused image (~20 MiB) fit with room.
const IMAGEFS_MIB: u64 = 48;

/// An image of busybox plus 8 MiB of random bytes: about 16 MiB on disk
/// (compressed blob and unpacked layer), nothing shared with busybox.
fn unused_image(dir: &Path) -> PathBuf {
    let filler = dir.join("random.bin");
    let mut bytes = vec![0u8; 8 << 20];
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&fastrand::u64(..).to_le_bytes());
    }
    std::fs::write(&filler, bytes).unwrap();
    let out = dir.join("unused.tar");
    let status = Command::new("bash")
        .arg(common::repo_root().join("scripts/build-test-image.sh"))
        .args(["--ref", UNUSED, "--add"])
        .arg(format!("{}:/data/random.bin", filler.display()))
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "building the unused image failed");
    out
}

fn image_ls(state: &Path) -> String {
    let out = Command::new(common::agent_bin())
        .arg("--root-dir")
        .arg(state)
        .args(["image", "ls"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "image ls: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn node_image_names(api: &ApiServer, node: &str) -> Option<String> {
    api.try_kubectl(&[
        "get",
        "node",
        node,
        "-o",
        "jsonpath={.status.images[*].names}",
    ])
}

fn available_and_capacity(path: &Path) -> (u64, u64) {
    let st = nix::sys::statvfs::statvfs(path).unwrap();
    let f = st.fragment_size() as u64;
    (st.blocks_available() as u64 * f, st.blocks() as u64 * f)
}

#[test]
fn unused_images_are_deleted_before_pods_are_evicted_for_imagefs_pressure() {
    let work = tempfile::tempdir().unwrap();
    let unused_archive = unused_image(work.path());
    let api = ApiServer::start();
    let node = api.join_prepared(
        &[
            "--eviction-hard",
            "memory.available<100Mi,nodefs.available<1%,imagefs.available<40%",
            // Images are collected as soon as they are unused.
            "--minimum-image-ttl-duration",
            "0s",
        ],
        &|state| {
            let images = state.join("images");
            std::fs::create_dir_all(&images).unwrap();
            nix::mount::mount(
                Some("tmpfs"),
                &images,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some(format!("size={IMAGEFS_MIB}m").as_str()),
            )
            .unwrap();
        },
    );
    let state = node.state_dir();
    let images_dir = state.join("images");
    let import = Command::new(common::agent_bin())
        .arg("--root-dir")
        .arg(&state)
        .args(["image", "import"])
        .arg(&unused_archive)
        .env("RUST_LOG", "warn")
        .status()
        .unwrap();
    assert!(import.success());
    assert!(image_ls(&state).contains("kubelab.test/unused"));

    api.apply(&api_pod(
        "web",
        &node.node_name,
        "  containers:\n  - name: web\n    image: busybox\n    command: [\"sleep\", \"3600\"]\n",
    ));
    wait_for(&node, "web Running", Duration::from_secs(60), || {
        (api.try_kubectl(&["get", "pod", "web", "-o", "jsonpath={.status.phase}"])? == "Running")
            .then_some(())
    });
    wait_for(
        &node,
        "both images in status.images",
        Duration::from_secs(60),
        || {
            let names = node_image_names(&api, &node.node_name)?;
            (names.contains(UNUSED) && names.contains("docker.io/library/busybox:latest"))
                .then_some(())
        },
    );

    // Fill the imagefs until 30% is available: below the 40% threshold.
    let (available, capacity) = available_and_capacity(&images_dir);
    let fill = available.saturating_sub(capacity * 30 / 100);
    std::fs::write(images_dir.join("fill"), vec![1u8; fill as usize]).unwrap();

    wait_for(
        &node,
        "the unused image deleted",
        Duration::from_secs(60),
        || (!image_ls(&state).contains("kubelab.test/unused")).then_some(()),
    );
    let listed = image_ls(&state);
    assert!(listed.contains("docker.io/library/busybox"), "{listed}");
    let (available, capacity) = available_and_capacity(&images_dir);
    assert!(
        available * 100 / capacity >= 40,
        "deleting the unused image relieved the imagefs: {available} of {capacity} available"
    );
    wait_for(
        &node,
        "status.images without the unused image",
        Duration::from_secs(60),
        || {
            let names = node_image_names(&api, &node.node_name)?;
            (!names.contains(UNUSED) && names.contains("docker.io/library/busybox:latest"))
                .then_some(())
        },
    );
    let events = api.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=Node",
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ]);
    assert!(
        events.contains("EvictionThresholdMet: Attempting to reclaim ephemeral-storage"),
        "{events}"
    );
    // The pod was never evicted: reclaiming images was enough.
    assert_eq!(
        api.kubectl(&["get", "pod", "web", "-o", "jsonpath={.status.phase}"]),
        "Running"
    );
    let pod_events = api.kubectl(&["get", "events", "--field-selector", "reason=Evicted"]);
    assert!(!pod_events.contains("web"), "{pod_events}");

    // Once nothing uses busybox either, the next reclaim takes it too: the
    // store is empty, and so is the Node's status.images.
    api.kubectl(&["delete", "pod", "web", "--grace-period=0", "--force"]);
    let (available, capacity) = available_and_capacity(&images_dir);
    let more = available.saturating_sub(capacity * 30 / 100);
    std::fs::write(images_dir.join("fill-more"), vec![1u8; more as usize]).unwrap();
    wait_for(
        &node,
        "busybox deleted once unused",
        Duration::from_secs(90),
        || (!image_ls(&state).contains("busybox")).then_some(()),
    );
    wait_for(
        &node,
        "status.images empty",
        Duration::from_secs(60),
        || {
            node_image_names(&api, &node.node_name)?
                .is_empty()
                .then_some(())
        },
    );
}
