//! HTTPS for `--port`: the serving certificate (`--tls-cert-file` and
//! `--tls-private-key-file`, else a self-signed one kept in
//! `<root-dir>/pki/kubelet.crt|key` as the kubelet makes it), client
//! certificates verified against `--client-ca-file` when one is given, and
//! the accept loop that hands each request the verified certificate's user.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::auth::{ClientCertUser, UserInfo, authn::user_from_certificate};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Pem {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{}: no certificate in it", path.display())]
    NoCertificate { path: PathBuf },
    #[error("generating the self-signed serving certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("--client-ca-file {}: {source}", path.display())]
    ClientCa {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("--tls-cert-file and --tls-private-key-file go together")]
    HalfAPair,
}

/// What `--port` presents: files (given or self-signed), or the
/// certificate the cluster issues (`serverTLSBootstrap`), which may change.
pub enum ServingIdentity {
    Files(ServingCert),
    Issued(Arc<dyn rustls::server::ResolvesServerCert>),
}

/// Where the serving certificate and key are.
#[derive(Debug, Clone, PartialEq)]
pub struct ServingCert {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The files given by flags, or the self-signed pair under
/// `<root-dir>/pki`, made on first start and kept (clients that pinned it
/// keep trusting it), as kubelet does without `--tls-cert-file`.
pub fn serving_cert(
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
    root_dir: &Path,
    node_name: &str,
    node_ips: &[IpAddr],
) -> Result<ServingCert, TlsError> {
    match (cert_file, key_file) {
        (Some(c), Some(k)) => {
            return Ok(ServingCert {
                cert_file: c.to_owned(),
                key_file: k.to_owned(),
            });
        }
        (None, None) => {}
        _ => return Err(TlsError::HalfAPair),
    }
    let dir = root_dir.join("pki");
    let cert = ServingCert {
        cert_file: dir.join("kubelet.crt"),
        key_file: dir.join("kubelet.key"),
    };
    if cert.cert_file.exists() && cert.key_file.exists() {
        return Ok(cert);
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let (crt, key) = self_signed(node_name, node_ips)?;
    write_private(&cert.key_file, &key)?;
    std::fs::write(&cert.cert_file, crt).map_err(io(&cert.cert_file))?;
    tracing::info!(cert = %cert.cert_file.display(), "generated a self-signed serving certificate");
    Ok(cert)
}

fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(contents.as_bytes()).map_err(io(path))
}

/// A self-signed certificate for the node's name and addresses (kubelet:
/// CN `<host>@<unix time>`, valid for the host name, localhost and its IPs).
pub fn self_signed(node_name: &str, node_ips: &[IpAddr]) -> Result<(String, String), TlsError> {
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
        KeyUsagePurpose, SanType,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("{node_name}@{now}"));
    params.distinguished_name = dn;
    let mut sans = Vec::new();
    for name in [node_name, "localhost"] {
        if let Ok(n) = name.to_owned().try_into() {
            sans.push(SanType::DnsName(n));
        }
    }
    let mut ips = node_ips.to_vec();
    ips.push(IpAddr::from([127, 0, 0, 1]));
    ips.dedup();
    sans.extend(ips.into_iter().map(SanType::IpAddress));
    params.subject_alt_names = sans;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_after = rcgen::date_time_ymd(2126, 1, 1);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// `--port`'s TLS: the rustls configuration, and the verifier of client
/// certificates against `--client-ca-file` when one is given.
pub struct SecureServing {
    pub config: rustls::ServerConfig,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
}

/// The rustls configuration of `--port`: the serving certificate, and
/// client certificates requested (never required: tokens authenticate too)
/// when `client_ca_file` is given. As on kubelet, a certificate the CA did
/// not sign does not break the handshake: it authenticates nobody, and the
/// request goes on to the other authenticators (401 without one).
pub fn server_config(
    identity: ServingIdentity,
    client_ca_file: Option<&Path>,
) -> Result<SecureServing, TlsError> {
    // Chosen explicitly: with several rustls backends linked into one
    // workspace build, the process-wide default is ambiguous.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pem = |path: &Path| std::fs::read(path).map_err(io(path));
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let (builder, client_verifier) = match client_ca_file {
        Some(path) => {
            let ca_pem = pem(path)?;
            let mut roots = RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(&ca_pem) {
                let ca = ca.map_err(|source| TlsError::Pem {
                    path: path.to_owned(),
                    source,
                })?;
                roots.add(ca).map_err(|source| TlsError::ClientCa {
                    path: path.to_owned(),
                    source,
                })?;
            }
            if roots.is_empty() {
                return Err(TlsError::NoCertificate {
                    path: path.to_owned(),
                });
            }
            let verifier: Arc<dyn ClientCertVerifier> =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .allow_unauthenticated()
                    .build()?;
            let requesting = Arc::new(RequestClientCert(verifier.clone()));
            (
                builder.with_client_cert_verifier(requesting),
                Some(verifier),
            )
        }
        None => (builder.with_no_client_auth(), None),
    };
    let mut config = match identity {
        ServingIdentity::Files(cert) => {
            let cert_pem = pem(&cert.cert_file)?;
            let certs = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| TlsError::Pem {
                    path: cert.cert_file.clone(),
                    source,
                })?;
            if certs.is_empty() {
                return Err(TlsError::NoCertificate {
                    path: cert.cert_file.clone(),
                });
            }
            let key = PrivateKeyDer::from_pem_slice(&pem(&cert.key_file)?).map_err(|source| {
                TlsError::Pem {
                    path: cert.key_file.clone(),
                    source,
                }
            })?;
            builder.with_single_cert(certs, key)?
        }
        ServingIdentity::Issued(resolver) => builder.with_cert_resolver(resolver),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(SecureServing {
        config,
        client_verifier,
    })
}

/// Go's `tls.RequestClientCert`: asks for a certificate and takes whatever
/// comes (its possession still proven by the handshake signature); the
/// chain is checked afterwards, by [`SecureServing::client_user`].
#[derive(Debug)]
struct RequestClientCert(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

impl SecureServing {
    /// The user of a presented certificate chain when `--client-ca-file`
    /// signed it (kubelet's x509 authenticator), else nobody.
    fn client_user(&self, chain: Option<&[CertificateDer<'static>]>) -> Option<UserInfo> {
        let verifier = self.client_verifier.as_ref()?;
        let (leaf, intermediates) = chain?.split_first()?;
        match verifier.verify_client_cert(leaf, intermediates, UnixTime::now()) {
            Ok(_) => user_from_certificate(leaf),
            Err(e) => {
                tracing::debug!("client certificate not accepted: {e}");
                None
            }
        }
    }
}

/// Serves `app` over TLS on `listener`, one task per connection; a client
/// certificate the client CA signed becomes [`ClientCertUser`] on each request.
pub async fn serve(listener: TcpListener, tls: SecureServing, app: Router) -> std::io::Result<()> {
    let tls = Arc::new(tls);
    let acceptor = TlsAcceptor::from(Arc::new(tls.config.clone()));
    loop {
        let (tcp, peer) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
            };
            let user = tls.client_user(stream.get_ref().1.peer_certificates());
            let service =
                hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                    if let Some(u) = &user {
                        req.extensions_mut().insert(ClientCertUser(u.clone()));
                    }
                    app.clone().oneshot(req.map(axum::body::Body::new))
                });
            if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_self_signed_certificate_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let ips = [IpAddr::from([10, 0, 0, 5])];
        let first = serving_cert(None, None, dir.path(), "node1", &ips).unwrap();
        assert_eq!(first.cert_file, dir.path().join("pki/kubelet.crt"));
        let pem = std::fs::read_to_string(&first.cert_file).unwrap();
        let again = serving_cert(None, None, dir.path(), "node1", &ips).unwrap();
        assert_eq!(again, first);
        assert_eq!(std::fs::read_to_string(&again.cert_file).unwrap(), pem);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&first.key_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert!(cn.as_str().unwrap().starts_with("node1@"));
        let sans = format!(
            "{:?}",
            cert.subject_alternative_name().unwrap().unwrap().value
        );
        assert!(
            sans.contains("\"node1\"") && sans.contains("[10, 0, 0, 5]"),
            "{sans}"
        );
        server_config(ServingIdentity::Files(first), None).unwrap();
    }

    #[test]
    fn half_a_pair_of_flags_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = serving_cert(Some(Path::new("/x.crt")), None, dir.path(), "n", &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--tls-cert-file and --tls-private-key-file go together"
        );
    }
}
