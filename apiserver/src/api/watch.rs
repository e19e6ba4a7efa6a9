//! `?watch=true`: a chunked stream of `{"type": ..., "object": ...}` lines
//! fed by the store's change feed, filtered by selectors (an object moving
//! into or out of a selector is ADDED or DELETED, as with the real
//! apiserver), with bookmarks and a server-side timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Api, ApiResult, Filter, Output, Params, object, param_bool, table_rows};
use crate::kinds::Kind;
use crate::status::ApiError;
use crate::storage::{EventType, StorageError, WatchEvent};

/// How often an idle watch with `allowWatchBookmarks` gets a bookmark.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(10);
/// kube-apiserver's default `--min-request-timeout` is 1800 s.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

struct Encoder {
    kind: Arc<dyn Kind>,
    out: Output,
    /// Column definitions go out with the first Table event only.
    sent_columns: bool,
}

impl Encoder {
    fn line(&mut self, type_: &str, obj: &Value) -> Bytes {
        let converted;
        let obj = if self.kind.converted() {
            converted = self.kind.from_storage(obj.clone());
            &converted
        } else {
            obj
        };
        let object = match self.out {
            Output::Object | Output::Protobuf => return event_line(type_, obj),
            Output::Metadata => return event_line(type_, &object::partial_metadata(obj)),
            Output::Table(include) => {
                let rows = table_rows(self.kind.as_ref(), std::slice::from_ref(obj), include);
                let columns: Vec<Value> = if self.sent_columns {
                    Vec::new()
                } else {
                    self.kind.columns().iter().map(|c| c.to_json()).collect()
                };
                self.sent_columns = true;
                json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                       "metadata": {"resourceVersion": object::meta_str(obj, "resourceVersion").unwrap_or("")},
                       "columnDefinitions": columns, "rows": rows})
            }
        };
        let mut s = json!({"type": type_, "object": object}).to_string();
        s.push('\n');
        Bytes::from(s)
    }

    /// Whether this watch sends stored objects as they are (JSON, no
    /// conversion), so its lines are the same as every other such watch's.
    fn is_plain(&self) -> bool {
        matches!(
            self.out,
            Output::Object | Output::Protobuf | Output::Metadata
        ) && !self.kind.converted()
    }

    fn bookmark(&self, revision: u64, initial_end: bool) -> Bytes {
        let info = self.kind.info();
        let mut meta = json!({"resourceVersion": revision.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let mut s = json!({"type": "BOOKMARK", "object": {"kind": info.kind, "apiVersion": info.api_version(), "metadata": meta}})
            .to_string();
        s.push('\n');
        Bytes::from(s)
    }

    fn error(&self, e: &ApiError) -> Bytes {
        let mut s = json!({"type": "ERROR", "object": e.to_json()}).to_string();
        s.push('\n');
        Bytes::from(s)
    }
}

/// `{"type": ..., "object": ...}` and a newline, written straight from the
/// object rather than through a copy of it.
fn event_line(type_: &str, obj: &Value) -> Bytes {
    framed(type_, 256, |out| {
        serde_json::to_writer(out, obj).expect("JSON serializes")
    })
}

/// `{"type": ..., "object": ` + what `object` writes + `}` and a newline.
fn framed(type_: &str, capacity: usize, object: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut out = Vec::with_capacity(capacity + 32);
    out.extend_from_slice(b"{\"type\":");
    serde_json::to_writer(&mut out, type_).expect("a string serializes");
    out.extend_from_slice(b",\"object\":");
    object(&mut out);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

/// The line of a watch without selectors (`unfiltered`) sending objects
/// as stored, or only their metadata.
fn plain_line(e: &WatchEvent, unfiltered: &Filter, metadata: bool) -> Bytes {
    let type_ = match (e.event_type, &e.prev_value) {
        (EventType::Delete, _) => "DELETED",
        (EventType::Put, None) => "ADDED",
        (EventType::Put, Some(_)) => "MODIFIED",
    };
    let spliced = if metadata {
        object::encode_metadata_with_version(&e.value, e.revision)
    } else {
        object::encode_with_version(&e.value, e.revision)
    };
    let Some(obj) = spliced else {
        let (type_, obj) = to_event(e, unfiltered).expect("an empty filter passes everything");
        return match metadata {
            true => event_line(type_, &object::partial_metadata(&obj)),
            false => event_line(type_, &obj),
        };
    };
    framed(type_, obj.len(), |out| out.extend_from_slice(&obj))
}

/// Turns a store change into a watch event for a filtered watcher.
fn to_event(e: &WatchEvent, filter: &Filter) -> Option<(&'static str, Value)> {
    let decode = |bytes: &[u8]| -> Value {
        let mut v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
        object::meta_mut(&mut v).insert("resourceVersion".into(), e.revision.to_string().into());
        v
    };
    let new = decode(&e.value);
    match e.event_type {
        EventType::Delete => filter.matches(&new).then_some(("DELETED", new)),
        EventType::Put => {
            // Without selectors every object matches: the old one need
            // not be decoded to know it did.
            let was = match e.prev_value.as_deref() {
                None => false,
                Some(_) if filter.is_empty() => true,
                Some(old) => filter.matches(&decode(old)),
            };
            match (was, filter.matches(&new)) {
                (false, true) => Some(("ADDED", new)),
                (true, true) => Some(("MODIFIED", new)),
                (true, false) => Some(("DELETED", new)),
                (false, false) => None,
            }
        }
    }
}

pub async fn watch(
    api: Arc<Api>,
    kind: Arc<dyn Kind>,
    ns: Option<String>,
    params: Params,
    out: Output,
) -> ApiResult<Response> {
    let info = kind.info().clone();
    let filter = Filter::from_params(kind.as_ref(), &params)?;
    let prefix = info.key_prefix(ns.as_deref());
    let bookmarks = param_bool(&params, "allowWatchBookmarks") == Some(true)
        && matches!(out, Output::Object | Output::Protobuf | Output::Metadata);
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let rv = params
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("");
    let explicit_initial = param_bool(&params, "sendInitialEvents");
    let send_initial = explicit_initial.unwrap_or(rv.is_empty() || rv == "0");

    let mut enc = Encoder {
        kind: kind.clone(),
        out,
        sent_columns: false,
    };
    let mut initial: Vec<Bytes> = Vec::new();
    // How far the store's feed has been read for this watch: bookmarks
    // carry it, as kube-apiserver's carry its watch cache's revision.
    let progress = Arc::new(AtomicU64::new(0));
    let (mut last_rev, stream) = if send_initial {
        let (kvs, rev) = api.store.list(&prefix).await?;
        for kv in &kvs {
            let obj = object::decode(kv);
            if filter.matches(&obj) {
                initial.push(enc.line("ADDED", &obj));
            }
        }
        if explicit_initial == Some(true) {
            initial.push(enc.bookmark(rev, true));
        }
        (
            rev,
            Some(
                api.store
                    .watch_with_progress(&prefix, rev, progress.clone())
                    .await?,
            ),
        )
    } else {
        let after = rv
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
        match api
            .store
            .watch_with_progress(&prefix, after, progress.clone())
            .await
        {
            Ok(s) => (after, Some(s)),
            Err(StorageError::Compacted { requested, oldest }) => {
                initial.push(enc.error(&ApiError::gone(format!(
                    "too old resource version: {requested} ({oldest})"
                ))));
                (after, None)
            }
            Err(e) => return Err(e.into()),
        }
    };

    let (tx, rx) = mpsc::channel::<Result<Bytes, std::convert::Infallible>>(64);
    tokio::spawn(async move {
        for line in initial {
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
        let Some(mut stream) = stream else { return };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
        ticker.tick().await;
        loop {
            let line = tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if bookmarks => {
                    last_rev = last_rev.max(progress.load(Ordering::Acquire));
                    enc.bookmark(last_rev, false)
                }
                e = stream.next() => match e {
                    None => return,
                    Some(Err(e)) => {
                        let _ = tx.send(Ok(enc.error(&e.into()))).await;
                        return;
                    }
                    Some(Ok(e)) => {
                        last_rev = e.revision;
                        if filter.is_empty() && enc.is_plain() {
                            let metadata = enc.out == Output::Metadata;
                            let cache = match metadata {
                                true => &e.rendered.metadata,
                                false => &e.rendered.object,
                            };
                            cache.get_or_init(|| plain_line(&e, &filter, metadata)).clone()
                        } else {
                            match to_event(&e, &filter) {
                                Some((t, obj)) => enc.line(t, &obj),
                                None => continue,
                            }
                        }
                    }
                },
            };
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache, private"),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::Registry;

    fn event(type_: EventType, new: Value, old: Option<Value>) -> WatchEvent {
        WatchEvent {
            event_type: type_,
            key: "/registry/pods/default/a".into(),
            revision: 7,
            value: serde_json::to_vec(&new).unwrap(),
            prev_value: old.map(|o| serde_json::to_vec(&o).unwrap()),
            rendered: Default::default(),
        }
    }

    #[test]
    fn a_plain_line_is_the_event_a_filtered_watch_would_write() {
        let r = Registry::default();
        let pods = r.find("", "v1", "pods").unwrap();
        let unfiltered = Filter::from_params(pods.as_ref(), &Params::new()).unwrap();
        let a = json!({"metadata": {"name": "a"}, "spec": {"nodeName": "n1"}});
        for e in [
            event(EventType::Put, a.clone(), None),
            event(EventType::Put, a.clone(), Some(a.clone())),
            event(EventType::Delete, a, None),
        ] {
            let (t, obj) = to_event(&e, &unfiltered).unwrap();
            assert_eq!(plain_line(&e, &unfiltered, false), event_line(t, &obj));
            let partial = object::partial_metadata(&obj);
            assert_eq!(plain_line(&e, &unfiltered, true), event_line(t, &partial));
        }
    }

    #[test]
    fn selector_transitions_become_added_and_deleted() {
        let r = Registry::default();
        let pods = r.find("", "v1", "pods").unwrap();
        let mut params = Params::new();
        params.insert("labelSelector".into(), "env=dev".into());
        let f = Filter::from_params(pods.as_ref(), &params).unwrap();
        let dev = json!({"metadata": {"name": "a", "labels": {"env": "dev"}}});
        let prod = json!({"metadata": {"name": "a", "labels": {"env": "prod"}}});
        assert_eq!(
            to_event(&event(EventType::Put, dev.clone(), None), &f)
                .unwrap()
                .0,
            "ADDED"
        );
        assert_eq!(
            to_event(&event(EventType::Put, prod.clone(), Some(dev.clone())), &f)
                .unwrap()
                .0,
            "DELETED"
        );
        assert_eq!(
            to_event(&event(EventType::Put, dev.clone(), Some(prod.clone())), &f)
                .unwrap()
                .0,
            "ADDED"
        );
        assert_eq!(
            to_event(&event(EventType::Put, dev.clone(), Some(dev.clone())), &f)
                .unwrap()
                .0,
            "MODIFIED"
        );
        assert!(to_event(&event(EventType::Put, prod.clone(), Some(prod)), &f).is_none());
        let (t, obj) = to_event(&event(EventType::Delete, dev, None), &f).unwrap();
        assert_eq!(
            (t, obj["metadata"]["resourceVersion"].as_str()),
            ("DELETED", Some("7"))
        );
    }
}
