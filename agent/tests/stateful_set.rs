//! A StatefulSet on a real node, the shape of the cassandra example: three
//! pods `db-0..2` created in order, each with a claim from the set's
//! `volumeClaimTemplates` provisioned by the default local-path class on
//! the node the pod was scheduled to, each writing its name to its volume.
//! A deleted `db-2` comes back with the same name on the same volume and
//! reads what it wrote before; the pods find each other by
//! `<pod>.<service>` through the cluster DNS.

mod common;
#[path = "common/netns_cluster.rs"]
mod netns_cluster;

use std::time::Duration;

use netns_cluster::NetnsCluster;

const NODE_IP: &str = "192.168.83.1";

const DB: &str = r#"apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: gossip, port: 7000}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 3
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: db
        image: busybox
        command: ["sh", "-c", "hostname >> /data/boots && exec sleep 3600"]
        volumeMounts:
        - {name: data, mountPath: /data}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests: {storage: 1Gi}
"#;

#[test]
fn a_stateful_set_keeps_names_volumes_and_dns_across_pod_deletion() {
    let c = NetnsCluster::start(
        "kl-sts",
        NODE_IP,
        "10.153.7.0/24",
        &[],
        // The shared disk may be nearly full: no DiskPressure taint for it.
        &[
            "--cluster-dns",
            "10.96.0.10",
            "--eviction-hard",
            "nodefs.available<1%",
        ],
    );
    c.apply(DB);
    // OrderedReady: db-1 is created only after db-0 runs, and so on.
    for i in 0..3 {
        let pod = format!("db-{i}");
        c.wait_for(&format!("{pod} to exist"), Duration::from_secs(120), || {
            c.kubectl_with(&["get", "pod", &pod], None)
                .status
                .success()
                .then_some(())
        });
        if i < 2 {
            let next = format!("db-{}", i + 1);
            // The successor first, then its predecessor: read the other
            // way round, the predecessor may start between the two looks.
            let next_exists = c
                .kubectl_with(&["get", "pod", &next], None)
                .status
                .success();
            let phase = c.kubectl(&["get", "pod", &pod, "-o", "jsonpath={.status.phase}"]);
            assert!(
                !(next_exists && phase != "Running"),
                "{next} exists before {pod} runs"
            );
        }
        c.wait_for(&format!("{pod} Running"), Duration::from_secs(120), || {
            let phase = c.kubectl(&["get", "pod", &pod, "-o", "jsonpath={.status.phase}"]);
            (phase == "Running").then_some(())
        });
    }
    let node = c.node.node_name.clone();
    // Each claim bound to a volume made on this node, under its root dir.
    let claims = c.kubectl(&[
        "get",
        "pvc",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.spec.storageClassName}{\"\\n\"}{end}",
    ]);
    assert_eq!(
        claims,
        "data-db-0 Bound local-path\ndata-db-1 Bound local-path\ndata-db-2 Bound local-path\n"
    );
    let volume = c.kubectl(&[
        "get",
        "pvc",
        "data-db-2",
        "-o",
        "jsonpath={.spec.volumeName}",
    ]);
    let path = c.kubectl(&["get", "pv", &volume, "-o", "jsonpath={.spec.hostPath.path}"]);
    let affinity = c.kubectl(&[
        "get",
        "pv",
        &volume,
        "-o",
        "jsonpath={.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}",
    ]);
    assert_eq!(affinity, node);
    assert!(
        path.starts_with(&format!("{}/storage/pvc-", c.node.state_dir().display())),
        "{path}"
    );
    for i in 0..3 {
        let pod = format!("db-{i}");
        assert_eq!(c.exec_ok(&pod, "cat /data/boots"), format!("{pod}\n"));
    }
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(&path).join("boots")).unwrap(),
        "db-2\n",
        "the volume is the node's directory"
    );

    // The pods resolve each other by name through the headless Service.
    let ip1 = c.kubectl(&["get", "pod", "db-1", "-o", "jsonpath={.status.podIP}"]);
    c.wait_for(
        "db-1.db to resolve from db-0",
        Duration::from_secs(60),
        || {
            let out = c.exec("db-0", "nslookup db-1.db.default.svc.cluster.local");
            String::from_utf8_lossy(&out.stdout)
                .contains(&format!("Address: {ip1}"))
                .then_some(())
        },
    );

    // A deleted db-2 comes back as db-2, on the same volume, reading what
    // it wrote before.
    let uid = c.kubectl(&["get", "pod", "db-2", "-o", "jsonpath={.metadata.uid}"]);
    c.kubectl(&["delete", "pod", "db-2"]);
    c.wait_for("db-2 to come back", Duration::from_secs(120), || {
        let out = c.kubectl_with(
            &[
                "get",
                "pod",
                "db-2",
                "-o",
                "jsonpath={.metadata.uid} {.status.phase}",
            ],
            None,
        );
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && !s.starts_with(&uid) && s.ends_with(" Running")).then_some(())
    });
    assert_eq!(
        c.kubectl(&[
            "get",
            "pvc",
            "data-db-2",
            "-o",
            "jsonpath={.spec.volumeName}"
        ]),
        volume
    );
    assert_eq!(c.exec_ok("db-2", "cat /data/boots"), "db-2\ndb-2\n");
    let ip2 = c.kubectl(&["get", "pod", "db-2", "-o", "jsonpath={.status.podIP}"]);
    c.wait_for(
        "the new db-2 to resolve from db-0",
        Duration::from_secs(60),
        || {
            let out = c.exec("db-0", "nslookup db-2.db.default.svc.cluster.local");
            String::from_utf8_lossy(&out.stdout)
                .contains(&format!("Address: {ip2}"))
                .then_some(())
        },
    );
}
