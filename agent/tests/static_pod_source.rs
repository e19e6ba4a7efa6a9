//! The static pod source as the agent uses it: a manifest directory in,
//! snapshots out, with inotify picking up changes well before a resync.

use std::path::Path;
use std::time::Duration;

use kubelab_agent::config::{FileSource, ManifestError, SourceUpdate};
use tokio::sync::mpsc;
use tokio::time::timeout;

const NODE: &str = "node01";
/// Long enough that anything arriving within the test came from inotify.
const RESYNC: Duration = Duration::from_secs(60);
const INOTIFY_DEADLINE: Duration = Duration::from_secs(1);

fn pod(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:\n  containers:\n  - name: main\n    image: {image}\n    ports:\n    - containerPort: 8080\n"
    )
}

const BAD_CPU: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: bad}
spec:
  containers:
  - name: app
    image: nginx
    resources:
      limits: {cpu: abc}
";

fn start(dir: &Path) -> mpsc::Receiver<SourceUpdate> {
    let (tx, rx) = mpsc::channel(8);
    let source = FileSource {
        dir: dir.to_owned(),
        node_name: NODE.into(),
        resync: RESYNC,
    };
    tokio::spawn(source.run(tx));
    rx
}

async fn next(rx: &mut mpsc::Receiver<SourceUpdate>) -> SourceUpdate {
    timeout(INOTIFY_DEADLINE, rx.recv())
        .await
        .expect("an update within 1 s")
        .expect("source still running")
}

/// The first update within 1 s that satisfies `pred`.
async fn next_where(
    rx: &mut mpsc::Receiver<SourceUpdate>,
    pred: impl Fn(&SourceUpdate) -> bool,
) -> SourceUpdate {
    timeout(INOTIFY_DEADLINE, async {
        loop {
            let u = rx.recv().await.expect("source still running");
            if pred(&u) {
                return u;
            }
        }
    })
    .await
    .expect("a matching update within 1 s")
}

fn names(u: &SourceUpdate) -> Vec<String> {
    u.pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect()
}

fn uid_of(u: &SourceUpdate, name: &str) -> String {
    u.pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .and_then(|p| p.metadata.uid.clone())
        .unwrap()
}

#[tokio::test]
async fn static_pods_follow_the_manifest_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), pod("web", "nginx:1.25")).unwrap();
    std::fs::write(dir.path().join("db.json"), r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"db"},"spec":{"containers":[{"name":"pg","image":"postgres:16"}]}}"#).unwrap();
    std::fs::write(dir.path().join("bad.yaml"), BAD_CPU).unwrap();
    std::fs::write(dir.path().join(".hidden.yaml"), pod("hidden", "busybox")).unwrap();
    let mut rx = start(dir.path());

    // First snapshot: the good pods, and the bad file as a named error.
    let first = next(&mut rx).await;
    assert_eq!(first.source, "file");
    assert_eq!(names(&first), ["db-node01", "web-node01"]);
    assert_eq!(first.errors.len(), 1);
    assert_eq!(
        first.errors[0].to_string(),
        format!(
            r#"{}: spec.containers[0].resources.limits.cpu: Invalid value: "abc": must be a quantity like 500m or 0.5"#,
            dir.path().join("bad.yaml").display()
        )
    );
    let web = &first.pods[1];
    assert_eq!(web.spec.as_ref().unwrap().node_name.as_deref(), Some(NODE));
    assert_eq!(
        web.metadata.annotations.as_ref().unwrap()["kubernetes.io/config.source"],
        "file"
    );
    let web_uid = uid_of(&first, "web-node01");

    // A new file: written elsewhere and renamed in, like an editor or
    // `kubectl ... > tmp && mv`.
    std::fs::write(dir.path().join(".cache.tmp"), pod("cache", "redis:7")).unwrap();
    std::fs::rename(dir.path().join(".cache.tmp"), dir.path().join("cache.yaml")).unwrap();
    let added = next(&mut rx).await;
    assert_eq!(names(&added), ["cache-node01", "db-node01", "web-node01"]);
    assert_eq!(
        uid_of(&added, "web-node01"),
        web_uid,
        "an untouched file keeps its UID"
    );

    // An edited file is a new pod.
    std::fs::write(dir.path().join("web.yaml"), pod("web", "nginx:1.26")).unwrap();
    let edited = next(&mut rx).await;
    assert_eq!(names(&edited), ["cache-node01", "db-node01", "web-node01"]);
    assert_ne!(uid_of(&edited, "web-node01"), web_uid);

    // Fixing the bad file clears its error; removing a file removes its pod.
    std::fs::write(dir.path().join("bad.yaml"), BAD_CPU.replace("abc", "500m")).unwrap();
    let fixed = next(&mut rx).await;
    assert!(fixed.errors.is_empty(), "{:?}", fixed.errors);
    assert_eq!(
        names(&fixed),
        ["bad-node01", "cache-node01", "db-node01", "web-node01"]
    );
    std::fs::remove_file(dir.path().join("db.json")).unwrap();
    let removed = next(&mut rx).await;
    assert_eq!(
        names(&removed),
        ["bad-node01", "cache-node01", "web-node01"]
    );

    // Hidden files never show, and touching them sends nothing.
    std::fs::write(dir.path().join(".web.yaml.swp"), "not yaml: [").unwrap();
    assert!(
        timeout(Duration::from_millis(400), rx.recv())
            .await
            .is_err(),
        "no update for a hidden file"
    );

    // Breaking a file keeps the other pods flowing.
    std::fs::write(dir.path().join("cache.yaml"), "apiVersion: v1\nkind: Pod\nmetadata: {name: cache}\nspec:\n  containers:\n  - name: main\n").unwrap();
    let broken = next(&mut rx).await;
    assert_eq!(names(&broken), ["bad-node01", "web-node01"]);
    assert!(
        matches!(&broken.errors[..], [ManifestError::Invalid { file, .. }] if file.ends_with("cache.yaml"))
    );
}

#[tokio::test]
async fn a_missing_directory_is_watched_for() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("manifests");
    let mut rx = start(&dir);

    let first = next(&mut rx).await;
    assert!(first.pods.is_empty() && first.errors.is_empty());

    // Created with its file already in it (mv of a prepared directory).
    let staging = parent.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    std::fs::write(staging.join("web.yaml"), pod("web", "nginx")).unwrap();
    std::fs::rename(&staging, &dir).unwrap();
    let appeared = next(&mut rx).await;
    assert_eq!(names(&appeared), ["web-node01"]);

    // Files added after the directory appeared are seen too.
    std::fs::write(dir.join("db.yaml"), pod("db", "postgres")).unwrap();
    assert_eq!(names(&next(&mut rx).await), ["db-node01", "web-node01"]);

    // Removing the directory stops every pod (possibly after a snapshot
    // with only some files gone).
    std::fs::remove_dir_all(&dir).unwrap();
    next_where(&mut rx, |u| u.pods.is_empty()).await;

    // And it can come back (possibly empty for a moment).
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("web.yaml"), pod("web", "nginx")).unwrap();
    let back = next_where(&mut rx, |u| !u.pods.is_empty()).await;
    assert_eq!(names(&back), ["web-node01"]);
}

#[tokio::test]
async fn resync_catches_what_inotify_cannot_see() {
    // The parent is missing too, so nothing can be watched: only resync
    // notices the directory appearing.
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a/b/manifests");
    let (tx, mut rx) = mpsc::channel(8);
    let source = FileSource {
        dir: dir.clone(),
        node_name: NODE.into(),
        resync: Duration::from_millis(300),
    };
    tokio::spawn(source.run(tx));
    assert!(next(&mut rx).await.pods.is_empty());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("web.yaml"), pod("web", "nginx")).unwrap();
    assert_eq!(names(&next(&mut rx).await), ["web-node01"]);
    // Later changes keep arriving.
    std::fs::write(dir.join("db.yaml"), pod("db", "postgres")).unwrap();
    assert_eq!(names(&next(&mut rx).await), ["db-node01", "web-node01"]);
}

#[tokio::test]
async fn the_source_stops_when_nobody_listens() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel(1);
    let source = FileSource {
        dir: dir.path().to_owned(),
        node_name: NODE.into(),
        resync: RESYNC,
    };
    let task = tokio::spawn(source.run(tx));
    drop(rx);
    timeout(Duration::from_secs(1), task)
        .await
        .expect("run returns once the receiver is dropped")
        .unwrap();
}
