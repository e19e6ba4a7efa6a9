//! `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`: the
//! TokenRequest API (`kubectl create token`), as kube-apiserver's
//! `serviceaccount/storage/token.go` serves it. The answer is the request
//! with its defaults filled in and `status.token`, a JWT bound to the
//! ServiceAccount and optionally to a Pod, Secret or Node.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use super::ServiceAccountTokens;
use super::token::{Claims, KubernetesClaims, ObjectRef};
use crate::api::{Api, json_response};
use crate::rbac::admission::{REQUESTER, check_node_token_request};
use crate::rbac::node::node_name;
use crate::status::{ApiError, FieldError, Subject};

/// TokenRequestSpec's default lifetime.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// What the kubelet asks for by default; such pod-bound tokens get the
/// year-long extension.
pub const WARN_ONLY_EXPIRATION_SECONDS: i64 = 3607;
const EXTENDED_EXPIRATION_SECONDS: i64 = 365 * 24 * 60 * 60;
const MIN_EXPIRATION_SECONDS: i64 = 10 * 60;
const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;

fn invalid(name: &str, errs: &[FieldError]) -> ApiError {
    let mut e = ApiError::invalid(
        Subject {
            group: "authentication.k8s.io",
            plural: "tokenrequests",
            kind: "TokenRequest.authentication.k8s.io",
        },
        name,
        errs,
    );
    if let Some(d) = e.details.as_mut() {
        d.kind = Some("TokenRequest".into());
    }
    e
}

/// `ValidateTokenRequest`.
fn validate(name: &str, req: &TokenRequest) -> Result<(), ApiError> {
    let mut errs = Vec::new();
    let secs = req
        .spec
        .expiration_seconds
        .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
    if secs < MIN_EXPIRATION_SECONDS {
        errs.push(FieldError::invalid_raw(
            "spec.expirationSeconds",
            secs.to_string(),
            "may not specify a duration less than 10 minutes",
        ));
    }
    if secs > MAX_EXPIRATION_SECONDS {
        errs.push(FieldError::invalid_raw(
            "spec.expirationSeconds",
            secs.to_string(),
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(invalid(name, &errs))
    }
}

/// The lifetime a token gets and, when extended, when it would have
/// expired (`warnafter`): the cap of `--service-account-max-token-expiration`,
/// then the year-long extension of a pod-bound token asked for with the
/// kubelet's default lifetime and meant for this API.
pub fn lifetime(
    requested: i64,
    bound_to_pod: bool,
    audiences: &[String],
    tokens: &ServiceAccountTokens,
) -> (i64, Option<i64>) {
    let mut secs = requested;
    if let Some(max) = tokens.max_expiration_seconds.filter(|m| *m > 0)
        && secs > max
    {
        secs = max;
    }
    let for_this_api = audiences.iter().all(|a| tokens.api_audiences.contains(a));
    if tokens.extend_expiration
        && bound_to_pod
        && secs == WARN_ONLY_EXPIRATION_SECONDS
        && for_this_api
    {
        return (EXTENDED_EXPIRATION_SECONDS, Some(secs));
    }
    (secs, None)
}

fn uid_of(obj: &Value) -> String {
    obj["metadata"]["uid"].as_str().unwrap_or("").to_owned()
}

async fn get(api: &Api, plural: &str, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
    let kind = api
        .registry
        .find("", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))?;
    api.get(kind.as_ref(), ns, name).await
}

/// What the token is bound to: the `kubernetes.io` claim's pod, secret and
/// node, checked as upstream checks them.
async fn bound_objects(
    api: &Api,
    ns: &str,
    sa_name: &str,
    req: &TokenRequest,
    claims: &mut KubernetesClaims,
) -> Result<(), ApiError> {
    let Some(r) = &req.spec.bound_object_ref else {
        return Ok(());
    };
    let api_version = r.api_version.as_deref().unwrap_or("");
    let kind = r.kind.as_deref().unwrap_or("");
    let name = r.name.as_deref().unwrap_or("");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let obj = match (group, kind) {
        ("", "Pod") => {
            let pod = get(api, "pods", Some(ns), name).await?;
            if pod["spec"]["serviceAccountName"].as_str().unwrap_or("") != sa_name {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {sa_name:?} to pod running with different serviceaccount name."
                )));
            }
            claims.pod = Some(ObjectRef {
                name: name.to_owned(),
                uid: uid_of(&pod),
            });
            // The node the pod runs on, so a node's tokens can be told apart.
            if let Some(node_name) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
                let uid = get(api, "nodes", None, node_name)
                    .await
                    .map(|n| uid_of(&n))
                    .unwrap_or_default();
                claims.node = Some(ObjectRef {
                    name: node_name.to_owned(),
                    uid,
                });
            }
            pod
        }
        ("", "Secret") => {
            let secret = get(api, "secrets", Some(ns), name).await?;
            claims.secret = Some(ObjectRef {
                name: name.to_owned(),
                uid: uid_of(&secret),
            });
            secret
        }
        ("", "Node") => {
            let node = get(api, "nodes", None, name).await?;
            claims.node = Some(ObjectRef {
                name: name.to_owned(),
                uid: uid_of(&node),
            });
            node
        }
        _ => {
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {group}/{version}, Kind={kind}"
            )));
        }
    };
    if let Some(want) = r.uid.as_deref().filter(|u| !u.is_empty())
        && uid_of(&obj) != want
    {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {kind} {name:?}: the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
            ),
        ));
    }
    Ok(())
}

/// NodeRestriction: a node's credentials get tokens only bound to the
/// pods that run on it.
async fn admit_node(api: &Api, ns: &str, name: &str, req: &TokenRequest) -> Result<(), ApiError> {
    let Some(node) = REQUESTER
        .try_with(|r| node_name(&r.user).map(str::to_owned))
        .ok()
        .flatten()
    else {
        return Ok(());
    };
    let pod_name = req
        .spec
        .bound_object_ref
        .as_ref()
        .filter(|r| r.kind.as_deref() == Some("Pod"))
        .and_then(|r| r.name.as_deref())
        .filter(|n| !n.is_empty());
    let pod = match pod_name {
        Some(p) => match get(api, "pods", Some(ns), p).await {
            Ok(pod) => Some(pod),
            Err(e) if e.code == 404 => None,
            Err(e) => return Err(e),
        },
        None => None,
    };
    check_node_token_request(&node, name, req, pod.as_ref())
}

/// Issues a token for `ns/name` as `req` asks; the request comes back
/// defaulted, with the token in its status.
pub async fn issue(
    api: &Api,
    ns: &str,
    name: &str,
    mut req: TokenRequest,
) -> Result<TokenRequest, ApiError> {
    let tokens = &api.service_account_tokens;
    validate(name, &req)?;
    admit_node(api, ns, name, &req).await?;
    let sa = get(api, "serviceaccounts", Some(ns), name).await?;
    let audiences = if req.spec.audiences.is_empty() {
        tokens.api_audiences.clone()
    } else {
        req.spec.audiences.clone()
    };
    req.spec.audiences = audiences.clone();
    let requested = req
        .spec
        .expiration_seconds
        .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
    let mut k = KubernetesClaims {
        namespace: ns.to_owned(),
        serviceaccount: ObjectRef {
            name: name.to_owned(),
            uid: uid_of(&sa),
        },
        ..Default::default()
    };
    bound_objects(api, ns, name, &req, &mut k).await?;
    let (lifetime, warn_after) = lifetime(requested, k.pod.is_some(), &audiences, tokens);
    let now = jiff::Timestamp::now().as_second();
    k.warnafter = warn_after.map(|w| now + w);
    let claims = Claims {
        issuer: tokens.issuer().to_owned(),
        audiences,
        issued_at: now,
        not_before: now,
        expires_at: now + lifetime,
        id: uuid::Uuid::new_v4().to_string(),
        kubernetes: k,
    };
    let token = tokens.signer().sign(&claims).map_err(ApiError::internal)?;
    // The status tells the lifetime asked for (after the cap), not the extension.
    let shown = warn_after.unwrap_or(lifetime);
    req.spec.expiration_seconds = Some(shown);
    let expires = jiff::Timestamp::from_second(now + shown).map_err(ApiError::internal)?;
    req.status = Some(TokenRequestStatus {
        token,
        expiration_timestamp: Time(expires),
    });
    req.metadata.name.get_or_insert_with(|| name.to_owned());
    req.metadata.namespace = Some(ns.to_owned());
    req.metadata.creation_timestamp = None;
    tracing::info!(
        user = %claims.subject(),
        bound_to = ?claims.kubernetes.pod.as_ref().map(|p| &p.name),
        "issued a service account token"
    );
    Ok(req)
}

pub async fn create_token(
    State(api): State<Arc<Api>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // kubectl sends protobuf; other clients JSON.
    let req = match crate::api::body::decode(&headers, &body).await {
        Ok(mut v) => {
            // The status is the server's to fill. Go clients send an empty
            // one, whose zero `expirationTimestamp` JSON cannot hold.
            if let Some(o) = v.as_object_mut() {
                o.remove("status");
            }
            serde_json::from_value::<TokenRequest>(v)
        }
        .map_err(|e| {
            ApiError::bad_request(format!(
                "TokenRequest in version \"v1\" cannot be handled as a TokenRequest: {e}"
            ))
        }),
        Err(e) => Err(e),
    };
    let req = match req {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match issue(&api, &ns, &name, req).await {
        Ok(out) => match serde_json::to_value(&out) {
            Ok(v) => json_response(StatusCode::CREATED, &v),
            Err(e) => ApiError::internal(e).into_response(),
        },
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_capped_and_the_kubelets_default_extended() {
        let mut t = ServiceAccountTokens::ephemeral().unwrap();
        let api = t.api_audiences.clone();
        assert_eq!(lifetime(3600, true, &api, &t), (3600, None));
        // The kubelet's 3607 s on a pod-bound token for this API: a year,
        // with warnafter at the lifetime asked for.
        assert_eq!(
            lifetime(3607, true, &api, &t),
            (EXTENDED_EXPIRATION_SECONDS, Some(3607))
        );
        assert_eq!(lifetime(3607, false, &api, &t), (3607, None));
        assert_eq!(lifetime(3607, true, &["vault".into()], &t), (3607, None));
        t.max_expiration_seconds = Some(1800);
        assert_eq!(lifetime(7200, false, &api, &t), (1800, None));
        t.extend_expiration = false;
        assert_eq!(lifetime(3607, true, &api, &t), (1800, None));
    }

    #[test]
    fn short_and_huge_lifetimes_are_invalid_with_upstreams_words() {
        let mut req = TokenRequest::default();
        req.spec.expiration_seconds = Some(60);
        let e = validate("default", &req).unwrap_err();
        assert_eq!(
            e.message,
            "TokenRequest.authentication.k8s.io \"default\" is invalid: spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"
        );
        req.spec.expiration_seconds = Some(1 << 33);
        assert!(
            validate("default", &req)
                .unwrap_err()
                .message
                .ends_with("may not specify a duration larger than 2^32 seconds")
        );
        req.spec.expiration_seconds = None;
        assert!(validate("default", &req).is_ok());
    }
}
