//! Bootstrap token authentication (`--enable-bootstrap-token-auth`): a
//! bearer token `<id>.<secret>` is checked against the Secret
//! `kube-system/bootstrap-token-<id>` of type
//! `bootstrap.kubernetes.io/token`, and authenticates
//! `system:bootstrap:<id>` in `system:bootstrappers` (plus the Secret's
//! `auth-extra-groups`), while it has not expired and is marked
//! `usage-bootstrap-authentication: "true"`. Nodes join with one.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;

use crate::auth::UserInfo;
use crate::storage::Storage;

pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
pub const SECRET_PREFIX: &str = "bootstrap-token-";
pub const NAMESPACE: &str = "kube-system";
pub const USER_PREFIX: &str = "system:bootstrap:";
pub const DEFAULT_GROUP: &str = "system:bootstrappers";
const TOKEN_ID: &str = "token-id";
const TOKEN_SECRET: &str = "token-secret";
const EXPIRATION: &str = "expiration";
const USAGE_AUTHENTICATION: &str = "usage-bootstrap-authentication";
const EXTRA_GROUPS: &str = "auth-extra-groups";

/// Why a token shaped like a bootstrap token is refused; logged, as
/// kube-apiserver logs it, never told to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootstrapTokenError {
    #[error("No secret of name {0} to match bootstrap bearer token")]
    NoSecret(String),
    #[error("Bootstrap secret {0} matching bearer token is deleted and awaiting removal")]
    Deleted(String),
    #[error("Bootstrap secret {0} matching bearer token has invalid type, expected {SECRET_TYPE}.")]
    WrongType(String),
    #[error("Bootstrap secret {0} matching bearer token has invalid value for key {1}.")]
    InvalidValue(String, &'static str),
    #[error("Expired bootstrap token in {0} Secret: {1}")]
    Expired(String, String),
    #[error("Unparseable expiration time ({1}) in {0} Secret. Treating as expired.")]
    BadExpiration(String, String),
    #[error("Bootstrap secret {0} matching bearer token not marked {USAGE_AUTHENTICATION}=true.")]
    NotForAuthentication(String),
    #[error(
        "Bootstrap secret {0} matching bearer token has invalid value for key {EXTRA_GROUPS}: bootstrap group {1:?} is invalid (must match ^system:bootstrappers:[a-z0-9:-]{{0,255}}[a-z0-9]$)."
    )]
    InvalidGroup(String, String),
}

/// `<id>.<secret>`: six and sixteen of `[a-z0-9]`.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

fn data<'a>(secret: &'a Secret, key: &str) -> &'a str {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| std::str::from_utf8(&v.0).ok())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(String::as_str)
        })
        .unwrap_or("")
}

/// Compares without stopping at the first difference, so response times
/// say nothing about the secret.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn valid_group(g: &str) -> bool {
    let Some(rest) = g.strip_prefix("system:bootstrappers:") else {
        return false;
    };
    !rest.is_empty()
        && rest.len() <= 256
        && rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'-')
        && rest
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The user `token` authenticates given the Secret named after its id
/// (`None`: there is none), at `now`.
pub fn authenticate(
    id: &str,
    token_secret: &str,
    secret: Option<&Secret>,
    now: jiff::Timestamp,
) -> Result<UserInfo, BootstrapTokenError> {
    let name = format!("{NAMESPACE}/{SECRET_PREFIX}{id}");
    let Some(secret) = secret else {
        return Err(BootstrapTokenError::NoSecret(format!(
            "{SECRET_PREFIX}{id}"
        )));
    };
    if secret.metadata.deletion_timestamp.is_some() {
        return Err(BootstrapTokenError::Deleted(name));
    }
    if secret.type_.as_deref() != Some(SECRET_TYPE) || secret.data.is_none() {
        return Err(BootstrapTokenError::WrongType(name));
    }
    if !same(
        data(secret, TOKEN_SECRET).as_bytes(),
        token_secret.as_bytes(),
    ) {
        return Err(BootstrapTokenError::InvalidValue(name, TOKEN_SECRET));
    }
    if data(secret, TOKEN_ID) != id {
        return Err(BootstrapTokenError::InvalidValue(name, TOKEN_ID));
    }
    let expiration = data(secret, EXPIRATION);
    if !expiration.is_empty() {
        match expiration.parse::<jiff::Timestamp>() {
            Ok(t) if t <= now => {
                return Err(BootstrapTokenError::Expired(name, expiration.to_owned()));
            }
            Ok(_) => {}
            Err(_) => {
                return Err(BootstrapTokenError::BadExpiration(
                    name,
                    expiration.to_owned(),
                ));
            }
        }
    }
    if data(secret, USAGE_AUTHENTICATION) != "true" {
        return Err(BootstrapTokenError::NotForAuthentication(name));
    }
    let mut groups = vec![DEFAULT_GROUP.to_owned()];
    for g in data(secret, EXTRA_GROUPS).split(',').map(str::trim) {
        if g.is_empty() {
            continue;
        }
        if !valid_group(g) {
            return Err(BootstrapTokenError::InvalidGroup(name, g.to_owned()));
        }
        groups.push(g.to_owned());
    }
    // Go's sets.String.List(): sorted, each once.
    groups.sort();
    groups.dedup();
    Ok(UserInfo {
        name: format!("{USER_PREFIX}{id}"),
        uid: String::new(),
        groups,
    })
}

/// Reads the token's Secret from the store on each use, so a deleted or
/// expired token stops working at once.
#[derive(Clone)]
pub struct Authenticator {
    store: Arc<dyn Storage>,
}

impl Authenticator {
    pub fn new(store: Arc<dyn Storage>) -> Self {
        Self { store }
    }

    /// `None` when `token` is not shaped like a bootstrap token (another
    /// authenticator may know it).
    pub async fn verify(&self, token: &str) -> Option<Result<UserInfo, BootstrapTokenError>> {
        let (id, token_secret) = parse_token(token)?;
        let key = format!("/registry/secrets/{NAMESPACE}/{SECRET_PREFIX}{id}");
        let secret = match self.store.get(&key).await {
            Ok(kv) => kv.and_then(|kv| {
                serde_json::from_value::<Secret>(crate::api::object::decode(&kv)).ok()
            }),
            Err(e) => {
                tracing::warn!("reading {key}: {e}");
                return None;
            }
        };
        Some(authenticate(
            id,
            token_secret,
            secret.as_ref(),
            jiff::Timestamp::now(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(fields: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: Default::default(),
            type_: Some(SECRET_TYPE.into()),
            data: Some(
                fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    const NOW: &str = "2026-01-01T00:00:00Z";

    fn auth(s: Option<&Secret>, token_secret: &str) -> Result<UserInfo, BootstrapTokenError> {
        authenticate("abcdef", token_secret, s, NOW.parse().unwrap())
    }

    fn valid(extra: &[(&str, &str)]) -> Secret {
        let mut f = vec![
            ("token-id", "abcdef"),
            ("token-secret", "0123456789abcdef"),
            ("usage-bootstrap-authentication", "true"),
        ];
        f.extend_from_slice(extra);
        secret(&f)
    }

    #[test]
    fn tokens_are_six_and_sixteen_lowercase_alphanumerics() {
        assert_eq!(
            parse_token("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        assert_eq!(parse_token("ABCDEF.0123456789abcdef"), None);
        assert_eq!(parse_token("abcdef.0123456789abcde"), None);
        assert_eq!(parse_token("some-static-token"), None);
    }

    #[test]
    fn a_good_token_is_system_bootstrap_id_in_the_bootstrappers() {
        let s = valid(&[(
            "auth-extra-groups",
            "system:bootstrappers:kubeadm:default-node-token",
        )]);
        let u = auth(Some(&s), "0123456789abcdef").unwrap();
        assert_eq!(u.name, "system:bootstrap:abcdef");
        assert_eq!(
            u.groups,
            vec![
                "system:bootstrappers",
                "system:bootstrappers:kubeadm:default-node-token"
            ]
        );
    }

    #[test]
    fn wrong_expired_or_unmarked_tokens_are_refused() {
        let s = valid(&[]);
        assert_eq!(
            auth(Some(&s), "xxxxxxxxxxxxxxxx").unwrap_err().to_string(),
            "Bootstrap secret kube-system/bootstrap-token-abcdef matching bearer token has invalid value for key token-secret."
        );
        assert_eq!(
            auth(None, "0123456789abcdef").unwrap_err().to_string(),
            "No secret of name bootstrap-token-abcdef to match bootstrap bearer token"
        );
        let expired = valid(&[("expiration", "2025-12-31T23:59:59Z")]);
        assert!(matches!(
            auth(Some(&expired), "0123456789abcdef"),
            Err(BootstrapTokenError::Expired(..))
        ));
        let later = valid(&[("expiration", "2026-01-02T00:00:00Z")]);
        assert!(auth(Some(&later), "0123456789abcdef").is_ok());
        let unmarked = secret(&[("token-id", "abcdef"), ("token-secret", "0123456789abcdef")]);
        assert!(matches!(
            auth(Some(&unmarked), "0123456789abcdef"),
            Err(BootstrapTokenError::NotForAuthentication(_))
        ));
        let mut opaque = valid(&[]);
        opaque.type_ = Some("Opaque".into());
        assert!(matches!(
            auth(Some(&opaque), "0123456789abcdef"),
            Err(BootstrapTokenError::WrongType(_))
        ));
        let bad_group = valid(&[("auth-extra-groups", "system:masters")]);
        assert_eq!(
            auth(Some(&bad_group), "0123456789abcdef")
                .unwrap_err()
                .to_string(),
            "Bootstrap secret kube-system/bootstrap-token-abcdef matching bearer token has invalid value for key auth-extra-groups: bootstrap group \"system:masters\" is invalid (must match ^system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]$)."
        );
    }
}
