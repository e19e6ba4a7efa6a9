//! Configuration reaching containers: environment from ConfigMaps, Secrets,
//! the downward API and Services; configMap, secret, downwardAPI and
//! projected volumes, updated in place; read-only mounts; and what happens
//! when a referenced object is missing. API objects are made with the real
//! `kubectl` against the real apiserver, as a user makes them.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::time::{Duration, Instant};

use cluster::{ApiServer, api_pod, row, wait_for};
use common::TestNode;

/// The log of an API pod's container, from the agent.
fn logs(node: &TestNode, pod: &str, container: &str) -> Option<String> {
    node.get(&format!("/containerLogs/default/{pod}/{container}"))
        .ok()
}

fn wait_log(node: &TestNode, pod: &str, container: &str, needle: &str) -> String {
    wait_for(
        node,
        &format!("{needle:?} in the log of {pod}/{container}"),
        Duration::from_secs(40),
        || logs(node, pod, container).filter(|l| l.contains(needle)),
    )
}

fn jsonpath(api: &ApiServer, pod: &str, path: &str) -> String {
    api.try_kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={path}")])
        .unwrap_or_default()
}

#[test]
fn environment_from_configmaps_secrets_the_downward_api_and_services() {
    let api = ApiServer::start();
    let node = api.join();
    let name = node.node_name.clone();
    api.kubectl(&[
        "create",
        "configmap",
        "app-config",
        "--from-literal=APP_COLOR=blue",
        "--from-literal=APP_MODE=prod",
        "--from-literal=1badkey=skipped",
    ]);
    api.kubectl(&[
        "create",
        "secret",
        "generic",
        "app-secret",
        "--from-literal=DB_Host=mysql",
        "--from-literal=DB_Password=passwd",
    ]);
    api.kubectl(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    let web_ip = api.kubectl(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let k8s_ip = api.kubectl(&[
        "get",
        "svc",
        "kubernetes",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    api.apply(&api_pod(
        "envs",
        &name,
        r#"  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "env | sort; echo \"ARG=$1\"; exec sleep 3600", "sh", "$(APP_COLOR) and $$(APP_COLOR) and $(NOPE)"]
    resources:
      limits:
        cpu: 250m
        memory: 64Mi
    envFrom:
    - configMapRef:
        name: app-config
    - secretRef:
        name: app-secret
      prefix: SECRET_
    env:
    - name: COLOR
      valueFrom:
        configMapKeyRef:
          name: app-config
          key: APP_COLOR
    - name: PASSWORD
      valueFrom:
        secretKeyRef:
          name: app-secret
          key: DB_Password
    - name: OPTIONAL_MISSING
      valueFrom:
        secretKeyRef:
          name: no-such-secret
          key: x
          optional: true
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    - name: POD_UID
      valueFrom:
        fieldRef:
          fieldPath: metadata.uid
    - name: APP_LABEL
      valueFrom:
        fieldRef:
          fieldPath: metadata.labels['app']
    - name: NODE_NAME
      valueFrom:
        fieldRef:
          fieldPath: spec.nodeName
    - name: SERVICE_ACCOUNT
      valueFrom:
        fieldRef:
          fieldPath: spec.serviceAccountName
    - name: HOST_IP
      valueFrom:
        fieldRef:
          fieldPath: status.hostIP
    - name: CPU_LIMIT
      valueFrom:
        resourceFieldRef:
          resource: limits.cpu
    - name: CPU_LIMIT_MILLIS
      valueFrom:
        resourceFieldRef:
          resource: limits.cpu
          divisor: 1m
    - name: MEMORY_LIMIT_MI
      valueFrom:
        resourceFieldRef:
          resource: limits.memory
          divisor: 1Mi
    - name: GREETING
      value: "color is $(COLOR), mode $(APP_MODE), api at $(KUBERNETES_SERVICE_HOST)"
"#,
    ));
    let out = wait_log(&node, "envs", "main", "ARG=");
    let env: Vec<&str> = out.lines().collect();
    let uid = api.kubectl(&["get", "pod", "envs", "-o", "jsonpath={.metadata.uid}"]);
    for expected in [
        "APP_COLOR=blue".to_string(),
        "APP_MODE=prod".into(),
        "SECRET_DB_Host=mysql".into(),
        "SECRET_DB_Password=passwd".into(),
        "COLOR=blue".into(),
        "PASSWORD=passwd".into(),
        "POD_NAME=envs".into(),
        "POD_NAMESPACE=default".into(),
        format!("POD_UID={uid}"),
        "APP_LABEL=envs-app".into(),
        format!("NODE_NAME={name}"),
        "SERVICE_ACCOUNT=default".into(),
        "HOST_IP=127.0.0.1".into(),
        "CPU_LIMIT=1".into(),
        "CPU_LIMIT_MILLIS=250".into(),
        "MEMORY_LIMIT_MI=64".into(),
        format!("GREETING=color is blue, mode prod, api at {k8s_ip}"),
        format!("KUBERNETES_SERVICE_HOST={k8s_ip}"),
        "KUBERNETES_SERVICE_PORT=443".into(),
        "KUBERNETES_SERVICE_PORT_HTTPS=443".into(),
        format!("KUBERNETES_PORT=tcp://{k8s_ip}:443"),
        format!("KUBERNETES_PORT_443_TCP_ADDR={k8s_ip}"),
        format!("WEB_SERVICE_HOST={web_ip}"),
        "WEB_SERVICE_PORT=80".into(),
        "WEB_SERVICE_PORT_80_8080=80".into(),
        format!("WEB_PORT=tcp://{web_ip}:80"),
        format!("WEB_PORT_80_TCP=tcp://{web_ip}:80"),
        "WEB_PORT_80_TCP_PROTO=tcp".into(),
        "WEB_PORT_80_TCP_PORT=80".into(),
        format!("WEB_PORT_80_TCP_ADDR={web_ip}"),
        "ARG=blue and $(APP_COLOR) and $(NOPE)".into(),
        "HOSTNAME=envs".into(),
    ] {
        assert!(
            env.contains(&expected.as_str()),
            "{expected} missing from:\n{out}"
        );
    }
    assert!(!out.contains("1badkey"), "{out}");
    assert!(!out.contains("OPTIONAL_MISSING"), "{out}");

    let events = wait_for(
        &node,
        "the InvalidEnvironmentVariableNames event",
        Duration::from_secs(20),
        || {
            api.try_kubectl(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=envs",
            ])
            .filter(|e| e.contains("InvalidEnvironmentVariableNames"))
        },
    );
    assert!(
        events.contains("Keys [1badkey] from the EnvFrom configMap default/app-config were skipped since they are considered invalid environment variable names."),
        "{events}"
    );

    // enableServiceLinks: false keeps only the master service's variables.
    api.apply(&api_pod(
        "nolinks",
        &name,
        r#"  enableServiceLinks: false
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "env | sort; echo done; exec sleep 3600"]
"#,
    ));
    let out = wait_log(&node, "nolinks", "main", "done");
    assert!(
        out.contains(&format!("KUBERNETES_SERVICE_HOST={k8s_ip}")),
        "{out}"
    );
    assert!(!out.contains("WEB_SERVICE_HOST"), "{out}");
    api.delete_all_pods();
}

#[test]
fn a_missing_configmap_holds_the_container_until_it_is_created() {
    let api = ApiServer::start();
    let node = api.join();
    let name = node.node_name.clone();
    api.apply(&api_pod(
        "waiter",
        &name,
        r#"  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "echo \"greeting: $GREETING\"; exec sleep 3600"]
    env:
    - name: GREETING
      valueFrom:
        configMapKeyRef:
          name: late
          key: greeting
"#,
    ));
    let waiting = "{.status.containerStatuses[0].state.waiting.reason}|{.status.containerStatuses[0].state.waiting.message}";
    let state = wait_for(
        &node,
        "CreateContainerConfigError",
        Duration::from_secs(30),
        || {
            let s = jsonpath(&api, "waiter", waiting);
            s.starts_with("CreateContainerConfigError|").then_some(s)
        },
    );
    assert_eq!(
        state,
        "CreateContainerConfigError|configmap \"late\" not found"
    );
    let cells = row(&api.kubectl(&["get", "pods"]), "waiter").unwrap();
    assert_eq!(cells[2], "CreateContainerConfigError", "{cells:?}");
    let events = wait_for(&node, "the Failed event", Duration::from_secs(20), || {
        api.try_kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=waiter",
        ])
        .filter(|e| e.contains("Failed"))
    });
    assert!(
        events.contains("Error: configmap \"late\" not found"),
        "{events}"
    );

    // The ConfigMap appears without the key: the message says which key.
    api.kubectl(&["create", "configmap", "late", "--from-literal=other=1"]);
    wait_for(
        &node,
        "the missing key's message",
        Duration::from_secs(30),
        || {
            (jsonpath(&api, "waiter", waiting)
            == "CreateContainerConfigError|couldn't find key greeting in ConfigMap default/late")
            .then_some(())
        },
    );

    // With the key, the container starts on its own, without waiting out a back-off.
    let cm = api.kubectl(&[
        "create",
        "configmap",
        "late",
        "--from-literal=greeting=hello",
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    let fixed = Instant::now();
    api.apply(&cm);
    wait_for(&node, "waiter Running", Duration::from_secs(30), || {
        let cells = row(&api.try_kubectl(&["get", "pods"])?, "waiter")?;
        (cells[2] == "Running").then_some(())
    });
    let took = fixed.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "started {took:?} after the fix"
    );
    assert_eq!(
        wait_log(&node, "waiter", "main", "greeting").trim(),
        "greeting: hello"
    );
    api.delete_all_pods();
}

#[test]
fn configmap_volume_as_a_config_file_follows_updates_and_is_read_only() {
    let api = ApiServer::start();
    let node = api.join();
    let name = node.node_name.clone();
    // The seed notes' way: a config file in a ConfigMap, mounted where the
    // server reads its configuration.
    let conf = api.dir.path().join("default.conf");
    std::fs::write(&conf, "server { listen 80; }").unwrap();
    api.kubectl(&[
        "create",
        "configmap",
        "nginx-conf",
        &format!("--from-file=default.conf={}", conf.display()),
    ]);
    api.apply(&api_pod(
        "web",
        &name,
        r#"  volumes:
  - name: config
    configMap:
      name: nginx-conf
  containers:
  - name: nginx
    image: busybox
    volumeMounts:
    - name: config
      mountPath: /etc/nginx/conf.d
    command:
    - sh
    - -c
    - |
      ls -a /etc/nginx/conf.d | tr '\n' ' '; echo
      touch /etc/nginx/conf.d/extra 2>&1 || true
      last=""
      while :; do
        cur=$(cat /etc/nginx/conf.d/default.conf)
        [ "$cur" != "$last" ] && echo "conf: $cur" && last="$cur"
        sleep 0.2
      done
"#,
    ));
    let out = wait_log(&node, "web", "nginx", "conf: server { listen 80; }");
    let listing = out.lines().next().unwrap();
    assert!(
        listing.contains("..data") && listing.contains("default.conf"),
        "{out}"
    );
    assert!(
        out.contains("Read-only file system"),
        "configMap volumes are read-only: {out}"
    );

    // On the node: the kubelet's layout, a timestamped dir behind `..data`.
    let uid = api.kubectl(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"]);
    let vol = node
        .state_dir()
        .join("pods")
        .join(&uid)
        .join("volumes/kubernetes.io~configmap/config");
    let data = std::fs::read_link(vol.join("..data")).unwrap();
    assert!(data.to_string_lossy().starts_with("..20"), "{data:?}");
    assert_eq!(
        std::fs::read_link(vol.join("default.conf")).unwrap(),
        std::path::Path::new("..data/default.conf")
    );

    // An edit shows up in the running container.
    std::fs::write(&conf, "server { listen 8080; }").unwrap();
    let updated = api.kubectl(&[
        "create",
        "configmap",
        "nginx-conf",
        &format!("--from-file=default.conf={}", conf.display()),
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    let edited = Instant::now();
    api.apply(&updated);
    wait_log(&node, "web", "nginx", "conf: server { listen 8080; }");
    let took = edited.elapsed();
    assert!(took < Duration::from_secs(10), "the update took {took:?}");
    assert_eq!(
        jsonpath(&api, "web", "{.status.containerStatuses[0].restartCount}"),
        "0",
        "no restart for a config update"
    );
    api.delete_all_pods();
}

#[test]
fn secret_downward_and_projected_volumes() {
    let api = ApiServer::start();
    let node = api.join();
    let name = node.node_name.clone();
    api.kubectl(&[
        "create",
        "secret",
        "generic",
        "tls",
        "--from-literal=tls.key=KEYDATA",
    ]);
    api.kubectl(&[
        "create",
        "configmap",
        "settings",
        "--from-literal=mode=fast",
    ]);
    api.kubectl(&["create", "serviceaccount", "vols"]);
    api.apply(&api_pod(
        "vols",
        &name,
        r#"  serviceAccountName: vols
  volumes:
  - name: tls
    secret:
      secretName: tls
      defaultMode: 0400
  - name: podinfo
    downwardAPI:
      items:
      - path: labels
        fieldRef:
          fieldPath: metadata.labels
      - path: name
        fieldRef:
          fieldPath: metadata.name
      - path: mem_limit_mi
        resourceFieldRef:
          containerName: main
          resource: limits.memory
          divisor: 1Mi
  - name: all-in-one
    projected:
      sources:
      - configMap:
          name: settings
          items:
          - key: mode
            path: config/mode
      - secret:
          name: tls
      - downwardAPI:
          items:
          - path: namespace
            fieldRef:
              fieldPath: metadata.namespace
      - serviceAccountToken:
          path: token
  containers:
  - name: main
    image: busybox
    resources:
      limits:
        memory: 48Mi
    volumeMounts:
    - name: tls
      mountPath: /etc/tls
    - name: podinfo
      mountPath: /etc/podinfo
    - name: all-in-one
      mountPath: /projected
    command:
    - sh
    - -c
    - |
      echo "key=$(cat /etc/tls/tls.key) mode=$(stat -L -c %a /etc/tls/tls.key)"
      echo "labels=$(cat /etc/podinfo/labels) name=$(cat /etc/podinfo/name) mem=$(cat /etc/podinfo/mem_limit_mi)"
      echo "projected=$(cat /projected/config/mode),$(cat /projected/tls.key),$(cat /projected/namespace)"
      echo "token=$(head -c 3 /projected/token)"
      echo checked
      exec sleep 3600
"#,
    ));
    let out = wait_log(&node, "vols", "main", "checked");
    assert!(out.contains("key=KEYDATA mode=400"), "{out}");
    assert!(
        out.contains("labels=app=\"vols-app\" name=vols mem=48"),
        "{out}"
    );
    assert!(out.contains("projected=fast,KEYDATA,default"), "{out}");
    // The ServiceAccount's token, a JWT: `{"alg"...` in base64url.
    assert!(out.contains("token=eyJ"), "{out}");

    // The secret lives on a tmpfs on the node, and goes with the pod.
    let uid = api.kubectl(&["get", "pod", "vols", "-o", "jsonpath={.metadata.uid}"]);
    let pod_dir = node.state_dir().join("pods").join(&uid);
    let secret_dir = pod_dir.join("volumes/kubernetes.io~secret/tls");
    let fstype = |path: &std::path::Path| {
        let target = path.to_string_lossy().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(target.as_str()))
            .and_then(|l| l.split(" - ").nth(1))
            .and_then(|rest| rest.split(' ').next())
            .map(String::from)
    };
    assert_eq!(fstype(&secret_dir).as_deref(), Some("tmpfs"));
    assert_eq!(
        fstype(&pod_dir.join("volumes/kubernetes.io~projected/all-in-one")).as_deref(),
        Some("tmpfs")
    );
    let downward_dir = pod_dir.join("volumes/kubernetes.io~downward-api/podinfo");
    assert!(downward_dir.join("..data").exists());
    assert_eq!(
        fstype(&downward_dir),
        None,
        "downwardAPI volumes are plain dirs"
    );
    api.kubectl(&["delete", "pod", "vols", "--timeout=60s"]);
    wait_for(&node, "the pod dir gone", Duration::from_secs(20), || {
        (!pod_dir.exists()).then_some(())
    });
    assert_eq!(fstype(&secret_dir), None, "the tmpfs is unmounted");
}

#[test]
fn static_pods_may_not_reference_api_objects_and_read_only_mounts_refuse_writes() {
    let node = TestNode::start();
    node.write_manifest(
        "cm.yaml",
        r#"apiVersion: v1
kind: Pod
metadata:
  name: cm
spec:
  volumes:
  - name: conf
    configMap:
      name: app-config
  containers:
  - name: main
    image: busybox
    command: ["sleep", "3600"]
"#,
    );
    node.write_manifest(
        "ro.yaml",
        r#"apiVersion: v1
kind: Pod
metadata:
  name: ro
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: data
    emptyDir: {}
  initContainers:
  - name: fill
    image: busybox
    volumeMounts:
    - name: data
      mountPath: /data
    command: ["sh", "-c", "echo from-init > /data/file"]
  containers:
  - name: main
    image: busybox
    volumeMounts:
    - name: data
      mountPath: /data
      readOnly: true
    command: ["sh", "-c", "cat /data/file; echo x > /data/file 2>&1; touch /data/new 2>&1; echo done; exec sleep 3600"]
"#,
    );
    let out = node.wait_for("the read-only writes", Duration::from_secs(30), |n| {
        n.get(&format!("/containerLogs/default/ro-{}/main", n.node_name))
            .ok()
            .filter(|l| l.contains("done"))
    });
    assert!(out.starts_with("from-init\n"), "{out}");
    assert_eq!(
        out.matches("Read-only file system").count(),
        2,
        "both writes fail with EROFS: {out}"
    );
    let event = node.wait_for("the refusal event", Duration::from_secs(10), |n| {
        n.get_json("/events")
            .as_array()?
            .iter()
            .find(|e| e["reason"] == "FailedToCreatePod")
            .cloned()
    });
    let message = event["message"].as_str().unwrap();
    assert!(
        message.ends_with("cm.yaml: static pods may not reference configmaps"),
        "{message}"
    );
    assert!(node.pod("cm").is_none(), "the pod is not run");
}
