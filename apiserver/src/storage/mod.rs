//! The storage interface: a revisioned key/value store with a change feed.
//!
//! Modelled on what the Kubernetes apiserver needs from etcd: every write
//! bumps one store-wide revision, each key remembers the revision that last
//! modified it (its `resourceVersion`), writes can be made conditional on
//! that revision, and a watch replays every change after a given revision
//! for as long as the store keeps it (older revisions are "compacted": 410).
//!
//! Values are opaque bytes here; the API layer stores JSON without
//! `metadata.resourceVersion` and fills it from [`KeyValue::mod_revision`]
//! on the way out, as the real apiserver does with etcd's `mod_revision`.

pub mod embedded;
pub mod etcd;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use async_trait::async_trait;
use futures::stream::BoxStream;

/// One stored key with the revision of its last modification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: u64,
}

/// One page of a listing (see [`Storage::list_page`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<KeyValue>,
    /// Keys under the prefix after the last item.
    pub remaining: usize,
    pub revision: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Put,
    Delete,
}

/// One change, as a watch sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub event_type: EventType,
    pub key: String,
    /// The store revision of this change.
    pub revision: u64,
    /// The new value for a put; the last value before deletion for a delete.
    pub value: Vec<u8>,
    /// The value before this change, if the key existed.
    pub prev_value: Option<Vec<u8>>,
    /// The event as every API watch without selectors sends it, made by
    /// the first of them: a change is encoded once, not once per watcher.
    pub rendered: Rendered,
}

/// A change's watch line, in each form a watch without selectors sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    /// The whole object.
    pub object: std::sync::OnceLock<bytes::Bytes>,
    /// Its `PartialObjectMetadata`.
    pub metadata: std::sync::OnceLock<bytes::Bytes>,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    #[error("key {key} not found")]
    NotFound { key: String },
    #[error("key {key} was modified at revision {actual}, expected revision {expected}")]
    Conflict {
        key: String,
        expected: u64,
        actual: u64,
    },
    #[error("revision {requested} has been compacted; the oldest revision available is {oldest}")]
    Compacted { requested: u64, oldest: u64 },
    #[error("storage backend: {0}")]
    Backend(String),
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// A stream of changes; ends with an error if the watcher fell too far
/// behind for the store to keep its place (the client then relists).
/// Changes, shared between the watchers of one store.
pub type WatchStream = BoxStream<'static, Result<Arc<WatchEvent>>>;

/// What the apiserver needs from a backend. Implemented by the embedded
/// store; an etcd backend maps each call onto one etcd request (a
/// `Txn` comparing `mod_revision` for the conditional writes).
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// All keys under `prefix`, in key order, and the store revision the
    /// snapshot was taken at (a watch from that revision misses nothing).
    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, u64)>;

    /// At most `limit` keys under `prefix` that sort after `start_after`,
    /// how many keys are left after them, and the store revision: one page
    /// of a chunked LIST, read without touching the values of other pages.
    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Page> {
        let (kvs, revision) = self.list(prefix).await?;
        let mut rest = kvs
            .into_iter()
            .filter(|kv| start_after.is_none_or(|s| kv.key.as_str() > s));
        let items: Vec<KeyValue> = rest.by_ref().take(limit).collect();
        Ok(Page {
            items,
            remaining: rest.count(),
            revision,
        })
    }

    /// Creates `key`; fails with `AlreadyExists` if it is present.
    /// Returns the new revision.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<u64>;

    /// Replaces an existing `key`. With `expected_revision`, fails with
    /// `Conflict` unless the key was last modified at that revision.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_revision: Option<u64>,
    ) -> Result<u64>;

    /// Deletes `key`, optionally only if it was last modified at
    /// `expected_revision`. Returns the deleted value with `mod_revision`
    /// set to the revision of the deletion.
    async fn delete(&self, key: &str, expected_revision: Option<u64>) -> Result<KeyValue>;

    /// Every change to keys under `prefix` after revision `after`, then live
    /// changes. `Compacted` if changes after `after` are no longer kept.
    async fn watch(&self, prefix: &str, after: u64) -> Result<WatchStream>;

    /// Like [`Self::watch`], and `progress` follows the revision up to which
    /// the stream has read the store's changes, other prefixes' included:
    /// a bookmark there misses nothing of this prefix, so a watch of a
    /// quiet kind resumes from near the head instead of from a revision
    /// the window has long dropped. Backends that cannot tell leave it.
    async fn watch_with_progress(
        &self,
        prefix: &str,
        after: u64,
        progress: Arc<AtomicU64>,
    ) -> Result<WatchStream> {
        let _ = progress;
        self.watch(prefix, after).await
    }

    async fn current_revision(&self) -> Result<u64>;
}
