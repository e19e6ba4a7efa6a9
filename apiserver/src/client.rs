//! A `kube::Client` for the control plane running inside the apiserver
//! process. Its requests go straight into the apiserver's router, so the
//! in-process scheduler and controllers are clients of the API like any
//! other (same REST semantics, watches, admission), without TCP or TLS; run
//! as separate processes they use a client from `--kubeconfig` instead and
//! their code does not change.

use std::sync::Arc;

use axum::http::Request;
use tower::ServiceExt;

use crate::api::{self, Api};
use crate::auth::UserInfo;

/// A client that acts as `user`, a member of `system:masters` (what the
/// control plane's own credentials carry on a kubeadm cluster).
pub fn in_process(api: Arc<Api>, user: &str) -> kube::Client {
    let user = UserInfo {
        name: user.to_owned(),
        uid: String::new(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
    };
    let router = api::router(api);
    let service = tower::service_fn(move |mut req: Request<kube::client::Body>| {
        req.extensions_mut().insert(user.clone());
        router.clone().oneshot(req.map(axum::body::Body::new))
    });
    kube::Client::new(service, "default")
}

/// The client of a control-plane part run as its own process:
/// `--kubeconfig FILE`, or without one what kube infers (`$KUBECONFIG`,
/// `~/.kube/config`, the in-cluster service account), as kube-scheduler's
/// and kube-controller-manager's `--kubeconfig` flag reads it.
pub async fn from_kubeconfig(path: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    use anyhow::Context;
    kube::Client::try_from(config_from_kubeconfig(path).await?).context("building the API client")
}

/// The client configuration [`from_kubeconfig`] builds its client from.
pub async fn config_from_kubeconfig(
    path: Option<&std::path::Path>,
) -> anyhow::Result<kube::Config> {
    use anyhow::Context;
    let config = match path {
        Some(p) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("reading kubeconfig {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", p.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no --kubeconfig given and none could be inferred")?,
    };
    Ok(config)
}

/// The CA certificates (PEM) a client configuration trusts the apiserver
/// with, if it names any.
pub fn root_ca_pem(config: &kube::Config) -> Option<String> {
    let certs = config.root_cert.as_ref().filter(|c| !c.is_empty())?;
    let pems: Vec<pem::Pem> = certs
        .iter()
        .map(|der| pem::Pem::new("CERTIFICATE", der.clone()))
        .collect();
    let unix = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    Some(pem::encode_many_config(&pems, unix))
}
