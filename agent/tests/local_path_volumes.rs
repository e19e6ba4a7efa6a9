//! The built-in `local-path` class on a real node: a claim gets a
//! directory on the node of the pod that first uses it, the pod's file is
//! in that directory, and once the pod and the claim are deleted the
//! volume (reclaim policy Delete) goes and its directory is removed from
//! the node by a helper pod there.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::path::Path;
use std::time::Duration;

use cluster::{ApiServer, row, wait_for};

const CLAIM_AND_POD: &str = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests: {storage: 1Gi}
---
apiVersion: v1
kind: Pod
metadata: {name: writer}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "echo written > /data/file && exec sleep 3600"]
    volumeMounts:
    - {name: data, mountPath: /data}
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: data}
"#;

#[test]
fn a_deleted_claim_takes_its_volume_and_the_directory_on_the_node() {
    let api = ApiServer::start();
    // The host's disk is shared with builds: no DiskPressure taint unless
    // it is really full.
    let node = api.join_with(&["--eviction-hard", "nodefs.available<1%"]);
    let name = node.node_name.clone();
    wait_for(&node, "node Ready", Duration::from_secs(30), || {
        (row(&api.try_kubectl(&["get", "nodes"])?, &name)?[1] == "Ready").then_some(())
    });
    api.apply(CLAIM_AND_POD);
    wait_for(&node, "writer Running", Duration::from_secs(120), || {
        let phase = api.try_kubectl(&["get", "pod", "writer", "-o", "jsonpath={.status.phase}"])?;
        (phase == "Running").then_some(())
    });
    let volume = api.kubectl(&["get", "pvc", "data", "-o", "jsonpath={.spec.volumeName}"]);
    let pv = api.kubectl(&[
        "get",
        "pv",
        &volume,
        "-o",
        "jsonpath={.spec.hostPath.path} {.spec.persistentVolumeReclaimPolicy} {.metadata.finalizers}",
    ]);
    let mut fields = pv.split(' ');
    let path = fields.next().unwrap().to_owned();
    assert_eq!(fields.next(), Some("Delete"), "{pv}");
    assert!(
        pv.contains("external-provisioner.volume.kubernetes.io/finalizer"),
        "{pv}"
    );
    let file = Path::new(&path).join("file");
    wait_for(
        &node,
        "the pod's file on the node",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&file)
                .ok()
                .filter(|s| s == "written\n")
        },
    );

    api.kubectl(&["delete", "pod", "writer", "--timeout=60s"]);
    api.kubectl(&["delete", "pvc", "data", "--timeout=60s"]);
    wait_for(
        &node,
        "the volume to be gone",
        Duration::from_secs(120),
        || {
            let out = api.kubectl_with(&["get", "pv", &volume], None);
            String::from_utf8_lossy(&out.stderr)
                .contains("NotFound")
                .then_some(())
        },
    );
    assert!(
        !Path::new(&path).exists(),
        "{path} is still on the node after its volume was deleted"
    );
    // The helper that removed it goes too: deleted before the volume, it
    // is gone once its node has confirmed its termination.
    wait_for(
        &node,
        "the helper pod to be gone",
        Duration::from_secs(60),
        || {
            let helpers = api.kubectl(&["get", "pods", "-n", "kube-system", "-o", "name"]);
            (!helpers.contains("helper-pod-delete-")).then_some(())
        },
    );
    let events = api.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "reason=VolumeFailedDelete",
    ]);
    assert!(!events.contains("VolumeFailedDelete"), "{events}");
}
