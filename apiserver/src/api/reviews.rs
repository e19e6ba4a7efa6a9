//! `authentication.k8s.io/v1` TokenReview and SelfSubjectReview,
//! `authorization.k8s.io/v1` SubjectAccessReview, LocalSubjectAccessReview,
//! SelfSubjectAccessReview and SelfSubjectRulesReview: create-only, never
//! stored; the answer is the request with its `status` filled in (201), as
//! kube-apiserver does. The kubelets' `--authentication-token-webhook` and
//! `--authorization-mode Webhook` ask these; `kubectl auth can-i` and
//! `kubectl auth whoami` too.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{
    SelfSubjectReview, SelfSubjectReviewStatus, TokenReview, TokenReviewStatus, UserInfo,
};
use k8s_openapi::api::authorization::v1::{
    LocalSubjectAccessReview, NonResourceAttributes, NonResourceRule, ResourceAttributes,
    ResourceRule, SelfSubjectAccessReview, SelfSubjectRulesReview, SubjectAccessReview,
    SubjectAccessReviewStatus, SubjectRulesReviewStatus,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::discovery::{self, discovery_response};
use super::{Api, json_response};
use crate::auth::UserInfo as AuthUser;
use crate::authorizer::Decision;
use crate::rbac::attributes::Attributes;
use crate::status::ApiError;

use crate::auth::AUTHENTICATED_GROUP;

/// The review in the body: JSON, YAML or protobuf (kubectl's typed
/// clients send protobuf).
async fn decode<T: DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> Result<T, ApiError> {
    let v = super::body::decode(headers, body).await?;
    serde_json::from_value(v)
        .map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))
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

/// A review resource as discovery lists it.
struct ReviewResource {
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
}

const fn review(plural: &'static str, kind: &'static str, namespaced: bool) -> ReviewResource {
    ReviewResource {
        plural,
        kind,
        namespaced,
    }
}

/// The review groups (each served at `v1` only) and their resources, by name.
const REVIEW_GROUPS: [(&str, &[ReviewResource]); 2] = [
    (
        "authentication.k8s.io",
        &[
            review("selfsubjectreviews", "SelfSubjectReview", false),
            review("tokenreviews", "TokenReview", false),
        ],
    ),
    (
        "authorization.k8s.io",
        &[
            review(
                "localsubjectaccessreviews",
                "LocalSubjectAccessReview",
                true,
            ),
            review("selfsubjectaccessreviews", "SelfSubjectAccessReview", false),
            review("selfsubjectrulesreviews", "SelfSubjectRulesReview", false),
            review("subjectaccessreviews", "SubjectAccessReview", false),
        ],
    ),
];

const REVIEW_VERSION: &str = "v1";

/// The review groups for `/apis`.
pub fn groups() -> impl Iterator<Item = (&'static str, Vec<&'static str>)> {
    REVIEW_GROUPS
        .iter()
        .map(|(g, _)| (*g, vec![REVIEW_VERSION]))
}

/// `APIResourceList` of a review group: create is their one verb, as
/// kube-apiserver lists them (so `kubectl create -f` finds them).
pub fn resource_list(group: &str) -> Option<Value> {
    let (_, resources) = REVIEW_GROUPS.iter().find(|(g, _)| *g == group)?;
    let resources: Vec<Value> = resources
        .iter()
        .map(|r| {
            json!({"name": r.plural, "singularName": r.kind.to_lowercase(),
                "namespaced": r.namespaced, "kind": r.kind, "verbs": ["create"]})
        })
        .collect();
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": format!("{group}/{REVIEW_VERSION}"), "resources": resources}))
}

/// The review APIs: create-only resources answered at once.
pub fn routes() -> axum::Router<Arc<Api>> {
    use axum::routing::{get, post};
    let mut router = axum::Router::new();
    for (group, _) in REVIEW_GROUPS {
        router = router
            .route(
                &format!("/apis/{group}"),
                get(move || async move {
                    let versions = [REVIEW_VERSION];
                    discovery_response(StatusCode::OK, &discovery::group_document(group, &versions))
                }),
            )
            .route(
                &format!("/apis/{group}/{REVIEW_VERSION}"),
                get(move || async move {
                    let list = resource_list(group).expect("a review group");
                    discovery_response(StatusCode::OK, &list)
                }),
            );
    }
    router
        .route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            post(token_review),
        )
        .route(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            post(self_subject_review),
        )
        .route(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            post(subject_access_review),
        )
        .route(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            post(self_subject_access_review),
        )
        .route(
            "/apis/authorization.k8s.io/v1/namespaces/{namespace}/localsubjectaccessreviews",
            post(local_subject_access_review),
        )
        .route(
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            post(self_subject_rules_review),
        )
}

pub async fn token_review(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut review: TokenReview = match decode(&headers, &body).await {
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

fn access_attributes(
    user: AuthUser,
    resource: Option<&ResourceAttributes>,
    non_resource: Option<&NonResourceAttributes>,
) -> Attributes {
    match (resource, non_resource) {
        (Some(r), _) => Attributes {
            user,
            verb: r.verb.clone().unwrap_or_default(),
            resource_request: true,
            namespace: r.namespace.clone().unwrap_or_default(),
            api_group: r.group.clone().unwrap_or_default(),
            api_version: r.version.clone().unwrap_or_default(),
            resource: r.resource.clone().unwrap_or_default(),
            subresource: r.subresource.clone().unwrap_or_default(),
            name: r.name.clone().unwrap_or_default(),
            path: String::new(),
        },
        (None, n) => Attributes {
            user,
            verb: n.and_then(|n| n.verb.clone()).unwrap_or_default(),
            path: n.and_then(|n| n.path.clone()).unwrap_or_default(),
            ..Default::default()
        },
    }
}

fn access_status(api: &Api, attrs: &Attributes) -> SubjectAccessReviewStatus {
    let decision = api.authorizer.authorize(attrs);
    tracing::debug!(user = %attrs.user.name, verb = %attrs.verb, ?decision, "access review");
    match decision {
        Decision::Allow { reason } => SubjectAccessReviewStatus {
            allowed: true,
            reason: Some(reason).filter(|r| !r.is_empty()),
            ..Default::default()
        },
        Decision::Deny { reason } => SubjectAccessReviewStatus {
            allowed: false,
            reason: Some(reason).filter(|r| !r.is_empty()),
            ..Default::default()
        },
    }
}

const EXACTLY_ONE: &str = "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified";

/// A review asks about a resource or a non-resource URL: exactly one.
fn one_kind_of_attributes(kind: &str, resource: bool, non_resource: bool) -> Result<(), Response> {
    if resource == non_resource {
        return Err(invalid(
            kind,
            "authorization.k8s.io",
            "spec.resourceAttributes",
            EXACTLY_ONE,
        )
        .into_response());
    }
    Ok(())
}

/// `authorization.k8s.io/v1` SubjectAccessReview: may this user do this?
pub async fn subject_access_review(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut review: SubjectAccessReview = match decode(&headers, &body).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let spec = &review.spec;
    if let Err(e) = one_kind_of_attributes(
        "SubjectAccessReview",
        spec.resource_attributes.is_some(),
        spec.non_resource_attributes.is_some(),
    ) {
        return e;
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
    let who = AuthUser {
        name: user,
        uid: spec.uid.clone().unwrap_or_default(),
        groups,
    };
    let attrs = access_attributes(
        who,
        spec.resource_attributes.as_ref(),
        spec.non_resource_attributes.as_ref(),
    );
    review.status = Some(access_status(&api, &attrs));
    created(&review)
}

/// `LocalSubjectAccessReview`: a SubjectAccessReview within one namespace.
pub async fn local_subject_access_review(
    State(api): State<Arc<Api>>,
    Path(namespace): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut review: LocalSubjectAccessReview = match decode(&headers, &body).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let spec = &review.spec;
    let ns_given = spec
        .resource_attributes
        .as_ref()
        .and_then(|r| r.namespace.clone())
        .unwrap_or_default();
    if spec.resource_attributes.is_none() || ns_given != namespace {
        return invalid(
            "LocalSubjectAccessReview",
            "authorization.k8s.io",
            "spec.resourceAttributes.namespace",
            &format!("Invalid value: {ns_given:?}: must match metadata.namespace"),
        )
        .into_response();
    }
    let who = AuthUser {
        name: spec.user.clone().unwrap_or_default(),
        uid: spec.uid.clone().unwrap_or_default(),
        groups: spec.groups.clone().unwrap_or_default(),
    };
    let attrs = access_attributes(who, spec.resource_attributes.as_ref(), None);
    review.status = Some(access_status(&api, &attrs));
    review.metadata.namespace = Some(namespace);
    created(&review)
}

/// `SelfSubjectAccessReview` (`kubectl auth can-i`): may I do this?
pub async fn self_subject_access_review(
    State(api): State<Arc<Api>>,
    user: Option<Extension<AuthUser>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut review: SelfSubjectAccessReview = match decode(&headers, &body).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let spec = &review.spec;
    if let Err(e) = one_kind_of_attributes(
        "SelfSubjectAccessReview",
        spec.resource_attributes.is_some(),
        spec.non_resource_attributes.is_some(),
    ) {
        return e;
    }
    let who = user.map(|u| u.0).unwrap_or_default();
    let attrs = access_attributes(
        who,
        spec.resource_attributes.as_ref(),
        spec.non_resource_attributes.as_ref(),
    );
    review.status = Some(access_status(&api, &attrs));
    created(&review)
}

/// `SelfSubjectRulesReview` (`kubectl auth can-i --list`): what may I do
/// in this namespace?
pub async fn self_subject_rules_review(
    State(api): State<Arc<Api>>,
    user: Option<Extension<AuthUser>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut review: SelfSubjectRulesReview = match decode(&headers, &body).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let namespace = review.spec.namespace.clone().unwrap_or_default();
    if namespace.is_empty() {
        return invalid(
            "SelfSubjectRulesReview",
            "authorization.k8s.io",
            "spec.namespace",
            "Required value",
        )
        .into_response();
    }
    let who = user.map(|u| u.0).unwrap_or_default();
    let (rules, incomplete) = api.authorizer.rules_for(&who, &namespace);
    let (resource, non_resource): (Vec<_>, Vec<_>) = rules.into_iter().partition(|r| {
        r.non_resource_urls
            .as_deref()
            .unwrap_or_default()
            .is_empty()
    });
    review.status = Some(SubjectRulesReviewStatus {
        resource_rules: resource
            .into_iter()
            .map(|r| ResourceRule {
                verbs: r.verbs,
                api_groups: r.api_groups,
                resources: r.resources,
                resource_names: r.resource_names,
            })
            .collect(),
        non_resource_rules: non_resource
            .into_iter()
            .map(|r| NonResourceRule {
                verbs: r.verbs,
                non_resource_urls: r.non_resource_urls,
            })
            .collect(),
        incomplete,
        evaluation_error: None,
    });
    created(&review)
}

/// `SelfSubjectReview` (`kubectl auth whoami`): who am I?
pub async fn self_subject_review(user: Option<Extension<AuthUser>>) -> Response {
    let who = user.map(|u| u.0).unwrap_or_default();
    let review = SelfSubjectReview {
        metadata: Default::default(),
        status: Some(SelfSubjectReviewStatus {
            user_info: Some(UserInfo {
                username: Some(who.name),
                uid: Some(who.uid).filter(|u| !u.is_empty()),
                groups: Some(who.groups),
                extra: None,
            }),
        }),
    };
    created(&review)
}
