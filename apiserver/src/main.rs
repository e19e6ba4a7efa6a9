use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

use kubelab_apiserver::server::{self, Config};
use kubelab_apiserver::storage::embedded::LOG_WINDOW;

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
    #[arg(long, default_value_t = LOG_WINDOW)]
    change_log_window: u64,
    /// etcd endpoints (comma-separated, e.g. http://127.0.0.1:2379) to use
    /// instead of the embedded store; watches then resume only from
    /// revisions etcd has not compacted.
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
    server::run(Config {
        data_dir: flags.data_dir,
        bind_address: flags.bind_address,
        secure_port: flags.secure_port,
        advertise_address: flags.advertise_address,
        token_auth_file: flags.token_auth_file,
        change_log_window: flags.change_log_window,
        etcd_servers: flags.etcd_servers,
    })
    .await
}
