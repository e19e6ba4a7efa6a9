//! Authentication and authorization of the kubelet API on `--port`, as the
//! kubelet's auth filter does them: authenticate (no user: 401
//! `Unauthorized`), map the request to `nodes/<subresource>` attributes,
//! authorize (denied: 403 `Forbidden (user=..., verb=..., ...)`), then serve.
//! The read-only port has no such filter and serves only what is harmless.

pub mod attributes;
pub mod authn;
pub mod authz;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::kubelet_config::AuthorizationMode;
use authn::{Authenticator, TokenWebhook};
use authz::{Authorizer, Decision, SarWebhook};

/// A user as the API knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// Put into a request's extensions by the TLS layer: the user of the client
/// certificate the `--client-ca-file` verified.
#[derive(Debug, Clone)]
pub struct ClientCertUser(pub UserInfo);

/// The `authentication`/`authorization` settings (flags over the
/// KubeletConfiguration).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthOptions {
    pub authentication: crate::config::kubelet_config::KubeletAuthentication,
    pub authorization: crate::config::kubelet_config::KubeletAuthorization,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    // kubelet's own words for a webhook without an apiserver.
    #[error(
        "no client provided, cannot use webhook authentication (--authentication-token-webhook needs --kubeconfig)"
    )]
    NoClientForAuthentication,
    #[error(
        "no client provided, cannot use webhook authorization (--authorization-mode Webhook needs --kubeconfig)"
    )]
    NoClientForAuthorization,
}

pub struct KubeletAuth {
    pub authenticator: Authenticator,
    pub authorizer: Authorizer,
    pub node_name: String,
}

impl KubeletAuth {
    pub fn new(
        opts: &AuthOptions,
        client: Option<kube::Client>,
        node_name: &str,
    ) -> Result<Self, AuthSetupError> {
        let token_webhook = match (opts.authentication.webhook_enabled, &client) {
            (false, _) => None,
            (true, Some(c)) => Some(TokenWebhook::new(
                c.clone(),
                opts.authentication.webhook_cache_ttl,
            )),
            (true, None) => return Err(AuthSetupError::NoClientForAuthentication),
        };
        let authorizer = match (opts.authorization.mode, client) {
            (AuthorizationMode::AlwaysAllow, _) => Authorizer::AlwaysAllow,
            (AuthorizationMode::Webhook, Some(c)) => Authorizer::Webhook(SarWebhook::new(
                c,
                opts.authorization.cache_authorized_ttl,
                opts.authorization.cache_unauthorized_ttl,
            )),
            (AuthorizationMode::Webhook, None) => {
                return Err(AuthSetupError::NoClientForAuthorization);
            }
        };
        Ok(Self {
            authenticator: Authenticator {
                x509: opts.authentication.client_ca_file.is_some(),
                token_webhook,
                anonymous: opts.authentication.anonymous_enabled,
            },
            authorizer,
            node_name: node_name.to_owned(),
        })
    }
}

/// Plain text answers, as kubelet's `WriteErrorString`.
fn refuse(code: StatusCode, msg: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg,
    )
        .into_response()
}

/// The filter in front of every handler of `--port`.
pub async fn filter(State(auth): State<Arc<KubeletAuth>>, req: Request, next: Next) -> Response {
    let cert_user = req.extensions().get::<ClientCertUser>().map(|c| &c.0);
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let user = match auth
        .authenticator
        .authenticate(cert_user, authorization)
        .await
    {
        Ok(Some(user)) => user,
        Ok(None) => return refuse(StatusCode::UNAUTHORIZED, "Unauthorized".into()),
        Err(e) => {
            tracing::debug!(path = %req.uri().path(), "unable to authenticate the request: {e}");
            return refuse(StatusCode::UNAUTHORIZED, "Unauthorized".into());
        }
    };
    let attrs =
        attributes::request_attributes(user, req.method(), req.uri().path(), &auth.node_name);
    match auth.authorizer.authorize(&attrs).await {
        Ok(Decision::Allow) => next.run(req).await,
        Ok(Decision::Deny { reason }) => {
            let msg = attrs.forbidden_message();
            tracing::info!(reason = %reason, "{msg}");
            refuse(StatusCode::FORBIDDEN, msg)
        }
        Err(e) => {
            let msg = attrs.authorization_error_message();
            tracing::error!("{msg}: {e}");
            refuse(StatusCode::INTERNAL_SERVER_ERROR, msg)
        }
    }
}
