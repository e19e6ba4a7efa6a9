//! The etcd backend (`--etcd-servers`): each [`Storage`] call is one etcd
//! request, as in kube-apiserver's `storage/etcd3`.
//!
//! A key's `mod_revision` is its resourceVersion and etcd's store revision
//! is the list revision. Conditional writes are one `Txn` whose compare is
//! `create_revision == 0` (create) or `mod_revision == expected` (update,
//! delete); when it fails, the `or_else` branch reads the key so the error
//! can say whether it was missing or changed, without a second round trip.
//! A watch is an etcd watch from `after + 1` with `prev_kv`; a start
//! revision etcd has compacted becomes [`StorageError::Compacted`] (410).

use std::collections::VecDeque;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType as EtcdEventType, GetOptions, PutOptions,
    Txn, TxnOp, TxnOpResponse, WatchOptions, WatchResponse,
};
use futures::StreamExt;

use super::{EventType, KeyValue, Page, Result, Storage, StorageError, WatchEvent, WatchStream};

/// How long `watch` waits for etcd to name the compaction revision when the
/// start revision is known to be compacted (etcd reports it asynchronously).
const COMPACTION_REPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub struct EtcdStore {
    client: Client,
}

fn backend(e: etcd_client::Error) -> StorageError {
    StorageError::Backend(format!("etcd: {e}"))
}

fn is_compacted(e: &etcd_client::Error) -> bool {
    e.to_string()
        .contains("required revision has been compacted")
}

/// The first key after every key that starts with `prefix` (etcd's range end
/// for a prefix): the prefix with its last byte below 0xff incremented.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> u64 {
    header.map(|h| h.revision()).unwrap_or(0).max(0) as u64
}

fn to_key_value(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision() as u64,
    }
}

/// The key as the failed branch of a conditional txn read it.
fn read_back(responses: Vec<TxnOpResponse>) -> Option<KeyValue> {
    responses.into_iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g.kvs().first().map(to_key_value),
        _ => None,
    })
}

impl EtcdStore {
    /// Connects to the given endpoints (`http://127.0.0.1:2379`, or
    /// `127.0.0.1:2379`) and checks that etcd answers.
    pub async fn connect(endpoints: &[String]) -> Result<Self> {
        let client = Client::connect(endpoints, None).await.map_err(|e| {
            StorageError::Backend(format!(
                "connecting to etcd at {}: {e}",
                endpoints.join(",")
            ))
        })?;
        let store = Self { client };
        store.current_revision().await.map_err(|e| {
            StorageError::Backend(format!(
                "etcd at {} does not answer: {e}",
                endpoints.join(",")
            ))
        })?;
        Ok(store)
    }

    /// Compacts etcd's history every `interval`, as kube-apiserver does
    /// (`--etcd-compaction-interval`): each round compacts up to the
    /// revision seen one round earlier, so watches can resume from anything
    /// younger than one interval and etcd does not grow without bound.
    pub fn start_compaction(&self, interval: std::time::Duration) {
        if interval.is_zero() {
            return;
        }
        let store = Self {
            client: self.client.clone(),
        };
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.tick().await;
            let mut seen_last_round = 0u64;
            loop {
                ticks.tick().await;
                if seen_last_round > 0 {
                    match store
                        .client
                        .kv_client()
                        .compact(seen_last_round as i64, None)
                        .await
                    {
                        Ok(_) => tracing::debug!(revision = seen_last_round, "compacted etcd"),
                        // Someone (another apiserver) compacted further already.
                        Err(e) if is_compacted(&e) => {}
                        Err(e) => tracing::warn!("compacting etcd: {e}"),
                    }
                }
                match store.current_revision().await {
                    Ok(r) => seen_last_round = r,
                    Err(e) => tracing::warn!("reading etcd's revision: {e}"),
                }
            }
        });
    }

    /// Runs a write guarded by `compare`; on failure returns what the key
    /// holds now (None: absent).
    async fn guarded(
        &self,
        key: &str,
        compare: Compare,
        op: TxnOp,
    ) -> Result<std::result::Result<(u64, Vec<TxnOpResponse>), Option<KeyValue>>> {
        let txn = Txn::new()
            .when([compare])
            .and_then([op])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.client.kv_client().txn(txn).await.map_err(backend)?;
        if resp.succeeded() {
            Ok(Ok((revision_of(resp.header()), resp.op_responses())))
        } else {
            Ok(Err(read_back(resp.op_responses())))
        }
    }

    /// Where a compacted watch must start instead, as etcd reports it.
    async fn compaction_revision(&self, prefix: &str, start: i64) -> Option<u64> {
        let opts = WatchOptions::new().with_prefix().with_start_revision(start);
        let mut stream = self
            .client
            .watch_client()
            .watch(prefix, Some(opts))
            .await
            .ok()?;
        tokio::time::timeout(COMPACTION_REPORT_TIMEOUT, async {
            while let Ok(Some(resp)) = stream.message().await {
                if resp.compact_revision() > 0 {
                    return Some(resp.compact_revision() as u64);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }
}

/// The changes in one etcd watch response, in order.
fn to_watch_events(resp: &WatchResponse) -> Vec<WatchEvent> {
    resp.events()
        .iter()
        .filter_map(|e| {
            let kv = e.kv()?;
            let prev_value = e.prev_kv().map(|p| p.value().to_vec());
            let (event_type, value) = match e.event_type() {
                EtcdEventType::Put => (EventType::Put, kv.value().to_vec()),
                // A delete's kv has no value: the last one is in prev_kv.
                EtcdEventType::Delete => {
                    (EventType::Delete, prev_value.clone().unwrap_or_default())
                }
            };
            Some(WatchEvent {
                event_type,
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                revision: kv.mod_revision() as u64,
                value,
                prev_value,
                rendered: Default::default(),
            })
        })
        .collect()
}

#[async_trait]
impl Storage for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = self
            .client
            .kv_client()
            .get(key, None)
            .await
            .map_err(backend)?;
        Ok(resp.kvs().first().map(to_key_value))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, u64)> {
        let resp = self
            .client
            .kv_client()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(backend)?;
        Ok((
            resp.kvs().iter().map(to_key_value).collect(),
            revision_of(resp.header()),
        ))
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Page> {
        // [first key after start_after, end of prefix): etcd counts the
        // whole range and returns only `limit` of it.
        let start = match start_after {
            Some(k) => format!("{k}\0"),
            None => prefix.to_owned(),
        };
        let mut opts = GetOptions::new().with_range(prefix_end(prefix));
        if limit < usize::MAX {
            opts = opts.with_limit(limit as i64);
        }
        let resp = self
            .client
            .kv_client()
            .get(start, Some(opts))
            .await
            .map_err(backend)?;
        let items: Vec<KeyValue> = resp.kvs().iter().map(to_key_value).collect();
        let remaining = (resp.count().max(0) as usize).saturating_sub(items.len());
        Ok(Page {
            items,
            remaining,
            revision: revision_of(resp.header()),
        })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<u64> {
        let compare = Compare::create_revision(key, CompareOp::Equal, 0);
        match self
            .guarded(key, compare, TxnOp::put(key, value, None))
            .await?
        {
            Ok((rev, _)) => Ok(rev),
            Err(_) => Err(StorageError::AlreadyExists {
                key: key.to_owned(),
            }),
        }
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_revision: Option<u64>,
    ) -> Result<u64> {
        let compare = match expected_revision {
            Some(rev) => Compare::mod_revision(key, CompareOp::Equal, rev as i64),
            None => Compare::create_revision(key, CompareOp::Greater, 0),
        };
        match self
            .guarded(
                key,
                compare,
                TxnOp::put(key, value, Some(PutOptions::new())),
            )
            .await?
        {
            Ok((rev, _)) => Ok(rev),
            Err(None) => Err(StorageError::NotFound {
                key: key.to_owned(),
            }),
            Err(Some(current)) => Err(StorageError::Conflict {
                key: key.to_owned(),
                expected: expected_revision.unwrap_or(0),
                actual: current.mod_revision,
            }),
        }
    }

    async fn delete(&self, key: &str, expected_revision: Option<u64>) -> Result<KeyValue> {
        let compare = match expected_revision {
            Some(rev) => Compare::mod_revision(key, CompareOp::Equal, rev as i64),
            None => Compare::create_revision(key, CompareOp::Greater, 0),
        };
        let op = TxnOp::delete(key, Some(DeleteOptions::new().with_prev_key()));
        match self.guarded(key, compare, op).await? {
            Ok((rev, responses)) => {
                let prev = responses.into_iter().find_map(|r| match r {
                    TxnOpResponse::Delete(d) => d.prev_kvs().first().map(|kv| kv.value().to_vec()),
                    _ => None,
                });
                Ok(KeyValue {
                    key: key.to_owned(),
                    value: prev.unwrap_or_default(),
                    mod_revision: rev,
                })
            }
            Err(None) => Err(StorageError::NotFound {
                key: key.to_owned(),
            }),
            Err(Some(current)) => Err(StorageError::Conflict {
                key: key.to_owned(),
                expected: expected_revision.unwrap_or(0),
                actual: current.mod_revision,
            }),
        }
    }

    async fn watch(&self, prefix: &str, after: u64) -> Result<WatchStream> {
        let start = after as i64 + 1;
        // etcd reports a compacted start revision only after the watch is
        // created; a read at that revision tells at once. A future revision
        // is fine: the watch waits for it.
        let probe = GetOptions::new()
            .with_prefix()
            .with_count_only()
            .with_revision(start);
        if let Err(e) = self.client.kv_client().get(prefix, Some(probe)).await {
            if is_compacted(&e) {
                let oldest = self.compaction_revision(prefix, start).await.unwrap_or(0);
                return Err(StorageError::Compacted {
                    requested: after,
                    oldest,
                });
            }
            if !e.to_string().contains("future revision") {
                return Err(backend(e));
            }
        }
        let opts = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(start);
        let stream = self
            .client
            .watch_client()
            .watch(prefix, Some(opts))
            .await
            .map_err(backend)?;

        struct State {
            stream: Option<etcd_client::WatchStream>,
            pending: VecDeque<WatchEvent>,
            after: u64,
        }
        let state = State {
            stream: Some(stream),
            pending: VecDeque::new(),
            after,
        };
        let events = futures::stream::unfold(state, |mut st| async move {
            loop {
                if let Some(e) = st.pending.pop_front() {
                    return Some((Ok(std::sync::Arc::new(e)), st));
                }
                let stream = st.stream.as_mut()?;
                match stream.message().await {
                    Ok(Some(resp)) => {
                        if resp.compact_revision() > 0 {
                            st.stream = None;
                            let err = StorageError::Compacted {
                                requested: st.after,
                                oldest: resp.compact_revision() as u64,
                            };
                            return Some((Err(err), st));
                        }
                        if resp.canceled() {
                            st.stream = None;
                            let err = StorageError::Backend(format!(
                                "etcd canceled the watch: {}",
                                resp.cancel_reason()
                            ));
                            return Some((Err(err), st));
                        }
                        st.pending.extend(to_watch_events(&resp));
                    }
                    Ok(None) => return None,
                    Err(e) => {
                        st.stream = None;
                        return Some((Err(backend(e)), st));
                    }
                }
            }
        });
        Ok(events.boxed())
    }

    async fn current_revision(&self) -> Result<u64> {
        let resp = self
            .client
            .kv_client()
            .get("/", Some(GetOptions::new().with_count_only()))
            .await
            .map_err(backend)?;
        Ok(revision_of(resp.header()))
    }
}
