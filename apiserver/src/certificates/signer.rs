//! kube-controller-manager's `csrsigning`: the built-in signers, what each
//! accepts (`isKubeletServing`, `isKubeletClient`, `isKubeAPIServerClient`
//! and their `Validate*CSR`), how long a certificate lives, and the
//! certificate itself (the CA's `PermissiveSigningPolicy`: the request's
//! subject, names and key, the usages the spec asks for, no CA).

use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, SubjectPublicKeyInfo,
};

use super::request::CertificateRequest;

pub const KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
pub const KUBE_APISERVER_CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
pub const LEGACY_UNKNOWN: &str = "kubernetes.io/legacy-unknown";

/// The reason of the `Failed` condition a signer sets on a request it
/// refuses.
pub const SIGNER_VALIDATION_FAILURE: &str = "SignerValidationFailure";

/// `--cluster-signing-duration`'s default: a year.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(8760 * 3600);
/// How far back `NotBefore` goes, for clocks that lag the signer's.
const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// Certificates shorter than this keep their whole life ahead of them.
const SHORT: Duration = Duration::from_secs(8 * 3600);
/// The shortest life the signer gives (twice the backdate).
const MIN_DURATION: Duration = Duration::from_secs(10 * 60);

const NODE_PREFIX: &str = "system:node:";
const NODES_GROUP: &str = "system:nodes";

/// Why a signer refuses a request it is responsible for; the text is the
/// `Failed` condition's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignerError {
    #[error("subject organization is not system:nodes")]
    OrganizationNotSystemNodes,
    #[error("subject common name does not begin with system:node:")]
    CommonNameNotSystemNode,
    #[error("DNS subjectAltNames are not allowed")]
    DnsSanNotAllowed,
    #[error("Email subjectAltNames are not allowed")]
    EmailSanNotAllowed,
    #[error("IP subjectAltNames are not allowed")]
    IpSanNotAllowed,
    #[error("URI subjectAltNames are not allowed")]
    UriSanNotAllowed,
    #[error("DNS or IP subjectAltName is required")]
    DnsOrIpSanRequired,
    /// The sorted usages the signer wants (Go's `sets.String.List()`).
    #[error("usages did not match [{}]", .0.join(" "))]
    UsagesDidNotMatch(Vec<&'static str>),
    #[error("invalid usage for client certificate: {0}")]
    InvalidClientUsage(String),
    #[error("missing required usage for client certificate: client auth")]
    MissingClientAuth,
}

fn same_usages(usages: &[String], wanted: &[&str]) -> bool {
    let mut have: Vec<&str> = usages.iter().map(String::as_str).collect();
    have.sort_unstable();
    have.dedup();
    let mut want = wanted.to_vec();
    want.sort_unstable();
    have == want
}

fn node_subject(req: &CertificateRequest) -> Result<(), SignerError> {
    if req.organizations != [NODES_GROUP] {
        return Err(SignerError::OrganizationNotSystemNodes);
    }
    Ok(())
}

/// `ValidateKubeletClientCSR`.
fn kubelet_client(req: &CertificateRequest, usages: &[String]) -> Result<(), SignerError> {
    node_subject(req)?;
    if !req.dns_names.is_empty() {
        return Err(SignerError::DnsSanNotAllowed);
    }
    if !req.email_addresses.is_empty() {
        return Err(SignerError::EmailSanNotAllowed);
    }
    if !req.ip_addresses.is_empty() {
        return Err(SignerError::IpSanNotAllowed);
    }
    if !req.uris.is_empty() {
        return Err(SignerError::UriSanNotAllowed);
    }
    if !req.common_name.starts_with(NODE_PREFIX) {
        return Err(SignerError::CommonNameNotSystemNode);
    }
    let with_rsa = ["client auth", "digital signature", "key encipherment"];
    if !same_usages(usages, &with_rsa)
        && !same_usages(usages, &["client auth", "digital signature"])
    {
        return Err(SignerError::UsagesDidNotMatch(with_rsa.to_vec()));
    }
    Ok(())
}

/// `ValidateKubeletServingCSR`.
fn kubelet_serving(req: &CertificateRequest, usages: &[String]) -> Result<(), SignerError> {
    node_subject(req)?;
    if req.dns_names.is_empty() && req.ip_addresses.is_empty() {
        return Err(SignerError::DnsOrIpSanRequired);
    }
    if !req.email_addresses.is_empty() {
        return Err(SignerError::EmailSanNotAllowed);
    }
    if !req.uris.is_empty() {
        return Err(SignerError::UriSanNotAllowed);
    }
    let with_rsa = ["digital signature", "key encipherment", "server auth"];
    if !same_usages(usages, &with_rsa)
        && !same_usages(usages, &["digital signature", "server auth"])
    {
        return Err(SignerError::UsagesDidNotMatch(with_rsa.to_vec()));
    }
    if !req.common_name.starts_with(NODE_PREFIX) {
        return Err(SignerError::CommonNameNotSystemNode);
    }
    Ok(())
}

/// `validAPIServerClientUsages`.
fn kube_apiserver_client(usages: &[String]) -> Result<(), SignerError> {
    let mut client_auth = false;
    for u in usages {
        match u.as_str() {
            "digital signature" | "key encipherment" => {}
            "client auth" => client_auth = true,
            other => return Err(SignerError::InvalidClientUsage(other.to_owned())),
        }
    }
    if !client_auth {
        return Err(SignerError::MissingClientAuth);
    }
    Ok(())
}

/// Whether one of the built-in signers answers for `signer`.
pub fn is_built_in(signer: &str) -> bool {
    matches!(
        signer,
        KUBELET_SERVING | KUBE_APISERVER_CLIENT_KUBELET | KUBE_APISERVER_CLIENT
    )
}

/// What the built-in signers do with an approved request for `signer`:
/// `None` if none of them answers for that signer (another signer's, or
/// `legacy-unknown`, which nothing signs), else whether it will sign.
pub fn check(
    signer: &str,
    req: &CertificateRequest,
    usages: &[String],
) -> Option<Result<(), SignerError>> {
    match signer {
        KUBELET_SERVING => Some(kubelet_serving(req, usages)),
        KUBE_APISERVER_CLIENT_KUBELET => Some(kubelet_client(req, usages)),
        KUBE_APISERVER_CLIENT => Some(kube_apiserver_client(usages)),
        _ => None,
    }
}

/// The certificate's life: `expirationSeconds` when it is shorter than the
/// signer's `--cluster-signing-duration`, but never under ten minutes.
pub fn duration(expiration_seconds: Option<i32>, signing_duration: Duration) -> Duration {
    let Some(secs) = expiration_seconds else {
        return signing_duration;
    };
    let requested = Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    requested.clamp(MIN_DURATION, signing_duration.max(MIN_DURATION))
}

/// `NotBefore` and `NotAfter` for a certificate of life `ttl` issued at
/// `now` by a CA valid until `ca_not_after`.
pub fn validity(
    now: jiff::Timestamp,
    ttl: Duration,
    ca_not_after: jiff::Timestamp,
) -> Result<(jiff::Timestamp, jiff::Timestamp), SigningError> {
    let span = |d: Duration| jiff::SignedDuration::try_from(d).expect("durations fit");
    let not_before = now - span(BACKDATE);
    let not_after = if ttl < SHORT {
        now + span(ttl)
    } else {
        now + span(ttl) - span(BACKDATE)
    };
    if now >= ca_not_after {
        return Err(SigningError::Expired(ca_not_after));
    }
    Ok((not_before, not_after.min(ca_not_after)))
}

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("refusing to sign a certificate that expired in the past: NotAfter={0}")]
    Expired(jiff::Timestamp),
    #[error("unknown usage: {0}")]
    UnknownUsage(String),
    #[error("signing: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("the CA certificate: {0}")]
    Ca(String),
}

/// The CA a signer issues with (`--cluster-signing-cert-file`/`-key-file`).
pub struct SigningAuthority {
    cert_pem: String,
    key: KeyPair,
    not_after: jiff::Timestamp,
}

impl SigningAuthority {
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, SigningError> {
        let key = KeyPair::from_pem(key_pem)?;
        let block = pem::parse(cert_pem).map_err(|e| SigningError::Ca(e.to_string()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(block.contents())
            .map_err(|e| SigningError::Ca(e.to_string()))?;
        let not_after = jiff::Timestamp::from_second(cert.validity().not_after.timestamp())
            .map_err(|e| SigningError::Ca(e.to_string()))?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            key,
            not_after,
        })
    }

    /// A certificate (PEM) for `req`, valid for `ttl` from `now`.
    pub fn sign(
        &self,
        req: &CertificateRequest,
        usages: &[String],
        ttl: Duration,
        now: jiff::Timestamp,
    ) -> Result<String, SigningError> {
        let (not_before, not_after) = validity(now, ttl, self.not_after)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        for o in &req.organizations {
            dn.push(DnType::OrganizationName, o.as_str());
        }
        if !req.common_name.is_empty() {
            dn.push(DnType::CommonName, req.common_name.as_str());
        }
        params.distinguished_name = dn;
        for d in &req.dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName(d.clone().try_into()?));
        }
        for ip in &req.ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        for e in &req.email_addresses {
            params
                .subject_alt_names
                .push(SanType::Rfc822Name(e.clone().try_into()?));
        }
        for u in &req.uris {
            params
                .subject_alt_names
                .push(SanType::URI(u.clone().try_into()?));
        }
        for u in usages {
            match key_usage(u) {
                Some(Usage::Key(k)) if !params.key_usages.contains(&k) => params.key_usages.push(k),
                Some(Usage::Key(_)) => {}
                Some(Usage::Extended(e)) => params.insert_extended_key_usage(e),
                None => return Err(SigningError::UnknownUsage(u.clone())),
            }
        }
        params.not_before = to_offset(not_before)?;
        params.not_after = to_offset(not_after)?;
        let mut serial = [0u8; 16];
        fastrand::fill(&mut serial);
        serial[0] &= 0x7f;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.use_authority_key_identifier_extension = true;
        // Basic constraints present, saying "not a CA", as Go's template does.
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        let public_key = SubjectPublicKeyInfo::from_der(&req.public_key_info)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?;
        Ok(params.signed_by(&public_key, &issuer)?.pem())
    }
}

fn to_offset(t: jiff::Timestamp) -> Result<time::OffsetDateTime, SigningError> {
    time::OffsetDateTime::from_unix_timestamp(t.as_second())
        .map_err(|e| SigningError::Ca(e.to_string()))
}

enum Usage {
    Key(KeyUsagePurpose),
    Extended(ExtendedKeyUsagePurpose),
}

/// `keyUsagesFromStrings`: the Certificates API's usage names.
fn key_usage(name: &str) -> Option<Usage> {
    use ExtendedKeyUsagePurpose as E;
    use KeyUsagePurpose as K;
    Some(match name {
        "signing" | "digital signature" => Usage::Key(K::DigitalSignature),
        "content commitment" => Usage::Key(K::ContentCommitment),
        "key encipherment" => Usage::Key(K::KeyEncipherment),
        "key agreement" => Usage::Key(K::KeyAgreement),
        "data encipherment" => Usage::Key(K::DataEncipherment),
        "cert sign" => Usage::Key(K::KeyCertSign),
        "crl sign" => Usage::Key(K::CrlSign),
        "encipher only" => Usage::Key(K::EncipherOnly),
        "decipher only" => Usage::Key(K::DecipherOnly),
        "any" => Usage::Extended(E::Any),
        "server auth" => Usage::Extended(E::ServerAuth),
        "client auth" => Usage::Extended(E::ClientAuth),
        "code signing" => Usage::Extended(E::CodeSigning),
        "email protection" | "s/mime" => Usage::Extended(E::EmailProtection),
        "timestamping" => Usage::Extended(E::TimeStamping),
        "ocsp signing" => Usage::Extended(E::OcspSigning),
        "ipsec end system" => Usage::Extended(E::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 5])),
        "ipsec tunnel" => Usage::Extended(E::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 6])),
        "ipsec user" => Usage::Extended(E::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 7])),
        "microsoft sgc" => Usage::Extended(E::Other(vec![1, 3, 6, 1, 4, 1, 311, 10, 3, 3])),
        "netscape sgc" => Usage::Extended(E::Other(vec![2, 16, 840, 1, 113730, 4, 1])),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificates::request::{parse, tests::request_pem};

    fn usages(u: &[&str]) -> Vec<String> {
        u.iter().map(|s| s.to_string()).collect()
    }

    fn req(cn: &str, orgs: &[&str], sans: Vec<SanType>) -> CertificateRequest {
        parse(request_pem(cn, orgs, sans).0.as_bytes()).unwrap()
    }

    #[test]
    fn kubelet_serving_wants_a_node_subject_dns_or_ip_names_and_server_usages() {
        let ok = req(
            "system:node:n1",
            &["system:nodes"],
            vec![SanType::IpAddress("10.0.0.1".parse().unwrap())],
        );
        let serving = usages(&["digital signature", "key encipherment", "server auth"]);
        assert_eq!(check(KUBELET_SERVING, &ok, &serving), Some(Ok(())));
        assert_eq!(
            check(
                KUBELET_SERVING,
                &ok,
                &usages(&["digital signature", "server auth"])
            ),
            Some(Ok(()))
        );
        assert_eq!(
            check(KUBELET_SERVING, &ok, &usages(&["client auth"]))
                .unwrap()
                .unwrap_err()
                .to_string(),
            "usages did not match [digital signature key encipherment server auth]"
        );
        let no_names = req("system:node:n1", &["system:nodes"], vec![]);
        assert_eq!(
            check(KUBELET_SERVING, &no_names, &serving),
            Some(Err(SignerError::DnsOrIpSanRequired))
        );
        let wrong_cn = req(
            "n1",
            &["system:nodes"],
            vec![SanType::DnsName("n1".try_into().unwrap())],
        );
        assert_eq!(
            check(KUBELET_SERVING, &wrong_cn, &serving),
            Some(Err(SignerError::CommonNameNotSystemNode))
        );
        let wrong_org = req(
            "system:node:n1",
            &["system:masters"],
            vec![SanType::DnsName("n1".try_into().unwrap())],
        );
        assert_eq!(
            check(KUBELET_SERVING, &wrong_org, &serving)
                .unwrap()
                .unwrap_err()
                .to_string(),
            "subject organization is not system:nodes"
        );
        let uri = req(
            "system:node:n1",
            &["system:nodes"],
            vec![
                SanType::DnsName("n1".try_into().unwrap()),
                SanType::URI("spiffe://x".try_into().unwrap()),
            ],
        );
        assert_eq!(
            check(KUBELET_SERVING, &uri, &serving),
            Some(Err(SignerError::UriSanNotAllowed))
        );
    }

    #[test]
    fn kubelet_client_wants_a_node_subject_without_names() {
        let client = usages(&["digital signature", "key encipherment", "client auth"]);
        let ok = req("system:node:n1", &["system:nodes"], vec![]);
        assert_eq!(
            check(KUBE_APISERVER_CLIENT_KUBELET, &ok, &client),
            Some(Ok(()))
        );
        let named = req(
            "system:node:n1",
            &["system:nodes"],
            vec![SanType::DnsName("n1".try_into().unwrap())],
        );
        assert_eq!(
            check(KUBE_APISERVER_CLIENT_KUBELET, &named, &client)
                .unwrap()
                .unwrap_err()
                .to_string(),
            "DNS subjectAltNames are not allowed"
        );
        assert_eq!(
            check(
                KUBE_APISERVER_CLIENT_KUBELET,
                &ok,
                &usages(&["server auth"])
            )
            .unwrap()
            .unwrap_err()
            .to_string(),
            "usages did not match [client auth digital signature key encipherment]"
        );
    }

    #[test]
    fn apiserver_client_wants_client_auth_only() {
        let any = req("alice", &["devs"], vec![]);
        assert_eq!(
            check(KUBE_APISERVER_CLIENT, &any, &usages(&["client auth"])),
            Some(Ok(()))
        );
        assert_eq!(
            check(
                KUBE_APISERVER_CLIENT,
                &any,
                &usages(&["client auth", "server auth"])
            )
            .unwrap()
            .unwrap_err()
            .to_string(),
            "invalid usage for client certificate: server auth"
        );
        assert_eq!(
            check(KUBE_APISERVER_CLIENT, &any, &usages(&["digital signature"]))
                .unwrap()
                .unwrap_err()
                .to_string(),
            "missing required usage for client certificate: client auth"
        );
    }

    #[test]
    fn legacy_unknown_and_other_signers_are_not_ours() {
        let any = req("alice", &[], vec![]);
        assert_eq!(check(LEGACY_UNKNOWN, &any, &usages(&["client auth"])), None);
        assert_eq!(
            check("example.com/signer", &any, &usages(&["client auth"])),
            None
        );
    }

    #[test]
    fn requested_durations_are_honoured_within_bounds() {
        assert_eq!(duration(None, DEFAULT_DURATION), DEFAULT_DURATION);
        assert_eq!(
            duration(Some(3600), DEFAULT_DURATION),
            Duration::from_secs(3600)
        );
        assert_eq!(duration(Some(i32::MAX), DEFAULT_DURATION), DEFAULT_DURATION);
        assert_eq!(
            duration(Some(60), DEFAULT_DURATION),
            Duration::from_secs(600)
        );
    }

    #[test]
    fn short_certificates_are_not_cut_by_the_backdate_and_none_outlive_the_ca() {
        let now = jiff::Timestamp::from_second(1_000_000_000).unwrap();
        let far = jiff::Timestamp::from_second(2_000_000_000).unwrap();
        let (nb, na) = validity(now, Duration::from_secs(3600), far).unwrap();
        assert_eq!(
            (nb.as_second(), na.as_second()),
            (now.as_second() - 300, now.as_second() + 3600)
        );
        let (_, na) = validity(now, DEFAULT_DURATION, far).unwrap();
        assert_eq!(na.as_second(), now.as_second() + 8760 * 3600 - 300);
        let soon = jiff::Timestamp::from_second(1_000_001_000).unwrap();
        assert_eq!(validity(now, DEFAULT_DURATION, soon).unwrap().1, soon);
        assert!(validity(far, DEFAULT_DURATION, soon).is_err());
    }

    #[test]
    fn the_certificate_carries_the_request_and_the_asked_usages() {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "test-ca");
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let authority = SigningAuthority::from_pem(&ca_pem, &ca_key.serialize_pem()).unwrap();
        let r = req(
            "system:node:n1",
            &["system:nodes"],
            vec![SanType::DnsName("n1".try_into().unwrap())],
        );
        let now = jiff::Timestamp::now();
        let pem = authority
            .sign(
                &r,
                &usages(&["digital signature", "server auth"]),
                Duration::from_secs(3600),
                now,
            )
            .unwrap();
        let der = ::pem::parse(&pem).unwrap().into_contents();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            cert.subject().to_string(),
            "O=system:nodes, CN=system:node:n1"
        );
        assert_eq!(cert.issuer().to_string(), "CN=test-ca");
        assert!(
            cert.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .server_auth
        );
        assert!(
            !cert
                .extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .client_auth
        );
        assert!(cert.key_usage().unwrap().unwrap().value.digital_signature());
        assert!(!cert.is_ca());
        assert_eq!(
            cert.validity().not_after.timestamp(),
            now.as_second() + 3600
        );
        assert_eq!(cert.public_key().raw, r.public_key_info.as_slice());
    }
}
