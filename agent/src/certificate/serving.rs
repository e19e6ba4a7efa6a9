//! The serving certificate manager (`--rotate-server-certificates`,
//! `serverTLSBootstrap`): `--port` serves with a certificate of the
//! `kubernetes.io/kubelet-serving` signer for the node's names and
//! addresses. Until one is issued (an administrator approves those) the
//! port completes no handshake, as the kubelet serves nothing then; the
//! certificate is renewed at 70-90% of its life.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::request::{self, Wanted};
use super::{rotation_deadline, store, wait_until};

pub const SERVER_PAIR: &str = "kubelet-server";
/// Between tries after a failed request.
const RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    #[error("serving certificate: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("serving certificate: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The certificate `--port` presents; none until one is issued.
#[derive(Debug, Default)]
pub struct ServingCertificate {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl ServingCertificate {
    fn set(&self, cert_pem: &str, key_pem: &str) -> Result<(), ServingError> {
        let provider = rustls::crypto::ring::default_provider();
        let certs =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
        let signing = provider.key_provider.load_private_key(key)?;
        *self.current.write().expect("serving certificate") =
            Some(Arc::new(CertifiedKey::new(certs, signing)));
        Ok(())
    }
}

impl ResolvesServerCert for ServingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.read().expect("serving certificate").clone();
        if current.is_none() {
            tracing::debug!("no serving certificate available for the kubelet");
        }
        current
    }
}

/// Keeps [`ServingCertificate`] issued and fresh.
pub struct ServingCertManager {
    pub certificate: Arc<ServingCertificate>,
    cert_dir: PathBuf,
    wanted: Wanted,
}

impl ServingCertManager {
    /// Loads a still-valid certificate from `cert_dir`, if there is one.
    pub fn new(cert_dir: PathBuf, node_name: &str, hostnames: &[String], ips: &[IpAddr]) -> Self {
        let certificate = Arc::new(ServingCertificate::default());
        let wanted = Wanted::node_serving(node_name, hostnames, ips);
        if let Ok(Some(pair)) = store::load(&cert_dir, SERVER_PAIR)
            && pair.not_after > jiff::Timestamp::now()
            && let Err(e) = certificate.set(&pair.cert_pem, &pair.key_pem)
        {
            tracing::warn!("{}: {e}", store::current(&cert_dir, SERVER_PAIR).display());
        }
        Self {
            certificate,
            cert_dir,
            wanted,
        }
    }

    /// Requests a certificate whenever there is none or the held one is due
    /// for rotation; runs for the life of the agent.
    pub async fn run(self, client: kube::Client) {
        tracing::info!("Certificate rotation is enabled");
        loop {
            if let Ok(Some(pair)) = store::load(&self.cert_dir, SERVER_PAIR)
                && pair.not_after > jiff::Timestamp::now()
            {
                let deadline = rotation_deadline(pair.not_before, pair.not_after, fastrand::f64());
                tracing::info!(
                    expiration = %pair.not_after,
                    rotation_deadline = %deadline,
                    "Certificate expiration is {}, rotation deadline is {}",
                    pair.not_after,
                    deadline
                );
                tokio::time::sleep(wait_until(deadline, jiff::Timestamp::now())).await;
            }
            tracing::info!("Rotating certificates");
            match request::request_certificate(client.clone(), &self.wanted, None).await {
                Ok((cert, key)) => {
                    let saved = store::save(
                        &self.cert_dir,
                        SERVER_PAIR,
                        &cert,
                        &key,
                        jiff::Timestamp::now(),
                    );
                    match saved
                        .map_err(|e| e.to_string())
                        .and_then(|_| self.certificate.set(&cert, &key).map_err(|e| e.to_string()))
                    {
                        Ok(()) => {
                            tracing::info!("serving certificate issued; --port serves with it")
                        }
                        Err(e) => {
                            tracing::error!("storing the serving certificate: {e}");
                            tokio::time::sleep(RETRY).await;
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(
                        "Failed while requesting a signed certificate from the control plane: {e}"
                    );
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}
