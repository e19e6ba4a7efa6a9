//! What the Certificates API does beyond the generic verbs: a new
//! CertificateSigningRequest records who asked for it, and the
//! `/approval` subresource, where approvers add `Approved` or `Denied`
//! (`kubectl certificate approve|deny`).

use axum::http::StatusCode;
use axum::response::Response;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use serde_json::Value;

use super::{Api, ApiResult, Output, Params, check_type, object, with_warnings};
use crate::kinds::Kind;
use crate::kinds::certificates::{Subresource, approval_update, validate};
use crate::rbac::admission::{REQUESTER, Requester};
use crate::status::ApiError;

pub(super) const PLURAL: &str = "certificatesigningrequests";

/// `spec.username`, `uid` and `groups` are the requester's, whatever the
/// body said (the strategy cleared them).
pub(super) fn record_requester(csr: &mut Value) {
    let Ok(r) = REQUESTER.try_with(Requester::clone) else {
        return;
    };
    let spec = &mut csr["spec"];
    spec["username"] = r.user.name.into();
    if !r.user.uid.is_empty() {
        spec["uid"] = r.user.uid.into();
    }
    if !r.user.groups.is_empty() {
        spec["groups"] = r.user.groups.into();
    }
}

fn decode(v: &Value) -> ApiResult<CertificateSigningRequest> {
    serde_json::from_value(v.clone()).map_err(|e| ApiError::bad_request(e.to_string()))
}

impl Api {
    /// `PUT .../certificatesigningrequests/{name}/approval`.
    pub(super) async fn update_approval(
        &self,
        kind: &dyn Kind,
        name: &str,
        obj: Value,
        params: &Params,
        out: Output,
    ) -> ApiResult<Response> {
        let info = kind.info();
        let obj = check_type(kind, obj)?;
        if let Some(body_name) = object::meta_str(&obj, "name")
            && body_name != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let key = info.key(None, name);
        let Some(current) = self.store.get(&key).await? else {
            return Err(ApiError::not_found(info.subject(), name));
        };
        let expected = match object::meta_str(&obj, "resourceVersion") {
            Some(rv) => rv
                .parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
            None => current.mod_revision,
        };
        if expected != current.mod_revision {
            return Err(ApiError::stale(info.subject(), name));
        }
        let old_value = kind.from_storage(object::decode(&current));
        let (obj, warnings) = self.decode_strict(kind, obj, params)?;
        let old = decode(&old_value)?;
        let mut new = approval_update(decode(&obj)?, &old, jiff::Timestamp::now());
        // Only the conditions change through this subresource.
        new.metadata = old.metadata.clone();
        let errs = validate(&new, Some(&old), Subresource::Approval);
        if !errs.is_empty() {
            return Err(ApiError::invalid(info.subject(), name, &errs));
        }
        let mut new = serde_json::to_value(&new).map_err(ApiError::internal)?;
        super::managed_fields::record(kind, Some(&old_value), &mut new, params, true);
        self.store_update(kind, &old_value, &mut new, expected)
            .await
            .map_err(|e| ApiError::from_storage(info.subject(), name, e))?;
        Ok(with_warnings(
            self.respond(kind, StatusCode::OK, &new, out),
            &warnings,
        ))
    }
}
