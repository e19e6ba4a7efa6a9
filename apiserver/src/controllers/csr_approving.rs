//! The CSR approving controller (kube-controller-manager's
//! `csrapproving`): a node client certificate request
//! (`kubernetes.io/kube-apiserver-client-kubelet`, subject
//! `system:node:<name>` in `system:nodes`) is approved when a
//! SubjectAccessReview says its requester may create
//! `certificatesigningrequests/selfnodeclient` (a node renewing its own)
//! or `certificatesigningrequests/nodeclient` (a new node, with a bootstrap
//! token). Nothing else is approved here: serving certificates wait for an
//! administrator.

use std::sync::Arc;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, PostParams};

use super::informers::Informers;
use super::work_queue;
use crate::certificates::{request, signer};
use crate::kinds::certificates::{APPROVED, DENIED, GROUP};

const COMPONENT: &str = "csrapproving-controller";
const CONCURRENT_SYNCS: u16 = 5;
/// The reason of the conditions this controller adds.
pub const AUTO_APPROVED: &str = "AutoApproved";

/// A kind of request the approver recognizes, and the permission its
/// requester needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recognized {
    /// The subresource of `certificatesigningrequests` to create.
    pub subresource: &'static str,
    pub message: &'static str,
}

const SELF_NODE_CLIENT: Recognized = Recognized {
    subresource: "selfnodeclient",
    message: "Auto approving self kubelet client certificate after SubjectAccessReview.",
};
const NODE_CLIENT: Recognized = Recognized {
    subresource: "nodeclient",
    message: "Auto approving kubelet client certificate after SubjectAccessReview.",
};

/// The permissions that would approve `csr`, most specific first; none for
/// a request decided, issued, or not a node client certificate's.
pub fn recognize(csr: &CertificateSigningRequest) -> Vec<Recognized> {
    let status = csr.status.as_ref();
    let issued = status
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty());
    let decided = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == APPROVED || c.type_ == DENIED));
    if issued || decided || csr.spec.signer_name != signer::KUBE_APISERVER_CLIENT_KUBELET {
        return Vec::new();
    }
    let Ok(req) = request::parse(&csr.spec.request.0) else {
        return Vec::new();
    };
    let usages = csr.spec.usages.as_deref().unwrap_or(&[]);
    if !matches!(
        signer::check(&csr.spec.signer_name, &req, usages),
        Some(Ok(()))
    ) {
        return Vec::new();
    }
    let mut found = Vec::new();
    if csr.spec.username.as_deref() == Some(req.common_name.as_str()) {
        found.push(SELF_NODE_CLIENT);
    }
    found.push(NODE_CLIENT);
    found
}

/// The review asking whether the requester may create `subresource`.
pub fn review(csr: &CertificateSigningRequest, subresource: &str) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: csr.spec.username.clone(),
            uid: csr.spec.uid.clone(),
            groups: csr.spec.groups.clone(),
            extra: csr.spec.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some(GROUP.into()),
                resource: Some("certificatesigningrequests".into()),
                subresource: Some(subresource.into()),
                verb: Some("create".into()),
                version: Some("*".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApprovingError {
    #[error("asking whether csr {name:?} may be approved: {source}")]
    Review { name: String, source: kube::Error },
    #[error("error updating approval for csr: {0}")]
    Update(kube::Error),
}

/// Runs until the informers stop.
pub async fn run(informers: Informers) -> anyhow::Result<()> {
    let csrs = informers.get::<CertificateSigningRequest>();
    let (queue, keys) = work_queue::queue::<CertificateSigningRequest>();
    let changes = csrs.subscribe();
    csrs.synced().await;
    queue.add_all(&csrs.store);
    let feed = queue.follow(changes, &csrs.store);
    let workers = work_queue::run(
        COMPONENT,
        csrs.store.clone(),
        keys,
        Arc::new(informers.client()),
        CONCURRENT_SYNCS,
        |csr: Arc<CertificateSigningRequest>, client: Arc<kube::Client>| async move {
            let name = csr.name_any();
            let reviews: Api<SubjectAccessReview> = Api::all((*client).clone());
            let mut tried = Vec::new();
            for r in recognize(&csr) {
                tried.push(r.subresource);
                let answer = reviews
                    .create(&PostParams::default(), &review(&csr, r.subresource))
                    .await
                    .map_err(|source| ApprovingError::Review {
                        name: name.clone(),
                        source,
                    })?;
                if !answer.status.is_some_and(|s| s.allowed) {
                    continue;
                }
                let mut approved = (*csr).clone();
                approved
                    .status
                    .get_or_insert_with(Default::default)
                    .conditions
                    .get_or_insert_with(Vec::new)
                    .push(CertificateSigningRequestCondition {
                        type_: APPROVED.into(),
                        status: "True".into(),
                        reason: Some(AUTO_APPROVED.into()),
                        message: Some(r.message.into()),
                        last_update_time: Some(Time(jiff::Timestamp::now())),
                        last_transition_time: None,
                    });
                let csrs: Api<CertificateSigningRequest> = Api::all((*client).clone());
                return match csrs
                    .replace_subresource("approval", &name, &PostParams::default(), &approved)
                    .await
                {
                    Ok(_) => Ok(None),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
                    Err(e) => Err(ApprovingError::Update(e)),
                };
            }
            if !tried.is_empty() {
                // An ignorable error upstream: logged, not retried.
                tracing::info!(
                    controller = COMPONENT,
                    "recognized csr {name:?} as {tried:?} but subject access review was not approved"
                );
            }
            Ok(None)
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
    use k8s_openapi::ByteString;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;

    fn csr(signer: &str, cn: &str, username: &str, usages: &[&str]) -> CertificateSigningRequest {
        CertificateSigningRequest {
            metadata: Default::default(),
            spec: CertificateSigningRequestSpec {
                request: ByteString(request_pem(cn, &["system:nodes"], vec![]).0.into_bytes()),
                signer_name: signer.into(),
                usages: Some(usages.iter().map(|u| u.to_string()).collect()),
                username: Some(username.into()),
                ..Default::default()
            },
            status: None,
        }
    }

    const CLIENT: [&str; 3] = ["digital signature", "key encipherment", "client auth"];

    #[test]
    fn a_node_renewing_its_own_is_self_node_client_first() {
        let c = csr(
            signer::KUBE_APISERVER_CLIENT_KUBELET,
            "system:node:n1",
            "system:node:n1",
            &CLIENT,
        );
        assert_eq!(recognize(&c), vec![SELF_NODE_CLIENT, NODE_CLIENT]);
        let sar = review(&c, "selfnodeclient");
        assert_eq!(sar.spec.user.as_deref(), Some("system:node:n1"));
        let attrs = sar.spec.resource_attributes.unwrap();
        assert_eq!(
            (
                attrs.group.as_deref(),
                attrs.subresource.as_deref(),
                attrs.verb.as_deref()
            ),
            (
                Some("certificates.k8s.io"),
                Some("selfnodeclient"),
                Some("create")
            )
        );
    }

    #[test]
    fn a_bootstrapping_node_is_node_client() {
        let c = csr(
            signer::KUBE_APISERVER_CLIENT_KUBELET,
            "system:node:n1",
            "system:bootstrap:abcdef",
            &CLIENT,
        );
        assert_eq!(recognize(&c), vec![NODE_CLIENT]);
    }

    #[test]
    fn serving_and_other_requests_are_left_to_an_administrator() {
        let serving = csr(
            signer::KUBELET_SERVING,
            "system:node:n1",
            "system:node:n1",
            &["digital signature", "key encipherment", "server auth"],
        );
        assert!(recognize(&serving).is_empty());
        let not_a_node = csr(
            signer::KUBE_APISERVER_CLIENT_KUBELET,
            "alice",
            "alice",
            &CLIENT,
        );
        assert!(recognize(&not_a_node).is_empty());
        let wrong_usages = csr(
            signer::KUBE_APISERVER_CLIENT_KUBELET,
            "system:node:n1",
            "x",
            &["client auth"],
        );
        assert!(recognize(&wrong_usages).is_empty());
        let mut decided = csr(
            signer::KUBE_APISERVER_CLIENT_KUBELET,
            "system:node:n1",
            "x",
            &CLIENT,
        );
        decided.status = Some(
            k8s_openapi::api::certificates::v1::CertificateSigningRequestStatus {
                conditions: Some(vec![CertificateSigningRequestCondition {
                    type_: DENIED.into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                certificate: None,
            },
        );
        assert!(recognize(&decided).is_empty());
    }
}
