//! A PKCS#10 certificate signing request as the Certificates API reads
//! `spec.request`: one PEM block of type `CERTIFICATE REQUEST` whose
//! signature verifies (`certificates.ParseCSR` and `CheckSignature`), and
//! the parts the signers look at.

use std::net::IpAddr;

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Go's message for a request that is not one such PEM block.
    #[error("PEM block type must be CERTIFICATE REQUEST")]
    NotPem,
    #[error("x509: malformed certificate request")]
    Malformed,
    #[error("x509: invalid signature: {0}")]
    Signature(String),
}

/// What a signer needs from a verified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRequest {
    pub common_name: String,
    /// The subject's O values, in order.
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub email_addresses: Vec<String>,
    pub uris: Vec<String>,
    /// The requester's SubjectPublicKeyInfo (DER), which the certificate
    /// carries.
    pub public_key_info: Vec<u8>,
}

/// Parses and verifies `spec.request`.
pub fn parse(request: &[u8]) -> Result<CertificateRequest, RequestError> {
    let text = std::str::from_utf8(request).map_err(|_| RequestError::NotPem)?;
    let block = pem::parse(text).map_err(|_| RequestError::NotPem)?;
    if block.tag() != "CERTIFICATE REQUEST" {
        return Err(RequestError::NotPem);
    }
    let (_, csr) = X509CertificationRequest::from_der(block.contents())
        .map_err(|_| RequestError::Malformed)?;
    csr.verify_signature()
        .map_err(|e| RequestError::Signature(e.to_string()))?;
    let info = &csr.certification_request_info;
    let text_values = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue>| {
        it.filter_map(|a| a.as_str().ok().map(String::from))
            .collect::<Vec<_>>()
    };
    let mut out = CertificateRequest {
        common_name: text_values(&mut info.subject.iter_common_name())
            .into_iter()
            .next()
            .unwrap_or_default(),
        organizations: text_values(&mut info.subject.iter_organization()),
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        email_addresses: Vec::new(),
        uris: Vec::new(),
        public_key_info: info.subject_pki.raw.to_vec(),
    };
    for ext in csr.requested_extensions().into_iter().flatten() {
        let ParsedExtension::SubjectAlternativeName(san) = ext else {
            continue;
        };
        for name in &san.general_names {
            match name {
                GeneralName::DNSName(d) => out.dns_names.push((*d).to_owned()),
                GeneralName::RFC822Name(e) => out.email_addresses.push((*e).to_owned()),
                GeneralName::URI(u) => out.uris.push((*u).to_owned()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => out
                        .ip_addresses
                        .push(IpAddr::from(<[u8; 4]>::try_from(*b).expect("4 bytes"))),
                    16 => out
                        .ip_addresses
                        .push(IpAddr::from(<[u8; 16]>::try_from(*b).expect("16 bytes"))),
                    _ => return Err(RequestError::Malformed),
                },
                _ => {}
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    /// A request for `cn` in `orgs` with `sans`, as a client makes one.
    pub fn request_pem(cn: &str, orgs: &[&str], sans: Vec<SanType>) -> (String, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        for o in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = sans;
        (params.serialize_request(&key).unwrap().pem().unwrap(), key)
    }

    #[test]
    fn a_request_yields_its_subject_names_and_key() {
        let (pem, key) = request_pem(
            "system:node:n1",
            &["system:nodes"],
            vec![
                SanType::DnsName("n1".try_into().unwrap()),
                SanType::IpAddress("10.0.0.7".parse().unwrap()),
            ],
        );
        let r = parse(pem.as_bytes()).unwrap();
        assert_eq!(r.common_name, "system:node:n1");
        assert_eq!(r.organizations, vec!["system:nodes"]);
        assert_eq!(r.dns_names, vec!["n1"]);
        assert_eq!(r.ip_addresses, vec!["10.0.0.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            r.public_key_info,
            rcgen::PublicKeyData::subject_public_key_info(&key)
        );
    }

    #[test]
    fn anything_but_a_signed_request_is_refused_with_gos_words() {
        assert_eq!(
            parse(b"hello").unwrap_err().to_string(),
            "PEM block type must be CERTIFICATE REQUEST"
        );
        let cert = rcgen::generate_simple_self_signed(vec!["a".into()]).unwrap();
        assert_eq!(
            parse(cert.cert.pem().as_bytes()).unwrap_err(),
            RequestError::NotPem
        );
        // A request whose body was altered after signing.
        let (pem, _) = request_pem("alice", &[], vec![]);
        let mut der = ::pem::parse(&pem).unwrap().into_contents();
        let at = der.windows(5).position(|w| w == b"alice").unwrap();
        der[at] = b'm';
        let tampered = ::pem::encode(&::pem::Pem::new("CERTIFICATE REQUEST", der));
        assert!(matches!(
            parse(tampered.as_bytes()),
            Err(RequestError::Signature(_))
        ));
    }
}
