use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;

use kubelab_apiserver::auth::TokenAuthenticator;
use kubelab_apiserver::storage::embedded::EmbeddedStore;
use kubelab_apiserver::{api, auth, pki, server};

/// kube-apiserver's flag names for what this server does.
#[derive(Parser, Debug)]
#[command(
    name = "kubelab-apiserver",
    version,
    about = "A small Kubernetes-compatible apiserver"
)]
struct Flags {
    /// Where the store, the CA and admin.kubeconfig live.
    #[arg(long, default_value = "/var/lib/kubelab-apiserver")]
    data_dir: PathBuf,
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    #[arg(long, default_value_t = 6443)]
    secure_port: u16,
    /// The address clients are told to use (kubeconfig, `kubernetes` endpoints).
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// Static tokens, kube-apiserver's CSV: token,user,uid,"group1,group2".
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// How many changes the embedded store keeps for watches resuming from
    /// an older resourceVersion; older ones get 410 Gone.
    #[arg(long, default_value_t = kubelab_apiserver::storage::embedded::LOG_WINDOW)]
    change_log_window: u64,
    /// etcd endpoints to use instead of the embedded store.
    #[arg(long, value_delimiter = ',')]
    etcd_servers: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let flags = Flags::parse();
    if !flags.etcd_servers.is_empty() {
        bail!(
            "--etcd-servers: the etcd backend is not implemented yet; omit the flag to use the embedded store"
        );
    }
    std::fs::create_dir_all(&flags.data_dir)
        .with_context(|| format!("creating {}", flags.data_dir.display()))?;

    let advertise = flags
        .advertise_address
        .unwrap_or(if flags.bind_address.is_unspecified() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            flags.bind_address
        });
    let host_port = if advertise.is_ipv6() {
        format!("[{advertise}]:{}", flags.secure_port)
    } else {
        format!("{advertise}:{}", flags.secure_port)
    };
    let mut hosts: Vec<String> = vec![
        "localhost".into(),
        "127.0.0.1".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
        "10.96.0.1".into(),
        advertise.to_string(),
    ];
    if !flags.bind_address.is_unspecified() {
        hosts.push(flags.bind_address.to_string());
    }
    if let Ok(h) = nix_hostname() {
        hosts.push(h);
    }
    hosts.dedup();
    let pki = pki::prepare(&flags.data_dir, &hosts, &format!("https://{host_port}"))?;

    let tokens = match &flags.token_auth_file {
        Some(p) => TokenAuthenticator::from_csv(p)?,
        None => TokenAuthenticator::default(),
    };

    let store = EmbeddedStore::open_with_window(&flags.data_dir.join("store.redb"), flags.change_log_window)?;
    let api = Arc::new(api::Api::new(Arc::new(store), host_port.clone()));
    api.bootstrap((advertise.to_string(), flags.secure_port))
        .await?;

    let app = api::router(api).layer(axum::middleware::from_fn_with_state(
        Arc::new(tokens),
        auth::authenticate,
    ));
    let config = server::tls_config(&pki)?;
    let listener = tokio::net::TcpListener::bind((flags.bind_address, flags.secure_port))
        .await
        .with_context(|| format!("binding {}:{}", flags.bind_address, flags.secure_port))?;
    tracing::info!(
        "serving on https://{} (kubeconfig: {})",
        listener.local_addr()?,
        flags.data_dir.join("admin.kubeconfig").display()
    );
    tokio::select! {
        r = server::serve(listener, config, app) => r?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

fn nix_hostname() -> std::io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_owned())
}
