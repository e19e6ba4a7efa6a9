//! RBAC as a user meets it through the real kubectl: the bootstrap roles,
//! forbidden requests in kube-apiserver's words, `kubectl create
//! role/rolebinding` granting access, `kubectl auth can-i` (and `--list`),
//! escalation refused, aggregation, impersonation, `kubectl auth whoami`,
//! and a node's credentials limited to its own objects.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::ApiServer;

const TOKENS: &str =
    "alice-token,alice,1\nbob-token,bob,2,\"dev\"\nnode1-token,system:node:n1,3,\"system:nodes\"\n";

/// A server with users alice, bob (group dev) and node n1 as tokens.
fn server(extra: &[&str]) -> (ApiServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, TOKENS).unwrap();
    let mut args = vec!["--token-auth-file", tokens.to_str().unwrap()];
    args.extend_from_slice(extra);
    (ApiServer::start_with(&args), dir)
}

/// kubectl as the user of `token` (a kubeconfig with only that token).
fn as_user(s: &ApiServer, token: &str, args: &[&str]) -> Output {
    let kubeconfig = s.dir.path().join(format!("{token}.kubeconfig"));
    if !kubeconfig.exists() {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: {token}\n",
            s.url(),
            s.ca_file()
        );
        std::fs::write(&kubeconfig, text).unwrap();
    }
    let mut c = s.kubectl_cmd(args);
    c.env("KUBECONFIG", &kubeconfig);
    c.output().unwrap()
}

fn text(o: &Output) -> (bool, String, String) {
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Polls `f` until it holds: the index follows the objects by a watch.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn roles_and_bindings_grant_what_kubectl_asks_and_nothing_more() {
    let (s, _t) = server(&[]);
    let roles = s.ok(&[
        "get",
        "clusterroles",
        "-l",
        "kubernetes.io/bootstrapping=rbac-defaults",
    ]);
    for r in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:node",
        "system:kube-scheduler",
        "system:kubelet-api-admin",
    ] {
        assert!(roles.contains(r), "{r} missing:\n{roles}");
    }
    let (ok, _, err) = text(&as_user(&s, "alice-token", &["get", "pods"]));
    assert!(!ok);
    assert!(
        err.contains("Error from server (Forbidden): pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""),
        "{err}"
    );
    let (ok, out, _) = text(&as_user(
        &s,
        "alice-token",
        &["auth", "can-i", "list", "pods"],
    ));
    assert!(!ok && out.trim() == "no", "{out}");

    s.ok(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get,list,watch",
        "--resource=pods",
    ]);
    s.ok(&[
        "create",
        "rolebinding",
        "alice-reads",
        "--role=pod-reader",
        "--user=alice",
    ]);
    let wide = s.ok(&["get", "rolebinding", "alice-reads", "-o", "wide"]);
    assert!(
        wide.contains("Role/pod-reader") && wide.contains("alice"),
        "{wide}"
    );
    let described = s.ok(&["describe", "role", "pod-reader"]);
    assert!(
        described.contains("pods") && described.contains("[get list watch]"),
        "{described}"
    );

    eventually("alice to list pods", || {
        as_user(&s, "alice-token", &["auth", "can-i", "list", "pods"])
            .status
            .success()
    });
    let (ok, _, err) = text(&as_user(&s, "alice-token", &["get", "pods"]));
    assert!(ok, "{err}");
    let (ok, _, err) = text(&as_user(
        &s,
        "alice-token",
        &["get", "pods", "-n", "kube-system"],
    ));
    assert!(
        !ok && err.contains("in the namespace \"kube-system\""),
        "{err}"
    );
    let (ok, _, err) = text(&as_user(&s, "alice-token", &["delete", "pod", "x"]));
    assert!(
        !ok && err
            .contains("pods \"x\" is forbidden: User \"alice\" cannot delete resource \"pods\""),
        "{err}"
    );
    let (_, list, _) = text(&as_user(&s, "alice-token", &["auth", "can-i", "--list"]));
    assert!(
        list.lines()
            .any(|l| l.starts_with("pods ") && l.contains("[get list watch]")),
        "{list}"
    );
    assert!(
        list.contains("selfsubjectaccessreviews.authorization.k8s.io"),
        "{list}"
    );
    // A ClusterRoleBinding for a group reaches every member, everywhere.
    s.ok(&[
        "create",
        "clusterrolebinding",
        "dev-view",
        "--clusterrole=view",
        "--group=dev",
    ]);
    eventually("bob to view kube-system", || {
        as_user(
            &s,
            "bob-token",
            &["get", "deployments", "-n", "kube-system"],
        )
        .status
        .success()
    });
    let (_, out, _) = text(&s.kubectl(&[
        "auth",
        "can-i",
        "create",
        "deployments",
        "--as",
        "bob",
        "--as-group",
        "dev",
    ]));
    assert_eq!(out.trim(), "no");
}

#[test]
fn escalation_is_refused_unless_the_permissions_are_held() {
    let (s, _t) = server(&[]);
    s.ok(&["create", "namespace", "team"]);
    s.ok(&[
        "create",
        "rolebinding",
        "alice-admin",
        "--clusterrole=admin",
        "--user=alice",
        "-n",
        "team",
    ]);
    eventually("alice to be admin of team", || {
        as_user(
            &s,
            "alice-token",
            &["auth", "can-i", "create", "roles", "-n", "team"],
        )
        .status
        .success()
    });
    // What she holds she may grant.
    let (ok, _, err) = text(&as_user(
        &s,
        "alice-token",
        &[
            "create",
            "role",
            "reader",
            "--verb=get",
            "--resource=pods",
            "-n",
            "team",
        ],
    ));
    assert!(ok, "{err}");
    let (ok, _, err) = text(&as_user(
        &s,
        "alice-token",
        &[
            "create",
            "rolebinding",
            "bob-edit",
            "--clusterrole=edit",
            "--user=bob",
            "-n",
            "team",
        ],
    ));
    assert!(ok, "{err}");
    // What she does not hold she may not.
    let (ok, _, err) = text(&as_user(
        &s,
        "alice-token",
        &[
            "create",
            "role",
            "node-killer",
            "--verb=delete",
            "--resource=nodes",
            "-n",
            "team",
        ],
    ));
    assert!(!ok);
    assert!(
        err.contains("roles.rbac.authorization.k8s.io \"node-killer\" is forbidden: user \"alice\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:")
            && err.contains("{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"delete\"]}"),
        "{err}"
    );
    let (ok, _, err) = text(&as_user(
        &s,
        "alice-token",
        &[
            "create",
            "rolebinding",
            "root",
            "--clusterrole=cluster-admin",
            "--user=alice",
            "-n",
            "team",
        ],
    ));
    assert!(
        !ok && err.contains("is attempting to grant RBAC permissions not currently held"),
        "{err}"
    );
    // `bind` on that role lets her.
    s.ok(&[
        "create",
        "clusterrole",
        "bind-cluster-admin",
        "--verb=bind",
        "--resource=clusterroles",
        "--resource-name=cluster-admin",
    ]);
    s.ok(&[
        "create",
        "rolebinding",
        "alice-binds",
        "--clusterrole=bind-cluster-admin",
        "--user=alice",
        "-n",
        "team",
    ]);
    eventually("alice to bind cluster-admin", || {
        as_user(
            &s,
            "alice-token",
            &[
                "create",
                "rolebinding",
                "root",
                "--clusterrole=cluster-admin",
                "--user=alice",
                "-n",
                "team",
            ],
        )
        .status
        .success()
    });
}

#[test]
fn aggregated_cluster_roles_collect_the_rules_of_labelled_ones() {
    let (s, _t) = server(&[]);
    let view = s.ok(&[
        "get",
        "clusterrole",
        "view",
        "-o",
        "jsonpath={.rules[*].resources}",
    ]);
    assert!(view.contains("pods") && !view.contains("secrets"), "{view}");
    let edit = s.ok(&[
        "get",
        "clusterrole",
        "edit",
        "-o",
        "jsonpath={.rules[*].resources}",
    ]);
    assert!(edit.contains("secrets"), "{edit}");
    s.file(
        "monitoring.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: monitoring\naggregationRule:\n  clusterRoleSelectors:\n  - matchLabels:\n      example.com/aggregate-to-monitoring: \"true\"\nrules: []\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: monitoring-endpoints\n  labels:\n    example.com/aggregate-to-monitoring: \"true\"\n    rbac.authorization.k8s.io/aggregate-to-view: \"true\"\nrules:\n- apiGroups: [\"\"]\n  resources: [\"nodes\"]\n  verbs: [\"get\", \"list\"]\n",
    );
    s.ok(&[
        "apply",
        "-f",
        &s.dir.path().join("monitoring.yaml").to_string_lossy(),
    ]);
    eventually("monitoring to aggregate", || {
        s.ok(&[
            "get",
            "clusterrole",
            "monitoring",
            "-o",
            "jsonpath={.rules[*].resources}",
        ])
        .contains("nodes")
    });
    // view (and through it edit and admin) picked the rule up as well.
    eventually("admin to aggregate through edit and view", || {
        s.ok(&[
            "get",
            "clusterrole",
            "admin",
            "-o",
            "jsonpath={.rules[*].resources}",
        ])
        .contains("nodes")
    });
    // Validation in kube-apiserver's words.
    s.file(
        "bad-role.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: bad\nrules:\n- nonResourceURLs: [\"/healthz\"]\n  verbs: [\"get\"]\n- apiGroups: [\"\"]\n  resources: [\"pods\"]\n  verbs: []\n",
    );
    let err = s.fails(&[
        "create",
        "-f",
        &s.dir.path().join("bad-role.yaml").to_string_lossy(),
    ]);
    assert!(
        err.contains("rules[0].nonResourceURLs: Invalid value: []string{\"/healthz\"}: namespaced rules cannot apply to non-resource URLs")
            && err.contains("rules[1].verbs: Required value: verbs must contain at least one value"),
        "{err}"
    );
}

#[test]
fn impersonation_needs_the_impersonate_verb_and_whoami_tells_who() {
    let (s, _t) = server(&[]);
    let me = s.ok(&["auth", "whoami"]);
    assert!(
        me.contains("kubernetes-admin")
            && me.contains("system:masters")
            && me.contains("system:authenticated"),
        "{me}"
    );
    let as_alice = s.ok(&["auth", "whoami", "--as", "alice", "--as-group", "dev"]);
    assert!(
        as_alice.contains("alice")
            && as_alice.contains("dev")
            && !as_alice.contains("system:masters"),
        "{as_alice}"
    );
    let err = s.fails(&["get", "pods", "--as", "alice"]);
    assert!(
        err.contains("User \"alice\" cannot list resource \"pods\""),
        "{err}"
    );
    let (ok, _, err) = text(&as_user(&s, "alice-token", &["get", "pods", "--as", "bob"]));
    assert!(
        !ok && err.contains("users \"bob\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"),
        "{err}"
    );
    s.ok(&[
        "create",
        "clusterrole",
        "impersonate-bob",
        "--verb=impersonate",
        "--resource=users",
        "--resource-name=bob",
    ]);
    s.ok(&[
        "create",
        "clusterrolebinding",
        "alice-as-bob",
        "--clusterrole=impersonate-bob",
        "--user=alice",
    ]);
    eventually("alice to act as bob", || {
        let (ok, out, _) = text(&as_user(
            &s,
            "alice-token",
            &["auth", "whoami", "--as", "bob"],
        ));
        ok && out.contains("bob")
    });
    let whoami = text(&as_user(
        &s,
        "bob-token",
        &["auth", "whoami", "-o", "jsonpath={.status.userInfo.groups}"],
    ))
    .1;
    assert!(
        whoami.contains("dev") && whoami.contains("system:authenticated"),
        "{whoami}"
    );
}

#[test]
fn a_node_reaches_only_its_own_node_lease_pods_and_what_they_use() {
    let (s, _t) = server(&[]);
    s.ok(&["create", "secret", "generic", "s1", "--from-literal=k=v"]);
    s.ok(&["create", "secret", "generic", "s2", "--from-literal=k=v"]);
    let pod = |name: &str, node: &str, secret: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: busybox\n    envFrom:\n    - secretRef:\n        name: {secret}\n"
        )
    };
    s.file(
        "pods.yaml",
        &format!(
            "{}---\n{}",
            pod("on-n1", "n1", "s1"),
            pod("on-n2", "n2", "s2")
        ),
    );
    s.ok(&[
        "create",
        "-f",
        &s.dir.path().join("pods.yaml").to_string_lossy(),
    ]);
    let node = |args: &[&str]| text(&as_user(&s, "node1-token", args));
    eventually("n1 to read its pod's secret", || {
        node(&["get", "secret", "s1"]).0
    });
    let (ok, _, err) = node(&["get", "secret", "s2"]);
    assert!(
        !ok && err.contains("secrets \"s2\" is forbidden: User \"system:node:n1\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'n1' and this object"),
        "{err}"
    );
    let (ok, _, err) = node(&["get", "secrets"]);
    assert!(!ok, "{err}");
    // Its own Node and Lease, not another's.
    s.file(
        "n1.yaml",
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n",
    );
    s.file(
        "n2.yaml",
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: n2\n",
    );
    let path = |f: &str| s.dir.path().join(f).to_string_lossy().into_owned();
    let (ok, _, err) = node(&["create", "-f", &path("n1.yaml")]);
    assert!(ok, "{err}");
    let (ok, _, err) = node(&["create", "-f", &path("n2.yaml")]);
    assert!(
        !ok && err.contains("node \"n1\" is not allowed to modify node \"n2\""),
        "{err}"
    );
    let lease = |name: &str| {
        format!(
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: {name}\n  namespace: kube-node-lease\nspec:\n  holderIdentity: {name}\n"
        )
    };
    s.file("l1.yaml", &lease("n1"));
    s.file("l2.yaml", &lease("n2"));
    assert!(node(&["create", "-f", &path("l1.yaml")]).0);
    let (ok, _, err) = node(&["create", "-f", &path("l2.yaml")]);
    assert!(
        !ok && err.contains("can only access node lease with the same name as the requesting node"),
        "{err}"
    );
    // Pods: it reads them, creates only mirror pods, deletes only its own.
    assert!(node(&["get", "pods"]).0);
    s.file("plain.yaml", &pod("plain", "n1", "s1"));
    let (ok, _, err) = node(&["create", "-f", &path("plain.yaml")]);
    assert!(!ok && err.contains("can only create mirror pods"), "{err}");
    let (ok, _, err) = node(&["delete", "pod", "on-n2", "--wait=false"]);
    assert!(
        !ok && err.contains("node \"n1\" can only delete pods with spec.nodeName set to itself"),
        "{err}"
    );
    let (ok, _, err) = node(&["delete", "pod", "on-n1", "--wait=false"]);
    assert!(ok, "{err}");
    // Nodes are not cluster admins.
    let (ok, _, err) = node(&["get", "clusterroles"]);
    assert!(
        !ok && err.contains("cannot list resource \"clusterroles\""),
        "{err}"
    );
}

#[test]
fn always_allow_lets_every_authenticated_user_through() {
    let (s, _t) = server(&["--authorization-mode", "AlwaysAllow"]);
    let (ok, _, err) = text(&as_user(&s, "alice-token", &["get", "pods"]));
    assert!(ok, "{err}");
}
