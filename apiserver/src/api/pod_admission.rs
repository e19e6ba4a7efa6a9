//! A new pod's way through admission, on its typed form: decoded once,
//! then NamespaceLifecycle, priority, RuntimeClass, defaults, LimitRanger, ServiceAccount and
//! validation work on the same `Pod`, and it is encoded once. (Each step
//! decoding and re-encoding the JSON cost more than the steps themselves
//! on a burst of creations.) The order is kube-apiserver's plugin order.

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use super::{Api, ApiResult};
use crate::kinds::{KindSpec, ResourceInfo, metadata_errors};
use crate::status::ApiError;

impl Api {
    /// Admits the new pod (its server-set metadata filled in) and returns
    /// it as it is to be stored, with the client's `warnings` and its own.
    pub(super) async fn admit_new_pod(
        &self,
        info: &ResourceInfo,
        mut pod: Pod,
        mut warnings: Vec<String>,
    ) -> ApiResult<(Value, Vec<String>)> {
        // NamespaceLifecycle comes first, as in kube-apiserver's plugin order.
        if let Some(ns) = pod.metadata.namespace.as_deref().filter(|n| !n.is_empty()) {
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            self.require_namespace_exists(info.subject(), name, ns)
                .await?;
        }
        // Admission that reads other objects, before defaults fill the fields.
        self.admit_pod_priority(&mut pod).await?;
        self.admit_pod_runtime_class(&mut pod).await?;
        KindSpec::prepare_create(&mut pod);
        self.admit_pod_limits(&mut pod).await?;
        self.admit_pod_service_account(&mut pod).await?;
        let mut errs = metadata_errors(info, &pod.metadata);
        errs.extend(KindSpec::validate(&pod, None));
        if !errs.is_empty() {
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            return Err(ApiError::invalid(info.subject(), name, &errs));
        }
        let obj = serde_json::to_value(&pod).map_err(|e| ApiError::internal(e.to_string()))?;
        crate::rbac::admission::admit(info, &obj, None, false)?;
        warnings.extend(self.admit_pod_security_of(&pod, None).await?);
        Ok((obj, warnings))
    }
}
