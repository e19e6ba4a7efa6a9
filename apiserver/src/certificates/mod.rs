//! The Certificates API's machinery: reading a certificate signing
//! request ([`request`]) and the built-in signers ([`signer`]), shared by
//! the CertificateSigningRequest strategy and the signing controller.

pub mod request;
pub mod signer;
