//! The ServiceAccount admission plugin on pod creation: looks the pod's
//! ServiceAccount up (a `default` one a few times, as the serviceaccount
//! controller may not have made it yet) and applies
//! [`crate::serviceaccount::admission`]'s decisions, refusing in
//! kube-apiserver's words.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};

use super::{Api, ApiResult, object};
use crate::serviceaccount::admission::{
    self, DEFAULT_SERVICE_ACCOUNT, is_mirror_pod, service_account_name, validate_mirror_pod,
};
use crate::status::ApiError;

/// Looks for the `default` ServiceAccount this many times before refusing.
const DEFAULT_ACCOUNT_ATTEMPTS: usize = 10;

impl Api {
    pub(super) async fn admit_pod_service_account(&self, typed: &mut Pod) -> ApiResult<()> {
        let pods = self.kind("", "v1", "pods");
        let name = typed.metadata.name.clone().unwrap_or_default();
        let forbidden = |why: String| ApiError::forbidden(pods.info().subject(), &name, &why);
        if is_mirror_pod(typed) {
            return validate_mirror_pod(typed).map_err(|e| forbidden(e.to_string()));
        }
        let ns = typed.metadata.namespace.clone().unwrap_or_default();
        let account_name = service_account_name(typed.spec.as_ref().unwrap_or(&Default::default()));
        let account = self
            .service_account(&ns, &account_name)
            .await
            .map_err(|e| {
                forbidden(format!(
                    "error looking up service account {ns}/{account_name}: {}",
                    e.message
                ))
            })?;
        admission::admit(typed, &account, &object::random_suffix());
        Ok(())
    }

    /// The ServiceAccount `ns/name`, or `serviceaccount "name" not found`.
    async fn service_account(&self, ns: &str, name: &str) -> ApiResult<ServiceAccount> {
        let kind = self.kind("", "v1", "serviceaccounts");
        let key = kind.info().key(Some(ns), name);
        let attempts = if name == DEFAULT_SERVICE_ACCOUNT {
            DEFAULT_ACCOUNT_ATTEMPTS
        } else {
            1
        };
        let pause = Duration::from_millis(100 + fastrand::u64(0..100));
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(pause).await;
            }
            if let Some(kv) = self.store.get(&key).await? {
                return serde_json::from_value(object::decode(&kv))
                    .map_err(|e| ApiError::internal(format!("ServiceAccount {ns}/{name}: {e}")));
            }
        }
        Err(ApiError::new(
            404,
            "NotFound",
            format!("serviceaccount {name:?} not found"),
        ))
    }
}
