//! Requests too big to work on are refused the way kube-apiserver refuses
//! them: a body over 3 MiB gets 413 `RequestEntityTooLarge` with
//! "Request entity too large: limit is 3145728", before it is decoded.

mod common;

use common::ApiServer;

/// A ConfigMap manifest of about `bytes` bytes.
fn config_map(name: &str, bytes: usize) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  big: {}\n",
        "x".repeat(bytes)
    )
}

#[test]
fn bodies_over_kube_apiservers_limit_are_refused_with_its_status() {
    let s = ApiServer::start();
    let big = s.file("big.yaml", &config_map("big", 4 * 1024 * 1024));
    let err = s.fails(&["create", "-f", &big]);
    assert!(
        err.contains("Request entity too large: limit is 3145728"),
        "{err}"
    );

    // The Status, as a client library reads it.
    let body = s.file(
        "big.json",
        &serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "big"},
            "data": {"big": "x".repeat(3 * 1024 * 1024)},
        })
        .to_string(),
    );
    let url = format!("{}/api/v1/namespaces/default/configmaps", s.url());
    // With a Content-Length (refused before reading) and chunked (refused
    // once the limit is reached). HTTP/1.1: curl reports an HTTP/2 stream
    // the server ends before reading its body as a framing error.
    for framing in ["Expect: 100-continue", "Transfer-Encoding: chunked"] {
        let (code, text) = s.curl(&[
            "--http1.1",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-H",
            framing,
            "--data-binary",
            &format!("@{body}"),
            &url,
        ]);
        assert_eq!(code, 413, "{framing}: {text:?}");
        let status: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "RequestEntityTooLarge");
        assert_eq!(status["code"], 413);
        assert_eq!(
            status["message"],
            "Request entity too large: limit is 3145728"
        );
    }
    assert!(
        s.fails(&["get", "configmap", "big"]).contains("NotFound"),
        "nothing was stored"
    );

    // Under the limit (larger than axum's default of 2 MB) the body is read
    // and judged on its content.
    let body = s.file(
        "under.json",
        &serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "under"},
            "data": {"big": "x".repeat(2 * 1024 * 1024 + 512 * 1024)},
        })
        .to_string(),
    );
    let (code, text) = s.curl(&[
        "--http1.1",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{body}"),
        &url,
    ]);
    assert_ne!(code, 413, "{text}");
}
