//! The apiserver judged by the real kubectl: the seeds' workflows, run as a
//! user runs them, asserting on kubectl's actual output.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{ApiServer, NODE1, POD_WEB, rows};

#[test]
fn fresh_cluster_has_system_namespaces_and_the_kubernetes_service() {
    let s = ApiServer::start();
    let version = s.ok(&["version"]);
    assert!(version.contains("Server Version: v1.33"), "{version}");
    let ns = s.ok(&["get", "namespaces"]);
    assert_eq!(rows(&ns)[0], ["NAME", "STATUS", "AGE"]);
    for name in ["default", "kube-system", "kube-node-lease"] {
        assert!(
            rows(&ns).iter().any(|r| r[0] == name && r[1] == "Active"),
            "{name} missing:\n{ns}"
        );
    }
    let all = s.ok(&["get", "all", "-A"]);
    assert!(
        all.contains("service/kubernetes   ClusterIP   10.96.0.1"),
        "{all}"
    );
    assert!(
        s.ok(&["get", "sa", "-n", "kube-system"])
            .contains("default")
    );
}

#[test]
fn requests_without_credentials_are_unauthorized_and_file_tokens_work() {
    let tokens_dir = tempfile::tempdir().unwrap();
    let tokens = tokens_dir.path().join("tokens.csv");
    std::fs::write(
        &tokens,
        "node-secret,system:node:node1,uid-1,\"system:nodes\"\n",
    )
    .unwrap();
    let s = ApiServer::start_with(&["--token-auth-file", tokens.to_str().unwrap()]);
    let (code, body) = {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "--cacert",
                &s.ca_file(),
                "-w",
                "\n%{http_code}",
                &format!("{}/api/v1/pods", s.url()),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let (b, c) = text.rsplit_once('\n').unwrap();
        (c.to_owned(), b.to_owned())
    };
    assert_eq!(code, "401");
    assert!(body.contains(r#""reason":"Unauthorized""#), "{body}");

    let as_token = |token: &str, what: &str| {
        let mut c = std::process::Command::new("/usr/bin/kubectl");
        c.env("HOME", s.data_dir()).args([
            "--kubeconfig=/dev/null",
            "--cache-dir",
            s.data_dir().join("token-cache").to_str().unwrap(),
            "--server",
            &s.url(),
            "--certificate-authority",
            &s.ca_file(),
            "--token",
            token,
            "get",
            what,
        ]);
        c.output().unwrap()
    };
    // A node's token: what the node rules grant, and not more.
    let good = as_token("node-secret", "services");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let denied = as_token("node-secret", "namespaces");
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains(
            "namespaces is forbidden: User \"system:node:node1\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"
        ),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    let bad = as_token("wrong", "namespaces");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("Unauthorized"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn pods_create_get_wide_selectors_describe_and_errors() {
    let s = ApiServer::start();
    let pod = s.file("pod.yaml", POD_WEB);
    assert_eq!(s.ok(&["create", "-f", &pod]).trim(), "pod/web created");
    let dup = s.fails(&["create", "-f", &pod]);
    assert!(
        dup.contains(r#"Error from server (AlreadyExists): error when creating"#)
            && dup.contains(r#"pods "web" already exists"#),
        "{dup}"
    );

    let table = rows(&s.ok(&["get", "pods"]));
    assert_eq!(table[0], ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert_eq!(table[1][..4], ["web", "0/1", "Pending", "0"]);

    let wide = s.ok(&["get", "pods", "-o", "wide"]);
    assert!(wide.starts_with("NAME   READY   STATUS    RESTARTS   AGE   IP       NODE     NOMINATED NODE   READINESS GATES"), "{wide}");

    let labels = s.ok(&["get", "po", "--show-labels"]);
    assert!(labels.contains("app=web,env=dev"), "{labels}");
    assert_eq!(
        s.ok(&["get", "pods", "--selector", "env=dev", "--no-headers"])
            .lines()
            .count(),
        1
    );
    assert_eq!(
        s.ok(&["get", "pods", "-l", "env in (prod,qa)", "--no-headers"])
            .lines()
            .count(),
        0
    );
    assert!(
        s.ok(&["get", "pods", "-l", "env!=prod,!missing"])
            .contains("web")
    );
    assert!(
        s.ok(&["get", "all", "--selector", "app=web"])
            .contains("pod/web")
    );
    assert!(
        s.ok(&["get", "pods", "-A", "--field-selector", "spec.nodeName="])
            .contains("web")
    );
    assert!(
        s.ok(&[
            "get",
            "pods",
            "-A",
            "--field-selector",
            "status.phase=Running"
        ])
        .is_empty()
    );

    let describe = s.ok(&["describe", "pod", "web"]);
    for want in [
        "Name:             web",
        "Namespace:        default",
        "Status:           Pending",
        "Image:        nginx:1.25",
    ] {
        assert!(describe.contains(want), "missing {want:?} in\n{describe}");
    }
    // Aligned with the section's longest key, which a scheduler's
    // PodScheduled condition changes.
    assert!(
        describe
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["QoS", "Class:", "BestEffort"]),
        "{describe}"
    );

    let spec = s.ok(&["get", "pod", "web", "-o", "jsonpath={.spec.restartPolicy} {.spec.dnsPolicy} {.spec.terminationGracePeriodSeconds} {.spec.containers[0].imagePullPolicy} {.metadata.uid}"]);
    let parts: Vec<&str> = spec.split(' ').collect();
    assert_eq!(parts[..4], ["Always", "ClusterFirst", "30", "IfNotPresent"]);
    assert_eq!(parts[4].len(), 36, "uid {spec}");

    let invalid = s.file("bad.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad_Name\nspec:\n  containers:\n  - name: c\n    resources:\n      limits:\n        cpu: lots\n");
    let err = s.fails(&["create", "-f", &invalid]);
    // kubectl prints a 422 with causes as a list, one line per field.
    assert!(
        err.starts_with(r#"The Pod "Bad_Name" is invalid: "#),
        "{err}"
    );
    for field in [
        "metadata.name",
        "spec.containers[0].image: Required value",
        "spec.containers[0].resources.limits[cpu]",
    ] {
        assert!(err.contains(field), "missing {field:?} in {err}");
    }

    let unknown = s.file("unknown.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: u\nspec:\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicyy: Always\n");
    let err = s.fails(&["create", "-f", &unknown]);
    assert!(
        err.contains(
            r#"strict decoding error: unknown field "spec.containers[0].imagePullPolicyy""#
        ),
        "{err}"
    );

    let generated = s.kubectl_stdin(
        &["create", "-f", "-", "-o", "name"],
        "apiVersion: v1\nkind: Pod\nmetadata:\n  generateName: gen-\nspec:\n  containers:\n  - name: c\n    image: busybox\n",
    );
    let name = String::from_utf8(generated.stdout).unwrap();
    assert!(
        name.trim().starts_with("pod/gen-") && name.trim().len() == "pod/gen-".len() + 5,
        "{name}"
    );
}

#[test]
fn apply_twice_replace_force_label_and_stale_update() {
    let s = ApiServer::start();
    let pod = s.file("pod.yaml", POD_WEB);
    assert_eq!(s.ok(&["apply", "-f", &pod]).trim(), "pod/web created");
    assert_eq!(s.ok(&["apply", "-f", &pod]).trim(), "pod/web unchanged");
    let changed = s.file("pod2.yaml", &POD_WEB.replace("nginx:1.25", "nginx:1.26"));
    assert_eq!(
        s.ok(&["apply", "-f", &changed]).trim(),
        "pod/web configured"
    );
    assert_eq!(
        s.ok(&[
            "get",
            "pod",
            "web",
            "-o",
            "jsonpath={.spec.containers[0].image}"
        ]),
        "nginx:1.26"
    );

    let cm = s.file(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  a: \"1\"\n  b: \"2\"\n",
    );
    s.ok(&["apply", "-f", &cm]);
    let cm2 = s.file(
        "cm2.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  a: \"3\"\n",
    );
    assert_eq!(
        s.ok(&["apply", "-f", &cm2]).trim(),
        "configmap/cfg configured"
    );
    assert_eq!(
        s.ok(&["get", "cm", "cfg", "-o", "jsonpath={.data}"]),
        r#"{"a":"3"}"#
    );

    assert_eq!(
        s.ok(&["label", "pod", "web", "tier=frontend"]).trim(),
        "pod/web labeled"
    );
    let l = rows(&s.ok(&["get", "pods", "-L", "tier"]));
    assert_eq!(l[0].last().unwrap(), "TIER");
    assert_eq!(l[1].last().unwrap(), "frontend");
    s.ok(&["label", "pod", "web", "tier-"]);
    assert!(!s.ok(&["get", "pods", "--show-labels"]).contains("tier"));

    // An update carrying an old resourceVersion is refused.
    let stale = s.ok(&["get", "cm", "cfg", "-o", "yaml"]);
    s.ok(&["label", "cm", "cfg", "x=y"]);
    let stale_file = s.file("stale.yaml", &stale);
    let err = s.fails(&["replace", "-f", &stale_file]);
    assert!(
        err.contains("Error from server (Conflict)")
            && err.contains("the object has been modified"),
        "{err}"
    );

    let uid_before = s.ok(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"]);
    let out = s.ok(&["replace", "--force", "-f", &pod]);
    assert!(
        out.contains(r#"pod "web" deleted"#) && out.contains("pod/web replaced"),
        "{out}"
    );
    assert_ne!(
        s.ok(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"]),
        uid_before
    );
    assert_eq!(
        s.ok(&["delete", "pod", "web"]).trim(),
        r#"pod "web" deleted"#
    );
    assert!(
        s.fails(&["get", "pod", "web"])
            .contains(r#"Error from server (NotFound): pods "web" not found"#)
    );
}

#[test]
fn nodes_label_taint_and_binding() {
    // Manual scheduling: no scheduler runs, the user binds.
    let s = ApiServer::start_with(&["--disable-scheduler"]);
    s.ok(&["create", "-f", &s.file("node.yaml", NODE1)]);
    let nodes = rows(&s.ok(&["get", "nodes"]));
    assert_eq!(nodes[0], ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
    assert_eq!(nodes[1][..3], ["node1", "Ready", "<none>"]);
    assert_eq!(nodes[1][4], "v1.33.0");
    assert!(s.ok(&["get", "no", "-o", "wide"]).contains("10.0.0.5"));

    s.ok(&["label", "nodes", "node1", "disktype=ssd"]);
    assert!(
        s.ok(&["get", "nodes", "--show-labels"])
            .contains("disktype=ssd")
    );
    assert_eq!(
        s.ok(&["taint", "nodes", "node1", "key1=value1:NoSchedule"])
            .trim(),
        "node/node1 tainted"
    );
    assert_eq!(
        s.ok(&["get", "node", "node1", "-o", "jsonpath={.spec.taints}"]),
        r#"[{"effect":"NoSchedule","key":"key1","value":"value1"}]"#
    );
    assert_eq!(
        s.ok(&["taint", "nodes", "node1", "key1=value1:NoSchedule-"])
            .trim(),
        "node/node1 untainted"
    );
    assert_eq!(
        s.ok(&["get", "node", "node1", "-o", "jsonpath={.spec.taints}"]),
        ""
    );

    s.ok(&["create", "-f", &s.file("pod.yaml", POD_WEB)]);
    // The seed's curl recipe: chunked body, no Content-Type, trailing slash.
    let binding = s.file(
        "binding.json",
        r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"web"},"target":{"apiVersion":"v1","kind":"Node","name":"node1"}}"#,
    );
    let url = format!("{}/api/v1/namespaces/default/pods/web/binding/", s.url());
    let data = format!("@{binding}");
    let (code, body) = s.curl(&[
        "-X",
        "POST",
        "-H",
        "Transfer-Encoding: chunked",
        "-H",
        "Content-Type:",
        "--data-binary",
        &data,
        &url,
    ]);
    assert_eq!(code, 201, "{body}");
    assert!(s.ok(&["get", "pods", "-o", "wide"]).contains("node1"));
    let (code, body) = s.curl(&[
        "-X",
        "POST",
        "--data-binary",
        &data,
        url.trim_end_matches('/'),
    ]);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("is already assigned to node"), "{body}");
    assert!(
        s.ok(&[
            "get",
            "pods",
            "--field-selector",
            "spec.nodeName=node1",
            "--no-headers"
        ])
        .starts_with("web")
    );

    // Bound pods terminate gracefully: the node's agent finishes the deletion.
    s.ok(&["delete", "pod", "web", "--wait=false"]);
    assert_eq!(rows(&s.ok(&["get", "pods"]))[1][2], "Terminating");
    s.ok(&["delete", "pod", "web", "--grace-period=0", "--force"]);
    assert!(s.ok(&["get", "pods", "-A"]).is_empty());
}

#[test]
fn namespaces_generators_events_and_run_dry_run() {
    // The events shown are the test's own: no scheduler adds FailedScheduling.
    let s = ApiServer::start_with(&["--disable-scheduler"]);
    assert_eq!(
        s.ok(&["create", "namespace", "dev"]).trim(),
        "namespace/dev created"
    );
    s.ok(&[
        "create",
        "configmap",
        "c1",
        "--from-literal=a=b",
        "-n",
        "dev",
    ]);
    s.ok(&[
        "create",
        "secret",
        "generic",
        "s1",
        "--from-literal=pw=x",
        "-n",
        "dev",
    ]);
    s.ok(&[
        "create",
        "service",
        "clusterip",
        "svc1",
        "--tcp=80:8080",
        "-n",
        "dev",
    ]);
    let secrets = rows(&s.ok(&["get", "secrets", "-n", "dev"]));
    assert_eq!(secrets[0], ["NAME", "TYPE", "DATA", "AGE"]);
    assert_eq!(secrets[1][..3], ["s1", "Opaque", "1"]);
    let svc = rows(&s.ok(&["get", "svc", "-n", "dev"]));
    assert_eq!(
        svc[0],
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    assert_eq!(
        svc[1][..5],
        ["svc1", "ClusterIP", "10.96.0.2", "<none>", "80/TCP"]
    );
    assert_eq!(
        rows(&s.ok(&["get", "cm", "-n", "dev"]))[1][..2],
        ["c1", "1"]
    );

    let manifest = s.ok(&[
        "run",
        "busy",
        "--image=busybox",
        "--restart=Never",
        "-n",
        "dev",
        "--dry-run=client",
        "-o",
        "yaml",
        "--",
        "sleep",
        "3600",
    ]);
    let created = s.kubectl_stdin(&["create", "-f", "-"], &manifest);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert_eq!(
        rows(&s.ok(&["get", "pods", "-n", "dev"]))[1][..3],
        ["busy", "0/1", "Pending"]
    );

    // describe finds a pod's events by kind, name, namespace and uid.
    let uid = s.ok(&[
        "get",
        "pod",
        "busy",
        "-n",
        "dev",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let event = s.file(
        "event.yaml",
        &format!("apiVersion: v1\nkind: Event\nmetadata:\n  name: busy.1\n  namespace: dev\ninvolvedObject:\n  kind: Pod\n  name: busy\n  namespace: dev\n  uid: {uid}\nreason: Scheduled\nmessage: Successfully assigned dev/busy to node1\ntype: Normal\nsource:\n  component: default-scheduler\ncount: 1\n"),
    );
    s.ok(&["create", "-f", &event]);
    let events = s.ok(&["get", "events", "-n", "dev"]);
    assert_eq!(
        rows(&events)[0],
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    );
    assert!(
        events.contains("Normal   Scheduled   pod/busy   Successfully assigned dev/busy to node1"),
        "{events}"
    );
    assert!(
        s.ok(&["describe", "pod", "busy", "-n", "dev"])
            .contains("Successfully assigned dev/busy to node1")
    );

    assert_eq!(
        s.ok(&["delete", "namespace", "dev"]).trim(),
        r#"namespace "dev" deleted"#
    );
    assert!(s.ok(&["get", "pods", "-A"]).is_empty());
    assert!(
        s.fails(&["get", "ns", "dev"])
            .contains(r#"namespaces "dev" not found"#)
    );
}

#[test]
fn get_pods_watch_sees_changes() {
    let s = ApiServer::start();
    s.ok(&["create", "-f", &s.file("pod.yaml", POD_WEB)]);
    let mut watch = s
        .kubectl_cmd(&["get", "pods", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    assert_eq!(
        rows(&lines.next().unwrap().unwrap())[0],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    assert_eq!(
        rows(&lines.next().unwrap().unwrap())[0][..3],
        ["web", "0/1", "Pending"]
    );

    s.ok(&["create", "-f", &s.file("node.yaml", NODE1)]);
    s.ok(&["label", "pod", "web", "seen=yes"]);
    s.ok(&["delete", "pod", "web"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while seen.len() < 2 && Instant::now() < deadline {
        seen.push(lines.next().unwrap().unwrap());
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(seen.iter().all(|l| l.starts_with("web ")), "{seen:?}");
    assert_eq!(
        seen.len(),
        2,
        "expected the label change and the deletion: {seen:?}"
    );
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let mut s = ApiServer::start();
    // A stream of creates; each line of output is one acknowledged write.
    let script = format!(
        "for i in $(seq 1 400); do curl -sS -o /dev/null -w \"%{{http_code}} cm-$i\\n\" --cacert {ca} --cert {crt} --key {key} \
         -H 'Content-Type: application/json' -X POST --data '{{\"metadata\":{{\"name\":\"cm-'$i'\"}},\"data\":{{\"i\":\"'$i'\"}}}}' \
         {url}/api/v1/namespaces/default/configmaps || break; done",
        ca = s.ca_file(),
        crt = s.client_cert_files().0,
        key = s.client_cert_files().1,
        url = s.url()
    );
    let mut writer = std::process::Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(writer.stdout.take().unwrap()).lines();
    let mut acknowledged = Vec::new();
    while acknowledged.len() < 40 {
        let line = out.next().unwrap().unwrap();
        if let Some(name) = line.strip_prefix("201 ") {
            acknowledged.push(name.to_owned());
        }
    }
    s.kill();
    for line in out.map_while(Result::ok) {
        if let Some(name) = line.strip_prefix("201 ") {
            acknowledged.push(name.to_owned());
        }
    }
    let _ = writer.wait();

    let last_rv: u64 = {
        s.restart();
        let names = s.ok(&[
            "get",
            "cm",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}",
        ]);
        for name in &acknowledged {
            assert!(
                names.lines().any(|n| n == name),
                "acknowledged {name} lost after kill -9"
            );
        }
        let rvs = s.ok(&[
            "get",
            "cm",
            "-o",
            "jsonpath={range .items[*]}{.metadata.resourceVersion}{\"\\n\"}{end}",
        ]);
        rvs.lines()
            .map(|r| r.parse::<u64>().unwrap())
            .max()
            .unwrap()
    };
    s.ok(&["create", "configmap", "after-restart"]);
    let rv: u64 = s
        .ok(&[
            "get",
            "cm",
            "after-restart",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .parse()
        .unwrap();
    assert!(
        rv > last_rv,
        "resourceVersion went backwards: {rv} after {last_rv}"
    );
}

#[test]
fn status_subresource_drives_the_status_column_and_leases_work() {
    let s = ApiServer::start();
    s.ok(&["create", "-f", &s.file("pod.yaml", POD_WEB)]);
    let set_status = |status: &str| {
        s.ok(&[
            "patch",
            "pod",
            "web",
            "--subresource=status",
            "--type=merge",
            "-p",
            status,
        ]);
        rows(&s.ok(&["get", "pods", "--no-headers"]))[0].clone()
    };
    let running = set_status(
        r#"{"status":{"phase":"Running","podIP":"10.88.0.5","conditions":[{"type":"Ready","status":"True"}],
            "containerStatuses":[{"name":"nginx","image":"nginx:1.25","imageID":"","ready":true,"restartCount":0,"state":{"running":{}}}]}}"#,
    );
    assert_eq!(running[..4], ["web", "1/1", "Running", "0"]);
    assert!(s.ok(&["get", "pods", "-o", "wide"]).contains("10.88.0.5"));
    let oom = set_status(
        r#"{"status":{"containerStatuses":[{"name":"nginx","image":"nginx:1.25","imageID":"","ready":false,"restartCount":0,
            "state":{"terminated":{"exitCode":137,"reason":"OOMKilled"}}}]}}"#,
    );
    assert_eq!(oom[..3], ["web", "0/1", "OOMKilled"]);
    let crash = set_status(
        r#"{"status":{"containerStatuses":[{"name":"nginx","image":"nginx:1.25","imageID":"","ready":false,"restartCount":3,
            "state":{"waiting":{"reason":"CrashLoopBackOff"}},"lastState":{"terminated":{"exitCode":1,"finishedAt":"2020-01-01T00:00:00Z"}}}]}}"#,
    );
    assert_eq!(crash[..4], ["web", "0/1", "CrashLoopBackOff", "3"]);
    let completed = set_status(
        r#"{"status":{"phase":"Succeeded","containerStatuses":[{"name":"nginx","image":"nginx:1.25","imageID":"","ready":false,"restartCount":0,
            "state":{"terminated":{"exitCode":0,"reason":"Completed"}}}]}}"#,
    );
    assert_eq!(completed[..3], ["web", "0/1", "Completed"]);

    // Writes to the main resource leave status alone.
    s.ok(&["label", "pod", "web", "x=y"]);
    assert_eq!(
        s.ok(&["get", "pod", "web", "-o", "jsonpath={.status.phase}"]),
        "Succeeded"
    );

    let lease = s.file(
        "lease.yaml",
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: node1\n  namespace: kube-node-lease\nspec:\n  holderIdentity: node1\n  leaseDurationSeconds: 40\n",
    );
    s.ok(&["apply", "-f", &lease]);
    let leases = rows(&s.ok(&["get", "leases", "-A"]));
    assert_eq!(leases[0], ["NAMESPACE", "NAME", "HOLDER", "AGE"]);
    assert_eq!(leases[1][..3], ["kube-node-lease", "node1", "node1"]);
}

#[test]
fn chunked_lists_page_through_everything() {
    let s = ApiServer::start();
    for i in 0..7 {
        s.ok(&[
            "create",
            "configmap",
            &format!("cm-{i}"),
            "--from-literal=k=v",
        ]);
    }
    s.ok(&["label", "configmap", "cm-1", "cm-5", "pick=yes"]);
    let names = |out: String| -> Vec<String> {
        out.lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with("cm-"))
            .map(String::from)
            .collect()
    };
    let all = names(s.ok(&["get", "cm", "--chunk-size=3", "--no-headers"]));
    assert_eq!(all, (0..7).map(|i| format!("cm-{i}")).collect::<Vec<_>>());
    let picked = names(s.ok(&[
        "get",
        "cm",
        "--chunk-size=1",
        "-l",
        "pick=yes",
        "--no-headers",
    ]));
    assert_eq!(picked, ["cm-1", "cm-5"]);

    // The raw pages: a count of what is left only without a selector, as
    // kube-apiserver gives it.
    let url = format!("{}/api/v1/namespaces/default/configmaps?limit=3", s.url());
    let (code, body) = s.curl(&[&url]);
    assert_eq!(code, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    let left = page["metadata"]["remainingItemCount"].as_u64().unwrap();
    assert!(left >= 4, "{body}");
    assert!(page["metadata"]["continue"].is_string());
    let (_, body) = s.curl(&[&format!("{url}&labelSelector=pick%3Dyes")]);
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        page["metadata"].get("remainingItemCount").is_none(),
        "{body}"
    );
}

/// kubectl's typed generators send `application/vnd.kubernetes.protobuf`:
/// the objects they create arrive whole, pointers set to zero included.
#[test]
fn typed_generators_send_protobuf_bodies() {
    let s = ApiServer::start_with(&["--disable-scheduler"]);
    let out = s.kubectl(&[
        "create",
        "priorityclass",
        "high",
        "--value=1000",
        "--description=important",
        "--preemption-policy=Never",
        "-v=8",
    ]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("Content-Type: application/vnd.kubernetes.protobuf"),
        "kubectl sent no protobuf body: {log}"
    );
    let get = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["get", "-o", "json"];
        all.extend(args);
        serde_json::from_str(&s.ok(&all)).unwrap()
    };
    let pc = get(&["priorityclass", "high"]);
    assert_eq!(pc["value"], 1000);
    assert_eq!(pc["description"], "important");
    assert_eq!(pc["preemptionPolicy"], "Never");
    s.ok(&["create", "priorityclass", "zero", "--value=0"]);
    assert_eq!(get(&["priorityclass", "zero"])["value"], 0);

    // (Elsewhere: a quota on requests.cpu would refuse the pod below.)
    s.ok(&[
        "create",
        "quota",
        "q",
        "--hard=pods=2,requests.cpu=1",
        "-n",
        "kube-public",
    ]);
    assert_eq!(
        get(&["quota", "q", "-n", "kube-public"])["spec"]["hard"],
        serde_json::json!({"pods": "2", "requests.cpu": "1"})
    );
    s.ok(&[
        "create",
        "role",
        "reader",
        "--verb=get,list",
        "--resource=pods",
    ]);
    let rule = &get(&["role", "reader"])["rules"][0];
    assert_eq!(rule["verbs"], serde_json::json!(["get", "list"]));
    assert_eq!(rule["resources"], serde_json::json!(["pods"]));
    // Ingresses are not served; a PodDisruptionBudget has int-or-strings.
    s.ok(&[
        "create",
        "pdb",
        "web",
        "--selector=app=web",
        "--min-available=50%",
    ]);
    assert_eq!(get(&["pdb", "web"])["spec"]["minAvailable"], "50%");
    s.ok(&[
        "create",
        "deployment",
        "idle",
        "--image=busybox",
        "--replicas=0",
    ]);
    assert_eq!(get(&["deployment", "idle"])["spec"]["replicas"], 0);

    // `kubectl debug --copy-to` creates a Pod from the typed client; the
    // ephemeral-container form needs `pods/ephemeralcontainers`.
    s.ok(&["create", "-f", &s.file("pod.yaml", POD_WEB)]);
    s.ok(&[
        "debug",
        "web",
        "--copy-to=web-debug",
        "--image=busybox",
        "--container=dbg",
        "--",
        "sleep",
        "1",
    ]);
    let copy = get(&["pod", "web-debug"]);
    let names: Vec<&str> = copy["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"dbg"), "{copy}");

    // A client that accepts only protobuf gets it back, readable by
    // prost's generated Kubernetes types.
    use prost::Message;
    let body = s.file("priorityclass.pb", "");
    let url = format!("{}/apis/scheduling.k8s.io/v1/priorityclasses/high", s.url());
    let accept = "Accept: application/vnd.kubernetes.protobuf";
    let (code, _) = s.curl(&["-H", accept, "-o", &body, &url]);
    assert_eq!(code, 200);
    let bytes = std::fs::read(&body).unwrap();
    let envelope = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(
        bytes.strip_prefix(b"k8s\0").expect("the k8s\\0 prefix"),
    )
    .unwrap();
    let type_meta = envelope.type_meta.unwrap();
    assert_eq!(type_meta.kind.as_deref(), Some("PriorityClass"));
    let pc =
        k8s_pb::api::scheduling::v1::PriorityClass::decode(&envelope.raw.unwrap()[..]).unwrap();
    assert_eq!(pc.metadata.unwrap().name.as_deref(), Some("high"));
    assert_eq!(
        (pc.value, pc.preemption_policy.as_deref()),
        (Some(1000), Some("Never"))
    );
}

#[test]
fn an_unserved_subresource_is_a_404_kubectl_can_read() {
    let s = ApiServer::start();
    s.ok(&["create", "-f", &s.file("pod.yaml", POD_WEB)]);
    // kubectl tells "no such subresource" (empty details) from "no such
    // pod"; a 404 without details made it crash.
    let err = s.fails(&[
        "debug",
        "web",
        "--image=busybox",
        "--attach=false",
        "--profile=general",
        "-c",
        "debugger",
    ]);
    assert!(
        err.contains("ephemeral containers are disabled for this cluster"),
        "{err}"
    );
}
