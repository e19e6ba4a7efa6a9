//! Verifies ServiceAccount tokens on use (kube-apiserver's service account
//! token authenticator and `claims.go`'s validator): the signature, issuer,
//! times and audiences, and then that the ServiceAccount, and the pod or
//! secret the token is bound to, still exist with the UIDs it names. A
//! token of a deleted ServiceAccount or pod is refused.

use std::sync::Arc;

use serde_json::Value;

use super::ServiceAccountTokens;
use super::token::{self, Claims, ObjectRef, TokenError};
use crate::auth::UserInfo;
use crate::storage::{Storage, StorageError};

/// How long a deleted bound pod's tokens keep working, as upstream (its
/// containers may still be stopping).
const DELETED_POD_GRACE_SECONDS: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("service account token has been invalidated")]
    Invalidated { why: String },
    #[error("reading the store: {0}")]
    Store(#[from] StorageError),
}

impl VerifyError {
    /// Not a ServiceAccount token of this apiserver: another authenticator
    /// may accept it.
    pub fn is_not_ours(&self) -> bool {
        matches!(self, VerifyError::Token(TokenError::NotOurs))
    }
}

/// Verifies tokens against the keys and the objects in the store.
#[derive(Clone)]
pub struct Authenticator {
    tokens: Arc<ServiceAccountTokens>,
    store: Arc<dyn Storage>,
}

/// The user a verified token authenticates, and the audiences it was
/// accepted for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub user: UserInfo,
    pub audiences: Vec<String>,
    pub claims: Claims,
}

impl Authenticator {
    pub fn new(tokens: Arc<ServiceAccountTokens>, store: Arc<dyn Storage>) -> Self {
        Self { tokens, store }
    }

    /// The user `system:serviceaccount:<ns>:<name>` (groups
    /// `system:serviceaccounts`, `system:serviceaccounts:<ns>`) of a token
    /// meant for this apiserver (`--api-audiences`).
    pub async fn verify(&self, token: &str) -> Result<UserInfo, VerifyError> {
        let audiences = self.tokens.api_audiences.clone();
        Ok(self.verify_for(token, &audiences).await?.user)
    }

    /// As [`Self::verify`], for the given audiences (a TokenReview's;
    /// empty: the apiserver's).
    pub async fn verify_for(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<Verified, VerifyError> {
        let claims = self.tokens.verifier().decode(token, &self.tokens.issuers)?;
        let targets = if audiences.is_empty() {
            &self.tokens.api_audiences[..]
        } else {
            audiences
        };
        let now = jiff::Timestamp::now().as_second();
        let audiences = token::validate(&claims, now, targets)?;
        let k = &claims.kubernetes;
        if let Some(warn_after) = k.warnafter
            && now > warn_after
        {
            tracing::info!(
                user = %claims.subject(),
                "a service account token past its requested lifetime (warnafter) is still in use"
            );
        }
        self.live_object("serviceaccounts", &k.namespace, &k.serviceaccount, now)
            .await
            .map_err(|why| self.invalidated(&claims, why))?;
        if let Some(pod) = &k.pod {
            self.live_object("pods", &k.namespace, pod, now)
                .await
                .map_err(|why| self.invalidated(&claims, why))?;
        }
        if let Some(secret) = &k.secret {
            self.live_object("secrets", &k.namespace, secret, now)
                .await
                .map_err(|why| self.invalidated(&claims, why))?;
        }
        Ok(Verified {
            user: UserInfo {
                name: claims.subject(),
                uid: k.serviceaccount.uid.clone(),
                groups: token::service_account_groups(&k.namespace),
            },
            audiences,
            claims,
        })
    }

    fn invalidated(&self, claims: &Claims, why: String) -> VerifyError {
        tracing::debug!(user = %claims.subject(), "refused a service account token: {why}");
        VerifyError::Invalidated { why }
    }

    /// The object `resource/ns/name` if it exists with the named UID and
    /// is not long deleted; why not otherwise.
    async fn live_object(
        &self,
        resource: &str,
        ns: &str,
        r: &ObjectRef,
        now: i64,
    ) -> Result<Value, String> {
        let key = format!("/registry/{resource}/{ns}/{}", r.name);
        let kv = match self.store.get(&key).await {
            Ok(Some(kv)) => kv,
            Ok(None) => return Err(format!("{resource} {ns}/{} has been deleted", r.name)),
            Err(e) => return Err(format!("reading {resource} {ns}/{}: {e}", r.name)),
        };
        let obj: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
        let uid = obj["metadata"]["uid"].as_str().unwrap_or("");
        if !r.uid.is_empty() && uid != r.uid {
            return Err(format!(
                "{resource} {ns}/{} UID ({uid}) does not match claim ({})",
                r.name, r.uid
            ));
        }
        if let Some(deleted) = obj["metadata"]["deletionTimestamp"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            && deleted.as_second() + DELETED_POD_GRACE_SECONDS < now
        {
            return Err(format!(
                "{resource} {ns}/{} is being deleted since {deleted}",
                r.name
            ));
        }
        Ok(obj)
    }
}
