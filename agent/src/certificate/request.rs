//! Getting a certificate through the Certificates API, as client-go's
//! `csr.RequestCertificate` and `WaitForCertificate` do: a new ECDSA P-256
//! key, a CertificateSigningRequest for the subject and names, and a watch
//! until a signer issues it (or it is denied or fails).

use std::net::IpAddr;

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::wait::await_condition;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

pub const KUBE_APISERVER_CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
pub const NODES_GROUP: &str = "system:nodes";

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("generating a key or request: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot create certificate signing request: {0}")]
    Create(kube::Error),
    #[error("watching certificate signing request {name}: {source}")]
    Watch {
        name: String,
        source: kube::runtime::wait::Error,
    },
    #[error("certificate signing request {0} was deleted before it was issued")]
    Deleted(String),
    #[error("certificate signing request is denied, reason: {reason}, message: {message}")]
    Denied { reason: String, message: String },
    #[error("certificate signing request failed, reason: {reason}, message: {message}")]
    Failed { reason: String, message: String },
}

/// What to ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    pub signer: &'static str,
    /// `system:node:<name>`.
    pub common_name: String,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub usages: Vec<&'static str>,
}

impl Wanted {
    /// The client certificate of node `name`. The key is ECDSA, so no key
    /// encipherment.
    pub fn node_client(name: &str) -> Self {
        Self {
            signer: KUBE_APISERVER_CLIENT_KUBELET,
            common_name: format!("system:node:{name}"),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            usages: vec!["digital signature", "client auth"],
        }
    }

    /// The serving certificate of node `name` for its host name and
    /// addresses.
    pub fn node_serving(name: &str, hostnames: &[String], ips: &[IpAddr]) -> Self {
        Self {
            signer: KUBELET_SERVING,
            common_name: format!("system:node:{name}"),
            dns_names: hostnames.to_vec(),
            ip_addresses: ips.to_vec(),
            usages: vec!["digital signature", "server auth"],
        }
    }

    /// A PEM request for `key`.
    pub fn request_pem(&self, key: &KeyPair) -> Result<String, rcgen::Error> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, NODES_GROUP);
        dn.push(DnType::CommonName, self.common_name.as_str());
        params.distinguished_name = dn;
        for d in &self.dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName(d.clone().try_into()?));
        }
        for ip in &self.ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.serialize_request(key)?.pem()
    }
}

/// Where a request stands.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Pending,
    Issued(String),
    Denied { reason: String, message: String },
    Failed { reason: String, message: String },
}

/// `WaitForCertificate`'s reading of the request's status.
pub fn outcome(csr: &CertificateSigningRequest) -> Outcome {
    let Some(status) = &csr.status else {
        return Outcome::Pending;
    };
    for c in status.conditions.iter().flatten() {
        let what = || {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        };
        match c.type_.as_str() {
            "Denied" => {
                let (reason, message) = what();
                return Outcome::Denied { reason, message };
            }
            "Failed" => {
                let (reason, message) = what();
                return Outcome::Failed { reason, message };
            }
            _ => {}
        }
    }
    match status.certificate.as_ref().filter(|c| !c.0.is_empty()) {
        Some(c) => Outcome::Issued(String::from_utf8_lossy(&c.0).into_owned()),
        None => Outcome::Pending,
    }
}

/// Creates the request (named `name`, or `csr-<random>`) and waits until
/// it is issued; returns the certificate and its key (PEM).
pub async fn request_certificate(
    client: kube::Client,
    wanted: &Wanted,
    name: Option<String>,
) -> Result<(String, String), RequestError> {
    let key = KeyPair::generate()?;
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            name: name.clone(),
            generate_name: name.is_none().then(|| "csr-".to_owned()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(wanted.request_pem(&key)?.into_bytes()),
            signer_name: wanted.signer.into(),
            usages: Some(wanted.usages.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        status: None,
    };
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let created = match api.create(&PostParams::default(), &csr).await {
        Ok(c) => c,
        // The same key and subject asked already (a restart mid-bootstrap).
        Err(kube::Error::Api(s)) if s.code == 409 && name.is_some() => api
            .get(name.as_deref().unwrap_or_default())
            .await
            .map_err(RequestError::Create)?,
        Err(e) => return Err(RequestError::Create(e)),
    };
    let csr_name = created.metadata.name.clone().unwrap_or_default();
    tracing::info!(csr = %csr_name, signer = wanted.signer, "waiting for the certificate signing request to be issued");
    let done = await_condition(api, &csr_name, |c: Option<&CertificateSigningRequest>| {
        c.is_none_or(|c| outcome(c) != Outcome::Pending)
    })
    .await
    .map_err(|source| RequestError::Watch {
        name: csr_name.clone(),
        source,
    })?;
    match done.as_ref().map(outcome) {
        None => Err(RequestError::Deleted(csr_name)),
        Some(Outcome::Issued(cert)) => Ok((cert, key.serialize_pem())),
        Some(Outcome::Denied { reason, message }) => Err(RequestError::Denied { reason, message }),
        Some(Outcome::Failed { reason, message }) => Err(RequestError::Failed { reason, message }),
        Some(Outcome::Pending) => unreachable!("the wait ends on a decision"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestCondition, CertificateSigningRequestStatus,
    };

    #[test]
    fn node_requests_name_the_node_in_system_nodes() {
        let key = KeyPair::generate().unwrap();
        let w = Wanted::node_serving("n1", &["n1".into()], &["10.0.0.1".parse().unwrap()]);
        let pem = w.request_pem(&key).unwrap();
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&pem).unwrap();
        let dn = format!("{:?}", parsed.params.distinguished_name);
        assert!(
            dn.contains("system:node:n1") && dn.contains("system:nodes"),
            "{dn}"
        );
        assert_eq!(parsed.params.subject_alt_names.len(), 2);
        assert_eq!(
            Wanted::node_client("n1").usages,
            ["digital signature", "client auth"]
        );
    }

    #[test]
    fn a_denial_ends_the_wait_with_its_reason() {
        let mut csr = CertificateSigningRequest::default();
        assert_eq!(outcome(&csr), Outcome::Pending);
        csr.status = Some(CertificateSigningRequestStatus {
            conditions: Some(vec![CertificateSigningRequestCondition {
                type_: "Denied".into(),
                status: "True".into(),
                reason: Some("KubectlDeny".into()),
                message: Some("no".into()),
                ..Default::default()
            }]),
            certificate: None,
        });
        assert_eq!(
            outcome(&csr),
            Outcome::Denied {
                reason: "KubectlDeny".into(),
                message: "no".into()
            }
        );
    }
}
