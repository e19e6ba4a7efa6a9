//! The ResourceQuota admission plugin: an object created in a namespace
//! with quotas must fit every quota whose scopes take it in, counting what
//! the namespace already holds; otherwise it is refused in kube-apiserver's
//! words ("exceeded quota: …", "failed quota: …: must specify …"). Usage
//! is counted from the store under one lock per apiserver, so two creates
//! cannot both take the last unit; the resourcequota controller keeps
//! `status.used` for people to read.

use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use kubelab_rules::resource_quota::{self, Usage};
use serde_json::Value;

use super::{Api, ApiResult, object};
use crate::kinds::Kind;
use crate::status::ApiError;

impl Api {
    /// Refuses `obj` when it does not fit its namespace's quotas. The
    /// returned guard serialises quota'd creates until the object is stored.
    pub(super) async fn admit_quota(
        &self,
        kind: &dyn Kind,
        obj: &Value,
    ) -> ApiResult<Option<tokio::sync::MutexGuard<'_, ()>>> {
        let info = kind.info();
        let Some(ns) = object::meta_str(obj, "namespace").filter(|_| info.namespaced) else {
            return Ok(None);
        };
        let quotas_kind = self.kind("", "v1", "resourcequotas");
        let prefix = quotas_kind.info().key_prefix(Some(ns));
        if self.store.list(&prefix).await?.0.is_empty() {
            return Ok(None);
        }
        let guard = self.quota_lock.lock().await;
        let (kvs, _) = self.store.list(&prefix).await?;
        let quotas: Vec<ResourceQuota> = kvs
            .iter()
            .filter_map(|kv| serde_json::from_value(object::decode(kv)).ok())
            .collect();
        let is_pod = info.group.is_empty() && info.plural == "pods";
        let pod: Option<Pod> = if is_pod {
            serde_json::from_value(obj.clone()).ok()
        } else {
            None
        };
        let name = object::name(obj).to_owned();
        let refuse = |why: String| ApiError::forbidden(info.subject(), &name, &why);
        let delta = resource_quota::usage(info.group, info.plural, obj)
            .map_err(|e| refuse(e.to_string()))?;
        let mut existing: Option<Vec<Value>> = None;
        for quota in &quotas {
            if !resource_quota::scopes_match(quota, pod.as_ref()) {
                continue;
            }
            let hard = resource_quota::hard(quota).map_err(|e| refuse(e.to_string()))?;
            if !delta.keys().any(|k| hard.contains_key(k)) {
                continue;
            }
            if existing.is_none() {
                let (kvs, _) = self.store.list(&info.key_prefix(Some(ns))).await?;
                existing = Some(kvs.iter().map(object::decode).collect());
            }
            let mut used = Usage::new();
            for other in existing.iter().flatten() {
                if is_pod {
                    let Ok(p) = serde_json::from_value::<Pod>(other.clone()) else {
                        continue;
                    };
                    if !resource_quota::pod_counts(&p)
                        || !resource_quota::scopes_match(quota, Some(&p))
                    {
                        continue;
                    }
                }
                if let Ok(u) = resource_quota::usage(info.group, info.plural, other) {
                    resource_quota::add(&mut used, &u);
                }
            }
            let quota_name = quota.metadata.name.clone().unwrap_or_default();
            resource_quota::admit(&quota_name, &hard, &used, &delta, pod.as_ref())
                .map_err(refuse)?;
        }
        Ok(Some(guard))
    }
}
