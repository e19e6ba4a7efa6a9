//! Watch over the wire: resuming from a resourceVersion replays what came
//! after it; one older than the change log keeps is answered with an
//! ERROR event carrying a 410 `Expired` Status, as kube-apiserver does.
//! On etcd the window is etcd's own history, which the apiserver compacts
//! every `--etcd-compaction-interval`.

mod common;

use common::ApiServer;

fn rv_of(s: &ApiServer, cm: &str) -> u64 {
    s.ok(&[
        "get",
        "cm",
        cm,
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ])
    .parse()
    .unwrap()
}

#[test]
fn watch_resumes_from_a_resource_version_and_expires_old_ones() {
    // Embedded: a log of 5 changes. etcd: compaction every 3 s, each round
    // up to the revision of the round before (so after ~6 s `first` is gone).
    let s = if common::on_etcd() {
        ApiServer::start_with(&["--etcd-compaction-interval", "3s"])
    } else {
        ApiServer::start_with(&["--change-log-window", "5"])
    };
    s.ok(&["create", "configmap", "first"]);
    let first = rv_of(&s, "first");
    for i in 0..8 {
        s.ok(&["create", "configmap", &format!("cm-{i}")]);
    }
    let before_last_two = rv_of(&s, "cm-5");

    let url = |rv: u64| {
        format!(
            "{}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=1",
            s.url()
        )
    };
    let (code, body) = s.curl(&[&url(before_last_two)]);
    assert_eq!(code, 200);
    let events: Vec<serde_json::Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["object"]["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(names, [("ADDED", "cm-6"), ("ADDED", "cm-7")]);

    if common::on_etcd() {
        std::thread::sleep(std::time::Duration::from_secs(7));
    }
    let (code, body) = s.curl(&[&url(first)]);
    assert_eq!(code, 200);
    let event: serde_json::Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Expired");
    assert!(
        event["object"]["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("too old resource version: {first}"))
    );
}

/// A watch of a quiet kind gets bookmarks at the store's progress, not at
/// the revision it started from, so it can resume after the change log has
/// moved past its start (kube-rs watchers resume from their last bookmark).
#[test]
fn bookmarks_of_a_quiet_watch_follow_the_store() {
    if common::on_etcd() {
        // etcd's watch reports no progress for other prefixes.
        return;
    }
    let s = ApiServer::start_with(&["--change-log-window", "5"]);
    s.ok(&["create", "configmap", "start"]);
    let start = rv_of(&s, "start");
    let url = |rv: u64, timeout: u32| {
        format!(
            "{}/api/v1/namespaces/default/secrets?watch=true&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds={timeout}",
            s.url()
        )
    };
    let (last, (code, body)) = std::thread::scope(|scope| {
        let watch = scope.spawn(|| s.curl(&[&url(start, 12)]));
        std::thread::sleep(std::time::Duration::from_secs(1));
        for i in 0..8 {
            s.ok(&["create", "configmap", &format!("busy-{i}")]);
        }
        (rv_of(&s, "busy-7"), watch.join().unwrap())
    });
    assert_eq!(code, 200);
    let bookmarks: Vec<u64> = body
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["type"] == "BOOKMARK")
        .map(|e| {
            e["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(bookmarks.len(), 1, "{body}");
    // At least as far as the last configmap (the controllers write too).
    assert!(bookmarks[0] >= last, "{last}: {body}");

    // Resuming from the bookmark works; from the start, the log is gone.
    let (code, body) = s.curl(&[&url(bookmarks[0], 1)]);
    assert_eq!(code, 200);
    assert!(!body.contains("\"ERROR\""), "{body}");
    let (_, body) = s.curl(&[&url(start, 1)]);
    assert!(body.contains("too old resource version"), "{body}");
}

#[test]
fn metadata_only_requests_get_partial_object_metadata() {
    let s = ApiServer::start_with(&[]);
    s.ok(&[
        "create",
        "configmap",
        "meta",
        "--from-literal=k=secret-value",
    ]);
    s.ok(&["label", "configmap", "meta", "tier=web"]);
    let rv = rv_of(&s, "meta");
    let accept = "Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
    let base = format!("{}/api/v1/namespaces/default/configmaps", s.url());

    let (code, body) = s.curl(&["-H", accept, &format!("{base}/meta")]);
    assert_eq!(code, 200, "{body}");
    let one: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(one["kind"], "PartialObjectMetadata");
    assert_eq!(one["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(one["metadata"]["labels"]["tier"], "web");
    assert_eq!(one["metadata"]["resourceVersion"], rv.to_string());
    assert!(!body.contains("secret-value"), "{body}");

    let list_accept = "Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
    let (code, body) = s.curl(&["-H", list_accept, &base]);
    assert_eq!(code, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["metadata"]["name"] == "meta" && i["kind"] == "PartialObjectMetadata")
    );
    assert!(!body.contains("secret-value"), "{body}");

    // A watch sends each change's metadata: the same as a get would.
    let url = format!(
        "{base}?watch=true&resourceVersion={}&timeoutSeconds=2",
        rv - 1
    );
    let (watch, ()) = std::thread::scope(|scope| {
        let watch = scope.spawn(|| s.curl(&["-H", accept, &url]));
        std::thread::sleep(std::time::Duration::from_millis(500));
        s.ok(&["annotate", "configmap", "meta", "seen=yes"]);
        (watch.join().unwrap(), ())
    });
    let (code, body) = watch;
    assert_eq!(code, 200, "{body}");
    let events: Vec<serde_json::Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{body}");
    assert_eq!(
        events[0]["object"]["metadata"]["resourceVersion"],
        rv.to_string()
    );
    assert_eq!(events[1]["type"], "MODIFIED");
    assert_eq!(events[1]["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(
        events[1]["object"]["metadata"]["annotations"]["seen"],
        "yes"
    );
    assert!(!body.contains("secret-value"), "{body}");
}
