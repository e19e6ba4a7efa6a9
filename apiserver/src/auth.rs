//! Authentication: bearer tokens from `--token-auth-file` (kube-apiserver's
//! static token CSV: `token,user,uid,"group1,group2"`), bootstrap tokens
//! ([`crate::bootstrap_token`]), ServiceAccount
//! tokens ([`crate::serviceaccount::Authenticator`]) and client
//! certificates signed by the cluster CA (user = CN, groups = O).
//! Everything else is 401, except the public-info paths kube-apiserver
//! also serves to anonymous users (`/version`, `/healthz`, ...).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::status::ApiError;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// Put into request extensions by the TLS layer when the client presented
/// a certificate the CA verified.
#[derive(Debug, Clone)]
pub struct ClientCertUser(pub UserInfo);

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: expected at least 3 fields (token,user,uid[,\"groups\"])")]
    Malformed { path: String, line: usize },
}

#[derive(Default, Clone)]
pub struct TokenAuthenticator {
    tokens: HashMap<String, UserInfo>,
    /// Verifies ServiceAccount tokens, when the server signs them.
    pub service_accounts: Option<crate::serviceaccount::Authenticator>,
    /// Bootstrap tokens (`--enable-bootstrap-token-auth`).
    pub bootstrap_tokens: Option<crate::bootstrap_token::Authenticator>,
}

/// Never prints the tokens themselves.
impl std::fmt::Debug for TokenAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthenticator")
            .field("static_tokens", &self.tokens.len())
            .field("service_accounts", &self.service_accounts.is_some())
            .field("bootstrap_tokens", &self.bootstrap_tokens.is_some())
            .finish()
    }
}

/// Splits one CSV record, honouring double quotes.
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields.into_iter().map(|f| f.trim().to_owned()).collect()
}

impl TokenAuthenticator {
    pub fn from_csv(path: &Path) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, path: &str) -> Result<Self, TokenFileError> {
        let mut tokens = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let f = csv_fields(line);
            if f.len() < 3 || f[0].is_empty() || f[1].is_empty() {
                return Err(TokenFileError::Malformed {
                    path: path.to_owned(),
                    line: i + 1,
                });
            }
            let groups = f.get(3).map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(String::from)
                    .collect()
            });
            tokens.insert(
                f[0].clone(),
                UserInfo {
                    name: f[1].clone(),
                    uid: f[2].clone(),
                    groups: groups.unwrap_or_default(),
                },
            );
        }
        Ok(Self {
            tokens,
            service_accounts: None,
            bootstrap_tokens: None,
        })
    }

    pub fn insert(&mut self, token: String, user: UserInfo) {
        self.tokens.insert(token, user);
    }

    pub fn authenticate(&self, authorization: &str) -> Option<&UserInfo> {
        let token = authorization
            .strip_prefix("Bearer ")
            .or_else(|| authorization.strip_prefix("bearer "))?;
        self.tokens.get(token.trim())
    }

    /// The user of an `Authorization` header's bearer token: a static
    /// token, else a ServiceAccount token the server signed and whose
    /// objects still exist.
    pub async fn authenticate_bearer(&self, authorization: &str) -> Option<UserInfo> {
        if let Some(u) = self.authenticate(authorization) {
            return Some(u.clone());
        }
        let token = authorization
            .strip_prefix("Bearer ")
            .or_else(|| authorization.strip_prefix("bearer "))?
            .trim();
        if let Some(bootstrap) = &self.bootstrap_tokens
            && let Some(verified) = bootstrap.verify(token).await
        {
            return verified
                .inspect_err(|e| tracing::info!("refused a bootstrap token: {e}"))
                .ok();
        }
        match self.service_accounts.as_ref()?.verify(token).await {
            Ok(u) => Some(u),
            Err(e) => {
                if !e.is_not_ours() {
                    tracing::info!("refused a bearer token: {e}");
                }
                None
            }
        }
    }
}

/// The user a verified client certificate names: CN, and O as groups.
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

/// The group every authenticated user is in.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/version" | "/version/" | "/healthz" | "/livez" | "/readyz"
    )
}

pub async fn authenticate(
    State(tokens): State<Arc<TokenAuthenticator>>,
    mut req: Request,
    next: Next,
) -> Response {
    let user = if let Some(ClientCertUser(u)) = req.extensions().get::<ClientCertUser>() {
        Some(u.clone())
    } else {
        match req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
        {
            Some(h) => tokens.authenticate_bearer(h).await,
            None => None,
        }
    };
    match user {
        Some(mut u) => {
            // Every authenticated user is in this group (kube-apiserver's
            // authenticator adds it).
            if !u.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
                u.groups.push(AUTHENTICATED_GROUP.into());
            }
            req.extensions_mut().insert(u);
            next.run(req).await
        }
        None if is_public(req.uri().path()) => next.run(req).await,
        None => ApiError::unauthorized().into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_csv_with_quoted_groups() {
        let a = TokenAuthenticator::parse(
            "# comment\nnode-secret,system:node:n1,uid1,\"system:nodes,system:authenticated\"\nt2,bob,2\n",
            "tokens.csv",
        )
        .unwrap();
        let u = a.authenticate("Bearer node-secret").unwrap();
        assert_eq!(u.name, "system:node:n1");
        assert_eq!(u.groups, vec!["system:nodes", "system:authenticated"]);
        assert_eq!(a.authenticate("Bearer t2").unwrap().name, "bob");
        assert!(a.authenticate("Bearer nope").is_none());
        assert!(a.authenticate("Basic t2").is_none());
    }

    #[test]
    fn short_token_line_is_an_error_naming_the_line() {
        let e = TokenAuthenticator::parse("a,b,c\nonly,two\n", "t.csv").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.csv:2: expected at least 3 fields (token,user,uid[,\"groups\"])"
        );
    }
}
