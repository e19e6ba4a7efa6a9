//! The key pair ServiceAccount tokens are signed with, as kube-apiserver's
//! `--service-account-signing-key-file` and `--service-account-key-file`
//! name them; without those flags, `sa.key`/`sa.pub` in the data dir (the
//! names kubeadm gives them), an ECDSA P-256 pair made on first start and
//! kept across restarts so issued tokens stay valid.

use std::path::{Path, PathBuf};

use rcgen::PublicKeyData;
use rustls::pki_types::SubjectPublicKeyInfoDer;
use rustls::pki_types::pem::PemObject;

use super::token::{Signer, TokenError, Verifier};

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("making the service account signing key: {0}")]
    Generate(rcgen::Error),
    #[error("{path}: not a private key the service account signer can use: {source}")]
    Private { path: PathBuf, source: rcgen::Error },
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// `--service-account-signing-key-file` and `--service-account-key-file`.
#[derive(Debug, Clone, Default)]
pub struct KeyFlags {
    pub signing_key_file: Option<PathBuf>,
    pub key_files: Vec<PathBuf>,
}

fn read(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    std::fs::read(path).map_err(|source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, contents: &str, mode: u32) -> Result<(), KeyFileError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The public key of a private key PEM, as PEM.
fn public_of(private_pem: &str, path: &Path) -> Result<String, KeyFileError> {
    rcgen::KeyPair::from_pem(private_pem)
        .map(|k| k.public_key_pem())
        .map_err(|source| KeyFileError::Private {
            path: path.to_owned(),
            source,
        })
}

/// A signer and a verifier made from fresh keys that live only in memory
/// (an apiserver without a data dir, tests).
pub fn ephemeral() -> Result<(Signer, Verifier), KeyFileError> {
    let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(KeyFileError::Generate)?;
    let signer = Signer::from_pem(
        k.serialize_pem().as_bytes(),
        &k.subject_public_key_info(),
        "memory",
    )?;
    let verifier = Verifier::from_pems(&[("memory".into(), k.public_key_pem().into_bytes())])?;
    Ok((signer, verifier))
}

/// The signer and verifier from the flags' files, or from the data dir's
/// pair (made when missing).
pub fn load(data_dir: &Path, flags: &KeyFlags) -> Result<(Signer, Verifier), KeyFileError> {
    let (private_path, private_pem) = match &flags.signing_key_file {
        Some(p) => (p.clone(), String::from_utf8_lossy(&read(p)?).into_owned()),
        None => {
            let path = data_dir.join("sa.key");
            match std::fs::read_to_string(&path) {
                Ok(pem) => (path, pem),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                        .map_err(KeyFileError::Generate)?;
                    write(&path, &k.serialize_pem(), 0o600)?;
                    write(&data_dir.join("sa.pub"), &k.public_key_pem(), 0o644)?;
                    tracing::info!("made the service account signing key {}", path.display());
                    (path, k.serialize_pem())
                }
                Err(source) => return Err(KeyFileError::Io { path, source }),
            }
        }
    };
    let own_public = public_of(&private_pem, &private_path)?;
    let own_der = SubjectPublicKeyInfoDer::from_pem_slice(own_public.as_bytes())
        .map_err(|_| TokenError::PublicKeyPem(private_path.display().to_string()))?;
    let signer = Signer::from_pem(
        private_pem.as_bytes(),
        own_der.as_ref(),
        &private_path.display().to_string(),
    )?;
    // The signer's own public key always verifies; the key files add
    // others (keys being rotated out, another apiserver's).
    let mut publics = vec![(private_path.display().to_string(), own_public.into_bytes())];
    for p in &flags.key_files {
        publics.push((p.display().to_string(), read(p)?));
    }
    Ok((signer, Verifier::from_pems(&publics)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serviceaccount::token::{Claims, KubernetesClaims, ObjectRef};

    fn claims() -> Claims {
        Claims {
            issuer: "i".into(),
            audiences: vec!["a".into()],
            issued_at: 1,
            not_before: 1,
            expires_at: 2,
            id: String::new(),
            kubernetes: KubernetesClaims {
                namespace: "n".into(),
                serviceaccount: ObjectRef {
                    name: "s".into(),
                    uid: "u".into(),
                },
                ..Default::default()
            },
        }
    }

    #[test]
    fn the_data_dir_pair_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, _) = load(dir.path(), &KeyFlags::default()).unwrap();
        let token = signer.sign(&claims()).unwrap();
        assert!(dir.path().join("sa.pub").exists());
        // After a restart the same key verifies what was issued before.
        let (_, verifier) = load(dir.path(), &KeyFlags::default()).unwrap();
        assert_eq!(verifier.decode(&token, &["i".into()]).unwrap(), claims());
    }

    #[test]
    fn extra_key_files_verify_other_signers_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let (old_private, old_public, old_der) = crate::serviceaccount::token::tests::key_pair();
        let old = Signer::from_pem(old_private.as_bytes(), &old_der, "old").unwrap();
        let token = old.sign(&claims()).unwrap();
        std::fs::write(dir.path().join("old.pub"), old_public).unwrap();
        let flags = KeyFlags {
            signing_key_file: None,
            key_files: vec![dir.path().join("old.pub")],
        };
        let (_, verifier) = load(dir.path(), &flags).unwrap();
        assert!(verifier.decode(&token, &["i".into()]).is_ok());
        let (_, without) = load(dir.path(), &KeyFlags::default()).unwrap();
        assert!(without.decode(&token, &["i".into()]).is_err());
    }
}
