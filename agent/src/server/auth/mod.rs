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

/// kubelet's command-line flags for `--port`'s authentication and
/// authorization; each one given overrides the config file's setting.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthFlags {
    /// Client certificates signed by this CA authenticate on `--port` (user
    /// from CN, groups from O).
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<std::path::PathBuf>,
    /// Let requests without credentials in as system:anonymous (default
    /// false, as kubeadm sets it).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub anonymous_auth: Option<bool>,
    /// Check bearer tokens with the apiserver's TokenReview API (needs
    /// --kubeconfig).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub authentication_token_webhook: Option<bool>,
    /// How long TokenReview answers are cached (default 2m0s).
    #[arg(long, value_name = "DURATION")]
    pub authentication_token_webhook_cache_ttl: Option<String>,
    /// AlwaysAllow, or Webhook: ask the apiserver with a SubjectAccessReview
    /// (needs --kubeconfig). Default AlwaysAllow; Webhook with --config.
    #[arg(long, value_name = "MODE")]
    pub authorization_mode: Option<AuthorizationMode>,
    /// How long an allowed SubjectAccessReview is cached (default 5m0s).
    #[arg(long, value_name = "DURATION")]
    pub authorization_webhook_cache_authorized_ttl: Option<String>,
    /// How long a denied SubjectAccessReview is cached (default 30s).
    #[arg(long, value_name = "DURATION")]
    pub authorization_webhook_cache_unauthorized_ttl: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("--{flag}: {source}")]
pub struct AuthFlagError {
    flag: &'static str,
    source: crate::config::kubelet_config::GoDurationError,
}

impl AuthFlags {
    /// The settings in force: these flags over `file` (a `--config`'s). With
    /// no file the flags' own defaults apply, which are kubelet's (no token
    /// webhook, AlwaysAllow) but for `--anonymous-auth` (false, as kubeadm
    /// sets it); a file's defaults are KubeletConfiguration's (token
    /// webhook, Webhook).
    pub fn resolve(
        &self,
        file: Option<&crate::config::KubeletConfiguration>,
    ) -> Result<AuthOptions, AuthFlagError> {
        let defaults = crate::config::KubeletConfiguration::default();
        let file_given = file.is_some();
        let file = file.unwrap_or(&defaults);
        let mut authentication = file.authentication.clone();
        let mut authorization = file.authorization.clone();
        if !file_given {
            authentication.webhook_enabled = false;
            authorization.mode = AuthorizationMode::AlwaysAllow;
        }
        let duration = |flag: &'static str, v: &Option<String>, current| match v {
            Some(s) => {
                crate::config::parse_go_duration(s).map_err(|source| AuthFlagError { flag, source })
            }
            None => Ok(current),
        };
        if let Some(ca) = &self.client_ca_file {
            authentication.client_ca_file = Some(ca.clone());
        }
        if let Some(anonymous) = self.anonymous_auth {
            authentication.anonymous_enabled = anonymous;
        }
        if let Some(webhook) = self.authentication_token_webhook {
            authentication.webhook_enabled = webhook;
        }
        authentication.webhook_cache_ttl = duration(
            "authentication-token-webhook-cache-ttl",
            &self.authentication_token_webhook_cache_ttl,
            authentication.webhook_cache_ttl,
        )?;
        if let Some(mode) = self.authorization_mode {
            authorization.mode = mode;
        }
        authorization.cache_authorized_ttl = duration(
            "authorization-webhook-cache-authorized-ttl",
            &self.authorization_webhook_cache_authorized_ttl,
            authorization.cache_authorized_ttl,
        )?;
        authorization.cache_unauthorized_ttl = duration(
            "authorization-webhook-cache-unauthorized-ttl",
            &self.authorization_webhook_cache_unauthorized_ttl,
            authorization.cache_unauthorized_ttl,
        )?;
        Ok(AuthOptions {
            authentication,
            authorization,
        })
    }
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
            tracing::debug!(reason = %reason, "{msg}");
            refuse(StatusCode::FORBIDDEN, msg)
        }
        Err(e) => {
            let msg = attrs.authorization_error_message();
            tracing::error!("{msg}: {e}");
            refuse(StatusCode::INTERNAL_SERVER_ERROR, msg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KubeletConfiguration;
    use std::time::Duration;

    #[test]
    fn without_a_config_file_the_flags_default_to_kubelets_and_anonymous_is_off() {
        let o = AuthFlags::default().resolve(None).unwrap();
        assert_eq!(o.authorization.mode, AuthorizationMode::AlwaysAllow);
        assert!(!o.authentication.webhook_enabled);
        assert!(!o.authentication.anonymous_enabled);
        assert_eq!(o.authentication.client_ca_file, None);
    }

    #[test]
    fn a_config_file_brings_its_defaults_and_flags_override_them() {
        let file = KubeletConfiguration::default();
        let o = AuthFlags::default().resolve(Some(&file)).unwrap();
        assert_eq!(o.authorization.mode, AuthorizationMode::Webhook);
        assert!(o.authentication.webhook_enabled);
        assert_eq!(o.authentication.webhook_cache_ttl, Duration::from_secs(120));
        assert_eq!(
            o.authorization.cache_authorized_ttl,
            Duration::from_secs(300)
        );
        assert_eq!(
            o.authorization.cache_unauthorized_ttl,
            Duration::from_secs(30)
        );
        let flags = AuthFlags {
            client_ca_file: Some("/ca.crt".into()),
            anonymous_auth: Some(true),
            authentication_token_webhook: Some(false),
            authentication_token_webhook_cache_ttl: Some("10s".into()),
            authorization_mode: Some(AuthorizationMode::AlwaysAllow),
            authorization_webhook_cache_authorized_ttl: Some("1m".into()),
            authorization_webhook_cache_unauthorized_ttl: Some("1s".into()),
        };
        let o = flags.resolve(Some(&file)).unwrap();
        assert_eq!(o.authentication.client_ca_file, Some("/ca.crt".into()));
        assert!(o.authentication.anonymous_enabled);
        assert!(!o.authentication.webhook_enabled);
        assert_eq!(o.authentication.webhook_cache_ttl, Duration::from_secs(10));
        assert_eq!(o.authorization.mode, AuthorizationMode::AlwaysAllow);
        assert_eq!(
            o.authorization.cache_authorized_ttl,
            Duration::from_secs(60)
        );
        assert_eq!(
            o.authorization.cache_unauthorized_ttl,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn a_bad_duration_names_its_flag() {
        let flags = AuthFlags {
            authentication_token_webhook_cache_ttl: Some("2".into()),
            ..Default::default()
        };
        assert_eq!(
            flags.resolve(None).unwrap_err().to_string(),
            "--authentication-token-webhook-cache-ttl: time: missing unit in duration \"2\""
        );
    }

    #[test]
    fn webhooks_need_an_apiserver() {
        let mut o = AuthFlags::default().resolve(None).unwrap();
        o.authentication.webhook_enabled = true;
        assert_eq!(
            KubeletAuth::new(&o, None, "n1").err().unwrap().to_string(),
            "no client provided, cannot use webhook authentication (--authentication-token-webhook needs --kubeconfig)"
        );
        o.authentication.webhook_enabled = false;
        o.authorization.mode = AuthorizationMode::Webhook;
        assert!(matches!(
            KubeletAuth::new(&o, None, "n1"),
            Err(AuthSetupError::NoClientForAuthorization)
        ));
    }
}
