//! ServiceAccount tokens as kube-apiserver issues them: JWTs with the
//! standard claims (`iss`, `sub`, `aud`, `exp`, `iat`, `nbf`, `jti`) and the
//! private `kubernetes.io` claim naming the namespace, the ServiceAccount
//! and the object the token is bound to (`pkg/serviceaccount/claims.go`).
//! Signing and checking the signature and the times is pure; whether the
//! named objects still exist is [`super::authenticator`]'s job.

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rustls::pki_types::SubjectPublicKeyInfoDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// `system:serviceaccount:<ns>:<name>`, the user a token authenticates as.
pub const USER_PREFIX: &str = "system:serviceaccount:";
/// Every ServiceAccount is in this group, and in `system:serviceaccounts:<ns>`.
pub const ALL_SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";

/// Leeway for clocks that disagree a little, as go-jose's `DefaultLeeway`.
const LEEWAY_SECONDS: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading {what}: {source}")]
    Key {
        what: String,
        source: jsonwebtoken::errors::Error,
    },
    #[error("{0}: not a PEM public key")]
    PublicKeyPem(String),
    #[error("signing the token: {0}")]
    Sign(jsonwebtoken::errors::Error),
    /// Not a JWT this apiserver signed: other authenticators may know it.
    #[error("invalid bearer token")]
    NotOurs,
    #[error("service account token has expired")]
    Expired,
    #[error("service account token is not valid yet")]
    NotYetValid,
    #[error("token audiences {token:?} is invalid for the target audiences {target:?}")]
    Audience {
        token: Vec<String>,
        target: Vec<String>,
    },
    #[error("service account token claims are malformed: {0}")]
    Malformed(String),
}

/// A name and UID in the `kubernetes.io` claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

/// The private `kubernetes.io` claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    pub namespace: String,
    pub serviceaccount: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
    /// When a token whose expiry was extended (`--service-account-extend-token-expiration`)
    /// would have expired: using it later is logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnafter: Option<i64>,
}

/// `aud` is a string or a list of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Wire {
    iss: String,
    sub: String,
    aud: Audience,
    exp: i64,
    iat: i64,
    nbf: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    #[serde(rename = "kubernetes.io")]
    kubernetes: KubernetesClaims,
}

/// What a ServiceAccount token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub issuer: String,
    pub audiences: Vec<String>,
    /// Seconds since the epoch.
    pub issued_at: i64,
    pub not_before: i64,
    pub expires_at: i64,
    pub id: String,
    pub kubernetes: KubernetesClaims,
}

impl Claims {
    /// `system:serviceaccount:<ns>:<name>`.
    pub fn subject(&self) -> String {
        service_account_user(
            &self.kubernetes.namespace,
            &self.kubernetes.serviceaccount.name,
        )
    }

    fn to_wire(&self) -> Wire {
        Wire {
            iss: self.issuer.clone(),
            sub: self.subject(),
            aud: Audience::Many(self.audiences.clone()),
            exp: self.expires_at,
            iat: self.issued_at,
            nbf: self.not_before,
            jti: Some(self.id.clone()).filter(|j| !j.is_empty()),
            kubernetes: self.kubernetes.clone(),
        }
    }

    fn from_wire(w: Wire) -> Result<Self, TokenError> {
        let claims = Self {
            issuer: w.iss,
            audiences: match w.aud {
                Audience::One(a) => vec![a],
                Audience::Many(a) => a,
            },
            issued_at: w.iat,
            not_before: w.nbf,
            expires_at: w.exp,
            id: w.jti.unwrap_or_default(),
            kubernetes: w.kubernetes,
        };
        // The subject must name what the private claim names.
        if w.sub != claims.subject() {
            return Err(TokenError::Malformed(format!(
                "sub {:?} does not name the service account {:?}",
                w.sub,
                claims.subject()
            )));
        }
        Ok(claims)
    }
}

/// The user name of a ServiceAccount.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("{USER_PREFIX}{namespace}:{name}")
}

/// The groups a ServiceAccount's user is in (without `system:authenticated`,
/// which authentication adds to every user).
pub fn service_account_groups(namespace: &str) -> Vec<String> {
    vec![
        ALL_SERVICE_ACCOUNTS_GROUP.to_owned(),
        format!("{ALL_SERVICE_ACCOUNTS_GROUP}:{namespace}"),
    ]
}

/// kube-apiserver's key id: the unpadded base64url SHA-256 of the public
/// key's DER (SubjectPublicKeyInfo), so verifiers can pick the right key.
pub fn key_id(public_key_der: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(public_key_der))
}

/// Signs tokens with the apiserver's private key (ES256 for an ECDSA P-256
/// key, RS256 for an RSA key).
pub struct Signer {
    key: EncodingKey,
    header: Header,
}

impl Signer {
    /// `private_pem`: PKCS#8 (EC or RSA) or PKCS#1 (RSA); `public_der`: its
    /// public key, for the key id.
    pub fn from_pem(private_pem: &[u8], public_der: &[u8], what: &str) -> Result<Self, TokenError> {
        let (key, alg) = match EncodingKey::from_ec_pem(private_pem) {
            Ok(k) => (k, Algorithm::ES256),
            Err(_) => (
                EncodingKey::from_rsa_pem(private_pem).map_err(|source| TokenError::Key {
                    what: what.to_owned(),
                    source,
                })?,
                Algorithm::RS256,
            ),
        };
        let mut header = Header::new(alg);
        header.kid = Some(key_id(public_der));
        Ok(Self { key, header })
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&self.header, &claims.to_wire(), &self.key).map_err(TokenError::Sign)
    }
}

struct PublicKey {
    kid: String,
    key: DecodingKey,
    alg: Algorithm,
}

/// Checks tokens against the public keys (`--service-account-key-file`).
pub struct Verifier {
    keys: Vec<PublicKey>,
}

impl Verifier {
    pub fn from_pems(pems: &[(String, Vec<u8>)]) -> Result<Self, TokenError> {
        let mut keys = Vec::new();
        for (what, pem) in pems {
            let der = SubjectPublicKeyInfoDer::from_pem_slice(pem)
                .map_err(|_| TokenError::PublicKeyPem(what.clone()))?;
            let (key, alg) = match DecodingKey::from_ec_pem(pem) {
                Ok(k) => (k, Algorithm::ES256),
                Err(_) => (
                    DecodingKey::from_rsa_pem(pem).map_err(|source| TokenError::Key {
                        what: what.clone(),
                        source,
                    })?,
                    Algorithm::RS256,
                ),
            };
            keys.push(PublicKey {
                kid: key_id(der.as_ref()),
                key,
                alg,
            });
        }
        Ok(Self { keys })
    }

    /// The claims of a token whose signature one of the keys verifies and
    /// whose issuer is `issuer`; times and audiences are not checked here.
    pub fn decode(&self, token: &str, issuers: &[String]) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::NotOurs)?;
        // A key id picks the key; without one, every key of the algorithm is tried.
        let candidates = self
            .keys
            .iter()
            .filter(|k| k.alg == header.alg && header.kid.as_ref().is_none_or(|kid| *kid == k.kid));
        for k in candidates {
            let mut v = Validation::new(k.alg);
            // Checked by `validate` with the caller's clock and audiences.
            v.validate_exp = false;
            v.validate_nbf = false;
            v.validate_aud = false;
            v.required_spec_claims.clear();
            v.set_issuer(issuers);
            match jsonwebtoken::decode::<Wire>(token, &k.key, &v) {
                Ok(data) => return Claims::from_wire(data.claims),
                Err(e) => match e.kind() {
                    jsonwebtoken::errors::ErrorKind::Json(e) => {
                        return Err(TokenError::Malformed(e.to_string()));
                    }
                    _ => continue,
                },
            }
        }
        Err(TokenError::NotOurs)
    }
}

/// Checks the times against `now` and the audiences against `targets`
/// (kube-apiserver's `--api-audiences`, or a TokenReview's): the audiences
/// both name, which must not be none.
pub fn validate(claims: &Claims, now: i64, targets: &[String]) -> Result<Vec<String>, TokenError> {
    if now > claims.expires_at + LEEWAY_SECONDS {
        return Err(TokenError::Expired);
    }
    if now + LEEWAY_SECONDS < claims.not_before {
        return Err(TokenError::NotYetValid);
    }
    let both: Vec<String> = targets
        .iter()
        .filter(|t| claims.audiences.contains(t))
        .cloned()
        .collect();
    if both.is_empty() {
        return Err(TokenError::Audience {
            token: claims.audiences.clone(),
            target: targets.to_vec(),
        });
    }
    Ok(both)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh ECDSA P-256 pair: (private PKCS#8 PEM, public PEM, public DER).
    pub(crate) fn key_pair() -> (String, String, Vec<u8>) {
        use rcgen::PublicKeyData;
        let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        (
            k.serialize_pem(),
            k.public_key_pem(),
            k.subject_public_key_info(),
        )
    }

    fn claims() -> Claims {
        Claims {
            issuer: "https://kubernetes.default.svc.cluster.local".into(),
            audiences: vec!["https://kubernetes.default.svc.cluster.local".into()],
            issued_at: 1000,
            not_before: 1000,
            expires_at: 4600,
            id: "a-jti".into(),
            kubernetes: KubernetesClaims {
                namespace: "ns1".into(),
                serviceaccount: ObjectRef {
                    name: "builder".into(),
                    uid: "sa-uid".into(),
                },
                pod: Some(ObjectRef {
                    name: "p".into(),
                    uid: "pod-uid".into(),
                }),
                ..Default::default()
            },
        }
    }

    #[test]
    fn signed_token_carries_upstreams_claims_and_verifies() {
        let (private, public, der) = key_pair();
        let signer = Signer::from_pem(private.as_bytes(), &der, "sa.key").unwrap();
        let token = signer.sign(&claims()).unwrap();
        // The payload as any JWT reader sees it.
        let payload = token.split('.').nth(1).unwrap();
        let payload: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(payload["sub"], "system:serviceaccount:ns1:builder");
        assert_eq!(
            payload["aud"],
            serde_json::json!(["https://kubernetes.default.svc.cluster.local"])
        );
        assert_eq!(payload["exp"], 4600);
        assert_eq!(payload["kubernetes.io"]["serviceaccount"]["uid"], "sa-uid");
        assert_eq!(payload["kubernetes.io"]["pod"]["name"], "p");
        assert!(payload["kubernetes.io"].get("secret").is_none());
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.unwrap(), key_id(&der));

        let verifier = Verifier::from_pems(&[("sa.pub".into(), public.into_bytes())]).unwrap();
        let issuers = vec!["https://kubernetes.default.svc.cluster.local".to_owned()];
        let got = verifier.decode(&token, &issuers).unwrap();
        assert_eq!(got, claims());
        assert_eq!(got.subject(), "system:serviceaccount:ns1:builder");
        // Another issuer's token, or another key's signature, is not ours.
        assert!(matches!(
            verifier.decode(&token, &["https://other".to_owned()]),
            Err(TokenError::NotOurs)
        ));
        let (_, other_public, _) = key_pair();
        let other = Verifier::from_pems(&[("o.pub".into(), other_public.into_bytes())]).unwrap();
        assert!(matches!(
            other.decode(&token, &issuers),
            Err(TokenError::NotOurs)
        ));
        assert!(matches!(
            verifier.decode("not-a-jwt", &issuers),
            Err(TokenError::NotOurs)
        ));
    }

    #[test]
    fn times_and_audiences_are_checked() {
        let c = claims();
        let api = vec!["https://kubernetes.default.svc.cluster.local".to_owned()];
        assert_eq!(validate(&c, 2000, &api).unwrap(), api);
        // A minute of leeway either side.
        assert!(validate(&c, 4650, &api).is_ok());
        assert_eq!(
            validate(&c, 4700, &api).unwrap_err().to_string(),
            "service account token has expired"
        );
        assert!(matches!(
            validate(&c, 900, &api),
            Err(TokenError::NotYetValid)
        ));
        assert_eq!(
            validate(&c, 2000, &["vault".to_owned()])
                .unwrap_err()
                .to_string(),
            "token audiences [\"https://kubernetes.default.svc.cluster.local\"] is invalid for the target audiences [\"vault\"]"
        );
        let both = validate(&c, 2000, &["vault".to_owned(), api[0].clone()]).unwrap();
        assert_eq!(both, api);
    }
}
