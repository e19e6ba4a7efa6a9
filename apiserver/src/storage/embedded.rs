//! The embedded backend: one redb file in the data dir.
//!
//! Three tables, all written in the same transaction so they never disagree:
//! `objects` (key → revision + value), `meta` (the store revision and the
//! compaction point) and `log` (revision → change), the change log a watch
//! replays, trimmed to the last [`LOG_WINDOW`] changes. Every commit is
//! durable (redb's `Durability::Immediate`, an fsync) before any write in it
//! is acknowledged, so an acknowledged write survives `kill -9`.
//!
//! Writes go to one writer thread, which commits them in groups: whatever
//! arrived while the previous commit was being made goes into the next
//! transaction, each write checked against the state the writes before it
//! left, and one fsync makes the whole group durable (group commit, as
//! etcd batches its backend transactions). After the commit the group's
//! changes are published to watchers in revision order, under the lock that
//! also guards the in-memory copy of the log, so a new watcher can't miss
//! one between its replay and its subscription; only then are the writers
//! answered.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use async_trait::async_trait;
use futures::StreamExt;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::{broadcast, oneshot};

use super::{EventType, KeyValue, Page, Result, Storage, StorageError, WatchEvent, WatchStream};

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");

const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

/// How many changes the log keeps for watchers resuming from an old
/// resourceVersion (kube-apiserver's watch cache keeps a similar window).
pub const LOG_WINDOW: u64 = 10_000;

/// Live watchers that fall further behind than this are told to relist.
const BROADCAST_CAPACITY: usize = 8192;

/// The most writes one transaction takes: bounds how long the first of a
/// group waits for the others to be applied.
const MAX_GROUP: usize = 512;

/// Lists of up to this many objects are read on the caller's thread.
const INLINE_LIST_MAX: usize = 32;

pub struct EmbeddedStore {
    inner: Arc<Inner>,
    /// The writer thread's queue and handle; taken on drop to stop it.
    writer: Option<(mpsc::Sender<Write>, std::thread::JoinHandle<()>)>,
}

struct Inner {
    db: Database,
    /// How many changes the log keeps.
    window: u64,
    feed: Mutex<Feed>,
    live: broadcast::Sender<Arc<WatchEvent>>,
}

/// The in-memory copy of the change log.
struct Feed {
    revision: u64,
    /// Changes after this revision are all in `events`.
    compacted: u64,
    events: VecDeque<Arc<WatchEvent>>,
}

/// One write waiting for the writer thread.
struct Write {
    key: String,
    value: Option<Vec<u8>>,
    expect: Expect,
    /// The new revision and the value the key had before.
    done: oneshot::Sender<Result<(u64, Option<Vec<u8>>)>>,
}

/// What a conditional write expects to find at the key.
enum Expect {
    Absent,
    Present(Option<u64>),
}

fn backend<E: std::fmt::Display>(e: E) -> StorageError {
    StorageError::Backend(e.to_string())
}

/// The store's revision as of a read transaction (0 for a new store).
fn committed_revision(txn: &redb::ReadTransaction) -> Result<u64> {
    Ok(txn
        .open_table(META)
        .map_err(backend)?
        .get(META_REVISION)
        .map_err(backend)?
        .map(|v| v.value())
        .unwrap_or(0))
}

impl EmbeddedStore {
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_window(path, LOG_WINDOW)
    }

    /// Like [`Self::open`], keeping the last `window` changes for watchers
    /// (at least one). The trim happens on the next write.
    pub fn open_with_window(path: &Path, window: u64) -> Result<Self> {
        let window = window.max(1);
        let db = Database::create(path)
            .map_err(|e| StorageError::Backend(format!("opening {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(backend)?;
        let feed = {
            let meta = txn.open_table(META).map_err(backend)?;
            txn.open_table(OBJECTS).map_err(backend)?;
            let log = txn.open_table(LOG).map_err(backend)?;
            let revision = meta
                .get(META_REVISION)
                .map_err(backend)?
                .map(|v| v.value())
                .unwrap_or(0);
            let compacted = meta
                .get(META_COMPACTED)
                .map_err(backend)?
                .map(|v| v.value())
                .unwrap_or(0);
            let mut events = VecDeque::new();
            for entry in log.iter().map_err(backend)? {
                let (rev, bytes) = entry.map_err(backend)?;
                events.push_back(Arc::new(decode_event(rev.value(), bytes.value())?));
            }
            Feed {
                revision,
                compacted,
                events,
            }
        };
        txn.commit().map_err(backend)?;
        let (live, _) = broadcast::channel(BROADCAST_CAPACITY);
        let inner = Arc::new(Inner {
            db,
            window,
            feed: Mutex::new(feed),
            live,
        });
        let (tx, rx) = mpsc::channel();
        let writer = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || inner.run_writer(rx))
                .map_err(|e| StorageError::Backend(format!("starting the store writer: {e}")))?
        };
        Ok(Self {
            inner,
            writer: Some((tx, writer)),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(backend)?
    }

    /// Queues one write for the next group commit and waits for its outcome.
    async fn write(
        &self,
        key: &str,
        value: Option<Vec<u8>>,
        expect: Expect,
    ) -> Result<(u64, Option<Vec<u8>>)> {
        let (done, outcome) = oneshot::channel();
        let write = Write {
            key: key.to_owned(),
            value,
            expect,
            done,
        };
        let stopped = || StorageError::Backend("the store is closed".into());
        let (queue, _) = self.writer.as_ref().ok_or_else(stopped)?;
        queue.send(write).map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

impl Drop for EmbeddedStore {
    /// Stops the writer (it finishes the group in hand) so the file is
    /// closed when the store is: it can be opened again at once.
    fn drop(&mut self) {
        if let Some((queue, thread)) = self.writer.take() {
            drop(queue);
            let _ = thread.join();
        }
    }
}

/// The writer thread's own view of the store's position.
struct Position {
    revision: u64,
    compacted: u64,
}

/// One write's effect inside a group, before the commit.
struct Applied {
    event: WatchEvent,
    prev_value: Option<Vec<u8>>,
}

impl Inner {
    /// Every object under `prefix` and the store revision, from one read
    /// transaction; `None` if there are more than `limit`.
    fn read_list(
        &self,
        prefix: &str,
        limit: Option<usize>,
    ) -> Result<Option<(Vec<KeyValue>, u64)>> {
        let txn = self.db.begin_read().map_err(backend)?;
        let revision = committed_revision(&txn)?;
        let objects = txn.open_table(OBJECTS).map_err(backend)?;
        let mut out = Vec::new();
        for entry in objects.range(prefix..).map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            if limit.is_some_and(|l| out.len() == l) {
                return Ok(None);
            }
            let (mod_revision, value) = split_stored(v.value());
            out.push(KeyValue {
                key: key.to_owned(),
                value,
                mod_revision,
            });
        }
        Ok(Some((out, revision)))
    }

    /// The writer thread: takes what has queued up, commits it as one
    /// transaction, publishes, answers; until the store is dropped.
    fn run_writer(&self, queue: mpsc::Receiver<Write>) {
        let mut pos = {
            let feed = self.feed.lock().expect("feed lock");
            Position {
                revision: feed.revision,
                compacted: feed.compacted,
            }
        };
        while let Ok(first) = queue.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(w) => group.push(w),
                    Err(_) => break,
                }
            }
            self.commit_group(&mut pos, group);
        }
    }

    fn commit_group(&self, pos: &mut Position, mut group: Vec<Write>) {
        let mut next = Position {
            revision: pos.revision,
            compacted: pos.compacted,
        };
        let result = self.db.begin_write().map_err(backend).and_then(|txn| {
            let outcomes = self.apply_group(&txn, &mut next, &mut group)?;
            txn.commit().map_err(backend)?;
            Ok(outcomes)
        });
        let outcomes = match result {
            Ok(outcomes) => outcomes,
            Err(e) => {
                // Nothing of the group was stored.
                let msg = e.to_string();
                for w in group {
                    let _ = w.done.send(Err(StorageError::Backend(msg.clone())));
                }
                return;
            }
        };
        *pos = next;
        let mut answers = Vec::with_capacity(group.len());
        {
            let mut feed = self.feed.lock().expect("feed lock");
            for (w, outcome) in group.into_iter().zip(outcomes) {
                let answer = outcome.map(|a| {
                    let revision = a.event.revision;
                    let event = Arc::new(a.event);
                    feed.events.push_back(event.clone());
                    // No receivers is fine: nobody is watching.
                    let _ = self.live.send(event);
                    (revision, a.prev_value)
                });
                answers.push((w.done, answer));
            }
            feed.revision = pos.revision;
            feed.compacted = pos.compacted;
            while feed
                .events
                .front()
                .is_some_and(|e| e.revision <= pos.compacted)
            {
                feed.events.pop_front();
            }
        }
        for (done, answer) in answers {
            let _ = done.send(answer);
        }
    }

    /// Applies each write of a group in order, each checked against the
    /// state the ones before it left. A write whose expectation fails gets
    /// its error and changes nothing; an `Err` from here is the backend's
    /// and fails the whole group.
    fn apply_group(
        &self,
        txn: &WriteTransaction,
        pos: &mut Position,
        group: &mut [Write],
    ) -> Result<Vec<Result<Applied>>> {
        let mut objects = txn.open_table(OBJECTS).map_err(backend)?;
        let mut log = txn.open_table(LOG).map_err(backend)?;
        let mut outcomes = Vec::with_capacity(group.len());
        for w in group {
            let key = w.key.as_str();
            let prev = objects
                .get(key)
                .map_err(backend)?
                .map(|v| split_stored(v.value()));
            let prev_value = match (&w.expect, prev) {
                (Expect::Absent, Some(_)) => {
                    outcomes.push(Err(StorageError::AlreadyExists {
                        key: key.to_owned(),
                    }));
                    continue;
                }
                (Expect::Absent, None) => None,
                (Expect::Present(_), None) => {
                    outcomes.push(Err(StorageError::NotFound {
                        key: key.to_owned(),
                    }));
                    continue;
                }
                (Expect::Present(Some(expected)), Some((actual, _))) if *expected != actual => {
                    outcomes.push(Err(StorageError::Conflict {
                        key: key.to_owned(),
                        expected: *expected,
                        actual,
                    }));
                    continue;
                }
                (Expect::Present(_), Some((_, v))) => Some(v),
            };
            let revision = pos.revision + 1;
            let event = match w.value.take() {
                Some(value) => {
                    objects
                        .insert(key, join_stored(revision, &value).as_slice())
                        .map_err(backend)?;
                    WatchEvent {
                        event_type: EventType::Put,
                        key: key.to_owned(),
                        revision,
                        value,
                        prev_value: prev_value.clone(),
                        rendered: Default::default(),
                    }
                }
                None => {
                    objects.remove(key).map_err(backend)?;
                    WatchEvent {
                        event_type: EventType::Delete,
                        key: key.to_owned(),
                        revision,
                        value: prev_value.clone().unwrap_or_default(),
                        prev_value: prev_value.clone(),
                        rendered: Default::default(),
                    }
                }
            };
            log.insert(revision, encode_event(&event).as_slice())
                .map_err(backend)?;
            pos.revision = revision;
            outcomes.push(Ok(Applied { event, prev_value }));
        }
        while pos.revision.saturating_sub(pos.compacted) > self.window {
            pos.compacted += 1;
            log.remove(pos.compacted).map_err(backend)?;
        }
        let mut meta = txn.open_table(META).map_err(backend)?;
        meta.insert(META_REVISION, pos.revision).map_err(backend)?;
        meta.insert(META_COMPACTED, pos.compacted)
            .map_err(backend)?;
        Ok(outcomes)
    }
}

#[async_trait]
impl Storage for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        // One key is read in place: a read transaction never waits for the
        // writer, and the hop to the blocking pool would cost more than
        // the read (admission reads a few objects on every create).
        let txn = self.inner.db.begin_read().map_err(backend)?;
        let objects = txn.open_table(OBJECTS).map_err(backend)?;
        Ok(objects.get(key).map_err(backend)?.map(|v| {
            let (mod_revision, value) = split_stored(v.value());
            KeyValue {
                key: key.to_owned(),
                value,
                mod_revision,
            }
        }))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, u64)> {
        // Small lists (a namespace's LimitRanges, the PriorityClasses) are
        // read in place like a get; big ones on the blocking pool.
        if let Some(small) = self.inner.read_list(prefix, Some(INLINE_LIST_MAX))? {
            return Ok(small);
        }
        let prefix = prefix.to_owned();
        self.blocking(move |inner| {
            Ok(inner
                .read_list(&prefix, None)?
                .expect("a list without a limit is complete"))
        })
        .await
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Page> {
        let prefix = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        self.blocking(move |inner| {
            let txn = inner.db.begin_read().map_err(backend)?;
            let revision = committed_revision(&txn)?;
            let objects = txn.open_table(OBJECTS).map_err(backend)?;
            let from = start_after.as_deref().unwrap_or(prefix.as_str());
            let mut items = Vec::new();
            let mut remaining = 0;
            for entry in objects.range(from..).map_err(backend)? {
                let (k, v) = entry.map_err(backend)?;
                let key = k.value();
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                if start_after.as_deref() == Some(key) {
                    continue;
                }
                if items.len() == limit {
                    // Only counted: the values of later pages stay unread.
                    remaining += 1;
                    continue;
                }
                let (mod_revision, value) = split_stored(v.value());
                items.push(KeyValue {
                    key: key.to_owned(),
                    value,
                    mod_revision,
                });
            }
            Ok(Page {
                items,
                remaining,
                revision,
            })
        })
        .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<u64> {
        self.write(key, Some(value), Expect::Absent)
            .await
            .map(|(rev, _)| rev)
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_revision: Option<u64>,
    ) -> Result<u64> {
        self.write(key, Some(value), Expect::Present(expected_revision))
            .await
            .map(|(rev, _)| rev)
    }

    async fn delete(&self, key: &str, expected_revision: Option<u64>) -> Result<KeyValue> {
        let (mod_revision, prev) = self
            .write(key, None, Expect::Present(expected_revision))
            .await?;
        Ok(KeyValue {
            key: key.to_owned(),
            value: prev.unwrap_or_default(),
            mod_revision,
        })
    }

    async fn watch(&self, prefix: &str, after: u64) -> Result<WatchStream> {
        self.watch_with_progress(prefix, after, Arc::new(AtomicU64::new(after)))
            .await
    }

    async fn watch_with_progress(
        &self,
        prefix: &str,
        after: u64,
        progress: Arc<AtomicU64>,
    ) -> Result<WatchStream> {
        let (backlog, rx) = {
            let feed = self.inner.feed.lock().map_err(backend)?;
            if after < feed.compacted {
                return Err(StorageError::Compacted {
                    requested: after,
                    oldest: feed.compacted + 1,
                });
            }
            let backlog: Vec<Arc<WatchEvent>> = feed
                .events
                .iter()
                .filter(|e| e.revision > after && e.key.starts_with(prefix))
                .cloned()
                .collect();
            // Subscribing under the lock: no write can land between the
            // replay and the live feed.
            (backlog, self.inner.live.subscribe())
        };
        let prefix = prefix.to_owned();
        let live = futures::stream::unfold(Some(rx), move |rx| {
            let prefix = prefix.clone();
            let progress = progress.clone();
            async move {
                let mut rx = rx?;
                loop {
                    match rx.recv().await {
                        Ok(e) if e.revision > after && e.key.starts_with(&prefix) => {
                            return Some((Ok(e), Some(rx)));
                        }
                        // Passed over, in order: every change of this
                        // prefix up to here has been handed out already.
                        Ok(e) => {
                            progress.fetch_max(e.revision, Ordering::AcqRel);
                            continue;
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            return Some((
                                Err(StorageError::Compacted {
                                    requested: after,
                                    oldest: 0,
                                }),
                                None,
                            ));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        let stream = futures::stream::iter(backlog.into_iter().map(Ok)).chain(live);
        Ok(stream.boxed())
    }

    async fn current_revision(&self) -> Result<u64> {
        Ok(self.inner.feed.lock().map_err(backend)?.revision)
    }
}

fn join_stored(revision: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&revision.to_be_bytes());
    out.extend_from_slice(value);
    out
}

fn split_stored(bytes: &[u8]) -> (u64, Vec<u8>) {
    let (rev, value) = bytes.split_at(8);
    (
        u64::from_be_bytes(rev.try_into().expect("8 bytes")),
        value.to_vec(),
    )
}

fn put_chunk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn take_chunk<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8]> {
    let corrupt = || StorageError::Backend("corrupt change log entry".into());
    if bytes.len() < 4 {
        return Err(corrupt());
    }
    let len = u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    let rest = &bytes[4..];
    if rest.len() < len {
        return Err(corrupt());
    }
    *bytes = &rest[len..];
    Ok(&rest[..len])
}

/// Log entry layout: type byte, key, value, then prev value if present.
fn encode_event(e: &WatchEvent) -> Vec<u8> {
    let mut out = vec![match e.event_type {
        EventType::Put => b'P',
        EventType::Delete => b'D',
    }];
    put_chunk(&mut out, e.key.as_bytes());
    put_chunk(&mut out, &e.value);
    if let Some(prev) = &e.prev_value {
        put_chunk(&mut out, prev);
    }
    out
}

fn decode_event(revision: u64, bytes: &[u8]) -> Result<WatchEvent> {
    let event_type = match bytes.first() {
        Some(b'P') => EventType::Put,
        Some(b'D') => EventType::Delete,
        _ => {
            return Err(StorageError::Backend(format!(
                "corrupt change log entry at revision {revision}"
            )));
        }
    };
    let mut rest = &bytes[1..];
    let key = String::from_utf8(take_chunk(&mut rest)?.to_vec()).map_err(backend)?;
    let value = take_chunk(&mut rest)?.to_vec();
    let prev_value = if rest.is_empty() {
        None
    } else {
        Some(take_chunk(&mut rest)?.to_vec())
    };
    Ok(WatchEvent {
        event_type,
        key,
        revision,
        value,
        prev_value,
        rendered: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The behaviour every backend shares is tested in tests/storage.rs.

    #[tokio::test]
    async fn a_watch_reports_progress_through_other_prefixes_changes() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(&dir.path().join("db.redb")).unwrap();
        let start = s.create("/a/1", b"1".to_vec()).await.unwrap();
        let progress = Arc::new(AtomicU64::new(start));
        let mut feed = s
            .watch_with_progress("/a/", start, progress.clone())
            .await
            .unwrap();
        let mut last = start;
        for i in 0..5 {
            last = s.create(&format!("/b/{i}"), b"x".to_vec()).await.unwrap();
        }
        // Nothing of /a/ comes, but reading past /b/'s changes is progress.
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(200), feed.next()).await;
        assert!(quiet.is_err(), "no change under /a/ was made");
        assert_eq!(progress.load(Ordering::Acquire), last);
        let next = s.create("/a/2", b"2".to_vec()).await.unwrap();
        let e = feed.next().await.unwrap().unwrap();
        assert_eq!((e.key.as_str(), e.revision), ("/a/2", next));
        assert!(next > last);
    }

    #[tokio::test]
    async fn reopened_store_keeps_objects_revision_and_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let rev = {
            let s = EmbeddedStore::open(&path).unwrap();
            s.create("/a/1", b"1".to_vec()).await.unwrap();
            s.create("/a/2", b"2".to_vec()).await.unwrap()
        };
        let s = EmbeddedStore::open(&path).unwrap();
        assert_eq!(s.current_revision().await.unwrap(), rev);
        let mut w = s.watch("/a/", rev - 1).await.unwrap();
        assert_eq!(w.next().await.unwrap().unwrap().key, "/a/2");
        assert!(s.create("/a/3", b"3".to_vec()).await.unwrap() > rev);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_commit_together_each_checked_in_turn() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(EmbeddedStore::open(&dir.path().join("db.redb")).unwrap());
        let mut w = s.watch("/", 0).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..64 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.create(&format!("/k/{i}"), vec![i as u8]).await
            }));
        }
        for _ in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.create("/same", b"x".to_vec()).await
            }));
        }
        let mut revisions = Vec::new();
        let mut refused = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(rev) => revisions.push(rev),
                Err(StorageError::AlreadyExists { .. }) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!((revisions.len(), refused), (65, 7));
        revisions.sort();
        assert_eq!(revisions, (1..=65).collect::<Vec<u64>>());
        for rev in 1..=65 {
            assert_eq!(w.next().await.unwrap().unwrap().revision, rev);
        }
        assert_eq!(s.current_revision().await.unwrap(), 65);
    }
}
