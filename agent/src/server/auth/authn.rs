//! Who a request comes from (kubelet's delegating authenticator): a client
//! certificate the `--client-ca-file` verified (user from CN, groups from O),
//! else a bearer token the apiserver vouches for in a TokenReview
//! (`--authentication-token-webhook`, answers cached for `cacheTTL`), else
//! `system:anonymous` when `--anonymous-auth` allows it. An invalid token is
//! refused even when anonymous requests are allowed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use sha2::{Digest, Sha256};

use super::UserInfo;

pub const ANONYMOUS_USER: &str = "system:anonymous";
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    #[error("the bearer token is not valid")]
    InvalidToken,
    #[error("a bearer token was given but token authentication is not enabled")]
    TokenAuthDisabled,
    #[error("TokenReview at the apiserver: {0}")]
    Webhook(#[from] kube::Error),
}

/// The user a verified client certificate names: CN, and each O as a group.
pub fn user_from_certificate(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    Some(UserInfo {
        name,
        uid: String::new(),
        groups,
    })
}

/// `Authorization: Bearer <token>`'s token, as the apiserver's bearer token
/// authenticator reads it.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Bearer tokens checked by the apiserver's TokenReview, with kubelet's
/// cache (success and failure alike, keyed by the token's hash).
pub struct TokenWebhook {
    client: kube::Client,
    ttl: Duration,
    cache: Mutex<HashMap<[u8; 32], (Instant, Option<UserInfo>)>>,
}

impl TokenWebhook {
    pub fn new(client: kube::Client, ttl: Duration) -> Self {
        Self {
            client,
            ttl,
            cache: Mutex::default(),
        }
    }

    fn cached(&self, key: &[u8; 32]) -> Option<Option<UserInfo>> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, user)| user.clone())
    }

    /// The token's user, or `None` when the apiserver says it is not valid.
    pub async fn authenticate(&self, token: &str) -> Result<Option<UserInfo>, kube::Error> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.cached(&key) {
            return Ok(hit);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: None,
            },
            ..Default::default()
        };
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        let answer = api.create(&PostParams::default(), &review).await?;
        let status = answer.status.unwrap_or_default();
        let user = match (status.authenticated, status.user) {
            (Some(true), Some(u)) => Some(UserInfo {
                name: u.username.unwrap_or_default(),
                uid: u.uid.unwrap_or_default(),
                groups: u.groups.unwrap_or_default(),
            }),
            _ => None,
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let ttl = self.ttl;
        cache.retain(|_, (at, _)| at.elapsed() < ttl);
        cache.insert(key, (Instant::now(), user.clone()));
        Ok(user)
    }
}

/// The agent's authenticator, configured from flags.
pub struct Authenticator {
    /// Set when `--client-ca-file` is: the TLS layer verified the
    /// certificate against it before the user reaches here.
    pub x509: bool,
    pub token_webhook: Option<TokenWebhook>,
    pub anonymous: bool,
}

impl Authenticator {
    /// `client_cert_user`: the user of the certificate the TLS handshake
    /// verified; `authorization`: the request's Authorization header.
    pub async fn authenticate(
        &self,
        client_cert_user: Option<&UserInfo>,
        authorization: Option<&str>,
    ) -> Result<Option<UserInfo>, AuthnError> {
        if self.x509
            && let Some(user) = client_cert_user
        {
            return Ok(Some(with_authenticated_group(user.clone())));
        }
        if let Some(token) = authorization.and_then(bearer_token) {
            let Some(webhook) = &self.token_webhook else {
                return if self.anonymous {
                    Ok(Some(anonymous()))
                } else {
                    Err(AuthnError::TokenAuthDisabled)
                };
            };
            return match webhook.authenticate(token).await? {
                Some(user) => Ok(Some(with_authenticated_group(user))),
                None => Err(AuthnError::InvalidToken),
            };
        }
        Ok(self.anonymous.then(anonymous))
    }
}

fn anonymous() -> UserInfo {
    UserInfo {
        name: ANONYMOUS_USER.into(),
        uid: String::new(),
        groups: vec![UNAUTHENTICATED_GROUP.into()],
    }
}

/// Every authenticated user is also in `system:authenticated`.
fn with_authenticated_group(mut user: UserInfo) -> UserInfo {
    if !user.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
        user.groups.push(AUTHENTICATED_GROUP.into());
    }
    user
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }

    fn cert(cn: &str, orgs: &[&str]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        for o in orgs {
            dn.push(rcgen::DnType::OrganizationName, *o);
        }
        dn.push(rcgen::DnType::CommonName, cn);
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_certificate_names_its_user_and_groups() {
        let u = user_from_certificate(&cert("kube-apiserver-kubelet-client", &["system:masters"]))
            .unwrap();
        assert_eq!(u.name, "kube-apiserver-kubelet-client");
        assert_eq!(u.groups, ["system:masters"]);
    }

    #[tokio::test]
    async fn without_credentials_only_anonymous_auth_lets_a_request_in() {
        let cert_user = UserInfo {
            name: "alice".into(),
            uid: String::new(),
            groups: vec!["dev".into()],
        };
        let closed = Authenticator {
            x509: true,
            token_webhook: None,
            anonymous: false,
        };
        assert_eq!(closed.authenticate(None, None).await.unwrap(), None);
        let alice = closed
            .authenticate(Some(&cert_user), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(alice.groups, ["dev", "system:authenticated"]);
        assert!(matches!(
            closed.authenticate(None, Some("Bearer x")).await,
            Err(AuthnError::TokenAuthDisabled)
        ));
        let open = Authenticator {
            x509: false,
            token_webhook: None,
            anonymous: true,
        };
        // Without --client-ca-file a certificate names nobody.
        let anon = open
            .authenticate(Some(&cert_user), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(anon.name, "system:anonymous");
        assert_eq!(anon.groups, ["system:unauthenticated"]);
    }
}
