//! `pods/{name}/eviction`: a policy/v1 `Eviction` is a graceful delete of
//! the pod with the Eviction's `deleteOptions`, what `kubectl drain` posts.
//! The real apiserver answers 429 when a PodDisruptionBudget forbids the
//! eviction; this server has no budgets, so every eviction of an existing
//! pod goes through.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::{Api, ApiResult, Params, json_response, object};
use crate::status::ApiError;

/// The delete options an Eviction carries, checked against the URL's pod.
pub fn delete_options(name: &str, eviction: &Value) -> ApiResult<Value> {
    if !eviction.is_object() {
        return Err(ApiError::bad_request("the body must be an Eviction object"));
    }
    match eviction.get("kind").and_then(Value::as_str) {
        None | Some("" | "Eviction") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({other}) does not match the expected kind (Eviction)"
            )));
        }
    }
    match eviction.get("apiVersion").and_then(Value::as_str) {
        None | Some("" | "policy/v1" | "policy/v1beta1") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({other}) does not match the expected API version (policy/v1)"
            )));
        }
    }
    if let Some(body_name) = object::meta_str(eviction, "name")
        && body_name != name
    {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    Ok(eviction
        .get("deleteOptions")
        .cloned()
        .unwrap_or(Value::Null))
}

impl Api {
    pub(super) async fn evict(
        &self,
        ns: &str,
        name: &str,
        eviction: &Value,
        params: &Params,
    ) -> ApiResult<Response> {
        let opts = delete_options(name, eviction)?;
        let mut params = params.clone();
        let dry_run = opts["dryRun"]
            .as_array()
            .is_some_and(|d| d.iter().any(|v| v == "All"));
        if dry_run {
            params.insert("dryRun".into(), "All".into());
        }
        let pods = self.kind("", "v1", "pods");
        self.delete(pods.as_ref(), Some(ns), name, &opts, &params)
            .await?;
        tracing::info!(pod = %format!("{ns}/{name}"), "evicted");
        Ok(json_response(
            StatusCode::CREATED,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_eviction_carries_its_delete_options_for_its_own_pod_only() {
        let ev = json!({"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": "web", "namespace": "default"},
            "deleteOptions": {"gracePeriodSeconds": 5}});
        assert_eq!(
            delete_options("web", &ev).unwrap(),
            json!({"gracePeriodSeconds": 5})
        );
        assert_eq!(
            delete_options("other", &ev).unwrap_err().message,
            "name in URL does not match name in Eviction object"
        );
        let wrong = json!({"apiVersion": "v1", "kind": "Pod"});
        assert_eq!(delete_options("web", &wrong).unwrap_err().code, 400);
        assert_eq!(
            delete_options(
                "web",
                &json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "web"}})
            )
            .unwrap(),
            Value::Null
        );
    }
}
