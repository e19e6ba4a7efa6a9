//! The LimitRanger admission plugin: a new pod gets the defaults of its
//! namespace's LimitRanges for the requests and limits its containers leave
//! out (noted in the `kubernetes.io/limit-ranger` annotation), then must
//! meet their min, max and limit/request ratios, or is refused in
//! kube-apiserver's words. Only pods created after a LimitRange see it.

use k8s_openapi::api::core::v1::{LimitRange, Pod};
use kubelab_rules::limit_range;

use super::{Api, ApiResult, object};
use crate::status::ApiError;

impl Api {
    pub(super) async fn admit_pod_limits(&self, typed: &mut Pod) -> ApiResult<()> {
        let Some(ns) = typed.metadata.namespace.clone().filter(|n| !n.is_empty()) else {
            return Ok(());
        };
        let kind = self.kind("", "v1", "limitranges");
        let (kvs, _) = self.store.list(&kind.info().key_prefix(Some(&ns))).await?;
        if kvs.is_empty() {
            return Ok(());
        }
        let ranges: Vec<LimitRange> = kvs
            .iter()
            .filter_map(|kv| serde_json::from_value(object::decode(kv)).ok())
            .collect();
        let pods = self.kind("", "v1", "pods");
        let name = typed.metadata.name.clone().unwrap_or_default();
        let note = limit_range::apply_defaults(&ranges, typed);
        let errs = limit_range::violations(&ranges, typed)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        if !errs.is_empty() {
            let why = if errs.len() == 1 {
                errs[0].clone()
            } else {
                format!("[{}]", errs.join(", "))
            };
            return Err(ApiError::forbidden(pods.info().subject(), &name, &why));
        }
        if let Some(note) = note {
            typed
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(limit_range::ANNOTATION.to_owned(), note);
        }
        Ok(())
    }
}
