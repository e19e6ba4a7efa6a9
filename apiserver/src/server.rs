//! HTTPS serving: rustls with the cluster CA verifying optional client
//! certificates, HTTP/1.1 and HTTP/2 (ALPN), one task per connection.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use axum::Router;
use axum::extract::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::auth::{ClientCertUser, TokenAuthenticator, user_from_certificate};
use crate::node_client::{KubeletTls, NodeClient};
use crate::pki::ServingPki;
use crate::storage::Storage;
use crate::storage::embedded::EmbeddedStore;
use crate::storage::etcd::EtcdStore;
use crate::{api, auth, pki};

/// Everything the server needs to start, from flags.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub bind_address: IpAddr,
    pub secure_port: u16,
    /// The address clients are told to use; the bind address (or loopback
    /// when binding all addresses) if unset.
    pub advertise_address: Option<IpAddr>,
    pub token_auth_file: Option<PathBuf>,
    /// `--enable-bootstrap-token-auth`: `kube-system/bootstrap-token-*`
    /// Secrets authenticate their tokens.
    pub enable_bootstrap_token_auth: bool,
    /// `--service-account-*`, `--api-audiences`.
    pub service_accounts: crate::serviceaccount::TokenFlags,
    /// `--authorization-mode`.
    pub authorization_modes: Vec<crate::authorizer::Mode>,
    /// How the apiserver reaches kubelets.
    pub kubelet: KubeletClientFlags,
    pub change_log_window: u64,
    /// etcd endpoints; empty: the embedded store in the data dir.
    pub etcd_servers: Vec<String>,
    /// How often etcd's history is compacted; zero: never.
    pub etcd_compaction_interval: std::time::Duration,
    /// `--service-cluster-ip-range`, `--service-node-port-range`.
    pub service_network: api::ServiceNetwork,
    /// The in-process controllers' settings.
    pub controllers: crate::controllers::ControllerOptions,
    /// The in-process scheduler's settings; `None` (`--disable-scheduler`):
    /// no scheduler runs here.
    pub scheduler: Option<crate::scheduler::SchedulerSettings>,
    /// The in-process cluster DNS; `None`: not run (`--disable=coredns`).
    pub cluster_dns: Option<ClusterDnsOptions>,
    /// `--admission-control-config-file`: the PodSecurity plugin's
    /// configuration, already read.
    pub pod_security: crate::pod_security::PodSecurity,
}

/// The in-process cluster DNS's settings.
#[derive(Debug, Clone)]
pub struct ClusterDnsOptions {
    /// Where it listens; `None`: the advertise address, port 53.
    pub listen: Option<std::net::SocketAddr>,
    pub domain: String,
    pub upstreams: Vec<std::net::SocketAddr>,
}

/// `--kubelet-client-certificate`, `--kubelet-client-key`,
/// `--kubelet-certificate-authority`.
#[derive(Debug, Clone, Default)]
pub struct KubeletClientFlags {
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub certificate_authority: Option<PathBuf>,
}

impl KubeletClientFlags {
    /// The files to use: the flags', else the data dir's default client pair.
    fn resolve(&self, pki: &ServingPki) -> KubeletTls {
        let (cert, key) = match (&self.client_certificate, &self.client_key) {
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            _ => (
                pki.kubelet_client_cert.clone(),
                pki.kubelet_client_key.clone(),
            ),
        };
        KubeletTls {
            client_certificate: cert,
            client_key: key,
            certificate_authority: self.certificate_authority.clone(),
        }
    }
}

/// The user a PEM client certificate file names (its CN), for the
/// authorizer to recognise the apiserver's own kubelet client.
fn certificate_user(path: &std::path::Path) -> Option<String> {
    let pem = std::fs::read(path).ok()?;
    let der = CertificateDer::pem_slice_iter(&pem).next()?.ok()?;
    user_from_certificate(&der).map(|u| u.name)
}

impl Config {
    fn advertise(&self) -> IpAddr {
        self.advertise_address
            .unwrap_or(if self.bind_address.is_unspecified() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                self.bind_address
            })
    }

    /// Names the serving certificate is valid for: loopback, the advertised
    /// and bound addresses, the host name, and the in-cluster names.
    fn serving_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = [
            "localhost",
            "127.0.0.1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .map(String::from)
        .to_vec();
        hosts.push(self.service_network.kubernetes_service_ip().to_string());
        hosts.push(self.advertise().to_string());
        if !self.bind_address.is_unspecified() {
            hosts.push(self.bind_address.to_string());
        }
        if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            hosts.push(h.trim().to_owned());
        }
        hosts.sort();
        hosts.dedup();
        hosts
    }
}

/// Prepares the data dir (certificates, kubeconfig, store, system
/// objects) and serves until Ctrl-C.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let advertise = cfg.advertise();
    let host_port = match advertise {
        IpAddr::V6(ip) => format!("[{ip}]:{}", cfg.secure_port),
        IpAddr::V4(ip) => format!("{ip}:{}", cfg.secure_port),
    };
    let pki = pki::prepare(
        &cfg.data_dir,
        &cfg.serving_hosts(),
        &format!("https://{host_port}"),
    )?;
    let mut tokens = match &cfg.token_auth_file {
        Some(p) => TokenAuthenticator::from_csv(p)?,
        None => TokenAuthenticator::default(),
    };
    let sa_tokens = Arc::new(crate::serviceaccount::ServiceAccountTokens::load(
        &cfg.data_dir,
        &cfg.service_accounts,
    )?);

    let store: Arc<dyn Storage> = if cfg.etcd_servers.is_empty() {
        Arc::new(EmbeddedStore::open_with_window(
            &cfg.data_dir.join("store.redb"),
            cfg.change_log_window,
        )?)
    } else {
        let etcd = EtcdStore::connect(&cfg.etcd_servers).await?;
        etcd.start_compaction(cfg.etcd_compaction_interval);
        Arc::new(etcd)
    };
    let kubelet_tls = cfg.kubelet.resolve(&pki);
    if kubelet_tls.certificate_authority.is_none() {
        tracing::warn!(
            "no --kubelet-certificate-authority: kubelets' serving certificates are not verified"
        );
    }
    tokens.service_accounts = Some(crate::serviceaccount::Authenticator::new(
        sa_tokens.clone(),
        store.clone(),
    ));
    if cfg.enable_bootstrap_token_auth {
        tokens.bootstrap_tokens = Some(crate::bootstrap_token::Authenticator::new(store.clone()));
    }
    let tokens = Arc::new(tokens);
    let mut api = api::Api::new(store, host_port);
    api.service_account_tokens = sa_tokens;
    api.service_network = cfg.service_network.clone();
    api.nodes = NodeClient::new(kubelet_tls.client_config()?);
    api.tokens = tokens.clone();
    if let Some(user) = certificate_user(&kubelet_tls.client_certificate) {
        api.kubelet_client_user = user;
    }
    let authorizer = Arc::new(crate::authorizer::Authorizer::new(
        cfg.authorization_modes.clone(),
    ));
    api.authorizer = authorizer.clone();
    api.pod_security = Arc::new(cfg.pod_security.clone());
    let api = Arc::new(api);
    api.bootstrap().await?;
    api.start_custom_resources()
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    crate::rbac::bootstrap::reconcile(&api, &api.kubelet_client_user).await?;
    crate::rbac::watch::start(api.clone(), authorizer).await;
    let kubernetes = crate::controllers::kubernetes_service::KubernetesService {
        cluster_ip: cfg.service_network.kubernetes_service_ip().into(),
        advertise_address: advertise,
        secure_port: cfg.secure_port,
    };
    let mut controllers = cfg.controllers.clone();
    controllers
        .manager
        .root_ca
        .get_or_insert(pki.ca_pem.clone());
    crate::controllers::start(&api, &controllers, kubernetes).await?;
    if let Some(settings) = cfg.scheduler.clone() {
        let client = crate::client::in_process(api.clone(), "system:kube-scheduler");
        tokio::spawn(async move {
            if let Err(e) = crate::scheduler::run(client, settings).await {
                tracing::error!("the scheduler stopped: {e:#}");
            }
        });
    }
    if let Some(dns) = &cfg.cluster_dns {
        start_cluster_dns(&api, &cfg, dns, advertise);
    }

    let app = api::router(api.clone())
        .layer(axum::middleware::from_fn_with_state(
            api,
            crate::authorizer::authorize,
        ))
        .layer(axum::middleware::from_fn_with_state(
            tokens,
            auth::authenticate,
        ));
    let tls = tls_config(&pki)?;
    let listener = TcpListener::bind((cfg.bind_address, cfg.secure_port))
        .await
        .with_context(|| format!("binding {}:{}", cfg.bind_address, cfg.secure_port))?;
    tracing::info!(
        "serving on https://{} (kubeconfig: {})",
        listener.local_addr()?,
        cfg.data_dir.join("admin.kubeconfig").display()
    );
    tokio::select! {
        r = serve(listener, tls, app) => r?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

/// The cluster DNS as the control plane runs it (as k3s runs CoreDNS): the
/// `kube-dns` Service pointing at it, and the server. A server that cannot
/// listen (port 53 taken) is logged; the apiserver keeps serving.
fn start_cluster_dns(
    api: &Arc<api::Api>,
    cfg: &Config,
    dns: &ClusterDnsOptions,
    advertise: IpAddr,
) {
    use crate::dns;
    let client =
        crate::client::in_process(api.clone(), "system:serviceaccount:kube-system:coredns");
    let listen = dns
        .listen
        .unwrap_or_else(|| std::net::SocketAddr::new(advertise, 53));
    let endpoint_ip = if listen.ip().is_unspecified() {
        advertise
    } else {
        listen.ip()
    };
    tokio::spawn(dns::keep_kube_dns_service(
        client.clone(),
        dns::kube_dns_service::KubeDnsService {
            cluster_ip: dns::kube_dns_cluster_ip(&cfg.service_network.cluster_ip_range),
            endpoint: std::net::SocketAddr::new(endpoint_ip, listen.port()),
        },
    ));
    let config = dns::ClusterDnsConfig {
        listen,
        domain: dns.domain.clone(),
        upstreams: dns.upstreams.clone(),
        ttl: dns::records::DEFAULT_TTL,
    };
    tokio::spawn(async move {
        if let Err(e) = dns::serve(client, config).await {
            tracing::error!("cluster DNS stopped: {e}");
        }
    });
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("reading PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The provider is chosen explicitly: with several rustls backends linked
/// into one workspace, the process-wide default is ambiguous.
pub fn tls_config(pki: &ServingPki) -> Result<rustls::ServerConfig, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(ca?)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let certs =
        CertificateDer::pem_slice_iter(pki.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

pub async fn serve(
    listener: TcpListener,
    config: rustls::ServerConfig,
    app: Router,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    loop {
        let (tcp, peer) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
            };
            // rustls has verified the chain against the cluster CA already.
            let user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| user_from_certificate(c));
            let service =
                hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                    if let Some(u) = &user {
                        req.extensions_mut().insert(ClientCertUser(u.clone()));
                    }
                    app.clone().oneshot(req.map(axum::body::Body::new))
                });
            if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}
