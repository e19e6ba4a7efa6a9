//! The `scale` subresource (`autoscaling/v1` Scale) of Deployments,
//! ReplicaSets and ReplicationControllers: a view of `spec.replicas`,
//! `status.replicas` and the selector, as `kubectl scale` and autoscalers
//! read and write it.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::Response;
use k8s_openapi::api::autoscaling::v1::{Scale, ScaleSpec, ScaleStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde_json::Value;

use super::{Api, ApiResult, json_response, object, patch};
use crate::kinds::Kind;
use crate::status::{ApiError, FieldError, Subject};
use crate::storage::StorageError;

const SCALE: Subject<'static> = Subject {
    group: "autoscaling",
    plural: "scale",
    kind: "Scale",
};

/// `status.selector`: the label selector in query form. A
/// ReplicationController's selector is a plain map.
fn selector_string(kind: &dyn Kind, obj: &Value) -> String {
    let sel = &obj["spec"]["selector"];
    if kind.info().kind == "ReplicationController" {
        let map: BTreeMap<String, String> = serde_json::from_value(sel.clone()).unwrap_or_default();
        return map
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
    }
    let sel: LabelSelector = serde_json::from_value(sel.clone()).unwrap_or_default();
    kubelab_rules::selector::selector_string(&sel)
}

/// `spec.replicas`, `status.replicas` and the selector of an object: a
/// custom resource's are where its CRD's scale subresource points.
fn replicas_and_selector(kind: &dyn Kind, obj: &Value) -> (Option<i32>, i32, String) {
    if let Some(paths) = kind.custom().and_then(|c| c.scale()) {
        use crate::kinds::custom_resource::get_path;
        let int = |p: &str| get_path(obj, p).and_then(Value::as_i64).map(|r| r as i32);
        let selector = paths
            .label_selector_path
            .as_deref()
            .and_then(|p| get_path(obj, p))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        return (
            Some(int(&paths.spec_replicas_path).unwrap_or(0)),
            int(&paths.status_replicas_path).unwrap_or(0),
            selector,
        );
    }
    (
        obj["spec"]["replicas"].as_i64().map(|r| r as i32),
        obj["status"]["replicas"].as_i64().unwrap_or(0) as i32,
        selector_string(kind, obj),
    )
}

/// The Scale an object presents.
pub fn scale_of(kind: &dyn Kind, obj: &Value) -> Value {
    let (spec_replicas, status_replicas, selector) = replicas_and_selector(kind, obj);
    let m = object::meta(obj);
    let text = |f: &str| m.get(f).and_then(Value::as_str).map(str::to_owned);
    let scale = Scale {
        metadata: ObjectMeta {
            name: text("name"),
            namespace: text("namespace"),
            uid: text("uid"),
            resource_version: text("resourceVersion"),
            creation_timestamp: serde_json::from_value(m["creationTimestamp"].clone()).ok(),
            ..Default::default()
        },
        spec: Some(ScaleSpec {
            replicas: spec_replicas,
        }),
        status: Some(ScaleStatus {
            replicas: status_replicas,
            selector: Some(selector),
        }),
    };
    let mut v = serde_json::to_value(scale).expect("Scale serializes");
    v["apiVersion"] = "autoscaling/v1".into();
    v["kind"] = "Scale".into();
    v
}

impl Api {
    pub(super) async fn get_scale(
        &self,
        kind: &dyn Kind,
        ns: Option<&str>,
        name: &str,
    ) -> ApiResult<Response> {
        let obj = self.get(kind, ns, name).await?;
        Ok(json_response(StatusCode::OK, &scale_of(kind, &obj)))
    }

    /// Sets `spec.replicas` from a Scale; the Scale's `resourceVersion`,
    /// when given, is a precondition on the object.
    pub(super) async fn update_scale(
        &self,
        kind: &dyn Kind,
        ns: Option<&str>,
        name: &str,
        scale: Value,
    ) -> ApiResult<Response> {
        let info = kind.info();
        let replicas = match &scale["spec"]["replicas"] {
            Value::Null => 0,
            v => v.as_i64().ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Scale in version \"v1\" cannot be handled as a Scale: spec.replicas: {v} is not an integer"
                ))
            })?,
        };
        if replicas < 0 {
            return Err(ApiError::invalid(
                SCALE,
                name,
                &[FieldError::invalid_raw(
                    "spec.replicas",
                    replicas.to_string(),
                    "must be greater than or equal to 0",
                )],
            ));
        }
        let pinned = object::resource_version(&scale);
        let key = info.key(ns, name);
        for _attempt in 0..8 {
            let Some(current) = self.store.get(&key).await? else {
                return Err(ApiError::not_found(info.subject(), name));
            };
            if pinned.is_some_and(|rv| rv != current.mod_revision) {
                return Err(ApiError::stale(info.subject(), name));
            }
            let old = object::decode(&current);
            let mut obj = old.clone();
            match kind.custom().and_then(|c| c.scale()) {
                Some(paths) => crate::kinds::custom_resource::set_path(
                    &mut obj,
                    &paths.spec_replicas_path,
                    replicas.into(),
                ),
                None => obj["spec"]["replicas"] = replicas.into(),
            }
            let mut new = self.prepare_update(kind, &old, obj, false)?;
            match self
                .store_update(kind, &old, &mut new, current.mod_revision)
                .await
            {
                Ok(()) => return Ok(json_response(StatusCode::OK, &scale_of(kind, &new))),
                Err(StorageError::Conflict { .. }) if pinned.is_none() => continue,
                Err(e) => return Err(ApiError::from_storage(info.subject(), name, e)),
            }
        }
        Err(ApiError::stale(info.subject(), name))
    }

    /// Patches the Scale view (JSON, merge or strategic merge patch), then
    /// writes it as [`Api::update_scale`] does.
    pub(super) async fn patch_scale(
        &self,
        kind: &dyn Kind,
        ns: Option<&str>,
        name: &str,
        content_type: &str,
        body: &[u8],
    ) -> ApiResult<Response> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        let p: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
        let obj = self.get(kind, ns, name).await?;
        let current = scale_of(kind, &obj);
        let pinned = object::meta_str(&p, "resourceVersion").is_some();
        let mut patched = match media {
            "application/json-patch+json" => patch::json_patch(&current, &p)
                .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?,
            "application/merge-patch+json" => patch::merge_patch(&current, &p),
            "application/strategic-merge-patch+json" => patch::strategic_merge(
                &current,
                &p,
                crate::patch_metadata::Node::definition("io.k8s.api.autoscaling.v1.Scale"),
            ),
            other => {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"
                    ),
                ));
            }
        };
        if !pinned {
            object::meta_mut(&mut patched).remove("resourceVersion");
        }
        self.update_scale(kind, ns, name, patched).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::Registry;
    use serde_json::json;

    #[test]
    fn scale_shows_replicas_and_selector() {
        let r = Registry::default();
        let rs = r.find("apps", "v1", "replicasets").unwrap();
        let obj = json!({"metadata": {"name": "web", "namespace": "default", "resourceVersion": "7", "uid": "u"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe"]}]}},
            "status": {"replicas": 2}});
        let s = scale_of(rs.as_ref(), &obj);
        assert_eq!(s["apiVersion"], "autoscaling/v1");
        assert_eq!(s["spec"]["replicas"], 3);
        assert_eq!(s["status"]["replicas"], 2);
        assert_eq!(s["status"]["selector"], "app=web,tier in (fe)");
        assert_eq!(s["metadata"]["resourceVersion"], "7");
        let rc = r.find("", "v1", "replicationcontrollers").unwrap();
        let obj = json!({"metadata": {"name": "web"}, "spec": {"replicas": 1, "selector": {"b": "2", "a": "1"}}});
        assert_eq!(scale_of(rc.as_ref(), &obj)["status"]["selector"], "a=1,b=2");
    }
}
