//! The CSR signing controller (kube-controller-manager's `csrsigning`):
//! approved requests for the built-in signers get a certificate from the
//! cluster CA (`--cluster-signing-cert-file`/`--cluster-signing-key-file`)
//! that lives `--cluster-signing-duration` or the shorter
//! `spec.expirationSeconds`; a request a signer refuses gets a `Failed`
//! condition saying why.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, PostParams};

use super::informers::Informers;
use super::work_queue;
use crate::certificates::request::{self, CertificateRequest};
use crate::certificates::signer::{self, SigningAuthority};
use crate::kinds::certificates::{APPROVED, FAILED, has_true_condition};

const COMPONENT: &str = "csrsigning-controller";
const CONCURRENT_SYNCS: u16 = 5;

/// kube-controller-manager's `--cluster-signing-*` flags.
#[derive(Debug, Clone)]
pub struct ClusterSigning {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// `--cluster-signing-duration` (8760h).
    pub duration: Duration,
}

/// What the signers do with a request.
#[derive(Debug, PartialEq)]
pub enum Signing {
    /// Not approved, failed, issued already, or no built-in signer's.
    Nothing,
    /// The signer refuses it: the `Failed` condition's message.
    Fail(String),
    Issue {
        request: CertificateRequest,
        ttl: Duration,
    },
}

/// `signer.handle`: only approved, unfailed, unissued requests for a
/// built-in signer are looked at.
pub fn decide(
    csr: &CertificateSigningRequest,
    signing_duration: Duration,
) -> Result<Signing, request::RequestError> {
    let issued = csr
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty());
    if !has_true_condition(csr, APPROVED) || has_true_condition(csr, FAILED) || issued {
        return Ok(Signing::Nothing);
    }
    if !signer::is_built_in(&csr.spec.signer_name) {
        return Ok(Signing::Nothing);
    }
    let usages = csr.spec.usages.as_deref().unwrap_or(&[]);
    let request = request::parse(&csr.spec.request.0)?;
    Ok(
        match signer::check(&csr.spec.signer_name, &request, usages) {
            None => Signing::Nothing,
            Some(Err(e)) => Signing::Fail(e.to_string()),
            Some(Ok(())) => Signing::Issue {
                request,
                ttl: signer::duration(csr.spec.expiration_seconds, signing_duration),
            },
        },
    )
}

#[derive(Debug, thiserror::Error)]
pub enum SigningControllerError {
    #[error("unable to parse csr {name:?}: {source}")]
    Parse {
        name: String,
        source: request::RequestError,
    },
    #[error("error auto signing csr: {0}")]
    Sign(#[from] signer::SigningError),
    #[error("error updating signature for csr: {0}")]
    Update(kube::Error),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

struct Ctx {
    client: kube::Client,
    authority: SigningAuthority,
    duration: Duration,
}

fn read(path: &PathBuf) -> Result<String, SigningControllerError> {
    std::fs::read_to_string(path).map_err(|source| SigningControllerError::Read {
        path: path.clone(),
        source,
    })
}

/// Runs until the informers stop.
pub async fn run(informers: Informers, opts: ClusterSigning) -> anyhow::Result<()> {
    let authority = SigningAuthority::from_pem(&read(&opts.cert_file)?, &read(&opts.key_file)?)?;
    let csrs = informers.get::<CertificateSigningRequest>();
    let (queue, keys) = work_queue::queue::<CertificateSigningRequest>();
    let changes = csrs.subscribe();
    csrs.synced().await;
    queue.add_all(&csrs.store);
    let feed = queue.follow(changes, &csrs.store);
    let ctx = Arc::new(Ctx {
        client: informers.client(),
        authority,
        duration: opts.duration,
    });
    let workers = work_queue::run(
        COMPONENT,
        csrs.store.clone(),
        keys,
        ctx,
        CONCURRENT_SYNCS,
        |csr: Arc<CertificateSigningRequest>, ctx: Arc<Ctx>| async move {
            let name = csr.name_any();
            let decision =
                decide(&csr, ctx.duration).map_err(|source| SigningControllerError::Parse {
                    name: name.clone(),
                    source,
                })?;
            let mut csr = (*csr).clone();
            let status = csr.status.get_or_insert_with(Default::default);
            match decision {
                Signing::Nothing => return Ok(None),
                Signing::Fail(message) => {
                    tracing::info!(controller = COMPONENT, csr = %name, "{message}");
                    status.conditions.get_or_insert_with(Vec::new).push(
                        CertificateSigningRequestCondition {
                            type_: FAILED.into(),
                            status: "True".into(),
                            reason: Some(signer::SIGNER_VALIDATION_FAILURE.into()),
                            message: Some(message),
                            last_update_time: Some(Time(jiff::Timestamp::now())),
                            last_transition_time: None,
                        },
                    );
                }
                Signing::Issue { request, ttl } => {
                    let usages = csr.spec.usages.clone().unwrap_or_default();
                    let pem = ctx
                        .authority
                        .sign(&request, &usages, ttl, jiff::Timestamp::now())?;
                    status.certificate = Some(ByteString(pem.into_bytes()));
                }
            }
            let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
            match api
                .replace_status(&name, &PostParams::default(), &csr)
                .await
            {
                Ok(_) => Ok(None),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
                Err(e) => Err(SigningControllerError::Update(e)),
            }
        },
    );
    tokio::select! {
        _ = feed => {}
        _ = workers => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificates::request::tests::request_pem;
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestSpec, CertificateSigningRequestStatus,
    };

    fn csr(
        signer: &str,
        cn: &str,
        orgs: &[&str],
        conditions: &[&str],
    ) -> CertificateSigningRequest {
        CertificateSigningRequest {
            metadata: Default::default(),
            spec: CertificateSigningRequestSpec {
                request: ByteString(request_pem(cn, orgs, vec![]).0.into_bytes()),
                signer_name: signer.into(),
                usages: Some(vec!["digital signature".into(), "client auth".into()]),
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            status: Some(CertificateSigningRequestStatus {
                conditions: Some(
                    conditions
                        .iter()
                        .map(|t| CertificateSigningRequestCondition {
                            type_: t.to_string(),
                            status: "True".into(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                certificate: None,
            }),
        }
    }

    #[test]
    fn only_approved_requests_of_built_in_signers_are_signed() {
        let year = signer::DEFAULT_DURATION;
        let kubelet = signer::KUBE_APISERVER_CLIENT_KUBELET;
        let node = |c: &[&str]| csr(kubelet, "system:node:n1", &["system:nodes"], c);
        assert_eq!(decide(&node(&[]), year).unwrap(), Signing::Nothing);
        assert_eq!(decide(&node(&["Denied"]), year).unwrap(), Signing::Nothing);
        assert_eq!(
            decide(&node(&["Approved", "Failed"]), year).unwrap(),
            Signing::Nothing
        );
        let Signing::Issue { request, ttl } = decide(&node(&["Approved"]), year).unwrap() else {
            panic!("an approved node client request is signed");
        };
        assert_eq!(
            (request.common_name.as_str(), ttl),
            ("system:node:n1", Duration::from_secs(3600))
        );
        let mut issued = node(&["Approved"]);
        issued.status.as_mut().unwrap().certificate = Some(ByteString(b"x".to_vec()));
        assert_eq!(decide(&issued, year).unwrap(), Signing::Nothing);
        let other = csr("example.com/mine", "x", &[], &["Approved"]);
        assert_eq!(decide(&other, year).unwrap(), Signing::Nothing);
    }

    #[test]
    fn a_request_the_signer_refuses_fails_with_its_reason() {
        let c = csr(
            signer::KUBE_APISERVER_CLIENT_KUBELET,
            "alice",
            &["system:nodes"],
            &["Approved"],
        );
        assert_eq!(
            decide(&c, signer::DEFAULT_DURATION).unwrap(),
            Signing::Fail("subject common name does not begin with system:node:".into())
        );
    }
}
