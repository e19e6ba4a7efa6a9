//! The cluster's certificates, made on first start in the data dir.
//!
//! - `ca.crt`/`ca.key`: the cluster CA, kept across restarts (clients trust it).
//! - `apiserver.crt`/`apiserver.key`: the serving certificate, re-issued on
//!   every start so its names always match the current bind address.
//! - `admin.crt`/`admin.key`: a client certificate for `kubernetes-admin`
//!   in `system:masters`, and `admin.kubeconfig` that embeds it.
//! - `apiserver-kubelet-client.crt`/`.key`: what the apiserver presents to
//!   the kubelets (`kube-apiserver-kubelet-client` in `system:masters`, as
//!   kubeadm makes it), unless `--kubelet-client-certificate` says otherwise.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Cert {
        what: &'static str,
        source: rcgen::Error,
    },
}

/// PEM material the server needs to serve TLS and verify client certificates.
pub struct ServingPki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// The default client certificate towards the kubelets.
    pub kubelet_client_cert: PathBuf,
    pub kubelet_client_key: PathBuf,
}

/// The user the apiserver's default kubelet client certificate names.
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PkiError::Io {
            path: path.to_owned(),
            source: e,
        }),
    }
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e| PkiError::Io {
        path: path.to_owned(),
        source: e,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn cert_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Cert { what, source }
}

fn name(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, o);
    }
    dn.push(DnType::CommonName, cn);
    dn
}

/// Loads the CA from `data_dir`, creating it on first start.
fn load_or_create_ca(data_dir: &Path) -> Result<(String, KeyPair), PkiError> {
    let (crt_path, key_path) = (data_dir.join("ca.crt"), data_dir.join("ca.key"));
    if let (Some(crt), Some(key)) = (read(&crt_path)?, read(&key_path)?) {
        return Ok((crt, KeyPair::from_pem(&key).map_err(cert_err("ca.key"))?));
    }
    let key = KeyPair::generate().map_err(cert_err("CA key"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name("kubelab-ca", None);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params
        .self_signed(&key)
        .map_err(cert_err("CA certificate"))?;
    write(&key_path, &key.serialize_pem(), true)?;
    write(&crt_path, &cert.pem(), false)?;
    Ok((cert.pem(), key))
}

/// Issues a leaf certificate signed by the CA.
fn issue(
    ca_pem: &str,
    ca_key: &KeyPair,
    params: CertificateParams,
) -> Result<(String, String), PkiError> {
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key).map_err(cert_err("ca.crt"))?;
    let key = KeyPair::generate().map_err(cert_err("leaf key"))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(cert_err("leaf certificate"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A client certificate for `cn` in `org`, kept in `<data_dir>/<file>.crt|key`
/// across restarts; made on first use.
fn client_cert(
    data_dir: &Path,
    ca_pem: &str,
    ca_key: &KeyPair,
    file: &str,
    cn: &str,
    org: &str,
) -> Result<(String, String), PkiError> {
    let (crt_path, key_path) = (
        data_dir.join(format!("{file}.crt")),
        data_dir.join(format!("{file}.key")),
    );
    if let (Some(c), Some(k)) = (read(&crt_path)?, read(&key_path)?) {
        return Ok((c, k));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = name(cn, Some(org));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let (c, k) = issue(ca_pem, ca_key, params)?;
    write(&crt_path, &c, false)?;
    write(&key_path, &k, true)?;
    Ok((c, k))
}

/// Makes (or loads) the CA, issues the serving certificate for `hosts`, and
/// writes `admin.kubeconfig` pointing at `server_url`.
pub fn prepare(
    data_dir: &Path,
    hosts: &[String],
    server_url: &str,
) -> Result<ServingPki, PkiError> {
    let (ca_pem, ca_key) = load_or_create_ca(data_dir)?;

    let mut params = CertificateParams::default();
    params.distinguished_name = name("kube-apiserver", None);
    params.subject_alt_names = hosts
        .iter()
        .filter_map(|h| match h.parse::<IpAddr>() {
            Ok(ip) => Some(SanType::IpAddress(ip)),
            Err(_) => h.clone().try_into().ok().map(SanType::DnsName),
        })
        .collect();
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let (cert_pem, key_pem) = issue(&ca_pem, &ca_key, params)?;
    write(&data_dir.join("apiserver.crt"), &cert_pem, false)?;
    write(&data_dir.join("apiserver.key"), &key_pem, true)?;

    let (admin_crt, admin_key) = client_cert(
        data_dir,
        &ca_pem,
        &ca_key,
        "admin",
        "kubernetes-admin",
        "system:masters",
    )?;
    client_cert(
        data_dir,
        &ca_pem,
        &ca_key,
        "apiserver-kubelet-client",
        KUBELET_CLIENT_USER,
        "system:masters",
    )?;
    write(
        &data_dir.join("admin.kubeconfig"),
        &kubeconfig(server_url, &ca_pem, &admin_crt, &admin_key),
        true,
    )?;
    Ok(ServingPki {
        ca_pem,
        cert_pem,
        key_pem,
        kubelet_client_cert: data_dir.join("apiserver-kubelet-client.crt"),
        kubelet_client_key: data_dir.join("apiserver-kubelet-client.key"),
    })
}

/// A kubeconfig with everything embedded, as `kubeadm` writes `admin.conf`.
pub fn kubeconfig(server_url: &str, ca_pem: &str, client_crt: &str, client_key: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: kubelab
  cluster:
    server: {server_url}
    certificate-authority-data: {ca}
users:
- name: kubernetes-admin
  user:
    client-certificate-data: {crt}
    client-key-data: {key}
contexts:
- name: kubernetes-admin@kubelab
  context:
    cluster: kubelab
    user: kubernetes-admin
current-context: kubernetes-admin@kubelab
",
        ca = b64(ca_pem),
        crt = b64(client_crt),
        key = b64(client_key),
    )
}
