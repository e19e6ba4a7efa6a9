//! `authentication.k8s.io/v1` TokenReview and `authorization.k8s.io/v1`
//! SubjectAccessReview: create-only, never stored; the answer is the
//! request with its `status` filled in (201), as kube-apiserver does. The
//! kubelets' `--authentication-token-webhook` and `--authorization-mode
//! Webhook` ask these.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewStatus, UserInfo};
use k8s_openapi::api::authorization::v1::{SubjectAccessReview, SubjectAccessReviewStatus};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Api, json_response};
use crate::authorizer::{self, Decision};
use crate::status::ApiError;

/// The authenticator adds this group to every user it authenticates.
const AUTHENTICATED_GROUP: &str = "system:authenticated";

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding JSON body: {e}")))
}

fn created<T: Serialize>(v: &T) -> Response {
    match serde_json::to_value(v) {
        Ok(v) => json_response(StatusCode::CREATED, &v),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

fn invalid(kind: &str, group: &str, field: &str, detail: &str) -> ApiError {
    ApiError::new(
        422,
        "Invalid",
        format!("{kind}.{group} \"\" is invalid: {field}: {detail}"),
    )
}

pub async fn token_review(State(api): State<Arc<Api>>, body: Bytes) -> Response {
    let mut review: TokenReview = match decode(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let Some(token) = review.spec.token.clone().filter(|t| !t.is_empty()) else {
        return invalid(
            "TokenReview",
            "authentication.k8s.io",
            "spec.token",
            "Required value",
        )
        .into_response();
    };
    let wanted = review.spec.audiences.clone().unwrap_or_default();
    let (user, audiences, error) = match api.tokens.authenticate(&format!("Bearer {token}")) {
        Some(u) => (Some(u.clone()), review.spec.audiences.clone(), None),
        // A ServiceAccount token is checked for the audiences asked about.
        None => match &api.tokens.service_accounts {
            Some(sa) => match sa.verify_for(&token, &wanted).await {
                Ok(v) => (Some(v.user), Some(v.audiences), None),
                Err(e) if e.is_not_ours() => (None, None, None),
                Err(e) => (None, None, Some(e.to_string())),
            },
            None => (None, None, None),
        },
    };
    review.status = Some(match user {
        Some(u) => {
            let mut groups = u.groups;
            if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
                groups.push(AUTHENTICATED_GROUP.into());
            }
            TokenReviewStatus {
                authenticated: Some(true),
                user: Some(UserInfo {
                    username: Some(u.name),
                    uid: Some(u.uid).filter(|u| !u.is_empty()),
                    groups: Some(groups),
                    extra: None,
                }),
                audiences,
                error: None,
            }
        }
        None => TokenReviewStatus {
            authenticated: Some(false),
            error: Some(match error {
                Some(e) => format!("[invalid bearer token, {e}]"),
                None => "invalid bearer token".into(),
            }),
            ..Default::default()
        },
    });
    created(&review)
}

pub async fn subject_access_review(State(api): State<Arc<Api>>, body: Bytes) -> Response {
    let mut review: SubjectAccessReview = match decode(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let spec = &review.spec;
    if spec.resource_attributes.is_some() == spec.non_resource_attributes.is_some() {
        return invalid(
            "SubjectAccessReview",
            "authorization.k8s.io",
            "spec.resourceAttributes",
            "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )
        .into_response();
    }
    let user = spec.user.clone().unwrap_or_default();
    let groups = spec.groups.clone().unwrap_or_default();
    if user.is_empty() && groups.is_empty() {
        return invalid(
            "SubjectAccessReview",
            "authorization.k8s.io",
            "spec.user",
            "Invalid value: \"\": at least one of user or group must be specified",
        )
        .into_response();
    }
    let decision = authorizer::decide(&user, &groups, &api.kubelet_client_user);
    tracing::debug!(%user, ?decision, "SubjectAccessReview");
    review.status = Some(match decision {
        Decision::Allow { reason } => SubjectAccessReviewStatus {
            allowed: true,
            reason: Some(reason),
            ..Default::default()
        },
        Decision::Deny { reason } => SubjectAccessReviewStatus {
            allowed: false,
            reason: Some(reason),
            ..Default::default()
        },
    });
    created(&review)
}
