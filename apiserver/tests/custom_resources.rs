//! CustomResourceDefinitions as kube-apiserver serves them, judged through
//! the real kubectl: a PostgreSQL cluster resource like the ones operators
//! (CrunchyData's postgres-operator) define is served as soon as its CRD is
//! established, its schema validates, defaults and prunes, its printer
//! columns, status and scale subresources work, and deleting the CRD
//! deletes its objects. Run on etcd too (`KUBELAB_TEST_STORE=etcd`).

mod common;

use std::time::{Duration, Instant};

use common::{ApiServer, rows};
use serde_json::Value;

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: pgclusters.crunchydata.com
spec:
  group: crunchydata.com
  scope: Namespaced
  names:
    plural: pgclusters
    singular: pgcluster
    kind: Pgcluster
    shortNames: [pgc]
    categories: [databases]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.selector
    additionalPrinterColumns:
    - name: Replicas
      type: integer
      jsonPath: .spec.replicas
    - name: Version
      type: string
      jsonPath: .spec.version
    - name: Phase
      type: string
      jsonPath: .status.phase
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [version]
            properties:
              version:
                type: string
                enum: ["14", "15", "16"]
              replicas:
                type: integer
                minimum: 1
                maximum: 5
                default: 1
              port:
                type: integer
                default: 5432
              storage:
                type: string
                pattern: '^[0-9]+Gi$'
              backup:
                type: object
                x-kubernetes-preserve-unknown-fields: true
          status:
            type: object
            properties:
              phase: {type: string}
              replicas: {type: integer}
              selector: {type: string}
"#;

const HIPPO: &str = r#"apiVersion: crunchydata.com/v1
kind: Pgcluster
metadata:
  name: hippo
  labels:
    tier: db
spec:
  version: "16"
  storage: 1Gi
  bogus: dropped
  backup:
    schedule: "0 1 * * *"
    anything: [1, 2]
"#;

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn json(s: &ApiServer, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&s.ok(&a)).unwrap()
}

fn raw(s: &ApiServer, path: &str) -> Value {
    serde_json::from_str(&s.ok(&["get", "--raw", path])).unwrap()
}

fn condition<'a>(crd: &'a Value, type_: &str) -> &'a Value {
    crd["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

#[test]
fn a_custom_resource_is_served_validated_defaulted_and_pruned() {
    let s = ApiServer::start();
    let crd = s.file("crd.yaml", CRD);
    s.ok(&["apply", "-f", &crd]);
    let c = json(&s, &["get", "crd", "pgclusters.crunchydata.com"]);
    assert_eq!(condition(&c, "NamesAccepted")["status"], "True", "{c}");
    assert_eq!(condition(&c, "Established")["status"], "True", "{c}");
    assert_eq!(c["status"]["acceptedNames"]["shortNames"][0], "pgc");
    assert_eq!(c["status"]["storedVersions"][0], "v1");
    assert!(
        s.ok(&["get", "crd"]).contains("pgclusters.crunchydata.com"),
        "kubectl get crd lists it"
    );

    // Served at once, under every name discovery gives it.
    let hippo = s.file("hippo.yaml", HIPPO);
    // kubectl asks for strict field validation by default.
    let err = s.fails(&["apply", "-f", &hippo]);
    assert!(
        err.contains(r#"Pgcluster in version "v1" cannot be handled as a Pgcluster: strict decoding error: unknown field "spec.bogus""#),
        "{err}"
    );
    let out = s.kubectl(&["apply", "--validate=warn", "-f", &hippo]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(r#"unknown field "spec.bogus""#),
        "a pruned field is warned about: {out:?}"
    );
    for name in [
        "pgclusters",
        "pgcluster",
        "pgc",
        "databases",
        "pgclusters.crunchydata.com",
    ] {
        let out = s.ok(&["get", name]);
        let r = rows(&out);
        assert_eq!(
            r[0],
            vec!["NAME", "REPLICAS", "VERSION", "PHASE", "AGE"],
            "{name}: {out}"
        );
        // An absent field is an empty cell.
        assert_eq!(r[1][..3], ["hippo", "1", "16"], "{name}: {out}");
        assert_eq!(r[1].len(), 4, "{name}: {out}");
    }
    let obj = json(&s, &["get", "pgc", "hippo"]);
    assert_eq!(obj["spec"]["replicas"], 1, "defaulted: {obj}");
    assert_eq!(obj["spec"]["port"], 5432, "defaulted: {obj}");
    assert!(obj["spec"].get("bogus").is_none(), "pruned: {obj}");
    assert_eq!(obj["spec"]["backup"]["anything"][1], 2, "preserved: {obj}");
    assert_eq!(obj["metadata"]["generation"], 1);

    // A bad object is refused, naming the field.
    let bad = s.file(
        "bad.yaml",
        "apiVersion: crunchydata.com/v1\nkind: Pgcluster\nmetadata:\n  name: bad\nspec:\n  version: \"16\"\n  replicas: three\n",
    );
    let err = s.fails(&["apply", "-f", &bad]);
    assert!(
        err.contains(r#"The Pgcluster "bad" is invalid: spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string""#),
        "{err}"
    );
    let worse = s.file(
        "worse.yaml",
        "apiVersion: crunchydata.com/v1\nkind: Pgcluster\nmetadata:\n  name: worse\nspec:\n  version: \"9\"\n  replicas: 7\n  storage: lots\n",
    );
    let err = s.fails(&["create", "-f", &worse]);
    for want in [
        r#"spec.version: Unsupported value: "9": supported values: "14", "15", "16""#,
        "spec.replicas: Invalid value: 7: spec.replicas in body should be less than or equal to 5",
        r#"spec.storage: Invalid value: "lots": spec.storage in body should match '^[0-9]+Gi$'"#,
    ] {
        assert!(err.contains(want), "{want} in {err}");
    }
    let missing = s.file(
        "missing.yaml",
        "apiVersion: crunchydata.com/v1\nkind: Pgcluster\nmetadata:\n  name: missing\nspec: {}\n",
    );
    let err = s.fails(&["create", "-f", &missing]);
    assert!(err.contains("spec.version: Required value"), "{err}");

    // Selectors.
    let listed = s.ok(&["get", "pgc", "-l", "tier=db", "-o", "name"]);
    assert_eq!(listed.trim(), "pgcluster.crunchydata.com/hippo");
    let listed = s.ok(&["get", "pgc", "-l", "tier=web", "-o", "name"]);
    assert_eq!(listed.trim(), "");
    let listed = s.ok(&[
        "get",
        "pgc",
        "--field-selector",
        "metadata.name=hippo",
        "-o",
        "name",
    ]);
    assert_eq!(listed.trim(), "pgcluster.crunchydata.com/hippo");
    let all = s.ok(&["get", "pgc", "-A"]);
    assert!(all.contains("default") && all.contains("hippo"), "{all}");

    // Patches: merge and JSON patch; strategic merge is refused as upstream does.
    s.ok(&[
        "patch",
        "pgc",
        "hippo",
        "--type=merge",
        "-p",
        r#"{"spec":{"version":"15"}}"#,
    ]);
    s.ok(&[
        "patch",
        "pgc",
        "hippo",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/port","value":5433}]"#,
    ]);
    let obj = json(&s, &["get", "pgc", "hippo"]);
    assert_eq!(obj["spec"]["version"], "15");
    assert_eq!(obj["spec"]["port"], 5433);
    assert_eq!(obj["metadata"]["generation"], 3);
    let err = s.fails(&[
        "patch",
        "pgc",
        "hippo",
        "-p",
        r#"{"spec":{"version":"14"}}"#,
    ]);
    assert!(
        err.contains("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"),
        "{err}"
    );
    let err = s.fails(&[
        "patch",
        "pgc",
        "hippo",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":0}}"#,
    ]);
    assert!(
        err.contains("spec.replicas in body should be greater than or equal to 1"),
        "{err}"
    );

    // kubectl apply again (client-side apply's three-way merge patch).
    let edited = HIPPO.replace("storage: 1Gi", "storage: 2Gi");
    s.ok(&[
        "apply",
        "--validate=false",
        "-f",
        &s.file("hippo2.yaml", &edited),
    ]);
    assert_eq!(json(&s, &["get", "pgc", "hippo"])["spec"]["storage"], "2Gi");
}

#[test]
fn status_and_scale_subresources_and_crd_deletion() {
    let s = ApiServer::start();
    s.ok(&["apply", "-f", &s.file("crd.yaml", CRD)]);
    s.ok(&[
        "apply",
        "--validate=false",
        "-f",
        &s.file("hippo.yaml", HIPPO),
    ]);

    // Status goes through its subresource only, without a new generation.
    s.ok(&[
        "patch",
        "pgc",
        "hippo",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running","replicas":1,"selector":"app=hippo"},"spec":{"port":1}}"#,
    ]);
    let obj = json(&s, &["get", "pgc", "hippo"]);
    assert_eq!(obj["status"]["phase"], "Running");
    assert_eq!(
        obj["spec"]["port"], 5432,
        "spec is not written through status"
    );
    assert_eq!(obj["metadata"]["generation"], 1);
    s.ok(&[
        "patch",
        "pgc",
        "hippo",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Lost"}}"#,
    ]);
    assert_eq!(
        json(&s, &["get", "pgc", "hippo"])["status"]["phase"],
        "Running"
    );
    assert_eq!(rows(&s.ok(&["get", "pgc"]))[1][3], "Running");
    let err = s.fails(&[
        "patch",
        "pgc",
        "hippo",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":"two"}}"#,
    ]);
    assert!(
        err.contains("status.replicas in body must be of type integer"),
        "{err}"
    );

    // kubectl scale writes spec.replicas through the scale subresource.
    s.ok(&["scale", "pgcluster", "hippo", "--replicas=3"]);
    let obj = json(&s, &["get", "pgc", "hippo"]);
    assert_eq!(obj["spec"]["replicas"], 3);
    assert_eq!(obj["metadata"]["generation"], 2);
    let scale = raw(
        &s,
        "/apis/crunchydata.com/v1/namespaces/default/pgclusters/hippo/scale",
    );
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["replicas"], 1);
    assert_eq!(scale["status"]["selector"], "app=hippo");
    let err = s.fails(&["scale", "pgcluster", "hippo", "--replicas=9"]);
    assert!(
        err.contains("spec.replicas in body should be less than or equal to 5"),
        "{err}"
    );

    // Deleting the CRD deletes its objects; a new one starts empty.
    s.ok(&["delete", "crd", "pgclusters.crunchydata.com"]);
    wait_for("the CRD to go", || {
        !s.kubectl(&["get", "crd", "pgclusters.crunchydata.com"])
            .status
            .success()
    });
    s.fails(&["get", "pgclusters"]);
    s.ok(&["apply", "-f", &s.file("crd.yaml", CRD)]);
    assert_eq!(s.ok(&["get", "pgc", "-o", "name"]).trim(), "");
    let listing = s.ok(&["get", "--raw", "/apis/crunchydata.com/v1/pgclusters"]);
    assert!(listing.contains(r#""items":[]"#), "{listing}");
}

#[test]
fn versions_scopes_and_name_conflicts() {
    let s = ApiServer::start();
    let crd = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: backups.crunchydata.com
spec:
  group: crunchydata.com
  scope: Cluster
  names: {plural: backups, kind: Backup, shortNames: [bk]}
  versions:
  - name: v1beta1
    served: true
    storage: false
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"#;
    s.ok(&["apply", "-f", &s.file("backups.yaml", crd)]);
    let v1beta1 = "apiVersion: crunchydata.com/v1beta1\nkind: Backup\nmetadata:\n  name: nightly\nspec:\n  at: \"01:00\"\n";
    s.ok(&["apply", "-f", &s.file("nightly.yaml", v1beta1)]);
    // Stored once, read through either served version; v1 is preferred.
    let got = json(&s, &["get", "backups.v1.crunchydata.com", "nightly"]);
    assert_eq!(got["apiVersion"], "crunchydata.com/v1");
    assert!(
        got["metadata"].get("namespace").is_none(),
        "cluster-scoped: {got}"
    );
    let got = json(&s, &["get", "backups.v1beta1.crunchydata.com", "nightly"]);
    assert_eq!(got["apiVersion"], "crunchydata.com/v1beta1");
    assert_eq!(got["spec"]["at"], "01:00");
    let group = raw(&s, "/apis/crunchydata.com");
    assert_eq!(group["preferredVersion"]["version"], "v1", "{group}");
    let r = rows(&s.ok(&["get", "bk"]));
    assert_eq!(r[0], vec!["NAME", "AGE"]);
    assert_eq!(r[1][0], "nightly");

    // A second CRD of the group asking for a name already taken.
    let clash = crd
        .replace("backups.crunchydata.com", "snapshots.crunchydata.com")
        .replace(
            "plural: backups, kind: Backup",
            "plural: snapshots, kind: Snapshot",
        );
    s.ok(&["apply", "-f", &s.file("snapshots.yaml", &clash)]);
    let c = json(&s, &["get", "crd", "snapshots.crunchydata.com"]);
    let accepted = condition(&c, "NamesAccepted");
    assert_eq!(accepted["status"], "False", "{c}");
    assert_eq!(accepted["reason"], "ShortNamesConflict");
    assert_eq!(accepted["message"], r#""bk" is already in use"#);
    assert_eq!(condition(&c, "Established")["status"], "False");
    s.fails(&["get", "snapshots"]);

    // A CRD with two storage versions is refused.
    let two = crd
        .replace("backups.crunchydata.com", "dumps.crunchydata.com")
        .replace(
            "plural: backups, kind: Backup, shortNames: [bk]",
            "plural: dumps, kind: Dump",
        )
        .replace("storage: false", "storage: true");
    let err = s.fails(&["apply", "-f", &s.file("dumps.yaml", &two)]);
    assert!(
        err.contains(r#"The CustomResourceDefinition "dumps.crunchydata.com" is invalid: spec.versions: Invalid value: "#)
            && err.contains("must have exactly one version marked as storage version"),
        "{err}"
    );
}

#[test]
fn custom_resources_are_watched_and_survive_a_restart() {
    let mut s = ApiServer::start();
    s.ok(&["apply", "-f", &s.file("crd.yaml", CRD)]);
    s.ok(&[
        "apply",
        "--validate=false",
        "-f",
        &s.file("hippo.yaml", HIPPO),
    ]);
    let (code, body) = s.curl(&[&format!(
        "{}/apis/crunchydata.com/v1/namespaces/default/pgclusters?watch=true&timeoutSeconds=1",
        s.url()
    )]);
    assert_eq!(code, 200);
    let first: Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "ADDED");
    assert_eq!(first["object"]["metadata"]["name"], "hippo");

    s.restart();
    let obj = json(&s, &["get", "pgc", "hippo"]);
    assert_eq!(obj["spec"]["version"], "16");
}
