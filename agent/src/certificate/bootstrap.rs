//! TLS bootstrapping of the client certificate (`bootstrap.LoadClientCert`):
//! with `--bootstrap-kubeconfig`, when `--kubeconfig` is missing or its
//! certificate has expired, the bootstrap credentials ask the
//! `kube-apiserver-client-kubelet` signer for `system:node:<name>` in
//! `system:nodes`; the issued pair goes to
//! `<cert-dir>/kubelet-client-current.pem` and `--kubeconfig` is written to
//! use it, so the agent runs as the node.

use std::path::{Path, PathBuf};

use kube::config::{
    AuthInfo, Context, KubeConfigOptions, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
};

use super::request::{self, Wanted};
use super::store;

pub const CLIENT_PAIR: &str = "kubelet-client";

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("reading {}: {source}", path.display())]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("{}: its current context names no cluster", path.display())]
    NoCluster { path: PathBuf },
    #[error("building a client from {}: {source}", path.display())]
    Client { path: PathBuf, source: kube::Error },
    #[error(transparent)]
    Request(#[from] request::RequestError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Whether `kubeconfig` exists with usable credentials: a client
/// certificate still valid at `now`, or credentials of another kind.
pub fn still_valid(kubeconfig: &Path, now: jiff::Timestamp) -> bool {
    let Ok(config) = Kubeconfig::read_from(kubeconfig) else {
        return false;
    };
    let current = config.current_context.clone().unwrap_or_default();
    let user = config
        .contexts
        .iter()
        .find(|c| c.name == current)
        .and_then(|c| c.context.as_ref())
        .and_then(|c| c.user.clone());
    let Some(auth) = config
        .auth_infos
        .iter()
        .find(|a| Some(&a.name) == user.as_ref())
        .and_then(|a| a.auth_info.as_ref())
    else {
        return false;
    };
    let cert = match (&auth.client_certificate, &auth.client_certificate_data) {
        (Some(path), _) => std::fs::read_to_string(path).ok(),
        (None, Some(data)) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
        }
        // A token or other credentials: nothing here expires.
        (None, None) => return true,
    };
    cert.and_then(|c| store::validity(&c).ok())
        .is_some_and(|(nb, na)| nb <= now && now < na)
}

/// A kubeconfig for the cluster of `bootstrap` whose user is the pair in
/// `cert_file`, with the names the kubelet writes.
pub fn node_kubeconfig(bootstrap: &Kubeconfig, cert_file: &Path) -> Option<Kubeconfig> {
    let current = bootstrap.current_context.clone().unwrap_or_default();
    let cluster_name = bootstrap
        .contexts
        .iter()
        .find(|c| c.name == current)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())?;
    let cluster = bootstrap
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)?
        .cluster
        .clone();
    let file = cert_file.to_string_lossy().into_owned();
    Some(Kubeconfig {
        clusters: vec![NamedCluster {
            name: "default-cluster".into(),
            cluster,
            other: Default::default(),
        }],
        auth_infos: vec![NamedAuthInfo {
            name: "default-auth".into(),
            auth_info: Some(AuthInfo {
                client_certificate: Some(file.clone()),
                client_key: Some(file),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        contexts: vec![NamedContext {
            name: "default-context".into(),
            context: Some(Context {
                cluster: "default-cluster".into(),
                user: Some("default-auth".into()),
                namespace: Some("default".into()),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        current_context: Some("default-context".into()),
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        ..Default::default()
    })
}

/// Makes `kubeconfig` usable, bootstrapping when it is not.
pub async fn load_client_cert(
    kubeconfig: &Path,
    bootstrap_path: &Path,
    cert_dir: &Path,
    node_name: &str,
) -> Result<(), BootstrapError> {
    if still_valid(kubeconfig, jiff::Timestamp::now()) {
        tracing::info!(path = %kubeconfig.display(), "Kubeconfig exists and is valid, skipping bootstrap");
        return Ok(());
    }
    let kc_err = |source| BootstrapError::Kubeconfig {
        path: bootstrap_path.to_owned(),
        source,
    };
    let bootstrap = Kubeconfig::read_from(bootstrap_path).map_err(kc_err)?;
    // A pair made earlier and still valid (the kubeconfig was lost) is used.
    let cert_file = store::current(cert_dir, CLIENT_PAIR);
    let reusable = store::load(cert_dir, CLIENT_PAIR)
        .ok()
        .flatten()
        .is_some_and(|p| p.not_after > jiff::Timestamp::now());
    if !reusable {
        tracing::info!(
            "Using bootstrap kubeconfig to generate TLS client cert, key and kubeconfig file"
        );
        let config =
            kube::Config::from_custom_kubeconfig(bootstrap.clone(), &KubeConfigOptions::default())
                .await
                .map_err(kc_err)?;
        let client = kube::Client::try_from(config).map_err(|source| BootstrapError::Client {
            path: bootstrap_path.to_owned(),
            source,
        })?;
        let wanted = Wanted::node_client(node_name);
        let (cert, key) = request::request_certificate(client, &wanted, None).await?;
        store::save(cert_dir, CLIENT_PAIR, &cert, &key, jiff::Timestamp::now())?;
        tracing::info!(cert = %cert_file.display(), "client certificate issued");
    }
    let config =
        node_kubeconfig(&bootstrap, &cert_file).ok_or_else(|| BootstrapError::NoCluster {
            path: bootstrap_path.to_owned(),
        })?;
    let text = serde_yaml::to_string(&config).expect("a kubeconfig serializes");
    if let Some(dir) = kubeconfig.parent() {
        std::fs::create_dir_all(dir).map_err(|source| BootstrapError::Write {
            path: dir.to_owned(),
            source,
        })?;
    }
    std::fs::write(kubeconfig, text).map_err(|source| BootstrapError::Write {
        path: kubeconfig.to_owned(),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_kubeconfig_keeps_the_cluster_and_uses_the_pair() {
        let boot: Kubeconfig = serde_yaml::from_str(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://10.0.0.1:6443\n    certificate-authority-data: Q0E=\nusers:\n- name: boot\n  user:\n    token: abcdef.0123456789abcdef\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: boot\ncurrent-context: x\n",
        )
        .unwrap();
        let kc = node_kubeconfig(
            &boot,
            Path::new("/var/lib/kubelet/pki/kubelet-client-current.pem"),
        )
        .unwrap();
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.0.0.1:6443"));
        assert_eq!(cluster.certificate_authority_data.as_deref(), Some("Q0E="));
        let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(
            user.client_certificate.as_deref(),
            Some("/var/lib/kubelet/pki/kubelet-client-current.pem")
        );
        assert_eq!(user.client_key, user.client_certificate);
        assert!(user.token.is_none());
    }

    #[test]
    fn a_missing_kubeconfig_is_not_valid_and_a_token_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let now = jiff::Timestamp::now();
        assert!(!still_valid(&dir.path().join("none"), now));
        let token = dir.path().join("token.conf");
        std::fs::write(
            &token,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://x\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n",
        )
        .unwrap();
        assert!(still_valid(&token, now));
    }
}
