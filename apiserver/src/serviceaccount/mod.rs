//! ServiceAccount tokens: the TokenRequest API issues bound, expiring
//! JWTs signed by the apiserver ([`token_request`]); the
//! [`authenticator::Authenticator`] verifies them on every request and for
//! TokenReviews, refusing tokens whose ServiceAccount or bound pod is gone;
//! the ServiceAccount admission plugin ([`admission`]) gives pods the
//! projected volume the kubelet fills with such a token.

pub mod admission;
pub mod authenticator;
pub mod keys;
pub mod token;
pub mod token_request;

use std::path::Path;

pub use authenticator::{Authenticator, VerifyError};
use keys::{KeyFileError, KeyFlags};
use token::{Signer, Verifier};

/// kubeadm's `--service-account-issuer`.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// `--service-account-*` and `--api-audiences`.
#[derive(Debug, Clone)]
pub struct TokenFlags {
    pub keys: KeyFlags,
    /// `--service-account-issuer`: the `iss` of issued tokens; every value
    /// is accepted on use, the first is the one issued.
    pub issuers: Vec<String>,
    /// `--api-audiences`: what a token must be meant for to reach this
    /// API; empty: the issuer.
    pub api_audiences: Vec<String>,
    /// `--service-account-max-token-expiration` in seconds; none: no cap.
    pub max_expiration_seconds: Option<i64>,
    /// `--service-account-extend-token-expiration`: pod-bound tokens asked
    /// for with the kubelet's default lifetime (3607 s) live a year and
    /// carry `warnafter`, so clients that never reload keep working.
    pub extend_expiration: bool,
}

impl Default for TokenFlags {
    fn default() -> Self {
        Self {
            keys: KeyFlags::default(),
            issuers: vec![DEFAULT_ISSUER.to_owned()],
            api_audiences: Vec::new(),
            max_expiration_seconds: None,
            extend_expiration: true,
        }
    }
}

/// The apiserver's token signer and verifier with the flags that shape
/// tokens.
pub struct ServiceAccountTokens {
    pub issuers: Vec<String>,
    pub api_audiences: Vec<String>,
    pub max_expiration_seconds: Option<i64>,
    pub extend_expiration: bool,
    signer: Signer,
    verifier: Verifier,
}

impl ServiceAccountTokens {
    fn new(flags: &TokenFlags, signer: Signer, verifier: Verifier) -> Self {
        let issuers = if flags.issuers.is_empty() {
            vec![DEFAULT_ISSUER.to_owned()]
        } else {
            flags.issuers.clone()
        };
        let api_audiences = if flags.api_audiences.is_empty() {
            vec![issuers[0].clone()]
        } else {
            flags.api_audiences.clone()
        };
        Self {
            issuers,
            api_audiences,
            max_expiration_seconds: flags.max_expiration_seconds,
            extend_expiration: flags.extend_expiration,
            signer,
            verifier,
        }
    }

    /// Keys from the flags or the data dir.
    pub fn load(data_dir: &Path, flags: &TokenFlags) -> Result<Self, KeyFileError> {
        let (signer, verifier) = keys::load(data_dir, &flags.keys)?;
        Ok(Self::new(flags, signer, verifier))
    }

    /// Keys made in memory, for an apiserver without a data dir.
    pub fn ephemeral() -> Result<Self, KeyFileError> {
        let (signer, verifier) = keys::ephemeral()?;
        Ok(Self::new(&TokenFlags::default(), signer, verifier))
    }

    /// The issuer written into new tokens.
    pub fn issuer(&self) -> &str {
        &self.issuers[0]
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }
}
