//! The kubelet's token manager (`pkg/kubelet/token`): the bound
//! ServiceAccount tokens of `serviceAccountToken` volume projections,
//! requested with the node's own credentials through the TokenRequest API
//! (`POST /api/v1/namespaces/{ns}/serviceaccounts/{sa}/token`), bound to the
//! pod, cached per (pod, ServiceAccount, audiences, lifetime) and requested
//! again once older than 80% of their lifetime or than 24 hours. The pod
//! worker rewrites the projected volume with each new token.
//!
//! When to refresh is pure ([`refresh_due`], [`requires_refresh`]); the
//! [`TokenManager`] holds the cache and talks to the API.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount, ServiceAccountTokenProjection};
use kube::api::PostParams;
use kube::{Api, Client};

/// `ServiceAccountTokenProjection.expirationSeconds`' default.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// A token is requested again once this old, whatever its lifetime.
pub const MAX_TTL: SignedDuration = SignedDuration::from_hours(24);
/// Refreshes are spread over up to this much earlier, so that the tokens of
/// many pods started together are not all requested again at once.
pub const MAX_JITTER: SignedDuration = SignedDuration::from_secs(10);
/// A refresh that failed while the cached token still serves is tried
/// again this much later (the kubelet tries again at its next pod sync).
pub const RETRY_AFTER: SignedDuration = SignedDuration::from_secs(10);

/// Why a projection has no token, worded as the kubelet's token manager.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token was ever had for this projection.
    #[error("failed to fetch token: {0}")]
    Fetch(String),
    /// The cached token expired and a new one could not be had.
    #[error("token {key} expired and refresh failed: {message}")]
    ExpiredRefreshFailed { key: String, message: String },
}

/// One token a pod's projection asks for, and the cache key (the kubelet's
/// `keyFunc`: ServiceAccount, namespace, audiences, lifetime, bound pod).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    pub namespace: String,
    pub service_account: String,
    /// Empty: the apiserver's own audiences.
    pub audiences: Vec<String>,
    pub expiration_seconds: i64,
    pub pod_name: String,
    pub pod_uid: String,
}

impl fmt::Display for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only, never the token: safe to log.
        write!(
            f,
            "{:?}/{:?}/{:?}/{}/Pod {:?} {}",
            self.service_account,
            self.namespace,
            self.audiences,
            self.expiration_seconds,
            self.pod_name,
            self.pod_uid
        )
    }
}

impl TokenKey {
    /// What `projection` of `pod` asks for: a token of the pod's
    /// ServiceAccount for the projection's audience (if any), bound to the pod.
    pub fn for_projection(pod: &Pod, projection: &ServiceAccountTokenProjection) -> Self {
        let spec = pod.spec.as_ref();
        TokenKey {
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            service_account: spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_default(),
            audiences: projection
                .audience
                .iter()
                .filter(|a| !a.is_empty())
                .cloned()
                .collect(),
            expiration_seconds: projection
                .expiration_seconds
                .unwrap_or(DEFAULT_EXPIRATION_SECONDS),
            pod_name: pod.metadata.name.clone().unwrap_or_default(),
            pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
        }
    }

    /// The TokenRequest sent for this key.
    pub fn request(&self) -> TokenRequest {
        TokenRequest {
            spec: TokenRequestSpec {
                audiences: self.audiences.clone(),
                expiration_seconds: Some(self.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(self.pod_name.clone()),
                    uid: Some(self.pod_uid.clone()),
                }),
            },
            ..Default::default()
        }
    }
}

/// Every `serviceAccountToken` projection of the pod's volumes, as keys.
pub fn pod_token_keys(pod: &Pod) -> Vec<TokenKey> {
    let mut keys: Vec<TokenKey> = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .filter_map(|s| s.service_account_token.as_ref())
        .map(|p| TokenKey::for_projection(pod, p))
        .collect();
    keys.dedup();
    keys
}

/// When an issued token is to be requested again (the kubelet's
/// `requiresRefresh`): once older than 80% of the lifetime the apiserver
/// gave it (`spec.expirationSeconds` of the answer) or than [`MAX_TTL`],
/// `jitter` earlier. `None`: the answer tells no lifetime, and the token
/// is kept until it expires.
pub fn refresh_due(issued: &TokenRequest, jitter: SignedDuration) -> Option<Timestamp> {
    let lifetime = issued.spec.expiration_seconds?;
    let expires = issued.status.as_ref()?.expiration_timestamp.0;
    let issued_at = expires - SignedDuration::from_secs(lifetime);
    let by_age = issued_at + MAX_TTL;
    let by_lifetime = expires - SignedDuration::from_secs(lifetime * 20 / 100);
    Some(by_age.min(by_lifetime) - jitter)
}

/// Whether a token due at `due` (see [`refresh_due`]) is to be replaced at `now`.
pub fn requires_refresh(due: Option<Timestamp>, now: Timestamp) -> bool {
    due.is_some_and(|due| now > due)
}

/// Whether the token has expired at `now`.
pub fn expired(issued: &TokenRequest, now: Timestamp) -> bool {
    issued
        .status
        .as_ref()
        .is_none_or(|s| now > s.expiration_timestamp.0)
}

/// A token as the cache holds it.
struct Cached {
    issued: TokenRequest,
    /// [`refresh_due`] with this token's jitter.
    refresh_at: Option<Timestamp>,
    /// A refresh failed: the next one is not tried before this.
    retry_at: Option<Timestamp>,
}

impl Cached {
    /// When this entry wants the API next.
    fn next_request(&self) -> Option<Timestamp> {
        match (self.refresh_at, self.retry_at) {
            (Some(r), Some(retry)) => Some(r.max(retry)),
            (r, None) => r,
            (None, retry) => retry,
        }
    }
}

/// The tokens of one pod's projections, as fetched for one volume write.
#[derive(Debug, Default)]
pub struct PodTokens {
    tokens: HashMap<TokenKey, Result<String, TokenError>>,
}

impl PodTokens {
    /// The token for `key`, or why there is none.
    pub fn get(&self, key: &TokenKey) -> Result<&str, TokenError> {
        match self.tokens.get(key) {
            Some(Ok(token)) => Ok(token),
            Some(Err(e)) => Err(e.clone()),
            None => Err(TokenError::Fetch(format!(
                "no token was requested for {key}"
            ))),
        }
    }

    /// Tokens given by hand (tests of what is written from them).
    pub fn from_tokens(
        tokens: impl IntoIterator<Item = (TokenKey, Result<String, TokenError>)>,
    ) -> Self {
        PodTokens {
            tokens: tokens.into_iter().collect(),
        }
    }
}

/// The node's tokens: asks the API with the node's client and caches.
pub struct TokenManager {
    client: Client,
    cache: Mutex<HashMap<TokenKey, Cached>>,
}

/// The API's message of a failed request (kube's Display repeats the Status).
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

fn jitter() -> SignedDuration {
    SignedDuration::from_secs_f64(fastrand::f64() * MAX_JITTER.as_secs_f64())
}

impl TokenManager {
    pub fn new(client: Client) -> Self {
        TokenManager {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<TokenKey, Cached>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kubelet's `GetServiceAccountToken`: the cached token while it
    /// needs no refresh, else a new one; a failed refresh keeps serving the
    /// cached token until it expires.
    pub async fn get_service_account_token(&self, key: &TokenKey) -> Result<String, TokenError> {
        let now = Timestamp::now();
        let cached = {
            let cache = self.cache();
            cache.get(key).map(|c| {
                let wait = !requires_refresh(c.next_request(), now);
                (c.issued.clone(), wait)
            })
        };
        if let Some((issued, true)) = &cached
            && let Some(status) = &issued.status
        {
            return Ok(status.token.clone());
        }
        let answer = if key.service_account.is_empty() {
            // What client-go answers before sending anything.
            Err("resource name may not be empty".to_string())
        } else {
            let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &key.namespace);
            api.create_token_request(&key.service_account, &PostParams::default(), &key.request())
                .await
                .map_err(|e| api_message(&e))
        };
        match (answer, cached) {
            (Ok(issued), _) if issued.status.is_some() => {
                let token = issued.status.as_ref().map(|s| s.token.clone());
                tracing::info!(token = %key, "service account token issued");
                self.cache().insert(
                    key.clone(),
                    Cached {
                        refresh_at: refresh_due(&issued, jitter()),
                        issued,
                        retry_at: None,
                    },
                );
                Ok(token.unwrap_or_default())
            }
            (answer, cached) => {
                let message = match answer {
                    Ok(_) => "the TokenRequest came back without a token".to_string(),
                    Err(message) => message,
                };
                let Some((issued, _)) = cached else {
                    return Err(TokenError::Fetch(message));
                };
                if let Some(c) = self.cache().get_mut(key) {
                    c.retry_at = Some(now + RETRY_AFTER);
                }
                if expired(&issued, now) {
                    return Err(TokenError::ExpiredRefreshFailed {
                        key: key.to_string(),
                        message,
                    });
                }
                tracing::warn!(token = %key, "couldn't update token: {message}");
                Ok(issued.status.map(|s| s.token).unwrap_or_default())
            }
        }
    }

    /// The tokens of every projection of `pod`. An expired token stays
    /// cached until its pod goes (the kubelet drops it within a minute):
    /// it is what keeps a failing refresh tried every [`RETRY_AFTER`].
    pub async fn pod_tokens(&self, pod: &Pod) -> PodTokens {
        let mut tokens = HashMap::new();
        for key in pod_token_keys(pod) {
            let token = self.get_service_account_token(&key).await;
            tokens.insert(key, token);
        }
        PodTokens { tokens }
    }

    /// When the pod's tokens next want the API (a refresh or a retry).
    pub fn next_refresh(&self, pod_uid: &str) -> Option<Timestamp> {
        self.cache()
            .iter()
            .filter(|(k, _)| k.pod_uid == pod_uid)
            .filter_map(|(_, c)| c.next_request())
            .min()
    }

    /// The kubelet's `DeleteServiceAccountToken`: the pod is gone, so are
    /// its tokens.
    pub fn delete_service_account_token(&self, pod_uid: &str) {
        self.cache().retain(|k, _| k.pod_uid != pod_uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::TokenRequestStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn issued(lifetime: Option<i64>, expires: &str) -> TokenRequest {
        TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: lifetime,
                ..Default::default()
            },
            status: Some(TokenRequestStatus {
                token: "t".into(),
                expiration_timestamp: Time(ts(expires)),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_token_is_refreshed_after_80_percent_of_its_lifetime() {
        // One hour, issued at 10:00: due at 10:48.
        let t = issued(Some(3600), "2026-01-01T11:00:00Z");
        let due = refresh_due(&t, SignedDuration::ZERO);
        assert_eq!(due, Some(ts("2026-01-01T10:48:00Z")));
        assert!(!requires_refresh(due, ts("2026-01-01T10:47:59Z")));
        assert!(!requires_refresh(due, ts("2026-01-01T10:48:00Z")));
        assert!(requires_refresh(due, ts("2026-01-01T10:48:01Z")));
        // The jitter makes it due earlier, never later.
        assert_eq!(
            refresh_due(&t, SignedDuration::from_secs(10)),
            Some(ts("2026-01-01T10:47:50Z"))
        );
        // A 30 s token (a capped lifetime) is due after 24 s.
        let short = issued(Some(30), "2026-01-01T10:00:30Z");
        assert_eq!(
            refresh_due(&short, SignedDuration::ZERO),
            Some(ts("2026-01-01T10:00:24Z"))
        );
    }

    #[test]
    fn a_token_is_refreshed_after_24_hours_whatever_its_lifetime() {
        // Ten days, issued 2026-01-01T00:00: 80% is day 8, 24 h comes first.
        let t = issued(Some(10 * 86400), "2026-01-11T00:00:00Z");
        assert_eq!(
            refresh_due(&t, SignedDuration::ZERO),
            Some(ts("2026-01-02T00:00:00Z"))
        );
        assert_eq!(
            refresh_due(&t, SignedDuration::from_secs(4)),
            Some(ts("2026-01-01T23:59:56Z"))
        );
    }

    #[test]
    fn an_answer_without_a_lifetime_is_kept_until_it_expires() {
        let t = issued(None, "2026-01-01T11:00:00Z");
        let due = refresh_due(&t, SignedDuration::ZERO);
        assert_eq!(due, None);
        assert!(!requires_refresh(due, ts("2026-01-01T12:00:00Z")));
        assert!(!expired(&t, ts("2026-01-01T11:00:00Z")));
        assert!(expired(&t, ts("2026-01-01T11:00:01Z")));
    }

    #[test]
    fn a_failed_refresh_waits_before_the_next_try() {
        let c = Cached {
            issued: issued(Some(3600), "2026-01-01T11:00:00Z"),
            refresh_at: Some(ts("2026-01-01T10:48:00Z")),
            retry_at: Some(ts("2026-01-01T10:50:10Z")),
        };
        assert_eq!(c.next_request(), Some(ts("2026-01-01T10:50:10Z")));
        assert!(!requires_refresh(
            c.next_request(),
            ts("2026-01-01T10:50:00Z")
        ));
        assert!(requires_refresh(
            c.next_request(),
            ts("2026-01-01T10:50:11Z")
        ));
    }

    #[test]
    fn projections_ask_for_the_pods_service_account_bound_to_the_pod() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1"},
            "spec": {"serviceAccountName": "reader", "containers": [],
                "volumes": [{"name": "kube-api-access-x", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                    {"serviceAccountToken": {"path": "vault", "audience": "vault"}}]}}]}
        }))
        .unwrap();
        let keys = pod_token_keys(&pod);
        assert_eq!(keys.len(), 2);
        assert_eq!(
            keys[0],
            TokenKey {
                namespace: "shop".into(),
                service_account: "reader".into(),
                audiences: vec![],
                expiration_seconds: 3607,
                pod_name: "web".into(),
                pod_uid: "u-1".into(),
            }
        );
        assert_eq!(keys[1].audiences, ["vault"]);
        assert_eq!(keys[1].expiration_seconds, DEFAULT_EXPIRATION_SECONDS);
        let req = serde_json::to_value(keys[1].request()).unwrap();
        assert_eq!(
            req["spec"],
            serde_json::json!({"audiences": ["vault"], "expirationSeconds": 3600,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": "u-1"}})
        );
        assert_eq!(
            keys[0].to_string(),
            r#""reader"/"shop"/[]/3607/Pod "web" u-1"#
        );
    }
}
