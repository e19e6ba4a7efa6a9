//! `dryRun=All`, as kube-apiserver honours it on every write: the request
//! runs in full (admission, defaulting, validation, preconditions, conflict
//! and existence checks) against a store that never writes
//! (`DryRunnableStorage` upstream), so no verb or subresource can store
//! anything by forgetting to check the flag.

use std::sync::Arc;

use async_trait::async_trait;
use axum::http::{Method, Uri};
use serde_json::Value;

use crate::status::{ApiError, FieldError, Subject};
use crate::storage::{KeyValue, Page, Result, Storage, StorageError, WatchStream};

/// Reads from the real store; answers writes as the real store would
/// (`AlreadyExists`, `NotFound`, `Conflict`) without making them. An update
/// answers the revision the key already has, so a dry-run response carries
/// the current `resourceVersion`, as upstream's does.
pub struct DryRunStore {
    inner: Arc<dyn Storage>,
}

impl DryRunStore {
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        Self { inner }
    }

    async fn existing(&self, key: &str, expected: Option<u64>) -> Result<KeyValue> {
        let kv = self
            .inner
            .get(key)
            .await?
            .ok_or_else(|| StorageError::NotFound { key: key.into() })?;
        match expected {
            Some(e) if e != kv.mod_revision => Err(StorageError::Conflict {
                key: key.into(),
                expected: e,
                actual: kv.mod_revision,
            }),
            _ => Ok(kv),
        }
    }
}

#[async_trait]
impl Storage for DryRunStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner.get(key).await
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, u64)> {
        self.inner.list(prefix).await
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Page> {
        self.inner.list_page(prefix, start_after, limit).await
    }

    async fn create(&self, key: &str, _value: Vec<u8>) -> Result<u64> {
        if self.inner.get(key).await?.is_some() {
            return Err(StorageError::AlreadyExists { key: key.into() });
        }
        self.inner.current_revision().await
    }

    async fn update(&self, key: &str, _value: Vec<u8>, expected: Option<u64>) -> Result<u64> {
        Ok(self.existing(key, expected).await?.mod_revision)
    }

    async fn delete(&self, key: &str, expected: Option<u64>) -> Result<KeyValue> {
        self.existing(key, expected).await
    }

    async fn watch(&self, prefix: &str, after: u64) -> Result<WatchStream> {
        self.inner.watch(prefix, after).await
    }

    async fn current_revision(&self) -> Result<u64> {
        self.inner.current_revision().await
    }
}

/// The options object a verb's `dryRun` belongs to, which names it in errors.
fn options_kind(method: &Method) -> &'static str {
    match *method {
        Method::POST => "CreateOptions.meta.k8s.io",
        Method::PUT => "UpdateOptions.meta.k8s.io",
        Method::PATCH => "PatchOptions.meta.k8s.io",
        _ => "DeleteOptions.meta.k8s.io",
    }
}

/// Every `dryRun` value of the query (it may repeat), then those of a
/// `DeleteOptions` body (a DELETE's, or an Eviction's `deleteOptions`).
fn values(uri: &Uri, delete_options: Option<&Value>) -> Vec<String> {
    let query: Vec<(String, String)> = axum::extract::Query::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let mut out: Vec<String> = query
        .into_iter()
        .filter(|(k, _)| k == "dryRun")
        .map(|(_, v)| v)
        .collect();
    if let Some(Value::Array(list)) = delete_options.and_then(|o| o.get("dryRun")) {
        out.extend(list.iter().map(|v| v.as_str().unwrap_or("").to_owned()));
    }
    out
}

/// Whether a write asks for a dry run; `ValidateDryRun`'s 422 for a value
/// other than `All`. Reads never are.
pub fn requested(
    method: &Method,
    uri: &Uri,
    delete_options: Option<&Value>,
) -> std::result::Result<bool, ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(false);
    }
    let values = values(uri, delete_options);
    if values.iter().any(|v| v != "All") {
        let kind = options_kind(method);
        let subject = Subject {
            group: "meta.k8s.io",
            plural: "",
            kind,
        };
        let shown = format!(
            "[]string{{{}}}",
            values
                .iter()
                .map(|v| format!("{v:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Err(ApiError::invalid(
            subject,
            "",
            &[FieldError::not_supported_raw("dryRun", shown, &["All"])],
        ));
    }
    Ok(!values.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::embedded::EmbeddedStore;
    use serde_json::json;

    #[tokio::test]
    async fn writes_are_checked_but_never_made() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Storage> =
            Arc::new(EmbeddedStore::open(&dir.path().join("db")).unwrap());
        let rev = inner.create("/a", b"1".to_vec()).await.unwrap();
        let dry = DryRunStore::new(inner.clone());

        assert!(matches!(
            dry.create("/a", b"2".to_vec()).await,
            Err(StorageError::AlreadyExists { .. })
        ));
        dry.create("/b", b"2".to_vec()).await.unwrap();
        assert_eq!(
            dry.update("/a", b"3".to_vec(), Some(rev)).await.unwrap(),
            rev
        );
        assert!(matches!(
            dry.update("/a", b"3".to_vec(), Some(rev + 1)).await,
            Err(StorageError::Conflict { .. })
        ));
        assert!(matches!(
            dry.update("/b", b"3".to_vec(), None).await,
            Err(StorageError::NotFound { .. })
        ));
        assert_eq!(dry.delete("/a", None).await.unwrap().value, b"1");

        assert_eq!(inner.get("/a").await.unwrap().unwrap().value, b"1");
        assert!(inner.get("/b").await.unwrap().is_none());
        assert_eq!(inner.current_revision().await.unwrap(), rev);
    }

    #[test]
    fn dry_run_is_asked_by_query_or_delete_options_and_only_as_all() {
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert!(requested(&Method::POST, &uri("/api/v1/pods?dryRun=All"), None).unwrap());
        assert!(!requested(&Method::POST, &uri("/api/v1/pods"), None).unwrap());
        assert!(!requested(&Method::GET, &uri("/api/v1/pods?dryRun=x"), None).unwrap());
        let opts = json!({"kind": "DeleteOptions", "dryRun": ["All"]});
        assert!(requested(&Method::DELETE, &uri("/api/v1/pods/a"), Some(&opts)).unwrap());

        let err = requested(&Method::POST, &uri("/x?dryRun=All&dryRun=foo"), None).unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(
            err.message,
            "CreateOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: []string{\"All\", \"foo\"}: supported values: \"All\""
        );
        let err = requested(&Method::PATCH, &uri("/x?dryRun=true"), None).unwrap_err();
        assert!(
            err.message.starts_with("PatchOptions.meta.k8s.io"),
            "{}",
            err.message
        );
    }
}
