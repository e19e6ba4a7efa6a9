//! Apiserver → node agent: where a node's kubelet API is, and one HTTPS
//! GET to it, as kube-apiserver's `pkg/kubelet/client` does: the apiserver
//! presents its kubelet client certificate (`--kubelet-client-certificate`,
//! `--kubelet-client-key`) and checks the kubelet's serving certificate
//! against `--kubelet-certificate-authority` when one is given (without
//! it, as kube-apiserver, the kubelet's certificate is not verified).
//!
//! The address is the node's first `InternalIP` (else its first address)
//! and the port `status.daemonEndpoints.kubeletEndpoint.port`, both set by
//! the agent when it registers its Node.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde_json::Value;

/// kubelet's default port, for nodes that don't report one.
pub const DEFAULT_KUBELET_PORT: u64 = 10250;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NodeClientError {
    #[error("node {node:?} has no addresses in its status")]
    NoAddress { node: String },
    #[error("connecting to the kubelet API of node {node:?} at {url}: {reason}")]
    Unreachable {
        node: String,
        url: String,
        reason: String,
    },
    #[error("kubelet API of node {node:?} answered {code} for {url}: {body}")]
    Status {
        node: String,
        url: String,
        code: u16,
        body: String,
    },
    #[error("reading {url} from node {node:?}: {reason}")]
    Body {
        node: String,
        url: String,
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum KubeletTlsError {
    #[error("{flag} {}: {source}", path.display())]
    Read {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{flag} {}: {source}", path.display())]
    Pem {
        flag: &'static str,
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("--kubelet-certificate-authority {}: {source}", path.display())]
    Ca {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("kubelet client TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What the apiserver needs to talk TLS to kubelets (file paths, as the flags
/// give them).
#[derive(Debug, Clone)]
pub struct KubeletTls {
    pub client_certificate: PathBuf,
    pub client_key: PathBuf,
    pub certificate_authority: Option<PathBuf>,
}

impl KubeletTls {
    /// The rustls client configuration these files describe.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, KubeletTlsError> {
        let read = |flag: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| KubeletTlsError::Read {
                flag,
                path: path.to_owned(),
                source,
            })
        };
        let pem_err = |flag: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| KubeletTlsError::Pem { flag, path, source }
        };
        let cert_pem = read("--kubelet-client-certificate", &self.client_certificate)?;
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_err(
                "--kubelet-client-certificate",
                &self.client_certificate,
            ))?;
        let key = PrivateKeyDer::from_pem_slice(&read("--kubelet-client-key", &self.client_key)?)
            .map_err(pem_err("--kubelet-client-key", &self.client_key))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match &self.certificate_authority {
            Some(path) => {
                let pem = read("--kubelet-certificate-authority", path)?;
                let mut roots = rustls::RootCertStore::empty();
                for ca in CertificateDer::pem_slice_iter(&pem) {
                    let ca = ca.map_err(pem_err("--kubelet-certificate-authority", path))?;
                    roots.add(ca).map_err(|source| KubeletTlsError::Ca {
                        path: path.clone(),
                        source,
                    })?;
                }
                builder.with_root_certificates(roots)
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(UnverifiedKubelet(provider))),
        };
        // No ALPN: plain requests and the exec relay's WebSocket upgrade both
        // speak HTTP/1.1 (hyper-rustls sets its own ALPN list).
        Ok(builder.with_client_auth_cert(certs, key)?)
    }
}

/// kube-apiserver without `--kubelet-certificate-authority`: any serving
/// certificate is accepted (its signature over the handshake still checked).
#[derive(Debug)]
struct UnverifiedKubelet(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for UnverifiedKubelet {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `https://<ip>:<port>` of a Node object's kubelet API.
pub fn kubelet_base_url(node: &Value) -> Result<String, NodeClientError> {
    let name = node["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let addresses = node["status"]["addresses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let address = addresses
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .or_else(|| addresses.first())
        .and_then(|a| a["address"].as_str())
        .ok_or(NodeClientError::NoAddress { node: name })?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .or_else(|| node["status"]["daemonEndpoints"]["kubeletEndpoint"]["port"].as_u64())
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Ok(if address.contains(':') {
        format!("https://[{address}]:{port}")
    } else {
        format!("https://{address}:{port}")
    })
}

/// The apiserver's client of the kubelets. Without TLS settings (an Api made
/// for unit tests) every request fails as unreachable.
#[derive(Clone, Default)]
pub struct NodeClient {
    inner: Option<(
        Client<HttpsConnector<HttpConnector>, Body>,
        Arc<rustls::ClientConfig>,
    )>,
}

impl NodeClient {
    pub fn new(tls: rustls::ClientConfig) -> Self {
        let tls = Arc::new(tls);
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        Self {
            inner: Some((Client::builder(TokioExecutor::new()).build(connector), tls)),
        }
    }

    /// The TLS configuration requests to kubelets use (the exec relay
    /// opens its WebSocket with it).
    pub fn tls_config(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.inner.as_ref().map(|(_, tls)| tls.clone())
    }

    /// GETs `path_and_query` from the node; the body streams (for logs
    /// with `follow`). A non-2xx answer is an error carrying its body.
    pub async fn get(
        &self,
        node: &Value,
        path_and_query: &str,
    ) -> Result<hyper::Response<hyper::body::Incoming>, NodeClientError> {
        let name = node["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let url = format!("{}{path_and_query}", kubelet_base_url(node)?);
        let unreachable = |reason: String| NodeClientError::Unreachable {
            node: name.clone(),
            url: url.clone(),
            reason,
        };
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| unreachable(e.to_string()))?;
        let Some((http, _)) = &self.inner else {
            return Err(unreachable("no TLS configuration for kubelets".into()));
        };
        let resp = http
            .get(uri)
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        if !resp.status().is_success() {
            let code = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(NodeClientError::Status {
                node: name,
                url,
                code,
                body: String::from_utf8_lossy(&body).trim().to_owned(),
            });
        }
        Ok(resp)
    }

    /// GETs a JSON document from the node.
    pub async fn get_json(&self, node: &Value, path: &str) -> Result<Value, NodeClientError> {
        let resp = self.get(node, path).await?;
        let name = node["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let body_err = |reason: String| NodeClientError::Body {
            node: name.clone(),
            url: path.to_owned(),
            reason,
        };
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| body_err(e.to_string()))?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| body_err(e.to_string()))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubelet_url_prefers_internal_ip_and_reported_port() {
        let node = json!({"metadata": {"name": "n1"}, "status": {
            "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10255}}}});
        assert_eq!(kubelet_base_url(&node).unwrap(), "https://10.0.0.5:10255");
        let bare = json!({"metadata": {"name": "n2"}, "status": {"addresses": [{"type": "InternalIP", "address": "fd00::1"}]}});
        assert_eq!(kubelet_base_url(&bare).unwrap(), "https://[fd00::1]:10250");
        assert!(matches!(
            kubelet_base_url(&json!({"metadata": {"name": "n3"}})),
            Err(NodeClientError::NoAddress { .. })
        ));
    }
}
