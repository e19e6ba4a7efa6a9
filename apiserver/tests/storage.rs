//! Storage conformance: the same behaviour from every backend behind the
//! `Storage` trait, the embedded redb store and a real etcd alike.

mod common;

use std::any::Any;
use std::time::Duration;

use futures::StreamExt;
use kubelab_apiserver::storage::embedded::EmbeddedStore;
use kubelab_apiserver::storage::etcd::EtcdStore;
use kubelab_apiserver::storage::{EventType, Storage, StorageError, WatchStream};

use common::etcd::EtcdServer;

struct Fixture {
    store: Box<dyn Storage>,
    /// Compacts the store's history before a revision (etcd only: the
    /// embedded store compacts by its window on its own).
    etcd_url: Option<String>,
    _keep: Box<dyn Any>,
}

impl Fixture {
    /// The embedded store keeping the last `window` changes.
    fn embedded(window: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_with_window(&dir.path().join("db.redb"), window).unwrap();
        Self {
            store: Box::new(store),
            etcd_url: None,
            _keep: Box::new(dir),
        }
    }

    async fn etcd() -> Self {
        let etcd = EtcdServer::start();
        let store = EtcdStore::connect(&[etcd.url()])
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", etcd.log()));
        Self {
            store: Box::new(store),
            etcd_url: Some(etcd.url()),
            _keep: Box::new(etcd),
        }
    }

    /// Makes revisions before `keep_from` unavailable to watches.
    async fn compact(&self, keep_from: u64) {
        if let Some(url) = &self.etcd_url {
            let mut c = etcd_client::Client::connect([url], None).await.unwrap();
            c.compact(keep_from as i64, None).await.unwrap();
        }
    }
}

async fn next(w: &mut WatchStream) -> std::sync::Arc<kubelab_apiserver::storage::WatchEvent> {
    tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("a watch event within 5 s")
        .expect("the watch stream is open")
        .expect("no watch error")
}

async fn revisions_grow_and_conditional_writes_conflict(f: Fixture) {
    let s = f.store.as_ref();
    let r1 = s.create("/a/x", b"1".to_vec()).await.unwrap();
    assert!(matches!(
        s.create("/a/x", b"1".to_vec()).await,
        Err(StorageError::AlreadyExists { .. })
    ));
    let r2 = s.update("/a/x", b"2".to_vec(), Some(r1)).await.unwrap();
    assert!(r2 > r1);
    match s.update("/a/x", b"3".to_vec(), Some(r1)).await {
        Err(StorageError::Conflict {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (r1, r2)),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert!(matches!(
        s.update("/a/missing", b"3".to_vec(), None).await,
        Err(StorageError::NotFound { .. })
    ));
    assert!(matches!(
        s.delete("/a/missing", None).await,
        Err(StorageError::NotFound { .. })
    ));
    assert!(matches!(
        s.delete("/a/x", Some(r1)).await,
        Err(StorageError::Conflict { .. })
    ));
    let got = s.get("/a/x").await.unwrap().unwrap();
    assert_eq!((got.value.as_slice(), got.mod_revision), (&b"2"[..], r2));
    assert_eq!(s.current_revision().await.unwrap(), r2);
    let deleted = s.delete("/a/x", Some(r2)).await.unwrap();
    assert_eq!(deleted.value, b"2");
    assert!(deleted.mod_revision > r2);
    assert_eq!(s.get("/a/x").await.unwrap(), None);
    assert_eq!(s.current_revision().await.unwrap(), deleted.mod_revision);
    // An unconditional update of a present key succeeds.
    let r3 = s.create("/a/x", b"4".to_vec()).await.unwrap();
    assert!(s.update("/a/x", b"5".to_vec(), None).await.unwrap() > r3);
}

async fn list_is_prefix_scoped_and_key_ordered(f: Fixture) {
    let s = f.store.as_ref();
    s.create("/a/2", b"2".to_vec()).await.unwrap();
    s.create("/b/1", b"x".to_vec()).await.unwrap();
    let last = s.create("/a/1", b"1".to_vec()).await.unwrap();
    s.create("/ab/1", b"y".to_vec()).await.unwrap();
    let (items, _) = s.list("/a/").await.unwrap();
    let keys: Vec<&str> = items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/a/1", "/a/2"]);
    assert_eq!(items[0].mod_revision, last);
    let (_, rev) = s.list("/none/").await.unwrap();
    assert_eq!(rev, s.current_revision().await.unwrap());
}

async fn pages_read_only_their_keys_and_count_the_rest(f: Fixture) {
    let s = f.store.as_ref();
    for k in ["/a/1", "/a/2", "/a/3", "/a/4", "/a/5", "/ab/1", "/b/1"] {
        s.create(k, k.as_bytes().to_vec()).await.unwrap();
    }
    let keys = |p: &kubelab_apiserver::storage::Page| -> Vec<String> {
        p.items.iter().map(|kv| kv.key.clone()).collect()
    };
    let first = s.list_page("/a/", None, 2).await.unwrap();
    assert_eq!(keys(&first), ["/a/1", "/a/2"]);
    assert_eq!(first.remaining, 3);
    assert_eq!(first.items[1].value, b"/a/2");
    assert_eq!(first.revision, s.current_revision().await.unwrap());
    let second = s.list_page("/a/", Some("/a/2"), 2).await.unwrap();
    assert_eq!(
        (keys(&second), second.remaining),
        (vec!["/a/3".to_owned(), "/a/4".to_owned()], 1)
    );
    let last = s.list_page("/a/", Some("/a/4"), 2).await.unwrap();
    assert_eq!((keys(&last), last.remaining), (vec!["/a/5".to_owned()], 0));
    // A continue key that has been deleted meanwhile still pages on.
    s.delete("/a/3", None).await.unwrap();
    let after_gone = s.list_page("/a/", Some("/a/3"), 10).await.unwrap();
    assert_eq!(
        (keys(&after_gone), after_gone.remaining),
        (vec!["/a/4".to_owned(), "/a/5".to_owned()], 0)
    );
    let all = s.list_page("/a/", None, usize::MAX).await.unwrap();
    assert_eq!((all.items.len(), all.remaining), (4, 0));
}

async fn watch_replays_then_follows_with_previous_values(f: Fixture) {
    let s = f.store.as_ref();
    s.create("/a/1", b"1".to_vec()).await.unwrap();
    s.create("/b/1", b"x".to_vec()).await.unwrap();
    let (items, rev) = s.list("/a/").await.unwrap();
    assert_eq!(items.len(), 1);
    let r2 = s.create("/a/2", b"2".to_vec()).await.unwrap();
    let mut w = s.watch("/a/", rev).await.unwrap();
    let e = next(&mut w).await;
    assert_eq!(
        (
            e.key.as_str(),
            e.event_type,
            e.revision,
            e.prev_value.clone()
        ),
        ("/a/2", EventType::Put, r2, None)
    );
    let r3 = s.update("/a/2", b"2b".to_vec(), Some(r2)).await.unwrap();
    let e = next(&mut w).await;
    assert_eq!(
        (e.value.as_slice(), e.revision, e.prev_value.as_deref()),
        (&b"2b"[..], r3, Some(&b"2"[..]))
    );
    s.create("/b/2", b"y".to_vec()).await.unwrap();
    let deleted = s.delete("/a/1", None).await.unwrap();
    let e = next(&mut w).await;
    assert_eq!(
        (e.key.as_str(), e.event_type, e.value.as_slice(), e.revision),
        ("/a/1", EventType::Delete, &b"1"[..], deleted.mod_revision)
    );
}

async fn watch_from_a_compacted_revision_is_refused(f: Fixture) {
    let s = f.store.as_ref();
    let mut revs = Vec::new();
    for i in 0..5 {
        revs.push(s.create(&format!("/a/{i}"), b"x".to_vec()).await.unwrap());
    }
    f.compact(revs[2]).await;
    // Revisions 3, 4 and 5 are kept: resuming after 2 works, after 1 does not.
    let mut w = s.watch("/a/", revs[1]).await.unwrap();
    assert_eq!(next(&mut w).await.key, "/a/2");
    match s.watch("/a/", revs[0]).await {
        Err(StorageError::Compacted { requested, oldest }) => {
            assert_eq!((requested, oldest), (revs[0], revs[2]))
        }
        Err(e) => panic!("expected Compacted, got {e}"),
        Ok(_) => panic!("expected Compacted, got a watch"),
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::Fixture::embedded(3)).await
            })*
        }
        mod etcd {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::Fixture::etcd().await).await
            })*
        }
    };
}

conformance!(
    revisions_grow_and_conditional_writes_conflict,
    list_is_prefix_scoped_and_key_ordered,
    pages_read_only_their_keys_and_count_the_rest,
    watch_replays_then_follows_with_previous_values,
    watch_from_a_compacted_revision_is_refused,
);
