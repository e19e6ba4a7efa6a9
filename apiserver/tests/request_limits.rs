//! What travels over HTTP, handled as kube-apiserver handles it: a body
//! over 3 MiB gets 413 `RequestEntityTooLarge` with "Request entity too
//! large: limit is 3145728" before it is decoded; a deeply nested one is
//! refused quickly with a 400 Status, without holding up other requests.

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

/// 200 KB of `[` in JSON and in YAML: what took the old decoder seconds.
fn nested_bodies(s: &ApiServer) -> [(&'static str, String); 2] {
    let depth = 100_000;
    let (open, close) = ("[".repeat(depth), "]".repeat(depth));
    [
        (
            "application/json",
            s.file(
                "nested.json",
                &format!(
                    r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"nested"}},"data":{{"a":{open}{close}}}}}"#
                ),
            ),
        ),
        (
            "application/yaml",
            s.file(
                "nested.yaml",
                &format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: nested\ndata:\n  a: {open}{close}\n"
                ),
            ),
        ),
    ]
}

#[test]
fn deeply_nested_bodies_are_refused_with_a_status() {
    let s = ApiServer::start();
    let url = format!("{}/api/v1/namespaces/default/configmaps", s.url());
    for (ct, file) in nested_bodies(&s) {
        let (code, text) = s.curl(&[
            "-X",
            "POST",
            "-H",
            &format!("Content-Type: {ct}"),
            "--data-binary",
            &format!("@{file}"),
            &url,
        ]);
        assert_eq!(code, 400, "{ct}: {text}");
        let status: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(status["kind"], "Status", "{ct}: {text}");
        assert_eq!(status["reason"], "BadRequest", "{ct}: {text}");
        let message = status["message"].as_str().unwrap();
        // serde_json's words, or for YAML the parser's or the budget's.
        assert!(
            message.contains("recursion limit exceeded") || message.contains("exceeded max depth"),
            "{ct}: {message}"
        );
    }
    assert!(
        s.fails(&["get", "configmap", "nested"])
            .contains("NotFound")
    );
}

/// While four clients keep sending hostile bodies, GETs are answered: each
/// one finishes while the hostile bodies sent alongside are still being
/// refused (every client has more refusals after the last GET than
/// before it).
#[test]
fn a_get_is_answered_while_hostile_bodies_keep_arriving() {
    use std::io::BufRead;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    let s = ApiServer::start();
    s.ok(&["create", "configmap", "plain", "--from-literal=a=b"]);
    let url = format!("{}/api/v1/namespaces/default/configmaps", s.url());
    let (crt, key) = s.client_cert_files();
    let stop = s.dir.path().join("stop");
    let bodies = nested_bodies(&s);
    let mut senders = Vec::new();
    for (ct, file) in bodies.iter().chain(bodies.iter()) {
        // One line per refusal, until the stop file appears.
        let script = format!(
            "while [ ! -e {stop} ]; do curl -sS -o /dev/null -w '%{{http_code}}\\n' --cacert {ca} --cert {crt} --key {key} \
             -X POST -H 'Content-Type: {ct}' --data-binary @{file} {url} || exit 1; done",
            stop = stop.display(),
            ca = s.ca_file(),
        );
        let mut child = std::process::Command::new("sh")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let refused = Arc::new(AtomicUsize::new(0));
        let out = child.stdout.take().unwrap();
        let counter = refused.clone();
        let reader = std::thread::spawn(move || {
            let mut codes = Vec::new();
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                counter.fetch_add(1, Ordering::SeqCst);
                codes.push(line);
            }
            codes
        });
        senders.push((child, refused, reader));
    }
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("every client had a body refused", &|| {
        senders.iter().all(|(_, n, _)| n.load(Ordering::SeqCst) > 0)
    });

    for _ in 0..3 {
        assert_eq!(
            s.ok(&["get", "configmap", "plain", "-o", "name"]).trim(),
            "configmap/plain"
        );
    }
    let after_gets: Vec<usize> = senders
        .iter()
        .map(|(_, n, _)| n.load(Ordering::SeqCst))
        .collect();
    wait_for(
        "hostile bodies are still being refused after the GETs",
        &|| {
            senders
                .iter()
                .zip(&after_gets)
                .all(|((_, n, _), before)| n.load(Ordering::SeqCst) > *before)
        },
    );

    std::fs::write(&stop, "").unwrap();
    for (mut child, _, reader) in senders {
        let _ = child.wait();
        let codes = reader.join().unwrap();
        assert!(codes.iter().all(|c| c == "400"), "{codes:?}");
    }
}

#[test]
fn a_body_that_is_no_object_is_refused_naming_the_kind_expected() {
    let s = ApiServer::start();
    // `kubectl create --raw` sends the file as it is, labelled JSON.
    let pod = s.file(
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: busybox\n",
    );
    let err = s.fails(&["create", "--raw", "/api/v1/namespaces", "-f", &pod]);
    assert!(
        err.contains(
            "the object provided is unrecognized (must be of type Namespace): \
             couldn't get version/kind; json parse error: "
        ),
        "{err}"
    );
    // The start of the body, in hex as it is not JSON.
    assert!(
        err.contains("(61706956657273696f6e3a2076310a6b696e643a20506f640a6d65746164 ...)"),
        "{err}"
    );
}
