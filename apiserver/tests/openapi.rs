//! What clients discover: the OpenAPI documents (through `kubectl explain`
//! and kubectl's validation), discovery as kube-apiserver writes it, and
//! gzip of large responses.

mod common;

use common::ApiServer;

#[test]
fn kubectl_explain_prints_the_schemas_of_served_kinds() {
    let s = ApiServer::start();
    let pods = s.ok(&["explain", "pods"]);
    assert!(pods.contains("KIND:       Pod"), "{pods}");
    assert!(pods.contains("VERSION:    v1"), "{pods}");
    assert!(
        pods.contains("Pod is a collection of containers that can run on a host."),
        "{pods}"
    );
    assert!(pods.contains("spec\t<PodSpec>"), "{pods}");
    assert!(pods.contains("status\t<PodStatus>"), "{pods}");

    let containers = s.ok(&["explain", "pod.spec.containers"]);
    assert!(
        containers.contains("FIELD: containers <[]Container>"),
        "{containers}"
    );
    assert!(
        containers.contains("name\t<string> -required-"),
        "{containers}"
    );
    assert!(containers.contains("image\t<string>"), "{containers}");

    let spec = s.ok(&["explain", "deployment.spec", "--recursive"]);
    assert!(spec.contains("GROUP:      apps"), "{spec}");
    assert!(
        spec.contains("selector\t<LabelSelector> -required-"),
        "{spec}"
    );
    assert!(
        spec.contains("template\t<PodTemplateSpec> -required-"),
        "{spec}"
    );
    // --recursive descends into the pod template's containers.
    assert!(spec.contains("imagePullPolicy\t<string>"), "{spec}");
}

#[test]
fn kubectl_validation_refuses_unknown_fields_and_kinds_as_upstream() {
    let s = ApiServer::start();
    let unknown_field = "apiVersion: v1
kind: Pod
metadata:
  name: typo
spec:
  containers:
  - name: c
    image: busybox
    imagePullPolicyy: Always
";
    let out = s.kubectl_stdin(&["create", "--validate=strict", "-f", "-"], unknown_field);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            r#"strict decoding error: unknown field "spec.containers[0].imagePullPolicyy""#
        ),
        "{err}"
    );

    let unknown_kind = "apiVersion: v1
kind: Bogus
metadata:
  name: x
";
    let out = s.kubectl_stdin(&["create", "-f", "-"], unknown_kind);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"no matches for kind "Bogus" in version "v1""#),
        "{err}"
    );
    assert!(!err.contains("failed to download openapi"), "{err}");
}

#[test]
fn openapi_documents_are_cached_by_hash_and_etag() {
    let s = ApiServer::start();
    let (code, root) = s.curl(&[&format!("{}/openapi/v3", s.url())]);
    assert_eq!(code, 200);
    let root: serde_json::Value = serde_json::from_str(&root).unwrap();
    let url = root["paths"]["api/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_owned();
    let hash = url.split("hash=").nth(1).unwrap().to_owned();

    let (code, headers) = s.curl(&["-D", "-", "-o", "/dev/null", &format!("{}{url}", s.url())]);
    assert_eq!(code, 200);
    let headers = headers.to_lowercase();
    assert!(
        headers.contains(&format!("etag: \"{}\"", hash.to_lowercase())),
        "{headers}"
    );
    assert!(
        headers.contains("cache-control: public, immutable"),
        "{headers}"
    );

    let (code, _) = s.curl(&[
        "-H",
        &format!("If-None-Match: \"{hash}\""),
        &format!("{}{url}", s.url()),
    ]);
    assert_eq!(code, 304);

    let (code, headers) = s.curl(&[
        "-D",
        "-",
        "-o",
        "/dev/null",
        &format!("{}/openapi/v3/api/v1?hash=0123", s.url()),
    ]);
    assert_eq!(code, 301);
    assert!(
        headers.contains(&format!("/openapi/v3/api/v1?hash={hash}")),
        "{headers}"
    );

    let (code, v2) = s.curl(&[&format!("{}/openapi/v2", s.url())]);
    assert_eq!(code, 200);
    assert!(v2.contains("Watch for changes to the described resources"));
    assert!(v2.contains("\"io.k8s.api.core.v1.Pod\""));
}

#[test]
fn large_responses_are_gzipped_when_asked_and_watches_still_stream() {
    let s = ApiServer::start();
    let url = format!("{}/openapi/v3/api/v1", s.url());
    let (code, headers) = s.curl(&[
        "-H",
        "Accept-Encoding: gzip",
        "-D",
        "-",
        "-o",
        "/dev/null",
        &url,
    ]);
    assert_eq!(code, 200);
    let headers = headers.to_lowercase();
    assert!(headers.contains("content-encoding: gzip"), "{headers}");
    assert!(headers.contains("vary: accept-encoding"), "{headers}");
    // curl --compressed decodes it back to the document.
    let (_, body) = s.curl(&["--compressed", &url]);
    assert!(body.contains("io.k8s.api.core.v1.Pod"));

    // Small responses stay plain, as kube-apiserver leaves them.
    let (_, headers) = s.curl(&[
        "-H",
        "Accept-Encoding: gzip",
        "-D",
        "-",
        "-o",
        "/dev/null",
        &format!("{}/api/v1/namespaces", s.url()),
    ]);
    assert!(
        !headers.to_lowercase().contains("content-encoding"),
        "{headers}"
    );

    // A watch asked for with gzip still delivers each event as it happens.
    s.ok(&["create", "configmap", "first"]);
    let (code, events) = s.curl(&[
        "--compressed",
        "--max-time",
        "3",
        &format!(
            "{}/api/v1/namespaces/default/configmaps?watch=true",
            s.url()
        ),
    ]);
    // curl ends the open stream at --max-time (28) after what arrived.
    assert_eq!(code, 200, "{events}");
    assert!(events.contains("\"ADDED\""), "{events}");
    assert!(events.contains("\"first\""), "{events}");
}

#[test]
fn discovery_is_written_as_kube_apiserver_writes_it() {
    let s = ApiServer::start();
    let v1 = s.ok(&["get", "--raw", "/api/v1"]);
    assert!(
        v1.starts_with(
            r#"{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"v1","resources":["#
        ),
        "{v1}"
    );
    assert!(
        v1.contains(r#"{"name":"configmaps","singularName":"configmap","namespaced":true,"kind":"ConfigMap","verbs":["create","delete","deletecollection","get","list","patch","update","watch"],"shortNames":["cm"],"storageVersionHash":"qFsyl6wFWjQ="}"#),
        "{v1}"
    );
    assert!(
        v1.contains(r#""name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","verbs":["create","delete","deletecollection","get","list","patch","update","watch"],"shortNames":["po"],"categories":["all"],"storageVersionHash":"xPOwRZ+Yhw8="}"#),
        "{v1}"
    );

    // `all` reaches every kind in the category.
    s.ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    s.ok(&["create", "deployment", "web", "--image=busybox"]);
    let all = s.ok(&["get", "all"]);
    assert!(all.contains("service/web"), "{all}");
    assert!(all.contains("deployment.apps/web"), "{all}");

    let (code, body) = s.curl(&[&format!("{}/api/v1/namespaces/nope", s.url())]);
    assert_eq!(code, 404);
    assert!(
        body.starts_with(r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"namespaces \"nope\" not found","reason":"NotFound","details":{"name":"nope","kind":"namespaces"},"code":404}"#),
        "{body}"
    );
}
