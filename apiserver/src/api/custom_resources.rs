//! Serving CustomResourceDefinitions: what the apiextensions-apiserver's
//! naming, establishing and finalizer controllers do, run right after every
//! CRD write (so a new resource is in discovery before the write returns)
//! and whenever the stored CRDs change (another apiserver on the same etcd).
//!
//! Each run lists the CRDs, decides their status (accepted names,
//! `NamesAccepted`, `Established`), deletes the objects of CRDs being
//! deleted and then their cleanup finalizer, and replaces the registry's
//! custom resources with the served versions of the established CRDs.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

use super::{Api, ApiResult, Params, object};
use crate::kinds::Kind;
use crate::kinds::custom_resource::CustomResource;
use crate::kinds::custom_resource_definition::{
    CLEANUP_FINALIZER, TakenNames, decide_status, is_condition_true,
};
use crate::status::ApiError;
use crate::storage::StorageError;

pub const GROUP: &str = "apiextensions.k8s.io";
pub const PLURAL: &str = "customresourcedefinitions";

/// How often the CRDs are looked at without a change (objects of a deleted
/// CRD that still had finalizers may have gone since).
const RESYNC: Duration = Duration::from_secs(5);

/// The message kube-apiserver gives a patch type custom resources do not take.
pub fn unsupported_patch_error() -> ApiError {
    ApiError::new(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
    )
}

pub fn is_crd(kind: &dyn Kind) -> bool {
    let i = kind.info();
    i.group == GROUP && i.plural == PLURAL
}

fn created_order(
    a: &(u64, CustomResourceDefinition),
    b: &(u64, CustomResourceDefinition),
) -> std::cmp::Ordering {
    let t = |c: &CustomResourceDefinition| c.metadata.creation_timestamp.as_ref().map(|t| t.0);
    t(&a.1)
        .cmp(&t(&b.1))
        .then_with(|| a.1.metadata.name.cmp(&b.1.metadata.name))
}

impl Api {
    fn crd_kind(&self) -> Arc<dyn Kind> {
        self.registry
            .find(GROUP, "v1", PLURAL)
            .expect("customresourcedefinitions served")
    }

    /// Brings the CRDs' status and the served custom resources up to date
    /// with the stored CRDs.
    pub async fn sync_custom_resources(&self) -> ApiResult<()> {
        let _one_at_a_time = self.registry.custom_sync.lock().await;
        for _attempt in 0..5 {
            match self.sync_once().await {
                Err(e) if e.code == 409 => continue,
                other => return other,
            }
        }
        Ok(())
    }

    async fn sync_once(&self) -> ApiResult<()> {
        let crd_kind = self.crd_kind();
        let (kvs, _) = self.store.list(&crd_kind.info().key_prefix(None)).await?;
        let mut crds: Vec<(u64, CustomResourceDefinition)> = kvs
            .iter()
            .filter_map(|kv| {
                let crd = serde_json::from_slice(&kv.value)
                    .map_err(|e| {
                        tracing::warn!(key = kv.key, "undecodable CustomResourceDefinition: {e}")
                    })
                    .ok()?;
                Some((kv.mod_revision, crd))
            })
            .collect();
        // The older CRD keeps a contested name.
        crds.sort_by(created_order);
        let mut served: Vec<Arc<dyn Kind>> = Vec::new();
        for i in 0..crds.len() {
            let mut taken = TakenNames::default();
            for (j, (_, other)) in crds.iter().enumerate() {
                if j != i
                    && other.spec.group == crds[i].1.spec.group
                    && let Some(n) = other
                        .status
                        .as_ref()
                        .and_then(|s| s.accepted_names.as_ref())
                {
                    taken.add(n);
                }
            }
            let (rev, crd) = &crds[i];
            let status = decide_status(crd, &taken);
            if crd.status.as_ref() != Some(&status) {
                let mut updated = crd.clone();
                updated.status = Some(status);
                let rev = self.write_crd(&updated, *rev).await?;
                crds[i] = (rev, updated);
            }
            let (rev, crd) = &crds[i];
            if crd.metadata.deletion_timestamp.is_some() {
                self.finalize_crd(crd, *rev).await?;
                continue;
            }
            if is_condition_true(crd, "Established") {
                served.extend(CustomResource::served(crd));
            }
        }
        self.openapi.set_custom_resources(
            served
                .iter()
                .filter_map(|k| k.custom().map(CustomResource::openapi_schema))
                .collect(),
        );
        self.registry.set_custom(served);
        Ok(())
    }

    async fn write_crd(&self, crd: &CustomResourceDefinition, expected: u64) -> ApiResult<u64> {
        let kind = self.crd_kind();
        let name = crd.metadata.name.clone().unwrap_or_default();
        let mut v = serde_json::to_value(crd).expect("CRDs serialize");
        v["apiVersion"] = json!("apiextensions.k8s.io/v1");
        v["kind"] = json!("CustomResourceDefinition");
        self.store
            .update(
                &kind.info().key(None, &name),
                object::encode(&v),
                Some(expected),
            )
            .await
            .map_err(|e| ApiError::from_storage(kind.info().subject(), &name, e))
    }

    /// The finalizer controller's work for a deleted CRD: delete its
    /// objects, and once none is left, let the CRD go.
    async fn finalize_crd(&self, crd: &CustomResourceDefinition, rev: u64) -> ApiResult<()> {
        let has_finalizer = crd
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == CLEANUP_FINALIZER);
        if !has_finalizer {
            return Ok(());
        }
        let Some(kind) = CustomResource::storage(crd) else {
            return Ok(());
        };
        let (objects, _) = self.store.list(&kind.info().key_prefix(None)).await?;
        for kv in &objects {
            let obj = object::decode(kv);
            let ns = object::meta_str(&obj, "namespace").map(str::to_owned);
            let name = object::name(&obj).to_owned();
            if object::meta_str(&obj, "deletionTimestamp").is_some() {
                continue;
            }
            match self
                .delete(
                    kind.as_ref(),
                    ns.as_deref(),
                    &name,
                    &Value::Null,
                    &Params::new(),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let (rest, _) = self.store.list(&kind.info().key_prefix(None)).await?;
        let left = rest.len();
        if left > 0 {
            tracing::info!(
                crd = crd.metadata.name.as_deref().unwrap_or(""),
                left,
                "waiting for custom resources to be deleted"
            );
            return Ok(());
        }
        let mut done = crd.clone();
        if let Some(f) = done.metadata.finalizers.as_mut() {
            f.retain(|f| f != CLEANUP_FINALIZER);
        }
        let name = done.metadata.name.clone().unwrap_or_default();
        let key = self.crd_kind().info().key(None, &name);
        if done
            .metadata
            .finalizers
            .as_ref()
            .is_none_or(|f| f.is_empty())
        {
            match self.store.delete(&key, Some(rev)).await {
                Ok(_) | Err(StorageError::NotFound { .. }) => Ok(()),
                Err(e) => Err(ApiError::from_storage(
                    self.crd_kind().info().subject(),
                    &name,
                    e,
                )),
            }
        } else {
            self.write_crd(&done, rev).await.map(|_| ())
        }
    }

    /// Serves the stored CRDs now, and follows their changes from then on.
    pub async fn start_custom_resources(self: &Arc<Self>) -> ApiResult<()> {
        self.sync_custom_resources().await?;
        let api = self.clone();
        tokio::spawn(async move {
            let prefix = api.crd_kind().info().key_prefix(None);
            loop {
                let rev = match api.store.current_revision().await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!("custom resources: {e}");
                        tokio::time::sleep(RESYNC).await;
                        continue;
                    }
                };
                let mut changes = match api.store.watch(&prefix, rev).await {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::warn!("custom resources: watching CRDs: {e}");
                        tokio::time::sleep(RESYNC).await;
                        continue;
                    }
                };
                loop {
                    let next = tokio::time::timeout(RESYNC, changes.next()).await;
                    if let Err(e) = api.sync_custom_resources().await {
                        tracing::warn!("custom resources: {}", e.message);
                    }
                    match next {
                        Ok(Some(Ok(_))) | Err(_) => {}
                        // The feed ended or fell behind: watch again.
                        Ok(None) | Ok(Some(Err(_))) => break,
                    }
                }
            }
        });
        Ok(())
    }
}
