//! The static pod source (kubelet's `pkg/kubelet/config/file.go` and
//! `file_linux.go`): every regular, non-hidden file of a directory is one pod
//! manifest. The whole directory is re-read as a snapshot on inotify events
//! (debounced) and on a resync period, and a snapshot is sent only when it
//! differs from the last one sent.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::manifest::{
    CONFIG_SEEN_ANNOTATION, FieldError, MAX_MANIFEST_BYTES, ManifestError, load_static_pod,
};
use super::{SOURCE_FILE, SourceUpdate};

/// kubelet's `--file-check-frequency` default.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(20);

/// How long after the first inotify event the directory is re-read, so that
/// an editor's write-then-rename, or `cp` of several files, is one update.
const DEBOUNCE: Duration = Duration::from_millis(2);

/// Static pods from `dir` (or from `dir` itself when it is a single file, as
/// kubelet's `--pod-manifest-path` allows).
#[derive(Debug, Clone)]
pub struct FileSource {
    pub dir: PathBuf,
    /// Suffix of every pod name, and the pods' `spec.nodeName`.
    pub node_name: String,
    /// Re-read period besides inotify; zero disables periodic re-reads.
    pub resync: Duration,
}

impl FileSource {
    pub fn new(dir: impl Into<PathBuf>, node_name: impl Into<String>) -> Self {
        Self {
            dir: dir.into(),
            node_name: node_name.into(),
            resync: DEFAULT_RESYNC,
        }
    }

    /// Send the first snapshot at once, then one per change, until `tx` is
    /// closed. Never fails: a missing directory is an empty snapshot and is
    /// watched for (its parent through inotify, else on every resync); if
    /// inotify is unavailable, resync alone keeps the pods current.
    pub async fn run(self, tx: mpsc::Sender<SourceUpdate>) {
        let mut watcher = match Watcher::new() {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "inotify unavailable; static pods are re-read every {:?} only", self.resync);
                None
            }
        };
        if let Some(w) = watcher.as_mut() {
            w.ensure_watches(&self.dir);
        }
        let mut resync = (!self.resync.is_zero()).then(|| {
            let mut i = tokio::time::interval_at(Instant::now() + self.resync, self.resync);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });

        let mut state = SnapshotState::default();
        if !self.scan(&mut state, &tx, true).await {
            return;
        }
        let mut pending: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                events = next_events(&mut watcher) => {
                    match events {
                        Ok(events) => {
                            let w = watcher.as_mut().expect("events come from a watcher");
                            if w.handle(&self.dir, &events) && pending.is_none() {
                                pending = Some(Instant::now() + DEBOUNCE);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "reading inotify events failed; falling back to resync");
                            watcher = None;
                        }
                    }
                }
                _ = sleep_until(pending), if pending.is_some() => {
                    pending = None;
                    if !self.scan(&mut state, &tx, false).await {
                        return;
                    }
                }
                _ = tick(&mut resync) => {
                    if let Some(w) = watcher.as_mut() {
                        w.ensure_watches(&self.dir);
                    }
                    if !self.scan(&mut state, &tx, false).await {
                        return;
                    }
                }
            }
        }
    }

    /// Re-read and send if changed (or `force`). False once nobody listens.
    async fn scan(
        &self,
        state: &mut SnapshotState,
        tx: &mpsc::Sender<SourceUpdate>,
        force: bool,
    ) -> bool {
        let (dir, node) = (self.dir.clone(), self.node_name.clone());
        let read = tokio::task::spawn_blocking(move || {
            read_manifest_path(&dir, &node, jiff::Timestamp::now())
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
        let mut update = match read {
            Ok(update) => {
                if state.missing {
                    tracing::info!(path = %self.dir.display(), "static pod path is readable again");
                    state.missing = false;
                }
                update
            }
            // kubelet: a missing path is an empty set, so its pods stop.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !state.missing {
                    tracing::warn!(path = %self.dir.display(), "static pod path does not exist; watching for it");
                    state.missing = true;
                }
                SourceUpdate {
                    source: SOURCE_FILE,
                    pods: Vec::new(),
                    errors: Vec::new(),
                }
            }
            // Anything else (permissions, I/O): keep the pods we have.
            Err(e) => {
                tracing::warn!(path = %self.dir.display(), error = %e, "cannot read static pod path; keeping the last snapshot");
                return true;
            }
        };
        state.keep_first_seen(&mut update.pods);
        let fingerprint = Fingerprint::of(&update);
        if !force && state.last.as_ref() == Some(&fingerprint) {
            return true;
        }
        for e in &update.errors {
            if !state.last.as_ref().is_some_and(|l| l.errors.contains(e)) {
                tracing::warn!("static pod manifest rejected: {e}");
            }
        }
        state.last = Some(fingerprint);
        tx.send(update).await.is_ok()
    }
}

#[derive(Default)]
struct SnapshotState {
    last: Option<Fingerprint>,
    /// uid → `kubernetes.io/config.seen` of pods in the last snapshot: a pod
    /// is seen once, not on every re-read.
    first_seen: HashMap<String, String>,
    missing: bool,
}

impl SnapshotState {
    fn keep_first_seen(&mut self, pods: &mut [Arc<Pod>]) {
        let mut seen = HashMap::with_capacity(pods.len());
        for pod in pods {
            // Each manifest read made a pod of its own: no copy is shared yet.
            let pod = Arc::make_mut(pod);
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let annotations = pod
                .metadata
                .annotations
                .get_or_insert_with(Default::default);
            if let Some(first) = self.first_seen.get(&uid) {
                annotations.insert(CONFIG_SEEN_ANNOTATION.into(), first.clone());
            }
            seen.insert(
                uid,
                annotations
                    .get(CONFIG_SEEN_ANNOTATION)
                    .cloned()
                    .unwrap_or_default(),
            );
        }
        self.first_seen = seen;
    }
}

/// What makes two snapshots different: the pods' UIDs (a UID changes with
/// the content) and the errors.
#[derive(PartialEq)]
struct Fingerprint {
    uids: Vec<String>,
    errors: Vec<ManifestError>,
}

impl Fingerprint {
    fn of(update: &SourceUpdate) -> Self {
        Self {
            uids: update
                .pods
                .iter()
                .map(|p| p.metadata.uid.clone().unwrap_or_default())
                .collect(),
            errors: update.errors.clone(),
        }
    }
}

/// One synchronous read of the static pod path: a directory of manifests or
/// a single manifest file. `Err` only when `path` itself cannot be read;
/// problems with single files end up in `errors`.
pub fn read_manifest_path(
    path: &Path,
    node_name: &str,
    seen: jiff::Timestamp,
) -> io::Result<SourceUpdate> {
    let mut files = Vec::new();
    if std::fs::metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            if is_hidden(&entry.file_name()) {
                continue;
            }
            let file = entry.path();
            // Follows symlinks, like kubelet's os.Stat.
            match std::fs::metadata(&file) {
                Ok(m) if m.is_file() => files.push(file),
                Ok(m) if m.is_dir() => {
                    tracing::debug!(path = %file.display(), "not recursing into a directory of the static pod path")
                }
                Ok(_) => {
                    tracing::debug!(path = %file.display(), "skipping a static pod path entry that is not a regular file")
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {} // removed since read_dir
                Err(e) => tracing::debug!(path = %file.display(), error = %e, "cannot stat"),
            }
        }
        files.sort();
    } else {
        files.push(path.to_owned());
    }

    let mut update = SourceUpdate {
        source: SOURCE_FILE,
        pods: Vec::new(),
        errors: Vec::new(),
    };
    // Full name → file that defined it: two files may not define one pod.
    let mut defined_by: HashMap<(String, String), PathBuf> = HashMap::new();
    for file in files {
        let content = match read_limited(&file, MAX_MANIFEST_BYTES) {
            Ok(Ok(c)) => c,
            Ok(Err(size)) => {
                update.errors.push(ManifestError::TooLarge {
                    file,
                    size,
                    limit: MAX_MANIFEST_BYTES,
                });
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                update.errors.push(ManifestError::Read {
                    file,
                    message: e.to_string(),
                });
                continue;
            }
        };
        match load_static_pod(&file, &content, node_name, seen) {
            Ok(pod) => {
                let key = (
                    pod.metadata.namespace.clone().unwrap_or_default(),
                    pod.metadata.name.clone().unwrap_or_default(),
                );
                if let Some(first) = defined_by.get(&key) {
                    let detail = format!(
                        "pod {}/{} is already defined in {}",
                        key.0,
                        key.1,
                        first.display()
                    );
                    let errors = vec![FieldError::invalid("metadata.name", &key.1, detail)];
                    update.errors.push(ManifestError::Invalid { file, errors });
                } else {
                    defined_by.insert(key, file);
                    update.pods.push(Arc::new(pod));
                }
            }
            Err(e) => update.errors.push(e),
        }
    }
    Ok(update)
}

/// The file's content, or `Err(size)` when it is over `limit` bytes (never
/// more than `limit + 1` bytes are read, even from a file that grows).
fn read_limited(file: &Path, limit: u64) -> io::Result<Result<Vec<u8>, u64>> {
    use std::io::Read;
    let f = std::fs::File::open(file)?;
    let size = f.metadata()?.len();
    if size > limit {
        return Ok(Err(size));
    }
    let mut content = Vec::with_capacity(size as usize);
    f.take(limit + 1).read_to_end(&mut content)?;
    if content.len() as u64 > limit {
        return Ok(Err(content.len() as u64));
    }
    Ok(Ok(content))
}

/// kubelet ignores dot files: editors' swap files, `..data` of projected
/// volumes, half-written temporaries.
fn is_hidden(name: &OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn next_events(watcher: &mut Option<Watcher>) -> io::Result<Vec<InotifyEvent>> {
    match watcher {
        Some(w) => w.read().await,
        None => std::future::pending().await,
    }
}

/// nix's `Inotify` is `AsFd`; tokio's `AsyncFd` wants `AsRawFd`.
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Watches the static pod directory; while the directory is missing (or the
/// path is a single file), watches its parent for that one name instead.
struct Watcher {
    fd: AsyncFd<InotifyFd>,
    dir: Option<WatchDescriptor>,
    parent: Option<WatchDescriptor>,
}

const DIR_EVENTS: AddWatchFlags = AddWatchFlags::IN_CREATE
    .union(AddWatchFlags::IN_CLOSE_WRITE)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_ATTRIB)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF)
    .union(AddWatchFlags::IN_ONLYDIR);

impl Watcher {
    fn new() -> io::Result<Self> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        // SAFETY: the fd is owned by the `Inotify` inside the `AsyncFd`, so it
        // stays open and the same for the `AsyncFd`'s whole life.
        let fd = unsafe {
            AsyncFd::register_with_interest(InotifyFd(inotify), tokio::io::Interest::READABLE)?
        };
        Ok(Self {
            fd,
            dir: None,
            parent: None,
        })
    }

    fn inotify(&self) -> &Inotify {
        &self.fd.get_ref().0
    }

    async fn read(&self) -> io::Result<Vec<InotifyEvent>> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| fd.get_ref().0.read_events().map_err(io::Error::from)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Watch `path` if it is a directory, else its parent.
    fn ensure_watches(&mut self, path: &Path) {
        if self.dir.is_none()
            // A created file is read once it is closed (IN_CLOSE_WRITE) or
            // renamed in (IN_MOVED_TO), never half-written at IN_CREATE.
            && let Ok(wd) = self
                .inotify()
                .add_watch(path, DIR_EVENTS.difference(AddWatchFlags::IN_CREATE))
        {
            self.dir = Some(wd);
        }
        if self.dir.is_some() {
            if let Some(wd) = self.parent.take() {
                let _ = self.inotify().rm_watch(wd);
            }
        } else if self.parent.is_none() {
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            // Without a parent either, the resync timer retries.
            self.parent = self
                .inotify()
                .add_watch(parent, DIR_EVENTS.difference(AddWatchFlags::IN_ATTRIB))
                .ok();
        }
    }

    /// Update the watches for `events`; true if the path should be re-read.
    fn handle(&mut self, path: &Path, events: &[InotifyEvent]) -> bool {
        let mut rescan = false;
        let mut rewatch = false;
        for ev in events {
            if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                rescan = true;
            } else if Some(ev.wd) == self.dir {
                if ev.mask.intersects(
                    AddWatchFlags::IN_DELETE_SELF
                        | AddWatchFlags::IN_MOVE_SELF
                        | AddWatchFlags::IN_IGNORED,
                ) {
                    // The directory is gone or renamed away: what is at
                    // `path` now (if anything) is another inode.
                    if let Some(wd) = self.dir.take() {
                        let _ = self.inotify().rm_watch(wd);
                    }
                    rewatch = true;
                    rescan = true;
                } else if !ev.name.as_deref().is_some_and(is_hidden) {
                    rescan = true;
                }
            } else if Some(ev.wd) == self.parent {
                if ev.mask.intersects(
                    AddWatchFlags::IN_IGNORED
                        | AddWatchFlags::IN_DELETE_SELF
                        | AddWatchFlags::IN_MOVE_SELF,
                ) {
                    self.parent = None;
                    rewatch = true;
                } else if ev.name.as_deref() == path.file_name() {
                    rewatch = true;
                    rescan = true;
                }
            }
        }
        if rewatch {
            self.ensure_watches(path);
        }
        rescan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: NAME}\nspec:\n  containers: [{name: c, image: busybox}]\n";

    #[test]
    fn reads_a_directory_in_file_name_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.yaml"), POD.replace("NAME", "bee")).unwrap();
        std::fs::write(dir.path().join("a.yaml"), POD.replace("NAME", "ant")).unwrap();
        std::fs::write(dir.path().join(".a.yaml.swp"), "garbage").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(
            dir.path().join("c.yaml"),
            "kind: Deployment\napiVersion: apps/v1\n",
        )
        .unwrap();
        let u = read_manifest_path(dir.path(), "n1", jiff::Timestamp::now()).unwrap();
        let names: Vec<_> = u
            .pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["ant-n1", "bee-n1"]);
        assert_eq!(u.errors.len(), 1);
        assert_eq!(u.errors[0].file(), dir.path().join("c.yaml"));
    }

    #[test]
    fn a_pod_defined_twice_is_an_error_for_the_second_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), POD.replace("NAME", "web")).unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            POD.replace("NAME", "web").replace("busybox", "nginx"),
        )
        .unwrap();
        let u = read_manifest_path(dir.path(), "n1", jiff::Timestamp::now()).unwrap();
        assert_eq!(u.pods.len(), 1);
        let msg = u.errors[0].to_string();
        assert!(msg.ends_with(&format!("b.yaml: metadata.name: Invalid value: \"web-n1\": pod default/web-n1 is already defined in {}", dir.path().join("a.yaml").display())), "{msg}");
    }

    #[test]
    fn a_single_file_path_is_one_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("only.yaml");
        std::fs::write(&file, POD.replace("NAME", "solo")).unwrap();
        let u = read_manifest_path(&file, "n1", jiff::Timestamp::now()).unwrap();
        assert_eq!(u.pods[0].metadata.name.as_deref(), Some("solo-n1"));
        assert_eq!(
            read_manifest_path(&dir.path().join("nope"), "n1", jiff::Timestamp::now())
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn first_seen_survives_rereads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), POD.replace("NAME", "a")).unwrap();
        let mut state = SnapshotState::default();
        let t1: jiff::Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        let t2: jiff::Timestamp = "2024-01-01T00:00:20Z".parse().unwrap();
        let mut first = read_manifest_path(dir.path(), "n", t1).unwrap();
        state.keep_first_seen(&mut first.pods);
        let mut second = read_manifest_path(dir.path(), "n", t2).unwrap();
        state.keep_first_seen(&mut second.pods);
        assert_eq!(
            second.pods[0].metadata.annotations.as_ref().unwrap()[CONFIG_SEEN_ANNOTATION],
            "2024-01-01T00:00:00.000000000Z"
        );
    }

    #[test]
    fn manifests_over_the_limit_are_refused_without_being_read() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.yaml");
        // Sparse: its size is what counts, and it is never read.
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(30 * 1024 * 1024).unwrap();
        std::fs::write(dir.path().join("ok.yaml"), POD.replace("NAME", "ok")).unwrap();
        let update = read_manifest_path(dir.path(), "node1", jiff::Timestamp::now()).unwrap();
        assert_eq!(update.pods.len(), 1, "the other manifest still runs");
        assert_eq!(
            update
                .errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>(),
            vec![format!(
                "{}: the manifest is 31457280 bytes, over the limit of 3145728 bytes",
                big.display()
            )]
        );
        assert_eq!(
            read_limited(&big, 10).unwrap(),
            Err(31457280),
            "refused by its size"
        );
        std::fs::write(&big, b"12345").unwrap();
        assert_eq!(read_limited(&big, 5).unwrap(), Ok(b"12345".to_vec()));
        assert_eq!(read_limited(&big, 4).unwrap(), Err(5));
    }
}
